//! hv-stop: shut VMs down the way an admin would by hand, for many at once:
//! ask the guest (ACPI power button or guest agent), give it time, and only
//! then pull the plug. Every VM has its own timer, so a batch takes about as
//! long as its slowest guest, and the record says how each one ended.

use clap::Parser;
use hv_common::boot_order;
use hv_common::bulk::{self, Action};
use hv_common::cli::ActionArgs;
use hv_common::lifecycle::{self, Transition};
use hv_common::manual::Manual;
use hv_common::output::{col, Column, Show};
use hv_common::state::{State, VmState};
use hv_common::{time, Code, Error, Exit, Result};
use std::time::{Duration, Instant};
use virt::domain::Domain;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Press the virtual power button
    Acpi,
    /// Ask the QEMU guest agent
    Agent,
}

impl hv_common::Choice for Mode {
    const ALL: &'static [Mode] = &[Mode::Acpi, Mode::Agent];

    fn name(self) -> &'static str {
        match self {
            Mode::Acpi => "acpi",
            Mode::Agent => "agent",
        }
    }

    fn help(self) -> Option<&'static str> {
        Some(match self {
            Mode::Acpi => "Press the virtual power button",
            Mode::Agent => "Ask the QEMU guest agent",
        })
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "hv-stop",
    version,
    about = "Stop VMs gracefully, forcing off those that do not stop in time",
    long_about = "Stop VMs, several at once: ask each guest to shut down (ACPI power button, or the \
        guest agent with --mode agent), wait up to --timeout (default 2m), then force it off unless \
        --no-force. --force skips the graceful step. --reboot and --pause do those instead.\n\n\
        VMs are named as arguments or piped in as records (e.g. from hv-ls); with neither, nothing \
        is stopped. Each VM gets one result record saying how it ended: \"how\" is graceful, \
        forced or already_off."
)]
pub struct Cli {
    /// VMs to stop, by name or UUID [default: records or names from stdin]
    #[arg(value_name = "VM")]
    pub vms: Vec<String>,

    /// How to ask the guest: acpi or agent
    #[arg(long, value_parser = hv_common::cli::choice::<Mode>(), default_value = "acpi", hide_possible_values = true)]
    pub mode: Mode,

    /// How long each guest gets to shut down before it is forced off (90, 90s, 5m, 1h30m)
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = time::duration)]
    pub timeout: Duration,

    /// Leave a guest running when it does not stop in time (reported as a timeout)
    #[arg(long, conflicts_with = "force")]
    pub no_force: bool,

    /// Force off at once, like pulling the plug: no graceful attempt
    #[arg(long)]
    pub force: bool,

    /// Reboot instead (graceful; with --force a hard reset)
    #[arg(long, conflicts_with_all = ["pause", "no_force"])]
    pub reboot: bool,

    /// Pause (suspend) the VMs' CPUs instead
    #[arg(long, conflicts_with_all = ["force", "no_force"])]
    pub pause: bool,

    /// Stop group by group in the reverse order of the VMs' boot:N tags (untagged first, then the highest N), each group at once
    #[arg(long, conflicts_with_all = ["reboot", "pause"])]
    pub order: bool,

    #[command(flatten)]
    pub args: ActionArgs,
}

pub const MANUAL: Manual = Manual {
    exit_status: hv_common::manual::EXIT_STATUS,
    environment: hv_common::manual::ENVIRONMENT,
    examples: &[
        ("Stop every VM tagged dev, giving each a minute:", "hv-ls --tag dev | hv-stop --timeout 1m"),
        ("Stop everything that runs, ten at a time, and show which had to be forced:", "hv-ls --state running | hv-stop -j 10 | jq -r 'select(.how == \"forced\") | .name'"),
        ("Ask through the guest agent, never force:", "hv-stop --mode agent --no-force db1"),
        ("Pause a batch, later resume it:", "hv-ls --tag batch | hv-stop --pause; hv-ls --tag batch | hv-start"),
        ("Stop the VMs tagged boot:N in reverse order, as hv-boot.service does at shutdown:", "hv-ls --tag 'boot:*' | hv-stop --order --timeout 3m"),
    ],
    notes: &[
        "Result records carry name, uuid, action (stop, reboot or pause), ok, changed, how, state, state_reason and elapsed_ms. how is graceful (the guest shut down by itself in time), forced (it was destroyed), already_off, or for --reboot graceful/forced and for --pause paused/already_paused.",
        "A paused guest cannot act on a shutdown request, so it is forced off at once (or, with --no-force, reported with error code invalid_state). A request that the guest cannot receive at all (no guest agent with --mode agent) is treated like a guest that does not stop: forced, with the reason in graceful_error.",
        "The ACPI request is repeated every 10 seconds while waiting, because a guest that is still booting drops it.",
    ],
};

