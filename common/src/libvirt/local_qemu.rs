//! What a local system daemon's QEMU process tells through /proc and the
//! cgroup filesystem, read by hv itself because libvirt would ask the QEMU
//! monitor for it (hv-metrics), or does not say at all: when the VM
//! started (hv-top's uptime).
//!
//! libvirt's balloon group asks the monitor for guest memory statistics
//! even when the guest gives none, and its cpu-total group asks the monitor
//! for halt-polling times (query-stats) next to the CPU times it reads from
//! the domain's cgroup. A monitor answers only when its QEMU gets the CPU,
//! so on a loaded host those round trips are most of a scrape. The RSS and
//! the CPU times themselves come from the kernel: hv reads the same files
//! libvirt reads (`/proc/PID/status`, the domain cgroup's `cpu.stat`).
//!
//! A process is this domain's QEMU only if the daemon's pid file names it
//! and its command line carries the domain's name and UUID: a remote
//! host's VM of the same name, or a recycled pid, is not this one. That is
//! checked when hv first sees a run of the domain and at least once a
//! minute; the scrapes between check only that the pid file still names the
//! process, started when it was.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A running domain's QEMU on this host.
pub struct LocalQemu {
    pid: u32,
    /// When the process started (clock ticks after boot): a recycled pid
    /// names a process started later.
    started: u64,
    pid_file: PathBuf,
    /// The `cpu.stat` of the domain's cgroup, when it has one hv can read.
    cpu_stat: Option<PathBuf>,
}

/// A domain's CPU time, in nanoseconds, as libvirt's `cpu.*` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub total: u64,
    pub user: u64,
    pub system: u64,
}

impl LocalQemu {
    pub fn find(name: &str, uuid: &str) -> Option<LocalQemu> {
        let pid_file = PathBuf::from(format!("/run/libvirt/qemu/{name}.pid"));
        let pid = pid_in(&pid_file)?;
        let started = start_time(pid)?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        if !is_domains_qemu(&cmdline, name, uuid) {
            return None;
        }
        let cpu_stat = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|own| Some(cgroup2_root()?.join(domain_cgroup(&own)?).join("cpu.stat")));
        Some(LocalQemu {
            pid,
            started,
            pid_file,
            cpu_stat,
        })
    }

    /// This process, as if its pid file were `pid_file`: for the tests
    /// of the commands that read a QEMU (hv-metrics).
    #[doc(hidden)]
    pub fn this_process(pid_file: PathBuf, cpu_stat: PathBuf) -> LocalQemu {
        let pid = std::process::id();
        std::fs::write(&pid_file, pid.to_string()).unwrap();
        LocalQemu {
            pid,
            started: start_time(pid).unwrap(),
            pid_file,
            cpu_stat: Some(cpu_stat),
        }
    }

    /// Whether the daemon still names this process the domain's QEMU.
    pub fn is_current(&self) -> bool {
        pid_in(&self.pid_file) == Some(self.pid) && start_time(self.pid) == Some(self.started)
    }

    /// When the process started, in Unix seconds: the VM's run began then.
    pub fn started_unix(&self) -> Option<i64> {
        let ticks = crate::ffi::clock_ticks_per_second();
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let boot: i64 = stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        (ticks > 0).then(|| boot + (self.started / ticks) as i64)
    }

    /// Resident memory in KiB, as libvirt's `balloon.rss`.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// CPU time of all the domain's threads (vCPUs, emulator, I/O), from
    /// the `cpu.stat` of the cgroup v2 libvirt made for the domain: the
    /// parent of the `emulator` cgroup QEMU's main thread lives in.
    pub fn cpu_times(&self) -> Option<CpuTimes> {
        parse_cpu_stat(&std::fs::read_to_string(self.cpu_stat.as_ref()?).ok()?)
    }
}

fn pid_in(file: &Path) -> Option<u32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// Field 22 of /proc/PID/stat; the fields before it follow the command
/// name, which may hold spaces and parentheses.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, fields) = stat.rsplit_once(')')?;
    fields.split_whitespace().nth(19)?.parse().ok()
}

fn is_domains_qemu(cmdline: &[u8], name: &str, uuid: &str) -> bool {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let named = args.windows(2).any(|w| {
        w[0] == b"-name" && guest_name(&String::from_utf8_lossy(w[1])).as_deref() == Some(name)
    });
    let same_uuid = args
        .windows(2)
        .any(|w| w[0] == b"-uuid" && w[1] == uuid.as_bytes());
    named && same_uuid
}

/// The `guest=` value of QEMU's `-name` option, where a comma is doubled
/// and a single comma ends the value.
fn guest_name(option: &str) -> Option<String> {
    let mut chars = option.strip_prefix("guest=")?.chars().peekable();
    let mut name = String::new();
    while let Some(c) = chars.next() {
        if c == ',' && chars.next_if_eq(&',').is_none() {
            break;
        }
        name.push(c);
    }
    Some(name)
}

/// The domain's cgroup, relative to the cgroup v2 root, from a
/// `/proc/PID/cgroup` of its QEMU. Only a QEMU libvirt placed in an
/// `emulator` cgroup is trusted: elsewhere the cgroup may hold more than
/// this domain.
fn domain_cgroup(proc_cgroup: &str) -> Option<&str> {
    let path = proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let parent = path.strip_suffix("/emulator")?;
    // Seen from another cgroup namespace, the path climbs out of its root.
    let climbs = parent.split('/').any(|part| part == ".." || part == ".");
    (!climbs).then(|| parent.trim_start_matches('/'))
}

