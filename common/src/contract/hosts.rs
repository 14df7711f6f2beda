//! Several libvirt hosts at once, with no agent of hv's own: libvirt's
//! remote protocol reaches each host, and every record says which host it
//! is about, so the next command in a pipe acts on that host and no other.
//! The same VM name on two hosts is two VMs.
//!
//! A host that cannot be reached costs its own items and nothing else:
//! each host is opened in a thread of its own with a deadline, so a host
//! that hangs (an ssh that never answers) does not hold back the others.

use crate::connect::{self, Access, Target, UriSource};
use crate::error::{Code, Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use virt::connect::Connect;

/// A host as records name it: its alias from a hosts file, else its URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub uri: String,
}

impl Host {
    /// The host as a connection target, for messages and opening.
    pub fn target(&self) -> Target {
        Target {
            uri: Some(self.uri.clone()),
            source: UriSource::Flag,
        }
    }

    /// Opens it, giving up after `timeout` ([`open_within`]).
    pub fn open(&self, access: Access, timeout: Duration) -> Result<Connect> {
        open_within(&self.target(), access, timeout)
    }
}

/// Which hosts a run works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// No host named (`HV_CONNECT`, `LIBVIRT_DEFAULT_URI` or libvirt's
    /// default): one host, and records carry no `host`. A piped record
    /// that names a host by URI is still acted on there.
    Default(Target),
    /// Hosts named with `-c` or a hosts file: records carry `host`.
    Named {
        hosts: Vec<Host>,
        /// Where the aliases came from, for messages.
        file: Option<PathBuf>,
    },
}

/// Where an item goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The one host of a run that named none.
    Default,
    Host(Host),
}

/// The largest hosts file read: a list of hosts, not a data file.
const MAX_FILE: u64 = 1 << 20;

/// Reads a hosts file: one host per line, an alias and a URI separated by
/// blanks; `#` starts a comment; blank lines are skipped.
pub fn load(path: &Path) -> Result<Vec<Host>> {
    use std::io::Read;
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| {
        Error::usage(format!(
            "cannot read the hosts file {shown}: {e}; give a file of `ALIAS URI` lines with --hosts or HV_HOSTS"
        ))
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::usage(format!("cannot read the hosts file {shown}: {e}")))?;
    if bytes.len() as u64 > MAX_FILE || bytes.contains(&0) {
        return Err(Error::usage(format!(
            "{shown} is not a hosts file (binary, or larger than 1 MiB); it holds `ALIAS URI` lines"
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::usage(format!("{shown} is not a hosts file: not UTF-8 text")))?;
    parse(&text, &shown.to_string())
}

/// Parses the text of a hosts file; `source` names it in messages.
pub fn parse(text: &str, source: &str) -> Result<Vec<Host>> {
    let mut hosts: Vec<Host> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = || format!("{source} line {}", i + 1);
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let [alias, uri] = words[..] else {
            return Err(Error::usage(format!(
                "{}: expected `ALIAS URI`, e.g. `h1 qemu+ssh://root@h1/system`, not {line:?}",
                at()
            )));
        };
        if let Err(why) = check_alias(alias) {
            return Err(Error::usage(format!("{}: {why}", at())));
        }
        if !is_uri(uri) {
            return Err(Error::usage(format!(
                "{}: {uri:?} is not a libvirt URI (e.g. qemu+ssh://root@h1/system)",
                at()
            )));
        }
        if hosts.iter().any(|h| h.name == alias) {
            return Err(Error::usage(format!(
                "{}: the alias {alias:?} is given twice",
                at()
            )));
        }
        hosts.push(Host {
            name: alias.to_owned(),
            uri: uri.to_owned(),
        });
    }
    Ok(hosts)
}

/// An alias is a word that cannot be mistaken for a URI.
fn check_alias(alias: &str) -> std::result::Result<(), String> {
    let ok = alias
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok && !alias.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the alias {alias:?} may hold only letters, digits, '-', '_' and '.'"
        ))
    }
}

/// A libvirt URI has a scheme: `qemu:///system`, `qemu+ssh://h/system`.
pub fn is_uri(text: &str) -> bool {
    text.split_once(':').is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.')
    })
}

