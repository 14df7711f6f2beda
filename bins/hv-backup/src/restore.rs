//! `hv-backup restore`: disks back to new files, sparse, each checked
//! chunk by chunk and against the backup's SHA-256 (where it has one)
//! before it takes its final name; optionally
//! the domain redefined around them. Nothing existing is replaced without
//! `--force`, and a failed restore leaves no file behind.

use crate::direct::RawWriter;
use crate::format::{Image, Manifest};
use crate::load::{self, Opener, Piece};
use crate::source::{QemuNbd, RunDir};
use hv_common::domain::xml_escape;
use hv_common::{Code, Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DiskFormat {
    Qcow2,
    Raw,
}

impl DiskFormat {
    pub fn name(self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        }
    }

    /// The format a restore writes when none is asked for: the disk's own.
    pub fn of(image: &Image) -> DiskFormat {
        if image.format == "qcow2" {
            DiskFormat::Qcow2
        } else {
            DiskFormat::Raw
        }
    }
}

/// A restored disk: where it went, and the SHA-256 of what was written.
pub struct Restored {
    pub target: String,
    pub path: PathBuf,
    pub format: DiskFormat,
    pub sha256: String,
}

/// Restores `image` to a new file at `dest`, via a hidden partial file.
pub fn to_file(
    op: &Opener,
    manifest: &Manifest,
    image: &Image,
    dest: &Path,
    format: DiskFormat,
    force: bool,
    scratch_root: &Path,
) -> Result<Restored> {
    if dest.exists() && !force {
        return Err(Error::new(
            Code::InvalidState,
            format!(
                "{} exists; restore elsewhere (--dir, -o) or add --force to replace it",
                dest.display()
            ),
        ));
    }
    let partial = partial_path(dest)?;
    let written = match format {
        DiskFormat::Raw => write_raw(op, manifest, image, &partial),
        DiskFormat::Qcow2 => write_qcow2(op, manifest, image, &partial, scratch_root),
    };
    let written = written.and_then(|sha| match hv_common::cli::interrupted() {
        Some(_) => Err(hv_common::cli::interrupted_error(&format!(
            "restore of {}",
            dest.display()
        ))),
        None => Ok(sha),
    });
    let sha256 = match written.and_then(|sha| commit(&partial, dest, force).map(|()| sha)) {
        Ok(sha) => sha,
        Err(e) => {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
    };
    Ok(Restored {
        target: image.target.clone(),
        path: dest.to_path_buf(),
        format,
        sha256,
    })
}

fn partial_path(dest: &Path) -> Result<PathBuf> {
    let name = dest
        .file_name()
        .ok_or_else(|| Error::usage(format!("{} is not a file path", dest.display())))?;
    let salt = crate::crypt::random_hex::<4>()?;
    Ok(dest.with_file_name(format!(".{}.partial-{salt}", name.to_string_lossy())))
}

/// Gives the verified partial file its name: a hard link refuses to
/// replace an existing file, so a race with another writer loses nothing.
fn commit(partial: &Path, dest: &Path, force: bool) -> Result<()> {
    let err = |e| Error::io(format!("cannot create {}", dest.display()), e);
    if force {
        fs::rename(partial, dest).map_err(err)?;
    } else {
        fs::hard_link(partial, dest).map_err(err)?;
        fs::remove_file(partial).map_err(err)?;
    }
    // The name, too, must survive a crash once the restore says it is done.
    let dir = dest.parent().filter(|d| !d.as_os_str().is_empty());
    File::open(dir.unwrap_or(Path::new(".")))
        .and_then(|d| d.sync_all())
        .map_err(err)
}

fn create_new(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))
}

