//! hv-iso end to end: ISOs built by xorriso, checksum files signed by keys
//! gpg generates for each test (good, foreign, expired, revoked, subkey),
//! served by a loopback HTTP server that can drop connections, and by a raw
//! one that redirects anywhere or sends bytes without end. What is
//! asserted is what a user checks: the exit status, the record, what is in
//! the library directory afterwards, and what the server was asked.

// These tests need the bench (tests/run.sh); `cargo test` without
// `--features bench` still builds the command for the transcripts.
#![cfg(feature = "bench")]

use hv_testbench::http::{Fault, FileServer};
use hv_testbench::{assert_fields, Run};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A scratch directory (server root, library, gpg home) removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = PathBuf::from(format!("/var/tmp/{}iso-{test}", hv_testbench::run_prefix()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("www")).unwrap();
        Scratch(dir)
    }
    fn www(&self) -> PathBuf {
        self.0.join("www")
    }
    fn lib(&self) -> PathBuf {
        self.0.join("library")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A GnuPG home with keys made for the test; its agent dies with it.
struct Gpg {
    home: PathBuf,
}

impl Gpg {
    fn new() -> Gpg {
        // Short: gpg-agent's socket path must fit in sun_path.
        let home = PathBuf::from(format!("/tmp/{}g{}", hv_testbench::run_prefix(), unique()));
        std::fs::create_dir_all(&home).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        Gpg { home }
    }

    fn run(&self, args: &[&str]) -> Run {
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(&self.home)
            .args([
                "--batch",
                "--yes",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("gpg (Debian package gpg)");
        let out = Run::new(format!("gpg {args:?}"), out);
        out.assert_ok();
        out
    }

    /// A new key; returns its fingerprint.
    fn key(&self, uid: &str, expire: &str, faked_time: Option<&str>) -> String {
        let mut args = vec![];
        if let Some(t) = faked_time {
            args.extend(["--faked-system-time", t]);
        }
        args.extend(["--quick-gen-key", uid, "ed25519", "sign", expire]);
        self.run(&args);
        self.fingerprints(uid)[0].clone()
    }

    /// The primary's fingerprint, then the subkeys'.
    fn fingerprints(&self, uid: &str) -> Vec<String> {
        self.run(&["--with-colons", "--list-keys", uid])
            .stdout()
            .lines()
            .filter(|l| l.starts_with("fpr:"))
            .map(|l| l.split(':').nth(9).unwrap().to_owned())
            .collect()
    }

    fn sign(&self, key: &str, mode: &str, file: &Path, out: &Path, faked_time: Option<&str>) {
        let mut args = vec!["--local-user", key, "-o", out.to_str().unwrap()];
        if let Some(t) = faked_time {
            args.extend(["--faked-system-time", t]);
        }
        match mode {
            "armor" => args.extend(["--armor", "--detach-sign"]),
            "binary" => args.push("--detach-sign"),
            "clear" => args.push("--clearsign"),
            _ => unreachable!(),
        }
        args.push(file.to_str().unwrap());
        self.run(&args);
    }

    fn export(&self, keys: &[&str], armor: bool, out: &Path) {
        let mut args = vec!["-o", out.to_str().unwrap()];
        if armor {
            args.push("--armor");
        }
        args.push("--export");
        args.extend(keys);
        self.run(&args);
    }

    fn revoke(&self, fpr: &str) {
        let cert = self.home.join(format!("openpgp-revocs.d/{fpr}.rev"));
        let text = std::fs::read_to_string(&cert)
            .unwrap()
            .replace(":-----BEGIN", "-----BEGIN");
        let usable = self.home.join("revoke.asc");
        std::fs::write(&usable, text).unwrap();
        self.run(&["--import", usable.to_str().unwrap()]);
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(&self.home)
            .args(["--kill", "gpg-agent"])
            .status();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn unique() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// An ISO 9660 image with `payload_mib` MiB of pseudo-random data in it.
fn make_iso(dir: &Path, name: &str, payload_mib: usize, seed: u64) -> PathBuf {
    let content = dir.join(format!("{name}.content"));
    std::fs::create_dir_all(&content).unwrap();
    let mut x = seed | 1;
    let data: Vec<u8> = (0..payload_mib << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(content.join("payload.bin"), data).unwrap();
    let iso = dir.join(name);
    let out = Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-V", "HVTEST", "-o"])
        .arg(&iso)
        .arg(&content)
        .output()
        .expect("xorriso (Debian package xorriso)");
    Run::new("xorriso -as mkisofs", out).assert_ok();
    std::fs::remove_dir_all(&content).unwrap();
    iso
}

/// A scratch directory, a GnuPG home and the distributor's signing key,
/// exported (armoured) to key.asc in the scratch directory.
fn distributor(test: &str) -> (Scratch, Gpg, String) {
    let s = Scratch::new(test);
    let gpg = Gpg::new();
    let key = gpg.key("Distributor <cd@example.org>", "never", None);
    gpg.export(&[&key], true, &s.0.join("key.asc"));
    (s, gpg, key)
}

fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn hv_iso(lib: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_hv-iso"))
        .args(args)
        .env("HV_ISO_LIBRARY", lib)
        .stdin(Stdio::null())
        .output()
        .expect("run hv-iso");
    Run::new(
        format!("HV_ISO_LIBRARY={} hv-iso {args:?}", lib.display()),
        out,
    )
}

/// What the library directory holds, dot-files included (not the lock
/// files, which stay, empty, so that locking never races with removal).
fn listing(lib: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(lib)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.ends_with(".lock"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Debian's layout: an image, SHA256SUMS listing it among others, and the
/// armoured detached signature SHA256SUMS.sign.
fn debian_mirror(s: &Scratch, gpg: &Gpg, key: &str, image: &str) -> PathBuf {
    let iso = make_iso(&s.www(), image, 3, 7);
    let sums = format!(
        "{}  debian-13.2.0-amd64-DVD-1.iso\n{}  {image}\n",
        "0".repeat(64),
        sha256sum(&iso)
    );
    std::fs::write(s.www().join("SHA256SUMS"), sums).unwrap();
    gpg.sign(
        key,
        "armor",
        &s.www().join("SHA256SUMS"),
        &s.www().join("SHA256SUMS.sign"),
        None,
    );
    iso
}

#[test]
fn a_signed_image_is_admitted_listed_verified_and_bit_rot_is_caught() {
    let s = Scratch::new("good");
    let gpg = Gpg::new();
    let key = gpg.key(
        "Debian CD signing key <debian-cd@lists.debian.org>",
        "never",
        None,
    );
    gpg.export(&[&key], true, &s.0.join("debian-cd.asc"));
    let iso = debian_mirror(&s, &gpg, &key, "debian-13.2.0-amd64-netinst.iso");
    let server = FileServer::start(s.www());
    let out = hv_iso(
        &s.lib(),
        &[
            "add",
            &server.url("debian-13.2.0-amd64-netinst.iso"),
            "--checksums",
            &server.url("SHA256SUMS"),
            "--signature",
            &server.url("SHA256SUMS.sign"),
            "--keyring",
            s.0.join("debian-cd.asc").to_str().unwrap(),
        ],
    );
    let r = out.assert_ok().one_record();
    let want_sha = sha256sum(&iso);
    let image = s.lib().join("debian-13.2.0-amd64-netinst.iso");
    assert_fields(
        &r,
        json!({
            "ok": true,
            "name": "debian-13.2.0-amd64-netinst.iso",
            "verified_by": "signature",
            "unsigned": false,
            "signer": key,
            "sha256": want_sha,
            "size_bytes": std::fs::metadata(&iso).unwrap().len(),
            "checksum": {"algorithm": "sha256"},
            "source": server.url("debian-13.2.0-amd64-netinst.iso"),
            "signature": server.url("SHA256SUMS.sign"),
            "path": image.to_str().unwrap(),
        }),
    );
    assert_eq!(sha256sum(&image), want_sha);
    assert_eq!(
        listing(&s.lib()),
        [
            "debian-13.2.0-amd64-netinst.iso",
            "debian-13.2.0-amd64-netinst.iso.json"
        ]
    );
    let sidecar: Value = serde_json::from_slice(
        &std::fs::read(s.lib().join("debian-13.2.0-amd64-netinst.iso.json")).unwrap(),
    )
    .unwrap();
    assert_fields(&sidecar, json!({"sha256": want_sha, "signer": key}));
    assert!(sidecar["verified_at"].as_str().unwrap().ends_with('Z'));

    let listed = hv_iso(&s.lib(), &["ls", "--format", "jsonl"])
        .assert_ok()
        .one_record();
    assert_fields(
        &listed,
        json!({"name": "debian-13.2.0-amd64-netinst.iso", "sha256": want_sha}),
    );

    let verify = hv_iso(&s.lib(), &["verify"]);
    assert_fields(&verify.assert_ok().one_record(), json!({"ok": true}));

    flip_byte(&image, 40_000);
    let verify = hv_iso(&s.lib(), &["verify", "debian-13.2.0-amd64-netinst.iso"]);
    let r = verify.assert_exit(1).one_record();
    assert_fields(&r, json!({"ok": false, "error": {"code": "corrupt"}}));
    assert!(
        r["error"]["message"].as_str().unwrap().contains("--force"),
        "{r}"
    );
    // The failed check is kept for hv-health and hv-metrics.
    let after = hv_iso(&s.lib(), &["ls", "--format", "jsonl"]).one_record();
    assert_fields(&after, json!({"check_ok": false}));

    hv_iso(&s.lib(), &["rm", "debian-13.2.0-amd64-netinst.iso"]).assert_ok();
    assert!(listing(&s.lib()).is_empty());
    let again = hv_iso(&s.lib(), &["rm", "debian-13.2.0-amd64-netinst.iso"]);
    assert_fields(
        &again.assert_exit(1).one_record(),
        json!({"error": {"code": "not_found"}}),
    );
}

fn flip_byte(path: &Path, at: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 1]).unwrap();
}

#[test]
fn fedora_clearsigned_sha512_with_crlf_from_local_files_signed_by_a_subkey() {
    let s = Scratch::new("fedora");
    let gpg = Gpg::new();
    let uid = "Fedora (43) <fedora-43-primary@fedoraproject.org>";
    let primary = gpg.key(uid, "never", None);
    gpg.run(&["--quick-add-key", &primary, "ed25519", "sign", "never"]);
    let subkey = gpg.fingerprints(uid)[1].clone();
    gpg.export(&[&primary], false, &s.0.join("fedora.gpg"));
    let name = "Fedora-Server-netinst-x86_64-43-1.6.iso";
    let iso = make_iso(&s.www(), name, 2, 11);
    let sha512 =
        String::from_utf8_lossy(&Command::new("sha512sum").arg(&iso).output().unwrap().stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned();
    let size = std::fs::metadata(&iso).unwrap().len();
    let checksum = format!(
        "# {name}: {size} bytes\r\nSHA512 (./{name}) = {sha512}\r\nSHA512 (Fedora-Server-dvd-x86_64-43-1.6.iso) = {}\r\n",
        "1".repeat(128)
    );
    let plain = s.www().join("CHECKSUM.txt");
    std::fs::write(&plain, checksum).unwrap();
    let signed = s.www().join("Fedora-Server-43-1.6-x86_64-CHECKSUM");
    gpg.sign(&format!("{subkey}!"), "clear", &plain, &signed, None);
    let keyring = s.0.join("fedora.gpg");
    let out = hv_iso(
        &s.lib(),
        &[
            "add",
            iso.to_str().unwrap(),
            "--checksums",
            signed.to_str().unwrap(),
            "--keyring",
            keyring.to_str().unwrap(),
        ],
    );
    let r = out.assert_ok().one_record();
    // The primary key is named, not the subkey; clearsigned, there is no
    // separate signature.
    assert_fields(
        &r,
        json!({
            "signer": primary,
            "checksum": {"algorithm": "sha512", "digest": sha512},
            "sha256": sha256sum(&iso),
            "signature": null,
        }),
    );

    // Dash-escaping and CRLF are part of what is signed: change one digit
    // of the signed text and the signature must fail.
    let text = std::fs::read_to_string(&signed).unwrap();
    let altered = text.replacen(
        &sha512[..8],
        &format!(
            "{}{}",
            &sha512[..7],
            if &sha512[7..8] == "0" { "1" } else { "0" }
        ),
        1,
    );
    std::fs::write(&signed, altered).unwrap();
    let out = hv_iso(
        &s.lib(),
        &[
            "add",
            iso.to_str().unwrap(),
            "--name",
            "second.iso",
            "--checksums",
            signed.to_str().unwrap(),
            "--keyring",
            keyring.to_str().unwrap(),
        ],
    );
    out.assert_exit(1)
        .assert_stderr_contains("does not match the signed file");
}

#[test]
fn with_only_a_keyring_the_checksums_and_signature_next_to_the_image_are_found() {
    let (s, gpg, key) = distributor("discover");
    let iso = make_iso(&s.www(), "distro.iso", 1, 3);
    std::fs::write(
        s.www().join("SHA256SUMS"),
        format!("{}  distro.iso\n", sha256sum(&iso)),
    )
    .unwrap();
    gpg.sign(
        &key,
        "binary",
        &s.www().join("SHA256SUMS"),
        &s.www().join("SHA256SUMS.gpg"),
        None,
    );
    let server = FileServer::start(s.www());
    let out = hv_iso(
        &s.lib(),
        &[
            "add",
            &server.url("distro.iso"),
            "--keyring",
            s.0.join("key.asc").to_str().unwrap(),
        ],
    );
    assert_fields(
        &out.assert_ok().one_record(),
        json!({
            "checksums": server.url("SHA256SUMS"),
            "signature": server.url("SHA256SUMS.gpg"),
            "signer": key,
        }),
    );
}

#[test]
fn a_tampered_image_is_refused_and_nothing_is_left() {
    let (s, gpg, key) = distributor("tampered");
    let iso = debian_mirror(&s, &gpg, &key, "distro.iso");
    flip_byte(&iso, 1_500_000);
    let server = FileServer::start(s.www());
    let out = hv_iso(
        &s.lib(),
        &[
            "add",
            &server.url("distro.iso"),
            "--keyring",
            s.0.join("key.asc").to_str().unwrap(),
        ],
    );
    // It names the hash it got.
    out.assert_exit(1)
        .assert_stderr_contains("distro.iso is not the published image")
        .assert_stderr_contains(&sha256sum(&iso));
    assert!(
        listing(&s.lib()).is_empty(),
        "left: {:?}",
        listing(&s.lib())
    );
    hv_iso(&s.lib(), &["ls", "--format", "jsonl"]).assert_stdout_empty();
}

#[test]
fn signatures_by_other_expired_or_revoked_keys_fail_naming_the_key_before_any_download() {
    let s = Scratch::new("untrusted");
    let gpg = Gpg::new();
    let trusted = gpg.key("Distributor <cd@example.org>", "never", None);
    let other = gpg.key("Someone Else <evil@example.net>", "never", None);
    let expired = gpg.key("Old Key <old@example.org>", "1d", Some("20200101T000000!"));
    let revoked = gpg.key("Lost Key <lost@example.org>", "never", None);
    let iso = make_iso(&s.www(), "distro.iso", 1, 5);
    std::fs::write(
        s.www().join("SHA256SUMS"),
        format!("{}  distro.iso\n", sha256sum(&iso)),
    )
    .unwrap();
    let sums = s.www().join("SHA256SUMS");
    gpg.sign(&other, "armor", &sums, &s.www().join("by-other.sign"), None);
    gpg.sign(
        &expired,
        "armor",
        &sums,
        &s.www().join("by-expired.sign"),
        Some("20200101T120000!"),
    );
    gpg.sign(
        &revoked,
        "armor",
        &sums,
        &s.www().join("by-revoked.sign"),
        None,
    );
    gpg.revoke(&revoked);
    gpg.export(
        &[&trusted, &expired, &revoked],
        true,
        &s.0.join("keyring.asc"),
    );
    let server = FileServer::start(s.www());
    let cases = [
        ("by-other.sign", other.as_str(), "not in the keyring"),
        ("by-expired.sign", &expired, "expired on 2020-01-02"),
        ("by-revoked.sign", &revoked, "is revoked"),
    ];
    for (sig, fpr, why) in cases {
        let out = hv_iso(
            &s.lib(),
            &[
                "add",
                &server.url("distro.iso"),
                "--checksums",
                &server.url("SHA256SUMS"),
                "--signature",
                &server.url(sig),
                "--keyring",
                s.0.join("keyring.asc").to_str().unwrap(),
            ],
        );
        out.assert_exit(1).assert_stderr_contains(why);
        let err = out.stderr();
        assert!(
            err.contains(fpr) || err.contains(&fpr[24..]),
            "{sig} names the key {fpr}: {err}"
        );
        assert!(
            !err.contains('\n') || err.trim_end().lines().count() == 1,
            "one line: {err}"
        );
    }
    assert!(
        server.requests("distro.iso").is_empty(),
        "no image byte fetched on a bad signature"
    );
    assert!(listing(&s.lib()).is_empty());
}

#[test]
fn a_wrong_or_missing_proof_is_refused_and_unsigned_admission_is_explicit_and_recorded() {
    let s = Scratch::new("unsigned");
    let iso = make_iso(&s.www(), "homebrew.iso", 1, 9);
    let path = iso.to_str().unwrap();
    let out = hv_iso(&s.lib(), &["add", path]);
    out.assert_exit(2)
        .assert_stderr_contains("--allow-unsigned");
    let wrong = "ab".repeat(32);
    let out = hv_iso(
        &s.lib(),
        &["add", path, "--sha256", &wrong, "--allow-unsigned"],
    );
    out.assert_exit(1)
        .assert_stderr_contains(&format!("--sha256 says {wrong}"));
    assert!(
        listing(&s.lib()).is_empty(),
        "left: {:?}",
        listing(&s.lib())
    );
    let md5 = String::from_utf8_lossy(&Command::new("md5sum").arg(&iso).output().unwrap().stdout)
        .into_owned();
    std::fs::write(s.www().join("MD5SUMS"), md5).unwrap();
    let sums = s.www().join("MD5SUMS");
    let out = hv_iso(
        &s.lib(),
        &[
            "add",
            path,
            "--checksums",
            sums.to_str().unwrap(),
            "--allow-unsigned",
        ],
    );
    out.assert_exit(1).assert_stderr_contains("--allow-weak");
    let right = sha256sum(&iso);
    let out = hv_iso(
        &s.lib(),
        &[
            "add",
            path,
            "--sha256",
            &right.to_uppercase(),
            "--allow-unsigned",
            "--name",
            "my image ü.iso",
        ],
    );
    assert_fields(
        &out.assert_ok().one_record(),
        json!({"verified_by": "sha256", "unsigned": true, "name": "my image ü.iso"}),
    );
    let out = hv_iso(
        &s.lib(),
        &[
            "add",
            path,
            "--sha256",
            &right,
            "--allow-unsigned",
            "--name",
            "my image ü.iso",
        ],
    );
    out.assert_exit(2); // an existing entry is not replaced without --force
    let out = hv_iso(
        &s.lib(),
        &["add", path, "--allow-unsigned", "--name", "../escape.iso"],
    );
    out.assert_exit(2);
    let keybox = s.0.join("pubring.kbx");
    std::fs::write(&keybox, b"\0\0\0\x20\x01\x01\0\0KBXf").unwrap();
    let out = hv_iso(
        &s.lib(),
        &[
            "add",
            path,
            "--checksums",
            sums.to_str().unwrap(),
            "--keyring",
            keybox.to_str().unwrap(),
        ],
    );
    out.assert_exit(2).assert_stderr_contains("gpg --export");
}

fn add_from(server: &FileServer, s: &Scratch, extra: &[&str]) -> Run {
    let mut args = vec![
        "add".to_owned(),
        server.url("distro.iso"),
        "--keyring".into(),
        s.0.join("key.asc").display().to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    hv_iso(
        &s.lib(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
}

#[test]
fn a_dropped_download_resumes_within_the_run_and_across_runs() {
    let (s, gpg, key) = distributor("resume");
    let iso = debian_mirror(&s, &gpg, &key, "distro.iso");
    let server = FileServer::start(s.www());

    server.fault("distro.iso", Fault::TruncateOnce(1 << 20));
    let out = add_from(&server, &s, &["--retries", "0"]);
    out.assert_exit(1).assert_stderr_contains(
        "the 1048576 bytes fetched are kept: run the same command again to resume",
    );
    assert_eq!(
        listing(&s.lib()),
        [".distro.iso.part", ".distro.iso.part.json"]
    );
    assert_eq!(
        std::fs::metadata(s.lib().join(".distro.iso.part"))
            .unwrap()
            .len(),
        1 << 20
    );
    // A partial file is not listed.
    hv_iso(&s.lib(), &["ls", "--format", "jsonl"]).assert_stdout_empty();

    let out = add_from(&server, &s, &[]);
    assert_fields(
        &out.assert_ok().one_record(),
        json!({"sha256": sha256sum(&iso)}),
    );
    let second = server.requests("distro.iso").pop().unwrap();
    assert_eq!(
        second.range.as_deref(),
        Some("bytes=1048576-"),
        "the second run asked only for the rest"
    );
    assert!(
        second.if_range.is_some(),
        "with If-Range, so a changed file starts over"
    );
    assert_eq!(listing(&s.lib()), ["distro.iso", "distro.iso.json"]);

    std::fs::remove_dir_all(s.lib()).unwrap();
    server.fault("distro.iso", Fault::TruncateOnce(2 << 20));
    let out = add_from(&server, &s, &["--retries", "2"]);
    out.assert_ok().assert_stderr_contains("resuming at byte");
    assert_eq!(sha256sum(&s.lib().join("distro.iso")), sha256sum(&iso));
}

#[test]
fn a_server_that_drops_every_connection_fails_cleanly() {
    let (s, gpg, key) = distributor("drop");
    debian_mirror(&s, &gpg, &key, "distro.iso");
    let server = FileServer::start(s.www());
    server.fault("distro.iso", Fault::DropAlways);
    let out = add_from(&server, &s, &["--retries", "1"]);
    // It names the URL, and it retried.
    out.assert_exit(1)
        .assert_stderr_contains(&server.url("distro.iso"))
        .assert_stderr_contains("resuming at byte 0");
    assert_eq!(server.requests("distro.iso").len(), 2);
    hv_iso(&s.lib(), &["ls", "--format", "jsonl"]).assert_stdout_empty();

    let missing = FileServer::start(s.0.join("nowhere"));
    let out = hv_iso(
        &s.lib(),
        &[
            "add",
            &missing.url("distro.iso"),
            "--keyring",
            s.0.join("key.asc").to_str().unwrap(),
        ],
    );
    out.assert_exit(2)
        .assert_stderr_contains("give --checksums");
}

#[test]
fn a_server_that_ignores_range_restarts_the_file_from_zero() {
    let (s, gpg, key) = distributor("norange");
    let iso = debian_mirror(&s, &gpg, &key, "distro.iso");
    let server = FileServer::start(s.www());
    server.fault("distro.iso", Fault::TruncateOnce(1 << 20));
    add_from(&server, &s, &["--retries", "0"]).assert_exit(1);
    server.fault("distro.iso", Fault::IgnoreRange);
    let out = add_from(&server, &s, &[]);
    out.assert_ok();
    assert_eq!(
        sha256sum(&s.lib().join("distro.iso")),
        sha256sum(&iso),
        "not spliced"
    );
}

#[test]
fn a_keyring_in_gnupgs_own_format_verifies_and_an_unreadable_certificate_hides_no_other() {
    let (s, gpg, key) = distributor("ring");
    let iso = debian_mirror(&s, &gpg, &key, "distro.iso");
    // As /usr/share/keyrings/*.gpg are written: GnuPG's keyring format (not
    // a keybox), with a trust packet after the key, user ID and signature.
    let ring = s.0.join("ring.gpg");
    let asc = s.0.join("key.asc");
    gpg.run(&[
        "--no-default-keyring",
        "--keyring",
        &format!("gnupg-ring:{}", ring.display()),
        "--import",
        asc.to_str().unwrap(),
    ]);
    let listed = gpg
        .run(&["--list-packets", ring.to_str().unwrap()])
        .stdout();
    assert!(
        listed.contains(":trust packet:"),
        "gpg wrote no trust packets: {listed}"
    );
    let server = FileServer::start(s.www());
    let add = |keyring: &Path, name: &str| {
        hv_iso(
            &s.lib(),
            &[
                "add",
                &server.url("distro.iso"),
                "--name",
                name,
                "--keyring",
                keyring.to_str().unwrap(),
            ],
        )
    };
    let out = add(&ring, "distro.iso");
    assert_fields(
        &out.assert_ok().one_record(),
        json!({"signer": key, "sha256": sha256sum(&iso)}),
    );

    // Certificates that cannot be read come first: a key packet cut short
    // (with the user ID that followed it) and an RSA key whose modulus is
    // missing. A damaged packet ends the file.
    let broken: [&[u8]; 3] = [
        &[0xC6, 5, 4, 0x65, 0, 0, 0],
        b"\xCD\x10Broken <b@e.org>",
        &[
            0x99, 0x00, 0x0A, 4, 0x65, 0, 0, 0, 1, 0x10, 0x00, 0xAB, 0xCD,
        ],
    ];
    let mut mixed = broken.concat();
    mixed.extend(std::fs::read(&ring).unwrap());
    mixed.extend_from_slice(&[0xC6, 0x40, 4]);
    let mixed_ring = s.0.join("mixed.gpg");
    std::fs::write(&mixed_ring, mixed).unwrap();
    let out = add(&mixed_ring, "again.iso");
    assert_fields(&out.assert_ok().one_record(), json!({"signer": key}));

    let only_broken = s.0.join("broken.gpg");
    std::fs::write(&only_broken, broken.concat()).unwrap();
    let out = add(&only_broken, "third.iso");
    out.assert_exit(2)
        .assert_stderr_contains("holds no OpenPGP public key that can be read");
}

#[test]
fn a_signature_of_another_file_names_both_files_and_the_fix_in_one_line() {
    let (s, gpg, key) = distributor("wrongsig");
    debian_mirror(&s, &gpg, &key, "distro.iso");
    std::fs::write(s.www().join("SHA512SUMS"), "another file\n").unwrap();
    gpg.sign(
        &key,
        "armor",
        &s.www().join("SHA512SUMS"),
        &s.www().join("SHA512SUMS.sign"),
        None,
    );
    let server = FileServer::start(s.www());
    let out = hv_iso(
        &s.lib(),
        &[
            "add",
            &server.url("distro.iso"),
            "--checksums",
            &server.url("SHA256SUMS"),
            "--signature",
            &server.url("SHA512SUMS.sign"),
            "--keyring",
            s.0.join("key.asc").to_str().unwrap(),
        ],
    );
    let want = format!(
        "{} does not match its signature {} (by key {key})",
        server.url("SHA256SUMS"),
        server.url("SHA512SUMS.sign")
    );
    // It names both files and the fix.
    out.assert_exit(1)
        .assert_stderr_contains(&want)
        .assert_stderr_contains("fetch both again");
    let err = out.stderr();
    assert!(
        !err.contains("assertion") && !err.contains("left:"),
        "no library internals: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(server.requests("distro.iso").is_empty());
}

/// A loopback server that answers each request with what `answer` writes
/// for its path: the redirects and endless bodies of a broken or hostile
/// mirror, which the testbench's file server does not send.
struct Raw {
    port: u16,
}

impl Raw {
    fn start(
        answer: impl Fn(&str, &mut TcpStream) -> std::io::Result<()> + Send + Sync + 'static,
    ) -> Raw {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = Arc::new(answer);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let answer = answer.clone();
                std::thread::spawn(move || {
                    if let Some(path) = request_path(&conn) {
                        let _ = answer(&path, &mut conn);
                    }
                });
            }
        });
        Raw { port }
    }

    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

/// Reads one request's head and returns its path.
fn request_path(conn: &TcpStream) -> Option<String> {
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_owned();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 || header.trim().is_empty() {
            return Some(path);
        }
    }
}

fn redirect(out: &mut TcpStream, to: &str) -> std::io::Result<()> {
    write!(
        out,
        "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
}

#[test]
fn redirects_lead_only_to_http_or_https_and_a_server_never_reached_is_not_retried() {
    let s = Scratch::new("redirect");
    let iso = make_iso(&s.www(), "distro.iso", 1, 13);
    let server = FileServer::start(s.www());

    // Followed: a relative redirect, then one to another server.
    let target = server.url("distro.iso");
    let hops = Raw::start(move |path, out| match path {
        "/a/distro.iso" => redirect(out, "../b/distro.iso"),
        _ => redirect(out, &target),
    });
    let out = hv_iso(
        &s.lib(),
        &[
            "add",
            &hops.url("a/distro.iso"),
            "--sha256",
            &sha256sum(&iso),
            "--allow-unsigned",
        ],
    );
    assert_fields(
        &out.assert_ok().one_record(),
        json!({"sha256": sha256sum(&iso), "source": hops.url("a/distro.iso")}),
    );
    assert_eq!(server.requests("distro.iso").len(), 1);
    std::fs::remove_dir_all(s.lib()).unwrap();

    // Refused: to ftp://, for the image and for a checksum file; nothing
    // connects to the ftp server.
    let ftp = TcpListener::bind("127.0.0.1:0").unwrap();
    ftp.set_nonblocking(true).unwrap();
    let ftp_url = format!(
        "ftp://127.0.0.1:{}/distro.iso",
        ftp.local_addr().unwrap().port()
    );
    let to_ftp = {
        let ftp_url = ftp_url.clone();
        Raw::start(move |_, out| redirect(out, &ftp_url))
    };
    let image = to_ftp.url("distro.iso");
    let sums = to_ftp.url("SHA256SUMS");
    let local = iso.to_str().unwrap();
    for args in [
        vec!["add", image.as_str(), "--allow-unsigned"],
        vec![
            "add",
            local,
            "--checksums",
            sums.as_str(),
            "--allow-unsigned",
        ],
    ] {
        let out = hv_iso(&s.lib(), &args);
        out.assert_exit(1).assert_stderr_contains(&format!(
            "redirected to {ftp_url}, which is not HTTP or HTTPS"
        ));
        assert!(
            listing(&s.lib()).is_empty(),
            "left: {:?}",
            listing(&s.lib())
        );
    }
    assert!(
        matches!(ftp.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the ftp:// target was contacted"
    );

    // A redirect to a port nobody listens on: one clear error at once, not
    // five retries with growing waits.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = format!("http://127.0.0.1:{closed}/distro.iso");
    let to_nowhere = {
        let nowhere = nowhere.clone();
        Raw::start(move |_, out| redirect(out, &nowhere))
    };
    let begun = Instant::now();
    let out = hv_iso(
        &s.lib(),
        &[
            "add",
            &to_nowhere.url("distro.iso"),
            "--allow-unsigned",
            "--retries",
            "5",
        ],
    );
    out.assert_exit(1)
        .assert_stderr_contains(&format!("redirected to {nowhere}: no answer"));
    assert!(
        !out.stderr().contains("resuming at byte"),
        "not retried: {out:?}"
    );
    assert!(
        begun.elapsed() < Duration::from_secs(10),
        "{:?}",
        begun.elapsed()
    );
    assert!(
        listing(&s.lib()).is_empty(),
        "left: {:?}",
        listing(&s.lib())
    );
}

#[test]
fn a_download_is_stopped_at_max_size_and_its_partial_file_deleted() {
    let s = Scratch::new("maxsize");
    // No Content-Length and no end: bytes until the client hangs up.
    let endless = Raw::start(|_, out| {
        out.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
        let block = vec![0u8; 64 << 10];
        loop {
            out.write_all(&block)?;
        }
    });
    let out = hv_iso(
        &s.lib(),
        &[
            "add",
            &endless.url("endless.iso"),
            "--allow-unsigned",
            "--max-size",
            "2M",
        ],
    );
    out.assert_exit(1)
        .assert_stderr_contains("more than 2 MiB arrived, the most --max-size allows");
    assert!(
        listing(&s.lib()).is_empty(),
        "left: {:?}",
        listing(&s.lib())
    );

    // A server that states a larger size is refused before its body.
    let iso = make_iso(&s.www(), "big.iso", 3, 17);
    let server = FileServer::start(s.www());
    let out = hv_iso(
        &s.lib(),
        &[
            "add",
            &server.url("big.iso"),
            "--allow-unsigned",
            "--max-size",
            "1M",
        ],
    );
    out.assert_exit(1)
        .assert_stderr_contains("more than --max-size (1 MiB)");
    assert!(
        listing(&s.lib()).is_empty(),
        "left: {:?}",
        listing(&s.lib())
    );
    // A local file is held to the same limit.
    let out = hv_iso(
        &s.lib(),
        &[
            "add",
            iso.to_str().unwrap(),
            "--allow-unsigned",
            "--max-size",
            "1M",
        ],
    );
    out.assert_exit(1).assert_stderr_contains("--max-size");
    assert!(
        listing(&s.lib()).is_empty(),
        "left: {:?}",
        listing(&s.lib())
    );
    // The default (64 GiB) lets it in.
    let out = hv_iso(
        &s.lib(),
        &["add", &server.url("big.iso"), "--allow-unsigned"],
    );
    assert_fields(
        &out.assert_ok().one_record(),
        json!({"sha256": sha256sum(&iso)}),
    );
}

#[test]
fn a_checksum_file_over_16_mib_is_too_large_from_a_url_a_path_or_dev_zero() {
    let s = Scratch::new("bigsums");
    let iso = make_iso(&s.www(), "distro.iso", 1, 19);
    let mut sums = format!("{}  distro.iso\n", sha256sum(&iso)).into_bytes();
    sums.resize(17 << 20, b'\n');
    std::fs::write(s.www().join("SHA256SUMS"), &sums).unwrap();
    let server = FileServer::start(s.www());
    let path = std::fs::canonicalize(s.www().join("SHA256SUMS")).unwrap();
    for given in [
        server.url("SHA256SUMS"),
        path.display().to_string(),
        "/dev/zero".to_owned(),
    ] {
        let out = hv_iso(
            &s.lib(),
            &[
                "add",
                iso.to_str().unwrap(),
                "--checksums",
                &given,
                "--allow-unsigned",
            ],
        );
        out.assert_exit(1)
            .assert_stderr_contains(&format!("{given}: too large (over 16 MiB)"));
        assert!(!out.stderr().contains("Failed writing"), "{out:?}");
    }
}
