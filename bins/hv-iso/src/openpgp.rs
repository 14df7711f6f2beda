//! A checksum file is only worth what its signature is worth, and a
//! signature only what its key is worth: this checks both, in-process (no
//! gpg, no agent, no trust database), against exactly the keys the user
//! handed over. A key that is expired or revoked, or outside the keyring,
//! fails with its fingerprint named, so the user knows which key to fetch.
//!
//! Keyrings are read the way gpgv reads them, because the file a user
//! points at first is the one their distribution ships
//! (/usr/share/keyrings/*.gpg), in GnuPG's keyring format: trust packets
//! after the key, user ID and signature packets, which rpgp would take for
//! the end of a certificate. So the packet framing is walked here, trust
//! and marker packets are dropped, and each certificate is parsed on its
//! own: one that cannot be read (an algorithm rpgp lacks, a damaged
//! packet) leaves the others usable.

use hv_common::time;
use pgp::armor::{BlockType, Dearmor};
use pgp::composed::{CleartextSignedMessage, Deserializable, DetachedSignature, SignedPublicKey};
use pgp::packet::{Signature, SignatureType};
use pgp::types::{KeyDetails, Tag, Timestamp};
use std::io::{Cursor, Read};
use std::path::Path;

/// debian-keyring.gpg, the largest keyring a distribution ships, is 28 MB.
const KEYRING_LIMIT: usize = 64 << 20;

pub struct Keyring {
    keys: Vec<SignedPublicKey>,
    /// Why each certificate that could not be read was left out.
    skipped: Vec<String>,
    origin: String,
}

/// Why a signature is not accepted.
#[derive(Debug)]
pub enum Refusal {
    /// A key in the keyring made the signature, but not over these bytes:
    /// the signed file was altered, or the signature is another file's.
    /// The caller names both files, which this module does not know.
    Mismatch { key: String },
    /// Anything else, as a phrase that follows "the signature".
    Other(String),
}

/// Who signed, and what: the text a clearsigned file vouches for.
#[derive(Debug)]
pub struct Verified {
    /// The primary key's fingerprint, uppercase hex (as gpg prints it).
    pub signer: String,
    pub signed: Vec<u8>,
}

impl Keyring {
    /// The keyring the user named with --keyring. What is wrong with it
    /// is a usage error naming the file: the fix is another file.
    pub fn load(path: &Path) -> hv_common::Result<Keyring> {
        let named =
            |why: String| hv_common::Error::usage(format!("keyring {}: {why}", path.display()));
        let bytes = crate::fetch::read_capped(path, KEYRING_LIMIT)
            .map_err(|e| named(format!("cannot read: {e}")))?
            .ok_or_else(|| {
                named(format!(
                    "is too large for a keyring (over {} MiB): give the distributor's keys, \
                     exported with gpg --export FINGERPRINT",
                    KEYRING_LIMIT >> 20
                ))
            })?;
        let origin = path.display().to_string();
        if bytes.get(8..12) == Some(b"KBXf") {
            return Err(named(
                "is a GnuPG keybox, not a keyring: export the key with \
                 gpg --export FINGERPRINT > keyring.gpg and pass that"
                    .to_owned(),
            ));
        }
        let (keys, skipped) = parse_keys(&bytes);
        if keys.is_empty() {
            return Err(named(match skipped.first() {
                Some(why) => format!("holds no OpenPGP public key that can be read ({why})"),
                None => "holds no OpenPGP public key".to_owned(),
            }));
        }
        Ok(Keyring {
            keys,
            skipped,
            origin,
        })
    }

    /// Checks a detached signature (binary or ASCII-armoured) over `data`.
    pub fn verify_detached(&self, signature: &[u8], data: &[u8]) -> Result<Verified, Refusal> {
        let sigs = parse_detached(signature).map_err(Refusal::Other)?;
        let signer = self.first_valid(&sigs, data)?;
        Ok(Verified {
            signer,
            signed: data.to_vec(),
        })
    }

