//! `chorus status`: one line per node, read from each node's HTTP admin endpoint.

use std::net::SocketAddr;

use clap::Args;

/// Arguments of `chorus status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Admin (HTTP) addresses of the nodes.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:7201,127.0.0.1:7202,127.0.0.1:7203"
    )]
    pub endpoints: Vec<SocketAddr>,
}

/// Prints one line per node: role, term, leader, commit and applied index, and (Raft) the
/// snapshot index, its file size and the log held after it.
///
/// # Errors
/// When no node answers.
pub fn run(args: &StatusArgs) -> anyhow::Result<()> {
    println!(
        "{:<6} {:<14} {:>6} {:>7} {:>10} {:>10} {:>6} {:>10} {:>10} {:>8}  admin",
        "node",
        "role",
        "term",
        "leader",
        "commit",
        "applied",
        "lag",
        "snapshot",
        "snap-bytes",
        "log-len"
    );
    let mut reachable = 0;
    for endpoint in &args.endpoints {
        match super::up::fetch_status(*endpoint) {
            Ok(status) => {
                reachable += 1;
                let number = |field: &str| status[field].as_u64().unwrap_or(0);
                let leader = status["leader"]
                    .as_u64()
                    .map_or("-".to_string(), |l| l.to_string());
                let optional = |field: &str| {
                    status[field]
                        .as_u64()
                        .map_or("-".to_string(), |n| n.to_string())
                };
                let log_length = status["first_index"]
                    .as_u64()
                    .map_or("-".to_string(), |first| {
                        (number("last_index") + 1).saturating_sub(first).to_string()
                    });
                println!(
                    "{:<6} {:<14} {:>6} {:>7} {:>10} {:>10} {:>6} {:>10} {:>10} {:>8}  {endpoint}",
                    number("id"),
                    status["role"].as_str().unwrap_or("?"),
                    number("term"),
                    leader,
                    number("commit"),
                    number("applied"),
                    number("commit").saturating_sub(number("applied")),
                    optional("snapshot_index"),
                    optional("snapshot_bytes"),
                    log_length,
                );
            }
            Err(error) => println!(
                "{:<6} {:<14} {:>6} {:>7} {:>10} {:>10} {:>6} {:>10} {:>10} {:>8}  {endpoint} ({error:#})",
                "?", "unreachable", "-", "-", "-", "-", "-", "-", "-", "-"
            ),
        }
    }
    anyhow::ensure!(reachable > 0, "no node answered");
    Ok(())
}
