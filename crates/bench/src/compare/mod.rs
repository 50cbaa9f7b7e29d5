//! `chorus bench compare`: Chorus, etcd and Redis on the same machine, the same workload, in
//! the same run.
//!
//! The runner checks what is installed and says what is missing and how to get it (it
//! installs nothing), starts every target on 127.0.0.1 with a fresh data directory (a
//! 3-member etcd with fsync on, one Redis with `appendonly yes` and `appendfsync always`, a
//! 3-node Chorus cluster per replication scheme), measures the physical floor of a replicated
//! write on the same disk, then runs rounds (3 by default). Each round waits, a bounded time,
//! for the machine to be quiet (the load gate, [`rounds`]), then runs each workload at each
//! number of requests in flight per connection and each client count against every target in
//! turn (A B C A B C …, so that machine noise hits all of them alike), then
//! `redis-benchmark -t set -c 50 -d <value size>` without and with `-P 16` against Redis and
//! Chorus. It stops everything (also on an error or Ctrl-C), and writes `docs/benchmarks/`:
//! `results.json` (every round's raw numbers and load), a `README.md` with the medians of the
//! rounds and their spread, and the goals of the benchmark issue (a ratio that used a busy
//! round is not published), and SVG plots.

pub mod floor;
pub mod rounds;
pub mod services;
pub mod svg;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::report::{Report, format_table};
use crate::run::{BenchConfig, run};
use crate::schedule::{Pacing, parse_duration};
use crate::target::TargetSpec;
use crate::workload::{Mix, WorkloadSpec};
use floor::Floor;
use rounds::{LoadAverage, RoundLoad, Spread};
use services::Service;

/// The replication schemes of Chorus that the comparison runs, each as a 3-node cluster.
/// A scheme other than the first runs only when `chorus up --help` offers `--protocol` and
/// names it; add a new scheme here (one line) when `chorus up` can run it.
pub const CHORUS_SCHEMES: &[&str] = &["raft", "pb", "hybrid"];

/// The Raft cluster again, with reads served from the leader's lease (`chorus up
/// --lease-reads`, thesis §6.4.1) rather than by a ReadIndex round; it runs when `chorus up
/// --help` offers the flag.
pub const CHORUS_LEASE_TARGET: &str = "chorus-raft-lease";

/// Arguments of `chorus bench compare`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Where to write results.json, README.md and the plots.
    #[arg(long, default_value = "docs/benchmarks")]
    pub out: PathBuf,
    /// Measured time of each run.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unmeasured warm-up before each run.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Client counts (requests in flight in total), each run against every target.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    pub clients: Vec<usize>,
    /// Requests in flight per connection: 1 is a connection per client; with 4, 64 clients
    /// share 16 connections, each pipelining 4 requests (RESP) or multiplexing them (etcd's
    /// gRPC channel). Client counts it does not divide are skipped at that value. The native
    /// Chorus client cannot pipeline, so above 1 Chorus is driven through its RESP port.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    pub in_flight: Vec<usize>,
    /// Workloads, in order (`write`, `read`, `mixed-R`); reads come after writes so that
    /// the keys exist.
    #[arg(long, value_delimiter = ',', default_value = "write,read")]
    pub workloads: Vec<Mix>,
    /// Repeat the whole interleaved sequence this many times; tables and ratios show the
    /// median of the rounds and their spread.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    pub rounds: u64,
    /// The load gate: a round is busy when the 1-minute load average at its start is above
    /// this; ratios that use a busy round are not published. Half the CPUs by default.
    #[arg(long)]
    pub busy_load: Option<f64>,
    /// The longest wait before a round for the load average to fall to `--busy-load` (the
    /// previous round's own load takes about 80 s to decay from 4 to 1; 0: no wait).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub busy_wait: Duration,
    /// Distinct keys.
    #[arg(long, default_value_t = 1000)]
    pub keys: u64,
    /// Bytes per key.
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Requests of each `redis-benchmark -t set -c 50` run, one per round (0 skips it).
    #[arg(long, default_value_t = 20_000)]
    pub redis_benchmark_requests: u64,
    /// Requests of each `redis-benchmark -t set -c 50 -P 16` run, one per round (0 skips
    /// it); more than without `-P`, as pipelined requests go faster.
    #[arg(long, default_value_t = 100_000)]
    pub redis_benchmark_pipelined_requests: u64,
    /// Only these targets (`etcd`, `redis`, `chorus-raft`, `chorus-raft-lease`, `chorus-pb`,
    /// `chorus-hybrid`); all by default.
    #[arg(long, value_delimiter = ',')]
    pub targets: Vec<String>,
    /// Where the servers' temporary data directories go (the floor is measured on this
    /// disk); the system's temporary directory by default.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// The chorus executable to start clusters with; this one by default.
    #[arg(long)]
    pub chorus: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    pub no_progress: bool,
}

/// The machine and the programs compared.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Machine {
    /// CPU cores available.
    pub cores: usize,
    /// `etcd --version`, first line.
    pub etcd: Option<String>,
    /// `redis-server --version`.
    pub redis: Option<String>,
    /// The kernel (`/proc/sys/kernel/osrelease`).
    pub kernel: Option<String>,
    /// `/proc/loadavg` when the benchmarks started (other work on the machine shows here).
    pub load_before: Option<String>,
    /// `/proc/loadavg` when they ended.
    pub load_after: Option<String>,
}

fn load_average() -> Option<String> {
    std::fs::read_to_string("/proc/loadavg").ok().map(|text| {
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    })
}

fn read_load() -> Option<LoadAverage> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| LoadAverage::parse(&text))
}

/// The settings of a comparison.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    /// Measured seconds per run.
    pub duration_s: f64,
    /// Warm-up seconds per run.
    pub warmup_s: f64,
    /// Rounds of the interleaved sequence.
    pub rounds: u64,
    /// Client counts.
    pub clients: Vec<usize>,
    /// Requests in flight per connection.
    #[serde(default = "in_flight_one")]
    pub in_flight: Vec<usize>,
    /// The load gate's threshold (1-minute load average).
    #[serde(default)]
    pub busy_load: f64,
    /// The longest wait for the load to fall to the threshold before a round.
    #[serde(default)]
    pub busy_wait_s: f64,
    /// Workload names.
    pub workloads: Vec<String>,
    /// Distinct keys.
    pub key_count: u64,
    /// Bytes per key.
    pub key_size: usize,
    /// Bytes per value.
    pub value_size: usize,
}

fn in_flight_one() -> Vec<usize> {
    vec![1]
}

fn pipeline_one() -> u32 {
    1
}

/// One `redis-benchmark -t set -c 50 -d <value size> [-P 16]` result.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RedisBenchmark {
    /// The target.
    pub target: String,
    /// Requests per connection pipelined (`-P`; 1 without).
    #[serde(default = "pipeline_one")]
    pub pipeline: u32,
    /// Bytes per value (`-d`).
    #[serde(default)]
    pub data_size: usize,
    /// The round, from 0.
    #[serde(default)]
    pub round: u64,
    /// Requests per second reported.
    pub requests_per_sec: f64,
    /// Requests sent.
    pub requests: u64,
}

/// One goal of the benchmark issue, judged on this run.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Goal {
    /// The goal, in words.
    pub goal: String,
    /// The Chorus target judged.
    pub target: String,
    /// The measured ratio, the median of the rounds' (meaning depends on the goal: see
    /// `goal`); `None` when not measured or not published.
    pub ratio: Option<f64>,
    /// The smallest of the rounds' ratios.
    #[serde(default)]
    pub ratio_min: Option<f64>,
    /// The largest of the rounds' ratios.
    #[serde(default)]
    pub ratio_max: Option<f64>,
    /// Why the ratio is not published (a round it used was busy), if it is not.
    #[serde(default)]
    pub refused: Option<String>,
    /// Whether it was met; `None` when it could not be judged (a target missing, or a busy
    /// round).
    pub met: Option<bool>,
    /// The numbers behind the ratio.
    pub detail: String,
}

