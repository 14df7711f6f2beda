//! hv-snap: snapshots for many VMs at once, and a rolling set kept by
//! retention rules. Snapshot records carry the VM's `name` and `uuid`, so
//! `hv-snap create | hv-backup create` and `hv-snap ls | jq … | hv-snap rm`
//! work; prune by default touches only snapshots hv made itself.

use clap::{Parser, Subcommand};
use hv_common::bulk::{self, Action};
use hv_common::cli::{self, ActionArgs, ConnectArgs, OutputArgs, Status};
use hv_common::connect::Access;
use hv_common::domain::{self as domxml, xml_escape, Disk};
use hv_common::lifecycle;
use hv_common::manual::Manual;
use hv_common::output::{col, Column, Printer, Show};
use hv_common::retention::{self, Keep};
use hv_common::snapshot;
use hv_common::targets::{self, VmRef};
use hv_common::{runner, time, Code, Error, Exit, Result};
use serde_json::{json, Map, Value};
use std::time::{Duration, Instant};
use virt::domain::Domain;
use virt::domain_snapshot::DomainSnapshot;

#[derive(Debug, Parser)]
#[command(
    name = "hv-snap",
    version,
    about = "Create, list, revert, delete and prune VM snapshots",
    long_about = "Snapshots for many VMs at once. VMs are named as arguments or piped in as records \
        (e.g. from hv-ls); hv-snap ls with neither lists every VM's snapshots. Each action prints \
        one record per VM; hv-snap ls prints one per snapshot."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// `-c` before the subcommand, as git and virsh take it (`hv-snap -c URI ls`).
    #[command(flatten)]
    pub global_connect: hv_common::cli::ConnectArgs,
    /// `--format` and `--json` before the subcommand.
    #[command(flatten)]
    pub global_output: hv_common::cli::OutputArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take a snapshot of each VM
    Create(CreateArgs),
    /// List snapshots, one record each
    Ls(LsArgs),
    /// Revert each VM to a snapshot
    Revert(RevertArgs),
    /// Delete a snapshot of each VM
    Rm(PickArgs),
    /// Delete the snapshots a retention policy does not keep
    Prune(PruneArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// VMs to snapshot, by name or UUID [default: records or names from stdin]
    #[arg(value_name = "VM")]
    pub vms: Vec<String>,
    /// Snapshot name [default: hv-YYYYmmdd-HHMMSS, the same for the whole batch]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// A note stored with the snapshot
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// External disk-only snapshots: new overlay files next to each disk, no pause
    #[arg(long)]
    pub disk_only: bool,
    /// Require the running VM's memory in the snapshot (internal snapshots of running VMs always have it)
    #[arg(long, conflicts_with = "disk_only")]
    pub memory: bool,
    /// Freeze the guest's filesystems through its agent for a --disk-only snapshot; warn if it does not answer
    #[arg(long)]
    pub quiesce: bool,
    /// Like --quiesce, but fail the VM when its agent does not answer
    #[arg(long)]
    pub require_quiesce: bool,
    /// How long each VM may take before it is reported as timed out (90, 90s, 5m, 1h30m)
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = time::duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub args: ActionArgs,
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// VMs whose snapshots to list [default: records from stdin, else every VM]
    #[arg(value_name = "VM")]
    pub vms: Vec<String>,
    /// Only snapshots hv made
    #[arg(long)]
    pub hv_only: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, clap::Args)]
pub struct PickArgs {
    /// VMs, by name or UUID [default: records from stdin, e.g. from hv-snap ls]
    #[arg(value_name = "VM")]
    pub vms: Vec<String>,
    /// The snapshot [default: the `snapshot` field of each piped record]
    #[arg(long, value_name = "NAME")]
    pub snapshot: Option<String>,
    /// How long each VM may take before it is reported as timed out (90, 90s, 5m, 1h30m)
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = time::duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub args: ActionArgs,
}

