//! Records out. Pipelines get JSON lines flushed one record at a time, so a
//! downstream command starts working before the upstream one ends; people at
//! a terminal get a table. Everything else a command says goes to stderr.

use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::io::{IsTerminal, Write};

/// A typed record as the printer takes it: records are structs that
/// derive `Serialize`, and this is where they become a JSON object.
pub fn to_record<T: serde::Serialize + ?Sized>(record: &T) -> Map<String, Value> {
    match serde_json::to_value(record) {
        Ok(Value::Object(map)) => map,
        Ok(other) => panic!("a record must serialize to a JSON object, not {other}"),
        Err(e) => panic!("a record must serialize: {e}"),
    }
}

/// The record of a VM hv made: its hv-ls record with the result envelope
/// (`action` and `ok` after `name` and `uuid`), then what the command adds.
pub fn with_envelope(
    listed: Map<String, Value>,
    action: &str,
    extra: &impl serde::Serialize,
) -> Map<String, Value> {
    let mut out = Map::new();
    let mut rest = listed.into_iter();
    for (k, v) in rest.by_ref().take(2) {
        out.insert(k, v);
    }
    out.insert("action".into(), action.into());
    out.insert("ok".into(), true.into());
    out.extend(rest);
    out.extend(to_record(extra));
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line (default when stdout is not a terminal).
    Jsonl,
    /// One JSON array of all records.
    Json,
    /// Aligned columns for people (default on a terminal).
    Table,
    /// Comma-separated values with a header; nested values as JSON text.
    Csv,
}

impl crate::Choice for Format {
    const ALL: &'static [Format] = &[Format::Jsonl, Format::Json, Format::Table, Format::Csv];

    fn name(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Json => "json",
            Format::Table => "table",
            Format::Csv => "csv",
        }
    }

    fn help(self) -> Option<&'static str> {
        Some(match self {
            Format::Jsonl => "One JSON object per line (default when stdout is not a terminal)",
            Format::Json => "One JSON array of all records",
            Format::Table => "Aligned columns for people (default on a terminal)",
            Format::Csv => "Comma-separated values with a header; nested values as JSON text",
        })
    }
}

impl Format {
    pub fn or_default_for_stdout(chosen: Option<Format>) -> Format {
        chosen.unwrap_or(if std::io::stdout().is_terminal() {
            Format::Table
        } else {
            Format::Jsonl
        })
    }
}

/// How a table cell shows a field.
#[derive(Debug, Clone, Copy)]
pub enum Show {
    Plain,
    /// A byte count in binary units (`128 MiB`).
    Bytes,
    /// An array joined with commas; for arrays of objects, the named field of each.
    Join(Option<&'static str>),
    /// Whole seconds as an age, in its largest unit (`3h`).
    Age,
}

#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub header: &'static str,
    pub key: &'static str,
    pub show: Show,
}

pub const fn col(header: &'static str, key: &'static str, show: Show) -> Column {
    Column { header, key, show }
}

/// A record with only `fields`, in their order. `host` stays when the
/// record has one (the next command in a pipe routes by it), and a failed
/// record stays whole: its error is what matters.
pub fn project(mut record: Map<String, Value>, fields: &[String]) -> Map<String, Value> {
    if record.get("ok") == Some(&Value::Bool(false)) {
        return record;
    }
    let mut out = Map::new();
    for f in fields {
        if let Some(v) = record.remove(f) {
            out.insert(f.clone(), v);
        }
    }
    if let Some(h) = record.remove("host") {
        out.insert("host".into(), h);
    }
    out
}

pub struct Printer<W: Write> {
    format: Format,
    out: W,
    columns: &'static [Column],
    /// `--fields`: only these of each record, in this order; empty: all.
    fields: Vec<String>,
    held: Vec<Map<String, Value>>,
    emitted: usize,
}

impl Printer<std::io::Stdout> {
    pub fn stdout(format: Option<Format>, columns: &'static [Column]) -> Self {
        Printer::new(
            Format::or_default_for_stdout(format),
            std::io::stdout(),
            columns,
        )
    }
}

impl<W: Write> Printer<W> {
    /// `columns` are the table's columns; an empty slice shows every scalar field.
    pub fn new(format: Format, out: W, columns: &'static [Column]) -> Self {
        Printer {
            format,
            out,
            columns,
            fields: Vec::new(),
            held: Vec::new(),
            emitted: 0,
        }
    }

