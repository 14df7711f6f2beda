//! Sealing and opening what the repository stores. The host holds only age
//! recipients (public keys), so everything it writes is unreadable to it;
//! only `--identity` opens it again. Chunks are zstd frames sealed with age;
//! chunk ids are a keyed BLAKE3 hash, so equal plaintext dedups while the
//! repository alone does not reveal plaintext hashes.

use hv_common::{Code, Error, Result};
use std::io::{Read, Write};
use std::path::Path;

pub type Recipients = Vec<age::x25519::Recipient>;
pub type Identities = Vec<age::x25519::Identity>;

/// Length of the chunk-id key in bytes.
pub const KEY_LEN: usize = 32;
pub type ChunkKey = [u8; KEY_LEN];

/// Parses `age1…` public keys; `source` names where they came from.
pub fn parse_recipients<'a>(
    keys: impl IntoIterator<Item = &'a str>,
    source: &str,
) -> Result<Recipients> {
    let mut out = Vec::new();
    for key in keys {
        let key = key.trim();
        if key.is_empty() || key.starts_with('#') {
            continue;
        }
        let r = key.parse::<age::x25519::Recipient>().map_err(|e| {
            Error::usage(format!(
                "{source}: {key:?} is not an age X25519 recipient ({e}); give the age1… public key \
                 that `age-keygen -y IDENTITY` prints"
            ))
        })?;
        out.push(r);
    }
    Ok(out)
}

/// Key files are a few lines; anything larger is not one (and is not read
/// whole: `/dev/zero` or a huge file given by mistake).
const KEY_FILE_LIMIT: u64 = 1 << 20;

pub fn read_recipients_file(path: &Path) -> Result<Recipients> {
    let data = hv_common::fsutil::read_named(
        path,
        "recipients file",
        KEY_FILE_LIMIT,
        "give a file of age1… public keys, one per line",
    )?;
    let text = String::from_utf8_lossy(&data);
    parse_recipients(text.lines(), &path.display().to_string())
}

/// The identity `why` (e.g. "restore") needs, from the file `--identity`
/// or `HV_BACKUP_IDENTITY` names. Commands read it only once they know
/// they decrypt, so a fast verify never asks for a key kept off the host.
pub fn load_identity(path: Option<&Path>, why: &str) -> Result<Identities> {
    let path = path.ok_or_else(|| {
        Error::usage(format!(
            "{why} needs the identity: give --identity FILE or set HV_BACKUP_IDENTITY"
        ))
    })?;
    read_identity(path)
}

/// Reads an age identity file (`AGE-SECRET-KEY-1…` lines, as `age-keygen`
/// writes; `#` comments and blank lines ignored).
pub fn read_identity(path: &Path) -> Result<Identities> {
    let data = hv_common::fsutil::read_named(
        path,
        "identity file",
        KEY_FILE_LIMIT,
        "give the file age-keygen wrote",
    )?;
    let text = String::from_utf8(data).map_err(|_| {
        Error::usage(format!(
            "identity file {} is not text; give the file age-keygen wrote",
            path.display()
        ))
    })?;
    let mut ids = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // Never echo the line: it is a secret key.
        let id = line.parse::<age::x25519::Identity>().map_err(|_| {
            Error::usage(format!(
                "identity file {} line {}: not an AGE-SECRET-KEY-1… line (only X25519 identities are supported)",
                path.display(),
                n + 1
            ))
        })?;
        ids.push(id);
    }
    if ids.is_empty() {
        return Err(Error::usage(format!(
            "identity file {} holds no AGE-SECRET-KEY-1… line",
            path.display()
        )));
    }
    Ok(ids)
}

pub fn encrypt(recipients: &Recipients, plaintext: &[u8]) -> Result<Vec<u8>> {
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| Error::usage(format!("cannot encrypt: {e}")))?;
    let mut out = Vec::with_capacity(plaintext.len() + 512);
    let io_err = |e| Error::io("cannot encrypt", e);
    let mut w = encryptor.wrap_output(&mut out).map_err(io_err)?;
    w.write_all(plaintext).map_err(io_err)?;
    w.finish().map_err(io_err)?;
    Ok(out)
}

