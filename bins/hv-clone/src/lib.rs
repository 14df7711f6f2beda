//! hv-clone: new VMs from shut-off ones, many at once (`hv-ls --tag
//! template | hv-clone --count 3 --linked | hv-start`). A clone is the
//! source's definition with only what must differ changed, its disks
//! copied the fastest faithful way (reflink, else sparse) or linked as
//! qcow2 overlays; every clone is checked before any is made (name free,
//! space for the copies, counted together) and made all or nothing, like
//! hv-define's VMs.

mod copy;
mod ffi;
mod xml;

use clap::Parser;
use copy::How;
use hv_common::checks::Status as CheckStatus;
use hv_common::cli::{self, ConnectArgs, JobArgs, OutputArgs, Status};
use hv_common::connect::Access;
use hv_common::hosts::{Pool, Route, Scope};
use hv_common::making::{self, create_new, qemu_img, seed, Undo};
use hv_common::manual::Manual;
use hv_common::output::{self, col, Column, Printer, Show};
use hv_common::plan::{self, Budget, Limits};
use hv_common::profile::Place;
use hv_common::runner::{self, Finished, Job, RunOptions};
use hv_common::storage;
use hv_common::targets::{self, Input, VmRef};
use hv_common::{bulk, domain, inventory, lifecycle, Code, Error, Exit, Result};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use virt::connect::Connect;
use virt::domain::Domain;

#[derive(Debug, Parser)]
#[command(
    name = "hv-clone",
    version,
    about = "Clone shut-off VMs: full sparse copies or linked overlays, checked first, all or nothing",
    long_about = "Clone shut-off VMs named as arguments or piped in as records (e.g. from hv-ls).\n\n\
        Each clone gets a new name, UUID and MAC addresses, its own NVRAM (a copy of the \
        source's) and TPM state (new), a cloud-init seed of its own with its own host name when \
        the source has one, the source's tags unless --no-tags, and cloned_from in its record. \
        Disks are full copies (a reflink where the filesystem can, else a sparse copy), or with \
        --linked qcow2 overlays backed by the source's disks: the source is then tagged \
        template, and hv-start refuses to start it while clones are linked to it.\n\n\
        Before anything is made, every clone is checked, all together: its name is free and \
        its copies fit. Each clone is made all or nothing, and an existing VM or file is never \
        replaced. Each clone gets one record: the VM as hv-ls prints it, with action \"clone\"."
)]
pub struct Cli {
    /// VMs to clone, by name or UUID [default: records or names from stdin]
    #[arg(value_name = "VM")]
    pub vms: Vec<String>,

    /// The clone's name; with --count a pattern: {name} is the source's, {n} counts from 1 [default: {name}-clone, or {name}-{n} with --count]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// How many clones of each VM
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub count: u32,

    /// Make qcow2 overlays backed by the source's disks instead of copies (the source becomes a template)
    #[arg(long)]
    pub linked: bool,

    /// Put the clones' disks in DIR [default: beside each source disk]
    #[arg(long, value_name = "DIR", value_hint = clap::ValueHint::DirPath)]
    pub dir: Option<PathBuf>,

    /// Do not give the clones the source's tags
    #[arg(long)]
    pub no_tags: bool,

    /// Check and print each clone's XML in the `xml` field; make nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub jobs: JobArgs,

    #[command(flatten)]
    pub connect: ConnectArgs,

    #[command(flatten)]
    pub output: OutputArgs,
}

pub const MANUAL: Manual = Manual {
    exit_status: hv_common::manual::EXIT_STATUS,
    environment: hv_common::manual::ENVIRONMENT,
    examples: &[
        ("One full clone:", "hv-clone web1 --name web2"),
        ("Three linked clones of every template, started:", "hv-ls --tag template | hv-clone --count 3 --linked --name '{name}-{n}' | hv-start"),
        ("What would be made:", "hv-clone --dry-run --count 2 base | jq -r .name"),
    ],
    notes: &["A running or paused source is refused (error code invalid_state): stop it first, since its disks change while they are copied. A clone that fails a check has error code check_failed with `checks`; one that fails while being made leaves no disk, seed, NVRAM or domain. Records add to the hv-ls fields: changed, cloned_from (the source's name), linked, copies (each disk's target and how it was copied: reflink, sparse, flattened or linked), seed when the clone got one, and with --dry-run dry_run and xml. hv-rm --remove-storage removes a clone's disks, seed, NVRAM and TPM state and keeps the files linked clones still use.", "On another host (-c ALIAS or a qemu+ssh URI, or a piped record's host) the source's disks must be volumes of its pools: linked clones are overlays its libvirt makes on them, full copies are new volumes its libvirt copies (how: volume); the seed goes through libvirt streams, and the NVRAM starts fresh from the firmware template.", "Over several hosts (--hosts FILE, or -c more than once) each source is cloned on its own host, as its record's host says (hv-ls --hosts F --tag template | hv-clone --hosts F); each host's clones are checked against that host's space and names, and a host that cannot be reached fails its own sources (error code unreachable) while the others are cloned."],
};

