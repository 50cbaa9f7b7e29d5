//! The key-value state machine of Chorus, with client sessions for exactly-once effects.
//!
//! The protocol cores (Raft, primary-backup, the hybrid) replicate opaque bytes; this crate
//! gives those bytes a meaning. It holds:
//!
//! - the command, query and response types ([`Command`], [`Op`], [`Query`], [`Response`],
//!   [`KvError`]) and their versioned byte encoding ([`Command::encode`],
//!   [`Command::decode`], …; see [`CODEC_VERSION`]);
//! - [`typed`], Redis's data model: typed values (strings, hashes, lists, sets, sorted sets),
//!   the Redis commands on them ([`TypedOp`]) and Redis-shaped answers ([`Reply`]);
//! - [`KvStore`], a deterministic [`chorus_core::StateMachine`]: a map of typed values plus the
//!   replicated session table that answers retried requests from a cache, so that each
//!   request takes effect at most once, and that expires sessions by log index, never by a
//!   clock. It replicates actively (Raft applies each command on every replica) or passively
//!   (primary-backup executes once and ships the command's *effect*, the after-image of every
//!   key and session it changed: `StateMachine::execute` and `apply_effect`).
//!
//! Start reading at [`KvStore`]. The semantics of each operation follow the client history
//! model (HISTORY.md): an append to an absent key treats it as `""`, and a compare-and-set
//! succeeds only if the key exists and equals `from`.
//!
//! This crate is pure: no clocks, threads, sockets, files or hash-ordered iteration.

mod codec;
mod command;
mod keyspace;
mod long_double;
mod store;
pub mod typed;

pub use codec::CODEC_VERSION;
pub use command::*;
pub use store::{
    BOUND_ANSWER_BYTES_MAX, BOUND_RETIRED_CONNECTIONS_MAX, EFFECT_VERSION, KvConfig, KvStore,
    SNAPSHOT_VERSION,
};
pub use typed::{Deadline, ExpireCondition, GetExChange, Reply, TypedOp, Value};
