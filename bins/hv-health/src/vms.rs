//! Checks of each VM, for the problems nobody sees until the VM is needed:
//! it crashed, it is paused and nobody will resume it, it should run with
//! the host and does not, a disk failed, its snapshots or backups went
//! stale. The state reason is read, not only the state, because it tells a
//! crash from a shutdown and a pause someone chose from one that happened
//! to the guest; only the second of each is a problem.

use crate::host::{human_age, seconds};
use crate::Limits;
use hv_common::checks::{Check, Status, Unit};
use hv_common::{backup_index, lifecycle, snapshot, time, Error, State, VmState};
use std::collections::HashMap;
use std::path::PathBuf;
use virt::domain::Domain;
use virt::sys;

struct Vm {
    name: String,
    uuid: String,
    state: VmState,
}

impl Vm {
    fn check(&self, id: &'static str, status: Status, message: String) -> Check {
        Check::new(id, status, message).about_vm(&self.name, &self.uuid)
    }

    fn running(&self) -> bool {
        self.state.state.is_running()
    }

    fn paused(&self) -> bool {
        self.state.state == State::Paused
    }
}

/// `repos` are the backup repositories (none: no backup check).
pub fn check(domains: &[Domain], repos: &[PathBuf], limits: &Limits) -> Vec<Check> {
    let newest = newest_backups(repos);
    let now = time::now();
    let mut out = Vec::new();
    for dom in domains {
        let Some(vm) = describe(dom) else {
            continue; // undefined while we looked: not a problem of this host
        };
        out.push(crashed(&vm));
        out.push(io_error(&vm));
        out.push(paused(&vm));
        out.push(autostart(dom, &vm));
        if vm.running() {
            out.push(disk_errors(dom, &vm));
        }
        out.extend(snapshots(dom, &vm, limits, now));
        if let Some(newest) = &newest {
            out.push(backup_age(&vm, newest.get(&vm.uuid), repos, limits, now));
        }
    }
    out
}

fn describe(dom: &Domain) -> Option<Vm> {
    Some(Vm {
        state: lifecycle::state(dom).ok()?,
        name: dom.name().ok()?,
        uuid: dom.uuid_string().ok()?,
    })
}

fn crashed(vm: &Vm) -> Check {
    let died = vm.state.crashed();
    let (state, reason) = (vm.state.state, vm.state.reason_name());
    let status = if died { Status::Fail } else { Status::Pass };
    vm.check(
        "vm.crashed",
        status,
        format!("{} is {state} ({reason})", vm.name),
    )
    .value(format!("{state}/{reason}"))
    .hint(if vm.state.state == State::Crashed {
        // A crashed domain is kept for inspection; hv-start refuses it.
        format!(
            "read why in /var/log/libvirt/qemu/{}.log, then hv-stop --force {:?} and hv-start {:?}",
            vm.name, vm.name, vm.name
        )
    } else {
        format!(
            "read why in /var/log/libvirt/qemu/{}.log, then hv-start {:?}",
            vm.name, vm.name
        )
    })
}

fn io_error(vm: &Vm) -> Check {
    let paused = vm.paused() && vm.state.reason == sys::VIR_DOMAIN_PAUSED_IOERROR;
    let (status, message) = if paused {
        (
            Status::Fail,
            format!("{} is paused by a disk I/O error", vm.name),
        )
    } else {
        (
            Status::Pass,
            format!("{} is not paused by an I/O error", vm.name),
        )
    };
    vm.check("vm.io_error", status, message).hint(format!(
        "free space where its disks live (hv-health shows full pools), then hv-start {:?} resumes it",
        vm.name
    ))
}

