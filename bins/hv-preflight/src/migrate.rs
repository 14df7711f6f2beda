//! Before a migration (`--for migrate --to HOST`): what libvirt would find
//! wrong only part-way, or what would leave a VM that cannot run where it
//! lands. The destination answers; it has the memory the running VMs
//! need, together; the CPU the guest sees is one it can give (libvirt's
//! own comparison, which takes a read-write connection there); the
//! networks the VM's NICs use exist there; and each
//! disk is either there already or has a pool with room to be copied to.

use crate::ffi;
use hv_common::checks::{Check, Status, Unit};
use hv_common::domain::DomainXml;
use hv_common::hosts::{self, Host};
use hv_common::output::human_bytes;
use hv_common::plan::{pool_space, Budget};
use hv_common::State;
use std::collections::BTreeMap;
use std::path::Path;
use virt::connect::Connect;
use virt::domain::Domain;

/// The destination, opened once for the whole batch.
pub struct Destination {
    pub host: Host,
    pub conn: Option<Connect>,
    /// Memory there, shared by the batch's running VMs.
    pub budget: Option<Budget>,
    /// Pool name → room left there for copies, shared by the batch.
    room: BTreeMap<String, u64>,
}

impl Destination {
    /// Opens it; the first check says whether it answered.
    pub fn open(
        host: Host,
        timeout: std::time::Duration,
        limits: hv_common::plan::Limits,
    ) -> (Destination, Check) {
        // libvirt's CPU comparison needs a read-write connection; a user
        // who may only read still gets every other check.
        use hv_common::connect::Access;
        let opened = match host.open(Access::ReadWrite, timeout) {
            Err(e) if e.code == hv_common::Code::PermissionDenied => {
                host.open(Access::ReadOnly, timeout)
            }
            other => other,
        };
        let check = match &opened {
            Ok(_) => Check::new(
                "migrate.destination",
                Status::Pass,
                format!("{} answers at {}", host.name, host.uri),
            ),
            Err(e) => Check::new(
                "migrate.destination",
                Status::Fail,
                hosts::unreachable(&host, e).message,
            )
            .hint("the source host's libvirtd uses this URI too: check it from there (virsh -c URI list)"),
        }
        .about("to", host.name.clone());
        let conn = opened.ok();
        let budget = conn.as_ref().map(|c| Budget::new(c, limits));
        (
            Destination {
                host,
                conn,
                budget,
                room: BTreeMap::new(),
            },
            check,
        )
    }
}

/// The checks of one VM against the destination.
pub fn checks(
    dest: &mut Destination,
    dom: &Domain,
    xml: &DomainXml,
    state: State,
    name: &str,
    uuid: &str,
) -> Vec<Check> {
    let about = |c: Check| c.about_vm(name, uuid);
    let Some(conn) = dest.conn.as_ref() else {
        return Vec::new(); // migrate.destination already failed
    };
    let to = dest.host.name.clone();
    let mut out = Vec::new();
    let there =
        conn.lookup_domain_by_uuid_string(uuid).is_ok() || conn.lookup_domain_by_name(name).is_ok();
    out.push(about(if there {
        Check::new(
            "migrate.name_free",
            Status::Fail,
            format!("{to} already has a VM with {name}'s UUID or name"),
        )
        .hint("remove or rename the one there, or keep this one where it is")
    } else {
        Check::new(
            "migrate.name_free",
            Status::Pass,
            format!("{to} has no VM named {name}"),
        )
    }));
    if state.is_active() {
        if let Some(budget) = dest.budget.as_mut() {
            out.push(about(budget.memory(
                "migrate.memory",
                &format!("{name} on {to}"),
                xml.max_memory_bytes,
            )));
        }
        out.push(about(cpu(conn, dom, &to)));
    }
    let uri = dest.host.uri.clone();
    out.extend(networks(conn, &uri, xml, &to).into_iter().map(about));
    out.extend(disks(dest, dom, xml).into_iter().map(about));
    out
}

