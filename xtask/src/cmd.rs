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
