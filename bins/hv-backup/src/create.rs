//! `hv-backup create`: one VM at a time per worker, every disk of it (not
//! cdroms), its domain XML and NVRAM, into one manifest. Chunks are made
//! durable before the manifest's directory is renamed into place, so the
//! backup appears whole or not at all.

use crate::crypt;
use crate::format::{self, Image, Index, IndexDisk, Manifest};
use crate::midstate;
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

    let mut images = Vec::new();
    let mut refs = BTreeMap::new();
    let mut counts = Counts::default();
    let mut caches = Vec::new();
    let uuid = vm.uuid.clone().unwrap_or_default();
    let repo_id = plan.sealer.repo.config.id.clone();
    let chunk_size = plan.sealer.repo.config.chunk_size;
    let cache_of = |target: &str| midstate::cache_path(&plan.cache_dir, &repo_id, &uuid, target);
    let load_cache = |target: &str, size: u64| {
        cache_of(target).and_then(|p| midstate::load(&p, chunk_size, size))
    };
    let mut keep = |stored: Stored, disk: &Disk| {
        let entries = stored.cache_entries();
        caches.push((
            disk.target.clone(),
            stored.image.virtual_size_bytes,
            entries,
        ));
        counts.add(stored.counts);
        refs.extend(stored.refs);
        let mut image = stored.image;
        image.format = disk.format.clone().unwrap_or_else(|| "raw".into());
        image.source = disk.source.clone();
        images.push(image);
    };
    if live {
        let job = LiveJob::begin(dom, &live_xml, &disks, &plan.scratch_root)?;
        for disk in &disks {
            let mut client = job.connect(&disk.target)?;
            let cache = load_cache(&disk.target, client.size());
            let stored = store::store_export(&mut client, &plan.sealer, &disk.target, cache)?;
            keep(stored, disk);
        }
    } else {
        let dir = RunDir::create(
            &plan.scratch_root,
            &format!("off-{}", source::short(vm.uuid.as_deref().unwrap_or("vm"))),
        )?;
        for disk in &disks {
            let path = source::offline_path(disk)?;
            let fmt = disk.format.as_deref().unwrap_or("raw");
            let server = QemuNbd::serve(&path, fmt, &dir.0, false, &disk.target)?;
            let mut client = server.connect()?;
            let cache = load_cache(&disk.target, client.size());
            let stored = store::store_export(&mut client, &plan.sealer, &disk.target, cache)?;
            keep(stored, disk);
        }
    }
    let nvram = match nvram_path(&config_xml) {
        Some(path) if path.exists() => {
            let stored = store_file(&plan.sealer, &path)?;
            counts.add(stored.counts);
            refs.extend(stored.refs);
            Some(stored.image)
        }
        _ => None,
    };
    let repo = &plan.sealer.repo;
    repo.sync_chunk_dirs(refs.keys().map(String::as_str))?;

    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let now = now_ms.div_euclid(1000);
    let id = backup_id(now)?;
    let name = vm.name.clone().unwrap_or_default();
    let elapsed_ms = start.elapsed().as_millis() as u64;
    let index = Index {
        format: format::INDEX_FORMAT.into(),
        version: format::VERSION,
        id: id.clone(),
        name: name.clone(),
        uuid: uuid.clone(),
        time: time::rfc3339(now),
        time_unix: now,
        time_unix_ms: now_ms,
        mode: mode.into(),
        disks: images
            .iter()
            .map(|i| IndexDisk {
                target: i.target.clone(),
                virtual_size_bytes: i.virtual_size_bytes,
            })
            .collect(),
        size_bytes: images.iter().map(|i| i.virtual_size_bytes).sum(),
        read_bytes: counts.read_bytes,
        new_bytes: counts.new_bytes,
        stored_bytes: counts.stored_bytes,
        referenced_bytes: refs.values().sum(),
        chunks: refs.len() as u64,
        elapsed_ms,
        protected: plan.protected,
    };
    let manifest = Manifest {
        format: format::MANIFEST_FORMAT.into(),
        version: format::VERSION,
        id: id.clone(),
        repository: repo.config.id.clone(),
        name,
        uuid: uuid.clone(),
        time: index.time.clone(),
        mode: mode.into(),
        chunk_size: repo.config.chunk_size,
        domain_xml: config_xml,
        disks: images,
        nvram,
        tags: parsed.tags.clone(),
        note: plan.note.clone(),
        protected: plan.protected,
    };
    let json = serde_json::to_vec(&manifest)
        .map_err(|e| Error::new(Code::Io, format!("cannot encode the manifest: {e}")))?;
    let sealed = crypt::encrypt(&plan.sealer.recipients, &json)?;
    repo.commit_backup(&index, &refs, &sealed)?;
    for (target, size, entries) in caches {
        let saved = cache_of(&target).map(|p| midstate::save(&p, chunk_size, size, &entries));
        if let Some(Err(e)) = saved {
            hv_common::cli::warn(format!(
                "cannot save the hash cache for disk {target}: {e}; the next backup hashes it in full"
            ));
        }
    }
    Ok(result_fields(&index))
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