fn write_raw(op: &Opener, manifest: &Manifest, image: &Image, path: &Path) -> Result<String> {
    let file = create_new(path)?;
    let err = |e| Error::io(format!("cannot write {}", path.display()), e);
    file.set_len(image.virtual_size_bytes).map_err(err)?;
    let mut out = RawWriter::new(file, path, manifest.chunk_size as usize);
    let sha = load::read_image(
        op,
        image,
        manifest.chunk_size,
        |offset, piece| match piece {
            Piece::Data(d) => out.write_at(d, offset).map_err(err),
            Piece::Zeros(_) => Ok(()), // left as a hole
        },
    )?;
    out.sync().map_err(err)?;
    Ok(sha)
}

fn write_qcow2(
    op: &Opener,
    manifest: &Manifest,
    image: &Image,
    path: &Path,
    scratch_root: &Path,
) -> Result<String> {
    drop(create_new(path)?);
    let out = hv_common::cli::child_command("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(path)
        .arg(image.virtual_size_bytes.to_string())
        .output()
        .map_err(|e| Error::io("cannot run qemu-img (install qemu-utils)", e))?;
    if !out.status.success() {
        return Err(Error::new(
            Code::Io,
            format!(
                "qemu-img cannot create {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    let dir = RunDir::create(scratch_root, "restore")?;
    let server = QemuNbd::serve(path, "qcow2", &dir.0, true, None, &image.target)?;
    let mut client = server.connect()?;
    if client.read_only() {
        return Err(Error::new(
            Code::Io,
            format!("qemu-nbd serves {} read-only", path.display()),
        ));
    }
    let err = |e: std::io::Error| Error::io(format!("cannot write {}", path.display()), e);
    let sha = load::read_image(
        op,
        image,
        manifest.chunk_size,
        |offset, piece| match piece {
            Piece::Data(d) => client.write_at(offset, d).map_err(err),
            Piece::Zeros(_) => Ok(()),
        },
    )?;
    client.flush().map_err(err)?;
    drop(client);
    server.finish()?;
    File::open(path).and_then(|f| f.sync_all()).map_err(err)?;
    Ok(sha)
}

/// Streams `image` raw, zeros included, to `out` (stdout for `-o -`).
pub fn to_stream(
    op: &Opener,
    manifest: &Manifest,
    image: &Image,
    out: &mut impl Write,
) -> Result<()> {
    let zeros = vec![0u8; manifest.chunk_size as usize];
    let mut sent = 0u64;
    // A stream cut short is a disk cut short: unlike a listing that `head`
    // ends, a closed pipe here fails the restore (exit 1), so
    // `hv-backup restore -o - … | consumer` in a script does not pass
    // when the consumer gave up.
    let cut = |e: std::io::Error, sent: u64| {
        Error::new(
            Code::Io,
            format!(
                "disk {}: stdout failed after {sent} of {} bytes ({e}); the stream is incomplete",
                image.target, image.virtual_size_bytes
            ),
        )
    };
    let _ = load::read_image(op, image, manifest.chunk_size, |_, piece| {
        let r = match piece {
            Piece::Data(d) => out.write_all(d).map(|()| d.len()),
            Piece::Zeros(n) => out.write_all(&zeros[..n]).map(|()| n),
        };
        sent += r.map_err(|e| cut(e, sent))? as u64;
        Ok(())
    })?;
    out.flush().map_err(|e| cut(e, sent))
}

/// A file name from a VM name that cannot leave its directory.
pub fn safe_file_stem(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c == '/' || c == '\0' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let trimmed = cleaned.trim_start_matches('.');
    if trimmed.is_empty() {
        "vm".into()
    } else {
        trimmed.to_owned()
    }
}

/// The domain XML to define around restored disks: new name, no UUID and
/// no MACs (libvirt makes new ones, so the copy can run beside the
/// original), disk sources and formats pointing at the restored files,
/// backing chains dropped (the restored images are flat).
pub fn rewrite_domain_xml(
    xml: &str,
    name: &str,
    disks: &[Restored],
    nvram: Option<&Path>,
) -> Result<String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| {
        Error::new(
            Code::Corrupt,
            format!("the backup's domain XML is unreadable: {e}"),
        )
    })?;
    let root = doc.root_element();
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    for node in root.children().filter(|n| n.is_element()) {
        match node.tag_name().name() {
            "name" => edits.push((node.range(), format!("<name>{}</name>", xml_escape(name)))),
            "uuid" => edits.push((node.range(), String::new())),
            "os" => {
                if let (Some(n), Some(path)) =
                    (node.children().find(|c| c.has_tag_name("nvram")), nvram)
                {
                    let template = n
                        .attribute("template")
                        .map(|t| format!(" template='{}'", xml_escape(t)))
                        .unwrap_or_default();
                    let text = format!(
                        "<nvram{template}>{}</nvram>",
                        xml_escape(&path.display().to_string())
                    );
                    edits.push((n.range(), text));
                }
            }
            "devices" => device_edits(node, disks, &mut edits),
            _ => {}
        }
    }
    edits.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
    let mut out = xml.to_owned();
    for (range, text) in edits {
        out.replace_range(range, &text);
    }
    Ok(out)
}

fn device_edits(
    devices: roxmltree::Node,
    disks: &[Restored],
    edits: &mut Vec<(std::ops::Range<usize>, String)>,
) {
    for dev in devices.children().filter(|n| n.is_element()) {
        match dev.tag_name().name() {
            "interface" => {
                if let Some(mac) = dev.children().find(|c| c.has_tag_name("mac")) {
                    edits.push((mac.range(), String::new()));
                }
            }
            "disk" => {
                let target = dev
                    .children()
                    .find(|c| c.has_tag_name("target"))
                    .and_then(|t| t.attribute("dev"));
                let Some(restored) = disks.iter().find(|d| Some(d.target.as_str()) == target)
                else {
                    continue;
                };
                if let Some(attr) = dev.attribute_node("type") {
                    edits.push((attr.range(), "type='file'".into()));
                }
                for child in dev.children().filter(|c| c.is_element()) {
                    match child.tag_name().name() {
                        "source" => edits.push((
                            child.range(),
                            format!(
                                "<source file='{}'/>",
                                xml_escape(&restored.path.display().to_string())
                            ),
                        )),
                        "backingStore" => edits.push((child.range(), String::new())),
                        "driver" => {
                            if let Some(attr) = child.attribute_node("type") {
                                edits.push((
                                    attr.range(),
                                    format!("type='{}'", restored.format.name()),
                                ));
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_the_directory() {
        assert_eq!(safe_file_stem("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(safe_file_stem("..."), "vm");
        assert_eq!(safe_file_stem("web 1 ünï"), "web 1 ünï");
    }

    #[test]
    fn the_redefined_domain_points_at_the_restored_disks() {
        let xml = "<domain type='kvm'><name>web1</name><uuid>1b2c</uuid>\
            <os><type>hvm</type><nvram template='/t.fd'>/old/n.fd</nvram></os><devices>\
            <disk type='block' device='disk'><driver name='qemu' type='raw'/><source dev='/dev/x'/>\
            <backingStore/><target dev='vda' bus='virtio'/></disk>\
            <disk type='file' device='cdrom'><source file='/iso'/><target dev='sda'/></disk>\
            <interface type='network'><mac address='52:54:00:00:00:01'/><source network='default'/></interface>\
            </devices></domain>";
        let restored = [Restored {
            target: "vda".into(),
            path: PathBuf::from("/r/web1 copy-vda.qcow2"),
            format: DiskFormat::Qcow2,
            sha256: String::new(),
        }];
        let out =
            rewrite_domain_xml(xml, "web1 copy", &restored, Some(Path::new("/r/n.fd"))).unwrap();
        assert!(out.contains("<name>web1 copy</name>"));
        assert!(!out.contains("<uuid>"));
        assert!(!out.contains("52:54:00"));
        assert!(out.contains("<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/r/web1 copy-vda.qcow2'/><target"));
        assert!(
            out.contains("<source file='/iso'/>"),
            "other disks untouched"
        );
        assert!(out.contains("<nvram template='/t.fd'>/r/n.fd</nvram>"));
        roxmltree::Document::parse(&out).unwrap();
    }
}
