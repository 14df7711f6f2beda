//! What `--listen` does not ask libvirt for on every scrape, because it
//! costs much and changes seldom.
//!
//! - A stopped domain's disks: libvirt opens every image of every stopped
//!   domain to report their sizes, which on a host of many stopped VMs (or
//!   images on network storage) is most of a scrape. Asked again when one
//!   of the domain's image files changes (size, modification time or inode,
//!   by `stat`) or cannot be checked.
//! - A running domain's vCPU count and memory size: libvirt's vCPU group
//!   asks the QEMU monitor (query-stats), and its balloon group asks the
//!   monitor for the guest's memory statistics even when the guest gives
//!   none (no `<stats period>`). On a loaded host each monitor round trip
//!   waits for QEMU to get the CPU. The balloon group is skipped only for
//!   domains that gave no guest statistics and whose QEMU's RSS hv can read
//!   itself ([`LocalQemu`]), and the cpu-total group only for domains whose
//!   CPU times hv can read from their cgroup, so every series stays fresh
//!   except vCPU and memory sizes, which change only when an admin changes
//!   them.
//!
//! Everything is asked again at least every [`MAX_AGE`] and whenever a
//! domain starts or stops, which bounds how late a hot-plugged vCPU, a
//! `virsh setmem` or a disk added to a stopped VM shows up. One-shot runs
//! start empty, so they always ask.

use hv_common::ffi::{self, Param, Stats};
use hv_common::local_qemu::LocalQemu;
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant, SystemTime};

pub const MAX_AGE: Duration = Duration::from_secs(60);

/// A listed domain: what decides which statistics to ask for.
pub struct Listed {
    pub uuid: String,
    pub name: String,
    /// `None` when the domain is not running.
    pub id: Option<u32>,
}

/// Statistics libvirt derives from the definition, cheap for any domain.
pub const BASE: u32 = ffi::STATS_STATE | ffi::STATS_BALLOON | ffi::STATS_VCPU;

/// Groups a running domain has and a stopped one lacks.
const LIVE: u32 = ffi::STATS_CPU_TOTAL | ffi::STATS_INTERFACE | ffi::STATS_BLOCK;

#[derive(Default)]
pub struct Remembered {
    disks: HashMap<String, Disks>,
    sizes: HashMap<String, Sizes>,
    /// The daemon's QEMUs are this host's processes ([`LocalQemu`]).
    local_daemon: bool,
    /// When this scrape's statistics were asked for.
    asked_at: Option<SystemTime>,
}

impl Remembered {
    pub fn new(local_daemon: bool) -> Remembered {
        Remembered {
            local_daemon,
            ..Remembered::default()
        }
    }

    /// Forgets what no longer holds; call once per scrape, before
    /// [`Remembered::groups`].
    pub fn expire(&mut self, listed: &[Listed]) {
        let now = Instant::now();
        self.asked_at = Some(SystemTime::now());
        let stopped: HashSet<&str> = listed
            .iter()
            .filter(|l| l.id.is_none())
            .map(|l| l.uuid.as_str())
            .collect();
        let running: HashMap<&str, u32> = listed
            .iter()
            .filter_map(|l| Some((l.uuid.as_str(), l.id?)))
            .collect();
        self.disks
            .retain(|uuid, d| stopped.contains(uuid.as_str()) && d.still_true(now));
        self.sizes.retain(|uuid, s| {
            running.get(uuid.as_str()) == Some(&s.id)
                && now.duration_since(s.read_at) < MAX_AGE
                && s.local.as_ref().is_none_or(LocalQemu::is_current)
        });
    }

    /// The statistics groups to ask libvirt for about `domain`.
    pub fn groups(&self, domain: &Listed) -> u32 {
        match domain.id {
            None if self.disks.contains_key(&domain.uuid) => BASE,
            None => BASE | ffi::STATS_BLOCK,
            Some(_) => match self.sizes.get(&domain.uuid) {
                None => BASE | LIVE,
                Some(s) => {
                    let mut groups = ffi::STATS_STATE | LIVE;
                    if s.guest_stats || !s.rss_readable {
                        groups |= ffi::STATS_BALLOON;
                    }
                    if s.cpu_readable {
                        groups &= !ffi::STATS_CPU_TOTAL;
                    }
                    groups
                }
            },
        }
    }

