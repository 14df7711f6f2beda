//! A Debian package, because on Debian and Ubuntu hosts (where hv mostly
//! runs; the bench is Debian 12) a package is the install an admin can
//! list (`dpkg -L hv`), verify (`dpkg --verify hv`), upgrade with their
//! edits of /etc/hv/hv.env kept (a conffile), and remove without leaving
//! files behind. Its tree is staged by the same code as `cargo xtask
//! install --prefix /usr`, so the package and a plain install put every
//! file in the same place. It is built with dpkg-deb alone (no debhelper,
//! no debian/ directory to keep beside the xtask), as any user thanks to
//! --root-owner-group; Depends comes from dpkg-shlibdeps, which reads the
//! libraries and symbol versions the binaries really use.

use crate::install::{self, make_dirs, Layout};
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Used only when dpkg-shlibdeps (dpkg-dev) cannot compute Depends: what
/// the binaries link (`ldd`), libvirt from Debian 12 on.
const STATED_DEPENDS: &str = "libc6, libgcc-s1, libvirt0 (>= 9), libcurl4";

pub fn run() -> Result<(), String> {
    for tool in ["dpkg", "dpkg-deb"] {
        if Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            return Err(format!(
                "{tool} not found: cargo xtask deb builds on Debian or Ubuntu"
            ));
        }
    }
    let release = install::build_release()?;
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?;
    let version = debian_version(env!("CARGO_PKG_VERSION"));
    let out = install::target_dir().join("deb");
    let work = out.join("build");
    if let Err(e) = fs::remove_dir_all(&work) {
        if e.kind() != ErrorKind::NotFound {
            return Err(format!("{}: {e}", work.display()));
        }
    }
    // dpkg-shlibdeps looks for debian/control and for the package's files
    // under debian/<package>.
    let pkg = work.join("debian/hv");
    let layout = Layout::new(Path::new("/usr"), Some(&pkg), true)?;
    let items = install::items(&layout, &release)?;
    install::install(&layout, &items)?;

    // Debian policy: man pages gzip -9n (no name or time stamp in them).
    let pages: Vec<PathBuf> = items
        .iter()
        .filter(|i| i.path.starts_with("/usr/share/man"))
        .map(|i| layout.staged(&i.path))
        .collect();
    run_ok(Command::new("gzip").arg("-9nf").args(pages))?;
    write(
        &pkg.join("usr/share/doc/hv/copyright"),
        &copyright()?,
        0o644,
    )?;

    let timers: Vec<String> = items
        .iter()
        .filter(|i| i.path.extension().is_some_and(|e| e == "timer"))
        .filter_map(|i| i.path.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let control = pkg.join("DEBIAN");
    make_dirs(&control)?;
    write(&control.join("postinst"), POSTINST, 0o755)?;
    write(&control.join("prerm"), &prerm(&timers), 0o755)?;
    write(&control.join("postrm"), POSTRM, 0o755)?;

    let mut files = Vec::new();
    let mut dirs = 0u64;
    walk(&pkg, &pkg, &mut files, &mut dirs)?;
    let conffiles: Vec<&PathBuf> = files.iter().filter(|f| f.starts_with("etc")).collect();
    let mut list = String::new();
    for f in &conffiles {
        list += &format!("/{}\n", f.display());
    }
    write(&control.join("conffiles"), &list, 0o644)?;
    // dpkg tracks the conffiles' sums itself; md5sums has the others.
    let summed: Vec<&PathBuf> = files.iter().filter(|f| !f.starts_with("etc")).collect();
    let sums = output(Command::new("md5sum").current_dir(&pkg).args(summed))?;
    write(&control.join("md5sums"), &format!("{sums}\n"), 0o644)?;

    let binaries: Vec<PathBuf> = install::binaries()?
        .iter()
        .map(|name| PathBuf::from("debian/hv/usr/bin").join(name))
        .collect();
    let depends = depends(&work, &binaries)?;
    let mut kib = dirs;
    for f in &files {
        let len = fs::metadata(pkg.join(f))
            .map_err(|e| format!("{}: {e}", f.display()))?
            .len();
        kib += len.div_ceil(1024);
    }
    let commands = wrap(&format!("Commands: {}.", install::binaries()?.join(", ")));
    write(
        &control.join("control"),
        &format!(
            "Package: hv\n\
             Version: {version}\n\
             Architecture: {arch}\n\
             Maintainer: {maintainer}\n\
             Installed-Size: {kib}\n\
             Depends: {depends}\n\
             Recommends: qemu-utils, age\n\
             Suggests: libvirt-daemon-system, jq\n\
             Section: admin\n\
             Priority: optional\n\
             Description: small composable commands for a KVM/libvirt host\n\
             \x20Each command does one job, reads and writes JSON lines, and composes\n\
             \x20with the others and with jq, xargs, cron and systemd timers: list VMs\n\
             \x20and act on them in bulk, snapshots, encrypted deduplicated backups\n\
             \x20that verify and restore, a verified ISO library, host checks, health\n\
             \x20checks and Prometheus metrics.\n\
             \x20.\n\
             {commands}\
             \x20.\n\
             \x20The systemd timers are installed, not enabled: set HV_BACKUP_REPO in\n\
             \x20/etc/hv/hv.env first (/usr/share/doc/hv/deploy.md).\n",
            maintainer = maintainer(),
        ),
        0o644,
    )?;

    for old in fs::read_dir(&out).map_err(|e| format!("{}: {e}", out.display()))? {
        let old = old.map_err(|e| e.to_string())?.path();
        let name = old
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.starts_with("hv_") && name.ends_with(".deb") {
            fs::remove_file(&old).map_err(|e| format!("{}: {e}", old.display()))?;
        }
    }
    let deb = out.join(format!("hv_{version}_{arch}.deb"));
    let built = Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(pkg.as_path())
        .arg(deb.as_path())
        .output()
        .map_err(|e| format!("dpkg-deb: {e}"))?;
    // dpkg-deb reports on stdout, which carries only the path here.
    eprint!("{}", String::from_utf8_lossy(&built.stdout));
    eprint!("{}", String::from_utf8_lossy(&built.stderr));
    if !built.status.success() {
        return Err(format!("dpkg-deb --build failed ({})", built.status));
    }
    println!("{}", deb.display());
    Ok(())
}