/// Whether a pause for this reason (virDomainPausedReason) is a problem,
/// and if so what happened, in words. A pause is fine when a person or a
/// job chose it and ends it: a user's `virsh suspend`, a save, a memory
/// dump, a snapshot (taking one, or reverting to a paused one), a
/// migration, and the moments libvirt itself holds a guest paused while it
/// starts or after it shut down. Anything else happened to the guest and
/// nobody will resume it: QEMU stopping it on its own, which libvirt
/// reports as `unknown` (an emulation or KVM internal error, or someone at
/// QEMU's monitor behind libvirt's back) or `crashed`; its watchdog firing
/// (the guest hung); a post-copy migration that failed halfway; a libvirt
/// call that failed after pausing it. A reason newer than this list is a
/// problem too, until someone says otherwise. An I/O-error pause is one
/// with its own check and fix (`vm.io_error`).
fn paused_problem(reason: u32) -> Option<&'static str> {
    match reason {
        sys::VIR_DOMAIN_PAUSED_USER
        | sys::VIR_DOMAIN_PAUSED_SAVE
        | sys::VIR_DOMAIN_PAUSED_DUMP
        | sys::VIR_DOMAIN_PAUSED_SNAPSHOT
        | sys::VIR_DOMAIN_PAUSED_FROM_SNAPSHOT
        | sys::VIR_DOMAIN_PAUSED_MIGRATION
        | sys::VIR_DOMAIN_PAUSED_POSTCOPY
        | sys::VIR_DOMAIN_PAUSED_STARTING_UP
        | sys::VIR_DOMAIN_PAUSED_SHUTTING_DOWN
        | sys::VIR_DOMAIN_PAUSED_IOERROR => None,
        sys::VIR_DOMAIN_PAUSED_UNKNOWN => Some(
            "QEMU stopped it and nobody told libvirt why (an internal error in QEMU or KVM, or a stop at QEMU's monitor)",
        ),
        sys::VIR_DOMAIN_PAUSED_CRASHED => Some("its guest crashed, or QEMU hit an internal error"),
        sys::VIR_DOMAIN_PAUSED_WATCHDOG => Some("its watchdog fired: the guest stopped answering it"),
        sys::VIR_DOMAIN_PAUSED_POSTCOPY_FAILED => Some(
            "a post-copy migration failed halfway: part of its memory is still on the other host",
        ),
        sys::VIR_DOMAIN_PAUSED_API_ERROR => Some("a libvirt operation failed after pausing it"),
        _ => Some("for a reason this hv does not know"),
    }
}

fn paused(vm: &Vm) -> Check {
    let (state, reason) = (vm.state.state, vm.state.reason_name());
    let problem = vm
        .paused()
        .then(|| paused_problem(vm.state.reason))
        .flatten();
    let (status, message) = match problem {
        Some(why) => (
            Status::Fail,
            format!(
                "{} is paused ({reason}) and nobody will resume it: {why}",
                vm.name
            ),
        ),
        None if vm.paused() && vm.state.reason == sys::VIR_DOMAIN_PAUSED_IOERROR => (
            Status::Pass,
            format!("{} is paused by an I/O error: see vm.io_error", vm.name),
        ),
        None if vm.paused() => (
            Status::Pass,
            format!(
                "{} is paused ({reason}), as someone or a job chose",
                vm.name
            ),
        ),
        None => (Status::Pass, format!("{} is not paused", vm.name)),
    };
    let log = format!("/var/log/libvirt/qemu/{}.log", vm.name);
    let hint = if vm.paused() && vm.state.reason == sys::VIR_DOMAIN_PAUSED_POSTCOPY_FAILED {
        format!(
            "read why in {log}; recover the migration with virsh migrate --postcopy --postcopy-resume {:?} DESTINATION (stopping it loses the memory already moved)",
            vm.name
        )
    } else {
        format!(
            "read why in {log}, then hv-start {:?} resumes it; if it does not run on, hv-stop --force {:?} and hv-start {:?}",
            vm.name, vm.name, vm.name
        )
    };
    vm.check("vm.paused", status, message)
        .value(format!("{state}/{reason}"))
        .hint(hint)
}

