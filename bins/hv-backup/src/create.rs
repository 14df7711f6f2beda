//! `hv-backup create`: one VM at a time per worker, every disk of it (not
//! cdroms), its domain XML and NVRAM, into one manifest. [`backup_vm`] runs
//! the stages in the order a disk's data flows, each in a module of its
//! own and given only what it needs, not the run's [`Plan`]:
//!
//! 1. decide.rs: per disk, a full read, or an incremental one from the last
//!    checkpoint, and why;
//! 2. read.rs: open each disk's export (source.rs: a backup job of the
//!    running VM, or qemu-nbd on the stopped VM's images) and read it;
//! 3. chunk.rs: cut the export into chunks, skipping holes, zeros and
//!    clean chunks, and hash the image;
//! 4. seal.rs: id, compress, encrypt and write each new chunk;
//! 5. commit.rs: write the manifest and index, and rename the backup into
//!    place.
//!
//! Only after the commit does anything the next backup trusts change: the
//! new checkpoint is kept, this host's caches are saved (midstate.rs), and
//! older checkpoints are removed (checkpoint.rs).
//!
//! Why a reader can trust the whole: chunks are durable before the
//! backup's directory is renamed into place, so the backup appears whole or
//! not at all. A failure before the commit ends the job or qemu-nbd,
//! removes the checkpoint this run made, and leaves no backup, only chunks
//! and `tmp/` files that gc collects; the next run reads from the last
//! committed backup.

use crate::checkpoint::{self, Chain};
use crate::chunk;
use crate::commit::{self, Backup};
use crate::decide;
use crate::midstate::DiskCaches;
use crate::read::{self, Gathered};
use crate::seal::Sealer;
use crate::source;
use hv_common::domain::{self as domxml, Disk};
use hv_common::remote::Place;
use hv_common::targets::VmRef;
use hv_common::{cli, lifecycle, Error, Result, State};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;
use virt::domain::Domain;
use virt::sys;

/// The run's options and what its VMs share. Only [`backup_vm`] sees it;
/// it hands each stage the fields that stage needs.
pub struct Plan {
    pub sealer: Sealer,
    pub scratch_root: PathBuf,
    /// This host's midstate caches (see midstate.rs).
    pub cache_dir: PathBuf,
    /// How long a backup of a VM waits for another run's backup of it
    /// (`--lock-wait`).
    pub lock_wait: std::time::Duration,
    pub note: Option<String>,
    pub protected: bool,
    pub dry_run: bool,
    /// Read every disk in full (`--full`).
    pub full: bool,
}

/// One backup of a VM at a time on this host, whichever repository it
/// goes to: two at once race for its images (one run's `qemu-img bitmap
/// --add` holds the write lock another run's qemu-nbd needs) and for its
/// checkpoints. The second waits up to `wait`, as for the repository lock,
/// and then backs up. A lock that cannot be taken at all (a read-only
/// cache directory) is warned about, not a failed backup.
fn lock_vm(
    cache_dir: &std::path::Path,
    uuid: &str,
    name: &str,
    wait: std::time::Duration,
) -> Result<Option<std::fs::File>> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let safe = !uuid.is_empty() && uuid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !safe {
        return Ok(None);
    }
    let path = cache_dir.join(format!("{uuid}.lock"));
    let opened = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(cache_dir)
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(&path)
        });
    let file = match opened {
        Ok(file) => file,
        Err(e) => {
            hv_common::cli::warn(format!(
                "{name}: cannot take this host's lock {} ({e}); a second backup of it at the same time may fail",
                path.display()
            ));
            return Ok(None);
        }
    };
    let start = Instant::now();
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock)
                if start.elapsed() < wait && !hv_common::runner::abandoned() =>
            {
                if !told {
                    hv_common::cli::warn(format!(
                        "{name}: waiting for another hv-backup run that is backing it up"
                    ));
                    told = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::new(
                    hv_common::Code::Locked,
                    "another hv-backup run is backing up this VM; try again when it ends, or raise --lock-wait",
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io(format!("cannot lock {}", path.display()), e))
            }
        }
    }
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

