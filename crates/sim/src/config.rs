//! What one simulator run looks like: cluster size, workload, faults, timing.
//!
//! Time in the simulator is counted in abstract units; a Raft tick is `tick_units` of them, so
//! that network latency can be finer than a tick. With the defaults a tick is 10 units, an
//! election timeout 10–20 ticks, a message takes 1–5 units and the long tail of latency
//! reaches 300 units (three election timeouts), enough to deliver messages from an old term
//! long after the cluster moved on.

use std::fmt;
use std::str::FromStr;

use chorus_core::Prng;

use crate::user::UserMachine;

/// The limits on entries per AppendEntries a seed draws from: one entry (a leader sends an
/// old-term entry alone) in a third of the seeds, or a batch (one entry per message costs
/// events, and so sweep time).
pub const APPEND_ENTRIES_MAX_DRAWS: [usize; 3] = [1, 64, 64];
/// The snapshot chunk sizes a seed draws from: many small chunks, a few, or the runtime's
/// 1 MiB (one chunk for the simulator's small states).
pub const SNAPSHOT_CHUNK_BYTES_DRAWS: [usize; 3] = [64, 512, 1 << 20];
/// Salts the seed of the stream the per-seed sizes are drawn from ([`SimConfig::drawn`]).
const SWARM_SALT: u64 = 0x5357_4152_4d5f_5349;

/// Spare Raft nodes a run with membership churn starts beside its voters.
pub const MEMBERSHIP_SPARES: usize = 1;
/// The state machine a simulated run replicates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Machine {
    /// The key-value store: deterministic, and shipping effects under passive replication.
    #[default]
    Kv,
    /// The key-value store plus a random number each node draws from its own source inside
    /// every apply: the non-deterministic state machine of the determinism lesson. With
    /// `ship_effects` its effect carries the number drawn (passive replication copies it);
    /// without, its effect is its command, which every backup re-executes.
    Stamped {
        /// Whether the effect carries the number drawn.
        ship_effects: bool,
    },
    /// The key-value store and, beside it, a state machine the user supplies with its
    /// workload and its check (see [`crate::user`]): the clients issue only its commands.
    User(UserMachine),
}

/// Which faults the nemesis injects during the safety phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultProfile {
    /// No faults: a healthy cluster under load.
    None,
    /// Loss, duplication, long-tail delay, and partitions (majority/minority, isolate one,
    /// bridge, one-way), healed at random.
    Network,
    /// Crashes that lose unsynced writes, then restarts: the crashes the protocol claims to
    /// survive. Raft, whose log is durable, faces one node, a minority, or every node at once.
    /// Primary-backup keeps nothing on disk and claims to survive one server failure at a
    /// time, so it faces exactly that: one crash at a time, the next only once a backup holds
    /// the state again (see [`crate::pb`]).
    Crash,
    /// Crashes with no regard for what the protocol claims to survive: one node, a minority,
    /// or every node at once (a power failure), at any moment, then restarts. The same as
    /// [`FaultProfile::Crash`] for Raft; most primary-backup runs end in the scheme's
    /// documented dead end ([`crate::RunReport::stuck`]).
    CrashMany,
    /// Network faults and crashes. For primary-backup, one run in twenty
    /// ([`FaultProfile::CRASH_MANY_SHARE`]) faces the crashes of
    /// [`FaultProfile::CrashMany`], the others those of [`FaultProfile::Crash`].
    All,
}

impl FaultProfile {
    /// The share of primary-backup runs under [`FaultProfile::All`] whose crashes are those
    /// of [`FaultProfile::CrashMany`]: enough to keep the dead end and the safety checks
    /// around it exercised, few enough that most runs exercise failover.
    pub const CRASH_MANY_SHARE: f64 = 0.05;

    /// Whether the network misbehaves.
    #[must_use]
    pub fn network(self) -> bool {
        matches!(self, FaultProfile::Network | FaultProfile::All)
    }

