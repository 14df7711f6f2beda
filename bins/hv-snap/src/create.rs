//! hv-snap create. What a reader must know before changing it: the whole
//! batch shares one snapshot name; an internal snapshot needs qcow2 disks,
//! and one of a running VM holds its memory (libvirt requires it), while
//! `--disk-only` puts an overlay file beside each disk and does not pause
//! the VM; libvirt takes a snapshot atomically across disks. hv's marker
//! goes into the domain's metadata just before the snapshot is taken and
//! comes out right after, so the copy of the definition stored in the
//! snapshot says hv made it — that is what prune goes by.

use crate::columns::ACTION_COLUMNS;
use crate::errors::{libvirt, needing_snapshot};
use crate::snapshots::{self, Snapshot};
use hv_common::bulk::{self, Action};
use hv_common::cli::{self, ActionArgs};
use hv_common::domain::{self as domxml, xml_escape, Disk};
use hv_common::lifecycle;
use hv_common::snapshot;
use hv_common::{runner, Code, Error, Exit, Result};
use serde::Serialize;
use std::time::{Duration, Instant};
use virt::domain::Domain;

/// What `hv-snap create` was asked to do; every VM gets the same.
#[derive(Debug, Clone)]
pub struct CreatePlan {
    /// VMs named as arguments; none: read them from stdin.
    pub vms: Vec<String>,
    /// The snapshot's name, one for the whole batch.
    pub name: String,
    /// A note stored with the snapshot.
    pub description: Option<String>,
    /// External snapshots: an overlay file beside each disk, no pause.
    pub disk_only: bool,
    /// Fail a VM that is not running, since it has no memory to save.
    pub memory: bool,
    /// Freeze the guest's filesystems through its agent (also set when
    /// `require_quiesce` is).
    pub quiesce: bool,
    /// A guest agent that does not answer fails the VM, not just a warning.
    pub require_quiesce: bool,
    /// How long each VM may take.
    pub timeout: Duration,
    /// Say what would be taken, take nothing.
    pub dry_run: bool,
    /// The schedule policy taking it (`hv-snap schedule`), recorded in
    /// hv's marker.
    pub policy: Option<String>,
}

/// What create reports of one VM, after `name`, `uuid`, `action` and `ok`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Created {
    Taken(Taken),
    WouldTake(WouldTake),
}

/// The snapshot taken.
#[derive(Debug, Serialize)]
pub struct Taken {
    /// The new snapshot, with the fields `hv-snap ls` lists it with.
    #[serde(flatten)]
    pub snapshot: Snapshot,
    /// Whether the guest's filesystems were frozen while it was taken.
    pub quiesced: bool,
    /// How long this VM took, in milliseconds.
    pub elapsed_ms: u64,
}

/// A dry run: the snapshot a real run would take.
#[derive(Debug, Serialize)]
pub struct WouldTake {
    /// Its name.
    pub snapshot: String,
    /// `internal` or `external`.
    pub kind: &'static str,
    /// Whether it would hold the VM's memory (a running VM's internal
    /// snapshot).
    pub memory: bool,
    /// `unchecked` where a real run would ask the guest agent to freeze
    /// the filesystems: a dry run does not ask it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quiesce: Option<&'static str>,
    /// Always true.
    pub dry_run: bool,
}

/// `args`: only for the bulk driver (connection, `-j`, output format).
pub fn run(plan: CreatePlan, args: &ActionArgs) -> Result<Exit> {
    if plan.name.is_empty() || plan.name.contains('/') {
        return Err(Error::usage(format!(
            "invalid snapshot name '{}': it must be non-empty and without '/'",
            plan.name
        )));
    }
    let inputs = bulk::inputs(&plan.vms, "hv-ls --tag prod | hv-snap create")?;
    let action = Action {
        name: "snapshot",
        columns: &ACTION_COLUMNS,
        item_timeout: plan.timeout,
    };
    bulk::act(inputs, args, action, move |_, dom, _| {
        snapshot_vm(dom, &plan)
    })
}

