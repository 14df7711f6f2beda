//! `--fix`: the few repairs that are safe to make without a person (start
//! a VM that should run, resume one whose disk has space again), within
//! limits the person sets, each one a result record and an audit entry.
//! A timer's runs are separate processes, so the limits live in the state
//! file: a VM gets so many attempts in a window, the wait between them
//! doubling, and then hv-health gives up on it and says so every run until
//! someone looks and runs `hv-health --reset VM`. A repair that keeps being
//! needed hides a cause no restart will cure, and a loop of restarts would
//! hide it from the person who can.

use crate::host::{human_age, percent, seconds};
use hv_common::checks::{Check, Status};
use hv_common::ffi::fs_space;
use hv_common::targets::{self, VmRef};
use hv_common::{domain, lifecycle, time, Choice, Code, Error, State};
use serde::Serialize;
use serde_json::{Map, Value};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;
use virt::domain::Domain;

/// The checks `--fix` repairs, by their check ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fix {
    Crashed,
    IoError,
    Autostart,
}

impl Choice for Fix {
    /// In the order a VM's problems are taken: a crash first (starting it
    /// also ends "autostart VM is down"), one repair per VM and run.
    const ALL: &'static [Fix] = &[Fix::Crashed, Fix::IoError, Fix::Autostart];

    fn name(self) -> &'static str {
        match self {
            Fix::Crashed => "vm.crashed",
            Fix::IoError => "vm.io_error",
            Fix::Autostart => "vm.autostart",
        }
    }

    fn help(self) -> Option<&'static str> {
        Some(match self {
            Fix::Crashed => "Stop a crashed VM and start it again",
            Fix::IoError => "Resume a VM paused by a disk I/O error once its disks have space",
            Fix::Autostart => "Start an autostart VM that is shut off",
        })
    }
}

/// The tag that keeps `--fix` away from a VM.
pub const NO_AUTOFIX: &str = "no-autofix";

/// What a person allowed: which repairs, how often, how fast.
#[derive(Debug, Clone)]
pub struct Policy {
    pub fixes: Vec<Fix>,
    /// Attempts per VM within `window`; one more needed and it gives up.
    pub attempts: u32,
    pub window: Duration,
    /// The wait after a VM's first attempt; it doubles after each one.
    pub backoff: Duration,
    pub dry_run: bool,
    /// A VM paused by an I/O error is resumed only when each of its disks'
    /// filesystems is less full than this (percent used).
    pub space_below: f64,
}

pub use hv_common::health_state::{GaveUp, Histories, History};

pub fn key(host: Option<&str>, uuid: &str) -> String {
    match host {
        Some(h) => format!("{h}/{uuid}"),
        None => uuid.to_owned(),
    }
}

/// A repair's result record beside the envelope (docs/health.md,
/// "Repairs"): which check it answers, what was done, which attempt.
#[derive(Debug, Serialize)]
struct Repair<'a> {
    check: &'static str,
    subject: &'a str,
    /// `restarted`, `started` or `resumed`.
    did: &'static str,
    message: String,
    changed: bool,
    /// The attempt's number within the window, from 1.
    attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    dry_run: Option<bool>,
}

/// What `--fix` found and did on one host: a `vm.autofix` check per VM
/// (pass, waiting, or given up) and a result record per repair.
#[derive(Debug, Default)]
pub struct Outcome {
    pub checks: Vec<Check>,
    pub repairs: Vec<Map<String, Value>>,
}

/// Repairs what `found` (this host's checks) shows broken and `policy`
/// allows, on `domains` of a read-write connection.
pub fn repair(
    policy: &Policy,
    domains: &[Domain],
    found: &[Check],
    histories: &Mutex<Histories>,
    host: Option<&str>,
    now: i64,
) -> Outcome {
    let mut out = Outcome::default();
    for dom in domains {
        let (Ok(name), Ok(uuid)) = (dom.name(), dom.uuid_string()) else {
            continue; // undefined while we looked
        };
        let failing = |fix: Fix| {
            found.iter().any(|c| {
                c.check == fix.name()
                    && c.status != Status::Pass
                    && c.subject.iter().any(|(k, v)| *k == "uuid" && *v == uuid)
            })
        };
        let need = policy.fixes.iter().copied().find(|&f| failing(f));
        let vm = Vm {
            dom,
            name: &name,
            uuid: &uuid,
        };
        let mut all = histories.lock().unwrap_or_else(|p| p.into_inner());
        let history = all.entry(key(host, &uuid)).or_default();
        history.name.clone_from(&name);
        let (check, repair) = vm.decide(need, history, policy, now);
        let keep = history.attempts.is_empty() && history.gave_up.is_none();
        if keep {
            all.remove(&key(host, &uuid));
        }
        drop(all);
        out.checks.push(check);
        out.repairs.extend(repair);
    }
    out
}

