//! What hv reads from a domain's XML and state codes. Kept in one place so
//! that every command names states, reasons, disks and tags identically.

use roxmltree::{Document, Node};

/// hv's own `<metadata>` namespace. Tags live here so they travel with the
/// domain definition (virsh dumpxml/define keeps them) and need no database.
pub const TAGS_NS: &str = "https://hv.invalid/xmlns/tags/1";
pub const TAGS_PREFIX: &str = "hv";
/// What hv-define and hv-clone record of a VM they made: its cloud-init
/// seed (hv-rm --remove-storage deletes it with the disks, though it is a
/// read-only CD-ROM) and the VM it was cloned from.
pub const MADE_NS: &str = "https://hv.invalid/xmlns/made/1";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disk {
    pub target: String,
    /// `disk`, `cdrom`, `floppy` or `lun`.
    pub device: String,
    /// libvirt's source type: `file`, `block`, `volume`, `network`, `dir`.
    pub kind: String,
    pub source: Option<String>,
    pub format: Option<String>,
    /// `<readonly/>` or `<shareable/>`: media other guests may also use.
    pub shared: bool,
    /// Sources of the `<backingStore>` chain as far as the XML shows it.
    pub backing: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interface {
    pub mac: Option<String>,
    pub kind: String,
    pub source: Option<String>,
    pub model: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DomainXml {
    pub vcpus: u64,
    pub memory_bytes: u64,
    pub max_memory_bytes: u64,
    pub disks: Vec<Disk>,
    pub interfaces: Vec<Interface>,
    pub tags: Vec<String>,
    /// The cloud-init seed hv-define or hv-clone wrote for it.
    pub seed: Option<String>,
    /// The UUID of the VM hv-clone made it from.
    pub cloned_from: Option<String>,
    /// Its disks are overlays backed by that VM's (hv-clone --linked).
    pub linked: bool,
}

/// A domain's XML as libvirt gave it; XML it cannot read is libvirt's
/// failure (`libvirt_error`), said as such.
pub fn parse(xml: &str) -> crate::Result<DomainXml> {
    let doc = Document::parse(xml).map_err(|e| {
        crate::Error::new(crate::Code::Libvirt, format!("unreadable domain XML: {e}"))
    })?;
    let root = doc.root_element();
    let devices = child(root, "devices");
    let max_memory_bytes = child(root, "memory").map_or(0, memory_bytes);
    Ok(DomainXml {
        vcpus: child(root, "vcpu")
            .and_then(|v| v.attribute("current").or(v.text()))
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0),
        max_memory_bytes,
        memory_bytes: child(root, "currentMemory").map_or(max_memory_bytes, memory_bytes),
        disks: devices
            .map(|d| children(d, "disk").map(disk).collect())
            .unwrap_or_default(),
        interfaces: devices
            .map(|d| children(d, "interface").map(interface).collect())
            .unwrap_or_default(),
        tags: tags(root),
        seed: made(root, "seed"),
        cloned_from: made(root, "cloned-from"),
        linked: made(root, "linked").as_deref() == Some("yes"),
    })
}

/// Whether a running domain's XML has a serial console a client can
/// attach to: a pty serial port or console (hv-console).
pub fn has_pty_console(xml: &str) -> bool {
    let Ok(doc) = Document::parse(xml) else {
        return false;
    };
    let devices = child(doc.root_element(), "devices");
    devices.is_some_and(|d| {
        d.children().any(|c| {
            matches!(c.tag_name().name(), "serial" | "console")
                && c.attribute("type") == Some("pty")
        })
    })
}

fn made(root: Node, field: &str) -> Option<String> {
    child(root, "metadata")?
        .children()
        .filter(|c| c.is_element() && c.tag_name().namespace() == Some(MADE_NS))
        .flat_map(|m| m.children())
        .find(|c| c.is_element() && c.tag_name().name() == field)
        .and_then(|c| c.text().map(str::to_owned))
}

/// The `<hv:made>` element for a VM hv made (see [`MADE_NS`]):
/// `cloned_from` is the source's UUID, `linked` says the clone's disks are
/// overlays backed by the source's.
pub fn made_metadata(seed: Option<&str>, cloned_from: Option<&str>, linked: bool) -> String {
    let mut body = String::new();
    if let Some(s) = seed {
        body += &format!("<seed>{}</seed>", xml_escape(s));
    }
    if let Some(c) = cloned_from {
        body += &format!("<cloned-from>{}</cloned-from>", xml_escape(c));
    }
    if linked {
        body += "<linked>yes</linked>";
    }
    format!("<made>{body}</made>")
}

/// The first child element named `name` (in no namespace, as libvirt's
/// own elements are).
pub fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|c| {
        c.is_element() && c.tag_name().name() == name && c.tag_name().namespace().is_none()
    })
}

