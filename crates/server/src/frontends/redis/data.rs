//! Parsing of the Redis commands on typed values (hashes, lists, sets, sorted sets, the key
//! space) into [`TypedOp`]s, with Redis 7.0's arities and error texts.
//!
//! It exists apart from [`super::command`] because these commands all share one shape: check
//! the arity from [`super::spec::COMMANDS`], read the options, and hand a [`TypedOp`] to
//! the state machine, which answers with a Redis-shaped reply. Errors that depend on data
//! (`WRONGTYPE`, a hash value that is not an integer) come from the state machine instead.

use bytes::Bytes;
use chorus_kv::typed::{
    Deadline, ExpireCondition, GetExChange, LexBound, RangeBy, ScanKind, Score, ScoreBound,
    SetAlgebra, TypedOp, ZAddFlags, parse_score,
};

use super::resp::parse_integer;
use super::spec::{CommandError, command_spec};

/// The typed commands' names, lowercase (each also described in `COMMANDS`).
const TYPED: &[&str] = &[
    "copy",
    "expire",
    "expireat",
    "expiretime",
    "flushall",
    "flushdb",
    "getdel",
    "getex",
    "hdel",
    "hexists",
    "hget",
    "hgetall",
    "hincrby",
    "hincrbyfloat",
    "hkeys",
    "hlen",
    "hmget",
    "hmset",
    "hscan",
    "hset",
    "hsetnx",
    "hstrlen",
    "hvals",
    "incrbyfloat",
    "keys",
    "lindex",
    "linsert",
    "llen",
    "lmove",
    "lpop",
    "lpos",
    "lpush",
    "lpushx",
    "lrange",
    "lrem",
    "lset",
    "ltrim",
    "persist",
    "pexpire",
    "pexpireat",
    "pexpiretime",
    "pttl",
    "randomkey",
    "rename",
    "renamenx",
    "rpop",
    "rpoplpush",
    "rpush",
    "rpushx",
    "sadd",
    "scan",
    "scard",
    "sdiff",
    "sdiffstore",
    "sinter",
    "sinterstore",
    "sismember",
    "smembers",
    "smismember",
    "spop",
    "srandmember",
    "srem",
    "sscan",
    "sunion",
    "sunionstore",
    "ttl",
    "type",
    "zadd",
    "zcard",
    "zcount",
    "zincrby",
    "zmscore",
    "zpopmax",
    "zpopmin",
    "zrange",
    "zrangebylex",
    "zrangebyscore",
    "zrank",
    "zrem",
    "zrevrange",
    "zrevrangebylex",
    "zrevrangebyscore",
    "zrevrank",
    "zscan",
    "zscore",
];

const NOT_A_FLOAT: &str = "ERR value is not a valid float";
const BOUND_NOT_A_FLOAT: &str = "ERR min or max is not a float";
const BOUND_NOT_LEX: &str = "ERR min or max not valid string range item";
const NOT_POSITIVE: &str = "ERR value is out of range, must be positive";
const LONG_OUT_OF_RANGE: &str =
    "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807";
/// The most draws `SRANDMEMBER key -count` answers: Redis streams any number, but Chorus
/// builds a reply in memory, so a huge count must not exhaust a node.
pub(super) const SRANDMEMBER_DRAWS_MAX: u64 = 1_000_000;
const TOO_MANY_DRAWS: &str = "ERR value is out of range, Chorus draws at most 1000000 members";

/// Parses a typed command, `name` lowercase: `None` if `name` is not one, else the operation
/// (and its lowercase Redis name) or Redis's error.
pub(super) fn parse(
    name: &[u8],
    arguments: &[Bytes],
) -> Option<Result<(&'static str, TypedOp), CommandError>> {
    let spec = command_spec(name)?;
    let name = *TYPED.iter().find(|typed| typed.as_bytes() == name)?;
    let words = arguments.len() + 1;
    let arity = usize::try_from(spec.arity.unsigned_abs()).unwrap_or(usize::MAX);
    if (spec.arity > 0 && words != arity) || (spec.arity < 0 && words < arity) {
        return Some(Err(CommandError::WrongArity { command: spec.name }));
    }
    Some(parse_checked(name, arguments).map(|op| (name, op)))
}

