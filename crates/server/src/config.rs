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
//! protocol = "raft"         # or "pb" or "hybrid"; raft when left out
//!
//! [[nodes]]
//! id = 1
//! peer = "10.0.0.1:7100"    # protocol traffic between nodes
//! redis = "10.0.0.1:6379"   # RESP clients (redis-cli, the native client)
//! admin = "10.0.0.1:8100"   # HTTP: /status and /metrics
//! ```
//!
//! A node that joins a running Raft cluster lists only itself in `[[nodes]]` and names any
//! member's admin address in `join = "10.0.0.1:8100"`: it starts with no configuration, asks
//! to be added as a learner, and learns every member's addresses from the leader (see
//! [`NodeConfig::join`] and docs/protocols/raft.md).
//!
//! Under `protocol = "pb"` (primary-backup) exactly one node of the table is the view service,
//! marked `role = "view-service"`; it takes no clients, so it has no `redis` address. Every
//! other node is a server (primary, backup or spare, as the view service decides). Servers
//! ping the view service every `timing.ping_interval_ms` (100 ms) and one that missed
//! `timing.dead_pings` intervals (5) is dead, so a failover starts about half a second after
//! the primary's death. Primary-backup keeps nothing on disk: `data_dir` is not used.
//!
//! ```toml
//! [[nodes]]
//! id = 4
//! role = "view-service"
//! peer = "10.0.0.4:7100"
//! admin = "10.0.0.4:8100"
//!
//! [timing]
//! ping_interval_ms = 100
//! dead_pings = 5
//! ```
//!
//! Under `protocol = "hybrid"` some nodes (three, or five) are the configuration group, marked
//! `role = "configuration"` and without a `redis` address: they run Raft over the
//! configuration state machine and decide the views. Every other node is a data server
//! (primary, backup or spare) with a durable log. The `[hybrid]` table sets the view size and
//! the lease timing, in milliseconds of each node's monotonic clock:
//!
//! ```toml
//! [hybrid]
//! replicas = 2            # primary + backups in a view; 3 tolerates two failures in turn
//! min_replicas = 2        # writes wait below this
//! heartbeat_ms = 50
//! lease_ms = 300
//! drift_bound_ppm = 50000 # the stated clock-drift bound; grace = lease·(1+ρ)/(1−ρ) + margin
//! grace_margin_ms = 20
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use chorus_core::NodeId;
use serde::{Deserialize, Serialize};

/// The replication scheme a cluster runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Raft: every node a voter, each write durable on a majority.
    #[default]
    Raft,
    /// Primary-backup with a view service: one primary, one backup, spares.
    Pb,
    /// Primary-backup whose views a Raft configuration group decides, with durable logs and
    /// leases on the data servers.
    Hybrid,
}

/// What a node of the table is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeRole {
    /// A replica of the state machine that serves clients.
    #[default]
    Server,
    /// Primary-backup only: the view service, which decides who is primary and backup.
    ViewService,
    /// Hybrid only: a member of the configuration group (Raft over the views).
    Configuration,
}

impl NodeRole {
    fn is_server(&self) -> bool {
        *self == NodeRole::Server
    }
}

/// Where one node listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAddress {
    /// The node's id, unique in the cluster and never reused.
    pub id: u64,
    /// What the node is; a server when left out.
    #[serde(default, skip_serializing_if = "NodeRole::is_server")]
    pub role: NodeRole,
    /// Protocol traffic from other nodes.
    pub peer: SocketAddr,
    /// RESP clients; every server has one, the view service none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<SocketAddr>,
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
    /// Primary-backup: how often servers ping the view service (one tick of the cores).
    pub ping_interval_ms: u64,
    /// Primary-backup: the view service declares a server dead after this many intervals
    /// without a ping.
    pub dead_pings: u64,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            tick_ms: 10,
            election_timeout_ticks: 15,
            heartbeat_interval_ticks: 3,
            request_timeout_ms: 5_000,
            ping_interval_ms: 100,
            dead_pings: 5,
        }
    }
}

