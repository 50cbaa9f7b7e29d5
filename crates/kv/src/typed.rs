//! Redis's data model on top of the key-value map: typed values (strings, hashes, lists, sets,
//! sorted sets), the operations on them ([`TypedOp`]) and their answers ([`Reply`]).
//!
//! Why a separate layer: the history model (HISTORY.md) and the native client speak in
//! [`crate::Op`]s on byte strings, while Redis clients expect Redis's whole data model with its
//! exact replies and error texts. A [`TypedOp`] is one Redis command with its arguments already
//! checked by the front end; executing it yields a [`Reply`] shaped like the RESP2 reply Redis
//! sends, so the front end only has to encode it.
//!
//! Invariants:
//! - Execution is a pure function of the map, the operation and the log index. Nothing here
//!   iterates in hash order; members, fields and keys come out in byte order, and the one random
//!   choice (`SPOP`) draws from a PRNG seeded with the log index, so every replica pops the same
//!   members.
//! - No collection is ever stored empty: an operation that empties one removes the key, as
//!   Redis does, so `EXISTS`, `TYPE` and `DBSIZE` agree with Redis. Restore checks it.
//! - A refused operation (an error reply) leaves the map unchanged: every check happens before
//!   the first change.
//! - Collections sit behind an [`Arc`] and are changed with [`Arc::make_mut`]: a snapshot image
//!   shares them with the live map, and a write copies a collection only while an image still
//!   holds it (once per collection per snapshot).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::long_double::{LongDouble, Parsed};
use bytes::Bytes;
use chorus_core::{LogIndex, Prng};
use serde::{Deserialize, Serialize};

pub use crate::keyspace::{Map, Record};

/// Redis's error for an operation on a key holding another type.
pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// A sorted-set score: an `f64` that is never NaN, ordered and hashed by value (`-0.0` and
/// `0.0` are distinct bit patterns but compare equal, as in Redis).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Score(pub f64);

impl PartialEq for Score {
    fn eq(&self, other: &Score) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Score) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Score) -> std::cmp::Ordering {
        // Scores are never NaN (checked where they enter), so `partial_cmp` always answers;
        // the fallback keeps the order total even so.
        self.0
            .partial_cmp(&other.0)
            .unwrap_or_else(|| self.0.total_cmp(&other.0))
    }
}

impl Hash for Score {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Equal scores must hash alike, and `-0.0 == 0.0`.
        let value = if self.0 == 0.0 { 0.0 } else { self.0 };
        value.to_bits().hash(state);
    }
}

/// A sorted set: each member's score, and the members ordered by `(score, member)`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SortedSet {
    scores: BTreeMap<Bytes, Score>,
    order: BTreeSet<(Score, Bytes)>,
}

impl SortedSet {
    /// The number of members.
    #[must_use]
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    /// Whether the set has no members.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// A member's score.
    #[must_use]
    pub fn score(&self, member: &[u8]) -> Option<Score> {
        self.scores.get(member).copied()
    }

    /// The members with their scores, in member order.
    pub fn by_member(&self) -> impl Iterator<Item = (&Bytes, Score)> {
        self.scores.iter().map(|(member, score)| (member, *score))
    }

    /// The members with their scores, in `(score, member)` order.
    pub fn by_score(&self) -> impl DoubleEndedIterator<Item = &(Score, Bytes)> {
        self.order.iter()
    }

    /// Sets a member's score, adding the member if needed.
    pub fn insert(&mut self, member: Bytes, score: Score) {
        if let Some(old) = self.scores.insert(member.clone(), score) {
            self.order.remove(&(old, member.clone()));
        }
        self.order.insert((score, member));
    }

    /// Removes a member; whether it was there.
    pub fn remove(&mut self, member: &[u8]) -> bool {
        match self.scores.remove_entry(member) {
            Some((member, score)) => {
                self.order.remove(&(score, member));
                true
            }
            None => false,
        }
    }

    /// The 0-based rank of a member in ascending order.
    fn rank(&self, member: &[u8]) -> Option<usize> {
        let score = self.score(member)?;
        let key = (score, Bytes::copy_from_slice(member));
        Some(self.order.range(..key).count())
    }
}

/// A key's value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Value {
    /// A byte string.
    String(Bytes),
    /// A hash: fields to values.
    Hash(Arc<BTreeMap<Bytes, Bytes>>),
    /// A list.
    List(Arc<VecDeque<Bytes>>),
    /// A set of members.
    Set(Arc<BTreeSet<Bytes>>),
    /// A sorted set.
    SortedSet(Arc<SortedSet>),
}

impl Value {
    /// Redis's name of the value's type, as `TYPE` answers it.
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "string",
            Value::Hash(_) => "hash",
            Value::List(_) => "list",
            Value::Set(_) => "set",
            Value::SortedSet(_) => "zset",
        }
    }

    /// Whether the value is a collection with nothing in it (never stored).
    #[must_use]
    pub fn is_empty_collection(&self) -> bool {
        match self {
            Value::String(_) => false,
            Value::Hash(hash) => hash.is_empty(),
            Value::List(list) => list.is_empty(),
            Value::Set(set) => set.is_empty(),
            Value::SortedSet(zset) => zset.is_empty(),
        }
    }
}

/// An answer shaped like a RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reply {
    /// A simple string such as `OK` or `hash`.
    Status(String),
    /// An integer.
    Integer(i64),
    /// A bulk string, or the null bulk string.
    Bulk(Option<Bytes>),
    /// An array.
    Array(Vec<Reply>),
    /// The null array (`*-1`).
    NullArray,
    /// An error, with Redis's exact text (kind first).
    Error(String),
}

impl Reply {
    fn ok() -> Reply {
        Reply::Status("OK".to_owned())
    }

    fn error(text: &str) -> Reply {
        Reply::Error(text.to_owned())
    }

    fn count(count: usize) -> Reply {
        Reply::Integer(i64::try_from(count).unwrap_or(i64::MAX))
    }

    fn bulk(bytes: Bytes) -> Reply {
        Reply::Bulk(Some(bytes))
    }

    fn bulks<'a>(items: impl IntoIterator<Item = &'a Bytes>) -> Reply {
        Reply::Array(items.into_iter().cloned().map(Reply::bulk).collect())
    }

    fn score(score: Score) -> Reply {
        Reply::bulk(Bytes::from(format_score(score.0)))
    }
}

/// Formats a score as Redis 7.0 does (C's `%.17g`): 17 significant digits, trailing zeros
/// dropped, an exponent below 1e-4 or from 1e17 on, `inf` and `-inf`.
#[must_use]
pub fn format_score(value: f64) -> String {
    if value.is_nan() {
        return "nan".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if value == 0.0 {
        return if value.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    let scientific = format!("{value:.16e}");
    let (mantissa, exponent) = scientific
        .split_once('e')
        .expect("invariant: `{:e}` output always holds an `e`");
    let exponent: i32 = exponent
        .parse()
        .expect("invariant: `{:e}` writes a decimal exponent");
    let trim = |text: &str| -> String {
        if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            text.to_owned()
        }
    };
    if !(-4..17).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exponent.abs())
    } else {
        let decimals = usize::try_from(16 - exponent).unwrap_or(0);
        trim(&format!("{value:.decimals$}"))
    }
}

/// Parses a score or increment as Redis does: a decimal or `inf`-style float, never NaN, with
/// no surrounding spaces.
#[must_use]
pub fn parse_score(text: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(text).ok()?;
    if text.is_empty()
        || text.starts_with(char::is_whitespace)
        || text.ends_with(char::is_whitespace)
    {
        return None;
    }
    let value: f64 = text.parse().ok()?;
    (!value.is_nan()).then_some(value)
}

/// One end of a score range (`ZCOUNT`, `ZRANGE … BYSCORE`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreBound {
    /// The score.
    pub value: f64,
    /// Whether the end itself is left out (`(1.5`).
    pub exclusive: bool,
}

impl Eq for ScoreBound {}

impl Hash for ScoreBound {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.value.to_bits().hash(state);
        self.exclusive.hash(state);
    }
}

impl ScoreBound {
    /// Parses `1.5`, `(1.5`, `-inf` or `+inf`; `None` if not a float.
    #[must_use]
    pub fn parse(text: &[u8]) -> Option<ScoreBound> {
        match text.strip_prefix(b"(") {
            Some(rest) => Some(ScoreBound {
                value: parse_score(rest)?,
                exclusive: true,
            }),
            None => Some(ScoreBound {
                value: parse_score(text)?,
                exclusive: false,
            }),
        }
    }

    fn below(&self, score: f64) -> bool {
        // Whether `score` is at or above this lower end.
        if self.exclusive {
            score > self.value
        } else {
            score >= self.value
        }
    }

    fn above(&self, score: f64) -> bool {
        if self.exclusive {
            score < self.value
        } else {
            score <= self.value
        }
    }
}

/// One end of a lexicographic range (`ZRANGE … BYLEX`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LexBound {
    /// `-`: below every member.
    Lowest,
    /// `+`: above every member.
    Highest,
    /// `[member`.
    Inclusive(Bytes),
    /// `(member`.
    Exclusive(Bytes),
}

