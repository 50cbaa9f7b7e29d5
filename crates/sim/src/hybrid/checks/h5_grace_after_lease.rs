//! H5: when a backup's grace period ends, the primary's lease from it has already ended
//! (PacificA §3.3: `G ≥ L·(1+ρ)/(1−ρ)` under the drift bound ρ). Judged at the true instant
//! the backup abandons its epoch, with the primary's clock read at that same instant.

use chorus_core::NodeId;
use chorus_hybrid::LocalTime;

/// `backup` abandoned its epoch; `lease` is what `primary` holds from it on its own clock,
/// and `primary_now` its clock now.
pub(crate) fn grace_after_lease(
    backup: NodeId,
    primary: NodeId,
    lease: Option<LocalTime>,
    primary_now: LocalTime,
) -> Option<String> {
    let lease = lease?;
    (lease > primary_now).then(|| {
        format!(
            "{backup}'s grace ended while {primary} holds its lease until {} (now {})",
            lease.0, primary_now.0
        )
    })
}
