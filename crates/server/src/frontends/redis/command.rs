//! Redis commands: the arguments of one request, parsed and validated into a typed command.
//!
//! This module exists so that the runtime never looks at raw arguments: [`parse`] turns the
//! `Vec<Bytes>` that [`super::resp::parse_request`] yields into a [`RedisCommand`], or into a
//! [`CommandError`] whose text is byte for byte what Redis would answer, so that `redis-cli`,
//! `redis-benchmark` and client libraries see familiar errors. Parsing only checks arguments
//! (arity, options, integers); it never looks at data, so errors such as `WRONGTYPE` or an
//! increment overflowing a stored value belong to whoever executes the command.
//!
//! Each variant documents the RESP2 reply its executor sends. Command names and option
//! keywords are case-insensitive, as in Redis; keys and values are binary-safe.

use bytes::Bytes;

use super::data::{ExpiryUnit, option_deadline};
use super::resp::parse_integer;
pub use super::spec::{COMMANDS, CommandError, CommandSpec, command_spec};

/// One parsed, argument-checked Redis command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisCommand {
    /// `PING [message]`. Reply: `+PONG`, or `message` as a bulk string.
    Ping {
        /// The message to echo back instead of `PONG`.
        message: Option<Bytes>,
    },
    /// `ECHO message`. Reply: `message` as a bulk string.
    Echo {
        /// The message to echo back.
        message: Bytes,
    },
    /// `QUIT` (any arguments are ignored, as in Redis). Reply: `+OK`, then the server closes
    /// the connection.
    Quit,
    /// `SELECT 0`; Chorus has a single database, so every other index is refused at parse time.
    /// Reply: `+OK`.
    Select,
    /// `HELLO [2 [AUTH default password] [SETNAME name]]`. Only RESP2 is spoken, so protocol 3
    /// is refused at parse time with `NOPROTO`. Reply: the RESP2 handshake array of 14
    /// elements, pairs of `server`, `version`, `proto` (`:2`), `id`, `mode`, `role`, `modules`
    /// (an empty array).
    Hello {
        /// The connection name to set, as `CLIENT SETNAME` would.
        client_name: Option<Bytes>,
    },
    /// `COMMAND` with no subcommand. Reply: an array of command descriptions; an empty array
    /// is harmless to every client we know of.
    Command,
    /// `COMMAND COUNT`. Reply: an integer, the number of supported commands.
    CommandCount,
    /// `COMMAND DOCS [name ...]`, which `redis-cli` sends on start for its hints. Reply: an
    /// array of name/description pairs; an empty array makes `redis-cli` skip its hints.
    CommandDocs {
        /// The commands asked about; empty means all.
        names: Vec<Bytes>,
    },
    /// `COMMAND INFO [name ...]`. Reply: an array with one description (or a null) per name;
    /// an array of nulls is harmless.
    CommandInfo {
        /// The commands asked about; empty means all.
        names: Vec<Bytes>,
    },
    /// `COMMAND LIST`. Reply: an array of command names as bulk strings.
    CommandList,
    /// `CLIENT SETNAME name`; the name has been checked to hold no spaces, newlines or other
    /// special characters. An empty name clears it. Reply: `+OK`.
    ClientSetName {
        /// The new connection name.
        name: Bytes,
    },
    /// `CLIENT GETNAME`. Reply: the name as a bulk string, or a null bulk string if unset.
    ClientGetName,
    /// `CLIENT ID`. Reply: an integer, the connection's id.
    ClientId,
    /// `CLIENT SETINFO LIB-NAME|LIB-VER value`, which newer `redis-cli` and client libraries
    /// send on connect. Reply: `+OK`.
    ClientSetInfo {
        /// Which attribute is set.
        attribute: ClientAttribute,
        /// Its value, checked like a client name.
        value: Bytes,
    },
    /// `GET key`. Reply: the value as a bulk string, or a null bulk string if the key is absent.
    Get {
        /// The key to read.
        key: Bytes,
    },
    /// `SET key value [NX | XX | IFEQ old] [GET] [EX | PX | EXAT | PXAT time | KEEPTTL]`. Reply without `GET`: `+OK` if the value
    /// was written, a null bulk string if `condition` did not hold. Reply with `GET`: the old
    /// value as a bulk string, or a null bulk string if there was none, whether or not the
    /// write happened.
    Set {
        /// The key to write.
        key: Bytes,
        /// The new value.
        value: Bytes,
        /// When the write happens.
        condition: SetCondition,
        /// Whether to reply with the old value (`GET`).
        get: bool,
        /// The key's expiry after the write: `None` removes any (a plain `SET`), else
        /// `KEEPTTL` or `EX`/`PX`/`EXAT`/`PXAT`.
        expiry: Option<SetExpiry>,
    },
    /// `DEL key [key ...]`. Reply: an integer, how many of the keys existed and were deleted.
    Del {
        /// The keys to delete, at least one.
        keys: Vec<Bytes>,
    },
    /// `EXISTS key [key ...]`. Reply: an integer, how many of the keys exist (a key named
    /// twice counts twice).
    Exists {
        /// The keys to look for, at least one.
        keys: Vec<Bytes>,
    },
    /// `INCR key`. Reply: an integer, the new value.
    Incr {
        /// The counter.
        key: Bytes,
    },
    /// `DECR key`. Reply: an integer, the new value.
    Decr {
        /// The counter.
        key: Bytes,
    },
    /// `INCRBY key increment`. Reply: an integer, the new value.
    IncrBy {
        /// The counter.
        key: Bytes,
        /// What to add.
        increment: i64,
    },
    /// `DECRBY key decrement`; `i64::MIN` is refused at parse time, as Redis does, because its
    /// negation overflows. Reply: an integer, the new value.
    DecrBy {
        /// The counter.
        key: Bytes,
        /// What to subtract.
        decrement: i64,
    },
    /// `APPEND key value`. Reply: an integer, the length of the value after appending.
    Append {
        /// The key to append to; created empty if absent.
        key: Bytes,
        /// The bytes to append.
        value: Bytes,
    },
    /// `STRLEN key`. Reply: an integer, the value's length, 0 if the key is absent.
    Strlen {
        /// The key to measure.
        key: Bytes,
    },
    /// `MGET key [key ...]`. Reply: an array with, per key, a bulk string or a null bulk string.
    MGet {
        /// The keys to read, at least one.
        keys: Vec<Bytes>,
    },
    /// `MSET key value [key value ...]`. Reply: `+OK`.
    MSet {
        /// The key/value pairs, at least one, applied in order (a later duplicate key wins).
        pairs: Vec<(Bytes, Bytes)>,
    },
    /// `DBSIZE`. Reply: an integer, the number of keys.
    DbSize,
    /// `INFO [section ...]`. Reply: a bulk string of `# Section\r\nfield:value\r\n` lines.
    Info {
        /// The sections asked for; empty means the default set.
        sections: Vec<Bytes>,
    },
    /// `CONFIG GET pattern [pattern ...]`, which `redis-benchmark` sends on start (`save`,
    /// `appendonly`). Reply: a flat array of name/value bulk-string pairs, each matching
    /// parameter once; unknown parameters are simply absent.
    ConfigGet {
        /// Glob-style patterns, at least one.
        patterns: Vec<Bytes>,
    },
    /// `CLUSTER SLOTS|SHARDS|NODES|INFO|MYID`: the cluster as Redis Cluster clients read it,
    /// one shard holding every slot, its master the leader (Raft) or the primary.
    Cluster {
        /// Which view of the cluster.
        what: ClusterView,
    },
    /// `MULTI`: starts queuing a transaction. Reply: `+OK`; then `+QUEUED` for each command.
    Multi,
    /// `EXEC`: runs the queued commands at one log position. Reply: an array of their
    /// replies; a null array if a watched key changed; `EXECABORT` if one was refused.
    Exec,
    /// `DISCARD`: drops the queued commands and the watches. Reply: `+OK`.
    Discard,
    /// `WATCH key [key ...]`: `EXEC` then runs only if none of the keys changed. Reply: `+OK`.
    Watch {
        /// The keys.
        keys: Vec<Bytes>,
    },
    /// `UNWATCH`: forgets the watched keys. Reply: `+OK`.
    Unwatch,
    /// A command on typed values or the key space (`HSET`, `LPUSH`, `ZADD`, `TYPE`, …),
    /// parsed by [`super::data`]. Reply: the state machine's [`chorus_kv::Reply`].
    Typed {
        /// The command's lowercase Redis name.
        name: &'static str,
        /// What it does.
        op: chorus_kv::TypedOp,
    },
}

