//! hv-preflight on the real bench: the host checks against
//! virt-host-validate's own verdicts, /dev/kvm as the unprivileged user
//! nobody, planned VMs against tmpfs directories, pools and a real hv-iso
//! library, and real guests before start, snapshot and backup (one with a
//! live backup job in the way). Every record is checked field by field.

// These tests need the bench (tests/run.sh); `cargo test` without
// `--features bench` still builds the command for the transcripts.
#![cfg(feature = "bench")]

use hv_testbench::{
    assert_fields, backup_repo, bin, check_record as find, connect, hv, hv_as_nobody, run_prefix,
    scratch, signed_image, GuestSpec, Run, Tmpfs, URI,
};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

const HV_PREFLIGHT: &str = env!("CARGO_BIN_EXE_hv-preflight");

fn preflight(args: &[&str], input: &str) -> Run {
    let mut full = vec!["--format", "jsonl"];
    full.extend(args);
    let out = hv(HV_PREFLIGHT, &full, input);
    for r in out.records() {
        assert_record(&r);
    }
    out
}

/// The shape docs/preflight.md promises: the fields in order, a hint
/// exactly when something is wrong, and the unit of what was measured.
fn assert_record(r: &Value) {
    let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(&keys[..3], ["check", "status", "subject"], "{r}");
    assert_eq!(
        &keys[keys.len() - 5..],
        ["message", "hint", "value", "threshold", "unit"],
        "{r}"
    );
    assert_unit(r);
    let status = r["status"].as_str().unwrap();
    assert!(["pass", "warn", "fail"].contains(&status), "{r}");
    assert_eq!(
        r["hint"].is_null(),
        status == "pass",
        "a hint exactly when not passing: {r}"
    );
    assert!(!r["message"].as_str().unwrap().is_empty(), "{r}");
}

/// `unit` says what `value` and `threshold` count: it is set exactly when
/// they are numbers, and both are in it, so a script may compare them.
fn assert_unit(r: &Value) {
    let measures = [&r["value"], &r["threshold"]];
    match r["unit"].as_str() {
        Some(unit) => {
            assert!(
                ["percent", "seconds", "bytes", "count"].contains(&unit),
                "{r}"
            );
            assert!(measures.iter().all(|m| m.is_null() || m.is_number()), "{r}");
            assert!(measures.iter().any(|m| m.is_number()), "{r}");
            if unit == "bytes" || unit == "count" {
                assert!(measures.iter().all(|m| m.is_null() || m.is_u64()), "{r}");
            }
            if unit == "percent" {
                let share = |m: &&Value| m.as_f64().is_none_or(|p| (0.0..=100.0).contains(&p));
                assert!(measures.iter().all(share), "{r}");
            }
        }
        None => {
            assert!(r["unit"].is_null(), "{r}");
            assert!(
                measures.iter().all(|m| !m.is_number()),
                "text has no unit: {r}"
            );
        }
    }
}

fn hint(r: &Value) -> &str {
    r["hint"].as_str().unwrap_or_else(|| panic!("no hint: {r}"))
}

fn message(r: &Value) -> &str {
    r["message"].as_str().unwrap()
}

fn virsh(args: &[&str]) -> String {
    let out = Command::new("virsh")
        .args(["-c", URI, "-q"])
        .args(args)
        .output()
        .expect("run virsh");
    Run::new(format!("virsh {args:?}"), out)
        .assert_ok()
        .stdout()
}

