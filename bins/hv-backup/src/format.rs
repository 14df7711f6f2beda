//! The repository's files as types. docs/backup-format.md is the
//! normative description; field names here are the ones on disk, so a
//! change here is a format change and needs a new `version`.

pub use hv_common::backup_index::{Index, IndexDisk, INDEX_FORMAT};
use serde::{Deserialize, Serialize};

pub const REPO_FORMAT: &str = "hv-backup-repository";
pub const MANIFEST_FORMAT: &str = "hv-backup-manifest";
pub const VERSION: u32 = 1;
/// index.json is at version 2: its backup's chunk list records body sizes
/// (the bytes after each chunk's age header), and it records
/// `manifest_bytes`. Version 1 chunk lists recorded whole file sizes and
/// are still checked as such.
pub const INDEX_VERSION: u32 = 2;
/// Manifests are at version 3: an image's hash is its BLAKE3 (as b3sum
/// prints it), recorded for an incremental read too when this host's cache
/// knew the unchanged chunks. Version 2 said which backup an incremental
/// disk's unchanged chunks came from, and version 1 and 2 images carry a
/// SHA-256 instead; both are still read and checked.
pub const MANIFEST_VERSION: u32 = 3;

/// The repository's clear configuration, in
/// [`REPO_FILE`](hv_common::backup_index::REPO_FILE) at its root.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub format: String,
    pub version: u32,
    pub id: String,
    pub created: String,
    pub chunk_size: u64,
    pub compression: String,
    pub compression_level: i32,
    pub encryption: String,
    pub recipients: Vec<String>,
    pub chunk_id: String,
}

/// `backups/<id>/manifest.age`, encrypted: everything a restore needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub id: String,
    pub repository: String,
    pub name: String,
    pub uuid: String,
    pub time: String,
    pub mode: String,
    pub chunk_size: u64,
    pub domain_xml: String,
    pub disks: Vec<Image>,
    /// The UEFI variable store, when the domain has one.
    pub nvram: Option<Image>,
    pub tags: Vec<String>,
    pub note: Option<String>,
    pub protected: bool,
}

/// One stored image: a disk (target `vda`, …) or the NVRAM file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Image {
    pub target: String,
    pub format: String,
    pub source: Option<String>,
    pub virtual_size_bytes: u64,
    /// SHA-256 of the whole plaintext image (versions 1 and 2; absent for
    /// an incremental read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// BLAKE3 of the whole plaintext image (version 3); absent when an
    /// incremental read could not know every unchanged chunk's part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    /// `full` or `incremental` (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<String>,
    /// For an incremental read: the backup whose chunk list supplied the
    /// unchanged chunks (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// One entry per `chunk_size` piece in order; `null` reads as zeros.
    pub chunks: Vec<Option<String>>,
}

impl Image {
    /// Plaintext length of chunk `i`: `chunk_size`, except the last.
    pub fn chunk_len(&self, chunk_size: u64, i: usize) -> usize {
        let start = i as u64 * chunk_size;
        chunk_size.min(self.virtual_size_bytes - start) as usize
    }
}

/// `backups/<id>/chunks`: the chunks a backup references, one `<id> <body
/// bytes>` line each, sorted: enough for fast verify and garbage collection
/// without the identity, and no offsets.
pub fn format_refs(refs: &std::collections::BTreeMap<String, u64>) -> String {
    refs.iter()
        .map(|(id, size)| format!("{id} {size}\n"))
        .collect()
}

pub fn parse_refs(text: &str) -> Option<Vec<(String, u64)>> {
    text.lines()
        .map(|line| {
            let (id, size) = line.split_once(' ')?;
            is_chunk_id(id).then_some(())?;
            Some((id.to_owned(), size.parse().ok()?))
        })
        .collect()
}

pub fn is_chunk_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_before_they_become_paths() {
        use hv_common::backup_index::is_backup_id;
        assert!(is_backup_id("20261121T101500Z-3fa2b1c9"));
        assert!(!is_backup_id("../../etc/passwd"));
        assert!(!is_backup_id("20261121T101500Z-3fa2b1c/"));
        assert!(is_chunk_id(&"a".repeat(64)));
        assert!(!is_chunk_id(&"A".repeat(64)));
    }

    #[test]
    fn refs_round_trip_and_reject_junk() {
        let mut m = std::collections::BTreeMap::new();
        m.insert("b".repeat(64), 10);
        m.insert("a".repeat(64), 20);
        let text = format_refs(&m);
        assert!(text.starts_with(&"a".repeat(64)));
        assert_eq!(parse_refs(&text).unwrap().len(), 2);
        assert!(parse_refs("zz 1\n").is_none());
    }
}
