//! The hybrid scheme with real processes: a configuration group of three (Raft over the
//! views) and three data servers (primary, backup, spare) with durable logs. The primary
//! serves, the others redirect; SIGKILL of the primary under load (alone, and together with
//! the configuration group's leader): the backup serves again, nothing acknowledged is lost,
//! and the history is linearizable. How long the failover takes is printed here and measured
//! in docs/protocols/hybrid.md, never asserted.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus_resp::Frame;

use crate::faults::{check_final_state, spawn_workload};
use crate::harness::{Resp, TestCluster};
use crate::pb::{Probe, runtime};

const STARTUP: Duration = Duration::from_secs(15);

/// The configuration group's members in a cluster of three data servers.
const GROUP: [u64; 3] = [4, 5, 6];

/// The configuration group's leader, as the data servers hear it.
fn config_leader(cluster: &TestCluster) -> u64 {
    cluster.poll(STARTUP, "a configuration leader", || {
        GROUP.into_iter().find(|&node| {
            cluster
                .status_json(node)
                .is_some_and(|status| status["role"] == "configuration-leader")
        })
    })
}

// Proves the runtime's basic promise: `protocol = "hybrid"` brings up a serving primary with
// a backup (views of two), which takes RESP writes and reads; the backup and the spare answer
// with Redis Cluster's `MOVED 0 <host>:<port>` naming the primary; every node's /status shows
// the epoch, the view, the lease state and the configuration leader.
#[test]
fn a_hybrid_cluster_serves_on_its_primary_and_the_others_redirect() {
    let cluster = TestCluster::start_hybrid(3, "");
    let (epoch, primary, backups) = cluster.wait_for_hybrid_view(0, 2, STARTUP);
    assert_eq!(backups.len(), 1, "views of two by default");
    let backup = backups[0];
    let spare = cluster
        .servers()
        .into_iter()
        .find(|&node| node != primary && node != backup)
        .expect("three data servers");
    let mut client = Resp::connect(cluster.redis(primary));
    assert_eq!(client.call(&["SET", "k", "v"]), Frame::simple("OK"));
    assert_eq!(client.call(&["GET", "k"]), Frame::bulk("v"));
    let moved = format!("MOVED 0 {}", cluster.redis(primary));
    for node in [backup, spare] {
        for request in [&["SET", "k", "w"][..], &["GET", "k"][..]] {
            match Resp::connect(cluster.redis(node)).call(request) {
                Frame::Error(text) => assert_eq!(text, moved, "{request:?} through node {node}"),
                other => panic!("{request:?} through node {node}: {other:?}"),
            }
        }
    }
    assert_eq!(client.call(&["GET", "k"]), Frame::bulk("v"));
    let leader = config_leader(&cluster);
    let status = cluster.status_json(primary).expect("the primary answers");
    let hybrid = &status["hybrid"];
    assert_eq!(status["protocol"], "hybrid");
    assert_eq!(status["role"], "primary");
    assert_eq!(hybrid["serving"], true);
    assert!(
        hybrid["lease_ms"][backup.to_string()].as_u64().is_some(),
        "the primary shows its lease from the backup: {status}"
    );
    for node in [primary, backup, spare] {
        let status = cluster.hybrid_status(node).expect("the server answers");
        assert_eq!(status.epoch, epoch, "node {node}");
        assert!(status.active, "node {node}");
        assert_eq!(status.primary, Some(primary), "node {node}");
        assert_eq!(status.config_leader, Some(leader), "node {node}");
    }
    assert_eq!(
        cluster.hybrid_status(backup).expect("backup").role,
        "backup"
    );
    assert_eq!(cluster.hybrid_status(spare).expect("spare").role, "spare");
    for node in GROUP {
        // A follower learns the commit point with the leader's next heartbeat.
        let status = cluster.poll(STARTUP, "a configuration node at the epoch", || {
            cluster
                .hybrid_status(node)
                .filter(|status| status.epoch >= epoch)
        });
        assert!(status.role.starts_with("configuration-"), "{}", status.role);
    }
}

