//! The host's side: what virt-host-validate checks for QEMU, read from
//! /proc, /sys and /dev the way it does, plus what only libvirt can answer
//! (its version, QEMU's, whether it offers the domain type). Paths hang off
//! a root so the unit tests can lay out a cgroup v1, v2 or hybrid host.
//! Whether missing KVM matters depends on who will run: the domain type
//! the user names for the host or a planned VM, or, before VMs start, the
//! type each of them is defined with.

use crate::VirtType;
use hv_common::checks::{Check, Status, Unit};
use hv_common::connect::version_text;
use std::path::PathBuf;
use virt::connect::Connect;

/// The oldest releases hv-backup's live and incremental backups work with:
/// libvirt 7.2 enabled backup jobs and checkpoints by default, with QEMU 6.0.
const MIN_LIBVIRT: u32 = 7_002_000;
const MIN_QEMU: u32 = 6_000_000;

pub struct Root(PathBuf);

impl Root {
    pub fn system() -> Root {
        Root(PathBuf::from("/"))
    }

    #[cfg(test)]
    pub fn at(dir: &std::path::Path) -> Root {
        Root(dir.to_path_buf())
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel.trim_start_matches('/'))
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_default()
    }

    fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }
}

/// Who needs KVM (hardware virtualization, /dev/kvm usable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// The host or planned VMs, with `--virt-type`.
    Chosen(VirtType),
    /// VMs about to start: the names of those defined with domain type
    /// kvm. The others (type qemu) were made to be emulated and need none.
    Vms(Vec<String>),
    /// VMs about to start, but libvirt did not answer with their types.
    Unknown,
}

impl Need {
    /// How much missing KVM matters. Without it a VM of type qemu still
    /// runs, many times slower: a warning when the user is choosing for
    /// the host, nothing for a VM already defined that way; a VM of type
    /// kvm does not start at all.
    fn status(&self) -> Status {
        match self {
            Need::Chosen(VirtType::Kvm) => Status::Fail,
            Need::Chosen(VirtType::Qemu) | Need::Unknown => Status::Warn,
            Need::Vms(kvm) if kvm.is_empty() => Status::Pass,
            Need::Vms(_) => Status::Fail,
        }
    }

    /// Added to the message of a missing piece: whom it concerns.
    fn who(&self) -> String {
        match self {
            Need::Chosen(_) => String::new(),
            Need::Vms(kvm) if kvm.is_empty() => {
                "; the VMs to start need none: they are emulated (domain type qemu)".to_owned()
            }
            Need::Vms(kvm) => format!("; needed by the VMs of domain type kvm: {}", kvm.join(", ")),
            Need::Unknown => "; libvirt did not answer, so which VMs need it is unknown".to_owned(),
        }
    }

    /// The way around missing KVM, for a hint.
    fn instead(&self) -> &'static str {
        match self {
            Need::Vms(_) => "or run those VMs emulated: <domain type='qemu'> (virsh edit NAME)",
            _ => "or use --virt-type qemu",
        }
    }

    /// The domain type libvirt must offer: kvm when anything needs it.
    pub fn virt_type(&self) -> VirtType {
        match self {
            Need::Chosen(t) => *t,
            Need::Vms(kvm) if kvm.is_empty() => VirtType::Qemu,
            Need::Vms(_) | Need::Unknown => VirtType::Kvm,
        }
    }
}

pub fn hardware(root: &Root, need: &Need) -> Vec<Check> {
    let cpuinfo = root.read("/proc/cpuinfo");
    let flags = cpu_flags(&cpuinfo);
    let mut out = vec![
        hw_virt(&flags, need),
        kvm_device(root, need),
        kvm_access(root, need),
        vhost_net(root),
        tun(root),
    ];
    out.extend(cgroups(root));
    out.push(iommu(root, &flags));
    out.push(secure_guest(root, &flags));
    out
}

fn cpu_flags(cpuinfo: &str) -> Vec<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("flags") || l.starts_with("Features"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, f)| f.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn has(flags: &[String], flag: &str) -> bool {
    flags.iter().any(|f| f == flag)
}

