//! The shared vocabulary of Chorus.
//!
//! Every replication scheme (Raft, primary-backup, the hybrid) and every driver (the
//! deterministic simulator, the tokio runtime) speaks in the types defined here:
//!
//! - [`NodeId`], [`Term`] and [`LogIndex`]: newtypes, so that a term can never be passed where
//!   an index is expected. They are plain `u64`s on the wire.
//! - [`StateMachine`]: the deterministic state machine that the protocols replicate. Commands
//!   are opaque bytes to the protocol cores; only the state machine decodes them.
//! - [`Prng`]: the one source of randomness a pure core may use, seeded from its configuration
//!   so that the same seed gives the same run, bit for bit.
//!
//! - [`Execution`]: a command's output and *effect*, what passive replication ships to backups
//!   instead of the command (see [`StateMachine::execute`]).
//! - [`envelope::Envelope`]: how a driver tags a proposed command with its origin, so the
//!   node that took a request can answer it after the entry is applied anywhere.
//!
//! This crate is pure: no clocks, threads, sockets, files or hash-ordered iteration.

pub mod envelope;

use std::fmt;

use bytes::Bytes;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

/// Identifies one node (replica) of a cluster. Ids are chosen by the operator and never reused
/// for a different node.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// A Raft term (Raft §5.1): a logical clock that only moves forward. Term 0 is the term before
/// any election and holds no entries.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Term(pub u64);

impl Term {
    /// The term after this one.
    ///
    /// # Panics
    /// On overflow, which would take longer than the age of the universe to reach honestly.
    #[must_use]
    pub fn next(self) -> Term {
        Term(
            self.0
                .checked_add(1)
                .expect("invariant: term does not overflow"),
        )
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

/// A position in the replicated log. The first entry has index 1; index 0 means "before the
/// first entry" (an empty log).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogIndex(pub u64);

impl LogIndex {
    /// The index after this one.
    ///
    /// # Panics
    /// On overflow.
    #[must_use]
    pub fn next(self) -> LogIndex {
        LogIndex(
            self.0
                .checked_add(1)
                .expect("invariant: log index does not overflow"),
        )
    }

    /// The index before this one, saturating at 0.
    #[must_use]
    pub fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }
}

impl fmt::Display for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "i{}", self.0)
    }
}

/// A snapshot could not be restored: its bytes do not decode to a valid state.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("snapshot cannot be restored: {reason}")]
pub struct RestoreError {
    /// Why the snapshot was refused.
    pub reason: String,
}

/// What [`StateMachine::execute`] returns: the output for the client and the effect for the
/// other replicas.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Execution {
    /// The output for the client that proposed the command.
    pub output: Bytes,
    /// The deterministic description of the state change, for
    /// [`StateMachine::apply_effect`].
    pub effect: Bytes,
}

/// The largest output or effect [`Execution::decode`] accepts (64 MiB): a damaged length
/// never makes a decoder allocate without bound.
pub const EXECUTION_PART_BYTES_MAX: u64 = 64 << 20;

impl Execution {
    /// Encodes the execution: the output's length (8 bytes, big endian), the output, then the
    /// effect to the end.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(8 + self.output.len() + self.effect.len());
        out.extend_from_slice(&(self.output.len() as u64).to_be_bytes());
        out.extend_from_slice(&self.output);
        out.extend_from_slice(&self.effect);
        Bytes::from(out)
    }

    /// Decodes an execution encoded by [`Execution::encode`]; output and effect share
    /// `bytes`' buffer.
    ///
    /// # Errors
    /// [`EffectError`] if the bytes are too short for the length they announce.
    pub fn decode(bytes: &Bytes) -> Result<Execution, EffectError> {
        let fail = |reason: &str| EffectError {
            reason: format!("execution record: {reason}"),
        };
        let Some(length) = bytes.get(..8) else {
            return Err(fail("shorter than its header"));
        };
        let mut word = [0u8; 8];
        word.copy_from_slice(length);
        let length = u64::from_be_bytes(word);
        if length > EXECUTION_PART_BYTES_MAX {
            return Err(fail("output too long"));
        }
        let end = usize::try_from(length)
            .ok()
            .and_then(|length| length.checked_add(8))
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| fail("output truncated"))?;
        Ok(Execution {
            output: bytes.slice(8..end),
            effect: bytes.slice(end..),
        })
    }
}

/// An effect could not be applied: its bytes are not an effect this state machine wrote.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("effect cannot be applied: {reason}")]
pub struct EffectError {
    /// Why the effect was refused.
    pub reason: String,
}

