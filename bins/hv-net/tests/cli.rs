//! hv-net on the bench: a NAT network with DHCP and a directory pool
//! defined from specs, used by an hv-define'd guest that gets a lease,
//! which `hv-net ls` shows; the refusals and a dry run. A network on a
//! host bridge carrying a guest, and hv-health's checks of a bridge that
//! goes down and of a DHCP range with no address left.

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
    // libvirt's lease file is written by a helper just after the guest has
    // its address: asked again until the lease shows.
    let started = std::time::Instant::now();
    let lease = loop {
        let leases = hv(HV_NET, &["ls", &made.net, "--format", "jsonl"], "")
            .assert_ok()
            .one_record()["leases"]
            .clone();
        let ours = leases
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["mac"] == mac.as_str())
            .cloned();
        match ours {
            Some(lease) => break lease,
            None if started.elapsed() > Duration::from_secs(30) => {
                panic!("no lease of {mac}: {leases:#}")
            }
            None => std::thread::sleep(Duration::from_millis(500)),
        }
    };
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

/// A host bridge the test makes (on this machine only: it has no address
/// and no port but the guest's), deleted at the end.
struct Bridge(String);

impl Bridge {
    fn new() -> Bridge {
        // Interface names are at most 15 bytes; sweep.sh removes `hvt-br*`.
        let name = format!("hvt-br{}", std::process::id() % 100_000);
        let st = std::process::Command::new("ip")
            .args(["link", "add", "name", &name, "type", "bridge"])
            .status()
            .unwrap();
        assert!(st.success(), "ip link add {name}");
        let bridge = Bridge(name);
        bridge.set("up");
        bridge
    }

    fn set(&self, state: &str) {
        let st = std::process::Command::new("ip")
            .args(["link", "set", &self.0, state])
            .status()
            .unwrap();
        assert!(st.success(), "ip link set {} {state}", self.0);
    }

    /// The interfaces plugged into it.
    fn ports(&self) -> Vec<String> {
        std::fs::read_dir(format!("/sys/class/net/{}/brif", self.0))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .status();
    }
}

#[test]
fn a_host_bridge_network_carries_a_guest_and_health_sees_a_bridge_down_and_a_full_range() {
    let dir = scratch("net-bridge");
    let bridge = Bridge::new();
    // A second network, with a DHCP range of one address: the guest's
    // first NIC takes it. Declared first, it goes after the VM.
    let small = Made {
        vm: String::new(),
        pool: String::new(),
        net: format!("{}one", run_prefix()),
    };
    let made = Made {
        vm: format!("{}net-br-vm", run_prefix()),
        pool: format!("{}net-br-pool", run_prefix()),
        net: format!("{}br", run_prefix()),
    };
    let specs = format!(
        "{}\n{}\n",
        json!({"name": small.net, "type": "nat", "address": "10.234.0.1/24",
               "dhcp": {"start": "10.234.0.10", "end": "10.234.0.10"}}),
        json!({"name": made.net, "type": "bridge", "bridge": bridge.0}),
    );
    hv(HV_NET, &["define"], &specs).assert_ok();
    let listed = hv(HV_NET, &["ls", &made.net, "--format", "jsonl"], "")
        .assert_ok()
        .one_record();
    assert_eq!(
        (
            listed["forward"].as_str(),
            listed["bridge"].as_str(),
            listed["active"].as_bool()
        ),
        (Some("bridge"), Some(bridge.0.as_str()), Some(true)),
        "{listed:#}"
    );
    let pool = json!({"name": made.pool, "path": dir.join("pool")});
    hv(&bin("hv-pool"), &["define"], &format!("{pool}\n")).assert_ok();

    let image = hv_testbench::guest_image();
    let profile = json!({
        "name": made.vm, "type": hv_testbench::domain_type(), "memory": "128M",
        "pool": made.pool, "disk": "16M",
        "networks": [{"network": small.net}, {"network": made.net}],
        "kernel": image.join("vmlinux"), "initrd": image.join("initramfs.img"),
        "cmdline": "console=ttyS0 panic=-1 quiet",
    });
    hv(&bin("hv-define"), &[], &format!("{profile}\n")).assert_ok();
    assert!(bridge.ports().is_empty());
    hv(&bin("hv-start"), &[&made.vm], "").assert_ok();
    // Its second NIC is plugged into the host's bridge.
    assert_eq!(bridge.ports().len(), 1, "{:?}", bridge.ports());
    let said = wait_for_line(
        &hv_testbench::serial_log(&made.vm),
        "hv-test-guest: dhcp",
        Duration::from_secs(120),
    );
    assert_eq!(said.trim(), "hv-test-guest: dhcp ip=10.234.0.10");

    let health =
        || hv_testbench::pipeline(&format!("hv-ls '{}' | hv-health --format jsonl", made.vm));
    let of = |recs: &[serde_json::Value], check: &str, about: &str| {
        recs.iter()
            .find(|c| c["check"] == check && (c["network"] == about || c["bridge"] == about))
            .cloned()
            .unwrap_or_else(|| panic!("no {check} of {about}: {recs:#?}"))
    };
    // The range's one address is taken: the next VM would get none.
    // (libvirt's lease file is written by a helper just after the guest
    // has its address: asked again until the lease shows.)
    let started = std::time::Instant::now();
    let recs = loop {
        let run = health();
        let recs = run.records();
        if of(&recs, "net.dhcp", &small.net)["value"] == 1.0
            || started.elapsed() > Duration::from_secs(30)
        {
            run.assert_exit(1);
            break recs;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let full = of(&recs, "net.dhcp", &small.net);
    assert_eq!(
        (
            full["status"].as_str(),
            full["value"].as_f64(),
            full["threshold"].as_f64()
        ),
        (Some("fail"), Some(1.0), Some(1.0)),
        "{full}"
    );
    assert!(full["message"].as_str().unwrap().contains("full"), "{full}");
    assert!(
        full["hint"].as_str().unwrap().contains("net-edit"),
        "{full}"
    );
    assert_eq!(of(&recs, "net.bridge", &bridge.0)["status"], "pass");
    // Running, the NIC's live XML says type='bridge' with the network in
    // its source: it is still on the network, and no bridge is named
    // after the network. (Only this test's: other tests stop networks.)
    assert!(
        !recs
            .iter()
            .any(|c| c["check"] == "net.bridge" && c["bridge"] == made.net.as_str()),
        "{recs:#?}"
    );
    let listed = hv(&bin("hv-ls"), &[&made.vm, "--format", "jsonl"], "")
        .assert_ok()
        .one_record();
    assert_eq!(
        (
            listed["interfaces"][1]["type"].as_str(),
            listed["interfaces"][1]["source"].as_str()
        ),
        (Some("network"), Some(made.net.as_str())),
        "{listed:#}"
    );

    // The bridge goes down under the running guest: a failure naming it.
    bridge.set("down");
    let recs = health().records();
    let down = of(&recs, "net.bridge", &bridge.0);
    assert_eq!(down["status"], "fail", "{down}");
    let message = down["message"].as_str().unwrap();
    assert!(
        message.contains("down") && message.contains(&made.vm),
        "{down}"
    );
    assert!(
        down["hint"]
            .as_str()
            .unwrap()
            .contains(&format!("ip link set {} up", bridge.0)),
        "{down}"
    );
    bridge.set("up");
    assert_eq!(
        of(&health().records(), "net.bridge", &bridge.0)["status"],
        "pass"
    );

    drop(made);
    drop(small);
    let _ = std::fs::remove_dir_all(dir);
}
