//! The data server: one replica of the hybrid scheme, primary, backup or spare.
//!
//! # The Ready contract
//! The driver calls [`DataReplica::tick`], [`DataReplica::step`], [`DataReplica::propose`] and
//! [`DataReplica::read`], each with the node's local clock reading (the core never reads a
//! clock; leases need one, so time is an input). Then, while [`DataReplica::has_ready`], it
//! takes [`DataReplica::ready`] and, in this order:
//! 1. **persists** the hard state, truncates the log after `truncate_after`, appends `entries`
//!    (durably: an acknowledgement in `messages` promises them);
//! 2. **sends** `messages` to data servers and `config_commands` to the configuration group;
//! 3. **answers** clients: `acknowledged` writes, `aborted` writes (outcome unknown: retry),
//!    `reads` (the state machine already applied `applied`);
//! 4. calls [`DataReplica::advance`].
//!
//! # Roles
//! The role follows from the newest view the server knows (from the configuration group's
//! [`Message::Update`], or from a primary's [`Message::Append`]): the view's primary, one of
//! its backups, or a spare (which a primary may be catching up as a *learner*).
//!
//! # Invariants kept here
//! - Fencing (H4): the highest epoch seen is persisted before anything that depends on it;
//!   an Append of a lower epoch is refused, and an epoch the backup abandoned is never
//!   acknowledged again.
//! - Serving (H1): [`DataReplica::is_serving`] holds only for the primary of an active view of
//!   its highest epoch with an unexpired lease from every backup; the lease from an
//!   acknowledgement runs `L` from the Append's send time on the primary's clock.
//! - Grace (H5): a backup abandons its epoch only after `G ≥ L·(1+ρ)/(1−ρ) + ε` of its clock
//!   without hearing from its primary.
//! - Commit (H3): an entry commits when every backup of the view, and a spare being added,
//!   holds it; a write is acknowledged only while serving with at least `min_replicas`
//!   members (H6).
//!
//! # Passive replication
//! The log carries effects, not commands. The primary executes each write once, when it takes
//! it ([`StateMachine::execute`]), and appends the envelope of the write with its command
//! replaced by the encoded [`chorus_core::Execution`] (output and effect); every other server
//! applies the effect ([`StateMachine::apply_effect`]) when the entry commits, and never
//! executes anything. A write may therefore draw on the primary's clock or randomness.
//!
//! So the primary's state machine runs ahead of the commit point: it holds the effects of
//! every entry up to its last (`state_lsn`). The rules that keep this invisible:
//! - an entry's output is acknowledged only once it commits, as before;
//! - a read is evaluated on the state as it stands and answered only once the commit point
//!   reaches everything that state holds; if the epoch changes first it is rejected
//!   ([`DataReady::rejected_reads`]): a read never reports a write a failover could lose;
//! - the state machine always holds exactly the effects of a prefix of the log: if a server
//!   must truncate entries its state machine holds (a former primary whose uncommitted tail
//!   the new primary lacks), it rebuilds the state from the initial image and the committed
//!   log.

use std::collections::BTreeMap;

use bytes::Bytes;
use chorus_core::envelope::Envelope;
use chorus_core::{Execution, LogIndex, NodeId, StateMachine};
use serde::{Deserialize, Serialize};

use crate::configuration::{ConfigCommand, Configuration, View, ViewReason};
use crate::message::{DataEntry, Message};
use crate::{Epoch, LocalTime, Lsn};

/// Identifies a read the driver asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadId(pub u64);

/// The data server's timing and sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HybridConfig {
    /// This server.
    pub id: NodeId,
    /// This start of the server (registered with the configuration group).
    pub incarnation: u64,
    /// Members a view should have: the primary and `replicas - 1` backups.
    pub replicas: usize,
    /// Writes are acknowledged only in views with at least this many members.
    pub min_replicas: usize,
    /// The primary sends an Append (a heartbeat if empty) to each follower this often.
    pub heartbeat_units: u64,
    /// `L`: an acknowledgement grants a lease until its Append's send time plus this.
    pub lease_units: u64,
    /// `ρ`, the stated bound on clock drift, in parts per million.
    pub drift_bound_ppm: u64,
    /// `ε`, added to the grace period beyond what drift requires.
    pub grace_margin_units: u64,
    /// `G`: a backup that heard nothing from its primary for this long abandons the epoch.
    /// [`HybridConfig::new`] sets it to [`HybridConfig::required_grace_units`].
    pub grace_units: u64,
    /// Tests only: accept a grace period shorter than safety requires.
    pub allow_unsafe_grace: bool,
    /// A command to the configuration group is re-sent this often until it took effect.
    pub retry_units: u64,
    /// A primary gives up catching up a spare that has not acknowledged anything for this
    /// long.
    pub catch_up_units: u64,
    /// Entries per Append.
    pub append_entries_max: usize,
}

