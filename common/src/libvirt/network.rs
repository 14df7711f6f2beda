//! A host's libvirt networks as hv-health checks them and hv-metrics
//! exports them: whether each runs and should, how full its DHCP range is,
//! and whether the bridges VMs use are up. A daemon without the network
//! driver has no networks, which is not an error.

use crate::{error, ffi, Code, Error, Result};
use std::net::Ipv4Addr;
use virt::connect::Connect;

/// One network's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub name: String,
    pub active: bool,
    pub autostart: bool,
    /// Its bridge: its own (`virbr0`) or, for a bridge network, the host's.
    pub bridge: Option<String>,
    /// Addresses in its DHCP range; None without DHCP.
    pub dhcp_addresses: Option<u64>,
    /// Leases of addresses in its DHCP range handed out now (0 when it
    /// does not run); IPv6 leases and static hosts outside the range do
    /// not count against it.
    pub leases: u64,
}

pub fn networks(conn: &Connect) -> Result<Vec<Facts>> {
    let nets = match conn.list_all_networks(0) {
        Ok(n) => n,
        Err(e) if error::libvirt_code(&e) == Code::Unsupported => return Ok(Vec::new()),
        Err(e) => return Err(Error::libvirt("cannot list the networks", &e)),
    };
    let mut out = Vec::new();
    for net in nets {
        let name = net.name().unwrap_or_default();
        let xml = net
            .xml_desc(0)
            .map_err(|e| Error::libvirt(format!("cannot read network {name}"), &e))?;
        let (bridge, ranges) = read_xml(&xml);
        let dhcp_addresses =
            (!ranges.is_empty()).then(|| ranges.iter().map(|(s, e)| u64::from(e - s) + 1).sum());
        let active = net.is_active().unwrap_or(false);
        let in_range = |ip: &str| {
            ip.parse::<Ipv4Addr>().is_ok_and(|a| {
                ranges
                    .iter()
                    .any(|(s, e)| (*s..=*e).contains(&u32::from(a)))
            })
        };
        let leases = if active && !ranges.is_empty() {
            ffi::dhcp_leases(&net)
                .map(|l| l.iter().filter(|l| in_range(&l.ip)).count() as u64)
                .unwrap_or(0)
        } else {
            0
        };
        out.push(Facts {
            autostart: net.autostart().unwrap_or(false),
            name,
            active,
            bridge,
            dhcp_addresses,
            leases,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A network's bridge and its IPv4 DHCP ranges (first, last address).
fn read_xml(xml: &str) -> (Option<String>, Vec<(u32, u32)>) {
    let Ok(doc) = roxmltree::Document::parse(xml) else {
        return (None, Vec::new());
    };
    let root = doc.root_element();
    let bridge = root
        .children()
        .find(|c| c.has_tag_name("bridge"))
        .and_then(|b| b.attribute("name").map(str::to_owned));
    let ranges = root
        .children()
        .filter(|c| c.has_tag_name("ip") && c.attribute("family").is_none_or(|f| f == "ipv4"))
        .flat_map(|ip| ip.children().filter(|c| c.has_tag_name("dhcp")))
        .flat_map(|d| d.children().filter(|c| c.has_tag_name("range")))
        .filter_map(|r| {
            let start: Ipv4Addr = r.attribute("start")?.parse().ok()?;
            let end: Ipv4Addr = r.attribute("end")?.parse().ok()?;
            (u32::from(start) <= u32::from(end)).then(|| (u32::from(start), u32::from(end)))
        })
        .collect();
    (bridge, ranges)
}

/// Whether a bridge of this machine is up (administratively, as `ip link`
/// says UP); None when there is no such interface.
pub fn bridge_up(name: &str) -> Option<bool> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return None;
    }
    let flags = std::fs::read_to_string(format!("/sys/class/net/{name}/flags")).ok()?;
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).ok()?;
    Some(flags & 1 == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_counts_its_addresses() {
        let xml =
            "<network><name>n</name><bridge name='virbr7'/><ip address='10.0.0.1' prefix='24'>\
            <dhcp><range start='10.0.0.10' end='10.0.0.254'/></dhcp></ip></network>";
        let (bridge, ranges) = read_xml(xml);
        assert_eq!(bridge.as_deref(), Some("virbr7"));
        let at = |d: u8| u32::from(Ipv4Addr::new(10, 0, 0, d));
        assert_eq!(ranges, [(at(10), at(254))]);
        assert_eq!(
            read_xml("<network><name>n</name></network>"),
            (None, vec![])
        );
        assert_eq!(bridge_up("lo"), Some(true));
        assert_eq!(bridge_up("no-such-if0"), None);
        assert_eq!(bridge_up("../lo"), None);
    }
}
