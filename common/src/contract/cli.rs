//! The flags every command shares and the `main` they all run through, so
//! exit statuses, `-c`, `--format`, `-j` and the treatment of a closed pipe
//! cannot drift between commands.

use crate::choice::Choice;
use crate::connect::{Access, Target};
use crate::error::{Code, Error, Exit, Result};
use crate::hosts::Scope;
use crate::output::Format;
use crate::runner::RunOptions;
use clap::Parser;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// libvirt URI, or a host's alias from the hosts file; repeat it for several hosts [default: $HV_CONNECT, else $LIBVIRT_DEFAULT_URI, else libvirt's default]
    #[arg(short = 'c', long = "connect", value_name = "URI", global = true)]
    pub connect: Vec<String>,

    /// Work on every host of this file (an alias and a URI per line) [default: $HV_HOSTS]
    #[arg(long = "hosts", value_name = "FILE", global = true)]
    pub hosts: Option<PathBuf>,

    /// How long to wait for each host to answer
    #[arg(long = "connect-timeout", value_name = "DURATION", default_value = "30s", value_parser = crate::time::duration, global = true)]
    pub connect_timeout: Duration,
}

impl ConnectArgs {
    /// The hosts the run works on.
    pub fn scope(&self) -> Result<Scope> {
        Scope::resolve(&self.connect, self.hosts.as_deref(), |k| {
            std::env::var(k).ok()
        })
    }

    /// The one connection of a command that works on one host.
    pub fn open(&self, access: Access) -> Result<virt::connect::Connect> {
        let scope = self.scope()?;
        crate::hosts::working_on(&scope);
        Ok(scope.open_one(access, self.connect_timeout)?.1)
    }

    /// The one host of a command that works on one host, to open later.
    pub fn target(&self) -> Result<Target> {
        let scope = self.scope()?;
        crate::hosts::working_on(&scope);
        match (&scope, scope.the_one()?) {
            (Scope::Default(target), _) => Ok(target.clone()),
            (_, one) => Ok(one.expect("a named scope's one host").target()),
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct OutputArgs {
    /// Output format: jsonl, json, table or csv [default: table on a terminal, jsonl otherwise]
    #[arg(
        long,
        value_parser = choice::<Format>(),
        value_name = "FORMAT",
        global = true,
        hide_possible_values = true
    )]
    format: Option<Format>,
    /// Shorthand for --format jsonl
    #[arg(long, global = true, conflicts_with = "format")]
    json: bool,
    /// Append an entry for every change made to this JSON-lines file [default: the systemd journal, when it runs]
    #[arg(long, global = true, env = "HV_AUDIT_LOG", value_name = "FILE")]
    audit_log: Option<std::path::PathBuf>,
}

impl OutputArgs {
    /// `--audit-log` or HV_AUDIT_LOG: where changes are logged (and what
    /// hv-audit reads).
    pub fn audit_log(&self) -> Option<&std::path::Path> {
        self.audit_log.as_deref()
    }

    /// The format asked for, if any.
    pub fn format(&self) -> Option<Format> {
        if self.json {
            Some(Format::Jsonl)
        } else {
            self.format
        }
    }
}

/// `-j`: how many VMs at once. Each command adds its own `--timeout`,
/// because what it bounds differs (hv-stop: the graceful wait).
#[derive(Debug, Clone, clap::Args)]
pub struct JobArgs {
    /// How many VMs to work on at once
    #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: u16,
}

impl JobArgs {
    /// Options for the runner; `item_timeout` is the hard limit per VM.
    pub fn options(&self, item_timeout: Duration) -> RunOptions {
        RunOptions {
            jobs: self.jobs as usize,
            timeout: Some(item_timeout),
            cancel: interrupt_flag(),
        }
    }
}

/// The flags every command that changes VMs shares.
#[derive(Debug, Clone, clap::Args)]
pub struct ActionArgs {
    /// Show what would be done, change nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub jobs: JobArgs,

    #[command(flatten)]
    pub connect: ConnectArgs,

    #[command(flatten)]
    pub output: OutputArgs,
}

/// clap's parser for a flag whose values are a [`Choice`]:
/// `#[arg(value_parser = cli::choice::<State>())]`.
pub fn choice<T: Choice>() -> impl clap::builder::TypedValueParser<Value = T> {
    let values = T::ALL
        .iter()
        .map(|&value| clap::builder::PossibleValue::new(value.name()).help(value.help()));
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(values).try_map(|name| {
        T::from_name(&name).ok_or_else(|| format!("{name:?} is not one of the values listed"))
    })
}

static PROGRAM: OnceLock<String> = OnceLock::new();

/// The running command's name, for stderr messages.
pub fn program() -> &'static str {
    PROGRAM.get().map_or("hv", String::as_str)
}

/// A warning or per-item report on stderr, prefixed with the command name.
pub fn warn(message: impl std::fmt::Display) {
    eprintln!("{}: {message}", program());
}

