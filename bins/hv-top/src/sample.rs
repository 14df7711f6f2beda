//! One refresh of one host, in a fixed number of libvirt calls whatever
//! the number of VMs (as hv-metrics scrapes): the domain list, one
//! statistics call for all of them, the node's size and free memory, the
//! autostart list and the pools. Rates (CPU %, disk and network bytes per
//! second) are differences between two refreshes, so the first frame has
//! none. A VM's tags need its XML, one call each: they are read when the
//! VM is first seen and kept, so a steady screen costs no per-VM calls.
//! Snapshot counts change rarely and cost a call per VM that has any: they
//! are read when a VM is first seen and then on a slow pass (every 30 s),
//! not at every refresh. Uptime is not libvirt's to tell: on this
//! machine's system daemon it is the age of the VM's QEMU process.

use hv_common::ffi::{self, Stats};
use hv_common::local_qemu::LocalQemu;
use hv_common::{domain, Error, Result, State};
use serde::Serialize;
use std::collections::HashMap;
use std::time::Instant;
use virt::connect::Connect;

/// What one refresh read of a host.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub host: Host,
    pub vms: Vec<Counters>,
}

/// The host's own figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Host {
    /// Its alias in a run over several hosts, else None.
    pub alias: Option<String>,
    pub uri: String,
    pub libvirt_version: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub free_memory_bytes: u64,
    /// Each active pool: name, capacity and available bytes.
    pub pools: Vec<(String, u64, u64)>,
}

/// One VM's counters at one refresh.
#[derive(Debug, Clone, PartialEq)]
pub struct Counters {
    pub name: String,
    pub uuid: String,
    pub state: State,
    pub autostart: bool,
    pub vcpus: u64,
    pub cpu_time_ns: u64,
    pub memory_bytes: u64,
    pub max_memory_bytes: u64,
    /// What its QEMU holds in the host's memory; None when it does not run.
    pub memory_resident_bytes: Option<u64>,
    pub disk_read_bytes: u64,
    pub disk_write_bytes: u64,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub tags: Vec<String>,
    /// When its QEMU started (Unix seconds): known for a running VM of
    /// this machine's system daemon only.
    pub started_unix: Option<i64>,
    pub snapshot_count: Option<u64>,
}

/// What a host's refreshes keep of each VM (by UUID) between them: what
/// costs a call per VM, read when first seen (tags, start time) or on the
/// slow pass (snapshot counts).
#[derive(Debug, Default)]
pub struct Known {
    tags: HashMap<String, Vec<String>>,
    snapshots: HashMap<String, u64>,
    /// The domain id of the run the start time is of, and the time.
    started: HashMap<String, (u32, Option<i64>)>,
    /// Whether the host is this machine's system daemon, whose QEMU
    /// processes hv can see.
    local: Option<bool>,
}