#[derive(Debug, clap::Args)]
pub struct RevertArgs {
    #[command(flatten)]
    pub pick: PickArgs,
    /// Leave the VM paused after reverting (default: the state the snapshot holds)
    #[arg(long, conflicts_with = "running")]
    pub paused: bool,
    /// Leave the VM running after reverting, even to a snapshot of a stopped VM
    #[arg(long)]
    pub running: bool,
}

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// VMs to prune, by name or UUID [default: records or names from stdin]
    #[arg(value_name = "VM")]
    pub vms: Vec<String>,
    #[command(flatten)]
    pub keep: Keep,
    /// Also consider snapshots hv did not make
    #[arg(long)]
    pub all: bool,
    /// How long each VM may take before it is reported as timed out (90, 90s, 5m, 1h30m)
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = time::duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub args: ActionArgs,
}

pub const MANUAL: Manual = Manual {
    exit_status: hv_common::manual::EXIT_STATUS,
    environment: hv_common::manual::ENVIRONMENT,
    examples: &[
        ("Snapshot every production VM before an upgrade:", "hv-ls --tag prod | hv-snap create --name pre-upgrade --description 'before 12.5'"),
        ("List the snapshots of running VMs:", "hv-ls --state running | hv-snap ls --format table"),
        ("Delete every snapshot named pre-upgrade:", "hv-snap ls | jq -c 'select(.snapshot == \"pre-upgrade\")' | hv-snap rm"),
        ("Go back to it on one VM:", "hv-snap revert --snapshot pre-upgrade web1"),
        ("Keep a rolling set from a timer:", "hv-ls --tag prod | hv-snap create && hv-ls --tag prod | hv-snap prune --keep-last 3 --keep-daily 7 --keep-weekly 4"),
    ],
    notes: &[
        "hv-snap create: a stopped VM gets an internal snapshot of its disks (qcow2 only). A running VM's internal snapshot includes its memory, which libvirt requires (the VM pauses while its RAM is saved); --disk-only makes external snapshots instead: each disk gets a new overlay file <disk>.<snapshot>.qcow2 beside it and the VM does not pause. Snapshots are atomic across disks: if one disk fails, none is kept. Records: snapshot, created_at (RFC 3339, UTC), state, kind (internal or external), memory, parent, current, description, hv_made, and for create quiesced and elapsed_ms.",
        "hv-snap revert and rm take the snapshot from --snapshot or from the snapshot field of each piped record. libvirt 11 reverts internal and external snapshots; it refuses to delete an external snapshot whose parent is internal, and that refusal is reported with error code unsupported.",
        "hv-snap prune applies --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly and --keep-yearly with Proxmox Backup Server's rules (docs/snapshots.md); periods are UTC. Only snapshots hv made are considered unless --all. Each VM's record has snapshots (each considered snapshot with snapshot, created_at, kept and keep_reason: the rule that kept it, or null) and removed (the names deleted, or that would be with --dry-run).",
    ],
};

static ACTION_COLUMNS: [Column; 5] = [
    col("name", "name", Show::Plain),
    col("ok", "ok", Show::Plain),
    col("snapshot", "snapshot", Show::Plain),
    col("kind", "kind", Show::Plain),
    col("ms", "elapsed_ms", Show::Plain),
];

static LS_COLUMNS: [Column; 7] = [
    col("name", "name", Show::Plain),
    col("snapshot", "snapshot", Show::Plain),
    col("created", "created_at", Show::Plain),
    col("state", "state", Show::Plain),
    col("kind", "kind", Show::Plain),
    col("current", "current", Show::Plain),
    col("hv", "hv_made", Show::Plain),
];

static PRUNE_COLUMNS: [Column; 4] = [
    col("name", "name", Show::Plain),
    col("ok", "ok", Show::Plain),
    col("snapshots", "snapshots", Show::Join(Some("snapshot"))),
    col("removed", "removed", Show::Join(None)),
];

pub fn run(cli: Cli) -> Result<Exit> {
    match cli.command {
        Command::Create(a) => create(a),
        Command::Ls(a) => ls(a),
        Command::Revert(a) => {
            let flags = match (a.paused, a.running) {
                (true, _) => virt::sys::VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED,
                (_, true) => virt::sys::VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING,
                _ => 0,
            };
            pick(a.pick, "revert", flags)
        }
        Command::Rm(a) => pick(a, "rm", 0),
        Command::Prune(a) => prune(a),
    }
}

