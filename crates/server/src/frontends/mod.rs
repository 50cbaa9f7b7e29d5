//! How clients and operators reach a node: the Redis protocol ([`redis`]) and the HTTP admin
//! server ([`admin`]). Both talk to the driver only through the runtime's
//! [`boundary`](crate::runtime::boundary), whichever scheme the node runs.

pub mod admin;
pub mod redis;