/// Opens age data; `what` names it in errors. A key that opens nothing is
/// `decrypt_failed`; anything else wrong with the bytes is `corrupt`.
pub fn decrypt(identities: &Identities, ciphertext: &[u8], what: &str) -> Result<Vec<u8>> {
    let decryptor = age::Decryptor::new(ciphertext).map_err(|e| corrupt_or_key(e, what))?;
    let mut r = decryptor
        .decrypt(identities.iter().map(|i| i as &dyn age::Identity))
        .map_err(|e| corrupt_or_key(e, what))?;
    let mut out = Vec::with_capacity(ciphertext.len());
    r.read_to_end(&mut out)
        .map_err(|e| Error::new(Code::Corrupt, format!("{what} is corrupt: {e}")))?;
    Ok(out)
}

fn corrupt_or_key(e: age::DecryptError, what: &str) -> Error {
    match e {
        age::DecryptError::NoMatchingKeys => Error::new(
            Code::DecryptFailed,
            format!(
                "{what}: the identity does not match any recipient it was encrypted to; give the \
                 identity whose public key was passed to `hv-backup init`"
            ),
        ),
        e => Error::new(Code::Corrupt, format!("{what} is corrupt: {e}")),
    }
}

/// The chunk id of `plain`: keyed BLAKE3, lowercase hex.
pub fn chunk_id(key: &ChunkKey, plain: &[u8]) -> String {
    blake3::keyed_hash(key, plain).to_hex().to_string()
}

/// zstd then age: what a chunk file holds, and its body length.
pub fn seal_chunk(recipients: &Recipients, level: i32, plain: &[u8]) -> Result<(Vec<u8>, u64)> {
    let packed = compress(level, plain).map_err(|e| Error::io("cannot compress a chunk", e))?;
    let sealed = encrypt(recipients, &packed)?;
    let body = header_len(&sealed)
        .map(|h| (sealed.len() - h) as u64)
        .ok_or_else(|| Error::new(Code::Io, "the age library wrote a header hv cannot parse"))?;
    Ok((sealed, body))
}

thread_local! {
    /// Each worker keeps its zstd contexts: making one per chunk costs
    /// allocating and clearing its tables (and the page faults) each time.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// A zstd frame of `plain`. A chunk whose samples do not compress (random
/// data, media, encrypted files) goes into raw blocks without a full
/// attempt: zstd would spend nearly the time it spends on text to find
/// nothing. Any zstd decoder reads either.
pub fn compress(level: i32, plain: &[u8]) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.as_ref().map(|(l, _)| *l) != Some(level) {
            *cell = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        let (_, compressor) = cell.as_mut().expect("just made");
        if incompressible(compressor, plain)? {
            return Ok(raw_frame(plain));
        }
        compressor.compress(plain)
    })
}

/// Decompresses a chunk of `len` bytes.
pub fn decompress(packed: &[u8], len: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = Some(zstd::bulk::Decompressor::new()?);
        }
        cell.as_mut().expect("just made").decompress(packed, len)
    })
}

