//! hv-metrics: the host, its VMs and hv's own state (backups, snapshots) as
//! Prometheus metrics, so alerts can be written on what hv knows. It prints
//! one scrape, writes one for node_exporter's textfile collector, or serves
//! /metrics itself. A scrape is a handful of bulk libvirt calls, so its cost
//! barely grows with the number of VMs.

mod collect;
pub mod exposition;
mod remembered;
mod serve;

use clap::Parser;
use collect::{scrape, Sources};
use exposition::Exposition;
use hv_common::cli::ConnectArgs;
use hv_common::connect::Access;
use hv_common::manual::Manual;
use hv_common::output::{self, Format, Printer};
use hv_common::{Code, Error, Exit, Result};
use remembered::Remembered;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::{Path, PathBuf};
use virt::connect::Connect;

#[derive(Debug, Parser)]
#[command(
    name = "hv-metrics",
    version,
    about = "Prometheus metrics for the host, its VMs, backups and snapshots",
    long_about = "Print the Prometheus text exposition format for the host and every VM: state, vCPUs, \
        CPU time, memory, disk and network counters, storage pools, snapshot counts, and from hv's \
        own files the newest backup of each VM. With --textfile it writes the same text for \
        node_exporter's textfile collector; with --listen it serves /metrics over HTTP.\n\n\
        Every metric is listed with its labels in docs/metrics.md; alert rules, a Grafana \
        dashboard and an example prometheus.yml are in docs/monitoring/."
)]
pub struct Cli {
    /// Write DIR/hv.prom atomically (temporary file, then rename) for node_exporter's
    /// --collector.textfile.directory, instead of printing
    #[arg(long, value_name = "DIR", conflicts_with = "listen")]
    pub textfile: Option<PathBuf>,

    /// Serve /metrics over HTTP on ADDR:PORT (a bare PORT binds 127.0.0.1) until SIGTERM or
    /// Ctrl-C, which exit with status 0
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,

    /// An hv-backup repository whose backups to report: each VM's newest backup time,
    /// duration and sizes, and the free space of its filesystem (repeatable)
    /// [default: $HV_BACKUP_REPO when set]
    #[arg(long = "repo", value_name = "REPO")]
    pub repos: Vec<PathBuf>,

    /// The saved output of the last hv-backup create run (hv-backup create ... > FILE):
    /// reports which VMs' last backup failed
    #[arg(long, value_name = "FILE")]
    pub backup_results: Option<PathBuf>,

    /// An hv-iso library whose images to report: present, unsigned, and the outcome of
    /// the last hv-iso verify (which this does not repeat) [default: $HV_ISO_LIBRARY when set]
    #[arg(long, value_name = "DIR")]
    pub iso_library: Option<PathBuf>,

    /// hv-health's state file: reports the repairs hv-health --fix made and the VMs it gave up on
    /// [default: $HV_HEALTH_STATE when set]
    #[arg(long, value_name = "FILE")]
    pub health_state: Option<PathBuf>,

    /// prometheus (the text exposition format), or one record per series: jsonl, json,
    /// table or csv
    #[arg(long, value_parser = hv_common::cli::choice::<MetricsFormat>(), value_name = "FORMAT", default_value = "prometheus", hide_possible_values = true, conflicts_with_all = ["textfile", "listen"])]
    pub format: MetricsFormat,

    /// Add host="NAME" to every series, for one Prometheus job or textfile
    /// collection over several hosts [default: none: Prometheus' instance label names the host]
    #[arg(long, value_name = "NAME", value_parser = host_label)]
    pub host_label: Option<String>,

    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// A label value Prometheus and a shell both take as it is.
fn host_label(text: &str) -> std::result::Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 253
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
    if ok {
        Ok(text.to_owned())
    } else {
        Err("use 1 to 253 letters, digits, '-', '_', '.' or ':' (a host name or alias)".into())
    }
}

