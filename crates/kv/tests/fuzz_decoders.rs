//! Property tests proving that every decoder of the key-value layer survives hostile bytes.
//!
//! Bytes reach these decoders from clients, peers and disks, so each must answer anything
//! with a value or an error, never a panic:
//!
//! - [`Command::decode`], [`Query::decode`] and [`Response::decode`] on arbitrary bytes (with
//!   and without a valid version byte), and on valid encodings with bytes flipped, cut or
//!   added; whatever they accept re-encodes to bytes that decode to the same value;
//! - [`Envelope::decode`] on arbitrary bytes; whatever it accepts re-encodes to the same bytes;
//! - [`KvStore::apply`] with arbitrary bytes: it answers with a decodable [`Response`], and a
//!   command that does not decode changes the state exactly as much as an empty command at
//!   the same index would (session expiry by log time still runs), checked by digest;
//! - [`KvStore::restore`] with arbitrary bytes and with mutated valid snapshots: it either
//!   succeeds (and the restored store snapshots back to the same bytes) or returns an error
//!   and leaves the store exactly as it was.

use bytes::Bytes;
use chorus_core::envelope::Envelope;
use chorus_core::{LogIndex, NodeId, StateMachine};
use chorus_kv::TypedOp;
use chorus_kv::typed::{Score, ZAddFlags};
use chorus_kv::{
    Binding, BoundWrite, CODEC_VERSION, ClientId, Command, KvConfig, KvError, KvStore, Op, Query,
    Response, SNAPSHOT_VERSION,
};
use proptest::prelude::*;

// ----- Generators ------------------------------------------------------------------------------

fn small_bytes() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        // A few keys, so that operations meet each other.
        3 => prop_oneof![Just("a"), Just("b"), Just("n"), Just(""), Just("7")]
            .prop_map(|key: &'static str| Bytes::from_static(key.as_bytes())),
        1 => proptest::collection::vec(any::<u8>(), 0..8).prop_map(Bytes::from),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        small_bytes().prop_map(|key| Op::Get { key }),
        (small_bytes(), small_bytes()).prop_map(|(key, value)| Op::Put { key, value }),
        small_bytes().prop_map(|key| Op::Delete { key }),
        (small_bytes(), small_bytes()).prop_map(|(key, value)| Op::Append { key, value }),
        (small_bytes(), small_bytes(), small_bytes()).prop_map(|(key, from, to)| Op::Cas {
            key,
            from,
            to
        }),
        (
            small_bytes(),
            prop_oneof![any::<i64>(), -3i64..3, Just(i64::MAX), Just(i64::MIN)]
        )
            .prop_map(|(key, delta)| Op::IncrBy { key, delta }),
        proptest::collection::vec((small_bytes(), small_bytes()), 0..4)
            .prop_map(|pairs| Op::MultiPut { pairs }),
        typed_op().prop_map(Op::Typed),
    ]
}

/// Typed operations, so that stores (and their snapshots) hold every kind of value.
fn typed_op() -> impl Strategy<Value = TypedOp> {
    let members = || proptest::collection::vec(small_bytes(), 1..4);
    prop_oneof![
        (
            small_bytes(),
            proptest::collection::vec((small_bytes(), small_bytes()), 1..3)
        )
            .prop_map(|(key, pairs)| TypedOp::HSet {
                key,
                pairs,
                legacy_ok: false
            }),
        (small_bytes(), members(), any::<bool>()).prop_map(|(key, values, left)| TypedOp::Push {
            key,
            values,
            left,
            only_if_exists: false
        }),
        (small_bytes(), members()).prop_map(|(key, members)| TypedOp::SAdd { key, members }),
        (small_bytes(), any::<bool>()).prop_map(|(key, left)| TypedOp::Pop {
            key,
            left,
            count: None
        }),
        (
            small_bytes(),
            proptest::collection::vec((-3i32..3, small_bytes()), 1..3)
        )
            .prop_map(|(key, pairs)| TypedOp::ZAdd {
                key,
                flags: ZAddFlags::default(),
                pairs: pairs
                    .into_iter()
                    .map(|(score, member)| (Score(f64::from(score) / 2.0), member))
                    .collect(),
            }),
        (small_bytes(), proptest::option::of(0u64..3))
            .prop_map(|(key, count)| TypedOp::SPop { key, count }),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(Command::Register),
        (0u64..40, 0u64..5, op()).prop_map(|(client, seq, op)| Command::Request {
            client: ClientId(client),
            seq,
            op,
        }),
        op().prop_map(Command::Unsessioned),
        // Bound sessions: few names, connections and fingerprints, so retries, superseded
        // connections and evictions all happen.
        (
            prop_oneof![Just("s"), Just("t")],
            0u64..4,
            0u64..3,
            0u64..100,
            op()
        )
            .prop_map(|(name, connection, fingerprint, now_ms, op)| {
                Command::BoundAt {
                    now_ms,
                    binding: Binding {
                        session: Bytes::from_static(name.as_bytes()),
                        connection,
                        fingerprint,
                    },
                    write: BoundWrite::Op(op),
                }
            }),
    ]
}

