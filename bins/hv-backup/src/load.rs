//! Reading a stored backup back, for restore and deep verify: its manifest,
//! then each image, whose chunks workers open in parallel (decryption and
//! decompression are the cost) and hand to the caller in disk order. The
//! workers also hash each chunk as a piece of the image's BLAKE3 tree
//! (midstate.rs), so the image's BLAKE3 costs no pass of its own; it is
//! checked at the end against the manifest's, as is the SHA-256 that
//! older manifests record (computed only for those, in order). Every chunk is checked against its id on the way, so a flipped
//! bit or a swapped file is named by chunk and offset, not discovered later.

use crate::crypt::{self, ChunkKey, Identities};
use crate::format::{self, Image, Manifest};
use crate::midstate::{chunk_cv, image_root, tree_fits, Cv};
use crate::repo::Repo;
use hv_common::{Code, Error, Result};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

pub struct Opener<'a> {
    pub repo: &'a Repo,
    pub identities: &'a Identities,
    pub key: ChunkKey,
    pub workers: usize,
    /// Names the backup in errors.
    pub backup: &'a str,
}

/// Opens backup `id`'s manifest with the identity, refusing one that
/// belongs to another backup or is newer than this hv-backup reads.
pub fn open_manifest(repo: &Repo, id: &str, identities: &Identities) -> Result<Manifest> {
    let sealed = repo.sealed_manifest(id)?;
    let json = crypt::decrypt(identities, &sealed, &format!("backup {id}: manifest"))?;
    let manifest: Manifest = serde_json::from_slice(&json).map_err(|e| {
        Error::new(
            Code::Corrupt,
            format!("backup {id}: manifest is not valid: {e}"),
        )
    })?;
    if manifest.id != id || manifest.format != format::MANIFEST_FORMAT {
        return Err(Error::new(
            Code::Corrupt,
            format!(
                "backup {id}: its manifest belongs to another backup ({})",
                manifest.id
            ),
        ));
    }
    if !(1..=format::MANIFEST_VERSION).contains(&manifest.version) {
        return Err(Error::new(
            Code::Unsupported,
            format!(
                "backup {id}: manifest version {} is newer than this hv-backup",
                manifest.version
            ),
        ));
    }
    Ok(manifest)
}

/// One piece of the image, in order: data, or a run of zeros.
pub enum Piece<'a> {
    Data(&'a [u8]),
    Zeros(usize),
}

/// A chunk opened (none for zeros), and its piece of the image's tree.
type Opened = (usize, Result<(Option<Vec<u8>>, Option<Cv>)>);

/// What an image reassembled to: its BLAKE3 (when its chunks are whole
/// subtrees, as the usual 4 MiB ones are), and its SHA-256 for a backup
/// whose manifest recorded one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Digest {
    pub blake3: Option<String>,
    pub sha256: Option<String>,
}

