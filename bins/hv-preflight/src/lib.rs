//! hv-preflight: whether an operation can work, asked before it runs rather
//! than learned from its failure halfway through. It checks what
//! virt-host-validate checks, then what a planned VM or a batch of backups,
//! snapshots or starts will need from this host (memory, vCPUs, space), and
//! says for every problem the command that fixes it. Every check runs: one
//! failure never hides the next. Records share hv-health's shape.

mod ffi;
mod host;
mod migrate;
mod ops;
mod plan;

use clap::Parser;
use host::Need;
use hv_common::checks::{self, Check, Status};
use hv_common::cli::{self, ConnectArgs, OutputArgs};
use hv_common::connect::{Access, Target};
use hv_common::hosts::Scope;
use hv_common::manual::Manual;
use hv_common::output::{Format, Printer};
use hv_common::plan::{Budget, Limits};
use hv_common::profile::Profile;
pub use hv_common::profile::VirtType;
use hv_common::storage::Machine;
use hv_common::targets::Input;
use hv_common::{size, Choice, Code, Error, Exit, Result};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Backup,
    Snapshot,
    Start,
    /// Moving to another host (hv-migrate): needs --to
    Migrate,
}

impl Choice for Operation {
    const ALL: &'static [Operation] = &[
        Operation::Backup,
        Operation::Snapshot,
        Operation::Start,
        Operation::Migrate,
    ];

    fn name(self) -> &'static str {
        match self {
            Operation::Backup => "backup",
            Operation::Snapshot => "snapshot",
            Operation::Start => "start",
            Operation::Migrate => "migrate",
        }
    }

    fn help(self) -> Option<&'static str> {
        (self == Operation::Migrate).then_some("Moving to another host (hv-migrate): needs --to")
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "hv-preflight",
    version,
    about = "Check, before an operation, that the host and the VMs are ready for it; each problem names its fix",
    long_about = "Check before an operation that it can work. With no options: the host (hardware \
        virtualization, /dev/kvm usable by you, vhost-net, tun, cgroup controllers, IOMMU, secure \
        guest support, libvirt reachable and its version, QEMU's version, the domain type). With \
        --name/--memory/--vcpus/--disk/--iso or --profiles: a planned VM (name free, memory, vCPUs, \
        space in the pool or directory, ISO verified by hv-iso). With --for backup|snapshot|start \
        and VMs as arguments or on stdin: each VM exists, is in a state the operation accepts, and \
        the space, memory and vCPUs they need together are there. One record per check and \
        subject: status pass, warn or fail, the value measured, the threshold, and a hint with \
        the fix. docs/preflight.md lists every check."
)]
pub struct Cli {
    /// VMs to check for --for (names or UUIDs) [default: the records or names piped in]
    #[arg(value_name = "VM", requires = "operation")]
    pub vms: Vec<String>,