impl HybridConfig {
    /// Defaults for `id`: two replicas (primary and backup), `min_replicas` 2, heartbeat 20,
    /// lease 100, drift bound 50 000 ppm, margin 5 units.
    #[must_use]
    pub fn new(id: NodeId) -> HybridConfig {
        let mut config = HybridConfig {
            id,
            incarnation: 1,
            replicas: 2,
            min_replicas: 2,
            heartbeat_units: 20,
            lease_units: 100,
            drift_bound_ppm: 50_000,
            grace_margin_units: 5,
            grace_units: 0,
            allow_unsafe_grace: false,
            retry_units: 30,
            catch_up_units: 600,
            append_entries_max: 64,
        };
        config.grace_units = config.required_grace_units();
        config
    }

    /// `⌈L·(1+ρ)/(1−ρ)⌉ + ε`: the shortest grace period that outlasts every lease a backup
    /// granted, when both clocks drift by at most ρ.
    #[must_use]
    pub fn required_grace_units(&self) -> u64 {
        let million = 1_000_000u128;
        let rho = u128::from(self.drift_bound_ppm.min(999_999));
        let lease = u128::from(self.lease_units);
        let grace = (lease * (million + rho)).div_ceil(million - rho);
        u64::try_from(grace)
            .unwrap_or(u64::MAX)
            .saturating_add(self.grace_margin_units)
    }

    /// Checks the configuration.
    ///
    /// # Errors
    /// [`HybridConfigError`] naming what is wrong.
    pub fn validate(&self) -> Result<(), HybridConfigError> {
        if self.replicas == 0 || self.min_replicas == 0 || self.min_replicas > self.replicas {
            return Err(HybridConfigError::Replicas);
        }
        if self.heartbeat_units == 0 || self.heartbeat_units >= self.lease_units {
            return Err(HybridConfigError::Heartbeat);
        }
        if self.drift_bound_ppm >= 1_000_000 {
            return Err(HybridConfigError::Drift);
        }
        if !self.allow_unsafe_grace && self.grace_units < self.required_grace_units() {
            return Err(HybridConfigError::Grace {
                grace: self.grace_units,
                required: self.required_grace_units(),
            });
        }
        if self.append_entries_max == 0 {
            return Err(HybridConfigError::Batch);
        }
        Ok(())
    }
}

/// A configuration the data server refuses.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HybridConfigError {
    /// `replicas` or `min_replicas` is zero, or `min_replicas > replicas`.
    #[error("need 1 <= min_replicas <= replicas")]
    Replicas,
    /// The heartbeat is zero or not shorter than the lease.
    #[error("the heartbeat must be shorter than the lease")]
    Heartbeat,
    /// The drift bound is 100% or more.
    #[error("the drift bound must be below 1 000 000 ppm")]
    Drift,
    /// The grace period does not outlast the lease under the drift bound.
    #[error(
        "grace period {grace} is shorter than the {required} the lease and drift bound require"
    )]
    Grace {
        /// The configured grace period.
        grace: u64,
        /// What safety requires.
        required: u64,
    },
    /// `append_entries_max` is zero.
    #[error("append_entries_max must be positive")]
    Batch,
}

/// Why a write was refused.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum ProposeError {
    /// This server is not a serving primary (no active view naming it, or a lease is out).
    #[error("not the serving primary")]
    NotServing,
    /// The view has fewer than `min_replicas` members: writes wait.
    #[error("the view is below min_replicas")]
    BelowMinReplicas,
}

/// Why a read was refused.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// This server is not a serving primary.
    #[error("not the serving primary")]
    NotServing,
}

/// A message the data server refuses.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StepError {
    /// A message a correct sender could not have sent to a data server.
    #[error("unexpected message: {0}")]
    Unexpected(&'static str),
}

/// What a data server persists besides its log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The highest epoch seen: anything lower is refused.
    pub highest_epoch: Epoch,
    /// The highest epoch this server abandoned as a backup (stopped acknowledging).
    pub abandoned_epoch: Epoch,
    /// The commit point known.
    pub commit: Lsn,
    /// A spare this primary proposed to add as a backup of the view after the given epoch:
    /// until the epoch moves on, the primary needs its acknowledgements and its lease too,
    /// across restarts (the new view may be committed without the primary hearing of it, and
    /// the spare may then take over after its grace period).
    pub joining: Option<(Epoch, NodeId)>,
}

/// What survives a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Durable {
    /// The hard state.
    pub hard_state: HardState,
    /// The log, lsn 1 first.
    pub log: Vec<DataEntry>,
}