impl Scope {
    /// `-c` (repeatable: each a URI, or an alias of the hosts file), else
    /// the hosts file (`--hosts`, else `HV_HOSTS`), else the one default
    /// host. With both, `-c` picks hosts out of the file by alias.
    pub fn resolve(
        connect: &[String],
        hosts_file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Scope> {
        let file = hosts_file
            .map(Path::to_path_buf)
            .or_else(|| env("HV_HOSTS").filter(|s| !s.is_empty()).map(PathBuf::from));
        let listed = file.as_deref().map(load).transpose()?;
        let connect: Vec<&String> = connect.iter().filter(|c| !c.is_empty()).collect();
        if connect.is_empty() {
            return Ok(match (listed, file) {
                (Some(hosts), Some(file)) => {
                    if hosts.is_empty() {
                        return Err(Error::usage(format!(
                            "the hosts file {} lists no hosts; add `ALIAS URI` lines",
                            file.display()
                        )));
                    }
                    Scope::Named {
                        hosts,
                        file: Some(file),
                    }
                }
                _ => Scope::Default(connect::resolve(None, env)),
            });
        }
        let mut hosts: Vec<Host> = Vec::new();
        for c in connect {
            // A URI the file lists is that host, under its alias.
            let host = match listed
                .iter()
                .flatten()
                .find(|h| &h.name == c || &h.uri == c)
            {
                Some(h) => h.clone(),
                None if is_uri(c) => Host {
                    name: c.clone(),
                    uri: c.clone(),
                },
                None => {
                    let fix = match &file {
                        Some(f) => format!("no host has that alias in {}", f.display()),
                        None => "it is not a URI, and no hosts file (--hosts, HV_HOSTS) gives it as an alias".into(),
                    };
                    return Err(Error::usage(format!("-c {c:?}: {fix}")));
                }
            };
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
        Ok(Scope::Named { hosts, file })
    }

    /// The route of a run's only host; `None` when it names several.
    pub fn single(&self) -> Option<Route> {
        match self {
            Scope::Default(_) => Some(Route::Default),
            Scope::Named { hosts, .. } => match &hosts[..] {
                [one] => Some(Route::Host(one.clone())),
                _ => None,
            },
        }
    }

    /// The hosts of a run that names them; empty for the default host.
    pub fn hosts(&self) -> &[Host] {
        match self {
            Scope::Default(_) => &[],
            Scope::Named { hosts, .. } => hosts,
        }
    }

    /// Where an item goes: a record's `host` names one of the run's hosts
    /// (by alias or URI), or, in a run that named none, a URI to open. An
    /// item without `host` goes to the run's one host.
    pub fn route(&self, host: Option<&str>) -> Result<Route> {
        match (self, host) {
            (Scope::Default(_), None) => Ok(Route::Default),
            (Scope::Default(_), Some(h)) if is_uri(h) => Ok(Route::Host(Host {
                name: h.to_owned(),
                uri: h.to_owned(),
            })),
            (Scope::Default(_), Some(h)) => Err(Error::usage(format!(
                "it is on host {h:?}, an alias: give the hosts file it comes from with --hosts (or HV_HOSTS)"
            ))),
            (Scope::Named { hosts, .. }, None) => match &hosts[..] {
                [one] => Ok(Route::Host(one.clone())),
                _ => Err(Error::usage(format!(
                    "it names no host, and {} hosts are given: pipe records that carry `host` (from hv-ls with the same hosts), or give one host with -c",
                    hosts.len()
                ))),
            },
            (Scope::Named { hosts, .. }, Some(h)) => hosts
                .iter()
                .find(|x| x.name == h || x.uri == h)
                .map(|x| Route::Host(x.clone()))
                .ok_or_else(|| {
                    let given: Vec<&str> = hosts.iter().map(|x| x.name.as_str()).collect();
                    Error::usage(format!(
                        "it is on host {h:?}, which is not among the hosts given ({}); add it with -c or --hosts",
                        given.join(", ")
                    ))
                }),
        }
    }

    /// For a command that works on one host: a record's host must be that
    /// one (a record from another host is not looked for here by name).
    pub fn on_the_one(&self, host: Option<&str>) -> Result<()> {
        let Some(one) = self.single() else {
            return Err(Error::usage("several hosts are given; give one with -c"));
        };
        let route = self.route(host)?;
        if route == one {
            return Ok(());
        }
        let here = match &one {
            Route::Default => "the default host".to_owned(),
            Route::Host(h) => h.name.clone(),
        };
        let there = host.unwrap_or_default();
        Err(Error::usage(format!(
            "it is on host {there:?}, and {} works on one host, {here}: give -c {there}",
            crate::cli::program()
        )))
    }

    /// The run's one connection, for a command that works on one host; a
    /// usage error when several are named.
    pub fn open_one(&self, access: Access, timeout: Duration) -> Result<(Option<Host>, Connect)> {
        match (self, self.the_one()?) {
            (Scope::Default(target), _) => Ok((None, connect::open(target, access)?)),
            (_, one) => {
                let one = one.expect("a named scope's one host");
                Ok((Some(one.clone()), one.open(access, timeout)?))
            }
        }
    }

    /// The run's one named host (`None`: the unnamed default); a usage
    /// error when several are named, for a command that works on one.
    pub fn the_one(&self) -> Result<Option<&Host>> {
        match self {
            Scope::Default(_) => Ok(None),
            Scope::Named { hosts, .. } => match &hosts[..] {
                [one] => Ok(Some(one)),
                _ => Err(Error::usage(format!(
                    "{} works on one host at a time, and {} are given; give one with -c",
                    crate::cli::program(),
                    hosts.len()
                ))),
            },
        }
    }
}

/// Opens a connection, giving up after `timeout`. libvirt has no way to
/// cancel an open, so the thread of a host that never answers is left
/// behind; one per host and access at most: a later call for the same
/// host waits on the open already under way instead of starting another
/// (a scrape every 15 s of a hung host would otherwise add a thread each
/// time). An open that answers after every caller gave up is closed.
pub fn open_within(target: &Target, access: Access, timeout: Duration) -> Result<Connect> {
    let remote = target.uri.as_deref().is_some_and(is_remote);
    if remote {
        keepalive_loop();
    }
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let attempt = attempt_for(target, access, remote);
        let (lock, done) = &*attempt.slot;
        let slot = lock.lock().unwrap_or_else(|e| e.into_inner());
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let (mut slot, _) = done
            .wait_timeout_while(slot, left, |s| matches!(s, Opening::Pending))
            .unwrap_or_else(|e| e.into_inner());
        match std::mem::replace(&mut *slot, Opening::Taken) {
            Opening::Ready(opened) => return opened,
            // Another caller took this one: open again, in the time left.
            Opening::Taken if std::time::Instant::now() < deadline => continue,
            Opening::Taken => {}
            Opening::Pending => *slot = Opening::Pending,
        }
        break;
    }
    Err(Error::new(
        Code::ConnectFailed,
        format!(
            "cannot connect to {}: no answer within {timeout:?}; is the host up and its sshd or libvirtd answering? (--connect-timeout sets the wait)",
            target.uri.as_deref().unwrap_or("libvirt's default URI"),
        ),
    ))
}

/// One open under way, and where its outcome goes.
struct Attempt {
    slot: std::sync::Arc<(std::sync::Mutex<Opening>, std::sync::Condvar)>,
}

enum Opening {
    Pending,
    Ready(Result<Connect>),
    /// A caller has it.
    Taken,
}

type Opens = std::collections::HashMap<(Option<String>, bool), Attempt>;

/// The opens under way, by URI and access.
fn opens() -> &'static std::sync::Mutex<Opens> {
    static OPENS: std::sync::OnceLock<std::sync::Mutex<Opens>> = std::sync::OnceLock::new();
    OPENS.get_or_init(Default::default)
}