    /// Whether the nemesis changes a Raft cluster's membership too (adds learners, promotes,
    /// removes and replaces nodes, the leader included, and transfers leadership): under
    /// [`FaultProfile::All`]. Other schemes ignore it.
    #[must_use]
    pub fn membership(self) -> bool {
        matches!(self, FaultProfile::All)
    }

    /// Whether nodes crash.
    #[must_use]
    pub fn crashes(self) -> bool {
        matches!(
            self,
            FaultProfile::Crash | FaultProfile::CrashMany | FaultProfile::All
        )
    }
}

impl FromStr for FaultProfile {
    type Err = String;

    fn from_str(text: &str) -> Result<FaultProfile, String> {
        match text {
            "none" => Ok(FaultProfile::None),
            "network" => Ok(FaultProfile::Network),
            "crash" => Ok(FaultProfile::Crash),
            "crash-many" => Ok(FaultProfile::CrashMany),
            "all" => Ok(FaultProfile::All),
            other => Err(format!(
                "unknown fault profile {other:?}: expected none, network, crash, crash-many or all"
            )),
        }
    }
}

impl fmt::Display for FaultProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FaultProfile::None => "none",
            FaultProfile::Network => "network",
            FaultProfile::Crash => "crash",
            FaultProfile::CrashMany => "crash-many",
            FaultProfile::All => "all",
        })
    }
}

/// How one Raft node's driver orders the work of a Ready. Every combination is an order the
/// contract of `chorus_raft` allows (its crate docs: step 4 may come before step 2; the core
/// may be stepped between `ready` and `advance`), and the runtime's order
/// ([`Interleaving::RUNTIME`]) is one of them. Unless [`SimConfig::interleaving`] fixes one,
/// each node of each seed draws its own (swarm testing), so that a sweep exercises them all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interleaving {
    /// Apply the committed entries, serve and fail reads and start a due snapshot as soon as
    /// the Ready is taken, before this node's own write is durable; otherwise only after it.
    pub apply_before_sync: bool,
    /// Step messages, ticks, proposals and reads into the core while a Ready is being made
    /// durable; otherwise they wait, in arrival order, until `advance`.
    pub step_during_ready: bool,
    /// The disk syncs slowly (tens of units rather than a few, and now and then for
    /// several election timeouts), so that acks, votes, commits and crashes race each sync
    /// for long.
    pub slow_disk: bool,
    /// While a Ready is being made durable, take the messages that need no durability from
    /// the core (`RawNode::take_messages`) and send them at once, as a driver whose storage
    /// writes run on another thread does: heartbeats, replication of new proposals,
    /// ReadIndex rounds, pre-votes and forwarded proposals go on while the disk is slow.
    /// With `apply_before_sync` too, also apply what was committed meanwhile
    /// (`RawNode::take_committed`) and answer its clients, as the runtime does. Only with
    /// `step_during_ready` (otherwise the core sees no input to answer).
    pub send_during_ready: bool,
}

impl Interleaving {
    /// The order of the runtime (`crates/server/src/runtime/raft_host.rs`, which persists on
    /// a storage thread): apply before the fsync, step inputs and send what needs no
    /// durability while the write is out.
    pub const RUNTIME: Interleaving = Interleaving {
        apply_before_sync: true,
        step_during_ready: true,
        slow_disk: false,
        send_during_ready: true,
    };

    /// Apply after the sync, step inputs as they come, a fast disk: the one order the
    /// simulator knew before it drew them, kept for scripted scenarios whose timing a test
    /// reasons about.
    pub const SCRIPTED: Interleaving = Interleaving {
        apply_before_sync: false,
        step_during_ready: true,
        slow_disk: false,
        send_during_ready: false,
    };
}

/// The replication scheme a run simulates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// Raft ([`crate::raft::Simulator`]).
    #[default]
    Raft,
    /// Primary-backup with a view service ([`crate::pb::PbSimulator`]).
    Pb,
    /// Primary-backup whose views a Raft group decides ([`crate::hybrid::HybridSimulator`]).
    Hybrid,
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(text: &str) -> Result<Protocol, String> {
        match text {
            "raft" => Ok(Protocol::Raft),
            "pb" => Ok(Protocol::Pb),
            "hybrid" => Ok(Protocol::Hybrid),
            other => Err(format!(
                "unknown protocol {other:?}: expected raft, pb or hybrid"
            )),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Raft => "raft",
            Protocol::Pb => "pb",
            Protocol::Hybrid => "hybrid",
        })
    }
}

