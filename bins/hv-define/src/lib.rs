//! hv-define: VMs made from JSON profiles (docs/profiles.md), as files or
//! JSON lines, so a fleet is a jq filter away (`jq -c '.[]' fleet.json |
//! hv-define | hv-start`). Every profile is checked before anything is
//! made, the whole batch counted together (hv-preflight's planned-VM
//! checks), and each VM is made all or nothing: the records that come out
//! are hv-ls records, ready for hv-start, hv-snap or hv-backup.

mod make;
mod xml;

use clap::Parser;
use hv_common::checks::{Check, Status as CheckStatus};
use hv_common::cli::{self, ConnectArgs, OutputArgs, Status};
use hv_common::connect::Access;
use hv_common::hosts::{Pool, Route, Scope};
use hv_common::iso_library::Library;
use hv_common::manual::Manual;
use hv_common::output::{self, col, Column, Printer, Show};
use hv_common::plan::{self, Budget, Limits};
use hv_common::profile::{self, Profile, ProfileError};
use hv_common::storage::Machine;
use hv_common::targets::{self, VmRef};
use hv_common::{fsutil, inventory, making, Code, Error, Exit, Result};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;
use virt::connect::Connect;

#[derive(Debug, Parser)]
#[command(
    name = "hv-define",
    version,
    about = "Make VMs from JSON profiles, checked first, all or nothing",
    long_about = "Make VMs from JSON profiles (docs/profiles.md): files named as arguments, each \
        holding one profile or several one after another, or JSON lines on stdin.\n\n\
        Before anything is made, every profile passes hv-preflight's planned-VM checks, the \
        whole batch counted together: the name is free, memory, vCPUs and disk space are there, \
        the ISO is in the hv-iso library and proven by its signature, the IOMMU is on for \
        hostdev, OVMF for uefi, swtpm for tpm. A profile that fails a check, or is not valid, \
        gets a failing record; the others are still made. Each VM is made all or nothing: a \
        failure at any step removes its disks, seed and domain. An existing VM or file is never \
        replaced.\n\n\
        Each VM gets one record: the VM as hv-ls prints it, with action \"define\" and \
        changed, so the output pipes into hv-start, hv-snap or hv-backup."
)]
pub struct Cli {
    /// Profile files [default: JSON lines from stdin]
    #[arg(value_name = "PROFILE", value_hint = clap::ValueHint::FilePath)]
    pub profiles: Vec<PathBuf>,

    /// Check the profiles and print each VM's XML in the `xml` field; make nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,

    /// Accept an ISO that hv-iso did not admit by a signature (the record says iso_unverified)
    #[arg(long)]
    pub allow_unverified_iso: bool,

    /// The hv-iso library the profiles' `iso` names are looked up in
    #[arg(
        long,
        env = "HV_ISO_LIBRARY",
        value_name = "DIR",
        default_value = "/var/lib/hv/isos"
    )]
    pub iso_library: PathBuf,

    #[command(flatten)]
    pub connect: ConnectArgs,

    #[command(flatten)]
    pub output: OutputArgs,
}

