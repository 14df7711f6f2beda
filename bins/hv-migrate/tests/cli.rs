//! hv-migrate's refusals that need no second host: flags that would leave
//! a VM defined nowhere or ask libvirt for what it cannot do are usage
//! errors before anything is opened. (The moves themselves are tested on
//! the bench's extra hosts, tests/tests/hosts.rs.)

// These tests need the bench (tests/run.sh); `cargo test` without
// `--features bench` still builds the command for the transcripts.
#![cfg(feature = "bench")]

use hv_testbench::{hv, Run};

fn migrate(args: &[&str]) -> Run {
    hv(env!("CARGO_BIN_EXE_hv-migrate"), args, "")
}

#[test]
fn transient_without_keep_source_is_refused() {
    let out = migrate(&[
        "-c",
        "test:///default",
        "--to",
        "test:///default",
        "--transient",
        "test",
    ]);
    out.assert_exit(2).assert_stderr_contains(
        "--transient without --keep-source would leave the VM defined nowhere",
    );
}

#[test]
fn copy_storage_needs_a_live_move() {
    let out = migrate(&[
        "-c",
        "test:///default",
        "--to",
        "test:///default",
        "--offline",
        "--copy-storage",
        "test",
    ]);
    out.assert_exit(2)
        .assert_stderr_contains("--copy-storage needs a running VM");
}

#[test]
fn the_destination_must_be_named_and_known() {
    let out = migrate(&["-c", "test:///default", "test"]);
    out.assert_exit(2).assert_stderr_contains("--to <HOST>");
    let out = migrate(&["-c", "test:///default", "--to", "nowhere", "test"]);
    out.assert_exit(2)
        .assert_stderr_contains("--to \"nowhere\": it is not a URI, and no hosts file");
}

#[test]
fn a_vm_already_on_the_destination_is_left_alone() {
    // test:///default on both sides is one libvirt host (one host UUID).
    let out = migrate(&["-c", "test:///default", "--to", "test:///default", "test"]);
    let rec = out.assert_ok().one_record();
    assert_eq!(rec["changed"], false, "{out:?}");
    assert_eq!(rec["host"], "test:///default", "{out:?}");
}
