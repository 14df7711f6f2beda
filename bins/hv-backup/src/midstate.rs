//! The BLAKE3 of a whole disk image, from one chaining value per chunk.
//! The manifest records each image's BLAKE3 (what `b3sum` prints for the
//! raw image). BLAKE3 is a tree: a chunk of a power-of-two size at a
//! multiple of its size is a subtree whose chaining value depends only on
//! its bytes and offset, so the workers that seal the chunks hash them too,
//! in parallel, and the root is merged from the values at the end. This
//! host caches each chunk's value with its id after each backup; the next
//! backup takes the value of any chunk whose id is unchanged instead of
//! hashing it (equal keyed-BLAKE3 ids mean equal bytes), and an
//! incremental backup gets a whole-image hash without reading the rest. The
//! same file keeps the chunk list and checkpoint an incremental backup
//! starts from (decide.rs judges whether it still can).

use crate::ffi;
use crate::format::Image;
use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, HasherExt, Mode};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A chunk's BLAKE3 chaining value; for an image of one chunk, the root.
pub type Cv = [u8; 32];

/// Whether images cut into `chunk_size` pieces can be hashed as a tree:
/// every piece must be a whole BLAKE3 subtree.
pub fn tree_fits(chunk_size: u64) -> bool {
    chunk_size.is_power_of_two() && chunk_size >= blake3::CHUNK_LEN as u64
}

/// The chaining value of the piece `data` at `offset`; `whole` when it is
/// the image's only piece, whose value is then the image's BLAKE3.
pub fn chunk_cv(offset: u64, data: &[u8], whole: bool) -> Cv {
    if whole {
        return *blake3::hash(data).as_bytes();
    }
    let mut h = blake3::Hasher::new();
    h.set_input_offset(offset);
    h.update(data);
    h.finalize_non_root()
}

/// The image's BLAKE3 from its pieces' values, in order (see [`chunk_cv`]).
pub fn image_root(cvs: &[Cv]) -> Cv {
    /// The left subtree of n pieces holds the largest power of two below n.
    fn merge(cvs: &[Cv], root: bool) -> Cv {
        if cvs.len() == 1 {
            return cvs[0];
        }
        let (left, right) = cvs.split_at(cvs.len().next_power_of_two() / 2);
        let (l, r) = (merge(left, false), merge(right, false));
        match root {
            true => *merge_subtrees_root(&l, &r, Mode::Hash).as_bytes(),
            false => merge_subtrees_non_root(&l, &r, Mode::Hash),
        }
    }
    match cvs {
        [] => *blake3::hash(b"").as_bytes(),
        _ => merge(cvs, true),
    }
}

/// How the workers hash one image: its pieces' size, whether it is one
/// piece, and the last backup's values by index.
pub struct Tree {
    pub chunk_size: u64,
    pub whole: bool,
    pub known: Vec<Entry>,
}

impl Tree {
    /// Piece `i`'s value: the last backup's when its id is unchanged (the
    /// same bytes at the same offset), else computed from `data`.
    pub fn cv(&self, i: usize, id: Option<[u8; 32]>, data: &[u8]) -> Cv {
        match self.known.get(i) {
            Some(e) if e.id == id => e.cv,
            _ => chunk_cv(i as u64 * self.chunk_size, data, self.whole),
        }
    }
}

/// One chunk of the last backup as the sealing workers need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The chunk id as bytes, or `None` for a zero chunk.
    pub id: Option<[u8; 32]>,
    /// Its chaining value.
    pub cv: Cv,
}

/// What this host remembers of a disk's last backup to one repository: its
/// chunk ids (so an incremental backup can take unchanged chunks from it),
/// the checkpoint made with it, and each chunk's chaining value.
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
    /// Each chunk's chaining value, or none when not all were known.
    pub cvs: Vec<Cv>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    chunk_size: u64,
    size: u64,
    backup: String,
    checkpoint: Option<String>,
    source: Option<String>,
    chunks: usize,
    /// Version 2 caches held SHA-256 states here, version 3 chaining values.
    states: usize,
}

