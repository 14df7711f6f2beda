//! hv-health and hv-preflight speak one record shape: a check id that never
//! changes spelling (scripts and alerts match on it), a status, what was
//! measured against what limit, and the command or setting that fixes it.
//! The measure carries its unit, because checks measure different things
//! (a share of a disk, an age, a size, a count) in one pair of fields: a
//! script comparing `value` with `threshold` must not need to know each
//! check to know whether 90 is a percentage, seconds or bytes.
//! The state file turns a timer's repeated runs into changes (new, ongoing,
//! resolved), so a problem alerts once instead of every five minutes.

use crate::error::{Error, Exit, Result};
use crate::output::{col, Column, Show};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The table both check commands print: the fix is always on screen.
pub const COLUMNS: &[Column] = &[
    col("STATUS", "status", Show::Plain),
    col("CHECK", "check", Show::Plain),
    col("SUBJECT", "subject", Show::Plain),
    col("MESSAGE", "message", Show::Plain),
    col("HINT", "hint", Show::Plain),
];

/// What a check's `value` and `threshold` count. Only numbers have one;
/// a state, a version or a flag is text, and its unit is null.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// 0 to 100, of the whole named in the message.
    Percent,
    Seconds,
    Bytes,
    /// vCPUs, CPUs, snapshots, IOMMU groups.
    Count,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Percent => "percent",
            Unit::Seconds => "seconds",
            Unit::Bytes => "bytes",
            Unit::Count => "count",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }

    fn parse(s: &str) -> Option<Status> {
        match s {
            "pass" => Some(Status::Pass),
            "warn" => Some(Status::Warn),
            "fail" => Some(Status::Fail),
            _ => None,
        }
    }
}

/// One check's outcome about one subject (the host, a VM, a pool, ...).
#[derive(Debug, Clone)]
pub struct Check {
    pub check: &'static str,
    pub status: Status,
    /// What it is about: `name`/`uuid` for a VM, `pool`, `repository`,
    /// `library`, `image`; empty for the host.
    pub subject: Vec<(&'static str, String)>,
    pub message: String,
    pub hint: Option<String>,
    pub value: Option<Value>,
    pub threshold: Option<Value>,
    /// The unit of `value` and `threshold` when they are numbers.
    pub unit: Option<Unit>,
}

impl Check {
    pub fn new(check: &'static str, status: Status, message: impl Into<String>) -> Check {
        Check {
            check,
            status,
            subject: Vec::new(),
            message: message.into(),
            hint: None,
            value: None,
            threshold: None,
            unit: None,
        }
    }

    pub fn about(mut self, key: &'static str, value: impl Into<String>) -> Check {
        self.subject.push((key, value.into()));
        self
    }

    /// The fix, when the check did not pass.
    pub fn hint(mut self, hint: impl Into<String>) -> Check {
        if self.status != Status::Pass {
            self.hint = Some(hint.into());
        }
        self
    }

    /// A number measured against a limit in the same unit; a value that
    /// could not be measured is null (`Value::Null`), the limit still shown.
    pub fn measured(
        mut self,
        unit: Unit,
        value: impl Into<Value>,
        threshold: impl Into<Value>,
    ) -> Check {
        self.value = Some(value.into());
        self.threshold = Some(threshold.into());
        self.unit = Some(unit);
        self
    }

    /// A number measured with no limit to compare it with.
    pub fn amount(mut self, unit: Unit, value: impl Into<Value>) -> Check {
        self.value = Some(value.into());
        self.unit = Some(unit);
        self
    }

    /// A limit alone: nothing to measure yet (a VM with no backup at all).
    pub fn limit(mut self, unit: Unit, threshold: impl Into<Value>) -> Check {
        self.threshold = Some(threshold.into());
        self.unit = Some(unit);
        self
    }

    /// Text found against text expected (a version against the oldest
    /// that works): no unit.
    pub fn versus(mut self, value: impl Into<Value>, threshold: impl Into<Value>) -> Check {
        let (value, threshold) = (value.into(), threshold.into());
        debug_assert!(
            !value.is_number() && !threshold.is_number(),
            "{}: numbers need their unit",
            self.check
        );
        self.value = Some(value);
        self.threshold = Some(threshold);
        self
    }

    /// What was found, as text (a state, a version, a flag): no unit.
    /// A number goes through `measured` or `amount`, with its unit.
    pub fn value(mut self, value: impl Into<Value>) -> Check {
        let value = value.into();
        debug_assert!(
            !value.is_number(),
            "{}: a number needs its unit",
            self.check
        );
        self.value = Some(value);
        self
    }

    /// Identifies the same problem across runs: the check and its subject
    /// (a VM by uuid, so a rename is not a new problem).
    pub fn key(&self) -> String {
        let subject = self
            .subject
            .iter()
            .filter(|(k, _)| *k != "name" || !self.has("uuid"));
        let parts: Vec<String> = subject.map(|(k, v)| format!("{k}={v}")).collect();
        format!("{} {}", self.check, parts.join(" "))
    }

