//! hv-backup: encrypted, compressed, deduplicated VM backups in a plain
//! directory, made without pausing running VMs, checked by `verify`, and
//! restorable to new disks and a new domain. The host holds only age
//! public keys: a stolen host or repository does not give the data away;
//! the identity that opens it lives elsewhere until a restore needs it.
//! docs/backup-format.md specifies the repository for other readers.

// `create` backs up a VM in stages, in the order a disk's data flows:
mod create;
// 1. per disk, a full read or an incremental one, and why;
mod decide;
// 2. each disk's export opened and read;
mod read;
// 3. cut into chunks, holes and zeros skipped, the image hashed;
mod chunk;
// 4. each new chunk compressed, encrypted and written;
mod seal;
// 5. the manifest and index written, the backup renamed into place.
mod commit;
// What create's stages stand on: checkpoints, this host's caches, and the
// NBD exports disks are read through (restore writes through them too).
mod checkpoint;
mod imagelock;
mod mapped;
mod midstate;
mod nbd;
mod source;
// The other commands.
mod gc;
mod mount;
mod prune;
mod restore;
mod sync;
mod verify;
// What restore and verify stand on.
mod define;
mod direct;
mod load;
mod write;
// Shared by all: the repository, its formats and keys, and libvirt calls.
mod crypt;
mod ffi;
mod format;
mod lease;
mod repo;
mod s3;

use clap::{Parser, Subcommand};
use hv_common::bulk::{self, Action};
use hv_common::cli::KeepArgs;
use hv_common::cli::{ActionArgs, ConnectArgs, OutputArgs};
use hv_common::hosts::Scope;
use hv_common::manual::Manual;
use hv_common::output::{col, to_record, Column, Format, Printer, Show};
use hv_common::progress::Progress;
use hv_common::{time, Error, Exit, Result};
use repo::{LockKind, Repo};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use write::DiskFormat;

#[derive(Debug, Parser)]
#[command(
    name = "hv-backup",
    version,
    about = "Encrypted, compressed, deduplicated VM backups you can verify and restore",
    long_about = "Back up VMs into a directory repository: fixed-size chunks, deduplicated, \
        compressed with zstd and encrypted with age to public keys, so the host cannot read its \
        own backups. Running VMs are read through a libvirt backup job without pausing them; \
        stopped VMs are read in place. verify checks structure or, with the identity, every byte; \
        restore writes new sparse disks and can define the domain again."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// `-c` before the subcommand, as git and virsh take it (`hv-snap -c URI ls`).
    #[command(flatten)]
    pub global_connect: hv_common::cli::ConnectArgs,
    /// `--format` and `--json` before the subcommand.
    #[command(flatten)]
    pub global_output: hv_common::cli::OutputArgs,
    #[command(flatten)]
    pub s3: S3Args,
}

/// Where an `s3://BUCKET/PREFIX` repository's store is. Credentials come
/// from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or the AWS-style
/// credentials file, never from a flag (argv is visible to every user).
#[derive(Debug, Clone, clap::Args)]
pub struct S3Args {
    /// The S3 API of an s3:// repository (http://127.0.0.1:3900 for a local Garage)
    #[arg(long, global = true, env = "HV_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// The store's region (Garage: its s3_region, often "garage")
    #[arg(
        long,
        global = true,
        env = "HV_S3_REGION",
        value_name = "REGION",
        default_value = "us-east-1"
    )]
    pub s3_region: String,
    /// Address the bucket in the host name (bucket.endpoint) instead of the path (endpoint/bucket)
    #[arg(long, global = true, env = "HV_S3_VIRTUAL_HOST")]
    pub s3_virtual_host: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a repository
    Init(InitArgs),
    /// Back up VMs
    Create(CreateArgs),
    /// List backups, newest first
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Check backups: every chunk present (fast) or every byte (--deep)
    Verify(VerifyArgs),
    /// Restore a backup's disks to new files, and optionally its domain
    Restore(RestoreArgs),
    /// Delete the backups a retention policy does not keep, then collect garbage
    Prune(PruneArgs),
    /// Delete chunks no backup references, and leftovers of killed runs
    Gc(GcArgs),
    /// Copy backups to another repository (a replica), sending only what it lacks
    Sync(SyncArgs),
    /// Show a backed-up disk's filesystem read-only in a directory, to copy files out
    Mount(MountArgs),
    /// Take down what hv-backup mount put on a directory
    Umount(UmountArgs),
    /// Put the repository's chunk-id key back on this host, from the repository and the identity
    RecoverKey(RecoverKeyArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct RepoArgs {
    /// The repository: a directory, or s3://BUCKET/PREFIX on object storage
    #[arg(
        short = 'r',
        long = "repo",
        env = "HV_BACKUP_REPO",
        value_name = "DIR|URL"
    )]
    pub repo: PathBuf,
    /// How long to wait for another hv-backup run's repository lock (90, 90s, 5m, 1h30m)
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = time::duration)]
    pub lock_wait: Duration,
}

