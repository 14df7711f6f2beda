//! hv-backup's incremental read against its own full read and against
//! virtnbdbackup's incremental mode, on one running guest in one run: a
//! VM-like disk is backed up in full, the guest rewrites 64 MiB (eight
//! 8 MiB runs that do not start on a chunk boundary, as guest writes do
//! not), and it is backed up again; first by virtnbdbackup, then by hv.

use crate::bench_backup::{du, guest_on_disk, in_fresh_dir, mix, new_identity, record, time_sh};
use crate::cmd::{capture, need_tools, ok, verdict, verdict_at_most};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: u64 = 8;
const RUN_MIB: u64 = 8;

pub fn run(size_mib: u32) -> Result<(), String> {
    need_tools(&["virtnbdbackup", "age-keygen"], "virtnbdbackup age")?;
    in_fresh_dir("hv-bench-incremental", |hv, dir| measure(hv, dir, size_mib))
}

fn measure(hv: &Path, dir: &Path, size_mib: u32) -> Result<(), String> {
    let (_, recipient) = new_identity(dir)?;
    let raw = dir.join("disk.raw");
    let guest = guest_on_disk(&raw, "bench-incremental", size_mib)?;
    std::fs::remove_file(&raw).map_err(|e| e.to_string())?;
    guest.start_ready();

    let repo = dir.join("hv");
    let hv_cmd = |sub: &str| -> Command {
        let mut c = Command::new(hv);
        c.arg(sub);
        if sub != "init" {
            c.arg("--repo").arg(&repo);
        }
        c.env("HV_BACKUP_KEY_DIR", dir.join("keys"))
            .env("HV_BACKUP_SCRATCH_DIR", dir.join("scratch"))
            .env("HV_BACKUP_CACHE_DIR", dir.join("cache"))
            .env("HV_CONNECT", hv_testbench::URI);
        c
    };
    ok(hv_cmd("init").arg(&repo).arg("--recipient").arg(&recipient))?;
    let vnb_out = dir.join("virtnbdbackup");
    let vnb_log = dir.join("virtnbdbackup.log");
    let vnb = |level: &str| {
        time_sh(&format!(
            "virtnbdbackup -q -d '{}' -l {level} -o '{}' -S '{}' >'{log}' 2>&1",
            guest.name,
            vnb_out.display(),
            dir.display(),
            log = vnb_log.display()
        ))
        .map_err(|e| {
            let log = std::fs::read_to_string(&vnb_log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            format!(
                "{e}\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
    };

    let step = u64::from(size_mib) / RUNS;
    let rewrite = || {
        eprintln!("the guest rewrites {} MiB…", RUNS * RUN_MIB);
        for i in 0..RUNS {
            guest.write_mib(i * step + 3, RUN_MIB);
        }
    };
    let rewritten = (RUNS * RUN_MIB) << 20;

    // virtnbdbackup refuses to work beside checkpoints it did not make, so
    // it goes first and its chain is removed before hv's starts.
    eprintln!("virtnbdbackup: full, rewrite, incremental…");
    let vnb_full = vnb("full")?;
    let vnb_full_size = du(&vnb_out)?;
    rewrite();
    let vnb_incr = vnb("inc")?;
    let vnb_incr_size = du(&vnb_out)? - vnb_full_size;
    let names = capture(Command::new("virsh").args([
        "-c",
        hv_testbench::URI,
        "checkpoint-list",
        "--name",
        &guest.uuid,
    ]))?;
    for name in names.lines().map(str::trim).filter(|n| !n.is_empty()) {
        ok(Command::new("virsh")
            .args([
                "-c",
                hv_testbench::URI,
                "checkpoint-delete",
                &guest.uuid,
                name,
            ])
            .stdout(Stdio::null()))?;
    }

    eprintln!("hv-backup: full, rewrite, incremental…");
    let (hv_full, full) = timed(hv_cmd("create").arg(&guest.name))?;
    rewrite();
    let (hv_incr, incr) = timed(hv_cmd("create").arg(&guest.name))?;
    let (hv_same, same) = timed(hv_cmd("create").arg(&guest.name))?;

    let read = incr["read_bytes"].as_u64().unwrap_or(u64::MAX);
    let how = incr["reads"][0]["read"].as_str().unwrap_or("?").to_owned();
    println!(
        "hv-backup incremental bench: {size_mib} MiB disk ({}) of a running TCG guest, \
         {} MiB rewritten as {RUNS} runs of {RUN_MIB} MiB, one run each, 2 cores",
        mix(),
        rewritten >> 20
    );
    println!("{:<40} {:>9} {:>12}", "", "seconds", "MiB read");
    let row = |name: &str, d: Duration, bytes: Option<u64>| {
        let mib = bytes.map_or("-".into(), |b| format!("{:.1}", b as f64 / 1048576.0));
        println!("{name:<40} {:>9.2} {mib:>12}", d.as_secs_f64());
    };
    row(
        "hv-backup create (full)",
        hv_full,
        full["read_bytes"].as_u64(),
    );
    row(&format!("hv-backup create ({how})"), hv_incr, Some(read));
    row(
        "hv-backup create (unchanged)",
        hv_same,
        same["read_bytes"].as_u64(),
    );
    row("virtnbdbackup -l full", vnb_full, Some(vnb_full_size));
    row("virtnbdbackup -l inc", vnb_incr, Some(vnb_incr_size));
    println!("  (virtnbdbackup's column is what it wrote, the closest figure it reports)");
    println!();
    let secs = |d: Duration| d.as_secs_f64();
    let read_ratio = read as f64 / rewritten as f64;
    verdict_at_most("incremental bytes read / bytes rewritten", read_ratio, 2.0);
    let time_ratio = secs(hv_incr) / secs(hv_full);
    verdict_at_most("incremental time / full time", time_ratio, 0.10);
    verdict(
        "unchanged backup: times faster than the full one",
        secs(hv_full) / secs(hv_same),
        5.0,
    );
    verdict(
        "incremental speed / virtnbdbackup -l inc",
        secs(vnb_incr) / secs(hv_incr),
        1.0,
    );
    drop(guest);
    Ok(())
}

fn timed(cmd: &mut Command) -> Result<(Duration, serde_json::Value), String> {
    let t = Instant::now();
    let rec = record(cmd)?;
    Ok((t.elapsed(), rec))
}
