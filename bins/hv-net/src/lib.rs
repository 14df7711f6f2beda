//! hv-net: the host's libvirt networks as records, with the DHCP leases
//! they handed out, and new networks from small JSON specs: a NAT network
//! with DHCP, an isolated one, or a bridge to a host interface. VMs name
//! these in their profiles (`networks`), so a host's networks belong in its
//! configuration like its pools, not in hand-written XML.

use clap::{Parser, Subcommand};
use hv_common::cli::{ConnectArgs, OutputArgs};
use hv_common::domain::child;
use hv_common::manual::Manual;
use hv_common::objects;
use hv_common::output::{col, Column, Printer, Show};
use hv_common::{ffi, Code, Error, Exit, Result};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use virt::connect::Connect;
use virt::network::Network;

#[derive(Debug, Parser)]
#[command(
    name = "hv-net",
    version,
    about = "List the host's libvirt networks and their DHCP leases as records, and define networks from JSON specs",
    long_about = "ls prints each libvirt network of the host (or of several: -c repeated, --hosts) \
        as a record: forward mode, bridge, address, DHCP range, whether it runs and starts with \
        the host, and the DHCP leases it handed out. define makes networks from specs (files, or \
        JSON lines on stdin): NAT with DHCP ({\"name\": \"lab\", \"type\": \"nat\", \"address\": \
        \"192.168.100.1/24\"}), isolated, or a bridge to a host interface ({\"name\": \"lan\", \
        \"type\": \"bridge\", \"bridge\": \"br0\"}); each is defined, started and set to \
        autostart, all or nothing; --dry-run prints the XML and makes nothing."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the host's networks and their leases as records
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Define networks from JSON specs, all or nothing each
    Define(DefineArgs),
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Only these networks [default: all]
    #[arg(value_name = "NETWORK")]
    pub names: Vec<String>,
    #[command(flatten)]
    pub fields: hv_common::cli::FieldsArgs,
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, clap::Args)]
pub struct DefineArgs {
    /// Spec files, each one JSON object or JSON lines [default: JSON lines on stdin]
    #[arg(value_name = "SPEC")]
    pub specs: Vec<PathBuf>,
    /// An existing one of the same name is left as it is (ok, changed false) rather than refused: for a host's configuration applied at every boot
    #[arg(long)]
    pub keep_existing: bool,
    /// Print each network's XML, make nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub const MANUAL: Manual = Manual {
    exit_status: hv_common::manual::EXIT_STATUS,
    environment: hv_common::manual::ENVIRONMENT,
    examples: &[
        ("The networks, as a table:", "hv-net ls --format table"),
        ("Which VM has which address:", "hv-net ls lab | jq -r '.leases[] | \"\\(.hostname) \\(.ip)\"'"),
        ("A NAT network with DHCP:", "echo '{\"name\": \"lab\", \"type\": \"nat\", \"address\": \"192.168.100.1/24\"}' | hv-net define"),
        ("A network that puts VMs on a host bridge:", "echo '{\"name\": \"lan\", \"type\": \"bridge\", \"bridge\": \"br0\"}' | hv-net define"),
    ],
    notes: &[
        "ls records: name, uuid, host (when hosts are named), forward (nat, route, bridge, open, isolated, …), bridge, address (CIDR), dhcp_start, dhcp_end, active, autostart, persistent, leases (each mac, ip, prefix, hostname, expires: RFC 3339). A spec has name and type (nat, isolated, bridge); nat and isolated take address (the host's address on it, CIDR, IPv4) and optionally dhcp (true by default: the range from the 10th address to the last but one; or {\"start\", \"end\"}, or false) and bridge (the bridge's name; libvirt picks virbrN); bridge takes bridge (an existing host bridge); autostart defaults to true. define records: name, uuid, action (\"define\"), ok, changed, and xml with --dry-run. docs/networks.md.",
    ],
};

static LS_COLUMNS: [Column; 7] = [
    col("name", "name", Show::Plain),
    col("forward", "forward", Show::Plain),
    col("bridge", "bridge", Show::Plain),
    col("address", "address", Show::Plain),
    col("active", "active", Show::Plain),
    col("autostart", "autostart", Show::Plain),
    col("leases", "leases", Show::Join(Some("ip"))),
];

static DEFINE_COLUMNS: [Column; 3] = [
    col("name", "name", Show::Plain),
    col("ok", "ok", Show::Plain),
    col("changed", "changed", Show::Plain),
];

