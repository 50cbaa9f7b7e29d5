//! Property tests proving that the history reader survives arbitrary text.
//!
//! Histories are read from files that people write by hand or that other tools produce, so
//! [`read_jsonl`] must answer any input with a history or an error, never a panic. These
//! properties feed it arbitrary strings, arbitrary bytes (including invalid UTF-8), lines built
//! from the format's own vocabulary, and valid history lines damaged by edits, and check:
//!
//! - it never panics;
//! - an error names a line that exists in the input (1-based);
//! - an accepted history passes [`validate`], and writing it back with [`write_jsonl`] and
//!   reading that again gives the same operations.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use chorus_check::history::{Operation, read_jsonl, validate, write_jsonl};

/// The valid example of HISTORY.md that ships with the crate.
const EXAMPLE: &str = include_str!("../testdata/history-example.jsonl");

/// Reads `input` and checks what any answer must satisfy.
fn check_read(input: &[u8]) -> Result<(), TestCaseError> {
    match read_jsonl(input) {
        Ok(ops) => {
            prop_assert!(
                validate(&ops).is_ok(),
                "read_jsonl accepted an invalid history"
            );
            check_round_trip(&ops)?;
        }
        Err(error) => {
            // A line past the end is allowed only for an error at the very end of the input
            // (a missing final newline still counts its line).
            let lines = input.split(|&byte| byte == b'\n').count().max(1);
            prop_assert!(
                (1..=lines).contains(&error.line()),
                "error names line {} of an input of {} lines: {}",
                error.line(),
                lines,
                error
            );
        }
    }
    Ok(())
}

fn check_round_trip(ops: &[Operation]) -> Result<(), TestCaseError> {
    let mut written = Vec::new();
    write_jsonl(ops, &mut written).expect("writing to a Vec cannot fail");
    match read_jsonl(written.as_slice()) {
        Ok(again) => prop_assert_eq!(again.as_slice(), ops),
        Err(error) => {
            return Err(TestCaseError::fail(format!(
                "a history read back from its own output fails: {error}"
            )));
        }
    }
    Ok(())
}

/// A JSON value of the kinds the format uses, and a few it does not.
fn json_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        prop_oneof![
            Just(0u64),
            Just(1),
            Just(10),
            Just(20),
            Just(u64::MAX),
            any::<u64>()
        ]
        .prop_map(|number| number.to_string()),
        Just("-1".to_owned()),
        Just("1.5".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("1e400".to_owned()),
        prop_oneof![
            Just("get"),
            Just("put"),
            Just("append"),
            Just("cas"),
            Just("ok"),
            Just("fail"),
            Just("unknown"),
            Just("x"),
            Just(""),
            Just("\\u0000"),
            Just("\\ud800"),
            Just("é"),
        ]
        .prop_map(|text| format!("\"{text}\"")),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
    ]
}

const FIELDS: [&str; 11] = [
    "client", "op", "key", "from", "value", "call", "return", "status", "output", "retrun", "",
];

/// A line made of the format's own fields with arbitrary values: most are malformed or invalid
/// in some way, some are valid.
fn vocabulary_line() -> impl Strategy<Value = String> {
    proptest::collection::vec((proptest::sample::select(&FIELDS[..]), json_value()), 0..10)
        .prop_map(|fields| {
            let body: Vec<String> = fields
                .iter()
                .map(|(name, value)| format!("\"{name}\":{value}"))
                .collect();
            format!("{{{}}}", body.join(","))
        })
}

/// A way to edit a text.
#[derive(Clone, Debug)]
enum Edit {
    Delete { at: usize, len: usize },
    Insert { at: usize, text: String },
    Duplicate { at: usize, len: usize },
    Swap { a: usize, b: usize },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1usize..8).prop_map(|(at, len)| Edit::Delete { at, len }),
        (
            any::<usize>(),
            prop_oneof![
                proptest::sample::select(vec![
                    "\n", "\"", ",", ":", "{", "}", "[", "]", "\\", "0", "9", "-", "null", " ",
                    "\r", "\u{feff}", "é",
                ])
                .prop_map(str::to_owned),
                ".{0,6}",
            ]
        )
            .prop_map(|(at, text)| Edit::Insert { at, text }),
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Edit::Duplicate { at, len }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::Swap { a, b }),
    ]
}

/// Applies an edit to `text`, on character boundaries so that the result stays a `String`.
fn apply_edit(text: &mut String, edit: &Edit) {
    let boundaries: Vec<usize> = text
        .char_indices()
        .map(|(at, _)| at)
        .chain(std::iter::once(text.len()))
        .collect();
    let at = |position: usize| boundaries[position % boundaries.len()];
    let span = |start: usize, len: usize| {
        let first = start % boundaries.len();
        let last = (first + len).min(boundaries.len() - 1);
        (boundaries[first], boundaries[last])
    };
    match edit {
        Edit::Delete { at: start, len } => {
            let (from, to) = span(*start, *len);
            text.replace_range(from..to, "");
        }
        Edit::Insert {
            at: position,
            text: inserted,
        } => text.insert_str(at(*position), inserted),
        Edit::Duplicate { at: start, len } => {
            let (from, to) = span(*start, *len);
            let copy = text[from..to].to_owned();
            text.insert_str(to, &copy);
        }
        Edit::Swap { a, b } => {
            let lines: Vec<&str> = text.split('\n').collect();
            let mut lines: Vec<String> = lines.into_iter().map(str::to_owned).collect();
            let count = lines.len();
            lines.swap(a % count, b % count);
            *text = lines.join("\n");
        }
    }
}

fn proptest_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Failures are kept as named regression tests, not in files beside the source.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(proptest_config(512))]

    /// Proves arbitrary text never panics the reader.
    #[test]
    fn arbitrary_text_never_panics(text in "(?s).{0,200}") {
        check_read(text.as_bytes())?;
    }

    /// Proves arbitrary bytes, invalid UTF-8 included, never panic the reader.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        check_read(&bytes)?;
    }

    /// Proves lines made of the format's vocabulary, valid or not, never panic the reader,
    /// and that the ones it accepts round-trip.
    #[test]
    fn vocabulary_lines_never_panic(
        lines in proptest::collection::vec(vocabulary_line(), 0..6),
        separator in prop_oneof![Just("\n"), Just("\r\n"), Just("\n\n")],
    ) {
        check_read(lines.join(separator).as_bytes())?;
    }

    /// Proves edits of the valid example history never panic the reader, and that whatever
    /// it still accepts round-trips.
    #[test]
    fn damaged_valid_histories_never_panic(edits in proptest::collection::vec(edit(), 1..5)) {
        let mut text = EXAMPLE.to_owned();
        for edit in &edits {
            apply_edit(&mut text, edit);
        }
        check_read(text.as_bytes())?;
    }
}

/// Proves the undamaged example is accepted and round-trips, so that the damage properties
/// above start from a valid history.
#[test]
fn the_example_history_is_accepted_and_round_trips() {
    let ops = read_jsonl(EXAMPLE.as_bytes()).expect("the example is valid");
    assert!(!ops.is_empty());
    let mut written = Vec::new();
    write_jsonl(&ops, &mut written).expect("writing to a Vec cannot fail");
    assert_eq!(
        read_jsonl(written.as_slice()).expect("our own output is valid"),
        ops
    );
}
