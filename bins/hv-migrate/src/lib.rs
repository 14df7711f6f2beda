//! hv-migrate: move VMs between hosts with libvirt's own migration, peer to
//! peer, so the source host's libvirtd talks to the destination's and hv
//! adds nothing to the data path. What hv adds is what a script around
//! `virsh migrate` gets wrong: one record per VM saying where it is now
//! (its `host` is the destination, so the next command in the pipe finds
//! it there), a deadline that aborts a migration that does not converge
//! instead of leaving it running for hours, Ctrl-C that aborts cleanly, and
//! a refusal to start when the destination already has the VM.
//!
//! A failed or aborted migration leaves the VM where it was: libvirt
//! resumes it on the source and removes what it had begun on the
//! destination; the source definition is removed only after success.

use clap::Parser;
use hv_common::bulk::{self, Action};
use hv_common::cli::{self, ActionArgs};
use hv_common::connect::Access;
use hv_common::hosts::{self, Host};
use hv_common::lifecycle;
use hv_common::manual::Manual;
use hv_common::output::{col, Column, Show};
use hv_common::progress::{Counter, Progress};
use hv_common::state::{State, VmState};
use hv_common::targets::VmRef;
use hv_common::{time, Code, Error, Exit, Result};
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use virt::connect::Connect;
use virt::domain::{Domain, MigrateParameters};
use virt::sys;

#[derive(Debug, Parser)]
#[command(
    name = "hv-migrate",
    version,
    about = "Move VMs to another libvirt host",
    long_about = "Move VMs to another host with libvirt's peer-to-peer migration: running VMs \
        live (the default for them), stopped VMs offline (their definition; their disks must \
        already be reachable there). --copy-storage copies disks that are not on storage both \
        hosts share, while the VM runs. The VM is defined on the destination and its source \
        definition removed only once the move succeeded (--keep-source keeps it).\n\n\
        VMs are named as arguments or piped in as records (e.g. from hv-ls -c HOST); with \
        neither, nothing moves. Each VM gets one result record whose host is where the VM is \
        afterwards. A migration that fails, times out (--timeout) or is interrupted leaves the \
        VM running on the source."
)]
pub struct Cli {
    /// VMs to move, by name or UUID [default: records or names from stdin]
    #[arg(value_name = "VM")]
    pub vms: Vec<String>,

    /// The destination: a libvirt URI the source host can reach, or an alias from the hosts file
    #[arg(long, value_name = "HOST")]
    pub to: String,

    /// Move running VMs while they run (the default for them); a stopped VM is then an error
    #[arg(long, conflicts_with = "offline")]
    pub live: bool,

    /// Move only stopped VMs, as definitions; a running VM is then an error
    #[arg(long)]
    pub offline: bool,

    /// Copy the VM's disks to the destination (for disks not on shared storage); live only
    #[arg(long)]
    pub copy_storage: bool,

    /// Define the VM on the destination (the default)
    #[arg(long, conflicts_with = "transient")]
    pub persistent: bool,

    /// Leave it undefined on the destination: it disappears there when it stops
    #[arg(long)]
    pub transient: bool,

    /// Keep the source host's definition after the move (it is removed by default)
    #[arg(long)]
    pub keep_source: bool,

    /// Limit the migration to this many MiB/s (libvirt's bandwidth), to leave the link to others [default: no limit]
    #[arg(long, value_name = "MIB_PER_S", value_parser = clap::value_parser!(u64).range(1..))]
    pub bandwidth: Option<u64>,

    /// Abort a migration that has not finished after this long; the VM keeps running on the source (0: no limit)
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = time::duration)]
    pub timeout: Duration,

    #[command(flatten)]
    pub args: ActionArgs,
}