/// Whether eight 8 KiB samples spread over `plain` all fail to shrink by
/// 3%: then the whole is stored raw. One compressible sample (text, zeros,
/// a half-empty chunk) sends the whole chunk to zstd.
fn incompressible(compressor: &mut zstd::bulk::Compressor, plain: &[u8]) -> std::io::Result<bool> {
    const SAMPLES: usize = 8;
    const SAMPLE: usize = 8 << 10;
    if plain.len() < SAMPLES * SAMPLE * 4 {
        return Ok(false);
    }
    let step = plain.len() / SAMPLES;
    for k in 0..SAMPLES {
        let sample = &plain[k * step..k * step + SAMPLE];
        if compressor.compress(sample)?.len() * 100 < SAMPLE * 97 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A zstd frame of raw blocks (RFC 8878, 3.1.1): a single segment with a
/// 4-byte content size, then blocks of at most 128 KiB stored as they are.
fn raw_frame(plain: &[u8]) -> Vec<u8> {
    const BLOCK: usize = 128 << 10;
    let blocks = plain.len().div_ceil(BLOCK).max(1);
    let mut out = Vec::with_capacity(plain.len() + 9 + 3 * blocks);
    out.extend_from_slice(&0xFD2F_B528u32.to_le_bytes());
    out.push(0b1010_0000); // content size in 4 bytes; single segment
    out.extend_from_slice(&(plain.len() as u32).to_le_bytes());
    let mut pieces = plain.chunks(BLOCK).peekable();
    if plain.is_empty() {
        out.extend_from_slice(&[1, 0, 0]); // the last block, raw, empty
    }
    while let Some(piece) = pieces.next() {
        let last = u32::from(pieces.peek().is_none());
        let header = last | ((piece.len() as u32) << 3); // block type 0: raw
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.extend_from_slice(piece);
    }
    out
}

/// The length of the age header that starts `head`, through its MAC line,
/// or `None` when `head` does not start with a whole, well-formed one.
///
/// The header is not a function of the data: the age library adds a
/// stanza of random length to every file it writes, so the same chunk
/// sealed twice differs in size. What follows the header (a nonce and the
/// STREAM segments) has a length fixed by the compressed data, which is
/// what the repository records and fast verify checks: equal however many
/// runs stored the chunk.
pub fn header_len(head: &[u8]) -> Option<usize> {
    const INTRO: &[u8] = b"age-encryption.org/v1\n";
    // "--- " and an unpadded base64 HMAC-SHA-256.
    const MAC_LINE: usize = 4 + 43;
    if !head.starts_with(INTRO) {
        return None;
    }
    let mut pos = INTRO.len();
    loop {
        let end = pos + head[pos..].iter().position(|&b| b == b'\n')?;
        let line = &head[pos..end];
        if line.starts_with(b"---") {
            return (line.len() == MAC_LINE && line[3] == b' ').then_some(end + 1);
        }
        if !(line.starts_with(b"-> ") || line.len() <= 64) {
            return None;
        }
        pos = end + 1;
    }
}

/// The smallest body an age file can have: its nonce and one tag.
pub const MIN_BODY: u64 = 16 + 16;

/// Opens a chunk and checks its length and id; `what` names it in errors.
pub fn open_chunk(
    identities: &Identities,
    key: &ChunkKey,
    sealed: &[u8],
    id: &str,
    len: usize,
    what: &str,
) -> Result<Vec<u8>> {
    let packed = decrypt(identities, sealed, what)?;
    let plain = decompress(&packed, len)
        .map_err(|e| Error::new(Code::Corrupt, format!("{what} does not decompress: {e}")))?;
    if plain.len() != len {
        return Err(Error::new(
            Code::Corrupt,
            format!("{what} holds {} bytes, expected {len}", plain.len()),
        ));
    }
    if chunk_id(key, &plain) != id {
        return Err(Error::new(
            Code::Corrupt,
            format!("{what} does not hash to its id"),
        ));
    }
    Ok(plain)
}

pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b)
        .map_err(|e| Error::new(Code::Io, format!("no randomness from the OS: {e}")))?;
    Ok(b)
}

/// N random bytes as 2N hex digits: salts in ids and temporary names.
pub fn random_hex<const N: usize>() -> Result<String> {
    Ok(hex(&random_bytes::<N>()?))
}

pub use hv_common::output::hex;

