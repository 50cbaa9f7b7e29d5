//! [`KvStore`]: the key-value map and its client-session table, as a deterministic
//! [`StateMachine`].
//!
//! This is what every replica runs on each committed log entry, so it must be a pure function
//! of the commands it has applied: no clocks, no randomness, no hash-ordered iteration. Two
//! stores fed the same `(index, bytes)` sequence reach the same state, answer with the same
//! bytes, and report the same [`KvStore::state_digest`].
//!
//! # Sessions and exactly-once
//!
//! A client opens a session with [`Command::Register`]; the session's [`ClientId`] is the log
//! index of that command, so every replica picks the same id. Each session remembers the
//! sequence number and the response of its latest executed request. A retry (same `seq`) gets
//! the cached response without re-executing, so a request takes effect at most once however
//! often the client resends it (Raft dissertation §6.3).
//!
//! Sessions expire by *log time*, never by a local clock, so all replicas expire the same
//! session at the same index:
//! - a session not used for more than [`KvConfig::session_expiry_entries`] log indexes expires;
//! - when a registration would leave more than [`KvConfig::sessions_max`] sessions, the least
//!   recently used ones expire.
//!
//! A session counts as used when it is registered and whenever a request names it (executed,
//! retried or stale), because any such request proves the client is still alive.
//!
//! # Bound sessions: exactly-once for plain Redis clients
//!
//! A Redis client library cannot send sequence numbers, but it can name its connection: a
//! connection whose client name starts with `chorus-session:` is *bound* to the session of
//! that name, and its writes are proposed as [`Command::BoundAt`], carrying the session's
//! name, a number of the connection and a fingerprint of the request's bytes. Client
//! libraries resend the name on every reconnect and then resend the request whose reply they
//! lost, byte for byte, so at apply time:
//!
//! - a session's first write creates its entry, which remembers the connection, the
//!   write's fingerprint, its answer and the log clock when it was applied;
//! - a write on the session's current connection is new: it is executed and remembered;
//! - the first write applied from another connection is a retry if its fingerprint equals
//!   the remembered one and the log clock has moved by at most
//!   [`KvConfig::bound_retry_window_ms`] since that write: it is answered with the remembered
//!   answer and not executed. Otherwise it is executed. Either way, that connection becomes
//!   the session's current one and the previous one is *superseded*;
//! - a write from a superseded connection (the last [`BOUND_RETIRED_CONNECTIONS_MAX`] of
//!   them are remembered), still in flight when its client moved on, is refused with
//!   [`KvError::SupersededConnection`] and not executed: its client may have resent it on
//!   the new connection, where it was already decided.
//!
//! Everything the decision reads is replicated state and the log clock, so every replica
//! decides alike, and a retry that lands on another node after a failover is recognised too.
//! The limit is inherent: a *new* write identical to the session's previous one, sent as the
//! first write of a new connection within the window, cannot be told from a retry, and is
//! answered from the table without running. Bound sessions expire like native ones (idle for
//! `session_expiry_entries` indexes, or least recently used beyond
//! [`KvConfig::bound_sessions_max`]); an answer longer than [`BOUND_ANSWER_BYTES_MAX`]
//! encoded is not kept (a retry of it is answered [`KvError::AnswerNotKept`]).
//!
//! # Invariants
//! - `apply` indexes strictly increase (asserted).
//! - `sessions_by_use` holds exactly one `(last_used, client)` entry per session in `sessions`,
//!   so the least recently used session is always its first entry.
//! - Every session's `last_used` is at most `last_applied`, and at least its own id.
//! - `bound_by_use` holds exactly one `(last_used, name)` entry per bound session.
//!
//! # Snapshots off the critical path
//!
//! The map and the session table are persistent (immutable, structurally shared) red-black
//! trees from `rpds`, so [`StateMachine::snapshot`] clones two roots in O(1) and the image it
//! returns never sees later writes: each write copies only the O(log n) nodes on its path while
//! the image is alive. The runtime writes the image out on another thread while this store
//! keeps applying; the image streams, key by key, so it never needs a second copy of the state
//! in memory. A persistent map costs some apply speed against a `BTreeMap` (a few allocations
//! per write); a copy-on-write fork of a whole `BTreeMap` would instead stall the driver for
//! the length of a full copy at each snapshot.

use std::cmp::Ordering;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{Read, Write};

use crate::command::{
    Binding, BoundWrite, ClientId, Command, KvError, Op, Query, Response, SESSION_NAME_BYTES_MAX,
    SetCondition, SetExpiry, Step,
};
use crate::typed::{Map, Record, Score, SortedSet, Value};
use bytes::Bytes;
use chorus_core::{
    EffectError, Execution, LogIndex, Prng, RestoreError, SnapshotImage, StateMachine,
};
use rpds::{RedBlackTreeMapSync, RedBlackTreeSetSync};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

mod effect;

pub use effect::EFFECT_VERSION;

/// The format version written in front of every snapshot. [`KvStore::restore`] refuses others.
///
/// Version 4 is written record by record (so it streams): the version byte, then as varints
/// the last applied index, the log clock (milliseconds) and the number of keys; each key as a
/// varint length and its bytes, its expiry as a varint (0 for none, else the expiry time plus
/// one), its version (the log index that last wrote it) as a varint, then its value as a type tag byte and the value's records (see `put_value`); then
/// the number of sessions, and each session as its client id, a varint length and the
/// postcard encoding of the session.
///
/// Version 5 is version 4 followed by the bound sessions (see the module docs): their number,
/// then each in increasing name order as a varint length and the name's bytes, a varint
/// length and the postcard encoding of the session.
///
/// Version 4, written before bound sessions existed, is still restored: version 5 without
/// them. Version 3, written before expiry existed, is still restored: it is version 4 without the
/// log clock, the expiries and the versions. Version 2, written before typed values existed, is version 3
/// with every value a string and no type tags. Version 1 was one postcard value and was never
/// written to disk.
pub const SNAPSHOT_VERSION: u8 = 5;

/// The snapshot version before bound sessions, still accepted by restore.
const SNAPSHOT_VERSION_NO_BOUND: u8 = 4;

/// The snapshot version before expiry, still accepted by restore.
const SNAPSHOT_VERSION_NO_EXPIRY: u8 = 3;

/// The snapshot version before typed values, still accepted by restore.
const SNAPSHOT_VERSION_STRINGS_ONLY: u8 = 2;

/// The type tags of snapshot version 3.
const TAG_STRING: u8 = 0;
const TAG_HASH: u8 = 1;
const TAG_LIST: u8 = 2;
const TAG_SET: u8 = 3;
const TAG_SORTED_SET: u8 = 4;

/// Limits of a [`KvStore`]. Every replica of one group must use the same configuration,
/// because it decides when sessions expire, which is part of the replicated state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvConfig {
    /// A session not used for more than this many log indexes expires. Default 1,000,000.
    pub session_expiry_entries: u64,
    /// The most sessions kept; registering one more expires the least recently used.
    /// Default 100,000. Zero behaves as one: a registration always keeps its own session.
    pub sessions_max: usize,
    /// How long after a bound session's write (in log-clock milliseconds) an identical
    /// write on a new connection of the session counts as its retry. Default 30,000: longer
    /// than redis-py's default retries take (ten, backing off to at most 1 s each) plus a
    /// failover.
    pub bound_retry_window_ms: u64,
    /// The most bound sessions kept; a write of one more expires the least recently used.
    /// Default 100,000.
    pub bound_sessions_max: usize,
    /// TESTING ONLY, a deliberate bug: restore forgets every key's expiry time, so a replica
    /// restored from a snapshot keeps keys the others remove.
    #[cfg(feature = "inject-bugs")]
    pub restore_drops_expiry: bool,
    /// TESTING ONLY, a deliberate bug: the session table executes a retried request (the
    /// session's last sequence number again) a second time instead of answering it from its
    /// cache, so a retry that reaches the log twice takes effect twice.
    #[cfg(feature = "inject-bugs")]
    pub retry_reexecutes: bool,
}

impl Default for KvConfig {
    fn default() -> KvConfig {
        KvConfig {
            session_expiry_entries: 1_000_000,
            sessions_max: 100_000,
            bound_retry_window_ms: 30_000,
            bound_sessions_max: 100_000,
            #[cfg(feature = "inject-bugs")]
            restore_drops_expiry: false,
            #[cfg(feature = "inject-bugs")]
            retry_reexecutes: false,
        }
    }
}

/// One client session: what the session table remembers to make retries exactly-once.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Session {
    /// The `seq` of the latest executed request, 0 before the first.
    last_seq: u64,
    /// The response to the request numbered `last_seq`, `None` before the first.
    last_response: Option<Response>,
    /// The log index at which the session was last used (registered or named by a request).
    last_used: LogIndex,
}

/// The most superseded connections a bound session remembers (whose late writes it refuses).
pub const BOUND_RETIRED_CONNECTIONS_MAX: usize = 8;

/// The longest answer (encoded) a bound session keeps for a retry.
pub const BOUND_ANSWER_BYTES_MAX: usize = 64 * 1024;

/// A session of Redis connections bound by name: what the table remembers to recognise a
/// client library's retry on a new connection (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct BoundSession {
    /// The connection whose write was applied last.
    connection: u64,
    /// Connections superseded by a newer one, oldest first, at most
    /// [`BOUND_RETIRED_CONNECTIONS_MAX`].
    retired: Vec<u64>,
    /// The fingerprint of the latest executed write.
    fingerprint: u64,
    /// Its answer, `None` if longer than [`BOUND_ANSWER_BYTES_MAX`].
    answer: Option<Response>,
    /// The log clock when it was executed.
    executed_at_ms: u64,
    /// The log index at which a write last named the session.
    last_used: LogIndex,
}

/// The key-value state machine: a byte-string map plus the client-session table.
///
/// Drive it through [`StateMachine`]; the read accessors ([`KvStore::get`], [`KvStore::iter`],
/// [`KvStore::state_digest`], …) exist for tests, checkers and the simulator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvStore {
    config: KvConfig,
    /// The map. An ordered map so that iteration, snapshots and digests are deterministic,
    /// and a persistent one so that a snapshot is a clone of its root.
    data: Map,
    sessions: RedBlackTreeMapSync<ClientId, Session>,
    /// The sessions ordered by last use, oldest first: expiry pops from the front in
    /// O(log n) per expired session instead of scanning the table. Not snapshotted: it is
    /// rebuilt from `sessions` on restore.
    sessions_by_use: RedBlackTreeSetSync<(LogIndex, ClientId)>,
    /// The bound sessions, by name.
    bound: RedBlackTreeMapSync<Bytes, BoundSession>,
    /// The bound sessions ordered by last use, oldest first (rebuilt on restore).
    bound_by_use: RedBlackTreeSetSync<(LogIndex, Bytes)>,
    /// The index of the latest applied command; `LogIndex(0)` before the first.
    last_applied: LogIndex,
    /// While [`StateMachine::execute`] runs: the sessions the command registered, changed or
    /// expired (the keys it wrote are noted by the [`Map`] itself). `None` otherwise.
    sessions_written: Option<BTreeSet<ClientId>>,
    /// While [`StateMachine::execute`] runs: the bound sessions the command created, changed
    /// or expired. `None` otherwise.
    bound_written: Option<BTreeSet<Bytes>>,
    /// This replica's own randomness for commands executed passively (see
    /// [`KvStore::set_entropy`]); not replicated state.
    entropy: Entropy,
    /// The log clock: the largest wall-clock time (Unix milliseconds) any applied command
    /// carried; 0 before the first. Keys expire by it, so every replica removes the same keys
    /// at the same log position.
    clock_ms: u64,
}

/// A replica's own source of randomness: never part of the replicated state, so it takes no
/// part in equality.
#[derive(Clone, Debug, Default)]
struct Entropy(Option<Prng>);

impl PartialEq for Entropy {
    fn eq(&self, _other: &Entropy) -> bool {
        true
    }
}

impl Eq for Entropy {}

/// A snapshot of a [`KvStore`]: the roots of its persistent maps at one applied index. Taking
/// it copies nothing; writing it streams the maps in key order.
#[derive(Clone, Debug)]
pub struct KvSnapshot {
    last_applied: LogIndex,
    clock_ms: u64,
    data: Map,
    sessions: RedBlackTreeMapSync<ClientId, Session>,
    bound: RedBlackTreeMapSync<Bytes, BoundSession>,
}

impl SnapshotImage for KvSnapshot {
    fn write_to(&self, out: &mut dyn Write) -> std::io::Result<()> {
        write_image(
            out,
            (self.last_applied, self.clock_ms),
            (self.data.size(), self.data.records()),
            (self.sessions.size(), self.sessions.iter()),
            (self.bound.size(), self.bound.iter()),
        )
    }
}

/// Flush the encoding buffer to the output past this many bytes.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// Writes a version-[`SNAPSHOT_VERSION`] image. Takes counted iterators rather than the maps
/// so that tests can write impossible images (unsorted keys) to check that restore refuses
/// them.
fn write_image<'a>(
    out: &mut dyn Write,
    (last_applied, clock_ms): (LogIndex, u64),
    data: (usize, impl Iterator<Item = (&'a Bytes, &'a Record)>),
    sessions: (usize, impl Iterator<Item = (&'a ClientId, &'a Session)>),
    bound: (usize, impl Iterator<Item = (&'a Bytes, &'a BoundSession)>),
) -> std::io::Result<()> {
    let mut buffer = Vec::with_capacity(WRITE_BUFFER_BYTES);
    buffer.push(SNAPSHOT_VERSION);
    put_varint(&mut buffer, last_applied.0);
    put_varint(&mut buffer, clock_ms);
    put_varint(&mut buffer, data.0 as u64);
    for (key, record) in data.1 {
        put_bytes(&mut buffer, key);
        // Expiry times are at most i64::MAX, so the one added never overflows.
        put_varint(
            &mut buffer,
            record.expires_at.map_or(0, |at| at.saturating_add(1)),
        );
        put_varint(&mut buffer, record.version);
        put_value(&mut buffer, &record.value);
        if buffer.len() >= WRITE_BUFFER_BYTES {
            out.write_all(&buffer)?;
            buffer.clear();
        }
    }
    put_varint(&mut buffer, sessions.0 as u64);
    for (client, session) in sessions.1 {
        put_varint(&mut buffer, client.0);
        let encoded = postcard::to_allocvec(session).map_err(std::io::Error::other)?;
        put_bytes(&mut buffer, &encoded);
        if buffer.len() >= WRITE_BUFFER_BYTES {
            out.write_all(&buffer)?;
            buffer.clear();
        }
    }
    put_varint(&mut buffer, bound.0 as u64);
    for (name, session) in bound.1 {
        put_bytes(&mut buffer, name);
        let encoded = postcard::to_allocvec(session).map_err(std::io::Error::other)?;
        put_bytes(&mut buffer, &encoded);
        if buffer.len() >= WRITE_BUFFER_BYTES {
            out.write_all(&buffer)?;
            buffer.clear();
        }
    }
    out.write_all(&buffer)
}