pub fn run(cli: Cli) -> Result<Exit> {
    match cli.command {
        Command::Ls(a) => ls(a),
        Command::Define(a) => define(a),
    }
}

/// A network as `hv-net ls` prints it.
#[derive(Debug, Serialize)]
struct NetRecord {
    name: String,
    uuid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    forward: String,
    bridge: Option<String>,
    address: Option<String>,
    dhcp_start: Option<String>,
    dhcp_end: Option<String>,
    active: bool,
    autostart: bool,
    persistent: bool,
    leases: Vec<LeaseRecord>,
}

#[derive(Debug, Serialize)]
struct LeaseRecord {
    mac: String,
    ip: String,
    prefix: u32,
    hostname: Option<String>,
    expires: String,
}

fn net_record(net: &Network, host: Option<&str>) -> Result<NetRecord> {
    let name = net
        .name()
        .map_err(|e| Error::libvirt("cannot read a network's name", &e))?;
    let xml = net
        .xml_desc(0)
        .map_err(|e| Error::libvirt(format!("cannot read network {name}"), &e))?;
    let doc = roxmltree::Document::parse(&xml).map_err(|e| {
        Error::new(
            Code::Libvirt,
            format!("network {name}: unreadable XML: {e}"),
        )
    })?;
    let root = doc.root_element();
    let forward = child(root, "forward")
        .map(|f| f.attribute("mode").unwrap_or("nat").to_owned())
        .unwrap_or_else(|| "isolated".to_owned());
    // The first IPv4 address: a dual-stack network lists IPv6 too.
    let ip = root
        .children()
        .find(|c| c.has_tag_name("ip") && c.attribute("family").is_none_or(|f| f == "ipv4"));
    let address = ip.and_then(|i| {
        let a = i.attribute("address")?;
        let prefix = i
            .attribute("prefix")
            .and_then(|p| p.parse::<u32>().ok())
            .or_else(|| {
                let mask: Ipv4Addr = i.attribute("netmask")?.parse().ok()?;
                Some(u32::from(mask).count_ones())
            })?;
        Some(format!("{a}/{prefix}"))
    });
    let range = ip
        .and_then(|i| child(i, "dhcp"))
        .and_then(|d| child(d, "range"));
    let active = net.is_active().unwrap_or(false);
    let leases = if active {
        ffi::dhcp_leases(net)
            .map_err(|e| Error::libvirt(format!("cannot read network {name}'s leases"), &e))?
    } else {
        Vec::new()
    };
    Ok(NetRecord {
        uuid: net.uuid_string().unwrap_or_default(),
        host: host.map(str::to_owned),
        forward,
        bridge: child(root, "bridge").and_then(|b| b.attribute("name").map(str::to_owned)),
        address,
        dhcp_start: range.and_then(|r| r.attribute("start").map(str::to_owned)),
        dhcp_end: range.and_then(|r| r.attribute("end").map(str::to_owned)),
        active,
        autostart: net.autostart().unwrap_or(false),
        persistent: net.is_persistent().unwrap_or(false),
        leases: leases
            .into_iter()
            .map(|l| LeaseRecord {
                mac: l.mac,
                ip: l.ip,
                prefix: l.prefix,
                hostname: l.hostname,
                expires: hv_common::time::rfc3339(l.expires),
            })
            .collect(),
        name,
    })
}

/// The fields of a [`NetRecord`], for `--fields`.
const LS_FIELDS: &[&str] = &[
    "name",
    "uuid",
    "host",
    "forward",
    "bridge",
    "address",
    "dhcp_start",
    "dhcp_end",
    "active",
    "autostart",
    "persistent",
    "leases",
];

fn ls(a: LsArgs) -> Result<Exit> {
    let fields = a.fields.checked(LS_FIELDS)?;
    let mut printer = Printer::stdout(a.output.format(), &LS_COLUMNS).only(&fields);
    let exit = objects::list(
        &a.connect,
        &a.names,
        ("network", "hv-net ls"),
        &mut printer,
        |conn, host| {
            let nets = conn.list_all_networks(0).map_err(|e| {
                Error::libvirt(
                    "cannot list the networks (is libvirt's network driver there? Debian: libvirt-daemon-driver-network)",
                    &e,
                )
            })?;
            nets.iter().map(|n| net_record(n, host)).collect()
        },
    )?;
    printer.finish()?;
    Ok(exit)
}

