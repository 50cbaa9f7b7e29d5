//! The envelope a driver wraps around each client command before proposing it, and the table
//! that makes a re-sent proposal take effect once.
//!
//! Protocol cores treat commands as opaque bytes, and a follower forwards proposals to the
//! leader, so the node that took a client's request does not learn the log index its command
//! lands at. The envelope carries the origin node and a request number chosen by that node:
//! when any node applies the entry it unwraps the command for the state machine, and the origin
//! recognises its own request and answers its client.
//!
//! A forwarded proposal can be lost with the leader it was sent to, so the origin re-sends
//! every proposal still unanswered when it learns of a new leader; the old copy may have
//! reached the log too. To make that safe the envelope may carry an [`OriginSession`]: the
//! origin's incarnation (one per run of the node, larger on every restart) and the lowest
//! request number the origin still waits for. Every replica keeps the same [`OriginSessions`]
//! table (it is replicated state, decided by the log alone) and applies each (origin,
//! incarnation, request) at most once — the Raft dissertation's client sessions (§6.3), applied
//! to the nodes that forward on their clients' behalf. The "still waits for" mark lets the
//! table forget what the origin will never send again, so it stays small.
//!
//! Layout: a version byte; the origin node id and the request number (8 bytes each, big
//! endian); in version 2 then the incarnation and the lowest unanswered request number (8
//! bytes each); then the command. Version 1 (no session) is never deduplicated.

use std::collections::BTreeMap;
use std::io::Read;

use bytes::{BufMut, Bytes, BytesMut};

use crate::{EffectError, Execution, LogIndex, NodeId, RestoreError, SnapshotImage, StateMachine};

const VERSION_PLAIN: u8 = 1;
const VERSION_SESSION: u8 = 2;
const HEADER_BYTES: usize = 17;
const SESSION_BYTES: usize = 16;

/// Which run of the origin node proposed an entry, and what it still waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginSession {
    /// The run of the origin node: larger on every restart (drivers persist it).
    pub incarnation: u64,
    /// No request of this incarnation numbered below this one will ever be sent again: each
    /// was answered or given up on. At most the envelope's own request number.
    pub unanswered_from: u64,
}

/// A command together with who proposed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The node that took the client's request.
    pub origin: NodeId,
    /// The request's number at that node.
    pub request: u64,
    /// The command for the state machine.
    pub command: Bytes,
    /// Set by a driver that may re-send the proposal: it is then applied at most once.
    pub session: Option<OriginSession>,
}

/// The bytes are not an envelope.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Fewer bytes than the header needs.
    #[error("envelope too short: {0} bytes")]
    TooShort(usize),
    /// A version this build does not know.
    #[error("unknown envelope version {0}")]
    UnknownVersion(u8),
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(word)
}

impl Envelope {
    /// Encodes the envelope.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(HEADER_BYTES + SESSION_BYTES + self.command.len());
        match self.session {
            None => out.put_u8(VERSION_PLAIN),
            Some(_) => out.put_u8(VERSION_SESSION),
        }
        out.put_u64(self.origin.0);
        out.put_u64(self.request);
        if let Some(session) = self.session {
            out.put_u64(session.incarnation);
            out.put_u64(session.unanswered_from);
        }
        out.put_slice(&self.command);
        out.freeze()
    }

    /// Decodes an envelope; the command shares `bytes`' buffer.
    ///
    /// # Errors
    /// [`EnvelopeError`] if the bytes are too short or of an unknown version.
    pub fn decode(bytes: &Bytes) -> Result<Envelope, EnvelopeError> {
        let header = match bytes.first() {
            None => return Err(EnvelopeError::TooShort(0)),
            Some(&VERSION_PLAIN) => HEADER_BYTES,
            Some(&VERSION_SESSION) => HEADER_BYTES + SESSION_BYTES,
            Some(&other) => {
                if bytes.len() < HEADER_BYTES {
                    return Err(EnvelopeError::TooShort(bytes.len()));
                }
                return Err(EnvelopeError::UnknownVersion(other));
            }
        };
        if bytes.len() < header {
            return Err(EnvelopeError::TooShort(bytes.len()));
        }
        let session = (header > HEADER_BYTES).then(|| OriginSession {
            incarnation: read_u64(bytes, 17),
            unanswered_from: read_u64(bytes, 25),
        });
        Ok(Envelope {
            origin: NodeId(read_u64(bytes, 1)),
            request: read_u64(bytes, 9),
            command: bytes.slice(header..),
            session,
        })
    }
}