#[derive(Debug, Clone, clap::Args)]
pub struct KeyDirArgs {
    /// Where this host keeps each repository's chunk-id key
    #[arg(
        long,
        env = "HV_BACKUP_KEY_DIR",
        value_name = "DIR",
        default_value = "/var/lib/hv/backup-keys"
    )]
    pub key_dir: PathBuf,
}

#[derive(Debug, Clone, clap::Args)]
pub struct WorkArgs {
    /// Threads compressing and encrypting (or decrypting) chunks [default: one per CPU]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: Option<u16>,
    /// Directory for backup-job sockets and scratch files (QEMU must be able to enter it)
    #[arg(
        long,
        env = "HV_BACKUP_SCRATCH_DIR",
        value_name = "DIR",
        default_value = "/var/tmp/hv-backup"
    )]
    pub scratch_dir: PathBuf,
}

impl WorkArgs {
    fn workers(&self) -> usize {
        self.workers.map(usize::from).unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Where the new repository goes: a directory (absent or empty), or s3://BUCKET/PREFIX (an empty prefix)
    #[arg(value_name = "DIR|URL")]
    pub repo: PathBuf,
    /// An age public key (age1...) backups are encrypted to; repeatable
    #[arg(long, value_name = "AGE1", required_unless_present = "recipients_file")]
    pub recipient: Vec<String>,
    /// A file of age public keys, one per line (# comments allowed)
    #[arg(long, value_name = "FILE")]
    pub recipients_file: Option<PathBuf>,
    /// zstd level for chunks (1 fastest … 19 smallest)
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub compression_level: i32,
    #[command(flatten)]
    pub key_dir: KeyDirArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// VMs to back up, by name or UUID [default: records or names from stdin]
    #[arg(value_name = "VM")]
    pub vms: Vec<String>,
    #[command(flatten)]
    pub repo: RepoArgs,
    /// A note stored (encrypted) with each backup
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,
    /// Mark the backups protected: prune keeps them
    #[arg(long)]
    pub protected: bool,
    /// Give up on a VM after this long (90, 90s, 5m, 1h30m; 0: never)
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = time::duration)]
    pub timeout: Duration,
    /// Read every disk in full, even where a checkpoint allows an incremental read
    #[arg(long)]
    pub full: bool,
    #[command(flatten)]
    pub work: WorkArgs,
    #[command(flatten)]
    pub key_dir: KeyDirArgs,
    /// Where this host keeps each disk's last chunk list, checkpoint and hash states (deleting it makes the next backup a full read)
    #[arg(
        long,
        env = "HV_BACKUP_CACHE_DIR",
        value_name = "DIR",
        default_value = "/var/cache/hv/backup"
    )]
    pub cache_dir: PathBuf,
    #[command(flatten)]
    pub args: ActionArgs,
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Only backups of this VM (name or UUID); repeatable
    #[arg(long, value_name = "VM")]
    pub vm: Vec<String>,
    #[command(flatten)]
    pub fields: hv_common::cli::FieldsArgs,
    #[command(flatten)]
    pub repo: RepoArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct IdentityArgs {
    /// The age identity file that opens the backups (never the key itself on the command line)
    #[arg(short = 'i', long, env = "HV_BACKUP_IDENTITY", value_name = "FILE")]
    pub identity: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Backup ids [default: ids from piped records, else every backup]
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
    /// Only backups of this VM (name or UUID); repeatable
    #[arg(long, value_name = "VM")]
    pub vm: Vec<String>,
    /// Decrypt, decompress and re-hash every chunk and every disk image
    #[arg(long)]
    pub deep: bool,
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub work: WorkArgs,
    #[command(flatten)]
    pub repo: RepoArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup id (see hv-backup ls)
    #[arg(value_name = "ID")]
    pub id: String,
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Restore only this disk (its target, e.g. vda)
    #[arg(long, value_name = "TARGET")]
    pub disk: Option<String>,
    /// Write the one disk here; `-` streams it raw to stdout
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output_path: Option<PathBuf>,
    /// Directory for the restored disks, named <vm>-<target>.<format>; on the host -c names
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Format of the restored disks: qcow2 or raw [default: each disk's original format]
    #[arg(long, value_parser = hv_common::cli::choice::<DiskFormat>(), value_name = "FORMAT", hide_possible_values = true)]
    pub disk_format: Option<DiskFormat>,
    /// Define the domain again around the restored disks, with a new UUID and new MACs
    #[arg(long)]
    pub define: bool,
    /// Name for the restored domain and files [default: the backed-up VM's name]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Replace existing files, and a shut-off domain of the same name
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub work: WorkArgs,
    #[command(flatten)]
    pub repo: RepoArgs,
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Only backups of this VM (name or UUID); repeatable [default: every VM]
    #[arg(long, value_name = "VM")]
    pub vm: Vec<String>,
    #[command(flatten)]
    pub keep: KeepArgs,
    /// Show what would be deleted, delete nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Do not collect unreferenced chunks afterwards
    #[arg(long)]
    pub no_gc: bool,
    #[command(flatten)]
    pub repo: RepoArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// Count what would be deleted, delete nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub repo: RepoArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// Backup ids [default: ids from piped records, else every backup]
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
    /// The repository to copy from (a directory or s3://BUCKET/PREFIX)
    #[arg(long, env = "HV_BACKUP_REPO", value_name = "DIR|URL")]
    pub from: PathBuf,
    /// The repository to copy to; a new or empty directory or prefix becomes a replica of --from
    #[arg(long, env = "HV_BACKUP_SYNC_TO", value_name = "DIR|URL")]
    pub to: PathBuf,
    /// Only backups of this VM (name or UUID); repeatable
    #[arg(long, value_name = "VM")]
    pub vm: Vec<String>,
    /// Check every chunk of each chosen backup at the destination, and send again what one it had lacks there
    #[arg(long)]
    pub verify: bool,
    /// Afterwards, delete the destination's backups its --keep-* rules do not keep, then collect garbage there
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub keep: KeepArgs,
    /// Show what would be sent, write nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// How long to wait for another hv-backup run's lock on either repository (90, 90s, 5m, 1h30m)
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = time::duration)]
    pub lock_wait: Duration,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, clap::Args)]
