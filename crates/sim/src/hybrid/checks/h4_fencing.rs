//! H4: no server acknowledges an epoch lower than the highest it persisted, across restarts
//! (BookKeeper fencing, Kafka leader epochs); nor one it abandoned as a backup.

use chorus_core::NodeId;
use chorus_hybrid::{Epoch, HardState};

/// `node`, whose durable hard state is `durable`, sends an acknowledgement for `epoch`.
pub(crate) fn ack_respects_fence(
    node: NodeId,
    durable: &HardState,
    epoch: Epoch,
    success: bool,
) -> Option<String> {
    if epoch < durable.highest_epoch {
        return Some(format!(
            "{node} acknowledged {epoch} below its persisted {}",
            durable.highest_epoch
        ));
    }
    if success && epoch <= durable.abandoned_epoch {
        return Some(format!("{node} acknowledged {epoch}, which it abandoned"));
    }
    None
}