/// Reads a host. `slow`: also count every VM's snapshots again.
pub fn sample(
    conn: &Connect,
    alias: Option<&str>,
    known: &mut Known,
    slow: bool,
) -> Result<Sample> {
    let libvirt = |what: &'static str| move |e: virt::error::Error| Error::libvirt(what, &e);
    let all = conn
        .list_all_domains(0)
        .map_err(libvirt("cannot list the VMs"))?;
    let groups = ffi::STATS_STATE
        | ffi::STATS_CPU_TOTAL
        | ffi::STATS_BALLOON
        | ffi::STATS_VCPU
        | ffi::STATS_BLOCK
        | ffi::STATS_INTERFACE;
    let stats = ffi::domain_stats(&all, groups, ffi::STATS_NOWAIT)
        .map_err(libvirt("cannot read the VMs' statistics"))?;
    let autostart = domain::uuids_listed(conn, virt::sys::VIR_CONNECT_LIST_DOMAINS_AUTOSTART)?;
    let info = conn.node_info().map_err(libvirt("cannot read the host"))?;
    let free = conn
        .free_memory()
        .map_err(libvirt("cannot read the host's memory"))?;
    let at = Instant::now();
    let seen: HashMap<String, &virt::domain::Domain> = all
        .iter()
        .filter_map(|d| Some((d.uuid_string().ok()?, d)))
        .collect();
    known.tags.retain(|uuid, _| seen.contains_key(uuid));
    known.started.retain(|uuid, _| seen.contains_key(uuid));
    let local = *known
        .local
        .get_or_insert_with(|| conn.uri().is_ok_and(|u| u == "qemu:///system"));
    // One bulk call says which VMs have snapshots at all: only those are
    // counted, and only when new or on the slow pass.
    let with_snapshots = if slow || seen.keys().any(|u| !known.snapshots.contains_key(u)) {
        domain::uuids_listed(conn, virt::sys::VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT).ok()
    } else {
        None
    };
    if let Some(with) = &with_snapshots {
        known
            .snapshots
            .retain(|uuid, _| seen.contains_key(uuid) && with.contains(uuid));
        for (uuid, d) in &seen {
            let stale = slow || !known.snapshots.contains_key(uuid);
            if with.contains(uuid) && stale {
                if let Ok(n) = d.num_snapshots(0) {
                    known.snapshots.insert(uuid.clone(), u64::from(n));
                }
            } else if !with.contains(uuid) {
                known.snapshots.insert(uuid.clone(), 0);
            }
        }
    }
    let vms = stats
        .iter()
        .map(|s| {
            let d = seen.get(&s.uuid);
            let t = known
                .tags
                .entry(s.uuid.clone())
                .or_insert_with(|| {
                    d.and_then(|d| domain::definition(d).ok())
                        .map(|(_, x)| x.tags)
                        .unwrap_or_default()
                })
                .clone();
            let mut c = counters(s, autostart.contains(&s.uuid), t);
            c.snapshot_count = known.snapshots.get(&s.uuid).copied();
            if local && c.state.is_active() {
                // A domain's id is new at each start: the start time is read
                // once per run of the VM.
                let id = d.and_then(|d| d.id()).unwrap_or(0);
                let (was, started) = known.started.entry(s.uuid.clone()).or_insert((0, None));
                if *was != id {
                    *was = id;
                    *started = LocalQemu::find(&c.name, &c.uuid).and_then(|q| q.started_unix());
                }
                c.started_unix = *started;
            }
            c
        })
        .collect();
    let host = Host {
        alias: alias.map(str::to_owned),
        uri: conn.uri().unwrap_or_default(),
        libvirt_version: conn
            .lib_version()
            .map(hv_common::connect::version_text)
            .unwrap_or_default(),
        cpus: info.cpus,
        memory_bytes: info.memory * 1024,
        free_memory_bytes: free,
        pools: pools(conn),
    };
    Ok(Sample { at, host, vms })
}

fn counters(s: &Stats, autostart: bool, tags: Vec<String>) -> Counters {
    let sum = |count: &str, key: &str| -> u64 {
        (0..s.u64(count).unwrap_or(0))
            .filter_map(|i| s.u64(&format!("{}.{i}.{key}", count.trim_end_matches(".count"))))
            .sum()
    };
    let raw_state = s.u64("state.state").unwrap_or(0) as u32;
    Counters {
        name: s.name.clone(),
        uuid: s.uuid.clone(),
        state: State::from_raw(raw_state),
        autostart,
        vcpus: s.u64("vcpu.current").unwrap_or(0),
        cpu_time_ns: s.u64("cpu.time").unwrap_or(0),
        memory_bytes: s.u64("balloon.current").unwrap_or(0) * 1024,
        max_memory_bytes: s.u64("balloon.maximum").unwrap_or(0) * 1024,
        memory_resident_bytes: s
            .u64("balloon.rss")
            .filter(|_| State::from_raw(raw_state).is_active())
            .map(|kib| kib * 1024),
        disk_read_bytes: sum("block.count", "rd.bytes"),
        disk_write_bytes: sum("block.count", "wr.bytes"),
        net_rx_bytes: sum("net.count", "rx.bytes"),
        net_tx_bytes: sum("net.count", "tx.bytes"),
        tags,
        started_unix: None,
        snapshot_count: None,
    }
}