pub struct MountArgs {
    /// The backup id (see hv-backup ls)
    #[arg(value_name = "ID")]
    pub id: String,
    /// An empty directory: the disk's filesystem appears here (with --raw, its image files)
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The disk to show, by target (vda) [default: the backup's only disk]
    #[arg(long, value_name = "TARGET")]
    pub disk: Option<String>,
    /// The partition whose filesystem to show [default: the disk's only filesystem]
    #[arg(long, value_name = "N", conflicts_with = "raw")]
    pub partition: Option<u32>,
    /// Show the disk images as read-only files in DIR instead, for your own tools
    #[arg(long)]
    pub raw: bool,
    /// Memory for decrypted chunks (256M, 1G)
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = hv_common::size::parse)]
    pub cache: u64,
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub work: WorkArgs,
    #[command(flatten)]
    pub repo: RepoArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, clap::Args)]
pub struct UmountArgs {
    /// The directory hv-backup mount serves
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub work: WorkArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, clap::Args)]
pub struct RecoverKeyArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub key_dir: KeyDirArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub const MANUAL: Manual = Manual {
    exit_status: hv_common::manual::EXIT_STATUS,
    environment: hv_common::manual::ENVIRONMENT,
    examples: &[
        ("Create a repository; keep the identity off this host:", "age-keygen -o /safe/place/backup.key && hv-backup init /srv/backup --recipient \"$(age-keygen -y /safe/place/backup.key)\""),
        ("Back up every production VM, two at a time:", "export HV_BACKUP_REPO=/srv/backup; hv-ls --tag prod | hv-backup create -j 2"),
        ("Snapshot, then back up, the same VMs:", "hv-ls --tag prod | hv-snap create --name pre-upgrade | hv-backup create"),
        ("VMs whose newest backup is older than 26 hours:", "hv-backup ls | jq -s 'group_by(.uuid)[] | max_by(.created_at) | select(.age_hours > 26) | .name'"),
        ("Check every chunk of every backup, then every byte of the newest:", "hv-backup verify && hv-backup verify --deep --identity /safe/place/backup.key \"$(hv-backup ls | head -1 | jq -r .id)\""),
        ("Restore a backup as a new VM beside the original:", "hv-backup restore 20261121T020000Z-3fa2b1c9 --identity key.txt --dir /var/lib/libvirt/images --define --name web1-restored"),
        ("Bring a VM back on another host, its disks written there over ssh:", "hv-backup restore ID --identity key.txt -c qemu+ssh://root@h2/system --dir /var/lib/libvirt/images --define"),
        ("Stream one disk raw onto a logical volume (exit 1 if the stream is cut short):", "hv-backup restore ID --identity key.txt --disk vda -o - | dd of=/dev/vg0/web1-vda bs=4M"),
        ("Keep 7 daily, 4 weekly and 6 monthly backups per VM:", "hv-backup prune --keep-daily 7 --keep-weekly 4 --keep-monthly 6"),
        ("Copy one file out of last night's backup of web1, then take the mount down:", "hv-backup mount \"$(hv-backup ls --vm web1 | head -1 | jq -r .id)\" /mnt/r --identity key.txt & sleep 2; cp /mnt/r/etc/nginx/nginx.conf .; hv-backup umount /mnt/r"),
        ("Back up to an S3-compatible store (credentials from the environment, never a flag):", "export HV_S3_ENDPOINT=https://s3.example.net AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=…; hv-backup init s3://backups/hv --recipient age1… && hv-ls --tag prod | hv-backup create --repo s3://backups/hv"),
        ("Copy the backups to a disk elsewhere (the first run makes it a replica; later runs send only what is new):", "hv-backup sync --from /srv/backup --to /mnt/offsite/hv --verify"),
    ],
    notes: &[
        "The repository is a directory (docs/backup-format.md describes every file): chunks/ holds 4 MiB pieces of disk images, each compressed with zstd and encrypted with age to the recipients given to init, named by a keyed BLAKE3 hash so equal data is stored once; backups/<id>/ holds a clear index.json (VM, time, sizes, protected), the list of chunks it references, and manifest.age, the encrypted manifest (domain XML, NVRAM, per disk its format, size, chunk list and BLAKE3). The repository is safe to copy with rsync while no backup runs.",
        "Keys: the host needs only the recipients (public keys) and the chunk-id key, which init stores in --key-dir and also, encrypted, in the repository; recover-key puts it back on a new host. restore, verify --deep and recover-key need the identity (--identity FILE or HV_BACKUP_IDENTITY naming a file); keep it off the host.",
        "create: a running VM is read through a libvirt pull-mode backup job: QEMU exports a point-in-time view over NBD on a unix socket in --scratch-dir, the guest keeps running, and only blocks it overwrites meanwhile go to a scratch file. A stopped VM is read in place, with qemu-nbd --read-only serving each image and the image locked against writers as QEMU locks images (qemu-nbd locks a qcow2 image, hv-backup a raw one): starting the VM during its backup fails rather than corrupting the copy. Here the data is read from the image file where qemu-img map places it, the rest through qemu-nbd. Unallocated and zero regions are never read or stored. A VM on another host (-c, --hosts) is read there the same way, over the ssh of its qemu+ssh:// URI (user, port, keyfile, known_hosts, command): the job's directory is made in --scratch-dir there, qemu-nbd and qemu-img run there, and their NBD sockets are forwarded to --scratch-dir here, so the data crosses inside ssh; other transports are refused. Records carry host then. Records: id (the backup's), created_at (RFC 3339, UTC), mode (live or offline), disks, size_bytes, read_bytes, new_bytes (after dedup), stored_bytes (compressed and encrypted), elapsed_ms, throughput_bytes_per_s, checkpoint (the one this backup created, or null), reads (per disk: target, read full with its reason, or incremental with base and dirty_bytes) and warnings.",
        "Incremental: each backup of a VM with qcow2 disks creates a libvirt checkpoint (a stopped VM's by qemu-img bitmap --add and a redefinition, as libvirt creates checkpoints only on running VMs) (named hv-<16 hex of the repository id>-<time>-<random>, so repositories never share a chain); the next backup to the same repository reads only the 4 MiB chunks the checkpoint's dirty bitmap marks and takes the others from the previous chunk list, which --cache-dir keeps. Every manifest is still complete. A deleted or foreign checkpoint, a missing bitmap, a replaced or resized disk, chunks no longer in the repository, a cleared cache or a job libvirt refuses each cost one full read of that disk with a warning, never a failed backup; older hv checkpoints of the repository are deleted after each backup. A bitmap QEMU never saved (killed while running) also costs one full read. Raw disks are always read in full. An incrementally read disk gets its whole-image BLAKE3 from the cache's parts for the unchanged chunks (none if the cache lacks them; its chunks are still checked by id). --full reads everything.",
        "Crash safety: chunks are written to tmp/, synced and renamed; a backup's directory is renamed into backups/ last. A run killed at any point leaves no backup that looks complete; the next create ends a backup job the killed run left in libvirt; gc (also run by prune) deletes the leftovers. create shares the repository lock; prune and gc take it alone and wait up to --lock-wait (default 1h).",
        "Object storage: --repo s3://BUCKET/PREFIX keeps the same files as objects (docs/backup-format.md): a backup's index.json is written last, so a backup is listed only when complete; locks are objects with a ten-minute lease refreshed every minute. --s3-endpoint (HV_S3_ENDPOINT), --s3-region (HV_S3_REGION), --s3-virtual-host (HV_S3_VIRTUAL_HOST); credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or the AWS-style credentials file (AWS_SHARED_CREDENTIALS_FILE, AWS_PROFILE). Requests that fail to connect or get 5xx are retried with backoff.",
        "Environment: HV_BACKUP_REPO for --repo (and sync's --from), HV_BACKUP_SYNC_TO for sync's --to, HV_BACKUP_KEY_DIR for --key-dir, HV_BACKUP_SCRATCH_DIR for --scratch-dir, HV_BACKUP_CACHE_DIR for --cache-dir, and HV_BACKUP_IDENTITY naming the identity file.",
        "The image hash is BLAKE3 (what b3sum prints for the raw image), computed as a tree: the workers that seal the chunks hash each one as a subtree, in parallel, and the root is merged from them. After each backup the host keeps, in --cache-dir, each disk's chunk ids and their subtree values; the next backup takes the value of any chunk whose id is unchanged. Equal keyed-BLAKE3 chunk ids mean equal bytes, so the result is the same as hashing everything; deleting the cache only makes the next backup a full read. Backups made before (manifest versions 1 and 2) carry a SHA-256, still checked on restore and verify --deep.",
        "verify checks that every chunk a backup references exists with its recorded size, without the identity. --deep decrypts, decompresses and re-hashes every chunk and each disk image's BLAKE3 (SHA-256 for older backups). A missing or damaged chunk fails the backup with code corrupt, naming the chunk; a wrong identity fails with decrypt_failed. Piped records name the backups by their id (hv-backup ls, hv-backup create); a failed record (ok false, e.g. a create that failed) is printed again untouched.",
        "restore writes each disk to a new file (qcow2 or raw, sparse) under a hidden name and renames it only after every chunk matched its id and the image's BLAKE3 (SHA-256 for older backups) matched the backup's; the record gives the BLAKE3 of what was written (b3sum FILE prints the same for a raw disk); existing files and domains are kept unless --force. --define defines the domain again with a new UUID and new MAC addresses, its disks pointing at the restored files. With -c naming another host (a qemu+ssh:// URI or its alias) the disks are written there, through a writable qemu-nbd there whose socket is forwarded over that ssh, and --define defines the VM there; the same checks and the same partial-then-rename hold.",
        "sync copies backups to a replica without the identity: a new or empty --to gets the source's configuration and sealed chunk-id key byte for byte, then each backup's chunks the replica lacks and its three files, committed last as create commits (a killed sync leaves whole backups or none, and its stored chunks are reused). Another repository (its own init) is refused: its chunk ids come from another key. --verify checks every chunk of each chosen backup at the destination and sends again what is missing there; --prune with --keep-* rules then prunes the replica by its own rules. Records: id, changed, chunks, chunks_sent, bytes_sent, verified.",
        "mount shows a backed-up disk's filesystem read-only in an empty directory without restoring it: the image is served by the mount process over FUSE, each 4 MiB chunk read only when touched (decrypted and checked against its id) and cached (--cache), the partition table read with partx, the chosen partition (the only mountable one, or --partition N) attached to a read-only loop device and mounted ro,nodev,nosuid,noexec (ext3/4 noload, XFS norecovery). --raw shows the images as files instead. It lasts as long as the process: Ctrl-C, SIGTERM, hv-backup umount DIR or umount DIR take it down and leave nothing attached; umount also cleans up after a killed mount. Needs root.",
        "prune keeps backups by --keep-* rules per VM with Proxmox Backup Server's semantics (see hv-snap-prune(1)); protected backups are always kept and take no --keep-* slot. Each backup gets a record with kept (true or false) and keep_reason (the rule that kept it: keep-last ... keep-yearly, protected, or damaged for a backup whose index cannot be read; null when it goes), the shape of each item of hv-snap prune's snapshots.",
    ],
};