/// What one origin node has had applied, for its latest incarnation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Applied {
    incarnation: u64,
    /// Requests below this are never applied again.
    floor: u64,
    /// Applied requests at or above `floor`, as disjoint inclusive ranges `first -> last`,
    /// never touching (request numbers are dense and mostly apply in order, so there are few).
    ranges: BTreeMap<u64, u64>,
}

impl Applied {
    fn contains(&self, request: u64) -> bool {
        request < self.floor
            || self
                .ranges
                .range(..=request)
                .next_back()
                .is_some_and(|(_, &last)| request <= last)
    }

    /// Records `request`, which `contains` said was not there.
    fn insert(&mut self, request: u64) {
        let mut first = request;
        let mut last = request;
        if let Some((&before, &before_last)) = self.ranges.range(..request).next_back()
            && before_last.checked_add(1) == Some(request)
        {
            first = before;
        }
        if let Some(next) = request.checked_add(1)
            && let Some(after_last) = self.ranges.remove(&next)
        {
            last = after_last;
        }
        self.ranges.insert(first, last);
    }

    fn raise_floor(&mut self, floor: u64) {
        if floor <= self.floor {
            return;
        }
        self.floor = floor;
        let kept = self.ranges.split_off(&floor);
        // A range that started below the floor may reach above it.
        if let Some((_, &last)) = self.ranges.iter().next_back()
            && last >= floor
        {
            self.ranges.clear();
            self.ranges.insert(floor, last);
        } else {
            self.ranges.clear();
        }
        self.ranges.extend(kept);
    }
}

/// The deduplication table of origin sessions: replicated state, part of every snapshot.
///
/// Deterministic: it changes only through [`OriginSessions::admit`], in log order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OriginSessions {
    origins: BTreeMap<NodeId, Applied>,
}

/// Bound on the ranges kept for one origin. Write numbers are dense, so the ranges are as many
/// as the gaps: writes of the origin proposed but not yet applied while later ones applied.
/// Beyond the bound the oldest ranges are folded into the floor: a request below the floor
/// counts as applied, so a very late first copy would be skipped rather than applied. Its
/// client waited through thousands of later writes and was told the outcome is unknown.
pub const ORIGIN_RANGES_MAX: usize = 4096;

impl OriginSessions {
    /// An empty table.
    #[must_use]
    pub fn new() -> OriginSessions {
        OriginSessions::default()
    }

    /// Decides whether the committed `envelope` takes effect, and records it if so. An
    /// envelope without a session always does. With a session, it does unless the same
    /// (origin, incarnation, request) was applied before, its request is below what the
    /// origin said it still waits for, or it comes from an older incarnation of its origin
    /// (that run of the node is gone; its clients were told the outcome is unknown).
    pub fn admit(&mut self, envelope: &Envelope) -> bool {
        let Some(session) = envelope.session else {
            return true;
        };
        let applied = self.origins.entry(envelope.origin).or_default();
        if session.incarnation < applied.incarnation {
            return false;
        }
        if session.incarnation > applied.incarnation {
            *applied = Applied {
                incarnation: session.incarnation,
                ..Applied::default()
            };
        }
        if applied.contains(envelope.request) {
            return false;
        }
        applied.insert(envelope.request);
        applied.raise_floor(session.unanswered_from.min(envelope.request));
        while applied.ranges.len() > ORIGIN_RANGES_MAX {
            let Some((_, end)) = applied.ranges.pop_first() else {
                break;
            };
            applied.floor = applied.floor.max(end);
        }
        true
    }

