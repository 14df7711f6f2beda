//! Writing a stored image out: to a new sparse file (raw, or qcow2 through
//! qemu-nbd) or raw to a stream. A file is written under a hidden partial
//! name and takes its final name only once every chunk matched its id and
//! the image its SHA-256 (where the backup has one), so a disk under its
//! final name is always whole and checked; an interrupted or failed write
//! removes its partial file.
//!
//! On another host (a restore with `-c qemu+ssh://…`) the file is written
//! there the way a backup reads it there: qemu-nbd serves the new image on
//! that host, its socket forwarded over the host's ssh, and the same
//! partial name, checks and commit are done with plain commands there.

use crate::direct::RawWriter;
use crate::format::{Image, Manifest};
use crate::load::{self, Opener, Piece};
use crate::source::{QemuNbd, RunDir};
use hv_common::remote::{quote, Place};
use hv_common::{Code, Error, Result};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub use hv_common::profile::DiskFormat;

/// The format a restore writes when none is asked for: the disk's own.
pub fn format_of(image: &Image) -> DiskFormat {
    if image.format == "qcow2" {
        DiskFormat::Qcow2
    } else {
        DiskFormat::Raw
    }
}

/// A restored disk: where it went, and the hashes of what was written.
pub struct Restored {
    pub target: String,
    pub path: PathBuf,
    pub format: DiskFormat,
    pub digest: load::Digest,
}

/// Restores `image` to a new file at `dest`, via a hidden partial file,
/// on the machine `place` is.
#[allow(clippy::too_many_arguments)]
pub fn to_file(
    place: &Place,
    op: &Opener,
    manifest: &Manifest,
    image: &Image,
    dest: &Path,
    format: DiskFormat,
    force: bool,
    scratch_root: &Path,
) -> Result<Restored> {
    if let Place::Ssh(_) = place {
        return to_file_there(
            place,
            op,
            manifest,
            image,
            dest,
            format,
            force,
            scratch_root,
        );
    }
    if dest.exists() && !force {
        return Err(Error::new(
            Code::InvalidState,
            format!(
                "{} exists; restore elsewhere (--dir, -o) or add --force to replace it",
                dest.display()
            ),
        ));
    }
    let partial = partial_path(dest)?;
    let written = match format {
        DiskFormat::Raw => write_raw(op, manifest, image, &partial),
        DiskFormat::Qcow2 => write_qcow2(op, manifest, image, &partial, scratch_root),
    };
    let written = written.and_then(|sha| match hv_common::cli::interrupted() {
        Some(_) => Err(hv_common::cli::interrupted_error(&format!(
            "restore of {}",
            dest.display()
        ))),
        None => Ok(sha),
    });
    let digest = match written.and_then(|sha| commit(&partial, dest, force).map(|()| sha)) {
        Ok(digest) => digest,
        Err(e) => {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
    };
    Ok(Restored {
        target: image.target.clone(),
        path: dest.to_path_buf(),
        format,
        digest,
    })
}

/// [`to_file`] on another host.
#[allow(clippy::too_many_arguments)]
fn to_file_there(
    place: &Place,
    op: &Opener,
    manifest: &Manifest,
    image: &Image,
    dest: &Path,
    format: DiskFormat,
    force: bool,
    scratch_root: &Path,
) -> Result<Restored> {
    if exists(place, dest)? && !force {
        return Err(Error::new(
            Code::InvalidState,
            format!(
                "{} exists{}; restore elsewhere (--dir, -o) or add --force to replace it",
                dest.display(),
                place.shown()
            ),
        ));
    }
    let partial = partial_path(dest)?;
    let written = write_nbd(place, op, manifest, image, &partial, format, scratch_root);
    let written = written.and_then(|sha| match hv_common::cli::interrupted() {
        Some(_) => Err(hv_common::cli::interrupted_error(&format!(
            "restore of {}",
            dest.display()
        ))),
        None => Ok(sha),
    });
    let digest =
        match written.and_then(|sha| commit_there(place, &partial, dest, force).map(|()| sha)) {
            Ok(digest) => digest,
            Err(e) => {
                remove(place, &partial);
                return Err(e);
            }
        };
    Ok(Restored {
        target: image.target.clone(),
        path: dest.to_path_buf(),
        format,
        digest,
    })
}

/// Runs `script` where `place` is; `what` names it in errors.
fn run_there(place: &Place, script: &OsStr, what: &str) -> Result<std::process::Output> {
    let out = place.output(place.script(script), what)?;
    match place {
        Place::Ssh(ssh) if !out.status.success() && out.status.code() != Some(1) => {
            Err(ssh.failed(what, &out))
        }
        _ => Ok(out),
    }
}

/// Whether a file is at `path` where `place` is.
pub fn exists(place: &Place, path: &Path) -> Result<bool> {
    if let Place::Here = place {
        return Ok(path.exists());
    }
    let mut script = OsString::from("test -e ");
    script.push(quote(path.as_os_str()));
    let out = run_there(
        place,
        &script,
        &format!("cannot look at {}", path.display()),
    )?;
    Ok(out.status.success())
}

/// Removes the file at `path` where `place` is; best effort, said on stderr.
pub fn remove(place: &Place, path: &Path) {
    let gone = match place {
        Place::Here => match fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
            _ => Ok(()),
        },
        Place::Ssh(_) => {
            let mut script = OsString::from("rm -f -- ");
            script.push(quote(path.as_os_str()));
            match run_there(place, &script, "rm") {
                Ok(out) if out.status.success() => Ok(()),
                Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
                Err(e) => Err(e.message),
            }
        }
    };
    if let Err(e) = gone {
        hv_common::cli::warn(format!(
            "cannot remove {}{} of the failed restore: {e}",
            path.display(),
            place.shown()
        ));
    }
}