pub const MANUAL: Manual = Manual {
    exit_status: hv_common::manual::EXIT_STATUS,
    environment: hv_common::manual::ENVIRONMENT,
    examples: &[
        ("Move every VM tagged web from h1 to h2, live:", "hv-ls -c h1 --tag web | hv-migrate --to h2"),
        ("Move a VM whose disks are local to its host, giving up after 10 minutes:", "hv-migrate -c qemu+ssh://root@h1/system --to qemu+ssh://root@h2/system --copy-storage --timeout 10m db1"),
        ("Empty a host before maintenance, then check where everything went:", "hv-ls -c h1 --state running | hv-migrate --to h2 --copy-storage | hv-ls"),
    ],
    notes: &[
        "Result records carry name, uuid, host (the destination, where the VM now is), action (migrate), ok, changed, how (live or offline), from and to (the hosts), copy_storage, source_kept, state and state_reason on the destination, downtime_ms (the pause at switch-over, from the completed job on the destination; null offline), bytes (what libvirt reports as moved: the guest's memory, not a --copy-storage copy; null offline) and elapsed_ms.",
        "The destination URI is used by the source host's libvirtd (peer to peer) and by hv-migrate itself (checks before, the VM's state after), so it must work from both: for qemu+ssh, root on the source needs an ssh key the destination accepts and its host key in known_hosts.",
        "A failed migration is reported with the VM still on the source: libvirt resumes it there, and hv-migrate removes the disks a storage copy had created on the destination (only those). --timeout, Ctrl-C and SIGTERM abort the migration job (libvirt's abort) with the same result.",
        "Live migration needs a CPU the destination can provide: use host-model or a named CPU model rather than host-passthrough between different hosts.",
    ],
};

static COLUMNS: [Column; 7] = [
    col("name", "name", Show::Plain),
    col("ok", "ok", Show::Plain),
    col("how", "how", Show::Plain),
    col("to", "to", Show::Plain),
    col("state", "state", Show::Plain),
    col("downtime", "downtime_ms", Show::Plain),
    col("ms", "elapsed_ms", Show::Plain),
];

/// How a VM was moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum How {
    /// It ran throughout; only a short pause at the switch-over.
    Live,
    /// It was stopped; its definition moved.
    Offline,
}

/// The fields of an hv-migrate record after the envelope (docs/migrate.md).
#[derive(Debug, Serialize)]
pub struct Moved {
    pub changed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    pub how: How,
    /// The host it came from.
    pub from: String,
    /// The host it is on now.
    pub to: String,
    pub copy_storage: bool,
    /// Whether the source host still has its definition (`--keep-source`).
    pub source_kept: bool,
    /// Its state on the destination.
    #[serde(flatten)]
    pub state: VmState,
    /// The pause at the switch-over, from the completed job on the
    /// destination; null offline.
    pub downtime_ms: Option<u64>,
    /// What libvirt reports as moved (`data_processed`): the memory, not
    /// a storage copy, which libvirt does not count there; null offline.
    pub bytes: Option<u64>,
    pub elapsed_ms: u64,
}

/// What the run was asked to do, free of clap.
#[derive(Debug, Clone)]
struct Plan {
    to: Host,
    mode: Mode,
    copy_storage: bool,
    persistent: bool,
    keep_source: bool,
    bandwidth: Option<u64>,
    timeout: Option<Duration>,
    dry_run: bool,
    connect_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Live for running VMs, offline for stopped ones.
    Either,
    Live,
    Offline,
}

/// How often a running migration is looked at: progress, deadline, Ctrl-C.
const POLL: Duration = Duration::from_millis(250);

pub fn run(cli: Cli) -> Result<Exit> {
    let env = |k: &str| std::env::var(k).ok();
    let to = hosts::destination(&cli.to, cli.args.connect.hosts.as_deref(), env)?;
    let plan = Plan {
        to,
        mode: match (cli.live, cli.offline) {
            (true, _) => Mode::Live,
            (_, true) => Mode::Offline,
            _ => Mode::Either,
        },
        copy_storage: cli.copy_storage,
        persistent: !cli.transient,
        keep_source: cli.keep_source,
        bandwidth: cli.bandwidth,
        timeout: (!cli.timeout.is_zero()).then_some(cli.timeout),
        dry_run: cli.args.dry_run,
        connect_timeout: cli.args.connect.connect_timeout,
    };
    if !plan.persistent && !plan.keep_source {
        return Err(Error::usage(
            "--transient without --keep-source would leave the VM defined nowhere once it stops; \
             add --keep-source, or drop --transient",
        ));
    }
    if plan.mode == Mode::Offline && !plan.persistent {
        return Err(Error::usage(
            "--offline moves a VM's definition, so --transient does not apply; drop one of them",
        ));
    }
    if plan.mode == Mode::Offline && plan.copy_storage {
        return Err(Error::usage(
            "--copy-storage needs a running VM (libvirt copies disks only during a live migration); \
             start it first, or drop --copy-storage and copy its disks to the destination yourself",
        ));
    }
    let inputs = bulk::inputs(&cli.vms, "hv-ls -c h1 --tag web | hv-migrate --to h2")?;
    let action = Action {
        name: "migrate",
        columns: &COLUMNS,
        // No limit of the runner's: --timeout is enforced by aborting the
        // job, and a migration past its switch-over must be let finish, so
        // its record says where the VM is.
        item_timeout: Duration::from_secs(365 * 24 * 3600),
    };
    let counter = Arc::new(Counter::default());
    let progress = Progress::start("migrated", Arc::clone(&counter));
    let dest = Arc::new(Destination {
        host: plan.to.clone(),
        timeout: plan.connect_timeout,
        // Removing what a failed storage copy left there takes write access.
        access: if plan.copy_storage {
            Access::ReadWrite
        } else {
            Access::ReadOnly
        },
        conn: OnceLock::new(),
    });
    // Opened while the source is: an ssh handshake each, side by side.
    let early = Arc::clone(&dest);
    std::thread::spawn(move || {
        let _ = early.conn();
    });
    let result = bulk::act_moving(inputs, &cli.args, action, move |conn, dom, vm| {
        migrate(conn, dom, vm, &plan, &dest, &counter).map(|moved| {
            let host = moved.to.clone();
            (moved, Some(host))
        })
    });
    progress.stop();
    let exit = result?;
    // Aborted by a signal: the shell's 130 or 143, as docs/records.md has
    // it for `interrupted`, once every record is out.
    if exit != Exit::Ok && cli::interrupted().is_some() {
        return Err(cli::interrupted_error(
            "migrations aborted; the VMs not moved are still on their source hosts",
        ));
    }
    Ok(exit)
}

