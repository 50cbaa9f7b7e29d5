//! The client workload: concurrent clients issuing get, put, append and cas over a small key
//! set, each with at most one operation in flight, through sessions so that retries are safe.
//!
//! A client sends each attempt to one node. On a timeout it retries the same request (the same
//! session sequence number) on another node; when a node answers that it cannot serve now, it
//! retries on the leader the node named. During the safety phase a client that kept failing
//! for `give_up_units` gives up and records the operation as `unknown`, never as `fail`: it may
//! still take effect later (HISTORY.md).
//!
//! The client side is the same for every protocol: [`Workload`] drives the clients through a
//! [`ClientIo`], the borrowed parts of the simulation it needs (event queue, network, random
//! streams, checkers), and the simulator turns [`ClientEvent`]s into its events.

use std::collections::BTreeMap;

use bytes::Bytes;
use chorus_core::Prng;
use chorus_kv::{ClientId, Command, Deadline, KvError, Op, Response, SetCondition, SetExpiry};

use crate::checkers::{AcknowledgedWrite, Checkers};
use crate::config::{Machine, SimConfig};
use crate::history::{OpKind, OpStatus, Operation, Output};
use crate::network::Network;
use crate::queue::EventQueue;
use crate::report::RunStats;
use crate::user::{UserMachine, UserOperation, tagged};

/// The time to live of a put that sets one ([`SimConfig::ttl_writes`]), in milliseconds of
/// the log clock: about 30 years.
const TTL_WRITE_MS: i64 = 1 << 40;

/// What a client asks a node to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestBody {
    /// Propose this encoded key-value command.
    Write(Bytes),
    /// Read this key linearizably.
    Read(Bytes),
}

/// One request from a client to a node.
#[derive(Clone, Debug)]
pub struct ClientRequest {
    pub(crate) client: usize,
    pub(crate) op_id: u64,
    pub(crate) body: RequestBody,
    /// When the client sent it (for the visual trace; not part of the trace hash).
    pub(crate) sent: u64,
}

/// A node's answer to a client.
#[derive(Clone, Debug)]
pub(crate) enum ReplyBody {
    /// The encoded `chorus_kv::Response`.
    Done(Bytes),
    /// The node cannot serve the request now; the leader it knows, if any (an index).
    Retry(Option<usize>),
}

/// A reply travelling to a client.
#[derive(Clone, Debug)]
pub struct ClientReply {
    pub(crate) op_id: u64,
    pub(crate) body: ReplyBody,
}

/// What the client's current operation is.
#[derive(Clone, Debug)]
pub(crate) enum Purpose {
    /// Opening a session.
    Register,
    /// An operation that goes into the history.
    Operation(Operation),
    /// An operation on the user's state machine, for its history.
    User(UserOperation),
}

/// The operation a client has in flight.
#[derive(Clone, Debug)]
pub(crate) struct InFlight {
    pub(crate) op_id: u64,
    pub(crate) purpose: Purpose,
    pub(crate) body: RequestBody,
    /// For writes, the session sequence number.
    pub(crate) seq: Option<u64>,
    pub(crate) attempt: u64,
}

/// One simulated client.
#[derive(Clone, Debug)]
pub(crate) struct Client {
    pub(crate) index: usize,
    pub(crate) session: Option<ClientId>,
    pub(crate) seq: u64,
    pub(crate) target: usize,
    pub(crate) current: Option<InFlight>,
    pub(crate) next_op_id: u64,
    /// The last value this client saw for each key, for cas operations that may succeed.
    last_seen: BTreeMap<String, String>,
    counter: u64,
    /// While the nemesis hunts stale reads, the node this client reads from: each new
    /// operation is a read sent there first.
    pub(crate) pinned: Option<usize>,
}

impl Client {
    pub(crate) fn new(index: usize, target: usize) -> Client {
        Client {
            index,
            session: None,
            seq: 0,
            target,
            current: None,
            next_op_id: 1,
            last_seen: BTreeMap::new(),
            counter: 0,
            pinned: None,
        }
    }

