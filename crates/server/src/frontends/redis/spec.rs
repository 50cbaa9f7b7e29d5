//! What the Redis front end knows of each command before parsing it: its `COMMAND` entry
//! (arity, flags, key positions) and the errors a request can be refused with, in Redis's exact
//! words.
//!
//! It stands below both parsers, [`super::command`] (the string, connection and admin
//! commands) and [`super::data`] (the typed values' commands), which both check arities here
//! and answer with these errors.

use super::resp::Frame;

/// Why a request is not a valid command. `Display` is the exact Redis error text, error kind
/// first; send it with [`CommandError::to_frame`]. The connection stays open.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The command name is not one Chorus supports.
    #[error("ERR unknown command '{name}', with args beginning with: {arguments}")]
    UnknownCommand {
        /// The name as sent, cut to 128 bytes and kept on one line.
        name: String,
        /// The first arguments, each quoted and followed by a space, cut to about 128 bytes.
        arguments: String,
    },
    /// The command or subcommand got too few or too many arguments.
    #[error("ERR wrong number of arguments for '{command}' command")]
    WrongArity {
        /// The lowercase command name, `container|subcommand` for subcommands.
        command: &'static str,
    },
    /// A container command (`CLIENT`, `COMMAND`, `CONFIG`) got a subcommand Chorus lacks.
    #[error("ERR unknown subcommand '{subcommand}'. Try {container} HELP.")]
    UnknownSubcommand {
        /// The uppercase container name.
        container: &'static str,
        /// The subcommand as sent, cut to 128 bytes and kept on one line.
        subcommand: String,
    },
    /// An option is unknown, misplaced, or conflicts with another (`SET k v NX XX`).
    #[error("ERR syntax error")]
    Syntax,
    /// An argument that must be an integer is not a canonical `i64`.
    #[error("ERR value is not an integer or out of range")]
    NotAnInteger,
    /// `SELECT` of a database other than 0.
    #[error("ERR DB index is out of range")]
    DatabaseIndexOutOfRange,
    /// `DECRBY key -9223372036854775808`, whose negation overflows.
    #[error("ERR decrement would overflow")]
    DecrementOverflow,
    /// An expiry time out of Redis's range (`SET k v EX 0`, `EXPIRE k 9223372036854775807`).
    #[error("ERR invalid expire time in '{command}' command")]
    InvalidExpireTime {
        /// The lowercase command name.
        command: &'static str,
    },
    /// `EXPIRE` with an option other than `NX`, `XX`, `GT` and `LT`.
    #[error("ERR Unsupported option {option}")]
    UnsupportedOption {
        /// The option as sent, cut to 128 bytes and kept on one line.
        option: String,
    },
    /// An error with a fixed Redis text (`ERR value is not a valid float`, …).
    #[error("{0}")]
    Invalid(&'static str),
    /// `HELLO` with a protocol version other than 2.
    #[error("NOPROTO unsupported protocol version")]
    UnsupportedProtocol,
    /// `HELLO` with a protocol version that is not an integer.
    #[error("ERR Protocol version is not an integer or out of range")]
    ProtocolVersionNotAnInteger,
    /// `HELLO` with an unknown option, or an option missing its arguments.
    #[error("ERR Syntax error in HELLO option '{option}'")]
    HelloOption {
        /// The option as sent, cut to 128 bytes and kept on one line.
        option: String,
    },
    /// `HELLO ... AUTH` with a user other than `default`; Chorus has no users, so, like a
    /// Redis without passwords, it accepts only the default user with any password.
    #[error("WRONGPASS invalid username-password pair or user is disabled.")]
    WrongPassword,
    /// `CLIENT SETNAME` (or `HELLO SETNAME`) with a name holding spaces, newlines or other
    /// characters outside `!`..=`~`.
    #[error("ERR Client names cannot contain spaces, newlines or special characters.")]
    InvalidClientName,
    /// `CLIENT SETINFO` with an attribute other than `LIB-NAME` or `LIB-VER`.
    #[error("ERR Unrecognized option '{option}'")]
    UnrecognizedClientAttribute {
        /// The attribute as sent, cut to 128 bytes and kept on one line.
        option: String,
    },
    /// `CLIENT SETINFO` with a value holding spaces, newlines or other special characters.
    #[error("ERR {attribute} cannot contain spaces, newlines or special characters.")]
    InvalidClientAttribute {
        /// The attribute as sent, cut to 128 bytes and kept on one line.
        attribute: String,
    },
}