fn children<'a, 'i: 'a>(
    node: Node<'a, 'i>,
    name: &'a str,
) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    node.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

/// An element of a memory size (`<memory unit='MiB'>512</memory>`), in bytes.
pub fn memory_bytes(node: Node) -> u64 {
    let value: u64 = node.text().and_then(|t| t.trim().parse().ok()).unwrap_or(0);
    value.saturating_mul(unit_factor(node.attribute("unit").unwrap_or("KiB")))
}

/// libvirt's memory units (formatdomain.html#memory-allocation).
fn unit_factor(unit: &str) -> u64 {
    match unit {
        "b" | "bytes" => 1,
        "KB" => 1_000,
        "k" | "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "M" | "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "G" | "GiB" => 1 << 30,
        "TB" => 1_000_000_000_000,
        "T" | "TiB" => 1 << 40,
        _ => 1 << 10,
    }
}

fn disk(node: Node) -> Disk {
    let source = child(node, "source");
    let source_path = source.and_then(|s| {
        s.attribute("file")
            .or(s.attribute("dev"))
            .or(s.attribute("dir"))
            .map(str::to_owned)
            .or_else(|| match (s.attribute("pool"), s.attribute("volume")) {
                (Some(p), Some(v)) => Some(format!("{p}/{v}")),
                _ => None,
            })
            .or_else(|| {
                s.attribute("name")
                    .map(|n| format!("{}:{n}", s.attribute("protocol").unwrap_or("network")))
            })
    });
    Disk {
        target: child(node, "target")
            .and_then(|t| t.attribute("dev"))
            .unwrap_or_default()
            .to_owned(),
        device: node.attribute("device").unwrap_or("disk").to_owned(),
        kind: node.attribute("type").unwrap_or("file").to_owned(),
        source: source_path,
        format: child(node, "driver")
            .and_then(|d| d.attribute("type"))
            .map(str::to_owned),
        shared: child(node, "readonly").is_some() || child(node, "shareable").is_some(),
        backing: backing_chain(node),
    }
}

fn backing_chain(disk: Node) -> Vec<String> {
    let mut chain = Vec::new();
    let mut next = child(disk, "backingStore");
    while let Some(store) = next {
        if let Some(file) =
            child(store, "source").and_then(|s| s.attribute("file").or(s.attribute("dev")))
        {
            chain.push(file.to_owned());
        }
        next = child(store, "backingStore");
    }
    chain
}

fn interface(node: Node) -> Interface {
    let source = child(node, "source");
    // A running VM's NIC on a libvirt network whose forward mode is
    // `bridge` reads `type='bridge'` with the network still in its source:
    // it is on that network, as its definition says, not on a bridge
    // named after the network.
    let on_network = source.is_some_and(|s| s.attribute("network").is_some());
    Interface {
        mac: child(node, "mac")
            .and_then(|m| m.attribute("address"))
            .map(str::to_owned),
        kind: if on_network {
            "network".to_owned()
        } else {
            node.attribute("type").unwrap_or_default().to_owned()
        },
        source: source
            .and_then(|s| {
                s.attribute("network")
                    .or(s.attribute("bridge"))
                    .or(s.attribute("dev"))
            })
            .map(str::to_owned),
        model: child(node, "model")
            .and_then(|m| m.attribute("type"))
            .map(str::to_owned),
    }
}

