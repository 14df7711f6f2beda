//! Incremental backups on a running guest that writes exactly what the
//! test asks: the second backup reads about what changed, every backup
//! restores to the disk as it was (read while the guest was paused), and a
//! broken chain (checkpoint deleted by hand, guest restarted, a killed run,
//! two repositories in turn) costs one full read, never a failed night.

use super::*;

const MIB: u64 = 1 << 20;

/// The disk's SHA-256 with the guest paused, then a backup of it while
/// still paused, so the two describe the same instant.
fn backup_paused(b: &Bench, g: &Guest, extra: &[&str]) -> (Value, String) {
    g.domain.suspend().expect("pause the guest");
    let truth = image_sha256(&g.disk, None);
    let mut args = vec!["create", g.name.as_str()];
    args.extend(extra);
    let out = b.run(&args);
    g.domain.resume().expect("resume the guest");
    let rec = out.assert_ok().records().remove(0);
    (rec, truth)
}

fn restored_sha(b: &Bench, id: &str) -> String {
    let out = b.out_dir(&format!("restore-{id}"));
    let recs = b
        .restore_to(id, &out, &["--disk-format", "raw"])
        .assert_ok()
        .records();
    let path = PathBuf::from(recs[0]["disks"][0]["path"].as_str().unwrap());
    let sha = image_sha256(&path, None);
    let b3 = hv_testbench::image_blake3(&path);
    assert_eq!(recs[0]["disks"][0]["blake3"], b3.as_str(), "{}", recs[0]);
    std::fs::remove_dir_all(out).unwrap();
    sha
}

/// Each backup restores to an image with the SHA-256 its disk had.
fn assert_restores(b: &Bench, backups: &[(&Value, &String)]) {
    for (rec, truth) in backups {
        let id = rec["id"].as_str().unwrap();
        assert_eq!(&&restored_sha(b, id), truth, "backup {id}");
    }
}

