//! `hv-backup restore`: a backup back onto disks a VM can run from, and
//! optionally the VM itself. Everything a restore could harm is checked
//! before a byte is written (an existing file or domain is replaced only
//! with --force, and never one a running VM uses), and a restore that
//! fails part-way removes the files it created, so it leaves no disk its
//! record does not name. The repository lock is held shared, so gc cannot
//! delete a chunk the restore is about to read.

use crate::define;
use crate::format::{self, Manifest};
use crate::load::{self, Opener};
use crate::repo::{LockKind, Repo};
use crate::write::{self, DiskFormat, Restored};
use crate::{crypt, BackupHead};
use hv_common::cli;
use hv_common::connect::{self, Access};
use hv_common::output::{col, to_record, Column, Format, Printer, Show};
use hv_common::remote::Place;
use hv_common::{fsutil, Code, Error, Exit, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What `restore` is asked to restore, where to, and how.
#[derive(Debug)]
pub struct Plan {
    /// The repository directory.
    pub repo: PathBuf,
    /// How long to wait for the repository lock.
    pub lock_wait: Duration,
    /// The backup to restore.
    pub id: String,
    /// The identity file that opens the backup.
    pub identity: Option<PathBuf>,
    /// Only this disk (its target, e.g. `vda`); `None`: every disk.
    pub disk: Option<String>,
    /// Where the one disk goes; `-` streams it raw to stdout.
    pub output_path: Option<PathBuf>,
    /// The directory for the restored disks, named `<vm>-<target>.<format>`.
    pub dir: Option<PathBuf>,
    /// The format to write; `None`: each disk's original one.
    pub disk_format: Option<DiskFormat>,
    /// Define the domain again around the restored disks.
    pub define: bool,
    /// The name for the restored domain and files; `None`: the backed-up VM's.
    pub name: Option<String>,
    /// Replace existing files, and a shut-off domain of the same name.
    pub force: bool,
    /// Threads opening chunks.
    pub workers: usize,
    /// Where qemu-nbd's socket goes while a qcow2 disk is written.
    pub scratch_dir: PathBuf,
    /// The libvirt that checks which files running VMs use and defines the
    /// domain; connected to only when one of those is needed, so a restore
    /// to new files works on a host without libvirtd.
    pub libvirt: connect::Target,
    /// The output format asked for (`None`: by what stdout is).
    pub format: Option<Format>,
}

const RESTORE_COLUMNS: &[Column] = &[
    col("ID", "id", Show::Plain),
    col("NAME", "name", Show::Plain),
    col("OK", "ok", Show::Plain),
    col("DOMAIN", "domain", Show::Plain),
    col("ERROR", "error", Show::Plain),
];

/// What restore says about the backup it restored (docs/backups.md).
#[derive(Debug, Serialize)]
struct RestoreRecord<'a> {
    /// Which backup, of which VM; `ok` says whether the restore worked.
    #[serde(flatten)]
    head: BackupHead<'a>,
    /// What was written; absent on failure, when the files it had created
    /// are removed again.
    #[serde(flatten)]
    files: Option<RestoredFiles>,
    /// How long the restore took, in milliseconds; absent on failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    elapsed_ms: Option<u64>,
    /// Why the restore failed; absent when it worked.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a Error>,
}

/// The disks a restore wrote and the domain it defined.
#[derive(Debug, Serialize)]
struct RestoredFiles {
    /// One entry per restored disk.
    disks: Vec<RestoredDisk>,
    /// The name of the domain defined around the disks (`--define`); null
    /// without --define.
    domain: Option<String>,
}

/// One disk written by restore.
#[derive(Debug, Serialize)]
struct RestoredDisk {
    /// The disk's target in the backed-up domain (`vda`, …).
    target: String,
    /// The file written.
    path: String,
    /// `qcow2` or `raw`: the format written.
    format: &'static str,
    /// The disk's virtual size, in bytes.
    virtual_size_bytes: u64,
    /// BLAKE3 of what was written (the disk's plaintext image, as b3sum
    /// prints it), lowercase hex.
    blake3: Option<String>,
    /// SHA-256 of what was written, for a backup whose manifest has one
    /// (made before hv hashed images with BLAKE3); else null.
    sha256: Option<String>,
}

