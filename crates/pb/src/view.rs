//! [`View`] and [`ViewNumber`]: who is primary and who is backup, and since when.

use std::fmt;

use chorus_core::NodeId;
use serde::{Deserialize, Serialize};

/// A view's number. Only the view service creates views, each with a number one above the
/// previous, so a number names exactly one view. Number 0 is "no view yet", and a server that
/// pings with 0 says it has just (re)started and holds no state.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct ViewNumber(pub u64);

impl ViewNumber {
    /// The number after this one.
    ///
    /// # Panics
    /// On overflow, which takes 2^64 view changes.
    #[must_use]
    pub fn next(self) -> ViewNumber {
        ViewNumber(
            self.0
                .checked_add(1)
                .expect("invariant: view number does not overflow"),
        )
    }
}

impl fmt::Display for ViewNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// A configuration of the primary-backup group: at most one primary and one backup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct View {
    /// The view's number.
    pub number: ViewNumber,
    /// The server that takes client operations, if any.
    pub primary: Option<NodeId>,
    /// The server that receives every operation from the primary, if any.
    pub backup: Option<NodeId>,
}

impl View {
    /// "No view yet": number 0, nobody.
    pub const NONE: View = View {
        number: ViewNumber(0),
        primary: None,
        backup: None,
    };

    /// Whether `server` is this view's primary.
    #[must_use]
    pub fn is_primary(&self, server: NodeId) -> bool {
        self.primary == Some(server)
    }

    /// Whether `server` is this view's backup.
    #[must_use]
    pub fn is_backup(&self, server: NodeId) -> bool {
        self.backup == Some(server)
    }
}