fn libvirt(what: &'static str) -> impl Fn(virt::error::Error) -> Error {
    move |e| Error::libvirt(what, &e)
}

/// QEMU reverts no disk that has dirty bitmaps, and libvirt's error then
/// does not say why: name the checkpoints that hold them and the way out.
fn with_checkpoint_hint(dom: &Domain, err: Error) -> Error {
    match hv_common::ffi::checkpoint_count(dom) {
        Ok(n) if n > 0 => Error::new(
            err.code,
            format!(
                "{}; the VM has {n} checkpoint(s) (hv-backup makes them for incremental backups) and QEMU does not revert a disk with their dirty bitmaps: delete them (docs/snapshots.md, Backups), revert, and the next backup reads in full",
                err.message
            ),
        ),
        _ => err,
    }
}

/// Taking, reverting and deleting snapshots are one libvirt permission.
fn needing_snapshot(what: &'static str) -> impl Fn(virt::error::Error) -> Error {
    move |e| Error::libvirt_needing(what, &e, &["domain.snapshot"])
}

// ---- create ----------------------------------------------------------------

#[derive(Debug, Clone)]
struct Plan {
    name: String,
    description: Option<String>,
    disk_only: bool,
    memory: bool,
    quiesce: bool,
    require_quiesce: bool,
    dry_run: bool,
}

fn create(a: CreateArgs) -> Result<Exit> {
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("hv-{}", time::compact(time::now())));
    if name.is_empty() || name.contains('/') {
        return Err(Error::usage(format!(
            "invalid snapshot name '{name}': it must be non-empty and without '/'"
        )));
    }
    let plan = Plan {
        name,
        description: a.description.clone(),
        disk_only: a.disk_only,
        memory: a.memory,
        quiesce: a.quiesce || a.require_quiesce,
        require_quiesce: a.require_quiesce,
        dry_run: a.args.dry_run,
    };
    let inputs = bulk::inputs(&a.vms, "hv-ls --tag prod | hv-snap create")?;
    let action = Action {
        name: "snapshot",
        columns: &ACTION_COLUMNS,
        item_timeout: a.timeout,
    };
    bulk::act(inputs, &a.args, action, move |_, dom, _| {
        snapshot_vm(dom, &plan)
    })
}

fn snapshot_vm(dom: &Domain, plan: &Plan) -> Result<Map<String, Value>> {
    let began = Instant::now();
    let running = lifecycle::state(dom)?.0 != lifecycle::SHUTOFF;
    if plan.memory && !running {
        return Err(Error::new(
            Code::InvalidState,
            "it is not running, so it has no memory to snapshot; drop --memory",
        ));
    }
    let xml = dom.xml_desc(0).map_err(libvirt("cannot read its XML"))?;
    let disks: Vec<Disk> = domxml::parse(&xml)
        .map_err(|m| Error::new(Code::Libvirt, m))?
        .disks;
    if !plan.disk_only {
        if let Some(d) = disks
            .iter()
            .find(|d| d.device == "disk" && d.format.as_deref() != Some("qcow2"))
        {
            return Err(Error::new(
                Code::Unsupported,
                format!(
                    "disk {} is {}: internal snapshots need qcow2; use --disk-only",
                    d.target,
                    d.format.as_deref().unwrap_or("of unknown format")
                ),
            ));
        }
    }
    // A dry run's connection is read-only, and libvirt talks to the guest
    // agent only over a read-write one.
    let quiesced = !plan.dry_run && quiesce(dom, plan, running)?;
    let snapshot_xml = snapshot_xml(plan, &disks)?;
    let mut flags = virt::sys::VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC;
    if plan.disk_only {
        flags |= virt::sys::VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY;
    }
    if quiesced {
        flags |= virt::sys::VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE;
    }
    let mut r = Map::new();
    if plan.dry_run {
        r.insert("snapshot".into(), plan.name.clone().into());
        r.insert(
            "kind".into(),
            if plan.disk_only {
                "external"
            } else {
                "internal"
            }
            .into(),
        );
        r.insert("memory".into(), (running && !plan.disk_only).into());
        if plan.quiesce && running && plan.disk_only {
            r.insert("quiesce".into(), "unchecked".into());
        }
        r.insert("dry_run".into(), true.into());
        return Ok(r);
    }
    // Given up on at its timeout, it must not take the snapshot after all.
    runner::point_of_no_return()?;
    let snap = with_marker(dom, &plan.name, || {
        dom.create_snapshot_xml(&snapshot_xml, flags)
    })
    .map_err(needing_snapshot(
        "libvirt could not take the snapshot (nothing was kept)",
    ))?;
    let info = snapshot::parse(
        &snap
            .xml_desc(0)
            .map_err(libvirt("cannot read the new snapshot"))?,
    )
    .map_err(|m| Error::new(Code::Libvirt, m))?;
    if !info.hv_made {
        hv_common::cli::warn(format!(
            "{}: snapshot {} is not marked as made by hv (marking needs libvirt's domain write and save permissions, which the hv-operator role lacks): `hv-snap prune` leaves it alone unless --all",
            dom.name().unwrap_or_default(),
            plan.name
        ));
    }
    r.extend(snapshot_fields(&info, true));
    r.insert("quiesced".into(), quiesced.into());
    r.insert("elapsed_ms".into(), lifecycle::elapsed_ms(began));
    Ok(r)
}

