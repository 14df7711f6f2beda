//! A planned VM, from flags or profile records: whether it can be created
//! here as described, asked before an install fails halfway. Only what a
//! profile gives is checked (a profile without a disk has no storage
//! check), and a misspelled field is an error: ignoring `memroy` would pass
//! a check that was never made.

use crate::budget::{dir_space, Budget};
use hv_common::checks::{Check, Status, Unit};
use hv_common::iso_library::{self, Library};
use hv_common::output::human_bytes;
use hv_common::{cli, fsutil, size, Error, Result};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use virt::connect::Connect;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub memory: Option<u64>,
    pub vcpus: Option<u32>,
    pub disk: Option<u64>,
    pub pool: Option<String>,
    pub dir: Option<PathBuf>,
    pub iso: Option<String>,
}

const FIELDS: &str = "name, memory, memory_bytes, vcpus, disk, disk_bytes, pool, dir, iso";

/// The planned VMs, and what is said of all of them: --memory, --vcpus,
/// --disk, --pool, --dir and --iso describe the one VM --name names, or
/// fill in what a profile leaves out (`defaults`, whose name is unused).
#[derive(Debug)]
pub struct Request {
    pub from: Source,
    pub defaults: Profile,
    /// Where an --iso given by name is looked up.
    pub iso_library: PathBuf,
}

/// Where the planned VMs come from.
#[derive(Debug)]
pub enum Source {
    /// One VM, described by the flags alone (--name).
    Name(String),
    /// Profile records, one per line, from a file or `-` for stdin (--profiles).
    Profiles(PathBuf),
}

pub fn check(
    conn: &Connect,
    request: &Request,
    budget: &mut Budget,
    status: &mut cli::Status,
) -> Result<Vec<Check>> {
    let profiles = match &request.from {
        Source::Name(name) => vec![Profile {
            name: name.clone(),
            ..Profile::default()
        }],
        Source::Profiles(file) => read_profiles(file, status)?,
    };
    let mut named = HashSet::new();
    let mut out = Vec::new();
    for p in profiles {
        let p = with_defaults(p, request);
        out.extend(check_one(
            conn,
            &request.iso_library,
            budget,
            &p,
            &mut named,
        ));
    }
    Ok(out)
}

fn with_defaults(mut p: Profile, request: &Request) -> Profile {
    let d = &request.defaults;
    p.memory = p.memory.or(d.memory);
    p.vcpus = p.vcpus.or(d.vcpus);
    p.disk = p.disk.or(d.disk);
    if p.pool.is_none() && p.dir.is_none() {
        p.pool.clone_from(&d.pool);
        p.dir.clone_from(&d.dir);
    }
    p.iso = p.iso.or_else(|| d.iso.clone());
    p
}

fn check_one(
    conn: &Connect,
    iso_library: &Path,
    budget: &mut Budget,
    p: &Profile,
    named: &mut HashSet<String>,
) -> Vec<Check> {
    let who = &p.name;
    let about = |mut c: Check| {
        c.subject.insert(0, ("name", who.clone()));
        c
    };
    let mut out = vec![about(name_free(conn, who, named))];
    if let Some(memory) = p.memory {
        out.push(about(budget.memory("plan.memory", who, memory)));
    }
    if let Some(vcpus) = p.vcpus {
        out.push(about(budget.vcpus("plan.vcpus", who, u64::from(vcpus))));
    }
    if let Some(disk) = p.disk {
        out.push(about(storage(conn, budget, p, disk)));
    }
    if let Some(iso) = &p.iso {
        out.push(about(iso_checked(iso_library, iso)));
    }
    out
}

