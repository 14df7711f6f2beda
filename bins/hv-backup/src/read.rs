//! The second stage of a backup: each disk's export is opened and read
//! into the repository (chunk.rs), in full or since its base as decide.rs
//! chose. source.rs holds the two ways an export exists; this stage
//! chooses, per disk, which export to read and what to fall back to.
//!
//! What a reader must know to trust this stage:
//!
//! - A running VM's disks are read through one pull-mode backup job, which
//!   libvirt starts atomically with the checkpoint the next backup reads
//!   from. If libvirt refuses a job that reads incrementally, it is started
//!   again with every disk in full, and if that is refused too, once more
//!   without the checkpoint: each a warning, not a failed backup.
//! - A stopped VM's disks are served in place by qemu-nbd, whose image lock
//!   keeps the VM from starting under the read. Its next checkpoint is made
//!   by hand first (checkpoint.rs). Its old bitmap is read only if the image
//!   itself holds it, recording and consistent: one qemu-nbd found in a
//!   backing file never saw the overlay's writes.
//! - What only the open export can tell is checked here: a disk whose
//!   bitmap is not on offer, that was resized, or whose bitmap cannot be
//!   read is read in full, with a warning.
//! - On failure the job ends, or every qemu-nbd is killed, before the new
//!   checkpoint is removed: libvirt must not see a checkpoint change while
//!   its job may still run, and qemu-img cannot remove a bitmap from an
//!   image qemu-nbd holds. The declaration order of the values that end
//!   them is what guarantees it; keep it.

use crate::checkpoint::{self, NewCheckpoint};
use crate::chunk::{self, Counts, Prior, Reuse, Stored};
use crate::crypt;
use crate::decide::{Base, Decided, Full};
use crate::format::Image;
use crate::imagelock::RawLock;
use crate::mapped::Mapped;
use crate::midstate::{DiskCache, DiskCaches};
use crate::nbd;
use crate::seal::Sealer;
use crate::source::{self, JobDisk, LiveJob, QemuNbd, RunDir};
use hv_common::domain::Disk;
use hv_common::remote::Place;
use hv_common::{Code, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use virt::domain::Domain;

/// A running VM's disks, read through one backup job.
pub struct Live<'a> {
    /// Where the VM runs: the job's files and sockets are there.
    pub place: &'a Place,
    pub dom: &'a Domain,
    /// The running definition: the job's disks, and the user QEMU runs as.
    pub live_xml: &'a str,
    /// Every disk of the domain (the checkpoint names each).
    pub all: &'a [Disk],
    /// Where the job's socket and scratch files go (`--scratch-dir`).
    pub scratch_root: &'a Path,
}

impl<'a> Live<'a> {
    /// Reads `disks` as `decided` says; returns what they gave and the
    /// checkpoint the job created, if it made one.
    pub fn read(
        &self,
        disks: &[&Disk],
        decided: Decided,
        sealer: &Sealer,
        caches: &DiskCaches,
    ) -> Result<(Gathered, Option<NewCheckpoint<'a>>)> {
        let Decided {
            mut bases,
            mut fulls,
        } = decided;
        let mut got = Gathered::default();
        let name = checkpoint::new_name(&sealer.repo.config.id)?;
        // Declared before the job, so a failed read ends the job first and
        // then removes the checkpoint.
        let new_checkpoint;
        let (job, made) = self.begin(disks, &name, &mut bases, &mut fulls, &mut got)?;
        new_checkpoint = made.then(|| NewCheckpoint::made_by_job(self.dom, &name, job.ended()));
        for disk in disks {
            match bases.remove(&disk.target) {
                Some(base) => {
                    let target = &disk.target;
                    let tracking = job.connect_tracking(target);
                    got.store_since(sealer, disk, base, tracking, || job.connect(target))?
                }
                None => {
                    let why = fulls
                        .remove(&disk.target)
                        .unwrap_or_else(|| Full::expected("read in full"));
                    let previous = caches.load(&disk.target);
                    got.store(
                        sealer,
                        disk,
                        job.connect(&disk.target)?,
                        None,
                        previous,
                        why,
                    )?;
                }
            }
            if let Some(last) = got.disks.last_mut() {
                last.checkpoint = (made && checkpoint::can_track(disk)).then(|| name.clone());
            }
        }
        Ok((got, new_checkpoint))
    }

