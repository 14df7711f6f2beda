//! Several libvirt hosts at once (docs/records.md, Hosts): real libvirtd
//! instances in their own namespaces, reached over a real sshd
//! (tests/bench/hosts.sh), listed and acted on in one run.

use hv_testbench::{hosts, pipeline, run_prefix, scratch, GuestSpec};
use serde_json::Value;
use std::time::{Duration, Instant};

fn by_host<'a>(records: &'a [Value], host: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["host"] == host).collect()
}

#[test]
fn bench_records_know_their_host_and_go_back_to_it() {
    let hosts = hosts(2);
    let dir = scratch("hosts-route");
    let file = hosts.file(&dir, &[]);
    let (c1, c2) = (hosts.connect("h1"), hosts.connect("h2"));
    // The same name on two hosts is two VMs.
    let same1 = GuestSpec::new("route-same")
        .on_host(&hosts, "h1")
        .define(&c1);
    let same2 = GuestSpec::new("route-same")
        .on_host(&hosts, "h2")
        .define(&c2);
    let other = GuestSpec::new("route-other")
        .on_host(&hosts, "h1")
        .define(&c1);
    same1.start_ready();
    same2.start_ready();
    // Names of this test only: the other tests of this process share the prefix.
    let glob = format!("{}route-*", run_prefix());
    let f = file.display();

    let listed = pipeline(&format!("hv-ls --hosts {f} --name '{glob}'"));
    let recs = listed.assert_ok().records();
    assert_eq!(recs.len(), 3, "{listed:?}");
    let on1: Vec<(&str, &str)> = by_host(&recs, "h1")
        .iter()
        .map(|r| (r["uuid"].as_str().unwrap(), r["state"].as_str().unwrap()))
        .collect();
    assert!(
        on1.contains(&(same1.uuid.as_str(), "running")),
        "{listed:?}"
    );
    assert!(
        on1.contains(&(other.uuid.as_str(), "shutoff")),
        "{listed:?}"
    );
    let on2 = by_host(&recs, "h2");
    assert_eq!(on2.len(), 1, "{listed:?}");
    assert_eq!(on2[0]["uuid"], same2.uuid.as_str());
    assert_eq!(
        hv_testbench::keys(&recs[0])[..3],
        ["name", "uuid", "host"],
        "host comes right after the VM's name and uuid"
    );

    // h1's records, piped to a stop over both hosts, stop h1's VM only,
    // though h2 has one of the same name.
    let stopped = pipeline(&format!(
        "hv-ls --hosts {f} -c h1 --name '{}route-same' | hv-stop --hosts {f} --force",
        run_prefix()
    ));
    let rec = stopped.assert_ok().one_record();
    assert_eq!(rec["host"], "h1", "{stopped:?}");
    assert_eq!(rec["uuid"], same1.uuid.as_str(), "{stopped:?}");
    assert!(!same1.domain.is_active().unwrap(), "h1's VM is stopped");
    assert!(
        same2.domain.is_active().unwrap(),
        "h2's VM of the same name runs on"
    );

    // A bare name over several hosts is found on each; with no host in a
    // record and several hosts, the record is refused rather than guessed.
    let both = pipeline(&format!("hv-ls --hosts {f} '{}route-same'", run_prefix()));
    assert_eq!(both.assert_ok().records().len(), 2, "{both:?}");
    let refused = pipeline(&format!(
        "printf '{{\"uuid\":\"{}\"}}\\n' | hv-stop --hosts {f} --force",
        same2.uuid
    ));
    refused.assert_exit(2);
    assert_eq!(
        refused.one_record()["error"]["code"],
        "usage",
        "{refused:?}"
    );
    assert!(
        hv_testbench::error_message(&refused.one_record()).contains("host"),
        "says what is missing: {refused:?}"
    );
    assert!(
        same2.domain.is_active().unwrap(),
        "nothing was stopped by a guess"
    );

    // hv-rm --remove-storage deletes files where it runs: for h1's VM it
    // would delete this machine's file of the same path (a decoy here),
    // so it refuses and does nothing to that VM.
    let decoy =
        std::path::Path::new(hv_testbench::HOST_IMAGES).join(other.disk.file_name().unwrap());
    std::fs::write(&decoy, b"this machine's own file").unwrap();
    let rm = pipeline(&format!(
        "hv-rm --hosts {f} -c h1 --remove-storage --yes '{}route-other'",
        run_prefix()
    ));
    let refused = rm.assert_failed("unsupported").one_record();
    assert!(
        hv_testbench::error_message(&refused).contains("run it there"),
        "{rm:?}"
    );
    assert_eq!(std::fs::read(&decoy).unwrap(), b"this machine's own file");
    assert!(
        c1.lookup_domain_by_uuid_string(&other.uuid).is_ok(),
        "still defined on h1"
    );
    std::fs::remove_file(&decoy).unwrap();

    // With no host named, records stay as they were: no host field.
    let local = GuestSpec::new("route-local").define(&hv_testbench::connect());
    let plain = pipeline(&format!("hv-ls '{}'", local.name));
    assert_eq!(plain.assert_ok().one_record()["uuid"], local.uuid.as_str());
    assert!(!plain.stdout().contains("\"host\""), "{plain:?}");

    // An action given a name looks for it on every host: it acts where
    // the one VM of that name is, and refuses a name two hosts have.
    let tagged = pipeline(&format!(
        "hv-tag --hosts {f} --add moved '{}route-other'",
        run_prefix()
    ));
    let rec = tagged.assert_ok().one_record();
    assert_eq!(
        (rec["host"].as_str(), rec["uuid"].as_str()),
        (Some("h1"), Some(other.uuid.as_str()))
    );
    let ambiguous = pipeline(&format!(
        "hv-start --hosts {f} '{}route-same'",
        run_prefix()
    ));
    ambiguous.assert_exit(2);
    let message = hv_testbench::error_message(&ambiguous.one_record());
    assert!(
        message.contains("is on several hosts (h1, h2)"),
        "{message}"
    );
    assert!(
        !same1.domain.is_active().unwrap(),
        "nothing was started by a guess"
    );
    let nowhere = pipeline(&format!(
        "hv-start --hosts {f} '{}route-none'",
        run_prefix()
    ));
    nowhere.assert_failed("not_found");

    // A table sorts by host and says which; CSV has a host column.
    let table = pipeline(&format!("hv-ls --hosts {f} --name '{glob}' --format table"));
    let text = table.assert_ok().stdout();
    let hosts_col: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(hosts_col, ["h1", "h1", "h2"], "{text}");
    let csv = pipeline(&format!("hv-ls --hosts {f} --name '{glob}' --format csv"));
    assert!(
        csv.assert_ok()
            .stdout()
            .lines()
            .next()
            .unwrap()
            .starts_with("name,uuid,host,"),
        "{csv:?}"
    );
}

