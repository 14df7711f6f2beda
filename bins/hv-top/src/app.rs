//! The screen: a thread per host refreshes and sends its sample; this
//! thread draws, reads keys and runs actions, so a refresh in flight never
//! freezes the keys. The terminal is restored however the run ends: q,
//! Ctrl-C (a key in raw mode), SIGTERM (polled between frames) and a panic
//! (a hook restores it before the message prints); a hangup (SIGHUP) ends
//! the run even while crossterm is stuck reading the dead terminal.

use crate::sample::{self, Row, Sample};
use crate::{keeps, targets, Options};
use hv_common::connect::Access;
use hv_common::output::human_age;
use hv_common::{hosts, Error, Exit, Result, State};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::crossterm::ExecutableCommand;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row as TableRow, Table, TableState};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// What a host's thread sends: its latest sample and the one before, or
/// why it could not refresh.
enum Update {
    Sampled(Box<(Sample, Option<Sample>)>),
    Failed(Option<String>, String),
    /// What the detail pane shows of a VM (by UUID).
    Detail(String, Detail),
    /// hv-health's problems, worst first.
    Health(Vec<serde_json::Value>),
    /// The repository's newest backup per VM, or why it cannot be read.
    Backups(std::result::Result<sample::Backups, String>),
    /// An action's outcome, for the bottom line.
    Acted(String),
}

/// A VM in the detail pane: hv-ls's record of it and its last audit
/// entries (hv-audit), each or why it cannot be read.
struct Detail {
    record: std::result::Result<serde_json::Value, String>,
    /// hv-snap ls's records of the VM, oldest first.
    snapshots: std::result::Result<Vec<serde_json::Value>, String>,
    audit: std::result::Result<Vec<serde_json::Value>, String>,
}

/// How many audit entries the detail pane shows, newest last.
const AUDIT_SHOWN: usize = 3;

/// How many snapshots the detail pane names, newest last.
const SNAPSHOTS_SHOWN: usize = 3;

/// What the helper thread is asked.
enum Ask {
    /// The detail pane of a VM.
    Detail(Box<Row>),
    /// The slow pass now, not at its time: an action may have changed
    /// what it reads (a backup made with B).
    Slow,
}

/// How often hv-health runs for the header, the repository's backups are
/// read and snapshots counted again: these read more than a refresh does.
const SLOW_EVERY: Duration = Duration::from_secs(30);

/// A host as last seen: its figures and rows, or why it did not answer.
type Seen = std::result::Result<(sample::Host, Vec<Row>), String>;

/// The columns the table can be sorted by, in the order `s` cycles them.
const SORTS: [&str; 7] = ["name", "state", "cpu%", "memory", "disk", "net", "backup"];

struct App {
    /// Per host (alias or None): its rows, or its error.
    hosts: BTreeMap<Option<String>, Seen>,
    refreshed: Option<String>,
    cursor: usize,
    selected: HashSet<String>,
    sort: usize,
    reverse: bool,
    filter: String,
    editing: bool,
    state_filter: Option<State>,
    /// The last action's outcome, shown on the bottom line.
    status: String,
    /// A force stop waiting for `y`.
    confirming: Option<Vec<Row>>,
    read_only: bool,
    colour: bool,
    tags: Vec<String>,
    interval: Duration,
    /// The detail pane, when open: the VM's UUID and what was read of it.
    detail: Option<(String, Option<Detail>)>,
    /// hv-health's last problems, worst first.
    health: Vec<serde_json::Value>,
    /// --repo, and what was last read of it.
    repo: Option<String>,
    backups: Option<std::result::Result<sample::Backups, String>>,
    ask: mpsc::Sender<Ask>,
    /// For the threads that run actions.
    tx: mpsc::Sender<Update>,
    /// A VM whose console the user asked for (C), opened between frames.
    console: Option<Row>,
    /// The run's hosts, for hv-console's flags.
    scope: hosts::Scope,
}

