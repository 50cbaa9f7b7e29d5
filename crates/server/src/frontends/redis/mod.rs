//! The Redis front end: how unmodified Redis clients (`redis-cli`, `redis-benchmark`, client
//! libraries) talk to Chorus.
//!
//! It is split in two pure layers, so each can be tested without sockets:
//! - [`resp`] is the wire format, RESP2: it cuts requests out of a read buffer and encodes
//!   reply frames into a write buffer.
//! - [`command`] turns one request's arguments into a typed [`command::RedisCommand`], with
//!   Redis's own error texts.
//!
//! A connection's loop is then: read into a buffer; while [`resp::parse_request`] yields a
//! request, [`command::parse`] it, execute it (writes through the replicated log, reads as the
//! consistency mode allows) and [`resp::encode`] the reply; flush. A [`resp::RespError`] is
//! answered and ends the connection; a [`command::CommandError`] is answered and the
//! connection goes on. Replies must be written in request order, which pipelining clients
//! (`redis-benchmark -P 16`) rely on.
//!
//! What real clients send first, captured from Redis 7.0 tools against a real server:
//! interactive `redis-cli` sends `COMMAND DOCS` (to build its hints; an empty array is fine);
//! `redis-benchmark` sends `CONFIG GET save` and `CONFIG GET appendonly` pipelined in one
//! write, and expects each answered with a name/value pair array. Newer tools and client
//! libraries may also send `HELLO` and `CLIENT SETINFO`.

pub mod command;
pub mod data;
pub mod server;
pub mod spec;

pub use chorus_resp as resp;
