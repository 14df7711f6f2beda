//! Where a host's files lie, for what libvirt's API cannot do: hv-backup
//! reads another host's disks in place, and hv-preflight looks at its
//! bridges. Another host is reached through the ssh that libvirt's qemu+ssh
//! transport logs in with (the URI's user, port, keyfile, known_hosts,
//! no_verify and `command`), so it needs nothing that `virsh -c
//! qemu+ssh://...` does not: the programs run there (qemu-img, qemu-nbd,
//! test) come with QEMU and the base system, and no hv runs there. Sockets
//! there are forwarded to sockets here (OpenSSH's streamlocal forwarding):
//! data crosses the network inside ssh, and no port is opened on any host.
//!
//! Every ssh is a child that dies with its command (setpriv --pdeathsig),
//! and a remote program that holds something (qemu-nbd, an image) must end
//! when its ssh session does, so a killed run leaves no lock behind.

use crate::{cli, Code, Error, Result};
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// This machine, or another host reached over ssh.
#[derive(Clone)]
pub enum Place {
    Here,
    Ssh(Arc<Ssh>),
}

/// How to reach another host: libvirt's own ssh command line for its URI.
#[derive(Debug)]
pub struct Ssh {
    /// The ssh program, then its options.
    argv: Vec<String>,
    /// The host as ssh is given it (the user goes with -l).
    destination: String,
    /// The URI, for messages.
    pub uri: String,
}

/// How long a remote housekeeping command (mkdir, rm, qemu-img) may take.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(60);

impl Place {
    /// Where the VMs of the host `conn` is connected to keep their files.
    pub fn of(conn: &virt::connect::Connect) -> Result<Place> {
        let uri = conn
            .uri()
            .map_err(|e| Error::libvirt("cannot read the connection's URI", &e))?;
        Place::from_uri(&uri)
    }

    pub fn from_uri(uri: &str) -> Result<Place> {
        if !crate::hosts::is_remote(uri) {
            return Ok(Place::Here);
        }
        let parsed =
            url::Url::parse(uri).map_err(|e| Error::usage(format!("{uri} is not a URI: {e}")))?;
        let host = parsed
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
            .filter(|h| !h.is_empty())
            .ok_or_else(|| Error::usage(format!("{uri} names no host")))?;
        let scheme = parsed.scheme();
        let transport = scheme.split_once('+').map_or("tls", |(_, t)| t);
        if !matches!(transport, "ssh" | "libssh" | "libssh2") {
            let driver = scheme.split('+').next().unwrap_or(scheme);
            return Err(Error::usage(format!(
                "{} reaches another host's files over ssh, and {uri} uses {transport}: \
                 name that host as {driver}+ssh://root@{host}/system",
                cli::program()
            )));
        }
        let mut program = "ssh".to_owned();
        let mut options: Vec<String> = Vec::new();
        if let Some(port) = parsed.port() {
            options.extend(["-p".into(), port.to_string()]);
        }
        if !parsed.username().is_empty() {
            let user = percent_encoding::percent_decode_str(parsed.username())
                .decode_utf8_lossy()
                .into_owned();
            options.extend(["-l".into(), user]);
        }
        for (key, value) in parsed.query_pairs() {
            match key.as_ref() {
                "command" if transport == "ssh" => program = value.into_owned(),
                "keyfile" => options.extend(["-i".into(), value.into_owned()]),
                "known_hosts" => {
                    options.extend(["-o".into(), format!("UserKnownHostsFile={value}")])
                }
                "no_verify" if value == "1" => {
                    options.extend(["-o".into(), "StrictHostKeyChecking=no".into()])
                }
                _ => {}
            }
        }
        // Nobody can answer a prompt in the middle of a backup.
        options.extend(["-T", "-e", "none", "-o", "BatchMode=yes"].map(String::from));
        let mut argv = vec![program];
        argv.extend(options);
        Ok(Place::Ssh(Arc::new(Ssh {
            argv,
            destination: host,
            uri: uri.to_owned(),
        })))
    }

    /// `program args` where the files are: here, or over ssh there.
    pub fn command(&self, program: &str, args: &[&OsStr]) -> Command {
        match self {
            Place::Here => {
                let mut cmd = cli::child_command(program);
                cmd.args(args);
                cmd
            }
            Place::Ssh(ssh) => {
                let mut line = quote(OsStr::new(program));
                for arg in args {
                    line.push(" ");
                    line.push(quote(arg));
                }
                ssh.command(None, &line)
            }
        }
    }

    /// A POSIX shell script where the files are.
    pub fn script(&self, script: &OsStr) -> Command {
        self.command("sh", &[OsStr::new("-c"), script])
    }