    /// Check VMs before this operation: backup, snapshot, start or migrate (with --to)
    #[arg(
        long = "for",
        value_name = "OPERATION",
        value_parser = cli::choice::<Operation>(),
        hide_possible_values = true
    )]
    pub operation: Option<Operation>,

    /// For --for migrate: the destination, a URI or an alias of the hosts file
    #[arg(long, value_name = "HOST")]
    pub to: Option<String>,

    /// The hv-backup repository the backups go to (needed with --for backup)
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,

    /// With --for snapshot: the snapshots will be --disk-only (overlays, no memory saved)
    #[arg(long, requires = "operation")]
    pub disk_only: bool,

    /// A planned VM's name
    #[arg(long, value_name = "NAME", conflicts_with = "operation")]
    pub name: Option<String>,

    /// A planned VM's memory, with a unit: 512M, 4G (also the default for --profiles)
    #[arg(long, value_name = "SIZE", value_parser = size::parse, conflicts_with = "operation")]
    pub memory: Option<u64>,

    /// A planned VM's vCPUs (also the default for --profiles)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "operation")]
    pub vcpus: Option<u32>,

    /// A planned VM's disk size, with a unit: 20G (also the default for --profiles)
    #[arg(long, value_name = "SIZE", value_parser = size::parse, conflicts_with = "operation")]
    pub disk: Option<u64>,

    /// The storage pool the planned disk goes to [default: default]
    #[arg(long, value_name = "POOL", conflicts_with_all = ["dir", "operation"])]
    pub pool: Option<String>,

    /// The directory the planned disk goes to, instead of a pool
    #[arg(long, value_name = "DIR", conflicts_with = "operation")]
    pub dir: Option<PathBuf>,

    /// The ISO a planned VM installs from: a name in the hv-iso library, or a path
    #[arg(long, value_name = "NAME|PATH", conflicts_with = "operation")]
    pub iso: Option<String>,

    /// The hv-iso library --iso names are looked up in
    #[arg(
        long,
        env = "HV_ISO_LIBRARY",
        value_name = "DIR",
        default_value = "/var/lib/hv/isos"
    )]
    pub iso_library: PathBuf,

    /// Planned VMs as JSON profile records, one per line, from FILE (- for stdin)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["operation", "name"])]
    pub profiles: Option<PathBuf>,

    /// The domain type the host's or planned VMs will run with: kvm, or qemu (TCG emulation,
    /// no hardware needed); --for start reads each VM's own
    #[arg(
        long,
        value_parser = cli::choice::<VirtType>(),
        value_name = "TYPE",
        default_value = "kvm",
        hide_possible_values = true,
        conflicts_with = "operation"
    )]
    pub virt_type: VirtType,

    /// Warn when a pool, directory or repository would be this full afterwards (percent used)
    #[arg(long, value_name = "PERCENT", default_value_t = 85.0)]
    pub disk_warn: f64,

    /// Warn when the host would keep less than this share of its memory available (percent)
    #[arg(long, value_name = "PERCENT", default_value_t = 10.0)]
    pub memory_warn: f64,

    /// Leave out a check, by id (repeatable): --skip host.iommu
    #[arg(long, value_name = "CHECK", value_parser = known_check)]
    pub skip: Vec<String>,

    /// Print only warn and fail records
    #[arg(long)]
    pub problems: bool,

    /// Exit 1 on a warning too, not only on a failure
    #[arg(long)]
    pub strict: bool,

    #[command(flatten)]
    pub connect: ConnectArgs,

    #[command(flatten)]
    pub output: OutputArgs,
}

/// Every check id, in the order docs/preflight.md explains them.
pub const CHECK_IDS: &[&str] = &[
    "migrate.destination",
    "migrate.name_free",
    "migrate.memory",
    "migrate.cpu",
    "migrate.network",
    "migrate.disk",
    "host.hw_virt",
    "host.kvm_device",
    "host.kvm_access",
    "host.vhost_net",
    "host.tun",
    "host.cgroup",
    "host.iommu",
    "host.secure_guest",
    "libvirt.reachable",
    "libvirt.version",
    "libvirt.domain_type",
    "qemu.version",
    "plan.name",
    "plan.memory",
    "plan.vcpus",
    "plan.storage",
    "plan.iso",
    "vm.exists",
    "vm.state",
    "vm.job",
    "vm.disks",
    "vm.memory",
    "vm.vcpus",
    "vm.snapshot_format",
    "snapshot.space",
    "backup.repository",
    "backup.space",
];

fn known_check(id: &str) -> std::result::Result<String, String> {
    if CHECK_IDS.contains(&id) {
        Ok(id.to_owned())
    } else {
        Err(format!(
            "no check {id:?}; the ids are listed in docs/preflight.md and the man page"
        ))
    }
}