/// The destination host, opened once (read-only, or read-write to clean up
/// after a failed storage copy) to check it does not have the VM already
/// and to read the VM's state there afterwards.
struct Destination {
    host: Host,
    timeout: Duration,
    access: Access,
    conn: OnceLock<Result<Arc<Connect>>>,
}

impl Destination {
    /// A new connection, past the cached one.
    fn fresh(&self) -> Result<Connect> {
        self.host.open(self.access, self.timeout)
    }

    fn conn(&self) -> Result<Arc<Connect>> {
        self.conn
            .get_or_init(|| {
                self.fresh()
                    .map(Arc::new)
                    .map_err(|e| hosts::unreachable(&self.host, &e))
            })
            .clone()
    }
}

fn migrate(
    conn: &Connect,
    dom: &Domain,
    vm: &VmRef,
    plan: &Plan,
    dest: &Destination,
    counter: &Counter,
) -> Result<Moved> {
    let began = Instant::now();
    let from = match &vm.host {
        Some(h) => h.clone(),
        None => conn.uri().unwrap_or_else(|_| "the default host".into()),
    };
    let state = lifecycle::state(dom)?.state;
    let how = match (state.is_active(), plan.mode) {
        (true, Mode::Offline) => {
            return Err(Error::new(
                Code::InvalidState,
                "it is running, and --offline moves only stopped VMs; drop --offline to move it live, or stop it first",
            ))
        }
        (false, Mode::Live) => {
            return Err(Error::new(
                Code::InvalidState,
                "it is not running, and --live moves only running VMs; drop --live to move its definition offline, or start it first",
            ))
        }
        (true, _) => How::Live,
        (false, _) => How::Offline,
    };
    if how == How::Offline && plan.copy_storage {
        return Err(Error::new(
            Code::InvalidState,
            "it is not running, and libvirt copies disks only during a live migration; start it first, or drop --copy-storage and copy its disks yourself",
        ));
    }
    if how == How::Offline && !dom.is_persistent().unwrap_or(false) {
        return Err(Error::new(
            Code::InvalidState,
            "it is a stopped transient VM: there is nothing to move",
        ));
    }
    if how == How::Offline && !plan.persistent {
        return Err(Error::new(
            Code::InvalidState,
            "it is not running, and an offline move moves its definition, so --transient does not apply; drop --transient",
        ));
    }
    let dconn = dest.conn()?;
    if same_host(conn, &dconn) {
        // Already where it is asked to go (an evacuation piping in every
        // host's VMs): nothing to do, and nothing to refuse.
        return Ok(Moved {
            changed: false,
            dry_run: plan.dry_run.then_some(true),
            how,
            from: dest.host.name.clone(),
            to: dest.host.name.clone(),
            copy_storage: false,
            source_kept: true,
            state: lifecycle::state(dom)?,
            downtime_ms: None,
            bytes: None,
            elapsed_ms: began.elapsed().as_millis() as u64,
        });
    }
    not_there(&dconn, dom, &dest.host)?;
    if how == How::Offline && !plan.keep_source {
        disks_there(&dconn, dom, &dest.host)?;
    }
    let mut moved = Moved {
        changed: true,
        dry_run: plan.dry_run.then_some(true),
        how,
        from,
        to: dest.host.name.clone(),
        copy_storage: plan.copy_storage,
        source_kept: plan.keep_source,
        state: VmState::bare(state),
        downtime_ms: None,
        bytes: None,
        elapsed_ms: 0,
    };
    if plan.dry_run {
        moved.elapsed_ms = began.elapsed().as_millis() as u64;
        return Ok(moved);
    }
    let uuid = dom
        .uuid_string()
        .map_err(|e| Error::libvirt("its UUID could not be read", &e))?;
    let copies = if plan.copy_storage {
        Some(Copies::before(dest, dom)?)
    } else {
        None
    };
    let last = match run_job(dom, plan, how, &dest.host, counter) {
        Ok(last) => last,
        Err(e) => {
            // libvirt resumes the VM on the source but leaves the disks it
            // created on the destination: remove those, and only those.
            let left = copies.and_then(|c| c.remove(&dest.host));
            return Err(match left {
                Some(left) => Error::new(e.code, format!("{}; {left}", e.message)),
                None => e,
            });
        }
    };
    // From here it is on the destination: the record says so whatever
    // else goes wrong. The connection opened before may have gone stale
    // during a long migration; one retry on a fresh one.
    let there = dconn.lookup_domain_by_uuid_string(&uuid).or_else(|_| {
        dest.fresh()?
            .lookup_domain_by_uuid_string(&uuid)
            .map_err(|e| Error::libvirt("", &e))
    });
    let there = match there {
        Ok(d) => Some(d),
        Err(e) => {
            cli::warn(format!(
                "{}: moved to {}, but its state there could not be read: {}",
                vm.label(),
                dest.host.name,
                e.message
            ));
            None
        }
    };
    moved.state = there
        .as_ref()
        .and_then(|d| lifecycle::state(d).ok())
        .unwrap_or_else(|| VmState::bare(State::Nostate));
    if how == How::Live {
        // The destination keeps the completed job's figures (the source's
        // go with its definition); read them without taking them, so
        // `virsh domjobinfo --completed` there still shows them. Only
        // these say the real downtime: while it runs, libvirt reports the
        // downtime QEMU expects.
        let done = there
            .as_ref()
            .and_then(|d| {
                d.job_stats(
                    sys::VIR_DOMAIN_JOB_STATS_COMPLETED | sys::VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED,
                )
                .ok()
            })
            .filter(|s| s.data_processed.is_some() || s.downtime.is_some());
        let bytes = |s: &virt::domain::JobStats| {
            s.data_processed
                .or_else(|| Some(s.mem_processed? + s.disk_processed.unwrap_or(0)))
        };
        match &done {
            Some(done) => {
                moved.downtime_ms = done.downtime;
                moved.bytes = bytes(done);
            }
            None => moved.bytes = last.as_ref().and_then(bytes),
        }
    }
    moved.elapsed_ms = began.elapsed().as_millis() as u64;
    Ok(moved)
}