/// Where the cgroup v2 hierarchy is mounted: /sys/fs/cgroup on a unified
/// host, /sys/fs/cgroup/unified on a hybrid one.
fn cgroup2_root() -> Option<&'static Path> {
    static ROOT: OnceLock<Option<PathBuf>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        cgroup2_mount(&mounts)
    })
    .as_deref()
}

/// The mount of the whole hierarchy (root `/`), not of a subtree bound
/// elsewhere.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        if after.split(' ').next() != Some("cgroup2") {
            return None;
        }
        let fields: Vec<&str> = before.split(' ').collect();
        if fields.get(3) != Some(&"/") {
            return None;
        }
        // mountinfo writes a space, tab, newline or backslash as `\040`.
        fields
            .get(4)
            .map(|point| PathBuf::from(crate::fsutil::unescape(point, b'\\', 3, 8)))
    })
}

fn parse_cpu_stat(text: &str) -> Option<CpuTimes> {
    let usec = |key: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse::<u64>().ok())?
        })
    };
    Some(CpuTimes {
        total: usec("usage_usec")? * 1000,
        user: usec("user_usec")? * 1000,
        system: usec("system_usec")? * 1000,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_started_when_it_started() {
        let dir = std::env::temp_dir().join(format!("hv-lq-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let me = LocalQemu::this_process(dir.join("pid"), dir.join("cpu.stat"));
        let started = me.started_unix().expect("this process's start time");
        let now = crate::time::now();
        // This test process began at most a few minutes ago.
        assert!((now - 600..=now).contains(&started), "{started} vs {now}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_qemu_is_the_domains_only_with_its_name_and_uuid() {
        let uuid = "0b6f3c0e-9a4e-4c1a-8d3e-2f1b7a9c5d10";
        let cmdline =
            format!("qemu-system-x86_64\0-name\0guest=web,,1,debug-threads=on\0-uuid\0{uuid}\0");
        assert!(is_domains_qemu(cmdline.as_bytes(), "web,1", uuid));
        assert!(!is_domains_qemu(cmdline.as_bytes(), "web", uuid));
        assert!(!is_domains_qemu(
            cmdline.as_bytes(),
            "web,1,debug-threads=on",
            uuid
        ));
        assert_eq!(guest_name("guest=a,,b").as_deref(), Some("a,b"));
        assert_eq!(guest_name("debug-threads=on"), None);
        assert!(!is_domains_qemu(
            cmdline.as_bytes(),
            "web,1",
            "11111111-9a4e-4c1a-8d3e-2f1b7a9c5d10"
        ));
    }

    #[test]
    fn the_domain_cgroup_is_the_emulators_parent() {
        let systemd = "0::/machine.slice/machine-qemu\\x2d3\\x2dweb.scope/libvirt/emulator\n";
        assert_eq!(
            domain_cgroup(systemd),
            Some("machine.slice/machine-qemu\\x2d3\\x2dweb.scope/libvirt")
        );
        let hybrid = "1:cpu:/machine/qemu-21-web.libvirt-qemu/emulator\n0::/machine/qemu-21-web.libvirt-qemu/emulator\n";
        assert_eq!(
            domain_cgroup(hybrid),
            Some("machine/qemu-21-web.libvirt-qemu")
        );
        assert_eq!(domain_cgroup("0::/user.slice/session-1.scope\n"), None);
        assert_eq!(
            domain_cgroup("0::/../../machine/qemu-1-web.libvirt-qemu/emulator\n"),
            None,
            "seen from another cgroup namespace"
        );
        assert_eq!(domain_cgroup("4:cpu:/machine/emulator\n"), None, "v1 only");
    }

    #[test]
    fn the_cgroup2_mount_is_found_on_unified_and_hybrid_hosts() {
        let unified = "35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        let hybrid = "30 24 0:26 / /sys/fs/cgroup ro shared:9 - tmpfs tmpfs ro,mode=755\n\
                      31 30 0:27 / /sys/fs/cgroup/unified rw shared:10 - cgroup2 cgroup2 rw\n\
                      32 30 0:28 / /sys/fs/cgroup/cpu rw shared:11 - cgroup cgroup rw,cpu\n";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            cgroup2_mount("32 30 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw\n"),
            None
        );
        let escaped = "40 24 0:30 / /srv/my\\040cgroups rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(escaped),
            Some(PathBuf::from("/srv/my cgroups"))
        );
        let subtree = "41 24 0:30 /machine /srv/machines rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(subtree), None, "a bound subtree");
    }

    #[test]
    fn cpu_stat_is_read_in_nanoseconds() {
        let stat = "usage_usec 6485768\nuser_usec 5399119\nsystem_usec 1086649\nnr_periods 0\n";
        assert_eq!(
            parse_cpu_stat(stat),
            Some(CpuTimes {
                total: 6_485_768_000,
                user: 5_399_119_000,
                system: 1_086_649_000
            })
        );
        assert_eq!(parse_cpu_stat("usage_usec 1\n"), None);
    }
}