/// The first Ctrl-C or SIGTERM (what `systemctl stop` sends) sets the flag:
/// the runner stops starting new items, and what has passed its point of
/// no return finishes; a second one exits at once with the shell's usual
/// 130 or 143.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    Arc::clone(FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            let code = 128 + sig;
            let _ = signal_hook::flag::register_conditional_shutdown(sig, code, Arc::clone(&flag));
            let _ = signal_hook::flag::register_usize(sig, Arc::clone(signal()), sig as usize);
            let _ = signal_hook::flag::register(sig, Arc::clone(&flag));
        }
        flag
    }))
}

fn signal() -> &'static Arc<AtomicUsize> {
    static SIGNAL: OnceLock<Arc<AtomicUsize>> = OnceLock::new();
    SIGNAL.get_or_init(Default::default)
}

/// The signal that asked this run to stop, once one has (the handlers are
/// installed by the first call).
pub fn interrupted() -> Option<i32> {
    let _ = interrupt_flag();
    match signal().load(Ordering::Relaxed) {
        0 => None,
        sig => Some(sig as i32),
    }
}

/// The error a command stops with when [`interrupted`]: `main` turns it
/// into the shell's 128 + signal.
pub fn interrupted_error(what: &str) -> Error {
    let name = match interrupted() {
        Some(signal_hook::consts::SIGTERM) => "SIGTERM",
        _ => "Ctrl-C",
    };
    Error::new(Code::Interrupted, format!("{what}: stopped by {name}"))
}

/// A command for a child process of hv's own (qemu-img, qemu-nbd), in a
/// process group of its own: the terminal's Ctrl-C goes to the foreground
/// group, and it is hv that decides what a first Ctrl-C stops (no new
/// items; running ones finish, with their children).
pub fn child_command(program: &str) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(program);
    cmd.process_group(0);
    cmd
}

/// Whether targets should be read from stdin: only when none were named
/// and stdin is a pipe or a file. A terminal is a person, not a pipeline;
/// /dev/null (systemd) and a socket (`ssh host hv-ls`, which holds stdin
/// open) carry no targets, and reading them would wait forever. cron gives
/// its jobs an empty pipe: that is read, and names nothing.
pub fn stdin_has_targets(args: &[String]) -> bool {
    use std::os::unix::fs::FileTypeExt;
    args.is_empty()
        && std::fs::metadata("/proc/self/fd/0")
            .is_ok_and(|m| m.file_type().is_fifo() || m.file_type().is_file())
}

/// Every command's `main`: parse, run, and turn the outcome into the
/// documented exit status.
pub fn main<C: Parser>(run: fn(C) -> Result<Exit>) -> std::process::ExitCode {
    unset_empty_hv_variables();
    let _ = PROGRAM.set(C::command().get_name().to_owned());
    let parsed = C::command()
        .try_get_matches()
        .and_then(|m| C::from_arg_matches(&m).map(|cli| (cli, m)));
    let cli = match parsed {
        Ok((cli, matches)) => {
            crate::audit::start(program(), audit_log(&matches));
            cli
        }
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage.into()
            } else {
                Exit::Ok.into()
            };
        }
    };
    match run(cli) {
        Ok(exit) => exit.into(),
        Err(e) if e.code == Code::BrokenPipe => Exit::Ok.into(),
        Err(e) if e.code == Code::Interrupted => {
            warn(&e);
            std::process::ExitCode::from(128 + interrupted().unwrap_or(2) as u8)
        }
        Err(e) => {
            warn(&e);
            e.exit_status().into()
        }
    }
}

/// An empty `HV_*` variable means "not set": /etc/hv/hv.env and the units
/// set every variable, most of them empty, and clap would read an empty
/// `HV_AUDIT_LOG` as an empty path and refuse to run. Done before clap
/// reads the environment, while `main` is the only thread.
fn unset_empty_hv_variables() {
    let empty: Vec<std::ffi::OsString> = std::env::vars_os()
        .filter(|(k, v)| v.is_empty() && k.to_str().is_some_and(|k| k.starts_with("HV_")))
        .map(|(k, _)| k)
        .collect();
    for key in empty {
        std::env::remove_var(key);
    }
}

/// `--audit-log` (or HV_AUDIT_LOG), wherever on the command line it was given.
fn audit_log(matches: &clap::ArgMatches) -> Option<std::path::PathBuf> {
    let here = matches
        .try_get_one::<std::path::PathBuf>("audit_log")
        .ok()
        .flatten()
        .cloned();
    here.or_else(|| matches.subcommand().and_then(|(_, sub)| audit_log(sub)))
}

/// Tracks the run's exit status as items finish.
#[derive(Debug, Default)]
pub struct Status(Exit, bool);

impl Status {
    pub fn failed(&mut self, err: &Error) {
        self.0 = self.0.worst(err.exit_status());
        self.1 |= err.code == Code::Unreachable;
    }

    /// Takes in what happened on one host of a run over several.
    pub fn merge(&mut self, other: &Status) {
        self.0 = self.0.worst(other.0);
        self.1 |= other.1;
    }