/// Runs what the screen needs besides the refreshes, off its thread: the
/// detail pane's hv-ls and hv-audit, and every [`SLOW_EVERY`] hv-health
/// and the repository's backups.
fn helper(
    asked: &mpsc::Receiver<Ask>,
    tx: &mpsc::Sender<Update>,
    health_args: &[String],
    repo: Option<&str>,
    stop: &AtomicBool,
) {
    let mut next_slow = std::time::Instant::now();
    while !stop.load(Ordering::SeqCst) {
        if std::time::Instant::now() >= next_slow {
            if let Some(repo) = repo {
                let read = crate::local_repo(repo)
                    .and_then(sample::backups)
                    .map_err(|e| e.message);
                if tx.send(Update::Backups(read)).is_err() {
                    return;
                }
            }
            let mut full: Vec<&str> = vec!["--problems"];
            full.extend(health_args.iter().map(String::as_str));
            // hv-health exits 1 when a check fails: its records are the answer.
            let mut problems = run_command("hv-health", &full, "").unwrap_or_default();
            let rank = |r: &serde_json::Value| match r["status"].as_str() {
                Some("fail") => 0,
                Some("warn") => 1,
                _ => 2,
            };
            problems.retain(|r| rank(r) < 2);
            problems.sort_by_key(rank);
            if tx.send(Update::Health(problems)).is_err() {
                return;
            }
            next_slow = std::time::Instant::now() + SLOW_EVERY;
        }
        match asked.recv_timeout(Duration::from_millis(500)) {
            Ok(Ask::Slow) => next_slow = std::time::Instant::now(),
            Ok(Ask::Detail(row)) => {
                let input = records_of(std::slice::from_ref(&row));
                let record = run_command("hv-ls", &[], &input).and_then(|r| {
                    r.into_iter()
                        .next()
                        .ok_or_else(|| "hv-ls printed nothing".into())
                });
                // The UUID: the same name on another host is another VM.
                let mut audit_args = vec!["--vm", row.uuid.as_str()];
                if let Some(host) = &row.host {
                    audit_args.extend(["--host", host.as_str()]);
                }
                let audit = run_command("hv-audit", &audit_args, "").map(|mut entries| {
                    entries.drain(..entries.len().saturating_sub(AUDIT_SHOWN));
                    entries
                });
                let snapshots = run_command("hv-snap", &["ls"], &input);
                let detail = Detail {
                    record,
                    snapshots,
                    audit,
                };
                if tx.send(Update::Detail(row.uuid, detail)).is_err() {
                    return;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// A VM as hv's commands read it on stdin (docs/records.md): the host
/// sends it back to the host it is on.
#[derive(serde::Serialize)]
struct Target<'a> {
    name: &'a str,
    uuid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<&'a str>,
}

/// Rows as JSON lines of [`Target`].
fn records_of(rows: &[Row]) -> String {
    rows.iter()
        .map(|r| {
            let target = Target {
                name: &r.name,
                uuid: &r.uuid,
                host: r.host.as_deref(),
            };
            serde_json::to_string(&target).expect("a target serializes") + "\n"
        })
        .collect()
}

pub fn run(opts: &Options) -> Result<Exit> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| Error::io("cannot watch for SIGTERM", e))?;
    }
    // A terminal that hangs up (its window closed, its tmux killed) sends
    // SIGHUP, and crossterm then spins reading an empty terminal without
    // coming back to the loop that would see the flag: this thread ends
    // the run in its place. A normal quit ends the process first.
    {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
            }
            std::thread::sleep(Duration::from_secs(2));
            restore();
            std::process::exit(0);
        });
    }
    let (tx, rx) = mpsc::channel();
    let all = targets(&opts.scope);
    let mut health_args = host_args(&opts.scope);
    health_args.extend([
        "--connect-timeout".to_owned(),
        format!("{}s", opts.connect_timeout.as_secs().max(1)),
    ]);
    for (alias, target) in all {
        let tx = tx.clone();
        let (timeout, interval, stop) = (opts.connect_timeout, opts.interval, Arc::clone(&stop));
        std::thread::spawn(move || refresh_loop(alias, target, timeout, interval, &tx, &stop));
    }
    let (ask, asked) = mpsc::channel::<Ask>();
    {
        let (tx, stop, repo) = (tx.clone(), Arc::clone(&stop), opts.repo.clone());
        std::thread::spawn(move || helper(&asked, &tx, &health_args, repo.as_deref(), &stop));
    }
    let mut app = App {
        hosts: BTreeMap::new(),
        refreshed: None,
        cursor: 0,
        selected: HashSet::new(),
        sort: 0,
        reverse: false,
        filter: String::new(),
        editing: false,
        state_filter: None,
        status: String::new(),
        confirming: None,
        read_only: opts.read_only,
        colour: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        tags: opts.tags.clone(),
        interval: opts.interval,
        detail: None,
        health: Vec::new(),
        repo: opts.repo.clone(),
        backups: None,
        ask,
        tx,
        console: None,
        scope: opts.scope.clone(),
    };
    let terminal = Screen::enter()?;
    let outcome = app.main_loop(terminal, &rx, &stop);
    stop.store(true, Ordering::SeqCst);
    outcome
}

/// The flags that name the run's hosts to another hv command (hv-health),
/// so its records name them as hv-top's do.
fn host_args(scope: &hosts::Scope) -> Vec<String> {
    match scope {
        hosts::Scope::Default(target) => target
            .uri
            .iter()
            .flat_map(|u| ["-c".to_owned(), u.clone()])
            .collect(),
        hosts::Scope::Named { hosts, file } => {
            let mut args: Vec<String> = file
                .iter()
                .flat_map(|f| ["--hosts".to_owned(), f.display().to_string()])
                .collect();
            for h in hosts {
                // The alias when a file gave it, else the URI itself.
                args.extend(["-c".to_owned(), h.name.clone()]);
            }
            args
        }
    }
}

/// Owns the terminal's raw mode and alternate screen; dropping it gives
/// the terminal back, on any return path.
struct Screen(ratatui::Terminal<ratatui::backend::CrosstermBackend<std::io::Stdout>>);

