//! Making a VM's files, all or nothing (hv-define, hv-clone): each file is
//! created new, never over an existing one, and written down as it is
//! made; the domain is defined last. [`Undo`] removes what a failed run
//! made, in reverse order, so nothing is left that a second run would trip
//! over or a user would have to find.

pub mod seed;

use crate::{cli, Code, Error, Result};
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use virt::domain::Domain;

/// What this run made, undone in reverse unless [`Undo::keep`] is called.
pub struct Undo {
    files: Vec<PathBuf>,
    /// Volumes made on another host through its libvirt.
    volumes: Vec<virt::storage_vol::StorageVol>,
    domain: Option<Domain>,
}

impl Default for Undo {
    fn default() -> Undo {
        Undo::new()
    }
}

impl Undo {
    pub fn new() -> Undo {
        Undo {
            files: Vec::new(),
            volumes: Vec::new(),
            domain: None,
        }
    }

    /// The run worked: what it made stays.
    pub fn keep(mut self) {
        self.files.clear();
        self.volumes.clear();
        self.domain = None;
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if let Some(dom) = self.domain.take() {
            if dom.is_active().unwrap_or(false) {
                let _ = dom.destroy();
            }
            if let Err(e) = crate::domain::undefine_all(&dom) {
                cli::warn(format!(
                    "could not undefine the half-made VM: {e}; remove it with hv-rm"
                ));
            }
        }
        for v in self.volumes.iter().rev() {
            if let Err(e) = v.delete(0) {
                let path = v.path().unwrap_or_default();
                cli::warn(format!("could not remove volume {path}: {e}"));
            }
        }
        for f in self.files.iter().rev() {
            if let Err(e) = std::fs::remove_file(f) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    cli::warn(format!("could not remove {}: {e}", f.display()));
                }
            }
        }
    }
}

/// Stops between steps when Ctrl-C or SIGTERM came; the undo log then
/// removes what was made.
pub fn not_interrupted() -> Result<()> {
    match cli::interrupted() {
        Some(_) => Err(cli::interrupted_error(
            "the VM was not made; what was made of it is removed",
        )),
        None => Ok(()),
    }
}

/// Creates `path` new, 0600 (it will hold VM data); an existing file is
/// refused, never replaced.
pub fn create_new(path: &Path, undo: &mut Undo) -> Result<std::fs::File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::new(
                Code::InvalidState,
                format!("{} already exists: hv never overwrites a file; remove it or choose another name", path.display()),
            ),
            _ => Error::io(format!("cannot create {}", path.display()), e),
        })?;
    undo.files.push(path.to_path_buf());
    Ok(file)
}

impl Undo {
    /// The domain was defined: undefined again (with its NVRAM and TPM
    /// state) unless the run is kept.
    pub fn defined(&mut self, dom: &Domain) {
        self.domain = Some(dom.clone());
    }

    /// A file this run made by other means than [`create_new`].
    pub fn made(&mut self, path: &Path) {
        self.files.push(path.to_path_buf());
    }

    /// A volume this run made on a host through its libvirt.
    pub fn made_volume(&mut self, vol: &virt::storage_vol::StorageVol) {
        self.volumes.push(vol.clone());
    }
}

pub fn absolute(path: &Path) -> Result<String> {
    std::fs::canonicalize(path)
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(|e| Error::io(format!("cannot use {}", path.display()), e))
}

/// qcow2 images start with `QFI\xfb`; anything else is read as raw.
pub fn image_format(path: &str) -> Result<&'static str> {
    let mut magic = [0u8; 4];
    let mut f =
        std::fs::File::open(path).map_err(|e| Error::io(format!("cannot read {path}"), e))?;
    let n = std::io::Read::read(&mut f, &mut magic)
        .map_err(|e| Error::io(format!("cannot read {path}"), e))?;
    Ok(if n == 4 && &magic == b"QFI\xfb" {
        "qcow2"
    } else {
        "raw"
    })
}

pub fn virtual_size(path: &str, format: &str) -> Result<u64> {
    let out = cli::child_command("qemu-img")
        .args(["info", "--output=json", "-f", format, path])
        .output()
        .map_err(|e| Error::io("cannot run qemu-img (Debian's qemu-utils)", e))?;
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    info.get("virtual-size")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| {
            Error::new(
                Code::Io,
                format!(
                    "qemu-img cannot read {path}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            )
        })
}

pub fn qemu_img(args: &[&str]) -> Result<()> {
    let out = cli::child_command("qemu-img")
        .args(args)
        .output()
        .map_err(|e| Error::io("cannot run qemu-img (install Debian's qemu-utils)", e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::new(
        Code::Io,
        format!(
            "qemu-img {} failed: {}",
            args[0],
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    ))
}

/// A random (version 4) UUID, chosen by hv so a dry run can show it and
/// a failed run can name what it removes.
pub fn new_uuid() -> Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Error::io("cannot read /dev/urandom", e))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = crate::output::hex(&b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}
