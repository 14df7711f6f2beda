//! hv-pool: the host's storage pools as records, and new directory pools
//! from small JSON specs. hv-define, hv-clone and hv-backup put disks in
//! pools; this is how a host gets them without hand-written pool XML, the
//! same way on every host (a spec file in a configuration repository, or
//! the NixOS module's `services.hv.pools`).

use clap::{Parser, Subcommand};
use hv_common::cli::{ConnectArgs, OutputArgs};
use hv_common::manual::Manual;
use hv_common::objects;
use hv_common::output::{col, Column, Printer, Show};
use hv_common::storage;
use hv_common::{Code, Error, Exit, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use virt::connect::Connect;
use virt::storage_pool::StoragePool;

#[derive(Debug, Parser)]
#[command(
    name = "hv-pool",
    version,
    about = "List the host's storage pools as records, and define directory pools from JSON specs",
    long_about = "ls prints each storage pool of the host (or of several: -c repeated, --hosts) \
        as a record: type, path, whether it runs and starts with the host, capacity, allocation \
        and what is free. define makes directory pools from specs (files, or JSON lines on \
        stdin: {\"name\": \"images\", \"path\": \"/srv/images\"}): the pool is defined, its \
        directory made, started and set to autostart, all or nothing; --dry-run prints the \
        XML and makes nothing."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the host's storage pools as records
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Define directory pools from JSON specs, all or nothing each
    Define(DefineArgs),
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Only these pools [default: all]
    #[arg(value_name = "POOL")]
    pub names: Vec<String>,
    #[command(flatten)]
    pub fields: hv_common::cli::FieldsArgs,
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, clap::Args)]
pub struct DefineArgs {
    /// Spec files, each one JSON object or JSON lines [default: JSON lines on stdin]
    #[arg(value_name = "SPEC")]
    pub specs: Vec<PathBuf>,
    /// An existing one of the same name is left as it is (ok, changed false) rather than refused: for a host's configuration applied at every boot
    #[arg(long)]
    pub keep_existing: bool,
    /// Print each pool's XML, make nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub const MANUAL: Manual = Manual {
    exit_status: hv_common::manual::EXIT_STATUS,
    environment: hv_common::manual::ENVIRONMENT,
    examples: &[
        ("The pools and what is free in each:", "hv-pool ls --format table"),
        ("Every host's pools:", "hv-pool ls --hosts /etc/hv/hosts"),
        ("A directory pool from a spec:", "echo '{\"name\": \"images\", \"path\": \"/srv/images\"}' | hv-pool define"),
        ("See its XML first:", "hv-pool define --dry-run images.json"),
    ],
    notes: &[
        "ls records: name, uuid, host (when hosts are named), type, path, active, autostart, persistent, capacity_bytes, allocation_bytes, available_bytes (null for a pool that is not running). A spec has name, path (an absolute directory: made when missing) and optionally autostart (default true) and type (dir, the only one). define records: name, uuid, action (\"define\"), ok, path, changed, and xml with --dry-run. An unknown field or a relative path is refused, naming it. docs/networks.md.",
    ],
};

static LS_COLUMNS: [Column; 7] = [
    col("name", "name", Show::Plain),
    col("type", "type", Show::Plain),
    col("active", "active", Show::Plain),
    col("autostart", "autostart", Show::Plain),
    col("capacity", "capacity_bytes", Show::Bytes),
    col("available", "available_bytes", Show::Bytes),
    col("path", "path", Show::Plain),
];

static DEFINE_COLUMNS: [Column; 4] = [
    col("name", "name", Show::Plain),
    col("ok", "ok", Show::Plain),
    col("changed", "changed", Show::Plain),
    col("path", "path", Show::Plain),
];

pub fn run(cli: Cli) -> Result<Exit> {
    match cli.command {
        Command::Ls(a) => ls(a),
        Command::Define(a) => define(a),
    }
}

/// A pool as `hv-pool ls` prints it.
#[derive(Debug, Serialize)]
struct PoolRecord {
    name: String,
    uuid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    path: Option<String>,
    active: bool,
    autostart: bool,
    persistent: bool,
    capacity_bytes: Option<u64>,
    allocation_bytes: Option<u64>,
    available_bytes: Option<u64>,
}

fn pool_record(pool: &StoragePool, host: Option<&str>) -> Result<PoolRecord> {
    let name = pool
        .name()
        .map_err(|e| Error::libvirt("cannot read a pool's name", &e))?;
    let xml = pool
        .xml_desc(0)
        .map_err(|e| Error::libvirt(format!("cannot read pool {name}"), &e))?;
    let kind = roxmltree::Document::parse(&xml)
        .ok()
        .and_then(|d| d.root_element().attribute("type").map(str::to_owned))
        .unwrap_or_default();
    let active = pool.is_active().unwrap_or(false);
    let info = pool.info().ok().filter(|_| active);
    Ok(PoolRecord {
        uuid: pool.uuid_string().unwrap_or_default(),
        host: host.map(str::to_owned),
        kind,
        path: storage::target_path(&xml),
        active,
        autostart: pool.autostart().unwrap_or(false),
        persistent: pool.is_persistent().unwrap_or(false),
        capacity_bytes: info.as_ref().map(|i| i.capacity),
        allocation_bytes: info.as_ref().map(|i| i.allocation),
        available_bytes: info.as_ref().map(|i| i.available),
        name,
    })
}