/// What Prometheus reads is the default, on a terminal too: the records
/// are for scripts that would rather not parse it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsFormat {
    Prometheus,
    Jsonl,
    Json,
    Table,
    Csv,
}

impl hv_common::Choice for MetricsFormat {
    const ALL: &'static [MetricsFormat] = &[
        MetricsFormat::Prometheus,
        MetricsFormat::Jsonl,
        MetricsFormat::Json,
        MetricsFormat::Table,
        MetricsFormat::Csv,
    ];

    fn name(self) -> &'static str {
        match self.records() {
            None => "prometheus",
            Some(format) => format.name(),
        }
    }
}

impl MetricsFormat {
    fn records(self) -> Option<Format> {
        match self {
            MetricsFormat::Prometheus => None,
            MetricsFormat::Jsonl => Some(Format::Jsonl),
            MetricsFormat::Json => Some(Format::Json),
            MetricsFormat::Table => Some(Format::Table),
            MetricsFormat::Csv => Some(Format::Csv),
        }
    }
}

pub const MANUAL: Manual = Manual {
    exit_status: hv_common::manual::EXIT_STATUS,
    environment: &[
        ("HV_CONNECT", "libvirt URI used when -c/--connect is not given."),
        ("LIBVIRT_DEFAULT_URI", "libvirt URI used when neither -c nor HV_CONNECT is set; without any, libvirt picks its own default."),
        ("HV_BACKUP_REPO", "The hv-backup repository to report when no --repo is given, as for hv-backup; empty means none."),
        ("HV_ISO_LIBRARY", "The hv-iso library to report when --iso-library is not given, as for hv-iso; empty means none."),
    ],
    examples: &[
        ("Print one scrape:", "hv-metrics"),
        ("Check the output with Prometheus' own linter:", "hv-metrics | promtool check metrics"),
        (
            "Every five minutes from a systemd timer or cron, for node_exporter:",
            "hv-metrics --textfile /var/lib/prometheus/node-exporter --repo /srv/backup",
        ),
        ("Serve /metrics for Prometheus on loopback:", "hv-metrics --listen 127.0.0.1:9477 --repo /srv/backup"),
        (
            "Keep the last backup run's records so a failed backup becomes an alert:",
            "hv-ls --tag prod | hv-backup create --repo /srv/backup > /var/lib/hv/backup-results.jsonl; hv-metrics --backup-results /var/lib/hv/backup-results.jsonl",
        ),
        (
            "Report the ISO library too (hv-iso verify runs from its own timer and records what it found):",
            "hv-metrics --textfile /var/lib/prometheus/node-exporter --iso-library /var/lib/hv/isos",
        ),
        ("Which VMs crashed, from the command line:", "hv-metrics | grep '^hv_vm_crashed.* 1$'"),
        (
            "The same as records, for jq:",
            "hv-metrics --format jsonl | jq -r 'select(.metric == \"hv_vm_crashed\" and .value == 1) | .name'",
        ),
    ],
    notes: &[
        "Every VM series carries the labels name and uuid; disk series add target, network series interface, backup series repository. With --health-state (hv-health's state file), hv_autofix_attempts and hv_autofix_gave_up report hv-health --fix's repairs, for the HvAutofixGaveUp alert. docs/metrics.md lists every metric; docs/monitoring/ has alert rules (tested with promtool), a Grafana dashboard and a prometheus.yml.",
        "When libvirt cannot be reached, the output still comes out with hv_libvirt_up 0 (so the HvLibvirtDown alert can fire), and the exit status is 3. When one part of a scrape fails (storage pools, a backup repository), the rest is still written, hv_scrape_collector_success is 0 for that part, the reason goes to stderr, and the exit status is 1.",
        "The connection is read-only: a monitoring user needs no write access to libvirt. With --listen the connection is kept between scrapes and reopened when libvirt restarts, and what costs libvirt much but changes seldom is remembered for up to a minute: a stopped VM's disk sizes (until one of its image files changes) and a running VM's vCPU counts and memory size (until it stops). See docs/monitoring.md.",
        "With --listen, up to 64 connections are served at once, each on its own thread. A request head must arrive whole within 5 s (else 408) and 8 KiB (else 431), and an answer must be taken within 10 s; these are deadlines for the whole, not per read. When all 64 places are taken, the connection that has waited longest for its request is closed to make room, so idle connections cannot keep a scrape out; only when all 64 are being answered does a new one get 503. libvirt is asked for one scrape at a time: requests that arrive during a scrape share the next one. SIGTERM or Ctrl-C stops accepting, gives answers under way up to 5 s, and exits with status 0; a second signal exits at once.",
    ],
};

