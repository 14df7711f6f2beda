//! Planned VMs, VMs about to start and backups about to run draw on the
//! same memory, CPUs and filesystems. One ledger counts them together, so
//! the tenth VM fails its check when the nine before it took what was
//! there, as it would fail for real, instead of each passing alone. Space
//! is counted per filesystem, not per path: two directories on one disk
//! draw on the same free bytes.

use crate::checks::{Check, Status, Unit};
use crate::output::human_bytes;
use crate::{ffi, Code, Error, Result};
use std::collections::HashMap;
use std::path::Path;
use virt::connect::Connect;

/// Where what is left turns into a warning, in percent: --memory-warn (of
/// the host's memory still available) and --disk-warn (of a pool or
/// filesystem used).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub memory_warn: f64,
    pub disk_warn: f64,
}

pub struct Budget {
    /// Total and still available bytes (free + buffers + page cache).
    memory: Option<(u64, u64)>,
    memory_warn: f64,
    host_cpus: Option<u64>,
    vcpus_active: u64,
    /// By pool name or filesystem: what is left after the items so far.
    space: HashMap<String, u64>,
    disk_warn: f64,
}

/// The outcome for one item on one filesystem or pool.
pub struct Fit {
    pub status: Status,
    /// What was left before this item.
    pub left: u64,
}

impl Budget {
    pub fn new(conn: &Connect, limits: Limits) -> Budget {
        let memory = ffi::node_memory_stats(conn).ok().map(|s| {
            let kib = |k: &str| s.get(k).copied().unwrap_or(0);
            (
                kib("total") * 1024,
                (kib("free") + kib("buffers") + kib("cached")) * 1024,
            )
        });
        let host_cpus = conn.node_info().ok().map(|n| u64::from(n.cpus));
        let vcpus_active = conn
            .list_all_domains(virt::sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE)
            .unwrap_or_default()
            .iter()
            .filter_map(|d| d.info().ok())
            .map(|i| u64::from(i.nr_virt_cpu))
            .sum();
        Budget {
            memory,
            memory_warn: limits.memory_warn,
            host_cpus,
            vcpus_active,
            space: HashMap::new(),
            disk_warn: limits.disk_warn,
        }
    }

    /// Takes `need` bytes of host memory for `who`.
    pub fn memory(&mut self, id: &'static str, who: &str, need: u64) -> Check {
        let Some((total, left)) = self.memory else {
            return Check::new(id, Status::Warn, "libvirt did not report the host's memory")
                .hint("check libvirtd's log; hv-health reports host.memory too");
        };
        let after = left.saturating_sub(need);
        self.memory = Some((total, after));
        let floor = (total as f64 * self.memory_warn / 100.0) as u64;
        let (status, message) = if need > left {
            (
                Status::Fail,
                format!(
                    "{who} needs {} of memory; {} is available",
                    human_bytes(need),
                    human_bytes(left)
                ),
            )
        } else if after < floor {
            (
                Status::Warn,
                format!(
                    "{who} needs {}, which leaves the host {} ({}% is the floor)",
                    human_bytes(need),
                    human_bytes(after),
                    self.memory_warn
                ),
            )
        } else {
            (
                Status::Pass,
                format!(
                    "{who} needs {} of the {} available",
                    human_bytes(need),
                    human_bytes(left)
                ),
            )
        };
        Check::new(id, status, message)
            .measured(Unit::Bytes, need, left)
            .hint("stop or shrink other VMs (hv-ls --state running shows their memory), give this one less, or add memory to the host")
    }

