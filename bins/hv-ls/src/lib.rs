//! hv-ls: every domain as one flat record, so a listing can be filtered by
//! jq or fed to any other hv command. It reads through a read-only
//! connection (a monitoring user needs no write rights) and uses libvirt's
//! bulk calls: a listing is a handful of round trips plus a few small
//! per-domain reads done in parallel, never a `virsh dominfo` per VM.

use clap::Parser;
use hv_common::cli::{ConnectArgs, OutputArgs, Status};
use hv_common::connect::Access;
use hv_common::domain::{self, DomainXml};
use hv_common::ffi::{self, Stats};
use hv_common::manual::Manual;
use hv_common::output::{self, col, Column, Printer, Show};
use hv_common::targets;
use hv_common::{Code, Error, Exit, Result, State, VmState};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use virt::connect::Connect;
use virt::domain::Domain;

#[derive(Debug, Parser)]
#[command(
    name = "hv-ls",
    version,
    about = "List VMs as records: state, resources, disks, interfaces, snapshots and tags",
    long_about = "List libvirt domains, active and inactive, one record each.\n\n\
        With VM names or UUIDs as arguments, only those are shown. Without arguments, when stdin \
        is a pipe, each line names a VM (a JSON record with \"name\" or \"uuid\", or a bare name), \
        so hv-ls can re-read the output of any hv command, and a pipe that names no VM lists none. \
        Without arguments or a pipe (a terminal, /dev/null), every domain is listed. Filters combine: a VM is shown when it passes all of them."
)]
pub struct Cli {
    /// VMs to show, by name or UUID
    #[arg(value_name = "VM")]
    pub vms: Vec<String>,

    /// Only VMs in this state: running, paused, shutoff, crashed, pmsuspended, blocked,
    /// shutdown or nostate (repeatable: any of them)
    #[arg(long, value_enum, value_name = "STATE", hide_possible_values = true)]
    pub state: Vec<State>,

    /// Only VMs whose name matches this glob (*, ?, [abc]; repeatable: any of them)
    #[arg(long = "name", value_name = "GLOB")]
    pub names: Vec<String>,

    /// Only VMs carrying this tag (repeatable: all of them); tags are set with hv-tag
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,

    /// Only VMs that start with the host
    #[arg(long, conflicts_with = "no_autostart")]
    pub autostart: bool,

    /// Only VMs that do not start with the host
    #[arg(long)]
    pub no_autostart: bool,

    /// Only persistent (defined) VMs
    #[arg(long, conflicts_with = "transient")]
    pub persistent: bool,

    /// Only transient VMs (running, with no stored definition)
    #[arg(long)]
    pub transient: bool,

    #[command(flatten)]
    pub connect: ConnectArgs,

    #[command(flatten)]
    pub output: OutputArgs,
}

pub const MANUAL: Manual = Manual {
    exit_status: hv_common::manual::EXIT_STATUS,
    environment: hv_common::manual::ENVIRONMENT,
    examples: &[
        ("List every VM in a table on a terminal, JSON lines in a pipe:", "hv-ls"),
        ("Tag every stopped VM whose name starts with dev:", "hv-ls --state shutoff --name 'dev*' | hv-tag --add cold"),
        ("Names and memory of running VMs, with jq:", "hv-ls --state running | jq -r '\"\\(.name) \\(.memory_bytes)\"'"),
        ("Disks of one VM as CSV for a spreadsheet:", "hv-ls --format csv web1"),
        ("Re-read records from another command to see their current state:", "hv-ls --tag prod | hv-ls --state running"),
        ("List the test driver's domain without a daemon:", "hv-ls -c test:///default"),
    ],
    notes: &[
        "Fields of each record: name, uuid, domain_id (null when not running), state (running, blocked, paused, shutdown, shutoff, crashed, pmsuspended, nostate), state_reason, persistent, autostart, vcpus, memory_bytes, max_memory_bytes, cpu_time_ns (0 when not running), disks (target, device, type, source, format, capacity_bytes, allocation_bytes), interfaces (mac, type, source, model), snapshot_count, checkpoint_count, tags. See docs/records.md.",
        "A VM named on the command line or stdin that does not exist gets a record with \"ok\": false and error code not_found, and the exit status is 1.",
    ],
};

