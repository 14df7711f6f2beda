//! `hv-backup create`: one VM at a time per worker, every disk of it (not
//! cdroms), its domain XML and NVRAM, into one manifest. Chunks are made
//! durable before the manifest's directory is renamed into place, so the
//! backup appears whole or not at all. qcow2 disks, running or stopped, are read
//! incrementally where incremental.rs finds the chain whole.

use crate::crypt;
use crate::format::{self, Image, Index, IndexDisk, Manifest};
use crate::incremental::{self, Base, Chain, Full, NewCheckpoint};
use crate::midstate::{self, DiskCache};
use crate::nbd;
use crate::source::{self, JobDisk, LiveJob, QemuNbd, RunDir};
use crate::store::{self, Counts, Prior, Reuse, Sealer, Stored};
use hv_common::domain::{self as domxml, Disk};
use hv_common::targets::VmRef;
use hv_common::{cli, lifecycle, runner, time, Code, Error, Result, State};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use virt::domain::Domain;
use virt::sys;

pub struct Plan {
    pub sealer: Sealer,
    pub scratch_root: PathBuf,
    /// This host's midstate caches (see midstate.rs).
    pub cache_dir: PathBuf,
    pub note: Option<String>,
    pub protected: bool,
    pub dry_run: bool,
    /// Read every disk in full (`--full`).
    pub full: bool,
}

/// States in which QEMU runs and a backup job can read the disks through
/// it. A VM shutting down or crashed has a QEMU too, but one about to go
/// or kept for inspection: its disks are read in place, as a stopped VM's.
fn live_backup(state: State) -> bool {
    matches!(
        state,
        State::Running | State::Blocked | State::Paused | State::Pmsuspended
    )
}

/// What `create` reports for one VM, after `name`, `uuid`, `action` and
/// `ok` (docs/backups.md): the backup it made, or with --dry-run what it
/// would read.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Backed {
    /// --dry-run: nothing was read or written.
    Planned(Planned),
    /// The backup now in the repository.
    Made(Made),
}

/// What a dry run would back up.
#[derive(Debug, Serialize)]
pub struct Planned {
    /// `live` (through a backup job of the running VM) or `offline` (the
    /// stopped VM's disks read in place).
    mode: &'static str,
    /// The targets of the disks it would back up (`vda`, …; not cdroms).
    disks: Vec<String>,
    /// Always true.
    dry_run: bool,
}

/// A backup `create` made.
#[derive(Debug, Serialize)]
pub struct Made {
    /// The backup's id (`20261121T020000Z-3fa2b1c9`).
    id: String,
    /// When the backup was made, RFC 3339 UTC.
    created_at: String,
    /// `live` (through a backup job of the running VM) or `offline` (the
    /// stopped VM's disks read in place).
    mode: String,
    /// The targets of the backed-up disks, as in the dry run and in `ls`.
    disks: Vec<String>,
    /// The disks' virtual size, summed, in bytes.
    size_bytes: u64,
    /// Bytes read from the VM's disks (unallocated and zero regions are
    /// never read; an incremental read reads only changed chunks).
    read_bytes: u64,
    /// Bytes of plaintext that were not in the repository before (after dedup).
    new_bytes: u64,
    /// Bytes written: whole chunk files, compressed and encrypted.
    stored_bytes: u64,
    /// How long the backup took, in milliseconds.
    elapsed_ms: u64,
    /// `read_bytes` per second of `elapsed_ms`.
    throughput_bytes_per_s: u64,
    /// The libvirt checkpoint this backup created, which the next backup
    /// reads incrementally from; null when it made none.
    checkpoint: Option<String>,
    /// How each disk was read, in order.
    reads: Vec<DiskReport>,
    /// What cost a full read or a new checkpoint, as also said on stderr.
    warnings: Vec<String>,
}

/// How one disk was read.
#[derive(Debug, Serialize)]
pub struct DiskReport {
    /// The disk's target (`vda`, …).
    target: String,
    /// `read`: `full` with its `reason`, or `incremental` with `base` and
    /// `dirty_bytes`.
    #[serde(flatten)]
    how: HowRead,
}

