//! Cutting one disk into chunks: the stage between an open export and the
//! sealers. One thread reads the export in chunk order, asking block status
//! first so holes and zeros are never read; worker threads seal the chunks
//! (seal.rs), which is where the CPU goes, and hash each one as a piece of
//! the image's BLAKE3 tree (midstate.rs), so the image hash costs no pass
//! of its own and spreads over every core. Queues are bounded, so memory
//! stays at a few chunks per worker.
//!
//! What a reader must know to trust this stage:
//!
//! - A zero chunk is never stored: the chunk list says `null`, which reads
//!   as zeros, and the image hash still hashes its zeros (a worker does,
//!   unless the last backup's cache knows that piece).
//! - A chunk's piece of the image hash is taken from this host's cache only
//!   when its keyed-BLAKE3 id is the cached one at the same offset: equal
//!   ids mean equal bytes, so the root is what hashing everything gives.
//! - An incremental read skips the chunks the dirty bitmap leaves clean and
//!   takes their ids from the previous backup, whose files decide.rs found
//!   present, and their pieces of the hash from the cache; without them it
//!   records no image hash (see docs/backup-format.md).
//! - The reader stops between chunks when a worker failed or the VM was
//!   given up on (`--timeout`), and a panicked sync thread is a failure,
//!   never a success: a disk is stored only if every chunk is.

use crate::crypt;
use crate::format::Image;
use crate::mapped::Mapped;
use crate::midstate::{image_root, tree_fits, Cv, Entry, Tree};
use crate::nbd::{self, Extent};
use crate::seal::{self, Done, Piece, Sealer, Unsynced};
use hv_common::progress::Counter;
use hv_common::{runner, Code, Error, Result};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender};
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
    /// Each chunk's id and value from the last backup (a full read): an
    /// unchanged chunk's value is not computed again.
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
    /// The previous chunks' values, from this host's cache (or none).
    pub cvs: Vec<Cv>,
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
    /// Each chunk's value, for the next run's cache (none if not all known).
    pub cvs: Vec<Cv>,
}

