//! A stopped VM's image read from its file where qemu-img says the data
//! lies, rather than through qemu-nbd: on a mostly-text disk, qemu-nbd's
//! copies (file to its buffer, to the socket, to hv) cost about as much
//! CPU as hashing the image, and the backup ran behind a plain
//! `zstd | age` of the same data (docs/testing.md, hv-backup against
//! zstd | age, restic, borg and virtnbdbackup).
//!
//! qemu-nbd still serves the image meanwhile: it holds QEMU's lock on it,
//! so the VM cannot start and write while it is read, it answers which
//! regions are holes, and every region this map cannot place (compressed
//! clusters, a backing file, an encrypted or external data file) is read
//! through it as before. The map is taken under that lock, so it stays
//! true for the whole read.

use serde::Deserialize;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Where each guest range of an image lies in its file.
pub struct Mapped {
    file: File,
    /// Sorted, non-overlapping guest ranges whose data is in `file` at
    /// `host` (only those: the rest is read through qemu-nbd).
    runs: Vec<Run>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    start: u64,
    length: u64,
    host: u64,
}

/// One entry of `qemu-img map --output=json`.
#[derive(Deserialize)]
struct Entry {
    start: u64,
    length: u64,
    depth: u64,
    data: bool,
    #[serde(default)]
    compressed: bool,
    offset: Option<u64>,
}

/// What `qemu-img info --output=json` says that matters here.
#[derive(Deserialize)]
struct Info {
    format: String,
    #[serde(default)]
    encrypted: bool,
    #[serde(rename = "format-specific")]
    specific: Option<serde_json::Value>,
}

impl Mapped {
    /// The map of the image at `path` (format `format`), or `None` when it
    /// cannot be read directly (then everything goes through qemu-nbd).
    /// Called while qemu-nbd holds the image.
    pub fn of(path: &Path, format: &str) -> Option<Mapped> {
        if !matches!(format, "raw" | "qcow2") {
            return None;
        }
        let info: Info = serde_json::from_slice(&qemu_img(&["info"], path, format)?).ok()?;
        // An encrypted image's clusters are ciphertext; a qcow2 with an
        // external data file keeps its data in another file.
        let external = info
            .specific
            .as_ref()
            .and_then(|s| s.pointer("/data/data-file"))
            .is_some();
        if info.format != format || info.encrypted || external {
            return None;
        }
        let entries: Vec<Entry> =
            serde_json::from_slice(&qemu_img(&["map"], path, format)?).ok()?;
        let file = File::open(path).ok()?;
        Some(Mapped {
            file,
            runs: runs(entries),
        })
    }

    /// Reads guest range `[offset, offset + buf.len())` from the file when
    /// the map places all of it; `false` when it does not (read it through
    /// qemu-nbd instead).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<bool> {
        let end = offset + buf.len() as u64;
        let first = self.runs.partition_point(|r| r.start + r.length <= offset);
        let mut at = offset;
        let mut pieces = Vec::new();
        for r in &self.runs[first..] {
            if at >= end {
                break;
            }
            if r.start > at {
                return Ok(false); // a gap the map does not place
            }
            let upto = (r.start + r.length).min(end);
            pieces.push((at, r.host + (at - r.start), upto - at));
            at = upto;
        }
        if at < end {
            return Ok(false);
        }
        for (guest, host, len) in pieces {
            let from = (guest - offset) as usize;
            self.file
                .read_exact_at(&mut buf[from..from + len as usize], host)?;
        }
        Ok(true)
    }
}

/// The largest map read: a badly fragmented image of terabytes lists
/// millions of extents, and is then read through qemu-nbd instead.
const MAX_MAP: u64 = 64 << 20;

/// `qemu-img SUBCOMMAND --output=json -f FORMAT PATH`'s output, if it ran
/// and said at most [`MAX_MAP`] bytes.
fn qemu_img(sub: &[&str], path: &Path, format: &str) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut child = hv_common::cli::child_command("qemu-img")
        .args(sub)
        .args(["--output=json", "-f", format])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let mut out = Vec::new();
    let read = child
        .stdout
        .take()
        .map(|o| o.take(MAX_MAP + 1).read_to_end(&mut out));
    if out.len() as u64 > MAX_MAP {
        let _ = child.kill();
    }
    let status = child.wait().ok()?;
    let whole = matches!(read, Some(Ok(_))) && out.len() as u64 <= MAX_MAP;
    (whole && status.success()).then_some(out)
}

/// The entries whose data is in the image's own file, uncompressed, at a
/// known offset; neighbours that continue each other are merged.
fn runs(entries: Vec<Entry>) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for e in entries {
        let Some(host) = e.offset else { continue };
        if e.depth != 0 || !e.data || e.compressed || e.length == 0 {
            continue;
        }
        match runs.last_mut() {
            Some(last)
                if last.start + last.length == e.start && last.host + last.length == host =>
            {
                last.length += e.length;
            }
            _ => runs.push(Run {
                start: e.start,
                length: e.length,
                host,
            }),
        }
    }
    runs.sort_by_key(|r| r.start);
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(start: u64, length: u64, depth: u64, data: bool, offset: Option<u64>) -> Entry {
        Entry {
            start,
            length,
            depth,
            data,
            compressed: false,
            offset,
        }
    }

    #[test]
    fn only_data_in_the_images_own_file_is_placed() {
        let r = runs(vec![
            entry(0, 10, 0, true, Some(100)),
            entry(10, 10, 0, true, Some(110)), // continues the first
            entry(20, 10, 0, false, None),     // a hole
            entry(30, 10, 1, true, Some(0)),   // in the backing file
            entry(40, 10, 0, true, Some(500)),
            entry(50, 10, 0, true, None), // compressed, say
        ]);
        assert_eq!(
            r,
            [
                Run {
                    start: 0,
                    length: 20,
                    host: 100
                },
                Run {
                    start: 40,
                    length: 10,
                    host: 500
                }
            ]
        );
    }

    #[test]
    fn a_range_the_map_does_not_cover_whole_is_left_to_qemu_nbd() {
        let dir = std::env::temp_dir().join(format!("hv-mapped-{}", std::process::id()));
        std::fs::write(&dir, (0..=255u8).collect::<Vec<_>>()).unwrap();
        let m = Mapped {
            file: File::open(&dir).unwrap(),
            runs: vec![
                Run {
                    start: 0,
                    length: 8,
                    host: 100,
                },
                Run {
                    start: 8,
                    length: 8,
                    host: 10,
                },
                Run {
                    start: 32,
                    length: 8,
                    host: 0,
                },
            ],
        };
        let mut buf = [0u8; 12];
        assert!(m.read_at(4, &mut buf).unwrap());
        assert_eq!(buf, [104, 105, 106, 107, 10, 11, 12, 13, 14, 15, 16, 17]);
        assert!(!m.read_at(12, &mut buf).unwrap(), "16..24 is not placed");
        assert!(!m.read_at(36, &mut [0u8; 8]).unwrap(), "past the last run");
        let _ = std::fs::remove_file(&dir);
    }
}