static COLUMNS: [Column; 5] = [
    col("name", "name", Show::Plain),
    col("ok", "ok", Show::Plain),
    col("from", "cloned_from", Show::Plain),
    col("linked", "linked", Show::Plain),
    col("disks", "disks", Show::Join(Some("source"))),
];

pub fn run(cli: Cli) -> Result<Exit> {
    let pattern = match (cli.name, cli.count) {
        (Some(p), n) if n > 1 && !p.contains("{n}") => {
            return Err(Error::usage(format!(
                "--name {p:?} with --count {n} would give every clone one name: put {{n}} in it, e.g. --name '{{name}}-{{n}}'"
            )))
        }
        (Some(p), _) => p,
        (None, 1) => "{name}-clone".to_owned(),
        (None, _) => "{name}-{n}".to_owned(),
    };
    let opts = Options {
        pattern,
        count: cli.count,
        linked: cli.linked,
        dir: cli.dir,
        keep_tags: !cli.no_tags,
        dry_run: cli.dry_run,
        // A copy takes as long as its disks need: no timeout per clone.
        run: RunOptions {
            timeout: None,
            ..cli.jobs.options(std::time::Duration::ZERO)
        },
    };
    let inputs = bulk::inputs(
        &cli.vms,
        "hv-ls --tag template | hv-clone --count 3 --linked",
    )?;
    let scope = cli.connect.scope()?;
    let pool = Pool::new(
        scope.clone(),
        Access::ReadWrite,
        cli.connect.connect_timeout,
    );
    // The run's one host is the hypervisor: not reaching it ends the run
    // (exit 3); among several, an unreachable host fails its own VMs.
    if let Some(route) = scope.single() {
        // A named host: a record of another is refused, not looked up by
        // its name there. A run that named none acts where a record's URI
        // says (the routing does).
        if let Scope::Named { .. } = scope {
            hv_common::hosts::working_on(&scope);
        }
        pool.get(&route)?;
    }
    let mut printer = Printer::stdout(cli.output.format(), &COLUMNS);
    let status = clone_all(&pool, inputs, opts, &mut printer)?;
    printer.finish()?;
    Ok(status.exit())
}

/// What `run` turned the arguments into.
struct Options {
    pattern: String,
    count: u32,
    linked: bool,
    dir: Option<PathBuf>,
    keep_tags: bool,
    dry_run: bool,
    run: RunOptions,
}

/// One clone to make, decided and checked before any is made.
struct Plan {
    source: Domain,
    source_name: String,
    source_uuid: String,
    source_xml: String,
    from: xml::Source,
    name: String,
    uuid: String,
    /// Source disk path → the clone's.
    disks: Vec<(String, String, String)>,
    nvram: Option<String>,
    seed: Option<(String, String)>,
    linked: bool,
    keep_tags: bool,
    dry_run: bool,
    /// The host it is made on, when it is not this machine.
    other_host: Option<String>,
    /// Its host's connection.
    conn: Arc<Connect>,
    /// The `host` of its record (the run named hosts).
    host: Option<String>,
}

/// One host of the run, as its clones are planned: its connection, and
/// its own budget and names, since each host's clones are counted against
/// that host alone.
struct AtHost {
    conn: Arc<Connect>,
    host: Option<String>,
    /// Its name when it is not this machine: the clones' files are then
    /// volumes of its pools.
    other_host: Option<String>,
    budget: Budget,
    named: HashSet<String>,
}