fn tags(root: Node) -> Vec<String> {
    let Some(meta) = child(root, "metadata") else {
        return Vec::new();
    };
    meta.children()
        .filter(|c| c.is_element() && c.tag_name().namespace() == Some(TAGS_NS))
        .flat_map(|hv| {
            hv.children()
                .filter(|t| t.is_element() && t.tag_name().name() == "tag")
        })
        .filter_map(|t| t.text().map(str::to_owned))
        .collect()
}

/// The `<hv:tags>` element that `virDomainSetMetadata` stores for `tags`.
pub fn tags_metadata(tags: &[String]) -> String {
    let body: String = tags
        .iter()
        .map(|t| format!("<tag>{}</tag>", xml_escape(t)))
        .collect();
    format!("<tags>{body}</tags>")
}

/// Stores `tags` in hv's metadata of the definition (`persistent`) and
/// of the running domain (`active`); none removes the element.
pub fn write_tags(
    dom: &virt::domain::Domain,
    tags: &[String],
    persistent: bool,
    active: bool,
) -> crate::Result<()> {
    let mut flags = 0;
    if persistent {
        flags |= virt::sys::VIR_DOMAIN_AFFECT_CONFIG;
    }
    if active {
        flags |= virt::sys::VIR_DOMAIN_AFFECT_LIVE;
    }
    let element = virt::sys::VIR_DOMAIN_METADATA_ELEMENT as i32;
    let body = (!tags.is_empty()).then(|| tags_metadata(tags));
    dom.set_metadata(
        element,
        body.as_deref(),
        Some(TAGS_PREFIX),
        Some(TAGS_NS),
        flags,
    )
    .map_err(|e| {
        crate::Error::libvirt_needing(
            "cannot store tags in the VM's metadata",
            &e,
            &["domain.write", "domain.save"],
        )
    })
}

/// Undefines a domain with all it gathered, so libvirt cannot refuse
/// (managed save, snapshot and checkpoint metadata) and nothing is left
/// (NVRAM, TPM state). libvirt before 8.9 does not know the TPM flag:
/// then without it, as those versions keep no TPM state apart.
pub fn undefine_all(dom: &virt::domain::Domain) -> Result<(), virt::error::Error> {
    let flags = virt::sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        | virt::sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        | virt::sys::VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
        | virt::sys::VIR_DOMAIN_UNDEFINE_NVRAM;
    match dom.undefine_flags(flags | virt::sys::VIR_DOMAIN_UNDEFINE_TPM) {
        Err(e)
            if e.code().unwrap_or(virt::error::ErrorNumber::InternalError)
                == virt::error::ErrorNumber::InvalidArg =>
        {
            dom.undefine_flags(flags).map(|_| ())
        }
        other => other.map(|_| ()),
    }
}

/// Escapes text for XML element content and for attributes in either quote style.
pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// Tag rules: short, no spaces or commas (tables join tags with commas and
/// shells split on spaces), printable.
pub fn check_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.chars().count() <= 64
        && tag
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != ',');
    if ok {
        Ok(())
    } else {
        Err(format!("invalid tag '{tag}': use 1 to 64 characters without spaces, commas or control characters"))
    }
}

pub fn is_persistent(dom: &virt::domain::Domain) -> crate::Result<bool> {
    dom.is_persistent()
        .map_err(|e| crate::Error::libvirt("cannot tell if the VM is persistent", &e))
}

/// Whether the VM is persistent, and its definition: the stored one, which
/// is the durable truth, or the live one for a transient VM, which has no other.
pub fn definition(dom: &virt::domain::Domain) -> crate::Result<(bool, DomainXml)> {
    let persistent = is_persistent(dom)?;
    let flags = if persistent {
        virt::sys::VIR_DOMAIN_XML_INACTIVE
    } else {
        0
    };
    let xml = dom
        .xml_desc(flags)
        .map_err(|e| crate::Error::libvirt("cannot read the VM's XML", &e))?;
    let parsed = parse(&xml)?;
    Ok((persistent, parsed))
}

