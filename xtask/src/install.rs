//! One install that works on a fresh host. A list of `install` lines failed
//! on Debian 12 (no /usr/local/share/man/man1 there), and units copied by
//! hand named /usr/local/bin whatever the binaries' real directory was. So
//! where each file goes is decided here, once: `cargo xtask install` writes
//! that tree onto the host, and `cargo xtask deb` writes the same tree for
//! /usr into a package, so the two cannot disagree.
//!
//! Where a literal PREFIX/... is a directory nobody reads, the directory the
//! reader does read wins: polkitd reads rules only from /usr/share and
//! /etc, and Debian's zsh reads packaged completions from vendor-completions
//! (its site-functions is under /usr/local only). The units' ExecStart
//! paths are rewritten to PREFIX/bin, so a unit runs the binary installed
//! beside it. /etc/hv/hv.env is the admin's file: an install onto the host
//! never replaces it, and it is created 0600 since it may name secrets'
//! locations and repositories.

use crate::deploy::PLAIN_BINDIR;
use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where each kind of file goes for one prefix, on the installed system.
pub struct Layout {
    destdir: Option<PathBuf>,
    bindir: PathBuf,
    mandir: PathBuf,
    bash: PathBuf,
    zsh: PathBuf,
    fish: PathBuf,
    units: PathBuf,
    polkit: PathBuf,
    doc: PathBuf,
    env_file: PathBuf,
}

impl Layout {
    /// `debian`: the host (or the package) follows Debian's layout, where
    /// zsh reads a distribution's completions from vendor-completions.
    pub fn new(prefix: &Path, destdir: Option<&Path>, debian: bool) -> Result<Layout, String> {
        if !prefix.is_absolute() {
            return Err(format!(
                "--prefix {}: must be an absolute path",
                prefix.display()
            ));
        }
        let destdir = match destdir {
            Some(d) => Some(std::path::absolute(d).map_err(|e| format!("{}: {e}", d.display()))?),
            None => None,
        };
        let usr = prefix == Path::new("/usr");
        let p = |rel: &str| prefix.join(rel);
        Ok(Layout {
            destdir,
            bindir: p("bin"),
            mandir: p("share/man/man1"),
            bash: p("share/bash-completion/completions"),
            zsh: if usr && debian {
                PathBuf::from("/usr/share/zsh/vendor-completions")
            } else {
                p("share/zsh/site-functions")
            },
            fish: p("share/fish/vendor_completions.d"),
            // systemd reads /usr/lib/systemd/system and
            // /usr/local/lib/systemd/system; other prefixes get a hint.
            units: p("lib/systemd/system"),
            polkit: if usr {
                p("share/polkit-1/rules.d")
            } else {
                PathBuf::from("/etc/polkit-1/rules.d")
            },
            doc: p("share/doc/hv"),
            env_file: PathBuf::from("/etc/hv/hv.env"),
        })
    }

    /// Where a path of the installed system is written now: under DESTDIR
    /// when there is one.
    pub fn staged(&self, path: &Path) -> PathBuf {
        match &self.destdir {
            Some(d) => d.join(path.strip_prefix("/").unwrap_or(path)),
            None => path.to_path_buf(),
        }
    }
}

/// One file to install: its bytes, its path on the installed system, its mode.
pub struct Item {
    pub path: PathBuf,
    pub mode: u32,
    bytes: Vec<u8>,
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => std::path::absolute(&dir).unwrap_or_else(|_| PathBuf::from(dir)),
        None => root().join("target"),
    }
}

/// The commands: one crate per directory under bins/, named as its binary.
pub fn binaries() -> Result<Vec<String>, String> {
    let mut names: Vec<String> = list(&root().join("bins"))?
        .into_iter()
        .filter(|dir| dir.join("Cargo.toml").is_file())
        .filter_map(|dir| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(format!(
            "no command crates under {}",
            root().join("bins").display()
        ));
    }
    Ok(names)
}

/// `cargo build --release` of every command (a no-op when they are current);
/// the directory holding the binaries. Only the command crates, not the
/// whole workspace: the xtask and the test bench are not installed.
pub fn build_release() -> Result<PathBuf, String> {
    let names = binaries()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building {} commands (cargo build --release)…", names.len());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root())
        .args(["build", "--release", "--locked"])
        .stdout(Stdio::null());
    for name in &names {
        cmd.args(["-p", name]);
    }
    let status = cmd.status().map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            "cargo not found (running as root?): build as your user with `cargo build \
             --release`, then install with --no-build"
                .to_owned()
        } else {
            format!("cargo build: {e}")
        }
    })?;
    if !status.success() {
        return Err(format!("cargo build --release failed ({status})"));
    }
    Ok(target_dir().join("release"))
}

