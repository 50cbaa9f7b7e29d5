//! The `chorus` command line.
//!
//! Today it runs the deterministic simulator (`chorus sim`); the server runtime, the local
//! cluster and the clients join it as they land.

mod sim;

use clap::{Parser, Subcommand};

/// Chorus: a replicated state machine and a strongly consistent key-value store.
#[derive(Debug, Parser)]
#[command(name = "chorus", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the deterministic simulator over a range of seeds and check every invariant.
    Sim(sim::SimArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Sim(args) => match sim::run(&args) {
            Ok(true) => std::process::ExitCode::SUCCESS,
            Ok(false) => std::process::ExitCode::from(1),
            Err(error) => {
                eprintln!("chorus sim: {error:#}");
                std::process::ExitCode::from(2)
            }
        },
    }
}
