//! The hybrid scheme's own invariants (HYBRID.md, H1–H6), one file each, beside the shared
//! S-checkers. Each checker keeps what it needs and returns what it found; the host reports it
//! under the invariant's name. The simulator judges with true time; the servers' clocks drift.

mod h1_one_server_serves;
mod h2_configuration;
mod h3_acknowledged_in_later_views;
mod h4_fencing;
mod h5_grace_after_lease;
mod h6_min_replicas;

pub(crate) use h1_one_server_serves::one_server_serves;
pub(crate) use h2_configuration::ConfigurationHistory;
pub(crate) use h3_acknowledged_in_later_views::AcknowledgedEntries;
pub(crate) use h4_fencing::ack_respects_fence;
pub(crate) use h5_grace_after_lease::grace_after_lease;
pub(crate) use h6_min_replicas::acknowledged_with_enough_replicas;

use std::hash::{DefaultHasher, Hash, Hasher};

/// A stable fingerprint of an entry's command.
pub(crate) fn command_hash(command: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    command.hash(&mut hasher);
    hasher.finish()
}
