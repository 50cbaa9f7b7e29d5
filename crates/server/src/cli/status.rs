//! `chorus status`: one line per node, read from each node's HTTP admin endpoint, then (Raft)
//! the voters and learners of the configuration the leader (or else the first node that
//! answered) has in force, and where each listens.

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
/// snapshot index, its file size and the log held after it; then (Raft) the membership.
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
    let mut membership: Option<serde_json::Value> = None;
    for endpoint in &args.endpoints {
        match super::up::fetch_status(*endpoint) {
            Ok(status) => {
                reachable += 1;
                if status["voters"].is_array()
                    && (membership.is_none() || status["role"] == "leader")
                {
                    membership = Some(status.clone());
                }
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
    if let Some(status) = membership {
        print_membership(&status);
    }
    Ok(())
}

/// Prints the voters and learners `status` reports, each with its addresses if known.
fn print_membership(status: &serde_json::Value) {
    let ids = |field: &str| -> Vec<u64> {
        status[field]
            .as_array()
            .map(|list| list.iter().filter_map(serde_json::Value::as_u64).collect())
            .unwrap_or_default()
    };
    let pending = if status["membership_committed"] == false {
        " (a change is committing)"
    } else {
        ""
    };
    println!(
        "\nmembership as node {} ({}) sees it{pending}:",
        status["id"],
        status["role"].as_str().unwrap_or("?")
    );
    let addresses = status["addresses"].as_array().cloned().unwrap_or_default();
    for (kind, list) in [("voter", ids("voters")), ("learner", ids("learners"))] {
        for id in list {
            let entry = addresses
                .iter()
                .find(|entry| entry["id"].as_u64() == Some(id));
            let show = |field: &str| {
                entry
                    .and_then(|entry| entry[field].as_str())
                    .unwrap_or("-")
                    .to_string()
            };
            println!(
                "  {kind:<8} {id:<4} peer {:<21} redis {:<21} admin {}",
                show("peer"),
                show("redis"),
                show("admin")
            );
        }
    }
}
