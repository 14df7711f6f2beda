//! hv-metrics against the real bench: its output passes promtool, describes
//! the bench guests exactly, a real Prometheus server scrapes it and the
//! shipped alert rules fire on a guest killed from outside; backups made by
//! hv-backup show up; an unreachable libvirt still yields `hv_libvirt_up 0`.

// These tests need the bench (tests/run.sh); `cargo test` without
// `--features bench` still builds the command for the transcripts.
#![cfg(feature = "bench")]

use hv_testbench::{
    bin, connect, free_port, hv, hv_as_nobody, hv_iso_in, promtool_check_metrics, run_prefix,
    scratch, GuestSpec, KillOnDrop, Run, URI,
};
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HV_METRICS: &str = env!("CARGO_BIN_EXE_hv-metrics");

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/monitoring")
}

/// One sample of the exposition: metric name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Sample {
    let (head, value) = line.rsplit_once(' ').expect("sample line has a value");
    let (name, mut rest) = head.split_once('{').unwrap_or((head, ""));
    let mut labels = BTreeMap::new();
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut val = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("closed label value") {
                (_, '\\') => match chars.next().unwrap().1 {
                    'n' => val.push('\n'),
                    c => val.push(c),
                },
                (i, '"') => break i,
                (_, c) => val.push(c),
            }
        };
        labels.insert(key.trim_start_matches(',').to_owned(), val);
        rest = &after[end + 1..];
    }
    Sample {
        name: name.to_owned(),
        labels,
        value: value.parse().unwrap_or_else(|_| panic!("value in {line}")),
    }
}

/// The value of the one sample with this name whose labels include `want`.
fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<_> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && want
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert!(
        found.len() <= 1,
        "{name} {want:?} matches {} samples",
        found.len()
    );
    found.first().map(|s| s.value)
}

fn metrics(args: &[&str]) -> Run {
    hv(HV_METRICS, args, "")
}

fn text(out: &Run) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn promtool_check(text: &str) {
    promtool_check_metrics(text).unwrap_or_else(|e| panic!("{e}"));
}

/// A successful scrape that passes promtool, as samples.
fn scrape_ok(args: &[&str]) -> Vec<Sample> {
    let out = metrics(args);
    out.assert_ok();
    let body = text(&out);
    promtool_check(&body);
    parse(&body)
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64
}

/// A transient directory pool, destroyed on drop (sweep.sh removes one a
/// killed run left).
struct Pool {
    name: String,
    dir: PathBuf,
}

