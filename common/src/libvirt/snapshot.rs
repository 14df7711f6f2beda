//! What hv reads from a snapshot's XML (hv-snap lists and prunes by it,
//! hv-metrics reports snapshot ages from it). Whether hv made a snapshot is read
//! from the copy of the domain definition libvirt stores inside it: hv puts
//! a marker naming the snapshot in the domain's metadata just before taking
//! it. Snapshot XML has no metadata of its own, and a marker in the live
//! domain would be lost when the domain is reverted.

use roxmltree::{Document, Node};

pub const MADE_NS: &str = "https://hv.invalid/xmlns/snapshot/1";
pub const MADE_PREFIX: &str = "hvsnap";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub name: String,
    pub description: Option<String>,
    /// The VM's state when it was taken: running, shutoff, disk-snapshot, …
    pub state: String,
    pub parent: Option<String>,
    pub created: i64,
    pub external: bool,
    pub memory: bool,
    pub hv_made: bool,
    /// The schedule policy (`hv-snap schedule`) that took it and alone
    /// prunes it.
    pub policy: Option<String>,
}

/// The metadata element that marks `name` as made by hv, by `policy` when
/// a schedule took it.
pub fn marker(name: &str, policy: Option<&str>) -> String {
    let esc = crate::domain::xml_escape;
    match policy {
        Some(p) => format!("<made name=\"{}\" policy=\"{}\"/>", esc(name), esc(p)),
        None => format!("<made name=\"{}\"/>", esc(name)),
    }
}

fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn text(node: Node, name: &str) -> Option<String> {
    child(node, name).and_then(|n| n.text()).map(str::to_owned)
}

/// A snapshot's XML as libvirt gave it; XML it cannot read is libvirt's
/// failure (`libvirt_error`).
pub fn parse(xml: &str) -> crate::Result<Info> {
    let doc = Document::parse(xml).map_err(|e| {
        crate::Error::new(
            crate::Code::Libvirt,
            format!("unreadable snapshot XML: {e}"),
        )
    })?;
    let root = doc.root_element();
    let name = text(root, "name").unwrap_or_default();
    let disks = child(root, "disks");
    let external = disks.is_some_and(|d| {
        d.children()
            .any(|c| c.attribute("snapshot") == Some("external"))
    });
    let memory =
        child(root, "memory").is_some_and(|m| m.attribute("snapshot").is_some_and(|s| s != "no"));
    let made = child(root, "domain")
        .and_then(|d| child(d, "metadata"))
        .and_then(|m| {
            m.descendants().find(|n| {
                n.tag_name().namespace() == Some(MADE_NS)
                    && n.attribute("name") == Some(name.as_str())
            })
        });
    let hv_made = made.is_some();
    let policy = made.and_then(|n| n.attribute("policy")).map(str::to_owned);
    Ok(Info {
        description: text(root, "description"),
        state: text(root, "state").unwrap_or_default(),
        parent: child(root, "parent").and_then(|p| text(p, "name")),
        created: text(root, "creationTime")
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0),
        external,
        memory,
        hv_made,
        policy,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_libvirt_snapshot_and_our_marker() {
        let xml = format!(
            "<domainsnapshot><name>pre &amp; post</name><description>before upgrade</description>\
             <state>running</state><parent><name>older</name></parent><creationTime>1795298405</creationTime>\
             <memory snapshot='internal'/><disks><disk name='vda' snapshot='internal'/></disks>\
             <domain><metadata><{MADE_PREFIX}:made xmlns:{MADE_PREFIX}='{MADE_NS}' name='pre &amp; post'/></metadata></domain>\
             </domainsnapshot>"
        );
        let info = parse(&xml).unwrap();
        assert_eq!(info.name, "pre & post");
        assert_eq!(info.parent.as_deref(), Some("older"));
        assert!(info.memory && !info.external && info.hv_made);
        assert_eq!(info.policy, None);
        assert_eq!(info.created, 1_795_298_405);
        assert!(marker("pre & post", None).contains("pre &amp; post"));
        let scheduled = xml.replace(
            "name='pre &amp; post'/>",
            "name='pre &amp; post' policy='hourly'/>",
        );
        assert_eq!(parse(&scheduled).unwrap().policy.as_deref(), Some("hourly"));
        assert_eq!(
            marker("hourly-1", Some("hourly")),
            "<made name=\"hourly-1\" policy=\"hourly\"/>"
        );
    }

    #[test]
    fn a_marker_for_another_snapshot_does_not_count() {
        let xml = format!(
            "<domainsnapshot><name>mine</name><disks><disk name='vda' snapshot='external'/></disks><memory snapshot='no'/>\
             <domain><metadata><x:made xmlns:x='{MADE_NS}' name='other'/></metadata></domain></domainsnapshot>"
        );
        let info = parse(&xml).unwrap();
        assert!(!info.hv_made && info.external && !info.memory);
    }
}
