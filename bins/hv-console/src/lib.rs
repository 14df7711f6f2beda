//! hv-console: a VM's serial console, through libvirt's console stream, so
//! it works wherever hv reaches the host (a remote URI too) and goes
//! through libvirt's access control (the operator role may open it). At a
//! terminal it is `virsh console` with a way out that cannot be mistaken
//! (Ctrl-]); in a script it waits for a line the guest prints
//! (`--expect`), which is what tests and boot checks need and what a
//! terminal session cannot give them.

use clap::Parser;
use hv_common::cli::ConnectArgs;
use hv_common::connect::Access;
use hv_common::hosts::{Pool, Route, Scope};
use hv_common::manual::Manual;
use hv_common::targets::{self, Input, VmRef};
use hv_common::{domain, lifecycle, time, Code, Error, Exit, Result};
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use virt::connect::Connect;
use virt::domain::Domain;

#[derive(Debug, Parser)]
#[command(
    name = "hv-console",
    version,
    about = "Attach the terminal to a VM's serial console (Ctrl-] leaves), or wait in a script for a line it prints",
    long_about = "Attach the terminal to a running VM's serial console, through libvirt's console \
        stream (so over remote URIs too); Ctrl-] leaves. Another session holding the console is \
        refused unless --force, which takes it over. Without a terminal, or with --expect or --log, \
        the console's output goes to stdout (and --log FILE) and lines on stdin go to the guest: \
        --expect TEXT ends the run when the guest prints TEXT (exit 0), or fails at --timeout."
)]
pub struct Cli {
    /// The VM (name or UUID)
    #[arg(value_name = "VM")]
    pub vm: String,

    /// Take the console over from another session
    #[arg(long)]
    pub force: bool,

    /// Also append what the console prints to FILE
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,

    /// End when the guest prints TEXT (exit 0); fail if --timeout passes first
    #[arg(long, value_name = "TEXT")]
    pub expect: Option<String>,

