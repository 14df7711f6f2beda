//! The one source of hv's deployment files: the systemd services and timers
//! (written as plain units for any systemd host, and as JSON the NixOS
//! module reads), the environment file that configures them, and the polkit
//! rules of the operator and admin roles. `cargo xtask gen --check` fails
//! when a checked-in copy differs, so Debian and NixOS hosts run the same
//! commands with the same hardening.

use serde_json::{json, Value};
use std::path::PathBuf;

/// Where the plain units expect the binaries (`cargo xtask install`'s
/// default prefix, which rewrites it for another prefix) and bash; the
/// NixOS module puts its store paths in place of `@bindir@` and `@bash@`
/// (NixOS has no /bin/bash).
pub const PLAIN_BINDIR: &str = "/usr/local/bin";
const PLAIN_BASH: &str = "/bin/bash";

pub const OPERATOR_GROUP: &str = "hv-operator";
pub const ADMIN_GROUP: &str = "hv-admin";

struct Unit {
    name: &'static str,
    description: &'static str,
    documentation: &'static str,
    /// Defaults; /etc/hv/hv.env (or the NixOS options) override them.
    environment: &'static [(&'static str, &'static str)],
    exec_start_pre: &'static [&'static str],
    exec_start: &'static [&'static str],
    /// Settings only this unit needs (a state directory, a lower priority).
    extra: &'static [(&'static str, &'static str)],
    on_calendar: &'static str,
    randomized_delay: Option<&'static str>,
    accuracy: Option<&'static str>,
}

