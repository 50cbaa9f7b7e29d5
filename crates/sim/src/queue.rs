//! The seeded event queue every protocol's simulation runs on: events ordered by simulated
//! time, and events at the same time by the order they were scheduled in.
//!
//! It exists apart from the drivers so that the Raft and the primary-backup simulations order
//! their events by exactly the same rule: that rule (and the seed) is what makes a run a pure
//! function of its configuration.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

struct Scheduled<E> {
    time: u64,
    sequence: u64,
    event: E,
}

impl<E> PartialEq for Scheduled<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.sequence) == (other.time, other.sequence)
    }
}
impl<E> Eq for Scheduled<E> {}
impl<E> PartialOrd for Scheduled<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Scheduled<E> {
    // Reversed, so that the max-heap pops the earliest event first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.time, other.sequence).cmp(&(self.time, self.sequence))
    }
}

/// A queue of events of type `E` at points in simulated time.
pub(crate) struct EventQueue<E> {
    sequence: u64,
    heap: BinaryHeap<Scheduled<E>>,
}

impl<E> EventQueue<E> {
    /// An empty queue.
    pub(crate) fn new() -> EventQueue<E> {
        EventQueue {
            sequence: 0,
            heap: BinaryHeap::new(),
        }
    }

    /// Schedules `event` at absolute time `time`, after every event already scheduled then.
    pub(crate) fn push(&mut self, time: u64, event: E) {
        self.sequence += 1;
        self.heap.push(Scheduled {
            time,
            sequence: self.sequence,
            event,
        });
    }

    /// Takes the earliest event and its time.
    pub(crate) fn pop(&mut self) -> Option<(u64, E)> {
        self.heap.pop().map(|s| (s.time, s.event))
    }

    /// The time of the earliest event.
    pub(crate) fn peek_time(&self) -> Option<u64> {
        self.heap.peek().map(|s| s.time)
    }
}
