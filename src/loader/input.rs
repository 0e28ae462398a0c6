//! Row sources: synthetic users, CSV with a header, JSON lines. Each reads
//! one row at a time straight into a chunk slot, so memory stays flat
//! whatever the input's size.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use csv::ByteRecord;
use serde_json::{Map, Value};

use super::args::Format;
use super::chunk::{Chunk, Origin};
use super::error::LoaderError;
use super::event_time;
use super::schema::Schema;
use crate::demo::synth::{self, Drawn};
use crate::value::FeatureValue;
use rand::rngs::StdRng;

/// Large reads: most lines of a refill are then parsed without a syscall.
const READ_BUFFER: usize = 256 * 1024;
/// Id columns tried, in order, when `--id-column` is not given.
const DEFAULT_ID_COLUMNS: [&str; 2] = ["user_id", "id"];

/// What one `RowSource::next` call produced.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// A row was pushed onto the chunk.
    Row,
    /// A readable row that cannot be written (no id, a nested value ...);
    /// it counts as read and rejected.
    Rejected {
        line: u64,
        id: String,
        reason: String,
    },
    /// A row without a valid event time (`--event-time-column`): rejected
    /// like `Rejected`, and where `--strict` stops (a row the loader cannot
    /// date is as unusable as a line it cannot read).
    BadTime {
        line: u64,
        id: String,
        reason: String,
    },
    /// A line that is not a row at all (ragged, invalid JSON, bad UTF-8).
    Malformed {
        line: u64,
        reason: String,
    },
    /// The next read may block (a pipe waiting for its writer): a good
    /// moment to send what is pending, so a slow stream is not held back.
    Idle,
    End,
}

pub trait RowSource {
    /// Reads the next row into `chunk`, tagging it with `source`.
    fn next(&mut self, chunk: &mut Chunk, source: u32) -> Result<Step, LoaderError>;
}

/// How rows are read, whatever the format.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    pub id_column: Option<String>,
    /// False in stream mode: a streaming write cannot delete a feature.
    pub allow_retract: bool,
    /// `--registry`: every row is checked against this view, its values
    /// written in canonical form. None: values keep their text.
    pub schema: Option<Arc<Schema>>,
    /// `--event-time-column`: the column (JSON key) dating each row; never
    /// a feature. None: rows carry no time of their own.
    pub event_time_column: Option<String>,
}

// ---- opening -----------------------------------------------------------

/// An opened input, before its format is known.
pub struct Opened {
    pub name: String,
    reader: BufReader<Box<dyn Read + Send>>,
    /// Standard input or a named pipe: it may be fed slowly.
    live: bool,
    format_hint: Option<Format>,
}

/// Opens `path` (`-` is standard input) without reading from it yet.
pub fn open(path: &Path) -> Result<Opened, LoaderError> {
    if path.as_os_str() == "-" {
        let stdin: Box<dyn Read + Send> = Box::new(std::io::stdin());
        return Ok(Opened {
            name: "stdin".into(),
            reader: BufReader::with_capacity(READ_BUFFER, stdin),
            live: true,
            format_hint: None,
        });
    }
    let file = File::open(path).map_err(|source| LoaderError::Open {
        path: path.to_owned(),
        source,
    })?;
    // A named pipe (or a device) is fed like stdin: maybe slowly.
    let live = file.metadata().map(|m| !m.is_file()).unwrap_or(false);
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let format_hint = match ext.as_deref() {
        Some("csv") => Some(Format::Csv),
        Some("jsonl" | "ndjson" | "json") => Some(Format::Jsonl),
        _ => None,
    };
    let file: Box<dyn Read + Send> = Box::new(file);
    Ok(Opened {
        name: path.display().to_string(),
        reader: BufReader::with_capacity(READ_BUFFER, file),
        live,
        format_hint,
    })
}