/// Whether a disk was read in full or only where it changed; the `read`
/// field of a [`DiskReport`].
#[derive(Debug, Serialize)]
#[serde(tag = "read", rename_all = "lowercase")]
pub enum HowRead {
    /// Every allocated block was read.
    Full {
        /// Why in full: the first backup of the disk, --full, or what broke
        /// the chain.
        reason: String,
    },
    /// Only the chunks the checkpoint's dirty bitmap marks were read.
    Incremental {
        /// The backup whose chunk list supplied the unchanged chunks.
        base: Option<String>,
        /// Bytes the dirty bitmap marked changed.
        dirty_bytes: Option<u64>,
    },
}

pub fn backup_vm(plan: &Plan, dom: &Domain, vm: &VmRef) -> Result<Backed> {
    let start = Instant::now();
    let live = live_backup(lifecycle::state(dom)?.state);
    let secure = sys::VIR_DOMAIN_XML_SECURE;
    let config_xml = dom
        .xml_desc(secure | sys::VIR_DOMAIN_XML_INACTIVE)
        .map_err(|e| Error::libvirt("cannot read the domain XML", &e))?;
    let live_xml = if live {
        dom.xml_desc(secure)
            .map_err(|e| Error::libvirt("cannot read the live domain XML", &e))?
    } else {
        config_xml.clone()
    };
    let parsed = domxml::parse(&live_xml)?;
    let disks: Vec<&Disk> = parsed.disks.iter().filter(|d| d.device == "disk").collect();
    let mode = if live { "live" } else { "offline" };
    if plan.dry_run {
        return Ok(Backed::Planned(Planned {
            mode,
            disks: disks.iter().map(|d| d.target.clone()).collect(),
            dry_run: true,
        }));
    }
    let cache = HashCache::new(plan, vm);
    let mut got = Gathered::default();
    let chain = Chain::load(dom, &plan.sealer.repo.config.id);
    let made = if live {
        let live = Live {
            plan,
            cache: &cache,
            dom,
            live_xml: &live_xml,
            all: &parsed.disks,
            chain: &chain,
        };
        live.read(&disks, &mut got)?
    } else {
        let offline = Offline {
            plan,
            cache: &cache,
            dom,
            all: &parsed.disks,
            chain: &chain,
            label: format!("off-{}", source::short(vm.uuid.as_deref().unwrap_or("vm"))),
        };
        offline.read(&disks, &mut got)?
    };
    let checkpoint = made.as_ref().map(|c| c.name.clone());
    // From here a failure drops `made`, which removes the checkpoint again.
    let nvram = match nvram_path(&config_xml) {
        Some(path) if path.exists() => Some(got.add(store_file(&plan.sealer, &path)?)),
        _ => None,
    };
    let backup = Backup {
        mode,
        config_xml,
        tags: parsed.tags,
        nvram,
        started: start,
    };
    let index = commit(plan, vm, &got, backup)?;
    if let Some(made) = made {
        made.keep();
    }
    cache.save_all(&got, &index.id);
    // A stopped VM that got no new checkpoint keeps its old ones: the
    // disks' caches still start from them.
    if live || checkpoint.is_some() {
        let stopped = (!live).then_some(parsed.disks.as_slice());
        let pruned = incremental::prune_chain(dom, &chain, checkpoint.as_deref(), stopped);
        got.warnings.extend(pruned);
    }
    let name = vm.name.as_deref().unwrap_or_default();
    for w in &got.warnings {
        cli::warn(format!("{name}: {w}"));
    }
    let created_at = crate::created_at(&index);
    let secs = (index.elapsed_ms.max(1)) as f64 / 1000.0;
    Ok(Backed::Made(Made {
        id: index.id,
        created_at,
        mode: index.mode,
        disks: index.disks.into_iter().map(|d| d.target).collect(),
        size_bytes: index.size_bytes,
        read_bytes: index.read_bytes,
        new_bytes: index.new_bytes,
        stored_bytes: index.stored_bytes,
        elapsed_ms: index.elapsed_ms,
        throughput_bytes_per_s: (index.read_bytes as f64 / secs) as u64,
        checkpoint,
        reads: got.reads(),
        warnings: got.warnings,
    }))
}

