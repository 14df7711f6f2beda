//! The last stage of a backup: its manifest and index are written, and the
//! backup comes to exist in one rename (repo.rs).
//!
//! What a reader must know to trust this stage:
//!
//! - Every chunk the backup references is in the repository under its
//!   name: sealed, synced and renamed by this run, or found there intact.
//!   The chunk directories are synced here, before anything names those
//!   chunks, so a crash cannot lose a rename a committed backup needs.
//! - `runner::point_of_no_return` is the last place a backup given up on
//!   at `--timeout` stops: its failure has been printed, so it must not
//!   appear after all. Past it the VM no longer times out and the backup
//!   commits. It must run on the thread the runner gave the VM (the state
//!   is per thread), as every stage of `create` does.
//! - The manifest (domain XML with secrets, disk sources, note) is
//!   encrypted to the recipients; the index holds only names, times and
//!   sizes, in clear, for `ls` and prune without the identity.

use crate::chunk::Counts;
use crate::crypt;
use crate::format::{self, Image, Index, IndexDisk, Manifest};
use crate::repo::Repo;
use hv_common::{runner, time, Code, Error, Result};
use std::collections::BTreeMap;
use std::time::Instant;

/// Everything a backup records.
pub struct Backup<'a> {
    /// The VM's name and UUID (empty when unknown).
    pub name: String,
    pub uuid: String,
    /// `live` or `offline`.
    pub mode: &'static str,
    /// The persistent definition, with secrets.
    pub config_xml: String,
    pub tags: Vec<String>,
    /// The disks' images, in domain order.
    pub disks: &'a [Image],
    pub nvram: Option<Image>,
    /// Every chunk the images reference, with its body size.
    pub refs: &'a BTreeMap<String, u64>,
    pub counts: Counts,
    /// `--note`.
    pub note: Option<String>,
    /// `--protected`.
    pub protected: bool,
    /// When the backup of this VM began.
    pub started: Instant,
}

/// Writes the manifest and index: the moment the backup comes to exist.
pub fn commit(repo: &Repo, backup: Backup) -> Result<Index> {
    repo.sync_chunk_dirs(backup.refs.keys().map(String::as_str))?;
    let now_ms = time::now_ms();
    let now = now_ms.div_euclid(1000);
    let id = backup_id(now)?;
    let manifest = Manifest {
        format: format::MANIFEST_FORMAT.into(),
        version: format::MANIFEST_VERSION,
        id: id.clone(),
        repository: repo.config.id.clone(),
        name: backup.name.clone(),
        uuid: backup.uuid.clone(),
        time: time::rfc3339(now),
        mode: backup.mode.into(),
        chunk_size: repo.config.chunk_size,
        domain_xml: backup.config_xml.clone(),
        disks: backup.disks.to_vec(),
        nvram: backup.nvram.clone(),
        tags: backup.tags.clone(),
        note: backup.note.clone(),
        protected: backup.protected,
    };
    let json = serde_json::to_vec(&manifest)
        .map_err(|e| Error::new(Code::Io, format!("cannot encode the manifest: {e}")))?;
    let sealed = crypt::encrypt(&repo.recipients, &json)?;
    let manifest_bytes = crypt::header_len(&sealed).map(|h| (sealed.len() - h) as u64);
    let index = Index {
        format: format::INDEX_FORMAT.into(),
        version: format::INDEX_VERSION,
        id: id.clone(),
        name: backup.name.clone(),
        uuid: backup.uuid.clone(),
        time: time::rfc3339(now),
        time_unix: now,
        time_unix_ms: now_ms,
        mode: backup.mode.into(),
        disks: backup
            .disks
            .iter()
            .map(|i| IndexDisk {
                target: i.target.clone(),
                virtual_size_bytes: i.virtual_size_bytes,
            })
            .collect(),
        size_bytes: backup.disks.iter().map(|i| i.virtual_size_bytes).sum(),
        read_bytes: backup.counts.read_bytes,
        new_bytes: backup.counts.new_bytes,
        stored_bytes: backup.counts.stored_bytes,
        referenced_bytes: backup.refs.values().sum(),
        chunks: backup.refs.len() as u64,
        elapsed_ms: backup.started.elapsed().as_millis() as u64,
        protected: backup.protected,
        manifest_bytes,
    };
    // A backup given up on at --timeout has had its failure printed.
    runner::point_of_no_return()?;
    repo.commit_backup(&index, backup.refs, &sealed)?;
    Ok(index)
}

/// `20261121T101500Z-3fa2b1c9`: sorts by time, unique per run.
fn backup_id(now: i64) -> Result<String> {
    let stamp: String = time::rfc3339(now)
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    Ok(format!("{stamp}-{}", crypt::random_hex::<4>()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_and_distinct() {
        let a = backup_id(1_795_000_000).unwrap();
        let b = backup_id(1_795_000_000).unwrap();
        assert!(hv_common::backup_index::is_backup_id(&a), "{a}");
        assert_ne!(a, b);
    }
}
