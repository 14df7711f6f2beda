//! hv-set: change VMs after they exist, in bulk: memory, vCPUs, a disk's
//! size, the ISO in the drive, the boot order, the description, the CPU
//! mode and the start order. Every change goes into the persistent
//! definition in one define (libvirt takes it all or nothing), and into a
//! running VM as well where libvirt and the guest allow it; the record
//! says which, per change, so `jq 'select(.next_boot)'` finds the VMs to
//! reboot. What could fail is checked first, so a VM gets all its changes
//! or none.

mod xml;

use clap::Parser;
use hv_common::bulk::{self, Action};
use hv_common::checks::Status;
use hv_common::cli::{self, ActionArgs};
use hv_common::manual::Manual;
use hv_common::output::{col, human_bytes, Column, Show};
use hv_common::storage;
use hv_common::{boot_order, domain, plan, size, time, Choice, Code, Error, Exit, Result};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;
use virt::domain::Domain;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuMode {
    HostPassthrough,
    HostModel,
}

impl Choice for CpuMode {
    const ALL: &'static [CpuMode] = &[CpuMode::HostPassthrough, CpuMode::HostModel];

    fn name(self) -> &'static str {
        match self {
            CpuMode::HostPassthrough => "host-passthrough",
            CpuMode::HostModel => "host-model",
        }
    }

    fn help(self) -> Option<&'static str> {
        Some(match self {
            CpuMode::HostPassthrough => {
                "The host's CPU as it is (fastest; migrates only to identical hosts)"
            }
            CpuMode::HostModel => {
                "The closest named model to the host's (migrates to similar hosts)"
            }
        })
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "hv-set",
    version,
    about = "Change VMs in bulk: memory, vCPUs, disk size, the ISO in the drive, boot order, description, CPU mode",
    long_about = "Change VMs, named as arguments or piped in as records. Each change goes into \
        the persistent definition (one define: all or nothing), and into a running VM too where \
        libvirt and the guest allow it: memory within the VM's maximum (balloon), vCPUs (hotplug), \
        a disk's size (block resize: the guest sees it), the ISO in the drive, the description. \
        The record says per change when it takes effect: now, at the next boot (with why), or at \
        the next start of a VM that is off. Checks come first (host memory, room for a grown \
        disk, an ISO proven by hv-iso): a VM that fails one is not changed."
)]
pub struct Cli {
    /// VMs to change, by name or UUID [default: records or names from stdin]
    #[arg(value_name = "VM")]
    pub vms: Vec<String>,

    /// Memory, with a unit: 512M, 4G (raises --max-memory with it when above)
    #[arg(long, value_name = "SIZE", value_parser = size::parse)]
    pub memory: Option<u64>,

    /// The most memory the VM may be given while it runs (takes effect at the next boot)
    #[arg(long, value_name = "SIZE", value_parser = size::parse)]
    pub max_memory: Option<u64>,

    /// vCPUs (raises --max-vcpus with it when above)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub vcpus: Option<u32>,

    /// The most vCPUs the VM may be given while it runs (takes effect at the next boot)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_vcpus: Option<u32>,

    /// Grow a disk: TARGET=+SIZE (by) or TARGET=SIZE (to), e.g. vda=+20G; never shrinks (repeatable)
    #[arg(long, value_name = "TARGET=[+]SIZE", value_parser = grow)]
    pub grow: Vec<Grow>,

    /// Put this ISO in the VM's drive: a name in the hv-iso library (a drive is added when there is none)
    #[arg(long, value_name = "ISO", conflicts_with = "eject")]
    pub cdrom: Option<String>,

    /// Empty the VM's drive
    #[arg(long)]
    pub eject: bool,

    /// The boot order: devices among hd, cdrom, network, fd, comma-separated (cdrom,hd)
    #[arg(long, value_name = "ORDER", value_parser = boot)]
    pub boot: Option<BootOrder>,

    /// The VM's description (virsh desc)
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,

    /// The CPU the guest sees: host-passthrough or host-model (takes effect at the next boot)
    #[arg(long, value_name = "MODE", value_parser = cli::choice::<CpuMode>(), hide_possible_values = true)]
    pub cpu: Option<CpuMode>,

    /// Its group in the host's start order (the boot:N tag that hv-start --order and hv-boot read)
    #[arg(long, value_name = "N")]
    pub autostart_order: Option<u32>,