pub const MANUAL: Manual = Manual {
    exit_status: hv_common::manual::EXIT_STATUS,
    environment: &[
        ("HV_CONNECT", "The libvirt URI when -c is not given."),
        ("HV_ISO_LIBRARY", "The hv-iso library when --iso-library is not given (default /var/lib/hv/isos)."),
    ],
    examples: &[
        ("Make two VMs from profile files:", "hv-define web.json db.json"),
        ("Make a fleet from one JSON array, and start it:", "jq -c '.[]' fleet.json | hv-define | hv-start"),
        ("The XML a profile gives, nothing made:", "hv-define --dry-run win11.json | jq -r .xml"),
        ("Check profiles the way hv-define will, without it:", "hv-preflight --profiles fleet.jsonl"),
        ("A fleet over two hosts, each profile naming its own (\"host\": \"h1\"):", "jq -c '.[]' fleet.json | hv-define --hosts /etc/hv/hosts | hv-start --hosts /etc/hv/hosts"),
    ],
    notes: &["Profiles, their fields and worked examples: docs/profiles.md; the JSON Schema: docs/profile.schema.json. A record with ok false has error code malformed_input (the profile is not valid: the message names its source, line and field), check_failed (a planned-VM check failed: `checks` lists them, each with its fix), untrusted (the ISO is not proven by hv-iso), invalid_state (a file it would create exists) or the code of the step that failed; nothing of that VM is left behind. The disks are NAME.qcow2, NAME-1.qcow2… and the cloud-init seed NAME-cidata.iso, in the pool's directory or dir; hv-rm --remove-storage removes them with the NVRAM and TPM state.", "On another host (a profile's host, or -c ALIAS or a qemu+ssh URI) the disks are volumes of its pools made by its libvirt (pool, or a dir that is a pool's directory there; from must be a volume there), and the cloud-init seed and the ISO (from this machine's hv-iso library, uploaded once into the first disk's pool) go there through libvirt streams: no hv and no shell of hv's on that host. docs/profiles.md, On another host.", "Over several hosts (--hosts FILE, or -c more than once) each profile names its host in `host`, an alias of the hosts file or a URI; the hosts work in parallel, each checking its own batch, and a host that cannot be reached fails its own profiles (error code unreachable) while the others are made. A profile without host is a usage error there."],
};

static COLUMNS: [Column; 5] = [
    col("name", "name", Show::Plain),
    col("ok", "ok", Show::Plain),
    col("state", "state", Show::Plain),
    col("changed", "changed", Show::Plain),
    col("disks", "disks", Show::Join(Some("source"))),
];

pub fn run(cli: Cli) -> Result<Exit> {
    let sources = if cli.profiles.is_empty() {
        if !cli::stdin_has_targets(&[]) {
            return Err(Error::usage(
                "no profiles: name profile files, or pipe JSON lines in (jq -c '.[]' fleet.json | hv-define)",
            ));
        }
        vec![Source::Stdin]
    } else {
        cli.profiles.into_iter().map(Source::File).collect()
    };
    let opts = Options {
        sources,
        dry_run: cli.dry_run,
        allow_unverified_iso: cli.allow_unverified_iso,
        iso_library: cli.iso_library,
    };
    let _ = cli::interrupt_flag();
    let scope = cli.connect.scope()?;
    if scope.single().is_some() {
        hv_common::hosts::working_on(&scope);
    }
    let mut printer = Printer::stdout(cli.output.format(), &COLUMNS);
    let mut status = Status::default();
    define_all(
        &scope,
        cli.connect.connect_timeout,
        &opts,
        &mut printer,
        &mut status,
    )?;
    printer.finish()?;
    Ok(status.exit())
}

/// What `run` turned the arguments into.
struct Options {
    sources: Vec<Source>,
    dry_run: bool,
    allow_unverified_iso: bool,
    iso_library: PathBuf,
}

enum Source {
    File(PathBuf),
    Stdin,
}

/// A VM's memory when its profile gives none.
pub(crate) const DEFAULT_MEMORY: u64 = 1 << 30;

/// Profiles are small; the limit keeps `/dev/zero` or an endless pipe
/// from eating memory.
const LIMIT: u64 = 16 << 20;

fn read_source(source: &Source) -> Vec<std::result::Result<profile::Read, Error>> {
    let (label, data) = match source {
        Source::Stdin => {
            let mut data = Vec::new();
            let read = std::io::stdin()
                .lock()
                .take(LIMIT + 1)
                .read_to_end(&mut data);
            if let Err(e) = read {
                return vec![Err(Error::io("cannot read stdin", e))];
            }
            if data.len() as u64 > LIMIT {
                return vec![Err(Error::new(
                    Code::MalformedInput,
                    "stdin holds more than 16 MiB: that is not a list of profiles",
                ))];
            }
            ("stdin".to_owned(), data)
        }
        Source::File(path) => {
            match fsutil::read_named(
                path,
                "profile file",
                LIMIT,
                "give a file holding JSON profiles (docs/profiles.md)",
            ) {
                Ok(data) => (path.display().to_string(), data),
                Err(e) => return vec![Err(Error::new(Code::MalformedInput, e.message))],
            }
        }
    };
    let text = String::from_utf8_lossy(&data);
    profile::parse_all(&text, &label)
        .into_iter()
        .map(|r| r.map_err(invalid))
        .collect()
}

