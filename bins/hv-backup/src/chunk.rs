//! Cutting one disk into chunks: the stage between an open export and the
//! sealers. One thread reads the export in chunk order, asking block status
//! first so holes and zeros are never read; one thread hashes the whole
//! image (SHA-256 is sequential); worker threads seal the chunks (seal.rs),
//! which is where the CPU goes. Queues are bounded, so memory stays at a
//! few chunks per worker.
//!
//! What a reader must know to trust this stage:
//!
//! - A zero chunk is never stored: the chunk list says `null`, which reads
//!   as zeros, and the image hash still hashes its zeros.
//! - The hashing thread resumes from this host's midstate cache while the
//!   chunk ids match the previous backup's (midstate.rs): equal keyed-BLAKE3
//!   ids mean equal bytes, so the digest is what hashing everything gives.
//! - An incremental read skips the chunks the dirty bitmap leaves clean and
//!   takes their ids from the previous backup, whose files decide.rs found
//!   present; it cannot hash the whole image without reading it, so it
//!   records no image SHA-256 (see docs/backup-format.md).
//! - The reader stops between chunks when a worker failed or the VM was
//!   given up on (`--timeout`), and a panicked hashing or sync thread is a
//!   failure, never a success: a disk is stored only if every chunk is.

use crate::crypt::{self, ChunkKey};
use crate::format::Image;
use crate::midstate::{Entry, ImageHash};
use crate::nbd::{self, Extent};
use crate::seal::{self, Done, Piece, Sealer, Unsynced};
use hv_common::progress::Counter;
use hv_common::{runner, Code, Error, Result};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub read_bytes: u64,
    pub new_bytes: u64,
    pub stored_bytes: u64,
}

impl Counts {
    pub fn add(&mut self, o: Counts) {
        self.read_bytes += o.read_bytes;
        self.new_bytes += o.new_bytes;
        self.stored_bytes += o.stored_bytes;
    }
}

/// What the previous backup of a disk lets this one skip.
pub enum Prior {
    /// Nothing: read and hash everything.
    Nothing,
    /// Hash states to resume from while the chunks match (a full read).
    Hashes(Vec<Entry>),
    /// Read only the changed chunks and take the others from the previous backup.
    Reuse(Reuse),
}

/// An incremental read's plan for one disk.
pub struct Reuse {
    /// The previous backup's chunk list (`None`: zeros).
    pub ids: Vec<Option<String>>,
    /// Per chunk: touched since the previous backup.
    pub dirty: Vec<bool>,
    /// Body sizes of the previous chunks, all present in the repository.
    pub sizes: HashMap<String, u64>,
}

impl Reuse {
    /// Marks the chunks of `chunk_size` that any of `ranges` touches.
    pub fn dirty_chunks(ranges: &[(u64, u64)], chunk_size: u64, count: usize) -> Vec<bool> {
        let mut dirty = vec![false; count];
        for &(offset, length) in ranges.iter().filter(|r| r.1 > 0) {
            let first = (offset / chunk_size) as usize;
            let last = ((offset + length - 1) / chunk_size) as usize;
            for d in dirty.iter_mut().take(last + 1).skip(first) {
                *d = true;
            }
        }
        dirty
    }
}

/// A stored image and, per chunk id it references, that chunk's body size.
pub struct Stored {
    pub image: Image,
    pub refs: Vec<(String, u64)>,
    pub counts: Counts,
    /// The hash state after each full chunk, for the next run's cache.
    pub states: Vec<[u32; 8]>,
}

/// A chunk's bytes for the image hash, and whether they are all zeros.
type ForHash = (Arc<Vec<u8>>, bool);

