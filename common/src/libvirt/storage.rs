//! A host's files as its libvirt sees them. On this machine hv can look at
//! a path itself; on another host it cannot, but that host's libvirtd can:
//! a file in one of its storage pools is a volume it can find by path, and
//! the pool says how much room is left. What no pool covers is unknown,
//! never guessed from this machine's file of the same path. Files hv makes
//! on another host (hv-define's disks and seeds) are made the same way: as
//! volumes of its pools, written through libvirt's streams.

use crate::{Code, Error, Result};
use std::io::Read;
use std::path::Path;
use virt::connect::Connect;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;

/// Which machine a command's files are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine<'a> {
    /// This machine: hv looks at and writes paths itself.
    This,
    /// Another host, by name: its files are seen and made through its
    /// libvirt's storage pools only.
    Other(&'a str),
}

impl Machine<'_> {
    /// The machine a connection's URI is on: another host when it names
    /// one (`qemu+ssh://h1/system`), called `name`.
    pub fn of<'a>(uri: Option<&str>, name: &'a str) -> Machine<'a> {
        match uri.is_some_and(crate::hosts::is_remote) {
            true => Machine::Other(name),
            false => Machine::This,
        }
    }
}

/// Whether a file is on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    There,
    /// Not among the volumes of the pool whose directory it is in (as of
    /// the pool's last refresh, named here).
    Missing {
        pool: String,
    },
    /// No pool covers its directory: the host's libvirt cannot tell.
    Unknown,
}

/// Whether `path` exists on the host `conn` is connected to, through its
/// storage pools.
pub fn file(conn: &Connect, path: &str) -> Seen {
    if conn.lookup_storage_vol_by_path(path).is_ok() {
        return Seen::There;
    }
    match Path::new(path)
        .parent()
        .and_then(|dir| pool_of_dir(conn, dir))
    {
        Some(pool) => Seen::Missing { pool: pool.name },
        None => Seen::Unknown,
    }
}

/// An active pool of files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpace {
    pub name: String,
    pub capacity: u64,
    pub available: u64,
}

/// The active pool whose directory is `dir` (its target path), with its
/// size and free bytes.
pub fn pool_of_dir(conn: &Connect, dir: &Path) -> Option<PoolSpace> {
    let pools = conn
        .list_all_storage_pools(virt::sys::VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
        .ok()?;
    pools.into_iter().find_map(|pool| {
        let xml = pool.xml_desc(0).ok()?;
        (target_path(&xml)? == normal(dir)?).then_some(())?;
        let info = pool.info().ok()?;
        Some(PoolSpace {
            name: pool.name().ok()?,
            capacity: info.capacity,
            available: info.available,
        })
    })
}

/// A pool's `<target><path>`, without a trailing slash.
pub fn target_path(pool_xml: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(pool_xml).ok()?;
    let path = doc
        .root_element()
        .children()
        .find(|n| n.has_tag_name("target"))?
        .children()
        .find(|n| n.has_tag_name("path"))?
        .text()?
        .trim();
    Some(match path.trim_end_matches('/') {
        "" => "/".to_owned(),
        p => p.to_owned(),
    })
}

/// The active pool `name`, for making volumes in.
pub fn pool(conn: &Connect, name: &str) -> Result<StoragePool> {
    conn.lookup_storage_pool_by_name(name).map_err(|e| {
        Error::libvirt(
            format!("no storage pool {name} (virsh pool-list --all lists them)"),
            &e,
        )
    })
}

/// The pool a new file at `path` on another host (`host`) goes into: the
/// one whose directory holds it.
pub fn pool_at(conn: &Connect, path: &Path, host: &str) -> Result<StoragePool> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let found = pool_of_dir(conn, dir).ok_or_else(|| {
        Error::new(
            Code::Unsupported,
            format!(
                "no storage pool of {host} has the directory {}: on another host files are made as volumes of a pool",
                dir.display()
            ),
        )
    })?;
    pool(conn, &found.name)
}

/// A new volume `name` in `pool`: `format` (qcow2, raw) of `capacity`
/// bytes, or an overlay on `backing` (its path and format). An existing
/// volume of that name is refused by libvirt, never replaced.
pub fn create_volume(
    pool: &StoragePool,
    name: &str,
    format: &str,
    capacity: u64,
    backing: Option<(&str, &str)>,
) -> Result<StorageVol> {
    let backing = backing
        .map(|(path, format)| {
            format!(
                "<backingStore><path>{}</path><format type='{}'/></backingStore>",
                xml_text(path),
                xml_text(format)
            )
        })
        .unwrap_or_default();
    let xml = format!(
        "<volume><name>{}</name><capacity unit='bytes'>{capacity}</capacity>\
         <allocation unit='bytes'>0</allocation><target><format type='{}'/>\
         <permissions><mode>0600</mode></permissions></target>{backing}</volume>",
        xml_text(name),
        xml_text(format)
    );
    StorageVol::create_xml(pool, &xml, 0)
        .map_err(|e| Error::libvirt(format!("cannot create volume {name}"), &e))
}

/// A new volume `name` in `pool`, a copy of `from` in `format`, made by
/// the host's libvirt (qemu-img there).
pub fn copy_volume(
    pool: &StoragePool,
    name: &str,
    format: &str,
    from: &StorageVol,
) -> Result<StorageVol> {
    let capacity = from.info().map(|i| i.capacity).unwrap_or(0);
    let xml = format!(
        "<volume><name>{}</name><capacity unit='bytes'>{capacity}</capacity>\
         <target><format type='{}'/><permissions><mode>0600</mode></permissions></target></volume>",
        xml_text(name),
        xml_text(format)
    );
    StorageVol::create_xml_from(pool, &xml, from, 0)
        .map_err(|e| Error::libvirt(format!("cannot copy into volume {name}"), &e))
}