/// A running VM's disks through one backup job.
struct Live<'a> {
    plan: &'a Plan,
    cache: &'a HashCache<'a>,
    dom: &'a Domain,
    live_xml: &'a str,
    /// Every disk of the domain (the checkpoint names each).
    all: &'a [Disk],
    chain: &'a Chain,
}

/// Per disk, where an incremental read starts, or why it reads in full.
type Decided = (BTreeMap<String, Base>, BTreeMap<String, Full>);

fn decide(plan: &Plan, cache: &HashCache, dom: &Domain, chain: &Chain, disks: &[&Disk]) -> Decided {
    let mut bases = BTreeMap::new();
    let mut fulls = BTreeMap::new();
    for disk in disks {
        let decided = if plan.full {
            Err(Full::expected("--full"))
        } else {
            let cached = cache.load(&disk.target);
            chain.base(dom, &plan.sealer.repo, disk, cached)
        };
        match decided {
            Ok(base) => bases.insert(disk.target.clone(), base).map(drop),
            Err(full) => fulls.insert(disk.target.clone(), full).map(drop),
        };
    }
    (bases, fulls)
}

impl<'a> Live<'a> {
    /// Reads `disks`; returns the checkpoint the job created, if it made one.
    fn read(&self, disks: &[&Disk], got: &mut Gathered) -> Result<Option<NewCheckpoint<'a>>> {
        let (mut bases, mut fulls) = decide(self.plan, self.cache, self.dom, self.chain, disks);
        let name = incremental::new_name(&self.plan.sealer.repo.config.id)?;
        // Declared before the job, so a failed read ends the job first and
        // then removes the checkpoint.
        let new_checkpoint;
        let (job, made) = self.begin(disks, &name, &mut bases, &mut fulls, got)?;
        new_checkpoint = made.then(|| NewCheckpoint::made_by_job(self.dom, &name, job.ended()));
        for disk in disks {
            match bases.remove(&disk.target) {
                Some(base) => {
                    let target = &disk.target;
                    let tracking = job.connect_tracking(target);
                    got.store_since(self.plan, disk, base, tracking, || job.connect(target))?
                }
                None => {
                    let why = fulls
                        .remove(&disk.target)
                        .unwrap_or_else(|| Full::expected("read in full"));
                    let previous = self.cache.load(&disk.target);
                    got.store(self.plan, disk, job.connect(&disk.target)?, previous, why)?;
                }
            }
            if let Some(last) = got.disks.last_mut() {
                last.checkpoint = (made && incremental::can_track(disk)).then(|| name.clone());
            }
        }
        Ok(new_checkpoint)
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
            .filter(|d| incremental::can_track(d))
            .map(|d| d.target.as_str())
            .collect();
        let checkpoint = (!tracked.is_empty())
            .then(|| incremental::checkpoint_xml(name, self.all, &tracked, None));
        let attempt = |bases: &BTreeMap<String, Base>, checkpoint: Option<&str>| {
            let job: Vec<JobDisk> = disks
                .iter()
                .map(|d| JobDisk {
                    disk: d,
                    since: bases.get(&d.target).map(|b| b.checkpoint.as_str()),
                })
                .collect();
            LiveJob::begin(
                self.dom,
                self.live_xml,
                &job,
                checkpoint,
                &self.plan.scratch_root,
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
/// job would, under a new checkpoint made by hand (incremental.rs).
struct Offline<'a> {
    plan: &'a Plan,
    cache: &'a HashCache<'a>,
    dom: &'a Domain,
    all: &'a [Disk],
    chain: &'a Chain,
    label: String,
}

impl<'a> Offline<'a> {
    /// Reads `disks`; returns the checkpoint made for the next backup.
    fn read(&self, disks: &[&Disk], got: &mut Gathered) -> Result<Option<NewCheckpoint<'a>>> {
        let paths = disks
            .iter()
            .map(|d| source::offline_path(d))
            .collect::<Result<Vec<_>>>()?;
        let name = incremental::new_name(&self.plan.sealer.repo.config.id)?;
        let tracked: Vec<&Disk> = disks
            .iter()
            .copied()
            .filter(|d| incremental::can_track(d))
            .collect();
        let dir = RunDir::create(&self.plan.scratch_root, &self.label)?;
        let made = match tracked.is_empty() {
            true => None,
            false => incremental::create_offline(self.dom, &name, self.all, &tracked)
                .map_err(|e| {
                    got.warnings.push(format!(
                        "{e}; backing up without a new checkpoint, so the next backup reads these disks as this one did"
                    ))
                })
                .ok(),
        };
        // A failed read drops `made`, which removes the checkpoint again.
        self.read_disks(disks, &paths, &dir, &name, made.is_some(), got)?;
        Ok(made)
    }

    fn read_disks(
        &self,
        disks: &[&Disk],
        paths: &[PathBuf],
        dir: &RunDir,
        name: &str,
        made: bool,
        got: &mut Gathered,
    ) -> Result<()> {
        let (mut bases, mut fulls) = decide(self.plan, self.cache, self.dom, self.chain, disks);
        let mut servers = Vec::new();
        for (disk, path) in disks.iter().zip(paths) {
            let fmt = disk.format.as_deref().unwrap_or("raw");
            let serve = |bitmap: Option<&str>| {
                QemuNbd::serve(path, fmt, &dir.0, false, bitmap, &disk.target)
            };
            let base = bases.remove(&disk.target);
            let since = base.as_ref().map(|b| b.checkpoint.clone());
            match base {
                Some(base) => {
                    let bitmap = base.checkpoint.clone();
                    let in_image = incremental::bitmap_in_image(path, &bitmap)
                        .map_err(|e| Error::new(Code::Io, e));
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
                    got.store_since(self.plan, disk, base, tracking, plain)?;
                }
                None => {
                    let why = fulls
                        .remove(&disk.target)
                        .unwrap_or_else(|| Full::expected("read in full"));
                    let server = serve(None)?;
                    let previous = self.cache.load(&disk.target);
                    got.store(self.plan, disk, server.connect()?, previous, why)?;
                    servers.push(server);
                }
            }
            if let Some(last) = got.disks.last_mut() {
                last.checkpoint = match made && incremental::can_track(disk) {
                    true => Some(name.to_owned()),
                    // No new checkpoint: the old one still tracks this disk.
                    false => since,
                };
            }
        }
        Ok(())
    }
}

/// What the disks gave: images, the chunks they reference, counts, how
/// each disk was read, and what the next run's cache needs.
#[derive(Default)]
struct Gathered {
    images: Vec<Image>,
    refs: BTreeMap<String, u64>,
    counts: Counts,
    disks: Vec<DiskRead>,
    warnings: Vec<String>,
}

/// How one disk was read, for the result record and the cache.
struct DiskRead {
    target: String,
    /// Why it was read in full; `None` for an incremental read.
    full: Option<String>,
    /// Bytes the dirty bitmap marked changed (incremental reads).
    dirty_bytes: Option<u64>,
    /// Hash states after each full chunk, as far as known.
    states: Vec<[u32; 8]>,
    /// The checkpoint the next backup of this disk can start from.
    checkpoint: Option<String>,
}

impl Gathered {
    /// Reads one disk's whole export into the repository, saying why in full.
    fn store(
        &mut self,
        plan: &Plan,
        disk: &Disk,
        mut client: nbd::Client,
        previous: Option<DiskCache>,
        why: Full,
    ) -> Result<()> {
        let hashes = previous
            .filter(|c| c.size == client.size())
            .map(|c| c.entries());
        let prior = hashes.map_or(Prior::Nothing, Prior::Hashes);
        let stored = store::store_export(&mut client, &plan.sealer, &disk.target, prior)?;
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
        plan: &Plan,
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
                return self.store(plan, disk, plain()?, Some(base.cache), why);
            }
        };
        if client.size() != base.cache.size {
            let why = Full::broken(format!(
                "disk {target} was resized from {} to {} bytes",
                base.cache.size,
                client.size()
            ));
            return self.store(plan, disk, client, None, why);
        }
        let ranges = match client.dirty_ranges() {
            Ok(r) => r,
            Err(e) => {
                let why = Full::broken(format!("cannot read disk {target}'s dirty bitmap: {e}"));
                return self.store(plan, disk, client, Some(base.cache), why);
            }
        };
        let chunk = plan.sealer.repo.config.chunk_size;
        let count = client.size().div_ceil(chunk) as usize;
        let dirty = Reuse::dirty_chunks(&ranges, chunk, count);
        let unchanged_lead = dirty.iter().position(|d| *d).unwrap_or(count);
        let mut states = base.cache.states;
        states.truncate(unchanged_lead);
        let reuse = Reuse {
            ids: base
                .cache
                .ids
                .iter()
                .map(|id| id.map(|b| crypt::hex(&b)))
                .collect(),
            dirty,
            sizes: base.sizes,
        };
        let stored = store::store_export(&mut client, &plan.sealer, target, Prior::Reuse(reuse))?;
        let dirty_bytes = ranges.iter().map(|r| r.1).sum();
        self.push(
            disk,
            stored,
            None,
            Some(dirty_bytes),
            Some(base.cache.backup),
        );
        if let Some(last) = self.disks.last_mut() {
            last.states = states;
        }
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
        let states = std::mem::take(&mut stored.states);
        let mut image = self.add(stored);
        image.format = disk.format.clone().unwrap_or_else(|| "raw".into());
        image.source = disk.source.clone();
        image.base = base;
        self.images.push(image);
        self.disks.push(DiskRead {
            target: disk.target.clone(),
            full,
            dirty_bytes,
            states,
            checkpoint: None,
        });
    }

    /// One entry per disk for the result record.
    fn reads(&self) -> Vec<DiskReport> {
        self.disks
            .iter()
            .zip(&self.images)
            .map(|(d, image)| DiskReport {
                target: d.target.clone(),
                how: match &d.full {
                    Some(reason) => HowRead::Full {
                        reason: reason.clone(),
                    },
                    None => HowRead::Incremental {
                        base: image.base.clone(),
                        dirty_bytes: d.dirty_bytes,
                    },
                },
            })
            .collect()
    }

    /// Counts a stored image's chunks in and hands the image back.
    fn add(&mut self, stored: Stored) -> Image {
        self.counts.add(stored.counts);
        self.refs.extend(stored.refs);
        stored.image
    }
}

