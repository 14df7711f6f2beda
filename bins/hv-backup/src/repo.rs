//! The repository on disk. Every write goes to `tmp/` first, is synced,
//! then renamed into place, so a process killed at any instant leaves only
//! complete chunks and complete backups under their final names, plus
//! garbage in `tmp/` that the next `gc` removes. A backup is one directory
//! renamed into `backups/` last: it exists completely or not at all.
//!
//! Locking is `flock(2)` on `lock`: backups share it, prune and gc take it
//! alone. The kernel drops a dead process's lock, so a stale lock cannot
//! outlive its holder.
//!
//! On object storage (`s3://`) the same files are objects, which appear
//! whole when written: chunks first, a backup's `index.json` last, so a
//! backup is listed only once everything it names is stored. Locks are
//! objects with a lease ([`crate::lease`]).

use crate::crypt::{self, ChunkKey, Identities, Recipients};
use crate::format::{self, Config, Index};
use crate::s3::{self, S3};
use hv_common::backup_index::{self, REPO_FILE};
use hv_common::{time, Code, Error, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const KEY_FILE: &str = "keys/chunk-id-key.age";
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;

pub struct Repo {
    /// The directory, or the `s3://bucket/prefix` URL: what messages name.
    pub root: PathBuf,
    pub config: Config,
    pub recipients: Recipients,
    /// The object store, for an `s3://` repository.
    s3: Option<Arc<S3>>,
}

/// Held for as long as the operation needs the repository.
/// Held until dropped; none on a repository nothing can write to.
pub struct Lock(#[allow(dead_code)] Held);

enum Held {
    None,
    File(#[allow(dead_code)] File),
    Lease(#[allow(dead_code)] crate::lease::Lease),
}

/// A chunk written but not yet durable under its name (a directory's
/// `tmp/` file), or already stored (an object store's PUT).
pub enum Pending {
    Tmp(PathBuf),
    Stored,
}

impl Pending {
    /// Drops a chunk that will not be committed.
    pub fn discard(&self) {
        if let Pending::Tmp(tmp) = self {
            let _ = fs::remove_file(tmp);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// Backups: many at once.
    Shared,
    /// Prune and gc: alone.
    Exclusive,
}

impl Repo {
    /// Creates a repository at `root` (absent or an empty directory).
    pub fn init(root: &Path, recipients: &Recipients, level: i32, key_dir: &Path) -> Result<Repo> {
        if recipients.is_empty() {
            return Err(Error::usage(
                "no recipients: give --recipient age1… or --recipients-file FILE",
            ));
        }
        let (s3, _making) = new_location(root)?;
        let key: ChunkKey = crypt::random_bytes()?;
        let id = crypt::random_hex::<16>()?;
        let config = Config {
            format: format::REPO_FORMAT.into(),
            version: format::VERSION,
            id,
            created: time::rfc3339(time::now()),
            chunk_size: DEFAULT_CHUNK_SIZE,
            compression: "zstd".into(),
            compression_level: level,
            encryption: "age-x25519".into(),
            recipients: recipients.iter().map(|r| r.to_string()).collect(),
            chunk_id: "blake3-keyed".into(),
        };
        let repo = Repo {
            root: root.to_path_buf(),
            config,
            recipients: recipients.clone(),
            s3,
        };
        let sealed_key = crypt::encrypt(recipients, crypt::hex(&key).as_bytes())?;
        repo.write_file(KEY_FILE, &sealed_key)?;
        repo.save_host_key(key_dir, &key)?;
        let json = serde_json::to_vec_pretty(&repo.config).map_err(json_err)?;
        repo.write_file(REPO_FILE, &json)?;
        Ok(repo)
    }

    /// Makes `root` (absent or an empty directory) a replica of `from`:
    /// its configuration and sealed chunk-id key copied byte for byte, so
    /// the two share an id, recipients and chunk ids, and backups move
    /// between them without being opened. The configuration is written
    /// last: a killed run leaves a directory that is not yet a repository.
    pub fn replicate(root: &Path, from: &Repo) -> Result<Repo> {
        let (s3, _making) = new_location(root)?;
        let read = |name: &str| {
            from.read_file(name)?.ok_or_else(|| {
                Error::new(
                    Code::Corrupt,
                    format!("{}: {name} is missing", from.root.display()),
                )
            })
        };
        let repo = Repo {
            root: root.to_path_buf(),
            config: from.config.clone(),
            recipients: from.recipients.clone(),
            s3,
        };
        repo.write_file(KEY_FILE, &read(KEY_FILE)?)?;
        repo.write_file(REPO_FILE, &read(REPO_FILE)?)?;
        Ok(repo)
    }

    /// Whether `root` holds a repository (its configuration), on either kind of store.
    pub fn exists(root: &Path) -> Result<bool> {
        if s3::is_s3(root) {
            Ok(S3::open(root)?.get(REPO_FILE)?.is_some())
        } else {
            Ok(root.join(REPO_FILE).exists())
        }
    }

    /// A file of the repository by its name (`hv-backup.json`,
    /// `backups/<id>/chunks`); `None` when it is not there.
    pub fn read_file(&self, name: &str) -> Result<Option<Vec<u8>>> {
        if let Some(s3) = &self.s3 {
            return s3.get(name);
        }
        let path = self.root.join(name);
        match fs::read(&path) {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
        }
    }

    /// Writes a file of the repository whole: synced and renamed into
    /// place, or one PUT.
    fn write_file(&self, name: &str, data: &[u8]) -> Result<()> {
        match &self.s3 {
            Some(s3) => s3.put(name, data),
            None => self.write_atomic(&self.root.join(name), data),
        }
    }

    /// Whether backups can move from `self` to `other` as they are: the
    /// same repository id (so the same chunk-id key), recipients and chunk
    /// size. Anything else would need every chunk opened and sealed again.
    pub fn same_keys_as(&self, other: &Repo) -> Result<()> {
        let (a, b) = (&self.config, &other.config);
        let recipients = |c: &Config| c.recipients.iter().cloned().collect::<BTreeSet<_>>();
        let differs = if a.id != b.id {
            Some(format!("its id is {}, not {}", b.id, a.id))
        } else if recipients(a) != recipients(b) {
            Some("its recipients differ".to_owned())
        } else if (a.chunk_size, &a.chunk_id) != (b.chunk_size, &b.chunk_id) {
            Some("its chunk size or chunk ids differ".to_owned())
        } else {
            None
        };
        match differs {
            None => Ok(()),
            Some(why) => Err(Error::usage(format!(
                "{} is not a replica of {} ({why}): backups cannot move between them without \
                 the identity; sync into a new or empty directory instead, which becomes a replica",
                other.root.display(),
                self.root.display()
            ))),
        }
    }

    pub fn open(root: &Path) -> Result<Repo> {
        let path = root.join(REPO_FILE);
        let s3 = if s3::is_s3(root) {
            Some(Arc::new(S3::open(root)?))
        } else {
            None
        };
        let not_one = || {
            Error::usage(format!(
                "{} is not an hv-backup repository (no {REPO_FILE}); create one with \
                 `hv-backup init {} --recipient age1…`",
                root.display(),
                root.display()
            ))
        };
        let text = match &s3 {
            Some(s3) => s3.get(REPO_FILE)?.ok_or_else(not_one)?,
            None => fs::read(&path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    not_one()
                } else {
                    Error::io(format!("cannot read {}", path.display()), e)
                }
            })?,
        };
        let config: Config = serde_json::from_slice(&text).map_err(|e| {
            Error::new(
                Code::Corrupt,
                format!("{} is not valid: {e}", path.display()),
            )
        })?;
        if config.format != format::REPO_FORMAT || config.version != format::VERSION {
            return Err(Error::new(
                Code::Unsupported,
                format!(
                    "{} is format {} version {}; this hv-backup reads {} version {}",
                    path.display(),
                    config.format,
                    config.version,
                    format::REPO_FORMAT,
                    format::VERSION
                ),
            ));
        }
        let recipients =
            crypt::parse_recipients(config.recipients.iter().map(String::as_str), REPO_FILE)?;
        Ok(Repo {
            root: root.to_path_buf(),
            config,
            recipients,
            s3,
        })
    }

    /// Takes the repository lock, waiting up to `wait` for other runs.
    /// A shared lock (verify, restore) also works on a repository this
    /// user may only read, or on a read-only copy (a mounted snapshot).
    pub fn lock(&self, kind: LockKind, wait: Duration) -> Result<Lock> {
        if let Some(s3) = &self.s3 {
            return crate::lease::Lease::take(s3.clone(), kind, wait).map(|l| Lock(Held::Lease(l)));
        }
        let path = self.root.join("lock");
        let opened = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path);
        let file = match opened {
            Ok(file) => file,
            Err(e) if kind == LockKind::Shared && cannot_write(&e) => match File::open(&path) {
                Ok(file) => file,
                // A read-only copy without a lock file: nothing can be writing.
                Err(_) if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem => {
                    return Ok(Lock(Held::None))
                }
                Err(e) => return Err(Error::io(format!("cannot open {}", path.display()), e)),
            },
            Err(e) => return Err(Error::io(format!("cannot open {}", path.display()), e)),
        };
        let start = Instant::now();
        let mut told = false;
        loop {
            let got = match kind {
                LockKind::Shared => file.try_lock_shared(),
                LockKind::Exclusive => file.try_lock(),
            };
            match got {
                Ok(()) => return Ok(Lock(Held::File(file))),
                Err(fs::TryLockError::WouldBlock) if start.elapsed() < wait => {
                    if !told {
                        hv_common::cli::warn(format!(
                            "waiting for the lock on {} (another backup, prune or gc is running)",
                            self.root.display()
                        ));
                        told = true;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(Error::new(
                        Code::Locked,
                        format!(
                            "repository {} is locked by another hv-backup run (a backup holds it \
                             shared, prune and gc alone); try again when it ends, or raise \
                             --lock-wait",
                            self.root.display()
                        ),
                    ))
                }
                Err(fs::TryLockError::Error(e)) => {
                    return Err(Error::io(format!("cannot lock {}", path.display()), e))
                }
            }
        }
    }

    /// Where this host keeps the chunk-id key of this repository.
    pub fn host_key_path(&self, key_dir: &Path) -> PathBuf {
        key_dir.join(format!("{}.key", self.config.id))
    }

    pub fn save_host_key(&self, key_dir: &Path, key: &ChunkKey) -> Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(key_dir)
            .map_err(|e| Error::io(format!("cannot create {}", key_dir.display()), e))?;
        check_key_dir(key_dir)?;
        let path = self.host_key_path(key_dir);
        let mut text = crypt::hex(key);
        text.push('\n');
        // Replaced whole: a killed run leaves the old key or the new one.
        hv_common::fsutil::write_atomic(&path, text.as_bytes(), 0o600)
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
    }

    pub fn host_key(&self, key_dir: &Path) -> Result<ChunkKey> {
        check_key_dir(key_dir)?;
        let path = self.host_key_path(key_dir);
        let text = fs::read_to_string(&path).map_err(|e| {
            Error::new(
                if e.kind() == std::io::ErrorKind::NotFound {
                    Code::NotFound
                } else {
                    Code::Io
                },
                format!(
                    "the chunk-id key of repository {} is not on this host ({}: {e}); recover it \
                     with `hv-backup recover-key --repo {} --identity FILE`",
                    self.root.display(),
                    path.display(),
                    self.root.display()
                ),
            )
        })?;
        crypt::unhex32(&text).ok_or_else(|| {
            Error::new(
                Code::Corrupt,
                format!(
                    "{} does not hold a 32-byte hex key; recover it with `hv-backup recover-key --repo {} --identity FILE`",
                    path.display(),
                    self.root.display()
                ),
            )
        })
    }

    /// The chunk-id key, opened from the repository with the identity.
    pub fn sealed_key(&self, identities: &Identities) -> Result<ChunkKey> {
        let path = self.root.join(KEY_FILE);
        let sealed = self.read_file(KEY_FILE)?.ok_or_else(|| {
            Error::new(
                Code::Corrupt,
                format!(
                    "{} is missing; recover-key cannot work without it",
                    path.display()
                ),
            )
        })?;
        let text = crypt::decrypt(identities, &sealed, &path.display().to_string())?;
        crypt::unhex32(&String::from_utf8_lossy(&text)).ok_or_else(|| {
            Error::new(
                Code::Corrupt,
                format!("{} does not hold a key", path.display()),
            )
        })
    }

    pub fn chunk_path(&self, id: &str) -> PathBuf {
        self.root.join(chunk_key(id))
    }

    /// What the repository holds under chunk `id`: nothing, a file that is
    /// no age file, or a sealed chunk with its body and file lengths.
    pub fn chunk_file(&self, id: &str) -> Sealed {
        self.sealed(&chunk_key(id))
    }

    /// What backup `id`'s `manifest.age` is.
    pub fn manifest_file(&self, id: &str) -> Sealed {
        self.sealed(&format!("backups/{id}/manifest.age"))
    }

    /// [`sealed_file`] for the file `name` of this repository.
    pub fn sealed(&self, name: &str) -> Sealed {
        match &self.s3 {
            Some(s3) => match s3.get_head(name, MAX_HEADER) {
                Ok(Some((head, whole))) => sealed_head(&head, whole),
                Ok(None) => Sealed::Missing,
                Err(_) => Sealed::Unreadable,
            },
            None => sealed_file(&self.root.join(name)),
        }
    }

    /// Writes a sealed chunk without syncing it (to `tmp/`), or stores it
    /// (an object store); [`Repo::commit_chunk`] makes it durable and
    /// gives it its name.
    pub fn write_chunk_unsynced(&self, id: &str, sealed: &[u8]) -> Result<Pending> {
        if let Some(s3) = &self.s3 {
            return s3.put(&chunk_key(id), sealed).map(|()| Pending::Stored);
        }
        let tmp = self.tmp_path("chunk")?;
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(sealed));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp); // a full disk must not keep the partial file
            return Err(Error::io(format!("cannot write {}", tmp.display()), e));
        }
        Ok(Pending::Tmp(tmp))
    }

    /// Syncs a chunk written by [`Repo::write_chunk_unsynced`] and renames it
    /// to its id; on failure the temporary file is removed.
    pub fn commit_chunk(&self, pending: &Pending, id: &str) -> Result<()> {
        let Pending::Tmp(tmp) = pending else {
            return Ok(());
        };
        let dir = self.root.join("chunks").join(&id[..2]);
        if !dir.is_dir() {
            mkdir(&dir)?;
        }
        let dest = dir.join(id);
        let done = File::open(tmp)
            .and_then(|f| f.sync_data())
            .and_then(|()| fs::rename(tmp, &dest));
        done.map_err(|e| {
            let _ = fs::remove_file(tmp);
            Error::io(format!("cannot store chunk {}", dest.display()), e)
        })
    }

    /// Stores a sealed chunk under `id`, durably, replacing a damaged one.
    pub fn store_chunk(&self, id: &str, sealed: &[u8]) -> Result<()> {
        let pending = self.write_chunk_unsynced(id, sealed)?;
        self.commit_chunk(&pending, id)
    }

    pub fn read_chunk(&self, id: &str) -> Result<Vec<u8>> {
        let path = self.chunk_path(id);
        if let Some(s3) = &self.s3 {
            return s3.get(&chunk_key(id))?.ok_or_else(|| {
                Error::new(
                    Code::Corrupt,
                    format!("chunk {id} is missing ({})", path.display()),
                )
            });
        }
        fs::read(&path).map_err(|e| {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                Code::Corrupt
            } else {
                Code::Io
            };
            Error::new(
                code,
                format!(
                    "chunk {id} is missing or unreadable ({}: {e})",
                    path.display()
                ),
            )
        })
    }

    /// Syncs the chunk directories `ids` landed in, so their renames survive a crash.
    pub fn sync_chunk_dirs<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Result<()> {
        if self.s3.is_some() {
            return Ok(()); // a stored object is durable
        }
        let prefixes: BTreeSet<&str> = ids.into_iter().map(|id| &id[..2]).collect();
        for p in prefixes {
            sync_dir(&self.root.join("chunks").join(p))?;
        }
        sync_dir(&self.root.join("chunks"))
    }

    /// A fresh name under `tmp/`.
    pub fn tmp_path(&self, what: &str) -> Result<PathBuf> {
        let salt = crypt::random_hex::<8>()?;
        Ok(self
            .root
            .join("tmp")
            .join(format!("{what}-{}-{salt}", std::process::id())))
    }

    fn write_atomic(&self, dest: &Path, data: &[u8]) -> Result<()> {
        let tmp = self.tmp_path("file")?;
        write_synced(&tmp, data, 0o600)?;
        fs::rename(&tmp, dest)
            .map_err(|e| Error::io(format!("cannot write {}", dest.display()), e))?;
        sync_dir(dest.parent().unwrap_or(&self.root))
    }

    pub fn backup_dir(&self, id: &str) -> PathBuf {
        self.root.join("backups").join(id)
    }

    /// Whether backup `id` exists (complete: its index is there).
    pub fn has_backup(&self, id: &str) -> Result<bool> {
        match &self.s3 {
            Some(s3) => Ok(s3
                .get_head(&format!("backups/{id}/index.json"), 1)?
                .is_some()),
            None => Ok(self.backup_dir(id).is_dir()),
        }
    }

    /// Every backup: those whose index reads, oldest first, and those
    /// whose index does not.
    pub fn list_all(&self) -> Result<backup_index::Listing> {
        if self.s3.is_none() {
            return backup_index::list_all(&self.root);
        }
        let mut listing = backup_index::Listing {
            backups: Vec::new(),
            damaged: Vec::new(),
        };
        for id in self.ids()? {
            match self.index(&id) {
                Ok(index) => listing.backups.push(index),
                Err(e) => listing.damaged.push((id, e)),
            }
        }
        listing
            .backups
            .sort_by(|a, b| (a.time_unix_ms, &a.id).cmp(&(b.time_unix_ms, &b.id)));
        Ok(listing)
    }

    /// The ids of every backup, whether its index reads or not.
    pub fn ids(&self) -> Result<Vec<String>> {
        let Some(s3) = &self.s3 else {
            return backup_index::ids(&self.root);
        };
        let mut ids: Vec<String> = s3
            .list("backups/")?
            .into_iter()
            .filter_map(|o| {
                let id = o
                    .key
                    .strip_prefix("backups/")?
                    .strip_suffix("/index.json")?;
                backup_index::is_backup_id(id).then(|| id.to_owned())
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Makes a backup exist: its three files are written and synced in a
    /// temporary directory that is then renamed into `backups/` at once.
    pub fn commit_backup(
        &self,
        index: &Index,
        refs: &BTreeMap<String, u64>,
        sealed_manifest: &[u8],
    ) -> Result<()> {
        let index_json = serde_json::to_vec_pretty(index).map_err(json_err)?;
        self.commit_backup_files(
            &index.id,
            &BackupFiles {
                index: &index_json,
                chunks: format::format_refs(refs).as_bytes(),
                manifest: sealed_manifest,
            },
        )
    }

    /// A backup's three files as they are stored.
    pub fn backup_files(&self, id: &str) -> Result<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        Ok((
            self.backup_file(id, "index.json", "index.json")?,
            self.backup_file(id, "chunks", "chunk list")?,
            self.backup_file(id, "manifest.age", "manifest")?,
        ))
    }

    /// `backups/<id>/<name>`; one that is missing or unreadable is damage
    /// to the backup (`corrupt`), named as `what`.
    fn backup_file(&self, id: &str, name: &str, what: &str) -> Result<Vec<u8>> {
        match self.read_file(&format!("backups/{id}/{name}")) {
            Ok(Some(data)) => Ok(data),
            Ok(None) => Err("it is missing".to_owned()),
            Err(e) => Err(e.message),
        }
        .map_err(|e| {
            Error::new(
                Code::Corrupt,
                format!("backup {id}: cannot read its {what}: {e}"),
            )
        })
    }

    /// Makes backup `id` exist with these files, at once (see [`Repo::commit_backup`]).
    pub fn commit_backup_files(&self, id: &str, files: &BackupFiles) -> Result<()> {
        if let Some(s3) = &self.s3 {
            // The index last: listing finds a backup by it.
            let at = |name: &str| format!("backups/{id}/{name}");
            s3.put(&at("manifest.age"), files.manifest)?;
            s3.put(&at("chunks"), files.chunks)?;
            return s3.put(&at("index.json"), files.index);
        }
        let tmp = self.tmp_path("backup")?;
        mkdir(&tmp)?;
        write_synced(&tmp.join("index.json"), files.index, 0o600)?;
        write_synced(&tmp.join("chunks"), files.chunks, 0o600)?;
        write_synced(&tmp.join("manifest.age"), files.manifest, 0o600)?;
        sync_dir(&tmp)?;
        let dest = self.backup_dir(id);
        fs::rename(&tmp, &dest)
            .map_err(|e| Error::io(format!("cannot commit backup {}", dest.display()), e))?;
        sync_dir(&self.root.join("backups"))
    }

    pub fn index(&self, id: &str) -> Result<Index> {
        let Some(s3) = &self.s3 else {
            return backup_index::read(&self.root, id);
        };
        if !backup_index::is_backup_id(id) {
            return backup_index::read(&self.root, id); // says why
        }
        match s3.get(&format!("backups/{id}/index.json"))? {
            Some(text) => backup_index::parse(id, &text),
            None => Err(Error::new(
                Code::NotFound,
                format!("backup {id} not found in {}", self.root.display()),
            )),
        }
    }

    pub fn refs(&self, id: &str) -> Result<Vec<(String, u64)>> {
        let text =
            String::from_utf8(self.backup_file(id, "chunks", "chunk list")?).map_err(|e| {
                Error::new(
                    Code::Corrupt,
                    format!("backup {id}: cannot read its chunk list: {e}"),
                )
            })?;
        let refs = format::parse_refs(&text).ok_or_else(|| {
            Error::new(
                Code::Corrupt,
                format!("backup {id}: its chunk list is malformed"),
            )
        })?;
        // A list cut at a line boundary still parses; gc would then delete
        // chunks the backup needs. Its index counts them.
        if let Ok(index) = self.index(id) {
            if index.chunks != refs.len() as u64 {
                return Err(Error::new(
                    Code::Corrupt,
                    format!(
                        "backup {id}: its chunk list names {} chunks, its index.json {}; the list is damaged: restore the repository from a copy, or delete this backup",
                        refs.len(),
                        index.chunks
                    ),
                ));
            }
        }
        Ok(refs)
    }

    pub fn sealed_manifest(&self, id: &str) -> Result<Vec<u8>> {
        self.backup_file(id, "manifest.age", "manifest")
    }

    /// Removes a backup: it disappears from `backups/` in one rename.
    pub fn remove_backup(&self, id: &str) -> Result<()> {
        if let Some(s3) = &self.s3 {
            // The index first: from then on the backup is not listed, and
            // gc removes what is left of it.
            s3.delete(&format!("backups/{id}/index.json"))?;
            s3.delete(&format!("backups/{id}/chunks"))?;
            return s3.delete(&format!("backups/{id}/manifest.age"));
        }
        let tmp = self.tmp_path("deleted")?;
        fs::rename(self.backup_dir(id), &tmp)
            .map_err(|e| Error::io(format!("cannot remove backup {id}"), e))?;
        sync_dir(&self.root.join("backups"))?;
        fs::remove_dir_all(&tmp)
            .map_err(|e| Error::io(format!("cannot delete {}", tmp.display()), e))
    }

    /// Deletes chunks no backup references and everything in `tmp/`. Needs
    /// the exclusive lock. Returns (chunks removed, bytes freed).
    ///
    /// The live set comes from every backup directory's chunk list, not from
    /// the listable backups: a backup whose index.json is damaged is skipped
    /// by `ls`, but its chunks must survive until someone repairs or deletes it.
    /// A chunk list that cannot be read stops gc before anything is deleted.
    pub fn gc(&self, dry_run: bool) -> Result<(u64, u64)> {
        let mut live = BTreeSet::new();
        let ids = self.ids()?;
        for id in &ids {
            for (chunk, _) in self.refs(id)? {
                live.insert(chunk);
            }
        }
        let (mut count, mut bytes) = (0, 0);
        if let Some(s3) = &self.s3 {
            // gc holds the repository alone: no backup is being written,
            // so a chunk no index lists, and a backup's files without its
            // index, are leftovers of runs that died.
            let ids: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
            for object in s3.list("chunks/")? {
                let name = object.key.rsplit('/').next().unwrap_or("");
                if live.contains(name) {
                    continue;
                }
                count += 1;
                bytes += object.size;
                if !dry_run {
                    s3.delete(&object.key)?;
                }
            }
            for object in s3.list("backups/")? {
                let id = object.key.trim_start_matches("backups/").split('/').next();
                if id.is_some_and(|id| !ids.contains(id)) && !dry_run {
                    s3.delete(&object.key)?;
                }
            }
            return Ok((count, bytes));
        }
        let chunks = self.root.join("chunks");
        for sub in read_dir(&chunks)? {
            for entry in read_dir(&sub)? {
                let name = entry.file_name().map(|n| n.to_string_lossy().into_owned());
                let Some(name) = name else { continue };
                if live.contains(&name) {
                    continue;
                }
                count += 1;
                bytes += fs::metadata(&entry).map(|m| m.len()).unwrap_or(0);
                if !dry_run {
                    fs::remove_file(&entry)
                        .map_err(|e| Error::io(format!("cannot delete {}", entry.display()), e))?;
                }
            }
        }
        if !dry_run {
            for entry in read_dir(&self.root.join("tmp"))? {
                let gone = if entry.is_dir() {
                    fs::remove_dir_all(&entry)
                } else {
                    fs::remove_file(&entry)
                };
                gone.map_err(|e| Error::io(format!("cannot delete {}", entry.display()), e))?;
            }
        }
        Ok((count, bytes))
    }
}

/// A chunk's name in the repository: `chunks/<first two hex digits>/<id>`.
fn chunk_key(id: &str) -> String {
    format!("chunks/{}/{id}", &id[..2])
}

/// Checks that `root` may become a new repository (absent or empty) and
/// prepares it: the directory layout, or the object store. A directory
/// comes back held (`Making`) until its configuration is written.
fn new_location(root: &Path) -> Result<(Option<Arc<S3>>, Option<Making>)> {
    if s3::is_s3(root) {
        let s3 = S3::open(root)?;
        if s3.get(REPO_FILE)?.is_some() {
            return Err(Error::usage(format!(
                "{} is already an hv-backup repository",
                root.display()
            )));
        }
        // A killed init or sync stored at most the sealed key before
        // the configuration, which comes last.
        if s3.list("")?.iter().any(|o| o.key != KEY_FILE) {
            return Err(Error::usage(format!(
                "{} holds objects already; give a new or empty prefix",
                root.display()
            )));
        }
        return Ok((Some(Arc::new(s3)), None));
    }
    let making = make_layout(root)?;
    Ok((None, Some(making)))
}

/// A new repository's directory, held (an exclusive `flock` on it) while
/// it is made: a second `init` or `sync` into the same directory waits
/// for nothing and mixes nothing; it is refused.
pub struct Making(#[allow(dead_code)] File);

/// A backup's three files, as [`Repo::commit_backup_files`] writes them.
pub struct BackupFiles<'a> {
    pub index: &'a [u8],
    pub chunks: &'a [u8],
    pub manifest: &'a [u8],
}

/// The directories of a new repository, in `root` (absent, empty, or
/// left by a killed `init` or first `sync`), held while it is made.
fn make_layout(root: &Path) -> Result<Making> {
    if root.exists() && !root.is_dir() {
        return Err(Error::usage(format!(
            "{} is not a directory; give a new or empty directory",
            root.display()
        )));
    }
    let not_empty = || {
        Error::usage(format!(
            "{} exists and is not empty; give a new or empty directory",
            root.display()
        ))
    };
    if !unfinished_or_empty(root) {
        return Err(not_empty());
    }
    mkdir(root)?;
    let dir =
        File::open(root).map_err(|e| Error::io(format!("cannot open {}", root.display()), e))?;
    if dir.try_lock().is_err() {
        return Err(Error::new(
            Code::Locked,
            format!(
                "another hv-backup is making a repository in {} right now; let it finish",
                root.display()
            ),
        ));
    }
    // Looked at again, held: the other run may have finished meanwhile.
    if root.join(REPO_FILE).exists() {
        return Err(Error::usage(format!(
            "{} is already an hv-backup repository",
            root.display()
        )));
    }
    if !unfinished_or_empty(root) {
        return Err(not_empty());
    }
    for dir in ["chunks", "backups", "tmp", "keys"] {
        mkdir(&root.join(dir))?;
    }
    for entry in read_dir(&root.join("tmp"))? {
        fs::remove_file(&entry)
            .map_err(|e| Error::io(format!("cannot delete {}", entry.display()), e))?;
    }
    Ok(Making(dir))
}

/// Whether `root` holds nothing, or only what a repository's making
/// writes before its configuration (which comes last): the empty layout,
/// the sealed chunk-id key and files in `tmp/`. A run killed there must
/// not leave a directory the next run refuses; anything else in it is
/// someone's data and is never taken over.
fn unfinished_or_empty(root: &Path) -> bool {
    let names = |dir: &Path| -> Option<Vec<(String, fs::FileType)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).ok()? {
            let entry = entry.ok()?;
            out.push((
                entry.file_name().to_str()?.to_owned(),
                entry.file_type().ok()?,
            ));
        }
        Some(out)
    };
    let Some(top) = names(root) else {
        return !root.exists();
    };
    let key_name = KEY_FILE.trim_start_matches("keys/");
    // Files come only after the whole layout is made.
    let laid_out = ["chunks", "backups", "tmp", "keys"]
        .iter()
        .all(|d| top.iter().any(|(n, k)| n == d && k.is_dir()));
    top.iter().all(|(name, kind)| {
        let Some(inside) = kind.is_dir().then(|| names(&root.join(name))).flatten() else {
            return false;
        };
        match name.as_str() {
            "chunks" | "backups" => inside.is_empty(),
            "tmp" => inside.iter().all(|(n, k)| k.is_file() && is_tmp_name(n)) && laid_out,
            "keys" => inside.iter().all(|(n, k)| n == key_name && k.is_file()) && laid_out,
            _ => false,
        }
    })
}

