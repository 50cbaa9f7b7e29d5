//! `chorus bench compare`: Chorus, etcd and Redis on the same machine, the same workload, in
//! the same run.
//!
//! The runner checks what is installed and says what is missing and how to get it (it
//! installs nothing), starts every target on 127.0.0.1 with a fresh data directory (a
//! 3-member etcd with fsync on, one Redis with `appendonly yes` and `appendfsync always`, a
//! 3-node Chorus cluster per replication scheme), measures the physical floor of a replicated
//! write on the same disk, then runs each workload at each client count against every target
//! in turn (A B C A B C …, so that machine noise hits all of them alike), runs
//! `redis-benchmark -t set -c 50` against Redis and Chorus, stops everything (also on an error
//! or Ctrl-C), and writes `docs/benchmarks/`: `results.json`, a `README.md` with the tables and
//! the goals of the benchmark issue, and SVG plots.

pub mod floor;
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
use services::Service;

/// The replication schemes of Chorus that the comparison runs, each as a 3-node cluster.
/// A scheme other than the first runs only when `chorus up --help` offers `--protocol` and
/// names it; add a new scheme here (one line) when `chorus up` can run it.
pub const CHORUS_SCHEMES: &[&str] = &["raft", "pb", "hybrid"];

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
    /// Client counts, each run against every target.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    pub clients: Vec<usize>,
    /// Workloads, in order (`write`, `read`, `mixed-R`); reads come after writes so that
    /// the keys exist.
    #[arg(long, value_delimiter = ',', default_value = "write,read")]
    pub workloads: Vec<Mix>,
    /// Repeat the whole interleaved sequence this many times (tables show the median run).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=20))]
    pub rounds: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 1000)]
    pub keys: u64,
    /// Bytes per key.
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Requests of each `redis-benchmark -t set -c 50` run (0 skips it).
    #[arg(long, default_value_t = 20_000)]
    pub redis_benchmark_requests: u64,
    /// Only these targets (`etcd`, `redis`, `chorus-raft`, `chorus-pb`, `chorus-hybrid`); all
    /// by default.
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
    /// Workload names.
    pub workloads: Vec<String>,
    /// Distinct keys.
    pub key_count: u64,
    /// Bytes per key.
    pub key_size: usize,
    /// Bytes per value.
    pub value_size: usize,
}

/// One `redis-benchmark -t set -c 50` result.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RedisBenchmark {
    /// The target.
    pub target: String,
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
    /// The measured ratio (meaning depends on the goal: see `goal`).
    pub ratio: Option<f64>,
    /// Whether it was met; `None` when it could not be judged (a target missing).
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
    /// Every run, in the order it ran.
    pub runs: Vec<Report>,
    /// `redis-benchmark -t set -c 50` results.
    pub redis_benchmark: Vec<RedisBenchmark>,
    /// The goals, judged.
    pub goals: Vec<Goal>,
}

