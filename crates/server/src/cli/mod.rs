//! The `chorus` subcommands other than running one node: a local cluster ([`up`]), the native
//! client ([`kv`]), the simulator ([`sim`]), `chorus status` ([`status`]) and `chorus snapshot`
//! ([`snapshot`]).

pub mod kv;
pub mod sim;
pub mod snapshot;
pub mod status;
pub mod up;
