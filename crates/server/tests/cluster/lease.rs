//! Lease reads (`[reads] lease = true`, what `chorus up --lease-reads` writes; thesis §6.4.1)
//! on real processes: operators see the lease in `/status`, INFO and `/metrics`, and a leader
//! frozen past an election (SIGSTOP, as a paused VM or a long stall would be) does not answer
//! from its old lease when it resumes, because its driver sees that its clock fell behind.

use std::time::{Duration, Instant};

use chorus_resp::Frame;
use nix::sys::signal::Signal;

use crate::harness::{Resp, TestCluster, resp_set};

const STARTUP: Duration = Duration::from_secs(10);

/// Starts `count` Raft nodes with lease reads on.
fn start_leased(count: usize) -> TestCluster {
    let mut cluster = TestCluster::configure(count, "[reads]\nlease = true\n");
    for node in 1..=count as u64 {
        cluster.restart(node);
    }
    cluster
}

/// Starts three Raft nodes with lease reads on and the injected bug `bug` (TESTING ONLY).
#[cfg(feature = "inject-bugs")]
fn start_leased_with_bug(bug: &str) -> TestCluster {
    let mut cluster = TestCluster::configure(3, "[reads]\nlease = true\n");
    for node in cluster.ids() {
        // A top-level key, so it goes before the tables.
        let path = cluster.root().join(format!("node-{node}.toml"));
        let text = std::fs::read_to_string(&path).expect("a node configuration");
        let text = format!("inject_bugs = [\"{bug}\"]\n{text}");
        std::fs::write(&path, text).expect("a node configuration");
        cluster.restart(node);
    }
    cluster
}

/// The INFO field `name`'s value on `node`.
fn info_field(cluster: &TestCluster, node: u64, name: &str) -> Option<String> {
    let Frame::Bulk(Some(text)) = Resp::connect(cluster.redis(node)).call(&["INFO", "all"]) else {
        return None;
    };
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}:")).map(str::to_string))
}

// Operators can see the lease: with lease reads on, the leader's `/status` says it holds one
// (with the ticks left), each follower's says it holds none, and INFO says the same; reads
// served through the leader's lease are counted apart from ReadIndex reads, in INFO and in
// `/metrics`.
#[test]
fn with_lease_reads_the_leader_reports_holding_the_lease_and_the_followers_do_not() {
    let cluster = start_leased(3);
    let leader = cluster.wait_for_leader(STARTUP);
    resp_set(cluster.redis(leader), "k", "v");
    let status = cluster.poll(STARTUP, "the leader to hold a lease", || {
        let status = cluster.status_json(leader)?;
        (status["lease_held"] == true).then_some(status)
    });
    assert_eq!(status["lease_reads"], true, "{status}");
    let left = status["lease_ticks_left"].as_u64().expect("ticks left");
    // The default timing: 15 ticks of election timeout give an 11-tick lease.
    assert!((1..=11).contains(&left), "{status}");
    for follower in cluster.ids().into_iter().filter(|&node| node != leader) {
        let status = cluster.status_json(follower).expect("a follower answers");
        assert_eq!(status["role"], "follower", "{status}");
        assert_eq!(status["lease_reads"], true, "{status}");
        assert_eq!(status["lease_held"], false, "{status}");
        assert!(status.get("lease_ticks_left").is_none(), "{status}");
        assert_eq!(
            info_field(&cluster, follower, "lease_held").as_deref(),
            Some("0")
        );
    }
    assert_eq!(
        info_field(&cluster, leader, "lease_reads").as_deref(),
        Some("1")
    );

    // Reads through the leader: bounded, since a read that finds the lease lapsing for a
    // moment (a late driver on a busy machine) goes through ReadIndex instead.
    let mut connection = Resp::connect(cluster.redis(leader));
    cluster.poll(STARTUP, "a read served from the lease", || {
        assert_eq!(
            connection.call(&["GET", "k"]),
            Frame::Bulk(Some("v".into()))
        );
        (cluster.metric(leader, "lease_reads")? >= 1.0).then_some(())
    });
    let served: u64 = info_field(&cluster, leader, "chorus_reads")
        .and_then(|value| value.parse().ok())
        .expect("INFO counts reads");
    let leased: u64 = info_field(&cluster, leader, "chorus_lease_reads")
        .and_then(|value| value.parse().ok())
        .expect("INFO counts lease reads");
    let by_read_index: u64 = info_field(&cluster, leader, "chorus_read_index_reads")
        .and_then(|value| value.parse().ok())
        .expect("INFO counts ReadIndex reads");
    assert!(leased >= 1);
    assert_eq!(served, leased + by_read_index);
}