/// Backs up one VM, stage by stage in the order its data flows.
pub fn backup_vm(plan: &Plan, place: &Place, dom: &Domain, vm: &VmRef) -> Result<Backed> {
    let start = Instant::now();
    // What there is to back up: the VM's state, definitions and disks.
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
    let _one_at_a_time = lock_vm(
        &plan.cache_dir,
        vm.uuid.as_deref().unwrap_or_default(),
        vm.name.as_deref().unwrap_or_default(),
        plan.lock_wait,
    )?;
    let sealer = &plan.sealer;
    let repo = &sealer.repo;
    let caches = DiskCaches::new(
        &plan.cache_dir,
        &repo.config.id,
        vm.uuid.clone().unwrap_or_default(),
        repo.config.chunk_size,
    );
    let chain = Chain::load(dom, &repo.config.id);

    // Decide how to read each disk, then read it: cut into chunks, hashed
    // and sealed as it goes (read.rs, chunk.rs, seal.rs).
    let (mut got, made) = if live {
        let decided = decide::decide(plan.full, &caches, dom, &chain, repo, &disks);
        let running = read::Live {
            place,
            dom,
            live_xml: &live_xml,
            all: &parsed.disks,
            scratch_root: &plan.scratch_root,
        };
        running.read(&disks, decided, sealer, &caches)?
    } else {
        let label = format!("off-{}", source::short(vm.uuid.as_deref().unwrap_or("vm")));
        // The new checkpoint is made before any qemu-nbd holds the images
        // (qemu-img bitmap --add needs their write lock); deciding looks
        // only at the old one.
        let offline = read::Offline::prepare(
            place,
            dom,
            &parsed.disks,
            &disks,
            &repo.config.id,
            &plan.scratch_root,
            &label,
        )?;
        let decided = decide::decide(plan.full, &caches, dom, &chain, repo, &disks);
        offline.read(&disks, decided, sealer, &caches)?
    };
    let new_checkpoint = made.as_ref().map(|c| c.name.clone());
    // From here a failure drops `made`, which removes the checkpoint again.
    let nvram = match nvram_path(&config_xml) {
        Some(path) => match place.read_file(&path)? {
            Some(data) => Some(got.add(chunk::store_bytes(sealer, &path, &data)?)),
            None => None,
        },
        None => None,
    };

    // Commit: the backup exists from here.
    let backup = Backup {
        name: vm.name.clone().unwrap_or_default(),
        uuid: vm.uuid.clone().unwrap_or_default(),
        mode,
        config_xml,
        tags: parsed.tags,
        disks: &got.images,
        nvram,
        refs: &got.refs,
        counts: got.counts,
        note: plan.note.clone(),
        protected: plan.protected,
        started: start,
    };
    let index = commit::commit(repo, backup)?;

    // What the next backup starts from: the new checkpoint, each disk's
    // cache, and no older checkpoints of this repository.
    if let Some(made) = made {
        made.keep();
    }
    for (image, disk) in got.images.iter().zip(&got.disks) {
        caches.save(image, &index.id, disk.checkpoint.clone(), disk.cvs.clone());
    }
    // A stopped VM that got no new checkpoint keeps its old ones: the
    // disks' caches still start from them.
    if live || new_checkpoint.is_some() {
        let stopped = (!live).then_some(parsed.disks.as_slice());
        let keep = new_checkpoint.as_deref();
        let pruned = checkpoint::prune_chain(place, dom, &chain, keep, stopped);
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
        checkpoint: new_checkpoint,
        reads: reports(&got),
        warnings: got.warnings,
    }))
}

/// One entry per disk for the result record.
fn reports(got: &Gathered) -> Vec<DiskReport> {
    got.disks
        .iter()
        .zip(&got.images)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/backups.md names exactly the fields of a backup's record, in
    /// their order (the envelope, then what create made).
    #[test]
    fn the_backup_record_is_the_documented_one() {
        let made = Backed::Made(Made {
            id: "20261121T020000Z-3fa2b1c9".into(),
            created_at: "2026-11-21T02:00:00Z".into(),
            mode: "live".into(),
            disks: vec!["vda".into()],
            size_bytes: 1,
            read_bytes: 1,
            new_bytes: 1,
            stored_bytes: 1,
            elapsed_ms: 1,
            throughput_bytes_per_s: 1,
            checkpoint: None,
            reads: Vec::new(),
            warnings: Vec::new(),
        });
        let vm = hv_common::targets::VmRef::named("web1", "u");
        let record = hv_common::targets::success_record(&vm, "backup", &made);
        let fields: Vec<String> = record.keys().cloned().collect();
        assert_eq!(
            fields,
            hv_testbench::documented_fields("backups.md", "### Backup records")
        );
    }

    #[test]
    fn nvram_comes_from_the_os_element() {
        let xml =
            "<domain><os><type>hvm</type><nvram template='/t'>/var/lib/n.fd</nvram></os></domain>";
        assert_eq!(nvram_path(xml), Some(PathBuf::from("/var/lib/n.fd")));
        assert_eq!(nvram_path("<domain><os/></domain>"), None);
    }
}
