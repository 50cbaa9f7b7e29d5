//! The client-history format of HISTORY.md: the golden example reads and writes back byte for
//! byte, histories round-trip, and the reader names the line of every malformed or invalid
//! operation.

use chorus_check::history::{
    HistoryError, OpKind, OpStatus, Operation, Output, read_jsonl, validate, write_jsonl,
};

const EXAMPLE_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/history-example.jsonl"
);

fn read_text(text: &str) -> Result<Vec<Operation>, HistoryError> {
    read_jsonl(text.as_bytes())
}

fn write_text(ops: &[Operation]) -> String {
    let mut bytes = Vec::new();
    write_jsonl(ops, &mut bytes).expect("writing to memory cannot fail");
    String::from_utf8(bytes).expect("JSON is UTF-8")
}

fn put(client: u64, key: &str, value: &str, call: u64, ret: u64) -> Operation {
    Operation {
        client,
        kind: OpKind::Put,
        key: key.to_string(),
        value: Some(value.to_string()),
        from: None,
        call,
        ret: Some(ret),
        status: OpStatus::Ok,
        output: Output::None,
    }
}

fn get(client: u64, key: &str, output: Option<&str>, call: u64, ret: u64) -> Operation {
    Operation {
        client,
        kind: OpKind::Get,
        key: key.to_string(),
        value: None,
        from: None,
        call,
        ret: Some(ret),
        status: OpStatus::Ok,
        output: Output::Value(output.map(str::to_string)),
    }
}

/// Asserts that reading `text` fails on `line` with a message containing `needle`.
fn assert_rejected(text: &str, line: usize, needle: &str) {
    let error = read_text(text).expect_err("the history should be rejected");
    assert_eq!(error.line(), line, "wrong line in: {error}");
    let message = error.to_string();
    assert!(
        message.contains(needle),
        "expected {needle:?} in the error: {message}"
    );
    assert!(message.starts_with(&format!("line {line}: ")), "{message}");
}

#[test]
fn golden_example_of_history_md_parses_and_reserializes_byte_for_byte() {
    let text = std::fs::read_to_string(EXAMPLE_PATH).unwrap();
    assert_eq!(text.lines().count(), 4);
    let ops = read_text(&text).unwrap();
    let expected = vec![
        put(0, "x", "1", 10, 20),
        get(1, "x", Some("1"), 15, 25),
        Operation {
            client: 2,
            kind: OpKind::Cas,
            key: "x".to_string(),
            value: Some("2".to_string()),
            from: Some("1".to_string()),
            call: 30,
            ret: Some(40),
            status: OpStatus::Ok,
            output: Output::Swapped(true),
        },
        Operation {
            client: 0,
            kind: OpKind::Append,
            key: "x".to_string(),
            value: Some("ab".to_string()),
            from: None,
            call: 50,
            ret: None,
            status: OpStatus::Unknown,
            output: Output::None,
        },
    ];
    assert_eq!(ops, expected);
    assert_eq!(write_text(&ops), text);
}

#[test]
fn every_kind_and_status_round_trips() {
    let mut ops = Vec::new();
    let mut time = 0;
    for (client, status) in [OpStatus::Ok, OpStatus::Fail, OpStatus::Unknown]
        .into_iter()
        .enumerate()
    {
        for kind in [OpKind::Get, OpKind::Put, OpKind::Append, OpKind::Cas] {
            for variant in 0..2u64 {
                time += 10;
                let ok = status == OpStatus::Ok;
                let output = match (ok, kind, variant) {
                    (true, OpKind::Get, 0) => Output::Value(None),
                    (true, OpKind::Get, _) => Output::Value(Some("v \"quoted\" é\n".to_string())),
                    (true, OpKind::Cas, swapped) => Output::Swapped(swapped == 1),
                    _ => Output::None,
                };
                ops.push(Operation {
                    client: client as u64,
                    kind,
                    key: format!("key-{variant}"),
                    value: (kind != OpKind::Get).then(|| format!("value-{time}")),
                    from: (kind == OpKind::Cas).then(|| format!("from-{time}")),
                    call: time,
                    // An unknown operation may or may not have a return.
                    ret: (status != OpStatus::Unknown || variant == 1).then_some(time + 5),
                    status,
                    output,
                });
            }
        }
    }
    validate(&ops).unwrap();
    let text = write_text(&ops);
    assert_eq!(text.lines().count(), ops.len());
    assert_eq!(read_text(&text).unwrap(), ops);
}