/// The `CLUSTER` subcommands Chorus answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterView {
    /// `CLUSTER SLOTS`: slot ranges with their master and replicas.
    Slots,
    /// `CLUSTER SHARDS`: shards with their slots and nodes.
    Shards,
    /// `CLUSTER NODES`: one text line per node.
    Nodes,
    /// `CLUSTER INFO`: the cluster's state as `field:value` lines.
    Info,
    /// `CLUSTER MYID`: this node's id.
    MyId,
}

pub use chorus_kv::{SetCondition, SetExpiry};

/// The attributes `CLIENT SETINFO` may set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAttribute {
    /// `LIB-NAME`: the client library's name.
    LibraryName,
    /// `LIB-VER`: the client library's version.
    LibraryVersion,
}

/// The longest command name [`parse`] can recognize; longer names are unknown commands.
const NAME_BYTES_MAX: usize = 16;

/// How much of a client-supplied word Redis quotes back in an error.
const ECHOED_BYTES_MAX: usize = 128;

/// Parses a request's arguments (command name first) into a command.
///
/// # Errors
/// [`CommandError`] when the command is unknown or its arguments are invalid; the text is
/// what Redis would send.
pub fn parse(arguments: Vec<Bytes>) -> Result<RedisCommand, CommandError> {
    let Some((name, arguments)) = arguments.split_first() else {
        return Err(unknown_command(b"", &[]));
    };
    let mut lowercase = [0_u8; NAME_BYTES_MAX];
    let Some(slot) = lowercase.get_mut(..name.len()) else {
        return Err(unknown_command(name, arguments));
    };
    slot.copy_from_slice(name);
    slot.make_ascii_lowercase();
    let command = match &*slot {
        b"ping" => match arguments {
            [] => RedisCommand::Ping { message: None },
            [message] => RedisCommand::Ping {
                message: Some(message.clone()),
            },
            _ => return Err(CommandError::WrongArity { command: "ping" }),
        },
        b"echo" => {
            let [message] = exactly(arguments, "echo")?;
            RedisCommand::Echo {
                message: message.clone(),
            }
        }
        b"quit" => RedisCommand::Quit,
        b"select" => {
            let [index] = exactly(arguments, "select")?;
            match integer(index)? {
                0 => RedisCommand::Select,
                _ => return Err(CommandError::DatabaseIndexOutOfRange),
            }
        }
        b"hello" => parse_hello(arguments)?,
        b"command" => parse_command(arguments)?,
        b"client" => parse_client(arguments)?,
        b"get" => {
            let [key] = exactly(arguments, "get")?;
            RedisCommand::Get { key: key.clone() }
        }
        b"set" => parse_set(arguments)?,
        b"del" => RedisCommand::Del {
            keys: at_least_one(arguments, "del")?,
        },
        b"unlink" => RedisCommand::Del {
            keys: at_least_one(arguments, "unlink")?,
        },
        b"exists" => RedisCommand::Exists {
            keys: at_least_one(arguments, "exists")?,
        },
        b"incr" => {
            let [key] = exactly(arguments, "incr")?;
            RedisCommand::Incr { key: key.clone() }
        }
        b"decr" => {
            let [key] = exactly(arguments, "decr")?;
            RedisCommand::Decr { key: key.clone() }
        }
        b"incrby" => {
            let [key, increment] = exactly(arguments, "incrby")?;
            RedisCommand::IncrBy {
                key: key.clone(),
                increment: integer(increment)?,
            }
        }
        b"decrby" => {
            let [key, decrement] = exactly(arguments, "decrby")?;
            let decrement = integer(decrement)?;
            if decrement == i64::MIN {
                return Err(CommandError::DecrementOverflow);
            }
            RedisCommand::DecrBy {
                key: key.clone(),
                decrement,
            }
        }
        b"append" => {
            let [key, value] = exactly(arguments, "append")?;
            RedisCommand::Append {
                key: key.clone(),
                value: value.clone(),
            }
        }
        b"strlen" => {
            let [key] = exactly(arguments, "strlen")?;
            RedisCommand::Strlen { key: key.clone() }
        }
        b"mget" => RedisCommand::MGet {
            keys: at_least_one(arguments, "mget")?,
        },
        b"mset" => {
            if arguments.is_empty() || arguments.len() % 2 != 0 {
                return Err(CommandError::WrongArity { command: "mset" });
            }
            RedisCommand::MSet {
                pairs: arguments
                    .chunks_exact(2)
                    .map(|pair| (pair[0].clone(), pair[1].clone()))
                    .collect(),
            }
        }
        b"dbsize" => {
            let [] = exactly(arguments, "dbsize")?;
            RedisCommand::DbSize
        }
        b"info" => RedisCommand::Info {
            sections: arguments.to_vec(),
        },
        b"config" => parse_config(arguments)?,
        b"multi" => {
            let [] = exactly(arguments, "multi")?;
            RedisCommand::Multi
        }
        b"exec" => {
            let [] = exactly(arguments, "exec")?;
            RedisCommand::Exec
        }
        b"discard" => {
            let [] = exactly(arguments, "discard")?;
            RedisCommand::Discard
        }
        b"unwatch" => {
            let [] = exactly(arguments, "unwatch")?;
            RedisCommand::Unwatch
        }
        b"watch" => RedisCommand::Watch {
            keys: at_least_one(arguments, "watch")?,
        },
        b"cluster" => parse_cluster(arguments)?,
        typed => match super::data::parse(typed, arguments) {
            Some(parsed) => {
                let (name, op) = parsed?;
                RedisCommand::Typed { name, op }
            }
            None => return Err(unknown_command(name, arguments)),
        },
    };
    Ok(command)
}

