//! Fuzzes `KvStore::restore`: arbitrary bytes never panic it; a refused snapshot leaves the
//! store exactly as it was; an accepted one is the canonical snapshot of the state it restores,
//! and the restored store keeps applying commands.

#![no_main]

use bytes::Bytes;
use chorus_core::{LogIndex, StateMachine};
use chorus_kv::{Command, KvConfig, KvStore, Op, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut store = KvStore::new(KvConfig::default());
    store.apply(LogIndex(1), &Command::Register.encode());
    store.apply(
        LogIndex(2),
        &Command::Unsessioned(Op::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
        })
        .encode(),
    );
    let before = store.clone();
    match store.restore_bytes(data) {
        Ok(()) => {
            if data.first() == Some(&chorus_kv::SNAPSHOT_VERSION) {
                assert_eq!(
                    store.snapshot_bytes().as_ref(),
                    data,
                    "only canonical snapshots are accepted"
                );
            } else {
                // A previous-version snapshot is rewritten in the current version, which
                // restores to the same state.
                let mut again = KvStore::new(KvConfig::default());
                assert!(again.restore_bytes(&store.snapshot_bytes()).is_ok());
                assert_eq!(again, store, "a rewritten old snapshot changed the state");
            }
            if let Some(next) = store.last_applied().0.checked_add(1) {
                let output = store.apply(LogIndex(next), &Command::Register.encode());
                assert!(Response::decode(&output).is_ok());
            }
        }
        Err(_) => assert_eq!(store, before, "a refused snapshot changed the state"),
    }
});