/// The rest of what a backup records besides the disks.
struct Backup {
    mode: &'static str,
    config_xml: String,
    tags: Vec<String>,
    nvram: Option<Image>,
    started: Instant,
}

/// Writes the manifest and index: the moment the backup comes to exist.
fn commit(plan: &Plan, vm: &VmRef, got: &Gathered, backup: Backup) -> Result<Index> {
    let repo = &plan.sealer.repo;
    repo.sync_chunk_dirs(got.refs.keys().map(String::as_str))?;
    let now_ms = time::now_ms();
    let now = now_ms.div_euclid(1000);
    let id = backup_id(now)?;
    let name = vm.name.clone().unwrap_or_default();
    let uuid = vm.uuid.clone().unwrap_or_default();
    let manifest = Manifest {
        format: format::MANIFEST_FORMAT.into(),
        version: format::MANIFEST_VERSION,
        id: id.clone(),
        repository: repo.config.id.clone(),
        name: name.clone(),
        uuid: uuid.clone(),
        time: time::rfc3339(now),
        mode: backup.mode.into(),
        chunk_size: repo.config.chunk_size,
        domain_xml: backup.config_xml.clone(),
        disks: got.images.clone(),
        nvram: backup.nvram.clone(),
        tags: backup.tags.clone(),
        note: plan.note.clone(),
        protected: plan.protected,
    };
    let json = serde_json::to_vec(&manifest)
        .map_err(|e| Error::new(Code::Io, format!("cannot encode the manifest: {e}")))?;
    let sealed = crypt::encrypt(&plan.sealer.repo.recipients, &json)?;
    let manifest_bytes = crypt::header_len(&sealed).map(|h| (sealed.len() - h) as u64);
    let index = Index {
        format: format::INDEX_FORMAT.into(),
        version: format::INDEX_VERSION,
        id: id.clone(),
        name: name.clone(),
        uuid: uuid.clone(),
        time: time::rfc3339(now),
        time_unix: now,
        time_unix_ms: now_ms,
        mode: backup.mode.into(),
        disks: got
            .images
            .iter()
            .map(|i| IndexDisk {
                target: i.target.clone(),
                virtual_size_bytes: i.virtual_size_bytes,
            })
            .collect(),
        size_bytes: got.images.iter().map(|i| i.virtual_size_bytes).sum(),
        read_bytes: got.counts.read_bytes,
        new_bytes: got.counts.new_bytes,
        stored_bytes: got.counts.stored_bytes,
        referenced_bytes: got.refs.values().sum(),
        chunks: got.refs.len() as u64,
        elapsed_ms: backup.started.elapsed().as_millis() as u64,
        protected: plan.protected,
        manifest_bytes,
    };
    // A backup given up on at --timeout has had its failure printed.
    runner::point_of_no_return()?;
    repo.commit_backup(&index, &got.refs, &sealed)?;
    Ok(index)
}

