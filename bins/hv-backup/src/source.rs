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
//!
//! A VM on another host is read the same way there (hv_common::remote): the job's
//! directory and qemu-nbd are that host's, and their sockets are forwarded
//! over ssh to sockets in a directory here.

use crate::ffi;
use crate::nbd;
use hv_common::domain::{xml_escape, Disk};
use hv_common::remote::{quote, Forward, Place};
use hv_common::{cli, Code, Error, Result};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use virt::domain::Domain;

/// A per-run directory for sockets and scratch files, removed when dropped;
/// on another host, with one here for the sockets forwarded from there.
pub struct RunDir {
    /// The directory, where the files are.
    pub path: PathBuf,
    place: Place,
    here: Option<Box<RunDir>>,
}

impl RunDir {
    /// Makes the directory, handed to `owner` (QEMU's uid and gid) if given.
    pub fn create(
        place: &Place,
        root: &Path,
        label: &str,
        owner: Option<(u32, u32)>,
    ) -> Result<RunDir> {
        let Place::Ssh(ssh) = place else {
            return RunDir::create_here(root, label, owner);
        };
        if !root.is_absolute() {
            return Err(Error::usage(format!(
                "--scratch-dir {} must be an absolute path to be used on {}",
                root.display(),
                ssh.uri
            )));
        }
        let here = RunDir::create_here(root, &format!("{label}-fwd"), None)?;
        // Named like the one here, and marked as this machine's: its pid
        // and salt say which run made it, here.
        let name = here.path.file_name().unwrap_or_default().to_string_lossy();
        let dir = root.join(name.replacen("-fwd-", &format!("@{}-", machine_mark()), 1));
        let mut script = OsString::from("mkdir -p -m 0711 ");
        script.push(quote(root.as_os_str()));
        script.push(" && mkdir -m 0700 ");
        script.push(quote(dir.as_os_str()));
        if let Some((uid, gid)) = owner {
            script.push(format!(" && chown {uid}:{gid} "));
            script.push(quote(dir.as_os_str()));
        }
        script.push(" && ls -1 ");
        script.push(quote(root.as_os_str()));
        let out = place.output(place.script(&script), "mkdir")?;
        if !out.status.success() {
            return Err(ssh.failed(&format!("cannot create {}", dir.display()), &out));
        }
        let dead: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|name| made_by_dead_run_here(name))
            .map(|name| root.join(name))
            .collect();
        if !dead.is_empty() {
            let mut script = OsString::from("rm -rf");
            for d in &dead {
                script.push(" ");
                script.push(quote(d.as_os_str()));
            }
            // Best effort: a leftover costs only its directory.
            let _ = place.output(place.script(&script), "rm");
        }
        Ok(RunDir {
            path: dir,
            place: place.clone(),
            here: Some(Box::new(here)),
        })
    }

    /// Where the socket `name` of this directory is reached from here.
    pub fn here(&self, name: &str) -> PathBuf {
        self.here
            .as_ref()
            .map_or(&self.path, |h| &h.path)
            .join(name)
    }

    fn create_here(root: &Path, label: &str, owner: Option<(u32, u32)>) -> Result<RunDir> {
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
        if let Some((uid, gid)) = owner {
            // QEMU creates the socket and scratch files: the directory must be its own.
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| Error::io(format!("cannot hand {} to QEMU", dir.display()), e))?;
        }
        Ok(RunDir {
            path: dir,
            place: Place::Here,
            here: None,
        })
    }
}

/// What marks the directories this machine's runs make on other hosts:
/// only this machine can tell whether their runs are alive.
fn machine_mark() -> String {
    let id = fs::read_to_string("/etc/machine-id").unwrap_or_default();
    let id = if id.trim().is_empty() {
        hv_common::hosts::local_hostname()
    } else {
        id
    };
    id.chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect()
}

/// Whether the directory `name` on another host was made by a run of this
/// machine (`LABEL@MARK-PID-SALT`) whose process is gone.
fn made_by_dead_run_here(name: &str) -> bool {
    let Some((_, rest)) = name.split_once(&format!("@{}-", machine_mark())) else {
        return false;
    };
    let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
    pid.is_some_and(|pid| pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists())
}

