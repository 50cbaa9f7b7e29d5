//! `chorus-example-locks`: runs the lock service example.
//!
//! `sim` replicates it in the deterministic simulator under a chosen scheme and fault profile,
//! seed after seed, and prints what each run found (the simulator's checkers and the lock
//! service's own check, [`chorus_example_locks::check_history`]).
//!
//! `cluster` starts a real cluster of the lock service on 127.0.0.1 in this process (each node
//! with its durable log and snapshots, nodes talking TCP), runs concurrent clients against it,
//! and checks their history the same way.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_core::Prng;
use chorus_example_locks::{Bug, LockBench, LockService, Output, Reply, check_history};
use chorus_server::embed::{Node, RequestError, local_config};
use chorus_sim::{FaultProfile, Machine, Protocol, SimConfig, UserMachine, UserOperation};
use clap::{Parser, Subcommand};

/// The lock service with fencing tokens, replicated by Chorus.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Replicate the lock service in the simulator, with faults, and check every run.
    Sim {
        /// The replication scheme: raft, pb or hybrid.
        #[arg(long, default_value = "raft")]
        protocol: Protocol,
        /// The faults: none, network, crash, crash-many or all.
        #[arg(long, default_value = "all")]
        faults: FaultProfile,
        /// The first seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// How many seeds to run, from `--seed` on.
        #[arg(long, default_value_t = 10)]
        seeds: u64,
        /// Lock operations per run.
        #[arg(long, default_value_t = 500)]
        ops: usize,
        /// Switch on the deliberate bug (a restore forgets free locks' tokens), to see the
        /// checks catch it.
        #[arg(long)]
        bug: bool,
    },
    /// Start a real local cluster of the lock service, run clients against it, and check
    /// their history.
    Cluster {
        /// The replication scheme (the runtime replicates a state machine of one's own by
        /// raft only so far).
        #[arg(long, default_value = "raft")]
        protocol: Protocol,
        /// Nodes in the cluster.
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Ports: peer `base + id`, admin `base + 200 + id`.
        #[arg(long, default_value_t = 17400)]
        base_port: u16,
        /// Concurrent clients.
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// Lock operations per client.
        #[arg(long, default_value_t = 100)]
        ops: usize,
        /// The data directory (a fresh one under the system's temporary directory by
        /// default, removed at the end).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Mode::Sim {
            protocol,
            faults,
            seed,
            seeds,
            ops,
            bug,
        } => simulate(protocol, faults, seed..seed.saturating_add(seeds), ops, bug),
        Mode::Cluster {
            protocol,
            nodes,
            base_port,
            clients,
            ops,
            data_dir,
        } => {
            if protocol != Protocol::Raft {
                eprintln!(
                    "the runtime replicates a state machine of one's own by raft only so far \
                     (its {protocol} host replicates the key-value store alone); the simulator \
                     runs the lock service under {protocol}: `sim --protocol {protocol}`"
                );
                return ExitCode::from(2);
            }
            let temporary = data_dir.is_none();
            let dir = data_dir.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("chorus-locks-{}", std::process::id()))
            });
            let result = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|runtime| {
                    runtime.block_on(cluster(nodes, base_port, clients, ops, dir.clone()))
                });
            if temporary {
                let _ = std::fs::remove_dir_all(&dir);
            }
            match result {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(error) => {
                    eprintln!("chorus-example-locks: {error:#}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// Microseconds since `start`.
fn micros(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Runs a local cluster, its clients and the check; whether the history passed.
async fn cluster(
    count: u64,
    base_port: u16,
    clients: usize,
    ops: usize,
    dir: PathBuf,
) -> anyhow::Result<bool> {
    let mut nodes = Vec::new();
    for id in 1..=count {
        let config = local_config(count, id, base_port, &dir);
        nodes.push(Node::start_raft::<LockService>(config).await?);
    }
    println!(
        "raft: {count} nodes on 127.0.0.1 (peer ports from {}), data in {}",
        u64::from(base_port) + 1,
        dir.display()
    );
    let nodes = Arc::new(nodes);
    let start = Instant::now();
    let seed = micros(start) ^ u64::from(std::process::id());
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let nodes = nodes.clone();
            tokio::spawn(run_client(nodes, client, ops, seed, start))
        })
        .collect();
    let mut history = Vec::new();
    for task in tasks {
        history.extend(task.await?);
    }
    let elapsed = start.elapsed();
    history.sort_by_key(|op: &UserOperation| (op.call, op.client));
    let outputs: Vec<Output> = history
        .iter()
        .filter_map(|op| op.output.as_deref().and_then(Output::decode))
        .collect();
    let grants = outputs
        .iter()
        .filter_map(|o| match o.reply {
            Reply::Granted { token, .. } => Some(token),
            _ => None,
        })
        .collect::<Vec<_>>();
    println!(
        "{} lock operations by {clients} clients, {} answered ({} grants, highest token {}) in \
         {} ms",
        history.len(),
        outputs.len(),
        grants.len(),
        grants.iter().max().copied().unwrap_or(0),
        elapsed.as_millis()
    );
    let verdict = check_history(&history);
    match &verdict {
        Ok(()) => println!(
            "the history passes the lock check: the log order agrees with real time, tokens \
             strictly increase, never two holders at once"
        ),
        Err(detail) => println!("VIOLATION: {detail}"),
    }
    let nodes = Arc::into_inner(nodes).unwrap_or_default();
    for node in nodes {
        node.stop()?;
    }
    Ok(verdict.is_ok())
}

/// One client: `ops` lock commands, each sent to a random node and retried (on any node)
/// until answered; lock commands are safe to repeat.
async fn run_client(
    nodes: Arc<Vec<Node>>,
    client: usize,
    ops: usize,
    seed: u64,
    start: Instant,
) -> Vec<UserOperation> {
    let bench = LockBench::default();
    let mut rng = Prng::new(seed ^ (client as u64).rotate_left(32));
    let mut history = Vec::with_capacity(ops);
    for _ in 0..ops {
        let command: Bytes = bench.next_command(client, &mut rng).encode();
        let call = micros(start);
        let mut answer = None;
        for _attempt in 0..20 {
            let node = &nodes[rng.index(nodes.len())];
            match node.write(command.clone()).await {
                Ok(output) => {
                    answer = Some((micros(start), output));
                    break;
                }
                Err(RequestError::Stopped) => break,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        history.push(UserOperation {
            client,
            command,
            call,
            ret: answer.as_ref().map(|(ret, _)| *ret),
            output: answer.map(|(_, output)| output),
        });
    }
    history
}

fn simulate(
    protocol: Protocol,
    faults: FaultProfile,
    seeds: std::ops::Range<u64>,
    ops: usize,
    bug: bool,
) -> ExitCode {
    let bench = UserMachine::new(LockBench {
        bug: bug.then_some(Bug::RestoreForgetsFreeLocks),
        ..LockBench::default()
    });
    let mut failed = 0;
    for seed in seeds {
        let mut config = SimConfig::new(seed);
        config.protocol = protocol;
        config.faults = faults;
        config.ops = ops;
        config.machine = Machine::User(bench.clone());
        let report = chorus_sim::run(config);
        let outputs: Vec<Output> = report
            .user_history
            .iter()
            .filter_map(|op| op.output.as_deref().and_then(Output::decode))
            .collect();
        let granted = outputs
            .iter()
            .filter(|o| matches!(o.reply, Reply::Granted { .. }))
            .count();
        let top_token = outputs
            .iter()
            .filter_map(|o| match o.reply {
                Reply::Granted { token, .. } => Some(token),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        println!(
            "{protocol} seed {seed}: {} lock operations, {} answered ({granted} grants, highest \
             token {top_token}); {} crashes, {} partitions; {}",
            report.user_history.len(),
            outputs.len(),
            report.stats.crashes,
            report.stats.partitions,
            if report.violations.is_empty() {
                "ok".to_owned()
            } else {
                format!("{} violations", report.violations.len())
            }
        );
        if let Some(first) = report.violations.first() {
            failed += 1;
            println!("  [{}] {}", first.invariant, first.detail);
        }
    }
    if failed == 0 {
        println!("every run passed the simulator's checkers and the lock service's check");
        ExitCode::SUCCESS
    } else {
        println!("{failed} runs found violations");
        ExitCode::FAILURE
    }
}