/// A new raw volume `name` in `pool` holding the file `local` of this
/// machine (a seed, an ISO), written through a libvirt stream; a volume
/// whose upload failed is deleted again.
pub fn put_file(
    conn: &Connect,
    pool: &StoragePool,
    name: &str,
    local: &Path,
) -> Result<StorageVol> {
    let len = std::fs::metadata(local)
        .map_err(|e| Error::io(format!("cannot read {}", local.display()), e))?
        .len();
    let vol = create_volume(pool, name, "raw", len, None)?;
    match upload(conn, &vol, local) {
        Ok(()) => Ok(vol),
        Err(e) => {
            let _ = vol.delete(0);
            Err(e)
        }
    }
}

/// The last part of a path: the name of the volume a file there is.
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Writes the file `local` (on this machine) into `vol` through a libvirt
/// stream: how a file reaches another host without a shell there.
pub fn upload(conn: &Connect, vol: &StorageVol, local: &Path) -> Result<()> {
    let shown = local.display();
    let mut file =
        std::fs::File::open(local).map_err(|e| Error::io(format!("cannot read {shown}"), e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io(format!("cannot read {shown}"), e))?
        .len();
    let stream = virt::stream::Stream::new(conn, 0)
        .map_err(|e| Error::libvirt("cannot open a stream to the host", &e))?;
    vol.upload(&stream, 0, len, 0)
        .map_err(|e| Error::libvirt(format!("cannot upload {shown}"), &e))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = stream.abort();
                return Err(Error::io(format!("cannot read {shown}"), e));
            }
        };
        let mut sent = 0;
        while sent < n {
            match stream.send(&buf[sent..n]) {
                Ok(k) if k > 0 => sent += k as usize,
                Ok(_) => {
                    let _ = stream.abort();
                    return Err(Error::new(
                        Code::Libvirt,
                        format!("the host stopped taking {shown}"),
                    ));
                }
                Err(e) => {
                    let _ = stream.abort();
                    return Err(Error::libvirt(format!("cannot upload {shown}"), &e));
                }
            }
        }
    }
    stream
        .finish()
        .map_err(|e| Error::libvirt(format!("cannot finish uploading {shown}"), &e))
}

/// A volume's format (`qcow2`, `raw`), from its XML.
pub fn volume_format(vol: &StorageVol) -> Option<String> {
    let xml = vol.xml_desc(0).ok()?;
    let doc = roxmltree::Document::parse(&xml).ok()?;
    let target = doc
        .root_element()
        .children()
        .find(|n| n.has_tag_name("target"))?;
    target
        .children()
        .find(|n| n.has_tag_name("format"))?
        .attribute("type")
        .map(str::to_owned)
}

/// Reads the volume `vol` into the new file `local` (on this machine)
/// through a libvirt stream.
pub fn download(conn: &Connect, vol: &StorageVol, local: &Path) -> Result<()> {
    use std::io::Write;
    let shown = local.display();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(local)
        .map_err(|e| Error::io(format!("cannot create {shown}"), e))?;
    let stream = virt::stream::Stream::new(conn, 0)
        .map_err(|e| Error::libvirt("cannot open a stream to the host", &e))?;
    let name = vol.path().unwrap_or_default();
    vol.download(&stream, 0, 0, 0)
        .map_err(|e| Error::libvirt(format!("cannot download {name}"), &e))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let failed = match stream.recv(&mut buf) {
            Ok(0) => break,
            Ok(n) if n > 0 => match file.write_all(&buf[..n as usize]) {
                Ok(()) => continue,
                Err(e) => Error::io(format!("cannot write {shown}"), e),
            },
            Ok(_) => Error::new(Code::Libvirt, format!("the host stopped sending {name}")),
            Err(e) => Error::libvirt(format!("cannot download {name}"), &e),
        };
        // libvirt wants a stream with a transfer under way aborted.
        let _ = stream.abort();
        return Err(failed);
    }
    stream
        .finish()
        .map_err(|e| Error::libvirt(format!("cannot finish downloading {name}"), &e))
}

/// A directory as a pool's target path says it: no trailing slash.
fn normal(dir: &Path) -> Option<String> {
    let text = dir.to_str()?;
    Some(match text.trim_end_matches('/') {
        "" => "/".to_owned(),
        t => t.to_owned(),
    })
}

fn xml_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pools_directory_is_its_target_path() {
        let xml = "<pool type='dir'><name>images</name><source/>\
            <target><path>/var/lib/libvirt/images/</path></target></pool>";
        assert_eq!(target_path(xml).as_deref(), Some("/var/lib/libvirt/images"));
        assert_eq!(target_path("<pool type='rbd'><name>x</name></pool>"), None);
    }

    #[test]
    fn the_test_driver_pool_covers_its_directory() {
        let conn = Connect::open_read_only(Some("test:///default")).unwrap();
        let pool = pool_of_dir(&conn, Path::new("/default-pool")).expect("test driver's pool");
        assert_eq!(pool.name, "default-pool");
        assert_eq!(
            file(&conn, "/default-pool/nope.img"),
            Seen::Missing {
                pool: "default-pool".into()
            }
        );
        assert_eq!(file(&conn, "/elsewhere/disk.img"), Seen::Unknown);
    }
}
