//! The cloud-init NoCloud seed: an ISO 9660 volume labelled `cidata`
//! holding meta-data, user-data and network-config, where cloud-init looks
//! for it. xorriso writes and reads it (what virt-install and cloud-localds
//! use), so no ISO code of hv's own has to be trusted.

use crate::profile::CloudInit;
use crate::{cli, Code, Error, Result};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes the seed at `seed` (created new by the caller) from `files`.
pub fn write<N: AsRef<str>>(seed: &Path, files: &[(N, String)]) -> Result<()> {
    let tmp = seed.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::create_dir(&tmp)
        .map_err(|e| Error::io(format!("cannot create {}", tmp.display()), e))?;
    let result = (|| {
        for (name, body) in files {
            let name = name.as_ref();
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(tmp.join(name))
                .map_err(|e| Error::io(format!("cannot write {name} in {}", tmp.display()), e))?;
            f.write_all(body.as_bytes())
                .map_err(|e| Error::io(format!("cannot write {name} in {}", tmp.display()), e))?;
        }
        let out = cli::child_command("xorriso")
            .args(["-as", "mkisofs", "-quiet", "-output"])
            .arg(seed)
            .args(["-volid", "cidata", "-joliet", "-rock"])
            .arg(&tmp)
            .output()
            .map_err(|e| Error::io("cannot run xorriso, which writes the cloud-init seed (apt-get install xorriso)", e))?;
        if !out.status.success() {
            return Err(Error::new(
                Code::Io,
                format!(
                    "xorriso could not write the cloud-init seed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// meta-data, user-data and (when given) network-config. YAML values are
/// written as JSON strings, which YAML reads as they are.
pub fn files(ci: &CloudInit, vm: &str, uuid: &str) -> Vec<(&'static str, String)> {
    let q = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let hostname = ci.hostname.clone().unwrap_or_else(|| hostname_from(vm));
    let mut meta = format!("instance-id: {uuid}\nlocal-hostname: {hostname}\n");
    if !ci.ssh_authorized_keys.is_empty() {
        meta += "public-keys:\n";
        for k in &ci.ssh_authorized_keys {
            meta += &format!("  - {}\n", q(k));
        }
    }
    let user = match &ci.user_data {
        Some(u) => u.clone(),
        None => {
            let mut u = format!("#cloud-config\nhostname: {hostname}\n");
            if !ci.ssh_authorized_keys.is_empty() {
                u += "ssh_authorized_keys:\n";
                for k in &ci.ssh_authorized_keys {
                    u += &format!("  - {}\n", q(k));
                }
            }
            u
        }
    };
    let mut files = vec![("meta-data", meta), ("user-data", user)];
    match &ci.network_config {
        Some(serde_json::Value::String(s)) => files.push(("network-config", s.clone())),
        Some(v) => files.push(("network-config", v.to_string())),
        None => {}
    }
    files
}

/// A host name from a VM name: letters, digits and '-', at most 63.
pub fn hostname_from(vm: &str) -> String {
    let h: String = vm
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let h = h.trim_matches('-');
    let h: String = h.chars().take(63).collect();
    if h.is_empty() {
        "vm".to_owned()
    } else {
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_says_the_hostname_and_keys() {
        let ci = CloudInit {
            hostname: None,
            ssh_authorized_keys: vec!["ssh-ed25519 AAAA a\"b".into()],
            user_data: None,
            network_config: Some(serde_json::json!({"version": 2})),
        };
        let files = files(&ci, "Web 1 ü", "u-1");
        assert_eq!(files[0].1, "instance-id: u-1\nlocal-hostname: web-1\npublic-keys:\n  - \"ssh-ed25519 AAAA a\\\"b\"\n");
        assert!(files[1]
            .1
            .starts_with("#cloud-config\nhostname: web-1\nssh_authorized_keys:\n"));
        assert_eq!(files[2], ("network-config", "{\"version\":2}".to_owned()));
    }
}

/// The files of an existing seed, read back with xorriso (for hv-clone,
/// which gives a clone a seed of its own), extracted in `work_dir`. xorriso
/// reads a missing file, or any file, as blank media and says nothing: a
/// seed must be a file and hold meta-data.
pub fn read(seed: &Path, work_dir: &Path) -> Result<Vec<(String, String)>> {
    if !std::fs::metadata(seed).is_ok_and(|m| m.is_file()) {
        return Err(Error::new(
            Code::NotFound,
            format!("the cloud-init seed {} is gone: hv-rm --remove-storage, or redefine the VM without it", seed.display()),
        ));
    }
    // Clones of one source read its seed at the same time: each its own directory.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = work_dir.join(format!(".hv-seed-read-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = (|| {
        let out = cli::child_command("xorriso")
            .args(["-osirrox", "on", "-indev"])
            .arg(seed)
            .args(["-extract", "/"])
            .arg(&tmp)
            .output()
            .map_err(|e| {
                Error::io(
                    "cannot run xorriso, which reads the cloud-init seed (apt-get install xorriso)",
                    e,
                )
            })?;
        if !out.status.success() {
            return Err(Error::new(
                Code::Io,
                format!(
                    "xorriso could not read the cloud-init seed {}: {}",
                    seed.display(),
                    last_line(&out.stderr)
                ),
            ));
        }
        let mut files = Vec::new();
        for name in ["meta-data", "user-data", "network-config", "vendor-data"] {
            match crate::fsutil::read_limited(&tmp.join(name), 1 << 20) {
                Ok(body) => {
                    files.push((name.to_owned(), String::from_utf8_lossy(&body).into_owned()))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::io(
                        format!("cannot read {name} of {}", seed.display()),
                        e,
                    ))
                }
            }
        }
        if !files.iter().any(|(name, _)| name == "meta-data") {
            return Err(Error::new(
                Code::Corrupt,
                format!(
                    "{} is not a cloud-init seed: it holds no meta-data",
                    seed.display()
                ),
            ));
        }
        Ok(files)
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn last_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// A seed's files for another VM: its own instance-id and host name (so
/// cloud-init runs again and names it), everything else as it was.
pub fn renamed(files: &[(String, String)], uuid: &str, hostname: &str) -> Vec<(String, String)> {
    files
        .iter()
        .map(|(name, body)| {
            let body = match name.as_str() {
                "meta-data" => set_key(
                    &set_key(body, "instance-id", uuid),
                    "local-hostname",
                    hostname,
                ),
                "user-data" if body.starts_with("#cloud-config") => {
                    replace_key(body, "hostname", hostname)
                }
                _ => body.clone(),
            };
            (name.clone(), body)
        })
        .collect()
}

/// `key: value` at the top level, replaced or added.
fn set_key(body: &str, key: &str, value: &str) -> String {
    if body.lines().any(|l| l.starts_with(&format!("{key}:"))) {
        replace_key(body, key, value)
    } else {
        format!("{key}: {value}\n{body}")
    }
}

fn replace_key(body: &str, key: &str, value: &str) -> String {
    let mut out: String = body
        .lines()
        .map(|l| {
            if l.starts_with(&format!("{key}:")) {
                format!("{key}: {value}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    if body.ends_with('\n') {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod renamed_tests {
    use super::*;

    #[test]
    fn a_clone_gets_its_own_instance_and_host_name_and_keeps_the_rest() {
        let files = vec![
            (
                "meta-data".to_owned(),
                "instance-id: a\nlocal-hostname: web\npublic-keys:\n  - \"k\"\n".to_owned(),
            ),
            (
                "user-data".to_owned(),
                "#cloud-config\nhostname: web\nruncmd: [x]\n".to_owned(),
            ),
            ("network-config".to_owned(), "{}".to_owned()),
        ];
        let out = renamed(&files, "b", "web-2");
        assert_eq!(
            out[0].1,
            "instance-id: b\nlocal-hostname: web-2\npublic-keys:\n  - \"k\"\n"
        );
        assert_eq!(out[1].1, "#cloud-config\nhostname: web-2\nruncmd: [x]\n");
        assert_eq!(out[2].1, "{}");
        let bare = renamed(&[("meta-data".to_owned(), "x: 1\n".to_owned())], "c", "h");
        assert_eq!(bare[0].1, "local-hostname: h\ninstance-id: c\nx: 1\n");
    }
}
