//! `hv-backup gc`: neither a prune nor a killed run frees space by itself;
//! gc deletes the chunks no backup references and what killed runs left in
//! `tmp/`. A backup whose index is damaged keeps its chunks (its chunk list
//! still names them) so it can be repaired, and the record names it. The
//! repository lock is held alone: a backup running at the same time could
//! reference a chunk gc is deleting.

use crate::repo::{LockKind, Repo};
use hv_common::cli;
use hv_common::output::{col, to_record, Column, Format, Printer, Show};
use hv_common::{Exit, Result};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// What `gc` is asked to do.
#[derive(Debug)]
pub struct Plan {
    /// The repository directory.
    pub repo: PathBuf,
    /// How long to wait for the repository lock.
    pub lock_wait: Duration,
    /// Count what would be deleted, delete nothing.
    pub dry_run: bool,
    /// The output format asked for (`None`: by what stdout is).
    pub format: Option<Format>,
}

const GC_COLUMNS: &[Column] = &[
    col("REPOSITORY", "repository", Show::Plain),
    col("CHUNKS", "chunks_removed", Show::Plain),
    col("FREED", "bytes_freed", Show::Bytes),
];

/// What gc did to the repository (with --dry-run, would do).
#[derive(Debug, Serialize)]
struct Collected {
    /// The repository directory.
    repository: String,
    /// Always `gc`.
    action: &'static str,
    /// Always true: a failure is an error on stderr, not a record.
    ok: bool,
    /// How many unreferenced chunks were deleted (would be, in a dry run).
    chunks_removed: u64,
    /// The bytes their files took, freed (would be, in a dry run).
    bytes_freed: u64,
    /// Ids of backups whose index cannot be read: their chunks are kept,
    /// so they can be repaired.
    damaged_backups: Vec<String>,
    /// Whether this was a dry run, where nothing is deleted.
    dry_run: bool,
}

pub fn gc(plan: &Plan) -> Result<Exit> {
    let repo = Repo::open(&plan.repo)?;
    let _lock = repo.lock(LockKind::Exclusive, plan.lock_wait)?;
    let (chunks, bytes) = repo.gc(plan.dry_run)?;
    let damaged: Vec<String> = repo
        .list_all()?
        .damaged
        .into_iter()
        .map(|(id, e)| {
            cli::warn(format!("{e} (its chunks are kept)"));
            id
        })
        .collect();
    let mut printer = Printer::stdout(plan.format, GC_COLUMNS);
    printer.emit(to_record(&Collected {
        repository: repo.root.display().to_string(),
        action: "gc",
        ok: true,
        chunks_removed: chunks,
        bytes_freed: bytes,
        damaged_backups: damaged,
        dry_run: plan.dry_run,
    }))?;
    printer.finish()?;
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_is_the_documented_one() {
        let record = Collected {
            repository: "/srv/backup".into(),
            action: "gc",
            ok: true,
            chunks_removed: 1,
            bytes_freed: 1,
            damaged_backups: Vec::new(),
            dry_run: false,
        };
        hv_testbench::assert_documented(
            &hv_common::output::to_record(&record),
            "backups.md",
            "#### gc records",
        );
    }
}