fn autostart(dom: &Domain, vm: &Vm) -> Check {
    let on = dom.autostart().unwrap_or(false);
    let down = on && !vm.running();
    let state = vm.state.state;
    let (status, message) = match (on, down) {
        (true, true) => (
            Status::Warn,
            format!("{} starts with the host but is {state}", vm.name),
        ),
        (true, false) => (
            Status::Pass,
            format!("{} starts with the host and is running", vm.name),
        ),
        (false, _) => (
            Status::Pass,
            format!("{} does not start with the host", vm.name),
        ),
    };
    vm.check("vm.autostart", status, message)
        .value(on)
        .hint(format!(
            "hv-start {:?}; if it should stay off, hv-autostart off {:?}",
            vm.name, vm.name
        ))
}

fn disk_errors(dom: &Domain, vm: &Vm) -> Check {
    match crate::ffi::disk_errors(dom) {
        Ok(errors) if errors.is_empty() => vm.check(
            "vm.disk_errors",
            Status::Pass,
            format!("{} has no disk errors", vm.name),
        ),
        Ok(errors) => {
            let list: Vec<String> = errors.iter().map(|(d, e)| format!("{d}: {e}")).collect();
            vm.check(
                "vm.disk_errors",
                Status::Fail,
                format!("{} had disk I/O errors ({})", vm.name, list.join(", ")),
            )
            .value(list.join(", "))
            .hint("no_space: free space on the disk's storage; otherwise check the host's kernel log (dmesg) for the device")
        }
        Err(e) => vm.check(
            "vm.disk_errors",
            Status::Warn,
            Error::libvirt(format!("cannot read {}'s disk errors", vm.name), &e).message,
        ),
    }
}

fn snapshots(dom: &Domain, vm: &Vm, limits: &Limits, now: i64) -> Vec<Check> {
    let snaps = dom.list_all_snapshots(0).unwrap_or_default();
    let count = snaps.len() as u32;
    let oldest = snaps
        .iter()
        .filter_map(|s| s.xml_desc(0).ok())
        .filter_map(|xml| snapshot::parse(&xml).ok())
        .map(|info| (info.created, info.name))
        .filter(|(created, _)| *created > 0)
        .min();
    let status = if count > limits.max_snapshots {
        Status::Warn
    } else {
        Status::Pass
    };
    let many = vm
        .check(
            "vm.snapshot_count",
            status,
            format!("{} has {count} snapshots", vm.name),
        )
        .measured(Unit::Count, count, limits.max_snapshots)
        .hint(format!(
            "hv-snap prune {:?} --keep-last {}",
            vm.name, limits.max_snapshots
        ));
    let age = oldest.as_ref().map_or(0, |(created, _)| now - created);
    let max_age = seconds(limits.max_snapshot_age);
    let status = if age > max_age {
        Status::Warn
    } else {
        Status::Pass
    };
    let message = match &oldest {
        Some((_, name)) => format!(
            "{}'s oldest snapshot {name:?} is {} old",
            vm.name,
            human_age(age)
        ),
        None => format!("{} has no snapshot", vm.name),
    };
    let old = vm
        .check("vm.snapshot_age", status, message)
        .measured(Unit::Seconds, age, max_age)
        .hint(format!(
            "an old snapshot grows without bound: hv-snap rm {:?} {:?} once it is not needed",
            vm.name,
            oldest.map(|(_, n)| n).unwrap_or_default()
        ));
    vec![many, old]
}

/// Newest backup time per VM uuid across every repository; None without one.
fn newest_backups(repos: &[PathBuf]) -> Option<HashMap<String, (i64, String)>> {
    if repos.is_empty() {
        return None;
    }
    let mut newest: HashMap<String, (i64, String)> = HashMap::new();
    for repo in repos {
        let Ok(backups) = backup_index::list(repo) else {
            continue; // repository.space reports an unreadable repository
        };
        for b in backups {
            let shown = repo.display().to_string();
            let slot = newest
                .entry(b.uuid.clone())
                .or_insert((b.time_unix, shown.clone()));
            if b.time_unix > slot.0 {
                *slot = (b.time_unix, shown);
            }
        }
    }
    Some(newest)
}

