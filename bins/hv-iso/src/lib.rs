//! hv-iso: install media are the root of trust of every VM built from
//! them, so an image enters the library only when its distributor's signed
//! checksum proves it, and `verify` later proves it has not rotted. The
//! proof is kept beside each image (a JSON sidecar) for audits and for
//! hv-preflight, hv-health and hv-metrics to read.

mod add;
mod checksums;
mod digest;
mod fetch;
mod openpgp;
use hv_common::size;

use clap::{Parser, Subcommand};
use hv_common::cli::{OutputArgs, Status};
use hv_common::iso_library::{self as library, Entry, Library, Sidecar};
use hv_common::manual::Manual;
use hv_common::output::{self, col, Column, Printer, Show};
use hv_common::progress::{Counter, Progress};
use hv_common::{time, Code, Error, Exit, Result};
use serde::Serialize;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Parser)]
#[command(
    name = "hv-iso",
    version,
    about = "An ISO library whose images are proven by their distributor's signed checksums",
    long_about = "Keep install media in a library directory and admit an image only when it \
        matches its distributor's checksum file and that file's OpenPGP signature verifies \
        against a keyring you gave. Downloads resume where they stopped and are hashed as they \
        arrive; a JSON sidecar beside each image records how it was proven. verify re-hashes \
        the library to catch bit rot."
)]
pub struct Cli {
    /// The library directory
    #[arg(
        long,
        global = true,
        env = "HV_ISO_LIBRARY",
        value_name = "DIR",
        default_value = "/var/lib/hv/isos"
    )]
    pub library: PathBuf,

    #[command(subcommand)]
    pub command: Command,
    /// `--format` and `--json` before the subcommand.
    #[command(flatten)]
    pub global_output: hv_common::cli::OutputArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch or copy an image, prove it, and admit it to the library
    Add(AddArgs),
    /// List the library's images and how each was proven
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Re-hash images and compare with their sidecars (bit rot, tampering)
    Verify(VerifyArgs),
    /// Remove images from the library
    Rm(RmArgs),
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The image: an http(s):// URL or a local path
    #[arg(value_name = "URL|PATH")]
    pub source: String,
    /// The distributor's checksum file (SHA256SUMS, CHECKSUM, ...): a path or URL.
    /// With --keyring and a URL image, SHA256SUMS or SHA512SUMS next to the image is tried
    #[arg(long, value_name = "FILE|URL")]
    pub checksums: Option<String>,
    /// The checksum file's detached OpenPGP signature (binary or ASCII-armoured); by default
    /// FILE.sign, .gpg, .asc or .sig next to it. Not needed for a clearsigned checksum file
    #[arg(long, value_name = "FILE|URL")]
    pub signature: Option<String>,
    /// The public key(s) you trust to sign the checksum file: what gpg --export writes
    /// (binary or armoured), or a distribution's keyring such as
    /// /usr/share/keyrings/debian-role-keys.gpg
    #[arg(long, value_name = "FILE")]
    pub keyring: Option<PathBuf>,
    /// A SHA-256 you already have for the image; checked as well as the checksum file
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// The library name [default: the image's file name]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Admit the image without a verified signature (recorded in its sidecar)
    #[arg(long)]
    pub allow_unsigned: bool,
    /// Accept an MD5 or SHA-1 checksum, which a forger can match
    #[arg(long)]
    pub allow_weak: bool,
    /// Replace an image of the same name
    #[arg(long)]
    pub force: bool,
    /// How often a dropped download is resumed before giving up
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub retries: u32,
    /// The largest image to fetch or copy (512M, 8G, 1.5T): a download that grows past it,
    /// or a server that says it is larger, is stopped and its partial file deleted
    #[arg(long, value_name = "SIZE", default_value = "64G", value_parser = size::parse)]
    pub max_size: u64,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Only these images [default: all]
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    #[command(flatten)]
    pub fields: hv_common::cli::FieldsArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Only these images [default: all]
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// The images to remove
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub const MANUAL: Manual = Manual {
    exit_status: &[
        ("0", "Every image was admitted, listed, verified or removed."),
        ("1", "An image failed: its hash does not match, its signature does not verify, its key is unknown, expired or revoked, a download failed, or a name is not in the library. verify prints a record with \"ok\": false for each such image."),
        ("2", "Usage error: bad flags, a keyring that is not one, or an image that would be admitted without a signature and without --allow-unsigned."),
    ],
    environment: &[
        ("HV_ISO_LIBRARY", "The library directory when --library is not given (default /var/lib/hv/isos)."),
        ("https_proxy, http_proxy, no_proxy", "Proxies for downloads, as for curl."),
    ],
    examples: &[
        (
            "Debian: the image, its SHA256SUMS and the signature SHA256SUMS.sign, checked with the Debian CD signing key from the debian-keyring package (or the key whose fingerprint https://www.debian.org/CD/verify lists):",
            "hv-iso add https://cdimage.debian.org/debian-cd/current/amd64/iso-cd/debian-13.2.0-amd64-netinst.iso --checksums https://cdimage.debian.org/debian-cd/current/amd64/iso-cd/SHA256SUMS --signature https://cdimage.debian.org/debian-cd/current/amd64/iso-cd/SHA256SUMS.sign --keyring /usr/share/keyrings/debian-role-keys.gpg",
        ),
        (
            "The same, letting hv-iso find SHA256SUMS and SHA256SUMS.sign next to the image:",
            "hv-iso add https://cdimage.debian.org/debian-cd/current/amd64/iso-cd/debian-13.2.0-amd64-netinst.iso --keyring /usr/share/keyrings/debian-role-keys.gpg",
        ),
        (
            "Ubuntu: SHA256SUMS and SHA256SUMS.gpg next to the image, checked with the keyring of the ubuntu-keyring package:",
            "hv-iso add https://releases.ubuntu.com/24.04/ubuntu-24.04.3-live-server-amd64.iso --keyring /usr/share/keyrings/ubuntu-archive-keyring.gpg",
        ),
        (
            "Fedora: its CHECKSUM file is clearsigned, so no --signature; the key is in the distribution-gpg-keys package (or at https://fedoraproject.org/fedora.gpg):",
            "hv-iso add https://download.fedoraproject.org/pub/fedora/linux/releases/43/Server/x86_64/iso/Fedora-Server-netinst-x86_64-43-1.6.iso --checksums https://download.fedoraproject.org/pub/fedora/linux/releases/43/Server/x86_64/iso/Fedora-Server-43-1.6-x86_64-CHECKSUM --keyring /usr/share/distribution-gpg-keys/fedora/RPM-GPG-KEY-fedora-43-primary",
        ),
        ("Every week, from a systemd timer: exit status 1 when an image rotted:", "hv-iso verify"),
        ("Which images were admitted without a signature:", "hv-iso ls --format jsonl | jq -r 'select(.unsigned) | .name'"),
        ("Attach a library image to a VM:", "virsh change-media web1 sda /var/lib/hv/isos/debian-13.2.0-amd64-netinst.iso --insert"),
    ],
    notes: &[
        "An image is admitted when its hash matches the entry for its file name in the checksum file, and the checksum file's signature verifies with a key in --keyring that is neither expired nor revoked. The signature is checked in-process; gpg's own keyrings and trust database are not consulted, only the keys you pass. A keyring exported with gpg --export (binary) or --export --armor works, and so does a distribution's keyring in GnuPG's keyring format (/usr/share/keyrings/*.gpg), read as gpgv reads it: trust packets are skipped, and a certificate that cannot be read leaves the others usable. A GnuPG keybox (pubring.kbx) does not work: export from it.",
        "Checksum files may be in GNU form (HASH  name, HASH *name), BSD-tagged form (SHA256 (name) = HASH), or Fedora's clearsigned CHECKSUM, with CRLF line ends and ./ prefixes; SHA-256 and SHA-512 are accepted, MD5 and SHA-1 only with --allow-weak.",
        "A download goes to a dot-file in the library and is hashed as it arrives; a dropped connection is resumed (--retries), and an interrupted run leaves the partial file for the next run of the same command to resume (when the server names an ETag or Last-Modified; otherwise it is deleted). Redirects are followed only to HTTP and HTTPS, never from HTTPS to HTTP; a server that never answers (20 s to connect, 60 s without a byte) is given up at once, not retried. A download is stopped at --max-size (default 64 GiB), whether or not the server sent a Content-Length, and its partial file deleted. An image whose hash does not match is deleted. Each image NAME has a sidecar NAME.json with sha256, size_bytes, source, checksums, checksum, signature, keyring, signer (the key's fingerprint), verified_by (signature, checksums, sha256 or none), unsigned and verified_at; verify adds checked_at and check_ok. docs/iso.md describes the library and a distributor's workflow step by step.",
    ],
};

