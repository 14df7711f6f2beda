//! Making VMs against virtinst, the tools a user runs today, in one run on
//! the real daemon: hv-define of N profiles against a loop of
//! `virt-install --import --noautoconsole` for the same VMs, and hv-clone
//! -j of a VM-like template against a loop of `virt-clone --auto-clone`.
//! Each side runs `rounds` times (median printed, with CPU time of the
//! tools and of libvirtd, which does virt-clone's copying); everything
//! made is removed between rounds and afterwards, even on failure.
//!
//! virt-install --import also starts each VM, which hv-define leaves to
//! hv-start: so `hv-define | hv-start` is timed too, for the same end state.

use crate::cmd::{
    capture, cost, median_cost, need_tools, ok, release_build, verdict, verdict_at_most, Cost,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const URI: &str = "qemu:///system";
const DIR: &str = "/var/lib/libvirt/images/hv-bench-make";

/// Removes the bench's VMs, files and the pool virtinst makes for DIR.
struct Cleanup {
    prefix: String,
    dir: PathBuf,
}

impl Cleanup {
    fn now(&self) {
        let conn = hv_testbench::connect();
        if let Ok(all) = conn.list_all_domains(0) {
            for d in all {
                if d.name().is_ok_and(|n| n.starts_with(&self.prefix)) {
                    hv_testbench::remove_domain(&d);
                }
            }
        }
        // virt-install and virt-clone turn a disk's directory into a pool.
        if let Ok(pools) = conn.list_all_storage_pools(0) {
            for p in pools {
                let here = p
                    .xml_desc(0)
                    .is_ok_and(|x| x.contains(&format!("<path>{}</path>", self.dir.display())));
                if here {
                    let _ = p.destroy();
                    let _ = p.undefine();
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&self.prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.now();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn define(n: usize, rounds: usize) -> Result<(), String> {
    need_tools(&["virt-install"], "virtinst")?;
    let release = release_build(&["hv-define", "hv-start"])?;
    std::fs::create_dir_all(DIR).map_err(|e| e.to_string())?;
    let clean = Cleanup {
        prefix: format!("hvbm-{}-", std::process::id()),
        dir: PathBuf::from(DIR),
    };
    let names: Vec<String> = (0..n)
        .map(|i| format!("{}vm{i:02}", clean.prefix))
        .collect();
    let profiles: String = names
        .iter()
        .map(|name| {
            serde_json::json!({"name": name, "type": "qemu", "memory": "128M", "vcpus": 1,
                "disk": "64M", "dir": DIR})
            .to_string()
                + "\n"
        })
        .collect();
    let file = PathBuf::from(DIR).join(format!("{}profiles.jsonl", clean.prefix));
    std::fs::write(&file, &profiles).map_err(|e| e.to_string())?;
    let hv_define = || {
        ok(Command::new(release.join("hv-define"))
            .args(["-c", URI, "--format", "jsonl"])
            .arg(&file))
    };
    let hv_define_start = || {
        ok(Command::new("bash")
            .args([
                "-o",
                "pipefail",
                "-c",
                r#""$0" -c qemu:///system "$1" | "$2" -c qemu:///system -j 8"#,
            ])
            .arg(release.join("hv-define"))
            .arg(&file)
            .arg(release.join("hv-start")))
    };
    let virt_install_loop = || {
        names.iter().try_for_each(|name| {
            ok(Command::new("virt-install")
                .args([
                    "--connect",
                    URI,
                    "--name",
                    name,
                    "--memory",
                    "128",
                    "--vcpus",
                    "1",
                ])
                .args(["--virt-type", "qemu", "--import", "--noautoconsole"])
                .arg("--disk")
                .arg(format!(
                    "path={DIR}/{name}.qcow2,size=0.0625,format=qcow2,bus=virtio"
                ))
                .args([
                    "--network",
                    "none",
                    "--graphics",
                    "none",
                    "--osinfo",
                    "detect=on,require=off",
                ])
                .stderr(Stdio::null()))
        })
    };
    eprintln!("warm-up: one of each…");
    hv_define()?;
    clean.now();
    std::fs::write(&file, &profiles).map_err(|e| e.to_string())?;
    let (mut hv, mut hv_start, mut vi) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        eprintln!("round {round}/{rounds}: hv-define, hv-define | hv-start, virt-install loop ({n} VMs each)…");
        hv.push(cost(hv_define)?);
        clean.now();
        std::fs::write(&file, &profiles).map_err(|e| e.to_string())?;
        hv_start.push(cost(hv_define_start)?);
        clean.now();
        std::fs::write(&file, &profiles).map_err(|e| e.to_string())?;
        vi.push(cost(virt_install_loop)?);
        clean.now();
        std::fs::write(&file, &profiles).map_err(|e| e.to_string())?;
    }
    let (hv, hv_start, vi) = (median_cost(&hv), median_cost(&hv_start), median_cost(&vi));
    println!("define bench: {n} VMs (64 MiB qcow2 disk, TCG), {URI}, median of {rounds}");
    println!("  virt-install --import loop:  {vi}");
    println!("  hv-define:                   {hv}");
    println!("  hv-define | hv-start -j 8:   {hv_start}");
    let ratio = |a: Cost, b: Cost| a.wall.as_secs_f64() / b.wall.as_secs_f64();
    verdict(
        "virt-install loop / hv-define (speed-up)",
        ratio(vi, hv),
        10.0,
    );
    verdict(
        "virt-install loop / (hv-define | hv-start), same end state",
        ratio(vi, hv_start),
        1.0,
    );
    Ok(())
}

pub fn clone(n: usize, size_mib: u64, rounds: usize) -> Result<(), String> {
    need_tools(
        &["virt-clone", "qemu-img", "mkfs.xfs"],
        "virtinst qemu-utils xfsprogs",
    )?;
    let release = release_build(&["hv-define", "hv-clone"])?;
    let host_fs =
        capture(Command::new("stat").args(["-f", "-c", "%T", "/var/lib/libvirt/images"]))?;
    clone_in(
        &release,
        Path::new(DIR),
        &format!("the host's filesystem ({host_fs})"),
        n,
        size_mib,
        rounds,
    )?;
    // Where the filesystem can share blocks, a copy need not be written:
    // XFS with reflink, as on many hosts, in a loop-mounted file here.
    let xfs = XfsMount::new(Path::new(XFS_DIR), (n as u64 + 4) * size_mib * 2)?;
    clone_in(
        &release,
        &xfs.dir,
        "XFS with reflink (loop-mounted)",
        n,
        size_mib,
        rounds,
    )
}

const XFS_DIR: &str = "/var/lib/libvirt/images/hv-bench-make-xfs";

/// An XFS filesystem with reflink in a sparse file, mounted for the run
/// (discard returns what a round freed to the host).
struct XfsMount {
    dir: PathBuf,
    image: PathBuf,
}

impl XfsMount {
    fn new(dir: &Path, size_mib: u64) -> Result<XfsMount, String> {
        let image = PathBuf::from(format!("/var/tmp/hv-bench-make-{}.xfs", std::process::id()));
        let f = std::fs::File::create(&image).map_err(|e| e.to_string())?;
        f.set_len(size_mib << 20).map_err(|e| e.to_string())?;
        ok(Command::new("mkfs.xfs")
            .args(["-q", "-m", "reflink=1"])
            .arg(&image))?;
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        ok(Command::new("mount")
            .args(["-o", "loop,discard"])
            .arg(&image)
            .arg(dir))?;
        Ok(XfsMount {
            dir: dir.to_path_buf(),
            image,
        })
    }
}

impl Drop for XfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
        let _ = std::fs::remove_file(&self.image);
    }
}

fn clone_in(
    release: &Path,
    dir: &Path,
    fs: &str,
    n: usize,
    size_mib: u64,
    rounds: usize,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let clean = Cleanup {
        prefix: format!("hvbm-{}-", std::process::id()),
        dir: dir.to_path_buf(),
    };
    let template = format!("{}template", clean.prefix);
    let image = dir
        .to_path_buf()
        .join(format!("{}source.qcow2", clean.prefix));
    eprintln!("writing a {size_mib} MiB VM-like template…");
    template_image(&image, size_mib)?;
    let profile = serde_json::json!({"name": template, "type": "qemu", "memory": "128M",
        "disk": {"from": image, "format": "qcow2"}, "dir": dir})
    .to_string();
    ok(Command::new(release.join("hv-define"))
        .args(["-c", URI])
        .stdin(stdin_of(&profile)?))?;
    // Read once so every side starts from the page cache.
    ok(Command::new("cat")
        .arg(dir.to_path_buf().join(format!("{template}.qcow2")))
        .stdout(Stdio::null()))?;
    let remove_clones = || {
        let conn = hv_testbench::connect();
        for i in 1..=n {
            for name in [
                format!("{template}-{i}"),
                format!("{}vc{i:02}", clean.prefix),
            ] {
                if let Ok(d) = conn.lookup_domain_by_name(&name) {
                    hv_testbench::remove_domain(&d);
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let f = e.file_name().to_string_lossy().into_owned();
                if f.starts_with(&format!("{template}-"))
                    || f.starts_with(&format!("{}vc", clean.prefix))
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        // So each round writes to disk, not into what the last one left dirty.
        let _ = Command::new("sync").status();
    };
    let count = n.to_string();
    let hv_clone = |linked: bool| {
        let mut c = Command::new(release.join("hv-clone"));
        c.args([
            "-c",
            URI,
            "-j",
            "2",
            "--count",
            &count,
            "--name",
            "{name}-{n}",
            "--format",
            "jsonl",
        ]);
        if linked {
            c.arg("--linked");
        }
        c.arg(&template);
        ok(&mut c)
    };
    let virt_clone_loop = || {
        (1..=n).try_for_each(|i| {
            ok(Command::new("virt-clone")
                .args(["--connect", URI, "--original", &template, "--auto-clone"])
                .arg("--name")
                .arg(format!("{}vc{i:02}", clean.prefix))
                .stderr(Stdio::null()))
        })
    };
    let (mut hv, mut linked, mut vc) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        eprintln!("round {round}/{rounds}: hv-clone -j 2, hv-clone --linked, virt-clone loop ({n} clones each)…");
        hv.push(cost(|| hv_clone(false))?);
        remove_clones();
        linked.push(cost(|| hv_clone(true))?);
        remove_clones();
        vc.push(cost(virt_clone_loop)?);
        remove_clones();
    }
    let (hv, linked, vc) = (median_cost(&hv), median_cost(&linked), median_cost(&vc));
    println!("clone bench: {n} clones of a {size_mib} MiB VM-like qcow2 template on {fs}, {URI}, median of {rounds}");
    println!("  virt-clone --auto-clone loop: {vc}");
    println!("  hv-clone -j 2 (full copies):  {hv}");
    println!("  hv-clone --linked:            {linked}");
    verdict_at_most(
        "hv-clone / virt-clone loop (time)",
        hv.wall.as_secs_f64() / vc.wall.as_secs_f64(),
        0.5,
    );
    Ok(())
}

fn stdin_of(text: &str) -> Result<Stdio, String> {
    let path = std::env::temp_dir().join(format!("hv-bench-make-{}.json", std::process::id()));
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    let f = std::fs::File::open(&path).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&path);
    Ok(Stdio::from(f))
}

/// A qcow2 image like a VM's disk: 60% random data, 20% text-like, 20%
/// never written (holes), in 64 MiB segments.
fn template_image(image: &Path, size_mib: u64) -> Result<(), String> {
    let raw = image.with_extension("raw");
    {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(&raw).map_err(|e| e.to_string())?;
        let mut urandom = std::fs::File::open("/dev/urandom").map_err(|e| e.to_string())?;
        let seg = 64u64 << 20;
        let mut buf = vec![0u8; seg as usize];
        let words = [
            "libvirt ", "domain ", "backup ", "kernel: ", "qemu ", "info ", "error ", "\n",
        ];
        for i in 0..size_mib.div_ceil(64) {
            f.seek(SeekFrom::Start(i * seg))
                .map_err(|e| e.to_string())?;
            match i % 5 {
                0..=2 => {
                    urandom.read_exact(&mut buf).map_err(|e| e.to_string())?;
                    f.write_all(&buf).map_err(|e| e.to_string())?;
                }
                3 => {
                    let mut text = Vec::with_capacity(seg as usize);
                    let mut x = i + 1;
                    while text.len() < seg as usize {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        text.extend_from_slice(words[(x >> 60) as usize % words.len()].as_bytes());
                    }
                    f.write_all(&text[..seg as usize])
                        .map_err(|e| e.to_string())?;
                }
                _ => {}
            }
        }
        f.set_len(size_mib << 20).map_err(|e| e.to_string())?;
    }
    let converted = ok(Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(image));
    let _ = std::fs::remove_file(&raw);
    converted
}
