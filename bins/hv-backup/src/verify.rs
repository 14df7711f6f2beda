//! `hv-backup verify`: the check a timer can run unattended and the one a
//! person runs before trusting a backup. Without the identity it proves
//! what the host alone can (every chunk there, whole, of its recorded
//! size), since the identity is kept off the host; with it (`--deep`),
//! every byte decrypts and hashes to what the backup recorded. It holds the
//! repository lock shared, so gc cannot delete a chunk it is about to read.

use crate::format::Index;
use crate::load::{self, Opener};
use crate::repo::{LockKind, Repo, Sealed};
use crate::{crypt, matches_vm, BackupHead};
use hv_common::cli::{self, Status};
use hv_common::output::{col, to_record, Column, Format, Printer, Show};
use hv_common::{Code, Error, Exit, Result};
use serde::Serialize;
use serde_json::{Map, Value};
use std::io::BufRead;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What `verify` is asked to check, and how.
#[derive(Debug)]
pub struct Plan {
    /// The repository directory.
    pub repo: PathBuf,
    /// How long to wait for the repository lock.
    pub lock_wait: Duration,
    /// Backup ids named on the command line; none: ids from piped records,
    /// else every backup.
    pub ids: Vec<String>,
    /// When every backup is checked: only those of these VMs (name or UUID).
    pub vms: Vec<String>,
    /// Decrypt, decompress and re-hash every chunk and disk image.
    pub deep: bool,
    /// The identity file; read only for `deep`.
    pub identity: Option<PathBuf>,
    /// Threads opening chunks for `deep`.
    pub workers: usize,
    /// The output format asked for (`None`: by what stdout is).
    pub format: Option<Format>,
}

const VERIFY_COLUMNS: &[Column] = &[
    col("ID", "id", Show::Plain),
    col("NAME", "name", Show::Plain),
    col("OK", "ok", Show::Plain),
    col("DEEP", "deep", Show::Plain),
    col("CHUNKS", "chunks", Show::Plain),
    col("ERROR", "error", Show::Plain),
];

/// What verify says about one backup (docs/backups.md).
#[derive(Debug, Serialize)]
struct Verified<'a> {
    /// Which backup, of which VM; `ok` says whether it passed.
    #[serde(flatten)]
    head: BackupHead<'a>,
    /// Why the backup failed: a missing or damaged chunk (`corrupt`,
    /// naming it), a wrong identity (`decrypt_failed`); absent when it passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a Error>,
    /// Whether every chunk was decrypted, decompressed and re-hashed
    /// (`--deep`), not only checked for presence and size; absent when the
    /// backup's index cannot be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    deep: Option<bool>,
    /// How many chunks the backup references, all checked; absent on failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    chunks: Option<u64>,
    /// How long checking this backup took, in milliseconds; absent on failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    elapsed_ms: Option<u64>,
}

pub fn verify(plan: &Plan) -> Result<Exit> {
    let repo = Repo::open(&plan.repo)?;
    let mut status = Status::default();
    let targets = pick_ids(&repo, &plan.ids, &plan.vms, &mut status)?;
    let deep = if plan.deep {
        let identities = crypt::load_identity(plan.identity.as_deref(), "verify --deep")?;
        let key = repo.sealed_key(&identities)?;
        Some((identities, key))
    } else {
        None
    };
    let _lock = repo.lock(LockKind::Shared, plan.lock_wait)?;
    let mut printer = Printer::stdout(plan.format, VERIFY_COLUMNS);
    for target in targets {
        let id = match target {
            Target::Id(id) => id,
            Target::Failed(record) => {
                printer.emit(record)?;
                continue;
            }
        };
        let start = Instant::now();
        let index = match repo.index(&id) {
            Ok(i) => i,
            Err(e) => {
                status.failed(&e);
                printer.emit(to_record(&Verified {
                    head: BackupHead::unread(&id, "verify"),
                    error: Some(&e),
                    deep: None,
                    chunks: None,
                    elapsed_ms: None,
                }))?;
                continue;
            }
        };
        let checked = check_chunks(&repo, &index).and_then(|chunks| match &deep {
            None => Ok(chunks),
            Some((identities, key)) => {
                let op = Opener {
                    repo: &repo,
                    identities,
                    key: *key,
                    workers: plan.workers,
                    backup: &id,
                };
                check_every_byte(&op).map(|()| chunks)
            }
        });
        let record = match &checked {
            Ok(chunks) => Verified {
                head: BackupHead::of(&index, "verify", true),
                error: None,
                deep: Some(plan.deep),
                chunks: Some(*chunks),
                elapsed_ms: Some(start.elapsed().as_millis() as u64),
            },
            Err(e) => {
                status.failed(e);
                Verified {
                    head: BackupHead::of(&index, "verify", false),
                    error: Some(e),
                    deep: Some(plan.deep),
                    chunks: None,
                    elapsed_ms: None,
                }
            }
        };
        printer.emit(to_record(&record))?;
    }
    printer.finish()?;
    Ok(status.exit())
}