/// Everything one comparison measured: what `results.json` holds.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Comparison {
    /// When it ran (UTC).
    pub date: String,
    /// The Chorus version.
    pub chorus_version: String,
    /// The machine.
    pub machine: Machine,
    /// The settings.
    pub settings: Settings,
    /// The physical floor of one replicated write.
    pub floor: Option<Floor>,
    /// The targets that ran, in their interleaving order.
    pub targets: Vec<String>,
    /// Targets that did not run, and why.
    pub skipped: Vec<String>,
    /// The load of the machine around every round, and whether the round was busy.
    #[serde(default)]
    pub rounds: Vec<RoundLoad>,
    /// Every run of every round, in the order it ran.
    pub runs: Vec<Report>,
    /// `redis-benchmark -t set -c 50` results, every round's.
    pub redis_benchmark: Vec<RedisBenchmark>,
    /// The goals, judged.
    pub goals: Vec<Goal>,
}

/// A target that is up, with whatever keeps it up.
struct Running {
    label: String,
    spec: TargetSpec,
    /// How to drive it with several requests in flight per connection (the native Chorus
    /// client cannot pipeline, so Chorus is driven through its RESP port then).
    pipelined: TargetSpec,
    resp: Option<SocketAddr>,
    services: Vec<Service>,
}

fn wanted(args: &CompareArgs, label: &str) -> bool {
    args.targets.is_empty() || args.targets.iter().any(|t| t == label)
}

fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Runs `chorus bench compare`.
///
/// # Errors
/// When nothing can be compared, a server does not start, or the results cannot be written.
/// Every server started is stopped before this returns.
pub fn compare(args: &CompareArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!args.clients.is_empty(), "give at least one client count");
    anyhow::ensure!(!args.workloads.is_empty(), "give at least one workload");
    anyhow::ensure!(
        !args.in_flight.is_empty(),
        "give at least one number of requests in flight"
    );
    for &in_flight in &args.in_flight {
        anyhow::ensure!(
            (1..=crate::pipeline::IN_FLIGHT_MAX).contains(&in_flight),
            "--in-flight must be between 1 and {}",
            crate::pipeline::IN_FLIGHT_MAX
        );
    }
    if let Some(load) = args.busy_load {
        anyhow::ensure!(
            load.is_finite() && load >= 0.0,
            "--busy-load must be a load average (0 or more)"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("cannot listen for SIGTERM")?;
        tokio::select! {
            result = compare_inner(args) => result,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("interrupted: stopping every server");
                Err(anyhow::anyhow!("interrupted"))
            }
            _ = terminate.recv() => {
                eprintln!("terminated: stopping every server");
                Err(anyhow::anyhow!("terminated"))
            }
        }
    })
}

async fn compare_inner(args: &CompareArgs) -> anyhow::Result<()> {
    let work = match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            tempfile::Builder::new()
                .prefix("chorus-compare-")
                .tempdir_in(dir)
        }
        None => tempfile::Builder::new().prefix("chorus-compare-").tempdir(),
    }
    .context("cannot create a temporary directory")?;
    eprintln!("data and logs under {}", work.path().display());
    let result = compare_in(args, work.path()).await;
    if result.is_err() {
        // Keep the servers' logs for the post-mortem.
        let kept = work.keep();
        eprintln!("kept the servers' data and logs in {}", kept.display());
    }
    result
}

