//! The test bench: real QEMU guests on the real libvirt daemon, for the
//! integration tests of every hv command. Each test run gets its own name
//! prefix and every guest is destroyed, undefined and its files removed when
//! its handle drops, so a failing test leaves nothing behind for the next.
//!
//! The host is prepared by `tests/bench/setup-host.sh` and the guest image by
//! `tests/guest/build.sh` (both run by `tests/run.sh`).
//!
//! Every test reads a command's result the same way: the runners ([`hv`],
//! [`pipeline`], [`hv_as`]) return a [`Run`], whose assertions ([`run`]
//! has why) print the same context wherever they fail.

pub mod cmd;
pub mod http;
pub mod run;

pub use run::{assert_fields, Run};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use virt::connect::Connect;
use virt::domain::Domain;

pub const URI: &str = "qemu:///system";
/// Where guest disks and serial logs live (libvirt's own image directory,
/// so the QEMU user may open them).
pub const IMAGE_DIR: &str = "/var/lib/libvirt/images/hv-test";
/// Every bench guest's name starts with this; `tests/bench/sweep.sh` removes
/// leftovers of killed runs by it.
pub const NAME_PREFIX: &str = "hvt-";

/// This run's prefix, unique per test process.
pub fn run_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        format!(
            "{NAME_PREFIX}{}-{:05x}-",
            std::process::id(),
            nanos & 0xfffff
        )
    })
}

/// The built guest (kernel and initramfs), built once per recipe.
pub fn guest_image() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/build.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .expect("run tests/guest/build.sh");
        assert!(
            out.status.success(),
            "tests/guest/build.sh failed; run `tests/run.sh` or build the guest by hand"
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// A connection to the bench daemon, with a clear message when it is not set up.
pub fn connect() -> Connect {
    virt::error::clear_error_callback();
    Connect::open(Some(URI)).unwrap_or_else(|e| {
        panic!("the test bench needs libvirtd on {URI} ({e}); run `sudo tests/bench/setup-host.sh` first")
    })
}

/// `qemu` (TCG) unless `HV_TEST_DOMAIN_TYPE=kvm`: the /dev/kvm of the
/// development machines cannot boot Linux (shared/TEST-GUEST.md).
pub fn domain_type() -> String {
    std::env::var("HV_TEST_DOMAIN_TYPE").unwrap_or_else(|_| "qemu".into())
}

#[derive(Debug, Clone)]
pub struct GuestSpec {
    pub name: String,
    pub memory_mib: u32,
    pub disk_mib: u32,
    /// The guest keeps writing to its disk (a counter in sector 0, random MiBs elsewhere).
    pub writer: bool,
    /// The guest ignores ACPI power-button presses (to test forced stops).
    pub ignore_acpi: bool,
    pub autostart: bool,
    /// Where its disk, serial log and channel go: [`IMAGE_DIR`], or an
    /// extra host's own image directory as seen from here.
    pub image_dir: PathBuf,
    /// The same directory as the guest's host sees it, when that differs.
    pub host_dir: Option<PathBuf>,
}

impl GuestSpec {
    /// `suffix` is appended to the run prefix; spaces and unicode are welcome.
    pub fn new(suffix: &str) -> Self {
        GuestSpec {
            name: format!("{}{suffix}", run_prefix()),
            memory_mib: 128,
            disk_mib: 64,
            writer: false,
            ignore_acpi: false,
            autostart: false,
            image_dir: PathBuf::from(IMAGE_DIR),
            host_dir: None,
        }
    }

    /// For a guest of one of the extra hosts: its files go to that host's
    /// own /var/lib/libvirt/images, which no other host sees.
    pub fn on_host(mut self, hosts: &Hosts, alias: &str) -> Self {
        self.image_dir = hosts.images(alias);
        self.host_dir = Some(PathBuf::from(HOST_IMAGES));
        self
    }

    pub fn writer(mut self) -> Self {
        self.writer = true;
        self
    }

    pub fn ignore_acpi(mut self) -> Self {
        self.ignore_acpi = true;
        self
    }

    pub fn disk_mib(mut self, mib: u32) -> Self {
        self.disk_mib = mib;
        self
    }

    pub fn autostart(mut self) -> Self {
        self.autostart = true;
        self
    }

    /// Defines the guest (shut off) with a fresh qcow2 disk.
    pub fn define(self, conn: &Connect) -> Guest {
        let image_dir = self.image_dir.clone();
        std::fs::create_dir_all(&image_dir).expect("create the bench image directory");
        let file_stem = format!(
            "{}{}",
            run_prefix(),
            safe_file_name(&self.name[run_prefix().len()..])
        );
        let disk = image_dir.join(format!("{file_stem}.qcow2"));
        let log = image_dir.join(format!("{file_stem}.log"));
        let _ = std::fs::remove_file(&log);
        // Socket paths must stay under 108 bytes, whatever the guest's name.
        static CHANNELS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = CHANNELS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let channel = image_dir.join(format!("{}{n}.sock", run_prefix()));
        let _ = std::fs::remove_file(&channel);
        let status = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&disk)
            .arg(format!("{}M", self.disk_mib))
            .status()
            .expect("run qemu-img");
        assert!(status.success(), "qemu-img create {}", disk.display());
        let inside = |p: &Path| match &self.host_dir {
            Some(d) => d.join(p.file_name().unwrap()),
            None => p.to_path_buf(),
        };
        let xml = domain_xml(&self, &inside(&disk), &inside(&log), &inside(&channel));
        let domain = conn
            .define_domain_xml(&xml)
            .unwrap_or_else(|e| panic!("define {}: {e}", self.name));
        if self.autostart {
            domain.set_autostart(true).expect("set autostart");
        }
        let uuid = domain.uuid_string().unwrap();
        Guest {
            name: self.name,
            uuid,
            disk,
            log,
            channel,
            domain,
        }
    }
}