/// A target that is up, with whatever keeps it up.
struct Running {
    label: String,
    spec: TargetSpec,
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
            resp: Some(address),
            services: vec![service],
        });
    }
    let help = services::chorus_up_help(&chorus);
    let protocol_flag = help.contains("--protocol");
    for (index, scheme) in CHORUS_SCHEMES.iter().enumerate() {
        let label = format!("chorus-{scheme}");
        if !wanted(args, &label) {
            continue;
        }
        if index > 0 && !(protocol_flag && help.contains(scheme)) {
            skipped.push(format!(
                "{label}: `chorus up` of this build has no --protocol {scheme}"
            ));
            continue;
        }
        eprintln!("starting a 3-node Chorus cluster ({scheme})");
        let (service, endpoints) =
            services::start_chorus(&chorus, work, scheme, protocol_flag, &used_ports)?;
        used_ports.extend(endpoints.iter().map(SocketAddr::port));
        // redis-benchmark goes to the leader (or primary), as a Redis client goes to the master.
        let resp = services::chorus_leader(&endpoints).or_else(|| endpoints.first().copied());
        running.push(Running {
            label,
            spec: TargetSpec::Chorus { endpoints },
            resp,
            services: vec![service],
        });
    }
    anyhow::ensure!(!running.is_empty(), "no target to compare");
    let targets: Vec<String> = running.iter().map(|r| r.label.clone()).collect();
    eprintln!("targets: {}", targets.join(", "));

    let load_before = load_average();
    let mut runs = Vec::new();
    for round in 0..args.rounds {
        for mix in &args.workloads {
            for &clients in &args.clients {
                // A few floor samples between cells, so the floor sees the same machine.
                let _ = floor_samples.sample(work, 25, 250);
                for target in &mut running {
                    for service in &mut target.services {
                        service.check_alive()?;
                    }
                    let config = BenchConfig {
                        label: target.label.clone(),
                        target: target.spec.clone(),
                        workload: WorkloadSpec {
                            mix: *mix,
                            key_count: args.keys,
                            key_size: args.key_size,
                            value_size: args.value_size,
                            seed: round + 1,
                        },
                        clients,
                        pacing: Pacing::Closed,
                        warmup: args.warmup,
                        duration: args.duration,
                        record_history: false,
                        progress: !args.no_progress,
                    };
                    let outcome = run(&config)
                        .await
                        .with_context(|| format!("benchmark of {} failed", target.label))?;
                    eprint!("{}", format_table(std::slice::from_ref(&outcome.report)));
                    runs.push(outcome.report);
                }
            }
        }
    }

    let mut redis_benchmarks = Vec::new();
    if let (Some(program), true) = (&redis_benchmark, args.redis_benchmark_requests > 0) {
        for target in running.iter().filter(|t| t.label != "etcd") {
            let Some(address) = target.resp else {
                continue;
            };
            eprintln!("redis-benchmark -t set -c 50 against {}", target.label);
            let program = program.clone();
            let requests = args.redis_benchmark_requests;
            let result = tokio::task::spawn_blocking(move || {
                services::redis_benchmark(&program, address, requests, Duration::from_secs(120))
            })
            .await
            .context("redis-benchmark's thread failed")?;
            match result {
                Ok(rps) => redis_benchmarks.push(RedisBenchmark {
                    target: target.label.clone(),
                    requests_per_sec: rps,
                    requests,
                }),
                Err(error) => {
                    skipped.push(format!("redis-benchmark on {}: {error:#}", target.label))
                }
            }
        }
    }
    drop(running);
    let load_after = load_average();

    let machine = Machine {
        cores: std::thread::available_parallelism().map_or(1, usize::from),
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
    let goals = judge(&runs, &redis_benchmarks, floor.as_ref(), &targets);
    let comparison = Comparison {
        date: today(),
        chorus_version: env!("CARGO_PKG_VERSION").to_string(),
        machine,
        settings,
        floor,
        targets,
        skipped,
        runs,
        redis_benchmark: redis_benchmarks,
        goals,
    };
    write_outputs(&comparison, &args.out)?;
    print!("{}", format_table(&comparison.runs));
    for goal in &comparison.goals {
        println!(
            "{:<6} {:<14} {}: {}",
            match goal.met {
                Some(true) => "MET",
                Some(false) => "NOT",
                None => "n/a",
            },
            goal.target,
            goal.goal,
            goal.detail
        );
    }
    println!("wrote {}", args.out.display());
    Ok(())
}

/// The median run (by throughput) of `target` for a workload and client count.
#[must_use]
pub fn cell<'a>(
    runs: &'a [Report],
    target: &str,
    workload: &str,
    clients: usize,
) -> Option<&'a Report> {
    let mut matching: Vec<&Report> = runs
        .iter()
        .filter(|r| r.target == target && r.workload.mix.name() == workload && r.clients == clients)
        .collect();
    matching.sort_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec));
    matching.get(matching.len() / 2).copied()
}