async fn compare_in(args: &CompareArgs, work: &Path) -> anyhow::Result<()> {
    let chorus = match &args.chorus {
        Some(path) => path.clone(),
        None => std::env::current_exe().context("cannot find the chorus executable")?,
    };
    let etcd = services::which("etcd");
    let redis = services::which("redis-server");
    let redis_benchmark = services::which("redis-benchmark");
    let mut skipped = Vec::new();
    let mut missing = Vec::new();
    if etcd.is_none() && wanted(args, "etcd") {
        missing.push("etcd (Debian: apt-get install etcd-server)");
        skipped.push("etcd: not installed (apt-get install etcd-server)".to_string());
    }
    if etcd.is_some() && wanted(args, "etcd") && !cfg!(feature = "etcd") {
        missing.push("the etcd client (rebuild chorus with `--features etcd`; needs protoc: apt-get install protobuf-compiler)");
        skipped.push("etcd: this chorus was built without the `etcd` feature".to_string());
    }
    if redis.is_none() && wanted(args, "redis") {
        missing.push("redis-server (Debian: apt-get install redis-server)");
        skipped.push("redis: not installed (apt-get install redis-server)".to_string());
    }
    if redis_benchmark.is_none() && args.redis_benchmark_requests > 0 {
        missing.push("redis-benchmark (Debian: apt-get install redis-tools)");
        skipped.push("redis-benchmark: not installed (apt-get install redis-tools)".to_string());
    }
    for what in &missing {
        eprintln!("missing: {what}; the comparison goes on without it");
    }

    let mut floor_samples = floor::FloorSamples::default();
    if let Err(error) = floor_samples.sample(work, 100, 1_000) {
        eprintln!("cannot measure the physical floor: {error:#}");
    }

    // Start every target (dropped, and so stopped, when this function returns).
    let mut running: Vec<Running> = Vec::new();
    let mut used_ports = Vec::new();
    if let (Some(etcd), true, true) = (&etcd, cfg!(feature = "etcd"), wanted(args, "etcd")) {
        eprintln!("starting a 3-member etcd");
        let (services, endpoints) = services::start_etcd(etcd, work, 3)?;
        for endpoint in &endpoints {
            if let Some(port) = endpoint.rsplit(':').next().and_then(|p| p.parse().ok()) {
                used_ports.push(port);
            }
        }
        running.push(Running {
            label: "etcd".into(),
            pipelined: TargetSpec::Etcd {
                endpoints: endpoints.clone(),
            },
            spec: TargetSpec::Etcd { endpoints },
            resp: None,
            services,
        });
    }
    if let (Some(redis), true) = (&redis, wanted(args, "redis")) {
        eprintln!("starting redis-server (appendonly yes, appendfsync always)");
        let (service, address) = services::start_redis(redis, work)?;
        used_ports.push(address.port());
        running.push(Running {
            label: "redis".into(),
            spec: TargetSpec::Resp {
                endpoints: vec![address],
            },
            pipelined: TargetSpec::Resp {
                endpoints: vec![address],
            },
            resp: Some(address),
            services: vec![service],
        });
    }
    let help = services::chorus_up_help(&chorus);
    let protocol_flag = help.contains("--protocol");
    // Each cluster: its label, its scheme, and the flags of `chorus up` it needs.
    let clusters = CHORUS_SCHEMES
        .iter()
        .enumerate()
        .flat_map(|(index, &scheme)| {
            let plain = (format!("chorus-{scheme}"), index, scheme, None);
            let lease = (index == 0).then(|| {
                (
                    CHORUS_LEASE_TARGET.to_string(),
                    index,
                    scheme,
                    Some("--lease-reads"),
                )
            });
            std::iter::once(plain).chain(lease)
        })
        .collect::<Vec<_>>();
    for (label, index, scheme, flag) in clusters {
        if !wanted(args, &label) {
            continue;
        }
        if index > 0 && !(protocol_flag && help.contains(scheme)) {
            skipped.push(format!(
                "{label}: `chorus up` of this build has no --protocol {scheme}"
            ));
            continue;
        }
        if let Some(flag) = flag.filter(|flag| !help.contains(flag)) {
            skipped.push(format!("{label}: `chorus up` of this build has no {flag}"));
            continue;
        }
        eprintln!("starting a 3-node Chorus cluster ({label})");
        let extra: Vec<&str> = flag.into_iter().collect();
        let (service, endpoints) = services::start_chorus(
            &chorus,
            work,
            &label,
            scheme,
            protocol_flag,
            &extra,
            &used_ports,
        )?;
        used_ports.extend(endpoints.iter().map(SocketAddr::port));
        // redis-benchmark goes to the leader (or primary), as a Redis client goes to the master.
        let resp = services::chorus_leader(&endpoints).or_else(|| endpoints.first().copied());
        // Any Raft node takes SET and GET (a follower forwards), so pipelined connections
        // spread over the nodes as the native clients do; under primary-backup the others
        // answer MOVED, so they all go to the primary, where the native client ends up too.
        let pipelined = match (scheme, resp) {
            ("raft", _) | (_, None) => TargetSpec::Resp {
                endpoints: endpoints.clone(),
            },
            (_, Some(primary)) => TargetSpec::Resp {
                endpoints: vec![primary],
            },
        };
        running.push(Running {
            label,
            pipelined,
            spec: TargetSpec::Chorus { endpoints },
            resp,
            services: vec![service],
        });
    }
    anyhow::ensure!(!running.is_empty(), "no target to compare");
    let targets: Vec<String> = running.iter().map(|r| r.label.clone()).collect();
    eprintln!("targets: {}", targets.join(", "));

    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let threshold = args
        .busy_load
        .unwrap_or_else(|| rounds::default_busy_load(cpus));
    let load_before = load_average();
    let mut runs = Vec::new();
    let mut redis_benchmarks = Vec::new();
    let mut round_loads = Vec::new();
    for round in 0..args.rounds {
        let (before, waited) = wait_for_quiet(threshold, args.busy_wait).await;
        let busy = rounds::is_busy(before.as_ref(), threshold);
        eprintln!(
            "round {} of {}: load {} after waiting {:.0} s{}",
            round + 1,
            args.rounds,
            before.map_or_else(|| "unknown".to_string(), |l| l.to_string()),
            waited.as_secs_f64(),
            if busy {
                format!(" (BUSY: above {threshold:.2}; its ratios will not be published)")
            } else {
                String::new()
            }
        );
        for mix in &args.workloads {
            for &in_flight in &args.in_flight {
                for &clients in &args.clients {
                    if clients % in_flight != 0 {
                        continue;
                    }
                    // A few floor samples between cells, so the floor sees the same machine.
                    let _ = floor_samples.sample(work, 25, 250);
                    for target in &mut running {
                        if !runs_workload(&target.label, *mix) {
                            continue;
                        }
                        for service in &mut target.services {
                            service.check_alive()?;
                        }
                        let config = BenchConfig {
                            label: target.label.clone(),
                            target: if in_flight == 1 {
                                target.spec.clone()
                            } else {
                                target.pipelined.clone()
                            },
                            workload: WorkloadSpec {
                                mix: *mix,
                                key_count: args.keys,
                                key_size: args.key_size,
                                value_size: args.value_size,
                                seed: round + 1,
                            },
                            clients,
                            in_flight,
                            pacing: Pacing::Closed,
                            warmup: args.warmup,
                            duration: args.duration,
                            record_history: false,
                            progress: !args.no_progress,
                        };
                        let outcome = run(&config)
                            .await
                            .with_context(|| format!("benchmark of {} failed", target.label))?;
                        let mut report = outcome.report;
                        report.round = round;
                        eprint!("{}", format_table(std::slice::from_ref(&report)));
                        runs.push(report);
                    }
                }
            }
        }
        if let Some(program) = &redis_benchmark {
            let passes = [
                (1, args.redis_benchmark_requests),
                (16, args.redis_benchmark_pipelined_requests),
            ];
            for (pipeline, requests) in passes {
                if requests == 0 {
                    continue;
                }
                for target in running
                    .iter()
                    .filter(|t| t.label != "etcd" && t.label != CHORUS_LEASE_TARGET)
                {
                    let Some(address) = target.resp else {
                        continue;
                    };
                    let run = services::RedisBenchmarkRun {
                        address,
                        requests,
                        data_size: args.value_size,
                        pipeline,
                    };
                    eprintln!("{} against {}", run.command_line(), target.label);
                    let program = program.clone();
                    let result = tokio::task::spawn_blocking(move || {
                        services::redis_benchmark(&program, &run, Duration::from_secs(120))
                    })
                    .await
                    .context("redis-benchmark's thread failed")?;
                    match result {
                        Ok(rps) => redis_benchmarks.push(RedisBenchmark {
                            target: target.label.clone(),
                            pipeline,
                            data_size: args.value_size,
                            round,
                            requests_per_sec: rps,
                            requests,
                        }),
                        Err(error) => skipped.push(format!(
                            "redis-benchmark -P {pipeline} on {} in round {}: {error:#}",
                            target.label,
                            round + 1
                        )),
                    }
                }
            }
        }
        round_loads.push(RoundLoad {
            round,
            cpus,
            threshold,
            waited_s: waited.as_secs_f64(),
            before,
            after: read_load(),
            busy,
        });
    }
    drop(running);
    let load_after = load_average();

    let machine = Machine {
        cores: cpus,
        etcd: etcd.as_deref().and_then(services::version_of),
        redis: redis.as_deref().and_then(services::version_of),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|k| k.trim().to_string()),
        load_before,
        load_after,
    };
    let settings = Settings {
        duration_s: args.duration.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        rounds: args.rounds,
        clients: args.clients.clone(),
        in_flight: args.in_flight.clone(),
        busy_load: threshold,
        busy_wait_s: args.busy_wait.as_secs_f64(),
        workloads: args.workloads.iter().map(|m| m.name()).collect(),
        key_count: args.keys,
        key_size: args.key_size,
        value_size: args.value_size,
    };
    let floor = floor_samples.floor();
    if let Some(floor) = &floor {
        eprintln!(
            "physical floor: fdatasync p50 {:.0}us + 2 x loopback round trip {:.0}us = {:.0}us",
            floor.fdatasync_p50_us, floor.round_trip_p50_us, floor.floor_us
        );
    }
    let goals = judge(
        &runs,
        &redis_benchmarks,
        floor.as_ref(),
        &targets,
        &round_loads,
    );
    let comparison = Comparison {
        date: today(),
        chorus_version: env!("CARGO_PKG_VERSION").to_string(),
        machine,
        settings,
        floor,
        targets,
        skipped,
        rounds: round_loads,
        runs,
        redis_benchmark: redis_benchmarks,
        goals,
    };
    write_outputs(&comparison, &args.out)?;
    print!("{}", format_table(&comparison.runs));
    for goal in &comparison.goals {
        println!(
            "{:<6} {:<14} {}: {}",
            match (goal.met, &goal.refused) {
                (_, Some(_)) => "BUSY",
                (Some(true), None) => "MET",
                (Some(false), None) => "NOT",
                (None, None) => "n/a",
            },
            goal.target,
            goal.goal,
            goal.detail
        );
    }
    println!("wrote {}", args.out.display());
    Ok(())
}

/// Waits, at most `wait`, until the 1-minute load average is at most `threshold`; returns
/// the last load read and how long it waited.
async fn wait_for_quiet(threshold: f64, wait: Duration) -> (Option<LoadAverage>, Duration) {
    let start = tokio::time::Instant::now();
    let mut announced = false;
    loop {
        let load = read_load();
        let waited = start.elapsed();
        if !rounds::keep_waiting(
            load.as_ref(),
            threshold,
            waited.as_secs_f64(),
            wait.as_secs_f64(),
        ) {
            return (load, waited);
        }
        if !announced {
            eprintln!(
                "waiting up to {:.0} s for the load average ({}) to fall to {threshold:.2}",
                wait.as_secs_f64(),
                load.map_or_else(|| "unknown".to_string(), |l| l.to_string())
            );
            announced = true;
        }
        // /proc/loadavg changes every 5 s.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The runs of one cell (a target, a workload, a client count and a number of requests in
/// flight per connection), one per round, in round order.
#[must_use]
pub fn cell_runs<'a>(
    runs: &'a [Report],
    target: &str,
    workload: &str,
    clients: usize,
    in_flight: usize,
) -> Vec<&'a Report> {
    let mut matching: Vec<&Report> = runs
        .iter()
        .filter(|r| {
            r.target == target
                && r.workload.mix.name() == workload
                && r.clients == clients
                && r.in_flight == in_flight
        })
        .collect();
    matching.sort_by_key(|r| r.round);
    matching
}

