//! hv-health: what is wrong with a running host right now, and how to fix
//! it, for a timer or a person. Each finding is a check record (the shape
//! hv-preflight shares); with a state file, a timer reports what changed
//! since the last run instead of the same problem every five minutes.

mod ffi;
mod fix;
mod host;
mod state_file;
mod vms;

use clap::Parser;
use fix::{Fix, Histories, Policy};
use hv_common::across;
use hv_common::checks::{self, Check, Status};
use hv_common::cli::{self, ConnectArgs, OutputArgs};
use hv_common::connect::Access;
use hv_common::hosts::Scope;
use hv_common::manual::Manual;
use hv_common::output::{Format, Printer};
use hv_common::{time, Exit, Result};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "hv-health",
    version,
    about = "Check a running host and its VMs; each finding names its fix",
    long_about = "Check what goes wrong on a running libvirt host: libvirt not answering, VMs \
        crashed, paused by an I/O error or by anything else no one chose (a QEMU internal \
        error, a watchdog), disks with I/O errors, autostart VMs that are down, storage \
        pools, backup repositories and host memory running out, backups too old, snapshots \
        too old or too many, ISO images that failed hv-iso verify. One record per check and \
        subject, with status pass, warn or fail, the value measured, the threshold and \
        their unit, and a hint: the command that fixes it. docs/health.md lists every check."
)]
pub struct Cli {
    /// VMs to check (names or UUIDs) [default: every VM, or the records piped in]
    #[arg(value_name = "VM")]
    pub vms: Vec<String>,

    /// Check only the host, the repositories and the ISO library, no VM
    #[arg(long, conflicts_with = "vms")]
    pub host_only: bool,

    /// An hv-backup repository: checks its free space and each VM's newest backup (repeatable) [default: $HV_BACKUP_REPO when set]
    #[arg(long = "repo", value_name = "DIR")]
    pub repos: Vec<PathBuf>,

    /// An hv-iso library: reports images whose last hv-iso verify failed or is too old [default: $HV_ISO_LIBRARY when set]
    #[arg(long, value_name = "DIR")]
    pub iso_library: Option<PathBuf>,

    /// Warn when a VM's newest backup (in --repo) is older than this
    #[arg(long, value_name = "AGE", default_value = "26h", value_parser = time::duration)]
    pub max_backup_age: Duration,

    /// Warn when a VM keeps a snapshot older than this
    #[arg(long, value_name = "AGE", default_value = "7d", value_parser = time::duration)]
    pub max_snapshot_age: Duration,

    /// Warn when a VM has more snapshots than this
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub max_snapshots: u32,

    /// Warn when an ISO image was last verified longer ago than this
    #[arg(long, value_name = "AGE", default_value = "14d", value_parser = time::duration)]
    pub max_iso_check_age: Duration,

    /// Warn when a storage pool or repository filesystem is this full (percent used)
    #[arg(long, value_name = "PERCENT", default_value_t = 85.0)]
    pub disk_warn: f64,

    /// Fail when a storage pool or repository filesystem is this full (percent used)
    #[arg(long, value_name = "PERCENT", default_value_t = 95.0)]
    pub disk_fail: f64,

    /// Warn when the host's available memory (free + cache) falls below this (percent)
    #[arg(long, value_name = "PERCENT", default_value_t = 10.0)]
    pub memory_warn: f64,

    /// Fail when the host's available memory falls below this (percent)
    #[arg(long, value_name = "PERCENT", default_value_t = 5.0)]
    pub memory_fail: f64,

    /// Compare with the last run's problems kept in this file: each record gets
    /// change new, ongoing or resolved
    #[arg(long, value_name = "FILE")]
    pub state_file: Option<PathBuf>,

    /// Print only warn and fail records (and resolved ones)
    #[arg(long)]
    pub problems: bool,

    /// Print only what changed since the last run: new problems and resolved ones
    #[arg(long, requires = "state_file")]
    pub changes_only: bool,

    /// Exit 1 on a warning too, not only on a failure
    #[arg(long)]
    pub strict: bool,

    /// After checking, repair these problems (comma-separated): vm.crashed (restart it), vm.autostart (start it), vm.io_error (resume it once its disks have space); needs --state-file, which keeps the limits
    #[arg(long, value_name = "CHECK,...", value_delimiter = ',', value_parser = cli::choice::<Fix>(), requires = "state_file", hide_possible_values = true)]
    pub fix: Vec<Fix>,