fn safe_file_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
}

fn domain_xml(spec: &GuestSpec, disk: &Path, log: &Path, channel: &Path) -> String {
    let image = guest_image();
    let mut cmdline = String::from("console=ttyS0 panic=-1 quiet");
    if spec.writer {
        cmdline.push_str(" hvtest.writer=1");
    }
    if spec.ignore_acpi {
        cmdline.push_str(" hvtest.ignore_acpi=1");
    }
    include_str!("../guest/domain.xml.in")
        .replace("@TYPE@", &domain_type())
        .replace("@NAME@", &xml_escape(&spec.name))
        .replace("@MEMORY_MIB@", &spec.memory_mib.to_string())
        .replace("@IMAGE_DIR@", &image.display().to_string())
        .replace("@CMDLINE@", &cmdline)
        .replace("@DISK@", &xml_escape(&disk.display().to_string()))
        .replace("@LOG@", &xml_escape(&log.display().to_string()))
        .replace("@CHANNEL@", &xml_escape(&channel.display().to_string()))
}

/// A defined bench guest; dropping it removes every trace of it.
pub struct Guest {
    pub name: String,
    pub uuid: String,
    pub disk: PathBuf,
    pub log: PathBuf,
    /// The unix socket of the guest's command port (see tests/guest/init).
    pub channel: PathBuf,
    pub domain: Domain,
}

