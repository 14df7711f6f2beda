//! Where a disk's bytes come from. A running VM's disks are exported by a
//! libvirt pull-mode backup job: QEMU serves a point-in-time view over NBD
//! while the guest keeps running, and keeps only what the guest overwrites
//! meanwhile in a scratch file (never a full copy). A stopped VM's disks are
//! exported read-only by `qemu-nbd`, which also flattens backing chains and
//! takes the image's shared lock, so the VM cannot start and write under us.
//! Either way the reader sees one NBD export that reports holes and zeros.
//!
//! Jobs and sockets live in a per-run directory under the scratch root. A
//! run killed with SIGKILL leaves its job behind; the next run recognises
//! it by that root and ends it, so a kill never blocks later backups.

use crate::ffi;
use crate::nbd;
use hv_common::domain::{xml_escape, Disk};
use hv_common::{cli, Code, Error, Result};
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use virt::domain::Domain;

/// A per-run directory for sockets and scratch files, removed when dropped.
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn create(root: &Path, label: &str) -> Result<RunDir> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(root)
            .map_err(|e| {
                Error::io(
                    format!("cannot create scratch directory {}", root.display()),
                    e,
                )
            })?;
        sweep_dead_runs(root);
        let salt = crate::crypt::random_hex::<4>()?;
        let dir = root.join(format!("{label}-{}-{salt}", std::process::id()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        Ok(RunDir(dir))
    }
}

/// Socket paths must stay under 108 bytes: directory names use a UUID's first part.
pub fn short(uuid: &str) -> &str {
    uuid.split('-').next().unwrap_or(uuid)
}

/// Removes the directories of runs whose process is gone (killed runs);
/// names end in `-<pid>-<salt>`.
fn sweep_dead_runs(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let mut parts = name.rsplit('-');
        let pid = parts.nth(1).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// One disk of a backup job: read in full, or incrementally since `since`.
pub struct JobDisk<'a> {
    pub disk: &'a Disk,
    pub since: Option<&'a str>,
}

/// A running pull-mode backup job; ended (aborted) when dropped.
pub struct LiveJob {
    domain: Domain,
    socket: PathBuf,
    dir: RunDir,
    /// Set once the job has ended; see [`LiveJob::ended`].
    ended: Arc<AtomicBool>,
}

impl LiveJob {
    /// Starts a pull-mode backup of `disks` (by target), creating the
    /// checkpoint `checkpoint_xml` with it; the domain's other disks are left out.
    pub fn begin(
        domain: &Domain,
        live_xml: &str,
        disks: &[JobDisk],
        checkpoint_xml: Option<&str>,
        root: &Path,
    ) -> Result<LiveJob> {
        // libvirt wants absolute paths for the socket and scratch files.
        let root = &std::path::absolute(root)
            .map_err(|e| Error::io(format!("cannot resolve {}", root.display()), e))?;
        end_stale_job(domain, root)?;
        let uuid = domain.uuid_string().unwrap_or_default();
        let dir = RunDir::create(root, &format!("live-{}", short(&uuid)))?;
        if let Some((uid, gid)) = dac_owner(live_xml) {
            // QEMU creates the socket and scratch files: the directory must be its own.
            std::os::unix::fs::chown(&dir.0, Some(uid), Some(gid))
                .map_err(|e| Error::io(format!("cannot hand {} to QEMU", dir.0.display()), e))?;
        }
        let socket = dir.0.join("nbd.sock");
        let xml = backup_xml(live_xml, disks, &socket, &dir.0);
        ffi::backup_begin(domain, &xml, checkpoint_xml)
            .map_err(|e| Error::libvirt("cannot start the backup job", &e))?;
        Ok(LiveJob {
            ended: Arc::new(AtomicBool::new(false)),
            domain: domain.clone(),
            socket,
            dir,
        })
    }

    pub fn connect(&self, target: &str) -> Result<nbd::Client> {
        self.open(target, false)
    }

    /// Connects with the dirty bitmap libvirt exports for an incremental disk.
    pub fn connect_tracking(&self, target: &str) -> Result<nbd::Client> {
        self.open(target, true)
    }

    fn open(&self, target: &str, tracking: bool) -> Result<nbd::Client> {
        let client = if tracking {
            nbd::Client::connect_tracking(&self.socket, target, &format!("backup-{target}"))
        } else {
            nbd::Client::connect(&self.socket, target)
        };
        client.map_err(|e| {
            Error::new(
                Code::Io,
                format!("disk {target}: cannot read the backup job's export: {e}"),
            )
        })
    }
}

impl LiveJob {
    /// True once the job has ended (dropped, and gone from libvirt). Its
    /// checkpoint must not be changed before: libvirt 11.3 can then keep a
    /// job that never ends.
    pub fn ended(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.ended)
    }
}