/// A point-in-time image of a state machine, taken by [`StateMachine::snapshot`].
///
/// Taking one must be cheap (a clone of a persistent map's root, a copy-on-write handle, a
/// reference-counted buffer), because it happens on the driver's critical path between two
/// applies; writing it out is the expensive part, and the runtime does that on another thread
/// while the state machine keeps applying. So an image owns what it needs (`Send + 'static`)
/// and never changes once taken: later applies must not show through.
pub trait SnapshotImage: Send + 'static {
    /// Writes the image, as [`StateMachine::restore`] reads it back, to `out`. It streams: an
    /// image larger than memory would comfortably hold twice never has to be encoded whole.
    ///
    /// # Errors
    /// Whatever `out` returns.
    fn write_to(&self, out: &mut dyn std::io::Write) -> std::io::Result<()>;
}

/// An image that is already bytes: for small state machines and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BytesImage(pub Bytes);

impl SnapshotImage for BytesImage {
    fn write_to(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        out.write_all(&self.0)
    }
}

/// Reads a whole snapshot into memory, for state machines small enough to decode from bytes.
///
/// # Errors
/// [`RestoreError`] if `input` fails.
pub fn read_snapshot_to_end(input: &mut dyn std::io::Read) -> Result<Vec<u8>, RestoreError> {
    let mut bytes = Vec::new();
    input
        .read_to_end(&mut bytes)
        .map_err(|error| RestoreError {
            reason: format!("reading the snapshot failed: {error}"),
        })?;
    Ok(bytes)
}

/// A deterministic state machine, replicated by the protocol cores.
///
/// Two ways to replicate it, and the difference matters:
///
/// - **Active** (Raft): every replica calls [`StateMachine::apply`] on every command, in the
///   same order, and must reach the same state and produce the same outputs. Implementations
///   therefore must not read clocks, draw random numbers, or iterate hash-ordered collections
///   inside `apply`.
/// - **Passive** (primary-backup and the hybrid): only the primary calls
///   [`StateMachine::execute`]; the backups call [`StateMachine::apply_effect`] with the effect
///   it returned. Only the effect must be deterministic to apply; the execution may read the
///   primary's clock or randomness.
///
/// A command that does not decode is still applied (it was committed; every replica sees the
/// same bytes): the state machine answers it with an error output and leaves its state as it
/// was. It never panics on a command's bytes.
pub trait StateMachine {
    /// Applies the committed command at `index` and returns the output for the client that
    /// proposed it. `index` is strictly increasing from call to call; state machines may use it
    /// as a logical clock (for example to expire client sessions).
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Bytes;

    /// Executes the committed command at `index` once and returns its output together with
    /// its *effect*: a deterministic description of the state change, which
    /// [`StateMachine::apply_effect`] reproduces on another replica without executing the
    /// command. This is passive replication: the primary-backup schemes run this on the primary
    /// only and ship the effect, so a command may draw on the primary's clock or randomness;
    /// Raft ships commands and calls [`StateMachine::apply`] on every replica instead.
    ///
    /// The effect must capture everything the command changed, including anything that
    /// affects future outputs (a session table's cached replies), so that a replica that applied
    /// the same effects at the same indexes holds the same state.
    ///
    /// The default makes the effect the command itself, and `apply_effect` applies it: a state
    /// machine that does not override both is replicated actively even by the
    /// primary-backup schemes, and must then be deterministic there too.
    fn execute(&mut self, index: LogIndex, command: &[u8]) -> Execution {
        let output = self.apply(index, command);
        Execution {
            output,
            effect: Bytes::copy_from_slice(command),
        }
    }

    /// Applies at `index` an effect that [`StateMachine::execute`] returned on another replica
    /// (at the same index, from the same state). `index` is strictly increasing, as for
    /// `apply`.
    ///
    /// # Errors
    /// [`EffectError`] when the bytes are not an effect this state machine wrote; the state is
    /// then left unchanged. The default (the effect is the command) never fails.
    fn apply_effect(&mut self, index: LogIndex, effect: &[u8]) -> Result<(), EffectError> {
        let _output = self.apply(index, effect);
        Ok(())
    }

    /// Answers a read-only query against the current state. The caller is responsible for
    /// linearizability (for example by waiting for a ReadIndex before calling this).
    fn query(&self, query: &[u8]) -> Bytes;

    /// Takes an image of the whole state, including anything that affects future outputs
    /// (such as a session table), so that [`StateMachine::restore`] reproduces it exactly.
    ///
    /// It must be cheap to take and independent of later applies: the runtime writes it out
    /// on another thread while this state machine keeps applying (see [`SnapshotImage`]).
    fn snapshot(&self) -> Box<dyn SnapshotImage>;

    /// Replaces the state with the one read from `input`, as written by
    /// [`SnapshotImage::write_to`]. It streams: it must not need the whole image in memory
    /// beside the state it builds.
    ///
    /// # Errors
    /// [`RestoreError`] when the bytes do not decode (or `input` fails); the state is then left
    /// unchanged.
    fn restore(&mut self, input: &mut dyn std::io::Read) -> Result<(), RestoreError>;