/// libvirt's comparison of the CPU the guest runs with against what the
/// destination's hypervisor can give: a guest cannot move live to a CPU
/// that lacks a feature it already uses.
fn cpu(conn: &Connect, dom: &Domain, to: &str) -> Check {
    let xml = match dom.xml_desc(0) {
        Ok(x) => x,
        Err(e) => {
            return Check::new(
                "migrate.cpu",
                Status::Warn,
                format!("its definition could not be read: {e}"),
            )
            .hint("try again; if it persists, check libvirtd's log")
        }
    };
    let doc = match roxmltree::Document::parse(&xml) {
        Ok(d) => d,
        Err(e) => {
            return Check::new(
                "migrate.cpu",
                Status::Warn,
                format!("unreadable domain XML: {e}"),
            )
        }
    };
    let root = doc.root_element();
    let Some(cpu) = root.children().find(|n| n.has_tag_name("cpu")) else {
        return Check::new(
            "migrate.cpu",
            Status::Pass,
            format!("it uses QEMU's default CPU model, which {to} can give"),
        );
    };
    if cpu.attribute("mode") == Some("host-passthrough") {
        return Check::new(
            "migrate.cpu",
            Status::Warn,
            format!("it sees this host's CPU as it is (host-passthrough): it can move live only to an identical CPU, which libvirt cannot confirm for {to}"),
        )
        .value("host-passthrough")
        .hint("define it with cpu host-model (or a named model) to move it between different hosts");
    }
    let os = root.children().find(|n| n.has_tag_name("os"));
    let kind = os.and_then(|o| o.children().find(|n| n.has_tag_name("type")));
    let arch = kind.and_then(|t| t.attribute("arch"));
    let machine = kind.and_then(|t| t.attribute("machine"));
    let virttype = root.attribute("type");
    let cpu_xml = &xml[cpu.range()];
    match ffi::compare_hypervisor_cpu(conn, arch, machine, virttype, cpu_xml) {
        Ok(ffi::CpuFit::Fits) => Check::new(
            "migrate.cpu",
            Status::Pass,
            format!("{to}'s hypervisor can give it the CPU it runs with"),
        ),
        Ok(ffi::CpuFit::Lacks) => Check::new(
            "migrate.cpu",
            Status::Fail,
            format!("{to}'s hypervisor cannot give it the CPU it runs with (libvirt's comparison: incompatible)"),
        )
        .hint("move it offline (stopped), or define it with an older CPU model both hosts have"),
        Err(e) => Check::new(
            "migrate.cpu",
            Status::Warn,
            format!("libvirt could not compare its CPU with {to}'s: {e}"),
        )
        .hint("compare them by hand: virsh hypervisor-cpu-compare on the destination"),
    }
}

/// A NIC on a libvirt network needs that network, running, there.
fn networks(conn: &Connect, uri: &str, xml: &DomainXml, to: &str) -> Vec<Check> {
    let mut out = Vec::new();
    for nic in &xml.interfaces {
        let Some(source) = &nic.source else { continue };
        let check = match nic.kind.as_str() {
            "network" => match conn.lookup_network_by_name(source) {
                Ok(net) if net.is_active().unwrap_or(false) => Check::new(
                    "migrate.network",
                    Status::Pass,
                    format!("{to} has network {source}, running"),
                ),
                Ok(_) => Check::new("migrate.network", Status::Fail, format!("{to}'s network {source} is not running"))
                    .hint(format!("start it there: virsh net-start {source}")),
                Err(_) => Check::new("migrate.network", Status::Fail, format!("{to} has no network {source}"))
                    .hint(format!("define network {source} there (virsh net-define), or change the VM's NIC")),
            },
            "bridge" => match conn.lookup_interface_by_name(source) {
                Ok(_) => Check::new("migrate.network", Status::Pass, format!("{to} has bridge {source}")),
                Err(e) if e.code() == virt::enumutil::Enum::Known(virt::error::ErrorNumber::NoInterface) => {
                    Check::new("migrate.network", Status::Fail, format!("{to} has no bridge {source}"))
                        .hint(format!("create bridge {source} there, or change the VM's NIC"))
                }
                // No interface driver there: the host's own sysfs says.
                Err(e) => match bridge_in_sysfs(uri, source) {
                    Ok(true) => Check::new("migrate.network", Status::Pass, format!("{to} has bridge {source}")),
                    Ok(false) => Check::new("migrate.network", Status::Fail, format!("{to} has no bridge {source}"))
                        .hint(format!("create bridge {source} there, or change the VM's NIC")),
                    Err(looked) => Check::new(
                        "migrate.network",
                        Status::Warn,
                        format!(
                            "libvirt on {to} cannot list its host interfaces ({}), and its /sys/class/net could not be read ({}), so bridge {source} is not checked",
                            e.message(),
                            looked.message
                        ),
                    )
                    .hint(format!("check by hand: ip link show {source} on {to}")),
                },
            },
            _ => continue,
        };
        out.push(check.about("network", source.clone()));
    }
    out
}

