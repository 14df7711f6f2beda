//! Admission: first decide what the image must hash to (a signed checksum
//! file, an unsigned one, a hash the user brought), then move the bytes
//! once, hashing as they arrive, and let the image into the library only
//! if the hashes agree. The order matters: a bad signature costs a few
//! kilobytes, not a 4 GiB download.

use crate::checksums;
use crate::digest::{self, Digests, Hasher};
use crate::fetch::{self, Download, FetchError, Resume, Source};
use crate::openpgp::{self, Keyring, Refusal};
use crate::AddArgs;
use hv_common::iso_library::{self as library, Checksum, Library, Sidecar};
use hv_common::progress::{Counter, Progress};
use hv_common::{time, Code, Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::sync::Arc;

/// What the image must hash to, and why that is believed.
struct Trust {
    expected: Option<checksums::Entry>,
    given_sha256: Option<String>,
    checksums: Option<String>,
    signature: Option<String>,
    keyring: Option<String>,
    signer: Option<String>,
}

impl Trust {
    fn verified_by(&self) -> &'static str {
        match (&self.signer, &self.expected, &self.given_sha256) {
            (Some(_), _, _) => "signature",
            (None, Some(_), _) => "checksums",
            (None, None, Some(_)) => "sha256",
            (None, None, None) => "none",
        }
    }
}

pub fn add(lib: &Library, a: &AddArgs) -> Result<Sidecar> {
    let source = absolute(Source::parse(&a.source))?;
    let file_name = source.file_name().ok_or_else(|| {
        Error::usage(format!(
            "{source} names no file: give the image's URL or path"
        ))
    })?;
    let name = a.name.clone().unwrap_or_else(|| file_name.clone());
    library::check_name(&name)?;
    lib.create()?;
    // Held until the image is in place: two runs for one name never share
    // a partial file, and the existence check below cannot go stale.
    let _lock = lock(lib, &name)?;
    refuse_existing(lib, &name, a.force)?;
    let trust = resolve_trust(a, &source, &file_name)?;
    let digests = transfer(lib, &name, &source, &trust, a).inspect_err(|_| {
        if !resumable(lib, &name, &source) {
            discard_partial(lib, &name);
        }
    })?;
    if let Err(mismatch) = compare(&trust, &digests) {
        discard_partial(lib, &name);
        return Err(Error::new(
            Code::Corrupt,
            format!("{name} is not the published image: {mismatch}; the download was deleted"),
        ));
    }
    admit(lib, &name, &source, &trust, &digests)
}

/// Records name where a file came from for good: an absolute path.
fn absolute(source: Source) -> Result<Source> {
    match source {
        Source::Path(p) => std::fs::canonicalize(&p)
            .map(Source::Path)
            .map_err(|e| Error::new(Code::NotFound, format!("{}: {e}", p.display()))),
        url => Ok(url),
    }
}

pub(crate) fn lock(lib: &Library, name: &str) -> Result<File> {
    let path = lib.root.join(format!(".{name}.lock"));
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(path.display(), e))?;
    if file.try_lock().is_err() {
        return Err(Error::new(
            Code::Locked,
            format!(
                "another hv-iso add is working on {name} in {}; wait for it to finish",
                lib.root.display()
            ),
        ));
    }
    Ok(file)
}

fn refuse_existing(lib: &Library, name: &str, force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    if library::exists(&lib.sidecar_path(name)) {
        return Err(Error::usage(format!(
            "{name} is already in the library: hv-iso verify {name:?} checks it; --force replaces it"
        )));
    }
    let image = lib.image(name);
    if library::exists(&image) {
        return Err(Error::usage(format!(
            "{} exists but was not admitted by hv-iso: move it away, or --force to replace it",
            image.display()
        )));
    }
    Ok(())
}

