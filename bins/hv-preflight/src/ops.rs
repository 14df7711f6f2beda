//! VMs about to be backed up, snapshotted or started: each exists, is in a
//! state the operation accepts, has no job in the way, and what they need
//! together (space where backups and snapshots grow, memory and vCPUs to
//! start) is there. Estimates come from what libvirt and the repository
//! already know (disk allocations, the sizes of earlier backups), so a
//! check costs no reading of disks.

use crate::Operation;
use hv_common::checks::{Check, Status, Unit};
use hv_common::domain::{self, DomainXml};
use hv_common::output::human_bytes;
use hv_common::plan::{dir_space, Budget};
use hv_common::storage::{self, Machine, Seen};
use hv_common::targets::{self, Input};
use hv_common::{backup_index, cli, remote, Code, Error, Result};
use hv_common::{lifecycle, State};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use virt::connect::Connect;
use virt::domain::Domain;
use virt::sys;

/// How many of a VM's latest backups predict its next one.
const RECENT_BACKUPS: usize = 5;

struct Vm {
    dom: Domain,
    name: String,
    uuid: String,
    state: State,
    xml: DomainXml,
    /// `kvm` or `qemu` (TCG emulation): what starting it needs of the host.
    domain_type: String,
}

impl Vm {
    fn check(&self, id: &'static str, status: Status, message: String) -> Check {
        Check::new(id, status, message).about_vm(&self.name, &self.uuid)
    }

    fn active(&self) -> bool {
        self.state.is_active()
    }

    /// The disks an operation writes to or copies: not cdroms, not media
    /// shared with other guests.
    fn own_disks(&self) -> impl Iterator<Item = &domain::Disk> {
        self.xml
            .disks
            .iter()
            .filter(|d| d.device == "disk" && !d.shared)
    }

    /// Bytes the host holds for a disk (what the guest has written).
    /// What the disk holds, as its host's libvirt says; on this machine,
    /// failing that, what its file takes (another host's file of that path
    /// is not this machine's).
    fn allocation(&self, disk: &domain::Disk, machine: Machine) -> u64 {
        use std::os::unix::fs::MetadataExt;
        self.dom
            .block_info(&disk.target, 0)
            .map(|b| b.allocation)
            .ok()
            .or_else(|| {
                if let Machine::Other(_) = machine {
                    return None;
                }
                let meta = std::fs::metadata(disk.source.as_deref()?).ok()?;
                Some(meta.blocks() * 512)
            })
            .unwrap_or(0)
    }
}

struct Repo {
    root: PathBuf,
    /// Filesystem key, size and available bytes; None when unusable.
    space: Option<(String, u64, u64)>,
    /// The stored bytes of each VM's latest backups, by UUID.
    recent: BTreeMap<String, Vec<u64>>,
}

/// The VMs and the operation they are about to undergo.
#[derive(Debug)]
pub struct Request {
    pub op: Operation,
    /// Named as arguments; none means the records or names piped in.
    pub vms: Vec<String>,
    /// Where the backups go; set exactly for a backup.
    pub repo: Option<PathBuf>,
    /// The snapshots will be external overlays, with no memory saved.
    pub disk_only: bool,
    /// Where a migration goes; set exactly for one.
    pub to: Option<hv_common::hosts::Host>,
    pub connect_timeout: std::time::Duration,
}

/// The VMs a run checks, from its arguments or stdin, read once for every
/// host.
pub fn inputs(request: &Request) -> Result<Vec<Input>> {
    if !request.vms.is_empty() {
        Ok(targets::from_args(&request.vms))
    } else if cli::stdin_has_targets(&[]) {
        Ok(targets::from_reader(std::io::stdin().lock()).collect())
    } else {
        Err(Error::usage(
            "--for checks VMs: name them as arguments or pipe them in (hv-ls --tag prod | hv-preflight --for backup --repo DIR)",
        ))
    }
}

/// What one host's VM checks found.
#[derive(Default)]
pub struct Found {
    pub checks: Vec<Check>,
    /// The VMs a start would run with KVM (not running yet, domain type
    /// kvm), for the host's hardware checks.
    pub kvm: Vec<String>,
    /// With `anywhere`: the VMs named without a host that this host does
    /// not have (they may be on another).
    pub missing: Vec<String>,
}