/// A leader that every running node other than `old` agrees on, in one term.
fn leader_other_than(cluster: &TestCluster, old: u64) -> Option<u64> {
    let statuses: Vec<_> = cluster
        .ids()
        .into_iter()
        .filter(|&node| node != old)
        .filter_map(|node| cluster.status(node).map(|status| (node, status)))
        .collect();
    let (leader, status) = statuses
        .iter()
        .find(|(_, status)| status.role == "leader")?;
    statuses
        .iter()
        .all(|(_, other)| other.term == status.term && other.leader == Some(*leader))
        .then_some(*leader)
}

/// What the old leader answered to `GET k` after it resumed.
#[derive(Debug, Default)]
struct Answers {
    /// The value written before the pause: a stale read.
    stale: usize,
    /// The value written during the pause.
    fresh: usize,
    /// Errors (no leader, a timeout...) and reads answered by no reply in time.
    other: usize,
}

/// Writes `k = before` through the leader once it holds a lease, freezes it with SIGSTOP until
/// the others elected a leader and `k = after` went in through that one (longer than an election
/// timeout, and than the old lease), then resumes it and reads `k` through it at once (a GET
/// queued on a connection opened before the pause, so that it is there the instant the node
/// wakes) and again and again for a second. Returns the old leader and its answers.
fn pause_the_leader_then_read_through_it(
    cluster: &TestCluster,
    before: &str,
    after: &str,
) -> (u64, Answers) {
    let old = cluster.wait_for_leader(STARTUP);
    resp_set(cluster.redis(old), "k", before);
    cluster.poll(STARTUP, "the leader to hold a lease", || {
        (cluster.status_json(old)?["lease_held"] == true).then_some(())
    });
    let mut reader = Resp::connect(cluster.redis(old));
    reader.set_read_timeout(Duration::from_millis(1_500));
    cluster.signal(old, Signal::SIGSTOP);
    let new = cluster.poll(STARTUP, "a leader among the others", || {
        leader_other_than(cluster, old)
    });
    resp_set(cluster.redis(new), "k", after);
    reader.send(&["GET", "k"]);
    cluster.signal(old, Signal::SIGCONT);

    let mut answers = Answers::default();
    let until = Instant::now() + Duration::from_secs(1);
    loop {
        match reader.try_reply() {
            Ok(Some(Frame::Bulk(Some(value)))) if value == before => answers.stale += 1,
            Ok(Some(Frame::Bulk(Some(value)))) if value == after => answers.fresh += 1,
            Ok(Some(Frame::Error(_))) => answers.other += 1,
            Ok(Some(other)) => panic!("GET k through the old leader: {other:?}"),
            // No reply in time, or the connection closed: start over on a new one.
            Ok(None) | Err(_) => {
                answers.other += 1;
                reader = Resp::connect(cluster.redis(old));
                reader.set_read_timeout(Duration::from_millis(1_500));
            }
        }
        if Instant::now() >= until {
            return (old, answers);
        }
        reader.send(&["GET", "k"]);
    }
}

// Thesis §6.4.1's lease rests on clocks: a leader paused past an election timeout resumes
// with its tick count where it stopped, so by its own count the lease still runs while another
// node leads and has taken writes. The runtime's driver checks its lateness before every
// input, tick and Ready and ends the lease (`Host::clock_behind`), so the old leader never
// answers the value it held before the pause: it answers the new one (once it hears of the
// new leader) or an error.
#[test]
fn a_leader_paused_past_an_election_never_serves_a_stale_read_when_it_resumes() {
    let cluster = start_leased(3);
    let (old, answers) = pause_the_leader_then_read_through_it(&cluster, "v1", "v2");
    assert_eq!(
        answers.stale, 0,
        "the resumed old leader served v1: {answers:?}"
    );
    eprintln!("the resumed old leader answered: {answers:?}");
    // And it serves again, the new value, as a follower.
    cluster.poll(STARTUP, "the old leader to serve v2", || {
        (Resp::connect(cluster.redis(old)).call(&["GET", "k"]) == Frame::Bulk(Some("v2".into())))
            .then_some(())
    });
}

