//! The contract every command keeps with its users and the commands
//! around it (docs/records.md): flags, records out and targets in, errors
//! with stable codes and exit statuses, the parallel runner and the bulk
//! driver on top of it, check records, terminal output.

pub mod across;
pub mod audit;
pub mod bulk;
pub mod checks;
pub mod choice;
pub mod cli;
pub mod error;
pub mod hosts;
pub mod manual;
pub mod objects;
pub mod output;
pub mod progress;
pub mod runner;
pub mod targets;
