//! The libvirt calls hv needs that the `virt` crate does not wrap:
//! bulk domain statistics (its `DomainStatsRecord` is an opaque pointer),
//! checkpoints and backup jobs; statvfs(3) and the terminal's width. This is the only module with `unsafe`; each block
//! follows the ownership rules stated in libvirt's API docs.
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
        .map(|d| unsafe { d.borrow().as_ptr() })
        .collect();
    ptrs.push(std::ptr::null_mut()); // libvirt wants a NULL-terminated array
    let mut records: *mut sys::virDomainStatsRecordPtr = std::ptr::null_mut();
    // SAFETY: `ptrs` outlives the call and is NULL-terminated; on success libvirt
    // allocates `records`, which we free with virDomainStatsRecordListFree.
    let n = unsafe { sys::virDomainListGetStats(ptrs.as_mut_ptr(), stats, &mut records, flags) };
    if n < 0 {
        return Err(VirtError::last_error());
    }
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        // SAFETY: libvirt returned `n` valid record pointers.
        out.push(unsafe { read_record(*records.add(i)) });
    }
    // SAFETY: frees the list and the records libvirt allocated above.
    unsafe { sys::virDomainStatsRecordListFree(records) };
    Ok(out)
}

unsafe fn read_record(rec: sys::virDomainStatsRecordPtr) -> Stats {
    let mut buf = [0 as std::os::raw::c_char; sys::VIR_UUID_STRING_BUFLEN as usize];
    let uuid = if sys::virDomainGetUUIDString((*rec).dom, buf.as_mut_ptr()) == 0 {
        CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()
    } else {
        String::new()
    };
    // The name is cached in the domain object: no round trip.
    let name_ptr = sys::virDomainGetName((*rec).dom);
    let name = if name_ptr.is_null() {
        String::new()
    } else {
        CStr::from_ptr(name_ptr).to_string_lossy().into_owned()
    };
    let mut params = HashMap::with_capacity((*rec).nparams as usize);
    for j in 0..(*rec).nparams as usize {
        let p = &*(*rec).params.add(j);
        let field = CStr::from_ptr(p.field.as_ptr())
            .to_string_lossy()
            .into_owned();
        let value = match p.type_ as u32 {
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
        };
        params.insert(field, value);
    }
    Stats { name, uuid, params }
}

/// How many checkpoints a domain has (virDomainListAllCheckpoints with a
/// NULL list returns just the count).
pub fn checkpoint_count(domain: &Domain) -> Result<u32, VirtError> {
    // SAFETY: a NULL output array asks libvirt for the count only; nothing is allocated.
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
    // SAFETY: both out-pointers are valid for the call.
    let rc = unsafe { sys::virDomainGetState(domain.as_ptr(), &mut state, &mut reason, 0) };
    if rc < 0 {
        return Err(VirtError::last_error());
    }
    Ok((state as u32, reason as u32))
}

