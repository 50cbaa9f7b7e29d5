//! Crashes: a leader killed under load, the whole cluster killed at once, and logs damaged on
//! disk the way a crash (a torn tail) or the hardware (a flipped bit) would damage them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus_check::history::{OpKind, OpStatus, Operation, Output, write_jsonl};
use chorus_check::linearizability::{CheckLimits, Verdict, check};
use chorus_client::{Client, ClientConfig, ClientError};
use chorus_kv::KvError;

use crate::harness::{TestCluster, append_to, flip_bit, records_end, resp_get, resp_set};

const STARTUP: Duration = Duration::from_secs(10);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// How a client error is recorded: `fail` only for what is definitely without effect.
pub(crate) fn status_of(error: &ClientError) -> OpStatus {
    match error {
        ClientError::Unavailable(_) | ClientError::NoEndpoints => OpStatus::Fail,
        ClientError::Refused(KvError::StaleRequest | KvError::UnknownSession) => OpStatus::Unknown,
        ClientError::Refused(_) => OpStatus::Fail,
        ClientError::Indefinite(_) | ClientError::Protocol(_) => OpStatus::Unknown,
    }
}

/// Runs one operation through `client` and records it.
pub(crate) async fn run_op(
    client: &mut Client,
    id: u64,
    start: Instant,
    kind: OpKind,
    key: &str,
    value: Option<String>,
    from: Option<String>,
) -> Operation {
    let call = start.elapsed().as_nanos() as u64;
    let result: Result<Output, ClientError> = match kind {
        OpKind::Get => client
            .get(key.to_string())
            .await
            .map(|v| Output::Value(v.map(|v| text(&v)))),
        OpKind::Put => client
            .put(key.to_string(), value.clone().unwrap_or_default())
            .await
            .map(|()| Output::None),
        OpKind::Append => client
            .append(key.to_string(), value.clone().unwrap_or_default())
            .await
            .map(|_| Output::None),
        OpKind::Cas => client
            .cas(
                key.to_string(),
                from.clone().unwrap_or_default(),
                value.clone().unwrap_or_default(),
            )
            .await
            .map(Output::Swapped),
    };
    let ret = start.elapsed().as_nanos() as u64;
    let (status, ret, output) = match result {
        Ok(output) => (OpStatus::Ok, Some(ret), output),
        Err(error) => match status_of(&error) {
            OpStatus::Unknown => (OpStatus::Unknown, None, Output::None),
            status => (status, Some(ret), Output::None),
        },
    };
    Operation {
        client: id,
        kind,
        key: key.to_string(),
        value,
        from,
        call,
        ret,
        status,
        output,
    }
}

/// A worker starts at most one operation this often. Unpaced, a fast scheme (primary-backup
/// keeps its data in memory) ran some 100,000 operations in 9 s, whose appended values grow
/// with every append, and the linearizability check of that history ran for more than 20
/// minutes; paced, a 9 s run holds at most some 2,250 operations a worker, and a failover
/// still falls among dozens of them.
const WORKER_OP_INTERVAL: Duration = Duration::from_millis(4);

/// One worker: a mix of operations on shared keys, plus appends to a key of its own so that
/// every acknowledged append can be looked for at the end.
pub(crate) async fn worker(
    mut client: Client,
    id: u64,
    start: Instant,
    until: Instant,
    history: Arc<Mutex<Vec<Operation>>>,
) {
    let shared = ["x", "y", "z"];
    let own = format!("log-{id}");
    let mut last_seen: BTreeMap<&str, String> = BTreeMap::new();
    let mut n = 0u64;
    let mut next_op = tokio::time::Instant::now();
    while Instant::now() < until {
        tokio::time::sleep_until(next_op).await;
        next_op = tokio::time::Instant::now() + WORKER_OP_INTERVAL;
        n += 1;
        let key = shared[(n as usize * 7 + id as usize) % shared.len()];
        let token = format!("{id}.{n};");
        let op = match n % 8 {
            0 | 3 => run_op(&mut client, id, start, OpKind::Get, key, None, None).await,
            1 => run_op(&mut client, id, start, OpKind::Put, key, Some(token), None).await,
            2 | 5 => {
                run_op(
                    &mut client,
                    id,
                    start,
                    OpKind::Append,
                    &own,
                    Some(token),
                    None,
                )
                .await
            }
            4 => {
                run_op(
                    &mut client,
                    id,
                    start,
                    OpKind::Append,
                    key,
                    Some(token),
                    None,
                )
                .await
            }
            6 => {
                let from = last_seen.get(key).cloned().unwrap_or_default();
                run_op(
                    &mut client,
                    id,
                    start,
                    OpKind::Cas,
                    key,
                    Some(token),
                    Some(from),
                )
                .await
            }
            _ => run_op(&mut client, id, start, OpKind::Get, &own, None, None).await,
        };
        if let (OpKind::Get, Output::Value(Some(value))) = (op.kind, &op.output) {
            if op.key != own {
                last_seen.insert(key, value.clone());
            }
        }
        let unknown = op.status == OpStatus::Unknown;
        history.lock().expect("history lock").push(op);
        if unknown {
            // A client has at most one operation in flight, and an unknown one stays in
            // flight forever: go on as a new client (a new session).
            return;
        }
    }
}

