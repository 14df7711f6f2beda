//! Calls that two or more hv commands need and no safe crate offers: the
//! `virt` crate does not wrap bulk domain statistics (its
//! `DomainStatsRecord` is an opaque pointer), the checkpoint count, a raw
//! state reason, the host's memory counters or a network's DHCP leases, and the standard library
//! has no statvfs(3), terminal width or clock tick rate. Calls only one command makes live
//! in that command's own `ffi` module (hv-backup: checkpoints and backup
//! jobs; hv-health: disk errors). Only the ffi modules allow `unsafe`; each
//! block says why it is sound by libvirt's documented ownership rules.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::Error as VirtError;
use virt_sys as sys;

#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    Str(String),
}

impl Param {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Param::UInt(v) => Some(v),
            Param::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Param::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// One domain's statistics, keyed by libvirt's flat names (`state.state`,
/// `block.0.capacity`, …).
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub name: String,
    pub uuid: String,
    pub params: HashMap<String, Param>,
}

impl Stats {
    pub fn u64(&self, key: &str) -> Option<u64> {
        self.params.get(key).and_then(Param::as_u64)
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.params.get(key).and_then(Param::as_str)
    }
}

pub const STATS_STATE: u32 = sys::VIR_DOMAIN_STATS_STATE;
pub const STATS_CPU_TOTAL: u32 = sys::VIR_DOMAIN_STATS_CPU_TOTAL;
pub const STATS_BLOCK: u32 = sys::VIR_DOMAIN_STATS_BLOCK;
pub const STATS_BALLOON: u32 = sys::VIR_DOMAIN_STATS_BALLOON;
pub const STATS_VCPU: u32 = sys::VIR_DOMAIN_STATS_VCPU;
pub const STATS_INTERFACE: u32 = sys::VIR_DOMAIN_STATS_INTERFACE;
/// Skip a domain's live stats instead of waiting while another job holds it.
pub const STATS_NOWAIT: u32 = sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT;

/// Statistics for the given domains in one round trip (virDomainListGetStats).
/// Takes the domains by reference too: every reference libvirt's client
/// library counts up or down costs it a formatted debug message.
pub fn domain_stats<D: std::borrow::Borrow<Domain>>(
    domains: &[D],
    stats: u32,
    flags: u32,
) -> Result<Vec<Stats>, VirtError> {
    if domains.is_empty() {
        return Ok(Vec::new());
    }
    let mut ptrs: Vec<sys::virDomainPtr> = domains
        .iter()
        // SAFETY: the copies bypass the Domain's reference count, so they are
        // valid only while each Domain lives: `domains` stays borrowed until
        // this function returns, and libvirt takes its own reference for
        // every record it hands back.
        .map(|d| unsafe { d.borrow().as_ptr() })
        .collect();
    ptrs.push(std::ptr::null_mut()); // libvirt wants a NULL-terminated array
    let mut records: *mut sys::virDomainStatsRecordPtr = std::ptr::null_mut();
    // SAFETY: `ptrs` holds live domain pointers (see above), is
    // NULL-terminated and outlives the call; on success libvirt allocates
    // `records`, which is freed below with virDomainStatsRecordListFree.
    let n = unsafe { sys::virDomainListGetStats(ptrs.as_mut_ptr(), stats, &mut records, flags) };
    if n < 0 {
        return Err(VirtError::last_error());
    }
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        // SAFETY: on success `records` holds `n` record pointers, so `i < n`
        // stays inside it, and each record lives until the list is freed
        // after this loop; read_record copies what it reads.
        out.push(unsafe { read_record(*records.add(i)) });
    }
    // SAFETY: `records` came from virDomainListGetStats above and is freed
    // once, with the records and their domain references; nothing read from
    // it is kept, since read_record copied every string.
    unsafe { sys::virDomainStatsRecordListFree(records) };
    Ok(out)
}

