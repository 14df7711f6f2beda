//! `--state-file` turns a timer's repeated runs into changes (new,
//! ongoing, resolved), so a problem alerts once instead of every five
//! minutes. The file holds the problems of the last run as their records,
//! so a problem that is gone can still be named when it resolves, and the
//! repairs `--fix` made, so its limits hold across runs.

use crate::fix::Histories;
use hv_common::checks::{Check, Status};
use hv_common::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// What the last run found wrong: key (check id and subject) → its record.
pub type Previous = BTreeMap<String, Stored>;

/// The state file (docs/health.md, "The state file").
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Saved {
    pub problems: Previous,
    /// Each VM's repairs by `--fix`.
    #[serde(default)]
    pub fixes: Histories,
}

/// A check record as the state file keeps it, read back as it was
/// written (docs/records.md, "Check records").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub check: String,
    pub status: String,
    pub subject: String,
    /// The subject's own fields (`name` and `uuid`, `pool`, …).
    #[serde(flatten)]
    pub about: Map<String, Value>,
    pub message: String,
    pub hint: Option<String>,
    pub value: Value,
    pub threshold: Value,
    /// Absent in files written before records had a unit.
    #[serde(default)]
    pub unit: Value,
}

impl Stored {
    fn of(check: &Check) -> Stored {
        serde_json::from_value(Value::Object(check.record())).expect("a check reads back")
    }
}

/// A record of this run with its change against the last one: `new` or
/// `ongoing` for a problem, `resolved` for a problem gone, null for a pass
/// that was no problem before.
#[derive(Debug, Serialize)]
pub struct Changed<R: Serialize> {
    #[serde(flatten)]
    pub record: R,
    pub change: Option<&'static str>,
}

/// Reads the state file; a missing file is a first run.
/// A damaged file (a crash while it was written by an older hv) is
/// reported and read as empty: the checks must still run and report.
pub fn load(path: &Path) -> Result<Saved> {
    let text = match hv_common::fsutil::read_limited(path, 64 << 20) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Saved::default()),
        Err(e) => {
            return Err(Error::usage(format!(
                "--state-file {}: cannot read it ({e}); give a file this user may read and write",
                path.display()
            )))
        }
    };
    // Files written before `--fix` hold the problems alone.
    let read = serde_json::from_slice::<Value>(&text).and_then(|v| {
        if v.get("problems").is_some() {
            serde_json::from_value::<Saved>(v)
        } else {
            serde_json::from_value::<Previous>(v).map(|problems| Saved {
                problems,
                ..Saved::default()
            })
        }
    });
    Ok(read.unwrap_or_else(|e| {
        hv_common::cli::warn(format!(
            "{}: not an hv state file ({e}); starting afresh, so every problem is new once \
             and --fix counts its attempts anew",
            path.display()
        ));
        Saved::default()
    }))
}

/// Saves the problems of this run, and the earlier ones of checks this run
/// did not cover (libvirt unreachable, some VMs only), atomically: a
/// killed run leaves the previous state, and the next run reports the same
/// changes again. Runs at once each write their own temporary file.
pub fn save(
    path: &Path,
    checks: &[Check],
    previous: &Previous,
    covered: impl Fn(&Stored) -> bool,
    fixes: &Histories,
) -> Result<()> {
    let looked_at: HashSet<String> = checks.iter().map(Check::key).collect();
    let mut problems: Previous = previous
        .iter()
        .filter(|(k, r)| !covered(r) && !looked_at.contains(*k))
        .map(|(k, r)| (k.clone(), r.clone()))
        .collect();
    problems.extend(
        checks
            .iter()
            .filter(|c| c.status != Status::Pass)
            .map(|c| (c.key(), Stored::of(c))),
    );
    let saved = Saved {
        problems,
        fixes: fixes.clone(),
    };
    write(path, &saved)
}

/// Writes `saved` as it is (after `--reset`), atomically.
pub fn write(path: &Path, saved: &Saved) -> Result<()> {
    let text = serde_json::to_vec_pretty(saved).expect("records serialize");
    hv_common::fsutil::write_atomic(path, &text, 0o644).map_err(|e| Error::io(path.display(), e))
}

/// Holds `FILE.lock` beside the state file while a run may repair or
/// reset: two timers' runs at once would both restart a VM, and the later
/// save would drop the earlier run's attempts. The lock goes with the
/// process, however it ends.
pub fn lock(path: &Path) -> Result<std::fs::File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&name)
        .map_err(|e| Error::io(Path::new(&name).display(), e))?;
    file.lock()
        .map_err(|e| Error::io(Path::new(&name).display(), e))?;
    Ok(file)
}

