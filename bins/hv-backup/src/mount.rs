//! `hv-backup mount`: one file back without restoring a disk. The most
//! asked-for restore is "that config file from last Tuesday"; restoring a
//! 200 GiB disk for it is why people skip restores. Here the backed-up
//! disk becomes a read-only file served by this process over FUSE, read
//! lazily chunk by chunk (each checked against its id, as restore checks),
//! and its filesystem is mounted read-only from a read-only loop device.
//!
//! The mount lives as long as this process: Ctrl-C, SIGTERM or
//! `hv-backup umount DIR` take it down in reverse order (filesystem, loop
//! device, FUSE file) and leave nothing attached. A note in the scratch
//! directory says which process owns which mount, so `umount` finds the
//! owner, or cleans up after one that was killed.

use crate::crypt::{self, ChunkKey, Identities};
use crate::format::{Image, Manifest};
use crate::load::{self, Opener};
use crate::repo::{LockKind, Repo};
use crate::{restore, BackupHead};
use fuser::{FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyData};
use fuser::{ReplyDirectory, ReplyEntry, Request};
use hv_common::cli;
use hv_common::output::{col, to_record, Column, Format, Printer, Show};
use hv_common::{Code, Error, Exit, Result};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

/// What `mount` is asked to show, and where.
#[derive(Debug)]
pub struct Plan {
    pub repo: PathBuf,
    pub lock_wait: Duration,
    pub id: String,
    pub identity: Option<PathBuf>,
    /// The disk (target) to show; `None`: the backup's only disk, or with
    /// `raw` every disk.
    pub disk: Option<String>,
    /// The empty directory the filesystem (or with `raw`, the images)
    /// appear in.
    pub dir: PathBuf,
    /// Show the disk images as files in `dir`, mount nothing from them.
    pub raw: bool,
    /// The partition whose filesystem to mount; `None`: the disk's only one.
    pub partition: Option<u32>,
    /// Decrypted chunks kept in memory.
    pub cache_bytes: u64,
    /// Where the FUSE file and the owner note live.
    pub scratch_dir: PathBuf,
    pub format: Option<Format>,
}

const MOUNT_COLUMNS: &[Column] = &[
    col("ID", "id", Show::Plain),
    col("NAME", "name", Show::Plain),
    col("ACTION", "action", Show::Plain),
    col("OK", "ok", Show::Plain),
    col("PATH", "path", Show::Plain),
    col("FILESYSTEM", "filesystem", Show::Plain),
    col("READ", "bytes_read", Show::Bytes),
];

/// What mount says when the files are there, and again when they are gone
/// (docs/backups.md).
#[derive(Debug, Serialize)]
struct Mounted<'a> {
    /// Which backup, of which VM; `action` is `mount` when the files are
    /// there and `umount` when they are gone again.
    #[serde(flatten)]
    head: BackupHead<'a>,
    /// The directory the user reads: the disk's filesystem, or with
    /// `--raw` the images.
    path: String,
    /// The disks shown, by target.
    disks: Vec<&'a str>,
    /// The image files served (inside `path` with `--raw`).
    images: Vec<String>,
    /// The read-only loop device the filesystem is mounted from; null with `--raw`.
    device: Option<String>,
    /// The partition mounted, by number; null for a whole-disk filesystem or `--raw`.
    partition: Option<u32>,
    /// The filesystem's type as blkid names it; null with `--raw`.
    filesystem: Option<String>,
    /// Chunks opened from the repository so far (decrypted and checked).
    chunks_read: u64,
    /// Their stored size: what was read from the repository.
    bytes_read: u64,
}

/// The note `umount` finds the mount's owner by, in the scratch directory.
#[derive(Debug, Serialize, Deserialize)]
struct Owner {
    pid: u32,
    /// The user's directory, canonical.
    dir: PathBuf,
    /// Where the FUSE filesystem is mounted (the private directory, or
    /// `dir` with `--raw`).
    fuse: PathBuf,
    /// The loop device, once attached.
    device: Option<String>,
}

