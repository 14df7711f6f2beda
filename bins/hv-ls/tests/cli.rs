//! hv-ls end to end: the real binary, against libvirt's test driver for the
//! record format and against the bench daemon with real guests for the rest.

// These tests need the bench (tests/run.sh); `cargo test` without
// `--features bench` still builds the command for the transcripts.
#![cfg(feature = "bench")]

use hv_testbench::{assert_fields, connect, hv, run_prefix, GuestSpec, Run};
use serde_json::{json, Value};
use std::process::{Command, Stdio};

const HV_LS: &str = env!("CARGO_BIN_EXE_hv-ls");

fn ls(args: &[&str], input: &str) -> Run {
    hv(HV_LS, args, input)
}

fn virsh(args: &[&str]) {
    let out = Command::new("virsh")
        .arg("-c")
        .arg(hv_testbench::URI)
        .args(args)
        .output()
        .unwrap();
    Run::new(format!("virsh {args:?}"), out).assert_ok();
}

#[test]
fn test_driver_domain_has_every_field() {
    let r = &ls(&["-c", "test:///default"], "").assert_ok().one_record();
    assert_fields(
        r,
        json!({
            "name": "test",
            "uuid": "6695eb01-f6a4-8304-79aa-97f2502e193f",
            // -c names the host, so the record says which one (docs/records.md, Hosts)
            "host": "test:///default",
            "domain_id": 1,
            "state": "running",
            "persistent": true,
            "autostart": false,
            "vcpus": 2,
            "memory_bytes": 2u64 << 30,
            "max_memory_bytes": 8u64 << 30,
            "snapshot_count": 0,
            "checkpoint_count": 0,
            "tags": [],
        }),
    );
    assert!(r["state_reason"].is_string());
    assert!(r["cpu_time_ns"].is_u64());
    assert_fields(
        &r["disks"][0],
        json!({"target": "vda", "source": "/guest/diskimage1"}),
    );
    assert_fields(
        &r["interfaces"][0],
        json!({"mac": "aa:bb:cc:dd:ee:ff", "source": "default"}),
    );
    let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "name",
            "uuid",
            "host",
            "domain_id",
            "state",
            "state_reason",
            "persistent",
            "autostart",
            "vcpus",
            "memory_bytes",
            "max_memory_bytes",
            "cpu_time_ns",
            "disks",
            "interfaces",
            "snapshot_count",
            "checkpoint_count",
            "tags"
        ]
    );
}

#[test]
fn malformed_line_is_named_and_the_rest_still_answer() {
    let out = ls(&["-c", "test:///default"], "x\n{oops\ntest\n");
    // Malformed input exits 2, with one line per problem.
    out.assert_exit(2).assert_stderr_contains("stdin line 2");
    assert_eq!(out.stderr().lines().count(), 1, "{out:?}");
    let recs = out.records();
    assert_fields(
        &recs[0],
        json!({"name": "x", "ok": false, "error": {"code": "not_found"}}),
    );
    assert_fields(&recs[1], json!({"name": "test", "state": "running"}));
}

#[test]
fn failed_upstream_records_pass_through_untouched() {
    let failed = r#"{"name":"gone","uuid":null,"action":"start","ok":false,"error":{"code":"timeout","message":"m"}}"#;
    let recs = ls(&["-c", "test:///default"], &format!("{failed}\n")).records();
    assert_eq!(recs, vec![serde_json::from_str::<Value>(failed).unwrap()]);
}

#[test]
fn csv_parses_with_the_same_rows_as_jsonl() {
    let jsonl = ls(&["-c", "test:///default"], "").records();
    let out = ls(&["-c", "test:///default", "--format", "csv"], "");
    out.assert_ok();
    let mut reader = csv::Reader::from_reader(&out.stdout[..]);
    let headers = reader.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), jsonl.len());
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    assert_eq!(&rows[0][col("name")], "test");
    assert_eq!(&rows[0][col("memory_bytes")], "2147483648");
    let disks: Value = serde_json::from_str(&rows[0][col("disks")]).unwrap();
    assert_eq!(disks, jsonl[0]["disks"]);
}

#[test]
fn table_and_json_formats() {
    let out = ls(&["-c", "test:///default", "--format", "table"], "");
    let text = String::from_utf8(out.output.stdout).unwrap();
    assert!(
        text.starts_with("NAME  HOST             STATE    ID  VCPUS  MEMORY"),
        "{text}"
    );
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .starts_with("test  test:///default  running  1   2      2 GiB"),
        "{text}"
    );
    let out = ls(&["-c", "test:///default", "--format", "json"], "");
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 1);
}

#[test]
fn unreachable_daemon_exits_3_with_one_line_naming_uri_and_fix() {
    let out = ls(
        &["-c", "qemu+unix:///system?socket=/nonexistent/libvirt-sock"],
        "",
    );
    out.assert_exit(3);
    assert_eq!(out.stderr().lines().count(), 1, "{out:?}");
    out.assert_stderr_contains("/nonexistent/libvirt-sock")
        .assert_stderr_contains("libvirtd")
        .assert_stdout_empty();
}

