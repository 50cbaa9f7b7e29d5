//! The view service: a deterministic state machine that decides who is primary and who is
//! backup, from pings and logical time alone.
//!
//! It follows the rules of the classic primary-backup view service (the MIT 6.824 lab 2
//! design), written down here as the code enforces them:
//!
//! 1. **First primary.** While there is no view (number 0), the first server to ping with view
//!    number 0 becomes the primary of view 1, without a backup.
//! 2. **Acknowledgement gates every change.** The service moves from view X to X+1 only after
//!    the primary of X pinged with number X. A primary therefore never misses a view: it has
//!    seen X before anyone can act on X+1.
//! 3. **No uninitialized primary.** Only the backup of the acknowledged view is ever promoted.
//!    A replica acknowledges a view with a backup only once that backup holds the complete
//!    state, so the promoted server always has the data.
//! 4. **Spares.** An idle live server fills an empty backup slot (the lowest id first, so the
//!    choice is deterministic). A dead backup is removed and replaced by an idle server if
//!    one is alive.
//! 5. **Failure suspicion is an input.** [`ViewService::tick`] says one ping interval passed;
//!    a server that has not pinged for `dead_pings` intervals is dead. A server that pings
//!    with view number 0 while it holds a role has restarted and lost its state: it is treated
//!    as dead in that role (and as a new idle server otherwise).
//! 6. **Stuck, by design.** If the primary fails and there is no usable backup, or if the
//!    primary fails before acknowledging its view, no failover is possible without the data,
//!    and the service keeps the view forever. Serving from an empty server would lose
//!    acknowledged writes; waiting is the only safe choice.
//!
//! One refinement keeps rule 5 live under message loss: a ping with number 0 from the primary
//! of view 1 that has not yet acknowledged it is taken as "my reply was lost", not as a
//! restart. That is safe because a replica answers nothing in a view without a backup until the
//! service confirmed the acknowledgement ([`PingReply::primary_acked`]), so an unacknowledged
//! view-1 primary has served nothing and its empty state is the right one.
//!
//! # Honest weaknesses
//!
//! - The service is a single point of failure: while it is down no view ever changes, so a
//!   dead primary is never replaced.
//! - A timeout cannot tell a dead primary from a slow or partitioned one. A live primary can be
//!   declared dead; view numbers then fence it (its backup, now primary, refuses its
//!   forwards), so safety holds, but it stops being useful.
//! - Replicating the service with the same primary-backup trick needs a view service for the
//!   view service (chicken and egg). The hybrid scheme replicates this very state machine with
//!   Raft instead; that is why it implements [`chorus_core::StateMachine`] and never reads a
//!   clock.
//!
//! # Surviving its own restart
//!
//! The view is the service's hard state: [`ViewService::durable`] is what a driver must make
//! durable before it sends any reply that shows it, and [`ViewService::resume`] starts from it
//! after a restart. Without it a restarted service would start at view 0 and make the first
//! server to ping — possibly an empty one — primary of view 1 while the old primary still
//! serves: split brain and lost writes. A resumed service knows nothing of liveness, so it
//! counts the view's servers alive as of its start; they must ping within `dead_pings`
//! intervals like anyone else. It is still a single point of failure: while it is down, no view
//! changes.

use std::collections::BTreeMap;

use bytes::Bytes;
use chorus_core::{
    BytesImage, LogIndex, NodeId, RestoreError, SnapshotImage, StateMachine, read_snapshot_to_end,
};
use serde::{Deserialize, Serialize};

use crate::view::{View, ViewNumber};

/// The format version written in front of every view service snapshot, command and reply.
pub const VIEW_SERVICE_CODEC_VERSION: u8 = 1;

/// Settings of a [`ViewService`]. Every replica of a replicated view service must use the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViewServiceConfig {
    /// A server that has not pinged for this many ticks (ping intervals) is dead.
    pub dead_pings: u64,
    /// The most servers the service tracks; pings from more unknown servers are refused.
    pub servers_max: usize,
}

