//! hv-top: the VMs of a host (or of several) live in a terminal, with the
//! keys to act on them. It is a reader like hv-ls and hv-metrics, and its
//! actions are hv's own commands run for the selected VMs, so they do,
//! refuse and log (audit trail) exactly what the command line does. Each
//! host is refreshed by its own thread, so the screen answers keys while a
//! refresh is out and one slow host does not hold back the others.

mod app;
mod sample;

use clap::Parser;
use hv_common::cli::{self, ConnectArgs, OutputArgs};
use hv_common::connect::Access;
use hv_common::hosts::{self, Scope};
use hv_common::manual::Manual;
use hv_common::output::{col, Column, Format, Printer, Show};
use hv_common::{time, Error, Exit, Result};
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "hv-top",
    version,
    about = "Watch the VMs live, sort and filter them, and start, stop, snapshot or back them up from the keyboard",
    long_about = "A live view of the VMs of one host, or of several (-c repeated, --hosts): \
        the host's CPUs, memory, pools and VM counts, and a table of VMs with state, CPU %, \
        memory, disk and network rates, last backup age and tags, refreshed every --interval. Keys sort, \
        filter, select, and act on the selected VMs through hv's own commands (hv-start, \
        hv-stop, hv-snap), whose result shows at the bottom; --read-only hides them. \
        --once prints one frame as records instead, for scripts and bug reports."
)]
pub struct Cli {
    /// How often to refresh, at least 1s (2s, 5s, 1m)
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = time::duration)]
    pub interval: Duration,

    /// Only VMs carrying this tag (repeatable: all of them)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,

    /// Print one frame as records (rates measured over one --interval) and exit
    #[arg(long)]
    pub once: bool,

    /// Hide the action keys (the default when libvirt allows this user only read-only access)
    #[arg(long)]
    pub read_only: bool,

    /// The hv-backup repository: each VM's last backup age, its free space, and where B backs up
    #[arg(long, env = "HV_BACKUP_REPO", value_name = "DIR|URL")]
    pub repo: Option<String>,

    #[command(flatten)]
    pub connect: ConnectArgs,

    #[command(flatten)]
    pub output: OutputArgs,
}

pub const MANUAL: Manual = Manual {
    exit_status: &[
        ("0", "Quit with q or Ctrl-C, or --once printed its frame."),
        ("1", "With --once: a host could not be read (its error is on stderr; the others are printed)."),
        ("2", "Usage error, or stdout is not a terminal without --once."),
        ("3", "No host could be reached."),
    ],
    environment: hv_common::manual::ENVIRONMENT,
    examples: &[
        ("This host, refreshing every 2 s:", "hv-top"),
        ("With each VM's last backup age (also from HV_BACKUP_REPO):", "hv-top --repo /srv/backup/hv"),
        ("The production VMs of every host in the hosts file:", "hv-top --hosts /etc/hv/hosts --tag prod"),
        ("One frame as a table, for a bug report:", "hv-top --once --format table"),
        ("The busiest VMs, for a script:", "hv-top --once --format jsonl | jq -r 'select(.cpu_percent > 50) | .name'"),
    ],
    notes: &[
        "Keys: Up/Down (or k/j) move, Space selects several, s sorts by the next column (name, state, cpu%, memory, disk, net, backup) and r reverses it, / filters by name (Enter keeps it, Esc clears it), t cycles the state filter, Enter opens the detail pane (hv-ls's record: memory of its maximum, vCPUs, disks, interfaces, snapshot count; its newest three snapshots, from hv-snap ls; and its last three audit entries, from hv-audit), S starts, T stops gracefully, K forces off (after y), P takes a snapshot (hv-snap create), B backs up (hv-backup create, to --repo), C opens the VM's serial console (hv-console; Ctrl-] comes back), q quits. The header's health line counts hv-health's problems over every host shown (run every 30 s) and names the worst, with its host. An action runs hv-start, hv-stop, hv-snap or hv-backup from beside hv-top (else from PATH), on a thread of its own, for the selected VMs, or the one under the cursor; its outcome, or the first error, shows on the last line, and the command's audit entry is written as it would be from a shell.",
        "Each refresh makes a fixed number of libvirt calls whatever the number of VMs (the domain list, one statistics call for all, the node's memory, the autostart list, the pools); a VM's tags are read once, when it is first seen, and its snapshots counted then and every 30 s. Uptime is the age of the VM's QEMU process, known on this machine's system daemon only. Backup ages come from the repository directory's clear indexes, every 30 s and after each action. CPU % is CPU time per wall time in percent of one CPU, so a VM with two busy vCPUs shows 200. Rates need two refreshes: the first frame shows none.",
        "Records of --once: name, uuid, host (when hosts are named), state, autostart, vcpus, cpu_percent, memory_bytes, max_memory_bytes, memory_resident_bytes, disk_read_bytes_per_s, disk_write_bytes_per_s, net_rx_bytes_per_s, net_tx_bytes_per_s, tags, uptime_seconds, snapshot_count, last_backup_age_seconds. NO_COLOR turns colours off; the terminal is restored on q, Ctrl-C, SIGTERM and a panic.",
    ],
};