impl AtHost {
    fn open(pool: &Pool, route: &Route) -> Result<AtHost> {
        let conn = pool.get(route)?;
        let host = match route {
            Route::Default => None,
            Route::Host(h) => Some(h.name.clone()),
        };
        let uri = conn.uri().ok();
        let other_host = match uri.as_deref().is_some_and(hv_common::hosts::is_remote) {
            true => host.clone().or(uri),
            false => None,
        };
        let budget = Budget::new(
            &conn,
            Limits {
                memory_warn: 10.0,
                disk_warn: 85.0,
            },
        );
        Ok(AtHost {
            conn,
            host,
            other_host,
            budget,
            named: HashSet::new(),
        })
    }
}

/// An item's outcome: known before the run (a failed check, a record
/// passed through, a malformed line) or when its clone is made.
enum Ready {
    Record(Map<String, Value>, Option<Error>),
    Malformed(String),
}

fn clone_all(
    pool: &Pool,
    inputs: impl Iterator<Item = Input>,
    opts: Options,
    printer: &mut Printer<std::io::Stdout>,
) -> Result<Status> {
    // Each source is cloned on its own host: a record's `host` says which.
    // The hosts the sources name are opened at once, so a host that hangs
    // costs one connection timeout, not one per host in turn.
    let inputs: Vec<Input> = inputs.collect();
    let mut named: Vec<Route> = Vec::new();
    for input in &inputs {
        if let Input::Vm(vm) = input {
            if let Ok(route) = pool.scope().route(vm.host.as_deref()) {
                if !named.contains(&route) {
                    named.push(route);
                }
            }
        }
    }
    std::thread::scope(|s| {
        for route in &named {
            s.spawn(move || pool.get(route).map(|_| ()));
        }
    });
    let mut hosts: Vec<(Route, Result<AtHost>)> = Vec::new();
    let mut jobs = Vec::new();
    for input in inputs {
        let vm = match input {
            Input::Malformed { message, .. } => {
                jobs.push(Job::Ready(Ready::Malformed(message)));
                continue;
            }
            Input::PassThrough(record) => {
                jobs.push(Job::Ready(Ready::Record(record, None)));
                continue;
            }
            Input::Vm(vm) => vm,
        };
        let route = match pool.scope().route(vm.host.as_deref()) {
            Ok(route) => route,
            Err(e) => {
                let e = Error::new(e.code, format!("VM {}: {}", vm.label(), e.message));
                jobs.push(Job::Ready(failure(&vm, e)));
                continue;
            }
        };
        let i = match hosts.iter().position(|(r, _)| *r == route) {
            Some(i) => i,
            None => {
                let at = AtHost::open(pool, &route);
                hosts.push((route, at));
                hosts.len() - 1
            }
        };
        let at = match &mut hosts[i].1 {
            Ok(at) => at,
            Err(e) => {
                jobs.push(Job::Ready(failure(&vm, e.clone())));
                continue;
            }
        };
        let vm = VmRef {
            host: vm.host.clone().or(at.host.clone()),
            ..vm
        };
        let (dom, xml_text, from) = match source(&at.conn, &vm) {
            Ok(found) => found,
            Err(e) => {
                jobs.push(Job::Ready(failure(&vm, e)));
                continue;
            }
        };
        for n in 1..=opts.count {
            jobs.push(match plan_one(at, &dom, &xml_text, &from, n, &opts) {
                Ok(p) => Job::Run(p),
                Err((name, e)) => Job::Ready(failure(
                    &VmRef {
                        name: Some(name),
                        host: at.host.clone(),
                        ..VmRef::default()
                    },
                    e,
                )),
            });
        }
    }
    // A source linked clones are about to depend on is a template from
    // now on: tagged before the first overlay exists, so an interrupted run
    // leaves no untagged source that hv-start would start under its clones.
    let mut tagged = HashSet::new();
    for job in &jobs {
        if let Job::Run(p) = job {
            if p.linked && !p.dry_run && tagged.insert(p.source_uuid.clone()) {
                if let Err(e) = tag_template(&p.source) {
                    cli::warn(format!("{}: could not tag it template, which keeps hv-start from starting it under its linked clones: {e}", p.source_name));
                }
            }
        }
    }
    let mut status = Status::default();
    let worker = {
        move |p: &Plan| {
            let r = make(&p.conn, p);
            match r {
                Ok(record) => Ready::Record(record, None),
                Err(e) => {
                    let (record, e) = made_failure(p, e);
                    Ready::Record(record, Some(e))
                }
            }
        }
    };
    runner::run(jobs, &opts.run, worker, |finished| {
        let (record, err) = match finished {
            Finished::Ready(Ready::Record(r, e)) | Finished::Done(_, Ready::Record(r, e)) => (r, e),
            Finished::Ready(Ready::Malformed(m)) | Finished::Done(_, Ready::Malformed(m)) => {
                cli::warn(m);
                status.malformed();
                return Ok(());
            }
            Finished::Failed(p, e) => {
                let (record, e) = made_failure(&p, e);
                (record, Some(e))
            }
        };
        if let Some(e) = &err {
            cli::warn(format!(
                "{}: {e}",
                record.get("name").and_then(Value::as_str).unwrap_or("?")
            ));
            status.failed(e);
        }
        printer.emit(record)
    })?;
    // Its items failed as unreachable: no host of several answered (exit 3).
    if pool.scope().single().is_none() && !hosts.is_empty() && !pool.reached() {
        status.none_reached();
    }
    Ok(status)
}

