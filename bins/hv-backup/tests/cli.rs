//! hv-backup on real guests: stopped and running (and writing) VMs backed
//! up, restored, booted and compared byte for byte; damaged chunks, wrong
//! keys, kills at random moments, a full disk and retention.

// These tests need the bench (tests/run.sh); `cargo test` without
// `--features bench` still builds the command for the transcripts.
#![cfg(feature = "bench")]

use hv_testbench::{
    assert_fields, connect, garage, garage_cluster, hv, image_blake3, image_sha256, remove_domain,
    run_prefix, Guest, GuestSpec, Run, URI,
};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const HV_BACKUP: &str = env!("CARGO_BIN_EXE_hv-backup");

/// A repository, a host key directory and an identity, all under one
/// directory that is removed at the end.
struct Bench {
    dir: PathBuf,
    repo: PathBuf,
    identity: PathBuf,
}

impl Bench {
    fn new(label: &str) -> Bench {
        Bench::at(
            &PathBuf::from("/var/tmp").join(format!("{}{label}", run_prefix())),
            None,
        )
    }

    /// A bench whose repository lives at `repo` (e.g. on a small tmpfs).
    fn at(dir: &Path, repo: Option<PathBuf>) -> Bench {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        let identity = dir.join("identity.txt");
        let st = Command::new("age-keygen")
            .arg("-o")
            .arg(&identity)
            .stderr(Stdio::null())
            .status();
        assert!(st.expect("age-keygen (Debian package age)").success());
        let b = Bench {
            dir: dir.to_path_buf(),
            repo: repo.unwrap_or_else(|| dir.join("repo")),
            identity,
        };
        let out = b.run(&[
            "init",
            b.repo.to_str().unwrap(),
            "--recipient",
            &b.recipient(),
        ]);
        out.assert_ok().records();
        b
    }

    /// A bench whose repository is on the bench's Garage, under a prefix
    /// of its own.
    fn s3(label: &str) -> Bench {
        garage();
        Bench::s3_here(label)
    }

    /// A bench on whatever store the environment names (after
    /// [`garage_cluster`]).
    fn s3_here(label: &str) -> Bench {
        let repo = PathBuf::from(format!("s3://hv-bench/{}{label}", run_prefix()));
        Bench::at(
            &PathBuf::from("/var/tmp").join(format!("{}{label}", run_prefix())),
            Some(repo),
        )
    }

