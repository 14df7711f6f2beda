//! hv-rm: undefine VMs in bulk without the ways that goes wrong by hand. It
//! asks once for the whole batch (and in a pipe acts only with `--yes`),
//! refuses running VMs unless told to force them off, removes snapshot,
//! checkpoint and NVRAM metadata with the definition so the undefine cannot
//! fail half-way, and deletes only the disk files the domain itself lists
//! that no other domain uses, directly or as a backing file.

use clap::Parser;
use hv_common::bulk::{self, Action};
use hv_common::cli::{self, ActionArgs};
use hv_common::domain::{self, Disk};
use hv_common::hosts::{Host, Scope};
use hv_common::lifecycle;
use hv_common::manual::Manual;
use hv_common::output::{self, col, Column, Show};
use hv_common::targets::Input;
use hv_common::{time, Code, Error, Exit, Result};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use virt::connect::Connect;
use virt::domain::Domain;

#[derive(Debug, Parser)]
#[command(
    name = "hv-rm",
    version,
    about = "Undefine VMs, safely, optionally with their disks",
    long_about = "Undefine VMs, several at once. Running VMs are refused unless --force, which forces \
        them off first. With --remove-storage their disk files go too, but only files the domain \
        lists as disks, never CD-ROMs or shared/read-only media, and never a file another domain \
        uses (directly or as a backing file); over several hosts (--hosts, -c repeated), a file \
        a VM of another of the run's hosts names is kept too, and nothing is deleted while one of \
        them does not answer.\n\n\
        At a terminal hv-rm asks once for the whole batch; when stdin is not a terminal it acts \
        only with --yes. --dry-run shows what would go and needs no confirmation."
)]
pub struct Cli {
    /// VMs to remove, by name or UUID [default: records or names from stdin]
    #[arg(value_name = "VM")]
    pub vms: Vec<String>,

    /// Force running VMs off first instead of refusing them
    #[arg(long)]
    pub force: bool,

    /// Also delete the VMs' disk files (see DESCRIPTION for what is kept)
    #[arg(long)]
    pub remove_storage: bool,

    /// Do not ask; required when stdin is not a terminal
    #[arg(short = 'y', long)]
    pub yes: bool,

    /// How long each VM may take before it is reported as timed out (90, 90s, 5m, 1h30m)
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = time::duration)]
    pub timeout: Duration,

    #[command(flatten)]
    pub args: ActionArgs,
}

pub const MANUAL: Manual = Manual {
    exit_status: hv_common::manual::EXIT_STATUS,
    environment: hv_common::manual::ENVIRONMENT,
    examples: &[
        ("Remove a VM and its disks, asking first:", "hv-rm --remove-storage scratch1"),
        ("See what removing every VM tagged tmp would delete:", "hv-ls --tag tmp | hv-rm --remove-storage --dry-run"),
        ("Then do it, from a script:", "hv-ls --tag tmp | hv-rm --remove-storage --force --yes"),
    ],
    notes: &[
        "Result records carry name, uuid, action (\"rm\"), ok, stopped (it was forced off), removed_storage (paths deleted, or that would be with --dry-run), kept_storage (path and reason for each disk left in place), and dry_run with --dry-run.",
        "A disk file is deleted only after the domain is undefined, through its storage pool when it belongs to one. Backing files of a disk are kept. If a deletion fails the record has ok false with error code io_error and the paths that remain.",
    ],
};

static COLUMNS: [Column; 4] = [
    col("name", "name", Show::Plain),
    col("ok", "ok", Show::Plain),
    col("removed", "removed_storage", Show::Join(None)),
    col("kept", "kept_storage", Show::Join(Some("path"))),
];

#[derive(Debug, Clone, Copy)]
struct Plan {
    force: bool,
    remove_storage: bool,
    dry_run: bool,
}

