//! S8, a retried request takes effect exactly once (Raft §8, "Client interaction": clients
//! give each command a serial number and the state machine answers a repeat from its record of
//! the latest response, without executing it again).
//!
//! The checker keeps its own reference model of the key-value store and its session table, a
//! deliberately small and independent implementation, and feeds it the committed log in order.
//! Every node's state machine must answer every entry exactly as the model does. A state
//! machine that executed a retried append twice, forgot a session across a restart, or
//! answered a retry with a fresh result, answers differently from the model at that index.
//!
//! A command for a user-supplied state machine (see [`crate::user`]) has no model here: the
//! first answer seen at its index stands, and every other node must answer it alike.

use std::collections::BTreeMap;

use bytes::Bytes;
use chorus_core::envelope::Envelope;
use chorus_core::{LogIndex, NodeId};
use chorus_kv::{
    ClientId, Command, Deadline, KvError, Op, Query, Response, SetCondition, SetExpiry, Step,
};
use chorus_raft::EntryPayload;

use super::Applied;

#[derive(Debug, Default)]
pub(super) struct ExactlyOnce {
    data: BTreeMap<Bytes, Bytes>,
    /// Each expiring key's expiry time, in log-clock milliseconds.
    expiry: BTreeMap<Bytes, u64>,
    /// The log clock: the largest time stamped on an applied command.
    clock: u64,
    /// Each session's latest sequence number and its answer (none before the first request).
    sessions: BTreeMap<ClientId, (u64, Option<Response>)>,
    /// `expected[i]` is the model's answer to the entry at index i + 1 (`None` for no-ops).
    expected: Vec<Option<Expected>>,
}

/// The answer every node must give to one entry.
#[derive(Debug)]
enum Expected {
    /// The model's answer to a key-value command.
    Kv(Response),
    /// The first answer seen to a user's command, if it had one.
    Opaque(Option<Bytes>),
}

impl ExactlyOnce {
    pub(super) fn observe(&mut self, applied: &Applied<'_>) -> Option<String> {
        let command = match &applied.entry.payload {
            EntryPayload::NoOp | EntryPayload::Membership(_) => None,
            EntryPayload::Command(bytes) => Some(
                Envelope::decode(bytes)
                    .map(|envelope| envelope.command)
                    .map_err(|_| ()),
            ),
        };
        self.observe_command(
            applied.node,
            applied.entry.index,
            command
                .as_ref()
                .map(|c| c.as_ref().map(|b| &b[..]).map_err(|&()| ())),
            applied.output,
        )
    }

    /// A node applied `command` (the key-value command itself, `None` for a no-op, `Err` for
    /// bytes that are not an envelope) at `index` and its state machine answered `output`.
    /// Protocols without a Raft log (primary-backup) report their applies here.
    pub(super) fn observe_command(
        &mut self,
        node: NodeId,
        index: LogIndex,
        command: Option<Result<&[u8], ()>>,
        output: Option<&Bytes>,
    ) -> Option<String> {
        let slot = usize::try_from(index.0.checked_sub(1)?).ok()?;
        if slot == self.expected.len() {
            let answer = command.map(|command| match command {
                Ok(bytes) if crate::user::is_user(bytes) => Expected::Opaque(output.cloned()),
                _ => Expected::Kv(self.model_apply(index, command)),
            });
            self.expected.push(answer);
        }
        let expected = match self.expected.get(slot)? {
            Some(Expected::Opaque(expected)) => {
                return (expected.as_ref() != output).then(|| {
                    format!(
                        "{node} answered the user's command at {index} with {output:?}; another \
                         node answered {expected:?}"
                    )
                });
            }
            Some(Expected::Kv(expected)) => Some(expected),
            None => None,
        };
        let actual = output.map(|bytes| Response::decode(bytes));
        match (expected, actual) {
            (None, None) => None,
            (Some(expected), Some(Ok(actual))) if *expected == actual => None,
            (expected, actual) => Some(format!(
                "{node} answered {index} with {actual:?}; the exactly-once model answers {expected:?}"
            )),
        }
    }

    fn model_apply(&mut self, index: LogIndex, command: Result<&[u8], ()>) -> Response {
        let Ok(bytes) = command else {
            return Response::Error(KvError::Malformed);
        };
        let Ok(command) = Command::decode(bytes) else {
            return Response::Error(KvError::Malformed);
        };
        let answer = self.model_command(index, command);
        // Keys the command gave a time already past go at once.
        self.advance(0);
        answer
    }

