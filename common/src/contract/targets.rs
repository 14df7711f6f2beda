//! Targets in: every command that acts on VMs accepts the same input, so any
//! command's output can feed any other. Arguments name VMs; without them,
//! each stdin line is a JSON record carrying `name`/`uuid`, or a bare name.
//! Bad lines are reported and skipped, never fatal, and failed upstream
//! results travel on untouched so the end of a pipeline still sees them.

use crate::cli::{self, Status};
use crate::error::{Code, Error, Result};
use crate::output::Printer;
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::io::BufRead;
use virt::connect::Connect;
use virt::domain::Domain;

/// A VM as the user named it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VmRef {
    pub name: Option<String>,
    pub uuid: Option<String>,
    /// The host it is on, as a record named it (docs/hosts.md); `None`
    /// for a bare name, which goes to the run's one host.
    pub host: Option<String>,
    /// The stdin line it came from, for messages.
    pub line: Option<usize>,
    /// The whole record it came from, for commands that read more of it
    /// (hv-snap rm takes the `snapshot` field of hv-snap ls records).
    pub record: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Vm(VmRef),
    /// An upstream result with `"ok": false`: printed again, not acted on.
    PassThrough(Map<String, Value>),
    Malformed {
        line: usize,
        message: String,
    },
}

impl VmRef {
    /// A VM known by name and UUID (a looked-up domain).
    pub fn named(name: impl Into<String>, uuid: impl Into<String>) -> VmRef {
        VmRef {
            name: Some(name.into()),
            uuid: Some(uuid.into()),
            host: None,
            line: None,
            record: None,
        }
    }

    /// What to call it in a message: the name if known, else the UUID.
    pub fn label(&self) -> String {
        let at = self
            .line
            .map(|n| format!(" (stdin line {n})"))
            .unwrap_or_default();
        match (&self.name, &self.uuid) {
            (Some(n), _) => format!("'{n}'{at}"),
            (None, Some(u)) => format!("{u}{at}"),
            (None, None) => format!("?{at}"),
        }
    }
}

pub fn from_args(args: &[String]) -> Vec<Input> {
    args.iter().map(|a| Input::Vm(bare(a, None))).collect()
}

/// Reads targets lazily, one line at a time, so a command can start on the
/// first VM while upstream is still producing the rest.
pub fn from_reader<R: BufRead>(reader: R) -> impl Iterator<Item = Input> {
    reader.split(b'\n').enumerate().filter_map(|(i, line)| {
        let n = i + 1;
        match line {
            Err(e) => Some(Input::Malformed {
                line: n,
                message: format!("cannot read stdin: {e}"),
            }),
            Ok(bytes) => match String::from_utf8(bytes) {
                Err(_) => Some(malformed(n, "not valid UTF-8")),
                Ok(text) => parse_line(n, &text),
            },
        }
    })
}

/// `None` for a blank line.
pub fn parse_line(n: usize, line: &str) -> Option<Input> {
    let text = line.trim();
    if text.is_empty() {
        return None;
    }
    Some(match text.as_bytes()[0] {
        b'{' => parse_object(n, text),
        b'[' => malformed(
            n,
            "a JSON array; split it into one object per line with `jq -c '.[]'`",
        ),
        b'"' => match serde_json::from_str::<String>(text) {
            Ok(name) if !name.is_empty() => Input::Vm(VmRef {
                name: Some(name),
                uuid: None,
                host: None,
                line: Some(n),
                record: None,
            }),
            _ => malformed(n, "not a valid JSON string"),
        },
        _ => Input::Vm(bare(text, Some(n))),
    })
}

/// A bare word names a VM; one shaped like a UUID is looked up as a UUID
/// first (and as a name if no VM has that UUID).
fn bare(text: &str, line: Option<usize>) -> VmRef {
    if looks_like_uuid(text) {
        VmRef {
            name: None,
            uuid: Some(text.to_owned()),
            host: None,
            line,
            record: None,
        }
    } else {
        VmRef {
            name: Some(text.to_owned()),
            uuid: None,
            host: None,
            line,
            record: None,
        }
    }
}