impl Opened {
    /// The reader for this input: `--format`, else the extension, else the
    /// first non-blank byte (`{` is JSON lines, anything else CSV).
    pub fn into_source(
        mut self,
        forced: Option<Format>,
        options: &ReadOptions,
    ) -> Result<Box<dyn RowSource + Send>, LoaderError> {
        self.skip_bom()?;
        let format = match forced.or(self.format_hint) {
            Some(f) => f,
            None => self.sniff()?,
        };
        Ok(match format {
            Format::Csv => Box::new(CsvSource::new(self.name, self.reader, options.clone())?),
            Format::Jsonl => Box::new(JsonlSource {
                name: self.name,
                reader: self.reader,
                buf: Vec::new(),
                line: 0,
                live: self.live,
                idle_reported: false,
                options: options.clone(),
            }),
        })
    }

    /// Drops a UTF-8 byte order mark (spreadsheet exports start with one):
    /// it is not part of the first column's name or the first line's JSON.
    fn skip_bom(&mut self) -> Result<(), LoaderError> {
        const BOM: &[u8] = b"\xEF\xBB\xBF";
        let buf = self
            .reader
            .fill_buf()
            .map_err(|e| read_error(&self.name, e))?;
        if buf.starts_with(BOM) {
            self.reader.consume(BOM.len());
        }
        Ok(())
    }

    fn sniff(&mut self) -> Result<Format, LoaderError> {
        loop {
            let buf = self
                .reader
                .fill_buf()
                .map_err(|e| read_error(&self.name, e))?;
            if buf.is_empty() {
                return Ok(Format::Jsonl);
            }
            match buf.iter().position(|b| !b.is_ascii_whitespace()) {
                Some(i) => {
                    return Ok(if buf[i] == b'{' {
                        Format::Jsonl
                    } else {
                        Format::Csv
                    })
                }
                // Only blanks so far: drop them and look further. (They
                // carry no row, so neither format misses anything.)
                None => {
                    let n = buf.len();
                    self.reader.consume(n);
                }
            }
        }
    }
}

/// The feature columns of a file's first row (CSV: every column but the
/// id; JSON lines: the first object's features), to infer its view from.
/// None for standard input or a pipe: reading them would consume its rows.
pub fn first_columns(
    path: &Path,
    forced: Option<Format>,
    id_column: Option<&str>,
    event_time_column: Option<&str>,
) -> Result<Option<BTreeSet<String>>, LoaderError> {
    // Checked before opening: opening a named pipe waits for its writer.
    let regular = std::fs::metadata(path).map(|m| m.is_file());
    if path.as_os_str() == "-" || matches!(regular, Ok(false)) {
        return Ok(None);
    }
    let opened = open(path)?;
    let options = ReadOptions {
        id_column: id_column.map(str::to_owned),
        allow_retract: true,
        schema: None,
        event_time_column: event_time_column.map(str::to_owned),
    };
    let mut source = opened.into_source(forced, &options)?;
    let mut chunk = Chunk::new(1);
    loop {
        chunk.clear();
        match source.next(&mut chunk, 0)? {
            Step::Row => {
                let Some(row) = chunk.rows().first() else {
                    continue;
                };
                let names = row.set.iter().map(|(k, _)| k).chain(&row.retract);
                return Ok(Some(names.cloned().collect()));
            }
            Step::End => return Ok(Some(BTreeSet::new())),
            // A line that is no row says nothing about the columns.
            Step::Rejected { .. } | Step::BadTime { .. } | Step::Malformed { .. } | Step::Idle => {}
        }
    }
}

/// An input that could not be read (not a malformed line: the read failed).
fn read_error(name: &str, e: impl std::fmt::Display) -> LoaderError {
    LoaderError::input(name, format!("read error: {e}"))
}

// ---- synthetic ---------------------------------------------------------

/// `--count N --seed S`: the users `synth::users` makes, row number = line,
/// drawn the same way but laid out straight into the chunk (no map of
/// names and strings per user).
pub struct Synthetic {
    rng: StdRng,
    count: usize,
    n: usize,
}

pub fn synthetic(count: usize, seed: u64) -> Synthetic {
    Synthetic {
        rng: synth::rng(seed),
        count,
        n: 0,
    }
}