    /// The latest incarnation of `origin` the table has seen, if any.
    #[must_use]
    pub fn incarnation_of(&self, origin: NodeId) -> Option<u64> {
        self.origins.get(&origin).map(|applied| applied.incarnation)
    }

    /// How many origins the table tracks.
    #[must_use]
    pub fn len(&self) -> usize {
        self.origins.len()
    }

    /// Whether the table is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.origins.is_empty()
    }

    /// Encodes the table for a snapshot.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_u64(self.origins.len() as u64);
        for (origin, applied) in &self.origins {
            out.put_u64(origin.0);
            out.put_u64(applied.incarnation);
            out.put_u64(applied.floor);
            out.put_u64(applied.ranges.len() as u64);
            for (&first, &last) in &applied.ranges {
                out.put_u64(first);
                out.put_u64(last);
            }
        }
        out.freeze()
    }

    /// Decodes a table encoded by [`OriginSessions::encode`].
    ///
    /// # Errors
    /// [`RestoreError`] if the bytes are truncated, carry trailing bytes, or are not in the
    /// one form `encode` writes: origins in increasing order, ranges at or above the floor,
    /// in increasing order, neither overlapping nor touching.
    pub fn decode(bytes: &[u8]) -> Result<OriginSessions, RestoreError> {
        let fail = |reason: &str| RestoreError {
            reason: format!("origin sessions: {reason}"),
        };
        let mut at = 0usize;
        let mut next = || -> Result<u64, RestoreError> {
            if bytes.len() < at + 8 {
                return Err(fail("truncated"));
            }
            let word = read_u64(bytes, at);
            at += 8;
            Ok(word)
        };
        let count = next()?;
        let mut origins = BTreeMap::new();
        for _ in 0..count {
            let origin = NodeId(next()?);
            let incarnation = next()?;
            let floor = next()?;
            let ranges_count = next()?;
            if ranges_count > ORIGIN_RANGES_MAX as u64 {
                return Err(fail("too many ranges"));
            }
            let mut ranges = BTreeMap::new();
            // The lowest number the next range may start at.
            let mut lowest = Some(floor);
            for _ in 0..ranges_count {
                let (first, last) = (next()?, next()?);
                if lowest.is_none_or(|lowest| first < lowest) || last < first {
                    return Err(fail("ranges out of order"));
                }
                lowest = last.checked_add(2);
                ranges.insert(first, last);
            }
            if origins
                .last_key_value()
                .is_some_and(|(&last, _)| last >= origin)
            {
                return Err(fail("origins out of order"));
            }
            if origins
                .insert(
                    origin,
                    Applied {
                        incarnation,
                        floor,
                        ranges,
                    },
                )
                .is_some()
            {
                return Err(fail("an origin appears twice"));
            }
        }
        if at != bytes.len() {
            return Err(fail("trailing bytes"));
        }
        Ok(OriginSessions { origins })
    }
}

/// Version of the [`Deduplicated`] snapshot image layout.
const DEDUP_IMAGE_VERSION: u8 = 1;

/// The largest encoded [`OriginSessions`] a [`Deduplicated`] image may carry (64 MiB): a
/// damaged length never makes a restore allocate without bound.
pub const SESSIONS_BYTES_MAX: u64 = 64 << 20;

/// A state machine together with the [`OriginSessions`] table that deduplicates re-sent
/// proposals: both are replicated state, so both go into every snapshot (exactly-once
/// survives a restart from a snapshot).
///
/// Snapshot image: a version byte, the encoded sessions' length (8 bytes, big endian, at most
/// [`SESSIONS_BYTES_MAX`]), the encoded sessions, then the inner state machine's image,
/// streamed.
#[derive(Clone, Debug, Default)]
pub struct Deduplicated<S> {
    sessions: OriginSessions,
    inner: S,
}