fn parse_object(n: usize, text: &str) -> Input {
    let record: Map<String, Value> = match serde_json::from_str(text) {
        Ok(r) => r,
        Err(e) => return malformed(n, &format!("not valid JSON ({e})")),
    };
    if record.get("ok") == Some(&Value::Bool(false)) {
        return Input::PassThrough(record);
    }
    let field = |k: &str| match record.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(format!("\"{k}\" must be a non-empty string")),
    };
    match (field("name"), field("uuid"), field("host")) {
        (Err(m), _, _) | (_, Err(m), _) | (_, _, Err(m)) => malformed(n, &m),
        (Ok(None), Ok(None), _) => malformed(n, "a JSON object with neither \"name\" nor \"uuid\""),
        (Ok(name), Ok(uuid), Ok(host)) => Input::Vm(VmRef {
            name,
            uuid,
            host,
            line: Some(n),
            record: Some(record.clone()),
        }),
    }
}

fn malformed(n: usize, what: &str) -> Input {
    Input::Malformed {
        line: n,
        message: format!("stdin line {n}: {what}; expected a JSON object with \"name\" or \"uuid\", or a bare VM name"),
    }
}

pub fn looks_like_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    groups.len() == 5
        && groups
            .iter()
            .zip(lens)
            .all(|(g, l)| g.len() == l && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Finds the domain: by UUID when one is given (it survives renames), else
/// by name; a UUID-looking argument that is a name still resolves.
/// A record's UUID is the VM it means: when that VM is gone, another one
/// that took its name is not it (a saved list must not act on a newer VM).
/// A bare word that looks like a UUID may still be a VM's name.
pub fn lookup(conn: &Connect, vm: &VmRef) -> Result<Domain> {
    crate::hosts::may_look_up(vm.host.as_deref())
        .map_err(|e| Error::new(e.code, format!("VM {}: {}", vm.label(), e.message)))?;
    if let Some(uuid) = &vm.uuid {
        match conn.lookup_domain_by_uuid_string(uuid) {
            Ok(d) => return Ok(d),
            Err(e) if vm.name.is_none() => {
                return conn
                    .lookup_domain_by_name(uuid)
                    .map_err(|_| not_found(vm, &e));
            }
            Err(e) => return Err(gone(conn, vm, uuid, &e)),
        }
    }
    let name = vm.name.as_deref().unwrap_or_default();
    conn.lookup_domain_by_name(name)
        .map_err(|e| not_found(vm, &e))
}

/// The error for a record whose UUID no VM has; says so if its name is
/// now another VM's.
fn gone(conn: &Connect, vm: &VmRef, uuid: &str, err: &virt::error::Error) -> Error {
    let e = not_found(vm, err);
    let name = vm.name.as_deref().unwrap_or_default();
    match conn.lookup_domain_by_name(name) {
        Ok(other) if e.code == Code::NotFound => Error::new(
            Code::NotFound,
            format!(
                "no VM has UUID {uuid}; the VM now named {name:?} is another ({}): name it to act on it",
                other.uuid_string().unwrap_or_default()
            ),
        ),
        _ => e,
    }
}

fn not_found(vm: &VmRef, err: &virt::error::Error) -> Error {
    let e = Error::libvirt(format!("VM {}", vm.label()), err);
    if e.code == Code::NotFound {
        Error::new(
            Code::NotFound,
            format!(
                "no VM {} on this connection; `hv-ls` lists the defined VMs",
                vm.label()
            ),
        )
    } else {
        e
    }
}

/// The record for an item that failed before or during its action: it names
/// the VM as the user did, so the failure can be traced and piped onward.
pub fn failure_record(vm: &VmRef, action: Option<&str>, err: &Error) -> Map<String, Value> {
    let one = crate::hosts::the_one_host();
    crate::output::to_record(&Outcome {
        name: vm.name.as_deref(),
        uuid: vm.uuid.as_deref(),
        host: vm.host.as_deref().or(one.as_deref()),
        action,
        ok: false,
        fields: err.done.as_deref(),
        error: Some(err),
    })
}

/// The record of an action that worked on `vm`: the envelope around the
/// action's own `fields`.
pub fn success_record(
    vm: &VmRef,
    action: &str,
    fields: &impl serde::Serialize,
) -> Map<String, Value> {
    let one = crate::hosts::the_one_host();
    crate::output::to_record(&Outcome {
        name: vm.name.as_deref(),
        uuid: vm.uuid.as_deref(),
        host: vm.host.as_deref().or(one.as_deref()),
        action: Some(action),
        ok: true,
        fields,
        error: None,
    })
}

/// The envelope of every result record (docs/records.md, "Result
/// records"): which VM, which action, whether it worked, what the action
/// reports, and on failure why. `name` and `uuid` come first, so the next
/// command in a pipeline can name the VM.
#[derive(Debug, serde::Serialize)]
pub struct Outcome<'a, F: serde::Serialize> {
    pub name: Option<&'a str>,
    pub uuid: Option<&'a str>,
    /// The host the VM is on, in a run that names hosts (docs/hosts.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'a str>,
    pub ok: bool,
    /// The action's own fields; on failure, what it had done before.
    #[serde(flatten)]
    pub fields: F,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a Error>,
}