/// Whether to ask for a quiesced snapshot. Only a running VM's disk-only
/// snapshot can be quiesced; an absent agent is a warning unless required.
fn quiesce(dom: &Domain, plan: &Plan, running: bool) -> Result<bool> {
    if !plan.quiesce {
        return Ok(false);
    }
    let name = dom.name().unwrap_or_default();
    if !running || !plan.disk_only {
        cli::warn(format!("VM '{name}': quiescing applies to --disk-only snapshots of running VMs; taking it without"));
        return Ok(false);
    }
    if lifecycle::agent_answers(dom, Duration::from_secs(3)) {
        return Ok(true);
    }
    if plan.require_quiesce {
        return Err(Error::new(Code::Timeout, "its guest agent does not answer, so its filesystems cannot be frozen (--require-quiesce)"));
    }
    cli::warn(format!("VM '{name}': its guest agent does not answer; taking the snapshot without freezing filesystems"));
    Ok(false)
}

/// The overlay file of an external snapshot: beside the disk, named after it
/// and the snapshot, with anything but [A-Za-z0-9._-] in the name replaced.
fn overlay_path(disk: &str, snapshot: &str) -> Result<String> {
    let path = std::path::Path::new(disk);
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("disk");
    let dir = path
        .parent()
        .ok_or_else(|| Error::new(Code::Unsupported, format!("disk {disk} has no directory")))?;
    let safe: String = snapshot
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok(dir
        .join(format!("{stem}.{safe}.qcow2"))
        .display()
        .to_string())
}

fn snapshot_xml(plan: &Plan, disks: &[Disk]) -> Result<String> {
    let mut xml = format!("<domainsnapshot><name>{}</name>", xml_escape(&plan.name));
    if let Some(d) = &plan.description {
        xml.push_str(&format!("<description>{}</description>", xml_escape(d)));
    }
    xml.push_str("<disks>");
    for d in disks {
        let spec = match (d.device.as_str(), plan.disk_only, &d.source) {
            ("disk", true, Some(src)) if d.kind == "file" => {
                format!(
                    "snapshot='external'><source file='{}'/></disk>",
                    xml_escape(&overlay_path(src, &plan.name)?)
                )
            }
            ("disk", true, _) => {
                return Err(Error::new(
                    Code::Unsupported,
                    format!(
                        "disk {} is not a file: hv makes external snapshots of file disks only",
                        d.target
                    ),
                ))
            }
            ("disk", false, _) => "snapshot='internal'/>".to_owned(),
            _ => "snapshot='no'/>".to_owned(),
        };
        xml.push_str(&format!("<disk name='{}' {spec}", xml_escape(&d.target)));
    }
    xml.push_str("</disks></domainsnapshot>");
    Ok(xml)
}

