//! The host's objects other than VMs (storage pools, networks) as hv-pool
//! and hv-net list and define them: `ls` over every host of a run, each in
//! a thread of its own, and `define` from specs, one record each. A host
//! that does not answer is one failed record and the others are listed,
//! as hv-ls does for VMs (across.rs).

use crate::cli::{self, ConnectArgs, Status};
use crate::connect::Access;
use crate::error::{Code, Error, Exit, Result};
use crate::hosts::{self, Host, Scope};
use crate::output::Printer;
use crate::targets::{self, VmRef};
use virt::connect::Connect;

/// What `ls` prints of one object.
pub trait Listed: serde::Serialize + Send {
    fn name(&self) -> &str;
}

/// Lists the objects `read` makes of each host (given its connection and
/// its name in a run that names hosts), only those named in `names` when
/// any are; `what` and `lister` name the kind for a name no host has
/// ("storage pool", "hv-pool ls").
pub fn list<T: Listed, W: std::io::Write>(
    connect: &ConnectArgs,
    names: &[String],
    (what, lister): (&str, &str),
    printer: &mut Printer<W>,
    read: impl Fn(&Connect, Option<&str>) -> Result<Vec<T>> + Sync,
) -> Result<Exit> {
    let scope = connect.scope()?;
    let all: Vec<(Option<Host>, crate::connect::Target)> = match &scope {
        Scope::Default(t) => vec![(None, t.clone())],
        Scope::Named { hosts, .. } => hosts
            .iter()
            .map(|h| (Some(h.clone()), h.target()))
            .collect(),
    };
    let timeout = connect.connect_timeout;
    let one = |(host, target): &(Option<Host>, crate::connect::Target)| -> Result<Vec<T>> {
        let conn = hosts::open_within(target, Access::ReadOnly, timeout)?;
        let mut got: Vec<T> = read(&conn, host.as_ref().map(|h| h.name.as_str()))?
            .into_iter()
            .filter(|o| names.is_empty() || names.iter().any(|n| n == o.name()))
            .collect();
        got.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(got)
    };
    // Each host in a thread of its own: a slow one holds back no other.
    let results: Vec<Result<Vec<T>>> = std::thread::scope(|s| {
        let threads: Vec<_> = all.iter().map(|h| s.spawn(move || one(h))).collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(Error::internal("reading a host panicked")))
            })
            .collect()
    });
    let mut status = Status::default();
    let mut reached = false;
    let mut found: Vec<String> = Vec::new();
    for ((host, _), got) in all.iter().zip(results) {
        match (got, host) {
            (Ok(objects), _) => {
                reached = true;
                for o in objects {
                    found.push(o.name().to_owned());
                    printer.emit(crate::output::to_record(&o))?;
                }
            }
            // One host: not reaching it ends the run (exit 3), as always.
            (Err(e), None) => return Err(e),
            (Err(e), Some(h)) => {
                let e = hosts::unreachable(h, &e);
                status.failed(&e);
                let at = VmRef {
                    host: Some(h.name.clone()),
                    ..VmRef::default()
                };
                printer.emit(targets::failure_record(&at, None, &e))?;
            }
        }
    }
    for name in names.iter().filter(|n| !found.contains(n)) {
        let e = Error::new(
            Code::NotFound,
            format!("no {what} {name} ({lister} lists them)"),
        );
        status.failed(&e);
        let named = VmRef {
            name: Some(name.clone()),
            ..VmRef::default()
        };
        printer.emit(targets::failure_record(&named, None, &e))?;
    }
    let exit = status.exit();
    Ok(if reached {
        exit
    } else {
        exit.worst(Exit::Unreachable)
    })
}

/// Defines an object from each spec of `files` (stdin without any) on the
/// run's one host: `define` makes one and says its UUID and what the record
/// adds; a spec that does not parse is a usage error on stderr, and the
/// next spec is still defined.
pub fn define<S, D, W>(
    connect: &ConnectArgs,
    files: &[std::path::PathBuf],
    printer: &mut Printer<W>,
    name_of: impl Fn(&S) -> String,
    mut define: impl FnMut(&Connect, &S) -> Result<(String, D)>,
) -> Result<Exit>
where
    S: serde::de::DeserializeOwned,
    D: serde::Serialize,
    W: std::io::Write,
{
    let conn = connect.open(Access::ReadWrite)?;
    let mut status = Status::default();
    for spec in cli::json_specs::<S>(files) {
        let spec = match spec {
            Ok(s) => s,
            Err(e) => {
                cli::warn(&e);
                status.malformed();
                continue;
            }
        };
        let name = name_of(&spec);
        let record = match define(&conn, &spec) {
            Ok((uuid, d)) => targets::success_record(&VmRef::named(&name, &uuid), "define", &d),
            Err(e) => {
                status.failed(&e);
                cli::warn(format!("{name}: {e}"));
                let named = VmRef {
                    name: Some(name),
                    ..VmRef::default()
                };
                targets::failure_record(&named, Some("define"), &e)
            }
        };
        printer.emit(record)?;
    }
    Ok(status.exit())
}