pub fn restore(plan: &Plan) -> Result<Exit> {
    // Ctrl-C and SIGTERM stop the restore between chunks, and the partial
    // file is removed: a killed restore leaves no file behind.
    let _ = cli::interrupt_flag();
    // The disks go where the host given is: over its ssh when it is
    // another machine, as a backup reads them there.
    let place = match plan.libvirt.uri.as_deref() {
        _ if plan.output_path.as_deref() == Some(Path::new("-")) => Place::Here,
        Some(uri) if hv_common::hosts::is_remote(uri) => Place::from_uri(uri)?,
        _ => Place::Here,
    };
    let repo = Repo::open(&plan.repo)?;
    let index = repo.index(&plan.id)?;
    let identities = crypt::load_identity(plan.identity.as_deref(), "restore")?;
    let _lock = repo.lock(LockKind::Shared, plan.lock_wait)?;
    let manifest = load::open_manifest(&repo, &plan.id, &identities)?;
    let op = Opener {
        repo: &repo,
        identities: &identities,
        key: repo.sealed_key(&identities)?,
        workers: plan.workers,
        backup: &plan.id,
    };
    let images = chosen_disks(&manifest, plan.disk.as_deref())?;
    if plan.output_path.as_deref() == Some(Path::new("-")) {
        let [image] = images.as_slice() else {
            return Err(Error::usage("-o - streams one disk: add --disk TARGET"));
        };
        let stdout = std::io::stdout();
        write::to_stream(&op, &manifest, image, &mut stdout.lock())?;
        return Ok(Exit::Ok);
    }
    let start = Instant::now();
    let mut printer = Printer::stdout(plan.format, RESTORE_COLUMNS);
    let outcome = restore_files(plan, &place, &op, &manifest, &images);
    let record = match outcome {
        Ok(files) => RestoreRecord {
            head: BackupHead::of(&index, "restore", true),
            files: Some(files),
            elapsed_ms: Some(start.elapsed().as_millis() as u64),
            error: None,
        },
        Err(e) => {
            if e.code.exit_status() != Exit::ItemFailed || e.code == Code::Interrupted {
                return Err(e);
            }
            cli::warn(&e);
            printer.emit(to_record(&RestoreRecord {
                head: BackupHead::of(&index, "restore", false),
                files: None,
                elapsed_ms: None,
                error: Some(&e),
            }))?;
            printer.finish()?;
            return Ok(Exit::ItemFailed);
        }
    };
    printer.emit(to_record(&record))?;
    printer.finish()?;
    Ok(Exit::Ok)
}

