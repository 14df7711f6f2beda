//! The libvirt checkpoints incremental reads rest on: naming them, making
//! them, and removing them. A checkpoint is a point in time plus a dirty
//! bitmap per qcow2 disk; the next backup to the same repository reads only
//! the chunks the bitmap marks (decide.rs checks the chain before it is
//! trusted; read.rs reads through it).
//!
//! What a reader must know to trust this stage:
//!
//! - A running VM's checkpoint is created by libvirt atomically with the
//!   backup job, so the bitmap starts at exactly the instant the job reads.
//!   It must not be changed before that job has ended: libvirt 11.3 can
//!   then keep a job that never ends ([`NewCheckpoint`] waits for it).
//! - libvirt creates and deletes checkpoints only on running domains. For a
//!   stopped VM hv does what libvirt would: it adds the bitmap to each qcow2
//!   image with `qemu-img bitmap` (whose write lock keeps the VM from
//!   starting meanwhile) and redefines the checkpoint to libvirt, which then
//!   carries it on when the VM starts; qemu-nbd exports the old bitmap for
//!   the read. Every bitmap libvirt makes records all writes since it was
//!   created, so a stopped VM's chain and a running VM's are one chain.
//! - A checkpoint made by a backup that then fails is removed again, so
//!   failing nights do not pile up bitmaps every guest write updates.
//! - Checkpoint names carry a per-repository prefix (`hv-<16 hex of the
//!   repository id>-`), so two repositories never share or delete each
//!   other's chain. After a backup commits, every checkpoint of its prefix
//!   but the new one is deleted (libvirt merges their bitmaps into older
//!   checkpoints, so other tools' chains stay correct); a checkpoint left by
//!   a killed run goes the same way.
//! - A stopped VM's images are changed where they lie: on another host,
//!   qemu-img runs there over ssh (hv_common::remote).

use crate::ffi;
use hv_common::domain::{xml_escape, Disk};
use hv_common::remote::Place;
use hv_common::time;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use virt::domain::Domain;

/// This repository's checkpoint name prefix.
pub fn prefix(repo_id: &str) -> String {
    format!("hv-{}-", &repo_id[..repo_id.len().min(16)])
}

/// A new checkpoint name: `hv-<repo>-<UTC time>-<8 hex>`.
pub fn new_name(repo_id: &str) -> hv_common::Result<String> {
    let salt = crate::crypt::random_hex::<4>()?;
    Ok(format!(
        "{}{}-{salt}",
        prefix(repo_id),
        time::compact(time::now())
    ))
}

/// Only qcow2 images can keep a persistent dirty bitmap.
pub fn can_track(disk: &Disk) -> bool {
    disk.format.as_deref() == Some("qcow2")
}

/// The `<domaincheckpoint>` for a backup of `tracked` (targets); every other
/// disk of the domain gets `checkpoint='no'`. A redefinition (`created`)
/// also names the time and each bitmap, as libvirt needs then.
pub fn checkpoint_xml(name: &str, all: &[Disk], tracked: &[&str], created: Option<i64>) -> String {
    let name = xml_escape(name);
    let mut out =
        format!("<domaincheckpoint><name>{name}</name><description>hv-backup</description>");
    if let Some(created) = created {
        out.push_str(&format!("<creationTime>{created}</creationTime>"));
    }
    out.push_str("<disks>");
    for disk in all {
        let how = match (tracked.contains(&disk.target.as_str()), created) {
            (true, Some(_)) => format!("bitmap' bitmap='{name}"),
            (true, None) => "bitmap".to_owned(),
            (false, _) => "no".to_owned(),
        };
        out.push_str(&format!(
            "<disk name='{}' checkpoint='{how}'/>",
            xml_escape(&disk.target)
        ));
    }
    out.push_str("</disks></domaincheckpoint>");
    out
}

/// This repository's checkpoints on one domain.
pub struct Chain {
    pub prefix: String,
    pub ours: Vec<String>,
    /// Set when the checkpoints could not be listed.
    pub unlisted: Option<String>,
}

impl Chain {
    pub fn load(dom: &Domain, repo_id: &str) -> Chain {
        let prefix = prefix(repo_id);
        match ffi::checkpoint_names(dom) {
            Ok(names) => Chain {
                ours: names
                    .into_iter()
                    .filter(|n| n.starts_with(&prefix))
                    .collect(),
                prefix,
                unlisted: None,
            },
            Err(e) => Chain {
                prefix,
                ours: Vec::new(),
                unlisted: Some(e.message().to_string()),
            },
        }
    }
}

