//! The commands that read backups back: verify (without the identity it
//! checks what can be checked without it; with it, every byte) and restore.
//! Both hold the repository lock shared, so gc cannot delete a chunk they
//! are about to read.

use crate::format::{self, Index, Manifest};
use crate::load::{self, Opener};
use crate::repo::{sealed_file, LockKind, Repo, Sealed};
use crate::restore::{self, DiskFormat, Restored};
use crate::{crypt, matches_vm, obj, RestoreArgs, VerifyArgs};
use hv_common::cli::{self, Status};
use hv_common::connect::Access;
use hv_common::output::{col, Column, Printer, Show};
use hv_common::{fsutil, Code, Error, Exit, Result};
use serde_json::{json, Map, Value};
use std::io::BufRead;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

const VERIFY_COLUMNS: &[Column] = &[
    col("ID", "id", Show::Plain),
    col("NAME", "name", Show::Plain),
    col("OK", "ok", Show::Plain),
    col("DEEP", "deep", Show::Plain),
    col("CHUNKS", "chunks", Show::Plain),
    col("ERROR", "error", Show::Plain),
];

pub fn verify(a: VerifyArgs) -> Result<Exit> {
    let repo = Repo::open(&a.repo.repo)?;
    let mut status = Status::default();
    let targets = pick_ids(&repo, &a.ids, &a.vm, &mut status)?;
    let deep = if a.deep {
        let identities = a.identity.load("verify --deep")?;
        let key = repo.sealed_key(&identities)?;
        Some((identities, key))
    } else {
        None
    };
    let _lock = repo.lock(LockKind::Shared, a.repo.lock_wait)?;
    let mut printer = Printer::stdout(a.output.format(), VERIFY_COLUMNS);
    for target in targets {
        let id = match target {
            Target::Id(id) => id,
            Target::Failed(record) => {
                printer.emit(record)?;
                continue;
            }
        };
        let start = Instant::now();
        let index = match repo.index(&id) {
            Ok(i) => i,
            Err(e) => {
                status.failed(&e);
                printer.emit(failure(&id, None, "verify", &e))?;
                continue;
            }
        };
        let checked = check_chunks(&repo, &index).and_then(|chunks| match &deep {
            None => Ok(chunks),
            Some((identities, key)) => {
                let op = Opener {
                    repo: &repo,
                    identities,
                    key: *key,
                    workers: a.work.workers(),
                    backup: &id,
                };
                check_every_byte(&op).map(|()| chunks)
            }
        });
        let record = match checked {
            Ok(chunks) => {
                let mut r = head(&index, "verify", true);
                r.insert("deep".into(), a.deep.into());
                r.insert("chunks".into(), chunks.into());
                r.insert(
                    "elapsed_ms".into(),
                    (start.elapsed().as_millis() as u64).into(),
                );
                r
            }
            Err(e) => {
                status.failed(&e);
                let mut r = failure(&id, Some(&index), "verify", &e);
                r.insert("deep".into(), a.deep.into());
                r
            }
        };
        printer.emit(record)?;
    }
    printer.finish()?;
    Ok(status.exit())
}

/// Fast verify: the manifest and every referenced chunk exist, each an
/// age file whose body has the recorded size. Returns the number of chunks.
fn check_chunks(repo: &Repo, index: &Index) -> Result<u64> {
    let id = &index.id;
    match sealed_file(&repo.backup_dir(id).join("manifest.age")) {
        Sealed::Intact { body, .. } if index.manifest_bytes.is_none_or(|m| m == body) => {}
        found => {
            let what = match found {
                Sealed::Missing => "is missing",
                Sealed::Damaged => "has no whole age header",
                Sealed::Intact { .. } => "has the wrong size",
            };
            return Err(Error::new(
                Code::Corrupt,
                format!(
                    "backup {id}: manifest.age {what}; this backup cannot be restored: restore \
                     backups/{id}/ from a copy of the repository, or make a new backup"
                ),
            ));
        }
    }
    let refs = repo.refs(id)?;
    // Version 1 chunk lists hold whole file sizes, which differ each time a
    // chunk is sealed; version 2 lists hold body sizes, which do not.
    let whole_sizes = index.version < 2;
    let (mut missing, mut wrong) = (Vec::new(), Vec::new());
    for (chunk, size) in &refs {
        match repo.chunk_file(chunk) {
            Sealed::Missing => missing.push(chunk.as_str()),
            Sealed::Intact { body, whole } if body == *size || (whole_sizes && whole == *size) => {}
            Sealed::Intact { .. } | Sealed::Damaged => wrong.push(chunk.as_str()),
        }
    }
    if missing.is_empty() && wrong.is_empty() {
        return Ok(refs.len() as u64);
    }
    let mut parts = Vec::new();
    if let Some(first) = missing.first() {
        parts.push(format!("{} chunks missing (first: {first})", missing.len()));
    }
    if let Some(first) = wrong.first() {
        parts.push(format!(
            "{} chunks damaged or of the wrong size (first: {first})",
            wrong.len()
        ));
    }
    Err(Error::new(
        Code::Corrupt,
        format!(
            "backup {id}: {}; this backup cannot be restored in full, make a new one",
            parts.join(", ")
        ),
    ))
}

