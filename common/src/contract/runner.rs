//! The parallel runner behind every bulk action. Each item gets its own
//! thread, deadline and outcome, so one hung or failing VM never stalls or
//! aborts the others, and the whole run takes about as long as its slowest
//! item. Outcomes are handed back on the calling thread, in completion order,
//! so printing stays single-threaded and streams.
//!
//! A thread cannot be killed, so an item that times out is reported at its
//! deadline while its worker may still run. Work that can stop early asks
//! [`abandoned`]; work with a step that cannot be undone (a backup's
//! commit) passes [`point_of_no_return`] first, so an item never does what
//! its record already said failed. A given-up item keeps its `-j` slot
//! until its worker ends, or for [`GRACE`] if the worker hangs.

use crate::error::{Code, Error, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// An input item: work to run, or an outcome already known (a record passed
/// through, a malformed line) that keeps its place in the stream.
pub enum Job<T, R> {
    Run(T),
    Ready(R),
}

pub enum Finished<T, R> {
    Done(Arc<T>, R),
    /// Timed out, cancelled before it started, or its worker died.
    Failed(Arc<T>, Error),
    Ready(R),
}

#[derive(Clone)]
pub struct RunOptions {
    pub jobs: usize,
    /// Per item; `None` waits as long as the item takes.
    pub timeout: Option<Duration>,
    /// Set by Ctrl-C: nothing new starts, the rest is reported cancelled.
    pub cancel: Arc<AtomicBool>,
}

/// How often the coordinator looks at the cancel flag while items run.
const TICK: Duration = Duration::from_millis(50);

/// How long a given-up item's worker keeps its slot if it does not end.
const GRACE: Duration = Duration::from_secs(30);

/// An item's state, shared by its worker and the coordinator.
const RUNNING: u8 = 0;
const ABANDONED: u8 = 1;
const COMMITTED: u8 = 2;

thread_local! {
    static ITEM: RefCell<Option<Arc<AtomicU8>>> = const { RefCell::new(None) };
}

/// Whether the runner gave up on the item this thread works on (its
/// timeout passed and its record is out): work that can stop early should.
pub fn abandoned() -> bool {
    ITEM.with(|item| {
        item.borrow()
            .as_ref()
            .is_some_and(|state| state.load(Ordering::SeqCst) == ABANDONED)
    })
}

/// Marks the step after which the item's work cannot be undone: from here
/// the item no longer times out. An error if it already has, and the work
/// must then stop without that step.
pub fn point_of_no_return() -> Result<()> {
    let Some(state) = ITEM.with(|item| item.borrow().clone()) else {
        return Ok(()); // not under a runner
    };
    match state.compare_exchange(RUNNING, COMMITTED, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) | Err(COMMITTED) => Ok(()),
        Err(_) => Err(Error::new(
            Code::Timeout,
            "given up on at its timeout before it could finish; nothing was committed",
        )),
    }
}

struct InFlight<T> {
    item: Arc<T>,
    deadline: Option<Instant>,
    state: Arc<AtomicU8>,
    /// Given up on: its outcome is dropped, and its slot is free from then.
    released_at: Option<Instant>,
}

impl<T> InFlight<T> {
    fn holds_a_slot(&self, now: Instant) -> bool {
        self.released_at.is_none_or(|t| now < t)
    }
}