/// Chunk buffers, used again once the sealer is done with them: a fresh 4 MiB buffer per chunk costs a thousand page faults (and
/// its clearing) each time.
pub struct Buffers {
    free: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl Buffers {
    fn new(keep: usize) -> Buffers {
        Buffers {
            free: Mutex::new(Vec::new()),
            keep,
        }
    }

    /// A buffer of `len` bytes whose contents are anything: the reader
    /// writes every byte of it.
    fn take(&self, len: usize) -> Vec<u8> {
        let mut buf = self
            .free
            .lock()
            .ok()
            .and_then(|mut f| f.pop())
            .unwrap_or_default();
        buf.resize(len, 0);
        buf
    }

    /// Takes `buf` back if the caller held the last reference.
    pub fn give(&self, buf: Arc<Vec<u8>>) {
        if let Ok(buf) = Arc::try_unwrap(buf) {
            if let Ok(mut free) = self.free.lock() {
                if free.len() < self.keep {
                    free.push(buf);
                }
            }
        }
    }
}

/// Reads the export of `client` into the repository: all of it, or with
/// [`Prior::Reuse`] only the changed chunks.
pub fn store_export(
    client: &mut nbd::Client,
    mapped: Option<&Mapped>,
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
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let (sync_tx, sync_rx) = mpsc::channel::<Unsynced>();
    let work_rx = Mutex::new(work_rx);

    let (known, reuse) = match prior {
        Prior::Nothing => (Vec::new(), None),
        Prior::Hashes(entries) => (entries, None),
        Prior::Reuse(reuse) => (Vec::new(), Some(reuse)),
    };
    let incremental = reuse.is_some();
    // The image is hashed as a tree when its pieces are whole subtrees;
    // an image of one piece is hashed whole.
    let tree = tree_fits(chunk).then_some(Tree {
        chunk_size: chunk,
        whole: count == 1,
        known,
    });
    // Every buffer in a queue or in a thread's hands, and a few to spare.
    let buffers = &Buffers::new(sealer.workers * 3 + 8);
    let (read_result, synced) = std::thread::scope(|s| {
        let syncer = s.spawn(|| seal::sync_loop(sync_rx, sealer));
        for _ in 0..sealer.workers {
            let (done_tx, sync_tx) = (done_tx.clone(), sync_tx.clone());
            let (work_rx, failed, tree) = (&work_rx, &failed, tree.as_ref());
            s.spawn(move || {
                seal::seal_loop(work_rx, done_tx, sync_tx, sealer, failed, buffers, tree)
            });
        }
        drop(done_tx);
        drop(sync_tx);
        let reader = Reader {
            chunk,
            count,
            work_tx: &work_tx,
            hashing: tree.is_some(),
            failed: &failed,
            progress: &sealer.progress,
            reuse: reuse.as_ref(),
            buffers,
            mapped,
        };
        let read = reader.run(client);
        drop(work_tx);
        let synced = syncer.join().unwrap_or_else(|p| {
            Err(Error::internal(format!(
                "syncing chunks to disk, nothing it held was committed: {}",
                hv_common::runner::panic_message(p.as_ref())
            )))
        });
        (read, synced)
    });
    let read = read_result.map_err(|e| in_disk(target, e))?;
    synced.map_err(|e| in_disk(target, e))?;
    let (mut chunks, mut refs) = (read.chunks, read.reused);
    let mut cvs = read.cvs;
    let mut counts = Counts {
        read_bytes: read.read,
        ..Counts::default()
    };
    for (i, result, cv) in done_rx {
        if let Some(c) = result.map_err(|e| in_disk(target, e))? {
            if let Some(written) = c.written {
                counts.new_bytes += chunk.min(size - i as u64 * chunk);
                counts.stored_bytes += written;
            }
            refs.push((c.id.clone(), c.body));
            chunks[i] = Some(c.id);
        }
        cvs[i] = cv;
    }
    // Every piece's value known (an incremental read takes the unchanged
    // ones from the cache): the image has its BLAKE3.
    let cvs: Vec<Cv> = match tree.is_some() {
        true => cvs.into_iter().collect::<Option<_>>().unwrap_or_default(),
        false => Vec::new(),
    };
    let blake3 = (cvs.len() == count).then(|| crypt::hex(&image_root(&cvs)));
    let image = Image {
        target: target.to_owned(),
        format: String::new(),
        source: None,
        virtual_size_bytes: size,
        sha256: None,
        blake3,
        read: Some(if incremental { "incremental" } else { "full" }.into()),
        base: None,
        chunks,
    };
    Ok(Stored {
        image,
        refs,
        counts,
        cvs,
    })
}

fn in_disk(target: &str, e: Error) -> Error {
    Error::new(e.code, format!("disk {target}: {}", e.message))
}

/// Stores a small regular file (the NVRAM) as an image of its own, read
/// whole and sealed chunk by chunk.
pub fn store_bytes(sealer: &Sealer, path: &Path, data: &[u8]) -> Result<Stored> {
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
        sha256: None,
        blake3: Some(crypt::hex(blake3::hash(data).as_bytes())),
        read: Some("full".into()),
        base: None,
        chunks,
    };
    Ok(Stored {
        image,
        refs,
        counts,
        cvs: Vec::new(),
    })
}

/// The reading side of [`store_export`].
struct Reader<'a> {
    chunk: u64,
    count: usize,
    work_tx: &'a SyncSender<Piece>,
    /// Whether the image is hashed: zero chunks go to the workers too.
    hashing: bool,
    failed: &'a AtomicBool,
    /// Bytes passed, for the progress line.
    progress: &'a Counter,
    reuse: Option<&'a Reuse>,
    buffers: &'a Buffers,
    /// Where the image's data lies in its file, read there directly.
    mapped: Option<&'a Mapped>,
}

