//! The repository lock on object storage, which has no flock and no
//! rename: each holder writes a lock object (`locks/<kind>-<random>`)
//! and keeps it fresh; a backup may run while no fresh exclusive lock
//! exists, prune and gc while no other fresh lock does. Two that start
//! at once both see the other, both step back, and try again after a
//! random pause. A holder that dies stops refreshing: its object goes
//! stale after [`LEASE`] and is ignored (and removed by the next taker),
//! so a killed run blocks others for minutes, never forever; on its own
//! host, where the taker can see that the process is gone, not at all.

use crate::repo::LockKind;
use crate::s3::S3;
use hv_common::{time, Code, Error, Result};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a lock object counts after its last refresh. Generous: the
/// store's clock and this host's may differ by a few minutes.
const LEASE: Duration = Duration::from_secs(10 * 60);
/// How often a holder refreshes its object.
const REFRESH: Duration = Duration::from_secs(60);

pub struct Lease {
    s3: Arc<S3>,
    key: String,
    stop: Arc<(Mutex<bool>, Condvar)>,
    refresher: Option<std::thread::JoinHandle<()>>,
}

impl Lease {
    pub fn take(s3: Arc<S3>, kind: LockKind, wait: Duration) -> Result<Lease> {
        let name = match kind {
            LockKind::Shared => "shared",
            LockKind::Exclusive => "exclusive",
        };
        let key = format!("locks/{name}-{}", crate::crypt::random_hex::<8>()?);
        let body = format!(
            "{{\"kind\":\"{name}\",\"pid\":{},\"host\":{:?},\"time\":{:?}}}\n",
            std::process::id(),
            hv_common::hosts::local_hostname(),
            time::rfc3339(time::now())
        );
        let start = Instant::now();
        let mut told = false;
        loop {
            s3.put(&key, body.as_bytes())?;
            let others = conflicts(&s3, &key, kind)?;
            if others.is_empty() {
                break;
            }
            s3.delete(&key)?;
            if start.elapsed() >= wait {
                return Err(Error::new(
                    Code::Locked,
                    format!(
                        "repository {} is locked by another hv-backup run ({}; a backup holds it \
                         shared, prune and gc alone); try again when it ends, or raise --lock-wait",
                        s3.url(),
                        others.join(", ")
                    ),
                ));
            }
            if !told {
                hv_common::cli::warn(format!(
                    "waiting for the lock on {} (another backup, prune or gc is running)",
                    s3.url()
                ));
                told = true;
            }
            let jitter = u64::from(crate::crypt::random_bytes::<1>()?[0]) * 8;
            std::thread::sleep(Duration::from_millis(500 + jitter));
        }
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let refresher = {
            let (s3, key, stop) = (s3.clone(), key.clone(), stop.clone());
            let body = body.clone();
            std::thread::spawn(move || {
                let (lock, cvar) = &*stop;
                let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    let (guard, _) = cvar
                        .wait_timeout(stopped, REFRESH)
                        .unwrap_or_else(|e| e.into_inner());
                    stopped = guard;
                    if *stopped {
                        return;
                    }
                    if let Err(e) = s3.put(&key, body.as_bytes()) {
                        hv_common::cli::warn(format!("cannot refresh the repository lock: {e}"));
                    }
                }
            })
        };
        Ok(Lease {
            s3,
            key,
            stop,
            refresher: Some(refresher),
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let (lock, cvar) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cvar.notify_all();
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        let _ = self.s3.delete(&self.key);
    }
}

/// The fresh lock objects other than `mine` that `kind` cannot run beside;
/// stale ones are removed on the way.
fn conflicts(s3: &S3, mine: &str, kind: LockKind) -> Result<Vec<String>> {
    let now = time::now();
    let mut found = Vec::new();
    for object in s3.list("locks/")? {
        if object.key == mine {
            continue;
        }
        if now - object.modified > LEASE.as_secs() as i64 {
            let _ = s3.delete(&object.key); // its holder died
            continue;
        }
        let exclusive = object.key.starts_with("locks/exclusive-");
        if !(kind == LockKind::Exclusive || exclusive) {
            continue;
        }
        // A holder on this host that no longer runs (killed, or it could
        // not delete its lock while the store was away) is stale at once.
        if let Ok(Some(body)) = s3.get(&object.key) {
            if dead_here(&String::from_utf8_lossy(&body)) {
                let _ = s3.delete(&object.key);
                continue;
            }
        }
        found.push(object.key.trim_start_matches("locks/").to_owned());
    }
    Ok(found)
}

/// Whether a lock's body names a process of this host that is gone.
fn dead_here(body: &str) -> bool {
    let Ok(lock) = serde_json::from_str::<serde_json::Value>(body) else {
        return false;
    };
    let (Some(host), Some(pid)) = (lock["host"].as_str(), lock["pid"].as_u64()) else {
        return false;
    };
    host == hv_common::hosts::local_hostname() && !hv_backup_runs(pid as u32)
}

/// Whether process `pid` runs and is an hv-backup (not a reused pid).
pub(crate) fn hv_backup_runs(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains("hv-backup"))
}