/// Each subcommand's arguments become plain values here: the commands
/// below never see clap, so they read, and can be called, without it.
pub fn run(cli: Cli) -> Result<Exit> {
    ffi::keep_big_buffers();
    s3::configure(s3::Settings {
        endpoint: cli.s3.s3_endpoint,
        region: cli.s3.s3_region,
        path_style: !cli.s3.s3_virtual_host,
    });
    match cli.command {
        Command::Init(a) => init(
            &a.repo,
            &a.recipient,
            a.recipients_file.as_deref(),
            a.compression_level,
            &a.key_dir.key_dir,
            a.output.format(),
        ),
        Command::Create(a) => create(a),
        Command::Ls(a) => ls(
            &a.repo.repo,
            &a.vm,
            &a.fields.checked(LS_FIELDS)?,
            a.output.format(),
        ),
        Command::Verify(a) => verify::verify(&verify::Plan {
            workers: a.work.workers(),
            format: a.output.format(),
            repo: a.repo.repo,
            lock_wait: a.repo.lock_wait,
            ids: a.ids,
            vms: a.vm,
            deep: a.deep,
            identity: a.identity.identity,
        }),
        Command::Restore(a) => restore::restore(&restore::Plan {
            // The disks are written on the host -c names (over its ssh when
            // it is another machine), where --define defines the VM.
            define: a.define,
            workers: a.work.workers(),
            format: a.output.format(),
            libvirt: a.connect.target()?,
            repo: a.repo.repo,
            lock_wait: a.repo.lock_wait,
            id: a.id,
            identity: a.identity.identity,
            disk: a.disk,
            output_path: a.output_path,
            dir: a.dir,
            disk_format: a.disk_format,
            name: a.name,
            force: a.force,
            scratch_dir: a.work.scratch_dir,
        }),
        Command::Prune(a) => prune::prune(&prune::Plan {
            format: a.output.format(),
            repo: a.repo.repo,
            lock_wait: a.repo.lock_wait,
            vms: a.vm,
            keep: a.keep.into(),
            dry_run: a.dry_run,
            gc: !a.no_gc,
        }),
        Command::Gc(a) => gc::gc(&gc::Plan {
            format: a.output.format(),
            repo: a.repo.repo,
            lock_wait: a.repo.lock_wait,
            dry_run: a.dry_run,
        }),
        Command::Sync(a) => sync::sync(&sync::Plan {
            prune: {
                let keep: hv_common::retention::Keep = a.keep.into();
                match (a.prune, keep.is_empty()) {
                    (true, true) => {
                        return Err(hv_common::Error::usage(
                            "--prune needs the destination's --keep-* rules, e.g. --keep-daily 7 --keep-weekly 4",
                        ))
                    }
                    (false, false) => {
                        return Err(hv_common::Error::usage(
                            "--keep-* rules apply with --prune: add --prune to delete what they do not keep at the destination",
                        ))
                    }
                    (true, false) => Some(keep),
                    (false, true) => None,
                }
            },
            format: a.output.format(),
            from: a.from,
            to: a.to,
            lock_wait: a.lock_wait,
            ids: a.ids,
            vms: a.vm,
            verify: a.verify,
            dry_run: a.dry_run,
        }),
        Command::Mount(a) => mount::mount(&mount::Plan {
            format: a.output.format(),
            repo: a.repo.repo,
            lock_wait: a.repo.lock_wait,
            id: a.id,
            identity: a.identity.identity,
            disk: a.disk,
            dir: a.dir,
            raw: a.raw,
            partition: a.partition,
            cache_bytes: a.cache,
            scratch_dir: a.work.scratch_dir,
        }),
        Command::Umount(a) => mount::umount(&a.dir, &a.work.scratch_dir, a.output.format()),
        Command::RecoverKey(a) => recover_key(
            &a.repo.repo,
            a.identity.identity.as_deref(),
            &a.key_dir.key_dir,
            a.output.format(),
        ),
    }
}

