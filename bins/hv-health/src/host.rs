//! Checks of what the VMs share: the daemon, memory, storage, the backup
//! repository's filesystem, the ISO library. Each measures a percentage
//! against documented thresholds, so the same numbers drive a person's
//! table, a timer's mail and hv-metrics' alerts.

use crate::Limits;
use hv_common::checks::{Check, Status, Unit};
use hv_common::connect::version_text;
use hv_common::iso_library::Library;
use hv_common::{ffi, time};
use std::path::Path;
use std::time::Duration;
use virt::connect::Connect;

pub fn libvirt_up(conn: &Connect) -> Check {
    let version = conn.lib_version().map(version_text).unwrap_or_default();
    let uri = conn.uri().unwrap_or_default();
    Check::new(
        "libvirt.reachable",
        Status::Pass,
        format!("libvirt {version} answers at {uri}"),
    )
    .value(version)
}

pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 * 1000.0 / whole as f64).round() / 10.0
}

/// Available memory (free + buffers + page cache) as a share of the total.
pub fn memory(conn: &Connect, limits: &Limits) -> Option<Check> {
    let stats = ffi::node_memory_stats(conn).ok()?;
    let kib = |k: &str| stats.get(k).copied().unwrap_or(0);
    let available = kib("free") + kib("buffers") + kib("cached");
    let share = percent(available, kib("total"));
    let status = match share {
        s if s < limits.memory_fail => Status::Fail,
        s if s < limits.memory_warn => Status::Warn,
        _ => Status::Pass,
    };
    let message = format!(
        "{share}% of the host's memory is available ({} MiB)",
        available / 1024
    );
    Some(
        Check::new("host.memory", status, message)
            .measured(
                Unit::Percent,
                share,
                if status == Status::Fail {
                    limits.memory_fail
                } else {
                    limits.memory_warn
                },
            )
            .hint("stop or shrink VMs (hv-ls --state running shows their memory), or add memory"),
    )
}

fn used_status(used: f64, limits: &Limits) -> (Status, f64) {
    match used {
        u if u >= limits.disk_fail => (Status::Fail, limits.disk_fail),
        u if u >= limits.disk_warn => (Status::Warn, limits.disk_warn),
        _ => (Status::Pass, limits.disk_warn),
    }
}

