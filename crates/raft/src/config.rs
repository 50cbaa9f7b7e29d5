//! Configuration of one Raft node: who it is, who its peers are, its timeouts and its bounds.
//!
//! Every queue, window and batch the core keeps has a `_max` bound here, so that no input can
//! make a node's memory grow without limit.

use chorus_core::NodeId;

/// The largest `snapshot_chunk_bytes_max` a configuration may set (64 MiB), so that one chunk
/// always fits comfortably in a transport frame and in memory.
pub const SNAPSHOT_CHUNK_BYTES_LIMIT: usize = 64 << 20;

/// Deliberately broken behaviour, for tests that prove the simulator's checkers catch bugs.
///
/// Compiled in only with the `inject-bugs` cargo feature; never enable it in a real build.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InjectedBugs {
    /// The leader commits any index stored on a majority, even one of an earlier term
    /// (breaks the current-term rule of Raft §5.4.2; caught by Figure 8 histories).
    pub commit_without_current_term: bool,
    /// `read_index` answers at once with the local commit index on any node, without asking
    /// or confirming a leader (breaks thesis §6.4; caught as stale reads).
    pub read_without_read_index: bool,
    /// A leader serves each ReadIndex round as confirmed at once, without hearing from a
    /// quorum that it still leads (breaks thesis §6.4 more subtly than
    /// `read_without_read_index`: only a deposed leader that does not know it yet serves
    /// stale reads; caught as stale reads while a new leader takes writes).
    pub read_index_unconfirmed: bool,
    /// Votes and AppendEntries acks are sent before the state they promise is durable
    /// (breaks Raft Figure 2's "persist before responding"; caught after crashes that lose
    /// unsynced writes).
    pub ack_before_durable: bool,
    /// A follower installs a snapshot even when it is older than what it already committed,
    /// rolling its commit and applied indexes back (breaks the idempotence of InstallSnapshot,
    /// Raft §7; caught as a commit index that goes back and as re-applied entries).
    pub install_older_snapshot: bool,
    /// After a snapshot, the log is compacted to its last index, above the commit and applied
    /// indexes, instead of below the snapshot (loses committed entries before they are applied;
    /// caught as a gap in the applied sequence).
    pub compact_above_commit: bool,
    /// A node's configuration takes effect when its entry commits rather than when it is
    /// appended (breaks the single-server change rule of thesis §4.1: nodes that have not
    /// learned of a commit still count majorities in an older configuration, two changes
    /// apart; caught as two leaders of one term or a lost committed entry).
    pub membership_on_commit: bool,
    /// The leader proposes a membership change while another is still uncommitted (breaks
    /// "one change at a time", thesis §4.1: configurations two changes apart have disjoint
    /// majorities; caught the same way).
    pub overlapping_membership_changes: bool,
    /// A follower that receives entries it already holds, all matching, drops the entries
    /// after them (breaks Raft Figure 2, AppendEntries receiver step 3: truncate only at a
    /// conflict): a delayed or duplicated AppendEntries takes back entries the follower had
    /// acknowledged, which the leader may have counted toward a commit; caught as a lost
    /// committed entry.
    pub truncate_without_conflict: bool,
    /// A node repairing a log that lost acknowledged entries (damaged synced records,
    /// [`crate::HardState::repairing`]) votes and campaigns as a healthy one, judging
    /// candidates by the log the damage left it (breaks protocol-aware recovery: its vote can
    /// elect a leader without a committed entry that only it and a minority held; caught as a
    /// lost committed entry).
    pub repairing_node_votes: bool,
    /// A leader's read lease lasts the whole minimum election timeout from the round that
    /// renewed it, ignoring the stated clock-drift bound and the tick granularity (breaks
    /// thesis §6.4.1's `election timeout / drift` rule: a leader whose clock runs slow within
    /// the bound, cut off from a quorum, serves reads after a new leader took writes; caught
    /// as stale reads).
    pub lease_ignores_drift: bool,
    /// The runtime ignores its driver's lateness: a driver whose ticks fell behind true time
    /// (a paused process) keeps the lease its tick count says it holds, instead of calling
    /// [`crate::RawNode::drop_lease`] (breaks the tick contract leases rest on; caught as a
    /// stale read by the old leader right after it resumes). The core never reads this flag:
    /// the server's Raft host does (the simulator's drivers are never late, so its mutation
    /// gate does not run it; `crates/server/tests/cluster/lease.rs` does).
    pub lease_ignores_lateness: bool,
    /// The runtime's lease gate, which lets client connections answer lease reads without
    /// the driver, only ever moves its deadline forward: it stays open when the core drops or
    /// forfeits its lease (breaks the rule that the gate closes before a leadership transfer's
    /// `TimeoutNow` leaves; caught as lease reads answered by the old leader right after a
    /// transfer, stale when the new leader's commit has not reached it yet). The core never reads this flag: the server's Raft host does
    /// (`crates/server/tests/cluster/lease.rs`).
    pub lease_gate_only_extends: bool,
}