/// The checks of the VMs `inputs` names on one host. `anywhere`: the run
/// has several hosts, and a VM named without one is looked for on each; not
/// having it here is not a failure of this host's.
pub fn check(
    conn: &Connect,
    request: &Request,
    budget: &mut Budget,
    inputs: Vec<Input>,
    anywhere: bool,
    machine: Machine,
) -> Result<Found> {
    let op = request.op;
    let mut found = Found::default();
    let mut out = Vec::new();
    let repo = match (op, &request.repo) {
        (Operation::Backup, Some(root)) => {
            let (check, repo) = repository(root);
            out.push(check);
            Some(repo)
        }
        _ => None,
    };
    let mut dest = request.to.clone().map(|host| {
        let (dest, check) =
            crate::migrate::Destination::open(host, request.connect_timeout, budget.limits());
        out.push(check);
        dest
    });
    let mut seen = HashSet::new();
    for input in inputs {
        match input {
            // Read and counted once, before the hosts are asked.
            Input::Malformed { .. } | Input::PassThrough(_) => {}
            Input::Vm(vm) => {
                let label = vm.name.clone().unwrap_or_else(|| vm.label());
                match targets::lookup(conn, &vm) {
                    Err(e) if anywhere && vm.host.is_none() && e.code == Code::NotFound => {
                        found.missing.push(label);
                    }
                    Err(e) => out.push(
                        Check::new("vm.exists", Status::Fail, e.message)
                            .about("name", label)
                            .hint("check the name or UUID; define the VM first if it is new"),
                    ),
                    Ok(dom) => match describe(dom) {
                        Err(e) => out.push(
                            Check::new("vm.exists", Status::Fail, format!("cannot read VM {label}: {}", e.message))
                                .about("name", label)
                                .hint("try again; if it persists, check libvirtd's log (journalctl -u libvirtd)"),
                        ),
                        Ok(vm) if !seen.insert(vm.uuid.clone()) => {}
                        Ok(vm) => {
                            if op == Operation::Start && !vm.active() && vm.domain_type == "kvm" {
                                found.kvm.push(vm.name.clone());
                            }
                            out.extend(checks(conn, &vm, request, budget, repo.as_ref(), machine));
                            if let Some(dest) = dest.as_mut() {
                                out.extend(crate::migrate::checks(
                                    dest, &vm.dom, &vm.xml, vm.state, &vm.name, &vm.uuid,
                                ));
                            }
                        }
                    },
                }
            }
        }
    }
    found.checks = out;
    Ok(found)
}

/// A failed record from upstream (`"ok": false`): that VM is not ready
/// for anything, and a script gating on the exit status must see it.
pub fn upstream_failed(record: &serde_json::Map<String, serde_json::Value>) -> Check {
    let field = |k: &str| record.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let why = record
        .get("error")
        .and_then(|e| e.get("message"))
        .and_then(|m| m.as_str())
        .unwrap_or("no message");
    let mut c = Check::new("vm.exists", Status::Fail, format!("failed upstream: {why}"))
        .about("name", field("name").unwrap_or_else(|| "?".to_owned()));
    if let Some(uuid) = field("uuid") {
        c = c.about("uuid", uuid);
    }
    c.hint("fix what failed upstream (the command before hv-preflight in the pipeline), then check again")
}

fn describe(dom: Domain) -> Result<Vm> {
    let context = |e: &virt::error::Error| Error::libvirt("cannot read the VM", e);
    let state = lifecycle::state(&dom)?.state;
    let xml = dom.xml_desc(0).map_err(|e| context(&e))?;
    Ok(Vm {
        name: dom.name().map_err(|e| context(&e))?,
        uuid: dom.uuid_string().map_err(|e| context(&e))?,
        state,
        domain_type: domain_type(&xml),
        xml: domain::parse(&xml)?,
        dom,
    })
}

/// `<domain type='…'>`; empty when the XML cannot be read (domain::parse
/// then reports it).
fn domain_type(xml: &str) -> String {
    roxmltree::Document::parse(xml)
        .ok()
        .and_then(|doc| doc.root_element().attribute("type").map(str::to_owned))
        .unwrap_or_default()
}

