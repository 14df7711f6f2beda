//! hv-autostart on real bench VMs; virsh is the ground truth.

use hv_testbench::{connect, hv, records, GuestSpec, URI};

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
    assert_eq!(on.status.code(), Some(1), "the missing VM fails the run");
    let recs = records(&on);
    let by = |u: &str| recs.iter().find(|r| r["uuid"] == u).unwrap().clone();
    assert_eq!(
        (
            by(&a.uuid)["autostart"].as_bool(),
            by(&a.uuid)["changed"].as_bool()
        ),
        (Some(true), Some(true))
    );
    assert_eq!(by(&b.uuid)["changed"], false);
    assert_eq!(recs.iter().filter(|r| r["ok"] == false).count(), 1);
    assert_eq!(
        (
            virsh_autostart(&a.uuid).as_str(),
            virsh_autostart(&b.uuid).as_str()
        ),
        ("enable", "enable")
    );

    let dry = records(&hv(HV_AUTOSTART, &["off", "--dry-run", &a.name], ""));
    assert_eq!(
        (dry[0]["changed"].as_bool(), dry[0]["dry_run"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(virsh_autostart(&a.uuid), "enable");
    let off = hv(HV_AUTOSTART, &["off", &a.name, &b.name], "");
    assert!(off.status.success());
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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = &records(&out)[0];
    assert_eq!(
        (&r["ok"], &r["autostart"], &r["dry_run"]),
        (
            &serde_json::json!(true),
            &serde_json::json!(true),
            &serde_json::json!(true)
        )
    );
    let bad = hv(HV_AUTOSTART, &args("5x"), "");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--timeout") && err.contains("90s, 5m, 1h30m, 2d"),
        "the error names the flag and the accepted forms: {err}"
    );
    assert!(bad.stdout.is_empty());
}
