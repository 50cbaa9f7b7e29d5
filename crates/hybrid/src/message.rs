//! What data servers and the configuration group send each other.
//!
//! Every data-path message carries the sender's epoch, so a receiver can fence it; an
//! [`Message::Append`] carries its send time on the primary's clock, which the backup echoes
//! in its [`Message::AppendAck`]: the lease that acknowledgement grants runs from the send
//! time, not from the receipt (that would outlive the backup's view by a network delay).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::configuration::{ConfigCommand, Configuration, View};
use crate::{Epoch, LocalTime, Lsn};

/// One entry of a data server's log, stamped `(epoch, lsn)`: the *effect* of a write, not the
/// write (passive replication: the primary executed it, nobody else ever does).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataEntry {
    /// The epoch of the primary that first appended it.
    pub epoch: Epoch,
    /// Its position.
    pub lsn: Lsn,
    /// The encoded [`chorus_core::envelope::Envelope`] of the write, whose command is the
    /// primary's encoded [`chorus_core::Execution`] (the output and the effect); the envelope
    /// keeps the origin and request number, so the server that took the write answers it.
    pub command: Bytes,
}

/// A message between data servers, or between a data server and the configuration group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Primary → backup or catching-up spare: entries after `(prev_epoch, prev_lsn)`, the
    /// commit point, and the primary's view. With no entries it is a heartbeat.
    Append {
        /// The sender's epoch.
        epoch: Epoch,
        /// The sender's view (of `epoch`).
        view: View,
        /// The lsn before `entries`.
        prev_lsn: Lsn,
        /// The epoch of the entry at `prev_lsn` (0 for lsn 0).
        prev_epoch: Epoch,
        /// The entries.
        entries: Vec<DataEntry>,
        /// The primary's commit point.
        commit: Lsn,
        /// The send time on the primary's clock.
        sent_at: LocalTime,
    },
    /// Backup → primary.
    AppendAck {
        /// The receiver's highest epoch (higher than the Append's if the Append is stale).
        epoch: Epoch,
        /// Whether the entries matched and were appended.
        success: bool,
        /// If `success`, the last lsn known to match; otherwise where to retry from.
        lsn: Lsn,
        /// The echoed send time of the Append.
        sent_at: LocalTime,
    },
    /// Data server → configuration group: propose this command.
    Propose(ConfigCommand),
    /// Configuration group → data server: the current configuration.
    Update(Configuration),
}
