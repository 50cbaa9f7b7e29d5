//! Run a real cluster of your own state machine: nodes in this process, talking TCP to each
//! other, each with its durable log, snapshots and HTTP admin page, exactly as the `chorus`
//! binary runs the key-value store.
//!
//! Why: a state machine is only replicated for real once it runs on the runtime, with real
//! disks, sockets and clocks; the simulator (`chorus_sim::Workbench`) tests it, this runs it.
//! The state machine implements [`Replicated`] (a [`chorus_core::StateMachine`] that can start
//! empty); [`Node::start_raft`] starts one node of a cluster described by a [`NodeConfig`]
//! (for a local cluster, [`local_config`]), and [`Node::write`] replicates a command and
//! returns its output. A command sent to a follower is forwarded to the leader.
//!
//! Only Raft is offered: the primary-backup and hybrid hosts of the runtime replicate the
//! key-value store alone so far.
//!
//! ```no_run
//! # async fn demo<M: chorus_server::embed::Replicated>() -> anyhow::Result<()> {
//! use chorus_server::embed::{Node, local_config};
//! let dir = std::env::temp_dir().join("my-cluster");
//! let mut nodes = Vec::new();
//! for id in 1..=3 {
//!     nodes.push(Node::start_raft::<M>(local_config(3, id, 7400, &dir)).await?);
//! }
//! let output = nodes[0].write(bytes::Bytes::from_static(b"my command")).await;
//! for node in nodes {
//!     node.stop()?;
//! }
//! # Ok(()) }
//! ```

use std::path::Path;

use bytes::Bytes;
use chorus_core::NodeId;

pub use crate::config::NodeConfig;
use crate::node::{Started, start_node, start_raft};
pub use crate::runtime::boundary::RequestError;
use crate::runtime::boundary::{Input, offer};
pub use crate::runtime::raft_host::Replicated;

/// The configuration of node `id` (1 to `count`) of a local cluster of `count` nodes on
/// 127.0.0.1: peer port `base_port + id`, HTTP admin port `base_port + 200 + id`, data in
/// `data_dir/node-<id>`. (Its RESP addresses are never bound: see [`Node::start_raft`].)
#[must_use]
pub fn local_config(count: u64, id: u64, base_port: u16, data_dir: &Path) -> NodeConfig {
    let mut config = NodeConfig::local(count, id, base_port, data_dir);
    config.cluster_id = "chorus-embedded".into();
    config
}

/// One node running in this process.
pub struct Node {
    started: Started,
}

impl Node {
    /// Starts node `config` replicating `M` by Raft: opens (or creates) its data directory,
    /// restores its state machine from the newest snapshot, replays its log, binds its
    /// peer and admin addresses and starts its driver thread. Call it inside a tokio
    /// runtime, which serves the node's sockets. It serves no RESP clients (the RESP
    /// frontend speaks the key-value store's commands): commands come through
    /// [`Node::write`].
    ///
    /// # Errors
    /// If the configuration is invalid, the data directory cannot be opened or is corrupt, or
    /// an address cannot be bound.
    pub async fn start_raft<M: Replicated>(mut config: NodeConfig) -> anyhow::Result<Node> {
        config.validate()?;
        for node in &mut config.nodes {
            node.redis = None;
        }
        let (host, incarnation, tick) = start_raft::<M>(&config, config.voters())?;
        let started = start_node(&config, host, incarnation, tick, "").await?;
        Ok(Node { started })
    }

    /// The node's id.
    #[must_use]
    pub fn id(&self) -> NodeId {
        self.started.me
    }

    /// Replicates `command` and returns the state machine's output once the command is
    /// committed and applied.
    ///
    /// # Errors
    /// [`RequestError::Unavailable`] or [`RequestError::Busy`] when nothing was proposed (try
    /// again), [`RequestError::Timeout`] when the outcome is unknown, and
    /// [`RequestError::Stopped`] once the node stops.
    pub async fn write(&self, command: Bytes) -> Result<Bytes, RequestError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        offer(&self.started.inputs, Input::Write { command, reply })?;
        answer.await.unwrap_or(Err(RequestError::Stopped))
    }

    /// Stops the node's driver and waits for it. Its sockets close when the tokio runtime
    /// that served them shuts down.
    ///
    /// # Errors
    /// If the driver had stopped on a storage error, or panicked.
    pub fn stop(self) -> anyhow::Result<()> {
        self.started.stop()
    }
}
