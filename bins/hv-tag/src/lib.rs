//! hv-tag: labels for VMs that every hv command can select on (`hv-ls
//! --tag`). Tags are stored in the domain's own `<metadata>` under hv's
//! namespace, so they survive daemon restarts, travel with `virsh dumpxml`,
//! and need no database beside libvirt. hv-ls stays read-only; writing tags
//! is this command's job.

use clap::Parser;
use hv_common::bulk::{self, Action};
use hv_common::cli::ActionArgs;
use hv_common::domain;
use hv_common::manual::Manual;
use hv_common::output::{col, Column, Show};
use hv_common::{time, Error, Exit, Result};
use serde::Serialize;
use std::time::Duration;
use virt::domain::Domain;

#[derive(Debug, Parser)]
#[command(
    name = "hv-tag",
    version,
    about = "Add, remove or clear tags on VMs",
    long_about = "Add, remove or clear tags on libvirt VMs, in bulk.\n\n\
        Tags are kept in the domain XML's <metadata> under the namespace \
        https://hv.invalid/xmlns/tags/1, in the persistent definition and, for a running VM, \
        in its live definition too. VMs are named as arguments or piped in as records \
        (e.g. from hv-ls). Each VM gets one result record with its tags afterwards."
)]
pub struct Cli {
    /// VMs to tag, by name or UUID [default: records or names from stdin]
    #[arg(value_name = "VM")]
    pub vms: Vec<String>,

    /// Add this tag (repeatable)
    #[arg(short, long = "add", value_name = "TAG")]
    pub add: Vec<String>,

    /// Remove this tag (repeatable; -d as in `git tag -d`)
    #[arg(short = 'd', long = "remove", value_name = "TAG")]
    pub remove: Vec<String>,

    /// Remove every tag first (then --add applies)
    #[arg(long)]
    pub clear: bool,

    /// How long each VM may take before it is reported as timed out (90, 90s, 5m, 1h30m)
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = time::duration)]
    pub timeout: Duration,

    #[command(flatten)]
    pub args: ActionArgs,
}

pub const MANUAL: Manual = Manual {
    exit_status: hv_common::manual::EXIT_STATUS,
    environment: hv_common::manual::ENVIRONMENT,
    examples: &[
        ("Tag two VMs:", "hv-tag --add prod --add web web1 web2"),
        ("Move every VM tagged staging to prod:", "hv-ls --tag staging | hv-tag --remove staging --add prod"),
        ("See what a change would do:", "hv-ls --name 'db*' | hv-tag --clear --add db --dry-run"),
        ("Then act on the tagged VMs:", "hv-ls --tag prod --state shutoff | hv-start"),
    ],
    notes: &[
        "A tag is 1 to 64 characters without spaces, commas or control characters. Result records carry name, uuid, action (\"tag\"), ok, tags (the VM's tags afterwards, sorted), changed, and dry_run when --dry-run was given.",
    ],
};

static COLUMNS: [Column; 4] = [
    col("name", "name", Show::Plain),
    col("ok", "ok", Show::Plain),
    col("changed", "changed", Show::Plain),
    col("tags", "tags", Show::Join(None)),
];

#[derive(Debug, Clone)]
struct Change {
    add: Vec<String>,
    remove: Vec<String>,
    clear: bool,
    dry_run: bool,
}

impl Change {
    fn apply(&self, current: &[String]) -> Vec<String> {
        let mut tags: Vec<String> = if self.clear {
            Vec::new()
        } else {
            current.to_vec()
        };
        tags.retain(|t| !self.remove.contains(t));
        tags.extend(self.add.iter().cloned());
        tags.sort();
        tags.dedup();
        tags
    }
}

pub fn run(cli: Cli) -> Result<Exit> {
    if cli.add.is_empty() && cli.remove.is_empty() && !cli.clear {
        return Err(Error::usage(
            "nothing to do: give --add TAG, --remove TAG or --clear",
        ));
    }
    for tag in cli.add.iter().chain(&cli.remove) {
        domain::check_tag(tag).map_err(Error::usage)?;
    }
    let change = Change {
        add: cli.add.clone(),
        remove: cli.remove.clone(),
        clear: cli.clear,
        dry_run: cli.args.dry_run,
    };
    let inputs = bulk::inputs(&cli.vms, "hv-ls --name 'web*' | hv-tag --add web")?;
    let action = Action {
        name: "tag",
        columns: &COLUMNS,
        item_timeout: cli.timeout,
    };
    bulk::act(inputs, &cli.args, action, move |_, dom, _| {
        retag(dom, &change)
    })
}

fn retag(dom: &Domain, change: &Change) -> Result<Retagged> {
    let (persistent, definition) = domain::definition(dom)?;
    let active = dom
        .is_active()
        .map_err(|e| Error::libvirt("cannot tell if the VM is running", &e))?;
    let mut current = definition.tags;
    current.sort();
    let wanted = change.apply(&current);
    let changed = wanted != current;
    if changed && !change.dry_run {
        domain::write_tags(dom, &wanted, persistent, active)?;
    }
    Ok(Retagged {
        tags: wanted,
        changed,
        dry_run: change.dry_run.then_some(true),
    })
}

/// What hv-tag says of one VM, after `name`, `uuid`, `action` and `ok`.
#[derive(Debug, Serialize)]
struct Retagged {
    /// Its tags after the change, sorted.
    tags: Vec<String>,
    changed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    dry_run: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_apply_clear_then_remove_then_add() {
        let c = |add: &[&str], remove: &[&str], clear| Change {
            add: add.iter().map(|s| s.to_string()).collect(),
            remove: remove.iter().map(|s| s.to_string()).collect(),
            clear,
            dry_run: false,
        };
        let cur = vec!["b".to_string(), "a".to_string()];
        assert_eq!(c(&["c", "a"], &["b"], false).apply(&cur), vec!["a", "c"]);
        assert_eq!(c(&["x"], &[], true).apply(&cur), vec!["x"]);
        assert!(c(&[], &["a", "b"], false).apply(&cur).is_empty());
    }

    fn parse(args: &[&str]) -> std::result::Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("hv-tag").chain(args.iter().copied()))
    }

    #[test]
    fn remove_is_d_not_r_which_is_hv_backup_repo() {
        let cli = parse(&["-a", "new", "-d", "old", "vm"]).unwrap();
        assert_eq!(
            (cli.add, cli.remove),
            (vec!["new".to_owned()], vec!["old".to_owned()])
        );
        assert!(parse(&["-r", "old", "vm"]).is_err(), "-r is gone");
    }

    #[test]
    fn timeout_takes_the_common_duration_syntax() {
        assert_eq!(
            parse(&["-a", "x", "vm"]).unwrap().timeout,
            Duration::from_secs(60)
        );
        let t = parse(&["-a", "x", "--timeout", "1h30m", "vm"])
            .unwrap()
            .timeout;
        assert_eq!(t, Duration::from_secs(5400));
        let err = parse(&["-a", "x", "--timeout", "5x", "vm"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("90s, 5m, 1h30m, 2d"), "{err}");
    }
}

#[cfg(test)]
mod record_tests {
    use super::*;

    #[test]
    fn the_record_is_the_documented_one() {
        let retagged = Retagged {
            tags: vec!["prod".into()],
            changed: true,
            dry_run: Some(true),
        };
        let vm = hv_common::targets::VmRef::named("web1", "u");
        let record = hv_common::targets::success_record(&vm, "tag", &retagged);
        hv_testbench::assert_documented(&record, "records.md", "### hv-tag records");
    }
}