/// Judges the goals of the benchmark issue for every Chorus target.
#[must_use]
pub fn judge(
    runs: &[Report],
    redis_benchmarks: &[RedisBenchmark],
    floor: Option<&Floor>,
    targets: &[String],
) -> Vec<Goal> {
    let mut goals = Vec::new();
    // The goals are for fsync-on replication; primary-backup keeps nothing on disk.
    for target in targets
        .iter()
        .filter(|t| t.starts_with("chorus") && t.as_str() != "chorus-pb")
    {
        for clients in [64, 256] {
            let ours = cell(runs, target, "write", clients);
            let etcd = cell(runs, "etcd", "write", clients);
            let goal =
                format!("writes at {clients} clients: >= 4x etcd's throughput, p99 <= etcd's");
            goals.push(match (ours, etcd) {
                (Some(ours), Some(etcd)) if etcd.ops_per_sec > 0.0 => {
                    let ratio = ours.ops_per_sec / etcd.ops_per_sec;
                    let p99_ok = ours.latency.p99_us <= etcd.latency.p99_us;
                    Goal {
                        goal,
                        target: target.clone(),
                        ratio: Some(ratio),
                        met: Some(ratio >= 4.0 && p99_ok),
                        detail: format!(
                            "{ratio:.2}x ({:.0} vs {:.0} ops/s); p99 {:.1} vs {:.1} ms",
                            ours.ops_per_sec,
                            etcd.ops_per_sec,
                            ours.latency.p99_us / 1000.0,
                            etcd.latency.p99_us / 1000.0
                        ),
                    }
                }
                _ => unjudged(goal, target),
            });
        }
        let goal = "one client: write p50 <= 2x the physical floor".to_string();
        goals.push(match (cell(runs, target, "write", 1), floor) {
            (Some(ours), Some(floor)) if floor.floor_us > 0.0 => {
                let ratio = ours.latency.p50_us / floor.floor_us;
                let etcd = cell(runs, "etcd", "write", 1)
                    .map(|e| format!("; etcd {:.2}x", e.latency.p50_us / floor.floor_us))
                    .unwrap_or_default();
                Goal {
                    goal,
                    target: target.clone(),
                    ratio: Some(ratio),
                    met: Some(ratio <= 2.0),
                    detail: format!(
                        "{ratio:.2}x (p50 {:.0}us, floor {:.0}us){etcd}",
                        ours.latency.p50_us, floor.floor_us
                    ),
                }
            }
            _ => unjudged(goal, target),
        });
        let goal =
            "redis-benchmark -t set -c 50: >= 50% of Redis with appendfsync always".to_string();
        let ours = redis_benchmarks.iter().find(|r| &r.target == target);
        let redis = redis_benchmarks.iter().find(|r| r.target == "redis");
        goals.push(match (ours, redis) {
            (Some(ours), Some(redis)) if redis.requests_per_sec > 0.0 => {
                let ratio = ours.requests_per_sec / redis.requests_per_sec;
                Goal {
                    goal,
                    target: target.clone(),
                    ratio: Some(ratio),
                    met: Some(ratio >= 0.5),
                    detail: format!(
                        "{:.0}% ({:.0} vs {:.0} requests/s)",
                        ratio * 100.0,
                        ours.requests_per_sec,
                        redis.requests_per_sec
                    ),
                }
            }
            _ => unjudged(goal, target),
        });
        let goal = "linearizable reads at 64 clients: >= 4x etcd's".to_string();
        goals.push(
            match (
                cell(runs, target, "read", 64),
                cell(runs, "etcd", "read", 64),
            ) {
                (Some(ours), Some(etcd)) if etcd.ops_per_sec > 0.0 => {
                    let ratio = ours.ops_per_sec / etcd.ops_per_sec;
                    Goal {
                        goal,
                        target: target.clone(),
                        ratio: Some(ratio),
                        met: Some(ratio >= 4.0),
                        detail: format!(
                            "{ratio:.2}x ({:.0} vs {:.0} ops/s)",
                            ours.ops_per_sec, etcd.ops_per_sec
                        ),
                    }
                }
                _ => unjudged(goal, target),
            },
        );
    }
    goals
}

