//! How the driver runs the hybrid scheme: two more hosts of the one driver loop
//! ([`super::driver`]), one per kind of node.
//!
//! - [`ConfigHost`], a member of the configuration group: the Raft host
//!   ([`super::raft_host::RaftHost`]) replicating `chorus_hybrid::ConfigStateMachine` instead of
//!   the key-value store, unchanged otherwise (durable log on a storage thread, group commit,
//!   snapshots). Data
//!   servers send it their commands (`Register`, `ProposeView`, `Activate`) as
//!   [`Message::Propose`]; the leader proposes them (followers drop them: every data server
//!   sends each command to every member and retries until it took effect). The leader sends
//!   the configuration to every data server when it changes and every `update_interval`; a
//!   data server takes the sender of the latest one as the configuration leader.
//! - [`DataHost`], a data server: owns a `chorus_hybrid::DataReplica` with its key-value store
//!   and a durable log (the Raft write-ahead log, [`FileStorage`]: an entry `(epoch, lsn)` is
//!   stored as a log entry of term `epoch` at index `lsn`; the highest epoch seen is the hard
//!   state's term, the commit point its commit; the epoch a backup abandoned and the spare a
//!   primary is adding live in a small record file). Every core call gets the node's
//!   monotonic clock in milliseconds since the start of this run: the lease and grace
//!   arithmetic of the core runs on real clocks. Each Ready is handled in the core's order:
//!   persist (entries and a changed epoch with one fsync for the whole batch: group commit)
//!   → send → answer → advance. So a backup's acknowledgement, and the primary's own Append,
//!   always follow its fsync.
//!
//! A data server that is not the serving primary refuses client requests without proposing
//! anything: with [`RequestError::NotPrimary`] naming the primary of the view it knows (the
//! RESP frontend answers `MOVED 0 <host>:<port>`, as under `pb`), with
//! [`RequestError::Unavailable`] otherwise (no view, a pending view, a lease out, or a view
//! below `min_replicas` for a write).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_core::envelope::Envelope;
use chorus_core::{LogIndex, NodeId, Term};
use chorus_hybrid::{
    ConfigStateMachine, DataEntry, DataReady, DataReplica, Durable, Epoch, HardState, LocalTime,
    Lsn, Message, ProposeError, ReadError, ReadId, Role, View,
};
use chorus_kv::{Query, Response};
use chorus_raft::{Entry, EntryPayload};
use chorus_storage::record_file::{read_record, write_record};
use chorus_storage::{FileStorage, Storage, StorageError};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::boundary::{HybridStatus, NodeStatus, PeerMessage, Reply, RequestError};
use super::driver::{Context, Host};
use super::raft_host::{RaftHost, RaftHostError};
use super::requests::Kind;

/// A configuration node: the Raft host over the configuration state machine, and the pushing
/// of the configuration to the data servers.
pub struct ConfigHost {
    raft: RaftHost<FileStorage, ConfigStateMachine>,
    data_servers: Vec<NodeId>,
    update_every: Duration,
    last_update: Option<Instant>,
    /// The configuration version last sent (as leader).
    sent_version: Option<LogIndex>,
}

impl ConfigHost {
    /// A configuration node around `raft`, telling `data_servers` the configuration at least
    /// every `update_every` while it leads.
    #[must_use]
    pub fn new(
        raft: RaftHost<FileStorage, ConfigStateMachine>,
        data_servers: Vec<NodeId>,
        update_every: Duration,
    ) -> ConfigHost {
        ConfigHost {
            raft,
            data_servers,
            update_every,
            last_update: None,
            sent_version: None,
        }
    }

    /// As leader: sends the configuration to every data server if it changed since the last
    /// send, or if `update_every` passed.
    fn push_configuration(&mut self, cx: &Context) {
        if !self.raft.is_leader() {
            self.sent_version = None;
            return;
        }
        let version = self
            .raft
            .with_state_machine(|machine| machine.configuration().version);
        let now = Instant::now();
        let changed = self.sent_version != Some(version);
        let due = self
            .last_update
            .is_none_or(|at| now.duration_since(at) >= self.update_every);
        if !changed && !due {
            return;
        }
        let configuration = self
            .raft
            .with_state_machine(|machine| machine.configuration().clone());
        self.sent_version = Some(configuration.version);
        self.last_update = Some(now);
        for &server in &self.data_servers {
            cx.send(
                server,
                PeerMessage::Hybrid(Message::Update(configuration.clone())),
            );
        }
    }
}

