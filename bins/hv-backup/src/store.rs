//! Turning one disk into stored chunks. One thread reads the export in
//! chunk order, asking block status first so holes and zeros are never
//! read; one thread hashes the whole image (SHA-256 is sequential); worker
//! threads id, compress, encrypt and write chunks, which is where the CPU
//! goes; one thread syncs and renames written chunks, so workers never wait
//! for the disk. The hashing thread resumes from this host's midstate cache
//! while the disk matches its previous backup. Queues are bounded, so memory
//! stays at a few chunks per worker.

use crate::crypt::{self, ChunkKey, Recipients};
use crate::format::Image;
use crate::midstate::{Entry, ImageHash};
use crate::nbd::{self, Extent};
use crate::repo::Repo;
use hv_common::{Code, Error, Result};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

/// What writing chunks needs, shared by every disk of a run.
pub struct Sealer {
    pub repo: Arc<Repo>,
    pub key: ChunkKey,
    pub recipients: Recipients,
    pub level: i32,
    pub workers: usize,
    /// Chunks already stored in this run: id → stored size.
    pub seen: Mutex<HashMap<String, u64>>,
    /// Bytes done, for the progress line.
    pub progress: AtomicU64,
}

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

/// A stored image and, per chunk id it references, that chunk's stored size.
pub struct Stored {
    pub image: Image,
    pub refs: Vec<(String, u64)>,
    pub counts: Counts,
    /// The hash state after each full chunk, for the next run's cache.
    pub states: Vec<[u32; 8]>,
}

type Piece = (usize, Arc<Vec<u8>>);
type Done = (usize, Result<(String, u64, bool)>);
/// A written, not yet synced chunk: its temporary path, id and size.
type Unsynced = (PathBuf, String, u64);

