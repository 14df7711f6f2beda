//! hv-iso's two costs against what a user runs today, on one image in one
//! run: `verify` (a re-hash of the library) against `sha256sum` and
//! `openssl dgst -sha256`, and `add` from a loopback HTTP server against
//! `curl -o` followed by `sha256sum`. The image is read once before timing,
//! so every tool reads from the page cache and the figures compare hashing
//! and copying, not the disk.

use crate::cmd::{capture, median, need_tools, ok, release_build, verdict};
use hv_testbench::http::FileServer;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const RUNS: usize = 3;

pub fn run(size_mib: u64) -> Result<(), String> {
    need_tools(&["sha256sum", "openssl", "curl"], "coreutils openssl curl")?;
    let hv = release_build(&["hv-iso"])?.join("hv-iso");
    let dir = Path::new("/var/tmp/hv-bench-iso");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("www")).map_err(|e| e.to_string())?;
    let result = measure(&hv, dir, size_mib);
    let _ = std::fs::remove_dir_all(dir);
    result
}

fn measure(hv: &Path, dir: &Path, size_mib: u64) -> Result<(), String> {
    let image = dir.join("www/bench.iso");
    eprintln!("writing a {size_mib} MiB image…");
    write_image(&image, size_mib)?;
    let sha = first_word(&capture(Command::new("sha256sum").arg(&image))?);
    let lib = dir.join("library");
    let add = |lib: &Path, source: &str| {
        ok(Command::new(hv).env("HV_ISO_LIBRARY", lib).args([
            "add",
            source,
            "--sha256",
            &sha,
            "--allow-unsigned",
        ]))
    };
    add(&lib, image.to_str().unwrap())?;

    let gib = size_mib as f64 / 1024.0;
    println!("hv-iso on a {gib:.1} GiB image (page cache warm, median of {RUNS}):");
    let verify = time(|| ok(Command::new(hv).env("HV_ISO_LIBRARY", &lib).arg("verify")))?;
    let coreutils = time(|| ok(Command::new("sha256sum").arg(&image)))?;
    let openssl = time(|| {
        ok(Command::new("openssl")
            .args(["dgst", "-sha256"])
            .arg(&image))
    })?;
    let rate = |d: Duration| format!("{:.0} MiB/s", size_mib as f64 / d.as_secs_f64());
    println!(
        "  hv-iso verify            {:>7.2} s  {}",
        verify.as_secs_f64(),
        rate(verify)
    );
    println!(
        "  sha256sum                {:>7.2} s  {}",
        coreutils.as_secs_f64(),
        rate(coreutils)
    );
    println!(
        "  openssl dgst -sha256     {:>7.2} s  {}",
        openssl.as_secs_f64(),
        rate(openssl)
    );
    verdict(
        "verify throughput / openssl's",
        openssl.as_secs_f64() / verify.as_secs_f64(),
        0.9,
    );
    println!(
        "  (verify throughput / sha256sum's: {:.2})",
        coreutils.as_secs_f64() / verify.as_secs_f64()
    );

    let server = FileServer::start(dir.join("www"));
    let url = server.url("bench.iso");
    let fetched = dir.join("curl.iso");
    let curl_then_hash = time(|| {
        ok(Command::new("curl")
            .args(["-sS", "-o"])
            .arg(&fetched)
            .arg(&url))?;
        let got = first_word(&capture(Command::new("sha256sum").arg(&fetched))?);
        let _ = std::fs::remove_file(&fetched);
        (got == sha)
            .then_some(())
            .ok_or_else(|| "curl fetched other bytes".to_owned())
    })?;
    let fresh = dir.join("fresh");
    let hv_add = time(|| {
        let _ = std::fs::remove_dir_all(&fresh);
        add(&fresh, &url)
    })?;
    println!(
        "  hv-iso add URL           {:>7.2} s  {}",
        hv_add.as_secs_f64(),
        rate(hv_add)
    );
    println!(
        "  curl -o, then sha256sum  {:>7.2} s  {}",
        curl_then_hash.as_secs_f64(),
        rate(curl_then_hash)
    );
    verdict(
        "add speed / (curl + sha256sum)'s",
        curl_then_hash.as_secs_f64() / hv_add.as_secs_f64(),
        1.0,
    );
    Ok(())
}

fn time(mut f: impl FnMut() -> Result<(), String>) -> Result<Duration, String> {
    let mut runs = Vec::new();
    for _ in 0..RUNS {
        let begun = Instant::now();
        f()?;
        runs.push(begun.elapsed());
    }
    Ok(median(runs))
}

fn first_word(s: &str) -> String {
    s.split_whitespace().next().unwrap_or_default().to_owned()
}

/// Pseudo-random bytes (an ISO's squashfs is incompressible); written
/// through the page cache, which also warms it.
fn write_image(path: &Path, size_mib: u64) -> Result<(), String> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| e.to_string())?);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..size_mib {
        for word in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&block).map_err(|e| e.to_string())?;
    }
    f.flush().map_err(|e| e.to_string())
}