fn pools(conn: &Connect) -> Vec<(String, u64, u64)> {
    let Ok(pools) = conn.list_all_storage_pools(virt::sys::VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
    else {
        return Vec::new();
    };
    let mut out: Vec<(String, u64, u64)> = pools
        .iter()
        .filter_map(|p| {
            let info = p.info().ok()?;
            Some((p.name().ok()?, info.capacity, info.available))
        })
        .collect();
    out.sort();
    out
}

/// A VM as a row of the screen and a record of `--once`: its counters with
/// the rates since the last refresh (null on the first).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub name: String,
    pub uuid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub state: State,
    pub autostart: bool,
    pub vcpus: u64,
    /// CPU time per wall time, in percent of one CPU (200 = two busy
    /// vCPUs), to a tenth; null before a second refresh and for a VM that
    /// does not run.
    pub cpu_percent: Option<f64>,
    pub memory_bytes: u64,
    pub max_memory_bytes: u64,
    /// QEMU's resident memory on the host (libvirt's `balloon.rss`): what
    /// the VM costs the host, against what it is assigned; null when it
    /// does not run.
    pub memory_resident_bytes: Option<u64>,
    /// Bytes per second since the last refresh; null as `cpu_percent` is.
    pub disk_read_bytes_per_s: Option<u64>,
    pub disk_write_bytes_per_s: Option<u64>,
    pub net_rx_bytes_per_s: Option<u64>,
    pub net_tx_bytes_per_s: Option<u64>,
    pub tags: Vec<String>,
    /// Seconds since the VM's QEMU started; null when it does not run, or
    /// runs on another host (hv sees only this machine's processes).
    pub uptime_seconds: Option<i64>,
    /// Null until counted (the first refresh counts every VM).
    pub snapshot_count: Option<u64>,
    /// Seconds since its newest backup in the repository (`--repo`); null
    /// without a repository or a backup.
    pub last_backup_age_seconds: Option<i64>,
}

/// The rows of `now`, with rates against `before` (same host).
pub fn rows(now: &Sample, before: Option<&Sample>) -> Vec<Row> {
    let earlier: HashMap<&str, &Counters> = before
        .map(|b| b.vms.iter().map(|c| (c.uuid.as_str(), c)).collect())
        .unwrap_or_default();
    let secs = before.map(|b| now.at.duration_since(b.at).as_secs_f64());
    now.vms
        .iter()
        .map(|c| {
            // A VM that does not run has no rates: libvirt may still report
            // the CPU time of its last run.
            let was = earlier
                .get(c.uuid.as_str())
                .copied()
                .filter(|_| c.state.is_active());
            let rate = |f: fn(&Counters) -> u64| -> Option<f64> {
                let (was, secs) = (was?, secs?);
                (secs > 0.0 && f(c) >= f(was)).then(|| (f(c) - f(was)) as f64 / secs)
            };
            let per_s = |f: fn(&Counters) -> u64| rate(f).map(|r| r.round() as u64);
            Row {
                name: c.name.clone(),
                uuid: c.uuid.clone(),
                host: now.host.alias.clone(),
                state: c.state,
                autostart: c.autostart,
                vcpus: c.vcpus,
                cpu_percent: rate(|c| c.cpu_time_ns).map(|ns| (ns / 1e6).round() / 10.0),
                memory_bytes: c.memory_bytes,
                max_memory_bytes: c.max_memory_bytes,
                memory_resident_bytes: c.memory_resident_bytes,
                disk_read_bytes_per_s: per_s(|c| c.disk_read_bytes),
                disk_write_bytes_per_s: per_s(|c| c.disk_write_bytes),
                net_rx_bytes_per_s: per_s(|c| c.net_rx_bytes),
                net_tx_bytes_per_s: per_s(|c| c.net_tx_bytes),
                tags: c.tags.clone(),
                uptime_seconds: c.started_unix.map(|t| (hv_common::time::now() - t).max(0)),
                snapshot_count: c.snapshot_count,
                last_backup_age_seconds: None,
            }
        })
        .collect()
}

