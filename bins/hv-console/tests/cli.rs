//! hv-console on the bench: the test guest's serial console read in a
//! script (a line it prints at boot, a command typed into its shell), at a
//! real terminal (tmux: typing, Ctrl-] leaving), and the refusals.

// These tests need the bench (tests/run.sh); `cargo test` without
// `--features bench` still builds the command for the transcripts.
#![cfg(feature = "bench")]

use hv_testbench::{
    bin, connect, guest_image, hv, pipeline, remove_domain, run_prefix, scratch, GuestSpec,
    Terminal,
};
use serde_json::json;
use std::time::Duration;

const HV_CONSOLE: &str = env!("CARGO_BIN_EXE_hv-console");

/// A VM as hv-define makes it (a pty serial console with a log), booting
/// the test guest; removed with its disk when dropped.
struct Vm {
    name: String,
    dir: std::path::PathBuf,
}

impl Vm {
    fn define(label: &str) -> Vm {
        let dir = scratch(label);
        let name = format!("{}{label}", run_prefix());
        let image = guest_image();
        let profile = json!({
            "name": name, "type": hv_testbench::domain_type(), "memory": "128M",
            "dir": dir, "disk": "16M",
            "kernel": image.join("vmlinux"), "initrd": image.join("initramfs.img"),
            "cmdline": "console=ttyS0 panic=-1 quiet",
        });
        hv(&bin("hv-define"), &[], &format!("{profile}\n")).assert_ok();
        Vm { name, dir }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(d) = connect().lookup_domain_by_name(&self.name) {
            remove_domain(&d);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_script_reads_the_boot_and_types_into_the_guests_shell() {
    let vm = Vm::define("console-script");
    // Attached right after the start: the guest's boot line comes after.
    let booted = pipeline(&format!(
        "hv-start '{n}' >/dev/null && hv-console '{n}' --expect 'hv-test-guest: ready' --timeout 120s </dev/null",
        n = vm.name
    ));
    booted.assert_ok();
    assert!(
        booted.stdout().contains("hv-test-guest: ready"),
        "{booted:?}"
    );

    // A line on stdin reaches the guest's shell; what it prints comes
    // back. The tty echoes the command, so the answer differs from it.
    let log = vm.dir.join("console.log");
    let typed = pipeline(&format!(
        "echo 'echo console-$((40+2))' | hv-console '{}' --expect console-42 --timeout 60s --log {}",
        vm.name,
        log.display()
    ));
    typed.assert_ok();
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("console-42"),
        "--log keeps what the console printed"
    );

    // A text that never comes: a timeout, exit 1, naming it.
    let waited = hv(
        HV_CONSOLE,
        &[&vm.name, "--expect", "never printed", "--timeout", "2s"],
        "",
    );
    waited
        .assert_exit(1)
        .assert_stderr_contains("did not print");

    // One session at a time: a second is refused, and --force takes over.
    let mut holder = std::process::Command::new(HV_CONSOLE)
        .args([&vm.name, "--timeout", "60s"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It holds the console once the guest answers through it.
    {
        use std::io::{BufRead, Write};
        let mut stdin = holder.stdin.as_ref().unwrap();
        stdin.write_all(b"echo held-$((1+1))\n").unwrap();
        let lines = std::io::BufReader::new(holder.stdout.as_mut().unwrap()).lines();
        let mut seen = String::new();
        for line in lines.map_while(Result::ok) {
            if line.contains("held-2") {
                seen = line;
                break;
            }
        }
        assert!(
            seen.contains("held-2"),
            "the holder never reached the guest"
        );
    }
    hv(HV_CONSOLE, &[&vm.name, "--timeout", "1s"], "")
        .assert_exit(1)
        .assert_stderr_contains("--force takes it over");
    hv(HV_CONSOLE, &[&vm.name, "--force", "--timeout", "1s"], "").assert_ok();
    let _ = holder.kill();
    let _ = holder.wait();
}

#[test]
fn at_a_terminal_keys_reach_the_guest_and_ctrl_bracket_leaves() {
    let vm = Vm::define("console-tty");
    pipeline(&format!(
        "hv-start '{n}' >/dev/null && hv-console '{n}' --expect 'hv-test-guest: ready' --timeout 120s </dev/null >/dev/null",
        n = vm.name
    ))
    .assert_ok();
    let t = Terminal::start(&format!("hv-console '{}'", vm.name), 80, 24);
    t.wait_for("Ctrl-] leaves", Duration::from_secs(30));
    t.keys(&["-l", "echo tmux-$((1+1))"]);
    t.keys(&["Enter"]);
    t.wait_for("tmux-2", Duration::from_secs(30));
    t.keys(&["C-]"]);
    let screen = t.wait_for("[exit 0]", Duration::from_secs(10));
    assert!(screen.contains("Left "), "{screen}");
    // The terminal is in cooked mode again: the shell echoes what is typed.
    let stty = Terminal::run("stty -a | grep -o ' icanon'", 80, Duration::from_secs(30));
    assert!(stty.screen(false).contains("icanon"));
}

#[test]
fn a_stopped_vm_or_one_without_a_serial_console_is_named() {
    let vm = Vm::define("console-off");
    hv(HV_CONSOLE, &[&vm.name], "")
        .assert_exit(1)
        .assert_stderr_contains("is not running: start it first");
    // The bench's own guests log their serial port to a file: no console.
    let g = GuestSpec::new("console-file").define(&connect());
    g.start_ready();
    hv(HV_CONSOLE, &[&g.name], "")
        .assert_exit(1)
        .assert_stderr_contains("has no serial console");
    hv(HV_CONSOLE, &[&format!("{}console-none", run_prefix())], "").assert_exit(1);
}
