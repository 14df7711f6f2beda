//! The order VMs start in at host boot and stop in at shutdown, read from
//! their tags as Proxmox reads its startup order: `boot:N` puts a VM in
//! group N (lower first; VMs without one come last), `boot-delay:30s`
//! waits that long after its group started before the next one starts.
//! A group's VMs start at once; stopping goes group by group in reverse.
//! Tags, not a config file, so `hv-tag` sets the order and `hv-ls` shows
//! it, and the order moves with the VM's definition.

use crate::cli::ConnectArgs;
use crate::connect::Access;
use crate::targets::{self, Input};
use std::time::Duration;
use virt::connect::Connect;

/// `boot:N`: the VM's group.
pub const ORDER_PREFIX: &str = "boot:";
/// `boot-delay:DURATION`: the wait after its group before the next.
pub const DELAY_PREFIX: &str = "boot-delay:";

/// One group of VMs, acted on at once.
#[derive(Debug, Default)]
pub struct Stage {
    /// Its `boot:N`; `None` for the VMs without one.
    pub order: Option<u32>,
    pub inputs: Vec<Input>,
    /// The longest `boot-delay` of its VMs.
    pub delay: Duration,
}

/// What a VM's tags say: its group and delay.
pub fn of_tags(tags: &[String]) -> (Option<u32>, Duration) {
    let order = tags
        .iter()
        .filter_map(|t| t.strip_prefix(ORDER_PREFIX)?.parse::<u32>().ok())
        .min();
    let delay = tags
        .iter()
        .filter_map(|t| crate::time::duration(t.strip_prefix(DELAY_PREFIX)?).ok())
        .max()
        .unwrap_or_default();
    (order, delay)
}

/// Groups `inputs` by their VMs' tags, looked up on `conn`: ascending
/// order, the VMs without one last, or the reverse (`stopping`). Inputs
/// that are no VM here (an upstream failure, a malformed line, a name not
/// found) go in the first group, so they are reported at once and fail as
/// they would without an order.
pub fn stages(conn: &Connect, inputs: Vec<Input>, stopping: bool) -> Vec<Stage> {
    let mut first = Vec::new();
    let mut groups: std::collections::BTreeMap<(bool, u32), Stage> = Default::default();
    for input in inputs {
        let Input::Vm(vm) = &input else {
            first.push(input);
            continue;
        };
        let tags = targets::lookup(conn, vm)
            .ok()
            .and_then(|d| crate::domain::definition(&d).ok())
            .map(|(_, x)| x.tags);
        let Some(tags) = tags else {
            first.push(input);
            continue;
        };
        let (order, delay) = of_tags(&tags);
        // Sorted as (has no order, order): numbered groups first.
        let stage = groups
            .entry((order.is_none(), order.unwrap_or(0)))
            .or_insert_with(|| Stage {
                order,
                ..Stage::default()
            });
        stage.delay = stage.delay.max(delay);
        stage.inputs.push(input);
    }
    let mut out: Vec<Stage> = groups.into_values().collect();
    if stopping {
        out.reverse();
    }
    if !first.is_empty() {
        out.insert(
            0,
            Stage {
                inputs: first,
                ..Stage::default()
            },
        );
    }
    out
}

/// The stages of an ordered start or stop on the run's one host, as
/// [`crate::bulk::act_in_stages`] takes them: a stop (or a dry run) does
/// not wait between groups.
pub fn staged(
    inputs: impl Iterator<Item = Input>,
    connect: &ConnectArgs,
    stopping: bool,
    dry_run: bool,
) -> crate::Result<Vec<(Vec<Input>, Duration)>> {
    let target = connect.target()?;
    let conn = crate::hosts::open_within(&target, Access::ReadOnly, connect.connect_timeout)?;
    let out = stages(&conn, inputs.collect(), stopping)
        .into_iter()
        .map(|s| {
            let pause = if stopping || dry_run {
                Duration::ZERO
            } else {
                s.delay
            };
            (s.inputs, pause)
        })
        .collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tags_give_the_group_and_the_delay() {
        assert_eq!(
            of_tags(&tags(&["prod", "boot:2"])),
            (Some(2), Duration::ZERO)
        );
        assert_eq!(
            of_tags(&tags(&[
                "boot:3",
                "boot:1",
                "boot-delay:30s",
                "boot-delay:1m"
            ])),
            (Some(1), Duration::from_secs(60))
        );
        assert_eq!(
            of_tags(&tags(&["boot:first", "boot-delay:x"])),
            (None, Duration::ZERO)
        );
    }

    #[test]
    fn groups_go_up_to_start_and_down_to_stop() {
        let conn = Connect::open(Some("test:///default")).unwrap();
        let vm = Input::Vm(targets::VmRef {
            name: Some("test".into()),
            ..Default::default()
        });
        let missing = Input::Vm(targets::VmRef {
            name: Some("nosuch".into()),
            ..Default::default()
        });
        let got = stages(&conn, vec![vm.clone(), missing.clone()], false);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0].inputs,
            [missing],
            "not found: first, to fail at once"
        );
        assert_eq!((got[1].order, &got[1].inputs), (None, &vec![vm]));
    }
}