impl Host for ConfigHost {
    type Error = RaftHostError;

    fn step(&mut self, cx: &mut Context, from: NodeId, message: PeerMessage) {
        match message {
            PeerMessage::Raft(_) => self.raft.step(cx, from, message),
            PeerMessage::Hybrid(Message::Propose(command)) => {
                // Only the leader proposes; every data server sends to every member and
                // retries, so a follower's copy is redundant.
                if self.raft.is_leader() && cx.requests.has_room() {
                    // Nobody waits for the answer: the data server learns the outcome from
                    // the configuration the leader pushes.
                    let (reply, _) = oneshot::channel();
                    self.raft.propose(cx, command.encode(), reply);
                }
            }
            _ => {
                cx.shared.metrics.peer_messages_refused.inc();
                tracing::debug!(%from, "refused a message a configuration node does not take");
            }
        }
    }

    fn propose(&mut self, _cx: &mut Context, _command: Bytes, reply: Reply) {
        let _ = reply.send(Err(RequestError::Unavailable));
    }

    fn read(&mut self, _cx: &mut Context, _query: Bytes, reply: Reply) {
        let _ = reply.send(Err(RequestError::Unavailable));
    }

    fn tick(&mut self, cx: &mut Context) {
        self.raft.tick(cx);
        self.push_configuration(cx);
    }

    fn start(&mut self, cx: &mut Context) {
        self.raft.start(cx);
    }

    fn handle_ready(&mut self, cx: &mut Context) -> Result<bool, RaftHostError> {
        let handled = self.raft.handle_ready(cx)?;
        if handled {
            self.push_configuration(cx);
        }
        Ok(handled)
    }

    fn status(&mut self, cx: &Context) -> NodeStatus {
        let mut status = self.raft.status(cx);
        let configuration = self
            .raft
            .with_state_machine(|machine| machine.configuration().clone());
        let view = &configuration.view;
        status.protocol = "hybrid".to_string();
        status.role = format!("configuration-{}", status.role);
        status.hybrid = Some(HybridStatus {
            epoch: view.epoch.0,
            primary: view.primary.map(|p| p.0),
            backups: view.backups.iter().map(|b| b.0).collect(),
            active: view.active,
            config_leader: self.raft.leader().map(|l| l.0),
            ..HybridStatus::default()
        });
        status
    }
}

/// The record file holding what a data server persists beyond the log's hard state.
pub const DATA_STATE_FILE_NAME: &str = "hybrid-state";

/// The part of the data server's hard state that the write-ahead log's hard state has no field
/// for (it changes rarely: when a backup abandons an epoch or a primary adds a spare).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct DataExtra {
    abandoned_epoch: Epoch,
    joining: Option<(Epoch, NodeId)>,
}

impl DataExtra {
    fn of(hard: &HardState) -> DataExtra {
        DataExtra {
            abandoned_epoch: hard.abandoned_epoch,
            joining: hard.joining,
        }
    }
}