#[test]
fn writer_omits_fields_that_do_not_apply() {
    let text = write_text(&[get(3, "k", None, 1, 2)]);
    assert_eq!(
        text,
        "{\"client\":3,\"op\":\"get\",\"key\":\"k\",\"call\":1,\"return\":2,\"status\":\"ok\",\
         \"output\":null}\n"
    );
    let mut failed = put(4, "k", "v", 5, 6);
    failed.status = OpStatus::Fail;
    assert_eq!(
        write_text(&[failed]),
        "{\"client\":4,\"op\":\"put\",\"key\":\"k\",\"value\":\"v\",\"call\":5,\"return\":6,\
         \"status\":\"fail\"}\n"
    );
}

#[test]
fn reader_ignores_output_of_put_and_of_operations_that_are_not_ok() {
    let text = concat!(
        r#"{"client":0,"op":"put","key":"x","value":"1","call":1,"return":2,"status":"ok","output":"anything"}"#,
        "\n",
        r#"{"client":1,"op":"get","key":"x","call":1,"status":"unknown","output":7}"#,
        "\n",
    );
    let ops = read_text(text).unwrap();
    assert_eq!(ops[0].output, Output::None);
    assert_eq!(ops[1].output, Output::None);
}

#[test]
fn an_append_may_carry_its_length_which_round_trips() {
    let text = concat!(
        r#"{"client":0,"op":"append","key":"x","value":"ab","call":1,"return":2,"status":"ok","output":2}"#,
        "\n",
        r#"{"client":0,"op":"append","key":"x","value":"c","call":3,"return":4,"status":"ok"}"#,
        "\n",
    );
    let ops = read_text(text).unwrap();
    assert_eq!(ops[0].output, Output::Length(2));
    assert_eq!(ops[1].output, Output::None);
    assert_eq!(write_text(&ops), text);
    assert_rejected(
        r#"{"client":0,"op":"append","key":"x","value":"ab","call":1,"return":2,"status":"ok","output":"2"}"#,
        1,
        "an append's output must be the length after it",
    );
    assert_rejected(
        r#"{"client":0,"op":"append","key":"x","value":"ab","call":1,"return":2,"status":"ok","output":-1}"#,
        1,
        "an append's output must be the length after it",
    );
}

#[test]
fn reader_skips_blank_lines_and_counts_them() {
    let text = concat!(
        r#"{"client":0,"op":"get","key":"x","call":1,"return":2,"status":"ok","output":null}"#,
        "\n\n",
        r#"{"client":0,"op":"get","key":"x","call":3,"return":4,"status":"ok"}"#,
        "\n",
    );
    assert_rejected(text, 3, "an ok get needs an output");
}

#[test]
fn reader_rejects_unknown_op_and_status() {
    assert_rejected(
        r#"{"client":0,"op":"delete","key":"x","call":1,"return":2,"status":"ok"}"#,
        1,
        "unknown variant `delete`",
    );
    let text = concat!(
        r#"{"client":0,"op":"get","key":"x","call":1,"return":2,"status":"ok","output":"1"}"#,
        "\n",
        r#"{"client":0,"op":"get","key":"x","call":3,"return":4,"status":"timeout"}"#,
    );
    assert_rejected(text, 2, "unknown variant `timeout`");
}