/// Disks QEMU stopped on an I/O error (virDomainGetDiskErrors): the
/// target and `no_space` or `unspecified`. Only a running domain has any.
pub fn disk_errors(domain: &Domain) -> Result<Vec<(String, &'static str)>, VirtError> {
    let mut buf: Vec<sys::virDomainDiskError> = Vec::with_capacity(64);
    // SAFETY: the buffer holds 64 entries; libvirt fills at most that many
    // and allocates each `disk` string, which is freed below.
    let n = unsafe { sys::virDomainGetDiskErrors(domain.as_ptr(), buf.as_mut_ptr(), 64, 0) };
    if n < 0 {
        return Err(VirtError::last_error());
    }
    // SAFETY: libvirt initialised the first n entries.
    unsafe { buf.set_len(n as usize) };
    let mut errors = Vec::with_capacity(buf.len());
    for e in buf {
        // SAFETY: `disk` is a NUL-terminated string libvirt allocated for us.
        let disk = unsafe { std::ffi::CStr::from_ptr(e.disk) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: the caller frees `disk` (libvirt's documentation); once.
        unsafe { libc::free(e.disk.cast()) };
        let kind = match e.error as u32 {
            sys::VIR_DOMAIN_DISK_ERROR_NO_SPACE => "no_space",
            sys::VIR_DOMAIN_DISK_ERROR_NONE => continue,
            _ => "unspecified",
        };
        errors.push((disk, kind));
    }
    Ok(errors)
}

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
    // SAFETY: both strings outlive the call; a NULL checkpoint XML is allowed.
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
    // SAFETY: `xml` outlives the call; the returned reference is freed at once.
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
    // SAFETY: on success libvirt allocates `list` with `n` checkpoint
    // references; each is freed below, then the array itself.
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
    // SAFETY: `cname` outlives the call; a non-NULL result is a reference we free.
    let cp = unsafe { sys::virDomainCheckpointLookupByName(domain.as_ptr(), cname.as_ptr(), 0) };
    if cp.is_null() {
        return Err(VirtError::last_error());
    }
    let out = f(cp);
    // SAFETY: `cp` came from the lookup above and is not used afterwards.
    unsafe { sys::virDomainCheckpointFree(cp) };
    out
}

/// A checkpoint's XML without the domain copy.
pub fn checkpoint_xml(domain: &Domain, name: &str) -> Result<String, VirtError> {
    with_checkpoint(domain, name, |cp| {
        // SAFETY: on success libvirt returns a malloc'd C string that we copy and free.
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
        // SAFETY: plain call on a valid checkpoint pointer.
        if unsafe { sys::virDomainCheckpointDelete(cp, flags) } < 0 {
            return Err(VirtError::last_error());
        }
        Ok(())
    })
}

/// The XML of the domain's running backup job, or an error when there is none.
pub fn backup_xml(domain: &Domain) -> Result<String, VirtError> {
    // SAFETY: on success libvirt returns a malloc'd C string that we copy and free.
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

/// Ends the domain's current job; for a pull-mode backup this is how it ends.
pub fn abort_job(domain: &Domain) -> Result<(), VirtError> {
    // SAFETY: plain call on a valid domain pointer.
    if unsafe { sys::virDomainAbortJob(domain.as_ptr()) } < 0 {
        return Err(VirtError::last_error());
    }
    Ok(())
}

/// The host's memory counters in KiB (`total`, `free`, `buffers`,
/// `cached`), as virNodeGetMemoryStats reports them for all NUMA cells.
pub fn node_memory_stats(conn: &Connect) -> Result<HashMap<String, u64>, VirtError> {
    let cells = sys::VIR_NODE_MEMORY_STATS_ALL_CELLS;
    let mut n: std::os::raw::c_int = 0;
    // SAFETY: a NULL array with nparams 0 asks libvirt only for the count.
    if unsafe { sys::virNodeGetMemoryStats(conn.as_ptr(), cells, std::ptr::null_mut(), &mut n, 0) }
        < 0
    {
        return Err(VirtError::last_error());
    }
    // SAFETY: the zeroed struct is a valid empty name and value.
    let mut params: Vec<sys::_virNodeMemoryStats> =
        (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
    // SAFETY: `params` has room for `n` entries, and libvirt writes at most `n`.
    if unsafe { sys::virNodeGetMemoryStats(conn.as_ptr(), cells, params.as_mut_ptr(), &mut n, 0) }
        < 0
    {
        return Err(VirtError::last_error());
    }
    Ok(params
        .iter()
        .take(n.max(0) as usize)
        .map(|p| {
            // SAFETY: libvirt NUL-terminates `field` within its 80 bytes.
            let name = unsafe { CStr::from_ptr(p.field.as_ptr()) };
            (name.to_string_lossy().into_owned(), p.value)
        })
        .collect())
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
    // SAFETY: statvfs only writes into the zeroed struct we own.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let unit = st.f_frsize as u64;
    Ok(FsSpace {
        size_bytes: st.f_blocks as u64 * unit,
        available_bytes: st.f_bavail as u64 * unit,
    })
}

extern "C" {
    #[link_name = "free"]
    fn libc_free(ptr: *mut std::ffi::c_void);
}

/// The user this process acts as, to tell its own files from others'.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
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
    // SAFETY: TIOCGWINSZ writes one winsize into the struct we own; the
    // descriptor is borrowed, so it stays open for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_col > 0).then_some(usize::from(size.ws_col))
}