impl Durable {
    /// Persists a Ready's hard state and log changes.
    pub fn write(&mut self, ready: &DataReady) {
        if let Some(hard_state) = ready.hard_state {
            self.hard_state = hard_state;
        }
        if let Some(after) = ready.truncate_after {
            self.log
                .truncate(usize::try_from(after.0).unwrap_or(usize::MAX));
        }
        for entry in &ready.entries {
            assert_eq!(
                entry.lsn.0,
                self.log.len() as u64 + 1,
                "invariant: a Ready's entries follow the log"
            );
            self.log.push(entry.clone());
        }
    }
}

/// One apply of the state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The entry.
    pub lsn: Lsn,
    /// The entry's payload: the encoded envelope of the write, whose command is the
    /// primary's encoded [`chorus_core::Execution`].
    pub command: Bytes,
    /// The output the primary's execution gave, for the client.
    pub output: Bytes,
}

/// What the driver must do now (see the module docs for the order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataReady {
    /// Reads taken that can no longer be answered (the epoch changed before what they saw
    /// committed): the client retries.
    pub rejected_reads: Vec<ReadId>,
    /// Persist this hard state.
    pub hard_state: Option<HardState>,
    /// Drop every log entry after this lsn, before appending `entries`.
    pub truncate_after: Option<Lsn>,
    /// Append these entries.
    pub entries: Vec<DataEntry>,
    /// Send these to data servers.
    pub messages: Vec<(NodeId, Message)>,
    /// Send these to the configuration group.
    pub config_commands: Vec<ConfigCommand>,
    /// What the state machine applied, in order.
    pub applied: Vec<Applied>,
    /// Writes this server proposed that committed while it may acknowledge them.
    pub acknowledged: Vec<Applied>,
    /// Commands of writes this server proposed whose outcome it cannot report: the client
    /// retries (its session makes the retry exactly-once).
    pub aborted: Vec<Bytes>,
    /// Answers to reads.
    pub reads: Vec<(ReadId, Bytes)>,
}

impl DataReady {
    fn is_empty(&self) -> bool {
        *self == DataReady::default()
    }
}

/// The role a data server plays in the newest view it knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The view's primary (serving only if the view is active and the leases hold).
    Primary,
    /// One of the view's backups.
    Backup,
    /// Not in the view.
    Spare,
}

/// A summary of a data server, for drivers, checkers and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataStatus {
    /// The server.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// The newest view it knows.
    pub view: View,
    /// Its persisted hard state.
    pub hard_state: HardState,
    /// Its last lsn.
    pub last_lsn: Lsn,
    /// What its state machine applied.
    pub applied: Lsn,
    /// Whether it passes the serving rule now.
    pub serving: bool,
    /// Its clock reading.
    pub now: LocalTime,
}

#[derive(Clone, Copy, Debug)]
struct Follower {
    next: Lsn,
    matched: Lsn,
    last_ack_at: LocalTime,
    lease_until: LocalTime,
}

impl Follower {
    fn new(next: Lsn, now: LocalTime) -> Follower {
        Follower {
            next,
            matched: Lsn(0),
            last_ack_at: now,
            lease_until: LocalTime(0),
        }
    }
}

/// One data server of the hybrid scheme.
pub struct DataReplica {
    config: HybridConfig,
    state_machine: Box<dyn StateMachine + Send>,
    /// The state machine's image before anything was applied, to rebuild from.
    initial_image: Bytes,
    /// The state machine holds the effects of the log's entries up to here (beyond `applied`
    /// on a primary, which executes as it appends).
    state_lsn: Lsn,
    /// Reads evaluated, waiting for the commit point to reach what they saw.
    reads_held: Vec<(Lsn, ReadId, Bytes)>,
    now: LocalTime,
    hard: HardState,
    hard_dirty: bool,
    log: Vec<DataEntry>,
    applied: Lsn,
    configuration: Configuration,
    view: View,
    view_learned_at: LocalTime,
    last_heard: LocalTime,
    followers: BTreeMap<NodeId, Follower>,
    learner: Option<(NodeId, LocalTime)>,
    last_candidate: Option<NodeId>,
    proposals: BTreeMap<Lsn, ()>,
    last_heartbeat_at: LocalTime,
    last_command: Option<(ConfigCommand, LocalTime)>,
    ready: DataReady,
}

impl DataReplica {
    /// A server starting from `durable` (empty for a new one) at clock reading `now`, with
    /// a fresh `state_machine`; it re-applies its log up to the persisted commit point.
    ///
    /// # Errors
    /// The configuration is invalid.
    pub fn restart(
        config: HybridConfig,
        durable: Durable,
        state_machine: Box<dyn StateMachine + Send>,
        now: LocalTime,
    ) -> Result<DataReplica, HybridConfigError> {
        config.validate()?;
        for (i, entry) in durable.log.iter().enumerate() {
            assert_eq!(
                entry.lsn.0,
                i as u64 + 1,
                "invariant: the log is contiguous"
            );
        }
        let initial_image = state_machine.snapshot_bytes();
        let mut replica = DataReplica {
            config,
            state_machine,
            initial_image,
            state_lsn: Lsn(0),
            reads_held: Vec::new(),
            now,
            hard: durable.hard_state,
            hard_dirty: false,
            log: durable.log,
            applied: Lsn(0),
            configuration: Configuration::default(),
            view: View::default(),
            view_learned_at: now,
            last_heard: now,
            followers: BTreeMap::new(),
            learner: None,
            last_candidate: None,
            proposals: BTreeMap::new(),
            last_heartbeat_at: now,
            last_command: None,
            ready: DataReady::default(),
        };
        assert!(replica.hard.commit <= replica.last_lsn());
        replica.apply_committed();
        Ok(replica)
    }

