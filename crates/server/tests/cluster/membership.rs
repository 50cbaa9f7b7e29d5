//! Membership changes on real processes, under client load, with the history checked
//! linearizable: every node of a cluster replaced one at a time, a cluster grown from three
//! voters to five and shrunk back, and leadership handed to each node in turn. New nodes
//! start empty with `join` in their configuration; every change goes through `chorus admin`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::faults::{check_final_state, spawn_workload};
use crate::harness::TestCluster;

const STARTUP: Duration = Duration::from_secs(10);
/// How long one membership operation may take to go through, retries included.
const CHANGE: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Runs `chorus admin <arguments>` through `voters` until it succeeds or `done` holds (a
/// change whose answer was lost may have happened).
fn admin_until(cluster: &TestCluster, voters: &[u64], arguments: &[&str], done: impl Fn() -> bool) {
    cluster.poll(CHANGE, &format!("chorus admin {arguments:?}"), || {
        let (ok, output) = cluster.admin(voters, arguments);
        if ok || done() {
            return Some(());
        }
        eprintln!("chorus admin {arguments:?}: {output}");
        std::thread::sleep(Duration::from_millis(200));
        None
    });
}

/// The voters and learners of the agreed leader among `voters`, if there is one.
fn leader_membership(cluster: &TestCluster, voters: &[u64]) -> Option<(Vec<u64>, Vec<u64>)> {
    let leader = cluster.leader_among(voters)?;
    cluster.membership(leader)
}

/// Starts node `new` (configured to join), waits until the leader lists it as a learner, and
/// promotes it; returns the new voters.
fn add_voter(cluster: &mut TestCluster, voters: &[u64], new: u64) -> Vec<u64> {
    cluster.restart(new);
    cluster.poll(CHANGE, &format!("node {new} to join as a learner"), || {
        let (_, learners) = leader_membership(cluster, voters)?;
        learners.contains(&new).then_some(())
    });
    let mut grown = voters.to_vec();
    grown.push(new);
    grown.sort_unstable();
    admin_until(cluster, voters, &["promote", &new.to_string()], || {
        leader_membership(cluster, &grown).is_some()
    });
    grown
}

/// Removes `old` from the voters, then kills its process; returns the remaining voters once
/// they agree on a leader.
fn remove_voter(cluster: &mut TestCluster, voters: &[u64], old: u64) -> Vec<u64> {
    let remaining: Vec<u64> = voters.iter().copied().filter(|&n| n != old).collect();
    admin_until(cluster, voters, &["remove", &old.to_string()], || {
        leader_membership(cluster, &remaining).is_some()
    });
    cluster.kill_9(old);
    cluster.poll(STARTUP, "a leader of the remaining voters", || {
        cluster.leader_among(&remaining)
    });
    remaining
}

/// Runs the workload for `workload` while `changes` runs, then reads every key back and
/// checks the history.
fn under_load(
    cluster: &mut TestCluster,
    workload: Duration,
    changes: impl FnOnce(&mut TestCluster),
) {
    let runtime = runtime();
    let start = Instant::now();
    let history = Arc::new(Mutex::new(Vec::new()));
    let supervisor = spawn_workload(
        &runtime,
        cluster.client_config(),
        start,
        start + workload,
        &history,
    );
    std::thread::sleep(Duration::from_millis(500));
    changes(cluster);
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), supervisor).await })
        .expect("the workers finish")
        .expect("the supervisor finishes");
    let ops = history.lock().expect("history lock").clone();
    check_final_state(cluster, &runtime, ops, start);
}

// Proves that replacing every node of a three-node cluster, one at a time (a new node joins
// empty, catches up as a learner, is promoted, then an old one is removed and killed, the
// leader included when its turn comes), loses no acknowledged write and keeps the clients'
// history linearizable.
#[test]
fn a_rolling_replacement_of_every_node_under_load_loses_no_acknowledged_write() {
    let mut cluster = TestCluster::start_growable(3, 6);
    let founders = [1, 2, 3];
    cluster.poll(STARTUP, "a leader", || cluster.leader_among(&founders));
    under_load(&mut cluster, Duration::from_secs(8), |cluster| {
        let mut voters = founders.to_vec();
        for old in founders {
            voters = add_voter(cluster, &voters, old + 3);
            voters = remove_voter(cluster, &voters, old);
        }
        assert_eq!(voters, vec![4, 5, 6]);
    });
    for node in [4, 5, 6] {
        let (voters, learners) = cluster.membership(node).expect("a status");
        assert_eq!((voters, learners), (vec![4, 5, 6], vec![]), "node {node}");
    }
}

