//! hv-top in a real terminal (tmux, 80×24) on bench guests: what the frame
//! shows, keys that act on guests, sort and filter, and the terminal given
//! back after q and SIGTERM; and `--once` as records.

// These tests need the bench (tests/run.sh); `cargo test` without
// `--features bench` still builds the command for the transcripts.
#![cfg(feature = "bench")]

use hv_testbench::{connect, hv, pipeline, run_prefix, scratch, GuestSpec, Terminal};
use std::path::{Path, PathBuf};
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

/// A new hv-backup repository in `dir`, and the environment hv-backup
/// needs to write to it (its key directory).
fn repository(dir: &Path) -> (PathBuf, String) {
    let (repo, keys, identity) = (dir.join("repo"), dir.join("keys"), dir.join("identity"));
    pipeline(&format!(
        "age-keygen -o {i} 2>/dev/null && hv-backup init {r} --key-dir {k} --recipient \"$(age-keygen -y {i})\"",
        i = identity.display(),
        r = repo.display(),
        k = keys.display()
    ))
    .assert_ok();
    let env = format!(
        "HV_BACKUP_KEY_DIR={} HV_BACKUP_SCRATCH_DIR={} HV_BACKUP_CACHE_DIR={}",
        keys.display(),
        dir.display(),
        dir.join("cache").display()
    );
    (repo, env)
}

/// Whether a screen row shows an age in seconds (`12s`): the BKUP column
/// of a VM backed up a moment ago (rates never end in `s`).
fn shows_seconds_age(row: &str) -> bool {
    row.split_whitespace().any(|t| {
        t.strip_suffix('s')
            .is_some_and(|n| n.parse::<u32>().is_ok())
    })
}