fn checks(
    conn: &Connect,
    vm: &Vm,
    request: &Request,
    budget: &mut Budget,
    repo: Option<&Repo>,
    machine: Machine,
) -> Vec<Check> {
    let mut out = vec![vm.check("vm.exists", Status::Pass, format!("{} is defined", vm.name))];
    out.push(state(vm, request.op, request.disk_only));
    match request.op {
        Operation::Start => {
            if !vm.active() {
                out.push(disks_present(conn, vm, machine));
                out.push(
                    budget
                        .memory("vm.memory", &vm.name, vm.xml.max_memory_bytes)
                        .about("name", vm.name.clone())
                        .about("uuid", vm.uuid.clone()),
                );
                out.push(
                    budget
                        .vcpus("vm.vcpus", &vm.name, vm.xml.vcpus)
                        .about("name", vm.name.clone())
                        .about("uuid", vm.uuid.clone()),
                );
            }
        }
        Operation::Snapshot => {
            out.extend(job(vm));
            out.push(snapshot_format(vm, request.disk_only));
            out.extend(snapshot_space(conn, vm, request.disk_only, budget, machine));
        }
        Operation::Backup => {
            out.extend(job(vm));
            // hv-backup reads another host's disks where they lie, over
            // the ssh of that host's URI; no other transport carries them.
            let uri = conn.uri().unwrap_or_default();
            if let (Machine::Other(host), Err(_)) = (machine, remote::Place::from_uri(&uri)) {
                out.push(
                    vm.check("vm.disks", Status::Fail, format!("hv-backup reads the disks of a VM on another host over ssh, and {} is on {host}, reached as {uri}", vm.name))
                        .hint(format!("name {host} by a qemu+ssh://root@HOST/system URI (docs/hosts.md), or back it up on {host} itself")),
                );
            }
            if let Some(repo) = repo {
                out.extend(backup_space(vm, repo, budget, machine));
            }
        }
        Operation::Migrate => out.extend(job(vm)),
    }
    out
}

fn state(vm: &Vm, op: Operation, disk_only: bool) -> Check {
    use State::{Blocked, Crashed, Paused, Pmsuspended, Running, Shutdown, Shutoff};
    let name = &vm.name;
    let force = format!("hv-stop --force {name:?} first");
    let (status, what, hint) = match (op, vm.state) {
        (_, Shutdown) => (
            Status::Warn,
            "is shutting down; wait until it is off".to_owned(),
            format!("hv-stop {name:?} waits until it is off"),
        ),
        (Operation::Start, Shutoff) => (
            Status::Pass,
            "is shut off: hv-start starts it".to_owned(),
            String::new(),
        ),
        (Operation::Start, Paused) => (
            Status::Pass,
            "is paused: hv-start resumes it".to_owned(),
            String::new(),
        ),
        (Operation::Start, Pmsuspended) => (
            Status::Pass,
            "is suspended: hv-start wakes it".to_owned(),
            String::new(),
        ),
        (Operation::Start, Running | Blocked) => (
            Status::Pass,
            "is already running: hv-start leaves it".to_owned(),
            String::new(),
        ),
        (Operation::Start | Operation::Snapshot, Crashed) => (
            Status::Fail,
            "crashed and is kept for inspection".to_owned(),
            force,
        ),
        (Operation::Snapshot, Shutoff) if disk_only => (
            Status::Pass,
            "is shut off: external overlays of its disks".to_owned(),
            String::new(),
        ),
        (Operation::Snapshot, Shutoff) => (
            Status::Pass,
            "is shut off: an internal snapshot of its disks".to_owned(),
            String::new(),
        ),
        (Operation::Snapshot, Running | Paused | Blocked) if disk_only => (
            Status::Pass,
            format!("is {}: external overlays, no pause", vm.state),
            String::new(),
        ),
        (Operation::Snapshot, Running | Paused | Blocked) => (
            Status::Pass,
            format!(
                "is {}: the snapshot saves its memory too, pausing it meanwhile",
                vm.state
            ),
            String::new(),
        ),
        (Operation::Snapshot, Pmsuspended) => (
            Status::Fail,
            "is suspended by its guest; libvirt cannot snapshot it".to_owned(),
            format!("wake it first: hv-start {name:?}"),
        ),
        (Operation::Backup, Shutoff) => (
            Status::Pass,
            "is shut off: its disks are read in place".to_owned(),
            String::new(),
        ),
        (Operation::Backup, Running | Paused | Blocked | Pmsuspended) => (
            Status::Pass,
            format!("is {}: a live backup job, no pause", vm.state),
            String::new(),
        ),
        (Operation::Migrate, Running | Paused | Blocked) => (
            Status::Pass,
            format!("is {}: it moves live", vm.state),
            String::new(),
        ),
        (Operation::Migrate, Shutoff) => (
            Status::Pass,
            "is shut off: its definition moves (offline); its disks must be there already"
                .to_owned(),
            String::new(),
        ),
        (Operation::Backup, Crashed) => (
            Status::Warn,
            "crashed: its disks may be inconsistent".to_owned(),
            format!("{force}, then back it up shut off"),
        ),
        (_, other) => (
            Status::Fail,
            format!("is in state {}", other),
            "hv-ls shows its state; try again once it is running or shut off".to_owned(),
        ),
    };
    vm.check("vm.state", status, format!("{name} {what}"))
        .value(vm.state.as_str())
        .hint(hint)
}

