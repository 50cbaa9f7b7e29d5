//! The client workload: concurrent clients issuing get, put, append and cas over a small key
//! set, each with at most one operation in flight, through sessions so that retries are safe.
//!
//! A client sends each attempt to one node. On a timeout it retries the same request (the same
//! session sequence number) on another node; when a node answers that it cannot serve now, it
//! retries on the leader the node named. During the safety phase a client that kept failing
//! for `give_up_units` gives up and records the operation as `unknown`, never as `fail`: it may
//! still take effect later (HISTORY.md).

use std::collections::BTreeMap;

use bytes::Bytes;
use chorus_core::Prng;
use chorus_kv::{ClientId, Command, Op};

use crate::history::{OpKind, OpStatus, Operation, Output};

/// What a client asks a node to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RequestBody {
    /// Propose this encoded key-value command.
    Write(Bytes),
    /// Read this key linearizably.
    Read(Bytes),
}

/// One request from a client to a node.
#[derive(Clone, Debug)]
pub(crate) struct ClientRequest {
    pub(crate) client: usize,
    pub(crate) op_id: u64,
    pub(crate) body: RequestBody,
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
pub(crate) struct ClientReply {
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

    /// Starts a new random operation at time `now`.
    pub(crate) fn start_operation(&mut self, rng: &mut Prng, keys: usize, now: u64) {
        let session = self
            .session
            .expect("invariant: a client opens its session first");
        let op_id = self.take_op_id();
        self.counter += 1;
        let key = format!("k{}", rng.index(keys));
        let unique = format!("{}.{}", self.index, self.counter);
        let roll = rng.range(0, 100);
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
                Some(Op::Put {
                    key: key_bytes.clone(),
                    value: Bytes::from(unique),
                })
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