#[test]
fn bad_glob_is_a_usage_error() {
    ls(&["-c", "test:///default", "--name", "[oops"], "")
        .assert_exit(2)
        .assert_stderr_contains("--name '[oops'");
}

#[test]
fn closed_stdout_is_not_an_error() {
    let mut child = Command::new(HV_LS)
        .args(["-c", "test:///default", "--format", "jsonl"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = Run::new(
        "hv-ls -c test:///default --format jsonl (stdout closed)",
        child.wait_with_output().unwrap(),
    );
    out.assert_ok();
    assert!(out.stderr.is_empty(), "{out:?}");
}

#[test]
fn bench_running_guest_shows_its_state_and_disk() {
    let conn = connect();
    let guest = GuestSpec::new("web ü 1").writer().define(&conn);
    guest.start_ready();
    // A running qcow2 disk's allocation is what the guest has written so far.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut out = ls(&[&guest.name], "");
    while out.records()[0]["disks"][0]["allocation_bytes"] == 0
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(200));
        out = ls(&[&guest.name], "");
    }
    let r = &out.assert_ok().records()[0];
    assert_eq!(guest.virsh_domstate(), "running (booted)");
    assert_fields(
        r,
        json!({
            "name": guest.name,
            "uuid": guest.uuid,
            "state": "running",
            "state_reason": "booted",
            "memory_bytes": 128u64 << 20,
            "vcpus": 1,
        }),
    );
    assert!(r["domain_id"].as_u64().unwrap() > 0);
    assert!(
        r["cpu_time_ns"].as_u64().unwrap() > 0,
        "a booted guest has used CPU time"
    );
    let disk = &r["disks"][0];
    assert_fields(
        disk,
        json!({
            "target": "vda",
            "source": guest.disk.to_str().unwrap(),
            "format": "qcow2",
            "capacity_bytes": 64u64 << 20,
        }),
    );
    assert!(disk["allocation_bytes"].as_u64().unwrap() > 0);

    // The UUID names it too, and a killed guest shows how it stopped.
    guest.domain.destroy().unwrap();
    let r = &ls(&[&guest.uuid], "").records()[0];
    assert_fields(
        r,
        json!({"state": "shutoff", "state_reason": "destroyed", "domain_id": null}),
    );
    assert_eq!(
        r["cpu_time_ns"], 0,
        "a stopped VM uses no CPU: not the last run's time libvirt remembers"
    );
    assert_eq!(
        r["disks"][0]["capacity_bytes"],
        64u64 << 20,
        "sizes are known for stopped VMs too"
    );
}

#[test]
fn bench_filters_select_by_state_name_tag_autostart_and_pipe() {
    let conn = connect();
    let up = GuestSpec::new("filter up").define(&conn);
    let down = GuestSpec::new("filter down").autostart().define(&conn);
    up.start_ready();
    virsh(&[
        "metadata",
        &up.uuid,
        "--live",
        "--config",
        "--uri",
        "https://hv.invalid/xmlns/tags/1",
        "--key",
        "hv",
        "--set",
        "<tags><tag>fïlter-tag</tag><tag>other</tag></tags>",
    ]);
    let mine = format!("{}filter*", run_prefix());
    let names = |args: &[&str], input: &str| -> Vec<String> {
        let mut all = vec!["--name", mine.as_str()];
        all.extend_from_slice(args);
        ls(&all, input)
            .assert_ok()
            .records()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names(&[], ""),
        vec![down.name.clone(), up.name.clone()],
        "sorted by name"
    );
    assert_eq!(names(&["--state", "running"], ""), vec![up.name.clone()]);
    assert_eq!(names(&["--state", "shutoff"], ""), vec![down.name.clone()]);
    assert_eq!(
        names(&["--state", "shutoff", "--state", "running"], "").len(),
        2
    );
    assert_eq!(names(&["--tag", "fïlter-tag"], ""), vec![up.name.clone()]);
    assert_eq!(names(&["--autostart"], ""), vec![down.name.clone()]);
    assert_eq!(names(&["--no-autostart"], ""), vec![up.name.clone()]);
    assert!(names(&["--transient"], "").is_empty());
    assert_eq!(names(&["--persistent"], "").len(), 2);

    // Records piped back in are re-read: the listing of both, filtered again.
    let piped = String::from_utf8(ls(&["--name", &mine], "").output.stdout).unwrap();
    assert_eq!(
        names(&["--state", "running"], &piped),
        vec![up.name.clone()]
    );
}