/// This host's midstate caches for one VM's disks (see midstate.rs).
struct HashCache<'a> {
    dir: &'a Path,
    repo_id: &'a str,
    uuid: String,
    chunk_size: u64,
}

impl<'a> HashCache<'a> {
    fn new(plan: &'a Plan, vm: &VmRef) -> Self {
        HashCache {
            dir: &plan.cache_dir,
            repo_id: &plan.sealer.repo.config.id,
            uuid: vm.uuid.clone().unwrap_or_default(),
            chunk_size: plan.sealer.repo.config.chunk_size,
        }
    }

    fn path(&self, target: &str) -> Option<PathBuf> {
        midstate::cache_path(self.dir, self.repo_id, &self.uuid, target)
    }

    fn load(&self, target: &str) -> Option<DiskCache> {
        DiskCache::load(&self.path(target)?, self.chunk_size)
    }

    /// Saves each disk's cache after backup `id` committed; a failure only
    /// costs the next backup a full read.
    fn save_all(&self, got: &Gathered, id: &str) {
        for (image, read) in got.images.iter().zip(&got.disks) {
            let cache = DiskCache {
                chunk_size: self.chunk_size,
                size: image.virtual_size_bytes,
                backup: id.to_owned(),
                checkpoint: read.checkpoint.clone(),
                source: image.source.clone(),
                ids: midstate::id_bytes(&image.chunks),
                states: read.states.clone(),
            };
            let saved = self.path(&image.target).map(|p| cache.save(&p));
            if let Some(Err(e)) = saved {
                cli::warn(format!(
                    "cannot save the cache for disk {}: {e}; the next backup reads it in full",
                    image.target
                ));
            }
        }
    }
}

