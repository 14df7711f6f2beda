//! How a test reads what a command did. Every test file asks the same
//! questions of a finished command: its exit code, its records, what it
//! said on stderr, whether an item failed and with which error code. They
//! are asked here, once, so that a failing assertion prints the same
//! context in every test (the command line, the exit status, stderr and
//! the records) instead of whatever each file remembered to print, and a
//! test reads as what it checks:
//!
//! ```ignore
//! let out = hv(HV_STOP, &["--force", &g.name], "");
//! out.assert_ok().assert_each(json!({"ok": true, "how": "forced"}));
//! assert_fields(&out.record("name", g.name.as_str()), json!({"state": "shutoff"}));
//! hv(HV_TAG, &["--add", "two words", "test"], "")
//!     .assert_exit(2)
//!     .assert_stderr_contains("invalid tag 'two words'");
//! ```

use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Output;

/// How much of stdout a failure message shows: a restore to `-o -`
/// streams a whole disk.
const SHOWN: usize = 16 << 10;

/// A finished command: what [`crate::hv`] and the other runners return.
/// It derefs to the [`Output`] it wraps, for the raw bytes.
pub struct Run {
    /// The command line, as failure messages show it.
    pub command: String,
    /// Its exit status, stdout and stderr.
    pub output: Output,
}

impl std::ops::Deref for Run {
    type Target = Output;

    fn deref(&self) -> &Output {
        &self.output
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.context())
    }
}

impl Run {
    /// The result of a command run some other way (spawned, killed, in
    /// a shell); `command` names it in failure messages.
    pub fn new(command: impl Into<String>, output: Output) -> Run {
        Run {
            command: command.into(),
            output,
        }
    }

    /// The exit code; `None` when a signal ended it.
    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// The `name` of each record, in the order they came.
    #[track_caller]
    pub fn names(&self) -> Vec<String> {
        self.records()
            .iter()
            .map(|r| r["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// The JSON lines of stdout; a line that is not JSON fails the test.
    #[track_caller]
    pub fn records(&self) -> Vec<Value> {
        let mut recs: Vec<Value> = Vec::new();
        for line in String::from_utf8_lossy(&self.output.stdout).lines() {
            match serde_json::from_str(line) {
                Ok(r) => recs.push(r),
                Err(e) => self.fail(&format!("not a JSON line ({e}): {line}")),
            }
        }
        recs
    }

    /// The one record on stdout; any other number fails the test.
    #[track_caller]
    pub fn one_record(&self) -> Value {
        let mut recs = self.records();
        if recs.len() != 1 {
            self.fail(&format!("{} records, not one", recs.len()));
        }
        recs.remove(0)
    }

    /// The first record whose `field` is `value` (`"name"`, `"uuid"`,
    /// `"check"`); none fails the test.
    #[track_caller]
    pub fn record(&self, field: &str, value: impl Into<Value>) -> Value {
        let value = value.into();
        for r in self.records() {
            if r[field] == value {
                return r;
            }
        }
        self.fail(&format!("no record with {field} {value}"))
    }

    /// The command exited with `code`.
    #[track_caller]
    pub fn assert_exit(&self, code: i32) -> &Self {
        if self.code() != Some(code) {
            self.fail(&format!("expected exit {code}"));
        }
        self
    }

    /// The command exited 0.
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        self.assert_exit(0)
    }

    /// The command exited 1 and a record says an item failed
    /// (`"ok": false`) with the error code `code`.
    #[track_caller]
    pub fn assert_failed(&self, code: &str) -> &Self {
        self.assert_exit(1);
        let recs = self.records();
        if !recs
            .iter()
            .any(|r| r["ok"] == false && r["error"]["code"] == code)
        {
            self.fail(&format!("no record failed with {code}"));
        }
        self
    }

    /// Every record has the fields of `expected` (as [`assert_fields`]);
    /// no records pass.
    #[track_caller]
    pub fn assert_each(&self, expected: Value) -> &Self {
        for r in self.records() {
            let wrong = mismatches(&r, &expected);
            if !wrong.is_empty() {
                self.fail(&format!(
                    "a record is not {expected}: {}\n{r:#}",
                    wrong.join("; ")
                ));
            }
        }
        self
    }

    /// stderr holds `text`.
    #[track_caller]
    pub fn assert_stderr_contains(&self, text: &str) -> &Self {
        if !self.stderr().contains(text) {
            self.fail(&format!("stderr does not say {text:?}"));
        }
        self
    }

    /// Nothing was written to stdout (a usage error, a refusal).
    #[track_caller]
    pub fn assert_stdout_empty(&self) -> &Self {
        if !self.output.stdout.is_empty() {
            self.fail("stdout is not empty");
        }
        self
    }

    /// What a failure message shows of this run.
    pub fn context(&self) -> String {
        let mut text = format!("command: {}\n{}\n", self.command, self.output.status);
        let stderr = self.stderr();
        if !stderr.is_empty() {
            let _ = write!(text, "stderr:\n{}\n", stderr.trim_end());
        }
        let stdout = self.stdout();
        if stdout.len() > SHOWN {
            let mut end = SHOWN;
            while !stdout.is_char_boundary(end) {
                end -= 1;
            }
            let _ = write!(
                text,
                "stdout (the first {end} of {} bytes):\n{}\n",
                stdout.len(),
                &stdout[..end]
            );
        } else if !stdout.is_empty() {
            let _ = write!(text, "stdout:\n{}\n", stdout.trim_end());
        }
        text
    }

    #[track_caller]
    fn fail(&self, what: &str) -> ! {
        panic!("{what}\n{}", self.context())
    }
}

/// `record` has the fields of `expected` with its values: a field
/// `expected` leaves out is not looked at, one it gives as null must
/// be null or absent, an object is compared field by field this way,
/// and anything else (strings, numbers, arrays) must be equal. One
/// line instead of an `assert_eq!` per field, and a failure names every
/// field that differs.
#[track_caller]
pub fn assert_fields(record: &Value, expected: Value) {
    let wrong = mismatches(record, &expected);
    assert!(wrong.is_empty(), "{}\nin {record:#}", wrong.join("\n"));
}

fn mismatches(actual: &Value, expected: &Value) -> Vec<String> {
    let mut wrong = Vec::new();
    compare("record", actual, expected, &mut wrong);
    wrong
}

fn compare(path: &str, actual: &Value, expected: &Value, wrong: &mut Vec<String>) {
    match expected {
        Value::Object(fields) if !fields.is_empty() => {
            for (key, want) in fields {
                compare(&format!("{path}.{key}"), &actual[key.as_str()], want, wrong);
            }
        }
        _ if actual != expected => wrong.push(format!("{path} is {actual}, not {expected}")),
        _ => {}
    }
}

/// `binary args… <<< input`, quoted as a shell would need it, for
/// failure messages.
pub(crate) fn command_line(binary: &str, args: &[&str], input: &str) -> String {
    let mut line = Path::new(binary)
        .file_name()
        .map_or_else(|| binary.to_owned(), |n| n.to_string_lossy().into_owned());
    for arg in args {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    if input.len() > 400 {
        let _ = write!(line, " <<< ({} bytes)", input.len());
    } else if !input.is_empty() {
        let _ = write!(line, " <<< {input:?}");
    }
    line
}

fn quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}
