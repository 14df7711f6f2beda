//! Talking to libvirt: connecting, reading a domain's XML and state,
//! snapshots, waiting on guests, and the few C calls the `virt` crate does
//! not wrap. Nothing here prints or decides what a command reports.

pub mod boot_order;
pub mod connect;
pub mod domain;
pub mod ffi;
pub mod inventory;
pub mod lifecycle;
pub mod local_qemu;
pub mod network;
pub mod remote;
pub mod snapshot;
pub mod state;
pub mod storage;