    // ---- inputs ----------------------------------------------------------------------

    /// Time passed: heartbeats, lease and grace checks, catching up spares, and commands to
    /// the configuration group.
    pub fn tick(&mut self, now: LocalTime) {
        self.set_time(now);
        let epoch_current = self.hard.highest_epoch == self.view.epoch;
        if self.is_primary() && epoch_current {
            if self.now.since(self.last_heartbeat_at) >= self.config.heartbeat_units {
                self.last_heartbeat_at = self.now;
                let followers: Vec<NodeId> = self.followers.keys().copied().collect();
                for follower in followers {
                    self.send_append(follower);
                }
            }
            if self.view.active {
                self.manage_learner();
            }
        }
        if self.role() == Role::Backup
            && self.hard.abandoned_epoch < self.view.epoch
            && epoch_current
            && self.now.since(self.last_heard) >= self.config.grace_units
        {
            // Our grace period ended: the primary's lease from us ended before it (H5). We
            // never acknowledge this epoch again, across restarts.
            self.hard.abandoned_epoch = self.view.epoch;
            self.hard_dirty = true;
        }
        self.send_wanted_command();
    }

    /// A message arrived.
    ///
    /// # Errors
    /// [`StepError`] for a message a correct sender could not have sent; state unchanged.
    pub fn step(
        &mut self,
        now: LocalTime,
        from: NodeId,
        message: Message,
    ) -> Result<(), StepError> {
        self.set_time(now);
        match message {
            Message::Append {
                epoch,
                view,
                prev_lsn,
                prev_epoch,
                entries,
                commit,
                sent_at,
            } => {
                if view.primary != Some(from) || view.epoch != epoch {
                    return Err(StepError::Unexpected("an Append from a non-primary"));
                }
                self.on_append(from, view, (prev_epoch, prev_lsn), entries, commit, sent_at);
            }
            Message::AppendAck {
                epoch,
                success,
                lsn,
                sent_at,
            } => self.on_append_ack(from, epoch, success, lsn, sent_at),
            Message::Update(configuration) => {
                if configuration.version > self.configuration.version {
                    self.configuration = configuration;
                }
                let view = self.configuration.view.clone();
                self.adopt_view(view);
            }
            Message::Propose(_) => {
                return Err(StepError::Unexpected("a proposal sent to a data server"));
            }
        }
        self.send_wanted_command();
        Ok(())
    }

    /// A client's write (an encoded envelope).
    ///
    /// # Errors
    /// [`ProposeError`] if this server may not take writes now.
    pub fn propose(&mut self, now: LocalTime, command: Bytes) -> Result<Lsn, ProposeError> {
        self.set_time(now);
        if !self.is_serving() {
            return Err(ProposeError::NotServing);
        }
        if self.view.members().len() < self.config.min_replicas {
            return Err(ProposeError::BelowMinReplicas);
        }
        let lsn = self.last_lsn().next();
        // Executed once, here; the log and every other server get the effect.
        self.catch_up_state();
        let envelope = Envelope::decode(&command).unwrap_or(Envelope {
            origin: self.config.id,
            request: 0,
            command,
            session: None,
        });
        let execution = self
            .state_machine
            .execute(LogIndex(lsn.0), &envelope.command);
        self.state_lsn = lsn;
        let entry = DataEntry {
            epoch: self.view.epoch,
            lsn,
            command: Envelope {
                command: execution.encode(),
                ..envelope
            }
            .encode(),
        };
        self.log.push(entry.clone());
        self.ready.entries.push(entry);
        self.proposals.insert(lsn, ());
        let followers: Vec<NodeId> = self.followers.keys().copied().collect();
        for follower in followers {
            self.send_append(follower);
        }
        self.maybe_commit();
        Ok(lsn)
    }