/// Copies one record of virDomainListGetStats into owned values.
///
/// # Safety
///
/// `rec` must be one of the records a successful virDomainListGetStats
/// returned, and its list must not be freed before this returns: then
/// `dom` is a live domain reference and `params` holds `nparams`
/// initialised typed parameters, each tagged by `type_`.
unsafe fn read_record(rec: sys::virDomainStatsRecordPtr) -> Stats {
    // SAFETY: the caller guarantees `rec` points to a live record; it is only
    // read, and the borrow ends with this function, before the list is freed.
    let rec = unsafe { &*rec };
    let mut buf = [0 as std::os::raw::c_char; sys::VIR_UUID_STRING_BUFLEN as usize];
    // SAFETY: `rec.dom` is the record's own domain reference, and `buf` has
    // the VIR_UUID_STRING_BUFLEN bytes libvirt writes the UUID string into.
    let uuid = if unsafe { sys::virDomainGetUUIDString(rec.dom, buf.as_mut_ptr()) } == 0 {
        // SAFETY: on success libvirt wrote a NUL-terminated string into `buf`.
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    } else {
        String::new()
    };
    // The name is cached in the domain object: no round trip.
    // SAFETY: `rec.dom` is the record's live domain reference.
    let name_ptr = unsafe { sys::virDomainGetName(rec.dom) };
    let name = if name_ptr.is_null() {
        String::new()
    } else {
        // SAFETY: a non-NULL name is a NUL-terminated string owned by the
        // domain object, which the record keeps alive while it is copied;
        // it is not ours to free.
        unsafe { CStr::from_ptr(name_ptr) }
            .to_string_lossy()
            .into_owned()
    };
    let mut params = HashMap::with_capacity(rec.nparams as usize);
    for j in 0..rec.nparams as usize {
        // SAFETY: `params` points to `nparams` initialised entries and
        // `j < nparams`, so the offset and the read stay inside that array.
        let p = unsafe { &*rec.params.add(j) };
        // SAFETY: libvirt NUL-terminates `field` within its fixed-size array.
        let field = unsafe { CStr::from_ptr(p.field.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: `type_` names the member of the `value` union libvirt set,
        // and each arm reads only the member its tag names. A string member
        // is read only when non-NULL, is NUL-terminated, and belongs to the
        // record, which outlives this copy.
        let value = unsafe {
            match p.type_ as u32 {
                sys::VIR_TYPED_PARAM_INT => Param::Int(p.value.i as i64),
                sys::VIR_TYPED_PARAM_UINT => Param::UInt(p.value.ui as u64),
                sys::VIR_TYPED_PARAM_LLONG => Param::Int(p.value.l),
                sys::VIR_TYPED_PARAM_ULLONG => Param::UInt(p.value.ul),
                sys::VIR_TYPED_PARAM_DOUBLE => Param::Float(p.value.d),
                sys::VIR_TYPED_PARAM_BOOLEAN => Param::Bool(p.value.b != 0),
                sys::VIR_TYPED_PARAM_STRING if !p.value.s.is_null() => {
                    Param::Str(CStr::from_ptr(p.value.s).to_string_lossy().into_owned())
                }
                _ => continue,
            }
        };
        params.insert(field, value);
    }
    Stats { name, uuid, params }
}

/// How many checkpoints a domain has (virDomainListAllCheckpoints with a
/// NULL list returns just the count).
pub fn checkpoint_count(domain: &Domain) -> Result<u32, VirtError> {
    // SAFETY: `domain` is borrowed for the call, so its pointer stays valid;
    // a NULL output array asks libvirt for the count only and allocates nothing.
    let n = unsafe { sys::virDomainListAllCheckpoints(domain.as_ptr(), std::ptr::null_mut(), 0) };
    if n < 0 {
        return Err(VirtError::last_error());
    }
    Ok(n as u32)
}

/// (state, reason) as libvirt's raw enum values (virDomainGetState); the
/// `virt` crate's reason type has no raw form.
pub fn state(domain: &Domain) -> Result<(u32, u32), VirtError> {
    let (mut state, mut reason) = (0, 0);
    // SAFETY: `domain` is borrowed for the call, so its pointer stays valid;
    // both out-pointers are local integers libvirt only writes.
    let rc = unsafe { sys::virDomainGetState(domain.as_ptr(), &mut state, &mut reason, 0) };
    if rc < 0 {
        return Err(VirtError::last_error());
    }
    Ok((state as u32, reason as u32))
}

/// The host's memory counters in KiB (`total`, `free`, `buffers`,
/// `cached`), as virNodeGetMemoryStats reports them for all NUMA cells.
pub fn node_memory_stats(conn: &Connect) -> Result<HashMap<String, u64>, VirtError> {
    let cells = sys::VIR_NODE_MEMORY_STATS_ALL_CELLS;
    let mut n: std::os::raw::c_int = 0;
    // SAFETY: `conn` is borrowed for the call, so its pointer stays valid; a
    // NULL array with nparams 0 asks libvirt only for the count in `n`.
    if unsafe { sys::virNodeGetMemoryStats(conn.as_ptr(), cells, std::ptr::null_mut(), &mut n, 0) }
        < 0
    {
        return Err(VirtError::last_error());
    }
    let mut params: Vec<sys::_virNodeMemoryStats> = (0..n)
        // SAFETY: the struct is a byte array and an integer, for which all
        // zeroes is valid: an empty field name and a zero value.
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    // SAFETY: `conn` is still borrowed; `params` has room for `n` entries,
    // and libvirt writes at most `n` and stores how many it wrote in `n`.
    if unsafe { sys::virNodeGetMemoryStats(conn.as_ptr(), cells, params.as_mut_ptr(), &mut n, 0) }
        < 0
    {
        return Err(VirtError::last_error());
    }
    Ok(params
        .iter()
        .take(n.max(0) as usize)
        .map(|p| {
            // SAFETY: libvirt NUL-terminates `field` within its 80 bytes, and
            // entries it did not write stay all zero: an empty string.
            let name = unsafe { CStr::from_ptr(p.field.as_ptr()) };
            (name.to_string_lossy().into_owned(), p.value)
        })
        .collect())
}

/// A DHCP lease libvirt's dnsmasq handed out on a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub mac: String,
    pub ip: String,
    pub prefix: u32,
    pub hostname: Option<String>,
    /// When it expires, in Unix seconds.
    pub expires: i64,
}

/// A network's current DHCP leases (virNetworkGetDHCPLeases).
pub fn dhcp_leases(net: &virt::network::Network) -> Result<Vec<Lease>, VirtError> {
    let mut leases: *mut sys::virNetworkDHCPLeasePtr = std::ptr::null_mut();
    // SAFETY: `net` is a live network for the call (borrowed); a null MAC
    // asks for every lease; on success libvirt allocates an array of `n`
    // lease pointers, each freed below with virNetworkDHCPLeaseFree and
    // the array itself with libc's free, as libvirt documents.
    let n = unsafe { sys::virNetworkGetDHCPLeases(net.as_ptr(), std::ptr::null(), &mut leases, 0) };
    if n < 0 {
        return Err(VirtError::last_error());
    }
    let text = |p: *mut std::os::raw::c_char| -> Option<String> {
        // SAFETY: a lease's strings are NUL-terminated or null, and live
        // until the lease is freed, after this reads them.
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    };
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        // SAFETY: `leases` holds `n` valid lease pointers (above).
        let lease = unsafe { *leases.add(i) };
        // SAFETY: each pointer is a valid lease until freed just after.
        let l = unsafe { &*lease };
        out.push(Lease {
            mac: text(l.mac).unwrap_or_default(),
            ip: text(l.ipaddr).unwrap_or_default(),
            prefix: l.prefix,
            hostname: text(l.hostname),
            expires: l.expirytime,
        });
        // SAFETY: freed once, after its fields were copied out.
        unsafe { sys::virNetworkDHCPLeaseFree(lease) };
    }
    if !leases.is_null() {
        // SAFETY: the array libvirt allocated, freed once, its elements
        // already freed.
        unsafe { libc::free(leases.cast()) };
    }
    Ok(out)
}

