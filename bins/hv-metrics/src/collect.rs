//! One scrape: what libvirt says about the host and every domain, and what
//! hv's own files say about backups. libvirt is asked in bulk (list filters
//! for running, autostart and persistent domains, virDomainListGetStats over
//! many domains per call); per-domain calls are made only for domains that
//! have snapshots. Each part is a collector that can fail alone: its failure
//! is reported and the rest of the scrape still comes out.

use crate::exposition::Exposition;
use crate::remembered::{Listed, Remembered};
use hv_common::connect::version_text;
use hv_common::domain;
use hv_common::ffi::{self, Stats};
use hv_common::{backup_index, health_state, iso_library, snapshot, time, Code, Error, Result};
use hv_common::{State, VmState};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use virt::connect::Connect;
use virt::sys;

/// What a scrape reads besides libvirt.
pub struct Sources {
    /// `--host-label`: a `host` label on every series.
    pub host_label: Option<String>,
    pub repos: Vec<PathBuf>,
    pub backup_results: Option<PathBuf>,
    pub iso_library: Option<PathBuf>,
    /// hv-health's state file, for its repairs.
    pub health_state: Option<PathBuf>,
}

pub struct Scrape {
    pub exposition: Exposition,
    pub errors: Vec<Error>,
}

/// One scrape. The parts that wait on libvirt's domain statistics, on the
/// host and pools, and on hv's files run side by side, so a scrape takes
/// about as long as its slowest part.
pub fn scrape(conn: Option<&Connect>, sources: &Sources, memory: &mut Remembered) -> Scrape {
    let start = Instant::now();
    let mut s = Scraper::default();
    let (host_part, files_part) = std::thread::scope(|scope| {
        let host_part = conn.map(|conn| {
            scope.spawn(move || {
                let mut s = Scraper::default();
                s.run("host", |e| host(e, conn));
                s.run("pools", |e| pools(e, conn));
                s.run("networks", |e| networks(e, conn));
                s
            })
        });
        let files_part = scope.spawn(|| files(sources));
        let up = conn.is_some_and(|conn| {
            let vms = s.run("domains", |e| domains(e, conn, memory));
            if let Some(vms) = &vms {
                s.run("snapshots", |e| snapshots(e, conn, vms));
            }
            vms.is_some()
        });
        s.e.add("hv_libvirt_up", &[], bool_value(up));
        let joined =
            |part: std::thread::ScopedJoinHandle<'_, Scraper>| part.join().expect("scrape part");
        (host_part.map(joined), joined(files_part))
    });
    s.absorb(host_part.unwrap_or_default());
    s.absorb(files_part);
    s.e.add(
        "hv_scrape_duration_seconds",
        &[],
        start.elapsed().as_secs_f64(),
    );
    let mut exposition = s.e;
    exposition.host = sources.host_label.clone();
    Scrape {
        exposition,
        errors: s.errors,
    }
}

/// What hv's own files say: backup repositories, backup results, the ISO
/// library.
fn files(sources: &Sources) -> Scraper {
    let mut s = Scraper::default();
    if !sources.repos.is_empty() {
        // One collector for all repositories: its series must be unique.
        // Each repository's own state is hv_backup_repository_up.
        s.run("backups", |e| {
            let failed: Vec<Error> = sources
                .repos
                .iter()
                .filter_map(|repo| backups(e, repo).err())
                .collect();
            match failed.first() {
                None => Ok(()),
                Some(first) => {
                    let all: Vec<&str> = failed.iter().map(|e| e.message.as_str()).collect();
                    Err(Error::new(first.code, all.join("; ")))
                }
            }
        });
    }
    if let Some(file) = &sources.backup_results {
        s.run("backup_results", |e| backup_results(e, file));
    }
    if let Some(dir) = &sources.iso_library {
        s.run("isos", |e| isos(e, dir));
    }
    if let Some(file) = &sources.health_state {
        s.run("autofix", |e| autofix(e, file));
    }
    s
}

