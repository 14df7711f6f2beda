//! A checksum file is only worth what its signature is worth, and a
//! signature only what its key is worth: this checks both, in-process (no
//! gpg, no agent, no trust database), against exactly the keys the user
//! handed over. A key that is expired or revoked, or outside the keyring,
//! fails with its fingerprint named, so the user knows which key to fetch.

use hv_common::time;
use pgp::composed::{CleartextSignedMessage, Deserializable, DetachedSignature, SignedPublicKey};
use pgp::packet::{Signature, SignatureType};
use pgp::types::{KeyDetails, Tag, Timestamp};
use std::io::Cursor;
use std::path::Path;

pub struct Keyring {
    keys: Vec<SignedPublicKey>,
    origin: String,
}

/// Who signed, and what: the text a clearsigned file vouches for.
#[derive(Debug)]
pub struct Verified {
    /// The primary key's fingerprint, uppercase hex (as gpg prints it).
    pub signer: String,
    pub signed: Vec<u8>,
}

impl Keyring {
    pub fn load(path: &Path) -> Result<Keyring, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
        let origin = path.display().to_string();
        if bytes.get(8..12) == Some(b"KBXf") {
            return Err("is a GnuPG keybox, not a keyring: export the key with \
                        gpg --export FINGERPRINT > keyring.gpg and pass that"
                .to_owned());
        }
        let keys = parse_keys(&bytes)?;
        if keys.is_empty() {
            return Err("holds no OpenPGP public key".to_owned());
        }
        Ok(Keyring { keys, origin })
    }

    /// Checks a detached signature (binary or ASCII-armoured) over `data`.
    pub fn verify_detached(&self, signature: &[u8], data: &[u8]) -> Result<Verified, String> {
        let sigs = parse_detached(signature)?;
        let signer = self.first_valid(&sigs, data)?;
        Ok(Verified {
            signer,
            signed: data.to_vec(),
        })
    }

    /// Checks a clearsigned text and returns its (dash-unescaped) content.
    pub fn verify_clearsigned(&self, text: &[u8]) -> Result<Verified, String> {
        let text = std::str::from_utf8(text).map_err(|_| "is not UTF-8 text".to_owned())?;
        let (message, _) = CleartextSignedMessage::from_string(text)
            .map_err(|e| format!("is not a valid clearsigned message: {e}"))?;
        let normalized = message.signed_text();
        let signer = self.first_valid(message.signatures(), normalized.as_bytes())?;
        Ok(Verified {
            signer,
            signed: message.signed_text().replace("\r\n", "\n").into_bytes(),
        })
    }

    /// The first signature that verifies with a usable key; otherwise the
    /// reason the first one failed.
    fn first_valid(&self, sigs: &[Signature], data: &[u8]) -> Result<String, String> {
        let mut first_error = None;
        for sig in sigs {
            match self.check(sig, data) {
                Ok(signer) => return Ok(signer),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| "holds no signature".to_owned()))
    }

    fn check(&self, sig: &Signature, data: &[u8]) -> Result<String, String> {
        if !matches!(sig.typ(), Some(SignatureType::Binary | SignatureType::Text)) {
            return Err(format!(
                "is a {:?} signature, not one over a file",
                sig.typ()
            ));
        }
        let candidates = self.issuers_of(sig);
        if candidates.is_empty() {
            return Err(format!(
                "was made by key {}, which is not in the keyring {}: get the distributor's key \
                 (check its fingerprint on their website) and add it",
                issuer_name(sig),
                self.origin
            ));
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
) -> Result<String, String> {
    let fpr = fingerprint(&cert.primary_key);
    let verified = match component {
        None => sig.verify(&cert.primary_key, Cursor::new(data)),
        Some(i) => sig.verify(&cert.public_subkeys[i].key, Cursor::new(data)),
    };
    verified.map_err(|e| {
        format!("does not match the signed file: it was altered, or the signature is for another file (key {fpr}: {e})")
    })?;
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
    signature_current(sig, now).map_err(|why| format!("by key {fpr} {why}"))?;
    Ok(fpr)
}

/// Key flags bind only when the self-signature has them; old keys have none.
fn can_sign(self_sig: &Signature) -> bool {
    let flags = self_sig.key_flags();
    flags.sign() || flags == pgp::packet::KeyFlags::default()
}

fn parse_keys(bytes: &[u8]) -> Result<Vec<SignedPublicKey>, String> {
    let parsed: Vec<_> = if is_armored(bytes) {
        // `cat a.asc b.asc > keyring.asc` is a common way to make a keyring:
        // read every armour block, not only the first.
        let text = String::from_utf8_lossy(bytes);
        let mut keys = Vec::new();
        for block in text.split("-----BEGIN PGP PUBLIC KEY BLOCK-----").skip(1) {
            let block = format!("-----BEGIN PGP PUBLIC KEY BLOCK-----{block}");
            let (parsed, _) = SignedPublicKey::from_armor_many(Cursor::new(block.into_bytes()))
                .map_err(|e| format!("is not an OpenPGP keyring: {e}"))?;
            keys.extend(parsed);
        }
        keys
    } else {
        SignedPublicKey::from_bytes_many(Cursor::new(bytes))
            .map_err(|e| format!("is not an OpenPGP keyring: {e}"))?
            .collect()
    };
    // One unreadable key (an algorithm rpgp lacks) must not hide the others.
    Ok(parsed.into_iter().filter_map(|k| k.ok()).collect())
}

fn parse_detached(bytes: &[u8]) -> Result<Vec<Signature>, String> {
    let parsed: Vec<_> = if is_armored(bytes) {
        let (sigs, _) = DetachedSignature::from_armor_many(Cursor::new(bytes))
            .map_err(|e| format!("is not an OpenPGP signature: {e}"))?;
        sigs.collect()
    } else {
        DetachedSignature::from_bytes_many(Cursor::new(bytes))
            .map_err(|e| format!("is not an OpenPGP signature: {e}"))?
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
