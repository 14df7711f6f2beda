//! hv-metrics against Debian's prometheus-libvirt-exporter on the same
//! daemon, in one run: both serve /metrics over HTTP, both are scraped in
//! turn the way Prometheus would, and the time of each scrape and the number
//! of series each exports are printed. The domains are defined for the run
//! (most stopped, some running test guests) and removed afterwards.

use crate::bench::{daemon_cpu, define, process_cpu};
use crate::cmd::{median, need_tools, release_build, verdict};
use hv_testbench::http::{get_metrics, get_metrics_when_up};
use hv_testbench::{free_port, Guest, GuestSpec, KillOnDrop};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs, and scrapes of each exporter per run. A scrape's time varies by
/// a third from one to the next on a loaded 2-core host (it waits on QEMU
/// monitors), so each run's figure is itself a median of many scrapes; the
/// figures printed are the medians of the runs.
const RUNS: usize = 3;
const ROUNDS: usize = 20;

/// Time for the guests to finish booting before anything is timed.
const SETTLE: Duration = Duration::from_secs(10);

pub fn run(domains: usize, running: usize) -> Result<(), String> {
    need_tools(
        &["prometheus-libvirt-exporter", "promtool"],
        "prometheus-libvirt-exporter prometheus",
    )?;
    let uri = hv_testbench::URI;
    let hv_metrics = release_build(&["hv-metrics"])?.join("hv-metrics");
    let conn = hv_testbench::connect();
    eprintln!(
        "defining {} stopped domains and starting {running} test guests…",
        domains - running
    );
    let _stopped = define(&conn, domains - running)?;
    let guests: Vec<Guest> = (0..running)
        .map(|i| GuestSpec::new(&format!("metrics-{i:02}")).define(&conn))
        .collect();
    guests.iter().for_each(|g| {
        g.start_ready();
    });
    let total = conn.list_all_domains(0).map_err(|e| e.to_string())?.len();

    let hv_port = free_port();
    let _hv = KillOnDrop(
        Command::new(&hv_metrics)
            .args(["-c", uri, "--listen", &hv_port.to_string()])
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?,
    );
    let peer_port = free_port();
    let _peer = KillOnDrop(
        Command::new("prometheus-libvirt-exporter")
            .arg(format!("--web.listen-address=127.0.0.1:{peer_port}"))
            .arg(format!("--libvirt.uri={uri}"))
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?,
    );
    // Warm both (connections, daemon caches) and check what they export.
    let (hv_body, peer_body) = (
        get_metrics_when_up(hv_port)?,
        get_metrics_when_up(peer_port)?,
    );
    hv_testbench::promtool_check_metrics(&hv_body)?;
    let (hv_series, peer_series) = (series(&hv_body), series(&peer_body));

    std::thread::sleep(SETTLE);
    let (hv_pid, peer_pid) = (_hv.0.id().to_string(), _peer.0.id().to_string());
    let mut runs = Vec::new();
    for run in 0..RUNS {
        let r = measure_run(run, (hv_port, &hv_pid), (peer_port, &peer_pid))?;
        println!(
            "  run {}: hv-metrics {:.1} ms (libvirtd {:.1} ms, own {:.1} ms), exporter {:.1} ms (libvirtd {:.1} ms, own {:.1} ms)",
            run + 1,
            r.hv.wall,
            r.hv.daemon,
            r.hv.own,
            r.peer.wall,
            r.peer.daemon,
            r.peer.own
        );
        runs.push(r);
    }
    let med = |f: fn(&Run) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (hv, peer) = (med(|r| r.hv.wall), med(|r| r.peer.wall));
    println!(
        "hv-metrics vs prometheus-libvirt-exporter, {total} domains ({running} running), {}; \
         median of {RUNS} runs of {ROUNDS} scrapes each, in turn, per scrape:",
        crate::bench::machine()
    );
    println!("  hv-metrics --listen:          {hv:>8.1} ms, {hv_series} series");
    println!("  prometheus-libvirt-exporter:  {peer:>8.1} ms, {peer_series} series");
    println!(
        "  libvirtd CPU per scrape: hv-metrics {:.1} ms, exporter {:.1} ms",
        med(|r| r.hv.daemon),
        med(|r| r.peer.daemon)
    );
    println!(
        "  the server's own CPU per scrape: hv-metrics {:.1} ms, exporter {:.1} ms",
        med(|r| r.hv.own),
        med(|r| r.peer.own)
    );
    verdict("exporter time / hv-metrics time", peer / hv, 1.0);
    verdict(
        "hv-metrics series / exporter series",
        hv_series as f64 / peer_series as f64,
        1.0,
    );
    print_collector_times(&get_metrics(hv_port).map_err(|e| e.to_string())?);
    drop(guests);
    Ok(())
}

/// One server's figures in one run, per scrape, in ms: the median time,
/// and the mean CPU of libvirtd and of the server itself.
#[derive(Default)]
struct Figures {
    wall: f64,
    daemon: f64,
    own: f64,
}

struct Run {
    hv: Figures,
    peer: Figures,
}

/// `ROUNDS` scrapes of each server in turn, each first every other round
/// (the first one first in even runs).
fn measure_run(run: usize, hv: (u16, &str), peer: (u16, &str)) -> Result<Run, String> {
    let mut times = [Vec::new(), Vec::new()];
    let mut daemon = [Duration::ZERO; 2];
    let servers = [hv, peer];
    let own0 = servers.map(|(_, pid)| process_cpu(pid));
    for round in 0..ROUNDS {
        let first = (round + run) % 2;
        for k in [first, 1 - first] {
            let before = daemon_cpu().unwrap_or_default();
            times[k].push(timed_scrape(servers[k].0)?);
            daemon[k] += daemon_cpu().unwrap_or_default().saturating_sub(before);
        }
    }
    let mut figures = [0, 1].map(|k| {
        let own = process_cpu(servers[k].1)
            .zip(own0[k])
            .map_or(f64::NAN, |(after, before)| ms(after.saturating_sub(before)));
        Figures {
            wall: ms(median(std::mem::take(&mut times[k]))),
            daemon: ms(daemon[k]) / ROUNDS as f64,
            own: own / ROUNDS as f64,
        }
    });
    let peer = std::mem::take(&mut figures[1]);
    let hv = std::mem::take(&mut figures[0]);
    Ok(Run { hv, peer })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn timed_scrape(port: u16) -> Result<Duration, String> {
    let start = Instant::now();
    get_metrics(port).map_err(|e| format!("port {port}: {e}"))?;
    Ok(start.elapsed())
}

/// hv's own account of where a scrape's time goes.
fn print_collector_times(body: &str) {
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("hv_scrape_collector_duration_seconds{collector=\"")
        else {
            continue;
        };
        if let Some((name, secs)) = rest.split_once("\"} ") {
            let secs: f64 = secs.parse().unwrap_or(f64::NAN);
            println!(
                "  hv-metrics collector {name:<10} {:>8.1} ms",
                secs * 1000.0
            );
        }
    }
}

fn series(body: &str) -> usize {
    body.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}