    /// Moves the clock up to `now` and drops every key whose expiry it has reached.
    fn advance(&mut self, now: u64) {
        self.clock = self.clock.max(now);
        let clock = self.clock;
        let due: Vec<Bytes> = self
            .expiry
            .iter()
            .filter(|(_, at)| **at <= clock)
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            self.expiry.remove(&key);
            self.data.remove(&key);
        }
    }

    fn model_command(&mut self, index: LogIndex, command: Command) -> Response {
        match command {
            Command::UnsessionedAt { now_ms, op } => {
                self.advance(now_ms);
                self.execute(op)
            }
            Command::Tick { now_ms } => {
                self.advance(now_ms);
                Response::Ok
            }
            Command::ReadAt { now_ms, query } => {
                self.advance(now_ms);
                match query {
                    Query::Get { key } => Response::Value(self.data.get(&key).cloned()),
                    Query::Len => Response::Integer(self.data.len() as i64),
                    _ => Response::Error(KvError::Malformed),
                }
            }
            // The workload watches no key; a transaction without watches runs its steps.
            Command::TransactionAt {
                now_ms,
                watched,
                steps,
            } if watched.is_empty() => {
                self.advance(now_ms);
                let answers = steps
                    .into_iter()
                    .map(|step| match step {
                        Step::Write(op) => self.execute(op),
                        Step::Read(Query::Get { key }) => {
                            Response::Value(self.data.get(&key).cloned())
                        }
                        Step::Read(_) => Response::Error(KvError::Malformed),
                    })
                    .collect();
                Response::Transaction(Some(answers))
            }
            Command::TransactionAt { .. } => Response::Error(KvError::Malformed),
            // The simulator's clients use native sessions; Redis bound sessions are proved by
            // the store's own tests (crates/kv), so the model does not know them.
            Command::BoundAt { .. } => Response::Error(KvError::Malformed),
            Command::Register => {
                let client = ClientId(index.0);
                self.sessions.insert(client, (0, None));
                Response::Registered(client)
            }
            Command::Unsessioned(op) => self.execute(op),
            Command::Request { client, seq, op } => match self.sessions.get(&client) {
                None => Response::Error(KvError::UnknownSession),
                Some((last, Some(cached))) if seq == *last => cached.clone(),
                Some((last, _)) if seq <= *last => Response::Error(KvError::StaleRequest),
                Some(_) => {
                    let answer = self.execute(op);
                    self.sessions.insert(client, (seq, Some(answer.clone())));
                    answer
                }
            },
        }
    }

    fn execute(&mut self, op: Op) -> Response {
        match op {
            Op::Get { key } => Response::Value(self.data.get(&key).cloned()),
            Op::Put { key, value } => {
                self.expiry.remove(&key);
                self.data.insert(key, value);
                Response::Ok
            }
            Op::Delete { key } => {
                self.expiry.remove(&key);
                Response::Deleted(self.data.remove(&key).is_some())
            }
            Op::Append { key, value } => {
                let mut joined = self.data.get(&key).map(|v| v.to_vec()).unwrap_or_default();
                joined.extend_from_slice(&value);
                let length = joined.len() as u64;
                self.data.insert(key, Bytes::from(joined));
                Response::Length(length)
            }
            Op::Cas { key, from, to } => {
                let swap = self.data.get(&key) == Some(&from);
                if swap {
                    self.expiry.remove(&key);
                    self.data.insert(key, to);
                }
                Response::Swapped(swap)
            }
            Op::IncrBy { key, delta } => {
                let current = match self.data.get(&key) {
                    None => Some(0),
                    Some(v) => std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok()),
                };
                match current.map(|c| c.checked_add(delta)) {
                    None => Response::Error(KvError::NotAnInteger),
                    Some(None) => Response::Error(KvError::Overflow),
                    Some(Some(n)) => {
                        self.data.insert(key, Bytes::from(n.to_string()));
                        Response::Integer(n)
                    }
                }
            }
            Op::MultiPut { pairs } => {
                for (key, _) in &pairs {
                    self.expiry.remove(key);
                }
                self.data.extend(pairs);
                Response::Ok
            }
            Op::SetExpiring {
                key,
                value,
                condition,
                expiry,
            } => {
                let kept = self.expiry.get(&key).copied();
                let answer = self.execute(Op::Set {
                    key: key.clone(),
                    value,
                    condition,
                });
                if matches!(answer, Response::Set { applied: true, .. }) {
                    let at = match expiry {
                        SetExpiry::Keep => kept,
                        SetExpiry::At(Deadline::After(ms)) => {
                            Some((i128::from(self.clock) + i128::from(ms)).max(0) as u64)
                        }
                        SetExpiry::At(Deadline::At(ms)) => Some(ms.max(0) as u64),
                    };
                    if let Some(at) = at {
                        self.expiry.insert(key, at);
                    }
                }
                answer
            }
            Op::Set {
                key,
                value,
                condition,
            } => {
                let previous = self.data.get(&key).cloned();
                let applied = match condition {
                    SetCondition::Always => true,
                    SetCondition::IfAbsent => previous.is_none(),
                    SetCondition::IfPresent => previous.is_some(),
                    SetCondition::IfEqual(expected) => previous.as_ref() == Some(&expected),
                };
                if applied {
                    self.expiry.remove(&key);
                    self.data.insert(key, value);
                }
                Response::Set { applied, previous }
            }
            Op::DeleteMany { keys } => {
                let removed = keys
                    .iter()
                    .filter(|key| {
                        self.expiry.remove(*key);
                        self.data.remove(*key).is_some()
                    })
                    .count();
                Response::Integer(removed as i64)
            }
            // The simulator's workload issues no typed (Redis data model) operations; this
            // model covers the string operations it does issue.
            Op::Typed(_) => Response::Error(KvError::Malformed),
        }
    }
}
