//! The one libvirt call hv-preflight makes that the `virt` crate does not
//! wrap: virConnectCompareHypervisorCPU, which compares a guest's CPU with
//! what a host's hypervisor (not its bare CPU) can give, the comparison
//! libvirt itself makes before a migration. Only the ffi modules allow
//! `unsafe`; the block says why it is sound.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::ptr;
use virt::connect::Connect;
use virt::error::Error as VirtError;
use virt::sys;

/// Whether the hypervisor can give the guest its CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuFit {
    /// Identical, or a superset.
    Fits,
    Lacks,
}

pub fn compare_hypervisor_cpu(
    conn: &Connect,
    arch: Option<&str>,
    machine: Option<&str>,
    virttype: Option<&str>,
    cpu_xml: &str,
) -> Result<CpuFit, VirtError> {
    // A NUL inside libvirt's own XML or names cannot happen; say so if it does.
    let nul = |_| VirtError::last_error();
    let c = |s: Option<&str>| s.map(CString::new).transpose().map_err(nul);
    let (arch, machine, virttype) = (c(arch)?, c(machine)?, c(virttype)?);
    let xml = CString::new(cpu_xml).map_err(nul)?;
    let p = |s: &Option<CString>| s.as_ref().map_or(ptr::null(), |s| s.as_ptr());
    // SAFETY: `conn` is borrowed for the call, so its pointer stays valid;
    // the strings are NUL-terminated CStrings that outlive the call (or
    // null, which libvirt takes as "the default" for emulator, arch,
    // machine and virttype); libvirt keeps none of them.
    let result = unsafe {
        sys::virConnectCompareHypervisorCPU(
            conn.as_ptr(),
            ptr::null(),
            p(&arch),
            p(&machine),
            p(&virttype),
            xml.as_ptr(),
            0,
        )
    };
    match result {
        sys::VIR_CPU_COMPARE_IDENTICAL | sys::VIR_CPU_COMPARE_SUPERSET => Ok(CpuFit::Fits),
        sys::VIR_CPU_COMPARE_INCOMPATIBLE => Ok(CpuFit::Lacks),
        _ => Err(VirtError::last_error()),
    }
}
