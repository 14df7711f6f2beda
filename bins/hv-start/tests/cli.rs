//! hv-start on real guests.

use hv_testbench::{connect, hv, records, GuestSpec};

const HV_START: &str = env!("CARGO_BIN_EXE_hv-start");

fn err(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bench_starts_resumes_and_leaves_running_ones_alone() {
    let conn = connect();
    let off = GuestSpec::new("start ü 1").define(&conn);
    let paused = GuestSpec::new("start paused").define(&conn);
    let running = GuestSpec::new("start running").define(&conn);
    running.start_ready();
    let first = records(&hv(HV_START, &["--paused", "--wait", &paused.name], ""));
    assert_eq!(
        (first[0]["state"].as_str(), first[0]["changed"].as_bool()),
        (Some("paused"), Some(true))
    );

    let out = hv(
        HV_START,
        &["--wait", "-j", "3"],
        &format!("{}\n{}\n{}\n", off.name, paused.uuid, running.name),
    );
    assert!(
        out.status.success(),
        "{}{}",
        err(&out),
        String::from_utf8_lossy(&out.stdout)
    );
    let recs = records(&out);
    let by = |g: &hv_testbench::Guest| {
        recs.iter()
            .find(|r| r["uuid"] == g.uuid.as_str())
            .unwrap()
            .clone()
    };
    let started = by(&off);
    assert_eq!(
        (
            started["action"].as_str(),
            started["changed"].as_bool(),
            started["state"].as_str()
        ),
        (Some("start"), Some(true), Some("running"))
    );
    assert_eq!(started["state_reason"], "booted");
    assert!(started["elapsed_ms"].is_u64());
    assert_eq!(by(&paused)["state_reason"], "unpaused");
    assert_eq!(
        (
            by(&running)["changed"].as_bool(),
            by(&running)["ok"].as_bool()
        ),
        (Some(false), Some(true))
    );
    assert_eq!(off.virsh_domstate(), "running (booted)");
    off.wait_ready();
}

#[test]
fn bench_wait_agent_times_out_with_the_fix_when_there_is_no_agent() {
    let conn = connect();
    let guest = GuestSpec::new("no agent").define(&conn);
    let out = hv(
        HV_START,
        &["--wait=agent", "--timeout", "3", &guest.name],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let r = &records(&out)[0];
    assert_eq!(r["error"]["code"], "timeout");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("org.qemu.guest_agent.0"),
        "{r}"
    );
    assert_eq!(
        guest.virsh_domstate(),
        "running (booted)",
        "it is still started"
    );
}

#[test]
fn dry_run_and_errors_on_the_test_driver() {
    // The test driver's one domain is running: nothing to do, but a fine record.
    let out = hv(HV_START, &["-c", "test:///default", "test", "ghost"], "");
    assert_eq!(out.status.code(), Some(1));
    let recs = records(&out);
    let test = recs.iter().find(|r| r["name"] == "test").unwrap();
    assert_eq!(
        (test["ok"].as_bool(), test["changed"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(
        recs.iter().find(|r| r["name"] == "ghost").unwrap()["error"]["code"],
        "not_found"
    );
    let none = std::process::Command::new(HV_START)
        .args(["-c", "test:///default"])
        .stdin(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(
        none.status.success() && none.stdout.is_empty(),
        "an empty pipe starts nothing"
    );
    let unnamed = hv(HV_START, &["-c", "test:///default"], "");
    assert_eq!(
        unnamed.status.code(),
        Some(2),
        "no VM named, no pipe: a usage error"
    );
}

#[test]
fn bench_paused_wait_on_a_running_vm_does_not_wait_for_a_pause() {
    let conn = connect();
    let g = GuestSpec::new("start paused running").define(&conn);
    g.start_ready();
    let out = hv(
        HV_START,
        &["--paused", "--wait", "--timeout", "20", &g.name],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    let r = &records(&out)[0];
    assert_eq!(
        (r["changed"].as_bool(), r["state"].as_str()),
        (Some(false), Some("running")),
        "{r}"
    );
    let out = hv(HV_START, &["--paused", "--wait=agent", &g.name], "");
    assert_eq!(
        out.status.code(),
        Some(2),
        "a paused guest's agent cannot answer"
    );
}