impl RowSource for Synthetic {
    fn next(&mut self, chunk: &mut Chunk, source: u32) -> Result<Step, LoaderError> {
        if self.n >= self.count {
            return Ok(Step::End);
        }
        self.n += 1;
        let n = self.n;
        let draw = synth::BatchDraw::draw(&mut self.rng);
        let mut row = chunk.push(Origin {
            source,
            line: n as u64,
        });
        row.id_with(|id| synth::push_user_id(id, n));
        for (name, value) in draw.fields() {
            match value {
                Drawn::Str(s) => row.set(name, s),
                Drawn::Int(i) => row.set_value(name, &FeatureValue::Int(i)),
                Drawn::Float(x) => row.set_value(name, &FeatureValue::Float(x)),
            }
        }
        Ok(Step::Row)
    }
}

// ---- CSV ---------------------------------------------------------------

/// CSV with a header row; one column is the id, every other column a
/// feature. An empty cell retracts that feature.
pub struct CsvSource {
    name: String,
    reader: csv::Reader<BufReader<Box<dyn Read + Send>>>,
    header: Vec<String>,
    id_col: usize,
    /// `--event-time-column`'s index: read as the row's time, not a feature.
    time_col: Option<usize>,
    record: ByteRecord,
    options: ReadOptions,
}

impl CsvSource {
    fn new(
        name: String,
        input: BufReader<Box<dyn Read + Send>>,
        options: ReadOptions,
    ) -> Result<Self, LoaderError> {
        // Flexible: a ragged row is reported by us, with its line, and the
        // load goes on (or stops with --strict).
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .has_headers(true)
            .from_reader(input);
        let raw = reader
            .byte_headers()
            .map_err(|e| LoaderError::input(&name, format!("reading the header: {e}")))?
            .clone();
        let mut header = Vec::with_capacity(raw.len());
        for (i, field) in raw.iter().enumerate() {
            let text = std::str::from_utf8(field).map_err(|_| {
                LoaderError::input(&name, format!("header column {} is not UTF-8", i + 1))
            })?;
            if header.iter().any(|h: &String| h == text) {
                return Err(LoaderError::input(
                    &name,
                    format!("header repeats column {text:?}"),
                ));
            }
            header.push(text.to_owned());
        }
        let id_col = if header.is_empty() {
            0 // an empty input: no rows to find an id in
        } else {
            find_id_column(&header, options.id_column.as_deref()).ok_or_else(|| {
                LoaderError::input(
                    &name,
                    format!(
                        "no id column {} in the header ({})",
                        id_column_wanted(options.id_column.as_deref()),
                        header.join(",")
                    ),
                )
            })?
        };
        let time_col = match options.event_time_column.as_deref() {
            Some(_) if header.is_empty() => None,
            None => None,
            Some(col) => match header.iter().position(|h| h == col) {
                Some(i) if i == id_col => {
                    return Err(LoaderError::input(
                        &name,
                        format!("the event time column {col:?} is the id column"),
                    ))
                }
                Some(i) => Some(i),
                // Every row would lack it: the input is not what was meant.
                None => {
                    return Err(LoaderError::input(
                        &name,
                        format!(
                            "no event time column {col:?} in the header ({})",
                            header.join(",")
                        ),
                    ))
                }
            },
        };
        Ok(CsvSource {
            name,
            reader,
            header,
            id_col,
            time_col,
            record: ByteRecord::new(),
            options,
        })
    }
}

