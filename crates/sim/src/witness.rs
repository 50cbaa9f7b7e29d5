//! [`Witnessed`]: the key-value store as the passive schemes (primary-backup, the hybrid) run
//! it in the simulator, with every change of its state recorded for the checkers.
//!
//! Why: under passive replication a backup applies effects and never sees a command or an
//! output, yet the checkers judge commands (S6: which session request was acknowledged; S8:
//! the exactly-once model runs each command and compares the output). So the effect this
//! wrapper returns carries the command and the output beside the store's own effect, as a
//! witness. The backup's store applies only the store's effect (the witness is instrumentation,
//! never executed), so a backup that reaches the primary's state proves the effect alone
//! suffices: the final state comparisons and the state hashes check exactly that.
//!
//! Layout of a witnessed effect: the command's length (8 bytes, big endian), the command, the
//! output's length, the output, then the store's effect to the end.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chorus_core::{EffectError, Execution, LogIndex, RestoreError, SnapshotImage, StateMachine};

use crate::machine::SimStore;

/// One change of a witnessed store, in order.
#[derive(Clone, Debug)]
pub(crate) enum Change {
    /// Executed (on a primary) or applied as an effect (anywhere else) the key-value command
    /// at the index, whose output was the given one; with the store's own effect.
    Applied {
        index: LogIndex,
        command: Bytes,
        output: Bytes,
        effect: Bytes,
    },
    /// Restored a snapshot whose last applied index is the given one.
    Restored(LogIndex),
}

/// Every change of one server's store, for the checkers.
pub(crate) type ChangeLog = Arc<Mutex<Vec<Change>>>;

/// The key-value store with its changes recorded (see the module docs).
pub(crate) struct Witnessed {
    store: SimStore,
    log: Option<ChangeLog>,
}

impl Witnessed {
    /// `store`, recording into `log` if given (a host that reads its outputs elsewhere needs
    /// only the witness in the effect).
    pub(crate) fn new(store: SimStore, log: Option<ChangeLog>) -> Witnessed {
        Witnessed { store, log }
    }

    fn record(&self, change: Change) {
        if let Some(Ok(mut log)) = self.log.as_ref().map(|log| log.lock()) {
            log.push(change);
        }
    }
}

fn put_part(out: &mut Vec<u8>, part: &[u8]) {
    out.extend_from_slice(&(part.len() as u64).to_be_bytes());
    out.extend_from_slice(part);
}

fn take_part(bytes: &mut &[u8]) -> Option<Bytes> {
    let (length, rest) = bytes.split_first_chunk::<8>()?;
    let length = usize::try_from(u64::from_be_bytes(*length)).ok()?;
    let (part, rest) = (rest.get(..length)?, rest.get(length..)?);
    *bytes = rest;
    Some(Bytes::copy_from_slice(part))
}

/// Splits a witnessed effect into the command, the output and the store's effect.
pub(crate) fn unwitness(effect: &[u8]) -> Option<(Bytes, Bytes, Bytes)> {
    let mut rest = effect;
    let command = take_part(&mut rest)?;
    let output = take_part(&mut rest)?;
    Some((command, output, Bytes::copy_from_slice(rest)))
}

impl StateMachine for Witnessed {
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Bytes {
        let output = self.store.apply(index, command);
        self.record(Change::Applied {
            index,
            command: Bytes::copy_from_slice(command),
            output: output.clone(),
            effect: Bytes::new(),
        });
        output
    }

    fn execute(&mut self, index: LogIndex, command: &[u8]) -> Execution {
        let execution = self.store.execute(index, command);
        let mut witnessed = Vec::with_capacity(16 + command.len() + execution.effect.len());
        put_part(&mut witnessed, command);
        put_part(&mut witnessed, &execution.output);
        witnessed.extend_from_slice(&execution.effect);
        self.record(Change::Applied {
            index,
            command: Bytes::copy_from_slice(command),
            output: execution.output.clone(),
            effect: execution.effect,
        });
        Execution {
            output: execution.output,
            effect: Bytes::from(witnessed),
        }
    }

    fn apply_effect(&mut self, index: LogIndex, effect: &[u8]) -> Result<(), EffectError> {
        let (command, output, effect) = unwitness(effect).ok_or_else(|| EffectError {
            reason: "not a witnessed effect".to_owned(),
        })?;
        self.store.apply_effect(index, &effect)?;
        self.record(Change::Applied {
            index,
            command,
            output,
            effect,
        });
        Ok(())
    }

    fn query(&self, query: &[u8]) -> Bytes {
        self.store.query(query)
    }

    fn snapshot(&self) -> Box<dyn SnapshotImage> {
        self.store.snapshot()
    }

    fn restore(&mut self, input: &mut dyn std::io::Read) -> Result<(), RestoreError> {
        self.store.restore(input)?;
        self.record(Change::Restored(self.store.last_applied()));
        Ok(())
    }
}