impl LexBound {
    /// Parses `-`, `+`, `[member` or `(member`; `None` otherwise.
    #[must_use]
    pub fn parse(text: &Bytes) -> Option<LexBound> {
        match text.first() {
            Some(b'-') if text.len() == 1 => Some(LexBound::Lowest),
            Some(b'+') if text.len() == 1 => Some(LexBound::Highest),
            Some(b'[') => Some(LexBound::Inclusive(text.slice(1..))),
            Some(b'(') => Some(LexBound::Exclusive(text.slice(1..))),
            _ => None,
        }
    }

    fn at_or_after_min(&self, member: &[u8]) -> bool {
        match self {
            LexBound::Lowest => true,
            LexBound::Highest => false,
            LexBound::Inclusive(bound) => member >= bound.as_ref(),
            LexBound::Exclusive(bound) => member > bound.as_ref(),
        }
    }

    fn at_or_before_max(&self, member: &[u8]) -> bool {
        match self {
            LexBound::Lowest => false,
            LexBound::Highest => true,
            LexBound::Inclusive(bound) => member <= bound.as_ref(),
            LexBound::Exclusive(bound) => member < bound.as_ref(),
        }
    }
}

/// What a `ZRANGE` selects by.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RangeBy {
    /// Ranks, 0-based, negative from the end.
    Rank {
        /// The first rank.
        start: i64,
        /// The last rank.
        stop: i64,
    },
    /// Scores, `min` to `max` (in the reply's direction, already swapped for `REV`).
    Score {
        /// The lower end.
        min: ScoreBound,
        /// The upper end.
        max: ScoreBound,
    },
    /// Members in byte order, for sets whose members share one score.
    Lex {
        /// The lower end.
        min: LexBound,
        /// The upper end.
        max: LexBound,
    },
}

/// `ZADD`'s options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ZAddFlags {
    /// Only add new members.
    pub nx: bool,
    /// Only update existing members.
    pub xx: bool,
    /// Only update when the new score is greater.
    pub gt: bool,
    /// Only update when the new score is less.
    pub lt: bool,
    /// Count changed members, not only added ones.
    pub ch: bool,
    /// Add the score to the current one, like `ZINCRBY`; answer the new score.
    pub incr: bool,
}

/// How `SINTER`, `SUNION` and `SDIFF` combine sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SetAlgebra {
    /// Members in every set.
    Intersection,
    /// Members in any set.
    Union,
    /// Members of the first set in none of the others.
    Difference,
}

/// When a key is to expire, as a command states it. A relative time becomes absolute when the
/// command is applied, from the log clock of its entry, so every replica computes the same
/// instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Deadline {
    /// This many milliseconds after the log clock (`EX`, `PX`, `EXPIRE`, `PEXPIRE`); zero or
    /// negative means now.
    After(i64),
    /// At this Unix time in milliseconds (`EXAT`, `PXAT`, `EXPIREAT`, `PEXPIREAT`); a time
    /// in the past means now.
    At(i64),
}

impl Deadline {
    /// The absolute time in log-clock milliseconds, given the log clock `now`; saturates at
    /// 0 and at `i64::MAX`, the range of Redis's times.
    #[must_use]
    pub fn resolve(self, now: u64) -> u64 {
        let at = match self {
            Deadline::After(milliseconds) => i128::from(now) + i128::from(milliseconds),
            Deadline::At(milliseconds) => i128::from(milliseconds),
        };
        u64::try_from(at.clamp(0, i128::from(i64::MAX))).unwrap_or(0)
    }
}

/// `EXPIRE`'s options (Redis 7): when the new expiry is set. Several may hold at once
/// (`XX GT`); the front end refuses the combinations Redis refuses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExpireCondition {
    /// Only if the key has no expiry (`NX`).
    pub nx: bool,
    /// Only if the key has an expiry (`XX`).
    pub xx: bool,
    /// Only if the new expiry is later than the current one; a key without one never
    /// qualifies (`GT`).
    pub gt: bool,
    /// Only if the new expiry is sooner than the current one; a key without one always
    /// qualifies (`LT`).
    pub lt: bool,
}

impl ExpireCondition {
    /// Whether a key whose expiry is `current` may be given the expiry `at`.
    #[must_use]
    pub fn allows(self, current: Option<u64>, at: u64) -> bool {
        !(self.nx && current.is_some()
            || self.xx && current.is_none()
            || self.gt && current.is_none_or(|current| at <= current)
            || self.lt && current.is_some_and(|current| at >= current))
    }
}

/// Which collection `HSCAN`, `SSCAN` or `ZSCAN` walks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ScanKind {
    /// A hash's fields and values (`HSCAN`).
    Hash,
    /// A set's members (`SSCAN`).
    Set,
    /// A sorted set's members and scores (`ZSCAN`).
    SortedSet,
}

/// What `GETEX` does to the key's expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GetExChange {
    /// Nothing (no option).
    Keep,
    /// Removes it (`PERSIST`).
    Persist,
    /// Sets it (`EX`, `PX`, `EXAT`, `PXAT`).
    Expire(Deadline),
}

