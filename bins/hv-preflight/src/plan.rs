//! A planned VM, from flags or profiles (docs/profiles.md, read by
//! hv_common::profile, strict): whether it can be created here as
//! described, asked before an install fails halfway. The checks themselves
//! live in hv_common::plan, because hv-define makes the same ones before it
//! creates anything.

use hv_common::checks::Check;
use hv_common::plan::{self, Budget};
use hv_common::profile::{self, Profile};
use hv_common::{cli, fsutil, Error, Result};
use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use virt::connect::Connect;

/// What the flags say of every planned VM: --memory, --vcpus, --disk,
/// --pool, --dir and --iso describe the one VM --name names, or fill in
/// what a profile leaves out.
#[derive(Debug, Default, Clone)]
pub struct Defaults {
    pub memory: Option<u64>,
    pub vcpus: Option<u32>,
    pub disk: Option<u64>,
    pub pool: Option<String>,
    pub dir: Option<PathBuf>,
    pub iso: Option<String>,
}

/// The planned VMs, and what is said of all of them.
#[derive(Debug)]
pub struct Request {
    pub from: Source,
    pub defaults: Defaults,
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

/// The planned VMs, read once for every host of the run (stdin cannot be
/// read twice).
pub fn read(request: &Request, status: &mut cli::Status) -> Result<Vec<Profile>> {
    Ok(match &request.from {
        Source::Name(name) => vec![Profile {
            name: name.clone(),
            ..Profile::default()
        }],
        Source::Profiles(file) => read_profiles(file, status)?,
    })
}

/// One host's planned VMs, counted together against that host.
pub fn check(
    conn: &Connect,
    request: &Request,
    profiles: Vec<Profile>,
    budget: &mut Budget,
    machine: hv_common::storage::Machine,
) -> Vec<Check> {
    let mut named = HashSet::new();
    let mut out = Vec::new();
    for p in profiles {
        let p = with_defaults(p, request);
        out.extend(plan::check_profile(
            conn,
            &request.iso_library,
            budget,
            &p,
            &mut named,
            machine,
        ));
    }
    out
}

fn with_defaults(mut p: Profile, request: &Request) -> Profile {
    let d = &request.defaults;
    if p.memory().is_none() {
        p.memory_bytes = d.memory;
    }
    p.vcpus = p.vcpus.or(d.vcpus);
    if p.pool.is_none() && p.dir.is_none() {
        p.pool.clone_from(&d.pool);
        p.dir.clone_from(&d.dir);
    }
    if p.planned_disks().is_empty() {
        p.disk_bytes = d.disk;
    }
    p.iso = p.iso.or_else(|| d.iso.clone());
    p
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
    let shown = if file == Path::new("-") {
        "stdin".to_owned()
    } else {
        file.display().to_string()
    };
    let text = String::from_utf8_lossy(&data);
    let mut out = Vec::new();
    for read in profile::parse_all(&text, &shown) {
        match read {
            Ok(r) => out.push(r.profile),
            Err(e) => {
                cli::warn(format!("{e}; this profile is not checked"));
                status.malformed();
            }
        }
    }
    Ok(out)
}
