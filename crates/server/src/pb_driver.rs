//! The primary-backup driver: the one thread that owns a primary-backup node (a server's
//! [`PbReplica`] with its state machine, or the [`ViewServer`]) and runs the core's contract
//! (see `chorus_pb`) for real.
//!
//! It sits behind the same boundary as the Raft driver ([`crate::driver`]): the transport, the
//! RESP frontend and the admin server hand it [`Input`]s through one bounded queue, get answers
//! through oneshot channels and read what it publishes in [`Shared`]. The loop is the Raft
//! driver's, minus the disk (primary-backup keeps nothing durable):
//!
//! 1. wait for an input or the next tick; then take every input already queued (bounded);
//! 2. tick the core once per ping interval, and expire client requests that waited too long;
//! 3. while the core has a Ready: send its messages, answer the clients of applied operations,
//!    tell the clients of aborted ones that the outcome is unknown, answer confirmed reads,
//!    refuse rejected ones, and advance;
//! 4. publish the status (the view, this node's role) for the admin page.
//!
//! A server that is not the acting primary refuses client requests without proposing
//! anything: with [`RequestError::NotPrimary`] naming the primary and its RESP address when the
//! view names another server (the RESP frontend turns it into a `MOVED` redirect), with
//! [`RequestError::Unavailable`] otherwise (no view yet, or this server is named primary but
//! may not act yet).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_core::NodeId;
use chorus_core::envelope::Envelope;
use chorus_kv::{Query, Response};
use chorus_pb::{PbReady, PbReplica, ProposeError, ReadError, ReadId, Role, View, ViewServer};
use tokio::sync::mpsc;

use crate::driver::{Input, NodeStatus, Reply, RequestError, Shared, ViewStatus, send_to_peer};
use crate::transport::PeerMessage;

/// The primary-backup node a driver runs.
#[derive(Debug)]
pub enum PbNode {
    /// A server: primary, backup or spare, as the view says.
    Replica(Box<PbReplica>),
    /// The view service.
    ViewService(ViewServer),
}

/// How a primary-backup driver is set up.
#[derive(Clone, Debug)]
pub struct PbDriverSettings {
    /// One tick: the ping interval.
    pub ping_interval: Duration,
    /// How long a request may wait for its answer before the client is told the outcome is
    /// unknown.
    pub request_timeout: Duration,
    /// Requests held at once.
    pub requests_pending_max: usize,
    /// Inputs taken into one batch.
    pub batch_inputs_max: usize,
    /// Every server's RESP address, to name the primary in redirects.
    pub redis: BTreeMap<NodeId, SocketAddr>,
}

/// The driver of one primary-backup node.
pub struct PbDriver {
    node: PbNode,
    me: NodeId,
    inputs: Receiver<Input>,
    peers: BTreeMap<NodeId, mpsc::Sender<PeerMessage>>,
    shared: Arc<Shared>,
    settings: PbDriverSettings,
    next_request: u64,
    writes: BTreeMap<u64, Reply>,
    reads: BTreeMap<ReadId, Reply>,
    /// Request numbers in the order they were taken, with their deadlines (deadlines grow
    /// with the order, so expiry pops from the front).
    deadlines: VecDeque<(Instant, u64)>,
    last_view: View,
    keys: u64,
}

impl PbDriver {
    /// A driver for `node`, which is node `me`.
    #[must_use]
    pub fn new(
        node: PbNode,
        me: NodeId,
        inputs: Receiver<Input>,
        peers: BTreeMap<NodeId, mpsc::Sender<PeerMessage>>,
        shared: Arc<Shared>,
        settings: PbDriverSettings,
    ) -> PbDriver {
        PbDriver {
            node,
            me,
            inputs,
            peers,
            shared,
            settings,
            next_request: 0,
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            deadlines: VecDeque::new(),
            last_view: View::NONE,
            keys: 0,
        }
    }

