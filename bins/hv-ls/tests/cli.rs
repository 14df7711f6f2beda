//! hv-ls end to end: the real binary, against libvirt's test driver for the
//! record format and against the bench daemon with real guests for the rest.

use hv_testbench::{connect, hv, records, run_prefix, GuestSpec};
use serde_json::{json, Value};
use std::process::{Command, Stdio};

const HV_LS: &str = env!("CARGO_BIN_EXE_hv-ls");

fn ls(args: &[&str], input: &str) -> std::process::Output {
    hv(HV_LS, args, input)
}

fn virsh(args: &[&str]) {
    let out = Command::new("virsh")
        .arg("-c")
        .arg(hv_testbench::URI)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "virsh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn test_driver_domain_has_every_field() {
    let out = ls(&["-c", "test:///default"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let recs = records(&out);
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r["name"], "test");
    assert_eq!(r["uuid"], "6695eb01-f6a4-8304-79aa-97f2502e193f");
    assert_eq!(r["domain_id"], 1);
    assert_eq!(r["state"], "running");
    assert!(r["state_reason"].is_string());
    assert_eq!(r["persistent"], true);
    assert_eq!(r["autostart"], false);
    assert_eq!(r["vcpus"], 2);
    assert_eq!(r["memory_bytes"], 2u64 << 30);
    assert_eq!(r["max_memory_bytes"], 8u64 << 30);
    assert!(r["cpu_time_ns"].is_u64());
    assert_eq!(r["disks"][0]["target"], "vda");
    assert_eq!(r["disks"][0]["source"], "/guest/diskimage1");
    assert_eq!(r["interfaces"][0]["mac"], "aa:bb:cc:dd:ee:ff");
    assert_eq!(r["interfaces"][0]["source"], "default");
    assert_eq!(r["snapshot_count"], 0);
    assert_eq!(r["checkpoint_count"], 0);
    assert_eq!(r["tags"], json!([]));
    let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "name",
            "uuid",
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
    assert_eq!(out.status.code(), Some(2), "malformed input exits 2");
    let err = stderr(&out);
    assert!(err.contains("stdin line 2"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line per problem: {err}");
    let recs = records(&out);
    assert_eq!(recs[0]["name"], "x");
    assert_eq!(recs[0]["ok"], false);
    assert_eq!(recs[0]["error"]["code"], "not_found");
    assert_eq!(recs[1]["name"], "test");
    assert_eq!(recs[1]["state"], "running");
}

#[test]
fn failed_upstream_records_pass_through_untouched() {
    let failed = r#"{"name":"gone","uuid":null,"action":"start","ok":false,"error":{"code":"timeout","message":"m"}}"#;
    let out = ls(&["-c", "test:///default"], &format!("{failed}\n"));
    let recs = records(&out);
    assert_eq!(recs, vec![serde_json::from_str::<Value>(failed).unwrap()]);
}

#[test]
fn csv_parses_with_the_same_rows_as_jsonl() {
    let jsonl = records(&ls(&["-c", "test:///default"], ""));
    let out = ls(&["-c", "test:///default", "--format", "csv"], "");
    assert!(out.status.success());
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
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("NAME  STATE    ID  VCPUS  MEMORY"),
        "{text}"
    );
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .starts_with("test  running  1   2      2 GiB"),
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
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("/nonexistent/libvirt-sock") && err.contains("libvirtd"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_glob_is_a_usage_error() {
    let out = ls(&["-c", "test:///default", "--name", "[oops"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--name '[oops'"));
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
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
}

#[test]
fn bench_running_guest_shows_its_state_and_disk() {
    let conn = connect();
    let guest = GuestSpec::new("web ü 1").writer().define(&conn);
    guest.start_ready();
    // A running qcow2 disk's allocation is what the guest has written so far.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut out = ls(&[&guest.name], "");
    while records(&out)[0]["disks"][0]["allocation_bytes"] == 0
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(200));
        out = ls(&[&guest.name], "");
    }
    assert!(out.status.success(), "{}", stderr(&out));
    let r = &records(&out)[0];
    assert_eq!(guest.virsh_domstate(), "running (booted)");
    assert_eq!(r["name"], guest.name.as_str());
    assert_eq!(r["uuid"], guest.uuid.as_str());
    assert_eq!(r["state"], "running");
    assert_eq!(r["state_reason"], "booted");
    assert!(r["domain_id"].as_u64().unwrap() > 0);
    assert_eq!(r["memory_bytes"], 128u64 << 20);
    assert_eq!(r["vcpus"], 1);
    assert!(
        r["cpu_time_ns"].as_u64().unwrap() > 0,
        "a booted guest has used CPU time"
    );
    let disk = &r["disks"][0];
    assert_eq!(disk["target"], "vda");
    assert_eq!(disk["source"], guest.disk.to_str().unwrap());
    assert_eq!(disk["format"], "qcow2");
    assert_eq!(disk["capacity_bytes"], 64u64 << 20);
    assert!(disk["allocation_bytes"].as_u64().unwrap() > 0);

    // The UUID names it too, and a killed guest shows how it stopped.
    guest.domain.destroy().unwrap();
    let r = &records(&ls(&[&guest.uuid], ""))[0];
    assert_eq!(r["state"], "shutoff");
    assert_eq!(r["state_reason"], "destroyed");
    assert_eq!(r["domain_id"], Value::Null);
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
        let out = ls(&all, input);
        assert!(out.status.success(), "{}", stderr(&out));
        records(&out)
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
    let both = ls(&["--name", &mine], "");
    let piped = String::from_utf8(both.stdout).unwrap();
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
    let r = &records(&ls(&[&guest.name], ""))[0];
    assert_eq!(r["snapshot_count"], 2);
    assert_eq!(r["checkpoint_count"], 1);
}

#[test]
fn bench_unprivileged_user_lists_over_a_read_only_connection() {
    let conn = connect();
    let guest = GuestSpec::new("readonly").define(&conn);
    let out = hv_testbench::hv_as_nobody(HV_LS, &["-c", hv_testbench::URI, "--format", "jsonl"]);
    assert!(out.status.success(), "as nobody: {}", stderr(&out));
    let recs = records(&out);
    let mine = recs
        .iter()
        .find(|r| r["uuid"] == guest.uuid.as_str())
        .expect("the guest is listed");
    assert_eq!(mine["state"], "shutoff");
    assert_eq!(mine["disks"][0]["source"], guest.disk.to_str().unwrap());
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
    let out = child.wait_with_output().unwrap();
    drop(ours);
    assert_eq!(
        records(&out)[0]["name"],
        "test",
        "with nothing named, every domain is listed"
    );
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
    let out = piped.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout.is_empty(),
        "listed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("empty pipe") && said.contains("</dev/null"),
        "{said}"
    );
    // Without a pipe (/dev/null, as systemd gives), every domain is listed.
    assert_eq!(
        records(&ls(&["-c", "test:///default"], ""))[0]["name"],
        "test"
    );
}