pub fn snapshot_vm(dom: &Domain, plan: &CreatePlan) -> Result<Created> {
    let began = Instant::now();
    let running = lifecycle::state(dom)?.state.is_active();
    if plan.memory && !running {
        return Err(Error::new(
            Code::InvalidState,
            "it is not running, so it has no memory to snapshot; drop --memory",
        ));
    }
    let xml = dom.xml_desc(0).map_err(libvirt("cannot read its XML"))?;
    let disks: Vec<Disk> = domxml::parse(&xml)?.disks;
    if !plan.disk_only {
        if let Some(d) = disks
            .iter()
            .find(|d| d.device == "disk" && d.format.as_deref() != Some("qcow2"))
        {
            return Err(Error::new(
                Code::Unsupported,
                format!(
                    "disk {} is {}: internal snapshots need qcow2; use --disk-only",
                    d.target,
                    d.format.as_deref().unwrap_or("of unknown format")
                ),
            ));
        }
    }
    // A dry run's connection is read-only, and libvirt talks to the guest
    // agent only over a read-write one.
    let quiesced = !plan.dry_run && quiesce(dom, plan, running)?;
    let snapshot_xml = snapshot_xml(plan, &disks)?;
    if plan.dry_run {
        return Ok(Created::WouldTake(WouldTake {
            snapshot: plan.name.clone(),
            kind: snapshots::kind(plan.disk_only),
            memory: running && !plan.disk_only,
            quiesce: (plan.quiesce && running && plan.disk_only).then_some("unchecked"),
            dry_run: true,
        }));
    }
    let mut flags = virt::sys::VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC;
    if plan.disk_only {
        flags |= virt::sys::VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY;
    }
    if quiesced {
        flags |= virt::sys::VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE;
    }
    // Given up on at its timeout, it must not take the snapshot after all.
    runner::point_of_no_return()?;
    let snap = with_marker(dom, &plan.name, plan.policy.as_deref(), || {
        dom.create_snapshot_xml(&snapshot_xml, flags)
    })
    .map_err(needing_snapshot(
        "libvirt could not take the snapshot (nothing was kept)",
    ))?;
    let info = hv_common::snapshot::parse(
        &snap
            .xml_desc(0)
            .map_err(libvirt("cannot read the new snapshot"))?,
    )?;
    if !info.hv_made {
        cli::warn(format!(
            "{}: snapshot {} is not marked as made by hv (marking needs libvirt's domain write and save permissions, which the hv-operator role lacks): `hv-snap prune` leaves it alone unless --all",
            dom.name().unwrap_or_default(),
            plan.name
        ));
    }
    Ok(Created::Taken(Taken {
        snapshot: Snapshot::new(&info, true),
        quiesced,
        elapsed_ms: began.elapsed().as_millis() as u64,
    }))
}

/// Whether to ask for a quiesced snapshot. Only a running VM's disk-only
/// snapshot can be quiesced; an absent agent is a warning unless required.
fn quiesce(dom: &Domain, plan: &CreatePlan, running: bool) -> Result<bool> {
    if !plan.quiesce {
        return Ok(false);
    }
    let name = dom.name().unwrap_or_default();
    if !running || !plan.disk_only {
        cli::warn(format!("VM '{name}': quiescing applies to --disk-only snapshots of running VMs; taking it without"));
        return Ok(false);
    }
    if lifecycle::agent_answers(dom, Duration::from_secs(3)) {
        return Ok(true);
    }
    if plan.require_quiesce {
        return Err(Error::new(Code::Timeout, "its guest agent does not answer, so its filesystems cannot be frozen (--require-quiesce)"));
    }
    cli::warn(format!("VM '{name}': its guest agent does not answer; taking the snapshot without freezing filesystems"));
    Ok(false)
}

/// The overlay file of an external snapshot: beside the disk, named after it
/// and the snapshot, with anything but [A-Za-z0-9._-] in the name replaced.
fn overlay_path(disk: &str, snapshot: &str) -> Result<String> {
    let path = std::path::Path::new(disk);
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("disk");
    let dir = path
        .parent()
        .ok_or_else(|| Error::new(Code::Unsupported, format!("disk {disk} has no directory")))?;
    let safe: String = snapshot
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok(dir
        .join(format!("{stem}.{safe}.qcow2"))
        .display()
        .to_string())
}