/// What init and recover-key print: the repository, and where this host
/// keeps its chunk-id key.
#[derive(Debug, Serialize)]
struct RepositoryKey<'a> {
    /// The repository directory.
    repository: String,
    /// The repository's own id (a backup's id is `id`).
    repository_id: &'a str,
    /// The age public keys (age1...) backups are encrypted to; init only.
    #[serde(skip_serializing_if = "Option::is_none")]
    recipients: Option<&'a [String]>,
    /// Where this host keeps the repository's chunk-id key (--key-dir).
    key_file: String,
    /// Always true: a failure is an error on stderr, not a record.
    ok: bool,
}

const REPO_COLUMNS: &[Column] = &[
    col("REPOSITORY", "repository", Show::Plain),
    col("REPOSITORY ID", "repository_id", Show::Plain),
    col("KEY FILE", "key_file", Show::Plain),
];

fn init(
    dir: &Path,
    recipient: &[String],
    recipients_file: Option<&Path>,
    compression_level: i32,
    key_dir: &Path,
    format: Option<Format>,
) -> Result<Exit> {
    let mut recipients =
        crypt::parse_recipients(recipient.iter().map(String::as_str), "--recipient")?;
    if let Some(file) = recipients_file {
        recipients.extend(crypt::read_recipients_file(file)?);
    }
    let repo = Repo::init(dir, &recipients, compression_level, key_dir)?;
    let mut printer = Printer::stdout(format, REPO_COLUMNS);
    printer.emit(to_record(&RepositoryKey {
        repository: repo.root.display().to_string(),
        repository_id: &repo.config.id,
        recipients: Some(repo.config.recipients.as_slice()),
        key_file: repo.host_key_path(key_dir).display().to_string(),
        ok: true,
    }))?;
    printer.finish()?;
    Ok(Exit::Ok)
}