    /// A client's linearizable read, by a serving primary only (a lease read: no message):
    /// evaluated at once on the state as executed, and answered once every entry that state
    /// holds has committed (at once if they all have), or rejected if the epoch changes first.
    ///
    /// # Errors
    /// [`ReadError::NotServing`] otherwise.
    pub fn read(&mut self, now: LocalTime, id: ReadId, query: &[u8]) -> Result<(), ReadError> {
        self.set_time(now);
        if !self.is_serving() {
            return Err(ReadError::NotServing);
        }
        assert_eq!(
            self.applied, self.hard.commit,
            "invariant: applied to commit"
        );
        self.catch_up_state();
        let output = self.state_machine.query(query);
        self.reads_held.push((self.state_lsn, id, output));
        self.release_reads();
        Ok(())
    }

    // ---- the Ready -------------------------------------------------------------------

    /// Whether there is something to persist, send or answer.
    #[must_use]
    pub fn has_ready(&self) -> bool {
        self.hard_dirty || !self.ready.is_empty()
    }

    /// What to do now (see the module docs).
    pub fn ready(&mut self) -> DataReady {
        let mut ready = std::mem::take(&mut self.ready);
        if self.hard_dirty {
            ready.hard_state = Some(self.hard);
            self.hard_dirty = false;
        }
        ready
    }

    /// The driver did what the last Ready asked.
    pub fn advance(&mut self) {}

    // ---- what others may look at -----------------------------------------------------

    /// Whether this server passes the serving rule at its current clock reading: the
    /// primary of an active view of its highest epoch, holding an unexpired lease from every
    /// backup.
    #[must_use]
    pub fn is_serving(&self) -> bool {
        self.is_serving_at(self.now)
    }

    /// Whether this server would pass the serving rule at clock reading `now` (for checkers
    /// that ask between two inputs), with what it knows now.
    #[must_use]
    pub fn is_serving_at(&self, now: LocalTime) -> bool {
        self.is_primary()
            && self.view.active
            && self.hard.highest_epoch == self.view.epoch
            && self
                .view
                .backups
                .iter()
                .chain(self.joining().iter())
                .all(|backup| {
                    self.followers
                        .get(backup)
                        .is_some_and(|f| f.lease_until > now)
                })
    }

    /// The lease this primary holds from `backup` (on its own clock), if any.
    #[must_use]
    pub fn lease_from(&self, backup: NodeId) -> Option<LocalTime> {
        self.followers.get(&backup).map(|f| f.lease_until)
    }

    /// A summary.
    #[must_use]
    pub fn status(&self) -> DataStatus {
        DataStatus {
            id: self.config.id,
            role: self.role(),
            view: self.view.clone(),
            hard_state: self.hard,
            last_lsn: self.last_lsn(),
            applied: self.applied,
            serving: self.is_serving(),
            now: self.now,
        }
    }

    /// The log.
    #[must_use]
    pub fn log(&self) -> &[DataEntry] {
        &self.log
    }

    /// The state machine.
    #[must_use]
    pub fn state_machine(&self) -> &dyn StateMachine {
        self.state_machine.as_ref()
    }

    /// The configuration (and so the grace period) this server runs with.
    #[must_use]
    pub fn config(&self) -> &HybridConfig {
        &self.config
    }

    // ---- internals -------------------------------------------------------------------

    fn set_time(&mut self, now: LocalTime) {
        self.now = self.now.max(now);
    }

    fn last_lsn(&self) -> Lsn {
        Lsn(self.log.len() as u64)
    }

    fn epoch_at(&self, lsn: Lsn) -> Option<Epoch> {
        if lsn.0 == 0 {
            return Some(Epoch(0));
        }
        let index = usize::try_from(lsn.0 - 1).ok()?;
        self.log.get(index).map(|entry| entry.epoch)
    }

    /// The spare being added to the current view, if any.
    fn joining(&self) -> Option<NodeId> {
        self.hard
            .joining
            .filter(|(epoch, _)| *epoch == self.view.epoch)
            .map(|(_, node)| node)
    }

    fn is_primary(&self) -> bool {
        self.view.primary == Some(self.config.id)
    }

    fn role(&self) -> Role {
        if self.is_primary() {
            Role::Primary
        } else if self.view.backups.contains(&self.config.id) {
            Role::Backup
        } else {
            Role::Spare
        }
    }

    /// Learns a view, if it is newer than the one known.
    fn adopt_view(&mut self, view: View) {
        if !view.supersedes(&self.view) {
            return;
        }
        let epoch_changed = view.epoch != self.view.epoch;
        self.view = view;
        self.view_learned_at = self.now;
        if self.view.epoch > self.hard.highest_epoch {
            self.hard.highest_epoch = self.view.epoch;
            self.hard_dirty = true;
        }
        if epoch_changed {
            self.abort_proposals();
            self.followers.clear();
            self.learner = None;
            if self
                .hard
                .joining
                .is_some_and(|(epoch, _)| epoch != self.view.epoch)
            {
                self.hard.joining = None;
                self.hard_dirty = true;
            }
            self.last_heard = self.now;
            if self.is_primary() {
                let next = self.last_lsn().next();
                let joining = self.joining();
                for backup in self.view.backups.clone().into_iter().chain(joining) {
                    self.followers.insert(backup, Follower::new(next, self.now));
                    self.send_append(backup);
                }
            }
        }
        self.maybe_commit();
    }

