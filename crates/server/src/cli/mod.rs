//! The `chorus` subcommands other than running one node: a local cluster ([`up`]), the native
//! client ([`kv`]), the simulator ([`sim`]) and `chorus status` ([`status`]).

pub mod kv;
pub mod sim;
pub mod status;
pub mod up;
