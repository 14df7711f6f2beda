//! The one libvirt call only hv-health makes and the `virt` crate does not
//! wrap: virDomainGetDiskErrors. Calls two or more commands need are in
//! hv-common's `ffi`. Only the ffi modules allow `unsafe`; each block says
//! why it is sound by libvirt's documented ownership rules.
#![allow(unsafe_code)]

use virt::domain::Domain;
use virt::error::Error as VirtError;
use virt::sys;

/// Disks QEMU stopped on an I/O error (virDomainGetDiskErrors): the
/// target and `no_space` or `unspecified`. Only a running domain has any.
pub fn disk_errors(domain: &Domain) -> Result<Vec<(String, &'static str)>, VirtError> {
    let mut buf: Vec<sys::virDomainDiskError> = Vec::with_capacity(64);
    // SAFETY: `domain` is borrowed for the call, so its pointer stays valid;
    // the buffer has capacity for 64 entries and libvirt writes at most
    // `maxerrors` = 64, allocating each `disk` string, which is freed below.
    let n = unsafe { sys::virDomainGetDiskErrors(domain.as_ptr(), buf.as_mut_ptr(), 64, 0) };
    if n < 0 {
        return Err(VirtError::last_error());
    }
    // SAFETY: libvirt initialised the first `n` entries, and `n` <= 64, the
    // capacity; the entries are plain C data, valid once written.
    unsafe { buf.set_len(n as usize) };
    let mut errors = Vec::with_capacity(buf.len());
    for e in buf {
        // SAFETY: `disk` is a NUL-terminated string libvirt allocated for us
        // and not yet freed: it is freed just below, after this copy.
        let disk = unsafe { std::ffi::CStr::from_ptr(e.disk) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: the caller frees `disk` with free(3) (libvirt's
        // documentation); each entry is visited once and `disk` is not used
        // afterwards.
        unsafe { libc_free(e.disk.cast()) };
        let kind = match e.error as u32 {
            sys::VIR_DOMAIN_DISK_ERROR_NO_SPACE => "no_space",
            sys::VIR_DOMAIN_DISK_ERROR_NONE => continue,
            _ => "unspecified",
        };
        errors.push((disk, kind));
    }
    Ok(errors)
}

// hv-health does not depend on the libc crate for this one call.
extern "C" {
    #[link_name = "free"]
    fn libc_free(ptr: *mut std::ffi::c_void);
}