/// The domains a reading command works on: those named as arguments or on
/// piped stdin, or every domain (sorted by name) when stdin is not piped
/// and there are no arguments. A pipe that names nothing selects nothing:
/// an empty upstream (`hv-ls --tag none | hv-ls --state running | hv-stop`)
/// must not become every VM. Failed lookups and upstream failures are
/// printed as records; malformed lines are reported.
pub fn select<W: std::io::Write>(
    conn: &Connect,
    args: &[String],
    printer: &mut Printer<W>,
    status: &mut Status,
) -> Result<Vec<Domain>> {
    let piped = args.is_empty() && cli::stdin_has_targets(args);
    let inputs: Box<dyn Iterator<Item = Input>> = if !args.is_empty() {
        Box::new(from_args(args).into_iter())
    } else if piped {
        Box::new(from_reader(std::io::stdin().lock()))
    } else {
        return all_domains(conn);
    };
    let mut named = false;
    let inputs = inputs.inspect(|_| named = true);
    let domains = resolve(conn, inputs, printer, status)?;
    if piped && !named {
        cli::warn("stdin was an empty pipe, so no VM was selected; to mean every VM, give stdin </dev/null (cron gives its jobs an empty pipe)");
    }
    Ok(domains)
}

pub fn all_domains(conn: &Connect) -> Result<Vec<Domain>> {
    let mut domains = conn
        .list_all_domains(0)
        .map_err(|e| Error::libvirt("cannot list domains", &e))?;
    domains.sort_by_cached_key(|d| d.name().unwrap_or_default());
    Ok(domains)
}

