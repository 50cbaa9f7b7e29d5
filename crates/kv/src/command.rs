//! The key-value store's commands, queries and responses, and their byte encoding.
//!
//! Protocol cores carry commands as opaque bytes; these are the types those bytes decode to.
//! The encoding is postcard (compact, deterministic); every decoder returns an error on bad
//! input instead of panicking, because the bytes come from the network.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::typed::{Deadline, Reply, TypedOp};

/// A client session's id: the log index of the `Register` command that opened it, so every
/// replica assigns the same id.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct ClientId(pub u64);

/// A command, replicated through the log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Command {
    /// Opens a client session; answered with [`Response::Registered`].
    Register,
    /// A client request within a session. Requests of one session carry increasing `seq`;
    /// a retried request keeps its `seq` and takes effect at most once.
    Request {
        /// The session.
        client: ClientId,
        /// The request's sequence number within the session, starting at 1.
        seq: u64,
        /// What to do.
        op: Op,
    },
    /// An operation outside any session (no exactly-once guarantee on retry).
    Unsessioned(Op),
    /// An operation outside any session, stamped with the Unix time (milliseconds) of the
    /// node that took it: the log clock moves up to `now_ms` (never back) before the
    /// operation runs, and relative expiry times count from the log clock.
    UnsessionedAt {
        /// The proposing node's wall clock, in Unix milliseconds.
        now_ms: u64,
        /// What to do.
        op: Op,
    },
    /// Moves the log clock up to `now_ms`, removing every key whose expiry time has come
    /// (active expiry, proposed by the leader when a key is due). Answered with
    /// [`Response::Ok`].
    Tick {
        /// The proposing node's wall clock, in Unix milliseconds.
        now_ms: u64,
    },
    /// A read served through the log: the log clock moves up to `now_ms`, due keys are
    /// removed, then `query` is answered as [`chorus_core::StateMachine::query`] would. A node
    /// sends a read this way when its state holds a key whose expiry its own clock has
    /// passed, so that no read returns a key that has expired.
    ReadAt {
        /// The proposing node's wall clock, in Unix milliseconds.
        now_ms: u64,
        /// The read.
        query: Query,
    },
    /// A transaction (Redis `MULTI` … `EXEC`), applied at one log position: if every
    /// `watched` key still has the version it had when it was watched (`WATCH`; 0 for an
    /// absent key), the steps run in order, nothing between them; otherwise none runs.
    /// Answered with [`Response::Transaction`]. The log clock moves up to `now_ms` first.
    TransactionAt {
        /// The proposing node's wall clock, in Unix milliseconds.
        now_ms: u64,
        /// The watched keys with the versions they had when watched.
        watched: Vec<(Bytes, u64)>,
        /// The commands, in order.
        steps: Vec<Step>,
    },
    /// A write of a Redis connection bound to a named session (`CLIENT SETNAME
    /// chorus-session:…`): the log clock moves up to `now_ms`, then the state machine decides,
    /// from the session table alone, whether `write` is a client library's retry of the
    /// session's previous write, answered from the table, or a new write, executed once (see
    /// [`crate::KvStore`], "Bound sessions"). Answered as `write` is, or with
    /// [`KvError::SupersededConnection`].
    BoundAt {
        /// The proposing node's wall clock, in Unix milliseconds.
        now_ms: u64,
        /// The session, the connection and the request's fingerprint.
        binding: Binding,
        /// What to do.
        write: BoundWrite,
    },
}

/// Who sent a [`Command::BoundAt`]: what the state machine needs to recognise a retry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Binding {
    /// The session's name, as the client named it (at most [`SESSION_NAME_BYTES_MAX`]
    /// bytes).
    pub session: Bytes,
    /// The connection the write came on: a number no other connection of any node uses
    /// (the proposing node draws it), so that a write on a new connection is recognisable.
    pub connection: u64,
    /// A fingerprint of the request as the client sent it (its argument bytes; for a
    /// transaction, every queued command's): a retry resends the same bytes, so it carries
    /// the same fingerprint.
    pub fingerprint: u64,
}