/// A backup, migration or other job already running makes libvirt refuse
/// a backup or snapshot; only a running VM has one.
fn job(vm: &Vm) -> Option<Check> {
    if !vm.active() {
        return None;
    }
    let name = &vm.name;
    let kind = match vm.dom.job_info() {
        Ok(job) => job.r#type,
        Err(e) => {
            return Some(
                vm.check(
                    "vm.job",
                    Status::Warn,
                    format!("cannot read the jobs of {name}: {e}"),
                )
                .hint(format!("virsh domjobinfo {name:?} shows them")),
            )
        }
    };
    Some(if kind == sys::VIR_DOMAIN_JOB_NONE as i32 {
        vm.check(
            "vm.job",
            Status::Pass,
            format!("no job is running on {name}"),
        )
    } else {
        vm.check(
            "vm.job",
            Status::Fail,
            format!("a job (a backup, migration or save) is already running on {name}"),
        )
        .hint(format!(
            "wait for it (virsh domjobinfo {name:?}), or cancel it: virsh domjobabort {name:?}"
        ))
    })
}

/// Starting fails when a disk's file is gone; cdroms may be empty.
fn disks_present(conn: &Connect, vm: &Vm, machine: Machine) -> Check {
    let sources = vm
        .xml
        .disks
        .iter()
        .filter(|d| matches!(d.kind.as_str(), "file" | "block"))
        .filter_map(|d| Some((d, d.source.as_ref()?)));
    let name = &vm.name;
    if let Machine::Other(host) = machine {
        // Seen through the host's pools, which list what their last refresh
        // found: a file put there by hand may not be listed yet, so what is
        // not seen is a warning, never a failure.
        let mut unseen = Vec::new();
        let mut stale = Vec::new();
        for (d, source) in sources {
            match storage::file(conn, source) {
                Seen::There => {}
                Seen::Missing { pool } => stale.push((format!("{} ({source})", d.target), pool)),
                Seen::Unknown => unseen.push(source.clone()),
            }
        }
        if let Some((_, pool)) = stale.first() {
            let listed: Vec<&str> = stale.iter().map(|(d, _)| d.as_str()).collect();
            return vm.check("vm.disks", Status::Warn, format!("{} of {name} {} not among the volumes of {host}'s pool {pool}, as of its last refresh", listed.join(", "), if listed.len() == 1 { "is" } else { "are" }))
                .hint(format!("check the files on {host}; if they are there, refresh the pool: virsh -c URI pool-refresh {pool}"));
        }
        if !unseen.is_empty() {
            return vm.check("vm.disks", Status::Warn, format!("{host}'s libvirt cannot tell whether {} exist: no storage pool holds their directories", unseen.join(", ")))
                .hint(format!("define a pool for the disks' directory on {host} (virsh pool-define-as NAME dir --target DIR), or check the files there"));
        }
        return vm.check(
            "vm.disks",
            Status::Pass,
            format!("the disks of {name} are there ({host}'s pools have them)"),
        );
    }
    let missing: Vec<String> = sources
        .filter(|(_, source)| !Path::new(source).exists())
        .map(|(d, source)| format!("{} ({source})", d.target))
        .collect();
    if missing.is_empty() {
        return vm.check(
            "vm.disks",
            Status::Pass,
            format!("the disks of {name} are there"),
        );
    }
    vm.check("vm.disks", Status::Fail, format!("{name} cannot start: missing {}", missing.join(", ")))
        .hint(format!("restore the files, or change or remove the disks (virsh edit {name:?}; an empty cdrom: virsh change-media {name:?} TARGET --eject --config)"))
}

