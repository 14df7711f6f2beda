//! A profile as libvirt domain XML. Written by hand rather than through an
//! XML crate: the document is small and fixed in shape, every value goes
//! through one escape, and what a profile leaves out is left to libvirt's
//! own defaults (PCI addresses, controllers, a MAC address), as
//! virt-install does, so the XML stays what a reader would write.

use hv_common::domain::{made_metadata, xml_escape, MADE_NS, TAGS_NS};
use hv_common::profile::{
    pci_address, Bus, CpuMode, DiskFormat, Firmware, Graphics, Profile, VirtType,
};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Where a VM's files are (or, in a dry run, would be).
#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub disks: Vec<DiskFile>,
    /// The install ISO's path.
    pub iso: Option<PathBuf>,
    /// The cloud-init seed's path.
    pub seed: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct DiskFile {
    pub path: PathBuf,
    pub format: DiskFormat,
    pub bus: Bus,
}

pub fn domain(p: &Profile, uuid: &str, layout: &Layout) -> String {
    let e = |s: &str| xml_escape(s);
    let path = |p: &Path| xml_escape(&p.to_string_lossy());
    let virt_type = p.virt_type.unwrap_or(VirtType::Kvm);
    let mut x = String::new();
    let kind = virt_type.as_str();
    let _ = writeln!(x, "<domain type='{kind}'>");
    let _ = writeln!(x, "  <name>{}</name>", e(&p.name));
    let _ = writeln!(x, "  <uuid>{uuid}</uuid>");
    if let Some(d) = &p.description {
        let _ = writeln!(x, "  <description>{}</description>", e(d));
    }
    metadata(&mut x, p, layout);
    let kib = p.memory().unwrap_or(crate::DEFAULT_MEMORY).div_ceil(1024);
    let _ = writeln!(x, "  <memory unit='KiB'>{kib}</memory>");
    let _ = writeln!(x, "  <currentMemory unit='KiB'>{kib}</currentMemory>");
    let _ = writeln!(
        x,
        "  <vcpu placement='static'>{}</vcpu>",
        p.vcpus.unwrap_or(1)
    );
    os(&mut x, p, layout);
    let _ = writeln!(x, "  <features>");
    let _ = writeln!(x, "    <acpi/>");
    let _ = writeln!(x, "    <apic/>");
    if p.secure_boot {
        // OVMF's Secure Boot builds need SMM to protect their variables.
        let _ = writeln!(x, "    <smm state='on'/>");
    }
    let _ = writeln!(x, "  </features>");
    // host-passthrough needs KVM; under TCG QEMU's default model runs
    // unless the profile asks for one.
    let cpu = match (p.cpu, virt_type) {
        (Some(mode), _) => Some(mode),
        (None, VirtType::Kvm) => Some(CpuMode::HostPassthrough),
        (None, VirtType::Qemu) => None,
    };
    match cpu {
        Some(CpuMode::HostPassthrough) => {
            let _ = writeln!(
                x,
                "  <cpu mode='host-passthrough' check='none' migratable='on'/>"
            );
        }
        Some(CpuMode::HostModel) => {
            let _ = writeln!(x, "  <cpu mode='host-model' check='partial'/>");
        }
        None => {}
    }
    let _ = writeln!(x, "  <clock offset='utc'/>");
    let _ = writeln!(x, "  <on_poweroff>destroy</on_poweroff>");
    let _ = writeln!(x, "  <on_reboot>restart</on_reboot>");
    let _ = writeln!(x, "  <on_crash>destroy</on_crash>");
    let _ = writeln!(x, "  <devices>");
    let mut names = TargetNames::default();
    if layout.disks.iter().any(|d| d.bus == Bus::Scsi) {
        let _ = writeln!(x, "    <controller type='scsi' model='virtio-scsi'/>");
    }
    for (i, d) in layout.disks.iter().enumerate() {
        let _ = writeln!(x, "    <disk type='file' device='disk'>");
        let _ = writeln!(
            x,
            "      <driver name='qemu' type='{}' discard='unmap'/>",
            d.format.as_str()
        );
        let _ = writeln!(x, "      <source file='{}'/>", path(&d.path));
        let (dev, bus) = names.next(d.bus);
        let _ = writeln!(x, "      <target dev='{dev}' bus='{bus}'/>");
        // The first disk boots unless an install ISO is there to boot first.
        if i == 0 && p.kernel.is_none() {
            let order = if layout.iso.is_some() { 2 } else { 1 };
            let _ = writeln!(x, "      <boot order='{order}'/>");
        }
        let _ = writeln!(x, "    </disk>");
    }
    for (i, media) in [&layout.iso, &layout.seed].into_iter().enumerate() {
        let Some(file) = media else { continue };
        let _ = writeln!(x, "    <disk type='file' device='cdrom'>");
        let _ = writeln!(x, "      <driver name='qemu' type='raw'/>");
        let _ = writeln!(x, "      <source file='{}'/>", path(file));
        let (dev, bus) = names.next(Bus::Sata);
        let _ = writeln!(x, "      <target dev='{dev}' bus='{bus}'/>");
        let _ = writeln!(x, "      <readonly/>");
        if i == 0 && p.kernel.is_none() {
            let _ = writeln!(x, "      <boot order='1'/>");
        }
        let _ = writeln!(x, "    </disk>");
    }
    for n in &p.networks {
        let (kind, attr, source) = match (&n.network, &n.bridge) {
            (Some(net), _) => ("network", "network", net),
            (None, Some(br)) => ("bridge", "bridge", br),
            (None, None) => continue,
        };
        let _ = writeln!(x, "    <interface type='{kind}'>");
        let _ = writeln!(x, "      <source {attr}='{}'/>", e(source));
        if let Some(mac) = &n.mac {
            let _ = writeln!(x, "      <mac address='{}'/>", e(mac));
        }
        let _ = writeln!(
            x,
            "      <model type='{}'/>",
            e(n.model.as_deref().unwrap_or("virtio"))
        );
        let _ = writeln!(x, "    </interface>");
    }
    for h in &p.hostdev {
        let Some((domain, bus, slot, function)) = pci_address(h) else {
            continue;
        };
        let _ = writeln!(x, "    <hostdev mode='subsystem' type='pci' managed='yes'>");
        let _ = writeln!(x, "      <source>");
        let _ = writeln!(x, "        <address domain='0x{domain:04x}' bus='0x{bus:02x}' slot='0x{slot:02x}' function='0x{function:x}'/>");
        let _ = writeln!(x, "      </source>");
        let _ = writeln!(x, "    </hostdev>");
    }
    // A serial console always, its output also kept in a log file (the
    // boot messages of a VM that never reached its network).
    let _ = writeln!(x, "    <serial type='pty'>");
    let _ = writeln!(
        x,
        "      <log file='/var/log/libvirt/qemu/{}-serial0.log' append='off'/>",
        e(&p.name)
    );
    let _ = writeln!(x, "      <target port='0'/>");
    let _ = writeln!(x, "    </serial>");
    let _ = writeln!(x, "    <console type='pty'>");
    let _ = writeln!(x, "      <target type='serial' port='0'/>");
    let _ = writeln!(x, "    </console>");
    match p.graphics.unwrap_or(Graphics::None) {
        Graphics::None => {}
        g => {
            let kind = if g == Graphics::Vnc { "vnc" } else { "spice" };
            let listen = e(p.graphics_listen.as_deref().unwrap_or("127.0.0.1"));
            let _ = writeln!(
                x,
                "    <graphics type='{kind}' autoport='yes' listen='{listen}'>"
            );
            let _ = writeln!(x, "      <listen type='address' address='{listen}'/>");
            let _ = writeln!(x, "    </graphics>");
            let _ = writeln!(x, "    <video>");
            let _ = writeln!(x, "      <model type='virtio'/>");
            let _ = writeln!(x, "    </video>");
        }
    }
    if p.tpm {
        let _ = writeln!(x, "    <tpm model='tpm-crb'>");
        let _ = writeln!(x, "      <backend type='emulator' version='2.0'/>");
        let _ = writeln!(x, "    </tpm>");
    }
    let _ = writeln!(x, "    <rng model='virtio'>");
    let _ = writeln!(x, "      <backend model='random'>/dev/urandom</backend>");
    let _ = writeln!(x, "    </rng>");
    let _ = writeln!(x, "  </devices>");
    let _ = writeln!(x, "</domain>");
    x
}

