//! `hv-backup prune` and `gc`. Prune judges each VM's backups separately
//! with the shared retention rules (Proxmox semantics) and never touches a
//! protected backup; removing a backup is one rename, so a killed prune
//! leaves every backup whole or gone. gc then deletes the chunks nothing
//! references. Both hold the repository lock alone: a backup running at
//! the same time could otherwise reference a chunk gc is deleting.

use crate::repo::{LockKind, Repo};
use crate::{matches_vm, obj, GcArgs, PruneArgs};
use hv_common::cli::{self, Status};
use hv_common::output::{col, Column, Printer, Show};
use hv_common::{backup_index, retention};
use hv_common::{Error, Exit, Result};
use serde_json::json;
use std::time::Duration;

const PRUNE_COLUMNS: &[Column] = &[
    col("ID", "id", Show::Plain),
    col("NAME", "name", Show::Plain),
    col("TIME", "time", Show::Plain),
    col("KEPT", "kept", Show::Plain),
    col("REASON", "keep_reason", Show::Plain),
];

pub fn prune(a: PruneArgs) -> Result<Exit> {
    if a.keep.is_empty() {
        return Err(Error::usage(
            "no --keep-* rule given: prune would keep everything; e.g. --keep-daily 7 --keep-weekly 4",
        ));
    }
    let repo = Repo::open(&a.repo.repo)?;
    let _lock = repo.lock(LockKind::Exclusive, Duration::from_secs(a.repo.lock_wait))?;
    let chosen = repo.list()?.into_iter();
    let by_vm = backup_index::by_vm(chosen.filter(|b| matches_vm(&a.vm, &b.name, &b.uuid)));
    let mut printer = Printer::stdout(a.output.format, PRUNE_COLUMNS);
    let mut status = Status::default();
    for backups in by_vm.values() {
        let times: Vec<i64> = backups.iter().map(|b| b.time_unix).collect();
        let verdicts = retention::judge(&times, &a.keep);
        for (b, verdict) in backups.iter().zip(verdicts) {
            let reason = if b.protected {
                Some("protected")
            } else {
                verdict
            };
            let mut r = obj(json!({
                "name": b.name,
                "uuid": b.uuid,
                "action": "prune",
                "ok": true,
                "id": b.id,
                "time": b.time,
                "kept": reason.is_some(),
                "keep_reason": reason,
                "dry_run": a.dry_run,
            }));
            if reason.is_none() && !a.dry_run {
                if let Err(e) = repo.remove_backup(&b.id) {
                    status.failed(&e);
                    r.insert("ok".into(), false.into());
                    r.insert("error".into(), e.to_json());
                }
            }
            printer.emit(r)?;
        }
    }
    printer.finish()?;
    if !a.no_gc && !a.dry_run {
        let (chunks, bytes) = repo.gc(false)?;
        cli::warn(format!(
            "gc: deleted {chunks} unreferenced chunks, {} freed",
            hv_common::output::human_bytes(bytes)
        ));
    }
    Ok(status.exit())
}

const GC_COLUMNS: &[Column] = &[
    col("REPOSITORY", "repository", Show::Plain),
    col("CHUNKS", "chunks_removed", Show::Plain),
    col("FREED", "bytes_freed", Show::Bytes),
];

pub fn gc(a: GcArgs) -> Result<Exit> {
    let repo = Repo::open(&a.repo.repo)?;
    let _lock = repo.lock(LockKind::Exclusive, Duration::from_secs(a.repo.lock_wait))?;
    let (chunks, bytes) = repo.gc(a.dry_run)?;
    let mut printer = Printer::stdout(a.output.format, GC_COLUMNS);
    printer.emit(obj(json!({
        "repository": repo.root.display().to_string(),
        "action": "gc",
        "ok": true,
        "chunks_removed": chunks,
        "bytes_freed": bytes,
        "dry_run": a.dry_run,
    })))?;
    printer.finish()?;
    Ok(Exit::Ok)
}