/// The open of `target` under way, or a new one on a thread of its own.
fn attempt_for(target: &Target, access: Access, remote: bool) -> Attempt {
    let key = (target.uri.clone(), access == Access::ReadOnly);
    let mut under_way = opens().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(a) = under_way.get(&key) {
        return Attempt {
            slot: a.slot.clone(),
        };
    }
    let slot = std::sync::Arc::new((
        std::sync::Mutex::new(Opening::Pending),
        std::sync::Condvar::new(),
    ));
    under_way.insert(key.clone(), Attempt { slot: slot.clone() });
    let (t, mine) = (target.clone(), slot.clone());
    std::thread::spawn(move || {
        let opened = connect::open(&t, access);
        if let Ok(conn) = &opened {
            if remote {
                // A host that stops answering after the open (a frozen
                // daemon, a dead link) fails its calls after about
                // KEEPALIVE_SECS × (KEEPALIVE_COUNT + 1) instead of
                // hanging them.
                let _ = conn.set_keep_alive(KEEPALIVE_SECS, KEEPALIVE_COUNT);
            }
        }
        // Off the list first: the next call starts a new open.
        opens()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        let (lock, done) = &*mine;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = Opening::Ready(opened);
        done.notify_all();
    });
    Attempt { slot }
}

/// This machine's host name (what the kernel says), for records and logs
/// that name where something ran.
pub fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// Whether a libvirt URI names another machine (`qemu+ssh://h1/system`)
/// rather than this one (`qemu:///system`, `test:///default`).
pub fn is_remote(uri: &str) -> bool {
    uri.contains("://") && !uri.contains(":///")
}