/// What hv-health --fix did and gave up on, from its state file.
fn autofix(e: &mut Exposition, file: &Path) -> Result<()> {
    for (key, h) in health_state::read_fixes(file)? {
        let uuid = health_state::uuid_of(&key);
        let vm = [("name", h.name.as_str()), ("uuid", uuid)];
        e.add("hv_autofix_attempts", &vm, h.attempts.len() as f64);
        if let Some(g) = &h.gave_up {
            let labels = [
                ("name", h.name.as_str()),
                ("uuid", uuid),
                ("check", g.check.as_str()),
            ];
            e.add("hv_autofix_gave_up", &labels, 1.0);
        }
    }
    Ok(())
}

#[derive(Default)]
struct Scraper {
    e: Exposition,
    errors: Vec<Error>,
}

impl Scraper {
    fn absorb(&mut self, other: Scraper) {
        self.e.absorb(other.e);
        self.errors.extend(other.errors);
    }

    fn run<T>(
        &mut self,
        collector: &'static str,
        f: impl FnOnce(&mut Exposition) -> Result<T>,
    ) -> Option<T> {
        let start = Instant::now();
        let result = f(&mut self.e);
        let labels = [("collector", collector)];
        self.e.add(
            "hv_scrape_collector_duration_seconds",
            &labels,
            start.elapsed().as_secs_f64(),
        );
        self.e.add(
            "hv_scrape_collector_success",
            &labels,
            bool_value(result.is_ok()),
        );
        result.map_err(|err| self.errors.push(err)).ok()
    }
}