fn resolve_trust(a: &AddArgs, source: &Source, file_name: &str) -> Result<Trust> {
    let given_sha256 = a.sha256.as_deref().map(parse_sha256).transpose()?;
    if a.signature.is_some() && a.keyring.is_none() {
        return Err(Error::usage(
            "--signature needs --keyring FILE: the distributor's public key to check it with",
        ));
    }
    let keyring = match &a.keyring {
        Some(path) => Some(Keyring::load(path)?),
        None => None,
    };
    let mut trust = Trust {
        expected: None,
        given_sha256,
        checksums: None,
        signature: None,
        keyring: a.keyring.as_ref().map(|k| k.display().to_string()),
        signer: None,
    };
    let found = checksum_file(a, source, keyring.is_some())?;
    if let Some((origin, bytes)) = found {
        let text = match &keyring {
            Some(k) => signed_text(k, a, &origin, &bytes, &mut trust)?,
            None => bytes,
        };
        let entries = checksums::parse(&String::from_utf8_lossy(&text));
        let entry = checksums::find(&entries, file_name, &origin.to_string())?;
        if entry.algorithm.is_weak() && !a.allow_weak {
            return Err(Error::new(
                Code::Untrusted,
                format!(
                    "{origin} gives only an {} for {file_name}, which a forger can match; \
                     find the distributor's SHA-256 or SHA-512 file, or --allow-weak",
                    entry.algorithm
                ),
            ));
        }
        trust.expected = Some(entry.clone());
        trust.checksums = Some(origin.to_string());
    } else if keyring.is_some() {
        return Err(Error::usage(
            "--keyring needs --checksums FILE|URL: the distributor's checksum file to check the signature of",
        ));
    }
    if trust.signer.is_none() && !a.allow_unsigned {
        return Err(Error::usage(format!(
            "{file_name} would be admitted without a signature: give --checksums, --signature and \
             --keyring (the distributor's signed checksum file and key), or --allow-unsigned"
        )));
    }
    Ok(trust)
}

fn parse_sha256(hex: &str) -> Result<String> {
    let hex = hex.trim().to_ascii_lowercase();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::usage(format!(
            "--sha256 {hex:?} is not a SHA-256 (64 hex digits)"
        )));
    }
    Ok(hex)
}

/// The checksum file given, or (with a keyring and a URL, when none was
/// given) SHA256SUMS or SHA512SUMS next to the image.
fn checksum_file(
    a: &AddArgs,
    source: &Source,
    discover: bool,
) -> Result<Option<(Source, Vec<u8>)>> {
    if let Some(given) = &a.checksums {
        let origin = absolute(Source::parse(given))?;
        let bytes = fetch::fetch_small(&origin).map_err(|e| fetch_error("checksum file", e))?;
        return Ok(Some((origin, bytes)));
    }
    if !discover || !matches!(source, Source::Url(_)) {
        return Ok(None);
    }
    for name in ["SHA256SUMS", "SHA512SUMS"] {
        let origin = source.sibling(name);
        match fetch::fetch_small(&origin) {
            Ok(bytes) => return Ok(Some((origin, bytes))),
            Err(FetchError::Missing(_)) => continue,
            Err(e) => return Err(fetch_error("checksum file", e)),
        }
    }
    Err(Error::usage(format!(
        "found no SHA256SUMS or SHA512SUMS next to {source}: give --checksums FILE|URL"
    )))
}

/// Verifies the checksum file's signature (inline, given, or found next to
/// it as .sign/.gpg/.asc/.sig) and returns the text it vouches for.
fn signed_text(
    keyring: &Keyring,
    a: &AddArgs,
    origin: &Source,
    bytes: &[u8],
    trust: &mut Trust,
) -> Result<Vec<u8>> {
    let untrusted = |what: &str, why: String| {
        Error::new(Code::Untrusted, format!("{what}: the signature {why}"))
    };
    if openpgp::is_clearsigned(bytes) {
        if a.signature.is_some() {
            return Err(Error::usage(format!(
                "{origin} is clearsigned (it carries its own signature): drop --signature"
            )));
        }
        let v = keyring.verify_clearsigned(bytes).map_err(|r| match r {
            Refusal::Mismatch { key } => Error::new(
                Code::Untrusted,
                format!(
                    "{origin}: the signature by key {key} does not match the signed file: its \
                     text was altered after signing; fetch it again from the distributor"
                ),
            ),
            Refusal::Other(why) => untrusted(&origin.to_string(), why),
        })?;
        trust.signer = Some(v.signer);
        return Ok(v.signed);
    }
    let (sig_origin, sig) = signature_file(a, origin)?;
    let v = keyring.verify_detached(&sig, bytes).map_err(|r| match r {
        Refusal::Mismatch { key } => Error::new(
            Code::Untrusted,
            format!(
                "{origin} does not match its signature {sig_origin} (by key {key}): the signature \
                 is for another file, or the checksum file was altered; fetch both again from the \
                 same directory of the distributor's site"
            ),
        ),
        Refusal::Other(why) => untrusted(&format!("{origin} with {sig_origin}"), why),
    })?;
    trust.signer = Some(v.signer);
    trust.signature = Some(sig_origin.to_string());
    Ok(v.signed)
}

