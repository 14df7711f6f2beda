//! hv-health on the real bench: a guest whose QEMU is killed from outside,
//! one QEMU pauses on its own, an autostart guest left off, a repository
//! on a tiny tmpfs, an ISO library with a rotten image, an unreachable
//! daemon, and the state file across runs. Records are checked field by
//! field, as a script reads them.

// These tests need the bench (tests/run.sh); `cargo test` without
// `--features bench` still builds the command for the transcripts.
#![cfg(feature = "bench")]

use hv_testbench::{
    assert_fields, backup_repo, bin, check_record as find, connect, hv, hv_iso_in, scratch,
    GuestSpec, Run, Tmpfs, URI,
};
use serde_json::{json, Value};
use std::process::Command;

const HV_HEALTH: &str = env!("CARGO_BIN_EXE_hv-health");

fn health(args: &[&str]) -> Run {
    let mut full = vec!["--format", "jsonl"];
    full.extend(args);
    let out = hv(HV_HEALTH, &full, "");
    for r in out.records() {
        assert_record(&r);
    }
    out
}

/// The shape docs/health.md promises: the fields in order (`change` last,
/// with --state-file), and `unit` saying what `value` and `threshold`
/// count: set exactly when they are numbers, so a script may compare them.
fn assert_record(r: &Value) {
    let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    let keys = keys.strip_suffix(&["change"]).unwrap_or(&keys);
    assert_eq!(&keys[..3], ["check", "status", "subject"], "{r}");
    assert_eq!(
        &keys[keys.len() - 5..],
        ["message", "hint", "value", "threshold", "unit"],
        "{r}"
    );
    let measures = [&r["value"], &r["threshold"]];
    match r["unit"].as_str() {
        Some(unit) => {
            assert!(
                ["percent", "seconds", "bytes", "count"].contains(&unit),
                "{r}"
            );
            assert!(measures.iter().all(|m| m.is_null() || m.is_number()), "{r}");
            assert!(measures.iter().any(|m| m.is_number()), "{r}");
            if unit == "percent" {
                let share = |m: &&Value| m.as_f64().is_none_or(|p| (0.0..=100.0).contains(&p));
                assert!(measures.iter().all(share), "{r}");
            }
        }
        None => {
            assert!(r["unit"].is_null(), "{r}");
            assert!(
                measures.iter().all(|m| !m.is_number()),
                "text has no unit: {r}"
            );
        }
    }
}

fn virsh(args: &[&str]) {
    let out = Command::new("virsh")
        .args(["-c", URI, "-q"])
        .args(args)
        .output()
        .expect("run virsh");
    Run::new(format!("virsh {args:?}"), out).assert_ok();
}

