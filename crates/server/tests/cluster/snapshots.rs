//! Snapshots and log compaction end to end: a cluster with a tiny snapshot threshold compacts
//! under load, restarts from its snapshots, catches a lagging follower up by InstallSnapshot,
//! and refuses (or works around) a damaged snapshot file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::BytesMut;
use chorus_resp::{Frame, encode_request};

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

/// `SET key{i} value{i}` for `i` in `range`, pipelined in batches through `address`.
fn write_keys(address: SocketAddr, range: std::ops::Range<u64>) {
    let mut resp = Resp::connect(address);
    let keys: Vec<u64> = range.collect();
    for batch in keys.chunks(100) {
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

/// A counter of the node's `/metrics`, if it answers.
fn metric(cluster: &TestCluster, node: u64, name: &str) -> Option<f64> {
    let admin = cluster.addresses(node).admin;
    let mut response = ureq::get(format!("http://{admin}/metrics")).call().ok()?;
    let text = response.body_mut().read_to_string().ok()?;
    text.lines()
        .find(|line| line.starts_with(&format!("chorus_{name}")) && !line.starts_with('#'))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
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
    assert!(metric(&cluster, leader, "snapshots_taken").unwrap_or(0.0) >= 1.0);
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
    let taken = metric(&cluster, leader, "snapshots_taken").unwrap_or(0.0);
    let admin = cluster.addresses(leader).admin;
    ureq::post(format!("http://{admin}/snapshot"))
        .send_empty()
        .expect("POST /snapshot");
    cluster.poll(Duration::from_secs(5), "a forced snapshot", || {
        (metric(&cluster, leader, "snapshots_taken")? > taken).then_some(())
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
        || (metric(&cluster, follower, "snapshots_installed")? >= 1.0).then_some(()),
    );
    let applied = cluster.status(leader).expect("status").applied;
    cluster.wait_applied(follower, applied, Duration::from_secs(10));
    assert!(metric(&cluster, leader, "snapshot_chunks_sent").unwrap_or(0.0) >= 1.0);
    // Reads go through the follower (forwarded for the read index, served from its state).
    check_keys(cluster.redis(follower), 0..3_000);
    let json = cluster.status_json(follower).expect("status");
    assert_eq!(json["keys"].as_u64(), Some(3_000), "{json}");
    cluster.stop_all();
}

#[test]
fn a_damaged_snapshot_is_never_silently_used() {
    let mut cluster = start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    write_keys(cluster.redis(leader), 0..1_500);
    let victim = cluster.ids().into_iter().find(|&n| n != leader).unwrap();
    cluster.poll(Duration::from_secs(10), "a snapshot on the victim", || {
        (!snapshot_files(&cluster, victim).is_empty()).then_some(())
    });
    cluster.kill_9(victim);
    let newest = snapshot_files(&cluster, victim).pop().expect("a snapshot");
    let length = std::fs::metadata(&newest).expect("stat").len();
    flip_bit(&newest, length / 2, 3);
    let name = newest.file_name().unwrap().to_string_lossy().into_owned();
    cluster.restart(victim);
    // Either the node refuses to start, naming the file, or it starts from an older valid
    // snapshot (or the leader's) — and then it must hold every key.
    if let Some(status) = cluster.wait_exit(victim, Duration::from_secs(3)) {
        assert!(!status.success());
        let log = cluster.log(victim);
        assert!(
            log.contains(&name),
            "the error does not name {name}:\n{log}"
        );
    } else {
        let log = cluster.log(victim);
        assert!(
            log.contains(&name),
            "the damage to {name} is not reported:\n{log}"
        );
        let applied = cluster.status(leader).expect("status").applied;
        cluster.wait_applied(victim, applied, Duration::from_secs(10));
        check_keys(cluster.redis(victim), 0..1_500);
    }
    cluster.stop_all();
}
