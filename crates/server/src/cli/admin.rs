//! `chorus admin`: membership operations on a running Raft cluster, through any node's HTTP
//! admin endpoint (see [`crate::frontends::admin`]).
//!
//! The command asks the first node that answers; a node that is not the leader names the
//! leader's admin address and the command asks there. It prints what the leader did once the
//! change committed (or the transfer's target leads), and fails with the leader's reason
//! otherwise.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::frontends::admin::{ADMIN_WAIT, AddLearnerBody, AdminAnswer, NodeBody};

/// Arguments of `chorus admin`.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Admin (HTTP) addresses of members; any one will do (the leader is found from it).
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:7201,127.0.0.1:7202,127.0.0.1:7203"
    )]
    pub endpoints: Vec<SocketAddr>,
    /// What to do.
    #[command(subcommand)]
    pub operation: Operation,
}

/// A membership operation.
#[derive(Debug, Subcommand)]
pub enum Operation {
    /// Add a running node (started with `join`, or with no configuration of its own) as a
    /// learner: it receives the log but does not vote.
    AddLearner {
        /// The new node's id (never used before in this cluster).
        id: u64,
        /// Its peer address.
        #[arg(long)]
        peer: SocketAddr,
        /// Its HTTP admin address.
        #[arg(long)]
        admin: SocketAddr,
        /// Its RESP address.
        #[arg(long)]
        redis: Option<SocketAddr>,
    },
    /// Make a learner a voter, once it has caught up with the leader's log.
    Promote {
        /// The learner.
        id: u64,
    },
    /// Remove a voter or a learner (the leader itself too: it steps down once the change
    /// commits).
    Remove {
        /// The member.
        id: u64,
    },
    /// Hand leadership to a voter.
    TransferLeader {
        /// The voter that should lead.
        id: u64,
    },
}

/// Runs `chorus admin`.
///
/// # Errors
/// When no node answers, or the leader refuses the operation.
pub fn run(args: &AdminArgs) -> anyhow::Result<()> {
    let answer = match &args.operation {
        Operation::AddLearner {
            id,
            peer,
            admin,
            redis,
        } => call(
            &args.endpoints,
            "add-learner",
            &AddLearnerBody {
                cluster_id: None,
                id: *id,
                peer: *peer,
                redis: *redis,
                admin: *admin,
            },
        )?,
        Operation::Promote { id } => call(&args.endpoints, "promote", &NodeBody { id: *id })?,
        Operation::Remove { id } => call(&args.endpoints, "remove", &NodeBody { id: *id })?,
        Operation::TransferLeader { id } => {
            call(&args.endpoints, "transfer-leader", &NodeBody { id: *id })?
        }
    };
    println!("{}", answer.message.unwrap_or_else(|| "done".to_string()));
    Ok(())
}

/// Posts `body` to `/admin/{operation}` of the first of `endpoints` that answers, following
/// the answer to the leader; returns the leader's answer once it is done.
///
/// # Errors
/// When no node answers, or the leader refuses the operation (its reason).
pub fn call<B: Serialize>(
    endpoints: &[SocketAddr],
    operation: &str,
    body: &B,
) -> anyhow::Result<AdminAnswer> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(ADMIN_WAIT + Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut last_error = anyhow::anyhow!("no admin endpoint given");
    for &endpoint in endpoints {
        let mut target = endpoint;
        // A member names the leader; the leader answers. A few hops allow for a leader
        // that changes meanwhile.
        for _ in 0..4 {
            let answer = match post(&agent, target, operation, body) {
                Ok(answer) => answer,
                Err(error) => {
                    last_error = error;
                    break;
                }
            };
            if answer.ok {
                return Ok(answer);
            }
            let reason = answer.error.clone().unwrap_or_default();
            match answer.leader_admin {
                Some(leader) if leader != target => target = leader,
                _ if answer.leader.is_some() || reason.contains("no leader") => {
                    last_error = anyhow::anyhow!("{target}: {reason}");
                    break;
                }
                _ => bail!("{target}: {reason}"),
            }
        }
    }
    Err(last_error)
}

fn post<B: Serialize>(
    agent: &ureq::Agent,
    target: SocketAddr,
    operation: &str,
    body: &B,
) -> anyhow::Result<AdminAnswer> {
    let mut response = agent
        .post(format!("http://{target}/admin/{operation}"))
        .send_json(body)
        .with_context(|| format!("no answer from {target}"))?;
    let status = response.status();
    response
        .body_mut()
        .read_json::<AdminAnswer>()
        .with_context(|| format!("{target} answered {status} without a JSON body"))
}
