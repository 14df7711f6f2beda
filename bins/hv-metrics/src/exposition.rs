//! The Prometheus text exposition format (version 0.0.4), written by hand:
//! it is a few escaping rules, and a client library would bring a registry
//! and global state that a one-shot command does not want.
//!
//! Every metric hv exports is declared once in [`METRICS`]; docs/metrics.md
//! is checked against that table by a test, so the documented list cannot
//! drift from what is exported.

use std::collections::HashMap;
use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        }
    }
}

pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

const fn gauge(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Gauge,
        help,
    }
}

const fn counter(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Counter,
        help,
    }
}

/// Every metric, in the order it is written.
pub static METRICS: &[Metric] = &[
    gauge("hv_libvirt_up", "1 when libvirt answered this scrape, else 0."),
    gauge("hv_libvirt_info", "Versions of libvirt and the hypervisor, as labels; always 1."),
    gauge("hv_scrape_duration_seconds", "How long this scrape took."),
    gauge("hv_scrape_collector_success", "1 when this part of the scrape succeeded, else 0."),
    gauge("hv_scrape_collector_duration_seconds", "How long this part of the scrape took."),
    gauge("hv_host_cpus", "Logical CPUs of the host."),
    gauge("hv_host_memory_bytes", "Memory of the host."),
    gauge("hv_host_memory_free_bytes", "Memory of the host that nothing uses, not even the page cache."),
    gauge("hv_host_memory_available_bytes", "Memory of the host free for new VMs: free memory plus buffers and page cache."),
    gauge("hv_host_domains", "Defined and running domains on the host."),
    gauge("hv_pool_active", "1 when the storage pool is active."),
    gauge("hv_pool_capacity_bytes", "Size of the storage pool."),
    gauge("hv_pool_allocation_bytes", "Space allocated in the storage pool."),
    gauge("hv_pool_available_bytes", "Space still free in the storage pool."),
    gauge("hv_network_active", "1 when the libvirt network runs."),
    gauge("hv_network_autostart", "1 when the libvirt network starts with the host."),
    gauge("hv_network_dhcp_addresses", "Addresses in the network's DHCP range."),
    gauge("hv_network_dhcp_leases", "DHCP leases the network has handed out."),
    gauge("hv_bridge_up", "1 when the bridge of a running network is up on this host (ip link's UP)."),
    gauge("hv_vm_state", "1 for the VM's current state, 0 for the others (running, blocked, paused, shutdown, shutoff, crashed, pmsuspended, nostate)."),
    gauge("hv_vm_state_reason", "Why the VM is in its state (libvirt's state reason), as a label; always 1."),
    gauge("hv_vm_crashed", "1 when the VM crashed: state crashed, or shut off because its QEMU process died."),
    gauge("hv_vm_autostart", "1 when the VM starts with the host."),
    gauge("hv_vm_persistent", "1 when the VM is defined (not transient)."),
    gauge("hv_vm_vcpus", "vCPUs the VM has now."),
    gauge("hv_vm_vcpus_max", "vCPUs the VM may have."),
    counter("hv_vm_cpu_seconds_total", "CPU time the VM used (all vCPUs and QEMU's own threads)."),
    counter("hv_vm_cpu_user_seconds_total", "CPU time the VM used in user mode."),
    counter("hv_vm_cpu_system_seconds_total", "CPU time the VM used in kernel mode."),
    gauge("hv_vm_memory_bytes", "Memory the VM has now (the balloon's current size)."),
    gauge("hv_vm_memory_max_bytes", "Memory the VM may have."),
    gauge("hv_vm_memory_rss_bytes", "Resident memory of the VM's QEMU process on the host."),
    gauge("hv_vm_memory_guest_available_bytes", "Memory the guest sees as usable in total (balloon driver)."),
    gauge("hv_vm_memory_guest_unused_bytes", "Memory the guest leaves unused (balloon driver)."),
    gauge("hv_vm_memory_guest_usable_bytes", "Memory the guest could use without swapping (balloon driver)."),
    gauge("hv_vm_memory_guest_disk_caches_bytes", "Memory the guest uses for disk caches it can free (balloon driver)."),
    counter("hv_vm_memory_swap_in_bytes_total", "Memory the guest swapped in (balloon driver)."),
    counter("hv_vm_memory_swap_out_bytes_total", "Memory the guest swapped out (balloon driver)."),
    counter("hv_vm_memory_major_faults_total", "Page faults in the guest that needed disk I/O (balloon driver)."),
    counter("hv_vm_memory_minor_faults_total", "Page faults in the guest served from memory (balloon driver)."),
    gauge("hv_vm_disk_info", "A disk of the VM, with its source in the label source; always 1."),
    counter("hv_vm_disk_read_bytes_total", "Bytes the VM read from the disk."),
    counter("hv_vm_disk_write_bytes_total", "Bytes the VM wrote to the disk."),
    counter("hv_vm_disk_read_requests_total", "Read requests the VM made to the disk."),
    counter("hv_vm_disk_write_requests_total", "Write requests the VM made to the disk."),
    counter("hv_vm_disk_flush_requests_total", "Flush requests the VM made to the disk."),
    counter("hv_vm_disk_read_seconds_total", "Time spent on the disk's reads."),
    counter("hv_vm_disk_write_seconds_total", "Time spent on the disk's writes."),
    counter("hv_vm_disk_flush_seconds_total", "Time spent on the disk's flushes."),
    gauge("hv_vm_disk_capacity_bytes", "Virtual size of the disk, as the guest sees it."),
    gauge("hv_vm_disk_allocation_bytes", "Bytes of the disk's image written on the host."),
    gauge("hv_vm_disk_physical_bytes", "Size of the disk's image file or device on the host."),
    counter("hv_vm_network_receive_bytes_total", "Bytes the VM received on the interface."),
    counter("hv_vm_network_receive_packets_total", "Packets the VM received on the interface."),
    counter("hv_vm_network_receive_errors_total", "Receive errors on the interface."),
    counter("hv_vm_network_receive_drops_total", "Received packets dropped on the interface."),
    counter("hv_vm_network_transmit_bytes_total", "Bytes the VM sent on the interface."),
    counter("hv_vm_network_transmit_packets_total", "Packets the VM sent on the interface."),
    counter("hv_vm_network_transmit_errors_total", "Transmit errors on the interface."),
    counter("hv_vm_network_transmit_drops_total", "Sent packets dropped on the interface."),
    gauge("hv_vm_snapshots", "Snapshots the VM has."),
    gauge("hv_vm_snapshot_oldest_timestamp_seconds", "Creation time of the VM's oldest snapshot (Unix time)."),
    gauge("hv_backup_repository_up", "1 when the backup repository could be read."),
    gauge("hv_backup_repository_size_bytes", "Size of the filesystem holding the backup repository."),
    gauge("hv_backup_repository_available_bytes", "Space still writable on the filesystem holding the backup repository."),
    gauge("hv_backups", "Backups of the VM in the repository."),
    gauge("hv_backup_last_timestamp_seconds", "When the VM's newest backup was taken (Unix time); a backup exists only once complete."),
    gauge("hv_backup_last_duration_seconds", "How long the VM's newest backup took."),
    gauge("hv_backup_last_size_bytes", "Virtual size of the disks in the VM's newest backup."),
    gauge("hv_backup_last_read_bytes", "Bytes read from the VM's disks for its newest backup."),
    gauge("hv_backup_last_stored_bytes", "Bytes the VM's newest backup added to the repository (compressed, encrypted)."),
    gauge("hv_backup_result_ok", "1 when the VM's last hv-backup create run succeeded, 0 when it failed (from --backup-results)."),
    gauge("hv_backup_result_timestamp_seconds", "When the --backup-results file was last written (Unix time)."),
    gauge("hv_iso_images", "Images in the hv-iso library (from --iso-library)."),
    gauge("hv_iso_present", "1 when the image file is there beside its sidecar, 0 when it has gone."),
    gauge("hv_iso_size_bytes", "Size of the image when it was admitted."),
    gauge("hv_iso_unsigned", "1 when the image was admitted without a verified signature (--allow-unsigned)."),
    gauge("hv_iso_verified_timestamp_seconds", "When the image was admitted (Unix time)."),
    gauge("hv_iso_check_ok", "1 when the last hv-iso verify found the image unchanged, 0 when it did not; absent before the first verify."),
    gauge("hv_iso_checked_timestamp_seconds", "When hv-iso verify last re-hashed the image (Unix time)."),
    gauge("hv_autofix_attempts", "Repairs hv-health --fix made of the VM within its window (from --health-state)."),
    gauge("hv_autofix_gave_up", "1 while hv-health --fix has given up repairing the VM (check: what it repaired), until hv-health --reset."),
];