    fn recipient(&self) -> String {
        let out = Command::new("age-keygen")
            .arg("-y")
            .arg(&self.identity)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn key_dir(&self) -> String {
        self.dir.join("keys").display().to_string()
    }

    /// `args` plus this bench's repository, key, cache and scratch
    /// directories, as far as the subcommand takes them.
    fn args(&self, args: &[&str]) -> Vec<String> {
        let sub = args[0];
        let mut full: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let path = |p: &Path| p.display().to_string();
        if !matches!(sub, "init" | "sync") {
            full.extend(["--repo".into(), path(&self.repo)]);
        }
        if matches!(sub, "init" | "create" | "recover-key") {
            full.extend(["--key-dir".into(), self.key_dir()]);
        }
        if sub == "create" {
            full.extend(["--cache-dir".into(), path(&self.dir.join("cache"))]);
        }
        if matches!(sub, "create" | "restore" | "verify") {
            full.extend(["--scratch-dir".into(), path(&self.dir.join("scratch"))]);
        }
        full
    }

    /// Runs hv-backup with this bench's repository, key and scratch directories.
    fn run(&self, args: &[&str]) -> Run {
        self.run_with_input(args, "")
    }

    fn run_with_input(&self, args: &[&str], input: &str) -> Run {
        let full = self.args(args);
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        hv(HV_BACKUP, &refs, input)
    }

    fn identity(&self) -> &str {
        self.identity.to_str().unwrap()
    }

    /// `hv-backup restore ID --identity KEY --dir DIR EXTRA…`, the restore
    /// most tests check.
    fn restore_to(&self, id: &str, dir: &Path, extra: &[&str]) -> Run {
        let dir = dir.to_str().unwrap();
        let mut args = vec!["restore", id, "--identity", self.identity(), "--dir", dir];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    fn out_dir(&self, name: &str) -> PathBuf {
        let d = self.dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A file of the repository's chunk store (any one).
    fn some_chunk(&self) -> PathBuf {
        let chunks = self.repo.join("chunks");
        for sub in std::fs::read_dir(chunks).unwrap().flatten() {
            if let Some(f) = std::fs::read_dir(sub.path()).unwrap().flatten().next() {
                return f.path();
            }
        }
        panic!("no chunk in {}", self.repo.display());
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Fills a guest's disk with what VM disks hold: random data, text-like
/// data, and zeros (left unallocated), through a raw file and qemu-img.
fn fill_disk(g: &Guest, random_mib: u32, text_mib: u32) {
    let raw = g.disk.with_extension("fill.raw");
    let size_mib = 64;
    let mut data = vec![0u8; (size_mib << 20) as usize];
    let mut x: u64 =
        0x9e37_79b9_7f4a_7c15 ^ u64::from(random_mib) ^ (u64::from(std::process::id()) << 20);
    for b in data[..(random_mib << 20) as usize].iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let text = b"Nov 21 02:00:01 web1 systemd[1]: Started Daily apt upgrade and clean activities. ";
    let from = (random_mib << 20) as usize;
    for (i, b) in data[from..from + (text_mib << 20) as usize]
        .iter_mut()
        .enumerate()
    {
        *b = text[i % text.len()];
    }
    std::fs::write(&raw, &data).unwrap();
    raw_into_disk(&raw, g);
}

/// The guest-visible bytes of `image` as a raw file at `raw`.
fn convert_to_raw(image: &Path, raw: &Path) {
    let st = Command::new("qemu-img")
        .args(["convert", "-q", "-O", "raw"])
        .arg(image)
        .arg(raw)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Makes the raw image `raw` the guest's qcow2 disk, and removes it.
fn raw_into_disk(raw: &Path, g: &Guest) {
    let st = Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(raw)
        .arg(&g.disk)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::remove_file(raw).unwrap();
}

/// A domain defined by a restore, removed with its disk files at the end.
struct Restored {
    domain: virt::domain::Domain,
}

impl Drop for Restored {
    fn drop(&mut self) {
        remove_domain(&self.domain);
    }
}

/// `restore ID --disk vda -o -`: the disk, raw, on stdout.
fn stream_vda(b: &Bench, id: &str) -> Run {
    b.run(&stream_vda_args(b, id))
}

fn stream_vda_args<'a>(b: &'a Bench, id: &'a str) -> [&'a str; 8] {
    [
        "restore",
        id,
        "--identity",
        b.identity(),
        "--disk",
        "vda",
        "-o",
        "-",
    ]
}

fn backup_id(recs: &[Value]) -> String {
    recs[0]["id"].as_str().expect("a backup id").to_owned()
}

/// Times in records are RFC 3339 UTC, as `2026-11-21T02:00:00Z`.
fn assert_rfc3339_utc(text: &str) {
    assert!(
        hv_common::time::parse_rfc3339(text).is_some(),
        "not RFC 3339 UTC: {text}"
    );
}

#[test]
fn a_stopped_vm_is_backed_up_restored_and_boots() {
    let conn = connect();
    let g = GuestSpec::new("backup-off").define(&conn);
    fill_disk(&g, 6, 6);
    let source_sha = image_sha256(&g.disk, None);
    let source_b3 = image_blake3(&g.disk);
    let b = Bench::new("off");

    let recs = b.run(&["create", &g.name]).assert_ok().records();
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(
        (r["name"].as_str(), r["ok"].as_bool(), r["mode"].as_str()),
        (Some(g.name.as_str()), Some(true), Some("offline"))
    );
    assert_eq!(r["size_bytes"], 64 << 20);
    let read = r["read_bytes"].as_u64().unwrap();
    assert!(
        (12 << 20..20 << 20).contains(&read),
        "zeros are not read: read {read}"
    );
    assert!(
        r["stored_bytes"].as_u64().unwrap() < 8 << 20,
        "text compresses: {r}"
    );
    let id = backup_id(&recs);
    let created_at = r["created_at"].as_str().expect("created_at").to_owned();
    assert_rfc3339_utc(&created_at);
    assert!(r.get("time").is_none(), "renamed to created_at: {r}");

    // Unchanged: nothing new is stored.
    let again = b.run(&["create", &g.uuid]).assert_ok().records();
    assert_eq!(
        (
            again[0]["new_bytes"].as_u64(),
            again[0]["stored_bytes"].as_u64()
        ),
        (Some(0), Some(0))
    );
    // Its image hash came from the host's cache; deep verify recomputes it.
    b.run(&[
        "verify",
        "--deep",
        "--identity",
        b.identity(),
        &backup_id(&again),
    ])
    .assert_ok()
    .records();
    // One MiB changed mid-disk: hashing resumes from the cache there.
    let st = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x55 40M 1M"])
        .arg(&g.disk)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let changed = b.run(&["create", &g.name]).assert_ok().records();
    assert_eq!(changed[0]["new_bytes"], 4 << 20, "one 4 MiB chunk is new");
    b.run(&[
        "verify",
        "--deep",
        "--identity",
        b.identity(),
        &backup_id(&changed),
    ])
    .assert_ok()
    .records();

    let listed = b.run(&["ls", "--vm", &g.name]).assert_ok().records();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[2]["id"], id.as_str(), "newest first");
    assert!(listed[0]["age_hours"].as_f64().unwrap() < 1.0);
    assert_eq!(
        listed[2]["created_at"], created_at,
        "ls and create name one time"
    );
    for old in ["time", "time_unix"] {
        assert!(listed[2].get(old).is_none(), "{old} is gone: {}", listed[2]);
    }

    let deep = b
        .run(&["verify", "--deep", "--identity", b.identity(), &id])
        .assert_ok()
        .records();
    assert_eq!(
        (deep[0]["ok"].as_bool(), deep[0]["deep"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(deep[0]["created_at"], created_at);
    assert!(deep[0].get("time").is_none(), "{}", deep[0]);

    // Restore as a new domain beside the original, then boot it.
    let out_dir = b.out_dir("restored");
    let new_name = format!("{}backup-off restored ü", run_prefix());
    let recs = b
        .restore_to(&id, &out_dir, &["--define", "--name", &new_name])
        .assert_ok()
        .records();
    let restored = Restored {
        domain: conn
            .lookup_domain_by_name(&new_name)
            .expect("restored domain defined"),
    };
    assert_eq!(recs[0]["domain"], new_name.as_str());
    assert_eq!(recs[0]["created_at"], created_at);
    let disk = &recs[0]["disks"][0];
    let path = PathBuf::from(disk["path"].as_str().unwrap());
    assert_eq!(disk["format"], "qcow2");
    assert_eq!(disk["blake3"], source_b3.as_str(), "{disk}");
    assert_eq!(disk["sha256"], Value::Null, "a new backup has no SHA-256");
    assert_eq!(
        image_sha256(&path, None),
        source_sha,
        "restored disk holds the backed-up bytes"
    );
    assert_ne!(restored.domain.uuid_string().unwrap(), g.uuid);
    let xml = restored.domain.xml_desc(0).unwrap();
    assert!(
        xml.contains(path.to_str().unwrap()),
        "domain points at the restored disk"
    );
    restored.domain.create().expect("restored VM starts");
    wait_for_log(&g.log, &restored.domain);

    // Restoring onto an existing file is refused and the file is untouched.
    let restore = |more: &[&str]| {
        let mut args = vec!["restore", &id, "--identity", b.identity()];
        args.extend(more);
        b.run(&args)
    };
    let (dir, path_arg) = (out_dir.to_str().unwrap(), path.to_str().unwrap());
    let before = std::fs::read(&path).unwrap();
    restore(&["--dir", dir, "--name", &new_name]).assert_failed("invalid_state");
    assert_eq!(std::fs::read(&path).unwrap(), before);

    // Replacing it with --force while that VM runs is refused before a byte
    // is written, with --define or without: the running guest's disk stays
    // the same file.
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(&path).unwrap().ino();
    let attempts: [(&[&str], &str); 2] = [
        (
            &["--dir", dir, "--name", &new_name, "--define", "--force"],
            "running",
        ),
        (&["-o", path_arg, "--disk", "vda", "--force"], "running VM"),
    ];
    for (more, says) in attempts {
        let recs = restore(more).assert_failed("invalid_state").records();
        let message = recs[0]["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
        assert_eq!(
            std::fs::metadata(&path).unwrap().ino(),
            inode,
            "replaced under the running VM"
        );
    }
}

/// The restored guest writes "ready" to the serial log of its XML (the
/// original's path, as copied): wait for a second "ready" line there.
fn wait_for_log(log: &Path, dom: &virt::domain::Domain) {
    for _ in 0..600 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.matches("hv-test-guest: ready").count() >= 1 && dom.is_active().unwrap_or(false) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the restored guest did not boot");
}

#[test]
fn a_running_writing_vm_is_backed_up_live_without_pausing() {
    let conn = connect();
    let g = GuestSpec::new("backup-live").writer().define(&conn);
    fill_disk(&g, 4, 4);
    g.start_ready();
    std::thread::sleep(Duration::from_secs(2));
    let b = Bench::new("live");

    let recs = b.run(&["create", &g.name]).assert_ok().records();
    assert_eq!(recs[0]["mode"], "live");
    assert!(
        g.virsh_domstate().starts_with("running"),
        "{}",
        g.virsh_domstate()
    );
    let no_job = Command::new("virsh")
        .args(["-c", URI, "domjobinfo", &g.uuid])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&no_job.stdout).contains("None"),
        "the backup job ended"
    );
    assert_eq!(
        std::fs::read_dir(b.dir.join("scratch")).unwrap().count(),
        0,
        "scratch cleaned up"
    );
    let id = backup_id(&recs);

    // The restored disk is exactly the backup's image, and holds the guest's own writes.
    let out = b.out_dir("out");
    let recs = b
        .restore_to(&id, &out, &["--disk-format", "raw"])
        .assert_ok()
        .records();
    let disk = &recs[0]["disks"][0];
    let path = PathBuf::from(disk["path"].as_str().unwrap());
    assert_eq!(image_blake3(&path), disk["blake3"].as_str().unwrap());
    let head = std::fs::read(&path).unwrap();
    assert!(
        head.starts_with(b"hv-test-guest counter"),
        "sector 0 holds the guest's counter"
    );
    assert!(g.virsh_domstate().starts_with("running"));

    // Stream the disk raw to stdout: the same bytes.
    let streamed = stream_vda(&b, &id);
    streamed.assert_ok();
    assert_eq!(streamed.stdout, head);
}

/// A stopped VM's image is read from its file where qemu-img places the
/// data, and through qemu-nbd where it does not: a backing file, and
/// compressed clusters. Every kind comes back the same.
#[test]
fn every_kind_of_cluster_of_a_stopped_vm_comes_back_the_same() {
    let conn = connect();
    let g = GuestSpec::new("backup-clusters").define(&conn);
    fill_disk(&g, 4, 4);
    let base = g.disk.with_extension("base.qcow2");
    std::fs::rename(&g.disk, &base).unwrap();
    let qemu = |program: &str, args: &[&str]| {
        let out = Command::new(program).args(args).output().unwrap();
        assert!(out.status.success(), "{program} {args:?}: {out:?}");
    };
    let (top, under) = (g.disk.to_str().unwrap(), base.to_str().unwrap());
    qemu(
        "qemu-img",
        &[
            "create", "-q", "-f", "qcow2", "-b", under, "-F", "qcow2", top,
        ],
    );
    // Over the base's random data: compressed clusters, then plain ones,
    // each half over data of the base and half over its zeros.
    qemu(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -c -P 0x55 2M 4M", top],
    );
    qemu(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x33 6M 6M", top],
    );
    qemu(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x77 40M 1M", top],
    );
    let expected = g.disk.with_extension("expected.raw");
    qemu(
        "qemu-img",
        &[
            "convert",
            "-q",
            "-O",
            "raw",
            top,
            expected.to_str().unwrap(),
        ],
    );
    let b = Bench::new("clusters");
    let recs = b.run(&["create", &g.name]).assert_ok().records();
    let id = backup_id(&recs);
    let streamed = stream_vda(&b, &id);
    streamed.assert_ok();
    let want = std::fs::read(&expected).unwrap();
    assert_eq!(streamed.stdout.len(), want.len());
    let first_difference = streamed.stdout.iter().zip(&want).position(|(a, b)| a != b);
    assert_eq!(first_difference, None, "the restored disk differs");
    let _ = std::fs::remove_file(&expected);
    let _ = std::fs::remove_file(&base);
}

#[test]
fn damage_and_wrong_keys_are_caught_and_named() {
    let conn = connect();
    let g = GuestSpec::new("backup-damage").define(&conn);
    fill_disk(&g, 2, 2);
    let b = Bench::new("damage");
    let id = backup_id(&b.run(&["create", &g.name]).assert_ok().records());
    b.run(&["verify", &id]).assert_ok().records();

    // A foreign identity opens nothing.
    let other = b.dir.join("other.txt");
    Command::new("age-keygen")
        .arg("-o")
        .arg(&other)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let out = b.run(&[
        "verify",
        "--deep",
        "--identity",
        other.to_str().unwrap(),
        &id,
    ]);
    out.assert_exit(1)
        .assert_stderr_contains("does not match any recipient");

    // One flipped bit: the fast verify (sizes) passes, deep verify and restore fail naming the chunk.
    let chunk = b.some_chunk();
    let chunk_id = chunk.file_name().unwrap().to_str().unwrap().to_owned();
    let mut bytes = std::fs::read(&chunk).unwrap();
    let at = bytes.len() - 40;
    bytes[at] ^= 0x08;
    std::fs::write(&chunk, &bytes).unwrap();
    b.run(&["verify", &id]).assert_ok().records();
    let recs = b
        .run(&["verify", "--deep", "--identity", b.identity(), &id])
        .assert_failed("corrupt")
        .records();
    assert!(
        recs[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&chunk_id),
        "{recs:?}"
    );
    let out = b.out_dir("out");
    let recs = b
        .restore_to(&id, &out, &[])
        .assert_failed("corrupt")
        .records();
    assert!(recs[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains(&chunk_id));
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        0,
        "a failed restore leaves no file"
    );

    // A missing chunk fails even the fast verify.
    std::fs::remove_file(&chunk).unwrap();
    let recs = b.run(&["verify", &id]).assert_failed("corrupt").records();
    assert!(recs[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("1 chunks missing"));

    // A chunk list cut at a line boundary still parses, but its index counts
    // the chunks: verify says so, and gc deletes nothing.
    let list = b.repo.join("backups").join(&id).join("chunks");
    let text = std::fs::read_to_string(&list).unwrap();
    let kept: Vec<&str> = text.lines().collect();
    std::fs::write(&list, format!("{}\n", kept[..kept.len() - 1].join("\n"))).unwrap();
    let recs = b.run(&["verify", &id]).assert_failed("corrupt").records();
    let message = recs[0]["error"]["message"].as_str().unwrap();
    assert!(message.contains("chunk list"), "{message}");
    let before = count_chunks(&b.repo);
    let out = b.run(&["gc"]);
    assert_ne!(out.code(), Some(0), "gc ran on a damaged list: {out:?}");
    assert_eq!(count_chunks(&b.repo), before, "gc deleted a chunk");
}

#[test]
fn killed_backups_leave_no_partial_backup_and_the_next_run_succeeds() {
    let conn = connect();
    let off = GuestSpec::new("backup-kill-off").disk_mib(64).define(&conn);
    fill_disk(&off, 24, 24);
    let live = GuestSpec::new("backup-kill-live").writer().define(&conn);
    fill_disk(&live, 24, 24);
    live.start_ready();
    let b = Bench::new("kill");
    let mut seed = std::process::id() as u64;
    for round in 0..6 {
        let vm = if round % 2 == 0 {
            &off.name
        } else {
            &live.name
        };
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = 50 + (seed >> 33) % 700;
        let mut child = Command::new(HV_BACKUP)
            .args(b.args(&["create", vm]))
            .env("HV_CONNECT", URI)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
        // Whatever survived is whole.
        b.run(&["verify"]).assert_ok();
    }
    for vm in [&off.name, &live.name] {
        let recs = b.run(&["create", vm]).assert_ok().records();
        b.run(&[
            "verify",
            "--deep",
            "--identity",
            b.identity(),
            &backup_id(&recs),
        ])
        .assert_ok()
        .records();
    }
    let gc = b.run(&["gc"]).assert_ok().records();
    assert_eq!(gc[0]["ok"], true);
    assert_eq!(std::fs::read_dir(b.repo.join("tmp")).unwrap().count(), 0);
    b.run(&["verify"]).assert_ok().records();
}

#[test]
fn prune_keeps_the_documented_set_and_gc_frees_only_unreferenced_chunks() {
    let conn = connect();
    let g = GuestSpec::new("backup-prune").define(&conn);
    let b = Bench::new("prune");
    let mut ids = Vec::new();
    for i in 0..4 {
        fill_disk(&g, 1 + i, 1);
        let protected = if i == 0 { "--protected" } else { "--note=x" };
        ids.push(backup_id(
            &b.run(&["create", protected, &g.name]).assert_ok().records(),
        ));
    }
    // Age them: backup i is 3-i days old (index.json is the clear, documented index).
    let now = 1_800_000_000i64;
    for (i, id) in ids.iter().enumerate() {
        let path = b.repo.join("backups").join(id).join("index.json");
        let mut index: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let t = now - (3 - i as i64) * 86_400;
        index["time_unix"] = t.into();
        index["time_unix_ms"] = (t * 1000).into();
        std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
    }
    let dry = b
        .run(&[
            "prune",
            "--keep-last",
            "1",
            "--keep-daily",
            "1",
            "--dry-run",
        ])
        .assert_ok()
        .records();
    let kept = |recs: &[Value]| -> Vec<(String, bool, Value)> {
        recs.iter()
            .map(|r| {
                assert!(r.get("time").is_none(), "renamed to created_at: {r}");
                (
                    r["id"].as_str().unwrap().to_owned(),
                    r["kept"].as_bool().unwrap(),
                    r["keep_reason"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(
        kept(&dry),
        vec![
            (ids[0].clone(), true, "protected".into()),
            (ids[1].clone(), false, Value::Null),
            (ids[2].clone(), true, "keep-daily".into()),
            (ids[3].clone(), true, "keep-last".into()),
        ]
    );
    // Prune judges by the index's time, and says which it judged by.
    let judged_at: Vec<i64> = dry
        .iter()
        .map(|r| hv_common::time::parse_rfc3339(r["created_at"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(
        judged_at,
        (0..4).map(|i| now - (3 - i) * 86_400).collect::<Vec<_>>()
    );
    assert_eq!(
        b.run(&["ls"]).assert_ok().records().len(),
        4,
        "a dry run deletes nothing"
    );
    // As the design brief has it: hv-backup list --json | jq 'select(.age_hours > 26)'
    let listed = b.run(&["list", "--json"]).assert_ok().records();
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for r in &listed {
        let created_at = r["created_at"].as_str().unwrap();
        let age = (clock - hv_common::time::parse_rfc3339(created_at).unwrap() as f64) / 3600.0;
        assert!((r["age_hours"].as_f64().unwrap() - age).abs() < 0.2, "{r}");
    }
    let before = count_chunks(&b.repo);
    b.run(&["prune", "--keep-last", "1", "--keep-daily", "1"])
        .assert_ok()
        .records();
    let left: Vec<String> = b
        .run(&["ls"])
        .assert_ok()
        .records()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left, vec![ids[3].clone(), ids[2].clone(), ids[0].clone()]);
    assert!(
        count_chunks(&b.repo) < before,
        "the pruned backup's own chunks are gone"
    );
    for id in &left {
        b.run(&["verify", "--deep", "--identity", b.identity(), id])
            .assert_ok()
            .records();
    }

    // A backup whose clear index is damaged keeps its chunks through gc.
    let index = b.repo.join("backups").join(&ids[3]).join("index.json");
    let saved = std::fs::read(&index).unwrap();
    std::fs::write(&index, b"{").unwrap();
    let before = count_chunks(&b.repo);
    b.run(&["gc"]).assert_ok();
    assert_eq!(
        count_chunks(&b.repo),
        before,
        "gc kept the damaged backup's chunks"
    );
    std::fs::write(&index, saved).unwrap();
    b.run(&["verify", "--deep", "--identity", b.identity(), &ids[3]])
        .assert_ok()
        .records();
}

fn count_chunks(repo: &Path) -> usize {
    std::fs::read_dir(repo.join("chunks"))
        .unwrap()
        .flatten()
        .map(|d| std::fs::read_dir(d.path()).unwrap().count())
        .sum()
}

#[test]
fn a_full_disk_fails_the_backup_and_damages_nothing() {
    let conn = connect();
    let g = GuestSpec::new("backup-full").define(&conn);
    fill_disk(&g, 1, 1);
    let dir = PathBuf::from("/var/tmp").join(format!("{}full", run_prefix()));
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success(), "mount a small tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
    let _unmount = Unmount(mnt.clone());
    let b = Bench::at(&dir.join("bench"), Some(mnt.join("repo")));
    let good = backup_id(&b.run(&["create", &g.name]).assert_ok().records());
    let checkpoints = || {
        let out = Command::new("virsh")
            .args(["-c", URI, "checkpoint-list", "--name", &g.name])
            .output()
            .unwrap();
        let out = Run::new("virsh checkpoint-list", out);
        out.assert_ok().stdout().trim().to_owned()
    };
    let good_checkpoint = checkpoints();
    assert!(good_checkpoint.starts_with("hv-"), "{good_checkpoint:?}");

    fill_disk(&g, 20, 0); // 20 MiB of random data cannot fit in 6 MiB
    let no_space = |recs: &[Value]| {
        let message = recs[0]["error"]["message"].as_str().unwrap();
        assert!(message.contains("No space left"), "{recs:?}");
    };
    no_space(
        &b.run(&["create", &g.name])
            .assert_failed("io_error")
            .records(),
    );
    assert_eq!(
        checkpoints(),
        good_checkpoint,
        "the stopped VM's failed backup removed its checkpoint"
    );
    // The same VM running: the backup job's checkpoint goes too.
    g.start_ready();
    no_space(
        &b.run(&["create", &g.name])
            .assert_failed("io_error")
            .records(),
    );
    assert_eq!(
        checkpoints(),
        good_checkpoint,
        "the live failed backup removed its checkpoint"
    );
    let listed = b.run(&["ls"]).assert_ok().records();
    assert_eq!(listed.len(), 1, "no partial backup is listed");
    b.run(&["verify", "--deep", "--identity", b.identity(), &good])
        .assert_ok()
        .records();
    b.run(&["gc"]).assert_ok().records();
    assert_eq!(std::fs::read_dir(b.repo.join("tmp")).unwrap().count(), 0);

    // A read-only repository (a mounted snapshot, a DR copy) still verifies.
    let st = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success(), "remount read-only");
    b.run(&["verify", "--deep", "--identity", b.identity(), &good])
        .assert_ok()
        .records();
    assert_eq!(b.run(&["ls"]).assert_ok().records().len(), 1);
}

#[test]
fn repository_mistakes_get_one_line_errors_with_the_fix() {
    let b = Bench::new("errors");
    // Not a repository.
    let out = hv(HV_BACKUP, &["ls", "--repo", "/nonexistent/repo"], "");
    out.assert_exit(2).assert_stderr_contains("hv-backup init");
    assert_eq!(out.stderr().lines().count(), 1, "{out:?}");
    // init twice.
    b.run(&[
        "init",
        b.repo.to_str().unwrap(),
        "--recipient",
        &b.recipient(),
    ])
    .assert_exit(2);
    // A device where a key file is meant is refused at once, by name, not
    // read until memory runs out.
    for args in [
        vec!["verify", "--deep", "--identity", "/dev/zero"],
        vec!["recover-key", "--identity", "/dev/zero"],
    ] {
        let started = std::time::Instant::now();
        b.run(&args)
            .assert_exit(2)
            .assert_stderr_contains("/dev/zero")
            .assert_stderr_contains("a device")
            .assert_stderr_contains("age-keygen");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    b.run(&[
        "init",
        b.dir.join("r3").to_str().unwrap(),
        "--recipients-file",
        "/dev/zero",
    ])
    .assert_exit(2)
    .assert_stderr_contains("a device");
    // A key directory open to everyone is not trusted with the key.
    {
        use std::os::unix::fs::PermissionsExt;
        let keys = PathBuf::from(b.key_dir());
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o777)).unwrap();
        b.run_with_input(&["create"], "some-vm\n")
            .assert_exit(2)
            .assert_stderr_contains("writable by other users")
            .assert_stderr_contains("chmod 700");
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    // A bad recipient names itself and the fix.
    b.run(&[
        "init",
        b.dir.join("r2").to_str().unwrap(),
        "--recipient",
        "age1nope",
    ])
    .assert_exit(2)
    .assert_stderr_contains("age-keygen -y");
    // The host lost its key: create says how to recover it; recover-key does.
    std::fs::remove_dir_all(b.dir.join("keys")).unwrap();
    b.run_with_input(&["create"], "some-vm\n")
        .assert_exit(1)
        .assert_stderr_contains("recover-key");
    b.run(&["recover-key", "--identity", b.identity()])
        .assert_ok()
        .records();
    // A damaged key says the same; recover-key replaces it whole.
    let key = std::fs::read_dir(b.dir.join("keys"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&key, "half a ke").unwrap();
    b.run_with_input(&["create"], "some-vm\n")
        .assert_stderr_contains("recover-key");
    b.run(&["recover-key", "--identity", b.identity()])
        .assert_ok()
        .records();
    let keys: Vec<_> = std::fs::read_dir(b.dir.join("keys")).unwrap().collect();
    assert_eq!(keys.len(), 1, "no temporary file is left");
    // A missing VM is one failed record; the lock held by prune makes create wait, then fail.
    b.run_with_input(&["create"], "no-such-vm-hv\n")
        .assert_failed("not_found");
    let lock = b.repo.join("lock");
    let mut holder = Command::new("flock")
        .arg(&lock)
        .args(["sh", "-c", "echo held; exec sleep 30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // It says so once it holds the lock.
    let mut held = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut held,
    )
    .unwrap();
    assert_eq!(held, "held\n");
    let out = b.run(&["gc", "--lock-wait", "1"]);
    let _ = holder.kill();
    let _ = holder.wait();
    out.assert_exit(1).assert_stderr_contains("locked");
}

/// docs/backup-format.md promises a reader needs only age, zstd and jq:
/// run its shell recipe on a real backup and compare the image.
#[test]
fn the_format_doc_recipe_restores_a_disk_without_hv() {
    let conn = connect();
    let g = GuestSpec::new("backup-doc").define(&conn);
    fill_disk(&g, 5, 3);
    let expected = image_sha256(&g.disk, None);
    let b = Bench::new("doc");
    let id = backup_id(&b.run(&["create", &g.name]).assert_ok().records());
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/backup-format.md"
    ))
    .unwrap();
    let section = doc.split("## Reading a backup without hv").nth(1).unwrap();
    let script = section
        .split("```sh\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    assert!(
        script.starts_with("id="),
        "the recipe starts by naming the backup"
    );
    let script = script.replacen("identity.txt", b.identity(), usize::MAX);
    let script = format!("set -e\nid={id}\n{}", script.split_once('\n').unwrap().1);
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&b.repo)
        .output()
        .unwrap();
    let out = Run::new(script, out);
    out.assert_ok();
    assert!(out.stdout().contains("vda.raw: OK"), "{out:?}");
    assert_eq!(image_sha256(&b.repo.join("vda.raw"), None), expected);
}

/// A backup made before hv hashed images with BLAKE3 (manifest version 2,
/// a SHA-256 per disk) still restores, checked by its SHA-256; a manifest
/// whose image hash is not what the chunks reassemble to fails the
/// restore, whichever hash it records, and leaves no file.
#[test]
fn older_sha256_manifests_restore_and_a_wrong_image_hash_is_caught() {
    let conn = connect();
    let g = GuestSpec::new("backup-v2").define(&conn);
    fill_disk(&g, 5, 3);
    let b = Bench::new("v2");
    let id = backup_id(&b.run(&["create", &g.name]).assert_ok().records());
    let sealed = b.repo.join("backups").join(&id).join("manifest.age");
    let plain = Command::new("age")
        .args(["-d", "-i", b.identity()])
        .arg(&sealed)
        .output()
        .unwrap();
    let manifest: Value = serde_json::from_slice(&plain.stdout).unwrap();
    assert_eq!(manifest["version"], 3);
    assert_eq!(
        manifest["disks"][0]["blake3"],
        image_blake3(&g.disk).as_str()
    );
    assert!(manifest["disks"][0].get("sha256").is_none(), "{manifest}");
    let reseal = |m: &Value| {
        let mut age = Command::new("age")
            .args(["-r", &b.recipient(), "-o"])
            .arg(&sealed)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        age.stdin
            .take()
            .unwrap()
            .write_all(m.to_string().as_bytes())
            .unwrap();
        assert!(age.wait().unwrap().success());
    };
    let restore = |label: &str| {
        let out = b.out_dir(label);
        (b.restore_to(&id, &out, &["--disk-format", "raw"]), out)
    };

    // As hv wrote it at version 2.
    let sha = image_sha256(&g.disk, None);
    let mut v2 = manifest.clone();
    v2["version"] = json!(2);
    v2["disks"][0]["sha256"] = json!(sha);
    v2["disks"][0].as_object_mut().unwrap().remove("blake3");
    reseal(&v2);
    let (run, _) = restore("v2");
    let disk = &run.assert_ok().records()[0]["disks"][0];
    assert_eq!(disk["sha256"], sha.as_str(), "{disk}");
    assert_eq!(disk["blake3"], image_blake3(&g.disk).as_str(), "{disk}");

    // A hash that does not match, of either kind: corrupt, no file kept.
    for (field, version) in [("sha256", 2), ("blake3", 3)] {
        let mut wrong = manifest.clone();
        wrong["version"] = json!(version);
        wrong["disks"][0]["blake3"] = Value::Null;
        wrong["disks"][0].as_object_mut().unwrap().remove("blake3");
        wrong["disks"][0][field] = json!("0".repeat(64));
        reseal(&wrong);
        let (run, out) = restore(&format!("wrong-{field}"));
        let rec = run.assert_exit(1).records().remove(0);
        assert_eq!(rec["error"]["code"], "corrupt", "{rec}");
        let name = if field == "sha256" {
            "SHA-256"
        } else {
            "BLAKE3"
        };
        assert!(
            rec["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("reassembles to {name}")),
            "{rec}"
        );
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "nothing left");
    }
}

#[path = "cli/incremental.rs"]
mod incremental;

#[test]
fn ctrl_c_lets_a_running_backup_of_a_stopped_vm_finish() {
    use std::os::unix::process::CommandExt;
    let conn = connect();
    let g = GuestSpec::new("backup-ctrlc").define(&conn);
    fill_disk(&g, 48, 0);
    let b = Bench::new("ctrlc");
    // In a group of its own, as a shell runs a foreground job: the
    // terminal's Ctrl-C goes to the whole group.
    let child = Command::new(HV_BACKUP)
        .args(b.args(&["create", &g.name]))
        .env("HV_CONNECT", URI)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let disk = g.disk.display().to_string().replace('.', "[.]");
    let pattern = format!("^qemu-nbd .*{disk}$");
    let serving = || {
        let out = Command::new("pgrep")
            .args(["-f", &pattern])
            .output()
            .unwrap();
        !out.stdout.is_empty()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !serving() {
        assert!(
            std::time::Instant::now() < deadline,
            "qemu-nbd never served {disk}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let group = format!("-{}", child.id());
    let st = Command::new("kill")
        .args(["-INT", "--", &group])
        .status()
        .unwrap();
    assert!(st.success());
    let out = Run::new(
        "hv-backup create (Ctrl-C)",
        child.wait_with_output().unwrap(),
    );
    // The running backup finished; its disks are targets, as ls gives.
    assert_fields(
        &out.one_record(),
        json!({"ok": true, "warnings": [], "disks": ["vda"]}),
    );
    assert_eq!(b.run(&["ls"]).assert_ok().records().len(), 1);
}

/// While a stopped VM's disks are read it cannot start, so it cannot
/// write under its own backup: qemu-nbd locks a qcow2 image, and hv-backup
/// locks a raw one as QEMU does (qemu-nbd does not). Once the backup is
/// done, the VM starts.
#[test]
fn a_stopped_vm_cannot_start_while_its_disks_are_read() {
    let conn = connect();
    for format in ["qcow2", "raw"] {
        let g = GuestSpec::new(&format!("backup-lock-{format}")).define(&conn);
        fill_disk(&g, 8, 8);
        let mut disk = g.disk.clone();
        if format == "raw" {
            disk = g.disk.with_extension("raw");
            convert_to_raw(&g.disk, &disk);
            let xml = g
                .domain
                .xml_desc(0)
                .unwrap()
                .replace("type='qcow2'", "type='raw'")
                .replace(g.disk.to_str().unwrap(), disk.to_str().unwrap());
            conn.define_domain_xml(&xml).unwrap();
        }
        let b = Bench::new(&format!("lock-{format}"));
        let child = Command::new(HV_BACKUP)
            .args(b.args(&["create", &g.name]))
            .env("HV_CONNECT", URI)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pattern = format!(
            "^qemu-nbd .*{}$",
            disk.display().to_string().replace('.', "[.]")
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while Command::new("pgrep")
            .args(["-f", &pattern])
            .output()
            .unwrap()
            .stdout
            .is_empty()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "{format}: never served"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // Held mid-read, while it has the disk open.
        let pid = child.id().to_string();
        let signal = |s: &str| Command::new("kill").args([s, &pid]).status().unwrap();
        signal("-STOP");
        let started = g.domain.create();
        signal("-CONT");
        let out = Run::new("hv-backup create", child.wait_with_output().unwrap());
        if started.is_ok() {
            let _ = g.domain.destroy();
        }
        let why = started.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            why.contains("lock"),
            "{format}: the VM started while its disk was read ({why})"
        );
        out.assert_ok();
        g.domain
            .create()
            .expect("it starts once the backup is done");
        let _ = g.domain.destroy();
        if format == "raw" {
            let _ = std::fs::remove_file(&disk);
        }
    }
}

#[test]
fn a_backup_given_up_at_its_timeout_stops_and_commits_nothing() {
    use std::io::Read;
    let conn = connect();
    // Each takes about 5 s to back up here: with --timeout 3 both are
    // given up on, and with -j 1 the second may start only once the first
    // has stopped reading (its qemu-nbd gone).
    let guests: Vec<Guest> = ["a", "b"]
        .iter()
        .map(|n| GuestSpec::new(&format!("backup-timeout-{n}")).define(&conn))
        .collect();
    for (i, g) in guests.iter().enumerate() {
        fill_disk(g, 64 - i as u32, 0); // other data: nothing to share
    }
    let b = Bench::new("timeout");
    let mut args = vec!["create", "-j", "1", "--timeout", "3"];
    args.extend(guests.iter().map(|g| g.name.as_str()));
    let mut child = Command::new(HV_BACKUP)
        .args(b.args(&args))
        .env("HV_CONNECT", URI)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let servers = || {
        let out = Command::new("pgrep")
            .args(["-fa", "^qemu-nbd "])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let of_ours = |l: &&str| guests.iter().any(|g| l.contains(g.disk.to_str().unwrap()));
        text.lines().filter(of_ours).count()
    };
    let mut most = 0;
    while child.try_wait().unwrap().is_none() {
        most = most.max(servers());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let codes: Vec<String> = stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["error"]["code"].to_string())
        .collect();
    assert_eq!(codes, ["\"timeout\""; 2], "{stdout}");
    assert_eq!(most, 1, "-j 1: a given-up backup went on beside the next");
    assert!(
        b.run(&["ls"]).assert_ok().records().is_empty(),
        "a backup reported as timed out was committed"
    );
}

/// The sum of `new_bytes` over `recs`.
fn new_bytes(recs: &[Value]) -> u64 {
    recs.iter().map(|r| r["new_bytes"].as_u64().unwrap()).sum()
}

/// Rewrites a backup's chunk list and index as hv-backup 0.1 wrote them:
/// index version 1, whole file sizes, no `manifest_bytes`.
fn as_version_1(repo: &Path, id: &str) {
    let dir = repo.join("backups").join(id);
    let list = std::fs::read_to_string(dir.join("chunks")).unwrap();
    let whole: String = list
        .lines()
        .map(|line| {
            let chunk = line.split(' ').next().unwrap();
            let path = repo.join("chunks").join(&chunk[..2]).join(chunk);
            format!("{chunk} {}\n", std::fs::metadata(path).unwrap().len())
        })
        .collect();
    std::fs::write(dir.join("chunks"), whole).unwrap();
    let mut index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    index["version"] = 1.into();
    index.as_object_mut().unwrap().remove("manifest_bytes");
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
}

#[test]
fn intact_backups_verify_whichever_run_stored_their_chunks() {
    let conn = connect();
    let a = GuestSpec::new("twin-a").define(&conn);
    let b = GuestSpec::new("twin-b").define(&conn);
    fill_disk(&a, 24, 16);
    std::fs::copy(&a.disk, &b.disk).unwrap();

    // What one clone stores on its own.
    let alone = Bench::new("twin-alone");
    let single = new_bytes(&alone.run(&["create", &a.name]).assert_ok().records());
    assert!(single > 0);

    // Clones of one template backed up in one run: every chunk stored once,
    // counted once, and both backups verify.
    let bench = Bench::new("twins");
    let recs = bench
        .run(&["create", "-j", "2", &a.name, &b.name])
        .assert_ok()
        .records();
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(
        new_bytes(&recs),
        single,
        "two clones' new bytes must add up to one clone's: {recs:?}"
    );
    let verified = bench.run(&["verify"]).assert_ok().records();
    assert_eq!(verified.len(), 2, "{verified:?}");

    // Two creates of one VM at once, in two processes.
    let args = bench.args(&["create", &a.name]);
    let spawn = || {
        Command::new(HV_BACKUP)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (one, two) = (spawn(), spawn());
    for child in [one, two] {
        let out = child.wait_with_output().unwrap();
        Run::new("hv-backup create (one of two at once)", out)
            .assert_ok()
            .records();
    }
    assert_eq!(bench.run(&["verify"]).assert_ok().records().len(), 4);

    // Chunks lost and stored again by a later backup: the older backups
    // that name them are whole again, and say so.
    let mut lost = 0;
    for sub in std::fs::read_dir(bench.repo.join("chunks"))
        .unwrap()
        .flatten()
    {
        for chunk in std::fs::read_dir(sub.path()).unwrap().flatten() {
            std::fs::remove_file(chunk.path()).unwrap();
            lost += 1;
        }
    }
    assert!(lost >= 4, "only {lost} chunks");
    bench.run(&["verify"]).assert_failed("corrupt");
    bench
        .run(&["create", "--full", &a.name])
        .assert_ok()
        .records();
    bench
        .run(&["create", "--full", &b.name])
        .assert_ok()
        .records();
    let recs = bench
        .run(&["verify", "--deep", "--identity", bench.identity()])
        .assert_ok()
        .records();
    assert_eq!(recs.len(), 6, "{recs:?}");
    let recs = bench.run(&["ls"]).assert_ok().records();

    // A backup written before chunk lists held body sizes still verifies.
    let id = recs[0]["id"].as_str().unwrap().to_owned();
    as_version_1(&bench.repo, &id);
    bench.run(&["verify", &id]).assert_ok().records();
    // A manifest cut short fails even the fast verify.
    let id = recs[1]["id"].as_str().unwrap().to_owned();
    let manifest = bench.repo.join("backups").join(&id).join("manifest.age");
    let sealed = std::fs::read(&manifest).unwrap();
    std::fs::write(&manifest, &sealed[..100]).unwrap();
    let recs = bench
        .run(&["verify", &id])
        .assert_failed("corrupt")
        .records();
    assert!(
        recs[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("manifest.age"),
        "{recs:?}"
    );
    std::fs::write(&manifest, &sealed[..sealed.len() - 1]).unwrap();
    bench.run(&["verify", &id]).assert_failed("corrupt");
}

#[test]
fn a_backup_with_a_damaged_index_is_a_failing_record_not_gone() {
    let conn = connect();
    let g = GuestSpec::new("backup-index").define(&conn);
    fill_disk(&g, 2, 2);
    let b = Bench::new("index");
    let ids: Vec<String> = (0..3)
        .map(|_| backup_id(&b.run(&["create", &g.name]).assert_ok().records()))
        .collect();
    let index = |id: &str| b.repo.join("backups").join(id).join("index.json");
    let text = std::fs::read(index(&ids[0])).unwrap();
    std::fs::write(index(&ids[0]), &text[..text.len() / 2]).unwrap();
    std::fs::remove_file(index(&ids[1])).unwrap();

    for args in [
        vec!["ls"],
        vec!["ls", "--vm", &g.name],
        vec!["verify"],
        vec!["verify", "--deep", "--identity", b.identity()],
    ] {
        let out = b.run(&args);
        let recs = out.assert_failed("corrupt").records();
        let bad: Vec<&str> = recs
            .iter()
            .filter(|r| r["ok"] == false)
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(bad.len(), 2, "{args:?}: {recs:?}");
        assert!(bad.contains(&ids[0].as_str()) && bad.contains(&ids[1].as_str()));
        assert!(
            recs.iter()
                .any(|r| r["id"] == ids[2].as_str() && r["ok"] != false),
            "{args:?}: the intact backup is still listed: {recs:?}"
        );
        for r in recs.iter().filter(|r| r["ok"] == false) {
            let message = r["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("index.json") && message.contains("from a copy"),
                "{message}"
            );
        }
    }
    // prune keeps what it cannot judge, in the shape of every prune record.
    let pruned = b
        .run(&["prune", "--keep-last", "1", "--dry-run"])
        .assert_failed("corrupt")
        .records();
    for r in pruned.iter().filter(|r| r["ok"] == false) {
        assert_eq!(
            (&r["kept"], &r["keep_reason"]),
            (&Value::Bool(true), &Value::from("damaged")),
            "{r}"
        );
    }
    // Its chunks stay until someone repairs or drops it.
    let before = count_chunks(&b.repo);
    b.run(&["gc"]).assert_ok().records();
    assert_eq!(count_chunks(&b.repo), before);
}

#[test]
fn a_stopped_restore_leaves_no_file_and_a_cut_stream_fails() {
    let conn = connect();
    let g = GuestSpec::new("restore-stop").define(&conn);
    fill_disk(&g, 48, 8);
    let b = Bench::new("restore-stop");
    let id = backup_id(&b.run(&["create", &g.name]).assert_ok().records());

    for (signal, code) in [("TERM", 143), ("INT", 130)] {
        // --dir need not exist: it is made, private.
        let dir = b.dir.join(format!("new/{signal}"));
        let args = b.args(&[
            "restore",
            &id,
            "--identity",
            b.identity(),
            "--dir",
            dir.to_str().unwrap(),
        ]);
        let mut child = Command::new(HV_BACKUP)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        let partial = loop {
            let found = std::fs::read_dir(&dir).ok().and_then(|d| {
                d.flatten()
                    .find(|e| e.file_name().to_string_lossy().contains(".partial-"))
            });
            if found.is_some() {
                break true;
            }
            if started.elapsed() > Duration::from_secs(20) || child.try_wait().unwrap().is_some() {
                break false;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        assert!(partial, "the restore never wrote its partial file");
        let st = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let out = child.wait_with_output().unwrap();
        Run::new(format!("hv-backup restore (SIG{signal})"), out).assert_exit(code);
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert!(left.is_empty(), "SIG{signal} left {left:?}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    // A raw stream whose reader stops early is a failed restore; one read
    // to its end matches the source.
    let args = b.args(&stream_vda_args(&b, &id));
    let quoted: Vec<String> = std::iter::once(HV_BACKUP.to_owned())
        .chain(args)
        .map(|a| format!("'{a}'"))
        .collect();
    let script = format!(
        "{} | head -c 1000 >/dev/null; echo ${{PIPESTATUS[0]}}",
        quoted.join(" ")
    );
    let cut = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let cut = Run::new(script, cut);
    assert_eq!(cut.stdout().trim(), "1", "{cut:?}");
    cut.assert_stderr_contains("incomplete");
    let script = format!("set -o pipefail; {} | sha256sum", quoted.join(" "));
    let whole = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let whole = Run::new(script, whole);
    whole.assert_ok();
    let raw = b.dir.join("source.raw");
    convert_to_raw(&g.disk, &raw);
    assert_eq!(
        whole.stdout().split(' ').next().unwrap(),
        image_sha256(&raw, None)
    );
}

/// docs/records.md: durations take one syntax, `id` is only ever a
/// backup's id, and a repository's own id is `repository_id`. Needs no VM.
#[test]
fn durations_and_ids_speak_the_common_language() {
    let b = Bench::new("language");
    let other = b.dir.join("other-repo");
    let init = b
        .run(&[
            "init",
            other.to_str().unwrap(),
            "--recipient",
            &b.recipient(),
        ])
        .assert_ok()
        .records();
    assert!(
        init[0]["repository_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{}",
        init[0]
    );
    assert!(
        init[0].get("id").is_none(),
        "id is a backup's id: {}",
        init[0]
    );
    let recovered = b
        .run(&["recover-key", "--identity", b.identity()])
        .assert_ok()
        .records();
    assert!(recovered[0].get("id").is_none(), "{}", recovered[0]);
    assert!(recovered[0]["repository_id"].is_string());

    b.run(&["gc", "--lock-wait", "1m30s"]).assert_ok().records();
    b.run(&[
        "prune",
        "--keep-last",
        "1",
        "--lock-wait",
        "90",
        "--dry-run",
    ])
    .assert_ok()
    .records();
    for args in [
        vec!["gc", "--lock-wait", "5x"],
        vec!["ls", "--lock-wait", "1.5h"],
        vec!["create", "--timeout", "5x", "some-vm"],
    ] {
        // The error names the flag and the accepted forms.
        b.run(&args)
            .assert_exit(2)
            .assert_stderr_contains(args[1])
            .assert_stderr_contains("90s, 5m, 1h30m, 2d");
    }
}

/// `hv-backup verify --deep` of the repository `repo` with this bench's identity.
fn deep_verify(b: &Bench, repo: &str) {
    hv(
        HV_BACKUP,
        &[
            "verify",
            "--repo",
            repo,
            "--deep",
            "--identity",
            b.identity(),
        ],
        "",
    )
    .assert_ok();
}

/// `hv-backup sync --from` this bench's repository `--to` `to`, plus `args`.
fn sync(b: &Bench, to: &Path, args: &[&str]) -> Run {
    let (from, to) = (b.repo.to_str().unwrap(), to.to_str().unwrap());
    let mut full = vec!["sync", "--from", from, "--to", to];
    full.extend_from_slice(args);
    b.run(&full)
}

fn ids_of(recs: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = recs
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn field_sum(recs: &[Value], field: &str) -> u64 {
    recs.iter().map(|r| r[field].as_u64().unwrap()).sum()
}

#[test]
fn sync_sends_only_what_the_replica_lacks_and_the_replica_restores() {
    let conn = connect();
    let g = GuestSpec::new("backup-sync").define(&conn);
    fill_disk(&g, 8, 4);
    let b = Bench::new("sync");
    let first = backup_id(&b.run(&["create", &g.name]).assert_ok().records());
    let st = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x5a 20M 1M"])
        .arg(&g.disk)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let second = backup_id(&b.run(&["create", &g.name]).assert_ok().records());
    let source_sha = image_sha256(&g.disk, None);

    // A dry run into a new directory sends nothing and makes nothing.
    let to = b.dir.join("off site");
    let dry = sync(&b, &to, &["--dry-run"]).assert_ok().records();
    assert_eq!(dry.len(), 2);
    assert!(dry
        .iter()
        .all(|r| r["dry_run"] == true && r["changed"] == true));
    assert!(!to.exists(), "a dry run made {}", to.display());

    // The first sync makes a replica and sends every chunk once; the
    // second backup shares all but one chunk with the first.
    let recs = sync(&b, &to, &[]).assert_ok().records();
    assert_eq!(ids_of(&recs), ids_of(&dry));
    assert_eq!(recs[0]["id"], first.as_str(), "oldest first");
    assert_eq!(
        (recs[0]["action"].as_str(), recs[0]["changed"].as_bool()),
        (Some("sync"), Some(true))
    );
    assert_eq!(recs[1]["chunks_sent"], 1, "{recs:?}");
    assert_eq!(
        (
            field_sum(&recs, "chunks_sent"),
            field_sum(&recs, "bytes_sent")
        ),
        (
            field_sum(&dry, "chunks_sent"),
            field_sum(&dry, "bytes_sent")
        ),
        "the dry run promised what the run did"
    );
    assert_eq!(
        std::fs::read(to.join("hv-backup.json")).unwrap(),
        std::fs::read(b.repo.join("hv-backup.json")).unwrap(),
        "a replica has the source's configuration"
    );
    let listed = |repo: &Path| {
        let repo = repo.to_str().unwrap();
        ids_of(
            &hv(HV_BACKUP, &["ls", "--repo", repo], "")
                .assert_ok()
                .records(),
        )
    };
    assert_eq!(listed(&to), listed(&b.repo));

    // Nothing new: nothing sent.
    let again = sync(&b, &to, &["--verify"]).assert_ok().records();
    assert!(
        again
            .iter()
            .all(|r| r["changed"] == false && r["chunks_sent"] == 0 && r["verified"] == true),
        "{again:?}"
    );

    // The replica restores to the source disk's exact bytes, with the
    // identity alone.
    let to_s = to.to_str().unwrap();
    deep_verify(&b, to_s);
    let out = b.out_dir("restored");
    let restored = hv(
        HV_BACKUP,
        &[
            "restore",
            &second,
            "--repo",
            to_s,
            "--identity",
            b.identity(),
            "--dir",
            out.to_str().unwrap(),
            "--disk-format",
            "raw",
        ],
        "",
    )
    .assert_ok()
    .records();
    let path = restored[0]["disks"][0]["path"].as_str().unwrap();
    assert_eq!(image_sha256(Path::new(path), None), source_sha);

    // A chunk lost at the destination: --verify names it and sends it again.
    let lost = std::fs::read_dir(to.join("chunks"))
        .unwrap()
        .flatten()
        .find_map(|d| std::fs::read_dir(d.path()).unwrap().flatten().next())
        .unwrap()
        .path();
    std::fs::remove_file(&lost).unwrap();
    hv(HV_BACKUP, &["verify", "--repo", to_s], "").assert_failed("corrupt");
    let repaired = sync(&b, &to, &["--verify"]).assert_ok().records();
    assert!(field_sum(&repaired, "chunks_sent") >= 1, "{repaired:?}");
    assert!(lost.exists());
    hv(HV_BACKUP, &["verify", "--repo", to_s], "").assert_ok();

    // A piped record syncs that backup only; --prune then applies the
    // destination's own rules there, and leaves the source alone.
    let other = b.dir.join("other");
    let piped = b
        .run_with_input(
            &[
                "sync",
                "--from",
                b.repo.to_str().unwrap(),
                "--to",
                other.to_str().unwrap(),
            ],
            &format!("{{\"id\":\"{first}\",\"name\":\"x\"}}\n"),
        )
        .assert_ok()
        .records();
    assert_eq!(ids_of(&piped), vec![first.clone()]);
    let pruned = sync(&b, &to, &["--prune", "--keep-last", "1"])
        .assert_ok()
        .records();
    assert!(
        pruned
            .iter()
            .any(|r| r["action"] == "prune" && r["id"] == first.as_str() && r["kept"] == false),
        "{pruned:?}"
    );
    assert_eq!(listed(&to), vec![second.clone()]);
    assert_eq!(listed(&b.repo).len(), 2, "the source keeps both");
}

#[test]
fn sync_refuses_a_foreign_destination_and_sends_no_damaged_backup() {
    let conn = connect();
    let g = GuestSpec::new("backup-sync-bad").define(&conn);
    fill_disk(&g, 4, 4);
    let b = Bench::new("sync-bad");
    let good = backup_id(&b.run(&["create", &g.name]).assert_ok().records());

    // Another repository, even with the same recipient, has another
    // chunk-id key: its chunks could not be told apart from ours.
    let foreign = b.dir.join("foreign");
    b.run(&[
        "init",
        foreign.to_str().unwrap(),
        "--recipient",
        &b.recipient(),
    ])
    .assert_ok();
    sync(&b, &foreign, &[])
        .assert_exit(2)
        .assert_stdout_empty()
        .assert_stderr_contains("is not a replica");
    for (to, says) in [
        (Path::new("/dev/zero"), "not a directory"),
        (b.repo.as_path(), "same repository"),
        (b.identity.as_path(), "not a directory"),
    ] {
        sync(&b, to, &[])
            .assert_exit(2)
            .assert_stderr_contains(says);
    }
    sync(&b, &b.dir.join("x"), &["--keep-last", "1"])
        .assert_exit(2)
        .assert_stderr_contains("--prune");
    assert!(!b.dir.join("x").exists());

    // A second backup whose chunk is cut short at the source fails, and
    // does not appear at the destination; the good one does.
    fill_disk(&g, 5, 3);
    let recs = b.run(&["create", &g.name]).assert_ok().records();
    let bad = backup_id(&recs);
    let list = std::fs::read_to_string(b.repo.join("backups").join(&bad).join("chunks")).unwrap();
    let first_ids: std::collections::BTreeSet<String> =
        std::fs::read_to_string(b.repo.join("backups").join(&good).join("chunks"))
            .unwrap()
            .lines()
            .map(|l| l.split(' ').next().unwrap().to_owned())
            .collect();
    let only_bad = list
        .lines()
        .map(|l| l.split(' ').next().unwrap())
        .find(|c| !first_ids.contains(*c))
        .expect("a chunk only the second backup has");
    let path = b.repo.join("chunks").join(&only_bad[..2]).join(only_bad);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let to = b.dir.join("replica");
    let out = sync(&b, &to, &[]);
    out.assert_failed("corrupt");
    let recs = out.records();
    let failed = recs.iter().find(|r| r["ok"] == false).unwrap();
    assert_eq!(failed["id"], bad.as_str());
    assert!(failed["error"]["message"]
        .as_str()
        .unwrap()
        .contains(only_bad));
    let to_s = to.to_str().unwrap();
    let there = hv(HV_BACKUP, &["ls", "--repo", to_s], "")
        .assert_ok()
        .records();
    assert_eq!(ids_of(&there), vec![good.clone()]);
    hv(HV_BACKUP, &["verify", "--repo", to_s], "").assert_ok();
}

#[test]
fn a_killed_sync_leaves_whole_backups_and_the_next_one_finishes() {
    let conn = connect();
    let g = GuestSpec::new("backup-sync-kill")
        .disk_mib(64)
        .define(&conn);
    let b = Bench::new("sync-kill");
    for i in 0..3 {
        fill_disk(&g, 20 + i, 20);
        b.run(&["create", &g.name]).assert_ok();
    }
    let to = b.dir.join("replica");
    let to_s = to.to_str().unwrap();
    let mut seed = std::process::id() as u64;
    for _ in 0..5 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = 5 + (seed >> 33) % 120;
        let mut child = Command::new(HV_BACKUP)
            .args(b.args(&["sync", "--from", b.repo.to_str().unwrap(), "--to", to_s]))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
        if to.join("hv-backup.json").exists() {
            // Whatever arrived is whole.
            hv(HV_BACKUP, &["verify", "--repo", to_s], "").assert_ok();
        }
    }
    sync(&b, &to, &[]).assert_ok();
    deep_verify(&b, to_s);
    let again = sync(&b, &to, &[]).assert_ok().records();
    assert_eq!(field_sum(&again, "bytes_sent"), 0);
    hv(HV_BACKUP, &["gc", "--repo", to_s], "").assert_ok();
    assert_eq!(std::fs::read_dir(to.join("tmp")).unwrap().count(), 0);

    // The kills above land where they land; this is the moment one landed
    // in CI: the layout, the sealed key and a temporary file written, the
    // configuration (written last) not yet. The next sync, or init, takes
    // such a directory over; one holding anything else is refused, intact.
    let half_made = |name: &str| {
        let dir = b.dir.join(name);
        for sub in ["chunks", "backups", "tmp", "keys"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::copy(
            b.repo.join("keys/chunk-id-key.age"),
            dir.join("keys/chunk-id-key.age"),
        )
        .unwrap();
        std::fs::write(dir.join("tmp/file-1-0123456789abcdef"), b"half a key").unwrap();
        dir
    };
    let half = half_made("half");
    sync(&b, &half, &[]).assert_ok();
    deep_verify(&b, half.to_str().unwrap());
    let half = half_made("half-init");
    let recipient = b.recipient();
    hv(
        HV_BACKUP,
        &[
            "init",
            half.to_str().unwrap(),
            "--recipient",
            &recipient,
            "--key-dir",
            &b.key_dir(),
        ],
        "",
    )
    .assert_ok();
    assert_eq!(std::fs::read_dir(half.join("tmp")).unwrap().count(), 0);
    let theirs = half_made("theirs");
    std::fs::write(theirs.join("backups/notes.txt"), b"mine").unwrap();
    sync(&b, &theirs, &[])
        .assert_exit(2)
        .assert_stderr_contains("not empty");
    assert_eq!(
        std::fs::read(theirs.join("backups/notes.txt")).unwrap(),
        b"mine"
    );
    assert!(!theirs.join("hv-backup.json").exists());
    // Nor is a directory whose only folder is called tmp, with a file in it.
    let only_tmp = b.dir.join("only-tmp");
    std::fs::create_dir_all(only_tmp.join("tmp")).unwrap();
    std::fs::write(only_tmp.join("tmp/notes"), b"mine").unwrap();
    sync(&b, &only_tmp, &[])
        .assert_exit(2)
        .assert_stderr_contains("not empty");
    assert_eq!(std::fs::read(only_tmp.join("tmp/notes")).unwrap(), b"mine");
    // Two runs making the same new directory: the second is refused while
    // the first holds it (as this test does here), not mixed into it.
    let held = b.dir.join("held");
    std::fs::create_dir_all(&held).unwrap();
    let holder = std::fs::File::open(&held).unwrap();
    holder.try_lock().unwrap();
    sync(&b, &held, &[])
        .assert_exit(1)
        .assert_stderr_contains("another hv-backup is making a repository");
    assert_eq!(std::fs::read_dir(&held).unwrap().count(), 0);
    drop(holder);
    sync(&b, &held, &[]).assert_ok();

    // SIGTERM stops it between chunks, with the shell's status for it.
    let fresh = b.dir.join("fresh");
    let child = Command::new(HV_BACKUP)
        .args(["sync", "--from", b.repo.to_str().unwrap(), "--to"])
        .arg(&fresh)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the replica exists the sync handles signals (it installs its
    // handler first); before that a signal would just kill it.
    let started = std::time::Instant::now();
    while !fresh.join("hv-backup.json").exists() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(2));
    }
    unsafe_free_kill(child.id(), "TERM");
    let out = child.wait_with_output().unwrap();
    match out.status.code() {
        Some(0) => {} // it finished first
        Some(143) => {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("SIGTERM"), "{err}");
        }
        other => panic!("exit {other:?}: {}", String::from_utf8_lossy(&out.stderr)),
    }
    if fresh.join("hv-backup.json").exists() {
        hv(
            HV_BACKUP,
            &["verify", "--repo", fresh.to_str().unwrap()],
            "",
        )
        .assert_ok();
    }
}

/// `kill -SIG PID`, through the shell's kill.
fn unsafe_free_kill(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(st.success());
}

/// Makes the guest's disk a 64 MiB image holding an ext4 filesystem made
/// from `files` (mkfs.ext4 -d: nothing is mounted to fill it): on a
/// partition at 1 MiB of an MBR table, or with `partitioned` false on the
/// whole disk.
fn disk_with_filesystem(g: &Guest, files: &Path, partitioned: bool) {
    let raw = g.disk.with_extension("fs.raw");
    let file = std::fs::File::create(&raw).unwrap();
    file.set_len(64 << 20).unwrap();
    drop(file);
    let mut mkfs = Command::new("mkfs.ext4");
    mkfs.args(["-F", "-q", "-d"]).arg(files);
    if partitioned {
        // One partition entry (type 0x83, from sector 2048 to the end) and
        // the boot signature: what fdisk would write.
        let mut mbr = vec![0u8; 512];
        mbr[446 + 4] = 0x83;
        mbr[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
        mbr[446 + 12..446 + 16].copy_from_slice(&((64u32 << 11) - 2048).to_le_bytes());
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
        f.write_all_at(&mbr, 0).unwrap();
        mkfs.args(["-E", "offset=1048576"]).arg(&raw).arg("63M");
    } else {
        mkfs.arg(&raw);
    }
    let out = mkfs.output().expect("mkfs.ext4 (Debian package e2fsprogs)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    raw_into_disk(&raw, g);
}

/// A running `hv-backup mount`, and the record it printed when ready.
struct Mounting {
    child: std::process::Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    record: Value,
}

fn start_mount(b: &Bench, id: &str, dir: &Path, extra: &[&str]) -> Mounting {
    use std::io::BufRead;
    let mut args = vec![
        "mount",
        id,
        dir.to_str().unwrap(),
        "--identity",
        b.identity(),
        "--format",
        "jsonl",
    ];
    args.extend_from_slice(extra);
    let mut full = b.args(&args);
    full.extend([
        "--scratch-dir".into(),
        b.dir.join("scratch").display().to_string(),
    ]);
    let mut child = Command::new(HV_BACKUP)
        .args(&full)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a record when mounted").unwrap();
    Mounting {
        child,
        lines,
        record: serde_json::from_str(&first).unwrap(),
    }
}

fn umount(b: &Bench, dir: &Path) -> Run {
    let scratch = b.dir.join("scratch");
    hv(
        HV_BACKUP,
        &[
            "umount",
            dir.to_str().unwrap(),
            "--scratch-dir",
            scratch.to_str().unwrap(),
        ],
        "",
    )
}

/// Nothing of a mount is left: no mount on `dir` or under the scratch
/// directory, no loop device reading from it, no note.
fn assert_nothing_attached(b: &Bench, dir: &Path) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let scratch = b.dir.join("scratch");
    for line in info.lines() {
        let point = line.split(' ').nth(4).unwrap().replace("\\040", " ");
        assert!(
            !point.starts_with(scratch.to_str().unwrap()) && point != dir.to_str().unwrap(),
            "still mounted: {line}"
        );
    }
    let loops = Command::new("losetup").arg("-a").output().unwrap();
    let loops = String::from_utf8_lossy(&loops.stdout);
    assert!(
        !loops.contains(scratch.to_str().unwrap()),
        "a loop device is left: {loops}"
    );
    let notes = std::fs::read_dir(&scratch)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("mount-"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(notes, 0, "a mount's scratch directory is left");
}

#[test]
fn one_file_comes_back_from_a_mounted_backup_and_nothing_stays_attached() {
    let conn = connect();
    let g = GuestSpec::new("backup-mount").define(&conn);
    let b = Bench::new("mount");
    let files = b.out_dir("files");
    std::fs::create_dir_all(files.join("etc/nginx")).unwrap();
    let conf = "server { listen 80; root /srv/www; }\n";
    std::fs::write(files.join("etc/nginx/nginx.conf"), conf).unwrap();
    let mut big = vec![0u8; 3 << 20];
    for (i, b) in big.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2654435761).to_le_bytes()[3];
    }
    std::fs::write(files.join("big.bin"), &big).unwrap();
    disk_with_filesystem(&g, &files, true);
    let disk_sha = image_sha256(&g.disk, None);
    let id = backup_id(&b.run(&["create", &g.name]).assert_ok().records());
    let dir = b.out_dir("mnt dir ü");

    // Mounted: the file reads back, then umount takes it all down.
    let mut m = start_mount(&b, &id, &dir, &[]);
    assert_eq!(
        (
            m.record["action"].as_str(),
            m.record["filesystem"].as_str(),
            m.record["partition"].as_u64()
        ),
        (Some("mount"), Some("ext4"), Some(1)),
        "{}",
        m.record
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("etc/nginx/nginx.conf")).unwrap(),
        conf
    );
    assert!(std::fs::read(dir.join("big.bin")).unwrap() == big);
    assert!(
        std::fs::write(dir.join("new"), "x").is_err(),
        "the backup is read-only"
    );
    let out = umount(&b, &dir).assert_ok().records();
    assert_eq!(out[0]["action"], "umount");
    assert!(m.child.wait().unwrap().success());
    let last: Value = serde_json::from_str(&m.lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(last["action"], "umount");
    assert!(last["chunks_read"].as_u64().unwrap() >= 1, "{last}");
    assert_nothing_attached(&b, &dir);

    // Ctrl-C takes it down too.
    let mut m = start_mount(&b, &id, &dir, &[]);
    assert!(dir.join("big.bin").exists());
    Command::new("kill")
        .args(["-INT", &m.child.id().to_string()])
        .status()
        .unwrap();
    assert!(m.child.wait().unwrap().success());
    assert_nothing_attached(&b, &dir);

    // A killed mount leaves its mounts; umount finds and removes them.
    let mut m = start_mount(&b, &id, &dir, &[]);
    m.child.kill().unwrap();
    m.child.wait().unwrap();
    umount(&b, &dir).assert_ok();
    assert_nothing_attached(&b, &dir);

    // --raw: the image itself, byte for byte.
    let mut m = start_mount(&b, &id, &dir, &["--raw"]);
    assert_eq!(m.record["filesystem"], Value::Null);
    assert_eq!(image_sha256(&dir.join("vda.raw"), None), disk_sha);
    umount(&b, &dir).assert_ok();
    assert!(m.child.wait().unwrap().success());
    assert_nothing_attached(&b, &dir);

    // A whole-disk filesystem mounts as well.
    disk_with_filesystem(&g, &files, false);
    let whole = backup_id(&b.run(&["create", &g.name]).assert_ok().records());
    let mut m = start_mount(&b, &whole, &dir, &[]);
    assert_eq!(m.record["partition"], Value::Null);
    assert_eq!(
        std::fs::read_to_string(dir.join("etc/nginx/nginx.conf")).unwrap(),
        conf
    );
    umount(&b, &dir).assert_ok();
    assert!(m.child.wait().unwrap().success());
    assert_nothing_attached(&b, &dir);
}

#[test]
fn mount_mistakes_get_one_line_errors_and_leave_nothing() {
    let conn = connect();
    let g = GuestSpec::new("backup-mount-bad").define(&conn);
    fill_disk(&g, 4, 4);
    let b = Bench::new("mount-bad");
    let id = backup_id(&b.run(&["create", &g.name]).assert_ok().records());
    let dir = b.out_dir("mnt");
    let scratch = b.dir.join("scratch");
    let scratch = scratch.to_str().unwrap();
    let mount = |dir: &str, extra: &[&str]| {
        let mut args = vec!["mount", &id, dir, "--identity", b.identity()];
        args.extend_from_slice(extra);
        let mut full = b.args(&args);
        full.extend(["--scratch-dir".into(), scratch.into()]);
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        hv(HV_BACKUP, &refs, "")
    };
    // Random data and text: no filesystem to show.
    mount(dir.to_str().unwrap(), &[])
        .assert_exit(2)
        .assert_stderr_contains("no filesystem to mount")
        .assert_stderr_contains("--raw");
    assert_nothing_attached(&b, &dir);
    mount(dir.to_str().unwrap(), &["--disk", "vdz"])
        .assert_exit(2)
        .assert_stderr_contains("no disk \"vdz\"");
    mount("/dev/zero", &["--raw"])
        .assert_exit(2)
        .assert_stderr_contains("not a directory");
    std::fs::write(dir.join("file"), "x").unwrap();
    mount(dir.to_str().unwrap(), &["--raw"])
        .assert_exit(2)
        .assert_stderr_contains("not empty");
    umount(&b, &dir)
        .assert_exit(2)
        .assert_stderr_contains("not mounted by hv-backup mount");
    assert_nothing_attached(&b, &dir);
}

/// The store this test's commands use (set by [`garage`] or [`garage_cluster`]).
fn s3_env() -> std::collections::HashMap<String, String> {
    [
        "HV_S3_ENDPOINT",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ]
    .into_iter()
    .map(|k| (k.to_owned(), std::env::var(k).expect("a store started")))
    .collect()
}

/// Every object of the bench's bucket under `prefix`, through the S3 API
/// as any client sees it (curl signs with --aws-sigv4).
fn s3_objects(prefix: &str) -> Vec<String> {
    let env = s3_env();
    let out = Command::new("curl")
        .args([
            "-sS",
            "--fail",
            "--aws-sigv4",
            "aws:amz:garage:s3",
            "-H",
            "x-amz-content-sha256: UNSIGNED-PAYLOAD",
            "--user",
        ])
        .arg(format!(
            "{}:{}",
            env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
        ))
        .arg(format!(
            "{}/hv-bench?list-type=2&prefix={}",
            env["HV_S3_ENDPOINT"],
            prefix.replace('/', "%2F")
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("<Key>")
        .skip(1)
        .filter_map(|k| k.split("</Key>").next())
        .map(str::to_owned)
        .collect()
}

/// Writes `data` as object `key` of the bench's bucket, as a stranger could.
fn s3_put(key: &str, data: &[u8]) {
    let env = s3_env();
    let file = std::env::temp_dir().join(format!("{}put", run_prefix()));
    std::fs::write(&file, data).unwrap();
    let st = Command::new("curl")
        .args([
            "-sS",
            "--fail",
            "--aws-sigv4",
            "aws:amz:garage:s3",
            "-H",
            "x-amz-content-sha256: UNSIGNED-PAYLOAD",
            "--user",
        ])
        .arg(format!(
            "{}:{}",
            env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
        ))
        .arg("-T")
        .arg(&file)
        .arg(format!("{}/hv-bench/{key}", env["HV_S3_ENDPOINT"]))
        .status()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(st.success());
}

#[test]
fn a_repository_on_garage_backs_up_restores_prunes_and_syncs() {
    let conn = connect();
    let off = GuestSpec::new("backup-s3-off").define(&conn);
    fill_disk(&off, 6, 6);
    let off_sha = image_sha256(&off.disk, None);
    let live = GuestSpec::new("backup-s3-live").writer().define(&conn);
    fill_disk(&live, 4, 4);
    live.start_ready();
    let b = Bench::s3("s3");
    let prefix = b
        .repo
        .to_str()
        .unwrap()
        .trim_start_matches("s3://hv-bench/")
        .to_owned();
    assert!(
        s3_objects(&prefix)
            .iter()
            .any(|k| k.ends_with("/hv-backup.json")),
        "init wrote the configuration as an object"
    );

    // A stopped and a running VM, then an incremental backup.
    let first = b.run(&["create", &off.name]).assert_ok().records();
    assert_eq!(first[0]["mode"], "offline");
    let recs = b.run(&["create", &live.name]).assert_ok().records();
    assert_eq!(recs[0]["mode"], "live");
    let st = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x33 8M 1M"])
        .arg(&off.disk)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let off_sha2 = image_sha256(&off.disk, None);
    let second = b.run(&["create", &off.name]).assert_ok().records();
    assert_eq!(
        second[0]["new_bytes"],
        4 << 20,
        "only the changed chunk is new"
    );
    assert_eq!(
        second[0]["reads"][0]["read"], "incremental",
        "{}",
        second[0]
    );
    let listed = b.run(&["ls"]).assert_ok().records();
    assert_eq!(listed.len(), 3);
    b.run(&["verify"]).assert_ok();
    b.run(&["verify", "--deep", "--identity", b.identity()])
        .assert_ok();

    // Restores give the exact bytes.
    for (id, sha) in [
        (backup_id(&first), &off_sha),
        (backup_id(&second), &off_sha2),
    ] {
        let out = b.out_dir(&format!("restored-{id}"));
        let recs = b
            .restore_to(&id, &out, &["--disk-format", "raw"])
            .assert_ok()
            .records();
        let path = recs[0]["disks"][0]["path"].as_str().unwrap();
        assert_eq!(&image_sha256(Path::new(path), None), sha);
    }

    // A backup on the store mounts as well: its image, byte for byte.
    let mnt = b.out_dir("mnt");
    let mut m = start_mount(&b, &backup_id(&second), &mnt, &["--raw"]);
    assert_eq!(image_sha256(&mnt.join("vda.raw"), None), off_sha2);
    umount(&b, &mnt).assert_ok();
    assert!(m.child.wait().unwrap().success());
    assert_nothing_attached(&b, &mnt);

    // Sync to a directory and back to another prefix; second runs send nothing.
    let dir_copy = b.dir.join("copy");
    let sent = sync(&b, &dir_copy, &[]).assert_ok().records();
    assert_eq!(sent.len(), 3);
    assert_eq!(
        field_sum(
            &sync(&b, &dir_copy, &[]).assert_ok().records(),
            "bytes_sent"
        ),
        0
    );
    let back = format!("{}-back", b.repo.display());
    let dir_s = dir_copy.to_str().unwrap();
    let to_s3 = |args: &[&str]| {
        let mut full = vec!["sync", "--from", dir_s, "--to", &back];
        full.extend_from_slice(args);
        hv(HV_BACKUP, &full, "")
    };
    to_s3(&[]).assert_ok();
    let again = to_s3(&["--verify"]).assert_ok().records();
    assert!(
        again
            .iter()
            .all(|r| r["changed"] == false && r["verified"] == true),
        "{again:?}"
    );
    deep_verify(&b, &back);

    // prune and gc on the store.
    let before = s3_objects(&format!("{prefix}/chunks/")).len();
    let pruned = b
        .run(&["prune", "--keep-last", "1", "--vm", &off.name])
        .assert_ok()
        .records();
    assert_eq!(pruned.iter().filter(|r| r["kept"] == false).count(), 1);
    assert_eq!(b.run(&["ls"]).assert_ok().records().len(), 2);
    assert!(s3_objects(&format!("{prefix}/chunks/")).len() <= before);
    assert!(
        s3_objects(&format!("{prefix}/locks/")).is_empty(),
        "every lock was given back"
    );
    b.run(&["verify", "--deep", "--identity", b.identity()])
        .assert_ok();

    // Someone else's garbage in the bucket: verify names it, gc keeps it
    // out of the way of backups, and a wrong key is exit 3 in one line.
    let chunk = s3_objects(&format!("{prefix}/chunks/"))[0].clone();
    s3_put(&chunk, b"not an age file");
    let bad = b.run(&["verify"]);
    bad.assert_failed("corrupt");
    let id = chunk.rsplit('/').next().unwrap();
    assert!(bad.stdout().contains(id), "{}", bad.stdout());
    let out = Command::new(HV_BACKUP)
        .args(["ls", "--repo", b.repo.to_str().unwrap()])
        .env("AWS_SECRET_ACCESS_KEY", "0".repeat(64))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");
}

/// The bench's three-node Garage (replication factor 3), for the tests
/// that stop its nodes; its own directory and ports, so the one-node
/// store the other tests share stays up.
const CLUSTER: &str = "/var/tmp/hv-garage3";

fn garage_node(node: u32, what: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/bench/garage.sh");
    let st = Command::new("bash")
        .arg(script)
        .args(["node", CLUSTER, &node.to_string(), what])
        .status()
        .unwrap();
    assert!(st.success(), "garage.sh node {node} {what}");
}

/// Spawns `hv-backup create VM` and waits until its first new chunk is in
/// the store (its listing under `prefix`), so what follows happens mid-backup.
fn create_until_first_chunk(b: &Bench, vm: &str, prefix: &str) -> std::process::Child {
    let before = s3_objects(&format!("{prefix}/chunks/")).len();
    let child = Command::new(HV_BACKUP)
        .args(b.args(&["create", vm, "--workers", "1"]))
        .env("HV_CONNECT", URI)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while s3_objects(&format!("{prefix}/chunks/")).len() <= before {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no chunk stored"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn garage_nodes_failing_mid_backup_leave_a_repository_that_verifies() {
    let conn = connect();
    let g = GuestSpec::new("backup-s3-faults").define(&conn);
    fill_disk(&g, 60, 0);
    garage_cluster(CLUSTER, 3, 38);
    let b = Bench::s3_here("faults");
    let prefix = b
        .repo
        .to_str()
        .unwrap()
        .trim_start_matches("s3://hv-bench/")
        .to_owned();

    // One node of three killed: writes still reach a quorum.
    let child = create_until_first_chunk(&b, &g.name, &prefix);
    garage_node(3, "stop");
    let out = child.wait_with_output().unwrap();
    let run = Run::new("hv-backup create (a node stopped)", out);
    garage_node(3, "start");
    let done = run.assert_ok().records();
    b.run(&[
        "verify",
        "--deep",
        "--identity",
        b.identity(),
        &backup_id(&done),
    ])
    .assert_ok();

    // Every node stopped: the backup fails clearly, and nothing of it
    // looks like a backup once the store is back.
    fill_disk(&g, 61, 0);
    let child = create_until_first_chunk(&b, &g.name, &prefix);
    for node in 1..=3 {
        garage_node(node, "stop");
    }
    let out = child.wait_with_output().unwrap();
    for node in 1..=3 {
        garage_node(node, "start");
    }
    // A store that cannot be reached is exit 3, as libvirt that cannot be.
    let failed = Run::new("hv-backup create (store down)", out);
    failed.assert_exit(3);
    let rec = &failed.record("ok", false);
    assert_eq!(
        (rec["ok"].as_bool(), rec["error"]["code"].as_str()),
        (Some(false), Some("connect_failed")),
        "{rec}"
    );
    let message = rec["error"]["message"].as_str().unwrap();
    assert!(message.contains("check that the store"), "{message}");
    // The nodes are back at once; the cluster answers once they have found
    // each other again (503 until then), which under load takes a while.
    let started = std::time::Instant::now();
    let listed = loop {
        let out = b.run(&["ls"]);
        if out.code() == Some(0) || started.elapsed() > Duration::from_secs(180) {
            break out.assert_ok().records();
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        listed.len(),
        1,
        "only the complete backup is listed: {listed:?}"
    );
    b.run(&["verify"]).assert_ok();
    let next = b.run(&["create", &g.name]).assert_ok().records();
    b.run(&[
        "verify",
        "--deep",
        "--identity",
        b.identity(),
        &backup_id(&next),
    ])
    .assert_ok();
    b.run(&["gc"]).assert_ok();
    b.run(&["verify", "--deep", "--identity", b.identity()])
        .assert_ok();
}

#[test]
fn garage_gc_waits_for_a_running_backup_and_never_takes_its_chunks() {
    let conn = connect();
    let g = GuestSpec::new("backup-s3-race").define(&conn);
    fill_disk(&g, 40, 8);
    let b = Bench::s3("race");
    let prefix = b
        .repo
        .to_str()
        .unwrap()
        .trim_start_matches("s3://hv-bench/")
        .to_owned();
    let child = create_until_first_chunk(&b, &g.name, &prefix);
    // Mid-backup its chunks are referenced by no index yet: a gc that ran
    // now would take them. It may not run.
    let gc = b.run(&["gc", "--lock-wait", "0"]);
    gc.assert_exit(1)
        .assert_stderr_contains("locked by another hv-backup run");
    let done = Run::new("hv-backup create", child.wait_with_output().unwrap());
    let id = backup_id(&done.assert_ok().records());
    // A gc that waits runs when the backup is done, and takes nothing it needs.
    b.run(&["gc"]).assert_ok();
    b.run(&["verify", "--deep", "--identity", b.identity(), &id])
        .assert_ok();
    assert!(
        s3_objects(&format!("{prefix}/locks/")).is_empty(),
        "every lock was given back"
    );
}
