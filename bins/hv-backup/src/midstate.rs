//! SHA-256 of a whole disk image that can resume from a saved state.
//! The manifest records each image's SHA-256, and hashing every byte again
//! for an unchanged disk would cost more than the rest of the backup. A
//! chunk boundary is a multiple of 64 bytes, so the hash state after each
//! chunk is a plain SHA-256 midstate: this host caches them (with the chunk
//! ids) after each backup, and the next backup skips hashing for as long
//! as its chunk ids match the cache. Equal keyed-BLAKE3 ids mean equal
//! bytes, so the resumed state is exactly what hashing would give. The
//! same file keeps the chunk list and checkpoint an incremental backup
//! starts from (decide.rs judges whether it still can).

use crate::ffi;
use crate::format::Image;
use sha2::digest::generic_array::GenericArray;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHash {
    pub state: [u32; 8],
    /// Bytes hashed so far; a multiple of 64 until `finish`.
    pub len: u64,
}

impl Default for ImageHash {
    fn default() -> Self {
        ImageHash { state: IV, len: 0 }
    }
}

impl ImageHash {
    /// Hashes whole 64-byte blocks of `data`; a tail is only allowed in `finish`.
    pub fn update_blocks(&mut self, data: &[u8]) {
        debug_assert_eq!(data.len() % 64, 0);
        for block in data.chunks_exact(64) {
            sha2::compress256(&mut self.state, &[*GenericArray::from_slice(block)]);
        }
        self.len += data.len() as u64;
    }

    /// Hashes `tail` (any length) and pads: the digest.
    pub fn finish(mut self, tail: &[u8]) -> [u8; 32] {
        let whole = tail.len() - tail.len() % 64;
        self.update_blocks(&tail[..whole]);
        let rest = &tail[whole..];
        let bits = (self.len + rest.len() as u64) * 8;
        let mut last = Vec::with_capacity(128);
        last.extend_from_slice(rest);
        last.push(0x80);
        while last.len() % 64 != 56 {
            last.push(0);
        }
        last.extend_from_slice(&bits.to_be_bytes());
        for block in last.chunks_exact(64) {
            sha2::compress256(&mut self.state, &[*GenericArray::from_slice(block)]);
        }
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out
    }
}

/// One chunk of the last backup as the hashing thread needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The chunk id as bytes, or `None` for a zero chunk.
    pub id: Option<[u8; 32]>,
    /// The hash state after this chunk.
    pub state: [u32; 8],
}

/// What this host remembers of a disk's last backup to one repository: its
/// chunk ids (so an incremental backup can take unchanged chunks from it),
/// the checkpoint made with it, and the hash states after each chunk for
/// as long as they are known.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiskCache {
    pub chunk_size: u64,
    pub size: u64,
    /// The backup these chunk ids come from.
    pub backup: String,
    /// The libvirt checkpoint created at that backup's point in time.
    pub checkpoint: Option<String>,
    /// The disk's source then: a replaced disk is read in full.
    pub source: Option<String>,
    /// Every chunk, the last short one too; `None` for zeros.
    pub ids: Vec<Option<[u8; 32]>>,
    /// The hash state after each full chunk, for a prefix of the chunks
    /// (an incremental backup does not hash past its first changed chunk).
    pub states: Vec<[u32; 8]>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    chunk_size: u64,
    size: u64,
    backup: String,
    checkpoint: Option<String>,
    source: Option<String>,
    chunks: usize,
    states: usize,
}

const MAGIC: &[u8; 8] = b"hvbmid2\n";

/// The per-disk cache file: `<cache dir>/<repository id>/<vm uuid>/<target>`.
pub fn cache_path(dir: &Path, repo_id: &str, uuid: &str, target: &str) -> Option<PathBuf> {
    let safe = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    (safe(repo_id) && safe(uuid) && safe(target)).then(|| dir.join(repo_id).join(uuid).join(target))
}

/// This host's caches of one VM's disks in one repository: what the last
/// backup of each disk left for the next.
pub struct DiskCaches<'a> {
    dir: &'a Path,
    repo_id: &'a str,
    uuid: String,
    chunk_size: u64,
}