/// Removes `dir` where it is, as far as it can.
fn remove_dir(place: &Place, dir: &Path) {
    match place {
        Place::Here => {
            let _ = fs::remove_dir_all(dir);
        }
        Place::Ssh(_) => {
            let mut script = OsString::from("rm -rf ");
            script.push(quote(dir.as_os_str()));
            if let Err(e) = place.output(place.script(&script), "rm") {
                cli::warn(format!(
                    "cannot remove {}{}: {}",
                    dir.display(),
                    place.shown(),
                    e.message
                ));
            }
        }
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
        if name.contains('@') {
            continue; // another machine's run: its pid is not ours to judge
        }
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
        remove_dir(&self.place, &self.path);
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
    /// The job's NBD socket as reached from here.
    socket: PathBuf,
    /// Dropped before `dir`: ssh goes before the directory it forwards from.
    forward: Option<Forward>,
    dir: RunDir,
    /// Set once the job has ended; see [`LiveJob::ended`].
    ended: Arc<AtomicBool>,
}

impl LiveJob {
    /// Starts a pull-mode backup of `disks` (by target), creating the
    /// checkpoint `checkpoint_xml` with it; the domain's other disks are left out.
    pub fn begin(
        place: &Place,
        domain: &Domain,
        live_xml: &str,
        disks: &[JobDisk],
        checkpoint_xml: Option<&str>,
        root: &Path,
    ) -> Result<LiveJob> {
        // libvirt wants absolute paths for the socket and scratch files.
        let root = &match place {
            Place::Here => std::path::absolute(root)
                .map_err(|e| Error::io(format!("cannot resolve {}", root.display()), e))?,
            Place::Ssh(_) => root.to_owned(),
        };
        end_stale_job(place, domain, root)?;
        let uuid = domain.uuid_string().unwrap_or_default();
        let label = format!("live-{}", short(&uuid));
        let dir = RunDir::create(place, root, &label, dac_owner(live_xml))?;
        let socket = dir.path.join("nbd.sock");
        let xml = backup_xml(live_xml, disks, &socket, &dir.path);
        ffi::backup_begin(domain, &xml, checkpoint_xml)
            .map_err(|e| Error::libvirt("cannot start the backup job", &e))?;
        let mut job = LiveJob {
            ended: Arc::new(AtomicBool::new(false)),
            domain: domain.clone(),
            socket: dir.here("nbd.sock"),
            forward: None,
            dir,
        };
        if let Place::Ssh(ssh) = place {
            // A failure here drops the job, which ends it.
            job.forward = Some(ssh.forward(&socket, &job.socket, None, "the backup job")?);
        }
        Ok(job)
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
        // Then the fields go: ssh, then the directory.
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
fn end_stale_job(place: &Place, domain: &Domain, root: &Path) -> Result<()> {
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
        remove_dir(place, &dir);
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
    server: Server,
    /// Its socket as reached from here.
    socket: PathBuf,
    what: String,
}

enum Server {
    Here(Child),
    /// qemu-nbd on another host, in the ssh session that forwards its socket.
    There(Forward),
    /// Finished: nothing runs.
    Done,
}

impl QemuNbd {
    /// Serves `path` (format `format`) on a socket in `dir`, with the
    /// image's persistent dirty bitmap `bitmap` when given.
    pub fn serve(
        place: &Place,
        path: &Path,
        format: &str,
        dir: &RunDir,
        writable: bool,
        bitmap: Option<&str>,
        what: &str,
    ) -> Result<QemuNbd> {
        let name = format!("{what}.sock");
        let socket = dir.path.join(&name);
        if let Place::Ssh(ssh) = place {
            let here = dir.here(&name);
            let script = remote_qemu_nbd(path, format, &socket, writable, bitmap);
            let forward = ssh.forward(&socket, &here, Some(&script), &format!("disk {what}"))?;
            return Ok(QemuNbd {
                server: Server::There(forward),
                socket: here,
                what: what.to_owned(),
            });
        }
        // A server for this disk that was given up on leaves its socket.
        let _ = fs::remove_file(&socket);
        // setpriv --pdeathsig: if hv-backup is killed, qemu-nbd goes too and
        // does not keep holding the image's lock.
        let mut cmd = cli::child_command("setpriv");
        cmd.args(["--pdeathsig", "KILL", "--", "qemu-nbd"])
            .env("GLIBC_TUNABLES", QEMU_NBD_TUNABLES);
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
            server: Server::Here(child),
            socket,
            what: what.to_owned(),
        };
        served.wait_ready(path)?;
        Ok(served)
    }

    fn wait_ready(&mut self, path: &Path) -> Result<()> {
        let Server::Here(child) = &mut self.server else {
            return Ok(());
        };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = child.try_wait() {
                let mut msg = String::new();
                if let Some(mut err) = child.stderr.take() {
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
        let child = match &mut self.server {
            Server::Here(child) => child,
            Server::There(_) => {
                let what = format!("disk {}: qemu-nbd", self.what);
                let Server::There(forward) = std::mem::replace(&mut self.server, Server::Done)
                else {
                    unreachable!()
                };
                return forward.finish(Duration::from_secs(90), &what);
            }
            Server::Done => return Ok(()),
        };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            match child.try_wait() {
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
        match &mut self.server {
            Server::Here(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            // Dropped with it: the script there ends qemu-nbd.
            Server::There(_) | Server::Done => {}
        }
    }
}

/// qemu-nbd allocates a buffer per request: kept in its heap rather than
/// mapped and unmapped each time, a 4 MiB read costs no page faults.
const QEMU_NBD_TUNABLES: &str =
    "glibc.malloc.mmap_threshold=67108864:glibc.malloc.trim_threshold=536870912";

/// The script that serves `path` read-only on another host: qemu-nbd runs
/// until its one client is done, or until the ssh session ends (its stdin
/// closes), so a killed run leaves no qemu-nbd holding the image there.
/// A session cut while the script writes must not kill it before it ends
/// qemu-nbd (SIGPIPE is ignored), and should the script die anyway, so
/// does qemu-nbd (setpriv --pdeathsig, as here).
///
/// Writable, it is a restore's: once the session's stdin closes, the script
/// waits for qemu-nbd to end by itself (its one client gone, its writes
/// flushed) before it ends, so that the image is free when the session is.
fn remote_qemu_nbd(
    path: &Path,
    format: &str,
    socket: &Path,
    writable: bool,
    bitmap: Option<&str>,
) -> OsString {
    let sock = quote(socket.as_os_str());
    let mut s = OsString::from("trap '' PIPE\nrm -f ");
    s.push(&sock);
    s.push(format!(
        "\nGLIBC_TUNABLES={QEMU_NBD_TUNABLES} setpriv --pdeathsig KILL -- "
    ));
    s.push(match writable {
        true => "qemu-nbd --shared=1 --cache=writeback --discard=unmap ",
        false => "qemu-nbd --shared=1 --read-only ",
    });
    s.push(quote(OsStr::new(&format!("--format={format}"))));
    s.push(" --socket=");
    s.push(&sock);
    if let Some(bitmap) = bitmap {
        s.push(" ");
        s.push(quote(OsStr::new(&format!("--bitmap={bitmap}"))));
    }
    s.push(" -- ");
    s.push(quote(path.as_os_str()));
    s.push(" & p=$!\nwhile [ ! -S ");
    s.push(&sock);
    s.push(" ]; do kill -0 $p 2>/dev/null || { wait $p; exit 1; }; sleep 0.05; done\n");
    s.push("echo ready\ncat >/dev/null\n");
    if writable {
        // One that never had its client would wait forever: a minute, then
        // it is ended. Its status says whether the image closed cleanly.
        s.push("( sleep 60; kill $p 2>/dev/null ) </dev/null >/dev/null 2>&1 & w=$!\n");
        s.push("wait $p; st=$?; kill $w 2>/dev/null; exit $st\n");
    } else {
        s.push("kill $p 2>/dev/null\n");
    }
    s
}

/// Retries `connect` while the socket exists but is not listening yet
/// (qemu-nbd binds, then listens; through ssh, that shows as a connection
/// closed at once).
fn until_listening<T>(mut connect: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    use std::io::ErrorKind::{ConnectionRefused, ConnectionReset, UnexpectedEof};
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match connect() {
            Err(e)
                if matches!(
                    e.kind(),
                    ConnectionRefused | ConnectionReset | UnexpectedEof
                ) && Instant::now() < deadline =>
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
    fn only_this_machines_dead_runs_are_swept_on_another_host() {
        let mark = machine_mark();
        assert!(!mark.is_empty());
        let dead = format!("off-1a2b@{mark}-{}-0badf00d", u32::MAX - 1);
        assert!(made_by_dead_run_here(&dead));
        let alive = format!("off-1a2b@{mark}-{}-0badf00d", std::process::id());
        assert!(!made_by_dead_run_here(&alive));
        assert!(!made_by_dead_run_here(&format!(
            "off-1a2b@other-{}-00",
            u32::MAX - 1
        )));
        assert!(!made_by_dead_run_here("off-1a2b-4000000000-00"));
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