fn name_free(conn: &Connect, name: &str, named: &mut HashSet<String>) -> Check {
    let fail = |message: String, hint: &str| {
        Check::new("plan.name", Status::Fail, message).hint(hint.to_owned())
    };
    if name.contains('/') {
        return fail(
            format!("{name:?} contains '/', which libvirt refuses in a name"),
            "choose a name without '/'",
        );
    }
    if !named.insert(name.to_owned()) {
        return fail(
            format!("{name} is planned twice"),
            "give each profile its own name",
        );
    }
    match conn.lookup_domain_by_name(name) {
        Ok(dom) => fail(
            format!(
                "a VM named {name} already exists (uuid {})",
                dom.uuid_string().unwrap_or_default()
            ),
            &format!("choose another name, or remove the old VM first: hv-rm {name:?}"),
        ),
        Err(_) => Check::new("plan.name", Status::Pass, format!("no VM is named {name}")),
    }
}

/// Where the disk goes: a directory, the pool given, or libvirt's usual
/// pool `default`.
fn storage(conn: &Connect, budget: &mut Budget, p: &Profile, disk: u64) -> Check {
    let (key, label, size, available, subject) = match &p.dir {
        Some(dir) => match dir_space(dir) {
            Ok((key, size, available)) => (key, format!("directory {}", dir.display()), size, available, ("dir", dir.display().to_string())),
            Err(e) => {
                return Check::new("plan.storage", Status::Fail, e.message)
                    .about("dir", dir.display().to_string())
                    .hint(format!("create it: mkdir -p {:?} (writable for libvirt's QEMU user), or choose another --dir or a --pool", dir.display().to_string()))
            }
        },
        None => {
            let name = p.pool.as_deref().unwrap_or("default");
            match pool_space(conn, name) {
                Ok((size, available)) => (format!("pool:{name}"), format!("pool {name}"), size, available, ("pool", name.to_owned())),
                Err((message, hint)) => {
                    return Check::new("plan.storage", Status::Fail, message)
                        .about("pool", name.to_owned())
                        .hint(hint)
                }
            }
        }
    };
    let fit = budget.space(&key, size, available, disk, disk);
    let message = match fit.status {
        Status::Fail => format!(
            "a {} disk does not fit in {label}: {} free",
            human_bytes(disk),
            human_bytes(fit.left)
        ),
        Status::Warn => format!(
            "a {} disk fits in {label} ({} free) but can fill it over {}%",
            human_bytes(disk),
            human_bytes(fit.left),
            budget.disk_warn()
        ),
        Status::Pass => format!(
            "a {} disk fits in {label} ({} free)",
            human_bytes(disk),
            human_bytes(fit.left)
        ),
    };
    Check::new("plan.storage", fit.status, message)
        .about(subject.0, subject.1)
        .measured(Unit::Bytes, disk, fit.left)
        .hint(format!("free space in the {label} (hv-snap prune, remove unused volumes or images), grow it, or put the disk elsewhere with --pool or --dir"))
}

fn pool_space(conn: &Connect, name: &str) -> std::result::Result<(u64, u64), (String, String)> {
    let pool = conn.lookup_storage_pool_by_name(name).map_err(|_| {
        (
            format!("no storage pool {name} on this host"),
            "virsh pool-list --all lists the pools; name one with --pool, or a directory with --dir".to_owned(),
        )
    })?;
    if !pool.is_active().unwrap_or(false) {
        return Err((
            format!("storage pool {name} is not active"),
            format!("virsh pool-start {name} (and virsh pool-autostart {name} so it comes back at boot)"),
        ));
    }
    let info = pool.info().map_err(|e| {
        (
            format!("cannot read pool {name}: {e}"),
            format!("virsh pool-refresh {name}"),
        )
    })?;
    Ok((info.capacity, info.available))
}

