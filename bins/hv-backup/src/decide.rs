//! The first stage of a backup: for each disk, read it in full, or only
//! the chunks its last checkpoint's dirty bitmap marks, taking the others
//! from the previous backup's chunk list (this host's cache, midstate.rs).
//! The manifest stays a full list either way, so a restore never replays
//! a chain.
//!
//! The failures peers are known for come from trusting a chain that is no
//! longer whole. hv trusts nothing it did not just check: the checkpoint
//! must exist with a bitmap for the disk, the disk must be the same file,
//! and every chunk to be reused must still be in the repository (the read
//! stage then checks the size and the bitmap's export). Anything else
//! reads that disk in full and says why, and a job libvirt refuses is
//! started again without increments; so a broken chain costs one full
//! read, never a failing night after night. Deciding only looks (at
//! libvirt's checkpoints, this host's cache, the chunk files' headers) and
//! changes nothing, so it cannot fail a backup.

use crate::checkpoint::{can_track, Chain};
use crate::ffi;
use crate::midstate::{DiskCache, DiskCaches};
use crate::repo::{Repo, Sealed};
use hv_common::domain::Disk;
use std::collections::{BTreeMap, HashMap};
use virt::domain::Domain;

/// Why a disk is read in full; `warn` when it is not the expected case (a
/// first backup, `--full`, a raw disk) but a chain that broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Full {
    pub reason: String,
    pub warn: bool,
}

impl Full {
    pub fn expected(reason: impl Into<String>) -> Full {
        Full {
            reason: reason.into(),
            warn: false,
        }
    }

    pub fn broken(reason: impl Into<String>) -> Full {
        Full {
            reason: reason.into(),
            warn: true,
        }
    }
}

/// An incremental read's starting point for one disk.
pub struct Base {
    pub checkpoint: String,
    pub cache: DiskCache,
    /// Stored sizes of the cached chunks, every one present.
    pub sizes: HashMap<String, u64>,
}

/// Per disk (by target), where an incremental read starts, or why it
/// reads in full.
pub struct Decided {
    pub bases: BTreeMap<String, Base>,
    pub fulls: BTreeMap<String, Full>,
}

/// Decides how to read each of `disks`: in full with `--full` (`full`),
/// else incrementally where `chain` and the disk's cache in `caches` hold.
pub fn decide(
    full: bool,
    caches: &DiskCaches,
    dom: &Domain,
    chain: &Chain,
    repo: &Repo,
    disks: &[&Disk],
) -> Decided {
    let mut bases = BTreeMap::new();
    let mut fulls = BTreeMap::new();
    for disk in disks {
        let decided = if full {
            Err(Full::expected("--full"))
        } else {
            let cached = caches.load(&disk.target);
            base(chain, dom, repo, disk, cached)
        };
        match decided {
            Ok(base) => bases.insert(disk.target.clone(), base).map(drop),
            Err(why) => fulls.insert(disk.target.clone(), why).map(drop),
        };
    }
    Decided { bases, fulls }
}

/// Where `disk` can be read incrementally from, or why not.
fn base(
    chain: &Chain,
    dom: &Domain,
    repo: &Repo,
    disk: &Disk,
    cache: Option<DiskCache>,
) -> Result<Base, Full> {
    let target = &disk.target;
    if !can_track(disk) {
        return Err(Full::expected(format!(
            "disk {target} is not qcow2 and keeps no dirty bitmap"
        )));
    }
    let Some(cache) = cache else {
        return Err(if chain.ours.is_empty() {
            Full::expected(format!("first backup of disk {target} to this repository"))
        } else {
            Full::broken(format!(
                "this host has no chunk list of disk {target}'s last backup (cache \
                 directory cleared?)"
            ))
        });
    };
    let Some(checkpoint) = cache.checkpoint.clone() else {
        return Err(Full::expected(format!(
            "disk {target}'s last backup made no checkpoint"
        )));
    };
    if let Some(why) = &chain.unlisted {
        return Err(Full::broken(format!("cannot list checkpoints: {why}")));
    }
    if !chain.ours.contains(&checkpoint) {
        return Err(Full::broken(format!(
            "checkpoint {checkpoint} is gone (deleted outside hv-backup?)"
        )));
    }
    if !has_bitmap(dom, &checkpoint, target) {
        return Err(Full::broken(format!(
            "checkpoint {checkpoint} keeps no bitmap for disk {target}"
        )));
    }
    if cache.source != disk.source {
        return Err(Full::broken(format!(
            "disk {target} was replaced since backup {} ({} then, {} now)",
            cache.backup,
            cache.source.as_deref().unwrap_or("-"),
            disk.source.as_deref().unwrap_or("-")
        )));
    }
    let sizes = present_chunks(repo, &cache).ok_or_else(|| {
        Full::broken(format!(
            "chunks of backup {} are missing or damaged in the repository (pruned?)",
            cache.backup
        ))
    })?;
    Ok(Base {
        checkpoint,
        cache,
        sizes,
    })
}

fn has_bitmap(dom: &Domain, checkpoint: &str, target: &str) -> bool {
    let Ok(xml) = ffi::checkpoint_xml(dom, checkpoint) else {
        return false;
    };
    let Ok(doc) = roxmltree::Document::parse(&xml) else {
        return false;
    };
    doc.descendants().any(|n| {
        n.has_tag_name("disk")
            && n.attribute("name") == Some(target)
            && n.attribute("checkpoint") == Some("bitmap")
    })
}

/// The body size of every chunk `cache` lists, or `None` if one is
/// missing or damaged (an incremental backup must not lean on it).
fn present_chunks(repo: &Repo, cache: &DiskCache) -> Option<HashMap<String, u64>> {
    let mut sizes = HashMap::new();
    for id in cache.ids.iter().flatten() {
        if let std::collections::hash_map::Entry::Vacant(slot) = sizes.entry(crate::crypt::hex(id))
        {
            match repo.chunk_file(slot.key()) {
                Sealed::Intact { body, .. } => slot.insert(body),
                _ => return None,
            };
        }
    }
    Some(sizes)
}
