//! hv-health and hv-preflight speak one record shape: a check id that never
//! changes spelling (scripts and alerts match on it), a status, what was
//! measured against what limit, and the command or setting that fixes it.
//! The measure carries its unit, because checks measure different things
//! (a share of a disk, an age, a size, a count) in one pair of fields: a
//! script comparing `value` with `threshold` must not need to know each
//! check to know whether 90 is a percentage, seconds or bytes.

use crate::error::{Error, Exit, Result};
use crate::output::{col, Column, Show};
use serde_json::{Map, Value};

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

    pub fn parse(s: &str) -> Option<Status> {
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
    /// The host it is about, in a run that names hosts (docs/hosts.md).
    pub host: Option<String>,
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
            host: None,
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

    /// On one of several hosts: records say which.
    pub fn on_host(mut self, host: impl Into<String>) -> Check {
        self.host = Some(host.into());
        self
    }

    /// About a VM: its `name` and `uuid`, as every VM check says it.
    pub fn about_vm(self, name: impl Into<String>, uuid: impl Into<String>) -> Check {
        self.about("name", name).about("uuid", uuid)
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
        let host = self.host.iter().map(|h| format!("host={h}"));
        let parts: Vec<String> = host
            .chain(subject.map(|(k, v)| format!("{k}={v}")))
            .collect();
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
/// `subject`, `host` when hosts are named, the subject's own fields (`name` and `uuid`, `pool`, …),
/// `message`, `hint`, `value`, `threshold`, `unit`; absent ones are null.
impl serde::Serialize for Check {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(8 + self.subject.len()))?;
        m.serialize_entry("check", self.check)?;
        m.serialize_entry("status", self.status.as_str())?;
        m.serialize_entry("subject", &self.subject_label())?;
        if let Some(host) = &self.host {
            m.serialize_entry("host", host)?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(check: &'static str, status: Status, uuid: &str) -> Check {
        Check::new(check, status, "m").about_vm("web 1", uuid)
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