/// Under load: waits for a full view, kills its primary (and, if asked, the configuration
/// leader at the same moment), and checks that the backup serves a later view, that nothing
/// acknowledged was lost and that the history is linearizable. Prints how long after the kill
/// the first write sent after it was acknowledged.
fn kill_the_primary_under_load(also_the_config_leader: bool) {
    let mut cluster = TestCluster::start_hybrid(3, "");
    let (epoch, primary, backups) = cluster.wait_for_hybrid_view(0, 2, STARTUP);
    let runtime = runtime();
    let start = Instant::now();
    let until = start + Duration::from_secs(8);
    let history = Arc::new(Mutex::new(Vec::new()));
    let supervisor = spawn_workload(&runtime, cluster.client_config(), start, until, &history);
    let probe = Probe::start(&runtime, &cluster);
    probe.wait_serving(&cluster);
    let settle = start + Duration::from_millis(1_500);
    cluster.poll(Duration::from_secs(10), "the kill", || {
        (Instant::now() >= settle).then_some(())
    });
    let leader = also_the_config_leader.then(|| config_leader(&cluster));
    let killed_at = probe.now();
    cluster.kill_9(primary);
    if let Some(leader) = leader {
        cluster.kill_9(leader);
    }
    let dead_at = probe.now();
    let (new_epoch, new_primary, _) = cluster.wait_for_hybrid_view(epoch, 1, STARTUP);
    assert!(
        backups.contains(&new_primary),
        "only the backup of the last active view may be promoted, not {new_primary}"
    );
    let acked = cluster.poll(
        Duration::from_secs(20),
        "a write after the failover",
        || probe.first_ack_sent_after(dead_at),
    );
    println!(
        "killed primary {primary} of epoch {epoch}{}; backup {new_primary} serves epoch \
         {new_epoch}; first acknowledged write {:?} after the kill",
        leader.map_or(String::new(), |l| format!(" and configuration leader {l}")),
        Duration::from_nanos(acked - killed_at)
    );
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), supervisor).await })
        .expect("the workers finish")
        .expect("the supervisor finishes");
    let last_probe = probe.stop(&runtime);
    cluster.wait_for_hybrid_view(epoch, 2, STARTUP);
    let ops = history.lock().expect("history lock").clone();
    check_final_state(&cluster, &runtime, ops, start);
    let value = runtime.block_on(async { cluster.client().get("probe").await });
    let value: u64 = value
        .expect("read the probe")
        .and_then(|v| String::from_utf8_lossy(&v).parse().ok())
        .expect("the probe key holds a number");
    assert!(
        value >= last_probe,
        "acknowledged probe write {last_probe} was lost (the key holds {value})"
    );
}

// Issue 13: SIGKILL of the primary under load: the backup of the last active view serves, no
// acknowledged write is lost, and everything the clients observed is linearizable.
#[test]
fn killing_the_hybrid_primary_under_load_the_backup_serves_and_nothing_is_lost() {
    kill_the_primary_under_load(false);
}

// Issue 13: the same with the configuration group's leader SIGKILLed at the same moment: the
// group elects another leader and the failover completes (no single point of failure).
#[test]
fn killing_the_primary_and_the_configuration_leader_at_once_still_fails_over() {
    kill_the_primary_under_load(true);
}

// Measures, over ten tries, the time from SIGKILLing the primary to the first write the new
// primary acknowledges, while a client writes continuously (the write waits for the view to
// be active and back at `min_replicas`: the spare caught up and joined). Prints each try, the
// median and the maximum; asserts only that every failover completes. The killed server is
// restarted each time and rejoins as a spare.
// Run: cargo test -p chorus-server --test cluster measure_hybrid_failover_time -- --ignored \
//        --nocapture
#[test]
#[ignore = "a measurement, not a check; run it explicitly"]
fn measure_hybrid_failover_time() {
    let mut cluster = TestCluster::start_hybrid(3, "");
    let runtime = runtime();
    let probe = Probe::start(&runtime, &cluster);
    let mut times = Vec::new();
    let mut epoch = 0;
    for attempt in 1..=10 {
        let (old_epoch, primary, _) = cluster.wait_for_hybrid_view(epoch, 2, STARTUP);
        probe.wait_serving(&cluster);
        let killed_at = probe.now();
        cluster.kill_9(primary);
        let dead_at = probe.now();
        let acked = cluster.poll(
            Duration::from_secs(20),
            "a write after the failover",
            || probe.first_ack_sent_after(dead_at),
        );
        let elapsed = Duration::from_nanos(acked - killed_at);
        let (new_epoch, new_primary, _) = cluster.wait_for_hybrid_view(old_epoch, 2, STARTUP);
        println!(
            "try {attempt}: killed primary {primary} (epoch {old_epoch}), node {new_primary} \
             serves in epoch {new_epoch}; first acknowledged write after {elapsed:?}"
        );
        times.push(elapsed);
        epoch = new_epoch - 1;
        cluster.restart(primary);
    }
    let _ = probe.stop(&runtime);
    times.sort();
    println!(
        "hybrid failover over {} tries: median {:?}, max {:?}, min {:?}",
        times.len(),
        times[times.len() / 2],
        times[times.len() - 1],
        times[0]
    );
}
