//! hv-snap schedule: snapshots on schedules chosen by tag. A VM tagged
//! `snap:hourly` gets a snapshot when its newest `hourly` one is an hour
//! old, and keeps what the `hourly` policy keeps. The decision is made
//! from the snapshots themselves, not from the clock: a timer that runs
//! late, twice, or after the host was off takes exactly the snapshots
//! that are due (as sanoid does), so one timer serves every policy. Each
//! policy prunes only the snapshots it took (the policy is in hv's marker),
//! and the plain `hv-snap prune` leaves those alone.

use crate::columns::SCHEDULE_COLUMNS;
use crate::create::{snapshot_vm, CreatePlan, Created};
use crate::prune::{prune_vm, PrunePlan, Pruned};
use crate::snapshots::snapshots_of;
use hv_common::bulk::{self, Action};
use hv_common::cli::{self, ActionArgs};
use hv_common::connect::Access;
use hv_common::hosts::{Pool, Route};
use hv_common::retention::Keep;
use hv_common::targets::{Input, VmRef};
use hv_common::{domain, time, Code, Error, Exit, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use virt::connect::Connect;
use virt::domain::Domain;

/// The tag that puts a VM under a policy: `snap:POLICY`.
pub const TAG_PREFIX: &str = "snap:";

/// What `hv-snap schedule` was asked to do.
#[derive(Debug, Clone)]
pub struct SchedulePlan {
    /// The policies file; none: the built-in policies.
    pub policies: Option<PathBuf>,
    pub timeout: Duration,
    pub dry_run: bool,
}

/// One policy of the file (docs/snapshots.md, "Schedules").
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// How old the newest snapshot of the policy may get: `1h`, `1d`, …
    #[serde(deserialize_with = "duration")]
    pub every: Duration,
    /// What prune keeps of the policy's snapshots.
    pub keep: Keep,
    /// External snapshots (no pause of a running VM) instead of internal.
    #[serde(default)]
    pub disk_only: bool,
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    time::duration(&text).map_err(serde::de::Error::custom)
}

/// The policies without a file: hourly kept a day, daily a week, weekly
/// a month, monthly a year.
pub fn built_in() -> BTreeMap<String, Policy> {
    let policy = |every: u64, keep: Keep| Policy {
        every: Duration::from_secs(every),
        keep,
        disk_only: false,
    };
    let last = |n| Keep {
        last: Some(n),
        ..Keep::default()
    };
    BTreeMap::from([
        ("hourly".to_owned(), policy(3600, last(24))),
        ("daily".to_owned(), policy(86_400, last(7))),
        ("weekly".to_owned(), policy(7 * 86_400, last(4))),
        ("monthly".to_owned(), policy(30 * 86_400, last(12))),
    ])
}

/// Reads the policies file: a JSON object of policy name → policy.
pub fn load(path: &std::path::Path) -> Result<BTreeMap<String, Policy>> {
    let fix = "write a JSON object of policies, e.g. {\"hourly\": {\"every\": \"1h\", \"keep\": {\"last\": 24}}}";
    let text = hv_common::fsutil::read_named(path, "the policies file", 1 << 20, fix)?;
    let bad = |why: String| Error::usage(format!("{}: {why}; {fix}", path.display()));
    let de = &mut serde_json::Deserializer::from_slice(&text);
    let policies: BTreeMap<String, Policy> = serde_path_to_error::deserialize(de)
        .map_err(|e| bad(format!("{}: {}", e.path(), e.inner())))?;
    for (name, p) in &policies {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad(format!(
                "policy name {name:?}: use letters, digits, - and _"
            )));
        }
        if p.keep.is_empty() {
            return Err(bad(format!("{name}.keep: give at least one rule")));
        }
        if p.every.is_zero() {
            return Err(bad(format!("{name}.every: must be longer than 0")));
        }
    }
    Ok(policies)
}

/// What one policy did to one VM.
#[derive(Debug, Serialize)]
pub struct PolicyRun {
    pub policy: String,
    /// Whether a snapshot was due (none of the policy's, or its newest older
    /// than `every`).
    pub due: bool,
    /// The snapshot taken when due (a dry run: the one that would be).
    pub taken: Option<Created>,
    /// When the next one is due, RFC 3339 UTC.
    pub next_due: String,
    /// The policy's prune: its snapshots judged, and those removed.
    pub pruned: Pruned,
}