/// One Redis command on typed values, its arguments already checked. Each variant names the
/// Redis command(s) it implements; the reply is Redis's.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TypedOp {
    // ----- Key space ---------------------------------------------------------------------
    /// `TYPE key`.
    Type {
        /// The key.
        key: Bytes,
    },
    /// `GETDEL key`.
    GetDel {
        /// The key.
        key: Bytes,
    },
    /// `RENAME` (or `RENAMENX` with `only_if_absent`).
    Rename {
        /// The key to rename.
        from: Bytes,
        /// Its new name.
        to: Bytes,
        /// Only if `to` does not exist (`RENAMENX`).
        only_if_absent: bool,
    },
    /// `COPY source destination [REPLACE]`.
    Copy {
        /// The key copied.
        source: Bytes,
        /// The copy's key.
        destination: Bytes,
        /// Overwrite an existing destination.
        replace: bool,
    },
    /// `KEYS pattern`.
    Keys {
        /// A glob-style pattern.
        pattern: Bytes,
    },
    /// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]`: one pass answers every matching
    /// key with cursor `0` (COUNT is only a hint in Redis), so the scan is deterministic and
    /// never misses or repeats a key.
    Scan {
        /// The cursor: `0` starts a scan; any other answers nothing more.
        cursor: u64,
        /// A glob-style pattern.
        pattern: Option<Bytes>,
        /// Only keys of this type.
        type_name: Option<Bytes>,
    },
    /// `FLUSHDB` / `FLUSHALL`.
    FlushAll,
    // ----- Hashes ------------------------------------------------------------------------
    /// `HSET` (and `HMSET` with `legacy_ok`).
    HSet {
        /// The hash.
        key: Bytes,
        /// Field/value pairs, in order.
        pairs: Vec<(Bytes, Bytes)>,
        /// Answer `OK` (`HMSET`) instead of the number of new fields.
        legacy_ok: bool,
    },
    /// `HSETNX key field value`.
    HSetNx {
        /// The hash.
        key: Bytes,
        /// The field.
        field: Bytes,
        /// The value.
        value: Bytes,
    },
    /// `HGET key field`.
    HGet {
        /// The hash.
        key: Bytes,
        /// The field.
        field: Bytes,
    },
    /// `HMGET key field [field ...]`.
    HMGet {
        /// The hash.
        key: Bytes,
        /// The fields.
        fields: Vec<Bytes>,
    },
    /// `HDEL key field [field ...]`.
    HDel {
        /// The hash.
        key: Bytes,
        /// The fields.
        fields: Vec<Bytes>,
    },
    /// `HEXISTS key field`.
    HExists {
        /// The hash.
        key: Bytes,
        /// The field.
        field: Bytes,
    },
    /// `HLEN key`.
    HLen {
        /// The hash.
        key: Bytes,
    },
    /// `HSTRLEN key field`.
    HStrlen {
        /// The hash.
        key: Bytes,
        /// The field.
        field: Bytes,
    },
    /// `HGETALL`, `HKEYS` or `HVALS`.
    HGetAll {
        /// The hash.
        key: Bytes,
        /// Include the fields.
        fields: bool,
        /// Include the values.
        values: bool,
    },
    /// `HINCRBY key field increment`.
    HIncrBy {
        /// The hash.
        key: Bytes,
        /// The field.
        field: Bytes,
        /// What to add.
        delta: i64,
    },
    // ----- Lists -------------------------------------------------------------------------
    /// `LPUSH`, `RPUSH`, `LPUSHX`, `RPUSHX`.
    Push {
        /// The list.
        key: Bytes,
        /// The elements, pushed one after the other.
        values: Vec<Bytes>,
        /// Push at the head.
        left: bool,
        /// Only if the list exists (`…X`).
        only_if_exists: bool,
    },
    /// `LPOP` / `RPOP key [count]`.
    Pop {
        /// The list.
        key: Bytes,
        /// Pop from the head.
        left: bool,
        /// How many (the reply is then an array).
        count: Option<u64>,
    },
    /// `LLEN key`.
    LLen {
        /// The list.
        key: Bytes,
    },
    /// `LRANGE key start stop`.
    LRange {
        /// The list.
        key: Bytes,
        /// The first index.
        start: i64,
        /// The last index.
        stop: i64,
    },
    /// `LINDEX key index`.
    LIndex {
        /// The list.
        key: Bytes,
        /// The index, negative from the end.
        index: i64,
    },
    /// `LSET key index element`.
    LSet {
        /// The list.
        key: Bytes,
        /// The index, negative from the end.
        index: i64,
        /// The new element.
        value: Bytes,
    },
    /// `LREM key count element`.
    LRem {
        /// The list.
        key: Bytes,
        /// How many to remove: from the head if positive, the tail if negative, all if 0.
        count: i64,
        /// The element.
        value: Bytes,
    },
    /// `LTRIM key start stop`.
    LTrim {
        /// The list.
        key: Bytes,
        /// The first index kept.
        start: i64,
        /// The last index kept.
        stop: i64,
    },
    /// `LMOVE source destination LEFT|RIGHT LEFT|RIGHT` (and `RPOPLPUSH`).
    LMove {
        /// The list popped from.
        source: Bytes,
        /// The list pushed to.
        destination: Bytes,
        /// Pop from the source's head.
        from_left: bool,
        /// Push at the destination's head.
        to_left: bool,
    },
    // ----- Sets --------------------------------------------------------------------------
    /// `SADD key member [member ...]`.
    SAdd {
        /// The set.
        key: Bytes,
        /// The members.
        members: Vec<Bytes>,
    },
    /// `SREM key member [member ...]`.
    SRem {
        /// The set.
        key: Bytes,
        /// The members.
        members: Vec<Bytes>,
    },
    /// `SMEMBERS key`.
    SMembers {
        /// The set.
        key: Bytes,
    },
    /// `SISMEMBER key member` (`SMISMEMBER` with `many`).
    SIsMember {
        /// The set.
        key: Bytes,
        /// The members.
        members: Vec<Bytes>,
        /// Answer an array (`SMISMEMBER`).
        many: bool,
    },
    /// `SCARD key`.
    SCard {
        /// The set.
        key: Bytes,
    },
    /// `SPOP key [count]`: the members popped are drawn with a PRNG seeded by the log index,
    /// so every replica pops the same ones, unless the store executes it passively with its
    /// own randomness (see `KvStore::set_entropy`).
    SPop {
        /// The set.
        key: Bytes,
        /// How many (the reply is then an array).
        count: Option<u64>,
    },
    /// `SINTER`, `SUNION`, `SDIFF`, and their `…STORE` forms.
    SetAlgebra {
        /// How the sets combine.
        algebra: SetAlgebra,
        /// The sets.
        keys: Vec<Bytes>,
        /// Store the result here and answer its size (`…STORE`).
        destination: Option<Bytes>,
    },
    // ----- Sorted sets -------------------------------------------------------------------
    /// `ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member [score member ...]`.
    ZAdd {
        /// The sorted set.
        key: Bytes,
        /// The options.
        flags: ZAddFlags,
        /// Score/member pairs; scores are never NaN.
        pairs: Vec<(Score, Bytes)>,
    },
    /// `ZINCRBY key increment member`.
    ZIncrBy {
        /// The sorted set.
        key: Bytes,
        /// What to add; never NaN.
        delta: Score,
        /// The member.
        member: Bytes,
    },
    /// `ZREM key member [member ...]`.
    ZRem {
        /// The sorted set.
        key: Bytes,
        /// The members.
        members: Vec<Bytes>,
    },
    /// `ZSCORE key member` (`ZMSCORE` with `many`).
    ZScore {
        /// The sorted set.
        key: Bytes,
        /// The members.
        members: Vec<Bytes>,
        /// Answer an array (`ZMSCORE`).
        many: bool,
    },
    /// `ZCARD key`.
    ZCard {
        /// The sorted set.
        key: Bytes,
    },
    /// `ZRANK` / `ZREVRANK key member`.
    ZRank {
        /// The sorted set.
        key: Bytes,
        /// The member.
        member: Bytes,
        /// Rank from the highest score.
        reverse: bool,
    },
    /// `ZCOUNT key min max`.
    ZCount {
        /// The sorted set.
        key: Bytes,
        /// The lower end.
        min: ScoreBound,
        /// The upper end.
        max: ScoreBound,
    },
    /// `ZRANGE` and its older forms (`ZREVRANGE`, `ZRANGEBYSCORE`, …).
    ZRange {
        /// The sorted set.
        key: Bytes,
        /// What the range selects by.
        by: RangeBy,
        /// Highest first.
        reverse: bool,
        /// `LIMIT offset count` (score and lex ranges only); a negative count means all.
        limit: Option<(i64, i64)>,
        /// Answer each member followed by its score.
        with_scores: bool,
    },
    /// `ZPOPMIN` / `ZPOPMAX key [count]`.
    ZPop {
        /// The sorted set.
        key: Bytes,
        /// Pop the highest scores.
        max: bool,
        /// How many; `None` answers like a count of 1.
        count: Option<u64>,
    },
    // ----- Expiry ------------------------------------------------------------------------
    /// `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT key time [NX|XX|GT|LT]`: 1 if the expiry
    /// was set (a time already past removes the key), 0 if the key is absent or the
    /// condition did not hold.
    Expire {
        /// The key.
        key: Bytes,
        /// The new expiry.
        deadline: Deadline,
        /// When to set it.
        condition: ExpireCondition,
    },
    /// `PERSIST key`: 1 if an expiry was removed, else 0.
    Persist {
        /// The key.
        key: Bytes,
    },
    /// `TTL`, `PTTL`, `EXPIRETIME`, `PEXPIRETIME key`: -2 if the key is absent, -1 if it
    /// never expires. Answered through the log, because the answer depends on the log clock.
    Ttl {
        /// The key.
        key: Bytes,
        /// In milliseconds (`PTTL`, `PEXPIRETIME`), else seconds.
        milliseconds: bool,
        /// The absolute Unix time (`…EXPIRETIME`), else the time left.
        absolute: bool,
    },
    /// `GETEX key [EX|PX|EXAT|PXAT time | PERSIST]`: the string's value, and its expiry
    /// changed.
    GetEx {
        /// The key.
        key: Bytes,
        /// What happens to its expiry.
        change: GetExChange,
    },
    /// `HSCAN`, `SSCAN`, `ZSCAN key cursor [MATCH pattern] [COUNT n]`: like [`TypedOp::Scan`],
    /// one pass answers every matching element with cursor `0` (in byte order of fields and
    /// members, by score for a sorted set).
    ScanCollection {
        /// The collection.
        key: Bytes,
        /// Which type it must be.
        kind: ScanKind,
        /// The cursor: `0` starts a scan; any other answers nothing more.
        cursor: u64,
        /// A glob-style pattern on fields or members.
        pattern: Option<Bytes>,
    },
    // New variants go last: the position is the encoding's tag, and logs and snapshots
    // written before them must still decode.
    /// `INCRBYFLOAT key increment`: both numbers read and added as Redis's `long double`s,
    /// and the sum stored and answered as Redis writes it (see this crate's `long_double.rs`).
    /// The increment travels as text, so that the state machine checks it in Redis's order
    /// (the key's type first).
    IncrByFloat {
        /// The string.
        key: Bytes,
        /// The increment, as the client sent it.
        increment: Bytes,
    },
    /// `HINCRBYFLOAT key field increment`, as [`TypedOp::IncrByFloat`] on a hash's field.
    HIncrByFloat {
        /// The hash.
        key: Bytes,
        /// The field.
        field: Bytes,
        /// The increment, as the client sent it.
        increment: Bytes,
    },
    /// `SRANDMEMBER key [count]`: members drawn with a PRNG seeded by the log index of the
    /// state read, so every replica at that state answers the same.
    SRandMember {
        /// The set.
        key: Bytes,
        /// `None`: one member (or nil). Otherwise that many distinct members (at most the
        /// set), or, if negative, that many draws with repetition.
        count: Option<i64>,
    },
    /// `RANDOMKEY`: a key drawn as [`TypedOp::SRandMember`] draws, or nil.
    RandomKey,
    /// `LINSERT key BEFORE|AFTER pivot element`.
    LInsert {
        /// The list.
        key: Bytes,
        /// Before the pivot, else after it.
        before: bool,
        /// The first element equal to this is the pivot.
        pivot: Bytes,
        /// What to insert.
        element: Bytes,
    },
    /// `LPOS key element [RANK rank] [COUNT count] [MAXLEN len]`.
    LPos {
        /// The list.
        key: Bytes,
        /// What to look for.
        element: Bytes,
        /// Which match to start from: 1 the first, -1 the first from the tail; never 0.
        rank: i64,
        /// `None`: answer one index or nil; `Some(0)`: every match; else at most that many.
        count: Option<u64>,
        /// Look at most at this many elements (0: all).
        maxlen: u64,
    },
}