    /// How long the start order waits after its group (the boot-delay tag): 30s, 2m
    #[arg(long, value_name = "DURATION", value_parser = time::duration)]
    pub autostart_delay: Option<Duration>,

    /// The hv-iso library --cdrom names are looked up in
    #[arg(
        long,
        env = "HV_ISO_LIBRARY",
        value_name = "DIR",
        default_value = "/var/lib/hv/isos"
    )]
    pub iso_library: PathBuf,

    /// Accept an ISO hv-iso did not prove by a signature (the record says so)
    #[arg(long)]
    pub allow_unverified_iso: bool,

    /// How long each VM may take before it is reported as timed out
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = time::duration)]
    pub timeout: Duration,

    #[command(flatten)]
    pub args: ActionArgs,
}

/// `--grow`: a disk and its new size, absolute or added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grow {
    pub target: String,
    pub by: bool,
    pub bytes: u64,
}

fn grow(text: &str) -> std::result::Result<Grow, String> {
    let (target, size) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: give TARGET=+SIZE or TARGET=SIZE, e.g. vda=+20G"))?;
    if target.is_empty() {
        return Err(format!(
            "{text:?}: name the disk by its target (vda; hv-ls shows them)"
        ));
    }
    let (by, size) = match size.strip_prefix('+') {
        Some(s) => (true, s),
        None => (false, size),
    };
    Ok(Grow {
        target: target.to_owned(),
        by,
        bytes: size::parse(size)?,
    })
}

/// `--boot`: boot devices in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootOrder(pub Vec<String>);

fn boot(text: &str) -> std::result::Result<BootOrder, String> {
    let devices: Vec<String> = text.split(',').map(|d| d.trim().to_owned()).collect();
    for d in &devices {
        if !matches!(d.as_str(), "hd" | "cdrom" | "network" | "fd") {
            return Err(format!(
                "{d:?} is no boot device: use hd, cdrom, network or fd, comma-separated"
            ));
        }
    }
    Ok(BootOrder(devices))
}

pub const MANUAL: Manual = Manual {
    exit_status: hv_common::manual::EXIT_STATUS,
    environment: hv_common::manual::ENVIRONMENT,
    examples: &[
        ("More memory and vCPUs for every web VM, live where possible:", "hv-ls --tag web | hv-set --memory 4G --vcpus 4"),
        ("Then the VMs that need a reboot for it:", "hv-ls --tag web | hv-set --memory 4G --vcpus 4 | jq -r 'select(.next_boot) | .name'"),
        ("Grow a disk by 20 GiB (a running guest sees it at once):", "hv-set db1 --grow vda=+20G"),
        ("Boot an installer:", "hv-set installer --cdrom debian-13.2.0-amd64-netinst.iso --boot cdrom,hd"),
        ("See what would change:", "hv-set web1 --memory 8G --dry-run"),
    ],
    notes: &[
        "Result records carry name, uuid, action (\"set\"), ok, changes (each: setting, from, to, when, and why when it waits), next_boot (true when the VM runs and a change waits for its next boot), changed, and iso_unverified and dry_run when so. when is now (in the running VM and its definition), next_boot (in the definition; the running VM keeps the old value until it boots again) or next_start (the VM is off). Memory is live within the running VM's maximum memory (the balloon); vCPUs are live up to its maximum where the guest takes hotplugged CPUs; a grown disk is live through libvirt's block resize; the ISO in a drive and the description are live; the maximums, the boot order and the CPU mode wait for the next boot.",
        "Checks first, per VM, as hv-preflight would: memory no more than the host has, room in the pool or directory of a grown disk, a new size not below the current one (hv-set never shrinks a disk), an ISO in the hv-iso library proven by its signature (else refused, unless --allow-unverified-iso). A VM that fails a check is not changed (error check_failed). docs/lifecycle.md, Changing VMs.",
    ],
};

static COLUMNS: [Column; 5] = [
    col("name", "name", Show::Plain),
    col("ok", "ok", Show::Plain),
    col("changed", "changed", Show::Plain),
    col("next_boot", "next_boot", Show::Plain),
    col("changes", "changes", Show::Join(Some("setting"))),
];