pub fn run(cli: Cli) -> Result<Exit> {
    let env = |key: &str| std::env::var_os(key);
    let sources = Sources {
        host_label: cli.host_label,
        repos: or_from_env(cli.repos, "HV_BACKUP_REPO", env),
        backup_results: cli.backup_results,
        iso_library: or_from_env(cli.iso_library.into_iter().collect(), "HV_ISO_LIBRARY", env)
            .pop(),
        health_state: or_from_env(
            cli.health_state.into_iter().collect(),
            "HV_HEALTH_STATE",
            env,
        )
        .pop(),
    };
    if let Some(addr) = &cli.listen {
        return listen(&cli.connect, addr, &sources);
    }
    let (conn, connect_error) = match cli.connect.open(Access::ReadOnly) {
        Ok(conn) => (Some(conn), None),
        Err(err) => (None, Some(err)),
    };
    let scraped = scrape(conn.as_ref(), &sources, &mut Remembered::default());
    match (&cli.textfile, cli.format.records()) {
        (Some(dir), _) => write_textfile(dir, &scraped.exposition.render())?,
        (None, Some(format)) => print_records(&scraped.exposition, format)?,
        (None, None) => print(&scraped.exposition.render())?,
    }
    if let Some(err) = connect_error {
        return Err(err);
    }
    for err in &scraped.errors {
        hv_common::cli::warn(err);
    }
    Ok(if scraped.errors.is_empty() {
        Exit::Ok
    } else {
        Exit::ItemFailed
    })
}

fn print_records(exposition: &Exposition, format: Format) -> Result<()> {
    let mut printer = Printer::new(format, std::io::stdout(), &[]);
    for record in exposition.records() {
        printer.emit(output::to_record(&record))?;
    }
    printer.finish().map(drop)
}

fn print(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(Error::output)
}

pub const TEXTFILE_NAME: &str = "hv.prom";

/// node_exporter reads every `*.prom` file whenever it is scraped, so the
/// file must never be seen half-written: write a dot-file beside it (which
/// node_exporter ignores), sync, rename over the old one.
fn write_textfile(dir: &Path, text: &str) -> Result<()> {
    if !dir.is_dir() {
        return Err(Error::new(
            Code::NotFound,
            format!(
                "textfile directory {} does not exist: create it, or give node_exporter's --collector.textfile.directory",
                dir.display()
            ),
        ));
    }
    let dest = dir.join(TEXTFILE_NAME);
    hv_common::fsutil::write_atomic(&dest, text.as_bytes(), 0o644)
        .map_err(|err| Error::io(format!("cannot write {}", dest.display()), err))
}