    /// Checks a clearsigned text and returns its (dash-unescaped) content.
    pub fn verify_clearsigned(&self, text: &[u8]) -> Result<Verified, Refusal> {
        let text = std::str::from_utf8(text)
            .map_err(|_| Refusal::Other("is not UTF-8 text".to_owned()))?;
        let (message, _) = CleartextSignedMessage::from_string(text).map_err(|e| {
            Refusal::Other(format!(
                "is not a valid clearsigned message: {}",
                one_line(&e)
            ))
        })?;
        let normalized = message.signed_text();
        let signer = self.first_valid(message.signatures(), normalized.as_bytes())?;
        Ok(Verified {
            signer,
            signed: message.signed_text().replace("\r\n", "\n").into_bytes(),
        })
    }

    /// The first signature that verifies with a usable key; otherwise the
    /// reason the first one failed.
    fn first_valid(&self, sigs: &[Signature], data: &[u8]) -> Result<String, Refusal> {
        let mut first_error = None;
        for sig in sigs {
            match self.check(sig, data) {
                Ok(signer) => return Ok(signer),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| Refusal::Other("holds no signature".to_owned())))
    }

    fn check(&self, sig: &Signature, data: &[u8]) -> Result<String, Refusal> {
        if !matches!(sig.typ(), Some(SignatureType::Binary | SignatureType::Text)) {
            return Err(Refusal::Other(format!(
                "is a {:?} signature, not one over a file",
                sig.typ()
            )));
        }
        let candidates = self.issuers_of(sig);
        if candidates.is_empty() {
            let unread = match self.skipped.first() {
                Some(why) => format!(
                    " ({} certificate(s) in it could not be read, the first because {why})",
                    self.skipped.len()
                ),
                None => String::new(),
            };
            return Err(Refusal::Other(format!(
                "was made by key {}, which is not in the keyring {}{unread}: get the distributor's \
                 key (check its fingerprint on their website) and add it",
                issuer_name(sig),
                self.origin
            )));
        }
        // A keyring may hold an old and a refreshed copy of one key: any
        // copy that makes the signature good is enough.
        let mut first_error = None;
        for (cert, component) in candidates {
            match check_with(cert, component, sig, data) {
                Ok(fpr) => return Ok(fpr),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.expect("at least one candidate"))
    }

    /// Every certificate (and subkey index) that could have issued `sig`.
    fn issuers_of(&self, sig: &Signature) -> Vec<(&SignedPublicKey, Option<usize>)> {
        let issued = |key: &dyn KeyDetails| {
            sig.issuer_fingerprint().contains(&&key.fingerprint())
                || sig.issuer_key_id().contains(&&key.legacy_key_id())
        };
        let mut found = Vec::new();
        for cert in &self.keys {
            if issued(&cert.primary_key) {
                found.push((cert, None));
            }
            for (i, sub) in cert.public_subkeys.iter().enumerate() {
                if issued(&sub.key) {
                    found.push((cert, Some(i)));
                }
            }
        }
        found
    }
}

/// The signature over `data` with one candidate key, then the key's
/// validity today: a good signature by a dead key is not good enough.
fn check_with(
    cert: &SignedPublicKey,
    component: Option<usize>,
    sig: &Signature,
    data: &[u8],
) -> Result<String, Refusal> {
    let fpr = fingerprint(&cert.primary_key);
    let verified = match component {
        None => sig.verify(&cert.primary_key, Cursor::new(data)),
        Some(i) => sig.verify(&cert.public_subkeys[i].key, Cursor::new(data)),
    };
    // rpgp's own text for a mismatch is an assertion dump ("left: [..],
    // right: [..]"): a user needs to know which files disagree, and the
    // caller names them. Only an algorithm rpgp lacks is told apart.
    verified.map_err(|e| match &e {
        pgp::errors::Error::Unsupported { .. } => {
            Refusal::Other(format!("by key {fpr} cannot be checked: {}", one_line(&e)))
        }
        _ => Refusal::Mismatch { key: fpr.clone() },
    })?;
    check_key(cert, component, sig, &fpr).map_err(Refusal::Other)?;
    Ok(fpr)
}

/// The key (and subkey) that made a good signature, and the signature
/// itself, are still valid today.
fn check_key(
    cert: &SignedPublicKey,
    component: Option<usize>,
    sig: &Signature,
    fpr: &str,
) -> Result<(), String> {
    let now = time::now();
    let refresh = "; if the distributor has extended or replaced it, export the current key again";
    let primary = usable_primary(cert, now)
        .map_err(|why| format!("was made by key {fpr}, which {why}{refresh}"))?;
    match component {
        None if !can_sign(primary) => Err(format!(
            "was made by key {fpr}, which is not marked for signing"
        )),
        None => Ok(()),
        Some(i) => usable_subkey(cert, i, now).map_err(|why| {
            let sub = fingerprint(&cert.public_subkeys[i].key);
            format!("was made by subkey {sub} of key {fpr}, which {why}{refresh}")
        }),
    }?;
    signature_current(sig, now).map_err(|why| format!("by key {fpr} {why}"))
}

/// Key flags bind only when the self-signature has them; old keys have none.
fn can_sign(self_sig: &Signature) -> bool {
    let flags = self_sig.key_flags();
    flags.sign() || flags == pgp::packet::KeyFlags::default()
}

/// Every certificate that can be read, and why each other one could not.
fn parse_keys(bytes: &[u8]) -> (Vec<SignedPublicKey>, Vec<String>) {
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    if is_armored(bytes) {
        // `cat a.asc b.asc > keyring.asc` is a common way to make a keyring:
        // read every armour block, not only the first.
        let text = String::from_utf8_lossy(bytes);
        for block in text.split("-----BEGIN PGP PUBLIC KEY BLOCK-----").skip(1) {
            let block = format!("-----BEGIN PGP PUBLIC KEY BLOCK-----{block}");
            match dearmor(block.as_bytes()) {
                Ok(binary) => read_binary(&binary, &mut keys, &mut skipped),
                Err(why) => skipped.push(why),
            }
        }
    } else {
        read_binary(bytes, &mut keys, &mut skipped);
    }
    (keys, skipped)
}

fn dearmor(block: &[u8]) -> Result<Vec<u8>, String> {
    let mut reader = Dearmor::new(block);
    let mut binary = Vec::new();
    reader
        .read_to_end(&mut binary)
        .map_err(|e| format!("an armour block is damaged: {}", one_line(&e)))?;
    if reader.typ != Some(BlockType::PublicKey) {
        return Err("an armour block is not a PUBLIC KEY BLOCK".to_owned());
    }
    Ok(binary)
}

/// Parses each certificate of a binary keyring on its own.
fn read_binary(bytes: &[u8], keys: &mut Vec<SignedPublicKey>, skipped: &mut Vec<String>) {
    let (found, broken) = packets(bytes);
    for cert in certificates(&found) {
        match SignedPublicKey::from_bytes(&cert[..]) {
            Ok(key) => keys.push(key),
            Err(e) => skipped.push(one_line(&e)),
        }
    }
    skipped.extend(broken);
}

/// Packet tags (RFC 9580 section 5) that matter to reading a keyring.
const TAG_SECRET_KEY: u8 = 5;
const TAG_PUBLIC_KEY: u8 = 6;
const TAG_MARKER: u8 = 10;
const TAG_TRUST: u8 = 12;
const TAG_PADDING: u8 = 21;

/// One packet of a binary OpenPGP stream: its tag, and its bytes with the
/// header, as they are handed on to rpgp.
struct Packet<'a> {
    tag: u8,
    bytes: &'a [u8],
}