/// Raft snapshots and log compaction (the `[snapshots]` table).
///
/// The defaults keep a node's log, memory and data directory small: a snapshot once the log
/// since the last one passes 20,000 entries or 16 MiB, but never before that log is at least
/// as large as the last snapshot (so a large state is not written out again after every
/// 16 MiB of writes: snapshot writes cost at most about as much disk bandwidth as the log).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Snapshots {
    /// Take a snapshot once this many entries were applied since the last one. Default 20,000.
    pub threshold_entries: u64,
    /// Take a snapshot once the entries applied since the last one hold this many bytes.
    /// Default 16 MiB.
    pub threshold_bytes: u64,
    /// Entries kept in the log below a snapshot, for slightly lagging followers. Default 5,000.
    pub compaction_tail_entries: u64,
    /// Bytes of snapshot in one InstallSnapshot chunk. Default 1 MiB.
    pub chunk_bytes: usize,
    /// The snapshot thread writes at most this many bytes per second (0: as fast as it can),
    /// so that a large snapshot does not take the disk from the log's fsyncs and the clients'
    /// tail latency with it. Default 32 MiB/s.
    pub write_bytes_per_second: u64,
    /// The snapshot thread fsyncs what it wrote every this many bytes (0: only at the end),
    /// so that the kernel never holds a large dirty backlog that one fsync must flush at once.
    /// Default 4 MiB.
    pub sync_bytes: u64,
}

impl Default for Snapshots {
    fn default() -> Snapshots {
        let core = chorus_raft::Config::new(chorus_core::NodeId(1), vec![chorus_core::NodeId(1)]);
        Snapshots {
            threshold_entries: 20_000,
            threshold_bytes: 16 << 20,
            compaction_tail_entries: core.compaction_tail_entries,
            chunk_bytes: core.snapshot_chunk_bytes_max,
            write_bytes_per_second: 32 << 20,
            sync_bytes: 4 << 20,
        }
    }
}

/// The write-ahead log on disk (the `[storage]` table).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// A WAL segment that reaches this size is closed and the next one started; segments
    /// wholly below the snapshot's kept tail are deleted. Default 16 MiB.
    pub segment_bytes: u64,
    /// Whether a segment's space is allocated when it starts (`fallocate`), which makes each
    /// fsync cheaper on ext4 and XFS: the file's size no longer changes with every write.
    /// Default on; turn it off on a copy-on-write file system (btrfs, ZFS), where it buys
    /// nothing.
    pub preallocate: bool,
}

impl Default for StorageSettings {
    fn default() -> StorageSettings {
        StorageSettings {
            segment_bytes: 16 << 20,
            preallocate: true,
        }
    }
}

/// The hybrid scheme's data servers (the `[hybrid]` table); times in milliseconds of each
/// node's monotonic clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HybridSettings {
    /// Members of a view: the primary and `replicas - 1` backups.
    pub replicas: usize,
    /// Writes are acknowledged only in views of at least this many members.
    pub min_replicas: usize,
    /// The primary sends each backup an Append (a heartbeat if empty) this often.
    pub heartbeat_ms: u64,
    /// An acknowledgement grants the primary a lease of this long from the Append's send time.
    pub lease_ms: u64,
    /// The stated bound on clock drift between nodes, in parts per million.
    pub drift_bound_ppm: u64,
    /// Added to the grace period beyond what the lease and the drift bound require.
    pub grace_margin_ms: u64,
    /// A primary gives up catching up a spare that has not acknowledged anything for this
    /// long, and tries another.
    pub catch_up_ms: u64,
    /// Entries in one Append.
    pub append_entries_max: usize,
    /// The configuration group's leader sends the configuration to every data server this
    /// often (and at once when it changes).
    pub update_interval_ms: u64,
}

impl Default for HybridSettings {
    fn default() -> HybridSettings {
        HybridSettings {
            replicas: 2,
            min_replicas: 2,
            heartbeat_ms: 50,
            lease_ms: 300,
            drift_bound_ppm: 50_000,
            grace_margin_ms: 20,
            catch_up_ms: 300,
            append_entries_max: 512,
            update_interval_ms: 100,
        }
    }
}