    /// The snapshot written out to bytes in memory: for small state machines and tests.
    fn snapshot_bytes(&self) -> Bytes {
        let mut out = Vec::new();
        self.snapshot()
            .write_to(&mut out)
            .expect("invariant: writing to a Vec cannot fail");
        Bytes::from(out)
    }

    /// Restores from a snapshot held in memory.
    ///
    /// # Errors
    /// As [`StateMachine::restore`].
    fn restore_bytes(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
        let mut input = snapshot;
        self.restore(&mut input)
    }
}

/// The seeded pseudo-random number generator used by pure cores and the simulator.
///
/// Xoshiro256++ is fast and its output is fixed by its seed on every platform, which is what
/// makes a simulator run replayable from its seed.
#[derive(Clone, Debug)]
pub struct Prng(rand_xoshiro::Xoshiro256PlusPlus);

impl Prng {
    /// A generator whose whole output is determined by `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Prng {
        Prng(rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed))
    }

    /// A uniformly random `u64`.
    pub fn next_u64(&mut self) -> u64 {
        self.0.random()
    }

    /// A uniformly random value in `low..high`.
    ///
    /// # Panics
    /// If `low >= high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        assert!(low < high, "empty range {low}..{high}");
        self.0.random_range(low..high)
    }

    /// A uniformly random index below `len`.
    ///
    /// # Panics
    /// If `len == 0`.
    pub fn index(&mut self, len: usize) -> usize {
        assert!(len > 0, "index into an empty collection");
        self.0.random_range(0..len)
    }

    /// `true` with probability `p` (clamped to 0..=1).
    pub fn chance(&mut self, p: f64) -> bool {
        self.0.random_bool(p.clamp(0.0, 1.0))
    }

    /// A new generator split off this one, for a sub-component that must not disturb the
    /// parent's sequence when it draws more or fewer numbers.
    pub fn fork(&mut self) -> Prng {
        Prng::new(self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prng_is_determined_by_its_seed() {
        let a: Vec<u64> = (0..8).map(|_| Prng::new(42).next_u64()).collect();
        let mut p = Prng::new(42);
        let first = p.next_u64();
        assert!(a.iter().all(|&x| x == first));
        let mut q = Prng::new(42);
        let mut r = Prng::new(42);
        for _ in 0..100 {
            assert_eq!(q.range(5, 17), r.range(5, 17));
        }
    }

    #[test]
    fn range_stays_in_bounds() {
        let mut p = Prng::new(1);
        for _ in 0..1000 {
            let x = p.range(10, 20);
            assert!((10..20).contains(&x));
        }
    }

    #[test]
    fn an_execution_round_trips_and_damage_is_refused() {
        let execution = Execution {
            output: Bytes::from_static(b"ok"),
            effect: Bytes::from_static(b"x=1"),
        };
        let bytes = execution.encode();
        assert_eq!(Execution::decode(&bytes), Ok(execution));
        assert!(Execution::decode(&bytes.slice(..5)).is_err());
        assert!(Execution::decode(&bytes.slice(..9)).is_err());
        let mut huge = bytes.to_vec();
        huge[0] = 0xff;
        assert!(Execution::decode(&Bytes::from(huge)).is_err());
        assert_eq!(
            Execution::decode(&Execution::default().encode()),
            Ok(Execution::default())
        );
    }

    /// A state machine that overrides neither `execute` nor `apply_effect`: its effect is its
    /// command, so passive replication degrades to active and stays correct.
    #[test]
    fn the_default_effect_is_the_command() {
        struct Sum(u64);
        impl StateMachine for Sum {
            fn apply(&mut self, _index: LogIndex, command: &[u8]) -> Bytes {
                self.0 += command.len() as u64;
                Bytes::from(self.0.to_string())
            }
            fn query(&self, _query: &[u8]) -> Bytes {
                Bytes::from(self.0.to_string())
            }
            fn snapshot(&self) -> Box<dyn SnapshotImage> {
                Box::new(BytesImage(Bytes::from(self.0.to_be_bytes().to_vec())))
            }
            fn restore(&mut self, _input: &mut dyn std::io::Read) -> Result<(), RestoreError> {
                Ok(())
            }
        }
        let (mut primary, mut backup) = (Sum(0), Sum(0));
        let execution = primary.execute(LogIndex(1), b"abc");
        assert_eq!(execution.output, Bytes::from_static(b"3"));
        assert_eq!(execution.effect, Bytes::from_static(b"abc"));
        backup
            .apply_effect(LogIndex(1), &execution.effect)
            .expect("the default never fails");
        assert_eq!(backup.0, primary.0);
    }

    #[test]
    fn newtypes_step() {
        assert_eq!(Term(3).next(), Term(4));
        assert_eq!(LogIndex(0).prev(), LogIndex(0));
        assert_eq!(LogIndex(7).next(), LogIndex(8));
        assert_eq!(NodeId(2).to_string(), "n2");
    }
}
