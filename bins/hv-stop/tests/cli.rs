//! hv-stop on real guests: one that powers off on ACPI, one that ignores it.

use hv_testbench::{connect, hv, records, GuestSpec};
use std::time::{Duration, Instant};

const HV_STOP: &str = env!("CARGO_BIN_EXE_hv-stop");

fn err(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bench_acpi_guest_stops_gracefully_and_a_deaf_one_is_forced_after_the_timeout() {
    let conn = connect();
    let polite = GuestSpec::new("polite ü").define(&conn);
    let deaf = GuestSpec::new("deaf guest").ignore_acpi().define(&conn);
    polite.start_ready();
    deaf.start_ready();
    let began = Instant::now();
    let out = hv(
        HV_STOP,
        &["--timeout", "6", "-j", "2", &polite.name, &deaf.uuid],
        "",
    );
    let wall = began.elapsed();
    assert!(out.status.success(), "{}", err(&out));
    let recs = records(&out);
    let of = |uuid: &str| recs.iter().find(|r| r["uuid"] == uuid).unwrap().clone();
    let p = of(&polite.uuid);
    assert_eq!(
        (p["action"].as_str(), p["ok"].as_bool(), p["how"].as_str()),
        (Some("stop"), Some(true), Some("graceful"))
    );
    assert_eq!(p["state"], "shutoff");
    assert_eq!(polite.virsh_domstate(), "shut off (shutdown)");
    assert!(p["elapsed_ms"].as_u64().unwrap() < 6000);
    let d = of(&deaf.uuid);
    assert_eq!(d["how"], "forced");
    assert_eq!(deaf.virsh_domstate(), "shut off (destroyed)");
    assert!(
        d["elapsed_ms"].as_u64().unwrap() >= 6000,
        "forced only after the timeout: {d}"
    );
    assert!(
        wall < Duration::from_secs(11),
        "timers run side by side: {wall:?}"
    );
    assert!(polite
        .serial_log()
        .contains("acpi power button, powering off"));
}

#[test]
fn bench_each_vm_has_its_own_timer() {
    let conn = connect();
    let a = GuestSpec::new("timer a").ignore_acpi().define(&conn);
    let b = GuestSpec::new("timer b").ignore_acpi().define(&conn);
    a.start_ready();
    b.start_ready();
    let began = Instant::now();
    let out = hv(
        HV_STOP,
        &["--timeout", "4", "-j", "2"],
        &format!("{}\n{}\n", a.name, b.name),
    );
    assert!(out.status.success(), "{}", err(&out));
    assert!(
        began.elapsed() < Duration::from_secs(7),
        "about the longest item, not the sum (8 s): {:?}",
        began.elapsed()
    );
    assert!(records(&out).iter().all(|r| r["how"] == "forced"));
}

#[test]
fn bench_no_force_leaves_a_deaf_guest_running_and_fails_it() {
    let conn = connect();
    let deaf = GuestSpec::new("no force").ignore_acpi().define(&conn);
    deaf.start_ready();
    let out = hv(HV_STOP, &["--timeout", "2", "--no-force", &deaf.name], "");
    assert_eq!(out.status.code(), Some(1));
    let r = &records(&out)[0];
    assert_eq!(
        (r["ok"].as_bool(), r["error"]["code"].as_str()),
        (Some(false), Some("timeout"))
    );
    assert!(r["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--no-force"));
    assert_eq!(deaf.virsh_domstate(), "running (booted)");
}

#[test]
fn bench_force_already_off_pause_and_a_missing_vm() {
    let conn = connect();
    let on = GuestSpec::new("force me").define(&conn);
    let off = GuestSpec::new("already off").define(&conn);
    let pausable = GuestSpec::new("pause me").define(&conn);
    on.start_ready();
    pausable.start_ready();
    let input = format!("{}\nno such vm\n{}\n", on.name, off.name);
    let out = hv(HV_STOP, &["--force"], &input);
    assert_eq!(
        out.status.code(),
        Some(1),
        "one missing VM fails the run: {}",
        err(&out)
    );
    let recs = records(&out);
    assert_eq!(recs.len(), 3);
    let by = |n: &str| recs.iter().find(|r| r["name"] == n).unwrap().clone();
    assert_eq!(by(&on.name)["how"], "forced");
    assert!(
        by(&on.name)["elapsed_ms"].as_u64().unwrap() < 5000,
        "--force does not wait"
    );
    assert_eq!(
        (
            by(&off.name)["how"].as_str(),
            by(&off.name)["changed"].as_bool()
        ),
        (Some("already_off"), Some(false))
    );
    assert_eq!(by("no such vm")["error"]["code"], "not_found");

    let paused = records(&hv(HV_STOP, &["--pause", &pausable.name], ""));
    assert_eq!(
        (paused[0]["action"].as_str(), paused[0]["state"].as_str()),
        (Some("pause"), Some("paused"))
    );
    assert_eq!(pausable.virsh_domstate(), "paused (user)");
    let dry = records(&hv(HV_STOP, &["--dry-run", &pausable.name], ""));
    assert_eq!(
        (dry[0]["how"].as_str(), dry[0]["dry_run"].as_bool()),
        (Some("forced"), Some(true))
    );
    assert_eq!(
        pausable.virsh_domstate(),
        "paused (user)",
        "a dry run changes nothing"
    );
}

#[test]
fn bench_ctrl_c_lets_the_running_stop_finish_and_cancels_the_rest() {
    let conn = connect();
    let guests: Vec<_> = ["intr a", "intr b", "intr c"]
        .iter()
        .map(|n| GuestSpec::new(n).ignore_acpi().define(&conn))
        .collect();
    guests[0].start_ready();
    guests[1].start_ready();
    let input: String = guests.iter().map(|g| format!("{}\n", g.name)).collect();
    let child = std::process::Command::new(HV_STOP)
        .args(["-c", hv_testbench::URI, "--timeout", "3", "-j", "1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .as_ref()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    let recs = records(&out);
    assert_eq!(recs.len(), 3, "one record per VM, even cancelled ones");
    let by = |g: &hv_testbench::Guest| {
        recs.iter()
            .find(|r| r["name"] == g.name.as_str())
            .unwrap()
            .clone()
    };
    assert_eq!(by(&guests[0])["how"], "forced", "the running stop finished");
    assert_eq!(by(&guests[1])["error"]["code"], "cancelled");
    assert_eq!(by(&guests[2])["error"]["code"], "cancelled");
    assert_eq!(
        guests[1].virsh_domstate(),
        "running (booted)",
        "a cancelled VM is not touched"
    );
}

#[test]
fn bench_a_transient_vm_is_stopped_though_it_is_gone_afterwards() {
    let conn = connect();
    let graceful = GuestSpec::new("stop transient acpi").define(&conn);
    let forced = GuestSpec::new("stop transient force").define(&conn);
    for g in [&graceful, &forced] {
        g.start_ready();
        // Running and no longer defined: libvirt forgets it once it is off.
        g.domain.undefine().unwrap();
    }
    for (g, how, flag) in [
        (&graceful, "graceful", "--timeout=60"),
        (&forced, "forced", "--force"),
    ] {
        let out = hv(HV_STOP, &[flag, &g.uuid], "");
        assert_eq!(out.status.code(), Some(0), "{}", err(&out));
        let r = &records(&out)[0];
        assert_eq!(
            (r["how"].as_str(), r["state"].as_str()),
            (Some(how), Some("shutoff")),
            "{r}"
        );
    }
    assert!(
        conn.lookup_domain_by_uuid_string(&forced.uuid).is_err(),
        "gone"
    );
}