fn check_every_byte(op: &Opener) -> Result<()> {
    let manifest = open_manifest(op.repo, op.backup, op.identities)?;
    for image in manifest.disks.iter().chain(manifest.nvram.iter()) {
        let _ = load::read_image(op, image, manifest.chunk_size, |_, _| Ok(()))?;
    }
    Ok(())
}

pub fn open_manifest(repo: &Repo, id: &str, identities: &crypt::Identities) -> Result<Manifest> {
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

/// The backups to work on: named ids, ids from piped records, or all.
/// What verify is given: a backup to check, or an upstream failure
/// (`"ok": false`, e.g. a failed `create`), printed again untouched.
#[derive(Debug, PartialEq)]
enum Target {
    Id(String),
    Failed(Map<String, Value>),
}

fn pick_ids(
    repo: &Repo,
    ids: &[String],
    vms: &[String],
    status: &mut Status,
) -> Result<Vec<Target>> {
    if !ids.is_empty() {
        return Ok(ids.iter().cloned().map(Target::Id).collect());
    }
    if cli::stdin_has_targets(ids) {
        return Ok(ids_from(std::io::stdin().lock(), status));
    }
    // A damaged backup is checked whatever VM it is of (its index, which
    // would say, is what is damaged), and fails.
    let listing = hv_common::backup_index::list_all(&repo.root)?;
    Ok(listing
        .backups
        .into_iter()
        .rev()
        .filter(|b| matches_vm(vms, &b.name, &b.uuid))
        .map(|b| Target::Id(b.id))
        .chain(listing.damaged.into_iter().map(|(id, _)| Target::Id(id)))
        .collect())
}

/// Backups from lines: records with an `id` field (as `hv-backup ls` and
/// `create` print), or bare ids; failed records pass through. Other lines
/// are reported and skipped.
fn ids_from(reader: impl BufRead, status: &mut Status) -> Vec<Target> {
    let mut out = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                cli::warn(format!(
                    "stdin line {}: cannot read it ({e}); skipped",
                    n + 1
                ));
                status.malformed();
                continue;
            }
        };
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let target = if text.starts_with('{') {
            match serde_json::from_str::<Map<String, Value>>(text) {
                Ok(r) if r.get("ok") == Some(&Value::Bool(false)) => Some(Target::Failed(r)),
                Ok(r) => r
                    .get("id")
                    .and_then(Value::as_str)
                    .map(|id| Target::Id(id.to_owned())),
                Err(_) => None,
            }
        } else {
            Some(Target::Id(text.to_owned()))
        };
        match target {
            Some(target) => out.push(target),
            None => {
                cli::warn(format!(
                    "stdin line {}: not a backup record (no \"id\" field); skipped",
                    n + 1
                ));
                status.malformed();
            }
        }
    }
    out
}

fn head(index: &Index, action: &str, ok: bool) -> Map<String, Value> {
    obj(json!({
        "name": index.name,
        "uuid": index.uuid,
        "action": action,
        "ok": ok,
        "id": index.id,
        "created_at": crate::created_at(index),
    }))
}