/// Each record with its change against the last run, then one `resolved`
/// record (status pass) per earlier problem that is gone. An earlier
/// problem of a check this run did not cover (`covered` is false for it) is neither: it was not looked at.
pub fn with_changes(
    checks: &[Check],
    previous: &Previous,
    covered: impl Fn(&Stored) -> bool,
) -> Vec<Map<String, Value>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for c in checks {
        let key = c.key();
        let was = previous.get(&key).and_then(|r| Status::parse(&r.status));
        let change = match (c.status, was) {
            (Status::Pass, Some(_)) => Some("resolved"),
            (Status::Pass, None) => None,
            (_, None) => Some("new"),
            (now, Some(before)) if now != before => Some("new"),
            _ => Some("ongoing"),
        };
        seen.insert(key);
        out.push(hv_common::output::to_record(&Changed { record: c, change }));
    }
    for (key, before) in previous {
        if seen.contains(key) || !covered(before) {
            continue;
        }
        let gone = Stored {
            status: Status::Pass.as_str().to_owned(),
            message: format!("no longer found: {}", before.message),
            hint: None,
            ..before.clone()
        };
        out.push(hv_common::output::to_record(&Changed {
            record: gone,
            change: Some("resolved"),
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(check: &'static str, status: Status, uuid: &str) -> Check {
        Check::new(check, status, "m").about_vm("web 1", uuid)
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
            .map(|c| (c.key(), Stored::of(c)))
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
        let previous: Previous = [(problem.key(), Stored::of(&problem))].into();
        // libvirt unreachable: no VM check ran.
        let down = [Check::new("libvirt.reachable", Status::Fail, "down")];
        let covered = |s: &Stored| s.check == "libvirt.reachable";
        let out = with_changes(&down, &previous, covered);
        assert!(out.iter().all(|r| r["change"] != "resolved"), "{out:?}");
        let dir = std::env::temp_dir().join(format!("hv-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("health.json");
        save(&path, &down, &previous, covered, &Histories::new()).unwrap();
        let kept = load(&path).unwrap().problems;
        assert!(
            kept.contains_key(&problem.key()),
            "the crash is still remembered"
        );
        // As hv wrote it before --fix: the problems alone.
        std::fs::write(&path, serde_json::to_vec(&previous).unwrap()).unwrap();
        assert_eq!(load(&path).unwrap().problems, previous);
        std::fs::write(&path, "{\"half").unwrap();
        let damaged = load(&path).unwrap();
        assert!(
            damaged.problems.is_empty() && damaged.fixes.is_empty(),
            "a damaged file reads as empty"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// docs/health.md names every field a record can have: the fixed ones
    /// in this order, with the subject's own fields after `subject`.
    #[test]
    fn records_are_the_documented_ones() {
        let documented = hv_testbench::documented_fields("health.md", "## Records");
        let subjects = [
            "name",
            "uuid",
            "pool",
            "repository",
            "image",
            "library",
            "network",
            "bridge",
        ];
        let fixed = |keys: &[String]| -> Vec<String> {
            keys.iter()
                .filter(|k| !subjects.contains(&k.as_str()))
                .cloned()
                .collect()
        };
        let check = vm("vm.crashed", Status::Fail, "u1").on_host("h1");
        let record = hv_common::output::to_record(&Changed {
            record: &check,
            change: Some("new"),
        });
        let keys: Vec<String> = record.keys().cloned().collect();
        assert_eq!(fixed(&keys), fixed(&documented));
        assert!(keys.iter().all(|k| documented.contains(k)), "{keys:?}");
    }

    /// The same check on two hosts is two problems, and a stored one
    /// keeps its host through the state file.
    #[test]
    fn a_problem_is_of_its_host() {
        let (a, b) = (
            vm("vm.crashed", Status::Fail, "u1").on_host("h1"),
            vm("vm.crashed", Status::Fail, "u1").on_host("h2"),
        );
        assert_ne!(a.key(), b.key());
        let stored = Stored::of(&a);
        assert_eq!(stored.about["host"], "h1");
        let again = serde_json::to_value(&stored).unwrap();
        let keys: Vec<&str> = again
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys[..5], ["check", "status", "subject", "host", "name"]);
    }
}