const MAGIC: &[u8; 8] = b"hvbmid3\n";
/// Caches of hv before the image hash was BLAKE3: their chunk ids and
/// checkpoint still serve an incremental backup, their SHA-256 states not.
const MAGIC_V2: &[u8; 8] = b"hvbmid2\n";

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
    pub fn save(&self, image: &Image, id: &str, checkpoint: Option<String>, cvs: Vec<Cv>) {
        let cache = DiskCache {
            chunk_size: self.chunk_size,
            size: image.virtual_size_bytes,
            backup: id.to_owned(),
            checkpoint,
            source: image.source.clone(),
            ids: id_bytes(&image.chunks),
            cvs,
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
        let (rest, v2) = match data.strip_prefix(MAGIC) {
            Some(rest) => (rest, false),
            None => (data.strip_prefix(MAGIC_V2)?, true),
        };
        let (len, rest) = rest.split_at_checked(4)?;
        let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
        let (head, body) = rest.split_at_checked(len)?;
        let h: Header = serde_json::from_slice(head).ok()?;
        let fits = h.chunk_size == chunk_size
            && h.chunks == h.size.div_ceil(chunk_size) as usize
            && (h.states == 0 || h.states == h.chunks || v2)
            && h.states <= h.chunks
            && body.len() == h.chunks * 33 + h.states * 32;
        if !fits {
            return None;
        }
        let (ids, cvs) = body.split_at(h.chunks * 33);
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
            cvs: match v2 {
                true => Vec::new(),
                false => cvs
                    .chunks_exact(32)
                    .map(|c| c.try_into().unwrap_or_default())
                    .collect(),
            },
        })
    }

    /// Writes the cache atomically (temporary file, then rename), readable
    /// by its owner only: a chunk's chaining value would let anyone test a
    /// guess of what the chunk holds.
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
            states: self.cvs.len(),
        })?;
        let mut data = Vec::with_capacity(12 + head.len() + self.ids.len() * 65);
        data.extend_from_slice(MAGIC);
        data.extend_from_slice(&(head.len() as u32).to_be_bytes());
        data.extend_from_slice(&head);
        for id in &self.ids {
            data.push(u8::from(id.is_some()));
            data.extend_from_slice(&id.unwrap_or([0; 32]));
        }
        for cv in &self.cvs {
            data.extend_from_slice(cv);
        }
        hv_common::fsutil::write_atomic(path, &data, 0o600)
    }

    /// Each chunk's id and chaining value, if all are known.
    pub fn entries(&self) -> Vec<Entry> {
        if self.cvs.len() != self.ids.len() {
            return Vec::new();
        }
        self.ids
            .iter()
            .zip(&self.cvs)
            .map(|(id, cv)| Entry { id: *id, cv: *cv })
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

    #[test]
    fn merged_chunk_values_are_b3sums_hash() {
        let data: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let piece = 4096usize;
        assert!(tree_fits(piece as u64) && !tree_fits(3000) && !tree_fits(512));
        for len in [
            0,
            1,
            1000,
            piece - 1,
            piece,
            piece + 1,
            3 * piece + 5,
            4 * piece,
            5 * piece,
            8 * piece,
            9 * piece + 17,
        ] {
            let msg = &data[..len];
            let pieces: Vec<&[u8]> = msg.chunks(piece).collect();
            let whole = pieces.len() == 1;
            let cvs: Vec<Cv> = pieces
                .iter()
                .enumerate()
                .map(|(i, p)| chunk_cv((i * piece) as u64, p, whole))
                .collect();
            assert_eq!(
                image_root(&cvs),
                *blake3::hash(msg).as_bytes(),
                "{len} bytes"
            );
        }
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
            cvs: vec![[1; 32], [2; 32], [5; 32], [6; 32]],
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
        assert_eq!(cache.entries().len(), 4);
        assert_eq!(cache.entries()[1].id, None);
        assert_eq!(cache.entries()[2].cv, [5; 32]);
        // An older hv's cache: its ids serve, its SHA-256 states do not.
        let mut old = std::fs::read(&path).unwrap();
        old[..8].copy_from_slice(b"hvbmid2\n");
        std::fs::write(&path, &old).unwrap();
        let loaded = DiskCache::load(&path, 64).unwrap();
        assert_eq!(
            (loaded.ids.clone(), loaded.cvs.len()),
            (cache.ids.clone(), 0)
        );
        assert!(loaded.entries().is_empty());
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
