//! hv-ls: every domain as one flat record, so a listing can be filtered by
//! jq or fed to any other hv command. It reads through a read-only
//! connection (a monitoring user needs no write rights) and uses libvirt's
//! bulk calls: a listing is a handful of round trips plus a few small
//! per-domain reads done in parallel, never a `virsh dominfo` per VM.

use clap::Parser;
use hv_common::across::{self, AtHost};
use hv_common::cli::{ConnectArgs, OutputArgs, Status};
use hv_common::connect::Access;
use hv_common::domain::DomainXml;
use hv_common::inventory::{basics, details, record, Basic, VmRecord};
use hv_common::manual::Manual;
use hv_common::output::{self, col, Column, Printer, Show};
use hv_common::targets;
use hv_common::{Error, Exit, Result, State};
use serde_json::{Map, Value};

#[derive(Debug, Parser)]
#[command(
    name = "hv-ls",
    version,
    about = "List VMs as records: state, resources, disks, interfaces, snapshots and tags",
    long_about = "List libvirt domains, active and inactive, one record each.\n\n\
        With VM names or UUIDs as arguments, only those are shown. Without arguments, when stdin \
        is a pipe, each line names a VM (a JSON record with \"name\" or \"uuid\", or a bare name), \
        so hv-ls can re-read the output of any hv command, and a pipe that names no VM lists none. \
        Without arguments or a pipe (a terminal, /dev/null), every domain is listed. Filters combine: a VM is shown when it passes all of them."
)]
pub struct Cli {
    /// VMs to show, by name or UUID
    #[arg(value_name = "VM")]
    pub vms: Vec<String>,

    /// Only VMs in this state: running, paused, shutoff, crashed, pmsuspended, blocked,
    /// shutdown or nostate (repeatable: any of them)
    #[arg(long, value_parser = hv_common::cli::choice::<State>(), value_name = "STATE", hide_possible_values = true)]
    pub state: Vec<State>,

    /// Only VMs whose name matches this glob (*, ?, [abc]; repeatable: any of them)
    #[arg(long = "name", value_name = "GLOB")]
    pub names: Vec<String>,

    /// Only VMs carrying this tag, or one matching this glob (boot:*) (repeatable: all of them); tags are set with hv-tag
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,

    /// Only VMs that start with the host
    #[arg(long, conflicts_with = "no_autostart")]
    pub autostart: bool,

    /// Only VMs that do not start with the host
    #[arg(long)]
    pub no_autostart: bool,

    /// Only persistent (defined) VMs
    #[arg(long, conflicts_with = "transient")]
    pub persistent: bool,

    /// Only transient VMs (running, with no stored definition)
    #[arg(long)]
    pub transient: bool,

    #[command(flatten)]
    pub connect: ConnectArgs,

    #[command(flatten)]
    pub output: OutputArgs,
}

pub const MANUAL: Manual = Manual {
    exit_status: hv_common::manual::EXIT_STATUS,
    environment: hv_common::manual::ENVIRONMENT,
    examples: &[
        ("List every VM in a table on a terminal, JSON lines in a pipe:", "hv-ls"),
        ("Tag every stopped VM whose name starts with dev:", "hv-ls --state shutoff --name 'dev*' | hv-tag --add cold"),
        ("Names and memory of running VMs, with jq:", "hv-ls --state running | jq -r '\"\\(.name) \\(.memory_bytes)\"'"),
        ("Disks of one VM as CSV for a spreadsheet:", "hv-ls --format csv web1"),
        ("Re-read records from another command to see their current state:", "hv-ls --tag prod | hv-ls --state running"),
        ("List the test driver's domain without a daemon:", "hv-ls -c test:///default"),
    ],
    notes: &[
        "Fields of each record: name, uuid, domain_id (null when not running), state (running, blocked, paused, shutdown, shutoff, crashed, pmsuspended, nostate), state_reason, persistent, autostart, vcpus, memory_bytes, max_memory_bytes, cpu_time_ns (0 when not running), disks (target, device, type, source, format, capacity_bytes, allocation_bytes), interfaces (mac, type, source, model), snapshot_count, checkpoint_count, tags. See docs/records.md.",
        "A VM named on the command line or stdin that does not exist gets a record with \"ok\": false and error code not_found, and the exit status is 1.",
    ],
};