impl Screen {
    fn enter() -> Result<Screen> {
        let io = |e| Error::io("cannot set up the terminal", e);
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            hook(info);
        }));
        enable_raw_mode().map_err(io)?;
        std::io::stdout()
            .execute(EnterAlternateScreen)
            .map_err(io)?;
        let backend = ratatui::backend::CrosstermBackend::new(std::io::stdout());
        let mut terminal = ratatui::Terminal::new(backend).map_err(io)?;
        terminal.clear().map_err(io)?;
        Ok(Screen(terminal))
    }
}

impl Screen {
    /// Takes the terminal back after a program that had it (hv-console).
    fn resume(&mut self) -> Result<()> {
        let io = |e| Error::io("cannot set up the terminal", e);
        enable_raw_mode().map_err(io)?;
        std::io::stdout()
            .execute(EnterAlternateScreen)
            .map_err(io)?;
        self.0.clear().map_err(io)
    }
}

/// Runs hv-console on `row`'s VM in this terminal, hv-top's screen left
/// meanwhile; its outcome for the bottom line. A failure's message is
/// left on the screen until Enter, so it can be read.
fn console(row: &Row, scope: &hosts::Scope) -> String {
    restore();
    let mut args = vec![row.uuid.clone()];
    match (scope, &row.host) {
        (hosts::Scope::Named { file, .. }, Some(host)) => {
            if let Some(f) = file {
                args.extend(["--hosts".to_owned(), f.display().to_string()]);
            }
            args.extend(["-c".to_owned(), host.clone()]);
        }
        (hosts::Scope::Default(target), _) => {
            args.extend(target.uri.iter().flat_map(|u| ["-c".to_owned(), u.clone()]));
        }
        (hosts::Scope::Named { .. }, None) => {}
    }
    let status = std::process::Command::new(sibling("hv-console"))
        .args(&args)
        .status();
    match status {
        Ok(s) if s.success() => format!("hv-console: left {}", row.name),
        Ok(s) => {
            eprint!("\n[hv-console failed; Enter returns to hv-top]");
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            format!("hv-console: {} ({s})", row.name)
        }
        Err(e) => format!("hv-console: cannot run it: {e}"),
    }
}

/// An hv command from beside hv-top, else from PATH.
fn sibling(program: &str) -> std::ffi::OsString {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(program)))
        .filter(|p| p.exists())
        .map_or_else(|| program.into(), |p| p.into_os_string())
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
        let _ = self.0.show_cursor();
    }
}

fn restore() {
    let _ = disable_raw_mode();
    let _ = std::io::stdout().execute(LeaveAlternateScreen);
}

