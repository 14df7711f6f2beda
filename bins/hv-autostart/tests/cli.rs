//! hv-autostart on real bench VMs; virsh is the ground truth.

// These tests need the bench (tests/run.sh); `cargo test` without
// `--features bench` still builds the command for the transcripts.
#![cfg(feature = "bench")]

use hv_testbench::{assert_fields, connect, hv, GuestSpec, URI};
use serde_json::json;

const HV_AUTOSTART: &str = env!("CARGO_BIN_EXE_hv-autostart");

fn virsh_autostart(uuid: &str) -> String {
    let out = std::process::Command::new("virsh")
        .args(["-c", URI, "dominfo", uuid])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.starts_with("Autostart:"))
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_owned()
}

#[test]
fn bench_turns_autostart_on_and_off_in_bulk() {
    let conn = connect();
    let a = GuestSpec::new("auto ü").define(&conn);
    let b = GuestSpec::new("auto b").autostart().define(&conn);
    let on = hv(
        HV_AUTOSTART,
        &["on"],
        &format!("{}\n{}\nmissing vm\n", a.name, b.uuid),
    );
    on.assert_exit(1); // the missing VM fails the run
    assert_fields(
        &on.record("uuid", a.uuid.as_str()),
        json!({"autostart": true, "changed": true}),
    );
    assert_fields(
        &on.record("uuid", b.uuid.as_str()),
        json!({"changed": false}),
    );
    assert_eq!(on.records().iter().filter(|r| r["ok"] == false).count(), 1);
    assert_eq!(
        (
            virsh_autostart(&a.uuid).as_str(),
            virsh_autostart(&b.uuid).as_str()
        ),
        ("enable", "enable")
    );

    let dry = hv(HV_AUTOSTART, &["off", "--dry-run", &a.name], "").records();
    assert_fields(&dry[0], json!({"changed": true, "dry_run": true}));
    assert_eq!(virsh_autostart(&a.uuid), "enable");
    hv(HV_AUTOSTART, &["off", &a.name, &b.name], "").assert_ok();
    assert_eq!(
        (
            virsh_autostart(&a.uuid).as_str(),
            virsh_autostart(&b.uuid).as_str()
        ),
        ("disable", "disable")
    );
}

/// `--timeout` takes the common duration syntax; a bad one is a usage
/// error naming the accepted forms. On libvirt's test driver: no bench.
#[test]
fn timeout_takes_the_common_duration_syntax() {
    let args = |timeout: &'static str| {
        [
            "on",
            "-c",
            "test:///default",
            "--dry-run",
            "--timeout",
            timeout,
            "test",
        ]
    };
    let out = hv(HV_AUTOSTART, &args("5m"), "");
    let r = &out.assert_ok().records()[0];
    assert_fields(r, json!({"ok": true, "autostart": true, "dry_run": true}));
    // The error names the flag and the accepted forms.
    hv(HV_AUTOSTART, &args("5x"), "")
        .assert_exit(2)
        .assert_stderr_contains("--timeout")
        .assert_stderr_contains("90s, 5m, 1h30m, 2d")
        .assert_stdout_empty();
}