impl RedisCommand {
    /// Whether the command changes the key space, and so must go through the replicated log;
    /// every other command is answered locally or as a read.
    #[must_use]
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            RedisCommand::Set { .. }
                | RedisCommand::Del { .. }
                | RedisCommand::Incr { .. }
                | RedisCommand::Decr { .. }
                | RedisCommand::IncrBy { .. }
                | RedisCommand::DecrBy { .. }
                | RedisCommand::Append { .. }
                | RedisCommand::MSet { .. }
        ) || matches!(self, RedisCommand::Typed { op, .. } if op.is_write())
    }

    /// Whether the command reads the replicated state (through a linearizable read).
    #[must_use]
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            RedisCommand::Get { .. }
                | RedisCommand::Strlen { .. }
                | RedisCommand::MGet { .. }
                | RedisCommand::Exists { .. }
                | RedisCommand::DbSize
        ) || matches!(self, RedisCommand::Typed { op, .. } if !op.is_write())
    }

    /// The command's lowercase Redis name, `container|subcommand` for subcommands, as Redis
    /// names commands in errors, `COMMAND` replies and statistics.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            RedisCommand::Ping { .. } => "ping",
            RedisCommand::Echo { .. } => "echo",
            RedisCommand::Quit => "quit",
            RedisCommand::Select => "select",
            RedisCommand::Hello { .. } => "hello",
            RedisCommand::Command => "command",
            RedisCommand::CommandCount => "command|count",
            RedisCommand::CommandDocs { .. } => "command|docs",
            RedisCommand::CommandInfo { .. } => "command|info",
            RedisCommand::CommandList => "command|list",
            RedisCommand::ClientSetName { .. } => "client|setname",
            RedisCommand::ClientGetName => "client|getname",
            RedisCommand::ClientId => "client|id",
            RedisCommand::ClientSetInfo { .. } => "client|setinfo",
            RedisCommand::Get { .. } => "get",
            RedisCommand::Set { .. } => "set",
            RedisCommand::Del { .. } => "del",
            RedisCommand::Exists { .. } => "exists",
            RedisCommand::Incr { .. } => "incr",
            RedisCommand::Decr { .. } => "decr",
            RedisCommand::IncrBy { .. } => "incrby",
            RedisCommand::DecrBy { .. } => "decrby",
            RedisCommand::Append { .. } => "append",
            RedisCommand::Strlen { .. } => "strlen",
            RedisCommand::MGet { .. } => "mget",
            RedisCommand::MSet { .. } => "mset",
            RedisCommand::DbSize => "dbsize",
            RedisCommand::Info { .. } => "info",
            RedisCommand::ConfigGet { .. } => "config|get",
            RedisCommand::Multi => "multi",
            RedisCommand::Exec => "exec",
            RedisCommand::Discard => "discard",
            RedisCommand::Watch { .. } => "watch",
            RedisCommand::Unwatch => "unwatch",
            RedisCommand::Typed { name, .. } => name,
            RedisCommand::Cluster { what } => match what {
                ClusterView::Slots => "cluster|slots",
                ClusterView::Shards => "cluster|shards",
                ClusterView::Nodes => "cluster|nodes",
                ClusterView::Info => "cluster|info",
                ClusterView::MyId => "cluster|myid",
            },
        }
    }
}

