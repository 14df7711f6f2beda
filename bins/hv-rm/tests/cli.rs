//! hv-rm on real bench VMs: what it removes, what it refuses, what it keeps.

// These tests need the bench (tests/run.sh); `cargo test` without
// `--features bench` still builds the command for the transcripts.
#![cfg(feature = "bench")]

use hv_testbench::{assert_fields, connect, hv, GuestSpec, Run, URI};
use serde_json::json;
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

#[test]
fn bench_in_a_pipe_without_yes_nothing_is_deleted() {
    let conn = connect();
    let g = GuestSpec::new("keep me ü").define(&conn);
    let out = hv(
        HV_RM,
        &["--remove-storage", "--force"],
        &format!("{}\n", g.name),
    );
    out.assert_exit(2)
        .assert_stderr_contains("--yes")
        .assert_stdout_empty();
    assert!(defined(&g.uuid) && g.disk.exists());

    let dry = hv(
        HV_RM,
        &["--remove-storage", "--dry-run"],
        &format!("{}\n", g.name),
    );
    assert_fields(
        &dry.records()[0],
        json!({"removed_storage": [g.disk.to_str().unwrap()], "dry_run": true}),
    );
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
    out.assert_exit(1);
    let by = |u: &str| out.record("uuid", u);
    assert_fields(&by(&up.uuid), json!({"error": {"code": "invalid_state"}}));
    assert!(defined(&up.uuid), "the running VM is untouched");
    assert_fields(
        &by(&down.uuid),
        json!({"removed_storage": [down.disk.to_str().unwrap()]}),
    );
    assert!(!defined(&down.uuid) && !down.disk.exists());

    let forced = hv(
        HV_RM,
        &["--yes", "--force", "--remove-storage", &up.uuid],
        "",
    );
    assert_fields(&forced.assert_ok().records()[0], json!({"stopped": true}));
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
    let r = &out.assert_ok().records()[0];
    assert_fields(r, json!({"removed_storage": []}));
    let kept = &r["kept_storage"][0];
    assert_fields(kept, json!({"path": base.disk.to_str().unwrap()}));
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
    // script(1) puts the terminal, stderr included, on its stdout.
    Run::new("script -qec hv-rm (answered y)", ask("y\n")).assert_ok();
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
    assert_fields(
        &out.assert_ok().records()[0],
        json!({"ok": true, "dry_run": true}),
    );
    // The error names the flag and the accepted forms.
    hv(HV_RM, &args("5x"), "")
        .assert_exit(2)
        .assert_stderr_contains("--timeout")
        .assert_stderr_contains("90s, 5m, 1h30m, 2d")
        .assert_stdout_empty();
}

/// A VM whose files cannot all be deleted is a failure that still says
/// what was removed: the user must not think nothing happened.
#[test]
fn bench_a_partial_removal_says_what_it_removed() {
    let conn = connect();
    let g = GuestSpec::new("rm partial").define(&conn);
    let dir = hv_testbench::scratch("rm-partial");
    let ro = hv_testbench::Tmpfs::mount(&dir.join("ro"), 16);
    let stuck = ro.dir.join("data.qcow2");
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&stuck)
        .arg("1M")
        .status()
        .unwrap();
    assert!(st.success());
    let disk = format!(
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{}'/><target dev='vdb' bus='virtio'/></disk>",
        stuck.display()
    );
    g.domain
        .attach_device_flags(&disk, virt::sys::VIR_DOMAIN_AFFECT_CONFIG)
        .unwrap();
    // A read-only filesystem: the file cannot be deleted.
    let st = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&ro.dir)
        .status()
        .unwrap();
    assert!(st.success());

    let out = hv(HV_RM, &["--yes", "--remove-storage", &g.name], "");
    out.assert_exit(1);
    assert_fields(
        &out.records()[0],
        json!({
            "ok": false,
            "removed_storage": [g.disk.to_str().unwrap()],
            "error": {"code": "io_error"},
        }),
    );
    assert!(!defined(&g.uuid) && !g.disk.exists() && stuck.exists());
}