impl<S: StateMachine> Deduplicated<S> {
    /// `inner` with an empty session table.
    pub fn new(inner: S) -> Deduplicated<S> {
        Deduplicated {
            sessions: OriginSessions::new(),
            inner,
        }
    }

    /// The session table.
    pub fn sessions(&self) -> &OriginSessions {
        &self.sessions
    }

    /// The inner state machine.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Applies the committed `envelope` at `index`: `None` if it is a duplicate (skipped),
    /// else the inner state machine's output.
    pub fn apply_envelope(&mut self, index: LogIndex, envelope: &Envelope) -> Option<Bytes> {
        if !self.sessions.admit(envelope) {
            return None;
        }
        Some(self.inner.apply(index, &envelope.command))
    }
}

/// The image of a [`Deduplicated`]: the sessions' bytes and the inner image.
struct DeduplicatedImage {
    sessions: Bytes,
    inner: Box<dyn SnapshotImage>,
}

impl SnapshotImage for DeduplicatedImage {
    fn write_to(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        out.write_all(&[DEDUP_IMAGE_VERSION])?;
        out.write_all(&(self.sessions.len() as u64).to_be_bytes())?;
        out.write_all(&self.sessions)?;
        self.inner.write_to(out)
    }
}

impl<S: StateMachine> StateMachine for Deduplicated<S> {
    /// Applies a bare command, outside any envelope (no deduplication).
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Bytes {
        self.inner.apply(index, command)
    }

    /// Executes a bare command on the inner state machine (no deduplication).
    fn execute(&mut self, index: LogIndex, command: &[u8]) -> Execution {
        self.inner.execute(index, command)
    }

    fn apply_effect(&mut self, index: LogIndex, effect: &[u8]) -> Result<(), EffectError> {
        self.inner.apply_effect(index, effect)
    }

    fn query(&self, query: &[u8]) -> Bytes {
        self.inner.query(query)
    }

    fn snapshot(&self) -> Box<dyn SnapshotImage> {
        Box::new(DeduplicatedImage {
            sessions: self.sessions.encode(),
            inner: self.inner.snapshot(),
        })
    }