fn metadata(x: &mut String, p: &Profile, layout: &Layout) {
    let seed = layout
        .seed
        .as_ref()
        .map(|s| s.to_string_lossy().into_owned());
    if p.tags.is_empty() && seed.is_none() {
        return;
    }
    let _ = writeln!(x, "  <metadata>");
    if !p.tags.is_empty() {
        let tags = hv_common::domain::tags_metadata(&p.tags);
        let tags = tags.replacen("<tags>", &format!("<hv:tags xmlns:hv='{TAGS_NS}'>"), 1);
        let tags = tags
            .replace("<tag>", "<hv:tag>")
            .replace("</tag>", "</hv:tag>")
            .replace("</tags>", "</hv:tags>");
        let _ = writeln!(x, "    {tags}");
    }
    if let Some(seed) = &seed {
        let made = made_metadata(Some(seed), None, false);
        let made = made.replacen("<made>", &format!("<hvm:made xmlns:hvm='{MADE_NS}'>"), 1);
        let made = made
            .replace("<seed>", "<hvm:seed>")
            .replace("</seed>", "</hvm:seed>")
            .replace("</made>", "</hvm:made>");
        let _ = writeln!(x, "    {made}");
    }
    let _ = writeln!(x, "  </metadata>");
}

fn os(x: &mut String, p: &Profile, _layout: &Layout) {
    let machine = xml_escape(p.machine.as_deref().unwrap_or("q35"));
    let uefi = p.firmware == Some(Firmware::Uefi);
    let _ = writeln!(x, "  <os{}>", if uefi { " firmware='efi'" } else { "" });
    let _ = writeln!(x, "    <type arch='x86_64' machine='{machine}'>hvm</type>");
    if uefi {
        // libvirt picks the OVMF build from the firmware descriptors
        // (Debian's ovmf ships them) that has what is asked here.
        let on = if p.secure_boot { "yes" } else { "no" };
        let _ = writeln!(x, "    <firmware>");
        let _ = writeln!(x, "      <feature enabled='{on}' name='enrolled-keys'/>");
        let _ = writeln!(x, "      <feature enabled='{on}' name='secure-boot'/>");
        let _ = writeln!(x, "    </firmware>");
    }
    if let Some(kernel) = &p.kernel {
        let _ = writeln!(
            x,
            "    <kernel>{}</kernel>",
            xml_escape(&kernel.to_string_lossy())
        );
        if let Some(initrd) = &p.initrd {
            let _ = writeln!(
                x,
                "    <initrd>{}</initrd>",
                xml_escape(&initrd.to_string_lossy())
            );
        }
        if let Some(cmdline) = &p.cmdline {
            let _ = writeln!(x, "    <cmdline>{}</cmdline>", xml_escape(cmdline));
        }
    }
    let _ = writeln!(x, "  </os>");
}