/// A clone that failed while being made (nothing of it is left).
fn made_failure(p: &Plan, e: Error) -> (Map<String, Value>, Error) {
    #[derive(Serialize)]
    struct Source<'a> {
        cloned_from: &'a str,
    }
    let vm = VmRef {
        name: Some(p.name.clone()),
        uuid: Some(p.uuid.clone()),
        host: p.host.clone(),
        ..VmRef::default()
    };
    let e = e.and_done(&Source {
        cloned_from: &p.source_name,
    });
    (targets::failure_record(&vm, Some("clone"), &e), e)
}

fn failure(vm: &VmRef, e: Error) -> Ready {
    Ready::Record(targets::failure_record(vm, Some("clone"), &e), Some(e))
}

/// The source, shut off, with its definition.
fn source(conn: &Connect, vm: &VmRef) -> Result<(Domain, String, xml::Source)> {
    let dom = targets::lookup(conn, vm)?;
    let name = dom.name().unwrap_or_default();
    if lifecycle::state(&dom)?.state.is_active() {
        return Err(Error::new(
            Code::InvalidState,
            format!("{name} is running: its disks change while they are copied; stop it first (hv-stop {name:?}), then clone"),
        ));
    }
    let text = dom
        .xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE | virt::sys::VIR_DOMAIN_XML_SECURE)
        .map_err(|e| {
            Error::libvirt_needing("cannot read its definition", &e, &["domain.read-secure"])
        })?;
    let from =
        xml::read(&text).map_err(|e| Error::new(e.code, format!("{name}: {}", e.message)))?;
    Ok((dom, text, from))
}