fn bool_value(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// A domain's identity, as the labels every VM series carries.
fn vm_id(stats: &Stats) -> [(&'static str, &str); 2] {
    [("name", stats.name.as_str()), ("uuid", stats.uuid.as_str())]
}

/// Running domains' statistics are read by this many threads at once.
/// libvirt reads them one domain after another, each with a few round trips
/// to that domain's QEMU monitor; a monitor answers only when its QEMU gets
/// the CPU, so on a loaded host the waits dominate, and concurrent calls
/// overlap them. With the stream of cheap calls [`domains`] makes meanwhile
/// and the host part's, a scrape keeps within the 5 calls of one client
/// libvirtd serves at once (`max_client_requests`; it leaves further calls
/// unread). Measured with 10 busy TCG guests among 200 domains on 2 cores
/// (`cargo xtask bench-metrics`): 1 call took 1.4 to 1.6 times as long as
/// 3, and 4, 5 or 10 as long as 3.
const STATS_CALLS: usize = 3;

/// Domains (indices into the listing) asked for the same statistics groups
/// in one call.
type Call = (u32, Vec<usize>);

type StatsAnswer = std::result::Result<Vec<Stats>, virt::error::Error>;

/// Every domain's series, from statistics asked in calls grouped by what is
/// asked of each domain (a stopped domain has no CPU or network counters,
/// and [`Remembered`] knows some of the rest). Running domains, whose calls
/// wait on QEMU monitors, are read by [`STATS_CALLS`] threads; meanwhile
/// this thread makes the cheap calls one after another. The number of
/// calls does not grow with the number of domains.
fn domains(e: &mut Exposition, conn: &Connect, memory: &mut Remembered) -> Result<Vec<Stats>> {
    let all = conn
        .list_all_domains(0)
        .map_err(|err| Error::libvirt("cannot list domains", &err))?;
    let listed: Vec<Listed> = all
        .iter()
        .map(|d| Listed {
            uuid: d.uuid_string().unwrap_or_default(),
            name: d.name().unwrap_or_default(),
            id: d.id(),
        })
        .collect();
    memory.expire(&listed);
    let (live, stopped) = plan(&listed, |domain| memory.groups(domain));
    let ask = |(groups, members): &Call| {
        let doms: Vec<&virt::domain::Domain> = members.iter().map(|&i| &all[i]).collect();
        // NOWAIT: a domain busy in another job (a backup) is reported with
        // what libvirt has at hand instead of stalling the scrape.
        ffi::domain_stats(&doms, *groups, ffi::STATS_NOWAIT)
    };
    std::thread::scope(|s| {
        let threads: Vec<_> = live
            .iter()
            .map(|calls| s.spawn(move || calls.iter().map(ask).collect::<Vec<_>>()))
            .collect();
        // Aside until the running domains are in: a failed domains
        // collector writes no series at all.
        let mut aside = Exposition::default();
        let (mut stats, flags) = cheap_part(&mut aside, conn, memory, &listed, &stopped, ask)?;
        let answers = threads
            .into_iter()
            .flat_map(|t| t.join().expect("stats thread"));
        let running = completed(memory, &listed, live.iter().flatten().zip(answers))?;
        e.absorb(aside);
        vm_series(e, &running, &flags);
        stats.extend(running);
        e.add("hv_host_domains", &[], stats.len() as f64);
        Ok(stats)
    })
}

/// What is asked while the running domains' calls are out: the stopped
/// domains' statistics, whose series are written meanwhile, and the
/// autostart and transient lists.
fn cheap_part(
    e: &mut Exposition,
    conn: &Connect,
    memory: &mut Remembered,
    listed: &[Listed],
    stopped: &[Call],
    ask: impl Fn(&Call) -> StatsAnswer,
) -> Result<(Vec<Stats>, Flags)> {
    let answers = stopped.iter().map(&ask);
    let stats = completed(memory, listed, stopped.iter().zip(answers))?;
    let listed_with = |flags| domain::uuids_listed(conn, flags);
    let flags = Flags {
        autostart: listed_with(sys::VIR_CONNECT_LIST_DOMAINS_AUTOSTART)?,
        // Few domains are transient: listing those is cheaper than the rest.
        transient: listed_with(sys::VIR_CONNECT_LIST_DOMAINS_TRANSIENT)?,
    };
    vm_series(e, &stats, &flags);
    Ok((stats, flags))
}

/// Statistics calls' answers, completed from what is remembered.
fn completed<'a>(
    memory: &mut Remembered,
    listed: &[Listed],
    answered: impl Iterator<Item = (&'a Call, StatsAnswer)>,
) -> Result<Vec<Stats>> {
    let by_uuid: HashMap<&str, &Listed> = listed.iter().map(|l| (l.uuid.as_str(), l)).collect();
    let mut out = Vec::new();
    for ((groups, _), answer) in answered {
        let answer = answer.map_err(|err| Error::libvirt("cannot read domain statistics", &err))?;
        for mut one in answer {
            if let Some(domain) = by_uuid.get(one.uuid.as_str()) {
                memory.complete(&mut one, *groups, domain);
            }
            out.push(one);
        }
    }
    Ok(out)
}

/// Which domains start with the host and which are not defined, by UUID.
struct Flags {
    autostart: HashSet<String>,
    transient: HashSet<String>,
}

/// The statistics calls for `listed`, given the groups to ask of each
/// domain: for running domains, one list of calls per thread, at most
/// [`STATS_CALLS`] (a thread makes one call per set of groups among its
/// domains, one after another); for stopped domains, one call per set.
fn plan(listed: &[Listed], groups: impl Fn(&Listed) -> u32) -> (Vec<Vec<Call>>, Vec<Call>) {
    let mut by_groups: BTreeMap<(bool, u32), Vec<usize>> = BTreeMap::new();
    for (i, domain) in listed.iter().enumerate() {
        let key = (domain.id.is_some(), groups(domain));
        by_groups.entry(key).or_default().push(i);
    }
    let (mut running, mut stopped) = (Vec::new(), Vec::new());
    for ((is_live, groups), members) in by_groups {
        if is_live {
            running.extend(members.into_iter().map(|i| (groups, i)));
        } else {
            stopped.push((groups, members));
        }
    }
    let per_thread = running.len().div_ceil(STATS_CALLS).max(1);
    let live = running
        .chunks(per_thread)
        .map(|share| {
            let mut calls: Vec<Call> = Vec::new();
            for &(groups, i) in share {
                match calls.last_mut() {
                    Some((same, members)) if *same == groups => members.push(i),
                    _ => calls.push((groups, vec![i])),
                }
            }
            calls
        })
        .collect();
    (live, stopped)
}

fn vm_series(e: &mut Exposition, vms: &[Stats], flags: &Flags) {
    for one in vms {
        let id = vm_id(one);
        vm_state(e, one);
        e.add(
            "hv_vm_autostart",
            &id,
            bool_value(flags.autostart.contains(&one.uuid)),
        );
        e.add(
            "hv_vm_persistent",
            &id,
            bool_value(!flags.transient.contains(&one.uuid)),
        );
        vm_values(e, &id, one);
        devices(e, &id, one, "block", "target", DISK_VALUES);
        devices(e, &id, one, "net", "interface", NET_VALUES);
    }
}

fn vm_state(e: &mut Exposition, stats: &Stats) {
    let id = vm_id(stats);
    let current = VmState::from_raw(
        stats.u64("state.state").unwrap_or(0) as u32,
        stats.u64("state.reason").unwrap_or(0) as u32,
    );
    for state in State::ALL {
        let labels = [id[0], id[1], ("state", state.as_str())];
        e.add("hv_vm_state", &labels, bool_value(state == current.state));
    }
    let labels = [
        id[0],
        id[1],
        ("state", current.state.as_str()),
        ("reason", current.reason_name()),
    ];
    e.add("hv_vm_state_reason", &labels, 1.0);
    e.add("hv_vm_crashed", &id, bool_value(current.crashed()));
}

/// libvirt's stats key, hv's metric, and how to reach base units.
type Mapping = (&'static str, &'static str, Scale);

#[derive(Clone, Copy)]
enum Scale {
    One,
    /// Nanoseconds to seconds (a division, so 120000000 ns prints as 0.12).
    Ns,
    Kib,
}

impl Scale {
    fn apply(self, v: u64) -> f64 {
        match self {
            Scale::One => v as f64,
            Scale::Ns => v as f64 / 1e9,
            Scale::Kib => v as f64 * 1024.0,
        }
    }
}

use Scale::{Kib, Ns, One};

const VM_VALUES: &[Mapping] = &[
    ("vcpu.current", "hv_vm_vcpus", One),
    ("vcpu.maximum", "hv_vm_vcpus_max", One),
    ("cpu.time", "hv_vm_cpu_seconds_total", Ns),
    ("cpu.user", "hv_vm_cpu_user_seconds_total", Ns),
    ("cpu.system", "hv_vm_cpu_system_seconds_total", Ns),
    ("balloon.current", "hv_vm_memory_bytes", Kib),
    ("balloon.maximum", "hv_vm_memory_max_bytes", Kib),
    ("balloon.rss", "hv_vm_memory_rss_bytes", Kib),
    (
        "balloon.available",
        "hv_vm_memory_guest_available_bytes",
        Kib,
    ),
    ("balloon.unused", "hv_vm_memory_guest_unused_bytes", Kib),
    ("balloon.usable", "hv_vm_memory_guest_usable_bytes", Kib),
    (
        "balloon.disk_caches",
        "hv_vm_memory_guest_disk_caches_bytes",
        Kib,
    ),
    ("balloon.swap_in", "hv_vm_memory_swap_in_bytes_total", Kib),
    ("balloon.swap_out", "hv_vm_memory_swap_out_bytes_total", Kib),
    (
        "balloon.major_fault",
        "hv_vm_memory_major_faults_total",
        One,
    ),
    (
        "balloon.minor_fault",
        "hv_vm_memory_minor_faults_total",
        One,
    ),
];

const DISK_VALUES: &[Mapping] = &[
    ("rd.bytes", "hv_vm_disk_read_bytes_total", One),
    ("wr.bytes", "hv_vm_disk_write_bytes_total", One),
    ("rd.reqs", "hv_vm_disk_read_requests_total", One),
    ("wr.reqs", "hv_vm_disk_write_requests_total", One),
    ("fl.reqs", "hv_vm_disk_flush_requests_total", One),
    ("rd.times", "hv_vm_disk_read_seconds_total", Ns),
    ("wr.times", "hv_vm_disk_write_seconds_total", Ns),
    ("fl.times", "hv_vm_disk_flush_seconds_total", Ns),
    ("capacity", "hv_vm_disk_capacity_bytes", One),
    ("allocation", "hv_vm_disk_allocation_bytes", One),
    ("physical", "hv_vm_disk_physical_bytes", One),
];

const NET_VALUES: &[Mapping] = &[
    ("rx.bytes", "hv_vm_network_receive_bytes_total", One),
    ("rx.pkts", "hv_vm_network_receive_packets_total", One),
    ("rx.errs", "hv_vm_network_receive_errors_total", One),
    ("rx.drop", "hv_vm_network_receive_drops_total", One),
    ("tx.bytes", "hv_vm_network_transmit_bytes_total", One),
    ("tx.pkts", "hv_vm_network_transmit_packets_total", One),
    ("tx.errs", "hv_vm_network_transmit_errors_total", One),
    ("tx.drop", "hv_vm_network_transmit_drops_total", One),
];

fn vm_values(e: &mut Exposition, id: &[(&'static str, &str)], stats: &Stats) {
    for (key, metric, factor) in VM_VALUES {
        if let Some(v) = stats.u64(key) {
            e.add(metric, id, factor.apply(v));
        }
    }
}

/// Disks (`block.N.*`) or interfaces (`net.N.*`), labelled by their name.
fn devices(
    e: &mut Exposition,
    id: &[(&'static str, &str)],
    stats: &Stats,
    group: &str,
    label: &'static str,
    mapping: &[Mapping],
) {
    let count = stats.u64(&format!("{group}.count")).unwrap_or(0);
    for i in 0..count {
        let Some(dev) = stats.str(&format!("{group}.{i}.name")) else {
            continue;
        };
        let labels = [id[0], id[1], (label, dev)];
        if group == "block" {
            let source = stats.str(&format!("block.{i}.path")).unwrap_or("");
            let info = [id[0], id[1], (label, dev), ("source", source)];
            e.add("hv_vm_disk_info", &info, 1.0);
        }
        for (key, metric, factor) in mapping {
            if let Some(v) = stats.u64(&format!("{group}.{i}.{key}")) {
                e.add(metric, &labels, factor.apply(v));
            }
        }
    }
}

/// Snapshot counts for every VM; libvirt is asked per domain only for the
/// domains its list filter says have snapshots.
fn snapshots(e: &mut Exposition, conn: &Connect, vms: &[Stats]) -> Result<()> {
    let with = domain::uuids_listed(conn, sys::VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT)?;
    for vm in vms {
        let id = vm_id(vm);
        if !with.contains(&vm.uuid) {
            e.add("hv_vm_snapshots", &id, 0.0);
            continue;
        }
        let (count, oldest) = snapshot_ages(conn, vm)?;
        e.add("hv_vm_snapshots", &id, count as f64);
        if let Some(t) = oldest {
            e.add("hv_vm_snapshot_oldest_timestamp_seconds", &id, t as f64);
        }
    }
    Ok(())
}

fn snapshot_ages(conn: &Connect, vm: &Stats) -> Result<(usize, Option<i64>)> {
    let context = format!("VM '{}': cannot list snapshots", vm.name);
    let dom = conn
        .lookup_domain_by_uuid_string(&vm.uuid)
        .map_err(|err| Error::libvirt(&context, &err))?;
    let snaps = dom
        .list_all_snapshots(0)
        .map_err(|err| Error::libvirt(&context, &err))?;
    let oldest = snaps
        .iter()
        .filter_map(|s| s.xml_desc(0).ok())
        .filter_map(|xml| snapshot::parse(&xml).ok())
        .map(|info| info.created)
        .filter(|&created| created > 0)
        .min();
    Ok((snaps.len(), oldest))
}

fn host(e: &mut Exposition, conn: &Connect) -> Result<()> {
    let fail =
        |what: &str, err: virt::error::Error| Error::libvirt(format!("cannot read {what}"), &err);
    let info = conn
        .node_info()
        .map_err(|err| fail("host information", err))?;
    e.add("hv_host_cpus", &[], info.cpus as f64);
    e.add("hv_host_memory_bytes", &[], Kib.apply(info.memory));
    match ffi::node_memory_stats(conn) {
        Ok(memory) => {
            let kib = |key: &str| memory.get(key).copied().unwrap_or(0);
            e.add("hv_host_memory_free_bytes", &[], Kib.apply(kib("free")));
            let available = kib("free") + kib("buffers") + kib("cached");
            e.add("hv_host_memory_available_bytes", &[], Kib.apply(available));
        }
        Err(err) if unsupported(&err) => {}
        Err(err) => return Err(fail("host memory", err)),
    }
    let lib = conn
        .lib_version()
        .map_err(|err| fail("libvirt's version", err))?;
    let hyp = conn
        .hyp_version()
        .map_err(|err| fail("the hypervisor's version", err))?;
    let driver = conn.driver_type().unwrap_or_default();
    let (lib, hyp) = (version_text(lib), version_text(hyp));
    let labels = [
        ("libvirt_version", lib.as_str()),
        ("hypervisor", driver.as_str()),
        ("hypervisor_version", hyp.as_str()),
    ];
    e.add("hv_libvirt_info", &labels, 1.0);
    Ok(())
}

/// A driver without this call (the test driver, a daemon without the
/// storage driver) has nothing to report, which is not a failed scrape.
fn unsupported(err: &virt::error::Error) -> bool {
    hv_common::error::libvirt_code(err) == Code::Unsupported
}

fn pools(e: &mut Exposition, conn: &Connect) -> Result<()> {
    let pools = match conn.list_all_storage_pools(0) {
        Ok(pools) => pools,
        // A daemon without the storage driver has no pools to report.
        Err(err) if unsupported(&err) => return Ok(()),
        Err(err) => return Err(Error::libvirt("cannot list storage pools", &err)),
    };
    for pool in pools {
        let name = pool.name().unwrap_or_default();
        let info = pool
            .info()
            .map_err(|err| Error::libvirt(format!("storage pool '{name}'"), &err))?;
        let labels = [("pool", name.as_str())];
        let active = info.state == sys::VIR_STORAGE_POOL_RUNNING;
        e.add("hv_pool_active", &labels, bool_value(active));
        e.add("hv_pool_capacity_bytes", &labels, info.capacity as f64);
        e.add("hv_pool_allocation_bytes", &labels, info.allocation as f64);
        e.add("hv_pool_available_bytes", &labels, info.available as f64);
    }
    Ok(())
}

/// The host's networks; a daemon without the network driver has none.
/// A bridge is read from this machine's /sys: only for a daemon here.
fn networks(e: &mut Exposition, conn: &Connect) -> Result<()> {
    let here = !hv_common::hosts::is_remote_conn(conn);
    for net in hv_common::network::networks(conn)? {
        let labels = [("network", net.name.as_str())];
        e.add("hv_network_active", &labels, bool_value(net.active));
        e.add("hv_network_autostart", &labels, bool_value(net.autostart));
        if let Some(size) = net.dhcp_addresses {
            e.add("hv_network_dhcp_addresses", &labels, size as f64);
            e.add("hv_network_dhcp_leases", &labels, net.leases as f64);
        }
        if let (true, true, Some(bridge)) = (here, net.active, &net.bridge) {
            if let Some(up) = hv_common::network::bridge_up(bridge) {
                e.add(
                    "hv_bridge_up",
                    &[("bridge", bridge.as_str())],
                    bool_value(up),
                );
            }
        }
    }
    Ok(())
}

fn backups(e: &mut Exposition, repo: &Path) -> Result<()> {
    let shown = repo.display().to_string();
    let labels = [("repository", shown.as_str())];
    let listed = read_repository(e, repo, &shown);
    e.add(
        "hv_backup_repository_up",
        &labels,
        bool_value(listed.is_ok()),
    );
    for backups in backup_index::by_vm(listed?).values() {
        let (count, last) = (backups.len(), backups.last().expect("a group has a backup"));
        let labels = [
            ("name", last.name.as_str()),
            ("uuid", last.uuid.as_str()),
            ("repository", shown.as_str()),
        ];
        e.add("hv_backups", &labels, count as f64);
        let time = last.time_unix_ms as f64 / 1000.0;
        e.add("hv_backup_last_timestamp_seconds", &labels, time);
        let elapsed = last.elapsed_ms as f64 / 1000.0;
        e.add("hv_backup_last_duration_seconds", &labels, elapsed);
        e.add("hv_backup_last_size_bytes", &labels, last.size_bytes as f64);
        e.add("hv_backup_last_read_bytes", &labels, last.read_bytes as f64);
        e.add(
            "hv_backup_last_stored_bytes",
            &labels,
            last.stored_bytes as f64,
        );
    }
    Ok(())
}

fn read_repository(
    e: &mut Exposition,
    repo: &Path,
    shown: &str,
) -> Result<Vec<backup_index::Index>> {
    if !repo.join(backup_index::REPO_FILE).is_file() {
        return Err(Error::new(
            Code::NotFound,
            format!(
                "{shown} is not an hv-backup repository (no {}): check --repo, or create it with `hv-backup init`",
                backup_index::REPO_FILE
            ),
        ));
    }
    let space =
        ffi::fs_space(repo).map_err(|err| Error::io(format!("cannot stat {shown}"), err))?;
    let labels = [("repository", shown)];
    e.add(
        "hv_backup_repository_size_bytes",
        &labels,
        space.size_bytes as f64,
    );
    e.add(
        "hv_backup_repository_available_bytes",
        &labels,
        space.available_bytes as f64,
    );
    backup_index::list(repo)
}

/// The records of the last `hv-backup create` run, saved by the caller
/// (`hv-backup create … > FILE`): one `ok` per VM, and the file's time.
/// The library's sidecars only: hashing is hv-iso verify's job (from its
/// timer); the metrics report what it found.
fn isos(e: &mut Exposition, dir: &Path) -> Result<()> {
    let lib = iso_library::Library::new(dir.to_path_buf());
    if !dir.is_dir() {
        return Err(Error::new(
            Code::NotFound,
            format!(
                "--iso-library {}: no such directory; hv-iso add creates it",
                dir.display()
            ),
        ));
    }
    let shown = dir.display().to_string();
    let names = lib.names()?;
    let mut count = 0;
    let mut damaged = Vec::new();
    for name in &names {
        let entry = match lib.get(name) {
            Ok(Some(entry)) => entry,
            Ok(None) => continue,
            Err(err) => {
                damaged.push(err.message);
                continue;
            }
        };
        count += 1;
        let s = &entry.sidecar;
        let labels = [("name", name.as_str()), ("library", shown.as_str())];
        e.add("hv_iso_present", &labels, bool_value(entry.path.is_file()));
        e.add("hv_iso_size_bytes", &labels, s.size_bytes as f64);
        e.add("hv_iso_unsigned", &labels, bool_value(s.unsigned));
        if let Some(at) = time::parse_rfc3339(&s.verified_at) {
            e.add("hv_iso_verified_timestamp_seconds", &labels, at as f64);
        }
        if let Some(ok) = s.check_ok {
            e.add("hv_iso_check_ok", &labels, bool_value(ok));
        }
        if let Some(at) = s.checked_at.as_deref().and_then(time::parse_rfc3339) {
            e.add("hv_iso_checked_timestamp_seconds", &labels, at as f64);
        }
    }
    e.add(
        "hv_iso_images",
        &[("library", shown.as_str())],
        count as f64,
    );
    match damaged.first() {
        None => Ok(()),
        Some(first) => Err(Error::new(Code::Corrupt, first.clone())),
    }
}

fn backup_results(e: &mut Exposition, file: &Path) -> Result<()> {
    let shown = file.display();
    let text = std::fs::read_to_string(file)
        .map_err(|err| Error::io(format!("cannot read backup results {shown}"), err))?;
    let written = std::fs::metadata(file)
        .and_then(|m| m.modified())
        .map_err(|err| Error::io(format!("cannot stat {shown}"), err))?;
    let mut last: Vec<(String, String, bool)> = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_result(line) {
            Some(r) => {
                last.retain(|(n, u, _)| (n, u) != (&r.0, &r.1));
                last.push(r);
            }
            None => bad.push(i + 1),
        }
    }
    let time = unix_seconds(written);
    for (name, uuid, ok) in &last {
        let labels = [("name", name.as_str()), ("uuid", uuid.as_str())];
        e.add("hv_backup_result_ok", &labels, bool_value(*ok));
        e.add("hv_backup_result_timestamp_seconds", &labels, time);
    }
    match bad.first() {
        None => Ok(()),
        Some(first) => Err(Error::new(
            Code::MalformedInput,
            format!(
                "{shown}: {} line(s) are not hv-backup create records with name and ok (first: line {first}); write the file with `hv-backup create … > {shown}`",
                bad.len()
            ),
        )),
    }
}

fn parse_result(line: &str) -> Option<(String, String, bool)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let name = v.get("name")?.as_str()?.to_owned();
    let uuid = v
        .get("uuid")
        .and_then(|u| u.as_str())
        .unwrap_or("")
        .to_owned();
    let ok = v.get("ok")?.as_bool()?;
    Some((name, uuid, ok))
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_domains_are_read_by_at_most_stats_calls_threads() {
        let listed: Vec<Listed> = (0..13)
            .map(|i| Listed {
                uuid: format!("u{i}"),
                name: format!("vm{i}"),
                id: (i < 10).then_some(i),
            })
            .collect();
        // Two sets of groups among the running domains, as when some
        // guests report memory statistics and others do not.
        let (live, stopped) = plan(&listed, |l| {
            if l.id.is_some_and(|id| id.is_multiple_of(2)) {
                1
            } else {
                2
            }
        });
        assert_eq!(live.len(), STATS_CALLS);
        let mut asked: Vec<usize> = live.iter().flatten().flat_map(|(_, m)| m.clone()).collect();
        asked.sort();
        assert_eq!(
            asked,
            (0..10).collect::<Vec<_>>(),
            "each running domain once"
        );
        for (groups, members) in live.iter().flatten() {
            let want = |i: &usize| if i.is_multiple_of(2) { 1 } else { 2 };
            assert!(
                members.iter().all(|i| want(i) == *groups),
                "{groups}: {members:?}"
            );
        }
        assert_eq!(stopped, vec![(2, vec![10, 11, 12])]);
        assert_eq!(
            plan(&listed[10..], |_| 1).0.len(),
            0,
            "no running domain, no thread"
        );
    }

    #[test]
    fn versions_decode() {
        assert_eq!(version_text(11_003_000), "11.3.0");
        assert_eq!(version_text(10_000_002), "10.0.2");
    }

    #[test]
    fn backup_result_lines_need_a_name_and_ok() {
        let ok = r#"{"name":"web 1","uuid":"u","action":"backup","ok":true}"#;
        assert_eq!(parse_result(ok), Some(("web 1".into(), "u".into(), true)));
        let failed = r#"{"name":"db","uuid":null,"ok":false,"error":{"code":"not_found"}}"#;
        assert_eq!(parse_result(failed), Some(("db".into(), "".into(), false)));
        assert_eq!(parse_result("{\"name\":\"x\"}"), None);
        assert_eq!(parse_result("not json"), None);
    }
}