/// Each service is a oneshot run by its timer. Pipelines run in bash with
/// pipefail so a failed hv-ls fails the unit; `$$` is systemd's escape for
/// a `$` that bash, not systemd, expands.
const UNITS: &[Unit] = &[
    Unit {
        name: "hv-backup",
        description: "hv: back up the VMs into the encrypted repository, then prune and gc it",
        documentation: "man:hv-backup(1)",
        environment: &[
            ("HV_BACKUP_SCRATCH_DIR", "/var/lib/hv/backup-scratch"),
            ("HV_BACKUP_SELECT", ""),
            ("HV_BACKUP_KEEP", "--keep-daily 7 --keep-weekly 4 --keep-monthly 6"),
        ],
        exec_start_pre: &[
            "@bash@ -c 'test -n \"$$HV_BACKUP_REPO\" || { echo \"set HV_BACKUP_REPO in /etc/hv/hv.env\" >&2; exit 2; }; test -e \"$$HV_BACKUP_REPO/hv-backup.json\" || test -z \"$$HV_BACKUP_RECIPIENTS_FILE\" || @bindir@/hv-backup init \"$$HV_BACKUP_REPO\" --recipients-file \"$$HV_BACKUP_RECIPIENTS_FILE\"'",
        ],
        exec_start: &[
            "@bash@ -o pipefail -c '@bindir@/hv-ls --format jsonl $$HV_BACKUP_SELECT | @bindir@/hv-backup create --format jsonl'",
            "@bindir@/hv-backup prune --format jsonl $HV_BACKUP_KEEP",
            "@bindir@/hv-backup gc",
        ],
        extra: &[
            ("StateDirectory", "hv"),
            ("StateDirectoryMode", "0755"),
            ("CacheDirectory", "hv"),
            // The disk hash states there reveal what chunks hold.
            ("CacheDirectoryMode", "0700"),
            ("Nice", "10"),
            ("IOSchedulingClass", "idle"),
        ],
        on_calendar: "*-*-* 01:30:00",
        randomized_delay: Some("30min"),
        accuracy: None,
    },
    Unit {
        name: "hv-backup-sync",
        description: "hv: copy new backups to the off-site replica of the repository",
        documentation: "man:hv-backup-sync(1)",
        environment: &[("HV_BACKUP_SYNC_TO", ""), ("HV_BACKUP_SYNC_ARGS", "--verify")],
        exec_start_pre: &[
            "@bash@ -c 'test -n \"$$HV_BACKUP_REPO\" && test -n \"$$HV_BACKUP_SYNC_TO\" || { echo \"set HV_BACKUP_REPO and HV_BACKUP_SYNC_TO in /etc/hv/hv.env\" >&2; exit 2; }'",
        ],
        exec_start: &[
            // --from and --to come from HV_BACKUP_REPO and HV_BACKUP_SYNC_TO, so
            // paths with spaces stay one argument.
            "@bindir@/hv-backup sync --format jsonl $HV_BACKUP_SYNC_ARGS",
        ],
        extra: &[("Nice", "10"), ("IOSchedulingClass", "idle")],
        // After the nightly backup (01:30, up to 30 minutes later).
        on_calendar: "*-*-* 04:00:00",
        randomized_delay: Some("30min"),
        accuracy: None,
    },
    Unit {
        name: "hv-snap-prune",
        description: "hv: prune the snapshots hv made, by their retention rules",
        documentation: "man:hv-snap-prune(1)",
        environment: &[
            ("HV_SNAP_SELECT", ""),
            ("HV_SNAP_KEEP", "--keep-hourly 24 --keep-daily 7"),
        ],
        exec_start_pre: &[],
        exec_start: &[
            "@bash@ -o pipefail -c '@bindir@/hv-ls --format jsonl $$HV_SNAP_SELECT | @bindir@/hv-snap prune --format jsonl $$HV_SNAP_KEEP'",
        ],
        extra: &[],
        on_calendar: "hourly",
        randomized_delay: Some("5min"),
        accuracy: None,
    },
    Unit {
        name: "hv-snap-schedule",
        description: "hv: take and prune the snapshots that VMs tagged snap:POLICY are due for",
        documentation: "man:hv-snap-schedule(1)",
        // Empty: the built-in policies (hourly, daily, weekly, monthly).
        environment: &[("HV_SNAP_POLICIES", "")],
        exec_start_pre: &[],
        // Due snapshots are read from the snapshots themselves, so a run
        // every 15 minutes serves every policy and catches up after a stop.
        exec_start: &["@bindir@/hv-snap schedule --format jsonl"],
        extra: &[],
        on_calendar: "*:0/15",
        randomized_delay: None,
        accuracy: Some("1min"),
    },
    Unit {
        name: "hv-health",
        description: "hv: check the host and its VMs, report what changed",
        documentation: "man:hv-health(1)",
        environment: &[("HV_HEALTH_ARGS", ""), ("HV_ON_CHANGE", "")],
        exec_start_pre: &[],
        // Failing checks are news, not a failed unit: the changes go to the
        // journal and to HV_ON_CHANGE; only hv-health itself failing (usage,
        // libvirt unreachable) fails the unit and calls HV_ON_FAILURE.
        exec_start: &[
            "@bash@ -c 'changes=$$(@bindir@/hv-health --format jsonl --state-file /var/lib/hv/health.json --changes-only $$HV_HEALTH_ARGS); rc=$$?; if [ -n \"$$changes\" ]; then printf \"%%s\\n\" \"$$changes\"; if [ -n \"$$HV_ON_CHANGE\" ]; then printf \"%%s\\n\" \"$$changes\" | $$HV_ON_CHANGE; fi; fi; [ $$rc -le 1 ]'",
        ],
        extra: &[("StateDirectory", "hv"), ("StateDirectoryMode", "0755")],
        on_calendar: "*:0/5",
        randomized_delay: None,
        accuracy: Some("30s"),
    },
    Unit {
        name: "hv-metrics",
        description: "hv: write Prometheus metrics for node_exporter's textfile collector",
        documentation: "man:hv-metrics(1)",
        environment: &[
            ("HV_METRICS_TEXTFILE_DIR", "/var/lib/prometheus/node-exporter"),
            ("HV_METRICS_ARGS", ""),
        ],
        exec_start_pre: &[],
        exec_start: &["@bindir@/hv-metrics --textfile ${HV_METRICS_TEXTFILE_DIR} $HV_METRICS_ARGS"],
        extra: &[],
        on_calendar: "minutely",
        randomized_delay: None,
        accuracy: Some("5s"),
    },
    Unit {
        name: "hv-iso-verify",
        description: "hv: re-hash the ISO library and record what no longer matches",
        documentation: "man:hv-iso-verify(1)",
        environment: &[("HV_ISO_LIBRARY", "/var/lib/hv/isos")],
        exec_start_pre: &[],
        exec_start: &["@bindir@/hv-iso verify --format jsonl"],
        extra: &[("Nice", "19"), ("IOSchedulingClass", "idle")],
        on_calendar: "weekly",
        randomized_delay: Some("6h"),
        accuracy: None,
    },
];