    fn has(&self, key: &str) -> bool {
        self.subject.iter().any(|(k, _)| *k == key)
    }

    /// A short label for tables and messages: the VM's name, the pool,
    /// the path, or "host".
    pub fn subject_label(&self) -> String {
        let parts: Vec<&str> = self
            .subject
            .iter()
            .filter(|(k, _)| *k != "uuid")
            .map(|(_, v)| v.as_str())
            .collect();
        if parts.is_empty() {
            "host".to_owned()
        } else {
            parts.join(" ")
        }
    }

    pub fn record(&self) -> Map<String, Value> {
        crate::output::to_record(self)
    }
}

/// A check record (docs/records.md, "Check records"): `check`, `status`,
/// `subject`, the subject's own fields (`name` and `uuid`, `pool`, …),
/// `message`, `hint`, `value`, `threshold`, `unit`; absent ones are null.
impl serde::Serialize for Check {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(7 + self.subject.len()))?;
        m.serialize_entry("check", self.check)?;
        m.serialize_entry("status", self.status.as_str())?;
        m.serialize_entry("subject", &self.subject_label())?;
        for (k, v) in &self.subject {
            m.serialize_entry(k, v)?;
        }
        m.serialize_entry("message", &self.message)?;
        m.serialize_entry("hint", &self.hint)?;
        m.serialize_entry("value", &self.value)?;
        m.serialize_entry("threshold", &self.threshold)?;
        m.serialize_entry("unit", &self.unit.map(Unit::as_str))?;
        m.end()
    }
}

/// The record both check commands give when libvirt does not answer.
pub fn libvirt_down(err: &Error) -> Check {
    Check::new("libvirt.reachable", Status::Fail, err.message.clone()).hint(
        "start the daemon: systemctl start libvirtd (or virtqemud.socket); check the URI with -c or HV_CONNECT, and that you may use it (group libvirt)",
    )
}

/// docs/records.md (Check records): any fail → 1; a warn → 1 only with `--strict`.
pub fn exit(checks: &[Check], strict: bool) -> Exit {
    let worst = checks
        .iter()
        .map(|c| c.status)
        .max()
        .unwrap_or(Status::Pass);
    match worst {
        Status::Fail => Exit::ItemFailed,
        Status::Warn if strict => Exit::ItemFailed,
        _ => Exit::Ok,
    }
}

/// What the last run found wrong: key → its record.
pub type Previous = BTreeMap<String, Map<String, Value>>;

/// Reads the state file; a missing file is a first run.
/// A damaged file (a crash while it was written by an older hv) is
/// reported and read as empty: the checks must still run and report.
pub fn load_state(path: &Path) -> Result<Previous> {
    let text = match crate::fsutil::read_limited(path, 64 << 20) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Previous::new()),
        Err(e) => {
            return Err(Error::usage(format!(
                "--state-file {}: cannot read it ({e}); give a file this user may read and write",
                path.display()
            )))
        }
    };
    Ok(serde_json::from_slice(&text).unwrap_or_else(|e| {
        crate::cli::warn(format!(
            "{}: not an hv state file ({e}); starting afresh, so every problem is new once",
            path.display()
        ));
        Previous::new()
    }))
}

/// Saves the problems of this run, and the earlier ones of checks this run
/// did not cover (libvirt unreachable, some VMs only), atomically: a
/// killed run leaves the previous state, and the next run reports the same
/// changes again. Runs at once each write their own temporary file.
pub fn save_state(
    path: &Path,
    checks: &[Check],
    previous: &Previous,
    covered: impl Fn(&str) -> bool,
) -> Result<()> {
    let looked_at: std::collections::HashSet<String> = checks.iter().map(Check::key).collect();
    let mut problems: Previous = previous
        .iter()
        .filter(|(k, r)| {
            let check = r.get("check").and_then(Value::as_str).unwrap_or("");
            !covered(check) && !looked_at.contains(*k)
        })
        .map(|(k, r)| (k.clone(), r.clone()))
        .collect();
    problems.extend(
        checks
            .iter()
            .filter(|c| c.status != Status::Pass)
            .map(|c| (c.key(), c.record())),
    );
    let text = serde_json::to_vec_pretty(&problems).expect("records serialize");
    crate::fsutil::write_atomic(path, &text, 0o644).map_err(|e| Error::io(path.display(), e))
}

