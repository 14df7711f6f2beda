//! Whether a planned VM can be made here as described, asked before
//! anything is created: hv-preflight reports it, hv-define and hv-clone
//! refuse a VM that fails it. One [`Budget`] counts a batch together, so
//! the tenth VM fails when the nine before it took what was there. Only
//! what a profile gives is checked (a profile without a disk has no
//! storage check).

pub mod budget;

pub use budget::{dir_space, Budget, Fit, Limits};

use crate::checks::{Check, Status, Unit};
use crate::iso_library::{self, Library};
use crate::output::human_bytes;
use crate::profile::{Firmware, Graphics, Place, Profile, VirtType};
use crate::storage::{self, pool_of_dir, Machine, Seen};
use std::collections::HashSet;
use std::path::Path;
use virt::connect::Connect;

/// Every check of one profile, each naming it first. On another host
/// (`machine`), what the profile names by path (images to copy or link, a
/// kernel, a directory) is looked at through that host's storage pools.
pub fn check_profile(
    conn: &Connect,
    iso_library: &Path,
    budget: &mut Budget,
    p: &Profile,
    named: &mut HashSet<String>,
    machine: Machine,
) -> Vec<Check> {
    let who = &p.name;
    let about = |mut c: Check| {
        c.subject.insert(0, ("name", who.clone()));
        c
    };
    let mut out = vec![about(name_free(conn, who, named))];
    if let Some(memory) = p.memory() {
        out.push(about(budget.memory("plan.memory", who, memory)));
    }
    if let Some(vcpus) = p.vcpus {
        out.push(about(budget.vcpus("plan.vcpus", who, u64::from(vcpus))));
    }
    for disk in p.planned_disks() {
        if let Some(from) = &disk.from {
            let refused = match machine {
                Machine::This => source_image(from, disk.size),
                Machine::Other(host) => source_volume(conn, host, from, disk.size),
            };
            if let Some(c) = refused {
                out.push(about(c));
                continue;
            }
        }
        // A copy takes what its source holds, unless a size is given; an
        // overlay starts empty and grows as the guest writes.
        let need = match (disk.size, &disk.from, disk.linked) {
            (Some(size), _, _) => size,
            (None, Some(from), false) => match machine {
                Machine::This => allocated(from),
                Machine::Other(_) => from
                    .to_str()
                    .and_then(|f| conn.lookup_storage_vol_by_path(f).ok())
                    .and_then(|v| v.info().ok())
                    .map_or(0, |i| i.allocation),
            },
            _ => 0,
        };
        if need > 0 {
            let place = match (machine, &disk.place) {
                (Machine::Other(host), Place::Dir(dir)) => match pool_of_dir(conn, dir) {
                    Some(pool) => Place::Pool(pool.name),
                    None => {
                        out.push(about(
                            Check::new("plan.storage", Status::Fail, format!("{} on {host} is no storage pool's directory: on another host disks are made as volumes of a pool", dir.display()))
                                .about("dir", dir.display().to_string())
                                .hint(format!("give \"pool\" (virsh -c URI pool-list on {host}), or define a pool for that directory there")),
                        ));
                        continue;
                    }
                },
                (_, place) => place.clone(),
            };
            out.push(about(storage(conn, budget, &place, need)));
        }
    }
    if let Some(iso) = &p.iso {
        out.push(about(iso_checked(iso_library, iso)));
    }
    for file in [&p.kernel, &p.initrd].into_iter().flatten() {
        if let Machine::Other(host) = machine {
            // A kernel on another host is only seen if a pool holds it.
            let seen = file.to_str().map(|f| storage::file(conn, f));
            if seen != Some(Seen::There) {
                out.push(about(
                    Check::new("plan.boot", Status::Warn, format!("{host}'s libvirt cannot tell whether {} is there: no storage pool lists it", file.display()))
                        .hint(format!("check that the file is on {host} (libvirt says at the first start), or keep kernels in a pool's directory")),
                ));
            }
            continue;
        }
        if !file.is_file() {
            out.push(about(
                Check::new(
                    "plan.boot",
                    Status::Fail,
                    format!("{} does not exist", file.display()),
                )
                .hint("give the path of a kernel or initrd on this host"),
            ));
        }
    }
    if !p.hostdev.is_empty() {
        out.push(about(match machine {
            Machine::This => hostdev(Path::new("/"), &p.hostdev),
            Machine::Other(host) => Check::new("plan.hostdev", Status::Warn, format!("the IOMMU and the devices of {host} are read from its /sys, which hv cannot see from here"))
                .hint(format!("run hv-preflight --profiles on {host} itself")),
        }));
    }
    let virt_type = p.virt_type.unwrap_or(VirtType::Kvm);
    let machine = p.machine.as_deref().unwrap_or("q35");
    let graphics = match p.graphics {
        Some(Graphics::Vnc) => Some("vnc"),
        Some(Graphics::Spice) => Some("spice"),
        _ => None,
    };
    if p.firmware == Some(Firmware::Uefi) || p.tpm || graphics.is_some() {
        let caps = DomainCaps::read(conn, virt_type, machine);
        if let Some(kind) = graphics {
            out.push(about(caps.graphics(kind)));
        }
        if p.firmware == Some(Firmware::Uefi) {
            out.push(about(caps.uefi(p.secure_boot)));
        }
        if p.tpm {
            out.push(about(caps.tpm()));
        }
    }
    out
}