/// Whether `name` is a bridge of the host at `uri`, from its
/// /sys/class/net, read here or over the ssh of a qemu+ssh URI: libvirt
/// without an interface driver cannot say.
fn bridge_in_sysfs(uri: &str, name: &str) -> hv_common::Result<bool> {
    use hv_common::remote::Place;
    let dir = std::path::Path::new("/sys/class/net")
        .join(name)
        .join("bridge");
    let place = Place::from_uri(uri)?;
    let test = ["-d".as_ref(), dir.as_os_str()];
    let out = place.output(place.command("test", &test), "test")?;
    match out.status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => Err(hv_common::Error::new(
            hv_common::Code::Io,
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        )),
    }
}

/// Each disk is there already (a volume of a pool), or has a pool at its
/// directory with room for a copy (`--copy-storage`).
fn disks(dest: &mut Destination, dom: &Domain, xml: &DomainXml) -> Vec<Check> {
    let Some(conn) = dest.conn.as_ref() else {
        return Vec::new();
    };
    let to = dest.host.name.clone();
    let mut out = Vec::new();
    for disk in xml.disks.iter().filter(|d| d.device == "disk" && !d.shared) {
        let Some(path) = disk.source.as_deref().filter(|_| disk.kind == "file") else {
            continue;
        };
        if conn.lookup_storage_vol_by_path(path).is_ok() {
            out.push(
                Check::new("migrate.disk", Status::Pass, format!("{to} has {path} (shared storage, or copied): it moves without --copy-storage"))
                    .about("disk", disk.target.clone()),
            );
            continue;
        }
        let dir = Path::new(path)
            .parent()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        let need = dom
            .block_info(&disk.target, 0)
            .map(|b| b.allocation)
            .unwrap_or(0);
        let check = match pool_at(conn, &dir) {
            None => Check::new(
                "migrate.disk",
                Status::Fail,
                format!("{to} has no {path}, and no storage pool at {dir} for --copy-storage to create it in"),
            )
            .hint(format!("define a pool at {dir} there (virsh pool-define-as NAME dir --target {dir}), or put the disk on shared storage")),
            Some(pool) => {
                let left = match dest.room.get(&pool) {
                    Some(left) => Some(*left),
                    None => pool_space(conn, &pool).ok().map(|(_, available)| available),
                };
                match left {
                    None => Check::new("migrate.disk", Status::Warn, format!("{to}'s pool {pool} did not report its free space"))
                        .hint("check the pool there: virsh pool-info"),
                    Some(left) => {
                        dest.room.insert(pool.clone(), left.saturating_sub(need));
                        let status = if need > left { Status::Fail } else { Status::Pass };
                        Check::new(
                            "migrate.disk",
                            status,
                            format!(
                                "{path} is not on {to}: --copy-storage copies {} into its pool {pool}, which has {} free",
                                human_bytes(need),
                                human_bytes(left)
                            ),
                        )
                        .measured(Unit::Bytes, need, left)
                        .hint(format!("free space in {to}'s pool {pool}, or move fewer VMs at once"))
                    }
                }
            }
        };
        out.push(check.about("disk", disk.target.clone()));
    }
    out
}

/// The active pool whose target directory is `dir`.
fn pool_at(conn: &Connect, dir: &str) -> Option<String> {
    let pools = conn
        .list_all_storage_pools(virt::sys::VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
        .ok()?;
    pools.into_iter().find_map(|p| {
        let xml = p.xml_desc(0).ok()?;
        let doc = roxmltree::Document::parse(&xml).ok()?;
        let target = doc
            .descendants()
            .find(|n| n.has_tag_name("target"))?
            .children()
            .find(|n| n.has_tag_name("path"))?
            .text()?
            .trim()
            .trim_end_matches('/')
            .to_owned();
        (target == dir.trim_end_matches('/')).then(|| p.name().ok())?
    })
}
