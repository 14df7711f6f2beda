//! One VM action applied to many targets: lookup, parallel run with per-item
//! timeouts, one result record per VM, pass-through of upstream failures and
//! reports of malformed lines. Commands supply only the action itself.

use crate::cli::{self, ActionArgs, Status};
use crate::connect::Access;
use crate::error::{Error, Exit, Result};
use crate::hosts::{Pool, Route};
use crate::output::Column;
use crate::output::Printer;
use crate::runner::{self, Finished, Job, RunOptions};
use crate::targets::{self, Input, VmRef};
use serde::Serialize;
use serde_json::{Map, Value};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use virt::connect::Connect;
use virt::domain::Domain;

/// The targets of an action: arguments, or stdin when it is a pipe. An
/// action never defaults to "every VM": with neither, it is a usage error.
pub fn inputs(args: &[String], example: &str) -> Result<Box<dyn Iterator<Item = Input>>> {
    if !args.is_empty() {
        return Ok(Box::new(targets::from_args(args).into_iter()));
    }
    if cli::stdin_has_targets(args) {
        return Ok(Box::new(targets::from_reader(std::io::stdin().lock())));
    }
    Err(Error::usage(format!(
        "no VMs given: name them as arguments or pipe records in, e.g. `{example}`"
    )))
}

/// What an action command tells the bulk driver about itself.
pub struct Action {
    /// The `action` field of its records.
    pub name: &'static str,
    pub columns: &'static [Column],
    /// Hard limit per VM, past any wait the command does itself.
    pub item_timeout: Duration,
}

/// Opens the connections the action needs, runs `work` on every target and
/// prints the records.
///
/// A dry run opens the same read-write connection the real run would: on
/// a read-only one it would say `ok` for actions the user may not take,
/// and could not read what the real run reads (a backup's secure XML).
/// What a dry run does with it is only reads.
///
/// With one host, a host that cannot be reached ends the run (exit 3), as
/// before anything is done. With several, each item goes to its record's
/// host; an unreachable host fails its own items (`unreachable`) and the
/// others go on; the run exits 3 only when no host could be reached.
pub fn act<F, R>(
    inputs: impl Iterator<Item = Input>,
    args: &ActionArgs,
    action: Action,
    work: F,
) -> Result<Exit>
where
    F: Fn(&Connect, &Domain, &VmRef) -> Result<R> + Send + Sync + 'static,
    R: Serialize,
{
    act_moving(inputs, args, action, move |conn, dom, vm| {
        work(conn, dom, vm).map(|r| (r, None))
    })
}

/// [`act`] in stages, one after another (hv-start and hv-stop `--order`):
/// each stage's items at once (up to `-j`), then its pause, then the next.
/// One connection and one output for all of them, so the records read as
/// one run. After Ctrl-C no stage starts and no pause is waited: the
/// remaining items are reported cancelled.
pub fn act_in_stages<F, R>(
    stages: Vec<(Vec<Input>, Duration)>,
    args: &ActionArgs,
    action: Action,
    work: F,
) -> Result<Exit>
where
    F: Fn(&Connect, &Domain, &VmRef) -> Result<R> + Send + Sync + 'static,
    R: Serialize,
{
    let pool = open_pool(args)?;
    let mut printer = Printer::stdout(args.output.format(), action.columns);
    let opts = args.jobs.options(action.item_timeout);
    let work = Arc::new(work);
    let mut exit = Exit::Ok;
    let count = stages.len();
    for (i, (inputs, pause)) in stages.into_iter().enumerate() {
        let placed = Arc::clone(&pool);
        let jobs = inputs
            .into_iter()
            .flat_map(move |input| place(&placed, input, action.name));
        let work = Arc::clone(&work);
        let done = run(
            jobs,
            Arc::clone(&pool),
            &opts,
            action.name,
            &mut printer,
            move |conn, dom, vm| work(conn, dom, vm).map(|r| (r, None)),
        )?;
        exit = exit.worst(done);
        if i + 1 < count {
            pause_unless_interrupted(pause, &opts.cancel);
        }
    }
    printer.finish()?;
    Ok(exit)
}

