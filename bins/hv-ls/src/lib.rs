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

    /// Only these fields of each record, in this order (name,uuid,state); name, uuid,
    /// domain_id, state, state_reason, persistent, autostart and cpu_time_ns need no
    /// per-VM call, so a listing of only those is a few bulk calls
    #[arg(long, value_name = "FIELD,...", value_delimiter = ',', value_parser = field)]
    pub fields: Vec<String>,

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
        ("Names, UUIDs and states only, as cheaply as virsh list:", "hv-ls --fields name,uuid,state"),
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

/// Every field of a record, in its order (docs/records.md).
pub const FIELDS: &[&str] = &[
    "name",
    "uuid",
    "host",
    "domain_id",
    "state",
    "state_reason",
    "persistent",
    "autostart",
    "vcpus",
    "memory_bytes",
    "max_memory_bytes",
    "cpu_time_ns",
    "disks",
    "interfaces",
    "snapshot_count",
    "checkpoint_count",
    "tags",
];

/// The fields that come from the domain list and bulk calls only: no
/// domain XML, no call per VM.
const CHEAP: &[&str] = &[
    "name",
    "uuid",
    "host",
    "domain_id",
    "state",
    "state_reason",
    "persistent",
    "autostart",
    "cpu_time_ns",
];

fn field(name: &str) -> std::result::Result<String, String> {
    let name = name.trim();
    if FIELDS.contains(&name) {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "no field {name:?}; the fields are {}",
            FIELDS.join(", ")
        ))
    }
}

/// The table's columns for `--fields`: one per field, in its order.
fn columns_of(fields: &[String]) -> &'static [Column] {
    let columns: Vec<Column> = fields
        .iter()
        .filter_map(|f| FIELDS.iter().find(|k| **k == f.as_str()))
        .map(|&key| {
            let show = match key {
                "memory_bytes" | "max_memory_bytes" => Show::Bytes,
                "disks" => Show::Join(Some("target")),
                "interfaces" => Show::Join(Some("mac")),
                "tags" => Show::Join(None),
                _ => Show::Plain,
            };
            col(key, key, show)
        })
        .collect();
    // One table per run: the columns live as long as the process.
    Box::leak(columns.into_boxed_slice())
}

pub fn run(cli: Cli) -> Result<Exit> {
    let filter = Filter::new(&cli)?;
    let scope = cli.connect.scope()?;
    let columns: &'static [Column] = if cli.fields.is_empty() {
        &COLUMNS
    } else {
        columns_of(&cli.fields)
    };
    let mut printer = Printer::stdout(cli.output.format(), columns);
    let mut status = Status::default();
    across::each_host(
        &scope,
        Access::ReadOnly,
        cli.connect.connect_timeout,
        &cli.vms,
        &mut printer,
        &mut status,
        |at, status| {
            if cli.fields.is_empty() {
                list(at, &filter, status)
            } else if cli.fields.iter().all(|f| CHEAP.contains(&f.as_str()))
                && filter.tags.is_empty()
            {
                cheap(at, &filter, &cli.fields)
            } else {
                let full = list(at, &filter, status)?;
                Ok(full
                    .into_iter()
                    .map(|r| output::project(r, &cli.fields))
                    .collect())
            }
        },
    )?;
    printer.finish()?;
    Ok(status.exit())
}

/// A listing of fields that need no XML: the domain list (already read),
/// one bulk statistics call for states and CPU times, and the persistent
/// and autostart lists when asked for; never a call per VM.
fn cheap(at: &AtHost, filter: &Filter, fields: &[String]) -> Result<Vec<Map<String, Value>>> {
    use hv_common::{domain, ffi, VmState};
    let wants = |f: &str| fields.iter().any(|x| x == f);
    let libvirt = |what: &'static str| move |e: virt::error::Error| Error::libvirt(what, &e);
    let need_state = wants("state")
        || wants("state_reason")
        || wants("cpu_time_ns")
        || !filter.states.is_empty();
    let mut groups = 0;
    if need_state {
        groups |= ffi::STATS_STATE;
    }
    if wants("cpu_time_ns") {
        groups |= ffi::STATS_CPU_TOTAL;
    }
    let stats = if groups == 0 {
        Vec::new()
    } else {
        ffi::domain_stats(&at.domains, groups, ffi::STATS_NOWAIT)
            .map_err(libvirt("cannot read domain statistics"))?
    };
    let by_uuid: std::collections::HashMap<&str, &ffi::Stats> =
        stats.iter().map(|s| (s.uuid.as_str(), s)).collect();
    let listed = |flag: u32, want: bool| -> Result<Option<std::collections::HashSet<String>>> {
        if want {
            domain::uuids_listed(&at.conn, flag).map(Some)
        } else {
            Ok(None)
        }
    };
    let persistent = listed(
        virt::sys::VIR_CONNECT_LIST_DOMAINS_PERSISTENT,
        wants("persistent") || filter.persistent.is_some(),
    )?;
    let autostart = listed(
        virt::sys::VIR_CONNECT_LIST_DOMAINS_AUTOSTART,
        wants("autostart") || filter.autostart.is_some(),
    )?;
    let mut out = Vec::new();
    for d in &at.domains {
        let name = d.name().unwrap_or_default();
        let uuid = d.uuid_string().unwrap_or_default();
        let s = by_uuid.get(uuid.as_str());
        let state = VmState::from_raw(
            s.and_then(|s| s.u64("state.state")).unwrap_or(0) as u32,
            s.and_then(|s| s.u64("state.reason")).unwrap_or(0) as u32,
        );
        let is_persistent = persistent.as_ref().map(|p| p.contains(&uuid));
        let is_autostart = autostart.as_ref().map(|a| a.contains(&uuid));
        if !filter.keeps_facts(state.state, &name, is_autostart, is_persistent) {
            continue;
        }
        let mut r = Map::new();
        for f in fields {
            let v = match f.as_str() {
                "name" => Value::from(name.clone()),
                "uuid" => Value::from(uuid.clone()),
                "host" => at.name().map_or(Value::Null, Value::from),
                "domain_id" => d.id().map_or(Value::Null, Value::from),
                "state" => Value::from(state.state.as_str()),
                "state_reason" => output::to_record(&state)
                    .remove("state_reason")
                    .unwrap_or(Value::Null),
                "persistent" => Value::from(is_persistent.unwrap_or(false)),
                "autostart" => Value::from(is_autostart.unwrap_or(false)),
                // As in full records: libvirt may still report an inactive
                // domain's last run.
                "cpu_time_ns" => Value::from(
                    s.filter(|_| state.state.is_active())
                        .and_then(|s| s.u64("cpu.time"))
                        .unwrap_or(0),
                ),
                _ => continue,
            };
            r.insert(f.clone(), v);
        }
        if let (Some(h), false) = (at.name(), r.contains_key("host")) {
            r.insert("host".into(), Value::from(h));
        }
        out.push(r);
    }
    Ok(out)
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
        self.keeps_facts(
            b.state.state,
            &b.name,
            Some(b.autostart),
            Some(b.persistent),
        )
    }

    /// The same, on what a listing read: autostart and persistence are
    /// None when it did not ask for them (no filter needs them then).
    fn keeps_facts(
        &self,
        state: State,
        name: &str,
        autostart: Option<bool>,
        persistent: Option<bool>,
    ) -> bool {
        (self.states.is_empty() || self.states.contains(&state))
            && (self.names.is_empty() || self.names.iter().any(|p| p.matches(name)))
            && self.autostart.is_none_or(|a| Some(a) == autostart)
            && self.persistent.is_none_or(|p| Some(p) == persistent)
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
