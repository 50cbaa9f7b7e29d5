//! Primary-backup with real processes: a view service and three servers (primary, backup,
//! spare), the primary SIGKILLed under load, and the redirect a RESP client gets from a server
//! that is not the primary.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus_resp::Frame;

use crate::basics::{on_path, run_tool};
use chorus_check::history::Operation;

use crate::faults::{check_final_state, spawn_workload};
use crate::harness::{Resp, TestCluster};

const STARTUP: Duration = Duration::from_secs(10);

/// Acknowledged probe writes kept; beyond this the probe stops recording (a test writes far
/// fewer).
const PROBE_ACKS_MAX: usize = 1_000_000;

/// One client writing an increasing counter to its own key as fast as it can, recording when
/// each acknowledged write was sent and acknowledged: the stopwatch of a failover. Its attempts
/// are short and its backoff small, so what it measures is the cluster's failover, not the
/// client's patience.
pub(crate) struct Probe {
    epoch: Instant,
    /// (sent, acknowledged, value), nanoseconds since `epoch`, in order.
    acks: Arc<Mutex<Vec<(u64, u64, u64)>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Probe {
    pub(crate) fn start(runtime: &tokio::runtime::Runtime, cluster: &TestCluster) -> Probe {
        let epoch = Instant::now();
        let acks = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut config = cluster.client_config();
        config.attempt_timeout = Duration::from_millis(300);
        config.call_timeout = Duration::from_secs(30);
        config.backoff_min = Duration::from_millis(5);
        config.backoff_max = Duration::from_millis(20);
        let task = {
            let acks = acks.clone();
            let stop = stop.clone();
            runtime.spawn(async move {
                let mut client = chorus_client::Client::new(config).expect("endpoints");
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let sent = epoch.elapsed().as_nanos() as u64;
                    if client.put("probe", n.to_string()).await.is_ok() {
                        let acked = epoch.elapsed().as_nanos() as u64;
                        let mut acks = acks.lock().expect("acks lock");
                        if acks.len() < PROBE_ACKS_MAX {
                            acks.push((sent, acked, n));
                        }
                    }
                }
            })
        };
        Probe {
            epoch,
            acks,
            stop,
            task,
        }
    }

    pub(crate) fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// When the first write sent after `after` was acknowledged, if it was.
    pub(crate) fn first_ack_sent_after(&self, after: u64) -> Option<u64> {
        let acks = self.acks.lock().expect("acks lock");
        acks.iter()
            .find(|&&(sent, _, _)| sent > after)
            .map(|&(_, acked, _)| acked)
    }

    /// Waits until a write sent from now on is acknowledged: the cluster is serving.
    pub(crate) fn wait_serving(&self, cluster: &TestCluster) {
        let now = self.now();
        cluster.poll(STARTUP, "a probe write to be acknowledged", || {
            self.first_ack_sent_after(now)
        });
    }

    /// Waits for an acknowledged view newer than `newer_than` with a backup, kills its primary
    /// and returns how long it took until the first write sent after the primary's death was
    /// acknowledged, with (that view, its primary, its backup).
    fn time_failover(
        &self,
        cluster: &mut TestCluster,
        newer_than: u64,
    ) -> (Duration, u64, u64, u64) {
        let (view, primary, backup) = cluster.wait_for_pb_view(newer_than, STARTUP);
        self.wait_serving(cluster);
        let killed_at = self.now();
        cluster.kill_9(primary);
        // Only a write sent after the old primary is dead (reaped) counts: one in flight at
        // the kill may have been answered by the old primary in its last instant.
        let dead_at = self.now();
        let acked = cluster.poll(
            Duration::from_secs(20),
            "a write after the failover",
            || self.first_ack_sent_after(dead_at),
        );
        (
            Duration::from_nanos(acked - killed_at),
            view,
            primary,
            backup,
        )
    }

    /// Stops the probe; returns the value of its last acknowledged write.
    pub(crate) fn stop(self, runtime: &tokio::runtime::Runtime) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(35), self.task).await })
            .expect("the probe stops")
            .expect("the probe did not panic");
        let acks = self.acks.lock().expect("acks lock");
        acks.last().map_or(0, |&(_, _, value)| value)
    }
}

