//! The node's Prometheus metrics, served at `GET /metrics`.
//!
//! The driver thread updates them as it works; the admin server encodes them on request. They
//! answer the questions an operator asks first: is the node making progress (proposals,
//! commits, apply lag), is the disk the bottleneck (fsync latency, entries per fsync), and is
//! the cluster stable (elections, leader changes; under primary-backup, view changes).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Every metric of one node.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Client commands proposed through this node.
    pub proposals: Counter,
    /// Client commands refused before entering any log (no leader, queues full).
    pub proposals_refused: Counter,
    /// Log entries applied to the state machine.
    pub entries_applied: Counter,
    /// Linearizable reads served.
    pub reads: Counter,
    /// Raft: reads served that the leader's lease answered at once, without a message round
    /// (thesis §6.4.1; only with lease reads on). Part of `reads`.
    pub lease_reads: Counter,
    /// Raft: reads served after a ReadIndex round (this node's as leader, or the leader's
    /// through a forward). Part of `reads`.
    pub read_index_reads: Counter,
    /// Client requests that timed out with an unknown outcome.
    pub request_timeouts: Counter,
    /// Seconds each fsync of the log took.
    pub fsync_seconds: Histogram,
    /// Entries made durable by one fsync (group commit).
    pub batch_entries: Histogram,
    /// Times this node became a candidate.
    pub elections: Counter,
    /// Times the leader (primary-backup: the primary) this node knows of changed.
    pub leader_changes: Counter,
    /// Primary-backup: times the view this node knows of changed.
    pub view_changes: Counter,
    /// Committed entries not yet applied.
    pub apply_lag: Gauge,
    /// Raft: 1 while the node repairs a log whose synced records a disk fault damaged (it
    /// starts no election, and votes only as its log before the damage would have,
    /// meanwhile), 0 otherwise.
    pub repairing: Gauge,
    /// Messages to peers dropped because their queue was full.
    pub peer_messages_dropped: Counter,
    /// Messages from peers refused as malformed.
    pub peer_messages_refused: Counter,
    /// Raft: held writes proposed again because the leader changed.
    pub proposals_resent: Counter,
    /// Raft: committed copies of a request that had taken effect already, skipped.
    pub duplicates_skipped: Counter,
    /// Raft: snapshots of the state machine taken and made durable.
    pub snapshots_taken: Counter,
    /// Raft: InstallSnapshot chunks read from disk and handed to the core to send.
    pub snapshot_chunks_sent: Counter,
    /// Raft: snapshots received from a leader and installed.
    pub snapshots_installed: Counter,
    /// Raft: how long writing a snapshot to disk took (on the snapshot thread).
    pub snapshot_write_seconds: Histogram,
}

impl Metrics {
    /// Registers every metric.
    #[must_use]
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("chorus");
        let proposals = Counter::default();
        let proposals_refused = Counter::default();
        let entries_applied = Counter::default();
        let reads = Counter::default();
        let lease_reads = Counter::default();
        let read_index_reads = Counter::default();
        let request_timeouts = Counter::default();
        let fsync_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let batch_entries = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        let elections = Counter::default();
        let leader_changes = Counter::default();
        let view_changes = Counter::default();
        let apply_lag = Gauge::default();
        let repairing = Gauge::default();
        let peer_messages_dropped = Counter::default();
        let peer_messages_refused = Counter::default();
        let proposals_resent = Counter::default();
        let duplicates_skipped = Counter::default();
        let snapshots_taken = Counter::default();
        let snapshot_chunks_sent = Counter::default();
        let snapshots_installed = Counter::default();
        let snapshot_write_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register("proposals", "Client commands proposed", proposals.clone());
        registry.register(
            "proposals_refused",
            "Client commands refused before entering any log",
            proposals_refused.clone(),
        );
        registry.register(
            "entries_applied",
            "Log entries applied",
            entries_applied.clone(),
        );
        registry.register("reads", "Linearizable reads served", reads.clone());
        registry.register(
            "lease_reads",
            "Linearizable reads answered from the leader's lease, without a message round",
            lease_reads.clone(),
        );
        registry.register(
            "read_index_reads",
            "Linearizable reads answered after a ReadIndex round",
            read_index_reads.clone(),
        );
        registry.register(
            "request_timeouts",
            "Client requests that timed out with an unknown outcome",
            request_timeouts.clone(),
        );
        registry.register(
            "fsync_seconds",
            "Latency of one log fsync",
            fsync_seconds.clone(),
        );
        registry.register(
            "batch_entries",
            "Entries made durable by one fsync",
            batch_entries.clone(),
        );
        registry.register(
            "elections",
            "Times this node became a candidate",
            elections.clone(),
        );
        registry.register(
            "leader_changes",
            "Times the known leader changed",
            leader_changes.clone(),
        );
        registry.register(
            "view_changes",
            "Times the known primary-backup view changed",
            view_changes.clone(),
        );
        registry.register(
            "apply_lag_entries",
            "Committed entries not yet applied",
            apply_lag.clone(),
        );
        registry.register(
            "repairing",
            "1 while the node repairs log records a disk fault damaged",
            repairing.clone(),
        );
        registry.register(
            "peer_messages_dropped",
            "Messages to peers dropped on a full queue",
            peer_messages_dropped.clone(),
        );
        registry.register(
            "peer_messages_refused",
            "Messages from peers refused as malformed",
            peer_messages_refused.clone(),
        );
        registry.register(
            "proposals_resent",
            "Held writes proposed again after a change of leader",
            proposals_resent.clone(),
        );
        registry.register(
            "duplicates_skipped",
            "Committed copies of requests that had taken effect already",
            duplicates_skipped.clone(),
        );
        registry.register(
            "snapshots_taken",
            "Snapshots of the state machine taken and made durable",
            snapshots_taken.clone(),
        );
        registry.register(
            "snapshot_chunks_sent",
            "InstallSnapshot chunks sent to followers",
            snapshot_chunks_sent.clone(),
        );
        registry.register(
            "snapshots_installed",
            "Snapshots received from a leader and installed",
            snapshots_installed.clone(),
        );
        registry.register(
            "snapshot_write_seconds",
            "Time to write a snapshot to disk",
            snapshot_write_seconds.clone(),
        );
        Metrics {
            registry,
            proposals,
            proposals_refused,
            entries_applied,
            reads,
            lease_reads,
            read_index_reads,
            request_timeouts,
            fsync_seconds,
            batch_entries,
            elections,
            leader_changes,
            view_changes,
            apply_lag,
            repairing,
            peer_messages_dropped,
            peer_messages_refused,
            proposals_resent,
            duplicates_skipped,
            snapshots_taken,
            snapshot_chunks_sent,
            snapshots_installed,
            snapshot_write_seconds,
        }
    }

    /// The Prometheus text exposition of every metric.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_encode_as_prometheus_text() {
        let metrics = Metrics::new();
        metrics.proposals.inc();
        metrics.fsync_seconds.observe(0.002);
        metrics.lease_reads.inc();
        let text = metrics.encode();
        assert!(text.contains("chorus_proposals_total 1"), "{text}");
        assert!(text.contains("chorus_lease_reads_total 1"), "{text}");
        assert!(text.contains("chorus_read_index_reads_total 0"), "{text}");
        assert!(text.contains("chorus_fsync_seconds_bucket"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