/// What `run` turned the arguments into.
#[derive(Debug, Clone)]
struct Options {
    wanted: xml::Wanted,
    grow: Vec<Grow>,
    description: Option<String>,
    order: Option<u32>,
    delay: Option<Duration>,
    iso_library: PathBuf,
    allow_unverified_iso: bool,
    dry_run: bool,
}

pub fn run(cli: Cli) -> Result<Exit> {
    let cdrom = match (&cli.cdrom, cli.eject) {
        (Some(iso), _) => Some(Some(iso.clone())),
        (None, true) => Some(None),
        (None, false) => None,
    };
    let wanted = xml::Wanted {
        memory: cli.memory,
        max_memory: cli.max_memory,
        vcpus: cli.vcpus,
        max_vcpus: cli.max_vcpus,
        cdrom,
        boot: cli.boot.map(|b| b.0),
        cpu: cli.cpu.map(|c| c.name().to_owned()),
    };
    if let (Some(m), Some(max)) = (cli.memory, cli.max_memory) {
        if m > max {
            return Err(Error::usage(
                "--memory above --max-memory: give a maximum at least as large",
            ));
        }
    }
    if let (Some(v), Some(max)) = (cli.vcpus, cli.max_vcpus) {
        if v > max {
            return Err(Error::usage(
                "--vcpus above --max-vcpus: give a maximum at least as large",
            ));
        }
    }
    let opts = Options {
        grow: cli.grow,
        description: cli.description,
        order: cli.autostart_order,
        delay: cli.autostart_delay,
        iso_library: cli.iso_library,
        allow_unverified_iso: cli.allow_unverified_iso,
        dry_run: cli.args.dry_run,
        wanted,
    };
    let nothing = opts.wanted.memory.is_none()
        && opts.wanted.max_memory.is_none()
        && opts.wanted.vcpus.is_none()
        && opts.wanted.max_vcpus.is_none()
        && opts.wanted.cdrom.is_none()
        && opts.wanted.boot.is_none()
        && opts.wanted.cpu.is_none()
        && opts.grow.is_empty()
        && opts.description.is_none()
        && opts.order.is_none()
        && opts.delay.is_none();
    if nothing {
        return Err(Error::usage(
            "nothing to change: give --memory, --vcpus, --grow, --cdrom, --boot, … (hv-set --help)",
        ));
    }
    let inputs = bulk::inputs(&cli.vms, "hv-ls --tag web | hv-set --memory 4G")?;
    let action = Action {
        name: "set",
        columns: &COLUMNS,
        item_timeout: cli.timeout,
    };
    bulk::act(inputs, &cli.args, action, move |conn, dom, _| {
        set(conn, dom, &opts)
    })
}

/// When a change takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum When {
    /// In the running VM now, and in its definition.
    Now,
    /// In the definition; the running VM keeps the old value until it
    /// boots again.
    NextBoot,
    /// The VM is off: at its next start.
    NextStart,
}

/// One change of one VM.
#[derive(Debug, Clone, Serialize)]
struct Change {
    /// `memory`, `max_memory`, `vcpus`, `max_vcpus`, `disk vda`, `cdrom`,
    /// `boot`, `description`, `cpu`, `autostart_order`, `autostart_delay`.
    setting: String,
    from: serde_json::Value,
    to: serde_json::Value,
    when: When,
    /// Why a change of a running VM waits for its next boot.
    #[serde(skip_serializing_if = "Option::is_none")]
    why: Option<String>,
}

/// What hv-set says of one VM, after `name`, `uuid`, `action` and `ok`.
#[derive(Debug, Serialize)]
struct Set {
    changes: Vec<Change>,
    /// The VM runs and a change waits for its next boot.
    next_boot: bool,
    changed: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    iso_unverified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    dry_run: Option<bool>,
}

