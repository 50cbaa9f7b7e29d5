//! Snapshots and log compaction end to end: a cluster with a tiny snapshot threshold compacts
//! under load, restarts from its snapshots, catches a lagging follower up by InstallSnapshot,
//! refuses (or works around) a damaged snapshot file, catches a follower that missed 200,000
//! writes up by InstallSnapshot under a checked workload, and snapshots on `chorus snapshot`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chorus_resp::{Frame, encode_request};

use crate::faults::{check_final_state, spawn_workload};
use crate::harness::{Resp, TestCluster, flip_bit, resp_get};

/// Snapshot every 200 entries, keep a tail of 50, small chunks (so installs take several).
const SMALL_SNAPSHOTS: &str =
    "[snapshots]\nthreshold_entries = 200\ncompaction_tail_entries = 50\nchunk_bytes = 4096\n";

fn start(count: usize) -> TestCluster {
    let mut cluster = TestCluster::configure(count, SMALL_SNAPSHOTS);
    for node in 1..=count as u64 {
        cluster.restart(node);
    }
    cluster
}

/// `SET key{i} value{i}` for `i` in `range`, pipelined in batches of 100 through `address`.
fn write_keys(address: SocketAddr, range: std::ops::Range<u64>) {
    write_keys_pipelined(address, range, 100);
}

/// `SET key{i} value{i}` for `i` in `range`, pipelined in batches of `batch_size`.
fn write_keys_pipelined(address: SocketAddr, range: std::ops::Range<u64>, batch_size: usize) {
    let mut resp = Resp::connect(address);
    let keys: Vec<u64> = range.collect();
    for batch in keys.chunks(batch_size) {
        let mut out = BytesMut::new();
        for i in batch {
            let (key, value) = (format!("key{i}"), format!("value{i}"));
            encode_request(&["SET", &key, &value], &mut out);
        }
        resp.send_raw(&out);
        for i in batch {
            match resp.reply() {
                Some(Frame::Simple(text)) if text == "OK" => {}
                other => panic!("SET key{i}: {other:?}"),
            }
        }
    }
}

fn check_keys(address: SocketAddr, range: std::ops::Range<u64>) {
    for i in range {
        assert_eq!(
            resp_get(address, &format!("key{i}")),
            Some(format!("value{i}")),
            "key{i} through {address}"
        );
    }
}