fn unjudged(goal: String, target: &str) -> Goal {
    Goal {
        goal,
        target: target.to_string(),
        ratio: None,
        met: None,
        detail: "not measured in this run".to_string(),
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
        "One run of `chorus bench compare` on {} ({} cores, kernel {}). Every target ran on this \
         one machine, on 127.0.0.1, with a fresh data directory on the same disk:",
        c.date,
        c.machine.cores,
        c.machine.kernel.as_deref().unwrap_or("unknown")
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
             they take turns."
        );
    }
    let _ = writeln!(
        md,
        "\nClosed loop: each client (its own connection) sends its next request when the last \
         returns; clients start at node `i mod 3`. {} distinct {}-byte keys, {}-byte values, \
         {:.0} s measured after {:.0} s of warm-up per run, {} round(s); the targets take turns \
         for every workload and client count (A B C A B C ...). Latencies in milliseconds.\n",
        s.key_count, s.key_size, s.value_size, s.duration_s, s.warmup_s, s.rounds
    );
    let _ = writeln!(
        md,
        "Reproduce (needs `apt-get install etcd-server redis-server redis-tools \
         protobuf-compiler`):\n\n```sh\ncargo run --release --features etcd --bin chorus -- \
         bench compare\n```\n\nOptions: `--duration 10s --warmup 2s --clients 1,16,64,256 \
         --workloads write,read --rounds 1 --targets etcd,redis,chorus-raft --out DIR`. Raw \
         numbers: [results.json](results.json).\n"
    );

    if !c.goals.is_empty() {
        let _ = writeln!(md, "## Goals\n");
        let _ = writeln!(md, "| target | goal | met | measured |\n|---|---|---|---|");
        for goal in &c.goals {
            let met = match goal.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "n/a",
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
            "| target | clients | ops/s | p50 | p90 | p99 | p99.9 | max | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for &clients in &s.clients {
            for target in &c.targets {
                if let Some(r) = cell(&c.runs, target, workload, clients) {
                    let l = &r.latency;
                    let _ = writeln!(
                        md,
                        "| {target} | {clients} | {:.0} | {} | {} | {} | {} | {} | {} |",
                        r.ops_per_sec,
                        ms(l.p50_us),
                        ms(l.p90_us),
                        ms(l.p99_us),
                        ms(l.p999_us),
                        ms(l.max_us),
                        r.errors
                    );
                }
            }
        }
        let _ = writeln!(
            md,
            "\n![throughput]({}) ![latency]({})\n",
            throughput_file(workload),
            latency_file(workload)
        );
    }

    if !c.redis_benchmark.is_empty() {
        let _ = writeln!(md, "## redis-benchmark -t set -c 50\n");
        let _ = writeln!(md, "| target | requests | requests/s |\n|---|---:|---:|");
        for r in &c.redis_benchmark {
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} |",
                r.target, r.requests, r.requests_per_sec
            );
        }
        let _ = writeln!(md);
    }
    if let Some(floor) = &c.floor {
        let _ = writeln!(
            md,
            "## The physical floor\n\nOne 128-byte append plus `fdatasync` on the disk of the \
             data directories: p50 {:.0} us (p99 {:.0} us, {} samples taken between the runs). \
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
                "- {} {} x{}: {}",
                r.target,
                r.workload.mix.name(),
                r.clients,
                kinds.join(", ")
            );
        }
        let _ = writeln!(md);
    }
    md
}

fn throughput_file(workload: &str) -> String {
    format!("throughput-{workload}.svg")
}

fn latency_file(workload: &str) -> String {
    format!("latency-{workload}.svg")
}