fn signature_file(a: &AddArgs, checksums: &Source) -> Result<(Source, Vec<u8>)> {
    if let Some(given) = &a.signature {
        let origin = absolute(Source::parse(given))?;
        let bytes = fetch::fetch_small(&origin).map_err(|e| fetch_error("signature", e))?;
        return Ok((origin, bytes));
    }
    let base = checksums.file_name().unwrap_or_default();
    let mut tried = Vec::new();
    for ext in ["sign", "gpg", "asc", "sig"] {
        let origin = checksums.sibling(&format!("{base}.{ext}"));
        match fetch::fetch_small(&origin) {
            Ok(bytes) => return Ok((origin, bytes)),
            Err(FetchError::Missing(_)) => tried.push(format!("{base}.{ext}")),
            Err(e) => return Err(fetch_error("signature", e)),
        }
    }
    Err(Error::new(
        Code::Untrusted,
        format!(
            "{checksums} is not signed, and no signature was found next to it (tried {}): give --signature FILE|URL",
            tried.join(", ")
        ),
    ))
}

fn fetch_error(what: &str, e: FetchError) -> Error {
    Error::new(Code::Fetch, format!("fetching the {what}: {e}"))
}

/// Moves the image into the partial file, hashing it; a URL resumes a
/// partial file an earlier run left for the same URL.
fn transfer(
    lib: &Library,
    name: &str,
    source: &Source,
    trust: &Trust,
    a: &AddArgs,
) -> Result<Digests> {
    let partial = lib.partial(name);
    let io = |e| Error::io(partial.display(), e);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&partial)
        .map_err(io)?;
    let mut hasher = Hasher::new(trust.expected.as_ref().map(|e| e.algorithm));
    let counter = Arc::new(Counter::default());
    let progress = Progress::start("fetched", counter.clone());
    let moved = match source {
        Source::Path(path) => {
            file.set_len(0).map_err(io)?;
            fetch::copy_local(path, &mut file, &mut hasher, &counter, a.max_size)
                .map_err(|e| Error::io(format!("copying {}", path.display()), e))
        }
        Source::Url(url) => download(lib, name, url, &mut file, &mut hasher, &counter, a),
    };
    progress.stop();
    moved?;
    file.sync_all().map_err(io)?;
    Ok(hasher.finish())
}

fn download(
    lib: &Library,
    name: &str,
    url: &str,
    file: &mut File,
    hasher: &mut Hasher,
    counter: &Counter,
    a: &AddArgs,
) -> Result<()> {
    let state_path = lib.resume_state(name);
    let partial = lib.partial(name);
    let io = |e| Error::io(partial.display(), e);
    let earlier: Option<Resume> = fs::read(&state_path)
        .ok()
        .and_then(|t| serde_json::from_slice(&t).ok())
        .filter(|r: &Resume| r.url == url);
    // Without a validator there is no telling whether the server still has
    // the same file: start over rather than splice.
    let resume = match earlier.filter(|r| r.validator.is_some()) {
        Some(r) if file.metadata().map_err(io)?.len() > 0 => {
            hv_common::cli::warn(format!("resuming {name} from an earlier run"));
            digest::pump(&mut *file, hasher, |_| Ok(()), counter).map_err(io)?;
            r
        }
        _ => {
            file.set_len(0).map_err(io)?;
            Resume {
                url: url.to_owned(),
                validator: None,
            }
        }
    };
    file.seek(SeekFrom::End(0)).map_err(io)?;
    save_resume(&state_path, &resume).map_err(|e| Error::io(state_path.display(), e))?;
    let mut save = |r: &Resume| save_resume(&state_path, r);
    Download {
        url,
        file,
        hasher,
        resume,
        retries: a.retries,
        max_bytes: a.max_size,
        progress: counter,
        on_validator: &mut save,
    }
    .run()
    .map_err(|e| {
        let source = Source::Url(url.to_owned());
        let kept = match file.metadata().map_or(0, |m| m.len()) {
            _ if matches!(e, FetchError::TooLarge(_)) => {
                discard_partial(lib, name);
                String::new()
            }
            0 => String::new(),
            _ if !resumable(lib, name, &source) => {
                discard_partial(lib, name);
                "; the partial file was deleted: the server names no ETag or Last-Modified, \
                 so it cannot be resumed safely"
                    .to_owned()
            }
            n => format!("; the {n} bytes fetched are kept: run the same command again to resume"),
        };
        Error::new(Code::Fetch, format!("{e}{kept}"))
    })
}

