//! What a benchmark asks of its target: which operations, on which keys, with which values.
//!
//! The workload is the one thing every target must see alike, so it is generated here, the
//! same for all of them, from a seeded generator per client: keys are fixed-width printable
//! strings (`k0000000000000042` padded to the key size), values are printable and unique per
//! client and sequence number (so that a recorded history can tell every write apart), and
//! the mix of reads and writes follows the read ratio.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;

/// The kind of load.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Mix {
    /// Writes only (`put` / `SET`).
    WriteOnly,
    /// Linearizable reads only (`get` / `GET`).
    ReadOnly,
    /// Reads with probability `read_ratio`, writes otherwise.
    Mixed {
        /// The share of reads, in `[0, 1]`.
        read_ratio: f64,
    },
}

impl Mix {
    /// The share of operations that are reads.
    #[must_use]
    pub fn read_ratio(self) -> f64 {
        match self {
            Mix::WriteOnly => 0.0,
            Mix::ReadOnly => 1.0,
            Mix::Mixed { read_ratio } => read_ratio,
        }
    }

    /// A short name: `write`, `read` or `mixed-0.50`.
    #[must_use]
    pub fn name(self) -> String {
        match self {
            Mix::WriteOnly => "write".to_string(),
            Mix::ReadOnly => "read".to_string(),
            Mix::Mixed { read_ratio } => format!("mixed-{read_ratio:.2}"),
        }
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// The name of a workload kind on the command line (`write`, `read` or `mixed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MixKind {
    /// Writes only.
    Write,
    /// Linearizable reads only.
    Read,
    /// Reads and writes, by `--read-ratio`.
    Mixed,
}

/// Why a workload cannot be generated.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WorkloadError {
    /// The key size cannot hold the prefix and every key's number.
    #[error(
        "a key of {key_size} bytes cannot number {key_count} keys (it needs at least {needed})"
    )]
    KeyTooShort {
        /// The key size asked for.
        key_size: usize,
        /// The number of keys asked for.
        key_count: u64,
        /// The smallest key size that works.
        needed: usize,
    },
    /// There must be at least one key.
    #[error("the key count must be at least 1")]
    NoKeys,
    /// A read ratio outside `[0, 1]`.
    #[error("the read ratio must be between 0 and 1, not {0}")]
    BadReadRatio(f64),
    /// A value larger than the generator allows.
    #[error("a value of {0} bytes is larger than the 16 MiB this generator allows")]
    ValueTooLarge(usize),
}

/// The shape of a workload.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WorkloadSpec {
    /// Reads, writes or both.
    pub mix: Mix,
    /// How many distinct keys the clients touch, chosen uniformly.
    pub key_count: u64,
    /// Bytes per key.
    pub key_size: usize,
    /// Bytes per written value.
    pub value_size: usize,
    /// Seeds the per-client generators.
    pub seed: u64,
}

impl WorkloadSpec {
    /// Checks that keys and values of these sizes can be generated.
    ///
    /// # Errors
    /// [`WorkloadError`] naming what does not fit.
    pub fn validate(&self) -> Result<(), WorkloadError> {
        if self.key_count == 0 {
            return Err(WorkloadError::NoKeys);
        }
        let ratio = self.mix.read_ratio();
        if !(0.0..=1.0).contains(&ratio) {
            return Err(WorkloadError::BadReadRatio(ratio));
        }
        let digits = (self.key_count - 1).to_string().len();
        if self.key_size < digits + 1 {
            return Err(WorkloadError::KeyTooShort {
                key_size: self.key_size,
                key_count: self.key_count,
                needed: digits + 1,
            });
        }
        if self.value_size > 16 << 20 {
            return Err(WorkloadError::ValueTooLarge(self.value_size));
        }
        Ok(())
    }

