//! A state machine a user brings to the simulator ([`Workbench`]), so that the schemes are
//! tested with operations that are not get and put.
//!
//! Why: Chorus replicates any [`StateMachine`], and a scheme that only ever carried key-value
//! commands could hide an assumption about them. A workbench supplies three things: fresh
//! replicas of its state machine, the commands its clients issue, and the check its history
//! must pass. A run with [`crate::Machine::User`] replicates the key-value store *and* the
//! user's state machine side by side in every node: the clients still open their key-value
//! sessions (so every protocol's machinery runs unchanged), then issue only the workbench's
//! commands, which every node routes to the user's state machine. Everything the simulator
//! checks of any state machine applies to it as well: replicas reach the same state at the same
//! index (S4), and every replica answers the command at an index alike (S8, which compares the
//! answers of an opaque command among the nodes instead of with its key-value model). The
//! workbench's own check then judges the history its clients recorded.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use chorus_core::{Prng, StateMachine};

/// The first byte of a command (and of an effect) meant for the user's state machine; no
/// key-value command or effect starts with it (they start with their codec version).
pub(crate) const USER_TAG: u8 = 0xC5;

/// Whether `bytes` is a command (or effect) for the user's state machine.
pub(crate) fn is_user(bytes: &[u8]) -> bool {
    bytes.first() == Some(&USER_TAG)
}

/// `bytes` tagged for the user's state machine.
pub(crate) fn tagged(bytes: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(bytes.len() + 1);
    out.push(USER_TAG);
    out.extend_from_slice(bytes);
    Bytes::from(out)
}

/// A user-supplied state machine, its workload and its check, for the simulator.
pub trait Workbench: Send + Sync {
    /// What the machine is, for reports (`"locks"`).
    fn name(&self) -> &str;

    /// A fresh, empty replica of the state machine: one per node and per start of a node.
    fn machine(&self) -> Box<dyn StateMachine + Send>;

    /// The command client `client` (an index below the run's client count) issues next,
    /// drawing any randomness from `rng` only.
    fn command(&self, client: usize, rng: &mut Prng) -> Bytes;

    /// Judges the run's history: every operation a client issued, in the order they were
    /// called, with the outputs the clients were told.
    ///
    /// # Errors
    /// A description of the violation found.
    fn check(&self, history: &[UserOperation]) -> Result<(), String>;
}

/// A shared [`Workbench`], as a run's configuration holds it (runs of a sweep share it
/// between threads, so it holds no state of its own between calls). Two are equal when they
/// are the same workbench.
#[derive(Clone)]
pub struct UserMachine(pub Arc<dyn Workbench>);

impl UserMachine {
    /// Shares `workbench` for runs.
    pub fn new(workbench: impl Workbench + 'static) -> UserMachine {
        UserMachine(Arc::new(workbench))
    }

    /// The workbench.
    #[must_use]
    pub fn workbench(&self) -> &dyn Workbench {
        &*self.0
    }
}

impl fmt::Debug for UserMachine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserMachine({})", self.0.name())
    }
}

impl PartialEq for UserMachine {
    fn eq(&self, other: &UserMachine) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for UserMachine {}

/// One operation on the user's state machine, as its client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserOperation {
    /// The client that issued it.
    pub client: usize,
    /// The command, as [`Workbench::command`] returned it.
    pub command: Bytes,
    /// When the client issued it (simulated time).
    pub call: u64,
    /// When the answer arrived, if it did.
    pub ret: Option<u64>,
    /// The state machine's output, if an answer arrived; `None` when the outcome is unknown
    /// (the client gave up, or the run ended first): it may have taken effect or not.
    pub output: Option<Bytes>,
}