#[test]
fn bench_counts_snapshots_and_checkpoints() {
    let conn = connect();
    let guest = GuestSpec::new("counts").define(&conn);
    virsh(&["snapshot-create-as", &guest.uuid, "s1"]);
    virsh(&["snapshot-create-as", &guest.uuid, "s2"]);
    guest.start_ready();
    virsh(&["checkpoint-create-as", &guest.uuid, "c1"]);
    assert_fields(
        &ls(&[&guest.name], "").records()[0],
        json!({"snapshot_count": 2, "checkpoint_count": 1}),
    );
}

#[test]
fn bench_unprivileged_user_lists_over_a_read_only_connection() {
    let conn = connect();
    let guest = GuestSpec::new("readonly").define(&conn);
    let out = hv_testbench::hv_as_nobody(HV_LS, &["-c", hv_testbench::URI, "--format", "jsonl"]);
    let mine = out.assert_ok().record("uuid", guest.uuid.as_str());
    assert_fields(&mine, json!({"state": "shutoff"}));
    assert_fields(
        &mine["disks"][0],
        json!({"source": guest.disk.to_str().unwrap()}),
    );
}

#[test]
fn an_open_socket_on_stdin_is_not_waited_for() {
    // `ssh host hv-ls` gives hv-ls a socket as stdin that stays open.
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut child = Command::new(HV_LS)
        .args(["-c", "test:///default", "--format", "jsonl"])
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "hv-ls waited on a socket stdin"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = Run::new(
        "hv-ls -c test:///default --format jsonl < (open socket)",
        child.wait_with_output().unwrap(),
    );
    drop(ours);
    // With nothing named, every domain is listed.
    assert_fields(&out.records()[0], json!({"name": "test"}));
}

#[test]
fn an_empty_pipe_names_no_vm() {
    // `hv-ls --tag none | hv-ls --state running | hv-stop` must not stop
    // every running VM: the empty pipe selects nothing.
    let piped = Command::new(HV_LS)
        .args(["-c", "test:///default", "--format", "jsonl"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Run::new(
        "hv-ls -c test:///default --format jsonl < (empty pipe)",
        piped.wait_with_output().unwrap(),
    )
    .assert_ok()
    .assert_stdout_empty()
    .assert_stderr_contains("empty pipe")
    .assert_stderr_contains("</dev/null");
    // Without a pipe (/dev/null, as systemd gives), every domain is listed.
    assert_fields(
        &ls(&["-c", "test:///default"], "").records()[0],
        json!({"name": "test"}),
    );
}

/// `--fields` prints only the fields asked, in their order, with the
/// values full records have; the ones that need no XML come from bulk
/// calls (a guest's state and CPU time among them), the others from the
/// full records; an unknown field is a usage error naming the fields.
#[test]
fn bench_fields_project_records_and_agree_with_full_ones() {
    let conn = connect();
    let on = GuestSpec::new("fields-on").define(&conn);
    let off = GuestSpec::new("fields-off").define(&conn);
    on.start_ready();
    let glob = format!("{}fields-*", run_prefix());
    let full = ls(&["--name", &glob, "--format", "jsonl"], "")
        .assert_ok()
        .records();
    let cheap = ls(
        &[
            "--name",
            &glob,
            "--fields",
            "state,name,uuid,domain_id,persistent,autostart",
            "--format",
            "jsonl",
        ],
        "",
    )
    .assert_ok()
    .records();
    assert_eq!(cheap.len(), 2);
    for r in &cheap {
        assert_eq!(
            hv_testbench::keys(r),
            [
                "state",
                "name",
                "uuid",
                "domain_id",
                "persistent",
                "autostart"
            ]
        );
        let f = full.iter().find(|f| f["uuid"] == r["uuid"]).unwrap();
        for k in ["state", "name", "domain_id", "persistent", "autostart"] {
            assert_eq!(r[k], f[k], "{k}: {r} vs {f}");
        }
    }
    // Filters work on the bulk path too.
    let running = ls(
        &[
            "--name",
            &glob,
            "--state",
            "running",
            "--fields",
            "name,cpu_time_ns",
        ],
        "",
    )
    .assert_ok()
    .records();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0]["name"], on.name.as_str());
    assert!(running[0]["cpu_time_ns"].as_u64().unwrap() > 0);
    let stopped = ls(
        &[
            "--name",
            &glob,
            "--state",
            "shutoff",
            "--fields",
            "name,cpu_time_ns",
        ],
        "",
    )
    .assert_ok()
    .one_record();
    assert_eq!(
        (stopped["name"].as_str(), stopped["cpu_time_ns"].as_u64()),
        (Some(off.name.as_str()), Some(0))
    );
    // A field that needs the XML comes from the full record.
    let disks = ls(&[&off.name, "--fields", "name,disks"], "")
        .assert_ok()
        .one_record();
    assert_eq!(hv_testbench::keys(&disks), ["name", "disks"]);
    assert_eq!(disks["disks"][0]["target"], "vda");
    ls(&["--fields", "name,size"], "")
        .assert_exit(2)
        .assert_stderr_contains("the fields are name, uuid");
}