fn hw_virt(flags: &[String], need: &Need) -> Check {
    let found = ["vmx", "svm"].into_iter().find(|f| has(flags, f));
    if let Some(flag) = found {
        let what = if flag == "vmx" { "Intel VT-x" } else { "AMD-V" };
        return Check::new(
            "host.hw_virt",
            Status::Pass,
            format!("the CPU offers {what} ({flag})"),
        )
        .value(flag);
    }
    if !cfg!(target_arch = "x86_64") && !flags.is_empty() {
        return Check::new(
            "host.hw_virt",
            Status::Pass,
            "not an x86 CPU: KVM support shows as /dev/kvm (host.kvm_device)",
        );
    }
    let hint = if has(flags, "hypervisor") {
        format!("this host is itself a VM: enable nested virtualization on its host (options kvm_intel nested=1, or kvm_amd nested=1, and CPU mode host-passthrough for this VM); {}", need.instead())
    } else {
        format!(
            "enable Intel VT-x or AMD-V (SVM) in the firmware setup (BIOS/UEFI), then reboot; {}",
            need.instead()
        )
    };
    Check::new(
        "host.hw_virt",
        need.status(),
        format!("the CPU offers no hardware virtualization (no vmx or svm flag): VMs can only be emulated, many times slower{}", need.who()),
    )
    .hint(hint)
}

fn kvm_device(root: &Root, need: &Need) -> Check {
    if root.exists("/dev/kvm") {
        return Check::new("host.kvm_device", Status::Pass, "/dev/kvm exists");
    }
    Check::new("host.kvm_device", need.status(), format!("/dev/kvm does not exist: the KVM module is not loaded{}", need.who()))
        .hint("modprobe kvm_intel (or kvm_amd), and load it at boot (/etc/modules-load.d; on NixOS boot.kernelModules = [ \"kvm-intel\" ])")
}

/// Opening /dev/kvm read-write is exactly what QEMU does first, so it is
/// the test: group membership, ACLs and LSMs all have their say.
fn kvm_access(root: &Root, need: &Need) -> Check {
    let path = root.path("/dev/kvm");
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path);
    let user = account("/etc/passwd", effective_id(root, "Uid:"), root);
    match opened {
        Ok(_) => Check::new(
            "host.kvm_access",
            Status::Pass,
            format!("/dev/kvm is usable by {user}"),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Check::new(
            "host.kvm_access",
            need.status(),
            format!("/dev/kvm is missing, so nobody can use it{}", need.who()),
        )
        .hint("load the KVM module first (see host.kvm_device)"),
        Err(e) => {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(&path).ok();
            let group = meta.as_ref().map_or_else(
                || "kvm".to_owned(),
                |m| account("/etc/group", Some(m.gid()), root),
            );
            let group_rw = meta.is_some_and(|m| m.mode() & 0o060 == 0o060 && m.gid() != 0);
            let hint = if group_rw {
                format!("add {user} to the group {group}: usermod -aG {group} {user} (on NixOS users.users.{user}.extraGroups = [ \"{group}\" ]), then log in again")
            } else {
                format!("/dev/kvm is not read-write for a group: add the udev rule KERNEL==\"kvm\", GROUP=\"kvm\", MODE=\"0660\" (udevadm trigger), then usermod -aG kvm {user}")
            };
            Check::new(
                "host.kvm_access",
                need.status(),
                format!("{user} cannot open /dev/kvm read-write: {e}{}", need.who()),
            )
            .hint(hint)
        }
    }
}

