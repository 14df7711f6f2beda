//! hv-metrics against Debian's prometheus-libvirt-exporter on the same
//! daemon, in one run: both serve /metrics over HTTP, both are scraped in
//! turn the way Prometheus would, and the time of each scrape and the number
//! of series each exports are printed. The domains are defined for the run
//! (most stopped, some running test guests) and removed afterwards.

use crate::bench::{daemon_cpu, define};
use crate::cmd::{median, need_tools, release_build, verdict};
use hv_testbench::http::{get_metrics, get_metrics_when_up};
use hv_testbench::{free_port, Guest, GuestSpec, KillOnDrop};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Scrapes of each exporter. A scrape's time varies by a third from one to
/// the next on a loaded 2-core host (it waits on QEMU monitors), so a
/// median needs many.
const ROUNDS: usize = 60;

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

    let (mut hv_times, mut peer_times) = (Vec::new(), Vec::new());
    let (mut hv_cpu, mut peer_cpu) = (Duration::ZERO, Duration::ZERO);
    std::thread::sleep(SETTLE);
    let scrape = |port, times: &mut Vec<Duration>, cpu: &mut Duration| {
        let before = daemon_cpu().unwrap_or_default();
        times.push(timed_scrape(port)?);
        *cpu += daemon_cpu().unwrap_or_default().saturating_sub(before);
        Ok::<(), String>(())
    };
    // In turn, each first every other round.
    for round in 0..ROUNDS {
        if round % 2 == 0 {
            scrape(hv_port, &mut hv_times, &mut hv_cpu)?;
            scrape(peer_port, &mut peer_times, &mut peer_cpu)?;
        } else {
            scrape(peer_port, &mut peer_times, &mut peer_cpu)?;
            scrape(hv_port, &mut hv_times, &mut hv_cpu)?;
        }
    }
    let (hv, peer) = (median(hv_times), median(peer_times));
    println!("hv-metrics vs prometheus-libvirt-exporter, {total} domains ({running} running), median of {ROUNDS} scrapes each, in turn:");
    println!(
        "  hv-metrics --listen:          {:>8.1} ms, {hv_series} series",
        ms(hv)
    );
    println!(
        "  prometheus-libvirt-exporter:  {:>8.1} ms, {peer_series} series",
        ms(peer)
    );
    println!(
        "  libvirtd CPU per scrape: hv-metrics {:.1} ms, exporter {:.1} ms",
        ms(hv_cpu) / ROUNDS as f64,
        ms(peer_cpu) / ROUNDS as f64
    );
    verdict(
        "exporter time / hv-metrics time",
        peer.as_secs_f64() / hv.as_secs_f64(),
        1.0,
    );
    verdict(
        "hv-metrics series / exporter series",
        hv_series as f64 / peer_series as f64,
        1.0,
    );
    print_collector_times(&get_metrics(hv_port).map_err(|e| e.to_string())?);
    drop(guests);
    Ok(())
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
