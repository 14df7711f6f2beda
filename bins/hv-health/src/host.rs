//! Checks of what the VMs share: the daemon, memory, storage, the backup
//! repository's filesystem, the ISO library. Each measures a percentage
//! against documented thresholds, so the same numbers drive a person's
//! table, a timer's mail and hv-metrics' alerts.

use crate::Limits;
use hv_common::checks::{Check, Status, Unit};
use hv_common::connect::version_text;
use hv_common::iso_library::Library;
use hv_common::{ffi, time};
use std::path::Path;
use std::time::Duration;
use virt::connect::Connect;

pub fn libvirt_up(conn: &Connect) -> Check {
    let version = conn.lib_version().map(version_text).unwrap_or_default();
    let uri = conn.uri().unwrap_or_default();
    Check::new(
        "libvirt.reachable",
        Status::Pass,
        format!("libvirt {version} answers at {uri}"),
    )
    .value(version)
}

pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 * 1000.0 / whole as f64).round() / 10.0
}

/// Available memory (free + buffers + page cache) as a share of the total.
pub fn memory(conn: &Connect, limits: &Limits) -> Option<Check> {
    let stats = ffi::node_memory_stats(conn).ok()?;
    let kib = |k: &str| stats.get(k).copied().unwrap_or(0);
    let available = kib("free") + kib("buffers") + kib("cached");
    let share = percent(available, kib("total"));
    let status = match share {
        s if s < limits.memory_fail => Status::Fail,
        s if s < limits.memory_warn => Status::Warn,
        _ => Status::Pass,
    };
    let message = format!(
        "{share}% of the host's memory is available ({} MiB)",
        available / 1024
    );
    Some(
        Check::new("host.memory", status, message)
            .measured(
                Unit::Percent,
                share,
                if status == Status::Fail {
                    limits.memory_fail
                } else {
                    limits.memory_warn
                },
            )
            .hint("stop or shrink VMs (hv-ls --state running shows their memory), or add memory"),
    )
}

fn used_status(used: f64, limits: &Limits) -> (Status, f64) {
    match used {
        u if u >= limits.disk_fail => (Status::Fail, limits.disk_fail),
        u if u >= limits.disk_warn => (Status::Warn, limits.disk_warn),
        _ => (Status::Pass, limits.disk_warn),
    }
}

/// Every active storage pool's fill level.
pub fn pools(conn: &Connect, limits: &Limits) -> Vec<Check> {
    let Ok(pools) = conn.list_all_storage_pools(virt::sys::VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
    else {
        return Vec::new();
    };
    pools
        .iter()
        .filter_map(|pool| {
            let name = pool.name().ok()?;
            let info = pool.info().ok()?;
            let used = percent(info.capacity - info.available.min(info.capacity), info.capacity);
            let (status, threshold) = used_status(used, limits);
            let free = info.available >> 20;
            Some(
                Check::new("pool.space", status, format!("pool {name} is {used}% full ({free} MiB free)"))
                    .about("pool", name.clone())
                    .measured(Unit::Percent, used, threshold)
                    .hint(format!(
                        "free space in pool {name}: hv-snap prune old snapshots, remove unused volumes (virsh vol-list {name}), or grow it"
                    )),
            )
        })
        .collect()
}

/// The filesystem holding a backup repository.
pub fn repository_space(repo: &Path, limits: &Limits) -> Check {
    let shown = repo.display().to_string();
    match ffi::fs_space(repo) {
        Ok(space) => {
            let used = percent(
                space.size_bytes - space.available_bytes.min(space.size_bytes),
                space.size_bytes,
            );
            let (status, threshold) = used_status(used, limits);
            let free = space.available_bytes >> 20;
            Check::new("repository.space", status, format!("{shown} is on a filesystem {used}% full ({free} MiB free)"))
                .about("repository", shown.clone())
                .measured(Unit::Percent, used, threshold)
                .hint(format!("hv-backup prune --repo {shown:?} with a shorter retention, or move the repository to a larger disk"))
        }
        Err(e) => Check::new(
            "repository.space",
            Status::Fail,
            format!("cannot read {shown}: {e}"),
        )
        .about("repository", shown.clone())
        .hint("check the path (and that its disk is mounted), or create it with hv-backup init"),
    }
}

/// What the last `hv-iso verify` recorded for each image.
pub fn isos(dir: &Path, limits: &Limits) -> Vec<Check> {
    let lib = Library::new(dir.to_path_buf());
    let shown = dir.display().to_string();
    let names = match lib.names() {
        Ok(names) => names,
        Err(e) => {
            return vec![Check::new("iso.verified", Status::Fail, e.message)
                .about("library", shown)
                .hint("check --iso-library; hv-iso add creates the library")]
        }
    };
    let now = time::now();
    let max_age = seconds(limits.max_iso_check_age);
    names
        .iter()
        .map(|name| {
            let check = |status, message: String| {
                Check::new("iso.verified", status, message)
                    .about("image", name.clone())
                    .about("library", shown.clone())
            };
            let entry = match lib.get(name) {
                Ok(Some(entry)) => entry,
                Ok(None) => {
                    return check(Status::Fail, format!("{name} vanished while being read"))
                }
                Err(e) => {
                    return check(Status::Fail, e.message)
                        .hint(format!("hv-iso rm {name:?} and add it again"))
                }
            };
            let s = &entry.sidecar;
            let checked = s.checked_at.as_deref().and_then(time::parse_rfc3339);
            let since = checked.map(|t| now - t);
            if !entry.path.is_file() {
                return check(Status::Fail, format!("{name}: the image file is gone")).hint(
                    format!(
                        "hv-iso rm {name:?}, or add it again from {} with hv-iso add --force",
                        s.source
                    ),
                );
            }
            match (s.check_ok, since) {
                (Some(false), _) => check(
                    Status::Fail,
                    format!("{name} no longer matches its sha256 (last hv-iso verify)"),
                )
                .hint(format!(
                    "hv-iso add --force {:?} with the same proof as before, or hv-iso rm {name:?}",
                    s.source
                )),
                (_, Some(age)) if age <= max_age => check(
                    Status::Pass,
                    format!("{name} matched its sha256 {} ago", human_age(age)),
                )
                .measured(Unit::Seconds, age, max_age),
                (_, age) => check(
                    Status::Warn,
                    match age {
                        Some(age) => format!("{name} was last verified {} ago", human_age(age)),
                        None => format!("{name} was never verified since it was added"),
                    },
                )
                .measured(
                    Unit::Seconds,
                    age.map_or(serde_json::Value::Null, Into::into),
                    max_age,
                )
                .hint(format!(
                    "hv-iso verify {name:?} (and run it from a timer: docs/iso.md)"
                )),
            }
        })
        .collect()
}

/// A limit in the seconds that ages are measured in (differences of Unix
/// times, negative when a clock was set back).
pub fn seconds(limit: Duration) -> i64 {
    i64::try_from(limit.as_secs()).unwrap_or(i64::MAX)
}

pub fn human_age(secs: i64) -> String {
    match secs {
        s if s >= 2 * 86_400 => format!("{} days", s / 86_400),
        s if s >= 2 * 3600 => format!("{} hours", s / 3600),
        s if s >= 120 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}