impl CommandError {
    /// The error reply, `-ERR ...` (or `-NOPROTO ...`, `-WRONGPASS ...`).
    #[must_use]
    pub fn to_frame(&self) -> Frame {
        Frame::Error(self.to_string())
    }
}

/// What `COMMAND` tells clients about one command Chorus serves, in Redis's terms.
#[derive(Clone, Copy, Debug)]
pub struct CommandSpec {
    /// The lowercase name.
    pub name: &'static str,
    /// The number of words with the name; negative: at least that many.
    pub arity: i64,
    /// Redis's command flags (`write`, `readonly`, `fast`, …).
    pub flags: &'static [&'static str],
    /// The position of the first key, 0 if none.
    pub first_key: i64,
    /// The position of the last key; -1: the last word.
    pub last_key: i64,
    /// The distance between keys.
    pub step: i64,
}

const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        flags,
        first_key: keys.0,
        last_key: keys.1,
        step: keys.2,
    }
}

/// Every command [`super::command::parse`] knows, as `COMMAND`, `COMMAND INFO`, `COMMAND COUNT` and
/// `COMMAND LIST` describe them (arities and key positions as Redis 7 gives them).
pub const COMMANDS: &[CommandSpec] = &[
    spec("append", 3, &["write", "denyoom"], (1, 1, 1)),
    spec("client", -2, &["loading", "stale"], (0, 0, 0)),
    spec("cluster", -2, &["loading", "stale"], (0, 0, 0)),
    spec("command", -1, &["loading", "stale"], (0, 0, 0)),
    spec("config", -2, &["admin", "loading", "stale"], (0, 0, 0)),
    spec("copy", -3, &["write", "denyoom"], (1, 2, 1)),
    spec("dbsize", 1, &["readonly", "fast"], (0, 0, 0)),
    spec("decr", 2, &["write", "denyoom", "fast"], (1, 1, 1)),
    spec("decrby", 3, &["write", "denyoom", "fast"], (1, 1, 1)),
    spec("del", -2, &["write"], (1, -1, 1)),
    spec(
        "discard",
        1,
        &["noscript", "loading", "stale", "fast", "allow_busy"],
        (0, 0, 0),
    ),
    spec("echo", 2, &["fast"], (0, 0, 0)),
    spec(
        "exec",
        1,
        &["noscript", "loading", "stale", "skip_slowlog"],
        (0, 0, 0),
    ),
    spec("exists", -2, &["readonly", "fast"], (1, -1, 1)),
    spec("expire", -3, &["write", "fast"], (1, 1, 1)),
    spec("expireat", -3, &["write", "fast"], (1, 1, 1)),
    spec("expiretime", 2, &["readonly", "fast"], (1, 1, 1)),
    spec("flushall", -1, &["write"], (0, 0, 0)),
    spec("flushdb", -1, &["write"], (0, 0, 0)),
    spec("get", 2, &["readonly", "fast"], (1, 1, 1)),
    spec("getdel", 2, &["write", "fast"], (1, 1, 1)),
    spec("getex", -2, &["write", "fast"], (1, 1, 1)),
    spec("hdel", -3, &["write", "fast"], (1, 1, 1)),
    spec(
        "hello",
        -1,
        &["noscript", "loading", "stale", "fast"],
        (0, 0, 0),
    ),
    spec("hexists", 3, &["readonly", "fast"], (1, 1, 1)),
    spec("hget", 3, &["readonly", "fast"], (1, 1, 1)),
    spec("hgetall", 2, &["readonly"], (1, 1, 1)),
    spec("hincrby", 4, &["write", "denyoom", "fast"], (1, 1, 1)),
    spec("hincrbyfloat", 4, &["write", "denyoom", "fast"], (1, 1, 1)),
    spec("hkeys", 2, &["readonly"], (1, 1, 1)),
    spec("hlen", 2, &["readonly", "fast"], (1, 1, 1)),
    spec("hmget", -3, &["readonly", "fast"], (1, 1, 1)),
    spec("hmset", -4, &["write", "denyoom", "fast"], (1, 1, 1)),
    spec("hscan", -3, &["readonly"], (1, 1, 1)),
    spec("hset", -4, &["write", "denyoom", "fast"], (1, 1, 1)),
    spec("hsetnx", 4, &["write", "denyoom", "fast"], (1, 1, 1)),
    spec("hstrlen", 3, &["readonly", "fast"], (1, 1, 1)),
    spec("hvals", 2, &["readonly"], (1, 1, 1)),
    spec("incr", 2, &["write", "denyoom", "fast"], (1, 1, 1)),
    spec("incrby", 3, &["write", "denyoom", "fast"], (1, 1, 1)),
    spec("incrbyfloat", 3, &["write", "denyoom", "fast"], (1, 1, 1)),
    spec("info", -1, &["loading", "stale"], (0, 0, 0)),
    spec("keys", 2, &["readonly"], (0, 0, 0)),
    spec("lindex", 3, &["readonly"], (1, 1, 1)),
    spec("linsert", 5, &["write", "denyoom"], (1, 1, 1)),
    spec("llen", 2, &["readonly", "fast"], (1, 1, 1)),
    spec("lmove", 5, &["write", "denyoom"], (1, 2, 1)),
    spec("lpop", -2, &["write", "fast"], (1, 1, 1)),
    spec("lpos", -3, &["readonly"], (1, 1, 1)),
    spec("lpush", -3, &["write", "denyoom", "fast"], (1, 1, 1)),
    spec("lpushx", -3, &["write", "denyoom", "fast"], (1, 1, 1)),
    spec("lrange", 4, &["readonly"], (1, 1, 1)),
    spec("lrem", 4, &["write"], (1, 1, 1)),
    spec("lset", 4, &["write", "denyoom"], (1, 1, 1)),
    spec("ltrim", 4, &["write"], (1, 1, 1)),
    spec("mget", -2, &["readonly", "fast"], (1, -1, 1)),
    spec("mset", -3, &["write", "denyoom"], (1, -1, 2)),
    spec("persist", 2, &["write", "fast"], (1, 1, 1)),
    spec("pexpire", -3, &["write", "fast"], (1, 1, 1)),
    spec("pexpireat", -3, &["write", "fast"], (1, 1, 1)),
    spec("pexpiretime", 2, &["readonly", "fast"], (1, 1, 1)),
    spec(
        "multi",
        1,
        &["noscript", "loading", "stale", "fast", "allow_busy"],
        (0, 0, 0),
    ),
    spec("ping", -1, &["fast"], (0, 0, 0)),
    spec("pttl", 2, &["readonly", "fast"], (1, 1, 1)),
    spec(
        "quit",
        -1,
        &["noscript", "loading", "stale", "fast"],
        (0, 0, 0),
    ),
    spec("randomkey", 1, &["readonly"], (0, 0, 0)),
    spec("rename", 3, &["write"], (1, 2, 1)),
    spec("renamenx", 3, &["write", "fast"], (1, 2, 1)),
    spec("rpop", -2, &["write", "fast"], (1, 1, 1)),
    spec("rpoplpush", 3, &["write", "denyoom"], (1, 2, 1)),
    spec("rpush", -3, &["write", "denyoom", "fast"], (1, 1, 1)),
    spec("rpushx", -3, &["write", "denyoom", "fast"], (1, 1, 1)),
    spec("sadd", -3, &["write", "denyoom", "fast"], (1, 1, 1)),
    spec("scan", -2, &["readonly"], (0, 0, 0)),
    spec("scard", 2, &["readonly", "fast"], (1, 1, 1)),
    spec("sdiff", -2, &["readonly"], (1, -1, 1)),
    spec("sdiffstore", -3, &["write", "denyoom"], (1, -1, 1)),
    spec("select", 2, &["loading", "stale", "fast"], (0, 0, 0)),
    spec("set", -3, &["write", "denyoom"], (1, 1, 1)),
    spec("sinter", -2, &["readonly"], (1, -1, 1)),
    spec("sinterstore", -3, &["write", "denyoom"], (1, -1, 1)),
    spec("sismember", 3, &["readonly", "fast"], (1, 1, 1)),
    spec("smembers", 2, &["readonly"], (1, 1, 1)),
    spec("smismember", -3, &["readonly", "fast"], (1, 1, 1)),
    spec("spop", -2, &["write", "fast"], (1, 1, 1)),
    spec("srandmember", -2, &["readonly"], (1, 1, 1)),
    spec("srem", -3, &["write", "fast"], (1, 1, 1)),
    spec("sscan", -3, &["readonly"], (1, 1, 1)),
    spec("strlen", 2, &["readonly", "fast"], (1, 1, 1)),
    spec("sunion", -2, &["readonly"], (1, -1, 1)),
    spec("sunionstore", -3, &["write", "denyoom"], (1, -1, 1)),
    spec("ttl", 2, &["readonly", "fast"], (1, 1, 1)),
    spec("type", 2, &["readonly", "fast"], (1, 1, 1)),
    spec(
        "unwatch",
        1,
        &["noscript", "loading", "stale", "fast", "allow_busy"],
        (0, 0, 0),
    ),
    spec("unlink", -2, &["write", "fast"], (1, -1, 1)),
    spec(
        "watch",
        -2,
        &["noscript", "loading", "stale", "fast", "allow_busy"],
        (1, -1, 1),
    ),
    spec("zadd", -4, &["write", "denyoom", "fast"], (1, 1, 1)),
    spec("zcard", 2, &["readonly", "fast"], (1, 1, 1)),
    spec("zcount", 4, &["readonly", "fast"], (1, 1, 1)),
    spec("zincrby", 4, &["write", "denyoom", "fast"], (1, 1, 1)),
    spec("zmscore", -3, &["readonly", "fast"], (1, 1, 1)),
    spec("zpopmax", -2, &["write", "fast"], (1, 1, 1)),
    spec("zpopmin", -2, &["write", "fast"], (1, 1, 1)),
    spec("zrange", -4, &["readonly"], (1, 1, 1)),
    spec("zrangebylex", -4, &["readonly"], (1, 1, 1)),
    spec("zrangebyscore", -4, &["readonly"], (1, 1, 1)),
    spec("zrank", 3, &["readonly", "fast"], (1, 1, 1)),
    spec("zrem", -3, &["write", "fast"], (1, 1, 1)),
    spec("zrevrange", -4, &["readonly"], (1, 1, 1)),
    spec("zrevrangebylex", -4, &["readonly"], (1, 1, 1)),
    spec("zrevrangebyscore", -4, &["readonly"], (1, 1, 1)),
    spec("zrevrank", 3, &["readonly", "fast"], (1, 1, 1)),
    spec("zscan", -3, &["readonly"], (1, 1, 1)),
    spec("zscore", 3, &["readonly", "fast"], (1, 1, 1)),
];

/// The spec of the command named `name` (any case), if Chorus serves it.
#[must_use]
pub fn command_spec(name: &[u8]) -> Option<&'static CommandSpec> {
    COMMANDS
        .iter()
        .find(|spec| spec.name.as_bytes().eq_ignore_ascii_case(name))
}
