//! Transcript tests, in the manner of trycmd: a Markdown file shows
//! commands as a user types them and what they print, and the test runs
//! them and compares. They need no root and no libvirt daemon (usage
//! errors, malformed input, libvirt's in-process `test:///default`
//! driver), so a contributor runs them on a laptop in seconds, and the
//! file doubles as documentation of what a user sees.
//!
//! The format, in a ```` ```console ```` block:
//!
//! ```text
//! $ echo '{"name":' | hv-start -c test:///default
//! ? 2
//! hv-start: line 1: [..]
//! ```
//!
//! - `$ ` starts a command line, run by `bash -c` with the workspace's
//!   binaries first on PATH, stdin empty unless the line pipes into it.
//! - `? N` (optional, right after it) is the exit status; 0 when absent.
//! - The lines up to the next `$ ` or the block's end are stdout and then
//!   stderr, as the terminal would show them when stdout is not a terminal.
//! - `[..]` in an expected line matches any text within that line; a line
//!   that is only `...` matches any number of lines.

use std::path::Path;
use std::process::{Command, Stdio};

/// One command of a transcript and what it must print.
#[derive(Debug)]
struct Case {
    line: usize,
    command: String,
    status: i32,
    expected: Vec<String>,
}

/// The console blocks of a transcript file.
fn cases(text: &str) -> Vec<Case> {
    let mut out: Vec<Case> = Vec::new();
    let mut in_block = false;
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("```") {
            in_block = !in_block && line.trim_start_matches('`').trim() == "console";
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some(command) = line.strip_prefix("$ ") {
            out.push(Case {
                line: n + 1,
                command: command.to_owned(),
                status: 0,
                expected: Vec::new(),
            });
        } else if let Some(case) = out.last_mut() {
            match line.strip_prefix("? ") {
                Some(code) if case.expected.is_empty() => {
                    case.status = code.trim().parse().expect("`? N` takes a number");
                }
                _ => case.expected.push(line.to_owned()),
            }
        }
    }
    out
}

/// Whether `actual` is `expected` with each `[..]` standing for any text.
fn line_matches(expected: &str, actual: &str) -> bool {
    let parts: Vec<&str> = expected.split("[..]").collect();
    if parts.len() == 1 {
        return expected == actual;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !actual.starts_with(first) || actual.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &actual[first.len()..];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Whether the lines match, `...` standing for any number of lines.
fn lines_match(expected: &[String], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "..." => {
            (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..]))
        }
        Some((first, rest)) => actual
            .split_first()
            .is_some_and(|(a, more)| line_matches(first, a) && lines_match(rest, more)),
    }
}

/// Runs every command of the transcript `file`; the failures, each with
/// what was expected and what came.
pub fn run_transcript(file: &Path, bin_dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).expect("read the transcript");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut failures = Vec::new();
    for case in cases(&text) {
        let out = Command::new("bash")
            .args(["-c", &case.command])
            .env("PATH", &path)
            .env_remove("HV_CONNECT")
            .env_remove("LIBVIRT_DEFAULT_URI")
            .env_remove("HV_BACKUP_REPO")
            .env_remove("HV_ISO_LIBRARY")
            .env("COLUMNS", "80")
            .stdin(Stdio::null())
            .output()
            .expect("run bash");
        let shown = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let actual: Vec<&str> = shown.lines().collect();
        let status = out.status.code().unwrap_or(-1);
        if status != case.status || !lines_match(&case.expected, &actual) {
            failures.push(format!(
                "{}:{}: $ {}\nexpected (status {}):\n{}\ngot (status {status}):\n{shown}",
                file.display(),
                case.line,
                case.command,
                case.status,
                case.expected.join("\n"),
            ));
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_what_they_say() {
        assert!(line_matches("a [..] c", "a b b c"));
        assert!(line_matches("[..]", ""));
        assert!(!line_matches("a [..] c", "a b d"));
        assert!(!line_matches("ab[..]ba", "aba"));
        let lines = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(lines_match(
            &lines(&["x", "...", "z"]),
            &["x", "1", "2", "z"]
        ));
        assert!(lines_match(&lines(&["..."]), &[]));
        assert!(!lines_match(&lines(&["x"]), &["x", "y"]));
    }

    #[test]
    fn a_transcript_reads_as_commands_statuses_and_lines() {
        let text = "text\n```console\n$ a\n? 2\nout\n$ b\n```\n$ not a command\n";
        let cases = cases(text);
        assert_eq!(cases.len(), 2);
        assert_eq!(
            (cases[0].status, cases[0].expected.clone()),
            (2, vec!["out".to_owned()])
        );
        assert_eq!((cases[1].line, cases[1].status), (6, 0));
    }
}