/// The ISO: admitted by hv-iso (sidecar and image present, last verify
/// not failed, same size as admitted), preferably with a signature.
fn iso_checked(library: &Path, iso: &str) -> Check {
    let lib = Library::new(library.to_path_buf());
    let as_path = Path::new(iso);
    let name = if iso.contains('/') {
        let in_library =
            as_path.parent().and_then(|p| p.canonicalize().ok()) == library.canonicalize().ok();
        match as_path.file_name().and_then(|n| n.to_str()) {
            Some(n) if in_library => n.to_owned(),
            _ => return outside_library(as_path),
        }
    } else {
        iso.to_owned()
    };
    let check = |status, message: String| {
        Check::new("plan.iso", status, message).about("image", name.clone())
    };
    let add = format!(
        "hv-iso add URL --keyring KEY --library {:?} (hv-iso ls lists the library)",
        library.display().to_string()
    );
    if let Err(e) = iso_library::check_name(&name) {
        return check(Status::Fail, e.message).hint(add);
    }
    let entry = match lib.get(&name) {
        Ok(Some(entry)) => entry,
        Ok(None) => {
            return check(
                Status::Fail,
                format!(
                    "no image {name} in the hv-iso library {}",
                    library.display()
                ),
            )
            .hint(add)
        }
        Err(e) => {
            return check(Status::Fail, e.message)
                .hint(format!("hv-iso rm {name:?} and add it again"))
        }
    };
    let s = &entry.sidecar;
    let again = format!(
        "hv-iso add --force {:?} with the same proof as before",
        s.source
    );
    match std::fs::metadata(&entry.path) {
        Err(_) => {
            return check(
                Status::Fail,
                format!("{name}: the image file is gone from the library"),
            )
            .hint(again)
        }
        Ok(m) if m.len() != s.size_bytes => {
            return check(
                Status::Fail,
                format!(
                    "{name} is {} bytes, but hv-iso admitted {} bytes: it changed since",
                    m.len(),
                    s.size_bytes
                ),
            )
            .measured(Unit::Bytes, m.len(), s.size_bytes)
            .hint(format!("hv-iso verify {name:?}, then {again}"))
        }
        Ok(_) => {}
    }
    if s.check_ok == Some(false) {
        return check(
            Status::Fail,
            format!("{name} no longer matched its sha256 at the last hv-iso verify"),
        )
        .hint(again);
    }
    let last = match (&s.checked_at, s.check_ok) {
        (Some(at), Some(true)) => format!("; last hv-iso verify matched at {at}"),
        _ => String::new(),
    };
    if s.unsigned {
        return check(Status::Warn, format!("{name} was admitted without a signature (verified by {}){last}", s.verified_by))
            .value(s.verified_by.clone())
            .hint(format!("add it again with its distributor's signature: hv-iso add --force {:?} --checksums SUMS --signature SUMS.sign --keyring KEY", s.source));
    }
    let signer = s.signer.as_deref().unwrap_or("?");
    check(
        Status::Pass,
        format!(
            "{name} was admitted by a signature from {signer} at {}{last}",
            s.verified_at
        ),
    )
    .value(s.verified_by.clone())
}

fn outside_library(path: &Path) -> Check {
    let shown = path.display().to_string();
    let check = |status, message: String| {
        Check::new("plan.iso", status, message).about("image", shown.clone())
    };
    if !path.is_file() {
        return check(Status::Fail, format!("{shown} does not exist"))
            .hint("give an image in the hv-iso library by name, or the path of an existing file");
    }
    check(Status::Warn, format!("{shown} is not in the hv-iso library: nothing proves it is what its distributor published"))
        .hint(format!("hv-iso add {shown:?} --checksums SUMS --signature SUMS.sign --keyring KEY, then --iso with its name"))
}

fn read_profiles(file: &Path, status: &mut cli::Status) -> Result<Vec<Profile>> {
    // Profiles are small; a limit keeps `--profiles /dev/zero` or an
    // endless pipe from eating memory.
    const LIMIT: u64 = 16 << 20;
    let data = if file == Path::new("-") {
        let mut data = Vec::new();
        std::io::stdin()
            .lock()
            .take(LIMIT + 1)
            .read_to_end(&mut data)
            .map_err(|e| Error::io("--profiles -: cannot read stdin", e))?;
        if data.len() as u64 > LIMIT {
            return Err(Error::usage(
                "--profiles -: stdin holds more than 16 MiB: that is not a list of profiles",
            ));
        }
        data
    } else {
        fsutil::read_named(
            file,
            "--profiles",
            LIMIT,
            "give a file of JSON profiles, one per line",
        )?
    };
    let reader = std::io::Cursor::new(data);
    let shown = if file == Path::new("-") {
        "stdin".to_owned()
    } else {
        file.display().to_string()
    };
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| Error::io(&shown, e))?;
        if line.trim().is_empty() {
            continue;
        }
        match parse_profile(&line) {
            Ok(p) => out.push(p),
            Err(why) => {
                cli::warn(format!(
                    "{shown} line {}: {why}; this profile is not checked",
                    i + 1
                ));
                status.malformed();
            }
        }
    }
    Ok(out)
}