    /// Completes `stats`, read with `asked` groups, from what is
    /// remembered, or remembers what it brought.
    pub fn complete(&mut self, stats: &mut Stats, asked: u32, domain: &Listed) {
        match domain.id {
            None if asked & ffi::STATS_BLOCK != 0 => {
                self.disks
                    .insert(stats.uuid.clone(), Disks::from(stats, self.asked_at));
            }
            None => fill(stats, self.disks.get(&stats.uuid).map(|d| &d.block)),
            Some(id) if asked & ffi::STATS_VCPU != 0 => {
                let local = self
                    .local_daemon
                    .then(|| LocalQemu::find(&domain.name, &stats.uuid))
                    .flatten();
                self.sizes
                    .insert(stats.uuid.clone(), Sizes::from(stats, id, local));
            }
            Some(_) => {
                let Some(sizes) = self.sizes.get(&stats.uuid) else {
                    return;
                };
                fill(stats, Some(&sizes.values));
                if !read_locally(stats, asked, sizes.local.as_ref()) {
                    // Missing from this scrape; asked of libvirt from the next.
                    self.sizes.remove(&stats.uuid);
                }
            }
        }
    }
}

/// Adds what was left out of the question because hv reads it itself;
/// false when that failed.
fn read_locally(stats: &mut Stats, asked: u32, local: Option<&LocalQemu>) -> bool {
    let mut read = true;
    if asked & ffi::STATS_BALLOON == 0 {
        match local.and_then(LocalQemu::rss_kib) {
            Some(rss) => {
                stats.params.insert("balloon.rss".into(), Param::UInt(rss));
            }
            None => read = false,
        }
    }
    if asked & ffi::STATS_CPU_TOTAL == 0 {
        match local.and_then(LocalQemu::cpu_times) {
            Some(cpu) => {
                for (key, ns) in [
                    ("cpu.time", cpu.total),
                    ("cpu.user", cpu.user),
                    ("cpu.system", cpu.system),
                ] {
                    stats.params.insert(key.into(), Param::UInt(ns));
                }
            }
            None => read = false,
        }
    }
    read
}

fn fill(stats: &mut Stats, remembered: Option<&Vec<(String, Param)>>) {
    for (key, value) in remembered.into_iter().flatten() {
        stats
            .params
            .entry(key.clone())
            .or_insert_with(|| value.clone());
    }
}

fn with_prefix(stats: &Stats, prefixes: &[&str]) -> Vec<(String, Param)> {
    stats
        .params
        .iter()
        .filter(|(key, _)| prefixes.iter().any(|p| key.starts_with(p)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A stopped domain's `block.*` statistics and its image files' stamps.
struct Disks {
    block: Vec<(String, Param)>,
    files: Vec<(String, Option<Stamp>)>,
    read_at: Instant,
}

impl Disks {
    /// The stamps are taken after libvirt's answer: a file changed since
    /// shortly before the question gets none, so it is asked again (file
    /// times come from a clock coarser than [`SystemTime::now`]).
    fn from(stats: &Stats, asked_at: Option<SystemTime>) -> Disks {
        let block = with_prefix(stats, &["block."]);
        let settled_before = asked_at.and_then(|t| t.checked_sub(Duration::from_secs(1)));
        let files = block
            .iter()
            .filter(|(key, _)| key.ends_with(".path"))
            .filter_map(|(_, value)| value.as_str())
            .map(|path| {
                let stamp = stamp(path)
                    .filter(|s| settled_before.is_some_and(|before| s.modified < before));
                (path.to_owned(), stamp)
            })
            .collect();
        Disks {
            block,
            files,
            read_at: Instant::now(),
        }
    }

    fn still_true(&self, now: Instant) -> bool {
        now.duration_since(self.read_at) < MAX_AGE
            && self
                .files
                .iter()
                .all(|(path, then)| then.is_some() && stamp(path) == *then)
    }
}

/// What identifies a file's content closely enough for a size report.
#[derive(PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: SystemTime,
    inode: u64,
}

fn stamp(path: &str) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: meta.len(),
        modified: meta.modified().ok()?,
        inode: meta.ino(),
    })
}

