//! Long transfers (a backup, an ISO download) show a one-line progress
//! display, but only to a person: on a terminal. Pipelines, cron and
//! systemd see nothing on stderr but real messages.

use crate::cli;
use crate::output::human_bytes;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the display reads: bytes done, and the total when it is known
/// (0 = unknown). Shared with the worker that counts.
#[derive(Debug, Default)]
pub struct Counter {
    pub done: AtomicU64,
    pub total: AtomicU64,
}

impl Counter {
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }
}

pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts redrawing `verb` and the counter four times a second, if
    /// stderr is a terminal; otherwise does nothing.
    pub fn start(verb: &'static str, counter: Arc<Counter>) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::io::stderr().is_terminal().then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || draw_until(&stop, verb, &counter))
        });
        Progress { stop, thread }
    }

    /// Clears the line.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread {
            let _ = t.join();
        }
    }
}

fn draw_until(stop: &AtomicBool, verb: &str, counter: &Counter) {
    let begun = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(250));
        eprint!("\r{}   ", line(verb, counter, begun.elapsed()));
    }
    eprint!("\r\x1b[K");
}

fn line(verb: &str, counter: &Counter, elapsed: Duration) -> String {
    let done = counter.done.load(Ordering::Relaxed);
    let total = counter.total.load(Ordering::Relaxed);
    let rate = (done as f64 / elapsed.as_secs_f64().max(0.001)) as u64;
    let of = if total > 0 {
        format!(" of {} ({}%)", human_bytes(total), done * 100 / total)
    } else {
        String::new()
    };
    format!(
        "{}: {} {}{of}, {}/s",
        cli::program(),
        human_bytes(done),
        verb,
        human_bytes(rate)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_the_share_when_the_total_is_known() {
        let c = Counter::default();
        c.add(512 << 20);
        assert!(line("read", &c, Duration::from_secs(1)).ends_with("512 MiB read, 512 MiB/s"));
        c.total.store(1 << 30, Ordering::Relaxed);
        let l = line("fetched", &c, Duration::from_secs(2));
        assert!(
            l.contains("512 MiB fetched of 1 GiB (50%), 256 MiB/s"),
            "{l}"
        );
    }
}