/// The label names a metric carries, in order. One rule per family of
/// metrics, so labels stay uniform: every VM series names its VM the same
/// way, and a join `on (instance, uuid)` works between any two of them.
pub fn labels_of(name: &str) -> &'static [&'static str] {
    const VM: &[&str] = &["name", "uuid"];
    match name {
        "hv_libvirt_info" => &["libvirt_version", "hypervisor", "hypervisor_version"],
        "hv_scrape_collector_success" | "hv_scrape_collector_duration_seconds" => &["collector"],
        "hv_vm_state" => &["name", "uuid", "state"],
        "hv_vm_state_reason" => &["name", "uuid", "state", "reason"],
        "hv_vm_disk_info" => &["name", "uuid", "target", "source"],
        n if n.starts_with("hv_vm_disk_") => &["name", "uuid", "target"],
        n if n.starts_with("hv_vm_network_") => &["name", "uuid", "interface"],
        n if n.starts_with("hv_vm_") => VM,
        n if n.starts_with("hv_pool_") => &["pool"],
        n if n.starts_with("hv_network_") => &["network"],
        "hv_bridge_up" => &["bridge"],
        n if n.starts_with("hv_backup_repository_") => &["repository"],
        n if n.starts_with("hv_backup_result_") => VM,
        n if n.starts_with("hv_backup") => &["name", "uuid", "repository"],
        "hv_iso_images" => &["library"],
        "hv_autofix_gave_up" => &["name", "uuid", "check"],
        "hv_autofix_attempts" => VM,
        n if n.starts_with("hv_iso_") => &["name", "library"],
        _ => &[],
    }
}