pub fn run<T, R, I, W, E>(jobs: I, opts: &RunOptions, work: W, mut emit: E) -> Result<()>
where
    I: IntoIterator<Item = Job<T, R>>,
    T: Send + Sync + 'static,
    R: Send + 'static,
    W: Fn(&T) -> R + Send + Sync + 'static,
    E: FnMut(Finished<T, R>) -> Result<()>,
{
    let work = Arc::new(work);
    let (tx, rx) = mpsc::channel::<(usize, Result<R, String>)>();
    let mut running: HashMap<usize, InFlight<T>> = HashMap::new();
    let mut jobs = jobs.into_iter();
    let mut exhausted = false;
    let mut next_id = 0usize;
    loop {
        if opts.cancel.load(Ordering::SeqCst) && !exhausted {
            for job in jobs.by_ref() {
                emit(cancelled(job))?;
            }
            exhausted = true;
        }
        let slots = |running: &HashMap<usize, InFlight<T>>| {
            let now = Instant::now();
            running.values().filter(|f| f.holds_a_slot(now)).count()
        };
        while !exhausted && slots(&running) < opts.jobs.max(1) {
            match jobs.next() {
                None => exhausted = true,
                Some(Job::Ready(r)) => emit(Finished::Ready(r))?,
                Some(Job::Run(item)) => {
                    let item = Arc::new(item);
                    let state = Arc::new(AtomicU8::new(RUNNING));
                    let worker = Worker {
                        id: next_id,
                        state: Arc::clone(&state),
                        tx: tx.clone(),
                    };
                    spawn(worker, Arc::clone(&item), Arc::clone(&work));
                    let deadline = opts.timeout.map(|t| Instant::now() + t);
                    let flight = InFlight {
                        item,
                        deadline,
                        state,
                        released_at: None,
                    };
                    running.insert(next_id, flight);
                    next_id += 1;
                }
            }
        }
        if running.is_empty() {
            if exhausted {
                return Ok(());
            }
            continue;
        }
        // At the end, a given-up worker is waited for until its grace
        // ends, so what it cleans up when it stops (a backup job, a
        // checkpoint) is cleaned up.
        let now = Instant::now();
        if exhausted && !running.values().any(|f| f.holds_a_slot(now)) {
            return Ok(());
        }
        wait_for_one(&rx, &mut running, opts.timeout, &mut emit)?;
    }
}

fn cancelled<T, R>(job: Job<T, R>) -> Finished<T, R> {
    match job {
        Job::Run(item) => Finished::Failed(
            Arc::new(item),
            Error::new(Code::Cancelled, "interrupted before this item started"),
        ),
        Job::Ready(r) => Finished::Ready(r),
    }
}

/// A worker thread's ends of its item: its id, state and reply channel.
struct Worker<R> {
    id: usize,
    state: Arc<AtomicU8>,
    tx: mpsc::Sender<(usize, Result<R, String>)>,
}

fn spawn<T, R, W>(worker: Worker<R>, item: Arc<T>, work: Arc<W>)
where
    T: Send + Sync + 'static,
    R: Send + 'static,
    W: Fn(&T) -> R + Send + Sync + 'static,
{
    std::thread::spawn(move || {
        ITEM.with(|state| *state.borrow_mut() = Some(Arc::clone(&worker.state)));
        // A panicking worker still reports, so the run never waits for it forever.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&item)))
            .map_err(|panic| panic_message(panic.as_ref()));
        // Done before its deadline is seen: the outcome stands.
        let _ =
            worker
                .state
                .compare_exchange(RUNNING, COMMITTED, Ordering::SeqCst, Ordering::SeqCst);
        let _ = worker.tx.send((worker.id, outcome));
    });
}

/// What a panic said, for the record of the item it ended.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message");
    format!("the work on this item panicked ({what}); this is a bug in hv, please report it")
}