/// A name [`Repo::tmp_path`] gives: `<what>-<pid>-<16 hex digits>`.
fn is_tmp_name(name: &str) -> bool {
    let mut parts = name.rsplitn(3, '-');
    let (Some(salt), Some(pid), Some(what)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    salt.len() == 16
        && salt.bytes().all(|b| b.is_ascii_hexdigit())
        && !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && !what.is_empty()
        && what.bytes().all(|b| b.is_ascii_lowercase())
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries =
        fs::read_dir(dir).map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))?;
    Ok(entries.flatten().map(|e| e.path()).collect())
}

/// The host's chunk-id keys are secrets: a directory other users may
/// write lets them put a key of their choosing in place (and then learn
/// which chunks a backup holds); one they may read gives the keys away.
/// The first is refused, the second named, with the fix either way.
fn check_key_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = fs::metadata(dir) else {
        return Ok(()); // not made yet, or not readable: the key's own read says why
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(Error::usage(format!(
            "key directory {} is writable by other users (mode {mode:04o}): one of them could \
             replace this host's chunk-id key; run `chmod 700 {}`",
            dir.display(),
            dir.display()
        )));
    }
    if mode & 0o044 != 0 {
        hv_common::cli::warn(format!(
            "key directory {} is readable by other users (mode {mode:04o}); run `chmod 700 {}`",
            dir.display(),
            dir.display()
        ));
    }
    Ok(())
}