impl HybridSettings {
    /// The data server core's configuration for node `id` in its run `incarnation`.
    #[must_use]
    pub fn core_config(&self, id: NodeId, incarnation: u64) -> chorus_hybrid::HybridConfig {
        let mut config = chorus_hybrid::HybridConfig::new(id);
        config.incarnation = incarnation;
        config.replicas = self.replicas;
        config.min_replicas = self.min_replicas;
        config.heartbeat_units = self.heartbeat_ms;
        config.lease_units = self.lease_ms;
        config.drift_bound_ppm = self.drift_bound_ppm;
        config.grace_margin_units = self.grace_margin_ms;
        config.grace_units = config.required_grace_units();
        config.retry_units = self.heartbeat_ms.max(10);
        config.catch_up_units = self.catch_up_ms;
        config.append_entries_max = self.append_entries_max;
        config
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
    /// The replication scheme; Raft when left out.
    #[serde(default)]
    pub protocol: Protocol,
    /// Every node of the cluster.
    pub nodes: Vec<NodeAddress>,
    /// Timing.
    #[serde(default)]
    pub timing: Timing,
    /// Bounds.
    #[serde(default)]
    pub limits: Limits,
    /// Raft snapshots and log compaction.
    #[serde(default)]
    pub snapshots: Snapshots,
    /// Raft: how linearizable reads are served (the `[reads]` table).
    #[serde(default, skip_serializing_if = "Reads::is_default")]
    pub reads: Reads,
    /// The write-ahead log on disk.
    #[serde(default)]
    pub storage: StorageSettings,
    /// The hybrid scheme's view size and lease timing.
    #[serde(default)]
    pub hybrid: HybridSettings,
    /// Raft only: the admin (HTTP) address of any member of a running cluster this node
    /// joins. The node starts outside the cluster (no configuration of its own: `nodes` need
    /// list only itself), asks the cluster to add it as a learner (the member it asks passes
    /// the request to the leader), and learns every member and its addresses from the
    /// leader. Once a member, it is promoted with `chorus admin promote`. On a restart the
    /// node resumes from its data directory, and asks again only if it is still not a member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<SocketAddr>,
    /// TESTING ONLY: deliberately broken Raft behaviour to switch on, by name (see
    /// [`INJECTABLE_BUGS`]), so that fault tests can prove they catch it. Honoured only by a
    /// `chorus` built with the `inject-bugs` feature; any other build refuses to start with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inject_bugs: Vec<String>,
    /// TESTING ONLY: fault injection through the admin endpoints (the `[debug]` table).
    #[serde(default, skip_serializing_if = "DebugSettings::is_off")]
    pub debug: DebugSettings,
}

/// Raft: how the leader makes sure a linearizable read sees every committed write (the
/// `[reads]` table).
///
/// ```toml
/// [reads]
/// lease = true                  # serve reads from a lease, with no message round
/// clock_drift_bound_ppm = 50000 # how far two nodes' clocks may run apart
/// ```
///
/// By default a read takes a ReadIndex round: the leader confirms with a quorum that it still
/// leads, which needs no clock. With `lease = true` the leader answers reads at once while its
/// lease lasts: `(election_timeout_ticks - 2) · (1 − ρ)/(1 + ρ)` ticks from the start of a
/// heartbeat round a quorum answered, `ρ` the drift bound (thesis §6.4.1). That is safe only
/// while no node's clock runs faster or slower than another's by more than the bound, and it
/// must be set alike on every node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Reads {
    /// Serve linearizable reads on the leader from a lease. Off by default.
    pub lease: bool,
    /// The stated bound on clock drift between two nodes, in parts per million (default
    /// 50,000: 5%).
    pub clock_drift_bound_ppm: u64,
}

impl Default for Reads {
    fn default() -> Reads {
        Reads {
            lease: false,
            clock_drift_bound_ppm: 50_000,
        }
    }
}

impl Reads {
    /// Whether the table holds the defaults (it is then left out of a written configuration).
    #[must_use]
    pub fn is_default(&self) -> bool {
        *self == Reads::default()
    }
}

/// TESTING ONLY: faults a test may inject into a running node (the `[debug]` table). Every
/// switch is off by default, and a node started with one on says so in its log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugSettings {
    /// Serve `POST /debug/stall-fsync?ms=N` on the admin address: every sync of the durable
    /// log on this node's storage thread (Raft, and the hybrid's configuration nodes) from
    /// now until N milliseconds from now waits until then, as when the disk hangs. Off by
    /// default: the endpoint then answers `404`.
    pub fault_injection: bool,
}