    /// Runs `cmd` (from [`Place::command`]) to its end; `what` names the
    /// program for the error when it cannot run at all.
    pub fn output(&self, mut cmd: Command, what: &str) -> Result<std::process::Output> {
        match self {
            Place::Here => cmd
                .stdin(Stdio::null())
                .output()
                .map_err(|e| Error::io(format!("cannot run {what}"), e)),
            Place::Ssh(ssh) => run(cmd, &ssh.uri),
        }
    }

    /// The contents of the file at `path`, or `None` if there is none.
    pub fn read_file(&self, path: &Path) -> Result<Option<Vec<u8>>> {
        match self {
            Place::Here => match std::fs::read(path) {
                Ok(data) => Ok(Some(data)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
            },
            Place::Ssh(ssh) => {
                let script = format!(
                    "test -f {p} || exit 3; exec cat {p}",
                    p = quote(path.as_os_str()).to_string_lossy()
                );
                let out = run(self.script(OsStr::new(&script)), &ssh.uri)?;
                match out.status.code() {
                    Some(0) => Ok(Some(out.stdout)),
                    Some(3) => Ok(None),
                    _ => Err(ssh.failed(&format!("cannot read {}", path.display()), &out)),
                }
            }
        }
    }

    /// The host, for messages: empty here.
    pub fn shown(&self) -> String {
        match self {
            Place::Here => String::new(),
            Place::Ssh(ssh) => format!(" on {}", ssh.uri),
        }
    }
}

impl Ssh {
    /// ssh running `line` there, with `forward` (a socket here, a socket
    /// there) forwarded for as long as it runs.
    fn command(&self, forward: Option<(&Path, &Path)>, line: &OsStr) -> Command {
        let mut cmd = cli::child_command("setpriv");
        cmd.args(["--pdeathsig", "KILL", "--"]).args(&self.argv);
        if let Some((here, there)) = forward {
            let mut spec = here.as_os_str().to_owned();
            spec.push(":");
            spec.push(there);
            cmd.args([
                "-o",
                "ExitOnForwardFailure=yes",
                "-o",
                "StreamLocalBindUnlink=yes",
                "-L",
            ])
            .arg(spec);
        }
        if line.is_empty() {
            cmd.arg("-N");
        }
        cmd.arg("--").arg(&self.destination);
        if !line.is_empty() {
            cmd.arg(line);
        }
        cmd
    }

    /// Forwards the socket `there` to `here` until dropped; with `script`,
    /// runs it there meanwhile, and is ready once it prints `ready`.
    pub fn forward(
        &self,
        there: &Path,
        here: &Path,
        script: Option<&OsStr>,
        what: &str,
    ) -> Result<Forward> {
        let _ = std::fs::remove_file(here);
        let line = match script {
            Some(s) => {
                let mut l = OsString::from("sh -c ");
                l.push(quote(s));
                l
            }
            None => OsString::new(),
        };
        let child = self
            .command(Some((here, there)), &line)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io(format!("cannot run {} for {what}", self.argv[0]), e))?;
        let mut forward = Forward {
            child,
            socket: here.to_owned(),
        };
        let ready = script.map(|_| forward.ready_line());
        let start = Instant::now();
        let said_ready = |ready: &Option<std::sync::mpsc::Receiver<bool>>| {
            ready
                .as_ref()
                .is_none_or(|r| r.recv_timeout(Duration::from_millis(20)).unwrap_or(false))
        };
        let mut heard = false;
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = forward.child.try_wait() {
                return Err(Error::new(
                    Code::Io,
                    format!("{what}: ssh to {} ended: {}", self.uri, forward.stderr()),
                ));
            }
            heard = heard || said_ready(&ready);
            if heard && here.exists() {
                return Ok(forward);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(Error::new(
            Code::Timeout,
            format!("{what}: ssh to {} was not ready within 30 s", self.uri),
        ))
    }