/// Starts the workload: five workers (every other one impatient), each replaced by a fresh one
/// (a new history client, a new session) when its operation ends unknown, until `until`.
/// Returns the supervisor's handle; it finishes once every worker has.
pub(crate) fn spawn_workload(
    runtime: &tokio::runtime::Runtime,
    config: ClientConfig,
    start: Instant,
    until: Instant,
    history: &Arc<Mutex<Vec<Operation>>>,
) -> tokio::task::JoinHandle<()> {
    const WORKERS: u64 = 5;
    // A worker whose operation ends unknown is replaced by a fresh one with a new client id,
    // so that each history client has at most one operation in flight.
    let history = history.clone();
    runtime.spawn(async move {
        let mut next_id = 0u64;
        let mut running = tokio::task::JoinSet::new();
        let spawn = |running: &mut tokio::task::JoinSet<()>, next_id: &mut u64| {
            // Every other worker is impatient: it gives up during a failover, so the
            // history also holds indefinite outcomes (reported unknown, never fail).
            let mut config = config.clone();
            if *next_id % 2 == 1 {
                config.attempt_timeout = Duration::from_millis(150);
                config.call_timeout = Duration::from_millis(400);
            }
            let client = Client::new(config).expect("endpoints are given");
            running.spawn(worker(client, *next_id, start, until, history.clone()));
            *next_id += 1;
        };
        for _ in 0..WORKERS {
            spawn(&mut running, &mut next_id);
        }
        while let Some(done) = running.join_next().await {
            done.expect("a worker panicked");
            if Instant::now() < until {
                spawn(&mut running, &mut next_id);
            }
        }
    })
}

/// Reads every key of the history back through a fresh client (after the workload), adds the
/// reads to the history, and checks that every acknowledged append to a worker's own key is
/// there and that the whole history is linearizable.
pub(crate) fn check_final_state(
    cluster: &TestCluster,
    runtime: &tokio::runtime::Runtime,
    mut ops: Vec<Operation>,
    start: Instant,
) {
    let reader_id = 1_000_000;
    let keys: Vec<String> = {
        let mut keys: Vec<String> = ops.iter().map(|op| op.key.clone()).collect();
        keys.sort();
        keys.dedup();
        keys
    };
    let mut finals = BTreeMap::new();
    runtime.block_on(async {
        let mut client = cluster.client();
        for key in &keys {
            let op = run_op(&mut client, reader_id, start, OpKind::Get, key, None, None).await;
            assert_eq!(op.status, OpStatus::Ok, "the final read of {key} failed");
            if let Output::Value(value) = &op.output {
                finals.insert(key.clone(), value.clone().unwrap_or_default());
            }
            ops.push(op);
        }
    });

    let path = cluster.root().join("history.jsonl");
    write_jsonl(
        &ops,
        std::fs::File::create(&path).expect("create the history file"),
    )
    .expect("write the history");
    let count = |status: OpStatus| ops.iter().filter(|op| op.status == status).count();
    println!(
        "history: {} operations ({} ok, {} fail, {} unknown) in {}",
        ops.len(),
        count(OpStatus::Ok),
        count(OpStatus::Fail),
        count(OpStatus::Unknown),
        path.display()
    );
    let longest = ops
        .iter()
        .filter_map(|op| op.ret.map(|ret| ret - op.call))
        .max()
        .unwrap_or(0);
    println!(
        "the longest acknowledged operation took {:?} (it spanned a failover)",
        Duration::from_nanos(longest)
    );
    assert!(
        count(OpStatus::Ok) > 100,
        "too little got done: {}",
        count(OpStatus::Ok)
    );

    // Every acknowledged append to a worker's own key is in its final value, in order.
    for op in &ops {
        if op.kind == OpKind::Append && op.status == OpStatus::Ok && op.key.starts_with("log-") {
            let token = op.value.as_deref().unwrap_or_default();
            let found = finals.get(&op.key).is_some_and(|v| v.contains(token));
            assert!(
                found,
                "acknowledged append {token:?} to {} was lost; history: {}",
                op.key,
                path.display()
            );
        }
    }
    // An acknowledged put is visible unless a later write replaced it: the checker judges
    // that, with the final reads in the history.
    let verdict = check(&ops, CheckLimits::default());
    assert_eq!(
        verdict,
        Verdict::Linearizable,
        "history: {}",
        path.display()
    );
}

