//! The restored VM (`restore --define`): the backed-up domain XML rewritten
//! around the restored disks, under a new UUID and new MACs so the copy can
//! run beside the original. A domain it replaces is saved and defined
//! again if libvirt refuses the new one, so a failed define never leaves
//! the host with neither.

use crate::format::Manifest;
use crate::write::Restored;
use hv_common::connect::{self, Access};
use hv_common::domain::xml_escape;
use hv_common::{Code, Error, Result};
use std::path::Path;

/// Defines the restored domain. The definition of one it replaces is
/// saved to `keep_old` first and defined again if the new one is refused,
/// so a failure never leaves neither.
pub fn domain(
    place: &hv_common::remote::Place,
    libvirt: &connect::Target,
    manifest: &Manifest,
    name: &str,
    disks: &[Restored],
    nvram: Option<&Path>,
    keep_old: &Path,
) -> Result<()> {
    let conn = connect::open(libvirt, Access::ReadWrite)?;
    let xml = rewrite_domain_xml(&manifest.domain_xml, name, disks, nvram)?;
    let mut replaced = None;
    if let Ok(existing) = conn.lookup_domain_by_name(name) {
        if existing.is_active().unwrap_or(true) {
            return Err(Error::new(
                Code::InvalidState,
                format!("domain {name:?} is running; stop it before replacing it"),
            ));
        }
        let flags = virt::sys::VIR_DOMAIN_XML_SECURE | virt::sys::VIR_DOMAIN_XML_INACTIVE;
        let old = existing.xml_desc(flags).map_err(|e| {
            Error::libvirt(
                format!("cannot read domain {name:?} before replacing it"),
                &e,
            )
        })?;
        crate::write::put(place, keep_old, old.as_bytes())?;
        existing
            .undefine_flags(virt::sys::VIR_DOMAIN_UNDEFINE_KEEP_NVRAM)
            .map_err(|e| Error::libvirt(format!("cannot replace domain {name:?}"), &e))?;
        replaced = Some(old);
    }
    let Err(e) = conn.define_domain_xml(&xml) else {
        return Ok(());
    };
    let mut err = Error::libvirt(format!("cannot define domain {name:?}"), &e);
    if let Some(old) = replaced {
        err.message = match conn.define_domain_xml(&old) {
            Ok(_) => format!(
                "{}; the domain it was to replace is defined again",
                err.message
            ),
            Err(e2) => format!(
                "{}; nor could the domain it replaced be defined again ({}): `virsh define {}`",
                err.message,
                e2.message(),
                keep_old.display()
            ),
        };
    }
    Err(err)
}

/// The domain XML to define around restored disks: new name, no UUID and
/// no MACs (libvirt makes new ones, so the copy can run beside the
/// original), disk sources and formats pointing at the restored files,
/// backing chains dropped (the restored images are flat).
fn rewrite_domain_xml(
    xml: &str,
    name: &str,
    disks: &[Restored],
    nvram: Option<&Path>,
) -> Result<String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| {
        Error::new(
            Code::Corrupt,
            format!("the backup's domain XML is unreadable: {e}"),
        )
    })?;
    let root = doc.root_element();
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    for node in root.children().filter(|n| n.is_element()) {
        match node.tag_name().name() {
            "name" => edits.push((node.range(), format!("<name>{}</name>", xml_escape(name)))),
            "uuid" => edits.push((node.range(), String::new())),
            "os" => {
                if let (Some(n), Some(path)) =
                    (node.children().find(|c| c.has_tag_name("nvram")), nvram)
                {
                    let template = n
                        .attribute("template")
                        .map(|t| format!(" template='{}'", xml_escape(t)))
                        .unwrap_or_default();
                    let text = format!(
                        "<nvram{template}>{}</nvram>",
                        xml_escape(&path.display().to_string())
                    );
                    edits.push((n.range(), text));
                }
            }
            "devices" => device_edits(node, disks, &mut edits),
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

fn device_edits(
    devices: roxmltree::Node,
    disks: &[Restored],
    edits: &mut Vec<(std::ops::Range<usize>, String)>,
) {
    for dev in devices.children().filter(|n| n.is_element()) {
        match dev.tag_name().name() {
            "interface" => {
                if let Some(mac) = dev.children().find(|c| c.has_tag_name("mac")) {
                    edits.push((mac.range(), String::new()));
                }
            }
            "disk" => {
                let target = dev
                    .children()
                    .find(|c| c.has_tag_name("target"))
                    .and_then(|t| t.attribute("dev"));
                let Some(restored) = disks.iter().find(|d| Some(d.target.as_str()) == target)
                else {
                    continue;
                };
                if let Some(attr) = dev.attribute_node("type") {
                    edits.push((attr.range(), "type='file'".into()));
                }
                for child in dev.children().filter(|c| c.is_element()) {
                    match child.tag_name().name() {
                        "source" => edits.push((
                            child.range(),
                            format!(
                                "<source file='{}'/>",
                                xml_escape(&restored.path.display().to_string())
                            ),
                        )),
                        "backingStore" => edits.push((child.range(), String::new())),
                        "driver" => {
                            if let Some(attr) = child.attribute_node("type") {
                                edits.push((
                                    attr.range(),
                                    format!("type='{}'", restored.format.as_str()),
                                ));
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write::DiskFormat;
    use std::path::PathBuf;

    #[test]
    fn the_redefined_domain_points_at_the_restored_disks() {
        let xml = "<domain type='kvm'><name>web1</name><uuid>1b2c</uuid>\
            <os><type>hvm</type><nvram template='/t.fd'>/old/n.fd</nvram></os><devices>\
            <disk type='block' device='disk'><driver name='qemu' type='raw'/><source dev='/dev/x'/>\
            <backingStore/><target dev='vda' bus='virtio'/></disk>\
            <disk type='file' device='cdrom'><source file='/iso'/><target dev='sda'/></disk>\
            <interface type='network'><mac address='52:54:00:00:00:01'/><source network='default'/></interface>\
            </devices></domain>";
        let restored = [Restored {
            target: "vda".into(),
            path: PathBuf::from("/r/web1 copy-vda.qcow2"),
            format: DiskFormat::Qcow2,
            digest: Default::default(),
        }];
        let out =
            rewrite_domain_xml(xml, "web1 copy", &restored, Some(Path::new("/r/n.fd"))).unwrap();
        assert!(out.contains("<name>web1 copy</name>"));
        assert!(!out.contains("<uuid>"));
        assert!(!out.contains("52:54:00"));
        assert!(out.contains("<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/r/web1 copy-vda.qcow2'/><target"));
        assert!(
            out.contains("<source file='/iso'/>"),
            "other disks untouched"
        );
        assert!(out.contains("<nvram template='/t.fd'>/r/n.fd</nvram>"));
        roxmltree::Document::parse(&out).unwrap();
    }
}