/// Runs `take` with hv's marker in the domain's metadata, so the copy of the
/// definition stored in the snapshot records that hv made it; the marker is
/// removed again whatever happens.
fn with_marker<T>(
    dom: &Domain,
    name: &str,
    take: impl FnOnce() -> std::result::Result<T, virt::error::Error>,
) -> std::result::Result<T, virt::error::Error> {
    let mut flags = 0;
    if dom.is_active().unwrap_or(false) {
        flags |= virt::sys::VIR_DOMAIN_AFFECT_LIVE;
    }
    if dom.is_persistent().unwrap_or(false) {
        flags |= virt::sys::VIR_DOMAIN_AFFECT_CONFIG;
    }
    let element = virt::sys::VIR_DOMAIN_METADATA_ELEMENT as i32;
    let ns = Some(snapshot::MADE_NS);
    let marked = dom.set_metadata(
        element,
        Some(&snapshot::marker(name)),
        Some(snapshot::MADE_PREFIX),
        ns,
        flags,
    );
    let result = take();
    if marked.is_ok() {
        let _ = dom.set_metadata(element, None, Some(snapshot::MADE_PREFIX), ns, flags);
    }
    result
}

// ---- ls --------------------------------------------------------------------

/// The fields of a snapshot record after the VM's `name` and `uuid`
/// (docs/snapshots.md). Times are RFC 3339 UTC in `*_at` fields, as in
/// every hv record.
fn snapshot_fields(info: &snapshot::Info, current: bool) -> Map<String, Value> {
    let mut r = Map::new();
    r.insert("snapshot".into(), info.name.clone().into());
    r.insert("created_at".into(), time::rfc3339(info.created).into());
    r.insert("state".into(), info.state.clone().into());
    r.insert(
        "kind".into(),
        if info.external {
            "external"
        } else {
            "internal"
        }
        .into(),
    );
    r.insert("memory".into(), info.memory.into());
    r.insert("parent".into(), json!(info.parent));
    r.insert("current".into(), current.into());
    r.insert("description".into(), json!(info.description));
    r.insert("hv_made".into(), info.hv_made.into());
    r
}

fn snapshots_of(dom: &Domain) -> Result<Vec<(snapshot::Info, bool, DomainSnapshot)>> {
    let mut all = Vec::new();
    for snap in dom
        .list_all_snapshots(0)
        .map_err(libvirt("cannot list its snapshots"))?
    {
        let xml = snap
            .xml_desc(0)
            .map_err(libvirt("cannot read a snapshot"))?;
        let info = snapshot::parse(&xml).map_err(|m| Error::new(Code::Libvirt, m))?;
        let current = snap.is_current(0).unwrap_or(false);
        all.push((info, current, snap));
    }
    // creationTime has one-second resolution; a child is always newer than its parent.
    let parents: std::collections::HashMap<String, Option<String>> = all
        .iter()
        .map(|(i, _, _)| (i.name.clone(), i.parent.clone()))
        .collect();
    let depth = |name: &str| {
        let mut d = 0;
        let mut at = parents.get(name).cloned().flatten();
        while let Some(p) = at {
            d += 1;
            at = if d > parents.len() {
                None
            } else {
                parents.get(&p).cloned().flatten()
            };
        }
        d
    };
    all.sort_by_cached_key(|(i, _, _)| (i.created, depth(&i.name)));
    Ok(all)
}