// Proves that growing a cluster from three voters to five and shrinking it back to three
// (removing the leader first) under load loses no acknowledged write and keeps the history
// linearizable.
#[test]
fn growing_three_to_five_and_shrinking_back_under_load_stays_linearizable() {
    let mut cluster = TestCluster::start_growable(3, 5);
    let founders = [1, 2, 3];
    cluster.poll(STARTUP, "a leader", || cluster.leader_among(&founders));
    under_load(&mut cluster, Duration::from_secs(7), |cluster| {
        let mut voters = add_voter(cluster, &founders, 4);
        voters = add_voter(cluster, &voters, 5);
        assert_eq!(voters, vec![1, 2, 3, 4, 5]);
        let leader = cluster
            .leader_among(&voters)
            .expect("a leader of five voters");
        voters = remove_voter(cluster, &voters, leader);
        let other = *voters.last().expect("four voters");
        voters = remove_voter(cluster, &voters, other);
        assert_eq!(voters.len(), 3);
    });
}

/// Hands leadership to `target` through `chorus admin`, retrying until it leads.
fn transfer_to(cluster: &TestCluster, voters: &[u64], target: u64) {
    admin_until(
        cluster,
        voters,
        &["transfer-leader", &target.to_string()],
        || cluster.leader_among(voters) == Some(target),
    );
    cluster.poll(STARTUP, &format!("node {target} to lead"), || {
        (cluster.leader_among(voters) == Some(target)).then_some(())
    });
}

// Proves that handing leadership to each node in turn under load keeps the history
// linearizable and loses no acknowledged write, and that the target leads after each transfer.
#[test]
fn leadership_transferred_to_each_node_in_turn_under_load_stays_linearizable() {
    let mut cluster = TestCluster::start(3);
    transfer_in_turn_under_load(&mut cluster);
}

// The same with lease reads on (`[reads] lease = true`): a leader's client connections answer
// lease reads on their own threads, through a gate the driver closes before it hands
// leadership on, so no read answered by an old leader misses a write of the new one.
#[test]
fn leadership_transferred_in_turn_under_load_with_lease_reads_stays_linearizable() {
    let mut cluster = TestCluster::configure(3, "[reads]\nlease = true\n");
    for node in 1..=3 {
        cluster.restart(node);
    }
    transfer_in_turn_under_load(&mut cluster);
}

/// Hands leadership to each of the three nodes in turn while the workload runs, and checks
/// the history.
fn transfer_in_turn_under_load(cluster: &mut TestCluster) {
    let voters = [1, 2, 3];
    cluster.poll(STARTUP, "a leader", || cluster.leader_among(&voters));
    under_load(cluster, Duration::from_secs(6), |cluster| {
        let mut transfers = 0;
        for target in [1, 2, 3, 1, 2, 3] {
            if cluster.leader_among(&voters) == Some(target) {
                continue;
            }
            transfer_to(cluster, &voters, target);
            transfers += 1;
        }
        assert!(transfers >= 4, "only {transfers} transfers");
    });
}

// Measures the write pause a leadership transfer causes: four writers keep writing through
// the native client while leadership moves ten times; for each transfer, the pause is the
// longest gap between two consecutive acknowledged writes from just before the request to
// 300 ms after the target leads. Prints each pause and the median. A measurement, not a
// test: run it with
// `cargo test -p chorus-server --test cluster -- --ignored --nocapture transfer_write_pause`.
#[test]
#[ignore = "a measurement: prints the write pause of ten leadership transfers"]
fn transfer_write_pause_median_of_ten() {
    let cluster = TestCluster::start(3);
    let voters = [1, 2, 3];
    cluster.poll(STARTUP, "a leader", || cluster.leader_among(&voters));
    let runtime = runtime();
    let acked: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Instant::now() + Duration::from_secs(120);
    let mut writers = Vec::new();
    for writer in 0..4 {
        let mut client = cluster.client();
        let acked = acked.clone();
        writers.push(runtime.spawn(async move {
            let mut n = 0u64;
            while Instant::now() < stop {
                n += 1;
                let key = format!("w{writer}");
                if client.put(key, n.to_string()).await.is_ok() {
                    acked.lock().expect("lock").push(Instant::now());
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(1));
    let mut pauses = Vec::new();
    let mut target = 1;
    while pauses.len() < 10 {
        let leader = cluster.leader_among(&voters).unwrap_or(0);
        target = target % 3 + 1;
        if target == leader {
            continue;
        }
        let from = Instant::now();
        transfer_to(&cluster, &voters, target);
        std::thread::sleep(Duration::from_millis(300));
        let to = Instant::now();
        let times = acked.lock().expect("lock").clone();
        let before = times
            .iter()
            .rev()
            .find(|&&t| t < from)
            .copied()
            .unwrap_or(from);
        let mut window: Vec<Instant> = times
            .into_iter()
            .filter(|&t| t >= from && t <= to)
            .collect();
        window.insert(0, before);
        window.push(to);
        let pause = window
            .windows(2)
            .map(|pair| pair[1] - pair[0])
            .max()
            .unwrap_or_default();
        println!(
            "transfer {} to node {target}: write pause {pause:?}",
            pauses.len() + 1
        );
        pauses.push(pause);
    }
    for writer in writers {
        writer.abort();
    }
    pauses.sort_unstable();
    let median = (pauses[4] + pauses[5]) / 2;
    println!("median write pause over 10 leadership transfers: {median:?} (all: {pauses:?})");
}
