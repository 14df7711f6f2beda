//! Making one VM from its profile: where its files go, then the files and
//! the domain, each step written into hv_common::making's undo log so a
//! failure at any step, or Ctrl-C or SIGTERM between steps, leaves nothing.
//! On another host the files are volumes of its pools, made by its libvirt
//! (qemu-img there) and written through libvirt's streams (the seed, the
//! ISO), since hv has no shell there.

use crate::xml::{self, DiskFile, Layout};
use hv_common::making::{
    absolute, create_new, image_format, not_interrupted, qemu_img, seed, virtual_size, Undo,
};
use hv_common::profile::{DiskFormat, Place, PlannedDisk, Profile};
use hv_common::storage::{self, Machine};
use hv_common::{Code, Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use virt::connect::Connect;
use virt::domain::Domain;

/// Where a VM's files go, resolved from pools and directories.
pub struct Plan {
    pub layout: Layout,
    /// The disks as the profile asked for them, in the layout's order.
    pub disks: Vec<PlannedDisk>,
    /// Pools whose directory gains files (refreshed after, so
    /// `virsh vol-list` shows them).
    pub pools: Vec<String>,
    /// On another host: the ISO of this machine's library that goes into
    /// the host's pool as the volume `layout.iso` names.
    pub upload_iso: Option<PathBuf>,
}

/// Resolves every place to a directory and names the files:
/// `NAME.qcow2` (or `.img` for raw), `NAME-1.qcow2` for the next disk,
/// `NAME-cidata.iso` for the seed, beside the first disk. A name cannot
/// leave its directory: profiles refuse '/' in names.
pub fn plan(conn: &Connect, p: &Profile, iso: Option<PathBuf>, machine: Machine) -> Result<Plan> {
    let mut pools = Vec::new();
    let mut dir_of = |place: &Place| -> Result<PathBuf> {
        match place {
            // On another host a directory must be a pool's: its files are
            // that pool's volumes.
            Place::Dir(d) => match machine {
                Machine::This => Ok(d.clone()),
                Machine::Other(host) => match storage::pool_of_dir(conn, d) {
                    Some(_) => Ok(d.clone()),
                    None => Err(Error::new(Code::Unsupported, format!("{} on {host} is no storage pool's directory: on another host hv-define makes disks as volumes of a pool; give \"pool\"", d.display()))),
                },
            },
            Place::Pool(name) => {
                let dir = pool_dir(conn, name)?;
                if !pools.contains(name) {
                    pools.push(name.clone());
                }
                Ok(dir)
            }
        }
    };
    let planned = p.planned_disks();
    let mut disks = Vec::new();
    for (i, d) in planned.iter().enumerate() {
        let dir = dir_of(&d.place)?;
        let ext = match d.format {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "img",
        };
        let file = match i {
            0 => format!("{}.{ext}", p.name),
            i => format!("{}-{i}.{ext}", p.name),
        };
        disks.push(DiskFile {
            path: dir.join(file),
            format: d.format,
            bus: d.bus,
        });
    }
    let seed = match &p.cloud_init {
        None => None,
        Some(_) => {
            let dir = match disks.first() {
                Some(d) => d.path.parent().map(Path::to_path_buf).unwrap_or_default(),
                None => dir_of(&p.place())?,
            };
            Some(dir.join(format!("{}-cidata.iso", p.name)))
        }
    };
    // On another host the ISO is a volume beside the first disk, under its
    // own file name (uploaded from the library once, then shared).
    let (iso, upload_iso) = match (machine, iso) {
        (Machine::Other(_), Some(local)) => {
            let dir = match disks.first() {
                Some(d) => d.path.parent().map(Path::to_path_buf).unwrap_or_default(),
                None => dir_of(&p.place())?,
            };
            let name = local.file_name().map(PathBuf::from).unwrap_or_default();
            (Some(dir.join(name)), Some(local))
        }
        (_, iso) => (iso, None),
    };
    Ok(Plan {
        layout: Layout { disks, iso, seed },
        disks: planned,
        pools,
        upload_iso,
    })
}

/// The directory of a pool whose volumes are files (types dir, fs, netfs).
fn pool_dir(conn: &Connect, name: &str) -> Result<PathBuf> {
    let pool = conn.lookup_storage_pool_by_name(name).map_err(|e| {
        Error::libvirt(
            format!("no storage pool {name} (virsh pool-list --all lists them; or give \"dir\")"),
            &e,
        )
    })?;
    let xml = pool
        .xml_desc(0)
        .map_err(|e| Error::libvirt(format!("cannot read pool {name}"), &e))?;
    let doc = roxmltree::Document::parse(&xml)
        .map_err(|e| Error::new(Code::Libvirt, format!("pool {name}: unreadable XML: {e}")))?;
    let kind = doc.root_element().attribute("type").unwrap_or("");
    if !matches!(kind, "dir" | "fs" | "netfs") {
        return Err(Error::new(
            Code::Unsupported,
            format!("pool {name} is of type {kind}: hv-define puts disks in pools of files (dir, fs, netfs); give another pool or a \"dir\""),
        ));
    }
    doc.descendants()
        .find(|n| n.has_tag_name("target"))
        .and_then(|t| t.children().find(|c| c.has_tag_name("path")))
        .and_then(|p| p.text())
        .map(PathBuf::from)
        .ok_or_else(|| Error::new(Code::Libvirt, format!("pool {name} has no target path")))
}

/// Makes the files and defines the domain; on success the undo log is
/// kept by the caller.
pub fn make(
    conn: &Connect,
    p: &Profile,
    uuid: &str,
    plan: &Plan,
    undo: &mut Undo,
    machine: Machine,
) -> Result<Domain> {
    match machine {
        Machine::This => {
            for (file, want) in plan.layout.disks.iter().zip(&plan.disks) {
                not_interrupted()?;
                let f = create_new(&file.path, undo)?;
                disk(f, file, want)?;
            }
            if let (Some(seed), Some(ci)) = (&plan.layout.seed, &p.cloud_init) {
                not_interrupted()?;
                create_new(seed, undo)?;
                seed::write(seed, &seed::files(ci, &p.name, uuid))?;
            }
        }
        Machine::Other(host) => remote_files(conn, p, uuid, plan, undo, host)?,
    }
    not_interrupted()?;
    let xml = xml::domain(p, uuid, &plan.layout);
    let dom = conn
        .define_domain_xml_flags(&xml, virt::sys::VIR_DOMAIN_DEFINE_VALIDATE)
        .map_err(|e| {
            Error::libvirt_needing(
                "libvirt refused the definition",
                &e,
                &["domain.write", "domain.save"],
            )
        })?;
    undo.defined(&dom);
    for name in &plan.pools {
        if let Ok(pool) = conn.lookup_storage_pool_by_name(name) {
            let _ = pool.refresh(0);
        }
    }

    if p.autostart {
        dom.set_autostart(true)
            .map_err(|e| Error::libvirt("libvirt refused to set autostart", &e))?;
    }
    not_interrupted()?;
    Ok(dom)
}

/// The files of a VM on another host, as volumes of its pools: each disk
/// (empty, a copy of a volume there, or an overlay on one), the seed
/// (written here, then uploaded) and the ISO (uploaded once from this
/// machine's library). Each volume made goes into the undo log.
fn remote_files(
    conn: &Connect,
    p: &Profile,
    uuid: &str,
    plan: &Plan,
    undo: &mut Undo,
    host: &str,
) -> Result<()> {
    for (file, want) in plan.layout.disks.iter().zip(&plan.disks) {
        not_interrupted()?;
        let pool = storage::pool_at(conn, &file.path, host)?;
        let name = storage::file_name(&file.path);
        let fmt = file.format.as_str();
        let source = |from: &Path| {
            conn.lookup_storage_vol_by_path(&from.to_string_lossy())
                .map_err(|e| {
                    Error::libvirt(
                        format!("no storage pool of {host} has {}", from.display()),
                        &e,
                    )
                })
        };
        let vol = match (&want.from, want.linked) {
            (None, _) => storage::create_volume(&pool, &name, fmt, want.size.unwrap_or(0), None)?,
            (Some(from), true) => {
                let base = source(from)?;
                let base_fmt = storage::volume_format(&base).unwrap_or_else(|| "raw".into());
                let capacity = match want.size {
                    Some(s) => s,
                    None => base.info().map(|i| i.capacity).unwrap_or(0),
                };
                let backing = (from.to_str().unwrap_or_default(), base_fmt.as_str());
                storage::create_volume(&pool, &name, "qcow2", capacity, Some(backing))?
            }
            (Some(from), false) => {
                let src = source(from)?;
                let image = src.info().map(|i| i.capacity).unwrap_or(0);
                if let Some(size) = want.size.filter(|s| *s < image) {
                    return Err(Error::new(
                        Code::Usage,
                        format!("a {size}-byte disk cannot hold {}, a {image}-byte image: give no size, or one of at least {image} bytes", from.display()),
                    ));
                }
                let vol = storage::copy_volume(&pool, &name, fmt, &src)?;
                undo.made_volume(&vol);
                if let Some(size) = want.size.filter(|s| *s > image) {
                    vol.resize(size, 0)
                        .map_err(|e| Error::libvirt(format!("cannot grow {name}"), &e))?;
                }
                continue;
            }
        };
        undo.made_volume(&vol);
    }
    if let (Some(seed), Some(ci)) = (&plan.layout.seed, &p.cloud_init) {
        not_interrupted()?;
        // Written here (xorriso), then sent: the host needs no tool of hv's.
        let local = std::env::temp_dir().join(format!(
            "hv-define-{}-{uuid}-cidata.iso",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&local);
        let sent = (|| {
            seed::write(&local, &seed::files(ci, &p.name, uuid))?;
            let pool = storage::pool_at(conn, seed, host)?;
            let vol = storage::put_file(conn, &pool, &storage::file_name(seed), &local)?;
            undo.made_volume(&vol);
            Ok(())
        })();
        let _ = std::fs::remove_file(&local);
        sent?;
    }
    if let (Some(there), Some(local)) = (&plan.layout.iso, &plan.upload_iso) {
        not_interrupted()?;
        upload_iso(conn, local, there, host)?;
    }
    Ok(())
}

/// Puts this machine's ISO `local` on another host as the volume `there`,
/// shared by the VMs that install from it. It is reused only when a
/// marker volume beside it (`NAME.hv-sha256`, written after an upload
/// finished) holds the SHA-256 hv-iso proved the image by: a volume a
/// killed or concurrent run left half-written has no marker, and another
/// file of that name has another hash. An upload that finished is shared
/// media from then on, kept even if this VM is not made. An image without
/// a proof (--allow-unverified-iso) is never reused.
fn upload_iso(conn: &Connect, local: &Path, there: &Path, host: &str) -> Result<()> {
    let shown = there.display();
    let proven = local
        .parent()
        .zip(local.file_name().and_then(|n| n.to_str()))
        .and_then(|(dir, name)| {
            hv_common::iso_library::Library::new(dir.to_path_buf())
                .get(name)
                .ok()
                .flatten()
        })
        .map(|entry| entry.sidecar.sha256);
    let marker = there.with_file_name(format!("{}.hv-sha256", storage::file_name(there)));
    let marked = || -> Option<String> {
        let vol = conn
            .lookup_storage_vol_by_path(&marker.to_string_lossy())
            .ok()?;
        let tmp = std::env::temp_dir().join(format!("hv-define-{}-marker", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let read = storage::download(conn, &vol, &tmp)
            .ok()
            .and_then(|()| std::fs::read_to_string(&tmp).ok());
        let _ = std::fs::remove_file(&tmp);
        read.map(|t| t.trim().to_owned())
    };
    if conn
        .lookup_storage_vol_by_path(&there.to_string_lossy())
        .is_ok()
    {
        return match (&proven, marked()) {
            (Some(sha), Some(m)) if *sha == m => Ok(()),
            _ => Err(Error::new(
                Code::InvalidState,
                format!("{shown} on {host} is not proven to be {}: it has no finished upload's marker, or another image's (a run killed while uploading, or one uploading now, or another file of that name); remove it there (virsh vol-delete) and define again", local.display()),
            )),
        };
    }
    let pool = storage::pool_at(conn, there, host)?;
    let vol = storage::put_file(conn, &pool, &storage::file_name(there), local)?;
    // The marker last: only a finished upload has one.
    let sent = match &proven {
        None => Ok(()),
        Some(sha) => {
            let tmp = std::env::temp_dir().join(format!("hv-define-{}-sha", std::process::id()));
            let m = std::fs::write(&tmp, format!("{sha}\n"))
                .map_err(|e| Error::io(format!("cannot write {}", tmp.display()), e))
                .and_then(|()| storage::put_file(conn, &pool, &storage::file_name(&marker), &tmp));
            let _ = std::fs::remove_file(&tmp);
            m.map(|_| ())
        }
    };
    if let Err(e) = sent {
        let _ = vol.delete(0);
        return Err(e);
    }
    Ok(())
}

/// One disk: empty, a copy of `from`, or an overlay backed by it.
fn disk(mut f: std::fs::File, file: &DiskFile, want: &PlannedDisk) -> Result<()> {
    let path = file.path.to_string_lossy();
    let fmt = file.format.as_str();
    let size = want.size.map(|s| s.to_string());
    match (&want.from, want.linked) {
        (None, _) => match file.format {
            // A raw disk is a sparse file of its size: no qemu-img needed.
            DiskFormat::Raw => f
                .set_len(want.size.unwrap_or(0))
                .and_then(|()| f.flush())
                .map_err(|e| Error::io(format!("cannot size {path}"), e)),
            DiskFormat::Qcow2 => qemu_img(&[
                "create",
                "-q",
                "-f",
                fmt,
                &path,
                size.as_deref().unwrap_or("0"),
            ]),
        },
        (Some(from), true) => {
            let from = absolute(from)?;
            let base = image_format(&from)?;
            let mut args = vec![
                "create", "-q", "-f", "qcow2", "-b", &from, "-F", base, &path,
            ];
            args.extend(size.as_deref());
            qemu_img(&args)
        }
        (Some(from), false) => {
            let from = absolute(from)?;
            let src = image_format(&from)?;
            let image = virtual_size(&from, src)?;
            if let Some(size) = want.size.filter(|s| *s < image) {
                return Err(Error::new(
                    Code::Usage,
                    format!("a {size}-byte disk cannot hold {from}, a {image}-byte image: give no size, or one of at least {image} bytes"),
                ));
            }
            qemu_img(&["convert", "-q", "-f", src, "-O", fmt, &from, &path])?;
            match &size {
                Some(s) if want.size > Some(image) => {
                    qemu_img(&["resize", "-q", "-f", fmt, &path, s])
                }
                _ => Ok(()),
            }
        }
    }
}
