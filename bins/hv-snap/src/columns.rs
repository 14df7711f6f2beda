//! The table columns of hv-snap's records. Each column names a record
//! field (the structs in `create`, `ls`, `pick` and `prune`): rename a field
//! and its column must follow, or it shows blank at a terminal. create,
//! revert and rm share one table, so mixed output lines up.

use hv_common::output::{col, Column, Show};

/// create, revert and rm (revert and rm records have no `kind`).
pub static ACTION_COLUMNS: [Column; 5] = [
    col("name", "name", Show::Plain),
    col("ok", "ok", Show::Plain),
    col("snapshot", "snapshot", Show::Plain),
    col("kind", "kind", Show::Plain),
    col("ms", "elapsed_ms", Show::Plain),
];

/// ls: one row per snapshot.
pub static LS_COLUMNS: [Column; 7] = [
    col("name", "name", Show::Plain),
    col("snapshot", "snapshot", Show::Plain),
    col("created", "created_at", Show::Plain),
    col("state", "state", Show::Plain),
    col("kind", "kind", Show::Plain),
    col("current", "current", Show::Plain),
    col("hv", "hv_made", Show::Plain),
];

/// prune: one row per VM, its judged snapshots by name.
pub static PRUNE_COLUMNS: [Column; 4] = [
    col("name", "name", Show::Plain),
    col("ok", "ok", Show::Plain),
    col("snapshots", "snapshots", Show::Join(Some("snapshot"))),
    col("removed", "removed", Show::Join(None)),
];

/// schedule: one row per VM, its policies by name.
pub static SCHEDULE_COLUMNS: [Column; 4] = [
    col("name", "name", Show::Plain),
    col("ok", "ok", Show::Plain),
    col("changed", "changed", Show::Plain),
    col("policies", "policies", Show::Join(Some("policy"))),
];