/// Fast verify: the manifest and every referenced chunk exist, each an
/// age file whose body has the recorded size. Returns the number of chunks.
pub(crate) fn check_chunks(repo: &Repo, index: &Index) -> Result<u64> {
    let id = &index.id;
    match repo.manifest_file(id) {
        Sealed::Intact { body, .. } if index.manifest_bytes.is_none_or(|m| m == body) => {}
        found => {
            let what = match found {
                Sealed::Missing => "is missing",
                Sealed::Damaged => "has no whole age header",
                Sealed::Unreadable => "could not be read (the store did not answer)",
                Sealed::Intact { .. } => "has the wrong size",
            };
            return Err(Error::new(
                Code::Corrupt,
                format!(
                    "backup {id}: manifest.age {what}; this backup cannot be restored: restore \
                     backups/{id}/ from a copy of the repository, or make a new backup"
                ),
            ));
        }
    }
    let refs = repo.refs(id)?;
    // Version 1 chunk lists hold whole file sizes, which differ each time a
    // chunk is sealed; version 2 lists hold body sizes, which do not.
    let whole_sizes = index.version < 2;
    let (mut missing, mut wrong) = (Vec::new(), Vec::new());
    for (chunk, size) in &refs {
        match repo.chunk_file(chunk) {
            Sealed::Missing => missing.push(chunk.as_str()),
            found if found.holds(*size, whole_sizes) => {}
            Sealed::Intact { .. } | Sealed::Damaged => wrong.push(chunk.as_str()),
            Sealed::Unreadable => {
                return Err(Error::new(
                    Code::ConnectFailed,
                    format!(
                        "backup {id}: chunk {chunk} could not be read: the store did not answer; \
                         run verify again when it does"
                    ),
                ))
            }
        }
    }
    if missing.is_empty() && wrong.is_empty() {
        return Ok(refs.len() as u64);
    }
    let mut parts = Vec::new();
    if let Some(first) = missing.first() {
        parts.push(format!("{} chunks missing (first: {first})", missing.len()));
    }
    if let Some(first) = wrong.first() {
        parts.push(format!(
            "{} chunks damaged or of the wrong size (first: {first})",
            wrong.len()
        ));
    }
    Err(Error::new(
        Code::Corrupt,
        format!(
            "backup {id}: {}; this backup cannot be restored in full, make a new one",
            parts.join(", ")
        ),
    ))
}

fn check_every_byte(op: &Opener) -> Result<()> {
    let manifest = load::open_manifest(op.repo, op.backup, op.identities)?;
    for image in manifest.disks.iter().chain(manifest.nvram.iter()) {
        let _ = load::read_image(op, image, manifest.chunk_size, |_, _| Ok(()))?;
    }
    Ok(())
}