impl RowSource for CsvSource {
    fn next(&mut self, chunk: &mut Chunk, source: u32) -> Result<Step, LoaderError> {
        let more = self
            .reader
            .read_byte_record(&mut self.record)
            .map_err(|e| read_error(&self.name, e))?;
        if !more {
            return Ok(Step::End);
        }
        let line = self.record.position().map_or(0, |p| p.line());
        if self.record.len() != self.header.len() {
            return Ok(Step::Malformed {
                line,
                reason: format!(
                    "{} fields, the header has {}",
                    self.record.len(),
                    self.header.len()
                ),
            });
        }
        let Ok(id) = std::str::from_utf8(&self.record[self.id_col]) else {
            return Ok(malformed_utf8(line, &self.header[self.id_col]));
        };
        let schema = self.options.schema.as_deref();
        if let Some(Err(reason)) = schema.map(|s| s.check_id(id)) {
            return Ok(Step::Rejected {
                line,
                id: id.to_owned(),
                reason,
            });
        }
        let event_time = match self.time_col {
            None => None,
            Some(c) => {
                let column = &self.header[c];
                let Ok(text) = std::str::from_utf8(&self.record[c]) else {
                    return Ok(malformed_utf8(line, column));
                };
                match event_time::parse_text(text) {
                    Ok(ms) => Some(ms),
                    Err(why) => return Ok(bad_event_time(line, id.to_owned(), column, &why)),
                }
            }
        };
        let mut row = chunk.push(Origin { source, line });
        row.id(id);
        if let Some(ms) = event_time {
            row.event_time(ms);
        }
        for (i, cell) in self.record.iter().enumerate() {
            if i == self.id_col || Some(i) == self.time_col {
                continue;
            }
            let name = &self.header[i];
            let Ok(value) = std::str::from_utf8(cell) else {
                chunk.pop();
                return Ok(malformed_utf8(line, name));
            };
            if let Some(schema) = schema {
                let checked = if value.is_empty() {
                    schema.feature(name).map(|_| String::new())
                } else {
                    schema.text_cell(name, value)
                };
                match checked {
                    Ok(text) if !text.is_empty() => {
                        row.set(name, &text);
                        continue;
                    }
                    // An empty cell of a known feature: retracted below.
                    Ok(_) => {}
                    Err(reason) => {
                        let id = row.id_str().to_owned();
                        chunk.pop();
                        return Ok(Step::Rejected { line, id, reason });
                    }
                }
            }
            if !value.is_empty() {
                row.set(name, value);
            } else if self.options.allow_retract {
                row.retract(name);
            } else {
                let id = row.id_str().to_owned();
                chunk.pop();
                return Ok(no_retract_in_stream(line, id, name));
            }
        }
        Ok(Step::Row)
    }
}

fn bad_event_time(line: u64, id: String, column: &str, why: &str) -> Step {
    Step::BadTime {
        line,
        id,
        reason: format!("event time column {column:?}: {why}"),
    }
}

fn malformed_utf8(line: u64, column: &str) -> Step {
    Step::Malformed {
        line,
        reason: format!("column {column:?} is not valid UTF-8"),
    }
}

// ---- JSON lines --------------------------------------------------------

/// One JSON object per line: `{"id": "u1", "features": {...}}`, or flat
/// with the id under the id column. Strings keep their text, integers are
/// decimal, other numbers shortest round-trip, booleans true/false, and a
/// null retracts the feature.
pub struct JsonlSource {
    name: String,
    reader: BufReader<Box<dyn Read + Send>>,
    buf: Vec<u8>,
    line: u64,
    live: bool,
    idle_reported: bool,
    options: ReadOptions,
}

impl RowSource for JsonlSource {
    fn next(&mut self, chunk: &mut Chunk, source: u32) -> Result<Step, LoaderError> {
        loop {
            if self.live && !self.idle_reported && !self.reader.buffer().contains(&b'\n') {
                self.idle_reported = true;
                return Ok(Step::Idle);
            }
            self.buf.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| read_error(&self.name, e))?;
            self.idle_reported = false;
            if n == 0 {
                return Ok(Step::End);
            }
            self.line += 1;
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(parse_json_row(
                &self.buf,
                self.line,
                &self.options,
                chunk,
                source,
            ));
        }
    }
}

