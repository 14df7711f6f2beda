//! The persistent definition's changes, made by editing the domain's
//! inactive XML and defining it again in one call: libvirt takes all of a
//! VM's changes or none, and everything hv-set does not change stays as
//! it was, byte for byte. Edits are byte ranges of the parsed document,
//! applied from the end (as hv-clone edits its XML).

use hv_common::domain::{child, memory_bytes, xml_escape};
use hv_common::{Code, Error, Result};
use roxmltree::{Document, Node};

/// What a definition says that hv-set may change.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Current {
    /// `<memory>`: the most the VM may have, in bytes.
    pub max_memory: u64,
    /// `<currentMemory>`, in bytes (`max_memory` when absent).
    pub memory: u64,
    /// `<vcpu>`'s text: the most vCPUs.
    pub max_vcpus: u32,
    /// `<vcpu current=…>` (`max_vcpus` when absent).
    pub vcpus: u32,
    /// The first CD-ROM: its target and source file, if any.
    pub cdrom: Option<(String, Option<String>)>,
    /// `<os><boot dev=…>` in order.
    pub boot: Vec<String>,
    /// `<cpu mode=…>`.
    pub cpu: Option<String>,
}

/// What to change; `None` leaves it.
#[derive(Debug, Default, Clone)]
pub struct Wanted {
    pub memory: Option<u64>,
    pub max_memory: Option<u64>,
    pub vcpus: Option<u32>,
    pub max_vcpus: Option<u32>,
    /// `Some(None)`: eject.
    pub cdrom: Option<Option<String>>,
    pub boot: Option<Vec<String>>,
    pub cpu: Option<String>,
}

/// The cloud-init seed hv-define or hv-clone attached (hv's metadata).
fn seed_of(xml: &str) -> Option<String> {
    hv_common::domain::parse(xml).ok()?.seed
}

/// The drive hv-set changes: the first CD-ROM that does not hold the
/// VM's cloud-init seed (that one is cloud-init's, not an install disc's).
fn drive<'a, 'i>(devices: Node<'a, 'i>, seed: &Option<String>) -> Option<Node<'a, 'i>> {
    devices.children().find(|c| {
        c.has_tag_name("disk")
            && c.attribute("device") == Some("cdrom")
            && (seed.is_none()
                || child(*c, "source").and_then(|s| s.attribute("file")) != seed.as_deref())
    })
}

fn parse(xml: &str) -> Result<Document<'_>> {
    Document::parse(xml)
        .map_err(|e| Error::new(Code::Libvirt, format!("unreadable domain XML: {e}")))
}