impl objects::Listed for NetRecord {
    fn name(&self) -> &str {
        &self.name
    }
}

/// A network spec: what `hv-net define` takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    name: String,
    #[serde(rename = "type")]
    kind: Kind,
    /// nat, isolated: the host's address on it, CIDR.
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    dhcp: Option<Dhcp>,
    /// nat, isolated: the bridge's name (else libvirt's virbrN); bridge:
    /// the existing host bridge.
    #[serde(default)]
    bridge: Option<String>,
    #[serde(default = "yes")]
    autostart: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Nat,
    Isolated,
    Bridge,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Dhcp {
    On(bool),
    Range { start: Ipv4Addr, end: Ipv4Addr },
}

fn yes() -> bool {
    true
}

/// The network's XML from a spec, or what is wrong with the spec.
fn network_xml(spec: &Spec) -> Result<String> {
    let e = hv_common::domain::xml_escape;
    let bad = |m: String| Err(Error::usage(format!("{}: {m}", spec.name)));
    if spec.name.is_empty() || spec.name.contains('/') {
        return bad("name: give a network name without '/'".into());
    }
    if spec.kind == Kind::Bridge {
        let Some(bridge) = &spec.bridge else {
            return bad(
                "a bridge network needs \"bridge\": the host bridge its VMs join (br0)".into(),
            );
        };
        if spec.address.is_some() || spec.dhcp.is_some() {
            return bad(
                "a bridge network takes no address or dhcp: the LAN the bridge is on gives them"
                    .into(),
            );
        }
        return Ok(format!(
            "<network><name>{}</name><forward mode='bridge'/><bridge name='{}'/></network>",
            e(&spec.name),
            e(bridge)
        ));
    }
    let Some(address) = &spec.address else {
        return bad(
            "\"address\" is needed: the host's address on the network, CIDR (192.168.100.1/24)"
                .into(),
        );
    };
    let (ip, prefix) = match address.split_once('/') {
        Some((ip, p)) => (ip.parse::<Ipv4Addr>().ok(), p.parse::<u32>().ok()),
        None => (None, None),
    };
    let (Some(ip), Some(prefix @ 8..=30)) = (ip, prefix) else {
        return bad(format!(
            "address {address:?}: give an IPv4 address with a prefix of 8 to 30 (192.168.100.1/24)"
        ));
    };
    let mask = u32::MAX << (32 - prefix);
    let net = u32::from(ip) & mask;
    let last = net | !mask;
    let inside =
        |a: Ipv4Addr| (u32::from(a) & mask) == net && u32::from(a) != net && u32::from(a) != last;
    let range = match &spec.dhcp {
        Some(Dhcp::On(false)) => None,
        Some(Dhcp::Range { start, end }) => {
            if !inside(*start) || !inside(*end) || u32::from(*start) > u32::from(*end) {
                return bad(format!(
                    "dhcp range {start} to {end} is not inside {address}"
                ));
            }
            Some((*start, *end))
        }
        None | Some(Dhcp::On(true)) => {
            let start = (net + 10).min(last - 1);
            Some((Ipv4Addr::from(start), Ipv4Addr::from(last - 1)))
        }
    };
    let forward = match spec.kind {
        Kind::Nat => "<forward mode='nat'/>",
        _ => "",
    };
    let bridge = spec
        .bridge
        .as_ref()
        .map(|b| format!("<bridge name='{}' stp='on' delay='0'/>", e(b)))
        .unwrap_or_default();
    let dhcp = range
        .map(|(s, t)| format!("<dhcp><range start='{s}' end='{t}'/></dhcp>"))
        .unwrap_or_default();
    Ok(format!(
        "<network><name>{}</name>{forward}{bridge}<ip address='{ip}' prefix='{prefix}'>{dhcp}</ip></network>",
        e(&spec.name)
    ))
}

/// What hv-net define says of one network, after `name`, `uuid`, `action`, `ok`.
#[derive(Debug, Serialize)]
struct Defined {
    changed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    dry_run: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    xml: Option<String>,
}

fn define(a: DefineArgs) -> Result<Exit> {
    let mut printer = Printer::stdout(a.output.format(), &DEFINE_COLUMNS);
    let exit = objects::define(
        &a.connect,
        &a.specs,
        &mut printer,
        |spec: &Spec| spec.name.clone(),
        |conn, spec| define_one(conn, spec, a.dry_run, a.keep_existing),
    )?;
    printer.finish()?;
    Ok(exit)
}

