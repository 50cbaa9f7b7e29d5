//! The `chorus` command line: run a node, a local cluster, the simulator, and talk to a
//! cluster.

// Everything but `main` is the library (`src/lib.rs`), so that programs can run the node
// runtime with their own state machine (`chorus_server::embed`).
use chorus_server::{cli, config, node};

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
    Up(cli::up::UpArgs),
    /// Run one node of a cluster described in a TOML file.
    Server(ServerArgs),
    /// Show every node's role, term, leader, commit and applied index, and (Raft) the
    /// voters and learners.
    Status(cli::status::StatusArgs),
    /// Ask every node (Raft) to snapshot its state now and compact its log; print each
    /// node's snapshot index and size.
    Snapshot(cli::snapshot::SnapshotArgs),
    /// Change a Raft cluster's membership: add-learner, promote, remove, transfer-leader.
    Admin(cli::admin::AdminArgs),
    /// Read and write keys through the native client (sessions, exactly-once retries).
    Kv(cli::kv::KvArgs),
    /// Run the deterministic simulator over a range of seeds and check every invariant.
    Sim(cli::sim::SimArgs),
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

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sim(args) => match cli::sim::run(&args) {
            Ok(true) => return std::process::ExitCode::SUCCESS,
            Ok(false) => return std::process::ExitCode::from(1),
            Err(error) => Err(error),
        },
        Command::Up(args) => cli::up::run(&args),
        Command::Server(args) => serve(&args),
        Command::Status(args) => cli::status::run(&args),
        Command::Snapshot(args) => cli::snapshot::run(&args),
        Command::Kv(args) => cli::kv::run(&args),
        Command::Admin(args) => cli::admin::run(&args),
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