/// Every domain (uuid, how to name it) that uses each file as a disk or
/// backing file, computed once per run. Files are told apart by device and
/// inode, not by how a path spells them (`/images/../base.qcow2`, a
/// symlink). Over several hosts, the other hosts' VMs count too: storage
/// shared between hosts (NFS) holds one host's VM's base and another's
/// overlay.
#[derive(Default)]
struct Users {
    by_file: HashMap<String, Vec<(String, String)>>,
    /// A disk whose backing chain qemu-img could not read: (VM uuid, VM
    /// name, disk, why). Any file may be its base, so none of another VM's
    /// is deleted.
    unknown_chains: Vec<(String, String, String, String)>,
    /// Another host of the run that did not answer, and why: its VMs may
    /// use any file, so none is deleted.
    unreached: Vec<(String, String)>,
}

impl Users {
    fn of(&self, path: &str) -> &[(String, String)] {
        self.by_file.get(&file_key(path)).map_or(&[], Vec::as_slice)
    }

    fn add(&mut self, path: &str, user: &(String, String)) {
        let list = self.by_file.entry(file_key(path)).or_default();
        if !list.contains(user) {
            list.push(user.clone());
        }
    }
}

/// The file's identity: device and inode, or the path itself if it
/// cannot be read.
fn file_key(path: &str) -> String {
    hv_common::fsutil::file_id(path)
        .map_or_else(|| path.to_owned(), |(dev, ino)| format!("{dev}:{ino}"))
}

pub fn run(cli: Cli) -> Result<Exit> {
    let plan = Plan {
        force: cli.force,
        remove_storage: cli.remove_storage,
        dry_run: cli.args.dry_run,
    };
    let inputs: Vec<Input> = bulk::inputs(&cli.vms, "hv-ls --tag tmp | hv-rm --yes")?.collect();
    if !plan.dry_run && !cli.yes {
        confirm(&inputs, plan)?;
    }
    let users: Arc<OnceLock<Result<Users>>> = Arc::new(OnceLock::new());
    // The run's other machines, whose VMs may share this one's files.
    let others: Vec<Host> = match cli.args.connect.scope()? {
        Scope::Named { hosts, .. } => hosts
            .into_iter()
            .filter(|h| hv_common::hosts::is_remote(&h.uri))
            .collect(),
        Scope::Default(_) => Vec::new(),
    };
    let timeout = cli.args.connect.connect_timeout;
    let action = Action {
        name: "rm",
        columns: &COLUMNS,
        item_timeout: cli.timeout,
    };
    bulk::act(
        inputs.into_iter(),
        &cli.args,
        action,
        move |conn, dom, _| {
            remove(conn, dom, plan, &users, |u| {
                other_hosts_users(u, &others, timeout);
            })
        },
    )
}

/// Asks once at a terminal; anywhere else, without --yes, refuses the whole batch.
fn confirm(inputs: &[Input], plan: Plan) -> Result<()> {
    let vms: Vec<String> = inputs
        .iter()
        .filter_map(|i| match i {
            Input::Vm(vm) => Some(vm.label()),
            _ => None,
        })
        .collect();
    if vms.is_empty() {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::usage(format!(
            "refusing to remove {} VM(s) without confirmation: stdin is not a terminal; add --yes (check first with --dry-run)",
            vms.len()
        )));
    }
    let what = if plan.remove_storage {
        " and their disk files"
    } else {
        ""
    };
    eprint!(
        "{}: remove {} VM(s){what}: {}? [y/N] ",
        cli::program(),
        vms.len(),
        vms.join(", ")
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Error::io("cannot read the answer", e))?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES") {
        Ok(())
    } else {
        Err(Error::new(Code::Cancelled, "nothing removed"))
    }
}

