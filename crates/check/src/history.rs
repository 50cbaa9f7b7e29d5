//! Client histories: what each client asked, when, and what it was told.
//!
//! Every workload that Chorus runs against itself (the simulator, the end-to-end fault tests,
//! the load generator) records the operations its clients observed, so that a checker can
//! judge afterwards whether the store behaved like one linearizable register per key. This
//! module holds one such operation in memory ([`Operation`]) and reads and writes the
//! JSON-lines format of `shared/design/HISTORY.md`, one object per line, which is also what an
//! external Porcupine- or Knossos-style checker can consume.
//!
//! The format is normative, so the writer reproduces it field for field and in the order of
//! HISTORY.md's examples (`client, op, key, from, value, call, return, status, output`), and
//! the reader is strict: an unknown `op` or `status`, a missing or unknown field, or a value of
//! the wrong type is an error that names the line. Fields that do not apply are omitted when
//! writing; an `output` on a `put` or an operation that is not `ok` is ignored when reading,
//! as HISTORY.md says. Chorus extends the format by one optional field value: an `ok`
//! `append` may carry the length of the value after it (an integer), which the store reports
//! and the checker holds it to; a reader that ignores it loses only that check.
//!
//! Invariants of a valid history (checked by [`validate`], and by [`read_jsonl`] before it
//! returns):
//! - a client has at most one operation in flight;
//! - `ok` and `fail` operations have a `return`, and a `return` is never before its `call`;
//! - `get` has no `value`; `put` and `append` have a `value`; `cas` has both `from` and
//!   `value`; only `cas` has `from`;
//! - an `ok` `get` has an output (a string or null), an `ok` `cas` has a boolean output, an
//!   `ok` `append` may have an integer output, and nothing else has one.

use std::collections::BTreeMap;
use std::io::{BufRead, BufWriter, Write};

use serde::{Deserialize, Deserializer, Serialize};

/// What an operation does to its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// Reads the key; its output is the value, or absent.
    Get,
    /// Sets the key to `value`.
    Put,
    /// Appends `value` to the key; an absent key counts as "".
    Append,
    /// Sets the key to `value` if it is present and equal to `from`.
    Cas,
}

impl OpKind {
    /// The name HISTORY.md uses for this kind (`get`, `put`, `append`, `cas`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::Put => "put",
            OpKind::Append => "append",
            OpKind::Cas => "cas",
        }
    }
}

/// How an operation ended, as far as its client knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpStatus {
    /// It happened, between `call` and `return`, and its output is what the client saw.
    Ok,
    /// It definitely did not happen (an error that is definite by design).
    Fail,
    /// It may have happened at any time after `call`, or never (a timeout, a lost connection
    /// after sending). Never report an indefinite outcome as [`OpStatus::Fail`].
    Unknown,
}

impl OpStatus {
    /// The name HISTORY.md uses for this status (`ok`, `fail`, `unknown`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            OpStatus::Ok => "ok",
            OpStatus::Fail => "fail",
            OpStatus::Unknown => "unknown",
        }
    }
}

/// What the client was told an operation produced.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// No output: a `put` or an `append`, or an operation whose status is not `ok`.
    None,
    /// The value an `ok` `get` read; `None` when the key was absent (JSON `null`).
    Value(Option<String>),
    /// Whether an `ok` `cas` swapped.
    Swapped(bool),
    /// The length in bytes of the value after an `ok` `append`, when the store reported it
    /// (Redis `APPEND` does; a workload that did not look writes no output).
    Length(u64),
}

/// One client operation of a history: one line of the HISTORY.md format.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Operation {
    /// The client that issued it; a client has at most one operation in flight.
    pub client: u64,
    /// What it does.
    pub kind: OpKind,
    /// The one key it touches.
    pub key: String,
    /// The put value, the append suffix or the cas new value; `None` for a get.
    pub value: Option<String>,
    /// The value a cas expects; `None` for every other kind.
    pub from: Option<String>,
    /// When the client sent it, on the history's one monotonic clock.
    pub call: u64,
    /// When the client got its answer (`"return"` in JSON); may be `None` only when the
    /// status is [`OpStatus::Unknown`].
    pub ret: Option<u64>,
    /// How it ended.
    pub status: OpStatus,
    /// What the client was told it produced.
    pub output: Output,
}