pub fn run(cli: Cli) -> Result<Exit> {
    let lib = Library::new(cli.library);
    match cli.command {
        Command::Add(a) => add(&lib, a),
        Command::Ls(a) => ls(&lib, a),
        Command::Verify(a) => verify(&lib, a),
        Command::Rm(a) => rm(&lib, a),
    }
}

const ENTRY_COLUMNS: &[Column] = &[
    col("NAME", "name", Show::Plain),
    col("SIZE", "size_bytes", Show::Bytes),
    col("VERIFIED BY", "verified_by", Show::Plain),
    col("SIGNER", "signer", Show::Plain),
    col("VERIFIED AT", "verified_at", Show::Plain),
    col("CHECK OK", "check_ok", Show::Plain),
];

/// An image in the library, as hv-iso add and ls print it (docs/iso.md):
/// its sidecar's facts without the file-format version, and where it is.
#[derive(Debug, Serialize)]
struct EntryRecord<'a> {
    name: &'a str,
    /// hv-iso add only: `add`, so the audit trail logs it.
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'static str>,
    path: String,
    size_bytes: u64,
    sha256: &'a str,
    /// The URL or path it was added from.
    source: &'a str,
    /// `signature`, `checksums` (unsigned), `sha256` (given by hand) or `none`.
    verified_by: &'a str,
    unsigned: bool,
    checksums: Option<&'a str>,
    /// The checksum file's entry the image matched: algorithm and digest.
    checksum: Option<&'a library::Checksum>,
    signature: Option<&'a str>,
    keyring: Option<&'a str>,
    /// The signing key's primary fingerprint.
    signer: Option<&'a str>,
    verified_at: &'a str,
    /// The last `hv-iso verify`: when, and whether the image still matched.
    checked_at: Option<&'a str>,
    check_ok: Option<bool>,
    /// hv-iso add only: it was admitted, and how long that took.
    #[serde(skip_serializing_if = "Option::is_none")]
    ok: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    elapsed_ms: Option<u64>,
}