/// A cell summarized over its rounds: the median of each number and its spread.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    /// The rounds the cell ran in.
    pub rounds: Vec<u64>,
    /// Operations per second.
    pub ops_per_sec: Spread,
    /// Latency percentiles, in microseconds.
    pub p50_us: Spread,
    /// 90th percentile.
    pub p90_us: Spread,
    /// 99th percentile.
    pub p99_us: Spread,
    /// 99.9th percentile.
    pub p999_us: Spread,
    /// The slowest operation.
    pub max_us: Spread,
    /// Errors, summed over the rounds.
    pub errors: u64,
}

/// The medians and spreads of `target`'s runs for a workload, client count and number of
/// requests in flight; `None` if it did not run.
#[must_use]
pub fn cell(
    runs: &[Report],
    target: &str,
    workload: &str,
    clients: usize,
    in_flight: usize,
) -> Option<Cell> {
    let runs = cell_runs(runs, target, workload, clients, in_flight);
    let of = |value: fn(&Report) -> f64| {
        Spread::of(&runs.iter().map(|r| value(r)).collect::<Vec<f64>>())
    };
    Some(Cell {
        rounds: runs.iter().map(|r| r.round).collect(),
        ops_per_sec: of(|r| r.ops_per_sec)?,
        p50_us: of(|r| r.latency.p50_us)?,
        p90_us: of(|r| r.latency.p90_us)?,
        p99_us: of(|r| r.latency.p99_us)?,
        p999_us: of(|r| r.latency.p999_us)?,
        max_us: of(|r| r.latency.max_us)?,
        errors: runs.iter().map(|r| r.errors).sum(),
    })
}

/// A measurement taken once per round: a run (its operations per second) or a
/// `redis-benchmark` (its requests per second).
trait PerRound {
    fn round(&self) -> u64;
    fn rate(&self) -> f64;
}

impl PerRound for Report {
    fn round(&self) -> u64 {
        self.round
    }
    fn rate(&self) -> f64 {
        self.ops_per_sec
    }
}

impl PerRound for RedisBenchmark {
    fn round(&self) -> u64 {
        self.round
    }
    fn rate(&self) -> f64 {
        self.requests_per_sec
    }
}

/// Per-round ratios of `ours`' rate to `theirs'`, for the rounds in which both ran (and
/// theirs is positive), as (round, ratio).
fn paired<T: PerRound>(ours: &[&T], theirs: &[&T]) -> RoundRatios {
    ours.iter()
        .filter_map(|a| {
            let b = theirs.iter().find(|b| b.round() == a.round())?;
            (b.rate() > 0.0).then(|| (a.round(), a.rate() / b.rate()))
        })
        .collect()
}

/// Whether `target` runs workload `mix`: the lease cluster differs from the Raft one only in
/// how it reads, so it runs only the reads (its writes would repeat the Raft cluster's).
fn runs_workload(target: &str, mix: Mix) -> bool {
    target != CHORUS_LEASE_TARGET || mix == Mix::ReadOnly
}

/// Per-round ratios, as (round, ratio).
type RoundRatios = Vec<(u64, f64)>;

/// `target`'s throughput against etcd's in one cell: the per-round ratios and both cells.
fn against_etcd(
    runs: &[Report],
    target: &str,
    workload: &str,
    clients: usize,
    in_flight: usize,
) -> (RoundRatios, Option<(Cell, Cell)>) {
    let per_round = paired(
        &cell_runs(runs, target, workload, clients, in_flight),
        &cell_runs(runs, "etcd", workload, clients, in_flight),
    );
    let cells = cell(runs, target, workload, clients, in_flight)
        .zip(cell(runs, "etcd", workload, clients, in_flight));
    (per_round, cells)
}

/// A goal judged on per-round ratios: refused when a round used was busy, unjudged when
/// there are none, else `decide` gives whether it is met and the detail, from the median.
fn judged(
    goal: String,
    target: &str,
    per_round: &[(u64, f64)],
    loads: &[RoundLoad],
    decide: impl FnOnce(&Spread) -> (bool, String),
) -> Goal {
    let used: Vec<u64> = per_round.iter().map(|(round, _)| *round).collect();
    let ratios: Vec<f64> = per_round.iter().map(|(_, ratio)| *ratio).collect();
    let Some(spread) = Spread::of(&ratios) else {
        return unjudged(goal, target);
    };
    if let Some(busy) = rounds::first_busy(loads, &used) {
        let refusal = rounds::refusal(busy);
        return Goal {
            detail: refusal.clone(),
            refused: Some(refusal),
            ..unjudged(goal, target)
        };
    }
    let (met, detail) = decide(&spread);
    Goal {
        goal,
        target: target.to_string(),
        ratio: Some(spread.median),
        ratio_min: Some(spread.min),
        ratio_max: Some(spread.max),
        met: Some(met),
        detail,
        refused: None,
    }
}

/// How a spread reads after its median: `3.51-4.60x over 3 rounds`, or `1 round`.
fn over_rounds(spread: &Spread, show: impl Fn(f64) -> String) -> String {
    if spread.count == 1 {
        "1 round".to_string()
    } else {
        format!(
            "{}–{} over {} rounds",
            show(spread.min),
            show(spread.max),
            spread.count
        )
    }
}

/// The client counts of the write goals, and the requests in flight per connection each is
/// judged at.
pub const WRITE_GOAL_CLIENTS: &[usize] = &[16, 64, 256];

/// The requests in flight per connection the write goals are judged at.
pub const WRITE_GOAL_IN_FLIGHT: &[usize] = &[1, 4];