fn wait_for_one<T, R, E>(
    rx: &mpsc::Receiver<(usize, Result<R, String>)>,
    running: &mut HashMap<usize, InFlight<T>>,
    timeout: Option<Duration>,
    emit: &mut E,
) -> Result<()>
where
    E: FnMut(Finished<T, R>) -> Result<()>,
{
    let now = Instant::now();
    let nearest = running.values().filter_map(|f| f.deadline).min();
    let wait = nearest.map_or(TICK, |d| d.saturating_duration_since(now).min(TICK));
    match rx.recv_timeout(wait) {
        Ok((id, outcome)) => {
            // A late answer from an item already reported as timed out is dropped.
            let Some(done) = running.remove(&id) else {
                return Ok(());
            };
            if done.released_at.is_none() {
                emit(match outcome {
                    Ok(r) => Finished::Done(done.item, r),
                    Err(why) => Finished::Failed(done.item, Error::internal(why)),
                })?;
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let now = Instant::now();
            let expired = running
                .values_mut()
                .filter(|f| f.deadline.is_some_and(|d| d <= now));
            for flight in expired {
                flight.deadline = None;
                let gave_up = flight.state.compare_exchange(
                    RUNNING,
                    ABANDONED,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
                if gave_up.is_err() {
                    continue; // past its point of no return: it finishes
                }
                flight.released_at = Some(now + GRACE);
                let secs = timeout.map_or(0.0, |t| t.as_secs_f64());
                emit(Finished::Failed(
                    Arc::clone(&flight.item),
                    Error::new(Code::Timeout, format!("did not finish within {secs}s")),
                ))?;
            }
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => unreachable!("the runner holds a sender"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    fn opts(jobs: usize, timeout_ms: Option<u64>) -> RunOptions {
        RunOptions {
            jobs,
            timeout: timeout_ms.map(Duration::from_millis),
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Runs items that sleep `ms` and returns (item, outcome) in completion order.
    fn collect(
        items: Vec<Job<u64, u64>>,
        o: &RunOptions,
    ) -> Vec<(Option<u64>, std::result::Result<u64, Code>)> {
        let mut seen = Vec::new();
        run(
            items,
            o,
            |ms: &u64| {
                std::thread::sleep(Duration::from_millis(*ms));
                *ms
            },
            |f| {
                seen.push(match f {
                    Finished::Done(t, r) => (Some(*t), Ok(r)),
                    Finished::Failed(t, e) => (Some(*t), Err(e.code)),
                    Finished::Ready(r) => (None, Ok(r)),
                });
                Ok(())
            },
        )
        .unwrap();
        seen
    }

    /// Each item waits until the items ranked before it have been reported,
    /// so the order is forced by the runner, not by sleeps that a loaded
    /// machine stretches. Run one at a time, the first item (ranked last)
    /// could never go on: it gives up after 10 s and the order is wrong.
    #[test]
    fn runs_in_parallel_and_reports_in_completion_order() {
        let reported = Arc::new((Mutex::new(0usize), std::sync::Condvar::new()));
        let turn = Arc::clone(&reported);
        let mut seen = Vec::new();
        run(
            vec![Job::Run(2usize), Job::Run(0), Job::Run(1)],
            &opts(3, None),
            move |rank: &usize| {
                let (count, moved) = &*turn;
                let guard = count.lock().unwrap();
                let (_guard, waited) = moved
                    .wait_timeout_while(guard, Duration::from_secs(10), |n| *n < *rank)
                    .unwrap();
                !waited.timed_out()
            },
            |f| {
                if let Finished::Done(rank, in_turn) = f {
                    seen.push((*rank, in_turn));
                }
                let (count, moved) = &*reported;
                *count.lock().unwrap() += 1;
                moved.notify_all();
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, vec![(0, true), (1, true), (2, true)]);
    }

    #[test]
    fn jobs_bounds_concurrency() {
        let live = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (l, p) = (Arc::clone(&live), Arc::clone(&peak));
        let items = (0..8).map(Job::<u32, ()>::Run);
        run(
            items,
            &opts(2, None),
            move |_| {
                let now = l.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(30));
                l.fetch_sub(1, Ordering::SeqCst);
            },
            |_| Ok(()),
        )
        .unwrap();
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_slow_item_times_out_alone() {
        let start = Instant::now();
        // The quick item returns at once; the timeout leaves a loaded
        // machine's scheduler seconds to run it.
        let seen = outcomes(vec![60_000, 0], &opts(2, Some(2_000)), |ms| {
            let begun = Instant::now();
            while begun.elapsed() < Duration::from_millis(*ms) && !abandoned() {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(*ms)
        });
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "waited for the slow item"
        );
        assert_eq!(seen, vec![(0, Ok(())), (60_000, Err(Code::Timeout))]);
    }

    #[test]
    fn the_run_ends_after_a_given_up_worker_has_stopped() {
        let stopped = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stopped);
        let seen = outcomes(vec![5_000], &opts(1, Some(100)), move |_| {
            while !abandoned() {
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(200)); // its cleanup
            s.store(true, Ordering::SeqCst);
            Ok(0)
        });
        assert_eq!(seen, vec![(5_000, Err(Code::Timeout))]);
        assert!(
            stopped.load(Ordering::SeqCst),
            "the run ended before the cleanup"
        );
    }

    /// Outcomes of items whose work is `work`, as (item, done or code).
    fn outcomes(
        items: Vec<u64>,
        o: &RunOptions,
        work: impl Fn(&u64) -> Result<u64> + Send + Sync + 'static,
    ) -> Vec<(u64, std::result::Result<(), Code>)> {
        let mut seen = Vec::new();
        run(items.into_iter().map(Job::Run), o, work, |f| {
            seen.push(match f {
                Finished::Done(t, r) => (*t, r.map(|_| ()).map_err(|e| e.code)),
                Finished::Failed(t, e) => (*t, Err(e.code)),
                Finished::Ready(_) => unreachable!(),
            });
            Ok(())
        })
        .unwrap();
        seen
    }

    #[test]
    fn a_given_up_item_keeps_its_slot_until_its_worker_stops() {
        let live = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (l, p) = (Arc::clone(&live), Arc::clone(&peak));
        let seen = outcomes(vec![60_000, 0], &opts(1, Some(1_000)), move |ms| {
            p.fetch_max(l.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(*ms) && !abandoned() {
                std::thread::sleep(Duration::from_millis(5));
            }
            l.fetch_sub(1, Ordering::SeqCst);
            Ok(*ms)
        });
        assert_eq!(seen, vec![(60_000, Err(Code::Timeout)), (0, Ok(()))]);
        assert_eq!(peak.load(Ordering::SeqCst), 1, "-j 1 held");
    }

    #[test]
    fn an_item_past_its_point_of_no_return_does_not_time_out() {
        let committed = Arc::new(Mutex::new(Vec::new()));
        let c = Arc::clone(&committed);
        // Item n reaches its point of no return after n ms, then works 1 s
        // more, past the timeout; the margins are wide for a loaded machine.
        let seen = outcomes(vec![20, 1_500], &opts(2, Some(600)), move |ms| {
            std::thread::sleep(Duration::from_millis(*ms));
            point_of_no_return()?;
            c.lock().unwrap().push(*ms);
            std::thread::sleep(Duration::from_millis(1_000));
            Ok(*ms)
        });
        assert_eq!(seen, vec![(1_500, Err(Code::Timeout)), (20, Ok(()))]);
        std::thread::sleep(Duration::from_millis(1_500));
        assert_eq!(
            *committed.lock().unwrap(),
            vec![20],
            "the timed-out item stopped"
        );
        assert!(point_of_no_return().is_ok(), "outside a runner");
    }

    #[test]
    fn ready_items_pass_through_in_order() {
        let seen = collect(vec![Job::Ready(7), Job::Run(10)], &opts(1, None));
        assert_eq!(seen, vec![(None, Ok(7)), (Some(10), Ok(10))]);
    }

    #[test]
    fn cancel_reports_unstarted_items_and_lets_running_ones_finish() {
        let o = opts(1, None);
        let cancel = Arc::clone(&o.cancel);
        let seen = Mutex::new(Vec::new());
        run(
            vec![Job::Run(1u64), Job::Run(2), Job::Ready(99), Job::Run(3)],
            &o,
            move |n: &u64| {
                cancel.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(50));
                *n
            },
            |f| {
                seen.lock().unwrap().push(match f {
                    Finished::Done(t, _) => format!("done {t}"),
                    Finished::Failed(t, e) => format!("{} {t}", e.code.as_str()),
                    Finished::Ready(r) => format!("ready {r}"),
                });
                Ok(())
            },
        )
        .unwrap();
        // Unstarted items are reported as soon as the interrupt is seen, possibly
        // before the running one finishes; the order among the rest is kept.
        let mut seen = seen.into_inner().unwrap();
        let done = seen
            .iter()
            .position(|s| s == "done 1")
            .expect("the running item finishes");
        seen.remove(done);
        assert_eq!(seen, vec!["cancelled 2", "ready 99", "cancelled 3"]);
    }

    #[test]
    fn a_panicking_item_fails_alone_as_internal() {
        let mut codes = Vec::new();
        run(
            vec![Job::Run(0u8), Job::Run(1)],
            &opts(2, None),
            |n: &u8| {
                assert!(*n != 0, "boom");
            },
            |f| {
                codes.push(match f {
                    Finished::Failed(_, e) => {
                        assert!(e.message.contains("boom"), "{}", e.message);
                        Some(e.code)
                    }
                    _ => None,
                });
                Ok(())
            },
        )
        .unwrap();
        codes.sort_by_key(Option::is_none);
        assert_eq!(codes, vec![Some(Code::Internal), None]);
    }
}