pub fn mount(plan: &Plan) -> Result<Exit> {
    let repo = Repo::open(&plan.repo)?;
    let index = repo.index(&plan.id)?;
    let identities = crypt::load_identity(plan.identity.as_deref(), "mount")?;
    let dir = checked_dir(&plan.dir)?;
    let lock = repo.lock(LockKind::Shared, plan.lock_wait)?;
    let manifest = load::open_manifest(&repo, &plan.id, &identities)?;
    let key = repo.sealed_key(&identities)?;
    let images: Vec<Image> = restore::chosen_disks(&manifest, plan.disk.as_deref())?
        .into_iter()
        .cloned()
        .collect();
    if !plan.raw && images.len() > 1 {
        let have: Vec<&str> = images.iter().map(|i| i.target.as_str()).collect();
        return Err(Error::usage(format!(
            "backup {} has disks {}: add --disk TARGET (or --raw to see every image as a file)",
            plan.id,
            have.join(", ")
        )));
    }
    let stats = Arc::new(Stats::default());
    let fs = ImageFs::new(
        repo,
        identities,
        key,
        &manifest,
        images.clone(),
        plan.cache_bytes,
        stats.clone(),
    );
    let signals = Signals::register()?;
    let mut m = Mount::new(plan, &dir)?;
    let shown = m.attach(fs, &images, plan.partition);
    let shown = match shown {
        Ok(shown) => shown,
        Err(e) => {
            let _ = m.detach(false);
            return Err(e);
        }
    };
    let targets: Vec<&str> = images.iter().map(|i| i.target.as_str()).collect();
    // One printer per record: a table is printed when its printer
    // finishes, and the first must be seen while the mount serves.
    let print = |record| {
        let mut printer = Printer::stdout(plan.format, MOUNT_COLUMNS);
        printer.emit(record)?;
        printer.finish().map(|_| ())
    };
    let record = |action, shown: &Shown, ok| {
        to_record(&Mounted {
            head: BackupHead::of(&index, action, ok),
            path: dir.display().to_string(),
            disks: targets.clone(),
            images: shown.images.clone(),
            device: shown.device.clone(),
            partition: shown.partition,
            filesystem: shown.filesystem.clone(),
            chunks_read: stats.chunks.load(Ordering::Relaxed),
            bytes_read: stats.bytes.load(Ordering::Relaxed),
        })
    };
    print(record("mount", &shown, true))?;
    serve(&mut m, &signals)?;
    drop(lock);
    print(record("umount", &shown, true))?;
    Ok(Exit::Ok)
}

/// Waits for Ctrl-C, SIGTERM or someone unmounting `dir`, then takes the
/// mount down. A directory still in use is said so and kept; a second
/// signal then detaches everything lazily and ends.
fn serve(m: &mut Mount, signals: &Signals) -> Result<()> {
    let mut asked = 0;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let gone = !is_mountpoint(&m.owner.dir) || m.session_ended();
        let signalled = signals.take();
        if signalled {
            asked += 1;
        }
        if !(gone || signalled) {
            continue;
        }
        match m.detach(asked >= 2) {
            Ok(()) => return Ok(()),
            Err(e) if asked >= 2 => return Err(e),
            Err(e) => cli::warn(format!(
                "{}; press Ctrl-C again to detach it lazily (whatever still reads it then gets I/O errors)",
                e.message
            )),
        }
    }
}

/// What the user sees.
struct Shown {
    images: Vec<String>,
    device: Option<String>,
    partition: Option<u32>,
    filesystem: Option<String>,
}

/// The mount being built or taken down, in the order it was built.
struct Mount {
    owner: Owner,
    /// The private directory holding the owner note and (unless raw) the
    /// FUSE file; `None` once removed.
    private: Option<PathBuf>,
    session: Option<fuser::BackgroundSession>,
    /// The filesystem is mounted at `owner.dir`.
    mounted: bool,
}