/// Each VM's newest backup in a repository, by UUID (Unix seconds), and
/// the free space where the repository lives. Read from the repository's
/// clear indexes, without its identity or its lock, as hv-health does.
pub struct Backups {
    pub newest: HashMap<String, i64>,
    pub free_bytes: Option<u64>,
}

pub fn backups(repo: &std::path::Path) -> Result<Backups> {
    let list = hv_common::backup_index::list_all(repo)?;
    let mut newest: HashMap<String, i64> = HashMap::new();
    for b in list.backups {
        let t = newest.entry(b.uuid).or_insert(b.time_unix);
        *t = (*t).max(b.time_unix);
    }
    let free_bytes = hv_common::ffi::fs_space(repo)
        .ok()
        .map(|s| s.available_bytes);
    Ok(Backups { newest, free_bytes })
}

/// Fills in each row's backup age from [`backups`].
pub fn with_backups(rows: &mut [Row], backups: &Backups, now: i64) {
    for r in rows {
        r.last_backup_age_seconds = backups.newest.get(&r.uuid).map(|t| (now - t).max(0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(uuid: &str, cpu: u64, read: u64) -> Counters {
        Counters {
            name: uuid.to_uppercase(),
            uuid: uuid.into(),
            state: State::Running,
            autostart: false,
            vcpus: 2,
            cpu_time_ns: cpu,
            memory_bytes: 1 << 30,
            max_memory_bytes: 1 << 30,
            memory_resident_bytes: Some(1 << 29),
            disk_read_bytes: read,
            disk_write_bytes: 0,
            net_rx_bytes: 0,
            net_tx_bytes: 0,
            tags: vec![],
            started_unix: None,
            snapshot_count: None,
        }
    }

    /// docs/top.md names every field of a `--once` record, in order.
    #[test]
    fn records_are_the_documented_ones() {
        let now = Sample {
            at: Instant::now(),
            host: Host {
                alias: Some("h1".into()),
                ..Host::default()
            },
            vms: vec![vm("a", 0, 0)],
        };
        let record = hv_common::output::to_record(&rows(&now, None)[0]);
        hv_testbench::assert_documented(&record, "top.md", "## `--once`");
    }

    #[test]
    fn rates_come_from_two_refreshes() {
        let t0 = Instant::now();
        let before = Sample {
            at: t0,
            host: Host::default(),
            vms: vec![vm("a", 0, 0), vm("b", 5_000_000_000, 100)],
        };
        let now = Sample {
            at: t0 + std::time::Duration::from_secs(2),
            host: Host::default(),
            // a used 3 s of CPU in 2 s (150 %); b restarted (its counters
            // went back); c is new.
            vms: vec![vm("a", 3_000_000_000, 4096), vm("b", 1, 0), vm("c", 9, 9)],
        };
        let rows = rows(&now, Some(&before));
        assert_eq!(rows[0].cpu_percent, Some(150.0));
        assert_eq!(rows[0].disk_read_bytes_per_s, Some(2048));
        assert_eq!(rows[1].cpu_percent, None, "a counter that went back");
        assert_eq!(rows[2].cpu_percent, None, "no earlier refresh of it");
        assert!(super::rows(&now, None)
            .iter()
            .all(|r| r.cpu_percent.is_none()));
        let mut off = now.clone();
        off.vms[0].state = State::Shutoff;
        assert_eq!(
            super::rows(&off, Some(&before))[0].cpu_percent,
            None,
            "not running"
        );
    }
}
