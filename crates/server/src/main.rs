//! The `chorus` command line: run a node, a local cluster, the simulator, and talk to a
//! cluster.

mod admin;
mod config;
mod driver;
mod kv;
mod metrics;
mod node;
mod pb_driver;
mod redis;
mod sim;
mod transport;
mod up;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

/// Chorus: a replicated state machine and a strongly consistent key-value store.
#[derive(Debug, Parser)]
#[command(name = "chorus", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a local cluster of separate node processes on 127.0.0.1 and keep it up until Ctrl-C.
    Up(up::UpArgs),
    /// Run one node of a cluster described in a TOML file.
    Server(ServerArgs),
    /// Show every node's role, term, leader, commit and applied index.
    Status(StatusArgs),
    /// Read and write keys through the native client (sessions, exactly-once retries).
    Kv(kv::KvArgs),
    /// Run the deterministic simulator over a range of seeds and check every invariant.
    Sim(sim::SimArgs),
    /// Load-test a cluster (Chorus, any RESP server, etcd), or `bench compare` Chorus with
    /// etcd and Redis side by side.
    Bench(Box<chorus_bench::BenchArgs>),
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// The node's configuration file.
    #[arg(long)]
    config: PathBuf,
    /// Stop when the parent process goes away (used by `chorus up`).
    #[arg(long, hide = true)]
    exit_with_parent: bool,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// Admin (HTTP) addresses of the nodes.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:7201,127.0.0.1:7202,127.0.0.1:7203"
    )]
    endpoints: Vec<SocketAddr>,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

fn serve(args: &ServerArgs) -> anyhow::Result<()> {
    init_logging();
    let config = config::NodeConfig::load(&args.config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("chorus-io")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(node::run(config, args.exit_with_parent))
}

fn status(args: &StatusArgs) -> anyhow::Result<()> {
    println!(
        "{:<6} {:<14} {:>6} {:>7} {:>10} {:>10} {:>6}  admin",
        "node", "role", "term", "leader", "commit", "applied", "lag"
    );
    let mut reachable = 0;
    for endpoint in &args.endpoints {
        match up::fetch_status(*endpoint) {
            Ok(status) => {
                reachable += 1;
                let number = |field: &str| status[field].as_u64().unwrap_or(0);
                let leader = status["leader"]
                    .as_u64()
                    .map_or("-".to_string(), |l| l.to_string());
                println!(
                    "{:<6} {:<14} {:>6} {:>7} {:>10} {:>10} {:>6}  {endpoint}",
                    number("id"),
                    status["role"].as_str().unwrap_or("?"),
                    number("term"),
                    leader,
                    number("commit"),
                    number("applied"),
                    number("commit").saturating_sub(number("applied")),
                );
            }
            Err(error) => println!(
                "{:<6} {:<14} {:>6} {:>7} {:>10} {:>10} {:>6}  {endpoint} ({error:#})",
                "?", "unreachable", "-", "-", "-", "-", "-"
            ),
        }
    }
    anyhow::ensure!(reachable > 0, "no node answered");
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sim(args) => match sim::run(&args) {
            Ok(true) => return std::process::ExitCode::SUCCESS,
            Ok(false) => return std::process::ExitCode::from(1),
            Err(error) => Err(error),
        },
        Command::Up(args) => up::run(&args),
        Command::Server(args) => serve(&args),
        Command::Status(args) => status(&args),
        Command::Kv(args) => kv::run(&args),
        Command::Bench(args) => chorus_bench::main(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("chorus: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}
