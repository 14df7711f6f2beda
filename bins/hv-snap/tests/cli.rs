//! hv-snap on real guests that write to their disks.

// These tests need the bench (tests/run.sh); `cargo test` without
// `--features bench` still builds the command for the transcripts.
#![cfg(feature = "bench")]

use hv_testbench::{assert_fields, connect, hv, Guest, GuestSpec, Run, URI};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

const HV_SNAP: &str = env!("CARGO_BIN_EXE_hv-snap");

fn snap(args: &[&str]) -> Run {
    hv(HV_SNAP, args, "")
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
    snap(&["ls", &g.uuid])
        .assert_ok()
        .records()
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
    let made = snap(&[
        "create",
        "--name",
        "base ü",
        "--description",
        "known state",
        &g.name,
    ])
    .assert_ok()
    .records();
    let r = &made[0];
    assert_fields(
        r,
        json!({
            "snapshot": "base ü",
            "kind": "internal",
            "memory": false,
            "hv_made": true,
            "state": "shutoff",
        }),
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
    let reverted = snap(&["revert", "--snapshot", "base ü", &g.name])
        .assert_ok()
        .records();
    assert_fields(&reverted[0], json!({"state": "shutoff"}));
    assert_eq!(digest(&g, None), before, "the disk is back as it was");

    let listed = snap(&["ls", &g.name]).assert_ok().records();
    assert_fields(&listed[0], json!({"description": "known state"}));
    hv(
        HV_SNAP,
        &["rm"],
        &(serde_json::to_string(&listed[0]).unwrap() + "\n"),
    )
    .assert_ok();
    assert!(names(&g).is_empty());
    let missing = snap(&["rm", "--snapshot", "base ü", &g.name]);
    assert_fields(
        &missing.assert_exit(1).records()[0],
        json!({"error": {"code": "not_found"}}),
    );
}

#[test]
fn bench_running_guest_internal_with_memory_external_and_quiesce() {
    let conn = connect();
    let g = GuestSpec::new("snap running").writer().define(&conn);
    // A stopped VM has no memory.
    let refused = snap(&["create", "--memory", &g.name]);
    assert_fields(
        &refused.records()[0],
        json!({"error": {"code": "invalid_state"}}),
    );
    g.start_ready();
    let internal = snap(&["create", "--name", "live", &g.name])
        .assert_ok()
        .records();
    assert_fields(&internal[0], json!({"memory": true, "state": "running"}));

    let planned = snap(&[
        "create",
        "--name",
        "frozen",
        "--disk-only",
        "--require-quiesce",
        "--dry-run",
        &g.name,
    ])
    .assert_ok()
    .records();
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
    assert_fields(
        &strict.assert_exit(1).records()[0],
        json!({"error": {"code": "timeout"}}),
    );
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
    // A warning, not a failure.
    let r = &loose
        .assert_ok()
        .assert_stderr_contains("guest agent does not answer")
        .records()[0];
    assert_fields(
        r,
        json!({"kind": "external", "quiesced": false, "parent": "live"}),
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
    let back = snap(&["revert", "--paused", "--snapshot", "live", &g.name])
        .assert_ok()
        .records();
    assert_fields(
        &back[0],
        json!({"state": "paused", "state_reason": "from_snapshot"}),
    );
    assert_eq!(
        digest(&g, None),
        digest(&g, Some("live")),
        "the disk is back as the snapshot has it"
    );
    let resumed = snap(&["revert", "--running", "--snapshot", "live", &g.name])
        .assert_ok()
        .records();
    assert_fields(&resumed[0], json!({"state": "running"}));
    let _ = std::fs::remove_file(overlay);
}

#[test]
fn bench_prune_keeps_exactly_what_the_rules_say() {
    let conn = connect();
    let g = GuestSpec::new("snap prune").define(&conn);
    for n in ["p1", "p2", "p3", "p4"] {
        snap(&["create", "--name", n, &g.name])
            .assert_ok()
            .records();
    }
    let st = Command::new("virsh")
        .args(["-c", URI, "snapshot-create-as", &g.uuid, "by-hand"])
        .status()
        .unwrap();
    assert!(st.success());
    let dry = snap(&["prune", "--keep-last", "2", "--dry-run", &g.name])
        .assert_ok()
        .records();
    assert_fields(&dry[0], json!({"removed": ["p1", "p2"]}));
    assert_eq!(names(&g).len(), 5, "a dry run deletes nothing");
    let done = hv(
        HV_SNAP,
        &["prune", "--keep-last", "2"],
        &format!("{}\n", g.name),
    )
    .assert_ok()
    .records();
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
            ("p3", true, &json!("keep-last")),
            ("p4", true, &json!("keep-last")),
        ]
    );
    assert_fields(&done[0], json!({"removed": ["p1", "p2"]}));
    let mut left = names(&g);
    left.sort();
    assert_eq!(
        left,
        vec!["by-hand", "p3", "p4"],
        "a snapshot hv did not make is left alone"
    );
    snap(&["prune", "--all", "--keep-last", "1", &g.name])
        .assert_ok()
        .records();
    assert_eq!(
        names(&g),
        vec!["by-hand"],
        "with --all the newest of all is kept"
    );
    // Prune without a rule is refused.
    snap(&["prune", &g.name]).assert_exit(2);
}

/// `--timeout` takes the common duration syntax on every action; a bad one
/// is a usage error naming the accepted forms. The test driver needs no
/// bench.
#[test]
fn timeout_takes_the_common_duration_syntax() {
    let r = &snap(&[
        "prune",
        "-c",
        "test:///default",
        "--keep-last",
        "1",
        "--dry-run",
        "--timeout",
        "5m",
        "test",
    ])
    .assert_ok()
    .records()[0];
    assert_fields(r, json!({"ok": true, "dry_run": true, "snapshots": []}));
    let planned = snap(&[
        "create",
        "-c",
        "test:///default",
        "--disk-only",
        "--dry-run",
        "--timeout",
        "1h30m",
        "test",
    ])
    .assert_ok()
    .records();
    assert_fields(&planned[0], json!({"dry_run": true}));
    for sub in [
        &["create"][..],
        &["revert", "--snapshot", "s"],
        &["rm", "--snapshot", "s"],
        &["prune", "--keep-last", "1"],
    ] {
        let mut args = sub.to_vec();
        args.extend(["-c", "test:///default", "--timeout", "5x", "test"]);
        // The error names the flag and the accepted forms.
        snap(&args)
            .assert_exit(2)
            .assert_stderr_contains("--timeout")
            .assert_stderr_contains("90s, 5m, 1h30m, 2d")
            .assert_stdout_empty();
    }
}