/// Each record with its `change` against the last run: `new` or `ongoing`
/// for a problem, null for a pass that was no problem before; then one
/// `resolved` record (status pass) per earlier problem that is gone. An
/// earlier problem of a check this run did not cover (`covered` is false
/// for its id) is neither: it was not looked at.
pub fn with_changes(
    checks: &[Check],
    previous: &Previous,
    covered: impl Fn(&str) -> bool,
) -> Vec<Map<String, Value>> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for c in checks {
        let key = c.key();
        let was = previous
            .get(&key)
            .and_then(|r| r.get("status")?.as_str())
            .and_then(Status::parse);
        let change = match (c.status, was) {
            (Status::Pass, Some(_)) => "resolved",
            (Status::Pass, None) => "",
            (_, None) => "new",
            (now, Some(before)) if now != before => "new",
            _ => "ongoing",
        };
        seen.insert(key);
        let mut r = c.record();
        r.insert(
            "change".into(),
            if change.is_empty() {
                Value::Null
            } else {
                change.into()
            },
        );
        out.push(r);
    }
    for (key, before) in previous {
        let check = before.get("check").and_then(Value::as_str).unwrap_or("");
        if seen.contains(key) || !covered(check) {
            continue;
        }
        let mut r = before.clone();
        r.insert("status".into(), "pass".into());
        r.insert(
            "message".into(),
            format!(
                "no longer found: {}",
                before.get("message").and_then(Value::as_str).unwrap_or("")
            )
            .into(),
        );
        r.insert("hint".into(), Value::Null);
        // A state file written before records had a unit.
        r.entry("unit").or_insert(Value::Null);
        r.insert("change".into(), "resolved".into());
        out.push(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(check: &'static str, status: Status, uuid: &str) -> Check {
        Check::new(check, status, "m")
            .about("name", "web 1")
            .about("uuid", uuid)
    }

    #[test]
    fn changes_against_the_last_run() {
        let first = [
            vm("vm.crashed", Status::Fail, "u1"),
            vm("vm.crashed", Status::Fail, "u2"),
            vm("vm.crashed", Status::Pass, "u3"),
        ];
        let previous: Previous = first
            .iter()
            .filter(|c| c.status != Status::Pass)
            .map(|c| (c.key(), c.record()))
            .collect();
        let second = [
            vm("vm.crashed", Status::Fail, "u1"),
            vm("vm.crashed", Status::Pass, "u3"),
            vm("vm.crashed", Status::Warn, "u4"),
        ];
        let out = with_changes(&second, &previous, |_| true);
        let changes: Vec<(&str, &str, Option<&str>)> = out
            .iter()
            .map(|r| {
                (
                    r["uuid"].as_str().unwrap(),
                    r["status"].as_str().unwrap(),
                    r["change"].as_str(),
                )
            })
            .collect();
        assert_eq!(
            changes,
            [
                ("u1", "fail", Some("ongoing")),
                ("u3", "pass", None),
                ("u4", "warn", Some("new")),
                ("u2", "pass", Some("resolved"))
            ]
        );
    }

    #[test]
    fn a_problem_not_looked_at_is_neither_resolved_nor_forgotten() {
        let problem = vm("vm.crashed", Status::Fail, "u1");
        let previous: Previous = [(problem.key(), problem.record())].into();
        // libvirt unreachable: no VM check ran.
        let down = [Check::new("libvirt.reachable", Status::Fail, "down")];
        let covered = |check: &str| check == "libvirt.reachable";
        let out = with_changes(&down, &previous, covered);
        assert!(out.iter().all(|r| r["change"] != "resolved"), "{out:?}");
        let dir = std::env::temp_dir().join(format!("hv-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("health.json");
        save_state(&path, &down, &previous, covered).unwrap();
        let kept = load_state(&path).unwrap();
        assert!(
            kept.contains_key(&problem.key()),
            "the crash is still remembered"
        );
        std::fs::write(&path, "{\"half").unwrap();
        assert!(
            load_state(&path).unwrap().is_empty(),
            "a damaged file reads as empty"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_pass_has_no_hint_and_warn_exits_1_only_when_strict() {
        let pass = Check::new("host.kvm", Status::Pass, "ok").hint("fix");
        assert_eq!(pass.record()["hint"], Value::Null);
        let warn = Check::new("x", Status::Warn, "w");
        assert_eq!(exit(&[pass.clone(), warn.clone()], false), Exit::Ok);
        assert_eq!(exit(&[pass, warn], true), Exit::ItemFailed);
        assert_eq!(vm("a", Status::Fail, "u").key(), "a uuid=u");
    }

    #[test]
    fn the_unit_follows_the_numbers() {
        let text = Check::new("vm.state", Status::Pass, "m").value("running");
        let r = text.record();
        assert_eq!(
            (&r["value"], &r["unit"]),
            (&Value::from("running"), &Value::Null)
        );
        let full = Check::new("pool.space", Status::Warn, "m").measured(Unit::Percent, 87.5, 85.0);
        let r = full.record();
        assert_eq!(r["unit"], "percent");
        let keys: Vec<&str> = r.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "check",
                "status",
                "subject",
                "message",
                "hint",
                "value",
                "threshold",
                "unit"
            ]
        );
        let never = Check::new("vm.backup_age", Status::Warn, "m").limit(Unit::Seconds, 3600);
        let r = never.record();
        assert_eq!(
            (&r["value"], &r["threshold"], &r["unit"]),
            (&Value::Null, &Value::from(3600), &Value::from("seconds"))
        );
    }
}
