//! [`PbReady`]: everything a primary-backup core asks its driver to do.

use bytes::Bytes;
use chorus_core::{LogIndex, NodeId};
use serde::{Deserialize, Serialize};

use crate::message::Message;

/// Identifies one read, chosen by whoever called [`crate::PbReplica::read`]; echoed back.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct ReadId(pub u64);

/// An operation applied on the primary (and, before that, on the backup of its view).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// Its position in the sequence of operations.
    pub index: LogIndex,
    /// The node that took the client's request (from the envelope).
    pub origin: NodeId,
    /// The request's number at that node (from the envelope).
    pub request: u64,
    /// The state machine's output, for the client.
    pub output: Bytes,
}

/// A proposal whose outcome this replica cannot know: it stopped being primary while the
/// operation was in flight. The backup may have applied it and may now be primary, so the
/// client must not be told it failed; it retries (sessions make the retry exactly-once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aborted {
    /// The index the operation had on this replica.
    pub index: LogIndex,
    /// The node that took the client's request.
    pub origin: NodeId,
    /// The request's number at that node.
    pub request: u64,
}

/// The answer to a confirmed read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadOutput {
    /// The id given to [`crate::PbReplica::read`].
    pub id: ReadId,
    /// The state machine's answer to the query.
    pub output: Bytes,
}

/// The work a driver must do, taken from `ready()` of a [`crate::PbReplica`] or a
/// [`crate::ViewServer`].
///
/// Primary-backup keeps nothing on disk (a restarted server is a new, empty server), so there
/// is no persist step: the driver sends `messages`, delivers the outputs to clients, then calls
/// `advance()`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PbReady {
    /// Messages to send, in order.
    pub messages: Vec<(NodeId, Message)>,
    /// Operations applied, in index order, with their outputs: answer their clients.
    pub committed: Vec<Committed>,
    /// Operations with an unknown outcome: tell their clients to retry.
    pub aborted: Vec<Aborted>,
    /// Reads confirmed and answered.
    pub reads: Vec<ReadOutput>,
    /// Reads this replica can no longer serve (it stopped being primary); the caller may retry
    /// elsewhere.
    pub rejected_reads: Vec<ReadId>,
}

impl PbReady {
    /// Whether there is nothing to do.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.committed.is_empty()
            && self.aborted.is_empty()
            && self.reads.is_empty()
            && self.rejected_reads.is_empty()
    }
}