    fn on_append(
        &mut self,
        from: NodeId,
        view: View,
        prev: (Epoch, Lsn),
        entries: Vec<DataEntry>,
        commit: Lsn,
        sent_at: LocalTime,
    ) {
        let epoch = view.epoch;
        if epoch < self.hard.highest_epoch {
            // Fenced: tell the stale primary the epoch we are at; no lease.
            let ack = Message::AppendAck {
                epoch: self.hard.highest_epoch,
                success: false,
                lsn: Lsn(0),
                sent_at,
            };
            self.ready.messages.push((from, ack));
            return;
        }
        if epoch <= self.hard.abandoned_epoch {
            return;
        }
        self.adopt_view(view);
        if self.view.epoch != epoch || self.is_primary() {
            return;
        }
        if self.role() == Role::Backup {
            self.last_heard = self.now;
        }
        let (prev_epoch, prev_lsn) = prev;
        let (success, lsn) = match self.epoch_at(prev_lsn) {
            None => (false, self.last_lsn()),
            Some(local) if local != prev_epoch => {
                // Retry from before the first entry of the conflicting epoch, but never
                // below the commit point (committed entries match by H3).
                let first = self
                    .log
                    .iter()
                    .find(|entry| entry.epoch == local)
                    .map_or(prev_lsn, |entry| entry.lsn);
                (false, Lsn(first.0.saturating_sub(1)).max(self.hard.commit))
            }
            Some(_) => {
                for entry in entries.iter() {
                    match self.epoch_at(entry.lsn) {
                        Some(local) if local == entry.epoch => {}
                        Some(_) => {
                            self.truncate_after(Lsn(entry.lsn.0 - 1));
                            self.append(entry.clone());
                        }
                        None => self.append(entry.clone()),
                    }
                }
                (true, Lsn(prev_lsn.0 + entries.len() as u64))
            }
        };
        if success {
            let commit = commit.min(lsn);
            if commit > self.hard.commit {
                self.hard.commit = commit;
                self.hard_dirty = true;
                self.apply_committed();
            }
        }
        let ack = Message::AppendAck {
            epoch,
            success,
            lsn,
            sent_at,
        };
        self.ready.messages.push((from, ack));
    }

    fn append(&mut self, entry: DataEntry) {
        assert_eq!(
            entry.lsn,
            self.last_lsn().next(),
            "invariant: appends follow the log"
        );
        self.log.push(entry.clone());
        self.ready.entries.push(entry);
    }

    fn truncate_after(&mut self, after: Lsn) {
        assert!(
            after >= self.hard.commit,
            "invariant: {} truncates after {after}, below its commit point {}",
            self.config.id,
            self.hard.commit
        );
        if self.state_lsn > after {
            self.rebuild_state();
        }
        self.log
            .truncate(usize::try_from(after.0).unwrap_or(usize::MAX));
        self.ready.entries.retain(|entry| entry.lsn <= after);
        self.ready.truncate_after = Some(self.ready.truncate_after.map_or(after, |t| t.min(after)));
    }

    fn on_append_ack(
        &mut self,
        from: NodeId,
        epoch: Epoch,
        success: bool,
        lsn: Lsn,
        sent_at: LocalTime,
    ) {
        if epoch > self.hard.highest_epoch {
            // A follower saw a later epoch: this primary is fenced until it learns the view.
            self.hard.highest_epoch = epoch;
            self.hard_dirty = true;
            self.abort_proposals();
            return;
        }
        if !self.is_primary() || epoch != self.view.epoch || epoch != self.hard.highest_epoch {
            return;
        }
        let last = self.last_lsn();
        let lease = self.config.lease_units;
        let now = self.now;
        let Some(follower) = self.followers.get_mut(&from) else {
            return;
        };
        follower.last_ack_at = now;
        if success {
            // Only a follower that took the Append as its primary's (and so restarted its
            // grace period) grants a lease. A refusal may come from a follower that fenced
            // an Append of an older epoch, answering with its own epoch, which this primary
            // may have reached meanwhile: that Append's send time promises nothing (sweep
            // seed 404: the lease outlived the backup's grace, H5).
            follower.lease_until = follower.lease_until.max(sent_at.plus(lease));
        }
        let resend = if success {
            follower.matched = follower.matched.max(lsn.min(last));
            follower.next = follower.next.max(follower.matched.next());
            follower.matched < last && follower.next <= last
        } else {
            follower.next = lsn.next().min(follower.next).max(Lsn(1));
            true
        };
        if resend {
            self.send_append(from);
        }
        self.maybe_commit();
    }