impl TypedOp {
    /// Whether the operation must go through the log: it may change the map, or its answer
    /// depends on the log clock (`TTL`).
    #[must_use]
    pub fn is_write(&self) -> bool {
        !matches!(
            self,
            TypedOp::Type { .. }
                | TypedOp::Keys { .. }
                | TypedOp::Scan { .. }
                | TypedOp::HGet { .. }
                | TypedOp::HMGet { .. }
                | TypedOp::HExists { .. }
                | TypedOp::HLen { .. }
                | TypedOp::HStrlen { .. }
                | TypedOp::HGetAll { .. }
                | TypedOp::LLen { .. }
                | TypedOp::LRange { .. }
                | TypedOp::LIndex { .. }
                | TypedOp::SMembers { .. }
                | TypedOp::SIsMember { .. }
                | TypedOp::SCard { .. }
                | TypedOp::SetAlgebra {
                    destination: None,
                    ..
                }
                | TypedOp::ZScore { .. }
                | TypedOp::ZCard { .. }
                | TypedOp::ZRank { .. }
                | TypedOp::ZCount { .. }
                | TypedOp::ZRange { .. }
                | TypedOp::ScanCollection { .. }
                | TypedOp::SRandMember { .. }
                | TypedOp::RandomKey
                | TypedOp::LPos { .. }
        )
    }
}

const NOT_A_FLOAT: &str = "ERR value is not a valid float";

/// `current + increment` as Redis's `long double` sum, or its error when not finite.
fn float_sum(current: Parsed, increment: Parsed) -> Outcome<LongDouble> {
    let not_finite = || Reply::error("ERR increment would produce NaN or Infinity");
    match (current, increment) {
        (Parsed::Finite(current), Parsed::Finite(increment)) => {
            current.add(increment).map_err(|_| not_finite())
        }
        _ => Err(not_finite()),
    }
}

/// Access to one collection type inside a [`Value`].
trait Collection: Clone + Default {
    fn get(value: &Value) -> Option<&Arc<Self>>;
    fn get_mut(value: &mut Value) -> Option<&mut Arc<Self>>;
    fn wrap(collection: Arc<Self>) -> Value;
    fn empty(&self) -> bool;
}

macro_rules! collection {
    ($type:ty, $variant:ident) => {
        impl Collection for $type {
            fn get(value: &Value) -> Option<&Arc<Self>> {
                match value {
                    Value::$variant(inner) => Some(inner),
                    _ => None,
                }
            }
            fn get_mut(value: &mut Value) -> Option<&mut Arc<Self>> {
                match value {
                    Value::$variant(inner) => Some(inner),
                    _ => None,
                }
            }
            fn wrap(collection: Arc<Self>) -> Value {
                Value::$variant(collection)
            }
            fn empty(&self) -> bool {
                self.is_empty()
            }
        }
    };
}

collection!(BTreeMap<Bytes, Bytes>, Hash);
collection!(VecDeque<Bytes>, List);
collection!(BTreeSet<Bytes>, Set);
collection!(SortedSet, SortedSet);

type Outcome<T> = Result<T, Reply>;

fn wrong_type() -> Reply {
    Reply::error(WRONGTYPE)
}

/// The collection at `key`, `None` if absent, WRONGTYPE if another type.
fn read<'a, C: Collection>(data: &'a Map, key: &[u8]) -> Outcome<Option<&'a C>> {
    match data.get(key) {
        None => Ok(None),
        Some(value) => C::get(value).map(|c| Some(&**c)).ok_or_else(wrong_type),
    }
}

/// Changes the collection at `key` with `change`, creating it first if absent and `create`
/// (otherwise answers `Ok(None)` without calling `change`), and removing the key if the
/// collection ends empty. `change` must check everything before it changes anything.
fn update<C: Collection, R>(
    data: &mut Map,
    key: &Bytes,
    create: bool,
    change: impl FnOnce(&mut C) -> Outcome<R>,
) -> Outcome<Option<R>> {
    let result = match data.get_mut(key) {
        Some(value) => {
            let collection = C::get_mut(value).ok_or_else(wrong_type)?;
            let result = change(Arc::make_mut(collection))?;
            if collection.empty() {
                data.remove_mut(key);
            } else {
                data.touch(key);
            }
            result
        }
        None if create => {
            let mut collection = C::default();
            let result = change(&mut collection)?;
            if !collection.empty() {
                data.insert_mut(key.clone(), C::wrap(Arc::new(collection)));
            }
            result
        }
        None => return Ok(None),
    };
    Ok(Some(result))
}

/// Resolves Redis's `start`/`stop` indexes (negative from the end) against `len`: the
/// inclusive range they cover, or `None` if empty.
fn index_range(start: i64, stop: i64, len: usize) -> Option<(usize, usize)> {
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    let start = if start < 0 {
        (start + len).max(0)
    } else {
        start
    };
    let stop = if stop < 0 {
        stop + len
    } else {
        stop.min(len - 1)
    };
    if start > stop || start >= len || stop < 0 {
        return None;
    }
    Some((
        usize::try_from(start).unwrap_or(0),
        usize::try_from(stop).unwrap_or(0),
    ))
}

/// Resolves one index (negative from the end) against `len`.
fn one_index(index: i64, len: usize) -> Option<usize> {
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    let index = if index < 0 { index + len } else { index };
    (0..len)
        .contains(&index)
        .then(|| usize::try_from(index).unwrap_or(0))
}

/// Redis's glob-style matching (`*`, `?`, `[abc]`, `[^a-z]`, `\x`), on bytes.
#[must_use]
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => {
            // Collapse runs of stars, then try every split point.
            let rest = {
                let mut rest = rest;
                while let Some((b'*', more)) = rest.split_first() {
                    rest = more;
                }
                rest
            };
            if rest.is_empty() {
                return true;
            }
            (0..=text.len()).any(|skip| glob_match(rest, &text[skip..]))
        }
        Some((b'?', rest)) => !text.is_empty() && glob_match(rest, &text[1..]),
        Some((b'[', rest)) => {
            let Some((&first, text_rest)) = text.split_first() else {
                return false;
            };
            let (negate, mut class) = match rest.split_first() {
                Some((b'^', more)) => (true, more),
                _ => (false, rest),
            };
            let mut matched = false;
            loop {
                match class {
                    // An unclosed class ends at the pattern's end, as in Redis.
                    [] => break,
                    [b']', more @ ..] => {
                        class = more;
                        break;
                    }
                    [b'\\', escaped, more @ ..] => {
                        matched |= *escaped == first;
                        class = more;
                    }
                    [low, b'-', high, more @ ..] if *high != b']' => {
                        let (low, high) = if low <= high {
                            (*low, *high)
                        } else {
                            (*high, *low)
                        };
                        matched |= (low..=high).contains(&first);
                        class = more;
                    }
                    [single, more @ ..] => {
                        matched |= *single == first;
                        class = more;
                    }
                }
            }
            matched != negate && glob_match(class, text_rest)
        }
        Some((b'\\', [escaped, rest @ ..])) => {
            text.first() == Some(escaped) && glob_match(rest, &text[1..])
        }
        Some((literal, rest)) => text.first() == Some(literal) && glob_match(rest, &text[1..]),
    }
}

/// Executes `op` on `data` at log `index` (the seed of `SPOP`'s choices) and log clock `now`
/// (milliseconds, the base of relative expiry times and of `TTL`). Keys whose expiry is at or
/// before `now` must already be gone (the store removes them before each command).
pub fn execute(data: &mut Map, index: LogIndex, now: u64, op: TypedOp) -> Reply {
    execute_seeded(data, index, now, op, index.0)
}

/// Executes `op` as [`execute`] does, drawing `SPOP`'s choices from `seed`: a replica that
/// ships effects may seed it with real randomness, since no other replica executes.
pub fn execute_seeded(data: &mut Map, index: LogIndex, now: u64, op: TypedOp, seed: u64) -> Reply {
    match run(data, index, now, op, seed) {
        Ok(reply) | Err(reply) => reply,
    }
}