#[test]
fn the_frame_shows_the_guests_and_keys_start_stop_sort_and_filter_them() {
    let conn = connect();
    let off = GuestSpec::new("top a off").define(&conn);
    let on = GuestSpec::new("top b on").define(&conn);
    on.start_ready();
    let dir = scratch("top-keys");
    let (repo, env) = repository(&dir);
    let audit = dir.join("audit.log");
    // An active pool, so the header has at least one to show.
    let pool = format!("{}top-pool", run_prefix());
    std::fs::create_dir_all(dir.join("pool")).unwrap();
    pipeline(&format!(
        "virsh -q -c qemu:///system pool-create-as {pool} dir --target {}",
        dir.join("pool").display()
    ))
    .assert_ok();
    // The actions' commands inherit the environment: they write the audit
    // log the detail pane reads, and B backs up to the repository.
    let t = Terminal::start(
        &format!(
            "HV_AUDIT_LOG={} {env} hv-top --interval 1s --repo {}",
            audit.display(),
            repo.display()
        ),
        80,
        24,
    );
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
    // At 80 columns the host's line is full: the pools' free space has a
    // line of its own under it.
    let pools = screen
        .lines()
        .find(|l| l.trim_start().starts_with("pools: "))
        .unwrap_or_else(|| panic!("no pools line:\n{screen}"));
    assert!(pools.contains(" free"), "{screen}");
    pipeline(&format!("virsh -q -c qemu:///system pool-destroy {pool}")).assert_ok();

    // Sorted by name, the cursor is on the shut-off one: S starts it.
    t.keys(&["S"]);
    wait_state(&t, "top a off", "running");
    let screen = t.wait_for("hv-start: 1 of 1 ok", Duration::from_secs(30));
    assert!(row(&screen, "top a off").contains("running"), "{screen}");

    // P snapshots it through hv-snap.
    t.keys(&["P"]);
    t.wait_for("hv-snap: 1 of 1 ok", Duration::from_secs(60));
    let snaps = pipeline(&format!(
        "virsh -q -c qemu:///system snapshot-list --name '{}'",
        off.name
    ));
    snaps.assert_ok();
    assert_eq!(snaps.stdout().trim().lines().count(), 1, "{snaps:?}");

    // K forces it off, but only after y: any other key leaves it running.
    t.keys(&["K"]);
    t.wait_for("y to confirm", Duration::from_secs(10));
    t.keys(&["n"]);
    t.wait_for("force stop cancelled", Duration::from_secs(10));
    assert!(row(&t.screen(false), "top a off").contains("running"));
    t.keys(&["K"]);
    t.wait_for("y to confirm", Duration::from_secs(10));
    t.keys(&["y"]);
    wait_state(&t, "top a off", "shutoff");
    t.wait_for("hv-stop: 1 of 1 ok", Duration::from_secs(30));
    t.keys(&["S"]);
    wait_state(&t, "top a off", "running");
    t.wait_for("hv-start: 1 of 1 ok", Duration::from_secs(30));

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
    // record of it: its disk; and hv-audit's entries: the start or stop
    // hv-top ran), and closes it again.
    t.keys(&["Enter"]);
    t.wait_for("disk vda qcow2", Duration::from_secs(30));
    let screen = t.wait_for(" ok", Duration::from_secs(30));
    assert!(
        screen.contains(" start ok") || screen.contains(" stop ok"),
        "{screen}"
    );
    assert!(
        screen.contains("  memory ") && screen.contains(" on the host, 1 vCPU"),
        "{screen}"
    );
    // The pane follows the cursor (its first line names the VM's UUID once
    // its record is read): b, at the top, has no snapshot; a has the one
    // P took.
    t.keys(&["k", "k"]);
    let screen = t.wait_for(&on.uuid, Duration::from_secs(30));
    assert!(!screen.contains("  snap  "), "{screen}");
    t.keys(&["j"]);
    let screen = t.wait_for(&off.uuid, Duration::from_secs(30));
    assert!(screen.contains("  snap  hv-"), "{screen}");
    t.keys(&["Enter"]);

    // A crash reaches the header through hv-health (every 30 s).
    off.kill_qemu();
    t.wait_for("health: ", Duration::from_secs(90));

    // B backs up through hv-backup to --repo; the header shows the
    // repository, and the VM's row its backup's age at once.
    assert!(t
        .screen(false)
        .contains(&format!("repo {}: ", repo.display())));
    assert!(!rows(&t.screen(false)).iter().any(|r| shows_seconds_age(r)));
    t.keys(&["B"]);
    t.wait_for("hv-backup: 1 of 1 ok", Duration::from_secs(120));
    let started = std::time::Instant::now();
    loop {
        let screen = t.screen(false);
        if rows(&screen).iter().any(|r| shows_seconds_age(r)) {
            assert!(screen.contains("backups of 1 VM"), "{screen}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{screen}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // q gives the terminal back: the shell's line shows, hv-top's frame not.
    t.keys(&["q"]);
    let screen = t.wait_for("[exit 0]", Duration::from_secs(10));
    assert!(!screen.contains("hv-top "), "the frame is left:\n{screen}");
}

/// Whether `screen` (with escapes) sets a foreground colour anywhere.
fn coloured(screen: &str) -> bool {
    screen.split('\u{1b}').skip(1).any(|seq| {
        let Some(params) = seq.strip_prefix('[').and_then(|p| p.split('m').next()) else {
            return false;
        };
        params.split(';').any(|p| {
            p.parse::<u32>()
                .is_ok_and(|n| (30..=38).contains(&n) || (90..=97).contains(&n))
        })
    })
}

#[test]
fn states_are_coloured_unless_no_color_and_t_filters_them() {
    let conn = connect();
    let g = GuestSpec::new("top colour").define(&conn);
    g.start_ready();
    let filter = |t: &Terminal| {
        t.wait_for("hv-top ", Duration::from_secs(30));
        t.keys(&["/"]);
        t.keys(&["-l", &format!("{}top colour", run_prefix())]);
        t.keys(&["Enter"]);
        wait_state(t, "top colour", "running");
    };
    let t = Terminal::start("hv-top --read-only", 80, 24);
    filter(&t);
    let screen = t.screen_escaped();
    assert!(coloured(row(&screen, "top colour")), "{screen:?}");
    // t cycles the state filter: running keeps the guest, paused hides it,
    // and after crashed the filter is off again.
    t.keys(&["t"]);
    let screen = t.wait_for("[running", Duration::from_secs(10));
    assert!(row(&screen, "top colour").contains("running"), "{screen}");
    t.keys(&["t"]);
    t.wait_for("[paused", Duration::from_secs(10));
    let started = std::time::Instant::now();
    let listed = |t: &Terminal| {
        t.screen(false)
            .lines()
            .any(|l| l.trim_start().starts_with(run_prefix()) && l.contains("top colour"))
    };
    while listed(&t) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            t.screen(false)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    t.keys(&["t", "t", "t"]);
    wait_state(&t, "top colour", "running");
    t.keys(&["q"]);
    let plain = Terminal::start("NO_COLOR=1 hv-top --read-only", 80, 24);
    filter(&plain);
    let screen = plain.screen_escaped();
    assert!(!coloured(&screen), "{screen:?}");
    plain.keys(&["q"]);
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
    let snapped = GuestSpec::new("top once snapped").define(&conn);
    g.start_ready();
    pipeline(&format!("hv-snap create '{}'", snapped.name)).assert_ok();
    std::thread::sleep(Duration::from_secs(2)); // its writer is under way
                                                // A refresh that meets another client's query of the guest gets no
                                                // disk counters for it (NOWAIT, docs/monitoring.md), and its rates are
                                                // null: asked again, three times at most.
    let mut tries = 0;
    let recs = loop {
        tries += 1;
        let out = hv(
            HV_TOP,
            &["--once", "--interval", "5s", "--format", "jsonl"],
            "",
        );
        let recs = out.assert_ok().records();
        let counted = recs
            .iter()
            .any(|r| r["uuid"] == g.uuid.as_str() && r["disk_read_bytes_per_s"].is_number());
        if counted || tries == 3 {
            break recs;
        }
    };
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
            "memory_resident_bytes",
            "disk_read_bytes_per_s",
            "disk_write_bytes_per_s",
            "net_rx_bytes_per_s",
            "net_tx_bytes_per_s",
            "tags",
            "uptime_seconds",
            "snapshot_count",
            "last_backup_age_seconds"
        ]
    );
    assert_eq!(r["state"], "running");
    // Its QEMU holds some of the host's memory: more than nothing, and no
    // more than its guest's memory and QEMU's own together.
    let resident = r["memory_resident_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("{r}"));
    let assigned = r["max_memory_bytes"].as_u64().unwrap();
    assert!(
        resident > 1 << 20 && resident < assigned + (512 << 20),
        "{r}"
    );
    // Its QEMU started when it was started, a few seconds ago.
    let up = r["uptime_seconds"]
        .as_i64()
        .unwrap_or_else(|| panic!("{r}"));
    assert!((3..120).contains(&up), "{r}");
    assert_eq!(r["snapshot_count"], 0);
    assert_eq!(
        r["last_backup_age_seconds"],
        serde_json::Value::Null,
        "no --repo"
    );
    let s = recs
        .iter()
        .find(|r| r["uuid"] == snapped.uuid.as_str())
        .unwrap_or_else(|| panic!("{recs:#?}"));
    assert_eq!(
        (
            s["snapshot_count"].as_u64(),
            s["uptime_seconds"].as_i64(),
            s["memory_resident_bytes"].as_u64()
        ),
        (Some(1), None, None)
    );
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

/// C leaves hv-top's screen for the VM's serial console (hv-console), a
/// line typed there reaches the guest's shell, and Ctrl-] brings the
/// screen back.
#[test]
fn c_opens_the_console_and_ctrl_bracket_comes_back() {
    let dir = scratch("top-console");
    let name = format!("{}cons x", run_prefix());
    let image = hv_testbench::guest_image();
    let profile = serde_json::json!({
        "name": name, "type": hv_testbench::domain_type(), "memory": "128M",
        "dir": dir, "disk": "16M",
        "kernel": image.join("vmlinux"), "initrd": image.join("initramfs.img"),
        "cmdline": "console=ttyS0 panic=-1 quiet",
    });
    hv(
        &hv_testbench::bin("hv-define"),
        &[],
        &format!("{profile}\n"),
    )
    .assert_ok();
    struct Gone(String, PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            if let Ok(d) = connect().lookup_domain_by_name(&self.0) {
                hv_testbench::remove_domain(&d);
            }
            let _ = std::fs::remove_dir_all(&self.1);
        }
    }
    let _gone = Gone(name.clone(), dir.clone());
    pipeline(&format!(
        "hv-start '{name}' >/dev/null && hv-console '{name}' --expect 'hv-test-guest: ready' --timeout 120s </dev/null >/dev/null"
    ))
    .assert_ok();
    let t = Terminal::start("hv-top --interval 1s", 80, 24);
    t.wait_for("hv-top ", Duration::from_secs(30));
    t.keys(&["/"]);
    t.keys(&["-l", &name]);
    t.keys(&["Enter"]);
    wait_state(&t, "cons x", "running");
    t.keys(&["C"]);
    t.wait_for("Ctrl-] leaves", Duration::from_secs(30));
    t.keys(&["-l", "echo top-$((2+3))"]);
    t.keys(&["Enter"]);
    t.wait_for("top-5", Duration::from_secs(30));
    t.keys(&["C-]"]);
    let screen = t.wait_for("hv-console: left", Duration::from_secs(30));
    assert!(row(&screen, "cons x").contains("running"), "{screen}");
    t.keys(&["q"]);
    t.wait_for("[exit 0]", Duration::from_secs(10));
}