fn put_varint(buffer: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buffer.push((value as u8) | 0x80);
        value >>= 7;
    }
    buffer.push(value as u8);
}

fn put_bytes(buffer: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(buffer, bytes.len() as u64);
    buffer.extend_from_slice(bytes);
}

/// Writes one value: its type tag, then a string's bytes, or a collection's size and its
/// elements (hash fields with their values, list elements in order, set members, sorted-set
/// members with their scores as 8 little-endian bytes), collections other than lists in
/// byte order of their members.
fn put_value(buffer: &mut Vec<u8>, value: &Value) {
    match value {
        Value::String(bytes) => {
            buffer.push(TAG_STRING);
            put_bytes(buffer, bytes);
        }
        Value::Hash(hash) => {
            buffer.push(TAG_HASH);
            put_varint(buffer, hash.len() as u64);
            for (field, value) in hash.iter() {
                put_bytes(buffer, field);
                put_bytes(buffer, value);
            }
        }
        Value::List(list) => {
            buffer.push(TAG_LIST);
            put_varint(buffer, list.len() as u64);
            for item in list.iter() {
                put_bytes(buffer, item);
            }
        }
        Value::Set(set) => {
            buffer.push(TAG_SET);
            put_varint(buffer, set.len() as u64);
            for member in set.iter() {
                put_bytes(buffer, member);
            }
        }
        Value::SortedSet(zset) => {
            buffer.push(TAG_SORTED_SET);
            put_varint(buffer, zset.len() as u64);
            for (member, score) in zset.by_member() {
                put_bytes(buffer, member);
                buffer.extend_from_slice(&score.0.to_bits().to_le_bytes());
            }
        }
    }
}

/// Reads a snapshot image record by record, refusing anything not in canonical form.
struct ImageReader<'a> {
    input: &'a mut dyn Read,
}

fn refusal(reason: &str) -> RestoreError {
    RestoreError {
        reason: reason.to_owned(),
    }
}

impl ImageReader<'_> {
    fn byte(&mut self) -> Result<u8, RestoreError> {
        let mut byte = [0u8; 1];
        self.input
            .read_exact(&mut byte)
            .map_err(|error| refusal(&format!("truncated or unreadable snapshot: {error}")))?;
        Ok(byte[0])
    }

    /// A LEB128 varint of at most 10 bytes, in its shortest form.
    fn varint(&mut self) -> Result<u64, RestoreError> {
        let mut value = 0u64;
        for position in 0..10u32 {
            let byte = self.byte()?;
            let bits = u64::from(byte & 0x7f);
            if position == 9 && byte > 1 {
                return Err(refusal("a varint overflows 64 bits"));
            }
            value |= bits << (7 * position);
            if byte & 0x80 == 0 {
                if position > 0 && byte == 0 {
                    return Err(refusal("a varint is not in its shortest form"));
                }
                return Ok(value);
            }
        }
        Err(refusal("a varint is longer than 10 bytes"))
    }

    /// A length-prefixed byte string. The buffer grows only as bytes actually arrive, so a
    /// forged length cannot make this allocate more than the input holds.
    fn bytes(&mut self) -> Result<Vec<u8>, RestoreError> {
        let length = self.varint()?;
        let mut bytes = Vec::new();
        let read = (&mut *self.input)
            .take(length)
            .read_to_end(&mut bytes)
            .map_err(|error| refusal(&format!("unreadable snapshot: {error}")))?;
        if read as u64 != length {
            return Err(refusal("truncated snapshot"));
        }
        Ok(bytes)
    }

    /// A collection's size: at least one, since empty collections are never stored.
    fn collection_len(&mut self) -> Result<u64, RestoreError> {
        match self.varint()? {
            0 => Err(refusal("an empty collection")),
            len => Ok(len),
        }
    }

    /// Byte strings in strictly increasing order, `len` of them, each read by `item`.
    fn sorted<T>(
        &mut self,
        len: u64,
        mut item: impl FnMut(&mut Self) -> Result<(Bytes, T), RestoreError>,
    ) -> Result<Vec<(Bytes, T)>, RestoreError> {
        let mut items: Vec<(Bytes, T)> = Vec::new();
        for _ in 0..len {
            let (name, rest) = item(self)?;
            if items.last().is_some_and(|(previous, _)| *previous >= name) {
                return Err(refusal("collection members are not strictly increasing"));
            }
            items.push((name, rest));
        }
        Ok(items)
    }

    /// One value of snapshot version 3 (see [`put_value`]).
    fn value(&mut self) -> Result<Value, RestoreError> {
        Ok(match self.byte()? {
            TAG_STRING => Value::String(Bytes::from(self.bytes()?)),
            TAG_HASH => {
                let len = self.collection_len()?;
                let pairs = self.sorted(len, |reader| {
                    Ok((Bytes::from(reader.bytes()?), Bytes::from(reader.bytes()?)))
                })?;
                Value::Hash(Arc::new(pairs.into_iter().collect::<BTreeMap<_, _>>()))
            }
            TAG_LIST => {
                let len = self.collection_len()?;
                let mut list = VecDeque::new();
                for _ in 0..len {
                    list.push_back(Bytes::from(self.bytes()?));
                }
                Value::List(Arc::new(list))
            }
            TAG_SET => {
                let len = self.collection_len()?;
                let members = self.sorted(len, |reader| Ok((Bytes::from(reader.bytes()?), ())))?;
                Value::Set(Arc::new(
                    members
                        .into_iter()
                        .map(|(member, ())| member)
                        .collect::<BTreeSet<_>>(),
                ))
            }
            TAG_SORTED_SET => {
                let len = self.collection_len()?;
                let members = self.sorted(len, |reader| {
                    let member = Bytes::from(reader.bytes()?);
                    let mut bits = [0u8; 8];
                    for byte in &mut bits {
                        *byte = reader.byte()?;
                    }
                    let score = f64::from_bits(u64::from_le_bytes(bits));
                    if score.is_nan() {
                        return Err(refusal("a score is not a number"));
                    }
                    Ok((member, Score(score)))
                })?;
                let mut zset = SortedSet::default();
                for (member, score) in members {
                    zset.insert(member, score);
                }
                Value::SortedSet(Arc::new(zset))
            }
            tag => return Err(refusal(&format!("unknown value type tag {tag}"))),
        })
    }

    fn end(&mut self) -> Result<(), RestoreError> {
        let mut byte = [0u8; 1];
        match self.input.read(&mut byte) {
            Ok(0) => Ok(()),
            Ok(_) => Err(refusal("trailing bytes after the snapshot")),
            Err(error) => Err(refusal(&format!("unreadable snapshot: {error}"))),
        }
    }
}

impl KvStore {
    /// An empty store, with no sessions and nothing applied.
    #[must_use]
    pub fn new(config: KvConfig) -> KvStore {
        KvStore {
            config,
            data: Map::new_sync(),
            sessions: RedBlackTreeMapSync::new_sync(),
            sessions_by_use: RedBlackTreeSetSync::new_sync(),
            bound: RedBlackTreeMapSync::new_sync(),
            bound_by_use: RedBlackTreeSetSync::new_sync(),
            last_applied: LogIndex(0),
            sessions_written: None,
            bound_written: None,
            entropy: Entropy::default(),
            clock_ms: 0,
        }
    }

    /// Gives this replica its own randomness, seeded by `seed` (a runtime seeds it from the
    /// operating system). It is used only by [`StateMachine::execute`], which the passive
    /// schemes (primary-backup, the hybrid) run on the primary alone and whose effect the
    /// backups apply: there `SPOP` pops members drawn from it, as Redis does. Raft applies
    /// every command on every replica with [`StateMachine::apply`], which ignores it: there
    /// `SPOP` stays seeded by the log index, so every replica pops the same members.
    pub fn set_entropy(&mut self, seed: u64) {
        self.entropy = Entropy(Some(Prng::new(seed)));
    }

    /// The configuration this store was built with.
    #[must_use]
    pub fn config(&self) -> KvConfig {
        self.config
    }

    /// A key's value if it is a string, or `None` if absent or of another type.
    #[must_use]
    pub fn get(&self, key: &[u8]) -> Option<&Bytes> {
        match self.data.get(key) {
            Some(Value::String(value)) => Some(value),
            _ => None,
        }
    }

    /// A key's typed value, or `None` if absent.
    #[must_use]
    pub fn value(&self, key: &[u8]) -> Option<&Value> {
        self.data.get(key)
    }