/// The UUIDs of the domains a virConnectListAllDomains filter selects
/// (`VIR_CONNECT_LIST_DOMAINS_AUTOSTART`, …): one call answers a yes/no
/// question for every domain at once.
pub fn uuids_listed(
    conn: &virt::connect::Connect,
    flags: u32,
) -> crate::Result<std::collections::HashSet<String>> {
    let listed = conn
        .list_all_domains(flags)
        .map_err(|e| crate::Error::libvirt("cannot list domains", &e))?;
    Ok(listed.iter().filter_map(|d| d.uuid_string().ok()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = r#"<domain type='qemu'>
      <name>web 1</name>
      <memory unit='KiB'>262144</memory>
      <currentMemory unit='KiB'>131072</currentMemory>
      <vcpu placement='static' current='2'>4</vcpu>
      <metadata>
        <other:x xmlns:other="urn:other"><tag>not-ours</tag></other:x>
        <hv:tags xmlns:hv="https://hv.invalid/xmlns/tags/1"><hv:tag>prod</hv:tag><hv:tag>wëb</hv:tag></hv:tags>
      </metadata>
      <devices>
        <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/var/lib/a b.qcow2'/><backingStore type='file'><format type='qcow2'/><source file='/var/lib/base.qcow2'/><backingStore/></backingStore><target dev='vda' bus='virtio'/></disk>
        <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><target dev='sda' bus='sata'/><readonly/></disk>
        <disk type='volume' device='disk'><source pool='default' volume='v1'/><target dev='vdb'/></disk>
        <interface type='network'><mac address='52:54:00:aa:bb:cc'/><source network='default'/><model type='virtio'/></interface>
        <interface type='bridge'><mac address='52:54:00:aa:bb:cd'/><source bridge='br0'/></interface>
        <interface type='bridge'><mac address='52:54:00:aa:bb:ce'/><source network='lan' portid='5e0c1e5b-3f77-4d1b-9c43-9d0bd1d6a8f1' bridge='br1'/></interface>
      </devices>
    </domain>"#;

    #[test]
    fn reads_disks_interfaces_memory_and_only_our_tags() {
        let d = parse(XML).unwrap();
        assert_eq!(d.vcpus, 2);
        assert_eq!(d.max_memory_bytes, 256 << 20);
        assert_eq!(d.memory_bytes, 128 << 20);
        assert_eq!(d.tags, vec!["prod", "wëb"]);
        assert_eq!(d.disks[0].source.as_deref(), Some("/var/lib/a b.qcow2"));
        assert_eq!(d.disks[0].format.as_deref(), Some("qcow2"));
        assert_eq!(d.disks[1].device, "cdrom");
        assert!(d.disks[1].shared, "a cdrom is read-only media");
        assert!(!d.disks[0].shared);
        assert_eq!(d.disks[0].backing, vec!["/var/lib/base.qcow2"]);
        assert_eq!(d.disks[1].source, None);
        assert_eq!(d.disks[2].source.as_deref(), Some("default/v1"));
        assert_eq!(d.interfaces[0].source.as_deref(), Some("default"));
        assert_eq!(d.interfaces[1].kind, "bridge");
        assert_eq!(d.interfaces[1].model, None);
        // Live XML of a NIC on a network in bridge mode: on the network.
        assert_eq!(
            (
                d.interfaces[2].kind.as_str(),
                d.interfaces[2].source.as_deref()
            ),
            ("network", Some("lan"))
        );
    }

    #[test]
    fn tag_metadata_escapes_and_reads_back_as_libvirt_stores_it() {
        let meta = tags_metadata(&["a&b".into(), "<x>".into()]);
        assert_eq!(meta, "<tags><tag>a&amp;b</tag><tag>&lt;x&gt;</tag></tags>");
        // libvirt puts its prefix on the element it was given and leaves the children alone.
        let stored = format!("<domain><metadata><hv:tags xmlns:hv='{TAGS_NS}'><tag>a&amp;b</tag><tag>&lt;x&gt;</tag></hv:tags></metadata></domain>");
        assert_eq!(parse(&stored).unwrap().tags, vec!["a&b", "<x>"]);
    }

    #[test]
    fn tags_are_checked() {
        assert!(check_tag("prod").is_ok());
        assert!(check_tag("wëb-1.a_b").is_ok());
        assert!(check_tag("a b").unwrap_err().contains("'a b'"));
        assert!(check_tag("a,b").is_err());
        assert!(check_tag("").is_err());
    }
}