/// Judges the goals of the benchmark issue for every Chorus target, on the medians of the
/// rounds; a ratio that used a busy round is not published.
#[must_use]
pub fn judge(
    runs: &[Report],
    redis_benchmarks: &[RedisBenchmark],
    floor: Option<&Floor>,
    targets: &[String],
    loads: &[RoundLoad],
) -> Vec<Goal> {
    let mut goals = Vec::new();
    let times = |x: f64| format!("{x:.2}x");
    let percent = |x: f64| format!("{:.0}%", x * 100.0);
    // The goals are for fsync-on replication; primary-backup keeps nothing on disk.
    for target in targets.iter().filter(|t| {
        t.starts_with("chorus") && t.as_str() != "chorus-pb" && t.as_str() != CHORUS_LEASE_TARGET
    }) {
        for &in_flight in WRITE_GOAL_IN_FLIGHT {
            for &clients in WRITE_GOAL_CLIENTS {
                let goal = format!(
                    "writes at {clients} clients, {in_flight} in flight per connection: >= 4x \
                     etcd's throughput, p99 <= etcd's"
                );
                let (per_round, cells) = against_etcd(runs, target, "write", clients, in_flight);
                goals.push(judged(goal, target, &per_round, loads, |ratio| {
                    let Some((ours, etcd)) = cells else {
                        return (false, "a cell is missing".to_string());
                    };
                    let p99_ok = ours.p99_us.median <= etcd.p99_us.median;
                    (
                        ratio.median >= 4.0 && p99_ok,
                        format!(
                            "{} ({}; {:.0} vs {:.0} ops/s); p99 {:.1} vs {:.1} ms",
                            times(ratio.median),
                            over_rounds(ratio, times),
                            ours.ops_per_sec.median,
                            etcd.ops_per_sec.median,
                            ours.p99_us.median / 1000.0,
                            etcd.p99_us.median / 1000.0
                        ),
                    )
                }));
            }
        }

        let goal = "one client: write p50 <= 2x the physical floor".to_string();
        let ours = cell_runs(runs, target, "write", 1, 1);
        let per_round: Vec<(u64, f64)> = match floor {
            Some(floor) if floor.floor_us > 0.0 => ours
                .iter()
                .map(|r| (r.round, r.latency.p50_us / floor.floor_us))
                .collect(),
            _ => Vec::new(),
        };
        let etcd = cell(runs, "etcd", "write", 1, 1);
        let (p50, floor_us) = (
            cell(runs, target, "write", 1, 1).map(|c| c.p50_us.median),
            floor.map(|f| f.floor_us),
        );
        goals.push(judged(goal, target, &per_round, loads, |ratio| {
            let etcd = match (etcd, floor_us) {
                (Some(etcd), Some(floor_us)) => {
                    format!("; etcd {:.2}x", etcd.p50_us.median / floor_us)
                }
                _ => String::new(),
            };
            (
                ratio.median <= 2.0,
                format!(
                    "{} ({}; p50 {:.0}us, floor {:.0}us){etcd}",
                    times(ratio.median),
                    over_rounds(ratio, times),
                    p50.unwrap_or_default(),
                    floor_us.unwrap_or_default()
                ),
            )
        }));

        for (pipeline, share) in [(1u32, 0.75), (16, 0.5)] {
            let flag = if pipeline > 1 {
                format!(" -P {pipeline}")
            } else {
                String::new()
            };
            let goal = format!(
                "redis-benchmark -t set -c 50 -d 100{flag}: >= {:.0}% of Redis with \
                 appendfsync always",
                share * 100.0
            );
            let of = |name: &str| -> Vec<&RedisBenchmark> {
                redis_benchmarks
                    .iter()
                    .filter(|r| r.target == name && r.pipeline == pipeline)
                    .collect()
            };
            let (ours, redis) = (of(target), of("redis"));
            let per_round = paired(&ours, &redis);
            let median = |list: &[&RedisBenchmark]| {
                Spread::of(&list.iter().map(|r| r.requests_per_sec).collect::<Vec<_>>())
                    .map_or(0.0, |s| s.median)
            };
            let (ours_rps, redis_rps) = (median(&ours), median(&redis));
            goals.push(judged(goal, target, &per_round, loads, |ratio| {
                (
                    ratio.median >= share,
                    format!(
                        "{} ({}; {ours_rps:.0} vs {redis_rps:.0} requests/s)",
                        percent(ratio.median),
                        over_rounds(ratio, percent)
                    ),
                )
            }));
        }

        let goal = "linearizable reads at 64 clients: >= 4x etcd's".to_string();
        let (per_round, cells) = against_etcd(runs, target, "read", 64, 1);
        goals.push(judged(goal, target, &per_round, loads, |ratio| {
            let (ours, etcd) = cells.map_or((0.0, 0.0), |(ours, etcd)| {
                (ours.ops_per_sec.median, etcd.ops_per_sec.median)
            });
            (
                ratio.median >= 4.0,
                format!(
                    "{} ({}; {ours:.0} vs {etcd:.0} ops/s)",
                    times(ratio.median),
                    over_rounds(ratio, times)
                ),
            )
        }));
    }
    if targets.iter().any(|t| t == CHORUS_LEASE_TARGET) {
        let target = CHORUS_LEASE_TARGET;
        let goal = "linearizable reads at 64 clients, leases on: >= 75% of Redis".to_string();
        let per_round = paired(
            &cell_runs(runs, target, "read", 64, 1),
            &cell_runs(runs, "redis", "read", 64, 1),
        );
        let cells = cell(runs, target, "read", 64, 1).zip(cell(runs, "redis", "read", 64, 1));
        goals.push(judged(goal, target, &per_round, loads, |ratio| {
            let (ours, redis) = cells.map_or((0.0, 0.0), |(ours, redis)| {
                (ours.ops_per_sec.median, redis.ops_per_sec.median)
            });
            (
                ratio.median >= 0.75,
                format!(
                    "{} ({}; {ours:.0} vs {redis:.0} ops/s)",
                    percent(ratio.median),
                    over_rounds(ratio, percent)
                ),
            )
        }));
    }
    goals
}

fn unjudged(goal: String, target: &str) -> Goal {
    Goal {
        goal,
        target: target.to_string(),
        ratio: None,
        ratio_min: None,
        ratio_max: None,
        met: None,
        detail: "not measured in this run".to_string(),
        refused: None,
    }
}

fn ms(us: f64) -> String {
    if us >= 100_000.0 {
        format!("{:.0}", us / 1000.0)
    } else if us >= 10_000.0 {
        format!("{:.1}", us / 1000.0)
    } else {
        format!("{:.2}", us / 1000.0)
    }
}

fn workload_title(workload: &str) -> String {
    match workload {
        "write" => "Writes".to_string(),
        "read" => "Linearizable reads".to_string(),
        other => format!("Workload {other}"),
    }
}

