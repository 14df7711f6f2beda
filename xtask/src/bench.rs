//! hv-ls against what users run today, measured in one run on the real
//! daemon: `virsh list --all --name` (names only, one call) and a `virsh
//! dominfo` loop (what a script does to get per-VM facts). The domains are
//! defined for the run and removed afterwards, even on failure.

use crate::cmd::{cost, median_cost, release_build, verdict, verdict_at_most, Cost};
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
    let fields = || {
        let mut c = hv();
        c.args(["--fields", "name,uuid,state"]);
        c
    };
    let virsh_all = || {
        let mut c = Command::new("virsh");
        c.args(["-c", uri, "list", "--all"]);
        c
    };
    let (_, out) = timed(&mut fields())?;
    let projected = out.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();
    if projected != total {
        return Err(format!(
            "hv-ls --fields printed {projected} records for {total} domains"
        ));
    }
    timed(&mut virsh_all())?;

    // Medians of 3, each tool's CPU beside its wall time; the order turns
    // every round so no tool always runs on a warmer daemon.
    let run = |c: &mut Command| cost(|| timed(c).map(|_| ()));
    let mut costs: [Vec<Cost>; 4] = Default::default();
    for round in 0..ROUNDS {
        for k in 0..4 {
            let which = (k + round) % 4;
            let c = match which {
                0 => run(&mut hv())?,
                1 => run(&mut fields())?,
                2 => run(&mut virsh_list())?,
                _ => run(&mut virsh_all())?,
            };
            costs[which].push(c);
        }
    }
    let [full, projected, list, all] = costs.map(|c| median_cost(&c));
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
    println!(
        "hv-ls bench: {total} domains defined ({n} for the run), medians of {ROUNDS} runs (order turned each round), {uri}"
    );
    println!("  hv-ls --fields name,uuid,state   {projected}");
    println!("  virsh list --all --name          {list}");
    println!("  virsh list --all                 {all}");
    println!("  hv-ls (full records, jsonl)      {full}");
    println!(
        "  virsh dominfo loop (1 run)       wall {:7.2} s",
        t_loop.as_secs_f64()
    );
    let secs = |c: &Cost| c.wall.as_secs_f64();
    verdict_at_most(
        "hv-ls --fields name,uuid,state / virsh list --all --name (wall)",
        secs(&projected) / secs(&list),
        1.5,
    );
    verdict_at_most(
        "hv-ls --fields name,uuid,state / virsh list --all (wall)",
        secs(&projected) / secs(&all),
        1.0,
    );
    println!(
        "  full records / virsh list --all --name (wall): {:.2}; libvirtd CPU per full listing {:.3} s",
        secs(&full) / secs(&list),
        full.daemon.as_secs_f64()
    );
    verdict(
        "dominfo loop time / hv-ls time",
        t_loop.as_secs_f64() / secs(&full),
        20.0,
    );
    drop(domains);
    Ok(())
}

/// The machine a figure came from, for the line above it: cores and CPU model.
pub(crate) fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores ({model})")
}