/// Refuses to move a VM the destination already has, by UUID or by name:
/// libvirt would refuse too, but later and less clearly.
fn not_there(dconn: &Connect, dom: &Domain, host: &Host) -> Result<()> {
    let uuid = dom
        .uuid_string()
        .map_err(|e| Error::libvirt("its UUID could not be read", &e))?;
    if dconn.lookup_domain_by_uuid_string(&uuid).is_ok() {
        return Err(Error::new(
            Code::InvalidState,
            format!(
                "{} already defines a VM with its UUID (moved there before with --keep-source?); keep one of the two definitions, then move it",
                host.name
            ),
        ));
    }
    let name = dom.name().unwrap_or_default();
    if dconn.lookup_domain_by_name(&name).is_ok() {
        return Err(Error::new(
            Code::InvalidState,
            format!(
                "{} already has a different VM named {name:?}; rename one of them first",
                host.name
            ),
        ));
    }
    Ok(())
}

/// The disks a storage migration will create on the destination: the
/// paths no volume of its pools had before (pools refreshed, so a file
/// copied there by hand counts). After a failed migration these, and no
/// others, are removed.
struct Copies {
    conn: Arc<Connect>,
    paths: Vec<String>,
}

impl Copies {
    fn before(dest: &Destination, dom: &Domain) -> Result<Copies> {
        let conn = dest.conn()?;
        refresh_pools(&conn);
        let xml = dom
            .xml_desc(0)
            .map_err(|e| Error::libvirt("its definition could not be read", &e))?;
        let paths = hv_common::domain::parse(&xml)?
            .disks
            .into_iter()
            .filter(|d| d.device == "disk" && !d.shared)
            .filter_map(|d| d.source)
            .filter(|p| conn.lookup_storage_vol_by_path(p).is_err())
            .collect();
        Ok(Copies { conn, paths })
    }

