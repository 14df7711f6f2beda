//! The audit trail: one entry for every result record of a command that
//! changed something (or tried to), so "who stopped web1 last night, and
//! did it work" has an answer that does not depend on shell history. It
//! hangs off the printer: every result record passes through it, so no
//! command can forget to log, and what is logged is exactly what the user
//! was shown.
//!
//! Where: `--audit-log FILE` / `HV_AUDIT_LOG` (JSON lines, appended one
//! whole line per write, mode 0600, never truncated), else the systemd
//! journal with structured fields when it runs (`journalctl HV_VM=web1`),
//! else nowhere. A log that cannot be written is said once on stderr and
//! never fails the command: the action already happened.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

/// The actions that change something. Listings and checks (`verify`,
/// `mount`) are not logged.
const CHANGING: &[&str] = &[
    "start",
    "resume",
    "stop",
    "reboot",
    "pause",
    "autostart",
    "rm",
    "tag",
    "set",
    "snapshot",
    "revert",
    "prune",
    "schedule",
    "backup",
    "gc",
    "restore",
    "sync",
    "define",
    "clone",
    "migrate",
    "fix",
    "reset",
    "add",
];

const JOURNAL: &str = "/run/systemd/journal/socket";

/// One entry of the trail (docs/audit.md, Entries): who did what, where,
/// and the result record it printed. hv-audit reads these back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// When the record was printed, RFC 3339 UTC.
    pub time: String,
    /// The same instant in milliseconds.
    pub time_unix_ms: i64,
    /// The host the record is about, else this machine's name.
    pub host: Option<String>,
    pub program: String,
    pub args: Vec<String>,
    pub uid: Option<u32>,
    pub user: Option<String>,
    pub pid: Option<u32>,
    pub action: String,
    /// The record's `name`.
    pub vm: Option<String>,
    pub ok: bool,
    pub record: Map<String, Value>,
}

/// Who and what: the same in every entry of one run.
struct Run {
    program: String,
    args: Vec<String>,
    uid: u32,
    user: String,
}

struct Trail {
    file: Option<PathBuf>,
    run: Run,
    sink: Mutex<Option<Sink>>,
    told: std::sync::atomic::AtomicBool,
}

enum Sink {
    File(std::fs::File),
    Journal(std::os::unix::net::UnixDatagram),
}

static TRAIL: OnceLock<Trail> = OnceLock::new();

/// Starts the trail of this run: the program, its arguments and who runs it.
pub fn start(program: &str, file: Option<PathBuf>) {
    // hv-audit prints the trail's own entries, which look like results.
    if program == "hv-audit" {
        return;
    }
    let uid = current_uid();
    let _ = TRAIL.set(Trail {
        file,
        run: Run {
            program: program.to_owned(),
            args: std::env::args().skip(1).collect(),
            uid,
            user: user_name(uid),
        },
        sink: Mutex::new(None),
        told: false.into(),
    });
}

/// Logs `record` if it is the result of a change (not of a dry run).
pub fn note(record: &Map<String, Value>) {
    let Some(trail) = TRAIL.get() else { return };
    let action = record.get("action").and_then(Value::as_str).unwrap_or("");
    if !CHANGING.contains(&action) || record.get("dry_run") == Some(&Value::Bool(true)) {
        return;
    }
    let now_ms = crate::time::now_ms();
    let text = |k: &str| record.get(k).and_then(Value::as_str).map(str::to_owned);
    let entry = Entry {
        time: crate::time::rfc3339(now_ms.div_euclid(1000)),
        time_unix_ms: now_ms,
        host: text("host").or_else(|| Some(crate::hosts::local_hostname())),
        program: trail.run.program.clone(),
        args: trail.run.args.clone(),
        uid: Some(trail.run.uid),
        user: Some(trail.run.user.clone()),
        pid: Some(std::process::id()),
        action: action.to_owned(),
        vm: text("name"),
        ok: record.get("ok") == Some(&Value::Bool(true)),
        record: record.clone(),
    };
    if let Err(e) = trail.write(&entry) {
        if !trail.told.swap(true, std::sync::atomic::Ordering::Relaxed) {
            crate::cli::warn(format!("the audit log could not be written: {e}"));
        }
    }
}