/// The parameters of one run. Everything random in the run is drawn from `seed`.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The replication scheme: [`run`](crate::run) picks the simulator by it.
    pub protocol: Protocol,
    /// The seed of every random choice in the run.
    pub seed: u64,
    /// Cluster size (3, 5 or 7 are the interesting ones). For primary-backup, the number of
    /// servers; the view service is one more node, with id `nodes + 1`.
    pub nodes: usize,
    /// Client operations to run in total.
    pub ops: usize,
    /// Concurrent clients, each with at most one operation in flight.
    pub clients: usize,
    /// Keys the workload touches; few keys make operations conflict.
    pub keys: usize,
    /// The faults of the safety phase.
    pub faults: FaultProfile,
    /// Simulator time units per Raft tick (for primary-backup: per ping interval, the tick of
    /// both the servers and the view service).
    pub tick_units: u64,
    /// Raft's minimum election timeout, in ticks. Primary-backup runs use it only as the unit
    /// of downtimes and of the liveness bound, so both protocols face the same fault schedule.
    pub election_timeout_ticks: u64,
    /// Raft's heartbeat interval, in ticks.
    pub heartbeat_interval_ticks: u64,
    /// Raft's limit on entries per AppendEntries; `None` (the default) draws it per seed from
    /// [`APPEND_ENTRIES_MAX_DRAWS`] (swarm testing). One entry per message splits replication
    /// into many messages, so that a leader sends an old-term entry alone and acks for
    /// old-term entries arrive apart from the new leader's no-op (Raft's Figure 8).
    pub append_entries_max: Option<usize>,
    /// The nemesis acts again after a pause drawn from this range of units.
    pub nemesis_pause_units: (u64, u64),
    /// A client's patience for one attempt, in units, before it retries on another node.
    pub attempt_timeout_units: u64,
    /// How long a client keeps retrying one operation during the safety phase before it gives
    /// up and records the outcome as unknown.
    pub give_up_units: u64,
    /// The safety phase ends once this share of `ops` was issued (or at `safety_units_max`).
    pub safety_share: f64,
    /// The safety phase ends at this time at the latest.
    pub safety_units_max: u64,
    /// The liveness bound: after the last fault heals, the cluster must elect a leader and
    /// finish every operation within this many election timeouts plus one election timeout
    /// per 20 remaining operations.
    pub liveness_election_timeouts: u64,
    /// Primary-backup: the view service declares a server dead after this many ticks (ping
    /// intervals) without a ping.
    pub pb_dead_pings: u64,
    /// A run stops after this many events and reports a liveness failure: a broken build
    /// (an injected bug) can make nodes chatter forever without time moving on much, and a
    /// sweep must still end. A correct run stays far below it.
    pub events_max: u64,
    /// Raft: the order every node's driver handles its Readies in; `None` (the default)
    /// draws one per node from the seed ([`Interleaving`]).
    pub interleaving: Option<Interleaving>,
    /// End the run as soon as a checker reports a violation (the final checks and the
    /// linearizability check still run on what happened so far). For sweeps that only ask
    /// whether a seed is caught, such as the mutation gate (`examples/mutants.rs`): a broken
    /// build often runs on to its event limit. Off by default.
    pub stop_at_first_violation: bool,
    /// Raft: a node snapshots its state machine once this many entries were applied since its
    /// last snapshot (the core's `snapshot_threshold_entries`). Small, so that every run
    /// compacts many times.
    pub snapshot_every_entries: u64,
    /// Raft: entries kept below a snapshot when the log is compacted (the core's
    /// `compaction_tail_entries`). Small, so that a follower that falls behind by more needs
    /// an InstallSnapshot.
    pub compaction_tail_entries: u64,
    /// Raft: bytes of snapshot in one InstallSnapshot chunk (the core's
    /// `snapshot_chunk_bytes_max`); `None` (the default) draws it per seed from
    /// [`SNAPSHOT_CHUNK_BYTES_DRAWS`]. Small chunks make a snapshot travel in many, some of
    /// them lost, duplicated or reordered, and transfers interrupted and started over; one
    /// chunk for the whole snapshot (as a small state is sent by the runtime) lets a
    /// duplicated or long-delayed InstallSnapshot deliver an old snapshot whole again.
    pub snapshot_chunk_bytes: Option<usize>,
    /// Raft: whether the clients' puts set a time to live half of the time (`SET … PX` with
    /// an expiry far beyond any log clock the run reaches, so that reads see a put), so that
    /// every copy of the state (snapshots, installs, restarts) must carry expiry times;
    /// `None` (the default) draws it per seed, on in half of them. Other schemes never set
    /// one.
    pub ttl_writes: Option<bool>,
    /// Raft: whether the nemesis builds Raft's Figure 8 now and then (a leader's entry kept
    /// to itself, a new leader's entry kept to itself, the old leader back and replicating
    /// only its old entry, then the new leader back: see `crate::raft`), under a profile
    /// with both network faults and crashes; `None` (the default) draws it per seed, on in
    /// half of them.
    pub figure_8: Option<bool>,
    /// Raft: whether a crash may damage a synced record of the restarting node's log (a bit
    /// flip in the last segment, which the file storage detects by a later sync marker), on
    /// at most a minority of nodes at once; the node must repair its log from its peers,
    /// voting only as its log before the damage would have (protocol-aware recovery). `None` (the default) draws it per seed, on
    /// in half of them.
    pub synced_damage: Option<bool>,
    /// Raft: whether leaders serve reads from a lease (thesis §6.4.1) rather than with a
    /// ReadIndex round. In these seeds every node's clock ticks at its own rate, drawn from
    /// `±clock_drift_ppm`, and a stale-read hunt slows the cut-off leader's clock and speeds
    /// the others' by `clock_drift_ppm` each (the nodes' stated bound is 50 000 ppm: within
    /// it no read may be stale; beyond it the lease is unsafe, on purpose). `None` (the
    /// default) draws it per seed, on in a quarter of them: within the bound a cut-off leader
    /// steps down (CheckQuorum) about when the others elect a new one, so the hunt for stale
    /// reads finds little in these seeds, and the ReadIndex bugs need the other three
    /// quarters.
    pub lease_reads: Option<bool>,
    /// Hybrid, and Raft with [`SimConfig::lease_reads`]: each node's clock drifts by a rate
    /// drawn from `±clock_drift_ppm` parts per million (the stated bound is 50 000; beyond it
    /// leases are unsafe, on purpose).
    pub clock_drift_ppm: u64,
    /// Raft: nodes started outside the cluster (ids after the `nodes` voters, joining with
    /// no configuration), for membership changes to add. Under a profile with
    /// [`FaultProfile::membership`] at least [`MEMBERSHIP_SPARES`] are started.
    pub spares: usize,
    /// The state machine the nodes replicate (the key-value store by default; the stamped
    /// store for the determinism lesson, see `crate::machine`).
    pub machine: Machine,
    /// Bugs to inject into the Raft core (tests only).
    #[cfg(feature = "inject-bugs")]
    pub injected_bugs: chorus_raft::InjectedBugs,
    /// A bug to inject into the key-value store (tests only): restore forgets expiry times.
    #[cfg(feature = "inject-bugs")]
    pub kv_restore_drops_expiry: bool,
    /// A bug to inject into the key-value store (tests only): a retried request is executed
    /// again rather than answered from the session table.
    #[cfg(feature = "inject-bugs")]
    pub kv_retry_reexecutes: bool,
}