#[test]
fn bench_an_unreachable_host_is_one_record_and_the_others_go_on() {
    let hosts = hosts(3);
    let dir = scratch("hosts-down");
    // h9 has an address on the bench's bridge and nobody behind it; a
    // listener on loopback accepts and never answers (a hung host).
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_uri = format!(
        "qemu+ssh://root@127.0.0.1:{}/system?command={}/ssh",
        hung.local_addr().unwrap().port(),
        hv_testbench::HOSTS_DIR
    );
    let file = hosts.file(
        &dir,
        &[
            &format!(
                "h9 qemu+ssh://root@10.231.0.19/system?command={}/ssh",
                hv_testbench::HOSTS_DIR
            ),
            &format!("hung {hung_uri}"),
        ],
    );
    let f = file.display();
    let guest = GuestSpec::new("listed")
        .on_host(&hosts, "h1")
        .define(&hosts.connect("h1"));
    // h3 answers ssh, but its libvirtd is down.
    hosts.daemon(3, "stop");
    struct Restart<'a>(&'a hv_testbench::Hosts);
    impl Drop for Restart<'_> {
        fn drop(&mut self) {
            self.0.daemon(3, "start");
        }
    }
    let _restart = Restart(&hosts);

    let began = Instant::now();
    let out = pipeline(&format!(
        "hv-ls --hosts {f} --connect-timeout 5s --name '{}listed'",
        run_prefix()
    ));
    let took = began.elapsed();
    out.assert_exit(1);
    let recs = out.records();
    let listed = by_host(&recs, "h1");
    assert_eq!(listed.len(), 1, "{out:?}");
    assert_eq!(listed[0]["uuid"], guest.uuid.as_str());
    for host in ["h3", "h9", "hung"] {
        let failed = by_host(&recs, host);
        assert_eq!(failed.len(), 1, "one record for {host}: {out:?}");
        assert_eq!(failed[0]["ok"], false);
        assert_eq!(failed[0]["error"]["code"], "unreachable", "{out:?}");
        let message = failed[0]["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("host {host}: ")), "{message}");
        assert!(
            message.contains("without a prompt"),
            "names the fix: {message}"
        );
    }
    assert!(by_host(&recs, "h2").is_empty(), "h2 has no VM of this run");
    // The hung host holds back nobody: h1's record comes before its, and
    // the run ends at the connection timeout, not ssh's own.
    let at = |host: &str| recs.iter().position(|r| r["host"] == host).unwrap();
    assert!(at("h1") < at("hung"), "{out:?}");
    assert!(took < Duration::from_secs(9), "took {took:?}");

    // hv-health checks each host and says which; h3's daemon is down.
    let health = pipeline(&format!(
        "hv-health --hosts {f} -c h1 -c h3 --host-only --connect-timeout 5s --format jsonl"
    ));
    health.assert_exit(1);
    let checks = health.records();
    let reach = |host: &str| {
        checks
            .iter()
            .find(|c| c["check"] == "libvirt.reachable" && c["host"] == host)
            .unwrap_or_else(|| panic!("no libvirt.reachable for {host}: {health:?}"))["status"]
            .clone()
    };
    assert_eq!((reach("h1"), reach("h3")), ("pass".into(), "fail".into()));
    assert!(
        checks
            .iter()
            .filter(|c| c["check"] == "pool.space")
            .all(|c| c["host"] == "h1"),
        "h1's pools, said to be h1's: {health:?}"
    );
    let none = pipeline(&format!(
        "hv-health --hosts {f} -c h3 -c h9 --host-only --connect-timeout 5s --format jsonl"
    ));
    none.assert_exit(3);

    // No host reached at all: exit 3.
    let none = pipeline(&format!(
        "hv-ls --hosts {f} -c h3 -c h9 --connect-timeout 5s"
    ));
    none.assert_exit(3);
    assert_eq!(none.records().len(), 2, "{none:?}");
}