impl Guest {
    /// Starts the guest and waits for its "ready" line on the serial log:
    /// from then on it answers ACPI shutdown.
    pub fn start_ready(&self) -> &Self {
        self.domain
            .create()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.name));
        self.wait_ready();
        self
    }

    /// Waits for the guest's "ready" line: under TCG, with other tests'
    /// guests booting beside it on two cores, that can take minutes.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(180);
        while Instant::now() < deadline {
            if self.serial_log().contains("hv-test-guest: ready") {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "guest {} did not become ready in 180 s; serial log:\n{}",
            self.name,
            self.serial_log()
        );
    }

    pub fn serial_log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Has the running guest write `count_mib` random MiBs at `offset_mib`
    /// of its disk (synced) and waits until it says it did.
    pub fn write_mib(&self, offset_mib: u64, count_mib: u64) {
        let reply = self.command(&format!("write {offset_mib} {count_mib}"));
        assert_eq!(
            reply,
            format!("wrote {offset_mib} {count_mib}"),
            "guest {}",
            self.name
        );
    }

    /// Sends one command line to the guest's command port; its answer line.
    pub fn command(&self, line: &str) -> String {
        command_at(&self.channel, &self.name, line)
    }

    /// virsh's own view, e.g. "shut off (shutdown)": the ground truth tests compare with.
    pub fn virsh_domstate(&self) -> String {
        let out = Command::new("virsh")
            .args(["-c", URI, "domstate", "--reason", &self.uuid])
            .output()
            .expect("run virsh");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Kills the guest's QEMU from outside (as the OOM killer or a crash
    /// would) and waits until libvirt shows it shut off, reason crashed.
    pub fn kill_qemu(&self) {
        let pid_file = format!("/var/run/libvirt/qemu/{}.pid", self.name);
        let pid = std::fs::read_to_string(&pid_file).unwrap_or_else(|e| panic!("{pid_file}: {e}"));
        let st = Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap();
        assert!(st.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.virsh_domstate() != "shut off (crashed)" {
            assert!(
                Instant::now() < deadline,
                "{}: {}",
                self.name,
                self.virsh_domstate()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        remove_domain(&self.domain);
        let _ = std::fs::remove_file(&self.disk);
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_file(&self.channel);
    }
}

/// Extra libvirt hosts on this machine (tests/bench/hosts.sh): each its own
/// libvirtd in its own mount and network namespace, reached over a real
/// sshd as `qemu+ssh://root@10.231.0.1N/system`. Started once and shared by
/// every test (starting is idempotent and locked); sweep.sh stops them.
pub struct Hosts {
    /// (alias, URI), h1 first.
    pub hosts: Vec<(String, String)>,
}

pub const HOSTS_DIR: &str = "/var/tmp/hv-hosts";

/// Each extra host's image directory (its pool "default"), as it sees it.
pub const HOST_IMAGES: &str = "/var/lib/libvirt/images";

/// At least `n` extra hosts, started if they are not running.
pub fn hosts(n: usize) -> Hosts {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/hosts.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(["start", HOSTS_DIR, &n.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .expect("run tests/bench/hosts.sh");
    assert!(
        out.status.success(),
        "tests/bench/hosts.sh start failed (it needs root, sshd and iproute2)"
    );
    let hosts = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (alias, uri) = l.split_once(' ').expect("alias URI");
            (alias.to_owned(), uri.to_owned())
        })
        .collect();
    Hosts { hosts }
}

impl Hosts {
    /// Host `alias`'s own /var/lib/libvirt/images, seen from here.
    pub fn images(&self, alias: &str) -> PathBuf {
        PathBuf::from(HOSTS_DIR).join(alias).join("lib/images")
    }

    pub fn uri(&self, alias: &str) -> &str {
        &self.hosts.iter().find(|(a, _)| a == alias).expect(alias).1
    }

    pub fn connect(&self, alias: &str) -> Connect {
        Connect::open(Some(self.uri(alias)))
            .unwrap_or_else(|e| panic!("connect to {alias} ({}): {e}", self.uri(alias)))
    }

    /// Writes a hosts file of these hosts and `extra` lines into `dir`.
    pub fn file(&self, dir: &Path, extra: &[&str]) -> PathBuf {
        let mut text = String::from("# the bench's extra hosts (tests/bench/hosts.sh)\n");
        for (alias, uri) in &self.hosts {
            text.push_str(&format!("{alias}  {uri}\n"));
        }
        for line in extra {
            text.push_str(line);
            text.push('\n');
        }
        let path = dir.join("hosts");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Stops or starts host `i`'s libvirtd; its sshd keeps answering.
    pub fn daemon(&self, i: usize, action: &str) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/hosts.sh");
        let st = Command::new("bash")
            .arg(&script)
            .args(["daemon", HOSTS_DIR, &i.to_string(), action])
            .status()
            .unwrap();
        assert!(st.success(), "hosts.sh daemon {i} {action}");
    }
}

/// Sends one command line to a guest's command port at `channel` (after a
/// migration, on its new host); its answer line.
pub fn command_at(channel: &Path, name: &str, line: &str) -> String {
    use std::io::{BufRead, Write};
    let deadline = Instant::now() + Duration::from_secs(30);
    let sock = loop {
        match std::os::unix::net::UnixStream::connect(channel) {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => {
                panic!("guest {}: command port {}: {e}", name, channel.display())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    sock.set_read_timeout(Some(Duration::from_secs(300)))
        .unwrap();
    (&sock).write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut answer = String::new();
    std::io::BufReader::new(&sock)
        .read_line(&mut answer)
        .unwrap_or_else(|e| panic!("guest {}: no answer to {line:?}: {e}", name));
    answer.trim().to_owned()
}

/// Destroys and undefines a domain with whatever metadata it gathered.
pub fn remove_domain(domain: &Domain) {
    if domain.is_active().unwrap_or(false) {
        let _ = domain.destroy();
    }
    let flags = virt::sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        | virt::sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        | virt::sys::VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
        | virt::sys::VIR_DOMAIN_UNDEFINE_NVRAM;
    let _ = domain.undefine_flags(flags);
}

/// A workspace binary, for tests that cross commands (a crate's own tests
/// get theirs from `CARGO_BIN_EXE_*`). `cargo test --workspace` builds them.
pub fn bin(name: &str) -> String {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run the tests with `cargo test --workspace`",
        path.display()
    );
    path.display().to_string()
}

/// Runs a shell pipeline with the workspace's binaries first on PATH.
pub fn pipeline(script: &str) -> Run {
    let dir = Path::new(&bin("hv-ls")).parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-o", "pipefail", "-c", script])
        .env("PATH", path)
        .env("HV_CONNECT", URI)
        .stdin(Stdio::null())
        .output()
        .expect("run bash");
    Run::new(script, out)
}

/// Runs an hv command with `input` piped to it; with no input its stdin is
/// /dev/null, as under cron or systemd (an empty pipe names no VM).
pub fn hv(binary: &str, args: &[&str], input: &str) -> Run {
    let stdin = if input.is_empty() {
        Stdio::null()
    } else {
        Stdio::piped()
    };
    let mut child = Command::new(binary)
        .args(args)
        .env("HV_CONNECT", URI)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {binary}: {e}"));
    use std::io::Write;
    let stdin = child.stdin.take();
    let fed = input.to_owned();
    let feeder = std::thread::spawn(move || {
        if let Some(mut stdin) = stdin {
            let _ = stdin.write_all(fed.as_bytes());
        }
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    Run::new(run::command_line(binary, args, input), out)
}

/// Runs a built binary as the unprivileged user `nobody`.
pub fn hv_as_nobody(binary: &str, args: &[&str]) -> Run {
    hv_as("nobody", binary, args)
}

/// Runs a built binary as `user` with that user's groups, from a copy in a
/// world-readable directory (the build tree may not be reachable for it).
pub fn hv_as(user: &str, binary: &str, args: &[&str]) -> Run {
    use std::os::unix::fs::PermissionsExt;
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("{}as-{user}-{call}", run_prefix()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.join(Path::new(binary).file_name().unwrap());
    std::fs::copy(binary, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let group = Command::new("id").args(["-g", user]).output().unwrap();
    assert!(
        group.status.success(),
        "no user {user}: run tests/bench/setup-host.sh"
    );
    let group = String::from_utf8(group.stdout).unwrap();
    let out = Command::new("setpriv")
        .arg(format!("--reuid={user}"))
        .arg(format!("--regid={}", group.trim()))
        .args(["--init-groups", "--"])
        .arg(&copy)
        .args(args)
        .env("HOME", "/nonexistent")
        .env_remove("HV_CONNECT")
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv (util-linux)");
    let _ = std::fs::remove_dir_all(&dir);
    Run::new(
        format!("(as {user}) {}", run::command_line(binary, args, "")),
        out,
    )
}

/// SHA-256 of a disk image's guest-visible bytes (qemu-img convert to raw,
/// then sha256sum), optionally of an internal snapshot; `-U` so a running
/// guest's image can be read.
pub fn image_sha256(image: &Path, snapshot: Option<&str>) -> String {
    image_digest(image, snapshot, "sha256sum")
}

/// BLAKE3 of a disk image's guest-visible bytes, as `b3sum` prints it for
/// the raw image: what hv-backup's manifests and restore records hold.
pub fn image_blake3(image: &Path) -> String {
    image_digest(image, None, "b3sum")
}

fn image_digest(image: &Path, snapshot: Option<&str>, tool: &str) -> String {
    let raw = std::env::temp_dir().join(format!(
        "{}digest-{}.raw",
        run_prefix(),
        std::thread::current()
            .name()
            .unwrap_or("t")
            .replace(':', "_")
    ));
    let mut convert = Command::new("qemu-img");
    convert.args(["convert", "-U", "-O", "raw"]);
    if let Some(name) = snapshot {
        convert.arg("-l").arg(format!("snapshot.name={name}"));
    }
    let status = convert.arg(image).arg(&raw).status().expect("run qemu-img");
    assert!(status.success(), "qemu-img convert {}", image.display());
    let out = Command::new(tool)
        .arg(&raw)
        .output()
        .unwrap_or_else(|e| panic!("run {tool} (setup-host.sh installs it): {e}"));
    let _ = std::fs::remove_file(&raw);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("{tool} output"))
        .to_owned()
}

/// `promtool check metrics` on an exposition: Err with promtool's complaint
/// (its lint findings count as failures, as they would in CI).
pub fn promtool_check_metrics(text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("promtool (Debian package prometheus): {e}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let written = stdin.write_all(text.as_bytes());
    drop(stdin);
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    written.map_err(|e| e.to_string())?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("promtool check metrics: {said}"))
    }
}

/// A loopback TCP port nobody listens on right now, for a server a test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// A server process (hv-metrics --listen, Prometheus, an exporter) that is
/// killed when the test or benchmark ends, however it ends.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A small tmpfs mounted over a directory (the bench runs as root), to
/// fill a filesystem without filling the host's; unmounted on drop.
pub struct Tmpfs {
    pub dir: PathBuf,
    size_mib: u64,
}

impl Tmpfs {
    pub fn mount(dir: &Path, size_mib: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs at {}", dir.display());
        Tmpfs {
            dir: dir.to_path_buf(),
            size_mib,
        }
    }

    /// Fills the filesystem to about `percent` used.
    pub fn fill(&self, percent: u64) {
        let _ = std::fs::remove_file(self.dir.join("fill"));
        let len = (self.size_mib << 20) * percent / 100;
        std::fs::write(self.dir.join("fill"), vec![1u8; len as usize]).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// An hv-backup repository at `repo` (identity and keys in `dir`); the
/// arguments `hv-backup create` needs for it.
pub fn backup_repo(dir: &Path, repo: &Path) -> Vec<String> {
    let identity = dir.join("identity.txt");
    let st = Command::new("age-keygen")
        .arg("-o")
        .arg(&identity)
        .output()
        .expect("age-keygen (Debian package age)");
    assert!(st.status.success());
    let recipient = Command::new("age-keygen")
        .arg("-y")
        .arg(&identity)
        .output()
        .unwrap();
    let recipient = String::from_utf8(recipient.stdout)
        .unwrap()
        .trim()
        .to_owned();
    let keys = dir.join("keys").display().to_string();
    hv(
        &bin("hv-backup"),
        &[
            "init",
            repo.to_str().unwrap(),
            "--recipient",
            &recipient,
            "--key-dir",
            &keys,
        ],
        "",
    )
    .assert_ok();
    vec![
        "--repo".into(),
        repo.display().to_string(),
        "--key-dir".into(),
        keys,
        "--cache-dir".into(),
        dir.join("cache").display().to_string(),
        "--scratch-dir".into(),
        dir.join("scratch").display().to_string(),
    ]
}

/// The one check record (hv-health, hv-preflight) of `check` about
/// `subject` (host, a VM name, a pool, a path).
pub fn check_record<'a>(
    recs: &'a [serde_json::Value],
    check: &str,
    subject: &str,
) -> &'a serde_json::Value {
    let found: Vec<&serde_json::Value> = recs
        .iter()
        .filter(|r| r["check"] == check && r["subject"] == subject)
        .collect();
    assert_eq!(found.len(), 1, "{check} {subject}: {recs:#?}");
    found[0]
}

/// An empty directory for one test, `/var/tmp/<run prefix><label>` (on disk,
/// not tmpfs, and swept by tests/bench/sweep.sh if the test dies).
pub fn scratch(label: &str) -> PathBuf {
    let dir = PathBuf::from(format!("/var/tmp/{}{label}", run_prefix()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A distributor's signed SHA256SUMS for one image, made with gpg in
/// `dir` (a fresh keyring in `dir/gnupg`): the image (1 MiB), the sums,
/// their detached signature and the signer's public key, as `hv-iso add
/// IMAGE --checksums SUMS --signature SIG --keyring KEY` takes them.
pub fn signed_image(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let gnupg = dir.join("gnupg");
    std::fs::create_dir_all(&gnupg).unwrap();
    gpg(
        &gnupg,
        dir,
        &[
            "--quick-gen-key",
            "hv test <test@hv.invalid>",
            "ed25519",
            "sign",
            "never",
        ],
    );
    let image = dir.join(name);
    std::fs::write(&image, vec![7u8; 1 << 20]).unwrap();
    let sums = dir.join("SHA256SUMS");
    let hash = Command::new("sha256sum")
        .arg(name)
        .current_dir(dir)
        .output()
        .unwrap();
    std::fs::write(&sums, &hash.stdout).unwrap();
    gpg(
        &gnupg,
        dir,
        &[
            "--armor",
            "--detach-sign",
            "--output",
            "SHA256SUMS.asc",
            "SHA256SUMS",
        ],
    );
    gpg(&gnupg, dir, &["--armor", "--export", "--output", "key.asc"]);
    (image, sums, dir.join("SHA256SUMS.asc"), dir.join("key.asc"))
}

/// A library at `lib` holding `name`: a 1 MiB image that hv-iso admitted by
/// its distributor's signature (made in `dir` by [`signed_image`]), as
/// hv-define, hv-set and the completions find ISOs.
pub fn proven_iso(dir: &Path, lib: &Path, name: &str) {
    let (image, sums, sig, key) = signed_image(dir, name);
    let p = |p: &Path| p.to_str().unwrap().to_owned();
    hv_iso_in(
        lib,
        &[
            "add",
            &p(&image),
            "--checksums",
            &p(&sums),
            "--signature",
            &p(&sig),
            "--keyring",
            &p(&key),
        ],
    )
    .assert_ok();
}

/// gpg with the keyring in `gnupg`, run in `dir`, batch mode with no
/// passphrase; a failure fails the test.
fn gpg(gnupg: &Path, dir: &Path, args: &[&str]) {
    let out = Command::new("gpg")
        .arg("--homedir")
        .arg(gnupg)
        .args([
            "--batch",
            "--quiet",
            "--passphrase",
            "",
            "--pinentry-mode",
            "loopback",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("gpg (Debian package gpg)");
    Run::new(format!("gpg {args:?}"), out).assert_ok();
}

/// Runs hv-iso on the library `lib`.
pub fn hv_iso_in(lib: &Path, args: &[&str]) -> Run {
    let mut full = vec!["--library", lib.to_str().unwrap()];
    full.extend(args);
    hv(&bin("hv-iso"), &full, "")
}

/// A real terminal: a detached tmux session of `width` columns running one
/// shell command line, with the workspace's binaries first on PATH and
/// HV_CONNECT set to the bench daemon.
pub struct Terminal {
    session: String,
}

impl Terminal {
    /// Runs `script` in a new `width`-column terminal and waits (up to
    /// `timeout`) for it to end.
    pub fn run(script: &str, width: u16, timeout: std::time::Duration) -> Terminal {
        let t = Terminal::start(script, width, 200);
        let started = std::time::Instant::now();
        while !t.screen(false).contains("[exit ") {
            assert!(
                started.elapsed() < timeout,
                "{script} did not end within {timeout:?}:\n{}",
                t.screen(false)
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        t
    }

    /// Starts `script` in a new `width` × `height` terminal and returns at
    /// once, for a program that keeps the screen (hv-top); when it ends,
    /// the terminal shows `[exit STATUS]`.
    pub fn start(script: &str, width: u16, height: u16) -> Terminal {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let session = format!("{}term{n}", run_prefix());
        let dir = Path::new(&bin("hv-ls")).parent().unwrap().to_path_buf();
        let line = format!(
            "export PATH='{}':\"$PATH\" HV_CONNECT='{URI}'; unset COLUMNS; {script}; echo \"[exit $?]\"; sleep 600",
            dir.display()
        );
        let st = tmux(&session)
            .args(["new-session", "-d", "-s", &session, "-x"])
            .arg(width.to_string())
            .args([
                "-y",
                &height.to_string(),
                "bash",
                "--norc",
                "--noprofile",
                "-c",
                &line,
            ])
            .status()
            .expect("tmux (Debian package tmux)");
        assert!(st.success(), "tmux new-session");
        Terminal { session }
    }

    /// An interactive bash of `width` columns, for typing into with
    /// [`Terminal::keys`] (completion, prompts).
    pub fn shell(width: u16) -> Terminal {
        Terminal::shell_of(width, &["bash", "--norc", "--noprofile", "-i"])
    }

    /// The interactive shell `argv` (zsh, fish), as [`Terminal::shell`].
    pub fn shell_of(width: u16, argv: &[&str]) -> Terminal {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let session = format!("{}shell{n}", run_prefix());
        let dir = Path::new(&bin("hv-ls")).parent().unwrap().to_path_buf();
        let st = tmux(&session)
            .args(["new-session", "-d", "-s", &session, "-x"])
            .arg(width.to_string())
            .args(["-y", "50"])
            .args(argv)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    dir.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("HV_CONNECT", URI)
            .env("PS1", "$ ")
            .status()
            .expect("tmux (Debian package tmux)");
        assert!(st.success(), "tmux new-session");
        Terminal { session }
    }

    /// Types `keys` (tmux key names such as `Tab`, `Enter`, or text).
    pub fn keys(&self, keys: &[&str]) {
        let st = tmux(&self.session)
            .args(["send-keys", "-t", &self.session])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(st.success());
    }

    /// Empties the command line and the screen, and waits until the
    /// prompt stands alone: the next keys start a new line. Ctrl-U, not
    /// Ctrl-C: a SIGINT makes the terminal drop the keys typed after it.
    pub fn fresh_line(&self) {
        self.keys(&["C-u", "clear", "Enter"]);
        let started = std::time::Instant::now();
        loop {
            let screen = self.screen(false);
            let prompt = screen.ends_with('#') || screen.ends_with('$');
            if screen.lines().count() == 1 && prompt {
                return;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "the prompt did not come back:\n{screen}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Waits until the screen shows `text`; the screen.
    pub fn wait_for(&self, text: &str, timeout: std::time::Duration) -> String {
        let started = std::time::Instant::now();
        loop {
            let screen = self.screen(true);
            if screen.contains(text) {
                return screen;
            }
            assert!(
                started.elapsed() < timeout,
                "{text:?} did not appear within {timeout:?}:\n{screen}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// What the terminal shows; with `joined`, lines the terminal wrapped
    /// are joined again, so a line longer than the width shows as one.
    pub fn screen(&self, joined: bool) -> String {
        let mut cmd = tmux(&self.session);
        cmd.args(["capture-pane", "-p", "-t", &self.session]);
        if joined {
            cmd.arg("-J");
        }
        let out = cmd.output().expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }

    /// What the terminal shows, with its colours and attributes as escape
    /// sequences (tmux's own rendering of them).
    pub fn screen_escaped(&self) -> String {
        let out = tmux(&self.session)
            .args(["capture-pane", "-p", "-e", "-t", &self.session])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }

    /// The process ID of the terminal's shell: what it runs are its children.
    pub fn shell_pid(&self) -> u32 {
        let out = tmux(&self.session)
            .args(["list-panes", "-t", &self.session, "-F", "#{pane_pid}"])
            .output()
            .expect("tmux list-panes");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    /// The exit status the command line ended with.
    pub fn exit_status(&self) -> i32 {
        let screen = self.screen(false);
        let at = screen.rfind("[exit ").unwrap();
        screen[at + 6..].split(']').next().unwrap().parse().unwrap()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = tmux(&self.session).arg("kill-server").status();
    }
}

/// tmux talking to the server of `session` alone. Each terminal has its
/// own server (`-L`): on one shared server, the last session's end
/// stops the server while another test's `new-session` is connecting
/// to it, and that test fails with "server exited unexpectedly".
fn tmux(session: &str) -> Command {
    let mut cmd = Command::new("tmux");
    cmd.args(["-L", session]).env_remove("TMUX");
    cmd
}

/// The names the first table at or after `heading` in `docs/<doc>` gives, in order:
/// every backticked name in the first column of each row (`` `name`,
/// `uuid` `` is two). A record type's test compares its fields with
/// these, so the docs cannot drift from the code.
pub fn documented_fields(doc: &str, heading: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(doc);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let at = text
        .find(heading)
        .unwrap_or_else(|| panic!("{} has no {heading:?}", path.display()));
    text[at..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .skip(2)
        .take_while(|l| l.starts_with("| `"))
        .flat_map(|l| {
            let first = l.split(" | ").next().unwrap_or("");
            first
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Asserts that `record` has exactly the fields the table under `heading`
/// in `docs/<doc>` names, in that order.
#[track_caller]
pub fn assert_documented(
    record: &serde_json::Map<String, serde_json::Value>,
    doc: &str,
    heading: &str,
) {
    let fields: Vec<String> = record.keys().cloned().collect();
    assert_eq!(
        fields,
        documented_fields(doc, heading),
        "docs/{doc}, {heading}"
    );
}

/// Where hv-define's VMs log their serial console (its `<log>` element).
pub fn serial_log(name: &str) -> PathBuf {
    PathBuf::from(format!("/var/log/libvirt/qemu/{name}-serial0.log"))
}

/// Waits until the log at `path` has a whole line holding `start`; that
/// line from `start` on (the serial console ends lines with "\r\n").
pub fn wait_for_line(path: &Path, start: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read(path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if let Some(at) = text.find(start) {
            if let Some(end) = text[at..].find('\n') {
                return text[at..at + end].trim_end().to_owned();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no line with {start:?} in {} within {timeout:?}; it holds:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// virsh on the bench daemon; its stdout, or a panic with its stderr.
pub fn virsh(args: &[&str]) -> String {
    let out = Command::new("virsh")
        .args(["-c", URI])
        .args(args)
        .output()
        .expect("virsh (Debian package libvirt-clients)");
    Run::new(format!("virsh {args:?}"), out)
        .assert_ok()
        .stdout()
}

/// Whether a domain of that name exists on the bench daemon.
pub fn exists(name: &str) -> bool {
    connect().lookup_domain_by_name(name).is_ok()
}

/// A record's field names, in order.
pub fn keys(record: &serde_json::Value) -> Vec<String> {
    record
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// The `error.message` of a failure record.
pub fn error_message(record: &serde_json::Value) -> String {
    record["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {record}"))
        .to_owned()
}

/// An hv-ls record with the result envelope (`action`, `ok`) after name
/// and uuid and `extra` at the end: what hv-define and hv-clone print of a
/// VM they made.
pub fn with_envelope(
    action: &str,
    listed: &serde_json::Value,
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut expected = serde_json::Map::new();
    for (i, (k, v)) in listed
        .as_object()
        .expect("an hv-ls record")
        .iter()
        .enumerate()
    {
        if i == 2 {
            expected.insert("action".into(), action.into());
            expected.insert("ok".into(), true.into());
        }
        expected.insert(k.clone(), v.clone());
    }
    for (k, v) in extra.as_object().expect("an object") {
        expected.insert(k.clone(), v.clone());
    }
    serde_json::Value::Object(expected)
}

/// Where the bench's one-node Garage keeps its data (tests/bench/garage.sh).
pub const GARAGE_DIR: &str = "/var/tmp/hv-garage";

/// Starts the bench's one-node Garage if it is not running, and puts what
/// hv-backup needs to reach it (HV_S3_ENDPOINT, HV_S3_REGION,
/// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) into this process's
/// environment, which the commands it runs inherit. nextest runs each
/// test in a process of its own. Returns those variables.
pub fn garage() -> Vec<(String, String)> {
    garage_cluster(GARAGE_DIR, 1, 39)
}

/// An N-node Garage cluster in `dir` with ports `P<node>0` (see
/// tests/bench/garage.sh), as [`garage`].
pub fn garage_cluster(dir: &str, nodes: u32, port_base: u32) -> Vec<(String, String)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/garage.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(["start", dir, &nodes.to_string(), &port_base.to_string()])
        .output()
        .expect("bash");
    Run::new("garage.sh start", out.clone()).assert_ok();
    let vars: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    for (k, v) in &vars {
        std::env::set_var(k, v);
    }
    vars
}