/// Splits a binary OpenPGP stream into packets by their headers alone, old
/// and new format (RFC 9580 section 4.2). A header that cannot be read, or
/// a length past the end, ends the walk: the packets before it are kept,
/// with the reason.
fn packets(bytes: &[u8]) -> (Vec<Packet<'_>>, Option<String>) {
    let mut found = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (tag, head, body) = match header(&bytes[at..]) {
            Ok(h) => h,
            Err(why) => return (found, Some(format!("{why} at byte {at}"))),
        };
        let end = at.saturating_add(head).saturating_add(body);
        if end > bytes.len() {
            return (
                found,
                Some(format!(
                    "the packet at byte {at} runs past the end of the file"
                )),
            );
        }
        found.push(Packet {
            tag,
            bytes: &bytes[at..end],
        });
        at = end;
    }
    (found, None)
}

/// A packet header at the start of `b`: (tag, header length, body length).
/// Partial and indeterminate lengths are for data packets; no key, user ID
/// or signature packet has one.
fn header(b: &[u8]) -> Result<(u8, usize, usize), String> {
    let short = || "the file ends inside a packet header".to_owned();
    let byte = |i: usize| b.get(i).map(|&x| usize::from(x)).ok_or_else(short);
    let first = b[0];
    if first & 0x80 == 0 {
        return Err("not an OpenPGP packet".to_owned());
    }
    if first & 0x40 != 0 {
        let tag = first & 0x3f;
        return match byte(1)? {
            len @ 0..=191 => Ok((tag, 2, len)),
            len @ 192..=223 => Ok((tag, 3, ((len - 192) << 8) + byte(2)? + 192)),
            255 => {
                let len = (byte(2)? << 24) | (byte(3)? << 16) | (byte(4)? << 8) | byte(5)?;
                Ok((tag, 6, len))
            }
            _ => Err(format!(
                "a packet (tag {tag}) of partial length, which no key has"
            )),
        };
    }
    let tag = (first >> 2) & 0x0f;
    match first & 0x03 {
        0 => Ok((tag, 2, byte(1)?)),
        1 => Ok((tag, 3, (byte(1)? << 8) | byte(2)?)),
        2 => {
            let len = (byte(1)? << 24) | (byte(2)? << 16) | (byte(3)? << 8) | byte(4)?;
            Ok((tag, 5, len))
        }
        _ => Err(format!(
            "a packet (tag {tag}) of indeterminate length, which no key has"
        )),
    }
}

