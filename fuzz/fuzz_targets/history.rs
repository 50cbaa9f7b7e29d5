//! Fuzzes `read_jsonl`: arbitrary bytes never panic it; an accepted history validates and
//! round-trips through `write_jsonl`.

#![no_main]

use chorus_check::history::{read_jsonl, validate, write_jsonl};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ops) = read_jsonl(data) {
        assert!(validate(&ops).is_ok());
        let mut written = Vec::new();
        write_jsonl(&ops, &mut written).expect("writing to a Vec cannot fail");
        let again = read_jsonl(written.as_slice()).expect("our own output reads back");
        assert_eq!(again, ops);
    }
});