impl<'a> DiskCaches<'a> {
    /// The caches under `dir` (`--cache-dir`) of the VM `uuid` in the
    /// repository `repo_id`, whose chunks are `chunk_size` long.
    pub fn new(dir: &'a Path, repo_id: &'a str, uuid: String, chunk_size: u64) -> Self {
        DiskCaches {
            dir,
            repo_id,
            uuid,
            chunk_size,
        }
    }

    fn path(&self, target: &str) -> Option<PathBuf> {
        cache_path(self.dir, self.repo_id, &self.uuid, target)
    }

    /// What the last backup of disk `target` left; `None` if nothing usable.
    pub fn load(&self, target: &str) -> Option<DiskCache> {
        DiskCache::load(&self.path(target)?, self.chunk_size)
    }

    /// Saves the cache of the disk stored as `image` once backup `id` has
    /// committed; a failure only costs the next backup a full read.
    pub fn save(&self, image: &Image, id: &str, checkpoint: Option<String>, states: Vec<[u32; 8]>) {
        let cache = DiskCache {
            chunk_size: self.chunk_size,
            size: image.virtual_size_bytes,
            backup: id.to_owned(),
            checkpoint,
            source: image.source.clone(),
            ids: id_bytes(&image.chunks),
            states,
        };
        let saved = self.path(&image.target).map(|p| cache.save(&p));
        if let Some(Err(e)) = saved {
            hv_common::cli::warn(format!(
                "cannot save the cache for disk {}: {e}; the next backup reads it in full",
                image.target
            ));
        }
    }
}

impl DiskCache {
    /// Loads the cache if it was made for this chunk size; anything else
    /// (missing, older format, damaged) is no cache. Callers compare `size`.
    pub fn load(path: &Path, chunk_size: u64) -> Option<DiskCache> {
        let mut data = Vec::new();
        std::fs::File::open(path)
            .ok()?
            .read_to_end(&mut data)
            .ok()?;
        let rest = data.strip_prefix(MAGIC)?;
        let (len, rest) = rest.split_at_checked(4)?;
        let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
        let (head, body) = rest.split_at_checked(len)?;
        let h: Header = serde_json::from_slice(head).ok()?;
        let fits = h.chunk_size == chunk_size
            && h.chunks == h.size.div_ceil(chunk_size) as usize
            && h.states <= h.chunks
            && body.len() == h.chunks * 33 + h.states * 32;
        if !fits {
            return None;
        }
        let (ids, states) = body.split_at(h.chunks * 33);
        Some(DiskCache {
            chunk_size,
            size: h.size,
            backup: h.backup,
            checkpoint: h.checkpoint,
            source: h.source,
            ids: ids
                .chunks_exact(33)
                .map(|e| (e[0] == 1).then(|| e[1..].try_into().unwrap_or_default()))
                .collect(),
            states: states.chunks_exact(32).map(words).collect(),
        })
    }

    /// Writes the cache atomically (temporary file, then rename), readable
    /// by its owner only: a hash state after each chunk would let anyone
    /// test a guess of what the chunk holds.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        private_dirs(dir)?;
        let head = serde_json::to_vec(&Header {
            chunk_size: self.chunk_size,
            size: self.size,
            backup: self.backup.clone(),
            checkpoint: self.checkpoint.clone(),
            source: self.source.clone(),
            chunks: self.ids.len(),
            states: self.states.len(),
        })?;
        let mut data = Vec::with_capacity(12 + head.len() + self.ids.len() * 65);
        data.extend_from_slice(MAGIC);
        data.extend_from_slice(&(head.len() as u32).to_be_bytes());
        data.extend_from_slice(&head);
        for id in &self.ids {
            data.push(u8::from(id.is_some()));
            data.extend_from_slice(&id.unwrap_or([0; 32]));
        }
        for state in &self.states {
            for w in state {
                data.extend_from_slice(&w.to_be_bytes());
            }
        }
        hv_common::fsutil::write_atomic(path, &data, 0o600)
    }

    /// The chunks whose hash state is known, for resuming the image hash.
    pub fn entries(&self) -> Vec<Entry> {
        self.ids
            .iter()
            .zip(&self.states)
            .map(|(id, state)| Entry {
                id: *id,
                state: *state,
            })
            .collect()
    }
}