pub fn current(xml: &str) -> Result<Current> {
    let doc = parse(xml)?;
    let root = doc.root_element();
    let max_memory = child(root, "memory").map_or(0, memory_bytes);
    let memory = child(root, "currentMemory").map_or(max_memory, memory_bytes);
    let vcpu = child(root, "vcpu");
    let max_vcpus = vcpu
        .and_then(|v| v.text())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(1);
    let vcpus = vcpu
        .and_then(|v| v.attribute("current"))
        .and_then(|c| c.parse().ok())
        .unwrap_or(max_vcpus);
    let cdrom = child(root, "devices").and_then(|d| {
        let disk = drive(d, &seed_of(xml))?;
        let target = child(disk, "target")?.attribute("dev")?.to_owned();
        let source = child(disk, "source")
            .and_then(|s| s.attribute("file"))
            .map(str::to_owned);
        Some((target, source))
    });
    let boot = child(root, "os")
        .map(|os| {
            os.children()
                .filter(|c| c.has_tag_name("boot"))
                .filter_map(|b| b.attribute("dev").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let cpu = child(root, "cpu").and_then(|c| c.attribute("mode").map(str::to_owned));
    Ok(Current {
        max_memory,
        memory,
        max_vcpus,
        vcpus,
        cdrom,
        boot,
        cpu,
    })
}

/// The definition with `wanted` applied. Memory and vCPUs stay consistent
/// (the current never above the most): a current above the most raises
/// the most, a most below the current lowers the current.
pub fn edit(xml: &str, wanted: &Wanted) -> Result<String> {
    let doc = parse(xml)?;
    let root = doc.root_element();
    let now = current(xml)?;
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    // The end of an element's start tag's children: where to insert.
    let inside_end = |n: Node| -> Option<usize> {
        let text = &xml[n.range()];
        let close = text.rfind("</")?;
        Some(n.range().start + close)
    };

    if wanted.memory.is_some() || wanted.max_memory.is_some() {
        let max = wanted.max_memory.unwrap_or(now.max_memory);
        let cur = wanted.memory.unwrap_or(now.memory);
        let (max, cur) = match (wanted.max_memory, wanted.memory) {
            (None, Some(_)) => (max.max(cur), cur),
            _ => (max, cur.min(max)),
        };
        let memory = child(root, "memory")
            .ok_or_else(|| Error::new(Code::Libvirt, "the definition has no <memory>"))?;
        edits.push((
            memory.range(),
            format!("<memory unit='KiB'>{}</memory>", max / 1024),
        ));
        let current = format!("<currentMemory unit='KiB'>{}</currentMemory>", cur / 1024);
        match child(root, "currentMemory") {
            Some(c) => edits.push((c.range(), current)),
            None => edits.push((memory.range().end..memory.range().end, current)),
        }
    }
    if wanted.vcpus.is_some() || wanted.max_vcpus.is_some() {
        let (max, cur) = match (wanted.max_vcpus, wanted.vcpus) {
            (None, Some(v)) => (now.max_vcpus.max(v), v),
            (Some(m), v) => (m, v.unwrap_or(now.vcpus).min(m)),
            (None, None) => (now.max_vcpus, now.vcpus),
        };
        let vcpu = child(root, "vcpu")
            .ok_or_else(|| Error::new(Code::Libvirt, "the definition has no <vcpu>"))?;
        let mut attrs: String = vcpu
            .attributes()
            .filter(|a| a.name() != "current")
            .map(|a| format!(" {}='{}'", a.name(), xml_escape(a.value())))
            .collect();
        if cur < max {
            attrs += &format!(" current='{cur}'");
        }
        edits.push((vcpu.range(), format!("<vcpu{attrs}>{max}</vcpu>")));
    }
    if let Some(cdrom) = &wanted.cdrom {
        let devices = child(root, "devices")
            .ok_or_else(|| Error::new(Code::Libvirt, "the definition has no <devices>"))?;
        let disk = drive(devices, &seed_of(xml));
        match (disk, cdrom) {
            (Some(disk), _) => edits.push((
                disk.range(),
                cdrom_xml(disk, cdrom.as_deref(), wanted.boot.is_some()),
            )),
            (None, None) => {}
            (None, Some(path)) => {
                let at = inside_end(devices).unwrap_or(devices.range().end);
                edits.push((at..at, new_cdrom(devices, path)));
            }
        }
    }
    if let Some(order) = &wanted.boot {
        let os = child(root, "os")
            .ok_or_else(|| Error::new(Code::Libvirt, "the definition has no <os>"))?;
        // libvirt refuses <os><boot> beside per-device <boot order>: those go.
        for b in doc.descendants().filter(|n| {
            n.has_tag_name("boot")
                && n.parent()
                    .is_some_and(|p| p.parent().is_some_and(|pp| pp.has_tag_name("devices")))
        }) {
            edits.push((b.range(), String::new()));
        }
        let mut boots = os.children().filter(|c| c.has_tag_name("boot"));
        let new: String = order
            .iter()
            .map(|d| format!("<boot dev='{}'/>", xml_escape(d)))
            .collect();
        match boots.next() {
            Some(first) => {
                edits.push((first.range(), new));
                for b in boots {
                    edits.push((b.range(), String::new()));
                }
            }
            None => {
                let at = inside_end(os).unwrap_or(os.range().end);
                edits.push((at..at, new));
            }
        }
    }
    if let Some(mode) = &wanted.cpu {
        let new = format!("<cpu mode='{}' check='none'/>", xml_escape(mode));
        match child(root, "cpu") {
            // Only the mode changes: its topology, NUMA cells and feature
            // policies stay (a named model goes with host-passthrough).
            Some(cpu) => {
                let attrs: String = cpu
                    .attributes()
                    .filter(|a| !matches!(a.name(), "mode" | "match" | "check"))
                    .map(|a| format!(" {}='{}'", a.name(), xml_escape(a.value())))
                    .collect();
                let inner: String = cpu
                    .children()
                    .filter(|c| c.is_element())
                    .filter(|c| !(mode == "host-passthrough" && c.has_tag_name("model")))
                    .map(|c| &xml[c.range()])
                    .collect();
                edits.push((
                    cpu.range(),
                    format!(
                        "<cpu mode='{}' check='none'{attrs}>{inner}</cpu>",
                        xml_escape(mode)
                    ),
                ));
            }
            None => {
                let at = child(root, "devices")
                    .map(|d| d.range().start)
                    .unwrap_or_else(|| inside_end(root).unwrap_or(xml.len()));
                edits.push((at..at, new));
            }
        }
    }
    // An edit inside another (a per-device <boot> in a drive being
    // rewritten) is that one's to make: applying both would cut the text.
    let outer: Vec<std::ops::Range<usize>> = edits.iter().map(|(r, _)| r.clone()).collect();
    edits.retain(|(r, _)| {
        !outer
            .iter()
            .any(|o| o != r && o.start <= r.start && r.end <= o.end && o.start < o.end)
    });
    edits.sort_by(|a, b| b.0.start.cmp(&a.0.start).then(b.0.end.cmp(&a.0.end)));
    let mut out = xml.to_owned();
    for (range, text) in edits {
        out.replace_range(range, &text);
    }
    Ok(out)
}

/// A CD-ROM element with `source` in the drive (or none: ejected), its
/// other children kept (but its `<boot order>` when the boot order is set
/// in `<os>`: libvirt takes one or the other).
pub fn cdrom_xml(disk: Node, source: Option<&str>, drop_boot: bool) -> String {
    let attrs: String = disk
        .attributes()
        .map(|a| format!(" {}='{}'", a.name(), xml_escape(a.value())))
        .collect();
    let doc_text = disk.document().input_text();
    let mut inner = String::new();
    if let Some(path) = source {
        inner += &format!("<source file='{}'/>", xml_escape(path));
    }
    for c in disk.children().filter(|c| {
        c.is_element() && !c.has_tag_name("source") && !(drop_boot && c.has_tag_name("boot"))
    }) {
        inner += &doc_text[c.range()];
    }
    format!("<disk{attrs}>{inner}</disk>")
}

/// A new SATA CD-ROM holding `path`, on the first free `sdX`.
fn new_cdrom(devices: Node, path: &str) -> String {
    let used: Vec<&str> = devices
        .descendants()
        .filter(|n| n.has_tag_name("target"))
        .filter_map(|t| t.attribute("dev"))
        .collect();
    let letter = ('a'..='z')
        .find(|l| !used.contains(&format!("sd{l}").as_str()))
        .unwrap_or('z');
    format!(
        "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='{}'/>\
         <target dev='sd{letter}' bus='sata'/><readonly/></disk>",
        xml_escape(path)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = "<domain type='kvm'><name>web1</name>\
        <memory unit='KiB'>1048576</memory><currentMemory unit='KiB'>524288</currentMemory>\
        <vcpu placement='static' current='1'>2</vcpu>\
        <os><type arch='x86_64' machine='q35'>hvm</type><boot dev='hd'/></os>\
        <devices><disk type='file' device='disk'><source file='/i/web1.qcow2'/><target dev='vda' bus='virtio'/><boot order='1'/></disk>\
        <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><target dev='sda' bus='sata'/><readonly/></disk></devices></domain>";

    #[test]
    fn what_the_definition_says() {
        let c = current(XML).unwrap();
        assert_eq!((c.max_memory, c.memory), (1 << 30, 512 << 20));
        assert_eq!((c.max_vcpus, c.vcpus), (2, 1));
        assert_eq!(c.cdrom, Some(("sda".into(), None)));
        assert_eq!(c.boot, ["hd"]);
    }

    #[test]
    fn edits_keep_memory_and_vcpus_consistent_and_the_rest_intact() {
        let w = Wanted {
            memory: Some(2 << 30),
            vcpus: Some(4),
            cdrom: Some(Some("/isos/d.iso".into())),
            boot: Some(vec!["cdrom".into(), "hd".into()]),
            cpu: Some("host-model".into()),
            ..Wanted::default()
        };
        let out = edit(XML, &w).unwrap();
        let c = current(&out).unwrap();
        assert_eq!((c.max_memory, c.memory), (2 << 30, 2 << 30), "{out}");
        assert_eq!((c.max_vcpus, c.vcpus), (4, 4), "{out}");
        assert!(out.contains("<vcpu placement='static'>4</vcpu>"), "{out}");
        assert_eq!(c.cdrom, Some(("sda".into(), Some("/isos/d.iso".into()))));
        assert!(
            out.contains("<readonly/>"),
            "the drive's other parts stay: {out}"
        );
        assert_eq!(c.boot, ["cdrom", "hd"]);
        assert!(
            !out.contains("<boot order"),
            "per-device boot orders go: {out}"
        );
        assert_eq!(c.cpu.as_deref(), Some("host-model"));
        assert!(out.contains("<source file='/i/web1.qcow2'/>"));

        let lower = edit(
            XML,
            &Wanted {
                max_memory: Some(256 << 20),
                max_vcpus: Some(1),
                ..Wanted::default()
            },
        )
        .unwrap();
        let c = current(&lower).unwrap();
        assert_eq!((c.max_memory, c.memory), (256 << 20, 256 << 20));
        assert_eq!((c.max_vcpus, c.vcpus), (1, 1));
        let ejected = edit(
            &out,
            &Wanted {
                cdrom: Some(None),
                ..Wanted::default()
            },
        )
        .unwrap();
        assert_eq!(current(&ejected).unwrap().cdrom, Some(("sda".into(), None)));
    }

    #[test]
    fn a_drive_with_a_boot_order_takes_an_iso_and_the_seed_is_left_alone() {
        let xml = "<domain><memory>1024</memory><vcpu>1</vcpu><os><type>hvm</type></os>\
            <metadata><hv:made xmlns:hv='https://hv.invalid/xmlns/made/1'><seed>/i/web-cidata.iso</seed></hv:made></metadata>\
            <cpu mode='custom' match='exact'><model>Skylake</model><topology sockets='1' cores='2' threads='1'/></cpu>\
            <devices><disk type='file' device='cdrom'><source file='/i/web-cidata.iso'/><target dev='sda' bus='sata'/></disk>\
            <disk type='file' device='cdrom'><source file='/isos/old.iso'/><target dev='sdb' bus='sata'/><boot order='1'/></disk></devices></domain>";
        let w = Wanted {
            cdrom: Some(Some("/isos/new.iso".into())),
            boot: Some(vec!["cdrom".into(), "hd".into()]),
            cpu: Some("host-passthrough".into()),
            ..Wanted::default()
        };
        let out = edit(xml, &w).unwrap();
        let c = current(&out).unwrap();
        assert_eq!(
            c.cdrom,
            Some(("sdb".into(), Some("/isos/new.iso".into()))),
            "{out}"
        );
        assert!(
            out.contains("<source file='/i/web-cidata.iso'/>"),
            "the seed stays: {out}"
        );
        assert!(!out.contains("<boot order"), "{out}");
        assert_eq!(c.boot, ["cdrom", "hd"]);
        assert!(
            out.contains("<topology sockets='1' cores='2' threads='1'/>"),
            "{out}"
        );
        assert!(
            !out.contains("Skylake"),
            "no named model with host-passthrough: {out}"
        );
        assert_eq!(c.cpu.as_deref(), Some("host-passthrough"));
    }

    #[test]
    fn a_vm_without_a_drive_gets_one() {
        let xml = "<domain><memory>1024</memory><vcpu>1</vcpu><os/><devices>\
            <disk type='file' device='disk'><target dev='sda' bus='sata'/></disk></devices></domain>";
        let out = edit(
            xml,
            &Wanted {
                cdrom: Some(Some("/x.iso".into())),
                ..Wanted::default()
            },
        )
        .unwrap();
        assert_eq!(
            current(&out).unwrap().cdrom,
            Some(("sdb".into(), Some("/x.iso".into())))
        );
    }
}
