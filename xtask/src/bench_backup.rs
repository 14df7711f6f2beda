//! hv-backup against the tools a user would otherwise reach for, on the
//! same VM disk in one run: the plain `zstd -3 -T2 | age` pipeline, restic
//! and borgbackup (deduplicating, encrypting), virtnbdbackup (libvirt
//! backup jobs). The disk is VM-like: pseudo-random data, text-like data
//! (words drawn from a vocabulary, so it compresses like logs and source,
//! not like one repeated line) and unallocated zeros. Every file is read
//! once before timing starts, so all tools read from the page cache.

use crate::cmd::{capture, cost, median_cost, need_tools, ok, release_build, verdict, Cost};
use hv_testbench::{Guest, GuestSpec};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SEGMENT: usize = 64 << 20;

pub fn run(sizes: &[u32], mixes: &[Mix], runs: usize, only: &[String]) -> Result<(), String> {
    need_tools(
        &["zstd", "age", "restic", "borg", "virtnbdbackup"],
        "zstd age restic borgbackup virtnbdbackup",
    )?;
    for &kind in mixes {
        for &size in sizes {
            in_fresh_dir("hv-bench-backup", |hv, dir| {
                measure(hv, dir, size, kind, runs, only)
            })?;
        }
    }
    Ok(())
}

