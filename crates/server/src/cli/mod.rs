//! The `chorus` subcommands other than running one node: a local cluster ([`up`]), the native
//! client ([`kv`]), the simulator ([`sim`]), `chorus status` ([`status`]), `chorus snapshot`
//! ([`snapshot`]) and membership changes ([`admin`]).

pub mod admin;
pub mod kv;
pub mod sim;
pub mod snapshot;
pub mod status;
pub mod up;
