//! hv-tag end to end on real bench guests: tags land in both the live and
//! the stored definition, and every change is reported as it happened.

// These tests need the bench (tests/run.sh); `cargo test` without
// `--features bench` still builds the command for the transcripts.
#![cfg(feature = "bench")]

use hv_testbench::{assert_fields, connect, hv, GuestSpec, URI};
use serde_json::json;
use std::process::Command;

const HV_TAG: &str = env!("CARGO_BIN_EXE_hv-tag");

fn dumpxml(uuid: &str, inactive: bool) -> String {
    let mut cmd = Command::new("virsh");
    cmd.args(["-c", URI, "dumpxml", uuid]);
    if inactive {
        cmd.arg("--inactive");
    }
    String::from_utf8(cmd.output().unwrap().stdout).unwrap()
}

#[test]
fn bench_tags_reach_live_and_stored_definitions() {
    let conn = connect();
    let guest = GuestSpec::new("tags ü").define(&conn);
    guest.start_ready();
    let out = hv(HV_TAG, &["--add", "prod", "--add", "wëb", &guest.name], "");
    let r = &out.assert_ok().records()[0];
    assert_fields(
        r,
        json!({
            "name": guest.name,
            "uuid": guest.uuid,
            "action": "tag",
            "ok": true,
            "changed": true,
            "tags": ["prod", "wëb"],
        }),
    );
    for inactive in [false, true] {
        let xml = dumpxml(&guest.uuid, inactive);
        assert!(
            xml.contains("<hv:tag>prod</hv:tag>") && xml.contains("<hv:tag>wëb</hv:tag>"),
            "{xml}"
        );
    }

    let again = hv(HV_TAG, &["--add", "prod", &guest.uuid], "").records();
    assert_eq!(
        again[0]["changed"], false,
        "adding a tag it has changes nothing"
    );

    let dry = hv(HV_TAG, &["--remove", "prod", "--dry-run", &guest.name], "").records();
    assert_fields(&dry[0], json!({"tags": ["wëb"], "dry_run": true}));
    assert!(
        dumpxml(&guest.uuid, true).contains("<hv:tag>prod</hv:tag>"),
        "dry run left the tag"
    );

    let cleared = hv(HV_TAG, &["--clear", &guest.name], "").records();
    assert_eq!(cleared[0]["tags"], json!([]));
    assert!(
        !dumpxml(&guest.uuid, false).contains("hv.invalid"),
        "no empty metadata element is left"
    );
    assert!(!dumpxml(&guest.uuid, true).contains("hv.invalid"));
}

#[test]
fn missing_vm_fails_alone_and_upstream_failures_pass_through() {
    let failed = r#"{"name":"z","ok":false,"error":{"code":"timeout","message":"m"}}"#;
    let out = hv(
        HV_TAG,
        &["-c", "test:///default", "-a", "x"],
        &format!("nope\n{failed}\ntest\n"),
    );
    assert_eq!(out.assert_exit(1).records().len(), 3);
    assert_fields(
        &out.record("name", "nope"),
        json!({"error": {"code": "not_found"}}),
    );
    assert_eq!(
        out.record("name", "z"),
        serde_json::from_str::<serde_json::Value>(failed).unwrap()
    );
    assert_fields(&out.record("name", "test"), json!({"tags": ["x"]}));
}

#[test]
fn usage_errors_exit_2_and_name_the_fix() {
    hv(
        HV_TAG,
        &["-c", "test:///default", "--add", "two words", "test"],
        "",
    )
    .assert_exit(2)
    .assert_stderr_contains("invalid tag 'two words'");
    hv(HV_TAG, &["-c", "test:///default", "test"], "")
        .assert_exit(2)
        .assert_stderr_contains("--add");
}

#[test]
fn bench_unprivileged_write_is_denied_with_exit_3() {
    let conn = connect();
    let guest = GuestSpec::new("denied").define(&conn);
    let out = hv_testbench::hv_as_nobody(HV_TAG, &["-c", URI, "--add", "x", &guest.uuid]);
    // One line that names the URI and the fix.
    out.assert_exit(3)
        .assert_stderr_contains("qemu:///system")
        .assert_stderr_contains("polkit");
    assert_eq!(out.stderr().lines().count(), 1, "{out:?}");
    assert!(
        !dumpxml(&guest.uuid, true).contains("hv.invalid"),
        "nothing was written"
    );
}