fn parse_set(arguments: &[Bytes]) -> Result<RedisCommand, CommandError> {
    let [key, value, options @ ..] = arguments else {
        return Err(CommandError::WrongArity { command: "set" });
    };
    let mut condition = SetCondition::Always;
    let mut get = false;
    let mut keep_ttl = false;
    let mut expiry: Option<(ExpiryUnit, &Bytes)> = None;
    let mut index = 0;
    // Options are read left to right and the first bad one is reported, as Redis does. A
    // repeated NX, XX or GET is harmless in Redis, so it is here; a second condition of
    // another kind, or a second IFEQ, is a syntax error.
    while let Some(option) = options.get(index) {
        if option.eq_ignore_ascii_case(b"nx") {
            if !matches!(condition, SetCondition::Always | SetCondition::IfAbsent) {
                return Err(CommandError::Syntax);
            }
            condition = SetCondition::IfAbsent;
        } else if option.eq_ignore_ascii_case(b"xx") {
            if !matches!(condition, SetCondition::Always | SetCondition::IfPresent) {
                return Err(CommandError::Syntax);
            }
            condition = SetCondition::IfPresent;
        } else if option.eq_ignore_ascii_case(b"get") {
            get = true;
        } else if option.eq_ignore_ascii_case(b"ifeq") {
            let Some(expected) = options.get(index + 1) else {
                return Err(CommandError::Syntax);
            };
            if condition != SetCondition::Always {
                return Err(CommandError::Syntax);
            }
            condition = SetCondition::IfEqual(expected.clone());
            index += 1;
        } else if option.eq_ignore_ascii_case(b"keepttl") && expiry.is_none() {
            keep_ttl = true;
        } else if let Some(unit) = ExpiryUnit::option(option)
            && !keep_ttl
            && expiry.is_none_or(|(previous, _)| previous == unit)
        {
            // The same option twice is allowed, the later time wins, as in Redis.
            let time = options.get(index + 1).ok_or(CommandError::Syntax)?;
            expiry = Some((unit, time));
            index += 1;
        } else {
            return Err(CommandError::Syntax);
        }
        index += 1;
    }
    // The time is checked after every option, as Redis does.
    let expiry = match expiry {
        Some((unit, time)) => Some(SetExpiry::At(option_deadline(time, unit, "set")?)),
        None if keep_ttl => Some(SetExpiry::Keep),
        None => None,
    };
    Ok(RedisCommand::Set {
        key: key.clone(),
        value: value.clone(),
        condition,
        get,
        expiry,
    })
}

fn parse_hello(arguments: &[Bytes]) -> Result<RedisCommand, CommandError> {
    let Some((version, mut options)) = arguments.split_first() else {
        return Ok(RedisCommand::Hello { client_name: None });
    };
    match parse_integer(version) {
        None => return Err(CommandError::ProtocolVersionNotAnInteger),
        Some(2) => {}
        Some(_) => return Err(CommandError::UnsupportedProtocol),
    }
    let mut client_name = None;
    while let Some((option, rest)) = options.split_first() {
        match rest {
            [user, _password, rest @ ..] if option.eq_ignore_ascii_case(b"auth") => {
                if !user.eq_ignore_ascii_case(b"default") {
                    return Err(CommandError::WrongPassword);
                }
                options = rest;
            }
            [name, rest @ ..] if option.eq_ignore_ascii_case(b"setname") => {
                if !is_valid_client_word(name) {
                    return Err(CommandError::InvalidClientName);
                }
                client_name = Some(name.clone());
                options = rest;
            }
            _ => {
                return Err(CommandError::HelloOption {
                    option: echoed(option),
                });
            }
        }
    }
    Ok(RedisCommand::Hello { client_name })
}

fn parse_command(arguments: &[Bytes]) -> Result<RedisCommand, CommandError> {
    let Some((subcommand, rest)) = arguments.split_first() else {
        return Ok(RedisCommand::Command);
    };
    if subcommand.eq_ignore_ascii_case(b"count") {
        let [] = exactly(rest, "command|count")?;
        Ok(RedisCommand::CommandCount)
    } else if subcommand.eq_ignore_ascii_case(b"docs") {
        Ok(RedisCommand::CommandDocs {
            names: rest.to_vec(),
        })
    } else if subcommand.eq_ignore_ascii_case(b"info") {
        Ok(RedisCommand::CommandInfo {
            names: rest.to_vec(),
        })
    } else if subcommand.eq_ignore_ascii_case(b"list") {
        // Redis accepts `FILTERBY ...` here; Chorus has too few commands to filter.
        if !rest.is_empty() {
            return Err(CommandError::Syntax);
        }
        Ok(RedisCommand::CommandList)
    } else {
        Err(unknown_subcommand("COMMAND", subcommand))
    }
}

fn parse_client(arguments: &[Bytes]) -> Result<RedisCommand, CommandError> {
    let Some((subcommand, rest)) = arguments.split_first() else {
        return Err(CommandError::WrongArity { command: "client" });
    };
    if subcommand.eq_ignore_ascii_case(b"setname") {
        let [name] = exactly(rest, "client|setname")?;
        if !is_valid_client_word(name) {
            return Err(CommandError::InvalidClientName);
        }
        Ok(RedisCommand::ClientSetName { name: name.clone() })
    } else if subcommand.eq_ignore_ascii_case(b"getname") {
        let [] = exactly(rest, "client|getname")?;
        Ok(RedisCommand::ClientGetName)
    } else if subcommand.eq_ignore_ascii_case(b"id") {
        let [] = exactly(rest, "client|id")?;
        Ok(RedisCommand::ClientId)
    } else if subcommand.eq_ignore_ascii_case(b"setinfo") {
        let [attribute_name, value] = exactly(rest, "client|setinfo")?;
        let attribute = if attribute_name.eq_ignore_ascii_case(b"lib-name") {
            ClientAttribute::LibraryName
        } else if attribute_name.eq_ignore_ascii_case(b"lib-ver") {
            ClientAttribute::LibraryVersion
        } else {
            return Err(CommandError::UnrecognizedClientAttribute {
                option: echoed(attribute_name),
            });
        };
        if !is_valid_client_word(value) {
            return Err(CommandError::InvalidClientAttribute {
                attribute: echoed(attribute_name),
            });
        }
        Ok(RedisCommand::ClientSetInfo {
            attribute,
            value: value.clone(),
        })
    } else {
        Err(unknown_subcommand("CLIENT", subcommand))
    }
}

