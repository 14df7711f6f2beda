//! A reading command (hv-ls, hv-snap ls) over every host of a run at
//! once. Each host is opened, looked up and read in a thread of its own,
//! and its records are printed as soon as that host is done: a slow host
//! holds back only its own records, and an unreachable one is one failed
//! record (`unreachable`) while the others are listed.
//!
//! A VM named without a host (an argument, a bare name) is looked for on
//! every host, since reading is harmless; it is `not_found` only when no
//! host that answered has it. A record that names its host is looked up
//! there and nowhere else: the same name on two hosts is two VMs.

use crate::cli::{self, Status};
use crate::connect::Access;
use crate::error::{Code, Error, Result};
use crate::hosts::{Host, Pool, Route, Scope};
use crate::output::Printer;
use crate::targets::{self, Input, VmRef};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use virt::connect::Connect;
use virt::domain::Domain;

/// One host's share of the run.
pub struct AtHost {
    /// `None` in a run that names no host: its records carry no `host`.
    pub host: Option<Host>,
    pub conn: Arc<Connect>,
    pub domains: Vec<Domain>,
}

impl AtHost {
    /// The `host` field of this host's records.
    pub fn name(&self) -> Option<&str> {
        self.host.as_ref().map(|h| h.name.as_str())
    }
}

/// Selects the domains named by `args` or piped stdin (or every domain,
/// as [`targets::select`] does), on every host they are on, and prints the
/// records `read` makes of each host's share.
pub fn each_host<W, F>(
    scope: &Scope,
    access: Access,
    timeout: Duration,
    args: &[String],
    printer: &mut Printer<W>,
    status: &mut Status,
    read: F,
) -> Result<()>
where
    W: std::io::Write,
    F: Fn(&AtHost, &mut Status) -> Result<Vec<Map<String, Value>>> + Sync,
{
    // One host: it is the hypervisor, and not reaching it (or not reading
    // it) ends the run, as it always has (exit 3). A host only a piped
    // record names is one failed record, as among several.
    let single = scope.single();
    let fatal = |host: Option<&Host>| match &single {
        Some(Route::Default) => host.is_none(),
        Some(Route::Host(one)) => host == Some(one),
        None => false,
    };
    each_host_with(
        scope,
        access,
        timeout,
        Some(args),
        printer,
        status,
        read,
        |host, got, printer, status| match got {
            Err(e) if fatal(host) => Err(e),
            Err(e) => {
                status.failed(&e);
                printer.emit(targets::failure_record(
                    &VmRef {
                        host: host.map(|h| h.name.clone()),
                        ..VmRef::default()
                    },
                    None,
                    &e,
                ))
            }
            Ok(records) => records.into_iter().try_for_each(|r| printer.emit(r)),
        },
    )
}