// Proves that SIGKILLing the leader (twice, each time restarting it) while several clients
// write loses no acknowledged write, and that everything the clients observed — including
// across the failovers, and including operations whose outcome the impatient clients never
// learned — is linearizable.
#[test]
fn killing_the_leader_under_load_loses_no_acknowledged_write_and_the_history_is_linearizable() {
    kill_the_leader_twice_under_load(TestCluster::start(3));
}

// The same with reads served from the leader's lease (`[reads] lease = true`, thesis
// §6.4.1): across the failovers no read is stale.
#[test]
fn with_lease_reads_killing_the_leader_under_load_keeps_the_history_linearizable() {
    let mut cluster = TestCluster::configure(3, "[reads]\nlease = true\n");
    for node in 1..=3 {
        cluster.restart(node);
    }
    kill_the_leader_twice_under_load(cluster);
}

/// Runs the writers and readers of [`spawn_workload`] for 9 s while the leader is SIGKILLed
/// and restarted two seconds later, twice; then checks the final state and the history.
fn kill_the_leader_twice_under_load(mut cluster: TestCluster) {
    cluster.wait_for_leader(STARTUP);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let start = Instant::now();
    let workload = Duration::from_secs(9);
    let until = start + workload;
    let history = Arc::new(Mutex::new(Vec::new()));
    let supervisor = spawn_workload(&runtime, cluster.client_config(), start, until, &history);

    // The nemesis: kill the leader, restart it two seconds later, twice.
    let mut kills = 0;
    for round in 0..2 {
        let settle = start + Duration::from_millis(1_500 + round * 3_500);
        cluster.poll(Duration::from_secs(10), "the next kill", || {
            (Instant::now() >= settle).then_some(())
        });
        let leader = cluster.wait_for_leader(STARTUP);
        cluster.kill_9(leader);
        kills += 1;
        let back = Instant::now() + Duration::from_secs(2);
        cluster.poll(Duration::from_secs(10), "the restart", || {
            (Instant::now() >= back).then_some(())
        });
        cluster.restart(leader);
    }
    assert_eq!(kills, 2);
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), supervisor).await })
        .expect("the workers finish")
        .expect("the supervisor finishes");

    // Final reads, after every worker finished, through a fresh client.
    cluster.wait_for_leader(STARTUP);
    let ops = history.lock().expect("history lock").clone();
    check_final_state(&cluster, &runtime, ops, start);
}

