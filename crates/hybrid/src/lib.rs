//! The hybrid scheme of Chorus: primary-backup whose configuration a Raft group decides.
//!
//! Two pure, sans-IO pieces (no clock, no threads, no sockets, no files; time is an input):
//!
//! - [`configuration::ConfigStateMachine`]: the view service grown into a deterministic
//!   [`chorus_core::StateMachine`], so that the Raft core replicates it unchanged. It holds the
//!   view (`epoch`, primary, backups, pending or active), the last *active* view, and the
//!   registered data servers. A view change is a compare-and-swap on the epoch; a new primary
//!   must come from the last active view and starts *pending* until it re-committed its log
//!   and proposed [`configuration::ConfigCommand::Activate`] (Vertical Paxos II).
//! - [`replica::DataReplica`]: one data server. The primary executes each write once and
//!   stamps its *effect* with `(epoch, lsn)` (passive replication: the log carries effects,
//!   backups apply them and never execute), sends it to every backup, commits when **every** backup of the view
//!   acknowledged it, and serves reads and acknowledges writes only while it holds an unexpired
//!   lease from every backup (PacificA). A backup that heard nothing for the grace period
//!   `G ≥ L·(1+ρ)/(1−ρ) + ε` stops acknowledging that epoch (persisted) and proposes itself, so
//!   the old primary's lease ran out before a new primary can exist.
//!
//! Invariants (checked by the simulator, `crates/sim/src/hybrid/checks/`): H1 at most one
//! server serves at any instant; H2 epochs only grow and every active primary comes from the
//! previous active view; H3 every acknowledged `(epoch, lsn)` is in every member of every
//! later active view; H4 no server acknowledges an epoch lower than the highest it persisted;
//! H5 a backup's grace ends after the primary's lease from it; H6 no write is acknowledged
//! below `min_replicas`, and a server that lost its unsynced tail is never primary.

pub mod configuration;
pub mod message;
pub mod replica;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use configuration::{
    ConfigCommand, ConfigOutput, ConfigStateMachine, Configuration, ServerRecord, View, ViewReason,
};
pub use message::{DataEntry, Message};
pub use replica::{
    Applied, DataReady, DataReplica, DataStatus, Durable, HardState, HybridConfig,
    HybridConfigError, ProposeError, ReadError, ReadId, Role, StepError,
};

/// A configuration epoch: the number of a view. Only grows; every data server persists the
/// highest it has seen and refuses anything from a lower one (fencing).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch after this one.
    ///
    /// # Panics
    /// On overflow.
    #[must_use]
    pub fn next(self) -> Epoch {
        Epoch(
            self.0
                .checked_add(1)
                .expect("invariant: epoch does not overflow"),
        )
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{}", self.0)
    }
}

/// A log sequence number on a data server: the first entry has lsn 1, lsn 0 is "before the
/// first entry".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The lsn after this one.
    ///
    /// # Panics
    /// On overflow.
    #[must_use]
    pub fn next(self) -> Lsn {
        Lsn(self
            .0
            .checked_add(1)
            .expect("invariant: lsn does not overflow"))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "l{}", self.0)
    }
}

/// A reading of one node's local clock, in the driver's time units. Clocks drift: two nodes'
/// readings are only comparable through the drift bound ρ ([`HybridConfig::drift_bound_ppm`]).
/// The core never reads a clock; the driver passes the reading in.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LocalTime(pub u64);

impl LocalTime {
    /// This reading plus `units`.
    #[must_use]
    pub fn plus(self, units: u64) -> LocalTime {
        LocalTime(self.0.saturating_add(units))
    }

    /// Units from `earlier` to this reading (0 if `earlier` is later).
    #[must_use]
    pub fn since(self, earlier: LocalTime) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}