/// A paragraph of a Description: lines under 80 columns, each indented.
fn wrap(text: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > 72 {
            out += &format!(" {line}\n");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line += word;
    }
    if !line.is_empty() {
        out += &format!(" {line}\n");
    }
    out
}

/// A Cargo version as Debian orders it: a pre-release sorts before its
/// release with `~` (1.0.0-rc.1 becomes 1.0.0~rc.1); a Debian version
/// without a revision may not hold `-` at all.
fn debian_version(cargo: &str) -> String {
    cargo.replace('-', "~")
}

/// Debian's usual DEBFULLNAME and DEBEMAIL when set, so whoever ships the
/// package can sign it with their name.
fn maintainer() -> String {
    let name = std::env::var("DEBFULLNAME").unwrap_or_else(|_| "the hv developers".into());
    let email = std::env::var("DEBEMAIL").unwrap_or_else(|_| "hv@localhost".into());
    format!("{name} <{email}>")
}

/// `dpkg-shlibdeps` on the staged binaries, from the libraries' symbols
/// files; the stated list when dpkg-dev is not there to ask.
fn depends(work: &Path, binaries: &[PathBuf]) -> Result<String, String> {
    write(
        &work.join("debian/control"),
        "Source: hv\n\nPackage: hv\nArchitecture: any\n",
        0o644,
    )?;
    let computed = Command::new("dpkg-shlibdeps")
        .current_dir(work)
        .arg("-O")
        .args(binaries)
        .stderr(Stdio::inherit())
        .output();
    let line = match computed {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("shlibs:Depends=").map(str::to_owned)),
        Ok(out) => {
            eprintln!("warning: dpkg-shlibdeps failed ({})", out.status);
            None
        }
        Err(e) => {
            eprintln!("warning: dpkg-shlibdeps: {e} (apt-get install dpkg-dev)");
            None
        }
    };
    Ok(match line {
        Some(depends) if !depends.trim().is_empty() => depends.trim().to_owned(),
        _ => {
            eprintln!("warning: Depends stated, not computed: {STATED_DEPENDS}");
            STATED_DEPENDS.to_owned()
        }
    })
}

/// Machine-readable debian/copyright: the workspace's licences, the MIT
/// text in full, Apache's by reference to the copy every Debian host has.
fn copyright() -> Result<String, String> {
    let mit_path = install::root().join("LICENSE-MIT");
    let mit = fs::read_to_string(&mit_path).map_err(|e| format!("{}: {e}", mit_path.display()))?;
    let mut text = String::from(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: hv\n\n\
         Files: *\n\
         Copyright: 2026 the hv developers\n\
         License: MIT or Apache-2.0\n\n\
         License: MIT\n",
    );
    // The licence text minus its title and copyright line, which the
    // header above states.
    let body = mit
        .lines()
        .skip_while(|l| !l.starts_with("Permission is hereby granted"));
    for line in body {
        if line.trim().is_empty() {
            text += " .\n";
        } else {
            text += &format!(" {line}\n");
        }
    }
    text += "\nLicense: Apache-2.0\n \
             On Debian systems, the full text of the Apache License, Version 2.0\n \
             is in /usr/share/common-licenses/Apache-2.0.\n";
    Ok(text)
}

/// systemd learns of new or changed units only on a reload; nothing is
/// enabled, the admin configures /etc/hv/hv.env first.
const POSTINST: &str = "#!/bin/sh\nset -e\n\
    if [ \"$1\" = configure ] && [ -d /run/systemd/system ]; then\n\
    \x20   systemctl daemon-reload >/dev/null || true\n\
    fi\n";

const POSTRM: &str = "#!/bin/sh\nset -e\n\
    if [ -d /run/systemd/system ]; then\n\
    \x20   systemctl daemon-reload >/dev/null || true\n\
    fi\n";

/// Timers left running would fire into removed binaries.
fn prerm(timers: &[String]) -> String {
    format!(
        "#!/bin/sh\nset -e\n\
         if [ \"$1\" = remove ] && [ -d /run/systemd/system ]; then\n\
         \x20   systemctl stop {} >/dev/null 2>&1 || true\n\
         fi\n",
        timers.join(" ")
    )
}

/// The package's files (relative to its root, DEBIAN left out), and the
/// count of its directories, for Installed-Size.
fn walk(root: &Path, dir: &Path, files: &mut Vec<PathBuf>, dirs: &mut u64) -> Result<(), String> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    entries.sort();
    for path in entries {
        let rel = path
            .strip_prefix(root)
            .expect("under the root")
            .to_path_buf();
        if rel == Path::new("DEBIAN") {
            continue;
        }
        if path.is_dir() {
            *dirs += 1;
            walk(root, &path, files, dirs)?;
        } else {
            files.push(rel);
        }
    }
    Ok(())
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        make_dirs(dir)?;
    }
    fs::write(path, text)
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(mode)))
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn run_ok(cmd: &mut Command) -> Result<(), String> {
    output(cmd).map(|_| ())
}