/// The longest session name a [`Binding`] may carry; longer ones are refused with
/// [`KvError::Malformed`].
pub const SESSION_NAME_BYTES_MAX: usize = 256;

/// The write of a [`Command::BoundAt`]: one operation or one transaction (so that decoding
/// never recurses).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BoundWrite {
    /// One operation, answered as [`Command::UnsessionedAt`] would be.
    Op(Op),
    /// A transaction, answered as [`Command::TransactionAt`] would be.
    Transaction {
        /// The watched keys with the versions they had when watched.
        watched: Vec<(Bytes, u64)>,
        /// The commands, in order.
        steps: Vec<Step>,
    },
}

/// One command of a transaction. (An [`Op`] never holds a transaction, so transactions do
/// not nest and decoding one cannot recurse.)
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Step {
    /// A change, answered as [`Command::Unsessioned`] would be.
    Write(Op),
    /// A read, answered as [`chorus_core::StateMachine::query`] would be.
    Read(Query),
}

/// An operation on the key-value map.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    /// Reads a key through the log. Answered with [`Response::Value`].
    Get {
        /// The key.
        key: Bytes,
    },
    /// Sets a key. Answered with [`Response::Ok`].
    Put {
        /// The key.
        key: Bytes,
        /// The new value.
        value: Bytes,
    },
    /// Removes a key. Answered with [`Response::Deleted`].
    Delete {
        /// The key.
        key: Bytes,
    },
    /// Appends to a key's value; an absent key counts as empty. Answered with
    /// [`Response::Length`], the new length.
    Append {
        /// The key.
        key: Bytes,
        /// The suffix.
        value: Bytes,
    },
    /// Sets `key` to `to` only if it exists and equals `from`. Answered with
    /// [`Response::Swapped`].
    Cas {
        /// The key.
        key: Bytes,
        /// The expected current value.
        from: Bytes,
        /// The new value.
        to: Bytes,
    },
    /// Adds `delta` to a key holding a decimal integer (absent counts as 0). Answered with
    /// [`Response::Integer`], or [`KvError::NotAnInteger`] / [`KvError::Overflow`].
    IncrBy {
        /// The key.
        key: Bytes,
        /// The amount to add.
        delta: i64,
    },
    /// Sets several keys at once, atomically. Answered with [`Response::Ok`].
    MultiPut {
        /// The pairs, applied in order.
        pairs: Vec<(Bytes, Bytes)>,
    },
    /// Sets a key if `condition` holds (Redis `SET` with `NX`, `XX`, `IFEQ` and `GET`).
    /// Answered with [`Response::Set`].
    Set {
        /// The key.
        key: Bytes,
        /// The new value.
        value: Bytes,
        /// When the set takes effect.
        condition: SetCondition,
    },
    /// Removes several keys at once, atomically. Answered with [`Response::Integer`], the
    /// number of keys that existed.
    DeleteMany {
        /// The keys; a key named twice counts once.
        keys: Vec<Bytes>,
    },
    /// A Redis command on typed values (hashes, lists, sets, sorted sets, the key space).
    /// Answered with [`Response::Reply`].
    Typed(TypedOp),
    /// [`Op::Set`] that also sets the key's expiry when it writes (Redis `SET` with `EX`,
    /// `PX`, `EXAT`, `PXAT` or `KEEPTTL`). Answered with [`Response::Set`].
    SetExpiring {
        /// The key.
        key: Bytes,
        /// The new value.
        value: Bytes,
        /// When the set takes effect.
        condition: SetCondition,
        /// The key's expiry after the write.
        expiry: SetExpiry,
    },
}

/// The expiry an [`Op::SetExpiring`] leaves on the key it writes. (A plain [`Op::Set`]
/// removes any expiry, as Redis's `SET` does.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SetExpiry {
    /// The key keeps the expiry it had (`KEEPTTL`).
    Keep,
    /// The key expires then (`EX`, `PX`, `EXAT`, `PXAT`).
    At(Deadline),
}