    fn send_append(&mut self, to: NodeId) {
        let last = self.last_lsn();
        let Some(follower) = self.followers.get_mut(&to) else {
            return;
        };
        let next = follower.next.min(last.next()).max(Lsn(1));
        let prev_lsn = Lsn(next.0 - 1);
        let start = usize::try_from(prev_lsn.0).unwrap_or(usize::MAX);
        let end = start
            .saturating_add(self.config.append_entries_max)
            .min(self.log.len());
        let entries: Vec<DataEntry> = self.log.get(start..end).unwrap_or_default().to_vec();
        follower.next = Lsn(prev_lsn.0 + entries.len() as u64 + 1);
        let prev_epoch = self
            .epoch_at(prev_lsn)
            .expect("invariant: prev_lsn is within the log");
        let message = Message::Append {
            epoch: self.view.epoch,
            view: self.view.clone(),
            prev_lsn,
            prev_epoch,
            entries,
            commit: self.hard.commit,
            sent_at: self.now,
        };
        self.ready.messages.push((to, message));
    }

    /// Commits what every backup (and a spare being added) holds, in an active view of the
    /// highest epoch that names this server.
    fn maybe_commit(&mut self) {
        if !self.is_primary() || !self.view.active || self.hard.highest_epoch != self.view.epoch {
            return;
        }
        let mut commit = self.last_lsn();
        for node in self.view.backups.iter().chain(self.joining().iter()) {
            let matched = self.followers.get(node).map_or(Lsn(0), |f| f.matched);
            commit = commit.min(matched);
        }
        if commit > self.hard.commit {
            self.hard.commit = commit;
            self.hard_dirty = true;
            self.apply_committed();
        }
    }

    fn apply_committed(&mut self) {
        let may_acknowledge =
            self.is_serving() && self.view.members().len() >= self.config.min_replicas;
        while self.applied < self.hard.commit {
            self.applied = self.applied.next();
            let index = usize::try_from(self.applied.0 - 1).unwrap_or(usize::MAX);
            let command = self.log[index].command.clone();
            let output = execution_of(&command).output;
            if self.state_lsn < self.applied {
                self.apply_effect_at(self.applied);
            }
            let applied = Applied {
                lsn: self.applied,
                command,
                output,
            };
            if self.proposals.remove(&self.applied).is_some() {
                if may_acknowledge {
                    self.ready.acknowledged.push(applied.clone());
                } else {
                    self.ready.aborted.push(applied.command.clone());
                }
            }
            self.ready.applied.push(applied);
        }
        self.release_reads();
    }

    /// Applies the effect of the log's entry at `lsn`, the next one the state machine lacks.
    /// An effect the state machine refuses leaves its state unchanged (the entry came from a
    /// primary of a fenced epoch that no correct server could have written; the state
    /// comparisons of the simulator would show it).
    fn apply_effect_at(&mut self, lsn: Lsn) {
        assert_eq!(
            lsn,
            self.state_lsn.next(),
            "invariant: effects apply in order"
        );
        let index = usize::try_from(lsn.0 - 1).unwrap_or(usize::MAX);
        let execution = execution_of(&self.log[index].command);
        let _refused = self
            .state_machine
            .apply_effect(LogIndex(lsn.0), &execution.effect);
        self.state_lsn = lsn;
    }

    /// Brings the state machine to the last entry of the log (a primary executes on top of
    /// every entry it holds, committed or not).
    fn catch_up_state(&mut self) {
        while self.state_lsn < self.last_lsn() {
            self.apply_effect_at(self.state_lsn.next());
        }
    }

    /// Starts the state machine over from its initial image and the committed log: the
    /// entries it held beyond the commit point are about to be truncated.
    fn rebuild_state(&mut self) {
        self.state_machine
            .restore_bytes(&self.initial_image)
            .expect("invariant: the state machine restores its own initial image");
        self.state_lsn = Lsn(0);
        while self.state_lsn < self.applied {
            self.apply_effect_at(self.state_lsn.next());
        }
    }