fn invalid(e: ProfileError) -> Error {
    let mut err = Error::new(
        Code::MalformedInput,
        format!("{e}; this profile is not made"),
    );
    err.done = e
        .name
        .map(|n| Box::new(Map::from_iter([("name".to_owned(), Value::String(n))])));
    err
}

/// What a host's thread hands the printer.
enum Outcome {
    Made(Map<String, Value>),
    Failed(Map<String, Value>, Error),
    /// The run's only host cannot be reached: the run's error (exit 3).
    Fatal(Error),
}

fn define_all(
    scope: &Scope,
    timeout: Duration,
    opts: &Options,
    printer: &mut Printer<std::io::Stdout>,
    status: &mut Status,
) -> Result<()> {
    let single = scope.single();
    let pool = Pool::new(scope.clone(), Access::ReadWrite, timeout);
    // The run's one host is the hypervisor: not reaching it ends the run
    // before any profile is read, as a one-host command always has.
    if let Some(route) = &single {
        pool.get(route)?;
    }
    // Each host's profiles, in the order they were read.
    let mut groups: Vec<(Route, Vec<profile::Read>)> = Vec::new();
    for source in &opts.sources {
        for read in read_source(source) {
            let read = match read {
                Ok(r) => r,
                Err(e) => {
                    status.malformed();
                    let name = e
                        .done
                        .as_ref()
                        .and_then(|d| d.get("name")?.as_str().map(str::to_owned));
                    let mut e = e;
                    e.done = None;
                    cli::warn(&e);
                    printer.emit(targets::failure_record(
                        &VmRef {
                            name,
                            ..VmRef::default()
                        },
                        Some("define"),
                        &e,
                    ))?;
                    continue;
                }
            };
            match scope.route(read.profile.host.as_deref()) {
                Ok(route) => match groups.iter_mut().find(|(r, _)| *r == route) {
                    Some((_, reads)) => reads.push(read),
                    None => groups.push((route, vec![read])),
                },
                Err(e) => {
                    let why = match &read.profile.host {
                        None => format!(
                            "its profile names no host, and {} hosts are given: add \"host\": \"ALIAS\" to it, or give one host with -c",
                            scope.hosts().len()
                        ),
                        Some(_) => e.message,
                    };
                    let e = Error::new(
                        e.code,
                        format!("{} ({}): {why}", read.profile.name, read.at),
                    );
                    cli::warn(&e);
                    status.failed(&e);
                    printer.emit(targets::failure_record(
                        &VmRef {
                            name: Some(read.profile.name.clone()),
                            host: read.profile.host.clone(),
                            ..VmRef::default()
                        },
                        Some("define"),
                        &e,
                    ))?;
                }
            }
        }
    }
    // Each host in a thread of its own: a slow host holds back only its
    // own VMs, and an unreachable one fails its own profiles.
    let pool = &pool;
    let single = &single;
    std::thread::scope(|s| -> Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        for (route, reads) in groups {
            let tx = tx.clone();
            s.spawn(move || {
                let fatal = single.as_ref() == Some(&route);
                // A closed channel (stdout gone, the run ended) stops the
                // host's thread before its next VM.
                on_host(pool, &route, fatal, reads, opts, &mut |o| {
                    tx.send(o).is_ok()
                })
            });
        }
        drop(tx);
        for outcome in rx {
            match outcome {
                Outcome::Made(record) => printer.emit(record)?,
                Outcome::Failed(record, e) => {
                    status.failed(&e);
                    printer.emit(record)?;
                }
                Outcome::Fatal(e) => return Err(e),
            }
        }
        Ok(())
    })?;
    if !pool.reached() && single.is_none() {
        status.none_reached();
    }
    if let Some(_sig) = cli::interrupted() {
        return Err(cli::interrupted_error(
            "hv-define stopped; the VMs made so far stay",
        ));
    }
    Ok(())
}