    /// Starts the job; if libvirt refuses the increments, again with every
    /// disk in full, and if it refuses the checkpoint, again without one.
    fn begin(
        &self,
        disks: &[&Disk],
        name: &str,
        bases: &mut BTreeMap<String, Base>,
        fulls: &mut BTreeMap<String, Full>,
        got: &mut Gathered,
    ) -> Result<(LiveJob, bool)> {
        let tracked: Vec<&str> = disks
            .iter()
            .filter(|d| checkpoint::can_track(d))
            .map(|d| d.target.as_str())
            .collect();
        let checkpoint = (!tracked.is_empty())
            .then(|| checkpoint::checkpoint_xml(name, self.all, &tracked, None));
        let attempt = |bases: &BTreeMap<String, Base>, checkpoint: Option<&str>| {
            let job: Vec<JobDisk> = disks
                .iter()
                .map(|d| JobDisk {
                    disk: d,
                    since: bases.get(&d.target).map(|b| b.checkpoint.as_str()),
                })
                .collect();
            LiveJob::begin(
                self.place,
                self.dom,
                self.live_xml,
                &job,
                checkpoint,
                self.scratch_root,
            )
        };
        let first = attempt(bases, checkpoint.as_deref());
        let refused = match first {
            Err(e) if e.code == Code::Libvirt && !bases.is_empty() => e,
            other => return other.map(|job| (job, checkpoint.is_some())),
        };
        got.warnings
            .push(format!("{}; reading every disk in full", refused.message));
        for (target, _) in std::mem::take(bases) {
            let why = format!("libvirt refused the incremental job: {}", refused.message);
            fulls.insert(target, Full::broken(why));
        }
        match attempt(bases, checkpoint.as_deref()) {
            Err(e) if e.code == Code::Libvirt && checkpoint.is_some() => {
                got.warnings.push(format!(
                    "{}; backing up without a checkpoint, so the next backup reads in full too",
                    e.message
                ));
                attempt(bases, None).map(|job| (job, false))
            }
            other => other.map(|job| (job, checkpoint.is_some())),
        }
    }
}

/// A stopped VM's disks, each served in place by qemu-nbd; qcow2 disks
/// are read incrementally from their last checkpoint's bitmap, as a live
/// job would, under a new checkpoint made by hand (checkpoint.rs).
pub struct Offline<'a> {
    /// Where the images are, and qemu-nbd runs.
    place: Place,
    /// Each disk's image, in the order of the disks.
    paths: Vec<PathBuf>,
    /// The new checkpoint's name, made or not.
    name: String,
    /// The checkpoint made for the next backup. Declared before `dir`: a
    /// failed read removes it, then the directory.
    made: Option<NewCheckpoint<'a>>,
    /// Where qemu-nbd's sockets go.
    dir: RunDir,
    /// Why no new checkpoint was made, if that failed.
    warnings: Vec<String>,
}