    /// Repairs per VM within --fix-window; when one more is needed, hv-health gives up on that VM until --reset
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub fix_attempts: u32,

    /// The window --fix-attempts counts in
    #[arg(long, value_name = "AGE", default_value = "1h", value_parser = time::duration)]
    pub fix_window: Duration,

    /// The wait after a VM's first repair before the next; it doubles after each
    #[arg(long, value_name = "AGE", default_value = "5m", value_parser = time::duration)]
    pub fix_backoff: Duration,

    /// With --fix: say what would be repaired, and repair nothing
    #[arg(long, requires = "fix")]
    pub dry_run: bool,

    /// Forget the repairs and the give-up of these VMs (names or UUIDs) in --state-file, after a person fixed the cause; no check runs
    #[arg(long, value_name = "VM", num_args = 1.., requires = "state_file", conflicts_with_all = ["fix", "vms"])]
    pub reset: Vec<String>,

    #[command(flatten)]
    pub connect: ConnectArgs,

    #[command(flatten)]
    pub output: OutputArgs,
}

pub const MANUAL: Manual = Manual {
    exit_status: &[
        ("0", "No check failed (warnings allowed unless --strict)."),
        ("1", "A check failed, or with --strict a check warned; or a named VM was not found."),
        ("2", "Usage error, a malformed stdin line, or a state file that cannot be read (a damaged one is read as empty, with a warning)."),
        ("3", "libvirt could not be reached (the libvirt.reachable check fails; the checks that need no libvirt still run)."),
    ],
    environment: hv_common::manual::ENVIRONMENT,
    examples: &[
        ("Everything, as a table:", "hv-health"),
        ("Only the problems, with their fixes:", "hv-health --problems --format jsonl | jq -r '\"\\(.check) \\(.subject): \\(.message) -> \\(.hint)\"'"),
        (
            "Every five minutes from a timer, mailing only what changed:",
            "hv-health --repo /srv/backup --state-file /var/lib/hv/health.json --changes-only --format jsonl | ifne mail -s 'hv-health' root",
        ),
        ("Only the production VMs, with a backup expected nightly:", "hv-ls --tag prod | hv-health --repo /srv/backup --max-backup-age 26h"),
        ("Restart crashed VMs and start autostart VMs left off, at most 3 times an hour each:", "hv-health --fix vm.crashed,vm.autostart --state-file /var/lib/hv/health.json --problems"),
        ("After finding why web kept crashing, let --fix try again:", "hv-health --reset web --state-file /var/lib/hv/health.json"),
    ],
    notes: &[
        "Every record has check (a stable id), status (pass, warn, fail), subject (what it is about: host, a VM name, a pool, a path), the VM's name and uuid or the pool, repository, library, image, network or bridge, message, hint (the fix; null on pass), value and threshold (null where nothing is measured), and unit: what value and threshold count when they are numbers (percent, seconds, bytes or count), null when they are text (a state, a version). With --state-file, change is new or ongoing for a problem, resolved for a problem that went away (its record comes back with status pass), and null otherwise. docs/health.md lists every check with its threshold and fix.",
        "--fix repairs after checking, one repair per VM and run, each a result record after the check records (action fix, check, did: restarted, resumed or started, attempt, changed) and an audit entry; a VM tagged no-autofix is left alone. Its limits are kept in --state-file: --fix-attempts repairs per VM within --fix-window, the wait between them starting at --fix-backoff and doubling; when one more is needed it gives up on the VM, and a vm.autofix check fails every run until hv-health --reset VM. The exit status counts the checks as found before the repairs. docs/health.md, Repairs.",
        "The connection is read-only (read-write with --fix), so a monitoring user without write access to libvirt can run it. ISO images are not re-hashed here: hv-iso verify does that from its own timer and records the outcome, which hv-health reads.",
    ],
};

/// A run's request once clap and the environment have had their say: the
/// checks are written against plain values, so none of them depends on how
/// a flag is spelled or where a default came from.
struct Options {
    /// VMs named as arguments; none means every VM, or the records piped in.
    vms: Vec<String>,
    host_only: bool,
    /// --repo, else $HV_BACKUP_REPO.
    repos: Vec<PathBuf>,
    /// --iso-library, else $HV_ISO_LIBRARY.
    iso_library: Option<PathBuf>,
    limits: Limits,
    state_file: Option<PathBuf>,
    problems: bool,
    changes_only: bool,
    strict: bool,
    /// What --fix may repair; `None` without --fix.
    fix: Option<Policy>,
    /// --reset: the VMs whose repairs to forget.
    reset: Vec<String>,
    /// -c, else $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt's default.
    /// The hosts to check, each in its own thread (docs/hosts.md).
    scope: Scope,
    connect_timeout: Duration,
    format: Format,
}