fn ls(a: LsArgs) -> Result<Exit> {
    let conn = a.connect.open(Access::ReadOnly)?;
    let mut printer = Printer::stdout(a.output.format(), &LS_COLUMNS);
    let mut status = Status::default();
    for dom in targets::select(&conn, &a.vms, &mut printer, &mut status)? {
        let (name, uuid) = (
            dom.name().unwrap_or_default(),
            dom.uuid_string().unwrap_or_default(),
        );
        match snapshots_of(&dom) {
            Ok(list) => {
                for (info, current, _) in
                    list.into_iter().filter(|(i, _, _)| i.hv_made || !a.hv_only)
                {
                    let mut r = Map::new();
                    r.insert("name".into(), name.clone().into());
                    r.insert("uuid".into(), uuid.clone().into());
                    r.extend(snapshot_fields(&info, current));
                    printer.emit(r)?;
                }
            }
            Err(e) => {
                status.failed(&e);
                let vm = VmRef {
                    name: Some(name),
                    uuid: Some(uuid),
                    line: None,
                    record: None,
                };
                printer.emit(targets::failure_record(&vm, Some("ls"), &e))?;
            }
        }
    }
    printer.finish()?;
    Ok(status.exit())
}

// ---- revert and rm ---------------------------------------------------------

/// `revert_flags`: libvirt's virDomainSnapshotRevertFlags, for revert.
fn pick(a: PickArgs, action: &'static str, revert_flags: u32) -> Result<Exit> {
    let fixed = a.snapshot.clone();
    let inputs = bulk::inputs(
        &a.vms,
        "hv-snap ls web1 | jq -c 'select(.snapshot == \"old\")' | hv-snap rm",
    )?;
    let dry_run = a.args.dry_run;
    let act = Action {
        name: action,
        columns: &ACTION_COLUMNS,
        item_timeout: a.timeout,
    };
    bulk::act(inputs, &a.args, act, move |_, dom, vm| {
        let name = fixed.clone().or_else(|| vm.record.as_ref()?.get("snapshot")?.as_str().map(str::to_owned)).ok_or_else(|| {
            Error::usage("which snapshot? give --snapshot NAME, or pipe records with a \"snapshot\" field (hv-snap ls)")
        })?;
        let began = Instant::now();
        let snap = Domain::lookup_snapshot_by_name(dom, &name, 0).map_err(|e| {
            let err = Error::libvirt("", &e);
            if err.code == Code::NotFound {
                Error::new(
                    Code::NotFound,
                    format!("it has no snapshot '{name}'; `hv-snap ls` lists them"),
                )
            } else {
                err
            }
        })?;
        if !dry_run {
            runner::point_of_no_return()?;
            if action == "revert" {
                snap.revert(revert_flags)
                    .map_err(needing_snapshot("libvirt could not revert to it"))
                    .map_err(|e| with_checkpoint_hint(dom, e))?;
            } else {
                snap.delete(0)
                    .map_err(needing_snapshot("libvirt could not delete it"))?;
            }
        }
        let mut r = Map::new();
        r.insert("snapshot".into(), name.into());
        if dry_run {
            r.insert("dry_run".into(), true.into());
        }
        if action == "revert" {
            r.extend(lifecycle::state_fields(dom)?);
        }
        r.insert("elapsed_ms".into(), lifecycle::elapsed_ms(began));
        Ok(r)
    })
}

// ---- prune -----------------------------------------------------------------

fn prune(a: PruneArgs) -> Result<Exit> {
    if a.keep.is_empty() {
        return Err(Error::usage(
            "prune needs at least one --keep-* option (with none, everything would be kept)",
        ));
    }
    let (keep, all, dry_run) = (a.keep, a.all, a.args.dry_run);
    let inputs = bulk::inputs(&a.vms, "hv-ls --tag prod | hv-snap prune --keep-last 3")?;
    let act = Action {
        name: "prune",
        columns: &PRUNE_COLUMNS,
        item_timeout: a.timeout,
    };
    bulk::act(inputs, &a.args, act, move |_, dom, _| {
        prune_vm(dom, &keep, all, dry_run)
    })
}