    fn take_op_id(&mut self) -> u64 {
        let id = self.next_op_id;
        self.next_op_id += 1;
        id
    }

    /// Starts opening a session.
    pub(crate) fn start_register(&mut self) {
        let op_id = self.take_op_id();
        self.current = Some(InFlight {
            op_id,
            purpose: Purpose::Register,
            body: RequestBody::Write(Command::Register.encode()),
            seq: None,
            attempt: 0,
        });
    }

    /// Starts a new random operation at time `now`; with `ttl_writes`, half of the puts set a
    /// time to live ([`SimConfig::ttl_writes`]).
    pub(crate) fn start_operation(
        &mut self,
        rng: &mut Prng,
        keys: usize,
        ttl_writes: bool,
        now: u64,
    ) {
        let session = self
            .session
            .expect("invariant: a client opens its session first");
        let op_id = self.take_op_id();
        self.counter += 1;
        let key = format!("k{}", rng.index(keys));
        let unique = format!("{}.{}", self.index, self.counter);
        let mut roll = rng.range(0, 100);
        if let Some(node) = self.pinned {
            self.target = node;
            roll = 0;
        }
        let mut operation = Operation {
            client: self.index as u64,
            kind: OpKind::Get,
            key: key.clone(),
            value: None,
            from: None,
            call: now,
            ret: None,
            status: OpStatus::Unknown,
            output: Output::None,
        };
        let key_bytes = Bytes::from(key.clone());
        let op = match roll {
            0..30 => None,
            30..60 => {
                operation.kind = OpKind::Put;
                operation.value = Some(unique.clone());
                if ttl_writes && rng.chance(0.5) {
                    // A time to live no log clock of the run reaches (the clients' commands
                    // do not move it): to a read, the same as a put; to a copy of the state,
                    // an expiry time it must carry.
                    Some(Op::SetExpiring {
                        key: key_bytes.clone(),
                        value: Bytes::from(unique),
                        condition: SetCondition::Always,
                        expiry: SetExpiry::At(Deadline::After(TTL_WRITE_MS)),
                    })
                } else {
                    Some(Op::Put {
                        key: key_bytes.clone(),
                        value: Bytes::from(unique),
                    })
                }
            }
            60..80 => {
                let suffix = format!("{unique};");
                operation.kind = OpKind::Append;
                operation.value = Some(suffix.clone());
                Some(Op::Append {
                    key: key_bytes.clone(),
                    value: Bytes::from(suffix),
                })
            }
            _ => {
                let from = self
                    .last_seen
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| unique.clone());
                operation.kind = OpKind::Cas;
                operation.from = Some(from.clone());
                operation.value = Some(unique.clone());
                Some(Op::Cas {
                    key: key_bytes.clone(),
                    from: Bytes::from(from),
                    to: Bytes::from(unique),
                })
            }
        };
        let (body, seq) = match op {
            None => (RequestBody::Read(key_bytes), None),
            Some(op) => {
                self.seq += 1;
                let command = Command::Request {
                    client: session,
                    seq: self.seq,
                    op,
                };
                (RequestBody::Write(command.encode()), Some(self.seq))
            }
        };
        self.current = Some(InFlight {
            op_id,
            purpose: Purpose::Operation(operation),
            body,
            seq,
            attempt: 0,
        });
    }

    /// Starts a command of the user's state machine at time `now`; the key-value session
    /// stays open but unused.
    fn start_user_operation(&mut self, user: &UserMachine, rng: &mut Prng, now: u64) {
        let op_id = self.take_op_id();
        let command = user.workbench().command(self.index, rng);
        self.current = Some(InFlight {
            op_id,
            body: RequestBody::Write(tagged(&command)),
            purpose: Purpose::User(UserOperation {
                client: self.index,
                command,
                call: now,
                ret: None,
                output: None,
            }),
            seq: None,
            attempt: 0,
        });
    }

    /// Remembers what an operation revealed about its key.
    pub(crate) fn learn(&mut self, operation: &Operation) {
        let seen = match (&operation.kind, &operation.output) {
            (OpKind::Get, Output::Value(Some(value))) => Some(value.clone()),
            (OpKind::Put, _) | (OpKind::Cas, Output::Swapped(true)) => operation.value.clone(),
            _ => None,
        };
        if let Some(value) = seen {
            self.last_seen.insert(operation.key.clone(), value);
        }
    }
}