    /// Give up after this long (90s, 5m); with --expect, a failure [default: none; 60s with --expect]
    #[arg(long, value_name = "DURATION", value_parser = time::duration)]
    pub timeout: Option<Duration>,

    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub const MANUAL: Manual = Manual {
    exit_status: &[
        ("0", "Left with Ctrl-], the VM stopped, --timeout passed without --expect, or --expect saw its text."),
        ("1", "The VM is not running, has no serial console, another session holds it (without --force), or --expect did not see its text before --timeout or the VM's end."),
        ("2", "Usage error."),
        ("3", "libvirt could not be reached, or refused (the operator role may open consoles)."),
    ],
    environment: hv_common::manual::ENVIRONMENT,
    examples: &[
        ("The serial console of web1; Ctrl-] leaves:", "hv-console web1"),
        ("Take it over from a forgotten session:", "hv-console --force web1"),
        ("After a start, wait for the login prompt (a script's boot check):", "hv-start web1 && hv-console web1 --expect 'login:' --timeout 3m > /dev/null"),
        ("Type a command into the guest's shell and keep what it prints:", "echo 'uname -a' | hv-console web1 --expect Linux --timeout 30s --log web1-console.log"),
    ],
    notes: &[
        "A VM has a serial console when its definition has a pty serial port or console (hv-define always gives one). At a terminal, the terminal is in raw mode while attached, and given back on Ctrl-], on the VM's end, on SIGTERM and SIGHUP. Without a terminal, the console's output is copied to stdout as it comes, and stdin's lines are sent to the guest as they come (end stdin with /dev/null to send nothing). --expect looks for TEXT in everything printed since hv-console attached, across line and chunk boundaries. Given several hosts (--hosts FILE, or -c more than once) it attaches where the VM is, and refuses a name two hosts have (give one with -c). docs/console.md.",
    ],
};

/// The escape byte: Ctrl-], as virsh and telnet.
const ESCAPE: u8 = 0x1d;

/// How long `--expect` waits when no `--timeout` is given.
const EXPECT_TIMEOUT: Duration = Duration::from_secs(60);

/// What `run` turned the arguments into.
struct Options {
    vm: String,
    force: bool,
    log: Option<PathBuf>,
    expect: Option<String>,
    timeout: Option<Duration>,
    /// Attached to a terminal (raw mode, Ctrl-] leaves), rather than
    /// copying for a script.
    interactive: bool,
}

pub fn run(cli: Cli) -> Result<Exit> {
    let scripted = cli.expect.is_some() || cli.log.is_some();
    let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let opts = Options {
        timeout: cli
            .timeout
            .or(cli.expect.is_some().then_some(EXPECT_TIMEOUT)),
        vm: cli.vm,
        force: cli.force,
        log: cli.log,
        expect: cli.expect,
        interactive: terminal && !scripted,
    };
    // The stream is fed by libvirt's event loop while this thread reads
    // the terminal: it must run before the connection is opened.
    hv_common::hosts::keepalive_loop();
    let Some(Input::Vm(vm)) = targets::from_args(std::slice::from_ref(&opts.vm)).pop() else {
        return Err(Error::usage("give the VM by name or UUID"));
    };
    let scope = cli.connect.scope()?;
    let (conn, dom) = match scope.single() {
        Some(_) => {
            let conn = Arc::new(cli.connect.open(Access::ReadWrite)?);
            let dom = targets::lookup(&conn, &vm)?;
            (conn, dom)
        }
        None => find(scope, cli.connect.connect_timeout, &vm)?,
    };
    let name = dom.name().unwrap_or_else(|_| opts.vm.clone());
    if !lifecycle::state(&dom)?.state.is_active() {
        return Err(Error::new(
            Code::InvalidState,
            format!("VM {name} is not running: start it first (hv-start {name:?}), then attach"),
        ));
    }
    let xml = dom
        .xml_desc(0)
        .map_err(|e| Error::libvirt(format!("cannot read VM {name}"), &e))?;
    if !domain::has_pty_console(&xml) {
        return Err(Error::new(
            Code::Unsupported,
            format!("VM {name} has no serial console (a pty serial port): add one (virsh edit: <serial type='pty'/>; hv-define always gives one)"),
        ));
    }
    let stream = virt::stream::Stream::new(&conn, virt::sys::VIR_STREAM_NONBLOCK)
        .map_err(|e| Error::libvirt("cannot open a stream to the host", &e))?;
    let mut flags = virt::sys::VIR_DOMAIN_CONSOLE_SAFE;
    if opts.force {
        flags |= virt::sys::VIR_DOMAIN_CONSOLE_FORCE;
    }
    dom.open_console(None, &stream, flags).map_err(|e| {
        if e.message().contains("Active console session") {
            Error::new(
                Code::InvalidState,
                format!("another session holds {name}'s console: --force takes it over"),
            )
        } else {
            Error::libvirt_needing(
                format!("cannot open {name}'s console"),
                &e,
                &["domain.open-device"],
            )
        }
    })?;
    attach(&stream, &name, &opts)
}

/// The VM on whichever of several hosts has it: every host is asked at
/// once, and a name two hosts have is refused rather than guessed.
fn find(scope: Scope, timeout: Duration, vm: &VmRef) -> Result<(Arc<Connect>, Domain)> {
    let pool = Pool::new(scope, Access::ReadWrite, timeout);
    pool.open_all();
    let mut found = Vec::new();
    let mut unreachable = Vec::new();
    // A host that has the VM but would not show it (access control) is
    // said so, not taken for a host without it.
    let mut refused = None;
    for host in pool.scope().hosts() {
        let conn = match pool.get(&Route::Host(host.clone())) {
            Ok(conn) => conn,
            Err(e) => {
                unreachable.push(e.message);
                continue;
            }
        };
        match targets::lookup(&conn, vm) {
            Ok(dom) => found.push((host.name.clone(), conn, dom)),
            Err(e) if e.code != Code::NotFound => {
                refused.get_or_insert(Error::new(
                    e.code,
                    format!("host {}: {}", host.name, e.message),
                ));
            }
            Err(_) => {}
        }
    }
    let not_reached = match unreachable.is_empty() {
        true => String::new(),
        false => format!(" (not reached: {})", unreachable.join("; ")),
    };
    match found.len() {
        1 => {
            let (_, conn, dom) = found.remove(0);
            Ok((conn, dom))
        }
        0 if refused.is_some() => Err(refused.expect("checked")),
        0 if !pool.reached() => Err(Error::new(
            Code::Unreachable,
            format!("no host answered{not_reached}"),
        )),
        0 => Err(Error::new(
            Code::NotFound,
            format!(
                "no VM {} on any host that answered{not_reached}; `hv-ls --hosts FILE` lists every host's VMs",
                vm.label()
            ),
        )),
        _ => {
            let on: Vec<&str> = found.iter().map(|(h, _, _)| h.as_str()).collect();
            Err(Error::usage(format!(
                "VM {} is on {}: give the host with -c, e.g. -c {}",
                vm.label(),
                on.join(" and "),
                on[0]
            )))
        }
    }
}

/// Copies between the stream and this process until the end the options
/// name.
fn attach(stream: &virt::stream::Stream, name: &str, opts: &Options) -> Result<Exit> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| Error::io("cannot watch for SIGTERM", e))?;
    }
    let mut log = match &opts.log {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?,
        ),
        None => None,
    };
    let _raw = if opts.interactive {
        eprint!("Connected to {name}'s serial console; Ctrl-] leaves.\r\n");
        Some(Raw::enter()?)
    } else {
        None
    };
    let input = stdin_reader();
    let deadline = opts.timeout.map(|t| Instant::now() + t);
    let mut seen = Seen::new(opts.expect.as_deref());
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 << 10];
    let mut stdin_open = true;
    loop {
        let mut busy = false;
        // What the guest printed.
        match stream.recv(&mut buf) {
            Ok(0) => {
                let _ = stream.clone().finish();
                return ended(name, opts, &seen);
            }
            Ok(n) if n > 0 => {
                let chunk = &buf[..n as usize];
                busy = true;
                // A closed stdout (a pipe's reader gone) ends the run.
                if out.write_all(chunk).and_then(|()| out.flush()).is_err() {
                    let _ = stream.clone().abort();
                    return Ok(Exit::Ok);
                }
                if let Some(Err(e)) = log.as_mut().map(|f| f.write_all(chunk)) {
                    let _ = stream.clone().abort();
                    return Err(Error::io("cannot write the log", e));
                }
                if seen.take(chunk) {
                    let _ = stream.clone().abort();
                    return Ok(Exit::Ok);
                }
            }
            Ok(_) => {} // -2: nothing yet
            Err(e) => {
                return Err(Error::libvirt(format!("{name}'s console ended"), &e));
            }
        }
        // What to send the guest.
        while stdin_open {
            match input.try_recv() {
                Ok(bytes) => {
                    busy = true;
                    let (bytes, leave) = match bytes.iter().position(|b| *b == ESCAPE) {
                        Some(at) if opts.interactive => (&bytes[..at], true),
                        _ => (&bytes[..], false),
                    };
                    if let Err(e) = send(stream, bytes, name) {
                        let _ = stream.clone().abort();
                        return Err(e);
                    }
                    if leave {
                        let _ = stream.clone().abort();
                        drop(_raw);
                        eprintln!("\nLeft {name}'s console.");
                        return Ok(Exit::Ok);
                    }
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => stdin_open = false,
            }
        }
        if stop.load(Ordering::SeqCst) {
            let _ = stream.clone().abort();
            return Ok(Exit::Ok);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = stream.clone().abort();
            return match &opts.expect {
                Some(text) => Err(Error::new(
                    Code::Timeout,
                    format!(
                        "{name} did not print {text:?} within {}s",
                        opts.timeout.unwrap_or_default().as_secs()
                    ),
                )),
                None => Ok(Exit::Ok),
            };
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The console ended (the VM stopped): fine, unless a text was awaited.
fn ended(name: &str, opts: &Options, seen: &Seen) -> Result<Exit> {
    if opts.interactive {
        eprint!("\r\n{name} stopped; its console ended.\r\n");
    }
    match (&opts.expect, seen.found) {
        (Some(text), false) => Err(Error::new(
            Code::InvalidState,
            format!("{name}'s console ended (the VM stopped) before it printed {text:?}"),
        )),
        _ => Ok(Exit::Ok),
    }
}

/// Sends all of `bytes`, waiting while the stream is full.
fn send(stream: &virt::stream::Stream, mut bytes: &[u8], name: &str) -> Result<()> {
    while !bytes.is_empty() {
        match stream.send(bytes) {
            Ok(n) if n > 0 => bytes = &bytes[n as usize..],
            Ok(_) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                return Err(Error::libvirt(
                    format!("cannot write to {name}'s console"),
                    &e,
                ))
            }
        }
    }
    Ok(())
}

/// Stdin, read on a thread of its own (a read blocks) and handed over in
/// chunks; the channel closes at its end.
fn stdin_reader() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 4096];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// `--expect`: whether the text has been printed since attaching, looked
/// for across chunk boundaries.
struct Seen {
    text: Option<Vec<u8>>,
    tail: Vec<u8>,
    found: bool,
}

impl Seen {
    fn new(text: Option<&str>) -> Seen {
        Seen {
            text: text.map(|t| t.as_bytes().to_vec()),
            tail: Vec::new(),
            found: false,
        }
    }

    /// Takes a chunk; true once the text was seen.
    fn take(&mut self, chunk: &[u8]) -> bool {
        let Some(text) = &self.text else {
            return false;
        };
        self.tail.extend_from_slice(chunk);
        if self.tail.windows(text.len().max(1)).any(|w| w == &text[..]) {
            self.found = true;
            return true;
        }
        // Only the text's length less one can still start a match.
        let keep = text.len().saturating_sub(1);
        if self.tail.len() > keep {
            self.tail.drain(..self.tail.len() - keep);
        }
        false
    }
}

/// The terminal in raw mode while attached; given back when dropped, and
/// by a panic hook.
struct Raw;

impl Raw {
    fn enter() -> Result<Raw> {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = crossterm::terminal::disable_raw_mode();
            hook(info);
        }));
        crossterm::terminal::enable_raw_mode()
            .map_err(|e| Error::io("cannot put the terminal in raw mode", e))?;
        Ok(Raw)
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_is_found_across_chunks() {
        let mut seen = Seen::new(Some("login:"));
        assert!(!seen.take(b"Debian GNU/Linux 13 web1 ttyS0\r\n\r\nweb1 log"));
        assert!(seen.take(b"in: "));
        let mut none = Seen::new(None);
        assert!(!none.take(b"login: "));
    }
}