impl Mount {
    fn new(plan: &Plan, dir: &Path) -> Result<Mount> {
        let scratch = &plan.scratch_dir;
        crate::repo::mkdir(scratch)?;
        let salt = crypt::random_hex::<4>()?;
        let name = format!("mount-{}-{salt}", std::process::id());
        let private = scratch.join(&name);
        crate::repo::mkdir(&private)?;
        let fuse = if plan.raw {
            dir.to_path_buf()
        } else {
            private.join("images")
        };
        if !plan.raw {
            crate::repo::mkdir(&fuse)?;
        }
        let m = Mount {
            owner: Owner {
                pid: std::process::id(),
                dir: dir.to_path_buf(),
                fuse,
                device: None,
            },
            private: Some(private),
            session: None,
            mounted: false,
        };
        m.save_note()?;
        Ok(m)
    }

    fn save_note(&self) -> Result<()> {
        let Some(private) = &self.private else {
            return Ok(());
        };
        let note = private.join("owner.json");
        let json = serde_json::to_vec(&self.owner)
            .map_err(|e| Error::new(Code::Io, format!("cannot encode JSON: {e}")))?;
        hv_common::fsutil::write_atomic(&note, &json, 0o600)
            .map_err(|e| Error::io(format!("cannot write {}", note.display()), e))
    }

    /// Serves the images, then (unless raw) attaches and mounts one.
    fn attach(&mut self, fs: ImageFs, images: &[Image], partition: Option<u32>) -> Result<Shown> {
        let options = [
            MountOption::RO,
            MountOption::FSName("hv-backup".into()),
            MountOption::Subtype("hv-backup".into()),
            MountOption::NoDev,
            MountOption::NoSuid,
            MountOption::NoExec,
            MountOption::DefaultPermissions,
        ];
        let session = fuser::spawn_mount2(fs, &self.owner.fuse, &options).map_err(|e| {
            Error::io(
                format!(
                    "cannot serve the images over FUSE at {} (/dev/fuse; hv-backup mount runs as root)",
                    self.owner.fuse.display()
                ),
                e,
            )
        })?;
        self.session = Some(session);
        let files: Vec<PathBuf> = images
            .iter()
            .map(|i| self.owner.fuse.join(image_name(&i.target)))
            .collect();
        let images_shown = files.iter().map(|f| f.display().to_string()).collect();
        if self.owner.fuse == self.owner.dir {
            return Ok(Shown {
                images: images_shown,
                device: None,
                partition: None,
                filesystem: None,
            });
        }
        // The partition table is read from the file, and the loop device
        // covers just the chosen filesystem: no partition devices are
        // needed (containers and some VMs never get their nodes).
        let chosen = pick_filesystem(&files[0], partition)?;
        let (offset, size) = (chosen.offset.to_string(), chosen.size.to_string());
        let device = run_tool(
            "losetup",
            &[
                OsStr::new("--find"),
                OsStr::new("--show"),
                OsStr::new("--read-only"),
                OsStr::new("--offset"),
                OsStr::new(&offset),
                OsStr::new("--sizelimit"),
                OsStr::new(&size),
                files[0].as_os_str(),
            ],
        )?;
        self.owner.device = Some(device.clone());
        self.save_note()?;
        let (part, source) = (chosen.number, device.clone());
        let fstype = chosen.fstype.unwrap_or_default();
        let mut options = String::from("ro,nodev,nosuid,noexec");
        // A backup of a running VM holds a journal that was never replayed;
        // the device is read-only, so skip the replay and show the last
        // committed state.
        match fstype.as_str() {
            "ext3" | "ext4" => options += ",noload",
            "xfs" => options += ",norecovery",
            _ => {}
        }
        run_tool(
            "mount",
            &[
                OsStr::new("-t"),
                OsStr::new(&fstype),
                OsStr::new("-o"),
                OsStr::new(&options),
                OsStr::new(&source),
                self.owner.dir.as_os_str(),
            ],
        )
        .map_err(|e| {
            Error::new(
                e.code,
                format!(
                    "cannot mount the {fstype} filesystem of {source}: {}",
                    e.message
                ),
            )
        })?;
        self.mounted = true;
        Ok(Shown {
            images: images_shown,
            device: Some(device),
            partition: part,
            filesystem: Some(fstype),
        })
    }