/// Names the clone's files and checks what can be checked before anything
/// is made: its name is free, its copies fit where they go.
fn plan_one(
    at: &mut AtHost,
    dom: &Domain,
    text: &str,
    from: &xml::Source,
    n: u32,
    opts: &Options,
) -> std::result::Result<Plan, (String, Error)> {
    let AtHost {
        conn,
        budget,
        named,
        other_host,
        host,
    } = at;
    let name = opts
        .pattern
        .replace("{name}", &from.name)
        .replace("{n}", &n.to_string());
    let fail = |e: Error| (name.clone(), e);
    let mut checks = vec![plan::name_free(conn, &name, named)];
    let mut disks = Vec::new();
    for (i, (target, path)) in from.disks.iter().enumerate() {
        let src = Path::new(path);
        let dir = match &opts.dir {
            Some(d) => d.clone(),
            None => src
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
        };
        let ext = if opts.linked {
            "qcow2"
        } else {
            src.extension().and_then(|e| e.to_str()).unwrap_or("img")
        };
        let file = match i {
            0 => format!("{name}.{ext}"),
            i => format!("{name}-{i}.{ext}"),
        };
        match (&*other_host, opts.linked) {
            (None, false) => {
                use std::os::unix::fs::MetadataExt;
                let need = std::fs::metadata(src)
                    .map(|m| m.blocks() * 512)
                    .map_err(|e| {
                        fail(Error::io(
                            format!("cannot read disk {target} of {}: {path}", from.name),
                            e,
                        ))
                    })?;
                checks.push(plan::storage(conn, budget, &Place::Dir(dir.clone()), need));
            }
            (Some(host), linked) => {
                // Another host's disk is a volume of one of its pools, and
                // the clone's goes into the pool of its directory.
                let vol = conn.lookup_storage_vol_by_path(path).map_err(|e| {
                    fail(Error::libvirt(
                        format!("disk {target} of {} ({path}) is in no storage pool of {host}: on another host hv-clone copies volumes", from.name),
                        &e,
                    ))
                })?;
                let pool = storage::pool_of_dir(conn, &dir).ok_or_else(|| {
                    fail(Error::new(
                        Code::Unsupported,
                        format!("{} on {host} is no storage pool's directory: give --dir a pool's directory there", dir.display()),
                    ))
                })?;
                if !linked {
                    let need = vol.info().map(|i| i.allocation).unwrap_or(0);
                    checks.push(plan::storage(conn, budget, &Place::Pool(pool.name), need));
                }
            }
            (None, true) => {}
        }
        disks.push((
            target.clone(),
            path.clone(),
            dir.join(file).display().to_string(),
        ));
    }
    let failed: Vec<_> = checks
        .iter()
        .filter(|c| c.status == CheckStatus::Fail)
        .collect();
    if let Some(first) = failed.first() {
        #[derive(Serialize)]
        struct Refused {
            cloned_from: String,
            checks: Vec<Map<String, Value>>,
        }
        return Err(fail(
            Error::new(
                Code::CheckFailed,
                format!(
                    "{}; fix: {}",
                    first.message,
                    first.hint.as_deref().unwrap_or("see checks")
                ),
            )
            .with_done(&Refused {
                cloned_from: from.name.clone(),
                checks: failed.iter().map(|c| c.record()).collect(),
            }),
        ));
    }
    for c in checks.iter().filter(|c| c.status == CheckStatus::Warn) {
        cli::warn(format!("{name}: {}", c.message));
    }
    let nvram = from.nvram.as_ref().map(|old| {
        let dir = Path::new(old)
            .parent()
            .unwrap_or(Path::new("/var/lib/libvirt/qemu/nvram"));
        dir.join(format!("{name}_VARS.fd")).display().to_string()
    });
    let seed = from.seed.as_ref().map(|old| {
        let dir = disks
            .first()
            .and_then(|(_, _, new)| Path::new(new).parent().map(Path::to_path_buf))
            .or_else(|| Path::new(old).parent().map(Path::to_path_buf))
            .unwrap_or_default();
        (
            old.clone(),
            dir.join(format!("{name}-cidata.iso")).display().to_string(),
        )
    });
    Ok(Plan {
        source: dom.clone(),
        source_name: from.name.clone(),
        source_uuid: dom.uuid_string().unwrap_or_default(),
        source_xml: text.to_owned(),
        from: xml::Source {
            name: from.name.clone(),
            disks: from.disks.clone(),
            nvram: from.nvram.clone(),
            seed: from.seed.clone(),
            tags: from.tags.clone(),
        },
        uuid: making::new_uuid().map_err(fail)?,
        name,
        disks,
        nvram,
        seed,
        linked: opts.linked,
        keep_tags: opts.keep_tags,
        dry_run: opts.dry_run,
        other_host: other_host.clone(),
        conn: Arc::clone(conn),
        host: host.clone(),
    })
}

/// What hv-clone adds to the hv-ls record of a clone.
#[derive(Debug, Serialize)]
struct Cloned<'a> {
    changed: bool,
    cloned_from: &'a str,
    linked: bool,
    copies: Vec<Copied>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dry_run: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    xml: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct Copied {
    target: String,
    how: How,
}

