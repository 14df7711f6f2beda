//! Hashing is the whole cost of `verify` and half of `add`, so bytes are
//! hashed once, as they pass: SHA-256 always (the library's own record)
//! and the distributor's algorithm beside it when that differs. Reading
//! runs on its own thread so the disk and the CPU work at the same time.

use crate::checksums::Algorithm;
use hv_common::output::hex;
use hv_common::progress::Counter;
use sha2::digest::DynDigest;
use sha2::{Digest, Sha256};
use std::io::{self, Read};
use std::sync::mpsc;

const BLOCK: usize = 4 << 20;

pub struct Hasher {
    sha256: Sha256,
    also: Option<(Algorithm, Box<dyn DynDigest + Send>)>,
    pub bytes: u64,
}

/// The finished digests, lowercase hex.
#[derive(Debug, Clone)]
pub struct Digests {
    pub sha256: String,
    pub also: Option<(Algorithm, String)>,
    pub bytes: u64,
}

impl Digests {
    /// The digest in `algorithm`, if it was computed.
    pub fn get(&self, algorithm: Algorithm) -> Option<&str> {
        match (&self.also, algorithm) {
            (_, Algorithm::Sha256) => Some(&self.sha256),
            (Some((a, hex)), _) if *a == algorithm => Some(hex),
            _ => None,
        }
    }
}

impl Hasher {
    pub fn new(also: Option<Algorithm>) -> Hasher {
        let also = also.and_then(|a| {
            let d: Box<dyn DynDigest + Send> = match a {
                Algorithm::Sha256 => return None,
                Algorithm::Sha512 => Box::new(sha2::Sha512::new()),
                Algorithm::Sha1 => Box::new(sha1::Sha1::new()),
                Algorithm::Md5 => Box::new(md5::Md5::new()),
            };
            Some((a, d))
        });
        Hasher {
            sha256: Sha256::new(),
            also,
            bytes: 0,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        Digest::update(&mut self.sha256, data);
        if let Some((_, d)) = &mut self.also {
            d.update(data);
        }
        self.bytes += data.len() as u64;
    }

    /// Starts over, for a download the server restarted from byte 0.
    pub fn reset(&mut self) {
        *self = Hasher::new(self.also.as_ref().map(|(a, _)| *a));
    }

    pub fn finish(self) -> Digests {
        Digests {
            sha256: hex(&self.sha256.finalize()),
            also: self.also.map(|(a, d)| (a, hex(&d.finalize()))),
            bytes: self.bytes,
        }
    }
}

/// Feeds everything `reader` holds to `hasher` (and to `sink`, when
/// copying), reading ahead on a second thread.
pub fn pump(
    reader: impl Read + Send,
    hasher: &mut Hasher,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
    progress: &Counter,
) -> io::Result<()> {
    let (full_tx, full_rx) = mpsc::sync_channel::<io::Result<(Vec<u8>, usize)>>(2);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
    for _ in 0..3 {
        let _ = empty_tx.send(vec![0; BLOCK]);
    }
    std::thread::scope(|s| {
        s.spawn(move || read_ahead(reader, &empty_rx, &full_tx));
        // Both channel ends move in here, so an early return (a sink that
        // failed: a full disk) drops them and the reader thread ends too.
        let (full_rx, empty_tx) = (full_rx, empty_tx);
        for block in full_rx {
            let (buf, len) = block?;
            hasher.update(&buf[..len]);
            sink(&buf[..len])?;
            progress.add(len as u64);
            let _ = empty_tx.send(buf);
        }
        Ok(())
    })
}

fn read_ahead(
    mut reader: impl Read,
    empty: &mpsc::Receiver<Vec<u8>>,
    full: &mpsc::SyncSender<io::Result<(Vec<u8>, usize)>>,
) {
    while let Ok(mut buf) = empty.recv() {
        match read_full(&mut reader, &mut buf) {
            Ok(0) => return,
            Ok(len) => {
                if full.send(Ok((buf, len))).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = full.send(Err(e));
                return;
            }
        }
    }
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_sink_ends_the_reader_instead_of_hanging() {
        let data = vec![7u8; 64 << 20];
        let mut h = Hasher::new(None);
        let full = io::Error::new(io::ErrorKind::StorageFull, "No space left on device");
        let got = pump(
            &data[..],
            &mut h,
            |_| Err(io::Error::new(full.kind(), "full")),
            &Counter::default(),
        );
        assert_eq!(got.unwrap_err().kind(), io::ErrorKind::StorageFull);
    }

    #[test]
    fn known_vectors_in_one_pass() {
        let mut h = Hasher::new(Some(Algorithm::Sha512));
        let data = b"abc".repeat(3_000_000);
        let mut copied = Vec::new();
        pump(
            &data[..],
            &mut h,
            |b| {
                copied.extend_from_slice(b);
                Ok(())
            },
            &Counter::default(),
        )
        .unwrap();
        assert_eq!(copied, data);
        let d = h.finish();
        assert_eq!(d.bytes, 9_000_000);
        assert_eq!(d.sha256, hex(&Sha256::digest(&data)));
        assert_eq!(
            d.get(Algorithm::Sha512).unwrap(),
            hex(&sha2::Sha512::digest(&data))
        );
        let mut md5 = Hasher::new(Some(Algorithm::Md5));
        md5.update(b"abc");
        let d = md5.finish();
        assert_eq!(
            d.get(Algorithm::Md5),
            Some("900150983cd24fb0d6963f7d28e17f72")
        );
        assert_eq!(d.get(Algorithm::Sha1), None);
    }
}
