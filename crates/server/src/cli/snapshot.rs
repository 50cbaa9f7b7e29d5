//! `chorus snapshot`: asks every node to snapshot its state machine now (`POST /snapshot` on
//! its admin port), waits for each snapshot to be durable, and prints one line per node with
//! the snapshot's index and size, or why there is none.
//!
//! The endpoint only raises a flag that the node's driver reads on its next tick, so the
//! command learns the outcome from `/status`: the request is done once the snapshot index
//! reaches what the node had applied when it was asked (a node with nothing applied since its
//! last snapshot is already done).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

/// Arguments of `chorus snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Admin (HTTP) addresses of the nodes.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:7201,127.0.0.1:7202,127.0.0.1:7203"
    )]
    pub endpoints: Vec<SocketAddr>,
    /// How long to wait for each node's snapshot to become durable.
    #[arg(long, default_value_t = 30)]
    pub timeout_secs: u64,
}

/// What one node said.
#[derive(Debug)]
struct Taken {
    index: u64,
    bytes: u64,
    log_length: u64,
}

/// Asks `endpoint` for a snapshot and waits until its snapshot index reaches what it had
/// applied when asked.
fn snapshot_node(endpoint: SocketAddr, within: Duration) -> anyhow::Result<Taken> {
    let before = super::up::fetch_status(endpoint)?;
    let protocol = before["protocol"].as_str().unwrap_or("?");
    anyhow::ensure!(
        protocol == "raft",
        "this node runs {protocol}, which keeps no snapshots"
    );
    let applied = before["applied"].as_u64().unwrap_or(0);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    agent
        .post(format!("http://{endpoint}/snapshot"))
        .send_empty()
        .with_context(|| format!("POST /snapshot to {endpoint} failed"))?;
    let deadline = Instant::now() + within;
    loop {
        // A node that stops answering for a moment (busy) is asked again until the deadline.
        if let Ok(status) = super::up::fetch_status(endpoint) {
            let index = status["snapshot_index"].as_u64().unwrap_or(0);
            if index >= applied {
                let first = status["first_index"].as_u64().unwrap_or(1);
                let last = status["last_index"].as_u64().unwrap_or(0);
                return Ok(Taken {
                    index,
                    bytes: status["snapshot_bytes"].as_u64().unwrap_or(0),
                    log_length: (last + 1).saturating_sub(first),
                });
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no snapshot at or above index {applied} within {}s (see the node's log)",
            within.as_secs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Snapshots every node and prints one line per node.
///
/// # Errors
/// When any node fails to snapshot in time (the other lines are printed first).
pub fn run(args: &SnapshotArgs) -> anyhow::Result<()> {
    println!(
        "{:<22} {:>10} {:>12} {:>8}  result",
        "admin", "snapshot", "snap-bytes", "log-len"
    );
    let within = Duration::from_secs(args.timeout_secs);
    let mut failed = 0;
    for endpoint in &args.endpoints {
        match snapshot_node(*endpoint, within) {
            Ok(taken) => println!(
                "{:<22} {:>10} {:>12} {:>8}  ok",
                endpoint.to_string(),
                taken.index,
                taken.bytes,
                taken.log_length
            ),
            Err(error) => {
                failed += 1;
                println!(
                    "{:<22} {:>10} {:>12} {:>8}  error: {error:#}",
                    endpoint.to_string(),
                    "-",
                    "-",
                    "-"
                );
            }
        }
    }
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} nodes did not snapshot",
        args.endpoints.len()
    );
    Ok(())
}