/// One host's profiles: every gate first, for the host's whole batch (the
/// tenth VM fails when the nine before it took the memory or space, before
/// any of them is made), then each VM made all or nothing.
fn on_host(
    pool: &Pool,
    route: &Route,
    fatal: bool,
    reads: Vec<profile::Read>,
    opts: &Options,
    send: &mut dyn FnMut(Outcome) -> bool,
) {
    let host = match route {
        Route::Default => None,
        Route::Host(h) => Some(h.name.clone()),
    };
    let failed = |name: &str, uuid: Option<String>, e: Error| {
        cli::warn(format!("{name}: {e}"));
        let record = targets::failure_record(
            &VmRef {
                name: Some(name.to_owned()),
                uuid,
                host: host.clone(),
                ..VmRef::default()
            },
            Some("define"),
            &e,
        );
        Outcome::Failed(record, e)
    };
    let conn = match pool.get(route) {
        Ok(conn) => conn,
        Err(e) if fatal => {
            send(Outcome::Fatal(e));
            return;
        }
        Err(e) => {
            for read in reads {
                if !send(failed(&read.profile.name, None, e.clone())) {
                    return;
                }
            }
            return;
        }
    };
    // Another host's files are volumes of its pools (docs/hosts.md).
    let uri = conn.uri().ok();
    let label = host.clone().or(uri.clone()).unwrap_or_default();
    let machine = Machine::of(uri.as_deref(), &label);
    let mut budget = Budget::new(
        &conn,
        Limits {
            memory_warn: 10.0,
            disk_warn: 85.0,
        },
    );
    let mut named = HashSet::new();
    let gated: Vec<_> = reads
        .into_iter()
        .map(|r| {
            // What hv-define gives a VM whose profile says nothing is counted too.
            let mut p = r.profile.clone();
            if p.memory().is_none() {
                p.memory_bytes = Some(DEFAULT_MEMORY);
            }
            p.vcpus = p.vcpus.or(Some(1));
            let checks = plan::check_profile(
                &conn,
                &opts.iso_library,
                &mut budget,
                &p,
                &mut named,
                machine,
            );
            (r, checks)
        })
        .collect();
    for (read, checks) in gated {
        if cli::interrupted().is_some() {
            return;
        }
        let p = &read.profile;
        let mut uuid = None;
        let record = match gate(p, &checks, opts) {
            Err(e) if opts.dry_run => {
                let (e, planned) = with_xml(&conn, e, p, opts, machine);
                uuid = planned;
                Err(e)
            }
            Err(e) => Err(e),
            Ok(unverified) => define_one(&conn, p, opts, unverified, machine, host.as_deref()),
        };
        let sent = send(match record {
            Ok(r) => Outcome::Made(r),
            Err(e) => failed(&p.name, uuid, e),
        });
        if !sent {
            return;
        }
    }
}

/// The checks' verdict: an error naming what failed, or whether the ISO
/// goes in unproven (--allow-unverified-iso). Warnings go to stderr.
fn gate(p: &Profile, checks: &[Check], opts: &Options) -> Result<bool> {
    let mut failed: Vec<&Check> = checks
        .iter()
        .filter(|c| c.status == CheckStatus::Fail)
        .collect();
    let unproven = checks
        .iter()
        .find(|c| c.check == "plan.iso" && c.status == CheckStatus::Warn);
    if let (Some(c), false) = (unproven, opts.allow_unverified_iso) {
        if failed.is_empty() {
            return Err(Error::new(
                Code::Untrusted,
                format!("{}; hv-define uses only ISO images hv-iso admitted by a signature: {}, or add --allow-unverified-iso", c.message, c.hint.as_deref().unwrap_or("hv-iso add URL --keyring KEY")),
            )
            .with_done(&Refused { checks: vec![c.record()] }));
        }
        failed.push(c);
    }
    if let Some(first) = failed.first() {
        let code = if first.check == "plan.iso" {
            Code::Untrusted
        } else {
            Code::CheckFailed
        };
        let more = match failed.len() {
            1 => String::new(),
            n => format!(" (and {} more failed check(s))", n - 1),
        };
        return Err(Error::new(
            code,
            format!(
                "{}{more}; fix: {}",
                first.message,
                first.hint.as_deref().unwrap_or("see checks")
            ),
        )
        .with_done(&Refused {
            checks: failed.iter().map(|c| c.record()).collect(),
        }));
    }
    for c in checks
        .iter()
        .filter(|c| c.status == CheckStatus::Warn && c.check != "plan.iso")
    {
        cli::warn(format!("{}: {}", p.name, c.message));
    }
    Ok(unproven.is_some())
}