fn failure(id: &str, index: Option<&Index>, action: &str, e: &Error) -> Map<String, Value> {
    let mut r = match index {
        Some(i) => head(i, action, false),
        None => obj(json!({ "name": null, "uuid": null, "action": action, "ok": false, "id": id })),
    };
    r.insert("error".into(), e.to_json());
    r
}

const RESTORE_COLUMNS: &[Column] = &[
    col("ID", "id", Show::Plain),
    col("NAME", "name", Show::Plain),
    col("OK", "ok", Show::Plain),
    col("DOMAIN", "domain", Show::Plain),
    col("ERROR", "error", Show::Plain),
];

pub fn restore(a: RestoreArgs) -> Result<Exit> {
    // Ctrl-C and SIGTERM stop the restore between chunks, and the partial
    // file is removed: a killed restore leaves no file behind.
    let _ = cli::interrupt_flag();
    let repo = Repo::open(&a.repo.repo)?;
    let index = repo.index(&a.id)?;
    let identities = a.identity.load("restore")?;
    let _lock = repo.lock(LockKind::Shared, a.repo.lock_wait)?;
    let manifest = open_manifest(&repo, &a.id, &identities)?;
    let op = Opener {
        repo: &repo,
        identities: &identities,
        key: repo.sealed_key(&identities)?,
        workers: a.work.workers(),
        backup: &a.id,
    };
    let images = chosen_disks(&manifest, a.disk.as_deref())?;
    if a.output_path.as_deref() == Some(Path::new("-")) {
        let [image] = images.as_slice() else {
            return Err(Error::usage("-o - streams one disk: add --disk TARGET"));
        };
        let stdout = std::io::stdout();
        restore::to_stream(&op, &manifest, image, &mut stdout.lock())?;
        return Ok(Exit::Ok);
    }
    let start = Instant::now();
    let mut printer = Printer::stdout(a.output.format(), RESTORE_COLUMNS);
    let outcome = restore_files(&a, &op, &manifest, &images);
    let record = match outcome {
        Ok(fields) => {
            let mut r = head(&index, "restore", true);
            r.extend(fields);
            r.insert(
                "elapsed_ms".into(),
                (start.elapsed().as_millis() as u64).into(),
            );
            r
        }
        Err(e) => {
            if e.code.exit_status() != Exit::ItemFailed || e.code == Code::Interrupted {
                return Err(e);
            }
            cli::warn(&e);
            let r = failure(&a.id, Some(&index), "restore", &e);
            printer.emit(r)?;
            printer.finish()?;
            return Ok(Exit::ItemFailed);
        }
    };
    printer.emit(record)?;
    printer.finish()?;
    Ok(Exit::Ok)
}

fn chosen_disks<'m>(manifest: &'m Manifest, disk: Option<&str>) -> Result<Vec<&'m format::Image>> {
    let Some(target) = disk else {
        return Ok(manifest.disks.iter().collect());
    };
    match manifest.disks.iter().find(|d| d.target == target) {
        Some(d) => Ok(vec![d]),
        None => {
            let have: Vec<&str> = manifest.disks.iter().map(|d| d.target.as_str()).collect();
            Err(Error::usage(format!(
                "backup {} has no disk {target:?}; it has: {}",
                manifest.id,
                have.join(", ")
            )))
        }
    }
}