    /// No host of a run over several answered: if that failed items, the
    /// run could not reach the hypervisor at all (exit 3).
    pub fn none_reached(&mut self) {
        if self.1 {
            self.0 = self.0.worst(Exit::Unreachable);
        }
    }

    pub fn malformed(&mut self) {
        self.0 = self.0.worst(Exit::Usage);
    }

    pub fn exit(&self) -> Exit {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        output: OutputArgs,
    }

    #[test]
    fn json_is_jsonl_and_conflicts_with_format() {
        let format = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("hv").chain(args.iter().copied()))
                .map(|c| c.output.format())
        };
        assert_eq!(format(&["--json"]).unwrap(), Some(Format::Jsonl));
        assert_eq!(format(&["--format", "csv"]).unwrap(), Some(Format::Csv));
        assert_eq!(format(&[]).unwrap(), None);
        assert!(format(&["--json", "--format", "table"]).is_err());
    }
}

/// The `--keep-*` flags of hv-snap prune and hv-backup prune, one policy
/// ([`crate::retention::Keep`]) for both.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct KeepArgs {
    /// Keep the N newest
    #[arg(long = "keep-last", value_name = "N")]
    pub last: Option<usize>,
    /// Keep the newest of each of the last N hours that have one
    #[arg(long = "keep-hourly", value_name = "N")]
    pub hourly: Option<usize>,
    /// Keep the newest of each of the last N days that have one
    #[arg(long = "keep-daily", value_name = "N")]
    pub daily: Option<usize>,
    /// Keep the newest of each of the last N ISO weeks that have one
    #[arg(long = "keep-weekly", value_name = "N")]
    pub weekly: Option<usize>,
    /// Keep the newest of each of the last N months that have one
    #[arg(long = "keep-monthly", value_name = "N")]
    pub monthly: Option<usize>,
    /// Keep the newest of each of the last N years that have one
    #[arg(long = "keep-yearly", value_name = "N")]
    pub yearly: Option<usize>,
}

impl From<KeepArgs> for crate::retention::Keep {
    fn from(a: KeepArgs) -> Self {
        crate::retention::Keep {
            last: a.last,
            hourly: a.hourly,
            daily: a.daily,
            weekly: a.weekly,
            monthly: a.monthly,
            yearly: a.yearly,
        }
    }
}

/// Small JSON specs (hv-pool's and hv-net's): each file one object or
/// several (JSON lines), else JSON lines on stdin. Each file and stdin is
/// read up to 1 MiB, so `/dev/zero` or an endless pipe is refused, not
/// read forever; a spec that does not parse is an error naming its source
/// and line, and ends that source.
pub fn json_specs<T: serde::de::DeserializeOwned>(files: &[std::path::PathBuf]) -> Vec<Result<T>> {
    use std::io::Read;
    const LIMIT: u64 = 1 << 20;
    let mut texts = Vec::new();
    if files.is_empty() {
        let mut text = String::new();
        let read = std::io::stdin()
            .take(LIMIT + 1)
            .read_to_string(&mut text)
            .and_then(|n| {
                if n as u64 > LIMIT {
                    Err(std::io::Error::other(
                        "more than 1 MiB of specs: split them, or name spec files",
                    ))
                } else {
                    Ok(text)
                }
            });
        texts.push(("stdin".to_owned(), read));
    }
    for f in files {
        let read = std::fs::metadata(f).and_then(|m| {
            if m.is_file() && m.len() <= LIMIT {
                std::fs::read_to_string(f)
            } else {
                Err(std::io::Error::other(
                    "not a spec file (JSON objects, at most 1 MiB)",
                ))
            }
        });
        texts.push((f.display().to_string(), read));
    }
    let mut out = Vec::new();
    for (source, text) in texts {
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                out.push(Err(Error::usage(format!("{source}: {e}"))));
                continue;
            }
        };
        for item in serde_json::Deserializer::from_str(&text).into_iter::<T>() {
            match item {
                Ok(spec) => out.push(Ok(spec)),
                Err(e) => {
                    out.push(Err(Error::new(
                        Code::MalformedInput,
                        format!("{source}: line {}: {e}", e.line()),
                    )));
                    break;
                }
            }
        }
    }
    out
}

/// `--fields` of the commands that list: which fields of each record to
/// print, as `hv-ls --fields` does.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FieldsArgs {
    /// Only these fields of each record, in this order (e.g. name,uuid); a record's host stays
    #[arg(long, value_name = "FIELD,...", value_delimiter = ',')]
    pub fields: Vec<String>,
}

impl FieldsArgs {
    /// The fields asked for, each one of `known`, the fields the command's
    /// records have; a name it lacks is a usage error that lists them.
    pub fn checked(&self, known: &[&str]) -> Result<Vec<String>> {
        self.fields
            .iter()
            .map(|f| {
                let f = f.trim();
                match known.contains(&f) {
                    true => Ok(f.to_owned()),
                    false => Err(Error::usage(format!(
                        "--fields: these records have no field {f:?}; they have {}",
                        known.join(", ")
                    ))),
                }
            })
            .collect()
    }
}