/// The effective uid or gid from /proc/self/status (its second column).
fn effective_id(root: &Root, field: &str) -> Option<u32> {
    root.read("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|ids| ids.split_whitespace().nth(1)?.parse().ok())
}

/// The name /etc/passwd or /etc/group gives an id, else the number.
fn account(file: &str, id: Option<u32>, root: &Root) -> String {
    let Some(id) = id else {
        return "this user".to_owned();
    };
    root.read(file)
        .lines()
        .find_map(|l| {
            let mut fields = l.split(':');
            let name = fields.next()?;
            let found: u32 = fields.nth(1)?.parse().ok()?;
            (found == id).then(|| name.to_owned())
        })
        .unwrap_or_else(|| id.to_string())
}

fn vhost_net(root: &Root) -> Check {
    if root.exists("/dev/vhost-net") {
        return Check::new("host.vhost_net", Status::Pass, "/dev/vhost-net exists");
    }
    Check::new(
        "host.vhost_net",
        Status::Warn,
        "/dev/vhost-net does not exist: virtio networking runs in QEMU's userspace, slower",
    )
    .hint("modprobe vhost_net, and load it at boot (echo vhost_net > /etc/modules-load.d/vhost-net.conf; on NixOS boot.kernelModules = [ \"vhost_net\" ])")
}

fn tun(root: &Root) -> Check {
    if root.exists("/dev/net/tun") {
        return Check::new("host.tun", Status::Pass, "/dev/net/tun exists");
    }
    Check::new(
        "host.tun",
        Status::Fail,
        "/dev/net/tun does not exist: VMs cannot have tap network interfaces",
    )
    .hint("modprobe tun, and load it at boot (/etc/modules-load.d; on NixOS boot.kernelModules = [ \"tun\" ])")
}

/// The controllers libvirt's QEMU driver uses, as virt-host-validate names
/// them; on cgroup v2 cpuacct is part of cpu, blkio is io, and devices is
/// done with BPF, so it is there whenever v2 is.
const CONTROLLERS: &[&str] = &["cpu", "cpuacct", "cpuset", "memory", "devices", "blkio"];

fn cgroups(root: &Root) -> Vec<Check> {
    let mounts = root.read("/proc/mounts");
    let own = root.read("/proc/self/cgroup");
    let v1 = v1_controllers(&mounts);
    let v2 = v2_controllers(root, &mounts, &own);
    CONTROLLERS
        .iter()
        .map(|&name| {
            let v2_name = match name {
                "cpuacct" => "cpu",
                "blkio" => "io",
                other => other,
            };
            let found = if v1.iter().any(|c| c == name) {
                Some("cgroup v1")
            } else if v2.as_ref().is_some_and(|c| name == "devices" || c.iter().any(|c| c == v2_name)) {
                Some("cgroup v2")
            } else {
                None
            };
            let check = match found {
                Some(how) => Check::new("host.cgroup", Status::Pass, format!("the {name} controller is available ({how})")).value(how),
                None => Check::new("host.cgroup", Status::Warn, format!("the cgroup controller {name} is not available: libvirt cannot limit or account the VMs' {name}"))
                    .hint(format!("on cgroup v2 enable it for the VMs' parent: echo +{v2_name} > /sys/fs/cgroup/cgroup.subtree_control (systemd does this for machine.slice); on v1 mount it: mount -t cgroup -o {name} cgroup /sys/fs/cgroup/{name}")),
            };
            check.about("controller", name)
        })
        .collect()
}

/// Controllers of cgroup v1 hierarchies: the mount options name them.
fn v1_controllers(mounts: &str) -> Vec<String> {
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 3 && f[2] == "cgroup").then(|| f[3].to_owned())
        })
        .flat_map(|opts| opts.split(',').map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

/// The controllers this process's cgroup v2 group offers, `None` without v2.
fn v2_controllers(root: &Root, mounts: &str, own: &str) -> Option<Vec<String>> {
    let mount = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[2] == "cgroup2").then(|| f[1].to_owned())
    })?;
    let group = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/");
    let file = |dir: &str| {
        root.read(&format!(
            "{mount}/{}/cgroup.controllers",
            dir.trim_matches('/')
        ))
    };
    let found: Vec<String> = file(group).split_whitespace().map(str::to_owned).collect();
    // As libvirt decides: a v2 hierarchy offering no controllers (the
    // unused half of a hybrid host) is no v2 at all.
    (!found.is_empty()).then_some(found)
}

