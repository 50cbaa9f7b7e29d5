//! Lease reads answered on the client connection's own thread.
//!
//! With lease reads on (thesis §6.4.1), a Raft leader that a quorum answered within its lease
//! needs no message to answer a linearizable read, only its own applied state. Handing each
//! such read to the driver's queue and back costs two thread hand-offs per read, and at many
//! clients those hand-offs cost far more than the lookup (docs/benchmarks, "Lease reads on the
//! connections' threads"). So the state the driver applies to lives behind a lock
//! ([`SharedState`]), and a connection answers a lease read itself, under the read lock, when
//! the [`LeaseGate`] says it may.
//!
//! The driver publishes two facts in the gate, before any message leaves the node and after
//! every turn of its loop:
//! - until when, in real time, the lease holds: the nominal time of the last tick the core
//!   counted ([`super::driver::Context::tick_due`]) plus the ticks of lease the core says are
//!   left; or that there is none (not the leader, a transfer under way, the configuration in
//!   force just changed, the driver's clock fell behind);
//! - the leader's commit index.
//!
//! A host that stops closes the gate for good, and a lock poisoned by a panic while applying
//! refuses lease reads. A connection answers a read here only if, holding the read lock, the applied index is at
//! least the commit index it then loads, the lease still holds after that load, and no key's
//! expiry time has passed on this node's clock (such reads go through the log). The read is
//! then linearizable at the moment the commit index was loaded: every write that had
//! completed anywhere by then has an index no larger (a commit index leaves this node only in
//! messages sent after it is published, and this node answers its own writes only once they
//! are applied), every write in the state read had committed before then, and no other leader
//! can have been elected, let alone have committed anything, before the lease ends. Every
//! other read goes to the driver as before, which serves it from the lease or by ReadIndex.
//!
//! The gate is closed whenever the core holds no lease, and in particular before the message
//! that hands leadership to another node (`TimeoutNow`) leaves: that node's election skips the
//! followers' promise the lease rests on. A gate that only ever moved its deadline forward
//! would go on answering from the old lease after a transfer (the injected bug
//! `lease-gate-only-extends`, caught by `crates/server/tests/cluster/lease.rs`).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use bytes::Bytes;
use chorus_core::LogIndex;

use super::boundary::{LocalReads, wall_clock_ms};

/// What a lease read needs of the replicated state (the Raft host's state implements it).
pub trait LeaseReadable: Send + Sync + 'static {
    /// The state machine's encoded answer to the encoded `query`.
    fn answer(&self, query: &[u8]) -> Bytes;
    /// Whether the state still holds a key whose expiry time had passed at `now_ms` (Unix
    /// milliseconds): reads then go through the log, where such keys are removed first.
    fn expiry_due(&self, now_ms: u64) -> bool;
}

/// The replicated state and the last log index applied to it.
#[derive(Debug)]
pub struct Applied<M> {
    /// The replicated state (the Raft host's: the state machine and its origin sessions).
    pub state: M,
    /// The last entry applied to it (or the snapshot it was restored from).
    pub index: LogIndex,
}

/// The replicated state, applied to by the driver and read by the lease gate.
pub struct SharedState<M>(Arc<RwLock<Applied<M>>>);

impl<M> Clone for SharedState<M> {
    fn clone(&self) -> SharedState<M> {
        SharedState(self.0.clone())
    }
}

impl<M> SharedState<M> {
    /// `state`, applied up to `index`.
    #[must_use]
    pub fn new(state: M, index: LogIndex) -> SharedState<M> {
        SharedState(Arc::new(RwLock::new(Applied { state, index })))
    }

    /// The state, for the driver to read. A poisoned lock is taken as it is: only the
    /// driver writes, and a driver that panicked holding it has stopped.
    pub fn read(&self) -> RwLockReadGuard<'_, Applied<M>> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state, for applying to (the driver only).
    pub fn write(&self) -> RwLockWriteGuard<'_, Applied<M>> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state for a lease read, unless the lock is poisoned: the driver panicked while
    /// applying, and the state may be half changed.
    fn read_sound(&self) -> Option<RwLockReadGuard<'_, Applied<M>>> {
        self.0.read().ok()
    }
}

/// What the driver publishes for lease reads on the connections' threads (see the module
/// docs).
pub struct LeaseGate<M> {
    state: SharedState<M>,
    /// The instant `until` counts from.
    epoch: Instant,
    /// Nanoseconds after `epoch` at which the lease ends; 0: no lease.
    until: AtomicU64,
    /// The leader's commit index when last published.
    commit: AtomicU64,
    /// The host stopped: nothing applies to the state any more.
    closed: AtomicBool,
    /// Deliberate bug (TESTING ONLY): the deadline only ever moves forward, so the gate never
    /// closes before the old lease runs out.
    only_extends: bool,
}