static COLUMNS: [Column; 12] = [
    col("name", "name", Show::Plain),
    col("state", "state", Show::Plain),
    col("cpu%", "cpu_percent", Show::Plain),
    col("vcpus", "vcpus", Show::Plain),
    col("memory", "memory_bytes", Show::Bytes),
    col("rd/s", "disk_read_bytes_per_s", Show::Bytes),
    col("wr/s", "disk_write_bytes_per_s", Show::Bytes),
    col("rx/s", "net_rx_bytes_per_s", Show::Bytes),
    col("up", "uptime_seconds", Show::Age),
    col("snaps", "snapshot_count", Show::Plain),
    col("backup", "last_backup_age_seconds", Show::Age),
    col("tags", "tags", Show::Join(None)),
];

/// What a run watches, once clap has had its say.
pub struct Options {
    pub scope: Scope,
    pub connect_timeout: Duration,
    pub interval: Duration,
    pub tags: Vec<String>,
    pub read_only: bool,
    /// --repo, else $HV_BACKUP_REPO.
    pub repo: Option<String>,
}

pub fn run(cli: Cli) -> Result<Exit> {
    if cli.interval < Duration::from_secs(1) {
        return Err(Error::usage(
            "--interval below 1s would keep libvirtd busy; give 1s or more",
        ));
    }
    let format = cli.output.format();
    let opts = Options {
        scope: cli.connect.scope()?,
        connect_timeout: cli.connect.connect_timeout,
        interval: cli.interval,
        tags: cli.tags,
        read_only: cli.read_only,
        repo: cli.repo,
    };
    if cli.once {
        return once(&opts, Format::or_default_for_stdout(format));
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(Error::usage(
            "stdout is not a terminal: give --once for a frame as records",
        ));
    }
    app::run(&opts)
}

/// The hosts to watch: (alias, target).
fn targets(scope: &Scope) -> Vec<(Option<String>, hv_common::connect::Target)> {
    match scope {
        Scope::Default(target) => vec![(None, target.clone())],
        Scope::Named { hosts, .. } => hosts
            .iter()
            .map(|h| (Some(h.name.clone()), h.target()))
            .collect(),
    }
}

/// The repository's directory: ages are read from its clear indexes,
/// which only a repository on a filesystem has.
fn local_repo(repo: &str) -> Result<&std::path::Path> {
    if repo.contains("://") {
        return Err(Error::usage(format!(
            "--repo {repo}: backup ages are read from a repository directory, \
             not a URL; give the directory (or a mounted copy of it)"
        )));
    }
    Ok(std::path::Path::new(repo))
}

fn keeps(row: &sample::Row, tags: &[String]) -> bool {
    tags.iter().all(|t| row.tags.contains(t))
}

/// `--once`: two refreshes one interval apart, the second printed.
fn once(opts: &Options, format: Format) -> Result<Exit> {
    let mut printer = Printer::new(format, std::io::stdout(), &COLUMNS);
    let mut exit = Exit::Ok;
    let mut reached = false;
    let all = targets(&opts.scope);
    let results: Vec<_> = std::thread::scope(|s| {
        let threads: Vec<_> = all
            .iter()
            .map(|(alias, target)| {
                s.spawn(move || -> Result<Vec<sample::Row>> {
                    let conn = hosts::open_within(target, Access::ReadOnly, opts.connect_timeout)?;
                    let mut known = sample::Known::default();
                    let first = sample::sample(&conn, alias.as_deref(), &mut known, false)?;
                    std::thread::sleep(opts.interval);
                    let second = sample::sample(&conn, alias.as_deref(), &mut known, false)?;
                    Ok(sample::rows(&second, Some(&first)))
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(Error::internal("a refresh panicked")))
            })
            .collect()
    });
    let backups = match opts.repo.as_deref().map(local_repo).transpose() {
        Ok(repo) => repo.map(sample::backups).transpose(),
        Err(e) => Err(e),
    };
    // The VMs are still shown: the ages are what is missing, and said so.
    let backups = backups.unwrap_or_else(|e| {
        cli::warn(&e);
        None
    });
    for ((alias, _), got) in all.iter().zip(results) {
        match got {
            Ok(mut rows) => {
                if let Some(b) = &backups {
                    sample::with_backups(&mut rows, b, time::now());
                }
                reached = true;
                for row in rows.iter().filter(|r| keeps(r, &opts.tags)) {
                    printer.emit(hv_common::output::to_record(row))?;
                }
            }
            Err(e) => {
                let e = match alias {
                    Some(a) => Error::new(e.code, format!("{a}: {}", e.message)),
                    None => e,
                };
                cli::warn(&e);
                exit = exit.worst(Exit::ItemFailed);
            }
        }
    }
    printer.finish()?;
    Ok(if reached { exit } else { Exit::Unreachable })
}