/// A client-side event, scheduled on the simulator's queue as one of its events.
#[derive(Clone, Debug)]
pub(crate) enum ClientEvent {
    /// Send attempt `attempt` of operation `op_id`.
    Send {
        client: usize,
        op_id: u64,
        attempt: u64,
    },
    /// Attempt `attempt` of operation `op_id` ran out of patience.
    Timeout {
        client: usize,
        op_id: u64,
        attempt: u64,
    },
    /// A request arrives at node `node`.
    Request { node: usize, request: ClientRequest },
}

/// The parts of a simulation the clients use while they act.
pub(crate) struct ClientIo<'a, E> {
    pub(crate) queue: &'a mut EventQueue<E>,
    pub(crate) time: u64,
    pub(crate) network: &'a Network,
    pub(crate) rng_network: &'a mut Prng,
    pub(crate) rng_workload: &'a mut Prng,
    pub(crate) checkers: &'a mut Checkers,
    pub(crate) stats: &'a mut RunStats,
    pub(crate) config: &'a SimConfig,
    /// Whether the run is in its safety phase (clients may give up then).
    pub(crate) safety: bool,
    /// How many nodes take client requests (indexes `0..nodes`).
    pub(crate) nodes: usize,
}

impl<E: From<ClientEvent>> ClientIo<'_, E> {
    fn schedule(&mut self, delay: u64, event: ClientEvent) {
        self.queue.push(self.time + delay, event.into());
    }
}

/// The clients of a run and the history they record.
pub(crate) struct Workload {
    pub(crate) clients: Vec<Client>,
    pub(crate) history: Vec<Operation>,
    /// The history of the user's state machine's operations (see [`crate::user`]).
    pub(crate) user_history: Vec<UserOperation>,
    /// Operations started so far.
    pub(crate) issued: usize,
    /// Clients start no new operations.
    pub(crate) paused: bool,
}

impl Workload {
    pub(crate) fn new(clients: Vec<Client>) -> Workload {
        Workload {
            clients,
            history: Vec::new(),
            user_history: Vec::new(),
            issued: 0,
            paused: false,
        }
    }

    /// Whether every client is idle.
    pub(crate) fn idle(&self) -> bool {
        self.clients.iter().all(|c| c.current.is_none())
    }

    /// Clients with an operation in flight.
    pub(crate) fn waiting(&self) -> usize {
        self.clients.iter().filter(|c| c.current.is_some()).count()
    }

    /// Pauses the clients, or lets them start operations again.
    pub(crate) fn set_paused<E: From<ClientEvent>>(
        &mut self,
        io: &mut ClientIo<'_, E>,
        paused: bool,
    ) {
        self.paused = paused;
        if !paused {
            for client in 0..self.clients.len() {
                if self.clients[client].current.is_none() {
                    self.next_operation(io, client);
                }
            }
        }
    }

    /// Lets every idle client with a session start its next operation (the start of
    /// [`crate::Simulator::run`]).
    pub(crate) fn resume<E: From<ClientEvent>>(&mut self, io: &mut ClientIo<'_, E>) {
        self.paused = false;
        for client in 0..self.clients.len() {
            if self.clients[client].current.is_none() && self.clients[client].session.is_some() {
                self.next_operation(io, client);
            }
        }
    }