fn entry_record<'a>(lib: &Library, s: &'a Sidecar) -> EntryRecord<'a> {
    EntryRecord {
        name: &s.name,
        path: lib.image(&s.name).display().to_string(),
        size_bytes: s.size_bytes,
        sha256: &s.sha256,
        source: &s.source,
        verified_by: &s.verified_by,
        unsigned: s.unsigned,
        checksums: s.checksums.as_deref(),
        checksum: s.checksum.as_ref(),
        signature: s.signature.as_deref(),
        keyring: s.keyring.as_deref(),
        signer: s.signer.as_deref(),
        verified_at: &s.verified_at,
        checked_at: s.checked_at.as_deref(),
        check_ok: s.check_ok,
        action: None,
        ok: None,
        elapsed_ms: None,
    }
}

fn add(lib: &Library, a: AddArgs) -> Result<Exit> {
    let begun = Instant::now();
    let mut printer = Printer::stdout(a.output.format(), ENTRY_COLUMNS);
    let sidecar = match add::add(lib, &a) {
        Ok(sidecar) => sidecar,
        // A refusal is a result too, for scripts and the audit trail,
        // when it is about a name (not a usage error or Ctrl-C).
        Err(e) if e.code != Code::Usage && e.code != Code::Interrupted => {
            let name = a
                .name
                .clone()
                .or_else(|| fetch::Source::parse(&a.source).file_name());
            if let Some(name) = name {
                printer.emit(output::to_record(&ImageOutcome {
                    action: Some("add"),
                    ok: false,
                    error: Some(&e),
                    ..ImageOutcome::new(&name, lib.image(&name).display().to_string())
                }))?;
                printer.finish()?;
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let record = EntryRecord {
        action: Some("add"),
        ok: Some(true),
        elapsed_ms: Some(begun.elapsed().as_millis() as u64),
        ..entry_record(lib, &sidecar)
    };
    printer.emit(output::to_record(&record))?;
    printer.finish()?;
    Ok(Exit::Ok)
}

/// The named entries, or all; a name not in the library is an error
/// record of its own, so the others are still worked on.
fn select(
    lib: &Library,
    names: &[String],
) -> Result<Vec<std::result::Result<Entry, (String, Error)>>> {
    let names = if names.is_empty() {
        lib.names()?
    } else {
        names.to_vec()
    };
    Ok(names
        .into_iter()
        .map(|name| match lib.get(&name) {
            Ok(Some(entry)) => Ok(entry),
            Ok(None) => Err((
                name.clone(),
                Error::new(
                    Code::NotFound,
                    format!(
                        "{name} is not in the library {} (hv-iso ls lists what is)",
                        lib.root.display()
                    ),
                ),
            )),
            Err(e) => Err((name, e)),
        })
        .collect())
}

/// What hv-iso verify and rm say of one image (docs/iso.md).
#[derive(Debug, Serialize)]
struct ImageOutcome<'a> {
    name: &'a str,
    path: String,
    /// hv-iso rm: `rm`.
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'static str>,
    ok: bool,
    /// hv-iso verify: the image's size, digest and how long the check took.
    #[serde(skip_serializing_if = "Option::is_none")]
    size_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    elapsed_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a Error>,
}

impl<'a> ImageOutcome<'a> {
    fn new(name: &'a str, path: String) -> Self {
        ImageOutcome {
            name,
            path,
            action: None,
            ok: true,
            size_bytes: None,
            sha256: None,
            elapsed_ms: None,
            error: None,
        }
    }
}

fn failure(lib: &Library, name: &str, err: &Error) -> Map<String, Value> {
    output::to_record(&ImageOutcome {
        ok: false,
        error: Some(err),
        ..ImageOutcome::new(name, lib.image(name).display().to_string())
    })
}

/// The fields of a listed image's record, for `--fields`.
const LS_FIELDS: &[&str] = &[
    "name",
    "path",
    "size_bytes",
    "sha256",
    "source",
    "verified_by",
    "unsigned",
    "checksums",
    "checksum",
    "signature",
    "keyring",
    "signer",
    "verified_at",
    "checked_at",
    "check_ok",
];

fn ls(lib: &Library, a: LsArgs) -> Result<Exit> {
    let mut status = Status::default();
    let fields = a.fields.checked(LS_FIELDS)?;
    let mut printer = Printer::stdout(a.output.format(), ENTRY_COLUMNS).only(&fields);
    for item in select(lib, &a.names)? {
        match item {
            // An image missing beside its sidecar was never fully admitted
            // (or was deleted by hand): not listed; verify reports it.
            Ok(entry) if !library::exists(&entry.path) => {}
            Ok(entry) => printer.emit(output::to_record(&entry_record(lib, &entry.sidecar)))?,
            Err((name, e)) => {
                status.failed(&e);
                hv_common::cli::warn(format!("{name}: {e}"));
            }
        }
    }
    printer.finish()?;
    Ok(status.exit())
}

const VERIFY_COLUMNS: &[Column] = &[
    col("NAME", "name", Show::Plain),
    col("OK", "ok", Show::Plain),
    col("SIZE", "size_bytes", Show::Bytes),
    col("MS", "elapsed_ms", Show::Plain),
    col("ERROR", "error", Show::Plain),
];

fn verify(lib: &Library, a: VerifyArgs) -> Result<Exit> {
    each_entry(lib, &a.names, &a.output, VERIFY_COLUMNS, |entry| {
        let begun = Instant::now();
        let checked = recheck(entry);
        record_check(lib, &mut entry.sidecar, checked.is_ok());
        let record = output::to_record(&ImageOutcome {
            ok: checked.is_ok(),
            size_bytes: Some(entry.sidecar.size_bytes),
            sha256: Some(&entry.sidecar.sha256),
            elapsed_ms: Some(begun.elapsed().as_millis() as u64),
            error: checked.as_ref().err(),
            ..ImageOutcome::new(&entry.sidecar.name, entry.path.display().to_string())
        });
        (record, checked.err())
    })
}

/// Works on each named entry (or all) and prints one record per name: what
/// `act` made of it, or a failure record for a name not in the library.
/// `act` returns its record and, when the item failed, the error.
fn each_entry(
    lib: &Library,
    names: &[String],
    output: &OutputArgs,
    columns: &'static [Column],
    act: impl Fn(&mut Entry) -> (Map<String, Value>, Option<Error>),
) -> Result<Exit> {
    let mut status = Status::default();
    let mut printer = Printer::stdout(output.format(), columns);
    for item in select(lib, names)? {
        let (record, failed) = match item {
            Ok(mut entry) => act(&mut entry),
            Err((name, e)) => (failure(lib, &name, &e), Some(e)),
        };
        if let Some(e) = failed {
            status.failed(&e);
        }
        printer.emit(record)?;
    }
    printer.finish()?;
    Ok(status.exit())
}

/// Re-hashes the image and compares size and SHA-256 with the sidecar.
fn recheck(entry: &Entry) -> Result<()> {
    let s = &entry.sidecar;
    let file = std::fs::File::open(&entry.path).map_err(|e| {
        let fix = format!("hv-iso rm {:?} and add it again", s.name);
        Error::new(
            Code::Corrupt,
            format!("{}: {e}; {fix}", entry.path.display()),
        )
    })?;
    let counter = Arc::new(Counter::default());
    counter
        .total
        .store(s.size_bytes, std::sync::atomic::Ordering::Relaxed);
    let progress = Progress::start("hashed", counter.clone());
    let mut hasher = digest::Hasher::new(None);
    let pumped = digest::pump(file, &mut hasher, |_| Ok(()), &counter);
    progress.stop();
    pumped.map_err(|e| Error::io(entry.path.display(), e))?;
    let got = hasher.finish();
    let fix = format!(
        "hv-iso add it again with --force (the sidecar records where it came from: {})",
        s.source
    );
    if got.bytes != s.size_bytes {
        return Err(Error::new(
            Code::Corrupt,
            format!(
                "{} is {} bytes, it was admitted with {}; {fix}",
                s.name, got.bytes, s.size_bytes
            ),
        ));
    }
    if got.sha256 != s.sha256 {
        return Err(Error::new(
            Code::Corrupt,
            format!(
                "{} has sha256 {}, it was admitted with {}; {fix}",
                s.name, got.sha256, s.sha256
            ),
        ));
    }
    Ok(())
}

/// Keeps the outcome in the sidecar for hv-metrics and hv-health; a user
/// who may read but not write the library still gets the answer.
fn record_check(lib: &Library, s: &mut Sidecar, ok: bool) {
    // Hashing took minutes: an `add --force` may have replaced the entry
    // meanwhile. Record only on the sidecar that was checked.
    match lib.get(&s.name) {
        Ok(Some(now)) if now.sidecar.sha256 == s.sha256 => *s = now.sidecar,
        _ => return,
    }
    s.checked_at = Some(time::rfc3339(time::now()));
    s.check_ok = Some(ok);
    if let Err(e) = lib.write_sidecar(s) {
        hv_common::cli::warn(format!("could not record the check in the sidecar: {e}"));
    }
}

const RM_COLUMNS: &[Column] = &[
    col("NAME", "name", Show::Plain),
    col("OK", "ok", Show::Plain),
    col("ERROR", "error", Show::Plain),
];

fn rm(lib: &Library, a: RmArgs) -> Result<Exit> {
    each_entry(lib, &a.names, &a.output, RM_COLUMNS, |entry| {
        match remove(lib, entry) {
            Ok(record) => (record, None),
            Err(e) => (failure(lib, &entry.sidecar.name, &e), Some(e)),
        }
    })
}

/// The image goes first: a run killed in between leaves a sidecar alone,
/// which ls does not list and rm removes.
fn remove(lib: &Library, entry: &Entry) -> Result<Map<String, Value>> {
    let name = &entry.sidecar.name;
    // Not while an add replaces it: rm would delete the new image.
    let _lock = add::lock(lib, name)?;
    match std::fs::remove_file(&entry.path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::io(entry.path.display(), e))
        }
        _ => {}
    }
    let sidecar = lib.sidecar_path(name);
    std::fs::remove_file(&sidecar).map_err(|e| Error::io(sidecar.display(), e))?;
    Ok(output::to_record(&ImageOutcome {
        action: Some("rm"),
        ..ImageOutcome::new(name, entry.path.display().to_string())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sidecar() -> Sidecar {
        Sidecar {
            format: 1,
            name: "d.iso".into(),
            size_bytes: 1,
            sha256: "00".into(),
            source: "/tmp/d.iso".into(),
            verified_by: "none".into(),
            unsigned: true,
            checksums: None,
            checksum: None,
            signature: None,
            keyring: None,
            signer: None,
            verified_at: "2026-12-06T00:00:00Z".into(),
            checked_at: None,
            check_ok: None,
        }
    }

    /// docs/iso.md names the sidecar's fields, and a listed entry is the
    /// sidecar without its format, where its name says where it lives.
    #[test]
    fn sidecars_and_entries_are_the_documented_ones() {
        let s = sidecar();
        let keys = |m: Map<String, Value>| m.keys().cloned().collect::<Vec<_>>();
        let documented = hv_testbench::documented_fields("iso.md", "The sidecar (format 1)");
        assert_eq!(keys(output::to_record(&s)), documented);
        let lib = Library {
            root: PathBuf::from("/srv/iso"),
        };
        let mut expected: Vec<String> = vec!["name".into(), "path".into()];
        expected.extend(
            documented
                .into_iter()
                .filter(|f| f != "format" && f != "name"),
        );
        assert_eq!(keys(output::to_record(&entry_record(&lib, &s))), expected);
    }
}

#[cfg(test)]
mod fields_tests {
    use super::*;

    #[test]
    fn fields_knows_every_field_of_a_listed_image() {
        let record = output::to_record(&EntryRecord {
            name: "debian.iso",
            path: "/l/debian.iso".into(),
            size_bytes: 1,
            sha256: "0",
            source: "https://x/debian.iso",
            verified_by: "signature",
            unsigned: false,
            checksums: None,
            checksum: None,
            signature: None,
            keyring: None,
            signer: None,
            verified_at: "2026-12-07T00:00:00Z",
            checked_at: None,
            check_ok: None,
            action: None,
            ok: None,
            elapsed_ms: None,
        });
        let keys: Vec<&str> = record.keys().map(String::as_str).collect();
        assert_eq!(keys, LS_FIELDS);
    }
}