fn query() -> impl Strategy<Value = Query> {
    prop_oneof![
        small_bytes().prop_map(|key| Query::Get { key }),
        proptest::collection::vec(small_bytes(), 0..4).prop_map(|keys| Query::MultiGet { keys }),
        Just(Query::Len),
    ]
}

fn kv_error() -> impl Strategy<Value = KvError> {
    prop_oneof![
        Just(KvError::UnknownSession),
        Just(KvError::StaleRequest),
        Just(KvError::NotAnInteger),
        Just(KvError::Overflow),
        Just(KvError::Malformed),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        Just(Response::Ok),
        proptest::option::of(small_bytes()).prop_map(Response::Value),
        proptest::collection::vec(proptest::option::of(small_bytes()), 0..4)
            .prop_map(Response::Values),
        any::<bool>().prop_map(Response::Deleted),
        any::<u64>().prop_map(Response::Length),
        any::<bool>().prop_map(Response::Swapped),
        any::<i64>().prop_map(Response::Integer),
        any::<u64>().prop_map(|client| Response::Registered(ClientId(client))),
        kv_error().prop_map(Response::Error),
    ]
}

/// Arbitrary bytes, half of them starting with `version` so that the body is reached.
fn versioned_bytes(version: u8) -> impl Strategy<Value = Vec<u8>> {
    (proptest::collection::vec(any::<u8>(), 0..48), any::<bool>()).prop_map(
        move |(mut bytes, versioned)| {
            if versioned {
                bytes.insert(0, version);
            }
            bytes
        },
    )
}

