//! The libvirt calls only hv-backup makes and the `virt` crate does not
//! wrap: checkpoints (list, look up, read, redefine, delete) and pull-mode
//! backup jobs (begin, read); and geteuid(2) and open file description
//! locks (QEMU's image locks), which the standard library does not offer. Calls two or more commands need are in
//! hv-common's `ffi`. Only the ffi modules allow `unsafe`; each block says
//! why it is sound by libvirt's documented ownership rules.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use virt::domain::Domain;
use virt::error::Error as VirtError;
use virt::sys;

/// Starts a backup job (virDomainBackupBegin); with `checkpoint_xml`, the
/// checkpoint is created at the job's point in time, atomically with it.
pub fn backup_begin(
    domain: &Domain,
    backup_xml: &str,
    checkpoint_xml: Option<&str>,
) -> Result<(), VirtError> {
    // An interior NUL cannot occur in XML hv builds; libvirt rejects the empty string.
    let xml = CString::new(backup_xml).unwrap_or_default();
    let checkpoint = checkpoint_xml.map(|c| CString::new(c).unwrap_or_default());
    let checkpoint_ptr = checkpoint.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: `domain` is borrowed for the call, so its pointer stays valid;
    // `xml` and `checkpoint` are NUL-terminated, outlive the call and are
    // only read during it; a NULL checkpoint XML is allowed.
    let rc = unsafe { sys::virDomainBackupBegin(domain.as_ptr(), xml.as_ptr(), checkpoint_ptr, 0) };
    if rc < 0 {
        return Err(VirtError::last_error());
    }
    Ok(())
}

/// Tells libvirt about a checkpoint whose bitmaps already exist (libvirt
/// creates checkpoints only on running domains; hv adds a stopped domain's
/// bitmaps itself).
pub fn redefine_checkpoint(domain: &Domain, checkpoint_xml: &str) -> Result<(), VirtError> {
    let xml = CString::new(checkpoint_xml).unwrap_or_default();
    let flags = sys::VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE;
    // SAFETY: `domain` is borrowed and `xml` NUL-terminated, both for the
    // whole block; a non-NULL result is a new checkpoint reference that we
    // own, freed at once and never used again.
    unsafe {
        let cp = sys::virDomainCheckpointCreateXML(domain.as_ptr(), xml.as_ptr(), flags);
        if cp.is_null() {
            return Err(VirtError::last_error());
        }
        sys::virDomainCheckpointFree(cp);
    }
    Ok(())
}

/// The names of the domain's checkpoints.
pub fn checkpoint_names(domain: &Domain) -> Result<Vec<String>, VirtError> {
    let mut list: *mut sys::virDomainCheckpointPtr = std::ptr::null_mut();
    // SAFETY: `domain` is borrowed for the block. On success libvirt
    // allocates `list` with `n` checkpoint references that we own: `i < n`
    // keeps each read inside it; a name belongs to its checkpoint, so it is
    // copied before that checkpoint is freed, and each reference is freed
    // once; then the array itself, with free(3) as libvirt's docs require.
    unsafe {
        let n = sys::virDomainListAllCheckpoints(domain.as_ptr(), &mut list, 0);
        if n < 0 {
            return Err(VirtError::last_error());
        }
        let mut names = Vec::with_capacity(n as usize);
        for i in 0..n as usize {
            let cp = *list.add(i);
            let name = sys::virDomainCheckpointGetName(cp);
            if !name.is_null() {
                names.push(CStr::from_ptr(name).to_string_lossy().into_owned());
            }
            sys::virDomainCheckpointFree(cp);
        }
        libc_free(list as *mut std::ffi::c_void);
        Ok(names)
    }
}

/// Runs `f` on the named checkpoint, freeing it afterwards.
fn with_checkpoint<T>(
    domain: &Domain,
    name: &str,
    f: impl FnOnce(sys::virDomainCheckpointPtr) -> Result<T, VirtError>,
) -> Result<T, VirtError> {
    let cname = CString::new(name).unwrap_or_default();
    // SAFETY: `domain` is borrowed for the call and `cname` is NUL-terminated
    // and outlives it; a non-NULL result is a reference we own and free below.
    let cp = unsafe { sys::virDomainCheckpointLookupByName(domain.as_ptr(), cname.as_ptr(), 0) };
    if cp.is_null() {
        return Err(VirtError::last_error());
    }
    let out = f(cp);
    // SAFETY: `cp` came from the lookup above, is freed once, and `f`, which
    // borrowed it, has returned; it is not used afterwards.
    unsafe { sys::virDomainCheckpointFree(cp) };
    out
}