/// A history that cannot be read, or that breaks a rule of HISTORY.md.
///
/// Every variant names a 1-based line: the line of the input for [`read_jsonl`], and the
/// position of the operation in the slice for [`validate`], which is its line in the file that
/// [`write_jsonl`] writes.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The input could not be read (an I/O error, or a line that is not UTF-8).
    #[error("line {line}: cannot read the history: {source}")]
    Read {
        /// The line being read.
        line: usize,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The line is not an operation of the format: bad JSON, an unknown `op` or `status`, a
    /// missing or unknown field, or a value of the wrong type.
    #[error("line {line}: not a history operation: {message}")]
    Malformed {
        /// The offending line.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The operation is well formed but breaks a rule of HISTORY.md.
    #[error("line {line}: {message}")]
    Invalid {
        /// The offending line.
        line: usize,
        /// Which rule it breaks, and how.
        message: String,
    },
}

impl HistoryError {
    /// The 1-based line (or operation position) the error is about.
    #[must_use]
    pub fn line(&self) -> usize {
        match self {
            HistoryError::Read { line, .. }
            | HistoryError::Malformed { line, .. }
            | HistoryError::Invalid { line, .. } => *line,
        }
    }
}

/// The JSON shape of one operation when writing. The field order is the order of HISTORY.md's
/// examples, so that our files diff cleanly against hand-written ones.
#[derive(Serialize)]
struct RecordOut<'a> {
    client: u64,
    op: OpKind,
    key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    call: u64,
    #[serde(rename = "return", skip_serializing_if = "Option::is_none")]
    ret: Option<u64>,
    status: OpStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<OutputOut<'a>>,
}

/// A get's output is a string or `null`; a cas's output is a boolean. Untagged, so that the
/// JSON carries only the value.
#[derive(Serialize)]
#[serde(untagged)]
enum OutputOut<'a> {
    Value(Option<&'a str>),
    Swapped(bool),
    Length(u64),
}

/// The JSON shape of one operation when reading. `deny_unknown_fields` turns a misspelt field
/// (`"retrun"`) into an error instead of a silently missing one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordIn {
    client: u64,
    op: OpKind,
    key: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    from: Option<String>,
    call: u64,
    #[serde(rename = "return", default)]
    ret: Option<u64>,
    status: OpStatus,
    // A get's `"output": null` (absent key) must stay distinguishable from no output at all,
    // so a present field is always `Some`, even when it holds JSON null.
    #[serde(default, deserialize_with = "deserialize_present")]
    output: Option<serde_json::Value>,
}

fn deserialize_present<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(deserializer).map(Some)
}

impl RecordIn {
    fn into_operation(self) -> Result<Operation, String> {
        let output = match (self.status, self.kind_output()) {
            // HISTORY.md: the output is ignored for a put; it means nothing for an operation
            // that failed or whose outcome is unknown. An append's output, the length after
            // it, is optional.
            (OpStatus::Ok, Some(OpKind::Get)) => match self.output {
                None => Output::None,
                Some(serde_json::Value::Null) => Output::Value(None),
                Some(serde_json::Value::String(value)) => Output::Value(Some(value)),
                Some(other) => {
                    return Err(format!(
                        "a get's output must be a string or null, not {other}"
                    ));
                }
            },
            (OpStatus::Ok, Some(OpKind::Cas)) => match self.output {
                None => Output::None,
                Some(serde_json::Value::Bool(swapped)) => Output::Swapped(swapped),
                Some(other) => {
                    return Err(format!("a cas's output must be true or false, not {other}"));
                }
            },
            (OpStatus::Ok, Some(OpKind::Append)) => match self.output {
                None => Output::None,
                Some(other) => match other.as_u64() {
                    Some(length) => Output::Length(length),
                    None => {
                        return Err(format!(
                            "an append's output must be the length after it, not {other}"
                        ));
                    }
                },
            },
            _ => Output::None,
        };
        Ok(Operation {
            client: self.client,
            kind: self.op,
            key: self.key,
            value: self.value,
            from: self.from,
            call: self.call,
            ret: self.ret,
            status: self.status,
            output,
        })
    }

    /// The kind, for the kinds whose output is kept.
    fn kind_output(&self) -> Option<OpKind> {
        matches!(self.op, OpKind::Get | OpKind::Cas | OpKind::Append).then_some(self.op)
    }
}

