//! How hv-snap words a libvirt failure. Taking, reverting and deleting a
//! snapshot are one polkit permission (`domain.snapshot`), so a refusal of
//! any of them names it and the admin knows which rule to grant; the other
//! calls (reading XML, listing) only say what was being done.

use hv_common::Error;

/// A libvirt error from a call that needs no permission beyond reading.
pub fn libvirt(what: &'static str) -> impl Fn(virt::error::Error) -> Error {
    move |e| Error::libvirt(what, &e)
}

/// A libvirt error from taking, reverting or deleting a snapshot.
pub fn needing_snapshot(what: &'static str) -> impl Fn(virt::error::Error) -> Error {
    move |e| Error::libvirt_needing(what, &e, &["domain.snapshot"])
}
