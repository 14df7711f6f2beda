//! hv-clone on the real bench: linked clones of an hv-define VM that boot
//! with host names of their own while the template's disk stays as it was,
//! a full clone that is an identical, sparse and independent copy, the
//! refusals that make nothing (a running source, a name in use, a name
//! pattern without {n}, a dry run), and a clone failing after its disk was
//! copied that leaves nothing behind.
//!
//! Every VM is named with the run's prefix and the test's label; its files
//! go to a directory of the test under the bench's image directory (QEMU
//! must open them; there is no storage pool on the bench). [`Bench`]
//! removes every VM whose name starts with the test's prefix, their logs
//! and both directories when the test ends, however it ends.

// These tests need the bench (tests/run.sh); `cargo test` without
// `--features bench` still builds the command for the transcripts.
#![cfg(feature = "bench")]

use hv_testbench::{
    assert_fields, bin, connect, domain_type, error_message, exists, guest_image, hv, image_sha256,
    keys, remove_domain, run_prefix, scratch, serial_log, virsh, wait_for_line, Run, IMAGE_DIR,
    URI,
};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const HV_CLONE: &str = env!("CARGO_BIN_EXE_hv-clone");

/// How long a TCG guest may take to print a line (several boot at once on
/// the bench's two cores).
const BOOT: Duration = Duration::from_secs(180);

/// One test's VMs and files: every VM is named `<run prefix><label>-…`
/// (by [`Bench::name`], or by hv-clone from such a name), its disks and
/// seeds in `dir` (under IMAGE_DIR, where QEMU may open them), the test's
/// other files in `scratch`. Dropped, even by a failing test, it removes
/// every VM whose name starts with the prefix, their logs and NVRAM, and
/// both directories.
struct Bench {
    prefix: String,
    dir: PathBuf,
    scratch: PathBuf,
}

impl Bench {
    fn new(label: &str) -> Bench {
        // A bench that is not set up fails here, with the fix; connect()
        // also keeps libvirt from printing the failed lookups of the test.
        drop(connect());
        let prefix = format!("{}{label}", run_prefix());
        let dir = PathBuf::from(IMAGE_DIR).join(&prefix);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        Bench {
            prefix,
            dir,
            scratch: scratch(label),
        }
    }