/// 64 hex digits (surrounding blanks ignored) as 32 bytes: keys and chunk ids.
pub fn unhex32(text: &str) -> Option<[u8; KEY_LEN]> {
    let text = text.trim();
    if text.len() != KEY_LEN * 2 {
        return None;
    }
    let mut key = [0u8; KEY_LEN];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random bytes, as a chunk of encrypted or compressed files holds.
    fn random(len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn random_chunks_go_raw_and_any_zstd_reads_them() {
        for len in [4 << 20, (4 << 20) - 1000, 300 << 10] {
            let plain = random(len);
            let packed = compress(3, &plain).unwrap();
            assert_eq!(
                packed.len(),
                len + 9 + 3 * len.div_ceil(128 << 10),
                "raw, {len}"
            );
            assert_eq!(zstd::stream::decode_all(&packed[..]).unwrap(), plain);
            assert_eq!(decompress(&packed, len).unwrap(), plain);
        }
        assert_eq!(zstd::stream::decode_all(&raw_frame(&[])[..]).unwrap(), b"");
        // Half random, half text: compressed, as one compressible sample says.
        let mut mixed = random(2 << 20);
        mixed.extend(b"systemd started session 42\n".repeat((2 << 20) / 28));
        let packed = compress(3, &mixed).unwrap();
        assert!(packed.len() < mixed.len() * 3 / 4, "{}", packed.len());
        assert_eq!(decompress(&packed, mixed.len()).unwrap(), mixed);
    }

    #[test]
    fn a_chunk_round_trips_and_a_flipped_bit_is_caught() {
        let identity = age::x25519::Identity::generate();
        let recipients = vec![identity.to_public()];
        let ids: Identities = vec![identity];
        let key = [7u8; KEY_LEN];
        let plain: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let id = chunk_id(&key, &plain);
        let (mut sealed, _) = seal_chunk(&recipients, 3, &plain).unwrap();
        let back = open_chunk(&ids, &key, &sealed, &id, plain.len(), "chunk").unwrap();
        assert_eq!(back, plain);
        let last = sealed.len() - 20;
        sealed[last] ^= 1;
        let err = open_chunk(&ids, &key, &sealed, &id, plain.len(), "chunk").unwrap_err();
        assert_eq!(err.code, Code::Corrupt);
    }

    #[test]
    fn a_foreign_identity_is_a_key_error() {
        let a = age::x25519::Identity::generate();
        let b: Identities = vec![age::x25519::Identity::generate()];
        let sealed = encrypt(&vec![a.to_public()], b"secret").unwrap();
        assert_eq!(
            decrypt(&b, &sealed, "manifest").unwrap_err().code,
            Code::DecryptFailed
        );
    }

    #[test]
    fn bodies_of_one_chunk_sealed_twice_are_equal_though_files_differ() {
        let identity = age::x25519::Identity::generate();
        let recipients: Recipients = vec![identity.to_public()];
        let plain = vec![7u8; 100_000];
        let sizes: Vec<(usize, u64)> = (0..20)
            .map(|_| {
                let (sealed, body) = seal_chunk(&recipients, 3, &plain).unwrap();
                let header = header_len(&sealed).unwrap();
                assert_eq!(sealed.len() - header, body as usize);
                (sealed.len(), body)
            })
            .collect();
        assert!(sizes.iter().all(|s| s.1 == sizes[0].1), "{sizes:?}");
        assert!(
            sizes.iter().any(|s| s.0 != sizes[0].0),
            "the age library no longer pads its headers at random: {sizes:?}"
        );
        let (sealed, _) = seal_chunk(&recipients, 3, &plain).unwrap();
        let header = header_len(&sealed).unwrap();
        assert_eq!(header_len(&sealed[..header - 1]), None);
        assert_eq!(header_len(&sealed[..100]), None);
        assert_eq!(header_len(b"not age at all\n"), None);
    }

    #[test]
    fn chunk_ids_depend_on_the_key() {
        assert_ne!(chunk_id(&[1; 32], b"x"), chunk_id(&[2; 32], b"x"));
        assert_eq!(unhex32(&hex(&[9; 32])), Some([9; 32]));
        assert_eq!(unhex32("zz"), None);
    }
}