/// [`each_host`] for a command that makes something other than records of
/// each host's share (hv-health: checks, judged together at the end):
/// `take` gets each host's result on this thread, as each host finishes,
/// and an unreachable host as its error. With `args` `None` no VM is
/// selected (and stdin is not read): `read` gets each host, no domains.
#[allow(clippy::too_many_arguments)]
pub fn each_host_with<W, T, F, G>(
    scope: &Scope,
    access: Access,
    timeout: Duration,
    args: Option<&[String]>,
    printer: &mut Printer<W>,
    status: &mut Status,
    read: F,
    mut take: G,
) -> Result<()>
where
    W: std::io::Write,
    T: Send,
    F: Fn(&AtHost, &mut Status) -> Result<T> + Sync,
    G: FnMut(Option<&Host>, Result<T>, &mut Printer<W>, &mut Status) -> Result<()>,
{
    let piped = args.is_some_and(|a| a.is_empty() && cli::stdin_has_targets(a));
    let inputs: Option<Vec<Input>> = match args {
        None => Some(Vec::new()),
        Some(a) if !a.is_empty() => Some(targets::from_args(a)),
        Some(_) if piped => Some(targets::from_reader(std::io::stdin().lock()).collect()),
        Some(_) => None,
    };
    if piped && inputs.as_ref().is_some_and(Vec::is_empty) {
        cli::warn("stdin was an empty pipe, so no VM was selected; to mean every VM, give stdin </dev/null (cron gives its jobs an empty pipe)");
    }
    let every: Vec<Route> = match scope {
        Scope::Default(_) => vec![Route::Default],
        Scope::Named { hosts, .. } => hosts.iter().cloned().map(Route::Host).collect(),
    };
    // Which VMs each host is asked for; `None` is every domain.
    let mut asked: Vec<(Route, Option<Vec<VmRef>>)> = Vec::new();
    let mut anywhere: Vec<VmRef> = Vec::new();
    match inputs {
        None => asked = every.iter().cloned().map(|r| (r, None)).collect(),
        Some(inputs) => {
            for input in inputs {
                match input {
                    Input::PassThrough(record) => printer.emit(record)?,
                    Input::Malformed { message, .. } => {
                        cli::warn(message);
                        status.malformed();
                    }
                    Input::Vm(vm) if vm.host.is_none() && every.len() > 1 => anywhere.push(vm),
                    Input::Vm(vm) => match scope.route(vm.host.as_deref()) {
                        Ok(route) => match asked.iter_mut().find(|(r, _)| *r == route) {
                            Some((_, Some(vms))) => vms.push(vm),
                            _ => asked.push((route, Some(vec![vm]))),
                        },
                        Err(e) => {
                            let e = Error::new(e.code, format!("VM {}: {}", vm.label(), e.message));
                            status.failed(&e);
                            printer.emit(targets::failure_record(&vm, None, &e))?;
                        }
                    },
                }
            }
            if !anywhere.is_empty() || args.is_none() {
                for route in &every {
                    if !asked.iter().any(|(r, _)| r == route) {
                        asked.push((route.clone(), Some(Vec::new())));
                    }
                }
            }
        }
    }
    let pool = Pool::new(scope.clone(), access, timeout);
    let anywhere = &anywhere;
    let read = &read;
    let pool = &pool;
    let mut found_anywhere = vec![false; anywhere.len()];
    let mut any_answered = false;
    std::thread::scope(|s| -> Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        for (route, vms) in asked {
            let tx = tx.clone();
            s.spawn(move || {
                let got = share(pool, &route, vms, anywhere, read);
                let _ = tx.send((route, got));
            });
        }
        drop(tx);
        for (route, got) in rx {
            let host = match &route {
                Route::Default => None,
                Route::Host(h) => Some(h),
            };
            match got {
                Err(e) => take(host, Err(e), printer, status)?,
                Ok(done) => {
                    any_answered = true;
                    status.merge(&done.status);
                    for (i, found) in done.found.iter().enumerate() {
                        found_anywhere[i] |= *found;
                    }
                    for record in done.records {
                        printer.emit(record)?;
                    }
                    take(host, Ok(done.made), printer, status)?;
                }
            }
        }
        Ok(())
    })?;
    for (vm, found) in anywhere.iter().zip(found_anywhere) {
        if !found && any_answered {
            let e = Error::new(
                Code::NotFound,
                format!(
                    "no VM {} on any host that answered; `hv-ls` lists the defined VMs",
                    vm.label()
                ),
            );
            status.failed(&e);
            printer.emit(targets::failure_record(vm, None, &e))?;
        }
    }
    if !any_answered {
        status.none_reached();
    }
    Ok(())
}

/// What one host gave.
struct Share<T> {
    /// Failed lookups of the VMs asked for.
    records: Vec<Map<String, Value>>,
    /// What `read` made of the host's share.
    made: T,
    /// Which of the VMs named without a host this host has.
    found: Vec<bool>,
    status: Status,
}

fn share<T, F>(
    pool: &Pool,
    route: &Route,
    vms: Option<Vec<VmRef>>,
    anywhere: &[VmRef],
    read: &F,
) -> Result<Share<T>>
where
    F: Fn(&AtHost, &mut Status) -> Result<T>,
{
    let conn = pool.get(route)?;
    let host = match route {
        Route::Default => None,
        Route::Host(h) => Some(h.clone()),
    };
    let mut status = Status::default();
    let mut records = Vec::new();
    let mut found = vec![false; anywhere.len()];
    let domains = match vms {
        None => targets::all_domains(&conn)?,
        Some(vms) => {
            let mut seen = HashSet::new();
            let mut domains = Vec::new();
            let mut keep = |d: Domain, domains: &mut Vec<Domain>| {
                if seen.insert(d.uuid_string().unwrap_or_default()) {
                    domains.push(d);
                }
            };
            for vm in vms {
                let vm = VmRef {
                    host: host.as_ref().map(|h| h.name.clone()),
                    ..vm
                };
                match targets::lookup(&conn, &vm) {
                    Ok(d) => keep(d, &mut domains),
                    Err(e) => {
                        status.failed(&e);
                        records.push(targets::failure_record(&vm, None, &e));
                    }
                }
            }
            for (i, vm) in anywhere.iter().enumerate() {
                match targets::lookup(&conn, vm) {
                    Ok(d) => {
                        found[i] = true;
                        keep(d, &mut domains);
                    }
                    Err(e) if e.code == Code::NotFound => {}
                    Err(e) => {
                        let vm = VmRef {
                            host: host.as_ref().map(|h| h.name.clone()),
                            ..vm.clone()
                        };
                        status.failed(&e);
                        records.push(targets::failure_record(&vm, None, &e));
                    }
                }
            }
            domains
        }
    };
    let at = AtHost {
        host,
        conn,
        domains,
    };
    let made = read(&at, &mut status)?;
    Ok(Share {
        records,
        made,
        found,
        status,
    })
}
