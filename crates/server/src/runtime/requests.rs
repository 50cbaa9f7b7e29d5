//! The client requests a driver holds until the state machine answers them.
//!
//! Every scheme keeps the same books: a request gets a number, waits under a deadline, and ends
//! in exactly one answer: the state machine's output, a refusal, `TIMEOUT` (the outcome is
//! unknown, never reported as a failure) when its deadline passes, or, when the node stops,
//! `TIMEOUT` for a write (it may still commit elsewhere) and `Stopped` for a read (it simply
//! did not happen). Bounded by `held_max`.
//!
//! # Numbers
//!
//! Writes and reads are numbered apart, because they are used apart:
//! - **Writes** are numbered 1, 2, 3, … in each run of the node, with no gaps. The number goes
//!   into the write's envelope beside the run's incarnation, and the replicated origin-session
//!   table remembers which numbers took effect as ranges: dense numbers keep those ranges few
//!   (a gap means a write that has not applied yet, not a read in between). A `u64` counter
//!   does not wrap in the life of any node (at ten million writes a second, 58,000 years).
//! - **Reads** carry a [`chorus_raft::ReadId`] that only echoes back through the leader. It must
//!   not match a read of an earlier run of the node whose response is still on the wire, so
//!   read numbers start at a point drawn from the incarnation (a different 64-bit start in
//!   every run) and count up from there.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::boundary::{Reply, RequestError};

/// What a held request asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A command for the log.
    Write,
    /// A read-only query.
    Read,
}

/// A request waiting for its answer.
#[derive(Debug)]
pub struct Held {
    /// The write's command or the read's query.
    pub payload: Bytes,
    /// Where the answer goes.
    pub reply: Reply,
    /// When the request was last handed to the protocol core (a write may be proposed again).
    pub sent_at: Instant,
}

/// The books of one driver.
#[derive(Debug)]
pub struct Requests {
    /// The last write number taken.
    last_write: u64,
    /// The last read number taken.
    last_read: u64,
    writes: BTreeMap<u64, Held>,
    reads: BTreeMap<u64, Held>,
    /// Requests in the order they were taken, with their deadlines (deadlines grow with the
    /// order, so expiry pops from the front). Expiry also pops answered requests off the
    /// front, so it holds the held requests plus those answered out of order behind an older
    /// one still held: at most the requests taken in one `timeout`.
    deadlines: VecDeque<(Instant, Kind, u64)>,
    timeout: Duration,
    held_max: usize,
}

impl Requests {
    /// Empty books for run `incarnation` of the node: requests wait at most `timeout`, at most
    /// `held_max` at once. Incarnation 0 numbers reads from 1 (for schemes whose read numbers
    /// never outlive a run).
    #[must_use]
    pub fn new(incarnation: u64, timeout: Duration, held_max: usize) -> Requests {
        // An odd multiplier spreads consecutive incarnations over the whole 64-bit space, so
        // the read numbers of two runs would meet only after billions of billions of reads.
        let last_read = incarnation.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Requests {
            last_write: 0,
            last_read,
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            deadlines: VecDeque::new(),
            timeout,
            held_max,
        }
    }

    /// Whether another request may be taken.
    #[must_use]
    pub fn has_room(&self) -> bool {
        self.writes.len() + self.reads.len() < self.held_max
    }

    /// A fresh number for a request of kind `kind`.
    pub fn number(&mut self, kind: Kind) -> u64 {
        match kind {
            Kind::Write => {
                self.last_write += 1;
                self.last_write
            }
            Kind::Read => {
                self.last_read = self.last_read.wrapping_add(1);
                self.last_read
            }
        }
    }

    fn books(&mut self, kind: Kind) -> &mut BTreeMap<u64, Held> {
        match kind {
            Kind::Write => &mut self.writes,
            Kind::Read => &mut self.reads,
        }
    }

    /// Holds request `number` of kind `kind` until it is answered or its deadline passes.
    pub fn hold(&mut self, kind: Kind, number: u64, payload: Bytes, reply: Reply) {
        let now = Instant::now();
        let held = Held {
            payload,
            reply,
            sent_at: now,
        };
        if self.books(kind).insert(number, held).is_none() {
            self.deadlines.push_back((now + self.timeout, kind, number));
        }
    }

    /// Takes request `number` of kind `kind` off the books, if it is still held.
    pub fn take(&mut self, kind: Kind, number: u64) -> Option<Held> {
        self.books(kind).remove(&number)
    }

    /// Takes back request `number` of kind `kind`, which never reached the core: if it is the
    /// last number taken, the number is given out again, so write numbers stay dense.
    pub fn cancel(&mut self, kind: Kind, number: u64) -> Option<Held> {
        let held = self.take(kind, number)?;
        if kind == Kind::Write && number == self.last_write {
            self.last_write -= 1;
        }
        Some(held)
    }

    /// Answers request `number` of kind `kind` if it is still held; returns whether it was.
    pub fn answer(&mut self, kind: Kind, number: u64, answer: Result<Bytes, RequestError>) -> bool {
        match self.take(kind, number) {
            Some(held) => {
                let _ = held.reply.send(answer);
                true
            }
            None => false,
        }
    }

    /// The lowest write number still held, or the next one to be taken when none is: no write
    /// numbered below it will ever be proposed again by this run of the node.
    #[must_use]
    pub fn unanswered_from(&self) -> u64 {
        self.writes
            .keys()
            .next()
            .copied()
            .unwrap_or(self.last_write + 1)
    }

    /// The writes still held, lowest number first, with their commands.
    pub fn writes(&self) -> impl Iterator<Item = (u64, &Held)> {
        self.writes.iter().map(|(&number, held)| (number, held))
    }