    /// Runs until shutdown or until every input sender is gone.
    pub fn run(mut self) {
        let tick = self.settings.ping_interval;
        let mut next_tick = Instant::now() + tick;
        self.publish();
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let first = match self.inputs.recv_timeout(wait) {
                Ok(input) => Some(input),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if let Some(input) = first {
                self.handle(input);
                for _ in 1..self.settings.batch_inputs_max {
                    match self.inputs.try_recv() {
                        Ok(input) => self.handle(input),
                        Err(_) => break,
                    }
                }
            }
            let now = Instant::now();
            if now >= next_tick {
                match &mut self.node {
                    PbNode::Replica(replica) => replica.tick(),
                    PbNode::ViewService(service) => service.tick(),
                }
                next_tick += tick;
                if next_tick < now {
                    // The thread fell behind: skip the missed ticks rather than fire them in a
                    // burst, which would make the view service declare live servers dead.
                    next_tick = now + tick;
                }
                self.expire(now);
            }
            while let Some(ready) = self.take_ready() {
                self.process(ready);
            }
            self.publish();
            if self
                .shared
                .shutdown
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                break;
            }
        }
        self.fail_everything();
    }

    fn take_ready(&mut self) -> Option<PbReady> {
        match &mut self.node {
            PbNode::Replica(replica) => replica.has_ready().then(|| replica.ready()),
            PbNode::ViewService(service) => service.has_ready().then(|| service.ready()),
        }
    }

    fn view(&self) -> View {
        match &self.node {
            PbNode::Replica(replica) => replica.status().view,
            PbNode::ViewService(service) => service.service().get_view(),
        }
    }

    /// The refusal for a request this node cannot take: a redirect to the primary if the view
    /// names another server, "unavailable" otherwise.
    fn refusal(&self, view: View) -> RequestError {
        match view.primary {
            Some(primary) if primary != self.me => match self.settings.redis.get(&primary) {
                Some(&redis) => RequestError::NotPrimary {
                    node: primary,
                    redis,
                },
                None => RequestError::Unavailable,
            },
            _ => RequestError::Unavailable,
        }
    }

    fn request_number(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    fn held(&self) -> usize {
        self.writes.len() + self.reads.len()
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Peer {
                from,
                message: PeerMessage::Pb(message),
            } => {
                let result = match &mut self.node {
                    PbNode::Replica(replica) => replica.step(from, message),
                    PbNode::ViewService(service) => service.step(from, message),
                };
                if let Err(error) = result {
                    // Stale messages are routine after a view change; they change nothing.
                    self.shared.metrics.peer_messages_refused.inc();
                    tracing::debug!(%from, %error, "refused a message from a peer");
                }
            }
            Input::Peer {
                from,
                message: PeerMessage::Raft(_),
            } => {
                self.shared.metrics.peer_messages_refused.inc();
                tracing::warn!(%from, "refused a Raft message: this node runs primary-backup");
            }
            Input::Write { command, reply } => self.write(command, reply),
            Input::Read { query, reply } => self.read(query, reply),
        }
    }

    fn write(&mut self, command: Bytes, reply: Reply) {
        if self.held() >= self.settings.requests_pending_max {
            self.shared.metrics.proposals_refused.inc();
            let _ = reply.send(Err(RequestError::Busy));
            return;
        }
        let request = self.request_number();
        let PbNode::Replica(replica) = &mut self.node else {
            let refusal = self.refusal(self.view());
            let _ = reply.send(Err(refusal));
            return;
        };
        let envelope = Envelope {
            origin: self.me,
            request,
            command,
        };
        match replica.propose(envelope) {
            Ok(_) => {
                self.shared.metrics.proposals.inc();
                self.writes.insert(request, reply);
                self.deadlines
                    .push_back((Instant::now() + self.settings.request_timeout, request));
            }
            Err(error) => {
                self.shared.metrics.proposals_refused.inc();
                let answer = match error {
                    ProposeError::NotPrimary { view } => self.refusal(view),
                    ProposeError::TooManyPending => RequestError::Busy,
                };
                let _ = reply.send(Err(answer));
            }
        }
    }

    fn read(&mut self, query: Bytes, reply: Reply) {
        if self.held() >= self.settings.requests_pending_max {
            let _ = reply.send(Err(RequestError::Busy));
            return;
        }
        let request = self.request_number();
        let id = ReadId(request);
        let PbNode::Replica(replica) = &mut self.node else {
            let refusal = self.refusal(self.view());
            let _ = reply.send(Err(refusal));
            return;
        };
        match replica.read(id, query) {
            Ok(()) => {
                self.reads.insert(id, reply);
                self.deadlines
                    .push_back((Instant::now() + self.settings.request_timeout, request));
            }
            Err(error) => {
                let answer = match error {
                    ReadError::NotPrimary { view } => self.refusal(view),
                    ReadError::TooManyPending => RequestError::Busy,
                };
                let _ = reply.send(Err(answer));
            }
        }
    }

    /// Times out requests that waited too long. A write may still apply later (the backup may
    /// have it): the client is told the outcome is unknown, never that the request failed.
    fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, request)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            let reply = self
                .writes
                .remove(&request)
                .or_else(|| self.reads.remove(&ReadId(request)));
            if let Some(reply) = reply {
                self.shared.metrics.request_timeouts.inc();
                let _ = reply.send(Err(RequestError::Timeout));
            }
        }
    }

    fn process(&mut self, ready: PbReady) {
        let PbReady {
            messages,
            committed,
            aborted,
            reads,
            rejected_reads,
        } = ready;
        // 1. Forwards, acknowledgements and pings go out first; nothing waits on a disk.
        for (to, message) in messages {
            send_to_peer(&self.peers, &self.shared, to, PeerMessage::Pb(message));
        }
        // 2. Applied operations: answer the clients that sent them here.
        for operation in committed {
            self.shared.metrics.entries_applied.inc();
            if operation.origin == self.me
                && let Some(reply) = self.writes.remove(&operation.request)
            {
                let _ = reply.send(Ok(operation.output));
            }
        }
        // 3. Operations in flight when this node stopped being primary: the backup may have
        //    applied them and may be primary now, so their outcome is unknown (the client
        //    retries elsewhere; its session makes the retry exactly-once).
        for operation in aborted {
            if operation.origin == self.me
                && let Some(reply) = self.writes.remove(&operation.request)
            {
                let _ = reply.send(Err(RequestError::Timeout));
            }
        }
        // 4. Reads: confirmed ones are answered, rejected ones had no effect.
        for read in reads {
            if let Some(reply) = self.reads.remove(&read.id) {
                self.shared.metrics.reads.inc();
                let _ = reply.send(Ok(read.output));
            }
        }
        if !rejected_reads.is_empty() {
            let refusal = self.refusal(self.view());
            for id in rejected_reads {
                if let Some(reply) = self.reads.remove(&id) {
                    let _ = reply.send(Err(refusal));
                }
            }
        }
        // 5. Done.
        match &mut self.node {
            PbNode::Replica(replica) => replica.advance(),
            PbNode::ViewService(service) => service.advance(),
        }
    }

    /// Answers every request still held when the driver stops: a write's outcome is unknown
    /// (the backup may have it), a read simply did not happen.
    fn fail_everything(&mut self) {
        for (_, reply) in std::mem::take(&mut self.writes) {
            let _ = reply.send(Err(RequestError::Timeout));
        }
        for (_, reply) in std::mem::take(&mut self.reads) {
            let _ = reply.send(Err(RequestError::Stopped));
        }
    }

    /// Refreshes the shared status and the metrics.
    fn publish(&mut self) {
        let view = self.view();
        if view.number != self.last_view.number {
            self.shared.metrics.view_changes.inc();
            if view.primary != self.last_view.primary {
                self.shared.metrics.leader_changes.inc();
            }
            tracing::info!(
                view = view.number.0,
                primary = ?view.primary.map(|p| p.0),
                backup = ?view.backup.map(|b| b.0),
                "view changed"
            );
            self.last_view = view;
        }
        let status = match &self.node {
            PbNode::Replica(replica) => {
                let status = replica.status();
                // Counting keys is a query of the local state machine: cheap, and only ever
                // shown on the admin page.
                if let Ok(Response::Integer(keys)) =
                    Response::decode(&replica.state_machine().query(&Query::Len.encode()))
                {
                    self.keys = u64::try_from(keys).unwrap_or(0);
                }
                let role = match status.role {
                    Role::Primary => "primary",
                    Role::Backup => "backup",
                    Role::Idle => "idle",
                };
                let is_primary = status.role == Role::Primary;
                NodeStatus {
                    protocol: "pb".to_string(),
                    id: self.me.0,
                    role: role.to_string(),
                    term: 0,
                    leader: status.view.primary.map(|p| p.0),
                    commit: status.applied.0,
                    applied: status.applied.0,
                    last_index: status.applied.0,
                    match_index: BTreeMap::new(),
                    keys: self.keys,
                    view: Some(ViewStatus {
                        number: status.view.number.0,
                        primary: status.view.primary.map(|p| p.0),
                        backup: status.view.backup.map(|b| b.0),
                        acked: status.primary_acked,
                        acting_primary: Some(status.acting_primary),
                        backup_ready: is_primary.then_some(status.backup_ready),
                        pending: is_primary.then_some(status.pending as u64),
                    }),
                }
            }
            PbNode::ViewService(service) => {
                let service = service.service();
                NodeStatus {
                    protocol: "pb".to_string(),
                    id: self.me.0,
                    role: "view-service".to_string(),
                    leader: view.primary.map(|p| p.0),
                    view: Some(ViewStatus {
                        number: view.number.0,
                        primary: view.primary.map(|p| p.0),
                        backup: view.backup.map(|b| b.0),
                        acked: service.primary_acked(),
                        acting_primary: None,
                        backup_ready: None,
                        pending: None,
                    }),
                    ..NodeStatus::default()
                }
            }
        };
        if let Ok(mut shared) = self.shared.status.write() {
            *shared = status;
        }
    }
}