/// A dry run shows the XML of a refused profile too: what would be made
/// once the failed checks are fixed.
/// The UUID in that XML is the record's.
fn with_xml(
    conn: &Connect,
    e: Error,
    p: &Profile,
    opts: &Options,
    machine: Machine,
) -> (Error, Option<String>) {
    #[derive(Serialize)]
    struct Shown {
        dry_run: bool,
        xml: String,
    }
    let iso = p.iso.as_deref().map(|i| iso_path(&opts.iso_library, i));
    let (Ok(plan), Ok(uuid)) = (make::plan(conn, p, iso, machine), making::new_uuid()) else {
        return (e, None);
    };
    let shown = Shown {
        dry_run: true,
        xml: xml::domain(p, &uuid, &plan.layout),
    };
    (e.and_done(&shown), Some(uuid))
}

/// What a refused profile's record says beside its error.
#[derive(Debug, Serialize)]
struct Refused {
    /// The failed checks, as hv-preflight prints them.
    checks: Vec<Map<String, Value>>,
}

/// What hv-define adds to the hv-ls record of a VM it made.
#[derive(Debug, Serialize)]
struct Defined<'a> {
    changed: bool,
    /// Present when --allow-unverified-iso let an ISO in that hv-iso did not prove.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    iso_unverified: bool,
    /// The cloud-init seed's path.
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dry_run: Option<bool>,
    /// The domain XML (--dry-run).
    #[serde(skip_serializing_if = "Option::is_none")]
    xml: Option<&'a str>,
}

fn define_one(
    conn: &Connect,
    p: &Profile,
    opts: &Options,
    iso_unverified: bool,
    machine: Machine,
    host: Option<&str>,
) -> Result<Map<String, Value>> {
    let uuid = making::new_uuid()?;
    let iso = p.iso.as_deref().map(|i| iso_path(&opts.iso_library, i));
    let plan = make::plan(conn, p, iso, machine)?;
    let seed = plan.layout.seed.as_ref().map(|s| s.display().to_string());
    if opts.dry_run {
        let xml = xml::domain(p, &uuid, &plan.layout);
        let extra = Defined {
            changed: false,
            iso_unverified,
            seed,
            dry_run: Some(true),
            xml: Some(&xml),
        };
        return Ok(targets::success_record(
            &VmRef::named(&p.name, &uuid),
            "define",
            &extra,
        ));
    }
    let mut undo = making::Undo::new();
    let dom = make::make(conn, p, &uuid, &plan, &mut undo, machine)?;
    let listed = inventory::records(conn, vec![dom], host)?
        .pop()
        .and_then(|r| r.transpose())
        .ok_or_else(|| {
            Error::new(
                Code::NotFound,
                "the VM disappeared right after it was defined",
            )
        })??;
    undo.keep();
    let extra = Defined {
        changed: true,
        iso_unverified,
        seed,
        dry_run: None,
        xml: None,
    };
    Ok(output::with_envelope(listed, "define", &extra))
}

/// An ISO named in the library, or a path (refused by the gate unless
/// --allow-unverified-iso).
fn iso_path(library: &Path, iso: &str) -> PathBuf {
    if iso.contains('/') {
        PathBuf::from(iso)
    } else {
        Library::new(library.to_path_buf()).image(iso)
    }
}

#[cfg(test)]
mod record_tests {
    use super::*;

    #[test]
    fn what_hv_define_adds_is_documented() {
        let d = Defined {
            changed: true,
            iso_unverified: true,
            seed: Some("s".into()),
            dry_run: Some(true),
            xml: Some("x"),
        };
        let fields: Vec<String> = hv_common::output::to_record(&d).keys().cloned().collect();
        assert_eq!(
            fields,
            hv_testbench::documented_fields("profiles.md", "### What hv-define adds")
        );
    }
}