// The test above bites: with the driver's lateness ignored (the injected bug
// `lease-ignores-lateness`, TESTING ONLY), a resumed old leader answers from the lease its tick
// count says it still holds. Whether the first GET reaches its driver before the new
// leader's messages do is a race (7 of 10 rounds served a stale value when this was
// measured), so the pause is repeated, on the same cluster, until one round shows it: eight
// rounds miss it only once in ~15,000 runs.
#[cfg(feature = "inject-bugs")]
#[test]
fn the_injected_lateness_bug_serves_a_stale_read_from_a_resumed_leader() {
    let cluster = start_leased_with_bug("lease-ignores-lateness");
    let caught = (0..8).find(|round| {
        let before = format!("v{}", 2 * round + 1);
        let after = format!("v{}", 2 * round + 2);
        let (_, answers) = pause_the_leader_then_read_through_it(&cluster, &before, &after);
        eprintln!("round {round}: {answers:?}");
        answers.stale > 0
    });
    assert!(caught.is_some(), "eight paused leaders, and no stale read");
}

/// Hands leadership from `old` (holding its lease) to another node over the admin endpoint
/// (which answers once `old` knows that node leads), writes `k = after` through that node,
/// and reads `k` through `old` at once, on a connection opened before. Returns the answer and how many reads `old`
/// answered from a lease meanwhile (the connections answer lease reads themselves, through the
/// gate the driver publishes: a node that handed leadership on must answer none).
fn transfer_then_read_through_the_old_leader(
    cluster: &TestCluster,
    before: &str,
    after: &str,
) -> (Option<Frame>, f64) {
    let old = cluster.wait_for_leader(STARTUP);
    resp_set(cluster.redis(old), "k", before);
    cluster.poll(STARTUP, "the leader to hold a lease", || {
        (cluster.status_json(old)?["lease_held"] == true).then_some(())
    });
    let target = cluster
        .ids()
        .into_iter()
        .find(|&node| node != old)
        .expect("another node");
    let mut reader = Resp::connect(cluster.redis(old));
    reader.set_read_timeout(Duration::from_millis(1_500));
    let lease_reads = cluster.metric(old, "lease_reads").unwrap_or(0.0);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let admin = cluster.addresses(old).admin;
    let response = agent
        .post(format!("http://{admin}/admin/transfer-leader"))
        .header("content-type", "application/json")
        .send(format!("{{\"id\":{target}}}"))
        .expect("the admin endpoint answers");
    assert_eq!(response.status().as_u16(), 200, "the transfer to {target}");
    resp_set(cluster.redis(target), "k", after);
    let answer = reader.call(&["GET", "k"]);
    let served = cluster.metric(old, "lease_reads").unwrap_or(0.0) - lease_reads;
    (Some(answer), served)
}

// A leadership transfer skips the followers' promise that a lease rests on (the target's
// election may win at once), so the old leader forfeits its lease before the message that
// starts that election leaves. Its client connections answer lease reads on their own
// threads, through a gate the driver publishes before any message leaves: after the transfer
// the old leader answers reads through the new leader, never from its old lease, and never
// the value from before a write the new leader acknowledged.
#[test]
fn after_a_transfer_the_old_leader_answers_no_read_from_its_lease() {
    let cluster = start_leased(3);
    for round in 0..3 {
        let before = format!("v{}", 2 * round + 1);
        let after = format!("v{}", 2 * round + 2);
        let (answer, served) = transfer_then_read_through_the_old_leader(&cluster, &before, &after);
        assert_eq!(
            answer,
            Some(Frame::Bulk(Some(after.clone().into()))),
            "round {round}: the old leader's answer after the transfer"
        );
        assert_eq!(served, 0.0, "round {round}: lease reads by the old leader");
    }
}

// The test above bites: with a gate that only ever moves its deadline forward (the injected
// bug `lease-gate-only-extends`, TESTING ONLY), the old leader's connections go on answering
// from the lease it forfeited, for what is left of it after the transfer (in 4 of 4 rounds when
// this was written, run alone and with the suite). Whether that answer is also stale (the value
// from before the new leader's write) is a race with the new leader's commit reaching the old
// one: 4 of 4 rounds run alone, 0 of 4 with the whole suite running in parallel.
#[cfg(feature = "inject-bugs")]
#[test]
fn the_injected_gate_bug_answers_from_a_forfeited_lease_after_a_transfer() {
    let cluster = start_leased_with_bug("lease-gate-only-extends");
    let mut stale = 0;
    let mut caught = 0;
    for round in 0..4 {
        let before = format!("v{}", 2 * round + 1);
        let after = format!("v{}", 2 * round + 2);
        let (answer, served) = transfer_then_read_through_the_old_leader(&cluster, &before, &after);
        eprintln!("round {round}: {answer:?}, {served} lease reads by the old leader");
        stale += usize::from(answer == Some(Frame::Bulk(Some(before.into()))));
        caught += usize::from(served > 0.0);
    }
    eprintln!("stale reads: {stale} of 4; lease reads by an old leader in {caught} of 4");
    assert!(
        caught > 0,
        "four transfers, and no lease read by an old leader"
    );
}