    /// Removes what the migration created; says what it could not.
    fn remove(self, host: &Host) -> Option<String> {
        refresh_pools(&self.conn);
        let left: Vec<String> = self
            .paths
            .iter()
            .filter(|p| match self.conn.lookup_storage_vol_by_path(p) {
                Ok(vol) => vol.delete(0).is_err(),
                Err(_) => false, // never created, or already gone
            })
            .cloned()
            .collect();
        (!left.is_empty()).then(|| {
            format!(
                "the partial copies {} on {} could not be removed; remove them by hand",
                left.join(", "),
                host.name
            )
        })
    }
}

fn refresh_pools(conn: &Connect) {
    for pool in conn
        .list_all_storage_pools(sys::VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
        .unwrap_or_default()
    {
        let _ = pool.refresh(0);
    }
}

/// Whether two connections reach the same libvirt host: its host UUID,
/// which libvirt itself compares before migrating, else (a driver that
/// reports none) the same URI.
fn same_host(a: &Connect, b: &Connect) -> bool {
    fn uuid(conn: &Connect) -> Option<String> {
        let caps = conn.capabilities().ok()?;
        let host = &caps[caps.find("<host>")?..];
        let start = host.find("<uuid>")? + "<uuid>".len();
        let end = host[start..].find("</uuid>")? + start;
        Some(host[start..end].trim().to_owned())
    }
    match (uuid(a), uuid(b)) {
        (Some(x), Some(y)) => x == y,
        _ => matches!((a.uri(), b.uri()), (Ok(x), Ok(y)) if x == y),
    }
}

/// An offline move undefines the VM here and defines it there: its disks
/// must be there already, or it would be left with disks nowhere it is
/// defined. libvirt can tell only for disks in a storage pool.
fn disks_there(dconn: &Connect, dom: &Domain, host: &Host) -> Result<()> {
    let xml = dom
        .xml_desc(0)
        .map_err(|e| Error::libvirt("its definition could not be read", &e))?;
    let parsed = hv_common::domain::parse(&xml)?;
    for disk in parsed.disks.iter().filter(|d| d.device == "disk") {
        let Some(path) = disk
            .source
            .as_deref()
            .filter(|_| disk.kind == "file" || disk.kind == "block")
        else {
            continue;
        };
        if dconn.lookup_storage_vol_by_path(path).is_err() {
            return Err(Error::new(
                Code::InvalidState,
                format!(
                    "its disk {path} is in no storage pool of {}, so {} may not have it; copy it there (then `virsh pool-refresh` its pool there), or start the VM and use --copy-storage, or add --keep-source to move the definition and keep this one",
                    host.name, host.name
                ),
            ));
        }
    }
    Ok(())
}

fn flags(plan: &Plan, how: How) -> u32 {
    let mut f = sys::VIR_MIGRATE_PEER2PEER | sys::VIR_MIGRATE_ABORT_ON_ERROR;
    if plan.persistent {
        f |= sys::VIR_MIGRATE_PERSIST_DEST;
    }
    if !plan.keep_source {
        f |= sys::VIR_MIGRATE_UNDEFINE_SOURCE;
    }
    match how {
        How::Live => f |= sys::VIR_MIGRATE_LIVE,
        How::Offline => f |= sys::VIR_MIGRATE_OFFLINE | sys::VIR_MIGRATE_PERSIST_DEST,
    }
    if plan.copy_storage {
        f |= sys::VIR_MIGRATE_NON_SHARED_DISK;
    }
    f
}

/// Runs libvirt's migration in a thread of its own and watches it: counts
/// progress, and aborts the job at the deadline, on Ctrl-C or SIGTERM, or
/// when the runner gave up on the item. Returns the last figures seen.
fn run_job(
    dom: &Domain,
    plan: &Plan,
    how: How,
    to: &Host,
    counter: &Counter,
) -> Result<Option<virt::domain::JobStats>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (mover, uri, f) = (dom.clone(), to.uri.clone(), flags(plan, how));
    let params = MigrateParameters {
        bandwidth: plan.bandwidth,
        ..Default::default()
    };
    std::thread::spawn(move || {
        let _ = tx.send(mover.migrate_to_uri3(Some(&uri), params, f));
    });
    let began = Instant::now();
    let mut aborted: Option<Error> = None;
    let mut last = None;
    let mut counted = 0u64;
    loop {
        match rx.recv_timeout(POLL) {
            Ok(Ok(())) => return Ok(last),
            Ok(Err(e)) => return Err(failed(dom, to, aborted, &e)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::new(
                    Code::Internal,
                    "the migration thread ended without a result",
                ))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if aborted.is_none() {
            aborted = reason_to_abort(plan, began);
        }
        if aborted.is_some() {
            // Asked again each time round: a job still being set up has
            // nothing to abort yet. One that has just ended refuses, and
            // its result then tells.
            let _ = hv_common::ffi::abort_job(dom);
        }
        if how == How::Live && aborted.is_none() {
            if let Ok(stats) = dom.job_stats(0) {
                if let Some(done) = stats.data_processed {
                    counter.add(done.saturating_sub(counted));
                    counted = counted.max(done);
                }
                if let Some(total) = stats.data_total {
                    counter.total.fetch_max(total, Ordering::Relaxed);
                }
                last = Some(stats);
            }
        }
    }
}

/// Why a running migration must stop now, if it must.
fn reason_to_abort(plan: &Plan, began: Instant) -> Option<Error> {
    if cli::interrupted().is_some() {
        Some(cli::interrupted_error("migration aborted"))
    } else if plan.timeout.is_some_and(|t| began.elapsed() >= t) || hv_common::runner::abandoned() {
        Some(Error::new(
            Code::Timeout,
            format!(
                "did not finish within {}s (--timeout); migration aborted",
                plan.timeout.unwrap_or_default().as_secs()
            ),
        ))
    } else {
        None
    }
}

/// The error of a migration that did not happen, saying where the VM is.
fn failed(dom: &Domain, to: &Host, aborted: Option<Error>, err: &virt::error::Error) -> Error {
    let here = match lifecycle::state(dom) {
        Ok(s) if s.state == State::Running => "it runs on, on the source".to_owned(),
        Ok(s) => format!("it stays on the source, {}", s.state),
        Err(_) => "look for it with hv-ls on both hosts".to_owned(),
    };
    match aborted {
        Some(e) => Error::new(e.code, format!("{}; {here}", e.message)),
        None => Error::new(
            Code::Libvirt,
            format!("migration to {} failed: {}; {here}", to.name, err.message()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_follow_the_plan() {
        let plan = Plan {
            to: Host {
                name: "h2".into(),
                uri: "qemu:///x".into(),
            },
            mode: Mode::Either,
            copy_storage: true,
            persistent: true,
            keep_source: false,
            bandwidth: None,
            timeout: None,
            dry_run: false,
            connect_timeout: Duration::from_secs(1),
        };
        let live = flags(&plan, How::Live);
        for f in [
            sys::VIR_MIGRATE_PEER2PEER,
            sys::VIR_MIGRATE_LIVE,
            sys::VIR_MIGRATE_PERSIST_DEST,
            sys::VIR_MIGRATE_UNDEFINE_SOURCE,
            sys::VIR_MIGRATE_NON_SHARED_DISK,
        ] {
            assert_ne!(live & f, 0, "flag {f}");
        }
        let kept = flags(
            &Plan {
                keep_source: true,
                persistent: false,
                copy_storage: false,
                ..plan
            },
            How::Live,
        );
        assert_eq!(kept & sys::VIR_MIGRATE_UNDEFINE_SOURCE, 0);
        assert_eq!(kept & sys::VIR_MIGRATE_PERSIST_DEST, 0);
        assert_eq!(kept & sys::VIR_MIGRATE_NON_SHARED_DISK, 0);
    }

    #[test]
    fn the_record_is_the_documented_one() {
        let moved = Moved {
            changed: true,
            dry_run: Some(true),
            how: How::Live,
            from: "h1".into(),
            to: "h2".into(),
            copy_storage: true,
            source_kept: false,
            state: VmState::bare(State::Running),
            downtime_ms: Some(20),
            bytes: Some(1),
            elapsed_ms: 1,
        };
        hv_testbench::assert_documented(
            &hv_common::targets::success_record(
                &VmRef {
                    host: Some("h2".into()),
                    ..VmRef::named("web1", "u")
                },
                "migrate",
                &moved,
            ),
            "migrate.md",
            "### hv-migrate records",
        );
    }
}
