//! Man pages and shell completions, generated from the same clap `Cli` each
//! command parses with, plus the sections clap cannot know (exit status,
//! environment, examples) from hv-common's `manual`; and the deployment
//! files from xtask/src/deploy.rs.

use clap::CommandFactory;
use hv_common::manual::Manual;
use std::path::{Path, PathBuf};

/// The pages' date; bumped with releases, not with every build, so that
/// regenerating is reproducible.
const MAN_DATE: &str = "2026-11-21";
const SOURCE: &str = concat!("hv ", env!("CARGO_PKG_VERSION"));

struct Tool {
    command: clap::Command,
    manual: &'static Manual,
}

fn tools() -> Vec<Tool> {
    vec![
        Tool {
            command: hv_ls::Cli::command(),
            manual: &hv_ls::MANUAL,
        },
        Tool {
            command: hv_tag::Cli::command(),
            manual: &hv_tag::MANUAL,
        },
        Tool {
            command: hv_start::Cli::command(),
            manual: &hv_start::MANUAL,
        },
        Tool {
            command: hv_stop::Cli::command(),
            manual: &hv_stop::MANUAL,
        },
        Tool {
            command: hv_autostart::Cli::command(),
            manual: &hv_autostart::MANUAL,
        },
        Tool {
            command: hv_migrate::Cli::command(),
            manual: &hv_migrate::MANUAL,
        },
        Tool {
            command: hv_audit::Cli::command(),
            manual: &hv_audit::MANUAL,
        },
        Tool {
            command: hv_top::Cli::command(),
            manual: &hv_top::MANUAL,
        },
        Tool {
            command: hv_console::Cli::command(),
            manual: &hv_console::MANUAL,
        },
        Tool {
            command: hv_set::Cli::command(),
            manual: &hv_set::MANUAL,
        },
        Tool {
            command: hv_pool::Cli::command(),
            manual: &hv_pool::MANUAL,
        },
        Tool {
            command: hv_net::Cli::command(),
            manual: &hv_net::MANUAL,
        },
        Tool {
            command: hv_rm::Cli::command(),
            manual: &hv_rm::MANUAL,
        },
        Tool {
            command: hv_define::Cli::command(),
            manual: &hv_define::MANUAL,
        },
        Tool {
            command: hv_clone::Cli::command(),
            manual: &hv_clone::MANUAL,
        },
        Tool {
            command: hv_snap::Cli::command(),
            manual: &hv_snap::MANUAL,
        },
        Tool {
            command: hv_backup::Cli::command(),
            manual: &hv_backup::MANUAL,
        },
        Tool {
            command: hv_metrics::Cli::command(),
            manual: &hv_metrics::MANUAL,
        },
        Tool {
            command: hv_iso::Cli::command(),
            manual: &hv_iso::MANUAL,
        },
        Tool {
            command: hv_health::Cli::command(),
            manual: &hv_health::MANUAL,
        },
        Tool {
            command: hv_preflight::Cli::command(),
            manual: &hv_preflight::MANUAL,
        },
    ]
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

pub fn run(check: bool) -> Result<(), String> {
    let files = generate()?;
    let root = root();
    let mut drift = Vec::new();
    for (path, content) in &files {
        let full = root.join(path);
        let current = std::fs::read(&full).ok();
        if current.as_deref() == Some(&content[..]) {
            continue;
        }
        if check {
            drift.push(path.display().to_string());
        } else {
            std::fs::create_dir_all(full.parent().unwrap()).map_err(|e| e.to_string())?;
            std::fs::write(&full, content).map_err(|e| format!("{}: {e}", full.display()))?;
            eprintln!("wrote {}", path.display());
        }
    }
    for stale in stale_files(&root, &files) {
        if check {
            drift.push(format!("{} (no command generates it)", stale.display()));
        } else {
            std::fs::remove_file(root.join(&stale)).map_err(|e| e.to_string())?;
            eprintln!("removed {}", stale.display());
        }
    }
    if drift.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "generated files are out of date: {}; run `cargo xtask gen`",
            drift.join(", ")
        ))
    }
}

fn stale_files(root: &Path, files: &[(PathBuf, Vec<u8>)]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![
        root.join("man"),
        root.join("completions"),
        root.join("contrib/systemd"),
        root.join("contrib/polkit"),
    ];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                found.push(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    found.retain(|p| !files.iter().any(|(f, _)| f == p));
    found
}

fn generate() -> Result<Vec<(PathBuf, Vec<u8>)>, String> {
    let mut files = Vec::new();
    for tool in tools() {
        let name = tool.command.get_name().to_owned();
        files.push((
            PathBuf::from(format!("man/{name}.1")),
            man_page(&tool.command, tool.manual).map_err(|e| e.to_string())?,
        ));
        // git-style: one page per subcommand, `hv-snap-create(1)`.
        for sub in tool.command.get_subcommands().filter(|s| !s.is_hide_set()) {
            let page = format!("{name}-{}", sub.get_name());
            let command = sub
                .clone()
                .name(page.clone())
                .bin_name(format!("{name} {}", sub.get_name()))
                .version(env!("CARGO_PKG_VERSION"));
            files.push((
                PathBuf::from(format!("man/{page}.1")),
                man_page(&command, tool.manual).map_err(|e| e.to_string())?,
            ));
        }
        for (shell, file) in [
            (clap_complete::Shell::Bash, format!("bash/{name}")),
            (clap_complete::Shell::Zsh, format!("zsh/_{name}")),
            (clap_complete::Shell::Fish, format!("fish/{name}.fish")),
        ] {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut tool.command.clone(), &name, &mut buf);
            let text = String::from_utf8(buf).map_err(|e| e.to_string())?;
            let text = match shell {
                clap_complete::Shell::Bash => crate::complete::bash(&tool.command, &text),
                clap_complete::Shell::Fish => crate::complete::fish(&tool.command, &text),
                clap_complete::Shell::Zsh => crate::complete::zsh(&tool.command, &text),
                _ => text,
            };
            files.push((
                PathBuf::from(format!("completions/{file}")),
                text.into_bytes(),
            ));
        }
    }
    files.extend(crate::deploy::files());
    files.push((
        PathBuf::from("docs/metrics.md"),
        metrics_page().into_bytes(),
    ));
    Ok(files)
}