/// `vda`, `vdb`… for virtio; `sda`, `sdb`… shared by SATA and SCSI, as
/// libvirt names them.
#[derive(Default)]
struct TargetNames {
    virtio: u32,
    sd: u32,
}

impl TargetNames {
    fn next(&mut self, bus: Bus) -> (String, &'static str) {
        let (prefix, n, bus) = match bus {
            Bus::Virtio => ("vd", &mut self.virtio, "virtio"),
            Bus::Sata => ("sd", &mut self.sd, "sata"),
            Bus::Scsi => ("sd", &mut self.sd, "scsi"),
        };
        let name = format!("{prefix}{}", letters(*n));
        *n += 1;
        (name, bus)
    }
}

/// 0 → a, 25 → z, 26 → aa, as the kernel names disks.
fn letters(mut n: u32) -> String {
    let mut out = Vec::new();
    loop {
        out.push(b'a' + (n % 26) as u8);
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_names_go_on_past_z() {
        assert_eq!(letters(0), "a");
        assert_eq!(letters(25), "z");
        assert_eq!(letters(26), "aa");
        assert_eq!(letters(27), "ab");
    }

    #[test]
    fn names_and_paths_are_escaped_and_tags_stored_where_hv_ls_reads_them() {
        let p: Profile =
            serde_json::from_str(r#"{"name": "a<b>&'c\"", "tags": ["x&y"], "description": "<d>"}"#)
                .unwrap();
        let layout = Layout {
            disks: vec![DiskFile {
                path: "/v/it's.qcow2".into(),
                format: DiskFormat::Qcow2,
                bus: Bus::Virtio,
            }],
            iso: None,
            seed: Some("/v/s'd.iso".into()),
        };
        let xml = domain(&p, "00000000-0000-4000-8000-000000000000", &layout);
        let parsed = hv_common::domain::parse(&xml).unwrap();
        assert_eq!(parsed.tags, vec!["x&y".to_owned()]);
        assert_eq!(parsed.seed.as_deref(), Some("/v/s'd.iso"));
        assert_eq!(parsed.disks[0].source.as_deref(), Some("/v/it's.qcow2"));
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let name = doc.descendants().find(|n| n.has_tag_name("name")).unwrap();
        assert_eq!(name.text(), Some("a<b>&'c\""));
    }
}