static COLUMNS: [Column; 5] = [
    col("name", "name", Show::Plain),
    col("ok", "ok", Show::Plain),
    col("how", "how", Show::Plain),
    col("state", "state", Show::Plain),
    col("ms", "elapsed_ms", Show::Plain),
];

/// How often an unanswered graceful request is sent again.
const RESEND: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
struct Plan {
    mode: Mode,
    timeout: Duration,
    force_after: bool,
    force_now: bool,
    dry_run: bool,
}

pub fn run(cli: Cli) -> Result<Exit> {
    let plan = Plan {
        mode: cli.mode,
        timeout: cli.timeout,
        force_after: !cli.no_force,
        force_now: cli.force,
        dry_run: cli.args.dry_run,
    };
    let inputs = bulk::inputs(&cli.vms, "hv-ls --tag dev | hv-stop")?;
    let action = |name| Action {
        name,
        columns: &COLUMNS,
        item_timeout: plan.timeout + Duration::from_secs(60),
    };
    if cli.pause {
        bulk::act(inputs, &cli.args, action("pause"), move |_, dom, _| {
            pause(dom, plan)
        })
    } else if cli.reboot {
        bulk::act(inputs, &cli.args, action("reboot"), move |_, dom, _| {
            reboot(dom, plan)
        })
    } else if cli.order {
        let stages = boot_order::staged(inputs, &cli.args.connect, true, plan.dry_run)?;
        bulk::act_in_stages(stages, &cli.args, action("stop"), move |_, dom, _| {
            stop(dom, plan)
        })
    } else {
        bulk::act(inputs, &cli.args, action("stop"), move |_, dom, _| {
            stop(dom, plan)
        })
    }
}

fn record(
    dom: &Domain,
    plan: Plan,
    how: &'static str,
    changed: bool,
    began: Instant,
) -> Result<Transition> {
    Ok(Transition {
        how: Some(how),
        ..Transition::new(changed, plan.dry_run, state_of(dom)?, began)
    })
}

/// The domain's state. A transient domain is gone once it is off, and
/// reading it then says there is no such domain: it is off.
fn state_of(dom: &Domain) -> Result<VmState> {
    match lifecycle::state(dom) {
        Err(e) if e.code == Code::NotFound => Ok(VmState::bare(State::Shutoff)),
        other => other,
    }
}

fn stop(dom: &Domain, plan: Plan) -> Result<Transition> {
    let began = Instant::now();
    let state = state_of(dom)?.state;
    if state == State::Shutoff {
        return record(dom, plan, "already_off", false, began);
    }
    let paused_and_kept = state == State::Paused && !plan.force_now && !plan.force_after;
    if paused_and_kept {
        return Err(Error::new(Code::InvalidState, "it is paused and cannot act on a shutdown request; resume it with hv-start, or drop --no-force"));
    }
    if plan.dry_run {
        let how = if plan.force_now || state == State::Paused {
            "forced"
        } else {
            "graceful"
        };
        return record(dom, plan, how, true, began);
    }
    if plan.force_now {
        force_off(dom)?;
        return record(dom, plan, "forced", true, began);
    }
    if state == State::Paused {
        force_off(dom)?;
        return record(dom, plan, "forced", true, began);
    }
    match graceful(dom, plan, began) {
        Ok(true) => record(dom, plan, "graceful", true, began),
        Ok(false) if !plan.force_after => Err(Error::new(
            Code::Timeout,
            format!(
                "did not shut down within {}s; left running (--no-force)",
                plan.timeout.as_secs()
            ),
        )),
        Ok(false) => {
            force_off(dom)?;
            record(dom, plan, "forced", true, began)
        }
        Err(e) if !plan.force_after => Err(e),
        Err(e) => {
            force_off(dom)?;
            Ok(Transition {
                graceful_error: Some(e.message),
                ..record(dom, plan, "forced", true, began)?
            })
        }
    }
}