impl Drop for LiveJob {
    fn drop(&mut self) {
        if let Err(e) = hv_common::ffi::abort_job(&self.domain) {
            cli::warn(format!("cannot end the backup job: {}", e.message()));
        }
        let gone = wait_job_gone(&self.domain);
        self.ended.store(gone, Ordering::SeqCst);
        let _ = &self.dir;
    }
}

/// Waits until libvirt has finished ending the backup job. It ends the job
/// asynchronously, and a checkpoint change made meanwhile can leave the
/// domain with a job that never ends (seen on libvirt 11.3).
fn wait_job_gone(domain: &Domain) -> bool {
    let start = Instant::now();
    while ffi::backup_xml(domain).is_ok() {
        if start.elapsed() > Duration::from_secs(60) {
            cli::warn("the backup job did not end within 60 s; see `virsh domjobinfo VM`");
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Ends a backup job an earlier, killed hv-backup left running (its paths
/// lie under `root`); any other job is someone else's and an error.
fn end_stale_job(domain: &Domain, root: &Path) -> Result<()> {
    let Ok(xml) = ffi::backup_xml(domain) else {
        return Ok(()); // no job: the normal case
    };
    let root_text = root.display().to_string();
    if !xml.contains(&root_text) {
        return Err(Error::new(
            Code::InvalidState,
            "the VM has a backup job hv did not start; end it with `virsh domjobabort VM` or wait \
             for it",
        ));
    }
    cli::warn("ending a backup job left by an earlier hv-backup run that was stopped");
    hv_common::ffi::abort_job(domain)
        .map_err(|e| Error::libvirt("cannot end the stale backup job", &e))?;
    wait_job_gone(domain);
    if let Some(dir) = stale_dir(&xml, root) {
        let _ = fs::remove_dir_all(dir);
    }
    Ok(())
}

fn stale_dir(xml: &str, root: &Path) -> Option<PathBuf> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let socket = doc
        .descendants()
        .find(|n| n.has_tag_name("server"))?
        .attribute("socket")?;
    let dir = Path::new(socket).parent()?;
    (dir.parent()? == root).then(|| dir.to_path_buf())
}

/// The pull-mode `<domainbackup>` for `disks`; every other disk of the
/// domain gets `backup='no'`.
fn backup_xml(live_xml: &str, disks: &[JobDisk], socket: &Path, dir: &Path) -> String {
    let mut out = format!(
        "<domainbackup mode='pull'><server transport='unix' socket='{}'/><disks>",
        xml_escape(&socket.display().to_string())
    );
    let all = hv_common::domain::parse(live_xml)
        .map(|d| d.disks)
        .unwrap_or_default();
    for disk in &all {
        let target = xml_escape(&disk.target);
        if let Some(job) = disks.iter().find(|d| d.disk.target == disk.target) {
            let scratch = dir.join(format!("{}.scratch", disk.target));
            let mode = match job.since {
                Some(c) => format!("backupmode='incremental' incremental='{}'", xml_escape(c)),
                None => "backupmode='full'".into(),
            };
            out.push_str(&format!(
                "<disk name='{target}' backup='yes' {mode} type='file'><scratch file='{}'/></disk>",
                xml_escape(&scratch.display().to_string())
            ));
        } else {
            out.push_str(&format!("<disk name='{target}' backup='no'/>"));
        }
    }
    out.push_str("</disks></domainbackup>");
    out
}

/// The uid:gid QEMU runs as, from the live XML's DAC label (`+64055:+994`).
fn dac_owner(live_xml: &str) -> Option<(u32, u32)> {
    let doc = roxmltree::Document::parse(live_xml).ok()?;
    let label = doc
        .descendants()
        .filter(|n| n.has_tag_name("seclabel") && n.attribute("model") == Some("dac"))
        .find_map(|n| n.children().find(|c| c.has_tag_name("label")))?
        .text()?;
    let (u, g) = label.split_once(':')?;
    Some((
        u.trim_start_matches('+').parse().ok()?,
        g.trim_start_matches('+').parse().ok()?,
    ))
}

/// A `qemu-nbd` serving one image read-only (or writable, for restores);
/// killed when dropped.
pub struct QemuNbd {
    child: Child,
    socket: PathBuf,
    what: String,
}

impl QemuNbd {
    /// Serves `path` (format `format`) on a socket in `dir`, with the
    /// image's persistent dirty bitmap `bitmap` when given.
    pub fn serve(
        path: &Path,
        format: &str,
        dir: &Path,
        writable: bool,
        bitmap: Option<&str>,
        what: &str,
    ) -> Result<QemuNbd> {
        let socket = dir.join(format!("{what}.sock"));
        // A server for this disk that was given up on leaves its socket.
        let _ = fs::remove_file(&socket);
        // setpriv --pdeathsig: if hv-backup is killed, qemu-nbd goes too and
        // does not keep holding the image's lock.
        let mut cmd = cli::child_command("setpriv");
        cmd.args(["--pdeathsig", "KILL", "--", "qemu-nbd"]);
        // Not --persistent: qemu-nbd exits when its one client disconnects,
        // which is how a restore knows its writes reached the image.
        cmd.arg("--shared=1")
            .arg(format!("--format={format}"))
            .arg(format!("--socket={}", socket.display()));
        if writable {
            cmd.arg("--cache=writeback").arg("--discard=unmap");
        } else {
            cmd.arg("--read-only");
        }
        if let Some(bitmap) = bitmap {
            cmd.arg(format!("--bitmap={bitmap}"));
        }
        let child = cmd
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::io(
                    format!("cannot run qemu-nbd for {what} (install qemu-utils)"),
                    e,
                )
            })?;
        let mut served = QemuNbd {
            child,
            socket,
            what: what.to_owned(),
        };
        served.wait_ready(path)?;
        Ok(served)
    }

    fn wait_ready(&mut self, path: &Path) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.child.try_wait() {
                let mut msg = String::new();
                if let Some(mut err) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut err, &mut msg);
                }
                return Err(Error::new(
                    Code::Io,
                    format!(
                        "disk {}: qemu-nbd cannot open {}: {}",
                        self.what,
                        path.display(),
                        msg.trim()
                    ),
                ));
            }
            if self.socket.exists() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(Error::new(
            Code::Timeout,
            format!("disk {}: qemu-nbd did not start within 30 s", self.what),
        ))
    }

    pub fn connect(&self) -> Result<nbd::Client> {
        until_listening(|| nbd::Client::connect(&self.socket, "")).map_err(|e| self.unreadable(e))
    }

    /// Connects with the dirty bitmap the server was started with.
    pub fn connect_tracking(&self, bitmap: &str) -> Result<nbd::Client> {
        until_listening(|| nbd::Client::connect_tracking(&self.socket, "", bitmap))
            .map_err(|e| self.unreadable(e))
    }

    fn unreadable(&self, e: std::io::Error) -> Error {
        Error::new(
            Code::Io,
            format!("disk {}: cannot read qemu-nbd's export: {e}", self.what),
        )
    }
}