fn set(conn: &virt::connect::Connect, dom: &Domain, opts: &Options) -> Result<Set> {
    let libvirt = |what: String| move |e: virt::error::Error| Error::libvirt(what, &e);
    let running = dom
        .is_active()
        .map_err(libvirt("cannot tell if the VM is running".into()))?;
    let persistent = domain::is_persistent(dom)?;
    let inactive = dom
        .xml_desc(if persistent {
            virt::sys::VIR_DOMAIN_XML_INACTIVE
        } else {
            0
        })
        .map_err(libvirt("cannot read the VM's definition".into()))?;
    let live_xml = dom
        .xml_desc(0)
        .map_err(libvirt("cannot read the VM".into()))?;
    let before = xml::current(&inactive)?;
    let live = xml::current(&live_xml)?;
    let off = if running { None } else { Some(When::NextStart) };
    let mut changes = Vec::new();
    let mut wanted = opts.wanted.clone();
    let mut iso_unverified = false;

    // What could fail is checked before anything changes.
    let host_memory = conn
        .node_info()
        .map(|n| n.memory * 1024)
        .map_err(libvirt("cannot read the host's memory".into()))?;
    for m in [wanted.memory, wanted.max_memory].into_iter().flatten() {
        if m > host_memory {
            return Err(check_failed(format!(
                "{} is more than the host's memory ({})",
                human_bytes(m),
                human_bytes(host_memory)
            )));
        }
    }
    if let (Some(Some(_)), true) = (&wanted.cdrom, hv_common::hosts::is_remote_conn(conn)) {
        return Err(Error::new(
            Code::Unsupported,
            "--cdrom puts an image of this machine's hv-iso library in the drive, and the VM is on another host, where that path is not the image: make it there with hv-define (which uploads the ISO), or run hv-set on that host",
        ));
    }
    if let Some(Some(iso)) = &wanted.cdrom {
        let check = plan::iso_checked(&opts.iso_library, iso);
        match check.status {
            Status::Fail => {
                return Err(Error::new(
                    Code::CheckFailed,
                    format!("{}; fix: {}", check.message, check.hint.as_deref().unwrap_or("")),
                ))
            }
            Status::Warn if !opts.allow_unverified_iso => {
                return Err(Error::new(
                    Code::Untrusted,
                    format!("{}: hv-set puts only ISOs proven by a signature in a drive; add it with hv-iso add, or give --allow-unverified-iso", check.message),
                ))
            }
            Status::Warn => iso_unverified = true,
            Status::Pass => {}
        }
        let path = if iso.contains('/') {
            PathBuf::from(iso)
        } else {
            hv_common::iso_library::Library::new(opts.iso_library.clone()).image(iso)
        };
        wanted.cdrom = Some(Some(path.display().to_string()));
    }
    let mut grows = Vec::new();
    for g in &opts.grow {
        let info = dom.block_info(&g.target, 0).map_err(|e| {
            Error::libvirt(
                format!("the VM has no disk {} (hv-ls shows its disks)", g.target),
                &e,
            )
        })?;
        let to = if g.by {
            info.capacity.checked_add(g.bytes).ok_or_else(|| {
                Error::usage(format!("--grow {}=+{}: too large", g.target, g.bytes))
            })?
        } else {
            g.bytes
        };
        if to < info.capacity {
            return Err(check_failed(format!(
                "disk {} is {}, and hv-set never shrinks a disk (a guest's filesystem would lose its end)",
                g.target,
                human_bytes(info.capacity)
            )));
        }
        if to == info.capacity {
            continue;
        }
        let source = disk_source(&live_xml, &g.target);
        if let Some(src) = &source {
            room(conn, src, to - info.capacity, &g.target)?;
        }
        grows.push((g.target.clone(), info.capacity, to, source));
    }

    // The changes, each with when it takes effect.
    let mut push = |setting: &str,
                    from: serde_json::Value,
                    to: serde_json::Value,
                    when: When,
                    why: Option<String>| {
        if from != to {
            changes.push(Change {
                setting: setting.to_owned(),
                from,
                to,
                when,
                why,
            });
        }
    };
    let j = |v: u64| serde_json::json!(v);
    let after = xml::current(&xml::edit(&inactive, &wanted)?)?;
    if after.max_memory != before.max_memory {
        push(
            "max_memory",
            j(before.max_memory),
            j(after.max_memory),
            off.unwrap_or(When::NextBoot),
            running.then(|| "a running VM's maximum memory is fixed until it boots".to_owned()),
        );
    }
    let memory_live = running && after.memory <= live.max_memory;
    if after.memory != before.memory {
        let (when, why) = match (off, memory_live) {
            (Some(w), _) => (w, None),
            (None, true) => (When::Now, None),
            (None, false) => (
                When::NextBoot,
                Some(format!(
                    "above the running VM's maximum memory ({}): the balloon cannot give more",
                    human_bytes(live.max_memory)
                )),
            ),
        };
        push("memory", j(before.memory), j(after.memory), when, why);
    }
    if after.max_vcpus != before.max_vcpus {
        push(
            "max_vcpus",
            j(before.max_vcpus.into()),
            j(after.max_vcpus.into()),
            off.unwrap_or(When::NextBoot),
            running.then(|| "a running VM's maximum vCPUs are fixed until it boots".to_owned()),
        );
    }
    let vcpus_live = running && after.vcpus <= live.max_vcpus;
    if after.vcpus != before.vcpus {
        let (when, why) = match (off, vcpus_live) {
            (Some(w), _) => (w, None),
            (None, true) => (When::Now, None),
            (None, false) => (
                When::NextBoot,
                Some(format!(
                    "above the running VM's maximum vCPUs ({})",
                    live.max_vcpus
                )),
            ),
        };
        push(
            "vcpus",
            j(before.vcpus.into()),
            j(after.vcpus.into()),
            when,
            why,
        );
    }
    if after.cdrom != before.cdrom {
        let source = |c: &Option<(String, Option<String>)>| {
            serde_json::json!(c.as_ref().and_then(|(_, s)| s.clone()))
        };
        let (when, why) = match (off, &live.cdrom) {
            (Some(w), _) => (w, None),
            (None, Some(_)) => (When::Now, None),
            (None, None) => (
                When::NextBoot,
                Some(
                    "the VM has no drive to change the disc of: one is added to its definition"
                        .to_owned(),
                ),
            ),
        };
        push(
            "cdrom",
            source(&before.cdrom),
            source(&after.cdrom),
            when,
            why,
        );
    }
    if after.boot != before.boot {
        push(
            "boot",
            serde_json::json!(before.boot.join(",")),
            serde_json::json!(after.boot.join(",")),
            off.unwrap_or(When::NextBoot),
            running.then(|| "the firmware reads the boot order when the VM boots".to_owned()),
        );
    }
    if after.cpu != before.cpu {
        push(
            "cpu",
            serde_json::json!(before.cpu),
            serde_json::json!(after.cpu),
            off.unwrap_or(When::NextBoot),
            running.then(|| "the guest's CPU model is fixed until it boots".to_owned()),
        );
    }
    for (target, from, to, _) in &grows {
        push(
            &format!("disk {target}"),
            j(*from),
            j(*to),
            off.unwrap_or(When::Now),
            None,
        );
    }
    let old_description = description(&inactive);
    if let Some(d) = &opts.description {
        push(
            "description",
            serde_json::json!(old_description),
            serde_json::json!(d),
            off.unwrap_or(When::Now),
            None,
        );
    }
    let (persisted, tags) = domain::definition(dom)?;
    let mut new_tags = tags.tags.clone();
    if let Some(n) = opts.order {
        let old = new_tags
            .iter()
            .find(|t| t.starts_with(boot_order::ORDER_PREFIX))
            .cloned();
        new_tags.retain(|t| !t.starts_with(boot_order::ORDER_PREFIX));
        new_tags.push(format!("{}{n}", boot_order::ORDER_PREFIX));
        push(
            "autostart_order",
            serde_json::json!(
                old.and_then(|t| t[boot_order::ORDER_PREFIX.len()..].parse::<u32>().ok())
            ),
            serde_json::json!(n),
            When::Now,
            None,
        );
    }
    if let Some(d) = opts.delay {
        let old = new_tags
            .iter()
            .find(|t| t.starts_with(boot_order::DELAY_PREFIX))
            .cloned();
        new_tags.retain(|t| !t.starts_with(boot_order::DELAY_PREFIX));
        let text = format!("{}s", d.as_secs());
        new_tags.push(format!("{}{text}", boot_order::DELAY_PREFIX));
        push(
            "autostart_delay",
            serde_json::json!(old.map(|t| t[boot_order::DELAY_PREFIX.len()..].to_owned())),
            serde_json::json!(text),
            When::Now,
            None,
        );
    }
    let next_boot = changes.iter().any(|c| c.when == When::NextBoot);
    let changed = !changes.is_empty();
    // A transient VM has no definition to keep a change for its next boot.
    if let (false, Some(c)) = (
        persistent,
        changes.iter().find(|c| c.when == When::NextBoot),
    ) {
        return Err(check_failed(format!(
            "the VM is transient: it has no definition to keep its {} for the next boot (virsh dumpxml, then virsh define, makes it persistent)",
            c.setting
        )));
    }
    if opts.dry_run || !changed {
        return Ok(Set {
            changes,
            next_boot,
            changed: false,
            iso_unverified,
            dry_run: opts.dry_run.then_some(true),
        });
    }

    // The definition, in one define: all of it or none.
    let definition_changes = after != before;
    if definition_changes && persistent {
        conn.define_domain_xml(&xml::edit(&inactive, &wanted)?)
            .map_err(|e| {
                Error::libvirt_needing(
                    "libvirt refused the changed definition",
                    &e,
                    &["domain.write", "domain.save"],
                )
            })?;
    }
    // The disks, then: a grow that fails puts the definition back.
    for (target, _, to, source) in &grows {
        let grown = if running {
            dom.block_resize(target, *to, virt::sys::VIR_DOMAIN_BLOCK_RESIZE_BYTES)
                .map_err(|e| Error::libvirt(format!("cannot grow disk {target}"), &e))
        } else {
            grow_offline(conn, source.as_deref(), *to, target)
        };
        if let Err(e) = grown {
            if definition_changes && persistent {
                if let Err(back) = conn.define_domain_xml(&inactive) {
                    cli::warn(format!(
                        "could not put the definition back after the failed grow: {back}"
                    ));
                }
            }
            return Err(e);
        }
    }
    // The running VM, where it can change: a refusal leaves the change
    // for the next boot, said why.
    if running {
        let live_flag = virt::sys::VIR_DOMAIN_AFFECT_LIVE;
        for c in changes.iter_mut().filter(|c| c.when == When::Now) {
            let done = match c.setting.as_str() {
                "memory" => dom
                    .set_memory_flags(after.memory / 1024, live_flag)
                    .map_err(|e| e.message().to_owned()),
                "vcpus" => dom
                    .set_vcpus_flags(after.vcpus, live_flag)
                    .map_err(|e| e.message().to_owned()),
                "cdrom" => {
                    let live_cdrom = live_drive(
                        &live_xml,
                        after.cdrom.as_ref().map(|(t, _)| t.as_str()),
                        after.cdrom.as_ref().and_then(|(_, s)| s.as_deref()),
                    );
                    match live_cdrom {
                        Some(xml) => dom
                            .update_device_flags(&xml, live_flag)
                            .map_err(|e| e.message().to_owned()),
                        None => Err("the running VM has no drive".to_owned()),
                    }
                }
                "description" => dom
                    .set_metadata(
                        virt::sys::VIR_DOMAIN_METADATA_DESCRIPTION as i32,
                        opts.description.as_deref(),
                        None,
                        None,
                        live_flag,
                    )
                    .map_err(|e| e.message().to_owned()),
                _ => Ok(()),
            };
            if let Err(why) = done {
                c.when = When::NextBoot;
                c.why = Some(format!("the running VM refused it: {why}"));
            }
        }
    }
    if let (Some(d), true) = (&opts.description, persistent) {
        dom.set_metadata(
            virt::sys::VIR_DOMAIN_METADATA_DESCRIPTION as i32,
            Some(d),
            None,
            None,
            virt::sys::VIR_DOMAIN_AFFECT_CONFIG,
        )
        .map_err(|e| Error::libvirt("cannot set the description", &e))?;
    }
    if opts.order.is_some() || opts.delay.is_some() {
        domain::write_tags(dom, &new_tags, persisted, running)?;
    }
    Ok(Set {
        next_boot: changes.iter().any(|c| c.when == When::NextBoot),
        changes,
        changed: true,
        iso_unverified,
        dry_run: None,
    })
}

