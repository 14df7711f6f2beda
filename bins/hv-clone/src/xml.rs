//! A clone's domain XML, made by editing the source's: only what must
//! differ is touched (name, UUID, MACs, disk and seed paths, the NVRAM
//! path, the serial log), so every device, tuning and quirk the source
//! had, hv-clone's author foresaw it or not, is the clone's too. Edits are
//! byte ranges of the parsed document, applied from the end.

use hv_common::domain::{child, xml_escape, MADE_NS, TAGS_NS};
use hv_common::{Code, Error, Result};
use roxmltree::{Document, Node};
use std::collections::HashMap;

/// What a source's XML says that cloning needs.
#[derive(Debug, Default)]
pub struct Source {
    pub name: String,
    /// File disks (`device='disk'`), in order: target and path.
    pub disks: Vec<(String, String)>,
    /// The NVRAM file of a UEFI VM.
    pub nvram: Option<String>,
    /// hv's cloud-init seed, when hv-define or hv-clone wrote one.
    pub seed: Option<String>,
    pub tags: Vec<String>,
}

pub fn read(xml: &str) -> Result<Source> {
    let doc = Document::parse(xml)
        .map_err(|e| Error::new(Code::Libvirt, format!("unreadable domain XML: {e}")))?;
    let root = doc.root_element();
    let parsed = hv_common::domain::parse(xml)?;
    let mut disks = Vec::new();
    for d in doc
        .descendants()
        .filter(|n| n.has_tag_name("disk") && in_devices(n))
    {
        let device = d.attribute("device").unwrap_or("disk");
        if device != "disk" {
            continue;
        }
        let target = child(d, "target")
            .and_then(|t| t.attribute("dev"))
            .unwrap_or("?")
            .to_owned();
        let kind = d.attribute("type").unwrap_or("file");
        let file = child(d, "source").and_then(|s| s.attribute("file"));
        match (kind, file) {
            ("file", Some(f)) => disks.push((target, f.to_owned())),
            ("file", None) => {}
            (kind, _) => {
                return Err(Error::new(
                    Code::Unsupported,
                    format!("disk {target} is a {kind} disk: hv-clone copies disks that are files (virt-clone or the storage's own tools copy the others)"),
                ))
            }
        }
    }
    Ok(Source {
        name: child(root, "name")
            .and_then(|n| n.text())
            .unwrap_or_default()
            .to_owned(),
        disks,
        nvram: child(root, "os")
            .and_then(|o| child(o, "nvram"))
            .and_then(|n| n.text())
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty()),
        seed: parsed.seed,
        tags: parsed.tags,
    })
}

/// What the clone's XML changes.
pub struct Changes<'a> {
    pub name: &'a str,
    pub uuid: &'a str,
    /// Source disk path → the clone's path.
    pub disks: &'a HashMap<String, String>,
    /// Disks turned into qcow2 overlays (their driver type becomes qcow2).
    pub linked: bool,
    pub nvram: Option<&'a str>,
    /// The source's seed and the clone's.
    pub seed: Option<(&'a str, &'a str)>,
}

pub fn clone(xml: &str, c: &Changes) -> Result<String> {
    let doc = Document::parse(xml)
        .map_err(|e| Error::new(Code::Libvirt, format!("unreadable domain XML: {e}")))?;
    let root = doc.root_element();
    let old_name = child(root, "name")
        .and_then(|n| n.text())
        .unwrap_or_default();
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    if let Some(n) = child(root, "name") {
        edits.push((n.range(), format!("<name>{}</name>", xml_escape(c.name))));
    }
    match child(root, "uuid") {
        Some(u) => edits.push((u.range(), format!("<uuid>{}</uuid>", c.uuid))),
        None => return Err(Error::new(Code::Libvirt, "the source's XML has no uuid")),
    }
    if let Some(meta) = child(root, "metadata") {
        for m in meta.children().filter(Node::is_element) {
            let ns = m.tag_name().namespace();
            // hv's own record of how it was made, and its tags, are written
            // anew after define.
            if ns == Some(MADE_NS) || ns == Some(TAGS_NS) {
                edits.push((m.range(), String::new()));
            }
        }
    }
    if let Some(os) = child(root, "os") {
        if let (Some(n), Some(path)) = (child(os, "nvram"), c.nvram) {
            edits.push((n.range(), with_text(n, path)));
        }
    }
    for node in doc.descendants().filter(Node::is_element) {
        match node.tag_name().name() {
            "mac" if node.parent().is_some_and(|p| p.has_tag_name("interface")) => {
                // libvirt gives the clone a new address.
                edits.push((node.range(), String::new()));
            }
            "disk" if in_devices(&node) => disk(node, c, &mut edits),
            "log"
                if node
                    .parent()
                    .is_some_and(|p| p.has_tag_name("serial") || p.has_tag_name("console")) =>
            {
                if let Some(file) = node.attribute("file") {
                    let ours = format!("/{old_name}-serial");
                    if file.contains(&ours) {
                        let new = file.replacen(&ours, &format!("/{}-serial", c.name), 1);
                        edits.push((node.range(), with_attr(node, "file", &new, true)));
                    }
                }
            }
            _ => {}
        }
    }
    edits.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
    let mut out = xml.to_owned();
    for (range, text) in edits {
        out.replace_range(range, &text);
    }
    Ok(out)
}