/// Why the volume a disk on another host copies or links cannot be used:
/// no pool of that host has it, or it is larger than the size asked.
fn source_volume(conn: &Connect, host: &str, from: &Path, size: Option<u64>) -> Option<Check> {
    let shown = from.display().to_string();
    let vol = match conn.lookup_storage_vol_by_path(&shown) {
        Ok(vol) => vol,
        Err(_) => {
            return Some(
                Check::new("plan.storage", Status::Fail, format!("no storage pool of {host} has {shown}"))
                    .about("from", shown)
                    .hint(format!("on another host an image to copy or link is a volume of one of its pools: put it in a pool's directory on {host} and refresh the pool (virsh pool-refresh)")),
            )
        }
    };
    let image = vol.info().ok()?.capacity;
    match size {
        Some(size) if size < image => Some(Check::new("plan.storage", Status::Fail, format!("a {} disk cannot hold {shown}, a {} image: a disk does not shrink", human_bytes(size), human_bytes(image)))
            .about("from", shown)
            .measured(Unit::Bytes, size, image)
            .hint("give no size (the disk is as large as the image), or one at least as large as the image")),
        _ => None,
    }
}

/// Bytes a file holds on disk (a sparse image counts what it stores).
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

/// Why the image a disk copies or links cannot be used: it is missing,
/// unreadable, or larger than the size asked.
fn source_image(from: &Path, size: Option<u64>) -> Option<Check> {
    match std::fs::metadata(from) {
        Ok(m) if m.is_file() => {
            let size = size?;
            let shown = from.display().to_string();
            let image = crate::making::image_format(&shown)
                .and_then(|format| crate::making::virtual_size(&shown, format));
            match image {
                Ok(image) if size < image => Some(Check::new("plan.storage", Status::Fail, format!("a {} disk cannot hold {shown}, a {} image: a disk does not shrink", human_bytes(size), human_bytes(image)))
                    .about("from", shown)
                    .measured(Unit::Bytes, size, image)
                    .hint("give no size (the disk is as large as the image), or one at least as large as the image")),
                Ok(_) => None,
                Err(e) => Some(Check::new("plan.storage", Status::Fail, e.message).about("from", shown).hint("give the path of a qcow2 or raw disk image")),
            }
        }
        Ok(_) => Some(
            Check::new(
                "plan.storage",
                Status::Fail,
                format!("{} is not a file", from.display()),
            )
            .about("from", from.display().to_string())
            .hint("give the path of a disk image to copy or link"),
        ),
        Err(e) => Some(
            Check::new(
                "plan.storage",
                Status::Fail,
                format!("cannot read {}: {e}", from.display()),
            )
            .about("from", from.display().to_string())
            .hint("give the path of an existing disk image (hv-ls shows the VMs' disks)"),
        ),
    }
}