/// The Markdown report (`README.md` of the output folder).
#[must_use]
pub fn markdown(comparison: &Comparison) -> String {
    let c = comparison;
    let s = &c.settings;
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks: Chorus, etcd and Redis side by side\n");
    let _ = writeln!(
        md,
        "One run of `chorus bench compare` on {} ({} cores, kernel {}), {} round(s). Every \
         target ran on this one machine, on 127.0.0.1, with a fresh data directory on the same disk:",
        c.date,
        c.machine.cores,
        c.machine.kernel.as_deref().unwrap_or("unknown"),
        s.rounds
    );
    let _ = writeln!(md);
    for target in &c.targets {
        let what = match target.as_str() {
            "etcd" => format!(
                "3 members, Raft, fsync on: 3 copies, 3 fsyncs per write (2 waited for) ({})",
                c.machine.etcd.as_deref().unwrap_or("etcd")
            ),
            "redis" => format!(
                "one node, `appendonly yes`, `appendfsync always`: 1 copy, 1 fsync per write \
                 ({})",
                c.machine.redis.as_deref().unwrap_or("redis")
            ),
            "chorus-pb" => format!(
                "`chorus up --protocol pb`: primary-backup, 3 servers (a primary, a backup \
                 and a spare) and a view service; each write is applied on the primary and \
                 the backup **in memory, with no fsync** (this scheme keeps nothing on disk, \
                 so it is not held to the fsync-on goals): 2 copies, 0 fsyncs per write; \
                 native client (sessions, exactly-once), Chorus {}",
                c.chorus_version
            ),
            "chorus-hybrid" => format!(
                "`chorus up --protocol hybrid`: 3 data servers (a primary, a backup and a \
                 spare) and a configuration group of 3 (Raft, off the data path); each write \
                 is appended and fsynced by the primary, then by the backup, before it is \
                 acknowledged: 2 copies, 2 fsyncs per write (group commit: one fsync per \
                 batch on each); reads on the primary under its lease, with no message; \
                 native client (sessions, exactly-once), Chorus {}",
                c.chorus_version
            ),
            "chorus-raft" => format!(
                "3 nodes, Raft, each write durable on a majority: 3 copies, 3 fsyncs per \
                 write (one per node, group commit; the leader's in parallel with the \
                 followers'), 2 of them waited for; reads by ReadIndex (a heartbeat round); \
                 native client (sessions, exactly-once), Chorus {}",
                c.chorus_version
            ),
            CHORUS_LEASE_TARGET => format!(
                "`chorus up --lease-reads`: the Raft cluster above, with linearizable reads \
                 served by the leader from its lease (thesis §6.4.1: no message while a \
                 quorum answered a heartbeat within the lease; a stated clock-drift bound of \
                 5%) rather than by a ReadIndex round; native client (sessions, \
                 exactly-once), Chorus {}",
                c.chorus_version
            ),
            other => format!(
                "3 nodes, {} replication, each write durable on a majority; native client \
                 (sessions, exactly-once), Chorus {}",
                other.trim_start_matches("chorus-"),
                c.chorus_version
            ),
        };
        let _ = writeln!(md, "- **{target}**: {what}");
    }
    for skipped in &c.skipped {
        let _ = writeln!(md, "- not run: {skipped}");
    }
    if let (Some(before), Some(after)) = (&c.machine.load_before, &c.machine.load_after) {
        let _ = writeln!(
            md,
            "\nLoad average (1, 5, 15 min) when the runs started: {before}; when they ended: \
             {after}. Anything else running on the machine slows every target, which is why \
             they take turns, and why every round is gated on the load (below)."
        );
    }
    let in_flight: Vec<String> = s.in_flight.iter().map(ToString::to_string).collect();
    let _ = writeln!(
        md,
        "\nClosed loop: each client sends its next request when its last returns. With 1 \
         request in flight per connection each client has its own connection; with N, clients \
         share connections N to one (64 clients at 4 in flight: 16 connections, each carrying \
         4 requests at once), pipelined on RESP (requests written as they come, replies \
         matched in order) and multiplexed on etcd's gRPC channel; a client count that N does \
         not divide is not run at N. Connection `i` starts at node `i mod 3`. The native Chorus \
         client runs one call at a time (its session numbers requests one after another) and \
         cannot pipeline, so at more than 1 in flight Chorus is driven through its RESP port \
         with plain SET and GET (under primary-backup, on the primary, as the others answer \
         MOVED). {} distinct {}-byte keys, {}-byte values, {:.0} s measured after {:.0} s of \
         warm-up per run; requests in flight per connection: {}.\n",
        s.key_count,
        s.key_size,
        s.value_size,
        s.duration_s,
        s.warmup_s,
        in_flight.join(", ")
    );
    let _ = writeln!(
        md,
        "{} round(s): each round runs every workload, at every number of requests in flight \
         and every client count, against every target in turn (A B C A B C ...), then \
         `redis-benchmark`. Every number below is the **median of the rounds**, with the \
         spread (the smallest and largest round) beside it; a ratio between two targets is \
         taken per round, then its median. Before each round the runner waits up to {:.0} s \
         for the 1-minute load average to fall to {:.2} (the previous round's own load takes \
         about a minute and a half to decay); a round that starts above it is **busy**, and no \
         ratio that uses a busy round is published. Latencies in milliseconds.\n",
        s.rounds, s.busy_wait_s, s.busy_load
    );
    let _ = writeln!(
        md,
        "Reproduce (needs `apt-get install etcd-server redis-server redis-tools \
         protobuf-compiler`):\n\n```sh\ncargo run --release --features etcd --bin chorus -- \
         bench compare\n```\n\nOptions: `--duration 10s --warmup 2s --clients 1,16,64,256 \
         --in-flight 1,4 --workloads write,read --rounds 3 --busy-load <half the CPUs> \
         --busy-wait 120s --targets etcd,redis,chorus-raft --out DIR`. Raw numbers, every \
         round's: [results.json](results.json).\n"
    );

    if !c.rounds.is_empty() {
        let _ = writeln!(md, "## Rounds and load\n");
        let _ = writeln!(
            md,
            "| round | waited | load at start (1, 5, 15 min) | load at end | busy |\n|---:|---:|---|---|---|"
        );
        let unknown = || "unknown".to_string();
        for load in &c.rounds {
            let _ = writeln!(
                md,
                "| {} | {:.0} s | {} | {} | {} |",
                load.round + 1,
                load.waited_s,
                load.before.map_or_else(unknown, |l| l.to_string()),
                load.after.map_or_else(unknown, |l| l.to_string()),
                if load.busy {
                    format!("**yes** (above {:.2})", load.threshold)
                } else {
                    "no".to_string()
                }
            );
        }
        let _ = writeln!(md);
    }

    if !c.goals.is_empty() {
        let _ = writeln!(md, "## Goals\n");
        let _ = writeln!(
            md,
            "Medians of the rounds, with the rounds' spread.\n\n| target | goal | met | measured |\n|---|---|---|---|"
        );
        for goal in &c.goals {
            let met = match (goal.met, &goal.refused) {
                (_, Some(_)) => "not published",
                (Some(true), None) => "yes",
                (Some(false), None) => "**no**",
                (None, None) => "n/a",
            };
            let _ = writeln!(
                md,
                "| {} | {} | {met} | {} |",
                goal.target, goal.goal, goal.detail
            );
        }
        let _ = writeln!(md);
    }

    for workload in &s.workloads {
        let _ = writeln!(md, "## {}\n", workload_title(workload));
        let _ = writeln!(
            md,
            "| target | in flight | clients | ops/s | ops/s spread | p50 | p90 | p99 | p99 spread | p99.9 | max | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for &in_flight in &s.in_flight {
            for &clients in &s.clients {
                for target in &c.targets {
                    if let Some(cell) = cell(&c.runs, target, workload, clients, in_flight) {
                        let _ = writeln!(
                            md,
                            "| {target} | {in_flight} | {clients} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
                            cell.ops_per_sec.median,
                            spread_text(&cell.ops_per_sec, |v| format!("{v:.0}")),
                            ms(cell.p50_us.median),
                            ms(cell.p90_us.median),
                            ms(cell.p99_us.median),
                            spread_text(&cell.p99_us, ms),
                            ms(cell.p999_us.median),
                            ms(cell.max_us.median),
                            cell.errors
                        );
                    }
                }
            }
        }
        let _ = writeln!(md);
        for &in_flight in &s.in_flight {
            let _ = writeln!(
                md,
                "![throughput]({}) ![latency]({})",
                throughput_file(workload, in_flight),
                latency_file(workload, in_flight)
            );
        }
        let _ = writeln!(md);
    }

    if !c.redis_benchmark.is_empty() {
        let _ = writeln!(md, "## redis-benchmark -t set -c 50\n");
        let _ = writeln!(
            md,
            "| target | options | requests | requests/s | spread |\n|---|---|---:|---:|---:|"
        );
        let mut pipelines: Vec<u32> = c.redis_benchmark.iter().map(|r| r.pipeline).collect();
        pipelines.sort_unstable();
        pipelines.dedup();
        for pipeline in pipelines {
            for target in &c.targets {
                let of: Vec<&RedisBenchmark> = c
                    .redis_benchmark
                    .iter()
                    .filter(|r| &r.target == target && r.pipeline == pipeline)
                    .collect();
                let rates: Vec<f64> = of.iter().map(|r| r.requests_per_sec).collect();
                let (Some(first), Some(rate)) = (of.first(), Spread::of(&rates)) else {
                    continue;
                };
                let flag = if pipeline > 1 {
                    format!(" -P {pipeline}")
                } else {
                    String::new()
                };
                let _ = writeln!(
                    md,
                    "| {target} | -d {}{flag} | {} | {:.0} | {} |",
                    first.data_size,
                    first.requests,
                    rate.median,
                    spread_text(&rate, |v| format!("{v:.0}"))
                );
            }
        }
        let _ = writeln!(md);
    }
    if let Some(floor) = &c.floor {
        let _ = writeln!(
            md,
            "## The physical floor\n\nOne 128-byte append into preallocated space plus \
             `fdatasync` on the disk of the data directories (the kind of sync the logs \
             do): p50 {:.0} us (p99 {:.0} us, {} samples taken between the runs). \
             One loopback TCP round trip: p50 {:.0} us. A replicated durable write cannot be \
             acknowledged faster than one fdatasync and two round trips: **{:.0} us**.\n",
            floor.fdatasync_p50_us,
            floor.fdatasync_p99_us,
            floor.fdatasync_samples,
            floor.round_trip_p50_us,
            floor.floor_us
        );
    }
    let errors: u64 = c.runs.iter().map(|r| r.errors).sum();
    if errors > 0 {
        let _ = writeln!(md, "## Errors\n");
        for r in c.runs.iter().filter(|r| r.errors > 0) {
            let kinds: Vec<String> = r
                .error_kinds
                .iter()
                .map(|(kind, count)| format!("{count} x `{}`", kind.replace('`', "'")))
                .collect();
            let _ = writeln!(
                md,
                "- round {}: {} {} x{} ({} in flight): {}",
                r.round + 1,
                r.target,
                r.workload.mix.name(),
                r.clients,
                r.in_flight,
                kinds.join(", ")
            );
        }
        let _ = writeln!(md);
    }
    md
}