impl ViewServiceConfig {
    /// Checks that the configuration can work.
    ///
    /// # Errors
    /// [`ViewServiceConfigError`] naming the first setting that cannot work.
    pub fn validate(&self) -> Result<(), ViewServiceConfigError> {
        if self.dead_pings == 0 {
            return Err(ViewServiceConfigError::DeadPingsZero);
        }
        if self.servers_max == 0 {
            return Err(ViewServiceConfigError::ServersMaxZero);
        }
        Ok(())
    }
}

/// A [`ViewServiceConfig`] that cannot work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ViewServiceConfigError {
    /// `dead_pings` is 0: every server would be dead at once, so no view could ever hold.
    #[error("invalid view service configuration: dead_pings must be at least 1")]
    DeadPingsZero,
    /// `servers_max` is 0: every ping would be refused.
    #[error("invalid view service configuration: servers_max must be at least 1")]
    ServersMaxZero,
}

impl Default for ViewServiceConfig {
    fn default() -> ViewServiceConfig {
        ViewServiceConfig {
            dead_pings: 5,
            servers_max: 64,
        }
    }
}

/// What the service answers to every ping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingReply {
    /// The current view.
    pub view: View,
    /// Whether the primary of `view` acknowledged it and has not since restarted. A primary of a
    /// view without a backup answers clients only once it has seen this.
    pub primary_acked: bool,
}

/// A ping the service refused. Its state is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PingError {
    /// The server claims a view the service never created.
    #[error("{server} claims view {claimed}, but the current view is {current}")]
    UnknownView {
        /// The pinging server.
        server: NodeId,
        /// The view number it sent.
        claimed: ViewNumber,
        /// The service's current view number.
        current: ViewNumber,
    },
    /// The service already tracks `servers_max` servers.
    #[error("too many servers: {server} cannot be tracked")]
    TooManyServers {
        /// The refused server.
        server: NodeId,
    },
}

/// A command of the view service as a [`StateMachine`] (encoded with
/// [`ViewServiceCommand::encode`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ViewServiceCommand {
    /// `server` pinged, knowing view `view`.
    Ping {
        /// The pinging server.
        server: NodeId,
        /// The view number it knows (0 after a restart).
        view: ViewNumber,
    },
    /// One ping interval passed.
    Tick,
}

impl ViewServiceCommand {
    /// The command's bytes: a version byte, then postcard.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        encode(self)
    }

    /// Decodes [`ViewServiceCommand::encode`]'s output.
    ///
    /// # Errors
    /// [`CodecError`] on bytes of another version, truncated, or with bytes left over.
    pub fn decode(bytes: &[u8]) -> Result<ViewServiceCommand, CodecError> {
        decode(bytes)
    }
}

impl PingReply {
    /// The reply's bytes: a version byte, then postcard. This is what
    /// [`ViewService`]'s [`StateMachine::apply`] returns.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        encode(self)
    }

    /// Decodes [`PingReply::encode`]'s output.
    ///
    /// # Errors
    /// [`CodecError`] on bytes of another version, truncated, or with bytes left over.
    pub fn decode(bytes: &[u8]) -> Result<PingReply, CodecError> {
        decode(bytes)
    }
}

/// Bytes that are not a valid view service command, reply or snapshot.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode view service bytes: {reason}")]
pub struct CodecError {
    /// The decoder's complaint.
    pub reason: String,
}

fn encode<T: Serialize>(value: &T) -> Bytes {
    let buffer = postcard::to_extend(value, vec![VIEW_SERVICE_CODEC_VERSION])
        .expect("invariant: postcard serializes every view service type");
    Bytes::from(buffer)
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let Some((&version, body)) = bytes.split_first() else {
        return Err(CodecError {
            reason: "empty input".to_owned(),
        });
    };
    if version != VIEW_SERVICE_CODEC_VERSION {
        return Err(CodecError {
            reason: format!("unknown version {version}"),
        });
    }
    let (value, rest) = postcard::take_from_bytes(body).map_err(|error| CodecError {
        reason: error.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(CodecError {
            reason: format!("{} bytes left over", rest.len()),
        });
    }
    Ok(value)
}

/// What the service knows of one live server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Liveness {
    /// The tick of its latest ping.
    last_ping_tick: u64,
    /// It pinged with view 0 (or from a new incarnation) while holding a role in the current
    /// view: it lost its state and must not keep (or acknowledge) that role.
    restarted: bool,
    /// The latest incarnation it pinged from (0: it never said).
    incarnation: u64,
}