impl<'a> Offline<'a> {
    /// Checks that each of `disks` can be read in place, and gives the VM
    /// the checkpoint the next backup reads from (on its qcow2 disks; `all`
    /// is every disk of the domain). A checkpoint that cannot be made is a
    /// warning: the read goes on from the old one.
    pub fn prepare(
        place: &Place,
        dom: &'a Domain,
        all: &'a [Disk],
        disks: &[&Disk],
        repo_id: &str,
        scratch_root: &Path,
        label: &str,
    ) -> Result<Offline<'a>> {
        let paths = disks
            .iter()
            .map(|d| source::offline_path(d))
            .collect::<Result<Vec<_>>>()?;
        let name = checkpoint::new_name(repo_id)?;
        let tracked: Vec<&Disk> = disks
            .iter()
            .copied()
            .filter(|d| checkpoint::can_track(d))
            .collect();
        let dir = RunDir::create(place, scratch_root, label, None)?;
        let mut warnings = Vec::new();
        let made = match tracked.is_empty() {
            true => None,
            false => checkpoint::create_offline(place, dom, &name, all, &tracked)
                .map_err(|e| {
                    warnings.push(format!(
                        "{e}; backing up without a new checkpoint, so the next backup reads these disks as this one did"
                    ))
                })
                .ok(),
        };
        Ok(Offline {
            place: place.clone(),
            paths,
            name,
            made,
            dir,
            warnings,
        })
    }

    /// Reads `disks` (those given to [`Offline::prepare`]) as `decided`
    /// says; returns what they gave and the checkpoint made for the next
    /// backup. A failed read drops the checkpoint, which removes it again.
    pub fn read(
        self,
        disks: &[&Disk],
        decided: Decided,
        sealer: &Sealer,
        caches: &DiskCaches,
    ) -> Result<(Gathered, Option<NewCheckpoint<'a>>)> {
        let Decided {
            mut bases,
            mut fulls,
        } = decided;
        let mut got = Gathered {
            warnings: self.warnings,
            ..Gathered::default()
        };
        let made = self.made.is_some();
        let (dir, place) = (&self.dir, &self.place);
        // Held until every server is gone (declared before them).
        let mut locks = Vec::new();
        let mut servers = Vec::new();
        for (disk, path) in disks.iter().zip(&self.paths) {
            let fmt = disk.format.as_deref().unwrap_or("raw");
            // qemu-nbd locks a qcow2 image against writers, not a raw one
            // (crate::imagelock); on another host it stays unlocked.
            if let (Place::Here, "raw") = (place, fmt) {
                locks.push(RawLock::hold(path)?);
            }
            let serve = |bitmap: Option<&str>| {
                QemuNbd::serve(place, path, fmt, dir, false, bitmap, &disk.target)
            };
            let base = bases.remove(&disk.target);
            let since = base.as_ref().map(|b| b.checkpoint.clone());
            match base {
                Some(base) => {
                    let bitmap = base.checkpoint.clone();
                    let in_image = checkpoint::bitmap_in_image(place, path, &bitmap);
                    let tracking =
                        in_image
                            .and_then(|()| serve(Some(&bitmap)))
                            .and_then(|server| {
                                let client = server.connect_tracking(&bitmap)?;
                                servers.push(server);
                                Ok(client)
                            });
                    let plain = || {
                        let server = serve(None)?;
                        let client = server.connect()?;
                        servers.push(server);
                        Ok(client)
                    };
                    got.store_since(sealer, disk, base, tracking, plain)?;
                }
                None => {
                    let why = fulls
                        .remove(&disk.target)
                        .unwrap_or_else(|| Full::expected("read in full"));
                    let server = serve(None)?;
                    let previous = caches.load(&disk.target);
                    // Read from the file where qemu-img places the data,
                    // qemu-nbd holding the image meanwhile (crate::mapped).
                    let mapped = match place {
                        Place::Here => Mapped::of(path, fmt),
                        Place::Ssh(_) => None,
                    };
                    let client = server.connect()?;
                    got.store(sealer, disk, client, mapped.as_ref(), previous, why)?;
                    servers.push(server);
                }
            }
            if let Some(last) = got.disks.last_mut() {
                last.checkpoint = match made && checkpoint::can_track(disk) {
                    true => Some(self.name.clone()),
                    // No new checkpoint: the old one still tracks this disk.
                    false => since,
                };
            }
        }
        // Every qemu-nbd goes before the directory holding its socket.
        drop(servers);
        Ok((got, self.made))
    }
}

/// What the disks gave: images, the chunks they reference, counts, how
/// each disk was read, and what the next run's cache needs.
#[derive(Default)]
pub struct Gathered {
    pub images: Vec<Image>,
    pub refs: BTreeMap<String, u64>,
    pub counts: Counts,
    pub disks: Vec<DiskRead>,
    pub warnings: Vec<String>,
}