pub const MANUAL: Manual = Manual {
    exit_status: &[
        ("0", "No check failed (warnings allowed unless --strict)."),
        ("1", "A check failed, or with --strict a check warned."),
        ("2", "Usage error, or a malformed profile or stdin line (reported with its line number; the other lines are still checked)."),
        ("3", "libvirt could not be reached (the libvirt.reachable check fails; the host checks that need no libvirt still run); over several hosts, none of them."),
    ],
    environment: &[
        ("HV_CONNECT", "The libvirt URI when -c is not given (then LIBVIRT_DEFAULT_URI, then libvirt's default)."),
        ("HV_ISO_LIBRARY", "The hv-iso library when --iso-library is not given (default /var/lib/hv/isos)."),
    ],
    examples: &[
        ("Is this host ready for KVM guests?", "hv-preflight"),
        ("Only the problems, with their fixes:", "hv-preflight --problems --format jsonl | jq -r '\"\\(.check) \\(.subject): \\(.message) -> \\(.hint)\"'"),
        ("Before creating a VM:", "hv-preflight --name web1 --memory 4G --vcpus 2 --disk 20G --pool default --iso debian-12.7.0-amd64-netinst.iso"),
        ("Several planned VMs at once (they are counted together):", "hv-preflight --profiles fleet.jsonl --pool default"),
        ("Before tonight's backups; back up only if nothing failed:", "hv-ls --tag prod | hv-preflight --for backup --repo /srv/backup >/dev/null && hv-ls --tag prod | hv-backup create --repo /srv/backup"),
        ("Before starting every stopped VM:", "hv-ls --state shutoff | hv-preflight --for start --problems"),
        ("Every host of the hosts file, only the problems:", "hv-preflight --hosts /etc/hv/hosts --problems"),
    ],
    notes: &[
        "Every record has check (a stable id), status (pass, warn, fail), subject (what it is about: host, a VM name, a pool, a path), the VM's name and uuid or the pool, directory, repository, controller or image, message, hint (the fix; null on pass), value and threshold (null where nothing is measured), and unit: what value and threshold count when they are numbers (bytes, count, percent or seconds), null when they are text (a state, a version). docs/preflight.md lists every check with its threshold and fix.",
        "A profile record has name, and any of memory or memory_bytes, vcpus, disk or disk_bytes, pool, dir and iso; --memory, --vcpus, --disk, --pool, --dir and --iso fill in what a profile leaves out. Sizes take a unit: K, M, G, T (powers of 1024, also KiB...), KB, MB, GB, TB (powers of 1000). The planned VMs of one run (or the VMs of one --for start run) are counted together: each one's memory, vCPUs and disk are checked against what the ones before it leave.",
        "--for backup estimates each VM's need from its last backups in the repository (the most any of its last five stored), or, before its first, from its disks' allocation: compression and deduplication usually store less. --for snapshot counts a running VM's memory (saved into its first disk, unless --disk-only) and its disks' allocation (what the guest can rewrite while the snapshot keeps the old data).",
        "Over several hosts (-c repeated, --hosts FILE), each host is checked in its own thread and every record has host. The hardware checks read this machine's /proc and /sys and run for this machine only; another host's libvirt says what it offers (libvirt.domain_type). With --for, a piped record is checked on the host it names, and a bare name on every host (vm.exists fails once, without host, when no host that answered has it); another host's disks are seen through its storage pools (vm.disks warns when a pool does not list a disk yet or none holds its directory), and a backup of its VMs is read over the ssh of its URI (another transport fails vm.disks). A planned VM is checked on the host its profile names (host), each host's counted together; over several hosts a profile without host fails plan.host.",
        "With --virt-type qemu the hardware and /dev/kvm checks warn instead of failing: TCG emulation runs without them, many times slower. --for start judges them by the domain type each VM to start is defined with: they fail when a VM of type kvm is among them (and name it), and pass when all are of type qemu, which need no hardware.",
    ],
};

/// A run's request once clap has had its say and the flags that only make
/// sense together have been checked together: the checks are written
/// against plain values, so none of them depends on how a flag is spelled.
struct Options {
    /// What is checked besides the host.
    asked: Asked,
    /// The domain type the host or the planned VMs will run with.
    virt_type: VirtType,
    limits: Limits,
    /// Check ids to leave out.
    skip: Vec<String>,
    problems: bool,
    strict: bool,
    /// -c (repeatable) or --hosts, else $HV_CONNECT, else
    /// $LIBVIRT_DEFAULT_URI, else libvirt's default.
    scope: Scope,
    connect_timeout: std::time::Duration,
    format: Format,
}

/// The three kinds of run: each needs its own flags and no other's.
enum Asked {
    /// Only the host.
    Host,
    /// VMs about to be backed up, snapshotted or started (--for).
    Vms(ops::Request),
    /// VMs about to be created (--name or --profiles).
    Planned(plan::Request),
}

