//! Sealing: one plaintext chunk becomes one chunk file. Its id is the
//! keyed BLAKE3 of the plaintext, so equal data is stored once and the
//! repository alone cannot be tested for known plaintext; its file is
//! age(zstd(plaintext)) (docs/backup-format.md).
//!
//! What a reader must know to trust this stage:
//!
//! - A chunk counts as stored only once its file is synced and renamed to
//!   its id: workers write to `tmp/`, and one sync thread syncs and renames
//!   (so workers never wait for the disk). The chunk directories are synced
//!   at commit, before the backup that needs them is renamed into place.
//! - Claims ([`Seen`]) keep two workers of one run, reading clones of one
//!   template at once, from sealing and writing the same chunk and both
//!   counting it as new. A chunk file that is present but damaged is sealed
//!   again; its twin replaces it.
//! - A chunk whose write or sync failed is released and its temporary file
//!   removed, so nothing half-written ever carries an id.

use crate::crypt::{self, ChunkKey};
use crate::midstate::{Cv, Tree};
use crate::repo::{Pending, Repo, Sealed};
use hv_common::{Code, Error, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What sealing chunks needs, shared by every disk of a run (and, through
/// `progress`, what the readers count).
pub struct Sealer {
    pub repo: Arc<Repo>,
    pub key: ChunkKey,
    pub workers: usize,
    /// Chunks this run stored, found stored, or is storing.
    pub seen: Seen,
    /// Bytes done, for the progress line.
    pub progress: Arc<hv_common::progress::Counter>,
}

/// A piece of an image for a worker, by its index in the image: a chunk
/// to seal (and hash), or a run of zeros only to hash.
pub enum Piece {
    Data(usize, Arc<Vec<u8>>),
    Zeros(usize, usize),
}
/// What a worker made of a piece: the sealed chunk (none for zeros) or
/// why not, and the piece's value when the image is hashed.
pub type Done = (usize, Result<Option<Chunk>>, Option<Cv>);
/// A written, not yet synced chunk: its temporary path, id and body size.
pub type Unsynced = (Pending, String, u64);

thread_local! {
    /// Zeros to hash a hole's piece of the image from.
    static ZEROS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A worker: seals the pieces it takes from `work_rx`, hands written
/// chunks to the sync thread, and reports each on `done_tx`; on a failure
/// it sets `failed`, which stops the reader.
pub fn seal_loop(
    work_rx: &Mutex<Receiver<Piece>>,
    done_tx: mpsc::Sender<Done>,
    sync_tx: mpsc::Sender<Unsynced>,
    sealer: &Sealer,
    failed: &AtomicBool,
    buffers: &crate::chunk::Buffers,
    tree: Option<&Tree>,
) {
    loop {
        let next = work_rx.lock().map(|rx| rx.recv());
        let (i, buf) = match next {
            Ok(Ok(Piece::Data(i, buf))) => (i, buf),
            Ok(Ok(Piece::Zeros(i, len))) => {
                let cv = tree.map(|t| {
                    ZEROS.with(|z| {
                        let mut z = z.borrow_mut();
                        if z.len() < len {
                            z.resize(len, 0);
                        }
                        t.cv(i, None, &z[..len])
                    })
                });
                if done_tx.send((i, Ok(None), cv)).is_err() {
                    return;
                }
                continue;
            }
            _ => return,
        };
        let result = seal_with(sealer, &buf, |unsynced| {
            // The sync thread reports its own failures, and releases the claim.
            if let Err(mpsc::SendError((tmp, id, _))) = sync_tx.send(unsynced) {
                tmp.discard();
                sealer.seen.release(&id);
                return Err(Error::new(Code::Io, "the chunk sync thread is gone"));
            }
            Ok(())
        });
        let cv = match (&result, tree) {
            (Ok(c), Some(t)) => Some(t.cv(i, crypt::unhex32(&c.id), &buf)),
            _ => None,
        };
        buffers.give(buf);
        if result.is_err() {
            failed.store(true, Ordering::Relaxed);
        }
        if done_tx.send((i, result.map(Some), cv)).is_err() {
            return;
        }
    }
}

/// One chunk of an image as stored: its id, its body size (the same
/// whichever run sealed it), and its file size when this call wrote it.
pub struct Chunk {
    pub id: String,
    pub body: u64,
    pub written: Option<u64>,
}

/// Ids a chunk and, unless the repository already has it or another
/// worker of this run is storing it, seals and writes it to `tmp/`,
/// handing the file to `finish` (the sync thread, or an immediate commit).
fn seal_with(
    sealer: &Sealer,
    plain: &[u8],
    finish: impl FnOnce(Unsynced) -> Result<()>,
) -> Result<Chunk> {
    let id = crypt::chunk_id(&sealer.key, plain);
    if let Claim::Stored(body) = sealer.seen.claim(&id, &sealer.repo) {
        return Ok(Chunk {
            id,
            body,
            written: None,
        });
    }
    let written = crypt::seal_chunk(
        &sealer.repo.recipients,
        sealer.repo.config.compression_level,
        plain,
    )
    .and_then(|(sealed, body)| {
        let tmp = sealer.repo.write_chunk_unsynced(&id, &sealed)?;
        Ok((tmp, body, sealed.len() as u64))
    });
    let (tmp, body, whole) = match written {
        Ok(w) => w,
        Err(e) => {
            sealer.seen.release(&id);
            return Err(e);
        }
    };
    finish((tmp, id.clone(), body))?;
    Ok(Chunk {
        id,
        body,
        written: Some(whole),
    })
}

/// [`seal_with`], committing the chunk before it returns.
pub fn seal_one(sealer: &Sealer, plain: &[u8]) -> Result<Chunk> {
    seal_with(sealer, plain, |(tmp, id, body)| {
        match sealer.repo.commit_chunk(&tmp, &id) {
            Ok(()) => sealer.seen.stored(&id, body),
            Err(e) => {
                sealer.seen.release(&id);
                return Err(e);
            }
        }
        Ok(())
    })
}

/// Makes written chunks durable and visible: sync, then rename into place.
pub fn sync_loop(rx: Receiver<Unsynced>, sealer: &Sealer) -> Result<()> {
    let mut first_error = None;
    for (tmp, id, body) in rx {
        if first_error.is_some() {
            tmp.discard();
            sealer.seen.release(&id);
            continue;
        }
        match sealer.repo.commit_chunk(&tmp, &id) {
            Ok(()) => sealer.seen.stored(&id, body),
            Err(e) => {
                sealer.seen.release(&id);
                first_error = Some(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The chunks of one run, shared by all its disks: which are stored, and
/// which a worker is storing now. Clones of one template share most
/// chunks, and their disks are read at once; without claims two workers
/// would seal and write the same chunk, and both count it as new.
#[derive(Default)]
pub struct Seen {
    chunks: Mutex<HashMap<String, Slot>>,
    changed: Condvar,
}

enum Slot {
    /// A worker is sealing it; it is not yet in the repository.
    Claimed,
    /// In the repository, with this body size.
    Stored(u64),
}

enum Claim {
    Stored(u64),
    /// The caller must store it, and then call [`Seen::stored`] or [`Seen::release`].
    Mine,
}

/// How long a worker waits for another to store a chunk before it stores
/// its own copy (an equal one: the rename replaces a chunk with its twin).
const CLAIM_WAIT: Duration = Duration::from_secs(120);

impl Seen {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.chunks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn claim(&self, id: &str, repo: &Repo) -> Claim {
        let deadline = Instant::now() + CLAIM_WAIT;
        let mut chunks = self.lock();
        loop {
            match chunks.get(id) {
                Some(Slot::Stored(body)) => return Claim::Stored(*body),
                Some(Slot::Claimed) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Claim::Mine;
                    }
                    chunks = match self.changed.wait_timeout(chunks, left) {
                        Ok((guard, _)) => guard,
                        Err(e) => e.into_inner().0,
                    };
                }
                None => break,
            }
        }
        chunks.insert(id.to_owned(), Slot::Claimed);
        drop(chunks);
        // A damaged chunk file is stored again: its twin replaces it.
        match repo.chunk_file(id) {
            Sealed::Intact { body, .. } => {
                self.stored(id, body);
                Claim::Stored(body)
            }
            // An unreadable store fails the write that follows, with its reason.
            Sealed::Missing | Sealed::Damaged | Sealed::Unreadable => Claim::Mine,
        }
    }

    fn stored(&self, id: &str, body: u64) {
        self.lock().insert(id.to_owned(), Slot::Stored(body));
        self.changed.notify_all();
    }

    fn release(&self, id: &str) {
        let mut chunks = self.lock();
        if matches!(chunks.get(id), Some(Slot::Claimed)) {
            chunks.remove(id);
        }
        drop(chunks);
        self.changed.notify_all();
    }
}