/// A data server's durable state as its core wants it back: the log and hard state from
/// `storage`'s recovery, the rest from the record file in `data_dir`.
///
/// # Errors
/// The record file cannot be read or is damaged, or the log does not start at lsn 1.
pub fn recover_data(
    data_dir: &std::path::Path,
    durable: chorus_raft::DurableState,
) -> Result<Durable, StorageError> {
    let extra = match read_record(data_dir, DATA_STATE_FILE_NAME)? {
        Some(bytes) => postcard::from_bytes::<DataExtra>(&bytes).map_err(|error| {
            StorageError::InvalidWrite(format!(
                "{} is damaged: {error}",
                data_dir.join(DATA_STATE_FILE_NAME).display()
            ))
        })?,
        None => DataExtra::default(),
    };
    let mut log = Vec::with_capacity(durable.entries.len());
    for entry in durable.entries {
        if entry.index.0 != log.len() as u64 + 1 {
            return Err(StorageError::InvalidWrite(format!(
                "the data log has a gap or a snapshot at index {}",
                entry.index.0
            )));
        }
        let command = match entry.payload {
            EntryPayload::Command(command) => command,
            EntryPayload::NoOp => Bytes::new(),
            EntryPayload::Membership(_) => {
                return Err(StorageError::InvalidWrite(format!(
                    "the data log holds a Raft membership entry at index {}",
                    entry.index.0
                )));
            }
        };
        log.push(DataEntry {
            epoch: Epoch(entry.term.0),
            lsn: Lsn(entry.index.0),
            command,
        });
    }
    let commit = Lsn(durable.hard_state.commit.0.min(log.len() as u64));
    Ok(Durable {
        hard_state: HardState {
            highest_epoch: Epoch(durable.hard_state.term.0),
            abandoned_epoch: extra.abandoned_epoch,
            commit,
            joining: extra.joining,
        },
        log,
    })
}

/// A data server of the hybrid scheme.
pub struct DataHost {
    replica: DataReplica,
    storage: FileStorage,
    data_dir: PathBuf,
    /// The start of this run: the core's clock reads milliseconds since.
    clock: Instant,
    /// The configuration group's members.
    config_nodes: Vec<NodeId>,
    /// Every data server's RESP address, to name the primary in redirects.
    redis: BTreeMap<NodeId, SocketAddr>,
    /// The sender of the latest configuration pushed to us.
    config_leader: Option<NodeId>,
    /// What of the hard state was last made durable.
    synced_epoch: Epoch,
    synced_extra: DataExtra,
    last_view: View,
    keys: u64,
}

