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

/// Lets the writer guest write for a while (at least one random MiB, said
/// written, besides its own counting), then forces it off.
fn write_a_while(g: &Guest) {
    g.start_ready();
    g.write_mib(1, 1);
    std::thread::sleep(Duration::from_secs(1));
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

/// The records of `hv-snap schedule` about `guests` (other tests' VMs
/// may share the daemon), by VM name.
fn schedule(args: &[&str], guests: &[&Guest]) -> (Run, Vec<Value>) {
    let mut full = vec!["schedule"];
    full.extend(args);
    let out = snap(&full);
    let records = out
        .records()
        .into_iter()
        .filter(|r| guests.iter().any(|g| r["uuid"] == g.uuid.as_str()))
        .collect();
    (out, records)
}

fn of<'a>(records: &'a [Value], g: &Guest) -> &'a Value {
    let found: Vec<&Value> = records
        .iter()
        .filter(|r| r["uuid"] == g.uuid.as_str())
        .collect();
    assert_eq!(found.len(), 1, "{}: {records:#?}", g.name);
    found[0]
}

/// `policy` in a VM's schedule record: (due, the snapshot taken, removed).
fn ran(record: &Value, policy: &str) -> (bool, Option<String>, Vec<String>) {
    let p = record["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["policy"] == policy)
        .unwrap_or_else(|| panic!("{policy}: {record}"));
    let removed = p["pruned"]["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    (
        p["due"] == true,
        p["taken"]["snapshot"].as_str().map(str::to_owned),
        removed,
    )
}

#[test]
fn bench_schedule_takes_what_is_due_and_each_policy_prunes_only_its_own() {
    let conn = connect();
    let both = GuestSpec::new("sched both").define(&conn);
    let one = GuestSpec::new("sched one").define(&conn);
    let untagged = GuestSpec::new("sched none").define(&conn);
    let tag = |g: &Guest, tags: &[&str]| {
        let mut args = Vec::new();
        for t in tags {
            args.extend(["--add", *t]);
        }
        args.push(&g.name);
        hv(&hv_testbench::bin("hv-tag"), &args, "").assert_ok();
    };
    tag(&both, &["snap:often", "snap:rare"]);
    tag(&one, &["snap:often", "snap:nosuch"]);
    let dir = hv_testbench::scratch("snap-schedule");
    let policies = dir.join("policies.json");
    std::fs::write(
        &policies,
        r#"{"often": {"every": "10s", "keep": {"last": 2}}, "rare": {"every": "1h", "keep": {"last": 5}}}"#,
    )
    .unwrap();
    let policies = policies.to_str().unwrap();
    // A snapshot by hand and one by plain hv-snap create, on the same VM.
    Command::new("virsh")
        .args(["-c", URI, "-q", "snapshot-create-as", &one.uuid, "by-hand"])
        .status()
        .unwrap();
    snap(&["create", "--name", "plain", &one.uuid]).assert_ok();
    let guests = [&both, &one, &untagged];

    let (out, recs) = schedule(&["--policies", policies], &guests);
    out.assert_ok()
        .assert_stderr_contains("tag snap:nosuch names no policy");
    assert_eq!(recs.len(), 2, "the untagged VM is not touched: {recs:#?}");
    assert_fields(
        of(&recs, &both),
        json!({"action": "schedule", "ok": true, "changed": true}),
    );
    let (due, first, _) = ran(of(&recs, &both), "often");
    assert!(due && first.as_deref().is_some_and(|s| s.starts_with("often-")));
    assert!(ran(of(&recs, &both), "rare").0);
    let (_, first_one, _) = ran(of(&recs, &one), "often");

    // At once again: nothing is due, nothing taken.
    let (_, recs) = schedule(&["--policies", policies], &guests);
    assert_eq!(ran(of(&recs, &both), "often"), (false, None, vec![]));
    assert_fields(of(&recs, &both), json!({"changed": false}));

    let mut taken = vec![first.unwrap()];
    for round in 0..2 {
        std::thread::sleep(Duration::from_secs(10));
        let (_, recs) = schedule(&["--policies", policies], &guests);
        let (due, snapshot, removed) = ran(of(&recs, &both), "often");
        assert!(due, "round {round}");
        taken.push(snapshot.unwrap());
        assert!(!ran(of(&recs, &both), "rare").0, "rare is hourly");
        // keep last 2: the third run removes the first.
        let expected: Vec<String> = if round == 1 {
            vec![taken[0].clone()]
        } else {
            vec![]
        };
        assert_eq!(removed, expected, "round {round}");
    }
    let now = names(&both);
    assert!(
        !now.contains(&taken[0]) && now.contains(&taken[1]) && now.contains(&taken[2]),
        "{now:?}"
    );
    assert_eq!(
        now.iter().filter(|n| n.starts_with("rare-")).count(),
        1,
        "{now:?}"
    );

    // The plain prune judges only snapshots no policy took.
    let pruned = snap(&["prune", "--keep-last", "1", &one.uuid])
        .assert_ok()
        .records();
    let judged: Vec<&str> = pruned[0]["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["snapshot"].as_str().unwrap())
        .collect();
    assert_eq!(judged, ["plain"]);
    let listed = snap(&["ls", &one.uuid]).assert_ok().records();
    let policy_of = |name: &str| {
        listed
            .iter()
            .find(|s| s["snapshot"] == name)
            .map(|s| s["policy"].clone())
            .unwrap_or_else(|| panic!("{name}: {listed:#?}"))
    };
    assert_eq!(policy_of("by-hand"), Value::Null);
    assert_eq!(policy_of("plain"), Value::Null);
    let scheduled: Vec<&Value> = listed
        .iter()
        .filter(|s| s["snapshot"].as_str().unwrap().starts_with("often-"))
        .collect();
    assert_eq!(scheduled.len(), 2, "kept last 2: {listed:#?}");
    assert!(scheduled.iter().all(|s| s["policy"] == "often"));
    assert!(!listed
        .iter()
        .any(|s| s["snapshot"] == first_one.as_deref().unwrap()));

    // A dry run says what is due and takes nothing.
    std::thread::sleep(Duration::from_secs(10));
    let before = names(&both);
    let (_, recs) = schedule(&["--policies", policies, "--dry-run"], &guests);
    assert_fields(of(&recs, &both), json!({"dry_run": true, "changed": false}));
    assert!(ran(of(&recs, &both), "often").0);
    assert_eq!(names(&both), before);

    // A bad policies file names the field, and nothing runs.
    std::fs::write(
        dir.join("bad.json"),
        r#"{"often": {"every": "2s", "keep": {"lats": 2}}}"#,
    )
    .unwrap();
    let bad = dir.join("bad.json");
    snap(&["schedule", "--policies", bad.to_str().unwrap()])
        .assert_exit(2)
        .assert_stderr_contains("often.keep.lats: unknown field");
    assert_eq!(names(&both), before);
    let _ = std::fs::remove_dir_all(&dir);
}