/// Internal snapshots live inside qcow2 files; other formats need external
/// overlays (--disk-only).
fn snapshot_format(vm: &Vm, disk_only: bool) -> Check {
    let name = &vm.name;
    if disk_only {
        return vm.check(
            "vm.snapshot_format",
            Status::Pass,
            format!("--disk-only: external overlays work on any format of {name}'s disks"),
        );
    }
    let wrong: Vec<String> = vm
        .own_disks()
        .filter(|d| d.format.as_deref() != Some("qcow2"))
        .map(|d| {
            format!(
                "{} is {}",
                d.target,
                d.format.as_deref().unwrap_or("of unknown format")
            )
        })
        .collect();
    if wrong.is_empty() {
        return vm.check(
            "vm.snapshot_format",
            Status::Pass,
            format!("every disk of {name} is qcow2: internal snapshots work"),
        );
    }
    vm.check("vm.snapshot_format", Status::Fail, format!("internal snapshots need qcow2, and {}", wrong.join(", ")))
        .hint(format!("use hv-snap create --disk-only (external overlays), or convert the disk: qemu-img convert -O qcow2 (with {name:?} shut off)"))
}

/// Where a snapshot grows: a running VM's memory goes into its first disk
/// (unless --disk-only), and after the snapshot every rewrite of the disks
/// takes new space, up to what the guest has written (the allocation).
fn snapshot_space(
    conn: &Connect,
    vm: &Vm,
    disk_only: bool,
    budget: &mut Budget,
    machine: Machine,
) -> Vec<Check> {
    let mut places: BTreeMap<String, Place> = BTreeMap::new();
    let mut memory = if vm.active() && !disk_only {
        vm.xml.max_memory_bytes
    } else {
        0
    };
    let mut out = Vec::new();
    for disk in vm.own_disks().filter(|d| d.kind == "file") {
        let Some(dir) = disk.source.as_deref().and_then(|s| Path::new(s).parent()) else {
            continue;
        };
        let space = match machine {
            Machine::This => dir_space(dir),
            Machine::Other(host) => storage::pool_of_dir(conn, dir)
                .map(|p| (format!("pool {}", p.name), p.capacity, p.available))
                .ok_or_else(|| Error::new(Code::Unsupported, format!("{host}'s libvirt cannot measure {}: no storage pool holds it (define one for it there: virsh pool-define-as NAME dir --target DIR)", dir.display()))),
        };
        let (key, size, available) = match space {
            Ok(found) => found,
            Err(e) => {
                out.push(
                    vm.check("snapshot.space", Status::Fail, e.message)
                        .about("dir", dir.display().to_string())
                        .hint("check that the disk's directory exists and is mounted"),
                );
                continue;
            }
        };
        let place = places.entry(key).or_insert_with(|| Place {
            dir: dir.display().to_string(),
            size,
            available,
            need: 0,
            must: 0,
        });
        place.need += vm.allocation(disk, machine) + memory;
        place.must += memory;
        memory = 0;
    }
    if memory > 0 {
        out.push(
            vm.check("snapshot.space", Status::Warn, format!("{}'s memory ({}) is saved into its first disk, which is not a file hv-preflight can measure", vm.name, human_bytes(memory)))
                .hint("check the free space of the volume or device holding its first disk"),
        );
    }
    for (key, p) in places {
        let fit = budget.space(&key, p.size, p.available, p.need, p.must);
        let message = match fit.status {
            Status::Fail => format!(
                "{}'s memory ({}) does not fit in {}: {} free",
                vm.name,
                human_bytes(p.must),
                p.dir,
                human_bytes(fit.left)
            ),
            Status::Warn => format!(
                "snapshots of {} can grow by {} in {}, which has {} free: rewrites could fill it",
                vm.name,
                human_bytes(p.need),
                p.dir,
                human_bytes(fit.left)
            ),
            Status::Pass => format!(
                "snapshots of {} can grow by {} in {} ({} free)",
                vm.name,
                human_bytes(p.need),
                p.dir,
                human_bytes(fit.left)
            ),
        };
        out.push(
            vm.check("snapshot.space", fit.status, message)
                .about("dir", p.dir.clone())
                .measured(Unit::Bytes, p.need, fit.left)
                .hint(format!("free space in {} (hv-snap prune removes old snapshots), or snapshot fewer VMs at once", p.dir)),
        );
    }
    out
}