/// A VM's record: its policies, in name order.
#[derive(Debug, Serialize)]
pub struct Scheduled {
    pub policies: Vec<PolicyRun>,
    /// Whether a snapshot was taken or removed.
    pub changed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

/// `args`: the connection, `-j` and the output format, for the bulk driver.
pub fn run(plan: SchedulePlan, args: &ActionArgs) -> Result<Exit> {
    let policies = match &plan.policies {
        Some(path) => load(path)?,
        None => built_in(),
    };
    // Each host's VMs whose tags name a policy; over several hosts, each
    // host is read at once, and one that does not answer is one failed
    // item (its own host's error) while the others' VMs are scheduled.
    let scope = args.connect.scope()?;
    let timeout = args.connect.connect_timeout;
    let pool = Pool::new(scope.clone(), Access::ReadOnly, timeout);
    let mut inputs = Vec::new();
    match scope.single() {
        Some(route) => {
            let conn = pool.get(&route)?;
            let host = match route {
                Route::Default => None,
                Route::Host(h) => Some(h.name),
            };
            for uuid in chosen(&conn, &policies)? {
                inputs.push(VmRef {
                    uuid: Some(uuid),
                    host: host.clone(),
                    ..VmRef::default()
                });
            }
        }
        None => {
            pool.open_all();
            for host in scope.hosts() {
                let at = |uuid: Option<String>| VmRef {
                    uuid,
                    host: Some(host.name.clone()),
                    ..VmRef::default()
                };
                match pool
                    .get(&Route::Host(host.clone()))
                    .map(|c| chosen(&c, &policies))
                {
                    Ok(Ok(uuids)) => inputs.extend(uuids.into_iter().map(|u| at(Some(u)))),
                    // The host's item fails with its error where it is acted on.
                    Ok(Err(_)) | Err(_) => inputs.push(at(None)),
                }
            }
        }
    }
    drop(pool);
    let action = Action {
        name: "schedule",
        columns: &SCHEDULE_COLUMNS,
        item_timeout: plan.timeout,
    };
    let now = time::now();
    let stamp = time::compact(now);
    let inputs = inputs.into_iter().map(Input::Vm);
    bulk::act(inputs, args, action, move |_, dom, _| {
        schedule_vm(dom, &policies, &plan, now, &stamp)
    })
}

/// The UUIDs of the VMs of `conn` whose tags name one of `policies`.
fn chosen(conn: &Connect, policies: &BTreeMap<String, Policy>) -> Result<Vec<String>> {
    let mut chosen = Vec::new();
    let domains = conn
        .list_all_domains(0)
        .map_err(|e| Error::libvirt("cannot list the VMs", &e))?;
    for dom in domains {
        let Ok((_, def)) = domain::definition(&dom) else {
            continue; // undefined while we looked
        };
        let mut any = false;
        for tag in def.tags.iter().filter_map(|t| t.strip_prefix(TAG_PREFIX)) {
            if policies.contains_key(tag) {
                any = true;
            } else {
                cli::warn(format!(
                    "{}: tag {TAG_PREFIX}{tag} names no policy (known: {}); it is left out",
                    dom.name().unwrap_or_default(),
                    policies.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        if any {
            chosen.push(
                dom.uuid_string()
                    .map_err(|e| Error::libvirt("cannot read a VM's UUID", &e))?,
            );
        }
    }
    Ok(chosen)
}

/// The policies of `dom`'s tags, each: a snapshot if due, then its prune.
fn schedule_vm(
    dom: &Domain,
    policies: &BTreeMap<String, Policy>,
    plan: &SchedulePlan,
    now: i64,
    stamp: &str,
) -> Result<Scheduled> {
    let (_, def) = domain::definition(dom)?;
    let mut done = Scheduled {
        policies: Vec::new(),
        changed: false,
        dry_run: plan.dry_run.then_some(true),
    };
    let mut names: Vec<&str> = def
        .tags
        .iter()
        .filter_map(|t| t.strip_prefix(TAG_PREFIX))
        .filter(|t| policies.contains_key(*t))
        .collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let policy = &policies[name];
        match run_policy(dom, name, policy, plan, now, stamp) {
            Ok(ran) => {
                done.changed |=
                    !plan.dry_run && (ran.taken.is_some() || !ran.pruned.removed.is_empty());
                done.policies.push(ran);
            }
            Err(e) => {
                let e = Error::new(e.code, format!("policy {name}: {}", e.message));
                return Err(e.and_done(&done));
            }
        }
    }
    Ok(done)
}

fn run_policy(
    dom: &Domain,
    name: &str,
    policy: &Policy,
    plan: &SchedulePlan,
    now: i64,
    stamp: &str,
) -> Result<PolicyRun> {
    let newest = snapshots_of(dom)?
        .iter()
        .filter(|s| s.info.policy.as_deref() == Some(name))
        .map(|s| s.info.created)
        .max();
    let every = i64::try_from(policy.every.as_secs()).unwrap_or(i64::MAX);
    // A timer fires a little after its time and a snapshot takes a moment:
    // "an hour old" means within a tenth of the period (5 minutes at most).
    let slack = (every / 10).min(300);
    let due = newest.is_none_or(|t| now.saturating_sub(t) >= every - slack);
    let taken = if due {
        let create = CreatePlan {
            vms: Vec::new(),
            name: format!("{name}-{stamp}"),
            description: Some(format!("hv-snap schedule, policy {name}")),
            disk_only: policy.disk_only,
            memory: false,
            quiesce: false,
            require_quiesce: false,
            timeout: plan.timeout,
            dry_run: plan.dry_run,
            policy: Some(name.to_owned()),
        };
        Some(snapshot_vm(dom, &create)?)
    } else {
        None
    };
    let last = if due { now } else { newest.unwrap_or(now) };
    let prune = PrunePlan {
        vms: Vec::new(),
        keep: policy.keep,
        all: false,
        timeout: plan.timeout,
        dry_run: plan.dry_run,
        policy: Some(name.to_owned()),
    };
    let pruned = prune_vm(dom, &prune).map_err(|e| {
        if e.code == Code::Internal {
            e
        } else {
            Error::new(e.code, format!("pruning: {}", e.message))
        }
    })?;
    Ok(PolicyRun {
        policy: name.to_owned(),
        due,
        taken,
        next_due: time::rfc3339(last.saturating_add(every - slack)),
        pruned,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BTreeMap<String, Policy>> {
        let dir = std::env::temp_dir().join(format!("hv-snap-policies-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("p{}.json", text.len()));
        std::fs::write(&path, text).unwrap();
        let got = load(&path);
        let _ = std::fs::remove_dir_all(&dir);
        got
    }

    #[test]
    fn a_policies_file_reads_strictly_and_names_the_field() {
        let got = parse(
            r#"{"often": {"every": "90m", "keep": {"last": 3, "daily": 2}, "disk_only": true}}"#,
        )
        .unwrap();
        assert_eq!(got["often"].every, Duration::from_secs(5400));
        assert_eq!(got["often"].keep.daily, Some(2));
        assert!(got["often"].disk_only);
        let err = parse(r#"{"h": {"every": "1h", "keep": {"lats": 3}}}"#).unwrap_err();
        assert_eq!(err.code, Code::Usage);
        assert!(
            err.message.contains("h.keep.lats: unknown field `lats`"),
            "{err}"
        );
        let err = parse(r#"{"h": {"every": "1x", "keep": {"last": 3}}}"#).unwrap_err();
        assert!(err.message.contains("h.every"), "{err}");
        let err = parse(r#"{"h": {"every": "1h", "keep": {}}}"#).unwrap_err();
        assert!(
            err.message.contains("h.keep: give at least one rule"),
            "{err}"
        );
        let err = parse(r#"{"a b": {"every": "1h", "keep": {"last": 1}}}"#).unwrap_err();
        assert!(err.message.contains("policy name \"a b\""), "{err}");
    }

    #[test]
    fn the_built_in_policies_are_the_documented_ones() {
        let b = built_in();
        assert_eq!(
            b.keys().collect::<Vec<_>>(),
            ["daily", "hourly", "monthly", "weekly"]
        );
        assert_eq!(b["hourly"].keep.last, Some(24));
        assert_eq!(b["daily"].every, Duration::from_secs(86_400));
    }
}
