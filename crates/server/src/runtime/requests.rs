//! The client requests a driver holds until the state machine answers them.
//!
//! Every scheme keeps the same books: a request gets a number unique to this run of the node,
//! waits under a deadline, and ends in exactly one answer: the state machine's output, a
//! refusal, `TIMEOUT` (the outcome is unknown, never reported as a failure) when its deadline
//! passes, or, when the node stops, `TIMEOUT` for a write (it may still commit elsewhere) and
//! `Stopped` for a read (it simply did not happen). Bounded by `held_max`.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::boundary::{Reply, RequestError};

/// What a held request asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A command for the log.
    Write,
    /// A read-only query.
    Read,
}

/// A request waiting for its answer.
#[derive(Debug)]
pub struct Held {
    /// A write or a read.
    pub kind: Kind,
    /// The write's command or the read's query.
    pub payload: Bytes,
    /// Where the answer goes.
    pub reply: Reply,
}

/// The books of one driver.
#[derive(Debug)]
pub struct Requests {
    /// Put in the high 32 bits of every request number so that numbers differ between runs
    /// of the node (0: plain counter).
    incarnation: u64,
    next: u64,
    held: BTreeMap<u64, Held>,
    /// Request numbers in the order they were taken, with their deadlines (deadlines grow with
    /// the order, so expiry pops from the front).
    deadlines: VecDeque<(Instant, u64)>,
    timeout: Duration,
    held_max: usize,
}

impl Requests {
    /// Empty books: requests wait at most `timeout`, at most `held_max` at once.
    #[must_use]
    pub fn new(incarnation: u64, timeout: Duration, held_max: usize) -> Requests {
        Requests {
            incarnation: incarnation & 0xFFFF_FFFF,
            next: 0,
            held: BTreeMap::new(),
            deadlines: VecDeque::new(),
            timeout,
            held_max,
        }
    }

    /// Whether another request may be taken.
    #[must_use]
    pub fn has_room(&self) -> bool {
        self.held.len() < self.held_max
    }

    /// A fresh request number.
    pub fn number(&mut self) -> u64 {
        self.next += 1;
        self.number_at(self.next)
    }

    fn number_at(&self, count: u64) -> u64 {
        if self.incarnation == 0 {
            count
        } else {
            (self.incarnation << 32) | (count & 0xFFFF_FFFF)
        }
    }

    /// Holds request `number` until it is answered or its deadline passes.
    pub fn hold(&mut self, number: u64, kind: Kind, payload: Bytes, reply: Reply) {
        self.held.insert(
            number,
            Held {
                kind,
                payload,
                reply,
            },
        );
        self.deadlines
            .push_back((Instant::now() + self.timeout, number));
    }

    /// Takes request `number` off the books, if it is still held.
    pub fn take(&mut self, number: u64) -> Option<Held> {
        self.held.remove(&number)
    }

    /// Answers request `number` if it is still held (and of kind `kind`); returns whether it
    /// was.
    pub fn answer(&mut self, number: u64, kind: Kind, answer: Result<Bytes, RequestError>) -> bool {
        match self.held.get(&number) {
            Some(held) if held.kind == kind => {
                if let Some(held) = self.held.remove(&number) {
                    let _ = held.reply.send(answer);
                }
                true
            }
            _ => false,
        }
    }

    /// The lowest request number still held, or the next number to be taken when none is:
    /// no request below it will ever be proposed again by this run of the node.
    #[must_use]
    pub fn unanswered_from(&self) -> u64 {
        let next = self.number_at(self.next + 1);
        self.held
            .keys()
            .next()
            .map_or(next, |&first| first.min(next))
    }

    /// The writes still held, lowest number first, with their commands.
    pub fn writes(&self) -> impl Iterator<Item = (u64, &Bytes)> {
        self.held
            .iter()
            .filter(|(_, held)| held.kind == Kind::Write)
            .map(|(&number, held)| (number, &held.payload))
    }

    /// Request `number`, if it is still held.
    #[must_use]
    pub fn get(&self, number: u64) -> Option<&Held> {
        self.held.get(&number)
    }

    /// Answers `TIMEOUT` to every request whose deadline passed; returns how many. A write may
    /// still apply later: its client is told the outcome is unknown, never that it failed.
    pub fn expire(&mut self, now: Instant) -> u64 {
        let mut expired = 0;
        while let Some(&(deadline, number)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            if let Some(held) = self.held.remove(&number) {
                expired += 1;
                let _ = held.reply.send(Err(RequestError::Timeout));
            }
        }
        expired
    }

    /// Answers every request still held when the driver stops. A write was proposed and may
    /// still take effect, so its outcome is unknown; a read simply did not happen.
    pub fn fail_everything(&mut self) {
        for (_, held) in std::mem::take(&mut self.held) {
            let answer = match held.kind {
                Kind::Write => RequestError::Timeout,
                Kind::Read => RequestError::Stopped,
            };
            let _ = held.reply.send(Err(answer));
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
        let number = requests.number();
        requests.hold(number, kind, Bytes::new(), reply);
        (number, answer)
    }

    #[test]
    fn numbers_carry_the_incarnation_and_never_repeat_within_a_run() {
        let mut requests = Requests::new(7, Duration::from_secs(1), 4);
        let first = requests.number();
        let second = requests.number();
        assert_eq!(first >> 32, 7);
        assert_ne!(first, second);
        let mut plain = Requests::new(0, Duration::from_secs(1), 4);
        assert_eq!((plain.number(), plain.number()), (1, 2));
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
        let mut requests = Requests::new(0, Duration::from_secs(60), 2);
        let (number, mut write) = held(&mut requests, Kind::Write);
        assert!(!requests.answer(number, Kind::Read, Ok(Bytes::new())));
        assert!(requests.answer(number, Kind::Write, Ok(Bytes::from_static(b"x"))));
        assert!(!requests.answer(number, Kind::Write, Ok(Bytes::new())));
        assert_eq!(write.try_recv().unwrap(), Ok(Bytes::from_static(b"x")));
        let _a = held(&mut requests, Kind::Read);
        assert!(requests.has_room());
        let _b = held(&mut requests, Kind::Read);
        assert!(!requests.has_room());
    }

    #[test]
    fn the_lowest_unanswered_number_follows_the_books() {
        let mut requests = Requests::new(0, Duration::from_secs(60), 8);
        assert_eq!(requests.unanswered_from(), 1);
        let (first, _a) = held(&mut requests, Kind::Write);
        let (second, _b) = held(&mut requests, Kind::Read);
        let (third, _c) = held(&mut requests, Kind::Write);
        assert_eq!(requests.unanswered_from(), first);
        assert!(requests.answer(first, Kind::Write, Ok(Bytes::new())));
        assert_eq!(requests.unanswered_from(), second);
        assert_eq!(
            requests.writes().map(|(n, _)| n).collect::<Vec<_>>(),
            vec![third]
        );
        requests.take(second);
        requests.take(third);
        assert_eq!(requests.unanswered_from(), 4);
    }
}
