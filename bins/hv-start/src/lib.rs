//! hv-start: bring VMs up in bulk. Each VM gets its own attempt, timer and
//! result record; a VM that is already running is a success with
//! `"changed": false`, so a pipeline can be re-run safely.

use clap::Parser;
use hv_common::boot_order;
use hv_common::bulk::{self, Action};
use hv_common::cli::ActionArgs;
use hv_common::domain;
use hv_common::lifecycle::{self, Transition};
use hv_common::manual::Manual;
use hv_common::output::{col, Column, Show};
use hv_common::State;
use hv_common::{time, Code, Error, Exit, Result};
use std::time::{Duration, Instant};
use virt::connect::Connect;
use virt::domain::Domain;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFor {
    /// Until libvirt reports the VM running
    Running,
    /// Until the QEMU guest agent answers a ping
    Agent,
}

impl hv_common::Choice for WaitFor {
    const ALL: &'static [WaitFor] = &[WaitFor::Running, WaitFor::Agent];

    fn name(self) -> &'static str {
        match self {
            WaitFor::Running => "running",
            WaitFor::Agent => "agent",
        }
    }

    fn help(self) -> Option<&'static str> {
        Some(match self {
            WaitFor::Running => "Until libvirt reports the VM running",
            WaitFor::Agent => "Until the QEMU guest agent answers a ping",
        })
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "hv-start",
    version,
    about = "Start shut-off VMs and resume paused ones",
    long_about = "Start shut-off VMs and resume paused ones, several at once.\n\n\
        VMs are named as arguments or piped in as records (e.g. from hv-ls); with neither, \
        nothing is started. A VM already running is reported with \"changed\": false. Each VM \
        gets one result record with its new state and how long it took."
)]
pub struct Cli {
    /// VMs to start, by name or UUID [default: records or names from stdin]
    #[arg(value_name = "VM")]
    pub vms: Vec<String>,

    /// Start them with their CPUs paused (a paused VM stays paused)
    #[arg(long)]
    pub paused: bool,

    /// Wait until each VM is running, or with --wait=agent until its guest agent answers
    #[arg(long, value_parser = hv_common::cli::choice::<WaitFor>(), value_name = "UNTIL", num_args = 0..=1, require_equals = true, default_missing_value = "running", hide_possible_values = true)]
    pub wait: Option<WaitFor>,

    /// How long each VM may take to start, and to answer with --wait (90, 90s, 5m, 1h30m)
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = time::duration)]
    pub timeout: Duration,

    /// Start a template even though linked clones (hv-clone --linked) use its disks as their base
    #[arg(long)]
    pub force: bool,

    /// Start group by group in the order of the VMs' boot:N tags (lower first, untagged last), each group at once, waiting its longest boot-delay:DURATION tag before the next
    #[arg(long)]
    pub order: bool,

    #[command(flatten)]
    pub args: ActionArgs,
}

pub const MANUAL: Manual = Manual {
    exit_status: hv_common::manual::EXIT_STATUS,
    environment: hv_common::manual::ENVIRONMENT,
    examples: &[
        ("Start every stopped VM tagged dev:", "hv-ls --state shutoff --tag dev | hv-start"),
        ("Start two VMs and wait until their guest agents answer:", "hv-start --wait=agent --timeout 5m web1 db1"),
        ("Start a batch four at a time and list what failed:", "hv-ls --tag lab | hv-start -j 4 | jq -c 'select(.ok == false)'"),
        ("Resume every paused VM:", "hv-ls --state paused | hv-start"),
        ("Start the VMs tagged boot:N group by group, as hv-boot.service does at boot:", "hv-ls --tag 'boot:*' | hv-start --order --wait"),
    ],
    notes: &[
        "Result records carry name, uuid, action (\"start\"), ok, changed, state, state_reason and elapsed_ms; with --dry-run, dry_run and no state change. A shut-off VM is started, a paused one resumed, a pmsuspended one woken up; one that is running is left alone. A VM that is shutting down or crashed (kept for inspection) is refused with error code invalid_state.",
        "--wait=agent needs the QEMU guest agent in the guest and an org.qemu.guest_agent.0 channel in the domain; without it the VM is reported with error code timeout once --timeout has passed (it is still started).",
    ],
};

static COLUMNS: [Column; 5] = [
    col("name", "name", Show::Plain),
    col("ok", "ok", Show::Plain),
    col("changed", "changed", Show::Plain),
    col("state", "state", Show::Plain),
    col("ms", "elapsed_ms", Show::Plain),
];

#[derive(Debug, Clone, Copy)]
struct Plan {
    paused: bool,
    force: bool,
    wait: Option<WaitFor>,
    timeout: Duration,
    dry_run: bool,
}

pub fn run(cli: Cli) -> Result<Exit> {
    if cli.paused && cli.wait == Some(WaitFor::Agent) {
        return Err(Error::usage(
            "--paused with --wait=agent: a paused guest's agent cannot answer; use --wait",
        ));
    }
    let plan = Plan {
        paused: cli.paused,
        force: cli.force,
        wait: cli.wait,
        timeout: cli.timeout,
        dry_run: cli.args.dry_run,
    };
    let inputs = bulk::inputs(&cli.vms, "hv-ls --state shutoff | hv-start")?;
    // The hard limit sits past --timeout so a VM's own wait reports first.
    let action = Action {
        name: "start",
        columns: &COLUMNS,
        item_timeout: plan.timeout + Duration::from_secs(30),
    };
    if cli.order {
        let stages = boot_order::staged(inputs, &cli.args.connect, false, plan.dry_run)?;
        return bulk::act_in_stages(stages, &cli.args, action, move |conn, dom, _| {
            start(conn, dom, plan)
        });
    }
    bulk::act(inputs, &cli.args, action, move |conn, dom, _| {
        start(conn, dom, plan)
    })
}