fn parse_cluster(arguments: &[Bytes]) -> Result<RedisCommand, CommandError> {
    let Some((subcommand, rest)) = arguments.split_first() else {
        return Err(CommandError::WrongArity { command: "cluster" });
    };
    let what = [
        (&b"slots"[..], ClusterView::Slots),
        (b"shards", ClusterView::Shards),
        (b"nodes", ClusterView::Nodes),
        (b"info", ClusterView::Info),
        (b"myid", ClusterView::MyId),
    ]
    .into_iter()
    .find(|(name, _)| subcommand.eq_ignore_ascii_case(name))
    .map(|(_, what)| what)
    .ok_or_else(|| unknown_subcommand("CLUSTER", subcommand))?;
    if !rest.is_empty() {
        return Err(CommandError::WrongArity { command: "cluster" });
    }
    Ok(RedisCommand::Cluster { what })
}

fn parse_config(arguments: &[Bytes]) -> Result<RedisCommand, CommandError> {
    let Some((subcommand, rest)) = arguments.split_first() else {
        return Err(CommandError::WrongArity { command: "config" });
    };
    if subcommand.eq_ignore_ascii_case(b"get") {
        Ok(RedisCommand::ConfigGet {
            patterns: at_least_one(rest, "config|get")?,
        })
    } else {
        Err(unknown_subcommand("CONFIG", subcommand))
    }
}

/// The arguments as an array of exactly `N`, or a wrong-arity error naming `command`.
fn exactly<'a, const N: usize>(
    arguments: &'a [Bytes],
    command: &'static str,
) -> Result<&'a [Bytes; N], CommandError> {
    <&[Bytes; N]>::try_from(arguments).map_err(|_| CommandError::WrongArity { command })
}

fn at_least_one(arguments: &[Bytes], command: &'static str) -> Result<Vec<Bytes>, CommandError> {
    if arguments.is_empty() {
        return Err(CommandError::WrongArity { command });
    }
    Ok(arguments.to_vec())
}

fn integer(argument: &[u8]) -> Result<i64, CommandError> {
    parse_integer(argument).ok_or(CommandError::NotAnInteger)
}

/// Redis's rule for client names and library attributes: printable ASCII without spaces.
fn is_valid_client_word(word: &[u8]) -> bool {
    word.iter().all(|&byte| (b'!'..=b'~').contains(&byte))
}

/// A client-supplied word as Redis quotes it back in an error: at most 128 bytes, with line
/// breaks turned into spaces so the error stays one line.
fn echoed(word: &[u8]) -> String {
    let cut = &word[..word.len().min(ECHOED_BYTES_MAX)];
    String::from_utf8_lossy(cut).replace(['\r', '\n'], " ")
}

fn unknown_subcommand(container: &'static str, subcommand: &[u8]) -> CommandError {
    CommandError::UnknownSubcommand {
        container,
        subcommand: echoed(subcommand),
    }
}

/// Redis's unknown-command error: it quotes arguments, each followed by a space, until the
/// quoted text reaches 128 bytes, cutting the last one to fit.
fn unknown_command(name: &[u8], arguments: &[Bytes]) -> CommandError {
    let mut quoted = Vec::new();
    for argument in arguments {
        if quoted.len() >= ECHOED_BYTES_MAX {
            break;
        }
        let room = ECHOED_BYTES_MAX - quoted.len();
        quoted.push(b'\'');
        quoted.extend_from_slice(&argument[..argument.len().min(room)]);
        quoted.extend_from_slice(b"' ");
    }
    CommandError::UnknownCommand {
        name: echoed(name),
        arguments: echoed_unbounded(&quoted),
    }
}

