//! Turning one disk into stored chunks. One thread reads the export in
//! chunk order, asking block status first so holes and zeros are never
//! read; one thread hashes the whole image (SHA-256 is sequential); worker
//! threads id, compress, encrypt and write chunks, which is where the CPU
//! goes. Queues are bounded, so memory stays at a few chunks per worker.

use crate::crypt::{self, ChunkKey, Recipients};
use crate::format::Image;
use crate::nbd::{self, Extent};
use crate::repo::Repo;
use hv_common::{Code, Error, Result};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
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
}

type Piece = (usize, Arc<Vec<u8>>);
type Done = (usize, Result<(String, u64, bool)>);

/// Reads the whole export of `client` into the repository.
pub fn store_export(client: &mut nbd::Client, sealer: &Sealer, target: &str) -> Result<Stored> {
    let size = client.size();
    let chunk = sealer.repo.config.chunk_size;
    let count = size.div_ceil(chunk) as usize;
    let failed = AtomicBool::new(false);
    let (work_tx, work_rx) = mpsc::sync_channel::<Piece>(sealer.workers * 2);
    let (hash_tx, hash_rx) = mpsc::sync_channel::<Arc<Vec<u8>>>(4);
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let work_rx = Mutex::new(work_rx);

    let (read_result, sha) = std::thread::scope(|s| {
        let hasher = s.spawn(move || hash_all(hash_rx));
        for _ in 0..sealer.workers {
            let done_tx = done_tx.clone();
            let (work_rx, failed) = (&work_rx, &failed);
            s.spawn(move || seal_loop(work_rx, done_tx, sealer, failed));
        }
        drop(done_tx);
        let read = read_chunks(client, chunk, count, &work_tx, &hash_tx, &failed, sealer);
        drop(work_tx);
        drop(hash_tx);
        (read, hasher.join().unwrap_or_default())
    });
    let (mut chunks, read_bytes) = read_result.map_err(|e| in_disk(target, e))?;
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
    hash_tx: &SyncSender<Arc<Vec<u8>>>,
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
            Some(buf) => buf.clone(),
            None if len == chunk => zeros.clone(),
            None => Arc::new(vec![0u8; len as usize]),
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

fn hash_all(rx: Receiver<Arc<Vec<u8>>>) -> [u8; 32] {
    let mut h = Sha256::new();
    for buf in rx {
        h.update(&buf[..]);
    }
    h.finalize().into()
}

fn seal_loop(
    work_rx: &Mutex<Receiver<Piece>>,
    done_tx: mpsc::Sender<Done>,
    sealer: &Sealer,
    failed: &AtomicBool,
) {
    loop {
        let next = work_rx.lock().map(|rx| rx.recv());
        let Ok(Ok((i, buf))) = next else { return };
        let result = seal_one(sealer, &buf);
        if result.is_err() {
            failed.store(true, Ordering::Relaxed);
        }
        if done_tx.send((i, result)).is_err() {
            return;
        }
    }
}

/// Ids a chunk and stores it unless the repository already has it:
/// (id, stored size, newly written).
pub fn seal_one(sealer: &Sealer, plain: &[u8]) -> Result<(String, u64, bool)> {
    let id = crypt::chunk_id(&sealer.key, plain);
    if let Some(&size) = sealer
        .seen
        .lock()
        .ok()
        .and_then(|m| m.get(&id).copied())
        .as_ref()
    {
        return Ok((id, size, false));
    }
    if let Some(size) = sealer.repo.chunk_size_on_disk(&id) {
        remember(sealer, &id, size);
        return Ok((id, size, false));
    }
    let sealed = crypt::seal_chunk(&sealer.recipients, sealer.level, plain)?;
    let size = sealer.repo.put_chunk(&id, &sealed)?;
    remember(sealer, &id, size);
    Ok((id, size, true))
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
