//! SHA-256 of a whole disk image that can resume from a saved state.
//! The manifest records each image's SHA-256, and hashing every byte again
//! for an unchanged disk would cost more than the rest of the backup. A
//! chunk boundary is a multiple of 64 bytes, so the hash state after each
//! chunk is a plain SHA-256 midstate: this host caches them (with the chunk
//! ids) after each backup, and the next backup skips hashing for as long
//! as its chunk ids match the cache. Equal keyed-BLAKE3 ids mean equal
//! bytes, so the resumed state is exactly what hashing would give.

use sha2::digest::generic_array::GenericArray;
use std::io::{Read, Write};
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

/// What the cache remembers about one chunk of the last backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The chunk id as bytes, or `None` for a zero chunk.
    pub id: Option<[u8; 32]>,
    /// The hash state after this chunk.
    pub state: [u32; 8],
}

const MAGIC: &[u8; 8] = b"hvbmid1\n";

/// The per-disk cache file: `<cache dir>/<repository id>/<vm uuid>/<target>`.
pub fn cache_path(dir: &Path, repo_id: &str, uuid: &str, target: &str) -> Option<PathBuf> {
    let safe = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    (safe(repo_id) && safe(uuid) && safe(target)).then(|| dir.join(repo_id).join(uuid).join(target))
}

/// Loads the cache if it was made for this chunk size and disk size.
pub fn load(path: &Path, chunk_size: u64, size: u64) -> Option<Vec<Entry>> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut head = [0u8; 24];
    f.read_exact(&mut head).ok()?;
    let word = |i: usize| u64::from_be_bytes(head[i..i + 8].try_into().unwrap_or_default());
    if &head[..8] != MAGIC || word(8) != chunk_size || word(16) != size {
        return None;
    }
    let mut body = Vec::new();
    f.read_to_end(&mut body).ok()?;
    if body.len() % 65 != 0 {
        return None;
    }
    let entries = body
        .chunks_exact(65)
        .map(|e| {
            let id = (e[0] == 1).then(|| e[1..33].try_into().unwrap_or_default());
            let mut state = [0u32; 8];
            for (s, b) in state.iter_mut().zip(e[33..].chunks_exact(4)) {
                *s = u32::from_be_bytes(b.try_into().unwrap_or_default());
            }
            Entry { id, state }
        })
        .collect();
    Some(entries)
}

/// Writes the cache atomically (temporary file, then rename).
pub fn save(path: &Path, chunk_size: u64, size: u64, entries: &[Entry]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut data = Vec::with_capacity(24 + entries.len() * 65);
    data.extend_from_slice(MAGIC);
    data.extend_from_slice(&chunk_size.to_be_bytes());
    data.extend_from_slice(&size.to_be_bytes());
    for e in entries {
        data.push(u8::from(e.id.is_some()));
        data.extend_from_slice(&e.id.unwrap_or([0; 32]));
        for w in e.state {
            data.extend_from_slice(&w.to_be_bytes());
        }
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&data)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)
}

/// Cache entries from an image's chunk ids and the states after each chunk.
pub fn entries(states: &[[u32; 8]], chunks: &[Option<String>]) -> Vec<Entry> {
    states
        .iter()
        .zip(chunks)
        .map(|(state, id)| Entry {
            id: id.as_deref().and_then(crate::crypt::unhex32),
            state: *state,
        })
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
        let entries = vec![
            Entry {
                id: Some([3; 32]),
                state: [1, 2, 3, 4, 5, 6, 7, 8],
            },
            Entry {
                id: None,
                state: IV,
            },
        ];
        save(&path, 64, 200, &entries).unwrap();
        assert_eq!(load(&path, 64, 200), Some(entries));
        assert_eq!(load(&path, 64, 201), None);
        assert!(cache_path(&dir, "abc", "../x", "vda").is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
