//! Writing a stored image out: to a new sparse file (raw, or qcow2 through
//! qemu-nbd) or raw to a stream. A file is written under a hidden partial
//! name and takes its final name only once every chunk matched its id and
//! the image its SHA-256 (where the backup has one), so a disk under its
//! final name is always whole and checked; an interrupted or failed write
//! removes its partial file.

use crate::direct::RawWriter;
use crate::format::{Image, Manifest};
use crate::load::{self, Opener, Piece};
use crate::source::{QemuNbd, RunDir};
use hv_common::{Code, Error, Result};
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

/// A restored disk: where it went, and the SHA-256 of what was written.
pub struct Restored {
    pub target: String,
    pub path: PathBuf,
    pub format: DiskFormat,
    pub sha256: String,
}

/// Restores `image` to a new file at `dest`, via a hidden partial file.
pub fn to_file(
    op: &Opener,
    manifest: &Manifest,
    image: &Image,
    dest: &Path,
    format: DiskFormat,
    force: bool,
    scratch_root: &Path,
) -> Result<Restored> {
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
    let sha256 = match written.and_then(|sha| commit(&partial, dest, force).map(|()| sha)) {
        Ok(sha) => sha,
        Err(e) => {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
    };
    Ok(Restored {
        target: image.target.clone(),
        path: dest.to_path_buf(),
        format,
        sha256,
    })
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

fn write_raw(op: &Opener, manifest: &Manifest, image: &Image, path: &Path) -> Result<String> {
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
) -> Result<String> {
    drop(create_new(path)?);
    let out = hv_common::cli::child_command("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(path)
        .arg(image.virtual_size_bytes.to_string())
        .output()
        .map_err(|e| Error::io("cannot run qemu-img (install qemu-utils)", e))?;
    if !out.status.success() {
        return Err(Error::new(
            Code::Io,
            format!(
                "qemu-img cannot create {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    let dir = RunDir::create(scratch_root, "restore")?;
    let server = QemuNbd::serve(path, "qcow2", &dir.0, true, None, &image.target)?;
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
            Piece::Zeros(_) => Ok(()),
        },
    )?;
    client.flush().map_err(err)?;
    drop(client);
    server.finish()?;
    File::open(path).and_then(|f| f.sync_all()).map_err(err)?;
    Ok(sha)
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
