//! hv-backup against the tools a user would otherwise reach for, on the
//! same VM disk in one run: the plain `zstd -3 -T2 | age` pipeline, restic
//! and borgbackup (deduplicating, encrypting), virtnbdbackup (libvirt
//! backup jobs). The disk is VM-like: pseudo-random data, text-like data
//! (words drawn from a vocabulary, so it compresses like logs and source,
//! not like one repeated line) and unallocated zeros. Every file is read
//! once before timing starts, so all tools read from the page cache.

use crate::cmd::{capture, need_tools, ok, release_build, verdict};
use hv_testbench::{Guest, GuestSpec};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SEGMENT: usize = 64 << 20;

pub fn run(size_mib: u32) -> Result<(), String> {
    need_tools(
        &["zstd", "age", "restic", "borg", "virtnbdbackup"],
        "zstd age restic borgbackup virtnbdbackup",
    )?;
    in_fresh_dir("hv-bench-backup", |hv, dir| measure(hv, dir, size_mib))
}

/// Fails with the apt-get line when a peer tool is missing.
/// Builds hv-backup (release) and runs `measure` with it in a fresh
/// directory under /var/tmp, removed afterwards.
pub(crate) fn in_fresh_dir(
    name: &str,
    measure: impl FnOnce(&Path, &Path) -> Result<(), String>,
) -> Result<(), String> {
    let hv = release_build(&["hv-backup"])?.join("hv-backup");
    let dir = PathBuf::from("/var/tmp").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = measure(&hv, &dir);
    let _ = std::fs::remove_dir_all(&dir);
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
    eprintln!("writing a {size_mib} MiB VM-like disk…");
    write_disk(raw, size_mib)?;
    let guest = GuestSpec::new(name)
        .disk_mib(size_mib)
        .define(&hv_testbench::connect());
    ok(Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(raw)
        .arg(&guest.disk))?;
    Ok(guest)
}

