//! `hv-backup prune`: a retention policy applied per VM, with the rules
//! hv-snap prune uses (Proxmox semantics), so backups and snapshots are
//! kept alike and reported alike (docs/records.md, Prune records); a
//! protected backup is never touched. Removing a backup is one rename, so
//! a killed prune leaves every backup whole or gone; the chunks it frees
//! go in the gc that follows. The repository lock is held alone: a backup
//! running at the same time could reference a chunk gc is deleting.

use crate::repo::{LockKind, Repo};
use crate::{matches_vm, BackupHead};
use hv_common::cli::{self, Status};
use hv_common::output::{col, to_record, Column, Format, Printer, Show};
use hv_common::retention::{self, Keep, Verdict};
use hv_common::{backup_index, Error, Exit, Result};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// What `prune` is asked to keep, and whether to delete.
#[derive(Debug)]
pub struct Plan {
    /// The repository directory.
    pub repo: PathBuf,
    /// How long to wait for the repository lock.
    pub lock_wait: Duration,
    /// Only backups of these VMs (name or UUID); none: every VM.
    pub vms: Vec<String>,
    /// The `--keep-*` rules.
    pub keep: Keep,
    /// Report what would go, delete nothing.
    pub dry_run: bool,
    /// Collect the chunks no backup references afterwards.
    pub gc: bool,
    /// The output format asked for (`None`: by what stdout is).
    pub format: Option<Format>,
}

const PRUNE_COLUMNS: &[Column] = &[
    col("ID", "id", Show::Plain),
    col("NAME", "name", Show::Plain),
    col("CREATED", "created_at", Show::Plain),
    col("KEPT", "kept", Show::Plain),
    col("REASON", "keep_reason", Show::Plain),
];

/// What prune decided about one backup, in the shape of each item of
/// hv-snap prune's `snapshots` (docs/records.md, Prune records).
#[derive(Debug, Serialize)]
struct PruneItem<'a> {
    /// Which backup, of which VM; `ok` is false when it could not be
    /// deleted, or its index cannot be read.
    #[serde(flatten)]
    head: BackupHead<'a>,
    /// Whether the backup stays.
    kept: bool,
    /// The rule that kept it: `keep-last` … `keep-yearly`, `protected`, or
    /// `damaged` for a backup whose index cannot be read (its record fails);
    /// null when it goes.
    keep_reason: Verdict,
    /// Whether this was a dry run, where nothing is deleted; absent for a
    /// damaged backup.
    #[serde(skip_serializing_if = "Option::is_none")]
    dry_run: Option<bool>,
    /// Why the backup could not be deleted, or its index read; absent on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a Error>,
}

pub fn prune(plan: &Plan) -> Result<Exit> {
    if plan.keep.is_empty() {
        return Err(Error::usage(
            "no --keep-* rule given: prune would keep everything; e.g. --keep-daily 7 --keep-weekly 4",
        ));
    }
    let repo = Repo::open(&plan.repo)?;
    let _lock = repo.lock(LockKind::Exclusive, plan.lock_wait)?;
    let listing = repo.list_all()?;
    let chosen = listing.backups.into_iter();
    let by_vm = backup_index::by_vm(chosen.filter(|b| matches_vm(&plan.vms, &b.name, &b.uuid)));
    let mut printer = Printer::stdout(plan.format, PRUNE_COLUMNS);
    let mut status = Status::default();
    // A backup whose index is damaged cannot be judged: it is kept, and
    // fails, so the timer that prunes says the repository needs a person.
    for (id, e) in &listing.damaged {
        status.failed(e);
        printer.emit(to_record(&PruneItem {
            head: BackupHead::unread(id, "prune"),
            kept: true,
            keep_reason: Some("damaged"),
            dry_run: None,
            error: Some(e),
        }))?;
    }
    for backups in by_vm.values() {
        for (b, reason) in backups.iter().zip(verdicts(backups, &plan.keep)) {
            let removed = match reason {
                None if !plan.dry_run => repo.remove_backup(&b.id),
                _ => Ok(()),
            };
            let error = removed.err();
            if let Some(e) = &error {
                status.failed(e);
            }
            printer.emit(to_record(&PruneItem {
                head: BackupHead::of(b, "prune", error.is_none()),
                kept: reason.is_some(),
                keep_reason: reason,
                dry_run: Some(plan.dry_run),
                error: error.as_ref(),
            }))?;
        }
    }
    printer.finish()?;
    if plan.gc && !plan.dry_run {
        let (chunks, bytes) = repo.gc(false)?;
        cli::warn(format!(
            "gc: deleted {chunks} unreferenced chunks, {} freed",
            hv_common::output::human_bytes(bytes)
        ));
    }
    Ok(status.exit())
}

/// Why each backup is kept, or `None` when it goes. As in Proxmox Backup
/// Server, a protected backup is kept outside the rules: it takes no
/// `--keep-*` slot and covers no period, so the rules keep as many other
/// backups as they would without it.
fn verdicts(backups: &[backup_index::Index], keep: &Keep) -> Vec<retention::Verdict> {
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
    use serde_json::json;

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

    /// Every field at once (only a damaged backup's record has no
    /// `dry_run`, and only a failed one an `error`): the table in
    /// docs/backups.md names them all, in this order.
    #[test]
    fn the_record_is_the_documented_one() {
        let error = Error::new(hv_common::Code::Io, "x");
        let record = PruneItem {
            head: BackupHead::example("prune"),
            kept: true,
            keep_reason: Some("keep-daily"),
            dry_run: Some(false),
            error: Some(&error),
        };
        hv_testbench::assert_documented(
            &hv_common::output::to_record(&record),
            "backups.md",
            "#### prune records",
        );
    }
}