pub(crate) fn chosen_disks<'m>(
    manifest: &'m Manifest,
    disk: Option<&str>,
) -> Result<Vec<&'m format::Image>> {
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
    plan: &Plan,
    place: &Place,
    op: &Opener,
    manifest: &Manifest,
    images: &[&format::Image],
) -> Result<RestoredFiles> {
    if plan.define && images.len() != manifest.disks.len() {
        return Err(Error::usage("--define restores every disk: drop --disk"));
    }
    let single = match (&plan.output_path, images) {
        (Some(path), [_]) => Some(path.clone()),
        (Some(_), _) => {
            return Err(Error::usage(
                "-o PATH writes one disk: add --disk TARGET, or use --dir",
            ))
        }
        (None, _) => None,
    };
    let dir = match (&plan.dir, &single) {
        (Some(d), _) => {
            // As restic's --target: a directory that is not there yet is
            // made, private, since it will hold VM data.
            write::make_dir(place, d)?;
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
    let stem = safe_file_stem(plan.name.as_deref().unwrap_or(&manifest.name));
    let name = plan.name.clone().unwrap_or_else(|| manifest.name.clone());
    let dests: Vec<(&format::Image, DiskFormat, PathBuf)> = images
        .iter()
        .map(|image| {
            let fmt = plan.disk_format.unwrap_or_else(|| write::format_of(image));
            let dest = single
                .clone()
                .unwrap_or_else(|| dir.join(format!("{stem}-{}.{}", image.target, fmt.as_str())));
            (*image, fmt, dest)
        })
        .collect();
    // Checked before a byte is written: a replaced file under a running VM
    // loses what the guest writes next.
    let paths: Vec<&Path> = dests.iter().map(|(_, _, p)| p.as_path()).collect();
    safe_to_write(plan, place, &name, &paths)?;
    let mut restored: Vec<Restored> = Vec::new();
    let mut disks = Vec::new();
    let mut new_files = NewFiles {
        place,
        paths: Vec::new(),
        kept: false,
    };
    for (image, fmt, dest) in dests {
        new_files.note(&dest)?;
        let r = write::to_file(
            place,
            op,
            manifest,
            image,
            &dest,
            fmt,
            plan.force,
            &plan.scratch_dir,
        )?;
        disks.push(RestoredDisk {
            target: r.target.clone(),
            path: r.path.display().to_string(),
            format: fmt.as_str(),
            virtual_size_bytes: image.virtual_size_bytes,
            blake3: r.digest.blake3.clone(),
            sha256: r.digest.sha256.clone(),
        });
        restored.push(r);
    }
    let mut files = RestoredFiles {
        disks,
        domain: None,
    };
    if plan.define {
        let nvram = match &manifest.nvram {
            Some(image) => {
                let dest = dir.join(format!("{stem}-VARS.fd"));
                new_files.note(&dest)?;
                Some(
                    write::to_file(
                        place,
                        op,
                        manifest,
                        image,
                        &dest,
                        DiskFormat::Raw,
                        plan.force,
                        &plan.scratch_dir,
                    )?
                    .path,
                )
            }
            None => None,
        };
        let keep_old = dir.join(format!("{stem}-replaced-domain.xml"));
        define::domain(
            place,
            &plan.libvirt,
            manifest,
            &name,
            &restored,
            nvram.as_deref(),
            &keep_old,
        )?;
        files.domain = Some(name);
    }
    new_files.keep();
    Ok(files)
}

/// The files a restore creates where none was: removed again if the
/// restore fails part-way, so it leaves no disk behind that its record
/// does not name. A file `--force` replaced is not restored; it stays.
struct NewFiles<'p> {
    /// The machine they are on.
    place: &'p Place,
    paths: Vec<PathBuf>,
    kept: bool,
}

impl NewFiles<'_> {
    /// `path` is about to be written.
    fn note(&mut self, path: &Path) -> Result<()> {
        if !write::exists(self.place, path)? {
            self.paths.push(path.to_path_buf());
        }
        Ok(())
    }

    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for NewFiles<'_> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        for path in &self.paths {
            write::remove(self.place, path);
        }
    }
}