    /// Adds `vcpus` to what runs on the host's CPUs.
    pub fn vcpus(&mut self, id: &'static str, who: &str, vcpus: u64) -> Check {
        let Some(cpus) = self.host_cpus else {
            return Check::new(id, Status::Warn, "libvirt did not report the host's CPUs")
                .hint("check libvirtd's log; virsh nodeinfo shows them");
        };
        self.vcpus_active += vcpus;
        let total = self.vcpus_active;
        if vcpus > cpus {
            return Check::new(id, Status::Fail, format!("{who} has {vcpus} vCPUs; the host has {cpus} CPUs"))
                .measured(Unit::Count, vcpus, cpus)
                .hint(format!("give it at most {cpus} vCPUs: more than the host has only adds scheduling overhead"));
        }
        let (status, message, hint) = if total > cpus {
            (
                Status::Warn,
                format!("with {who}, running VMs have {total} vCPUs on {cpus} host CPUs (overcommitted)"),
                "fine while the VMs are mostly idle; for busy ones give fewer vCPUs or stop others".to_owned(),
            )
        } else {
            (
                Status::Pass,
                format!("with {who}, running VMs have {total} vCPUs on {cpus} host CPUs"),
                String::new(),
            )
        };
        Check::new(id, status, message)
            .measured(Unit::Count, total, cpus)
            .hint(hint)
    }

    /// Takes `need` bytes from a pool or filesystem (`key`, first seen with
    /// `size` and `available`). Fails when `must` does not fit now; warns
    /// when all of `need` does not fit, or would leave it over --disk-warn.
    pub fn space(&mut self, key: &str, size: u64, available: u64, need: u64, must: u64) -> Fit {
        let left = *self.space.entry(key.to_owned()).or_insert(available);
        let after = left.saturating_sub(need);
        self.space.insert(key.to_owned(), after);
        let used_after = if size == 0 {
            0.0
        } else {
            (size - after.min(size)) as f64 * 100.0 / size as f64
        };
        let status = if must > left {
            Status::Fail
        } else if need > left || used_after >= self.disk_warn {
            Status::Warn
        } else {
            Status::Pass
        };
        Fit { status, left }
    }

    /// The limits it was made with, for a budget of another host.
    pub fn limits(&self) -> Limits {
        Limits {
            memory_warn: self.memory_warn,
            disk_warn: self.disk_warn(),
        }
    }

    pub fn disk_warn(&self) -> f64 {
        self.disk_warn
    }
}

/// The filesystem holding `dir`: its key (one budget per filesystem, so two
/// directories on one disk share it), size and available bytes.
pub fn dir_space(dir: &Path) -> Result<(String, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir)
        .map_err(|e| Error::io(format!("cannot use {}", dir.display()), e))?;
    if !meta.is_dir() {
        return Err(Error::new(
            Code::Io,
            format!("{} is not a directory", dir.display()),
        ));
    }
    let space = ffi::fs_space(dir).map_err(|e| {
        Error::io(
            format!("cannot read the free space of {}", dir.display()),
            e,
        )
    })?;
    Ok((
        format!("dev:{}", meta.dev()),
        space.size_bytes,
        space.available_bytes,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_warns_past_the_share_and_fails_when_what_must_fit_does_not() {
        let conn = Connect::open(Some("test:///default")).unwrap();
        let limits = Limits {
            memory_warn: 10.0,
            disk_warn: 85.0,
        };
        let mut b = Budget::new(&conn, limits);
        let gib = 1u64 << 30;
        // 100 GiB with 20 free: 1 GiB more leaves it 81 % used.
        let fit = b.space("d", 100 * gib, 20 * gib, gib, gib);
        assert_eq!((fit.status, fit.left), (Status::Pass, 20 * gib));
        // The next item counts from what the first left: 86 % used.
        let fit = b.space("d", 100 * gib, 20 * gib, 5 * gib, 5 * gib);
        assert_eq!((fit.status, fit.left), (Status::Warn, 19 * gib));
        // More than is left, of what must fit: no room.
        let fit = b.space("d", 100 * gib, 20 * gib, 20 * gib, 20 * gib);
        assert_eq!(fit.status, Status::Fail);
        // Another place starts from its own free space.
        assert_eq!(
            b.space("e", 100 * gib, 50 * gib, gib, 0).status,
            Status::Pass
        );
    }
}
