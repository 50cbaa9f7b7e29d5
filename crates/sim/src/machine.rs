//! [`SimStore`]: the state machine the simulated nodes replicate — the key-value store, or,
//! for the determinism lesson, the key-value store with a *stamp*: a random number the node
//! draws from its own source inside every apply ([`Machine::Stamped`]).
//!
//! Why: Raft replicates actively (every replica applies every command), so a state machine
//! that reads a clock or a random number inside `apply` makes the replicas diverge, and the
//! state-machine safety checker (S4) sees different states at the same index. Primary-backup
//! and the hybrid replicate passively (the primary executes once and ships the effect), so the
//! very same state machine stays consistent there, provided it ships the stamp in its effect;
//! `ship_effects: false` keeps the default of [`chorus_core::StateMachine`] (the effect is the
//! command, re-executed by every backup), and the backups diverge again. The tests in
//! `crates/sim/tests/determinism_lesson.rs` run all of it.
//!
//! Under [`Machine::User`] the store holds a user-supplied state machine beside the key-value
//! store and routes to it every command and effect tagged for it (see [`crate::user`]); its
//! image goes first in the store's image, after the index it last applied.
//!
//! Each node's source is a [`Prng`] seeded from the run's seed, the node and the start of the
//! node, so the stamps differ between replicas (as a clock or a random number would) while the
//! run stays a pure function of its seed.

use std::io::Read;

use bytes::Bytes;
use chorus_core::{
    EffectError, Execution, LogIndex, Prng, RestoreError, SnapshotImage, StateMachine,
};
use chorus_kv::{KvConfig, KvStore};

use crate::config::Machine;
use crate::user::{USER_TAG, is_user};

/// The stamp's bytes in an image and an effect: 8, big endian.
const STAMP_BYTES: usize = 8;

/// A node's private source of non-determinism and the last value it drew.
struct Stamp {
    source: Prng,
    value: u64,
    ship_effects: bool,
}

/// A user-supplied state machine and the index it last applied.
struct User {
    machine: Box<dyn StateMachine + Send>,
    applied: LogIndex,
}

/// The key-value store, with a stamp drawn inside `apply` if the run asks for one, or a
/// user's state machine beside it.
pub(crate) struct SimStore {
    kv: KvStore,
    stamp: Option<Stamp>,
    user: Option<User>,
}

/// The seed of a node's stamp source: the run's seed, the node and its start, mixed.
pub(crate) fn stamp_seed(run_seed: u64, node: usize, incarnation: u64) -> u64 {
    let mut mixer = Prng::new(run_seed ^ ((node as u64) << 48) ^ incarnation);
    mixer.next_u64()
}

impl SimStore {
    /// A fresh store for `machine`; `seed` seeds a stamped store's source (give every node
    /// and every start its own).
    pub(crate) fn new(machine: &Machine, seed: u64, kv: KvConfig) -> SimStore {
        let stamp = match machine {
            Machine::Kv | Machine::User(_) => None,
            Machine::Stamped { ship_effects } => Some(Stamp {
                source: Prng::new(seed),
                value: 0,
                ship_effects: *ship_effects,
            }),
        };
        let user = match machine {
            Machine::User(user) => Some(User {
                machine: user.workbench().machine(),
                applied: LogIndex(0),
            }),
            Machine::Kv | Machine::Stamped { .. } => None,
        };
        SimStore {
            kv: KvStore::new(kv),
            stamp,
            user,
        }
    }

    /// The user's state machine, if `bytes` is tagged for it and the run has one; with the
    /// bytes untagged.
    fn user_for<'a>(&mut self, bytes: &'a [u8]) -> Option<(&mut User, &'a [u8])> {
        match (&mut self.user, bytes.split_first()) {
            (Some(user), Some((&USER_TAG, rest))) => Some((user, rest)),
            _ => None,
        }
    }

    /// The key-value store inside.
    pub(crate) fn kv(&self) -> &KvStore {
        &self.kv
    }

    /// The index of the last command the key-value store applied.
    pub(crate) fn last_applied(&self) -> LogIndex {
        let user = self.user.as_ref().map_or(LogIndex(0), |user| user.applied);
        self.kv.last_applied().max(user)
    }

    /// Draws a new stamp, if stamped: the non-determinism, read inside apply.
    fn draw(&mut self) {
        if let Some(stamp) = &mut self.stamp {
            stamp.value = stamp.source.next_u64();
        }
    }

    fn ships_stamp(&self) -> bool {
        self.stamp.as_ref().is_some_and(|stamp| stamp.ship_effects)
    }
}

/// The image of a stamped store: the stamp, then the key-value store's image.
struct StampedImage {
    value: u64,
    inner: Box<dyn SnapshotImage>,
}