fn check_failed(message: String) -> Error {
    Error::new(Code::CheckFailed, format!("{message}; nothing was changed"))
}

/// The file behind a disk target, from the domain XML.
fn disk_source(xml: &str, target: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    doc.descendants()
        .filter(|n| n.has_tag_name("disk"))
        .find(|d| {
            d.children()
                .any(|c| c.has_tag_name("target") && c.attribute("dev") == Some(target))
        })?
        .children()
        .find(|c| c.has_tag_name("source"))?
        .attribute("file")
        .map(str::to_owned)
}

/// The live CD-ROM element of drive `target` with `source` in it, for a
/// media change.
fn live_drive(xml: &str, target: Option<&str>, source: Option<&str>) -> Option<String> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let target = target?;
    let disk = doc.descendants().find(|n| {
        n.has_tag_name("disk")
            && n.children()
                .any(|c| c.has_tag_name("target") && c.attribute("dev") == Some(target))
    })?;
    Some(xml::cdrom_xml(disk, source, false))
}

/// `<description>`, if any.
fn description(xml: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    doc.root_element()
        .children()
        .find(|c| c.has_tag_name("description"))
        .and_then(|d| d.text().map(str::to_owned))
}

/// Room for a disk to grow by `need`: in its pool (through libvirt, on any
/// host), else in its directory on this machine.
fn room(conn: &virt::connect::Connect, source: &str, need: u64, target: &str) -> Result<()> {
    let dir = std::path::Path::new(source)
        .parent()
        .unwrap_or(std::path::Path::new("/"));
    let available = match storage::pool_of_dir(conn, dir) {
        Some(pool) => Some(pool.available),
        None if !hv_common::hosts::is_remote_conn(conn) => {
            plan::dir_space(dir).ok().map(|(_, _, a)| a)
        }
        None => None,
    };
    match available {
        Some(a) if a < need => Err(check_failed(format!(
            "disk {target} would grow by {}, and {} has {} free",
            human_bytes(need),
            dir.display(),
            human_bytes(a)
        ))),
        _ => Ok(()),
    }
}