/// A checkpoint's XML without the domain copy.
pub fn checkpoint_xml(domain: &Domain, name: &str) -> Result<String, VirtError> {
    with_checkpoint(domain, name, |cp| {
        // SAFETY: `cp` is the live reference with_checkpoint looked up and
        // frees only after this closure returns. On success libvirt returns
        // a NUL-terminated string allocated for the caller, which we copy
        // and then free once with free(3).
        unsafe {
            let ptr =
                sys::virDomainCheckpointGetXMLDesc(cp, sys::VIR_DOMAIN_CHECKPOINT_XML_NO_DOMAIN);
            if ptr.is_null() {
                return Err(VirtError::last_error());
            }
            let s = CStr::from_ptr(ptr).to_string_lossy().into_owned();
            libc_free(ptr as *mut std::ffi::c_void);
            Ok(s)
        }
    })
}

/// Deletes a checkpoint and its bitmaps; libvirt merges what it tracked
/// into its parent, so older checkpoints stay correct. libvirt deletes the
/// bitmaps of a running domain only: for a stopped one the caller removes
/// them and passes `metadata_only`.
pub fn delete_checkpoint(
    domain: &Domain,
    name: &str,
    metadata_only: bool,
) -> Result<(), VirtError> {
    let flags = if metadata_only {
        sys::VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY
    } else {
        0
    };
    with_checkpoint(domain, name, |cp| {
        // SAFETY: `cp` is the live reference with_checkpoint looked up and
        // frees only after this closure returns; deleting the checkpoint
        // does not free our reference to it.
        if unsafe { sys::virDomainCheckpointDelete(cp, flags) } < 0 {
            return Err(VirtError::last_error());
        }
        Ok(())
    })
}

/// The XML of the domain's running backup job, or an error when there is none.
pub fn backup_xml(domain: &Domain) -> Result<String, VirtError> {
    // SAFETY: `domain` is borrowed for the block. On success libvirt returns
    // a NUL-terminated string allocated for the caller, which we copy and
    // then free once with free(3).
    unsafe {
        let ptr = sys::virDomainBackupGetXMLDesc(domain.as_ptr(), 0);
        if ptr.is_null() {
            return Err(VirtError::last_error());
        }
        let s = CStr::from_ptr(ptr).to_string_lossy().into_owned();
        libc_free(ptr as *mut std::ffi::c_void);
        Ok(s)
    }
}

extern "C" {
    #[link_name = "free"]
    fn libc_free(ptr: *mut std::ffi::c_void);
}

/// The user this process acts as, to tell its own files from others'.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) takes no arguments, cannot fail and touches no
    // memory of ours.
    unsafe { libc::geteuid() }
}

/// glibc gives every allocation of 128 KiB or more its own mapping, and
/// unmaps it when freed: each 4 MiB chunk buffer, zstd output and age
/// output then costs a thousand page faults and their clearing. Backups
/// allocate such buffers at disk speed; kept in the heap they are used
/// again. (qemu-nbd gets the same through GLIBC_TUNABLES, source.rs.)
pub fn keep_big_buffers() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters; called before any
    // thread of hv's runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

/// An open file description lock on byte `byte` of `file` (fcntl(2)
/// F_OFD_SETLK), shared: the kind QEMU takes on its images. Held until
/// every descriptor of this open file is closed.
pub fn ofd_share_lock(file: &std::fs::File, byte: i64) -> std::io::Result<()> {
    ofd(file, byte, libc::F_OFD_SETLK, libc::F_RDLCK).map(|_| ())
}

/// Whether another open file holds a lock on byte `byte` of `file` that
/// an exclusive lock would conflict with (F_OFD_GETLK).
pub fn ofd_byte_held(file: &std::fs::File, byte: i64) -> std::io::Result<bool> {
    ofd(file, byte, libc::F_OFD_GETLK, libc::F_WRLCK).map(|t| t != libc::F_UNLCK)
}

fn ofd(
    file: &std::fs::File,
    byte: i64,
    cmd: libc::c_int,
    kind: libc::c_int,
) -> std::io::Result<libc::c_int> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock is plain old data; all-zero is a valid value (l_pid
    // must be 0 for OFD locks), and the fields that matter are set below.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = byte;
    lock.l_len = 1;
    // SAFETY: the descriptor is borrowed from a live File for the call,
    // and `lock` is a valid flock that fcntl reads and (GETLK) writes.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut lock) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(lock.l_type as libc::c_int)
}
