//! The primary-backup core of Chorus: a view service and the primary-backup replica, both
//! pure, deterministic and sans-IO.
//!
//! - [`ViewService`] decides who is primary and who is backup, from pings and ticks only (rules
//!   in [`view_service`]). It is also a [`chorus_core::StateMachine`], so the hybrid scheme can
//!   replicate the same code with Raft. [`ViewServer`] runs it on one node for this scheme.
//! - [`PbReplica`] is one server: the primary executes client operations, forwards each one's
//!   *effect* to the backup (passive replication: the backup never executes an operation) and
//!   answers after the backup acknowledged; a new backup first receives the complete state;
//!   view numbers fence replaced primaries (rules in [`replica`]).
//!
//! # The contract
//!
//! Both node types are driven like the Raft core, so the same simulator and runtime drive them:
//!
//! 1. **Input.** The driver calls `tick()` each time one ping interval's worth of logical time
//!    passes, `step(from, message)` for each message that arrives, and, on a replica,
//!    [`PbReplica::propose`] for each client command (wrapped in a
//!    [`chorus_core::envelope::Envelope`]) and [`PbReplica::read`] for each read.
//! 2. **Output.** When `has_ready()` is true, the driver takes `ready()` and handles the
//!    [`PbReady`] in order: send `messages`; answer the clients of `committed` (outputs in
//!    index order), tell the clients of `aborted` that the outcome is unknown, answer `reads`,
//!    fail `rejected_reads`; then call `advance()`.
//! 3. **One Ready at a time.** Between `ready` and `advance` the driver may keep calling the
//!    input verbs; their output waits for the next Ready. `ready` panics if one is outstanding.
//! 4. **No durability.** Nothing is persisted: a server that restarts comes back as a new,
//!    empty replica (built with [`PbReplica::new`]) and pings with view 0, which the view
//!    service treats as "lost its state". A driver should give every start a larger
//!    [`PbConfig::incarnation`] (the simulator counts restarts): pings then carry it
//!    ([`Message::PingFrom`]), and the service recognises a restart by it rather than by view
//!    0, which a ping delayed in the network can fake (the simulator found a live primary
//!    wedged that way; see `view_service` tests).
//!
//! # Robustness
//!
//! Configurations are checked when a node is built: [`PbReplica::new`], [`ViewService::new`]
//! and [`ViewServer::new`] return a [`ConfigError`] or [`ViewServiceConfigError`] rather than
//! build a node that cannot work.
//!
//! Messages may be stale, duplicated, reordered or forged. `step` validates each one: stale
//! or foreign messages are refused with a [`StepError`] and change nothing; a backup tells a
//! stale primary [`Message::Rejected`]. No network input makes a core panic; assertions guard
//! only the cores' own invariants. Every queue has a `_max` bound in [`PbConfig`] or
//! [`ViewServiceConfig`].
//!
//! # Honest weaknesses
//!
//! - The view service is a single point of failure: while it is down, no failover happens.
//! - Failure detection is a timeout: a slow primary can be declared dead. Fencing keeps that
//!   safe, not cheap.
//! - If the primary and the backup both fail, or the primary fails before acknowledging its
//!   view, the service is stuck forever: nobody else has the data.
//! - Replicating the view service by primary-backup would need a view service for it (chicken
//!   and egg); the hybrid scheme uses Raft instead.
//! - Every view with a new backup costs a full state transfer.

pub mod message;
mod ready;
pub mod replica;
pub mod view;
mod view_server;
pub mod view_service;

pub use message::Message;
pub use ready::{Aborted, Committed, PbReady, ReadId, ReadOutput};
pub use replica::{
    ConfigError, PbConfig, PbReplica, PbStatus, ProposeError, ReadError, Role, StepError,
};
pub use view::{View, ViewNumber};
pub use view_server::{VIEW_REPLIES_MAX, ViewServer};
pub use view_service::{
    CodecError, DurableView, PingError, PingReply, ViewService, ViewServiceCommand,
    ViewServiceConfig, ViewServiceConfigError,
};