pub fn run(cli: Cli) -> Result<Exit> {
    // What clap cannot say: the flags of a planned VM need a VM to
    // describe, and a backup needs the repository it goes to.
    let describes_plan = cli.memory.is_some()
        || cli.vcpus.is_some()
        || cli.disk.is_some()
        || cli.pool.is_some()
        || cli.dir.is_some()
        || cli.iso.is_some();
    if describes_plan && cli.name.is_none() && cli.profiles.is_none() {
        return Err(Error::usage(
            "--memory, --vcpus, --disk, --pool, --dir and --iso describe a planned VM: give its --name, or --profiles FILE",
        ));
    }
    if cli.operation == Some(Operation::Backup) && cli.repo.is_none() {
        return Err(Error::usage(
            "--for backup needs the repository the backups go to: --repo DIR",
        ));
    }
    if cli.repo.is_some() && cli.operation != Some(Operation::Backup) {
        return Err(Error::usage("--repo is only used with --for backup"));
    }
    if (cli.operation == Some(Operation::Migrate)) != cli.to.is_some() {
        return Err(Error::usage(
            "--for migrate and --to HOST go together: the checks are about that destination",
        ));
    }
    if cli.disk_only && cli.operation != Some(Operation::Snapshot) {
        return Err(Error::usage("--disk-only is only used with --for snapshot"));
    }
    // clap keeps --for, --name and --profiles apart.
    let planned = match (cli.name, cli.profiles) {
        (Some(name), _) => Some(plan::Source::Name(name)),
        (None, Some(file)) => Some(plan::Source::Profiles(file)),
        (None, None) => None,
    };
    let asked = match (cli.operation, planned) {
        (Some(op), _) => Asked::Vms(ops::Request {
            op,
            vms: cli.vms,
            repo: cli.repo,
            disk_only: cli.disk_only,
            to: match &cli.to {
                Some(to) => Some(hv_common::hosts::destination(
                    to,
                    cli.connect.hosts.as_deref(),
                    |k| std::env::var(k).ok(),
                )?),
                None => None,
            },
            connect_timeout: cli.connect.connect_timeout,
        }),
        (None, Some(from)) => Asked::Planned(plan::Request {
            from,
            defaults: plan::Defaults {
                memory: cli.memory,
                vcpus: cli.vcpus,
                disk: cli.disk,
                pool: cli.pool,
                dir: cli.dir,
                iso: cli.iso,
            },
            iso_library: cli.iso_library,
        }),
        (None, None) => Asked::Host,
    };
    let opts = Options {
        asked,
        virt_type: cli.virt_type,
        limits: Limits {
            disk_warn: cli.disk_warn,
            memory_warn: cli.memory_warn,
        },
        skip: cli.skip,
        problems: cli.problems,
        strict: cli.strict,
        scope: cli.connect.scope()?,
        connect_timeout: cli.connect.connect_timeout,
        format: Format::or_default_for_stdout(cli.output.format()),
    };
    preflight(&opts)
}

/// One host of a run.
struct HostRun {
    /// Its name in a run that names hosts: its records say it.
    name: Option<String>,
    target: Target,
    /// Whether it is this machine, whose /proc, /sys and files hv-preflight
    /// reads itself; another host is known through its libvirt only.
    this_machine: bool,
}

impl HostRun {
    fn machine(&self) -> Machine<'_> {
        match (&self.name, self.this_machine) {
            (_, true) => Machine::This,
            (Some(name), false) => Machine::Other(name),
            (None, false) => Machine::Other(self.target.uri.as_deref().unwrap_or("the host")),
        }
    }
}