/// This repository's checkpoints on the guest (hv's name prefix).
fn checkpoints(g: &Guest, b: &Bench) -> Vec<String> {
    let config: Value =
        serde_json::from_slice(&std::fs::read(b.repo.join("hv-backup.json")).unwrap()).unwrap();
    let prefix = format!("hv-{}-", &config["id"].as_str().unwrap()[..16]);
    let out = Command::new("virsh")
        .args(["-c", URI, "checkpoint-list", "--name", &g.uuid])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

fn read_of(rec: &Value) -> &Value {
    &rec["reads"][0]
}

fn shut_down(g: &Guest) {
    g.domain.shutdown().expect("ACPI shutdown");
    for _ in 0..600 {
        if !g.domain.is_active().unwrap_or(true) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("guest {} did not power off", g.name);
}

#[test]
fn incremental_backups_read_what_changed_and_survive_a_broken_chain() {
    let conn = connect();
    let g = GuestSpec::new("incr ünï").define(&conn);
    fill_disk(&g, 16, 8);
    g.start_ready();
    let b = Bench::new("incr");

    // First backup: full, with a checkpoint of this repository's prefix.
    let (first, truth1) = backup_paused(&b, &g, &[]);
    assert_eq!(read_of(&first)["read"], "full");
    let cp1 = first["checkpoint"]
        .as_str()
        .expect("a checkpoint")
        .to_owned();
    assert_eq!(checkpoints(&g, &b), [cp1]);
    assert!(first["read_bytes"].as_u64().unwrap() >= 24 * MIB);

    // 8 MiB rewritten over two chunks: the next backup reads them, not the disk.
    g.write_mib(20, 8);
    let (second, truth2) = backup_paused(&b, &g, &[]);
    assert_ne!(truth1, truth2);
    let read = read_of(&second);
    assert_eq!(read["read"], "incremental", "{second}");
    assert_eq!(read["base"], first["id"]);
    let bytes = second["read_bytes"].as_u64().unwrap();
    assert!((8 * MIB..=16 * MIB).contains(&bytes), "read {bytes} bytes");
    assert!(read["dirty_bytes"].as_u64().unwrap() >= 8 * MIB);
    assert_eq!(second["warnings"], serde_json::json!([]));
    // Its image hash, from the new chunks and the cache's parts for the
    // others (restore checks it against what the chunks reassemble to).
    let sealed = b.repo.join("backups").join(second["id"].as_str().unwrap());
    let manifest = Command::new("age")
        .args(["-d", "-i", b.identity()])
        .arg(sealed.join("manifest.age"))
        .output()
        .unwrap();
    let manifest: Value = serde_json::from_slice(&manifest.stdout).unwrap();
    assert_eq!(manifest["disks"][0]["read"], "incremental");
    assert!(manifest["disks"][0]["blake3"].is_string(), "{manifest}");
    let cp2 = second["checkpoint"].as_str().unwrap().to_owned();
    assert_eq!(checkpoints(&g, &b), [cp2], "the old checkpoint is gone");

    // Nothing written: nothing read.
    let (third, truth3) = backup_paused(&b, &g, &[]);
    assert_eq!(truth3, truth2);
    assert_eq!(read_of(&third)["read"], "incremental");
    assert_eq!(third["read_bytes"], 0);

    // The guest restarts: the bitmap lives in the qcow2 and still counts.
    shut_down(&g);
    std::fs::write(&g.log, b"").unwrap();
    g.start_ready();
    g.write_mib(40, 4);
    let (fourth, truth4) = backup_paused(&b, &g, &[]);
    assert_eq!(read_of(&fourth)["read"], "incremental", "{fourth}");
    let bytes = fourth["read_bytes"].as_u64().unwrap();
    assert!((4 * MIB..=8 * MIB).contains(&bytes), "read {bytes} bytes");

    // The checkpoint deleted by hand: one full read with a warning, exit 0.
    let cp4 = fourth["checkpoint"].as_str().unwrap().to_owned();
    let st = Command::new("virsh")
        .args(["-c", URI, "checkpoint-delete", &g.uuid, &cp4])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    g.write_mib(8, 4);
    let (fifth, truth5) = backup_paused(&b, &g, &[]);
    let read = read_of(&fifth);
    assert_eq!(read["read"], "full");
    assert!(
        read["reason"].as_str().unwrap().contains(&cp4),
        "the reason names the checkpoint: {read}"
    );
    assert!(fifth["warnings"][0].as_str().unwrap().contains("is gone"));
    // … and the chain is whole again.
    g.write_mib(0, 4);
    let (sixth, truth6) = backup_paused(&b, &g, &[]);
    assert_eq!(read_of(&sixth)["read"], "incremental");

    // --full reads everything and says so, without a warning.
    let (full, truth7) = backup_paused(&b, &g, &["--full"]);
    assert_eq!(read_of(&full)["read"], "full");
    assert_eq!(read_of(&full)["reason"], "--full");
    assert_eq!(full["warnings"], serde_json::json!([]));
    assert_eq!(checkpoints(&g, &b).len(), 1);

    // Every backup restores to the disk as it was, and deep-verifies.
    assert_restores(
        &b,
        &[
            (&first, &truth1),
            (&second, &truth2),
            (&third, &truth3),
            (&fourth, &truth4),
            (&fifth, &truth5),
            (&sixth, &truth6),
            (&full, &truth7),
        ],
    );
    b.run(&["verify", "--deep", "--identity", b.identity()])
        .assert_ok()
        .records();
}

#[test]
fn two_repositories_and_killed_runs_keep_separate_whole_chains() {
    let conn = connect();
    let g = GuestSpec::new("incr-two").define(&conn);
    fill_disk(&g, 16, 8);
    g.start_ready();
    let a = Bench::new("incr-a");
    let b = Bench::new("incr-b");

    let (a1, _) = backup_paused(&a, &g, &[]);
    let (b1, _) = backup_paused(&b, &g, &[]);
    assert_eq!(read_of(&a1)["read"], "full");
    assert_eq!(read_of(&b1)["read"], "full");
    g.write_mib(12, 4);
    let (a2, truth_a2) = backup_paused(&a, &g, &[]);
    g.write_mib(32, 4);
    let (b2, truth_b2) = backup_paused(&b, &g, &[]);
    // Each repository reads what changed since its own last backup.
    assert_eq!(read_of(&a2)["read"], "incremental");
    assert_eq!(a2["read_bytes"].as_u64().unwrap(), 4 * MIB);
    assert_eq!(read_of(&b2)["read"], "incremental");
    assert_eq!(b2["read_bytes"].as_u64().unwrap(), 8 * MIB);
    assert_eq!(checkpoints(&g, &a).len(), 1);
    assert_eq!(checkpoints(&g, &b).len(), 1);

    // Runs killed at random moments: the next one succeeds and is exact.
    let mut seed = u64::from(std::process::id());
    for round in 0..4 {
        g.write_mib(4 * round, 4);
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut child = Command::new(HV_BACKUP)
            .args(a.args(&["create", &g.name]))
            .env("HV_CONNECT", URI)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(100 + (seed >> 33) % 900));
        let _ = child.kill();
        let _ = child.wait();
        a.run(&["verify"]).assert_ok().records();
    }
    let (after, truth) = backup_paused(&a, &g, &[]);
    assert_eq!(
        checkpoints(&g, &a).len(),
        1,
        "a killed run's checkpoint is gone"
    );
    assert_eq!(
        checkpoints(&g, &b).len(),
        1,
        "the other repository's chain is kept"
    );
    assert_eq!(restored_sha(&a, after["id"].as_str().unwrap()), truth);
    assert_eq!(restored_sha(&a, a2["id"].as_str().unwrap()), truth_a2);

    // The other repository still reads incrementally after all that.
    let (b3, truth_b3) = backup_paused(&b, &g, &[]);
    assert_eq!(read_of(&b3)["read"], "incremental", "{b3}");
    assert_eq!(restored_sha(&b, b3["id"].as_str().unwrap()), truth_b3);
    assert_eq!(restored_sha(&b, b2["id"].as_str().unwrap()), truth_b2);
}

/// The names of the persistent dirty bitmaps in a qcow2 image.
fn bitmaps(image: &Path) -> Vec<String> {
    let out = Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(image)
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    let Some(list) = info["format-specific"]["data"]["bitmaps"].as_array() else {
        return Vec::new();
    };
    list.iter()
        .map(|b| b["name"].as_str().unwrap().to_owned())
        .collect()
}

/// A stopped VM's backup, its only checkpoint and the image's only bitmap.
fn backup_stopped(b: &Bench, g: &Guest) -> (Value, String) {
    let truth = image_sha256(&g.disk, None);
    let rec = b.run(&["create", &g.name]).assert_ok().records().remove(0);
    assert_eq!(rec["mode"], "offline", "{rec}");
    let checkpoint = rec["checkpoint"].as_str().expect("a checkpoint").to_owned();
    assert_eq!(
        checkpoints(g, b),
        std::slice::from_ref(&checkpoint),
        "one checkpoint"
    );
    assert_eq!(bitmaps(&g.disk), [checkpoint], "one bitmap in the image");
    (rec, truth)
}

#[test]
fn a_stopped_vm_is_read_incrementally_through_its_images_bitmaps() {
    let conn = connect();
    let g = GuestSpec::new("incr-off").define(&conn);
    fill_disk(&g, 16, 8);
    let b = Bench::new("incr-off");

    // libvirt makes no checkpoint of a stopped VM; hv adds the bitmap.
    let (first, truth1) = backup_stopped(&b, &g);
    assert_eq!(read_of(&first)["read"], "full");
    assert!(first["read_bytes"].as_u64().unwrap() >= 24 * MIB);

    // Unchanged: nothing is read.
    let (second, truth2) = backup_stopped(&b, &g);
    assert_eq!(read_of(&second)["read"], "incremental", "{second}");
    assert_eq!(second["read_bytes"], 0);
    assert_eq!(second["warnings"], serde_json::json!([]));

    // The guest runs, writes 8 MiB and powers off: QEMU kept the bitmap.
    g.start_ready();
    g.write_mib(20, 8);
    shut_down(&g);
    let (third, truth3) = backup_stopped(&b, &g);
    let read = read_of(&third);
    assert_eq!(read["read"], "incremental", "{third}");
    assert_eq!(read["base"], second["id"]);
    let bytes = third["read_bytes"].as_u64().unwrap();
    assert!((8 * MIB..=16 * MIB).contains(&bytes), "read {bytes} bytes");

    // A live backup continues the chain made while the VM was off.
    g.start_ready();
    g.write_mib(40, 4);
    let (fourth, truth4) = backup_paused(&b, &g, &[]);
    assert_eq!(read_of(&fourth)["read"], "incremental", "{fourth}");
    let bytes = fourth["read_bytes"].as_u64().unwrap();
    assert!((4 * MIB..=8 * MIB).contains(&bytes), "read {bytes} bytes");

    // Killed while running: its bitmaps were never saved, so the next
    // backup reads in full, says why, and the chain is whole after it.
    g.write_mib(0, 4);
    g.kill_qemu();
    let (fifth, truth5) = backup_stopped(&b, &g);
    assert_eq!(read_of(&fifth)["read"], "full", "{fifth}");
    assert!(!fifth["warnings"].as_array().unwrap().is_empty(), "{fifth}");
    let (sixth, truth6) = backup_stopped(&b, &g);
    assert_eq!(read_of(&sixth)["read"], "incremental", "{sixth}");
    assert_eq!(sixth["read_bytes"], 0);

    assert_restores(
        &b,
        &[
            (&first, &truth1),
            (&second, &truth2),
            (&third, &truth3),
            (&fourth, &truth4),
            (&fifth, &truth5),
            (&sixth, &truth6),
        ],
    );
}
