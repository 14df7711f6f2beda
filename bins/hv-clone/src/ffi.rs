//! The file calls a fast, faithful disk copy needs and the standard
//! library does not offer: FICLONE (a reflink: the copy shares the
//! source's blocks until either is written, on btrfs, XFS and others),
//! lseek's SEEK_DATA/SEEK_HOLE (where a sparse image holds data, so its
//! holes are neither read nor written) and copy_file_range (the kernel
//! copies a range itself, with no pass through this process's memory). Only the ffi modules allow
//! `unsafe`; each block says why it is sound.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `_IOW(0x94, 9, int)` from linux/fs.h.
const FICLONE: libc::c_ulong = 0x4004_9409;

/// Makes `dst` share all of `src`'s blocks. Fails (EOPNOTSUPP, EXDEV,
/// EINVAL) where the filesystem cannot, and the caller copies instead.
pub fn reflink(src: &File, dst: &File) -> io::Result<()> {
    // SAFETY: both descriptors are open for the whole call (borrowed
    // Files); FICLONE takes the source descriptor as its integer argument
    // and touches no memory of ours.
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The next offset at or after `from` that holds data (`SEEK_DATA`), or
/// `None` past the last data.
pub fn next_data(file: &File, from: u64) -> io::Result<Option<u64>> {
    seek(file, from, libc::SEEK_DATA)
}

/// The next hole at or after `from` (`SEEK_HOLE`); the end of the file
/// counts as one.
pub fn next_hole(file: &File, from: u64) -> io::Result<u64> {
    Ok(seek(file, from, libc::SEEK_HOLE)?.unwrap_or(from))
}

fn seek(file: &File, from: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let from =
        libc::off_t::try_from(from).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: the descriptor is open for the call (a borrowed File);
    // lseek only moves its offset, which nothing else of ours relies on
    // (reads and writes use explicit offsets).
    let at = unsafe { libc::lseek(file.as_raw_fd(), from, whence) };
    if at >= 0 {
        return Ok(Some(at as u64));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENXIO) => Ok(None),
        _ => Err(err),
    }
}

/// Copies `len` bytes at `offset` of `src` to the same offset of `dst`
/// inside the kernel; the bytes copied, which may be fewer (then call
/// again for the rest), or 0 at the source's end.
pub fn copy_range(src: &File, dst: &File, offset: u64, len: usize) -> io::Result<usize> {
    let mut off_in =
        libc::loff_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut off_out = off_in;
    // SAFETY: both descriptors are open for the call (borrowed Files);
    // the two offsets are valid, exclusively borrowed locals the kernel
    // reads and advances, and it touches no other memory of ours.
    let n = unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            &mut off_in,
            dst.as_raw_fd(),
            &mut off_out,
            len,
            0,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