fn preflight(opts: &Options) -> Result<Exit> {
    let printer = Printer::new(opts.format, std::io::stdout(), checks::COLUMNS);
    let mut status = hv_common::cli::Status::default();
    let mut found = Vec::new();
    let local = |uri: Option<&str>| !uri.is_some_and(hv_common::hosts::is_remote);
    let runs: Vec<HostRun> = match &opts.scope {
        Scope::Default(target) => vec![HostRun {
            name: None,
            this_machine: local(target.uri.as_deref()),
            target: target.clone(),
        }],
        Scope::Named { hosts, .. } => hosts
            .iter()
            .map(|h| HostRun {
                name: Some(h.name.clone()),
                target: h.target(),
                this_machine: local(Some(&h.uri)),
            })
            .collect(),
    };
    if runs.len() == 1 {
        // One host: a piped record of another host is refused, not looked
        // up by its name here.
        hv_common::hosts::working_on(&opts.scope);
    }
    // A planned VM is checked on the host its profile names (`host`), as
    // hv-define will make it there; over one host, on that one.
    let mut planned: Vec<Vec<Profile>> = runs.iter().map(|_| Vec::new()).collect();
    if let Asked::Planned(request) = &opts.asked {
        for p in plan::read(request, &mut status)? {
            let to = match p.host.as_deref() {
                None if runs.len() == 1 => Some(0),
                None => None,
                Some(h) => runs.iter().position(|r| {
                    r.name.as_deref() == Some(h) || r.target.uri.as_deref() == Some(h)
                }),
            };
            match to {
                Some(i) => planned[i].push(p),
                None => {
                    let (message, hint) = match &p.host {
                        None => (
                            format!("{}: its profile names no host, and {} hosts are given", p.name, runs.len()),
                            "give the profile a host (\"host\": \"ALIAS\"), or check it on one host with -c".to_owned(),
                        ),
                        Some(h) => (
                            format!("{}: its profile is for host {h}, which is not among the hosts given", p.name),
                            format!("give that host too (-c {h}, or --hosts FILE with it)"),
                        ),
                    };
                    let mut c = Check::new("plan.host", Status::Fail, message)
                        .about("name", p.name.clone())
                        .hint(hint);
                    if let Some(h) = &p.host {
                        c = c.on_host(h.clone());
                    }
                    found.push(c);
                }
            }
        }
    }
    // The VMs of --for are read once, and each goes to the host its record
    // names, or is looked for on every host.
    let anywhere = runs.len() > 1;
    let mut routed: Vec<Vec<Input>> = runs.iter().map(|_| Vec::new()).collect();
    if let Asked::Vms(request) = &opts.asked {
        for input in ops::inputs(request)? {
            match input {
                Input::Malformed { message, .. } => {
                    cli::warn(message);
                    status.malformed();
                }
                Input::PassThrough(record) => found.push(ops::upstream_failed(&record)),
                Input::Vm(vm) => {
                    let to: Vec<usize> = match (&vm.host, anywhere) {
                        (Some(h), true) => runs
                            .iter()
                            .position(|r| r.name.as_deref() == Some(h.as_str()))
                            .into_iter()
                            .collect(),
                        _ => (0..runs.len()).collect(),
                    };
                    if to.is_empty() {
                        found.push(
                            Check::new("vm.exists", Status::Fail, format!("VM {}: its record is of host {}, which is not among the hosts given", vm.label(), vm.host.as_deref().unwrap_or_default()))
                                .about("name", vm.name.clone().unwrap_or_else(|| vm.label()))
                                .hint("give that host too (-c HOST, or --hosts FILE with it)"),
                        );
                    }
                    for i in to {
                        routed[i].push(Input::Vm(vm.clone()));
                    }
                }
            }
        }
    }
    // Each host in a thread of its own: a slow one holds back no other.
    let results: Vec<Result<HostFound>> = std::thread::scope(|s| {
        let threads: Vec<_> = runs
            .iter()
            .zip(routed.into_iter().zip(planned))
            .map(|(run, (inputs, planned))| {
                s.spawn(move || check_host(opts, run, inputs, planned, anywhere))
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(Error::internal("a host's checks panicked")))
            })
            .collect()
    });
    let mut reached = 0;
    // Named without a host and looked for on every host: missing only if
    // no host that answered has it.
    let mut missing: Option<Vec<String>> = None;
    for (run, got) in runs.iter().zip(results) {
        // Over several hosts, a host whose checks could not be made is its
        // own failure and the other hosts' records stand; a mistake in the
        // input (a usage error) is every host's, and ends the run.
        let got = match got {
            Ok(g) => g,
            Err(e) if runs.len() == 1 || matches!(e.code, Code::Usage | Code::MalformedInput) => {
                return Err(e)
            }
            Err(e) => HostFound {
                checks: vec![checks::libvirt_down(&e)],
                reached: false,
                missing: Vec::new(),
                status: hv_common::cli::Status::default(),
            },
        };
        status.merge(&got.status);
        if got.reached {
            reached += 1;
            missing = Some(match missing {
                None => got.missing,
                Some(before) => before
                    .into_iter()
                    .filter(|m| got.missing.contains(m))
                    .collect(),
            });
        }
        found.extend(got.checks.into_iter().map(|c| match &run.name {
            Some(h) => c.on_host(h.clone()),
            None => c,
        }));
    }
    for label in missing.unwrap_or_default() {
        found.push(
            Check::new(
                "vm.exists",
                Status::Fail,
                format!("no VM {label} on any host that answered"),
            )
            .about("name", label)
            .hint("check the name or UUID (hv-ls --hosts FILE lists every host's VMs)"),
        );
    }
    let exit = emit(printer, &found, opts)?.worst(status.exit());
    Ok(if reached == 0 {
        exit.worst(Exit::Unreachable)
    } else {
        exit
    })
}