/// Refuses, before anything is written, a restore that would replace a
/// file a running VM uses, or (with --define) a domain that exists without
/// --force or is running.
fn safe_to_write(plan: &Plan, place: &Place, name: &str, paths: &[&Path]) -> Result<()> {
    let mut existing = Vec::new();
    for p in paths {
        if write::exists(place, p)? {
            existing.push(*p);
        }
    }
    if !plan.define && (!plan.force || existing.is_empty()) {
        return Ok(()); // existing files are refused one by one; new ones harm no VM
    }
    let conn = match connect::open(&plan.libvirt, Access::ReadOnly) {
        Ok(conn) => conn,
        Err(e) if !plan.define => {
            cli::warn(format!(
                "cannot check that no running VM uses the files --force replaces: {}",
                e.message
            ));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    if plan.define {
        if let Ok(existing) = conn.lookup_domain_by_name(name) {
            if !plan.force {
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
    for path in existing {
        if let Some(vm) = running_vm_using(&conn, place, path)? {
            return Err(Error::new(
                Code::InvalidState,
                format!("{} is a disk of the running VM {vm:?}; stop it, or restore elsewhere with --dir", path.display()),
            ));
        }
    }
    Ok(())
}

/// The running VM one of whose disks is the file at `path`, by device and
/// inode (a path may be spelled many ways, a directory reached through a
/// symlink): here with stat(2), on another host with stat(1) there.
fn running_vm_using(
    conn: &virt::connect::Connect,
    place: &Place,
    path: &Path,
) -> Result<Option<String>> {
    let running = conn
        .list_all_domains(virt::sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        .map_err(|e| Error::libvirt("cannot list the running VMs", &e))?;
    let mut disks: Vec<(String, PathBuf)> = Vec::new();
    for dom in running {
        let Ok(xml) = dom.xml_desc(0) else { continue };
        let Ok(parsed) = hv_common::domain::parse(&xml) else {
            continue;
        };
        let name = dom.name().unwrap_or_default();
        for source in parsed.disks.iter().filter_map(|d| d.source.as_deref()) {
            disks.push((name.clone(), PathBuf::from(source)));
        }
    }
    let mut paths: Vec<&Path> = vec![path];
    paths.extend(disks.iter().map(|(_, p)| p.as_path()));
    let ids = file_ids(place, &paths)?;
    let Some(target) = ids[0].clone() else {
        return Ok(None); // a new file
    };
    Ok(disks
        .into_iter()
        .zip(&ids[1..])
        .find(|(_, id)| id.as_ref() == Some(&target))
        .map(|((vm, _), _)| vm))
}

/// Each file's device and inode where `place` is (`None`: no such file).
fn file_ids(place: &Place, paths: &[&Path]) -> Result<Vec<Option<String>>> {
    let Place::Ssh(ssh) = place else {
        return Ok(paths
            .iter()
            .map(|p| fsutil::file_id(p).map(|(dev, ino)| format!("{dev}:{ino}")))
            .collect());
    };
    let mut script = std::ffi::OsString::from("for f in");
    for p in paths {
        script.push(" ");
        script.push(hv_common::remote::quote(p.as_os_str()));
    }
    script.push("; do stat -L -c %d:%i -- \"$f\" 2>/dev/null || echo -; done");
    let out = place.output(place.script(&script), "stat")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let ids: Vec<Option<String>> = text
        .lines()
        .map(|l| (l != "-").then(|| l.to_owned()))
        .collect();
    if !out.status.success() || ids.len() != paths.len() {
        return Err(ssh.failed("cannot check which files the running VMs use", &out));
    }
    Ok(ids)
}

/// A file name from a VM name that cannot leave its directory.
fn safe_file_stem(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c == '/' || c == '\0' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let trimmed = cleaned.trim_start_matches('.');
    if trimmed.is_empty() {
        "vm".into()
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_the_directory() {
        assert_eq!(safe_file_stem("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(safe_file_stem("..."), "vm");
        assert_eq!(safe_file_stem("web 1 ünï"), "web 1 ünï");
    }

    /// Every field at once, as no one record has them (a failed restore
    /// has no `disks` or `domain`, a successful one no `error`): the table
    /// in docs/backups.md names them all, in this order, and each disk's.
    #[test]
    fn the_record_is_the_documented_one() {
        let error = Error::new(Code::Io, "x");
        let record = hv_common::output::to_record(&RestoreRecord {
            head: BackupHead::example("restore"),
            files: Some(RestoredFiles {
                disks: vec![RestoredDisk {
                    target: "vda".into(),
                    path: "/var/lib/libvirt/images/web1-restored-vda.qcow2".into(),
                    format: "qcow2",
                    virtual_size_bytes: 1,
                    blake3: Some("0".repeat(64)),
                    sha256: None,
                }],
                domain: Some("web1-restored".into()),
            }),
            elapsed_ms: Some(1),
            error: Some(&error),
        });
        hv_testbench::assert_documented(&record, "backups.md", "#### restore records");
        let disk: Vec<&str> = record["disks"][0]
            .as_object()
            .expect("a disk is an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            disk,
            [
                "target",
                "path",
                "format",
                "virtual_size_bytes",
                "blake3",
                "sha256"
            ]
        );
    }
}