static COLUMNS: [Column; 8] = [
    col("name", "name", Show::Plain),
    col("state", "state", Show::Plain),
    col("id", "domain_id", Show::Plain),
    col("vcpus", "vcpus", Show::Plain),
    col("memory", "memory_bytes", Show::Bytes),
    col("autostart", "autostart", Show::Plain),
    col("disks", "disks", Show::Join(Some("target"))),
    col("tags", "tags", Show::Join(None)),
];

/// How many domains' XML are fetched at once. libvirt's daemon answers
/// concurrent calls on one connection; on a 2-core host 8 in flight cut the
/// per-domain phase from 180 ms to 100 ms for 1000 domains (1 and 4 were slower).
const DETAIL_THREADS: usize = 8;

pub fn run(cli: Cli) -> Result<Exit> {
    let filter = Filter::new(&cli)?;
    let conn = cli.connect.open(Access::ReadOnly)?;
    let mut printer = Printer::stdout(cli.output.format(), &COLUMNS);
    let mut status = Status::default();
    let domains = targets::select(&conn, &cli.vms, &mut printer, &mut status)?;
    for record in list(&conn, domains, &filter, &mut status)? {
        printer.emit(record)?;
    }
    printer.finish()?;
    Ok(status.exit())
}

struct Filter {
    states: Vec<State>,
    names: Vec<glob::Pattern>,
    tags: Vec<String>,
    autostart: Option<bool>,
    persistent: Option<bool>,
}

impl Filter {
    fn new(cli: &Cli) -> Result<Self> {
        let names = cli
            .names
            .iter()
            .map(|g| glob::Pattern::new(g).map_err(|e| Error::usage(format!("--name '{g}': {e}"))))
            .collect::<Result<_>>()?;
        let either = |yes: bool, no: bool| {
            if yes {
                Some(true)
            } else if no {
                Some(false)
            } else {
                None
            }
        };
        Ok(Filter {
            states: cli.state.clone(),
            names,
            tags: cli.tags.clone(),
            autostart: either(cli.autostart, cli.no_autostart),
            persistent: either(cli.persistent, cli.transient),
        })
    }

    fn keeps(&self, b: &Basic) -> bool {
        (self.states.is_empty() || self.states.contains(&b.state.state))
            && (self.names.is_empty() || self.names.iter().any(|p| p.matches(&b.name)))
            && self.autostart.is_none_or(|a| a == b.autostart)
            && self.persistent.is_none_or(|p| p == b.persistent)
    }

    fn keeps_tags(&self, xml: &DomainXml) -> bool {
        self.tags.iter().all(|t| xml.tags.contains(t))
    }
}

/// What the bulk calls tell about a domain, before any per-domain call.
struct Basic {
    domain: Domain,
    name: String,
    uuid: String,
    id: Option<u32>,
    state: VmState,
    persistent: bool,
    autostart: bool,
    /// Whether counting is worth a call: most domains have neither.
    has_snapshots: bool,
    has_checkpoints: bool,
    stats: Stats,
}

/// What needs one call per domain.
struct Detail {
    xml: DomainXml,
    snapshots: u32,
    checkpoints: u32,
}

fn list(
    conn: &Connect,
    domains: Vec<Domain>,
    filter: &Filter,
    status: &mut Status,
) -> Result<Vec<Map<String, Value>>> {
    let basics: Vec<Basic> = basics(conn, domains)?
        .into_iter()
        .filter(|b| filter.keeps(b))
        .collect();
    let details = details(&basics);
    let mut records = Vec::with_capacity(basics.len());
    for (basic, detail) in basics.iter().zip(details) {
        match detail {
            Ok(Some(d)) if filter.keeps_tags(&d.xml) => {
                records.push(output::to_record(&record(basic, &d)))
            }
            Ok(_) => {}
            Err(e) => {
                status.failed(&e);
                let vm = targets::VmRef {
                    name: Some(basic.name.clone()),
                    uuid: Some(basic.uuid.clone()),
                    line: None,
                    record: None,
                };
                records.push(targets::failure_record(&vm, None, &e));
            }
        }
    }
    Ok(records)
}