/// The writer's count on the guest's disk, as the guest reads it.
fn counter(channel: &std::path::Path, name: &str) -> u64 {
    let answer = hv_testbench::command_at(channel, name, "counter");
    answer
        .strip_prefix("counter ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("guest {name}: {answer:?}"))
}

/// Removes the moved guest from its new host when the test ends.
struct Moved(virt::domain::Domain);
impl Drop for Moved {
    fn drop(&mut self) {
        hv_testbench::remove_domain(&self.0);
    }
}

#[test]
fn bench_a_writing_guest_moves_live_with_its_disk() {
    let hosts = hosts(2);
    let dir = scratch("migrate");
    let f = hosts.file(&dir, &[]);
    let (c1, c2) = (hosts.connect("h1"), hosts.connect("h2"));
    let guest = GuestSpec::new("mover")
        .writer()
        .on_host(&hosts, "h1")
        .define(&c1);
    guest.start_ready();
    let before = counter(&guest.channel, &guest.name);

    // hv-preflight says the move can work: h2 answers, has the memory,
    // can give the guest its CPU, and has a pool to copy its disk into.
    let pre = pipeline(&format!(
        "hv-preflight --hosts {} -c h1 --for migrate --to h2 '{}' --format jsonl",
        f.display(),
        guest.name
    ));
    let checks = pre.assert_ok().records();
    for id in [
        "migrate.destination",
        "migrate.name_free",
        "migrate.memory",
        "migrate.cpu",
        "migrate.disk",
    ] {
        let c = checks
            .iter()
            .find(|c| c["check"] == id)
            .unwrap_or_else(|| panic!("no {id}: {pre:?}"));
        assert_ne!(c["status"], "fail", "{c}");
    }

    let out = pipeline(&format!(
        "hv-ls --hosts {} -c h1 '{}' | hv-migrate --hosts {} --to h2 --copy-storage",
        f.display(),
        guest.name,
        f.display()
    ));
    let rec = out.assert_ok().one_record();
    let there = c2
        .lookup_domain_by_uuid_string(&guest.uuid)
        .unwrap_or_else(|e| panic!("h2 has it: {e}; {out:?}"));
    let _cleanup = Moved(there.clone());
    hv_testbench::assert_fields(
        &rec,
        serde_json::json!({
            "name": guest.name, "uuid": guest.uuid, "host": "h2", "action": "migrate",
            "ok": true, "changed": true, "how": "live", "from": "h1", "to": "h2",
            "copy_storage": true, "source_kept": false, "state": "running",
        }),
    );
    assert!(rec["downtime_ms"].is_u64(), "QEMU's downtime: {rec}");
    assert!(rec["bytes"].as_u64().unwrap() > 0, "{rec}");
    assert!(there.is_active().unwrap() && there.is_persistent().unwrap());
    assert!(
        c1.lookup_domain_by_uuid_string(&guest.uuid).is_err(),
        "the source no longer defines it"
    );

    // It runs on at h2, from h2's own copy of its disk: its writer goes on
    // counting, and what it reads is what h2's image file holds.
    let file = |p: &std::path::Path| hosts.images("h2").join(p.file_name().unwrap());
    let (channel, disk) = (file(&guest.channel), file(&guest.disk));
    let after = counter(&channel, &guest.name);
    assert!(after > before, "counted on: {before} then {after}");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        counter(&channel, &guest.name) > after,
        "keeps counting on h2"
    );
    assert_eq!(
        hv_testbench::command_at(&channel, &guest.name, "hold"),
        "held"
    );
    let seen = hv_testbench::command_at(&channel, &guest.name, "sum");
    there.destroy().unwrap();
    assert_eq!(
        seen,
        format!("sum {}", hv_testbench::image_sha256(&disk, None)),
        "h2's disk holds what the guest wrote"
    );
    // Asked to go where it already is: nothing to do.
    let stay = pipeline(&format!(
        "hv-migrate --hosts {} -c h2 --to h2 '{}'",
        f.display(),
        guest.name
    ));
    let rec2 = stay.assert_ok().one_record();
    assert_eq!(
        (rec2["changed"].as_bool(), rec2["host"].as_str()),
        (Some(false), Some("h2"))
    );

    // Offline, back to h1: its disk there is not in h1's pool until the
    // pool is refreshed, so the move is refused rather than leaving a
    // definition without its disk; then it moves.
    let back = format!(
        "hv-migrate --hosts {} -c h2 --to h1 '{}'",
        f.display(),
        guest.name
    );
    let refused = pipeline(&back);
    let why = hv_testbench::error_message(&refused.assert_failed("invalid_state").one_record());
    assert!(why.contains("is in no storage pool of h1"), "{why}");
    assert!(
        c2.lookup_domain_by_uuid_string(&guest.uuid).is_ok(),
        "still on h2"
    );
    c1.lookup_storage_pool_by_name("default")
        .unwrap()
        .refresh(0)
        .unwrap();
    let offline = pipeline(&back).assert_ok().one_record();
    assert_eq!(
        (offline["how"].as_str(), offline["host"].as_str()),
        (Some("offline"), Some("h1"))
    );
    assert!(
        c2.lookup_domain_by_uuid_string(&guest.uuid).is_err(),
        "gone from h2"
    );
    let home = c1.lookup_domain_by_uuid_string(&guest.uuid).unwrap();
    assert!(!home.is_active().unwrap() && home.is_persistent().unwrap());

    // The record says where it is: piped on, it finds it there.
    let listed = pipeline(&format!(
        "printf '%s\\n' '{}' | hv-ls --hosts {}",
        serde_json::to_string(&offline)
            .unwrap()
            .replace('\'', "'\\''"),
        f.display()
    ));
    let again = listed.assert_ok().one_record();
    assert_eq!(
        (again["host"].as_str(), again["state"].as_str()),
        (Some("h1"), Some("shutoff"))
    );
}

