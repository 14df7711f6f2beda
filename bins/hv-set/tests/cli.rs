//! hv-set on the bench's test guests: changes to a stopped guest show in
//! hv-ls and in the guest once started; a running guest's memory and vCPUs
//! within their maximums change now (the guest's kernel sees the vCPU),
//! above them at the next boot; a disk grown while the
//! guest runs is seen by the guest at its new size; an unproven ISO is
//! refused, a proven one goes in by its library name and comes out with
//! --eject; a dry run changes nothing.

// These tests need the bench (tests/run.sh); `cargo test` without
// `--features bench` still builds the command for the transcripts.
#![cfg(feature = "bench")]

use hv_testbench::{bin, connect, hv, scratch, GuestSpec};
use serde_json::Value;
use std::time::Duration;

const HV_SET: &str = env!("CARGO_BIN_EXE_hv-set");

fn listed(name: &str) -> Value {
    hv(&bin("hv-ls"), &[name], "").assert_ok().one_record()
}

fn change<'a>(rec: &'a Value, setting: &str) -> &'a Value {
    rec["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["setting"] == setting)
        .unwrap_or_else(|| panic!("no {setting} change: {rec:#}"))
}

#[test]
fn a_stopped_guest_takes_its_changes_at_its_next_start() {
    let g = GuestSpec::new("set-off").define(&connect());
    let dry = hv(
        HV_SET,
        &[&g.name, "--memory", "192M", "--vcpus", "2", "--dry-run"],
        "",
    );
    let rec = dry.assert_ok().one_record();
    assert_eq!(
        (rec["changed"].as_bool(), rec["dry_run"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(listed(&g.name)["vcpus"], 1, "a dry run changes nothing");

    let out = hv(HV_SET, &[&g.name, "--memory", "192M", "--vcpus", "2"], "");
    let rec = out.assert_ok().one_record();
    assert_eq!(change(&rec, "memory")["when"], "next_start", "{rec:#}");
    assert_eq!(change(&rec, "memory")["to"], 192u64 << 20);
    assert_eq!(change(&rec, "vcpus")["to"], 2);
    assert_eq!(
        rec["next_boot"], false,
        "nothing waits for a reboot: it is off"
    );
    let before = listed(&g.name);
    assert_eq!(
        (before["memory_bytes"].as_u64(), before["vcpus"].as_u64()),
        (Some(192 << 20), Some(2))
    );
    g.start_ready();
    let after = listed(&g.name);
    assert_eq!(after["vcpus"], 2, "the started guest has them: {after:#}");
    assert_eq!(after["max_memory_bytes"], 192u64 << 20, "{after:#}");
    // The same again is no change.
    let again = hv(HV_SET, &[&g.name, "--vcpus", "2"], "")
        .assert_ok()
        .one_record();
    assert_eq!(again["changed"], false);
}

#[test]
fn a_running_guest_changes_memory_now_within_its_maximum_else_at_next_boot() {
    let g = GuestSpec::new("set-on").define(&connect());
    g.start_ready();
    let max = listed(&g.name)["max_memory_bytes"].as_u64().unwrap();
    let lower = format!("{}M", (max >> 20) - 32);
    let rec = hv(HV_SET, &[&g.name, "--memory", &lower], "")
        .assert_ok()
        .one_record();
    assert_eq!(change(&rec, "memory")["when"], "now", "{rec:#}");
    assert_eq!(rec["next_boot"], false);

    let higher = format!("{}M", (max >> 20) + 64);
    let rec = hv(HV_SET, &[&g.name, "--memory", &higher], "")
        .assert_ok()
        .one_record();
    let memory = change(&rec, "memory");
    assert_eq!(memory["when"], "next_boot", "{rec:#}");
    assert!(
        memory["why"].as_str().unwrap().contains("maximum memory"),
        "{rec:#}"
    );
    assert_eq!(change(&rec, "max_memory")["when"], "next_boot");
    assert_eq!(rec["next_boot"], true, "jq 'select(.next_boot)' finds it");
}

#[test]
fn a_running_guest_gets_a_vcpu_now_within_its_maximum_else_at_next_boot() {
    let g = GuestSpec::new("set-cpus").define(&connect());
    let rec = hv(HV_SET, &[&g.name, "--max-vcpus", "2"], "")
        .assert_ok()
        .one_record();
    assert_eq!(change(&rec, "max_vcpus")["to"], 2, "{rec:#}");
    g.start_ready();
    assert_eq!(g.command("cpus"), "cpus 0", "one vCPU of at most 2");

    let rec = hv(HV_SET, &[&g.name, "--vcpus", "2"], "")
        .assert_ok()
        .one_record();
    assert_eq!(change(&rec, "vcpus")["when"], "now", "{rec:#}");
    assert_eq!(rec["next_boot"], false);
    // The guest's kernel has it: ACPI CPU hotplug, no reboot.
    let started = std::time::Instant::now();
    while g.command("cpus") != "cpus 0-1" {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the guest never saw its second vCPU: {}",
            g.command("cpus")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(listed(&g.name)["vcpus"], 2);

    // Above the maximum: at the next boot, said why.
    let rec = hv(HV_SET, &[&g.name, "--vcpus", "3"], "")
        .assert_ok()
        .one_record();
    let vcpus = change(&rec, "vcpus");
    assert_eq!(vcpus["when"], "next_boot", "{rec:#}");
    assert_eq!(rec["next_boot"], true, "{rec:#}");
    assert_eq!(g.command("cpus"), "cpus 0-1", "nothing more now");
}

#[test]
fn a_disk_grown_while_the_guest_runs_is_seen_at_its_new_size() {
    let g = GuestSpec::new("set-grow").define(&connect());
    g.start_ready();
    let before: u64 = g
        .command("size")
        .trim_start_matches("size ")
        .trim()
        .parse()
        .unwrap();
    let rec = hv(HV_SET, &[&g.name, "--grow", "vda=+16M"], "")
        .assert_ok()
        .one_record();
    let disk = change(&rec, "disk vda");
    assert_eq!(disk["when"], "now", "{rec:#}");
    assert_eq!(disk["to"].as_u64(), Some(before + (16 << 20)));
    // The guest's kernel takes the resize from a work queue: asked again
    // until it shows (or 30 s pass).
    let started = std::time::Instant::now();
    let seen = loop {
        let seen: u64 = g
            .command("size")
            .trim_start_matches("size ")
            .trim()
            .parse()
            .unwrap();
        if seen != before || started.elapsed() > Duration::from_secs(30) {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(seen, before + (16 << 20), "the guest sees the grown disk");
    // Never smaller.
    let refused = hv(HV_SET, &[&g.name, "--grow", "vda=1M"], "");
    let rec = refused.assert_failed("check_failed").one_record();
    assert!(
        hv_testbench::error_message(&rec).contains("never shrinks"),
        "{rec:#}"
    );
}

#[test]
fn an_unproven_iso_is_refused_and_allowed_only_when_asked() {
    let g = GuestSpec::new("set-iso").define(&connect());
    let dir = scratch("set-iso");
    let iso = dir.join("unsigned.iso");
    std::fs::write(&iso, vec![0u8; 64 << 10]).unwrap();
    let library = dir.join("library");
    std::fs::create_dir_all(&library).unwrap();
    let iso_arg = iso.display().to_string();
    let lib_arg = library.display().to_string();
    let refused = hv(
        HV_SET,
        &[&g.name, "--cdrom", &iso_arg, "--iso-library", &lib_arg],
        "",
    );
    refused.assert_exit(1);
    let disks = |name: &str| listed(name)["disks"].as_array().unwrap().len();
    assert_eq!(disks(&g.name), 1, "no drive was added: {refused:?}");

    let rec = hv(
        HV_SET,
        &[
            &g.name,
            "--cdrom",
            &iso_arg,
            "--iso-library",
            &lib_arg,
            "--allow-unverified-iso",
            "--boot",
            "cdrom,hd",
        ],
        "",
    )
    .assert_ok()
    .one_record();
    assert_eq!(rec["iso_unverified"], true, "{rec:#}");
    assert_eq!(change(&rec, "cdrom")["to"], iso_arg.as_str());
    assert_eq!(change(&rec, "boot")["to"], "cdrom,hd");
    let drive = listed(&g.name)["disks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device"] == "cdrom")
        .cloned()
        .expect("a drive was added");
    assert_eq!(drive["source"], iso_arg.as_str());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_proven_iso_goes_in_by_its_library_name_and_eject_takes_it_out() {
    let g = GuestSpec::new("set-iso-proven").define(&connect());
    let dir = scratch("set-iso-proven");
    let library = dir.join("library");
    hv_testbench::proven_iso(&dir, &library, "distro.iso");
    let lib_arg = library.display().to_string();
    let rec = hv(
        HV_SET,
        &[&g.name, "--cdrom", "distro.iso", "--iso-library", &lib_arg],
        "",
    )
    .assert_ok()
    .one_record();
    let entry = library.join("distro.iso").display().to_string();
    assert_eq!(change(&rec, "cdrom")["to"], entry.as_str(), "{rec:#}");
    assert_ne!(rec["iso_unverified"], true, "{rec:#}");
    let cdrom = |name: &str| {
        listed(name)["disks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["device"] == "cdrom")
            .cloned()
            .expect("a drive")
    };
    assert_eq!(cdrom(&g.name)["source"], entry.as_str());

    // Ejected: the drive stays, empty.
    let rec = hv(HV_SET, &[&g.name, "--eject"], "")
        .assert_ok()
        .one_record();
    assert_eq!(change(&rec, "cdrom")["to"], Value::Null, "{rec:#}");
    assert_eq!(cdrom(&g.name)["source"], Value::Null);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn vcpu_maximum_description_cpu_and_start_order_land_in_the_definition() {
    let g = GuestSpec::new("set-rest").define(&connect());
    let rec = hv(
        HV_SET,
        &[
            &g.name,
            "--max-vcpus",
            "4",
            "--vcpus",
            "2",
            "--description",
            "web tier: ünïcode & <angles>",
            "--cpu",
            "host-passthrough",
            "--autostart-order",
            "2",
            "--autostart-delay",
            "30s",
        ],
        "",
    )
    .assert_ok()
    .one_record();
    for setting in ["max_vcpus", "vcpus", "description", "cpu"] {
        assert_eq!(change(&rec, setting)["when"], "next_start", "{rec:#}");
    }
    let xml = g
        .domain
        .xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE)
        .unwrap();
    assert!(xml.contains("current='2'>4</vcpu>"), "{xml}");
    assert!(
        xml.contains("<description>web tier: ünïcode &amp; &lt;angles&gt;</description>"),
        "{xml}"
    );
    assert!(xml.contains("<cpu mode='host-passthrough'"), "{xml}");
    let tags = listed(&g.name)["tags"].clone();
    assert!(
        tags.as_array().unwrap().iter().any(|t| t == "boot:2")
            && tags
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == "boot-delay:30s"),
        "{tags}"
    );
    // The same again changes nothing.
    let again = hv(
        HV_SET,
        &[
            &g.name,
            "--max-vcpus",
            "4",
            "--vcpus",
            "2",
            "--cpu",
            "host-passthrough",
        ],
        "",
    )
    .assert_ok()
    .one_record();
    assert_eq!(again["changed"], false, "{again:#}");
}