fn basics(conn: &Connect, domains: Vec<Domain>) -> Result<Vec<Basic>> {
    let persistent = domain::uuids_listed(conn, virt::sys::VIR_CONNECT_LIST_DOMAINS_PERSISTENT)?;
    let autostart = domain::uuids_listed(conn, virt::sys::VIR_CONNECT_LIST_DOMAINS_AUTOSTART)?;
    let with_snapshots =
        domain::uuids_listed(conn, virt::sys::VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT)?;
    let with_checkpoints =
        domain::uuids_listed(conn, virt::sys::VIR_CONNECT_LIST_DOMAINS_HAS_CHECKPOINT)?;
    let wanted = ffi::STATS_STATE | ffi::STATS_CPU_TOTAL | ffi::STATS_BLOCK;
    let stats = ffi::domain_stats(&domains, wanted, ffi::STATS_NOWAIT)
        .map_err(|e| Error::libvirt("cannot read domain statistics", &e))?;
    let mut by_uuid: HashMap<String, Stats> =
        stats.into_iter().map(|s| (s.uuid.clone(), s)).collect();
    Ok(domains
        .into_iter()
        .map(|domain| {
            let uuid = domain.uuid_string().unwrap_or_default();
            let stats = by_uuid.remove(&uuid).unwrap_or_default();
            Basic {
                name: domain.name().unwrap_or_default(),
                id: domain.id(),
                state: VmState::from_raw(
                    stats.u64("state.state").unwrap_or(0) as u32,
                    stats.u64("state.reason").unwrap_or(0) as u32,
                ),
                persistent: persistent.contains(&uuid),
                autostart: autostart.contains(&uuid),
                has_snapshots: with_snapshots.contains(&uuid),
                has_checkpoints: with_checkpoints.contains(&uuid),
                uuid,
                stats,
                domain,
            }
        })
        .collect())
}

/// Fetches XML and counts for each domain on a few threads. `Ok(None)` is a
/// domain that disappeared since the listing: it is simply not shown.
fn details(basics: &[Basic]) -> Vec<Result<Option<Detail>>> {
    let slots: Vec<Mutex<Option<Result<Option<Detail>>>>> =
        basics.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..DETAIL_THREADS.min(basics.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(b) = basics.get(i) else { break };
                *slots[i].lock().expect("no panics while held") = Some(detail(b));
            });
        }
    });
    slots
        .into_iter()
        .map(|m| {
            m.into_inner()
                .expect("no panics")
                .expect("every slot filled")
        })
        .collect()
}

fn detail(b: &Basic) -> Result<Option<Detail>> {
    let d = &b.domain;
    let gone = |e: &Error| e.code == Code::NotFound;
    let name = &b.name;
    let attempt = || -> Result<Detail> {
        let xml = d
            .xml_desc(0)
            .map_err(|e| Error::libvirt(format!("VM '{name}': cannot read its XML"), &e))?;
        let xml = domain::parse(&xml)
            .map_err(|e| Error::new(e.code, format!("VM '{name}': {}", e.message)))?;
        let snapshots = if !b.has_snapshots {
            Ok(0)
        } else {
            d.num_snapshots(0)
        }
        .map_err(|e| Error::libvirt(format!("VM '{name}': cannot count snapshots"), &e))?;
        let checkpoints = if !b.has_checkpoints {
            Ok(0)
        } else {
            ffi::checkpoint_count(d)
        }
        .map_err(|e| Error::libvirt(format!("VM '{name}': cannot count checkpoints"), &e))?;
        Ok(Detail {
            xml,
            snapshots,
            checkpoints,
        })
    };
    match attempt() {
        Ok(detail) => Ok(Some(detail)),
        Err(e) if gone(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// One VM, as hv-ls prints it (docs/records.md, "hv-ls"). Field order is
/// part of the contract: `name` comes first, so a shell completion can
/// read it without a JSON parser.
#[derive(Debug, Serialize)]
pub struct VmRecord<'a> {
    pub name: &'a str,
    pub uuid: &'a str,
    /// libvirt's id of the running domain; null when it is not running.
    pub domain_id: Option<u32>,
    /// `state` and `state_reason`.
    #[serde(flatten)]
    pub state: VmState,
    pub persistent: bool,
    pub autostart: bool,
    pub vcpus: u64,
    pub memory_bytes: u64,
    pub max_memory_bytes: u64,
    /// CPU time of the running QEMU; 0 when it is not running.
    pub cpu_time_ns: u64,
    pub disks: Vec<DiskRecord<'a>>,
    pub interfaces: Vec<InterfaceRecord<'a>>,
    pub snapshot_count: u32,
    pub checkpoint_count: u32,
    pub tags: &'a [String],
}

/// One disk of a [`VmRecord`].
#[derive(Debug, Serialize)]
pub struct DiskRecord<'a> {
    pub target: &'a str,
    /// `disk`, `cdrom`, `floppy` or `lun`.
    pub device: &'a str,
    /// libvirt's source type: `file`, `block`, `volume`, `network`, `dir`.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// A path, `pool/volume`, or null for an empty drive.
    pub source: Option<&'a str>,
    pub format: Option<&'a str>,
    pub capacity_bytes: Option<u64>,
    pub allocation_bytes: Option<u64>,
}

/// One network interface of a [`VmRecord`].
#[derive(Debug, Serialize)]
pub struct InterfaceRecord<'a> {
    pub mac: Option<&'a str>,
    /// `network`, `bridge`, `direct`, `user`…
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub source: Option<&'a str>,
    pub model: Option<&'a str>,
}