/// A running domain's vCPU counts and memory sizes, for one run of it.
struct Sizes {
    /// The domain id of the run they belong to.
    id: u32,
    /// Its QEMU, when hv can read its RSS or CPU times itself.
    local: Option<LocalQemu>,
    values: Vec<(String, Param)>,
    /// The guest reports memory statistics, which must be asked each time.
    guest_stats: bool,
    rss_readable: bool,
    cpu_readable: bool,
    read_at: Instant,
}

impl Sizes {
    fn from(stats: &Stats, id: u32, local: Option<LocalQemu>) -> Sizes {
        Sizes {
            id,
            values: with_prefix(
                stats,
                &[
                    "vcpu.current",
                    "vcpu.maximum",
                    "balloon.current",
                    "balloon.maximum",
                ],
            ),
            guest_stats: stats.u64("balloon.last-update").unwrap_or(0) > 0,
            rss_readable: local.as_ref().and_then(LocalQemu::rss_kib).is_some(),
            cpu_readable: local.as_ref().and_then(LocalQemu::cpu_times).is_some(),
            local,
            read_at: Instant::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stopped(uuid: &str) -> Listed {
        Listed {
            uuid: uuid.into(),
            name: uuid.into(),
            id: None,
        }
    }

    fn stats(uuid: &str, params: &[(&str, Param)]) -> Stats {
        let mut s = Stats {
            uuid: uuid.into(),
            ..Stats::default()
        };
        for (k, v) in params {
            s.params.insert((*k).into(), v.clone());
        }
        s
    }

    #[test]
    fn a_stopped_domain_is_asked_about_its_disks_when_an_image_changes() {
        let dir =
            std::env::temp_dir().join(format!("hv-metrics-remembered-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let image = dir.join("a.qcow2");
        let write = |content: &[u8], age: u64| {
            std::fs::write(&image, content).unwrap();
            let then = SystemTime::now() - Duration::from_secs(age);
            let file = std::fs::File::options().write(true).open(&image).unwrap();
            file.set_modified(then).unwrap();
        };
        write(b"one", 60);
        let path = image.to_str().unwrap();
        let disk = [
            ("block.0.path", Param::Str(path.into())),
            ("block.0.capacity", Param::UInt(1 << 30)),
        ];
        let mut memory = Remembered::default();
        let listed = [stopped("u1"), stopped("u2")];
        memory.expire(&listed);
        assert_eq!(memory.groups(&listed[0]), BASE | ffi::STATS_BLOCK);
        memory.complete(&mut stats("u1", &disk), BASE | ffi::STATS_BLOCK, &listed[0]);
        memory.expire(&listed);
        assert_eq!(memory.groups(&listed[0]), BASE, "known");
        assert_eq!(memory.groups(&listed[1]), BASE | ffi::STATS_BLOCK);

        let mut fresh = stats("u1", &[("state.state", Param::Int(5))]);
        memory.complete(&mut fresh, BASE, &listed[0]);
        assert_eq!(fresh.u64("block.0.capacity"), Some(1 << 30));

        write(b"grown by a write", 0);
        memory.expire(&listed);
        assert_eq!(
            memory.groups(&listed[0]),
            BASE | ffi::STATS_BLOCK,
            "changed"
        );
        // Written while libvirt was asked: what it said may be older.
        memory.complete(&mut stats("u1", &disk), BASE | ffi::STATS_BLOCK, &listed[0]);
        memory.expire(&listed);
        assert_eq!(
            memory.groups(&listed[0]),
            BASE | ffi::STATS_BLOCK,
            "written as asked"
        );
        write(b"grown by a write", 60);
        memory.complete(&mut stats("u1", &disk), BASE | ffi::STATS_BLOCK, &listed[0]);
        memory.expire(&listed);
        assert_eq!(memory.groups(&listed[0]), BASE, "settled");
        std::fs::remove_file(&image).unwrap();
        memory.expire(&listed);
        assert_eq!(memory.groups(&listed[0]), BASE | ffi::STATS_BLOCK, "gone");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn what_hv_reads_itself_is_asked_of_libvirt_once_it_cannot() {
        let dir = std::env::temp_dir().join(format!("hv-metrics-local-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cpu_stat, pid_file) = (dir.join("cpu.stat"), dir.join("vm.pid"));
        let stat = "usage_usec 2000000\nuser_usec 1500000\nsystem_usec 500000\n";
        std::fs::write(&cpu_stat, stat).unwrap();
        let run = Listed {
            uuid: "u".into(),
            name: "vm".into(),
            id: Some(7),
        };
        let mut memory = Remembered::new(true);
        let remember = |memory: &mut Remembered| {
            let local = LocalQemu::this_process(pid_file.clone(), cpu_stat.clone());
            let sizes = Sizes::from(
                &stats("u", &[("vcpu.current", Param::UInt(2))]),
                7,
                Some(local),
            );
            memory.sizes.insert("u".into(), sizes);
            memory.expire(std::slice::from_ref(&run));
        };
        remember(&mut memory);
        let asked = memory.groups(&run);
        assert_eq!(
            asked,
            ffi::STATS_STATE | ffi::STATS_INTERFACE | ffi::STATS_BLOCK
        );
        let mut fresh = stats("u", &[]);
        memory.complete(&mut fresh, asked, &run);
        assert_eq!(fresh.u64("cpu.time"), Some(2_000_000_000));
        assert_eq!(fresh.u64("cpu.user"), Some(1_500_000_000));
        assert!(
            fresh.u64("balloon.rss").is_some_and(|kib| kib > 0),
            "{fresh:?}"
        );
        assert_eq!(fresh.u64("vcpu.current"), Some(2));

        std::fs::remove_file(&cpu_stat).unwrap();
        memory.complete(&mut stats("u", &[]), asked, &run);
        memory.expire(std::slice::from_ref(&run));
        assert_eq!(memory.groups(&run), BASE | LIVE, "cpu.stat gone");

        std::fs::write(&cpu_stat, stat).unwrap();
        remember(&mut memory);
        std::fs::write(&pid_file, "1").unwrap();
        memory.expire(std::slice::from_ref(&run));
        assert_eq!(memory.groups(&run), BASE | LIVE, "another process");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_running_domain_is_asked_again_after_a_restart_and_for_guest_stats() {
        let run = |id| Listed {
            uuid: "u".into(),
            name: "hv-no-such-domain".into(),
            id: Some(id),
        };
        let sizes = [
            ("vcpu.current", Param::UInt(2)),
            ("balloon.current", Param::UInt(1 << 20)),
            ("balloon.last-update", Param::UInt(1_700_000_000)),
        ];
        let mut memory = Remembered::default();
        memory.expire(&[run(1)]);
        assert_eq!(memory.groups(&run(1)), BASE | LIVE);
        memory.complete(&mut stats("u", &sizes), BASE | LIVE, &run(1));
        memory.expire(&[run(1)]);
        // The guest gives memory statistics: the balloon group stays.
        let asked = memory.groups(&run(1));
        assert_eq!(asked, ffi::STATS_STATE | ffi::STATS_BALLOON | LIVE);
        let mut fresh = stats("u", &[("balloon.current", Param::UInt(5))]);
        memory.complete(&mut fresh, asked, &run(1));
        assert_eq!(fresh.u64("vcpu.current"), Some(2));
        assert_eq!(fresh.u64("balloon.current"), Some(5), "fresh values win");
        memory.expire(&[run(2)]);
        assert_eq!(memory.groups(&run(2)), BASE | LIVE, "restarted");
    }
}