/// A way to damage valid bytes.
#[derive(Clone, Debug)]
enum Mutation {
    Flip {
        at: usize,
        mask: u8,
    },
    Set {
        at: usize,
        value: u8,
    },
    Cut {
        at: usize,
    },
    Insert {
        at: usize,
        value: u8,
    },
    Remove {
        at: usize,
    },
    Append {
        tail: Vec<u8>,
    },
    /// Rewrites a one-byte varint `b` as the two-byte `[b | 0x80, 0]`: the same number, not
    /// in its shortest form.
    Widen {
        at: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        (
            any::<usize>(),
            prop_oneof![Just(0u8), Just(0x7f), Just(0x80), Just(0xff), any::<u8>()]
        )
            .prop_map(|(at, value)| Mutation::Set { at, value }),
        any::<usize>().prop_map(|at| Mutation::Cut { at }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::Insert { at, value }),
        any::<usize>().prop_map(|at| Mutation::Remove { at }),
        proptest::collection::vec(any::<u8>(), 1..4).prop_map(|tail| Mutation::Append { tail }),
        any::<usize>().prop_map(|at| Mutation::Widen { at }),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let len = bytes.len();
    match mutation {
        Mutation::Flip { at, mask } if len > 0 => bytes[at % len] ^= mask,
        Mutation::Set { at, value } if len > 0 => bytes[at % len] = *value,
        Mutation::Cut { at } => bytes.truncate(at % (len + 1)),
        Mutation::Insert { at, value } => bytes.insert(at % (len + 1), *value),
        Mutation::Remove { at } if len > 0 => {
            bytes.remove(at % len);
        }
        Mutation::Append { tail } => bytes.extend_from_slice(tail),
        Mutation::Widen { at } if len > 0 && bytes[at % len] < 0x80 => {
            bytes[at % len] |= 0x80;
            bytes.insert(at % len + 1, 0);
        }
        Mutation::Flip { .. }
        | Mutation::Set { .. }
        | Mutation::Remove { .. }
        | Mutation::Widen { .. } => {}
    }
}

/// A store with data and sessions, built by applying `commands` from index 1.
fn store_after(config: KvConfig, commands: &[Command]) -> KvStore {
    let mut store = KvStore::new(config);
    for (index, command) in (1u64..).zip(commands) {
        store.apply(LogIndex(index), &command.encode());
    }
    store
}

/// Configurations: the default, and tight ones under which sessions expire and are evicted.
fn kv_config() -> impl Strategy<Value = KvConfig> {
    prop_oneof![
        Just(KvConfig::default()),
        (1u64..6, 0usize..4).prop_map(|(session_expiry_entries, sessions_max)| KvConfig {
            session_expiry_entries,
            sessions_max,
            ..KvConfig::default()
        }),
    ]
}

fn proptest_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Failures are kept as named regression tests, not in files beside the source.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ----- Properties ------------------------------------------------------------------------------

proptest! {
    #![proptest_config(proptest_config(1024))]

    /// Proves the command, query and response decoders never panic on arbitrary bytes, and
    /// that whatever they accept round-trips through encode and decode.
    #[test]
    fn decoders_survive_arbitrary_bytes(bytes in versioned_bytes(CODEC_VERSION)) {
        if let Ok(command) = Command::decode(&bytes) {
            prop_assert_eq!(Command::decode(&command.encode()), Ok(command));
        }
        if let Ok(query) = Query::decode(&bytes) {
            prop_assert_eq!(Query::decode(&query.encode()), Ok(query));
        }
        if let Ok(response) = Response::decode(&bytes) {
            prop_assert_eq!(Response::decode(&response.encode()), Ok(response));
        }
    }

    /// Proves valid encodings round-trip, and damaged ones never panic the decoders; what a
    /// damaged encoding decodes to still round-trips.
    #[test]
    fn decoders_survive_damaged_encodings(
        command in command(),
        query in query(),
        response in response(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let mut command_bytes = command.encode().to_vec();
        let mut query_bytes = query.encode().to_vec();
        let mut response_bytes = response.encode().to_vec();
        prop_assert_eq!(Command::decode(&command_bytes), Ok(command));
        prop_assert_eq!(Query::decode(&query_bytes), Ok(query));
        prop_assert_eq!(Response::decode(&response_bytes), Ok(response));
        for mutation in &mutations {
            mutate(&mut command_bytes, mutation);
            mutate(&mut query_bytes, mutation);
            mutate(&mut response_bytes, mutation);
        }
        if let Ok(command) = Command::decode(&command_bytes) {
            prop_assert_eq!(Command::decode(&command.encode()), Ok(command));
        }
        if let Ok(query) = Query::decode(&query_bytes) {
            prop_assert_eq!(Query::decode(&query.encode()), Ok(query));
        }
        if let Ok(response) = Response::decode(&response_bytes) {
            prop_assert_eq!(Response::decode(&response.encode()), Ok(response));
        }
    }

    /// Proves the envelope decoder never panics, and that what it accepts is exactly what the
    /// encoder writes.
    #[test]
    fn envelope_decode_survives_arbitrary_bytes(bytes in versioned_bytes(1)) {
        let bytes = Bytes::from(bytes);
        if let Ok(envelope) = Envelope::decode(&bytes) {
            prop_assert_eq!(envelope.encode(), bytes);
        }
    }

    /// Proves every envelope round-trips, and damaged ones never panic the decoder.
    #[test]
    fn envelope_round_trips_and_survives_damage(
        origin in any::<u64>(),
        request in any::<u64>(),
        command in proptest::collection::vec(any::<u8>(), 0..16),
        mutations in proptest::collection::vec(mutation(), 1..3),
    ) {
        let envelope = Envelope {
            origin: NodeId(origin),
            request,
            command: Bytes::from(command),
            session: None,
        };
        let encoded = envelope.encode();
        prop_assert_eq!(Envelope::decode(&encoded), Ok(envelope));
        let mut damaged = encoded.to_vec();
        for mutation in &mutations {
            mutate(&mut damaged, mutation);
        }
        let damaged = Bytes::from(damaged);
        if let Ok(decoded) = Envelope::decode(&damaged) {
            prop_assert_eq!(decoded.encode(), damaged);
        }
    }
}

proptest! {
    #![proptest_config(proptest_config(256))]

    /// Proves `apply` answers arbitrary bytes with a decodable response and never panics, and
    /// that bytes which do not decode change nothing but what an empty (malformed) command at
    /// the same index changes: the last applied index and log-time session expiry.
    #[test]
    fn apply_survives_arbitrary_bytes(
        config in kv_config(),
        history in proptest::collection::vec(command(), 0..12),
        inputs in proptest::collection::vec(
            prop_oneof![
                versioned_bytes(CODEC_VERSION),
                (command(), mutation()).prop_map(|(command, mutation)| {
                    let mut bytes = command.encode().to_vec();
                    mutate(&mut bytes, &mutation);
                    bytes
                }),
            ],
            1..8,
        ),
        gap in 1u64..4,
    ) {
        let mut store = store_after(config, &history);
        let mut index = store.last_applied().0;
        for bytes in inputs {
            index += gap;
            let decodable = Command::decode(&bytes).is_ok();
            let mut reference = store.clone();
            let output = store.apply(LogIndex(index), &bytes);
            let response = Response::decode(&output);
            prop_assert!(response.is_ok(), "apply answered undecodable bytes {:?}", output);
            prop_assert_eq!(store.last_applied(), LogIndex(index));
            if !decodable {
                prop_assert_eq!(response, Ok(Response::Error(KvError::Malformed)));
                reference.apply(LogIndex(index), &[]);
                prop_assert_eq!(store.state_digest(), reference.state_digest());
                prop_assert_eq!(&store, &reference);
            }
        }
    }

    /// Proves `restore` never panics on arbitrary bytes, and that a refused snapshot leaves
    /// the store exactly as it was.
    #[test]
    fn restore_survives_arbitrary_bytes(
        history in proptest::collection::vec(command(), 0..8),
        bytes in versioned_bytes(SNAPSHOT_VERSION),
    ) {
        check_restore(&store_after(KvConfig::default(), &history), &bytes)?;
    }

    /// Proves `restore` never panics on damaged valid snapshots, that a refused one leaves the
    /// store exactly as it was, and that an accepted one is the canonical snapshot of the state
    /// it restores.
    #[test]
    fn restore_survives_damaged_snapshots(
        source in proptest::collection::vec(command(), 0..12),
        target in proptest::collection::vec(command(), 0..6),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let source = store_after(KvConfig::default(), &source);
        let target = store_after(KvConfig::default(), &target);
        let snapshot = source.snapshot_bytes();
        let mut restored = target.clone();
        prop_assert_eq!(restored.restore_bytes(&snapshot), Ok(()));
        prop_assert_eq!(&restored, &source);
        let mut damaged = snapshot.to_vec();
        for mutation in &mutations {
            mutate(&mut damaged, mutation);
        }
        check_restore(&target, &damaged)?;
    }
}

/// Restores `bytes` into a copy of `store` and checks the outcome.
fn check_restore(store: &KvStore, bytes: &[u8]) -> Result<(), TestCaseError> {
    let mut restored = store.clone();
    let digest = store.state_digest();
    match restored.restore_bytes(bytes) {
        Ok(()) => {
            // Only canonical snapshots are accepted, so the state snapshots back to the input.
            // A previous-version snapshot (strings only) is rewritten in the current version,
            // which must restore to the same state.
            let snapshot = restored.snapshot_bytes();
            if bytes.first() == Some(&SNAPSHOT_VERSION) {
                prop_assert_eq!(snapshot.as_ref(), bytes);
            } else {
                let mut again = KvStore::new(store.config());
                prop_assert_eq!(again.restore_bytes(&snapshot), Ok(()));
                prop_assert_eq!(&again, &restored);
            }
            prop_assert_eq!(restored.config(), store.config());
            // The restored store keeps working: it applies and answers queries.
            let next = LogIndex(restored.last_applied().0.saturating_add(1));
            if next > restored.last_applied() {
                let output = restored.apply(next, &Command::Register.encode());
                prop_assert!(Response::decode(&output).is_ok());
            }
            prop_assert!(Response::decode(&restored.query(&Query::Len.encode())).is_ok());
        }
        Err(_) => {
            prop_assert_eq!(restored.state_digest(), digest);
            prop_assert_eq!(&restored, store);
        }
    }
    Ok(())
}

// ----- Regressions found by fuzzing ---------------------------------------------------------------

/// Proves a snapshot whose numbers are not in their shortest varint form is refused (or, if
/// accepted, is the canonical snapshot of the state it restores).
///
/// Found by the `kv_snapshot` cargo-fuzz target (minimised by hand). `store.rs` promises that
/// "every accepted snapshot is thus the canonical one of its state", but postcard accepts an
/// overlong varint: `[1, 0x80, 0x00, 0, 0]` (version, `last_applied` 0 written in two bytes,
/// no keys, no sessions) restores the same state as the canonical `[1, 0, 0, 0]`, so two
/// different snapshot byte strings describe one state, and comparing or hashing snapshot bytes
/// across replicas can report a difference where there is none.
#[test]
fn regression_an_overlong_varint_snapshot_is_not_accepted_as_canonical() {
    let canonical = KvStore::new(KvConfig::default()).snapshot_bytes();
    assert_eq!(canonical.as_ref(), [SNAPSHOT_VERSION, 0, 0, 0, 0, 0]);
    let overlong = [SNAPSHOT_VERSION, 0x80, 0x00, 0, 0, 0, 0];
    let store = store_after(
        KvConfig::default(),
        &[
            Command::Register,
            Command::Unsessioned(Op::Get { key: Bytes::new() }),
        ],
    );
    check_restore(&store, &overlong).expect("restore refuses it or accepts it canonically");
}