/// The paths a flag gave or, with none, the one the environment variable
/// names, as the command that owns it (hv-backup, hv-iso) reads it. An
/// empty variable names nothing: /etc/hv/hv.env ships `HV_BACKUP_REPO=`.
/// Not clap's `env`, which refuses an empty value.
fn or_from_env(
    given: Vec<PathBuf>,
    key: &str,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Vec<PathBuf> {
    if !given.is_empty() {
        return given;
    }
    env(key)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .collect()
}

fn listen(connect: &ConnectArgs, addr: &str, sources: &Sources) -> Result<Exit> {
    let addr = parse_listen(addr)?;
    let listener = TcpListener::bind(addr).map_err(|err| {
        Error::io(
            format!("cannot listen on {addr}: is another exporter using the port? choose another with --listen"),
            err,
        )
    })?;
    hv_common::cli::warn(format!("serving http://{addr}/metrics"));
    let mut conn: Option<Connect> = None;
    let mut memory = Remembered::default();
    serve::serve(listener, || {
        if !conn.as_ref().is_some_and(|c| c.is_alive().unwrap_or(false)) {
            conn = match connect.open(Access::ReadOnly) {
                Ok(c) => Some(c),
                Err(err) => {
                    hv_common::cli::warn(err);
                    None
                }
            };
            // A restarted daemon may hold other domains under the same UUIDs.
            memory = Remembered::new(conn.as_ref().is_some_and(local_system_daemon));
        }
        let scraped = scrape(conn.as_ref(), sources, &mut memory);
        for err in &scraped.errors {
            hv_common::cli::warn(err);
        }
        scraped.exposition.render()
    })?;
    Ok(Exit::Ok)
}

/// Whether the daemon's QEMU processes run on this host under the system
/// daemon's /run/libvirt, so hv may read them itself: a remote host's VM
/// may have a local twin of the same name and UUID (a migrated copy).
fn local_system_daemon(conn: &Connect) -> bool {
    conn.uri().is_ok_and(|uri| {
        matches!(
            uri.split('?').next(),
            Some("qemu:///system" | "qemu+unix:///system")
        )
    })
}

/// `ADDR:PORT`, `[v6]:PORT`, `host:PORT`, or a bare `PORT` on loopback: an
/// exporter must not end up on every interface by accident.
fn parse_listen(addr: &str) -> Result<SocketAddr> {
    let with_host = if addr.bytes().all(|b| b.is_ascii_digit()) && !addr.is_empty() {
        format!("127.0.0.1:{addr}")
    } else {
        addr.to_owned()
    };
    with_host
        .to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .ok_or_else(|| {
            Error::usage(format!(
                "--listen {addr:?} is not an address: use ADDR:PORT like 127.0.0.1:9477, or a bare port"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_and_library_default_to_their_environment_variables() {
        let env = |value: &'static str| move |_: &str| Some(std::ffi::OsString::from(value));
        let flag = vec![PathBuf::from("/flag")];
        assert_eq!(
            or_from_env(flag.clone(), "HV_BACKUP_REPO", env("/env")),
            flag
        );
        assert_eq!(
            or_from_env(Vec::new(), "HV_BACKUP_REPO", env("/env")),
            [PathBuf::from("/env")]
        );
        assert!(
            or_from_env(Vec::new(), "HV_BACKUP_REPO", env("")).is_empty(),
            "hv.env's empty HV_BACKUP_REPO= names no repository"
        );
        assert!(or_from_env(Vec::new(), "HV_ISO_LIBRARY", |_: &str| None).is_empty());
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen("9477").unwrap().to_string(), "127.0.0.1:9477");
        assert_eq!(
            parse_listen("0.0.0.0:80").unwrap().to_string(),
            "0.0.0.0:80"
        );
        assert_eq!(
            parse_listen("[::1]:9477").unwrap().to_string(),
            "[::1]:9477"
        );
        assert!(parse_listen("nonsense").is_err());
        assert!(parse_listen("").is_err());
    }

    #[test]
    fn textfile_is_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("hv-metrics-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_textfile(&dir, "a 1\n").unwrap();
        write_textfile(&dir, "b 2\n").unwrap();
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![TEXTFILE_NAME]);
        assert_eq!(
            std::fs::read_to_string(dir.join(TEXTFILE_NAME)).unwrap(),
            "b 2\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let err = write_textfile(&dir, "x").unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
