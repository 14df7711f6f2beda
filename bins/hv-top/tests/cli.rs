//! hv-top in a real terminal (tmux, 80×24) on bench guests: what the frame
//! shows, keys that act on guests, sort and filter, and the terminal given
//! back after q and SIGTERM; and `--once` as records.

// These tests need the bench (tests/run.sh); `cargo test` without
// `--features bench` still builds the command for the transcripts.
#![cfg(feature = "bench")]

use hv_testbench::{connect, hv, run_prefix, GuestSpec, Terminal};
use std::time::Duration;

const HV_TOP: &str = env!("CARGO_BIN_EXE_hv-top");

/// The screen's row of the VM `name` (names are unique in a run).
fn row<'a>(screen: &'a str, name: &str) -> &'a str {
    screen
        .lines()
        .find(|l| l.contains(name))
        .unwrap_or_else(|| panic!("{name} is not on the screen:\n{screen}"))
}

/// Waits until the row of `name` shows `state`.
fn wait_state(t: &Terminal, name: &str, state: &str) -> String {
    let started = std::time::Instant::now();
    loop {
        let screen = t.screen(false);
        if screen
            .lines()
            .any(|l| l.contains(name) && l.contains(state))
        {
            return screen;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{name} did not show {state}:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_frame_shows_the_guests_and_keys_start_stop_sort_and_filter_them() {
    let conn = connect();
    let off = GuestSpec::new("top a off").define(&conn);
    let on = GuestSpec::new("top b on").define(&conn);
    on.start_ready();
    let t = Terminal::start("hv-top --interval 1s", 80, 24);
    // Only this test's guests: the filter is the run's prefix.
    t.wait_for("hv-top ", Duration::from_secs(30));
    t.keys(&["/"]);
    t.keys(&["-l", &format!("{}top ", run_prefix())]);
    t.keys(&["Enter"]);
    let screen = wait_state(&t, &on.name[..on.name.len().min(12)], "running");
    assert!(row(&screen, "top a off").contains("shutoff"), "{screen}");
    let rows = |screen: &str| -> Vec<String> {
        screen
            .lines()
            .filter(|l| l.contains("top a off") || l.contains("top b on"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        screen
            .lines()
            .filter(|l| l.trim_start().starts_with(run_prefix()))
            .count(),
        2,
        "the filter keeps this test's two guests:\n{screen}"
    );
    assert!(screen.lines().all(|l| l.chars().count() <= 80), "{screen}");

    // Sorted by name, the cursor is on the shut-off one: S starts it.
    t.keys(&["S"]);
    wait_state(&t, "top a off", "running");
    let screen = t.wait_for("hv-start: 1 of 1 ok", Duration::from_secs(30));
    assert!(row(&screen, "top a off").contains("running"), "{screen}");

    // Down to the other, T stops it gracefully (the guest obeys ACPI).
    t.keys(&["j", "T"]);
    wait_state(&t, "top b on", "shutoff");
    t.wait_for("hv-stop: 1 of 1 ok", Duration::from_secs(60));

    // s sorts by state: running before shutoff, so a before b again, and
    // r reverses it.
    t.keys(&["s"]);
    t.wait_for("s:state", Duration::from_secs(10));
    t.keys(&["r"]);
    let started = std::time::Instant::now();
    loop {
        let screen = t.screen(false);
        let order = rows(&screen);
        if order.len() == 2 && order[0].contains("top b on") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{screen}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Enter opens the detail pane of the VM under the cursor (hv-ls's
    // record of it: its disk), and closes it again.
    t.keys(&["Enter"]);
    t.wait_for("disk vda qcow2", Duration::from_secs(30));
    t.keys(&["Enter"]);

    // A crash reaches the header through hv-health (every 30 s).
    off.kill_qemu();
    t.wait_for("health: ", Duration::from_secs(90));

    // B backs up through hv-backup; without a repository it says so.
    t.keys(&["B"]);
    t.wait_for("hv-backup: ", Duration::from_secs(30));

    // q gives the terminal back: the shell's line shows, hv-top's frame not.
    t.keys(&["q"]);
    let screen = t.wait_for("[exit 0]", Duration::from_secs(10));
    assert!(!screen.contains("hv-top "), "the frame is left:\n{screen}");
}

#[test]
fn sigterm_restores_the_terminal_and_read_only_hides_the_actions() {
    let t = Terminal::start("hv-top --read-only", 80, 24);
    t.wait_for("(read-only)", Duration::from_secs(30));
    t.keys(&["S"]);
    t.wait_for("actions are off", Duration::from_secs(10));
    // SIGTERM to this terminal's hv-top alone (other tests run theirs).
    let out = std::process::Command::new("pkill")
        .args(["-TERM", "-P", &t.shell_pid().to_string(), "-x", "hv-top"])
        .status()
        .unwrap();
    assert!(out.success());
    let screen = t.wait_for("[exit 0]", Duration::from_secs(10));
    assert!(
        !screen.contains("(read-only)"),
        "the frame is left:\n{screen}"
    );

    // A terminal that goes away (its tmux killed: a hangup) ends hv-top
    // too, rather than leaving it spinning on a dead terminal.
    let gone = Terminal::start("hv-top", 80, 24);
    gone.wait_for("hv-top ", Duration::from_secs(30));
    let pid = String::from_utf8(
        std::process::Command::new("pgrep")
            .args(["-P", &gone.shell_pid().to_string(), "-x", "hv-top"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    assert!(!pid.is_empty());
    drop(gone); // kills its tmux server
    let started = std::time::Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "hv-top {pid} outlived its terminal"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The terminal is back in cooked mode: the shell echoes what is typed.
    let stty = Terminal::run(
        "hv-top --once --format jsonl > /dev/null; stty -a | grep -o ' icanon'",
        80,
        Duration::from_secs(30),
    );
    assert!(stty.screen(false).contains("icanon"));
}

#[test]
fn once_prints_one_frame_as_records_with_rates() {
    let conn = connect();
    let g = GuestSpec::new("top once").writer().define(&conn);
    g.start_ready();
    std::thread::sleep(Duration::from_secs(2)); // its writer is under way
    let out = hv(
        HV_TOP,
        &["--once", "--interval", "3s", "--format", "jsonl"],
        "",
    );
    let recs = out.assert_ok().records();
    let r = recs
        .iter()
        .find(|r| r["uuid"] == g.uuid.as_str())
        .unwrap_or_else(|| panic!("{recs:#?}"));
    let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "name",
            "uuid",
            "state",
            "autostart",
            "vcpus",
            "cpu_percent",
            "memory_bytes",
            "max_memory_bytes",
            "disk_read_bytes_per_s",
            "disk_write_bytes_per_s",
            "net_rx_bytes_per_s",
            "net_tx_bytes_per_s",
            "tags"
        ]
    );
    assert_eq!(r["state"], "running");
    assert!(r["cpu_percent"].as_f64().is_some_and(|c| c > 0.0), "{r}");
    // The guest's writer works its disk (a MiB a second when the host is
    // idle; less when other tests' guests boot beside it).
    let io = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k}: {r}"));
    assert!(
        io("disk_read_bytes_per_s") + io("disk_write_bytes_per_s") > 0.0,
        "{r}"
    );
    // Not at a terminal without --once: the fix is named.
    hv(HV_TOP, &[], "")
        .assert_exit(2)
        .assert_stderr_contains("--once");
}
