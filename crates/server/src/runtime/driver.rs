//! The driver: the one loop that runs a protocol core's contract for real, for every scheme.
//!
//! A node's driver thread owns its core (through a [`Host`], which knows how to drive one
//! scheme's core) and a [`Context`] (the peers' queues, the shared status and metrics, and the
//! client requests held). Everything else in the process talks to it through the
//! [`boundary`](super::boundary). The loop:
//!
//! 1. wait for an input or the next tick; then take every input already queued (bounded), so
//!    that all requests that arrived while the last Ready was handled become one batch;
//! 2. tick the core when a tick is due (a thread that fell behind skips missed ticks rather
//!    than firing a burst that would look like a timeout), and expire client requests that
//!    waited too long;
//! 3. while the core has a Ready, handle it in the order the scheme's contract demands (the
//!    host's part: Raft sends and applies, hands the batch to its storage thread for one
//!    fsync, and keeps stepping, ticking and heartbeating while it is out; once the thread
//!    reports it durable, sends what promises durability and advances. Primary-backup
//!    persists, sends, answers, and advances);
//! 4. publish the status for the admin page, and stop if asked to.
//!
//! It runs on a plain OS thread, not a tokio task, because a host may block on its disk (the
//! primary-backup hosts fsync on it). A host whose storage thread finished a job is woken by
//! an [`Input::StorageDone`] sent through [`Context::waker`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_core::NodeId;

use super::boundary::{
    AdminAccepted, AdminError, AdminRequest, Input, MemberAddress, NodeStatus, Outboxes,
    PeerMessage, Reply, RequestError, Shared, send_to_peer,
};
use super::members::{AddressBook, Dialer};
use super::requests::Requests;

/// What a scheme supplies to the one driver loop: how to feed its core and how to carry out
/// its Ready. Every method runs on the driver thread.
pub trait Host {
    /// Why the host cannot go on (a storage failure: the node cannot keep its promises).
    type Error;

    /// Feeds the core a message from a peer.
    fn step(&mut self, cx: &mut Context, from: NodeId, message: PeerMessage);

    /// Proposes a client's command, holding `reply` in `cx.requests` until it is answered, or
    /// refuses it at once. The driver has checked there is room for another request.
    fn propose(&mut self, cx: &mut Context, command: Bytes, reply: Reply);

    /// Starts a linearizable read, holding `reply` in `cx.requests`, or refuses it at once.
    /// The driver has checked there is room for another request.
    fn read(&mut self, cx: &mut Context, query: Bytes, reply: Reply);

    /// Logical time moved one tick.
    fn tick(&mut self, cx: &mut Context);

    /// The driver runs late: its ticks lag true time by more than half a tick, so anything
    /// the host times by counting ticks (a read lease) may be counted short. Nothing by
    /// default.
    fn clock_behind(&mut self, cx: &mut Context) {
        let _ = cx;
    }

    /// Called once on the driver thread before the loop starts (a host starts its helper
    /// threads here).
    fn start(&mut self, cx: &mut Context) {
        let _ = cx;
    }

    /// Carries out the core's next Ready, if it has one; returns whether it had.
    ///
    /// # Errors
    /// When the node cannot keep the Ready's promises (its disk failed).
    fn handle_ready(&mut self, cx: &mut Context) -> Result<bool, Self::Error>;

    /// The node's status for the admin page (and any metrics that follow from it).
    fn status(&mut self, cx: &Context) -> NodeStatus;

    /// Carries out a membership operation from the admin endpoint, or refuses it. A scheme
    /// without membership changes refuses every one.
    ///
    /// # Errors
    /// Why the operation was not taken; nothing changed then.
    fn admin(
        &mut self,
        cx: &mut Context,
        request: AdminRequest,
    ) -> Result<AdminAccepted, AdminError> {
        let _ = (cx, request);
        Err(AdminError::Unsupported)
    }
}

/// What the loop lends a host: this node, its peers, the shared state and the request books.
#[derive(Debug)]
pub struct Context {
    /// This node.
    pub me: NodeId,
    /// The peers' outgoing queues.
    pub peers: Outboxes,
    /// The status and metrics shared with the rest of the process.
    pub shared: Arc<Shared>,
    /// The client requests held.
    pub requests: Requests,
    /// Where every known node listens.
    pub book: AddressBook,
    /// Connects to peers learned at run time (none in unit tests).
    pub dialer: Option<Dialer>,
    /// The driver's own input queue, for a host's helper thread to wake it with
    /// [`Input::StorageDone`] (none in unit tests). While the driver holds it the queue never
    /// disconnects: the driver stops on the shutdown flag.
    pub waker: Option<SyncSender<Input>>,
    /// When the tick the host last got was due: its nominal time, however late the loop
    /// delivered it (the loop's start before the first tick). A core that counted its
    /// ticks up to here holds a lease of `n` more ticks until `tick_due + n × tick`, in real
    /// time, whether or not the loop keeps up (a loop that fell a tick behind skips ticks,
    /// and tells the host first: [`Host::clock_behind`]).
    pub tick_due: Instant,
    /// The length of one tick (set by the loop from its [`Pacing`]).
    pub tick: Duration,
}