/// Waits for the workload and the probe to stop, then checks that nothing acknowledged was
/// lost and that the history is linearizable.
fn finish_and_check(
    cluster: &TestCluster,
    runtime: &tokio::runtime::Runtime,
    supervisor: tokio::task::JoinHandle<()>,
    probe: Probe,
    history: &Mutex<Vec<Operation>>,
    start: Instant,
) {
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), supervisor).await })
        .expect("the workers finish")
        .expect("the supervisor finishes");
    let last_probe = probe.stop(runtime);
    cluster.wait_for_pb_view(0, STARTUP);
    let ops = history.lock().expect("history lock").clone();
    check_final_state(cluster, runtime, ops, start);
    // The probe's counter only grows, so its final value is at least its last acknowledged.
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

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

// Proves the primary-backup promise with real processes: SIGKILL the primary while clients
// write (twice; the killed server comes back as a new, empty spare), and the backup takes over
// and acknowledges a write within a second of the kill; no acknowledged write is lost, and
// everything the clients observed, across both failovers, is linearizable.
#[test]
fn killing_the_primary_under_load_the_backup_serves_within_a_second_and_nothing_is_lost() {
    let mut cluster = TestCluster::start_pb(3, "");
    cluster.wait_for_pb_view(0, STARTUP);
    let runtime = runtime();
    let start = Instant::now();
    let until = start + Duration::from_secs(9);
    let history = Arc::new(Mutex::new(Vec::new()));
    let supervisor = spawn_workload(&runtime, cluster.client_config(), start, until, &history);
    let probe = Probe::start(&runtime, &cluster);

    let mut view = 0;
    for round in 0..2 {
        let settle = start + Duration::from_millis(1_500 + round * 3_500);
        cluster.poll(Duration::from_secs(10), "the next kill", || {
            (Instant::now() >= settle).then_some(())
        });
        let (failover, old_view, primary, backup) = probe.time_failover(&mut cluster, view);
        let (new_view, new_primary, new_backup) = cluster.wait_for_pb_view(old_view, STARTUP);
        println!(
            "round {round}: killed primary {primary} of view {old_view}; backup {backup} serves \
             in view {new_view} (backup {new_backup}); first acknowledged write {failover:?} \
             after the kill"
        );
        assert_eq!(new_primary, backup, "only the backup may be promoted");
        assert!(
            failover < Duration::from_secs(1),
            "the backup took {failover:?} to serve"
        );
        view = old_view;
        let back = Instant::now() + Duration::from_secs(1);
        cluster.poll(Duration::from_secs(10), "the restart", || {
            (Instant::now() >= back).then_some(())
        });
        // It comes back empty, as a new server: a spare.
        cluster.restart(primary);
    }
    finish_and_check(&cluster, &runtime, supervisor, probe, &history, start);
}

// SCENARIOS A9 and issue 12: a restarted view service resumes the view it made durable; it
// does not make the first server to ping primary of a new view 1 while the old primary still
// serves (split brain, lost writes). Under load: kill -9 the view service, restart it, and the
// view (number, primary, backup) is the one before; only that primary serves; then kill -9 the
// primary, and the restarted service promotes the backup. Nothing acknowledged is lost and the
// history is linearizable. Without the durable view this fails at once (the view number
// restarts at 1).
#[test]
fn a_restarted_view_service_resumes_its_view_under_load_and_still_fails_over() {
    let mut cluster = TestCluster::start_pb(3, "");
    let service = 4;
    let (view, primary, backup) = cluster.wait_for_pb_view(0, STARTUP);
    let runtime = runtime();
    let start = Instant::now();
    let until = start + Duration::from_secs(6);
    let history = Arc::new(Mutex::new(Vec::new()));
    let supervisor = spawn_workload(&runtime, cluster.client_config(), start, until, &history);
    let probe = Probe::start(&runtime, &cluster);
    probe.wait_serving(&cluster);

    cluster.kill_9(service);
    cluster.restart(service);
    let resumed = cluster.poll(STARTUP, "the view service to answer again", || {
        cluster.pb_status(service)
    });
    assert_eq!(
        (resumed.view, resumed.primary, resumed.backup),
        (view, Some(primary), Some(backup)),
        "the restarted view service must resume its view"
    );
    // Every server keeps (or learns) that view; none but the primary acts as primary.
    for node in cluster.servers() {
        let status = cluster.pb_status(node).expect("the server answers");
        assert!(
            status.view <= view,
            "node {node} saw a view the service never made"
        );
        if node != primary {
            assert_ne!(status.role, "primary", "node {node} acts as primary too");
        }
    }
    // The resumed service still fails over: the backup of the acknowledged view takes over.
    let (_, old_view, killed, promoted) = probe.time_failover(&mut cluster, view - 1);
    assert_eq!((old_view, killed, promoted), (view, primary, backup));
    let (_, new_primary, _) = cluster.wait_for_pb_view(view, STARTUP);
    assert_eq!(new_primary, backup, "only the backup may be promoted");

    finish_and_check(&cluster, &runtime, supervisor, probe, &history, start);
}