/// The clock ticks per second /proc counts process times in (USER_HZ).
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant of the system; it has no
    // preconditions and touches no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).unwrap_or(0)
}

/// Space on the filesystem holding a path, as statvfs(3) reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsSpace {
    pub size_bytes: u64,
    /// What an unprivileged process may still write.
    pub available_bytes: u64,
}

pub fn fs_space(path: &std::path::Path) -> std::io::Result<FsSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `statvfs` is plain integers, for which all zeroes is valid.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is NUL-terminated and outlives the call; statvfs
    // writes only into `st`, which we own, and keeps no pointer to either.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let unit = st.f_frsize as u64;
    Ok(FsSpace {
        size_bytes: st.f_blocks as u64 * unit,
        available_bytes: st.f_bavail as u64 * unit,
    })
}

/// The width in columns of the terminal on `fd`, if it is one.
pub fn terminal_width(fd: std::os::fd::BorrowedFd<'_>) -> Option<usize> {
    use std::os::fd::AsRawFd;
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into `size`, which we own and
    // which has the layout the kernel expects; the descriptor is borrowed,
    // so it stays open for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

/// Ends the domain's current job: how a pull-mode backup ends (hv-backup),
/// and how a migration that must not go on is called off (hv-migrate).
/// The `virt` crate does not wrap virDomainAbortJob.
pub fn abort_job(domain: &Domain) -> Result<(), VirtError> {
    // SAFETY: `domain` is borrowed for the call, so its pointer stays valid;
    // nothing is passed or returned by pointer.
    if unsafe { sys::virDomainAbortJob(domain.as_ptr()) } < 0 {
        return Err(VirtError::last_error());
    }
    Ok(())
}
