//! The configuration state machine: the view service of `pb`, written as a deterministic
//! [`StateMachine`] so that a Raft group replicates it (DESIGN.md: "The view service is written
//! once, as a deterministic state machine").
//!
//! It decides and is never on the data path. It reads no clock in `apply`: suspicions arrive
//! as commands proposed by the data servers that suspect, and each command is judged only
//! against the state.
//!
//! # Rules
//! - [`ConfigCommand::ProposeView`] is a compare-and-swap on the epoch: the first proposal for
//!   an epoch wins, later ones are refused.
//! - The first view (no view was ever active) names any registered server as primary, with no
//!   backups, and is active at once: nothing was ever acknowledged.
//! - An unchanged primary of an active view makes the new view active at once (it removes a
//!   backup whose lease ran out, or adds a spare that caught up).
//! - A new primary must be a member of the last active view (it holds every acknowledged
//!   write), must not have lost its unsynced tail, and starts with no backups; its view is
//!   *pending* until it proposes [`ConfigCommand::Activate`] after committing its own log.
//!   Starting with no backups is our simplification of PacificA's reconciliation: the members
//!   it leaves out rejoin as catching-up backups, truncating what it lacks.
//! - [`ConfigCommand::Register`] records a data server's incarnation, and whether that start
//!   lost an unsynced tail; such a server may only rejoin as a catching-up spare.

use std::collections::BTreeMap;

use bytes::Bytes;
use chorus_core::{
    BytesImage, LogIndex, NodeId, RestoreError, SnapshotImage, StateMachine, read_snapshot_to_end,
};
use serde::{Deserialize, Serialize};

use crate::Epoch;

/// A view: who serves in one epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// The epoch; 0 is "no view yet".
    pub epoch: Epoch,
    /// The primary (none only in epoch 0).
    pub primary: Option<NodeId>,
    /// The backups, each of which must acknowledge every write.
    pub backups: Vec<NodeId>,
    /// Whether the view is active (its primary may serve); a new primary's view is pending
    /// until it activates it.
    pub active: bool,
}

impl View {
    /// The primary and the backups.
    #[must_use]
    pub fn members(&self) -> Vec<NodeId> {
        self.primary
            .into_iter()
            .chain(self.backups.iter().copied())
            .collect()
    }

    /// Whether `node` is the primary or a backup.
    #[must_use]
    pub fn is_member(&self, node: NodeId) -> bool {
        self.primary == Some(node) || self.backups.contains(&node)
    }

    /// Whether this view is later than `other`: a higher epoch, or the same epoch activated.
    #[must_use]
    pub fn supersedes(&self, other: &View) -> bool {
        self.epoch > other.epoch || (self.epoch == other.epoch && self.active && !other.active)
    }
}

/// What the configuration knows of one data server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerRecord {
    /// Its latest registered start.
    pub incarnation: u64,
    /// That start lost an unsynced tail of its log: it may not become primary.
    pub lost_tail: bool,
}

/// The whole replicated configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Configuration {
    /// The index of the last command applied: a version that grows in apply order, so a data
    /// server keeps the newest configuration it was told.
    pub version: LogIndex,
    /// The current view.
    pub view: View,
    /// The last view that was active (epoch 0 if none ever was).
    pub last_active: View,
    /// Registered data servers.
    pub servers: BTreeMap<NodeId, ServerRecord>,
}

/// Why a view was proposed (for traces and docs; the rules do not depend on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ViewReason {
    /// The first view.
    Bootstrap,
    /// The primary's lease from a backup ran out: the primary drops it.
    BackupExpired,
    /// A caught-up spare joins as a backup.
    AddBackup,
    /// A backup heard nothing from its primary for the grace period.
    PrimarySilent,
    /// A pending view's primary did not activate it in time.
    PendingStalled,
}

/// A command to the configuration group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigCommand {
    /// A data server (re)started.
    Register {
        /// The server.
        node: NodeId,
        /// Its start count.
        incarnation: u64,
        /// Whether this start lost an unsynced tail.
        lost_tail: bool,
    },
    /// A compare-and-swap of the view.
    ProposeView {
        /// The epoch the proposer saw; the new view gets the next one.
        expected_epoch: Epoch,
        /// The new primary.
        primary: NodeId,
        /// The new backups.
        backups: Vec<NodeId>,
        /// Why.
        reason: ViewReason,
    },
    /// The pending view's primary committed its log: the view becomes active.
    Activate {
        /// The pending view's epoch.
        epoch: Epoch,
        /// Its primary (the proposer).
        primary: NodeId,
    },
}