fn restore_files(
    a: &RestoreArgs,
    op: &Opener,
    manifest: &Manifest,
    images: &[&format::Image],
) -> Result<Map<String, Value>> {
    if a.define && images.len() != manifest.disks.len() {
        return Err(Error::usage("--define restores every disk: drop --disk"));
    }
    let single = match (&a.output_path, images) {
        (Some(path), [_]) => Some(path.clone()),
        (Some(_), _) => {
            return Err(Error::usage(
                "-o PATH writes one disk: add --disk TARGET, or use --dir",
            ))
        }
        (None, _) => None,
    };
    let dir = match (&a.dir, &single) {
        (Some(d), _) => {
            // As restic's --target: a directory that is not there yet is
            // made, private, since it will hold VM data.
            if !d.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(d)
                    .map_err(|e| Error::io(format!("cannot create --dir {}", d.display()), e))?;
            }
            d.clone()
        }
        (None, Some(p)) => p
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
        (None, None) => {
            return Err(Error::usage(
                "give --dir DIR for the restored disks (or -o PATH with --disk)",
            ))
        }
    };
    let stem = restore::safe_file_stem(a.name.as_deref().unwrap_or(&manifest.name));
    let name = a.name.clone().unwrap_or_else(|| manifest.name.clone());
    let dests: Vec<(&format::Image, DiskFormat, PathBuf)> = images
        .iter()
        .map(|image| {
            let fmt = a.disk_format.unwrap_or_else(|| DiskFormat::of(image));
            let dest = single
                .clone()
                .unwrap_or_else(|| dir.join(format!("{stem}-{}.{}", image.target, fmt.name())));
            (*image, fmt, dest)
        })
        .collect();
    // Checked before a byte is written: a replaced file under a running VM
    // loses what the guest writes next.
    let paths: Vec<&Path> = dests.iter().map(|(_, _, p)| p.as_path()).collect();
    safe_to_write(a, &name, &paths)?;
    let mut restored: Vec<Restored> = Vec::new();
    let mut disks = Vec::new();
    let mut new_files = NewFiles::default();
    for (image, fmt, dest) in dests {
        new_files.note(&dest);
        let r = restore::to_file(
            op,
            manifest,
            image,
            &dest,
            fmt,
            a.force,
            &a.work.scratch_dir,
        )?;
        disks.push(json!({
            "target": r.target,
            "path": r.path.display().to_string(),
            "format": fmt.name(),
            "virtual_size_bytes": image.virtual_size_bytes,
            "sha256": r.sha256,
        }));
        restored.push(r);
    }
    let mut fields = obj(json!({ "disks": disks, "domain": null }));
    if a.define {
        let nvram = match &manifest.nvram {
            Some(image) => {
                let dest = dir.join(format!("{stem}-VARS.fd"));
                new_files.note(&dest);
                Some(
                    restore::to_file(
                        op,
                        manifest,
                        image,
                        &dest,
                        DiskFormat::Raw,
                        a.force,
                        &a.work.scratch_dir,
                    )?
                    .path,
                )
            }
            None => None,
        };
        let keep_old = dir.join(format!("{stem}-replaced-domain.xml"));
        define(a, manifest, &name, &restored, nvram.as_deref(), &keep_old)?;
        fields.insert("domain".into(), name.into());
    }
    new_files.keep();
    Ok(fields)
}

/// The files a restore creates where none was: removed again if the
/// restore fails part-way, so it leaves no disk behind that its record
/// does not name. A file `--force` replaced is not restored; it stays.
#[derive(Default)]
struct NewFiles {
    paths: Vec<PathBuf>,
    kept: bool,
}

impl NewFiles {
    /// `path` is about to be written.
    fn note(&mut self, path: &Path) {
        if !path.exists() {
            self.paths.push(path.to_path_buf());
        }
    }

    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for NewFiles {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        for path in &self.paths {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    cli::warn(format!(
                        "cannot remove {} of the failed restore: {e}",
                        path.display()
                    ));
                }
                _ => {}
            }
        }
    }
}

