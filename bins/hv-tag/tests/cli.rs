//! hv-tag end to end on real bench guests: tags land in both the live and
//! the stored definition, and every change is reported as it happened.

use hv_testbench::{connect, hv, records, GuestSpec, URI};
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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = &records(&out)[0];
    assert_eq!(
        (r["name"].as_str(), r["uuid"].as_str()),
        (Some(guest.name.as_str()), Some(guest.uuid.as_str()))
    );
    assert_eq!(
        (&r["action"], &r["ok"], &r["changed"]),
        (&json!("tag"), &json!(true), &json!(true))
    );
    assert_eq!(r["tags"], json!(["prod", "wëb"]));
    for inactive in [false, true] {
        let xml = dumpxml(&guest.uuid, inactive);
        assert!(
            xml.contains("<hv:tag>prod</hv:tag>") && xml.contains("<hv:tag>wëb</hv:tag>"),
            "{xml}"
        );
    }

    let again = records(&hv(HV_TAG, &["--add", "prod", &guest.uuid], ""));
    assert_eq!(
        again[0]["changed"], false,
        "adding a tag it has changes nothing"
    );

    let dry = records(&hv(
        HV_TAG,
        &["--remove", "prod", "--dry-run", &guest.name],
        "",
    ));
    assert_eq!(
        (&dry[0]["tags"], &dry[0]["dry_run"]),
        (&json!(["wëb"]), &json!(true))
    );
    assert!(
        dumpxml(&guest.uuid, true).contains("<hv:tag>prod</hv:tag>"),
        "dry run left the tag"
    );

    let cleared = records(&hv(HV_TAG, &["--clear", &guest.name], ""));
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
    assert_eq!(out.status.code(), Some(1));
    let recs = records(&out);
    assert_eq!(recs.len(), 3);
    let by_name = |n: &str| recs.iter().find(|r| r["name"] == n).unwrap().clone();
    assert_eq!(by_name("nope")["error"]["code"], "not_found");
    assert_eq!(
        by_name("z"),
        serde_json::from_str::<serde_json::Value>(failed).unwrap()
    );
    assert_eq!(by_name("test")["tags"], json!(["x"]));
}

#[test]
fn usage_errors_exit_2_and_name_the_fix() {
    let bad = hv(
        HV_TAG,
        &["-c", "test:///default", "--add", "two words", "test"],
        "",
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid tag 'two words'"));
    let nothing = hv(HV_TAG, &["-c", "test:///default", "test"], "");
    assert_eq!(nothing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("--add"));
}

#[test]
fn bench_unprivileged_write_is_denied_with_exit_3() {
    let conn = connect();
    let guest = GuestSpec::new("denied").define(&conn);
    let out = hv_testbench::hv_as_nobody(HV_TAG, &["-c", URI, "--add", "x", &guest.uuid]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("qemu:///system") && err.contains("polkit"),
        "names the URI and the fix: {err}"
    );
    assert!(
        !dumpxml(&guest.uuid, true).contains("hv.invalid"),
        "nothing was written"
    );
}