fn parse_json_row(
    bytes: &[u8],
    line: u64,
    options: &ReadOptions,
    chunk: &mut Chunk,
    source: u32,
) -> Step {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            return Step::Malformed {
                line,
                reason: format!("invalid UTF-8 at byte {}", e.valid_up_to() + 1),
            }
        }
    };
    let mut object = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => o,
        Ok(_) => {
            return Step::Malformed {
                line,
                reason: "not a JSON object".into(),
            }
        }
        Err(e) => {
            return Step::Malformed {
                line,
                reason: format!("invalid JSON: {e}"),
            }
        }
    };
    let id_key = match options.id_column.as_deref() {
        Some(col) => col,
        None => DEFAULT_ID_COLUMNS
            .into_iter()
            .find(|k| object.contains_key(*k))
            .unwrap_or(DEFAULT_ID_COLUMNS[1]),
    };
    let id = match object.remove(id_key) {
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        Some(other) => {
            return Step::Rejected {
                line,
                id: other.to_string(),
                reason: format!("id {id_key:?} must be a string"),
            }
        }
        None => {
            return Step::Rejected {
                line,
                id: String::new(),
                reason: format!("no id {}", id_column_wanted(options.id_column.as_deref())),
            }
        }
    };
    // The event time: a top-level key (flat form, or the envelope of the
    // nested form), else a key among the nested features. Never a feature.
    let event_time = match options.event_time_column.as_deref() {
        None => None,
        Some(col) => {
            let found = object
                .remove(col)
                .or_else(|| match object.get_mut("features") {
                    Some(Value::Object(nested)) => nested.remove(col),
                    _ => None,
                });
            match found.as_ref().map(event_time::parse_json) {
                Some(Ok(ms)) => Some(ms),
                Some(Err(why)) => return bad_event_time(line, id, col, &why),
                None => {
                    return Step::BadTime {
                        line,
                        id,
                        reason: format!("no event time column {col:?}"),
                    }
                }
            }
        }
    };
    // Nested form when "features" is an object; other envelope keys (a
    // timestamp, a topic) are ignored. Otherwise every other key is a feature.
    let features: Map<String, Value> = match object.remove("features") {
        Some(Value::Object(f)) => f,
        Some(other) => {
            object.insert("features".into(), other);
            object
        }
        None => object,
    };
    let schema = options.schema.as_deref();
    if let Some(Err(reason)) = schema.map(|s| s.check_id(&id)) {
        return Step::Rejected { line, id, reason };
    }
    let mut row = chunk.push(Origin { source, line });
    row.id(&id);
    if let Some(ms) = event_time {
        row.event_time(ms);
    }
    for (name, value) in &features {
        if let Some(schema) = schema {
            let checked = match value {
                Value::Null => schema.feature(name).map(|_| None),
                typed => schema.json_cell(name, typed).map(Some),
            };
            match checked {
                Ok(Some(text)) => {
                    row.set(name, &text);
                    continue;
                }
                // A null of a known feature: retracted below.
                Ok(None) => {}
                Err(reason) => {
                    chunk.pop();
                    return Step::Rejected { line, id, reason };
                }
            }
        }
        match value {
            Value::String(s) => row.set(name, s),
            Value::Bool(b) => row.set(name, if *b { "true" } else { "false" }),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    row.set_value(name, &FeatureValue::Int(i));
                } else if let Some(u) = n.as_u64() {
                    row.set_display(name, u);
                } else {
                    // Floats in shortest round-trip form, as `FeatureValue::encode` writes them.
                    let x = n.as_f64().unwrap_or(f64::NAN);
                    row.set_value(name, &FeatureValue::Float(x));
                }
            }
            Value::Null if options.allow_retract => row.retract(name),
            Value::Null => {
                chunk.pop();
                return no_retract_in_stream(line, id, name);
            }
            Value::Array(_) | Value::Object(_) => {
                chunk.pop();
                return Step::Rejected {
                    line,
                    id,
                    reason: format!("feature {name:?} has a nested value; values must be scalars"),
                };
            }
        }
    }
    Step::Row
}

fn no_retract_in_stream(line: u64, id: String, name: &str) -> Step {
    Step::Rejected {
        line,
        id,
        reason: format!("feature {name:?} is empty or null: a streaming write cannot retract"),
    }
}

fn find_id_column(header: &[String], wanted: Option<&str>) -> Option<usize> {
    match wanted {
        Some(col) => header.iter().position(|h| h == col),
        None => DEFAULT_ID_COLUMNS
            .iter()
            .find_map(|col| header.iter().position(|h| h == col)),
    }
}

