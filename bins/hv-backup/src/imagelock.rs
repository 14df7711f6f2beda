//! A raw image kept from being written while a stopped VM's backup reads
//! it. QEMU locks the images it opens with byte-range locks on the image
//! file (its "perm" bytes at 100 + n and "shared" bytes at 200 + n, n the
//! permission's bit: 1 for write). A qcow2 image that qemu-nbd serves
//! read-only is locked against writers by qemu-nbd itself; a raw one is
//! not (the raw driver shares whatever its user shares, and an NBD export
//! shares writing), so without this the VM could start, and write, in the
//! middle of its own backup. The lock taken here is the one a QEMU that
//! does not share writing takes: starting the VM fails with QEMU's own
//! `Failed to get "write" lock` until the backup has read the image.

use crate::ffi;
use hv_common::{Code, Error, Result};
use std::fs::File;
use std::path::Path;

/// QEMU's byte for "holds the write permission".
const WRITE_HELD: i64 = 100 + 1;
/// QEMU's byte for "does not share the write permission".
const WRITE_UNSHARED: i64 = 200 + 1;

/// The lock, held until dropped.
pub struct RawLock {
    _file: File,
}

impl RawLock {
    /// Locks the raw image at `path` against writers, or fails if a
    /// process (a running QEMU) holds it for writing now.
    pub fn hold(path: &Path) -> Result<RawLock> {
        let shown = path.display();
        let file = File::open(path).map_err(|e| Error::io(format!("cannot open {shown}"), e))?;
        let err = |e| Error::io(format!("cannot lock {shown}"), e);
        // Locked first, then checked, as QEMU does: a writer that comes
        // between sees this lock.
        ffi::ofd_share_lock(&file, WRITE_UNSHARED).map_err(err)?;
        if ffi::ofd_byte_held(&file, WRITE_HELD).map_err(err)? {
            return Err(Error::new(
                Code::InvalidState,
                format!("{shown} is open for writing by another process (a QEMU running with it?); back it up when nothing writes it"),
            ));
        }
        Ok(RawLock { _file: file })
    }
}