fn record<'a>(b: &'a Basic, d: &'a Detail) -> VmRecord<'a> {
    let disks = d
        .xml
        .disks
        .iter()
        .map(|disk| {
            let (capacity_bytes, allocation_bytes) = block_sizes(&b.stats, &disk.target);
            DiskRecord {
                target: &disk.target,
                device: &disk.device,
                kind: &disk.kind,
                source: disk.source.as_deref(),
                format: disk.format.as_deref(),
                capacity_bytes,
                allocation_bytes,
            }
        })
        .collect();
    let interfaces = d
        .xml
        .interfaces
        .iter()
        .map(|i| InterfaceRecord {
            mac: i.mac.as_deref(),
            kind: &i.kind,
            source: i.source.as_deref(),
            model: i.model.as_deref(),
        })
        .collect();
    VmRecord {
        name: &b.name,
        uuid: &b.uuid,
        domain_id: b.id,
        state: b.state,
        persistent: b.persistent,
        autostart: b.autostart,
        vcpus: d.xml.vcpus,
        memory_bytes: d.xml.memory_bytes,
        max_memory_bytes: d.xml.max_memory_bytes,
        cpu_time_ns: cpu_time_ns(b),
        disks,
        interfaces,
        snapshot_count: d.snapshots,
        checkpoint_count: d.checkpoints,
        tags: &d.xml.tags,
    }
}

/// CPU time of the running QEMU. libvirt answers for an inactive domain
/// too, with a figure no process is using now (a stopped VM showed its
/// last run's 15 s), and docs/records.md promises 0.
fn cpu_time_ns(b: &Basic) -> u64 {
    match b.id {
        Some(_) => b.stats.u64("cpu.time").unwrap_or(0),
        None => 0,
    }
}

/// Capacity and allocation of the disk with this target, from the block
/// statistics (libvirt reports them for inactive domains too).
fn block_sizes(stats: &Stats, target: &str) -> (Option<u64>, Option<u64>) {
    let count = stats.u64("block.count").unwrap_or(0);
    (0..count)
        .find(|i| stats.str(&format!("block.{i}.name")) == Some(target))
        .map(|i| {
            (
                stats.u64(&format!("block.{i}.capacity")),
                stats.u64(&format!("block.{i}.allocation")),
            )
        })
        .unwrap_or((None, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/records.md is the contract scripts read: it names exactly the
    /// fields of the record hv-ls prints, in its order.
    #[test]
    fn the_vm_record_is_the_documented_one() {
        let xml = DomainXml::default();
        let record = VmRecord {
            name: "web 1",
            uuid: "u",
            domain_id: None,
            state: VmState::bare(State::Shutoff),
            persistent: true,
            autostart: false,
            vcpus: 1,
            memory_bytes: 0,
            max_memory_bytes: 0,
            cpu_time_ns: 0,
            disks: Vec::new(),
            interfaces: Vec::new(),
            snapshot_count: 0,
            checkpoint_count: 0,
            tags: &xml.tags,
        };
        let fields: Vec<String> = output::to_record(&record).keys().cloned().collect();
        assert_eq!(
            fields,
            hv_testbench::documented_fields("records.md", "## VM records (hv-ls)")
        );
    }
}