/// Makes the directory `dir` where `place` is, private, as restic makes
/// its --target: it will hold VM data.
pub fn make_dir(place: &Place, dir: &Path) -> Result<()> {
    let what = format!("cannot create --dir {}", dir.display());
    match place {
        Place::Here => {
            use std::os::unix::fs::DirBuilderExt;
            if !dir.exists() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| Error::io(what, e))?;
            }
            Ok(())
        }
        Place::Ssh(ssh) => {
            let d = quote(dir.as_os_str());
            let mut script = OsString::from("test -d ");
            script.push(&d);
            script.push(" || mkdir -p -m 0700 -- ");
            script.push(&d);
            let out = place.output(place.script(&script), "mkdir")?;
            match out.status.success() {
                true => Ok(()),
                false => Err(ssh.failed(&what, &out)),
            }
        }
    }
}

/// Writes `data` to a new file at `path` where `place` is, synced.
pub fn put(place: &Place, path: &Path, data: &[u8]) -> Result<()> {
    let Place::Ssh(ssh) = place else {
        return crate::repo::write_synced(path, data, 0o600);
    };
    use std::io::Write as _;
    let p = quote(path.as_os_str());
    let mut script = OsString::from("umask 077 && cat > ");
    script.push(&p);
    script.push(" && sync -- ");
    script.push(&p);
    let what = format!("cannot write {}", path.display());
    let mut child = place
        .script(&script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(format!("{what}: cannot run ssh"), e))?;
    let sent = child.stdin.take().map(|mut i| i.write_all(data));
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io(what.clone(), e))?;
    match (sent, out.status.success()) {
        (Some(Ok(())), true) => Ok(()),
        _ => Err(ssh.failed(&what, &out)),
    }
}