/// virt-host-validate's QEMU checks, each mapped to the record that covers
/// it: a check it gains in a later release fails this test until covered.
#[test]
fn every_virt_host_validate_check_is_covered_with_the_same_verdict() {
    let vhv = Command::new("virt-host-validate")
        .arg("qemu")
        .output()
        .expect("virt-host-validate (Debian package libvirt-clients)");
    let text = String::from_utf8_lossy(&vhv.stdout);
    let out = preflight(&["-c", URI], "");
    let recs = out.records();
    let mut compared = 0;
    for line in text.lines().filter(|l| l.contains("QEMU: Checking")) {
        let (what, verdict) = line.rsplit_once(':').unwrap();
        let verdict = verdict.split_whitespace().next().unwrap().to_lowercase();
        let (check, subject, same_verdict) = if what.contains("hardware virtualization") {
            ("host.hw_virt", "host".to_owned(), true)
        } else if what.contains("'/dev/kvm' exists") {
            ("host.kvm_device", "host".to_owned(), true)
        } else if what.contains("'/dev/kvm' is accessible") {
            ("host.kvm_access", "host".to_owned(), true)
        } else if what.contains("'/dev/vhost-net'") {
            ("host.vhost_net", "host".to_owned(), true)
        } else if what.contains("'/dev/net/tun'") {
            ("host.tun", "host".to_owned(), true)
        } else if let Some(rest) = what.split("cgroup '").nth(1) {
            (
                "host.cgroup",
                rest.split('\'').next().unwrap().to_owned(),
                true,
            )
        } else if what.contains("IOMMU") {
            ("host.iommu", "host".to_owned(), verdict != "pass")
        } else if what.contains("secure guest") {
            // hv-preflight passes a host without it: few VMs need it.
            ("host.secure_guest", "host".to_owned(), false)
        } else {
            panic!("virt-host-validate checks something hv-preflight does not: {line}");
        };
        let r = find(&recs, check, &subject);
        if same_verdict {
            assert_eq!(r["status"], verdict.as_str(), "{line}\n{r}");
        }
        compared += 1;
    }
    assert!(compared >= 10, "virt-host-validate said:\n{text}");

    let version = virsh(&["version"]);
    let find_version = |prefix: &str| {
        version
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_fields(
        find(&recs, "libvirt.version", "host"),
        json!({"value": find_version("Using library: libvirt"), "threshold": "7.2.0"}),
    );
    assert_fields(
        find(&recs, "qemu.version", "host"),
        json!({"value": find_version("Running hypervisor: QEMU")}),
    );
    assert_fields(
        find(&recs, "libvirt.reachable", "host"),
        json!({"value": URI}),
    );
    let expected = if recs.iter().any(|r| r["status"] == "fail") {
        1
    } else {
        0
    };
    out.assert_exit(expected);

    let recs = preflight(&["-c", URI, "--problems", "--skip", "host.iommu"], "").records();
    assert!(
        recs.iter()
            .all(|r| r["status"] != "pass" && r["check"] != "host.iommu"),
        "{recs:#?}"
    );
    preflight(&["--skip", "host.iomu"], "")
        .assert_exit(2)
        .assert_stderr_contains("docs/preflight.md");
}

#[test]
fn dev_kvm_unusable_for_the_user_fails_with_the_fix() {
    let out = hv_as_nobody(HV_PREFLIGHT, &["-c", URI, "--format", "jsonl"]);
    let recs = out.assert_exit(1).records();
    recs.iter().for_each(assert_record);
    let r = find(&recs, "host.kvm_access", "host");
    assert_fields(r, json!({"status": "fail"}));
    if Path::new("/dev/kvm").exists() {
        assert!(message(r).contains("nobody cannot open /dev/kvm"), "{r}");
        assert!(hint(r).contains("usermod -aG kvm nobody"), "{r}");
        assert!(hint(r).contains("users.users.nobody.extraGroups"), "{r}");
    } else {
        assert!(message(r).contains("missing"), "{r}");
    }
    let emulated = hv_as_nobody(
        HV_PREFLIGHT,
        &["-c", URI, "--format", "jsonl", "--virt-type", "qemu"],
    );
    let recs = emulated.records();
    assert_fields(
        find(&recs, "host.kvm_access", "host"),
        json!({"status": "warn"}),
    );
    assert_fields(
        find(&recs, "libvirt.domain_type", "host"),
        json!({"value": "qemu"}),
    );

    let root = preflight(&["-c", URI], "").records();
    let r = find(&root, "host.kvm_access", "host").clone();
    if Path::new("/dev/kvm").exists() {
        assert_eq!(r["status"], "pass", "root can use /dev/kvm: {r}");
    }
}

#[test]
fn unreachable_libvirt_exits_3_and_the_host_checks_still_run() {
    let out = preflight(
        &["-c", "qemu:///system?socket=/nonexistent/libvirt-sock"],
        "",
    );
    let recs = out.assert_exit(3).records();
    let r = find(&recs, "libvirt.reachable", "host");
    assert_fields(r, json!({"status": "fail"}));
    assert!(hint(r).contains("systemctl start libvirtd"), "{r}");
    find(&recs, "host.tun", "host");
    assert_eq!(
        recs.iter().filter(|r| r["check"] == "host.cgroup").count(),
        6
    );
}

fn profile(name: &str, fields: &str) -> String {
    format!(
        "{{\"name\": {}, {fields}}}\n",
        serde_json::to_string(name).unwrap()
    )
}

#[test]
fn planned_vms_are_counted_together_against_names_memory_cpus_and_space() {
    let conn = connect();
    let taken = GuestSpec::new("preflight taken ü").define(&conn);
    let dir = scratch("preflight-plan");
    let tiny = Tmpfs::mount(&dir.join("small"), 8);
    let small = tiny.dir.to_str().unwrap();
    let first = format!("{}plan-1", run_prefix());
    let second = format!("{}plan-2", run_prefix());
    let mut input = profile(&taken.name, "\"memory\": \"64M\"");
    input += &profile(
        &first,
        &format!("\"disk\": \"5M\", \"dir\": {small:?}, \"vcpus\": 1"),
    );
    input += &profile(
        &second,
        &format!("\"disk\": \"5M\", \"dir\": {small:?}, \"memory\": \"100T\", \"vcpus\": 4096"),
    );
    input += &profile(&first, "\"vcpus\": 1");
    input += "{\"name\": \"typo\", \"memroy\": \"1G\"}\n";
    let out = preflight(&["--profiles", "-", "--virt-type", "qemu"], &input);
    // A malformed line exits 2.
    out.assert_exit(2)
        .assert_stderr_contains("stdin line 5: memroy: unknown field `memroy`");
    let recs = out.records();

    let r = find(&recs, "plan.name", &taken.name);
    assert_fields(r, json!({"status": "fail"}));
    assert!(message(r).contains(&taken.uuid), "{r}");
    assert!(hint(r).contains(&format!("hv-rm {:?}", taken.name)), "{r}");
    assert_fields(
        find(&recs, "plan.memory", &taken.name),
        json!({"status": "pass"}),
    );

    let fits = find(&recs, "plan.storage", &format!("{first} {small}"));
    assert_fields(
        fits,
        json!({"status": "pass", "dir": small, "value": 5 << 20}),
    );
    let free = fits["threshold"].as_u64().unwrap();
    assert!(free > 7 << 20 && free <= 8 << 20, "{fits}");
    let full = find(&recs, "plan.storage", &format!("{second} {small}"));
    assert_eq!(
        full["status"], "fail",
        "the second 5M disk meets what the first left: {full}"
    );
    assert_eq!(full["threshold"], free - (5 << 20));
    assert!(hint(full).contains("--dir"), "{full}");

    assert_fields(
        find(&recs, "plan.memory", &second),
        json!({"status": "fail", "value": 100u64 << 40}),
    );
    let cpus = find(&recs, "plan.vcpus", &second);
    assert_fields(cpus, json!({"status": "fail"}));
    assert!(cpus["threshold"].as_u64().unwrap() < 4096, "{cpus}");
    let twice: Vec<&Value> = recs
        .iter()
        .filter(|r| r["check"] == "plan.name" && r["subject"] == first.as_str())
        .collect();
    assert_fields(twice[0], json!({"status": "pass"}));
    assert_fields(twice[1], json!({"status": "fail"}));
    assert!(message(twice[1]).contains("planned twice"));
    assert!(
        recs.iter().all(|r| r["name"] != "typo"),
        "a malformed profile is not checked"
    );

    preflight(&["--name", "x", "--memory", "4096"], "")
        .assert_exit(2)
        .assert_stderr_contains("4096M");
    drop(tiny);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_planned_disk_goes_to_an_active_pool() {
    let dir = scratch("preflight-pool");
    let tiny = Tmpfs::mount(&dir.join("pool"), 8);
    let pool = format!("{}preflight-pool", run_prefix());
    let idle = format!("{}preflight-idle", run_prefix());
    let target = tiny.dir.to_str().unwrap();
    virsh(&["pool-create-as", &pool, "dir", "--target", target]);
    let idle_target = dir.join("idle");
    std::fs::create_dir_all(&idle_target).unwrap();
    virsh(&[
        "pool-define-as",
        &idle,
        "dir",
        "--target",
        idle_target.to_str().unwrap(),
    ]);
    let vm = format!("{}plan-pool", run_prefix());
    let run = |pool: &str, disk: &str| {
        let out = preflight(
            &[
                "--virt-type",
                "qemu",
                "--name",
                &vm,
                "--disk",
                disk,
                "--pool",
                pool,
            ],
            "",
        );
        find(&out.records(), "plan.storage", &format!("{vm} {pool}")).clone()
    };
    let r = run(&pool, "1M");
    assert_fields(&r, json!({"status": "pass", "pool": pool}));
    let r = run(&pool, "7.5M");
    assert_eq!(
        r["status"], "warn",
        "fits, but fills the pool over 85%: {r}"
    );
    let r = run(&pool, "1G");
    assert_eq!(r["status"], "fail", "{r}");
    let r = run(&idle, "1M");
    assert_eq!(r["status"], "fail", "{r}");
    assert!(
        hint(&r).contains(&format!("virsh pool-start {idle}")),
        "{r}"
    );
    let r = run("hv-no-such-pool", "1M");
    assert!(hint(&r).contains("virsh pool-list --all"), "{r}");
    virsh(&["pool-destroy", &pool]);
    virsh(&["pool-undefine", &idle]);
    drop(tiny);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_iso_must_be_in_the_library_admitted_by_signature_and_unchanged() {
    let dir = scratch("preflight-iso");
    let lib = dir.join("library");
    let (image, sums, sig, key) = signed_image(&dir, "distro.iso");
    let add = |args: &[&str]| {
        let mut full = vec!["add", "--library", lib.to_str().unwrap()];
        full.extend(args);
        hv(&bin("hv-iso"), &full, "").assert_ok();
    };
    add(&[
        image.to_str().unwrap(),
        "--checksums",
        sums.to_str().unwrap(),
        "--signature",
        sig.to_str().unwrap(),
        "--keyring",
        key.to_str().unwrap(),
    ]);
    let unsigned = dir.join("unsigned.iso");
    std::fs::write(&unsigned, b"an image nobody signed").unwrap();
    add(&[unsigned.to_str().unwrap(), "--allow-unsigned"]);
    let vm = format!("{}plan-iso", run_prefix());
    let check = |iso: &str| {
        let out = preflight(
            &[
                "--virt-type",
                "qemu",
                "--name",
                &vm,
                "--iso",
                iso,
                "--iso-library",
                lib.to_str().unwrap(),
            ],
            "",
        );
        out.record("check", "plan.iso")
    };
    let r = check("distro.iso");
    assert_fields(
        &r,
        json!({"status": "pass", "value": "signature", "subject": format!("{vm} distro.iso")}),
    );
    let r = check("unsigned.iso");
    assert_eq!(r["status"], "warn", "{r}");
    assert!(hint(&r).contains("--signature"), "{r}");
    let r = check("missing.iso");
    assert_eq!(r["status"], "fail", "{r}");
    assert!(hint(&r).contains("hv-iso add"), "{r}");
    let r = check(image.to_str().unwrap());
    assert_eq!(
        r["status"], "warn",
        "a path outside the library proves nothing: {r}"
    );
    let r = check(lib.join("distro.iso").to_str().unwrap());
    assert_eq!(
        r["status"], "pass",
        "a path into the library is its entry: {r}"
    );

    use std::io::Write;
    let mut grown = std::fs::OpenOptions::new()
        .append(true)
        .open(lib.join("distro.iso"))
        .unwrap();
    grown.write_all(b"tampered").unwrap();
    let r = check("distro.iso");
    assert_fields(&r, json!({"status": "fail", "value": (1 << 20) + 8}));
    assert!(hint(&r).contains("hv-iso verify"), "{r}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A VM whose only disk is a raw file (which may not exist).
fn raw_vm(conn: &virt::connect::Connect, name: &str, disk: &Path) -> virt::domain::Domain {
    typed_vm(conn, name, disk, "qemu").unwrap()
}

/// A VM of a domain type (`qemu`, `kvm`) whose only disk is a raw file.
fn typed_vm(
    conn: &virt::connect::Connect,
    name: &str,
    disk: &Path,
    domain_type: &str,
) -> Result<virt::domain::Domain, virt::error::Error> {
    let xml = format!(
        "<domain type='{domain_type}'><name>{name}</name><memory unit='MiB'>64</memory>\
         <os><type arch='x86_64'>hvm</type></os><devices>\
         <disk type='file' device='disk'><driver name='qemu' type='raw'/>\
         <source file='{}'/><target dev='vda' bus='virtio'/></disk></devices></domain>",
        disk.display()
    );
    conn.define_domain_xml(&xml)
}

/// The bench's guests are emulated (type qemu) and its CPU may offer no
/// VT-x: starting them needs no KVM, so hv-preflight --for start must not
/// fail the host for it; a VM of type kvm among them does need it.
#[test]
fn before_a_start_each_vm_is_judged_by_its_own_domain_type() {
    let conn = connect();
    let dir = scratch("preflight-types");
    let disk = dir.join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let tcg_name = format!("{}preflight-tcg", run_prefix());
    let tcg = typed_vm(&conn, &tcg_name, &disk, "qemu").unwrap();
    let host = preflight(&["-c", URI], "").records();
    let kvm_verdict = find(&host, "host.hw_virt", "host")["status"].clone();

    let out = preflight(&["--for", "start", &tcg_name], "");
    let recs = out.records();
    for check in ["host.hw_virt", "host.kvm_device", "host.kvm_access"] {
        let r = find(&recs, check, "host");
        assert_eq!(r["status"], "pass", "an emulated VM needs no KVM: {r}");
    }
    if kvm_verdict != "pass" {
        let r = find(&recs, "host.hw_virt", "host");
        assert!(message(r).contains("domain type qemu"), "{r}");
    }
    assert_fields(
        find(&recs, "libvirt.domain_type", "host"),
        json!({"value": "qemu"}),
    );
    assert!(recs.iter().all(|r| r["status"] != "fail"), "{recs:#?}");
    out.assert_ok();

    let kvm_name = format!("{}preflight-kvm", run_prefix());
    match typed_vm(&conn, &kvm_name, &disk, "kvm") {
        Err(e) => eprintln!("libvirt defines no kvm domains here ({e}); the kvm half is skipped"),
        Ok(kvm) => {
            let input = format!("{tcg_name}\n{kvm_name}\n");
            let recs = preflight(&["--for", "start"], &input).records();
            let r = find(&recs, "host.hw_virt", "host");
            assert_eq!(
                r["status"], kvm_verdict,
                "as for the host's KVM guests: {r}"
            );
            if r["status"] != "pass" {
                assert!(message(r).contains(&kvm_name), "{r}");
                assert!(!message(r).contains(&tcg_name), "{r}");
                assert!(hint(r).contains("<domain type='qemu'>"), "{r}");
            }
            assert_fields(
                find(&recs, "libvirt.domain_type", "host"),
                json!({"value": "kvm"}),
            );
            hv_testbench::remove_domain(&kvm);
        }
    }

    // --virt-type is for the host and planned VMs; a start reads each VM's.
    preflight(&["--for", "start", "--virt-type", "qemu", &tcg_name], "").assert_exit(2);
    hv_testbench::remove_domain(&tcg);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn vms_about_to_start_need_their_disks_memory_and_a_startable_state() {
    let conn = connect();
    let off = GuestSpec::new("preflight start").define(&conn);
    let lost_name = format!("{}preflight-lost", run_prefix());
    let lost_disk = PathBuf::from(format!("/var/tmp/{lost_name}.img"));
    let lost = raw_vm(&conn, &lost_name, &lost_disk);
    let input = format!(
        "{}\n{{\"name\": {:?}}}\nno-such-vm\n{{\"name\": \"upstream\", \"ok\": false, \"error\": {{\"code\": \"timeout\", \"message\": \"boom\"}}}}\n",
        off.name, lost_name
    );
    let recs = preflight(&["--for", "start"], &input)
        .assert_exit(1)
        .records();
    find(&recs, "host.tun", "host");
    assert_fields(
        find(&recs, "vm.state", &off.name),
        json!({"status": "pass", "value": "shutoff", "uuid": off.uuid}),
    );
    assert_fields(
        find(&recs, "vm.disks", &off.name),
        json!({"status": "pass"}),
    );
    assert_fields(
        find(&recs, "vm.memory", &off.name),
        json!({"value": 128u64 << 20}),
    );
    let vcpus = find(&recs, "vm.vcpus", &off.name);
    assert!(vcpus["value"].as_u64().unwrap() >= 1);
    let expected = if vcpus["value"].as_u64() > vcpus["threshold"].as_u64() {
        "warn"
    } else {
        "pass"
    };
    assert_eq!(vcpus["status"], expected, "{vcpus}");
    let r = find(&recs, "vm.disks", &lost_name);
    assert_fields(r, json!({"status": "fail"}));
    assert!(message(r).contains(&lost_disk.display().to_string()), "{r}");
    assert!(hint(r).contains("virsh edit"), "{r}");
    assert_fields(
        find(&recs, "vm.exists", "no-such-vm"),
        json!({"status": "fail"}),
    );
    let r = find(&recs, "vm.exists", "upstream");
    assert_fields(r, json!({"status": "fail"}));
    assert_eq!(message(r), "failed upstream: boom");

    off.start_ready();
    let recs = preflight(&["--for", "start", &off.name], "").records();
    assert!(message(find(&recs, "vm.state", &off.name)).contains("already running"));
    assert!(
        recs.iter().all(|r| r["check"] != "vm.memory"),
        "a running VM needs no more memory"
    );
    hv_testbench::remove_domain(&lost);
}

#[test]
fn vms_about_to_be_snapshotted_need_qcow2_no_job_and_room_for_their_memory() {
    let conn = connect();
    let guest = GuestSpec::new("preflight snap").define(&conn);
    guest.start_ready();
    let raw_name = format!("{}preflight-raw", run_prefix());
    let raw_disk = PathBuf::from(format!("/var/tmp/{raw_name}.img"));
    std::fs::write(&raw_disk, vec![0u8; 1 << 20]).unwrap();
    let raw = raw_vm(&conn, &raw_name, &raw_disk);
    let input = format!("{}\n{raw_name}\n", guest.name);
    // How full the bench's disk already is is not this test's subject (CI's is past 85%).
    let recs = preflight(&["--for", "snapshot", "--disk-warn", "100"], &input)
        .assert_exit(1)
        .records();
    assert!(
        recs.iter()
            .all(|r| !r["check"].as_str().unwrap().starts_with("host.")),
        "no hardware checks for a snapshot"
    );
    assert_fields(
        find(&recs, "vm.job", &guest.name),
        json!({"status": "pass"}),
    );
    assert_fields(
        find(&recs, "vm.snapshot_format", &guest.name),
        json!({"status": "pass"}),
    );
    let disk_dir = guest.disk.parent().unwrap().display().to_string();
    let space = find(
        &recs,
        "snapshot.space",
        &format!("{} {disk_dir}", guest.name),
    );
    assert_fields(space, json!({"status": "pass"}));
    let with_memory = space["value"].as_u64().unwrap();
    assert!(
        with_memory >= 128 << 20,
        "a running VM's snapshot holds its memory: {space}"
    );
    let r = find(&recs, "vm.snapshot_format", &raw_name);
    assert_fields(r, json!({"status": "fail"}));
    assert!(message(r).contains("vda is raw"), "{r}");
    assert!(hint(r).contains("--disk-only"), "{r}");

    let recs = preflight(
        &["--for", "snapshot", "--disk-only", "--disk-warn", "100"],
        &input,
    )
    .assert_ok()
    .records();
    assert_fields(
        find(&recs, "vm.snapshot_format", &raw_name),
        json!({"status": "pass"}),
    );
    let space = find(
        &recs,
        "snapshot.space",
        &format!("{} {disk_dir}", guest.name),
    );
    assert!(
        space["value"].as_u64().unwrap() < 128 << 20,
        "--disk-only saves no memory: {space}"
    );

    // A pull-mode backup job stays until aborted: libvirt would refuse a snapshot now.
    let dir = scratch("preflight-job");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap(); // QEMU binds the socket
    let job_xml = dir.join("backup.xml");
    std::fs::write(
        &job_xml,
        format!(
            "<domainbackup mode='pull'><server transport='unix' socket='{}'/>\
             <disks><disk name='vda' backup='yes' type='file'><scratch file='{}'/></disk></disks></domainbackup>",
            dir.join("nbd.sock").display(),
            dir.join("vda.scratch").display()
        ),
    )
    .unwrap();
    virsh(&["backup-begin", &guest.name, job_xml.to_str().unwrap()]);
    let recs = preflight(
        &[
            "--for",
            "backup",
            "--repo",
            dir.to_str().unwrap(),
            &guest.name,
        ],
        "",
    )
    .records();
    let r = find(&recs, "vm.job", &guest.name);
    assert_eq!(r["status"], "fail", "{r}");
    assert!(hint(r).contains("virsh domjobabort"), "{r}");
    virsh(&["domjobabort", &guest.name]);
    hv_testbench::remove_domain(&raw);
    let _ = std::fs::remove_file(&raw_disk);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn vms_about_to_be_backed_up_need_a_repository_with_room_for_them() {
    let conn = connect();
    let guest = GuestSpec::new("preflight backup").define(&conn);
    guest.start_ready();
    guest.write_mib(0, 8);
    let dir = scratch("preflight-backup");
    let repo = dir.join("repo");
    let backup_args = backup_repo(&dir, &repo);
    let shown = repo.to_str().unwrap();
    // How full the bench's disk already is is not this test's subject (CI's is past 85%).
    let check = |repo: &str| {
        preflight(
            &[
                "--for",
                "backup",
                "--disk-warn",
                "100",
                "--repo",
                repo,
                &guest.name,
            ],
            "",
        )
        .records()
    };
    let recs = check(shown);
    let r = find(&recs, "backup.repository", shown);
    assert_eq!(r["status"], "pass", "{r}");
    assert!(message(r).contains("0 backups"), "{r}");
    assert_fields(
        find(&recs, "vm.state", &guest.name),
        json!({"value": "running"}),
    );
    let first = find(&recs, "backup.space", &format!("{} {shown}", guest.name));
    assert_fields(first, json!({"status": "pass"}));
    assert!(
        first["value"].as_u64().unwrap() >= 8 << 20,
        "the first backup counts what the guest wrote: {first}"
    );
    assert!(message(first).contains("allocation"), "{first}");

    let mut args: Vec<&str> = vec!["create", &guest.name];
    args.extend(backup_args.iter().map(String::as_str));
    let made = hv(&bin("hv-backup"), &args, "");
    let stored = made.assert_ok().records()[0]["stored_bytes"]
        .as_u64()
        .expect("stored_bytes");
    let recs = check(shown);
    let next = find(&recs, "backup.space", &format!("{} {shown}", guest.name));
    assert_eq!(
        next["value"], stored,
        "the next backup is estimated from the last: {next}"
    );
    assert!(message(next).contains("recent backups"), "{next}");

    let tiny_dir = dir.join("tiny");
    let tiny = Tmpfs::mount(&tiny_dir, 4);
    let tiny_repo = tiny_dir.join("repo");
    let tiny_keys = dir.join("tiny-keys");
    std::fs::create_dir_all(&tiny_keys).unwrap();
    backup_repo(&tiny_keys, &tiny_repo);
    let recs = check(tiny_repo.to_str().unwrap());
    let r = find(
        &recs,
        "backup.space",
        &format!("{} {}", guest.name, tiny_repo.display()),
    );
    assert_eq!(
        r["status"], "fail",
        "8 MiB written do not fit in 4 MiB: {r}"
    );
    assert!(hint(r).contains("hv-backup prune"), "{r}");

    let recs = check(dir.to_str().unwrap());
    let r = find(&recs, "backup.repository", dir.to_str().unwrap());
    assert_fields(r, json!({"status": "fail"}));
    assert!(hint(r).contains("hv-backup init"), "{r}");
    assert!(recs.iter().all(|r| r["check"] != "backup.space"));
    drop(tiny);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_device_given_as_profiles_is_refused_not_read() {
    preflight(&["--profiles", "/dev/zero", "--virt-type", "qemu"], "")
        .assert_exit(2)
        .assert_stderr_contains("/dev/zero")
        .assert_stderr_contains("a device");
}