fn shutdown_flags(mode: Mode) -> u32 {
    match mode {
        Mode::Acpi => virt::sys::VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN,
        Mode::Agent => virt::sys::VIR_DOMAIN_SHUTDOWN_GUEST_AGENT,
    }
}

/// Asks the guest to shut down and waits; `Ok(false)` when it did not in time.
fn graceful(dom: &Domain, plan: Plan, began: Instant) -> Result<bool> {
    let ask = || dom.shutdown_flags(shutdown_flags(plan.mode));
    if let Err(e) = ask() {
        // It may have gone off between our look and the request.
        if state_of(dom)?.state == State::Shutoff {
            return Ok(true);
        }
        return Err(Error::libvirt_needing(
            "the guest could not be asked to shut down",
            &e,
            &["domain.init-control"],
        ));
    }
    let mut resent = Duration::ZERO;
    let waited = lifecycle::wait_until(
        dom,
        began + plan.timeout,
        |s| s == State::Shutoff,
        |waited| {
            if waited >= resent + RESEND {
                resent = waited;
                let _ = ask();
            }
        },
    );
    match waited {
        Err(e) if e.code == Code::NotFound => Ok(true), // a transient domain, gone
        other => other,
    }
}

fn force_off(dom: &Domain) -> Result<()> {
    match dom.destroy() {
        Ok(()) => Ok(()),
        // It shut down by itself just before: that is what we wanted.
        Err(_) if state_of(dom)?.state == State::Shutoff => Ok(()),
        Err(e) => Err(Error::libvirt_needing(
            "could not force it off",
            &e,
            &["domain.stop"],
        )),
    }
}

fn reboot(dom: &Domain, plan: Plan) -> Result<Transition> {
    let began = Instant::now();
    if !lifecycle::state(dom)?.state.is_active() {
        return Err(Error::new(
            Code::InvalidState,
            "it is not running; start it with hv-start",
        ));
    }
    let how = if plan.force_now { "forced" } else { "graceful" };
    if !plan.dry_run {
        let done = if plan.force_now {
            dom.reset()
        } else {
            let flags = match plan.mode {
                Mode::Acpi => virt::sys::VIR_DOMAIN_REBOOT_ACPI_POWER_BTN,
                Mode::Agent => virt::sys::VIR_DOMAIN_REBOOT_GUEST_AGENT,
            };
            dom.reboot(flags)
        };
        let permission = if plan.force_now {
            ["domain.reset"]
        } else {
            ["domain.init-control"]
        };
        done.map_err(|e| Error::libvirt_needing("libvirt refused to reboot it", &e, &permission))?;
    }
    record(dom, plan, how, true, began)
}

fn pause(dom: &Domain, plan: Plan) -> Result<Transition> {
    let began = Instant::now();
    match lifecycle::state(dom)?.state {
        State::Paused => record(dom, plan, "already_paused", false, began),
        State::Shutoff => Err(Error::new(
            Code::InvalidState,
            "it is not running, so it cannot be paused",
        )),
        _ => {
            if !plan.dry_run {
                dom.suspend().map_err(|e| {
                    Error::libvirt_needing("libvirt refused to pause it", &e, &["domain.suspend"])
                })?;
            }
            record(dom, plan, "paused", true, began)
        }
    }
}

#[cfg(test)]
mod cli_tests {
    use super::*;

    #[test]
    fn timeout_takes_the_common_duration_syntax() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("hv-stop").chain(args.iter().copied()))
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
        let t = Transition {
            how: Some("forced"),
            graceful_error: Some("no agent".into()),
            ..Transition::new(true, true, VmState::bare(State::Shutoff), Instant::now())
        };
        hv_testbench::assert_documented(
            &hv_common::targets::success_record(
                &hv_common::targets::VmRef::named("web1", "u"),
                "stop",
                &t,
            ),
            "lifecycle.md",
            "### hv-stop records",
        );
    }
}
