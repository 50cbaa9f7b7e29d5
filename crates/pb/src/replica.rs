//! [`PbReplica`]: one primary-backup server.
//!
//! Its role comes from the latest view it heard from the view service: primary, backup or
//! idle. The rules it keeps (each checked where the message is handled):
//!
//! - **Only an acting primary takes operations.** A replica acts as primary of view V only if
//!   it already held the group's state: it was the acting primary of its previous view, or the
//!   backup that received the complete state in view V−1, or V is view 1 and it is fresh (view 1
//!   has no history). Otherwise it refuses to act even if named primary (no uninitialized
//!   primary, defence in depth behind the view service's own rule).
//! - **State transfer first.** In every view with a backup, the primary first sends the
//!   complete state ([`Message::StateTransfer`]: the state machine's snapshot, session table
//!   included). The backup acknowledges nothing in a view before it installed that state, and
//!   the primary acknowledges the view to the view service only after that acknowledgement.
//! - **Answer after the backup.** The primary forwards each operation to the backup and applies
//!   it (and answers its client) only once the backup acknowledged it. In a view without a
//!   backup it answers alone, but only after the view service confirmed the view acknowledged
//!   (until then, the service may take a restart of this server for a lost reply).
//! - **Fencing.** A backup accepts state, operations and read confirmations only from the
//!   primary of the view it knows, carrying that view's number; older views are answered with
//!   [`Message::Rejected`], which makes the old primary stop.
//! - **Reads like writes.** A read is served only after the backup confirmed, in the same view,
//!   that the primary is still its primary. In a view without a backup the primary reads alone:
//!   the view service never promotes anyone but the backup of an acknowledged view, so with no
//!   backup no successor can exist. That argument fails if the view service loses its state
//!   (restart) or is replaced by a second one: then two primaries can each read alone.
//!
//! Applied operations are numbered by [`LogIndex`] (the primary's sequence); both replicas
//! apply the same operations at the same indexes, which is what lets a backup become primary
//! without losing or repeating anything.
//!
//! # Passive replication
//!
//! Only the primary executes an operation ([`StateMachine::execute`], when it takes the
//! proposal); it forwards the operation's *effect* with its output (a
//! [`chorus_core::Execution`] inside the envelope), and the backup applies the effect
//! ([`StateMachine::apply_effect`]) without executing anything. So an operation may draw on the
//! primary's clock or randomness, and the backup still holds exactly the primary's state.
//! The primary's state machine therefore runs ahead of what is acknowledged: it holds the
//! operations in flight. Two rules keep that invisible to clients:
//!
//! - **Answers wait for the backup.** An operation's output is answered only once the backup
//!   acknowledged it, as before.
//! - **Reads wait for what they saw.** A read is evaluated when it may be served (its round
//!   confirmed) on the state as executed so far, and answered only once every operation that
//!   state holds is acknowledged: a read never reports a write that a failover could still
//!   lose. If the primary stops acting first, the read is rejected.
//!
//! When a primary stops acting with operations in flight, those stay in its state (their
//! clients are told the outcome is unknown): it either acts again later with that state, which
//! it then transfers to its next backup, or it receives a new state transfer that replaces it.

use std::collections::BTreeMap;

use bytes::Bytes;
use chorus_core::envelope::Envelope;
use chorus_core::{Execution, LogIndex, NodeId, StateMachine};

use crate::message::Message;
use crate::ready::{Aborted, Committed, PbReady, ReadId, ReadOutput};
use crate::view::{View, ViewNumber};
use crate::view_service::PingError;

/// The configuration of one replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PbConfig {
    /// This replica.
    pub id: NodeId,
    /// The node running the view service.
    pub view_service: NodeId,
    /// Ticks between two pings (and between two retransmissions to the backup).
    pub ping_interval_ticks: u64,
    /// Operations the primary holds before the backup acknowledged them.
    pub proposals_pending_max: usize,
    /// Reads waiting for confirmation.
    pub reads_pending_max: usize,
    /// Operations a backup buffers when they arrive ahead of a gap.
    pub out_of_order_max: usize,
    /// Which start of the server this is: larger on every start (the simulator counts
    /// restarts; a runtime may use its start time in milliseconds). Pings carry it
    /// ([`Message::PingFrom`]), so the view service tells a restart from a late ping. 0 means
    /// the driver gives none: the replica sends plain [`Message::Ping`]s and the service falls
    /// back on "view 0 means restarted", which a ping delayed past the replica's first view
    /// can fool (a live primary is then taken for restarted).
    pub incarnation: u64,
}

impl PbConfig {
    /// A configuration with the default interval and bounds.
    #[must_use]
    pub fn new(id: NodeId, view_service: NodeId) -> PbConfig {
        PbConfig {
            id,
            view_service,
            ping_interval_ticks: 1,
            proposals_pending_max: 4096,
            reads_pending_max: 4096,
            out_of_order_max: 1024,
            incarnation: 0,
        }
    }

    /// Checks that the configuration can work.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first setting that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == self.view_service {
            return Err(ConfigError("a replica cannot be its own view service"));
        }
        if self.ping_interval_ticks == 0 {
            return Err(ConfigError("ping_interval_ticks must be at least 1"));
        }
        if self.proposals_pending_max == 0 || self.reads_pending_max == 0 {
            return Err(ConfigError("pending bounds must be at least 1"));
        }
        Ok(())
    }
}

/// A configuration that cannot work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub &'static str);