/// A checkpoint a backup made: by a running VM's backup job, or by hand for
/// a stopped VM. Dropped before [`Self::keep`], it is removed again, so
/// failing backups do not pile up bitmaps that every write of the VM then
/// updates. A running VM's must drop after its job has ended.
pub struct NewCheckpoint<'a> {
    dom: &'a Domain,
    /// A stopped VM's disks, whose images hold the bitmaps, and where they are.
    stopped: Option<(&'a [Disk], Place)>,
    /// Whether the job that made it has ended; none for a stopped VM's.
    job_ended: Option<Arc<AtomicBool>>,
    pub name: String,
    kept: bool,
}

impl<'a> NewCheckpoint<'a> {
    /// The checkpoint a running VM's backup job created with it; removed
    /// only once `job_ended`.
    pub fn made_by_job(
        dom: &'a Domain,
        name: &str,
        job_ended: Arc<AtomicBool>,
    ) -> NewCheckpoint<'a> {
        NewCheckpoint {
            dom,
            stopped: None,
            job_ended: Some(job_ended),
            name: name.to_owned(),
            kept: false,
        }
    }

    /// The backup committed: the checkpoint stays for the next one.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for NewCheckpoint<'_> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        if self
            .job_ended
            .as_ref()
            .is_some_and(|e| !e.load(Ordering::SeqCst))
        {
            hv_common::cli::warn(format!(
                "checkpoint {} of the failed backup stays while its job may still run; the next backup removes it",
                self.name
            ));
            return;
        }
        let deleted = match self.stopped {
            Some((disks, ref place)) => delete_offline(place, self.dom, &self.name, disks),
            None => ffi::delete_checkpoint(self.dom, &self.name, false)
                .map_err(|e| e.message().to_owned()),
        };
        if let Err(e) = deleted {
            hv_common::cli::warn(format!(
                "cannot remove checkpoint {} of the failed backup: {e}; the next backup does",
                self.name
            ));
        }
    }
}

/// Gives the stopped VM `dom` the checkpoint `name` on its `tracked`
/// disks; undone if any step fails.
pub fn create_offline<'a>(
    place: &Place,
    dom: &'a Domain,
    name: &str,
    all: &'a [Disk],
    tracked: &[&Disk],
) -> hv_common::Result<NewCheckpoint<'a>> {
    let io = |message: String| hv_common::Error::new(hv_common::Code::Io, message);
    let mut added: Vec<&Disk> = Vec::new();
    let undo = |added: &[&Disk]| {
        for disk in added {
            let _ = bitmap(place, disk, "--remove", name);
        }
    };
    for disk in tracked {
        if let Err(e) = bitmap(place, disk, "--add", name) {
            undo(&added);
            return Err(io(e));
        }
        added.push(disk);
    }
    let targets: Vec<&str> = tracked.iter().map(|d| d.target.as_str()).collect();
    let xml = checkpoint_xml(name, all, &targets, Some(time::now()));
    ffi::redefine_checkpoint(dom, &xml).map_err(|e| {
        undo(&added);
        hv_common::Error::libvirt(format!("libvirt would not take checkpoint {name}"), &e)
    })?;
    Ok(NewCheckpoint {
        dom,
        stopped: Some((all, place.clone())),
        job_ended: None,
        name: name.to_owned(),
        kept: false,
    })
}