// Proves that only the primary takes RESP clients: the backup and the spare answer reads and
// writes with a MOVED redirect naming the primary's RESP address (which `redis-cli -c`
// follows), and every node's /status shows the view and its role in it.
#[test]
fn servers_other_than_the_primary_redirect_resp_clients_to_it() {
    let cluster = TestCluster::start_pb(3, "");
    let (view, primary, backup) = cluster.wait_for_pb_view(0, STARTUP);
    let spare = cluster
        .servers()
        .into_iter()
        .find(|&node| node != primary && node != backup)
        .expect("three servers");
    let mut client = Resp::connect(cluster.redis(primary));
    assert_eq!(client.call(&["SET", "k", "v"]), Frame::simple("OK"));
    assert_eq!(client.call(&["GET", "k"]), Frame::bulk("v"));
    // Exactly Redis Cluster's three fields: client libraries parse it strictly.
    let moved = format!("MOVED 0 {}", cluster.redis(primary));
    for node in [backup, spare] {
        for request in [&["SET", "k", "w"][..], &["GET", "k"][..]] {
            match Resp::connect(cluster.redis(node)).call(request) {
                Frame::Error(text) => {
                    assert_eq!(text, moved, "{request:?} through node {node}")
                }
                other => panic!("{request:?} through node {node}: {other:?}"),
            }
        }
    }
    // The refused SET changed nothing.
    assert_eq!(client.call(&["GET", "k"]), Frame::bulk("v"));
    for (node, role) in [
        (primary, "primary"),
        (backup, "backup"),
        (spare, "idle"),
        (4, "view-service"),
    ] {
        // Each server learns the view from the reply to its next ping: wait for that.
        let status = cluster.poll(STARTUP, "the server learns the view", || {
            cluster.pb_status(node).filter(|status| status.view == view)
        });
        assert_eq!(status.role, role, "node {node}");
        assert_eq!(status.view, view, "node {node}");
        assert_eq!(
            (status.primary, status.backup),
            (Some(primary), Some(backup))
        );
    }
}

// Proves that unmodified Redis tools work against a primary-backup cluster: `redis-cli -c`
// sent to the backup follows its MOVED redirect to the primary, and redis-benchmark runs on the
// primary.
#[test]
fn redis_cli_follows_the_redirect_and_redis_benchmark_runs_on_the_primary() {
    if !on_path("redis-cli") || !on_path("redis-benchmark") {
        assert!(
            std::env::var_os("CHORUS_REQUIRE_REDIS_TOOLS").is_none(),
            "CHORUS_REQUIRE_REDIS_TOOLS is set but redis-cli or redis-benchmark is missing"
        );
        println!("skipped: redis-tools not installed");
        return;
    }
    let cluster = TestCluster::start_pb(3, "");
    let (_, primary, backup) = cluster.wait_for_pb_view(0, STARTUP);
    let port = |node: u64| cluster.redis(node).port().to_string();
    let (ok, text) = run_tool(
        Command::new("redis-cli").args([
            "-c",
            "-h",
            "127.0.0.1",
            "-p",
            &port(backup),
            "SET",
            "a",
            "1",
        ]),
        Duration::from_secs(10),
    );
    assert!(
        ok && text.trim() == "OK",
        "redis-cli -c SET through the backup: {text}"
    );
    let (ok, text) = run_tool(
        Command::new("redis-cli").args(["-c", "-h", "127.0.0.1", "-p", &port(backup), "GET", "a"]),
        Duration::from_secs(10),
    );
    assert!(
        ok && text.trim() == "1",
        "redis-cli -c GET through the backup: {text}"
    );
    let (ok, text) = run_tool(
        Command::new("redis-benchmark").args([
            "-h",
            "127.0.0.1",
            "-p",
            &port(primary),
            "-t",
            "set,get",
            "-n",
            "2000",
            "-c",
            "10",
            "-q",
        ]),
        Duration::from_secs(30),
    );
    assert!(ok, "redis-benchmark failed:\n{text}");
    assert!(
        text.contains("SET:") && text.contains("GET:"),
        "redis-benchmark printed no SET/GET lines:\n{text}"
    );
}