fn prune_vm(dom: &Domain, keep: &Keep, all: bool, dry_run: bool) -> Result<Map<String, Value>> {
    let candidates: Vec<_> = snapshots_of(dom)?
        .into_iter()
        .filter(|(i, _, _)| all || i.hv_made)
        .collect();
    let times: Vec<i64> = candidates.iter().map(|(i, _, _)| i.created).collect();
    let verdicts = retention::judge(&times, keep);
    let mut judged = Vec::new();
    let mut removed = Vec::new();
    let mut failed = Vec::new();
    for ((info, _, snap), verdict) in candidates.iter().zip(verdicts) {
        judged.push(judged_item(info, verdict));
        match verdict {
            Some(_) => {}
            None if dry_run => removed.push(info.name.clone()),
            None => match runner::point_of_no_return().and_then(|()| {
                snap.delete(0)
                    .map_err(|e| Error::new(Code::Libvirt, e.message()))
            }) {
                Ok(()) => removed.push(info.name.clone()),
                Err(e) => failed.push(format!("'{}': {}", info.name, e.message)),
            },
        }
    }
    if !failed.is_empty() {
        return Err(Error::new(
            Code::Libvirt,
            format!(
                "removed {} snapshot(s), but could not remove {}",
                removed.len(),
                failed.join("; ")
            ),
        ));
    }
    let mut r = Map::new();
    r.insert("snapshots".into(), judged.into());
    r.insert("removed".into(), json!(removed));
    if dry_run {
        r.insert("dry_run".into(), true.into());
    }
    Ok(r)
}

/// What prune decided about one snapshot, in the shape every prune record
/// has (hv-backup prune's too): `kept`, and `keep_reason`, the rule that
/// kept it or null.
fn judged_item(info: &snapshot::Info, verdict: retention::Verdict) -> Value {
    json!({
        "snapshot": info.name,
        "created_at": time::rfc3339(info.created),
        "kept": verdict.is_some(),
        "keep_reason": verdict,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> snapshot::Info {
        snapshot::Info {
            name: "pre".into(),
            description: None,
            state: "shutoff".into(),
            parent: None,
            created: 1_795_298_405,
            external: false,
            memory: false,
            hv_made: true,
        }
    }

    #[test]
    fn snapshot_records_carry_created_at_in_rfc3339_utc() {
        let r = snapshot_fields(&info(), true);
        assert_eq!(r["created_at"], "2026-11-21T22:00:05Z");
        assert!(!r.contains_key("created"), "renamed, not duplicated");
        let keys: Vec<&str> = r.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "snapshot",
                "created_at",
                "state",
                "kind",
                "memory",
                "parent",
                "current",
                "description",
                "hv_made"
            ]
        );
    }

    #[test]
    fn prune_items_have_the_shape_hv_backup_prune_records_have() {
        assert_eq!(
            judged_item(&info(), Some("keep-daily")),
            json!({"snapshot": "pre", "created_at": "2026-11-21T22:00:05Z", "kept": true, "keep_reason": "keep-daily"})
        );
        assert_eq!(
            judged_item(&info(), None),
            json!({"snapshot": "pre", "created_at": "2026-11-21T22:00:05Z", "kept": false, "keep_reason": null})
        );
    }

    #[test]
    fn every_action_takes_a_timeout_in_the_common_syntax() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("hv-snap").chain(args.iter().copied()))
        };
        let timeout = |args: &[&str]| match parse(args).unwrap().command {
            Command::Create(a) => a.timeout,
            Command::Revert(a) => a.pick.timeout,
            Command::Rm(a) => a.timeout,
            Command::Prune(a) => a.timeout,
            Command::Ls(_) => unreachable!(),
        };
        assert_eq!(timeout(&["create", "vm"]), Duration::from_secs(1800));
        assert_eq!(
            timeout(&["create", "--timeout", "5m", "vm"]),
            Duration::from_secs(300)
        );
        assert_eq!(
            timeout(&["revert", "--timeout", "90", "vm"]),
            Duration::from_secs(90)
        );
        assert_eq!(
            timeout(&["rm", "--timeout", "1h30m", "vm"]),
            Duration::from_secs(5400)
        );
        assert_eq!(timeout(&["prune", "vm"]), Duration::from_secs(3600));
        assert_eq!(
            timeout(&["prune", "--timeout", "2d", "vm"]),
            Duration::from_secs(172_800)
        );
        let err = parse(&["create", "--timeout", "5x", "vm"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("1h30m"), "{err}");
    }
}
