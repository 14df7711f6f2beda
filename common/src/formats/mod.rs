//! Files other commands read: a backup repository's index (hv-backup
//! writes it; hv-health, hv-metrics and hv-preflight read it) and the ISO
//! library's sidecars (hv-iso writes them; hv-preflight, hv-health and
//! hv-metrics read them). Their layout is a format with a version, so it
//! is defined once. VM profiles: hv-define makes VMs from them and
//! hv-preflight checks plans against them. hv-health's record of its
//! repairs: hv-metrics reports it.

pub mod backup_index;
pub mod health_state;
pub mod iso_library;
pub mod profile;
