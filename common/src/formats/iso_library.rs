//! The library is a plain directory that libvirt can point a cdrom at:
//! `NAME` is the image, `NAME.json` its sidecar (how it was proven), and
//! dot-files are work in progress. An entry exists when both are there;
//! the sidecar is written before the image is renamed into place, so a
//! killed run never leaves an image that looks admitted but was not.
//! It lives in hv-common because hv-metrics and the checks read sidecars too.

use crate::{Code, Error, Result};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

pub const SIDECAR_FORMAT: u32 = 1;

/// How an image was proven; `verified_by` says which of the fields are set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sidecar {
    pub format: u32,
    pub name: String,
    pub size_bytes: u64,
    pub sha256: String,
    /// The URL or path it was added from.
    pub source: String,
    /// `signature`, `checksums` (unsigned), `sha256` (given by hand) or `none`.
    pub verified_by: String,
    pub unsigned: bool,
    pub checksums: Option<String>,
    /// The checksum file's entry the image matched: algorithm and hex.
    pub checksum: Option<Checksum>,
    pub signature: Option<String>,
    pub keyring: Option<String>,
    /// The signing key's primary fingerprint.
    pub signer: Option<String>,
    pub verified_at: String,
    /// The last `hv-iso verify`: when, and whether the image still matched.
    #[serde(default)]
    pub checked_at: Option<String>,
    #[serde(default)]
    pub check_ok: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checksum {
    pub algorithm: String,
    pub digest: String,
}

pub struct Library {
    pub root: PathBuf,
}

/// An admitted image: its sidecar and where it lives.
pub struct Entry {
    pub sidecar: Sidecar,
    pub path: PathBuf,
}

impl Library {
    pub fn new(root: PathBuf) -> Library {
        Library { root }
    }

    pub fn image(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn sidecar_path(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.json"))
    }

    pub fn partial(&self, name: &str) -> PathBuf {
        self.root.join(format!(".{name}.part"))
    }

    pub fn resume_state(&self, name: &str) -> PathBuf {
        self.root.join(format!(".{name}.part.json"))
    }

    /// Creates the directory (0755: libvirt's QEMU user reads the images).
    pub fn create(&self) -> Result<()> {
        fs::create_dir_all(&self.root).map_err(|e| Error::io(self.root.display(), e))
    }

    /// The entry called `name`, if admitted; Err if its sidecar is damaged.
    pub fn get(&self, name: &str) -> Result<Option<Entry>> {
        let sidecar_path = self.sidecar_path(name);
        let text = match fs::read(&sidecar_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(sidecar_path.display(), e)),
        };
        let sidecar: Sidecar = serde_json::from_slice(&text).map_err(|e| {
            Error::new(
                Code::Corrupt,
                format!(
                    "{}: not an hv-iso sidecar ({e}); hv-iso rm {name:?} and add it again",
                    sidecar_path.display()
                ),
            )
        })?;
        if sidecar.name != name {
            return Err(Error::new(
                Code::Corrupt,
                format!(
                    "{}: it names {:?}, not {name:?}; hv-iso rm {name:?} and add it again",
                    sidecar_path.display(),
                    sidecar.name
                ),
            ));
        }
        Ok(Some(Entry {
            sidecar,
            path: self.image(name),
        }))
    }

    /// Names of every entry (sidecars present), sorted; a missing library
    /// is an empty one.
    pub fn names(&self) -> Result<Vec<String>> {
        let dir = match fs::read_dir(&self.root) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(self.root.display(), e)),
        };
        let mut names: Vec<String> = dir
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .filter_map(|n| n.strip_suffix(".json").map(str::to_owned))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Writes the sidecar through a dot-file and a rename.
    pub fn write_sidecar(&self, sidecar: &Sidecar) -> Result<()> {
        let path = self.sidecar_path(&sidecar.name);
        let mut text = serde_json::to_vec_pretty(sidecar).expect("a sidecar serializes");
        text.push(b'\n');
        crate::fsutil::write_atomic(&path, &text, 0o644).map_err(|e| Error::io(path.display(), e))
    }

    pub fn sync_dir(&self) -> Result<()> {
        File::open(&self.root)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(self.root.display(), e))
    }
}

/// A library name is a file name: no path, no dot-file (those are work in
/// progress), nothing that collides with a sidecar.
pub fn check_name(name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::usage(format!(
            "{name:?} cannot be a library name: {why}; choose another with --name"
        )))
    };
    if name.is_empty() || name == "." || name == ".." {
        return bad("it is empty");
    }
    if name.contains('/') || name.contains('\0') {
        return bad("it contains '/'");
    }
    if name.starts_with('.') {
        return bad("names starting with '.' are hv-iso's work files");
    }
    if name.ends_with(".json") {
        return bad("names ending in .json are hv-iso's sidecars");
    }
    if name.chars().any(char::is_control) {
        return bad("it contains a control character");
    }
    if name.len() > 200 {
        return bad("it is longer than 200 bytes");
    }
    Ok(())
}

pub fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_or_collide_are_refused() {
        for bad in ["", "..", "a/b", ".hidden.iso", "x.iso.json", "a\nb"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in [
            "debian-13.1.0-amd64-netinst.iso",
            "Fedora Workstation 41.iso",
            "Ünïcode.iso",
        ] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }
}
