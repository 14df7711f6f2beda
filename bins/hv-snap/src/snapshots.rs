//! A VM's snapshots as ls, create and prune all read them. Two things a
//! reader must know: whether hv made a snapshot is read from the snapshot's
//! own XML (hv_common::snapshot), and the list comes oldest first, which
//! prune's retention rules depend on. libvirt's creationTime has
//! one-second resolution, so snapshots taken in the same second are put
//! parent before child.

use crate::errors::libvirt;
use hv_common::snapshot::{self, Info};
use hv_common::{time, Result};
use serde::Serialize;
use std::collections::HashMap;
use virt::domain::Domain;
use virt::domain_snapshot::DomainSnapshot;

/// The fields that describe one snapshot, after the VM's `name` and `uuid`
/// (docs/snapshots.md): an `hv-snap ls` record, and what `hv-snap create`
/// reports of the snapshot it took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// The snapshot's name, unique per VM; revert and rm read this field.
    pub snapshot: String,
    /// When it was taken, RFC 3339 UTC.
    pub created_at: String,
    /// The VM's state when it was taken: `running`, `shutoff`,
    /// `disk-snapshot`, …
    pub state: String,
    /// `internal` (inside the qcow2 images) or `external` (overlay files).
    pub kind: &'static str,
    /// Whether it holds the VM's memory.
    pub memory: bool,
    /// The snapshot it was taken on top of; null for the first.
    pub parent: Option<String>,
    /// Whether it is the VM's current snapshot.
    pub current: bool,
    /// The note given with `--description`; null without one.
    pub description: Option<String>,
    /// Whether hv took it; prune leaves the others alone unless `--all`.
    pub hv_made: bool,
    /// The `hv-snap schedule` policy that took it, which alone prunes it;
    /// null for any other snapshot.
    pub policy: Option<String>,
}

impl Snapshot {
    pub fn new(info: &Info, current: bool) -> Snapshot {
        Snapshot {
            snapshot: info.name.clone(),
            created_at: time::rfc3339(info.created),
            state: info.state.clone(),
            kind: kind(info.external),
            memory: info.memory,
            parent: info.parent.clone(),
            current,
            description: info.description.clone(),
            hv_made: info.hv_made,
            policy: info.policy.clone(),
        }
    }
}

/// The `kind` field: external snapshots are overlay files beside the disks.
pub fn kind(external: bool) -> &'static str {
    if external {
        "external"
    } else {
        "internal"
    }
}

/// One snapshot of a VM, read and still in hand to act on.
pub struct Listed {
    pub info: Info,
    /// Whether it is the VM's current snapshot.
    pub current: bool,
    pub handle: DomainSnapshot,
}

/// Every snapshot of `dom`, oldest first.
pub fn snapshots_of(dom: &Domain) -> Result<Vec<Listed>> {
    let mut all = Vec::new();
    for handle in dom
        .list_all_snapshots(0)
        .map_err(libvirt("cannot list its snapshots"))?
    {
        let xml = handle
            .xml_desc(0)
            .map_err(libvirt("cannot read a snapshot"))?;
        let info = snapshot::parse(&xml)?;
        let current = handle.is_current(0).unwrap_or(false);
        all.push(Listed {
            info,
            current,
            handle,
        });
    }
    let parents: HashMap<String, Option<String>> = all
        .iter()
        .map(|s| (s.info.name.clone(), s.info.parent.clone()))
        .collect();
    // How many ancestors a snapshot has; bounded, in case libvirt ever
    // reports a cycle.
    let depth = |name: &str| {
        let mut d = 0;
        let mut at = parents.get(name).cloned().flatten();
        while let Some(p) = at {
            d += 1;
            at = if d > parents.len() {
                None
            } else {
                parents.get(&p).cloned().flatten()
            };
        }
        d
    };
    all.sort_by_cached_key(|s| (s.info.created, depth(&s.info.name)));
    Ok(all)
}

/// A parsed snapshot, for the tests of the modules that build records from one.
#[cfg(test)]
pub fn example() -> Info {
    Info {
        name: "pre".into(),
        description: None,
        state: "shutoff".into(),
        parent: None,
        created: 1_795_298_405,
        external: false,
        memory: false,
        hv_made: true,
        policy: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hv_common::output;

    #[test]
    fn snapshot_records_carry_created_at_in_rfc3339_utc() {
        let r = output::to_record(&Snapshot::new(&example(), true));
        assert_eq!(r["created_at"], "2026-11-21T22:00:05Z");
        assert!(!r.contains_key("created"), "renamed, not duplicated");
        assert_eq!(r["parent"], serde_json::Value::Null);
        assert_eq!(r["description"], serde_json::Value::Null);
        assert_eq!(r["kind"], "internal");
    }
}