/// When an [`Op::Set`] takes effect.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SetCondition {
    /// Always.
    Always,
    /// Only if the key is absent (Redis `NX`).
    IfAbsent,
    /// Only if the key exists (Redis `XX`).
    IfPresent,
    /// Only if the key exists and holds this value (Valkey `IFEQ`).
    IfEqual(Bytes),
}

/// A read-only query, answered by [`chorus_core::StateMachine::query`] without the log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Query {
    /// Reads one key. Answered with [`Response::Value`].
    Get {
        /// The key.
        key: Bytes,
    },
    /// Reads several keys. Answered with [`Response::Values`].
    MultiGet {
        /// The keys.
        keys: Vec<Bytes>,
    },
    /// Counts the keys. Answered with [`Response::Integer`].
    Len,
    /// Counts how many of the keys exist, counting a key named twice twice (as Redis
    /// `EXISTS` does). Answered with [`Response::Integer`].
    Exists {
        /// The keys.
        keys: Vec<Bytes>,
    },
    /// A read-only Redis command on typed values ([`TypedOp::is_write`] is false; a write is
    /// refused with [`KvError::Malformed`]). Answered with [`Response::Reply`].
    Typed(TypedOp),
    /// Each key's version: the log index of the command that last wrote it, 0 if absent
    /// (what Redis's `WATCH` remembers). Answered with [`Response::Versions`].
    Versions {
        /// The keys.
        keys: Vec<Bytes>,
    },
}

/// The answer to a command or query.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Response {
    /// Done.
    Ok,
    /// A key's value, or `None` if absent.
    Value(Option<Bytes>),
    /// Several keys' values.
    Values(Vec<Option<Bytes>>),
    /// Whether a key existed and was removed.
    Deleted(bool),
    /// A value's new length.
    Length(u64),
    /// Whether a compare-and-set swapped.
    Swapped(bool),
    /// An integer result.
    Integer(i64),
    /// A session was opened.
    Registered(ClientId),
    /// The command was refused; the state is unchanged.
    Error(KvError),
    /// The outcome of an [`Op::Set`].
    Set {
        /// Whether the value was written.
        applied: bool,
        /// The value before the command, whether or not it was written.
        previous: Option<Bytes>,
    },
    /// The answer to a [`TypedOp`], shaped like Redis's reply (errors included).
    Reply(Reply),
    /// The keys' versions, in the order asked ([`Query::Versions`]).
    Versions(Vec<u64>),
    /// The answers to a transaction's steps, in order; `None` if a watched key had changed
    /// and nothing ran ([`Command::TransactionAt`]).
    Transaction(Option<Vec<Response>>),
}

/// Why a command was refused. Each is a definite answer: the command had no effect.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
pub enum KvError {
    /// The session does not exist (never opened, or expired). The client cannot know whether
    /// its earlier requests took effect and must open a new session.
    #[error("unknown or expired session")]
    UnknownSession,
    /// The request's `seq` is lower than the session's latest; its answer is gone.
    #[error("stale request: a later request of this session was already applied")]
    StaleRequest,
    /// The value is not a decimal `i64`.
    #[error("value is not an integer")]
    NotAnInteger,
    /// The integer result would overflow.
    #[error("increment would overflow")]
    Overflow,
    /// The command's bytes did not decode.
    #[error("malformed command")]
    Malformed,
    /// The key holds a value of another type (a hash, a list, …) than the operation needs.
    #[error("WRONGTYPE Operation against a key holding the wrong kind of value")]
    WrongType,
    /// A write came on a connection of a bound session after a write on a newer connection of
    /// that session was applied: it was not applied, because its client has already moved on
    /// (and may have resent it there).
    #[error("this connection's session has moved to a newer connection; the write was not applied")]
    SupersededConnection,
    /// A bound session's write was recognised as a retry, but the answer of the write it
    /// repeats was too large to keep: it was applied once, and its answer is gone.
    #[error("the command was already applied once; its answer was too large to keep for a retry")]
    AnswerNotKept,
}

/// Bytes that do not decode to the expected type.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cannot decode {what}: {reason}")]
pub struct DecodeError {
    /// What was being decoded.
    pub what: &'static str,
    /// The decoder's complaint.
    pub reason: String,
}