/// Writes `ops` to `out` in the HISTORY.md format, one JSON object per line, each line ending
/// in `\n`.
///
/// Each operation is written as it is, with [`Output::None`] and `None` fields omitted; run
/// [`validate`] first to be sure that [`read_jsonl`] will accept the result. The output is
/// buffered here, so `out` may be an unbuffered file.
///
/// # Errors
/// Any error that writing to `out` returns.
pub fn write_jsonl<W: Write>(ops: &[Operation], out: W) -> std::io::Result<()> {
    let mut out = BufWriter::new(out);
    for op in ops {
        let output = match &op.output {
            Output::None => None,
            Output::Value(value) => Some(OutputOut::Value(value.as_deref())),
            Output::Swapped(swapped) => Some(OutputOut::Swapped(*swapped)),
            Output::Length(length) => Some(OutputOut::Length(*length)),
        };
        let record = RecordOut {
            client: op.client,
            op: op.kind,
            key: &op.key,
            from: op.from.as_deref(),
            value: op.value.as_deref(),
            call: op.call,
            ret: op.ret,
            status: op.status,
            output,
        };
        serde_json::to_writer(&mut out, &record)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Reads a history in the HISTORY.md format, one JSON object per line, and validates it.
///
/// Blank lines are skipped; line numbers in errors count them, so they match an editor's.
///
/// # Errors
/// [`HistoryError::Read`] when `input` fails, [`HistoryError::Malformed`] for a line that is not
/// an operation of the format, and [`HistoryError::Invalid`] for one that breaks a rule of
/// HISTORY.md (see [`validate`]); the first problem found is reported.
pub fn read_jsonl<R: BufRead>(input: R) -> Result<Vec<Operation>, HistoryError> {
    let mut ops = Vec::new();
    let mut lines = Vec::new();
    for (index, text) in input.lines().enumerate() {
        let line = index + 1;
        let text = text.map_err(|source| HistoryError::Read { line, source })?;
        if text.trim().is_empty() {
            continue;
        }
        let record: RecordIn =
            serde_json::from_str(&text).map_err(|error| HistoryError::Malformed {
                line,
                message: json_error_message(&error),
            })?;
        let op = record
            .into_operation()
            .map_err(|message| HistoryError::Malformed { line, message })?;
        check_operation(&op).map_err(|message| HistoryError::Invalid { line, message })?;
        ops.push(op);
        lines.push(line);
    }
    check_clients(&ops, &lines)?;
    Ok(ops)
}

/// serde_json appends " at line L column C" to its messages; inside one JSON line "line 1" would
/// be confused with the file's line, so only the column is kept.
fn json_error_message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    match text.strip_suffix(&suffix) {
        Some(message) => format!("{message} (column {})", error.column()),
        None => text,
    }
}

/// Checks that `ops` follows the rules of HISTORY.md (see the module docs).
///
/// The operations may be in any order; the line of an error is the 1-based position in `ops`.
///
/// # Errors
/// [`HistoryError::Invalid`] for the first broken rule found.
pub fn validate(ops: &[Operation]) -> Result<(), HistoryError> {
    for (index, op) in ops.iter().enumerate() {
        check_operation(op).map_err(|message| HistoryError::Invalid {
            line: index + 1,
            message,
        })?;
    }
    let lines: Vec<usize> = (1..=ops.len()).collect();
    check_clients(ops, &lines)
}

/// The rules that one operation obeys on its own.
fn check_operation(op: &Operation) -> Result<(), String> {
    let kind = op.kind.name();
    let status = op.status.name();
    match (op.status, op.ret) {
        (OpStatus::Ok | OpStatus::Fail, None) => {
            return Err(format!("an operation with status {status} needs a return"));
        }
        (_, Some(ret)) if ret < op.call => {
            return Err(format!("return {ret} is before call {}", op.call));
        }
        _ => {}
    }
    match op.kind {
        OpKind::Get if op.value.is_some() => return Err("a get has no value".to_string()),
        OpKind::Put | OpKind::Append | OpKind::Cas if op.value.is_none() => {
            return Err(format!(
                "{kind} needs a value (the put value, the append suffix or the cas new value)"
            ));
        }
        _ => {}
    }
    match (op.kind, &op.from) {
        (OpKind::Cas, None) => return Err("a cas needs from".to_string()),
        (OpKind::Get | OpKind::Put | OpKind::Append, Some(_)) => {
            return Err(format!("{kind} has no from (only cas has one)"));
        }
        _ => {}
    }
    match (op.status, op.kind, &op.output) {
        (OpStatus::Ok, OpKind::Get, Output::Value(_))
        | (OpStatus::Ok, OpKind::Cas, Output::Swapped(_))
        | (OpStatus::Ok, OpKind::Append, Output::Length(_)) => Ok(()),
        (OpStatus::Ok, OpKind::Get, _) => {
            Err("an ok get needs an output: a string, or null for an absent key".to_string())
        }
        (OpStatus::Ok, OpKind::Cas, _) => {
            Err("an ok cas needs an output: true if it swapped, else false".to_string())
        }
        (_, _, Output::None) => Ok(()),
        (_, _, output) => Err(format!(
            "only an ok get, cas or append has an output, not this {kind} with status {status}: \
             {output:?}"
        )),
    }
}

/// A client has at most one operation in flight. A client that gave up on an `unknown`
/// operation without a return may call again at once (the operation may still take effect
/// later, but the client no longer waits for it), so such an operation occupies its client
/// only at its call.
fn check_clients(ops: &[Operation], lines: &[usize]) -> Result<(), HistoryError> {
    debug_assert_eq!(ops.len(), lines.len());
    let mut by_client: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (index, op) in ops.iter().enumerate() {
        by_client.entry(op.client).or_default().push(index);
    }
    for (client, mut indexes) in by_client {
        indexes.sort_by_key(|&index| (ops[index].call, index));
        for pair in indexes.windows(2) {
            let (earlier, later) = (&ops[pair[0]], &ops[pair[1]]);
            let busy_until = earlier.ret.unwrap_or(earlier.call);
            if later.call < busy_until {
                return Err(HistoryError::Invalid {
                    line: lines[pair[1]],
                    message: format!(
                        "client {client} calls at {} while its operation on line {} is in \
                         flight until {busy_until}",
                        later.call, lines[pair[0]]
                    ),
                });
            }
        }
    }
    Ok(())
}