    /// The number of keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.data.size()
    }

    /// Whether the map holds no keys (sessions are not counted).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The `(key, value)` pairs in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &Value)> {
        self.data.iter()
    }

    /// The number of live sessions.
    #[must_use]
    pub fn sessions_len(&self) -> usize {
        self.sessions.size()
    }

    /// The number of live bound sessions (see the module docs).
    #[must_use]
    pub fn bound_sessions_len(&self) -> usize {
        self.bound.size()
    }

    /// Whether `client` names a live session. Expiry is checked when a command is applied, so
    /// a session past its expiry stays live until the next [`StateMachine::apply`].
    #[must_use]
    pub fn has_session(&self, client: ClientId) -> bool {
        self.sessions.contains_key(&client)
    }

    /// The index of the latest applied command, `LogIndex(0)` before the first.
    #[must_use]
    pub fn last_applied(&self) -> LogIndex {
        self.last_applied
    }

    /// The log clock, in Unix milliseconds: the largest time any applied command carried.
    #[must_use]
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// A key's expiry time in log-clock milliseconds, `None` if it never expires or is
    /// absent.
    #[must_use]
    pub fn expires_at(&self, key: &[u8]) -> Option<u64> {
        self.data.expires_at(key)
    }

    /// A key's version: the log index of the command that last wrote it, 0 if absent.
    #[must_use]
    pub fn version(&self, key: &[u8]) -> u64 {
        self.data.version(key)
    }

    /// The soonest expiry time of any key: once a node's wall clock passes it, the key is
    /// due, and the node should move the log clock (a [`Command::Tick`]) and serve reads
    /// through the log ([`Command::ReadAt`]) until the key is gone.
    #[must_use]
    pub fn next_deadline(&self) -> Option<u64> {
        self.data.next_deadline()
    }

    /// A deterministic hash of the map and the session table (cached responses and
    /// last-used indexes included), so that a simulator can compare replicas cheaply.
    ///
    /// Two stores that applied the same commands at the same indexes have equal digests.
    /// The value is stable within one build of Chorus; do not persist it, because the
    /// standard library may change its hash function between Rust releases.
    #[must_use]
    pub fn state_digest(&self) -> u64 {
        // `DefaultHasher::new()` uses fixed keys (unlike `RandomState`), so every replica in
        // a process, and every run of one binary, hashes alike. The lengths go first so that
        // entries cannot shift from one collection into the other with the same digest.
        let mut hasher = DefaultHasher::new();
        self.clock_ms.hash(&mut hasher);
        self.data.size().hash(&mut hasher);
        for (key, record) in self.data.records() {
            key.hash(&mut hasher);
            record.hash(&mut hasher);
        }
        self.sessions.size().hash(&mut hasher);
        for (client, session) in &self.sessions {
            client.hash(&mut hasher);
            session.hash(&mut hasher);
        }
        self.bound.size().hash(&mut hasher);
        for (name, session) in &self.bound {
            name.hash(&mut hasher);
            session.hash(&mut hasher);
        }
        hasher.finish()
    }

    /// Applies one decoded command at `index`.
    fn apply_command(&mut self, index: LogIndex, command: Command) -> Response {
        match command {
            Command::Register => self.register(index),
            Command::Request { client, seq, op } => self.apply_request(index, client, seq, op),
            Command::Unsessioned(op) => self.execute(index, op),
            Command::UnsessionedAt { now_ms, op } => {
                self.advance_clock(now_ms);
                self.execute(index, op)
            }
            Command::Tick { now_ms } => {
                self.advance_clock(now_ms);
                Response::Ok
            }
            Command::ReadAt { now_ms, query } => {
                self.advance_clock(now_ms);
                self.answer(&query)
            }
            Command::TransactionAt {
                now_ms,
                watched,
                steps,
            } => {
                self.advance_clock(now_ms);
                self.transaction(index, &watched, steps)
            }
            Command::BoundAt {
                now_ms,
                binding,
                write,
            } => {
                self.advance_clock(now_ms);
                self.apply_bound(index, binding, write)
            }
        }
    }

    /// Runs a transaction's steps in order if every watched key still has its version.
    fn transaction(
        &mut self,
        index: LogIndex,
        watched: &[(Bytes, u64)],
        steps: Vec<Step>,
    ) -> Response {
        let unchanged = watched
            .iter()
            .all(|(key, version)| self.data.version(key) == *version);
        if !unchanged {
            return Response::Transaction(None);
        }
        let answers = steps
            .into_iter()
            .map(|step| match step {
                Step::Write(op) => self.execute(index, op),
                Step::Read(query) => self.answer(&query),
            })
            .collect();
        Response::Transaction(Some(answers))
    }

    /// Applies a bound session's write: refuses it if it comes from a superseded connection,
    /// answers it from the table if it is a retry, executes it otherwise (see the module docs).
    fn apply_bound(&mut self, index: LogIndex, binding: Binding, write: BoundWrite) -> Response {
        let Binding {
            session: name,
            connection,
            fingerprint,
        } = binding;
        if name.len() > SESSION_NAME_BYTES_MAX {
            return Response::Error(KvError::Malformed);
        }
        let window_ms = self.config.bound_retry_window_ms;
        let clock_ms = self.clock_ms;
        if let Some(session) = self.bound.get(&name) {
            if session.connection != connection {
                if session.retired.contains(&connection) {
                    self.touch_bound(&name, index);
                    return Response::Error(KvError::SupersededConnection);
                }
                let retry = session.fingerprint == fingerprint
                    && clock_ms.saturating_sub(session.executed_at_ms) <= window_ms;
                let answer = retry.then(|| {
                    session
                        .answer
                        .clone()
                        .unwrap_or(Response::Error(KvError::AnswerNotKept))
                });
                let session = self
                    .bound
                    .get_mut(&name)
                    .expect("invariant: the session was found above");
                if session.retired.len() >= BOUND_RETIRED_CONNECTIONS_MAX {
                    session.retired.remove(0);
                }
                let superseded = session.connection;
                session.retired.push(superseded);
                session.connection = connection;
                self.touch_bound(&name, index);
                if let Some(answer) = answer {
                    return answer;
                }
            }
        } else {
            while !self.bound.is_empty() && self.bound.size() >= self.config.bound_sessions_max {
                self.expire_least_recently_used_bound();
            }
            self.bound.insert_mut(
                name.clone(),
                BoundSession {
                    connection,
                    retired: Vec::new(),
                    fingerprint,
                    answer: None,
                    executed_at_ms: clock_ms,
                    last_used: index,
                },
            );
            self.bound_by_use.insert_mut((index, name.clone()));
            self.note_bound(&name);
        }
        let response = match write {
            BoundWrite::Op(op) => self.execute(index, op),
            BoundWrite::Transaction { watched, steps } => self.transaction(index, &watched, steps),
        };
        let kept = (response.encode().len() <= BOUND_ANSWER_BYTES_MAX).then(|| response.clone());
        let session = self
            .bound
            .get_mut(&name)
            .expect("invariant: the session exists, and executing never expires one");
        session.fingerprint = fingerprint;
        session.answer = kept;
        session.executed_at_ms = self.clock_ms;
        self.touch_bound(&name, index);
        response
    }

    /// Notes, while executing, that the bound session `name` changed.
    fn note_bound(&mut self, name: &Bytes) {
        if let Some(written) = &mut self.bound_written {
            written.insert(name.clone());
        }
    }

    /// Marks the bound session `name` as used at `index`.
    fn touch_bound(&mut self, name: &Bytes, index: LogIndex) {
        self.note_bound(name);
        let session = self
            .bound
            .get_mut(name)
            .expect("invariant: touch_bound is called only for live sessions");
        let removed = self
            .bound_by_use
            .remove_mut(&(session.last_used, name.clone()));
        assert!(removed, "invariant: every bound session is in bound_by_use");
        session.last_used = index;
        self.bound_by_use.insert_mut((index, name.clone()));
    }

    /// Drops the least recently used bound session.
    fn expire_least_recently_used_bound(&mut self) {
        if let Some((last_used, name)) = self.bound_by_use.first().cloned() {
            self.note_bound(&name);
            self.bound_by_use.remove_mut(&(last_used, name.clone()));
            let removed = self.bound.remove_mut(&name);
            assert!(
                removed,
                "invariant: bound_by_use names only live bound sessions"
            );
        }
    }

    /// Moves the log clock up to `now_ms` (never back) and removes every key whose expiry
    /// time the clock has reached.
    fn advance_clock(&mut self, now_ms: u64) {
        self.clock_ms = self.clock_ms.max(now_ms);
        self.data.expire_due(self.clock_ms);
    }

    /// Opens a session named after `index`, first expiring least recently used sessions so
    /// that at most `sessions_max` remain (but always this one).
    fn register(&mut self, index: LogIndex) -> Response {
        let client = ClientId(index.0);
        assert!(
            !self.sessions.contains_key(&client),
            "invariant: session ids are log indexes, and indexes are never reused"
        );
        while !self.sessions.is_empty() && self.sessions.size() >= self.config.sessions_max {
            self.expire_least_recently_used();
        }
        self.note_session(client);
        self.sessions.insert_mut(
            client,
            Session {
                last_seq: 0,
                last_response: None,
                last_used: index,
            },
        );
        self.sessions_by_use.insert_mut((index, client));
        Response::Registered(client)
    }

    /// Applies a request of `client`'s session: executes it once, and answers its retries
    /// from the session's cache.
    fn apply_request(&mut self, index: LogIndex, client: ClientId, seq: u64, op: Op) -> Response {
        let Some(session) = self.sessions.get(&client) else {
            return Response::Error(KvError::UnknownSession);
        };
        #[cfg(feature = "inject-bugs")]
        let seq_order = if self.config.retry_reexecutes && seq == session.last_seq && seq > 0 {
            Ordering::Greater
        } else {
            seq.cmp(&session.last_seq)
        };
        #[cfg(not(feature = "inject-bugs"))]
        let seq_order = seq.cmp(&session.last_seq);
        let response = match seq_order {
            // The answer to an older request was overwritten by a newer one's; re-executing
            // could apply its effect twice, so the only safe answer is a refusal.
            Ordering::Less => Response::Error(KvError::StaleRequest),
            // A retry: answer from the cache, never execute again. Before the first request
            // (seq 0, nothing cached) there is no answer to give, and 0 is not a valid seq.
            Ordering::Equal => session
                .last_response
                .clone()
                .unwrap_or(Response::Error(KvError::StaleRequest)),
            Ordering::Greater => {
                let response = self.execute(index, op);
                let session = self
                    .sessions
                    .get_mut(&client)
                    .expect("invariant: the session was found above and execute keeps sessions");
                session.last_seq = seq;
                session.last_response = Some(response.clone());
                response
            }
        };
        self.touch(client, index);
        response
    }

    /// Notes, while executing, that `client`'s session changed (its after-image goes into
    /// the effect).
    fn note_session(&mut self, client: ClientId) {
        if let Some(written) = &mut self.sessions_written {
            written.insert(client);
        }
    }

    /// Marks `client`'s session as used at `index`.
    fn touch(&mut self, client: ClientId, index: LogIndex) {
        self.note_session(client);
        let session = self
            .sessions
            .get_mut(&client)
            .expect("invariant: touch is called only for live sessions");
        let removed = self
            .sessions_by_use
            .remove_mut(&(session.last_used, client));
        assert!(removed, "invariant: every session is in sessions_by_use");
        session.last_used = index;
        self.sessions_by_use.insert_mut((index, client));
    }

    /// Expires every session unused for more than `session_expiry_entries` indexes as of
    /// `index`. Called before each command, so a request at `index` sees the same table on
    /// every replica.
    fn expire_idle(&mut self, index: LogIndex) {
        // Used at `u`, the session expires once `index - u > session_expiry_entries`, that
        // is once `u < index - session_expiry_entries`.
        let threshold = LogIndex(index.0.saturating_sub(self.config.session_expiry_entries));
        while let Some(&(last_used, _)) = self.sessions_by_use.first() {
            if last_used >= threshold {
                break;
            }
            self.expire_least_recently_used();
        }
        while let Some((last_used, _)) = self.bound_by_use.first() {
            if *last_used >= threshold {
                break;
            }
            self.expire_least_recently_used_bound();
        }
    }

    /// Drops the least recently used session.
    fn expire_least_recently_used(&mut self) {
        if let Some(&(last_used, client)) = self.sessions_by_use.first() {
            self.note_session(client);
            self.sessions_by_use.remove_mut(&(last_used, client));
            let removed = self.sessions.remove_mut(&client);
            assert!(
                removed,
                "invariant: sessions_by_use names only live sessions"
            );
        }
    }

    /// The string at `key`: `Ok(None)` if absent, [`KvError::WrongType`] if another type.
    fn string(&self, key: &[u8]) -> Result<Option<&Bytes>, KvError> {
        match self.data.get(key) {
            None => Ok(None),
            Some(Value::String(value)) => Ok(Some(value)),
            Some(_) => Err(KvError::WrongType),
        }
    }

    /// Executes an operation on the map at log `index`. Refused operations leave the map
    /// unchanged. String operations on a key of another type are refused with
    /// [`KvError::WrongType`], except those that overwrite the key whatever it holds (`Put`,
    /// `MultiPut`, an unconditional `Set` without `GET`, as Redis's `SET` and `MSET`).
    fn execute(&mut self, index: LogIndex, op: Op) -> Response {
        match self.execute_strings(index, op) {
            Ok(response) => response,
            Err(error) => Response::Error(error),
        }
    }

    fn execute_strings(&mut self, index: LogIndex, op: Op) -> Result<Response, KvError> {
        Ok(match op {
            Op::Get { key } => Response::Value(self.string(&key)?.cloned()),
            Op::Put { key, value } => {
                self.data.insert_mut(key, Value::String(value));
                Response::Ok
            }
            Op::Delete { key } => Response::Deleted(self.data.remove_mut(&key)),
            Op::Append { key, value } => {
                // An absent key counts as the empty string (the history model's rule).
                let old = self.string(&key)?.map(Bytes::as_ref).unwrap_or_default();
                let mut combined = Vec::with_capacity(old.len() + value.len());
                combined.extend_from_slice(old);
                combined.extend_from_slice(&value);
                let length = combined.len() as u64;
                self.data
                    .replace_value(key, Value::String(Bytes::from(combined)));
                Response::Length(length)
            }
            Op::Cas { key, from, to } => {
                // An absent key never matches, not even `from == ""`: only an existing value
                // can be compared (the history model's rule).
                let swapped = self.string(&key)? == Some(&from);
                if swapped {
                    self.data.insert_mut(key, Value::String(to));
                }
                Response::Swapped(swapped)
            }
            Op::IncrBy { key, delta } => {
                let current = match self.string(&key)? {
                    None => 0,
                    Some(value) => parse_integer(value).ok_or(KvError::NotAnInteger)?,
                };
                let updated = current.checked_add(delta).ok_or(KvError::Overflow)?;
                self.data
                    .replace_value(key, Value::String(Bytes::from(updated.to_string())));
                Response::Integer(updated)
            }
            Op::MultiPut { pairs } => {
                // In order, so a key named twice ends with its last value.
                for (key, value) in pairs {
                    self.data.insert_mut(key, Value::String(value));
                }
                Response::Ok
            }
            Op::Set {
                key,
                value,
                condition,
            } => self.set(key, value, &condition, None)?,
            Op::SetExpiring {
                key,
                value,
                condition,
                expiry,
            } => self.set(key, value, &condition, Some(expiry))?,
            Op::DeleteMany { keys } => {
                let removed = keys.iter().filter(|key| self.data.remove_mut(key)).count();
                Response::Integer(i64::try_from(removed).unwrap_or(i64::MAX))
            }
            Op::Typed(op) => {
                // Executing passively (effects shipped), the replica's own randomness may
                // decide; applied actively, only the log index may.
                let seed = match (&mut self.entropy.0, &self.sessions_written) {
                    (Some(entropy), Some(_)) => entropy.next_u64(),
                    _ => index.0,
                };
                Response::Reply(crate::typed::execute_seeded(
                    &mut self.data,
                    index,
                    self.clock_ms,
                    op,
                    seed,
                ))
            }
        })
    }

    /// `SET` with its condition, and with the expiry it leaves (`None`: no expiry, as a plain
    /// `SET` leaves none).
    fn set(
        &mut self,
        key: Bytes,
        value: Bytes,
        condition: &SetCondition,
        expiry: Option<SetExpiry>,
    ) -> Result<Response, KvError> {
        // A conditional set or `GET` reads the old value as a string (Redis answers
        // WRONGTYPE for `SET … GET` on a hash); a plain set overwrites any type.
        let exists = self.data.contains_key(&key);
        let previous = match condition {
            SetCondition::Always | SetCondition::IfAbsent | SetCondition::IfPresent => {
                self.string(&key).ok().flatten().cloned()
            }
            SetCondition::IfEqual(_) => self.string(&key)?.cloned(),
        };
        let applied = match &condition {
            SetCondition::Always => true,
            SetCondition::IfAbsent => !exists,
            SetCondition::IfPresent => exists,
            SetCondition::IfEqual(expected) => previous.as_ref() == Some(expected),
        };
        if applied {
            let expires_at = match expiry {
                None => None,
                Some(SetExpiry::Keep) => self.data.expires_at(&key),
                // A time already past leaves the key to be removed right after this
                // command, as Redis's next access would.
                Some(SetExpiry::At(deadline)) => Some(deadline.resolve(self.clock_ms)),
            };
            self.data
                .insert_record(key, Record::new(Value::String(value), expires_at));
        }
        Ok(Response::Set { applied, previous })
    }

    /// Answers one decoded query.
    fn answer(&self, query: &Query) -> Response {
        match query {
            Query::Get { key } => match self.string(key) {
                Ok(value) => Response::Value(value.cloned()),
                Err(error) => Response::Error(error),
            },
            // MGET answers nil for a key of another type, as Redis does.
            Query::MultiGet { keys } => Response::Values(
                keys.iter()
                    .map(|key| self.string(key).ok().flatten().cloned())
                    .collect(),
            ),
            // More than i64::MAX keys cannot fit in memory; saturate rather than panic.
            Query::Len => Response::Integer(i64::try_from(self.data.size()).unwrap_or(i64::MAX)),
            Query::Exists { keys } => {
                let present = keys
                    .iter()
                    .filter(|key| self.data.contains_key(key))
                    .count();
                Response::Integer(i64::try_from(present).unwrap_or(i64::MAX))
            }
            Query::Versions { keys } => {
                Response::Versions(keys.iter().map(|key| self.data.version(key)).collect())
            }
            Query::Typed(op) if op.is_write() => Response::Error(KvError::Malformed),
            Query::Typed(op) => {
                // A read never changes the map, so running it on a clone of the root (O(1))
                // shares one code path with writes and copies nothing.
                let mut data = self.data.clone();
                Response::Reply(crate::typed::execute(
                    &mut data,
                    self.last_applied,
                    self.clock_ms,
                    op.clone(),
                ))
            }
        }
    }

    /// Reads a snapshot image and builds the state it describes, without touching `self`.
    fn read_image(config: KvConfig, input: &mut dyn Read) -> Result<KvStore, RestoreError> {
        let mut reader = ImageReader { input };
        let version = reader.byte()?;
        if ![
            SNAPSHOT_VERSION,
            SNAPSHOT_VERSION_NO_BOUND,
            SNAPSHOT_VERSION_NO_EXPIRY,
            SNAPSHOT_VERSION_STRINGS_ONLY,
        ]
        .contains(&version)
        {
            return Err(refusal(&format!(
                "snapshot version {version} is none of {SNAPSHOT_VERSION}, \
                 {SNAPSHOT_VERSION_NO_BOUND}, {SNAPSHOT_VERSION_NO_EXPIRY} and \
                 {SNAPSHOT_VERSION_STRINGS_ONLY}"
            )));
        }
        let last_applied = LogIndex(reader.varint()?);
        let with_expiry = version >= SNAPSHOT_VERSION_NO_BOUND;
        let clock_ms = if with_expiry { reader.varint()? } else { 0 };
        let mut data = Map::new_sync();
        let mut previous_key: Option<Bytes> = None;
        for _ in 0..reader.varint()? {
            let key = Bytes::from(reader.bytes()?);
            let (expires_at, written_at) = if with_expiry {
                let expires_at = match reader.varint()? {
                    0 => None,
                    // Applying removes every key the clock has reached, and expiry times
                    // never exceed i64::MAX: anything else was not written by a store.
                    stored if stored - 1 <= clock_ms => {
                        return Err(refusal("a key expired at or before the log clock"));
                    }
                    stored if stored - 1 > i64::MAX as u64 => {
                        return Err(refusal("an expiry time beyond i64::MAX"));
                    }
                    stored => Some(stored - 1),
                };
                let written_at = reader.varint()?;
                if written_at > last_applied.0 {
                    return Err(refusal("a key was written after the last applied index"));
                }
                (expires_at, written_at)
            } else {
                (None, 0)
            };
            let value = if version == SNAPSHOT_VERSION_STRINGS_ONLY {
                Value::String(Bytes::from(reader.bytes()?))
            } else {
                reader.value()?
            };
            if previous_key
                .as_ref()
                .is_some_and(|previous| *previous >= key)
            {
                return Err(refusal("keys are not strictly increasing"));
            }
            previous_key = Some(key.clone());
            #[cfg(feature = "inject-bugs")]
            let expires_at = expires_at.filter(|_| !config.restore_drops_expiry);
            let record = Record {
                value,
                expires_at,
                version: written_at,
            };
            data.restore_record(key, record);
        }
        let mut sessions = RedBlackTreeMapSync::new_sync();
        let mut sessions_by_use = RedBlackTreeSetSync::new_sync();
        let mut previous_client: Option<ClientId> = None;
        for _ in 0..reader.varint()? {
            let client = ClientId(reader.varint()?);
            let encoded = reader.bytes()?;
            let session: Session = postcard::from_bytes(&encoded)
                .map_err(|error| refusal(&format!("a session does not decode: {error}")))?;
            // postcard accepts overlong varints and ignores trailing bytes, so two byte
            // strings could decode to one session. Only the canonical encoding is accepted,
            // so that replicas can compare snapshots by their bytes (found by the
            // kv_snapshot fuzz target).
            if postcard::to_allocvec(&session).ok().as_deref() != Some(encoded.as_slice()) {
                return Err(refusal("a session is not in canonical form"));
            }
            if previous_client.is_some_and(|previous| previous >= client) {
                return Err(refusal("session ids are not strictly increasing"));
            }
            previous_client = Some(client);
            if session.last_used > last_applied {
                return Err(refusal("a session was used after the last applied index"));
            }
            if session.last_used.0 < client.0 {
                return Err(refusal("a session was used before it was registered"));
            }
            if (session.last_seq == 0) != session.last_response.is_none() {
                return Err(refusal(
                    "a session's cached response does not match its seq",
                ));
            }
            sessions_by_use.insert_mut((session.last_used, client));
            sessions.insert_mut(client, session);
        }
        let mut bound = RedBlackTreeMapSync::new_sync();
        let mut bound_by_use = RedBlackTreeSetSync::new_sync();
        if version == SNAPSHOT_VERSION {
            let mut previous_name: Option<Bytes> = None;
            for _ in 0..reader.varint()? {
                let name = Bytes::from(reader.bytes()?);
                let encoded = reader.bytes()?;
                let session = decode_bound_session(&name, &encoded, last_applied)
                    .map_err(|reason| refusal(&reason))?;
                if previous_name
                    .as_ref()
                    .is_some_and(|previous| *previous >= name)
                {
                    return Err(refusal("bound session names are not strictly increasing"));
                }
                previous_name = Some(name.clone());
                bound_by_use.insert_mut((session.last_used, name.clone()));
                bound.insert_mut(name, session);
            }
        }
        reader.end()?;
        Ok(KvStore {
            config,
            data,
            sessions,
            sessions_by_use,
            bound,
            bound_by_use,
            last_applied,
            sessions_written: None,
            bound_written: None,
            entropy: Entropy::default(),
            clock_ms,
        })
    }
}

