//! Long transfers (a backup, an ISO download) show a one-line progress
//! display, but only to a person: on a terminal. Pipelines, cron and
//! systemd see nothing on stderr but real messages.

use crate::cli;
use crate::output::human_bytes;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// Whether a progress line is on the screen, and whether results have
/// begun to print as a table (then no line is drawn again): one lock, so
/// a result never lands after a half-drawn line or under a stale one.
struct Screen {
    drawn: bool,
    hidden: bool,
}

static SCREEN: Mutex<Screen> = Mutex::new(Screen {
    drawn: false,
    hidden: false,
});

fn screen() -> std::sync::MutexGuard<'static, Screen> {
    SCREEN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes the progress line before a record is printed; the next redraw
/// puts it back below the record.
pub fn clear_line() {
    let mut s = screen();
    if s.drawn {
        eprint!("\r\x1b[K");
        s.drawn = false;
    }
}

/// Removes the progress line for good: a table or other whole output is
/// about to be printed.
pub fn hide() {
    clear_line();
    screen().hidden = true;
}

fn draw_until(stop: &AtomicBool, verb: &str, counter: &Counter) {
    let begun = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(250));
        let mut s = screen();
        if !s.hidden && !stop.load(Ordering::Relaxed) {
            eprint!("\r{}\x1b[K", line(verb, counter, begun.elapsed()));
            s.drawn = true;
        }
    }
    clear_line();
}

fn line(verb: &str, counter: &Counter, elapsed: Duration) -> String {
    let done = counter.done.load(Ordering::Relaxed);
    let total = counter.total.load(Ordering::Relaxed);
    let rate = (done as f64 / elapsed.as_secs_f64().max(0.001)) as u64;
    let of = if total > 0 {
        let left = match total.saturating_sub(done).checked_div(rate) {
            Some(secs) if done > 0 => format!(", {} left", short(secs)),
            _ => String::new(),
        };
        format!(
            " of {} ({}%{left})",
            human_bytes(total),
            done.min(total) * 100 / total
        )
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

/// `42s`, `3m10s`, `1h05m`: a time left, to the precision a person reads.
fn short(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
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
            l.contains("512 MiB fetched of 1 GiB (50%, 2s left), 256 MiB/s"),
            "{l}"
        );
    }
}