    fn session_ended(&self) -> bool {
        self.session.as_ref().is_some_and(|s| s.guard.is_finished())
    }

    /// Takes everything down, last built first. `lazy`: detach what is
    /// still in use instead of failing on it.
    fn detach(&mut self, lazy: bool) -> Result<()> {
        if self.mounted && is_mountpoint(&self.owner.dir) {
            unmount(&self.owner.dir, lazy)?;
        }
        self.mounted = false;
        if let Some(device) = self.owner.device.take() {
            // A busy device (lazily unmounted above) is cleared by the
            // kernel when its last user goes.
            if let Err(e) = run_tool("losetup", &[OsStr::new("-d"), OsStr::new(&device)]) {
                self.owner.device = Some(device);
                return Err(e);
            }
        }
        if lazy && is_mountpoint(&self.owner.fuse) {
            unmount(&self.owner.fuse, true)?;
        }
        if let Some(session) = self.session.take() {
            drop(session); // unmounts the FUSE filesystem and ends its thread
        }
        if self.owner.fuse == self.owner.dir && is_mountpoint(&self.owner.dir) {
            unmount(&self.owner.dir, lazy)?;
        }
        if let Some(private) = self.private.take() {
            remove_private(&private);
        }
        Ok(())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.session.is_some() || self.mounted || self.owner.device.is_some() {
            let _ = self.detach(true);
        }
    }
}

fn image_name(target: &str) -> String {
    format!("{target}.raw")
}

/// `dir` made canonical: an empty directory that nothing is mounted on.
fn checked_dir(dir: &Path) -> Result<PathBuf> {
    let canonical = dir.canonicalize().map_err(|e| {
        Error::usage(format!(
            "{} cannot be used as the mount point ({e}); create an empty directory",
            dir.display()
        ))
    })?;
    let entries = std::fs::read_dir(&canonical).map_err(|e| {
        Error::usage(format!(
            "{} is not a directory to mount on ({e}); give an empty directory",
            dir.display()
        ))
    })?;
    if entries.count() > 0 || is_mountpoint(&canonical) {
        return Err(Error::usage(format!(
            "{} is not empty, or something is mounted on it; give an empty directory",
            dir.display()
        )));
    }
    Ok(canonical)
}

/// Removes a mount's private directory: its note, and the images
/// directory the FUSE file was served in.
fn remove_private(private: &Path) {
    let _ = std::fs::remove_file(private.join("owner.json"));
    let _ = std::fs::remove_dir(private.join("images"));
    let _ = std::fs::remove_dir(private);
}

/// Whether something is mounted exactly at `dir` (from /proc/self/mountinfo,
/// whose paths escape spaces and such as octal).
fn is_mountpoint(dir: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = dir.to_string_lossy();
    info.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .is_some_and(|p| hv_common::fsutil::unescape(p, b'\\', 3, 8) == want)
    })
}

fn unmount(dir: &Path, lazy: bool) -> Result<()> {
    let mut args = vec![OsStr::new("--")];
    if lazy {
        args.insert(0, OsStr::new("--lazy"));
    }
    args.push(dir.as_os_str());
    run_tool("umount", &args).map(|_| ()).map_err(|e| {
        Error::new(
            Code::Usage,
            format!(
                "{} is in use ({}); leave it (cd elsewhere, close files there) and try again",
                dir.display(),
                e.message
            ),
        )
    })
}

/// Runs a util-linux tool; its first line of output, or its error.
fn run_tool(program: &str, args: &[&OsStr]) -> Result<String> {
    Ok(tool_lines(program, args)?
        .into_iter()
        .next()
        .unwrap_or_default())
}

