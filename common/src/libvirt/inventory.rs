//! A VM as hv-ls prints it (docs/records.md, "VM records"), read for
//! many domains at once: hv-ls lists them, and hv-define and hv-clone
//! answer with the record of the VM they made, so a made VM looks exactly
//! as a listed one. Bulk calls first (a handful of round trips), then a
//! few small per-domain reads in parallel, never a `virsh dominfo` per VM.

use crate::domain::{self, DomainXml};
use crate::ffi::{self, Stats};
use crate::{Code, Error, Result, VmState};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use virt::connect::Connect;
use virt::domain::Domain;

/// How many domains' XML are fetched at once. libvirt's daemon answers
/// concurrent calls on one connection; on a 2-core host 8 in flight cut the
/// per-domain phase from 180 ms to 100 ms for 1000 domains (1 and 4 were slower).
const DETAIL_THREADS: usize = 8;

/// What the bulk calls tell about a domain, before any per-domain call.
pub struct Basic {
    pub domain: Domain,
    pub name: String,
    pub uuid: String,
    pub id: Option<u32>,
    pub state: VmState,
    pub persistent: bool,
    pub autostart: bool,
    /// Whether counting is worth a call: most domains have neither.
    pub has_snapshots: bool,
    pub has_checkpoints: bool,
    pub stats: Stats,
}

/// What needs one call per domain.
pub struct Detail {
    pub xml: DomainXml,
    pub snapshots: u32,
    pub checkpoints: u32,
}

pub fn basics(conn: &Connect, domains: Vec<Domain>) -> Result<Vec<Basic>> {
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
pub fn details(basics: &[Basic]) -> Vec<Result<Option<Detail>>> {
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
    /// The host it is on, in a run that names hosts (docs/hosts.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<&'a str>,
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

pub fn record<'a>(b: &'a Basic, d: &'a Detail) -> VmRecord<'a> {
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
        host: None,
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

/// One domain's record as hv-ls prints it; `Ok(None)` when it disappeared
/// while being read.
pub type Listed = Result<Option<serde_json::Map<String, serde_json::Value>>>;

/// The records of `domains`, each as hv-ls prints it, with `host` when
/// the run named its host.
pub fn records(conn: &Connect, domains: Vec<Domain>, host: Option<&str>) -> Result<Vec<Listed>> {
    let basics = basics(conn, domains)?;
    let details = details(&basics);
    Ok(basics
        .iter()
        .zip(details)
        .map(|(b, d)| {
            d.map(|d| {
                d.map(|d| {
                    crate::output::to_record(&VmRecord {
                        host,
                        ..record(b, &d)
                    })
                })
            })
        })
        .collect())
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
            host: Some("h1"),
            domain_id: None,
            state: VmState::bare(crate::State::Shutoff),
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
        let fields: Vec<String> = crate::output::to_record(&record).keys().cloned().collect();
        assert_eq!(
            fields,
            hv_testbench::documented_fields("records.md", "## VM records (hv-ls)")
        );
    }
}