    /// Prints only `fields` of each record, in their order (`--fields`), and
    /// a table shows them as its columns; nothing changes when it is empty.
    pub fn only(mut self, fields: &[String]) -> Self {
        if fields.is_empty() {
            return self;
        }
        let columns: Vec<Column> = fields
            .iter()
            .map(|f| {
                self.columns
                    .iter()
                    .find(|c| c.key == f.as_str())
                    .copied()
                    .unwrap_or_else(|| {
                        let key: &'static str = Box::leak(f.clone().into_boxed_str());
                        col(key, key, Show::Plain)
                    })
            })
            .collect();
        // One table per run: the columns live as long as the process.
        self.columns = Box::leak(columns.into_boxed_slice());
        self.fields = fields.to_vec();
        self
    }

    pub fn emit(&mut self, record: Map<String, Value>) -> Result<()> {
        crate::audit::note(&record);
        let record = match self.fields.is_empty() {
            true => record,
            false => project(record, &self.fields),
        };
        match self.format {
            Format::Jsonl => self.write_line(&Value::Object(record)),
            Format::Json => self.write_array_item(record),
            Format::Table | Format::Csv => {
                self.held.push(record);
                Ok(())
            }
        }
    }

    pub fn finish(mut self) -> Result<W> {
        // Records of several hosts arrive as each host answers: a table or
        // CSV groups them by host (by name), keeping each host's own order.
        self.held
            .sort_by_key(|r| r.get("host").and_then(Value::as_str).map(str::to_owned));
        match self.format {
            Format::Jsonl => {}
            Format::Json => {
                let end = if self.emitted == 0 { "[]\n" } else { "\n]\n" };
                self.out.write_all(end.as_bytes()).map_err(Error::output)?;
            }
            Format::Table => {
                crate::progress::hide();
                let text = render_table(&self.held, self.columns, table_width());
                self.out.write_all(text.as_bytes()).map_err(Error::output)?;
                self.out.flush().map_err(Error::output)?;
                for line in failures(&self.held) {
                    crate::cli::warn(line);
                }
            }
            Format::Csv => {
                crate::progress::hide();
                write_csv(&mut self.out, &self.held)?
            }
        }
        self.out.flush().map_err(Error::output)?;
        Ok(self.out)
    }

    fn write_line(&mut self, value: &Value) -> Result<()> {
        crate::progress::clear_line();
        let mut line = serde_json::to_vec(value).expect("JSON values always serialize");
        line.push(b'\n');
        self.out.write_all(&line).map_err(Error::output)?;
        self.out.flush().map_err(Error::output)
    }

    fn write_array_item(&mut self, record: Map<String, Value>) -> Result<()> {
        let sep = if self.emitted == 0 { "[\n" } else { ",\n" };
        let body = serde_json::to_string_pretty(&Value::Object(record)).expect("serializable");
        let indented = body
            .lines()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n");
        self.emitted += 1;
        self.out
            .write_all(format!("{sep}{indented}").as_bytes())
            .map_err(Error::output)?;
        self.out.flush().map_err(Error::output)
    }
}

fn union_keys(records: &[Map<String, Value>]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for key in records.iter().flat_map(|r| r.keys()) {
        if !keys.iter().any(|k| k == key) {
            keys.push(key.clone());
        }
    }
    keys
}

fn write_csv<W: Write>(out: &mut W, records: &[Map<String, Value>]) -> Result<()> {
    let keys = union_keys(records);
    let mut w = csv::Writer::from_writer(out);
    let csv_err = |e: csv::Error| match e.into_kind() {
        csv::ErrorKind::Io(io) => Error::output(io),
        other => Error::new(crate::error::Code::Io, format!("csv: {other:?}")),
    };
    if !keys.is_empty() {
        w.write_record(&keys).map_err(csv_err)?;
    }
    for record in records {
        let row = keys.iter().map(|k| csv_cell(record.get(k)));
        w.write_record(row).map_err(csv_err)?;
    }
    w.flush().map_err(Error::output)
}

