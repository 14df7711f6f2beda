//! Making one VM, all or nothing: every file is created new (never over
//! an existing one) and written down as it is made; the domain is defined
//! last. A failure at any step, or Ctrl-C or SIGTERM between steps,
//! removes what this run made in reverse order, so nothing is left that a
//! second run would trip over or a user would have to find.

use crate::xml::{self, DiskFile, Layout};
use hv_common::profile::{CloudInit, DiskFormat, Place, PlannedDisk, Profile};
use hv_common::{cli, Code, Error, Result};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
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

/// What this run made, undone in reverse unless [`Undo::keep`] is called.
pub struct Undo {
    files: Vec<PathBuf>,
    domain: Option<Domain>,
}

impl Undo {
    pub fn new() -> Undo {
        Undo {
            files: Vec::new(),
            domain: None,
        }
    }

    /// The run worked: what it made stays.
    pub fn keep(mut self) {
        self.files.clear();
        self.domain = None;
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if let Some(dom) = self.domain.take() {
            let _ = dom.destroy();
            let flags = virt::sys::VIR_DOMAIN_UNDEFINE_NVRAM
                | virt::sys::VIR_DOMAIN_UNDEFINE_TPM
                | virt::sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                | virt::sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                | virt::sys::VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA;
            if let Err(e) = dom.undefine_flags(flags) {
                cli::warn(format!(
                    "could not undefine the half-made VM: {e}; remove it with hv-rm"
                ));
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
fn not_interrupted() -> Result<()> {
    match cli::interrupted() {
        Some(_) => Err(cli::interrupted_error(
            "the VM was not made; what was made of it is removed",
        )),
        None => Ok(()),
    }
}

/// Creates `path` new, 0600 (it will hold VM data); an existing file is
/// refused, never replaced.
fn create_new(path: &Path, undo: &mut Undo) -> Result<std::fs::File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::new(
                Code::InvalidState,
                format!("{} already exists: hv-define never overwrites a file; remove it or choose another name", path.display()),
            ),
            _ => Error::io(format!("cannot create {}", path.display()), e),
        })?;
    undo.files.push(path.to_path_buf());
    Ok(file)
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
        write_seed(seed, ci, &p.name, uuid)?;
    }
    for name in &plan.pools {
        if let Ok(pool) = conn.lookup_storage_pool_by_name(name) {
            let _ = pool.refresh(0);
        }
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
    undo.domain = Some(dom.clone());
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
            qemu_img(&["convert", "-q", "-f", src, "-O", fmt, &from, &path])?;
            match &size {
                Some(s) if want.size > Some(virtual_size(&from, src)?) => {
                    qemu_img(&["resize", "-q", "-f", fmt, &path, s])
                }
                _ => Ok(()),
            }
        }
    }
}

fn absolute(path: &Path) -> Result<String> {
    std::fs::canonicalize(path)
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(|e| Error::io(format!("cannot use {}", path.display()), e))
}

/// qcow2 images start with `QFI\xfb`; anything else is read as raw.
fn image_format(path: &str) -> Result<&'static str> {
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

fn virtual_size(path: &str, format: &str) -> Result<u64> {
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

fn qemu_img(args: &[&str]) -> Result<()> {
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

/// The NoCloud seed: an ISO 9660 volume labelled `cidata` holding
/// meta-data, user-data and network-config, as cloud-init looks for it.
/// xorriso writes it (what virt-install and cloud-localds use).
fn write_seed(seed: &Path, ci: &CloudInit, vm: &str, uuid: &str) -> Result<()> {
    let files = seed_files(ci, vm, uuid);
    let tmp = seed.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::create_dir(&tmp)
        .map_err(|e| Error::io(format!("cannot create {}", tmp.display()), e))?;
    let result = (|| {
        for (name, body) in &files {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(tmp.join(name))
                .map_err(|e| Error::io(format!("cannot write {name} in {}", tmp.display()), e))?;
            f.write_all(body.as_bytes())
                .map_err(|e| Error::io(format!("cannot write {name} in {}", tmp.display()), e))?;
        }
        let out = cli::child_command("xorriso")
            .args(["-as", "mkisofs", "-quiet", "-output"])
            .arg(seed)
            .args(["-volid", "cidata", "-joliet", "-rock"])
            .arg(&tmp)
            .output()
            .map_err(|e| Error::io("cannot run xorriso, which writes the cloud-init seed (apt-get install xorriso)", e))?;
        if !out.status.success() {
            return Err(Error::new(
                Code::Io,
                format!(
                    "xorriso could not write the cloud-init seed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// meta-data, user-data and (when given) network-config. YAML values are
/// written as JSON strings, which YAML reads as they are.
pub fn seed_files(ci: &CloudInit, vm: &str, uuid: &str) -> Vec<(&'static str, String)> {
    let q = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let hostname = ci.hostname.clone().unwrap_or_else(|| hostname_from(vm));
    let mut meta = format!("instance-id: {uuid}\nlocal-hostname: {hostname}\n");
    if !ci.ssh_authorized_keys.is_empty() {
        meta += "public-keys:\n";
        for k in &ci.ssh_authorized_keys {
            meta += &format!("  - {}\n", q(k));
        }
    }
    let user = match &ci.user_data {
        Some(u) => u.clone(),
        None => {
            let mut u = format!("#cloud-config\nhostname: {hostname}\n");
            if !ci.ssh_authorized_keys.is_empty() {
                u += "ssh_authorized_keys:\n";
                for k in &ci.ssh_authorized_keys {
                    u += &format!("  - {}\n", q(k));
                }
            }
            u
        }
    };
    let mut files = vec![("meta-data", meta), ("user-data", user)];
    match &ci.network_config {
        Some(serde_json::Value::String(s)) => files.push(("network-config", s.clone())),
        Some(v) => files.push(("network-config", v.to_string())),
        None => {}
    }
    files
}

/// A host name from a VM name: letters, digits and '-', at most 63.
pub fn hostname_from(vm: &str) -> String {
    let h: String = vm
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let h = h.trim_matches('-');
    let h: String = h.chars().take(63).collect();
    if h.is_empty() {
        "vm".to_owned()
    } else {
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_says_the_hostname_and_keys() {
        let ci = CloudInit {
            hostname: None,
            ssh_authorized_keys: vec!["ssh-ed25519 AAAA a\"b".into()],
            user_data: None,
            network_config: Some(serde_json::json!({"version": 2})),
        };
        let files = seed_files(&ci, "Web 1 ü", "u-1");
        assert_eq!(files[0].1, "instance-id: u-1\nlocal-hostname: web-1\npublic-keys:\n  - \"ssh-ed25519 AAAA a\\\"b\"\n");
        assert!(files[1]
            .1
            .starts_with("#cloud-config\nhostname: web-1\nssh_authorized_keys:\n"));
        assert_eq!(files[2], ("network-config", "{\"version\":2}".to_owned()));
    }
}