struct Place {
    dir: String,
    size: u64,
    available: u64,
    need: u64,
    must: u64,
}

fn repository(root: &Path) -> (Check, Repo) {
    let shown = root.display().to_string();
    let mut repo = Repo {
        root: root.to_path_buf(),
        space: None,
        recent: BTreeMap::new(),
    };
    let check = |status, message: String| {
        Check::new("backup.repository", status, message).about("repository", shown.clone())
    };
    let init =
        format!("create it: hv-backup init --repo {shown:?} --recipient age1… (docs/backups.md)");
    if !root.join(backup_index::REPO_FILE).is_file() {
        let why = if root.exists() {
            "is not an hv-backup repository"
        } else {
            "does not exist"
        };
        return (
            check(Status::Fail, format!("{shown} {why}")).hint(init),
            repo,
        );
    }
    let space = match dir_space(root) {
        Ok(space) => space,
        Err(e) => {
            return (
                check(Status::Fail, e.message).hint("check the path, and that its disk is mounted"),
                repo,
            )
        }
    };
    repo.space = Some(space.clone());
    let backups = match backup_index::list(root) {
        Ok(list) => list,
        Err(e) => {
            return (
                check(Status::Fail, e.message)
                    .hint("hv-backup verify --repo to see what is damaged"),
                repo,
            )
        }
    };
    let count = backups.len();
    repo.recent = backup_index::by_vm(backups)
        .into_iter()
        .map(|(uuid, list)| {
            (
                uuid,
                list.iter()
                    .rev()
                    .take(RECENT_BACKUPS)
                    .map(|b| b.stored_bytes)
                    .collect(),
            )
        })
        .collect();
    let message = format!(
        "{shown} is an hv-backup repository with {count} backups, {} free",
        human_bytes(space.2)
    );
    (check(Status::Pass, message), repo)
}

/// The next backup stores at most what the VM's recent backups stored; the
/// first stores its disks' allocation, before compression.
fn backup_space(vm: &Vm, repo: &Repo, budget: &mut Budget, machine: Machine) -> Option<Check> {
    let (key, size, available) = repo.space.clone()?;
    let recent = repo
        .recent
        .get(&vm.uuid)
        .and_then(|stored| stored.iter().max().copied());
    let (need, basis) = match recent {
        Some(stored) => (
            stored,
            "the most one of its recent backups stored".to_owned(),
        ),
        None => (
            vm.own_disks().map(|d| vm.allocation(d, machine)).sum(),
            "its first backup: its disks' allocation before compression".to_owned(),
        ),
    };
    let fit = budget.space(&key, size, available, need, need);
    let shown = repo.root.display();
    let message = match fit.status {
        Status::Fail => format!(
            "a backup of {} may need {} ({basis}); {shown} has {} free",
            vm.name,
            human_bytes(need),
            human_bytes(fit.left)
        ),
        Status::Warn => format!(
            "a backup of {} may need {} ({basis}), filling {shown} over {}%",
            vm.name,
            human_bytes(need),
            budget.disk_warn()
        ),
        Status::Pass => format!(
            "a backup of {} may need {} ({basis}); {shown} has {} free",
            vm.name,
            human_bytes(need),
            human_bytes(fit.left)
        ),
    };
    Some(
        vm.check("backup.space", fit.status, message)
            .about("repository", shown.to_string())
            .measured(Unit::Bytes, need, fit.left)
            .hint(format!("hv-backup prune --repo {:?} with a shorter retention, then hv-backup gc; or move the repository to a larger disk", shown.to_string())),
    )
}