    /// A VM name of this test: the prefix, '-' and `suffix`.
    fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.prefix)
    }

    /// A profile the bench can boot: the test guest's kernel (TCG unless
    /// HV_TEST_DOMAIN_TYPE says kvm), 128 MiB, a 64 MiB disk in `dir`;
    /// with `writer` the guest keeps writing to its disk, with `hostname`
    /// it gets a cloud-init seed.
    fn profile(&self, name: &str, writer: bool, hostname: Option<&str>) -> Value {
        let mut cmdline = String::from("console=ttyS0 panic=-1");
        if writer {
            cmdline.push_str(" hvtest.writer=1");
        }
        let mut p = json!({
            "name": name,
            "type": domain_type(),
            "memory": "128M",
            "dir": self.dir,
            "kernel": guest_image().join("vmlinux"),
            "initrd": guest_image().join("initramfs.img"),
            "cmdline": cmdline,
            "disk": "64M",
        });
        if let Some(h) = hostname {
            p["cloud_init"] = json!({ "hostname": h });
        }
        p
    }

    /// A file of this test's directory.
    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The files in `dir`, sorted.
    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .unwrap_or_else(|e| panic!("{}: {e}", self.dir.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The VMs of this test as `virsh list --all --name` shows them, sorted
    /// (the other tests of the run define and remove theirs meanwhile).
    fn domains(&self) -> Vec<String> {
        let mut names: Vec<String> = virsh(&["list", "--all", "--name"])
            .lines()
            .map(str::trim)
            .filter(|n| n.starts_with(&self.prefix))
            .map(str::to_owned)
            .collect();
        names.sort();
        names
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        // No connect(): a panic while a failed test unwinds would abort.
        if let Ok(conn) = virt::connect::Connect::open(Some(URI)) {
            if let Ok(domains) = conn.list_all_domains(0) {
                for dom in &domains {
                    if dom.name().is_ok_and(|n| n.starts_with(&self.prefix)) {
                        remove_domain(dom);
                    }
                }
            }
        }
        for dir in ["/var/log/libvirt/qemu", "/var/lib/libvirt/qemu/nvram"] {
            remove_prefixed(Path::new(dir), &self.prefix);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// Removes the files in `dir` whose names start with `prefix`.
fn remove_prefixed(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// hv-define with one profile piped in; its record.
fn define(profile: &Value) -> Value {
    hv(&bin("hv-define"), &[], &format!("{profile}\n"))
        .assert_ok()
        .one_record()
}

/// Runs qemu-io's `commands` (e.g. `write -P 0x5a 0 8M`) on a qcow2 image.
fn qemu_io(image: &Path, commands: &[&str]) {
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", "qcow2"]);
    for c in commands {
        cmd.arg("-c").arg(c);
    }
    let out = cmd
        .arg(image)
        .output()
        .expect("qemu-io (Debian package qemu-utils)");
    Run::new(format!("qemu-io {commands:?} {}", image.display()), out).assert_ok();
}

/// What `qemu-img info` says of an image (`-U`: a running guest's too).
fn image_info(image: &Path) -> Value {
    let out = Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(image)
        .output()
        .expect("qemu-img (Debian package qemu-utils)");
    let run = Run::new(format!("qemu-img info {}", image.display()), out);
    run.assert_ok();
    serde_json::from_slice(&run.output.stdout)
        .unwrap_or_else(|e| panic!("qemu-img info {}: {e}", image.display()))
}

/// The bytes a file takes on disk (not its length).
fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .blocks()
        * 512
}

fn tags(record: &Value) -> Vec<String> {
    record["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The way the docs show: three linked clones of a VM with a seed, started
/// from hv-clone's records. Each boots with its own seed (its own host
/// name) and writes to its own overlay; the source became a template that
/// hv-start refuses to run, and its disk is bit for bit what it was. hv-rm
/// takes the clones' files and keeps the template's.
#[test]
fn bench_linked_clones_boot_with_their_own_names_and_leave_the_template_alone() {
    let bench = Bench::new("clone-linked");
    let source = bench.name("base");
    let made = define(&bench.profile(&source, true, Some("linked-base")));
    let source_uuid = made["uuid"].as_str().expect("a uuid").to_owned();
    let source_disk = bench.file(&format!("{source}.qcow2"));
    let source_seed = bench.file(&format!("{source}-cidata.iso"));
    assert!(
        source_disk.exists() && source_seed.exists(),
        "{:?}",
        bench.files()
    );
    let digest = image_sha256(&source_disk, None);

    let cloned = hv(HV_CLONE, &["--linked", "--count", "3", &source], "");
    assert_eq!(cloned.assert_ok().records().len(), 3, "{cloned:?}");
    let names: Vec<String> = (1..=3).map(|n| format!("{source}-{n}")).collect();
    let mut seeds = HashSet::new();
    for name in &names {
        let r = cloned.record("name", name.as_str());
        let disk = bench.file(&format!("{name}.qcow2"));
        let seed = bench.file(&format!("{name}-cidata.iso"));
        assert_fields(
            &r,
            json!({
                "action": "clone",
                "ok": true,
                "state": "shutoff",
                "changed": true,
                "cloned_from": source,
                "linked": true,
                "copies": [{"target": "vda", "how": "linked"}],
                "seed": seed,
            }),
        );
        assert_ne!(r["uuid"], json!(source_uuid), "a new UUID: {r:#}");
        assert_fields(
            &r["disks"][0],
            json!({"device": "disk", "source": disk, "format": "qcow2"}),
        );
        assert_fields(&r["disks"][1], json!({"device": "cdrom", "source": seed}));
        assert!(
            !tags(&r).contains(&"template".to_owned()),
            "a clone is no template: {r:#}"
        );
        assert!(seed.exists(), "{}", seed.display());
        assert!(seeds.insert(seed), "each clone has a seed of its own");
        let info = image_info(&disk);
        assert_eq!(
            info["backing-filename"],
            json!(source_disk),
            "an overlay on the source's disk: {info:#}"
        );
    }
    assert!(exists(&source));
    let listed = hv(&bin("hv-ls"), &[&source], "").assert_ok().one_record();
    assert!(
        tags(&listed).contains(&"template".to_owned()),
        "the source of linked clones is tagged template: {listed:#}"
    );

    let started = hv(&bin("hv-start"), &["--wait"], &cloned.stdout());
    assert_eq!(started.assert_ok().records().len(), 3, "{started:?}");
    started.assert_each(json!({"ok": true, "state": "running"}));
    let mut said = HashSet::new();
    for name in &names {
        let line = wait_for_line(&serial_log(name), "hv-guest: cidata", BOOT);
        assert_eq!(
            line,
            format!(
                "hv-guest: cidata hostname={}",
                hv_common::making::seed::hostname_from(name)
            ),
            "{name} read a seed of its own, named after it"
        );
        said.insert(line);
    }
    assert_eq!(said.len(), 3, "three host names: {said:?}");

    let refused = hv(&bin("hv-start"), &[&source], "");
    let r = refused.assert_failed("invalid_state").one_record();
    let why = error_message(&r);
    for name in &names {
        assert!(
            why.contains(name.as_str()),
            "names the linked clones: {why}"
        );
    }
    assert_eq!(
        virsh(&["domstate", &source]).trim(),
        "shut off",
        "the template did not start"
    );

    // The writers run a few seconds, then the clones shut down cleanly.
    std::thread::sleep(Duration::from_secs(5));
    let mut args = vec!["--timeout", "60"];
    args.extend(names.iter().map(String::as_str));
    let stopped = hv(&bin("hv-stop"), &args, "");
    assert_eq!(stopped.assert_ok().records().len(), 3, "{stopped:?}");
    stopped.assert_each(json!({"ok": true, "how": "graceful"}));
    assert_eq!(
        image_sha256(&source_disk, None),
        digest,
        "the clones wrote to their overlays, not to the template's disk"
    );
    for name in &names {
        assert_ne!(
            image_sha256(&bench.file(&format!("{name}.qcow2")), None),
            digest,
            "{name}'s writer wrote to its own disk"
        );
    }

    let mut args = vec!["--remove-storage", "--yes"];
    args.extend(names.iter().map(String::as_str));
    hv(&bin("hv-rm"), &args, "").assert_ok();
    for name in &names {
        assert!(!exists(name), "hv-rm undefined {name}");
    }
    let mut left = vec![format!("{source}.qcow2"), format!("{source}-cidata.iso")];
    left.sort();
    assert_eq!(
        bench.files(),
        left,
        "the clones' disks and seeds are gone, the template's stay"
    );
    assert_eq!(image_sha256(&source_disk, None), digest);
    assert!(exists(&source));
}

/// A full clone of a VM whose disk holds data: a new UUID and its own disk
/// beside the source's, with the same content, taking no more room than
/// the source (holes stay holes), and independent: writing to the clone
/// leaves the source as it was. Its record is hv-ls's with what hv-clone adds.
#[test]
fn bench_a_full_clone_is_a_sparse_identical_independent_copy() {
    let bench = Bench::new("clone-full");
    let source = bench.name("base");
    let copy = bench.name("copy");
    let made = define(&bench.profile(&source, false, None));
    let source_disk = bench.file(&format!("{source}.qcow2"));
    // Data at the start and further in, holes between and after.
    qemu_io(
        &source_disk,
        &["write -P 0x5a 0 8M", "write -P 0xa5 32M 1M"],
    );
    let digest = image_sha256(&source_disk, None);

    let out = hv(HV_CLONE, &[&source, "--name", &copy], "");
    let r = out.assert_ok().one_record();
    let how = r["copies"][0]["how"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        how == "sparse" || how == "reflink",
        "a full copy is a reflink or sparse: {r:#}"
    );
    let disk = bench.file(&format!("{copy}.qcow2"));
    assert_fields(
        &r,
        json!({
            "name": copy,
            "action": "clone",
            "ok": true,
            "state": "shutoff",
            "changed": true,
            "cloned_from": source,
            "linked": false,
            "copies": [{"target": "vda", "how": how}],
        }),
    );
    assert!(
        r.get("seed").is_none(),
        "no seed without one to copy: {r:#}"
    );
    assert!(r["uuid"].is_string() && r["uuid"] != made["uuid"], "{r:#}");
    assert_eq!(r["disks"].as_array().map(Vec::len), Some(1), "{r:#}");
    assert_fields(
        &r["disks"][0],
        json!({"device": "disk", "source": disk, "format": "qcow2"}),
    );
    let listed = hv(&bin("hv-ls"), &[&copy], "").assert_ok().one_record();
    let expected = hv_testbench::with_envelope(
        "clone",
        &listed,
        json!({
            "changed": true,
            "cloned_from": source,
            "linked": false,
            "copies": [{"target": "vda", "how": how}],
        }),
    );
    assert_eq!(
        keys(&r),
        keys(&expected),
        "the record is hv-ls's with action, ok and what hv-clone adds:\n{r:#}\n{listed:#}"
    );
    assert_eq!(r, expected, "hv-ls says the same of the clone");
    let mut files = vec![format!("{source}.qcow2"), format!("{copy}.qcow2")];
    files.sort();
    assert_eq!(bench.files(), files);

    assert_eq!(
        image_sha256(&disk, None),
        digest,
        "the clone holds what the source holds"
    );
    let info = image_info(&disk);
    assert!(
        info.get("backing-filename").is_none(),
        "a standalone image: {info:#}"
    );
    let check = Command::new("qemu-img")
        .args(["check", "-q", "-f", "qcow2"])
        .arg(&disk)
        .output()
        .expect("qemu-img");
    Run::new(format!("qemu-img check {}", disk.display()), check).assert_ok();
    let (theirs, ours) = (allocated(&source_disk), allocated(&disk));
    assert!(
        ours <= theirs + (1 << 20),
        "the copy is sparse: it takes {ours} bytes, the source {theirs}"
    );

    qemu_io(&disk, &["write -P 0x33 0 1M"]);
    assert_ne!(image_sha256(&disk, None), digest, "the clone was written");
    assert_eq!(
        image_sha256(&source_disk, None),
        digest,
        "writing to the clone leaves the source as it was"
    );
}

/// What hv-clone refuses makes nothing: a running source (invalid_state),
/// a name in use (check_failed, plan.name; the VM that has it untouched),
/// --count with a --name that has no {n} (a usage error), and a dry run
/// that shows the clones' XML, valid by libvirt's schema.
#[test]
fn bench_refusals_make_nothing() {
    let bench = Bench::new("clone-refuse");
    let source = bench.name("base");
    let taken = bench.name("taken");
    let made = define(&bench.profile(&source, false, Some("refuse-base")));
    let source_uuid = made["uuid"].as_str().expect("a uuid").to_owned();
    define(&bench.profile(&taken, false, None));
    let source_disk = bench.file(&format!("{source}.qcow2"));
    let source_seed = bench.file(&format!("{source}-cidata.iso"));
    let taken_disk = bench.file(&format!("{taken}.qcow2"));
    let state = || (bench.domains(), bench.files());

    // A running source: its disk changes while it would be copied.
    hv(&bin("hv-start"), &["--wait", &source], "").assert_ok();
    let before = state();
    let out = hv(HV_CLONE, &[&source], "");
    let r = out.assert_failed("invalid_state").one_record();
    assert_fields(&r, json!({"name": source, "action": "clone", "ok": false}));
    assert_eq!(state(), before, "nothing is made of a running source");
    assert!(!exists(&format!("{source}-clone")));
    hv(&bin("hv-stop"), &["--force", &source], "").assert_ok();

    // A name in use: the VM that has it, and its disk (where the clone's
    // would go), are untouched.
    let xml_before = virsh(&["dumpxml", &taken]);
    let taken_digest = image_sha256(&taken_disk, None);
    let before = state();
    let out = hv(HV_CLONE, &[&source, "--name", &taken], "");
    let r = out.assert_failed("check_failed").one_record();
    assert_fields(
        &r,
        json!({"name": taken, "action": "clone", "ok": false, "cloned_from": source}),
    );
    let checks = r["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks: {r}"));
    assert_fields(&checks[0], json!({"check": "plan.name", "status": "fail"}));
    assert_eq!(
        virsh(&["dumpxml", &taken]),
        xml_before,
        "the existing VM is untouched"
    );
    assert_eq!(image_sha256(&taken_disk, None), taken_digest);
    assert_eq!(state(), before, "nothing is made");

    // --count without {n} in --name would give every clone one name.
    let fixed = bench.name("fixed");
    hv(HV_CLONE, &["--count", "2", "--name", &fixed, &source], "")
        .assert_exit(2)
        .assert_stdout_empty()
        .assert_stderr_contains("{n}");
    assert_eq!(state(), before, "a usage error makes nothing");
    assert!(!exists(&fixed));

    // A dry run: the records and XML of what would be made, nothing made.
    let out = hv(HV_CLONE, &["--dry-run", "--count", "2", &source], "");
    assert_eq!(out.assert_ok().records().len(), 2, "{out:?}");
    let mut uuids = HashSet::new();
    for n in 1..=2 {
        let name = format!("{source}-{n}");
        let r = out.record("name", name.as_str());
        let disk = bench.file(&format!("{name}.qcow2"));
        let seed = bench.file(&format!("{name}-cidata.iso"));
        assert_eq!(
            keys(&r),
            [
                "name",
                "uuid",
                "action",
                "ok",
                "changed",
                "cloned_from",
                "linked",
                "copies",
                "seed",
                "dry_run",
                "xml"
            ],
            "{r:#}"
        );
        assert_fields(
            &r,
            json!({
                "action": "clone",
                "ok": true,
                "changed": false,
                "cloned_from": source,
                "linked": false,
                "seed": seed,
                "dry_run": true,
            }),
        );
        assert_eq!(r["copies"][0]["target"], json!("vda"), "{r:#}");
        let how = r["copies"][0]["how"].as_str().unwrap_or_default();
        assert!(how == "sparse" || how == "reflink", "{r:#}");
        let uuid = r["uuid"].as_str().expect("a uuid").to_owned();
        assert_ne!(uuid, source_uuid);
        assert!(uuids.insert(uuid.clone()), "each clone has its own UUID");
        let xml = r["xml"].as_str().expect("the XML");
        let file = bench.scratch.join(format!("dry-{n}.xml"));
        std::fs::write(&file, xml).unwrap();
        let valid = Command::new("virt-xml-validate")
            .arg(&file)
            .arg("domain")
            .output()
            .expect("virt-xml-validate (Debian package libvirt-clients)");
        let valid = Run::new(
            format!("virt-xml-validate {} domain", file.display()),
            valid,
        );
        assert!(valid.status.success(), "{valid:?}\nthe XML:\n{xml}");
        for want in [
            format!("<name>{name}</name>"),
            format!("<uuid>{uuid}</uuid>"),
            format!("'{}'", disk.display()),
            format!("'{}'", seed.display()),
            format!("/var/log/libvirt/qemu/{name}-serial0.log"),
        ] {
            assert!(xml.contains(&want), "the XML has {want}:\n{xml}");
        }
        for unwanted in [
            format!("<name>{source}</name>"),
            source_uuid.clone(),
            format!("'{}'", source_disk.display()),
            format!("'{}'", source_seed.display()),
            format!("/{source}-serial0.log"),
        ] {
            assert!(
                !xml.contains(&unwanted),
                "the XML still has the source's {unwanted}:\n{xml}"
            );
        }
    }
    assert_eq!(state(), before, "a dry run makes nothing");
}

/// A clone that fails after its disk was copied (its seed's file is in
/// the way: hv-clone never replaces a file) leaves nothing of itself: no
/// domain, no disk, no temporary directory; the file in the way is kept.
#[test]
fn bench_a_clone_failing_after_its_disk_is_copied_leaves_nothing() {
    let bench = Bench::new("clone-undo");
    let source = bench.name("base");
    let clone = bench.name("copy");
    define(&bench.profile(&source, false, Some("undo-base")));
    let source_disk = bench.file(&format!("{source}.qcow2"));
    // Data to copy, so the copy is made before the seed fails.
    qemu_io(&source_disk, &["write -P 0x5a 0 4M"]);
    let blocker = bench.file(&format!("{clone}-cidata.iso"));
    std::fs::write(&blocker, b"not the clone's seed\n").unwrap();
    let before = (bench.domains(), bench.files());

    let out = hv(HV_CLONE, &[&source, "--name", &clone], "");
    let r = out.assert_failed("invalid_state").one_record();
    assert_fields(
        &r,
        json!({"name": clone, "action": "clone", "ok": false, "cloned_from": source}),
    );
    let why = error_message(&r);
    assert!(
        why.contains(&blocker.display().to_string()),
        "names the file in the way: {why}"
    );
    assert!(!exists(&clone), "no domain {clone} is left");
    assert!(
        !bench.file(&format!("{clone}.qcow2")).exists(),
        "the copied disk is removed: {:?}",
        bench.files()
    );
    assert_eq!(
        (bench.domains(), bench.files()),
        before,
        "nothing of the clone is left, no temporary directory either"
    );
    assert_eq!(
        std::fs::read(&blocker).unwrap(),
        b"not the clone's seed\n",
        "the file in the way is not replaced"
    );
}

/// A source whose seed file is gone cannot give a clone a seed of its own:
/// the clone fails after its disk was copied, and nothing of it is left.
#[test]
fn bench_a_source_whose_seed_is_gone_is_not_cloned_and_leaves_nothing() {
    let bench = Bench::new("clone-noseed");
    let source = bench.name("base");
    let clone = bench.name("copy");
    let made = define(&bench.profile(&source, false, Some("noseed-base")));
    let seed = bench.file(&format!("{source}-cidata.iso"));
    assert_eq!(made["seed"], json!(seed), "{made:#}");
    std::fs::remove_file(&seed).unwrap();
    let before = (bench.domains(), bench.files());

    let out = hv(HV_CLONE, &[&source, "--name", &clone], "");
    out.assert_exit(1);
    let r = out.one_record();
    assert_fields(
        &r,
        json!({"name": clone, "action": "clone", "ok": false, "cloned_from": source}),
    );
    assert!(
        error_message(&r).contains(&seed.display().to_string()),
        "names the missing seed: {r:#}"
    );
    assert!(!exists(&clone), "no domain {clone} is left");
    assert_eq!(
        (bench.domains(), bench.files()),
        before,
        "no disk, seed or temporary directory of the clone is left"
    );
}