/// Hardening every service gets. hv talks to libvirt over its unix socket
/// (or TCP/SSH for a remote URI) and reads and writes only its state, the
/// repository and the textfile directory; it needs no devices (QEMU, run by
/// libvirtd, opens those), no new privileges, no kernel knobs. Backups of
/// stopped VMs read root-owned images, so the services run as root.
const HARDENING: &[(&str, &str)] = &[
    ("NoNewPrivileges", "yes"),
    ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"),
    ("ProtectSystem", "full"),
    ("ProtectHome", "read-only"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectKernelLogs", "yes"),
    ("ProtectControlGroups", "yes"),
    ("ProtectClock", "yes"),
    ("ProtectHostname", "yes"),
    ("RestrictSUIDSGID", "yes"),
    ("RestrictRealtime", "yes"),
    ("RestrictNamespaces", "yes"),
    ("LockPersonality", "yes"),
    ("SystemCallArchitectures", "native"),
    ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
];

/// What an operator may do beyond libvirt's read-only defaults: start,
/// stop, pause, snapshot, checkpoint and back up (the backup job reads
/// blocks), freeze filesystems for a quiesced snapshot, and open a VM's
/// serial console (hv-console; libvirt's open-device, which also covers
/// graphics and channels). Not: undefine, delete volumes or pools,
/// migrate, and not tag or set autostart: libvirt checks those as domain write + save, and whoever
/// holds both may define a VM that mounts the host's disks, which is root.
pub const OPERATOR_ACTIONS: &[&str] = &[
    "org.libvirt.unix.manage",
    "org.libvirt.api.domain.start",
    "org.libvirt.api.domain.stop",
    "org.libvirt.api.domain.init-control",
    "org.libvirt.api.domain.reset",
    "org.libvirt.api.domain.suspend",
    "org.libvirt.api.domain.pm-control",
    "org.libvirt.api.domain.snapshot",
    "org.libvirt.api.domain.checkpoint",
    "org.libvirt.api.domain.block-read",
    "org.libvirt.api.domain.fs-freeze",
    "org.libvirt.api.storage-pool.search-storage-vols",
    "org.libvirt.api.domain.open-device",
];

pub fn files() -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for unit in UNITS {
        let service = plain(&service(unit));
        files.push((
            PathBuf::from(format!("contrib/systemd/{}.service", unit.name)),
            service.into_bytes(),
        ));
        files.push((
            PathBuf::from(format!("contrib/systemd/{}.timer", unit.name)),
            timer(unit).into_bytes(),
        ));
    }
    files.push((
        PathBuf::from("contrib/systemd/hv-failure@.service"),
        plain(&failure_service()).into_bytes(),
    ));
    files.push((
        PathBuf::from("contrib/systemd/hv-boot.service"),
        plain(&boot_service()).into_bytes(),
    ));
    files.push((PathBuf::from("contrib/hv.env"), env_file().into_bytes()));
    files.push((
        PathBuf::from("contrib/polkit/50-hv.rules"),
        polkit_rules().into_bytes(),
    ));
    let json = serde_json::to_string_pretty(&nix_json()).expect("JSON") + "\n";
    files.push((PathBuf::from("nix/units.json"), json.into_bytes()));
    files
}

fn plain(unit: &str) -> String {
    unit.replace("@bindir@", PLAIN_BINDIR)
        .replace("@bash@", PLAIN_BASH)
}

const GENERATED: &str = "# Generated by `cargo xtask gen` from xtask/src/deploy.rs; do not edit.\n";

fn service(unit: &Unit) -> String {
    let mut s = String::from(GENERATED);
    s += &format!(
        "[Unit]\nDescription={}\nDocumentation={}\nAfter=libvirtd.service virtqemud.service network-online.target\nOnFailure=hv-failure@%N.service\n\n[Service]\nType=oneshot\n",
        unit.description, unit.documentation
    );
    for (k, v) in unit.environment {
        s += &format!("Environment=\"{k}={v}\"\n");
    }
    s += "EnvironmentFile=-/etc/hv/hv.env\n";
    for line in unit.exec_start_pre {
        s += &format!("ExecStartPre={line}\n");
    }
    for line in unit.exec_start {
        s += &format!("ExecStart={line}\n");
    }
    for (k, v) in unit.extra.iter().chain(HARDENING) {
        s += &format!("{k}={v}\n");
    }
    s
}

