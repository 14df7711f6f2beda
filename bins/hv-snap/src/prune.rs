//! hv-snap prune. Per VM, the retention rules judge its snapshots by
//! creation time, with the Proxmox semantics hv-backup prune shares
//! (hv_common::retention), and the snapshots no rule keeps are deleted.
//! Only snapshots hv made are judged unless `--all`, so a hand-made
//! snapshot is never removed by a timer. A VM of which some deletions fail
//! is a failure whose record still lists what was removed.

use crate::columns::PRUNE_COLUMNS;
use crate::snapshots::snapshots_of;
use hv_common::bulk::{self, Action};
use hv_common::cli::ActionArgs;
use hv_common::retention::{self, Keep, Verdict};
use hv_common::snapshot::Info;
use hv_common::{runner, time, Code, Error, Exit, Result};
use serde::Serialize;
use std::time::Duration;
use virt::domain::Domain;

/// What `hv-snap prune` was asked to do.
#[derive(Debug, Clone)]
pub struct PrunePlan {
    /// VMs named as arguments; none: read them from stdin.
    pub vms: Vec<String>,
    /// The retention rules (`--keep-*`).
    pub keep: Keep,
    /// Judge snapshots hv did not make, too.
    pub all: bool,
    /// How long each VM may take.
    pub timeout: Duration,
    /// Judge and report, delete nothing.
    pub dry_run: bool,
    /// Judge only the snapshots this `hv-snap schedule` policy took; without
    /// one, only snapshots no policy took (a schedule prunes its own).
    pub policy: Option<String>,
}

/// What prune did to one VM, after `name`, `uuid`, `action` and `ok`
/// (docs/records.md, "Retention"). A VM of which some snapshots could not
/// be removed is a failure that still lists those that were.
#[derive(Debug, Serialize)]
pub struct Pruned {
    /// Every snapshot judged, oldest first.
    pub snapshots: Vec<Judged>,
    /// Names of the snapshots removed (to be removed, in a dry run).
    pub removed: Vec<String>,
    /// Present (true) on a dry run, where nothing was removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

/// What prune decided about one snapshot, in the shape hv-backup prune's
/// items have too.
#[derive(Debug, Serialize)]
pub struct Judged {
    /// The snapshot's name.
    pub snapshot: String,
    /// When it was taken, RFC 3339 UTC.
    pub created_at: String,
    /// Whether a rule keeps it.
    pub kept: bool,
    /// The rule that keeps it (`keep-last`, `keep-daily`, …); null when
    /// it goes.
    pub keep_reason: Verdict,
}

impl Judged {
    fn new(info: &Info, verdict: Verdict) -> Judged {
        Judged {
            snapshot: info.name.clone(),
            created_at: time::rfc3339(info.created),
            kept: verdict.is_some(),
            keep_reason: verdict,
        }
    }
}

/// `args`: only for the bulk driver (connection, `-j`, output format).
pub fn run(plan: PrunePlan, args: &ActionArgs) -> Result<Exit> {
    if plan.keep.is_empty() {
        return Err(Error::usage(
            "prune needs at least one --keep-* option (with none, everything would be kept)",
        ));
    }
    let inputs = bulk::inputs(&plan.vms, "hv-ls --tag prod | hv-snap prune --keep-last 3")?;
    let action = Action {
        name: "prune",
        columns: &PRUNE_COLUMNS,
        item_timeout: plan.timeout,
    };
    bulk::act(inputs, args, action, move |_, dom, _| prune_vm(dom, &plan))
}

pub fn prune_vm(dom: &Domain, plan: &PrunePlan) -> Result<Pruned> {
    let candidates: Vec<_> = snapshots_of(dom)?
        .into_iter()
        .filter(|s| (plan.all || s.info.hv_made) && s.info.policy == plan.policy)
        .collect();
    let times: Vec<i64> = candidates.iter().map(|s| s.info.created).collect();
    let verdicts = retention::judge(&times, &plan.keep);
    let mut pruned = Pruned {
        snapshots: Vec::new(),
        removed: Vec::new(),
        dry_run: plan.dry_run.then_some(true),
    };
    let mut failed = Vec::new();
    for (s, verdict) in candidates.iter().zip(verdicts) {
        pruned.snapshots.push(Judged::new(&s.info, verdict));
        match verdict {
            Some(_) => {}
            None if plan.dry_run => pruned.removed.push(s.info.name.clone()),
            None => match runner::point_of_no_return().and_then(|()| {
                s.handle
                    .delete(0)
                    .map_err(|e| Error::new(Code::Libvirt, e.message()))
            }) {
                Ok(()) => pruned.removed.push(s.info.name.clone()),
                Err(e) => failed.push(format!("'{}': {}", s.info.name, e.message)),
            },
        }
    }
    if !failed.is_empty() {
        return Err(Error::new(
            Code::Libvirt,
            format!(
                "removed {} snapshot(s), but could not remove {}",
                pruned.removed.len(),
                failed.join("; ")
            ),
        )
        .with_done(&pruned));
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshots::example;

    #[test]
    fn prune_items_have_the_shape_hv_backup_prune_records_have() {
        let item = |verdict| serde_json::to_string(&Judged::new(&example(), verdict)).unwrap();
        assert_eq!(
            item(Some("keep-daily")),
            r#"{"snapshot":"pre","created_at":"2026-11-21T22:00:05Z","kept":true,"keep_reason":"keep-daily"}"#
        );
        assert_eq!(
            item(None),
            r#"{"snapshot":"pre","created_at":"2026-11-21T22:00:05Z","kept":false,"keep_reason":null}"#
        );
    }

    /// Every field at once: a prune of which a deletion failed keeps, in
    /// its failed record, what it judged and removed (as prune_vm makes
    /// it). The table in docs/snapshots.md names them all, in this order.
    #[test]
    fn the_record_is_the_documented_one() {
        let pruned = Pruned {
            snapshots: vec![Judged::new(&example(), None)],
            removed: vec!["pre".into()],
            dry_run: Some(true),
        };
        let err = Error::new(Code::Libvirt, "x").with_done(&pruned);
        let record = hv_common::targets::failure_record(
            &hv_common::targets::VmRef::named("web1", "u"),
            Some("prune"),
            &err,
        );
        hv_testbench::assert_documented(&record, "snapshots.md", "### prune records");
    }
}
