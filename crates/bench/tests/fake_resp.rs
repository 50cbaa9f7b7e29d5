//! `chorus bench` against a fake RESP server on 127.0.0.1: a run of about a second, closed and
//! open loop, one connection per client or several clients pipelining on one, completes
//! operations without errors and records a linearizable history.
//! (Behaviour only: nothing here depends on how fast the machine is.)

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chorus_bench::schedule::Pacing;
use chorus_bench::workload::{Mix, WorkloadSpec};
use chorus_bench::{BenchConfig, TargetSpec, run};
use chorus_check::linearizability::{CheckLimits, check};
use chorus_resp::{Frame, Limits, parse_request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A tiny Redis: SET and GET on one map, answered in order per connection.
async fn fake_redis() -> SocketAddr {
    fake_redis_counting().await.0
}

/// [`fake_redis`], with the number of connections it accepted.
async fn fake_redis_counting() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let store: Arc<Mutex<BTreeMap<Bytes, Bytes>>> = Arc::default();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut input = BytesMut::new();
                let mut output = BytesMut::new();
                loop {
                    while let Ok(Some(request)) = parse_request(&mut input, &Limits::default()) {
                        let reply = {
                            let mut store = store.lock().expect("the store");
                            match request.first().map(|c| c.to_ascii_uppercase()).as_deref() {
                                Some(b"SET") if request.len() == 3 => {
                                    store.insert(request[1].clone(), request[2].clone());
                                    Frame::ok()
                                }
                                Some(b"GET") if request.len() == 2 => {
                                    Frame::Bulk(store.get(&request[1]).cloned())
                                }
                                _ => Frame::error("ERR", "unknown command"),
                            }
                        };
                        reply.encode(&mut output);
                    }
                    if !output.is_empty() {
                        if stream.write_all(&output).await.is_err() {
                            return;
                        }
                        output.clear();
                    }
                    match stream.read_buf(&mut input).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    (address, accepted)
}

fn config(address: SocketAddr, mix: Mix, pacing: Pacing) -> BenchConfig {
    BenchConfig {
        label: "fake".into(),
        target: TargetSpec::Resp {
            endpoints: vec![address],
        },
        workload: WorkloadSpec {
            mix,
            key_count: 20,
            key_size: 16,
            value_size: 100,
            seed: 3,
        },
        clients: 4,
        in_flight: 1,
        pacing,
        warmup: Duration::from_millis(200),
        duration: Duration::from_secs(1),
        record_history: true,
        progress: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_loop_mixed_run_completes_operations_and_is_linearizable() {
    let address = fake_redis().await;
    let outcome = run(&config(
        address,
        Mix::Mixed { read_ratio: 0.5 },
        Pacing::Closed,
    ))
    .await
    .expect("the run");
    let report = &outcome.report;
    assert!(report.ops > 0, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    assert!(
        report.reads.is_some() && report.writes.is_some(),
        "{report:?}"
    );
    assert!(report.latency.p50_us > 0.0 && report.latency.max_us >= report.latency.p99_us);
    let history = outcome.history.expect("a history");
    assert!(history.len() as u64 >= report.ops);
    assert!(check(&history, CheckLimits::default()).is_linearizable());
    // The history writes and reads back in the HISTORY.md format.
    let mut buffer = Vec::new();
    chorus_check::history::write_jsonl(&history, &mut buffer).expect("written");
    let back = chorus_check::history::read_jsonl(buffer.as_slice()).expect("read back");
    assert_eq!(back.len(), history.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_run_sends_at_its_rate() {
    let address = fake_redis().await;
    let outcome = run(&config(
        address,
        Mix::WriteOnly,
        Pacing::Open { rate: 200.0 },
    ))
    .await
    .expect("the run");
    let report = &outcome.report;
    assert!(report.ops > 0, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    // The schedule, not the server, bounds an open loop: no more than the rate allows.
    assert!(report.ops + report.missed <= 201, "{report:?}");
    assert!(check(&outcome.history.expect("a history"), CheckLimits::default()).is_linearizable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_pipelining_on_shared_connections_complete_and_are_linearizable() {
    let (address, accepted) = fake_redis_counting().await;
    let mut config = config(address, Mix::Mixed { read_ratio: 0.5 }, Pacing::Closed);
    config.clients = 8;
    config.in_flight = 4;
    let outcome = run(&config).await.expect("the run");
    let report = &outcome.report;
    assert!(report.ops > 0, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!((report.in_flight, report.connections), (4, 2), "{report:?}");
    // Eight clients, two connections: fewer connections than requests in flight.
    assert_eq!(accepted.load(Ordering::Relaxed), 2);
    assert!(check(&outcome.history.expect("a history"), CheckLimits::default()).is_linearizable());
}

#[tokio::test]
async fn the_native_client_is_not_shared_and_says_so() {
    let address = fake_redis().await;
    let mut config = config(address, Mix::WriteOnly, Pacing::Closed);
    config.target = TargetSpec::Chorus {
        endpoints: vec![address],
    };
    config.in_flight = 2;
    let error = run(&config).await.expect_err("cannot pipeline");
    assert!(
        format!("{error:#}").contains("one call at a time"),
        "{error:#}"
    );
}

#[tokio::test]
async fn an_unreachable_target_is_an_error_not_a_hang() {
    // A port nobody listens on: bind, take the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let error = run(&config(address, Mix::WriteOnly, Pacing::Closed))
        .await
        .expect_err("no server");
    assert!(format!("{error:#}").contains("cannot connect"), "{error:#}");
}
