//! hv-snap ls. It prints one record per snapshot, not per VM, so jq can
//! pick snapshots and pipe them to revert or rm, which read `snapshot`.
//! It only reads, over the read-only connection `run` opens, so an
//! unprivileged monitoring user can list; a VM whose snapshots cannot be
//! read is one failed record, and the others are still listed.

use crate::columns::LS_COLUMNS;
use crate::snapshots::{snapshots_of, Snapshot};
use hv_common::cli::Status;
use hv_common::output::{self, Format, Printer};
use hv_common::targets::{self, VmRef};
use hv_common::{Exit, Result};
use serde::Serialize;
use virt::connect::Connect;

/// What `hv-snap ls` was asked to list.
#[derive(Debug, Clone)]
pub struct LsOptions {
    /// VMs named as arguments; none: records from stdin, else every VM.
    pub vms: Vec<String>,
    /// Only snapshots hv made.
    pub hv_only: bool,
    /// The format asked for; none: a table at a terminal, else JSON lines.
    pub format: Option<Format>,
}

/// One line of `hv-snap ls` (docs/snapshots.md).
#[derive(Debug, Serialize)]
pub struct SnapshotRecord<'a> {
    /// The VM's name.
    pub name: &'a str,
    /// The VM's UUID.
    pub uuid: &'a str,
    /// The snapshot.
    #[serde(flatten)]
    pub snapshot: Snapshot,
}

pub fn run(conn: &Connect, opts: &LsOptions) -> Result<Exit> {
    let mut printer = Printer::stdout(opts.format, &LS_COLUMNS);
    let mut status = Status::default();
    for dom in targets::select(conn, &opts.vms, &mut printer, &mut status)? {
        let (name, uuid) = (
            dom.name().unwrap_or_default(),
            dom.uuid_string().unwrap_or_default(),
        );
        match snapshots_of(&dom) {
            Ok(list) => {
                for s in list.into_iter().filter(|s| s.info.hv_made || !opts.hv_only) {
                    printer.emit(output::to_record(&SnapshotRecord {
                        name: &name,
                        uuid: &uuid,
                        snapshot: Snapshot::new(&s.info, s.current),
                    }))?;
                }
            }
            Err(e) => {
                status.failed(&e);
                let vm = VmRef {
                    name: Some(name),
                    uuid: Some(uuid),
                    host: None,
                    line: None,
                    record: None,
                };
                printer.emit(targets::failure_record(&vm, Some("ls"), &e))?;
            }
        }
    }
    printer.finish()?;
    Ok(status.exit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshots::example;

    #[test]
    fn a_snapshot_record_names_its_vm_first() {
        let r = SnapshotRecord {
            name: "web1",
            uuid: "u",
            snapshot: Snapshot::new(&example(), false),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"name":"web1","uuid":"u","snapshot":"pre","created_at":"2026-11-21T22:00:05Z","state":"shutoff","kind":"internal","memory":false,"parent":null,"current":false,"description":null,"hv_made":true}"#
        );
        // docs/snapshots.md names exactly these fields, in this order.
        let fields: Vec<String> = hv_common::output::to_record(&r).keys().cloned().collect();
        assert_eq!(
            fields,
            hv_testbench::documented_fields("snapshots.md", "## Snapshot records")
        );
    }
}
