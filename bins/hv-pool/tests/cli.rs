//! hv-pool on the bench: a directory pool defined from a spec (made,
//! started, autostarted, listed), its refusals, and a dry run that makes
//! nothing.

// These tests need the bench (tests/run.sh); `cargo test` without
// `--features bench` still builds the command for the transcripts.
#![cfg(feature = "bench")]

use hv_testbench::{connect, hv, run_prefix, scratch};
use serde_json::json;

const HV_POOL: &str = env!("CARGO_BIN_EXE_hv-pool");

struct Gone(String);
impl Drop for Gone {
    fn drop(&mut self) {
        if let Ok(p) = connect().lookup_storage_pool_by_name(&self.0) {
            let _ = p.destroy();
            let _ = p.undefine();
        }
    }
}

#[test]
fn a_directory_pool_is_made_from_a_spec_and_listed() {
    let dir = scratch("pool-define");
    let name = format!("{}pool", run_prefix());
    let _gone = Gone(name.clone());
    let path = dir.join("images here");
    let spec = json!({"name": name, "path": path});

    let dry = hv(HV_POOL, &["define", "--dry-run"], &format!("{spec}\n"));
    let rec = dry.assert_ok().one_record();
    assert!(rec["xml"].as_str().unwrap().contains("<path>"), "{rec:#}");
    assert!(
        connect().lookup_storage_pool_by_name(&name).is_err(),
        "a dry run makes nothing"
    );
    assert!(!path.exists());

    let made = hv(HV_POOL, &["define"], &format!("{spec}\n"));
    let rec = made.assert_ok().one_record();
    assert_eq!(
        (rec["action"].as_str(), rec["changed"].as_bool()),
        (Some("define"), Some(true))
    );
    assert!(path.is_dir(), "its directory was made");
    let listed = hv(HV_POOL, &["ls", &name, "--format", "jsonl"], "")
        .assert_ok()
        .one_record();
    assert_eq!(
        (
            listed["type"].as_str(),
            listed["active"].as_bool(),
            listed["autostart"].as_bool()
        ),
        (Some("dir"), Some(true), Some(true)),
        "{listed:#}"
    );
    assert_eq!(listed["path"], path.display().to_string());
    assert!(listed["capacity_bytes"].as_u64().unwrap() > 0);
    // hv-define can put disks there at once (its pool check passes).
    hv(
        &hv_testbench::bin("hv-preflight"),
        &[
            "--name",
            "x",
            "--disk",
            "1M",
            "--pool",
            &name,
            "--virt-type",
            "qemu",
            "--format",
            "jsonl",
        ],
        "",
    )
    .records()
    .iter()
    .filter(|c| c["check"] == "plan.storage")
    .for_each(|c| assert_eq!(c["status"], "pass", "{c}"));

    // Never replaced; a relative path and an unknown field are refused.
    hv(HV_POOL, &["define"], &format!("{spec}\n")).assert_failed("invalid_state");
    let bad = hv(
        HV_POOL,
        &["define"],
        "{\"name\": \"x\", \"path\": \"rel/dir\"}\n",
    );
    bad.assert_exit(2).assert_stderr_contains("relative");
    let unknown = hv(
        HV_POOL,
        &["define"],
        "{\"name\": \"x\", \"path\": \"/tmp/x\", \"size\": 3}\n",
    );
    unknown.assert_exit(2).assert_stderr_contains("size");
    hv(HV_POOL, &["ls", &format!("{}nope", run_prefix())], "").assert_exit(1);
    let _ = std::fs::remove_dir_all(dir);
}