    /// The run ended: operations still in flight end as unknown; the history is sorted.
    pub(crate) fn finish(&mut self) {
        for client in 0..self.clients.len() {
            match self.clients[client].current.take().map(|c| c.purpose) {
                Some(Purpose::Operation(mut operation)) => {
                    operation.status = OpStatus::Unknown;
                    self.history.push(operation);
                }
                Some(Purpose::User(operation)) => self.user_history.push(operation),
                Some(Purpose::Register) | None => {}
            }
        }
        self.history.sort_by_key(|op| (op.call, op.client));
        self.user_history.sort_by_key(|op| (op.call, op.client));
    }

    /// Sends the current attempt of `client`, if it is still current.
    pub(crate) fn send<E: From<ClientEvent>>(
        &mut self,
        io: &mut ClientIo<'_, E>,
        client: usize,
        op_id: u64,
        attempt: u64,
    ) {
        let Some(current) = &self.clients[client].current else {
            return;
        };
        if current.op_id != op_id || current.attempt != attempt {
            return;
        }
        io.stats.client_attempts += 1;
        let request = ClientRequest {
            client,
            op_id,
            body: current.body.clone(),
            sent: io.time,
        };
        let node = self.clients[client].target;
        for delay in io.network.plan(io.rng_network) {
            io.schedule(
                delay,
                ClientEvent::Request {
                    node,
                    request: request.clone(),
                },
            );
        }
        let timeout = io.config.attempt_timeout_units;
        io.schedule(
            timeout,
            ClientEvent::Timeout {
                client,
                op_id,
                attempt,
            },
        );
    }

    fn retry<E: From<ClientEvent>>(
        &mut self,
        io: &mut ClientIo<'_, E>,
        client: usize,
        target: Option<usize>,
        delay: u64,
    ) {
        let state = &mut self.clients[client];
        state.target = target.unwrap_or((state.target + 1) % io.nodes);
        let current = state
            .current
            .as_mut()
            .expect("invariant: retrying an operation in flight");
        current.attempt += 1;
        let (op_id, attempt) = (current.op_id, current.attempt);
        io.schedule(
            delay,
            ClientEvent::Send {
                client,
                op_id,
                attempt,
            },
        );
    }

    /// An attempt ran out of patience: retry elsewhere, or give up (safety phase only).
    pub(crate) fn timeout<E: From<ClientEvent>>(
        &mut self,
        io: &mut ClientIo<'_, E>,
        client: usize,
        op_id: u64,
        attempt: u64,
    ) {
        let Some(current) = &self.clients[client].current else {
            return;
        };
        if current.op_id != op_id || current.attempt != attempt {
            return;
        }
        if let (true, Purpose::Operation(operation)) = (io.safety, &current.purpose) {
            if io.time.saturating_sub(operation.call) >= io.config.give_up_units {
                let mut operation = operation.clone();
                operation.status = OpStatus::Unknown;
                self.history.push(operation);
                self.next_operation(io, client);
                return;
            }
        }
        if let (true, Purpose::User(operation)) = (io.safety, &current.purpose) {
            if io.time.saturating_sub(operation.call) >= io.config.give_up_units {
                self.user_history.push(operation.clone());
                self.next_operation(io, client);
                return;
            }
        }
        self.retry(io, client, None, 0);
    }

    /// A node's reply reached `client`.
    pub(crate) fn reply<E: From<ClientEvent>>(
        &mut self,
        io: &mut ClientIo<'_, E>,
        client: usize,
        reply: ClientReply,
    ) {
        let Some(current) = self.clients[client].current.clone() else {
            return;
        };
        if current.op_id != reply.op_id {
            return;
        }
        match reply.body {
            ReplyBody::Retry(leader) => {
                let delay = io.rng_workload.range(5, 30);
                self.retry(io, client, leader, delay);
            }
            ReplyBody::Done(bytes) => {
                if let Purpose::User(mut operation) = current.purpose {
                    operation.ret = Some(io.time);
                    operation.output = Some(bytes);
                    self.user_history.push(operation);
                    self.next_operation(io, client);
                    return;
                }
                let response = Response::decode(&bytes);
                self.complete_operation(io, client, current, response.ok());
            }
        }
    }

