//! hv as a person sees it: in a real terminal (tmux) of 80 columns.

use hv_testbench::{backup_repo, connect, scratch, GuestSpec, Terminal};
use std::time::Duration;

/// Asserts that no line of `t`'s screen was longer than `width`, but for
/// messages on stderr (`hv-…: …`), which wrap as any message does.
fn fits(t: &Terminal, width: usize, what: &str) {
    let joined = t.screen(true);
    for line in joined.lines().filter(|l| !l.starts_with("hv-")) {
        assert!(
            line.chars().count() <= width,
            "{what}: a line of {} columns at {width}:\n{joined}",
            line.chars().count()
        );
    }
}

#[test]
fn bench_a_failed_item_shows_why_at_a_terminal() {
    let t = Terminal::run("hv-start hv-no-such-vm", 80, Duration::from_secs(30));
    let screen = t.screen(true);
    assert_eq!(t.exit_status(), 1, "{screen}");
    assert!(screen.contains("not_found"), "{screen}");
    assert!(
        screen
            .lines()
            .any(|l| l.contains("hv-no-such-vm") && l.contains("not_found:") && l.len() > 40),
        "the message names the item: {screen}"
    );
    fits(&t, 80, "hv-start");
}

#[test]
fn bench_tables_fit_80_columns() {
    let conn = connect();
    let g = GuestSpec::new("term wide");
    let _g = g.define(&conn);
    let dir = scratch("term-tables");
    let repo = dir.join("repo");
    let args = backup_repo(&dir, &repo).join(" ");
    // A VM hv-define makes, with the long paths its disks and seed get.
    let made = format!("{}term made ü", hv_testbench::run_prefix());
    let images = std::path::Path::new(hv_testbench::IMAGE_DIR)
        .join(format!("{}term-made", hv_testbench::run_prefix()));
    std::fs::create_dir_all(&images).unwrap();
    let profile = serde_json::json!({"name": made, "type": "qemu", "memory": "128M",
        "disk": "8M", "dir": images, "cloud_init": {"hostname": "term"}});
    let profile_file = dir.join("made.json");
    std::fs::write(&profile_file, profile.to_string()).unwrap();
    for (script, what) in [
        (
            format!("hv-define '{}'", profile_file.display()),
            "hv-define",
        ),
        (format!("hv-clone --dry-run --count 2 '{made}'"), "hv-clone"),
        ("hv-health".to_owned(), "hv-health"),
        (
            format!(
                "hv-health --fix vm.crashed,vm.autostart --dry-run --state-file '{}'",
                dir.join("health.json").display()
            ),
            "hv-health --fix",
        ),
        ("hv-snap schedule --dry-run".to_owned(), "hv-snap schedule"),
        ("hv-preflight".to_owned(), "hv-preflight"),
        ("hv-ls".to_owned(), "hv-ls"),
        (
            format!("hv-set '{made}' --memory 192M --vcpus 2 --boot cdrom,hd --dry-run"),
            "hv-set",
        ),
        ("hv-pool ls".to_owned(), "hv-pool ls"),
        ("hv-net ls".to_owned(), "hv-net ls"),
        (
            format!("hv-iso --library {} ls", dir.join("iso").display()),
            "hv-iso ls",
        ),
        (
            format!(
                "hv-backup create {args} '{}' && hv-backup ls --repo {}",
                _g.name,
                repo.display()
            ),
            "hv-backup create, ls",
        ),
    ] {
        let t = Terminal::run(&script, 80, Duration::from_secs(120));
        fits(&t, 80, what);
        let screen = t.screen(true);
        assert!(
            !screen.contains("scanned"),
            "{what}: the progress line is left on the screen:\n{screen}"
        );
        if matches!(what, "hv-define" | "hv-clone" | "hv-set") {
            assert!(screen.contains("[exit 0]"), "{what} failed:\n{screen}");
        }
    }
    if let Ok(d) = conn.lookup_domain_by_name(&made) {
        hv_testbench::remove_domain(&d);
    }
    let _ = std::fs::remove_dir_all(&images);
    let _ = std::fs::remove_dir_all(&dir);
}