/// PCI passthrough: each device exists, and the kernel put it in an
/// IOMMU group (so VT-d or AMD-Vi is on).
pub fn hostdev(root: &Path, addresses: &[String]) -> Check {
    for a in addresses {
        let Some((d, b, s, f)) = crate::profile::pci_address(a) else {
            continue;
        };
        let full = format!("{d:04x}:{b:02x}:{s:02x}.{f:x}");
        let dev = root.join("sys/bus/pci/devices").join(&full);
        if !dev.exists() {
            return Check::new(
                "plan.hostdev",
                Status::Fail,
                format!("no PCI device {full} on this host"),
            )
            .about("device", full)
            .hint("lspci -D lists the host's PCI devices with their addresses");
        }
        if !dev.join("iommu_group").exists() {
            return Check::new("plan.hostdev", Status::Fail, format!("PCI device {full} is in no IOMMU group: the IOMMU is off, so it cannot be passed through"))
                .about("device", full)
                .hint("enable VT-d or AMD-Vi in the firmware setup, add intel_iommu=on (or amd_iommu=on) iommu=pt to the kernel command line and reboot; hv-preflight's host.iommu check tells which");
        }
    }
    Check::new(
        "plan.hostdev",
        Status::Pass,
        format!(
            "{} PCI device(s) exist and are in IOMMU groups",
            addresses.len()
        ),
    )
    .amount(Unit::Count, addresses.len())
}

/// What libvirt says this host can give a VM of this type and machine
/// (`virsh domcapabilities`): firmware and TPM backends.
struct DomainCaps {
    xml: Result<String, String>,
}

impl DomainCaps {
    fn read(conn: &Connect, virt_type: VirtType, machine: &str) -> DomainCaps {
        let kind = virt_type.as_str();
        let xml = conn
            .domain_capabilities(None, Some("x86_64"), Some(machine), Some(kind), 0)
            .map_err(|e| e.to_string());
        DomainCaps { xml }
    }

    /// The values libvirt lists under `<enum name=NAME>` inside `<PARENT>`.
    fn values(&self, parent: &str, name: &str) -> Option<Vec<String>> {
        let xml = self.xml.as_ref().ok()?;
        let doc = roxmltree::Document::parse(xml).ok()?;
        let node = doc.descendants().find(|n| n.has_tag_name(parent))?;
        let e = node
            .descendants()
            .find(|n| n.has_tag_name("enum") && n.attribute("name") == Some(name))?;
        Some(
            e.children()
                .filter(|v| v.has_tag_name("value"))
                .filter_map(|v| v.text().map(str::to_owned))
                .collect(),
        )
    }

    fn unreadable(&self, id: &'static str) -> Option<Check> {
        self.xml.as_ref().err().map(|e| {
            Check::new(id, Status::Fail, format!("libvirt cannot say what this host offers a VM of this type and machine: {e}"))
                .hint("virsh domcapabilities --virttype kvm shows it; check the profile's type and machine")
        })
    }

    fn uefi(&self, secure_boot: bool) -> Check {
        if let Some(c) = self.unreadable("plan.firmware") {
            return c;
        }
        let firmware = self.values("os", "firmware").unwrap_or_default();
        if !firmware.iter().any(|f| f == "efi") {
            return Check::new("plan.firmware", Status::Fail, "no UEFI firmware for QEMU on this host (libvirt lists none)")
                .hint("install OVMF: apt-get install ovmf (Debian, Ubuntu); on NixOS virtualisation.libvirtd.qemu.ovmf.enable");
        }
        if secure_boot {
            let secure = self.values("os", "secure").unwrap_or_default();
            if !secure.is_empty() && !secure.iter().any(|v| v == "yes") {
                return Check::new("plan.firmware", Status::Fail, "the UEFI firmware on this host has no Secure Boot build")
                    .hint("install OVMF with Secure Boot (Debian's ovmf ships OVMF_CODE_4M.secboot.fd), or drop secure_boot");
            }
        }
        Check::new(
            "plan.firmware",
            Status::Pass,
            format!(
                "UEFI firmware is there{}",
                if secure_boot { " with Secure Boot" } else { "" }
            ),
        )
    }

    fn graphics(&self, kind: &str) -> Check {
        if let Some(c) = self.unreadable("plan.graphics") {
            return c;
        }
        let kinds = self.values("graphics", "type").unwrap_or_default();
        if kinds.iter().any(|k| k == kind) {
            return Check::new(
                "plan.graphics",
                Status::Pass,
                format!("QEMU here can show {kind} graphics"),
            );
        }
        let fix = match kind {
            "spice" => "install QEMU's SPICE module (Debian: apt-get install qemu-system-modules-spice), or use \"graphics\": \"vnc\"",
            _ => "install a QEMU built with VNC, or use \"graphics\": \"none\" and the serial console",
        };
        Check::new(
            "plan.graphics",
            Status::Fail,
            format!("QEMU on this host has no {kind} graphics"),
        )
        .hint(fix)
    }