fn id_column_wanted(wanted: Option<&str>) -> String {
    match wanted {
        Some(col) => format!("{col:?}"),
        None => format!("{:?} or {:?}", DEFAULT_ID_COLUMNS[0], DEFAULT_ID_COLUMNS[1]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BatchRow;

    fn batch() -> ReadOptions {
        ReadOptions {
            id_column: None,
            allow_retract: true,
            schema: None,
            event_time_column: None,
        }
    }

    fn read_all(format: Format, text: &str, options: ReadOptions) -> (Vec<BatchRow>, Vec<Step>) {
        let reader: Box<dyn Read + Send> = Box::new(std::io::Cursor::new(text.as_bytes().to_vec()));
        let opened = Opened {
            name: "test".into(),
            reader: BufReader::new(reader),
            live: false,
            format_hint: Some(format),
        };
        let mut source = opened.into_source(None, &options).expect("opens");
        let mut chunk = Chunk::new(16);
        let mut steps = Vec::new();
        loop {
            match source.next(&mut chunk, 0).expect("reads") {
                Step::End => break,
                Step::Row => {}
                other => steps.push(other),
            }
        }
        (chunk.rows().to_vec(), steps)
    }

    fn pairs(row: &BatchRow) -> Vec<(&str, &str)> {
        row.set
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn synthetic_rows_are_the_demo_users_in_their_wire_form() {
        // Read through a reused chunk, as the loader does: strings recycled.
        let mut source = synthetic(2500, 11);
        let mut chunk = Chunk::new(4);
        let mut got = Vec::new();
        loop {
            if chunk.len() == 4 {
                got.extend(chunk.rows().iter().cloned());
                chunk.clear();
            }
            match source.next(&mut chunk, 3).expect("reads") {
                Step::Row => {}
                Step::End => break,
                other => panic!("{other:?}"),
            }
            let origin = chunk.origins()[chunk.len() - 1][0];
            assert_eq!(origin.source, 3);
            assert_eq!(origin.line as usize, got.len() + chunk.len());
        }
        got.extend(chunk.rows().iter().cloned());
        let want: Vec<BatchRow> = synth::users(2500, 11)
            .map(|(id, features)| BatchRow::from_features(&id, &features))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn csv_rows_retractions_and_ragged_lines() {
        let text = "user_id,country_iso,tx_count_7d\nu1,US,14\nu2,,3\nu3,GB\nu4,DE,1\n";
        let (rows, steps) = read_all(Format::Csv, text, batch());
        assert_eq!(rows.len(), 3);
        assert_eq!(
            pairs(&rows[0]),
            [("country_iso", "US"), ("tx_count_7d", "14")]
        );
        assert_eq!(rows[1].retract, ["country_iso"]);
        assert_eq!(
            steps,
            [Step::Malformed {
                line: 4,
                reason: "2 fields, the header has 3".into()
            }]
        );
    }

    #[test]
    fn jsonl_both_shapes_and_value_forms() {
        let text = concat!(
            "{\"id\": \"u1\", \"features\": {\"a\": \"x\", \"b\": 2, \"c\": 92.40, \"d\": true, \"e\": null}}\n",
            "\n",
            "{\"user_id\": \"u2\", \"a\": \"y\"}\n",
            "not json\n",
            "{\"features\": {\"a\": 1}}\n",
            "{\"id\": \"u3\", \"a\": [1]}\n",
        );
        let (rows, steps) = read_all(Format::Jsonl, text, batch());
        assert_eq!(rows.len(), 2);
        assert_eq!(
            pairs(&rows[0]),
            [("a", "x"), ("b", "2"), ("c", "92.4"), ("d", "true")]
        );
        assert_eq!(rows[0].retract, ["e"]);
        assert_eq!(rows[1].id, "u2");
        assert!(matches!(steps[0], Step::Malformed { line: 4, .. }));
        assert!(matches!(steps[1], Step::Rejected { line: 5, .. }));
        assert!(matches!(&steps[2], Step::Rejected { line: 6, id, .. } if id == "u3"));
    }

    #[test]
    fn stream_mode_rejects_nulls() {
        let options = ReadOptions {
            id_column: None,
            allow_retract: false,
            schema: None,
            event_time_column: None,
        };
        let (rows, steps) = read_all(Format::Jsonl, "{\"id\": \"u1\", \"a\": null}\n", options);
        assert!(rows.is_empty());
        assert!(matches!(steps[0], Step::Rejected { line: 1, .. }));
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_column() {
        let text = "\u{feff}user_id,country_iso\r\nu1,US\r\n";
        let (rows, steps) = read_all(Format::Csv, text, batch());
        assert!(steps.is_empty(), "{steps:?}");
        assert_eq!(rows[0].id, "u1");
        assert_eq!(pairs(&rows[0]), [("country_iso", "US")]);
        let (rows, _) = read_all(
            Format::Jsonl,
            "\u{feff}{\"id\": \"u1\", \"a\": 1}\n",
            batch(),
        );
        assert_eq!(rows[0].id, "u1");
    }

    fn timed(column: &str) -> ReadOptions {
        ReadOptions {
            event_time_column: Some(column.into()),
            ..batch()
        }
    }

    #[test]
    fn the_event_time_column_dates_the_row_and_is_no_feature() {
        let text = "user_id,ts,country_iso\nu1,2026-12-01T14:40:09.5Z,US\nu2,1796136009,GB\n\
                    u3,,FR\nu4,2026-12-01T14:40:09,DE\nu5,1.5,IT\n";
        let (rows, steps) = read_all(Format::Csv, text, timed("ts"));
        assert_eq!(rows.len(), 2, "{steps:?}");
        assert_eq!(rows[0].event_time_ms, Some(1_796_136_009_500));
        assert_eq!(rows[1].event_time_ms, Some(1_796_136_009_000));
        assert_eq!(pairs(&rows[0]), [("country_iso", "US")]);
        assert!(rows.iter().all(|r| r.retract.is_empty()));
        let rejected: Vec<(u64, &str)> = steps
            .iter()
            .map(|s| match s {
                Step::BadTime { line, id, reason } => {
                    assert!(reason.starts_with("event time column \"ts\": "), "{reason}");
                    (*line, id.as_str())
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(rejected, [(4, "u3"), (5, "u4"), (6, "u5")]);

        let text = concat!(
            "{\"id\": \"u1\", \"ts\": 1796136009000, \"a\": 1}\n",
            "{\"id\": \"u2\", \"ts\": \"2026-12-01T16:40:09+02:00\", \"features\": {\"a\": 2}}\n",
            "{\"id\": \"u3\", \"features\": {\"a\": 3, \"ts\": \"1796136009\"}}\n",
            "{\"id\": \"u4\", \"a\": 4}\n",
            "{\"id\": \"u5\", \"ts\": 1.5, \"a\": 5}\n",
            "{\"id\": \"u6\", \"ts\": null, \"a\": 6}\n",
        );
        let (rows, steps) = read_all(Format::Jsonl, text, timed("ts"));
        assert_eq!(rows.len(), 3, "{steps:?}");
        for row in &rows {
            assert_eq!(row.event_time_ms, Some(1_796_136_009_000), "{row:?}");
            assert_eq!(row.set.len(), 1, "{row:?}");
            assert_eq!(row.set[0].0, "a");
        }
        let reasons: Vec<&str> = steps
            .iter()
            .map(|s| match s {
                Step::BadTime { reason, .. } => reason.as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(reasons[0], "no event time column \"ts\"");
        assert!(reasons[1..]
            .iter()
            .all(|r| r.starts_with("event time column \"ts\": ")));
    }

    #[test]
    fn a_header_without_the_event_time_column_is_an_error() {
        let reader: Box<dyn Read + Send> = Box::new(std::io::Cursor::new(b"id,a\nu1,2\n".to_vec()));
        let opened = Opened {
            name: "t.csv".into(),
            reader: BufReader::new(reader),
            live: false,
            format_hint: Some(Format::Csv),
        };
        let err = opened
            .into_source(None, &timed("ts"))
            .err()
            .expect("refused");
        assert!(
            err.to_string().contains("no event time column \"ts\""),
            "{err}"
        );
    }

    #[test]
    fn rows_without_the_flag_carry_no_time_yet() {
        let (rows, _) = read_all(Format::Csv, "id,ts\nu1,5\n", batch());
        assert_eq!(rows[0].event_time_ms, None);
        assert_eq!(pairs(&rows[0]), [("ts", "5")]);
    }

    #[test]
    fn csv_without_an_id_column_is_an_error() {
        let reader: Box<dyn Read + Send> = Box::new(std::io::Cursor::new(b"a,b\n1,2\n".to_vec()));
        let opened = Opened {
            name: "t.csv".into(),
            reader: BufReader::new(reader),
            live: false,
            format_hint: Some(Format::Csv),
        };
        let err = opened.into_source(None, &batch()).err().expect("refused");
        assert!(err.to_string().contains("no id column"), "{err}");
    }
}