/// A spread as a table shows it: `min–max`, or `-` for one round.
fn spread_text(spread: &Spread, show: impl Fn(f64) -> String) -> String {
    if spread.count < 2 {
        "-".to_string()
    } else {
        format!("{}–{}", show(spread.min), show(spread.max))
    }
}

/// The plots' names keep the old names at 1 request in flight.
fn plot_suffix(in_flight: usize) -> String {
    if in_flight == 1 {
        String::new()
    } else {
        format!("-inflight{in_flight}")
    }
}

fn throughput_file(workload: &str, in_flight: usize) -> String {
    format!("throughput-{workload}{}.svg", plot_suffix(in_flight))
}

fn latency_file(workload: &str, in_flight: usize) -> String {
    format!("latency-{workload}{}.svg", plot_suffix(in_flight))
}

/// The plots: throughput against clients, and p50/p99 latency against clients, per workload
/// and number of requests in flight per connection; medians of the rounds.
#[must_use]
pub fn plots(comparison: &Comparison) -> Vec<(String, String)> {
    let s = &comparison.settings;
    let x_ticks: Vec<String> = s.clients.iter().map(ToString::to_string).collect();
    let mut files = Vec::new();
    for workload in &s.workloads {
        for &in_flight in &s.in_flight {
            let title = format!(
                "{}, {in_flight} in flight per connection",
                workload_title(workload)
            );
            let mut throughput = Vec::new();
            let mut latency = Vec::new();
            for (number, target) in comparison.targets.iter().enumerate() {
                let color = svg::PALETTE[number % svg::PALETTE.len()].to_string();
                let cells: Vec<(usize, Cell)> = s
                    .clients
                    .iter()
                    .enumerate()
                    .filter_map(|(i, &clients)| {
                        cell(&comparison.runs, target, workload, clients, in_flight).map(|c| (i, c))
                    })
                    .collect();
                throughput.push(svg::Series {
                    name: target.clone(),
                    color: color.clone(),
                    dashed: false,
                    points: cells
                        .iter()
                        .map(|(i, c)| (*i, c.ops_per_sec.median))
                        .collect(),
                });
                for (name, dashed) in [("p50", false), ("p99", true)] {
                    let value = |c: &Cell| {
                        if dashed {
                            c.p99_us.median
                        } else {
                            c.p50_us.median
                        }
                    };
                    latency.push(svg::Series {
                        name: format!("{target} {name}"),
                        color: color.clone(),
                        dashed,
                        points: cells.iter().map(|(i, c)| (*i, value(c) / 1000.0)).collect(),
                    });
                }
            }
            let chart = |title: String, y_label: &str, log_y: bool, series| {
                svg::render(&svg::Chart {
                    title,
                    x_label: "concurrent clients".into(),
                    y_label: y_label.into(),
                    x_ticks: x_ticks.clone(),
                    log_y,
                    series,
                })
            };
            files.push((
                throughput_file(workload, in_flight),
                chart(
                    format!("{title}: throughput (median of rounds)"),
                    "operations per second",
                    false,
                    throughput,
                ),
            ));
            files.push((
                latency_file(workload, in_flight),
                chart(
                    format!("{title}: latency p50 (solid), p99 (dashed)"),
                    "milliseconds (log scale)",
                    true,
                    latency,
                ),
            ));
        }
    }
    files
}