impl SimConfig {
    /// The default run for `seed`: 3 nodes, 1000 operations by 5 clients over 3 keys, all
    /// faults; Raft nodes snapshot every 40 entries and keep a tail of 8; the sizes of
    /// AppendEntries and snapshot chunks, whether puts set a time to live and whether the
    /// nemesis builds Figure 8 are drawn per seed ([`SimConfig::drawn`]).
    #[must_use]
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            protocol: Protocol::Raft,
            seed,
            nodes: 3,
            ops: 1000,
            clients: 5,
            keys: 3,
            faults: FaultProfile::All,
            tick_units: 10,
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 2,
            append_entries_max: None,
            nemesis_pause_units: (50, 400),
            attempt_timeout_units: 300,
            give_up_units: 2000,
            safety_share: 0.8,
            safety_units_max: 200_000,
            liveness_election_timeouts: 30,
            pb_dead_pings: 5,
            events_max: 2_000_000,
            stop_at_first_violation: false,
            interleaving: None,
            snapshot_every_entries: 40,
            compaction_tail_entries: 8,
            snapshot_chunk_bytes: None,
            ttl_writes: None,
            figure_8: None,
            synced_damage: None,
            lease_reads: None,
            clock_drift_ppm: 50_000,
            spares: 0,
            machine: Machine::Kv,
            #[cfg(feature = "inject-bugs")]
            injected_bugs: chorus_raft::InjectedBugs::default(),
            #[cfg(feature = "inject-bugs")]
            kv_restore_drops_expiry: false,
            #[cfg(feature = "inject-bugs")]
            kv_retry_reexecutes: false,
        }
    }

    /// The configuration with every per-seed draw made (swarm testing: each seed runs with its
    /// own sizes, so that a sweep covers them all): the fields left `None` are drawn from a
    /// stream of their own, so that every other random choice of the run stays as it was.
    #[must_use]
    pub fn drawn(mut self) -> SimConfig {
        let mut rng = Prng::new(self.seed ^ SWARM_SALT);
        let pick = |rng: &mut Prng, choices: &[usize]| choices[rng.index(choices.len())];
        let append = pick(&mut rng, &APPEND_ENTRIES_MAX_DRAWS);
        let chunk = pick(&mut rng, &SNAPSHOT_CHUNK_BYTES_DRAWS);
        let ttl = rng.chance(0.5);
        let figure_8 = rng.chance(0.5);
        let synced_damage = rng.chance(0.5);
        let lease_reads = rng.chance(0.25);
        self.append_entries_max.get_or_insert(append);
        self.snapshot_chunk_bytes.get_or_insert(chunk);
        self.ttl_writes.get_or_insert(ttl);
        self.figure_8.get_or_insert(figure_8);
        self.synced_damage.get_or_insert(synced_damage);
        self.lease_reads.get_or_insert(lease_reads);
        self
    }

    /// The configuration with what the simulator used before it drew it per seed: 64 entries
    /// per AppendEntries, snapshots in 64-byte chunks, no time to live, no Figure 8; for
    /// scripted scenarios whose timing a test reasons about (as [`Interleaving::SCRIPTED`]).
    #[must_use]
    pub fn with_scripted_draws(mut self) -> SimConfig {
        self.append_entries_max = Some(64);
        self.snapshot_chunk_bytes = Some(64);
        self.ttl_writes = Some(false);
        self.figure_8 = Some(false);
        self.synced_damage = Some(false);
        self.lease_reads = Some(false);
        self
    }

    /// Raft's limit on entries per AppendEntries, as drawn ([`SimConfig::drawn`]).
    #[must_use]
    pub fn append_entries_max(&self) -> usize {
        self.append_entries_max
            .unwrap_or(APPEND_ENTRIES_MAX_DRAWS[APPEND_ENTRIES_MAX_DRAWS.len() - 1])
    }

    /// The snapshot chunk size, as drawn ([`SimConfig::drawn`]).
    #[must_use]
    pub fn snapshot_chunk_bytes(&self) -> usize {
        self.snapshot_chunk_bytes
            .unwrap_or(SNAPSHOT_CHUNK_BYTES_DRAWS[0])
    }

    /// One election timeout in units.
    #[must_use]
    pub fn election_timeout_units(&self) -> u64 {
        self.election_timeout_ticks * self.tick_units
    }
}