fn refresh_loop(
    alias: Option<String>,
    target: hv_common::connect::Target,
    timeout: Duration,
    interval: Duration,
    tx: &mpsc::Sender<Update>,
    stop: &AtomicBool,
) {
    let mut known = sample::Known::default();
    let mut last: Option<Sample> = None;
    let mut next_slow = std::time::Instant::now() + SLOW_EVERY;
    let mut conn: Option<virt::connect::Connect> = None;
    while !stop.load(Ordering::SeqCst) {
        if conn.is_none() {
            match hosts::open_within(&target, Access::ReadOnly, timeout) {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    if tx.send(Update::Failed(alias.clone(), e.message)).is_err() {
                        return;
                    }
                }
            }
        }
        if let Some(c) = &conn {
            let slow = std::time::Instant::now() >= next_slow;
            if slow {
                next_slow = std::time::Instant::now() + SLOW_EVERY;
            }
            match sample::sample(c, alias.as_deref(), &mut known, slow) {
                Ok(now) => {
                    let before = last.replace(now.clone());
                    if tx.send(Update::Sampled(Box::new((now, before)))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    conn = None; // reopened next time: libvirtd may have restarted
                    if tx.send(Update::Failed(alias.clone(), e.message)).is_err() {
                        return;
                    }
                }
            }
        }
        let until = std::time::Instant::now() + interval;
        while std::time::Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl App {
    fn main_loop(
        &mut self,
        mut screen: Screen,
        rx: &mpsc::Receiver<Update>,
        stop: &AtomicBool,
    ) -> Result<Exit> {
        let io = |e| Error::io("cannot draw", e);
        loop {
            while let Ok(update) = rx.try_recv() {
                self.take(update);
            }
            screen.0.draw(|f| self.draw(f)).map_err(io)?;
            if stop.load(Ordering::SeqCst) {
                return Ok(Exit::Ok);
            }
            if event::poll(Duration::from_millis(200)).map_err(io)? {
                match event::read().map_err(io)? {
                    Event::Key(key) if key.kind == KeyEventKind::Press && !self.key(key) => {
                        return Ok(Exit::Ok);
                    }
                    _ => {}
                }
            }
            if let Some(row) = self.console.take() {
                self.status = console(&row, &self.scope);
                screen.resume()?;
            }
        }
    }

    fn take(&mut self, update: Update) {
        match update {
            Update::Sampled(both) => {
                let (now, before) = *both;
                let rows = sample::rows(&now, before.as_ref());
                self.hosts
                    .insert(now.host.alias.clone(), Ok((now.host, rows)));
                self.refreshed = Some(clock());
            }
            Update::Failed(alias, message) => {
                self.hosts.insert(alias, Err(message));
            }
            Update::Detail(uuid, got) => {
                if let Some((open, slot)) = &mut self.detail {
                    if *open == uuid {
                        *slot = Some(got);
                    }
                }
            }
            Update::Health(problems) => self.health = problems,
            Update::Backups(read) => self.backups = Some(read),
            Update::Acted(status) => {
                self.status = status;
                let _ = self.ask.send(Ask::Slow);
            }
        }
    }

    /// The rows shown: filtered and sorted.
    fn visible(&self) -> Vec<Row> {
        let mut rows: Vec<Row> = self
            .hosts
            .values()
            .filter_map(|h| h.as_ref().ok())
            .flat_map(|(_, rows)| rows.iter().cloned())
            .filter(|r| keeps(r, &self.tags))
            .filter(|r| self.filter.is_empty() || r.name.contains(&self.filter))
            .filter(|r| self.state_filter.is_none_or(|s| r.state == s))
            .collect();
        if let Some(Ok(b)) = &self.backups {
            sample::with_backups(&mut rows, b, hv_common::time::now());
        }
        let num = |v: Option<f64>| v.unwrap_or(-1.0);
        let sum = |a: Option<u64>, b: Option<u64>| num(a.zip(b).map(|(a, b)| (a + b) as f64));
        rows.sort_by(|a, b| {
            let by = match SORTS[self.sort] {
                "state" => a.state.as_str().cmp(b.state.as_str()),
                "cpu%" => num(b.cpu_percent).total_cmp(&num(a.cpu_percent)),
                "memory" => b.memory_bytes.cmp(&a.memory_bytes),
                "disk" => sum(b.disk_read_bytes_per_s, b.disk_write_bytes_per_s)
                    .total_cmp(&sum(a.disk_read_bytes_per_s, a.disk_write_bytes_per_s)),
                "net" => sum(b.net_rx_bytes_per_s, b.net_tx_bytes_per_s)
                    .total_cmp(&sum(a.net_rx_bytes_per_s, a.net_tx_bytes_per_s)),
                // The most at risk first: never backed up, then the oldest.
                "backup" => b
                    .last_backup_age_seconds
                    .unwrap_or(i64::MAX)
                    .cmp(&a.last_backup_age_seconds.unwrap_or(i64::MAX)),
                _ => std::cmp::Ordering::Equal,
            };
            by.then_with(|| a.name.cmp(&b.name))
        });
        if self.reverse {
            rows.reverse();
        }
        rows
    }

    /// Handles a key; false to quit.
    fn key(&mut self, key: KeyEvent) -> bool {
        let ctrl_c =
            key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c');
        if ctrl_c {
            return false;
        }
        if self.editing {
            match key.code {
                KeyCode::Enter => self.editing = false,
                KeyCode::Esc => {
                    self.editing = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => {}
            }
            self.cursor = 0;
            return true;
        }
        if let Some(rows) = self.confirming.take() {
            if key.code == KeyCode::Char('y') {
                self.act("hv-stop", &["--force"], &rows);
            } else {
                self.status = "force stop cancelled".into();
            }
            return true;
        }
        let rows = self.visible();
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return false,
            KeyCode::Down | KeyCode::Char('j') => {
                self.cursor = (self.cursor + 1).min(rows.len().saturating_sub(1));
            }
            KeyCode::Up | KeyCode::Char('k') => self.cursor = self.cursor.saturating_sub(1),
            KeyCode::Char(' ') => {
                if let Some(r) = rows.get(self.cursor) {
                    if !self.selected.remove(&r.uuid) {
                        self.selected.insert(r.uuid.clone());
                    }
                }
            }
            KeyCode::Char('s') => self.sort = (self.sort + 1) % SORTS.len(),
            KeyCode::Char('r') => self.reverse = !self.reverse,
            KeyCode::Char('/') => {
                self.editing = true;
                self.filter.clear();
            }
            KeyCode::Char('t') => {
                self.state_filter = match self.state_filter {
                    None => Some(State::Running),
                    Some(State::Running) => Some(State::Paused),
                    Some(State::Paused) => Some(State::Shutoff),
                    Some(State::Shutoff) => Some(State::Crashed),
                    Some(_) => None,
                };
                self.cursor = 0;
            }
            KeyCode::Enter => {
                self.detail = match self.detail {
                    Some(_) => None,
                    None => rows.get(self.cursor).map(|r| (r.uuid.clone(), None)),
                };
                if let Some(r) = rows.get(self.cursor).filter(|_| self.detail.is_some()) {
                    let _ = self.ask.send(Ask::Detail(Box::new(r.clone())));
                }
            }
            KeyCode::Char(c @ ('S' | 'T' | 'K' | 'P' | 'B' | 'C')) if self.read_only => {
                self.status = format!("{c}: hv-top runs --read-only; actions are off");
            }
            KeyCode::Char('S') => self.act("hv-start", &[], &self.targets(&rows)),
            KeyCode::Char('T') => self.act("hv-stop", &[], &self.targets(&rows)),
            KeyCode::Char('P') => self.act("hv-snap", &["create"], &self.targets(&rows)),
            // To --repo, else to the repository HV_BACKUP_REPO names, as the
            // backup timer.
            KeyCode::Char('B') => {
                let repo = self.repo.clone();
                let mut args = vec!["create"];
                if let Some(r) = &repo {
                    args.extend(["--repo", r.as_str()]);
                }
                self.act("hv-backup", &args, &self.targets(&rows));
            }
            // The screen is left for hv-console, and comes back after it.
            KeyCode::Char('C') => self.console = rows.get(self.cursor).cloned(),
            KeyCode::Char('K') => {
                let targets = self.targets(&rows);
                if !targets.is_empty() {
                    let names: Vec<&str> = targets.iter().map(|r| r.name.as_str()).collect();
                    self.status = format!("force off {}? y to confirm", names.join(", "));
                    self.confirming = Some(targets);
                }
            }
            _ => {}
        }
        self.follow(&rows);
        true
    }

    /// Keeps the open detail pane on the VM under the cursor.
    fn follow(&mut self, rows: &[Row]) {
        let Some(row) = rows.get(self.cursor.min(rows.len().saturating_sub(1))) else {
            return;
        };
        if let Some((uuid, slot)) = &mut self.detail {
            if *uuid != row.uuid {
                *uuid = row.uuid.clone();
                *slot = None;
                let _ = self.ask.send(Ask::Detail(Box::new(row.clone())));
            }
        }
    }

    /// The detail pane's lines: hv-ls's record of the VM briefly, and its
    /// last audit entries.
    fn detail_lines(&self, rows: &[Row]) -> Vec<Line<'static>> {
        let Some((uuid, got)) = &self.detail else {
            return Vec::new();
        };
        let Some(detail) = got else {
            return vec![Line::from("reading…")];
        };
        let r = match &detail.record {
            Err(e) => return vec![Line::from(format!("cannot read it: {e}"))],
            Ok(r) => r,
        };
        let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
        let row = rows.iter().find(|r| r.uuid == *uuid);
        let age = |v: Option<i64>| v.map_or_else(|| "-".into(), human_age);
        let mut lines = vec![Line::from(format!(
            "{}  {}  up {}  backup {}  snapshots {}  checkpoints {}  autostart {}",
            text(&r["name"]),
            text(&r["uuid"]),
            age(row.and_then(|r| r.uptime_seconds)),
            age(row.and_then(|r| r.last_backup_age_seconds)),
            r["snapshot_count"],
            r["checkpoint_count"],
            r["autostart"],
        ))];
        if let Some(row) = row {
            lines.push(Line::from(format!(
                "  memory {} of {} max, {} on the host, {} vCPU{}",
                bytes(row.memory_bytes as f64),
                bytes(row.max_memory_bytes as f64),
                row.memory_resident_bytes
                    .map_or("-".into(), |b| bytes(b as f64)),
                row.vcpus,
                if row.vcpus == 1 { "" } else { "s" }
            )));
        }
        for d in r["disks"].as_array().into_iter().flatten() {
            let size = d["capacity_bytes"]
                .as_u64()
                .map_or("-".into(), |b| bytes(b as f64));
            lines.push(Line::from(format!(
                "  disk {} {} {} {}",
                text(&d["target"]),
                text(&d["format"]),
                size,
                text(&d["source"])
            )));
        }
        for n in r["interfaces"].as_array().into_iter().flatten() {
            lines.push(Line::from(format!(
                "  nic  {} {} {} {}",
                text(&n["mac"]),
                text(&n["type"]),
                text(&n["source"]),
                text(&n["model"])
            )));
        }
        match &detail.snapshots {
            Ok(snaps) if snaps.is_empty() => {}
            Ok(snaps) => {
                let older = snaps.len().saturating_sub(SNAPSHOTS_SHOWN);
                for s in &snaps[older..] {
                    lines.push(Line::from(format!(
                        "  snap  {} {} {}{}",
                        text(&s["snapshot"]),
                        text(&s["created_at"])
                            .replace('T', " ")
                            .trim_end_matches('Z'),
                        text(&s["kind"]),
                        if s["current"] == true {
                            " (current)"
                        } else {
                            ""
                        }
                    )));
                }
                if older > 0 {
                    lines.push(Line::from(format!("  snap  and {older} older")));
                }
            }
            Err(e) => lines.push(Line::from(format!("  snapshots: {e}"))),
        }
        match &detail.audit {
            Ok(entries) if entries.is_empty() => lines.push(Line::from("  audit: no entries")),
            Ok(entries) => {
                for e in entries {
                    lines.push(Line::from(format!(
                        "  audit {} {} {} {}",
                        text(&e["time"]).replace('T', " ").trim_end_matches('Z'),
                        text(&e["user"]),
                        text(&e["action"]),
                        if e["ok"] == true {
                            "ok".to_owned()
                        } else {
                            format!(
                                "failed: {}",
                                e["record"]["error"]["message"].as_str().unwrap_or("?")
                            )
                        }
                    )));
                }
            }
            Err(e) => lines.push(Line::from(format!("  audit: {e}"))),
        }
        lines
    }

    /// The selected VMs, else the one under the cursor.
    fn targets(&self, rows: &[Row]) -> Vec<Row> {
        let picked: Vec<Row> = rows
            .iter()
            .filter(|r| self.selected.contains(&r.uuid))
            .cloned()
            .collect();
        if picked.is_empty() {
            rows.get(self.cursor).cloned().into_iter().collect()
        } else {
            picked
        }
    }

    /// Runs `program` (an hv command) on `rows`, as records on its stdin so
    /// each goes to its host, on a thread of its own (a graceful stop may
    /// take minutes, and the screen goes on), and says how it went.
    fn act(&mut self, program: &str, args: &[&str], rows: &[Row]) {
        if rows.is_empty() {
            return;
        }
        let input = records_of(rows);
        let (program, args) = (program.to_owned(), args.iter().map(|a| a.to_string()));
        let args: Vec<String> = args.collect();
        let tx = self.tx.clone();
        self.status = format!("{program}: running…");
        std::thread::spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let status = match run_command(&program, &args, &input) {
                Ok(records) => summary(&program, &records),
                Err(e) => format!("{program}: {e}"),
            };
            let _ = tx.send(Update::Acted(status));
        });
        self.selected.clear();
    }

    fn draw(&self, f: &mut ratatui::Frame) {
        let rows = self.visible();
        let header = self.header(&rows, usize::from(f.area().width));
        let detail = self.detail_lines(&rows);
        let [head, table, pane, foot] = Layout::vertical([
            Constraint::Length(header.len() as u16),
            Constraint::Min(3),
            Constraint::Length(if detail.is_empty() {
                0
            } else {
                detail.len().min(12) as u16 + 1
            }),
            Constraint::Length(2),
        ])
        .areas(f.area());
        if !detail.is_empty() {
            let mut shown = vec![Line::from("─".repeat(usize::from(pane.width)))];
            shown.extend(detail);
            f.render_widget(Paragraph::new(shown), pane);
        }
        f.render_widget(Paragraph::new(header), head);
        let style = |s: State| {
            if !self.colour {
                return Style::default();
            }
            Style::default().fg(match s {
                State::Running | State::Blocked => Color::Green,
                State::Paused | State::Pmsuspended | State::Shutdown => Color::Yellow,
                State::Crashed => Color::Red,
                State::Shutoff | State::Nostate => Color::DarkGray,
            })
        };
        let many_hosts = self.hosts.len() > 1;
        // At 80 columns the name matters most: vCPUs, uptime, snapshots
        // and TX go, and come back on a wider terminal; with a repository
        // the backup age takes RX's place (what is unprotected matters
        // more than what a VM receives).
        let wide = f.area().width >= 100;
        let backups = self.repo.is_some();
        let rx = wide || !backups;
        let mut titles = vec!["NAME"];
        let mut widths = vec![Constraint::Fill(2)];
        if many_hosts {
            titles.push("HOST");
            widths.push(Constraint::Length(8));
        }
        titles.extend(["STATE", "CPU%"]);
        widths.extend([Constraint::Length(8), Constraint::Length(5)]);
        if wide {
            titles.push("VCPU");
            widths.push(Constraint::Length(4));
        }
        titles.extend(["MEM", "RD/s", "WR/s"]);
        widths.extend([Constraint::Length(5); 3]);
        if rx {
            titles.push("RX/s");
            widths.push(Constraint::Length(5));
        }
        if wide {
            titles.extend(["TX/s", "UP", "SNAP"]);
            widths.extend([Constraint::Length(5); 3]);
        }
        if backups {
            titles.push("BKUP");
            widths.push(Constraint::Length(5));
        }
        titles.push("TAGS");
        widths.push(Constraint::Fill(1));
        let body: Vec<TableRow> = rows
            .iter()
            .map(|r| {
                let mark = if self.selected.contains(&r.uuid) {
                    "*"
                } else {
                    " "
                };
                let mut cells = vec![Cell::from(format!("{mark}{}", r.name))];
                if many_hosts {
                    cells.push(Cell::from(r.host.clone().unwrap_or_default()));
                }
                cells.push(Cell::from(r.state.as_str()).style(style(r.state)));
                cells.push(Cell::from(percent(r.cpu_percent)));
                if wide {
                    cells.push(Cell::from(r.vcpus.to_string()));
                }
                cells.extend([
                    Cell::from(bytes(r.memory_bytes as f64)),
                    Cell::from(rate(r.disk_read_bytes_per_s)),
                    Cell::from(rate(r.disk_write_bytes_per_s)),
                ]);
                if rx {
                    cells.push(Cell::from(rate(r.net_rx_bytes_per_s)));
                }
                let age = |v: Option<i64>| v.map_or_else(|| "-".into(), human_age);
                if wide {
                    cells.extend([
                        Cell::from(rate(r.net_tx_bytes_per_s)),
                        Cell::from(age(r.uptime_seconds)),
                        Cell::from(r.snapshot_count.map_or("-".into(), |n| n.to_string())),
                    ]);
                }
                if backups {
                    cells.push(Cell::from(age(r.last_backup_age_seconds)));
                }
                cells.push(Cell::from(r.tags.join(",")));
                TableRow::new(cells)
            })
            .collect();
        let highlight = if self.colour {
            Style::default().add_modifier(Modifier::REVERSED)
        } else {
            Style::default().add_modifier(Modifier::BOLD)
        };
        let table_widget = Table::new(body, widths)
            .header(TableRow::new(titles).style(Style::default().add_modifier(Modifier::BOLD)))
            .row_highlight_style(highlight)
            .column_spacing(1);
        let mut state = TableState::default()
            .with_selected(Some(self.cursor.min(rows.len().saturating_sub(1))));
        f.render_stateful_widget(table_widget, table, &mut state);
        f.render_widget(Paragraph::new(self.footer()), foot);
    }

    /// The header's lines for a screen `width` columns wide.
    fn header(&self, rows: &[Row], width: usize) -> Vec<Line<'static>> {
        let mut lines = Vec::new();
        let count = |s: &[State]| rows.iter().filter(|r| s.contains(&r.state)).count();
        lines.push(Line::from(format!(
            "hv-top {}  {} VMs: {} running, {} paused, {} off, {} crashed  every {}s",
            self.refreshed.as_deref().unwrap_or("--:--:--"),
            rows.len(),
            count(&[State::Running, State::Blocked]),
            count(&[State::Paused, State::Pmsuspended]),
            count(&[State::Shutoff]),
            count(&[State::Crashed]),
            self.interval.as_secs(),
        )));
        if self.hosts.is_empty() {
            lines.push(Line::from("connecting…"));
        }
        for (alias, h) in &self.hosts {
            let name = alias.clone().unwrap_or_else(|| "host".into());
            let mut pools_line = None;
            lines.push(match h {
                Ok((host, host_rows)) => {
                    // An empty sum is -0.0, which would print as "-0" (and
                    // f64::max may keep it).
                    let cpu = host_rows.iter().filter_map(|r| r.cpu_percent).sum::<f64>()
                        / f64::from(host.cpus.max(1));
                    let cpu = if cpu > 0.0 { cpu } else { 0.0 };
                    let used = host.memory_bytes.saturating_sub(host.free_memory_bytes);
                    let mem = 100.0 * used as f64 / host.memory_bytes.max(1) as f64;
                    let pools: Vec<String> = host
                        .pools
                        .iter()
                        .map(|(p, cap, avail)| {
                            format!("{p} {} free", bytes(*avail as f64))
                                + if *cap > 0 && *avail * 10 < *cap {
                                    "!"
                                } else {
                                    ""
                                }
                        })
                        .collect();
                    let mut line = format!(
                        "{name}: CPU {} {:>3.0}% of {}  MEM {} {:>3.0}% of {}  libvirt {}",
                        bar(cpu),
                        cpu,
                        host.cpus,
                        bar(mem),
                        mem,
                        bytes(host.memory_bytes as f64),
                        host.libvirt_version,
                    );
                    // The pools follow on the host's line when they fit
                    // there (a wide terminal), else on a line of their own:
                    // at 80 columns the host's line is full already.
                    let pools = pools.join("  ");
                    if !pools.is_empty() {
                        if line.chars().count() + 2 + pools.chars().count() <= width {
                            line = format!("{line}  {pools}");
                        } else {
                            pools_line = Some(Line::from(format!(
                                "{:indent$}pools: {pools}",
                                "",
                                indent = name.chars().count() + 2
                            )));
                        }
                    }
                    Line::from(line)
                }
                Err(e) => Line::from(Span::styled(
                    format!("{name}: not answering: {e}"),
                    if self.colour {
                        Style::default().fg(Color::Red)
                    } else {
                        Style::default()
                    },
                )),
            });
            lines.extend(pools_line);
        }
        if let Some(repo) = &self.repo {
            lines.push(Line::from(match &self.backups {
                None => format!("repo {repo}: reading…"),
                Some(Ok(b)) => format!(
                    "repo {repo}: {} free, backups of {} VM{}",
                    b.free_bytes.map_or("?".into(), |f| bytes(f as f64)),
                    b.newest.len(),
                    if b.newest.len() == 1 { "" } else { "s" }
                ),
                Some(Err(e)) => format!("repo {repo}: cannot read it: {e}"),
            }));
        }
        if let Some(worst) = self.health.first() {
            let fails = self.health.iter().filter(|r| r["status"] == "fail").count();
            let warns = self.health.len() - fails;
            // Over several hosts, the worst problem says where it is.
            let at = worst["host"]
                .as_str()
                .filter(|_| self.hosts.len() > 1)
                .map(|h| format!("{h}: "))
                .unwrap_or_default();
            let style = if self.colour && fails > 0 {
                Style::default().fg(Color::Red)
            } else {
                Style::default()
            };
            lines.push(Line::from(Span::styled(
                format!(
                    "health: {fails} fail, {warns} warn: {at}{} {}",
                    worst["check"].as_str().unwrap_or("?"),
                    worst["message"].as_str().unwrap_or("")
                ),
                style,
            )));
        }
        lines.push(Line::from(""));
        lines
    }

    fn footer(&self) -> Vec<Line<'static>> {
        let shown = match (&self.state_filter, self.filter.is_empty()) {
            (Some(s), _) => format!(
                " [{}{}]",
                s.as_str(),
                if self.filter.is_empty() {
                    String::new()
                } else {
                    format!(" /{}", self.filter)
                }
            ),
            (None, false) => format!(" [/{}]", self.filter),
            (None, true) => String::new(),
        };
        let keys = if self.editing {
            format!("filter: {}_  (Enter keeps, Esc clears)", self.filter)
        } else if self.read_only {
            format!(
                "q quit  s sort:{}  r reverse  / filter  t state  (read-only){shown}",
                SORTS[self.sort]
            )
        } else {
            format!(
                "q s:{} r / t ⏎:detail spc S:start T:stop K:kill P:snap B:bkup C:cons{shown}",
                SORTS[self.sort]
            )
        };
        vec![Line::from(keys), Line::from(self.status.clone())]
    }
}

