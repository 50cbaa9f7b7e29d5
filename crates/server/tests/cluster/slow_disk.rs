//! A slow disk cannot cause an election: with the durable log written on a storage thread,
//! a node whose fsync hangs (injected through `POST /debug/stall-fsync`, `[debug]
//! fault_injection` on) keeps ticking and heartbeating. Under a steady write load, the
//! leader's fsync stalled for 1 s and then 5 s, and a follower's for 1 s and 5 s, cost no
//! leader change (same leader, same term on every node, throughout) and no acknowledged
//! write (each writer appends numbered tokens to a key of its own; at the end every
//! acknowledged token is there, once, in order). Behaviour only: no timing is asserted.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::harness::TestCluster;

/// Writer tasks, each with a session of its own.
const WRITERS: u64 = 4;

/// A request waits this long for its entry to apply: far beyond the longest stall, so that a
/// write held up by a hung disk is acknowledged once the disk is back, not timed out.
const EXTRA: &str = "[debug]\nfault_injection = true\n\n[timing]\nrequest_timeout_ms = 30000\n";

/// Every node's (term, leader) as it answers now.
fn leadership(cluster: &TestCluster) -> Vec<(u64, u64, Option<u64>)> {
    cluster
        .ids()
        .into_iter()
        .filter_map(|node| cluster.status(node).map(|s| (node, s.term, s.leader)))
        .collect()
}

/// Watches every node's status for `window`: returns the answers (node, term, leader) that
/// name another term or another leader than `(term, leader)`.
fn changes_during(
    cluster: &TestCluster,
    window: Duration,
    term: u64,
    leader: u64,
) -> BTreeSet<(u64, u64, Option<u64>)> {
    let until = Instant::now() + window;
    let mut seen = BTreeSet::new();
    // Bounded: one round of status calls (500 ms timeout each) per 50 ms at least.
    while Instant::now() < until {
        for (node, node_term, node_leader) in leadership(cluster) {
            if node_term != term || node_leader != Some(leader) {
                seen.insert((node, node_term, node_leader));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    seen
}

#[test]
fn a_stalled_fsync_on_the_leader_or_a_follower_changes_no_leader_and_loses_no_write() {
    let mut cluster = TestCluster::configure(3, EXTRA);
    for node in 1..=3 {
        cluster.restart(node);
    }
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let term = cluster.status(leader).expect("the leader answers").term;
    let follower = cluster
        .ids()
        .into_iter()
        .find(|&node| node != leader)
        .expect("three nodes");

    // Bad input is refused, and changes nothing.
    for bad in ["", "?ms=", "?ms=abc", "?ms=-5", "?ms=600000", "?seconds=1"] {
        let (code, body) = cluster.stall_fsync(leader, bad);
        assert_eq!(code, 400, "{bad:?}: {body}");
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    // Each writer returns the tokens it appended and saw acknowledged.
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let stop = stop.clone();
            let acknowledged = acknowledged.clone();
            let mut config = cluster.client_config();
            // One node at a time, patiently: a write held by a hung disk completes later.
            config.attempt_timeout = Duration::from_secs(40);
            config.call_timeout = Duration::from_secs(60);
            runtime.spawn(async move {
                let mut client = chorus_client::Client::new(config).expect("endpoints");
                let mut acked = Vec::new();
                for n in 0u64.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let token = format!("{n},");
                    if client.append(key(writer), token).await.is_ok() {
                        acked.push(n);
                        acknowledged.fetch_add(1, Ordering::Relaxed);
                    }
                }
                acked
            })
        })
        .collect();
    let progress = |what: &str| {
        let before = acknowledged.load(Ordering::Relaxed);
        cluster.poll(Duration::from_secs(30), what, || {
            (acknowledged.load(Ordering::Relaxed) >= before + 20).then_some(())
        });
    };
    progress("writes before any stall");

    for (node, ms, what) in [
        (leader, 1000, "the leader's fsync stalled for 1 s"),
        (leader, 5000, "the leader's fsync stalled for 5 s"),
        (follower, 1000, "a follower's fsync stalled for 1 s"),
        (follower, 5000, "a follower's fsync stalled for 5 s"),
    ] {
        let (code, body) = cluster.stall_fsync(node, &format!("?ms={ms}"));
        assert_eq!(code, 200, "{what}: {body}");
        // Throughout the stall and a second after it, every node names the same leader in
        // the same term.
        let changes = changes_during(&cluster, Duration::from_millis(ms + 1000), term, leader);
        assert!(
            changes.is_empty(),
            "{what}: the leadership changed, (node, term, leader) seen: {changes:?}"
        );
        progress(&format!("writes after {what}"));
    }

    stop.store(true, Ordering::Relaxed);
    let acked: Vec<Vec<u64>> = runtime.block_on(async {
        let mut acked = Vec::new();
        for writer in writers {
            let tokens = tokio::time::timeout(Duration::from_secs(70), writer)
                .await
                .expect("a writer stops")
                .expect("a writer did not panic");
            acked.push(tokens);
        }
        acked
    });

    // No leader change, and no acknowledged write lost.
    for (node, node_term, node_leader) in leadership(&cluster) {
        assert_eq!(
            (node_term, node_leader),
            (term, Some(leader)),
            "node {node}"
        );
    }
    let total: usize = acked.iter().map(Vec::len).sum();
    assert!(total >= 100, "only {total} writes acknowledged");
    runtime.block_on(async {
        let mut client = chorus_client::Client::new(cluster.client_config()).expect("endpoints");
        for (writer, tokens) in (0..WRITERS).zip(&acked) {
            let value = client
                .get(key(writer))
                .await
                .expect("a read")
                .unwrap_or_default();
            let text = String::from_utf8(value.to_vec()).expect("tokens are text");
            let stored: Vec<u64> = text
                .split(',')
                .filter(|token| !token.is_empty())
                .map(|token| token.parse().expect("a token"))
                .collect();
            // Appended once each (sessions), in the writer's order; a write whose outcome
            // was unknown may be there too, never twice.
            assert!(
                stored.windows(2).all(|pair| pair[0] < pair[1]),
                "writer {writer}: tokens out of order or twice: {stored:?}"
            );
            let missing: Vec<u64> = tokens
                .iter()
                .filter(|token| stored.binary_search(token).is_err())
                .copied()
                .collect();
            assert!(
                missing.is_empty(),
                "writer {writer}: acknowledged writes lost: {missing:?}"
            );
        }
    });
    println!(
        "{total} writes acknowledged across four fsync stalls, all read back; leader {leader} \
         in term {term} throughout"
    );
}

/// The key writer `writer` appends to.
fn key(writer: u64) -> String {
    format!("slow-disk-{writer}")
}