impl SnapshotImage for StampedImage {
    fn write_to(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        out.write_all(&self.value.to_be_bytes())?;
        self.inner.write_to(out)
    }
}

/// The image of a store with a user's state machine: the index the user's machine last
/// applied (8 bytes, big endian), the length of its image (8 bytes), its image, then the
/// key-value store's image.
struct UserImage {
    applied: LogIndex,
    user: Vec<u8>,
    kv: Box<dyn SnapshotImage>,
}

impl SnapshotImage for UserImage {
    fn write_to(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        out.write_all(&self.applied.0.to_be_bytes())?;
        out.write_all(&(self.user.len() as u64).to_be_bytes())?;
        out.write_all(&self.user)?;
        self.kv.write_to(out)
    }
}

fn read_word(input: &mut dyn Read) -> Result<u64, RestoreError> {
    let mut word = [0u8; 8];
    input.read_exact(&mut word).map_err(|error| RestoreError {
        reason: format!("user image header: {error}"),
    })?;
    Ok(u64::from_be_bytes(word))
}

impl StateMachine for SimStore {
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Bytes {
        if let Some((user, command)) = self.user_for(command) {
            user.applied = index;
            return user.machine.apply(index, command);
        }
        let output = self.kv.apply(index, command);
        self.draw();
        output
    }

    fn execute(&mut self, index: LogIndex, command: &[u8]) -> Execution {
        if let Some((user, command)) = self.user_for(command) {
            user.applied = index;
            let execution = user.machine.execute(index, command);
            return Execution {
                output: execution.output,
                effect: crate::user::tagged(&execution.effect),
            };
        }
        if self.stamp.is_some() && !self.ships_stamp() {
            // The trait's default: the effect is the command, which every backup re-executes.
            let output = self.apply(index, command);
            return Execution {
                output,
                effect: Bytes::copy_from_slice(command),
            };
        }
        let execution = self.kv.execute(index, command);
        self.draw();
        match &self.stamp {
            None => execution,
            Some(stamp) => {
                let mut effect = stamp.value.to_be_bytes().to_vec();
                effect.extend_from_slice(&execution.effect);
                Execution {
                    output: execution.output,
                    effect: Bytes::from(effect),
                }
            }
        }
    }

    fn apply_effect(&mut self, index: LogIndex, effect: &[u8]) -> Result<(), EffectError> {
        if let Some((user, effect)) = self.user_for(effect) {
            user.machine.apply_effect(index, effect)?;
            user.applied = index;
            return Ok(());
        }
        if self.stamp.is_some() && !self.ships_stamp() {
            let _output = self.apply(index, effect);
            return Ok(());
        }
        let Some(stamp) = &mut self.stamp else {
            return self.kv.apply_effect(index, effect);
        };
        let (value, rest) =
            effect
                .split_first_chunk::<STAMP_BYTES>()
                .ok_or_else(|| EffectError {
                    reason: "a stamped effect shorter than its stamp".to_owned(),
                })?;
        self.kv.apply_effect(index, rest)?;
        stamp.value = u64::from_be_bytes(*value);
        Ok(())
    }

    fn query(&self, query: &[u8]) -> Bytes {
        match (&self.user, is_user(query)) {
            (Some(user), true) => user.machine.query(&query[1..]),
            _ => self.kv.query(query),
        }
    }

    fn snapshot(&self) -> Box<dyn SnapshotImage> {
        if let Some(user) = &self.user {
            return Box::new(UserImage {
                applied: user.applied,
                user: user.machine.snapshot_bytes().to_vec(),
                kv: self.kv.snapshot(),
            });
        }
        match &self.stamp {
            None => self.kv.snapshot(),
            Some(stamp) => Box::new(StampedImage {
                value: stamp.value,
                inner: self.kv.snapshot(),
            }),
        }
    }

    fn restore(&mut self, input: &mut dyn Read) -> Result<(), RestoreError> {
        if let Some(user) = &mut self.user {
            let applied = LogIndex(read_word(input)?);
            let length = read_word(input)?;
            let mut image = (&mut *input).take(length);
            user.machine.restore(&mut image)?;
            std::io::copy(&mut image, &mut std::io::sink()).map_err(|error| RestoreError {
                reason: format!("user image: {error}"),
            })?;
            user.applied = applied;
            return self.kv.restore(input);
        }
        let Some(stamp) = &mut self.stamp else {
            return self.kv.restore(input);
        };
        let mut value = [0u8; STAMP_BYTES];
        input.read_exact(&mut value).map_err(|error| RestoreError {
            reason: format!("stamped image: {error}"),
        })?;
        self.kv.restore(input)?;
        stamp.value = u64::from_be_bytes(value);
        Ok(())
    }
}
