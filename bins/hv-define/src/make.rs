//! Making one VM from its profile: where its files go, then the files and
//! the domain, each step written into hv_common::making's undo log so a
//! failure at any step, or Ctrl-C or SIGTERM between steps, leaves nothing.

use crate::xml::{self, DiskFile, Layout};
use hv_common::making::{
    absolute, create_new, image_format, not_interrupted, qemu_img, seed, virtual_size, Undo,
};
use hv_common::profile::{DiskFormat, Place, PlannedDisk, Profile};
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
}

/// Resolves every place to a directory and names the files:
/// `NAME.qcow2` (or `.img` for raw), `NAME-1.qcow2` for the next disk,
/// `NAME-cidata.iso` for the seed, beside the first disk. A name cannot
/// leave its directory: profiles refuse '/' in names.
pub fn plan(conn: &Connect, p: &Profile, iso: Option<PathBuf>) -> Result<Plan> {
    let mut pools = Vec::new();
    let mut dir_of = |place: &Place| -> Result<PathBuf> {
        match place {
            Place::Dir(d) => Ok(d.clone()),
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
    Ok(Plan {
        layout: Layout { disks, iso, seed },
        disks: planned,
        pools,
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
) -> Result<Domain> {
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