fn timer(unit: &Unit) -> String {
    let mut s = String::from(GENERATED);
    s += &format!(
        "[Unit]\nDescription=Run {}.service on schedule\nDocumentation={}\n\n[Timer]\nOnCalendar={}\nPersistent=true\n",
        unit.name, unit.documentation, unit.on_calendar
    );
    if let Some(d) = unit.randomized_delay {
        s += &format!("RandomizedDelaySec={d}\n");
    }
    if let Some(a) = unit.accuracy {
        s += &format!("AccuracySec={a}\n");
    }
    s += "\n[Install]\nWantedBy=timers.target\n";
    s
}

/// hv-boot.service: started by the host's boot and stopped by its
/// shutdown, not by a timer. The VMs tagged `boot:N` start group by group
/// (docs/lifecycle.md, "Boot order"), and stop in reverse before libvirtd
/// goes down.
const BOOT_ENVIRONMENT: &[(&str, &str)] = &[
    ("HV_BOOT_SELECT", ""),
    ("HV_BOOT_WAIT", "running"),
    ("HV_BOOT_STOP_TIMEOUT", "3m"),
];
const BOOT_START: &str = "@bash@ -o pipefail -c '@bindir@/hv-ls --format jsonl --tag \"boot:*\" $$HV_BOOT_SELECT | @bindir@/hv-start --order --wait=$$HV_BOOT_WAIT --format jsonl'";
const BOOT_STOP: &str = "@bash@ -o pipefail -c '@bindir@/hv-ls --format jsonl --tag \"boot:*\" $$HV_BOOT_SELECT | @bindir@/hv-stop --order --timeout $$HV_BOOT_STOP_TIMEOUT --format jsonl'";
const BOOT_EXTRA: &[(&str, &str)] = &[
    ("RemainAfterExit", "yes"),
    // Each group waits for its VMs and its boot-delay; the stop's groups
    // each up to HV_BOOT_STOP_TIMEOUT and a forced stop after it.
    ("TimeoutStartSec", "30min"),
    ("TimeoutStopSec", "30min"),
];

fn boot_service() -> String {
    let mut s = String::from(GENERATED);
    s += "[Unit]\nDescription=hv: start the VMs tagged boot:N in their order, and stop them in reverse at shutdown\nDocumentation=man:hv-start(1) man:hv-stop(1)\nAfter=libvirtd.service virtqemud.service network-online.target\nOnFailure=hv-failure@%N.service\n\n[Service]\nType=oneshot\n";
    for (k, v) in BOOT_ENVIRONMENT {
        s += &format!("Environment=\"{k}={v}\"\n");
    }
    s += "EnvironmentFile=-/etc/hv/hv.env\n";
    s += &format!("ExecStart={BOOT_START}\nExecStop={BOOT_STOP}\n");
    for (k, v) in BOOT_EXTRA.iter().chain(HARDENING) {
        s += &format!("{k}={v}\n");
    }
    s += "\n[Install]\nWantedBy=multi-user.target\n";
    s
}

/// The OnFailure= hook of every service: runs HV_ON_FAILURE with the
/// failed unit's name, so a user points it at mail, ntfy or a pager.
fn failure_service() -> String {
    format!(
        "{GENERATED}[Unit]\nDescription=hv: tell someone that %i failed\nDocumentation=man:hv-health(1)\n\n[Service]\nType=oneshot\nEnvironmentFile=-/etc/hv/hv.env\nExecStart={}\n",
        failure_exec()
    )
}

fn failure_exec() -> &'static str {
    "@bash@ -c 'if [ -n \"$$HV_ON_FAILURE\" ]; then exec $$HV_ON_FAILURE \"$$1\"; fi; echo \"$$1 failed; set HV_ON_FAILURE in /etc/hv/hv.env to be told\" >&2' hv-failure %i"
}