/// Reads the export of `client` into the repository: all of it, or with
/// [`Prior::Reuse`] only the changed chunks.
pub fn store_export(
    client: &mut nbd::Client,
    sealer: &Sealer,
    target: &str,
    prior: Prior,
) -> Result<Stored> {
    let size = client.size();
    // The progress line's total grows as each disk's export opens.
    sealer.progress.total.fetch_add(size, Ordering::Relaxed);
    let chunk = sealer.repo.config.chunk_size;
    let count = size.div_ceil(chunk) as usize;
    let failed = AtomicBool::new(false);
    let (work_tx, work_rx) = mpsc::sync_channel::<Piece>(sealer.workers * 2);
    let (hash_tx, hash_rx) = mpsc::sync_channel::<ForHash>(4);
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let (sync_tx, sync_rx) = mpsc::channel::<Unsynced>();
    let work_rx = Mutex::new(work_rx);

    let (cache, reuse) = match prior {
        Prior::Nothing => (None, None),
        Prior::Hashes(entries) => (Some(entries), None),
        Prior::Reuse(reuse) => (None, Some(reuse)),
    };
    let hashing = reuse.is_none();
    let (read_result, hashed, synced) = std::thread::scope(|s| {
        let key = sealer.key;
        let hasher = s.spawn(move || hashing.then(|| hash_all(hash_rx, chunk, &key, cache)));
        let syncer = s.spawn(|| seal::sync_loop(sync_rx, sealer));
        for _ in 0..sealer.workers {
            let (done_tx, sync_tx) = (done_tx.clone(), sync_tx.clone());
            let (work_rx, failed) = (&work_rx, &failed);
            s.spawn(move || seal::seal_loop(work_rx, done_tx, sync_tx, sealer, failed));
        }
        drop(done_tx);
        drop(sync_tx);
        let reader = Reader {
            chunk,
            count,
            work_tx: &work_tx,
            hash_tx: hashing.then_some(&hash_tx),
            failed: &failed,
            progress: &sealer.progress,
            reuse: reuse.as_ref(),
        };
        let read = reader.run(client);
        drop(work_tx);
        drop(hash_tx);
        let hashed = hasher.join().map_err(|p| {
            Error::internal(format!(
                "hashing the disk: {}",
                hv_common::runner::panic_message(p.as_ref())
            ))
        });
        let synced = syncer.join().unwrap_or_else(|p| {
            Err(Error::internal(format!(
                "syncing chunks to disk, nothing it held was committed: {}",
                hv_common::runner::panic_message(p.as_ref())
            )))
        });
        (read, hashed, synced)
    });
    let (sha, states) = match hashed.map_err(|e| in_disk(target, e))? {
        Some((sha, states)) => (Some(crypt::hex(&sha)), states),
        None => (None, Vec::new()),
    };
    let (mut chunks, read_bytes, mut refs) = read_result.map_err(|e| in_disk(target, e))?;
    synced.map_err(|e| in_disk(target, e))?;
    let mut counts = Counts {
        read_bytes,
        ..Counts::default()
    };
    for (i, result) in done_rx {
        let c = result.map_err(|e| in_disk(target, e))?;
        if let Some(written) = c.written {
            counts.new_bytes += chunk.min(size - i as u64 * chunk);
            counts.stored_bytes += written;
        }
        refs.push((c.id.clone(), c.body));
        chunks[i] = Some(c.id);
    }
    let image = Image {
        target: target.to_owned(),
        format: String::new(),
        source: None,
        virtual_size_bytes: size,
        sha256: sha,
        read: Some(if hashing { "full" } else { "incremental" }.into()),
        base: None,
        chunks,
    };
    Ok(Stored {
        image,
        refs,
        counts,
        states,
    })
}

fn in_disk(target: &str, e: Error) -> Error {
    Error::new(e.code, format!("disk {target}: {}", e.message))
}