struct Vm<'a> {
    dom: &'a Domain,
    name: &'a str,
    uuid: &'a str,
}

impl Vm<'_> {
    fn check(&self, status: Status, message: String) -> Check {
        Check::new("vm.autofix", status, message).about_vm(self.name, self.uuid)
    }

    /// The `vm.autofix` check and, when a repair was due, its record.
    fn decide(
        &self,
        need: Option<Fix>,
        history: &mut History,
        policy: &Policy,
        now: i64,
    ) -> (Check, Option<Map<String, Value>>) {
        let name = self.name;
        if let Some(g) = &history.gave_up {
            let check = self
                .check(
                    Status::Fail,
                    format!(
                        "hv-health gave up repairing {} of {name} at {} after {} attempts",
                        g.check,
                        time::rfc3339(g.at),
                        g.attempts
                    ),
                )
                .value(g.check.clone())
                .hint(reset_hint(name));
            return (check, None);
        }
        let Some(fix) = need else {
            return (
                self.check(Status::Pass, format!("{name} needs no repair")),
                None,
            );
        };
        if self.tagged_no_autofix() {
            let check = self.check(
                Status::Pass,
                format!(
                    "{name} is tagged {NO_AUTOFIX}: {} is left to a person",
                    fix.name()
                ),
            );
            return (check, None);
        }
        let window = seconds(policy.window);
        history.attempts.retain(|&t| now - t < window);
        let made = history.attempts.len() as u32;
        if made >= policy.attempts {
            let given = GaveUp {
                check: fix.name().to_owned(),
                at: now,
                attempts: made,
            };
            let message = format!(
                "hv-health gives up repairing {} of {name}: {made} attempts in {} did not last",
                fix.name(),
                human_age(window),
            );
            if !policy.dry_run {
                history.gave_up = Some(given);
            }
            let check = self
                .check(Status::Fail, message)
                .value(fix.name())
                .hint(reset_hint(name));
            return (check, None);
        }
        if let Some(&last) = history.attempts.last() {
            let wait = backoff(policy.backoff, made);
            let due = last.saturating_add(seconds(wait));
            if now < due {
                let check = self
                    .check(
                        Status::Warn,
                        format!(
                            "{} of {name}: attempt {} of {} waits until {}",
                            fix.name(),
                            made + 1,
                            policy.attempts,
                            time::rfc3339(due)
                        ),
                    )
                    .value(fix.name())
                    .hint(format!(
                        "wait, or repair it now ({}); the earlier attempt did not last",
                        fix_hint(fix, name)
                    ));
                return (check, None);
            }
        }
        if fix == Fix::IoError {
            if let Some(full) = self.full_disk(policy.space_below) {
                let check = self
                    .check(
                        Status::Warn,
                        format!("{name} stays paused until there is space: {full}"),
                    )
                    .value(fix.name())
                    .hint("free space on that filesystem; the next run resumes it");
                return (check, None);
            }
        }
        if policy.dry_run {
            let record = self.record(fix, made + 1, Ok(false), true);
            let check = self.check(
                Status::Pass,
                format!("would repair {} of {name} (dry run)", fix.name()),
            );
            return (check, Some(record));
        }
        history.attempts.push(now);
        let done = self.apply(fix);
        let check = match &done {
            Ok(_) => self.check(
                Status::Pass,
                format!("repaired {} of {name} (attempt {})", fix.name(), made + 1),
            ),
            Err(e) => self
                .check(
                    Status::Fail,
                    format!("could not repair {} of {name}: {}", fix.name(), e.message),
                )
                .value(fix.name())
                .hint(fix_hint(fix, name)),
        };
        (check, Some(self.record(fix, made + 1, done, false)))
    }

    fn tagged_no_autofix(&self) -> bool {
        domain::definition(self.dom).is_ok_and(|(_, x)| x.tags.iter().any(|t| t == NO_AUTOFIX))
    }

    /// The first file disk on a filesystem at least `limit` percent full,
    /// said as path and percentage.
    fn full_disk(&self, limit: f64) -> Option<String> {
        let (_, x) = domain::definition(self.dom).ok()?;
        x.disks
            .iter()
            .filter(|d| d.device == "disk" && !d.shared)
            .filter_map(|d| d.source.as_deref())
            .find_map(|source| {
                let space = fs_space(Path::new(source)).ok()?;
                let used = percent(
                    space.size_bytes - space.available_bytes.min(space.size_bytes),
                    space.size_bytes,
                );
                (used >= limit).then(|| format!("{source} is on a filesystem {used}% full"))
            })
    }

    /// Does the repair; `Ok(true)` when the VM is running afterwards.
    fn apply(&self, fix: Fix) -> Result<bool, Error> {
        let failed =
            |what: &str, e: virt::error::Error| Error::libvirt(format!("{what} {}", self.name), &e);
        let state = lifecycle::state(self.dom)?.state;
        match (fix, state) {
            (Fix::Crashed, State::Crashed) => {
                self.dom.destroy().map_err(|e| failed("cannot stop", e))?;
                self.dom.create().map_err(|e| failed("cannot start", e))?;
            }
            (Fix::Crashed | Fix::Autostart, State::Shutoff) => {
                self.dom.create().map_err(|e| failed("cannot start", e))?;
            }
            (Fix::IoError, State::Paused) => {
                self.dom.resume().map_err(|e| failed("cannot resume", e))?;
            }
            (_, now) => {
                return Err(Error::new(
                    Code::InvalidState,
                    format!(
                        "{} is {now} now, not what {} repairs",
                        self.name,
                        fix.name()
                    ),
                ))
            }
        }
        Ok(lifecycle::state(self.dom)?.state.is_active())
    }

    fn record(
        &self,
        fix: Fix,
        attempt: u32,
        done: Result<bool, Error>,
        dry_run: bool,
    ) -> Map<String, Value> {
        let name = self.name;
        let (did, verb) = match fix {
            Fix::Crashed => ("restarted", "restart"),
            Fix::IoError => ("resumed", "resume"),
            Fix::Autostart => ("started", "start"),
        };
        let vm = VmRef::named(name, self.uuid);
        let repair = |changed: bool, message: String| Repair {
            check: fix.name(),
            subject: name,
            did,
            message,
            changed,
            attempt,
            dry_run: dry_run.then_some(true),
        };
        match done {
            Ok(_) if dry_run => targets::success_record(
                &vm,
                "fix",
                &repair(false, format!("would {verb} {name} ({})", fix.name())),
            ),
            Ok(_) => targets::success_record(
                &vm,
                "fix",
                &repair(true, format!("{did} {name} ({})", fix.name())),
            ),
            Err(e) => {
                let e = e.and_done(&repair(false, format!("tried to {verb} {name}")));
                targets::failure_record(&vm, Some("fix"), &e)
            }
        }
    }
}

