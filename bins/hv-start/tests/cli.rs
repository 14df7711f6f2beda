//! hv-start on real guests.

// These tests need the bench (tests/run.sh); `cargo test` without
// `--features bench` still builds the command for the transcripts.
#![cfg(feature = "bench")]

use hv_testbench::{assert_fields, connect, hv, GuestSpec, Run};
use serde_json::json;

const HV_START: &str = env!("CARGO_BIN_EXE_hv-start");

#[test]
fn bench_starts_resumes_and_leaves_running_ones_alone() {
    let conn = connect();
    let off = GuestSpec::new("start ü 1").define(&conn);
    let paused = GuestSpec::new("start paused").define(&conn);
    let running = GuestSpec::new("start running").define(&conn);
    running.start_ready();
    let first = hv(HV_START, &["--paused", "--wait", &paused.name], "").records();
    assert_fields(&first[0], json!({"state": "paused", "changed": true}));

    let out = hv(
        HV_START,
        &["--wait", "-j", "3"],
        &format!("{}\n{}\n{}\n", off.name, paused.uuid, running.name),
    );
    out.assert_ok();
    let by = |g: &hv_testbench::Guest| out.record("uuid", g.uuid.as_str());
    let started = by(&off);
    assert_fields(
        &started,
        json!({
            "action": "start",
            "changed": true,
            "state": "running",
            "state_reason": "booted",
        }),
    );
    assert!(started["elapsed_ms"].is_u64());
    assert_fields(&by(&paused), json!({"state_reason": "unpaused"}));
    assert_fields(&by(&running), json!({"changed": false, "ok": true}));
    assert_eq!(off.virsh_domstate(), "running (booted)");
    off.wait_ready();
}

#[test]
fn bench_wait_agent_times_out_with_the_fix_when_there_is_no_agent() {
    let conn = connect();
    let guest = GuestSpec::new("no agent").define(&conn);
    let out = hv(
        HV_START,
        &["--wait=agent", "--timeout", "3", &guest.name],
        "",
    );
    let r = &out.assert_exit(1).records()[0];
    assert_fields(r, json!({"error": {"code": "timeout"}}));
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("org.qemu.guest_agent.0"),
        "{r}"
    );
    assert_eq!(
        guest.virsh_domstate(),
        "running (booted)",
        "it is still started"
    );
}

#[test]
fn dry_run_and_errors_on_the_test_driver() {
    // The test driver's one domain is running: nothing to do, but a fine record.
    let out = hv(HV_START, &["-c", "test:///default", "test", "ghost"], "");
    out.assert_exit(1);
    assert_fields(
        &out.record("name", "test"),
        json!({"ok": true, "changed": false}),
    );
    assert_fields(
        &out.record("name", "ghost"),
        json!({"error": {"code": "not_found"}}),
    );
    // An empty pipe starts nothing.
    let none = std::process::Command::new(HV_START)
        .args(["-c", "test:///default"])
        .stdin(std::process::Stdio::piped())
        .output()
        .unwrap();
    Run::new("hv-start -c test:///default < (empty pipe)", none)
        .assert_ok()
        .assert_stdout_empty();
    // No VM named, no pipe: a usage error.
    hv(HV_START, &["-c", "test:///default"], "").assert_exit(2);
}

#[test]
fn bench_paused_wait_on_a_running_vm_does_not_wait_for_a_pause() {
    let conn = connect();
    let g = GuestSpec::new("start paused running").define(&conn);
    g.start_ready();
    let out = hv(
        HV_START,
        &["--paused", "--wait", "--timeout", "20", &g.name],
        "",
    );
    let r = &out.assert_ok().records()[0];
    assert_fields(r, json!({"changed": false, "state": "running"}));
    // A paused guest's agent cannot answer.
    hv(HV_START, &["--paused", "--wait=agent", &g.name], "").assert_exit(2);
}