#[test]
fn reader_rejects_missing_fields_wrong_types_and_unknown_fields() {
    assert_rejected(
        r#"{"client":0,"op":"put","key":"x","value":"1","return":2,"status":"ok"}"#,
        1,
        "missing field `call`",
    );
    assert_rejected(
        r#"{"client":"zero","op":"put","key":"x","value":"1","call":1,"return":2,"status":"ok"}"#,
        1,
        "invalid type",
    );
    assert_rejected(
        r#"{"client":-1,"op":"put","key":"x","value":"1","call":1,"return":2,"status":"ok"}"#,
        1,
        "invalid value",
    );
    assert_rejected(
        r#"{"client":0,"op":"get","key":"x","call":1,"return":2,"status":"ok","output":5}"#,
        1,
        "a get's output must be a string or null",
    );
    assert_rejected(
        r#"{"client":0,"op":"cas","key":"x","from":"1","value":"2","call":1,"return":2,"status":"ok","output":"yes"}"#,
        1,
        "a cas's output must be true or false",
    );
    assert_rejected(
        r#"{"client":0,"op":"put","key":"x","value":"1","call":1,"retrun":2,"status":"ok"}"#,
        1,
        "unknown field `retrun`",
    );
    assert_rejected("not json", 1, "not a history operation");
}

#[test]
fn reader_rejects_operations_that_break_history_rules() {
    let cases = [
        (
            r#"{"client":0,"op":"put","key":"x","value":"1","call":1,"status":"ok"}"#,
            "an operation with status ok needs a return",
        ),
        (
            r#"{"client":0,"op":"put","key":"x","value":"1","call":1,"status":"fail"}"#,
            "an operation with status fail needs a return",
        ),
        (
            r#"{"client":0,"op":"put","key":"x","value":"1","call":5,"return":4,"status":"ok"}"#,
            "return 4 is before call 5",
        ),
        (
            r#"{"client":0,"op":"put","key":"x","call":1,"return":2,"status":"ok"}"#,
            "put needs a value",
        ),
        (
            r#"{"client":0,"op":"get","key":"x","value":"1","call":1,"return":2,"status":"ok","output":"1"}"#,
            "a get has no value",
        ),
        (
            r#"{"client":0,"op":"cas","key":"x","value":"1","call":1,"return":2,"status":"ok","output":true}"#,
            "a cas needs from",
        ),
        (
            r#"{"client":0,"op":"append","key":"x","from":"0","value":"1","call":1,"return":2,"status":"ok"}"#,
            "has no from",
        ),
        (
            r#"{"client":0,"op":"cas","key":"x","from":"0","value":"1","call":1,"return":2,"status":"ok"}"#,
            "an ok cas needs an output",
        ),
    ];
    for (text, needle) in cases {
        assert_rejected(text, 1, needle);
    }
}

#[test]
fn a_client_has_at_most_one_operation_in_flight() {
    // Client 0 calls again before its first operation returned.
    let text = concat!(
        r#"{"client":0,"op":"put","key":"x","value":"1","call":10,"return":20,"status":"ok"}"#,
        "\n",
        r#"{"client":1,"op":"put","key":"x","value":"2","call":12,"return":14,"status":"ok"}"#,
        "\n",
        r#"{"client":0,"op":"put","key":"y","value":"3","call":15,"return":30,"status":"ok"}"#,
    );
    assert_rejected(
        text,
        3,
        "client 0 calls at 15 while its operation on line 1",
    );

    // Calling again at the very tick of the return is fine, and so is calling again after an
    // unknown operation without a return: the client gave up waiting on it.
    let ops = vec![
        put(0, "x", "1", 10, 20),
        put(0, "x", "2", 20, 30),
        Operation {
            ret: None,
            status: OpStatus::Unknown,
            ..put(0, "x", "3", 40, 0)
        },
        put(0, "x", "4", 41, 50),
    ];
    validate(&ops).unwrap();
    assert_eq!(read_text(&write_text(&ops)).unwrap(), ops);

    // validate names the position of the operation in the slice.
    let overlapping = vec![put(0, "x", "1", 10, 20), put(0, "x", "2", 19, 30)];
    let error = validate(&overlapping).unwrap_err();
    assert_eq!(error.line(), 2, "{error}");
}