/// Refuses, before anything is written, a restore that would replace a
/// file a running VM uses, or (with --define) a domain that exists without
/// --force or is running.
fn safe_to_write(a: &RestoreArgs, name: &str, paths: &[&Path]) -> Result<()> {
    if !a.define && (!a.force || !paths.iter().any(|p| p.exists())) {
        return Ok(()); // existing files are refused one by one; new ones harm no VM
    }
    let conn = match a.connect.open(Access::ReadOnly) {
        Ok(conn) => conn,
        Err(e) if !a.define => {
            cli::warn(format!(
                "cannot check that no running VM uses the files --force replaces: {}",
                e.message
            ));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    if a.define {
        if let Ok(existing) = conn.lookup_domain_by_name(name) {
            if !a.force {
                return Err(Error::new(
                    Code::InvalidState,
                    format!("domain {name:?} exists; restore under another --name, or --force to replace it"),
                ));
            }
            if existing.is_active().unwrap_or(true) {
                return Err(Error::new(
                    Code::InvalidState,
                    format!("domain {name:?} is running; stop it before replacing it"),
                ));
            }
        }
    }
    for path in paths {
        if let Some(vm) = running_vm_using(&conn, path)? {
            return Err(Error::new(
                Code::InvalidState,
                format!("{} is a disk of the running VM {vm:?}; stop it, or restore elsewhere with --dir", path.display()),
            ));
        }
    }
    Ok(())
}

/// The running VM one of whose disks is the file at `path`, by device and
/// inode (a path may be spelled many ways).
fn running_vm_using(conn: &virt::connect::Connect, path: &Path) -> Result<Option<String>> {
    let Some(target) = fsutil::file_id(path) else {
        return Ok(None); // a new file
    };
    let running = conn
        .list_all_domains(virt::sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        .map_err(|e| Error::libvirt("cannot list the running VMs", &e))?;
    for dom in running {
        let Ok(xml) = dom.xml_desc(0) else { continue };
        let Ok(parsed) = hv_common::domain::parse(&xml) else {
            continue;
        };
        let sources = parsed.disks.iter().filter_map(|d| d.source.as_deref());
        if sources
            .into_iter()
            .any(|s| fsutil::file_id(s) == Some(target))
        {
            return Ok(Some(dom.name().unwrap_or_default()));
        }
    }
    Ok(None)
}

/// Defines the restored domain. The definition of one it replaces is
/// saved to `keep_old` first and defined again if the new one is refused,
/// so a failure never leaves neither.
fn define(
    a: &RestoreArgs,
    manifest: &Manifest,
    name: &str,
    disks: &[Restored],
    nvram: Option<&Path>,
    keep_old: &Path,
) -> Result<()> {
    let conn = a.connect.open(Access::ReadWrite)?;
    let xml = restore::rewrite_domain_xml(&manifest.domain_xml, name, disks, nvram)?;
    let mut replaced = None;
    if let Ok(existing) = conn.lookup_domain_by_name(name) {
        if existing.is_active().unwrap_or(true) {
            return Err(Error::new(
                Code::InvalidState,
                format!("domain {name:?} is running; stop it before replacing it"),
            ));
        }
        let flags = virt::sys::VIR_DOMAIN_XML_SECURE | virt::sys::VIR_DOMAIN_XML_INACTIVE;
        let old = existing.xml_desc(flags).map_err(|e| {
            Error::libvirt(
                format!("cannot read domain {name:?} before replacing it"),
                &e,
            )
        })?;
        crate::repo::write_synced(keep_old, old.as_bytes(), 0o600)?;
        existing
            .undefine_flags(virt::sys::VIR_DOMAIN_UNDEFINE_KEEP_NVRAM)
            .map_err(|e| Error::libvirt(format!("cannot replace domain {name:?}"), &e))?;
        replaced = Some(old);
    }
    let Err(e) = conn.define_domain_xml(&xml) else {
        return Ok(());
    };
    let mut err = Error::libvirt(format!("cannot define domain {name:?}"), &e);
    if let Some(old) = replaced {
        err.message = match conn.define_domain_xml(&old) {
            Ok(_) => format!(
                "{}; the domain it was to replace is defined again",
                err.message
            ),
            Err(e2) => format!(
                "{}; nor could the domain it replaced be defined again ({}): `virsh define {}`",
                err.message,
                e2.message(),
                keep_old.display()
            ),
        };
    }
    Err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_records_or_bare_lines() {
        let input = "{\"id\":\"20261121T101500Z-3fa2b1c9\",\"name\":\"a\"}\n\n20261121T101501Z-00000000\n{\"name\":\"x\"}\n{\"name\":\"b\",\"ok\":false,\"error\":{\"code\":\"io_error\"}}\n";
        let mut status = Status::default();
        let targets = ids_from(input.as_bytes(), &mut status);
        let failed = obj(json!({"name": "b", "ok": false, "error": {"code": "io_error"}}));
        assert_eq!(
            targets,
            [
                Target::Id("20261121T101500Z-3fa2b1c9".into()),
                Target::Id("20261121T101501Z-00000000".into()),
                Target::Failed(failed),
            ]
        );
        assert_eq!(status.exit(), Exit::Usage, "the line without an id");
        let mut status = Status::default();
        assert!(ids_from(&b"\xff\xfe\n"[..], &mut status).is_empty());
        assert_eq!(status.exit(), Exit::Usage, "an unreadable line");
    }
}
