//! The clear half of an hv-backup repository: `backups/<id>/index.json`.
//! It lives here because more than the backup command reads it: metrics and
//! health report each VM's newest backup from it, without the identity and
//! without taking the repository lock (a backup directory is renamed into
//! place whole, so a reader never sees half of one).
//! docs/backup-format.md is the normative description.

use crate::{Code, Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// The repository's clear configuration, at its root: the file that makes
/// a directory an hv-backup repository, for every command that looks for one.
pub const REPO_FILE: &str = "hv-backup.json";
pub const INDEX_FORMAT: &str = "hv-backup-index";
/// An index is a few hundred bytes; anything past this is not one.
const INDEX_LIMIT: u64 = 1 << 20;

/// `backups/<id>/index.json`: what `ls` and `prune` need, readable without
/// the identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Index {
    pub format: String,
    pub version: u32,
    pub id: String,
    pub name: String,
    pub uuid: String,
    pub time: String,
    pub time_unix: i64,
    /// The same instant in milliseconds: orders backups made within one second.
    pub time_unix_ms: i64,
    /// `live` (backup job of a running VM) or `offline` (stopped VM read in place).
    pub mode: String,
    pub disks: Vec<IndexDisk>,
    pub size_bytes: u64,
    pub read_bytes: u64,
    pub new_bytes: u64,
    pub stored_bytes: u64,
    pub referenced_bytes: u64,
    pub chunks: u64,
    pub elapsed_ms: u64,
    pub protected: bool,
    /// The body size of `manifest.age` (version 2): fast verify's check
    /// that the manifest was not cut short.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexDisk {
    pub target: String,
    pub virtual_size_bytes: u64,
}

/// Backup ids: `YYYYmmddTHHMMSSZ-<8 hex>`, sortable by time, never a path.
pub fn is_backup_id(s: &str) -> bool {
    s.len() == 25
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 => b == b'T',
            15 => b == b'Z',
            16 => b == b'-',
            0..=14 => b.is_ascii_digit(),
            _ => matches!(b, b'0'..=b'9' | b'a'..=b'f'),
        })
}

/// Every complete backup's index in the repository at `root`, oldest first.
/// Unreadable entries are reported on stderr and skipped, never guessed at.
pub fn list(root: &Path) -> Result<Vec<Index>> {
    let listing = list_all(root)?;
    for (_, e) in listing.damaged {
        crate::cli::warn(e);
    }
    Ok(listing.backups)
}

/// The backups of a repository: those whose index reads, oldest first, and
/// those whose index does not, by id. A command that lists or checks
/// backups reports the damaged ones as failures: a backup that silently
/// vanished from the listing would look deleted, not broken.
pub struct Listing {
    pub backups: Vec<Index>,
    pub damaged: Vec<(String, Error)>,
}

pub fn list_all(root: &Path) -> Result<Listing> {
    let mut listing = Listing {
        backups: Vec::new(),
        damaged: Vec::new(),
    };
    for id in ids(root)? {
        match read(root, &id) {
            Ok(index) => listing.backups.push(index),
            Err(e) => listing.damaged.push((id, e)),
        }
    }
    listing
        .backups
        .sort_by(|a, b| (a.time_unix_ms, &a.id).cmp(&(b.time_unix_ms, &b.id)));
    listing.damaged.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(listing)
}

/// Every directory under `backups/` named like a backup, whether its index
/// reads or not (gc must keep the chunks of a backup with a damaged index).
pub fn ids(root: &Path) -> Result<Vec<String>> {
    let dir = root.join("backups");
    let entries =
        fs::read_dir(&dir).map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))?;
    // An entry that cannot be read fails the listing: gc must not take a
    // backup it skipped for one that is gone.
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))?;
        if let Ok(name) = entry.file_name().into_string() {
            if is_backup_id(&name) {
                ids.push(name);
            }
        }
    }
    Ok(ids)
}

/// Backups grouped by VM UUID, each group in the order given (oldest first
/// when it comes from [`list`]): retention and "newest backup" work per VM.
pub fn by_vm(backups: impl IntoIterator<Item = Index>) -> BTreeMap<String, Vec<Index>> {
    let mut groups: BTreeMap<String, Vec<Index>> = BTreeMap::new();
    for b in backups {
        groups.entry(b.uuid.clone()).or_default().push(b);
    }
    groups
}

/// One backup's index; a missing backup is `not_found`, a damaged one `corrupt`.
pub fn read(root: &Path, id: &str) -> Result<Index> {
    if !is_backup_id(id) {
        return Err(Error::usage(format!(
            "{id:?} is not a backup id (like 20261121T101500Z-3fa2b1c9); see `hv-backup ls`"
        )));
    }
    let dir = root.join("backups").join(id);
    let path = dir.join("index.json");
    let damaged = |what: String| {
        Error::new(
            Code::Corrupt,
            format!(
                "backup {id}: index.json {what}; restore backups/{id}/ from a copy of the \
                 repository, or remove that directory to drop the backup (then run hv-backup gc)"
            ),
        )
    };
    let text = match crate::fsutil::read_limited(&path, INDEX_LIMIT) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !dir.is_dir() => {
            return Err(Error::new(
                Code::NotFound,
                format!("backup {id} not found in {}", root.display()),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(damaged("is missing".into()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(Error::io(format!("cannot read {}", path.display()), e))
        }
        Err(e) => return Err(damaged(format!("cannot be read ({e})"))),
    };
    parse(id, &text)
}

/// Backup `id`'s index from the bytes of its `index.json` (a directory
/// repository's file, or an object store's object).
pub fn parse(id: &str, text: &[u8]) -> Result<Index> {
    let damaged = |what: String| {
        Error::new(
            Code::Corrupt,
            format!(
                "backup {id}: index.json {what}; restore backups/{id}/ from a copy of the \
                 repository, or remove it to drop the backup (then run hv-backup gc)"
            ),
        )
    };
    if text.len() as u64 > INDEX_LIMIT {
        return Err(damaged("is too large".into()));
    }
    let index: Index =
        serde_json::from_slice(text).map_err(|e| damaged(format!("is not valid ({e})")))?;
    if index.id != id {
        return Err(Error::new(
            Code::Corrupt,
            format!(
                "backup {id}: index.json names another backup ({})",
                index.id
            ),
        ));
    }
    Ok(index)
}