impl<M> fmt::Debug for LeaseGate<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseGate")
            .field("until", &self.until.load(Ordering::Relaxed))
            .field("commit", &self.commit.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<M> LeaseGate<M> {
    /// A closed gate over `state`; with `only_extends`, the injected bug above.
    #[must_use]
    pub fn new(state: SharedState<M>, only_extends: bool) -> LeaseGate<M> {
        LeaseGate {
            state,
            epoch: Instant::now(),
            until: AtomicU64::new(0),
            commit: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            only_extends,
        }
    }

    /// Publishes the leader's `commit` index and the end of its lease (`None`: it holds
    /// none). The commit index goes first, so a connection that sees a lease sees a commit
    /// index at least as new as the one published with it.
    pub fn publish(&self, until: Option<Instant>, commit: LogIndex) {
        self.commit.fetch_max(commit.0, Ordering::SeqCst);
        let until = until.map_or(0, |until| {
            let nanos = until.saturating_duration_since(self.epoch).as_nanos();
            u64::try_from(nanos).unwrap_or(u64::MAX).max(1)
        });
        if self.only_extends {
            self.until.fetch_max(until, Ordering::SeqCst);
        } else {
            self.until.store(until, Ordering::SeqCst);
        }
    }

    /// Closes the gate for good (the host stopped): no lease read is answered any more.
    pub fn close(&self) {
        self.until.store(0, Ordering::SeqCst);
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Whether the published lease holds at this instant.
    fn holds(&self) -> bool {
        let until = self.until.load(Ordering::SeqCst);
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        until != 0 && now < until && !self.closed.load(Ordering::Relaxed)
    }
}

impl<M: LeaseReadable> LocalReads for LeaseGate<M> {
    fn try_read(&self, query: &[u8]) -> Option<Bytes> {
        if !self.holds() {
            return None;
        }
        let applied = self.state.read_sound()?;
        // The order matters (see the module docs): the applied index is fixed while the lock
        // is held, then the commit index is loaded, then the lease is checked again.
        let commit = self.commit.load(Ordering::SeqCst);
        if applied.index.0 < commit || !self.holds() {
            return None;
        }
        if applied.state.expiry_due(wall_clock_ms()) {
            return None;
        }
        Some(applied.state.answer(query))
    }
}

/// The host's hold on its gate: a host that stops (its driver returned an error, or
/// panicked) answers no more lease reads, since nothing applies to the state any longer.
#[derive(Debug)]
pub struct HostGate<M>(pub Arc<LeaseGate<M>>);

impl<M> std::ops::Deref for HostGate<M> {
    type Target = LeaseGate<M>;

    fn deref(&self) -> &LeaseGate<M> {
        &self.0
    }
}

impl<M> Drop for HostGate<M> {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chorus_core::envelope::Deduplicated;
    use chorus_kv::{KvConfig, KvStore, Query, Response};

    use super::*;

    type State = Deduplicated<KvStore>;

    fn fresh() -> State {
        Deduplicated::new(KvStore::new(KvConfig::default()))
    }

    fn get(gate: &LeaseGate<State>) -> Option<Response> {
        let query = Query::Get { key: "k".into() }.encode();
        gate.try_read(&query)
            .map(|bytes| Response::decode(&bytes).expect("an answer"))
    }

    // The gate answers only while the published lease holds and the state is applied up to
    // the published commit index; a closed gate, an expired lease or a lagging state sends
    // the read to the driver.
    #[test]
    fn the_gate_answers_only_within_the_lease_and_from_a_state_applied_up_to_the_commit() {
        let state = SharedState::new(fresh(), LogIndex(5));
        let gate = LeaseGate::new(state.clone(), false);
        assert_eq!(get(&gate), None, "a new gate is closed");
        let later = Instant::now() + Duration::from_secs(60);
        gate.publish(Some(later), LogIndex(5));
        assert_eq!(get(&gate), Some(Response::Value(None)));
        gate.publish(Some(later), LogIndex(6));
        assert_eq!(get(&gate), None, "entry 6 committed but not applied here");
        state.write().index = LogIndex(6);
        assert_eq!(get(&gate), Some(Response::Value(None)));
        gate.publish(None, LogIndex(6));
        assert_eq!(get(&gate), None, "the lease was dropped");
        gate.publish(Some(Instant::now()), LogIndex(6));
        assert_eq!(get(&gate), None, "the lease ran out");
    }

    // The injected bug keeps the old deadline when the lease is dropped.
    #[test]
    fn a_gate_that_only_extends_stays_open_when_the_lease_is_dropped() {
        let state = SharedState::new(fresh(), LogIndex(1));
        let gate = LeaseGate::new(state, true);
        gate.publish(Some(Instant::now() + Duration::from_secs(60)), LogIndex(1));
        gate.publish(None, LogIndex(1));
        assert!(get(&gate).is_some());
    }
}