fn recover_key(
    repo: &Path,
    identity: Option<&Path>,
    key_dir: &Path,
    format: Option<Format>,
) -> Result<Exit> {
    let repo = Repo::open(repo)?;
    let identities = crypt::load_identity(identity, "recover-key")?;
    let key = repo.sealed_key(&identities)?;
    repo.save_host_key(key_dir, &key)?;
    let mut printer = Printer::stdout(format, REPO_COLUMNS);
    printer.emit(to_record(&RepositoryKey {
        repository: repo.root.display().to_string(),
        repository_id: &repo.config.id,
        recipients: None,
        key_file: repo.host_key_path(key_dir).display().to_string(),
        ok: true,
    }))?;
    printer.finish()?;
    Ok(Exit::Ok)
}

const CREATE_COLUMNS: &[Column] = &[
    col("NAME", "name", Show::Plain),
    col("OK", "ok", Show::Plain),
    col("ID", "id", Show::Plain),
    col("MODE", "mode", Show::Plain),
    col("SIZE", "size_bytes", Show::Bytes),
    col("READ", "read_bytes", Show::Bytes),
    col("NEW", "new_bytes", Show::Bytes),
    col("STORED", "stored_bytes", Show::Bytes),
    col("MS", "elapsed_ms", Show::Plain),
    col("ERROR", "error", Show::Plain),
];