fn remove(
    conn: &Connect,
    dom: &Domain,
    plan: Plan,
    users: &OnceLock<Result<Users>>,
    elsewhere: impl FnOnce(&mut Users),
) -> Result<Map<String, Value>> {
    // Files are looked at and deleted on the machine hv-rm runs on: on
    // another host's VM that would read, and delete, this machine's files
    // of the same path. Nothing is done to that VM.
    if plan.remove_storage {
        if let Some(uri) = conn.uri().ok().filter(|u| hv_common::hosts::is_remote(u)) {
            return Err(Error::new(
                Code::Unsupported,
                format!("--remove-storage works on the machine hv-rm runs on, and this VM is on {uri}: run it there (e.g. `ssh root@HOST hv-rm --remove-storage NAME`), or drop --remove-storage to only undefine it; nothing was done"),
            ));
        }
    }
    let running = lifecycle::state(dom)?.state.is_active();
    if running && !plan.force {
        return Err(Error::new(
            Code::InvalidState,
            "it is running; stop it first (hv-stop) or add --force to force it off",
        ));
    }
    let (persistent, definition) = domain::definition(dom)?;
    let disks: Vec<Disk> = definition
        .disks
        .into_iter()
        .map(|d| with_file(conn, d))
        .collect();
    let uuid = dom.uuid_string().unwrap_or_default();
    let (doomed, kept) = if plan.remove_storage {
        let users = users
            .get_or_init(|| {
                let mut found = disk_users(conn)?;
                elsewhere(&mut found);
                Ok(found)
            })
            .as_ref()
            .map_err(Clone::clone)?;
        sort_disks(&disks, users, &uuid, definition.seed.as_deref())
    } else {
        (
            Vec::new(),
            disks
                .iter()
                .filter_map(|d| d.source.clone())
                .map(|p| (p, "--remove-storage not given".to_owned()))
                .collect(),
        )
    };
    if !plan.dry_run {
        // Given up on at its timeout, it must not remove anything after all.
        hv_common::runner::point_of_no_return()?;
        if running {
            dom.destroy().map_err(|e| {
                Error::libvirt_needing("could not force it off", &e, &["domain.stop"])
            })?;
        }
        if persistent {
            undefine(dom)?;
        }
    }
    let failed = if plan.dry_run {
        Vec::new()
    } else {
        delete_files(conn, &doomed)
    };
    let removed = Removed {
        stopped: running,
        removed_storage: doomed
            .iter()
            .filter(|p| !failed.iter().any(|(f, _)| f == *p))
            .collect(),
        kept_storage: kept
            .iter()
            .map(|(path, reason)| KeptFile { path, reason })
            .collect(),
        dry_run: plan.dry_run.then_some(true),
    };
    if let Some((path, why)) = failed.first() {
        return Err(Error::new(
            Code::Io,
            format!(
                "undefined, but {path} could not be deleted: {why} ({} file(s) remain)",
                failed.len()
            ),
        )
        .with_done(&removed));
    }
    Ok(output::to_record(&removed))
}

/// What hv-rm did to one VM, after `name`, `uuid`, `action` and `ok`
/// (docs/records.md, "hv-rm"). A VM whose files could not all be deleted
/// is a failure that still says what was removed.
#[derive(Debug, Serialize)]
struct Removed<'a> {
    /// Whether it was forced off first (--force).
    stopped: bool,
    /// Disk files deleted.
    removed_storage: Vec<&'a String>,
    /// Disk files left in place, each with why.
    kept_storage: Vec<KeptFile<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dry_run: Option<bool>,
}

#[derive(Debug, Serialize)]
struct KeptFile<'a> {
    path: &'a str,
    reason: &'a str,
}

fn undefine(dom: &Domain) -> Result<()> {
    domain::undefine_all(dom).map_err(|e| {
        Error::libvirt_needing("libvirt refused to undefine it", &e, &["domain.delete"])
    })
}

/// A storage volume disk (`pool/volume`) with its file's path as its
/// source, as libvirt resolves it; file disks as they are.
fn with_file(conn: &Connect, mut disk: Disk) -> Disk {
    if disk.kind == "volume" {
        let resolved = disk
            .source
            .as_deref()
            .and_then(|s| s.split_once('/'))
            .and_then(|(pool, vol)| {
                let pool = conn.lookup_storage_pool_by_name(pool).ok()?;
                pool.lookup_storage_vol_by_name(vol).ok()?.path().ok()
            });
        if let Some(path) = resolved {
            disk.source = Some(path);
            disk.kind = "file".into();
        }
    }
    disk
}

