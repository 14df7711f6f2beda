//! hv-audit on logs as hv commands leave them, and on files that are not
//! logs. (The bench test tests/tests/audit.rs makes its log with real
//! commands on real VMs.)

// These tests need the bench (tests/run.sh); `cargo test` without
// `--features bench` still builds the command for the transcripts.
#![cfg(feature = "bench")]

use hv_testbench::{hv, scratch};
use serde_json::json;

const HV_AUDIT: &str = env!("CARGO_BIN_EXE_hv-audit");

/// An entry as hv writes one, `age_ms` before now.
fn entry(vm: &str, action: &str, ok: bool, age_ms: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    json!({
        "time": "2026-12-06T00:00:00Z", "time_unix_ms": now - age_ms, "host": "h1",
        "program": "hv-stop", "args": [vm], "uid": 0, "user": "root", "pid": 1,
        "action": action, "vm": vm, "ok": ok,
        "record": {"name": vm, "uuid": format!("uuid-{vm}"), "action": action, "ok": ok}
    })
    .to_string()
}

#[test]
fn filters_combine_and_bad_lines_are_named() {
    let dir = scratch("audit-read");
    let log = dir.join("audit.log");
    let lines = [
        entry("web1", "stop", true, 3 * 86_400_000),
        entry("web1", "start", false, 3_600_000),
        "{\"torn\":".to_owned(),
        entry("db 1", "tag", true, 60_000),
    ];
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let log = log.to_str().unwrap();
    let read = |args: &[&str]| {
        let mut full = vec!["--audit-log", log, "--format", "jsonl"];
        full.extend_from_slice(args);
        hv(HV_AUDIT, &full, "")
    };
    // The torn line is skipped and named; the run says so with exit 1.
    let all = read(&[]);
    all.assert_exit(1)
        .assert_stderr_contains("line 3 is not an audit entry");
    assert_eq!(all.records().len(), 3);
    let vms = |args: &[&str]| -> Vec<String> {
        read(args)
            .records()
            .iter()
            .map(|r| {
                format!(
                    "{} {}",
                    r["vm"].as_str().unwrap(),
                    r["action"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(vms(&["--since", "1d"]), ["web1 start", "db 1 tag"]);
    assert_eq!(vms(&["--failed"]), ["web1 start"]);
    assert_eq!(vms(&["--vm", "web1", "--action", "stop"]), ["web1 stop"]);
    assert_eq!(
        vms(&["--vm", "UUID-DB 1"]),
        ["db 1 tag"],
        "by UUID, in any case"
    );
    assert_eq!(vms(&["--host", "h2"]), Vec::<String>::new());
    read(&["--since", "yesterday"])
        .assert_exit(2)
        .assert_stderr_contains("--since \"yesterday\"");
    // Not a log at all, and no log.
    hv(HV_AUDIT, &["--audit-log", "/dev/zero"], "")
        .assert_exit(1)
        .assert_stderr_contains("not an audit log");
    hv(HV_AUDIT, &["--audit-log", "/nonexistent/audit.log"], "")
        .assert_exit(1)
        .assert_stderr_contains("cannot read the audit log");
    let _ = std::fs::remove_dir_all(&dir);
}