/// PCI passthrough needs an IOMMU in the hardware (its ACPI table: DMAR
/// from Intel, IVRS from AMD) and enabled by the kernel (IOMMU groups).
fn iommu(root: &Root, flags: &[String]) -> Check {
    let tables = root.path("/sys/firmware/acpi/tables");
    let hardware = if tables.join("DMAR").exists() {
        Some(("Intel VT-d", "intel_iommu=on"))
    } else if tables.join("IVRS").exists() {
        Some(("AMD-Vi", "amd_iommu=on"))
    } else {
        None
    };
    let groups = std::fs::read_dir(root.path("/sys/kernel/iommu_groups"))
        .map(|d| d.count())
        .unwrap_or(0);
    let param = if has(flags, "svm") {
        "amd_iommu=on"
    } else {
        "intel_iommu=on"
    };
    match hardware {
        _ if groups > 0 => Check::new("host.iommu", Status::Pass, format!("the kernel has set up {groups} IOMMU groups: PCI devices can be passed through")).amount(Unit::Count, groups),
        Some((what, param)) => Check::new("host.iommu", Status::Warn, format!("the firmware reports {what}, but the kernel has not enabled it: no PCI passthrough"))
            .hint(format!("add {param} iommu=pt to the kernel command line (GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub; on NixOS boot.kernelParams), then reboot")),
        None => Check::new("host.iommu", Status::Warn, "no IOMMU found (no DMAR or IVRS ACPI table): PCI devices cannot be passed through to VMs")
            .hint(format!("only needed for PCI passthrough: enable VT-d or AMD-Vi (IOMMU) in the firmware setup, add {param} to the kernel command line, reboot; or --skip host.iommu")),
    }
}

/// Confidential VMs (AMD SEV, Intel TDX) need both the CPU feature and the
/// KVM module's switch. Most hosts need neither, so its absence is a pass
/// that says so, not a warning to learn to ignore.
fn secure_guest(root: &Root, flags: &[String]) -> Check {
    let on = |param: &str| matches!(root.read(param).trim(), "Y" | "1");
    let found = if has(flags, "sev") && on("/sys/module/kvm_amd/parameters/sev") {
        let es = has(flags, "sev_es") && on("/sys/module/kvm_amd/parameters/sev_es");
        Some(if es { "AMD SEV-ES" } else { "AMD SEV" })
    } else if on("/sys/module/kvm_intel/parameters/tdx") {
        Some("Intel TDX")
    } else {
        None
    };
    match found {
        Some(what) => Check::new(
            "host.secure_guest",
            Status::Pass,
            format!("{what} is enabled: confidential VMs can run"),
        )
        .value(what),
        None => Check::new(
            "host.secure_guest",
            Status::Pass,
            "no secure guest support enabled (AMD SEV, Intel TDX): only confidential VMs need it",
        )
        .value("none"),
    }
}

/// libvirt's answers; `need` is whom the domain type is checked for (none
/// before a backup or snapshot, which start no QEMU).
pub fn libvirt(conn: &Connect, need: Option<&Need>) -> Vec<Check> {
    let uri = conn.uri().unwrap_or_default();
    let lib = conn.lib_version().ok();
    let mut out = vec![
        Check::new(
            "libvirt.reachable",
            Status::Pass,
            format!("libvirt answers at {uri}"),
        )
        .value(uri.clone()),
        version_check(
            ("libvirt.version", "libvirt"),
            lib,
            MIN_LIBVIRT,
            "upgrade libvirt (on Debian 12: bookworm-backports has libvirt 11)",
        ),
    ];
    let driver = conn.driver_type().unwrap_or_default();
    if driver.eq_ignore_ascii_case("qemu") || driver.is_empty() {
        let qemu = conn.hyp_version().ok().filter(|_| !driver.is_empty());
        out.push(version_check(
            ("qemu.version", "QEMU"),
            qemu,
            MIN_QEMU,
            "upgrade QEMU (on Debian 12: bookworm-backports has QEMU 10)",
        ));
    } else {
        out.push(Check::new(
            "qemu.version",
            Status::Pass,
            format!("{uri} is the {driver} driver, not QEMU: nothing to check"),
        ));
    }
    if let Some(need) = need {
        out.push(domain_type(conn, need));
    }
    out
}