static COLUMNS: [Column; 8] = [
    col("name", "name", Show::Plain),
    col("state", "state", Show::Plain),
    col("id", "domain_id", Show::Plain),
    col("vcpus", "vcpus", Show::Plain),
    col("memory", "memory_bytes", Show::Bytes),
    col("autostart", "autostart", Show::Plain),
    col("disks", "disks", Show::Join(Some("target"))),
    col("tags", "tags", Show::Join(None)),
];

pub fn run(cli: Cli) -> Result<Exit> {
    let filter = Filter::new(&cli)?;
    let scope = cli.connect.scope()?;
    let mut printer = Printer::stdout(cli.output.format(), &COLUMNS);
    let mut status = Status::default();
    across::each_host(
        &scope,
        Access::ReadOnly,
        cli.connect.connect_timeout,
        &cli.vms,
        &mut printer,
        &mut status,
        |at, status| list(at, &filter, status),
    )?;
    printer.finish()?;
    Ok(status.exit())
}

struct Filter {
    states: Vec<State>,
    names: Vec<glob::Pattern>,
    /// Each must match one of the VM's tags (a tag without `*?[` matches
    /// only itself).
    tags: Vec<glob::Pattern>,
    autostart: Option<bool>,
    persistent: Option<bool>,
}

impl Filter {
    fn new(cli: &Cli) -> Result<Self> {
        let names = cli
            .names
            .iter()
            .map(|g| glob::Pattern::new(g).map_err(|e| Error::usage(format!("--name '{g}': {e}"))))
            .collect::<Result<_>>()?;
        let tags = cli
            .tags
            .iter()
            .map(|g| glob::Pattern::new(g).map_err(|e| Error::usage(format!("--tag '{g}': {e}"))))
            .collect::<Result<_>>()?;
        let either = |yes: bool, no: bool| {
            if yes {
                Some(true)
            } else if no {
                Some(false)
            } else {
                None
            }
        };
        Ok(Filter {
            states: cli.state.clone(),
            names,
            tags,
            autostart: either(cli.autostart, cli.no_autostart),
            persistent: either(cli.persistent, cli.transient),
        })
    }

    fn keeps(&self, b: &Basic) -> bool {
        (self.states.is_empty() || self.states.contains(&b.state.state))
            && (self.names.is_empty() || self.names.iter().any(|p| p.matches(&b.name)))
            && self.autostart.is_none_or(|a| a == b.autostart)
            && self.persistent.is_none_or(|p| p == b.persistent)
    }

    fn keeps_tags(&self, xml: &DomainXml) -> bool {
        self.tags
            .iter()
            .all(|p| xml.tags.iter().any(|t| p.matches(t)))
    }
}

fn list(at: &AtHost, filter: &Filter, status: &mut Status) -> Result<Vec<Map<String, Value>>> {
    let basics: Vec<Basic> = basics(&at.conn, at.domains.clone())?
        .into_iter()
        .filter(|b| filter.keeps(b))
        .collect();
    let details = details(&basics);
    let mut records = Vec::with_capacity(basics.len());
    for (basic, detail) in basics.iter().zip(details) {
        match detail {
            Ok(Some(d)) if filter.keeps_tags(&d.xml) => {
                records.push(output::to_record(&VmRecord {
                    host: at.name(),
                    ..record(basic, &d)
                }))
            }
            Ok(_) => {}
            Err(e) => {
                status.failed(&e);
                let vm = targets::VmRef {
                    name: Some(basic.name.clone()),
                    uuid: Some(basic.uuid.clone()),
                    host: at.name().map(Into::into),
                    line: None,
                    record: None,
                };
                records.push(targets::failure_record(&vm, None, &e));
            }
        }
    }
    Ok(records)
}
