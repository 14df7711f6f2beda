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
        "hv-ls --hosts {f} --connect-timeout 20s --name '{}listed'",
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
    // the run ends at the connection timeout, not ssh's own (120 s in the
    // bench's ssh_config).
    assert!(
        hv_testbench::error_message(by_host(&recs, "hung")[0]).contains("no answer within 20s"),
        "{out:?}"
    );
    let at = |host: &str| recs.iter().position(|r| r["host"] == host).unwrap();
    assert!(at("h1") < at("hung"), "{out:?}");
    assert!(took < Duration::from_secs(35), "took {took:?}");

    // hv-health checks each host and says which; h3's daemon is down.
    let health = pipeline(&format!(
        "hv-health --hosts {f} -c h1 -c h3 --host-only --connect-timeout 20s --format jsonl"
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

/// The writer's count on the guest's disk, as the guest reads it (0 is
/// on the disk before the guest says "ready").
fn counter(channel: &std::path::Path, name: &str) -> u64 {
    let answer = hv_testbench::command_at(channel, name, "counter");
    answer
        .strip_prefix("counter ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("guest {name}: {answer:?}"))
}

/// Waits until the guest's writer has counted past `n`: each count is two
/// synced writes and a second's sleep, which a loaded host stretches.
fn counts_past(channel: &std::path::Path, name: &str, n: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if counter(channel, name) > n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    false
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
    assert!(
        counts_past(&channel, &guest.name, after),
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
    assert!(
        counts_past(&guest.channel, &guest.name, before),
        "and still writing"
    );

    // SIGTERM (systemctl stop) part-way, once h1 runs the migration job:
    // aborted the same way.
    let term = pipeline(&format!(
        "hv-migrate --hosts {f} -c h1 --to h2 --copy-storage --bandwidth 1 '{name}' & pid=$!
         for _ in $(seq 300); do
             virsh -c '{uri}' domjobinfo '{name}' 2>/dev/null | grep -q '^Job type: *Unbounded' && break
             sleep 0.2
         done
         kill -TERM $pid; wait $pid",
        f = f.display(),
        name = guest.name,
        uri = hosts.uri("h1"),
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
    // Frozen once hv-stop has stopped the quick guest on h1: by then it has
    // asked both guests to stop, side by side.
    let frozen_at = dir.join("frozen-at");
    let out = pipeline(&format!(
        "hv-ls --hosts {f} -c h1 -c h4 --name '{prefix}freeze-*' | hv-stop --hosts {f} --no-force --timeout 90s & run=$!
         for _ in $(seq 300); do
             virsh -c '{h1}' domstate '{quick}' 2>/dev/null | grep -q 'shut off' && break
             sleep 0.2
         done
         sleep 1; kill -STOP {daemon}; date +%s.%N > '{at}'; wait $run",
        f = f.display(),
        prefix = run_prefix(),
        h1 = hosts.uri("h1"),
        quick = quick.name,
        at = frozen_at.display(),
    ));
    let frozen_secs: f64 = std::fs::read_to_string(&frozen_at)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let took = Duration::from_secs_f64(now - frozen_secs);
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
    assert!(
        took < Duration::from_secs(75),
        "took {took:?} after the freeze"
    );
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
}

/// hv-define on another host (docs/hosts.md): the disk is a volume of that
/// host's pool, made by its libvirt, and the cloud-init seed is written
/// here and uploaded through a libvirt stream; the guest started there
/// reads the hostname from it. A define libvirt refuses there leaves no
/// volume and no domain behind.
#[test]
fn bench_a_vm_is_made_on_another_host_through_its_pools() {
    // h6 is this test's own: it makes volumes in that host's pool and
    // refreshes it, which the migration test counts on not happening to
    // h1's, and the preflight test to h5's.
    let hosts = hosts(6);
    let dir = scratch("hosts-define-remote");
    let f = hosts.file(&dir, &[]);
    let image = hv_testbench::guest_image();
    let name = format!("{}made-there", run_prefix());
    let profile = serde_json::json!({
        "name": name, "type": hv_testbench::domain_type(), "memory": "128M",
        "pool": "default", "disk": {"size": "64M"},
        "kernel": image.join("vmlinux"), "initrd": image.join("initramfs.img"),
        "cmdline": "console=ttyS0 panic=-1 quiet",
        "cloud_init": {"hostname": "seed-on-h6"},
    });
    let file = dir.join("profile.json");
    std::fs::write(&file, profile.to_string()).unwrap();
    let h6 = hosts.connect("h6");
    let images = hosts.images("h6");
    let out = pipeline(&format!(
        "hv-define --hosts {f} -c h6 {} | hv-start --hosts {f} --wait",
        file.display(),
        f = f.display()
    ));
    let made = h6.lookup_domain_by_name(&name).ok().map(Moved);
    let rec = out.assert_ok().one_record();
    assert_eq!(
        (rec["host"].as_str(), rec["state"].as_str()),
        (Some("h6"), Some("running")),
        "{out:?}"
    );
    // Both files are volumes of h6's pool, in h6's own image directory.
    let pool = h6.lookup_storage_pool_by_name("default").unwrap();
    let mut volumes = pool.list_volumes().unwrap();
    volumes.retain(|v| v.starts_with(&name));
    volumes.sort();
    assert_eq!(
        volumes,
        [format!("{name}-cidata.iso"), format!("{name}.qcow2")],
        "{out:?}"
    );
    assert!(images.join(format!("{name}.qcow2")).exists());
    assert!(
        !std::path::Path::new(hv_testbench::IMAGE_DIR)
            .join(format!("{name}.qcow2"))
            .exists(),
        "nothing on this machine"
    );
    let log = std::path::Path::new(hv_testbench::HOSTS_DIR)
        .join(format!("h6/log/qemu/{name}-serial0.log"));
    let said = hv_testbench::wait_for_line(&log, "hv-guest: cidata", Duration::from_secs(180));
    assert_eq!(said, "hv-guest: cidata hostname=seed-on-h6");
    // Its serial console, over ssh: a line typed reaches its shell. Given
    // every host of the file, hv-console finds the one that has it.
    pipeline(&format!(
        "echo 'echo far-$((3+4))' | hv-console --hosts {} '{name}' --expect far-7 --timeout 60s",
        f.display()
    ))
    .assert_ok();

    // Cloned there too: two linked clones (overlays on its volume) and a
    // full copy made by h6's libvirt, each with a seed of its own hostname.
    pipeline(&format!(
        "hv-stop --hosts {f} -c h6 --timeout 60 '{name}'",
        f = f.display()
    ))
    .assert_ok();
    let cloned = pipeline(&format!(
        "hv-clone --hosts {f} -c h6 '{name}' --count 2 --linked && hv-clone --hosts {f} -c h6 '{name}' --name '{{name}}-full'",
        f = f.display()
    ));
    let recs = cloned.assert_ok().records();
    let clones: Vec<Moved> = recs
        .iter()
        .filter_map(|r| {
            h6.lookup_domain_by_name(r["name"].as_str()?)
                .ok()
                .map(Moved)
        })
        .collect();
    let hows: Vec<(&str, &str)> = recs
        .iter()
        .map(|r| {
            (
                r["host"].as_str().unwrap(),
                r["copies"][0]["how"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        hows,
        [("h6", "linked"), ("h6", "linked"), ("h6", "volume")],
        "{cloned:?}"
    );
    let started = pipeline(&format!(
        "hv-ls --hosts {f} -c h6 --name '{name}-*' | hv-start --hosts {f} --wait",
        f = f.display()
    ));
    assert_eq!(started.assert_ok().records().len(), 3, "{started:?}");
    let mut seen = std::collections::HashSet::new();
    for r in &recs {
        let clone = r["name"].as_str().unwrap();
        let log = std::path::Path::new(hv_testbench::HOSTS_DIR)
            .join(format!("h6/log/qemu/{clone}-serial0.log"));
        let said = hv_testbench::wait_for_line(&log, "hv-guest: cidata", Duration::from_secs(180));
        assert!(said.starts_with("hv-guest: cidata hostname="), "{said}");
        assert_ne!(said, "hv-guest: cidata hostname=seed-on-h6", "{clone}");
        assert!(seen.insert(said), "each clone its own hostname");
    }
    drop(clones);
    drop(made);
    pool.refresh(0).unwrap();
    for v in pool.list_volumes().unwrap() {
        if v.starts_with(&name) {
            let _ = pool.lookup_storage_vol_by_name(&v).map(|v| v.delete(0));
        }
    }

    // libvirt on h6 refuses the definition after the volumes were made:
    // they are deleted again, and no domain is left.
    let mut bogus = profile.clone();
    bogus["name"] = serde_json::json!(format!("{name}-bogus"));
    bogus["machine"] = serde_json::json!("bogus");
    std::fs::write(&file, bogus.to_string()).unwrap();
    let refused = pipeline(&format!(
        "hv-define --hosts {} -c h6 {}",
        f.display(),
        file.display()
    ));
    refused.assert_failed("libvirt_error");
    pool.refresh(0).unwrap();
    let left: Vec<String> = pool
        .list_volumes()
        .unwrap()
        .into_iter()
        .filter(|v| v.starts_with(&format!("{name}-bogus")))
        .collect();
    assert!(left.is_empty(), "volumes left on h6: {left:?}");
    assert!(h6.lookup_domain_by_name(&format!("{name}-bogus")).is_err());
}

/// hv-top over several hosts (docs/top.md), in a real terminal at 80×24:
/// each host's guests with their host, a host that never answers holding
/// back neither the others nor the keys, and hv-health's problems over
/// every host, the worst named with its host.
#[test]
fn bench_hv_top_watches_several_hosts_and_a_silent_one_freezes_nothing() {
    let hosts = hosts(2);
    let dir = scratch("hosts-top");
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let file = hosts.file(
        &dir,
        &[&format!(
            "hung qemu+ssh://root@127.0.0.1:{}/system?command={}/ssh",
            hung.local_addr().unwrap().port(),
            hv_testbench::HOSTS_DIR
        )],
    );
    let f = file.display();
    let off = GuestSpec::new("top-h1")
        .on_host(&hosts, "h1")
        .define(&hosts.connect("h1"));
    let on = GuestSpec::new("top-h2")
        .on_host(&hosts, "h2")
        .define(&hosts.connect("h2"));
    on.start_ready();

    // One frame as records: each VM with its host and state.
    let once = pipeline(&format!(
        "hv-top --hosts {f} -c h1 -c h2 --once --interval 1s --format jsonl"
    ));
    let recs = once.assert_ok().records();
    let of = |uuid: &str| {
        let r = recs
            .iter()
            .find(|r| r["uuid"] == uuid)
            .unwrap_or_else(|| panic!("{uuid}: {once:?}"));
        (r["host"].as_str().unwrap(), r["state"].as_str().unwrap())
    };
    assert_eq!(of(&off.uuid), ("h1", "shutoff"));
    assert_eq!(of(&on.uuid), ("h2", "running"));

    let t = hv_testbench::Terminal::start(
        &format!("hv-top --hosts {f} -c h1 -c h2 -c hung --connect-timeout 40s --interval 1s"),
        80,
        24,
    );
    t.wait_for("hv-top ", Duration::from_secs(30));
    t.keys(&["/"]);
    t.keys(&["-l", &format!("{}top-h", run_prefix())]);
    t.keys(&["Enter"]);
    // Names are cut at 80 columns beside the HOST column: the rows are
    // told apart by host, the filter keeping this test's two.
    let began = Instant::now();
    let ours = |screen: &str| -> Vec<String> {
        screen
            .lines()
            .filter(|l| l.trim_start().starts_with(&run_prefix()[..8]))
            .map(str::to_owned)
            .collect()
    };
    loop {
        let screen = t.screen(false);
        let rows = ours(&screen);
        let shows = |host: &str, state: &str| {
            rows.iter()
                .any(|r| r.split_whitespace().any(|w| w == host) && r.contains(state))
        };
        if rows.len() == 2 && shows("h1", "shutoff") && shows("h2", "running") {
            assert!(screen.contains("HOST"), "{screen}");
            assert!(screen.lines().all(|l| l.chars().count() <= 80), "{screen}");
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(25),
            "both hosts' guests, while hung is still connecting:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The keys answer while hung's connection (40 s) is out.
    t.keys(&["s"]);
    t.wait_for("s:state", Duration::from_secs(10));
    assert!(
        !t.screen(false).contains("hung: not answering"),
        "the keys answered only once hung had failed"
    );
    // hung fails at its connection timeout; the others go on.
    t.wait_for("hung: not answering", Duration::from_secs(60));
    // hv-health runs over the same hosts; its worst problem is hung's.
    let screen = t.wait_for("health: ", Duration::from_secs(60));
    let health = screen
        .lines()
        .find(|l| l.starts_with("health: "))
        .unwrap()
        .to_owned();
    assert!(
        health.contains("fail") && health.contains("hung: "),
        "{screen}"
    );
    t.keys(&["q"]);
    t.wait_for("[exit 0]", Duration::from_secs(10));
    drop(hung);
}

/// hv-preflight over several hosts (docs/preflight.md): the host checks of
/// each, the hardware read only here; the VMs of `--for` checked on the host
/// their records name, or looked for on every host; another host's disks
/// seen through its storage pools, never through this machine's files.
#[test]
fn bench_preflight_checks_every_host_and_each_vm_where_it_is() {
    // h5 is this test's own: it refreshes that host's pool, which the
    // migration test counts on not happening to h1's.
    let hosts = hosts(5);
    let dir = scratch("hosts-preflight");
    let file = hosts.file(&dir, &[&format!("here {}", hv_testbench::URI)]);
    let f = file.display();
    let (c1, c2) = (hosts.connect("h5"), hosts.connect("h2"));
    let on1 = GuestSpec::new("pf-one").on_host(&hosts, "h5").define(&c1);
    let on2 = GuestSpec::new("pf-two").on_host(&hosts, "h2").define(&c2);

    // The host checks of three hosts: libvirt's on each, the hardware's on
    // this machine only (another host's is what its libvirt says).
    let out = pipeline(&format!(
        "hv-preflight --hosts {f} -c h5 -c h2 -c here --virt-type qemu --format jsonl"
    ));
    let recs = out.records();
    for host in ["h5", "h2", "here"] {
        let reach = recs
            .iter()
            .find(|c| c["check"] == "libvirt.reachable" && c["host"] == host)
            .unwrap_or_else(|| panic!("no libvirt.reachable for {host}: {out:?}"));
        assert_eq!(reach["status"], "pass", "{reach}");
    }
    let hw: Vec<&str> = recs
        .iter()
        .filter(|c| c["check"] == "host.kvm_device")
        .map(|c| c["host"].as_str().unwrap())
        .collect();
    assert_eq!(hw, ["here"], "{out:?}");

    // Records go to their own host; a bare name is looked for on each.
    let glob = format!("{}pf-*", run_prefix());
    let start = pipeline(&format!(
        "hv-ls --hosts {f} -c h5 -c h2 --name '{glob}' | hv-preflight --hosts {f} -c h5 -c h2 --for start --format jsonl"
    ));
    let recs = start.records();
    let exists: Vec<(&str, &str)> = recs
        .iter()
        .filter(|c| c["check"] == "vm.exists")
        .map(|c| (c["host"].as_str().unwrap(), c["uuid"].as_str().unwrap()))
        .collect();
    assert!(exists.contains(&("h5", on1.uuid.as_str())), "{start:?}");
    assert!(exists.contains(&("h2", on2.uuid.as_str())), "{start:?}");
    assert_eq!(exists.len(), 2, "{start:?}");
    // The disk was put in h5's pool directory from outside libvirt: until
    // the pool is refreshed, h5's libvirt does not list it, and that is a
    // warning naming the refresh, not a missing disk.
    let disks = |recs: &[serde_json::Value], host: &str| {
        recs.iter()
            .find(|c| c["check"] == "vm.disks" && c["host"] == host)
            .cloned()
            .unwrap_or_else(|| panic!("no vm.disks on {host}"))
    };
    let before = disks(&recs, "h5");
    assert_eq!(before["status"], "warn", "{before}");
    assert!(
        before["hint"]
            .as_str()
            .unwrap()
            .contains("pool-refresh default"),
        "{before}"
    );
    c1.lookup_storage_pool_by_name("default")
        .unwrap()
        .refresh(0)
        .unwrap();
    let again = pipeline(&format!(
        "hv-preflight --hosts {f} -c h5 -c h2 --for start '{}' --format jsonl",
        on1.name
    ));
    let recs = again.records();
    assert_eq!(disks(&recs, "h5")["status"], "pass", "{again:?}");
    assert!(
        !recs.iter().any(|c| c["status"] == "fail"),
        "found on h5, and its absence on h2 is no failure: {again:?}"
    );

    // A name no host has is one failure, of no host.
    let nowhere = pipeline(&format!(
        "hv-preflight --hosts {f} -c h5 -c h2 --for start '{}pf-none' --format jsonl",
        run_prefix()
    ));
    nowhere.assert_exit(1);
    let missing: Vec<_> = nowhere
        .records()
        .into_iter()
        .filter(|c| c["check"] == "vm.exists")
        .collect();
    assert_eq!(missing.len(), 1, "{nowhere:?}");
    assert_eq!(missing[0]["host"], serde_json::Value::Null);
    // A backup of another host's VM is read over the ssh of its URI: its
    // disks count against the repository here, and nothing fails.
    let repo = dir.join("repo");
    hv_testbench::backup_repo(&dir, &repo);
    let backup = pipeline(&format!(
        "hv-preflight --hosts {f} -c h5 --for backup --disk-warn 100 --repo {} '{}' --format jsonl",
        repo.display(),
        on1.name
    ));
    let recs = backup.assert_exit(0).records();
    let space = recs
        .iter()
        .find(|c| c["check"] == "backup.space")
        .unwrap_or_else(|| panic!("{backup:?}"));
    assert_eq!(
        (&space["status"], &space["host"]),
        (&"pass".into(), &"h5".into()),
        "{space}"
    );
    assert!(space["value"].as_u64().unwrap() > 0, "{space}");
    // A snapshot's room is h5's pool's, measured by h5's libvirt.
    let snap = pipeline(&format!(
        "hv-preflight --hosts {f} -c h5 --for snapshot '{}' --format jsonl",
        on1.name
    ));
    let space = snap
        .records()
        .into_iter()
        .find(|c| c["check"] == "snapshot.space")
        .unwrap_or_else(|| panic!("{snap:?}"));
    assert_eq!(space["status"], "pass", "{space}");
    assert_eq!(space["host"], "h5");
    // Each host's pools, each record with its host.
    let pools = pipeline(&format!(
        "hv-pool ls --hosts {f} -c h1 -c h2 default --format jsonl"
    ));
    let listed: Vec<(String, String)> = pools
        .assert_ok()
        .records()
        .iter()
        .map(|p| {
            (
                p["host"].as_str().unwrap().to_owned(),
                p["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("h1".to_owned(), hv_testbench::HOST_IMAGES.to_owned()),
            ("h2".to_owned(), hv_testbench::HOST_IMAGES.to_owned())
        ],
        "{pools:?}"
    );
    // A planned VM is checked on the host its profile names, as hv-define
    // makes it there; one that names none, among several hosts, fails.
    let planned = dir.join("planned.jsonl");
    std::fs::write(
        &planned,
        "{\"name\": \"p-one\", \"host\": \"h5\", \"memory\": \"64M\", \"disk\": \"16M\"}\n\
         {\"name\": \"p-two\", \"host\": \"h2\", \"memory\": \"64M\", \"disk\": \"16M\"}\n\
         {\"name\": \"p-none\", \"memory\": \"64M\"}\n",
    )
    .unwrap();
    let plan = pipeline(&format!(
        "hv-preflight --hosts {f} -c h5 -c h2 --profiles {} --virt-type qemu --disk-warn 100 --memory-warn 0 --format jsonl",
        planned.display()
    ));
    plan.assert_exit(1);
    let recs = plan.records();
    let about = |check: &str, name: &str| {
        recs.iter()
            .find(|c| c["check"] == check && c["name"] == name)
            .unwrap_or_else(|| panic!("no {check} of {name}: {plan:?}"))
    };
    for (name, host) in [("p-one", "h5"), ("p-two", "h2")] {
        for check in ["plan.name", "plan.memory", "plan.storage"] {
            let c = about(check, name);
            assert_eq!(
                (&c["host"], &c["status"]),
                (&host.into(), &"pass".into()),
                "{c}"
            );
        }
    }
    let none = about("plan.host", "p-none");
    assert_eq!(none["status"], "fail", "{none}");
    assert!(
        !recs
            .iter()
            .any(|c| c["name"] == "p-none" && c["check"] != "plan.host"),
        "checked nowhere: {plan:?}"
    );
}

/// hv-rm --remove-storage over several hosts keeps a file another host's
/// VM uses (storage shared between hosts: here a path both machines see),
/// and keeps every file when a host of the run does not answer: it could
/// not tell whether that host's VMs use it.
#[test]
fn bench_rm_keeps_a_file_a_vm_on_another_host_uses() {
    let hosts = hosts(2);
    let dir = scratch("hosts-rm");
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let file = hosts.file(
        &dir,
        &[
            &format!("here {}", hv_testbench::URI),
            &format!(
                "hung qemu+ssh://root@127.0.0.1:{}/system?command={}/ssh",
                hung.local_addr().unwrap().port(),
                hv_testbench::HOSTS_DIR
            ),
        ],
    );
    let f = file.display();
    let shared = dir.join("shared.qcow2");
    let st = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&shared)
        .arg("16M")
        .status()
        .unwrap();
    assert!(st.success());
    let xml = |name: &str| {
        format!(
            "<domain type='qemu'><name>{}{name}</name><memory unit='MiB'>64</memory>\
             <os><type arch='x86_64'>hvm</type></os><devices><disk type='file' device='disk'>\
             <driver name='qemu' type='qcow2'/><source file='{}'/><target dev='vda' bus='virtio'/>\
             </disk></devices></domain>",
            run_prefix(),
            shared.display()
        )
    };
    let here = hv_testbench::connect();
    let mine = here.define_domain_xml(&xml("rm-here")).map(Moved).unwrap();
    let theirs = hosts
        .connect("h1")
        .define_domain_xml(&xml("rm-there"))
        .map(Moved)
        .unwrap();
    let name = format!("{}rm-here", run_prefix());

    // A host that does not answer may use the file: kept, and said why.
    // The record of this machine's VM goes to this machine alone; the
    // other hosts of the run are only asked for their VMs' disks.
    let out = pipeline(&format!(
        "hv-ls --hosts {f} -c here '{name}' | hv-rm --hosts {f} -c here -c hung --connect-timeout 20s --remove-storage --dry-run --yes --format jsonl"
    ));
    let rec = out.assert_ok().one_record();
    assert_eq!(rec["removed_storage"], serde_json::json!([]), "{out:?}");
    assert!(
        rec["kept_storage"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("host hung did not answer"),
        "{out:?}"
    );
    // h1's VM uses it: kept, naming that VM and its host.
    let out = pipeline(&format!(
        "hv-ls --hosts {f} -c here '{name}' | hv-rm --hosts {f} -c here -c h1 --remove-storage --yes --format jsonl"
    ));
    let rec = out.assert_ok().one_record();
    assert_eq!(
        rec["kept_storage"][0]["reason"],
        format!("also used by VM '{}rm-there' on host h1", run_prefix()),
        "{out:?}"
    );
    assert!(shared.exists(), "the file h1's VM uses is still there");
    assert!(
        here.lookup_domain_by_name(&name).is_err(),
        "this machine's VM is undefined"
    );
    std::mem::forget(mine);
    drop(theirs);
    drop(hung);
}

/// hv-backup reads another host's VM where it lies, over the ssh of its
/// qemu+ssh URI: a running guest through a backup job on that host, a
/// stopped one through qemu-nbd there, each incrementally after the first;
/// what it restores here is the guest's disk, byte for byte.
#[test]
fn bench_a_vm_on_another_host_is_backed_up_over_ssh_and_restores_the_same() {
    let hosts = hosts(2);
    let dir = scratch("hosts-backup");
    let file_path = hosts.file(&dir, &[]);
    let f = file_path.display();
    let guest = GuestSpec::new("backup there ü")
        .disk_mib(256)
        .on_host(&hosts, "h2")
        .define(&hosts.connect("h2"));
    guest.start_ready();
    guest.write_mib(0, 8);
    let repo = dir.join("repo");
    // Its job's directory is h2's own /var/lib/libvirt, which this
    // machine's path of the same name is not: a run that made it here
    // would fail there.
    let remote_root = "/var/lib/libvirt/hv-backup-test";
    let mut args = hv_testbench::backup_repo(&dir, &repo);
    let at = args.iter().position(|a| a == "--scratch-dir").unwrap();
    args[at + 1] = remote_root.into();
    let args = args.join(" ");
    let backup = |what: &str| {
        let out = pipeline(&format!(
            "hv-ls --hosts {f} -c h2 '{}' | hv-backup create --hosts {f} {args} --format jsonl",
            guest.name
        ));
        let rec = out.assert_ok().one_record();
        assert_eq!(rec["host"], "h2", "{what}: {out:?}");
        rec
    };
    let disk_read = |rec: &Value| rec["reads"][0]["read"].as_str().unwrap().to_owned();

    let first = backup("first");
    assert_eq!(first["mode"], "live", "{first}");
    assert_eq!(disk_read(&first), "full", "{first}");
    assert!(
        first["read_bytes"].as_u64().unwrap() >= 8 << 20,
        "what the guest wrote is read: {first}"
    );
    let there = hv_testbench::HOSTS_DIR.to_owned() + "/h2/lib/hv-backup-test";
    let left: Vec<_> = std::fs::read_dir(&there)
        .unwrap_or_else(|e| panic!("the job's directory was made on h2 ({there}): {e}"))
        .collect();
    assert!(left.is_empty(), "nothing left on h2: {left:?}");

    // Running, then stopped: each reads only what the guest changed.
    guest.write_mib(16, 4);
    let second = backup("live, incremental");
    assert_eq!(disk_read(&second), "incremental", "{second}");
    assert!(second["read_bytes"].as_u64().unwrap() < 8 << 20, "{second}");
    guest.write_mib(32, 4);
    guest.write_mib(64, 160); // enough to read that a kill lands mid-read
    guest.domain.shutdown().expect("ACPI shutdown");
    let deadline = Instant::now() + Duration::from_secs(60);
    while guest.domain.is_active().unwrap_or(true) {
        assert!(Instant::now() < deadline, "guest did not power off");
        std::thread::sleep(Duration::from_millis(100));
    }
    let third = backup("stopped, incremental");
    assert_eq!(third["mode"], "offline", "{third}");
    assert_eq!(disk_read(&third), "incremental", "{third}");
    let image = guest
        .disk
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    // Every process whose command line serves the image: qemu-nbd on h2,
    // the script there that runs it, and the ssh here that started both.
    let holders = || {
        let out = std::process::Command::new("pgrep")
            .args(["-a", "-f", &format!("qemu-nbd.*{image}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let serving = || {
        let out = std::process::Command::new("pgrep")
            .args(["-a", "-x", "qemu-nbd"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&image)
    };
    // The script on h2 ends when its ssh does, a moment after the run.
    let all_gone = |after: &str| {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !holders().is_empty() {
            assert!(
                Instant::now() < deadline,
                "{after}, these still hold the image: {}",
                holders()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    all_gone("after the run");

    // Killed while qemu-nbd reads on h2: nothing there keeps the image,
    // the VM starts, and the next backup is whole.
    let mut killed = false;
    for _ in 0..3 {
        let mut run = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "exec {} create --hosts {f} -c h2 --full {args} --format jsonl '{}'",
                hv_testbench::bin("hv-backup"),
                guest.name
            ))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while run.try_wait().unwrap().is_none() && Instant::now() < deadline {
            if serving() {
                run.kill().unwrap(); // SIGKILL
                killed = true;
                break;
            }
        }
        let _ = run.wait();
        if killed {
            break;
        }
    }
    assert!(killed, "three runs ended before qemu-nbd was seen on h2");
    all_gone("after the run was killed");
    guest.start_ready();
    guest.domain.destroy().unwrap();
    let fourth = backup("after a killed run");
    assert_eq!(fourth["mode"], "offline", "{fourth}");
    let left: Vec<_> = std::fs::read_dir(&there).unwrap().collect();
    assert!(
        left.is_empty(),
        "the killed run's directory on h2 is swept: {left:?}"
    );

    // Restored here, it is what h2's disk holds.
    let id = fourth["id"].as_str().unwrap();
    let out_dir = dir.join("restored");
    std::fs::create_dir_all(&out_dir).unwrap();
    let keys = dir.join("identity.txt"); // backup_repo made it
    let restored = pipeline(&format!(
        "hv-backup restore {id} --repo {} --identity {} --dir {} --format jsonl",
        repo.display(),
        keys.display(),
        out_dir.display()
    ))
    .assert_ok()
    .one_record();
    let path = restored["disks"][0]["path"].as_str().unwrap();
    let same = std::process::Command::new("qemu-img")
        .args(["compare", "-q", "-U", path])
        .arg(&guest.disk)
        .status()
        .unwrap();
    assert!(same.success(), "the restored disk is h2's disk: {restored}");

    // Restored onto h1 and defined there (a host lost, its VM brought back
    // on another): the disk is written on h1 over its ssh, checked, and the
    // VM starts there.
    let h1 = hosts.connect("h1");
    let copy = format!("{}restored on h1 ü", run_prefix());
    let onto = |extra: &str| {
        pipeline(&format!(
            "hv-backup restore {id} --hosts {f} -c h1 --repo {} --identity {} --dir {} --name '{copy}' {extra} --format jsonl",
            repo.display(),
            keys.display(),
            hv_testbench::HOST_IMAGES,
        ))
    };
    let on_h1 = onto("--define");
    let defined = h1.lookup_domain_by_name(&copy).ok().map(Moved);
    let rec = on_h1.assert_ok().one_record();
    assert_eq!(rec["domain"], copy.as_str(), "{rec}");
    let there_path = std::path::Path::new(rec["disks"][0]["path"].as_str().unwrap());
    let seen_here = hosts.images("h1").join(there_path.file_name().unwrap());
    assert!(
        !there_path.exists(),
        "written in h1's own image directory, not in this machine's {}",
        there_path.display()
    );
    let same = std::process::Command::new("qemu-img")
        .args(["compare", "-q", "-U"])
        .arg(&seen_here)
        .arg(path)
        .status()
        .unwrap();
    assert!(same.success(), "h1's copy is the same disk: {rec}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&seen_here).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the VM's data is private on h1 too");
    assert_eq!(rec["disks"][0]["blake3"], restored["disks"][0]["blake3"]);
    assert!(
        hv_testbench::connect()
            .lookup_domain_by_name(&copy)
            .is_err(),
        "defined on h1 only"
    );
    let started = pipeline(&format!(
        "hv-start --hosts {f} -c h1 '{copy}' --format jsonl"
    ));
    assert_eq!(
        started.assert_ok().one_record()["state"],
        "running",
        "{started:?}"
    );
    // Its disk named through a symlink on h1 is still the running VM's:
    // --force does not replace it.
    let link = std::path::Path::new(hv_testbench::HOSTS_DIR).join("h1/lib/images-link");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(hv_testbench::HOST_IMAGES, &link).unwrap();
    let through = pipeline(&format!(
        "hv-backup restore {id} --hosts {f} -c h1 --repo {} --identity {} --dir /var/lib/libvirt/images-link --name '{copy}' --force --format jsonl",
        repo.display(),
        keys.display(),
    ));
    let _ = std::fs::remove_file(&link);
    through.assert_failed("invalid_state");
    assert!(
        hv_testbench::error_message(&through.one_record()).contains("running VM"),
        "{through:?}"
    );
    // Again: the file and the domain are there, so nothing is written, and
    // nothing half-written is left beside them.
    onto("--define").assert_failed("invalid_state");
    // Raw, to a path of h1's: the same bytes, as b3sum reads them there.
    let raw = format!("{}/{}-copy.raw", hv_testbench::HOST_IMAGES, run_prefix());
    let as_raw = pipeline(&format!(
        "hv-backup restore {id} --hosts {f} -c h1 --repo {} --identity {} --disk vda -o {raw} --disk-format raw --format jsonl",
        repo.display(),
        keys.display(),
    ));
    let raw_rec = as_raw.assert_ok().one_record();
    let raw_here = hosts
        .images("h1")
        .join(format!("{}-copy.raw", run_prefix()));
    let b3 = std::process::Command::new("b3sum")
        .args(["--no-names"])
        .arg(&raw_here)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&b3.stdout).trim(),
        raw_rec["disks"][0]["blake3"].as_str().unwrap(),
        "{raw_rec}"
    );
    assert_eq!(
        raw_rec["disks"][0]["blake3"],
        restored["disks"][0]["blake3"]
    );
    let _ = std::fs::remove_file(&raw_here);
    let partial: Vec<_> = std::fs::read_dir(hosts.images("h1"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".partial-"))
        .collect();
    assert!(partial.is_empty(), "{partial:?}");
    drop(defined);
    let _ = std::fs::remove_file(&seen_here);

    // SIGTERM while it writes on h1: the half-written file there is
    // removed, and no qemu-nbd is left holding it.
    let partials = || -> Vec<String> {
        std::fs::read_dir(hosts.images("h1"))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".partial-"))
            .collect()
    };
    let mut run = std::process::Command::new(hv_testbench::bin("hv-backup"))
        .args(["restore", id, "--hosts"])
        .arg(file_path.as_os_str())
        .args(["-c", "h1", "--repo"])
        .arg(&repo)
        .arg("--identity")
        .arg(&keys)
        .args([
            "--dir",
            hv_testbench::HOST_IMAGES,
            "--name",
            &format!("{copy} cut"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while partials().is_empty() && run.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "no partial file appeared on h1");
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status();
    let cut = run.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&cut.stderr);
    assert!(!cut.status.success(), "{said}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !partials().is_empty() || serving_on_h1() {
        assert!(
            Instant::now() < deadline,
            "left on h1: {:?}, qemu-nbd: {}; {said}",
            partials(),
            serving_on_h1()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether a qemu-nbd serves a restore's partial file.
fn serving_on_h1() -> bool {
    let out = std::process::Command::new("pgrep")
        .args(["-a", "-x", "qemu-nbd"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains(".partial-")
}

/// hv-preflight --for migrate looks for the networks and bridges a VM's
/// NICs use at the destination: networks through its libvirt, bridges
/// through its libvirt or, when that has no interface driver (the bench's
/// daemons have none), through that host's /sys/class/net over ssh.
#[test]
fn bench_preflight_for_migrate_finds_the_destinations_bridges_and_networks() {
    let hosts = hosts(2);
    let dir = scratch("hosts-bridges");
    let f = hosts.file(&dir, &[]);
    let bridge = format!("hvbr{}", std::process::id() % 100_000);
    let ip = |args: &[&str]| {
        std::process::Command::new("ip")
            .args(["-n", "hv-h2", "link"])
            .args(args)
            .status()
            .unwrap()
    };
    assert!(ip(&["add", &bridge, "type", "bridge"]).success());
    struct Gone<F: Fn()>(F);
    impl<F: Fn()> Drop for Gone<F> {
        fn drop(&mut self) {
            (self.0)()
        }
    }
    let _bridge = Gone(|| {
        ip(&["del", &bridge]);
    });
    let name = format!("{}bridged", run_prefix());
    let nic = |kind: &str, source: &str| {
        format!("<interface type='{kind}'><source {kind}='{source}'/><model type='virtio'/></interface>")
    };
    let xml = format!(
        "<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>\
         <os><type arch='x86_64'>hvm</type></os><devices>{}{}{}</devices></domain>",
        nic("bridge", &bridge),
        nic("bridge", "hvbr-none"),
        nic("network", "hv-no-such-net"),
    );
    let _vm = hosts
        .connect("h1")
        .define_domain_xml(&xml)
        .map(Moved)
        .unwrap();
    let out = pipeline(&format!(
        "hv-preflight --hosts {} -c h1 --for migrate --to h2 '{name}' --format jsonl",
        f.display()
    ));
    let recs = out.records();
    let about = |source: &str| {
        recs.iter()
            .find(|r| r["check"] == "migrate.network" && r["network"] == source)
            .unwrap_or_else(|| panic!("no migrate.network for {source}: {out:?}"))
    };
    assert_eq!(about(&bridge)["status"], "pass", "{}", about(&bridge));
    let none = about("hvbr-none");
    assert_eq!(none["status"], "fail", "{none}");
    assert_eq!(none["message"], "h2 has no bridge hvbr-none", "{none}");
    assert!(none["hint"]
        .as_str()
        .unwrap()
        .contains("create bridge hvbr-none"));
    let net = about("hv-no-such-net");
    assert_eq!(net["status"], "fail", "{net}");
    assert!(
        net["hint"].as_str().unwrap().contains("virsh net-define"),
        "{net}"
    );
    assert_eq!(out.code(), Some(1), "a failed check: {out:?}");
}

/// hv-define and hv-clone over several hosts in one run (docs/hosts.md):
/// each profile is made on the host it names in `host`, each source is
/// cloned on the host its record names, and a host that does not answer
/// fails its own items while the others are made.
#[test]
fn bench_a_fleet_is_made_and_cloned_over_several_hosts_in_one_run() {
    let hosts = hosts(6);
    let dir = scratch("hosts-fleet");
    let file = hosts.file(
        &dir,
        &[
            &format!("here {}", hv_testbench::URI),
            &format!(
                "h9 qemu+ssh://root@10.231.0.19/system?command={}/ssh",
                hv_testbench::HOSTS_DIR
            ),
        ],
    );
    let f = file.display();
    let image = hv_testbench::guest_image();
    let prefix = run_prefix();
    let profile = |name: &str, host: Option<&str>| {
        let mut p = serde_json::json!({
            "name": format!("{prefix}{name}"), "type": hv_testbench::domain_type(),
            "memory": "128M", "disk": {"size": "64M"},
            "kernel": image.join("vmlinux"), "initrd": image.join("initramfs.img"),
            "cmdline": "console=ttyS0 panic=-1 quiet",
        });
        match host {
            Some("here") => p["dir"] = hv_testbench::IMAGE_DIR.into(),
            _ => p["pool"] = "default".into(),
        }
        if let Some(h) = host {
            p["host"] = h.into();
        }
        p.to_string()
    };
    let fleet = dir.join("fleet.jsonl");
    std::fs::write(
        &fleet,
        [
            profile("fleet-here", Some("here")),
            profile("fleet-h6", Some("h6")),
            profile("fleet-gone", Some("h9")),
            profile("fleet-nohost", None),
        ]
        .join("\n"),
    )
    .unwrap();
    let (here, h6) = (hv_testbench::connect(), hosts.connect("h6"));
    let name = |n: &str| format!("{prefix}{n}");
    let made = pipeline(&format!(
        "hv-define --hosts {f} -c here -c h6 -c h9 --connect-timeout 20s {} --format jsonl",
        fleet.display()
    ));
    let mut doms: Vec<Moved> = Vec::new();
    for (conn, n) in [(&here, "fleet-here"), (&h6, "fleet-h6")] {
        if let Ok(d) = conn.lookup_domain_by_name(&name(n)) {
            doms.push(Moved(d));
        }
    }
    // The profile without a host is a usage error of its own (exit 2).
    made.assert_exit(2);
    let recs = made.records();
    let outcome = |n: &str| {
        let r = recs
            .iter()
            .find(|r| r["name"] == name(n))
            .unwrap_or_else(|| panic!("no record of {n}: {made:?}"));
        (
            r["host"].as_str().map(str::to_owned),
            r["ok"].as_bool().unwrap(),
            r["error"]["code"].as_str().map(str::to_owned),
        )
    };
    let s = |x: &str| Some(x.to_owned());
    assert_eq!(outcome("fleet-here"), (s("here"), true, None), "{made:?}");
    assert_eq!(outcome("fleet-h6"), (s("h6"), true, None), "{made:?}");
    assert_eq!(
        outcome("fleet-gone"),
        (s("h9"), false, s("unreachable")),
        "{made:?}"
    );
    assert_eq!(
        outcome("fleet-nohost"),
        (None, false, s("usage")),
        "{made:?}"
    );
    assert_eq!(doms.len(), 2, "each made on its own host: {made:?}");
    assert!(here.lookup_domain_by_name(&name("fleet-h6")).is_err());
    assert!(h6.lookup_domain_by_name(&name("fleet-here")).is_err());
    assert!(hosts
        .images("h6")
        .join(format!("{}.qcow2", name("fleet-h6")))
        .exists());

    // Each source is cloned where it is; a record of a host that does not
    // answer fails alone.
    let cloned = pipeline(&format!(
        "(hv-ls --hosts {f} -c here -c h6 --name '{prefix}fleet-*'; echo '{{\"name\": \"ghost\", \"host\": \"h9\"}}') \
         | hv-clone --hosts {f} -c here -c h6 -c h9 --connect-timeout 20s --linked --format jsonl"
    ));
    for (conn, n) in [(&here, "fleet-here-clone"), (&h6, "fleet-h6-clone")] {
        if let Ok(d) = conn.lookup_domain_by_name(&name(n)) {
            doms.push(Moved(d));
        }
    }
    cloned.assert_exit(1);
    let recs = cloned.records();
    let clones: Vec<(&str, &str, &str)> = recs
        .iter()
        .filter(|r| r["ok"] == true)
        .map(|r| {
            (
                r["host"].as_str().unwrap(),
                r["name"].as_str().unwrap(),
                r["copies"][0]["how"].as_str().unwrap(),
            )
        })
        .collect();
    let (a, b) = (name("fleet-here-clone"), name("fleet-h6-clone"));
    let mut clones = clones;
    clones.sort();
    assert_eq!(
        clones,
        [("h6", b.as_str(), "linked"), ("here", a.as_str(), "linked")],
        "{cloned:?}"
    );
    let ghost = recs.iter().find(|r| r["name"] == "ghost").unwrap();
    assert_eq!(
        (&ghost["host"], &ghost["error"]["code"]),
        (&Value::from("h9"), &Value::from("unreachable")),
        "{cloned:?}"
    );
    assert_eq!(doms.len(), 4, "each clone on its source's host: {cloned:?}");
    drop(doms);
    for n in ["fleet-here", "fleet-here-clone"] {
        let _ = std::fs::remove_file(format!("{}/{}.qcow2", hv_testbench::IMAGE_DIR, name(n)));
    }
    let pool = h6.lookup_storage_pool_by_name("default").unwrap();
    pool.refresh(0).unwrap();
    for v in pool.list_volumes().unwrap() {
        if v.starts_with(&name("fleet-")) {
            let _ = pool.lookup_storage_vol_by_name(&v).map(|v| v.delete(0));
        }
    }
}

/// hv-snap schedule over several hosts (a timer on one machine for the
/// fleet): each host's tagged VMs get their due snapshot there, each
/// record with its host, and a host that does not answer is one failed
/// item while the others are scheduled.
#[test]
fn bench_snapshot_schedules_run_on_every_host_given() {
    let hosts = hosts(2);
    let dir = scratch("hosts-schedule");
    let file = hosts.file(
        &dir,
        &[&format!(
            "h9 qemu+ssh://root@10.231.0.19/system?command={}/ssh",
            hv_testbench::HOSTS_DIR
        )],
    );
    let f = file.display();
    let (c1, c2) = (hosts.connect("h1"), hosts.connect("h2"));
    let one = GuestSpec::new("sched-one")
        .on_host(&hosts, "h1")
        .define(&c1);
    let two = GuestSpec::new("sched-two")
        .on_host(&hosts, "h2")
        .define(&c2);
    pipeline(&format!(
        "hv-ls --hosts {f} -c h1 -c h2 --name '{}sched-*' | hv-tag --hosts {f} --add snap:daily",
        run_prefix()
    ))
    .assert_ok();
    let out = pipeline(&format!(
        "hv-snap schedule --hosts {f} -c h1 -c h2 -c h9 --connect-timeout 20s --format jsonl"
    ));
    out.assert_exit(1);
    let recs = out.records();
    for (guest, host) in [(&one, "h1"), (&two, "h2")] {
        let rec = recs
            .iter()
            .find(|r| r["uuid"] == guest.uuid.as_str())
            .unwrap_or_else(|| panic!("no record of {}: {out:?}", guest.name));
        assert_eq!(
            (&rec["host"], &rec["ok"]),
            (&host.into(), &true.into()),
            "{rec}"
        );
        let taken = rec["policies"][0]["taken"]["snapshot"].as_str().unwrap();
        let there: Vec<String> = guest
            .domain
            .list_all_snapshots(0)
            .unwrap()
            .iter()
            .map(|s| s.name().unwrap())
            .collect();
        assert_eq!(there, [taken], "taken on {host}: {rec}");
    }
    let gone: Vec<&Value> = by_host(&recs, "h9");
    assert_eq!(gone.len(), 1, "{out:?}");
    assert_eq!(gone[0]["error"]["code"], "unreachable", "{out:?}");
}