fn make(conn: &Connect, p: &Plan) -> Result<Map<String, Value>> {
    let map: HashMap<String, String> = p
        .disks
        .iter()
        .map(|(_, old, new)| (old.clone(), new.clone()))
        .collect();
    let text = xml::clone(
        &p.source_xml,
        &xml::Changes {
            name: &p.name,
            uuid: &p.uuid,
            disks: &map,
            linked: p.linked,
            nvram: p.nvram.as_deref(),
            seed: p.seed.as_ref().map(|(o, n)| (o.as_str(), n.as_str())),
        },
    )?;
    let seed = p.seed.as_ref().map(|(_, n)| n.as_str());
    if p.dry_run {
        let copies = p
            .disks
            .iter()
            .map(|(t, ..)| Copied {
                target: t.clone(),
                how: if p.linked { How::Linked } else { How::Sparse },
            })
            .collect();
        let extra = Cloned {
            changed: false,
            cloned_from: &p.source_name,
            linked: p.linked,
            copies,
            seed,
            dry_run: Some(true),
            xml: Some(&text),
        };
        return Ok(targets::success_record(
            &VmRef::named(&p.name, &p.uuid),
            "clone",
            &extra,
        ));
    }
    let mut undo = Undo::new();
    let mut copies = Vec::new();
    if let Some(host) = &p.other_host {
        copies = remote_files(conn, p, host, &mut undo)?;
    }
    for (target, old, new) in p.disks.iter().filter(|_| p.other_host.is_none()) {
        making::not_interrupted()?;
        let dst = create_new(Path::new(new), &mut undo)?;
        let how = disk(old, new, dst, p.linked)?;
        copies.push(Copied {
            target: target.clone(),
            how,
        });
    }
    if let (Some(old), Some(new), None) = (&p.from.nvram, &p.nvram, &p.other_host) {
        if Path::new(old).exists() {
            let dst = create_new(Path::new(new), &mut undo)?;
            let src = std::fs::File::open(old)
                .map_err(|e| Error::io(format!("cannot read the NVRAM {old}"), e))?;
            copy::copy(&src, &dst)
                .map_err(|e| Error::io(format!("cannot copy the NVRAM to {new}"), e))?;
        }
    }
    if let (Some((old, new)), None) = (&p.seed, &p.other_host) {
        making::not_interrupted()?;
        let work = Path::new(new).parent().unwrap_or(Path::new("."));
        let files = seed::read(Path::new(old), work)?;
        create_new(Path::new(new), &mut undo)?;
        seed::write(
            Path::new(new),
            &seed::renamed(&files, &p.uuid, &seed::hostname_from(&p.name)),
        )?;
    }
    making::not_interrupted()?;
    let dom = conn
        .define_domain_xml_flags(&text, virt::sys::VIR_DOMAIN_DEFINE_VALIDATE)
        .map_err(|e| {
            Error::libvirt_needing(
                "libvirt refused the clone's definition",
                &e,
                &["domain.write", "domain.save"],
            )
        })?;
    undo.defined(&dom);
    let made = domain::made_metadata(seed, Some(&p.source_uuid), p.linked);
    dom.set_metadata(
        virt::sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
        Some(&made),
        Some("hvm"),
        Some(domain::MADE_NS),
        virt::sys::VIR_DOMAIN_AFFECT_CONFIG,
    )
    .map_err(|e| Error::libvirt("cannot record in its metadata what it was cloned from", &e))?;
    // A clone is no template, even of one: its tags are the source's but that.
    let tags: Vec<String> = p
        .from
        .tags
        .iter()
        .filter(|t| *t != "template")
        .cloned()
        .collect();
    if p.keep_tags && !tags.is_empty() {
        domain::write_tags(&dom, &tags, true, false)?;
    }
    making::not_interrupted()?;
    let listed = inventory::records(conn, vec![dom], p.host.as_deref())?
        .pop()
        .and_then(|r| r.transpose())
        .ok_or_else(|| {
            Error::new(
                Code::NotFound,
                "the clone disappeared right after it was defined",
            )
        })??;
    undo.keep();
    let extra = Cloned {
        changed: true,
        cloned_from: &p.source_name,
        linked: p.linked,
        copies,
        seed,
        dry_run: None,
        xml: None,
    };
    Ok(output::with_envelope(listed, "clone", &extra))
}