/// Feeds every chunk of `image` to `sink` in order and returns its hashes,
/// checked against the manifest's. A failing chunk stops the run with an
/// error that names it.
pub fn read_image<F>(op: &Opener, image: &Image, chunk_size: u64, mut sink: F) -> Result<Digest>
where
    F: FnMut(u64, Piece) -> Result<()>,
{
    let count = image.chunks.len();
    if count as u64 != image.virtual_size_bytes.div_ceil(chunk_size) {
        return Err(Error::new(
            Code::Corrupt,
            format!(
                "backup {}: disk {} lists {count} chunks for {} bytes",
                op.backup, image.target, image.virtual_size_bytes
            ),
        ));
    }
    let (job_tx, job_rx) = mpsc::sync_channel::<usize>(op.workers * 2);
    let (done_tx, done_rx) = mpsc::sync_channel::<Opened>(op.workers * 2);
    // Shared by the workers only: when they stop, the feeder's sends fail and it stops too.
    let job_rx = Arc::new(Mutex::new(job_rx));
    let stop = AtomicBool::new(false);
    let mut sha = image.sha256.is_some().then(Sha256::new);
    let zeros = vec![0u8; chunk_size as usize];
    let tree = tree_fits(chunk_size);
    let mut cvs: Vec<Cv> = Vec::with_capacity(if tree { count } else { 0 });

    let outcome = std::thread::scope(|s| {
        for _ in 0..op.workers {
            let (job_rx, done_tx, stop) = (job_rx.clone(), done_tx.clone(), &stop);
            s.spawn(move || open_loop(op, image, chunk_size, tree, &job_rx, done_tx, stop));
        }
        drop(done_tx);
        drop(job_rx);
        s.spawn(move || {
            for i in 0..count {
                if job_tx.send(i).is_err() {
                    return;
                }
            }
        });
        let mut pending: BTreeMap<usize, (Option<Vec<u8>>, Option<Cv>)> = BTreeMap::new();
        let mut next = 0;
        let result = (|| {
            for (i, opened) in done_rx.iter() {
                // What is written so far is removed by the caller.
                if hv_common::cli::interrupted().is_some() {
                    return Err(hv_common::cli::interrupted_error(&format!(
                        "backup {}: disk {}",
                        op.backup, image.target
                    )));
                }
                pending.insert(i, opened?);
                while let Some((data, cv)) = pending.remove(&next) {
                    let offset = next as u64 * chunk_size;
                    let len = image.chunk_len(chunk_size, next);
                    cvs.extend(cv);
                    match &data {
                        Some(d) => {
                            if let Some(sha) = sha.as_mut() {
                                sha.update(d);
                            }
                            sink(offset, Piece::Data(d))?;
                        }
                        None => {
                            if let Some(sha) = sha.as_mut() {
                                sha.update(&zeros[..len]);
                            }
                            sink(offset, Piece::Zeros(len))?;
                        }
                    }
                    next += 1;
                }
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        for _ in done_rx.iter() {} // let blocked workers finish
        result
    });
    outcome?;
    let got = Digest {
        blake3: (tree && cvs.len() == count).then(|| crypt::hex(&image_root(&cvs))),
        sha256: sha.map(|s| crypt::hex(&s.finalize())),
    };
    for (name, want, got) in [
        ("BLAKE3", &image.blake3, &got.blake3),
        ("SHA-256", &image.sha256, &got.sha256),
    ] {
        if let (Some(want), Some(got)) = (want, got) {
            if want != got {
                return Err(Error::new(
                    Code::Corrupt,
                    format!(
                        "backup {}: disk {} reassembles to {name} {got}, the manifest says {want}",
                        op.backup, image.target
                    ),
                ));
            }
        }
    }
    Ok(got)
}

fn open_loop(
    op: &Opener,
    image: &Image,
    chunk_size: u64,
    tree: bool,
    job_rx: &Mutex<mpsc::Receiver<usize>>,
    done_tx: mpsc::SyncSender<Opened>,
    stop: &AtomicBool,
) {
    let whole = image.chunks.len() == 1;
    let mut zeros = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let next = job_rx.lock().map(|rx| rx.recv());
        let Ok(Ok(i)) = next else { return };
        let offset = i as u64 * chunk_size;
        let opened = open_one(op, image, chunk_size, i).map(|data| {
            let cv = tree.then(|| match &data {
                Some(d) => chunk_cv(offset, d, whole),
                None => {
                    let len = image.chunk_len(chunk_size, i);
                    zeros.resize(len.max(zeros.len()), 0);
                    chunk_cv(offset, &zeros[..len], whole)
                }
            });
            (data, cv)
        });
        if done_tx.send((i, opened)).is_err() {
            return;
        }
    }
}

pub(crate) fn open_one(
    op: &Opener,
    image: &Image,
    chunk_size: u64,
    i: usize,
) -> Result<Option<Vec<u8>>> {
    let Some(id) = &image.chunks[i] else {
        return Ok(None);
    };
    let what = format!(
        "backup {}: disk {} chunk {id} (offset {})",
        op.backup,
        image.target,
        i as u64 * chunk_size
    );
    let sealed = op.repo.read_chunk(id).map_err(|e| {
        Error::new(
            e.code,
            format!("backup {}: disk {}: {}", op.backup, image.target, e.message),
        )
    })?;
    let len = image.chunk_len(chunk_size, i);
    crypt::open_chunk(op.identities, &op.key, &sealed, id, len, &what).map(Some)
}