    fn restore(&mut self, input: &mut dyn std::io::Read) -> Result<(), RestoreError> {
        let fail = |reason: String| RestoreError { reason };
        let mut header = [0u8; 9];
        input
            .read_exact(&mut header)
            .map_err(|error| fail(format!("deduplicated image header: {error}")))?;
        if header[0] != DEDUP_IMAGE_VERSION {
            return Err(fail(format!(
                "deduplicated image version {} is not {DEDUP_IMAGE_VERSION}",
                header[0]
            )));
        }
        let length = read_u64(&header, 1);
        if length > SESSIONS_BYTES_MAX {
            return Err(fail(format!(
                "deduplicated image: {length} bytes of sessions exceed {SESSIONS_BYTES_MAX}"
            )));
        }
        let mut encoded = Vec::new();
        (&mut *input)
            .take(length)
            .read_to_end(&mut encoded)
            .map_err(|error| fail(format!("deduplicated image sessions: {error}")))?;
        if encoded.len() as u64 != length {
            return Err(fail("deduplicated image: sessions truncated".to_string()));
        }
        let sessions = OriginSessions::decode(&encoded)?;
        // The inner restore leaves the inner state unchanged on error (the trait's contract),
        // and the sessions are replaced only after it succeeded.
        self.inner.restore(input)?;
        self.sessions = sessions;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state machine that appends every command to a list.
    #[derive(Default)]
    struct Log(Vec<u8>);

    impl StateMachine for Log {
        fn apply(&mut self, _index: LogIndex, command: &[u8]) -> Bytes {
            self.0.extend_from_slice(command);
            Bytes::copy_from_slice(&self.0)
        }
        fn query(&self, _query: &[u8]) -> Bytes {
            Bytes::copy_from_slice(&self.0)
        }
        fn snapshot(&self) -> Box<dyn SnapshotImage> {
            Box::new(crate::BytesImage(Bytes::copy_from_slice(&self.0)))
        }
        fn restore(&mut self, input: &mut dyn std::io::Read) -> Result<(), RestoreError> {
            self.0 = crate::read_snapshot_to_end(input)?;
            Ok(())
        }
    }

    fn write(request: u64) -> Envelope {
        Envelope {
            origin: NodeId(1),
            request,
            command: Bytes::from_static(b"x"),
            session: Some(OriginSession {
                incarnation: 7,
                unanswered_from: 1,
            }),
        }
    }

    #[test]
    fn a_deduplicated_snapshot_round_trips_and_still_skips_duplicates() {
        let mut state = Deduplicated::new(Log::default());
        assert!(state.apply_envelope(LogIndex(1), &write(1)).is_some());
        assert!(state.apply_envelope(LogIndex(2), &write(2)).is_some());
        assert!(state.apply_envelope(LogIndex(3), &write(2)).is_none());
        let image = state.snapshot_bytes();
        let mut restored = Deduplicated::new(Log::default());
        restored.restore_bytes(&image).unwrap();
        assert_eq!(restored.sessions(), state.sessions());
        assert_eq!(restored.inner().0, b"xx");
        assert!(restored.apply_envelope(LogIndex(4), &write(2)).is_none());
        assert!(restored.apply_envelope(LogIndex(5), &write(3)).is_some());
    }

    #[test]
    fn a_damaged_deduplicated_snapshot_is_refused_and_changes_nothing() {
        let mut state = Deduplicated::new(Log::default());
        state.apply_envelope(LogIndex(1), &write(1));
        let image = state.snapshot_bytes();
        let mut target = Deduplicated::new(Log(b"keep".to_vec()));
        let mut bad_version = image.to_vec();
        bad_version[0] = 9;
        assert!(target.restore_bytes(&bad_version).is_err());
        let mut huge = image.to_vec();
        huge[1] = 0xff;
        assert!(target.restore_bytes(&huge).is_err());
        assert!(target.restore_bytes(&image[..12]).is_err());
        let mut bad_sessions = image.to_vec();
        bad_sessions[9 + 7] = 5; // the origin count
        assert!(target.restore_bytes(&bad_sessions).is_err());
        assert_eq!(target.inner().0, b"keep");
        assert!(target.sessions().is_empty());
    }

    #[test]
    fn round_trips() {
        let envelope = Envelope {
            origin: NodeId(3),
            request: (7 << 32) | 9,
            command: Bytes::from_static(b"put x 1"),
            session: None,
        };
        assert_eq!(Envelope::decode(&envelope.encode()), Ok(envelope.clone()));
        let with_session = Envelope {
            session: Some(OriginSession {
                incarnation: 4,
                unanswered_from: 2,
            }),
            ..envelope
        };
        let bytes = with_session.encode();
        assert_eq!(bytes[0], VERSION_SESSION);
        assert_eq!(Envelope::decode(&bytes), Ok(with_session));
        assert_eq!(
            Envelope::decode(&bytes.slice(..30)),
            Err(EnvelopeError::TooShort(30))
        );
    }

    fn sent(origin: u64, incarnation: u64, request: u64, unanswered_from: u64) -> Envelope {
        Envelope {
            origin: NodeId(origin),
            request,
            command: Bytes::new(),
            session: Some(OriginSession {
                incarnation,
                unanswered_from,
            }),
        }
    }

    #[test]
    fn a_resent_proposal_takes_effect_once_in_any_order() {
        let mut table = OriginSessions::new();
        // Request 2 is re-sent to a new leader and lands before its first copy.
        assert!(table.admit(&sent(1, 1, 1, 1)));
        assert!(table.admit(&sent(1, 1, 3, 2)));
        assert!(table.admit(&sent(1, 1, 2, 2)));
        assert!(!table.admit(&sent(1, 1, 2, 2)));
        assert!(!table.admit(&sent(1, 1, 3, 2)));
        assert!(!table.admit(&sent(1, 1, 1, 1)));
        // Another origin has its own numbers.
        assert!(table.admit(&sent(2, 1, 2, 1)));
        // An envelope without a session is never deduplicated.
        let plain = Envelope {
            session: None,
            ..sent(1, 1, 2, 2)
        };
        assert!(table.admit(&plain));
        assert!(table.admit(&plain));
    }

    #[test]
    fn a_restarted_origin_starts_afresh_and_its_old_run_is_fenced() {
        let mut table = OriginSessions::new();
        assert!(table.admit(&sent(1, 1, 5, 5)));
        assert!(table.admit(&sent(1, 2, 5, 5)));
        assert!(!table.admit(&sent(1, 1, 6, 6)));
        assert!(table.admit(&sent(1, 2, 6, 5)));
    }

    #[test]
    fn the_floor_forgets_what_the_origin_no_longer_waits_for() {
        let mut table = OriginSessions::new();
        for request in 1..=100 {
            assert!(table.admit(&sent(1, 1, request, request)));
        }
        let applied = &table.origins[&NodeId(1)];
        assert_eq!(applied.floor, 100);
        assert_eq!(applied.ranges.len(), 1);
        // Gaps (requests that never applied) stay separate ranges until the floor passes them.
        let mut table = OriginSessions::new();
        for request in (1..=20).step_by(2) {
            assert!(table.admit(&sent(1, 1, request, 1)));
        }
        assert_eq!(table.origins[&NodeId(1)].ranges.len(), 10);
        assert!(table.admit(&sent(1, 1, 2, 2)));
        assert_eq!(table.origins[&NodeId(1)].ranges.len(), 9);
        assert!(table.admit(&sent(1, 1, 30, 15)));
        let applied = &table.origins[&NodeId(1)];
        assert_eq!(applied.floor, 15);
        assert!(applied.contains(14) && applied.contains(15) && !applied.contains(16));
        assert!(table.admit(&sent(1, 1, 16, 15)));
        assert!(!table.admit(&sent(1, 1, 3, 15)));
    }

    #[test]
    fn the_table_is_bounded_and_round_trips() {
        let mut table = OriginSessions::new();
        for request in (1..=2 * ORIGIN_RANGES_MAX as u64 * 2).step_by(2) {
            assert!(table.admit(&sent(3, 9, request, 1)));
        }
        assert_eq!(table.origins[&NodeId(3)].ranges.len(), ORIGIN_RANGES_MAX);
        assert!(table.admit(&sent(4, 1, 7, 7)));
        let encoded = table.encode();
        assert_eq!(OriginSessions::decode(&encoded), Ok(table.clone()));
        assert!(OriginSessions::decode(&encoded[..encoded.len() - 1]).is_err());
        let mut trailing = encoded.to_vec();
        trailing.push(0);
        assert!(OriginSessions::decode(&trailing).is_err());
        assert_eq!(
            OriginSessions::decode(&OriginSessions::new().encode()),
            Ok(OriginSessions::new())
        );
    }

    #[test]
    fn admitting_is_the_same_as_a_model_of_applied_sets() {
        // A reference model: every (origin, incarnation, request) once, nothing below the
        // floor, nothing from an older incarnation.
        let mut rng = crate::Prng::new(11);
        for _ in 0..200 {
            let mut table = OriginSessions::new();
            let mut model: BTreeMap<u64, (u64, u64, std::collections::BTreeSet<u64>)> =
                BTreeMap::new();
            for _ in 0..200 {
                let origin = rng.index(2) as u64;
                let incarnation = 1 + rng.index(2) as u64;
                let request = 1 + rng.index(30) as u64;
                let unanswered_from = 1 + rng.index(request as usize) as u64;
                let expected = {
                    let entry = model.entry(origin).or_default();
                    if incarnation < entry.0 {
                        false
                    } else {
                        if incarnation > entry.0 {
                            *entry = (incarnation, 0, Default::default());
                        }
                        if request < entry.1 || entry.2.contains(&request) {
                            false
                        } else {
                            entry.2.insert(request);
                            entry.1 = entry.1.max(unanswered_from);
                            true
                        }
                    }
                };
                let envelope = sent(origin, incarnation, request, unanswered_from);
                assert_eq!(table.admit(&envelope), expected, "{envelope:?}");
            }
        }
    }

    #[test]
    fn the_largest_request_number_is_recorded_like_any_other() {
        let mut table = OriginSessions::new();
        assert!(table.admit(&sent(1, 1, u64::MAX - 1, 1)));
        assert!(table.admit(&sent(1, 1, u64::MAX, 1)));
        assert!(!table.admit(&sent(1, 1, u64::MAX, 1)));
        assert!(!table.admit(&sent(1, 1, u64::MAX - 1, 1)));
        assert_eq!(
            table.origins[&NodeId(1)].ranges,
            BTreeMap::from([(u64::MAX - 1, u64::MAX)])
        );
        assert_eq!(OriginSessions::decode(&table.encode()), Ok(table.clone()));
        assert_eq!(table.incarnation_of(NodeId(1)), Some(1));
        assert_eq!(table.incarnation_of(NodeId(2)), None);
    }

    #[test]
    fn decoding_accepts_only_the_form_encoding_writes() {
        let words = |words: &[u64]| -> Vec<u8> {
            words.iter().flat_map(|word| word.to_be_bytes()).collect()
        };
        // One origin, floor 5, two ranges.
        let good = words(&[1, 1, 9, 5, 2, 5, 6, 8, 8]);
        assert!(OriginSessions::decode(&good).is_ok());
        // Touching ranges (5..=6 then 7..=8) would be one range.
        assert!(OriginSessions::decode(&words(&[1, 1, 9, 5, 2, 5, 6, 7, 8])).is_err());
        // A range below the floor, a reversed range.
        assert!(OriginSessions::decode(&words(&[1, 1, 9, 5, 1, 4, 6])).is_err());
        assert!(OriginSessions::decode(&words(&[1, 1, 9, 5, 1, 7, 6])).is_err());
        // Origins out of order.
        let two = words(&[2, 2, 9, 0, 0, 1, 9, 0, 0]);
        assert!(OriginSessions::decode(&two).is_err());
    }

    #[test]
    fn random_tables_round_trip_after_random_admits_and_random_bytes_never_panic() {
        let mut rng = crate::Prng::new(5);
        for _ in 0..300 {
            let mut table = OriginSessions::new();
            for _ in 0..100 {
                let request = match rng.index(4) {
                    0 => u64::MAX - rng.index(3) as u64,
                    _ => 1 + rng.index(200) as u64,
                };
                let floor = 1 + rng.index(request.min(200) as usize) as u64;
                table.admit(&sent(
                    rng.index(3) as u64,
                    1 + rng.index(2) as u64,
                    request,
                    floor,
                ));
            }
            let encoded = table.encode();
            assert_eq!(OriginSessions::decode(&encoded), Ok(table));
            let mut damaged = encoded.to_vec();
            let at = rng.index(damaged.len());
            damaged[at] ^= 1 << rng.index(8);
            if let Ok(decoded) = OriginSessions::decode(&damaged) {
                assert_eq!(decoded.encode().to_vec(), damaged, "one encoding per table");
            }
        }
    }

    #[test]
    fn rejects_short_and_foreign_bytes() {
        assert_eq!(
            Envelope::decode(&Bytes::from_static(b"abc")),
            Err(EnvelopeError::TooShort(3))
        );
        let mut bytes = vec![9u8];
        bytes.extend([0u8; 16]);
        assert_eq!(
            Envelope::decode(&Bytes::from(bytes)),
            Err(EnvelopeError::UnknownVersion(9))
        );
    }
}