/// The read-write connections of a run: the one host's, opened now so an
/// unreachable host is one error, or every host's at once, before any item
/// waits on one (a host that hangs costs its own items, not the others'
/// -j slots).
fn open_pool(args: &ActionArgs) -> Result<Arc<Pool>> {
    let scope = args.connect.scope()?;
    let pool = Arc::new(Pool::new(
        scope.clone(),
        Access::ReadWrite,
        args.connect.connect_timeout,
    ));
    match scope.single() {
        Some(route) => {
            pool.get(&route)?;
        }
        None => pool.open_all(),
    }
    Ok(pool)
}

fn pause_unless_interrupted(pause: Duration, cancel: &std::sync::atomic::AtomicBool) {
    let until = std::time::Instant::now() + pause;
    while !cancel.load(std::sync::atomic::Ordering::SeqCst) {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// [`act`] for an action that moves the VM to another host (hv-migrate):
/// its work returns, beside the fields, the host the VM is on afterwards,
/// which becomes the record's `host`, so the next command in the pipe
/// finds the VM where it now is.
pub fn act_moving<F, R>(
    inputs: impl Iterator<Item = Input>,
    args: &ActionArgs,
    action: Action,
    work: F,
) -> Result<Exit>
where
    F: Fn(&Connect, &Domain, &VmRef) -> Result<(R, Option<String>)> + Send + Sync + 'static,
    R: Serialize,
{
    let pool = open_pool(args)?;
    let mut printer = Printer::stdout(args.output.format(), action.columns);
    let opts = args.jobs.options(action.item_timeout);
    let placed = Arc::clone(&pool);
    let jobs = inputs.flat_map(move |input| place(&placed, input, action.name));
    let exit = run(
        jobs,
        Arc::clone(&pool),
        &opts,
        action.name,
        &mut printer,
        work,
    )?;
    printer.finish()?;
    Ok(exit)
}

enum Outcome {
    Record(Map<String, Value>, Option<Error>),
    Malformed(String),
}

/// Runs `action` on every target. The action gets the connection and the
/// domain and returns the record fields after `name`, `uuid`, `action`, `ok`.
fn run<W, F, R>(
    jobs: impl Iterator<Item = Job<VmRef, Outcome>>,
    pool: Arc<Pool>,
    opts: &RunOptions,
    action: &'static str,
    printer: &mut Printer<W>,
    work: F,
) -> Result<Exit>
where
    W: Write,
    F: Fn(&Connect, &Domain, &VmRef) -> Result<(R, Option<String>)> + Send + Sync + 'static,
    R: Serialize,
{
    let mut status = Status::default();
    let hosts = Arc::clone(&pool);
    let worker = move |vm: &VmRef| at_host(&hosts, vm, action, &work);
    runner::run(jobs, opts, worker, |finished| {
        let (record, err) = match finished {
            Finished::Done(_, Outcome::Record(r, e)) | Finished::Ready(Outcome::Record(r, e)) => {
                (r, e)
            }
            Finished::Done(_, Outcome::Malformed(m)) | Finished::Ready(Outcome::Malformed(m)) => {
                cli::warn(m);
                status.malformed();
                return Ok(());
            }
            Finished::Failed(vm, e) => (targets::failure_record(&vm, Some(action), &e), Some(e)),
        };
        if let Some(e) = &err {
            status.failed(e);
        }
        printer.emit(record)
    })?;
    if !pool.reached() {
        status.none_reached();
    }
    Ok(status.exit())
}

/// Says which host each item is for, before it is queued, so that even a
/// record written without its work (a timeout, a cancelled item) names it.
/// A VM named by a bare name or an argument, in a run over several hosts,
/// is looked for on each: it goes to the one host that has it, is
/// `not_found` when none that answered has it, and is refused when several
/// have it (acting on all of them is a guess). A record without `host` is
/// refused there too (`at_host`): records come from a run that knew.
fn place(pool: &Pool, input: Input, action: &str) -> Vec<Job<VmRef, Outcome>> {
    let vm = match input {
        Input::Vm(vm) => vm,
        Input::PassThrough(record) => return vec![Job::Ready(Outcome::Record(record, None))],
        Input::Malformed { message, .. } => return vec![Job::Ready(Outcome::Malformed(message))],
    };
    let hosts = pool.scope().hosts();
    if vm.host.is_some() || hosts.is_empty() {
        return vec![Job::Run(vm)];
    }
    if let [one] = hosts {
        return vec![Job::Run(VmRef {
            host: Some(one.name.clone()),
            ..vm
        })];
    }
    if vm.record.is_some() {
        return vec![Job::Run(vm)]; // refused with a usage error by at_host
    }
    let mut on: Vec<VmRef> = Vec::new();
    let mut answered = false;
    for host in hosts {
        let at = VmRef {
            host: Some(host.name.clone()),
            ..vm.clone()
        };
        match pool.get(&Route::Host(host.clone())) {
            // Its items fail with the host's error, one per item.
            Err(_) => on.push(at),
            Ok(conn) => {
                answered = true;
                match targets::lookup(&conn, &at) {
                    Ok(_) => on.push(at),
                    Err(e) if e.code == crate::error::Code::NotFound => {}
                    Err(_) => on.push(at), // at_host reports why
                }
            }
        }
    }
    let fail = |e: Error| {
        vec![Job::Ready(Outcome::Record(
            targets::failure_record(&vm, Some(action), &e),
            Some(e),
        ))]
    };
    let found: Vec<&str> = on.iter().filter_map(|v| v.host.as_deref()).collect();
    match on.len() {
        0 if answered => fail(Error::new(
            crate::error::Code::NotFound,
            format!(
                "no VM {} on any host that answered; `hv-ls` lists the defined VMs",
                vm.label()
            ),
        )),
        n if n > 1 && on.iter().all(|v| pool.reachable(v.host.as_deref())) => {
            fail(Error::usage(format!(
                "VM {} is on several hosts ({}): say which, e.g. `hv-ls -c {} {} | …`",
                vm.label(),
                found.join(", "),
                found[0],
                vm.label()
            )))
        }
        _ => on.into_iter().map(Job::Run).collect(),
    }
}

/// Sends the item to its host: the one its record names, else the run's.
fn at_host<F, R>(pool: &Pool, vm: &VmRef, action: &str, work: &F) -> Outcome
where
    F: Fn(&Connect, &Domain, &VmRef) -> Result<(R, Option<String>)>,
    R: Serialize,
{
    let fail = |vm: &VmRef, e: Error| {
        Outcome::Record(targets::failure_record(vm, Some(action), &e), Some(e))
    };
    let route = match pool.scope().route(vm.host.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            let e = Error::new(e.code, format!("VM {}: {}", vm.label(), e.message));
            return fail(vm, e);
        }
    };
    let vm = &VmRef {
        host: match &route {
            Route::Default => None,
            Route::Host(h) => Some(h.name.clone()),
        },
        ..vm.clone()
    };
    match pool.get(&route) {
        Ok(conn) => attempt(&conn, vm, action, work),
        Err(e) => fail(vm, e),
    }
}

fn attempt<F, R>(conn: &Connect, vm: &VmRef, action: &str, work: &F) -> Outcome
where
    F: Fn(&Connect, &Domain, &VmRef) -> Result<(R, Option<String>)>,
    R: Serialize,
{
    let domain = match targets::lookup(conn, vm) {
        Ok(d) => d,
        Err(e) => return Outcome::Record(targets::failure_record(vm, Some(action), &e), Some(e)),
    };
    let named = VmRef {
        name: domain.name().ok().or_else(|| vm.name.clone()),
        uuid: domain.uuid_string().ok().or_else(|| vm.uuid.clone()),
        ..vm.clone()
    };
    match work(conn, &domain, &named) {
        Ok((fields, moved)) => {
            let now_on = VmRef {
                host: moved.or(named.host.clone()),
                ..named
            };
            Outcome::Record(targets::success_record(&now_on, action, &fields), None)
        }
        Err(e) => Outcome::Record(targets::failure_record(&named, Some(action), &e), Some(e)),
    }
}