/// What the reader gives back: the chunk list so far (zero and reused
/// chunks filled in, the others to come from the workers), bytes read, the
/// reused chunks with their body sizes, and each reused chunk's value.
struct ReadOutcome {
    chunks: Vec<Option<String>>,
    read: u64,
    reused: Vec<(String, u64)>,
    cvs: Vec<Option<Cv>>,
}

impl Reader<'_> {
    fn run(&self, client: &mut nbd::Client) -> Result<ReadOutcome> {
        let size = client.size();
        let mut map = ExtentMap::default();
        let mut out = ReadOutcome {
            chunks: vec![None; self.count],
            read: 0,
            reused: Vec::new(),
            cvs: vec![None; self.count],
        };
        for i in 0..self.count {
            if self.failed.load(Ordering::Relaxed) {
                break; // a worker failed; its error is reported
            }
            if runner::abandoned() {
                return Err(Error::new(Code::Timeout, "given up on at --timeout"));
            }
            let start = i as u64 * self.chunk;
            let len = self.chunk.min(size - start);
            self.progress.add(len);
            if let Some((id, cv)) = self.unchanged(i) {
                if let Some(id) = id {
                    let stored = self.reuse.and_then(|r| r.sizes.get(id)).copied();
                    out.reused.push((id.clone(), stored.unwrap_or_default()));
                }
                out.chunks[i] = id.clone();
                out.cvs[i] = cv;
                continue;
            }
            let data = read_chunk(
                client,
                self.mapped,
                &mut map,
                start,
                len,
                &mut out.read,
                self.buffers,
            )?;
            let piece = match data {
                Some(buf) => Piece::Data(i, buf),
                None if self.hashing => Piece::Zeros(i, len as usize),
                None => continue,
            };
            if self.work_tx.send(piece).is_err() {
                break;
            }
        }
        Ok(out)
    }

    /// The previous backup's id for chunk `i` when it has not changed, and
    /// its value if the cache knows it.
    fn unchanged(&self, i: usize) -> Option<(&Option<String>, Option<Cv>)> {
        let reuse = self.reuse?;
        if reuse.dirty.get(i).copied().unwrap_or(true) {
            return None;
        }
        let id = reuse.ids.get(i)?;
        Some((id, reuse.cvs.get(i).copied()))
    }
}

fn read_chunk(
    client: &mut nbd::Client,
    mapped: Option<&Mapped>,
    map: &mut ExtentMap,
    start: u64,
    len: u64,
    read: &mut u64,
    buffers: &Buffers,
) -> Result<Option<Arc<Vec<u8>>>> {
    let extents = map.covering(client, start, len)?;
    if extents.iter().all(|e| e.zero) {
        return Ok(None);
    }
    // A used buffer: every byte is written below, zeros where the export
    // says so (and everywhere first, should its extents leave a gap).
    let mut buf = buffers.take(len as usize);
    if extents.iter().map(|e| e.length).sum::<u64>() != len {
        buf.fill(0);
    }
    for e in extents.iter().filter(|e| e.zero) {
        let from = (e.offset - start) as usize;
        buf[from..from + e.length as usize].fill(0);
    }
    for e in extents.iter().filter(|e| !e.zero) {
        let from = (e.offset - start) as usize;
        let dest = &mut buf[from..from + e.length as usize];
        let err = |err: std::io::Error| {
            Error::new(
                Code::Io,
                format!("cannot read at offset {}: {err}", e.offset),
            )
        };
        let direct = match mapped {
            Some(m) => m.read_at(e.offset, dest).map_err(err)?,
            None => false,
        };
        if !direct {
            client.read_at(e.offset, dest).map_err(err)?;
        }
        *read += e.length;
    }
    if is_zero(&buf) {
        buffers.give(Arc::new(buf));
        return Ok(None);
    }
    Ok(Some(Arc::new(buf)))
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