/// The fields of a [`PoolRecord`], for `--fields`.
const LS_FIELDS: &[&str] = &[
    "name",
    "uuid",
    "host",
    "type",
    "path",
    "active",
    "autostart",
    "persistent",
    "capacity_bytes",
    "allocation_bytes",
    "available_bytes",
];

fn ls(a: LsArgs) -> Result<Exit> {
    let fields = a.fields.checked(LS_FIELDS)?;
    let mut printer = Printer::stdout(a.output.format(), &LS_COLUMNS).only(&fields);
    let exit = objects::list(
        &a.connect,
        &a.names,
        ("storage pool", "hv-pool ls"),
        &mut printer,
        |conn, host| {
            let pools = conn
                .list_all_storage_pools(0)
                .map_err(|e| Error::libvirt("cannot list the storage pools", &e))?;
            pools.iter().map(|p| pool_record(p, host)).collect()
        },
    )?;
    printer.finish()?;
    Ok(exit)
}

impl objects::Listed for PoolRecord {
    fn name(&self) -> &str {
        &self.name
    }
}

/// A pool spec: what `hv-pool define` and the NixOS module's
/// `services.hv.pools` take.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    name: String,
    path: PathBuf,
    #[serde(default = "yes")]
    autostart: bool,
    #[serde(default = "dir", rename = "type")]
    kind: String,
}

fn yes() -> bool {
    true
}

fn dir() -> String {
    "dir".into()
}

/// What hv-pool define says of one pool, after `name`, `uuid`, `action`, `ok`.
#[derive(Debug, Serialize)]
struct Defined {
    path: String,
    changed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    dry_run: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    xml: Option<String>,
}

fn define(a: DefineArgs) -> Result<Exit> {
    let mut printer = Printer::stdout(a.output.format(), &DEFINE_COLUMNS);
    let exit = objects::define(
        &a.connect,
        &a.specs,
        &mut printer,
        |spec: &Spec| spec.name.clone(),
        |conn, spec| define_one(conn, spec, a.dry_run, a.keep_existing),
    )?;
    printer.finish()?;
    Ok(exit)
}

fn define_one(
    conn: &Connect,
    spec: &Spec,
    dry_run: bool,
    keep_existing: bool,
) -> Result<(String, Defined)> {
    if spec.kind != "dir" {
        return Err(Error::usage(format!(
            "type {:?}: hv-pool defines directory pools (\"dir\"); define others with virsh pool-define",
            spec.kind
        )));
    }
    if spec.name.is_empty() || spec.name.contains('/') {
        return Err(Error::usage("name: give a pool name without '/'"));
    }
    if !spec.path.is_absolute() {
        return Err(Error::usage(format!(
            "path {:?} is relative: give an absolute directory",
            spec.path
        )));
    }
    if let (Ok(there), true) = (conn.lookup_storage_pool_by_name(&spec.name), keep_existing) {
        return Ok((
            there.uuid_string().unwrap_or_default(),
            Defined {
                path: spec.path.display().to_string(),
                changed: false,
                dry_run: None,
                xml: None,
            },
        ));
    }
    if conn.lookup_storage_pool_by_name(&spec.name).is_ok() {
        return Err(Error::new(
            Code::InvalidState,
            format!(
                "pool {} exists already: hv-pool never replaces one (hv-pool ls shows it)",
                spec.name
            ),
        ));
    }
    let path = spec.path.display().to_string();
    let xml = format!(
        "<pool type='dir'><name>{}</name><target><path>{}</path></target></pool>",
        hv_common::domain::xml_escape(&spec.name),
        hv_common::domain::xml_escape(&path)
    );
    if dry_run {
        let uuid = hv_common::making::new_uuid()?;
        return Ok((
            uuid,
            Defined {
                path,
                changed: false,
                dry_run: Some(true),
                xml: Some(xml),
            },
        ));
    }
    let pool = conn.define_storage_pool_xml(&xml, 0).map_err(|e| {
        Error::libvirt_needing(
            "libvirt refused the pool",
            &e,
            &["storage-pool.write", "storage-pool.save"],
        )
    })?;
    // All or nothing: a pool that cannot be built or started goes again.
    // A dir pool's build makes the directory and leaves what is in an
    // existing one alone.
    let made = (|| {
        pool.build(0)
            .map_err(|e| Error::libvirt(format!("cannot make the directory {path}"), &e))?;
        pool.create(0)
            .map_err(|e| Error::libvirt(format!("cannot start pool {}", spec.name), &e))?;
        pool.set_autostart(spec.autostart)
            .map_err(|e| Error::libvirt("cannot set autostart", &e))?;
        Ok(())
    })();
    if let Err(e) = made {
        let _ = pool.destroy();
        let _ = pool.undefine();
        return Err(e);
    }
    Ok((
        pool.uuid_string().unwrap_or_default(),
        Defined {
            path,
            changed: true,
            dry_run: None,
            xml: None,
        },
    ))
}

#[cfg(test)]
mod fields_tests {
    use super::*;

    #[test]
    fn fields_knows_every_field_of_a_record() {
        let record = hv_common::output::to_record(&PoolRecord {
            name: "default".into(),
            uuid: "u".into(),
            host: Some("h1".into()),
            kind: "dir".into(),
            path: Some("/p".into()),
            active: true,
            autostart: true,
            persistent: true,
            capacity_bytes: Some(1),
            allocation_bytes: Some(1),
            available_bytes: Some(1),
        });
        let keys: Vec<&str> = record.keys().map(String::as_str).collect();
        assert_eq!(keys, LS_FIELDS);
    }
}