/// Splits the domain's disks into files to delete and (path, reason) to keep.
fn sort_disks(
    disks: &[Disk],
    users: &Users,
    own_uuid: &str,
    own_seed: Option<&str>,
) -> (Vec<String>, Vec<(String, String)>) {
    let mut doomed = Vec::new();
    let mut kept = Vec::new();
    for disk in disks {
        let Some(path) = disk.source.clone() else {
            continue;
        };
        // The VM's own unreadable image (a damaged one, often why it goes)
        // is no other VM's base.
        let unknown = users
            .unknown_chains
            .iter()
            .find(|(uuid, ..)| uuid != own_uuid);
        // The cloud-init seed hv-define wrote is the VM's own, though a CD-ROM.
        let seed = own_seed == Some(path.as_str()) && disk.device == "cdrom";
        let reason = if disk.device != "disk" && !seed {
            Some(format!("a {} is media, not the VM's own disk", disk.device))
        } else if disk.shared && !seed {
            Some("marked read-only or shareable".to_owned())
        } else if disk.kind == "volume" {
            Some("a storage volume libvirt could not find".to_owned())
        } else if disk.kind != "file" {
            Some(format!("a {} disk, not a file", disk.kind))
        } else if let Some((_, other)) = users.of(&path).iter().find(|(uuid, _)| uuid != own_uuid) {
            Some(format!("also used by {other}"))
        } else if let Some((host, why)) = users.unreached.first() {
            Some(format!("host {host} {why}: its VMs may use it"))
        } else if !std::path::Path::new(&path).is_absolute() {
            Some("a relative path".to_owned())
        } else if !std::path::Path::new(&path).is_file() {
            Some("not a regular file".to_owned())
        } else if let Some((_, vm, other_disk, why)) = unknown {
            Some(format!("it may be a base of VM '{vm}': the backing chain of its disk {other_disk} is unknown ({why}; as root qemu-img can read every image)"))
        } else {
            None
        };
        match reason {
            Some(why) => kept.push((path, why)),
            None => doomed.push(path),
        }
    }
    (doomed, kept)
}

/// Every path any domain uses as a disk or backing file, with its users.
fn disk_users(conn: &Connect) -> Result<Users> {
    let mut users = Users::default();
    // A stopped domain's live and stored XML name the same disks, and linked
    // clones share a base: each source's backing chain is probed once.
    let mut chains: HashMap<String, std::result::Result<Vec<String>, String>> = HashMap::new();
    let all = conn
        .list_all_domains(0)
        .map_err(|e| Error::libvirt("cannot list domains", &e))?;
    for dom in &all {
        let user = (
            dom.uuid_string().unwrap_or_default(),
            format!("VM '{}'", dom.name().unwrap_or_default()),
        );
        for flags in [0, virt::sys::VIR_DOMAIN_XML_INACTIVE] {
            let Ok(xml) = dom.xml_desc(flags) else {
                continue;
            };
            let Ok(parsed) = domain::parse(&xml) else {
                continue;
            };
            for disk in parsed.disks {
                let disk = with_file(conn, disk);
                let Some(source) = disk.source else { continue };
                let probed = disk.kind == "file" && std::path::Path::new(&source).is_file();
                let chain = match probed {
                    true => chains
                        .entry(source.clone())
                        .or_insert_with(|| backing_files(&source)),
                    false => &Ok(Vec::new()),
                };
                match chain {
                    Ok(chain) => chain.iter().for_each(|path| users.add(path, &user)),
                    // Gone meanwhile (that VM's disk was removed): no chain.
                    Err(_) if !std::path::Path::new(&source).exists() => {}
                    Err(why) => {
                        let unknown = (
                            user.0.clone(),
                            user.1.clone(),
                            disk.target.clone(),
                            why.clone(),
                        );
                        if !users.unknown_chains.contains(&unknown) {
                            users.unknown_chains.push(unknown);
                        }
                    }
                }
                for path in disk.backing.iter().chain([&source]) {
                    users.add(path, &user);
                }
            }
        }
    }
    Ok(users)
}

/// A VM of another host: its UUID, name and the paths its disks name.
type DiskPaths = (String, String, Vec<String>);

