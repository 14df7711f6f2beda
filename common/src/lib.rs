//! hv-common: what two or more hv commands need. The contract it enforces is
//! DESIGN.md's: records on stdout, messages on stderr, one exit status
//! scheme, one way to connect and to name VMs.

pub mod backup_index;
pub mod bulk;
pub mod checks;
pub mod cli;
pub mod connect;
pub mod domain;
pub mod error;
pub mod ffi;
pub mod fsutil;
pub mod iso_library;
pub mod lifecycle;
pub mod manual;
pub mod output;
pub mod progress;
pub mod retention;
pub mod runner;
pub mod size;
pub mod snapshot;
pub mod targets;
pub mod time;

pub use error::{Code, Error, Exit, Result};
