//! hv-common: what two or more hv commands need, in three parts whose
//! folders say what they are: the contract with users and with other
//! commands (`contract`: flags, records, errors, exit status, bulk work;
//! docs/records.md), libvirt access (`libvirt`), and the on-disk formats
//! several commands read (`formats`). Each module is also re-exported at
//! the top (`hv_common::cli`), the path commands use.

pub mod contract;
pub mod formats;
pub mod fsutil;
pub mod libvirt;
pub mod making;
pub mod plan;
pub mod retention;
pub mod size;
pub mod time;

pub use contract::{
    across, audit, bulk, checks, choice, cli, error, hosts, manual, objects, output, progress,
    runner, targets,
};
pub use formats::{backup_index, health_state, iso_library, profile};
pub use libvirt::{
    boot_order, connect, domain, ffi, inventory, lifecycle, local_qemu, network, remote, snapshot,
    state, storage,
};

pub use choice::Choice;
pub use error::{Code, Error, Exit, Result};
pub use state::{State, VmState};