    /// Answers the held reads whose state has committed.
    fn release_reads(&mut self) {
        let applied = self.applied;
        let (due, held): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_held)
            .into_iter()
            .partition(|&(seen, _, _)| seen <= applied);
        self.reads_held = held;
        self.ready
            .reads
            .extend(due.into_iter().map(|(_, id, output)| (id, output)));
    }

    fn abort_proposals(&mut self) {
        for (_, id, _) in std::mem::take(&mut self.reads_held) {
            self.ready.rejected_reads.push(id);
        }
        for lsn in std::mem::take(&mut self.proposals).into_keys() {
            let index = usize::try_from(lsn.0 - 1).unwrap_or(usize::MAX);
            if let Some(entry) = self.log.get(index) {
                self.ready.aborted.push(entry.command.clone());
            }
        }
    }

    /// The primary of an active view short of backups catches up one spare at a time, and
    /// moves on to the next when the one it catches up has been silent for `catch_up_units`
    /// (a dead spare is given up quickly; a live one is never abandoned halfway through a
    /// long log).
    fn manage_learner(&mut self) {
        if let Some((learner, since)) = self.learner {
            let heard = self
                .followers
                .get(&learner)
                .map_or(since, |f| f.last_ack_at.max(since));
            if self.joining() != Some(learner)
                && self.now.since(heard) >= self.config.catch_up_units
            {
                self.followers.remove(&learner);
                self.learner = None;
            }
            return;
        }
        if self.joining().is_some() || self.view.backups.len() + 1 >= self.config.replicas {
            return;
        }
        let candidates: Vec<NodeId> = self
            .configuration
            .servers
            .keys()
            .copied()
            .filter(|node| !self.view.is_member(*node))
            .collect();
        let Some(&first) = candidates.first() else {
            return;
        };
        let candidate = self
            .last_candidate
            .and_then(|last| candidates.iter().copied().find(|node| *node > last))
            .unwrap_or(first);
        self.last_candidate = Some(candidate);
        self.learner = Some((candidate, self.now));
        self.followers
            .insert(candidate, Follower::new(self.last_lsn().next(), self.now));
        self.send_append(candidate);
    }

    /// The command this server wants the configuration group to apply now, if any.
    fn wanted_command(&mut self) -> Option<ConfigCommand> {
        let me = self.config.id;
        let registered = self
            .configuration
            .servers
            .get(&me)
            .is_some_and(|record| record.incarnation >= self.config.incarnation);
        if !registered {
            return Some(ConfigCommand::Register {
                node: me,
                incarnation: self.config.incarnation,
                lost_tail: false,
            });
        }
        let view = &self.view;
        let epoch = view.epoch;
        if epoch == Epoch(0) {
            return Some(self.propose_view(me, Vec::new(), ViewReason::Bootstrap));
        }
        if self.hard.highest_epoch != epoch {
            return None;
        }
        if self.is_primary() {
            if !view.active {
                return Some(ConfigCommand::Activate { epoch, primary: me });
            }
            let lease = self.config.lease_units;
            let live: Vec<NodeId> = view
                .backups
                .iter()
                .copied()
                .filter(|backup| {
                    self.followers
                        .get(backup)
                        .is_some_and(|f| self.now.since(f.last_ack_at) < lease)
                })
                .collect();
            if live.len() < view.backups.len() {
                return Some(self.propose_view(me, live, ViewReason::BackupExpired));
            }
            if self.joining().is_none() {
                let last = self.last_lsn();
                let caught_up = self.learner.and_then(|(learner, _)| {
                    let f = self.followers.get(&learner)?;
                    (f.matched == last && f.lease_until > self.now).then_some(learner)
                });
                if let Some(learner) = caught_up {
                    // Persisted before the proposal leaves (the Ready's order).
                    self.hard.joining = Some((epoch, learner));
                    self.hard_dirty = true;
                }
            }
            let joining = self.joining()?;
            let mut backups = self.view.backups.clone();
            backups.push(joining);
            return Some(self.propose_view(me, backups, ViewReason::AddBackup));
        }
        let in_last_active = self.configuration.last_active.is_member(me)
            && self.configuration.last_active.epoch <= epoch;
        if self.role() == Role::Backup && self.hard.abandoned_epoch == epoch && in_last_active {
            return Some(self.propose_view(me, Vec::new(), ViewReason::PrimarySilent));
        }
        if !view.active
            && in_last_active
            && self.now.since(self.view_learned_at) >= 2 * self.config.grace_units
        {
            return Some(self.propose_view(me, Vec::new(), ViewReason::PendingStalled));
        }
        None
    }

    fn propose_view(
        &self,
        primary: NodeId,
        backups: Vec<NodeId>,
        reason: ViewReason,
    ) -> ConfigCommand {
        ConfigCommand::ProposeView {
            expected_epoch: self.view.epoch,
            primary,
            backups,
            reason,
        }
    }

    /// Sends the wanted command if it is new, or again after `retry_units`.
    fn send_wanted_command(&mut self) {
        let Some(command) = self.wanted_command() else {
            self.last_command = None;
            return;
        };
        let due = match &self.last_command {
            Some((last, at)) => *last != command || self.now.since(*at) >= self.config.retry_units,
            None => true,
        };
        if due {
            self.last_command = Some((command.clone(), self.now));
            self.ready.config_commands.push(command);
        }
    }
}

/// The primary's execution inside an entry's payload (an envelope around it, or, from a
/// forged or damaged entry, anything: then an empty execution, which changes nothing).
fn execution_of(payload: &Bytes) -> Execution {
    Envelope::decode(payload)
        .ok()
        .and_then(|envelope| Execution::decode(&envelope.command).ok())
        .unwrap_or_default()
}