fn create(a: CreateArgs) -> Result<Exit> {
    // Another host's disks are read over the ssh of its URI: a host named
    // with another transport is refused before anything starts.
    match a.args.connect.scope()? {
        Scope::Default(target) => target
            .uri
            .iter()
            .try_for_each(|u| hv_common::remote::Place::from_uri(u).map(drop))?,
        Scope::Named { hosts, .. } => hosts
            .iter()
            .try_for_each(|h| hv_common::remote::Place::from_uri(&h.uri).map(drop))?,
    }
    let inputs = bulk::inputs(&a.vms, "hv-ls --tag prod | hv-backup create")?;
    let repo = Repo::open(&a.repo.repo)?;
    let key = repo.host_key(&a.key_dir.key_dir)?;
    let _lock = repo.lock(LockKind::Shared, a.repo.lock_wait)?;
    let plan = Arc::new(create::Plan {
        sealer: seal::Sealer {
            repo: Arc::new(repo),
            key,
            workers: a.work.workers(),
            seen: Default::default(),
            progress: Default::default(),
        },
        scratch_root: a.work.scratch_dir.clone(),
        cache_dir: a.cache_dir.clone(),
        lock_wait: a.repo.lock_wait,
        note: a.note.clone(),
        protected: a.protected,
        dry_run: a.args.dry_run,
        full: a.full,
    });
    let timeout = if a.timeout.is_zero() {
        Duration::from_secs(365 * 24 * 3600)
    } else {
        a.timeout
    };
    let action = Action {
        name: "backup",
        columns: CREATE_COLUMNS,
        item_timeout: timeout,
    };
    let progress = Progress::start("scanned", plan.sealer.progress.clone());
    let work_plan = plan.clone();
    let exit = bulk::act(inputs, &a.args, action, move |conn, dom, vm| {
        // Each VM's disks are read where they lie: here, or over ssh (hv_common::remote).
        let place = hv_common::remote::Place::of(conn)?;
        create::backup_vm(&work_plan, &place, dom, vm)
    });
    progress.stop();
    exit
}

const LS_COLUMNS: &[Column] = &[
    col("ID", "id", Show::Plain),
    col("NAME", "name", Show::Plain),
    col("CREATED", "created_at", Show::Plain),
    col("MODE", "mode", Show::Plain),
    col("SIZE", "size_bytes", Show::Bytes),
    col("STORED", "stored_bytes", Show::Bytes),
    col("PROTECTED", "protected", Show::Plain),
];

/// The fields of an `ls` record, for `--fields`.
const LS_FIELDS: &[&str] = &[
    "name",
    "uuid",
    "id",
    "created_at",
    "age_hours",
    "mode",
    "disks",
    "size_bytes",
    "read_bytes",
    "new_bytes",
    "stored_bytes",
    "referenced_bytes",
    "chunks",
    "elapsed_ms",
    "protected",
];

fn ls(repo: &Path, vms: &[String], fields: &[String], format: Option<Format>) -> Result<Exit> {
    let repo = Repo::open(repo)?;
    let listing = repo.list_all()?;
    let mut backups = listing.backups;
    backups.retain(|b| matches_vm(vms, &b.name, &b.uuid));
    backups.reverse();
    let now = time::now();
    let mut printer = Printer::stdout(format, LS_COLUMNS).only(fields);
    for b in &backups {
        printer.emit(to_record(&Listed::new(b, now)))?;
    }
    // A damaged backup cannot say which VM it is of: it is listed whatever
    // --vm asks for, so a filter never hides damage.
    let mut status = hv_common::cli::Status::default();
    for (id, e) in &listing.damaged {
        status.failed(e);
        printer.emit(to_record(&DamagedListed {
            name: None,
            uuid: None,
            id,
            ok: false,
            error: e,
        }))?;
    }
    printer.finish()?;
    Ok(status.exit())
}

/// A backup's time in records: RFC 3339 UTC, from the index's Unix time
/// (what prune judges by), in a field named `*_at` as every hv time is.
pub(crate) fn created_at(b: &format::Index) -> String {
    time::rfc3339(b.time_unix)
}

/// One backup as `ls` lists it (docs/backups.md): the index's summary,
/// in the repository's clear `index.json`.
#[derive(Debug, Serialize)]
struct Listed<'a> {
    /// The backed-up VM's name.
    name: &'a str,
    /// The backed-up VM's UUID.
    uuid: &'a str,
    /// The backup's id (`20261121T020000Z-3fa2b1c9`); hv-backup verify
    /// reads it from piped records.
    id: &'a str,
    /// When the backup was made, RFC 3339 UTC (it sorts as text).
    created_at: String,
    /// Hours since the backup was made, to a tenth.
    age_hours: f64,
    /// `live` (backup job of a running VM) or `offline` (stopped VM read in place).
    mode: &'a str,
    /// The targets of the backed-up disks (`vda`, …).
    disks: Vec<&'a str>,
    /// The disks' virtual size, summed, in bytes.
    size_bytes: u64,
    /// Bytes read from the VM's disks (unallocated and zero regions are
    /// never read).
    read_bytes: u64,
    /// Bytes of plaintext that were not in the repository before (after dedup).
    new_bytes: u64,
    /// Bytes written: whole chunk files, compressed and encrypted.
    stored_bytes: u64,
    /// The body size of every chunk the backup uses, in bytes.
    referenced_bytes: u64,
    /// How many chunks the backup uses.
    chunks: u64,
    /// How long the backup took, in milliseconds.
    elapsed_ms: u64,
    /// Whether the backup is protected: prune keeps it.
    protected: bool,
}