fn measure(hv: &Path, dir: &Path, size_mib: u32) -> Result<(), String> {
    let (id, recipient) = new_identity(dir)?;
    let raw = dir.join("disk.raw");
    let guest = guest_on_disk(&raw, "bench-backup", size_mib)?;
    ok(Command::new("sh").arg("-c").arg(format!(
        "cat '{}' '{}' >/dev/null",
        raw.display(),
        guest.disk.display()
    )))?;
    let size = (size_mib as u64) << 20;
    eprintln!("measuring (one run each)…");

    let pipe_out = dir.join("pipe.zst.age");
    let pipe = time_sh(&format!(
        "zstd -3 -T2 -q -c '{}' | age -r {recipient} > '{}'",
        raw.display(),
        pipe_out.display()
    ))?;
    let pipe_size = file_size(&pipe_out);

    let restic_repo = dir.join("restic");
    std::env::set_var("RESTIC_PASSWORD", "bench");
    ok(Command::new("restic")
        .args(["init", "-q", "-r"])
        .arg(&restic_repo))?;
    let restic = time_sh(&format!(
        "restic backup -q -r '{}' '{}'",
        restic_repo.display(),
        raw.display()
    ))?;
    let restic_size = du(&restic_repo)?;

    let borg_repo = dir.join("borg");
    std::env::set_var("BORG_PASSPHRASE", "bench");
    ok(Command::new("borg")
        .args(["init", "-e", "repokey"])
        .arg(&borg_repo))?;
    let borg = time_sh(&format!(
        "borg create --compression zstd,3 '{}::a' '{}'",
        borg_repo.display(),
        raw.display()
    ))?;
    let borg_size = du(&borg_repo)?;

    let vnb_out = dir.join("virtnbdbackup");
    let vnb = time_sh(&format!(
        "virtnbdbackup -q -d '{}' -l copy -o '{}' -S '{}' >/dev/null 2>&1",
        guest.name,
        vnb_out.display(),
        dir.display()
    ));
    let vnb_size = du(&vnb_out).unwrap_or(0);

    let repo = dir.join("hv");
    let keys = dir.join("keys");
    let scratch = dir.join("scratch");
    let hv_args = |sub: &str| -> Command {
        let mut c = Command::new(hv);
        c.arg(sub)
            .arg("--repo")
            .arg(&repo)
            .env("HV_BACKUP_KEY_DIR", &keys)
            .env("HV_BACKUP_SCRATCH_DIR", &scratch)
            .env("HV_BACKUP_CACHE_DIR", dir.join("cache"))
            .env("HV_CONNECT", hv_testbench::URI);
        c
    };
    ok(Command::new(hv)
        .arg("init")
        .arg(&repo)
        .arg("--recipient")
        .arg(&recipient)
        .env("HV_BACKUP_KEY_DIR", &keys))?;
    let t = Instant::now();
    let first = record(hv_args("create").arg(&guest.name))?;
    let hv_first = t.elapsed();
    let hv_size = du(&repo.join("chunks"))?;
    let t = Instant::now();
    let second = record(hv_args("create").arg(&guest.name))?;
    let hv_second = t.elapsed();

    let restore_dir = dir.join("restored");
    std::fs::create_dir_all(&restore_dir).map_err(|e| e.to_string())?;
    let backup_id = first["id"].as_str().unwrap_or_default().to_owned();
    let t = Instant::now();
    record(
        hv_args("restore")
            .arg(&backup_id)
            .arg("--identity")
            .arg(&id)
            .arg("--dir")
            .arg(&restore_dir)
            .arg("--disk-format")
            .arg("raw"),
    )?;
    let hv_restore = t.elapsed();
    let pipe_restore = time_sh(&format!(
        "age -d -i '{}' '{}' | zstd -d -q > '{}'",
        id.display(),
        pipe_out.display(),
        dir.join("pipe.raw").display()
    ))?;

    println!(
        "hv-backup bench: {size_mib} MiB VM disk ({}), one run each, 2 cores, page cache warm",
        mix()
    );
    println!(
        "{:<34} {:>9} {:>10} {:>12}",
        "tool", "seconds", "MB/s", "stored MiB"
    );
    let row = |name: &str, d: Duration, stored: u64| {
        println!(
            "{name:<34} {:>9.2} {:>10.0} {:>12.1}",
            d.as_secs_f64(),
            size as f64 / d.as_secs_f64() / 1e6,
            stored as f64 / 1048576.0
        );
    };
    row("zstd -3 -T2 | age", pipe, pipe_size);
    row("restic 0.14 backup", restic, restic_size);
    row("borg 1.2 create zstd,3", borg, borg_size);
    match &vnb {
        Ok(d) => row("virtnbdbackup -l copy (offline)", *d, vnb_size),
        Err(e) => println!("virtnbdbackup: failed ({e})"),
    }
    row("hv-backup create (first)", hv_first, hv_size);
    row(
        "hv-backup create (unchanged)",
        hv_second,
        second["stored_bytes"].as_u64().unwrap_or(0),
    );
    row("hv-backup restore (raw, sparse)", hv_restore, 0);
    row("age -d | zstd -d (restore)", pipe_restore, 0);

    let peers = [Some(restic), Some(borg), vnb.clone().ok()];
    let fastest = peers.iter().flatten().min().copied().unwrap_or(restic);
    let secs = |d: Duration| d.as_secs_f64();
    println!();
    verdict(
        "first backup speed / fastest peer (restic, borg, virtnbdbackup)",
        secs(fastest) / secs(hv_first),
        1.0,
    );
    verdict(
        "first backup speed / zstd -3 -T2 | age",
        secs(pipe) / secs(hv_first),
        0.8,
    );
    verdict(
        "unchanged second backup: times faster than the first",
        secs(hv_first) / secs(hv_second),
        5.0,
    );
    let new_pct = second["new_bytes"].as_u64().unwrap_or(u64::MAX) as f64 * 100.0 / size as f64;
    println!(
        "  unchanged second backup stored {new_pct:.2}% new (target < 1%): {}",
        if new_pct < 1.0 { "met" } else { "NOT met" }
    );
    verdict(
        "restore speed / age -d | zstd -d",
        secs(pipe_restore) / secs(hv_restore),
        1.0,
    );
    verdict(
        "restic stored size / hv stored size",
        restic_size as f64 / hv_size.max(1) as f64,
        1.0,
    );
    drop(guest);
    Ok(())
}

pub(crate) fn mix() -> &'static str {
    "per 192 MiB: 64 MiB random, 64 MiB text-like, 64 MiB unallocated"
}

/// Segments cycle random, text, hole: a third each, like a used VM disk.
pub(crate) fn write_disk(path: &Path, size_mib: u32) -> Result<(), String> {
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
        match kind % 3 {
            0 => {
                for w in buf[..len].chunks_mut(8) {
                    rng = xorshift(rng);
                    let bytes = rng.to_le_bytes();
                    w.copy_from_slice(&bytes[..w.len()]);
                }
            }
            1 => {
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
            _ => {
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