/// The configuration of one Raft node.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node.
    pub id: NodeId,
    /// The voting members the cluster was born with, this node included: the configuration
    /// until the log or a snapshot holds a newer one ([`crate::Membership`]). Empty for a
    /// node that joins an existing cluster: it learns the configuration from the leader.
    pub voters: Vec<NodeId>,
    /// The minimum election timeout; each timeout is drawn from
    /// `election_timeout_ticks..2 * election_timeout_ticks`. Also the CheckQuorum period.
    pub election_timeout_ticks: u64,
    /// How often a leader sends heartbeats.
    pub heartbeat_interval_ticks: u64,
    /// Run a pre-vote round before a real election (thesis §9.6), so that a node that was
    /// partitioned away cannot depose a healthy leader by bumping its term.
    pub pre_vote: bool,
    /// A leader that has not heard from a majority within an election timeout steps down,
    /// and followers that heard from a leader within an election timeout refuse votes.
    pub check_quorum: bool,
    /// Serve linearizable reads on the leader from a lease (thesis §6.4.1) rather than with a
    /// ReadIndex round of messages: after a quorum answered a heartbeat round started at tick
    /// `t`, no other node can be elected before the followers' election timeout runs out, so
    /// the leader answers reads at once until `t` + [`Config::lease_ticks`]. Safety then rests
    /// on clocks: every node's tick rate must stay within `clock_drift_bound_ppm` of every
    /// other's. Needs `check_quorum` and `pre_vote`, and must be set alike on every node (followers then also
    /// refuse votes for an election timeout after they start, and refuse to campaign on
    /// request while they hear from a leader). Off by default: ReadIndex needs no clock.
    pub lease_reads: bool,
    /// The stated bound on how far two nodes' tick rates may differ, in parts per million
    /// (used only with `lease_reads`). Default 50,000 (5%).
    pub clock_drift_bound_ppm: u64,
    /// AppendEntries messages carrying entries that may be in flight to one follower.
    pub inflight_max: usize,
    /// Entries in one AppendEntries message.
    pub append_entries_max: usize,
    /// Bytes of entries in one AppendEntries message (at least one entry is always sent).
    pub append_bytes_max: usize,
    /// Commands a follower buffers for forwarding, and commands one Propose message may
    /// carry into the leader.
    pub proposals_pending_max: usize,
    /// Reads waiting for a read index on this node (as leader or follower).
    pub reads_pending_max: usize,
    /// Ask the driver for a snapshot once this many entries were applied since the last one.
    /// Default 100,000.
    pub snapshot_threshold_entries: u64,
    /// Ask the driver for a snapshot once the entries applied since the last one hold this
    /// many bytes (as counted by [`crate::Entry::size_bytes`]). Default 64 MiB.
    pub snapshot_threshold_bytes: u64,
    /// Entries kept below a snapshot when the log is compacted, so that a slightly lagging
    /// follower still catches up by AppendEntries rather than a whole snapshot. Default 5,000.
    pub compaction_tail_entries: u64,
    /// Bytes of snapshot in one InstallSnapshot chunk; a chunk claiming more is refused.
    /// Default 1 MiB, at most [`SNAPSHOT_CHUNK_BYTES_LIMIT`].
    pub snapshot_chunk_bytes_max: usize,
    /// A learner is promoted to voter only once its log is within this many entries of the
    /// leader's (so that the new voter does not stall commits while it catches up).
    /// Default 64.
    pub promote_lag_entries_max: u64,
    /// Seed of the PRNG that draws election timeouts.
    pub seed: u64,
    /// Bugs to inject; see [`InjectedBugs`].
    #[cfg(feature = "inject-bugs")]
    pub injected_bugs: InjectedBugs,
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// `voters` is not empty (a joining node) and does not contain `id`.
    #[error("node {0} is not among the voters")]
    NotAVoter(NodeId),
    /// `voters` lists a node twice.
    #[error("node {0} is listed twice among the voters")]
    DuplicateVoter(NodeId),
    /// A timeout, interval or bound is zero or inconsistent.
    #[error("invalid setting: {0}")]
    Invalid(&'static str),
    /// The durable state given to [`crate::RawNode::restart`] cannot have been written by a
    /// correct node (for example, entries that are not contiguous from index 1).
    #[error("corrupt durable state: {0}")]
    CorruptDurableState(&'static str),
}

impl Config {
    /// A configuration with the default timeouts and bounds.
    #[must_use]
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Config {
        Config {
            id,
            voters,
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 2,
            pre_vote: true,
            check_quorum: true,
            lease_reads: false,
            clock_drift_bound_ppm: 50_000,
            inflight_max: 8,
            append_entries_max: 256,
            append_bytes_max: 1 << 20,
            proposals_pending_max: 4096,
            reads_pending_max: 4096,
            snapshot_threshold_entries: 100_000,
            snapshot_threshold_bytes: 64 << 20,
            compaction_tail_entries: 5_000,
            snapshot_chunk_bytes_max: 1 << 20,
            promote_lag_entries_max: 64,
            seed: 0,
            #[cfg(feature = "inject-bugs")]
            injected_bugs: InjectedBugs::default(),
        }
    }

    /// How many of its own ticks a leader's read lease lasts from the start of the round a
    /// quorum answered: `(election_timeout_ticks - 1) * (1 - ρ) / (1 + ρ)`, rounded down, less
    /// one, with `ρ = clock_drift_bound_ppm / 10^6`.
    ///
    /// Why: a follower that answered the round heard from the leader no earlier than the
    /// round's start, and refuses votes until `election_timeout_ticks` of its own ticks have
    /// passed since; the first of them may come at once, so it is protected for at least
    /// `election_timeout_ticks - 1` of its tick periods. Its ticks may run fast by `ρ` and the
    /// leader's slow by `ρ`, hence the ratio. The leader's clock reads `start + L - 1` until
    /// its next tick, which a driver may serve up to half a period late (one that falls
    /// further behind must call [`crate::RawNode::drop_lease`] before it judges a read): so
    /// the lease is used up to `L + 1/2` periods after its start, and the last tick taken
    /// off covers that half period after the ratio is applied.
    #[must_use]
    pub fn lease_ticks(&self) -> u64 {
        let rho = u128::from(self.clock_drift_bound_ppm.min(999_999));
        let base = u128::from(self.election_timeout_ticks.saturating_sub(1));
        let ticks = (base * (1_000_000 - rho) / (1_000_000 + rho)).saturating_sub(1);
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }

    /// Checks that the configuration can work.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.voters.is_empty() && !self.voters.contains(&self.id) {
            return Err(ConfigError::NotAVoter(self.id));
        }
        if self.id == NodeId(0) || self.voters.contains(&NodeId(0)) {
            return Err(ConfigError::Invalid("node 0 is reserved"));
        }
        if self.voters.len() > crate::MEMBERS_MAX {
            return Err(ConfigError::Invalid("more voters than MEMBERS_MAX"));
        }
        let mut sorted = self.voters.clone();
        sorted.sort();
        if let Some(pair) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(ConfigError::DuplicateVoter(pair[0]));
        }
        if self.heartbeat_interval_ticks == 0 {
            return Err(ConfigError::Invalid(
                "heartbeat_interval_ticks must be at least 1",
            ));
        }
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks {
            return Err(ConfigError::Invalid(
                "election_timeout_ticks must exceed heartbeat_interval_ticks",
            ));
        }
        if self.lease_reads {
            if !self.check_quorum || !self.pre_vote {
                return Err(ConfigError::Invalid(
                    "lease_reads needs check_quorum and pre_vote",
                ));
            }
            if self.clock_drift_bound_ppm >= 1_000_000 {
                return Err(ConfigError::Invalid(
                    "clock_drift_bound_ppm must be below 1,000,000",
                ));
            }
            if self.lease_ticks() == 0 {
                return Err(ConfigError::Invalid(
                    "lease_reads needs a longer election timeout: the lease would be 0 ticks",
                ));
            }
        }
        if self.inflight_max == 0
            || self.append_entries_max == 0
            || self.append_bytes_max == 0
            || self.proposals_pending_max == 0
            || self.reads_pending_max == 0
        {
            return Err(ConfigError::Invalid("every _max bound must be at least 1"));
        }
        if self.snapshot_threshold_entries == 0 || self.snapshot_threshold_bytes == 0 {
            return Err(ConfigError::Invalid(
                "snapshot thresholds must be at least 1",
            ));
        }
        if self.snapshot_chunk_bytes_max == 0
            || self.snapshot_chunk_bytes_max > SNAPSHOT_CHUNK_BYTES_LIMIT
        {
            return Err(ConfigError::Invalid(
                "snapshot_chunk_bytes_max must be between 1 and SNAPSHOT_CHUNK_BYTES_LIMIT",
            ));
        }
        Ok(())
    }

    /// The bugs in force: always none without the `inject-bugs` feature.
    #[must_use]
    pub fn injected_bugs(&self) -> InjectedBugs {
        #[cfg(feature = "inject-bugs")]
        {
            self.injected_bugs
        }
        #[cfg(not(feature = "inject-bugs"))]
        {
            InjectedBugs::default()
        }
    }
}
