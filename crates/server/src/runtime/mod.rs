//! The node runtime: what runs a protocol core for real, on one machine.
//!
//! - [`boundary`]: the types the driver thread shares with the rest of the process (inputs,
//!   replies, the published status, the peers' queues). Everything outside the driver talks
//!   to it only through these.
//! - [`driver`]: the one driver loop, generic over a [`driver::Host`]; [`requests`]: the client
//!   request books every scheme keeps alike.
//! - [`raft_host`], [`pb_host`] and [`hybrid_host`]: what differs per scheme: how to feed its
//!   core and carry out its Ready (the hybrid's configuration nodes reuse the Raft host over
//!   another state machine); [`raft_disk`]: the Raft host's storage thread, which writes and
//!   syncs the durable log while the driver goes on; [`lease_gate`]: the Raft leader's lease
//!   reads, answered on the client connections' threads from the state the driver applies.
//! - [`transport`]: TCP between nodes; it knows only the boundary, never a driver.
//! - [`members`]: the address book (where every member listens) and the dialer that connects
//!   to members learned at run time.
//!
//! Imports run one way: hosts → driver → requests → boundary, raft_host → raft_disk →
//! boundary, raft_host → lease_gate → boundary, driver → members → transport → boundary.

pub mod boundary;
pub mod driver;
pub mod hybrid_host;
pub mod lease_gate;
pub mod members;
pub mod pb_host;
pub mod raft_disk;
pub mod raft_host;
pub mod requests;
pub mod transport;