/// What one host's checks found.
struct HostFound {
    checks: Vec<Check>,
    reached: bool,
    missing: Vec<String>,
    /// A malformed profile line (exit 2).
    status: hv_common::cli::Status,
}

fn check_host(
    opts: &Options,
    run: &HostRun,
    inputs: Vec<Input>,
    planned: Vec<Profile>,
    anywhere: bool,
) -> Result<HostFound> {
    // Backups and snapshots start no QEMU; starts need what the VMs'
    // own domain types need, known only once libvirt has described them.
    // The hardware is read from this machine's /proc and /sys: another
    // host's is what its libvirt says (libvirt.domain_type).
    let needs_hardware = !matches!(
        &opts.asked,
        Asked::Vms(ops::Request {
            op: Operation::Backup | Operation::Snapshot | Operation::Migrate,
            ..
        })
    );
    let hardware = needs_hardware && run.this_machine;
    let root = host::Root::system();
    let mut found = Vec::new();
    let conn =
        match hv_common::hosts::open_within(&run.target, Access::ReadOnly, opts.connect_timeout) {
            Ok(conn) => conn,
            Err(e) => {
                if hardware {
                    let need = match opts.asked {
                        Asked::Vms(_) => Need::Unknown,
                        Asked::Host | Asked::Planned(_) => Need::Chosen(opts.virt_type),
                    };
                    found.extend(host::hardware(&root, &need));
                }
                found.push(checks::libvirt_down(&e));
                return Ok(HostFound {
                    checks: found,
                    reached: false,
                    missing: Vec::new(),
                    status: hv_common::cli::Status::default(),
                });
            }
        };
    let mut budget = Budget::new(&conn, opts.limits);
    let mut need = Need::Chosen(opts.virt_type);
    let mut missing = Vec::new();
    let status = hv_common::cli::Status::default();
    let asked = match &opts.asked {
        Asked::Host => Vec::new(),
        Asked::Vms(request) => {
            let got = ops::check(&conn, request, &mut budget, inputs, anywhere, run.machine())?;
            need = Need::Vms(got.kvm);
            missing = got.missing;
            got.checks
        }
        Asked::Planned(request) => plan::check(&conn, request, planned, &mut budget, run.machine()),
    };
    if hardware {
        found.extend(host::hardware(&root, &need));
    }
    found.extend(host::libvirt(&conn, needs_hardware.then_some(&need)));
    found.extend(asked);
    Ok(HostFound {
        checks: found,
        reached: true,
        missing,
        status,
    })
}

fn emit(mut printer: Printer<std::io::Stdout>, found: &[Check], opts: &Options) -> Result<Exit> {
    let kept: Vec<Check> = found
        .iter()
        .filter(|c| !opts.skip.iter().any(|s| s == c.check))
        .cloned()
        .collect();
    for c in kept
        .iter()
        .filter(|c| !opts.problems || c.status != Status::Pass)
    {
        printer.emit(c.record())?;
    }
    printer.finish()?;
    Ok(checks::exit(&kept, opts.strict))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_docs_explain_every_check() {
        let docs = include_str!("../../../docs/preflight.md");
        for id in super::CHECK_IDS {
            assert!(
                docs.contains(&format!("| `{id}` |")),
                "docs/preflight.md lacks {id}"
            );
        }
    }

    /// docs/preflight.md names every field a record can have: the fixed
    /// ones in this order, with the subject's own fields after `subject`.
    #[test]
    fn records_are_the_documented_ones() {
        use hv_common::checks::{Check, Status};
        let documented = hv_testbench::documented_fields("preflight.md", "## Records");
        let subjects = [
            "name",
            "uuid",
            "controller",
            "pool",
            "dir",
            "repository",
            "image",
        ];
        let fixed = |keys: &[String]| -> Vec<String> {
            keys.iter()
                .filter(|k| !subjects.contains(&k.as_str()))
                .cloned()
                .collect()
        };
        let check = Check::new("plan.memory", Status::Warn, "m")
            .about_vm("web 1", "u")
            .on_host("h1");
        let keys: Vec<String> = check.record().keys().cloned().collect();
        assert_eq!(fixed(&keys), fixed(&documented));
        assert!(keys.iter().all(|k| documented.contains(k)), "{keys:?}");
    }
}