/// `cargo xtask install`.
pub fn run(prefix: &Path, destdir: Option<&Path>, build: bool) -> Result<(), String> {
    let debian = Path::new("/etc/debian_version").exists();
    let layout = Layout::new(prefix, destdir, debian)?;
    let release = if build {
        build_release()?
    } else {
        target_dir().join("release")
    };
    let items = items(&layout, &release)?;
    let written = install(&layout, &items)?;
    for item in &items {
        let path = layout.staged(&item.path);
        if written.contains(&item.path) {
            eprintln!("  {:04o} {}", item.mode, path.display());
        } else {
            eprintln!(
                "  kept {} (it exists; the example is contrib/hv.env)",
                path.display()
            );
        }
    }
    eprintln!(
        "installed {} files for prefix {}{}",
        written.len(),
        prefix.display(),
        match destdir {
            Some(d) => format!(" under {}", d.display()),
            None => String::new(),
        }
    );
    if prefix != Path::new("/usr") && prefix != Path::new("/usr/local") {
        eprintln!(
            "note: systemd does not read {}; link the units in with `systemctl link`",
            layout.units.display()
        );
    }
    if destdir.is_none() {
        eprintln!(
            "next: set HV_BACKUP_REPO in /etc/hv/hv.env, `systemctl daemon-reload`, and \
             enable the timers you want (docs/deploy.md)"
        );
    }
    Ok(())
}

/// Everything an install writes, read from the checkout and target/release.
pub fn items(layout: &Layout, release: &Path) -> Result<Vec<Item>, String> {
    let root = root();
    let mut items = Vec::new();
    for name in binaries()? {
        let binary = release.join(&name);
        if !binary.is_file() {
            return Err(format!(
                "{} is missing: run `cargo build --release` (or install without --no-build)",
                binary.display()
            ));
        }
        items.push(read(&layout.bindir, &binary, 0o755)?);
    }
    for page in files(&root.join("man"), ".1")? {
        items.push(read(&layout.mandir, &page, 0o644)?);
    }
    for (shell, dir) in [
        ("bash", &layout.bash),
        ("zsh", &layout.zsh),
        ("fish", &layout.fish),
    ] {
        for file in files(&root.join("completions").join(shell), "")? {
            items.push(read(dir, &file, 0o644)?);
        }
    }
    for rules in files(&root.join("contrib/polkit"), ".rules")? {
        items.push(read(&layout.polkit, &rules, 0o644)?);
    }
    items.push(read(&layout.doc, &root.join("README.md"), 0o644)?);
    for doc in files(&root.join("docs"), ".md")? {
        items.push(read(&layout.doc, &doc, 0o644)?);
    }
    for file in files(&root.join("docs/monitoring"), "")? {
        items.push(read(&layout.doc.join("monitoring"), &file, 0o644)?);
    }
    // The units as generated name /usr/local/bin; they must run the
    // binaries this install puts in PREFIX/bin.
    let from = format!("{PLAIN_BINDIR}/hv-");
    let to = format!("{}/hv-", layout.bindir.display());
    for unit in files(&root.join("contrib/systemd"), "")? {
        let text = fs::read_to_string(&unit).map_err(|e| format!("{}: {e}", unit.display()))?;
        items.push(Item {
            path: layout.units.join(unit.file_name().expect("a file name")),
            mode: 0o644,
            bytes: text.replace(&from, &to).into_bytes(),
        });
    }
    let env = root.join("contrib/hv.env");
    items.push(Item {
        path: layout.env_file.clone(),
        mode: 0o600,
        bytes: fs::read(&env).map_err(|e| format!("{}: {e}", env.display()))?,
    });
    Ok(items)
}

/// The file `source`, to be installed into `dir` under its own name.
fn read(dir: &Path, source: &Path, mode: u32) -> Result<Item, String> {
    let bytes = fs::read(source).map_err(|e| format!("{}: {e}", source.display()))?;
    Ok(Item {
        path: dir.join(source.file_name().expect("a file name")),
        mode,
        bytes,
    })
}

/// Writes the items (each replaced whole, by a rename, so a running binary
/// is never written into), creating every directory on the way 0755; the
/// paths written. The admin's /etc/hv/hv.env on a host is left alone.
pub fn install(layout: &Layout, items: &[Item]) -> Result<Vec<PathBuf>, String> {
    let mut written = Vec::new();
    for item in items {
        let dest = layout.staged(&item.path);
        if item.path == layout.env_file && layout.destdir.is_none() && dest.exists() {
            continue;
        }
        put(&dest, &item.bytes, item.mode)?;
        written.push(item.path.clone());
    }
    Ok(written)
}

fn put(dest: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let dir = dest.parent().expect("an absolute file path");
    make_dirs(dir)?;
    let name = dest.file_name().expect("a file name").to_string_lossy();
    let tmp = dir.join(format!(".{name}.xtask-install"));
    let _ = fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        // open's mode passed through the umask; the file gets exactly `mode`.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        fs::rename(&tmp, dest)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        failed(dest, e)
    })
}

/// create_dir_all, but each directory it creates is 0755 whatever the
/// umask (a root umask of 077 would hide the man pages from users);
/// directories that exist keep their modes (polkitd's rules.d is 0700).
pub fn make_dirs(dir: &Path) -> Result<(), String> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        make_dirs(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(|e| failed(dir, e))
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(failed(dir, e)),
    }
}

fn failed(path: &Path, e: std::io::Error) -> String {
    let hint = if e.kind() == ErrorKind::PermissionDenied {
        " (install onto the host as root, or stage it with --destdir DIR)"
    } else {
        ""
    };
    format!("{}: {e}{hint}", path.display())
}

/// The entries of a directory, sorted.
fn list(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut paths = fs::read_dir(dir)
        .and_then(|entries| {
            entries
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    paths.sort();
    Ok(paths)
}

/// The regular files of a directory whose names end in `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>, String> {
    Ok(list(dir)?
        .into_iter()
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            name.ends_with(suffix) && !name.starts_with('.')
        })
        .collect())
}
