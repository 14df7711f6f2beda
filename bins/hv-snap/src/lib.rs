//! hv-snap: snapshots for many VMs at once, and a rolling set kept by
//! retention rules. Snapshot records carry the VM's `name` and `uuid`, so
//! `hv-snap create | hv-backup create` and `hv-snap ls | jq … | hv-snap rm`
//! work; prune by default touches only snapshots hv made itself.
//!
//! This file is the command line: clap's arguments, the manual, and `run`,
//! which turns each subcommand's arguments into the plain plan its module
//! works from. Nothing past `run` sees clap, except the shared action flags
//! (`-n`, `-j`, `-c`, `--format`) handed through to the bulk driver.

mod columns;
mod create;
mod errors;
mod ls;
mod pick;
mod prune;
mod schedule;
mod snapshots;

use clap::{Parser, Subcommand};
use create::CreatePlan;
use hv_common::cli::KeepArgs;
use hv_common::cli::{ActionArgs, ConnectArgs, OutputArgs};
use hv_common::manual::Manual;
use hv_common::{time, Exit, Result};
use ls::LsOptions;
use pick::{AfterRevert, PickAction, PickPlan};
use prune::PrunePlan;
use std::time::Duration;

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
    /// Take and prune the snapshots that VMs tagged snap:POLICY are due for (from a timer)
    Schedule(ScheduleArgs),
}

#[derive(Debug, clap::Args)]
pub struct ScheduleArgs {
    /// A JSON file of policies: {"NAME": {"every": "1h", "keep": {"last": 24}, "disk_only": false}, ...} [default: hourly, daily, weekly and monthly, kept 24, 7, 4 and 12]
    #[arg(long, value_name = "FILE", env = "HV_SNAP_POLICIES")]
    pub policies: Option<std::path::PathBuf>,
    /// How long each VM may take before it is reported as timed out (90, 90s, 5m, 1h30m)
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = time::duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub args: ActionArgs,
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
    pub fields: hv_common::cli::FieldsArgs,
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
    pub keep: KeepArgs,
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
        ("Hourly and daily snapshots of web1, taken and pruned by the hv-snap-schedule timer:", "hv-tag --add snap:hourly --add snap:daily web1 && hv-snap schedule --dry-run"),
        ("Keep a rolling set from a timer:", "hv-ls --tag prod | hv-snap create && hv-ls --tag prod | hv-snap prune --keep-last 3 --keep-daily 7 --keep-weekly 4"),
    ],
    notes: &[
        "hv-snap create: a stopped VM gets an internal snapshot of its disks (qcow2 only). A running VM's internal snapshot includes its memory, which libvirt requires (the VM pauses while its RAM is saved); --disk-only makes external snapshots instead: each disk gets a new overlay file <disk>.<snapshot>.qcow2 beside it and the VM does not pause. Snapshots are atomic across disks: if one disk fails, none is kept. Records: snapshot, created_at (RFC 3339, UTC), state, kind (internal or external), memory, parent, current, description, hv_made, and for create quiesced and elapsed_ms.",
        "hv-snap revert and rm take the snapshot from --snapshot or from the snapshot field of each piped record. libvirt 11 reverts internal and external snapshots; it refuses to delete an external snapshot whose parent is internal, and that refusal is reported with error code unsupported.",
        "hv-snap schedule takes a snapshot named POLICY-YYYYmmdd-HHMMSS of each VM tagged snap:POLICY whose newest snapshot of that policy is `every` old (or that has none), then prunes that policy's snapshots by its keep rules; the policy is recorded in hv's marker, and plain hv-snap prune leaves such snapshots alone. Built-in policies: hourly (kept 24), daily (7), weekly (4), monthly (12); --policies FILE (HV_SNAP_POLICIES) replaces them. One record per tagged VM: policies (each with policy, due, taken, next_due and pruned) and changed. docs/snapshots.md, Schedules.",
        "hv-snap prune applies --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly and --keep-yearly with Proxmox Backup Server's rules (docs/snapshots.md); periods are UTC. Only snapshots hv made are considered unless --all. Each VM's record has snapshots (each considered snapshot with snapshot, created_at, kept and keep_reason: the rule that kept it, or null) and removed (the names deleted, or that would be with --dry-run).",
    ],
};

impl PickArgs {
    /// The plan revert and rm share, and the flags for the bulk driver.
    fn into_plan(self, action: PickAction) -> (PickPlan, ActionArgs) {
        let plan = PickPlan {
            vms: self.vms,
            snapshot: self.snapshot,
            action,
            timeout: self.timeout,
            dry_run: self.args.dry_run,
        };
        (plan, self.args)
    }
}

pub fn run(cli: Cli) -> Result<Exit> {
    match cli.command {
        Command::Create(a) => {
            let plan = CreatePlan {
                vms: a.vms,
                // Taken once, so the whole batch shares it.
                name: a
                    .name
                    .unwrap_or_else(|| format!("hv-{}", time::compact(time::now()))),
                description: a.description,
                disk_only: a.disk_only,
                memory: a.memory,
                quiesce: a.quiesce || a.require_quiesce,
                require_quiesce: a.require_quiesce,
                timeout: a.timeout,
                dry_run: a.args.dry_run,
                policy: None,
            };
            create::run(plan, &a.args)
        }
        Command::Ls(a) => {
            let opts = LsOptions {
                vms: a.vms,
                hv_only: a.hv_only,
                fields: a.fields.checked(ls::FIELDS)?,
                format: a.output.format(),
                scope: a.connect.scope()?,
                connect_timeout: a.connect.connect_timeout,
            };
            ls::run(&opts)
        }
        Command::Revert(a) => {
            let after = match (a.paused, a.running) {
                (true, _) => AfterRevert::Paused,
                (_, true) => AfterRevert::Running,
                _ => AfterRevert::AsTaken,
            };
            let (plan, args) = a.pick.into_plan(PickAction::Revert(after));
            pick::run(plan, &args)
        }
        Command::Rm(a) => {
            let (plan, args) = a.into_plan(PickAction::Rm);
            pick::run(plan, &args)
        }
        Command::Prune(a) => {
            let plan = PrunePlan {
                vms: a.vms,
                keep: a.keep.into(),
                all: a.all,
                timeout: a.timeout,
                dry_run: a.args.dry_run,
                policy: None,
            };
            prune::run(plan, &a.args)
        }
        Command::Schedule(a) => {
            let plan = schedule::SchedulePlan {
                policies: a.policies,
                timeout: a.timeout,
                dry_run: a.args.dry_run,
            };
            schedule::run(plan, &a.args)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Command::Schedule(a) => a.timeout,
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
