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
    "snapshot",
    "revert",
    "prune",
    "backup",
    "gc",
    "restore",
    "sync",
    "define",
    "clone",
    "migrate",
    "fix",
];

const JOURNAL: &str = "/run/systemd/journal/socket";

struct Trail {
    file: Option<PathBuf>,
    /// Who and what, the same in every entry of this run.
    head: Map<String, Value>,
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
    let args: Vec<Value> = std::env::args().skip(1).map(Value::from).collect();
    let uid = current_uid();
    let mut head = Map::new();
    head.insert("program".into(), program.into());
    head.insert("args".into(), Value::Array(args));
    head.insert("uid".into(), uid.into());
    head.insert("user".into(), user_name(uid).into());
    head.insert("pid".into(), std::process::id().into());
    let _ = TRAIL.set(Trail {
        file,
        head,
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
    let mut entry = Map::new();
    let now_ms = crate::time::now_ms();
    entry.insert(
        "time".into(),
        crate::time::rfc3339(now_ms.div_euclid(1000)).into(),
    );
    entry.insert("time_unix_ms".into(), now_ms.into());
    entry.insert(
        "host".into(),
        record
            .get("host")
            .cloned()
            .unwrap_or_else(|| hostname().into()),
    );
    for (k, v) in &trail.head {
        entry.insert(k.clone(), v.clone());
    }
    entry.insert("action".into(), action.into());
    entry.insert(
        "vm".into(),
        record.get("name").cloned().unwrap_or(Value::Null),
    );
    entry.insert(
        "ok".into(),
        record.get("ok").cloned().unwrap_or(Value::Null),
    );
    entry.insert("record".into(), Value::Object(record.clone()));
    if let Err(e) = trail.write(&entry) {
        if !trail.told.swap(true, std::sync::atomic::Ordering::Relaxed) {
            crate::cli::warn(format!("the audit log could not be written: {e}"));
        }
    }
}

impl Trail {
    fn write(&self, entry: &Map<String, Value>) -> std::io::Result<()> {
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
fn journal_fields(entry: &Map<String, Value>) -> Vec<u8> {
    let text = |k: &str| match entry.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    };
    let one_line = |s: String| s.replace('\n', " ");
    let mut out = String::new();
    let message = format!(
        "{} {} {}: {}",
        text("program"),
        text("action"),
        text("vm"),
        if entry.get("ok") == Some(&Value::Bool(true)) {
            "ok"
        } else {
            "failed"
        }
    );
    for (k, v) in [
        ("MESSAGE", message),
        ("SYSLOG_IDENTIFIER", text("program")),
        ("HV_ACTION", text("action")),
        ("HV_VM", text("vm")),
        ("HV_OK", text("ok")),
        ("HV_HOST", text("host")),
        ("HV_USER", text("user")),
        ("HV_UID", text("uid")),
        ("HV_ARGS", text("args")),
        ("HV_RECORD", text("record")),
    ] {
        out += &format!("{k}={}\n", one_line(v));
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

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_entries_are_one_field_per_line() {
        let mut entry = Map::new();
        entry.insert("program".into(), "hv-stop".into());
        entry.insert("action".into(), "stop".into());
        entry.insert("vm".into(), "web 1\nx".into());
        entry.insert("ok".into(), false.into());
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