impl Trail {
    fn write(&self, entry: &Entry) -> std::io::Result<()> {
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        if sink.is_none() {
            *sink = self.open()?;
        }
        match sink.as_mut() {
            None => Ok(()),
            Some(Sink::File(f)) => {
                let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
                line.push(b'\n');
                // One write of a whole line to a file opened O_APPEND: lines
                // of concurrent runs never interleave.
                let n = f.write(&line)?;
                if n != line.len() {
                    return Err(std::io::Error::other("a short write (disk full?)"));
                }
                Ok(())
            }
            Some(Sink::Journal(sock)) => {
                sock.send_to(&journal_fields(entry), JOURNAL)?;
                Ok(())
            }
        }
    }

    fn open(&self) -> std::io::Result<Option<Sink>> {
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(path) = &self.file {
            let f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            if !f.metadata()?.is_file() {
                return Err(std::io::Error::other(format!(
                    "{} is not a regular file",
                    path.display()
                )));
            }
            return Ok(Some(Sink::File(f)));
        }
        if std::path::Path::new(JOURNAL).exists() {
            return Ok(Some(Sink::Journal(
                std::os::unix::net::UnixDatagram::unbound()?,
            )));
        }
        Ok(None)
    }
}

/// An entry in the journal's native protocol: `KEY=value` lines, with
/// fields to select by (`journalctl HV_VM=web1 HV_OK=false`).
fn journal_fields(e: &Entry) -> Vec<u8> {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let message = format!(
        "{} {} {}: {}",
        e.program,
        e.action,
        opt(&e.vm),
        if e.ok { "ok" } else { "failed" }
    );
    let mut out = String::new();
    for (k, v) in [
        ("MESSAGE", message),
        ("SYSLOG_IDENTIFIER", e.program.clone()),
        ("HV_ACTION", e.action.clone()),
        ("HV_VM", opt(&e.vm)),
        ("HV_OK", e.ok.to_string()),
        ("HV_HOST", opt(&e.host)),
        ("HV_USER", opt(&e.user)),
        ("HV_UID", e.uid.map(|u| u.to_string()).unwrap_or_default()),
        (
            "HV_ARGS",
            serde_json::to_string(&e.args).unwrap_or_default(),
        ),
        (
            "HV_RECORD",
            serde_json::to_string(&e.record).unwrap_or_default(),
        ),
    ] {
        out += &format!("{k}={}\n", v.replace('\n', " "));
    }
    out.into_bytes()
}

fn current_uid() -> u32 {
    // The owner of /proc/self is the real uid of this process.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

/// The name /etc/passwd gives `uid`, or the number.
fn user_name(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_owned())
        })
        .unwrap_or_else(|| uid.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_entries_are_one_field_per_line() {
        let entry = Entry {
            time: "2026-12-06T00:00:00Z".into(),
            time_unix_ms: 0,
            host: Some("h1".into()),
            program: "hv-stop".into(),
            args: vec!["web 1\nx".into()],
            uid: Some(0),
            user: Some("root".into()),
            pid: Some(1),
            action: "stop".into(),
            vm: Some("web 1\nx".into()),
            ok: false,
            record: Map::new(),
        };
        let text = String::from_utf8(journal_fields(&entry)).unwrap();
        assert!(
            text.contains("MESSAGE=hv-stop stop web 1 x: failed\n"),
            "{text}"
        );
        assert!(text.contains("HV_VM=web 1 x\n"), "{text}");
        assert!(text.contains("HV_OK=false\n"), "{text}");
        assert_eq!(text.lines().count(), 10);
    }
}