#[test]
fn bench_a_migration_cut_short_leaves_the_guest_running_on_the_source() {
    let hosts = hosts(2);
    let dir = scratch("migrate-abort");
    let f = hosts.file(&dir, &[]);
    let (c1, c2) = (hosts.connect("h1"), hosts.connect("h2"));
    let guest = GuestSpec::new("stays")
        .writer()
        .on_host(&hosts, "h1")
        .define(&c1);
    guest.start_ready();
    // At 1 MiB/s its 128 MiB of memory would take two minutes.
    let out = pipeline(&format!(
        "hv-migrate --hosts {} -c h1 --to h2 --copy-storage --bandwidth 1 --timeout 3s '{}'",
        f.display(),
        guest.name
    ));
    let rec = out.assert_failed("timeout").one_record();
    let message = hv_testbench::error_message(&rec);
    assert!(message.contains("runs on, on the source"), "{message}");
    assert_eq!(rec["host"], "h1", "it is still on h1: {rec}");
    assert!(guest.domain.is_active().unwrap(), "still running on h1");
    assert!(
        c2.lookup_domain_by_uuid_string(&guest.uuid).is_err(),
        "nothing is left half-defined on h2"
    );
    let stem = guest.disk.file_name().unwrap().to_owned();
    assert!(
        !hosts.images("h2").join(&stem).exists(),
        "the copy begun on h2 is removed"
    );
    let before = counter(&guest.channel, &guest.name);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        counter(&guest.channel, &guest.name) > before,
        "and still writing"
    );

    // SIGTERM (systemctl stop) part-way: aborted the same way.
    let term = pipeline(&format!(
        "hv-migrate --hosts {} -c h1 --to h2 --copy-storage --bandwidth 1 '{}' & pid=$!; sleep 3; kill -TERM $pid; wait $pid",
        f.display(),
        guest.name
    ));
    term.assert_exit(143);
    let rec = term.one_record();
    assert_eq!(rec["error"]["code"], "interrupted", "{term:?}");
    assert!(
        hv_testbench::error_message(&rec).contains("runs on, on the source"),
        "{term:?}"
    );
    assert!(guest.domain.is_active().unwrap(), "still running on h1");
    assert!(c2.lookup_domain_by_uuid_string(&guest.uuid).is_err());
    assert!(!hosts.images("h2").join(&stem).exists());

    // A destination that already has the VM is refused before anything moves.
    let dup = GuestSpec::new("stays").on_host(&hosts, "h2").define(&c2);
    let refused = pipeline(&format!(
        "hv-migrate --hosts {} -c h1 --to h2 '{}'",
        f.display(),
        guest.name
    ));
    let rec = refused.assert_failed("invalid_state").one_record();
    assert!(
        hv_testbench::error_message(&rec).contains("h2 already has a different VM named"),
        "{rec}"
    );
    let pre = pipeline(&format!(
        "hv-preflight --hosts {} -c h1 --for migrate --to h2 '{}' --format jsonl",
        f.display(),
        guest.name
    ));
    pre.assert_exit(1);
    let taken = pre
        .records()
        .into_iter()
        .find(|c| c["check"] == "migrate.name_free")
        .unwrap();
    assert_eq!(taken["status"], "fail", "{taken}");
    drop(dup);
    assert!(guest.domain.is_active().unwrap());
}