impl DebugSettings {
    /// Whether every switch is off (the table is then left out of a written configuration).
    #[must_use]
    pub fn is_off(&self) -> bool {
        *self == DebugSettings::default()
    }
}

/// The names [`NodeConfig::inject_bugs`] accepts, one per field of
/// `chorus_raft::InjectedBugs`.
pub const INJECTABLE_BUGS: [&str; 13] = [
    "commit-without-current-term",
    "read-without-read-index",
    "read-index-unconfirmed",
    "ack-before-durable",
    "install-older-snapshot",
    "compact-above-commit",
    "membership-on-commit",
    "overlapping-membership-changes",
    "truncate-without-conflict",
    "repairing-node-votes",
    "lease-ignores-drift",
    "lease-ignores-lateness",
    "lease-gate-only-extends",
];

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
        self.validate_roles()?;
        let timing = &self.timing;
        if timing.tick_ms == 0 || timing.heartbeat_interval_ticks == 0 {
            return invalid("tick_ms and heartbeat_interval_ticks must be at least 1".into());
        }
        if timing.election_timeout_ticks <= timing.heartbeat_interval_ticks {
            return invalid("election_timeout_ticks must exceed heartbeat_interval_ticks".into());
        }
        if self.reads.lease {
            if self.protocol != Protocol::Raft {
                return invalid("[reads] lease applies to protocol = \"raft\" only".into());
            }
            if self.reads.clock_drift_bound_ppm >= 1_000_000 {
                return invalid("[reads] clock_drift_bound_ppm must be below 1000000".into());
            }
            let mut probe = chorus_raft::Config::new(NodeId(1), vec![NodeId(1)]);
            probe.election_timeout_ticks = timing.election_timeout_ticks;
            probe.clock_drift_bound_ppm = self.reads.clock_drift_bound_ppm;
            if probe.lease_ticks() == 0 {
                return invalid(
                    "[reads] lease needs a longer election timeout: with this drift bound the \
                     lease would last 0 ticks"
                        .into(),
                );
            }
        }
        if timing.ping_interval_ms == 0 || timing.dead_pings == 0 {
            return invalid("ping_interval_ms and dead_pings must be at least 1".into());
        }
        let snapshots = &self.snapshots;
        if snapshots.threshold_entries == 0 || snapshots.threshold_bytes == 0 {
            return invalid(
                "snapshots.threshold_entries and snapshots.threshold_bytes must be at least 1"
                    .into(),
            );
        }
        if snapshots.chunk_bytes == 0
            || snapshots.chunk_bytes > chorus_raft::SNAPSHOT_CHUNK_BYTES_LIMIT
            || snapshots.chunk_bytes + 4096 > self.limits.frame_bytes_max
        {
            return invalid(format!(
                "snapshots.chunk_bytes must be between 1 and {} and leave 4096 bytes of a \
                 frame (limits.frame_bytes_max = {}) for the message around it",
                chorus_raft::SNAPSHOT_CHUNK_BYTES_LIMIT,
                self.limits.frame_bytes_max
            ));
        }
        if self.protocol == Protocol::Hybrid {
            let core = self.hybrid.core_config(self.node_id(), 1);
            if let Err(error) = core.validate() {
                return invalid(format!("[hybrid]: {error}"));
            }
            if self.hybrid.update_interval_ms == 0 {
                return invalid("hybrid.update_interval_ms must be at least 1".into());
            }
        }
        if self.join.is_some() && self.protocol != Protocol::Raft {
            return invalid("join needs protocol = \"raft\"".into());
        }
        if self.storage.segment_bytes < 4096 {
            return invalid("storage.segment_bytes must be at least 4096".into());
        }
        if let Some(bug) = self
            .inject_bugs
            .iter()
            .find(|bug| !INJECTABLE_BUGS.contains(&bug.as_str()))
        {
            return invalid(format!(
                "inject_bugs: unknown bug {bug:?} (known: {})",
                INJECTABLE_BUGS.join(", ")
            ));
        }
        if !self.inject_bugs.is_empty() && !cfg!(feature = "inject-bugs") {
            return invalid(
                "inject_bugs is for fault tests only and this chorus was built without the \
                 inject-bugs feature"
                    .into(),
            );
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

    /// The Raft bugs this configuration injects (TESTING ONLY; see
    /// [`NodeConfig::inject_bugs`]).
    #[cfg(feature = "inject-bugs")]
    #[must_use]
    pub fn injected_bugs(&self) -> chorus_raft::InjectedBugs {
        let on = |name: &str| self.inject_bugs.iter().any(|bug| bug == name);
        chorus_raft::InjectedBugs {
            commit_without_current_term: on("commit-without-current-term"),
            read_without_read_index: on("read-without-read-index"),
            read_index_unconfirmed: on("read-index-unconfirmed"),
            ack_before_durable: on("ack-before-durable"),
            install_older_snapshot: on("install-older-snapshot"),
            compact_above_commit: on("compact-above-commit"),
            membership_on_commit: on("membership-on-commit"),
            overlapping_membership_changes: on("overlapping-membership-changes"),
            truncate_without_conflict: on("truncate-without-conflict"),
            repairing_node_votes: on("repairing-node-votes"),
            lease_ignores_drift: on("lease-ignores-drift"),
            lease_ignores_lateness: on("lease-ignores-lateness"),
            lease_gate_only_extends: on("lease-gate-only-extends"),
        }
    }

    /// Checks the roles against the protocol: a view service only under primary-backup, and
    /// exactly one there; a RESP address on every server and none on the view service.
    fn validate_roles(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        let view_services = self
            .nodes
            .iter()
            .filter(|n| n.role == NodeRole::ViewService)
            .count();
        let configuration = self
            .nodes
            .iter()
            .filter(|n| n.role == NodeRole::Configuration)
            .count();
        if configuration > 0 && self.protocol != Protocol::Hybrid {
            return invalid("a configuration node needs protocol = \"hybrid\"".into());
        }
        match self.protocol {
            Protocol::Raft | Protocol::Hybrid if view_services > 0 => {
                return invalid("a view-service node needs protocol = \"pb\"".into());
            }
            Protocol::Hybrid if configuration == 0 || configuration % 2 == 0 => {
                return invalid(format!(
                    "protocol = \"hybrid\" needs an odd number of nodes with role = \
                     \"configuration\" (3 or 5), not {configuration}"
                ));
            }
            Protocol::Hybrid if self.nodes.len() == configuration => {
                return invalid("protocol = \"hybrid\" needs at least one data server".into());
            }
            Protocol::Pb if view_services != 1 => {
                return invalid(format!(
                    "protocol = \"pb\" needs exactly one node with role = \"view-service\", \
                     not {view_services}"
                ));
            }
            Protocol::Pb if self.nodes.len() < 2 => {
                return invalid("protocol = \"pb\" needs at least one server".into());
            }
            _ => {}
        }
        for node in &self.nodes {
            match (node.role, node.redis) {
                (NodeRole::Server, None) => {
                    return invalid(format!("node {} has no redis address", node.id));
                }
                (NodeRole::ViewService, Some(_)) => {
                    return invalid(format!(
                        "node {} is the view service, which takes no clients: remove its \
                         redis address",
                        node.id
                    ));
                }
                (NodeRole::Configuration, Some(_)) => {
                    return invalid(format!(
                        "node {} is a configuration node, which takes no clients: remove its \
                         redis address",
                        node.id
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The view service's id (primary-backup only).
    #[must_use]
    pub fn view_service(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|n| n.role == NodeRole::ViewService)
            .map(|n| NodeId(n.id))
    }

    /// The configuration group's nodes (hybrid only).
    #[must_use]
    pub fn configuration_nodes(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| n.role == NodeRole::Configuration)
            .map(|n| NodeId(n.id))
            .collect()
    }

    /// The data servers (hybrid only: every node that is not in the configuration group).
    #[must_use]
    pub fn data_servers(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| n.role == NodeRole::Server)
            .map(|n| NodeId(n.id))
            .collect()
    }

    /// Every server's RESP address.
    #[must_use]
    pub fn redis_addresses(&self) -> std::collections::BTreeMap<NodeId, SocketAddr> {
        self.nodes
            .iter()
            .filter_map(|n| n.redis.map(|redis| (NodeId(n.id), redis)))
            .collect()
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

    /// The voters a new cluster starts with: every node's id; none for a node that joins a
    /// running cluster (it learns the configuration from the leader).
    #[must_use]
    pub fn voters(&self) -> Vec<NodeId> {
        if self.join.is_some() {
            return Vec::new();
        }
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
            protocol: Protocol::Raft,
            nodes: (1..=count)
                .map(|node| NodeAddress {
                    id: node,
                    role: NodeRole::Server,
                    peer: port(0, node),
                    redis: Some(port(100, node)),
                    admin: port(200, node),
                })
                .collect(),
            timing: Timing::default(),
            limits: Limits::default(),
            snapshots: Snapshots::default(),
            reads: Reads::default(),
            storage: StorageSettings::default(),
            hybrid: HybridSettings::default(),
            join: None,
            inject_bugs: Vec::new(),
            debug: DebugSettings::default(),
        }
    }

    /// The configuration of node `id` of a local primary-backup cluster of `servers` servers
    /// (ids 1 to `servers`) and a view service (id `servers + 1`, without a RESP address), on
    /// 127.0.0.1 with the ports of [`NodeConfig::local`].
    #[must_use]
    pub fn local_pb(servers: u64, id: u64, base_port: u16, data_dir: &Path) -> NodeConfig {
        let mut config = NodeConfig::local(servers + 1, id, base_port, data_dir);
        config.cluster_id = "chorus-local-pb".into();
        config.protocol = Protocol::Pb;
        if let Some(view_service) = config.nodes.last_mut() {
            view_service.role = NodeRole::ViewService;
            view_service.redis = None;
        }
        config
    }

    /// The configuration of node `id` of a local hybrid cluster of `servers` data servers (ids
    /// 1 to `servers`) and a configuration group of three (ids `servers + 1` to
    /// `servers + 3`, without RESP addresses), views of `replicas` members, on 127.0.0.1 with
    /// the ports of [`NodeConfig::local`].
    #[must_use]
    pub fn local_hybrid(
        servers: u64,
        replicas: usize,
        id: u64,
        base_port: u16,
        data_dir: &Path,
    ) -> NodeConfig {
        let mut config = NodeConfig::local(servers + 3, id, base_port, data_dir);
        config.cluster_id = "chorus-local-hybrid".into();
        config.protocol = Protocol::Hybrid;
        config.hybrid.replicas = replicas;
        for node in config.nodes.iter_mut().filter(|n| n.id > servers) {
            node.role = NodeRole::Configuration;
            node.redis = None;
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_configurations_validate_and_round_trip_through_toml() {
        let config = NodeConfig::local(3, 2, 7000, Path::new("/tmp/chorus"));
        config.validate().unwrap();
        assert_eq!(config.me().redis.map(|r| r.port()), Some(7102));
        assert_eq!(config.protocol, Protocol::Raft);
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
    fn lease_reads_are_off_by_default_and_checked_when_on() {
        let config = NodeConfig::local(3, 2, 7000, Path::new("/tmp/chorus"));
        assert!(!config.reads.lease);
        let text = toml::to_string(&config).expect("serializes");
        assert!(!text.contains("[reads]"), "the defaults are left out");
        let mut leased = config.clone();
        leased.reads.lease = true;
        leased
            .validate()
            .expect("a lease with the default timing is valid");
        let parsed: NodeConfig = toml::from_str(&toml::to_string(&leased).unwrap()).unwrap();
        assert!(parsed.reads.lease);
        let mut bad = leased.clone();
        bad.reads.clock_drift_bound_ppm = 1_000_000;
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("clock_drift_bound_ppm")
        );
        let mut bad = leased.clone();
        bad.timing.election_timeout_ticks = 3;
        bad.timing.heartbeat_interval_ticks = 1;
        assert!(bad.validate().unwrap_err().to_string().contains("0 ticks"));
        let mut bad = NodeConfig::local_pb(3, 1, 7000, Path::new("/tmp/chorus"));
        bad.reads.lease = true;
        assert!(bad.validate().unwrap_err().to_string().contains("raft"));
    }

    #[test]
    fn snapshot_settings_have_small_defaults_and_are_validated() {
        let config = NodeConfig::local(3, 2, 7000, Path::new("/tmp/chorus"));
        assert_eq!(config.snapshots.threshold_entries, 20_000);
        assert_eq!(config.snapshots.threshold_bytes, 16 << 20);
        assert_eq!(config.snapshots.write_bytes_per_second, 32 << 20);
        assert_eq!(config.snapshots.sync_bytes, 4 << 20);
        assert_eq!(config.storage.segment_bytes, 16 << 20);
        assert!(config.storage.preallocate);
        assert_eq!(config.snapshots.compaction_tail_entries, 5_000);
        assert_eq!(config.snapshots.chunk_bytes, 1 << 20);
        let mut bad = config.clone();
        bad.snapshots.threshold_entries = 0;
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("threshold_entries")
        );
        let mut bad = config.clone();
        bad.snapshots.chunk_bytes = bad.limits.frame_bytes_max;
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("chunk_bytes")
        );
        let text = "cluster_id = \"c\"\nid = 1\ndata_dir = \"/tmp/x\"\n[[nodes]]\nid = 1\npeer = \"127.0.0.1:1\"\n[snapshots]\nthreshold_entries = 200\ncompaction_tail_entries = 50\n";
        if let Ok(parsed) = toml::from_str::<NodeConfig>(text) {
            assert_eq!(parsed.snapshots.threshold_entries, 200);
            assert_eq!(parsed.snapshots.threshold_bytes, 16 << 20);
        }
    }

    #[test]
    fn injected_bugs_need_the_feature_and_a_known_name() {
        let mut config = NodeConfig::local(3, 2, 7000, Path::new("/tmp/chorus"));
        config.inject_bugs = vec!["read-without-read-index".into()];
        assert_eq!(config.validate().is_ok(), cfg!(feature = "inject-bugs"));
        config.inject_bugs = vec!["no-such-bug".into()];
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("no-such-bug")
        );
    }

    #[test]
    fn primary_backup_configurations_name_one_view_service_without_clients() {
        let config = NodeConfig::local_pb(3, 4, 7000, Path::new("/tmp/chorus"));
        config.validate().unwrap();
        assert_eq!(config.view_service(), Some(NodeId(4)));
        assert_eq!(config.redis_addresses().len(), 3);
        let text = toml::to_string(&config).unwrap();
        assert!(text.contains("protocol = \"pb\""), "{text}");
        assert!(text.contains("role = \"view-service\""), "{text}");
        let back: NodeConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, config);

        let mut two = config.clone();
        two.nodes[0].role = NodeRole::ViewService;
        two.nodes[0].redis = None;
        assert!(
            two.validate()
                .unwrap_err()
                .to_string()
                .contains("exactly one")
        );
        let mut raft = config.clone();
        raft.protocol = Protocol::Raft;
        assert!(
            raft.validate()
                .unwrap_err()
                .to_string()
                .contains("view-service")
        );
        let mut clients = config.clone();
        clients.nodes[3].redis = clients.nodes[0].redis;
        assert!(
            clients
                .validate()
                .unwrap_err()
                .to_string()
                .contains("no clients")
        );
        let mut mute = config;
        mute.nodes[1].redis = None;
        assert!(
            mute.validate()
                .unwrap_err()
                .to_string()
                .contains("no redis")
        );
    }

    #[test]
    fn a_configuration_without_protocol_is_raft() {
        let text = "cluster_id = \"x\"\nid = 1\ndata_dir = \"/tmp\"\n\n[[nodes]]\nid = 1\n\
                    peer = \"127.0.0.1:1\"\nredis = \"127.0.0.1:2\"\nadmin = \"127.0.0.1:3\"\n";
        let config: NodeConfig = toml::from_str(text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.protocol, Protocol::Raft);
        assert_eq!(config.nodes[0].role, NodeRole::Server);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = "cluster_id = \"x\"\nid = 1\ndata_dir = \"/tmp\"\nnodes = []\ncolour = 3\n";
        assert!(toml::from_str::<NodeConfig>(text).is_err());
    }
}