fn disk(node: Node, c: &Changes, edits: &mut Vec<(std::ops::Range<usize>, String)>) {
    let Some(source) = child(node, "source") else {
        return;
    };
    let Some(file) = source.attribute("file") else {
        return;
    };
    match node.attribute("device").unwrap_or("disk") {
        "disk" => {
            if let Some(new) = c.disks.get(file) {
                edits.push((source.range(), with_attr(source, "file", new, true)));
                // The clone's image stands alone, or backs onto the source
                // itself: the source's chain as libvirt saw it is not the clone's.
                for b in node.children().filter(|n| n.has_tag_name("backingStore")) {
                    edits.push((b.range(), String::new()));
                }
                if c.linked {
                    if let Some(driver) = child(node, "driver") {
                        edits.push((driver.range(), with_attr(driver, "type", "qcow2", true)));
                    }
                }
            }
        }
        "cdrom" => {
            if let Some((old, new)) = c.seed {
                if file == old {
                    edits.push((source.range(), with_attr(source, "file", new, true)));
                }
            }
        }
        _ => {}
    }
}

/// An element rebuilt with one attribute set, its children dropped when
/// `empty` (a `<source>` with a new file has nothing the old one's
/// children could describe).
fn with_attr(node: Node, attr: &str, value: &str, empty: bool) -> String {
    let mut s = format!("<{}", node.tag_name().name());
    let mut seen = false;
    for a in node.attributes() {
        if a.namespace().is_some() {
            continue;
        }
        let v = if a.name() == attr {
            seen = true;
            value
        } else {
            a.value()
        };
        s += &format!(" {}='{}'", a.name(), xml_escape(v));
    }
    if !seen {
        s += &format!(" {attr}='{}'", xml_escape(value));
    }
    if empty || !node.has_children() {
        s + "/>"
    } else {
        s
    }
}

/// An element with its attributes and new text content.
fn with_text(node: Node, text: &str) -> String {
    let mut s = format!("<{}", node.tag_name().name());
    for a in node.attributes().filter(|a| a.namespace().is_none()) {
        s += &format!(" {}='{}'", a.name(), xml_escape(a.value()));
    }
    format!("{s}>{}</{}>", xml_escape(text), node.tag_name().name())
}

fn in_devices(node: &Node) -> bool {
    node.parent().is_some_and(|p| p.has_tag_name("devices"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "<domain type='qemu'>\n  <name>web 1</name>\n  <uuid>11111111-1111-4111-8111-111111111111</uuid>\n  <metadata>\n    <hv:tags xmlns:hv=\"https://hv.invalid/xmlns/tags/1\"><hv:tag>prod</hv:tag></hv:tags>\n    <hvm:made xmlns:hvm=\"https://hv.invalid/xmlns/made/1\"><hvm:seed>/v/web 1-cidata.iso</hvm:seed></hvm:made>\n  </metadata>\n  <os firmware='efi'><type>hvm</type><nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/var/lib/libvirt/qemu/nvram/web 1_VARS.fd</nvram></os>\n  <devices>\n    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/v/web 1.img'><seclabel model='dac' relabel='no'/></source><backingStore/><target dev='vda' bus='virtio'/></disk>\n    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='/v/web 1-cidata.iso'/><target dev='sda' bus='sata'/><readonly/></disk>\n    <interface type='network'><mac address='52:54:00:00:00:01'/><source network='default'/></interface>\n    <serial type='pty'><log file='/var/log/libvirt/qemu/web 1-serial0.log' append='off'/><target port='0'/></serial>\n  </devices>\n</domain>";

    #[test]
    fn only_what_must_differ_changes() {
        let src = read(SOURCE).unwrap();
        assert_eq!(
            src.disks,
            vec![("vda".to_owned(), "/v/web 1.img".to_owned())]
        );
        assert_eq!(src.seed.as_deref(), Some("/v/web 1-cidata.iso"));
        assert_eq!(
            src.nvram.as_deref(),
            Some("/var/lib/libvirt/qemu/nvram/web 1_VARS.fd")
        );
        let disks = HashMap::from([("/v/web 1.img".to_owned(), "/v/web-2.qcow2".to_owned())]);
        let out = clone(
            SOURCE,
            &Changes {
                name: "web-2",
                uuid: "22222222-2222-4222-8222-222222222222",
                disks: &disks,
                linked: true,
                nvram: Some("/var/lib/libvirt/qemu/nvram/web-2_VARS.fd"),
                seed: Some(("/v/web 1-cidata.iso", "/v/web-2-cidata.iso")),
            },
        )
        .unwrap();
        let parsed = hv_common::domain::parse(&out).unwrap();
        assert_eq!(parsed.disks[0].source.as_deref(), Some("/v/web-2.qcow2"));
        assert_eq!(parsed.disks[0].format.as_deref(), Some("qcow2"));
        assert!(parsed.disks[0].backing.is_empty());
        assert_eq!(
            parsed.disks[1].source.as_deref(),
            Some("/v/web-2-cidata.iso")
        );
        assert_eq!(parsed.interfaces[0].mac, None);
        assert!(parsed.tags.is_empty() && parsed.seed.is_none());
        assert!(
            out.contains("<name>web-2</name>")
                && out.contains("<uuid>22222222-2222-4222-8222-222222222222</uuid>")
        );
        assert!(
            out.contains(">/var/lib/libvirt/qemu/nvram/web-2_VARS.fd</nvram>"),
            "{out}"
        );
        assert!(
            out.contains("template='/usr/share/OVMF/OVMF_VARS_4M.fd'"),
            "{out}"
        );
        assert!(
            out.contains("/var/log/libvirt/qemu/web-2-serial0.log"),
            "{out}"
        );
        assert!(!out.contains("web 1"), "{out}");
    }
}