/// A host that freezes after it answered (here: its libvirtd stopped with
/// SIGSTOP while hv-stop waits on a guest there) fails its own items once
/// libvirt's keepalive gives up on it, instead of holding the run until
/// the items' deadline; the other host's work is done. h4 is this test's
/// own, so freezing it disturbs no other test.
#[test]
fn bench_a_host_that_freezes_mid_run_fails_its_items_not_the_run() {
    let hosts = hosts(4);
    let dir = scratch("hosts-freeze");
    let f = hosts.file(&dir, &[]);
    let (c1, c4) = (hosts.connect("h1"), hosts.connect("h4"));
    let quick = GuestSpec::new("freeze-quick")
        .on_host(&hosts, "h1")
        .define(&c1);
    let deaf = GuestSpec::new("freeze-deaf")
        .ignore_acpi()
        .on_host(&hosts, "h4")
        .define(&c4);
    quick.start_ready();
    deaf.start_ready();
    let pid_file = std::path::Path::new(hv_testbench::HOSTS_DIR).join("h4/run/libvirtd.pid");
    let daemon = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_owned();
    struct Thaw(String);
    impl Drop for Thaw {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &self.0])
                .status();
        }
    }
    let _thaw = Thaw(daemon.clone());
    let began = Instant::now();
    let out = pipeline(&format!(
        "hv-ls --hosts {} -c h1 -c h4 --name '{}freeze-*' | hv-stop --hosts {} --no-force --timeout 90s & run=$!; sleep 5; kill -STOP {daemon}; wait $run",
        f.display(),
        run_prefix(),
        f.display()
    ));
    let took = began.elapsed();
    drop(_thaw);
    out.assert_exit(1);
    let recs = out.records();
    let on = |host: &str| by_host(&recs, host).into_iter().next().cloned().unwrap();
    assert_eq!(on("h1")["how"], "graceful", "{out:?}");
    let frozen = on("h4");
    assert_eq!(frozen["ok"], false, "{out:?}");
    assert!(
        hv_testbench::error_message(&frozen).contains("keepalive"),
        "{out:?}"
    );
    // Without keepalive it would end at the item's deadline (90 s + 60 s).
    assert!(took < Duration::from_secs(75), "took {took:?}");
}