/// Every active storage pool's fill level.
pub fn pools(conn: &Connect, limits: &Limits) -> Vec<Check> {
    let Ok(pools) = conn.list_all_storage_pools(virt::sys::VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
    else {
        return Vec::new();
    };
    pools
        .iter()
        .filter_map(|pool| {
            let name = pool.name().ok()?;
            let info = pool.info().ok()?;
            let used = percent(info.capacity - info.available.min(info.capacity), info.capacity);
            let (status, threshold) = used_status(used, limits);
            let free = info.available >> 20;
            Some(
                Check::new("pool.space", status, format!("pool {name} is {used}% full ({free} MiB free)"))
                    .about("pool", name.clone())
                    .measured(Unit::Percent, used, threshold)
                    .hint(format!(
                        "free space in pool {name}: hv-snap prune old snapshots, remove unused volumes (virsh vol-list {name}), or grow it"
                    )),
            )
        })
        .collect()
}

/// The filesystem holding a backup repository.
pub fn repository_space(repo: &Path, limits: &Limits) -> Check {
    let shown = repo.display().to_string();
    match ffi::fs_space(repo) {
        Ok(space) => {
            let used = percent(
                space.size_bytes - space.available_bytes.min(space.size_bytes),
                space.size_bytes,
            );
            let (status, threshold) = used_status(used, limits);
            let free = space.available_bytes >> 20;
            Check::new("repository.space", status, format!("{shown} is on a filesystem {used}% full ({free} MiB free)"))
                .about("repository", shown.clone())
                .measured(Unit::Percent, used, threshold)
                .hint(format!("hv-backup prune --repo {shown:?} with a shorter retention, or move the repository to a larger disk"))
        }
        Err(e) => Check::new(
            "repository.space",
            Status::Fail,
            format!("cannot read {shown}: {e}"),
        )
        .about("repository", shown.clone())
        .hint("check the path (and that its disk is mounted), or create it with hv-backup init"),
    }
}

/// What the last `hv-iso verify` recorded for each image.
pub fn isos(dir: &Path, limits: &Limits) -> Vec<Check> {
    let lib = Library::new(dir.to_path_buf());
    let shown = dir.display().to_string();
    let names = match lib.names() {
        Ok(names) => names,
        Err(e) => {
            return vec![Check::new("iso.verified", Status::Fail, e.message)
                .about("library", shown)
                .hint("check --iso-library; hv-iso add creates the library")]
        }
    };
    let now = time::now();
    let max_age = seconds(limits.max_iso_check_age);
    names
        .iter()
        .map(|name| {
            let check = |status, message: String| {
                Check::new("iso.verified", status, message)
                    .about("image", name.clone())
                    .about("library", shown.clone())
            };
            let entry = match lib.get(name) {
                Ok(Some(entry)) => entry,
                Ok(None) => {
                    return check(Status::Fail, format!("{name} vanished while being read"))
                }
                Err(e) => {
                    return check(Status::Fail, e.message)
                        .hint(format!("hv-iso rm {name:?} and add it again"))
                }
            };
            let s = &entry.sidecar;
            let checked = s.checked_at.as_deref().and_then(time::parse_rfc3339);
            let since = checked.map(|t| now - t);
            if !entry.path.is_file() {
                return check(Status::Fail, format!("{name}: the image file is gone")).hint(
                    format!(
                        "hv-iso rm {name:?}, or add it again from {} with hv-iso add --force",
                        s.source
                    ),
                );
            }
            match (s.check_ok, since) {
                (Some(false), _) => check(
                    Status::Fail,
                    format!("{name} no longer matches its sha256 (last hv-iso verify)"),
                )
                .hint(format!(
                    "hv-iso add --force {:?} with the same proof as before, or hv-iso rm {name:?}",
                    s.source
                )),
                (_, Some(age)) if age <= max_age => check(
                    Status::Pass,
                    format!("{name} matched its sha256 {} ago", human_age(age)),
                )
                .measured(Unit::Seconds, age, max_age),
                (_, age) => check(
                    Status::Warn,
                    match age {
                        Some(age) => format!("{name} was last verified {} ago", human_age(age)),
                        None => format!("{name} was never verified since it was added"),
                    },
                )
                .measured(
                    Unit::Seconds,
                    age.map_or(serde_json::Value::Null, Into::into),
                    max_age,
                )
                .hint(format!(
                    "hv-iso verify {name:?} (and run it from a timer: docs/iso.md)"
                )),
            }
        })
        .collect()
}

/// A limit in the seconds that ages are measured in (differences of Unix
/// times, negative when a clock was set back).
pub fn seconds(limit: Duration) -> i64 {
    i64::try_from(limit.as_secs()).unwrap_or(i64::MAX)
}

pub fn human_age(secs: i64) -> String {
    match secs {
        s if s >= 2 * 86_400 => format!("{} days", s / 86_400),
        s if s >= 2 * 3600 => format!("{} hours", s / 3600),
        s if s >= 120 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}

/// Who uses a network or a bridge: VMs, by name, and whether any of them
/// runs or starts with the host (then the network is needed now).
#[derive(Debug, Default)]
struct Users {
    names: Vec<String>,
    needed: bool,
}

/// The networks and bridges of the host's VMs (`domains`): each network
/// runs when a VM that runs or starts with the host uses it, its DHCP
/// range has room, and on this machine each bridge a VM or a running
/// network uses is up (another host's interfaces are not hv's to read).
pub fn networks(
    conn: &Connect,
    domains: &[virt::domain::Domain],
    this_machine: bool,
) -> Vec<Check> {
    use std::collections::BTreeMap;
    let nets = match hv_common::network::networks(conn) {
        Ok(n) => n,
        Err(e) => {
            return vec![Check::new(
            "net.active",
            Status::Warn,
            format!("the networks cannot be read: {}", e.message),
        )
        .hint(
            "check libvirtd's network driver (Debian: libvirt-daemon-driver-network) and its log",
        )]
        }
    };
    let mut on_network: BTreeMap<String, Users> = BTreeMap::new();
    let mut on_bridge: BTreeMap<String, Users> = BTreeMap::new();
    for dom in domains {
        let Ok(xml) = dom.xml_desc(0) else { continue };
        let Ok(parsed) = hv_common::domain::parse(&xml) else {
            continue;
        };
        let name = dom.name().unwrap_or_default();
        let needed = dom.is_active().unwrap_or(false) || dom.autostart().unwrap_or(false);
        for nic in parsed.interfaces {
            let Some(source) = nic.source else { continue };
            let map = match nic.kind.as_str() {
                "network" => &mut on_network,
                "bridge" => &mut on_bridge,
                _ => continue,
            };
            let users = map.entry(source).or_default();
            if !users.names.contains(&name) {
                users.names.push(name.clone());
            }
            users.needed |= needed;
        }
    }
    let mut out = Vec::new();
    for net in &nets {
        let users = on_network.get(&net.name);
        let who = users.map(|u| u.names.join(", ")).unwrap_or_default();
        let name = &net.name;
        let check = match (net.active, users) {
            (true, _) => Check::new("net.active", Status::Pass, format!("network {name} runs")),
            (false, Some(u)) if u.needed => Check::new("net.active", Status::Fail, format!("network {name} is not running, and {who} use it: they cannot start (or have no network)"))
                .hint(format!("virsh net-start {name}; virsh net-autostart {name} so it starts with the host")),
            (false, Some(_)) => Check::new("net.active", Status::Warn, format!("network {name} is not running; {who} use it and cannot start until it does"))
                .hint(format!("virsh net-start {name}; virsh net-autostart {name} so it starts with the host")),
            (false, None) if net.autostart => Check::new("net.active", Status::Warn, format!("network {name} starts with the host but is not running"))
                .hint(format!("virsh net-start {name}")),
            (false, None) => Check::new("net.active", Status::Pass, format!("network {name} is not running, and no VM uses it")),
        };
        out.push(check.about("network", name.clone()).value(net.active));
        if let (true, Some(size)) = (net.active, net.dhcp_addresses) {
            let status = if net.leases >= size {
                Status::Fail
            } else if net.leases * 10 >= size * 9 {
                Status::Warn
            } else {
                Status::Pass
            };
            let message = match status {
                Status::Fail => format!("network {name}'s DHCP range is full: {} leases of {size} addresses; the next VM gets no address", net.leases),
                _ => format!("network {name} has handed out {} of its {size} DHCP addresses", net.leases),
            };
            out.push(
                Check::new("net.dhcp", status, message)
                    .about("network", name.clone())
                    .measured(Unit::Count, net.leases as f64, size as f64)
                    .hint(format!("widen its DHCP range (virsh net-edit {name}), or give some VMs static addresses")),
            );
        }
        // A running network needs its bridge, and so do the VMs on it:
        // a bridge that is down names them.
        if let (true, true, Some(bridge)) = (this_machine, net.active, &net.bridge) {
            let on = on_bridge.entry(bridge.clone()).or_default();
            on.needed = true;
            for name in users.iter().flat_map(|u| &u.names) {
                if !on.names.contains(name) {
                    on.names.push(name.clone());
                }
            }
        }
    }
    // A network VMs name that the host does not have.
    for (name, users) in &on_network {
        if nets.iter().any(|n| n.name == *name) {
            continue;
        }
        let status = if users.needed {
            Status::Fail
        } else {
            Status::Warn
        };
        out.push(
            Check::new(
                "net.active",
                status,
                format!(
                    "there is no network {name}, and {} use it",
                    users.names.join(", ")
                ),
            )
            .about("network", name.clone())
            .value(false)
            .hint(format!(
                "define network {name} (hv-net define), or change the VMs' NICs"
            )),
        );
    }
    if this_machine {
        for (bridge, users) in &on_bridge {
            let who = if users.names.is_empty() {
                "a running network".to_owned()
            } else {
                users.names.join(", ")
            };
            let check = match hv_common::network::bridge_up(bridge) {
                Some(true) => Check::new("net.bridge", Status::Pass, format!("bridge {bridge} is up")),
                Some(false) => Check::new("net.bridge", if users.needed { Status::Fail } else { Status::Warn }, format!("bridge {bridge} is down, and {who} use it"))
                    .hint(format!("ip link set {bridge} up, and check the host's network configuration (systemd-networkd; services.hv on NixOS)")),
                None => Check::new("net.bridge", if users.needed { Status::Fail } else { Status::Warn }, format!("there is no bridge {bridge}, and {who} use it"))
                    .hint(format!("create bridge {bridge} in the host's network configuration (docs/networks.md), or change the VMs' NICs")),
            };
            out.push(check.about("bridge", bridge.clone()));
        }
    }
    out
}