/// Adds the disks of the VMs of the run's other hosts (another machine
/// each) to `users`, by path as their XML names them: on storage shared
/// with this machine that is the same file. A path that is only the same
/// spelling of another machine's own file keeps this machine's file too,
/// which errs on the side of keeping. A volume disk is resolved to its
/// path through that host's libvirt; a path that exists here is probed
/// for its backing chain here (a stopped linked clone's XML names no
/// base), and a chain that cannot be read keeps everything.
fn other_hosts_users(users: &mut Users, others: &[Host], timeout: Duration) {
    let found: Vec<(String, Result<Vec<DiskPaths>>)> = std::thread::scope(|s| {
        let threads: Vec<_> = others
            .iter()
            .map(|h| {
                s.spawn(move || {
                    let conn = h.open(hv_common::connect::Access::ReadOnly, timeout)?;
                    let all = conn
                        .list_all_domains(0)
                        .map_err(|e| Error::libvirt("cannot list domains", &e))?;
                    let mut vms = Vec::new();
                    for dom in &all {
                        let mut paths = Vec::new();
                        for flags in [0, virt::sys::VIR_DOMAIN_XML_INACTIVE] {
                            let parsed = dom
                                .xml_desc(flags)
                                .ok()
                                .and_then(|x| domain::parse(&x).ok());
                            for disk in parsed.map(|p| p.disks).unwrap_or_default() {
                                let disk = with_file(&conn, disk);
                                paths.extend(disk.backing.iter().cloned().chain(disk.source));
                            }
                        }
                        vms.push((
                            dom.uuid_string().unwrap_or_default(),
                            dom.name().unwrap_or_default(),
                            paths,
                        ));
                    }
                    Ok(vms)
                })
            })
            .collect();
        others
            .iter()
            .zip(threads)
            .map(|(h, t)| {
                let got = t
                    .join()
                    .unwrap_or_else(|_| Err(Error::internal("reading a host panicked")));
                (h.name.clone(), got)
            })
            .collect()
    });
    for (host, got) in found {
        match got {
            Ok(vms) => {
                for (uuid, name, paths) in vms {
                    let user = (uuid, format!("VM '{name}' on host {host}"));
                    for path in paths {
                        if std::path::Path::new(&path).is_file() {
                            match backing_files(&path) {
                                Ok(chain) => chain.iter().for_each(|p| users.add(p, &user)),
                                Err(why) => users.unreached.push((
                                    host.clone(),
                                    format!("has VM '{name}', whose disk {path} has a backing chain hv-rm cannot read ({why})"),
                                )),
                            }
                        }
                        users.add(&path, &user);
                    }
                }
            }
            Err(e) => users
                .unreached
                .push((host, format!("did not answer ({})", e.message))),
        }
    }
}

/// The backing chain below an image, as qemu-img sees it (the domain XML of
/// a stopped VM does not show it). `-U`: the image may be in use.
fn backing_files(path: &str) -> std::result::Result<Vec<String>, String> {
    let out = hv_common::cli::child_command("qemu-img")
        .args(["info", "--backing-chain", "-U", "--output=json", path])
        .output()
        .map_err(|e| format!("cannot run qemu-img: {e}; install qemu-utils"))?;
    let chain: Vec<Value> = serde_json::from_slice(&out.stdout).map_err(|_| {
        let err = String::from_utf8_lossy(&out.stderr);
        format!(
            "qemu-img info: {}",
            err.lines().next().unwrap_or("no answer")
        )
    })?;
    Ok(chain
        .iter()
        .skip(1)
        .filter_map(|img| img["filename"].as_str().map(str::to_owned))
        .collect())
}