#[test]
fn a_killed_guest_is_crashed_and_an_autostart_guest_left_off_is_reported() {
    let conn = connect();
    let crashed = GuestSpec::new("health-crash").define(&conn);
    let off = GuestSpec::new("health-autostart").define(&conn);
    off.domain.set_autostart(true).unwrap();
    crashed.start_ready();
    crashed.kill_qemu();
    virsh(&["snapshot-create-as", &off.name, "before"]);

    let out = health(&[&crashed.name, &off.name, "--max-snapshots", "0"]);
    let recs = out.assert_exit(1).records(); // a failed check exits 1
    let r = find(&recs, "vm.crashed", &crashed.name);
    assert_fields(
        r,
        json!({
            "status": "fail",
            "name": crashed.name,
            "uuid": crashed.uuid,
            "value": "shutoff/crashed",
            "threshold": null,
        }),
    );
    assert!(r["message"].as_str().unwrap().contains("crashed"), "{r}");
    assert!(
        r["hint"]
            .as_str()
            .unwrap()
            .contains(&format!("hv-start {:?}", crashed.name)),
        "{r}"
    );

    let r = find(&recs, "vm.autostart", &off.name);
    assert_fields(r, json!({"status": "warn", "value": true}));
    assert!(
        r["hint"].as_str().unwrap().contains("hv-autostart off"),
        "{r}"
    );
    assert_eq!(find(&recs, "vm.autostart", &crashed.name)["status"], "pass");
    assert_eq!(find(&recs, "vm.crashed", &off.name)["status"], "pass");
    assert_eq!(
        find(&recs, "vm.crashed", &off.name)["hint"],
        Value::Null,
        "no hint on a pass"
    );

    let r = find(&recs, "vm.snapshot_count", &off.name);
    assert_fields(
        r,
        json!({"status": "warn", "value": 1, "threshold": 0, "unit": "count"}),
    );
    let r = find(&recs, "vm.snapshot_age", &off.name);
    assert_eq!(r["unit"], "seconds", "{r}");
    assert_eq!(
        find(&recs, "vm.snapshot_count", &crashed.name)["status"],
        "pass"
    );
    assert_eq!(find(&recs, "libvirt.reachable", "host")["status"], "pass");

    // Only the problems; and the crash fixed, the exit is 0 with a warning.
    let recs = health(&[&crashed.name, &off.name, "--problems"]).records();
    assert!(
        !recs.is_empty() && recs.iter().all(|r| r["status"] != "pass"),
        "{recs:#?}"
    );
    crashed.start_ready();
    health(&[&crashed.name, &off.name]).assert_ok(); // a warning alone exits 0
    health(&[&crashed.name, &off.name, "--strict"]).assert_exit(1); // but 1 with --strict
}

