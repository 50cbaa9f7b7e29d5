//! Fuzzes the key-value decoders and `KvStore::apply`.
//!
//! Arbitrary bytes never panic `Command::decode`, `Query::decode` or `Response::decode`, and
//! what they accept round-trips. `apply` answers the same bytes with a decodable response; if
//! they do not decode, the state changes exactly as an empty (malformed) command at the same
//! index would change it.

#![no_main]

use bytes::Bytes;
use chorus_core::{LogIndex, StateMachine};
use chorus_kv::{ClientId, Command, KvConfig, KvError, KvStore, Op, Query, Response};
use libfuzzer_sys::fuzz_target;

/// A store with a key, an integer and two sessions, one of which has answered a request.
fn seeded_store() -> KvStore {
    let mut store = KvStore::new(KvConfig {
        session_expiry_entries: 4,
        sessions_max: 2,
    });
    let commands = [
        Command::Register,
        Command::Unsessioned(Op::Put {
            key: Bytes::from_static(b"a"),
            value: Bytes::from_static(b"1"),
        }),
        Command::Register,
        Command::Request {
            client: ClientId(3),
            seq: 1,
            op: Op::IncrBy {
                key: Bytes::from_static(b"n"),
                delta: 5,
            },
        },
    ];
    for (index, command) in (1u64..).zip(&commands) {
        store.apply(LogIndex(index), &command.encode());
    }
    store
}

fuzz_target!(|data: &[u8]| {
    if let Ok(command) = Command::decode(data) {
        assert_eq!(Command::decode(&command.encode()), Ok(command));
    }
    if let Ok(query) = Query::decode(data) {
        assert_eq!(Query::decode(&query.encode()), Ok(query));
    }
    if let Ok(response) = Response::decode(data) {
        assert_eq!(Response::decode(&response.encode()), Ok(response));
    }

    let mut store = seeded_store();
    let mut reference = store.clone();
    let index = LogIndex(store.last_applied().0 + 1);
    let output = store.apply(index, data);
    let response = Response::decode(&output).expect("apply answers with a decodable response");
    if Command::decode(data).is_err() {
        assert_eq!(response, Response::Error(KvError::Malformed));
        reference.apply(index, &[]);
        assert_eq!(store, reference, "an undecodable command changed the state");
    }
    assert!(Response::decode(&store.query(data)).is_ok());
});