fn backup_age(
    vm: &Vm,
    newest: Option<&(i64, String)>,
    repos: &[PathBuf],
    limits: &Limits,
    now: i64,
) -> Check {
    let max_age = seconds(limits.max_backup_age);
    let repos: Vec<String> = repos
        .iter()
        .map(|r| format!("{:?}", r.display().to_string()))
        .collect();
    let fix = format!("hv-backup create {:?} --repo {}", vm.name, repos[0]);
    match newest {
        None => vm
            .check(
                "vm.backup_age",
                Status::Warn,
                format!("{} has no backup in {}", vm.name, repos.join(", ")),
            )
            .limit(Unit::Seconds, max_age)
            .hint(fix),
        Some((at, repo)) => {
            let age = now - at;
            let status = if age > max_age {
                Status::Warn
            } else {
                Status::Pass
            };
            vm.check(
                "vm.backup_age",
                status,
                format!(
                    "{}'s newest backup in {repo} is {} old",
                    vm.name,
                    human_age(age)
                ),
            )
            .measured(Unit::Seconds, age, max_age)
            .hint(format!(
                "{fix}; check the backup timer: systemctl status hv-backup.timer"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_nobody_chose_is_a_problem() {
        let chosen = [
            sys::VIR_DOMAIN_PAUSED_USER,
            sys::VIR_DOMAIN_PAUSED_SAVE,
            sys::VIR_DOMAIN_PAUSED_DUMP,
            sys::VIR_DOMAIN_PAUSED_SNAPSHOT,
            sys::VIR_DOMAIN_PAUSED_FROM_SNAPSHOT,
            sys::VIR_DOMAIN_PAUSED_MIGRATION,
            sys::VIR_DOMAIN_PAUSED_POSTCOPY,
            sys::VIR_DOMAIN_PAUSED_STARTING_UP,
            sys::VIR_DOMAIN_PAUSED_SHUTTING_DOWN,
            sys::VIR_DOMAIN_PAUSED_IOERROR,
        ];
        for reason in chosen {
            assert_eq!(paused_problem(reason), None, "reason {reason}");
        }
        let problems = [
            sys::VIR_DOMAIN_PAUSED_UNKNOWN,
            sys::VIR_DOMAIN_PAUSED_CRASHED,
            sys::VIR_DOMAIN_PAUSED_WATCHDOG,
            sys::VIR_DOMAIN_PAUSED_POSTCOPY_FAILED,
            sys::VIR_DOMAIN_PAUSED_API_ERROR,
            99,
        ];
        for reason in problems {
            assert!(paused_problem(reason).is_some(), "reason {reason}");
        }
        let vm = |state, reason| Vm {
            name: "web 1".into(),
            uuid: "u".into(),
            state: VmState::from_raw(state, reason),
        };
        let crashed = paused(&vm(sys::VIR_DOMAIN_PAUSED, sys::VIR_DOMAIN_PAUSED_CRASHED));
        assert_eq!(crashed.status, Status::Fail);
        assert_eq!(
            crashed.value,
            Some(serde_json::Value::from("paused/crashed"))
        );
        let hint = crashed.hint.unwrap();
        assert!(
            hint.contains("/var/log/libvirt/qemu/web 1.log")
                && hint.contains("hv-start \"web 1\"")
                && hint.contains("hv-stop --force \"web 1\""),
            "{hint}"
        );
        // Reason 0 of a running VM is not a pause.
        let running = paused(&vm(sys::VIR_DOMAIN_RUNNING, 0));
        assert_eq!(running.status, Status::Pass);
        assert_eq!(running.hint, None);
    }
}
