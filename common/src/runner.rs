//! The parallel runner behind every bulk action. Each item gets its own
//! thread, deadline and outcome, so one hung or failing VM never stalls or
//! aborts the others, and the whole run takes about as long as its slowest
//! item. Outcomes are handed back on the calling thread, in completion order,
//! so printing stays single-threaded and streams.

use crate::error::{Code, Error, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
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

struct InFlight<T> {
    item: Arc<T>,
    deadline: Option<Instant>,
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
    let (tx, rx) = mpsc::channel::<(usize, Option<R>)>();
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
        while !exhausted && running.len() < opts.jobs.max(1) {
            match jobs.next() {
                None => exhausted = true,
                Some(Job::Ready(r)) => emit(Finished::Ready(r))?,
                Some(Job::Run(item)) => {
                    let item = Arc::new(item);
                    spawn(next_id, Arc::clone(&item), Arc::clone(&work), tx.clone());
                    let deadline = opts.timeout.map(|t| Instant::now() + t);
                    running.insert(next_id, InFlight { item, deadline });
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

fn spawn<T, R, W>(id: usize, item: Arc<T>, work: Arc<W>, tx: mpsc::Sender<(usize, Option<R>)>)
where
    T: Send + Sync + 'static,
    R: Send + 'static,
    W: Fn(&T) -> R + Send + Sync + 'static,
{
    std::thread::spawn(move || {
        // A panicking worker still reports, so the run never waits for it forever.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&item))).ok();
        let _ = tx.send((id, outcome));
    });
}

fn wait_for_one<T, R, E>(
    rx: &mpsc::Receiver<(usize, Option<R>)>,
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
            if let Some(done) = running.remove(&id) {
                emit(match outcome {
                    Some(r) => Finished::Done(done.item, r),
                    None => Finished::Failed(
                        done.item,
                        Error::new(
                            Code::Libvirt,
                            "internal error: the worker for this item panicked",
                        ),
                    ),
                })?;
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let now = Instant::now();
            let expired: Vec<usize> = running
                .iter()
                .filter(|(_, f)| f.deadline.is_some_and(|d| d <= now))
                .map(|(id, _)| *id)
                .collect();
            for id in expired {
                let gone = running.remove(&id).expect("listed above");
                let secs = timeout.map_or(0.0, |t| t.as_secs_f64());
                emit(Finished::Failed(
                    gone.item,
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

    #[test]
    fn runs_in_parallel_and_reports_in_completion_order() {
        let start = Instant::now();
        let seen = collect(
            vec![Job::Run(300), Job::Run(100), Job::Run(200)],
            &opts(3, None),
        );
        assert!(
            start.elapsed() < Duration::from_millis(550),
            "took {:?}",
            start.elapsed()
        );
        assert_eq!(
            seen.iter().map(|s| s.0.unwrap()).collect::<Vec<_>>(),
            vec![100, 200, 300]
        );
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
        let seen = collect(vec![Job::Run(5_000), Job::Run(10)], &opts(2, Some(200)));
        assert!(start.elapsed() < Duration::from_millis(1_000));
        assert_eq!(
            seen,
            vec![(Some(10), Ok(10)), (Some(5_000), Err(Code::Timeout))]
        );
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
    fn a_panicking_item_fails_alone() {
        let mut codes = Vec::new();
        run(
            vec![Job::Run(0u8), Job::Run(1)],
            &opts(2, None),
            |n: &u8| {
                assert!(*n != 0, "boom");
            },
            |f| {
                codes.push(matches!(f, Finished::Done(..)));
                Ok(())
            },
        )
        .unwrap();
        codes.sort();
        assert_eq!(codes, vec![false, true]);
    }
}