/// Creates `dir` (a VM's directory under its repository's) and closes it
/// and its parent to everyone but the owner, also when an older hv made
/// them open. Anything but a directory of this user's there (a planted
/// symlink in a shared `--cache-dir`) is refused, not followed or changed.
fn private_dirs(dir: &Path) -> std::io::Result<()> {
    let repo_dir = dir.parent().unwrap_or(Path::new("."));
    if let Some(cache_dir) = repo_dir.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(cache_dir)?;
    }
    for d in [repo_dir, dir] {
        if let Err(e) = std::fs::symlink_metadata(d) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(e);
            }
            match std::fs::DirBuilder::new().mode(0o700).create(d) {
                // Another backup made it meanwhile: it is checked below.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                other => other?,
            }
        }
        let meta = std::fs::symlink_metadata(d)?;
        if !meta.is_dir() || meta.uid() != ffi::effective_uid() {
            return Err(std::io::Error::other(format!(
                "{} is not a directory of this user's; remove it or choose another --cache-dir",
                d.display()
            )));
        }
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode & 0o700))?;
        }
    }
    Ok(())
}

fn words(b: &[u8]) -> [u32; 8] {
    let mut state = [0u32; 8];
    for (s, w) in state.iter_mut().zip(b.chunks_exact(4)) {
        *s = u32::from_be_bytes(w.try_into().unwrap_or_default());
    }
    state
}

/// Chunk ids as bytes, from an image's chunk list.
pub fn id_bytes(chunks: &[Option<String>]) -> Vec<Option<[u8; 32]>> {
    chunks
        .iter()
        .map(|id| id.as_deref().and_then(crate::crypt::unhex32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn resumed_hashes_equal_plain_sha256() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for tail in [0usize, 1, 55, 56, 63, 64, 100] {
            let msg = &data[..640 + tail];
            let mut h = ImageHash::default();
            h.update_blocks(&msg[..320]);
            let saved = h; // a midstate, as the cache keeps it
            let mut resumed = ImageHash {
                state: saved.state,
                len: saved.len,
            };
            resumed.update_blocks(&msg[320..640]);
            assert_eq!(
                resumed.finish(&msg[640..]),
                <[u8; 32]>::from(Sha256::digest(msg)),
                "tail {tail}"
            );
        }
        assert_eq!(
            ImageHash::default().finish(&[]),
            <[u8; 32]>::from(Sha256::digest(b""))
        );
    }

    #[test]
    fn the_cache_round_trips_and_rejects_other_geometry() {
        let dir = std::env::temp_dir().join(format!("hv-midstate-{}", std::process::id()));
        let path = cache_path(&dir, "abc", "u-1", "vda").unwrap();
        let cache = DiskCache {
            chunk_size: 64,
            size: 200,
            backup: "20261121T101500Z-3fa2b1c9".into(),
            checkpoint: Some("hv-abc-1".into()),
            source: Some("/var/lib/x y.qcow2".into()),
            ids: vec![Some([3; 32]), None, None, Some([4; 32])],
            states: vec![[1, 2, 3, 4, 5, 6, 7, 8], IV],
        };
        // As an older hv left it: open to all.
        let repo_dir = dir.join("abc");
        std::fs::create_dir_all(&repo_dir).unwrap();
        std::fs::set_permissions(&repo_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        cache.save(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(mode(&repo_dir), 0o700, "closed");
        assert_eq!(DiskCache::load(&path, 64), Some(cache.clone()));
        assert_eq!(DiskCache::load(&path, 128), None);
        assert_eq!(cache.entries().len(), 2);
        assert_eq!(cache.entries()[1].id, None);
        std::fs::write(&path, b"hvbmid1\nold format").unwrap();
        assert_eq!(DiskCache::load(&path, 64), None);
        assert!(cache_path(&dir, "abc", "../x", "vda").is_none());
        // A repository directory planted as a symlink is refused, its target untouched.
        let elsewhere = dir.join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join("planted")).unwrap();
        let planted = cache_path(&dir, "planted", "u-1", "vda").unwrap();
        let err = cache.save(&planted).unwrap_err();
        assert!(err.to_string().contains("--cache-dir"), "{err}");
        assert_eq!(mode(&elsewhere), 0o755);
        assert_eq!(
            std::fs::read_dir(&elsewhere).unwrap().count(),
            0,
            "nothing made there"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