fn start(conn: &Connect, dom: &Domain, plan: Plan) -> Result<Transition> {
    let began = Instant::now();
    let state = lifecycle::state(dom)?.state;
    if state == State::Shutoff && !plan.force {
        refuse_linked_template(conn, dom)?;
    }
    let changed = match state {
        State::Shutoff => act(plan, || {
            let flags = if plan.paused {
                virt::sys::VIR_DOMAIN_START_PAUSED
            } else {
                0
            };
            dom.create_with_flags(flags)
        })?,
        State::Paused if plan.paused => false,
        State::Paused => act(plan, || dom.resume())?,
        State::Pmsuspended => act(plan, || dom.pm_wakeup(0))?,
        State::Running | State::Blocked => false,
        State::Shutdown => return Err(refused("it is shutting down; start it once it is off")),
        State::Crashed => {
            return Err(refused(
                "it crashed and is kept for inspection; `hv-stop --force` it first",
            ))
        }
        State::Nostate => return Err(refused("libvirt reports no state for it")),
    };
    if !plan.dry_run {
        // Only a VM that was off or paused is left paused; a running or
        // suspended one runs.
        let paused = plan.paused && matches!(state, State::Shutoff | State::Paused);
        wait(dom, plan, paused, began)?;
    }
    Ok(Transition::new(
        changed,
        plan.dry_run,
        lifecycle::state(dom)?,
        began,
    ))
}

/// A template's disks are the read-only base of its linked clones: the
/// template running would write under them and corrupt every one. Only
/// VMs tagged `template` (hv-clone --linked tags its sources) are looked
/// at, so starting ordinary VMs costs no scan of every definition.
fn refuse_linked_template(conn: &Connect, dom: &Domain) -> Result<()> {
    let (_, def) = domain::definition(dom)?;
    if !def.tags.iter().any(|t| t == "template") {
        return Ok(());
    }
    let uuid = dom.uuid_string().unwrap_or_default();
    let all = conn
        .list_all_domains(0)
        .map_err(|e| Error::libvirt("cannot list the VMs linked to it", &e))?;
    let clones: Vec<String> = all
        .iter()
        .filter(|d| d.uuid_string().ok().as_deref() != Some(&uuid))
        .filter_map(|d| {
            let (_, x) = domain::definition(d).ok()?;
            (x.linked && x.cloned_from.as_deref() == Some(&uuid))
                .then(|| d.name().unwrap_or_default())
        })
        .collect();
    if clones.is_empty() {
        return Ok(());
    }
    Err(Error::new(
        Code::InvalidState,
        format!(
            "it is a template: {} linked clone(s) ({}) use its disks as their base, and running it would corrupt them; start the clones, or add --force if they are to be thrown away",
            clones.len(),
            clones.join(", ")
        ),
    ))
}

/// Runs the libvirt call unless this is a dry run; either way it is a change.
fn act(
    plan: Plan,
    call: impl FnOnce() -> std::result::Result<(), virt::error::Error>,
) -> Result<bool> {
    if !plan.dry_run {
        call().map_err(|e| {
            Error::libvirt_needing("libvirt refused to start it", &e, &["domain.start"])
        })?;
    }
    Ok(true)
}

fn refused(why: &str) -> Error {
    Error::new(Code::InvalidState, format!("not started: {why}"))
}

fn wait(dom: &Domain, plan: Plan, paused: bool, began: Instant) -> Result<()> {
    let deadline = began + plan.timeout;
    match plan.wait {
        None => Ok(()),
        Some(WaitFor::Running) => {
            let target = if paused {
                State::Paused
            } else {
                State::Running
            };
            if lifecycle::wait_until(dom, deadline, |s| s == target, |_| {})? {
                Ok(())
            } else {
                Err(Error::new(
                    Code::Timeout,
                    format!(
                        "started, but not running within {}s",
                        plan.timeout.as_secs()
                    ),
                ))
            }
        }
        Some(WaitFor::Agent) => {
            while Instant::now() < deadline {
                if lifecycle::agent_answers(dom, Duration::from_secs(2)) {
                    return Ok(());
                }
                std::thread::sleep(lifecycle::POLL);
            }
            Err(Error::new(
                Code::Timeout,
                format!(
                    "started, but its guest agent did not answer within {}s; is qemu-guest-agent running in the guest, with an org.qemu.guest_agent.0 channel in the domain?",
                    plan.timeout.as_secs()
                ),
            ))
        }
    }
}

#[cfg(test)]
mod cli_tests {
    use super::*;

    #[test]
    fn timeout_takes_the_common_duration_syntax() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("hv-start").chain(args.iter().copied()))
        };
        assert_eq!(parse(&["vm"]).unwrap().timeout, Duration::from_secs(120));
        assert_eq!(
            parse(&["--timeout", "90", "vm"]).unwrap().timeout,
            Duration::from_secs(90)
        );
        assert_eq!(
            parse(&["--timeout", "5m", "vm"]).unwrap().timeout,
            Duration::from_secs(300)
        );
        let err = parse(&["--timeout", "5x", "vm"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("90s, 5m, 1h30m, 2d"), "{err}");
    }
}

#[cfg(test)]
mod record_tests {
    use super::*;

    #[test]
    fn the_record_is_the_documented_one() {
        let t = Transition::new(
            true,
            true,
            hv_common::VmState::bare(State::Running),
            Instant::now(),
        );
        hv_testbench::assert_documented(
            &hv_common::targets::success_record(
                &hv_common::targets::VmRef::named("web1", "u"),
                "start",
                &t,
            ),
            "lifecycle.md",
            "### hv-start records",
        );
    }
}