impl<'a> Listed<'a> {
    /// `now`: Unix time the ages are counted to.
    fn new(b: &'a format::Index, now: i64) -> Self {
        Listed {
            name: &b.name,
            uuid: &b.uuid,
            id: &b.id,
            created_at: created_at(b),
            age_hours: ((now - b.time_unix) as f64 / 360.0).round() / 10.0,
            mode: &b.mode,
            disks: b.disks.iter().map(|d| d.target.as_str()).collect(),
            size_bytes: b.size_bytes,
            read_bytes: b.read_bytes,
            new_bytes: b.new_bytes,
            stored_bytes: b.stored_bytes,
            referenced_bytes: b.referenced_bytes,
            chunks: b.chunks,
            elapsed_ms: b.elapsed_ms,
            protected: b.protected,
        }
    }
}

/// A backup `ls` cannot list because its index does not read: a failure,
/// so a damaged backup never looks deleted.
#[derive(Debug, Serialize)]
struct DamagedListed<'a> {
    /// Always null: the damaged index is what would name the VM.
    name: Option<&'a str>,
    /// Always null, as `name`.
    uuid: Option<&'a str>,
    /// The backup's id (its directory under `backups/`).
    id: &'a str,
    /// Always false.
    ok: bool,
    /// Why the index cannot be read.
    error: &'a Error,
}

/// The head of the record verify, restore and prune print for one backup:
/// a result record (docs/records.md), `name` and `uuid` first.
#[derive(Debug, Serialize)]
pub(crate) struct BackupHead<'a> {
    /// The backed-up VM's name; null when the backup's index cannot be read.
    name: Option<&'a str>,
    /// The backed-up VM's UUID; null when the backup's index cannot be read.
    uuid: Option<&'a str>,
    /// `verify`, `restore` or `prune`.
    action: &'a str,
    /// Whether the action succeeded on this backup.
    ok: bool,
    /// The backup's id.
    id: &'a str,
    /// When the backup was made, RFC 3339 UTC; absent when the backup's
    /// index cannot be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
}

impl<'a> BackupHead<'a> {
    /// The head for a backup whose index reads.
    pub(crate) fn of(index: &'a format::Index, action: &'a str, ok: bool) -> Self {
        BackupHead {
            name: Some(index.name.as_str()),
            uuid: Some(index.uuid.as_str()),
            action,
            ok,
            id: &index.id,
            created_at: Some(created_at(index)),
        }
    }

    /// The head for backup `id` whose index cannot be read: the VM is
    /// unknown, and the action failed.
    pub(crate) fn unread(id: &'a str, action: &'a str) -> Self {
        BackupHead {
            name: None,
            uuid: None,
            action,
            ok: false,
            id,
            created_at: None,
        }
    }
}

#[cfg(test)]
impl BackupHead<'static> {
    /// A head with every field present, for the tests that compare a
    /// whole record with its table in docs/backups.md.
    pub(crate) fn example(action: &'static str) -> Self {
        BackupHead {
            name: Some("web1"),
            uuid: Some("u"),
            action,
            ok: false,
            id: "20261121T020000Z-3fa2b1c9",
            created_at: Some("2026-11-21T02:00:00Z".into()),
        }
    }
}

/// True when `filter` is empty or names this VM by name or UUID.
fn matches_vm(filter: &[String], name: &str, uuid: &str) -> bool {
    filter.is_empty()
        || filter
            .iter()
            .any(|f| f == name || f.eq_ignore_ascii_case(uuid))
}

#[cfg(test)]
mod record_tests {
    use super::*;

    #[test]
    fn listed_backups_are_the_documented_ones() {
        let record = Listed {
            name: "web1",
            uuid: "u",
            id: "20261121T020000Z-3fa2b1c9",
            created_at: "2026-11-21T02:00:00Z".into(),
            age_hours: 1.5,
            mode: "live",
            disks: vec!["vda"],
            size_bytes: 1,
            read_bytes: 1,
            new_bytes: 1,
            stored_bytes: 1,
            referenced_bytes: 1,
            chunks: 1,
            elapsed_ms: 1,
            protected: false,
        };
        let record = hv_common::output::to_record(&record);
        hv_testbench::assert_documented(&record, "backups.md", "#### Listed backups");
        let keys: Vec<&str> = record.keys().map(String::as_str).collect();
        assert_eq!(keys, LS_FIELDS, "--fields knows every field");
    }
}