/// Reads the whole export of `client` into the repository. `cache` is the
/// midstate cache of this disk's previous backup, if this host has one.
pub fn store_export(
    client: &mut nbd::Client,
    sealer: &Sealer,
    target: &str,
    cache: Option<Vec<Entry>>,
) -> Result<Stored> {
    let size = client.size();
    let chunk = sealer.repo.config.chunk_size;
    let count = size.div_ceil(chunk) as usize;
    let failed = AtomicBool::new(false);
    let (work_tx, work_rx) = mpsc::sync_channel::<Piece>(sealer.workers * 2);
    let (hash_tx, hash_rx) = mpsc::sync_channel::<(Arc<Vec<u8>>, bool)>(4);
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let (sync_tx, sync_rx) = mpsc::channel::<Unsynced>();
    let work_rx = Mutex::new(work_rx);

    let (read_result, hashed, synced) = std::thread::scope(|s| {
        let key = sealer.key;
        let hasher = s.spawn(move || hash_all(hash_rx, chunk, &key, cache));
        let syncer = s.spawn(|| sync_loop(sync_rx, sealer));
        for _ in 0..sealer.workers {
            let (done_tx, sync_tx) = (done_tx.clone(), sync_tx.clone());
            let (work_rx, failed) = (&work_rx, &failed);
            s.spawn(move || seal_loop(work_rx, done_tx, sync_tx, sealer, failed));
        }
        drop(done_tx);
        drop(sync_tx);
        let read = read_chunks(client, chunk, count, &work_tx, &hash_tx, &failed, sealer);
        drop(work_tx);
        drop(hash_tx);
        let hashed = hasher.join().unwrap_or_default();
        (read, hashed, syncer.join().unwrap_or(Ok(())))
    });
    let (sha, states) = hashed;
    let (mut chunks, read_bytes) = read_result.map_err(|e| in_disk(target, e))?;
    synced.map_err(|e| in_disk(target, e))?;
    let mut counts = Counts {
        read_bytes,
        ..Counts::default()
    };
    let mut refs = Vec::new();
    for (i, result) in done_rx {
        let (id, stored, new) = result.map_err(|e| in_disk(target, e))?;
        if new {
            counts.new_bytes += chunk.min(size - i as u64 * chunk);
            counts.stored_bytes += stored;
        }
        refs.push((id.clone(), stored));
        chunks[i] = Some(id);
    }
    let image = Image {
        target: target.to_owned(),
        format: String::new(),
        source: None,
        virtual_size_bytes: size,
        sha256: crypt::hex(&sha),
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

/// The reader: returns the chunk list with zero chunks filled in (the
/// others are filled from the workers' results) and the bytes read.
fn read_chunks(
    client: &mut nbd::Client,
    chunk: u64,
    count: usize,
    work_tx: &SyncSender<Piece>,
    hash_tx: &SyncSender<(Arc<Vec<u8>>, bool)>,
    failed: &AtomicBool,
    sealer: &Sealer,
) -> Result<(Vec<Option<String>>, u64)> {
    let size = client.size();
    let zeros = Arc::new(vec![0u8; chunk as usize]);
    let mut map = ExtentMap::default();
    let mut read = 0;
    let chunks = vec![None; count];
    for i in 0..count {
        if failed.load(Ordering::Relaxed) {
            break; // a worker failed; its error is reported
        }
        let start = i as u64 * chunk;
        let len = chunk.min(size - start);
        let extents = map.covering(client, start, len)?;
        let data = if extents.iter().all(|e| e.zero) {
            None
        } else {
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
                read += e.length;
            }
            (!is_zero(&buf)).then(|| Arc::new(buf))
        };
        sealer.progress.fetch_add(len, Ordering::Relaxed);
        let for_hash = match &data {
            Some(buf) => (buf.clone(), false),
            None if len == chunk => (zeros.clone(), true),
            None => (Arc::new(vec![0u8; len as usize]), true),
        };
        if hash_tx.send(for_hash).is_err() {
            break;
        }
        if let Some(buf) = data {
            if work_tx.send((i, buf)).is_err() {
                break;
            }
        }
    }
    Ok((chunks, read))
}

/// Hashes the image in order, resuming from the cache while the chunks
/// match it. Returns the digest and the state after each full chunk.
fn hash_all(
    rx: Receiver<(Arc<Vec<u8>>, bool)>,
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

/// Makes written chunks durable and visible: sync, then rename into place.
fn sync_loop(rx: Receiver<Unsynced>, sealer: &Sealer) -> Result<()> {
    let mut first_error = None;
    for (tmp, id, size) in rx {
        if first_error.is_some() {
            let _ = std::fs::remove_file(&tmp);
            continue;
        }
        match sealer.repo.commit_chunk(&tmp, &id) {
            Ok(()) => remember(sealer, &id, size),
            Err(e) => first_error = Some(e),
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn seal_loop(
    work_rx: &Mutex<Receiver<Piece>>,
    done_tx: mpsc::Sender<Done>,
    sync_tx: mpsc::Sender<Unsynced>,
    sealer: &Sealer,
    failed: &AtomicBool,
) {
    loop {
        let next = work_rx.lock().map(|rx| rx.recv());
        let Ok(Ok((i, buf))) = next else { return };
        let result = seal_with(sealer, &buf, |unsynced| {
            let _ = sync_tx.send(unsynced); // the sync thread reports its own failures
            Ok(())
        });
        if result.is_err() {
            failed.store(true, Ordering::Relaxed);
        }
        if done_tx.send((i, result)).is_err() {
            return;
        }
    }
}

/// Ids a chunk and, unless the repository already has it, seals and writes
/// it to `tmp/`, handing the file to `finish` (the sync thread, or an
/// immediate commit): (id, stored size, newly written).
fn seal_with(
    sealer: &Sealer,
    plain: &[u8],
    finish: impl FnOnce(Unsynced) -> Result<()>,
) -> Result<(String, u64, bool)> {
    let id = crypt::chunk_id(&sealer.key, plain);
    if let Some(size) = known_size(sealer, &id) {
        return Ok((id, size, false));
    }
    let sealed = crypt::seal_chunk(&sealer.recipients, sealer.level, plain)?;
    let tmp = sealer.repo.write_chunk_unsynced(&sealed)?;
    let size = sealed.len() as u64;
    finish((tmp, id.clone(), size))?;
    Ok((id, size, true))
}

/// [`seal_with`], committing the chunk before it returns.
pub fn seal_one(sealer: &Sealer, plain: &[u8]) -> Result<(String, u64, bool)> {
    seal_with(sealer, plain, |(tmp, id, size)| {
        sealer.repo.commit_chunk(&tmp, &id)?;
        remember(sealer, &id, size);
        Ok(())
    })
}

/// The stored size of a chunk this run or an earlier one stored.
fn known_size(sealer: &Sealer, id: &str) -> Option<u64> {
    if let Some(size) = sealer.seen.lock().ok().and_then(|m| m.get(id).copied()) {
        return Some(size);
    }
    let size = sealer.repo.chunk_size_on_disk(id)?;
    remember(sealer, id, size);
    Some(size)
}

fn remember(sealer: &Sealer, id: &str, size: u64) {
    if let Ok(mut m) = sealer.seen.lock() {
        m.insert(id.to_owned(), size);
    }
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
