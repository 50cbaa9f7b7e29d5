//! What encoding a message for a peer costs: a leader encodes every AppendEntries once per
//! follower, so under load it encodes each write's bytes twice in a 3-node cluster.
//!
//! - `transport/encode/append/{N}`: an AppendEntries carrying `N` entries of a 140-byte
//!   command each (about a `SET` with a 100-byte value and its envelope).
//! - `transport/encode/heartbeat`: an AppendEntries with no entries.

use std::hint::black_box;

use bytes::Bytes;
use chorus_core::{LogIndex, Term};
use chorus_raft::{AppendEntries, Entry, EntryPayload, Message};
use chorus_server::runtime::boundary::PeerMessage;
use chorus_server::runtime::transport::encode_message;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

fn append(entries: u64) -> PeerMessage {
    PeerMessage::Raft(Message::AppendEntries(AppendEntries {
        term: Term(7),
        prev_log_index: LogIndex(1_000),
        prev_log_term: Term(7),
        entries: (1..=entries)
            .map(|offset| Entry {
                term: Term(7),
                index: LogIndex(1_000 + offset),
                payload: EntryPayload::Command(Bytes::from(vec![b'x'; 140])),
            })
            .collect(),
        leader_commit: LogIndex(998),
        read_round: 42,
    }))
}

fn bench_encode(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("transport");
    for entries in [1, 16, 128] {
        let message = append(entries);
        group.bench_with_input(
            BenchmarkId::new("encode/append", entries),
            &message,
            |bencher, message| {
                bencher.iter(|| encode_message(black_box(message)).expect("encodes"));
            },
        );
    }
    let heartbeat = append(0);
    group.bench_function("encode/heartbeat", |bencher| {
        bencher.iter(|| encode_message(black_box(&heartbeat)).expect("encodes"));
    });
    group.finish();
}

criterion_group!(benches, bench_encode);
criterion_main!(benches);