/// The role the latest known view gives a replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Named primary (it may still refuse to act; see [`PbStatus::acting_primary`]).
    Primary,
    /// Named backup.
    Backup,
    /// In no role: a spare, or not yet in any view.
    Idle,
}

/// A read-only view of a replica, for drivers, admin pages and checkers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PbStatus {
    /// This replica.
    pub id: NodeId,
    /// The latest view it heard.
    pub view: View,
    /// Its role in that view.
    pub role: Role,
    /// It is primary and allowed to take operations.
    pub acting_primary: bool,
    /// As primary: the view service confirmed the view acknowledged.
    pub primary_acked: bool,
    /// As primary: the backup installed the state of this view.
    pub backup_ready: bool,
    /// As backup: the view whose state it installed.
    pub ready_in_view: Option<ViewNumber>,
    /// The index of the last operation applied to the local state machine.
    pub applied: LogIndex,
    /// Operations waiting for the backup.
    pub pending: usize,
}

/// A proposal was refused; it entered no sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This replica is not the acting primary of the view it knows; the view is given so the
    /// caller can redirect.
    #[error("not the primary; the latest known view is {view:?}")]
    NotPrimary {
        /// The latest view this replica heard.
        view: View,
    },
    /// Too many operations wait for the backup.
    #[error("too many operations are pending")]
    TooManyPending,
}

/// A read was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// This replica is not the acting primary of the view it knows.
    #[error("not the primary; the latest known view is {view:?}")]
    NotPrimary {
        /// The latest view this replica heard.
        view: View,
    },
    /// Too many reads wait for confirmation.
    #[error("too many reads are pending")]
    TooManyPending,
}

/// A message was refused. The receiver's state is unchanged (it may have queued a
/// [`Message::Rejected`] to tell a stale sender).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// The message may come only from the view service, or only from the backup.
    #[error("message from unexpected sender {0}")]
    UnknownSender(NodeId),
    /// This kind of message is not for this kind of node.
    #[error("unexpected message: {0}")]
    Unexpected(&'static str),
    /// The message belongs to an older view; its sender was replaced.
    #[error("stale view {message} (current {current})")]
    StaleView {
        /// The view number in the message.
        message: ViewNumber,
        /// This node's view number.
        current: ViewNumber,
    },
    /// The message belongs to a view this node has not heard of yet; it waits for the view
    /// service (the sender retransmits).
    #[error("view {message} not known yet (current {current})")]
    FutureView {
        /// The view number in the message.
        message: ViewNumber,
        /// This node's view number.
        current: ViewNumber,
    },
    /// The sender is not the primary of the view it names.
    #[error("{from} is not the primary of {view}")]
    NotPrimary {
        /// The sender.
        from: NodeId,
        /// The view it named.
        view: ViewNumber,
    },
    /// This node is not the backup of that view.
    #[error("not the backup of {0}")]
    NotBackup(ViewNumber),
    /// This backup has not installed the state of that view yet, so it acknowledges nothing.
    #[error("state of {0} not installed yet")]
    NotReady(ViewNumber),
    /// The message contradicts itself or what this node knows.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// A transferred snapshot did not restore.
    #[error("state transfer refused: {0}")]
    Restore(String),
    /// The view service refused a ping.
    #[error(transparent)]
    Ping(PingError),
}

/// An operation the primary executed: the envelope it forwards (its command replaced by the
/// encoded [`chorus_core::Execution`]) and the output its client will get.
#[derive(Clone, Debug)]
struct Executed {
    envelope: Envelope,
    output: Bytes,
}

/// One primary-backup server. See the crate docs for the driving contract and the module docs
/// for its rules.
///
/// The replica owns its state machine as a `Box<dyn StateMachine + Send>` rather than being
/// generic over it: state transfer needs `snapshot`/`restore` inside the core, the runtime
/// picks the state machine at startup, one dynamic call per operation costs nothing next to a
/// network round trip, and the rest of Chorus avoids type-parameter plumbing (STYLE.md).
pub struct PbReplica {
    config: PbConfig,
    state_machine: Box<dyn StateMachine + Send>,

    view: View,
    /// The view number known before `view` (what a primary pings with until it may ack).
    previous_number: ViewNumber,
    /// The view service confirmed `view` acknowledged by its primary.
    primary_acked: bool,
    applied: LogIndex,

    /// Primary of `view` and allowed to act.
    acting_primary: bool,
    /// Was the acting primary of `view` until its backup said a newer view exists. It still
    /// holds the latest state, so it may act again if the newer view keeps it primary.
    fenced: bool,
    /// Acting primary: the backup of `view` installed the state.
    backup_ready: bool,
    /// Acting primary: the backup's cumulative acknowledgement in `view`.
    backup_applied: LogIndex,
    /// Acting primary: the highest read round the backup confirmed in `view`.
    backup_read_round: u64,
    /// Acting primary: operations executed but not yet acknowledged, from `applied + 1` on,
    /// contiguous; the state machine already holds their effects.
    pending: BTreeMap<LogIndex, Executed>,
    /// Acting primary: reads not yet in a round.
    reads_waiting: Vec<(ReadId, Bytes)>,
    /// Acting primary: reads sent for confirmation, with their round.
    reads_in_round: Vec<(u64, ReadId, Bytes)>,
    /// Acting primary: reads evaluated, with their answers, waiting until every operation
    /// the state held when they were evaluated is acknowledged (the index of the last one).
    reads_held: Vec<(LogIndex, ReadId, Bytes)>,
    /// The latest read round started (never reset, so rounds of old views never match).
    read_round: u64,