/// Decodes a bound session as a snapshot or an effect stores it, refusing a non-canonical
/// encoding and impossible states (a name too long, a use after `last_applied`, too many
/// superseded connections).
fn decode_bound_session(
    name: &[u8],
    encoded: &[u8],
    last_applied: LogIndex,
) -> Result<BoundSession, String> {
    let session: BoundSession = postcard::from_bytes(encoded)
        .map_err(|error| format!("a bound session does not decode: {error}"))?;
    // As for native sessions: only the canonical encoding, so snapshots compare by bytes.
    if postcard::to_allocvec(&session).ok().as_deref() != Some(encoded) {
        return Err("a bound session is not in canonical form".to_owned());
    }
    if name.len() > SESSION_NAME_BYTES_MAX {
        return Err("a bound session's name is too long".to_owned());
    }
    if session.last_used > last_applied {
        return Err("a bound session was used after the last applied index".to_owned());
    }
    if session.retired.len() > BOUND_RETIRED_CONNECTIONS_MAX {
        return Err("a bound session remembers too many connections".to_owned());
    }
    Ok(session)
}

/// Reads a stored value as a decimal `i64` (an optional sign, then digits), or `None`.
/// A stored value as INCR reads it, exactly as Redis does (`string2ll`): an optional `-`, then
/// decimal digits with no leading zero, within `i64`. So `01`, `+1`, `-0`, ` 1` and `1.0`
/// are not integers.
pub(crate) fn parse_integer(value: &[u8]) -> Option<i64> {
    let digits = value.strip_prefix(b"-").unwrap_or(value);
    let canonical = !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && (digits[0] != b'0' || (digits.len() == 1 && digits.len() == value.len()));
    if !canonical {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

impl StateMachine for KvStore {
    /// Applies the encoded [`Command`] at `index` and returns the encoded [`Response`].
    ///
    /// Idle sessions expire first, as of `index`. Bytes that do not decode are answered with
    /// [`KvError::Malformed`] and change nothing but the last applied index.
    ///
    /// # Panics
    /// If `index` is not greater than the previous call's (or the restored snapshot's): the
    /// protocol core broke its contract, and applying out of order would fork the replicas.
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Bytes {
        assert!(
            index > self.last_applied,
            "apply at {index} after {}: indexes must strictly increase",
            self.last_applied
        );
        self.last_applied = index;
        self.data.set_index(index.0);
        self.expire_idle(index);
        let response = match Command::decode(command) {
            Ok(command) => self.apply_command(index, command),
            Err(_) => Response::Error(KvError::Malformed),
        };
        // A command may have given a key an expiry time already past (`SET … PXAT 1`): it
        // goes now, so the state never holds a key its own clock has expired.
        self.data.expire_due(self.clock_ms);
        response.encode()
    }

    /// Answers the encoded [`Query`] with an encoded [`Response`]; bytes that do not decode
    /// are answered with [`KvError::Malformed`].
    /// Applies the command as [`StateMachine::apply`] does, noting what it changed: the
    /// effect is the after-image of every key written or removed (the whole stored record,
    /// as a snapshot writes it) and of every session registered, used or expired, so the
    /// cached reply of a session travels with it (see [`KvStore::apply_effect`] for the
    /// layout).
    fn execute(&mut self, index: LogIndex, command: &[u8]) -> Execution {
        self.data.start_recording();
        self.sessions_written = Some(BTreeSet::new());
        self.bound_written = Some(BTreeSet::new());
        let output = self.apply(index, command);
        let keys = self.data.stop_recording().expect(
            "invariant: the key space is changed in place, never replaced, while executing",
        );
        let sessions = self.sessions_written.take().expect("invariant: set above");
        let bound = self.bound_written.take().expect("invariant: set above");
        Execution {
            output,
            effect: self.encode_effect(&keys, &sessions, &bound),
        }
    }

    /// Applies an effect written by [`StateMachine::execute`] at the same index on another
    /// replica: sets or removes each key and session it names, without executing anything.
    ///
    /// # Errors
    /// [`EffectError`] when the bytes do not decode or describe an impossible state (a session
    /// used after `index`); nothing changes then.
    ///
    /// # Panics
    /// If `index` is not greater than the last applied index, as for `apply`.
    fn apply_effect(&mut self, index: LogIndex, effect: &[u8]) -> Result<(), EffectError> {
        assert!(
            index > self.last_applied,
            "apply_effect at {index} after {}: indexes must strictly increase",
            self.last_applied
        );
        let decoded = effect::decode(effect, index)?;
        self.last_applied = index;
        self.clock_ms = decoded.clock_ms;
        if decoded.cleared {
            self.data.clear();
        }
        for (key, record) in decoded.keys {
            match record {
                Some(record) => self.data.restore_record(key, record),
                None => {
                    self.data.remove_mut(&key);
                }
            }
        }
        for (client, session) in decoded.sessions {
            if let Some(old) = self.sessions.get(&client) {
                self.sessions_by_use.remove_mut(&(old.last_used, client));
            }
            match session {
                Some(session) => {
                    self.sessions_by_use.insert_mut((session.last_used, client));
                    self.sessions.insert_mut(client, session);
                }
                None => {
                    self.sessions.remove_mut(&client);
                }
            }
        }
        for (name, session) in decoded.bound {
            if let Some(old) = self.bound.get(&name) {
                self.bound_by_use.remove_mut(&(old.last_used, name.clone()));
            }
            match session {
                Some(session) => {
                    self.bound_by_use
                        .insert_mut((session.last_used, name.clone()));
                    self.bound.insert_mut(name, session);
                }
                None => {
                    self.bound.remove_mut(&name);
                }
            }
        }
        Ok(())
    }

    fn query(&self, query: &[u8]) -> Bytes {
        let response = match Query::decode(query) {
            Ok(query) => self.answer(&query),
            Err(_) => Response::Error(KvError::Malformed),
        };
        response.encode()
    }

    /// An image of the map, the session table and the last applied index, taken in O(1) (see
    /// the module docs). It writes [`SNAPSHOT_VERSION`] images. The configuration is not
    /// included; it comes from the replica's setup.
    fn snapshot(&self) -> Box<dyn SnapshotImage> {
        Box::new(self.image())
    }

    /// Replaces the whole state with the snapshot's, keeping this store's configuration.
    ///
    /// # Errors
    /// [`RestoreError`] when the bytes do not decode (unknown version, truncated, trailing
    /// bytes, a number not in its shortest form) or describe an impossible state (unsorted
    /// keys, a session used after the last applied index); the state is then left unchanged.
    fn restore(&mut self, input: &mut dyn Read) -> Result<(), RestoreError> {
        let restored = KvStore::read_image(self.config, input)?;
        let entropy = std::mem::take(&mut self.entropy);
        *self = restored;
        self.entropy = entropy;
        Ok(())
    }
}

impl KvStore {
    /// The snapshot image as its concrete type (what [`StateMachine::snapshot`] boxes).
    #[must_use]
    pub fn image(&self) -> KvSnapshot {
        KvSnapshot {
            last_applied: self.last_applied,
            clock_ms: self.clock_ms,
            data: self.data.clone(),
            sessions: self.sessions.clone(),
            bound: self.bound.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use chorus_core::Prng;

    use super::*;

    fn b(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    /// A store plus the next log index, so tests read as a sequence of commands.
    struct Harness {
        store: KvStore,
        next_index: u64,
    }

    impl Harness {
        fn new(config: KvConfig) -> Harness {
            Harness {
                store: KvStore::new(config),
                next_index: 1,
            }
        }

        fn apply_bytes(&mut self, bytes: &[u8]) -> Response {
            let index = LogIndex(self.next_index);
            self.next_index += 1;
            let output = self.store.apply(index, bytes);
            Response::decode(&output).expect("apply returns a decodable response")
        }

        fn apply(&mut self, command: Command) -> Response {
            self.apply_bytes(&command.encode())
        }

        fn op(&mut self, op: Op) -> Response {
            self.apply(Command::Unsessioned(op))
        }

        fn register(&mut self) -> ClientId {
            match self.apply(Command::Register) {
                Response::Registered(client) => client,
                other => panic!("register answered {other:?}"),
            }
        }

        fn request(&mut self, client: ClientId, seq: u64, op: Op) -> Response {
            self.apply(Command::Request { client, seq, op })
        }

        /// Skips log indexes, as if they held commands of no interest to this test.
        fn skip(&mut self, entries: u64) {
            self.next_index += entries;
        }

        fn query(&self, query: &Query) -> Response {
            Response::decode(&self.store.query(&query.encode())).expect("decodable response")
        }
    }

    fn put(key: &str, value: &str) -> Op {
        Op::Put {
            key: b(key),
            value: b(value),
        }
    }

    fn append(key: &str, value: &str) -> Op {
        Op::Append {
            key: b(key),
            value: b(value),
        }
    }

    fn cas(key: &str, from: &str, to: &str) -> Op {
        Op::Cas {
            key: b(key),
            from: b(from),
            to: b(to),
        }
    }

    fn incr(key: &str, delta: i64) -> Op {
        Op::IncrBy { key: b(key), delta }
    }

    fn get(key: &str) -> Op {
        Op::Get { key: b(key) }
    }

    fn value(text: &str) -> Response {
        Response::Value(Some(b(text)))
    }

    /// Proves get, put and delete behave as a map, including on absent keys.
    #[test]
    fn get_put_delete() {
        let mut h = Harness::new(KvConfig::default());
        assert_eq!(h.op(get("x")), Response::Value(None));
        assert_eq!(h.op(put("x", "1")), Response::Ok);
        assert_eq!(h.op(get("x")), value("1"));
        assert_eq!(h.op(put("x", "2")), Response::Ok);
        assert_eq!(h.store.get(b"x"), Some(&b("2")));
        assert_eq!(h.op(Op::Delete { key: b("x") }), Response::Deleted(true));
        assert_eq!(h.op(Op::Delete { key: b("x") }), Response::Deleted(false));
        assert_eq!(h.op(get("x")), Response::Value(None));
        assert!(h.store.is_empty());
    }

    /// Proves append treats an absent key as "" and answers the new length.
    #[test]
    fn append_to_absent_key_treats_it_as_empty() {
        let mut h = Harness::new(KvConfig::default());
        assert_eq!(h.op(append("x", "ab")), Response::Length(2));
        assert_eq!(h.op(append("x", "cde")), Response::Length(5));
        assert_eq!(h.op(append("x", "")), Response::Length(5));
        assert_eq!(h.store.get(b"x"), Some(&b("abcde")));
    }

    /// Proves cas swaps only when the key exists and equals `from`; an absent key never
    /// matches, not even an empty `from`.
    #[test]
    fn cas_swaps_only_an_existing_equal_value() {
        let mut h = Harness::new(KvConfig::default());
        assert_eq!(h.op(cas("x", "", "1")), Response::Swapped(false));
        assert_eq!(h.store.get(b"x"), None);
        assert_eq!(h.op(put("x", "")), Response::Ok);
        assert_eq!(h.op(cas("x", "", "1")), Response::Swapped(true));
        assert_eq!(h.op(cas("x", "0", "2")), Response::Swapped(false));
        assert_eq!(h.store.get(b"x"), Some(&b("1")));
        assert_eq!(h.op(cas("x", "1", "2")), Response::Swapped(true));
        assert_eq!(h.store.get(b"x"), Some(&b("2")));
    }

    /// Proves incr_by counts an absent key as 0, stores a decimal string, and refuses
    /// non-integers and overflow without changing the value.
    #[test]
    fn incr_by_adds_or_refuses() {
        let mut h = Harness::new(KvConfig::default());
        assert_eq!(h.op(incr("n", 5)), Response::Integer(5));
        assert_eq!(h.op(incr("n", -7)), Response::Integer(-2));
        assert_eq!(h.store.get(b"n"), Some(&b("-2")));
        assert_eq!(h.op(put("n", "41")), Response::Ok);
        assert_eq!(h.op(incr("n", 1)), Response::Integer(42));

        for bad in ["", "abc", "1.5", " 1", "99999999999999999999"] {
            h.op(put("s", bad));
            assert_eq!(
                h.op(incr("s", 1)),
                Response::Error(KvError::NotAnInteger),
                "{bad:?}"
            );
            assert_eq!(h.store.get(b"s"), Some(&b(bad)));
        }

        h.op(put("m", &i64::MAX.to_string()));
        assert_eq!(h.op(incr("m", 1)), Response::Error(KvError::Overflow));
        assert_eq!(h.store.get(b"m"), Some(&b(&i64::MAX.to_string())));
        assert_eq!(h.op(incr("m", -1)), Response::Integer(i64::MAX - 1));
        assert_eq!(h.op(incr("absent", i64::MIN)), Response::Integer(i64::MIN));
        assert_eq!(h.op(incr("absent", -1)), Response::Error(KvError::Overflow));
    }

    /// Proves multi_put writes every pair in order, so a repeated key keeps its last value.
    #[test]
    fn multi_put_writes_pairs_in_order() {
        let mut h = Harness::new(KvConfig::default());
        let pairs = vec![(b("a"), b("1")), (b("b"), b("2")), (b("a"), b("3"))];
        assert_eq!(h.op(Op::MultiPut { pairs }), Response::Ok);
        let all: Vec<_> = h
            .store
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(
            all,
            vec![
                (b("a"), Value::String(b("3"))),
                (b("b"), Value::String(b("2")))
            ]
        );
        assert_eq!(h.store.len(), 2);
    }

    /// Proves conditional sets follow Redis `SET` with `NX`, `XX`, `IFEQ` and `GET`: the
    /// previous value is always reported, and the write happens only when the condition holds.
    #[test]
    fn set_applies_only_when_its_condition_holds() {
        let mut h = Harness::new(KvConfig::default());
        let set = |key: &str, value: &str, condition: SetCondition| Op::Set {
            key: b(key),
            value: b(value),
            condition,
        };
        let outcome = |applied: bool, previous: Option<&str>| Response::Set {
            applied,
            previous: previous.map(b),
        };
        assert_eq!(
            h.op(set("k", "1", SetCondition::IfPresent)),
            outcome(false, None)
        );
        assert_eq!(
            h.op(set("k", "1", SetCondition::IfAbsent)),
            outcome(true, None)
        );
        assert_eq!(
            h.op(set("k", "2", SetCondition::IfAbsent)),
            outcome(false, Some("1"))
        );
        assert_eq!(
            h.op(set("k", "3", SetCondition::IfEqual(b("2")))),
            outcome(false, Some("1"))
        );
        assert_eq!(
            h.op(set("k", "3", SetCondition::IfEqual(b("1")))),
            outcome(true, Some("1"))
        );
        assert_eq!(
            h.op(set("k", "4", SetCondition::Always)),
            outcome(true, Some("3"))
        );
        assert_eq!(
            h.op(set("gone", "4", SetCondition::IfEqual(b("")))),
            outcome(false, None)
        );
        assert_eq!(h.store.get(b"k"), Some(&b("4")));
        assert_eq!(h.store.get(b"gone"), None);
    }

    /// Proves a multi-key delete counts each existing key once, and exists counts repeats.
    #[test]
    fn delete_many_and_exists_count_like_redis() {
        let mut h = Harness::new(KvConfig::default());
        h.op(put("a", "1"));
        h.op(put("b", "2"));
        assert_eq!(
            h.query(&Query::Exists {
                keys: vec![b("a"), b("a"), b("zz")]
            }),
            Response::Integer(2)
        );
        assert_eq!(
            h.op(Op::DeleteMany {
                keys: vec![b("a"), b("a"), b("b"), b("c")]
            }),
            Response::Integer(2)
        );
        assert!(h.store.is_empty());
    }

    /// Proves queries read the map without the log and refuse malformed bytes.
    #[test]
    fn queries_read_the_map() {
        let mut h = Harness::new(KvConfig::default());
        h.op(put("a", "1"));
        h.op(put("c", "3"));
        assert_eq!(h.query(&Query::Get { key: b("a") }), value("1"));
        assert_eq!(h.query(&Query::Get { key: b("b") }), Response::Value(None));
        assert_eq!(
            h.query(&Query::MultiGet {
                keys: vec![b("c"), b("b"), b("a")]
            }),
            Response::Values(vec![Some(b("3")), None, Some(b("1"))])
        );
        assert_eq!(h.query(&Query::Len), Response::Integer(2));
        let malformed = h.store.query(&[0xff, 0xff]);
        assert_eq!(
            Response::decode(&malformed),
            Ok(Response::Error(KvError::Malformed))
        );
    }

    /// Proves a session's id is the index of its `Register` command.
    #[test]
    fn register_names_the_session_after_its_index() {
        let mut h = Harness::new(KvConfig::default());
        h.skip(4);
        assert_eq!(h.register(), ClientId(5));
        assert_eq!(h.register(), ClientId(6));
        assert_eq!(h.store.sessions_len(), 2);
        assert!(h.store.has_session(ClientId(5)));
    }

    /// Proves exactly-once: a retried request gets the cached reply and changes nothing, an
    /// older request is refused, and a newer one executes.
    #[test]
    fn retried_request_returns_cached_reply_without_re_executing() {
        let mut h = Harness::new(KvConfig::default());
        let client = h.register();
        assert_eq!(h.request(client, 1, append("x", "a")), Response::Length(1));
        // The retry would answer Length(2) if it re-executed.
        assert_eq!(h.request(client, 1, append("x", "a")), Response::Length(1));
        assert_eq!(h.store.get(b"x"), Some(&b("a")));
        // The cache answers by seq, whatever op the retry carries.
        assert_eq!(h.request(client, 1, put("x", "z")), Response::Length(1));
        assert_eq!(h.store.get(b"x"), Some(&b("a")));

        assert_eq!(h.request(client, 2, append("x", "b")), Response::Length(2));
        assert_eq!(
            h.request(client, 1, append("x", "a")),
            Response::Error(KvError::StaleRequest)
        );
        assert_eq!(h.store.get(b"x"), Some(&b("ab")));
        // Gaps in seq are allowed: the client may have abandoned a request.
        assert_eq!(h.request(client, 10, get("x")), value("ab"));
        assert_eq!(
            h.request(client, 2, append("x", "b")),
            Response::Error(KvError::StaleRequest)
        );
    }

    #[test]
    fn incr_reads_stored_integers_exactly_as_redis_does() {
        for good in [
            "0",
            "7",
            "-7",
            "10",
            "9223372036854775807",
            "-9223372036854775808",
        ] {
            assert_eq!(
                parse_integer(good.as_bytes()),
                Some(good.parse().unwrap()),
                "{good}"
            );
        }
        for bad in [
            "",
            "-",
            "01",
            "00",
            "-0",
            "-01",
            "+1",
            " 1",
            "1 ",
            "1.0",
            "0x1",
            "9223372036854775808",
            "-9223372036854775809",
        ] {
            assert_eq!(parse_integer(bad.as_bytes()), None, "{bad:?}");
        }
    }

    /// Proves refused operations are cached too, so a retry cannot turn a refusal into a
    /// success after the state changed.
    #[test]
    fn refusals_are_cached_like_successes() {
        let mut h = Harness::new(KvConfig::default());
        let client = h.register();
        h.op(put("n", "x"));
        assert_eq!(
            h.request(client, 1, incr("n", 1)),
            Response::Error(KvError::NotAnInteger)
        );
        h.op(put("n", "1"));
        assert_eq!(
            h.request(client, 1, incr("n", 1)),
            Response::Error(KvError::NotAnInteger)
        );
        assert_eq!(h.store.get(b"n"), Some(&b("1")));
    }

    /// Proves seq 0 on a fresh session is refused: sequence numbers start at 1.
    #[test]
    fn seq_zero_is_refused() {
        let mut h = Harness::new(KvConfig::default());
        let client = h.register();
        assert_eq!(
            h.request(client, 0, put("x", "1")),
            Response::Error(KvError::StaleRequest)
        );
        assert!(h.store.is_empty());
    }

    /// Proves a request naming a session that was never opened is refused and changes nothing.
    #[test]
    fn unknown_session_is_refused() {
        let mut h = Harness::new(KvConfig::default());
        assert_eq!(
            h.request(ClientId(99), 1, put("x", "1")),
            Response::Error(KvError::UnknownSession)
        );
        assert!(h.store.is_empty());
    }

    /// Proves a session expires once unused for more than `session_expiry_entries` indexes,
    /// counted in log indexes, and not a moment earlier.
    #[test]
    fn session_expires_after_expiry_entries_of_log() {
        let config = KvConfig {
            session_expiry_entries: 10,
            ..KvConfig::default()
        };
        let mut h = Harness::new(config);
        let client = h.register(); // index 1
        h.skip(9);
        // Index 11: unused for exactly 10 entries, still alive; this use renews it.
        assert_eq!(h.request(client, 1, put("x", "1")), Response::Ok);
        h.skip(10);
        // Index 22: unused for 11 entries since index 11.
        assert_eq!(
            h.request(client, 2, put("x", "2")),
            Response::Error(KvError::UnknownSession)
        );
        assert_eq!(h.store.get(b"x"), Some(&b("1")));
        assert_eq!(h.store.sessions_len(), 0);
    }

    /// Proves expiry happens on any apply, including one that does not name the session,
    /// and that retries keep a session alive.
    #[test]
    fn expiry_is_checked_on_every_apply_and_retries_renew() {
        let config = KvConfig {
            session_expiry_entries: 3,
            ..KvConfig::default()
        };
        let mut h = Harness::new(config);
        let retrying = h.register(); // 1
        let idle = h.register(); // 2
        assert_eq!(
            h.request(retrying, 1, append("x", "a")),
            Response::Length(1)
        ); // 3
        h.skip(2);
        assert_eq!(
            h.request(retrying, 1, append("x", "a")),
            Response::Length(1)
        ); // 6
        assert!(!h.store.has_session(idle));
        h.skip(2);
        assert_eq!(
            h.request(retrying, 1, append("x", "a")),
            Response::Length(1)
        ); // 9
        h.op(get("x")); // 10
        assert!(h.store.has_session(retrying));
        assert_eq!(h.store.get(b"x"), Some(&b("a")));
    }

    /// Proves that registering beyond `sessions_max` expires the least recently used session,
    /// where use includes requests, not only registration.
    #[test]
    fn sessions_max_expires_the_least_recently_used() {
        let config = KvConfig {
            sessions_max: 2,
            ..KvConfig::default()
        };
        let mut h = Harness::new(config);
        let first = h.register();
        let second = h.register();
        assert_eq!(h.request(first, 1, put("x", "1")), Response::Ok);
        let third = h.register();
        assert_eq!(h.store.sessions_len(), 2);
        assert!(h.store.has_session(first));
        assert!(!h.store.has_session(second));
        assert!(h.store.has_session(third));
        assert_eq!(
            h.request(second, 1, put("x", "2")),
            Response::Error(KvError::UnknownSession)
        );
    }

    /// Proves `sessions_max == 0` still keeps the newest session, as documented.
    #[test]
    fn sessions_max_zero_keeps_the_newest_session() {
        let mut h = Harness::new(KvConfig {
            sessions_max: 0,
            ..KvConfig::default()
        });
        let first = h.register();
        let second = h.register();
        assert!(!h.store.has_session(first));
        assert!(h.store.has_session(second));
        assert_eq!(h.request(second, 1, put("x", "1")), Response::Ok);
    }

    /// Proves undecodable commands are answered `Malformed`, change no state, and still count
    /// as applied (the index moves on).
    #[test]
    fn malformed_command_changes_nothing() {
        let mut h = Harness::new(KvConfig::default());
        let client = h.register();
        h.request(client, 1, put("x", "1"));
        let digest = h.store.state_digest();
        for bytes in [&[][..], &[0xff], &[crate::CODEC_VERSION, 0x7f], &[1, 0, 0]] {
            assert_eq!(h.apply_bytes(bytes), Response::Error(KvError::Malformed));
            assert_eq!(h.store.state_digest(), digest);
        }
        assert_eq!(h.store.last_applied(), LogIndex(6));
    }

    /// Proves random bytes never panic `apply`, `query` or `restore`.
    #[test]
    fn random_bytes_never_panic() {
        let mut h = Harness::new(KvConfig::default());
        let mut prng = Prng::new(7);
        for _ in 0..20_000 {
            let len = prng.index(20);
            let mut bytes: Vec<u8> = (0..len).map(|_| prng.next_u64() as u8).collect();
            if let Some(first) = bytes.first_mut() {
                *first = crate::CODEC_VERSION;
            }
            h.apply_bytes(&bytes);
            let _ = h.store.query(&bytes);
            let mut scratch = KvStore::new(KvConfig::default());
            let _ = scratch.restore_bytes(&bytes);
        }
    }

    /// Proves `apply` refuses an index that does not increase: replaying or reordering the
    /// log would fork the replicas.
    #[test]
    #[should_panic(expected = "indexes must strictly increase")]
    fn apply_asserts_increasing_indexes() {
        let mut store = KvStore::new(KvConfig::default());
        store.apply(LogIndex(2), &Command::Register.encode());
        store.apply(LogIndex(2), &Command::Register.encode());
    }

    /// Proves index 0 ("before the first entry") is never applied.
    #[test]
    #[should_panic(expected = "indexes must strictly increase")]
    fn apply_refuses_index_zero() {
        let mut store = KvStore::new(KvConfig::default());
        store.apply(LogIndex(0), &Command::Register.encode());
    }

    /// Applies a seeded random workload of sessioned and unsessioned commands.
    fn random_workload(h: &mut Harness, prng: &mut Prng, commands: usize) {
        let keys = ["a", "b", "c", "n"];
        let mut clients: Vec<(ClientId, u64)> = Vec::new();
        for _ in 0..commands {
            let key = keys[prng.index(keys.len())];
            let op = match prng.index(7) {
                0 => get(key),
                1 => put(key, &prng.range(0, 5).to_string()),
                2 => Op::Delete { key: b(key) },
                3 => append(key, "x"),
                4 => cas(key, &prng.range(0, 5).to_string(), "4"),
                5 => incr(key, prng.range(0, 3) as i64 - 1),
                _ => Op::MultiPut {
                    pairs: vec![(b(key), b("1")), (b("n"), b("2"))],
                },
            };
            match prng.index(5) {
                0 => {
                    let client = h.register();
                    clients.push((client, 0));
                }
                1 => {
                    h.op(op);
                }
                _ if clients.is_empty() => {
                    h.op(op);
                }
                _ => {
                    let slot = prng.index(clients.len());
                    let (client, seq) = &mut clients[slot];
                    // Mostly new requests, sometimes retries.
                    if *seq == 0 || prng.chance(0.7) {
                        *seq += 1;
                    }
                    h.request(*client, *seq, op);
                }
            }
            if prng.chance(0.1) {
                h.skip(prng.range(1, 50));
            }
        }
    }

    fn small_config() -> KvConfig {
        KvConfig {
            session_expiry_entries: 40,
            sessions_max: 5,
            ..KvConfig::default()
        }
    }

    /// Proves determinism: two stores fed the same commands reach equal states, digests and
    /// snapshots, and a store fed different commands does not share the digest.
    #[test]
    fn same_commands_give_same_digest() {
        for seed in 0..20 {
            let mut first = Harness::new(small_config());
            let mut second = Harness::new(small_config());
            random_workload(&mut first, &mut Prng::new(seed), 300);
            random_workload(&mut second, &mut Prng::new(seed), 300);
            assert_eq!(first.store, second.store);
            assert_eq!(first.store.state_digest(), second.store.state_digest());
            assert_eq!(first.store.snapshot_bytes(), second.store.snapshot_bytes());

            second.op(put("extra", "1"));
            assert_ne!(first.store.state_digest(), second.store.state_digest());
        }
    }

    /// Proves the digest covers the session table, not only the map.
    #[test]
    fn digest_covers_sessions() {
        let mut h = Harness::new(KvConfig::default());
        let empty = h.store.state_digest();
        let client = h.register();
        let registered = h.store.state_digest();
        assert_ne!(empty, registered);
        h.request(client, 1, get("x"));
        assert_ne!(registered, h.store.state_digest());
        assert!(h.store.is_empty());
    }

    /// Proves snapshot → restore reproduces the whole state, sessions included: a retry after
    /// restore returns the cached reply instead of executing again, and both stores then
    /// evolve identically.
    #[test]
    fn snapshot_restore_round_trips_sessions() {
        let mut h = Harness::new(small_config());
        random_workload(&mut h, &mut Prng::new(11), 200);
        let client = h.register();
        assert_eq!(
            h.request(client, 1, append("log", "a")),
            Response::Length(1)
        );

        let snapshot = h.store.snapshot_bytes();
        let mut restored = Harness::new(small_config());
        restored
            .store
            .restore_bytes(&snapshot)
            .expect("own snapshot restores");
        restored.next_index = h.next_index;
        assert_eq!(restored.store, h.store);
        assert_eq!(restored.store.snapshot_bytes(), snapshot);
        assert_eq!(restored.store.state_digest(), h.store.state_digest());
        assert_eq!(restored.store.last_applied(), h.store.last_applied());

        // The retry would answer Length(2) if the session had been lost or re-executed.
        assert_eq!(
            restored.request(client, 1, append("log", "a")),
            Response::Length(1)
        );
        assert_eq!(restored.store.get(b"log"), Some(&b("a")));

        h.request(client, 1, append("log", "a"));
        let mut prng_first = Prng::new(12);
        let mut prng_second = Prng::new(12);
        random_workload(&mut h, &mut prng_first, 200);
        random_workload(&mut restored, &mut prng_second, 200);
        assert_eq!(restored.store, h.store);
    }

    /// Proves restore keeps the restoring store's configuration, which is local setup.
    #[test]
    fn restore_keeps_local_config() {
        let mut h = Harness::new(KvConfig::default());
        h.register();
        let mut other = KvStore::new(small_config());
        other
            .restore_bytes(&h.store.snapshot_bytes())
            .expect("restores");
        assert_eq!(other.config(), small_config());
        assert_eq!(other.sessions_len(), 1);
    }

    /// Proves restore refuses bad bytes (empty, wrong version, truncated, trailing, flipped)
    /// and leaves the state exactly as it was.
    #[test]
    fn restore_refuses_bad_bytes_and_keeps_state() {
        let mut h = Harness::new(small_config());
        random_workload(&mut h, &mut Prng::new(3), 100);
        let before = h.store.clone();
        let good = h.store.snapshot_bytes();

        let mut wrong_version = good.to_vec();
        wrong_version[0] = SNAPSHOT_VERSION + 1;
        let mut trailing = good.to_vec();
        trailing.push(0);
        let mut bad: Vec<Vec<u8>> = vec![Vec::new(), wrong_version, trailing];
        bad.extend((0..good.len()).map(|cut| good[..cut].to_vec()));

        for bytes in &bad {
            assert!(h.store.restore_bytes(bytes).is_err(), "{bytes:?} restored");
            assert_eq!(h.store, before);
        }
        // Flipped bytes may decode to another valid state; they must only never panic, and a
        // refusal must leave the state alone.
        for position in 0..good.len() {
            let mut flipped = good.to_vec();
            flipped[position] ^= 0x55;
            let mut scratch = before.clone();
            if scratch.restore_bytes(&flipped).is_err() {
                assert_eq!(scratch, before);
            }
        }
    }

    /// Proves restore refuses a snapshot that decodes but describes an impossible state.
    #[test]
    fn restore_refuses_impossible_states() {
        let session = |last_seq: u64, last_used: u64| Session {
            last_seq,
            last_response: (last_seq > 0).then_some(Response::Ok),
            last_used: LogIndex(last_used),
        };
        let encode =
            |last_applied: u64, data: Vec<(Bytes, Bytes)>, sessions: Vec<(ClientId, Session)>| {
                let mut out = Vec::new();
                let data: Vec<(Bytes, Record)> = data
                    .into_iter()
                    .map(|(key, value)| {
                        let record = Record::new(Value::String(value), None);
                        (key, record)
                    })
                    .collect();
                write_image(
                    &mut out,
                    (LogIndex(last_applied), 0),
                    (data.len(), data.iter().map(|(key, record)| (key, record))),
                    (
                        sessions.len(),
                        sessions.iter().map(|(client, session)| (client, session)),
                    ),
                    (0, std::iter::empty()),
                )
                .expect("writes to a Vec");
                out
            };
        let mut store = KvStore::new(KvConfig::default());
        let valid = encode(
            9,
            vec![(b("a"), b("1")), (b("b"), b("2"))],
            vec![(ClientId(3), session(1, 9))],
        );
        store.restore_bytes(&valid).expect("valid state restores");
        let before = store.clone();

        let impossible = [
            encode(9, vec![(b("b"), b("1")), (b("a"), b("2"))], vec![]),
            encode(9, vec![(b("a"), b("1")), (b("a"), b("2"))], vec![]),
            encode(
                9,
                vec![],
                vec![(ClientId(4), session(0, 4)), (ClientId(3), session(0, 3))],
            ),
            encode(9, vec![], vec![(ClientId(3), session(1, 10))]),
            encode(9, vec![], vec![(ClientId(5), session(1, 4))]),
            encode(
                9,
                vec![],
                vec![(
                    ClientId(3),
                    Session {
                        last_seq: 1,
                        last_response: None,
                        last_used: LogIndex(4),
                    },
                )],
            ),
        ];
        for bytes in &impossible {
            assert!(store.restore_bytes(bytes).is_err());
            assert_eq!(store, before);
        }
    }

    /// Proves a snapshot image is independent of later writes: taken before a workload, it
    /// still writes the state as of when it was taken, which restores to an equal store.
    #[test]
    fn an_image_is_unaffected_by_later_applies() {
        let mut h = Harness::new(small_config());
        random_workload(&mut h, &mut Prng::new(5), 200);
        let before = h.store.clone();
        let image = h.store.snapshot();
        random_workload(&mut h, &mut Prng::new(6), 200);
        let mut written = Vec::new();
        image.write_to(&mut written).expect("writes to a Vec");
        assert_eq!(written, before.snapshot_bytes().to_vec());
        let mut restored = KvStore::new(small_config());
        restored.restore_bytes(&written).expect("restores");
        assert_eq!(restored, before);
        assert_ne!(restored, h.store);
    }

    fn typed(op: crate::typed::TypedOp) -> Op {
        Op::Typed(op)
    }

    /// Applies one command of every type, so that snapshots carry each kind of value.
    fn typed_workload(h: &mut Harness) {
        use crate::typed::{Score, TypedOp, ZAddFlags};
        h.op(put("s", "v"));
        h.op(typed(TypedOp::HSet {
            key: b("h"),
            pairs: vec![(b("f"), b("1")), (b("g"), b("2"))],
            legacy_ok: false,
        }));
        h.op(typed(TypedOp::Push {
            key: b("l"),
            values: vec![b("b"), b("a"), b("b")],
            left: false,
            only_if_exists: false,
        }));
        h.op(typed(TypedOp::SAdd {
            key: b("set"),
            members: vec![b("x"), b("y")],
        }));
        h.op(typed(TypedOp::ZAdd {
            key: b("z"),
            flags: ZAddFlags::default(),
            pairs: vec![(Score(1.5), b("m")), (Score(-0.0), b("n"))],
        }));
    }

    /// Proves typed values survive snapshot and restore, and that the restored store answers
    /// typed commands as the original does.
    #[test]
    fn typed_values_round_trip_through_snapshots() {
        use crate::typed::{Reply, TypedOp};
        let mut h = Harness::new(KvConfig::default());
        typed_workload(&mut h);
        let snapshot = h.store.snapshot_bytes();
        assert_eq!(snapshot[0], SNAPSHOT_VERSION);
        let mut restored = Harness::new(KvConfig::default());
        restored.store.restore_bytes(&snapshot).expect("restores");
        restored.next_index = h.next_index;
        assert_eq!(restored.store, h.store);
        assert_eq!(restored.store.snapshot_bytes(), snapshot);
        assert_eq!(restored.store.state_digest(), h.store.state_digest());
        let range = Op::Typed(TypedOp::LRange {
            key: b("l"),
            start: 0,
            stop: -1,
        });
        assert_eq!(restored.op(range.clone()), h.op(range));
        assert_eq!(
            h.query(&Query::Typed(TypedOp::Type { key: b("z") })),
            Response::Reply(Reply::Status("zset".to_owned()))
        );
        // Every strict prefix is refused.
        for cut in 0..snapshot.len() {
            let mut scratch = KvStore::new(KvConfig::default());
            assert!(scratch.restore_bytes(&snapshot[..cut]).is_err(), "{cut}");
        }
    }

    /// Proves a version-2 snapshot (strings only, written before typed values) still restores.
    #[test]
    fn version_two_snapshots_still_restore() {
        // Version 2, last applied 4, two keys, no sessions.
        let mut bytes = vec![2, 4, 2];
        bytes.extend_from_slice(&[1, b'a', 1, b'1', 1, b'b', 2, b'2', b'2', 0]);
        let mut store = KvStore::new(KvConfig::default());
        store.restore_bytes(&bytes).expect("version 2 restores");
        assert_eq!(store.get(b"a"), Some(&b("1")));
        assert_eq!(store.get(b"b"), Some(&b("22")));
        assert_eq!(store.last_applied(), LogIndex(4));
        assert_eq!(store.snapshot_bytes()[0], SNAPSHOT_VERSION);
    }

    /// Proves restore refuses typed values that break the invariants: empty collections,
    /// unsorted members, NaN scores, unknown tags.
    #[test]
    fn restore_refuses_impossible_typed_values() {
        let image = |value: &[u8]| {
            let mut bytes = vec![SNAPSHOT_VERSION, 1, 0, 1, 1, b'k', 0, 0];
            bytes.extend_from_slice(value);
            // No sessions, no bound sessions.
            bytes.extend_from_slice(&[0, 0]);
            bytes
        };
        let mut store = KvStore::new(KvConfig::default());
        store
            .restore_bytes(&image(&[TAG_SET, 2, 1, b'a', 1, b'b']))
            .expect("a valid set restores");
        for value in [
            &[TAG_SET, 0][..],
            &[TAG_SET, 2, 1, b'b', 1, b'a'],
            &[TAG_SET, 2, 1, b'a', 1, b'a'],
            &[TAG_HASH, 0],
            &[TAG_LIST, 0],
            &[TAG_SORTED_SET, 1, 1, b'm', 0, 0, 0, 0, 0, 0, 0xf8, 0x7f],
            &[9, 0],
        ] {
            assert!(store.restore_bytes(&image(value)).is_err(), "{value:?}");
        }
    }

    fn at(now_ms: u64, op: Op) -> Command {
        Command::UnsessionedAt { now_ms, op }
    }

    fn set_expiring(key: &str, value: &str, expiry: SetExpiry) -> Op {
        Op::SetExpiring {
            key: b(key),
            value: b(value),
            condition: SetCondition::Always,
            expiry,
        }
    }

    fn ttl(key: &str, milliseconds: bool) -> Op {
        typed(crate::typed::TypedOp::Ttl {
            key: b(key),
            milliseconds,
            absolute: false,
        })
    }

    fn integer(value: i64) -> Response {
        Response::Reply(crate::typed::Reply::Integer(value))
    }

    /// Proves a relative expiry counts from the log clock of the entry that applies it, the
    /// key is gone from the first entry whose clock reaches its time (a tick, or any stamped
    /// command), and never before; unstamped commands do not move the clock.
    #[test]
    fn keys_expire_by_the_log_clock() {
        let mut h = Harness::new(KvConfig::default());
        let expiry = SetExpiry::At(crate::typed::Deadline::After(100));
        let set = h.apply(at(1_000, set_expiring("k", "v", expiry)));
        assert!(matches!(set, Response::Set { applied: true, .. }));
        assert_eq!(h.store.expires_at(b"k"), Some(1_100));
        assert_eq!(h.store.next_deadline(), Some(1_100));
        assert_eq!(h.apply(at(1_050, ttl("k", true))), integer(50));
        assert_eq!(
            h.apply(at(1_040, ttl("k", false))),
            integer(0),
            "the clock never goes back"
        );
        assert_eq!(h.store.clock_ms(), 1_050);
        // An unstamped command does not move the clock, however much later it runs.
        assert_eq!(h.op(get("k")), value("v"));
        assert_eq!(h.apply(Command::Tick { now_ms: 1_099 }), Response::Ok);
        assert_eq!(h.store.get(b"k"), Some(&b("v")));
        assert_eq!(h.apply(Command::Tick { now_ms: 1_100 }), Response::Ok);
        assert_eq!(h.store.get(b"k"), None);
        assert_eq!(h.store.next_deadline(), None);
        assert_eq!(h.apply(at(1_200, ttl("k", true))), integer(-2));
    }

    /// Proves which commands keep a key's expiry (APPEND, INCR, KEEPTTL, a refused SET NX)
    /// and which drop it (SET, MSET, PERSIST), as in Redis.
    #[test]
    fn overwrites_drop_the_expiry_and_changes_keep_it() {
        let mut h = Harness::new(KvConfig::default());
        let in_a_minute = SetExpiry::At(crate::typed::Deadline::After(60_000));
        h.apply(at(1_000, set_expiring("k", "1", in_a_minute)));
        h.apply(at(1_000, append("k", "0")));
        h.apply(at(1_000, incr("k", 1)));
        assert_eq!(h.store.get(b"k"), Some(&b("11")));
        assert_eq!(h.store.expires_at(b"k"), Some(61_000));
        h.apply(at(2_000, set_expiring("k", "x", SetExpiry::Keep)));
        assert_eq!(h.store.expires_at(b"k"), Some(61_000));
        let refused = h.apply(at(
            2_000,
            Op::Set {
                key: b("k"),
                value: b("y"),
                condition: SetCondition::IfAbsent,
            },
        ));
        assert!(matches!(refused, Response::Set { applied: false, .. }));
        assert_eq!(h.store.expires_at(b"k"), Some(61_000));
        h.apply(at(2_000, put("k", "z")));
        assert_eq!(h.store.expires_at(b"k"), None);
        h.apply(at(2_000, set_expiring("k", "x", in_a_minute)));
        let persist = typed(crate::typed::TypedOp::Persist { key: b("k") });
        assert_eq!(h.apply(at(2_000, persist.clone())), integer(1));
        assert_eq!(h.apply(at(2_000, persist)), integer(0));
        assert_eq!(h.apply(at(2_000, ttl("k", false))), integer(-1));
        // An absolute time already past removes the key at once.
        let past = SetExpiry::At(crate::typed::Deadline::At(5));
        h.apply(at(2_000, set_expiring("k", "x", past)));
        assert!(h.store.is_empty());
    }

    /// Proves a snapshot carries the log clock and every key's expiry, and that the restored
    /// store expires the same keys at the same entry as the original.
    #[test]
    fn snapshots_carry_the_clock_and_the_expiries() {
        let mut h = Harness::new(KvConfig::default());
        for (key, after) in [("a", 10), ("b", 20), ("c", 30)] {
            let expiry = SetExpiry::At(crate::typed::Deadline::After(after));
            h.apply(at(1_000, set_expiring(key, "v", expiry)));
        }
        h.apply(at(1_000, put("forever", "v")));
        let mut restored = KvStore::new(KvConfig::default());
        restored
            .restore_bytes(&h.store.snapshot_bytes())
            .expect("restores");
        assert_eq!(restored, h.store);
        assert_eq!(restored.state_digest(), h.store.state_digest());
        assert_eq!(restored.clock_ms(), 1_000);
        assert_eq!(restored.next_deadline(), Some(1_010));
        let index = h.store.last_applied().next();
        let tick = Command::Tick { now_ms: 1_020 }.encode();
        h.store.apply(index, &tick);
        restored.apply(index, &tick);
        assert_eq!(restored, h.store);
        assert_eq!(restored.len(), 2);
        // A version-3 image (no clock, no expiry) still restores.
        let mut old = vec![3, 4, 1, 1, b'a', TAG_STRING, 1, b'1', 0];
        restored.restore_bytes(&old).expect("version 3 restores");
        assert_eq!(restored.get(b"a"), Some(&b("1")));
        assert_eq!(restored.clock_ms(), 0);
        old[0] = SNAPSHOT_VERSION + 1;
        assert!(restored.restore_bytes(&old).is_err());
        // A key whose expiry the image's own clock has reached was never written by a store.
        // version 4, applied 4, clock 100, one key "a" (expiry, version), a string, no sessions
        let image = |expiry_plus_one: u8, version: u8| {
            vec![
                SNAPSHOT_VERSION_NO_BOUND,
                4,
                100,
                1,
                1,
                b'a',
                expiry_plus_one,
                version,
                TAG_STRING,
                1,
                b'1',
                0,
            ]
        };
        assert!(restored.restore_bytes(&image(101, 0)).is_err());
        assert!(
            restored.restore_bytes(&image(102, 5)).is_err(),
            "written after applied"
        );
        restored
            .restore_bytes(&image(102, 3))
            .expect("a live expiry restores");
        assert_eq!(restored.expires_at(b"a"), Some(101));
    }

    /// Proves a key's version is the index of the last command that wrote it: reads, refused
    /// writes and writes to other keys leave it, removal resets it, and snapshots carry it.
    #[test]
    fn versions_follow_writes() {
        use crate::typed::TypedOp;
        let mut h = Harness::new(KvConfig::default());
        h.op(put("k", "1")); // index 1
        assert_eq!(h.store.version(b"k"), 1);
        h.op(get("k"));
        h.op(put("other", "x"));
        h.op(Op::Typed(TypedOp::HSet {
            key: b("k"),
            pairs: vec![(b("f"), b("v"))],
            legacy_ok: false,
        })); // WRONGTYPE, refused
        assert_eq!(h.store.version(b"k"), 1);
        h.op(append("k", "2")); // index 5
        assert_eq!(h.store.version(b"k"), 5);
        h.op(Op::Typed(TypedOp::SAdd {
            key: b("s"),
            members: vec![b("a")],
        }));
        h.op(Op::Typed(TypedOp::SAdd {
            key: b("s"),
            members: vec![b("b")],
        })); // index 7
        assert_eq!(h.store.version(b"s"), 7);
        let mut restored = KvStore::new(KvConfig::default());
        restored
            .restore_bytes(&h.store.snapshot_bytes())
            .expect("restores");
        assert_eq!((restored.version(b"k"), restored.version(b"s")), (5, 7));
        h.op(Op::Delete { key: b("k") });
        assert_eq!(h.store.version(b"k"), 0);
    }

    /// Proves a transaction runs its steps in order at one index when every watched key kept
    /// its version, and runs nothing when one changed (or appeared, or went).
    #[test]
    fn transactions_run_whole_or_not_at_all() {
        let mut h = Harness::new(KvConfig::default());
        h.op(put("k", "1")); // index 1
        let version =
            |h: &Harness, key: &str| match h.query(&Query::Versions { keys: vec![b(key)] }) {
                Response::Versions(versions) => versions[0],
                other => panic!("versions answered {other:?}"),
            };
        assert_eq!((version(&h, "k"), version(&h, "absent")), (1, 0));
        let transaction = |watched: Vec<(Bytes, u64)>| Command::TransactionAt {
            now_ms: 5,
            watched,
            steps: vec![
                Step::Write(incr("k", 1)),
                Step::Read(Query::Get { key: b("k") }),
                Step::Write(incr("k", 1)),
            ],
        };
        let ran = h.apply(transaction(vec![(b("k"), 1), (b("absent"), 0)]));
        assert_eq!(
            ran,
            Response::Transaction(Some(vec![
                Response::Integer(2),
                value("2"),
                Response::Integer(3)
            ]))
        );
        assert_eq!(h.store.version(b"k"), 2);
        assert_eq!(h.store.clock_ms(), 5);
        assert_eq!(
            h.apply(transaction(vec![(b("k"), 1)])),
            Response::Transaction(None)
        );
        h.op(put("absent", "now"));
        assert_eq!(
            h.apply(transaction(vec![(b("absent"), 0)])),
            Response::Transaction(None)
        );
        assert_eq!(h.store.get(b"k"), Some(&b("3")));
    }

    /// Proves `EXPIRE`'s conditions and its removal of a key given a time already past.
    #[test]
    fn expire_conditions_follow_redis() {
        let mut h = Harness::new(KvConfig::default());
        let expire = |key: &str, after: i64, condition: crate::typed::ExpireCondition| {
            typed(crate::typed::TypedOp::Expire {
                key: b(key),
                deadline: crate::typed::Deadline::After(after),
                condition,
            })
        };
        let flags = |nx, xx, gt, lt| crate::typed::ExpireCondition { nx, xx, gt, lt };
        let always = flags(false, false, false, false);
        let (if_none, if_some) = (
            flags(true, false, false, false),
            flags(false, true, false, false),
        );
        let (if_later, if_sooner) = (
            flags(false, false, true, false),
            flags(false, false, false, true),
        );
        assert_eq!(h.apply(at(1_000, expire("k", 10, always))), integer(0));
        h.apply(at(1_000, put("k", "v")));
        assert_eq!(h.apply(at(1_000, expire("k", 10, if_some))), integer(0));
        assert_eq!(h.apply(at(1_000, expire("k", 10, if_later))), integer(0));
        assert_eq!(h.apply(at(1_000, expire("k", 500, if_sooner))), integer(1));
        assert_eq!(h.apply(at(1_000, expire("k", 10, if_none))), integer(0));
        assert_eq!(h.apply(at(1_000, expire("k", 600, if_sooner))), integer(0));
        assert_eq!(h.apply(at(1_000, expire("k", 600, if_later))), integer(1));
        assert_eq!(h.store.expires_at(b"k"), Some(1_600));
        assert_eq!(h.apply(at(1_000, expire("k", 0, always))), integer(1));
        assert!(h.store.is_empty());
    }

    /// Proves `apply` after restore continues from the snapshot's index and refuses older ones.
    #[test]
    #[should_panic(expected = "indexes must strictly increase")]
    fn restore_sets_the_last_applied_index() {
        let mut h = Harness::new(KvConfig::default());
        h.skip(9);
        h.register(); // index 10
        let mut restored = KvStore::new(KvConfig::default());
        restored
            .restore_bytes(&h.store.snapshot_bytes())
            .expect("restores");
        assert_eq!(restored.last_applied(), LogIndex(10));
        restored.apply(LogIndex(10), &Command::Register.encode());
    }

    /// A primary that executes each command and a backup that only applies the effects, plus
    /// an active replica that applies the commands: all three must agree after every command.
    struct Passive {
        primary: KvStore,
        backup: KvStore,
        active: KvStore,
        next_index: u64,
    }

    impl Passive {
        fn new(config: KvConfig) -> Passive {
            Passive {
                primary: KvStore::new(config),
                backup: KvStore::new(config),
                active: KvStore::new(config),
                next_index: 1,
            }
        }

        fn run(&mut self, command: &Command) -> Response {
            let index = LogIndex(self.next_index);
            self.next_index += 1 + self.next_index % 3;
            let bytes = command.encode();
            let execution = StateMachine::execute(&mut self.primary, index, &bytes);
            let active_output = self.active.apply(index, &bytes);
            assert_eq!(execution.output, active_output, "{command:?}");
            assert_eq!(execution.effect[0], EFFECT_VERSION);
            self.backup
                .apply_effect(index, &execution.effect)
                .expect("an effect the primary wrote applies");
            assert_eq!(self.backup, self.primary, "{command:?}");
            assert_eq!(self.primary, self.active, "{command:?}");
            assert_eq!(self.backup.state_digest(), self.primary.state_digest());
            Response::decode(&execution.output).expect("decodable response")
        }
    }

    /// One random operation over a few keys, typed commands included.
    fn random_op(prng: &mut Prng) -> Op {
        use crate::typed::{Score, SetAlgebra, TypedOp, ZAddFlags};
        let keys = ["a", "b", "h", "l", "s", "z"];
        let key = b(keys[prng.index(keys.len())]);
        let other = b(keys[prng.index(keys.len())]);
        let member = b(["x", "y", "z"][prng.index(3)]);
        let typed = match prng.index(16) {
            0 => TypedOp::HSet {
                key,
                pairs: vec![(member, b("1"))],
                legacy_ok: false,
            },
            1 => TypedOp::HIncrBy {
                key,
                field: member,
                delta: 2,
            },
            2 => TypedOp::Push {
                key,
                values: vec![member, b("w")],
                left: prng.chance(0.5),
                only_if_exists: false,
            },
            3 => TypedOp::Pop {
                key,
                left: prng.chance(0.5),
                count: Some(prng.range(1, 3)),
            },
            4 => TypedOp::SAdd {
                key,
                members: vec![member],
            },
            5 => TypedOp::SPop {
                key,
                count: Some(prng.range(1, 3)),
            },
            6 => TypedOp::ZAdd {
                key,
                flags: ZAddFlags::default(),
                pairs: vec![(Score(prng.range(0, 9) as f64), member)],
            },
            7 => TypedOp::ZPop {
                key,
                max: prng.chance(0.5),
                count: None,
            },
            8 => TypedOp::Rename {
                from: key,
                to: other,
                only_if_absent: prng.chance(0.5),
            },
            9 => TypedOp::Copy {
                source: key,
                destination: other,
                replace: true,
            },
            10 => TypedOp::LMove {
                source: key,
                destination: other,
                from_left: true,
                to_left: false,
            },
            11 => TypedOp::SetAlgebra {
                algebra: SetAlgebra::Union,
                keys: vec![key, other.clone()],
                destination: Some(other),
            },
            12 if prng.chance(0.2) => TypedOp::FlushAll,
            12 | 13 => TypedOp::GetDel { key },
            _ => {
                return match prng.index(6) {
                    0 => put(keys[prng.index(keys.len())], "v"),
                    1 => Op::Delete { key },
                    2 => append(keys[prng.index(keys.len())], "x"),
                    3 => incr(keys[prng.index(keys.len())], 1),
                    4 => Op::DeleteMany {
                        keys: vec![key, other],
                    },
                    _ => get(keys[prng.index(keys.len())]),
                };
            }
        };
        Op::Typed(typed)
    }

    /// Proves the effect of every command is its whole state change: a backup that only
    /// applies effects stays equal (map, sessions, cached replies, last-use order) to the
    /// primary that executed, and to an active replica, over random workloads of string and
    /// typed commands, sessions, retries, stale requests and session expiry.
    #[test]
    fn a_backup_applying_effects_stays_equal_to_the_primary() {
        for seed in 0..40 {
            let mut prng = Prng::new(seed);
            let mut passive = Passive::new(small_config());
            let mut clients: Vec<(ClientId, u64)> = Vec::new();
            for _ in 0..400 {
                let op = random_op(&mut prng);
                let command = match prng.index(6) {
                    0 => Command::Register,
                    1 => Command::Unsessioned(op),
                    _ if clients.is_empty() => Command::Unsessioned(op),
                    _ => {
                        let (client, seq) = clients[prng.index(clients.len())];
                        let seq = match prng.index(10) {
                            0 => seq.saturating_sub(1),
                            1..=3 => seq,
                            _ => seq + 1,
                        };
                        Command::Request { client, seq, op }
                    }
                };
                let response = passive.run(&command);
                match (&command, response) {
                    (Command::Register, Response::Registered(client)) => {
                        clients.push((client, 0));
                    }
                    (Command::Request { client, seq, .. }, _) => {
                        if let Some(entry) = clients.iter_mut().find(|(c, _)| c == client) {
                            entry.1 = entry.1.max(*seq);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Proves a retry answered by a backup promoted to primary gets the answer the old primary
    /// gave: the cached reply travels with the effect.
    #[test]
    fn the_cached_reply_travels_with_the_effect() {
        let mut passive = Passive::new(KvConfig::default());
        let Response::Registered(client) = passive.run(&Command::Register) else {
            panic!("register");
        };
        let request = Command::Request {
            client,
            seq: 1,
            op: append("k", "abc"),
        };
        assert_eq!(passive.run(&request), Response::Length(3));
        // The backup takes over and answers the retry from its session table.
        let mut promoted = passive.backup.clone();
        let retried = promoted.apply(LogIndex(passive.next_index), &request.encode());
        assert_eq!(Response::decode(&retried), Ok(Response::Length(3)));
        assert_eq!(promoted.get(b"k"), Some(&b("abc")));
    }

    /// Proves an effect that does not decode, or describes an impossible state, is refused and
    /// changes nothing.
    #[test]
    fn a_damaged_effect_is_refused_and_changes_nothing() {
        let mut primary = KvStore::new(KvConfig::default());
        primary.apply(LogIndex(1), &Command::Register.encode());
        let execution = StateMachine::execute(
            &mut primary,
            LogIndex(2),
            &Command::Request {
                client: ClientId(1),
                seq: 1,
                op: put("k", "v"),
            }
            .encode(),
        );
        let mut backup = KvStore::new(KvConfig::default());
        backup.apply(LogIndex(1), &Command::Register.encode());
        let before = backup.clone();
        let effect = execution.effect.to_vec();
        for cut in 0..effect.len() {
            assert!(backup.apply_effect(LogIndex(2), &effect[..cut]).is_err());
        }
        let mut trailing = effect.clone();
        trailing.push(0);
        assert!(backup.apply_effect(LogIndex(2), &trailing).is_err());
        let mut version = effect.clone();
        version[0] = 9;
        assert!(backup.apply_effect(LogIndex(2), &version).is_err());
        let mut flags = effect.clone();
        flags[1] = 4;
        assert!(backup.apply_effect(LogIndex(2), &flags).is_err());
        assert_eq!(backup, before);
        backup
            .apply_effect(LogIndex(2), &effect)
            .expect("the intact effect applies");
        assert_eq!(backup, primary);
        let mut prng = Prng::new(9);
        for _ in 0..2000 {
            let mut damaged = effect.clone();
            let at = prng.index(damaged.len());
            damaged[at] ^= 1 << prng.index(8);
            let mut scratch = before.clone();
            if scratch.apply_effect(LogIndex(2), &damaged).is_err() {
                assert_eq!(scratch, before);
            }
        }
    }

    /// Proves `SPOP` executed passively draws from the replica's own randomness (two
    /// primaries with different entropy pop different members from equal sets), that the
    /// backup reaches the primary's state through the effect alone, and that applied actively
    /// it stays seeded by the log index whatever the entropy.
    #[test]
    fn spop_draws_real_randomness_only_where_effects_are_shipped() {
        use crate::typed::TypedOp;
        let members: Vec<Bytes> = (0..64).map(|i| b(&format!("m{i}"))).collect();
        let fill = Command::Unsessioned(Op::Typed(TypedOp::SAdd {
            key: b("s"),
            members,
        }))
        .encode();
        let pop = Command::Unsessioned(Op::Typed(TypedOp::SPop {
            key: b("s"),
            count: Some(8),
        }))
        .encode();
        let popped_by = |seed: u64| {
            let mut primary = KvStore::new(KvConfig::default());
            primary.set_entropy(seed);
            let mut backup = KvStore::new(KvConfig::default());
            for (index, command) in [(1, &fill), (2, &pop)] {
                let execution = StateMachine::execute(&mut primary, LogIndex(index), command);
                backup
                    .apply_effect(LogIndex(index), &execution.effect)
                    .expect("applies");
            }
            assert_eq!(backup, primary);
            primary.snapshot_bytes()
        };
        assert_ne!(
            popped_by(1),
            popped_by(2),
            "each primary draws its own members"
        );
        let applied_by = |seed: u64| {
            let mut replica = KvStore::new(KvConfig::default());
            replica.set_entropy(seed);
            replica.apply(LogIndex(1), &fill);
            replica.apply(LogIndex(2), &pop);
            replica.snapshot_bytes()
        };
        assert_eq!(applied_by(1), applied_by(2), "active replicas agree");
    }

    /// A bound session's write of `op` on `connection`, fingerprinted `fingerprint`, stamped
    /// `now_ms`.
    fn bound(name: &str, connection: u64, fingerprint: u64, now_ms: u64, op: Op) -> Command {
        Command::BoundAt {
            now_ms,
            binding: Binding {
                session: b(name),
                connection,
                fingerprint,
            },
            write: BoundWrite::Op(op),
        }
    }

    /// Proves the apply-time decision for bound sessions: writes on one connection all run,
    /// even identical ones; the first write on a new connection that repeats the previous
    /// write within the window is answered with its answer and does not run again (a second
    /// reconnect too); a different first write runs.
    #[test]
    fn bound_retry_on_a_new_connection_is_answered_from_the_table() {
        let mut h = Harness::new(KvConfig::default());
        assert_eq!(
            h.apply(bound("s", 1, 7, 1_000, incr("n", 1))),
            Response::Integer(1)
        );
        // The same request again on the same connection is a new request: INCR twice.
        assert_eq!(
            h.apply(bound("s", 1, 7, 1_010, incr("n", 1))),
            Response::Integer(2)
        );
        // The reply was lost; the library reconnects and resends it: answered, not run.
        assert_eq!(
            h.apply(bound("s", 2, 7, 1_500, incr("n", 1))),
            Response::Integer(2)
        );
        assert_eq!(
            h.apply(bound("s", 3, 7, 2_000, incr("n", 1))),
            Response::Integer(2)
        );
        assert_eq!(h.store.get(b"n"), Some(&b("2")));
        // Once the new connection has written, its identical writes run again.
        assert_eq!(
            h.apply(bound("s", 3, 7, 2_010, incr("n", 1))),
            Response::Integer(3)
        );
        // A different request as a new connection's first write runs.
        assert_eq!(
            h.apply(bound("s", 4, 8, 2_020, incr("n", 5))),
            Response::Integer(8)
        );
        assert_eq!(h.store.get(b"n"), Some(&b("8")));
        assert_eq!(h.store.bound_sessions_len(), 1);
    }

    /// Proves a repeat on a new connection later than the window after the write it repeats
    /// runs (it is taken for a new write), and that the window is the log clock's, inclusive.
    #[test]
    fn bound_retry_window_is_measured_on_the_log_clock() {
        let config = KvConfig {
            bound_retry_window_ms: 100,
            ..KvConfig::default()
        };
        let mut h = Harness::new(config);
        assert_eq!(
            h.apply(bound("s", 1, 7, 1_000, incr("n", 1))),
            Response::Integer(1)
        );
        assert_eq!(
            h.apply(bound("s", 2, 7, 1_100, incr("n", 1))),
            Response::Integer(1)
        );
        // A clock that runs behind does not move the log clock back.
        h.apply(Command::Tick { now_ms: 1_101 });
        assert_eq!(
            h.apply(bound("s", 3, 7, 900, incr("n", 1))),
            Response::Integer(2)
        );
        assert_eq!(h.store.get(b"n"), Some(&b("2")));
    }

    /// Proves a write still in flight from a connection its session has left is refused and
    /// does not run, even when it is applied after its own retry (which ran on the new
    /// connection): the write takes effect once.
    #[test]
    fn bound_write_from_a_superseded_connection_is_refused() {
        let mut h = Harness::new(KvConfig::default());
        assert_eq!(
            h.apply(bound("s", 1, 7, 1_000, incr("n", 1))),
            Response::Integer(1)
        );
        // Connection 1 sent a second INCR (fingerprint 9) and died before it was applied;
        // its retry on connection 2 is applied first, and runs.
        assert_eq!(
            h.apply(bound("s", 2, 9, 1_100, incr("n", 1))),
            Response::Integer(2)
        );
        assert_eq!(
            h.apply(bound("s", 1, 9, 1_000, incr("n", 1))),
            Response::Error(KvError::SupersededConnection)
        );
        assert_eq!(h.store.get(b"n"), Some(&b("2")));
        // Only the last BOUND_RETIRED_CONNECTIONS_MAX superseded connections are remembered.
        for connection in 3..(3 + BOUND_RETIRED_CONNECTIONS_MAX as u64) {
            h.apply(bound(
                "s",
                connection,
                connection * 100,
                1_200,
                incr("m", 1),
            ));
        }
        assert_eq!(
            h.apply(bound("s", 2, 1, 1_300, incr("m", 1))),
            Response::Error(KvError::SupersededConnection)
        );
        assert_eq!(
            h.apply(bound("s", 1, 1, 1_300, incr("m", 1))),
            Response::Integer(9)
        );
    }

    /// Proves sessions are independent, and the decision is replicated state: a replica that
    /// restored a snapshot taken after the write, and a backup that applied the primary's
    /// effect, both recognise the retry (as a node does after a failover).
    #[test]
    fn bound_retry_is_recognised_after_restore_and_from_effects() {
        let mut h = Harness::new(KvConfig::default());
        assert_eq!(
            h.apply(bound("a", 1, 7, 1_000, incr("n", 1))),
            Response::Integer(1)
        );
        // Another session's identical write is not a retry of this one.
        assert_eq!(
            h.apply(bound("b", 2, 7, 1_000, incr("n", 1))),
            Response::Integer(2)
        );
        let retry = bound("a", 3, 7, 1_100, incr("n", 1)).encode();

        let mut restored = KvStore::new(KvConfig::default());
        restored
            .restore_bytes(&h.store.snapshot_bytes())
            .expect("the snapshot restores");
        assert_eq!(restored, h.store);
        let answer = restored.apply(LogIndex(3), &retry);
        assert_eq!(Response::decode(&answer), Ok(Response::Integer(1)));
        assert_eq!(restored.get(b"n"), Some(&b("2")));

        let mut primary = KvStore::new(KvConfig::default());
        let mut backup = KvStore::new(KvConfig::default());
        for (index, command) in [
            bound("a", 1, 7, 1_000, incr("n", 1)),
            bound("b", 2, 7, 1_000, incr("n", 1)),
        ]
        .into_iter()
        .enumerate()
        {
            let index = LogIndex(index as u64 + 1);
            let execution = StateMachine::execute(&mut primary, index, &command.encode());
            backup
                .apply_effect(index, &execution.effect)
                .expect("the effect applies");
        }
        assert_eq!(backup.state_digest(), primary.state_digest());
        let answer = backup.apply(LogIndex(3), &retry);
        assert_eq!(Response::decode(&answer), Ok(Response::Integer(1)));
        assert_eq!(backup.get(b"n"), Some(&b("2")));
    }

    /// Proves a transaction retried whole on a new connection is answered whole, without
    /// running its steps again.
    #[test]
    fn bound_transaction_retry_is_answered_whole() {
        let mut h = Harness::new(KvConfig::default());
        let transaction = |connection: u64| Command::BoundAt {
            now_ms: 1_000,
            binding: Binding {
                session: b("s"),
                connection,
                fingerprint: 42,
            },
            write: BoundWrite::Transaction {
                watched: Vec::new(),
                steps: vec![
                    Step::Write(incr("n", 1)),
                    Step::Read(Query::Get { key: b("n") }),
                ],
            },
        };
        let answer = Response::Transaction(Some(vec![Response::Integer(1), value("1")]));
        assert_eq!(h.apply(transaction(1)), answer);
        assert_eq!(h.apply(transaction(2)), answer);
        assert_eq!(h.store.get(b"n"), Some(&b("1")));
    }

    /// Proves an answer too large to keep is not kept: the write ran once, and its retry is
    /// told so instead of running again.
    #[test]
    fn bound_retry_of_a_write_whose_answer_was_too_large_is_refused() {
        let mut h = Harness::new(KvConfig::default());
        let large = "x".repeat(BOUND_ANSWER_BYTES_MAX);
        h.op(put("k", &large));
        let getset = |connection: u64| {
            bound(
                "s",
                connection,
                7,
                1_000,
                Op::Set {
                    key: b("k"),
                    value: b("small"),
                    condition: SetCondition::Always,
                },
            )
        };
        assert_eq!(
            h.apply(getset(1)),
            Response::Set {
                applied: true,
                previous: Some(b(&large))
            }
        );
        h.op(put("k", "other"));
        assert_eq!(h.apply(getset(2)), Response::Error(KvError::AnswerNotKept));
        assert_eq!(h.store.get(b"k"), Some(&b("other")));
    }

    /// Proves the bound-session table stays bounded: idle sessions expire by log index, and
    /// one more than `bound_sessions_max` expires the least recently used.
    #[test]
    fn bound_sessions_expire_and_stay_bounded() {
        let config = KvConfig {
            session_expiry_entries: 10,
            bound_sessions_max: 2,
            ..KvConfig::default()
        };
        let mut h = Harness::new(config);
        h.apply(bound("a", 1, 1, 1_000, incr("n", 1))); // 1
        h.apply(bound("b", 2, 1, 1_000, incr("n", 1))); // 2
        h.apply(bound("a", 1, 2, 1_000, incr("n", 1))); // 3: "a" used last
        h.apply(bound("c", 3, 1, 1_000, incr("n", 1))); // 4: "b" goes
        assert_eq!(h.store.bound_sessions_len(), 2);
        // "b" is forgotten: its retry runs again (the cost of the bound).
        assert_eq!(
            h.apply(bound("b", 4, 1, 1_000, incr("n", 1))),
            Response::Integer(5)
        );
        h.skip(20);
        h.op(get("n"));
        assert_eq!(h.store.bound_sessions_len(), 0);
    }

    /// Proves a session name longer than the bound is refused and changes nothing.
    #[test]
    fn bound_session_name_too_long_is_refused() {
        let mut h = Harness::new(KvConfig::default());
        let name = "s".repeat(SESSION_NAME_BYTES_MAX + 1);
        assert_eq!(
            h.apply(bound(&name, 1, 1, 1_000, incr("n", 1))),
            Response::Error(KvError::Malformed)
        );
        assert!(h.store.is_empty());
        assert_eq!(h.store.bound_sessions_len(), 0);
    }
}
