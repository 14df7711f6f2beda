//! hv-stop on real guests: one that powers off on ACPI, one that ignores it.

// These tests need the bench (tests/run.sh); `cargo test` without
// `--features bench` still builds the command for the transcripts.
#![cfg(feature = "bench")]

use hv_testbench::{assert_fields, connect, hv, GuestSpec, Run};
use serde_json::json;
use std::time::{Duration, Instant};

const HV_STOP: &str = env!("CARGO_BIN_EXE_hv-stop");

#[test]
fn bench_acpi_guest_stops_gracefully_and_a_deaf_one_is_forced_after_the_timeout() {
    let conn = connect();
    let polite = GuestSpec::new("polite ü").define(&conn);
    let deaf = GuestSpec::new("deaf guest").ignore_acpi().define(&conn);
    polite.start_ready();
    deaf.start_ready();
    let out = hv(
        HV_STOP,
        &["--timeout", "30", "-j", "2", &polite.name, &deaf.uuid],
        "",
    );
    out.assert_ok();
    let p = out.record("uuid", polite.uuid.as_str());
    assert_fields(
        &p,
        json!({"action": "stop", "ok": true, "how": "graceful", "state": "shutoff"}),
    );
    assert_eq!(polite.virsh_domstate(), "shut off (shutdown)");
    assert!(p["elapsed_ms"].as_u64().unwrap() < 30_000);
    let d = out.record("uuid", deaf.uuid.as_str());
    assert_fields(&d, json!({"how": "forced"}));
    assert_eq!(deaf.virsh_domstate(), "shut off (destroyed)");
    assert!(
        d["elapsed_ms"].as_u64().unwrap() >= 30_000,
        "forced only after the timeout: {d}"
    );
    assert!(polite
        .serial_log()
        .contains("acpi power button, powering off"));
}

#[test]
fn bench_each_vm_has_its_own_timer() {
    let conn = connect();
    let a = GuestSpec::new("timer a").ignore_acpi().define(&conn);
    let b = GuestSpec::new("timer b").ignore_acpi().define(&conn);
    a.start_ready();
    b.start_ready();
    let began = Instant::now();
    let out = hv(
        HV_STOP,
        &["--timeout", "10", "-j", "2"],
        &format!("{}\n{}\n", a.name, b.name),
    );
    out.assert_ok();
    assert!(
        began.elapsed() < Duration::from_secs(17),
        "about the longest item, not the sum (20 s): {:?}",
        began.elapsed()
    );
    out.assert_each(json!({"how": "forced"}));
}

#[test]
fn bench_no_force_leaves_a_deaf_guest_running_and_fails_it() {
    let conn = connect();
    let deaf = GuestSpec::new("no force").ignore_acpi().define(&conn);
    deaf.start_ready();
    let out = hv(HV_STOP, &["--timeout", "2", "--no-force", &deaf.name], "");
    let r = &out.assert_exit(1).records()[0];
    assert_fields(r, json!({"ok": false, "error": {"code": "timeout"}}));
    assert!(r["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--no-force"));
    assert_eq!(deaf.virsh_domstate(), "running (booted)");
}

#[test]
fn bench_force_already_off_pause_and_a_missing_vm() {
    let conn = connect();
    let on = GuestSpec::new("force me").define(&conn);
    let off = GuestSpec::new("already off").define(&conn);
    let pausable = GuestSpec::new("pause me").define(&conn);
    on.start_ready();
    pausable.start_ready();
    let input = format!("{}\nno such vm\n{}\n", on.name, off.name);
    let out = hv(HV_STOP, &["--force"], &input);
    out.assert_exit(1); // one missing VM fails the run
    assert_eq!(out.records().len(), 3);
    let by = |n: &str| out.record("name", n);
    assert_fields(&by(&on.name), json!({"how": "forced"}));
    assert!(
        by(&on.name)["elapsed_ms"].as_u64().unwrap() < 20_000,
        "--force does not wait"
    );
    assert_fields(
        &by(&off.name),
        json!({"how": "already_off", "changed": false}),
    );
    assert_fields(&by("no such vm"), json!({"error": {"code": "not_found"}}));

    let paused = hv(HV_STOP, &["--pause", &pausable.name], "").records();
    assert_fields(&paused[0], json!({"action": "pause", "state": "paused"}));
    assert_eq!(pausable.virsh_domstate(), "paused (user)");
    let dry = hv(HV_STOP, &["--dry-run", &pausable.name], "").records();
    assert_fields(&dry[0], json!({"how": "forced", "dry_run": true}));
    assert_eq!(
        pausable.virsh_domstate(),
        "paused (user)",
        "a dry run changes nothing"
    );
}

#[test]
fn bench_ctrl_c_lets_the_running_stop_finish_and_cancels_the_rest() {
    let conn = connect();
    let guests: Vec<_> = ["intr a", "intr b", "intr c"]
        .iter()
        .map(|n| GuestSpec::new(n).ignore_acpi().define(&conn))
        .collect();
    guests[0].start_ready();
    guests[1].start_ready();
    let input: String = guests.iter().map(|g| format!("{}\n", g.name)).collect();
    let child = std::process::Command::new(HV_STOP)
        .args(["-c", hv_testbench::URI, "--timeout", "30", "-j", "1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .as_ref()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    // Well inside the first stop's 30 s: hv-stop has asked the first guest
    // by then, even on a loaded machine.
    std::thread::sleep(Duration::from_secs(5));
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = Run::new(
        "hv-stop --timeout 30 -j 1 (interrupted)",
        child.wait_with_output().unwrap(),
    );
    let recs = out.assert_exit(1).records();
    assert_eq!(recs.len(), 3, "one record per VM, even cancelled ones");
    let by = |g: &hv_testbench::Guest| out.record("name", g.name.as_str());
    // The running stop finished.
    assert_fields(&by(&guests[0]), json!({"how": "forced"}));
    assert_fields(&by(&guests[1]), json!({"error": {"code": "cancelled"}}));
    assert_fields(&by(&guests[2]), json!({"error": {"code": "cancelled"}}));
    assert_eq!(
        guests[1].virsh_domstate(),
        "running (booted)",
        "a cancelled VM is not touched"
    );
}

#[test]
fn bench_a_transient_vm_is_stopped_though_it_is_gone_afterwards() {
    let conn = connect();
    let graceful = GuestSpec::new("stop transient acpi").define(&conn);
    let forced = GuestSpec::new("stop transient force").define(&conn);
    for g in [&graceful, &forced] {
        g.start_ready();
        // Running and no longer defined: libvirt forgets it once it is off.
        g.domain.undefine().unwrap();
    }
    for (g, how, flag) in [
        (&graceful, "graceful", "--timeout=60"),
        (&forced, "forced", "--force"),
    ] {
        let r = &hv(HV_STOP, &[flag, &g.uuid], "").assert_ok().records()[0];
        assert_fields(r, json!({"how": how, "state": "shutoff"}));
    }
    assert!(
        conn.lookup_domain_by_uuid_string(&forced.uuid).is_err(),
        "gone"
    );
}