    /// Backup: the view whose complete state this replica installed.
    ready_in_view: Option<ViewNumber>,
    /// Backup: the highest read round confirmed in `view`.
    confirmed_read_round: u64,
    /// Backup: effects that arrived ahead of a gap.
    out_of_order: BTreeMap<LogIndex, Bytes>,

    ping_elapsed: u64,
    /// The number of the last ping sent (a new acknowledgement goes out at once).
    last_ping_number: Option<ViewNumber>,

    messages: Vec<(NodeId, Message)>,
    committed: Vec<Committed>,
    aborted: Vec<Aborted>,
    reads: Vec<ReadOutput>,
    rejected_reads: Vec<ReadId>,
    ready_outstanding: bool,
}

impl std::fmt::Debug for PbReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PbReplica")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl PbReplica {
    /// A fresh replica: no view, nothing applied, its state machine as given (it must be in its
    /// initial state; a restarted server is a new server).
    ///
    /// # Errors
    /// [`ConfigError`] if the configuration cannot work.
    pub fn new(
        config: PbConfig,
        state_machine: Box<dyn StateMachine + Send>,
    ) -> Result<PbReplica, ConfigError> {
        config.validate()?;
        Ok(PbReplica {
            config,
            state_machine,
            view: View::NONE,
            previous_number: ViewNumber(0),
            primary_acked: false,
            applied: LogIndex(0),
            acting_primary: false,
            fenced: false,
            backup_ready: false,
            backup_applied: LogIndex(0),
            backup_read_round: 0,
            pending: BTreeMap::new(),
            reads_waiting: Vec::new(),
            reads_in_round: Vec::new(),
            reads_held: Vec::new(),
            read_round: 0,
            ready_in_view: None,
            confirmed_read_round: 0,
            out_of_order: BTreeMap::new(),
            ping_elapsed: 0,
            last_ping_number: None,
            messages: Vec::new(),
            committed: Vec::new(),
            aborted: Vec::new(),
            reads: Vec::new(),
            rejected_reads: Vec::new(),
            ready_outstanding: false,
        })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &PbConfig {
        &self.config
    }

    /// The local state machine (for checkers and tests: compare primary and backup).
    #[must_use]
    pub fn state_machine(&self) -> &(dyn StateMachine + Send) {
        self.state_machine.as_ref()
    }

    /// A read-only view of the replica.
    #[must_use]
    pub fn status(&self) -> PbStatus {
        let role = if self.view.is_primary(self.config.id) {
            Role::Primary
        } else if self.view.is_backup(self.config.id) {
            Role::Backup
        } else {
            Role::Idle
        };
        PbStatus {
            id: self.config.id,
            view: self.view,
            role,
            acting_primary: self.acting_primary,
            primary_acked: self.primary_acked,
            backup_ready: self.backup_ready,
            ready_in_view: self.ready_in_view,
            applied: self.applied,
            pending: self.pending.len(),
        }
    }

    /// Logical time moved one tick. Every `ping_interval_ticks` the replica pings the view
    /// service and, as primary, retransmits whatever the backup has not acknowledged.
    pub fn tick(&mut self) {
        self.ping_elapsed = self.ping_elapsed.saturating_add(1);
        if self.ping_elapsed < self.config.ping_interval_ticks {
            return;
        }
        self.ping_elapsed = 0;
        self.send_ping();
        if !self.acting_primary {
            return;
        }
        let Some(backup) = self.view.backup else {
            return;
        };
        if self.backup_ready {
            self.send_pending_forwards(backup);
            if self.backup_read_round < self.round_in_flight() {
                self.messages.push((
                    backup,
                    Message::ReadConfirm {
                        view: self.view.number,
                        round: self.read_round,
                    },
                ));
            }
        } else {
            self.send_state_transfer(backup);
        }
    }

    /// A client operation: `envelope` wraps the command with its origin and request number,
    /// which come back in [`Committed`] (or [`Aborted`]).
    ///
    /// # Errors
    /// [`ProposeError`] if this replica is not the acting primary or too much is pending; the
    /// operation was not taken.
    pub fn propose(&mut self, envelope: Envelope) -> Result<LogIndex, ProposeError> {
        if !self.acting_primary {
            return Err(ProposeError::NotPrimary { view: self.view });
        }
        if self.pending.len() >= self.config.proposals_pending_max {
            return Err(ProposeError::TooManyPending);
        }
        let index = self.last_assigned().next();
        // Executed once, here, on the primary only; the backup gets the effect.
        let execution = self.state_machine.execute(index, &envelope.command);
        let executed = Executed {
            envelope: Envelope {
                command: execution.encode(),
                ..envelope
            },
            output: execution.output,
        };
        if self.backup_ready
            && let Some(backup) = self.view.backup
        {
            self.messages.push((
                backup,
                Message::Forward {
                    view: self.view.number,
                    index,
                    execution: executed.envelope.encode(),
                },
            ));
        }
        self.pending.insert(index, executed);
        self.try_commit();
        Ok(index)
    }

    /// A client read: `query` for the state machine, answered in a later Ready's `reads` once
    /// the backup confirmed this replica is still primary (or rejected in `rejected_reads`).
    ///
    /// # Errors
    /// [`ReadError`] if this replica is not the acting primary or too many reads wait.
    pub fn read(&mut self, id: ReadId, query: Bytes) -> Result<(), ReadError> {
        if !self.acting_primary {
            return Err(ReadError::NotPrimary { view: self.view });
        }
        if self.reads_waiting.len() + self.reads_in_round.len() >= self.config.reads_pending_max {
            return Err(ReadError::TooManyPending);
        }
        self.reads_waiting.push((id, query));
        self.try_commit();
        Ok(())
    }

    /// A message arrived from `from`.
    ///
    /// # Errors
    /// [`StepError`] if the message is refused; the replica's state is unchanged (a
    /// [`Message::Rejected`] may be queued for a stale sender).
    pub fn step(&mut self, from: NodeId, message: Message) -> Result<(), StepError> {
        match message {
            Message::Ping { .. } | Message::PingFrom { .. } => {
                Err(StepError::Unexpected("a replica does not take pings"))
            }
            Message::ViewReply(reply) => {
                if from != self.config.view_service {
                    return Err(StepError::UnknownSender(from));
                }
                self.on_view_reply(reply.view, reply.primary_acked)
            }
            Message::StateTransfer {
                view,
                snapshot,
                index,
            } => self.on_state_transfer(from, view, &snapshot, index),
            Message::Forward {
                view,
                index,
                execution,
            } => self.on_forward(from, view, index, &execution),
            Message::ReadConfirm { view, round } => self.on_read_confirm(from, view, round),
            Message::Ack {
                view,
                applied,
                read_round,
            } => self.on_ack(from, view, applied, read_round),
            Message::Rejected { view } => self.on_rejected(from, view),
        }
    }

    /// Whether a Ready with work is available.
    #[must_use]
    pub fn has_ready(&self) -> bool {
        !self.ready_outstanding
            && (!self.messages.is_empty()
                || !self.committed.is_empty()
                || !self.aborted.is_empty()
                || !self.reads.is_empty()
                || !self.rejected_reads.is_empty()
                || self.read_round_due()
                || self.last_ping_number != Some(self.ping_number()))
    }

    /// Takes the pending work: messages to send, then outputs to deliver.
    ///
    /// # Panics
    /// If the previous Ready was not yet advanced.
    pub fn ready(&mut self) -> PbReady {
        assert!(
            !self.ready_outstanding,
            "ready() called before the previous Ready was advanced"
        );
        if self.read_round_due() {
            self.start_read_round();
        }
        if self.last_ping_number != Some(self.ping_number()) {
            // A new view learned or a new acknowledgement due: tell the service at once.
            self.send_ping();
        }
        self.ready_outstanding = true;
        PbReady {
            messages: std::mem::take(&mut self.messages),
            committed: std::mem::take(&mut self.committed),
            aborted: std::mem::take(&mut self.aborted),
            reads: std::mem::take(&mut self.reads),
            rejected_reads: std::mem::take(&mut self.rejected_reads),
        }
    }

    /// The driver sent the messages and delivered the outputs of the last Ready.
    ///
    /// # Panics
    /// If no Ready is outstanding.
    pub fn advance(&mut self) {
        assert!(
            self.ready_outstanding,
            "advance() called without an outstanding Ready"
        );
        self.ready_outstanding = false;
    }

    // ----- View changes ---------------------------------------------------------------------

    fn on_view_reply(&mut self, view: View, primary_acked: bool) -> Result<(), StepError> {
        if view.number == ViewNumber(0) && view != View::NONE {
            return Err(StepError::Malformed("view 0 names servers"));
        }
        if view.number > ViewNumber(0) && view.primary.is_none() {
            return Err(StepError::Malformed("a view without a primary"));
        }
        if view.primary.is_some() && view.primary == view.backup {
            return Err(StepError::Malformed(
                "primary and backup are the same server",
            ));
        }
        if view.number < self.view.number {
            return Ok(()); // A reordered, older reply.
        }
        if view.number == self.view.number {
            if view != self.view {
                return Err(StepError::Malformed("two different views with one number"));
            }
            // Acknowledgement only ever becomes true within a view.
            if primary_acked && !self.primary_acked {
                self.primary_acked = true;
                self.try_commit();
            }
            return Ok(());
        }
        self.change_view(view);
        self.primary_acked = primary_acked;
        self.try_commit();
        Ok(())
    }

    fn change_view(&mut self, new: View) {
        let id = self.config.id;
        let old = self.view;
        let was_acting = self.acting_primary;
        let was_fenced = std::mem::replace(&mut self.fenced, false);
        let was_ready_in = self.ready_in_view;
        assert!(new.number > old.number, "views only move forward");

        self.view = new;
        self.previous_number = old.number;
        self.primary_acked = false;
        self.backup_ready = false;
        self.backup_applied = LogIndex(0);
        self.backup_read_round = 0;
        self.ready_in_view = None;
        self.confirmed_read_round = 0;
        self.out_of_order.clear();

        let fresh = old.number == ViewNumber(0) && self.applied == LogIndex(0);
        let may_act = new.is_primary(id)
            && (((was_acting || was_fenced) && old.is_primary(id))
                || was_ready_in.is_some_and(|ready| ready.next() == new.number)
                || (new.number == ViewNumber(1) && fresh));
        if may_act {
            self.acting_primary = true;
            // Reads of an unconfirmed round are asked again of the new backup.
            let in_round = std::mem::take(&mut self.reads_in_round);
            self.reads_waiting
                .extend(in_round.into_iter().map(|(_, id, query)| (id, query)));
            if let Some(backup) = new.backup {
                self.send_state_transfer(backup);
            }
        } else {
            if was_acting {
                self.abort_all();
            }
            self.acting_primary = false;
        }
    }

    /// Stops being primary: every operation in flight gets an unknown outcome, every read is
    /// rejected.
    fn abort_all(&mut self) {
        // The state machine keeps what it executed: this replica's state now runs to there.
        self.applied = self.last_assigned();
        for (index, executed) in std::mem::take(&mut self.pending) {
            self.aborted.push(Aborted {
                index,
                origin: executed.envelope.origin,
                request: executed.envelope.request,
            });
        }
        for (_, id, _) in std::mem::take(&mut self.reads_held) {
            self.rejected_reads.push(id);
        }
        for (id, _) in std::mem::take(&mut self.reads_waiting) {
            self.rejected_reads.push(id);
        }
        for (_, id, _) in std::mem::take(&mut self.reads_in_round) {
            self.rejected_reads.push(id);
        }
    }

    /// The number this replica pings with: as primary, the latest view it acknowledges (its
    /// view only once a backup, if any, holds the state); otherwise the view it knows.
    fn ping_number(&self) -> ViewNumber {
        if !self.view.is_primary(self.config.id) {
            return self.view.number;
        }
        if self.acting_primary && (self.view.backup.is_none() || self.backup_ready) {
            self.view.number
        } else {
            self.previous_number
        }
    }

    fn send_ping(&mut self) {
        let number = self.ping_number();
        self.last_ping_number = Some(number);
        let ping = match self.config.incarnation {
            0 => Message::Ping { view: number },
            incarnation => Message::PingFrom {
                view: number,
                incarnation,
            },
        };
        self.messages.push((self.config.view_service, ping));
    }

    // ----- Primary --------------------------------------------------------------------------

    fn last_assigned(&self) -> LogIndex {
        self.pending
            .last_key_value()
            .map_or(self.applied, |(&index, _)| index)
    }

    fn send_state_transfer(&mut self, backup: NodeId) {
        self.messages.push((
            backup,
            Message::StateTransfer {
                view: self.view.number,
                // The state holds every operation executed, acknowledged or not.
                snapshot: self.state_machine.snapshot_bytes(),
                index: self.last_assigned(),
            },
        ));
    }

    fn send_pending_forwards(&mut self, backup: NodeId) {
        for (&index, executed) in self.pending.range(self.backup_applied.next()..) {
            self.messages.push((
                backup,
                Message::Forward {
                    view: self.view.number,
                    index,
                    execution: executed.envelope.encode(),
                },
            ));
        }
    }

    fn round_in_flight(&self) -> u64 {
        self.reads_in_round
            .iter()
            .map(|&(round, _, _)| round)
            .max()
            .unwrap_or(0)
    }

    fn read_round_due(&self) -> bool {
        self.acting_primary
            && self.view.backup.is_some()
            && self.backup_ready
            && !self.reads_waiting.is_empty()
    }

    fn start_read_round(&mut self) {
        let Some(backup) = self.view.backup else {
            return;
        };
        self.read_round = self.read_round.saturating_add(1);
        let round = self.read_round;
        for (id, query) in std::mem::take(&mut self.reads_waiting) {
            self.reads_in_round.push((round, id, query));
        }
        self.messages.push((
            backup,
            Message::ReadConfirm {
                view: self.view.number,
                round,
            },
        ));
    }

    /// Applies every operation the backup acknowledged (or, without a backup, every operation
    /// once the service confirmed the view), and serves every confirmed read.
    fn try_commit(&mut self) {
        if !self.acting_primary {
            return;
        }
        let limit = match self.view.backup {
            Some(_) if self.backup_ready => self.backup_applied,
            Some(_) => return,
            None if self.primary_acked => self.last_assigned(),
            None => return,
        };
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > limit {
                break;
            }
            let (index, executed) = entry.remove_entry();
            assert_eq!(
                index,
                self.applied.next(),
                "pending operations are contiguous"
            );
            self.applied = index;
            self.committed.push(Committed {
                index,
                origin: executed.envelope.origin,
                request: executed.envelope.request,
                output: executed.output,
            });
        }
        if self.view.backup.is_none() {
            let waiting = std::mem::take(&mut self.reads_waiting);
            self.serve(waiting.into_iter());
        } else {
            let confirmed = self.backup_read_round;
            let (served, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_in_round)
                .into_iter()
                .partition(|&(round, _, _)| round <= confirmed);
            self.reads_in_round = waiting;
            self.serve(served.into_iter().map(|(_, id, query)| (id, query)));
        }
    }

    /// Evaluates `reads` on the state as executed so far and answers each once everything
    /// that state holds is acknowledged (at once if it already is).
    fn serve(&mut self, reads: impl Iterator<Item = (ReadId, Bytes)>) {
        let executed = self.last_assigned();
        for (id, query) in reads {
            let output = self.state_machine.query(&query);
            self.reads_held.push((executed, id, output));
        }
        let applied = self.applied;
        let (due, held): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_held)
            .into_iter()
            .partition(|&(seen, _, _)| seen <= applied);
        self.reads_held = held;
        self.reads.extend(
            due.into_iter()
                .map(|(_, id, output)| ReadOutput { id, output }),
        );
    }

    fn on_ack(
        &mut self,
        from: NodeId,
        view: ViewNumber,
        applied: LogIndex,
        read_round: u64,
    ) -> Result<(), StepError> {
        self.check_current_view(view)?;
        if !self.acting_primary || self.view.backup != Some(from) {
            return Err(StepError::UnknownSender(from));
        }
        if applied > self.last_assigned() {
            return Err(StepError::Malformed("acknowledges operations never sent"));
        }
        if read_round > self.read_round {
            return Err(StepError::Malformed("confirms a read round never started"));
        }
        let newly_ready = !self.backup_ready;
        self.backup_ready = true;
        self.backup_applied = self.backup_applied.max(applied);
        self.backup_read_round = self.backup_read_round.max(read_round);
        if newly_ready {
            self.send_pending_forwards(from);
        }
        self.try_commit();
        Ok(())
    }

    fn on_rejected(&mut self, from: NodeId, view: ViewNumber) -> Result<(), StepError> {
        if self.view.backup != Some(from) {
            return Err(StepError::UnknownSender(from));
        }
        if view <= self.view.number || !self.acting_primary {
            return Ok(()); // Stale or irrelevant news.
        }
        // Our backup has moved on to a newer view: we were replaced. Stop at once rather than
        // wait for the view service to tell us.
        self.abort_all();
        self.acting_primary = false;
        self.fenced = true;
        Ok(())
    }

    /// A message of `view` belongs to the view this replica knows; older ones are stale,
    /// newer ones wait until the view service announces that view.
    fn check_current_view(&self, view: ViewNumber) -> Result<(), StepError> {
        let current = self.view.number;
        match view.cmp(&current) {
            std::cmp::Ordering::Less => Err(StepError::StaleView {
                message: view,
                current,
            }),
            std::cmp::Ordering::Greater => Err(StepError::FutureView {
                message: view,
                current,
            }),
            std::cmp::Ordering::Equal => Ok(()),
        }
    }

    // ----- Backup ---------------------------------------------------------------------------

    /// The checks every primary-to-backup message passes: it comes from the primary of the
    /// view this replica knows, and this replica is that view's backup.
    fn check_from_primary(&mut self, from: NodeId, view: ViewNumber) -> Result<(), StepError> {
        if let Err(error) = self.check_current_view(view) {
            if matches!(error, StepError::StaleView { .. }) {
                // Tell a stale primary it was replaced, so it stops at once (view numbers
                // fence it).
                self.messages.push((
                    from,
                    Message::Rejected {
                        view: self.view.number,
                    },
                ));
            }
            return Err(error);
        }
        if !self.view.is_primary(from) {
            return Err(StepError::NotPrimary { from, view });
        }
        if !self.view.is_backup(self.config.id) {
            return Err(StepError::NotBackup(view));
        }
        Ok(())
    }

    fn send_ack(&mut self, to: NodeId) {
        self.messages.push((
            to,
            Message::Ack {
                view: self.view.number,
                applied: self.applied,
                read_round: self.confirmed_read_round,
            },
        ));
    }

    fn on_state_transfer(
        &mut self,
        from: NodeId,
        view: ViewNumber,
        snapshot: &[u8],
        index: LogIndex,
    ) -> Result<(), StepError> {
        self.check_from_primary(from, view)?;
        if self.ready_in_view == Some(view) {
            // A retransmission: installing it again would roll back operations applied since.
            self.send_ack(from);
            return Ok(());
        }
        self.state_machine
            .restore_bytes(snapshot)
            .map_err(|error| StepError::Restore(error.reason))?;
        self.applied = index;
        self.ready_in_view = Some(view);
        self.out_of_order.clear();
        self.send_ack(from);
        Ok(())
    }

    fn on_forward(
        &mut self,
        from: NodeId,
        view: ViewNumber,
        index: LogIndex,
        execution: &Bytes,
    ) -> Result<(), StepError> {
        self.check_from_primary(from, view)?;
        if self.ready_in_view != Some(view) {
            return Err(StepError::NotReady(view));
        }
        let envelope =
            Envelope::decode(execution).map_err(|_| StepError::Malformed("not an envelope"))?;
        let effect = Execution::decode(&envelope.command)
            .map_err(|_| StepError::Malformed("not an execution record"))?
            .effect;
        if index == LogIndex(0) {
            return Err(StepError::Malformed("operation index 0"));
        }
        if index > self.applied.next() {
            let ahead = index.0.saturating_sub(self.applied.0);
            let fits = usize::try_from(ahead)
                .is_ok_and(|ahead| ahead <= self.config.out_of_order_max)
                && self.out_of_order.len() < self.config.out_of_order_max;
            if fits {
                self.out_of_order.insert(index, effect);
            }
            return Ok(());
        }
        if index == self.applied.next() {
            self.apply_as_backup(index, &effect)?;
            while let Some(entry) = self.out_of_order.first_entry() {
                if *entry.key() > self.applied.next() {
                    break;
                }
                let (next, effect) = entry.remove_entry();
                if next == self.applied.next() {
                    self.apply_as_backup(next, &effect)?;
                }
            }
        }
        // Applied now or earlier (a duplicate): acknowledge cumulatively either way.
        self.send_ack(from);
        Ok(())
    }

    /// Applies the primary's effect at `index`: the backup never executes an operation.
    fn apply_as_backup(&mut self, index: LogIndex, effect: &[u8]) -> Result<(), StepError> {
        assert_eq!(index, self.applied.next(), "backup applies in order");
        self.state_machine
            .apply_effect(index, effect)
            .map_err(|_| StepError::Malformed("an effect the state machine refuses"))?;
        self.applied = index;
        Ok(())
    }

    fn on_read_confirm(
        &mut self,
        from: NodeId,
        view: ViewNumber,
        round: u64,
    ) -> Result<(), StepError> {
        self.check_from_primary(from, view)?;
        if self.ready_in_view != Some(view) {
            return Err(StepError::NotReady(view));
        }
        self.confirmed_read_round = self.confirmed_read_round.max(round);
        self.send_ack(from);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Step tests: each drives one replica through a transition and compares the whole
    //! [`PbReady`] it emits, so an extra or missing message or output fails the test.

    use chorus_kv::{Command, KvConfig, KvStore, Op, Response};

    use super::*;
    use crate::view_service::PingReply;

    const SERVICE: NodeId = NodeId(100);
    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);
    const C: NodeId = NodeId(3);

    fn replica(id: NodeId) -> PbReplica {
        PbReplica::new(
            PbConfig::new(id, SERVICE),
            Box::new(KvStore::new(KvConfig::default())),
        )
        .expect("valid config")
    }

    fn view(number: u64, primary: NodeId, backup: Option<NodeId>) -> View {
        View {
            number: ViewNumber(number),
            primary: Some(primary),
            backup,
        }
    }

    fn hear_view(replica: &mut PbReplica, view: View, primary_acked: bool) {
        replica
            .step(
                SERVICE,
                Message::ViewReply(PingReply {
                    view,
                    primary_acked,
                }),
            )
            .expect("view reply accepted");
    }

    /// Takes the Ready and advances, as a driver that did all the work would.
    fn take(replica: &mut PbReplica) -> PbReady {
        let ready = replica.ready();
        replica.advance();
        ready
    }

    fn put(key: &str, value: &str) -> Bytes {
        Command::Unsessioned(Op::Put {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
        })
        .encode()
    }

    /// The state of a primary that applied one put, as a snapshot and its last index.
    fn one_put_state() -> (Bytes, LogIndex) {
        let mut store = KvStore::new(KvConfig::default());
        let _output = store.apply(LogIndex(1), &put("x", "1"));
        (store.snapshot_bytes(), LogIndex(1))
    }

    /// `id` as the backup of `view`, with the ping announcing the view already sent.
    fn backup_in(id: NodeId, view: View) -> PbReplica {
        let mut backup = replica(id);
        hear_view(&mut backup, view, false);
        assert_eq!(
            take(&mut backup),
            PbReady {
                messages: vec![(SERVICE, Message::Ping { view: view.number })],
                ..PbReady::default()
            }
        );
        backup
    }

    /// A, acting primary of view 2 with backup B, which installed the (empty) state.
    fn primary_with_ready_backup() -> PbReplica {
        let mut primary = replica(A);
        hear_view(&mut primary, view(1, A, None), false);
        assert_eq!(
            take(&mut primary),
            PbReady {
                messages: vec![(
                    SERVICE,
                    Message::Ping {
                        view: ViewNumber(1)
                    }
                )],
                ..PbReady::default()
            }
        );
        hear_view(&mut primary, view(2, A, Some(B)), false);
        // The state goes to the new backup first; the ping still acknowledges only view 1
        // (already sent), so no ping yet.
        assert_eq!(
            take(&mut primary),
            PbReady {
                messages: vec![(
                    B,
                    Message::StateTransfer {
                        view: ViewNumber(2),
                        snapshot: KvStore::new(KvConfig::default()).snapshot_bytes(),
                        index: LogIndex(0),
                    }
                )],
                ..PbReady::default()
            }
        );
        primary
            .step(
                B,
                Message::Ack {
                    view: ViewNumber(2),
                    applied: LogIndex(0),
                    read_round: 0,
                },
            )
            .expect("the backup's first ack");
        // Now the primary may acknowledge view 2, and does so at once.
        assert_eq!(
            take(&mut primary),
            PbReady {
                messages: vec![(
                    SERVICE,
                    Message::Ping {
                        view: ViewNumber(2)
                    }
                )],
                ..PbReady::default()
            }
        );
        assert!(primary.status().backup_ready);
        primary
    }

    #[test]
    fn a_backup_receiving_the_state_transfer_acks_exactly_once() {
        let mut backup = backup_in(B, view(2, A, Some(B)));
        let (snapshot, index) = one_put_state();
        let transfer = Message::StateTransfer {
            view: ViewNumber(2),
            snapshot: snapshot.clone(),
            index,
        };
        let ack = Message::Ack {
            view: ViewNumber(2),
            applied: index,
            read_round: 0,
        };
        backup.step(A, transfer.clone()).expect("state installed");
        assert_eq!(
            take(&mut backup),
            PbReady {
                messages: vec![(A, ack.clone())],
                ..PbReady::default()
            }
        );
        assert!(!backup.has_ready());
        assert_eq!(backup.status().ready_in_view, Some(ViewNumber(2)));
        assert_eq!(backup.status().applied, index);
        assert_eq!(backup.state_machine().snapshot_bytes(), snapshot);

        // A retransmission is acknowledged again, once, and not installed a second time.
        backup.step(A, transfer).expect("retransmission");
        assert_eq!(
            take(&mut backup),
            PbReady {
                messages: vec![(A, ack)],
                ..PbReady::default()
            }
        );
        assert!(!backup.has_ready());
    }

    #[test]
    fn a_primary_forwards_a_proposal_once_and_answers_only_after_the_ack() {
        let mut primary = primary_with_ready_backup();
        let envelope = Envelope {
            origin: C,
            request: 7,
            command: put("x", "1"),
            session: None,
        };
        let index = primary.propose(envelope.clone()).expect("acting primary");
        assert_eq!(index, LogIndex(1));
        // What travels is the primary's execution: the output and the effect, never the
        // command for the backup to run again.
        let execution = KvStore::new(KvConfig::default()).execute(index, &put("x", "1"));
        assert_eq!(
            take(&mut primary),
            PbReady {
                messages: vec![(
                    B,
                    Message::Forward {
                        view: ViewNumber(2),
                        index,
                        execution: Envelope {
                            command: execution.encode(),
                            ..envelope
                        }
                        .encode(),
                    }
                )],
                ..PbReady::default()
            }
        );
        assert!(!primary.has_ready(), "nothing is answered before the ack");
        assert_eq!(primary.status().applied, LogIndex(0));
        assert_eq!(primary.status().pending, 1);

        primary
            .step(
                B,
                Message::Ack {
                    view: ViewNumber(2),
                    applied: index,
                    read_round: 0,
                },
            )
            .expect("the backup's ack");
        assert_eq!(
            take(&mut primary),
            PbReady {
                committed: vec![Committed {
                    index,
                    origin: C,
                    request: 7,
                    output: Response::Ok.encode(),
                }],
                ..PbReady::default()
            }
        );
        assert_eq!(primary.status().applied, index);
        assert_eq!(primary.status().pending, 0);
    }

    #[test]
    fn a_forward_from_a_stale_view_is_rejected_and_changes_nothing() {
        // B is the backup of view 3 (primary C) and holds its state; A was primary of view 2.
        let mut backup = backup_in(B, view(3, C, Some(B)));
        let (snapshot, index) = one_put_state();
        backup
            .step(
                C,
                Message::StateTransfer {
                    view: ViewNumber(3),
                    snapshot,
                    index,
                },
            )
            .expect("state installed");
        let _ack = take(&mut backup);
        let status_before = backup.status();
        let state_before = backup.state_machine().snapshot_bytes();

        let stale = Message::Forward {
            view: ViewNumber(2),
            index: index.next(),
            execution: Envelope {
                origin: A,
                request: 1,
                command: put("x", "stale"),
                session: None,
            }
            .encode(),
        };
        assert_eq!(
            backup.step(A, stale),
            Err(StepError::StaleView {
                message: ViewNumber(2),
                current: ViewNumber(3),
            })
        );
        assert_eq!(
            take(&mut backup),
            PbReady {
                messages: vec![(
                    A,
                    Message::Rejected {
                        view: ViewNumber(3)
                    }
                )],
                ..PbReady::default()
            }
        );
        assert_eq!(backup.status(), status_before);
        assert_eq!(backup.state_machine().snapshot_bytes(), state_before);
        assert!(!backup.has_ready());
    }

    #[test]
    fn a_replica_with_an_incarnation_names_it_in_its_pings() {
        let mut config = PbConfig::new(A, SERVICE);
        config.incarnation = 9;
        let mut replica = PbReplica::new(config, Box::new(KvStore::new(KvConfig::default())))
            .expect("valid config");
        assert_eq!(
            take(&mut replica).messages,
            vec![(
                SERVICE,
                Message::PingFrom {
                    view: ViewNumber(0),
                    incarnation: 9
                }
            )]
        );
    }

    fn read_x() -> Bytes {
        chorus_kv::Query::Get {
            key: Bytes::from_static(b"x"),
        }
        .encode()
    }

    fn ack(applied: u64, read_round: u64) -> Message {
        Message::Ack {
            view: ViewNumber(2),
            applied: LogIndex(applied),
            read_round,
        }
    }

    /// Proves a read never reports a write the backup does not hold yet: the primary executed
    /// the write (its state holds it), the backup confirmed the read's round, and still the
    /// read waits until the write is acknowledged, then answers with it.
    #[test]
    fn a_read_waits_until_the_writes_it_saw_are_acknowledged() {
        let mut primary = primary_with_ready_backup();
        let write = Envelope {
            origin: C,
            request: 1,
            command: put("x", "1"),
            session: None,
        };
        primary.propose(write).expect("acting primary");
        primary.read(ReadId(9), read_x()).expect("acting primary");
        let ready = take(&mut primary);
        assert!(
            ready
                .messages
                .iter()
                .any(|(_, m)| matches!(m, Message::ReadConfirm { round: 1, .. }))
        );
        primary.step(B, ack(0, 1)).expect("the round confirmed");
        let ready = take(&mut primary);
        assert!(
            ready.reads.is_empty(),
            "the write it saw is not acknowledged"
        );
        assert!(ready.committed.is_empty());
        primary.step(B, ack(1, 1)).expect("the write acknowledged");
        let ready = take(&mut primary);
        assert_eq!(ready.committed.len(), 1);
        assert_eq!(
            ready.reads,
            vec![ReadOutput {
                id: ReadId(9),
                output: Response::Value(Some(Bytes::from_static(b"1"))).encode(),
            }]
        );
    }

    /// Proves a held read is rejected, and the write in flight aborted (outcome unknown), when
    /// the primary learns it was replaced; its state keeps the executed write, which it would
    /// transfer if it acted again.
    #[test]
    fn a_replaced_primary_rejects_held_reads_and_aborts_its_writes() {
        let mut primary = primary_with_ready_backup();
        let write = Envelope {
            origin: C,
            request: 1,
            command: put("x", "1"),
            session: None,
        };
        let index = primary.propose(write).expect("acting primary");
        primary.read(ReadId(9), read_x()).expect("acting primary");
        let _confirm = take(&mut primary);
        primary.step(B, ack(0, 1)).expect("the round confirmed");
        assert!(take(&mut primary).reads.is_empty());
        primary
            .step(
                B,
                Message::Rejected {
                    view: ViewNumber(3),
                },
            )
            .expect("replaced");
        let ready = take(&mut primary);
        assert_eq!(ready.rejected_reads, vec![ReadId(9)]);
        assert_eq!(
            ready.aborted,
            vec![Aborted {
                index,
                origin: C,
                request: 1,
            }]
        );
        assert_eq!(primary.status().applied, index);
        assert_eq!(primary.status().pending, 0);
    }
}