/// The plots: throughput against clients, and p50/p99 latency against clients, per workload.
#[must_use]
pub fn plots(comparison: &Comparison) -> Vec<(String, String)> {
    let s = &comparison.settings;
    let x_ticks: Vec<String> = s.clients.iter().map(ToString::to_string).collect();
    let mut files = Vec::new();
    for workload in &s.workloads {
        let title = workload_title(workload);
        let mut throughput = Vec::new();
        let mut latency = Vec::new();
        for (number, target) in comparison.targets.iter().enumerate() {
            let color = svg::PALETTE[number % svg::PALETTE.len()].to_string();
            let cells: Vec<(usize, &Report)> = s
                .clients
                .iter()
                .enumerate()
                .filter_map(|(i, &clients)| {
                    cell(&comparison.runs, target, workload, clients).map(|r| (i, r))
                })
                .collect();
            throughput.push(svg::Series {
                name: target.clone(),
                color: color.clone(),
                dashed: false,
                points: cells.iter().map(|(i, r)| (*i, r.ops_per_sec)).collect(),
            });
            latency.push(svg::Series {
                name: format!("{target} p50"),
                color: color.clone(),
                dashed: false,
                points: cells
                    .iter()
                    .map(|(i, r)| (*i, r.latency.p50_us / 1000.0))
                    .collect(),
            });
            latency.push(svg::Series {
                name: format!("{target} p99"),
                color,
                dashed: true,
                points: cells
                    .iter()
                    .map(|(i, r)| (*i, r.latency.p99_us / 1000.0))
                    .collect(),
            });
        }
        files.push((
            throughput_file(workload),
            svg::render(&svg::Chart {
                title: format!("{title}: throughput"),
                x_label: "concurrent clients".into(),
                y_label: "operations per second".into(),
                x_ticks: x_ticks.clone(),
                log_y: false,
                series: throughput,
            }),
        ));
        files.push((
            latency_file(workload),
            svg::render(&svg::Chart {
                title: format!("{title}: latency p50 (solid), p99 (dashed)"),
                x_label: "concurrent clients".into(),
                y_label: "milliseconds (log scale)".into(),
                x_ticks: x_ticks.clone(),
                log_y: true,
                series: latency,
            }),
        ));
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

    fn report(target: &str, mix: Mix, clients: usize, ops_per_sec: f64, p99_us: f64) -> Report {
        Report {
            target: target.into(),
            target_kind: "resp".into(),
            workload: WorkloadSpec {
                mix,
                key_count: 1000,
                key_size: 16,
                value_size: 100,
                seed: 1,
            },
            clients,
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

    fn comparison() -> Comparison {
        let mut runs = Vec::new();
        for clients in [1, 64, 256] {
            runs.push(report("etcd", Mix::WriteOnly, clients, 1000.0, 20_000.0));
            runs.push(report(
                "chorus-raft",
                Mix::WriteOnly,
                clients,
                5000.0,
                10_000.0,
            ));
            runs.push(report("etcd", Mix::ReadOnly, clients, 2000.0, 5_000.0));
            runs.push(report(
                "chorus-raft",
                Mix::ReadOnly,
                clients,
                4000.0,
                5_000.0,
            ));
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
                rounds: 1,
                clients: vec![1, 64, 256],
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
            runs,
            redis_benchmark: vec![],
            goals: vec![],
        }
    }

    #[test]
    fn goals_are_judged_from_the_runs() {
        let c = comparison();
        let goals = judge(&c.runs, &c.redis_benchmark, c.floor.as_ref(), &c.targets);
        assert_eq!(goals.len(), 5);
        // 5x etcd with half its p99.
        assert_eq!(goals[0].met, Some(true));
        assert_eq!(goals[0].ratio, Some(5.0));
        assert_eq!(goals[1].met, Some(true));
        // p50 = 2500us against a floor of 1100us.
        assert_eq!(goals[2].met, Some(false));
        // No redis-benchmark: not judged.
        assert_eq!(goals[3].met, None);
        // Reads: 2x, not 4x.
        assert_eq!(goals[4].met, Some(false));
        assert_eq!(goals[4].ratio, Some(2.0));
    }

    #[test]
    fn the_median_run_stands_for_a_cell() {
        let runs = vec![
            report("a", Mix::WriteOnly, 1, 3.0, 1.0),
            report("a", Mix::WriteOnly, 1, 1.0, 1.0),
            report("a", Mix::WriteOnly, 1, 2.0, 1.0),
            report("a", Mix::ReadOnly, 1, 9.0, 1.0),
        ];
        assert_eq!(
            cell(&runs, "a", "write", 1).map(|r| r.ops_per_sec),
            Some(2.0)
        );
        assert!(cell(&runs, "a", "write", 2).is_none());
        assert!(cell(&runs, "b", "write", 1).is_none());
    }

    #[test]
    fn outputs_are_written() {
        let mut c = comparison();
        c.goals = judge(&c.runs, &c.redis_benchmark, c.floor.as_ref(), &c.targets);
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
        ] {
            assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
        }
        let json = std::fs::read_to_string(dir.path().join("results.json")).expect("json");
        let back: Comparison = serde_json::from_str(&json).expect("results.json decodes");
        assert_eq!(back, c);
        let md = std::fs::read_to_string(dir.path().join("README.md")).expect("md");
        assert!(md.contains("| chorus-raft | 64 | 5000 |"), "{md}");
        assert!(md.contains("## Linearizable reads"), "{md}");
        assert!(md.contains("not run: redis: not installed"), "{md}");
        assert!(md.contains("throughput-write.svg"), "{md}");
    }
}