/// A one-host command's records name the host it was given, so the next
/// command in a pipe over several hosts acts there: a VM made with
/// hv-define on `here` (this machine, by its alias in the hosts file)
/// starts there, and not on h1 or h2.
#[test]
fn bench_a_vm_made_on_one_host_is_started_there() {
    let hosts = hosts(2);
    let dir = scratch("hosts-define");
    let f = hosts.file(&dir, &[&format!("here {}", hv_testbench::URI)]);
    let image = hv_testbench::guest_image();
    let name = format!("{}made-here", run_prefix());
    let profile = serde_json::json!({
        "name": name, "type": hv_testbench::domain_type(), "memory": "128M",
        "dir": hv_testbench::IMAGE_DIR, "disk": {"size": "64M"},
        "kernel": image.join("vmlinux"), "initrd": image.join("initramfs.img"),
        "cmdline": "console=ttyS0 panic=-1 quiet",
    });
    let file = dir.join("profile.json");
    std::fs::write(&file, profile.to_string()).unwrap();
    let here = hv_testbench::connect();
    let out = pipeline(&format!(
        "hv-define --hosts {f} -c here {} | hv-start --hosts {f} --wait",
        file.display(),
        f = f.display()
    ));
    let made = here.lookup_domain_by_name(&name).ok().map(Moved);
    let rec = out.assert_ok().one_record();
    assert_eq!(
        (rec["host"].as_str(), rec["state"].as_str()),
        (Some("here"), Some("running")),
        "{out:?}"
    );
    assert!(made.as_ref().is_some_and(|m| m.0.is_active().unwrap()));
    // Its CPU, as hv-define wrote it, is compared by libvirt with what
    // h1's hypervisor can give (a read-write call there).
    let pre = pipeline(&format!(
        "hv-preflight --hosts {} -c here --for migrate --to h1 '{name}' --format jsonl",
        f.display()
    ));
    let cpu = pre
        .records()
        .into_iter()
        .find(|c| c["check"] == "migrate.cpu")
        .unwrap_or_else(|| panic!("no migrate.cpu: {pre:?}"));
    assert_eq!(cpu["status"], "pass", "{cpu}");
    assert!(
        hv_testbench::error_message(&serde_json::json!({"error": {"message": cpu["message"]}}))
            .contains("can give it the CPU"),
        "{cpu}"
    );
    drop(made);
    let _ = std::fs::remove_file(format!("{}/{name}.qcow2", hv_testbench::IMAGE_DIR));
    // It makes files on this machine: another host is refused, not filled
    // with a VM whose disk is here.
    let remote = pipeline(&format!(
        "hv-define --hosts {} -c h1 {}",
        f.display(),
        file.display()
    ));
    remote
        .assert_exit(2)
        .assert_stderr_contains("is another host: run it there");
}