    /// The key with number `index` (`index < key_count`): `k` and the number, zero-padded to
    /// exactly `key_size` bytes.
    #[must_use]
    pub fn key(&self, index: u64) -> Bytes {
        let width = self.key_size.saturating_sub(1);
        Bytes::from(format!("k{index:0width$}"))
    }

    /// The value that `client` writes with its `seq`-th write: `client.seq.` in hex, then
    /// filler letters up to `value_size` bytes (cut to `value_size` if that is shorter, when
    /// values are no longer unique).
    #[must_use]
    pub fn value(&self, client: u64, seq: u64) -> Bytes {
        let mut text = format!("{client:x}.{seq:x}.");
        let filler = b"abcdefghijklmnopqrstuvwxyz";
        let mut index = (client.wrapping_add(seq) % 26) as usize;
        while text.len() < self.value_size {
            text.push(char::from(filler[index]));
            index = (index + 1) % filler.len();
        }
        text.truncate(self.value_size);
        Bytes::from(text)
    }

    /// The generator of one client's operations.
    #[must_use]
    pub fn generator(&self, client: u64) -> OpGenerator {
        OpGenerator {
            spec: self.clone(),
            client,
            rng: SplitMix64::new(self.seed ^ client.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            writes: 0,
        }
    }
}

/// One operation to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Read a key.
    Get {
        /// The key.
        key: Bytes,
    },
    /// Write a key.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
}

impl Op {
    /// Whether this operation reads.
    #[must_use]
    pub fn is_read(&self) -> bool {
        matches!(self, Op::Get { .. })
    }
}

/// The stream of operations of one client (deterministic for a seed and client number).
#[derive(Clone, Debug)]
pub struct OpGenerator {
    spec: WorkloadSpec,
    client: u64,
    rng: SplitMix64,
    writes: u64,
}

impl OpGenerator {
    /// The next operation.
    pub fn next_op(&mut self) -> Op {
        let key = self.spec.key(self.rng.below(self.spec.key_count));
        let read = match self.spec.mix {
            Mix::WriteOnly => false,
            Mix::ReadOnly => true,
            Mix::Mixed { read_ratio } => self.rng.unit() < read_ratio,
        };
        if read {
            Op::Get { key }
        } else {
            self.writes += 1;
            Op::Put {
                key,
                value: self.spec.value(self.client, self.writes),
            }
        }
    }
}

