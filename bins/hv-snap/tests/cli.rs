//! hv-snap on real guests that write to their disks.

use hv_testbench::{connect, hv, records, Guest, GuestSpec, URI};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const HV_SNAP: &str = env!("CARGO_BIN_EXE_hv-snap");

fn snap(args: &[&str]) -> std::process::Output {
    hv(HV_SNAP, args, "")
}

fn ok(out: &std::process::Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    records(out)
}

/// SHA-256 of the guest's disk as raw bytes: what it sees now (the active
/// layer), or what the internal snapshot `snapshot` holds.
fn digest(g: &Guest, snapshot: Option<&str>) -> String {
    hv_testbench::image_sha256(&g.disk, snapshot)
}

/// Lets the writer guest write for a while, then forces it off.
fn write_a_while(g: &Guest) {
    g.start_ready();
    std::thread::sleep(Duration::from_secs(3));
    g.domain.destroy().unwrap();
}

fn names(g: &Guest) -> Vec<String> {
    ok(&snap(&["ls", &g.uuid]))
        .iter()
        .map(|r| r["snapshot"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn bench_revert_brings_the_disk_back_and_rm_deletes() {
    let conn = connect();
    let g = GuestSpec::new("snap disk ü").writer().define(&conn);
    write_a_while(&g);
    let before = digest(&g, None);
    let made = ok(&snap(&[
        "create",
        "--name",
        "base ü",
        "--description",
        "known state",
        &g.name,
    ]));
    let r = &made[0];
    assert_eq!(
        (
            r["snapshot"].as_str(),
            r["kind"].as_str(),
            r["memory"].as_bool()
        ),
        (Some("base ü"), Some("internal"), Some(false))
    );
    assert_eq!(
        (r["hv_made"].as_bool(), r["state"].as_str()),
        (Some(true), Some("shutoff"))
    );
    let created_at = r["created_at"].as_str().unwrap();
    assert!(
        hv_common::time::parse_rfc3339(created_at).is_some(),
        "created_at is RFC 3339 UTC: {created_at}"
    );
    assert!(r.get("created").is_none(), "renamed to created_at: {r}");

    write_a_while(&g);
    assert_ne!(
        digest(&g, None),
        before,
        "the guest wrote after the snapshot"
    );
    let reverted = ok(&snap(&["revert", "--snapshot", "base ü", &g.name]));
    assert_eq!(reverted[0]["state"], "shutoff");
    assert_eq!(digest(&g, None), before, "the disk is back as it was");

    let listed = ok(&snap(&["ls", &g.name]));
    assert_eq!(listed[0]["description"], "known state");
    let gone = hv(
        HV_SNAP,
        &["rm"],
        &(serde_json::to_string(&listed[0]).unwrap() + "\n"),
    );
    assert!(
        gone.status.success(),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );
    assert!(names(&g).is_empty());
    let missing = snap(&["rm", "--snapshot", "base ü", &g.name]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(records(&missing)[0]["error"]["code"], "not_found");
}

#[test]
fn bench_running_guest_internal_with_memory_external_and_quiesce() {
    let conn = connect();
    let g = GuestSpec::new("snap running").writer().define(&conn);
    let refused = snap(&["create", "--memory", &g.name]);
    assert_eq!(
        records(&refused)[0]["error"]["code"],
        "invalid_state",
        "a stopped VM has no memory"
    );
    g.start_ready();
    let internal = ok(&snap(&["create", "--name", "live", &g.name]));
    assert_eq!(
        (
            internal[0]["memory"].as_bool(),
            internal[0]["state"].as_str()
        ),
        (Some(true), Some("running"))
    );

    let planned = ok(&snap(&[
        "create",
        "--name",
        "frozen",
        "--disk-only",
        "--require-quiesce",
        "--dry-run",
        &g.name,
    ]));
    assert_eq!(
        planned[0]["quiesce"], "unchecked",
        "a dry run does not ask the agent"
    );
    let strict = snap(&[
        "create",
        "--name",
        "frozen",
        "--disk-only",
        "--require-quiesce",
        &g.name,
    ]);
    assert_eq!(strict.status.code(), Some(1));
    assert_eq!(records(&strict)[0]["error"]["code"], "timeout");
    assert!(
        !names(&g).contains(&"frozen".to_owned()),
        "nothing half-made is left"
    );

    let loose = snap(&[
        "create",
        "--name",
        "ext one",
        "--disk-only",
        "--quiesce",
        &g.name,
    ]);
    let r = &ok(&loose)[0];
    assert!(
        String::from_utf8_lossy(&loose.stderr).contains("guest agent does not answer"),
        "a warning, not a failure"
    );
    assert_eq!(
        (
            r["kind"].as_str(),
            r["quiesced"].as_bool(),
            r["parent"].as_str()
        ),
        (Some("external"), Some(false), Some("live"))
    );
    let overlay = g.disk.with_file_name(format!(
        "{}.ext_one.qcow2",
        g.disk.file_stem().unwrap().to_str().unwrap()
    ));
    assert!(
        overlay.exists(),
        "overlay beside the disk: {}",
        overlay.display()
    );

    // Revert paused, so the guest cannot write again: its disk must now hold
    // exactly what the snapshot holds, though it kept writing after the snapshot.
    let back = ok(&snap(&[
        "revert",
        "--paused",
        "--snapshot",
        "live",
        &g.name,
    ]));
    assert_eq!(
        (back[0]["state"].as_str(), back[0]["state_reason"].as_str()),
        (Some("paused"), Some("from_snapshot"))
    );
    assert_eq!(
        digest(&g, None),
        digest(&g, Some("live")),
        "the disk is back as the snapshot has it"
    );
    let resumed = ok(&snap(&[
        "revert",
        "--running",
        "--snapshot",
        "live",
        &g.name,
    ]));
    assert_eq!(resumed[0]["state"], "running");
    let _ = std::fs::remove_file(overlay);
}

#[test]
fn bench_prune_keeps_exactly_what_the_rules_say() {
    let conn = connect();
    let g = GuestSpec::new("snap prune").define(&conn);
    for n in ["p1", "p2", "p3", "p4"] {
        ok(&snap(&["create", "--name", n, &g.name]));
    }
    let st = Command::new("virsh")
        .args(["-c", URI, "snapshot-create-as", &g.uuid, "by-hand"])
        .status()
        .unwrap();
    assert!(st.success());
    let dry = ok(&snap(&["prune", "--keep-last", "2", "--dry-run", &g.name]));
    assert_eq!(dry[0]["removed"], serde_json::json!(["p1", "p2"]));
    assert_eq!(names(&g).len(), 5, "a dry run deletes nothing");
    let done = ok(&hv(
        HV_SNAP,
        &["prune", "--keep-last", "2"],
        &format!("{}\n", g.name),
    ));
    // One shape with hv-backup prune: each snapshot says kept and keep_reason.
    let judged: Vec<(&str, bool, &Value)> = done[0]["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            assert!(k["created_at"].as_str().unwrap().ends_with('Z'), "{k}");
            (
                k["snapshot"].as_str().unwrap(),
                k["kept"].as_bool().unwrap(),
                &k["keep_reason"],
            )
        })
        .collect();
    assert_eq!(
        judged,
        vec![
            ("p1", false, &Value::Null),
            ("p2", false, &Value::Null),
            ("p3", true, &serde_json::json!("keep-last")),
            ("p4", true, &serde_json::json!("keep-last")),
        ]
    );
    assert_eq!(done[0]["removed"], serde_json::json!(["p1", "p2"]));
    let mut left = names(&g);
    left.sort();
    assert_eq!(
        left,
        vec!["by-hand", "p3", "p4"],
        "a snapshot hv did not make is left alone"
    );
    ok(&snap(&["prune", "--all", "--keep-last", "1", &g.name]));
    assert_eq!(
        names(&g),
        vec!["by-hand"],
        "with --all the newest of all is kept"
    );
    let none = snap(&["prune", &g.name]);
    assert_eq!(
        none.status.code(),
        Some(2),
        "prune without a rule is refused"
    );
}

/// `--timeout` takes the common duration syntax on every action; a bad one
/// is a usage error naming the accepted forms. The test driver needs no
/// bench.
#[test]
fn timeout_takes_the_common_duration_syntax() {
    let out = snap(&[
        "prune",
        "-c",
        "test:///default",
        "--keep-last",
        "1",
        "--dry-run",
        "--timeout",
        "5m",
        "test",
    ]);
    let r = &ok(&out)[0];
    assert_eq!(
        (&r["ok"], &r["dry_run"]),
        (&Value::Bool(true), &Value::Bool(true))
    );
    assert_eq!(r["snapshots"], serde_json::json!([]));
    let planned = ok(&snap(&[
        "create",
        "-c",
        "test:///default",
        "--disk-only",
        "--dry-run",
        "--timeout",
        "1h30m",
        "test",
    ]));
    assert_eq!(planned[0]["dry_run"], true);
    for sub in [
        &["create"][..],
        &["revert", "--snapshot", "s"],
        &["rm", "--snapshot", "s"],
        &["prune", "--keep-last", "1"],
    ] {
        let mut args = sub.to_vec();
        args.extend(["-c", "test:///default", "--timeout", "5x", "test"]);
        let out = snap(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{sub:?}: {err}");
        assert!(
            err.contains("--timeout") && err.contains("90s, 5m, 1h30m, 2d"),
            "{sub:?}: the error names the flag and the accepted forms: {err}"
        );
        assert!(out.stdout.is_empty());
    }
}