fn invalid(text: &'static str) -> CommandError {
    CommandError::Invalid(text)
}

fn integer(word: &[u8]) -> Result<i64, CommandError> {
    parse_integer(word).ok_or(CommandError::NotAnInteger)
}

/// A count that must not be negative (`LPOP key count`, `SPOP`, `ZPOPMIN`).
fn count(word: &[u8]) -> Result<u64, CommandError> {
    u64::try_from(integer(word)?).map_err(|_| invalid(NOT_POSITIVE))
}

fn float(word: &[u8]) -> Result<Score, CommandError> {
    parse_score(word).map(Score).ok_or(invalid(NOT_A_FLOAT))
}

fn score_bound(word: &[u8]) -> Result<ScoreBound, CommandError> {
    ScoreBound::parse(word).ok_or(invalid(BOUND_NOT_A_FLOAT))
}

fn lex_bound(word: &Bytes) -> Result<LexBound, CommandError> {
    LexBound::parse(word).ok_or(invalid(BOUND_NOT_LEX))
}

fn side(word: &[u8]) -> Result<bool, CommandError> {
    if word.eq_ignore_ascii_case(b"left") {
        Ok(true)
    } else if word.eq_ignore_ascii_case(b"right") {
        Ok(false)
    } else {
        Err(CommandError::Syntax)
    }
}

fn pairs(words: &[Bytes]) -> Vec<(Bytes, Bytes)> {
    words
        .chunks_exact(2)
        .map(|pair| (pair[0].clone(), pair[1].clone()))
        .collect()
}

/// The wall clock in Unix milliseconds, what Redis checks a relative expiry time's overflow
/// against. The state machine resolves the time itself, from the log clock; this only
/// refuses, as Redis does, a time that would overflow.
fn wall_clock_ms() -> i64 {
    i64::try_from(crate::runtime::boundary::wall_clock_ms()).unwrap_or(i64::MAX)
}

/// The units and base of an expiry option or command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ExpiryUnit {
    /// Seconds (`EX`, `EXAT`, `EXPIRE`, `EXPIREAT`), else milliseconds.
    pub(super) seconds: bool,
    /// From now (`EX`, `PX`, `EXPIRE`, `PEXPIRE`), else a Unix time.
    pub(super) relative: bool,
}

impl ExpiryUnit {
    /// The unit of a `SET`/`GETEX` option, if `word` is one.
    pub(super) fn option(word: &[u8]) -> Option<ExpiryUnit> {
        let unit = |seconds, relative| Some(ExpiryUnit { seconds, relative });
        if word.eq_ignore_ascii_case(b"ex") {
            unit(true, true)
        } else if word.eq_ignore_ascii_case(b"px") {
            unit(false, true)
        } else if word.eq_ignore_ascii_case(b"exat") {
            unit(true, false)
        } else if word.eq_ignore_ascii_case(b"pxat") {
            unit(false, false)
        } else {
            None
        }
    }

    fn deadline(self, milliseconds: i64) -> Deadline {
        if self.relative {
            Deadline::After(milliseconds)
        } else {
            Deadline::At(milliseconds)
        }
    }
}

/// The time of a `SET`/`GETEX` expiry option, checked as Redis does: a positive integer
/// whose absolute time in milliseconds fits an `i64`.
pub(super) fn option_deadline(
    word: &[u8],
    unit: ExpiryUnit,
    command: &'static str,
) -> Result<Deadline, CommandError> {
    let invalid = CommandError::InvalidExpireTime { command };
    let value = integer(word)?;
    if value <= 0 {
        return Err(invalid);
    }
    let milliseconds = if unit.seconds {
        value.checked_mul(1000).ok_or(invalid.clone())?
    } else {
        value
    };
    if unit.relative && milliseconds.checked_add(wall_clock_ms()).is_none() {
        return Err(invalid);
    }
    Ok(unit.deadline(milliseconds))
}