/// The wait after `made` attempts: `first`, doubling after each.
fn backoff(first: Duration, made: u32) -> Duration {
    first.saturating_mul(1 << made.saturating_sub(1).min(16))
}

/// What a person does once hv-health gave up on `name`.
fn reset_hint(name: &str) -> String {
    format!(
        "find out why in /var/log/libvirt/qemu/{name}.log, fix the cause, then \
         hv-health --reset {name:?} (with the same --state-file)"
    )
}

fn fix_hint(fix: Fix, name: &str) -> String {
    match fix {
        Fix::Crashed => format!("hv-stop --force {name:?}; hv-start {name:?}"),
        Fix::IoError | Fix::Autostart => format!("hv-start {name:?}"),
    }
}

/// Forgets the named VMs' attempts and give-ups; the names that matched.
pub fn reset(histories: &mut Histories, vms: &[String]) -> Vec<String> {
    let mut matched = Vec::new();
    histories.retain(|key, h| {
        let uuid = hv_common::health_state::uuid_of(key);
        let hit = vms.iter().any(|v| *v == h.name || v == uuid);
        if hit {
            matched.push(h.name.clone());
        }
        !hit
    });
    matched
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_after_each_attempt() {
        let m = Duration::from_secs(60);
        assert_eq!(backoff(m, 1), m);
        assert_eq!(backoff(m, 2), m * 2);
        assert_eq!(backoff(m, 3), m * 4);
        assert_eq!(backoff(Duration::ZERO, 5), Duration::ZERO);
        assert_eq!(backoff(m, u32::MAX), m * 65536);
    }

    #[test]
    fn reset_matches_a_name_or_a_uuid() {
        let mut h = Histories::new();
        for (k, n) in [("u1", "web"), ("hostb/u2", "db"), ("u3", "mail")] {
            h.insert(
                k.into(),
                History {
                    name: n.into(),
                    ..History::default()
                },
            );
        }
        let mut got = reset(&mut h, &["web".into(), "u2".into()]);
        got.sort();
        assert_eq!(got, ["db", "web"]);
        assert_eq!(h.keys().collect::<Vec<_>>(), ["u3"]);
    }
}