impl Pool {
    fn create(suffix: &str) -> Pool {
        let name = format!("{}{suffix}", run_prefix());
        let dir = PathBuf::from("/var/tmp").join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let st = Command::new("virsh")
            .args(["-c", URI, "-q", "pool-create-as", &name, "dir", "--target"])
            .arg(&dir)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "virsh pool-create-as {name}");
        Pool { name, dir }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = Command::new("virsh")
            .args(["-c", URI, "-q", "pool-destroy", &self.name])
            .stdout(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn output_passes_promtool_and_describes_each_guest() {
    let conn = connect();
    let running = GuestSpec::new("metrics run \"ü\"")
        .autostart()
        .define(&conn);
    running.start_ready();
    let stopped = GuestSpec::new("metrics-off").disk_mib(48).define(&conn);

    let pool = Pool::create("metrics-pool");
    let before_snapshot = unix_now();
    let st = Command::new("virsh")
        .args([
            "-c",
            URI,
            "-q",
            "snapshot-create-as",
            &stopped.uuid,
            "metrics-snap",
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "virsh snapshot-create-as");

    let run = [
        ("name", running.name.as_str()),
        ("uuid", running.uuid.as_str()),
    ];
    let run_disk = [run[0], run[1], ("target", "vda")];
    let domains = || conn.num_of_domains().unwrap() + conn.num_of_defined_domains().unwrap();
    // A domain that another client is querying at that moment (other
    // tests' listings run beside this one) is reported with what libvirt
    // has at hand, without its QEMU's counters (NOWAIT, docs/monitoring.md):
    // scraped again until the running guest's disk counters are there.
    let started = Instant::now();
    let (fewest, s, most) = loop {
        let (fewest, s, most) = (domains(), scrape_ok(&[]), domains());
        if value(&s, "hv_vm_disk_read_bytes_total", &run_disk).is_some()
            || started.elapsed() > Duration::from_secs(30)
        {
            break (fewest, s, most);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(value(&s, "hv_libvirt_up", &[]), Some(1.0));

    let off = [
        ("name", stopped.name.as_str()),
        ("uuid", stopped.uuid.as_str()),
    ];
    let state =
        |id: &[(&str, &str); 2], st: &str| value(&s, "hv_vm_state", &[id[0], id[1], ("state", st)]);
    assert_eq!(state(&run, "running"), Some(1.0));
    assert_eq!(state(&run, "shutoff"), Some(0.0));
    assert_eq!(state(&off, "shutoff"), Some(1.0));
    assert_eq!(
        value(
            &s,
            "hv_vm_state_reason",
            &[run[0], ("state", "running"), ("reason", "booted")]
        ),
        Some(1.0)
    );
    assert_eq!(value(&s, "hv_vm_crashed", &run), Some(0.0));
    assert_eq!(value(&s, "hv_vm_autostart", &run), Some(1.0));
    assert_eq!(value(&s, "hv_vm_autostart", &off), Some(0.0));
    assert_eq!(value(&s, "hv_vm_vcpus", &run), Some(1.0));
    assert!(value(&s, "hv_vm_cpu_seconds_total", &run).unwrap() > 0.0);
    let xml_memory = running.domain.info().unwrap().max_mem as f64 * 1024.0;
    assert_eq!(value(&s, "hv_vm_memory_max_bytes", &run), Some(xml_memory));
    let source = stopped.disk.display().to_string();
    let disk = [off[0], off[1], ("target", "vda")];
    assert_eq!(
        value(
            &s,
            "hv_vm_disk_info",
            &[off[0], ("target", "vda"), ("source", &source)]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "hv_vm_disk_capacity_bytes", &disk),
        Some(48.0 * 1024.0 * 1024.0)
    );
    // The booted guest read its disk: the counter is real, not a placeholder.
    let read = value(&s, "hv_vm_disk_read_bytes_total", &run_disk);
    assert!(read.is_some_and(|b| b > 0.0), "disk read bytes: {read:?}");
    assert_eq!(value(&s, "hv_vm_snapshots", &run), Some(0.0));
    assert_eq!(value(&s, "hv_vm_snapshots", &off), Some(1.0));
    let taken = value(&s, "hv_vm_snapshot_oldest_timestamp_seconds", &off).unwrap();
    assert!(taken >= before_snapshot && taken <= unix_now(), "{taken}");
    assert_eq!(
        value(&s, "hv_vm_snapshot_oldest_timestamp_seconds", &run),
        None
    );
    // Other tests define and remove domains meanwhile: hv counts what was
    // there at some moment of its scrape.
    let counted = value(&s, "hv_host_domains", &[]).unwrap();
    let (low, high) = (fewest.min(most) as f64, fewest.max(most) as f64);
    assert!(
        (low - 2.0..=high + 2.0).contains(&counted),
        "hv counted {counted} domains, libvirt had {fewest} before and {most} after"
    );
    let pool_label = [("pool", pool.name.as_str())];
    assert_eq!(value(&s, "hv_pool_active", &pool_label), Some(1.0));
    let space = Command::new("df")
        .args(["-B1", "--output=size"])
        .arg(&pool.dir)
        .output()
        .unwrap();
    let size: f64 = String::from_utf8_lossy(&space.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(value(&s, "hv_pool_capacity_bytes", &pool_label), Some(size));
    drop(pool);
    let node = conn.node_info().unwrap();
    assert_eq!(value(&s, "hv_host_cpus", &[]), Some(node.cpus as f64));

    // A monitoring user without write access gets the same metrics.
    let nobody = hv_as_nobody(HV_METRICS, &["-c", URI]);
    nobody.assert_ok();
    let s = parse(&text(&nobody));
    assert_eq!(state(&run, "running"), Some(1.0));
    drop(s);

    // The textfile is replaced whole and nothing else is left in the directory.
    let dir = std::env::temp_dir().join(format!("{}textfile", run_prefix()));
    std::fs::create_dir_all(&dir).unwrap();
    for _ in 0..2 {
        metrics(&["--textfile", dir.to_str().unwrap()])
            .assert_ok()
            .assert_stdout_empty();
    }
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["hv.prom"]);
    promtool_check(&std::fs::read_to_string(dir.join("hv.prom")).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();

    // The same series as records, each flat with its labels as fields.
    // Only this test's VMs (and the host's series) are compared: other
    // tests' guests come and go between the two scrapes.
    let ours = |labels: &[(String, String)]| {
        labels
            .iter()
            .all(|(k, v)| k != "name" || v.starts_with(hv_testbench::run_prefix()))
    };
    let key = |metric: &str, labels: Vec<(String, String)>| {
        let mut labels = labels;
        labels.sort();
        format!("{metric}{labels:?}")
    };
    let series: BTreeMap<String, f64> = parse(&text(&metrics(&[])))
        .into_iter()
        .map(|s| (s.name, s.labels.into_iter().collect::<Vec<_>>(), s.value))
        .filter(|(_, labels, _)| ours(labels))
        .map(|(name, labels, value)| (key(&name, labels), value))
        .collect();
    let records = metrics(&["--format", "jsonl"]).records();
    let from_records: BTreeMap<String, f64> = records
        .iter()
        .map(|r| {
            let r = r.as_object().unwrap();
            let labels: Vec<(String, String)> = r
                .iter()
                .filter(|(k, _)| *k != "metric" && *k != "value")
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect();
            (
                r["metric"].as_str().unwrap().to_owned(),
                labels,
                r["value"].as_f64().unwrap(),
            )
        })
        .filter(|(_, labels, _)| ours(labels))
        .map(|(metric, labels, value)| (key(&metric, labels), value))
        .collect();
    assert_eq!(
        series.keys().collect::<Vec<_>>(),
        from_records.keys().collect::<Vec<_>>()
    );
    let crashed = |m: &BTreeMap<String, f64>| {
        let k = key(
            "hv_vm_crashed",
            vec![
                ("name".into(), running.name.clone()),
                ("uuid".into(), running.uuid.clone()),
            ],
        );
        m[&k]
    };
    assert_eq!(crashed(&series), crashed(&from_records));
}

#[test]
fn unreachable_libvirt_still_reports_itself_down() {
    let out = metrics(&["-c", "qemu+unix:///system?socket=/nonexistent/libvirt-sock"]);
    out.assert_exit(3);
    let s = parse(&text(&out));
    assert_eq!(value(&s, "hv_libvirt_up", &[]), Some(0.0));
    assert!(!s.iter().any(|x| x.name.starts_with("hv_vm_")));
    assert_eq!(out.stderr().lines().count(), 1, "{out:?}");
    out.assert_stderr_contains("/nonexistent/libvirt-sock")
        .assert_stderr_contains("libvirtd");
}

#[test]
fn alert_rules_pass_their_unit_tests_and_the_example_config_is_valid() {
    promtool(&["test", "rules", "hv-alerts.test.yml"]);
    let dir = std::env::temp_dir().join(format!("{}promcheck", run_prefix()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = example_config(&dir, "127.0.0.1:9477");
    promtool(&["check", "config", config.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The example Alertmanager configuration is valid, and sends each alert
/// of the rules where its severity says: critical ones to a person at
/// once (mail and webhook), warnings as mail, info nowhere.
#[test]
fn the_alertmanager_example_routes_each_alert_by_its_severity() {
    let amtool = |args: &[&str]| {
        let out = Command::new("amtool")
            .args(args)
            .current_dir(docs())
            .output()
            .expect("amtool (Debian package prometheus-alertmanager)");
        Run::new(format!("amtool {args:?}"), out)
    };
    amtool(&["check-config", "alertmanager.yml"]).assert_ok();
    let rules = std::fs::read_to_string(docs().join("hv-alerts.yml")).unwrap();
    let mut alerts = Vec::new();
    let mut name = None;
    for line in rules.lines().map(str::trim) {
        if let Some(n) = line.strip_prefix("- alert: ") {
            name = Some(n.to_owned());
        } else if let Some(s) = line.strip_prefix("severity: ") {
            alerts.push((
                name.take().expect("an alert before its labels"),
                s.to_owned(),
            ));
        }
    }
    assert!(alerts.len() >= 21, "{alerts:?}");
    for (alert, severity) in alerts {
        let want = match severity.as_str() {
            "critical" => "page",
            "warning" => "mail",
            "info" => "null",
            other => panic!("{alert}: severity {other}"),
        };
        let routed = amtool(&[
            "config",
            "routes",
            "test",
            "--config.file=alertmanager.yml",
            &format!("alertname={alert}"),
            &format!("severity={severity}"),
        ]);
        assert_eq!(routed.assert_ok().stdout().trim(), want, "{alert}");
    }
}

/// Runs promtool in docs/monitoring and fails the test with its output.
fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(docs())
        .output()
        .unwrap();
    Run::new(format!("promtool {args:?}"), out).assert_ok();
}

/// docs/monitoring/prometheus.yml, pointed at this test's rules and target,
/// with 1–2 s intervals so the test does not wait for real-world ones.
fn example_config(dir: &Path, target: &str) -> PathBuf {
    let rules = docs().join("hv-alerts.yml").canonicalize().unwrap();
    let text = std::fs::read_to_string(docs().join("prometheus.yml"))
        .unwrap()
        .replace("/etc/prometheus/hv-alerts.yml", rules.to_str().unwrap())
        .replace("127.0.0.1:9477", target)
        .replace("scrape_interval: 30s", "scrape_interval: 2s")
        .replace("evaluation_interval: 30s", "evaluation_interval: 1s")
        .replace("scrape_timeout: 10s", "scrape_timeout: 2s");
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Prometheus' answer to an instant query; None while it is still starting.
fn try_query(port: u16, expr: &str) -> Option<serde_json::Value> {
    let out = Command::new("curl")
        .args(["-s", "--get", "--data-urlencode"])
        .arg(format!("query={expr}"))
        .arg(format!("http://127.0.0.1:{port}/api/v1/query"))
        .output()
        .expect("curl");
    serde_json::from_slice(&out.stdout).ok()
}

fn query(port: u16, expr: &str) -> serde_json::Value {
    try_query(port, expr).unwrap_or_else(|| panic!("{expr}: Prometheus gave no JSON answer"))
}

fn wait_for_series(port: u16, expr: &str) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let answer = try_query(port, expr).unwrap_or_default();
        let result = answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !result.is_empty() {
            return result;
        }
        assert!(
            Instant::now() < deadline,
            "no series for {expr} in 60 s: {answer}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn prometheus_scrapes_listen_and_the_crash_alert_fires() {
    let conn = connect();
    let guest = GuestSpec::new("metrics-prom").define(&conn);
    guest.start_ready();
    let dir = std::env::temp_dir().join(format!("{}prometheus", run_prefix()));
    std::fs::create_dir_all(&dir).unwrap();

    // hv-health's state file, as it is once --fix gave up on the guest.
    let state = dir.join("health.json");
    let gave_up = serde_json::json!({"problems": {}, "fixes": {guest.uuid.as_str(): {
        "name": guest.name, "attempts": [1, 2, 3],
        "gave_up": {"check": "vm.crashed", "at": 3, "attempts": 3}}}});
    std::fs::write(&state, gave_up.to_string()).unwrap();
    let hv_port = free_port();
    let _exporter = listening_with(hv_port, &[("HV_HEALTH_STATE", state.to_str().unwrap())]);
    let prom_port = free_port();
    let config = example_config(&dir, &format!("127.0.0.1:{hv_port}"));
    let _prometheus = KillOnDrop(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package prometheus)"),
    );

    let running = format!(
        r#"hv_vm_state{{job="hv",name="{}",state="running"}} == 1"#,
        guest.name
    );
    let found = wait_for_series(prom_port, &running);
    assert_eq!(found.len(), 1);
    let metric = &found[0]["metric"];
    assert_eq!(metric["uuid"], guest.uuid.as_str());
    assert_eq!(metric["instance"], format!("127.0.0.1:{hv_port}").as_str());

    // Every expression of the dashboard and the rules is valid PromQL on a
    // real server and names metrics hv exports.
    for expr in dashboard_exprs().iter().chain(rule_exprs().iter()) {
        let expr = expr.replace("$instance", ".*").replace("$vm", ".*");
        let answer = query(prom_port, &expr);
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
    }

    guest.kill_qemu();
    let crashed = format!(r#"hv_vm_crashed{{name="{}"}} == 1"#, guest.name);
    wait_for_series(prom_port, &crashed);
    let alert = format!(
        r#"ALERTS{{alertname="HvVmCrashed",alertstate="firing",name="{}"}}"#,
        guest.name
    );
    let firing = wait_for_series(prom_port, &alert);
    assert_eq!(firing[0]["metric"]["uuid"], guest.uuid.as_str());
    // hv-health gave up on it: the alert that asks a person to look.
    let alert = format!(
        r#"ALERTS{{alertname="HvAutofixGaveUp",alertstate="firing",name="{}"}}"#,
        guest.name
    );
    let firing = wait_for_series(prom_port, &alert);
    assert_eq!(firing[0]["metric"]["check"], "vm.crashed");
    drop(guest);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(docs().join("grafana-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(exprs.len() >= 15, "{}", exprs.len());
    exprs
}

/// The `expr:` values of the rules file (single-line or folded `>-`).
fn rule_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(docs().join("hv-alerts.yml")).unwrap();
    let mut exprs = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        if rest.trim() != ">-" {
            exprs.push(rest.trim().to_owned());
            continue;
        }
        let mut folded = Vec::new();
        while let Some(next) = lines.peek() {
            if next.trim_start().starts_with("labels:") || next.trim_start().starts_with("for:") {
                break;
            }
            folded.push(lines.next().unwrap().trim());
        }
        exprs.push(folded.join(" "));
    }
    assert_eq!(exprs.len(), text.matches("- alert:").count());
    exprs
}

#[test]
fn backups_and_backup_results_become_metrics() {
    let conn = connect();
    let guest = GuestSpec::new("metrics-backup").disk_mib(32).define(&conn);
    let dir = PathBuf::from("/var/tmp").join(format!("{}metrics-backup", run_prefix()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let repo = dir.join("repo");
    let identity = dir.join("identity.txt");
    let keygen = Command::new("age-keygen")
        .arg("-o")
        .arg(&identity)
        .stderr(Stdio::null())
        .status();
    assert!(keygen.expect("age-keygen (Debian package age)").success());
    let recipient = Command::new("age-keygen")
        .arg("-y")
        .arg(&identity)
        .output()
        .unwrap();
    let recipient = String::from_utf8(recipient.stdout).unwrap();
    let keys = dir.join("keys");
    hv(
        &bin("hv-backup"),
        &[
            "init",
            repo.to_str().unwrap(),
            "--recipient",
            recipient.trim(),
            "--key-dir",
            keys.to_str().unwrap(),
        ],
        "",
    )
    .assert_ok();
    let missing = format!("{}no-such-vm", run_prefix());
    let create = hv(
        &bin("hv-backup"),
        &[
            "create",
            &guest.name,
            &missing,
            "--repo",
            repo.to_str().unwrap(),
            "--key-dir",
            keys.to_str().unwrap(),
            "--cache-dir",
            dir.join("cache").to_str().unwrap(),
        ],
        "",
    );
    create.assert_exit(1);
    let results = dir.join("results.jsonl");
    std::fs::write(&results, &create.stdout).unwrap();
    let made = create.record("ok", true); // one backup made

    let s = scrape_ok(&[
        "--repo",
        repo.to_str().unwrap(),
        "--backup-results",
        results.to_str().unwrap(),
    ]);
    let shown = repo.display().to_string();
    let vm = [
        ("name", guest.name.as_str()),
        ("uuid", guest.uuid.as_str()),
        ("repository", shown.as_str()),
    ];
    assert_eq!(value(&s, "hv_backups", &vm), Some(1.0));
    let id = made["id"].as_str().expect("backup id in the create record");
    let index = std::fs::read(repo.join("backups").join(id).join("index.json")).unwrap();
    let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
    let time = value(&s, "hv_backup_last_timestamp_seconds", &vm).unwrap();
    assert_eq!(time, index["time_unix_ms"].as_f64().unwrap() / 1000.0);
    assert_eq!(
        value(&s, "hv_backup_last_stored_bytes", &vm),
        index["stored_bytes"].as_f64()
    );
    assert_eq!(
        value(&s, "hv_backup_last_size_bytes", &vm),
        Some(32.0 * 1024.0 * 1024.0)
    );
    let repo_labels = [("repository", shown.as_str())];
    assert_eq!(
        value(&s, "hv_backup_repository_up", &repo_labels),
        Some(1.0)
    );
    assert!(value(&s, "hv_backup_repository_available_bytes", &repo_labels).unwrap() > 0.0);
    let ok = [("name", guest.name.as_str()), ("uuid", guest.uuid.as_str())];
    assert_eq!(value(&s, "hv_backup_result_ok", &ok), Some(1.0));
    assert_eq!(
        value(&s, "hv_backup_result_ok", &[("name", missing.as_str())]),
        Some(0.0)
    );

    // A path that is not a repository fails that collector alone, with a
    // hint; the good repository beside it still reports, and the collector
    // is one series (Prometheus rejects a scrape with duplicates).
    let out = metrics(&[
        "--repo",
        dir.to_str().unwrap(),
        "--repo",
        repo.to_str().unwrap(),
    ]);
    out.assert_exit(1);
    let s = parse(&text(&out));
    assert_eq!(value(&s, "hv_libvirt_up", &[]), Some(1.0));
    assert_eq!(value(&s, "hv_backups", &vm), Some(1.0));
    assert_eq!(
        value(
            &s,
            "hv_scrape_collector_success",
            &[("collector", "backups")]
        ),
        Some(0.0)
    );
    out.assert_stderr_contains("not an hv-backup repository")
        .assert_stderr_contains("hv-backup init");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_iso_library_and_its_last_verify_become_metrics() {
    let dir = scratch("metrics-iso");
    let lib = dir.join("isos");
    let iso = |args: &[&str]| hv_iso_in(&lib, args);
    for (name, byte) in [("good.iso", 1u8), ("rotten.iso", 2)] {
        let image = dir.join(name);
        std::fs::write(&image, vec![byte; 1 << 20]).unwrap();
        let sha = String::from_utf8(
            Command::new("sha256sum")
                .arg(&image)
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let added = iso(&[
            "add",
            image.to_str().unwrap(),
            "--sha256",
            &sha[..64],
            "--allow-unsigned",
        ]);
        assert!(lib.join(name).exists(), "{added:?}");
    }
    let s = scrape_ok(&["--iso-library", lib.to_str().unwrap()]);
    let shown = lib.display().to_string();
    let good = [("name", "good.iso"), ("library", shown.as_str())];
    assert_eq!(
        value(&s, "hv_iso_images", &[("library", shown.as_str())]),
        Some(2.0)
    );
    assert_eq!(value(&s, "hv_iso_present", &good), Some(1.0));
    assert_eq!(value(&s, "hv_iso_unsigned", &good), Some(1.0));
    assert_eq!(value(&s, "hv_iso_size_bytes", &good), Some(1048576.0));
    let admitted = value(&s, "hv_iso_verified_timestamp_seconds", &good).unwrap();
    assert!((unix_now() - admitted).abs() < 600.0, "admitted {admitted}");
    assert_eq!(
        value(&s, "hv_iso_check_ok", &good),
        None,
        "never verified yet"
    );

    let mut image = std::fs::read(lib.join("rotten.iso")).unwrap();
    image[4096] ^= 0x40;
    std::fs::write(lib.join("rotten.iso"), image).unwrap();
    iso(&["verify"]);
    let s = scrape_ok(&["--iso-library", lib.to_str().unwrap()]);
    let rotten = [("name", "rotten.iso"), ("library", shown.as_str())];
    assert_eq!(value(&s, "hv_iso_check_ok", &good), Some(1.0));
    assert_eq!(value(&s, "hv_iso_check_ok", &rotten), Some(0.0));
    assert!(value(&s, "hv_iso_checked_timestamp_seconds", &rotten).unwrap() >= admitted);
    std::fs::remove_file(lib.join("good.iso")).unwrap();
    let s = scrape_ok(&["--iso-library", lib.to_str().unwrap()]);
    assert_eq!(value(&s, "hv_iso_present", &good), Some(0.0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `hv-metrics --listen PORT` on the bench, stopped when dropped.
fn listening(port: u16) -> KillOnDrop {
    listening_with(port, &[])
}

fn listening_with(port: u16, env: &[(&str, &str)]) -> KillOnDrop {
    KillOnDrop(
        Command::new(HV_METRICS)
            .args(["--listen", &port.to_string(), "-c", URI])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// `GET /metrics` from a `--listen` server, as samples.
fn http_scrape(port: u16) -> Vec<Sample> {
    let body = hv_testbench::http::get_metrics_when_up(port).unwrap_or_else(|e| panic!("{e}"));
    promtool_check(&body);
    parse(&body)
}

/// `GET /metrics` on a new connection, read to its end: the status line and
/// the body, which must be as long as its Content-Length says.
fn get_whole(port: u16) -> (String, String) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of the head in {reply:?}"));
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
    assert_eq!(body.len(), length, "the body is cut short");
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

/// A client that sends its request one byte a second, and reads whatever
/// comes back: how long the server kept the connection, and what it said.
fn trickle(mut conn: TcpStream) -> (Duration, String) {
    let opened = Instant::now();
    conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    for byte in b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n" {
        if conn.write_all(&[*byte]).is_err() {
            break;
        }
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    (
        opened.elapsed(),
        String::from_utf8_lossy(&answer).into_owned(),
    )
}

#[test]
fn listen_answers_a_scrape_at_once_while_200_idle_connections_are_held_open() {
    let port = free_port();
    let _server = listening(port);
    // Up, with libvirt connected: the timed scrape below is an ordinary one.
    http_scrape(port);
    let open = || TcpStream::connect(("127.0.0.1", port));
    let idle: Vec<TcpStream> = (0..200)
        .map(|i| open().unwrap_or_else(|e| panic!("idle connection {i}: {e}")))
        .collect();
    let trickling: Vec<_> = (0..4)
        .map(|_| {
            let conn = open().unwrap();
            std::thread::spawn(move || trickle(conn))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));

    let started = Instant::now();
    let (status, body) = get_whole(port);
    let took = started.elapsed();
    assert!(
        status.contains(" 200 "),
        "with 200 idle connections held open, the scrape got {status:?}"
    );
    assert!(
        took < Duration::from_secs(4),
        "with 200 idle and 4 trickling connections held open, a scrape took {took:.2?} (a server \
         waiting on them takes their 5 s head deadline): idle clients hold scrapes back"
    );
    promtool_check(&body);
    assert_eq!(value(&parse(&body), "hv_libvirt_up", &[]), Some(1.0));

    // The request head has 5 s in all, however the bytes trickle in.
    for client in trickling {
        let (kept, answer) = client.join().unwrap();
        assert!(
            kept < Duration::from_secs(8),
            "a client sending its request a byte a second was kept {kept:.1?} (the head has 5 s); it got {answer:?}"
        );
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408 "),
            "a client sending its request a byte a second got {answer:?}; want 408, or the connection closed"
        );
    }
    drop(idle);
}

#[test]
fn listen_refuses_a_request_head_over_8_kib() {
    let port = free_port();
    let _server = listening(port);
    http_scrape(port);
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: bench\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(16 * 1024)
    );
    // The server may stop reading, and reset the connection, before all of
    // it is sent.
    let _ = conn.write_all(request.as_bytes());
    let mut reply = Vec::new();
    let read = conn.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        !matches!(&read, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "a 16 KiB request head was neither refused nor closed within 10 s; got {reply:?}"
    );
    assert!(
        reply.starts_with("HTTP/1.1 431 ") || reply.is_empty(),
        "a 16 KiB request head got {reply:?}; want 431, or the connection closed"
    );
    // And the server still answers.
    http_scrape(port);
}

#[test]
fn listen_exits_0_promptly_on_sigterm_and_ctrl_c() {
    for signal in ["TERM", "INT"] {
        let port = free_port();
        let mut server = listening(port);
        http_scrape(port);
        // A connection still waiting for its request does not hold the exit back.
        let _idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let sent = Instant::now();
        let kill = Command::new("kill")
            .args([&format!("-{signal}"), &server.0.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success(), "kill -{signal}");
        let status = loop {
            if let Some(status) = server.0.try_wait().unwrap() {
                break status;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(10),
                "hv-metrics --listen still runs 10 s after SIG{signal}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(status.code(), Some(0), "after SIG{signal}: {status}");
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still takes connections after SIG{signal}"
        );
    }
}

#[test]
fn listen_notices_when_a_stopped_guests_image_changes() {
    let conn = connect();
    let guest = GuestSpec::new("metrics-stopped").define(&conn);
    let port = free_port();
    let _server = listening(port);
    let vda = [("name", guest.name.as_str()), ("target", "vda")];
    let allocation = |samples: &[Sample]| {
        value(samples, "hv_vm_disk_allocation_bytes", &vda).expect("the stopped guest's disk")
    };
    let before = allocation(&http_scrape(port));
    assert_eq!(allocation(&http_scrape(port)), before, "nothing changed");

    // Written while stopped, as a restore or qemu-img would.
    let written = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 7 16M 8M"])
        .arg(&guest.disk)
        .output()
        .unwrap();
    Run::new("qemu-io write", written).assert_ok();
    let after = allocation(&http_scrape(port));
    assert!(
        after >= before + 8.0 * 1048576.0,
        "allocation {before} then {after}: the cached size was served"
    );
}

#[test]
fn listen_serves_a_running_guest_the_same_series_from_what_it_remembers() {
    let conn = connect();
    let guest = GuestSpec::new("metrics-remembered").define(&conn);
    guest.start_ready();
    let port = free_port();
    let _server = listening(port);
    let of_guest = |samples: Vec<Sample>| -> BTreeMap<String, f64> {
        samples
            .into_iter()
            .filter(|s| s.labels.get("name") == Some(&guest.name))
            .map(|s| {
                let labels: Vec<String> = s
                    .labels
                    .iter()
                    .filter(|(k, _)| *k != "name" && *k != "uuid")
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                (format!("{}{{{}}}", s.name, labels.join(",")), s.value)
            })
            .collect()
    };
    // The first scrape asks libvirt for everything; the next ones take vCPU
    // counts and memory sizes from memory, the RSS from /proc and the CPU
    // times from the domain's cgroup.
    let asked = of_guest(http_scrape(port));
    let remembered = of_guest(http_scrape(port));
    let libvirt_cpu_after = cpu_seconds_from_libvirt(&guest.name);
    assert_eq!(
        asked.keys().collect::<Vec<_>>(),
        remembered.keys().collect::<Vec<_>>()
    );
    for key in [
        "hv_vm_vcpus{}",
        "hv_vm_memory_bytes{}",
        "hv_vm_memory_max_bytes{}",
    ] {
        assert_eq!(asked.get(key), remembered.get(key), "{key}");
    }
    let rss = |m: &BTreeMap<String, f64>| m["hv_vm_memory_rss_bytes{}"];
    let ratio = rss(&remembered) / rss(&asked);
    assert!(
        (0.8..1.25).contains(&ratio),
        "RSS {} from libvirt, then {} from /proc",
        rss(&asked),
        rss(&remembered)
    );
    let cpu = |m: &BTreeMap<String, f64>| m["hv_vm_cpu_seconds_total{}"];
    assert!(
        cpu(&asked) <= cpu(&remembered) && cpu(&remembered) <= libvirt_cpu_after,
        "CPU seconds {} from libvirt, then {} from the cgroup, then {libvirt_cpu_after} from libvirt",
        cpu(&asked),
        cpu(&remembered)
    );
    assert!(
        libvirt_cpu_after - cpu(&remembered) < 5.0,
        "the cgroup's CPU time {} lags libvirt's {libvirt_cpu_after}: not this VM's",
        cpu(&remembered)
    );
    let split = remembered["hv_vm_cpu_user_seconds_total{}"]
        + remembered["hv_vm_cpu_system_seconds_total{}"];
    assert!(
        (split - cpu(&remembered)).abs() < 0.5,
        "user + system {split} against total {}",
        cpu(&remembered)
    );
}

/// `cpu.time` of `virsh domstats --cpu-total`, in seconds.
fn cpu_seconds_from_libvirt(name: &str) -> f64 {
    let out = Command::new("virsh")
        .args(["-c", URI, "domstats", "--cpu-total", name])
        .output()
        .unwrap();
    let text = Run::new("virsh domstats --cpu-total", out)
        .assert_ok()
        .stdout();
    let ns: f64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("cpu.time="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no cpu.time in {text}"));
    ns / 1e9
}

/// `--host-label` puts `host` on every series, first, for one Prometheus
/// job or one textfile directory gathering several hosts; without it no
/// series has one (Prometheus' `instance` names the host it scraped).
#[test]
fn a_host_label_only_when_asked() {
    let with = scrape_ok(&["-c", "test:///default", "--host-label", "h1"]);
    assert!(!with.is_empty());
    for s in &with {
        assert_eq!(
            s.labels.get("host").map(String::as_str),
            Some("h1"),
            "{s:?}"
        );
    }
    let without = scrape_ok(&["-c", "test:///default"]);
    assert!(without.iter().all(|s| !s.labels.contains_key("host")));
    let out = metrics(&[
        "-c",
        "test:///default",
        "--host-label",
        "h1",
        "--format",
        "jsonl",
    ]);
    let first = out.assert_ok().records().remove(0);
    assert_eq!(hv_testbench::keys(&first)[..2], ["metric", "host"]);
    metrics(&["-c", "test:///default", "--host-label", "a b"])
        .assert_exit(2)
        .assert_stderr_contains("a host name or alias");
}

/// The threads of process `pid`.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn listen_keeps_one_waiting_open_for_a_host_that_never_answers() {
    // A "libvirtd" that takes connections and never says a word: libvirt's
    // open waits for it forever, and cannot be cancelled.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let uri = format!(
        "qemu+tcp://127.0.0.1:{}/system",
        silent.local_addr().unwrap().port()
    );
    std::thread::spawn(move || {
        let held: Vec<_> = silent.incoming().collect();
        drop(held);
    });
    let port = free_port();
    let server = KillOnDrop(
        Command::new(HV_METRICS)
            .args(["--listen", &port.to_string(), "-c", &uri])
            .args(["--connect-timeout", "1s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = server.0.id();
    hv_testbench::http::get_metrics_when_up(port).unwrap_or_else(|e| panic!("{e}"));
    let after_one = threads(pid);
    for _ in 0..5 {
        let (status, body) = get_whole(port);
        assert!(status.contains("200"), "{status}");
        assert!(
            body.contains("hv_libvirt_up 0"),
            "the host is reported down: {body}"
        );
    }
    let after_six = threads(pid);
    assert!(
        after_six <= after_one + 1,
        "a thread per scrape: {after_one} threads after one scrape, {after_six} after six"
    );
}