/// Where a measure turns into a warning or a failure.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_backup_age: Duration,
    pub max_snapshot_age: Duration,
    pub max_snapshots: u32,
    pub max_iso_check_age: Duration,
    /// Percent used.
    pub disk_warn: f64,
    pub disk_fail: f64,
    /// Percent of the host's memory available.
    pub memory_warn: f64,
    pub memory_fail: f64,
}

pub fn run(cli: Cli) -> Result<Exit> {
    // As the units load them from hv.env, where an empty value means none.
    let from_env = |key: &str| {
        std::env::var_os(key)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let mut repos = cli.repos;
    if repos.is_empty() {
        repos.extend(from_env("HV_BACKUP_REPO"));
    }
    let opts = Options {
        vms: cli.vms,
        host_only: cli.host_only,
        repos,
        iso_library: cli.iso_library.or_else(|| from_env("HV_ISO_LIBRARY")),
        limits: Limits {
            max_backup_age: cli.max_backup_age,
            max_snapshot_age: cli.max_snapshot_age,
            max_snapshots: cli.max_snapshots,
            max_iso_check_age: cli.max_iso_check_age,
            disk_warn: cli.disk_warn,
            disk_fail: cli.disk_fail,
            memory_warn: cli.memory_warn,
            memory_fail: cli.memory_fail,
        },
        state_file: cli.state_file,
        problems: cli.problems,
        changes_only: cli.changes_only,
        strict: cli.strict,
        fix: (!cli.fix.is_empty()).then_some(Policy {
            fixes: cli.fix,
            attempts: cli.fix_attempts,
            window: cli.fix_window,
            backoff: cli.fix_backoff,
            dry_run: cli.dry_run,
            space_below: cli.disk_fail,
        }),
        reset: cli.reset,
        scope: cli.connect.scope()?,
        connect_timeout: cli.connect.connect_timeout,
        format: Format::or_default_for_stdout(cli.output.format()),
    };
    if !opts.reset.is_empty() {
        return reset(&opts);
    }
    health(&opts)
}

/// `--reset`: a person says the cause is fixed; `--fix` may try again.
fn reset(opts: &Options) -> Result<Exit> {
    #[derive(serde::Serialize)]
    struct Reset {
        changed: bool,
        message: String,
    }
    let path = opts
        .state_file
        .as_deref()
        .expect("clap requires --state-file");
    let _lock = state_file::lock(path)?;
    let mut saved = state_file::load(path)?;
    let mut printer = Printer::new(opts.format, std::io::stdout(), checks::COLUMNS);
    for vm in &opts.reset {
        let forgot = fix::reset(&mut saved.fixes, std::slice::from_ref(vm));
        let message = if forgot.is_empty() {
            format!("no repairs of {vm} are on record in {}", path.display())
        } else {
            format!("forgot the repairs of {vm}: hv-health --fix may repair it again")
        };
        let named = hv_common::targets::VmRef {
            name: Some(vm.clone()),
            ..Default::default()
        };
        printer.emit(hv_common::targets::success_record(
            &named,
            "reset",
            &Reset {
                changed: !forgot.is_empty(),
                message,
            },
        ))?;
    }
    printer.finish()?;
    state_file::write(path, &saved)?;
    Ok(Exit::Ok)
}

fn health(opts: &Options) -> Result<Exit> {
    // Two runs with --fix at once would both repair the same VM.
    let _lock = match (&opts.fix, &opts.state_file) {
        (Some(_), Some(path)) => Some(state_file::lock(path)?),
        _ => None,
    };
    let (previous, histories) = match &opts.state_file {
        Some(path) => {
            let saved = state_file::load(path)?;
            (Some(saved.problems), saved.fixes)
        }
        None => (None, Histories::new()),
    };
    let histories = std::sync::Mutex::new(histories);
    let now = time::now();
    let mut repairs = Vec::new();
    let access = if opts.fix.is_some() {
        Access::ReadWrite
    } else {
        Access::ReadOnly
    };
    let mut printer = Printer::new(opts.format, std::io::stdout(), checks::COLUMNS);
    let mut status = hv_common::cli::Status::default();
    let mut found = Vec::new();
    // The hosts that answered, by name (None: the one unnamed host).
    let mut reached: HashSet<Option<String>> = HashSet::new();
    let selection = (!opts.host_only).then_some(&opts.vms[..]);
    across::each_host_with(
        &opts.scope,
        access,
        opts.connect_timeout,
        selection,
        &mut printer,
        &mut status,
        |at, _| {
            let on = |c: Check| match at.name() {
                Some(h) => c.on_host(h),
                None => c,
            };
            let mut checks = vec![on(host::libvirt_up(&at.conn))];
            if !opts.host_only {
                checks.extend(
                    vms::check(&at.domains, &opts.repos, &opts.limits)
                        .into_iter()
                        .map(on),
                );
            }
            checks.extend(host::memory(&at.conn, &opts.limits).map(on));
            checks.extend(host::pools(&at.conn, &opts.limits).into_iter().map(on));
            let this_machine = !hv_common::hosts::is_remote_conn(&at.conn);
            checks.extend(
                host::networks(&at.conn, &at.domains, this_machine)
                    .into_iter()
                    .map(on),
            );
            let mut repaired = Vec::new();
            if let (Some(policy), false) = (&opts.fix, opts.host_only) {
                let got = fix::repair(policy, &at.domains, &checks, &histories, at.name(), now);
                checks.extend(got.checks.into_iter().map(on));
                repaired = got.repairs;
            }
            Ok((checks, repaired))
        },
        |host, got, _, _| {
            let name = host.map(|h| h.name.clone());
            match got {
                Ok((checks, repaired)) => {
                    found.extend(checks);
                    repairs.extend(repaired);
                    reached.insert(name);
                }
                Err(e) => {
                    let down = checks::libvirt_down(&e);
                    found.push(match name {
                        Some(h) => down.on_host(h),
                        None => down,
                    });
                }
            }
            Ok(())
        },
    )?;
    for repo in &opts.repos {
        found.push(host::repository_space(repo, &opts.limits));
    }
    if let Some(dir) = &opts.iso_library {
        found.extend(host::isos(dir, &opts.limits));
    }
    // An earlier problem is looked at again when its check ran here; the
    // VM, pool and memory checks when its host answered (over every VM for
    // the VM checks: a VM that stopped or went has no disk_errors check,
    // and its problem is gone). One not looked at is not resolved.
    let some_vms = !opts.vms.is_empty() || hv_common::cli::stdin_has_targets(&opts.vms);
    let ran: HashSet<(&str, Option<&str>)> =
        found.iter().map(|c| (c.check, c.host.as_deref())).collect();
    let covered = |before: &state_file::Stored| {
        let host = before.about.get("host").and_then(Value::as_str);
        let up = reached.contains(&host.map(str::to_owned));
        match before.check.split('.').next() {
            // Only a run with --fix looks at the repairs.
            _ if before.check == "vm.autofix" && opts.fix.is_none() => false,
            Some("vm") => up && !opts.host_only && !some_vms,
            Some("pool") => up,
            _ if before.check == "host.memory" => up,
            _ => ran.contains(&(before.check.as_str(), host)),
        }
    };
    let records = match &previous {
        Some(previous) => state_file::with_changes(&found, previous, covered),
        None => found.iter().map(Check::record).collect(),
    };
    for record in records.into_iter().filter(|r| shown(r, opts)) {
        printer.emit(record)?;
    }
    for record in repairs {
        printer.emit(record)?;
    }
    printer.finish()?;
    if let (Some(path), Some(previous)) = (&opts.state_file, &previous) {
        let histories = histories.into_inner().unwrap_or_else(|p| p.into_inner());
        state_file::save(path, &found, previous, covered, &histories)?;
    }
    let mut exit = checks::exit(&found, opts.strict).worst(status.exit());
    if reached.is_empty() {
        exit = exit.worst(Exit::Unreachable);
    }
    Ok(exit)
}

fn shown(record: &Map<String, Value>, opts: &Options) -> bool {
    let change = record.get("change").and_then(Value::as_str);
    if opts.changes_only {
        return matches!(change, Some("new" | "resolved"));
    }
    !opts.problems
        || record.get("status").and_then(Value::as_str) != Some(Status::Pass.as_str())
        || change == Some("resolved")
}