/// Runs an hv command with records on its stdin; its records, or its
/// error line when it printed none.
fn run_command(
    program: &str,
    args: &[&str],
    input: &str,
) -> std::result::Result<Vec<serde_json::Value>, String> {
    use std::io::Write;
    let path = sibling(program);
    // No records: stdin is /dev/null, for "every VM" (an empty pipe would
    // name none, as under cron).
    let stdin = if input.is_empty() {
        std::process::Stdio::null()
    } else {
        std::process::Stdio::piped()
    };
    let mut child = std::process::Command::new(path)
        .args(args)
        .args(["--format", "jsonl"])
        .stdin(stdin)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run it: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let records: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    if records.is_empty() && !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err.lines().next().unwrap_or("failed").to_owned());
    }
    Ok(records)
}

/// One line for the bottom of the screen: how many worked, the first error.
fn summary(program: &str, records: &[serde_json::Value]) -> String {
    let ok = records.iter().filter(|r| r["ok"] == true).count();
    let first_error = records.iter().find(|r| r["ok"] == false).map(|r| {
        format!(
            "; {}: {}",
            r["name"].as_str().unwrap_or("?"),
            r["error"]["message"].as_str().unwrap_or("failed")
        )
    });
    format!(
        "{program}: {ok} of {} ok{}",
        records.len(),
        first_error.unwrap_or_default()
    )
}