// Proves that every write acknowledged before the whole cluster was SIGKILLed at once is
// recovered from the nodes' disks when they restart (acknowledged means durable on a
// majority).
#[test]
fn all_nodes_killed_and_restarted_recover_every_acknowledged_write_from_disk() {
    let mut cluster = TestCluster::start(3);
    cluster.wait_for_leader(STARTUP);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let writes = 200;
    runtime.block_on(async {
        let mut client = cluster.client();
        for i in 0..writes {
            client
                .put(format!("k{i}"), format!("v{i}"))
                .await
                .unwrap_or_else(|error| panic!("put k{i}: {error}"));
            client
                .append("all", format!("{i},"))
                .await
                .unwrap_or_else(|error| panic!("append {i}: {error}"));
        }
    });
    // No grace period: the last acknowledgement came just before the kill.
    cluster.stop_all();
    for node in cluster.ids() {
        cluster.restart(node);
    }
    cluster.wait_for_leader(STARTUP);
    let expected_all: String = (0..writes).map(|i| format!("{i},")).collect();
    runtime.block_on(async {
        let mut client = cluster.client();
        for i in 0..writes {
            let value = client
                .get(format!("k{i}"))
                .await
                .expect("read after restart");
            assert_eq!(value.as_deref(), Some(format!("v{i}").as_bytes()), "k{i}");
        }
        let all = client.get("all").await.expect("read after restart");
        assert_eq!(all.map(|v| text(&v)), Some(expected_all.clone()));
    });
    // And each node has it all, read through its own RESP port.
    for node in cluster.ids() {
        assert_eq!(
            resp_get(cluster.redis(node), "all").as_deref(),
            Some(expected_all.as_str())
        );
    }
}

/// Writes `count` keys one by one, each its own log entry (and WAL record), through the
/// running nodes in turn.
fn write_keys(cluster: &TestCluster, prefix: &str, count: usize) {
    let running: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|&node| cluster.is_running(node))
        .collect();
    for i in 0..count {
        resp_set(
            cluster.redis(running[i % running.len()]),
            &format!("{prefix}{i}"),
            &format!("{i}"),
        );
    }
}

/// A follower, once a leader is agreed.
fn a_follower(cluster: &TestCluster) -> u64 {
    let leader = cluster.wait_for_leader(STARTUP);
    cluster
        .ids()
        .into_iter()
        .find(|&n| n != leader)
        .expect("three nodes")
}

// Proves that a node killed in the middle of a write (simulated: a truncated record at the end
// of its last WAL segment) cuts the torn tail off with a warning, starts, and catches up.
#[test]
fn a_torn_wal_tail_is_cut_and_the_node_recovers() {
    let mut cluster = TestCluster::start(3);
    cluster.wait_for_leader(STARTUP);
    write_keys(&cluster, "before-", 20);
    let victim = a_follower(&cluster);
    cluster.kill_9(victim);
    let last = cluster
        .wal_segments(victim)
        .pop()
        .expect("the victim has a WAL segment");
    // A record header announcing 200 bytes of kind and payload, followed by only 11 of them.
    let mut torn = Vec::new();
    torn.extend_from_slice(&200u32.to_le_bytes());
    torn.extend_from_slice(&0xdead_beefu32.to_le_bytes());
    torn.extend_from_slice(&[
        1, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xa0,
    ]);
    append_to(&last, &torn);

    write_keys(&cluster, "while-down-", 5);
    cluster.restart(victim);
    cluster.poll(STARTUP, "the victim to serve", || cluster.status(victim));
    let log = cluster.log(victim);
    assert!(
        log.contains("torn"),
        "the victim's log does not mention the torn tail:\n{log}"
    );

    write_keys(&cluster, "after-", 5);
    let leader = cluster.wait_for_leader(STARTUP);
    let commit = cluster.status(leader).expect("the leader answers").commit;
    cluster.wait_applied(victim, commit, STARTUP);
    for key in ["before-0", "before-19", "while-down-4", "after-4"] {
        assert!(
            resp_get(cluster.redis(victim), key).is_some(),
            "{key} through the victim"
        );
    }
    assert!(cluster.is_running(victim));
    assert_eq!(
        cluster.status(victim).map(|s| s.applied >= commit),
        Some(true)
    );
}

