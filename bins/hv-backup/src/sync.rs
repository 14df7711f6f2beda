//! `hv-backup sync`: the second copy the 3-2-1 rule asks for, made
//! without the identity. Backups move as the files they are (sealed
//! chunks, index, chunk list, sealed manifest), so the host that syncs
//! learns nothing it could not read already, and the destination must be
//! a replica: the same repository id, chunk-id key and recipients, which
//! syncing into an empty directory sets up.
//!
//! A backup reaches the destination the way `create` writes one: every
//! chunk it lists stored and synced first, its directory renamed into
//! `backups/` last. A killed sync therefore leaves whole backups or none,
//! and the chunks it did store are found there by the next run, which
//! sends only what is missing. Both repositories are held shared, as a
//! backup holds them, so a gc on either side waits.

use crate::format::{self, Index};
use crate::repo::{BackupFiles, LockKind, Repo, Sealed};
use crate::verify::{self, Target};
use crate::{crypt, prune, BackupHead};
use hv_common::cli::{self, Status};
use hv_common::output::{col, to_record, Column, Format, Printer, Show};
use hv_common::retention::Keep;
use hv_common::{Code, Error, Exit, Result};
use serde::Serialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What `sync` is asked to copy, and where.
#[derive(Debug)]
pub struct Plan {
    /// The repository backups come from.
    pub from: PathBuf,
    /// The repository they go to; absent or empty: made a replica of `from`.
    pub to: PathBuf,
    /// How long to wait for either repository's lock.
    pub lock_wait: Duration,
    /// Backup ids named on the command line; none: ids from piped records,
    /// else every backup.
    pub ids: Vec<String>,
    /// When every backup is synced: only those of these VMs (name or UUID).
    pub vms: Vec<String>,
    /// Check, at the destination, every chunk of each backup chosen, and
    /// send again what a backup it already had lacks there.
    pub verify: bool,
    /// Afterwards, apply these rules to the destination (`prune`).
    pub prune: Option<Keep>,
    /// Report what would be sent, write nothing.
    pub dry_run: bool,
    /// The output format asked for (`None`: by what stdout is).
    pub format: Option<Format>,
}

const SYNC_COLUMNS: &[Column] = &[
    col("ID", "id", Show::Plain),
    col("NAME", "name", Show::Plain),
    col("OK", "ok", Show::Plain),
    col("CHANGED", "changed", Show::Plain),
    col("CHUNKS", "chunks", Show::Plain),
    col("SENT", "chunks_sent", Show::Plain),
    col("BYTES SENT", "bytes_sent", Show::Bytes),
    col("ERROR", "error", Show::Plain),
];

/// What sync says about one backup (docs/backups.md).
#[derive(Debug, Serialize)]
struct Synced<'a> {
    /// Which backup, of which VM; `ok` says whether it is now (or, on a
    /// dry run, would be) complete at the destination.
    #[serde(flatten)]
    head: BackupHead<'a>,
    /// Whether the destination gained the backup (or, with `--verify`,
    /// chunks of one it had); false when it had it whole.
    changed: bool,
    /// How many chunks the backup references; absent when its index or
    /// chunk list cannot be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    chunks: Option<u64>,
    /// How many of them the destination lacked and got (a dry run: would get).
    chunks_sent: u64,
    /// The bytes written to the destination: chunk files and the backup's
    /// own three files.
    bytes_sent: u64,
    /// Whether every chunk of the backup was checked at the destination
    /// (`--verify`); absent without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    verified: Option<bool>,
    /// Present (true) on a dry run, where nothing is written.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    dry_run: bool,
    /// How long this backup took, in milliseconds.
    elapsed_ms: u64,
    /// Why the backup did not get there: damaged at the source (`corrupt`),
    /// a write that failed (`io_error`), a signal (`interrupted`).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a Error>,
}

/// The work done on one backup, kept when it fails part-way.
#[derive(Default)]
struct Sent {
    chunks: Option<u64>,
    chunks_sent: u64,
    bytes_sent: u64,
    changed: bool,
    verified: Option<bool>,
}