fn snapshot_files(cluster: &TestCluster, node: u64) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(cluster.data_dir(node).join("snapshots"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("snap-") && !name.contains(".tmp"))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_cluster_compacts_under_load_and_restarts_from_its_snapshots() {
    let mut cluster = start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    write_keys(cluster.redis(leader), 0..2_000);
    let status = cluster.status_json(leader).expect("status");
    for node in cluster.ids() {
        cluster.poll(Duration::from_secs(10), "a snapshot on every node", || {
            (!snapshot_files(&cluster, node).is_empty()).then_some(())
        });
    }
    let json = cluster.status_json(leader).expect("status");
    assert!(
        json["snapshot_index"].as_u64().unwrap_or(0) >= 1_000,
        "{json}"
    );
    assert!(json["snapshot_bytes"].as_u64().unwrap_or(0) > 0, "{json}");
    assert!(json["first_index"].as_u64().unwrap_or(0) > 1, "{json}");
    assert!(cluster.metric(leader, "snapshots_taken").unwrap_or(0.0) >= 1.0);
    // Two snapshot files are kept (three for a moment, between a snapshot and its cleanup).
    assert!(snapshot_files(&cluster, leader).len() <= 3);
    drop(status);

    // The whole cluster restarts from its snapshots and still has every key.
    cluster.stop_all();
    for node in cluster.ids() {
        cluster.restart(node);
    }
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    for node in cluster.ids() {
        let log = cluster.log(node);
        assert!(
            log.contains("restored the state machine from a snapshot"),
            "node {node} did not restart from a snapshot:\n{log}"
        );
    }
    check_keys(cluster.redis(leader), 0..2_000);
    // Exactly-once across the restart: an INCR retried by the native client applies once.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut client = chorus_client::Client::new(cluster.client_config()).expect("endpoints");
    runtime.block_on(async {
        client.put("counted", "1".to_string()).await.expect("put");
        client.put("counted", "2".to_string()).await.expect("put");
    });
    assert_eq!(resp_get(cluster.redis(leader), "counted"), Some("2".into()));

    // POST /snapshot forces one below the threshold.
    let taken = cluster.metric(leader, "snapshots_taken").unwrap_or(0.0);
    let admin = cluster.addresses(leader).admin;
    ureq::post(format!("http://{admin}/snapshot"))
        .send_empty()
        .expect("POST /snapshot");
    cluster.poll(Duration::from_secs(5), "a forced snapshot", || {
        (cluster.metric(leader, "snapshots_taken")? > taken).then_some(())
    });
    cluster.stop_all();
}

#[test]
fn a_follower_that_missed_thousands_of_writes_catches_up_by_install_snapshot() {
    let mut cluster = start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let follower = cluster.ids().into_iter().find(|&n| n != leader).unwrap();
    write_keys(cluster.redis(leader), 0..100);
    cluster.kill_9(follower);
    write_keys(cluster.redis(leader), 100..3_000);
    cluster.restart(follower);
    cluster.poll(
        Duration::from_secs(15),
        "the follower to install a snapshot",
        || (cluster.metric(follower, "snapshots_installed")? >= 1.0).then_some(()),
    );
    let applied = cluster.status(leader).expect("status").applied;
    cluster.wait_applied(follower, applied, Duration::from_secs(10));
    assert!(
        cluster
            .metric(leader, "snapshot_chunks_sent")
            .unwrap_or(0.0)
            >= 1.0
    );
    // Reads go through the follower (forwarded for the read index, served from its state).
    check_keys(cluster.redis(follower), 0..3_000);
    let json = cluster.status_json(follower).expect("status");
    assert_eq!(json["keys"].as_u64(), Some(3_000), "{json}");
    cluster.stop_all();
}

/// How a test damages a snapshot file.
#[derive(Clone, Copy, Debug)]
enum Damage {
    /// One bit flipped in the middle (the hardware).
    FlippedBit,
    /// Cut at half its length (a torn copy).
    Torn,
}

/// Damages the newest snapshot of a stopped follower and restarts it: the node either refuses
/// to start naming the file, or reports the damage, starts from an older valid snapshot (or
/// the leader's) and holds every key. Never silently lost state.
fn a_damaged_snapshot_is_detected(damage: Damage) {
    let mut cluster = start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    write_keys(cluster.redis(leader), 0..1_500);
    let victim = cluster
        .ids()
        .into_iter()
        .find(|&n| n != leader)
        .expect("a follower");
    cluster.poll(Duration::from_secs(10), "a snapshot on the victim", || {
        (!snapshot_files(&cluster, victim).is_empty()).then_some(())
    });
    cluster.kill_9(victim);
    let newest = snapshot_files(&cluster, victim).pop().expect("a snapshot");
    let length = std::fs::metadata(&newest).expect("stat").len();
    match damage {
        Damage::FlippedBit => flip_bit(&newest, length / 2, 3),
        Damage::Torn => std::fs::OpenOptions::new()
            .write(true)
            .open(&newest)
            .and_then(|file| file.set_len(length / 2))
            .expect("truncate the snapshot"),
    }
    let name = newest
        .file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned();
    cluster.restart(victim);
    if let Some(status) = cluster.wait_exit(victim, Duration::from_secs(3)) {
        assert!(!status.success());
        let log = cluster.log(victim);
        assert!(
            log.contains(&name),
            "{damage:?}: the error does not name {name}:\n{log}"
        );
    } else {
        let log = cluster.log(victim);
        assert!(
            log.contains(&name),
            "{damage:?}: the damage to {name} is not reported:\n{log}"
        );
        let applied = cluster.status(leader).expect("status").applied;
        cluster.wait_applied(victim, applied, Duration::from_secs(10));
        check_keys(cluster.redis(victim), 0..1_500);
    }
    cluster.stop_all();
}

#[test]
fn a_damaged_snapshot_is_never_silently_used() {
    a_damaged_snapshot_is_detected(Damage::FlippedBit);
}

#[test]
fn a_torn_snapshot_is_never_silently_used() {
    a_damaged_snapshot_is_detected(Damage::Torn);
}

/// Proves, with the default snapshot settings, that a follower killed while 200,000 pipelined
/// SETs go in comes back by InstallSnapshot (its metric counts the install, the leader's
/// counts chunks) and holds every key, while five checked clients run throughout (through
/// every node, the follower included) and their history is linearizable.
#[test]
fn a_follower_that_missed_200k_writes_installs_a_snapshot_under_a_checked_workload() {
    const BULK: u64 = 200_000;
    // Default thresholds (20,000 entries, a tail of 5,000); 256 KiB chunks so the install
    // takes many of them.
    let mut cluster = TestCluster::configure(3, "[snapshots]\nchunk_bytes = 262144\n");
    for node in cluster.ids() {
        cluster.restart(node);
    }
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let follower = cluster.ids().into_iter().find(|&n| n != leader).unwrap();
    cluster.kill_9(follower);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let start = Instant::now();
    let history = Arc::new(Mutex::new(Vec::new()));
    let until = start + Duration::from_secs(12);
    let supervisor = spawn_workload(&runtime, cluster.client_config(), start, until, &history);

    let bulk = Instant::now();
    write_keys_pipelined(cluster.redis(leader), 0..BULK, 1_000);
    println!("{BULK} pipelined SETs took {:?}", bulk.elapsed());
    let json = cluster.status_json(leader).expect("status");
    assert!(
        json["first_index"].as_u64().unwrap_or(0) > 100_000,
        "the leader compacted its log: {json}"
    );

    cluster.restart(follower);
    cluster.poll(
        Duration::from_secs(30),
        "the follower to install a snapshot",
        || (cluster.metric(follower, "snapshots_installed")? >= 1.0).then_some(()),
    );
    assert!(
        cluster
            .metric(leader, "snapshot_chunks_sent")
            .unwrap_or(0.0)
            >= 2.0
    );
    let applied = cluster.status(leader).expect("status").applied;
    cluster.wait_applied(follower, applied, Duration::from_secs(20));
    let log = cluster.log(follower);
    assert!(
        log.contains("installed a snapshot from the leader"),
        "no install in the follower's log:\n{log}"
    );

    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), supervisor).await })
        .expect("the workers finish")
        .expect("the supervisor finishes");
    let json = cluster.status_json(follower).expect("status");
    assert!(json["keys"].as_u64().unwrap_or(0) >= BULK, "{json}");
    // A sample of the bulk keys, read through the follower.
    for i in (0..BULK).step_by(9_973) {
        assert_eq!(
            resp_get(cluster.redis(follower), &format!("key{i}")),
            Some(format!("value{i}")),
            "key{i} through the follower"
        );
    }
    let ops = history.lock().expect("history lock").clone();
    check_final_state(&cluster, &runtime, ops, start);
    cluster.stop_all();
}