/// A tool's lines of output; none when it fails (no table, no filesystem).
fn run_lines(program: &str, args: &[&OsStr]) -> Vec<String> {
    tool_lines(program, args).unwrap_or_default()
}

fn tool_lines(program: &str, args: &[&OsStr]) -> Result<Vec<String>> {
    let out = cli::child_command(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            Error::io(
                format!("cannot run {program} (Debian package util-linux)"),
                e,
            )
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(Error::new(
            Code::Io,
            format!("{program} failed: {}", err.trim()),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .collect())
}

/// A filesystem found on a disk image: a partition's, or the whole disk's.
#[derive(Debug, PartialEq)]
struct Found {
    /// The partition number; `None` for a filesystem on the whole disk.
    number: Option<u32>,
    offset: u64,
    size: u64,
    /// blkid's name for it; `None` when blkid knows none.
    fstype: Option<String>,
}

/// The filesystem to mount from the image `file`: `partition` if given,
/// else the one partition holding a mountable filesystem, else the whole
/// disk's.
fn pick_filesystem(file: &Path, partition: Option<u32>) -> Result<Found> {
    let parts = partitions(file);
    if let Some(want) = partition {
        return match parts.into_iter().find(|p| p.number == Some(want)) {
            Some(p) if p.fstype.is_some() => Ok(p),
            Some(_) => Err(Error::usage(format!(
                "partition {want} holds no filesystem blkid knows; pick another --partition"
            ))),
            None => Err(Error::usage(format!(
                "the disk has no partition {want}; hv-backup mount without --partition lists them"
            ))),
        };
    }
    if parts.is_empty() {
        let size = std::fs::metadata(file)
            .map_err(|e| Error::io(format!("cannot read {}", file.display()), e))?
            .len();
        return match fs_type(file, 0, size) {
            Some(t) if !UNMOUNTABLE.contains(&t.as_str()) => Ok(Found {
                number: None,
                offset: 0,
                size,
                fstype: Some(t),
            }),
            other => Err(Error::usage(format!(
                "the disk holds no filesystem to mount ({}); use --raw to read its image as a file",
                other.unwrap_or_else(|| "blkid finds none".into())
            ))),
        };
    }
    let mountable = |p: &Found| {
        p.fstype
            .as_deref()
            .is_some_and(|t| !UNMOUNTABLE.contains(&t))
    };
    if parts.iter().filter(|p| mountable(p)).count() == 1 {
        return Ok(parts.into_iter().find(mountable).expect("counted"));
    }
    let list: Vec<String> = parts
        .iter()
        .map(|p| {
            format!(
                "{} ({}, {})",
                p.number.unwrap_or(0),
                p.fstype.as_deref().unwrap_or("unknown"),
                hv_common::output::human_bytes(p.size)
            )
        })
        .collect();
    Err(Error::usage(format!(
        "the disk has partitions {}: add --partition N, or --raw to read its image as a file",
        list.join(", ")
    )))
}

/// Filesystems blkid names that mount cannot show as files.
const UNMOUNTABLE: &[&str] = &["swap", "LVM2_member", "crypto_LUKS", "linux_raid_member"];

/// The partitions of the image `file` (MBR or GPT, as partx reads them),
/// each probed for its filesystem; none for a disk without a table.
fn partitions(file: &Path) -> Vec<Found> {
    let table = run_lines(
        "partx",
        &[
            OsStr::new("--noheadings"),
            OsStr::new("--raw"),
            OsStr::new("-o"),
            OsStr::new("NR,START,SECTORS"),
            file.as_os_str(),
        ],
    );
    table
        .iter()
        .filter_map(|line| {
            let mut f = line.split_whitespace().map(str::parse::<u64>);
            let (Some(Ok(n)), Some(Ok(start)), Some(Ok(sectors))) = (f.next(), f.next(), f.next())
            else {
                return None;
            };
            let (offset, size) = (start * 512, sectors * 512);
            Some(Found {
                number: Some(n as u32),
                offset,
                size,
                fstype: fs_type(file, offset, size),
            })
        })
        .collect()
}

fn fs_type(file: &Path, offset: u64, size: u64) -> Option<String> {
    let (offset, size) = (offset.to_string(), size.to_string());
    run_lines(
        "blkid",
        &[
            OsStr::new("-p"),
            OsStr::new("-O"),
            OsStr::new(&offset),
            OsStr::new("-S"),
            OsStr::new(&size),
            OsStr::new("-o"),
            OsStr::new("value"),
            OsStr::new("-s"),
            OsStr::new("TYPE"),
            file.as_os_str(),
        ],
    )
    .into_iter()
    .next()
    .filter(|t| !t.is_empty())
}

/// Ctrl-C and SIGTERM, counted here rather than by the common handler:
/// a second one must detach the mount, not end the process with it attached.
struct Signals(Arc<AtomicBool>);

impl Signals {
    fn register() -> Result<Signals> {
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(sig, Arc::clone(&flag))
                .map_err(|e| Error::io("cannot handle signals", e))?;
        }
        Ok(Signals(flag))
    }

    fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

/// What the mount has read from the repository.
#[derive(Default)]
struct Stats {
    chunks: AtomicU64,
    bytes: AtomicU64,
}

/// The FUSE filesystem: a directory of read-only image files.
struct ImageFs {
    repo: Repo,
    identities: Identities,
    key: ChunkKey,
    backup: String,
    chunk_size: u64,
    images: Vec<Image>,
    cache: ChunkCache,
    stats: Arc<Stats>,
}

const ROOT: u64 = 1;
const TTL: Duration = Duration::from_secs(3600);

impl ImageFs {
    fn new(
        repo: Repo,
        identities: Identities,
        key: ChunkKey,
        manifest: &Manifest,
        images: Vec<Image>,
        cache_bytes: u64,
        stats: Arc<Stats>,
    ) -> ImageFs {
        let chunk_size = manifest.chunk_size;
        ImageFs {
            repo,
            identities,
            key,
            backup: manifest.id.clone(),
            chunk_size,
            images,
            cache: ChunkCache::new((cache_bytes / chunk_size).max(4) as usize),
            stats,
        }
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, size, perm) = if ino == ROOT {
            (FileType::Directory, 0, 0o500)
        } else {
            let image = self.images.get((ino - 2) as usize)?;
            (FileType::RegularFile, image.virtual_size_bytes, 0o400)
        };
        Some(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 1 << 16,
            flags: 0,
        })
    }

    /// Chunk `i` of image `which`, decrypted and checked; `None` for zeros.
    fn chunk(&mut self, which: usize, i: usize) -> Result<Option<Arc<Vec<u8>>>> {
        let image = &self.images[which];
        let Some(id) = image.chunks.get(i).cloned().flatten() else {
            return Ok(None);
        };
        if let Some(data) = self.cache.get(which, i) {
            return Ok(Some(data));
        }
        let op = Opener {
            repo: &self.repo,
            identities: &self.identities,
            key: self.key,
            workers: 1,
            backup: &self.backup,
        };
        let data = Arc::new(load::open_one(&op, image, self.chunk_size, i)?.unwrap_or_default());
        let stored = match self.repo.chunk_file(&id) {
            crate::repo::Sealed::Intact { whole, .. } => whole,
            _ => 0,
        };
        self.stats.chunks.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes.fetch_add(stored, Ordering::Relaxed);
        self.cache.put(which, i, data.clone());
        Ok(Some(data))
    }

    fn read_at(&mut self, which: usize, offset: u64, len: usize) -> Result<Vec<u8>> {
        let size = self.images[which].virtual_size_bytes;
        let end = (offset + len as u64).min(size);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut at = offset;
        while at < end {
            let i = (at / self.chunk_size) as usize;
            let within = (at % self.chunk_size) as usize;
            let chunk_end = ((i as u64 + 1) * self.chunk_size).min(end);
            let n = (chunk_end - at) as usize;
            match self.chunk(which, i)? {
                Some(data) => out.extend_from_slice(&data[within..within + n]),
                None => out.resize(out.len() + n, 0),
            }
            at += n as u64;
        }
        Ok(out)
    }
}