fn csv_cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// The columns to show as (header, key, how): the command's, or every
/// field that is not an object.
fn table_columns(
    records: &[Map<String, Value>],
    columns: &[Column],
) -> Vec<(String, String, Show)> {
    if !columns.is_empty() {
        let mut shown: Vec<(String, String, Show)> = columns
            .iter()
            .map(|c| (c.header.to_uppercase(), c.key.to_owned(), c.show))
            .collect();
        // A run over hosts: which host each row is on, after the name.
        let hosts = records.iter().any(|r| r.contains_key("host"));
        if hosts && !shown.iter().any(|(_, k, _)| k == "host") {
            shown.insert(
                1.min(shown.len()),
                ("HOST".into(), "host".into(), Show::Plain),
            );
        }
        return shown;
    }
    union_keys(records)
        .into_iter()
        .filter(|k| {
            records
                .iter()
                .all(|r| !matches!(r.get(k), Some(Value::Object(_))))
        })
        .map(|k| (k.to_uppercase(), k, Show::Join(None)))
        .collect()
}

/// The width a table must fit: `$COLUMNS` when set (as shells export it),
/// else the terminal's, else none (a table written to a file or a pipe).
fn table_width() -> Option<usize> {
    use std::os::fd::AsFd;
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|&c: &usize| c > 0)
        .or_else(|| crate::ffi::terminal_width(std::io::stdout().as_fd()))
}

/// Fields that name an item: never shortened or wrapped, so a person can
/// copy a name from the table into the next command.
const NAMES: &[&str] = &[
    "name", "uuid", "id", "host", "subject", "target", "check", "ok",
];

/// Columns left in a table that is too wide for the terminal, after the
/// names: what state an item is in and why it failed.
const KEPT: &[&str] = &["status", "state", "error", "message", "hint"];

fn drop_column<C>(
    i: usize,
    columns: &mut Vec<C>,
    widths: &mut Vec<usize>,
    rows: &mut [Vec<String>],
) {
    columns.remove(i);
    widths.remove(i);
    for row in rows {
        row.remove(i);
    }
}

/// A table's width with its two-space gaps.
fn width_of(widths: &[usize]) -> usize {
    widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1)
}

/// The narrowest a wrapped column gets.
const MIN_WRAPPED: usize = 12;

fn render_table(
    records: &[Map<String, Value>],
    columns: &[Column],
    width: Option<usize>,
) -> String {
    if records.is_empty() {
        return String::new();
    }
    let mut columns = table_columns(records, columns);
    let mut rows: Vec<Vec<String>> = vec![columns.iter().map(|c| c.0.clone()).collect()];
    rows.extend(records.iter().map(|r| {
        columns
            .iter()
            .map(|(_, key, show)| cell(r.get(key), *show))
            .collect()
    }));
    let mut widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            rows.iter()
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    if let Some(limit) = width {
        // A column with no value in any row says nothing: it goes first.
        if width_of(&widths) > limit {
            for i in (0..columns.len()).rev() {
                if rows[1..].iter().all(|row| row[i] == "-") {
                    drop_column(i, &mut columns, &mut widths, &mut rows);
                }
            }
        }
        let mut left_out = 0;
        loop {
            // Narrow the widest column of text (cells with spaces; never a
            // name or a time) until the table fits; its cells wrap.
            while width_of(&widths) > limit {
                let excess = width_of(&widths) - limit;
                let widest = (0..columns.len())
                    .filter(|&i| !NAMES.contains(&columns[i].1.as_str()))
                    .filter(|&i| rows[1..].iter().any(|row| row[i].contains(' ')))
                    .filter(|&i| widths[i] > MIN_WRAPPED.max(columns[i].0.len()))
                    .max_by_key(|&i| widths[i]);
                let Some(i) = widest else { break };
                let floor = MIN_WRAPPED.max(columns[i].0.len());
                widths[i] = widths[i].saturating_sub(excess).max(floor);
            }
            if width_of(&widths) <= limit {
                break;
            }
            // Still too wide: leave out the rightmost column that is not
            // a name, a state or the reason for a failure.
            let spare = (0..columns.len()).rev().find(|&i| {
                !NAMES.contains(&columns[i].1.as_str()) && !KEPT.contains(&columns[i].1.as_str())
            });
            let Some(i) = spare else { break };
            drop_column(i, &mut columns, &mut widths, &mut rows);
            left_out += 1;
        }
        if left_out > 0 {
            crate::cli::warn(format!(
                "{left_out} columns left out to fit {limit} columns; --format json shows every field"
            ));
        }
    }
    let mut text = String::new();
    for row in rows {
        let cells: Vec<Vec<String>> = row.iter().zip(&widths).map(|(c, &w)| wrap(c, w)).collect();
        let height = cells.iter().map(Vec::len).max().unwrap_or(1);
        for n in 0..height {
            let line: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(lines, w)| {
                    let c = lines.get(n).map(String::as_str).unwrap_or("");
                    format!("{c}{}", " ".repeat(w.saturating_sub(c.chars().count())))
                })
                .collect();
            text.push_str(line.join("  ").trim_end());
            text.push('\n');
        }
    }
    text
}