/// QEMU stopping a guest on its own (an internal error, here its monitor's
/// `stop`, which libvirt sees the same way) leaves it paused with reason
/// unknown, and nobody will resume it: a failure with the fix. A user's
/// pause is no problem.
#[test]
fn a_guest_paused_by_qemu_fails_and_one_paused_by_a_user_passes() {
    let conn = connect();
    let guest = GuestSpec::new("health paused").define(&conn);
    guest.start_ready();
    virsh(&["qemu-monitor-command", &guest.uuid, "--hmp", "stop"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while guest.virsh_domstate() != "paused (unknown)" {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            guest.virsh_domstate()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let recs = health(&[&guest.name]).assert_exit(1).records();
    let r = find(&recs, "vm.paused", &guest.name);
    assert_fields(
        r,
        json!({
            "status": "fail",
            "uuid": guest.uuid,
            "value": "paused/unknown",
            "unit": null,
        }),
    );
    let fix = r["hint"].as_str().unwrap();
    assert!(
        fix.contains(&format!("/var/log/libvirt/qemu/{}.log", guest.name))
            && fix.contains(&format!("hv-start {:?}", guest.name))
            && fix.contains(&format!("hv-stop --force {:?}", guest.name)),
        "{r}"
    );
    assert_eq!(find(&recs, "vm.io_error", &guest.name)["status"], "pass");

    // The fix works: hv-start resumes it.
    hv(&bin("hv-start"), &[&guest.name], "").assert_ok();
    assert_eq!(guest.virsh_domstate(), "running (unpaused)");
    virsh(&["suspend", &guest.uuid]);
    assert_eq!(guest.virsh_domstate(), "paused (user)");
    let recs = health(&[&guest.name]).assert_ok().records();
    assert_fields(
        find(&recs, "vm.paused", &guest.name),
        json!({"status": "pass", "value": "paused/user", "hint": null}),
    );
}

#[test]
fn the_state_file_marks_new_ongoing_and_resolved() {
    let conn = connect();
    let guest = GuestSpec::new("health-state").define(&conn);
    guest.start_ready();
    guest.kill_qemu();
    let dir = scratch("health-state");
    let state = dir.join("health.json");
    let state = state.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![guest.name.as_str(), "--state-file", state];
        args.extend(extra);
        health(&args).records()
    };
    let first = run(&[]);
    assert_eq!(find(&first, "vm.crashed", &guest.name)["change"], "new");
    assert_eq!(
        find(&first, "vm.io_error", &guest.name)["change"],
        Value::Null
    );
    let second = run(&[]);
    assert_eq!(
        find(&second, "vm.crashed", &guest.name)["change"],
        "ongoing"
    );
    assert!(run(&["--changes-only"]).is_empty(), "nothing changed");
    guest.start_ready();
    let fixed = run(&["--changes-only"]);
    assert_eq!(fixed.len(), 1, "{fixed:#?}");
    assert_fields(
        &fixed[0],
        json!({"check": "vm.crashed", "status": "pass", "change": "resolved"}),
    );
    assert!(run(&["--changes-only"]).is_empty(), "resolved is said once");

    // A damaged state file does not stop the checks: it is named, and read as empty.
    std::fs::write(state, "not json").unwrap();
    let out = health(&[&guest.name, "--state-file", state]);
    out.assert_ok().assert_stderr_contains("starting afresh");
    assert!(!out.records().is_empty());
    assert!(
        run(&["--changes-only"]).is_empty(),
        "the file is whole again"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_newest_backup_of_each_vm_is_measured_against_max_backup_age() {
    let conn = connect();
    let backed = GuestSpec::new("health backed up").define(&conn);
    let never = GuestSpec::new("health never backed up").define(&conn);
    let dir = scratch("health-backup-age");
    let repo = dir.join("repo");
    let create_args = backup_repo(&dir, &repo);
    let mut args = vec!["create", backed.name.as_str()];
    args.extend(create_args.iter().map(String::as_str));
    hv(&bin("hv-backup"), &args, "").assert_ok();
    let shown = repo.to_str().unwrap();

    let out = health(&[&backed.name, &never.name, "--repo", shown]);
    let recs = out.records();
    let r = find(&recs, "vm.backup_age", &backed.name);
    assert_fields(
        r,
        json!({
            "status": "pass",
            "uuid": backed.uuid,
            "threshold": 26 * 3600,
            "unit": "seconds",
        }),
    );
    assert!(r["value"].as_i64().unwrap() < 120, "{r}");
    assert!(r["message"].as_str().unwrap().contains(shown), "{r}");
    let r = find(&recs, "vm.backup_age", &never.name);
    assert_fields(r, json!({"status": "warn"}));
    assert!(
        r["message"].as_str().unwrap().contains("has no backup"),
        "{r}"
    );
    // No age, but the limit it will be held to.
    assert_fields(
        r,
        json!({"value": null, "threshold": 26 * 3600, "unit": "seconds"}),
    );
    assert!(
        r["hint"]
            .as_str()
            .unwrap()
            .contains(&format!("hv-backup create {:?}", never.name)),
        "{r}"
    );
    out.assert_ok(); // a warning alone exits 0

    std::thread::sleep(std::time::Duration::from_secs(2));
    let out = health(&[
        &backed.name,
        "--repo",
        shown,
        "--max-backup-age",
        "1s",
        "--strict",
    ]);
    let recs = out.assert_exit(1).records(); // --strict fails on a warning
    let r = find(&recs, "vm.backup_age", &backed.name);
    assert_fields(r, json!({"status": "warn", "threshold": 1}));
    assert!(r["value"].as_i64().unwrap() >= 2, "{r}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_nearly_full_repository_filesystem_warns_then_fails_and_libvirt_down_still_checks_it() {
    let dir = scratch("health-tiny");
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let tiny = Tmpfs::mount(&repo, 4);
    let shown = repo.to_str().unwrap();
    let only_repo = |fill: u64| {
        tiny.fill(fill);
        let out = health(&[
            "--repo",
            shown,
            "--problems",
            "--disk-warn",
            "80",
            "--disk-fail",
            "95",
            "--host-only",
        ]);
        let r = out
            .records()
            .into_iter()
            .find(|r| r["check"] == "repository.space");
        (out.code(), r)
    };
    let (_, r) = only_repo(50);
    assert_eq!(r, None, "half full is no problem");
    let (_, r) = only_repo(88);
    let r = r.expect("a warning");
    assert_fields(
        &r,
        json!({"status": "warn", "repository": shown, "unit": "percent"}),
    );
    assert_eq!(r["threshold"], 80.0);
    let used = r["value"].as_f64().unwrap();
    assert!((85.0..95.0).contains(&used), "{used}");
    assert!(
        r["hint"].as_str().unwrap().contains("hv-backup prune"),
        "{r}"
    );
    let (code, r) = only_repo(99);
    assert_eq!(code, Some(1), "a failed check exits 1");
    let r = r.expect("a failure");
    assert_eq!(
        (r["status"].as_str(), r["threshold"].as_f64()),
        (Some("fail"), Some(95.0))
    );

    let out = hv(
        HV_HEALTH,
        &[
            "-c",
            "qemu+unix:///system?socket=/nonexistent",
            "--format",
            "jsonl",
            "--repo",
            shown,
        ],
        "",
    );
    let recs = out.assert_exit(3).records();
    let r = find(&recs, "libvirt.reachable", "host");
    assert_fields(r, json!({"status": "fail"}));
    assert!(r["hint"].as_str().unwrap().contains("libvirtd"), "{r}");
    assert_eq!(
        find(&recs, "repository.space", shown)["status"],
        "fail",
        "checked without libvirt"
    );
    drop(tiny);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn iso_images_that_failed_or_missed_their_verify_are_reported() {
    let dir = scratch("health-iso");
    let lib = dir.join("isos");
    let iso = |args: &[&str]| hv_iso_in(&lib, args);
    for (name, byte) in [("good.iso", 1u8), ("rotten.iso", 2), ("unchecked.iso", 3)] {
        let image = dir.join(name);
        std::fs::write(&image, vec![byte; 1 << 20]).unwrap();
        let added = iso(&["add", image.to_str().unwrap(), "--allow-unsigned"]);
        assert!(lib.join(name).exists(), "{added:?}");
    }
    let mut rotten = std::fs::read(lib.join("rotten.iso")).unwrap();
    rotten[100] ^= 1;
    std::fs::write(lib.join("rotten.iso"), rotten).unwrap();
    iso(&["verify", "good.iso", "rotten.iso"]);
    let recs = health(&["--iso-library", lib.to_str().unwrap(), "--host-only"]).records();
    let shown = lib.display().to_string();
    let subject = |n: &str| format!("{n} {shown}");
    let good = find(&recs, "iso.verified", &subject("good.iso"));
    assert_fields(
        good,
        json!({"status": "pass", "image": "good.iso", "library": shown}),
    );
    let bad = find(&recs, "iso.verified", &subject("rotten.iso"));
    assert_fields(bad, json!({"status": "fail"}));
    assert!(
        bad["hint"].as_str().unwrap().contains("hv-iso add --force"),
        "{bad}"
    );
    let never = find(&recs, "iso.verified", &subject("unchecked.iso"));
    assert_fields(never, json!({"status": "warn"}));
    assert!(
        never["hint"].as_str().unwrap().contains("hv-iso verify"),
        "{never}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// hv-health --fix with a state file: its check records (shape checked
/// as always) and, after them, its repairs.
fn fixing(state: &str, args: &[&str]) -> (Run, Vec<Value>, Vec<Value>) {
    let mut full = vec!["--format", "jsonl", "--state-file", state];
    full.extend(args);
    let out = hv(HV_HEALTH, &full, "");
    let records = out.records();
    let first_repair = records
        .iter()
        .position(|r| r["action"] == "fix")
        .unwrap_or(records.len());
    let (checks, repairs) = records.split_at(first_repair);
    checks.iter().for_each(assert_record);
    assert!(
        repairs.iter().all(|r| r["action"] == "fix"),
        "repairs come after the checks: {records:#?}"
    );
    (out, checks.to_vec(), repairs.to_vec())
}

fn repair_of<'a>(repairs: &'a [Value], name: &str) -> Option<&'a Value> {
    let found: Vec<&Value> = repairs.iter().filter(|r| r["name"] == name).collect();
    assert!(found.len() <= 1, "one repair per VM and run: {repairs:#?}");
    found.first().copied()
}

fn audit_entries(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn fix_restarts_a_killed_guest_until_its_limit_then_leaves_it_to_a_person() {
    let conn = connect();
    let crashing = GuestSpec::new("fix crashing").define(&conn);
    let spared = GuestSpec::new("fix spared").define(&conn);
    let off = GuestSpec::new("fix autostart").autostart().define(&conn);
    hv(&bin("hv-tag"), &["--add", "no-autofix", &spared.name], "").assert_ok();
    crashing.start_ready();
    spared.start_ready();
    crashing.kill_qemu();
    spared.kill_qemu();
    let dir = scratch("health-fix");
    let (state, audit) = (dir.join("health.json"), dir.join("audit.jsonl"));
    let (state_arg, audit_arg) = (state.to_str().unwrap(), audit.to_str().unwrap());
    let run = |backoff: &str, extra: &[&str]| {
        let mut args = vec![crashing.name.as_str(), &spared.name, &off.name];
        args.extend(["--fix", "vm.crashed,vm.autostart", "--fix-attempts", "2"]);
        args.extend(["--fix-backoff", backoff, "--audit-log", audit_arg]);
        args.extend(extra);
        fixing(state_arg, &args)
    };
    let crashed = "shut off (crashed)";

    // A dry run says what it would do, and does nothing.
    let (_, _, repairs) = run("0", &["--dry-run"]);
    assert_eq!(repairs.len(), 2, "{repairs:#?}");
    for r in &repairs {
        assert_fields(r, json!({"ok": true, "changed": false, "dry_run": true}));
    }
    assert_eq!(crashing.virsh_domstate(), crashed);
    assert!(off.virsh_domstate().starts_with("shut off"));
    assert!(audit_entries(&audit).is_empty(), "a dry run is not logged");

    let (out, checks, repairs) = run("0", &[]);
    out.assert_exit(1); // the crash was found: a failed check
    assert_fields(
        repair_of(&repairs, &crashing.name).expect("the crashed guest is repaired"),
        json!({"uuid": crashing.uuid, "action": "fix", "ok": true, "check": "vm.crashed",
               "did": "restarted", "changed": true, "attempt": 1}),
    );
    assert_fields(
        repair_of(&repairs, &off.name).expect("the autostart guest is started"),
        json!({"ok": true, "check": "vm.autostart", "did": "started", "attempt": 1}),
    );
    assert!(repair_of(&repairs, &spared.name).is_none());
    let r = find(&checks, "vm.autofix", &spared.name);
    assert_eq!(r["status"], "pass", "{r}");
    assert!(r["message"].as_str().unwrap().contains("no-autofix"), "{r}");
    assert_eq!(crashing.virsh_domstate(), "running (booted)");
    assert_eq!(off.virsh_domstate(), "running (booted)");
    assert_eq!(spared.virsh_domstate(), crashed, "no-autofix is respected");
    let logged = audit_entries(&audit);
    let mut logged_vms: Vec<&str> = logged.iter().map(|e| e["vm"].as_str().unwrap()).collect();
    logged_vms.sort_unstable();
    let mut want = [crashing.name.as_str(), off.name.as_str()];
    want.sort_unstable();
    assert_eq!(logged_vms, want, "one audit entry per repair: {logged:#?}");
    assert!(logged
        .iter()
        .all(|e| e["action"] == "fix" && e["ok"] == true));

    crashing.kill_qemu();
    let (_, _, repairs) = run("0", &[]);
    assert_fields(
        repair_of(&repairs, &crashing.name).unwrap(),
        json!({"ok": true, "attempt": 2}),
    );
    assert_eq!(crashing.virsh_domstate(), "running (booted)");

    // A third crash within the hour: the limit is 2, so it gives up.
    crashing.kill_qemu();
    for _ in 0..2 {
        let (out, checks, repairs) = run("0", &[]);
        out.assert_exit(1);
        assert!(
            repair_of(&repairs, &crashing.name).is_none(),
            "{repairs:#?}"
        );
        let r = find(&checks, "vm.autofix", &crashing.name);
        assert_fields(r, json!({"status": "fail", "value": "vm.crashed"}));
        let message = r["message"].as_str().unwrap();
        assert!(
            message.contains("gave up") || message.contains("gives up"),
            "{r}"
        );
        assert!(
            r["hint"].as_str().unwrap().contains("hv-health --reset"),
            "{r}"
        );
        assert_eq!(crashing.virsh_domstate(), crashed, "left as it is");
    }

    // hv-metrics reports it from the same state file, for HvAutofixGaveUp.
    let metrics = hv(&bin("hv-metrics"), &["--health-state", state_arg], "");
    let text = metrics.stdout();
    let gave_up = format!(
        "hv_autofix_gave_up{{name=\"{}\",uuid=\"{}\",check=\"vm.crashed\"}} 1",
        crashing.name, crashing.uuid
    );
    assert!(text.contains(&gave_up), "{text}");

    // A person looked: --reset lets --fix try again.
    let reset = hv(
        HV_HEALTH,
        &[
            "--format",
            "jsonl",
            "--state-file",
            state_arg,
            "--reset",
            &crashing.name,
        ],
        "",
    );
    let recs = reset.assert_ok().records();
    assert_eq!(recs.len(), 1, "{recs:#?}");
    assert_fields(
        &recs[0],
        json!({"name": crashing.name, "action": "reset", "ok": true, "changed": true}),
    );
    let (_, checks, repairs) = run("0", &[]);
    assert_fields(
        repair_of(&repairs, &crashing.name).unwrap(),
        json!({"ok": true, "attempt": 1}),
    );
    assert_eq!(
        find(&checks, "vm.autofix", &crashing.name)["status"],
        "pass"
    );

    // Backoff: the next attempt waits (an hour here), and says until when.
    crashing.kill_qemu();
    let (_, checks, repairs) = run("1h", &[]);
    assert!(
        repair_of(&repairs, &crashing.name).is_none(),
        "{repairs:#?}"
    );
    let r = find(&checks, "vm.autofix", &crashing.name);
    assert_eq!(r["status"], "warn", "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("attempt 2 of 2 waits until"),
        "{r}"
    );
    assert_eq!(crashing.virsh_domstate(), crashed);
    let _ = std::fs::remove_dir_all(&dir);
}

/// QEMU pauses a guest whose disk cannot grow (a full filesystem); --fix
/// vm.io_error resumes it only once there is space again.
#[test]
fn fix_resumes_a_guest_paused_by_a_full_disk_once_there_is_space() {
    let conn = connect();
    let dir = scratch("health-fix-full");
    let fs = Tmpfs::mount(&dir.join("fs"), 96);
    fs.fill(94);
    let mut spec = GuestSpec::new("fix full disk").writer();
    spec.image_dir = fs.dir.clone();
    let guest = spec.define(&conn);
    guest.start_ready();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while guest.virsh_domstate() != "paused (I/O error)" {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            guest.virsh_domstate()
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let state = dir.join("health.json");
    let run = || {
        fixing(
            state.to_str().unwrap(),
            &[&guest.name, "--fix", "vm.io_error", "--fix-backoff", "0"],
        )
    };
    let (_, checks, repairs) = run();
    assert_eq!(find(&checks, "vm.io_error", &guest.name)["status"], "fail");
    assert!(repairs.is_empty(), "still full: {repairs:#?}");
    let r = find(&checks, "vm.autofix", &guest.name);
    assert_eq!(r["status"], "warn", "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("stays paused until there is space"),
        "{r}"
    );
    assert_eq!(guest.virsh_domstate(), "paused (I/O error)");

    std::fs::remove_file(fs.dir.join("fill")).unwrap();
    let (_, _, repairs) = run();
    assert_fields(
        repair_of(&repairs, &guest.name).expect("resumed"),
        json!({"ok": true, "check": "vm.io_error", "did": "resumed", "changed": true}),
    );
    assert_eq!(guest.virsh_domstate(), "running (unpaused)");
    drop(guest);
    drop(fs);
    let _ = std::fs::remove_dir_all(&dir);
}