impl ConfigCommand {
    /// The command as bytes, for the Raft log.
    ///
    /// # Panics
    /// Never: encoding to a `Vec` cannot fail.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).expect("invariant: encoding to a Vec succeeds"))
    }

    /// Decodes a command.
    ///
    /// # Errors
    /// The bytes are not a command.
    pub fn decode(bytes: &[u8]) -> Result<ConfigCommand, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// The answer to one applied command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigOutput {
    /// The state changed.
    Applied,
    /// The command was refused, state unchanged.
    Refused(String),
}

impl ConfigOutput {
    /// The output as bytes.
    ///
    /// # Panics
    /// Never: encoding to a `Vec` cannot fail.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).expect("invariant: encoding to a Vec succeeds"))
    }

    /// Decodes an output.
    ///
    /// # Errors
    /// The bytes are not an output.
    pub fn decode(bytes: &[u8]) -> Result<ConfigOutput, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// The configuration state machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigStateMachine {
    configuration: Configuration,
}

impl ConfigStateMachine {
    /// An empty configuration: no view, no servers.
    #[must_use]
    pub fn new() -> ConfigStateMachine {
        ConfigStateMachine::default()
    }

    /// The current configuration.
    #[must_use]
    pub fn configuration(&self) -> &Configuration {
        &self.configuration
    }

    /// Applies one decoded command (the state machine's rules).
    ///
    /// # Errors
    /// The reason the command is refused; the state is then unchanged.
    pub fn execute(&mut self, command: &ConfigCommand) -> Result<(), String> {
        let state = &mut self.configuration;
        match command {
            ConfigCommand::Register {
                node,
                incarnation,
                lost_tail,
            } => {
                let record = state.servers.entry(*node).or_default();
                if *incarnation < record.incarnation {
                    return Err(format!("{node} registered a newer incarnation"));
                }
                *record = ServerRecord {
                    incarnation: *incarnation,
                    lost_tail: *lost_tail,
                };
                Ok(())
            }
            ConfigCommand::ProposeView {
                expected_epoch,
                primary,
                backups,
                reason: _,
            } => {
                if *expected_epoch != state.view.epoch {
                    return Err(format!(
                        "expected {expected_epoch}, the view is at {}",
                        state.view.epoch
                    ));
                }
                let registered = |node: &NodeId| state.servers.contains_key(node);
                if !registered(primary) || !backups.iter().all(registered) {
                    return Err("an unregistered server".to_string());
                }
                if backups.contains(primary)
                    || (1..backups.len()).any(|i| backups[..i].contains(&backups[i]))
                {
                    return Err("a server named twice".to_string());
                }
                let unchanged = state.view.active && state.view.primary == Some(*primary);
                let active = if state.last_active.epoch == Epoch(0) {
                    if !backups.is_empty() {
                        return Err("the first view has no backups".to_string());
                    }
                    true
                } else if unchanged {
                    true
                } else {
                    if !state.last_active.is_member(*primary) {
                        return Err(format!("{primary} is not in the last active view"));
                    }
                    if state.servers.get(primary).is_some_and(|r| r.lost_tail) {
                        return Err(format!("{primary} lost its unsynced tail"));
                    }
                    if !backups.is_empty() {
                        return Err("a new primary starts with no backups".to_string());
                    }
                    false
                };
                if state.servers.get(primary).is_some_and(|r| r.lost_tail) {
                    return Err(format!("{primary} lost its unsynced tail"));
                }
                state.view = View {
                    epoch: state.view.epoch.next(),
                    primary: Some(*primary),
                    backups: backups.clone(),
                    active,
                };
                if active {
                    state.last_active = state.view.clone();
                }
                Ok(())
            }
            ConfigCommand::Activate { epoch, primary } => {
                if state.view.epoch != *epoch
                    || state.view.active
                    || state.view.primary != Some(*primary)
                {
                    return Err(format!("{epoch} is not pending with primary {primary}"));
                }
                state.view.active = true;
                state.last_active = state.view.clone();
                Ok(())
            }
        }
    }
}

impl StateMachine for ConfigStateMachine {
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Bytes {
        self.configuration.version = index;
        let output = match ConfigCommand::decode(command) {
            Err(error) => ConfigOutput::Refused(format!("malformed command: {error}")),
            Ok(command) => match self.execute(&command) {
                Ok(()) => ConfigOutput::Applied,
                Err(reason) => ConfigOutput::Refused(reason),
            },
        };
        output.encode()
    }

    fn query(&self, _query: &[u8]) -> Bytes {
        Bytes::from(
            postcard::to_allocvec(&self.configuration)
                .expect("invariant: encoding to a Vec succeeds"),
        )
    }

    fn snapshot(&self) -> Box<dyn SnapshotImage> {
        Box::new(BytesImage(self.query(&[])))
    }

