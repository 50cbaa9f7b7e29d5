//! H6: no write is acknowledged while the view is below `min_replicas` (Kafka's
//! `min.insync.replicas`: shrinking silently to one copy is how acknowledged data dies); a
//! server that lost its unsynced tail is never primary (the configuration state machine
//! refuses it, unit-tested in `chorus_hybrid::configuration`).

use chorus_core::NodeId;
use chorus_hybrid::View;

/// `primary` acknowledged a write in `view`.
pub(crate) fn acknowledged_with_enough_replicas(
    primary: NodeId,
    view: &View,
    min_replicas: usize,
) -> Option<String> {
    (view.members().len() < min_replicas).then(|| {
        format!("{primary} acknowledged a write in {view:?}, below min_replicas {min_replicas}")
    })
}