/// zsh with the checked-in completions on its fpath.
fn zsh_with_completions() -> Terminal {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap();
    let zsh = Terminal::shell_of(120, &["zsh", "-f"]);
    zsh.keys(&[
        &format!(
            "fpath=('{}' $fpath); autoload -U compinit; compinit -u -D",
            root.join("completions/zsh").display()
        ),
        "Enter",
    ]);
    zsh
}

/// The checked-in completion file for `shell` and `command`.
fn completion(shell: &str, command: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let file = match shell {
        "bash" => format!("completions/bash/{command}"),
        _ => format!("completions/fish/{command}.fish"),
    };
    root.join(file)
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn bench_bash_completes_flags_after_a_subcommand_and_names_from_hv() {
    let conn = connect();
    let off = GuestSpec::new("complete-off").define(&conn);
    let on = GuestSpec::new("complete-on").define(&conn);
    on.start_ready();
    let t = Terminal::shell(120);
    for command in ["hv-snap", "hv-start", "hv-stop", "hv-backup"] {
        t.keys(&[
            &format!("source '{}'", completion("bash", command)),
            "Enter",
        ]);
    }
    t.fresh_line();

    // Flags after a subcommand.
    t.keys(&["hv-snap create --", "Tab", "Tab"]);
    let screen = t.wait_for("--description", Duration::from_secs(10));
    assert!(screen.contains("--disk-only"), "{screen}");
    t.fresh_line();

    // VM names: shut-off ones for hv-start, running ones for hv-stop.
    let prefix = hv_testbench::run_prefix();
    t.keys(&[&format!("hv-start {prefix}complete-"), "Tab"]);
    let screen = t.wait_for(&off.name, Duration::from_secs(10));
    assert!(
        !screen.contains(&on.name),
        "hv-start offers a running VM: {screen}"
    );
    t.fresh_line();
    t.keys(&[&format!("hv-stop {prefix}complete-"), "Tab"]);
    let screen = t.wait_for(&on.name, Duration::from_secs(10));
    assert!(
        !screen.contains(&off.name),
        "hv-stop offers a stopped VM: {screen}"
    );
    t.fresh_line();

    // --wait is offered with its `=`, never as a flag taking the next word.
    t.keys(&["hv-start --wait", "Tab", "Tab"]);
    t.wait_for("--wait=agent", Duration::from_secs(10));
    t.fresh_line();

    // Backup ids from the repository named on the line.
    let dir = scratch("complete-backup");
    let repo = dir.join("repo");
    let args = backup_repo(&dir, &repo);
    let mut create: Vec<&str> = vec!["create", &off.name];
    create.extend(args.iter().map(String::as_str));
    let out = hv_testbench::hv(&hv_testbench::bin("hv-backup"), &create, "");
    let id = out.assert_ok().records()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    t.keys(&[
        &format!("hv-backup verify --repo {} 20", repo.display()),
        "Tab",
    ]);
    t.wait_for(&id, Duration::from_secs(10));
    t.fresh_line();

    // Pool names for a flag that names a pool, and for hv-pool ls.
    let pool = format!("{prefix}complete-pool");
    let spec = serde_json::json!({"name": pool, "path": dir.join("pool")});
    hv_testbench::hv(
        &hv_testbench::bin("hv-pool"),
        &["define"],
        &format!("{spec}\n"),
    )
    .assert_ok();
    /// Runs its cleanup when the test ends, passed or not.
    struct Gone(Box<dyn Fn()>);
    impl Drop for Gone {
        fn drop(&mut self) {
            (self.0)();
        }
    }
    let name = pool.clone();
    let _gone = Gone(Box::new(move || {
        if let Ok(p) = connect().lookup_storage_pool_by_name(&name) {
            let _ = p.destroy();
            let _ = p.undefine();
        }
    }));
    for command in ["hv-preflight", "hv-pool"] {
        t.keys(&[
            &format!("source '{}'", completion("bash", command)),
            "Enter",
        ]);
    }
    t.fresh_line();
    t.keys(&[
        &format!("hv-preflight --name x --pool {prefix}complete-p"),
        "Tab",
    ]);
    t.wait_for(&pool, Duration::from_secs(10));
    t.fresh_line();
    t.keys(&[&format!("hv-pool ls {prefix}complete-p"), "Tab"]);
    t.wait_for(&pool, Duration::from_secs(10));

    // Network names for hv-net ls, from hv-net ls.
    let net = format!("{prefix}complete-net");
    let spec = serde_json::json!({"name": net, "type": "isolated", "address": "10.235.0.1/24"});
    hv_testbench::hv(
        &hv_testbench::bin("hv-net"),
        &["define"],
        &format!("{spec}\n"),
    )
    .assert_ok();
    let name = net.clone();
    let _net_gone = Gone(Box::new(move || {
        if let Ok(n) = connect().lookup_network_by_name(&name) {
            let _ = n.destroy();
            let _ = n.undefine();
        }
    }));
    t.fresh_line();
    t.keys(&[
        &format!("source '{}'", completion("bash", "hv-net")),
        "Enter",
    ]);
    t.fresh_line();
    t.keys(&[&format!("hv-net ls {prefix}complete-n"), "Tab"]);
    t.wait_for(&net, Duration::from_secs(10));

    // ISO names for hv-set --cdrom, from the hv-iso library that
    // HV_ISO_LIBRARY names (hv-set's own default for it).
    let lib = dir.join("library");
    let iso = format!("{prefix}complete-distro.iso");
    hv_testbench::proven_iso(&dir, &lib, &iso);
    t.fresh_line();
    t.keys(&[
        &format!(
            "export HV_ISO_LIBRARY='{}'; source '{}'",
            lib.display(),
            completion("bash", "hv-set")
        ),
        "Enter",
    ]);
    t.fresh_line();
    t.keys(&[
        &format!("hv-set '{}' --cdrom {prefix}complete-d", off.name),
        "Tab",
    ]);
    t.wait_for(&iso, Duration::from_secs(10));
    // Named on the line instead, quoted and after `=` (which bash splits
    // into a word of its own).
    t.fresh_line();
    t.keys(&[
        &format!("unset HV_ISO_LIBRARY; cd '{}'", dir.display()),
        "Enter",
    ]);
    t.fresh_line();
    t.keys(&[
        &format!("hv-set web1 --iso-library='library' --cdrom {prefix}complete-d"),
        "Tab",
    ]);
    t.wait_for(&iso, Duration::from_secs(10));
    t.fresh_line();
    t.keys(&["cd /", "Enter"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// zsh and fish complete VM names by asking hv, as bash does: shut-off
/// ones for hv-start, running ones for hv-stop; and ISO names from the
/// library named on the line.
#[test]
fn bench_zsh_and_fish_complete_vm_names_from_hv() {
    let conn = connect();
    let off = GuestSpec::new("zcomplete-off").define(&conn);
    let on = GuestSpec::new("zcomplete-on").define(&conn);
    on.start_ready();
    let zsh = zsh_with_completions();
    let fish = Terminal::shell_of(120, &["fish", "--no-config", "--private"]);
    for command in ["hv-start", "hv-stop", "hv-set"] {
        fish.keys(&[
            &format!("source '{}'", completion("fish", command)),
            "Enter",
        ]);
    }
    let prefix = hv_testbench::run_prefix();
    // An ISO library named on the line, not by HV_ISO_LIBRARY.
    let dir = scratch("zcomplete-iso");
    let lib = dir.join("library");
    let iso = format!("{prefix}zcomplete-distro.iso");
    hv_testbench::proven_iso(&dir, &lib, &iso);
    // After a VM name (zsh once completed no option past one), and in a
    // line short enough not to wrap at the terminal's edge.
    for t in [&zsh, &fish] {
        t.fresh_line();
        t.keys(&[&format!("cd '{}'", dir.display()), "Enter"]);
        t.fresh_line();
        t.keys(&[
            &format!("hv-set web1 --iso-library 'library' --cdrom {prefix}zcomplete-d"),
            "Tab",
        ]);
        t.wait_for(&iso, Duration::from_secs(10));
        t.fresh_line();
        t.keys(&["cd /", "Enter"]);
    }
    let _ = std::fs::remove_dir_all(&dir);
    for (shell, t) in [("zsh", &zsh), ("fish", &fish)] {
        t.fresh_line();
        t.keys(&[&format!("hv-start {prefix}zcomplete-"), "Tab"]);
        let screen = t.wait_for(&off.name, Duration::from_secs(10));
        assert!(
            !screen.contains(&on.name),
            "{shell}: hv-start offers a running VM: {screen}"
        );
        t.fresh_line();
        t.keys(&[&format!("hv-stop {prefix}zcomplete-"), "Tab"]);
        let screen = t.wait_for(&on.name, Duration::from_secs(10));
        assert!(
            !screen.contains(&off.name),
            "{shell}: hv-stop offers a stopped VM: {screen}"
        );
    }
}

/// `-c` and hv-migrate's `--to` complete to the aliases of the hosts
/// file (`--hosts` on the line, else HV_HOSTS) in every shell; comments
/// are not aliases.
#[test]
fn host_aliases_complete_from_the_hosts_file() {
    let dir = scratch("complete-hosts");
    let file = dir.join("hosts");
    std::fs::write(
        &file,
        "# the lab\nalpha qemu+ssh://root@alpha/system\nalbatross qemu+ssh://root@albatross/system # nas\n",
    )
    .unwrap();
    let other = dir.join("other");
    std::fs::write(&other, "alder qemu+ssh://root@alder/system\n").unwrap();
    let bash = Terminal::shell(120);
    let zsh = zsh_with_completions();
    let fish = Terminal::shell_of(120, &["fish", "--no-config", "--private"]);
    for command in ["hv-ls", "hv-migrate"] {
        bash.keys(&[
            &format!("source '{}'", completion("bash", command)),
            "Enter",
        ]);
        fish.keys(&[
            &format!("source '{}'", completion("fish", command)),
            "Enter",
        ]);
    }
    for (shell, t) in [("bash", &bash), ("zsh", &zsh), ("fish", &fish)] {
        let export = match shell {
            "fish" => format!("set -x HV_HOSTS '{}'", file.display()),
            _ => format!("export HV_HOSTS='{}'", file.display()),
        };
        t.keys(&[&export, "Enter"]);
        t.fresh_line();
        t.keys(&["hv-ls -c al", "Tab", "Tab"]);
        let screen = t.wait_for("albatross", Duration::from_secs(10));
        assert!(screen.contains("alpha"), "{shell}: {screen}");
        assert!(!screen.contains("alder"), "{shell}: {screen}");
        t.fresh_line();
        // --hosts on the line wins over HV_HOSTS.
        t.keys(&[
            &format!("hv-migrate --hosts '{}' --to al", other.display()),
            "Tab",
        ]);
        let screen = t.wait_for("--to alder", Duration::from_secs(10));
        assert!(!screen.contains("albatross"), "{shell}: {screen}");
        t.fresh_line();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A completion file that does not parse breaks completion for its
/// command, silently: every one is read by its own shell.
#[test]
fn completion_files_parse_in_their_shells() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../completions");
    for (shell, dir, check) in [
        ("bash", "bash", vec!["bash", "-n"]),
        ("zsh", "zsh", vec!["zsh", "-n"]),
        ("fish", "fish", vec!["fish", "--no-config", "-n"]),
    ] {
        let files: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        let commands = std::fs::read_dir(root.join("../bins")).unwrap().count();
        assert_eq!(files.len(), commands, "{shell}: one file per command");
        for file in files {
            let out = std::process::Command::new(check[0])
                .args(&check[1..])
                .arg(&file)
                .output()
                .unwrap_or_else(|e| panic!("{shell} (Debian package {shell}): {e}"));
            hv_testbench::Run::new(format!("{shell} -n {}", file.display()), out).assert_ok();
        }
    }
}