/// `20261121T101500Z-3fa2b1c9`: sorts by time, unique per run.
fn backup_id(now: i64) -> Result<String> {
    let stamp: String = time::rfc3339(now)
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    Ok(format!("{stamp}-{}", crypt::random_hex::<4>()?))
}

/// The UEFI variable store of the domain, from `<os><nvram>`.
fn nvram_path(xml: &str) -> Option<PathBuf> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let os = doc
        .root_element()
        .children()
        .find(|n| n.has_tag_name("os"))?;
    let nvram = os.children().find(|n| n.has_tag_name("nvram"))?;
    let text = nvram.text()?.trim();
    (!text.is_empty()).then(|| PathBuf::from(text))
}

/// Stores a small regular file (the NVRAM) as an image of its own.
fn store_file(sealer: &Sealer, path: &Path) -> Result<Stored> {
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
        if store::is_zero(piece) {
            chunks.push(None);
            continue;
        }
        let c = store::seal_one(sealer, piece)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_and_distinct() {
        let a = backup_id(1_795_000_000).unwrap();
        let b = backup_id(1_795_000_000).unwrap();
        assert!(hv_common::backup_index::is_backup_id(&a), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn nvram_comes_from_the_os_element() {
        let xml =
            "<domain><os><type>hvm</type><nvram template='/t'>/var/lib/n.fd</nvram></os></domain>";
        assert_eq!(nvram_path(xml), Some(PathBuf::from("/var/lib/n.fd")));
        assert_eq!(nvram_path("<domain><os/></domain>"), None);
    }
}