// Proves that redis-py's cluster client (`RedisCluster`, unmodified, its default retry policy
// plus a loop of retries for up to 20 s, see the script) finds the primary through
// `CLUSTER SLOTS`, and follows a failover: after the primary is killed, the same client
// object writes through the new primary. Needs python3 with redis-py (`pip install redis`);
// `.ci/run` installs it and sets CHORUS_REQUIRE_REDIS_PY.
#[test]
fn redis_py_cluster_client_follows_a_primary_failover() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    let has_redis_py = Command::new("python3")
        .args(["-c", "import redis.cluster"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !has_redis_py {
        assert!(
            std::env::var_os("CHORUS_REQUIRE_REDIS_PY").is_none(),
            "CHORUS_REQUIRE_REDIS_PY is set but python3 cannot import redis.cluster"
        );
        println!("skipped: redis-py not installed");
        return;
    }
    let mut cluster = TestCluster::start_pb(3, "");
    let (view, primary, _) = cluster.wait_for_pb_view(0, STARTUP);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/cluster/scripts/redis_cluster_failover.py"
    );
    let mut child = Command::new("python3")
        .arg(script)
        .args(
            cluster
                .servers()
                .iter()
                .map(|&n| cluster.redis(n).port().to_string()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start python3");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().and_then(Result::ok);
    assert_eq!(
        first.as_deref(),
        Some("ready"),
        "the client connected and wrote"
    );
    cluster.kill_9(primary);
    cluster.wait_for_pb_view(view, Duration::from_secs(15));
    writeln!(child.stdin.as_mut().expect("stdin")).expect("signal the script");
    let last = lines.next().and_then(Result::ok).unwrap_or_default();
    let status = child.wait().expect("the script ends");
    assert!(status.success(), "the script failed: {last}");
    assert!(last.starts_with("a=1 b=2 "), "after the failover: {last}");
}

// Measures, over ten tries, the time from SIGKILLing the primary to the first write the backup
// (now primary) acknowledges, while a client writes continuously. Prints each try, the median
// and the maximum; asserts only that every failover completes. The killed server is restarted
// each time and comes back as the spare.
// Run: CARGO_TARGET_DIR=/work/target-e2e cargo test -p chorus-server --test cluster \
//        measure_pb_failover_time -- --ignored --nocapture
#[test]
#[ignore = "a measurement, not a check; run it explicitly"]
fn measure_pb_failover_time() {
    let mut cluster = TestCluster::start_pb(3, "");
    cluster.wait_for_pb_view(0, STARTUP);
    let runtime = runtime();
    let probe = Probe::start(&runtime, &cluster);
    let mut times = Vec::new();
    let mut view = 0;
    for attempt in 1..=10 {
        let (elapsed, old_view, primary, backup) = probe.time_failover(&mut cluster, view);
        let (new_view, new_primary, _) = cluster.wait_for_pb_view(old_view, STARTUP);
        println!(
            "try {attempt}: killed primary {primary} (view {old_view}), node {new_primary} \
             serves in view {new_view}; first acknowledged write after {elapsed:?}"
        );
        assert_eq!(new_primary, backup);
        times.push(elapsed);
        view = old_view;
        cluster.restart(primary);
        // The restarted server pings as a new one; wait until the view service knows it.
        cluster.poll(STARTUP, "the restarted server to join as a spare", || {
            cluster
                .pb_status(primary)
                .filter(|status| status.view >= new_view)
                .map(|_| ())
        });
    }
    let _ = probe.stop(&runtime);
    times.sort();
    println!(
        "pb failover over {} tries: median {:?}, max {:?}, min {:?}",
        times.len(),
        times[times.len() / 2],
        times[times.len() - 1],
        times[0]
    );
}