fn run(data: &mut Map, _index: LogIndex, now: u64, op: TypedOp, seed: u64) -> Outcome<Reply> {
    Ok(match op {
        TypedOp::Expire {
            key,
            deadline,
            condition,
        } => {
            let Some(record) = data.record(&key) else {
                return Ok(Reply::Integer(0));
            };
            let at = deadline.resolve(now);
            let current = record.expires_at;
            if !condition.allows(current, at) {
                return Ok(Reply::Integer(0));
            }
            // A time already past removes the key now, as Redis does.
            if at <= now {
                data.remove_mut(&key);
            } else {
                data.set_expiry(&key, Some(at));
            }
            Reply::Integer(1)
        }
        TypedOp::IncrByFloat { key, increment } => {
            let current = match data.get(&key) {
                None => Parsed::Finite(LongDouble::ZERO),
                Some(Value::String(value)) => {
                    LongDouble::parse(value).ok_or_else(|| Reply::error(NOT_A_FLOAT))?
                }
                Some(_) => return Err(wrong_type()),
            };
            let increment =
                LongDouble::parse(&increment).ok_or_else(|| Reply::error(NOT_A_FLOAT))?;
            let text = Bytes::from(float_sum(current, increment)?.to_human());
            // A change of the value: the key keeps its expiry, as with INCR.
            data.replace_value(key, Value::String(text.clone()));
            Reply::bulk(text)
        }
        TypedOp::HIncrByFloat {
            key,
            field,
            increment,
        } => {
            let increment = match LongDouble::parse(&increment) {
                Some(Parsed::Finite(increment)) => increment,
                Some(Parsed::Infinite) => return Err(Reply::error("ERR value is NaN or Infinity")),
                None => return Err(Reply::error(NOT_A_FLOAT)),
            };
            let updated = update(data, &key, true, |hash: &mut BTreeMap<Bytes, Bytes>| {
                let current = match hash.get(&field) {
                    None => Parsed::Finite(LongDouble::ZERO),
                    Some(value) => LongDouble::parse(value)
                        .ok_or_else(|| Reply::error("ERR hash value is not a float"))?,
                };
                let text = Bytes::from(float_sum(current, Parsed::Finite(increment))?.to_human());
                hash.insert(field, text.clone());
                Ok(text)
            })?;
            Reply::Bulk(updated)
        }
        TypedOp::SRandMember { key, count } => {
            let Some(set) = read::<BTreeSet<Bytes>>(data, &key)? else {
                return Ok(match count {
                    None => Reply::Bulk(None),
                    Some(_) => Reply::Array(Vec::new()),
                });
            };
            let mut prng = Prng::new(seed);
            let mut draw = || {
                let position = prng.index(set.len());
                set.iter()
                    .nth(position)
                    .cloned()
                    .expect("invariant: the position is below the set's size")
            };
            match count {
                None => Reply::bulk(draw()),
                Some(count) if count < 0 => {
                    let draws = usize::try_from(count.unsigned_abs()).unwrap_or(usize::MAX);
                    Reply::Array((0..draws).map(|_| Reply::bulk(draw())).collect())
                }
                Some(count) => {
                    let wanted = usize::try_from(count).unwrap_or(usize::MAX);
                    let mut members: Vec<&Bytes> = set.iter().collect();
                    if wanted < members.len() {
                        // A partial Fisher-Yates shuffle: `wanted` distinct members.
                        for at in 0..wanted {
                            let other = at + prng.index(members.len() - at);
                            members.swap(at, other);
                        }
                        members.truncate(wanted);
                    }
                    Reply::bulks(members)
                }
            }
        }
        TypedOp::RandomKey => {
            if data.is_empty() {
                Reply::Bulk(None)
            } else {
                let position = Prng::new(seed).index(data.size());
                Reply::Bulk(data.keys().nth(position).cloned())
            }
        }
        TypedOp::LInsert {
            key,
            before,
            pivot,
            element,
        } => {
            let len = update(data, &key, false, |list: &mut VecDeque<Bytes>| {
                Ok(match list.iter().position(|item| *item == pivot) {
                    None => -1,
                    Some(at) => {
                        list.insert(if before { at } else { at + 1 }, element);
                        i64::try_from(list.len()).unwrap_or(i64::MAX)
                    }
                })
            })?;
            Reply::Integer(len.unwrap_or(0))
        }
        TypedOp::LPos {
            key,
            element,
            rank,
            count,
            maxlen,
        } => {
            let Some(list) = read::<VecDeque<Bytes>>(data, &key)? else {
                return Ok(match count {
                    None => Reply::Bulk(None),
                    Some(_) => Reply::Array(Vec::new()),
                });
            };
            let len = list.len();
            let limit = match usize::try_from(maxlen) {
                Ok(0) | Err(_) => len,
                Ok(maxlen) => maxlen.min(len),
            };
            // Redis 7.0 negates a negative rank in a C `long`: the smallest one stays
            // negative, so every match counts from the first one, and a COUNT never ends the
            // search. Answer the same.
            let smallest = rank == i64::MIN;
            let skip = if smallest { 0 } else { rank.unsigned_abs() - 1 };
            let wanted = match count {
                None => 1,
                Some(_) if smallest => u64::MAX,
                Some(0) => u64::MAX,
                Some(count) => count,
            };
            let positions: Box<dyn Iterator<Item = usize>> = if rank < 0 {
                Box::new((len - limit..len).rev())
            } else {
                Box::new(0..limit)
            };
            let found: Vec<Reply> = positions
                .filter(|&at| list[at] == element)
                .skip(usize::try_from(skip).unwrap_or(usize::MAX))
                .take(usize::try_from(wanted).unwrap_or(usize::MAX))
                .map(Reply::count)
                .collect();
            match count {
                None => found.into_iter().next().unwrap_or(Reply::Bulk(None)),
                Some(_) => Reply::Array(found),
            }
        }
        TypedOp::ScanCollection {
            key,
            kind,
            cursor,
            pattern,
        } => {
            let wanted =
                |item: &[u8]| cursor == 0 && pattern.as_ref().is_none_or(|p| glob_match(p, item));
            let items: Vec<Reply> = match kind {
                ScanKind::Hash => read::<BTreeMap<Bytes, Bytes>>(data, &key)?
                    .into_iter()
                    .flatten()
                    .filter(|(field, _)| wanted(field))
                    .flat_map(|(field, value)| {
                        [Reply::bulk(field.clone()), Reply::bulk(value.clone())]
                    })
                    .collect(),
                ScanKind::Set => read::<BTreeSet<Bytes>>(data, &key)?
                    .into_iter()
                    .flatten()
                    .filter(|member| wanted(member))
                    .map(|member| Reply::bulk(member.clone()))
                    .collect(),
                ScanKind::SortedSet => read::<SortedSet>(data, &key)?
                    .into_iter()
                    .flat_map(SortedSet::by_score)
                    .filter(|(_, member)| wanted(member))
                    .flat_map(|(score, member)| [Reply::bulk(member.clone()), Reply::score(*score)])
                    .collect(),
            };
            Reply::Array(vec![
                Reply::bulk(Bytes::from_static(b"0")),
                Reply::Array(items),
            ])
        }
        TypedOp::Persist { key } => {
            let persisted = data.expires_at(&key).is_some() && data.set_expiry(&key, None);
            Reply::Integer(i64::from(persisted))
        }
        TypedOp::Ttl {
            key,
            milliseconds,
            absolute,
        } => match data.record(&key) {
            None => Reply::Integer(-2),
            Some(Record {
                expires_at: None, ..
            }) => Reply::Integer(-1),
            Some(Record {
                expires_at: Some(at),
                ..
            }) => {
                let at = *at;
                let answer = match (absolute, milliseconds) {
                    (true, true) => at,
                    (true, false) => at / 1000,
                    (false, true) => at.saturating_sub(now),
                    // Rounded to the nearest second, as Redis does.
                    (false, false) => (at.saturating_sub(now) + 500) / 1000,
                };
                Reply::Integer(i64::try_from(answer).unwrap_or(i64::MAX))
            }
        },
        TypedOp::GetEx { key, change } => match data.get(&key) {
            None => Reply::Bulk(None),
            Some(Value::String(value)) => {
                let value = value.clone();
                match change {
                    GetExChange::Keep => {}
                    GetExChange::Persist => {
                        data.set_expiry(&key, None);
                    }
                    GetExChange::Expire(deadline) => {
                        let at = deadline.resolve(now);
                        if at <= now {
                            data.remove_mut(&key);
                        } else {
                            data.set_expiry(&key, Some(at));
                        }
                    }
                }
                Reply::bulk(value)
            }
            Some(_) => return Err(wrong_type()),
        },
        TypedOp::Type { key } => {
            Reply::Status(data.get(&key).map_or("none", Value::type_name).to_owned())
        }
        TypedOp::GetDel { key } => match data.get(&key) {
            None => Reply::Bulk(None),
            Some(Value::String(value)) => {
                let value = value.clone();
                data.remove_mut(&key);
                Reply::bulk(value)
            }
            Some(_) => return Err(wrong_type()),
        },
        TypedOp::Rename {
            from,
            to,
            only_if_absent,
        } => {
            // The record moves whole: the new name keeps the old one's expiry, as in Redis.
            let Some(record) = data.record(&from).cloned() else {
                return Err(Reply::error("ERR no such key"));
            };
            if only_if_absent && data.contains_key(&to) {
                return Ok(Reply::Integer(0));
            }
            data.remove_mut(&from);
            data.insert_record(to, record);
            if only_if_absent {
                Reply::Integer(1)
            } else {
                Reply::ok()
            }
        }
        TypedOp::Copy {
            source,
            destination,
            replace,
        } => {
            if source == destination {
                return Err(Reply::error(
                    "ERR source and destination objects are the same",
                ));
            }
            let Some(record) = data.record(&source).cloned() else {
                return Ok(Reply::Integer(0));
            };
            if !replace && data.contains_key(&destination) {
                return Ok(Reply::Integer(0));
            }
            // The copy shares the collection until either side changes (copy on write), and
            // takes the source's expiry, as in Redis.
            data.insert_record(destination, record);
            Reply::Integer(1)
        }
        TypedOp::Keys { pattern } => Reply::bulks(
            data.keys()
                .filter(|key| glob_match(&pattern, key))
                .collect::<Vec<_>>(),
        ),
        TypedOp::Scan {
            cursor,
            pattern,
            type_name,
        } => {
            let keys: Vec<&Bytes> = data
                .iter()
                .filter(|(key, value)| {
                    cursor == 0
                        && pattern.as_ref().is_none_or(|p| glob_match(p, key))
                        && type_name
                            .as_ref()
                            .is_none_or(|t| t.eq_ignore_ascii_case(value.type_name().as_bytes()))
                })
                .map(|(key, _)| key)
                .collect();
            Reply::Array(vec![
                Reply::bulk(Bytes::from_static(b"0")),
                Reply::bulks(keys),
            ])
        }
        TypedOp::FlushAll => {
            data.clear();
            Reply::ok()
        }
        TypedOp::HSet {
            key,
            pairs,
            legacy_ok,
        } => {
            let added = update(data, &key, true, |hash: &mut BTreeMap<Bytes, Bytes>| {
                Ok(pairs
                    .into_iter()
                    .filter(|(field, value)| hash.insert(field.clone(), value.clone()).is_none())
                    .count())
            })?
            .unwrap_or(0);
            if legacy_ok {
                Reply::ok()
            } else {
                Reply::count(added)
            }
        }
        TypedOp::HSetNx { key, field, value } => {
            let added = update(data, &key, true, |hash: &mut BTreeMap<Bytes, Bytes>| {
                Ok(match hash.entry(field) {
                    std::collections::btree_map::Entry::Occupied(_) => 0,
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        slot.insert(value);
                        1
                    }
                })
            })?;
            Reply::Integer(added.unwrap_or(0))
        }
        TypedOp::HGet { key, field } => {
            let hash = read::<BTreeMap<Bytes, Bytes>>(data, &key)?;
            Reply::Bulk(hash.and_then(|hash| hash.get(&field).cloned()))
        }
        TypedOp::HMGet { key, fields } => {
            let hash = read::<BTreeMap<Bytes, Bytes>>(data, &key)?;
            Reply::Array(
                fields
                    .iter()
                    .map(|field| Reply::Bulk(hash.and_then(|hash| hash.get(field).cloned())))
                    .collect(),
            )
        }
        TypedOp::HDel { key, fields } => {
            let removed = update(data, &key, false, |hash: &mut BTreeMap<Bytes, Bytes>| {
                Ok(fields
                    .iter()
                    .filter(|field| hash.remove(*field).is_some())
                    .count())
            })?;
            Reply::count(removed.unwrap_or(0))
        }
        TypedOp::HExists { key, field } => {
            let hash = read::<BTreeMap<Bytes, Bytes>>(data, &key)?;
            Reply::Integer(i64::from(
                hash.is_some_and(|hash| hash.contains_key(&field)),
            ))
        }
        TypedOp::HLen { key } => {
            Reply::count(read::<BTreeMap<Bytes, Bytes>>(data, &key)?.map_or(0, BTreeMap::len))
        }
        TypedOp::HStrlen { key, field } => {
            let hash = read::<BTreeMap<Bytes, Bytes>>(data, &key)?;
            Reply::count(hash.and_then(|hash| hash.get(&field)).map_or(0, Bytes::len))
        }
        TypedOp::HGetAll {
            key,
            fields,
            values,
        } => {
            let mut items = Vec::new();
            if let Some(hash) = read::<BTreeMap<Bytes, Bytes>>(data, &key)? {
                for (field, value) in hash {
                    if fields {
                        items.push(Reply::bulk(field.clone()));
                    }
                    if values {
                        items.push(Reply::bulk(value.clone()));
                    }
                }
            }
            Reply::Array(items)
        }
        TypedOp::HIncrBy { key, field, delta } => {
            let updated = update(data, &key, true, |hash: &mut BTreeMap<Bytes, Bytes>| {
                let current = match hash.get(&field) {
                    None => 0,
                    Some(value) => crate::store::parse_integer(value)
                        .ok_or_else(|| Reply::error("ERR hash value is not an integer"))?,
                };
                let updated = current
                    .checked_add(delta)
                    .ok_or_else(|| Reply::error("ERR increment or decrement would overflow"))?;
                hash.insert(field, Bytes::from(updated.to_string()));
                Ok(updated)
            })?;
            Reply::Integer(updated.unwrap_or(0))
        }
        TypedOp::Push {
            key,
            values,
            left,
            only_if_exists,
        } => {
            let len = update(data, &key, !only_if_exists, |list: &mut VecDeque<Bytes>| {
                for value in values {
                    if left {
                        list.push_front(value);
                    } else {
                        list.push_back(value);
                    }
                }
                Ok(list.len())
            })?;
            Reply::count(len.unwrap_or(0))
        }
        TypedOp::Pop { key, left, count } => {
            let popped = update(data, &key, false, |list: &mut VecDeque<Bytes>| {
                let wanted = count.map_or(1, |count| usize::try_from(count).unwrap_or(usize::MAX));
                let mut popped = Vec::new();
                while popped.len() < wanted {
                    let Some(value) = (if left {
                        list.pop_front()
                    } else {
                        list.pop_back()
                    }) else {
                        break;
                    };
                    popped.push(value);
                }
                Ok(popped)
            })?;
            match (popped, count) {
                (None, None) => Reply::Bulk(None),
                (None, Some(_)) => Reply::NullArray,
                (Some(popped), None) => Reply::Bulk(popped.into_iter().next()),
                (Some(popped), Some(_)) => Reply::bulks(&popped),
            }
        }
        TypedOp::LLen { key } => {
            Reply::count(read::<VecDeque<Bytes>>(data, &key)?.map_or(0, VecDeque::len))
        }
        TypedOp::LRange { key, start, stop } => {
            let list = read::<VecDeque<Bytes>>(data, &key)?;
            match list.and_then(|list| Some((list, index_range(start, stop, list.len())?))) {
                None => Reply::Array(Vec::new()),
                Some((list, (first, last))) => Reply::bulks(list.range(first..=last)),
            }
        }
        TypedOp::LIndex { key, index } => {
            let list = read::<VecDeque<Bytes>>(data, &key)?;
            Reply::Bulk(list.and_then(|list| list.get(one_index(index, list.len())?).cloned()))
        }
        TypedOp::LSet { key, index, value } => {
            let set = update(data, &key, false, |list: &mut VecDeque<Bytes>| {
                let position = one_index(index, list.len())
                    .ok_or_else(|| Reply::error("ERR index out of range"))?;
                list[position] = value;
                Ok(())
            })?;
            match set {
                Some(()) => Reply::ok(),
                None => return Err(Reply::error("ERR no such key")),
            }
        }
        TypedOp::LRem { key, count, value } => {
            let removed = update(data, &key, false, |list: &mut VecDeque<Bytes>| {
                let limit = if count == 0 {
                    usize::MAX
                } else {
                    usize::try_from(count.unsigned_abs()).unwrap_or(usize::MAX)
                };
                let mut removed = 0;
                if count >= 0 {
                    let mut kept = VecDeque::with_capacity(list.len());
                    for item in list.drain(..) {
                        if removed < limit && item == value {
                            removed += 1;
                        } else {
                            kept.push_back(item);
                        }
                    }
                    *list = kept;
                } else {
                    let mut kept = VecDeque::with_capacity(list.len());
                    while let Some(item) = list.pop_back() {
                        if removed < limit && item == value {
                            removed += 1;
                        } else {
                            kept.push_front(item);
                        }
                    }
                    *list = kept;
                }
                Ok(removed)
            })?;
            Reply::count(removed.unwrap_or(0))
        }
        TypedOp::LTrim { key, start, stop } => {
            update(data, &key, false, |list: &mut VecDeque<Bytes>| {
                match index_range(start, stop, list.len()) {
                    None => list.clear(),
                    Some((first, last)) => {
                        list.truncate(last + 1);
                        list.drain(..first);
                    }
                }
                Ok(())
            })?;
            Reply::ok()
        }
        TypedOp::LMove {
            source,
            destination,
            from_left,
            to_left,
        } => {
            // As Redis: a missing source answers nil whatever the destination holds; both
            // types are checked before anything changes.
            if read::<VecDeque<Bytes>>(data, &source)?.is_none() {
                return Ok(Reply::Bulk(None));
            }
            read::<VecDeque<Bytes>>(data, &destination)?;
            let popped = update(data, &source, false, |list: &mut VecDeque<Bytes>| {
                Ok(if from_left {
                    list.pop_front()
                } else {
                    list.pop_back()
                })
            })?
            .flatten();
            let Some(value) = popped else {
                return Ok(Reply::Bulk(None));
            };
            update(data, &destination, true, |list: &mut VecDeque<Bytes>| {
                if to_left {
                    list.push_front(value.clone());
                } else {
                    list.push_back(value.clone());
                }
                Ok(())
            })?;
            Reply::bulk(value)
        }
        TypedOp::SAdd { key, members } => {
            let added = update(data, &key, true, |set: &mut BTreeSet<Bytes>| {
                Ok(members
                    .into_iter()
                    .filter(|member| set.insert(member.clone()))
                    .count())
            })?;
            Reply::count(added.unwrap_or(0))
        }
        TypedOp::SRem { key, members } => {
            let removed = update(data, &key, false, |set: &mut BTreeSet<Bytes>| {
                Ok(members.iter().filter(|member| set.remove(*member)).count())
            })?;
            Reply::count(removed.unwrap_or(0))
        }
        TypedOp::SMembers { key } => {
            Reply::bulks(read::<BTreeSet<Bytes>>(data, &key)?.into_iter().flatten())
        }
        TypedOp::SIsMember { key, members, many } => {
            let set = read::<BTreeSet<Bytes>>(data, &key)?;
            let mut answers = members
                .iter()
                .map(|member| Reply::Integer(i64::from(set.is_some_and(|s| s.contains(member)))));
            if many {
                Reply::Array(answers.collect())
            } else {
                answers.next().unwrap_or(Reply::Integer(0))
            }
        }
        TypedOp::SCard { key } => {
            Reply::count(read::<BTreeSet<Bytes>>(data, &key)?.map_or(0, BTreeSet::len))
        }
        TypedOp::SPop { key, count } => {
            let mut prng = Prng::new(seed);
            let popped = update(data, &key, false, |set: &mut BTreeSet<Bytes>| {
                let wanted = count.map_or(1, |count| usize::try_from(count).unwrap_or(usize::MAX));
                if wanted >= set.len() {
                    return Ok(std::mem::take(set).into_iter().collect::<Vec<_>>());
                }
                let mut popped = Vec::with_capacity(wanted);
                for _ in 0..wanted {
                    let position = prng.index(set.len());
                    let member = set
                        .iter()
                        .nth(position)
                        .cloned()
                        .expect("invariant: the position is below the set's size");
                    set.remove(&member);
                    popped.push(member);
                }
                Ok(popped)
            })?;
            match count {
                None => Reply::Bulk(popped.and_then(|popped| popped.into_iter().next())),
                Some(_) => Reply::bulks(popped.iter().flatten()),
            }
        }
        TypedOp::SetAlgebra {
            algebra,
            keys,
            destination,
        } => {
            let mut sets = Vec::with_capacity(keys.len());
            for key in &keys {
                sets.push(read::<BTreeSet<Bytes>>(data, key)?);
            }
            let empty = BTreeSet::new();
            let result: BTreeSet<Bytes> = match algebra {
                SetAlgebra::Intersection => {
                    if sets.iter().any(Option::is_none) {
                        BTreeSet::new()
                    } else {
                        let mut all = sets.iter().flatten();
                        let first = all.next().copied().unwrap_or(&empty);
                        let rest: Vec<&BTreeSet<Bytes>> = all.copied().collect();
                        first
                            .iter()
                            .filter(|member| rest.iter().all(|set| set.contains(*member)))
                            .cloned()
                            .collect()
                    }
                }
                SetAlgebra::Union => sets
                    .iter()
                    .flatten()
                    .flat_map(|set| set.iter())
                    .cloned()
                    .collect(),
                SetAlgebra::Difference => {
                    let first = sets.first().copied().flatten().unwrap_or(&empty);
                    first
                        .iter()
                        .filter(|member| {
                            !sets[1..].iter().flatten().any(|set| set.contains(*member))
                        })
                        .cloned()
                        .collect()
                }
            };
            match destination {
                None => Reply::bulks(&result),
                Some(destination) => {
                    let size = result.len();
                    if result.is_empty() {
                        data.remove_mut(&destination);
                    } else {
                        data.insert_mut(destination, Value::Set(Arc::new(result)));
                    }
                    Reply::count(size)
                }
            }
        }
        TypedOp::ZAdd { key, flags, pairs } => zadd(data, &key, flags, pairs)?,
        TypedOp::ZIncrBy { key, delta, member } => zadd(
            data,
            &key,
            ZAddFlags {
                incr: true,
                ..ZAddFlags::default()
            },
            vec![(delta, member)],
        )?,
        TypedOp::ZRem { key, members } => {
            let removed = update(data, &key, false, |zset: &mut SortedSet| {
                Ok(members.iter().filter(|member| zset.remove(member)).count())
            })?;
            Reply::count(removed.unwrap_or(0))
        }
        TypedOp::ZScore { key, members, many } => {
            let zset = read::<SortedSet>(data, &key)?;
            let mut scores = members.iter().map(|member| {
                zset.and_then(|zset| zset.score(member))
                    .map_or(Reply::Bulk(None), Reply::score)
            });
            if many {
                Reply::Array(scores.collect())
            } else {
                scores.next().unwrap_or(Reply::Bulk(None))
            }
        }
        TypedOp::ZCard { key } => {
            Reply::count(read::<SortedSet>(data, &key)?.map_or(0, SortedSet::len))
        }
        TypedOp::ZRank {
            key,
            member,
            reverse,
        } => {
            let zset = read::<SortedSet>(data, &key)?;
            match zset.and_then(|zset| Some((zset.len(), zset.rank(&member)?))) {
                None => Reply::Bulk(None),
                Some((len, rank)) => Reply::count(if reverse { len - 1 - rank } else { rank }),
            }
        }
        TypedOp::ZCount { key, min, max } => {
            let zset = read::<SortedSet>(data, &key)?;
            Reply::count(zset.map_or(0, |zset| {
                zset.by_score()
                    .filter(|(score, _)| min.below(score.0) && max.above(score.0))
                    .count()
            }))
        }
        TypedOp::ZRange {
            key,
            by,
            reverse,
            limit,
            with_scores,
        } => {
            let Some(zset) = read::<SortedSet>(data, &key)? else {
                return Ok(Reply::Array(Vec::new()));
            };
            let ordered: Vec<&(Score, Bytes)> = if reverse {
                zset.by_score().rev().collect()
            } else {
                zset.by_score().collect()
            };
            let selected: Vec<&(Score, Bytes)> = match &by {
                RangeBy::Rank { start, stop } => match index_range(*start, *stop, ordered.len()) {
                    None => Vec::new(),
                    Some((first, last)) => ordered[first..=last].to_vec(),
                },
                RangeBy::Score { min, max } => ordered
                    .into_iter()
                    .filter(|(score, _)| min.below(score.0) && max.above(score.0))
                    .collect(),
                RangeBy::Lex { min, max } => ordered
                    .into_iter()
                    .filter(|(_, member)| {
                        min.at_or_after_min(member) && max.at_or_before_max(member)
                    })
                    .collect(),
            };
            let selected: Vec<&(Score, Bytes)> = match limit {
                None => selected,
                Some((offset, count)) => {
                    if offset < 0 {
                        Vec::new()
                    } else {
                        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
                        let count = if count < 0 {
                            usize::MAX
                        } else {
                            usize::try_from(count).unwrap_or(usize::MAX)
                        };
                        selected.into_iter().skip(offset).take(count).collect()
                    }
                }
            };
            let mut items = Vec::new();
            for (score, member) in selected {
                items.push(Reply::bulk(member.clone()));
                if with_scores {
                    items.push(Reply::score(*score));
                }
            }
            Reply::Array(items)
        }
        TypedOp::ZPop { key, max, count } => {
            let popped = update(data, &key, false, |zset: &mut SortedSet| {
                let wanted = count.map_or(1, |count| usize::try_from(count).unwrap_or(usize::MAX));
                let mut popped = Vec::new();
                while popped.len() < wanted {
                    let next = if max {
                        zset.by_score().next_back()
                    } else {
                        zset.by_score().next()
                    };
                    let Some((score, member)) = next.cloned() else {
                        break;
                    };
                    zset.remove(&member);
                    popped.push((score, member));
                }
                Ok(popped)
            })?;
            let mut items = Vec::new();
            for (score, member) in popped.into_iter().flatten() {
                items.push(Reply::bulk(member));
                items.push(Reply::score(score));
            }
            Reply::Array(items)
        }
    })
}

