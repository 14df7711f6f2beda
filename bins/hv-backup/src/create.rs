//! `hv-backup create`: one VM at a time per worker, every disk of it (not
//! cdroms), its domain XML and NVRAM, into one manifest. Chunks are made
//! durable before the manifest's directory is renamed into place, so the
//! backup appears whole or not at all.

use crate::crypt;
use crate::format::{self, Image, Index, IndexDisk, Manifest};
use crate::midstate;
use crate::nbd;
use crate::source::{self, LiveJob, QemuNbd, RunDir};
use crate::store::{self, Counts, Sealer, Stored};
use hv_common::domain::{self as domxml, Disk};
use hv_common::targets::VmRef;
use hv_common::{ffi, time, Code, Error, Result};
use serde_json::{json, Map, Value};
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
}

/// libvirt states in which a QEMU process runs and a backup job can read it.
fn has_qemu(state: u32) -> bool {
    matches!(
        state,
        sys::VIR_DOMAIN_RUNNING
            | sys::VIR_DOMAIN_BLOCKED
            | sys::VIR_DOMAIN_PAUSED
            | sys::VIR_DOMAIN_PMSUSPENDED
    )
}

pub fn backup_vm(plan: &Plan, dom: &Domain, vm: &VmRef) -> Result<Map<String, Value>> {
    let start = Instant::now();
    let (state, _) =
        ffi::state(dom).map_err(|e| Error::libvirt("cannot read the VM's state", &e))?;
    let live = has_qemu(state);
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
    let parsed = domxml::parse(&live_xml).map_err(|e| Error::new(Code::Libvirt, e))?;
    let disks: Vec<&Disk> = parsed.disks.iter().filter(|d| d.device == "disk").collect();
    let mode = if live { "live" } else { "offline" };
    if plan.dry_run {
        let targets: Vec<&str> = disks.iter().map(|d| d.target.as_str()).collect();
        return Ok(crate::obj(
            json!({ "mode": mode, "disks": targets, "dry_run": true }),
        ));
    }
    let cache = HashCache::new(plan, vm);
    let mut got = Gathered::default();
    if live {
        let job = LiveJob::begin(dom, &live_xml, &disks, &plan.scratch_root)?;
        for disk in &disks {
            got.store(plan, &cache, disk, job.connect(&disk.target)?)?;
        }
    } else {
        let label = format!("off-{}", source::short(vm.uuid.as_deref().unwrap_or("vm")));
        let dir = RunDir::create(&plan.scratch_root, &label)?;
        for disk in &disks {
            let path = source::offline_path(disk)?;
            let fmt = disk.format.as_deref().unwrap_or("raw");
            let server = QemuNbd::serve(&path, fmt, &dir.0, false, &disk.target)?;
            got.store(plan, &cache, disk, server.connect()?)?;
        }
    }
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
    cache.save_all(&got);
    Ok(result_fields(&index))
}

/// What the disks gave: images, the chunks they reference, counts, and the
/// hash states for the next run's cache.
#[derive(Default)]
struct Gathered {
    images: Vec<Image>,
    refs: BTreeMap<String, u64>,
    counts: Counts,
    states: Vec<Vec<[u32; 8]>>,
}

impl Gathered {
    /// Reads one disk's export into the repository.
    fn store(
        &mut self,
        plan: &Plan,
        cache: &HashCache,
        disk: &Disk,
        mut client: nbd::Client,
    ) -> Result<()> {
        let previous = cache.load(&disk.target, client.size());
        let mut stored = store::store_export(&mut client, &plan.sealer, &disk.target, previous)?;
        self.states.push(std::mem::take(&mut stored.states));
        let mut image = self.add(stored);
        image.format = disk.format.clone().unwrap_or_else(|| "raw".into());
        image.source = disk.source.clone();
        self.images.push(image);
        Ok(())
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
    let index = Index {
        format: format::INDEX_FORMAT.into(),
        version: format::VERSION,
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
    };
    let manifest = Manifest {
        format: format::MANIFEST_FORMAT.into(),
        version: format::VERSION,
        id,
        repository: repo.config.id.clone(),
        name,
        uuid,
        time: index.time.clone(),
        mode: backup.mode.into(),
        chunk_size: repo.config.chunk_size,
        domain_xml: backup.config_xml,
        disks: got.images.clone(),
        nvram: backup.nvram,
        tags: backup.tags,
        note: plan.note.clone(),
        protected: plan.protected,
    };
    let json = serde_json::to_vec(&manifest)
        .map_err(|e| Error::new(Code::Io, format!("cannot encode the manifest: {e}")))?;
    let sealed = crypt::encrypt(&plan.sealer.recipients, &json)?;
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

    fn load(&self, target: &str, size: u64) -> Option<Vec<midstate::Entry>> {
        midstate::load(&self.path(target)?, self.chunk_size, size)
    }

    /// Saves each disk's cache after the backup committed; a failure only
    /// costs the next backup time.
    fn save_all(&self, got: &Gathered) {
        for (image, states) in got.images.iter().zip(&got.states) {
            let entries = midstate::entries(states, &image.chunks);
            let saved = self
                .path(&image.target)
                .map(|p| midstate::save(&p, self.chunk_size, image.virtual_size_bytes, &entries));
            if let Some(Err(e)) = saved {
                hv_common::cli::warn(format!(
                    "cannot save the hash cache for disk {}: {e}; the next backup hashes it in full",
                    image.target
                ));
            }
        }
    }
}

fn result_fields(index: &Index) -> Map<String, Value> {
    let secs = (index.elapsed_ms.max(1)) as f64 / 1000.0;
    crate::obj(json!({
        "id": index.id,
        "time": index.time,
        "mode": index.mode,
        "disks": index.disks.len(),
        "size_bytes": index.size_bytes,
        "read_bytes": index.read_bytes,
        "new_bytes": index.new_bytes,
        "stored_bytes": index.stored_bytes,
        "elapsed_ms": index.elapsed_ms,
        "throughput_bytes_per_s": (index.read_bytes as f64 / secs) as u64,
    }))
}

/// `20261121T101500Z-3fa2b1c9`: sorts by time, unique per run.
fn backup_id(now: i64) -> Result<String> {
    let stamp: String = time::rfc3339(now)
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    Ok(format!(
        "{stamp}-{}",
        crypt::hex(&crypt::random_bytes::<4>()?)
    ))
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
        let (id, size, new) = store::seal_one(sealer, piece)?;
        if new {
            counts.new_bytes += piece.len() as u64;
            counts.stored_bytes += size;
        }
        refs.push((id.clone(), size));
        chunks.push(Some(id));
    }
    let image = Image {
        target: "nvram".into(),
        format: "raw".into(),
        source: Some(path.display().to_string()),
        virtual_size_bytes: data.len() as u64,
        sha256: crypt::hex(&Sha256::digest(&data)),
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
        assert!(format::is_backup_id(&a), "{a}");
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
