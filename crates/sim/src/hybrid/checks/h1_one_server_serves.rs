//! H1: at most one data server passes the serving rule at any simulated instant, with clock
//! drift up to the bound (PacificA §3.3: primary leases from every backup, and a backup's
//! grace period longer than the lease, make the old primary stop before a new one starts).

use chorus_core::NodeId;

/// `serving` holds every server that passes the serving rule now, each judged at its own
/// clock reading of this instant.
pub(crate) fn one_server_serves(serving: &[NodeId]) -> Option<String> {
    (serving.len() > 1).then(|| format!("{serving:?} pass the serving rule at once"))
}