/// Deletes files, through their storage pool when they belong to one.
/// Returns those that could not be deleted, with why.
fn delete_files(conn: &Connect, paths: &[String]) -> Vec<(String, String)> {
    let mut failed = Vec::new();
    for path in paths {
        let result = match conn.lookup_storage_vol_by_path(path) {
            Ok(vol) => vol.delete(0).map_err(|e| e.message().to_owned()),
            Err(_) if !std::path::Path::new(path).is_absolute() => {
                Err("not an absolute path; not deleted".to_owned())
            }
            Err(_) => std::fs::remove_file(path).map_err(|e| e.to_string()),
        };
        if let Err(why) = result {
            failed.push((path.clone(), why));
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(device: &str, kind: &str, source: &str, shared: bool) -> Disk {
        Disk {
            target: "vda".into(),
            device: device.into(),
            kind: kind.into(),
            source: Some(source.into()),
            shared,
            ..Disk::default()
        }
    }

    #[test]
    fn only_own_unshared_file_disks_are_doomed() {
        let dir = std::env::temp_dir().join(format!("hv-rm-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let own = dir.join("own.qcow2");
        let base = dir.join("base.qcow2");
        std::fs::write(&own, b"x").unwrap();
        std::fs::write(&base, b"x").unwrap();
        let (own, base) = (own.display().to_string(), base.display().to_string());
        let mut users = Users::default();
        let me = ("me".to_string(), "self".to_string());
        users.add(&own, &me);
        users.add(&base, &me);
        // The clone names its base by another spelling of the same file.
        let spelled = format!(
            "{}/../{}/base.qcow2",
            dir.display(),
            dir.file_name().unwrap().to_str().unwrap()
        );
        users.add(&spelled, &("other-uuid".into(), "VM 'clone'".into()));
        let disks = vec![
            disk("disk", "file", &own, false),
            disk("disk", "file", &base, false),
            disk("cdrom", "file", "/isos/debian.iso", true),
            disk("disk", "block", "/dev/sdz", false),
            disk("disk", "file", "/shared/data.img", true),
        ];
        let (doomed, kept) = sort_disks(&disks, &users, "me", None);
        assert_eq!(doomed, vec![own.clone()]);
        let reasons: Vec<&str> = kept.iter().map(|(_, r)| r.as_str()).collect();
        assert_eq!(reasons[0], "also used by VM 'clone'");
        let mut far = Users {
            unreached: vec![("h2".into(), "did not answer (no answer within 30s)".into())],
            ..Users::default()
        };
        let (doomed, kept) = sort_disks(&disks[..1], &far, "me", None);
        assert!(doomed.is_empty(), "a silent host may use any file");
        assert!(kept[0].1.starts_with("host h2 did not answer"), "{kept:?}");
        far.unreached.clear();
        far.add(&own, &("u2".into(), "VM 'x' on host h2".into()));
        let (_, kept) = sort_disks(&disks[..1], &far, "me", None);
        assert_eq!(kept[0].1, "also used by VM 'x' on host h2");
        assert!(reasons[1].contains("cdrom"));
        assert!(reasons[2].contains("block"));
        assert!(reasons[3].contains("read-only"));

        let unreadable = |uuid: &str| {
            let why = "qemu-img info: Permission denied".to_string();
            (uuid.to_string(), "clone".into(), "vda".into(), why)
        };
        users.unknown_chains.push(unreadable("me"));
        let (doomed, _) = sort_disks(&disks[..1], &users, "me", None);
        assert_eq!(
            doomed,
            vec![own.clone()],
            "its own unreadable image blocks nothing"
        );
        users.unknown_chains.push(unreadable("other-uuid"));
        let (doomed, kept) = sort_disks(&disks[..1], &users, "me", None);
        assert!(
            doomed.is_empty(),
            "another VM's unknown chain keeps every disk"
        );
        assert!(kept[0].1.contains("unknown"), "{kept:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[cfg(test)]
mod record_tests {
    use super::*;

    /// A failed removal keeps what it removed: every field at once.
    #[test]
    fn the_record_is_the_documented_one() {
        let gone = "/var/lib/a.qcow2".to_owned();
        let removed = Removed {
            stopped: true,
            removed_storage: vec![&gone],
            kept_storage: vec![KeptFile {
                path: "/srv/base.qcow2",
                reason: "a backing file",
            }],
            dry_run: Some(true),
        };
        let err = Error::new(Code::Io, "x").with_done(&removed);
        let record = hv_common::targets::failure_record(
            &hv_common::targets::VmRef::named("web1", "u"),
            Some("rm"),
            &err,
        );
        hv_testbench::assert_documented(&record, "lifecycle.md", "### hv-rm records");
    }
}