/// docs/metrics.md, from the table hv-metrics exports from: the list of
/// metrics cannot drift from the code.
fn metrics_page() -> String {
    use hv_metrics::exposition::{labels_of, METRICS};
    let mut page = String::from(METRICS_INTRO);
    page.push_str("| metric | type | labels | meaning |\n|---|---|---|---|\n");
    for m in METRICS {
        let labels = labels_of(m.name).join(", ");
        page.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            m.name,
            m.kind.as_str(),
            labels,
            m.help
        ));
    }
    page
}

const METRICS_INTRO: &str = "# Metrics exported by hv-metrics

<!-- Generated by `cargo xtask gen` from bins/hv-metrics/src/exposition.rs; do not edit. -->

Every metric hv-metrics writes, in the order it writes them. Units are
base units (bytes, seconds); counters end in `_total`. Series of a VM carry
`name` and `uuid`, so any two can be joined `on (instance, uuid)` (a name
can change with `virsh domrename`, a UUID cannot). A metric whose source is
missing is left out rather than written as 0: balloon statistics need a
virtio balloon device with a stats period, disk and network counters need
a running VM, backup metrics need `--repo`, `hv_backup_result_*` needs
`--backup-results`. With `--host-label NAME` every series also carries
`host` first, for a textfile directory or a Prometheus job that gathers
several hosts without an `instance` per host ([hosts.md](hosts.md)). How
to use them: [monitoring.md](monitoring.md).

";

fn man_page(command: &clap::Command, manual: &Manual) -> std::io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(command.clone())
        .manual("hv manual")
        .source(SOURCE)
        .date(MAN_DATE);
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    if command.has_subcommands() {
        man.render_subcommands_section(&mut out)?;
    }
    let mut extra = String::new();
    if !manual.notes.is_empty() {
        extra.push_str(".SH NOTES\n");
        let notes: Vec<String> = manual.notes.iter().map(|n| roff(n)).collect();
        extra.push_str(&notes.join("\n.PP\n"));
        extra.push('\n');
    }
    extra.push_str(".SH \"EXIT STATUS\"\n");
    for (code, meaning) in manual.exit_status {
        extra.push_str(&format!(".TP\n\\fB{code}\\fR\n{}\n", roff(meaning)));
    }
    extra.push_str(".SH ENVIRONMENT\n");
    for (var, meaning) in manual.environment {
        extra.push_str(&format!(".TP\n\\fB{var}\\fR\n{}\n", roff(meaning)));
    }
    extra.push_str(".SH EXAMPLES\n");
    let examples: Vec<String> = manual
        .examples
        .iter()
        .map(|(what, command)| format!("{}\n.RS 4\n.EX\n{}\n.EE\n.RE\n", roff(what), roff(command)))
        .collect();
    extra.push_str(&examples.join(".PP\n"));
    let name = command.get_name();
    let others: Vec<String> = tools()
        .iter()
        .map(|t| t.command.get_name().to_owned())
        .filter(|n| n != name)
        .chain(["virsh".to_owned(), "jq".to_owned()])
        .map(|n| format!("\\fB{n}\\fR(1)"))
        .collect();
    extra.push_str(&format!(".SH \"SEE ALSO\"\n{}\n", others.join(",\n")));
    out.extend_from_slice(extra.as_bytes());
    man.render_version_section(&mut out)?;
    Ok(tidy(&String::from_utf8_lossy(&out)).into_bytes())
}

/// Makes clap_mangen's roff pass `mandoc -T lint` untouched: upper-case
/// title, no trailing blanks, text lines wrapped under 80 bytes (outside
/// example blocks, where line breaks are meaningful).
fn tidy(page: &str) -> String {
    let mut out = String::new();
    let mut literal = false;
    for line in page.lines().map(str::trim_end) {
        if let Some(rest) = line.strip_prefix(".TH ") {
            let (title, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push_str(&format!(".TH {} {tail}\n", title.to_uppercase()));
            continue;
        }
        match line {
            ".EX" | ".nf" => literal = true,
            ".EE" | ".fi" => literal = false,
            _ => {}
        }
        if literal || line.starts_with('.') || line.len() <= 78 {
            out.push_str(line);
            out.push('\n');
        } else {
            out.push_str(&wrap(line, 78));
        }
    }
    out
}

fn wrap(line: &str, width: usize) -> String {
    let mut out = String::new();
    let mut current = String::new();
    for word in line.split(' ').filter(|w| !w.is_empty()) {
        if !current.is_empty() && current.len() + 1 + word.len() > width {
            out.push_str(&current);
            out.push('\n');
            current.clear();
        }
        if current.is_empty() && (word.starts_with('.') || word.starts_with('\'')) {
            current.push_str("\\&");
        } else if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
    }
    out.push_str(&current);
    out.push('\n');
    out
}

/// Escapes text for roff: backslashes, and dots or quotes that would start a request.
fn roff(text: &str) -> String {
    text.replace('\\', "\\e")
        .replace('-', "\\-")
        .lines()
        .map(|l| {
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}
