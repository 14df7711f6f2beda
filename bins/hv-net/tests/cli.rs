//! hv-net on the bench: a NAT network with DHCP and a directory pool
//! defined from specs, used by an hv-define'd guest that gets a lease,
//! which `hv-net ls` shows; the refusals and a dry run.

// These tests need the bench (tests/run.sh); `cargo test` without
// `--features bench` still builds the command for the transcripts.
#![cfg(feature = "bench")]

use hv_testbench::{bin, connect, hv, run_prefix, scratch, wait_for_line};
use serde_json::json;
use std::time::Duration;

const HV_NET: &str = env!("CARGO_BIN_EXE_hv-net");

/// Removes what the test made, in reverse: the VM, the pool, the network.
struct Made {
    vm: String,
    pool: String,
    net: String,
}

impl Drop for Made {
    fn drop(&mut self) {
        let conn = connect();
        if let Ok(d) = conn.lookup_domain_by_name(&self.vm) {
            hv_testbench::remove_domain(&d);
        }
        if let Ok(p) = conn.lookup_storage_pool_by_name(&self.pool) {
            let _ = p.destroy();
            let _ = p.undefine();
        }
        if let Ok(n) = conn.lookup_network_by_name(&self.net) {
            let _ = n.destroy();
            let _ = n.undefine();
        }
    }
}

#[test]
fn a_guest_on_a_defined_nat_network_gets_a_lease_hv_net_shows() {
    let dir = scratch("net-nat");
    let made = Made {
        vm: format!("{}net-vm", run_prefix()),
        pool: format!("{}net-pool", run_prefix()),
        net: format!("{}nat", run_prefix()),
    };
    // A private subnet of the bench's own; the guest only asks it for a lease.
    let spec = json!({"name": made.net, "type": "nat", "address": "10.233.0.1/24"});

    let dry = hv(HV_NET, &["define", "--dry-run"], &format!("{spec}\n"));
    let rec = dry.assert_ok().one_record();
    assert!(
        rec["xml"]
            .as_str()
            .unwrap()
            .contains("<forward mode='nat'/>"),
        "{rec:#}"
    );
    assert!(
        connect().lookup_network_by_name(&made.net).is_err(),
        "a dry run makes nothing"
    );

    hv(HV_NET, &["define"], &format!("{spec}\n")).assert_ok();
    let pool = json!({"name": made.pool, "path": dir.join("pool")});
    hv(&bin("hv-pool"), &["define"], &format!("{pool}\n")).assert_ok();
    let listed = hv(HV_NET, &["ls", &made.net, "--format", "jsonl"], "")
        .assert_ok()
        .one_record();
    assert_eq!(
        (
            listed["forward"].as_str(),
            listed["active"].as_bool(),
            listed["autostart"].as_bool()
        ),
        (Some("nat"), Some(true), Some(true)),
        "{listed:#}"
    );
    assert_eq!(listed["address"], "10.233.0.1/24");
    assert_eq!(
        (listed["dhcp_start"].as_str(), listed["dhcp_end"].as_str()),
        (Some("10.233.0.10"), Some("10.233.0.254"))
    );

    // A guest made on both: its disk in the pool, its NIC on the network.
    let image = hv_testbench::guest_image();
    let profile = json!({
        "name": made.vm, "type": hv_testbench::domain_type(), "memory": "128M",
        "pool": made.pool, "disk": "16M", "networks": [{"network": made.net}],
        "kernel": image.join("vmlinux"), "initrd": image.join("initramfs.img"),
        "cmdline": "console=ttyS0 panic=-1 quiet",
    });
    let defined = hv(&bin("hv-define"), &[], &format!("{profile}\n"))
        .assert_ok()
        .one_record();
    let mac = defined["interfaces"][0]["mac"].as_str().unwrap().to_owned();
    hv(&bin("hv-start"), &[&made.vm], "").assert_ok();
    let said = wait_for_line(
        &hv_testbench::serial_log(&made.vm),
        "hv-test-guest: dhcp",
        Duration::from_secs(120),
    );
    let ip = said
        .strip_prefix("hv-test-guest: dhcp ip=")
        .unwrap_or_else(|| panic!("no lease: {said}"))
        .trim()
        .to_owned();
    assert!(ip.starts_with("10.233.0."), "{ip}");
    let leases = hv(HV_NET, &["ls", &made.net, "--format", "jsonl"], "")
        .assert_ok()
        .one_record()["leases"]
        .clone();
    let lease = leases
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["mac"] == mac.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("no lease of {mac}: {leases:#}"));
    assert_eq!(lease["ip"], ip.as_str());

    // hv-health: the network runs, its range has room, its bridge is up.
    let of = |recs: &[serde_json::Value], check: &str| {
        recs.iter()
            .find(|c| {
                c["check"] == check && (c["network"] == made.net.as_str() || check == "net.bridge")
            })
            .cloned()
            .unwrap_or_else(|| panic!("no {check}: {recs:#?}"))
    };
    let health = hv_testbench::pipeline(&format!("hv-ls '{}' | hv-health --format jsonl", made.vm));
    let recs = health.records();
    assert_eq!(of(&recs, "net.active")["status"], "pass");
    let dhcp = of(&recs, "net.dhcp");
    assert_eq!(
        (
            dhcp["status"].as_str(),
            dhcp["value"].as_f64(),
            dhcp["threshold"].as_f64()
        ),
        (Some("pass"), Some(1.0), Some(245.0)),
        "{dhcp}"
    );
    assert_eq!(of(&recs, "net.bridge")["status"], "pass");
    // Stopped under a running VM that uses it: a failure naming the VM,
    // and hv-metrics says it is down.
    connect()
        .lookup_network_by_name(&made.net)
        .unwrap()
        .destroy()
        .unwrap();
    let sick = hv_testbench::pipeline(&format!("hv-ls '{}' | hv-health --format jsonl", made.vm));
    sick.assert_exit(1);
    let down = of(&sick.records(), "net.active");
    assert_eq!(down["status"], "fail", "{down}");
    assert!(
        down["message"].as_str().unwrap().contains(&made.vm),
        "{down}"
    );
    let metrics = hv(&bin("hv-metrics"), &[], "");
    assert!(
        metrics
            .stdout()
            .contains(&format!("hv_network_active{{network=\"{}\"}} 0", made.net)),
        "{}",
        metrics.stdout()
    );

    // Never replaced; a spec with a mistake names it.
    hv(HV_NET, &["define"], &format!("{spec}\n")).assert_failed("invalid_state");
    hv(
        HV_NET,
        &["define"],
        "{\"name\": \"x\", \"type\": \"nat\"}\n",
    )
    .assert_exit(2)
    .assert_stderr_contains("\"address\" is needed");
    hv(
        HV_NET,
        &["define"],
        "{\"name\": \"x\", \"type\": \"nat\", \"mtu\": 1}\n",
    )
    .assert_exit(2)
    .assert_stderr_contains("mtu");
    drop(made);
    let _ = std::fs::remove_dir_all(dir);
}