    /// Notes that write `number` was handed to the core again at `now`.
    pub fn mark_sent(&mut self, number: u64, now: Instant) {
        if let Some(held) = self.writes.get_mut(&number) {
            held.sent_at = now;
        }
    }

    /// Request `number` of kind `kind`, if it is still held.
    #[must_use]
    pub fn get(&self, kind: Kind, number: u64) -> Option<&Held> {
        match kind {
            Kind::Write => self.writes.get(&number),
            Kind::Read => self.reads.get(&number),
        }
    }

    /// Answers `TIMEOUT` to every request whose deadline passed; returns how many. A write may
    /// still apply later: its client is told the outcome is unknown, never that it failed.
    pub fn expire(&mut self, now: Instant) -> u64 {
        let mut expired = 0;
        while let Some(&(deadline, kind, number)) = self.deadlines.front() {
            if deadline > now && self.get(kind, number).is_some() {
                break;
            }
            self.deadlines.pop_front();
            if self.answer(kind, number, Err(RequestError::Timeout)) {
                expired += 1;
            }
        }
        expired
    }

    /// Answers every request still held when the driver stops. A write was proposed and may
    /// still take effect, so its outcome is unknown; a read simply did not happen.
    pub fn fail_everything(&mut self) {
        for (_, held) in std::mem::take(&mut self.writes) {
            let _ = held.reply.send(Err(RequestError::Timeout));
        }
        for (_, held) in std::mem::take(&mut self.reads) {
            let _ = held.reply.send(Err(RequestError::Stopped));
        }
        self.deadlines.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    fn held(
        requests: &mut Requests,
        kind: Kind,
    ) -> (u64, oneshot::Receiver<Result<Bytes, RequestError>>) {
        let (reply, answer) = oneshot::channel();
        let number = requests.number(kind);
        requests.hold(kind, number, Bytes::new(), reply);
        (number, answer)
    }

    #[test]
    fn writes_are_numbered_densely_and_reads_apart_per_run() {
        let mut requests = Requests::new(7, Duration::from_secs(1), 8);
        assert_eq!(requests.number(Kind::Write), 1);
        let read = requests.number(Kind::Read);
        assert_eq!(
            requests.number(Kind::Write),
            2,
            "reads leave no gaps in writes"
        );
        let mut next_run = Requests::new(8, Duration::from_secs(1), 8);
        let later_read = next_run.number(Kind::Read);
        assert_ne!(read, later_read);
        assert!(
            read.abs_diff(later_read) > 1 << 40,
            "runs start reads far apart"
        );
        let mut plain = Requests::new(0, Duration::from_secs(1), 4);
        assert_eq!((plain.number(Kind::Read), plain.number(Kind::Read)), (1, 2));
    }

    #[test]
    fn write_numbers_do_not_wrap_after_four_billion() {
        let mut requests = Requests::new(u64::MAX, Duration::from_secs(1), 4);
        requests.last_write = u64::from(u32::MAX);
        let number = requests.number(Kind::Write);
        assert_eq!(number, 1 << 32);
        assert_eq!(requests.unanswered_from(), number + 1);
    }

    #[test]
    fn an_expired_write_is_unknown_and_a_stopped_read_did_not_happen() {
        let mut requests = Requests::new(0, Duration::ZERO, 4);
        let (_, mut write) = held(&mut requests, Kind::Write);
        assert_eq!(requests.expire(Instant::now()), 1);
        assert_eq!(write.try_recv().unwrap(), Err(RequestError::Timeout));
        let (_, mut read) = held(&mut requests, Kind::Read);
        let (_, mut write) = held(&mut requests, Kind::Write);
        requests.fail_everything();
        assert_eq!(read.try_recv().unwrap(), Err(RequestError::Stopped));
        assert_eq!(write.try_recv().unwrap(), Err(RequestError::Timeout));
    }

    #[test]
    fn an_answer_reaches_only_a_request_of_its_kind_and_only_once() {
        let mut requests = Requests::new(0, Duration::from_secs(60), 3);
        let (write_number, mut write) = held(&mut requests, Kind::Write);
        let (read_number, mut read) = held(&mut requests, Kind::Read);
        assert_eq!(write_number, read_number, "the two kinds number apart");
        assert!(requests.answer(Kind::Write, write_number, Ok(Bytes::from_static(b"x"))));
        assert!(!requests.answer(Kind::Write, write_number, Ok(Bytes::new())));
        assert_eq!(write.try_recv().unwrap(), Ok(Bytes::from_static(b"x")));
        assert!(
            read.try_recv().is_err(),
            "the read with the same number is still held"
        );
        let _a = held(&mut requests, Kind::Read);
        assert!(requests.has_room());
        let _b = held(&mut requests, Kind::Read);
        assert!(!requests.has_room());
    }

    #[test]
    fn the_lowest_unanswered_write_follows_the_books_and_ignores_reads() {
        let mut requests = Requests::new(0, Duration::from_secs(60), 8);
        assert_eq!(requests.unanswered_from(), 1);
        let (first, _a) = held(&mut requests, Kind::Write);
        let (_, _b) = held(&mut requests, Kind::Read);
        let (second, _c) = held(&mut requests, Kind::Write);
        assert_eq!(requests.unanswered_from(), first);
        assert!(requests.answer(Kind::Write, first, Ok(Bytes::new())));
        assert_eq!(requests.unanswered_from(), second);
        assert_eq!(
            requests.writes().map(|(n, _)| n).collect::<Vec<_>>(),
            vec![second]
        );
        requests.take(Kind::Write, second);
        assert_eq!(requests.unanswered_from(), 3);
    }
}
