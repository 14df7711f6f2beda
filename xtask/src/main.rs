//! `cargo xtask gen [--check]` keeps man/ and completions/ identical to what
//! the commands' clap definitions say, so docs cannot drift from flags;
//! the bench-* tasks measure hv against the tools it replaces, on the real
//! daemon, in one run; install and deb put the same tree of files on a host
//! or into a Debian package, so a package and a plain install cannot
//! disagree on where a file goes.

mod bench;
mod bench_backup;
mod bench_hosts;
mod bench_incremental;
mod bench_iso;
mod bench_lifecycle;
mod bench_make;
mod bench_metrics;
mod bench_s3;
mod bench_top;
mod cmd;
mod complete;
mod deb;
mod deploy;
mod gen;
mod install;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Write man/*.1 and completions/* from each command's Cli
    Gen {
        /// Write nothing; fail if a checked-in file differs from what would be written
        #[arg(long)]
        check: bool,
    },
    /// Install the commands, man pages, completions, systemd units, polkit rules and /etc/hv/hv.env
    Install {
        /// Where bin/, share/ and lib/systemd/ go; /usr for a distribution's package
        #[arg(long, value_name = "DIR", default_value = "/usr/local")]
        prefix: PathBuf,
        /// Write the tree under DIR instead of / (staging for a package)
        #[arg(long, value_name = "DIR")]
        destdir: Option<PathBuf>,
        /// Install target/release as it is, without `cargo build --release` first (sudo after a user's build)
        #[arg(long)]
        no_build: bool,
    },
    /// Build target/deb/hv_VERSION_ARCH.deb from the release binaries; print its path
    Deb,
    /// Start and gracefully stop test guests: hv -j N against a sequential virsh loop
    BenchLifecycle {
        /// How many test guests
        #[arg(long, default_value_t = 10)]
        guests: usize,
    },
    /// hv-backup against zstd|age, restic, borg and virtnbdbackup: medians of runs with CPU times
    BenchBackup {
        /// Disk sizes in MiB (repeat for several)
        #[arg(long = "size-mib", default_values_t = [2048, 4096])]
        sizes: Vec<u32>,
        /// Disk contents: vm (random, text, holes) or text (mostly text); repeat for several
        #[arg(long = "mix", default_values = ["vm", "text"])]
        mixes: Vec<bench_backup::Mix>,
        /// Runs of each tool; the medians are printed
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Only these tools (prefixes: hv, zstd, restic, borg, virtnbdbackup)
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// hv-backup on S3 (a bench Garage) against restic there: first backup, sync, a file from a mounted backup
    BenchS3 {
        /// Disk size in MiB
        #[arg(long, default_value_t = 4096)]
        size_mib: u32,
    },
    /// hv-backup's incremental read against its full read and virtnbdbackup -l inc
    BenchIncremental {
        /// Disk size in MiB
        #[arg(long, default_value_t = 4096)]
        size_mib: u32,
    },
    /// One hv-top refresh against one hv-ls run: libvirtd's CPU, with many defined domains
    BenchTop {
        /// How many domains in all
        #[arg(long, default_value_t = 1000)]
        domains: usize,
        /// How many of them are running test guests
        #[arg(long, default_value_t = 10)]
        running: usize,
        /// Runs of each, for the medians
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// hv-metrics --listen against prometheus-libvirt-exporter: scrape time and series
    BenchMetrics {
        /// How many domains in all
        #[arg(long, default_value_t = 200)]
        domains: usize,
        /// How many of them are running test guests
        #[arg(long, default_value_t = 10)]
        running: usize,
    },
    /// hv-iso verify against sha256sum and openssl, hv-iso add against curl -o + sha256sum
    BenchIso {
        /// Image size in MiB
        #[arg(long, default_value_t = 4096)]
        size_mib: u64,
    },
    /// hv-define of N profiles against a loop of virt-install --import
    BenchDefine {
        /// How many VMs
        #[arg(long, default_value_t = 50)]
        vms: usize,
        /// Runs of each side (the median is printed)
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// hv-clone (full and --linked) of a VM-like template against a loop of virt-clone --auto-clone
    BenchClone {
        /// How many clones
        #[arg(long, default_value_t = 20)]
        clones: usize,
        /// Template disk size in MiB
        #[arg(long, default_value_t = 1024)]
        size_mib: u64,
        /// Runs of each side (the median is printed)
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// hv-ls over several hosts at once against a `virsh list` loop and hv-ls once per host (the bench's extra hosts)
    BenchHosts {
        /// How many extra hosts
        #[arg(long, default_value_t = 4)]
        hosts: usize,
        /// Domains defined on each
        #[arg(long, default_value_t = 250)]
        domains: usize,
    },
    /// hv-migrate --live --copy-storage against virsh migrate --live --p2p --copy-storage-all, between two extra hosts
    BenchMigrate {
        /// The test guest's disk in MiB (3/4 of it written)
        #[arg(long, default_value_t = 1024)]
        disk_mib: u32,
    },
    /// hv-ls over many defined domains against `virsh list` and a `virsh dominfo` loop
    BenchLs {
        /// How many domains to define for the run
        #[arg(long, default_value_t = 1000)]
        domains: usize,
        /// libvirt URI of the daemon to measure
        #[arg(long, default_value = "qemu:///system")]
        uri: String,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::Gen { check } => gen::run(check),
        Task::Install {
            prefix,
            destdir,
            no_build,
        } => install::run(&prefix, destdir.as_deref(), !no_build),
        Task::Deb => deb::run(),
        Task::BenchLifecycle { guests } => bench_lifecycle::run(guests),
        Task::BenchLs { domains, uri } => bench::ls(domains, &uri),
        Task::BenchHosts { hosts, domains } => bench_hosts::ls(hosts, domains),
        Task::BenchMigrate { disk_mib } => bench_hosts::migrate(disk_mib),
        Task::BenchMetrics { domains, running } => bench_metrics::run(domains, running),
        Task::BenchTop {
            domains,
            running,
            rounds,
        } => bench_top::run(domains, running, rounds),
        Task::BenchBackup {
            sizes,
            mixes,
            runs,
            only,
        } => bench_backup::run(&sizes, &mixes, runs, &only),
        Task::BenchIncremental { size_mib } => bench_incremental::run(size_mib),
        Task::BenchS3 { size_mib } => bench_s3::run(size_mib),
        Task::BenchIso { size_mib } => bench_iso::run(size_mib),
        Task::BenchDefine { vms, rounds } => bench_make::define(vms, rounds),
        Task::BenchClone {
            clones,
            size_mib,
            rounds,
        } => bench_make::clone(clones, size_mib, rounds),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
