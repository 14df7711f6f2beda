//! hv-backup on object storage, against restic on the same store (a
//! Garage of the bench's own on loopback) in one run: the first backup of
//! a VM-like disk, a sync of a repository to an empty bucket prefix and
//! then of one new backup, and one file read from a mounted backup. Each
//! figure is the median of 3 runs (the two tools alternate which goes
//! first); CPU time is the clients' (hv-backup, restic), not Garage's.

use crate::bench_backup::{guest_on_disk, in_fresh_dir, new_identity, write_disk};
use crate::cmd::{capture, cost, median, median_cost, need_tools, ok, verdict, verdict_at_most};
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn run(size_mib: u32) -> Result<(), String> {
    need_tools(&["restic", "curl", "mkfs.ext4"], "restic curl e2fsprogs")?;
    in_fresh_dir("hv-bench-s3", |hv, dir| measure(hv, dir, size_mib))
}

fn measure(hv: &Path, dir: &Path, size_mib: u32) -> Result<(), String> {
    let store = dir.join("garage");
    let vars = hv_testbench::garage_cluster(store.to_str().unwrap(), 1, 37);
    let env = |k: &str| {
        vars.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let endpoint = env("HV_S3_ENDPOINT");
    let result = backup_sync_mount(hv, dir, size_mib, &endpoint);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/bench/garage.sh");
    let _ = Command::new("bash")
        .arg(script)
        .arg("stop")
        .arg(&store)
        .status();
    result
}

fn backup_sync_mount(hv: &Path, dir: &Path, size_mib: u32, endpoint: &str) -> Result<(), String> {
    let (identity, recipient) = new_identity(dir)?;
    let raw = dir.join("disk.raw");
    let guest = guest_on_disk(&raw, "bench-s3", size_mib)?;
    ok(Command::new("sh").arg("-c").arg(format!(
        "cat '{}' '{}' >/dev/null",
        raw.display(),
        guest.disk.display()
    )))?;
    let size = (size_mib as u64) << 20;
    let hv_cmd = |args: &[&str]| {
        let mut c = Command::new(hv);
        c.args(args)
            .env("HV_BACKUP_KEY_DIR", dir.join("keys"))
            .env("HV_BACKUP_SCRATCH_DIR", dir.join("scratch"))
            .env("HV_CONNECT", hv_testbench::URI)
            .stdout(Stdio::piped());
        c
    };
    std::env::set_var("RESTIC_PASSWORD", "bench");

    // 1. First backups: hv-backup and restic, each into a new place.
    eprintln!("first backups of a {size_mib} MiB VM-like disk, 3 rounds…");
    let (mut hv_runs, mut restic_runs, mut hv_stored, mut restic_stored) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..3 {
        let hv_repo = format!("s3://hv-bench/hv-{round}");
        let restic_repo = format!("s3:{endpoint}/hv-bench/restic-{round}");
        ok(hv_cmd(&["init", &hv_repo, "--recipient", &recipient]).stdout(Stdio::null()))?;
        ok(Command::new("restic")
            .args(["init", "-q", "-o", "s3.region=garage", "-r", &restic_repo])
            .stdout(Stdio::null()))?;
        let cache = dir.join(format!("cache-{round}"));
        let hv_once = || {
            ok(hv_cmd(&["create", &guest.name, "--repo", &hv_repo])
                .env("HV_BACKUP_CACHE_DIR", &cache)
                .stdout(Stdio::null()))
        };
        let restic_once = || {
            ok(Command::new("restic")
                .args(["backup", "-q", "-o", "s3.region=garage", "-r", &restic_repo])
                .arg(&raw)
                .stdout(Stdio::null()))
        };
        if round % 2 == 0 {
            hv_runs.push(cost(hv_once)?);
            restic_runs.push(cost(restic_once)?);
        } else {
            restic_runs.push(cost(restic_once)?);
            hv_runs.push(cost(hv_once)?);
        }
        hv_stored.push(s3_bytes(endpoint, &format!("hv-{round}/"))?);
        restic_stored.push(s3_bytes(endpoint, &format!("restic-{round}/"))?);
    }
    let (hv_first, restic_first) = (median_cost(&hv_runs), median_cost(&restic_runs));
    let (hv_size, restic_size) = (median_u64(hv_stored), median_u64(restic_stored));
    println!("\nfirst backup of {size_mib} MiB to Garage (median of 3, client CPU):");
    let rate = |d: Duration| size as f64 / d.as_secs_f64() / 1e6;
    println!(
        "  hv-backup create   {hv_first}   {:6.0} MB/s   stored {:8.1} MiB",
        rate(hv_first.wall),
        hv_size as f64 / 1048576.0
    );
    println!(
        "  restic backup      {restic_first}   {:6.0} MB/s   stored {:8.1} MiB",
        rate(restic_first.wall),
        restic_size as f64 / 1048576.0
    );

    // 2. Sync: a directory repository with three backups to an empty
    // prefix, then again once a fourth exists.
    eprintln!("sync, 3 rounds…");
    let local = dir.join("local");
    let local_s = local.to_str().unwrap();
    ok(hv_cmd(&["init", local_s, "--recipient", &recipient]).stdout(Stdio::null()))?;
    let mut ids = Vec::new();
    for i in 0..4 {
        if i > 0 {
            let at = (i as u64 * 97 % (size_mib as u64 - 8)) << 20;
            ok(Command::new("qemu-io")
                .args(["-f", "qcow2", "-c", &format!("write -P {i} {at} 4M")])
                .arg(&guest.disk)
                .stdout(Stdio::null()))?;
        }
        let out = capture(
            hv_cmd(&[
                "create",
                &guest.name,
                "--repo",
                local_s,
                "--format",
                "jsonl",
            ])
            .env("HV_BACKUP_CACHE_DIR", dir.join("cache-local")),
        )?;
        let rec: serde_json::Value = serde_json::from_str(out.lines().next().unwrap_or("{}"))
            .map_err(|e| format!("create: {e}"))?;
        ids.push(rec["id"].as_str().unwrap_or_default().to_owned());
    }
    let (mut firsts, mut seconds, mut first_bytes, mut second_bytes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..3 {
        let to = format!("s3://hv-bench/sync-{round}");
        let sync = |ids: &[String]| -> Result<(Duration, u64), String> {
            let t = Instant::now();
            let mut c = hv_cmd(&["sync", "--from", local_s, "--to", &to, "--format", "jsonl"]);
            c.args(ids);
            let out = capture(&mut c)?;
            let elapsed = t.elapsed();
            let sent = out
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .map(|r| r["bytes_sent"].as_u64().unwrap_or(0))
                .sum();
            Ok((elapsed, sent))
        };
        let (t1, b1) = sync(&ids[..3])?;
        let (t2, b2) = sync(&[])?;
        firsts.push(t1);
        seconds.push(t2);
        first_bytes.push(b1);
        second_bytes.push(b2);
    }
    let (t1, t2) = (median(firsts), median(seconds));
    let (b1, b2) = (median_u64(first_bytes), median_u64(second_bytes));
    println!("\nsync of a repository to Garage (median of 3):");
    println!(
        "  3 backups to an empty prefix   {:7.2} s   sent {:8.1} MiB",
        t1.as_secs_f64(),
        b1 as f64 / 1048576.0
    );
    println!(
        "  then one new backup            {:7.2} s   sent {:8.1} MiB",
        t2.as_secs_f64(),
        b2 as f64 / 1048576.0
    );

    // 3. One 1 MiB file from a mounted backup of a filesystem disk.
    eprintln!("mount, 3 rounds…");
    let (mount_time, mount_read) = mount_rounds(hv, dir, size_mib, &recipient, &identity)?;
    println!("\none 1 MiB file from a mounted {size_mib} MiB backup on Garage (median of 3):");
    println!(
        "  mount, read, check, umount     {:7.2} s   read from the repository {:6.1} MiB",
        mount_time.as_secs_f64(),
        mount_read as f64 / 1048576.0
    );

    println!();
    verdict(
        "first backup speed / restic's (same store)",
        restic_first.wall.as_secs_f64() / hv_first.wall.as_secs_f64(),
        1.5,
    );
    verdict_at_most(
        "stored bytes / restic's",
        hv_size as f64 / restic_size.max(1) as f64,
        1.0,
    );
    verdict_at_most(
        "second sync (one new backup) / first sync",
        t2.as_secs_f64() / t1.as_secs_f64(),
        0.10,
    );
    verdict_at_most(
        "MiB read from the repository to open one 1 MiB file",
        mount_read as f64 / 1048576.0,
        64.0,
    );
    drop(guest);
    Ok(())
}

/// Backs up a disk holding an ext4 filesystem (a 1 MiB file and VM-like
/// filler) to the store, then three times: mount it, read the file and
/// compare it, unmount. The median time, and the bytes read from the
/// repository.
fn mount_rounds(
    hv: &Path,
    dir: &Path,
    size_mib: u32,
    recipient: &str,
    identity: &Path,
) -> Result<(Duration, u64), String> {
    let files = dir.join("files");
    std::fs::create_dir_all(files.join("etc")).map_err(|e| e.to_string())?;
    write_disk(&files.join("filler.img"), size_mib * 3 / 4)?;
    let target: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(files.join("etc/target.bin"), &target).map_err(|e| e.to_string())?;
    let fs_raw = dir.join("fs.raw");
    ok(Command::new("truncate")
        .arg("-s")
        .arg(format!("{size_mib}M"))
        .arg(&fs_raw))?;
    ok(Command::new("mkfs.ext4")
        .args(["-F", "-q", "-d"])
        .arg(&files)
        .arg(&fs_raw))?;
    std::fs::remove_dir_all(&files).map_err(|e| e.to_string())?;
    let guest = hv_testbench::GuestSpec::new("bench-s3-fs")
        .disk_mib(size_mib)
        .define(&hv_testbench::connect());
    ok(Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(&fs_raw)
        .arg(&guest.disk))?;
    std::fs::remove_file(&fs_raw).map_err(|e| e.to_string())?;
    let repo = "s3://hv-bench/mount";
    let hv_cmd = |args: &[&str]| {
        let mut c = Command::new(hv);
        c.args(args)
            .env("HV_BACKUP_KEY_DIR", dir.join("keys"))
            .env("HV_BACKUP_SCRATCH_DIR", dir.join("scratch"))
            .env("HV_BACKUP_CACHE_DIR", dir.join("cache-mount"))
            .env("HV_CONNECT", hv_testbench::URI);
        c
    };
    ok(hv_cmd(&["init", repo, "--recipient", recipient]).stdout(Stdio::null()))?;
    let out = capture(&mut hv_cmd(&[
        "create",
        &guest.name,
        "--repo",
        repo,
        "--format",
        "jsonl",
    ]))?;
    let rec: serde_json::Value =
        serde_json::from_str(out.lines().next().unwrap_or("{}")).map_err(|e| e.to_string())?;
    let id = rec["id"].as_str().unwrap_or_default().to_owned();
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
    let (mut times, mut reads) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let t = Instant::now();
        let mut child = hv_cmd(&["mount", &id, mnt.to_str().unwrap(), "--repo", repo])
            .arg("--identity")
            .arg(identity)
            .args(["--format", "jsonl"])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        lines
            .next()
            .ok_or("mount printed nothing")?
            .map_err(|e| e.to_string())?;
        let read = std::fs::read(mnt.join("etc/target.bin")).map_err(|e| e.to_string())?;
        if read != target {
            return Err("the file read from the mounted backup differs".into());
        }
        ok(hv_cmd(&["umount", mnt.to_str().unwrap()]).stdout(Stdio::null()))?;
        child.wait().map_err(|e| e.to_string())?;
        times.push(t.elapsed());
        let last = lines
            .next()
            .ok_or("no umount record")?
            .map_err(|e| e.to_string())?;
        let rec: serde_json::Value = serde_json::from_str(&last).map_err(|e| e.to_string())?;
        reads.push(rec["bytes_read"].as_u64().unwrap_or(u64::MAX));
    }
    drop(guest);
    Ok((median(times), median_u64(reads)))
}

fn median_u64(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// The bytes of every object under `prefix` of the bench bucket, as the
/// store lists them (pages of 1000 keys).
fn s3_bytes(endpoint: &str, prefix: &str) -> Result<u64, String> {
    let user = format!(
        "{}:{}",
        std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_default(),
        std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_default()
    );
    let (mut total, mut token) = (0u64, None::<String>);
    loop {
        let mut url = format!("{endpoint}/hv-bench?list-type=2&prefix={}", encode(prefix));
        if let Some(t) = &token {
            url += &format!("&continuation-token={}", encode(t));
        }
        let text = capture(
            Command::new("curl")
                .args(["-sS", "--fail", "--aws-sigv4", "aws:amz:garage:s3"])
                .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", "--user"])
                .arg(&user)
                .arg(&url),
        )?;
        total += text
            .split("<Size>")
            .skip(1)
            .filter_map(|s| s.split("</Size>").next()?.parse::<u64>().ok())
            .sum::<u64>();
        token = text
            .split("<NextContinuationToken>")
            .nth(1)
            .and_then(|s| s.split("</NextContinuationToken>").next())
            .map(str::to_owned);
        if token.is_none() {
            return Ok(total);
        }
    }
}

/// Percent-encodes a query value (SigV4 wants every reserved byte encoded).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