/// Checks that the image at `path` itself holds `bitmap`, recording and
/// consistent. qemu-nbd would otherwise export a bitmap of that name from
/// a backing file (an image moved aside under a new overlay), which never
/// saw the overlay's writes, or refuse one QEMU never saved.
pub fn bitmap_in_image(
    place: &Place,
    path: &std::path::Path,
    bitmap: &str,
) -> hv_common::Result<()> {
    let io = |message: String| hv_common::Error::new(hv_common::Code::Io, message);
    let info = ["info", "-U", "--output=json"].map(OsStr::new);
    let cmd = place.command("qemu-img", &[&info[..], &[path.as_os_str()]].concat());
    let out = place.output(cmd, "qemu-img (install qemu-utils)")?;
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|_| {
        io(format!(
            "qemu-img cannot read {}{}: {}",
            path.display(),
            place.shown(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    })?;
    let listed = info["format-specific"]["data"]["bitmaps"].as_array();
    let found = listed
        .into_iter()
        .flatten()
        .find(|b| b["name"] == bitmap)
        .ok_or_else(|| {
            io(format!(
                "{} holds no bitmap {bitmap} (replaced?)",
                path.display()
            ))
        })?;
    let flags: Vec<&str> = found["flags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str())
        .collect();
    if flags.contains(&"in-use") {
        return Err(io(format!(
            "bitmap {bitmap} in {} was never saved (QEMU stopped without closing it)",
            path.display()
        )));
    }
    if !flags.contains(&"auto") {
        return Err(io(format!(
            "bitmap {bitmap} in {} is disabled",
            path.display()
        )));
    }
    Ok(())
}

/// `qemu-img bitmap OP` on a stopped VM's qcow2 image.
fn bitmap(place: &Place, disk: &Disk, op: &str, bitmap: &str) -> Result<(), String> {
    let target = &disk.target;
    let path = disk
        .source
        .as_deref()
        .ok_or_else(|| format!("disk {target} has no image file"))?;
    let args = ["bitmap", op, "-f", "qcow2", path, bitmap].map(OsStr::new);
    let out = place
        .output(
            place.command("qemu-img", &args),
            "qemu-img (install qemu-utils)",
        )
        .map_err(|e| e.message)?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "qemu-img bitmap {op} {bitmap} on disk {target}{}: {}",
        place.shown(),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// Deletes this repository's checkpoints other than `keep`; returns what
/// could not be deleted, as warnings. `stopped` holds the disks of a VM
/// that is not running, whose bitmaps hv removes itself.
pub fn prune_chain(
    place: &Place,
    dom: &Domain,
    chain: &Chain,
    keep: Option<&str>,
    stopped: Option<&[Disk]>,
) -> Vec<String> {
    // Fresh list: the job just added one, and a killed run may have left one.
    let names = ffi::checkpoint_names(dom).unwrap_or_else(|_| chain.ours.clone());
    let mut warnings = Vec::new();
    for name in names.iter().filter(|n| n.starts_with(&chain.prefix)) {
        if Some(name.as_str()) == keep {
            continue;
        }
        let deleted = match stopped {
            Some(disks) => delete_offline(place, dom, name, disks),
            None => ffi::delete_checkpoint(dom, name, false).map_err(|e| e.message().to_owned()),
        };
        if let Err(e) = deleted {
            warnings.push(format!(
                "cannot delete old checkpoint {name}: {e}; the next backup tries again, or delete it with `virsh checkpoint-delete`"
            ));
        }
    }
    warnings
}

/// Deletes a stopped VM's checkpoint: its bitmaps from the images, then
/// libvirt's record of it (libvirt deletes bitmaps of running VMs only).
fn delete_offline(place: &Place, dom: &Domain, name: &str, disks: &[Disk]) -> Result<(), String> {
    remove_bitmaps(place, dom, name, disks)?;
    ffi::delete_checkpoint(dom, name, true).map_err(|e| e.message().to_owned())
}

/// Removes checkpoint `name`'s bitmaps from a stopped VM's images; one
/// already gone is fine.
fn remove_bitmaps(place: &Place, dom: &Domain, name: &str, disks: &[Disk]) -> Result<(), String> {
    let xml = ffi::checkpoint_xml(dom, name).map_err(|e| e.message().to_owned())?;
    let doc = roxmltree::Document::parse(&xml).map_err(|e| e.to_string())?;
    let marked = doc
        .descendants()
        .filter(|n| n.has_tag_name("disk") && n.attribute("checkpoint") == Some("bitmap"));
    for node in marked {
        let target = node.attribute("name").unwrap_or_default();
        let Some(disk) = disks.iter().find(|d| d.target == target && can_track(d)) else {
            continue;
        };
        let bitmap_name = node.attribute("bitmap").unwrap_or(name);
        match bitmap(place, disk, "--remove", bitmap_name) {
            Err(e) if !e.contains("not found") => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_repository_prefix() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(prefix(id), "hv-0123456789abcdef-");
        let name = new_name(id).unwrap();
        assert!(name.starts_with("hv-0123456789abcdef-2"), "{name}");
        assert_ne!(name, new_name(id).unwrap());
    }

    #[test]
    fn the_checkpoint_tracks_only_the_backed_up_qcow2_disks() {
        let xml = "<domain><devices>\
            <disk type='file' device='disk'><driver type='qcow2'/><source file='/a'/><target dev='vda'/></disk>\
            <disk type='file' device='disk'><driver type='raw'/><source file='/b'/><target dev='vdb'/></disk>\
            <disk type='file' device='cdrom'><target dev='sda'/></disk>\
            </devices></domain>";
        let disks = hv_common::domain::parse(xml).unwrap().disks;
        assert!(can_track(&disks[0]) && !can_track(&disks[1]));
        let out = checkpoint_xml("hv-x-1", &disks, &["vda"], None);
        assert!(out.contains("<name>hv-x-1</name>"));
        assert!(out.contains("<disk name='vda' checkpoint='bitmap'/>"));
        assert!(out.contains("<disk name='vdb' checkpoint='no'/>"));
        assert!(out.contains("<disk name='sda' checkpoint='no'/>"));
        let redefined = checkpoint_xml("hv-x-1", &disks, &["vda"], Some(1700000000));
        assert!(redefined.contains("<creationTime>1700000000</creationTime>"));
        assert!(redefined.contains("<disk name='vda' checkpoint='bitmap' bitmap='hv-x-1'/>"));
    }
}