/// Runs `chorus snapshot` against the cluster's admin addresses; returns (success, stdout).
fn chorus_snapshot(cluster: &TestCluster) -> (bool, String) {
    let endpoints: Vec<String> = cluster
        .ids()
        .into_iter()
        .map(|node| cluster.addresses(node).admin.to_string())
        .collect();
    let output = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(["snapshot", "--timeout-secs", "10", "--endpoints"])
        .arg(endpoints.join(","))
        .output()
        .expect("run chorus snapshot");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

/// Proves that `chorus snapshot` makes every node snapshot below the thresholds and prints its
/// snapshot index, and that a node that does not answer is an error on its own line.
#[test]
fn chorus_snapshot_snapshots_every_node_and_reports_the_unreachable() {
    let mut cluster = TestCluster::configure(3, "");
    for node in cluster.ids() {
        cluster.restart(node);
    }
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    write_keys(cluster.redis(leader), 0..500);
    let applied = cluster.status(leader).expect("status").applied;
    for node in cluster.ids() {
        cluster.wait_applied(node, applied, Duration::from_secs(10));
        assert_eq!(cluster.metric(node, "snapshots_taken"), Some(0.0));
    }
    let (ok, output) = chorus_snapshot(&cluster);
    assert!(ok, "{output}");
    for node in cluster.ids() {
        let admin = cluster.addresses(node).admin.to_string();
        let line = output
            .lines()
            .find(|line| line.starts_with(&admin))
            .unwrap_or_else(|| panic!("no line for {admin}:\n{output}"));
        let index: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|field| field.parse().ok())
            .unwrap_or_else(|| panic!("no index in {line:?}"));
        assert!(index >= 500, "{line}");
        assert!(line.ends_with("ok"), "{line}");
        assert!(!snapshot_files(&cluster, node).is_empty());
    }

    let victim = cluster.ids().into_iter().find(|&n| n != leader).unwrap();
    cluster.kill_9(victim);
    let (ok, output) = chorus_snapshot(&cluster);
    assert!(!ok, "{output}");
    let admin = cluster.addresses(victim).admin.to_string();
    assert!(
        output
            .lines()
            .any(|line| line.starts_with(&admin) && line.contains("error")),
        "{output}"
    );
    assert!(output.contains("1 of 3 nodes did not snapshot"), "{output}");
    cluster.stop_all();
}