/// What verify is given: a backup to check, or an upstream failure
/// (`"ok": false`, e.g. a failed `create`), printed again untouched.
#[derive(Debug, PartialEq)]
pub(crate) enum Target {
    Id(String),
    Failed(Map<String, Value>),
}

/// The backups to work on: named ids, ids from piped records, or all.
pub(crate) fn pick_ids(
    repo: &Repo,
    ids: &[String],
    vms: &[String],
    status: &mut Status,
) -> Result<Vec<Target>> {
    if !ids.is_empty() {
        return Ok(ids.iter().cloned().map(Target::Id).collect());
    }
    if cli::stdin_has_targets(ids) {
        return Ok(ids_from(std::io::stdin().lock(), status));
    }
    // A damaged backup is checked whatever VM it is of (its index, which
    // would say, is what is damaged), and fails.
    let listing = repo.list_all()?;
    Ok(listing
        .backups
        .into_iter()
        .rev()
        .filter(|b| matches_vm(vms, &b.name, &b.uuid))
        .map(|b| Target::Id(b.id))
        .chain(listing.damaged.into_iter().map(|(id, _)| Target::Id(id)))
        .collect())
}

/// Backups from lines: records with an `id` field (as `hv-backup ls` and
/// `create` print), or bare ids; failed records pass through. Other lines
/// are reported and skipped.
fn ids_from(reader: impl BufRead, status: &mut Status) -> Vec<Target> {
    let mut out = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                cli::warn(format!(
                    "stdin line {}: cannot read it ({e}); skipped",
                    n + 1
                ));
                status.malformed();
                continue;
            }
        };
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let target = if text.starts_with('{') {
            match serde_json::from_str::<Map<String, Value>>(text) {
                Ok(r) if r.get("ok") == Some(&Value::Bool(false)) => Some(Target::Failed(r)),
                Ok(r) => r
                    .get("id")
                    .and_then(Value::as_str)
                    .map(|id| Target::Id(id.to_owned())),
                Err(_) => None,
            }
        } else {
            Some(Target::Id(text.to_owned()))
        };
        match target {
            Some(target) => out.push(target),
            None => {
                cli::warn(format!(
                    "stdin line {}: not a backup record (no \"id\" field); skipped",
                    n + 1
                ));
                status.malformed();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hv_common::output::obj;
    use serde_json::json;

    #[test]
    fn ids_come_from_records_or_bare_lines() {
        let input = "{\"id\":\"20261121T101500Z-3fa2b1c9\",\"name\":\"a\"}\n\n20261121T101501Z-00000000\n{\"name\":\"x\"}\n{\"name\":\"b\",\"ok\":false,\"error\":{\"code\":\"io_error\"}}\n";
        let mut status = Status::default();
        let targets = ids_from(input.as_bytes(), &mut status);
        let failed = obj(json!({"name": "b", "ok": false, "error": {"code": "io_error"}}));
        assert_eq!(
            targets,
            [
                Target::Id("20261121T101500Z-3fa2b1c9".into()),
                Target::Id("20261121T101501Z-00000000".into()),
                Target::Failed(failed),
            ]
        );
        assert_eq!(status.exit(), Exit::Usage, "the line without an id");
        let mut status = Status::default();
        assert!(ids_from(&b"\xff\xfe\n"[..], &mut status).is_empty());
        assert_eq!(status.exit(), Exit::Usage, "an unreadable line");
    }

    /// Every field at once, as no one record has them (a failed check's
    /// `error` beside a passed one's `chunks` and `elapsed_ms`): the
    /// table in docs/backups.md names them all, in this order.
    #[test]
    fn the_record_is_the_documented_one() {
        let error = Error::new(Code::Corrupt, "backup b: 1 chunks missing (first: c)");
        let record = Verified {
            head: BackupHead::example("verify"),
            error: Some(&error),
            deep: Some(true),
            chunks: Some(1),
            elapsed_ms: Some(1),
        };
        hv_testbench::assert_documented(
            &hv_common::output::to_record(&record),
            "backups.md",
            "#### verify records",
        );
    }
}