/// Fails with the apt-get line when a peer tool is missing.
/// Builds hv-backup (release) and runs `measure` with it in a fresh
/// directory under /var/tmp, removed afterwards unless `HV_BENCH_KEEP` is
/// set (its disk and repository are then there to profile).
pub(crate) fn in_fresh_dir(
    name: &str,
    measure: impl FnOnce(&Path, &Path) -> Result<(), String>,
) -> Result<(), String> {
    let hv = release_build(&["hv-backup"])?.join("hv-backup");
    let dir = PathBuf::from("/var/tmp").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = measure(&hv, &dir);
    if std::env::var_os("HV_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// A new age identity in `dir`: its path and its recipient.
pub(crate) fn new_identity(dir: &Path) -> Result<(PathBuf, String), String> {
    let id = dir.join("identity.txt");
    ok(Command::new("age-keygen")
        .arg("-o")
        .arg(&id)
        .stderr(Stdio::null()))?;
    let recipient = capture(Command::new("age-keygen").arg("-y").arg(&id))?;
    Ok((id, recipient))
}

/// A stopped test guest whose qcow2 disk holds the VM-like content, also
/// left raw at `raw`.
pub(crate) fn guest_on_disk(raw: &Path, name: &str, size_mib: u32) -> Result<Guest, String> {
    guest_on_disk_of(raw, name, size_mib, Mix::Vm)
}

fn guest_on_disk_of(raw: &Path, name: &str, size_mib: u32, kind: Mix) -> Result<Guest, String> {
    eprintln!("writing a {size_mib} MiB {} disk…", kind.name());
    write_disk_of(raw, size_mib, kind)?;
    let guest = GuestSpec::new(name)
        .disk_mib(size_mib)
        .define(&hv_testbench::connect());
    ok(Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(raw)
        .arg(&guest.disk))?;
    Ok(guest)
}

/// One timed run of one tool: its costs and what it stored.
struct Timed {
    cost: Cost,
    stored: u64,
}

/// The tools of a first backup, in the order of the first run; later runs
/// start one further along, so none always runs first (or last).
const BACKUP_TOOLS: [&str; 5] = ["zstd | age", "restic", "borg", "virtnbdbackup", "hv-backup"];

fn measure(
    hv: &Path,
    dir: &Path,
    size_mib: u32,
    kind: Mix,
    runs: usize,
    only: &[String],
) -> Result<(), String> {
    let (id, recipient) = new_identity(dir)?;
    let raw = dir.join("disk.raw");
    let guest = guest_on_disk_of(&raw, "bench-backup", size_mib, kind)?;
    let size = (size_mib as u64) << 20;
    let warm = || {
        // Every tool reads its input from a warm page cache: read once
        // right before each timed run.
        // Nothing of an earlier run still being written back, either.
        ok(Command::new("sh").arg("-c").arg(format!(
            "sync; cat '{}' '{}' >/dev/null",
            raw.display(),
            guest.disk.display()
        )))
    };
    let wanted = |tool: &str| only.is_empty() || only.iter().any(|o| tool.starts_with(o.as_str()));
    std::env::set_var("RESTIC_PASSWORD", "bench");
    std::env::set_var("BORG_PASSPHRASE", "bench");
    let repo = dir.join("hv");
    let keys = dir.join("keys");
    let hv_cmd = |sub: &str| -> Command {
        let mut c = Command::new(hv);
        c.arg(sub)
            .arg("--repo")
            .arg(&repo)
            .env("HV_BACKUP_KEY_DIR", &keys)
            .env("HV_BACKUP_SCRATCH_DIR", dir.join("scratch"))
            .env("HV_BACKUP_CACHE_DIR", dir.join("cache"))
            .env("HV_CONNECT", hv_testbench::URI);
        c
    };
    let pipe_out = dir.join("pipe.zst.age");
    let fresh = |p: &Path| {
        let _ = std::fs::remove_dir_all(p);
        let _ = std::fs::remove_file(p);
    };
    // Each tool's first backup into an empty repository; hv's also gives
    // the id its restore and its unchanged second backup use.
    let hv_id = std::cell::RefCell::new(String::new());
    let backup = |tool: &str| -> Result<Timed, String> {
        warm()?;
        Ok(match tool {
            "zstd | age" => {
                fresh(&pipe_out);
                let cost = durable(|| {
                    time_sh(&format!(
                        "zstd -3 -T2 -q -c '{}' | age -r {recipient} > '{}'",
                        raw.display(),
                        pipe_out.display()
                    ))
                    .map(drop)
                })?;
                Timed {
                    cost,
                    stored: file_size(&pipe_out),
                }
            }
            "restic" => {
                let r = dir.join("restic");
                let init = format!("restic init -q -r '{}'", r.display());
                let run = format!("restic backup -q -r '{}' '{}'", r.display(), raw.display());
                into_dir(&r, Some(&init), &run)?
            }
            "borg" => {
                let r = dir.join("borg");
                let init = format!("borg init -e repokey '{}'", r.display());
                let run = format!(
                    "borg create --compression zstd,3 '{}::a' '{}'",
                    r.display(),
                    raw.display()
                );
                into_dir(&r, Some(&init), &run)?
            }
            "virtnbdbackup" => {
                let out = dir.join("virtnbdbackup");
                let run = format!(
                    "virtnbdbackup -q -d '{}' -l copy -o '{}' -S '{}' >/dev/null 2>&1",
                    guest.name,
                    out.display(),
                    dir.display()
                );
                into_dir(&out, None, &run)?
            }
            _ => {
                fresh(&repo);
                fresh(&keys);
                fresh(&dir.join("cache"));
                ok(Command::new(hv)
                    .arg("init")
                    .arg(&repo)
                    .arg("--recipient")
                    .arg(&recipient)
                    .env("HV_BACKUP_KEY_DIR", &keys))?;
                let mut made = serde_json::Value::Null;
                let cost = durable(|| {
                    made = record(hv_cmd("create").arg(&guest.name))?;
                    Ok(())
                })?;
                *hv_id.borrow_mut() = made["id"].as_str().unwrap_or_default().to_owned();
                Timed {
                    cost,
                    stored: du(&repo.join("chunks"))?,
                }
            }
        })
    };
    let mut firsts: Vec<(&str, Vec<Timed>)> = BACKUP_TOOLS
        .iter()
        .filter(|t| wanted(t))
        .map(|t| (*t, Vec::new()))
        .collect();
    let mut unchanged = Vec::new();
    let mut restores: Vec<(&str, Vec<Timed>)> = vec![
        ("hv-backup restore", Vec::new()),
        ("age -d | zstd -d", Vec::new()),
    ];
    let restored = dir.join("restored");
    eprintln!("measuring {size_mib} MiB {} ({runs} runs)…", kind.name());
    for run in 0..runs {
        let n = firsts.len();
        for k in 0..n {
            let i = (k + run) % n;
            let tool = firsts[i].0;
            let timed = backup(tool)?;
            eprintln!("  run {}: {tool}: {}", run + 1, timed.cost);
            firsts[i].1.push(timed);
        }
        let hv_id = hv_id.borrow().clone();
        if hv_id.is_empty() || !pipe_out.exists() {
            continue;
        }
        // hv's unchanged second backup, then both restores, alternating.
        warm()?;
        let mut second = serde_json::Value::Null;
        let c = durable(|| {
            second = record(hv_cmd("create").arg(&guest.name))?;
            Ok(())
        })?;
        unchanged.push((c, second["new_bytes"].as_u64().unwrap_or(u64::MAX)));
        for k in 0..2 {
            let i = (k + run) % 2;
            fresh(&restored);
            std::fs::create_dir_all(&restored).map_err(|e| e.to_string())?;
            ok(Command::new("sh").arg("-c").arg(format!(
                "cat '{}' '{}'/chunks/*/* >/dev/null 2>&1; true",
                pipe_out.display(),
                repo.display()
            )))?;
            let cost = if i == 0 {
                durable(|| {
                    record(
                        hv_cmd("restore")
                            .arg(&hv_id)
                            .arg("--identity")
                            .arg(&id)
                            .arg("--dir")
                            .arg(&restored)
                            .arg("--disk-format")
                            .arg("raw"),
                    )
                    .map(drop)
                })?
            } else {
                durable(|| {
                    time_sh(&format!(
                        "age -d -i '{}' '{}' | zstd -d -q > '{}'",
                        id.display(),
                        pipe_out.display(),
                        restored.join("pipe.raw").display()
                    ))
                    .map(drop)
                })?
            };
            eprintln!("  run {}: {}: {cost}", run + 1, restores[i].0);
            restores[i].1.push(Timed { cost, stored: 0 });
        }
    }
    fresh(&restored);

    println!(
        "\nhv-backup bench: {size_mib} MiB {} disk ({}), median of {runs} runs (order turned each run), {}; \
         page cache warm: every input read once right before each timed run, \
         and each run timed through a sync of what it wrote",
        kind.name(),
        kind.describe(),
        crate::bench::machine()
    );
    println!(
        "{:<26} {:>8} {:>8} {:>9} {:>11}",
        "tool", "wall s", "cpu s", "MB/s", "stored MiB"
    );
    let median_of = |timed: &[Timed]| -> (Cost, u64) {
        let costs: Vec<Cost> = timed.iter().map(|t| t.cost).collect();
        let mut stored: Vec<u64> = timed.iter().map(|t| t.stored).collect();
        stored.sort_unstable();
        (
            median_cost(&costs),
            stored.get(stored.len() / 2).copied().unwrap_or(0),
        )
    };
    let row = |name: &str, c: Cost, stored: u64| {
        println!(
            "{name:<26} {:>8.2} {:>8.2} {:>9.0} {:>11.1}",
            c.wall.as_secs_f64(),
            c.cpu.as_secs_f64(),
            size as f64 / c.wall.as_secs_f64() / 1e6,
            stored as f64 / 1048576.0
        );
    };
    let mut wall = std::collections::BTreeMap::new();
    let mut stored_of = std::collections::BTreeMap::new();
    for (tool, timed) in &firsts {
        let (c, stored) = median_of(timed);
        row(tool, c, stored);
        wall.insert(*tool, c.wall.as_secs_f64());
        stored_of.insert(*tool, stored);
    }
    if !unchanged.is_empty() {
        let c = median_cost(&unchanged.iter().map(|u| u.0).collect::<Vec<_>>());
        row("hv-backup (unchanged)", c, 0);
        wall.insert("unchanged", c.wall.as_secs_f64());
    }
    for (tool, timed) in &restores {
        if !timed.is_empty() {
            let (c, _) = median_of(timed);
            row(tool, c, 0);
            wall.insert(*tool, c.wall.as_secs_f64());
        }
    }
    println!();
    let Some(&hv_wall) = wall.get("hv-backup") else {
        return Ok(());
    };
    if let Some(pipe) = wall.get("zstd | age") {
        verdict(
            "first backup speed / zstd -3 -T2 | age",
            pipe / hv_wall,
            1.0,
        );
    }
    let fastest = ["restic", "borg", "virtnbdbackup"]
        .iter()
        .filter_map(|t| wall.get(t).map(|w| (*t, *w)))
        .min_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((peer, w)) = fastest {
        verdict(
            &format!("first backup speed / fastest peer ({peer})"),
            w / hv_wall,
            1.0,
        );
    }
    if let Some(u) = wall.get("unchanged") {
        verdict(
            "unchanged second backup: times faster than the first",
            hv_wall / u,
            5.0,
        );
        let new = unchanged.iter().map(|u| u.1).max().unwrap_or(u64::MAX);
        let pct = new as f64 * 100.0 / size as f64;
        println!(
            "  unchanged second backup stored {pct:.2}% new (target < 1%): {}",
            if pct < 1.0 { "met" } else { "NOT met" }
        );
    }
    if let (Some(hv), Some(pipe)) = (wall.get("hv-backup restore"), wall.get("age -d | zstd -d")) {
        verdict("restore speed / age -d | zstd -d", pipe / hv, 1.0);
    }
    if let (Some(r), Some(h)) = (stored_of.get("restic"), stored_of.get("hv-backup")) {
        verdict(
            "restic stored size / hv stored size",
            *r as f64 / (*h).max(1) as f64,
            1.0,
        );
    }
    drop(guest);
    Ok(())
}

/// A peer's first backup into the empty `dir` (made by `init` when given):
/// `run` timed through a sync, and what the directory then holds.
fn into_dir(dir: &Path, init: Option<&str>, run: &str) -> Result<Timed, String> {
    let _ = std::fs::remove_dir_all(dir);
    if let Some(init) = init {
        ok(Command::new("sh").arg("-c").arg(init))?;
    }
    let cost = durable(|| time_sh(run).map(drop))?;
    Ok(Timed {
        cost,
        stored: du(dir).unwrap_or(0),
    })
}

/// Runs `f`, then `sync`, timed together: a backup or a restore is done
/// when its data is on disk. hv-backup syncs what it writes; the peers
/// leave theirs in the page cache, to be written back during whatever
/// runs next, which this keeps from counting against the next tool.
fn durable(f: impl FnOnce() -> Result<(), String>) -> Result<Cost, String> {
    cost(|| {
        f()?;
        ok(&mut Command::new("sync"))
    })
}

/// What a bench disk holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// A used VM's disk: random, text-like and unallocated thirds.
    Vm,
    /// A server's disk of logs and source: mostly text-like.
    Text,
}

impl Mix {
    pub fn name(self) -> &'static str {
        match self {
            Mix::Vm => "VM-like",
            Mix::Text => "mostly-text",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Mix::Vm => mix(),
            Mix::Text => "per 512 MiB: 448 MiB text-like, 64 MiB unallocated",
        }
    }

    /// What each 64 MiB segment holds, cycling.
    fn segments(self) -> &'static [Segment] {
        use Segment::*;
        match self {
            Mix::Vm => &[Random, Text, Hole],
            Mix::Text => &[Text, Text, Text, Text, Text, Text, Text, Hole],
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Segment {
    Random,
    Text,
    Hole,
}

impl std::str::FromStr for Mix {
    type Err = String;
    fn from_str(s: &str) -> Result<Mix, String> {
        match s {
            "vm" => Ok(Mix::Vm),
            "text" => Ok(Mix::Text),
            _ => Err(format!("{s}: the disk mixes are vm and text")),
        }
    }
}

pub(crate) fn mix() -> &'static str {
    "per 192 MiB: 64 MiB random, 64 MiB text-like, 64 MiB unallocated"
}

/// Segments cycle random, text, hole: a third each, like a used VM disk.
pub(crate) fn write_disk(path: &Path, size_mib: u32) -> Result<(), String> {
    write_disk_of(path, size_mib, Mix::Vm)
}

fn write_disk_of(path: &Path, size_mib: u32, kind_of: Mix) -> Result<(), String> {
    let mut f = std::fs::File::create(path).map_err(|e| e.to_string())?;
    let size = (size_mib as u64) << 20;
    f.set_len(size).map_err(|e| e.to_string())?;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut buf = vec![0u8; SEGMENT];
    let words: Vec<&str> = "the of and to in is for on that with this systemd kernel started stopped user root session error warning info debug connection from port service network interface address request response GET POST HTTP 200 404 500 database query table index select insert update delete where value config file path usr lib bin var log tmp home opt etc".split(' ').collect();
    let mut offset = 0u64;
    let mut kind = 0;
    use std::io::{Seek, SeekFrom};
    while offset < size {
        let len = SEGMENT.min((size - offset) as usize);
        let segments = kind_of.segments();
        match segments[kind % segments.len()] {
            Segment::Random => {
                for w in buf[..len].chunks_mut(8) {
                    rng = xorshift(rng);
                    let bytes = rng.to_le_bytes();
                    w.copy_from_slice(&bytes[..w.len()]);
                }
            }
            Segment::Text => {
                let mut i = 0;
                while i < len {
                    rng = xorshift(rng);
                    let word = words[(rng % words.len() as u64) as usize].as_bytes();
                    let sep: &[u8] = if rng.is_multiple_of(11) {
                        b"\n"
                    } else if rng.is_multiple_of(5) {
                        b" 2026-11-21T02:00:"
                    } else {
                        b" "
                    };
                    for &b in word.iter().chain(sep) {
                        if i < len {
                            buf[i] = b;
                            i += 1;
                        }
                    }
                }
            }
            Segment::Hole => {
                offset += len as u64;
                kind += 1;
                continue;
            }
        }
        f.seek(SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
        f.write_all(&buf[..len]).map_err(|e| e.to_string())?;
        offset += len as u64;
        kind += 1;
    }
    f.sync_all().map_err(|e| e.to_string())
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

pub(crate) fn time_sh(script: &str) -> Result<Duration, String> {
    let t = Instant::now();
    ok(Command::new("bash").args(["-o", "pipefail", "-c", script]))?;
    Ok(t.elapsed())
}

pub(crate) fn record(cmd: &mut Command) -> Result<serde_json::Value, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("{}")
        .to_owned();
    serde_json::from_str(&first).map_err(|e| format!("not a record ({e}): {first}"))
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

pub(crate) fn du(p: &Path) -> Result<u64, String> {
    let text = capture(Command::new("du").arg("-sB1").arg(p))?;
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("du {}", p.display()))
}