    fn tpm(&self) -> Check {
        if let Some(c) = self.unreadable("plan.tpm") {
            return c;
        }
        let backends = self.values("tpm", "backendModel").unwrap_or_default();
        if backends.iter().any(|b| b == "emulator") {
            Check::new(
                "plan.tpm",
                Status::Pass,
                "an emulated TPM (swtpm) can be given",
            )
        } else {
            Check::new(
                "plan.tpm",
                Status::Fail,
                "libvirt cannot emulate a TPM here: swtpm is missing",
            )
            .hint("install swtpm: apt-get install swtpm swtpm-tools, then restart libvirtd")
        }
    }
}

pub fn name_free(conn: &Connect, name: &str, named: &mut HashSet<String>) -> Check {
    let fail = |message: String, hint: &str| {
        Check::new("plan.name", Status::Fail, message).hint(hint.to_owned())
    };
    if name.contains('/') {
        return fail(
            format!("{name:?} contains '/', which libvirt refuses in a name"),
            "choose a name without '/'",
        );
    }
    if !named.insert(name.to_owned()) {
        return fail(
            format!("{name} is planned twice"),
            "give each profile its own name",
        );
    }
    match conn.lookup_domain_by_name(name) {
        Ok(dom) => fail(
            format!(
                "a VM named {name} already exists (uuid {})",
                dom.uuid_string().unwrap_or_default()
            ),
            &format!("choose another name, or remove the old VM first: hv-rm {name:?}"),
        ),
        Err(e)
            if e.code().unwrap_or(virt::error::ErrorNumber::InternalError)
                == virt::error::ErrorNumber::NoDomain =>
        {
            Check::new("plan.name", Status::Pass, format!("no VM is named {name}"))
        }
        // A lookup that failed for another reason proves nothing.
        Err(e) => Check::new(
            "plan.name",
            Status::Fail,
            format!("cannot tell whether {name} is free: {e}"),
        )
        .hint("check that libvirtd answers (hv-health), then run again"),
    }
}

/// Where the disk goes: a directory, the pool given, or libvirt's usual
/// pool `default`.
pub fn storage(conn: &Connect, budget: &mut Budget, place: &Place, disk: u64) -> Check {
    let (key, label, size, available, subject) = match place {
        Place::Dir(dir) => match dir_space(dir) {
            Ok((key, size, available)) => (key, format!("directory {}", dir.display()), size, available, ("dir", dir.display().to_string())),
            Err(e) => {
                return Check::new("plan.storage", Status::Fail, e.message)
                    .about("dir", dir.display().to_string())
                    .hint(format!("create it: mkdir -p {:?} (writable for libvirt's QEMU user), or choose another --dir or a --pool", dir.display().to_string()))
            }
        },
        Place::Pool(name) => {
            let name = name.as_str();
            match pool_space(conn, name) {
                Ok((size, available)) => (format!("pool:{name}"), format!("pool {name}"), size, available, ("pool", name.to_owned())),
                Err((message, hint)) => {
                    return Check::new("plan.storage", Status::Fail, message)
                        .about("pool", name.to_owned())
                        .hint(hint)
                }
            }
        }
    };
    let fit = budget.space(&key, size, available, disk, disk);
    let message = match fit.status {
        Status::Fail => format!(
            "a {} disk does not fit in {label}: {} free",
            human_bytes(disk),
            human_bytes(fit.left)
        ),
        Status::Warn => format!(
            "a {} disk fits in {label} ({} free) but can fill it over {}%",
            human_bytes(disk),
            human_bytes(fit.left),
            budget.disk_warn()
        ),
        Status::Pass => format!(
            "a {} disk fits in {label} ({} free)",
            human_bytes(disk),
            human_bytes(fit.left)
        ),
    };
    Check::new("plan.storage", fit.status, message)
        .about(subject.0, subject.1)
        .measured(Unit::Bytes, disk, fit.left)
        .hint(format!("free space in the {label} (hv-snap prune, remove unused volumes or images), grow it, or put the disk elsewhere with --pool or --dir"))
}

