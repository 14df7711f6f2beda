//! Starting and gracefully stopping a batch of real guests: hv-start and
//! hv-stop with `-j N` against the loop an admin writes today (`virsh start`
//! each, then `virsh shutdown` each and poll `virsh domstate` until it is
//! off). Both sides wait, untimed, for the guests to finish booting between
//! the two phases, so only starting and stopping are compared.

use crate::cmd::{ok, release_build, verdict_at_most};
use hv_testbench::{Guest, GuestSpec};
use std::process::Command;
use std::time::{Duration, Instant};

fn timed(f: impl FnOnce() -> Result<(), String>) -> Result<Duration, String> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed())
}

fn forget_logs(guests: &[Guest]) {
    for g in guests {
        let _ = std::fs::remove_file(&g.log);
    }
}

fn virsh(uri: &str, args: &[&str]) -> Command {
    let mut c = Command::new("virsh");
    c.arg("-c").arg(uri).args(args);
    c
}

const LOOP_STOP: &str = r#"uri=$0; for vm in "$@"; do
  virsh -c "$uri" shutdown "$vm" >/dev/null || exit 1
  until [ "$(virsh -c "$uri" domstate "$vm")" = "shut off" ]; do sleep 0.5; done
done"#;

pub fn run(n: usize) -> Result<(), String> {
    let uri = hv_testbench::URI;
    let release = release_build(&["hv-start", "hv-stop"])?;
    let bin = |name: &str| release.join(name);
    let conn = hv_testbench::connect();
    eprintln!("defining {n} test guests…");
    let guests: Vec<Guest> = (0..n)
        .map(|i| GuestSpec::new(&format!("lifecycle-{i:02}")).define(&conn))
        .collect();
    let names: Vec<&str> = guests.iter().map(|g| g.name.as_str()).collect();
    let jobs = n.to_string();
    let hv_start = || {
        ok(Command::new(bin("hv-start"))
            .args(["-c", uri, "-j", &jobs])
            .args(&names))
    };
    let hv_stop = || {
        ok(Command::new(bin("hv-stop"))
            .args(["-c", uri, "-j", &jobs, "--timeout", "120"])
            .args(&names))
    };
    let booted = || guests.iter().for_each(Guest::wait_ready);

    eprintln!("warm-up round…");
    forget_logs(&guests);
    hv_start()?;
    booted();
    hv_stop()?;

    eprintln!("virsh loop…");
    forget_logs(&guests);
    let loop_start = timed(|| {
        names
            .iter()
            .try_for_each(|n| ok(&mut virsh(uri, &["start", n])))
    })?;
    booted();
    let loop_stop = timed(|| {
        ok(Command::new("bash")
            .args(["-c", LOOP_STOP, uri])
            .args(&names))
    })?;

    eprintln!("hv-start / hv-stop -j {n}…");
    forget_logs(&guests);
    let hv_start_t = timed(hv_start)?;
    booted();
    let hv_stop_t = timed(hv_stop)?;
    let graceful = guests
        .iter()
        .all(|g| g.virsh_domstate() == "shut off (shutdown)");

    let s = |d: Duration| d.as_secs_f64();
    let (loop_total, hv_total) = (loop_start + loop_stop, hv_start_t + hv_stop_t);
    let ratio = s(hv_total) / s(loop_total);
    println!("lifecycle bench: {n} test guests (TCG), {uri}, one run each");
    println!(
        "  virsh loop:    start {:6.2} s   stop {:6.2} s   total {:6.2} s",
        s(loop_start),
        s(loop_stop),
        s(loop_total)
    );
    println!(
        "  hv -j {n:<3}     start {:6.2} s   stop {:6.2} s   total {:6.2} s",
        s(hv_start_t),
        s(hv_stop_t),
        s(hv_total)
    );
    println!("  all hv stops graceful: {graceful}");
    verdict_at_most("hv / loop", ratio, 1.0 / 3.0);
    Ok(())
}