/// Whether an open connection is to another machine: its files are not
/// this machine's, and only its libvirt can reach them.
pub fn is_remote_conn(conn: &virt::connect::Connect) -> bool {
    conn.uri().is_ok_and(|u| is_remote(&u))
}

/// libvirt's keepalive for remote hosts: a probe every 5 s, and the
/// connection is closed after 3 go unanswered.
const KEEPALIVE_SECS: i32 = 5;
const KEEPALIVE_COUNT: u32 = 3;

/// libvirt sends keepalive probes from its event loop, and a stream opened
/// non-blocking is fed from it (hv-console): registered once, before the
/// first connection that needs it is opened, and run in a thread of its
/// own for the life of the process.
pub fn keepalive_loop() {
    static LOOP: OnceLock<bool> = OnceLock::new();
    LOOP.get_or_init(|| {
        if virt::event::event_register_default_impl().is_err() {
            return false;
        }
        std::thread::spawn(|| loop {
            if virt::event::event_run_default_impl().is_err() {
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        true
    });
}

/// The error for a host that could not be opened, in a run over several
/// hosts: that host's items fail with it, the others go on.
pub fn unreachable(host: &Host, err: &Error) -> Error {
    let fix = if host.uri.contains("+ssh") && err.code != Code::PermissionDenied {
        "; check that `ssh` to it works without a prompt (key loaded, host key in known_hosts) and that libvirtd runs there"
    } else {
        ""
    };
    Error::new(
        Code::Unreachable,
        format!("host {}: {}{fix}", host.name, err.message),
    )
}

/// `--to HOST` (hv-migrate, hv-preflight --for migrate): a URI, or an
/// alias of the hosts file (`--hosts`, else `HV_HOSTS`).
pub fn destination(
    to: &str,
    hosts_file: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Host> {
    match Scope::resolve(&[to.to_owned()], hosts_file, env) {
        Ok(Scope::Named { hosts, .. }) if hosts.len() == 1 => Ok(hosts[0].clone()),
        Ok(_) => Err(Error::usage(format!("--to {to:?}: give one host"))),
        Err(e) => Err(Error::usage(e.message.replacen("-c ", "--to ", 1))),
    }
}

/// The one host of a command that works on one host, once it has opened
/// it; lookups refuse records from another host (`targets::lookup`).
static ONE: OnceLock<Scope> = OnceLock::new();

/// Says that this run works on the one host of `scope`.
pub fn working_on(scope: &Scope) {
    let _ = ONE.set(scope.clone());
}

/// The host a one-host command works on, when the run named it (`-c h1`):
/// its records say so, as every command's do when hosts are named.
pub fn the_one_host() -> Option<String> {
    match ONE.get()? {
        Scope::Named { hosts, .. } if hosts.len() == 1 => Some(hosts[0].name.clone()),
        _ => None,
    }
}

/// Whether a record's host may be looked up in this run: always, unless
/// the run works on one host and the record names another.
pub fn may_look_up(host: Option<&str>) -> Result<()> {
    match (ONE.get(), host) {
        (Some(scope), Some(_)) => scope.on_the_one(host),
        _ => Ok(()),
    }
}

/// One host's connection, opened at most once and shared by the items bound
/// for it; the error is kept too, so an unreachable host fails fast.
type Cell = Arc<OnceLock<Result<Arc<Connect>>>>;

/// The connections of a run over several hosts, opened the first time an
/// item needs one; each host is opened once, and an unreachable host is
/// remembered, not retried per item.
pub struct Pool {
    scope: Scope,
    access: Access,
    timeout: Duration,
    conns: Mutex<HashMap<String, Cell>>,
    default: OnceLock<Result<Arc<Connect>>>,
    reached: AtomicBool,
}

impl Pool {
    pub fn new(scope: Scope, access: Access, timeout: Duration) -> Pool {
        Pool {
            scope,
            access,
            timeout,
            conns: Mutex::new(HashMap::new()),
            default: OnceLock::new(),
            reached: AtomicBool::new(false),
        }
    }

    /// Whether any host answered.
    pub fn reached(&self) -> bool {
        self.reached.load(Ordering::Relaxed)
    }

    fn cell(&self, host: &Host) -> Cell {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(conns.entry(host.name.clone()).or_default())
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// Opens every host of the run at once, each in its own thread; each
    /// result is kept for the items bound for that host.
    pub fn open_all(&self) {
        std::thread::scope(|s| {
            for host in self.scope.hosts() {
                let route = Route::Host(host.clone());
                s.spawn(move || {
                    let _ = self.get(&route);
                });
            }
        });
    }

    /// Whether the host of this name was opened and answered.
    pub fn reachable(&self, host: Option<&str>) -> bool {
        let Some(name) = host else { return false };
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns
            .get(name)
            .and_then(|cell| cell.get())
            .is_some_and(|opened| opened.is_ok())
    }

    /// The connection for a route.
    pub fn get(&self, route: &Route) -> Result<Arc<Connect>> {
        let got = self.open(route);
        if got.is_ok() {
            self.reached.store(true, Ordering::Relaxed);
        }
        got
    }

    fn open(&self, route: &Route) -> Result<Arc<Connect>> {
        match route {
            Route::Default => {
                let Scope::Default(target) = &self.scope else {
                    unreachable!("Route::Default comes only from Scope::Default")
                };
                self.default
                    .get_or_init(|| connect::open(target, self.access).map(Arc::new))
                    .clone()
            }
            Route::Host(host) => {
                self.cell(host)
                    .get_or_init(|| {
                        let opened = host.open(self.access, self.timeout).map(Arc::new);
                        // A run's only host is the hypervisor: not reaching it
                        // is the run's error, as without hosts (exit 3).
                        if self.scope.single().as_ref() == Some(route) {
                            opened
                        } else {
                            opened.map_err(|e| unreachable(host, &e))
                        }
                    })
                    .clone()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn a_hosts_file_has_aliases_uris_and_comments() {
        let text = "# lab\nh1 qemu+ssh://root@h1/system\n\n  h2\tqemu+ssh://h2/system # rack 2\n";
        let hosts = parse(text, "hosts").unwrap();
        assert_eq!(
            hosts,
            vec![
                Host {
                    name: "h1".into(),
                    uri: "qemu+ssh://root@h1/system".into()
                },
                Host {
                    name: "h2".into(),
                    uri: "qemu+ssh://h2/system".into()
                },
            ]
        );
    }

    #[test]
    fn a_bad_line_names_the_file_and_line() {
        let err = parse("h1 qemu:///system\nh2\n", "/etc/hv/hosts").unwrap_err();
        assert_eq!(err.code, Code::Usage);
        assert!(
            err.message
                .starts_with("/etc/hv/hosts line 2: expected `ALIAS URI`"),
            "{}",
            err.message
        );
        let err = parse("h1 qemu:///system\nh1 test:///default\n", "f").unwrap_err();
        assert!(
            err.message
                .contains("line 2: the alias \"h1\" is given twice"),
            "{}",
            err.message
        );
        let err = parse("h:1 qemu:///system\n", "f").unwrap_err();
        assert!(err.message.contains("may hold only"), "{}", err.message);
        let err = parse("h1 h2\n", "f").unwrap_err();
        assert!(err.message.contains("not a libvirt URI"), "{}", err.message);
    }

    #[test]
    fn dev_zero_is_not_a_hosts_file() {
        let err = load(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(err.code, Code::Usage);
        assert!(err.message.contains("not a hosts file"), "{}", err.message);
    }

    #[test]
    fn without_hosts_the_default_is_one_unnamed_host() {
        let scope = Scope::resolve(&[], None, no_env).unwrap();
        assert!(matches!(scope, Scope::Default(_)));
        assert_eq!(scope.route(None).unwrap(), Route::Default);
        // A record from a run over hosts named by URI goes back to it.
        assert_eq!(
            scope.route(Some("test:///default")).unwrap(),
            Route::Host(Host {
                name: "test:///default".into(),
                uri: "test:///default".into()
            })
        );
        let err = scope.route(Some("h1")).unwrap_err();
        assert!(err.message.contains("--hosts"), "{}", err.message);
    }

    #[test]
    fn c_picks_aliases_from_the_file_and_takes_uris() {
        let dir = std::env::temp_dir().join(format!("hv-hosts-test-{}", std::process::id()));
        std::fs::write(&dir, "h1 test:///default\nh2 qemu+ssh://h2/system\n").unwrap();
        let env = |k: &str| (k == "HV_HOSTS").then(|| dir.display().to_string());
        let all = Scope::resolve(&[], None, env).unwrap();
        assert_eq!(all.hosts().len(), 2);
        let err = all.route(None).unwrap_err();
        assert!(err.message.contains("2 hosts are given"), "{}", err.message);
        assert_eq!(
            all.route(Some("h2")).unwrap(),
            Route::Host(all.hosts()[1].clone())
        );
        assert_eq!(
            all.route(Some("qemu+ssh://h2/system")).unwrap(),
            Route::Host(all.hosts()[1].clone())
        );
        let one = Scope::resolve(&["h1".into(), "h1".into()], None, env).unwrap();
        assert_eq!(one.hosts(), &all.hosts()[..1]);
        assert_eq!(
            one.route(None).unwrap(),
            Route::Host(all.hosts()[0].clone())
        );
        let err = one.route(Some("h2")).unwrap_err();
        assert!(
            err.message.contains("not among the hosts given (h1)"),
            "{}",
            err.message
        );
        let err = Scope::resolve(&["h3".into()], None, env).unwrap_err();
        assert!(
            err.message.contains("no host has that alias"),
            "{}",
            err.message
        );
        let uri = Scope::resolve(&["test:///default".into()], None, no_env).unwrap();
        assert_eq!(uri.hosts()[0].name, "test:///default");
        // A URI the file lists is that host, by its alias: not a second host.
        let both = Scope::resolve(&["h1".into(), "test:///default".into()], None, env).unwrap();
        assert_eq!(both.hosts(), &all.hosts()[..1]);
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn the_destination_is_a_uri_or_an_alias_of_the_hosts_file() {
        let file = std::env::temp_dir().join(format!("hv-to-{}", std::process::id()));
        std::fs::write(&file, "h2 qemu+ssh://root@h2/system\n").unwrap();
        let by_alias = destination("h2", Some(&file), no_env).unwrap();
        assert_eq!(by_alias.name, "h2");
        assert_eq!(by_alias.uri, "qemu+ssh://root@h2/system");
        let by_uri = destination("qemu+tcp://h3/system", None, no_env).unwrap();
        assert_eq!(by_uri.name, "qemu+tcp://h3/system");
        let e = destination("h3", Some(&file), no_env).unwrap_err();
        assert_eq!(e.code, Code::Usage);
        assert!(e.message.starts_with("--to \"h3\""), "{}", e.message);
        std::fs::remove_file(&file).unwrap();
    }

    #[test]
    fn an_open_that_never_answers_gives_up() {
        // A listening socket that never speaks: libvirt's handshake waits.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = Target {
            uri: Some(format!("test+tcp://127.0.0.1:{port}/default")),
            source: UriSource::Flag,
        };
        let began = std::time::Instant::now();
        let err = open_within(&target, Access::ReadOnly, Duration::from_millis(500)).unwrap_err();
        assert!(began.elapsed() < Duration::from_secs(3));
        assert!(err.message.contains("no answer within"), "{}", err.message);
        drop(listener);
    }
}
