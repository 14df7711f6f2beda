//! The audit trail as an admin reads it the morning after: every change
//! hv made, one entry per VM, with who ran it and whether it worked.

use hv_testbench::{connect, documented_fields, pipeline, run_prefix, scratch, GuestSpec};
use serde_json::Value;

/// The entries `hv-audit ARGS` prints from the log `log`.
fn audit(log: &str, args: &str) -> Vec<Value> {
    pipeline(&format!(
        "HV_AUDIT_LOG='{log}' hv-audit --format jsonl {args}"
    ))
    .assert_ok()
    .records()
}

#[test]
fn bench_every_change_leaves_one_entry_per_vm_with_its_user_and_result() {
    let conn = connect();
    let a = GuestSpec::new("audit a").define(&conn);
    let b = GuestSpec::new("audit b").define(&conn);
    let dir = scratch("audit");
    let log = dir.join("audit.log");
    let log = log.to_str().unwrap();
    let missing = format!("{}audit-missing", run_prefix());
    let script = format!(
        "export HV_AUDIT_LOG='{log}'
         hv-tag --add audited '{a}' '{b}' >/dev/null
         hv-start --wait '{a}' '{missing}' >/dev/null; \
         hv-stop --dry-run '{a}' >/dev/null
         hv-stop --force '{a}' >/dev/null
         hv-ls --name '{a}' >/dev/null
         hv-autostart on '{b}' >/dev/null
         hv-snap create --name first '{b}' >/dev/null
         printf 'an image' > '{dir}/tiny.iso'
         sum=$(sha256sum '{dir}/tiny.iso' | cut -d' ' -f1)
         hv-iso add --library '{dir}/isos' --allow-unsigned --sha256 \"$sum\" '{dir}/tiny.iso' >/dev/null
         hv-iso add --library '{dir}/isos' --allow-unsigned --sha256 {zeros} --name bad.iso '{dir}/tiny.iso' >/dev/null 2>&1
         true",
        a = a.name,
        b = b.name,
        dir = dir.display(),
        zeros = "0".repeat(64),
    );
    pipeline(&script).assert_ok();
    let all = audit(log, "");
    let of = |vm: &str| -> Vec<(String, bool)> {
        all.iter()
            .filter(|e| e["vm"] == vm)
            .map(|e| (e["action"].as_str().unwrap().to_owned(), e["ok"] == true))
            .collect()
    };
    // The listing and the dry run changed nothing: not logged.
    assert_eq!(
        of(&a.name),
        [
            ("tag".into(), true),
            ("start".into(), true),
            ("stop".into(), true)
        ]
    );
    assert_eq!(
        of(&b.name),
        [
            ("tag".into(), true),
            ("autostart".into(), true),
            ("snapshot".into(), true)
        ]
    );
    assert_eq!(of("tiny.iso"), [("add".into(), true)], "hv-iso add");
    // A failure is an entry too, with its error.
    let failed = audit(log, "--failed");
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert_eq!(failed[0]["vm"], missing.as_str());
    assert_eq!(failed[0]["record"]["error"]["code"], "not_found");
    assert_eq!(
        (&failed[1]["vm"], &failed[1]["action"]),
        (&Value::from("bad.iso"), &Value::from("add"))
    );
    assert_eq!(failed[1]["record"]["error"]["code"], "corrupt");
    for e in &all {
        assert_eq!(
            (e["uid"].as_u64(), e["user"].as_str()),
            (Some(0), Some("root")),
            "{e}"
        );
        assert!(e["args"].as_array().is_some_and(|a| !a.is_empty()), "{e}");
        assert!(
            e["time"]
                .as_str()
                .is_some_and(|t| t.len() == 20 && t.ends_with('Z')),
            "{e}"
        );
    }
    // Every entry has the fields docs/audit.md lists, in its order.
    let keys: Vec<String> = all[0].as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, documented_fields("audit.md", "## Entries"));
    // The filters combine.
    assert_eq!(
        audit(log, &format!("--vm '{}' --action stop", a.name)).len(),
        1
    );
    assert_eq!(audit(log, "--since 1h").len(), all.len());
    assert_eq!(audit(log, "--since 2020-01-01T00:00:00Z").len(), all.len());
    let mode = std::fs::metadata(log).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
}

#[test]
fn bench_concurrent_commands_never_interleave_their_entries() {
    let conn = connect();
    let guests: Vec<_> = (0..4)
        .map(|i| GuestSpec::new(&format!("audit many {i}")).define(&conn))
        .collect();
    let names: Vec<String> = guests.iter().map(|g| format!("'{}'", g.name)).collect();
    let dir = scratch("audit-many");
    let log = dir.join("audit.log");
    let log = log.to_str().unwrap();
    // Four writers at once, ten rounds each, four VMs a round.
    let script = format!(
        "export HV_AUDIT_LOG='{log}'
         for w in 1 2 3 4; do
           (for r in 1 2 3 4 5 6 7 8 9 10; do hv-tag --add \"w$w-$r\" -j 4 {vms} >/dev/null; done) &
         done
         wait",
        vms = names.join(" ")
    );
    pipeline(&script).assert_ok();
    let text = std::fs::read_to_string(log).unwrap();
    assert_eq!(text.lines().count(), 4 * 10 * 4);
    for line in text.lines() {
        let entry: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(entry["action"], "tag");
    }
}

#[test]
fn bench_a_run_cut_short_by_ctrl_c_logs_what_it_printed() {
    use std::process::{Command, Stdio};
    let conn = connect();
    // The first ignores the ACPI button, so the stop is still waiting when
    // Ctrl-C comes; the second has not started then.
    let deaf = GuestSpec::new("audit deaf").ignore_acpi().define(&conn);
    let other = GuestSpec::new("audit other").define(&conn);
    deaf.start_ready();
    other.start_ready();
    let dir = scratch("audit-int");
    let log = dir.join("audit.log");
    let child = Command::new(hv_testbench::bin("hv-stop"))
        .args([
            "--no-force",
            "--timeout",
            "30s",
            "-j",
            "1",
            "--format",
            "jsonl",
        ])
        .args([&deaf.name, &other.name])
        .env("HV_CONNECT", hv_testbench::URI)
        .env("HV_AUDIT_LOG", &log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Well inside the first stop's 30 s, even on a loaded machine.
    std::thread::sleep(std::time::Duration::from_secs(5));
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    let printed: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let entries = audit(log.to_str().unwrap(), "");
    // Every record printed is an entry, the cancelled one too; nothing else.
    assert_eq!(entries.len(), printed.len(), "{entries:?}");
    for (e, r) in entries.iter().zip(&printed) {
        assert_eq!(&e["record"], r);
    }
    let codes: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["vm"].as_str().unwrap(),
                e["record"]["error"]["code"].as_str().unwrap_or("none"),
            )
        })
        .collect();
    assert!(
        codes.contains(&(other.name.as_str(), "cancelled")),
        "{codes:?}"
    );
    assert!(codes.iter().any(|(vm, _)| *vm == deaf.name), "{codes:?}");
}