pub fn sync(plan: &Plan) -> Result<Exit> {
    // Ctrl-C and SIGTERM stop between chunks: what was stored stays for
    // the next run, and the backup being sent is not committed.
    let _ = cli::interrupt_flag();
    let from = Repo::open(&plan.from)?;
    let to = destination(plan, &from)?;
    let mut status = Status::default();
    let targets = verify::pick_ids(&from, &plan.ids, &plan.vms, &mut status)?;
    let _from_lock = from.lock(LockKind::Shared, plan.lock_wait)?;
    let _to_lock = match &to {
        Some(to) => Some(to.lock(LockKind::Shared, plan.lock_wait)?),
        None => None,
    };
    let mut printer = Printer::stdout(plan.format, SYNC_COLUMNS);
    let mut promised = HashSet::new();
    for target in oldest_first(&from, targets) {
        let index = match target {
            Picked::Failed(record) => {
                printer.emit(record)?;
                continue;
            }
            Picked::Unread(id, e) => {
                status.failed(&e);
                printer.emit(record(
                    BackupHead::unread(&id, "sync"),
                    &Sent::default(),
                    plan,
                    Duration::ZERO,
                    Some(&e),
                ))?;
                continue;
            }
            Picked::Backup(index) => index,
        };
        let start = Instant::now();
        let mut sent = Sent::default();
        let outcome = send(
            &from,
            to.as_ref(),
            &index,
            (plan.dry_run, plan.verify),
            &mut sent,
            &mut promised,
        )
        .and_then(|()| match &to {
            Some(to) if plan.verify && !plan.dry_run => {
                verify::check_chunks(to, &index)?;
                sent.verified = Some(true);
                Ok(())
            }
            _ => Ok(()),
        });
        if let Err(e) = &outcome {
            status.failed(e);
            if plan.verify && sent.verified.is_none() {
                sent.verified = Some(false);
            }
        }
        printer.emit(record(
            BackupHead::of(&index, "sync", outcome.is_ok()),
            &sent,
            plan,
            start.elapsed(),
            outcome.as_ref().err(),
        ))?;
        if cli::interrupted().is_some() {
            printer.finish()?;
            return Err(cli::interrupted_error(&format!(
                "sync of backup {}",
                index.id
            )));
        }
    }
    printer.finish()?;
    drop((_from_lock, _to_lock));
    let mut exit = status.exit();
    if let Some(keep) = &plan.prune {
        exit = exit.worst(prune::prune(&prune::Plan {
            repo: plan.to.clone(),
            lock_wait: plan.lock_wait,
            vms: plan.vms.clone(),
            keep: *keep,
            dry_run: plan.dry_run,
            gc: true,
            format: plan.format,
        })?);
    }
    Ok(exit)
}

fn record<'a>(
    head: BackupHead<'a>,
    sent: &Sent,
    plan: &Plan,
    elapsed: Duration,
    error: Option<&'a Error>,
) -> serde_json::Map<String, serde_json::Value> {
    to_record(&Synced {
        head,
        changed: sent.changed,
        chunks: sent.chunks,
        chunks_sent: sent.chunks_sent,
        bytes_sent: sent.bytes_sent,
        verified: sent.verified,
        dry_run: plan.dry_run,
        elapsed_ms: elapsed.as_millis() as u64,
        error,
    })
}

/// The destination repository: opened and checked to be a replica, or
/// made one. `None` on a dry run into a place that is not one yet: it
/// would get every backup.
fn destination(plan: &Plan, from: &Repo) -> Result<Option<Repo>> {
    if same_place(&plan.from, &plan.to) {
        return Err(Error::usage(format!(
            "--from and --to are the same repository ({}); give another directory as --to",
            plan.to.display()
        )));
    }
    if Repo::exists(&plan.to)? {
        let to = Repo::open(&plan.to)?;
        from.same_keys_as(&to)?;
        return Ok(Some(to));
    }
    if plan.dry_run {
        return Ok(None);
    }
    Repo::replicate(&plan.to, from).map(Some)
}