fn define_one(
    conn: &Connect,
    spec: &Spec,
    dry_run: bool,
    keep_existing: bool,
) -> Result<(String, Defined)> {
    let xml = network_xml(spec)?;
    if let (Ok(there), true) = (conn.lookup_network_by_name(&spec.name), keep_existing) {
        return Ok((
            there.uuid_string().unwrap_or_default(),
            Defined {
                changed: false,
                dry_run: None,
                xml: None,
            },
        ));
    }
    if conn.lookup_network_by_name(&spec.name).is_ok() {
        return Err(Error::new(
            Code::InvalidState,
            format!(
                "network {} exists already: hv-net never replaces one (hv-net ls shows it)",
                spec.name
            ),
        ));
    }
    if dry_run {
        return Ok((
            hv_common::making::new_uuid()?,
            Defined {
                changed: false,
                dry_run: Some(true),
                xml: Some(xml),
            },
        ));
    }
    let net = conn.define_network_xml(&xml).map_err(|e| {
        Error::libvirt_needing(
            "libvirt refused the network (is its network driver there? Debian: libvirt-daemon-driver-network)",
            &e,
            &["network.write", "network.save"],
        )
    })?;
    // All or nothing: a network that cannot start goes again.
    let made = (|| {
        net.create()
            .map_err(|e| Error::libvirt(format!("cannot start network {}", spec.name), &e))?;
        net.set_autostart(spec.autostart)
            .map_err(|e| Error::libvirt("cannot set autostart", &e))?;
        Ok(())
    })();
    if let Err(e) = made {
        let _ = net.destroy();
        let _ = net.undefine();
        return Err(e);
    }
    Ok((
        net.uuid_string().unwrap_or_default(),
        Defined {
            changed: true,
            dry_run: None,
            xml: None,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn specs_become_networks_or_say_what_is_wrong() {
        let nat = network_xml(&spec(
            r#"{"name": "lab", "type": "nat", "address": "192.168.100.1/24"}"#,
        ))
        .unwrap();
        assert_eq!(
            nat,
            "<network><name>lab</name><forward mode='nat'/><ip address='192.168.100.1' prefix='24'>\
             <dhcp><range start='192.168.100.10' end='192.168.100.254'/></dhcp></ip></network>"
        );
        let iso = network_xml(&spec(
            r#"{"name": "i", "type": "isolated", "address": "10.9.0.1/24", "dhcp": false}"#,
        ))
        .unwrap();
        assert!(!iso.contains("forward") && !iso.contains("dhcp"), "{iso}");
        let br = network_xml(&spec(
            r#"{"name": "lan", "type": "bridge", "bridge": "br0"}"#,
        ))
        .unwrap();
        assert!(
            br.contains("<forward mode='bridge'/><bridge name='br0'/>"),
            "{br}"
        );
        let err = |j: &str| network_xml(&spec(j)).unwrap_err().message;
        assert!(err(r#"{"name": "x", "type": "nat"}"#).contains("\"address\" is needed"));
        assert!(err(r#"{"name": "x", "type": "nat", "address": "10.0.0.1"}"#).contains("prefix"));
        assert!(err(r#"{"name": "x", "type": "bridge"}"#).contains("br0"));
        assert!(err(r#"{"name": "x", "type": "nat", "address": "10.0.0.1/24", "dhcp": {"start": "10.0.1.2", "end": "10.0.1.9"}}"#).contains("not inside"));
        assert!(serde_json::from_str::<Spec>(r#"{"name": "x", "type": "wifi"}"#).is_err());
        assert!(
            serde_json::from_str::<Spec>(r#"{"name": "x", "type": "nat", "mtu": 9000}"#).is_err()
        );
    }
}

#[cfg(test)]
mod fields_tests {
    use super::*;

    #[test]
    fn fields_knows_every_field_of_a_record() {
        let record = hv_common::output::to_record(&NetRecord {
            name: "default".into(),
            uuid: "u".into(),
            host: Some("h1".into()),
            forward: "nat".into(),
            bridge: Some("virbr0".into()),
            address: Some("192.168.122.1/24".into()),
            dhcp_start: Some("192.168.122.2".into()),
            dhcp_end: Some("192.168.122.254".into()),
            active: true,
            autostart: true,
            persistent: true,
            leases: Vec::new(),
        });
        let keys: Vec<&str> = record.keys().map(String::as_str).collect();
        assert_eq!(keys, LS_FIELDS);
    }
}