impl Context {
    /// Queues `message` for peer `to` (dropped and counted if its queue is full).
    pub fn send(&self, to: NodeId, message: PeerMessage) {
        send_to_peer(&self.peers, &self.shared, to, message);
    }

    /// Takes addresses into the book and connects to every peer that is new or moved.
    pub fn learn_addresses(&mut self, entries: Vec<MemberAddress>) {
        for entry in self.book.merge(entries) {
            if entry.id == self.me {
                continue;
            }
            if let Some(dialer) = &self.dialer {
                tracing::info!(node = entry.id.0, peer = %entry.peer, "learned where a member listens");
                let outbox = dialer.dial(entry.id, entry.peer);
                self.peers.insert(entry.id, outbox);
            }
        }
    }
}

/// How the loop is paced.
#[derive(Clone, Copy, Debug)]
pub struct Pacing {
    /// One logical tick.
    pub tick: Duration,
    /// Inputs taken into one batch.
    pub batch_inputs_max: usize,
}

/// The driver of one node.
pub struct Driver<H: Host> {
    host: H,
    cx: Context,
    inputs: Receiver<Input>,
    pacing: Pacing,
}

impl<H: Host> Driver<H> {
    /// A driver for `host`.
    #[must_use]
    pub fn new(host: H, cx: Context, inputs: Receiver<Input>, pacing: Pacing) -> Driver<H> {
        Driver {
            host,
            cx,
            inputs,
            pacing,
        }
    }

    /// Runs until shutdown (or until every input sender is gone, when the context holds no
    /// waker); then answers every request still held.
    ///
    /// # Errors
    /// The host's error: the node cannot keep its promises, so it stops.
    pub fn run(mut self) -> Result<(), H::Error> {
        let result = self.run_loop();
        self.cx.requests.fail_everything();
        result
    }

    fn run_loop(&mut self) -> Result<(), H::Error> {
        let tick = self.pacing.tick;
        let mut next_tick = Instant::now() + tick;
        self.cx.tick = tick;
        self.cx.tick_due = next_tick - tick;
        self.host.start(&mut self.cx);
        self.publish();
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match self.inputs.recv_timeout(wait) {
                Ok(input) => {
                    self.check_late(next_tick, tick);
                    self.handle(input);
                    for _ in 1..self.pacing.batch_inputs_max {
                        match self.inputs.try_recv() {
                            Ok(input) => {
                                self.check_late(next_tick, tick);
                                self.handle(input);
                            }
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            let now = Instant::now();
            if now >= next_tick {
                // The tick itself may serve reads that waited (a leader found): judge them
                // by a clock known to be late.
                self.check_late(next_tick, tick);
                self.cx.tick_due = next_tick;
                self.host.tick(&mut self.cx);
                next_tick += tick;
                if next_tick < now {
                    // The thread fell behind (a long fsync): skip the missed ticks rather
                    // than firing them in a burst that would look like a timeout.
                    next_tick = now + tick;
                }
                let expired = self.cx.requests.expire(now);
                self.cx.shared.metrics.request_timeouts.inc_by(expired);
            }
            loop {
                self.check_late(next_tick, tick);
                if !self.host.handle_ready(&mut self.cx)? {
                    break;
                }
            }
            self.publish();
            if self.cx.shared.shutdown.load(Ordering::Relaxed) {
                return Ok(());
            }
        }
    }

    /// Tells the host its clock is behind when the tick due at `next_tick` is more than half
    /// a `tick` late. Called before anything that may judge a read by the host's clock (each
    /// input, the tick, each Ready), so that no read is served from a lease counted on a
    /// clock that fell behind (see [`Host::clock_behind`]).
    fn check_late(&mut self, next_tick: Instant, tick: Duration) {
        if Instant::now() >= next_tick + tick / 2 {
            self.host.clock_behind(&mut self.cx);
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Peer {
                message: PeerMessage::Addresses(entries),
                ..
            } => self.cx.learn_addresses(entries),
            Input::Peer { from, message } => self.host.step(&mut self.cx, from, message),
            Input::Admin { request, reply } => {
                let _ = reply.send(self.host.admin(&mut self.cx, request));
            }
            Input::Write { command, reply } => {
                if self.cx.requests.has_room() {
                    self.host.propose(&mut self.cx, command, reply);
                } else {
                    self.cx.shared.metrics.proposals_refused.inc();
                    let _ = reply.send(Err(RequestError::Busy));
                }
            }
            Input::Read { query, reply } => {
                if self.cx.requests.has_room() {
                    self.host.read(&mut self.cx, query, reply);
                } else {
                    let _ = reply.send(Err(RequestError::Busy));
                }
            }
            // Only a wake-up: the host takes its storage outcomes in `handle_ready`.
            Input::StorageDone => {}
        }
    }

    fn publish(&mut self) {
        let status = self.host.status(&self.cx);
        if let Ok(mut shared) = self.cx.shared.status.write() {
            *shared = status;
        }
    }
}