fn same_place(a: &Path, b: &Path) -> bool {
    if crate::s3::is_s3(a) || crate::s3::is_s3(b) {
        let url = |p: &Path| p.to_string_lossy().trim_end_matches('/').to_owned();
        return url(a) == url(b);
    }
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

enum Picked {
    Backup(Box<Index>),
    /// A backup whose index cannot be read: it fails, and is not sent.
    Unread(String, Error),
    Failed(serde_json::Map<String, serde_json::Value>),
}

/// The chosen backups, oldest first, so an interrupted sync leaves the
/// destination with a complete past rather than a recent gap.
fn oldest_first(from: &Repo, targets: Vec<Target>) -> Vec<Picked> {
    let mut picked: Vec<Picked> = targets
        .into_iter()
        .map(|t| match t {
            Target::Failed(r) => Picked::Failed(r),
            Target::Id(id) => match from.index(&id) {
                Ok(index) => Picked::Backup(Box::new(index)),
                Err(e) => Picked::Unread(id, e),
            },
        })
        .collect();
    // Failures first, in their order (the sort is stable), then by time.
    let key = |p: &Picked| match p {
        Picked::Backup(i) => Some((i.time_unix_ms, i.id.clone())),
        _ => None,
    };
    picked.sort_by_key(key);
    picked
}

/// Sends one backup: the chunks `to` lacks, then its three files at once.
/// A backup `to` already has is left alone, unless `repair`: then the
/// chunks it lacks there, or holds damaged, are sent again.
fn send(
    from: &Repo,
    to: Option<&Repo>,
    index: &Index,
    (dry_run, repair): (bool, bool),
    sent: &mut Sent,
    promised: &mut HashSet<String>,
) -> Result<()> {
    let id = &index.id;
    let present = match to {
        Some(to) => to.has_backup(id)?,
        None => false,
    };
    if present && !repair {
        sent.chunks = Some(index.chunks);
        return Ok(());
    }
    let refs = from.refs(id)?;
    sent.chunks = Some(refs.len() as u64);
    // Version 1 chunk lists hold whole file sizes (docs/backup-format.md).
    let whole_sizes = index.version < 2;
    let mut stored = Vec::new();
    for (chunk, size) in &refs {
        if cli::interrupted().is_some() {
            return Err(cli::interrupted_error(&format!(
                "backup {id}: sent {} of {} chunks",
                sent.chunks_sent,
                refs.len()
            )));
        }
        // A dry run writes nothing, so what it would have sent for an
        // earlier backup is remembered instead.
        if (dry_run && promised.contains(chunk))
            || to.is_some_and(|to| to.chunk_file(chunk).holds(*size, whole_sizes))
        {
            continue;
        }
        let sealed = from.read_chunk(chunk)?;
        let found = match crypt::header_len(&sealed) {
            Some(h) if sealed.len() - h >= crypt::MIN_BODY as usize => Sealed::Intact {
                body: (sealed.len() - h) as u64,
                whole: sealed.len() as u64,
            },
            _ => Sealed::Damaged,
        };
        if !found.holds(*size, whole_sizes) {
            return Err(Error::new(
                Code::Corrupt,
                format!(
                    "backup {id}: chunk {chunk} is damaged at the source ({}); nothing of this \
                     backup was committed at the destination: run `hv-backup verify` on the \
                     source and make a new backup",
                    from.chunk_path(chunk).display()
                ),
            ));
        }
        if let Some(to) = to.filter(|_| !dry_run) {
            to.store_chunk(chunk, &sealed)?;
            stored.push(chunk.as_str());
        }
        if dry_run {
            promised.insert(chunk.clone());
        }
        sent.chunks_sent += 1;
        sent.bytes_sent += sealed.len() as u64;
    }
    if present {
        if let Some(to) = to.filter(|_| !dry_run) {
            to.sync_chunk_dirs(stored)?;
        }
        sent.changed = sent.chunks_sent > 0;
        return Ok(());
    }
    let (index_json, chunks, manifest) = from.backup_files(id)?;
    let manifest_ok = match from.manifest_file(id) {
        Sealed::Intact { body, .. } => index.manifest_bytes.is_none_or(|m| m == body),
        _ => false,
    };
    if !manifest_ok || format::parse_refs(&String::from_utf8_lossy(&chunks)).is_none() {
        return Err(Error::new(
            Code::Corrupt,
            format!(
                "backup {id}: its manifest or chunk list is damaged at the source; nothing of \
                 this backup was committed at the destination: run `hv-backup verify` on the \
                 source"
            ),
        ));
    }
    if let Some(to) = to.filter(|_| !dry_run) {
        to.sync_chunk_dirs(stored)?;
        to.commit_backup_files(
            id,
            &BackupFiles {
                index: &index_json,
                chunks: &chunks,
                manifest: &manifest,
            },
        )?;
    }
    sent.bytes_sent += (index_json.len() + chunks.len() + manifest.len()) as u64;
    sent.changed = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field at once, as no one record has them (a dry run's flag
    /// beside an error): the table in docs/backups.md names them all, in
    /// this order.
    #[test]
    fn the_record_is_the_documented_one() {
        let error = Error::new(Code::Corrupt, "backup b: chunk c is damaged at the source");
        let record = Synced {
            head: BackupHead::example("sync"),
            changed: true,
            chunks: Some(3),
            chunks_sent: 2,
            bytes_sent: 8 << 20,
            verified: Some(false),
            dry_run: true,
            elapsed_ms: 1,
            error: Some(&error),
        };
        hv_testbench::assert_documented(&to_record(&record), "backups.md", "#### sync records");
    }
}