/// Each certificate as the bytes rpgp parses: a primary public key packet
/// and what follows it up to the next primary key, without the trust,
/// marker and padding packets gpgv ignores too. Secret keys are not
/// certificates to verify with, and are left out with their packets.
fn certificates(packets: &[Packet<'_>]) -> Vec<Vec<u8>> {
    let mut certs: Vec<Vec<u8>> = Vec::new();
    let mut in_cert = false;
    for p in packets {
        match p.tag {
            TAG_PUBLIC_KEY => {
                certs.push(p.bytes.to_vec());
                in_cert = true;
            }
            TAG_SECRET_KEY => in_cert = false,
            TAG_TRUST | TAG_MARKER | TAG_PADDING => {}
            _ => {
                if let (true, Some(cert)) = (in_cert, certs.last_mut()) {
                    cert.extend_from_slice(p.bytes);
                }
            }
        }
    }
    certs
}

/// A library error's first line: rpgp's messages can span several.
fn one_line(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    text.lines().next().unwrap_or_default().trim().to_owned()
}

fn parse_detached(bytes: &[u8]) -> Result<Vec<Signature>, String> {
    let parsed: Vec<_> = if is_armored(bytes) {
        let (sigs, _) = DetachedSignature::from_armor_many(Cursor::new(bytes))
            .map_err(|e| format!("is not an OpenPGP signature: {}", one_line(&e)))?;
        sigs.collect()
    } else {
        DetachedSignature::from_bytes_many(Cursor::new(bytes))
            .map_err(|e| format!("is not an OpenPGP signature: {}", one_line(&e)))?
            .collect()
    };
    let sigs: Vec<Signature> = parsed
        .into_iter()
        .filter_map(|s| s.ok().map(|s| s.signature))
        .collect();
    if sigs.is_empty() {
        return Err("is not an OpenPGP signature".to_owned());
    }
    Ok(sigs)
}

fn is_armored(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(64)];
    String::from_utf8_lossy(head)
        .trim_start()
        .starts_with("-----BEGIN PGP")
}

pub fn is_clearsigned(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(64)];
    String::from_utf8_lossy(head)
        .trim_start()
        .starts_with("-----BEGIN PGP SIGNED MESSAGE-----")
}

fn fingerprint(key: &impl KeyDetails) -> String {
    format!("{:X}", key.fingerprint())
}

fn issuer_name(sig: &Signature) -> String {
    if let Some(fpr) = sig.issuer_fingerprint().first() {
        return format!("{fpr:X}");
    }
    match sig.issuer_key_id().first() {
        Some(id) => hv_common::output::hex(id.as_ref()).to_uppercase(),
        None => "(unnamed)".to_owned(),
    }
}

