//! What every benchmark shares: building hv for it, running the tools it
//! compares (with their stderr in the error when they fail, so a broken peer
//! says why), and printing a figure against its target the same way.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Builds the given hv crates in release mode; the directory holding their binaries.
pub fn release_build(crates: &[&str]) -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    eprintln!("building {} (release)…", crates.join(", "));
    let mut cargo = Command::new("cargo");
    cargo
        .current_dir(root)
        .args(["build", "--quiet", "--release"]);
    for name in crates {
        cargo.args(["-p", name]);
    }
    ok(&mut cargo)?;
    Ok(root.join("target/release"))
}

/// Fails early, with the packages to install, when a peer tool is missing.
pub fn need_tools(tools: &[&str], packages: &str) -> Result<(), String> {
    for tool in tools {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| !s.success())
            .unwrap_or(true)
        {
            return Err(format!("{tool} is missing: apt-get install {packages}"));
        }
    }
    Ok(())
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A figure that must reach `target` (a speed-up, a ratio of series).
pub fn verdict(what: &str, ratio: f64, target: f64) {
    let met = if ratio >= target { "met" } else { "NOT met" };
    println!("  {what}: {ratio:.2} (target >= {target}): {met}");
}

/// A figure that must stay at or below `target` (a share of time or bytes).
pub fn verdict_at_most(what: &str, ratio: f64, target: f64) {
    let met = if ratio <= target { "met" } else { "NOT met" };
    println!("  {what}: {ratio:.3} (target <= {target:.2}): {met}");
}

pub fn ok(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub fn capture(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// CPU time (user + system) of this process's children that have been
/// waited for, from /proc/self/stat: what the tools a benchmark ran used.
pub fn children_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let Some(close) = stat.rfind(')') else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
    // After the command name: cutime and cstime are fields 16 and 17 of
    // stat(5), here 13 and 14 (counted from 0 after the state field's start).
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(13) + ticks(14)) * 10) // USER_HZ is 100 on Linux
}

/// Wall time, the tools' CPU time and libvirtd's CPU time of one run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cost {
    pub wall: Duration,
    pub cpu: Duration,
    pub daemon: Duration,
}

/// Runs `f` and measures it; children must be waited for inside `f`.
pub fn cost(f: impl FnOnce() -> Result<(), String>) -> Result<Cost, String> {
    let (cpu0, daemon0) = (children_cpu(), crate::bench::daemon_cpu());
    let t = std::time::Instant::now();
    f()?;
    let wall = t.elapsed();
    let daemon = match (daemon0, crate::bench::daemon_cpu()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => Duration::ZERO,
    };
    Ok(Cost {
        wall,
        cpu: children_cpu().saturating_sub(cpu0),
        daemon,
    })
}

/// The median of each figure over several runs.
pub fn median_cost(runs: &[Cost]) -> Cost {
    let pick = |f: fn(&Cost) -> Duration| median(runs.iter().map(f).collect());
    Cost {
        wall: pick(|c| c.wall),
        cpu: pick(|c| c.cpu),
        daemon: pick(|c| c.daemon),
    }
}

impl std::fmt::Display for Cost {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "wall {:7.2} s   cpu {:7.2} s   libvirtd cpu {:6.2} s",
            self.wall.as_secs_f64(),
            self.cpu.as_secs_f64(),
            self.daemon.as_secs_f64()
        )
    }
}