    fn complete_operation<E: From<ClientEvent>>(
        &mut self,
        io: &mut ClientIo<'_, E>,
        client: usize,
        current: InFlight,
        response: Option<Response>,
    ) {
        match current.purpose {
            Purpose::Register => match response {
                Some(Response::Registered(session)) => {
                    self.clients[client].session = Some(session);
                    self.next_operation(io, client);
                }
                _ => {
                    self.clients[client].start_register();
                    self.kick(io, client);
                }
            },
            // A user operation completes in `reply`, never here; if it came here it stays
            // unknown.
            Purpose::User(operation) => {
                self.user_history.push(operation);
                self.next_operation(io, client);
            }
            Purpose::Operation(mut operation) => {
                operation.ret = Some(io.time);
                let known = match (&operation.kind, response) {
                    (OpKind::Get, Some(Response::Value(value))) => {
                        let text = value.map(|v| String::from_utf8_lossy(&v).into_owned());
                        operation.output = Output::Value(text);
                        true
                    }
                    (OpKind::Put, Some(Response::Ok | Response::Set { applied: true, .. })) => true,
                    (OpKind::Append, Some(Response::Length(length))) => {
                        operation.output = Output::Length(length);
                        true
                    }
                    (OpKind::Cas, Some(Response::Swapped(swapped))) => {
                        operation.output = Output::Swapped(swapped);
                        true
                    }
                    (_, Some(Response::Error(KvError::UnknownSession))) => {
                        // The session expired: whether the request ran is unknown, and the
                        // client must open a new session.
                        self.clients[client].session = None;
                        false
                    }
                    (_, other) => {
                        let detail = format!("client {client} got {other:?} for {operation:?}");
                        io.checkers.report("client", io.time, detail);
                        false
                    }
                };
                if known {
                    operation.status = OpStatus::Ok;
                    self.clients[client].learn(&operation);
                    if let (Some(seq), Some(session)) = (current.seq, self.clients[client].session)
                    {
                        io.checkers.observe_acknowledged(AcknowledgedWrite {
                            client: session,
                            seq,
                        });
                    }
                } else {
                    operation.status = OpStatus::Unknown;
                    operation.ret = None;
                }
                self.history.push(operation);
                self.next_operation(io, client);
            }
        }
    }

    /// `client` is done with its operation: it opens a session if it has none, or starts the
    /// next operation if any are left and the clients are not paused.
    pub(crate) fn next_operation<E: From<ClientEvent>>(
        &mut self,
        io: &mut ClientIo<'_, E>,
        client: usize,
    ) {
        self.clients[client].current = None;
        if self.clients[client].session.is_none() {
            self.clients[client].start_register();
        } else if self.issued < io.config.ops && !self.paused {
            self.issued += 1;
            let keys = io.config.keys;
            match &io.config.machine {
                Machine::User(user) => {
                    self.clients[client].start_user_operation(user, io.rng_workload, io.time);
                }
                Machine::Kv | Machine::Stamped { .. } => {
                    let ttl = io.config.ttl_writes == Some(true);
                    self.clients[client].start_operation(io.rng_workload, keys, ttl, io.time);
                }
            }
        } else {
            return;
        }
        self.kick(io, client);
    }

    fn kick<E: From<ClientEvent>>(&mut self, io: &mut ClientIo<'_, E>, client: usize) {
        let current = self.clients[client]
            .current
            .as_ref()
            .expect("invariant: an operation was started");
        let (op_id, attempt) = (current.op_id, current.attempt);
        io.schedule(
            0,
            ClientEvent::Send {
                client,
                op_id,
                attempt,
            },
        );
    }
}