/// Writes the image through qemu-nbd serving a new `format` file at
/// `path` where `place` is (a qcow2 here; raw or qcow2 on another host).
fn write_nbd(
    place: &Place,
    op: &Opener,
    manifest: &Manifest,
    image: &Image,
    path: &Path,
    format: DiskFormat,
    scratch_root: &Path,
) -> Result<load::Digest> {
    // Private, as every restored disk: it holds the VM's data.
    let mut script = OsString::from("umask 077 && test ! -e ");
    script.push(quote(path.as_os_str()));
    script.push(format!(
        " && exec qemu-img create -q -f {} -- ",
        format.as_str()
    ));
    script.push(quote(path.as_os_str()));
    script.push(format!(" {}", image.virtual_size_bytes));
    let out = place.output(place.script(&script), "qemu-img")?;
    if !out.status.success() {
        return Err(Error::new(
            Code::Io,
            format!(
                "qemu-img cannot create {}{}: {}",
                path.display(),
                place.shown(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    let dir = RunDir::create(place, scratch_root, "restore", None)?;
    let server = QemuNbd::serve(
        place,
        path,
        format.as_str(),
        &dir,
        true,
        None,
        &image.target,
    )?;
    let mut client = server.connect()?;
    if client.read_only() {
        return Err(Error::new(
            Code::Io,
            format!("qemu-nbd serves {} read-only", path.display()),
        ));
    }
    let err = |e: std::io::Error| Error::io(format!("cannot write {}", path.display()), e);
    let sha = load::read_image(
        op,
        image,
        manifest.chunk_size,
        |offset, piece| match piece {
            Piece::Data(d) => client.write_at(offset, d).map_err(err),
            Piece::Zeros(_) => Ok(()), // left as a hole
        },
    )?;
    // qemu-nbd syncs the image on a flush: once it answers, the data and
    // qcow2's metadata are on that host's disk.
    client.flush().map_err(err)?;
    drop(client);
    server.finish()?;
    Ok(sha)
}

/// [`commit`] on another host: a hard link refuses to replace a file.
fn commit_there(place: &Place, partial: &Path, dest: &Path, force: bool) -> Result<()> {
    let (p, d) = (quote(partial.as_os_str()), quote(dest.as_os_str()));
    let dir = dest.parent().filter(|d| !d.as_os_str().is_empty());
    // -T: a directory of that name is an error, never the place the
    // partial file moves into.
    let mut script = OsString::from(match force {
        true => "mv -fT -- ",
        false => "ln -T -- ",
    });
    script.push(&p);
    script.push(" ");
    script.push(&d);
    if !force {
        script.push(" && rm -f -- ");
        script.push(&p);
    }
    script.push(" && sync -- ");
    script.push(quote(dir.unwrap_or(Path::new(".")).as_os_str()));
    let out = place.output(place.script(&script), "ln")?;
    match (out.status.success(), place) {
        (true, _) => Ok(()),
        (false, Place::Ssh(ssh)) => {
            Err(ssh.failed(&format!("cannot create {}", dest.display()), &out))
        }
        (false, Place::Here) => unreachable!("commit_there runs on another host"),
    }
}

fn partial_path(dest: &Path) -> Result<PathBuf> {
    let name = dest
        .file_name()
        .ok_or_else(|| Error::usage(format!("{} is not a file path", dest.display())))?;
    let salt = crate::crypt::random_hex::<4>()?;
    Ok(dest.with_file_name(format!(".{}.partial-{salt}", name.to_string_lossy())))
}

/// Gives the verified partial file its name: a hard link refuses to
/// replace an existing file, so a race with another writer loses nothing.
fn commit(partial: &Path, dest: &Path, force: bool) -> Result<()> {
    let err = |e| Error::io(format!("cannot create {}", dest.display()), e);
    if force {
        fs::rename(partial, dest).map_err(err)?;
    } else {
        fs::hard_link(partial, dest).map_err(err)?;
        fs::remove_file(partial).map_err(err)?;
    }
    // The name, too, must survive a crash once the restore says it is done.
    let dir = dest.parent().filter(|d| !d.as_os_str().is_empty());
    File::open(dir.unwrap_or(Path::new(".")))
        .and_then(|d| d.sync_all())
        .map_err(err)
}

fn create_new(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))
}

fn write_raw(op: &Opener, manifest: &Manifest, image: &Image, path: &Path) -> Result<load::Digest> {
    let file = create_new(path)?;
    let err = |e| Error::io(format!("cannot write {}", path.display()), e);
    file.set_len(image.virtual_size_bytes).map_err(err)?;
    let mut out = RawWriter::new(file, path, manifest.chunk_size as usize);
    let sha = load::read_image(
        op,
        image,
        manifest.chunk_size,
        |offset, piece| match piece {
            Piece::Data(d) => out.write_at(d, offset).map_err(err),
            Piece::Zeros(_) => Ok(()), // left as a hole
        },
    )?;
    out.sync().map_err(err)?;
    Ok(sha)
}

fn write_qcow2(
    op: &Opener,
    manifest: &Manifest,
    image: &Image,
    path: &Path,
    scratch_root: &Path,
) -> Result<load::Digest> {
    let here = &Place::Here;
    let digest = write_nbd(
        here,
        op,
        manifest,
        image,
        path,
        DiskFormat::Qcow2,
        scratch_root,
    )?;
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    Ok(digest)
}

/// Streams `image` raw, zeros included, to `out` (stdout for `-o -`).
pub fn to_stream(
    op: &Opener,
    manifest: &Manifest,
    image: &Image,
    out: &mut impl Write,
) -> Result<()> {
    let zeros = vec![0u8; manifest.chunk_size as usize];
    let mut sent = 0u64;
    // A stream cut short is a disk cut short: unlike a listing that `head`
    // ends, a closed pipe here fails the restore (exit 1), so
    // `hv-backup restore -o - … | consumer` in a script does not pass
    // when the consumer gave up.
    let cut = |e: std::io::Error, sent: u64| {
        Error::new(
            Code::Io,
            format!(
                "disk {}: stdout failed after {sent} of {} bytes ({e}); the stream is incomplete",
                image.target, image.virtual_size_bytes
            ),
        )
    };
    let _ = load::read_image(op, image, manifest.chunk_size, |_, piece| {
        let r = match piece {
            Piece::Data(d) => out.write_all(d).map(|()| d.len()),
            Piece::Zeros(n) => out.write_all(&zeros[..n]).map(|()| n),
        };
        sent += r.map_err(|e| cut(e, sent))? as u64;
        Ok(())
    })?;
    out.flush().map_err(|e| cut(e, sent))
}