/// Grows a stopped VM's disk: through its pool (libvirt, on any host),
/// else qemu-img on this machine.
fn grow_offline(
    conn: &virt::connect::Connect,
    source: Option<&str>,
    to: u64,
    target: &str,
) -> Result<()> {
    let Some(source) = source else {
        return Err(Error::new(
            Code::Unsupported,
            format!("disk {target} is not a file hv-set can grow"),
        ));
    };
    if let Ok(vol) = conn.lookup_storage_vol_by_path(source) {
        return vol
            .resize(to, 0)
            .map_err(|e| Error::libvirt(format!("cannot grow disk {target}"), &e));
    }
    if hv_common::hosts::is_remote_conn(conn) {
        return Err(Error::new(Code::Unsupported, format!("disk {target} ({source}) is in no storage pool of its host, so hv-set cannot grow it from here")));
    }
    let format = hv_common::making::image_format(source)?;
    hv_common::making::qemu_img(&["resize", "-q", "-f", format, source, &to.to_string()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grow_takes_a_target_and_a_size_to_or_by() {
        assert_eq!(
            grow("vda=+20G").unwrap(),
            Grow {
                target: "vda".into(),
                by: true,
                bytes: 20 << 30
            }
        );
        assert!(!grow("sdb=100G").unwrap().by);
        assert!(grow("vda").unwrap_err().contains("TARGET=+SIZE"));
        assert!(grow("=+1G").is_err());
        assert!(boot("cdrom,hd").is_ok());
        assert!(boot("usb").unwrap_err().contains("hd, cdrom"));
    }

    #[test]
    fn every_flag_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "hv-set",
            "web1",
            "--memory",
            "2G",
            "--max-memory",
            "4G",
            "--vcpus",
            "2",
            "--max-vcpus",
            "4",
            "--grow",
            "vda=+1G",
            "--cdrom",
            "d.iso",
            "--boot",
            "cdrom,hd",
            "--description",
            "x",
            "--cpu",
            "host-model",
            "--autostart-order",
            "2",
            "--autostart-delay",
            "30s",
        ])
        .unwrap();
        assert_eq!(cli.boot, Some(BootOrder(vec!["cdrom".into(), "hd".into()])));
        assert_eq!(cli.cpu, Some(CpuMode::HostModel));
    }

    #[test]
    fn the_record_is_the_documented_one() {
        let s = Set {
            changes: vec![Change {
                setting: "memory".into(),
                from: serde_json::json!(1),
                to: serde_json::json!(2),
                when: When::NextBoot,
                why: Some("w".into()),
            }],
            next_boot: true,
            changed: true,
            iso_unverified: true,
            dry_run: Some(true),
        };
        let record = hv_common::targets::success_record(
            &hv_common::targets::VmRef::named("web1", "u"),
            "set",
            &s,
        );
        hv_testbench::assert_documented(&record, "lifecycle.md", "### hv-set records");
    }
}
