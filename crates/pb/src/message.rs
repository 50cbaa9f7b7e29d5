//! The messages of the primary-backup scheme: between replicas and the view service, and
//! between a primary and its backup.
//!
//! A message may be stale, duplicated, reordered or forged; the receivers validate each one.
//! Every primary-to-backup message carries the sender's view number: it is the fence that
//! keeps a replaced primary from changing anything (a backup accepts only the primary of the
//! view it currently knows).

use bytes::Bytes;
use chorus_core::LogIndex;
use serde::{Deserialize, Serialize};

use crate::view::ViewNumber;
use crate::view_service::PingReply;

/// A message of the primary-backup scheme. The sender is given separately to the receiver's
/// `step`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Replica → view service: "I am alive and I know (and, as primary, acknowledge) `view`".
    Ping {
        /// The view number the replica knows; as primary, the latest view it acknowledges.
        /// 0 after a restart.
        view: ViewNumber,
    },
    /// Replica → view service: a ping that also names the replica's start (its incarnation,
    /// larger on every start), sent by replicas whose driver gives one
    /// ([`crate::PbConfig::incarnation`]). With it the service tells a restart from a ping
    /// that a slow network delivers late: a ping with view 0 sent before the replica learned
    /// its first view, and overtaken by later ones, must not count as a restart.
    PingFrom {
        /// As in [`Message::Ping`].
        view: ViewNumber,
        /// The replica's start; never 0.
        incarnation: u64,
    },
    /// View service → replica: the answer to every ping.
    ViewReply(PingReply),
    /// Primary → backup: the complete state, sent before anything else in a view.
    StateTransfer {
        /// The primary's view.
        view: ViewNumber,
        /// The state machine's snapshot, session table included.
        snapshot: Bytes,
        /// The index of the last operation the snapshot includes.
        index: LogIndex,
    },
    /// Primary → backup: the effect of one client operation, to apply at `index` (passive
    /// replication: the primary executed it, the backup never does).
    Forward {
        /// The primary's view.
        view: ViewNumber,
        /// The operation's position in the primary's sequence.
        index: LogIndex,
        /// The encoded [`chorus_core::envelope::Envelope`] of the operation, whose command is
        /// the encoded [`chorus_core::Execution`] (output and effect) rather than the
        /// client's command.
        execution: Bytes,
    },
    /// Primary → backup: "am I still your primary?", asked before serving reads.
    ReadConfirm {
        /// The primary's view.
        view: ViewNumber,
        /// The read round being confirmed.
        round: u64,
    },
    /// Backup → primary: cumulative acknowledgement, sent only once the backup holds the state
    /// of `view`.
    Ack {
        /// The backup's view.
        view: ViewNumber,
        /// Every operation up to this index is applied on the backup.
        applied: LogIndex,
        /// The highest read round the backup confirmed in `view`.
        read_round: u64,
    },
    /// Backup → sender: "your view is stale; mine is `view`". The sender was replaced.
    Rejected {
        /// The backup's current view number.
        view: ViewNumber,
    },
}

impl Message {
    /// The message's approximate size in bytes, for budgets and statistics.
    #[must_use]
    pub fn size_bytes(&self) -> usize {
        let payload = match self {
            Message::StateTransfer { snapshot, .. } => snapshot.len(),
            Message::Forward { execution, .. } => execution.len(),
            Message::Ping { .. }
            | Message::PingFrom { .. }
            | Message::ViewReply(_)
            | Message::ReadConfirm { .. }
            | Message::Ack { .. }
            | Message::Rejected { .. } => 0,
        };
        32 + payload
    }
}