/// A pool's capacity and available bytes, or why it cannot take a disk
/// (message and fix).
pub fn pool_space(conn: &Connect, name: &str) -> std::result::Result<(u64, u64), (String, String)> {
    let pool = conn.lookup_storage_pool_by_name(name).map_err(|_| {
        (
            format!("no storage pool {name} on this host"),
            "virsh pool-list --all lists the pools; name one with --pool, or a directory with --dir".to_owned(),
        )
    })?;
    if !pool.is_active().unwrap_or(false) {
        return Err((
            format!("storage pool {name} is not active"),
            format!("virsh pool-start {name} (and virsh pool-autostart {name} so it comes back at boot)"),
        ));
    }
    let info = pool.info().map_err(|e| {
        (
            format!("cannot read pool {name}: {e}"),
            format!("virsh pool-refresh {name}"),
        )
    })?;
    Ok((info.capacity, info.available))
}

/// The ISO: admitted by hv-iso (sidecar and image present, last verify
/// not failed, same size as admitted), preferably with a signature.
pub fn iso_checked(library: &Path, iso: &str) -> Check {
    let lib = Library::new(library.to_path_buf());
    let as_path = Path::new(iso);
    let name = if iso.contains('/') {
        let in_library =
            as_path.parent().and_then(|p| p.canonicalize().ok()) == library.canonicalize().ok();
        match as_path.file_name().and_then(|n| n.to_str()) {
            Some(n) if in_library => n.to_owned(),
            _ => return outside_library(as_path),
        }
    } else {
        iso.to_owned()
    };
    let check = |status, message: String| {
        Check::new("plan.iso", status, message).about("image", name.clone())
    };
    let add = format!(
        "hv-iso add URL --keyring KEY --library {:?} (hv-iso ls lists the library)",
        library.display().to_string()
    );
    if let Err(e) = iso_library::check_name(&name) {
        return check(Status::Fail, e.message).hint(add);
    }
    let entry = match lib.get(&name) {
        Ok(Some(entry)) => entry,
        Ok(None) => {
            return check(
                Status::Fail,
                format!(
                    "no image {name} in the hv-iso library {}",
                    library.display()
                ),
            )
            .hint(add)
        }
        Err(e) => {
            return check(Status::Fail, e.message)
                .hint(format!("hv-iso rm {name:?} and add it again"))
        }
    };
    let s = &entry.sidecar;
    let again = format!(
        "hv-iso add --force {:?} with the same proof as before",
        s.source
    );
    match std::fs::metadata(&entry.path) {
        Err(_) => {
            return check(
                Status::Fail,
                format!("{name}: the image file is gone from the library"),
            )
            .hint(again)
        }
        Ok(m) if m.len() != s.size_bytes => {
            return check(
                Status::Fail,
                format!(
                    "{name} is {} bytes, but hv-iso admitted {} bytes: it changed since",
                    m.len(),
                    s.size_bytes
                ),
            )
            .measured(Unit::Bytes, m.len(), s.size_bytes)
            .hint(format!("hv-iso verify {name:?}, then {again}"))
        }
        Ok(_) => {}
    }
    if s.check_ok == Some(false) {
        return check(
            Status::Fail,
            format!("{name} no longer matched its sha256 at the last hv-iso verify"),
        )
        .hint(again);
    }
    let last = match (&s.checked_at, s.check_ok) {
        (Some(at), Some(true)) => format!("; last hv-iso verify matched at {at}"),
        _ => String::new(),
    };
    if s.unsigned {
        return check(Status::Warn, format!("{name} was admitted without a signature (verified by {}){last}", s.verified_by))
            .value(s.verified_by.clone())
            .hint(format!("add it again with its distributor's signature: hv-iso add --force {:?} --checksums SUMS --signature SUMS.sign --keyring KEY", s.source));
    }
    let signer = s.signer.as_deref().unwrap_or("?");
    check(
        Status::Pass,
        format!(
            "{name} was admitted by a signature from {signer} at {}{last}",
            s.verified_at
        ),
    )
    .value(s.verified_by.clone())
}

fn outside_library(path: &Path) -> Check {
    let shown = path.display().to_string();
    let check = |status, message: String| {
        Check::new("plan.iso", status, message).about("image", shown.clone())
    };
    if !path.is_file() {
        return check(Status::Fail, format!("{shown} does not exist"))
            .hint("give an image in the hv-iso library by name, or the path of an existing file");
    }
    check(Status::Warn, format!("{shown} is not in the hv-iso library: nothing proves it is what its distributor published"))
        .hint(format!("hv-iso add {shown:?} --checksums SUMS --signature SUMS.sign --keyring KEY, then --iso with its name"))
}
