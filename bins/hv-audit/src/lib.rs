//! hv-audit: the audit trail read back as records, so "what went wrong
//! last night" is `hv-audit --since 1d --failed`, not a grep through
//! shell history. The trail is written by every hv command that changes
//! something (hv_common::audit); this only reads it.

use clap::Parser;
use hv_common::audit::Entry;
use hv_common::cli::{self, OutputArgs};
use hv_common::manual::Manual;
use hv_common::output::{col, to_record, Column, Printer, Show};
use hv_common::{time, Code, Error, Exit, Result};
use serde_json::{Map, Value};
use std::io::{BufRead, Read};
use std::path::Path;

#[derive(Debug, Parser)]
#[command(
    name = "hv-audit",
    version,
    about = "Read hv's audit trail: what changed, when, by whom, and whether it worked",
    long_about = "Read hv's audit trail back as records, oldest first. Every hv command that \
        changes something (start, stop, autostart, rm, tag, snapshots, backups, define, clone, \
        migrate) appends one entry per result record to the audit log (--audit-log FILE or \
        HV_AUDIT_LOG) or, without one, to the systemd journal. Filters combine."
)]
pub struct Cli {
    /// Only entries about this VM (name or UUID); repeatable
    #[arg(long, value_name = "VM")]
    pub vm: Vec<String>,
    /// Only entries newer than this: a duration (90m, 1d, 2w) or a time (2026-11-21T02:00:00Z)
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only entries of this action (start, stop, backup, …); repeatable
    #[arg(long, value_name = "ACTION")]
    pub action: Vec<String>,
    /// Only entries whose action failed
    #[arg(long)]
    pub failed: bool,
    /// Only entries about this host (as records name it); repeatable
    #[arg(long, value_name = "HOST")]
    pub host: Vec<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub const MANUAL: Manual = Manual {
    exit_status: hv_common::manual::EXIT_STATUS,
    environment: &[
        ("HV_AUDIT_LOG", "The audit log (a JSON-lines file) to read; without it, the systemd journal (journalctl)."),
    ],
    examples: &[
        ("What went wrong last night:", "hv-audit --since 1d --failed | jq -r '\"\\(.time) \\(.user) \\(.action) \\(.vm): \\(.record.error.message)\"'"),
        ("Everything done to web1, as a table:", "hv-audit --vm web1 --format table"),
        ("Who stopped VMs this week:", "hv-audit --since 1w --action stop --format table"),
    ],
    notes: &[
        "Entries (docs/audit.md): time (RFC 3339, UTC), time_unix_ms, host, program, args (the command line; hv takes no secrets on it), uid and user (who ran it), pid, action, vm, ok, and record, the result record the command printed. A dry run is not logged; a run cut short by Ctrl-C logs the records it printed.",
        "The log is appended one whole line per write (O_APPEND), so concurrent commands never interleave; hv never truncates it: rotate it with logrotate's copytruncate or by renaming it. A line that is not an entry is reported with its number and skipped, and the run exits 1.",
    ],
};

const COLUMNS: &[Column] = &[
    col("TIME", "time", Show::Plain),
    col("HOST", "host", Show::Plain),
    col("USER", "user", Show::Plain),
    col("ACTION", "action", Show::Plain),
    col("VM", "vm", Show::Plain),
    col("OK", "ok", Show::Plain),
    col("PROGRAM", "program", Show::Plain),
];

/// The filters, as plain values.
struct Filter {
    vms: Vec<String>,
    since_ms: Option<i64>,
    actions: Vec<String>,
    failed: bool,
    hosts: Vec<String>,
}

/// A line longer than this is not an entry (a /dev/zero, a binary file).
const LINE_LIMIT: u64 = 4 << 20;

pub fn run(cli: Cli) -> Result<Exit> {
    let since_ms = match &cli.since {
        None => None,
        Some(text) => Some(since(text)?),
    };
    let filter = Filter {
        vms: cli.vm,
        since_ms,
        actions: cli.action,
        failed: cli.failed,
        hosts: cli.host,
    };
    let mut printer = Printer::stdout(cli.output.format(), COLUMNS);
    let mut bad = 0;
    let mut emit = |entry: Entry| -> Result<()> {
        if filter.keeps(&entry) {
            printer.emit(to_record(&entry))?;
        }
        Ok(())
    };
    let file = cli.output.audit_log().map(Path::to_path_buf);
    match file.filter(|f| !f.as_os_str().is_empty()) {
        Some(file) => read_file(&file, &mut emit, &mut bad)?,
        None => read_journal(&mut emit, &mut bad)?,
    }
    printer.finish()?;
    Ok(if bad > 0 { Exit::ItemFailed } else { Exit::Ok })
}

impl Filter {
    fn keeps(&self, e: &Entry) -> bool {
        let vm = e.vm.as_deref().unwrap_or("");
        let uuid = e.record.get("uuid").and_then(Value::as_str).unwrap_or("");
        (self.vms.is_empty()
            || self
                .vms
                .iter()
                .any(|v| v == vm || v.eq_ignore_ascii_case(uuid)))
            && self.since_ms.is_none_or(|s| e.time_unix_ms >= s)
            && (self.actions.is_empty() || self.actions.contains(&e.action))
            && (!self.failed || !e.ok)
            && (self.hosts.is_empty() || e.host.as_ref().is_some_and(|h| self.hosts.contains(h)))
    }
}

/// `--since`: a duration back from now, or an RFC 3339 time; in Unix ms.
fn since(text: &str) -> Result<i64> {
    if let Some(t) = time::parse_rfc3339(text) {
        return Ok(t * 1000);
    }
    let back = time::parse_duration(text).map_err(|e| {
        Error::usage(format!(
            "--since {text:?}: {e}; or give a time like 2026-11-21T02:00:00Z"
        ))
    })?;
    Ok(time::now_ms() - back * 1000)
}

fn read_file(path: &Path, emit: &mut dyn FnMut(Entry) -> Result<()>, bad: &mut u64) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| {
        Error::new(
            if e.kind() == std::io::ErrorKind::NotFound {
                Code::NotFound
            } else {
                Code::Io
            },
            format!(
                "cannot read the audit log {} ({e}); HV_AUDIT_LOG names it, as the commands were given it",
                path.display()
            ),
        )
    })?;
    let mut reader = std::io::BufReader::new(file);
    let mut n = 0u64;
    loop {
        n += 1;
        let mut line = Vec::new();
        let read = (&mut reader)
            .take(LINE_LIMIT)
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
        if read == 0 {
            return Ok(());
        }
        if line.last() != Some(&b'\n') && read as u64 == LINE_LIMIT {
            return Err(Error::new(
                Code::Corrupt,
                format!(
                    "{} line {n} is longer than 4 MiB: not an audit log; give the file hv commands append to",
                    path.display()
                ),
            ));
        }
        match serde_json::from_slice::<Entry>(&line) {
            Ok(entry) => emit(entry)?,
            _ if line.iter().all(u8::is_ascii_whitespace) => {}
            _ => {
                *bad += 1;
                cli::warn(format!(
                    "{} line {n} is not an audit entry; skipped",
                    path.display()
                ));
            }
        }
    }
}

