//! How the driver runs a primary-backup node: the primary-backup side of the one driver loop
//! ([`super::driver`]).
//!
//! The host owns a server's [`PbReplica`] (with its state machine) or the [`ViewServer`], and
//! handles each `PbReady` in the order the core's contract (see `chorus_pb`) demands: send,
//! answer the clients of applied operations, tell the clients of aborted ones that the outcome
//! is unknown, answer confirmed reads, refuse rejected ones, advance. Servers keep their data
//! in memory only. The view service makes its view durable (a small record file, fsynced)
//! before it sends any reply that shows it, so that after a restart it resumes the view
//! instead of making the first server to ping primary of a new view 1 (split brain). It ticks
//! once per ping interval.
//!
//! A server that is not the acting primary refuses client requests without proposing
//! anything: with [`RequestError::NotPrimary`] naming the primary and its RESP address when the
//! view names another server (the RESP frontend turns it into a `MOVED` redirect), with
//! [`RequestError::Unavailable`] otherwise (no view yet, or this server is named primary but
//! may not act yet).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use chorus_core::NodeId;
use chorus_core::envelope::Envelope;
use chorus_kv::{Query, Response};
use chorus_pb::{
    DurableView, PbReady, PbReplica, ProposeError, ReadError, ReadId, Role, View, ViewServer,
};
use chorus_storage::StorageError;
use chorus_storage::record_file::write_record;

use super::boundary::{NodeStatus, PeerMessage, Reply, RequestError, ViewStatus};
use super::driver::{Context, Host};
use super::requests::Kind;

/// The primary-backup node a driver runs.
#[derive(Debug)]
pub enum PbNode {
    /// A server: primary, backup or spare, as the view says.
    Replica(Box<PbReplica>),
    /// The view service.
    ViewService(ViewServer),
}

/// The view service's durable view, in its data directory.
pub const VIEW_FILE_NAME: &str = "view";

/// The primary-backup side of a node's driver.
pub struct PbHost {
    node: PbNode,
    /// Where the view service keeps its view.
    data_dir: PathBuf,
    /// The view service's view as last made durable.
    durable: Option<DurableView>,
    /// Every server's RESP address, to name the primary in redirects.
    redis: BTreeMap<NodeId, SocketAddr>,
    last_view: View,
    keys: u64,
}

