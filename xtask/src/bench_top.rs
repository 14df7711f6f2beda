//! What one hv-top refresh costs libvirtd, against one hv-ls run, on the
//! same daemon with many defined domains and some running test guests.
//! hv-top runs as a user runs it, in a terminal (tmux) refreshing every
//! second: libvirtd's CPU over thirty seconds of it, less its CPU over
//! thirty idle seconds, is thirty refreshes and one slow pass (snapshots
//! counted again, hv-health run for the header), which come every 30 s.
//! The first refresh, which also reads each VM's XML once for its tags,
//! is left out: that is the steady cost.
//! `--once` (two refreshes, the first with the XML) is printed too.
//! Medians of 3.

use crate::bench::{daemon_cpu, define, process_cpu};
use crate::cmd::{cost, median_cost, ok, release_build, verdict_at_most, Cost};
use hv_testbench::{Guest, GuestSpec};
use std::process::{Command, Stdio};
use std::time::Duration;

pub fn run(domains: usize, running: usize, rounds: usize) -> Result<(), String> {
    let uri = hv_testbench::URI;
    let bins = release_build(&["hv-top", "hv-ls"])?;
    let conn = hv_testbench::connect();
    eprintln!(
        "defining {} stopped domains and starting {running} test guests…",
        domains - running
    );
    let _stopped = define(&conn, domains - running)?;
    let guests: Vec<Guest> = (0..running)
        .map(|i| GuestSpec::new(&format!("top-{i:02}")).define(&conn))
        .collect();
    guests.iter().for_each(|g| {
        g.start_ready();
    });
    std::thread::sleep(Duration::from_secs(5));
    let total = conn.list_all_domains(0).map_err(|e| e.to_string())?.len();
    let quiet = |c: &mut Command| -> Result<(), String> {
        ok(c.args(["-c", uri, "--format", "jsonl"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()))
    };
    let (mut ls, mut top) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        eprintln!("round {}/{rounds}…", round + 1);
        ls.push(cost(|| quiet(&mut Command::new(bins.join("hv-ls"))))?);
        top.push(cost(|| {
            quiet(Command::new(bins.join("hv-top")).args(["--once", "--interval", "1s"]))
        })?);
    }
    let (ls, top) = (median_cost(&ls), median_cost(&top));
    let mut steady = Vec::new();
    for round in 0..rounds {
        eprintln!("steady refreshes, round {}/{rounds}…", round + 1);
        steady.push(steady_refresh(&bins.join("hv-top"), uri)?);
    }
    let steady = median_cost(&steady);
    println!("hv-top refresh vs hv-ls, {total} domains ({running} running), median of {rounds}:");
    println!("  hv-ls (one listing):              {ls}");
    println!("  hv-top --once (two refreshes):    {top}");
    println!(
        "  hv-top, one steady refresh:       cpu {:7.3} s   libvirtd cpu {:6.3} s",
        steady.cpu.as_secs_f64(),
        steady.daemon.as_secs_f64()
    );
    verdict_at_most(
        "libvirtd CPU: one hv-top refresh / one hv-ls run",
        steady.daemon.as_secs_f64() / ls.daemon.as_secs_f64().max(1e-6),
        1.0,
    );
    drop(guests);
    Ok(())
}

/// One refresh of hv-top running in a terminal: libvirtd's and hv-top's
/// CPU over [`WINDOW`] refreshes, less libvirtd's idle CPU, divided out.
fn steady_refresh(hv_top: &std::path::Path, uri: &str) -> Result<Cost, String> {
    const WINDOW: u32 = 30;
    let second = Duration::from_secs(1);
    let idle0 = daemon_cpu().unwrap_or_default();
    std::thread::sleep(second * WINDOW);
    let idle = daemon_cpu().unwrap_or_default().saturating_sub(idle0);
    let server = format!("hvbench-top-{}", std::process::id());
    let tmux = || {
        let mut c = Command::new("tmux");
        c.args(["-L", &server]).env_remove("TMUX");
        c
    };
    ok(tmux()
        .args(["new-session", "-d", "-x", "80", "-y", "24"])
        .arg(format!(
            "exec env HV_CONNECT='{uri}' '{}' --interval 1s",
            hv_top.display()
        )))?;
    let measured = (|| {
        std::thread::sleep(second * 4); // its first refresh, with the XML, is done
        let pid = crate::cmd::capture(tmux().args(["list-panes", "-F", "#{pane_pid}"]))?;
        let pid = pid.trim().to_owned();
        let (top0, daemon0) = (process_cpu(&pid), daemon_cpu());
        std::thread::sleep(second * WINDOW);
        let (top1, daemon1) = (process_cpu(&pid), daemon_cpu());
        let (Some(top0), Some(top1), Some(d0), Some(d1)) = (top0, top1, daemon0, daemon1) else {
            return Err("cannot read hv-top's or libvirtd's CPU time".to_owned());
        };
        Ok(Cost {
            wall: Duration::ZERO, // a refresh is not timed here, only its CPU
            cpu: top1.saturating_sub(top0) / WINDOW,
            daemon: d1.saturating_sub(d0).saturating_sub(idle) / WINDOW,
        })
    })();
    let _ = tmux().arg("kill-server").status();
    measured
}