    fn restore(&mut self, input: &mut dyn std::io::Read) -> Result<(), RestoreError> {
        let bytes = read_snapshot_to_end(input)?;
        let configuration = postcard::from_bytes(&bytes).map_err(|error| RestoreError {
            reason: format!("not a configuration: {error}"),
        })?;
        self.configuration = configuration;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(machine: &mut ConfigStateMachine, node: u64) {
        let command = ConfigCommand::Register {
            node: NodeId(node),
            incarnation: 1,
            lost_tail: false,
        };
        assert_eq!(machine.execute(&command), Ok(()));
    }

    fn propose(expected: u64, primary: u64, backups: &[u64]) -> ConfigCommand {
        ConfigCommand::ProposeView {
            expected_epoch: Epoch(expected),
            primary: NodeId(primary),
            backups: backups.iter().copied().map(NodeId).collect(),
            reason: ViewReason::PrimarySilent,
        }
    }

    fn cluster() -> ConfigStateMachine {
        let mut machine = ConfigStateMachine::new();
        for node in 1..=3 {
            register(&mut machine, node);
        }
        assert_eq!(machine.execute(&propose(0, 1, &[])), Ok(()));
        assert_eq!(machine.execute(&propose(1, 1, &[2])), Ok(()));
        machine
    }

    #[test]
    fn the_first_proposal_for_an_epoch_wins_later_ones_are_refused() {
        let mut machine = cluster();
        assert_eq!(machine.execute(&propose(2, 2, &[])), Ok(()));
        assert!(machine.execute(&propose(2, 1, &[])).is_err());
        assert_eq!(machine.configuration().view.epoch, Epoch(3));
        assert_eq!(machine.configuration().view.primary, Some(NodeId(2)));
    }

    #[test]
    fn an_unchanged_primary_is_active_at_once_a_new_one_is_pending_until_it_activates() {
        let mut machine = cluster();
        assert!(machine.configuration().view.active);
        assert_eq!(machine.configuration().last_active.backups, vec![NodeId(2)]);
        assert_eq!(machine.execute(&propose(2, 2, &[])), Ok(()));
        assert!(!machine.configuration().view.active);
        assert_eq!(machine.configuration().last_active.epoch, Epoch(2));
        let activate = ConfigCommand::Activate {
            epoch: Epoch(3),
            primary: NodeId(2),
        };
        assert_eq!(machine.execute(&activate), Ok(()));
        assert!(machine.configuration().view.active);
        assert_eq!(machine.configuration().last_active.epoch, Epoch(3));
        assert!(machine.execute(&activate).is_err(), "activates once");
    }

    #[test]
    fn a_new_primary_comes_from_the_last_active_view() {
        let mut machine = cluster();
        let refused = machine.execute(&propose(2, 3, &[]));
        assert!(refused.is_err(), "n3 is a spare: {refused:?}");
        // A pending view whose primary dies is replaced by another member of the last
        // active view, not by the spare.
        assert_eq!(machine.execute(&propose(2, 2, &[])), Ok(()));
        assert!(machine.execute(&propose(3, 3, &[])).is_err());
        assert_eq!(machine.execute(&propose(3, 1, &[])), Ok(()));
        assert!(!machine.configuration().view.active);
    }

    #[test]
    fn a_server_that_lost_its_unsynced_tail_is_never_primary() {
        let mut machine = cluster();
        let lost = ConfigCommand::Register {
            node: NodeId(2),
            incarnation: 2,
            lost_tail: true,
        };
        assert_eq!(machine.execute(&lost), Ok(()));
        assert!(machine.execute(&propose(2, 2, &[])).is_err());
        // It may rejoin as a backup of the unchanged primary.
        assert_eq!(machine.execute(&propose(2, 1, &[2])), Ok(()));
    }

    #[test]
    fn epochs_only_grow_and_restore_reproduces_the_state() {
        let mut machine = cluster();
        let mut copy = ConfigStateMachine::new();
        copy.restore_bytes(&machine.snapshot_bytes())
            .expect("restores");
        assert_eq!(copy, machine);
        let before = machine.configuration().view.epoch;
        let output = machine.apply(LogIndex(9), &propose(0, 1, &[]).encode());
        assert!(matches!(
            ConfigOutput::decode(&output),
            Ok(ConfigOutput::Refused(_))
        ));
        assert_eq!(machine.configuration().view.epoch, before);
        let garbage = machine.apply(LogIndex(10), b"\xff\xff\xff");
        assert!(matches!(
            ConfigOutput::decode(&garbage),
            Ok(ConfigOutput::Refused(_))
        ));
    }
}