/// Stores a small regular file (the NVRAM) as an image of its own, read
/// whole and sealed chunk by chunk.
pub fn store_file(sealer: &Sealer, path: &Path) -> Result<Stored> {
    let data = std::fs::read(path)
        .map_err(|e| Error::io(format!("cannot read NVRAM {}", path.display()), e))?;
    let chunk = sealer.repo.config.chunk_size as usize;
    let mut counts = Counts {
        read_bytes: data.len() as u64,
        ..Counts::default()
    };
    let mut chunks = Vec::new();
    let mut refs = Vec::new();
    for piece in data.chunks(chunk) {
        if is_zero(piece) {
            chunks.push(None);
            continue;
        }
        let c = seal::seal_one(sealer, piece)?;
        if let Some(written) = c.written {
            counts.new_bytes += piece.len() as u64;
            counts.stored_bytes += written;
        }
        refs.push((c.id.clone(), c.body));
        chunks.push(Some(c.id));
    }
    let image = Image {
        target: "nvram".into(),
        format: "raw".into(),
        source: Some(path.display().to_string()),
        virtual_size_bytes: data.len() as u64,
        sha256: Some(crypt::hex(&Sha256::digest(&data))),
        read: Some("full".into()),
        base: None,
        chunks,
    };
    Ok(Stored {
        image,
        refs,
        counts,
        states: Vec::new(),
    })
}

/// The reading side of [`store_export`].
struct Reader<'a> {
    chunk: u64,
    count: usize,
    work_tx: &'a SyncSender<Piece>,
    /// Where every chunk's bytes go for the image hash; none when incremental.
    hash_tx: Option<&'a SyncSender<ForHash>>,
    failed: &'a AtomicBool,
    /// Bytes passed, for the progress line.
    progress: &'a Counter,
    reuse: Option<&'a Reuse>,
}

/// The chunk list so far (zero and reused chunks filled in, the others
/// come from the workers), bytes read, and the reused chunks' references.
type ReadOutcome = (Vec<Option<String>>, u64, Vec<(String, u64)>);

impl Reader<'_> {
    fn run(&self, client: &mut nbd::Client) -> Result<ReadOutcome> {
        let size = client.size();
        let zeros = Arc::new(vec![0u8; self.chunk as usize]);
        let mut map = ExtentMap::default();
        let mut read = 0;
        let mut chunks = vec![None; self.count];
        let mut reused = Vec::new();
        for (i, slot) in chunks.iter_mut().enumerate() {
            if self.failed.load(Ordering::Relaxed) {
                break; // a worker failed; its error is reported
            }
            if runner::abandoned() {
                return Err(Error::new(Code::Timeout, "given up on at --timeout"));
            }
            let start = i as u64 * self.chunk;
            let len = self.chunk.min(size - start);
            self.progress.add(len);
            if let Some(id) = self.unchanged(i) {
                if let Some(id) = id {
                    let stored = self.reuse.and_then(|r| r.sizes.get(id)).copied();
                    reused.push((id.clone(), stored.unwrap_or_default()));
                }
                *slot = id.clone();
                continue;
            }
            let data = read_chunk(client, &mut map, start, len, &mut read)?;
            if let Some(hash_tx) = self.hash_tx {
                let for_hash = match &data {
                    Some(buf) => (buf.clone(), false),
                    None if len == self.chunk => (zeros.clone(), true),
                    None => (Arc::new(vec![0u8; len as usize]), true),
                };
                if hash_tx.send(for_hash).is_err() {
                    break;
                }
            }
            if let Some(buf) = data {
                if self.work_tx.send((i, buf)).is_err() {
                    break;
                }
            }
        }
        Ok((chunks, read, reused))
    }

    /// The previous backup's id for chunk `i` when it has not changed.
    fn unchanged(&self, i: usize) -> Option<&Option<String>> {
        let reuse = self.reuse?;
        (!reuse.dirty.get(i).copied().unwrap_or(true))
            .then(|| reuse.ids.get(i))
            .flatten()
    }
}

/// Reads one chunk's allocated, non-zero extents; `None` when it is all zeros.
fn read_chunk(
    client: &mut nbd::Client,
    map: &mut ExtentMap,
    start: u64,
    len: u64,
    read: &mut u64,
) -> Result<Option<Arc<Vec<u8>>>> {
    let extents = map.covering(client, start, len)?;
    if extents.iter().all(|e| e.zero) {
        return Ok(None);
    }
    let mut buf = vec![0u8; len as usize];
    for e in extents.iter().filter(|e| !e.zero) {
        let from = (e.offset - start) as usize;
        client
            .read_at(e.offset, &mut buf[from..from + e.length as usize])
            .map_err(|err| {
                Error::new(
                    Code::Io,
                    format!("cannot read at offset {}: {err}", e.offset),
                )
            })?;
        *read += e.length;
    }
    Ok((!is_zero(&buf)).then(|| Arc::new(buf)))
}