/// The whole state, as snapshotted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct ServiceState {
    view: View,
    acked: bool,
    now_tick: u64,
    servers: Vec<(NodeId, Liveness)>,
}

/// What the view service must keep across its own restart: the view and whether its primary
/// acknowledged it. Encoded with [`DurableView::encode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurableView {
    /// The current view.
    pub view: View,
    /// Its primary acknowledged it.
    pub acked: bool,
}

impl DurableView {
    /// The bytes: a version byte, then postcard.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        encode(self)
    }

    /// Decodes [`DurableView::encode`]'s output.
    ///
    /// # Errors
    /// [`CodecError`] on bytes of another version, truncated, with bytes left over, or
    /// describing an impossible view (a primary in view 0, no primary later, or the same server
    /// as primary and backup).
    pub fn decode(bytes: &[u8]) -> Result<DurableView, CodecError> {
        let durable: DurableView = decode(bytes)?;
        let view = durable.view;
        let impossible = (view.number == ViewNumber(0) && view != View::NONE)
            || (view.number > ViewNumber(0) && view.primary.is_none())
            || (view.primary.is_some() && view.primary == view.backup);
        if impossible {
            return Err(CodecError {
                reason: format!("an impossible view {view:?}"),
            });
        }
        Ok(durable)
    }
}

/// The view service state machine. See the module docs for its rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewService {
    config: ViewServiceConfig,
    view: View,
    /// The primary of `view` pinged with `view.number`.
    acked: bool,
    /// Ticks applied so far: the service's only notion of time.
    now_tick: u64,
    /// The live servers (a server is removed once dead), in id order.
    servers: BTreeMap<NodeId, Liveness>,
}

impl ViewService {
    /// A service with no view yet.
    ///
    /// # Errors
    /// [`ViewServiceConfigError`] if the configuration cannot work.
    pub fn new(config: ViewServiceConfig) -> Result<ViewService, ViewServiceConfigError> {
        config.validate()?;
        Ok(ViewService {
            config,
            view: View::NONE,
            acked: false,
            now_tick: 0,
            servers: BTreeMap::new(),
        })
    }

    /// A service restarted from what it made durable before. The servers of the view count
    /// as alive as of now (tick 0): each must ping within `dead_pings` intervals, or it is dead
    /// as usual.
    ///
    /// # Errors
    /// [`ViewServiceConfigError`] if the configuration cannot work.
    pub fn resume(
        config: ViewServiceConfig,
        durable: DurableView,
    ) -> Result<ViewService, ViewServiceConfigError> {
        let mut service = ViewService::new(config)?;
        service.view = durable.view;
        service.acked = durable.acked;
        for server in [durable.view.primary, durable.view.backup]
            .into_iter()
            .flatten()
        {
            service.servers.insert(
                server,
                Liveness {
                    last_ping_tick: 0,
                    restarted: false,
                    incarnation: 0,
                },
            );
        }
        Ok(service)
    }

