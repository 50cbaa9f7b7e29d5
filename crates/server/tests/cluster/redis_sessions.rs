//! Exactly-once for plain Redis clients: redis-py, unmodified and with its default retry
//! policy, against a node whose write replies get lost, with and without session binding.

use std::process::Command;
use std::time::Duration;

use crate::basics::run_tool;
use crate::harness::TestCluster;

const STARTUP: Duration = Duration::from_secs(10);

/// Runs `scripts/redis_py_retry.py` against `port` and returns its JSON line.
fn run_retry_script(port: u16, mode: &str) -> serde_json::Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/cluster/scripts/redis_py_retry.py"
    );
    let (ok, text) = run_tool(
        Command::new("python3").args([script, &port.to_string(), mode]),
        Duration::from_secs(120),
    );
    assert!(ok, "redis_py_retry.py {mode} failed:\n{text}");
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {text}"))
}

fn integers(value: &serde_json::Value) -> Vec<i64> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|item| item.as_i64().expect("an integer"))
        .collect()
}

// Proves that a Redis connection bound to a session (`client_name="chorus-session:<uuid>"`,
// which redis-py re-sends on every reconnect) gets exactly-once writes from redis-py 8's
// default retry policy (Retry(ExponentialWithJitterBackoff(base=0.01, cap=1), retries=10) on
// ConnectionError and TimeoutError: reconnect, resend the command, or the whole pipeline).
// A proxy in front of a follower drops every third write reply after the write was applied:
// bound, each of 60 INCRs and 30 MULTI/EXEC pipelines takes effect once and every reply is the
// one the first attempt would have had. The control, the same run unbound, applies retried
// writes twice, which is what binding prevents. Needs python3 with redis-py; `.ci/run`
// installs it and sets CHORUS_REQUIRE_REDIS_PY.
#[test]
fn redis_py_default_retries_apply_each_write_once_with_session_binding() {
    let has_redis_py = Command::new("python3")
        .args(["-c", "import redis"])
        .status()
        .is_ok_and(|status| status.success());
    if !has_redis_py {
        assert!(
            std::env::var_os("CHORUS_REQUIRE_REDIS_PY").is_none(),
            "CHORUS_REQUIRE_REDIS_PY is set but python3 cannot import redis"
        );
        println!("skipped: redis-py not installed");
        return;
    }
    let mut ports = Vec::new();
    let mut clusters = Vec::new();
    for _ in 0..2 {
        let cluster = TestCluster::start(3);
        let leader = cluster.wait_for_leader(STARTUP);
        let follower = cluster
            .ids()
            .into_iter()
            .find(|&node| node != leader)
            .expect("three nodes");
        ports.push(cluster.redis(follower).port());
        clusters.push(cluster);
    }

    let bound = run_retry_script(ports[0], "bound");
    println!("bound: {bound}");
    assert!(
        bound["policy"].as_str().is_some_and(
            |policy| policy.contains("retries=10") && policy.contains("ConnectionError")
        ),
        "redis-py's default retry policy is in force: {bound}"
    );
    assert!(
        bound["dropped"].as_i64() >= Some(20),
        "replies were dropped: {bound}"
    );
    assert_eq!(integers(&bound["incr"]), (1..=60).collect::<Vec<_>>());
    assert_eq!(bound["n"].as_i64(), Some(60));
    assert_eq!(bound["t"].as_i64(), Some(30));
    assert_eq!(integers(&bound["log"]), (0..30).collect::<Vec<_>>());
    let transactions = bound["transactions"].as_array().expect("an array");
    for (i, replies) in transactions.iter().enumerate() {
        let i = i as i64;
        assert_eq!(integers(replies), vec![i + 1, i + 1], "transaction {i}");
    }

    let unbound = run_retry_script(ports[1], "unbound");
    println!("unbound: {unbound}");
    assert!(
        unbound["dropped"].as_i64() >= Some(20),
        "replies were dropped: {unbound}"
    );
    assert!(
        unbound["n"].as_i64() > Some(60) && unbound["t"].as_i64() > Some(30),
        "without binding, retried writes apply twice: {unbound}"
    );
}
