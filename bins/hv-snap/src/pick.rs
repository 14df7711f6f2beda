//! hv-snap revert and rm. Both act on one named snapshot of each VM, named
//! by `--snapshot` or by the `snapshot` field of a piped record (`hv-snap
//! ls | jq … | hv-snap rm`), so they share the lookup, the dry run and the
//! record. A snapshot the VM does not have is `not_found` with a hint; it is
//! told from other lookup failures by libvirt's error code, never by its
//! message.

use crate::columns::ACTION_COLUMNS;
use crate::errors::needing_snapshot;
use hv_common::bulk::{self, Action};
use hv_common::cli::ActionArgs;
use hv_common::error::libvirt_code;
use hv_common::lifecycle;
use hv_common::targets::VmRef;
use hv_common::{runner, Code, Error, Exit, Result, VmState};
use serde::Serialize;
use std::time::{Duration, Instant};
use virt::domain::Domain;

/// What `hv-snap revert` or `hv-snap rm` was asked to do.
#[derive(Debug, Clone)]
pub struct PickPlan {
    /// VMs named as arguments; none: records from stdin.
    pub vms: Vec<String>,
    /// The snapshot; none: each piped record's `snapshot` field.
    pub snapshot: Option<String>,
    pub action: PickAction,
    /// How long each VM may take.
    pub timeout: Duration,
    /// Look the snapshot up, change nothing.
    pub dry_run: bool,
}

/// Which of the two subcommands it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickAction {
    /// Revert the VM to the snapshot, and leave it as this says.
    Revert(AfterRevert),
    /// Delete the snapshot.
    Rm,
}

/// The state a reverted VM is left in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterRevert {
    /// The state the snapshot holds.
    AsTaken,
    /// Paused (`--paused`).
    Paused,
    /// Running, even from a snapshot of a stopped VM (`--running`).
    Running,
}

impl PickAction {
    /// The `action` field of its records.
    fn name(self) -> &'static str {
        match self {
            PickAction::Revert(_) => "revert",
            PickAction::Rm => "rm",
        }
    }
}

impl AfterRevert {
    /// libvirt's virDomainSnapshotRevertFlags for it.
    fn flags(self) -> u32 {
        match self {
            AfterRevert::AsTaken => 0,
            AfterRevert::Paused => virt::sys::VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED,
            AfterRevert::Running => virt::sys::VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING,
        }
    }
}

/// What revert or rm reports of one VM, after `name`, `uuid`, `action`
/// and `ok` (docs/records.md, "Result records").
#[derive(Debug, Serialize)]
pub struct Picked {
    /// The snapshot reverted to or deleted.
    pub snapshot: String,
    /// Present (true) on a dry run, where nothing changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// revert: the VM's `state` and `state_reason` afterwards; rm: absent.
    #[serde(flatten)]
    pub state: Option<VmState>,
    /// How long this VM took, in milliseconds.
    pub elapsed_ms: u64,
}

/// `args`: only for the bulk driver (connection, `-j`, output format).
pub fn run(plan: PickPlan, args: &ActionArgs) -> Result<Exit> {
    let inputs = bulk::inputs(
        &plan.vms,
        "hv-snap ls web1 | jq -c 'select(.snapshot == \"old\")' | hv-snap rm",
    )?;
    let action = Action {
        name: plan.action.name(),
        columns: &ACTION_COLUMNS,
        item_timeout: plan.timeout,
    };
    bulk::act(inputs, args, action, move |_, dom, vm| pick(dom, vm, &plan))
}

fn pick(dom: &Domain, vm: &VmRef, plan: &PickPlan) -> Result<Picked> {
    let name = plan
        .snapshot
        .clone()
        .or_else(|| piped_snapshot(vm))
        .ok_or_else(|| {
            Error::usage("which snapshot? give --snapshot NAME, or pipe records with a \"snapshot\" field (hv-snap ls)")
        })?;
    let began = Instant::now();
    let snap = Domain::lookup_snapshot_by_name(dom, &name, 0).map_err(|e| {
        if libvirt_code(&e) == Code::NotFound {
            Error::new(
                Code::NotFound,
                format!("it has no snapshot '{name}'; `hv-snap ls` lists them"),
            )
        } else {
            Error::libvirt(format!("cannot look up its snapshot '{name}'"), &e)
        }
    })?;
    if !plan.dry_run {
        runner::point_of_no_return()?;
        match plan.action {
            PickAction::Revert(after) => {
                snap.revert(after.flags())
                    .map_err(needing_snapshot("libvirt could not revert to it"))
                    .map_err(|e| with_checkpoint_hint(dom, e))?;
            }
            PickAction::Rm => {
                snap.delete(0)
                    .map_err(needing_snapshot("libvirt could not delete it"))?;
            }
        }
    }
    let state = match plan.action {
        PickAction::Revert(_) => Some(lifecycle::state(dom)?),
        PickAction::Rm => None,
    };
    Ok(Picked {
        snapshot: name,
        dry_run: plan.dry_run.then_some(true),
        state,
        elapsed_ms: began.elapsed().as_millis() as u64,
    })
}

/// The `snapshot` field of the record `vm` was piped in as (hv-snap ls's).
fn piped_snapshot(vm: &VmRef) -> Option<String> {
    vm.record
        .as_ref()?
        .get("snapshot")?
        .as_str()
        .map(str::to_owned)
}

/// QEMU reverts no disk that has dirty bitmaps, and libvirt's error then
/// does not say why: name the checkpoints that hold them and the way out.
fn with_checkpoint_hint(dom: &Domain, err: Error) -> Error {
    match hv_common::ffi::checkpoint_count(dom) {
        Ok(n) if n > 0 => Error::new(
            err.code,
            format!(
                "{}; the VM has {n} checkpoint(s) (hv-backup makes them for incremental backups) and QEMU does not revert a disk with their dirty bitmaps: delete them (docs/snapshots.md, Backups), revert, and the next backup reads in full",
                err.message
            ),
        ),
        _ => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hv_common::State;

    fn picked(dry_run: bool, state: Option<VmState>) -> String {
        serde_json::to_string(&Picked {
            snapshot: "pre".into(),
            dry_run: dry_run.then_some(true),
            state,
            elapsed_ms: 3,
        })
        .unwrap()
    }

    #[test]
    fn revert_records_carry_the_state_and_rm_records_do_not() {
        assert_eq!(picked(false, None), r#"{"snapshot":"pre","elapsed_ms":3}"#);
        assert_eq!(
            picked(true, Some(VmState::bare(State::Running))),
            r#"{"snapshot":"pre","dry_run":true,"state":"running","state_reason":"unknown","elapsed_ms":3}"#
        );
    }

    /// A revert's record is the one docs/snapshots.md shows; an rm's has
    /// no state.
    #[test]
    fn the_record_is_the_documented_one() {
        let picked = |state| Picked {
            snapshot: "pre".into(),
            dry_run: Some(true),
            state,
            elapsed_ms: 1,
        };
        let vm = hv_common::targets::VmRef::named("web1", "u");
        let revert = hv_common::targets::success_record(
            &vm,
            "revert",
            &picked(Some(hv_common::VmState::bare(hv_common::State::Running))),
        );
        hv_testbench::assert_documented(&revert, "snapshots.md", "### revert and rm records");
        let rm = hv_common::targets::success_record(&vm, "rm", &picked(None));
        assert!(!rm.contains_key("state") && !rm.contains_key("state_reason"));
    }
}