impl DataHost {
    /// A data server host for `replica` (restarted from `storage`, whose directory is
    /// `data_dir`, with `synced` the hard state it recovered), started at `clock`.
    #[must_use]
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        replica: DataReplica,
        storage: FileStorage,
        data_dir: PathBuf,
        clock: Instant,
        synced: HardState,
        config_nodes: Vec<NodeId>,
        redis: BTreeMap<NodeId, SocketAddr>,
    ) -> DataHost {
        DataHost {
            replica,
            storage,
            data_dir,
            clock,
            config_nodes,
            redis,
            config_leader: None,
            synced_epoch: synced.highest_epoch,
            synced_extra: DataExtra::of(&synced),
            last_view: View::default(),
            keys: 0,
        }
    }

    fn now(&self) -> LocalTime {
        LocalTime(u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// The refusal for a request this server cannot take: a redirect to the primary if the
    /// view names another server, "unavailable" otherwise.
    fn refusal(&self, me: NodeId) -> RequestError {
        match self.replica.status().view.primary {
            Some(primary) if primary != me => match self.redis.get(&primary) {
                Some(&redis) => RequestError::NotPrimary {
                    node: primary,
                    redis,
                },
                None => RequestError::Unavailable,
            },
            _ => RequestError::Unavailable,
        }
    }

    /// Makes the Ready's hard state and log changes durable: the record file first if its
    /// part changed (itself synced), then the entries and the hard state with one fsync.
    fn persist(&mut self, cx: &Context, ready: &DataReady) -> Result<(), StorageError> {
        let Some(hard) = ready.hard_state else {
            return self.write_log(cx, None, &ready.entries, ready.truncate_after);
        };
        let extra = DataExtra::of(&hard);
        if extra != self.synced_extra {
            let bytes = postcard::to_allocvec(&extra)
                .map_err(|error| StorageError::InvalidWrite(error.to_string()))?;
            write_record(&self.data_dir, DATA_STATE_FILE_NAME, &bytes)?;
            self.synced_extra = extra;
        }
        let raft_hard = chorus_raft::HardState {
            term: Term(hard.highest_epoch.0),
            vote: None,
            commit: LogIndex(hard.commit.0),
            repairing: None,
        };
        self.write_log(cx, Some(raft_hard), &ready.entries, ready.truncate_after)?;
        self.synced_epoch = hard.highest_epoch;
        Ok(())
    }

    fn write_log(
        &mut self,
        cx: &Context,
        hard: Option<chorus_raft::HardState>,
        entries: &[DataEntry],
        truncate_after: Option<Lsn>,
    ) -> Result<(), StorageError> {
        if let Some(after) = truncate_after {
            // The storage truncates by overwriting: the entries must start right after the
            // truncation point (the core always appends there after truncating).
            if entries
                .first()
                .is_none_or(|first| first.lsn.0 > after.0 + 1)
            {
                return Err(StorageError::InvalidWrite(format!(
                    "a truncation after lsn {} without an entry to overwrite from",
                    after.0
                )));
            }
        }
        let epoch_changed = hard.is_some_and(|h| h.term.0 != self.synced_epoch.0);
        if hard.is_none() && entries.is_empty() {
            return Ok(());
        }
        let entries: Vec<Entry> = entries
            .iter()
            .map(|entry| Entry {
                term: Term(entry.epoch.0),
                index: LogIndex(entry.lsn.0),
                payload: EntryPayload::Command(entry.command.clone()),
            })
            .collect();
        self.storage.write(hard, &entries)?;
        // The commit point alone needs no sync (it is re-learned from the primary); entries
        // and a new epoch are synced before anything that depends on them leaves.
        if !entries.is_empty() || epoch_changed {
            let started = Instant::now();
            self.storage.sync()?;
            let metrics = &cx.shared.metrics;
            metrics
                .fsync_seconds
                .observe(started.elapsed().as_secs_f64());
            if !entries.is_empty() {
                metrics.batch_entries.observe(entries.len() as f64);
            }
        }
        Ok(())
    }

    /// Counts a view change in the metrics and the log.
    fn note_view(&mut self, cx: &Context) {
        let view = self.replica.status().view;
        if view == self.last_view {
            return;
        }
        cx.shared.metrics.view_changes.inc();
        if view.primary != self.last_view.primary {
            cx.shared.metrics.leader_changes.inc();
        }
        tracing::info!(
            epoch = view.epoch.0,
            primary = ?view.primary.map(|p| p.0),
            backups = ?view.backups.iter().map(|b| b.0).collect::<Vec<_>>(),
            active = view.active,
            "view changed"
        );
        self.last_view = view;
    }
}

/// The client request an applied command answers, if this server took it.
fn request_of(me: NodeId, command: &Bytes) -> Option<u64> {
    let envelope = Envelope::decode(command).ok()?;
    (envelope.origin == me).then_some(envelope.request)
}

impl Host for DataHost {
    type Error = StorageError;

    fn step(&mut self, cx: &mut Context, from: NodeId, message: PeerMessage) {
        let PeerMessage::Hybrid(message) = message else {
            cx.shared.metrics.peer_messages_refused.inc();
            tracing::warn!(%from, "refused a message of another scheme: this node is a hybrid data server");
            return;
        };
        if matches!(message, Message::Update(_)) {
            if !self.config_nodes.contains(&from) {
                cx.shared.metrics.peer_messages_refused.inc();
                tracing::warn!(%from, "refused a configuration from a node outside the group");
                return;
            }
            self.config_leader = Some(from);
        }
        let now = self.now();
        if let Err(error) = self.replica.step(now, from, message) {
            cx.shared.metrics.peer_messages_refused.inc();
            tracing::debug!(%from, %error, "refused a message from a peer");
        }
    }

    fn propose(&mut self, cx: &mut Context, command: Bytes, reply: Reply) {
        let request = cx.requests.number(Kind::Write);
        let envelope = Envelope {
            origin: cx.me,
            request,
            command: command.clone(),
            session: None,
        };
        let now = self.now();
        match self.replica.propose(now, envelope.encode()) {
            Ok(_) => {
                cx.shared.metrics.proposals.inc();
                cx.requests.hold(Kind::Write, request, command, reply);
            }
            Err(error) => {
                cx.shared.metrics.proposals_refused.inc();
                let answer = match error {
                    ProposeError::NotServing => self.refusal(cx.me),
                    ProposeError::BelowMinReplicas => RequestError::Unavailable,
                };
                let _ = reply.send(Err(answer));
            }
        }
    }

    fn read(&mut self, cx: &mut Context, query: Bytes, reply: Reply) {
        let request = cx.requests.number(Kind::Read);
        let now = self.now();
        match self.replica.read(now, ReadId(request), &query) {
            // Answered from the applied state in the next Ready: a lease read, no message.
            Ok(()) => cx.requests.hold(Kind::Read, request, Bytes::new(), reply),
            Err(ReadError::NotServing) => {
                let _ = reply.send(Err(self.refusal(cx.me)));
            }
        }
    }

    fn tick(&mut self, _cx: &mut Context) {
        let now = self.now();
        self.replica.tick(now);
    }

    fn handle_ready(&mut self, cx: &mut Context) -> Result<bool, StorageError> {
        if !self.replica.has_ready() {
            return Ok(false);
        }
        let ready = self.replica.ready();
        // 1. Durable before anything leaves: an acknowledgement promises the entries, and a
        //    primary's Append its own copy.
        self.persist(cx, &ready)?;
        let DataReady {
            messages,
            config_commands,
            applied,
            acknowledged,
            aborted,
            reads,
            ..
        } = ready;
        // 2. Data-path messages, and commands for the configuration group (to every member:
        //    the leader proposes, the others drop them).
        for (to, message) in messages {
            cx.send(to, PeerMessage::Hybrid(message));
        }
        for command in config_commands {
            for &node in &self.config_nodes {
                cx.send(node, PeerMessage::Hybrid(Message::Propose(command.clone())));
            }
        }
        // 3. Answers: committed writes this server took, writes whose outcome it cannot
        //    report (the client retries; its session makes the retry exactly-once), reads.
        cx.shared
            .metrics
            .entries_applied
            .inc_by(applied.len() as u64);
        for write in acknowledged {
            if let Some(request) = request_of(cx.me, &write.command) {
                cx.requests.answer(Kind::Write, request, Ok(write.output));
            }
        }
        for command in aborted {
            if let Some(request) = request_of(cx.me, &command) {
                cx.requests
                    .answer(Kind::Write, request, Err(RequestError::Timeout));
            }
        }
        for (id, output) in reads {
            if cx.requests.answer(Kind::Read, id.0, Ok(output)) {
                cx.shared.metrics.reads.inc();
            }
        }
        // 4. Done.
        self.replica.advance();
        Ok(true)
    }

    fn status(&mut self, cx: &Context) -> NodeStatus {
        self.note_view(cx);
        let status = self.replica.status();
        if let Ok(Response::Integer(keys)) =
            Response::decode(&self.replica.state_machine().query(&Query::Len.encode()))
        {
            self.keys = u64::try_from(keys).unwrap_or(0);
        }
        let role = match status.role {
            Role::Primary => "primary",
            Role::Backup => "backup",
            Role::Spare => "spare",
        };
        let now = self.now();
        let lease_ms = if status.role == Role::Primary {
            status
                .view
                .backups
                .iter()
                .map(|&backup| {
                    let left = self
                        .replica
                        .lease_from(backup)
                        .map_or(0, |until| until.since(now));
                    (backup.0.to_string(), left)
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        NodeStatus {
            protocol: "hybrid".to_string(),
            id: cx.me.0,
            role: role.to_string(),
            term: status.view.epoch.0,
            leader: status.view.primary.map(|p| p.0),
            commit: status.hard_state.commit.0,
            applied: status.applied.0,
            last_index: status.last_lsn.0,
            keys: self.keys,
            hybrid: Some(HybridStatus {
                epoch: status.view.epoch.0,
                primary: status.view.primary.map(|p| p.0),
                backups: status.view.backups.iter().map(|b| b.0).collect(),
                active: status.view.active,
                config_leader: self.config_leader.map(|l| l.0),
                highest_epoch: Some(status.hard_state.highest_epoch.0),
                serving: Some(status.serving),
                lease_ms,
            }),
            ..NodeStatus::default()
        }
    }
}