fn echoed_unbounded(text: &[u8]) -> String {
    String::from_utf8_lossy(text).replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod spec_tests {
    use super::*;

    #[test]
    fn every_described_command_parses_and_names_are_unique() {
        for spec in COMMANDS {
            let words: Vec<Bytes> = std::iter::once(Bytes::from_static(spec.name.as_bytes()))
                .chain((1..spec.arity.unsigned_abs()).map(|_| Bytes::from_static(b"1")))
                .collect();
            assert!(
                !matches!(parse(words), Err(CommandError::UnknownCommand { .. })),
                "{} is described but not parsed",
                spec.name
            );
        }
        let mut names: Vec<&str> = COMMANDS.iter().map(|spec| spec.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), COMMANDS.len(), "sorted and unique");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontends::redis::resp::Frame;

    fn parsed(request: &[&str]) -> Result<RedisCommand, CommandError> {
        parse(
            request
                .iter()
                .map(|word| Bytes::copy_from_slice(word.as_bytes()))
                .collect(),
        )
    }

    fn ok(request: &[&str]) -> RedisCommand {
        parsed(request).unwrap_or_else(|error| panic!("{request:?}: {error}"))
    }

    fn error(request: &[&str]) -> String {
        parsed(request).expect_err("must be rejected").to_string()
    }

    fn bytes(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    fn arity(command: &str) -> String {
        format!("ERR wrong number of arguments for '{command}' command")
    }

    #[test]
    fn command_names_are_case_insensitive() {
        for name in ["get", "GET", "Get", "gEt"] {
            assert_eq!(ok(&[name, "k"]), RedisCommand::Get { key: bytes("k") });
        }
        assert_eq!(ok(&["CoNfIg", "gEt", "save"]).name(), "config|get");
    }

    #[test]
    fn unknown_commands_quote_their_arguments_as_redis_does() {
        // Byte for byte what Redis 7.0 answered.
        assert_eq!(
            error(&["foo", "a", "b"]),
            "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
        );
        assert_eq!(
            error(&["FOO"]),
            "ERR unknown command 'FOO', with args beginning with: "
        );
        assert_eq!(
            error(&["foo", "a'b", "c\r\nd"]),
            "ERR unknown command 'foo', with args beginning with: 'a'b' 'c  d' "
        );
        let long = "a".repeat(200);
        assert_eq!(
            error(&["foo", &long, "next"]),
            format!(
                "ERR unknown command 'foo', with args beginning with: '{}' ",
                "a".repeat(128)
            )
        );
        let long_name = "x".repeat(200);
        assert_eq!(
            error(&[&long_name]),
            format!(
                "ERR unknown command '{}', with args beginning with: ",
                "x".repeat(128)
            )
        );
        assert_eq!(
            parse(Vec::new()).expect_err("empty").to_string(),
            "ERR unknown command '', with args beginning with: "
        );
    }

    #[test]
    fn ping_echo_quit_select() {
        assert_eq!(ok(&["PING"]), RedisCommand::Ping { message: None });
        assert_eq!(
            ok(&["PING", "hi"]),
            RedisCommand::Ping {
                message: Some(bytes("hi"))
            }
        );
        assert_eq!(error(&["PING", "a", "b"]), arity("ping"));
        assert_eq!(
            ok(&["ECHO", "x"]),
            RedisCommand::Echo {
                message: bytes("x")
            }
        );
        assert_eq!(error(&["ECHO"]), arity("echo"));
        assert_eq!(error(&["ECHO", "a", "b"]), arity("echo"));
        assert_eq!(ok(&["QUIT"]), RedisCommand::Quit);
        assert_eq!(ok(&["QUIT", "extra"]), RedisCommand::Quit);
        assert_eq!(ok(&["SELECT", "0"]), RedisCommand::Select);
        assert_eq!(error(&["SELECT", "1"]), "ERR DB index is out of range");
        assert_eq!(error(&["SELECT", "-1"]), "ERR DB index is out of range");
        assert_eq!(
            error(&["SELECT", "x"]),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(error(&["SELECT"]), arity("select"));
        assert_eq!(error(&["SELECT", "0", "0"]), arity("select"));
    }

    #[test]
    fn hello_speaks_only_protocol_two() {
        assert_eq!(ok(&["HELLO"]), RedisCommand::Hello { client_name: None });
        assert_eq!(
            ok(&["HELLO", "2"]),
            RedisCommand::Hello { client_name: None }
        );
        assert_eq!(
            ok(&["hello", "2", "SETNAME", "me", "AUTH", "default", "secret"]),
            RedisCommand::Hello {
                client_name: Some(bytes("me"))
            }
        );
        assert_eq!(
            error(&["HELLO", "3"]),
            "NOPROTO unsupported protocol version"
        );
        assert_eq!(
            error(&["HELLO", "1"]),
            "NOPROTO unsupported protocol version"
        );
        assert_eq!(
            error(&["HELLO", "x"]),
            "ERR Protocol version is not an integer or out of range"
        );
        assert_eq!(
            error(&["HELLO", "2", "bogus"]),
            "ERR Syntax error in HELLO option 'bogus'"
        );
        assert_eq!(
            error(&["HELLO", "2", "AUTH", "default"]),
            "ERR Syntax error in HELLO option 'AUTH'"
        );
        assert_eq!(
            error(&["HELLO", "2", "SETNAME"]),
            "ERR Syntax error in HELLO option 'SETNAME'"
        );
        assert_eq!(
            error(&["HELLO", "2", "AUTH", "a", "b"]),
            "WRONGPASS invalid username-password pair or user is disabled."
        );
        assert_eq!(
            error(&["HELLO", "2", "SETNAME", "a b"]),
            "ERR Client names cannot contain spaces, newlines or special characters."
        );
    }

    #[test]
    fn command_introspection_is_answerable() {
        assert_eq!(ok(&["COMMAND"]), RedisCommand::Command);
        assert_eq!(ok(&["COMMAND", "COUNT"]), RedisCommand::CommandCount);
        // What interactive redis-cli 7.0 sends on start.
        assert_eq!(
            ok(&["COMMAND", "DOCS"]),
            RedisCommand::CommandDocs { names: vec![] }
        );
        assert_eq!(
            ok(&["command", "docs", "get", "set"]),
            RedisCommand::CommandDocs {
                names: vec![bytes("get"), bytes("set")]
            }
        );
        assert_eq!(
            ok(&["COMMAND", "INFO", "get"]),
            RedisCommand::CommandInfo {
                names: vec![bytes("get")]
            }
        );
        assert_eq!(ok(&["COMMAND", "LIST"]), RedisCommand::CommandList);
        assert_eq!(error(&["COMMAND", "LIST", "FILTERBY"]), "ERR syntax error");
        assert_eq!(error(&["COMMAND", "COUNT", "x"]), arity("command|count"));
        assert_eq!(
            error(&["COMMAND", "foo"]),
            "ERR unknown subcommand 'foo'. Try COMMAND HELP."
        );
    }

    #[test]
    fn client_subcommands_are_validated() {
        assert_eq!(
            ok(&["CLIENT", "SETNAME", "worker-1"]),
            RedisCommand::ClientSetName {
                name: bytes("worker-1")
            }
        );
        assert_eq!(
            ok(&["CLIENT", "SETNAME", ""]),
            RedisCommand::ClientSetName { name: bytes("") }
        );
        assert_eq!(
            error(&["CLIENT", "SETNAME", "a b"]),
            "ERR Client names cannot contain spaces, newlines or special characters."
        );
        assert_eq!(
            error(&["CLIENT", "SETNAME", "x", "y"]),
            arity("client|setname")
        );
        assert_eq!(ok(&["client", "getname"]), RedisCommand::ClientGetName);
        assert_eq!(error(&["CLIENT", "GETNAME", "x"]), arity("client|getname"));
        assert_eq!(ok(&["CLIENT", "ID"]), RedisCommand::ClientId);
        assert_eq!(error(&["CLIENT", "ID", "x"]), arity("client|id"));
        assert_eq!(
            ok(&["CLIENT", "SETINFO", "LIB-NAME", "redis-py"]),
            RedisCommand::ClientSetInfo {
                attribute: ClientAttribute::LibraryName,
                value: bytes("redis-py")
            }
        );
        assert_eq!(
            ok(&["CLIENT", "SETINFO", "lib-ver", "5.0.1"]),
            RedisCommand::ClientSetInfo {
                attribute: ClientAttribute::LibraryVersion,
                value: bytes("5.0.1")
            }
        );
        assert_eq!(
            error(&["CLIENT", "SETINFO", "bad", "x"]),
            "ERR Unrecognized option 'bad'"
        );
        assert_eq!(
            error(&["CLIENT", "SETINFO", "lib-name", "a b"]),
            "ERR lib-name cannot contain spaces, newlines or special characters."
        );
        assert_eq!(
            error(&["CLIENT", "SETINFO", "lib-name"]),
            arity("client|setinfo")
        );
        assert_eq!(error(&["CLIENT"]), arity("client"));
        assert_eq!(
            error(&["CLIENT", "foo"]),
            "ERR unknown subcommand 'foo'. Try CLIENT HELP."
        );
    }

    #[test]
    fn get_and_single_key_commands_take_exactly_their_arguments() {
        assert_eq!(
            ok(&["STRLEN", "k"]),
            RedisCommand::Strlen { key: bytes("k") }
        );
        assert_eq!(ok(&["INCR", "k"]), RedisCommand::Incr { key: bytes("k") });
        assert_eq!(ok(&["DECR", "k"]), RedisCommand::Decr { key: bytes("k") });
        assert_eq!(ok(&["GET", ""]), RedisCommand::Get { key: bytes("") });
        assert_eq!(
            ok(&["APPEND", "k", "v"]),
            RedisCommand::Append {
                key: bytes("k"),
                value: bytes("v")
            }
        );
        for (request, command) in [
            (&["GET"][..], "get"),
            (&["GET", "a", "b"], "get"),
            (&["STRLEN"], "strlen"),
            (&["INCR"], "incr"),
            (&["INCR", "a", "b"], "incr"),
            (&["DECR"], "decr"),
            (&["APPEND", "k"], "append"),
            (&["APPEND", "k", "v", "w"], "append"),
            (&["INCRBY", "k"], "incrby"),
            (&["DECRBY", "k"], "decrby"),
            (&["DECRBY", "k", "1", "2"], "decrby"),
            (&["DBSIZE", "x"], "dbsize"),
        ] {
            assert_eq!(error(request), arity(command), "{request:?}");
        }
    }

    #[test]
    fn increments_must_be_canonical_integers() {
        assert_eq!(
            ok(&["INCRBY", "k", "-5"]),
            RedisCommand::IncrBy {
                key: bytes("k"),
                increment: -5
            }
        );
        assert_eq!(
            ok(&["DECRBY", "k", "9223372036854775807"]),
            RedisCommand::DecrBy {
                key: bytes("k"),
                decrement: i64::MAX
            }
        );
        for bad in ["x", "1.5", "+1", "01", "-0", "1 ", "99999999999999999999"] {
            assert_eq!(
                error(&["INCRBY", "k", bad]),
                "ERR value is not an integer or out of range",
                "{bad}"
            );
            assert_eq!(
                error(&["DECRBY", "k", bad]),
                "ERR value is not an integer or out of range",
                "{bad}"
            );
        }
        assert_eq!(
            error(&["DECRBY", "k", "-9223372036854775808"]),
            "ERR decrement would overflow"
        );
    }

    #[test]
    fn set_parses_its_conditions() {
        let set = |condition, get| RedisCommand::Set {
            expiry: None,
            key: bytes("k"),
            value: bytes("v"),
            condition,
            get,
        };
        assert_eq!(ok(&["SET", "k", "v"]), set(SetCondition::Always, false));
        assert_eq!(
            ok(&["SET", "k", "v", "nx"]),
            set(SetCondition::IfAbsent, false)
        );
        assert_eq!(
            ok(&["SET", "k", "v", "XX"]),
            set(SetCondition::IfPresent, false)
        );
        assert_eq!(
            ok(&["SET", "k", "v", "GET"]),
            set(SetCondition::Always, true)
        );
        assert_eq!(
            ok(&["SET", "k", "v", "GET", "NX"]),
            set(SetCondition::IfAbsent, true)
        );
        assert_eq!(
            ok(&["SET", "k", "v", "NX", "NX"]),
            set(SetCondition::IfAbsent, false)
        );
        assert_eq!(
            ok(&["SET", "k", "v", "get", "get"]),
            set(SetCondition::Always, true)
        );
        assert_eq!(
            ok(&["SET", "k", "v", "IFEQ", "old"]),
            set(SetCondition::IfEqual(bytes("old")), false)
        );
        assert_eq!(
            ok(&["SET", "k", "v", "GET", "ifeq", "NX"]),
            set(SetCondition::IfEqual(bytes("NX")), true)
        );
        assert!(ok(&["SET", "k", "v"]).is_write());
    }

    #[test]
    fn set_rejects_what_redis_and_valkey_reject() {
        for request in [
            &["SET", "k", "v", "NX", "XX"][..],
            &["SET", "k", "v", "XX", "NX"],
            &["SET", "k", "v", "IFEQ", "a", "NX"],
            &["SET", "k", "v", "XX", "IFEQ", "a"],
            &["SET", "k", "v", "IFEQ", "a", "IFEQ", "b"],
            &["SET", "k", "v", "IFEQ"],
            &["SET", "k", "v", "bogus"],
        ] {
            assert_eq!(error(request), "ERR syntax error", "{request:?}");
        }
        for request in [
            &["SET", "k", "v", "EX"][..],
            &["SET", "k", "v", "EX", "10", "PX", "10"],
            &["SET", "k", "v", "KEEPTTL", "EX", "10"],
            &["SET", "k", "v", "EX", "10", "KEEPTTL"],
            &["SET", "k", "v", "PXAT", "1", "KEEPTTL"],
            &["SET", "k", "v", "EX", "x", "NX", "XX"],
        ] {
            assert_eq!(error(request), "ERR syntax error", "{request:?}");
        }
        for request in [
            &["SET", "k", "v", "EX", "0"][..],
            &["SET", "k", "v", "px", "-1"],
            &["SET", "k", "v", "EXAT", "0"],
            &["SET", "k", "v", "EX", "9223372036854775807"],
            &["SET", "k", "v", "PX", "9223372036854775807"],
            &["SET", "k", "v", "EXAT", "9223372036854776"],
        ] {
            assert_eq!(
                error(request),
                "ERR invalid expire time in 'set' command",
                "{request:?}"
            );
        }
        assert_eq!(
            error(&["SET", "k", "v", "EX", "1.5"]),
            "ERR value is not an integer or out of range"
        );
        let RedisCommand::Set { expiry, .. } = ok(&["SET", "k", "v", "ex", "5", "EX", "7"]) else {
            panic!("SET parses to SET");
        };
        assert_eq!(
            expiry,
            Some(SetExpiry::At(chorus_kv::Deadline::After(7_000))),
            "the later time wins"
        );
        let RedisCommand::Set { expiry, .. } = ok(&["SET", "k", "v", "KEEPTTL", "keepttl"]) else {
            panic!("SET parses to SET");
        };
        assert_eq!(expiry, Some(SetExpiry::Keep));
        assert_eq!(error(&["SET", "k"]), arity("set"));
        assert_eq!(error(&["SET"]), arity("set"));
    }

    #[test]
    fn multi_key_commands_need_at_least_one_key() {
        let keys = vec![bytes("a"), bytes("b")];
        assert_eq!(
            ok(&["DEL", "a", "b"]),
            RedisCommand::Del { keys: keys.clone() }
        );
        assert_eq!(
            ok(&["EXISTS", "a", "b"]),
            RedisCommand::Exists { keys: keys.clone() }
        );
        assert_eq!(ok(&["MGET", "a", "b"]), RedisCommand::MGet { keys });
        assert_eq!(error(&["DEL"]), arity("del"));
        assert_eq!(error(&["EXISTS"]), arity("exists"));
        assert_eq!(error(&["MGET"]), arity("mget"));
    }

    #[test]
    fn mset_needs_whole_pairs() {
        assert_eq!(
            ok(&["MSET", "a", "1", "b", "2"]),
            RedisCommand::MSet {
                pairs: vec![(bytes("a"), bytes("1")), (bytes("b"), bytes("2"))]
            }
        );
        assert_eq!(error(&["MSET"]), arity("mset"));
        assert_eq!(error(&["MSET", "a"]), arity("mset"));
        assert_eq!(error(&["MSET", "a", "1", "b"]), arity("mset"));
    }

    #[test]
    fn server_commands() {
        assert_eq!(ok(&["DBSIZE"]), RedisCommand::DbSize);
        assert_eq!(ok(&["INFO"]), RedisCommand::Info { sections: vec![] });
        assert_eq!(
            ok(&["INFO", "server", "clients"]),
            RedisCommand::Info {
                sections: vec![bytes("server"), bytes("clients")]
            }
        );
        // What redis-benchmark sends on start.
        assert_eq!(
            ok(&["CONFIG", "GET", "save"]),
            RedisCommand::ConfigGet {
                patterns: vec![bytes("save")]
            }
        );
        assert_eq!(
            ok(&["config", "get", "save", "appendonly"]),
            RedisCommand::ConfigGet {
                patterns: vec![bytes("save"), bytes("appendonly")]
            }
        );
        assert_eq!(error(&["CONFIG"]), arity("config"));
        assert_eq!(error(&["CONFIG", "GET"]), arity("config|get"));
        assert_eq!(
            error(&["CONFIG", "SET", "a", "b"]),
            "ERR unknown subcommand 'SET'. Try CONFIG HELP."
        );
    }

    #[test]
    fn only_key_space_changes_are_writes() {
        let writes = [
            &["SET", "k", "v"][..],
            &["DEL", "k"],
            &["INCR", "k"],
            &["DECR", "k"],
            &["INCRBY", "k", "1"],
            &["DECRBY", "k", "1"],
            &["APPEND", "k", "v"],
            &["MSET", "k", "v"],
        ];
        for request in writes {
            assert!(ok(request).is_write(), "{request:?}");
        }
        let reads = [
            &["GET", "k"][..],
            &["EXISTS", "k"],
            &["STRLEN", "k"],
            &["MGET", "k"],
            &["DBSIZE"],
            &["PING"],
            &["ECHO", "x"],
            &["QUIT"],
            &["SELECT", "0"],
            &["HELLO"],
            &["COMMAND", "DOCS"],
            &["CLIENT", "ID"],
            &["INFO"],
            &["CONFIG", "GET", "save"],
        ];
        for request in reads {
            assert!(!ok(request).is_write(), "{request:?}");
        }
    }

    #[test]
    fn names_are_lowercase_redis_names() {
        assert_eq!(ok(&["MSET", "k", "v"]).name(), "mset");
        assert_eq!(ok(&["client", "SETNAME", "x"]).name(), "client|setname");
        assert_eq!(ok(&["COMMAND", "DOCS"]).name(), "command|docs");
        assert_eq!(ok(&["INCRBY", "k", "1"]).name(), "incrby");
    }

    #[test]
    fn errors_render_as_error_frames() {
        let frame = parsed(&["SET", "k", "v", "NX", "XX"])
            .expect_err("conflict")
            .to_frame();
        assert_eq!(frame, Frame::Error("ERR syntax error".to_owned()));
    }
}