fn snapshot_xml(plan: &CreatePlan, disks: &[Disk]) -> Result<String> {
    let mut xml = format!("<domainsnapshot><name>{}</name>", xml_escape(&plan.name));
    if let Some(d) = &plan.description {
        xml.push_str(&format!("<description>{}</description>", xml_escape(d)));
    }
    xml.push_str("<disks>");
    for d in disks {
        let spec = match (d.device.as_str(), plan.disk_only, &d.source) {
            ("disk", true, Some(src)) if d.kind == "file" => {
                format!(
                    "snapshot='external'><source file='{}'/></disk>",
                    xml_escape(&overlay_path(src, &plan.name)?)
                )
            }
            ("disk", true, _) => {
                return Err(Error::new(
                    Code::Unsupported,
                    format!(
                        "disk {} is not a file: hv makes external snapshots of file disks only",
                        d.target
                    ),
                ))
            }
            ("disk", false, _) => "snapshot='internal'/>".to_owned(),
            _ => "snapshot='no'/>".to_owned(),
        };
        xml.push_str(&format!("<disk name='{}' {spec}", xml_escape(&d.target)));
    }
    xml.push_str("</disks></domainsnapshot>");
    Ok(xml)
}

/// Runs `take` with hv's marker in the domain's metadata, so the copy of the
/// definition stored in the snapshot records that hv made it; the marker is
/// removed again whatever happens.
fn with_marker<T>(
    dom: &Domain,
    name: &str,
    policy: Option<&str>,
    take: impl FnOnce() -> std::result::Result<T, virt::error::Error>,
) -> std::result::Result<T, virt::error::Error> {
    let mut flags = 0;
    if dom.is_active().unwrap_or(false) {
        flags |= virt::sys::VIR_DOMAIN_AFFECT_LIVE;
    }
    if dom.is_persistent().unwrap_or(false) {
        flags |= virt::sys::VIR_DOMAIN_AFFECT_CONFIG;
    }
    let element = virt::sys::VIR_DOMAIN_METADATA_ELEMENT as i32;
    let ns = Some(snapshot::MADE_NS);
    let marked = dom.set_metadata(
        element,
        Some(&snapshot::marker(name, policy)),
        Some(snapshot::MADE_PREFIX),
        ns,
        flags,
    );
    let result = take();
    if marked.is_ok() {
        let _ = dom.set_metadata(element, None, Some(snapshot::MADE_PREFIX), ns, flags);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use hv_common::output;

    #[test]
    fn records_keep_their_field_order() {
        let taken = Created::Taken(Taken {
            snapshot: Snapshot::new(&snapshots::example(), true),
            quiesced: false,
            elapsed_ms: 7,
        });
        let keys: Vec<String> = output::to_record(&taken).keys().cloned().collect();
        // A snapshot's own fields (in their tested order), then create's.
        let mut expected: Vec<String> =
            output::to_record(&Snapshot::new(&snapshots::example(), true))
                .keys()
                .cloned()
                .collect();
        expected.extend(["quiesced".to_owned(), "elapsed_ms".to_owned()]);
        assert_eq!(keys, expected);
        // The whole record is the one docs/snapshots.md shows.
        let vm = hv_common::targets::VmRef::named("web1", "u");
        hv_testbench::assert_documented(
            &hv_common::targets::success_record(&vm, "snapshot", &taken),
            "snapshots.md",
            "### create records",
        );
        // Compared as text: the order of the fields is part of the contract.
        let dry = |quiesce| {
            serde_json::to_string(&Created::WouldTake(WouldTake {
                snapshot: "pre".into(),
                kind: "external",
                memory: false,
                quiesce,
                dry_run: true,
            }))
            .unwrap()
        };
        assert_eq!(
            dry(None),
            r#"{"snapshot":"pre","kind":"external","memory":false,"dry_run":true}"#
        );
        assert_eq!(
            dry(Some("unchecked")),
            r#"{"snapshot":"pre","kind":"external","memory":false,"quiesce":"unchecked","dry_run":true}"#
        );
    }
}