fn env_file() -> String {
    let mut s = String::from(
        "# /etc/hv/hv.env: what the hv services do. Generated by `cargo xtask gen`\n\
         # (xtask/src/deploy.rs) with the units' defaults; copy it and edit.\n\n\
         # The libvirt URI (default: libvirt's own).\n#HV_CONNECT=qemu:///system\n\n\
         # The backup repository, and the age recipients file hv-backup.service\n\
         # initializes it with when it does not exist yet.\n\
         HV_BACKUP_REPO=\n#HV_BACKUP_RECIPIENTS_FILE=/etc/hv/recipients.txt\n\n\
         # An s3:// repository or replica: the store, and its credentials (keep\n\
         # this file mode 0600).\n#HV_S3_ENDPOINT=https://s3.example.net\n#HV_S3_REGION=garage\n\
         #AWS_ACCESS_KEY_ID=\n#AWS_SECRET_ACCESS_KEY=\n\n\
         # Where every change hv makes is logged (JSON lines, read with hv-audit);\n\
         # unset: the systemd journal.\n#HV_AUDIT_LOG=/var/log/hv/audit.jsonl\n\n\
         # A command run with the failed unit's name when a service fails\n\
         # (docs/monitoring.md: hv-notify mails it or posts it to a webhook).\n\
         #HV_ON_FAILURE=\"/bin/sh /usr/share/doc/hv/monitoring/hv-notify\"\n#HV_NOTIFY_MAIL=root\n#HV_NOTIFY_URL=\n\n\
         # hv-health's state file, for hv-metrics' hv_autofix_* series (HvAutofixGaveUp).\n\
         #HV_HEALTH_STATE=/var/lib/hv/health.json\n\n",
    );
    for unit in UNITS {
        s += &format!("# {}.service\n", unit.name);
        for (k, v) in unit.environment {
            s += &format!("#{k}=\"{v}\"\n");
        }
        s += "\n";
    }
    s += "# hv-boot.service (VMs tagged boot:N; HV_BOOT_SELECT: more hv-ls arguments)\n";
    for (k, v) in BOOT_ENVIRONMENT {
        s += &format!("#{k}=\"{v}\"\n");
    }
    s
}

fn polkit_rules() -> String {
    let actions: Vec<String> = OPERATOR_ACTIONS
        .iter()
        .map(|a| format!("        \"{a}\""))
        .collect();
    format!(
        "// hv's roles over libvirt's polkit access control. Generated by\n\
         // `cargo xtask gen` from xtask/src/deploy.rs; see docs/deploy.md.\n\
         // Needs access_drivers = [ \"polkit\" ] in libvirtd.conf (or virtqemud.conf).\n\
         //   {ADMIN_GROUP}: everything libvirt offers.\n\
         //   {OPERATOR_GROUP}: list, start, stop, pause, snapshot, back up,\n\
         //     open consoles; not undefine, delete storage, migrate, tag or\n\
         //     set autostart (domain write + save would allow defining VMs).\n\
         polkit.addRule(function(action, subject) {{\n\
         \x20   var libvirt = action.id == \"org.libvirt.unix.manage\" ||\n\
         \x20       action.id == \"org.libvirt.unix.monitor\" ||\n\
         \x20       action.id.indexOf(\"org.libvirt.api.\") == 0;\n\
         \x20   if (!libvirt) {{\n\
         \x20       return polkit.Result.NOT_HANDLED;\n\
         \x20   }}\n\
         \x20   if (subject.isInGroup(\"{ADMIN_GROUP}\")) {{\n\
         \x20       return polkit.Result.YES;\n\
         \x20   }}\n\
         \x20   var operator = [\n{}\n    ];\n\
         \x20   if (subject.isInGroup(\"{OPERATOR_GROUP}\") && operator.indexOf(action.id) >= 0) {{\n\
         \x20       return polkit.Result.YES;\n\
         \x20   }}\n\
         \x20   return polkit.Result.NOT_HANDLED;\n\
         }});\n",
        actions.join(",\n")
    )
}

/// The same units for the NixOS module, with `@bindir@` left for it.
fn nix_json() -> Value {
    let units: Vec<Value> = UNITS
        .iter()
        .map(|u| {
            json!({
                "name": u.name,
                "description": u.description,
                "documentation": u.documentation.split(' ').collect::<Vec<_>>(),
                "environment": u.environment.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect::<serde_json::Map<_, _>>(),
                "execStartPre": u.exec_start_pre,
                "execStart": u.exec_start,
                "serviceConfig": u.extra.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect::<serde_json::Map<_, _>>(),
                "onCalendar": u.on_calendar,
                "randomizedDelaySec": u.randomized_delay,
                "accuracySec": u.accuracy,
            })
        })
        .collect();
    json!({
        "units": units,
        "hardening": HARDENING.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect::<serde_json::Map<_, _>>(),
        "failureExecStart": failure_exec(),
        "boot": {
            "environment": BOOT_ENVIRONMENT.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect::<serde_json::Map<_, _>>(),
            "execStart": BOOT_START,
            "execStop": BOOT_STOP,
            "serviceConfig": BOOT_EXTRA.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect::<serde_json::Map<_, _>>(),
        },
        "operatorGroup": OPERATOR_GROUP,
        "adminGroup": ADMIN_GROUP,
    })
}