/// The journal's entries of hv's commands, through journalctl.
fn read_journal(emit: &mut dyn FnMut(Entry) -> Result<()>, bad: &mut u64) -> Result<()> {
    let mut child = std::process::Command::new("journalctl")
        .args(["--output", "json", "--no-pager", "--all"])
        .args(PROGRAMS.iter().flat_map(|p| ["-t", p]))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::new(
                Code::NotFound,
                format!(
                    "no audit log: HV_AUDIT_LOG is not set and journalctl cannot run ({e}); set HV_AUDIT_LOG to the file the commands append to"
                ),
            )
        })?;
    let out = child.stdout.take().expect("piped");
    for line in std::io::BufReader::new(out).lines() {
        let Ok(line) = line else { break };
        let Ok(fields) = serde_json::from_str::<Map<String, Value>>(&line) else {
            continue;
        };
        let Some(record) = fields.get("HV_RECORD").and_then(Value::as_str) else {
            continue;
        };
        match serde_json::from_str::<Map<String, Value>>(record) {
            Ok(record) => emit(journal_entry(&fields, record))?,
            Err(_) => *bad += 1,
        }
    }
    let status = child
        .wait()
        .map_err(|e| Error::io("journalctl".to_owned(), e))?;
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        return Err(Error::new(
            Code::Io,
            format!(
                "journalctl failed ({}); set HV_AUDIT_LOG to read a file instead",
                err.trim()
            ),
        ));
    }
    Ok(())
}

/// The programs whose entries the journal holds (SYSLOG_IDENTIFIER).
const PROGRAMS: &[&str] = &[
    "hv-start",
    "hv-stop",
    "hv-autostart",
    "hv-rm",
    "hv-tag",
    "hv-snap",
    "hv-backup",
    "hv-define",
    "hv-clone",
    "hv-migrate",
    "hv-health",
];

fn journal_entry(fields: &Map<String, Value>, record: Map<String, Value>) -> Entry {
    let text = |k: &str| fields.get(k).and_then(Value::as_str).map(str::to_owned);
    let number = |k: &str| text(k).and_then(|t| t.parse::<i64>().ok());
    let micros = number("__REALTIME_TIMESTAMP").unwrap_or(0);
    Entry {
        time: time::rfc3339(micros / 1_000_000),
        time_unix_ms: micros / 1000,
        host: text("HV_HOST"),
        program: text("SYSLOG_IDENTIFIER").unwrap_or_default(),
        args: text("HV_ARGS")
            .and_then(|a| serde_json::from_str(&a).ok())
            .unwrap_or_default(),
        uid: number("HV_UID").map(|u| u as u32),
        user: text("HV_USER"),
        pid: number("_PID").map(|p| p as u32),
        action: text("HV_ACTION").unwrap_or_default(),
        vm: text("HV_VM"),
        ok: text("HV_OK").as_deref() == Some("true"),
        record,
    }
}