// Proves that a flipped bit inside a record of an earlier WAL segment (damage in a closed
// segment, which recovery cannot cut without losing the segments after it) makes the node
// refuse to start, exiting non-zero promptly with an error naming the file and the byte
// offset. (Damage in the last segment's synced records is repaired from the peers: see
// `a_flipped_bit_in_a_synced_wal_record_is_repaired_from_the_peers`.)
#[test]
fn a_flipped_bit_in_the_middle_of_the_wal_refuses_to_start_with_a_clear_error() {
    let mut cluster = TestCluster::configure(3, "[storage]\nsegment_bytes = 4096\n");
    for node in cluster.ids() {
        cluster.restart(node);
    }
    cluster.wait_for_leader(STARTUP);
    write_keys(&cluster, "k", 120);
    let victim = a_follower(&cluster);
    cluster.kill_9(victim);
    let segments = cluster.wal_segments(victim);
    assert!(
        segments.len() >= 2,
        "4 KiB segments hold 120 writes in several: {segments:?}"
    );
    let first = segments.into_iter().next().expect("a WAL segment");
    let size = std::fs::metadata(&first).expect("segment metadata").len();
    assert!(
        size > 24 + 200,
        "the segment holds several records ({size} bytes)"
    );
    // Inside the first record's payload: header (24) + record header (8) + kind (1) + 1.
    let offset = 24 + 8 + 1 + 1;
    flip_bit(&first, offset, 3);

    cluster.restart(victim);
    let status = cluster
        .wait_exit(victim, Duration::from_secs(5))
        .expect("the node exits within 5 s");
    assert!(!status.success(), "the node exited with {status}");
    let log = cluster.log(victim);
    let file = first.display().to_string();
    assert!(
        log.contains("corrupt storage in")
            && log.contains(&file)
            && log.contains("at byte offset "),
        "the error does not name {file} and an offset:\n{log}"
    );
    if let Some(line) = log.lines().find(|line| line.contains("corrupt storage in")) {
        println!("the refusal: {line}");
    }
    // The rest of the cluster is unaffected.
    resp_set(
        cluster.redis(if victim == 1 { 2 } else { 1 }),
        "still",
        "fine",
    );
}

// Proves protocol-aware recovery on real files: a follower is SIGKILLed under load, a bit of a
// synced record of its last WAL segment is flipped (a later sync marker proves the record was
// durable, so it may have been acknowledged), and the node restarts: it cuts the damaged
// record and what follows, says so, repairs its log from its peers (it starts no election
// meanwhile, and votes only as its log before the damage would have), and ends up with every write; the clients' history stays
// linearizable and every acknowledged append is there.
#[test]
fn a_flipped_bit_in_a_synced_wal_record_is_repaired_from_the_peers() {
    let mut cluster = TestCluster::start(3);
    cluster.wait_for_leader(STARTUP);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let start = Instant::now();
    let until = start + Duration::from_secs(8);
    let history = Arc::new(Mutex::new(Vec::new()));
    let supervisor = spawn_workload(&runtime, cluster.client_config(), start, until, &history);

    let settle = start + Duration::from_millis(2_000);
    cluster.poll(Duration::from_secs(10), "the load to run", || {
        (Instant::now() >= settle).then_some(())
    });
    let victim = a_follower(&cluster);
    cluster.kill_9(victim);
    let last = cluster
        .wal_segments(victim)
        .pop()
        .expect("the victim has a WAL segment");
    let size = records_end(&last);
    assert!(size > 4096, "the load wrote records ({size} bytes)");
    // Halfway through the segment: many fsyncs (and their sync markers) came after it.
    flip_bit(&last, size / 2, 5);
    cluster.restart(victim);
    cluster.poll(STARTUP, "the victim to serve", || cluster.status(victim));
    let log = cluster.log(victim);
    assert!(
        log.contains("damaged log records that were synced"),
        "the victim's log does not report the damage:\n{log}"
    );
    cluster.poll(Duration::from_secs(20), "the victim to be repaired", || {
        let status = cluster.status_json(victim)?;
        status["repairing"].is_null().then_some(())
    });

    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), supervisor).await })
        .expect("the workers finish")
        .expect("the supervisor finishes");
    let leader = cluster.wait_for_leader(STARTUP);
    let ops = history.lock().expect("history lock").clone();
    check_final_state(&cluster, &runtime, ops.clone(), start);
    // The victim holds what the leader holds, read through its own port.
    let commit = cluster.status(leader).expect("the leader answers").commit;
    cluster.wait_applied(victim, commit, STARTUP);
    let mut keys: Vec<&str> = ops.iter().map(|op| op.key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        assert_eq!(
            resp_get(cluster.redis(victim), key),
            resp_get(cluster.redis(leader), key),
            "{key} on the repaired node and on the leader"
        );
    }
}
