//! A clone's disk as a full copy, the fastest faithful way the filesystem
//! allows: a reflink (instant, blocks shared until written) where it can,
//! else a sparse copy that copies, inside the kernel, only where the source
//! holds data, so a 100 GiB image holding 2 GiB costs 2 GiB. (Reading
//! every block through this process to find zeros cost more CPU than
//! qemu-img's whole copy; a qcow2 image stores no unwritten cluster anyway.)
//! An image whose content lives partly elsewhere (a backing chain) or
//! holds internal snapshots is converted by qemu-img instead: a byte copy
//! would share the backing file or carry snapshots libvirt does not know.

use crate::ffi;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// How a disk was copied, as the record says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum How {
    /// Blocks shared with the source until either is written.
    Reflink,
    /// Data copied, holes and zero blocks left as holes.
    Sparse,
    /// Converted by qemu-img into one standalone image.
    Flattened,
    /// A qcow2 overlay whose backing file is the source's disk (--linked).
    Linked,
    /// On another host: copied there by its libvirt (a new volume from the
    /// source's, qemu-img on that host; a qcow2 with a backing file or
    /// snapshots comes out standalone).
    Volume,
}

/// What a qcow2 header says that matters for copying it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Qcow2 {
    pub backing: bool,
    pub snapshots: u32,
}

/// The header of a qcow2 image, or `None` for any other file.
pub fn qcow2_header(file: &File) -> io::Result<Option<Qcow2>> {
    let mut h = [0u8; 64];
    match file.read_exact_at(&mut h, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    if &h[..4] != b"QFI\xfb" {
        return Ok(None);
    }
    let backing_offset = u64::from_be_bytes(h[8..16].try_into().expect("8 bytes"));
    let snapshots = u32::from_be_bytes(h[60..64].try_into().expect("4 bytes"));
    Ok(Some(Qcow2 {
        backing: backing_offset != 0,
        snapshots,
    }))
}

/// Copies all of `src` into `dst` (new and empty): a reflink if the
/// filesystem can, else sparsely.
pub fn copy(src: &File, dst: &File) -> io::Result<How> {
    if ffi::reflink(src, dst).is_ok() {
        return Ok(How::Reflink);
    }
    sparse(src, dst)?;
    Ok(How::Sparse)
}

/// How much one copy_file_range call is asked to copy.
const STEP: usize = 64 << 20;

/// Copies where `src` holds data, inside the kernel; holes stay holes
/// (the destination is sized first, so they read as zeros). A filesystem
/// or kernel without copy_file_range between these files falls back to
/// reading and writing.
fn sparse(src: &File, dst: &File) -> io::Result<()> {
    let len = src.metadata()?.len();
    dst.set_len(len)?;
    let mut pos = 0;
    while pos < len {
        let Some(data) = ffi::next_data(src, pos)? else {
            break;
        };
        let end = ffi::next_hole(src, data)?.min(len);
        copy_segment(src, dst, data, end)?;
        pos = end.max(data + 1);
    }
    Ok(())
}

fn copy_segment(src: &File, dst: &File, start: u64, end: u64) -> io::Result<()> {
    let mut off = start;
    while off < end {
        let want = STEP.min((end - off) as usize);
        match ffi::copy_range(src, dst, off, want) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the source image shrank while it was copied",
                ))
            }
            Ok(n) => off += n as u64,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EXDEV | libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL)
                ) =>
            {
                return copy_by_hand(src, dst, off, end);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn copy_by_hand(src: &File, dst: &File, start: u64, end: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 4 << 20];
    let mut off = start;
    while off < end {
        let n = buf.len().min((end - off) as usize);
        src.read_exact_at(&mut buf[..n], off)?;
        dst.write_all_at(&buf[..n], off)?;
        off += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_sparse_copy_is_identical_and_keeps_holes_as_holes() {
        let dir = std::env::temp_dir().join(format!("hv-clone-copy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src_path = dir.join("src");
        let mut src = File::create(&src_path).unwrap();
        src.write_all(&[1u8; 100_000]).unwrap();
        src.write_all_at(b"tail", (32 << 20) + 3).unwrap();
        let src = File::open(&src_path).unwrap();
        let dst_path = dir.join("dst");
        let dst = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&dst_path)
            .unwrap();
        sparse(&src, &dst).unwrap();
        assert_eq!(
            std::fs::read(&src_path).unwrap(),
            std::fs::read(&dst_path).unwrap()
        );
        use std::os::unix::fs::MetadataExt;
        let blocks = std::fs::metadata(&dst_path).unwrap().blocks() * 512;
        assert!(
            blocks < 1 << 20,
            "holes and zero blocks stay holes: {blocks} bytes allocated"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn qcow2_headers_tell_backing_files_and_snapshots() {
        let dir = std::env::temp_dir().join(format!("hv-clone-q-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[15] = 0x70;
        h[63] = 2;
        std::fs::write(dir.join("q"), &h).unwrap();
        let q = qcow2_header(&File::open(dir.join("q")).unwrap()).unwrap();
        assert_eq!(
            q,
            Some(Qcow2 {
                backing: true,
                snapshots: 2
            })
        );
        std::fs::write(dir.join("r"), b"raw").unwrap();
        assert_eq!(
            qcow2_header(&File::open(dir.join("r")).unwrap()).unwrap(),
            None
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