/// Not revoked, not expired: judged by the newest self-signature that
/// verifies (third-party certifications say nothing about expiry).
fn usable_primary(cert: &SignedPublicKey, now: i64) -> Result<&Signature, String> {
    let key = &cert.primary_key;
    for rev in &cert.details.revocation_signatures {
        if rev.verify_key(key).is_ok() {
            return Err(format!("is revoked{}", reason(rev)));
        }
    }
    let direct = cert
        .details
        .direct_signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::Key) && s.verify_key(key).is_ok());
    let certification = |s: &&Signature| {
        matches!(
            s.typ(),
            Some(
                SignatureType::CertGeneric
                    | SignatureType::CertPersona
                    | SignatureType::CertCasual
                    | SignatureType::CertPositive
            )
        )
    };
    let revoked = |u: &pgp::types::SignedUser| {
        u.signatures.iter().any(|s| {
            s.typ() == Some(SignatureType::CertRevocation)
                && s.verify_certification(key, Tag::UserId, &u.id).is_ok()
        })
    };
    let certs = cert
        .details
        .users
        .iter()
        .filter(|u| !revoked(u))
        .flat_map(move |u| {
            u.signatures
                .iter()
                .filter(certification)
                .filter(move |s| s.verify_certification(key, Tag::UserId, &u.id).is_ok())
        });
    let newest = direct.chain(certs).max_by_key(|s| created(s));
    let Some(newest) = newest else {
        return Err("has no valid self-signature".to_owned());
    };
    not_expired(key.created_at(), newest, now)?;
    Ok(newest)
}

fn usable_subkey(cert: &SignedPublicKey, index: usize, now: i64) -> Result<(), String> {
    let primary = &cert.primary_key;
    let sub = &cert.public_subkeys[index];
    let valid = |s: &&Signature| s.verify_subkey_binding(primary, &sub.key).is_ok();
    let revoked = sub
        .signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::SubkeyRevocation))
        .find(valid);
    if let Some(rev) = revoked {
        return Err(format!("is revoked{}", reason(rev)));
    }
    let binding = sub
        .signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding))
        .filter(valid)
        .max_by_key(|s| created(s))
        .ok_or("is not bound to its primary key by a valid signature")?;
    let backsig_ok = binding
        .embedded_signature()
        .is_some_and(|b| b.verify_primary_key_binding(&sub.key, primary).is_ok());
    if !binding.key_flags().sign() || !backsig_ok {
        return Err("is not a signing subkey".to_owned());
    }
    not_expired(sub.key.created_at(), binding, now)
}

fn not_expired(key_created: Timestamp, self_sig: &Signature, now: i64) -> Result<(), String> {
    let lifetime = self_sig.key_expiration_time().map_or(0, |d| d.as_secs());
    let expires = i64::from(key_created.as_secs()) + i64::from(lifetime);
    if lifetime > 0 && expires <= now {
        return Err(format!("expired on {}", time::rfc3339(expires)));
    }
    Ok(())
}

fn signature_current(sig: &Signature, now: i64) -> Result<(), String> {
    let made = created(sig);
    if made > now + 300 {
        return Err(format!("is dated in the future ({})", time::rfc3339(made)));
    }
    let lifetime = sig.signature_expiration_time().map_or(0, |d| d.as_secs());
    if lifetime > 0 && made + i64::from(lifetime) <= now {
        let at = time::rfc3339(made + i64::from(lifetime));
        return Err(format!("expired on {at}"));
    }
    Ok(())
}

fn created(sig: &Signature) -> i64 {
    sig.created().map_or(0, |t| i64::from(t.as_secs()))
}