/// Makes `dir` (mode 0700) unless it is there.
pub(crate) fn mkdir(dir: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(Error::io(format!("cannot create {}", dir.display()), e))
        }
        _ => Ok(()),
    }
}

/// Writes a new file and syncs it before returning.
pub fn write_synced(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let err = |e| Error::io(format!("cannot write {}", path.display()), e);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("cannot sync {}", dir.display()), e))
}

fn json_err(e: serde_json::Error) -> Error {
    Error::new(Code::Io, format!("cannot encode JSON: {e}"))
}

fn cannot_write(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
    )
}

/// A sealed file as found on disk, told apart by its age header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealed {
    Missing,
    /// Present, but with no whole age header: cut short or overwritten.
    Damaged,
    /// The object store did not answer (after its retries).
    Unreadable,
    /// `body`: the bytes after the header, fixed by the data (see
    /// [`crypt::header_len`]); `whole`: the file's length.
    Intact {
        body: u64,
        whole: u64,
    },
}

/// Headers are a few hundred bytes: the intro, one stanza per recipient,
/// a random one, the MAC. Many recipients fit in 64 KiB.
const MAX_HEADER: u64 = 64 << 10;

impl Sealed {
    /// Whether this is a whole sealed file of the recorded `size`: a body
    /// size, or in a version 1 chunk list (`whole_sizes`) a file size.
    pub fn holds(self, size: u64, whole_sizes: bool) -> bool {
        match self {
            Sealed::Intact { body, whole } => body == size || (whole_sizes && whole == size),
            _ => false,
        }
    }
}

/// Reads just enough of `path` to find where its age header ends.
pub fn sealed_file(path: &Path) -> Sealed {
    let Ok(file) = File::open(path) else {
        return Sealed::Missing;
    };
    let whole = match file.metadata() {
        Ok(m) if m.is_file() => m.len(),
        _ => return Sealed::Damaged,
    };
    let mut head = Vec::new();
    if (&file)
        .take(MAX_HEADER.min(whole))
        .read_to_end(&mut head)
        .is_err()
    {
        return Sealed::Damaged;
    }
    sealed_head(&head, whole)
}

/// What a sealed file is, from its first bytes and its whole length.
fn sealed_head(head: &[u8], whole: u64) -> Sealed {
    match crypt::header_len(head) {
        Some(h) if whole >= h as u64 && whole - h as u64 >= crypt::MIN_BODY => Sealed::Intact {
            body: whole - h as u64,
            whole,
        },
        _ => Sealed::Damaged,
    }
}
