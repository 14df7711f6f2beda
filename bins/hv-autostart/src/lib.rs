//! hv-autostart: whether VMs start with the host, set for a batch at once
//! (`hv-ls --tag prod | hv-autostart on`).

use clap::Parser;
use hv_common::bulk::{self, Action};
use hv_common::cli::ActionArgs;
use hv_common::manual::Manual;
use hv_common::output::{col, Column, Show};
use hv_common::{time, Code, Error, Exit, Result};
use serde::Serialize;
use std::time::Duration;
use virt::domain::Domain;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    On,
    Off,
}

impl hv_common::Choice for Switch {
    const ALL: &'static [Switch] = &[Switch::On, Switch::Off];

    fn name(self) -> &'static str {
        match self {
            Switch::On => "on",
            Switch::Off => "off",
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "hv-autostart",
    version,
    about = "Turn autostart on or off for VMs",
    long_about = "Turn autostart on or off for VMs, several at once: an autostart VM is started by \
        libvirt when the host boots.\n\nVMs are named as arguments or piped in as records (e.g. \
        from hv-ls); with neither, nothing changes. Each VM gets one result record."
)]
pub struct Cli {
    /// on or off
    #[arg(value_parser = hv_common::cli::choice::<Switch>(), value_name = "on|off", hide_possible_values = true)]
    pub switch: Switch,

    /// VMs to change, by name or UUID [default: records or names from stdin]
    #[arg(value_name = "VM")]
    pub vms: Vec<String>,

    /// How long each VM may take before it is reported as timed out (90, 90s, 5m, 1h30m)
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = time::duration)]
    pub timeout: Duration,

    #[command(flatten)]
    pub args: ActionArgs,
}

pub const MANUAL: Manual = Manual {
    exit_status: hv_common::manual::EXIT_STATUS,
    environment: hv_common::manual::ENVIRONMENT,
    examples: &[
        ("Start every production VM with the host:", "hv-ls --tag prod | hv-autostart on"),
        ("Stop starting two VMs at boot:", "hv-autostart off web1 web2"),
        ("Which VMs would change:", "hv-ls --tag lab --autostart | hv-autostart off --dry-run | jq -r 'select(.changed) | .name'"),
    ],
    notes: &["Result records carry name, uuid, action (\"autostart\"), ok, autostart (the setting afterwards), changed, and dry_run with --dry-run. A transient VM has no stored definition to start from and is refused with error code invalid_state."],
};

static COLUMNS: [Column; 4] = [
    col("name", "name", Show::Plain),
    col("ok", "ok", Show::Plain),
    col("autostart", "autostart", Show::Plain),
    col("changed", "changed", Show::Plain),
];

pub fn run(cli: Cli) -> Result<Exit> {
    let want = cli.switch == Switch::On;
    let dry_run = cli.args.dry_run;
    let inputs = bulk::inputs(&cli.vms, "hv-ls --tag prod | hv-autostart on")?;
    let action = Action {
        name: "autostart",
        columns: &COLUMNS,
        item_timeout: cli.timeout,
    };
    bulk::act(inputs, &cli.args, action, move |_, dom, _| {
        set(dom, want, dry_run)
    })
}

fn set(dom: &Domain, want: bool, dry_run: bool) -> Result<Switched> {
    if !hv_common::domain::is_persistent(dom)? {
        return Err(Error::new(
            Code::InvalidState,
            "it is transient (no stored definition); define it first with `virsh define`",
        ));
    }
    let current = dom
        .autostart()
        .map_err(|e| Error::libvirt("cannot read its autostart setting", &e))?;
    let changed = current != want;
    if changed && !dry_run {
        dom.set_autostart(want).map_err(|e| {
            Error::libvirt_needing(
                "libvirt refused to change autostart",
                &e,
                &["domain.write", "domain.save"],
            )
        })?;
    }
    Ok(Switched {
        autostart: want,
        changed,
        dry_run: dry_run.then_some(true),
    })
}

/// What hv-autostart says of one VM, after `name`, `uuid`, `action` and `ok`.
#[derive(Debug, Serialize)]
struct Switched {
    /// The setting now.
    autostart: bool,
    changed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    dry_run: Option<bool>,
}

#[cfg(test)]
mod record_tests {
    use super::*;

    #[test]
    fn the_record_is_the_documented_one() {
        let s = Switched {
            autostart: true,
            changed: true,
            dry_run: Some(true),
        };
        hv_testbench::assert_documented(
            &hv_common::targets::success_record(
                &hv_common::targets::VmRef::named("web1", "u"),
                "autostart",
                &s,
            ),
            "lifecycle.md",
            "## hv-autostart",
        );
    }
}
