//! hv-ls against what users run today, measured in one run on the real
//! daemon: `virsh list --all --name` (names only, one call) and a `virsh
//! dominfo` loop (what a script does to get per-VM facts). The domains are
//! defined for the run and removed afterwards, even on failure.

use crate::cmd::{median, release_build, verdict, verdict_at_most};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use virt::connect::Connect;

const ROUNDS: usize = 7;
const IMAGE_DIR: &str = "/var/lib/libvirt/images/hv-test";

pub(crate) struct Domains<'a> {
    conn: &'a Connect,
    names: Vec<String>,
    disk: String,
}

impl Drop for Domains<'_> {
    fn drop(&mut self) {
        for name in &self.names {
            if let Ok(d) = self.conn.lookup_domain_by_name(name) {
                let _ = d.undefine();
            }
        }
        let _ = std::fs::remove_file(&self.disk);
    }
}

pub(crate) fn domain_xml(name: &str, disk: &str, i: usize) -> String {
    let tags = if i.is_multiple_of(3) {
        "<hv:tags xmlns:hv='https://hv.invalid/xmlns/tags/1'><tag>bench</tag></hv:tags>"
    } else {
        ""
    };
    format!(
        "<domain type='qemu'><name>{name}</name><metadata>{tags}</metadata>\
         <memory unit='MiB'>128</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='q35'>hvm</type></os>\
         <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
         <source file='{disk}'/><target dev='vda' bus='virtio'/></disk>\
         <interface type='network'><source network='default'/><model type='virtio'/></interface>\
         </devices></domain>"
    )
}

pub(crate) fn define(conn: &Connect, n: usize) -> Result<Domains<'_>, String> {
    std::fs::create_dir_all(IMAGE_DIR).map_err(|e| e.to_string())?;
    let prefix = format!("hvb-{}-", std::process::id());
    let disk = format!("{IMAGE_DIR}/{prefix}disk.qcow2");
    run_ok(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", &disk, "1G"]))?;
    let mut domains = Domains {
        conn,
        names: Vec::with_capacity(n),
        disk,
    };
    for i in 0..n {
        let name = format!("{prefix}{i:04}");
        conn.define_domain_xml(&domain_xml(&name, &domains.disk, i))
            .map_err(|e| format!("define {name}: {e}"))?;
        domains.names.push(name);
    }
    Ok(domains)
}

fn run_ok(cmd: &mut Command) -> Result<Vec<u8>, String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed with {}", out.status));
    }
    Ok(out.stdout)
}

fn timed(cmd: &mut Command) -> Result<(Duration, Vec<u8>), String> {
    let start = Instant::now();
    let out = run_ok(cmd)?;
    Ok((start.elapsed(), out))
}

/// CPU time libvirtd and the children it waited for (qemu-img, which it
/// runs to copy volumes) have used so far (user + system), from /proc.
pub(crate) fn daemon_cpu() -> Option<Duration> {
    let pid = String::from_utf8(
        Command::new("pgrep")
            .args(["-o", "-x", "libvirtd"])
            .output()
            .ok()?
            .stdout,
    )
    .ok()?;
    process_cpu(pid.trim())
}

/// The CPU time process `pid` and its waited-for children have used.
pub(crate) fn process_cpu(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_comm.split(' ').collect();
    let ticks: u64 = (11..=14)
        .map(|i| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    Some(Duration::from_millis(ticks * 10)) // USER_HZ is 100 on Linux
}

pub fn ls(n: usize, uri: &str) -> Result<(), String> {
    let hv_ls = release_build(&["hv-ls"])?.join("hv-ls");
    virt::error::clear_error_callback();
    let conn = Connect::open(Some(uri)).map_err(|e| format!("cannot connect to {uri}: {e}"))?;
    eprintln!("defining {n} domains…");
    let domains = define(&conn, n)?;
    let total = conn.list_all_domains(0).map_err(|e| e.to_string())?.len();

    let hv = || {
        let mut c = Command::new(&hv_ls);
        c.args(["-c", uri, "--format", "jsonl"])
            .stdin(Stdio::null());
        c
    };
    let virsh_list = || {
        let mut c = Command::new("virsh");
        c.args(["-c", uri, "list", "--all", "--name"]);
        c
    };
    // Warm both (page cache, daemon caches) and check hv-ls returns full records.
    let (_, out) = timed(&mut hv())?;
    let records: Vec<&[u8]> = out
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    if records.len() != total {
        return Err(format!(
            "hv-ls printed {} records for {total} domains",
            records.len()
        ));
    }
    let sample = String::from_utf8_lossy(records[records.len() / 2]);
    if !(sample.contains("\"disks\":[{")
        && sample.contains("\"interfaces\":[{")
        && sample.contains("\"snapshot_count\""))
    {
        return Err(format!("hv-ls record lacks fields: {sample}"));
    }
    timed(&mut virsh_list())?;

    let (mut t_hv, mut t_list, mut t_daemon) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let before = daemon_cpu();
        t_hv.push(timed(&mut hv())?.0);
        if let (Some(a), Some(b)) = (before, daemon_cpu()) {
            t_daemon.push(b.saturating_sub(a));
        }
        t_list.push(timed(&mut virsh_list())?.0);
    }
    eprintln!("running the virsh dominfo loop over {n} domains…");
    let (t_loop, _) = timed(
        Command::new("bash")
            .args([
                "-c",
                "for d in \"$@\"; do virsh -c \"$0\" dominfo \"$d\" >/dev/null || exit 1; done",
                uri,
            ])
            .args(&domains.names),
    )?;
    let (hv_med, list_med) = (median(t_hv), median(t_list));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let vs_list = hv_med.as_secs_f64() / list_med.as_secs_f64();
    let vs_loop = t_loop.as_secs_f64() / hv_med.as_secs_f64();
    println!(
        "hv-ls bench: {total} domains defined ({n} for the run), medians of {ROUNDS} runs, {uri}"
    );
    println!("  hv-ls (full records, jsonl)    {:9.1} ms", ms(hv_med));
    println!("  virsh list --all --name        {:9.1} ms", ms(list_med));
    println!("  virsh dominfo loop (1 run)     {:9.1} ms", ms(t_loop));
    if !t_daemon.is_empty() {
        println!(
            "  libvirtd CPU per hv-ls run     {:9.1} ms  (its own XML and block-size work)",
            ms(median(t_daemon))
        );
    }
    verdict_at_most("hv-ls time / virsh list time", vs_list, 1.5);
    verdict("dominfo loop time / hv-ls time", vs_loop, 20.0);
    drop(domains);
    Ok(())
}