/// Whether the partial file can be resumed by the next run: it came from
/// a URL, has bytes, and the server named a validator for them (without
/// one, the next run starts over anyway, so the bytes only take space).
fn resumable(lib: &Library, name: &str, source: &Source) -> bool {
    let partial_len = fs::metadata(lib.partial(name)).map_or(0, |m| m.len());
    let validated = fs::read(lib.resume_state(name))
        .ok()
        .and_then(|t| serde_json::from_slice::<Resume>(&t).ok())
        .is_some_and(|r| r.validator.is_some());
    matches!(source, Source::Url(_)) && partial_len > 0 && validated
}

/// Through a temporary file and a rename: a torn state file would make the
/// next run throw the partial download away.
fn save_resume(path: &std::path::Path, r: &Resume) -> std::io::Result<()> {
    let state = serde_json::to_vec(r).expect("resume state serializes");
    hv_common::fsutil::write_atomic(path, &state, 0o644)
}

fn compare(trust: &Trust, got: &Digests) -> std::result::Result<(), String> {
    if let Some(e) = &trust.expected {
        let have = got.get(e.algorithm).unwrap_or_default();
        if have != e.digest {
            let from = trust.checksums.as_deref().unwrap_or("the checksum file");
            return Err(format!(
                "its {} is {have}, {from} says {}",
                e.algorithm, e.digest
            ));
        }
    }
    if let Some(want) = &trust.given_sha256 {
        if &got.sha256 != want {
            return Err(format!(
                "its sha256 is {}, --sha256 says {want}",
                got.sha256
            ));
        }
    }
    Ok(())
}

fn discard_partial(lib: &Library, name: &str) {
    let _ = fs::remove_file(lib.partial(name));
    let _ = fs::remove_file(lib.resume_state(name));
}

fn admit(
    lib: &Library,
    name: &str,
    source: &Source,
    trust: &Trust,
    got: &Digests,
) -> Result<Sidecar> {
    let sidecar = Sidecar {
        format: library::SIDECAR_FORMAT,
        name: name.to_owned(),
        size_bytes: got.bytes,
        sha256: got.sha256.clone(),
        source: source.to_string(),
        verified_by: trust.verified_by().to_owned(),
        unsigned: trust.signer.is_none(),
        checksums: trust.checksums.clone(),
        checksum: trust.expected.as_ref().map(|e| Checksum {
            algorithm: e.algorithm.to_string(),
            digest: e.digest.clone(),
        }),
        signature: trust.signature.clone(),
        keyring: trust.keyring.clone(),
        signer: trust.signer.clone(),
        verified_at: time::rfc3339(time::now()),
        checked_at: None,
        check_ok: None,
    };
    let image = lib.image(name);
    // --force: the old image goes first, so its bytes are never listed
    // under the new proof.
    match fs::remove_file(&image) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::io(image.display(), e))
        }
        _ => {}
    }
    lib.write_sidecar(&sidecar)?;
    fs::rename(lib.partial(name), &image).map_err(|e| Error::io(image.display(), e))?;
    let _ = fs::remove_file(lib.resume_state(name));
    lib.sync_dir()?;
    Ok(sidecar)
}
