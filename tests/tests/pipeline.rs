//! Commands composed the way users compose them: through a shell pipe.

use hv_testbench::{assert_fields, connect, pipeline, run_prefix, GuestSpec};
use serde_json::json;

#[test]
fn bench_listing_feeds_tagging_feeds_listing() {
    let conn = connect();
    let guests: Vec<_> = ["pipe a", "pipe b", "pipe c"]
        .iter()
        .map(|n| GuestSpec::new(n).define(&conn))
        .collect();
    guests[0].start_ready();
    let glob = format!("{}pipe*", run_prefix());
    let out = pipeline(&format!(
        "hv-ls --name '{glob}' --state shutoff | hv-tag --add cold -j 2 | hv-ls"
    ));
    let recs = out.assert_ok().records();
    let mut names: Vec<&str> = recs.iter().map(|r| r["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(
        names,
        vec![guests[1].name.as_str(), guests[2].name.as_str()]
    );
    out.assert_each(json!({"tags": ["cold"], "state": "shutoff"}));

    let tagged = pipeline(&format!("hv-ls --name '{glob}' --tag cold --format csv"));
    let text = String::from_utf8(tagged.output.stdout).unwrap();
    assert_eq!(text.lines().count(), 3, "header and two rows: {text}");
}

#[test]
fn bench_ls_shutoff_into_start_starts_exactly_those() {
    let conn = connect();
    let names = ["only a", "only b", "only c"];
    let guests: Vec<_> = names
        .iter()
        .map(|n| GuestSpec::new(n).define(&conn))
        .collect();
    guests[0].start_ready();
    let glob = format!("{}only*", run_prefix());
    let out = pipeline(&format!(
        "hv-ls --name '{glob}' --state shutoff | hv-start --wait -j 4"
    ));
    let recs = out.assert_ok().records();
    let mut started: Vec<&str> = recs.iter().map(|r| r["name"].as_str().unwrap()).collect();
    started.sort();
    assert_eq!(
        started,
        vec![guests[1].name.as_str(), guests[2].name.as_str()]
    );
    out.assert_each(json!({"ok": true, "changed": true, "state": "running"}));
    let running = pipeline(&format!(
        "hv-ls --name '{glob}' --state running | hv-stop --force | jq -s length"
    ));
    assert_eq!(running.stdout().trim(), "3", "{running:?}");
}

#[test]
fn bench_snapshot_records_name_their_vm_to_the_next_command() {
    let conn = connect();
    let g = GuestSpec::new("snap pipe").define(&conn);
    let out = pipeline(&format!(
        "hv-ls '{}' | hv-snap create --name piped | hv-ls",
        g.name
    ));
    assert_fields(
        &out.assert_ok().records()[0],
        json!({"uuid": g.uuid, "snapshot_count": 1}),
    );
}

/// A dry run promises only what the real run may do: it connects as the
/// real run would, so a user without write access is told so, and it
/// reads what the real run reads.
#[test]
fn bench_dry_runs_promise_only_what_the_real_run_may_do() {
    let conn = connect();
    let g = GuestSpec::new("dry run");
    let g = g.define(&conn);
    let start = hv_testbench::bin("hv-start");
    let out = hv_testbench::hv_as_nobody(&start, &["-c", hv_testbench::URI, "--dry-run", &g.name]);
    let recs = out.assert_exit(3).records();
    assert!(recs.iter().all(|r| r["ok"] != true), "{out:?}");

    let dir = hv_testbench::scratch("dry-backup");
    let repo = dir.join("repo");
    let init = hv_testbench::backup_repo(&dir, &repo);
    let mut args: Vec<&str> = vec!["create", "--dry-run", &g.name];
    args.extend(init.iter().map(String::as_str));
    let out = hv_testbench::hv(&hv_testbench::bin("hv-backup"), &args, "");
    assert_fields(
        &out.assert_ok().records()[0],
        json!({"ok": true, "dry_run": true, "disks": ["vda"]}),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Global options are taken before the subcommand as after it, as git and
/// virsh take them.
#[test]
fn bench_global_options_go_before_or_after_the_subcommand() {
    let conn = connect();
    let g = GuestSpec::new("global opts").define(&conn);
    let snap = hv_testbench::bin("hv-snap");
    for args in [
        vec![
            "-c",
            hv_testbench::URI,
            "--format",
            "jsonl",
            "ls",
            g.name.as_str(),
        ],
        vec!["--json", "ls", "-c", hv_testbench::URI, g.name.as_str()],
    ] {
        hv_testbench::hv(&snap, &args, "").assert_ok();
    }
    // The value given before the subcommand is the one used.
    hv_testbench::hv(&snap, &["-c", "qemu:///nonexistent", "ls", &g.name], "").assert_exit(3);

    let dir = hv_testbench::scratch("global-backup");
    let repo = dir.join("repo");
    let args = hv_testbench::backup_repo(&dir, &repo);
    let backup = hv_testbench::bin("hv-backup");
    let mut create = vec![
        "-c",
        hv_testbench::URI,
        "--format",
        "json",
        "create",
        &g.name,
    ];
    create.extend(args.iter().map(String::as_str));
    let out = hv_testbench::hv(&backup, &create, "");
    let text = out.assert_ok().stdout();
    assert!(
        text.trim_start().starts_with('['),
        "--format json before create: {text}"
    );
    hv_testbench::hv(
        &hv_testbench::bin("hv-iso"),
        &[
            "--json",
            "--library",
            dir.join("iso").to_str().unwrap(),
            "ls",
        ],
        "",
    )
    .assert_ok();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Seconds since the guest's QEMU started (ps etimes), while it runs.
fn qemu_age(guest: &hv_testbench::Guest) -> i64 {
    let pid = std::fs::read_to_string(format!("/var/run/libvirt/qemu/{}.pid", guest.name)).unwrap();
    let out = std::process::Command::new("ps")
        .args(["-o", "etimes=", "-p", pid.trim()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn bench_boot_order_starts_groups_in_order_and_stops_them_in_reverse() {
    let conn = connect();
    let first = GuestSpec::new("order first").define(&conn);
    let also_first = GuestSpec::new("order also first").define(&conn);
    let second = GuestSpec::new("order second").define(&conn);
    let untagged = GuestSpec::new("order untagged").define(&conn);
    let tag = |g: &hv_testbench::Guest, tags: &str| {
        pipeline(&format!("hv-tag {tags} '{}' >/dev/null", g.name)).assert_ok();
    };
    tag(&first, "--add boot:1 --add boot-delay:3s");
    tag(&also_first, "--add boot:1");
    tag(&second, "--add boot:2");
    let glob = format!("{}order *", run_prefix());

    // Given by name, in the wrong order: started by their tags.
    let out = pipeline(&format!(
        "hv-start --order --format jsonl '{}' '{}' '{}' '{}'",
        untagged.name, second.name, also_first.name, first.name
    ));
    let names = out.assert_ok().names();
    let group_one = [first.name.clone(), also_first.name.clone()];
    assert!(
        group_one.contains(&names[0]) && group_one.contains(&names[1]),
        "{names:?}"
    );
    assert_eq!(names[2..], [second.name.clone(), untagged.name.clone()]);
    // boot-delay:3s of the first group held the second back.
    let gap = qemu_age(&first) - qemu_age(&second);
    assert!(gap >= 2, "the second group started {gap}s after the first");
    // A group starts at once: both of the first started before the delay
    // ended, and so before the second group.
    let gap = qemu_age(&also_first) - qemu_age(&second);
    assert!(
        gap >= 2,
        "the first group's other VM started {gap}s before the second"
    );

    // hv-ls selects the ordered VMs by a tag glob; they stop in reverse.
    let listed = pipeline(&format!(
        "hv-ls --name '{glob}' --tag 'boot:*' --format jsonl"
    ));
    assert_eq!(
        listed.assert_ok().records().len(),
        3,
        "the untagged one is not listed"
    );
    let out = pipeline(&format!(
        "hv-ls --name '{glob}' --format jsonl | hv-stop --order --force --format jsonl"
    ));
    let names = out.assert_ok().names();
    assert_eq!(
        names[..2],
        [untagged.name.clone(), second.name.clone()],
        "{names:?}"
    );
    assert!(
        group_one.contains(&names[2]) && group_one.contains(&names[3]),
        "{names:?}"
    );
    out.assert_each(json!({"action": "stop", "ok": true, "state": "shutoff"}));
}