    /// The error of a remote command that failed: ssh's own failure is the host's.
    pub fn failed(&self, what: &str, out: &std::process::Output) -> Error {
        let said = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let code = match out.status.code() {
            // ssh's own failures: the host, not the command.
            Some(255) => Code::Unreachable,
            _ => Code::Io,
        };
        Error::new(code, format!("{what} on {}: {said}", self.uri))
    }
}

/// A socket forwarded from another host, and what runs there for it.
pub struct Forward {
    child: Child,
    /// The socket here.
    pub socket: PathBuf,
}

impl Forward {
    /// Reads the script's stdout in a thread: true once it said `ready`.
    fn ready_line(&mut self) -> std::sync::mpsc::Receiver<bool> {
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(mut out) = self.child.stdout.take() {
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut byte = [0u8; 1];
                while let Ok(1) = out.read(&mut byte) {
                    seen.push(byte[0]);
                    if seen.ends_with(b"ready\n") {
                        let _ = tx.send(true);
                        return;
                    }
                }
            });
        }
        rx
    }

    /// Ends the session the way a finished job does: its stdin closed, and
    /// waited for until what runs there has ended (at most `within`), so
    /// that what it held there (an image's lock) is free once this returns.
    pub fn finish(mut self, within: Duration, what: &str) -> Result<()> {
        drop(self.child.stdin.take());
        let start = Instant::now();
        while start.elapsed() < within {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(Error::new(
                        Code::Io,
                        format!("{what}: ended with {status}: {}", self.stderr()),
                    ))
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(Error::io(format!("{what}: ssh"), e)),
            }
        }
        Err(Error::new(
            Code::Timeout,
            format!("{what}: did not end within {} s", within.as_secs()),
        ))
    }

    fn stderr(&mut self) -> String {
        let mut msg = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut msg);
        }
        msg.trim().to_owned()
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        // Closing ssh's stdin ends the remote script's wait; then ssh goes.
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Runs `cmd` to its end, at most [`REMOTE_TIMEOUT`].
pub fn run(mut cmd: Command, uri: &str) -> Result<std::process::Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(format!("cannot run ssh to {uri}"), e))?;
    // Read both pipes in threads, so a chatty command cannot block on a full pipe.
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut data = Vec::new();
        let _ = out.read_to_end(&mut data);
        data
    });
    let err_reader = std::thread::spawn(move || {
        let mut data = Vec::new();
        let _ = err.read_to_end(&mut data);
        data
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > REMOTE_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::new(
                    Code::Timeout,
                    format!(
                        "ssh to {uri} did not finish within {} s",
                        REMOTE_TIMEOUT.as_secs()
                    ),
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(Error::io(format!("ssh to {uri}"), e)),
        }
    };
    Ok(std::process::Output {
        status,
        stdout: reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

/// `arg` as one word of a POSIX shell command line.
pub fn quote(arg: &OsStr) -> OsString {
    let bytes = arg.as_bytes();
    let plain = !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(b));
    if plain {
        return arg.to_owned();
    }
    let mut out = vec![b'\''];
    for &b in bytes {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssh_of(place: &Place) -> (Vec<String>, String) {
        match place {
            Place::Ssh(ssh) => (ssh.argv.clone(), ssh.destination.clone()),
            Place::Here => panic!("not here"),
        }
    }

    #[test]
    fn local_uris_are_this_machine() {
        for uri in ["qemu:///system", "qemu:///session", "test:///default"] {
            assert!(
                matches!(Place::from_uri(uri).unwrap(), Place::Here),
                "{uri}"
            );
        }
    }

    #[test]
    fn ssh_uris_give_libvirts_own_ssh_command() {
        let place = Place::from_uri(
            "qemu+ssh://root@10.0.0.5:2222/system?keyfile=/k%20ey&command=/opt/ssh&no_verify=1",
        )
        .unwrap();
        let (argv, dest) = ssh_of(&place);
        assert_eq!(dest, "10.0.0.5");
        assert_eq!(argv[0], "/opt/ssh");
        let line = argv.join(" ");
        for part in [
            "-p 2222",
            "-l root",
            "-i /k ey",
            "StrictHostKeyChecking=no",
            "BatchMode=yes",
        ] {
            assert!(line.contains(part), "{part} in {line}");
        }
        let (argv, dest) =
            ssh_of(&Place::from_uri("qemu+libssh2://[fd00::1]/system?known_hosts=/kh").unwrap());
        assert_eq!((argv[0].as_str(), dest.as_str()), ("ssh", "fd00::1"));
        assert!(argv.join(" ").contains("UserKnownHostsFile=/kh"));
    }

    #[test]
    fn other_transports_are_refused_naming_the_ssh_uri() {
        for uri in [
            "qemu+tcp://h1/system",
            "qemu://h1/system",
            "qemu+tls://h1/system",
        ] {
            let e = Place::from_uri(uri).err().unwrap();
            assert!(
                e.message.contains("qemu+ssh://root@h1/system"),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn quoting_survives_spaces_quotes_and_unicode() {
        assert_eq!(quote(OsStr::new("/var/a.qcow2")), "/var/a.qcow2");
        assert_eq!(quote(OsStr::new("it's ü")), "'it'\\''s ü'");
        assert_eq!(quote(OsStr::new("")), "''");
        let out = Command::new("sh")
            .arg("-c")
            .arg({
                let mut l = OsString::from("printf %s ");
                l.push(quote(OsStr::new("a 'b' $c ü")));
                l
            })
            .output()
            .unwrap();
        assert_eq!(out.stdout, "a 'b' $c ü".as_bytes());
    }
}
