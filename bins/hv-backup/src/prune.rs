//! `hv-backup prune` and `gc`. Prune judges each VM's backups separately
//! with the shared retention rules (Proxmox semantics) and never touches a
//! protected backup; removing a backup is one rename, so a killed prune
//! leaves every backup whole or gone. gc then deletes the chunks nothing
//! references. Both hold the repository lock alone: a backup running at
//! the same time could otherwise reference a chunk gc is deleting.

use crate::repo::{LockKind, Repo};
use crate::{created_at, matches_vm, obj, GcArgs, PruneArgs};
use hv_common::cli::{self, Status};
use hv_common::output::{col, Column, Printer, Show};
use hv_common::{backup_index, retention};
use hv_common::{Error, Exit, Result};
use serde_json::json;

const PRUNE_COLUMNS: &[Column] = &[
    col("ID", "id", Show::Plain),
    col("NAME", "name", Show::Plain),
    col("CREATED", "created_at", Show::Plain),
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
    let _lock = repo.lock(LockKind::Exclusive, a.repo.lock_wait)?;
    let listing = backup_index::list_all(&repo.root)?;
    let chosen = listing.backups.into_iter();
    let by_vm = backup_index::by_vm(chosen.filter(|b| matches_vm(&a.vm, &b.name, &b.uuid)));
    let mut printer = Printer::stdout(a.output.format(), PRUNE_COLUMNS);
    let mut status = Status::default();
    // A backup whose index is damaged cannot be judged: it is kept, and
    // fails, so the timer that prunes says the repository needs a person.
    for (id, e) in listing.damaged {
        status.failed(&e);
        printer.emit(obj(json!({
            "name": null, "uuid": null, "action": "prune", "ok": false, "id": id,
            "kept": true, "keep_reason": "damaged", "error": e.to_json(),
        })))?;
    }
    for backups in by_vm.values() {
        for (b, reason) in backups.iter().zip(verdicts(backups, &a.keep)) {
            let mut r = obj(json!({
                "name": b.name,
                "uuid": b.uuid,
                "action": "prune",
                "ok": true,
                "id": b.id,
                "created_at": created_at(b),
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
    let _lock = repo.lock(LockKind::Exclusive, a.repo.lock_wait)?;
    let (chunks, bytes) = repo.gc(a.dry_run)?;
    let damaged: Vec<String> = backup_index::list_all(&repo.root)?
        .damaged
        .into_iter()
        .map(|(id, e)| {
            cli::warn(format!("{e} (its chunks are kept)"));
            id
        })
        .collect();
    let mut printer = Printer::stdout(a.output.format(), GC_COLUMNS);
    printer.emit(obj(json!({
        "repository": repo.root.display().to_string(),
        "action": "gc",
        "ok": true,
        "chunks_removed": chunks,
        "bytes_freed": bytes,
        "damaged_backups": damaged,
        "dry_run": a.dry_run,
    })))?;
    printer.finish()?;
    Ok(Exit::Ok)
}

/// Why each backup is kept, or `None` when it goes. As in Proxmox Backup
/// Server, a protected backup is kept outside the rules: it takes no
/// `--keep-*` slot and covers no period, so the rules keep as many other
/// backups as they would without it.
fn verdicts(backups: &[backup_index::Index], keep: &retention::Keep) -> Vec<retention::Verdict> {
    let unprotected: Vec<i64> = backups
        .iter()
        .filter(|b| !b.protected)
        .map(|b| b.time_unix)
        .collect();
    let mut judged = retention::judge(&unprotected, keep).into_iter();
    backups
        .iter()
        .map(|b| {
            if b.protected {
                Some("protected")
            } else {
                judged.next().flatten()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(day: i64, protected: bool) -> backup_index::Index {
        let t = 1_800_000_000 + day * 86_400;
        serde_json::from_value(json!({
            "format": "hv-backup", "version": 1, "id": format!("b{day}"), "name": "vm",
            "uuid": "u", "time": "", "time_unix": t, "time_unix_ms": t * 1000,
            "mode": "offline", "disks": [], "size_bytes": 0, "read_bytes": 0,
            "new_bytes": 0, "stored_bytes": 0, "referenced_bytes": 0, "chunks": 0,
            "elapsed_ms": 0, "protected": protected,
        }))
        .unwrap()
    }

    #[test]
    fn a_protected_backup_takes_no_keep_slot() {
        let backups = [backup(1, false), backup(2, false), backup(3, true)];
        let keep = retention::Keep {
            last: Some(2),
            ..retention::Keep::default()
        };
        assert_eq!(
            verdicts(&backups, &keep),
            vec![Some("keep-last"), Some("keep-last"), Some("protected")]
        );
        let daily = retention::Keep {
            daily: Some(1),
            ..retention::Keep::default()
        };
        let same_day = [backup(1, false), backup(1, true)];
        assert_eq!(
            verdicts(&same_day, &daily),
            vec![Some("keep-daily"), Some("protected")],
            "a protected backup covers no day"
        );
    }
}