impl Filesystem for ImageFs {
    fn lookup(&mut self, _req: &Request, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let found = (parent == ROOT)
            .then(|| {
                self.images
                    .iter()
                    .position(|i| OsStr::new(&image_name(&i.target)) == name)
            })
            .flatten()
            .and_then(|n| self.attr(n as u64 + 2));
        match found {
            Some(attr) => reply.entry(&TTL, &attr, 0),
            None => reply.error(libc::ENOENT),
        }
    }

    fn getattr(&mut self, _req: &Request, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(libc::ENOENT),
        }
    }

    fn read(
        &mut self,
        _req: &Request,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock: Option<u64>,
        reply: ReplyData,
    ) {
        if ino < 2 || (ino - 2) as usize >= self.images.len() || offset < 0 {
            return reply.error(libc::EINVAL);
        }
        match self.read_at((ino - 2) as usize, offset as u64, size as usize) {
            Ok(data) => reply.data(&data),
            Err(e) => {
                // The reader sees EIO; the person running mount sees which chunk.
                cli::warn(&e);
                reply.error(libc::EIO)
            }
        }
    }

    fn readdir(
        &mut self,
        _req: &Request,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        if ino != ROOT {
            return reply.error(libc::ENOTDIR);
        }
        let mut entries = vec![
            (ROOT, FileType::Directory, ".".to_owned()),
            (ROOT, FileType::Directory, "..".to_owned()),
        ];
        for (n, image) in self.images.iter().enumerate() {
            entries.push((
                n as u64 + 2,
                FileType::RegularFile,
                image_name(&image.target),
            ));
        }
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset.max(0) as usize) {
            if reply.add(*ino, (i + 1) as i64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// The most recently used decrypted chunks, by (image, index).
struct ChunkCache {
    capacity: usize,
    map: HashMap<(usize, usize), Arc<Vec<u8>>>,
    order: VecDeque<(usize, usize)>,
}

impl ChunkCache {
    fn new(capacity: usize) -> ChunkCache {
        ChunkCache {
            capacity,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn get(&mut self, image: usize, i: usize) -> Option<Arc<Vec<u8>>> {
        let data = self.map.get(&(image, i))?.clone();
        self.order.retain(|k| *k != (image, i));
        self.order.push_back((image, i));
        Some(data)
    }

    fn put(&mut self, image: usize, i: usize, data: Arc<Vec<u8>>) {
        if self.map.insert((image, i), data).is_none() {
            self.order.push_back((image, i));
        }
        while self.map.len() > self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
    }
}

/// `hv-backup umount DIR`: asks the mount's owner to take it down and
/// waits for it; takes down itself what a killed owner left.
pub fn umount(dir: &Path, scratch_dir: &Path, format: Option<Format>) -> Result<Exit> {
    let canonical = dir
        .canonicalize()
        .map_err(|e| Error::usage(format!("{}: {e}", dir.display())))?;
    let Some((note, owner)) = find_owner(scratch_dir, &canonical) else {
        return Err(Error::usage(format!(
            "{} is not mounted by hv-backup mount (no note of it in {}; give the same --scratch-dir)",
            dir.display(),
            scratch_dir.display()
        )));
    };
    let started = Instant::now();
    if crate::lease::hv_backup_runs(owner.pid) {
        run_tool(
            "kill",
            &[OsStr::new("-TERM"), OsStr::new(&owner.pid.to_string())],
        )?;
        while crate::lease::hv_backup_runs(owner.pid) {
            if started.elapsed() > Duration::from_secs(30) {
                return Err(Error::new(
                    Code::Timeout,
                    format!(
                        "hv-backup mount (pid {}) did not take {} down within 30 s; it may be in use: see that process's messages",
                        owner.pid,
                        dir.display()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if is_mountpoint(&canonical) {
            return Err(Error::new(
                Code::Io,
                format!("{} is still mounted after its owner ended", dir.display()),
            ));
        }
    } else {
        // The owner was killed: what it built is still attached.
        if is_mountpoint(&owner.dir) && owner.dir != owner.fuse {
            unmount(&owner.dir, false)?;
        }
        if let Some(device) = &owner.device {
            run_tool("losetup", &[OsStr::new("-d"), OsStr::new(device)])?;
        }
        if is_mountpoint(&owner.fuse) {
            unmount(&owner.fuse, false)?;
        }
        if let Some(private) = note.parent() {
            remove_private(private);
        }
    }
    let mut printer = Printer::stdout(format, UMOUNT_COLUMNS);
    printer.emit(to_record(&Unmounted {
        path: canonical.display().to_string(),
        action: "umount",
        ok: true,
        pid: owner.pid,
        elapsed_ms: started.elapsed().as_millis() as u64,
    }))?;
    printer.finish()?;
    Ok(Exit::Ok)
}

const UMOUNT_COLUMNS: &[Column] = &[
    col("PATH", "path", Show::Plain),
    col("ACTION", "action", Show::Plain),
    col("OK", "ok", Show::Plain),
    col("PID", "pid", Show::Plain),
];

/// What `hv-backup umount` says (docs/backups.md).
#[derive(Debug, Serialize)]
struct Unmounted {
    /// The directory that was mounted.
    path: String,
    /// `umount`.
    action: &'static str,
    /// Always true: a failure is an error on stderr, not a record.
    ok: bool,
    /// The hv-backup mount process that owned it.
    pid: u32,
    /// How long taking it down took.
    elapsed_ms: u64,
}

fn find_owner(scratch_dir: &Path, dir: &Path) -> Option<(PathBuf, Owner)> {
    let entries = std::fs::read_dir(scratch_dir).ok()?;
    entries.flatten().find_map(|e| {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with("mount-") {
            return None;
        }
        let note = e.path().join("owner.json");
        let text = hv_common::fsutil::read_limited(&note, 64 << 10).ok()?;
        let owner: Owner = serde_json::from_slice(&text).ok()?;
        (owner.dir == dir).then_some((note, owner))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_records_are_the_documented_ones() {
        let record = Mounted {
            head: BackupHead::example("mount"),
            path: "/mnt/r".into(),
            disks: vec!["vda"],
            images: vec!["/var/tmp/hv-backup/mount-1-0/images/vda.raw".into()],
            device: Some("/dev/loop3".into()),
            partition: Some(1),
            filesystem: Some("ext4".into()),
            chunks_read: 3,
            bytes_read: 1 << 20,
        };
        hv_testbench::assert_documented(&to_record(&record), "backups.md", "#### mount records");
        let record = Unmounted {
            path: "/mnt/r".into(),
            action: "umount",
            ok: true,
            pid: 1,
            elapsed_ms: 1,
        };
        hv_testbench::assert_documented(&to_record(&record), "backups.md", "#### umount records");
    }

    #[test]
    fn the_cache_keeps_the_most_recently_used_chunks() {
        let mut cache = ChunkCache::new(2);
        let data = |b: u8| Arc::new(vec![b]);
        cache.put(0, 1, data(1));
        cache.put(0, 2, data(2));
        assert!(cache.get(0, 1).is_some());
        cache.put(0, 3, data(3));
        assert!(cache.get(0, 2).is_none(), "the least recently used went");
        assert_eq!(cache.get(0, 1).as_deref(), Some(&vec![1]));
        assert_eq!(cache.get(0, 3).as_deref(), Some(&vec![3]));
    }
}