/// A clone's files on another host, as volumes of its pools: each disk an
/// overlay on the source's volume or a copy the host's libvirt makes, and
/// the seed read from the source's (downloaded), renamed here and
/// uploaded. The NVRAM is a file outside any pool: the clone's starts
/// fresh from the firmware's template, which libvirt writes at its first
/// start.
fn remote_files(conn: &Connect, p: &Plan, host: &str, undo: &mut Undo) -> Result<Vec<Copied>> {
    let mut copies = Vec::new();
    for (target, old, new) in &p.disks {
        making::not_interrupted()?;
        let src = conn
            .lookup_storage_vol_by_path(old)
            .map_err(|e| Error::libvirt(format!("no storage pool of {host} has {old}"), &e))?;
        let pool = storage::pool_at(conn, Path::new(new), host)?;
        let name = storage::file_name(Path::new(new));
        let format = storage::volume_format(&src).unwrap_or_else(|| "raw".into());
        let (vol, how) = if p.linked {
            let capacity = src.info().map(|i| i.capacity).unwrap_or(0);
            let vol =
                storage::create_volume(&pool, &name, "qcow2", capacity, Some((old, &format)))?;
            (vol, How::Linked)
        } else {
            (
                storage::copy_volume(&pool, &name, &format, &src)?,
                How::Volume,
            )
        };
        undo.made_volume(&vol);
        copies.push(Copied {
            target: target.clone(),
            how,
        });
    }
    if let Some((old, new)) = &p.seed {
        making::not_interrupted()?;
        let work = std::env::temp_dir().join(format!("hv-clone-{}-{}", std::process::id(), p.uuid));
        std::fs::create_dir(&work)
            .map_err(|e| Error::io(format!("cannot create {}", work.display()), e))?;
        let made = (|| {
            let src = conn.lookup_storage_vol_by_path(old).map_err(|e| {
                Error::libvirt(format!("no storage pool of {host} has the seed {old}"), &e)
            })?;
            let (theirs, ours) = (work.join("source.iso"), work.join("clone.iso"));
            storage::download(conn, &src, &theirs)?;
            let files = seed::read(&theirs, &work)?;
            seed::write(
                &ours,
                &seed::renamed(&files, &p.uuid, &seed::hostname_from(&p.name)),
            )?;
            let pool = storage::pool_at(conn, Path::new(new), host)?;
            let vol = storage::put_file(conn, &pool, &storage::file_name(Path::new(new)), &ours)?;
            undo.made_volume(&vol);
            Ok(())
        })();
        let _ = std::fs::remove_dir_all(&work);
        made?;
    }
    Ok(copies)
}

/// One disk: an overlay backed by the source's, or a full copy.
fn disk(old: &str, new: &str, dst: std::fs::File, linked: bool) -> Result<How> {
    let src = std::fs::File::open(old).map_err(|e| Error::io(format!("cannot read {old}"), e))?;
    let header =
        copy::qcow2_header(&src).map_err(|e| Error::io(format!("cannot read {old}"), e))?;
    let format = if header.is_some() { "qcow2" } else { "raw" };
    if linked {
        drop(dst);
        qemu_img(&["create", "-q", "-f", "qcow2", "-b", old, "-F", format, new])?;
        return Ok(How::Linked);
    }
    match header {
        Some(h) if h.backing || h.snapshots > 0 => {
            drop(dst);
            qemu_img(&["convert", "-q", "-f", "qcow2", "-O", "qcow2", old, new])?;
            Ok(How::Flattened)
        }
        _ => {
            copy::copy(&src, &dst).map_err(|e| Error::io(format!("cannot copy {old} to {new}"), e))
        }
    }
}

/// Adds the `template` tag to a source that linked clones now depend on.
fn tag_template(dom: &Domain) -> Result<()> {
    let (persistent, def) = domain::definition(dom)?;
    if def.tags.iter().any(|t| t == "template") {
        return Ok(());
    }
    let mut tags = def.tags;
    tags.push("template".into());
    tags.sort();
    domain::write_tags(dom, &tags, persistent, false)
}

#[cfg(test)]
mod record_tests {
    use super::*;

    #[test]
    fn what_hv_clone_adds_is_documented() {
        let c = Cloned {
            changed: true,
            cloned_from: "web1",
            linked: true,
            copies: vec![Copied {
                target: "vda".into(),
                how: How::Linked,
            }],
            seed: Some("s"),
            dry_run: Some(true),
            xml: Some("x"),
        };
        let fields: Vec<String> = hv_common::output::to_record(&c).keys().cloned().collect();
        assert_eq!(
            fields,
            hv_testbench::documented_fields("profiles.md", "### What hv-clone adds")
        );
    }
}