/// Writes `results.json`, `README.md` and the plots into `out`.
///
/// # Errors
/// When a file cannot be written.
pub fn write_outputs(comparison: &Comparison, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let write = |name: &str, content: &str| {
        let path = out.join(name);
        std::fs::write(&path, content).with_context(|| format!("cannot write {}", path.display()))
    };
    let json = serde_json::to_string_pretty(comparison).context("cannot encode the results")?;
    write("results.json", &format!("{json}\n"))?;
    write("README.md", &markdown(comparison))?;
    for (name, content) in plots(comparison) {
        write(&name, &content)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::LatencySummary;
    use std::collections::BTreeMap;

    /// One run; `round` also seeds it, as in a comparison.
    fn report(
        target: &str,
        mix: Mix,
        (clients, in_flight, round): (usize, usize, u64),
        ops_per_sec: f64,
        p99_us: f64,
    ) -> Report {
        Report {
            target: target.into(),
            target_kind: "resp".into(),
            workload: WorkloadSpec {
                mix,
                key_count: 1000,
                key_size: 16,
                value_size: 100,
                seed: round + 1,
            },
            clients,
            in_flight,
            connections: clients / in_flight,
            round,
            pacing: Pacing::Closed,
            warmup_s: 1.0,
            duration_s: 10.0,
            ops: (ops_per_sec * 10.0) as u64,
            errors: 0,
            missed: 0,
            ops_per_sec,
            latency: LatencySummary {
                count: 10,
                mean_us: p99_us / 3.0,
                p50_us: p99_us / 4.0,
                p90_us: p99_us / 2.0,
                p99_us,
                p999_us: p99_us * 1.5,
                max_us: p99_us * 2.0,
            },
            reads: None,
            writes: None,
            error_kinds: BTreeMap::new(),
        }
    }

    fn quiet(round: u64) -> RoundLoad {
        let load = LoadAverage {
            one: 0.4,
            five: 0.5,
            fifteen: 0.6,
        };
        RoundLoad {
            round,
            cpus: 2,
            threshold: 1.0,
            waited_s: 0.0,
            before: Some(load),
            after: Some(load),
            busy: false,
        }
    }

    /// Three rounds: Chorus writes at 4.5x, 5.0x and 3.9x etcd (median 4.5x) with half its
    /// p99; reads at 2x; redis-benchmark at 80% of Redis, and 40% with -P 16.
    fn comparison() -> Comparison {
        let chorus_writes = [4500.0, 5000.0, 3900.0];
        let mut runs = Vec::new();
        let mut redis_benchmark = Vec::new();
        for round in 0..3u64 {
            for in_flight in [1, 4] {
                for clients in [1, 16, 64, 256] {
                    if clients % in_flight != 0 {
                        continue;
                    }
                    let at = (clients, in_flight, round);
                    runs.push(report("etcd", Mix::WriteOnly, at, 1000.0, 20_000.0));
                    runs.push(report(
                        "chorus-raft",
                        Mix::WriteOnly,
                        at,
                        chorus_writes[round as usize],
                        10_000.0,
                    ));
                    runs.push(report("etcd", Mix::ReadOnly, at, 2000.0, 5_000.0));
                    runs.push(report("chorus-raft", Mix::ReadOnly, at, 4000.0, 5_000.0));
                }
            }
            for (target, pipeline, rps) in [
                ("redis", 1, 50_000.0),
                ("chorus-raft", 1, 40_000.0),
                ("redis", 16, 200_000.0),
                ("chorus-raft", 16, 80_000.0),
            ] {
                redis_benchmark.push(RedisBenchmark {
                    target: target.into(),
                    pipeline,
                    data_size: 100,
                    round,
                    requests_per_sec: rps,
                    requests: 20_000,
                });
            }
        }
        Comparison {
            date: "today".into(),
            chorus_version: "0.1.0".into(),
            machine: Machine {
                cores: 2,
                etcd: Some("etcd Version: 3.4".into()),
                redis: None,
                kernel: None,
                load_before: None,
                load_after: None,
            },
            settings: Settings {
                duration_s: 10.0,
                warmup_s: 1.0,
                rounds: 3,
                clients: vec![1, 16, 64, 256],
                in_flight: vec![1, 4],
                busy_load: 1.0,
                busy_wait_s: 120.0,
                workloads: vec!["write".into(), "read".into()],
                key_count: 1000,
                key_size: 16,
                value_size: 100,
            },
            floor: Some(Floor {
                fdatasync_p50_us: 1000.0,
                fdatasync_p99_us: 2000.0,
                round_trip_p50_us: 50.0,
                floor_us: 1100.0,
                fdatasync_samples: 10,
            }),
            targets: vec!["etcd".into(), "chorus-raft".into()],
            skipped: vec!["redis: not installed".into()],
            rounds: (0..3).map(quiet).collect(),
            runs,
            redis_benchmark,
            goals: vec![],
        }
    }

    fn judge_all(c: &Comparison) -> Vec<Goal> {
        judge(
            &c.runs,
            &c.redis_benchmark,
            c.floor.as_ref(),
            &c.targets,
            &c.rounds,
        )
    }

    #[test]
    fn goals_are_judged_on_the_median_of_the_rounds_ratios() {
        let goals = judge_all(&comparison());
        // Writes at 16, 64, 256 clients, at 1 and 4 in flight; the floor; redis-benchmark
        // without and with -P 16; reads.
        assert_eq!(goals.len(), 10, "{goals:#?}");
        for write in &goals[..6] {
            assert!(write.goal.starts_with("writes at"), "{write:?}");
            assert_eq!(write.met, Some(true), "{write:?}");
            assert_eq!(write.ratio, Some(4.5));
            assert_eq!((write.ratio_min, write.ratio_max), (Some(3.9), Some(5.0)));
            assert!(
                write.detail.contains("3.90x–5.00x over 3 rounds"),
                "{write:?}"
            );
        }
        assert!(
            goals[3].goal.contains("16 clients, 4 in flight"),
            "{:?}",
            goals[3]
        );
        // p50 = 2500us against a floor of 1100us.
        assert_eq!(goals[6].met, Some(false));
        // redis-benchmark: 80% >= 75%; with -P 16 40% < 50%.
        assert_eq!((goals[7].met, goals[7].ratio), (Some(true), Some(0.8)));
        assert!(goals[8].goal.contains("-P 16"), "{:?}", goals[8]);
        assert_eq!((goals[8].met, goals[8].ratio), (Some(false), Some(0.4)));
        // Reads: 2x, not 4x.
        assert_eq!((goals[9].met, goals[9].ratio), (Some(false), Some(2.0)));
        assert!(goals.iter().all(|g| g.refused.is_none()));
    }

    #[test]
    fn the_lease_cluster_runs_only_reads_and_is_judged_against_redis() {
        assert!(runs_workload(CHORUS_LEASE_TARGET, Mix::ReadOnly));
        assert!(!runs_workload(CHORUS_LEASE_TARGET, Mix::WriteOnly));
        assert!(runs_workload("chorus-raft", Mix::WriteOnly));
        let mut c = comparison();
        c.targets.push(CHORUS_LEASE_TARGET.into());
        for round in 0..3u64 {
            let at = (64, 1, round);
            c.runs.push(report(
                CHORUS_LEASE_TARGET,
                Mix::ReadOnly,
                at,
                40_000.0,
                2_000.0,
            ));
            c.runs
                .push(report("redis", Mix::ReadOnly, at, 50_000.0, 1_000.0));
        }
        let goals = judge_all(&c);
        // The Raft cluster's ten, and the lease cluster's one.
        assert_eq!(goals.len(), 11, "{goals:#?}");
        let lease = &goals[10];
        assert_eq!(lease.target, CHORUS_LEASE_TARGET);
        assert!(
            lease.goal.contains("leases on: >= 75% of Redis"),
            "{lease:?}"
        );
        assert_eq!((lease.met, lease.ratio), (Some(true), Some(0.8)));
    }

    #[test]
    fn a_ratio_that_used_a_busy_round_is_not_published() {
        let mut c = comparison();
        c.rounds[1].busy = true;
        c.rounds[1].before = Some(LoadAverage {
            one: 2.5,
            five: 1.0,
            fifteen: 1.0,
        });
        c.goals = judge_all(&c);
        let refusal = "not published: machine busy (load 2.50 at round 2, threshold 1.00)";
        for goal in &c.goals {
            assert_eq!(goal.refused.as_deref(), Some(refusal), "{goal:?}");
            assert_eq!((goal.ratio, goal.met), (None, None), "{goal:?}");
        }
        let md = markdown(&c);
        assert!(
            md.contains(&format!("| not published | {refusal} |")),
            "{md}"
        );
        assert!(md.contains("| 2 | 0 s | 2.50 1.00 1.00 |"), "{md}");
        assert!(md.contains("**yes** (above 1.00)"), "{md}");
        // A ratio that did not use the busy round is published.
        c.runs.retain(|r| r.round != 1);
        c.redis_benchmark.retain(|r| r.round != 1);
        let goals = judge_all(&c);
        assert!(goals.iter().all(|g| g.refused.is_none()), "{goals:#?}");
        assert_eq!(goals[0].ratio, Some((4.5 + 3.9) / 2.0));
    }

    #[test]
    fn a_cell_is_the_median_of_its_rounds_with_their_spread() {
        let c = comparison();
        let write = cell(&c.runs, "chorus-raft", "write", 64, 4).expect("ran");
        assert_eq!(write.rounds, vec![0, 1, 2]);
        assert_eq!(write.ops_per_sec.median, 4500.0);
        assert_eq!(
            (write.ops_per_sec.min, write.ops_per_sec.max),
            (3900.0, 5000.0)
        );
        assert_eq!(write.p99_us.median, 10_000.0);
        // One client cannot share a connection four to one; other targets and counts did
        // not run.
        assert!(cell(&c.runs, "chorus-raft", "write", 1, 4).is_none());
        assert!(cell(&c.runs, "chorus-raft", "write", 2, 1).is_none());
        assert!(cell(&c.runs, "redis", "write", 64, 1).is_none());
    }

    #[test]
    fn outputs_are_written() {
        let mut c = comparison();
        c.goals = judge_all(&c);
        let dir = tempfile::tempdir().expect("a temp dir");
        write_outputs(&c, dir.path()).expect("written");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        for name in [
            "results.json",
            "README.md",
            "throughput-write.svg",
            "latency-write.svg",
            "throughput-read.svg",
            "latency-read.svg",
            "throughput-write-inflight4.svg",
            "latency-read-inflight4.svg",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
        }
        let json = std::fs::read_to_string(dir.path().join("results.json")).expect("json");
        let back: Comparison = serde_json::from_str(&json).expect("results.json decodes");
        assert_eq!(back, c);
        // Every round's raw numbers are kept.
        assert_eq!(back.runs.iter().filter(|r| r.round == 2).count(), 28);
        let md = std::fs::read_to_string(dir.path().join("README.md")).expect("md");
        assert!(
            md.contains("| chorus-raft | 4 | 64 | 4500 | 3900–5000 |"),
            "{md}"
        );
        assert!(md.contains("| chorus-raft | 1 | 64 | 4500 |"), "{md}");
        assert!(md.contains("## Linearizable reads"), "{md}");
        assert!(md.contains("## Rounds and load"), "{md}");
        assert!(md.contains("| 1 | 0 s | 0.40 0.50 0.60 |"), "{md}");
        assert!(
            md.contains("| chorus-raft | -d 100 -P 16 | 20000 | 80000 |"),
            "{md}"
        );
        assert!(md.contains("not run: redis: not installed"), "{md}");
        assert!(md.contains("throughput-write-inflight4.svg"), "{md}");
        assert!(md.contains("bench compare\n```"), "{md}");
    }
}