fn clock() -> String {
    let t = hv_common::time::rfc3339(hv_common::time::now());
    t.get(11..19).unwrap_or(&t).to_owned()
}

fn bar(percent: f64) -> String {
    let filled = ((percent / 10.0).round() as usize).min(10);
    format!("[{}{}]", "|".repeat(filled), " ".repeat(10 - filled))
}

fn percent(p: Option<f64>) -> String {
    p.map_or_else(|| "-".into(), |p| format!("{p:.0}"))
}

fn rate(r: Option<u64>) -> String {
    r.map_or_else(|| "-".into(), |r| bytes(r as f64))
}

/// 1023, 1.0K, 12M, 3.4G: short enough for a 6-wide column.
fn bytes(b: f64) -> String {
    let units = ["", "K", "M", "G", "T"];
    let mut v = b;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0}")
    } else if v < 10.0 {
        format!("{v:.1}{}", units[i])
    } else {
        format!("{v:.0}{}", units[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_fit_their_columns() {
        assert_eq!(bytes(1023.0), "1023");
        assert_eq!(bytes(1536.0), "1.5K");
        assert_eq!(bytes(128.0 * 1024.0 * 1024.0), "128M");
        assert_eq!(bytes(3.4 * 1024.0 * 1024.0 * 1024.0), "3.4G");
        assert_eq!(bar(0.0), "[          ]");
        assert_eq!(bar(55.0), "[||||||    ]");
        assert_eq!(bar(400.0), "[||||||||||]");
        let recs = vec![
            serde_json::json!({"name": "a", "ok": true}),
            serde_json::json!({"name": "b", "ok": false, "error": {"message": "it is shutting down"}}),
        ];
        assert_eq!(
            summary("hv-start", &recs),
            "hv-start: 1 of 2 ok; b: it is shutting down"
        );
    }
}
