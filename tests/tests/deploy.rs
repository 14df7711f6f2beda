//! The deployment files as a host uses them: systemd-analyze verifies the
//! plain units, Nix parses every .nix file and renders the same units from
//! nix/units.json as contrib/systemd/ holds, and the services' commands run
//! against the bench exactly as systemd would run them (its `$$` and `%%`
//! escapes undone, the environment file's variables set): the backup unit
//! creates the repository, backs up, prunes and collects garbage; the
//! health unit reports a change once and repairs with --fix; the snapshot
//! schedule takes what a VM's tag asks for, once; the failure hook calls
//! the user's command with the unit's name.

use hv_testbench::{
    assert_fields, bin, connect, hv, hv_as, run_prefix, scratch, GuestSpec, Run, URI,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The services with timers, as xtask/src/deploy.rs defines them.
const SERVICES: [&str; 7] = [
    "hv-backup",
    "hv-backup-sync",
    "hv-snap-prune",
    "hv-snap-schedule",
    "hv-health",
    "hv-metrics",
    "hv-iso-verify",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn unit_file(name: &str) -> String {
    std::fs::read_to_string(repo_root().join("contrib/systemd").join(name)).unwrap()
}

/// `Key=Value` lines of a unit, in order, repeated keys kept.
fn settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn all(unit: &str, key: &str) -> Vec<String> {
    settings(unit)
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect()
}

/// The `Environment="K=V"` defaults of a unit.
fn defaults(unit: &str) -> BTreeMap<String, String> {
    all(unit, "Environment")
        .iter()
        .map(|v| {
            let (k, v) = v.trim_matches('"').split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn bindir() -> String {
    Path::new(&bin("hv-ls"))
        .parent()
        .unwrap()
        .display()
        .to_string()
}

/// Runs one ExecStart= line as systemd would: its escapes undone, the
/// binaries from this build, `state_dir` in place of /var/lib/hv.
fn exec(line: &str, env: &BTreeMap<String, String>, state_dir: &Path, instance: &str) -> Run {
    let line = line
        .replace("/usr/local/bin", &bindir())
        .replace("/var/lib/hv/", &format!("{}/", state_dir.display()))
        .replace("$$", "$")
        .replace("%%", "%")
        .replace("%i", instance);
    let out = Command::new("bash")
        .args(["-c", &line])
        .envs(env)
        .env(
            "HV_CONNECT",
            env.get("HV_CONNECT").map_or(URI, String::as_str),
        )
        .output()
        .expect("run bash");
    Run::new(line, out)
}

#[test]
fn the_plain_units_pass_systemd_analyze_verify() {
    let dir = scratch("deploy-verify");
    for entry in std::fs::read_dir(repo_root().join("contrib/systemd")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            dir.join(path.file_name().unwrap()),
            text.replace("/usr/local/bin", &bindir()),
        )
        .unwrap();
    }
    let units: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        units.len(),
        SERVICES.len() * 2 + 2,
        "a service and a timer each, the failure hook and hv-boot"
    );
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let out = Run::new("systemd-analyze verify", out);
    out.assert_ok();
    assert_eq!(out.stderr(), "", "systemd-analyze verify warns");
    for unit in SERVICES {
        let timer = unit_file(&format!("{unit}.timer"));
        assert_eq!(all(&timer, "Persistent"), ["true"], "{unit}.timer");
        let service = unit_file(&format!("{unit}.service"));
        assert_eq!(all(&service, "OnFailure"), ["hv-failure@%N.service"]);
        assert_eq!(all(&service, "NoNewPrivileges"), ["yes"]);
        assert_eq!(all(&service, "ProtectSystem"), ["full"]);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn nix(args: &[&str]) -> Run {
    let out = Command::new("nix-instantiate")
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("nix-instantiate (Debian package nix-bin)");
    Run::new(format!("nix-instantiate {args:?}"), out)
}

#[test]
fn the_nix_files_parse_and_render_the_plain_units() {
    for file in [
        "flake.nix",
        "nix/default.nix",
        "nix/package.nix",
        "nix/module.nix",
        "nix/render.nix",
    ] {
        nix(&["--parse", file]).assert_ok();
    }
    let out = nix(&[
        "--eval",
        "--strict",
        "--json",
        "-E",
        "import ./nix/render.nix { bindir = \"/usr/local/bin\"; bash = \"/bin/bash\"; }",
    ]);
    out.assert_ok();
    let rendered: Value = serde_json::from_slice(&out.stdout).unwrap();
    for unit in SERVICES {
        let plain = unit_file(&format!("{unit}.service"));
        let nixos = &rendered["services"][unit];
        let config = nixos["serviceConfig"].as_object().unwrap();
        let list = |key: &str| -> Vec<String> {
            config[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(list("ExecStart"), all(&plain, "ExecStart"), "{unit}");
        assert_eq!(list("ExecStartPre"), all(&plain, "ExecStartPre"), "{unit}");
        for (key, value) in settings(&plain) {
            if key.starts_with("Exec")
                || [
                    "Environment",
                    "EnvironmentFile",
                    "Description",
                    "Documentation",
                    "After",
                    "OnFailure",
                ]
                .contains(&key.as_str())
            {
                continue;
            }
            assert_eq!(config[&key], value.as_str(), "{unit} {key}");
        }
        let env: BTreeMap<String, String> =
            serde_json::from_value(nixos["environment"].clone()).unwrap();
        assert_eq!(env, defaults(&plain), "{unit}");
        let timer = unit_file(&format!("{unit}.timer"));
        let timer_config = &rendered["timers"][unit]["timerConfig"];
        assert_eq!(
            timer_config["OnCalendar"],
            all(&timer, "OnCalendar")[0].as_str()
        );
        for key in ["RandomizedDelaySec", "AccuracySec"] {
            assert_eq!(
                timer_config
                    .get(key)
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                all(&timer, key).first().cloned(),
                "{unit}.timer {key}"
            );
        }
    }
    let hook = unit_file("hv-failure@.service");
    assert_eq!(
        rendered["services"]["hv-failure@"]["serviceConfig"]["ExecStart"],
        all(&hook, "ExecStart")[0].as_str()
    );
    let boot = unit_file("hv-boot.service");
    let nixos = &rendered["services"]["hv-boot"];
    for key in ["ExecStart", "ExecStop"] {
        assert_eq!(
            nixos["serviceConfig"][key],
            json!(all(&boot, key)),
            "hv-boot {key}"
        );
    }
    for key in ["RemainAfterExit", "TimeoutStopSec", "ProtectSystem"] {
        assert_eq!(
            nixos["serviceConfig"][key],
            all(&boot, key)[0].as_str(),
            "hv-boot {key}"
        );
    }
    assert_eq!(nixos["wantedBy"], json!(all(&boot, "WantedBy")));
    let env: BTreeMap<String, String> =
        serde_json::from_value(nixos["environment"].clone()).unwrap();
    assert_eq!(env, defaults(&boot), "hv-boot");
}

/// An age identity in `dir`, and the recipients file of its public key.
fn recipients(dir: &Path) -> PathBuf {
    let identity = dir.join("identity.txt");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&identity)
        .output()
        .expect("age-keygen");
    assert!(out.status.success());
    let public = Command::new("age-keygen")
        .arg("-y")
        .arg(&identity)
        .output()
        .unwrap();
    let file = dir.join("recipients.txt");
    std::fs::write(&file, &public.stdout).unwrap();
    file
}

#[test]
fn the_backup_units_create_the_repository_back_up_prune_collect_and_sync() {
    let conn = connect();
    let guest = GuestSpec::new("deploy-backup").define(&conn);
    let dir = scratch("deploy-backup");
    let unit = unit_file("hv-backup.service");
    let mut env = defaults(&unit);
    let repo = dir.join("repo");
    for (k, v) in [
        ("HV_BACKUP_REPO", repo.clone()),
        ("HV_BACKUP_RECIPIENTS_FILE", recipients(&dir)),
        ("HV_BACKUP_KEY_DIR", dir.join("keys")),
        ("HV_BACKUP_CACHE_DIR", dir.join("cache")),
        ("HV_BACKUP_SCRATCH_DIR", dir.join("scratch")),
    ] {
        env.insert(k.into(), v.display().to_string());
    }
    env.insert("HV_BACKUP_SELECT".into(), format!("--name {}", guest.name));
    let lines: Vec<String> = all(&unit, "ExecStartPre")
        .into_iter()
        .chain(all(&unit, "ExecStart"))
        .collect();
    assert_eq!(lines.len(), 4, "init, create, prune, gc");
    for _ in 0..2 {
        for line in &lines {
            exec(line, &env, &dir, "").assert_ok(); // a failure names the line
        }
    }
    let listed = Command::new(bin("hv-backup"))
        .args(["ls", "--format", "jsonl", "--repo"])
        .arg(&repo)
        .output()
        .unwrap();
    let backups = Run::new("hv-backup ls", listed).records();
    assert_eq!(
        backups.len(),
        1,
        "two runs the same day keep one daily backup: {backups:#?}"
    );
    assert_eq!(backups[0]["name"], guest.name.as_str());

    // The nightly sync makes the replica, then sends only what is new.
    let sync_unit = unit_file("hv-backup-sync.service");
    let mut sync_env = defaults(&sync_unit);
    let offsite = dir.join("off site");
    sync_env.insert("HV_BACKUP_REPO".into(), repo.display().to_string());
    sync_env.insert("HV_BACKUP_SYNC_TO".into(), offsite.display().to_string());
    let sync_lines: Vec<String> = all(&sync_unit, "ExecStartPre")
        .into_iter()
        .chain(all(&sync_unit, "ExecStart"))
        .collect();
    for round in 0..2 {
        let mut out = None;
        for line in &sync_lines {
            out = Some(exec(line, &sync_env, &dir, ""));
            out.as_ref().unwrap().assert_ok();
        }
        let recs = out.unwrap().records();
        assert_eq!(recs.len(), 1, "{recs:?}");
        assert_eq!(recs[0]["id"], backups[0]["id"]);
        assert_eq!(recs[0]["changed"], round == 0, "{recs:?}");
        assert_eq!(recs[0]["verified"], true, "the default arguments verify");
    }
    sync_env.remove("HV_BACKUP_SYNC_TO");
    exec(&sync_lines[0], &sync_env, &dir, "")
        .assert_exit(2)
        .assert_stderr_contains("set HV_BACKUP_REPO and HV_BACKUP_SYNC_TO");

    env.remove("HV_BACKUP_REPO");
    exec(&lines[0], &env, &dir, "")
        .assert_exit(2)
        .assert_stderr_contains("set HV_BACKUP_REPO");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_health_unit_reports_a_change_once_and_fails_only_when_hv_health_cannot_run() {
    let conn = connect();
    let guest = GuestSpec::new("deploy-health").autostart().define(&conn);
    let dir = scratch("deploy-health");
    let unit = unit_file("hv-health.service");
    let mut env = defaults(&unit);
    let changes = dir.join("changes.jsonl");
    env.insert("HV_HEALTH_ARGS".into(), guest.name.clone());
    env.insert(
        "HV_ON_CHANGE".into(),
        format!("tee -a {}", changes.display()),
    );
    let line = &all(&unit, "ExecStart")[0];
    let out = exec(line, &env, &dir, "");
    out.assert_ok();
    let first = std::fs::read_to_string(&changes).unwrap();
    let records: Vec<Value> = first
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let autostart = records
        .iter()
        .find(|r| r["check"] == "vm.autostart")
        .unwrap_or_else(|| panic!("{records:#?}"));
    assert_eq!(autostart["change"], "new");
    assert_eq!(autostart["name"], guest.name.as_str());
    assert!(
        out.stdout().contains("vm.autostart"),
        "and to the journal: {out:?}"
    );

    exec(line, &env, &dir, "").assert_ok();
    assert_eq!(
        std::fs::read_to_string(&changes).unwrap(),
        first,
        "nothing changed, nothing said"
    );

    // With --fix, as services.hv.health.fix adds it: the VM is started,
    // and the repair is said as a change.
    env.insert(
        "HV_HEALTH_ARGS".into(),
        format!("{} --fix vm.crashed,vm.autostart", guest.name),
    );
    exec(line, &env, &dir, "").assert_ok();
    let all_changes = std::fs::read_to_string(&changes).unwrap();
    let repairs: Vec<Value> = all_changes[first.len()..]
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["action"] == "fix")
        .collect();
    assert_eq!(repairs.len(), 1, "{all_changes}");
    assert_eq!(repairs[0]["did"], "started", "{all_changes}");
    assert_eq!(guest.virsh_domstate(), "running (booted)");

    env.insert(
        "HV_CONNECT".into(),
        "qemu:///system?socket=/nonexistent/sock".into(),
    );
    let out = exec(line, &env, &dir, "");
    assert_ne!(
        out.code(),
        Some(0),
        "libvirt unreachable fails the unit: {out:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_snapshot_schedule_unit_takes_what_a_tag_asks_for_once() {
    let conn = connect();
    let guest = GuestSpec::new("deploy-schedule").define(&conn);
    hv(&bin("hv-tag"), &["--add", "snap:daily", &guest.name], "").assert_ok();
    let dir = scratch("deploy-schedule");
    let unit = unit_file("hv-snap-schedule.service");
    let env = defaults(&unit);
    assert_eq!(env["HV_SNAP_POLICIES"], "", "the built-in policies");
    let line = &all(&unit, "ExecStart")[0];
    let mine = |out: &Run| -> Value {
        let found: Vec<Value> = out
            .records()
            .into_iter()
            .filter(|r| r["uuid"] == guest.uuid.as_str())
            .collect();
        assert_eq!(found.len(), 1, "{out:?}");
        found[0].clone()
    };
    let first = mine(exec(line, &env, &dir, "").assert_ok());
    assert_fields(
        &first,
        json!({"action": "schedule", "ok": true, "changed": true}),
    );
    let daily = &first["policies"][0];
    assert_eq!(daily["policy"], "daily", "{first}");
    assert!(
        daily["taken"]["snapshot"]
            .as_str()
            .is_some_and(|s| s.starts_with("daily-")),
        "{first}"
    );
    // The timer's next run, 15 minutes on: the daily one is not due.
    let again = mine(exec(line, &env, &dir, "").assert_ok());
    assert_fields(&again, json!({"changed": false}));
    assert_eq!(again["policies"][0]["taken"], Value::Null);
    let timer = unit_file("hv-snap-schedule.timer");
    assert_eq!(all(&timer, "OnCalendar"), ["*:0/15"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// hv-boot.service as the host's boot and shutdown run it: the VMs
/// tagged boot:N start in their order, and stop in reverse.
#[test]
fn the_boot_unit_starts_the_ordered_vms_and_its_stop_stops_them() {
    let conn = connect();
    let early = GuestSpec::new("deploy-boot early").define(&conn);
    let late = GuestSpec::new("deploy-boot late").define(&conn);
    let left = GuestSpec::new("deploy-boot untagged").define(&conn);
    hv(&bin("hv-tag"), &["--add", "boot:1", &early.name], "").assert_ok();
    hv(&bin("hv-tag"), &["--add", "boot:5", &late.name], "").assert_ok();
    let dir = scratch("deploy-boot");
    let unit = unit_file("hv-boot.service");
    assert_eq!(all(&unit, "WantedBy"), ["multi-user.target"]);
    assert_eq!(all(&unit, "RemainAfterExit"), ["yes"]);
    let mut env = defaults(&unit);
    // Only this test's VMs (others on the bench may carry boot tags).
    env.insert(
        "HV_BOOT_SELECT".into(),
        // Split by bash as the unit splits it: no quotes.
        format!("--name {}deploy-boot*", run_prefix()),
    );
    let started = exec(&all(&unit, "ExecStart")[0], &env, &dir, "");
    assert_eq!(
        started.assert_ok().names(),
        [early.name.clone(), late.name.clone()]
    );
    started.assert_each(json!({"action": "start", "ok": true, "state": "running"}));
    assert!(
        left.virsh_domstate().starts_with("shut off"),
        "untagged VMs are left alone"
    );
    let stopped = exec(&all(&unit, "ExecStop")[0], &env, &dir, "");
    assert_eq!(
        stopped.assert_ok().names(),
        [late.name.clone(), early.name.clone()]
    );
    stopped.assert_each(json!({"action": "stop", "ok": true, "state": "shutoff"}));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_failure_hook_calls_the_users_command_with_the_unit() {
    let dir = scratch("deploy-hook");
    let hook = dir.join("hook.sh");
    let told = dir.join("told");
    std::fs::write(
        &hook,
        format!("#!/bin/sh\necho \"$1\" > {}\n", told.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let line = &all(&unit_file("hv-failure@.service"), "ExecStart")[0];
    let mut env = BTreeMap::new();
    env.insert("HV_ON_FAILURE".to_owned(), hook.display().to_string());
    exec(line, &env, &dir, "hv-backup.service").assert_ok();
    assert_eq!(
        std::fs::read_to_string(&told).unwrap(),
        "hv-backup.service\n"
    );
    exec(line, &BTreeMap::new(), &dir, "hv-backup.service")
        .assert_stderr_contains("set HV_ON_FAILURE");
    let _ = std::fs::remove_dir_all(&dir);
}

/// docs/monitoring/hv-notify as HV_ON_FAILURE: the failed unit reaches a
/// webhook as an HTTP POST (curl to a listener on loopback).
#[test]
fn the_notify_script_posts_the_failed_unit_to_a_webhook() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // Headers, then the body its Content-Length announces.
        loop {
            let n = conn.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if got.len() >= end + 4 + length || n == 0 {
                    break;
                }
            }
        }
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        String::from_utf8_lossy(&got).to_string()
    });
    let dir = scratch("deploy-notify");
    let script = repo_root().join("docs/monitoring/hv-notify");
    let line = &all(&unit_file("hv-failure@.service"), "ExecStart")[0];
    let mut env = BTreeMap::new();
    env.insert(
        "HV_ON_FAILURE".to_owned(),
        format!("/bin/sh {}", script.display()),
    );
    env.insert(
        "HV_NOTIFY_URL".to_owned(),
        format!("http://127.0.0.1:{port}/alert"),
    );
    exec(line, &env, &dir, "hv-backup.service").assert_ok();
    let request = server.join().unwrap();
    assert!(request.starts_with("POST /alert "), "{request}");
    assert!(
        request.contains("hv-backup.service failed on "),
        "{request}"
    );
    // Told nobody: it says so and fails, for the journal.
    env.remove("HV_NOTIFY_URL");
    exec(line, &env, &dir, "hv-backup.service")
        .assert_exit(1)
        .assert_stderr_contains("nobody was told");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A private libvirtd whose every call libvirt's polkit access driver checks
/// against hv's generated rules (tests/bench/roles.sh has why it is private).
/// Dropping it destroys its domains and stops it.
struct RoleDaemon {
    dir: PathBuf,
    uri: String,
}

impl RoleDaemon {
    fn start(label: &str) -> RoleDaemon {
        let dir = scratch(label);
        let out = Command::new("bash")
            .arg(repo_root().join("tests/bench/roles.sh"))
            .arg("start")
            .arg(&dir)
            .arg(repo_root().join("contrib/polkit/50-hv.rules"))
            .output()
            .expect("run tests/bench/roles.sh");
        let out = Run::new("tests/bench/roles.sh start", out);
        let daemon = RoleDaemon {
            uri: out.stdout().trim().to_owned(),
            dir,
        };
        out.assert_ok();
        daemon
    }

    /// Defines (as root) a VM with one small qcow2 disk and no OS: QEMU runs
    /// it, but nothing inside answers ACPI.
    fn define(&self, name: &str) {
        use std::os::unix::fs::PermissionsExt;
        let open = std::fs::Permissions::from_mode(0o777);
        std::fs::set_permissions(&self.dir, open).unwrap();
        let disk = self.dir.join("disk.qcow2");
        let made = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&disk)
            .arg("16M")
            .status()
            .unwrap();
        assert!(made.success());
        let xml = format!(
            "<domain type='{}'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64' machine='q35'>hvm</type></os><devices>\
             <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
             <source file='{}'/><target dev='vda' bus='virtio'/></disk>\
             <serial type='pty'/></devices></domain>",
            hv_testbench::domain_type(),
            disk.display()
        );
        let conn = virt::connect::Connect::open(Some(&self.uri)).unwrap();
        conn.define_domain_xml(&xml).unwrap();
    }

    fn is_defined(&self, name: &str) -> bool {
        Command::new("virsh")
            .args(["-c", &self.uri, "dominfo", name])
            .output()
            .unwrap()
            .status
            .success()
    }

    /// Runs a built hv command as `user` against this daemon.
    fn hv_as(&self, user: &str, command: &str, args: &[&str]) -> Run {
        let mut full = args.to_vec();
        full.extend(["-c", self.uri.as_str()]);
        hv_as(user, &bin(command), &full)
    }
}

impl Drop for RoleDaemon {
    fn drop(&mut self) {
        let virsh = |args: &[&str]| {
            Command::new("virsh")
                .args(["-c", &self.uri])
                .args(args)
                .output()
        };
        if let Ok(out) = virsh(&["list", "--all", "--name"]) {
            for name in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = virsh(&["destroy", name]);
                let _ = virsh(&["undefine", name, "--snapshots-metadata"]);
            }
        }
        let _ = Command::new("bash")
            .arg(repo_root().join("tests/bench/roles.sh"))
            .arg("stop")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A refusal is exit 3 with a permission_denied record that names the
/// polkit action and the role that has it.
#[track_caller]
fn assert_denied(out: &Run, action: &str, what: &str) {
    let records = out.assert_exit(3).records();
    let error = &records
        .first()
        .unwrap_or_else(|| panic!("{what}: no record: {out:?}"))["error"];
    assert_fields(error, json!({"code": "permission_denied"}));
    let message = error["message"].as_str().unwrap();
    assert!(message.contains(action), "{what} names {action}: {message}");
    assert!(
        message.contains("hv-admin"),
        "{what} names the role: {message}"
    );
}

#[test]
fn polkit_roles_let_operators_run_vms_and_only_admins_remove_them() {
    let daemon = RoleDaemon::start("roles");
    let name = format!("{}role", run_prefix());
    daemon.define(&name);
    let operator = "hv-test-operator";

    let listed = daemon.hv_as(operator, "hv-ls", &["--format", "jsonl"]);
    assert_fields(&listed.assert_ok().records()[0], json!({"name": name}));
    let snap = daemon.hv_as(operator, "hv-snap", &["create", &name, "--name", "before"]);
    // Marking it as hv's needs domain write + save: said, not silent.
    assert_fields(&snap.assert_ok().records()[0], json!({"hv_made": false}));
    snap.assert_stderr_contains("hv-snap prune");
    // Tags and autostart are domain write + save, which would let an
    // operator define any VM: admin only.
    for (command, args) in [
        ("hv-tag", vec!["--add", "web"]),
        ("hv-autostart", vec!["on"]),
    ] {
        let refused = daemon.hv_as(operator, command, &[&args[..], &[name.as_str()]].concat());
        assert_denied(
            &refused,
            "org.libvirt.api.domain.save",
            &format!("operator {command}"),
        );
    }
    daemon.hv_as(operator, "hv-start", &[&name]).assert_ok();
    // An operator may open its serial console (open-device); nothing in
    // the VM prints, so the session ends at its timeout.
    daemon
        .hv_as(operator, "hv-console", &[&name, "--timeout", "2s"])
        .assert_ok();
    daemon
        .hv_as("nobody", "hv-console", &[&name, "--timeout", "2s"])
        .assert_exit(3)
        .assert_stderr_contains("polkit");
    // Nothing in the VM answers ACPI: the graceful request (init-control)
    // and the forced stop after the timeout (stop) are both the operator's.
    let stopped = daemon.hv_as(operator, "hv-stop", &["--timeout", "1", &name]);
    assert_fields(
        &stopped.assert_ok().records()[0],
        json!({"state": "shutoff", "how": "forced"}),
    );

    let refused = daemon.hv_as(operator, "hv-rm", &["--yes", &name]);
    assert_denied(&refused, "org.libvirt.api.domain.delete", "operator hv-rm");
    assert!(
        daemon.is_defined(&name),
        "a refused hv-rm left {name} defined"
    );

    daemon
        .hv_as("nobody", "hv-start", &[&name])
        .assert_exit(3)
        .assert_stderr_contains("polkit");

    let admin = "hv-test-admin";
    daemon
        .hv_as(admin, "hv-tag", &["--add", "web", &name])
        .assert_ok();
    daemon.hv_as(admin, "hv-rm", &["--yes", &name]).assert_ok();
    assert!(!daemon.is_defined(&name));
}

/// The NixOS module's bridges, networks and pools (nix/host.nix): bridges
/// become systemd-networkd files, networks and pools the specs hv-net and
/// hv-pool define at boot, which those commands take as they are, and
/// take again at the next boot without failing (`--keep-existing`).
#[test]
fn the_nix_module_renders_bridges_networks_and_pools() {
    nix(&["--parse", "nix/host.nix"]).assert_ok();
    let out = nix(&[
        "--eval",
        "--strict",
        "--json",
        "-E",
        "import ./nix/host.nix { bindir = \"/b\"; \
           bridges = { br0 = { interfaces = [ \"enp3s0\" \"enp4s0\" ]; mtu = 9000; dhcp = true; }; }; \
           networks = { lab = { type = \"nat\"; address = \"10.234.0.1/24\"; dhcp = null; bridge = null; autostart = true; }; \
                        lan = { type = \"bridge\"; address = null; dhcp = null; bridge = \"br0\"; autostart = true; }; }; \
           pools = { images = { path = \"/srv/images\"; autostart = true; }; }; }",
    ]);
    let host: Value = serde_json::from_slice(&out.assert_ok().stdout).unwrap();
    assert_eq!(
        host["network"]["netdevs"]["20-br0"]["netdevConfig"],
        json!({"Name": "br0", "Kind": "bridge", "MTUBytes": "9000"})
    );
    for port in ["enp3s0", "enp4s0"] {
        assert_eq!(
            host["network"]["networks"][format!("30-br0-{port}")]["networkConfig"]["Bridge"],
            "br0"
        );
    }
    assert_eq!(
        host["setup"],
        json!([
            "/b/hv-net define --keep-existing /etc/hv/networks.jsonl",
            "/b/hv-pool define --keep-existing /etc/hv/pools.jsonl"
        ])
    );
    // The specs are what hv-net and hv-pool take.
    let net_specs = host["networkSpecs"].as_str().unwrap();
    let nets = hv_testbench::hv(
        &bin("hv-net"),
        &["define", "--dry-run"],
        &format!("{net_specs}\n"),
    );
    let recs = nets.assert_ok().records();
    assert_eq!(recs.len(), 2, "{nets:?}");
    assert!(recs[1]["xml"]
        .as_str()
        .unwrap()
        .contains("<forward mode='bridge'/><bridge name='br0'/>"));
    let dir = scratch("nix-pools");
    let name = format!("{}nixpool", run_prefix());
    let pool_spec =
        serde_json::json!({"name": name, "path": dir.join("images"), "autostart": true});
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            if let Ok(p) = hv_testbench::connect().lookup_storage_pool_by_name(&self.0) {
                let _ = p.destroy();
                let _ = p.undefine();
            }
        }
    }
    let _gone = Gone(name.clone());
    let file = dir.join("pools.jsonl");
    std::fs::write(&file, format!("{pool_spec}\n")).unwrap();
    let args = ["define", "--keep-existing", file.to_str().unwrap()];
    let first = hv_testbench::hv(&bin("hv-pool"), &args, "")
        .assert_ok()
        .one_record();
    assert_eq!(first["changed"], true);
    // The next boot: the pool is there, and is left as it is.
    let again = hv_testbench::hv(&bin("hv-pool"), &args, "")
        .assert_ok()
        .one_record();
    assert_eq!(
        (again["ok"].as_bool(), again["changed"].as_bool()),
        (Some(true), Some(false))
    );
    let _ = std::fs::remove_dir_all(dir);
}