/// `ZADD` (and `ZINCRBY`, as `ZADD INCR`).
fn zadd(
    data: &mut Map,
    key: &Bytes,
    flags: ZAddFlags,
    pairs: Vec<(Score, Bytes)>,
) -> Outcome<Reply> {
    let outcome = update(data, key, !flags.xx, |zset: &mut SortedSet| {
        // A NaN can only come from INCR, which takes one pair, so refusing it before the
        // first change leaves the set unchanged.
        let mut added = 0usize;
        let mut changed = 0usize;
        let mut incremented = None;
        for (score, member) in pairs {
            match zset.score(&member) {
                Some(current) => {
                    if flags.nx {
                        continue;
                    }
                    let new = if flags.incr {
                        let sum = current.0 + score.0;
                        if sum.is_nan() {
                            return Err(Reply::error("ERR resulting score is not a number (NaN)"));
                        }
                        sum
                    } else {
                        score.0
                    };
                    if (flags.gt && new <= current.0) || (flags.lt && new >= current.0) {
                        continue;
                    }
                    incremented = Some(Score(new));
                    if new != current.0 {
                        changed += 1;
                        zset.insert(member, Score(new));
                    }
                }
                None => {
                    if flags.xx {
                        continue;
                    }
                    added += 1;
                    incremented = Some(score);
                    zset.insert(member, score);
                }
            }
        }
        Ok((added, changed, incremented))
    })?;
    let (added, changed, incremented) = outcome.unwrap_or((0, 0, None));
    Ok(if flags.incr {
        incremented.map_or(Reply::Bulk(None), Reply::score)
    } else if flags.ch {
        Reply::count(added + changed)
    } else {
        Reply::count(added)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    fn run(data: &mut Map, op: TypedOp) -> Reply {
        execute(data, LogIndex(1), 0, op)
    }

    /// Proves scores print as Redis 7.0's `%.17g` does.
    #[test]
    fn scores_format_like_printf_17g() {
        for (value, text) in [
            (1.0, "1"),
            (1.5, "1.5"),
            (-2.25, "-2.25"),
            (0.1, "0.10000000000000001"),
            (1.1, "1.1000000000000001"),
            (1e17, "1e+17"),
            (12345678901234567.0, "12345678901234568"),
            (0.0001, "0.0001"),
            (0.00001, "1.0000000000000001e-05"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (0.0, "0"),
        ] {
            assert_eq!(format_score(value), text, "{value}");
        }
    }

    /// Proves the glob matcher follows Redis's rules.
    #[test]
    fn glob_patterns() {
        for (pattern, text, expected) in [
            ("*", "", true),
            ("h?llo", "hello", true),
            ("h*llo", "heeeello", true),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h\\*llo", "h*llo", true),
            ("h\\*llo", "hello", false),
            ("user:*", "user:1", true),
            ("user:*", "users", false),
        ] {
            assert_eq!(
                glob_match(pattern.as_bytes(), text.as_bytes()),
                expected,
                "{pattern} {text}"
            );
        }
    }

    /// Proves a collection emptied by an operation is removed, and a wrong type is refused
    /// without changes.
    #[test]
    fn empty_collections_vanish_and_wrong_types_are_refused() {
        let mut data = Map::new_sync();
        run(
            &mut data,
            TypedOp::SAdd {
                key: b("s"),
                members: vec![b("a")],
            },
        );
        assert_eq!(
            run(
                &mut data,
                TypedOp::HGet {
                    key: b("s"),
                    field: b("f")
                }
            ),
            Reply::error(WRONGTYPE)
        );
        assert_eq!(
            run(
                &mut data,
                TypedOp::SRem {
                    key: b("s"),
                    members: vec![b("a")],
                }
            ),
            Reply::Integer(1)
        );
        assert!(data.is_empty());
    }

    /// Proves `ZSCAN` walks by score, filters members by pattern, answers one page, and
    /// refuses a key of another type.
    #[test]
    fn collection_scans_answer_one_page() {
        let mut data = Map::new_sync();
        run(
            &mut data,
            TypedOp::ZAdd {
                key: b("z"),
                flags: ZAddFlags::default(),
                pairs: vec![
                    (Score(3.0), b("ab")),
                    (Score(1.0), b("b")),
                    (Score(2.0), b("a")),
                ],
            },
        );
        let scan = |data: &mut Map, kind: ScanKind, cursor: u64, pattern: Option<&str>| {
            run(
                data,
                TypedOp::ScanCollection {
                    key: b("z"),
                    kind,
                    cursor,
                    pattern: pattern.map(b),
                },
            )
        };
        let page = |items: Vec<Reply>| Reply::Array(vec![Reply::bulk(b("0")), Reply::Array(items)]);
        assert_eq!(
            scan(&mut data, ScanKind::SortedSet, 0, Some("a*")),
            page(vec![
                Reply::bulk(b("a")),
                Reply::score(Score(2.0)),
                Reply::bulk(b("ab")),
                Reply::score(Score(3.0)),
            ])
        );
        assert_eq!(scan(&mut data, ScanKind::SortedSet, 7, None), page(vec![]));
        assert_eq!(
            scan(&mut data, ScanKind::Hash, 0, None),
            Reply::error(WRONGTYPE)
        );
    }

    /// Proves `SRANDMEMBER` depends only on the set and the log index of the state read, and
    /// keeps Redis's counts: distinct members for a positive count (the whole set at most),
    /// draws with repetition for a negative one; it changes nothing.
    #[test]
    fn srandmember_is_seeded_by_the_log_index_and_keeps_counts() {
        let mut data = Map::new_sync();
        run(
            &mut data,
            TypedOp::SAdd {
                key: b("s"),
                members: (0..50).map(|n| b(&n.to_string())).collect(),
            },
        );
        let draw = |data: &mut Map, index: u64, count: Option<i64>| {
            execute(
                data,
                LogIndex(index),
                0,
                TypedOp::SRandMember { key: b("s"), count },
            )
        };
        let members = |reply: Reply| match reply {
            Reply::Array(items) => items,
            other => panic!("not an array: {other:?}"),
        };
        assert_eq!(draw(&mut data, 7, Some(5)), draw(&mut data, 7, Some(5)));
        assert_ne!(draw(&mut data, 7, Some(5)), draw(&mut data, 8, Some(5)));
        let distinct = members(draw(&mut data, 7, Some(20)));
        assert_eq!(distinct.len(), 20);
        assert_eq!(
            distinct
                .iter()
                .map(|member| format!("{member:?}"))
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            20
        );
        assert_eq!(members(draw(&mut data, 7, Some(500))).len(), 50);
        let repeated = members(draw(&mut data, 7, Some(-200)));
        assert_eq!(repeated.len(), 200);
        assert!(
            repeated
                .iter()
                .map(|member| format!("{member:?}"))
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                < 200
        );
        assert!(matches!(draw(&mut data, 7, None), Reply::Bulk(Some(_))));
        let mut unchanged = Map::new_sync();
        run(
            &mut unchanged,
            TypedOp::SAdd {
                key: b("s"),
                members: (0..50).map(|n| b(&n.to_string())).collect(),
            },
        );
        assert_eq!(data, unchanged);
    }

    /// Proves `LINSERT` and `LPOS` follow Redis 7.0: the first pivot, -1 without one; ranks
    /// from either end, `COUNT 0` for every match, `MAXLEN` bounding the walk.
    #[test]
    fn linsert_and_lpos() {
        let mut data = Map::new_sync();
        let list = |words: &str| words.split(' ').map(b).collect::<Vec<_>>();
        run(
            &mut data,
            TypedOp::Push {
                key: b("l"),
                values: list("a c b c"),
                left: false,
                only_if_exists: false,
            },
        );
        let insert = |data: &mut Map, before: bool, pivot: &str| {
            run(
                data,
                TypedOp::LInsert {
                    key: b("l"),
                    before,
                    pivot: b(pivot),
                    element: b("x"),
                },
            )
        };
        assert_eq!(insert(&mut data, true, "c"), Reply::Integer(5));
        assert_eq!(insert(&mut data, false, "nothing"), Reply::Integer(-1));
        // a x c b c
        let lpos = |data: &mut Map, rank: i64, count: Option<u64>, maxlen: u64| {
            run(
                data,
                TypedOp::LPos {
                    key: b("l"),
                    element: b("c"),
                    rank,
                    count,
                    maxlen,
                },
            )
        };
        let indexes =
            |values: &[i64]| Reply::Array(values.iter().map(|v| Reply::Integer(*v)).collect());
        assert_eq!(lpos(&mut data, 1, None, 0), Reply::Integer(2));
        assert_eq!(lpos(&mut data, 2, None, 0), Reply::Integer(4));
        assert_eq!(lpos(&mut data, -1, None, 0), Reply::Integer(4));
        assert_eq!(lpos(&mut data, 3, None, 0), Reply::Bulk(None));
        assert_eq!(lpos(&mut data, 1, Some(0), 0), indexes(&[2, 4]));
        assert_eq!(lpos(&mut data, -1, Some(0), 0), indexes(&[4, 2]));
        assert_eq!(lpos(&mut data, 1, Some(0), 3), indexes(&[2]));
        assert_eq!(lpos(&mut data, i64::MIN, Some(1), 0), indexes(&[4, 2]));
    }

    /// Proves `SPOP` depends only on the set and the log index.
    #[test]
    fn spop_is_seeded_by_the_log_index() {
        let pop = |index: u64| {
            let mut data = Map::new_sync();
            execute(
                &mut data,
                LogIndex(1),
                0,
                TypedOp::SAdd {
                    key: b("s"),
                    members: (0..50).map(|n| b(&n.to_string())).collect(),
                },
            );
            execute(
                &mut data,
                LogIndex(index),
                0,
                TypedOp::SPop {
                    key: b("s"),
                    count: Some(5),
                },
            )
        };
        assert_eq!(pop(7), pop(7));
        assert_ne!(pop(7), pop(8));
    }

    /// Proves ZADD's flags follow Redis: GT/LT compare, CH counts changes, INCR answers the
    /// new score or nil.
    #[test]
    fn zadd_flags() {
        let mut data = Map::new_sync();
        let zadd = |data: &mut Map, flags: ZAddFlags, score: f64| {
            run(
                data,
                TypedOp::ZAdd {
                    key: b("z"),
                    flags,
                    pairs: vec![(Score(score), b("m"))],
                },
            )
        };
        assert_eq!(
            zadd(&mut data, ZAddFlags::default(), 5.0),
            Reply::Integer(1)
        );
        let gt_ch = ZAddFlags {
            gt: true,
            ch: true,
            ..ZAddFlags::default()
        };
        assert_eq!(zadd(&mut data, gt_ch, 3.0), Reply::Integer(0));
        assert_eq!(zadd(&mut data, gt_ch, 7.0), Reply::Integer(1));
        let incr_nx = ZAddFlags {
            incr: true,
            nx: true,
            ..ZAddFlags::default()
        };
        assert_eq!(zadd(&mut data, incr_nx, 1.0), Reply::Bulk(None));
        let incr = ZAddFlags {
            incr: true,
            ..ZAddFlags::default()
        };
        assert_eq!(zadd(&mut data, incr, 1.5), Reply::bulk(b("8.5")));
    }
}
