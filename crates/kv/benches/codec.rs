//! What encoding a command and an answer costs: every write a node takes is encoded once by
//! the connection that takes it, and every answer once by the driver that applies it.
//!
//! - `kv_codec/encode/set`: a `SET` as a connection proposes it (a 16-byte key, a 100-byte
//!   value, the node's wall clock).
//! - `kv_codec/encode/value`: a `GET`'s answer with a 100-byte value.
//! - `kv_codec/decode/set`: the `SET` decoded again, as the state machine does when it
//!   applies the entry.

use std::hint::black_box;

use bytes::Bytes;
use chorus_kv::{Command, Op, Response};
use criterion::{Criterion, criterion_group, criterion_main};

fn set() -> Command {
    Command::UnsessionedAt {
        now_ms: 1_765_000_000_000,
        op: Op::Put {
            key: Bytes::from_static(b"key:000000000042"),
            value: Bytes::from(vec![b'x'; 100]),
        },
    }
}

fn bench_codec(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("kv_codec");
    let command = set();
    group.bench_function("encode/set", |bencher| {
        bencher.iter(|| black_box(&command).encode());
    });
    let answer = Response::Value(Some(Bytes::from(vec![b'y'; 100])));
    group.bench_function("encode/value", |bencher| {
        bencher.iter(|| black_box(&answer).encode());
    });
    let encoded = command.encode();
    group.bench_function("decode/set", |bencher| {
        bencher.iter(|| Command::decode(black_box(&encoded)).expect("decodes"));
    });
    group.finish();
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
