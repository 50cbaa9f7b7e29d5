//! The configuration of one node of a cluster, read from a TOML file.
//!
//! Every node of a cluster gets the same `[[nodes]]` table (who is in the cluster and where to
//! reach them) and its own `id` and `data_dir`. Timing has sane defaults: a 10 ms tick, an
//! election timeout of 15–30 ticks and a heartbeat every 3 ticks, so a new leader takes over
//! well within a second of the old one's death.
//!
//! ```toml
//! cluster_id = "chorus-local"
//! id = 1
//! data_dir = "/var/lib/chorus/1"
//!
//! [[nodes]]
//! id = 1
//! peer = "10.0.0.1:7100"    # Raft traffic between nodes
//! redis = "10.0.0.1:6379"   # RESP clients (redis-cli, the native client)
//! admin = "10.0.0.1:8100"   # HTTP: /status and /metrics
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use chorus_core::NodeId;
use serde::{Deserialize, Serialize};

/// Where one node listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAddress {
    /// The node's id, unique in the cluster and never reused.
    pub id: u64,
    /// Raft traffic from other nodes.
    pub peer: SocketAddr,
    /// RESP clients.
    pub redis: SocketAddr,
    /// HTTP admin and metrics.
    pub admin: SocketAddr,
}

/// Timing, in milliseconds and ticks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timing {
    /// Length of one Raft tick.
    pub tick_ms: u64,
    /// Minimum election timeout; each one is drawn from `[min, 2 * min)`.
    pub election_timeout_ticks: u64,
    /// How often the leader sends heartbeats.
    pub heartbeat_interval_ticks: u64,
    /// How long a client request may wait for its entry to apply before the client is told
    /// the outcome is unknown.
    pub request_timeout_ms: u64,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            tick_ms: 10,
            election_timeout_ticks: 15,
            heartbeat_interval_ticks: 3,
            request_timeout_ms: 5_000,
        }
    }
}

/// Bounds on queues and batches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Inputs (peer messages, client requests) waiting for the node's driver.
    pub driver_queue_max: usize,
    /// Messages waiting to be sent to one peer.
    pub peer_queue_max: usize,
    /// Bytes in one frame between nodes.
    pub frame_bytes_max: usize,
    /// Client requests one node holds while their entries replicate.
    pub requests_pending_max: usize,
    /// Requests one client connection may have in flight (pipelining).
    pub connection_inflight_max: usize,
    /// Client connections one node serves at once.
    pub connections_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            driver_queue_max: 16_384,
            peer_queue_max: 8_192,
            frame_bytes_max: 64 << 20,
            requests_pending_max: 65_536,
            connection_inflight_max: 1_024,
            connections_max: 4_096,
        }
    }
}

/// The configuration of one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Names the cluster; nodes refuse connections from another cluster.
    pub cluster_id: String,
    /// This node's id (one of `nodes`).
    pub id: u64,
    /// Where this node keeps its log and hard state.
    pub data_dir: PathBuf,
    /// Every node of the cluster.
    pub nodes: Vec<NodeAddress>,
    /// Timing.
    #[serde(default)]
    pub timing: Timing,
    /// Bounds.
    #[serde(default)]
    pub limits: Limits,
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's complaint, with line and column.
        message: String,
    },
    /// The content is inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl NodeConfig {
    /// Reads and validates a configuration file.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and what is wrong with it.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: NodeConfig = toml::from_str(&text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that the configuration can work.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        if self.cluster_id.is_empty() || self.cluster_id.len() > 128 {
            return invalid("cluster_id must be 1 to 128 bytes".into());
        }
        if self.nodes.is_empty() {
            return invalid("nodes is empty".into());
        }
        let mut ids: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|pair| pair[0] == pair[1]) {
            return invalid("two nodes share an id".into());
        }
        if ids.contains(&0) {
            return invalid("node id 0 is reserved".into());
        }
        if !ids.contains(&self.id) {
            return invalid(format!("id {} is not among the nodes", self.id));
        }
        let timing = &self.timing;
        if timing.tick_ms == 0 || timing.heartbeat_interval_ticks == 0 {
            return invalid("tick_ms and heartbeat_interval_ticks must be at least 1".into());
        }
        if timing.election_timeout_ticks <= timing.heartbeat_interval_ticks {
            return invalid("election_timeout_ticks must exceed heartbeat_interval_ticks".into());
        }
        let limits = &self.limits;
        if [
            limits.driver_queue_max,
            limits.peer_queue_max,
            limits.frame_bytes_max,
            limits.requests_pending_max,
            limits.connection_inflight_max,
            limits.connections_max,
        ]
        .contains(&0)
        {
            return invalid("every limit must be at least 1".into());
        }
        Ok(())
    }

    /// This node's id.
    #[must_use]
    pub fn node_id(&self) -> NodeId {
        NodeId(self.id)
    }

    /// This node's addresses.
    ///
    /// # Panics
    /// If the configuration was not validated.
    #[must_use]
    pub fn me(&self) -> &NodeAddress {
        self.nodes
            .iter()
            .find(|n| n.id == self.id)
            .expect("invariant: validate() checked that id is among the nodes")
    }

    /// Every node's id.
    #[must_use]
    pub fn voters(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| NodeId(n.id)).collect()
    }

    /// The configuration of node `id` of a local cluster of `count` nodes on 127.0.0.1, with
    /// ports counted from `base_port`: peer `base + id`, RESP `base + 100 + id`, admin
    /// `base + 200 + id`.
    #[must_use]
    pub fn local(count: u64, id: u64, base_port: u16, data_dir: &Path) -> NodeConfig {
        let port = |offset: u64, node: u64| {
            let port = u64::from(base_port) + offset + node;
            SocketAddr::from(([127, 0, 0, 1], u16::try_from(port).unwrap_or(u16::MAX)))
        };
        NodeConfig {
            cluster_id: "chorus-local".into(),
            id,
            data_dir: data_dir.join(format!("node-{id}")),
            nodes: (1..=count)
                .map(|node| NodeAddress {
                    id: node,
                    peer: port(0, node),
                    redis: port(100, node),
                    admin: port(200, node),
                })
                .collect(),
            timing: Timing::default(),
            limits: Limits::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_configurations_validate_and_round_trip_through_toml() {
        let config = NodeConfig::local(3, 2, 7000, Path::new("/tmp/chorus"));
        config.validate().unwrap();
        assert_eq!(config.me().redis.port(), 7102);
        let text = toml::to_string(&config).unwrap();
        let back: NodeConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn inconsistent_configurations_are_refused_with_a_reason() {
        let mut config = NodeConfig::local(3, 2, 7000, Path::new("/tmp/chorus"));
        config.id = 9;
        assert!(config.validate().unwrap_err().to_string().contains("id 9"));
        let mut config = NodeConfig::local(3, 2, 7000, Path::new("/tmp/chorus"));
        config.nodes[1].id = 1;
        assert!(config.validate().is_err());
        let mut config = NodeConfig::local(3, 2, 7000, Path::new("/tmp/chorus"));
        config.timing.election_timeout_ticks = 1;
        assert!(config.validate().is_err());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = "cluster_id = \"x\"\nid = 1\ndata_dir = \"/tmp\"\nnodes = []\ncolour = 3\n";
        assert!(toml::from_str::<NodeConfig>(text).is_err());
    }
}