/// One profile line; the error is the reason, for the warning that names the line.
fn parse_profile(line: &str) -> std::result::Result<Profile, String> {
    let record: Map<String, Value> = serde_json::from_str(line.trim())
        .map_err(|e| format!("not a JSON object ({e}); a profile looks like {{\"name\": \"web1\", \"memory\": \"4G\"}}"))?;
    let mut p = Profile::default();
    for (key, value) in &record {
        match key.as_str() {
            "name" => p.name = string(key, value)?,
            "memory" => p.memory = Some(sized(key, value)?),
            "memory_bytes" => p.memory = Some(count(key, value)?),
            "disk" => p.disk = Some(sized(key, value)?),
            "disk_bytes" => p.disk = Some(count(key, value)?),
            "vcpus" => {
                let n = count(key, value)?;
                p.vcpus = Some(
                    u32::try_from(n)
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or("\"vcpus\" must be at least 1")?,
                );
            }
            "pool" => p.pool = Some(string(key, value)?),
            "dir" => p.dir = Some(PathBuf::from(string(key, value)?)),
            "iso" => p.iso = Some(string(key, value)?),
            other => return Err(format!("unknown field {other:?}; a profile has {FIELDS}")),
        }
    }
    if p.name.is_empty() {
        return Err("no \"name\"".to_owned());
    }
    if p.pool.is_some() && p.dir.is_some() {
        return Err("both \"pool\" and \"dir\"; the disk goes to one of them".to_owned());
    }
    Ok(p)
}

fn string(key: &str, value: &Value) -> std::result::Result<String, String> {
    match value.as_str() {
        Some(s) if !s.is_empty() => Ok(s.to_owned()),
        _ => Err(format!("{key:?} must be a non-empty string")),
    }
}

fn sized(key: &str, value: &Value) -> std::result::Result<u64, String> {
    match value {
        Value::String(s) => size::parse(s).map_err(|e| format!("{key:?}: {e}")),
        _ => Err(format!(
            "{key:?} must be a size with a unit like \"4G\", or use \"{key}_bytes\""
        )),
    }
}

fn count(key: &str, value: &Value) -> std::result::Result<u64, String> {
    value
        .as_u64()
        .ok_or_else(|| format!("{key:?} must be a whole number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_strict() {
        let p = parse_profile(
            r#"{"name": "web 1", "memory": "4G", "vcpus": 2, "disk_bytes": 1024, "pool": "fast"}"#,
        )
        .unwrap();
        assert_eq!(p.name, "web 1");
        assert_eq!(p.memory, Some(4 << 30));
        assert_eq!(p.disk, Some(1024));
        let err = |line: &str| parse_profile(line).unwrap_err();
        assert!(err(r#"{"name": "a", "memroy": "4G"}"#).contains("unknown field \"memroy\""));
        assert!(err(r#"{"name": "a", "memory": 4096}"#).contains("memory_bytes"));
        assert!(err(r#"{"name": "a", "memory": "4096"}"#).contains("no unit"));
        assert!(err(r#"{"name": "a", "vcpus": 0}"#).contains("at least 1"));
        assert!(err(r#"{"memory": "1G"}"#).contains("no \"name\""));
        assert!(err(r#"{"name": "a", "pool": "p", "dir": "/d"}"#).contains("both"));
        assert!(err("web1").contains("not a JSON object"));
    }
}