fn reason(rev: &Signature) -> String {
    match rev.revocation_reason_string() {
        Some(r) if !r.is_empty() => format!(" ({})", String::from_utf8_lossy(r)),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_headers_in_old_and_new_format() {
        // New format: one-, two- and five-octet lengths.
        assert_eq!(header(&[0xC6, 5]), Ok((6, 2, 5)));
        assert_eq!(header(&[0xCD, 192, 0]), Ok((13, 3, 192)));
        assert_eq!(header(&[0xC2, 0xC5, 0xFB]), Ok((2, 3, 1723)));
        assert_eq!(header(&[0xC2, 255, 0, 1, 0, 0]), Ok((2, 6, 65536)));
        // Old format, as GnuPG writes keyrings: a key with a two-octet
        // length, a trust packet, a signature with a four-octet length.
        assert_eq!(header(&[0x99, 0x02, 0x0d]), Ok((6, 3, 525)));
        assert_eq!(header(&[0xB0, 12]), Ok((12, 2, 12)));
        assert_eq!(header(&[0x8A, 0, 0, 1, 0]), Ok((2, 5, 256)));
        assert!(header(&[0xC6, 230]).unwrap_err().contains("partial length"));
        assert!(header(&[0x9B]).unwrap_err().contains("indeterminate"));
        assert!(header(&[0x42])
            .unwrap_err()
            .contains("not an OpenPGP packet"));
        assert!(header(&[0x99, 0x02]).unwrap_err().contains("ends inside"));
    }

    #[test]
    fn trust_and_marker_packets_are_dropped_and_each_certificate_stands_alone() {
        let parts: [&[u8]; 8] = [
            &[0xCA, 3, b'P', b'G', b'P'], // marker
            &[0xC6, 1, 4],                // primary key
            &[0xB0, 2, 0, 0],             // trust, old format
            &[0xCD, 1, b'a'],             // user ID
            &[0xCC, 1, 0],                // trust, new format
            &[0xC6, 1, 4],                // the next primary key
            &[0xCE, 1, 4],                // its subkey
            &[0xB0, 1, 0],                // trust
        ];
        let ring = parts.concat();
        let (found, broken) = packets(&ring);
        assert_eq!(broken, None);
        let tags: Vec<u8> = found.iter().map(|p| p.tag).collect();
        assert_eq!(tags, [10, 6, 12, 13, 12, 6, 14, 12]);
        assert_eq!(
            certificates(&found),
            [
                vec![0xC6, 1, 4, 0xCD, 1, b'a'],
                vec![0xC6, 1, 4, 0xCE, 1, 4]
            ]
        );
        // A damaged tail costs only itself.
        let damaged = [&ring[..], &[0xC6, 9, 4]].concat();
        let (found, broken) = packets(&damaged);
        assert_eq!(found.len(), 8);
        assert!(broken.unwrap().contains("runs past the end of the file"));
    }

    /// The keyrings Debian's packages install, the files a user on Debian or
    /// Ubuntu points --keyring at first (tests/bench/setup-host.sh installs
    /// the packages): every certificate is read, and the distributor's CD
    /// signing key in each is usable.
    #[test]
    fn keyrings_as_debian_packages_install_them() {
        let cases = [
            (
                "/usr/share/keyrings/ubuntu-archive-keyring.gpg",
                "ubuntu-keyring",
                "843938DF228D22F7B3742BC0D94AA3F0EFE21092",
            ),
            (
                "/usr/share/keyrings/debian-role-keys.gpg",
                "debian-keyring",
                "DF9B9C49EAA9298432589D76DA87E80D6294BE9B",
            ),
        ];
        for (path, package, cd_key) in cases {
            let path = Path::new(path);
            if !path.exists() {
                eprintln!(
                    "skipped: {} is absent (install the Debian package {package})",
                    path.display()
                );
                continue;
            }
            let ring = Keyring::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let bytes = std::fs::read(path).unwrap();
            let (found, broken) = packets(&bytes);
            assert_eq!(broken, None, "{}", path.display());
            let primaries = found.iter().filter(|p| p.tag == TAG_PUBLIC_KEY).count();
            assert_eq!(
                ring.keys.len(),
                primaries,
                "{}: not read: {:?}",
                path.display(),
                ring.skipped
            );
            let cert = ring
                .keys
                .iter()
                .find(|k| fingerprint(&k.primary_key) == cd_key)
                .unwrap_or_else(|| panic!("{cd_key} is not in {}", path.display()));
            if let Err(why) = usable_primary(cert, time::now()) {
                panic!("{cd_key} in {}: {why}", path.display());
            }
        }
    }
}