/// `text` in lines of at most `width` characters, broken at spaces where
/// it can be and inside a word where it must.
fn wrap(text: &str, width: usize) -> Vec<String> {
    if text.chars().count() <= width || width == 0 {
        return vec![text.to_owned()];
    }
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let mut word: Vec<char> = word.chars().collect();
        loop {
            let used = line.chars().count();
            let room = if used == 0 {
                width
            } else {
                width.saturating_sub(used + 1)
            };
            if word.len() <= room {
                if used > 0 {
                    line.push(' ');
                }
                line.extend(word.iter());
                break;
            }
            // A word that fits a line of its own starts one; so does a
            // long word that would leave only a stub on this line.
            if used > 0 && (word.len() <= width || room < 4) {
                lines.push(std::mem::take(&mut line));
                continue;
            }
            // Longer than a whole line: cut it.
            let (head, tail) = word.split_at(room.min(word.len()));
            if used > 0 {
                line.push(' ');
            }
            line.extend(head.iter());
            lines.push(std::mem::take(&mut line));
            word = tail.to_vec();
            if word.is_empty() {
                break;
            }
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// One line per failed item, for people reading a table: which item, the
/// error's code and its whole message (a table cell shows the code only).
fn failures(records: &[Map<String, Value>]) -> Vec<String> {
    records
        .iter()
        .filter(|r| r.get("ok") == Some(&Value::Bool(false)))
        .filter_map(|r| {
            let error = r.get("error")?.as_object()?;
            let item = ["name", "id", "subject", "path", "url"]
                .iter()
                .find_map(|k| r.get(*k).and_then(Value::as_str))
                .unwrap_or("-");
            let code = error.get("code").and_then(Value::as_str).unwrap_or("error");
            let message = error.get("message").and_then(Value::as_str).unwrap_or("");
            Some(format!("{item}: {code}: {message}"))
        })
        .collect()
}

fn cell(value: Option<&Value>, show: Show) -> String {
    match (value, show) {
        (None | Some(Value::Null), _) => "-".into(),
        (Some(Value::Bool(b)), _) => if *b { "yes" } else { "no" }.into(),
        (Some(Value::Number(n)), Show::Bytes) => {
            n.as_u64().map(human_bytes).unwrap_or_else(|| n.to_string())
        }
        (Some(Value::Number(n)), Show::Age) => {
            n.as_i64().map(human_age).unwrap_or_else(|| n.to_string())
        }
        (Some(Value::String(s)), _) => s.clone(),
        (Some(Value::Array(items)), Show::Join(field)) => {
            let parts: Vec<String> = items
                .iter()
                .map(|item| match (field, item) {
                    (Some(f), Value::Object(o)) => cell(o.get(f), Show::Plain),
                    (_, v) => cell(Some(v), Show::Plain),
                })
                .collect();
            if parts.is_empty() {
                "-".into()
            } else {
                parts.join(",")
            }
        }
        // An error object shows its code; the message follows the table.
        (Some(Value::Object(o)), _) if o.contains_key("code") => cell(o.get("code"), Show::Plain),
        (Some(v), _) => v.to_string(),
    }
}

/// The object inside a `json!({...})`, for building a record.
pub fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Lowercase hex, as records and file names show digests and keys.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `10800` → `3h`: seconds in their largest whole unit (s, m, h, d), short
/// enough for a narrow column; a negative span (a clock set back) is `0s`.
pub fn human_age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// `1536` → `1.5 KiB`: binary units, as virsh and free(1) print them.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod table_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wrapped_lines_never_pass_the_width() {
        let text = "enable nested virtualization on its host (options kvm_intel nested=1) and CPU mode host-passthrough, then /dev/kvm";
        for width in 1..40 {
            for line in wrap(text, width) {
                assert!(line.chars().count() <= width, "{width}: {line:?}");
            }
        }
        assert_eq!(wrap("a bb ccc", 4), ["a bb", "ccc"]);
    }

    #[test]
    fn a_table_fits_its_width_and_names_are_whole() {
        let long = "x".repeat(50) + " " + &"word ".repeat(40);
        let records: Vec<Map<String, Value>> = (0..3)
            .map(|i| {
                obj(
                    json!({"name": format!("a-rather-long-vm-name-{i}"), "ok": false,
                    "error": {"code": "not_found", "message": long}, "hint": long}),
                )
            })
            .collect();
        const COLS: &[Column] = &[
            col("NAME", "name", Show::Plain),
            col("OK", "ok", Show::Plain),
            col("ERROR", "error", Show::Plain),
            col("HINT", "hint", Show::Plain),
        ];
        let text = render_table(&records, COLS, Some(60));
        for line in text.lines() {
            assert!(line.chars().count() <= 60, "{line:?}\n{text}");
        }
        assert!(text.contains("a-rather-long-vm-name-2"));
        assert!(text.contains("not_found"));
        assert_eq!(failures(&records).len(), 3);
        assert!(failures(&records)[0].starts_with("a-rather-long-vm-name-0: not_found: xxx"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn print(format: Format, records: Vec<Value>, columns: &'static [Column]) -> String {
        let mut p = Printer::new(format, Vec::new(), columns);
        for r in records {
            p.emit(rec(r)).unwrap();
        }
        String::from_utf8(p.finish().unwrap()).unwrap()
    }

    #[test]
    fn jsonl_is_one_object_per_line() {
        let out = print(
            Format::Jsonl,
            vec![json!({"name": "a b", "uuid": "1"}), json!({"name": "ü"})],
            &[],
        );
        let lines: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines,
            vec![json!({"name": "a b", "uuid": "1"}), json!({"name": "ü"})]
        );
    }

    #[test]
    fn json_is_one_array_even_when_empty() {
        let out = print(Format::Json, vec![json!({"a": 1}), json!({"a": 2})], &[]);
        assert_eq!(
            serde_json::from_str::<Value>(&out).unwrap(),
            json!([{"a": 1}, {"a": 2}])
        );
        assert_eq!(
            serde_json::from_str::<Value>(&print(Format::Json, vec![], &[])).unwrap(),
            json!([])
        );
    }

    #[test]
    fn csv_has_header_union_and_json_cells() {
        let out = print(
            Format::Csv,
            vec![
                json!({"name": "a,b", "disks": [{"target": "vda"}]}),
                json!({"name": "c", "ok": false}),
            ],
            &[],
        );
        let mut r = csv::Reader::from_reader(out.as_bytes());
        assert_eq!(r.headers().unwrap(), vec!["name", "disks", "ok"]);
        let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
        assert_eq!(&rows[0][0], "a,b");
        assert_eq!(
            serde_json::from_str::<Value>(&rows[0][1]).unwrap(),
            json!([{"target": "vda"}])
        );
        assert_eq!(&rows[1][2], "false");
    }

    #[test]
    fn table_aligns_unicode_and_formats_cells() {
        static COLS: [Column; 3] = [
            col("name", "name", Show::Plain),
            col("memory", "memory_bytes", Show::Bytes),
            col("disks", "disks", Show::Join(Some("target"))),
        ];
        let out = print(
            Format::Table,
            vec![
                json!({"name": "wëb", "memory_bytes": 134217728u64, "disks": [{"target": "vda"}, {"target": "vdb"}]}),
                json!({"name": "database", "memory_bytes": null, "disks": []}),
            ],
            &COLS,
        );
        assert_eq!(
            out,
            "NAME      MEMORY   DISKS\nwëb       128 MiB  vda,vdb\ndatabase  -        -\n"
        );
    }

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(4 << 30), "4 GiB");
    }

    #[test]
    fn ages_take_their_largest_unit() {
        assert_eq!(human_age(-5), "0s");
        assert_eq!(human_age(59), "59s");
        assert_eq!(human_age(60), "1m");
        assert_eq!(human_age(3 * 3600 + 59), "3h");
        assert_eq!(human_age(9 * 86_400), "9d");
    }

    #[test]
    fn broken_pipe_is_a_quiet_stop() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut p = Printer::new(Format::Jsonl, Closed, &[]);
        let err = p.emit(rec(json!({"a": 1}))).unwrap_err();
        assert_eq!(err.exit_status() as u8, 0);
    }
}
