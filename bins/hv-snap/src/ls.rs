//! hv-snap ls. It prints one record per snapshot, not per VM, so jq can
//! pick snapshots and pipe them to revert or rm, which read `snapshot`.
//! It only reads, over read-only connections, so an unprivileged
//! monitoring user can list; a VM whose snapshots cannot be read is one
//! failed record, and the others are still listed. Over several hosts
//! each is read at once, and every record says its host.

use crate::columns::LS_COLUMNS;
use crate::snapshots::{snapshots_of, Snapshot};
use hv_common::across::{self, AtHost};
use hv_common::cli::Status;
use hv_common::connect::Access;
use hv_common::hosts::Scope;
use hv_common::output::{self, Format, Printer};
use hv_common::targets::{self, VmRef};
use hv_common::{Exit, Result};
use serde::Serialize;
use serde_json::{Map, Value};
use std::time::Duration;

/// What `hv-snap ls` was asked to list.
#[derive(Debug, Clone)]
pub struct LsOptions {
    /// VMs named as arguments; none: records from stdin, else every VM.
    pub vms: Vec<String>,
    /// Only snapshots hv made.
    pub hv_only: bool,
    /// Only these fields of each record (`--fields`); empty: all.
    pub fields: Vec<String>,
    /// The format asked for; none: a table at a terminal, else JSON lines.
    pub format: Option<Format>,
    /// The hosts to list (docs/hosts.md).
    pub scope: Scope,
    pub connect_timeout: Duration,
}

/// The fields of [`SnapshotRecord`], for `--fields`.
pub const FIELDS: &[&str] = &[
    "name",
    "uuid",
    "host",
    "snapshot",
    "created_at",
    "state",
    "kind",
    "memory",
    "parent",
    "current",
    "description",
    "hv_made",
    "policy",
];

/// One line of `hv-snap ls` (docs/snapshots.md).
#[derive(Debug, Serialize)]
pub struct SnapshotRecord<'a> {
    /// The VM's name.
    pub name: &'a str,
    /// The VM's UUID.
    pub uuid: &'a str,
    /// Its host, in a run that names hosts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<&'a str>,
    /// The snapshot.
    #[serde(flatten)]
    pub snapshot: Snapshot,
}

pub fn run(opts: &LsOptions) -> Result<Exit> {
    let mut printer = Printer::stdout(opts.format, &LS_COLUMNS).only(&opts.fields);
    let mut status = Status::default();
    across::each_host(
        &opts.scope,
        Access::ReadOnly,
        opts.connect_timeout,
        &opts.vms,
        &mut printer,
        &mut status,
        |at, status| Ok(list(at, opts.hv_only, status)),
    )?;
    printer.finish()?;
    Ok(status.exit())
}

/// One host's snapshots, VM by VM.
fn list(at: &AtHost, hv_only: bool, status: &mut Status) -> Vec<Map<String, Value>> {
    let mut out = Vec::new();
    for dom in &at.domains {
        let (name, uuid) = (
            dom.name().unwrap_or_default(),
            dom.uuid_string().unwrap_or_default(),
        );
        match snapshots_of(dom) {
            Ok(list) => {
                for s in list.into_iter().filter(|s| s.info.hv_made || !hv_only) {
                    out.push(output::to_record(&SnapshotRecord {
                        name: &name,
                        uuid: &uuid,
                        host: at.name(),
                        snapshot: Snapshot::new(&s.info, s.current),
                    }));
                }
            }
            Err(e) => {
                status.failed(&e);
                let vm = VmRef {
                    name: Some(name),
                    uuid: Some(uuid),
                    host: at.name().map(str::to_owned),
                    line: None,
                    record: None,
                };
                out.push(targets::failure_record(&vm, Some("ls"), &e));
            }
        }
    }
    out
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
            host: None,
            snapshot: Snapshot::new(&example(), false),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"name":"web1","uuid":"u","snapshot":"pre","created_at":"2026-11-21T22:00:05Z","state":"shutoff","kind":"internal","memory":false,"parent":null,"current":false,"description":null,"hv_made":true,"policy":null}"#
        );
        // docs/snapshots.md names exactly these fields, in this order
        // (with host, as when hosts are named).
        let r = SnapshotRecord {
            host: Some("h1"),
            ..r
        };
        let fields: Vec<String> = hv_common::output::to_record(&r).keys().cloned().collect();
        assert_eq!(
            fields,
            hv_testbench::documented_fields("snapshots.md", "## Snapshot records")
        );
        assert_eq!(fields, FIELDS, "--fields knows every field");
    }
}