type Labels = Vec<(&'static str, String)>;

/// One scrape's samples, grouped by metric.
#[derive(Default)]
pub struct Exposition {
    samples: HashMap<&'static str, Vec<(Labels, f64)>>,
    /// `--host-label`: written first on every series.
    pub host: Option<String>,
}

impl Exposition {
    /// Adds a sample. A name missing from [`METRICS`] is a programming
    /// error the (debug-built) tests catch; a release build would leave the
    /// sample out of [`Exposition::render`], not crash a scrape.
    pub fn add(&mut self, name: &'static str, labels: &[(&'static str, &str)], value: f64) {
        debug_assert!(
            METRICS.iter().any(|m| m.name == name),
            "metric {name} is not declared in METRICS"
        );
        debug_assert!(
            labels
                .iter()
                .map(|(k, _)| *k)
                .eq(labels_of(name).iter().copied()),
            "{name}: labels {labels:?} differ from labels_of"
        );
        let labels = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
        self.samples.entry(name).or_default().push((labels, value));
    }

    /// Takes in another part of the same scrape.
    pub fn absorb(&mut self, other: Exposition) {
        for (name, samples) in other.samples {
            self.samples.entry(name).or_default().extend(samples);
        }
    }

    pub fn series(&self) -> usize {
        self.samples.values().map(Vec::len).sum()
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(self.series() * 96);
        for metric in METRICS {
            let Some(samples) = self.samples.get(metric.name) else {
                continue;
            };
            let _ = writeln!(out, "# HELP {} {}", metric.name, escape_help(metric.help));
            let _ = writeln!(out, "# TYPE {} {}", metric.name, metric.kind.as_str());
            for (labels, value) in samples {
                write_sample(&mut out, metric.name, self.host.as_deref(), labels, *value);
            }
        }
        out
    }
}

impl Exposition {
    /// The samples as records, in the order [`Exposition::render`] writes
    /// them.
    pub fn records(&self) -> impl Iterator<Item = Series<'_>> + '_ {
        METRICS.iter().flat_map(move |metric| {
            let samples = self.samples.get(metric.name).into_iter().flatten();
            samples.map(move |(labels, value)| Series {
                metric: metric.name,
                host: self.host.as_deref(),
                labels,
                value: *value,
            })
        })
    }
}

/// One sample as a record (`hv-metrics --format jsonl`): the metric's
/// name, its labels as fields of their own, and its value (null for NaN).
pub struct Series<'a> {
    metric: &'static str,
    host: Option<&'a str>,
    labels: &'a Labels,
    value: f64,
}

impl serde::Serialize for Series<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.labels.len() + 3))?;
        m.serialize_entry("metric", self.metric)?;
        if let Some(host) = self.host {
            m.serialize_entry("host", host)?;
        }
        for (key, label) in self.labels {
            m.serialize_entry(key, label)?;
        }
        // JSON has no NaN or infinity: such a value is null.
        let value = self.value.is_finite().then_some(self.value);
        m.serialize_entry("value", &value)?;
        m.end()
    }
}

fn write_sample(out: &mut String, name: &str, host: Option<&str>, labels: &Labels, value: f64) {
    out.push_str(name);
    let host = host.map(|h| ("host", h.to_owned()));
    let all: Vec<&(&str, String)> = host.iter().chain(labels.iter()).collect();
    if !all.is_empty() {
        out.push('{');
        for (i, (key, val)) in all.into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(key);
            out.push_str("=\"");
            push_escaped_label(out, val);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    push_value(out, value);
    out.push('\n');
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Writes a label value with `\`, `"` and newlines escaped. Straight into
/// the output: a scrape writes thousands of labels.
fn push_escaped_label(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_families_keep_declared_order() {
        let mut e = Exposition::default();
        e.add(
            "hv_vm_vcpus",
            &[("name", "a \"b\"\\c\nd"), ("uuid", "u")],
            2.0,
        );
        e.add("hv_libvirt_up", &[], 1.0);
        let text = e.render();
        let up = text.find("hv_libvirt_up 1").unwrap();
        let vcpus = text.find("hv_vm_vcpus{").unwrap();
        assert!(up < vcpus, "{text}");
        assert!(
            text.contains(r#"hv_vm_vcpus{name="a \"b\"\\c\nd",uuid="u"} 2"#),
            "{text}"
        );
        assert!(text.contains("# TYPE hv_vm_vcpus gauge\n"));
        assert_eq!(e.series(), 2);
    }

    fn format_value(v: f64) -> String {
        let mut out = String::new();
        push_value(&mut out, v);
        out
    }

    #[test]
    fn values_print_exactly() {
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(1.5e18), "1500000000000000000");
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        let mut seen = std::collections::HashSet::new();
        for m in METRICS {
            assert!(seen.insert(m.name), "{} declared twice", m.name);
            assert!(m.name.starts_with("hv_"), "{}", m.name);
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
            assert!(m.help.ends_with('.'), "{}", m.name);
        }
    }
}