/// A small seeded generator (SplitMix64): enough to spread keys, no need for more.
#[derive(Clone, Debug)]
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, bound)` (`bound > 0`), by widening multiplication.
    fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Parses a workload kind with its read ratio, as `mixed` needs one.
///
/// # Errors
/// [`WorkloadError::BadReadRatio`] for a ratio outside `[0, 1]`.
pub fn mix_from(kind: MixKind, read_ratio: f64) -> Result<Mix, WorkloadError> {
    match kind {
        MixKind::Write => Ok(Mix::WriteOnly),
        MixKind::Read => Ok(Mix::ReadOnly),
        MixKind::Mixed if (0.0..=1.0).contains(&read_ratio) => Ok(Mix::Mixed { read_ratio }),
        MixKind::Mixed => Err(WorkloadError::BadReadRatio(read_ratio)),
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(text: &str) -> Result<Mix, String> {
        match text {
            "write" => Ok(Mix::WriteOnly),
            "read" => Ok(Mix::ReadOnly),
            other => other
                .strip_prefix("mixed-")
                .and_then(|ratio| ratio.parse::<f64>().ok())
                .filter(|ratio| (0.0..=1.0).contains(ratio))
                .map(|read_ratio| Mix::Mixed { read_ratio })
                .ok_or_else(|| format!("unknown workload {other:?} (write, read or mixed-R)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mix: Mix) -> WorkloadSpec {
        WorkloadSpec {
            mix,
            key_count: 1000,
            key_size: 16,
            value_size: 100,
            seed: 7,
        }
    }

    #[test]
    fn keys_have_the_asked_size_and_are_distinct() {
        let spec = spec(Mix::WriteOnly);
        assert_eq!(spec.key(0), Bytes::from_static(b"k000000000000000"));
        assert_eq!(spec.key(999), Bytes::from_static(b"k000000000000999"));
        let keys: std::collections::BTreeSet<Bytes> = (0..1000).map(|i| spec.key(i)).collect();
        assert_eq!(keys.len(), 1000);
        assert!(keys.iter().all(|key| key.len() == 16));
    }

    #[test]
    fn values_have_the_asked_size_and_are_unique_per_client_and_seq() {
        let spec = spec(Mix::WriteOnly);
        let a = spec.value(1, 1);
        assert_eq!(a.len(), 100);
        assert!(a.starts_with(b"1.1."));
        assert!(a.iter().all(u8::is_ascii_graphic));
        assert_ne!(spec.value(1, 2), a);
        assert_ne!(spec.value(2, 1), a);
        let short = WorkloadSpec {
            value_size: 2,
            ..spec.clone()
        };
        assert_eq!(short.value(300, 1).len(), 2);
        let empty = WorkloadSpec {
            value_size: 0,
            ..spec
        };
        assert!(empty.value(1, 1).is_empty());
    }

    #[test]
    fn key_size_must_fit_the_key_count() {
        let mut spec = spec(Mix::WriteOnly);
        spec.key_size = 3;
        assert_eq!(
            spec.validate(),
            Err(WorkloadError::KeyTooShort {
                key_size: 3,
                key_count: 1000,
                needed: 4
            })
        );
        spec.key_size = 4;
        assert_eq!(spec.validate(), Ok(()));
        spec.key_count = 0;
        assert_eq!(spec.validate(), Err(WorkloadError::NoKeys));
    }

    #[test]
    fn the_mix_is_respected() {
        let writes = spec(Mix::WriteOnly).generator(0);
        let reads = spec(Mix::ReadOnly).generator(0);
        let mixed = spec(Mix::Mixed { read_ratio: 0.25 }).generator(0);
        let count = |mut generator: OpGenerator| {
            (0..10_000)
                .filter(|_| generator.next_op().is_read())
                .count()
        };
        assert_eq!(count(writes), 0);
        assert_eq!(count(reads), 10_000);
        let read = count(mixed);
        assert!((2_000..3_000).contains(&read), "{read} reads of 10000");
    }

    #[test]
    fn generators_are_deterministic_and_differ_per_client() {
        let spec = spec(Mix::Mixed { read_ratio: 0.5 });
        let run = |client| {
            let mut generator = spec.generator(client);
            (0..50).map(|_| generator.next_op()).collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[test]
    fn keys_cover_the_key_space() {
        let spec = WorkloadSpec {
            key_count: 10,
            ..spec(Mix::ReadOnly)
        };
        let mut generator = spec.generator(0);
        let seen: std::collections::BTreeSet<Bytes> = (0..1000)
            .map(|_| match generator.next_op() {
                Op::Get { key } | Op::Put { key, .. } => key,
            })
            .collect();
        assert_eq!(seen.len(), 10);
    }

    #[test]
    fn mixes_parse_and_print() {
        assert_eq!("write".parse::<Mix>(), Ok(Mix::WriteOnly));
        assert_eq!("read".parse::<Mix>(), Ok(Mix::ReadOnly));
        assert_eq!(
            "mixed-0.9".parse::<Mix>(),
            Ok(Mix::Mixed { read_ratio: 0.9 })
        );
        assert!("mixed-2".parse::<Mix>().is_err());
        assert_eq!(Mix::Mixed { read_ratio: 0.9 }.name(), "mixed-0.90");
        assert_eq!(
            mix_from(MixKind::Mixed, 0.5),
            Ok(Mix::Mixed { read_ratio: 0.5 })
        );
        assert!(mix_from(MixKind::Mixed, -0.1).is_err());
    }
}