/// Looks up named VMs in input order, once each.
fn resolve<W: std::io::Write>(
    conn: &Connect,
    inputs: impl Iterator<Item = Input>,
    printer: &mut Printer<W>,
    status: &mut Status,
) -> Result<Vec<Domain>> {
    let mut domains = Vec::new();
    let mut seen = HashSet::new();
    for input in inputs {
        match input {
            Input::Vm(vm) => match lookup(conn, &vm) {
                Ok(d) if seen.insert(d.uuid_string().unwrap_or_default()) => domains.push(d),
                Ok(_) => {}
                Err(e) => {
                    status.failed(&e);
                    printer.emit(failure_record(&vm, None, &e))?;
                }
            },
            Input::PassThrough(record) => printer.emit(record)?,
            Input::Malformed { message, .. } => {
                cli::warn(message);
                status.malformed();
            }
        }
    }
    Ok(domains)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn vm(name: Option<&str>, uuid: Option<&str>, line: usize) -> Input {
        Input::Vm(VmRef {
            name: name.map(Into::into),
            uuid: uuid.map(Into::into),
            host: None,
            line: Some(line),
            record: None,
        })
    }

    #[test]
    fn reads_names_objects_and_reports_bad_lines_by_number() {
        let input = "web 1\n{oops\n\n{\"name\":\"db\",\"uuid\":\"u-1\",\"state\":\"running\"}\n\"spacy  \"\n{\"state\":1}\n";
        let got: Vec<Input> = from_reader(Cursor::new(input)).collect();
        assert_eq!(got[0], vm(Some("web 1"), None, 1));
        assert!(
            matches!(&got[1], Input::Malformed { line: 2, message } if message.contains("line 2"))
        );
        match &got[2] {
            Input::Vm(v) => {
                assert_eq!(
                    (v.name.as_deref(), v.uuid.as_deref(), v.line),
                    (Some("db"), Some("u-1"), Some(4))
                );
                assert_eq!(
                    v.record.as_ref().unwrap()["state"],
                    "running",
                    "the whole record travels along"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(got[3], vm(Some("spacy  "), None, 5));
        assert!(
            matches!(&got[4], Input::Malformed { line: 6, message } if message.contains("neither"))
        );
        assert_eq!(got.len(), 5);
    }

    #[test]
    fn failed_results_pass_through_untouched() {
        let line =
            r#"{"name":"x","ok":false,"error":{"code":"timeout","message":"m"},"extra":[1]}"#;
        match parse_line(1, line) {
            Some(Input::PassThrough(r)) => assert_eq!(
                Value::Object(r),
                serde_json::from_str::<Value>(line).unwrap()
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn arrays_and_bad_utf8_are_malformed() {
        assert!(matches!(
            parse_line(3, "[1,2]"),
            Some(Input::Malformed { line: 3, .. })
        ));
        let got: Vec<Input> = from_reader(Cursor::new(b"\xff\xfe\nok\n".to_vec())).collect();
        assert!(matches!(&got[0], Input::Malformed { line: 1, .. }));
        assert_eq!(got[1], vm(Some("ok"), None, 2));
    }

    #[test]
    fn bare_uuid_lines_are_uuids() {
        let uuid = "6695eb01-f6a4-8304-79aa-97f2502e193f";
        assert_eq!(parse_line(1, uuid), Some(vm(None, Some(uuid), 1)));
    }

    #[test]
    fn uuid_arguments_are_recognised() {
        assert!(looks_like_uuid("6695eb01-f6a4-8304-79aa-97f2502e193f"));
        assert!(!looks_like_uuid("web-1"));
        let args = vec![
            "6695eb01-f6a4-8304-79aa-97f2502e193f".to_string(),
            "web".to_string(),
        ];
        let got = from_args(&args);
        assert!(matches!(
            &got[0],
            Input::Vm(VmRef {
                uuid: Some(_),
                name: None,
                ..
            })
        ));
        assert!(matches!(
            &got[1],
            Input::Vm(VmRef {
                name: Some(_),
                uuid: None,
                ..
            })
        ));
    }

    #[test]
    fn lookup_on_test_driver_finds_by_name_and_uuid() {
        let conn = Connect::open_read_only(Some("test:///default")).unwrap();
        let by_name = lookup(
            &conn,
            &VmRef {
                name: Some("test".into()),
                uuid: None,
                host: None,
                line: None,
                record: None,
            },
        )
        .unwrap();
        let uuid = by_name.uuid_string().unwrap();
        let by_uuid = lookup(
            &conn,
            &VmRef {
                name: None,
                uuid: Some(uuid.clone()),
                host: None,
                line: None,
                record: None,
            },
        )
        .unwrap();
        assert_eq!(by_uuid.name().unwrap(), "test");
        let err = lookup(
            &conn,
            &VmRef {
                name: Some("nope".into()),
                uuid: None,
                host: None,
                line: Some(4),
                record: None,
            },
        )
        .unwrap_err();
        assert_eq!(err.code, Code::NotFound);
        assert!(
            err.message.contains("'nope' (stdin line 4)"),
            "{}",
            err.message
        );
        // A saved record of a VM that is gone does not mean the VM that
        // took its name.
        let err = lookup(
            &conn,
            &VmRef {
                name: Some("test".into()),
                uuid: Some("00000000-1111-2222-3333-444444444444".into()),
                host: None,
                line: None,
                record: None,
            },
        )
        .unwrap_err();
        assert_eq!(err.code, Code::NotFound);
        assert!(err.message.contains("another"), "{}", err.message);
    }
}