impl QemuNbd {
    /// Waits for qemu-nbd to exit after its client disconnected.
    pub fn finish(mut self) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(Error::new(
                        Code::Io,
                        format!("disk {}: qemu-nbd ended with {status}", self.what),
                    ))
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(Error::io(format!("disk {}: qemu-nbd", self.what), e)),
            }
        }
        Err(Error::new(
            Code::Timeout,
            format!(
                "disk {}: qemu-nbd did not finish writing within 60 s",
                self.what
            ),
        ))
    }
}

impl Drop for QemuNbd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Retries `connect` while the socket exists but is not listening yet
/// (qemu-nbd binds, then listens).
fn until_listening<T>(mut connect: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match connect() {
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20))
            }
            other => return other,
        }
    }
}

/// Checks that a stopped VM's disk can be read in place.
pub fn offline_path(disk: &Disk) -> Result<PathBuf> {
    match (disk.kind.as_str(), &disk.source) {
        ("file" | "block", Some(src)) => Ok(PathBuf::from(src)),
        (kind, _) => Err(Error::new(
            Code::Unsupported,
            format!(
                "disk {}: a stopped VM's {kind} disk cannot be read in place; back it up while \
                 the VM runs (hv-backup reads it through libvirt then)",
                disk.target
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_xml_names_every_disk() {
        let xml = "<domain><devices>\
            <disk type='file' device='disk'><source file='/a.qcow2'/><target dev='vda'/></disk>\
            <disk type='file' device='cdrom'><target dev='sda'/></disk>\
            </devices><seclabel type='dynamic' model='dac'><label>+64055:+994</label></seclabel></domain>";
        let parsed = hv_common::domain::parse(xml).unwrap();
        let vda = JobDisk {
            disk: &parsed.disks[0],
            since: Some("hv-x-1"),
        };
        let out = backup_xml(xml, &[vda], Path::new("/s/nbd.sock"), Path::new("/s"));
        assert!(out.contains(
            "<disk name='vda' backup='yes' backupmode='incremental' incremental='hv-x-1' \
             type='file'><scratch file='/s/vda.scratch'/>"
        ));
        assert!(out.contains("<disk name='sda' backup='no'/>"));
        assert_eq!(dac_owner(xml), Some((64055, 994)));
    }

    #[test]
    fn a_stale_job_dir_must_lie_directly_under_the_root() {
        let xml = "<domainbackup><server transport='unix' socket='/var/tmp/hv-backup/u-1-ab/nbd.sock'/></domainbackup>";
        assert_eq!(
            stale_dir(xml, Path::new("/var/tmp/hv-backup")),
            Some(PathBuf::from("/var/tmp/hv-backup/u-1-ab"))
        );
        assert_eq!(stale_dir(xml, Path::new("/var/tmp")), None);
    }
}