/// `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT key time [NX|XX|GT|LT]`: the options are read
/// first, then the time, as Redis does; a time in the past is allowed (it removes the key).
fn parse_expire(
    name: &'static str,
    arguments: &[Bytes],
    unit: ExpiryUnit,
) -> Result<TypedOp, CommandError> {
    let mut condition = ExpireCondition::default();
    for option in &arguments[2..] {
        let flag = if option.eq_ignore_ascii_case(b"nx") {
            &mut condition.nx
        } else if option.eq_ignore_ascii_case(b"xx") {
            &mut condition.xx
        } else if option.eq_ignore_ascii_case(b"gt") {
            &mut condition.gt
        } else if option.eq_ignore_ascii_case(b"lt") {
            &mut condition.lt
        } else {
            return Err(CommandError::UnsupportedOption {
                option: String::from_utf8_lossy(option).chars().take(128).collect(),
            });
        };
        *flag = true;
    }
    if condition.nx && (condition.xx || condition.gt || condition.lt) {
        return Err(invalid(
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if condition.gt && condition.lt {
        return Err(invalid(
            "ERR GT and LT options at the same time are not compatible",
        ));
    }
    let invalid_time = CommandError::InvalidExpireTime { command: name };
    let value = integer(&arguments[1])?;
    let milliseconds = if unit.seconds {
        value.checked_mul(1000).ok_or(invalid_time.clone())?
    } else {
        value
    };
    if unit.relative && milliseconds > 0 && milliseconds.checked_add(wall_clock_ms()).is_none() {
        return Err(invalid_time);
    }
    Ok(TypedOp::Expire {
        key: arguments[0].clone(),
        deadline: unit.deadline(milliseconds),
        condition,
    })
}

/// `GETEX key [EX|PX|EXAT|PXAT time | PERSIST]`: the options are read first (a second option
/// of another kind is a syntax error), then the time.
fn parse_getex(arguments: &[Bytes]) -> Result<TypedOp, CommandError> {
    let mut persist = false;
    let mut expiry: Option<(ExpiryUnit, &Bytes)> = None;
    let mut index = 1;
    while let Some(option) = arguments.get(index) {
        if option.eq_ignore_ascii_case(b"persist") && expiry.is_none() {
            persist = true;
        } else if let Some(unit) = ExpiryUnit::option(option)
            && !persist
            && expiry.is_none_or(|(previous, _)| previous == unit)
        {
            let time = arguments.get(index + 1).ok_or(CommandError::Syntax)?;
            expiry = Some((unit, time));
            index += 1;
        } else {
            return Err(CommandError::Syntax);
        }
        index += 1;
    }
    let change = match expiry {
        Some((unit, time)) => GetExChange::Expire(option_deadline(time, unit, "getex")?),
        None if persist => GetExChange::Persist,
        None => GetExChange::Keep,
    };
    Ok(TypedOp::GetEx {
        key: arguments[0].clone(),
        change,
    })
}

/// A scan's cursor and options: `MATCH pattern`, `COUNT n` (a hint, at least 1) and, for
/// `SCAN` only, `TYPE type`.
fn scan_options(
    cursor: &[u8],
    options: &[Bytes],
    with_type: bool,
) -> Result<(u64, Option<Bytes>, Option<Bytes>), CommandError> {
    let cursor = std::str::from_utf8(cursor)
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .ok_or(invalid("ERR invalid cursor"))?;
    let mut pattern = None;
    let mut type_name = None;
    let mut options = options.iter();
    while let Some(option) = options.next() {
        let value = options.next().ok_or(CommandError::Syntax)?;
        if option.eq_ignore_ascii_case(b"match") {
            pattern = Some(value.clone());
        } else if option.eq_ignore_ascii_case(b"count") {
            if integer(value)? < 1 {
                return Err(CommandError::Syntax);
            }
        } else if with_type && option.eq_ignore_ascii_case(b"type") {
            type_name = Some(value.clone());
        } else {
            return Err(CommandError::Syntax);
        }
    }
    Ok((cursor, pattern, type_name))
}

/// Parses after the arity check, so `arguments` has at least the fixed words.
fn parse_checked(name: &'static str, arguments: &[Bytes]) -> Result<TypedOp, CommandError> {
    let key = arguments.first().cloned().unwrap_or_default();
    let word = |index: usize| arguments.get(index).cloned().unwrap_or_default();
    let rest = |from: usize| arguments.get(from..).unwrap_or_default().to_vec();
    Ok(match name {
        "type" => TypedOp::Type { key },
        "expire" | "pexpire" | "expireat" | "pexpireat" => {
            let unit = ExpiryUnit {
                seconds: !name.starts_with('p'),
                relative: !name.ends_with("at"),
            };
            parse_expire(name, arguments, unit)?
        }
        "ttl" | "pttl" | "expiretime" | "pexpiretime" => TypedOp::Ttl {
            key,
            milliseconds: name.starts_with('p'),
            absolute: name.ends_with("expiretime"),
        },
        "persist" => TypedOp::Persist { key },
        "getex" => parse_getex(arguments)?,
        "getdel" => TypedOp::GetDel { key },
        "rename" | "renamenx" => TypedOp::Rename {
            from: key,
            to: word(1),
            only_if_absent: name == "renamenx",
        },
        "copy" => {
            let mut replace = false;
            let mut options = arguments[2..].iter();
            while let Some(option) = options.next() {
                if option.eq_ignore_ascii_case(b"replace") {
                    replace = true;
                } else if option.eq_ignore_ascii_case(b"db") {
                    // Only database 0 exists.
                    let index = options.next().ok_or(CommandError::Syntax)?;
                    if integer(index)? != 0 {
                        return Err(CommandError::DatabaseIndexOutOfRange);
                    }
                } else {
                    return Err(CommandError::Syntax);
                }
            }
            TypedOp::Copy {
                source: key,
                destination: word(1),
                replace,
            }
        }
        "keys" => TypedOp::Keys { pattern: key },
        "scan" => {
            let (cursor, pattern, type_name) = scan_options(&key, &arguments[1..], true)?;
            TypedOp::Scan {
                cursor,
                pattern,
                type_name,
            }
        }
        "hscan" | "sscan" | "zscan" => {
            let (cursor, pattern, _) = scan_options(&word(1), &arguments[2..], false)?;
            let kind = match name {
                "hscan" => ScanKind::Hash,
                "sscan" => ScanKind::Set,
                _ => ScanKind::SortedSet,
            };
            TypedOp::ScanCollection {
                key,
                kind,
                cursor,
                pattern,
            }
        }
        "flushall" | "flushdb" => {
            match arguments {
                [] => {}
                [mode]
                    if mode.eq_ignore_ascii_case(b"sync")
                        || mode.eq_ignore_ascii_case(b"async") => {}
                _ => return Err(CommandError::Syntax),
            }
            TypedOp::FlushAll
        }
        "hset" | "hmset" => {
            if arguments.len() % 2 == 0 {
                return Err(CommandError::WrongArity {
                    command: if name == "hset" { "hset" } else { "hmset" },
                });
            }
            TypedOp::HSet {
                key,
                pairs: pairs(&arguments[1..]),
                legacy_ok: name == "hmset",
            }
        }
        "hsetnx" => TypedOp::HSetNx {
            key,
            field: word(1),
            value: word(2),
        },
        "hget" => TypedOp::HGet {
            key,
            field: word(1),
        },
        "hmget" => TypedOp::HMGet {
            key,
            fields: rest(1),
        },
        "hdel" => TypedOp::HDel {
            key,
            fields: rest(1),
        },
        "hexists" => TypedOp::HExists {
            key,
            field: word(1),
        },
        "hlen" => TypedOp::HLen { key },
        "hstrlen" => TypedOp::HStrlen {
            key,
            field: word(1),
        },
        "hgetall" | "hkeys" | "hvals" => TypedOp::HGetAll {
            key,
            fields: name != "hvals",
            values: name != "hkeys",
        },
        "hincrby" => TypedOp::HIncrBy {
            key,
            field: word(1),
            delta: integer(&word(2))?,
        },
        "incrbyfloat" => TypedOp::IncrByFloat {
            key,
            increment: word(1),
        },
        "hincrbyfloat" => TypedOp::HIncrByFloat {
            key,
            field: word(1),
            increment: word(2),
        },
        "srandmember" => {
            let count = match arguments {
                [_] => None,
                [_, count_word] => {
                    let count = integer(count_word)?;
                    if count == i64::MIN {
                        return Err(invalid(LONG_OUT_OF_RANGE));
                    }
                    if count < 0 && count.unsigned_abs() > SRANDMEMBER_DRAWS_MAX {
                        return Err(invalid(TOO_MANY_DRAWS));
                    }
                    Some(count)
                }
                _ => return Err(CommandError::Syntax),
            };
            TypedOp::SRandMember { key, count }
        }
        "randomkey" => TypedOp::RandomKey,
        "linsert" => {
            let before = if word(1).eq_ignore_ascii_case(b"before") {
                true
            } else if word(1).eq_ignore_ascii_case(b"after") {
                false
            } else {
                return Err(CommandError::Syntax);
            };
            TypedOp::LInsert {
                key,
                before,
                pivot: word(2),
                element: word(3),
            }
        }
        "lpos" => parse_lpos(key, word(1), &arguments[2..])?,
        "lpush" | "rpush" | "lpushx" | "rpushx" => TypedOp::Push {
            key,
            values: rest(1),
            left: name.starts_with('l'),
            only_if_exists: name.ends_with('x'),
        },
        "lpop" | "rpop" => {
            let count = match arguments {
                [_] => None,
                [_, count_word] => Some(count(count_word)?),
                _ => return Err(CommandError::WrongArity { command: name }),
            };
            TypedOp::Pop {
                key,
                left: name == "lpop",
                count,
            }
        }
        "llen" => TypedOp::LLen { key },
        "lrange" | "ltrim" => {
            let start = integer(&word(1))?;
            let stop = integer(&word(2))?;
            if name == "lrange" {
                TypedOp::LRange { key, start, stop }
            } else {
                TypedOp::LTrim { key, start, stop }
            }
        }
        "lindex" => TypedOp::LIndex {
            key,
            index: integer(&word(1))?,
        },
        "lset" => TypedOp::LSet {
            key,
            index: integer(&word(1))?,
            value: word(2),
        },
        "lrem" => TypedOp::LRem {
            key,
            count: integer(&word(1))?,
            value: word(2),
        },
        "lmove" => TypedOp::LMove {
            source: key,
            destination: word(1),
            from_left: side(&word(2))?,
            to_left: side(&word(3))?,
        },
        "rpoplpush" => TypedOp::LMove {
            source: key,
            destination: word(1),
            from_left: false,
            to_left: true,
        },
        "sadd" => TypedOp::SAdd {
            key,
            members: rest(1),
        },
        "srem" => TypedOp::SRem {
            key,
            members: rest(1),
        },
        "smembers" => TypedOp::SMembers { key },
        "sismember" | "smismember" => TypedOp::SIsMember {
            key,
            members: rest(1),
            many: name == "smismember",
        },
        "scard" => TypedOp::SCard { key },
        "spop" => {
            let count = match arguments {
                [_] => None,
                [_, count_word] => Some(count(count_word)?),
                _ => return Err(CommandError::Syntax),
            };
            TypedOp::SPop { key, count }
        }
        "sinter" | "sunion" | "sdiff" | "sinterstore" | "sunionstore" | "sdiffstore" => {
            let algebra = match &name[..5] {
                "sinte" => SetAlgebra::Intersection,
                "sunio" => SetAlgebra::Union,
                _ => SetAlgebra::Difference,
            };
            if name.ends_with("store") {
                TypedOp::SetAlgebra {
                    algebra,
                    keys: rest(1),
                    destination: Some(key),
                }
            } else {
                TypedOp::SetAlgebra {
                    algebra,
                    keys: rest(0),
                    destination: None,
                }
            }
        }
        "zadd" => parse_zadd(key, &arguments[1..])?,
        "zincrby" => TypedOp::ZIncrBy {
            key,
            delta: float(&word(1))?,
            member: word(2),
        },
        "zrem" => TypedOp::ZRem {
            key,
            members: rest(1),
        },
        "zscore" | "zmscore" => TypedOp::ZScore {
            key,
            members: rest(1),
            many: name == "zmscore",
        },
        "zcard" => TypedOp::ZCard { key },
        "zrank" | "zrevrank" => TypedOp::ZRank {
            key,
            member: word(1),
            reverse: name == "zrevrank",
        },
        "zcount" => TypedOp::ZCount {
            key,
            min: score_bound(&word(1))?,
            max: score_bound(&word(2))?,
        },
        "zpopmin" | "zpopmax" => {
            let count = match arguments {
                [_] => None,
                [_, count_word] => Some(count(count_word)?),
                _ => return Err(CommandError::Syntax),
            };
            TypedOp::ZPop {
                key,
                max: name == "zpopmax",
                count,
            }
        }
        _ => parse_zrange(name, key, &arguments[1..])?,
    })
}

/// `LPOS key element [RANK rank] [COUNT count] [MAXLEN len]`, read as Redis 7.0 reads it:
/// options in any order, the last of a kind wins, each checked as it is read.
fn parse_lpos(key: Bytes, element: Bytes, options: &[Bytes]) -> Result<TypedOp, CommandError> {
    let mut rank = 1;
    let mut count = None;
    let mut maxlen = 0;
    let mut index = 0;
    while let Some(option) = options.get(index) {
        let Some(value) = options.get(index + 1) else {
            return Err(CommandError::Syntax);
        };
        if option.eq_ignore_ascii_case(b"rank") {
            rank = integer(value)?;
            if rank == 0 {
                return Err(invalid(
                    "ERR RANK can't be zero: use 1 to start from the first match, 2 from the \
                     second ... or use negative to start from the end of the list",
                ));
            }
        } else if option.eq_ignore_ascii_case(b"count") {
            count = Some(
                u64::try_from(integer(value)?)
                    .map_err(|_| invalid("ERR COUNT can't be negative"))?,
            );
        } else if option.eq_ignore_ascii_case(b"maxlen") {
            maxlen = u64::try_from(integer(value)?)
                .map_err(|_| invalid("ERR MAXLEN can't be negative"))?;
        } else {
            return Err(CommandError::Syntax);
        }
        index += 2;
    }
    Ok(TypedOp::LPos {
        key,
        element,
        rank,
        count,
        maxlen,
    })
}

fn parse_zadd(key: Bytes, words: &[Bytes]) -> Result<TypedOp, CommandError> {
    let mut flags = ZAddFlags::default();
    let mut index = 0;
    while let Some(word) = words.get(index) {
        let flag = match word.to_ascii_lowercase().as_slice() {
            b"nx" => &mut flags.nx,
            b"xx" => &mut flags.xx,
            b"gt" => &mut flags.gt,
            b"lt" => &mut flags.lt,
            b"ch" => &mut flags.ch,
            b"incr" => &mut flags.incr,
            _ => break,
        };
        *flag = true;
        index += 1;
    }
    let elements = &words[index..];
    if elements.is_empty() || elements.len() % 2 != 0 {
        return Err(CommandError::Syntax);
    }
    if flags.incr && elements.len() > 2 {
        return Err(invalid(
            "ERR INCR option supports a single increment-element pair",
        ));
    }
    if flags.nx && flags.xx {
        return Err(invalid(
            "ERR XX and NX options at the same time are not compatible",
        ));
    }
    if ((flags.gt || flags.lt) && flags.nx) || (flags.gt && flags.lt) {
        return Err(invalid(
            "ERR GT, LT, and/or NX options at the same time are not compatible",
        ));
    }
    let mut pairs = Vec::with_capacity(elements.len() / 2);
    for pair in elements.chunks_exact(2) {
        pairs.push((float(&pair[0])?, pair[1].clone()));
    }
    Ok(TypedOp::ZAdd { key, flags, pairs })
}

/// `ZRANGE` and its older forms, as Redis 7.0's shared range parser reads them.
fn parse_zrange(name: &str, key: Bytes, words: &[Bytes]) -> Result<TypedOp, CommandError> {
    #[derive(PartialEq)]
    enum Kind {
        Rank,
        Score,
        Lex,
    }
    let (mut kind, mut reverse) = match name {
        "zrange" => (Kind::Rank, false),
        "zrevrange" => (Kind::Rank, true),
        "zrangebyscore" => (Kind::Score, false),
        "zrevrangebyscore" => (Kind::Score, true),
        "zrangebylex" => (Kind::Lex, false),
        _ => (Kind::Lex, true),
    };
    let [first, second, options @ ..] = words else {
        return Err(CommandError::WrongArity { command: "zrange" });
    };
    let mut with_scores = false;
    let mut limit = None;
    let mut index = 0;
    while let Some(option) = options.get(index) {
        let remaining = options.len() - index - 1;
        if option.eq_ignore_ascii_case(b"withscores") {
            with_scores = true;
        } else if option.eq_ignore_ascii_case(b"limit") && remaining >= 2 {
            limit = Some((integer(&options[index + 1])?, integer(&options[index + 2])?));
            index += 2;
        } else if name == "zrange" && kind == Kind::Rank && option.eq_ignore_ascii_case(b"byscore")
        {
            kind = Kind::Score;
        } else if name == "zrange" && kind == Kind::Rank && option.eq_ignore_ascii_case(b"bylex") {
            kind = Kind::Lex;
        } else if name == "zrange" && !reverse && option.eq_ignore_ascii_case(b"rev") {
            reverse = true;
        } else {
            return Err(CommandError::Syntax);
        }
        index += 1;
    }
    if with_scores && kind == Kind::Lex {
        return Err(invalid(
            "ERR syntax error, WITHSCORES not supported in combination with BYLEX",
        ));
    }
    if limit.is_some() && kind == Kind::Rank {
        return Err(invalid(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        ));
    }
    // In reverse, a score or lex range names its upper end first.
    let (low, high) = if reverse && kind != Kind::Rank {
        (second, first)
    } else {
        (first, second)
    };
    let by = match kind {
        Kind::Rank => RangeBy::Rank {
            start: integer(first)?,
            stop: integer(second)?,
        },
        Kind::Score => RangeBy::Score {
            min: score_bound(low)?,
            max: score_bound(high)?,
        },
        Kind::Lex => RangeBy::Lex {
            min: lex_bound(low)?,
            max: lex_bound(high)?,
        },
    };
    Ok(TypedOp::ZRange {
        key,
        by,
        reverse,
        limit,
        with_scores,
    })
}

#[cfg(test)]
mod tests {
    use super::super::spec::COMMANDS;
    use super::*;

    /// Proves every typed command is described in `COMMANDS`, so `COMMAND` lists it and its
    /// arity is checked.
    #[test]
    fn every_typed_command_is_described() {
        for name in TYPED {
            assert!(
                COMMANDS.iter().any(|spec| spec.name == *name),
                "{name} lacks a spec"
            );
        }
    }
}