/// Hashes the image in order, resuming from the cache while the chunks
/// match it. Returns the digest and the state after each full chunk.
fn hash_all(
    rx: Receiver<ForHash>,
    chunk: u64,
    key: &ChunkKey,
    cache: Option<Vec<Entry>>,
) -> ([u8; 32], Vec<[u32; 8]>) {
    let mut h = ImageHash::default();
    let mut states = Vec::new();
    let mut cache = cache.unwrap_or_default().into_iter();
    let mut matching = true;
    let mut last: Option<Arc<Vec<u8>>> = None;
    for (buf, zero) in rx {
        if buf.len() as u64 != chunk {
            last = Some(buf); // only the final chunk can be short
            break;
        }
        if matching {
            let id = (!zero).then(|| *blake3::keyed_hash(key, &buf).as_bytes());
            match cache.next() {
                Some(entry) if entry.id == id => {
                    h.state = entry.state;
                    h.len += chunk;
                    states.push(h.state);
                    continue;
                }
                _ => matching = false,
            }
        }
        h.update_blocks(&buf);
        states.push(h.state);
    }
    let tail = last.as_deref().map(Vec::as_slice).unwrap_or_default();
    (h.finish(tail), states)
}

/// True when every byte is zero; word-wise so it vectorises.
pub fn is_zero(buf: &[u8]) -> bool {
    let mut words = buf.chunks_exact(16);
    let body = words
        .by_ref()
        .all(|w| u128::from_ne_bytes(w.try_into().unwrap_or([1; 16])) == 0);
    body && words.remainder().iter().all(|&b| b == 0)
}

/// Block status answers cached ahead of the reader, so a disk costs one
/// query per gigabyte or so, not one per chunk.
#[derive(Default)]
struct ExtentMap {
    known: Vec<Extent>,
}

const QUERY_SPAN: u64 = 1 << 30;

impl ExtentMap {
    /// The extents covering `[start, start+len)`, clipped to it.
    fn covering(&mut self, client: &mut nbd::Client, start: u64, len: u64) -> Result<Vec<Extent>> {
        let end = start + len;
        self.known.retain(|e| e.offset + e.length > start);
        loop {
            let known_end = self
                .known
                .last()
                .map(|e| e.offset + e.length)
                .unwrap_or(start);
            if known_end >= end {
                break;
            }
            let span = (client.size() - known_end).min(QUERY_SPAN) as u32;
            let got = client.extents(known_end, span).map_err(|e| {
                Error::new(
                    Code::Io,
                    format!("cannot query allocation at {known_end}: {e}"),
                )
            })?;
            self.known.extend(got);
        }
        Ok(self
            .known
            .iter()
            .filter(|e| e.offset < end && e.offset + e.length > start)
            .map(|e| {
                let from = e.offset.max(start);
                let to = (e.offset + e.length).min(end);
                Extent {
                    offset: from,
                    length: to - from,
                    zero: e.zero,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_ranges_mark_every_chunk_they_touch() {
        let d = Reuse::dirty_chunks(&[(0, 1), (4095, 2), (10 * 1024, 0)], 1024, 12);
        let marked: Vec<usize> = (0..12).filter(|&i| d[i]).collect();
        assert_eq!(marked, [0, 3, 4]);
        assert!(Reuse::dirty_chunks(&[(11 * 1024, 5000)], 1024, 12)[11]);
    }

    #[test]
    fn zero_detection_sees_the_last_byte() {
        let mut b = vec![0u8; 4099];
        assert!(is_zero(&b));
        b[4098] = 1;
        assert!(!is_zero(&b));
        b[4098] = 0;
        b[17] = 1;
        assert!(!is_zero(&b));
    }
}