    /// What must be durable before any reply showing the current view is sent.
    #[must_use]
    pub fn durable(&self) -> DurableView {
        DurableView {
            view: self.view,
            acked: self.acked,
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &ViewServiceConfig {
        &self.config
    }

    /// The current view.
    #[must_use]
    pub fn get_view(&self) -> View {
        self.view
    }

    /// The reply every ping receives now.
    #[must_use]
    pub fn reply(&self) -> PingReply {
        PingReply {
            view: self.view,
            primary_acked: self.primary_acked(),
        }
    }

    /// Whether the primary of the current view acknowledged it and has not restarted since.
    #[must_use]
    pub fn primary_acked(&self) -> bool {
        self.acked
            && self
                .view
                .primary
                .is_some_and(|primary| self.is_usable(primary))
    }

    /// Whether the primary of the current view acknowledged it (even if it has died since).
    /// The service changes views only from an acknowledged view.
    #[must_use]
    pub fn view_acked(&self) -> bool {
        self.acked
    }

    /// Whether the service is stuck by rule 6: the primary of the current view is dead or
    /// restarted (so it lost the data), and either it never acknowledged the view or the view
    /// has no usable backup to promote. The service then never changes the view again, unless
    /// that very primary comes back with its state (a primary that was only cut off and still
    /// pings with its view). Drivers and the simulator use it to tell this documented
    /// unavailability from a liveness bug.
    #[must_use]
    pub fn is_stuck(&self) -> bool {
        let Some(primary) = self.view.primary else {
            return false;
        };
        if self.is_usable(primary) {
            return false;
        }
        !self.acked
            || !self
                .view
                .backup
                .is_some_and(|backup| self.is_usable(backup))
    }

    /// Whether `server` pinged within the last `dead_pings` ticks.
    #[must_use]
    pub fn is_alive(&self, server: NodeId) -> bool {
        self.servers.contains_key(&server)
    }

    /// `server` pinged, knowing view `view` (0 if it just started). Returns the reply.
    ///
    /// Without an incarnation, a ping with view 0 from a server holding a role means it
    /// restarted (see [`ViewService::ping_from`] for why an incarnation is better).
    ///
    /// # Errors
    /// [`PingError`] if the view number is one the service never created or the server table
    /// is full; the state is then unchanged.
    pub fn ping(&mut self, server: NodeId, view: ViewNumber) -> Result<PingReply, PingError> {
        self.ping_from(server, view, 0)
    }

    /// `server`, in its start `incarnation` (larger on every start; 0 if unknown), pinged
    /// knowing view `view`. Returns the reply.
    ///
    /// With an incarnation the service learns of a restart from the incarnation growing, not
    /// from view 0: a ping with view 0 that a slow network delivers after the server's later
    /// pings (sent before it learned its first view) says nothing, and a ping from an older
    /// incarnation than one already seen is ignored altogether. (Taking such a late ping for a
    /// restart is safe but can wedge the service: a primary marked restarted can never
    /// acknowledge its view.)
    ///
    /// # Errors
    /// [`PingError`] if the view number is one the service never created or the server table
    /// is full; the state is then unchanged.
    pub fn ping_from(
        &mut self,
        server: NodeId,
        view: ViewNumber,
        incarnation: u64,
    ) -> Result<PingReply, PingError> {
        if view > self.view.number {
            return Err(PingError::UnknownView {
                server,
                claimed: view,
                current: self.view.number,
            });
        }
        if !self.servers.contains_key(&server) && self.servers.len() >= self.config.servers_max {
            return Err(PingError::TooManyServers { server });
        }
        let known = self.servers.get(&server).map_or(0, |l| l.incarnation);
        let both_known = incarnation != 0 && known != 0;
        if both_known && incarnation < known {
            // From an earlier start of the server, overtaken by its current start.
            return Ok(self.reply());
        }
        let in_view = self.view.primary == Some(server) || self.view.backup == Some(server);
        let lost_first_reply =
            self.view.number == ViewNumber(1) && self.view.primary == Some(server) && !self.acked;
        let now_tick = self.now_tick;
        let entry = self.servers.entry(server).or_insert(Liveness {
            last_ping_tick: now_tick,
            restarted: false,
            incarnation,
        });
        entry.last_ping_tick = now_tick;
        let restarted = if both_known {
            incarnation > known
        } else {
            view == ViewNumber(0)
        };
        if restarted && in_view && !lost_first_reply {
            entry.restarted = true;
        }
        if incarnation != 0 {
            entry.incarnation = incarnation;
        }

        if self.view.number == ViewNumber(0) {
            // Rule 1: the first server becomes primary of view 1.
            self.view = View {
                number: ViewNumber(1),
                primary: Some(server),
                backup: None,
            };
            self.acked = false;
            return Ok(self.reply());
        }
        if self.view.primary == Some(server) && view == self.view.number && self.is_usable(server) {
            self.acked = true;
        }
        self.maybe_change_view();
        Ok(self.reply())
    }

    /// One ping interval passed: servers silent for `dead_pings` ticks are dead.
    pub fn tick(&mut self) {
        self.now_tick = self.now_tick.saturating_add(1);
        let now = self.now_tick;
        let dead_pings = self.config.dead_pings;
        self.servers
            .retain(|_, liveness| now.saturating_sub(liveness.last_ping_tick) < dead_pings);
        self.maybe_change_view();
    }

    /// Alive and not restarted since it took its role.
    fn is_usable(&self, server: NodeId) -> bool {
        self.servers
            .get(&server)
            .is_some_and(|liveness| !liveness.restarted)
    }

    /// The lowest-id live server that holds no role in the current view.
    fn idle_server(&self) -> Option<NodeId> {
        self.servers
            .keys()
            .copied()
            .find(|&server| self.view.primary != Some(server) && self.view.backup != Some(server))
    }

    /// Applies rules 2–6: moves to the next view if the current one is acknowledged and
    /// something changed.
    fn maybe_change_view(&mut self) {
        if !self.acked {
            return;
        }
        let Some(primary) = self.view.primary else {
            return;
        };
        let backup_usable = self.view.backup.filter(|&backup| self.is_usable(backup));
        let next = if !self.is_usable(primary) {
            // Rule 3: promote the backup of the acknowledged view, and only it. Rule 6: without
            // a usable backup nobody has the data, so the view stays.
            backup_usable.map(|backup| (backup, self.idle_other_than(backup)))
        } else if self.view.backup.is_some() && backup_usable.is_none() {
            Some((primary, self.idle_server()))
        } else if self.view.backup.is_none() {
            self.idle_server().map(|idle| (primary, Some(idle)))
        } else {
            None
        };
        if let Some((primary, backup)) = next {
            self.view = View {
                number: self.view.number.next(),
                primary: Some(primary),
                backup,
            };
            self.acked = false;
            // A server with no role in the new view is just a new idle server now.
            for (&server, liveness) in &mut self.servers {
                if Some(server) != self.view.primary && Some(server) != self.view.backup {
                    liveness.restarted = false;
                }
            }
        }
    }

    fn idle_other_than(&self, new_primary: NodeId) -> Option<NodeId> {
        self.servers.keys().copied().find(|&server| {
            server != new_primary
                && self.view.primary != Some(server)
                && self.view.backup != Some(server)
        })
    }
}

impl StateMachine for ViewService {
    /// Applies an encoded [`ViewServiceCommand`] and returns the encoded [`PingReply`] (the
    /// current view after the command). A command that does not decode, or a refused ping,
    /// changes nothing and is answered with the current view.
    fn apply(&mut self, _index: LogIndex, command: &[u8]) -> Bytes {
        match ViewServiceCommand::decode(command) {
            Ok(ViewServiceCommand::Ping { server, view }) => {
                // A refused ping leaves the state unchanged; the reply still tells the truth.
                let _refused = self.ping(server, view);
            }
            Ok(ViewServiceCommand::Tick) => self.tick(),
            Err(_) => {}
        }
        self.reply().encode()
    }

    /// Any query is answered with the encoded current [`PingReply`].
    fn query(&self, _query: &[u8]) -> Bytes {
        self.reply().encode()
    }

    fn snapshot(&self) -> Box<dyn SnapshotImage> {
        Box::new(BytesImage(encode(&ServiceState {
            view: self.view,
            acked: self.acked,
            now_tick: self.now_tick,
            servers: self
                .servers
                .iter()
                .map(|(&server, &liveness)| (server, liveness))
                .collect(),
        })))
    }

    fn restore(&mut self, input: &mut dyn std::io::Read) -> Result<(), RestoreError> {
        let snapshot = read_snapshot_to_end(input)?;
        let state: ServiceState = decode(&snapshot).map_err(|error| RestoreError {
            reason: error.to_string(),
        })?;
        let refuse = |reason: &str| RestoreError {
            reason: reason.to_owned(),
        };
        if !state.servers.windows(2).all(|pair| pair[0].0 < pair[1].0) {
            return Err(refuse("servers are not sorted by id"));
        }
        if state.servers.len() > self.config.servers_max {
            return Err(refuse("more servers than servers_max"));
        }
        if state.view.number == ViewNumber(0) && state.view != View::NONE {
            return Err(refuse("view 0 with a primary or backup"));
        }
        if state.view.number > ViewNumber(0) && state.view.primary.is_none() {
            return Err(refuse("a view without a primary"));
        }
        if state.view.primary.is_some() && state.view.primary == state.view.backup {
            return Err(refuse("primary and backup are the same server"));
        }
        if state
            .servers
            .iter()
            .any(|(_, liveness)| liveness.last_ping_tick > state.now_tick)
        {
            return Err(refuse("a ping from the future"));
        }
        self.view = state.view;
        self.acked = state.acked;
        self.now_tick = state.now_tick;
        self.servers = state.servers.into_iter().collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);
    const C: NodeId = NodeId(3);

    fn service() -> ViewService {
        ViewService::new(ViewServiceConfig {
            dead_pings: 3,
            servers_max: 8,
        })
        .expect("valid config")
    }

    fn view(number: u64, primary: Option<NodeId>, backup: Option<NodeId>) -> View {
        View {
            number: ViewNumber(number),
            primary,
            backup,
        }
    }

    #[test]
    fn a_resumed_service_keeps_its_view_and_gives_its_servers_the_usual_time() {
        let mut before = service();
        before.ping(A, ViewNumber(0)).expect("ping");
        before.ping(A, ViewNumber(1)).expect("ack");
        before.ping(B, ViewNumber(0)).expect("ping");
        before.ping(A, ViewNumber(1)).expect("ping");
        assert_eq!(before.get_view(), view(2, Some(A), Some(B)));
        before.ping(A, ViewNumber(2)).expect("ack");
        let durable = DurableView::decode(&before.durable().encode()).expect("round trip");
        assert_eq!(durable, before.durable());

        // A restart: the view stays (no view 1 for whoever pings first), and a server that
        // pings with view 0 now is a new idle server, not a primary.
        let mut after = ViewService::resume(*before.config(), durable).expect("resumed");
        assert_eq!(after.get_view(), view(2, Some(A), Some(B)));
        assert_eq!(
            after.ping(C, ViewNumber(0)).expect("ping").view,
            view(2, Some(A), Some(B))
        );
        // The primary is not declared dead before `dead_pings` ticks of silence...
        for _ in 0..2 {
            after.tick();
            after.ping(B, ViewNumber(2)).expect("ping");
            after.ping(C, ViewNumber(2)).expect("ping");
        }
        assert_eq!(after.get_view().primary, Some(A));
        // ...and is after them: the backup of the acknowledged view takes over.
        after.tick();
        assert_eq!(after.get_view(), view(3, Some(B), Some(C)));
    }

    #[test]
    fn an_impossible_durable_view_is_refused() {
        let durable = |view| DurableView { view, acked: true }.encode();
        assert!(DurableView::decode(&durable(view(0, Some(A), None))).is_err());
        assert!(DurableView::decode(&durable(view(3, None, Some(B)))).is_err());
        assert!(DurableView::decode(&durable(view(3, Some(A), Some(A)))).is_err());
        assert!(DurableView::decode(&durable(View::NONE)).is_ok());
        assert!(DurableView::decode(b"").is_err());
    }

    #[test]
    fn configurations_that_cannot_work_are_refused_with_an_error() {
        let good = ViewServiceConfig {
            dead_pings: 1,
            servers_max: 1,
        };
        assert_eq!(good.validate(), Ok(()));
        assert!(ViewService::new(good).is_ok());
        assert_eq!(
            ViewService::new(ViewServiceConfig {
                dead_pings: 0,
                ..good
            }),
            Err(ViewServiceConfigError::DeadPingsZero)
        );
        assert_eq!(
            ViewService::new(ViewServiceConfig {
                servers_max: 0,
                ..good
            }),
            Err(ViewServiceConfigError::ServersMaxZero)
        );
        // Both wrong: the first setting checked is named.
        assert_eq!(
            ViewServiceConfig {
                dead_pings: 0,
                servers_max: 0,
            }
            .validate(),
            Err(ViewServiceConfigError::DeadPingsZero)
        );
        assert!(ViewService::new(ViewServiceConfig::default()).is_ok());
        // The view server builds its service the same way and passes the error on.
        assert_eq!(
            crate::ViewServer::new(ViewServiceConfig {
                servers_max: 0,
                ..good
            })
            .err(),
            Some(ViewServiceConfigError::ServersMaxZero)
        );
    }

    #[test]
    fn the_first_server_becomes_primary_and_the_second_waits_for_the_ack() {
        let mut service = service();
        assert_eq!(
            service.ping(A, ViewNumber(0)).map(|r| r.view),
            Ok(view(1, Some(A), None))
        );
        // B is idle, but view 1 is not acknowledged: no change yet.
        service.ping(B, ViewNumber(0)).expect("ping");
        assert_eq!(service.get_view(), view(1, Some(A), None));
        // A acknowledges view 1: B fills the backup slot.
        service.ping(A, ViewNumber(1)).expect("ping");
        assert_eq!(service.get_view(), view(2, Some(A), Some(B)));
        assert!(!service.primary_acked());
    }

    #[test]
    fn a_lost_first_reply_is_not_a_restart() {
        let mut service = service();
        service.ping(A, ViewNumber(0)).expect("ping");
        service
            .ping(A, ViewNumber(0))
            .expect("ping again: the reply was lost");
        service.ping(A, ViewNumber(1)).expect("ack");
        assert!(service.primary_acked());
    }

    #[test]
    fn pings_of_unknown_views_and_overflowing_tables_are_refused() {
        let mut service = ViewService::new(ViewServiceConfig {
            dead_pings: 3,
            servers_max: 1,
        })
        .expect("valid config");
        assert!(matches!(
            service.ping(A, ViewNumber(4)),
            Err(PingError::UnknownView { .. })
        ));
        assert_eq!(service.get_view(), View::NONE);
        service.ping(A, ViewNumber(0)).expect("ping");
        assert_eq!(
            service.ping(B, ViewNumber(0)),
            Err(PingError::TooManyServers { server: B })
        );
    }

    #[test]
    fn round_trips_through_the_state_machine_interface() {
        let mut service = service();
        let mut index = LogIndex(0);
        let mut apply = |service: &mut ViewService, command: ViewServiceCommand| {
            index = index.next();
            PingReply::decode(&service.apply(index, &command.encode())).expect("reply decodes")
        };
        apply(
            &mut service,
            ViewServiceCommand::Ping {
                server: A,
                view: ViewNumber(0),
            },
        );
        apply(
            &mut service,
            ViewServiceCommand::Ping {
                server: B,
                view: ViewNumber(0),
            },
        );
        let reply = apply(
            &mut service,
            ViewServiceCommand::Ping {
                server: A,
                view: ViewNumber(1),
            },
        );
        assert_eq!(reply.view, view(2, Some(A), Some(B)));
        apply(&mut service, ViewServiceCommand::Tick);
        // Garbage is answered with the current view and changes nothing.
        let before = service.clone();
        let reply = PingReply::decode(&service.apply(LogIndex(99), b"\x01\xff\xff"))
            .expect("reply decodes");
        assert_eq!(reply.view, before.get_view());
        assert_eq!(service, before);

        let mut copy = ViewService::new(service.config).expect("valid config");
        copy.restore_bytes(&service.snapshot_bytes())
            .expect("restore");
        assert_eq!(copy, service);
        assert!(copy.restore_bytes(b"nonsense").is_err());
        assert_eq!(copy, service);
    }

    #[test]
    fn primary_and_backup_dead_leaves_the_service_stuck() {
        let mut service = service();
        service.ping(A, ViewNumber(0)).expect("ping");
        service.ping(A, ViewNumber(1)).expect("ping");
        service.ping(B, ViewNumber(1)).expect("ping");
        service.ping(A, ViewNumber(2)).expect("ack");
        assert_eq!(service.get_view(), view(2, Some(A), Some(B)));
        for _ in 0..10 {
            service.tick();
        }
        // Both dead: nobody has the data, so C is never made primary.
        service.ping(C, ViewNumber(0)).expect("ping");
        service.tick();
        assert_eq!(service.get_view(), view(2, Some(A), Some(B)));
    }

    // Regression (found by `chorus sim --protocol pb`, fault-free seeds such as 8 and 51): a
    // primary pings with view 0 twice before its first reply arrives; the network delivers the
    // second ping after the primary's acknowledgement of view 1, once view 2 exists. Without an
    // incarnation the service took it for a restart, so the live primary could never
    // acknowledge view 2 and the service was wedged.
    #[test]
    fn a_late_ping_with_view_zero_from_the_same_start_is_not_a_restart() {
        let mut service = service();
        service.ping_from(A, ViewNumber(0), 7).expect("ping");
        service.ping_from(A, ViewNumber(1), 7).expect("ack");
        service.ping_from(B, ViewNumber(0), 3).expect("ping");
        assert_eq!(service.get_view(), view(2, Some(A), Some(B)));
        // The late second ping of A's first moments.
        service.ping_from(A, ViewNumber(0), 7).expect("late ping");
        service
            .ping_from(A, ViewNumber(2), 7)
            .expect("ack of view 2");
        assert!(service.primary_acked());
        assert!(!service.is_stuck());
    }

    // The same late ping without an incarnation is what wedged the service: the fallback rule
    // cannot tell it from a restart (kept for drivers that give no incarnation).
    #[test]
    fn without_an_incarnation_a_late_ping_with_view_zero_looks_like_a_restart() {
        let mut service = service();
        service.ping(A, ViewNumber(0)).expect("ping");
        service.ping(A, ViewNumber(1)).expect("ack");
        service.ping(B, ViewNumber(0)).expect("ping");
        service.ping(A, ViewNumber(0)).expect("late ping");
        service.ping(A, ViewNumber(2)).expect("refused as an ack");
        assert!(!service.primary_acked());
        assert!(service.is_stuck());
    }

    #[test]
    fn a_new_incarnation_is_a_restart_and_an_older_one_is_ignored() {
        let mut service = service();
        service.ping_from(A, ViewNumber(0), 7).expect("ping");
        service.ping_from(A, ViewNumber(1), 7).expect("ack");
        service.ping_from(B, ViewNumber(0), 3).expect("ping");
        service.ping_from(B, ViewNumber(2), 3).expect("ping");
        service.ping_from(A, ViewNumber(2), 7).expect("ack");
        assert!(service.primary_acked());
        // A ping of an earlier start of B, delivered late, changes nothing.
        service.ping_from(B, ViewNumber(0), 2).expect("stale start");
        assert_eq!(service.get_view(), view(2, Some(A), Some(B)));
        // B restarted and, having learned view 2 from a reply, pings with it: the
        // incarnation still gives the restart away, and B is replaced (C is idle).
        service.ping_from(C, ViewNumber(0), 1).expect("ping");
        service.ping_from(B, ViewNumber(2), 4).expect("new start");
        assert_eq!(service.get_view(), view(3, Some(A), Some(C)));
    }

    #[test]
    fn the_service_is_stuck_only_without_anyone_holding_the_state() {
        let mut service = service();
        service.ping(A, ViewNumber(0)).expect("ping");
        service.ping(A, ViewNumber(1)).expect("ack");
        service.ping(B, ViewNumber(0)).expect("ping");
        service.ping(B, ViewNumber(2)).expect("ping");
        service.ping(A, ViewNumber(2)).expect("ack");
        assert!(!service.is_stuck());
        // The primary restarts: its backup takes over, so the service is not stuck.
        service.ping(A, ViewNumber(0)).expect("restart");
        assert_eq!(service.get_view(), view(3, Some(B), None));
        assert!(!service.is_stuck());
        // The new primary dies before acknowledging view 3: nobody else has the data.
        for _ in 0..10 {
            service.ping(A, ViewNumber(3)).expect("ping");
            service.tick();
        }
        assert!(!service.view_acked());
        assert!(service.is_stuck());
        assert_eq!(service.get_view().number, ViewNumber(3));
    }
}