fn version_check(
    (id, what): (&'static str, &str),
    found: Option<u32>,
    min: u32,
    upgrade: &str,
) -> Check {
    let Some(found) = found else {
        return Check::new(
            id,
            Status::Warn,
            format!("libvirt did not report {what}'s version"),
        )
        .hint("virsh version shows it; check libvirtd's log");
    };
    let status = if found >= min {
        Status::Pass
    } else {
        Status::Warn
    };
    let message = if status == Status::Pass {
        format!("{what} {}", version_text(found))
    } else {
        format!(
            "{what} {} is older than {}: hv-backup's live and incremental backups need it",
            version_text(found),
            version_text(min)
        )
    };
    Check::new(id, status, message)
        .versus(version_text(found), version_text(min))
        .hint(upgrade)
}

/// libvirt's own answer to "can QEMU run a VM of this type here" (its
/// capabilities, which it probes as its QEMU user, who may differ from the
/// user running hv-preflight). Read-only connections may ask for them.
fn domain_type(conn: &Connect, need: &Need) -> Check {
    let virt_type = need.virt_type();
    let name = virt_type.as_str();
    let offered = conn
        .capabilities()
        .map_err(|e| e.message().to_owned())
        .and_then(|xml| offers(&xml, name));
    let check =
        |status, message: String| Check::new("libvirt.domain_type", status, message).value(name);
    match offered {
        Ok(Some(arch)) => check(Status::Pass, format!("libvirt can run {arch} domains of type {name}")),
        Ok(None) => check(Status::Fail, format!("libvirt offers no domains of type {name} for this host's architecture{}", need.who()))
            .hint(match virt_type {
                VirtType::Kvm => format!("make /dev/kvm usable by libvirt's QEMU user (user and group in /etc/libvirt/qemu.conf; group kvm) and restart libvirtd; {}", need.instead()),
                VirtType::Qemu => "install the QEMU system emulator for this architecture (qemu-system-x86 on Debian) and restart libvirtd".to_owned(),
            }),
        Err(e) => check(Status::Fail, format!("cannot read libvirt's capabilities: {e}")).hint("check libvirtd's log (journalctl -u libvirtd)"),
    }
}

/// The host's architecture, if libvirt offers `virt_type` guests for it.
fn offers(capabilities: &str, virt_type: &str) -> std::result::Result<Option<String>, String> {
    let doc = roxmltree::Document::parse(capabilities).map_err(|e| e.to_string())?;
    let host_arch = doc
        .descendants()
        .find(|n| n.has_tag_name("host"))
        .and_then(|h| h.descendants().find(|n| n.has_tag_name("arch")))
        .and_then(|a| a.text())
        .unwrap_or_default()
        .trim()
        .to_owned();
    let found = doc
        .descendants()
        .filter(|n| n.has_tag_name("guest"))
        .flat_map(|g| g.children().filter(|n| n.has_tag_name("arch")))
        .filter(|a| a.attribute("name") == Some(host_arch.as_str()))
        .flat_map(|a| a.children().filter(|n| n.has_tag_name("domain")))
        .any(|d| d.attribute("type") == Some(virt_type));
    Ok(found.then_some(host_arch))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(files: &[(&str, &str)]) -> (PathBuf, Root) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("hv-preflight-unit-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (path, text) in files {
            let p = dir.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let root = Root::at(&dir);
        (dir, root)
    }

    fn statuses(checks: &[Check]) -> Vec<(String, &'static str)> {
        checks
            .iter()
            .map(|c| (c.subject_label(), c.status.as_str()))
            .collect()
    }

    #[test]
    fn cgroup_v1_hybrid_as_on_the_bench() {
        let (dir, root) = host(&[
            ("/proc/mounts", "cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\ncgroup /sys/fs/cgroup/cpuacct cgroup rw,cpuacct 0 0\ncgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n"),
            ("/proc/self/cgroup", "4:memory:/x\n0::/\n"),
        ]);
        let found = statuses(&cgroups(&root));
        assert_eq!(
            found,
            [
                ("cpu".to_owned(), "pass"),
                ("cpuacct".to_owned(), "pass"),
                ("cpuset".to_owned(), "warn"),
                ("memory".to_owned(), "pass"),
                ("devices".to_owned(), "warn"), // an empty v2 half is no v2
                ("blkio".to_owned(), "warn")
            ]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn cgroup_v2_reads_the_own_group_then_the_root() {
        let (dir, root) = host(&[
            (
                "/proc/mounts",
                "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n",
            ),
            ("/proc/self/cgroup", "0::/user.slice/session-1.scope\n"),
            (
                "/sys/fs/cgroup/user.slice/session-1.scope/cgroup.controllers",
                "cpuset cpu io memory pids\n",
            ),
        ]);
        let checks = cgroups(&root);
        assert!(
            checks.iter().all(|c| c.status == Status::Pass),
            "{checks:?}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn iommu_and_hardware_virtualization() {
        let (dir, root) = host(&[("/sys/firmware/acpi/tables/DMAR", "x")]);
        let flags = cpu_flags("processor: 0\nflags\t\t: fpu vmx sse\n");
        let kvm = Need::Chosen(VirtType::Kvm);
        assert_eq!(hw_virt(&flags, &kvm).status, Status::Pass);
        let off = iommu(&root, &flags);
        assert_eq!(off.status, Status::Warn);
        assert!(off.hint.unwrap().contains("intel_iommu=on"));
        std::fs::create_dir_all(dir.join("sys/kernel/iommu_groups/0")).unwrap();
        assert_eq!(iommu(&root, &flags).status, Status::Pass);
        let nested = cpu_flags("flags : fpu hypervisor\n");
        let c = hw_virt(&nested, &kvm);
        assert_eq!(c.status, Status::Fail);
        assert!(c.hint.unwrap().contains("nested"));
        assert_eq!(
            hw_virt(&nested, &Need::Chosen(VirtType::Qemu)).status,
            Status::Warn
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn vms_to_start_need_kvm_only_when_defined_with_it() {
        let (dir, root) = host(&[("/proc/cpuinfo", "flags : fpu hypervisor\n")]);
        let nested = cpu_flags("flags : fpu hypervisor\n");
        let emulated = Need::Vms(Vec::new());
        for c in hardware(&root, &emulated).iter().take(3) {
            assert_eq!(c.status, Status::Pass, "{c:?}");
            assert!(c.message.contains("domain type qemu"), "{c:?}");
            assert_eq!(c.hint, None);
        }
        assert_eq!(emulated.virt_type(), VirtType::Qemu);
        let kvm = Need::Vms(vec!["web 1".to_owned()]);
        let c = hw_virt(&nested, &kvm);
        assert_eq!(c.status, Status::Fail);
        assert!(c.message.contains("kvm: web 1"), "{c:?}");
        assert!(c.hint.unwrap().contains("<domain type='qemu'>"));
        assert_eq!(kvm_device(&root, &kvm).status, Status::Fail);
        assert_eq!(kvm.virt_type(), VirtType::Kvm);
        assert_eq!(kvm_device(&root, &Need::Unknown).status, Status::Warn);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn domain_types_of_the_host_arch() {
        let caps = "<capabilities><host><cpu><arch>x86_64</arch></cpu></host>\
            <guest><arch name='i686'><domain type='kvm'/></arch></guest>\
            <guest><arch name='x86_64'><domain type='qemu'/></arch></guest></capabilities>";
        assert_eq!(offers(caps, "qemu"), Ok(Some("x86_64".to_owned())));
        assert_eq!(offers(caps, "kvm"), Ok(None));
    }

    #[test]
    fn versions() {
        assert_eq!(version_text(11_006_000), "11.6.0");
        let old = version_check(
            ("libvirt.version", "libvirt"),
            Some(6_010_000),
            MIN_LIBVIRT,
            "upgrade",
        );
        assert_eq!(old.status, Status::Warn);
        assert_eq!(old.record()["threshold"], "7.2.0");
    }
}