/// How one disk was read, for the result record and the cache.
pub struct DiskRead {
    pub target: String,
    /// Why it was read in full; `None` for an incremental read.
    pub full: Option<String>,
    /// Bytes the dirty bitmap marked changed (incremental reads).
    pub dirty_bytes: Option<u64>,
    /// Each chunk's BLAKE3 chaining value, if all are known.
    pub cvs: Vec<crate::midstate::Cv>,
    /// The checkpoint the next backup of this disk can start from.
    pub checkpoint: Option<String>,
}

impl Gathered {
    /// Reads one disk's whole export into the repository, saying why in full.
    fn store(
        &mut self,
        sealer: &Sealer,
        disk: &Disk,
        mut client: nbd::Client,
        mapped: Option<&Mapped>,
        previous: Option<DiskCache>,
        why: Full,
    ) -> Result<()> {
        let hashes = previous
            .filter(|c| c.size == client.size())
            .map(|c| c.entries());
        let prior = hashes.map_or(Prior::Nothing, Prior::Hashes);
        let stored = chunk::store_export(&mut client, mapped, sealer, &disk.target, prior)?;
        if why.warn {
            self.warnings
                .push(format!("{}; read disk {} in full", why.reason, disk.target));
        }
        self.push(disk, stored, Some(why.reason), None, None);
        Ok(())
    }

    /// Reads only what changed on `disk` since `base`, through `tracking`
    /// (an export with the dirty bitmap); falls back to a full read through
    /// `plain`, with a warning, when the changes are not on offer.
    fn store_since(
        &mut self,
        sealer: &Sealer,
        disk: &Disk,
        base: Base,
        tracking: Result<nbd::Client>,
        plain: impl FnOnce() -> Result<nbd::Client>,
    ) -> Result<()> {
        let target = &disk.target;
        let mut client = match tracking {
            Ok(client) => client,
            Err(e) => {
                let why = Full::broken(format!("no dirty bitmap for disk {target}: {}", e.message));
                return self.store(sealer, disk, plain()?, None, Some(base.cache), why);
            }
        };
        if client.size() != base.cache.size {
            let why = Full::broken(format!(
                "disk {target} was resized from {} to {} bytes",
                base.cache.size,
                client.size()
            ));
            return self.store(sealer, disk, client, None, None, why);
        }
        let ranges = match client.dirty_ranges() {
            Ok(r) => r,
            Err(e) => {
                let why = Full::broken(format!("cannot read disk {target}'s dirty bitmap: {e}"));
                return self.store(sealer, disk, client, None, Some(base.cache), why);
            }
        };
        let chunk_size = sealer.repo.config.chunk_size;
        let count = client.size().div_ceil(chunk_size) as usize;
        let dirty = Reuse::dirty_chunks(&ranges, chunk_size, count);
        let reuse = Reuse {
            cvs: base.cache.cvs,
            ids: base
                .cache
                .ids
                .iter()
                .map(|id| id.map(|b| crypt::hex(&b)))
                .collect(),
            dirty,
            sizes: base.sizes,
        };
        let stored = chunk::store_export(&mut client, None, sealer, target, Prior::Reuse(reuse))?;
        let dirty_bytes = ranges.iter().map(|r| r.1).sum();
        self.push(
            disk,
            stored,
            None,
            Some(dirty_bytes),
            Some(base.cache.backup),
        );
        Ok(())
    }

    fn push(
        &mut self,
        disk: &Disk,
        mut stored: Stored,
        full: Option<String>,
        dirty_bytes: Option<u64>,
        base: Option<String>,
    ) {
        let cvs = std::mem::take(&mut stored.cvs);
        let mut image = self.add(stored);
        image.format = disk.format.clone().unwrap_or_else(|| "raw".into());
        image.source = disk.source.clone();
        image.base = base;
        self.images.push(image);
        self.disks.push(DiskRead {
            target: disk.target.clone(),
            full,
            dirty_bytes,
            cvs,
            checkpoint: None,
        });
    }

    /// Counts a stored image's chunks in and hands the image back.
    pub fn add(&mut self, stored: Stored) -> Image {
        self.counts.add(stored.counts);
        self.refs.extend(stored.refs);
        stored.image
    }
}