impl PbHost {
    /// A host for `node`; `redis` holds every server's RESP address, to name the primary in
    /// redirects; a view service keeps its view in `data_dir`.
    #[must_use]
    pub fn new(node: PbNode, redis: BTreeMap<NodeId, SocketAddr>, data_dir: PathBuf) -> PbHost {
        let durable = match &node {
            PbNode::ViewService(service) => Some(service.service().durable()),
            PbNode::Replica(_) => None,
        };
        PbHost {
            node,
            data_dir,
            durable,
            redis,
            last_view: View::NONE,
            keys: 0,
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
    fn refusal(&self, me: NodeId, view: View) -> RequestError {
        match view.primary {
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

    /// Counts a view change in the metrics and the log.
    fn note_view(&mut self, cx: &Context) {
        let view = self.view();
        if view.number == self.last_view.number {
            return;
        }
        cx.shared.metrics.view_changes.inc();
        if view.primary != self.last_view.primary {
            cx.shared.metrics.leader_changes.inc();
        }
        tracing::info!(
            view = view.number.0,
            primary = ?view.primary.map(|p| p.0),
            backup = ?view.backup.map(|b| b.0),
            "view changed"
        );
        self.last_view = view;
    }
}

impl Host for PbHost {
    type Error = StorageError;

    fn step(&mut self, cx: &mut Context, from: NodeId, message: PeerMessage) {
        let PeerMessage::Pb(message) = message else {
            cx.shared.metrics.peer_messages_refused.inc();
            tracing::warn!(%from, "refused a message of another scheme: this node runs primary-backup");
            return;
        };
        let result = match &mut self.node {
            PbNode::Replica(replica) => replica.step(from, message),
            PbNode::ViewService(service) => service.step(from, message),
        };
        if let Err(error) = result {
            // Stale messages are routine after a view change; they change nothing.
            cx.shared.metrics.peer_messages_refused.inc();
            tracing::debug!(%from, %error, "refused a message from a peer");
        }
    }

    fn propose(&mut self, cx: &mut Context, command: Bytes, reply: Reply) {
        let request = cx.requests.number(Kind::Write);
        let PbNode::Replica(replica) = &mut self.node else {
            let refusal = self.refusal(cx.me, self.view());
            let _ = reply.send(Err(refusal));
            return;
        };
        let envelope = Envelope {
            origin: cx.me,
            request,
            command: command.clone(),
            session: None,
        };
        match replica.propose(envelope) {
            Ok(_) => {
                cx.shared.metrics.proposals.inc();
                cx.requests.hold(Kind::Write, request, command, reply);
            }
            Err(error) => {
                cx.shared.metrics.proposals_refused.inc();
                let answer = match error {
                    ProposeError::NotPrimary { view } => self.refusal(cx.me, view),
                    ProposeError::TooManyPending => RequestError::Busy,
                };
                let _ = reply.send(Err(answer));
            }
        }
    }

    fn read(&mut self, cx: &mut Context, query: Bytes, reply: Reply) {
        let request = cx.requests.number(Kind::Read);
        let PbNode::Replica(replica) = &mut self.node else {
            let refusal = self.refusal(cx.me, self.view());
            let _ = reply.send(Err(refusal));
            return;
        };
        match replica.read(ReadId(request), query) {
            Ok(()) => cx.requests.hold(Kind::Read, request, Bytes::new(), reply),
            Err(error) => {
                let answer = match error {
                    ReadError::NotPrimary { view } => self.refusal(cx.me, view),
                    ReadError::TooManyPending => RequestError::Busy,
                };
                let _ = reply.send(Err(answer));
            }
        }
    }

    fn tick(&mut self, _cx: &mut Context) {
        match &mut self.node {
            PbNode::Replica(replica) => replica.tick(),
            PbNode::ViewService(service) => service.tick(),
        }
    }

    fn handle_ready(&mut self, cx: &mut Context) -> Result<bool, StorageError> {
        // The view service's hard state is durable before any reply shows it.
        if let PbNode::ViewService(service) = &self.node {
            let durable = service.service().durable();
            if self.durable != Some(durable) {
                write_record(&self.data_dir, VIEW_FILE_NAME, &durable.encode())?;
                self.durable = Some(durable);
            }
        }
        let ready = match &mut self.node {
            PbNode::Replica(replica) => replica.has_ready().then(|| replica.ready()),
            PbNode::ViewService(service) => service.has_ready().then(|| service.ready()),
        };
        let Some(PbReady {
            messages,
            committed,
            aborted,
            reads,
            rejected_reads,
        }) = ready
        else {
            return Ok(false);
        };
        // 1. Forwards, acknowledgements and pings go out first; nothing waits on a disk.
        for (to, message) in messages {
            cx.send(to, PeerMessage::Pb(message));
        }
        // 2. Applied operations: answer the clients that sent them here.
        for operation in committed {
            cx.shared.metrics.entries_applied.inc();
            if operation.origin == cx.me {
                cx.requests
                    .answer(Kind::Write, operation.request, Ok(operation.output));
            }
        }
        // 3. Operations in flight when this node stopped being primary: the backup may have
        //    applied them and may be primary now, so their outcome is unknown (the client
        //    retries elsewhere; its session makes the retry exactly-once).
        for operation in aborted {
            if operation.origin == cx.me {
                cx.requests
                    .answer(Kind::Write, operation.request, Err(RequestError::Timeout));
            }
        }
        // 4. Reads: confirmed ones are answered, rejected ones had no effect.
        for read in reads {
            if cx.requests.answer(Kind::Read, read.id.0, Ok(read.output)) {
                cx.shared.metrics.reads.inc();
            }
        }
        if !rejected_reads.is_empty() {
            let refusal = self.refusal(cx.me, self.view());
            for id in rejected_reads {
                cx.requests.answer(Kind::Read, id.0, Err(refusal));
            }
        }
        // 5. Done.
        match &mut self.node {
            PbNode::Replica(replica) => replica.advance(),
            PbNode::ViewService(service) => service.advance(),
        }
        Ok(true)
    }

    fn status(&mut self, cx: &Context) -> NodeStatus {
        self.note_view(cx);
        let me = cx.me;
        match &self.node {
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
                    id: me.0,
                    role: role.to_string(),
                    term: 0,
                    leader: status.view.primary.map(|p| p.0),
                    commit: status.applied.0,
                    applied: status.applied.0,
                    last_index: status.applied.0,
                    match_index: BTreeMap::new(),
                    keys: self.keys,
                    snapshot_index: None,
                    snapshot_bytes: None,
                    first_index: None,
                    view: Some(ViewStatus {
                        number: status.view.number.0,
                        primary: status.view.primary.map(|p| p.0),
                        backup: status.view.backup.map(|b| b.0),
                        acked: status.primary_acked,
                        acting_primary: Some(status.acting_primary),
                        backup_ready: is_primary.then_some(status.backup_ready),
                        pending: is_primary.then_some(status.pending as u64),
                    }),
                    ..NodeStatus::default()
                }
            }
            PbNode::ViewService(service) => {
                let view = service.service().get_view();
                let service = service.service();
                NodeStatus {
                    protocol: "pb".to_string(),
                    id: me.0,
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
        }
    }
}
