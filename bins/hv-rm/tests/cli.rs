//! hv-rm on real bench VMs: what it removes, what it refuses, what it keeps.

use hv_testbench::{connect, hv, records, GuestSpec, URI};
use std::process::Command;

const HV_RM: &str = env!("CARGO_BIN_EXE_hv-rm");

fn defined(uuid: &str) -> bool {
    Command::new("virsh")
        .args(["-c", URI, "dominfo", uuid])
        .output()
        .unwrap()
        .status
        .success()
}

fn err(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bench_in_a_pipe_without_yes_nothing_is_deleted() {
    let conn = connect();
    let g = GuestSpec::new("keep me ü").define(&conn);
    let out = hv(
        HV_RM,
        &["--remove-storage", "--force"],
        &format!("{}\n", g.name),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(err(&out).contains("--yes"), "{}", err(&out));
    assert!(out.stdout.is_empty());
    assert!(defined(&g.uuid) && g.disk.exists());

    let dry = hv(
        HV_RM,
        &["--remove-storage", "--dry-run"],
        &format!("{}\n", g.name),
    );
    let r = &records(&dry)[0];
    assert_eq!(
        r["removed_storage"],
        serde_json::json!([g.disk.to_str().unwrap()])
    );
    assert_eq!(r["dry_run"], true);
    assert!(
        defined(&g.uuid) && g.disk.exists(),
        "a dry run deletes nothing"
    );
}

#[test]
fn bench_running_vms_are_refused_unless_forced() {
    let conn = connect();
    let up = GuestSpec::new("rm running").define(&conn);
    let down = GuestSpec::new("rm stopped").define(&conn);
    up.start_ready();
    let out = hv(
        HV_RM,
        &["--yes", "--remove-storage", &up.name, &down.name],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let recs = records(&out);
    let by = |u: &str| recs.iter().find(|r| r["uuid"] == u).unwrap().clone();
    assert_eq!(by(&up.uuid)["error"]["code"], "invalid_state");
    assert!(defined(&up.uuid), "the running VM is untouched");
    assert_eq!(
        by(&down.uuid)["removed_storage"],
        serde_json::json!([down.disk.to_str().unwrap()])
    );
    assert!(!defined(&down.uuid) && !down.disk.exists());

    let forced = hv(
        HV_RM,
        &["--yes", "--force", "--remove-storage", &up.uuid],
        "",
    );
    assert!(forced.status.success(), "{}", err(&forced));
    assert_eq!(records(&forced)[0]["stopped"], true);
    assert!(!defined(&up.uuid) && !up.disk.exists());
}

#[test]
fn bench_keeps_a_disk_another_vm_uses_as_backing_file_and_handles_snapshots() {
    let conn = connect();
    let base = GuestSpec::new("rm base").define(&conn);
    let clone = GuestSpec::new("rm clone").define(&conn);
    // Turn the clone's disk into an overlay on the base's disk (a linked clone).
    let status = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&base.disk)
        .arg(&clone.disk)
        .status()
        .unwrap();
    assert!(status.success());
    let snap = Command::new("virsh")
        .args(["-c", URI, "snapshot-create-as", &base.uuid, "before-rm"])
        .status()
        .unwrap();
    assert!(snap.success());
    let out = hv(HV_RM, &["--yes", "--remove-storage", &base.name], "");
    assert!(out.status.success(), "{}", err(&out));
    let r = &records(&out)[0];
    assert_eq!(r["removed_storage"], serde_json::json!([]));
    let kept = &r["kept_storage"][0];
    assert_eq!(kept["path"], base.disk.to_str().unwrap());
    assert!(
        kept["reason"].as_str().unwrap().contains(&clone.name),
        "{kept}"
    );
    assert!(!defined(&base.uuid), "undefined despite its snapshot");
    assert!(base.disk.exists(), "the clone's backing file is kept");
    clone.start_ready();
}

#[test]
fn bench_at_a_terminal_it_asks_once() {
    let conn = connect();
    let g = GuestSpec::new("asked").define(&conn);
    let ask = |answer: &str| {
        let mut child = Command::new("script")
            .args([
                "-qec",
                &format!("{HV_RM} -c {URI} '{}'", g.name),
                "/dev/null",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(answer.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let no = ask("n\n");
    let screen = String::from_utf8_lossy(&no.stdout).into_owned();
    assert!(
        screen.contains("remove 1 VM(s)") && screen.contains("[y/N]"),
        "{screen}"
    );
    assert!(screen.contains("nothing removed"), "{screen}");
    assert!(defined(&g.uuid));
    let yes = ask("y\n");
    assert!(
        yes.status.success(),
        "{}",
        String::from_utf8_lossy(&yes.stdout)
    );
    assert!(!defined(&g.uuid));
    assert!(g.disk.exists(), "without --remove-storage the disk stays");
}

/// `--timeout` takes the common duration syntax; a bad one is a usage
/// error naming the accepted forms. On libvirt's test driver (its `test`
/// VM runs, hence --force): no bench, and a dry run removes nothing.
#[test]
fn timeout_takes_the_common_duration_syntax() {
    let args = |timeout: &'static str| {
        [
            "-c",
            "test:///default",
            "--dry-run",
            "--force",
            "--timeout",
            timeout,
            "test",
        ]
    };
    let out = hv(HV_RM, &args("5m"), "");
    assert!(out.status.success(), "{}", err(&out));
    let r = &records(&out)[0];
    assert_eq!(
        (&r["ok"], &r["dry_run"]),
        (&serde_json::json!(true), &serde_json::json!(true))
    );
    let bad = hv(HV_RM, &args("5x"), "");
    assert_eq!(bad.status.code(), Some(2), "{}", err(&bad));
    assert!(
        err(&bad).contains("--timeout") && err(&bad).contains("90s, 5m, 1h30m, 2d"),
        "the error names the flag and the accepted forms: {}",
        err(&bad)
    );
    assert!(bad.stdout.is_empty());
}
