//! TCP between nodes: one outbound connection per peer, reconnecting with backoff, and a
//! listener for the peers' connections to us.
//!
//! # Sending
//!
//! The driver does not hand its messages to another thread to write: each peer's
//! [`PeerLink`] keeps one buffer of encoded frames, and the driver writes it to the socket
//! itself, without blocking, after each Ready ([`flush_peers`]), so a Ready's messages to a
//! peer become one `write` and cost no thread wake-up. A storage thread sends the votes and acks
//! a write promises the same way, the moment the write is durable ([`LinkSender`]). Only
//! what the socket does not take at once is left to the link's task, which writes it as the
//! socket drains and reconnects after a failure. The buffer is bounded (frames and bytes);
//! a message that does not fit is dropped and counted, as the protocols retransmit.
//!
//! # Wire format
//!
//! Each frame is a 4-byte big-endian length followed by that many bytes: a version byte (1), a
//! kind byte, and a postcard-encoded body. The first frame on a connection is a `Hello` (kind 1)
//! naming the cluster, the sender and the intended receiver; every later frame carries one
//! protocol message: a Raft message (kind 2), a primary-backup message (kind 3) or a hybrid
//! data-path message (kind 4) or an address book (kind 5: where members listen, see
//! [`super::members`]), so the transport carries every scheme without knowing any
//! ([`PeerMessage`]). A frame over the
//! size limit, a body that does not decode, a foreign cluster id, an unknown sender or a
//! connection meant for another node closes that connection and is logged; the node keeps
//! serving. Both schemes tolerate the loss: they retransmit.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use chorus_core::NodeId;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use super::boundary::{Input, PeerMessage, RequestError, Shared, offer};

const VERSION: u8 = 1;
const KIND_HELLO: u8 = 1;
const KIND_MESSAGE: u8 = 2;
const KIND_PB_MESSAGE: u8 = 3;
const KIND_HYBRID_MESSAGE: u8 = 4;
const KIND_ADDRESSES: u8 = 5;
/// How long a new connection may take to introduce itself.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Inbound peer connections held at once (a few per peer, to ride out reconnects).
const INBOUND_CONNECTIONS_MAX: usize = 64;

/// The first frame of every connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The sender's cluster.
    pub cluster_id: String,
    /// The sender.
    pub from: NodeId,
    /// The node the sender meant to reach.
    pub to: NodeId,
}

/// A frame that cannot be accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The frame is empty or of an unknown version.
    #[error("unknown frame version")]
    Version,
    /// The frame is not of the kind expected here.
    #[error("unexpected frame kind {0}")]
    Kind(u8),
    /// The body does not decode.
    #[error("malformed frame body: {0}")]
    Body(String),
}

fn encode_frame<T: Serialize>(kind: u8, body: &T) -> Result<Bytes, FrameError> {
    let encoded =
        postcard::to_allocvec(body).map_err(|error| FrameError::Body(error.to_string()))?;
    let mut frame = BytesMut::with_capacity(encoded.len() + 2);
    frame.put_u8(VERSION);
    frame.put_u8(kind);
    frame.put_slice(&encoded);
    Ok(frame.freeze())
}

fn decode_frame<T: for<'a> Deserialize<'a>>(kind: u8, frame: &[u8]) -> Result<T, FrameError> {
    match frame {
        [VERSION, found, body @ ..] if *found == kind => {
            postcard::from_bytes(body).map_err(|error| FrameError::Body(error.to_string()))
        }
        [VERSION, found, ..] => Err(FrameError::Kind(*found)),
        _ => Err(FrameError::Version),
    }
}

/// Encodes a hello frame.
///
/// # Errors
/// Never in practice; encoding into memory cannot fail for these types.
pub fn encode_hello(hello: &Hello) -> Result<Bytes, FrameError> {
    encode_frame(KIND_HELLO, hello)
}

/// Decodes a hello frame.
///
/// # Errors
/// [`FrameError`] if the frame is not a well-formed hello.
pub fn decode_hello(frame: &[u8]) -> Result<Hello, FrameError> {
    decode_frame(KIND_HELLO, frame)
}

/// Encodes a message frame (kind 2 for Raft, 3 for primary-backup, 4 for the hybrid's data
/// path, 5 for an address book).
///
/// # Errors
/// Never in practice.
pub fn encode_message(message: &PeerMessage) -> Result<Bytes, FrameError> {
    match message {
        PeerMessage::Raft(message) => encode_frame(KIND_MESSAGE, message),
        PeerMessage::Pb(message) => encode_frame(KIND_PB_MESSAGE, message),
        PeerMessage::Hybrid(message) => encode_frame(KIND_HYBRID_MESSAGE, message),
        PeerMessage::Addresses(book) => encode_frame(KIND_ADDRESSES, book),
    }
}

/// Decodes a message frame of any kind.
///
/// # Errors
/// [`FrameError`] if the frame is not a well-formed message.
pub fn decode_message(frame: &[u8]) -> Result<PeerMessage, FrameError> {
    match frame {
        [VERSION, KIND_PB_MESSAGE, ..] => decode_frame(KIND_PB_MESSAGE, frame).map(PeerMessage::Pb),
        [VERSION, KIND_HYBRID_MESSAGE, ..] => {
            decode_frame(KIND_HYBRID_MESSAGE, frame).map(PeerMessage::Hybrid)
        }
        [VERSION, KIND_ADDRESSES, ..] => {
            decode_frame(KIND_ADDRESSES, frame).map(PeerMessage::Addresses)
        }
        _ => decode_frame(KIND_MESSAGE, frame).map(PeerMessage::Raft),
    }
}

fn codec(frame_bytes_max: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(frame_bytes_max)
        .new_codec()
}

/// Who this node is, for the transport.
#[derive(Debug)]
pub struct Identity {
    /// The cluster.
    pub cluster_id: String,
    /// This node.
    pub me: NodeId,
    /// The other nodes and their peer addresses: the TOML's table, grown as the address
    /// book learns new members (a connection from a node not in it is refused).
    pub peers: std::sync::RwLock<BTreeMap<NodeId, SocketAddr>>,
    /// Accept connections from nodes not in `peers` (a node joining a running cluster knows
    /// no member until the leader's address book reaches it over such a connection).
    pub accept_unknown: bool,
    /// The largest frame accepted or sent.
    pub frame_bytes_max: usize,
}

/// Why a message was not queued for a peer. Every scheme retransmits, so the caller counts
/// the drop and goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    /// The peer's buffer is full: it is slow or unreachable.
    #[error("the peer's outgoing buffer is full")]
    Full,
    /// The message's frame is over the size limit (or does not encode).
    #[error("the message is over the frame size limit")]
    TooLarge,
    /// The link was closed (its peer left the address book, or the node is stopping).
    #[error("the link to the peer is closed")]
    Closed,
}

/// Bytes one call writes to a socket while it holds the link's lock, so that a sender
/// queueing a message never waits behind a long write; the link's task writes the rest.
const WRITE_BYTES_PER_CALL: usize = 4 << 20;

/// A buffer emptied with more capacity than this is replaced by a fresh one, so that a burst
/// (a snapshot's chunks) does not keep its memory for the life of the link.
const PENDING_CAPACITY_KEPT: usize = 1 << 20;

/// What the connection to one peer holds, behind one lock: the socket once connected, and
/// the encoded frames not yet written.
#[derive(Debug, Default)]
struct LinkState {
    /// The connection, once its hello went out; `None` while (re)connecting.
    stream: Option<Arc<TcpStream>>,
    /// Length-prefixed frames not yet written; the first may be partly written already.
    pending: BytesMut,
    /// The length (with its prefix) of each frame in `pending`, oldest first: the count
    /// bound counts these.
    frames: VecDeque<usize>,
    /// Bytes of the oldest frame already written.
    front_written: usize,
    /// The link's task waits for the socket to drain (so a sender that finds it full need
    /// not wake the task).
    task_awaits_socket: bool,
    /// The link was dropped: its task ends.
    closed: bool,
}

impl LinkState {
    /// Takes `written` bytes off the front of the buffer.
    fn consume(&mut self, written: usize) {
        self.pending.advance(written);
        self.front_written += written;
        while let Some(&length) = self.frames.front() {
            if self.front_written < length {
                break;
            }
            self.front_written -= length;
            self.frames.pop_front();
        }
        if self.pending.is_empty() && self.pending.capacity() > PENDING_CAPACITY_KEPT {
            self.pending = BytesMut::new();
        }
    }

    /// Forgets the connection and what was left to write on it (a partly written frame
    /// cannot continue on another connection; the protocols retransmit).
    fn detach(&mut self) {
        self.stream = None;
        self.pending = BytesMut::new();
        self.frames.clear();
        self.front_written = 0;
    }
}

#[derive(Debug)]
struct LinkShared {
    state: Mutex<LinkState>,
    /// Wakes the link's task: frames are left to write, the link closed, or a sender saw
    /// the connection fail.
    wake: Notify,
    frames_max: usize,
    bytes_max: usize,
    frame_bytes_max: usize,
}

/// A handle that queues messages for one peer and writes them out; clonable, so that a
/// storage thread can send the acknowledgements a write promises the moment it is durable.
#[derive(Clone, Debug)]
pub struct LinkSender {
    shared: Arc<LinkShared>,
}

/// The connection to one peer, owned by the driver: dropping it closes the connection and
/// ends its task (within about two seconds when the task is connecting).
///
/// Messages are encoded into one buffer per peer ([`LinkSender::queue`]) and written by
/// whoever calls [`LinkSender::flush`], with a non-blocking write on the caller's thread:
/// the driver flushes after each Ready, so a Ready's messages to a peer become one write
/// with no hand-off to another thread. What the socket does not take at once is written by
/// the link's task as the socket drains. The buffer is bounded in frames and bytes; while
/// the peer is unreachable, what was queued is dropped (the protocols send fresh messages).
#[derive(Debug)]
pub struct PeerLink {
    sender: LinkSender,
}

impl PeerLink {
    /// A sender for this link (for another thread).
    #[must_use]
    pub fn sender(&self) -> LinkSender {
        self.sender.clone()
    }

    /// Queues `message`; see [`LinkSender::queue`].
    ///
    /// # Errors
    /// [`Dropped`] when the message was not queued.
    pub fn queue(&self, message: &PeerMessage) -> Result<(), Dropped> {
        self.sender.queue(message)
    }

    /// Writes what is queued; see [`LinkSender::flush`].
    pub fn flush(&self) {
        self.sender.flush();
    }
}

impl Drop for PeerLink {
    fn drop(&mut self) {
        if let Ok(mut state) = self.sender.shared.state.lock() {
            state.closed = true;
            state.detach();
        }
        self.sender.shared.wake.notify_one();
    }
}

impl LinkSender {
    /// Encodes `message` into the peer's buffer, to go out at the next [`LinkSender::flush`].
    /// Never blocks on the network.
    ///
    /// # Errors
    /// [`Dropped::Full`] if the buffer holds its most frames or bytes, [`Dropped::TooLarge`]
    /// if the frame is over the size limit, [`Dropped::Closed`] if the link is closed. The
    /// message is not queued then.
    pub fn queue(&self, message: &PeerMessage) -> Result<(), Dropped> {
        let frame = encode_message(message).map_err(|_| Dropped::TooLarge)?;
        let shared = &*self.shared;
        if frame.len() > shared.frame_bytes_max {
            return Err(Dropped::TooLarge);
        }
        let length = u32::try_from(frame.len()).map_err(|_| Dropped::TooLarge)?;
        let mut state = shared.state.lock().map_err(|_| Dropped::Closed)?;
        if state.closed {
            return Err(Dropped::Closed);
        }
        if state.frames.len() >= shared.frames_max
            || state.pending.len() + 4 + frame.len() > shared.bytes_max
        {
            return Err(Dropped::Full);
        }
        state.pending.put_u32(length);
        state.pending.put_slice(&frame);
        state.frames.push_back(4 + frame.len());
        Ok(())
    }

    /// Writes as much of the buffer as the socket takes now, without blocking; the link's
    /// task writes the rest as the socket drains (or, while disconnected, after it
    /// reconnects).
    pub fn flush(&self) {
        let shared = &*self.shared;
        let Ok(mut state) = shared.state.lock() else {
            return;
        };
        if state.pending.is_empty() || state.stream.is_none() {
            // Nothing to write, or not connected: the task writes once it has connected.
            return;
        }
        let wake = match write_pending(&mut state) {
            WriteOutcome::Drained => false,
            // The task will hear the socket drain if it waits for that already.
            WriteOutcome::Blocked => !state.task_awaits_socket,
            WriteOutcome::Failed => true,
        };
        drop(state);
        if wake {
            shared.wake.notify_one();
        }
    }

    /// Whether both handles send on the same link.
    #[must_use]
    pub fn same_link(&self, other: &LinkSender) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

/// What one attempt to write a link's buffer came to.
enum WriteOutcome {
    /// Everything is written.
    Drained,
    /// The socket is full, or this call wrote its share: the rest waits.
    Blocked,
    /// The connection failed; it is detached and its unwritten frames dropped.
    Failed,
}

/// Writes the buffer to the connected socket until it is empty, the socket is full, or
/// [`WRITE_BYTES_PER_CALL`] went out.
fn write_pending(state: &mut LinkState) -> WriteOutcome {
    let Some(stream) = state.stream.clone() else {
        return WriteOutcome::Blocked;
    };
    let mut budget = WRITE_BYTES_PER_CALL;
    while !state.pending.is_empty() {
        if budget == 0 {
            return WriteOutcome::Blocked;
        }
        let chunk = state.pending.len().min(budget);
        match stream.try_write(&state.pending[..chunk]) {
            Ok(0) => {
                state.detach();
                return WriteOutcome::Failed;
            }
            Ok(written) => {
                state.consume(written);
                budget -= written;
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                return WriteOutcome::Blocked;
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => {
                state.detach();
                return WriteOutcome::Failed;
            }
        }
    }
    WriteOutcome::Drained
}

/// Opens the link to `peer` at `address`: a task (on `runtime`, or the current runtime)
/// keeps a connection to it, reconnecting with backoff. At most `frames_max` frames wait in
/// its buffer, and at most twice the frame size limit in bytes (at least 1 MiB).
///
/// # Panics
/// Without `runtime`, if called outside a tokio runtime.
#[must_use]
pub fn open_link(
    identity: Arc<Identity>,
    peer: NodeId,
    address: SocketAddr,
    frames_max: usize,
    runtime: Option<&tokio::runtime::Handle>,
) -> PeerLink {
    let shared = Arc::new(LinkShared {
        state: Mutex::new(LinkState::default()),
        wake: Notify::new(),
        frames_max: frames_max.max(1),
        bytes_max: identity.frame_bytes_max.saturating_mul(2).max(1 << 20),
        frame_bytes_max: identity.frame_bytes_max,
    });
    let task = run_outbound(identity, peer, address, shared.clone());
    match runtime {
        Some(handle) => drop(handle.spawn(task)),
        None => drop(tokio::spawn(task)),
    }
    PeerLink {
        sender: LinkSender { shared },
    }
}

/// Whether the link was closed (or its lock poisoned: nothing can use it then either).
fn closed(link: &LinkShared) -> bool {
    link.state.lock().map_or(true, |state| state.closed)
}

/// Keeps a connection to `peer` and writes what the senders could not.
async fn run_outbound(
    identity: Arc<Identity>,
    peer: NodeId,
    address: SocketAddr,
    link: Arc<LinkShared>,
) {
    let mut backoff = Duration::from_millis(20);
    let mut retry = false;
    loop {
        if retry {
            // While the peer is unreachable its buffer would only fill with stale
            // messages; drop them and try again later (or stop, if the link closes).
            if let Ok(mut state) = link.state.lock() {
                state.detach();
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = link.wake.notified() => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
        retry = true;
        if closed(&link) {
            return;
        }
        let connected = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(address));
        let Ok(Ok(mut stream)) = connected.await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let hello = Hello {
            cluster_id: identity.cluster_id.clone(),
            from: identity.me,
            to: peer,
        };
        let Ok(frame) = encode_hello(&hello) else {
            return;
        };
        let Ok(length) = u32::try_from(frame.len()) else {
            return;
        };
        let mut first = BytesMut::with_capacity(frame.len() + 4);
        first.put_u32(length);
        first.put_slice(&frame);
        if stream.write_all(&first).await.is_err() {
            continue;
        }
        tracing::debug!(%peer, %address, "connected to peer");
        let stream = Arc::new(stream);
        if let Ok(mut state) = link.state.lock() {
            if state.closed {
                return;
            }
            state.stream = Some(stream.clone());
        }
        if drain(&link, &stream).await {
            // It had carried frames: the peer was reachable, so try again soon.
            backoff = Duration::from_millis(20);
        }
        if closed(&link) {
            return;
        }
        tracing::debug!(%peer, "connection to peer lost");
    }
}

/// Writes what the senders left in the buffer whenever they wake the task or the socket
/// drains; returns when the connection is lost or the link closed, with whether anything
/// was written on the connection.
async fn drain(link: &LinkShared, stream: &Arc<TcpStream>) -> bool {
    let mut carried = false;
    loop {
        let outcome = {
            let Ok(mut state) = link.state.lock() else {
                return carried;
            };
            let ours = state
                .stream
                .as_ref()
                .is_some_and(|current| Arc::ptr_eq(current, stream));
            if state.closed || !ours {
                return carried;
            }
            let had = state.pending.len();
            let outcome = write_pending(&mut state);
            carried |= state.pending.len() < had;
            state.task_awaits_socket = matches!(outcome, WriteOutcome::Blocked);
            outcome
        };
        match outcome {
            WriteOutcome::Drained => link.wake.notified().await,
            WriteOutcome::Blocked => {
                tokio::select! {
                    ready = stream.writable() => {
                        if ready.is_err() {
                            if let Ok(mut state) = link.state.lock() {
                                state.detach();
                            }
                            return carried;
                        }
                    }
                    () = link.wake.notified() => {}
                }
            }
            WriteOutcome::Failed => return carried,
        }
    }
}

/// The connection to each peer, filled by the driver and written by it after each Ready
/// ([`flush_peers`]).
pub type Outboxes = BTreeMap<NodeId, PeerLink>;

/// Queues `message` for peer `to` without waiting; it leaves at the next [`flush_peers`]. A
/// full buffer means the peer is slow or unreachable; every scheme retransmits, so the
/// message is dropped (and counted) rather than letting the buffer grow. A message for an
/// unknown node is ignored.
pub fn send_to_peer(peers: &Outboxes, shared: &Shared, to: NodeId, message: &PeerMessage) {
    let Some(peer) = peers.get(&to) else {
        return;
    };
    if peer.queue(message).is_err() {
        shared.metrics.peer_messages_dropped.inc();
    }
}

/// Writes what is queued for every peer, without blocking (the rest is left to each link's
/// task).
pub fn flush_peers(peers: &Outboxes) {
    for peer in peers.values() {
        peer.flush();
    }
}

/// Accepts peers' connections and hands their messages to the driver.
///
/// # Errors
/// If the listener fails.
pub async fn run_inbound(
    listener: TcpListener,
    identity: Arc<Identity>,
    inputs: SyncSender<Input>,
    shared: Arc<Shared>,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(INBOUND_CONNECTIONS_MAX));
    loop {
        let (stream, address) = listener.accept().await?;
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%address, "too many peer connections; refusing one");
            continue;
        };
        let identity = identity.clone();
        let inputs = inputs.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(reason) = serve_peer(stream, &identity, &inputs).await {
                shared.metrics.peer_messages_refused.inc();
                tracing::warn!(%address, %reason, "closed a peer connection");
            }
            drop(permit);
        });
    }
}

async fn serve_peer(
    stream: TcpStream,
    identity: &Identity,
    inputs: &SyncSender<Input>,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let mut framed = Framed::new(stream, codec(identity.frame_bytes_max));
    let first = match tokio::time::timeout(HELLO_TIMEOUT, framed.next()).await {
        Ok(Some(Ok(frame))) => frame,
        Ok(Some(Err(error))) => return Err(format!("bad first frame: {error}")),
        Ok(None) => return Ok(()),
        Err(_) => return Err("no hello within the timeout".into()),
    };
    let hello = decode_hello(&first).map_err(|error| format!("bad hello: {error}"))?;
    if hello.cluster_id != identity.cluster_id {
        return Err(format!("foreign cluster {:?}", hello.cluster_id));
    }
    if hello.to != identity.me {
        return Err(format!("connection meant for {}", hello.to));
    }
    let known = identity
        .peers
        .read()
        .is_ok_and(|peers| peers.contains_key(&hello.from));
    if !known && !identity.accept_unknown {
        return Err(format!("unknown node {}", hello.from));
    }
    while let Some(frame) = framed.next().await {
        let frame = frame.map_err(|error| format!("bad frame from {}: {error}", hello.from))?;
        let message =
            decode_message(&frame).map_err(|error| format!("from {}: {error}", hello.from))?;
        // A full driver queue drops the message; the protocols retransmit.
        if offer(
            inputs,
            Input::Peer {
                from: hello.from,
                message,
            },
        ) == Err(RequestError::Stopped)
        {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_core::Term;
    use chorus_raft::{Message, RequestVote};

    #[test]
    fn frames_round_trip_and_refuse_the_wrong_kind_or_version() {
        let hello = Hello {
            cluster_id: "c".into(),
            from: NodeId(1),
            to: NodeId(2),
        };
        let frame = encode_hello(&hello).unwrap();
        assert_eq!(decode_hello(&frame).unwrap(), hello);
        assert_eq!(
            decode_message(&frame).unwrap_err(),
            FrameError::Kind(KIND_HELLO)
        );
        let message = PeerMessage::Raft(Message::RequestVote(RequestVote {
            term: Term(3),
            last_log_index: chorus_core::LogIndex(9),
            last_log_term: Term(2),
            pre_vote: false,
            transfer: false,
        }));
        let frame = encode_message(&message).unwrap();
        assert_eq!(frame[1], KIND_MESSAGE);
        assert_eq!(decode_message(&frame).unwrap(), message);
        let pb = PeerMessage::Pb(chorus_pb::Message::Ping {
            view: chorus_pb::ViewNumber(4),
        });
        let frame = encode_message(&pb).unwrap();
        assert_eq!(frame[1], KIND_PB_MESSAGE);
        assert_eq!(decode_message(&frame).unwrap(), pb);
        assert_eq!(decode_message(&[9, 2, 0]).unwrap_err(), FrameError::Version);
        assert_eq!(decode_message(&[]).unwrap_err(), FrameError::Version);
        assert!(matches!(
            decode_message(&[VERSION, KIND_MESSAGE, 0xff, 0xff]),
            Err(FrameError::Body(_))
        ));
    }

    fn identity(frame_bytes_max: usize) -> Arc<Identity> {
        Arc::new(Identity {
            cluster_id: "c".into(),
            me: NodeId(1),
            peers: std::sync::RwLock::new(BTreeMap::new()),
            accept_unknown: false,
            frame_bytes_max,
        })
    }

    fn ping(view: u64) -> PeerMessage {
        PeerMessage::Pb(chorus_pb::Message::Ping {
            view: chorus_pb::ViewNumber(view),
        })
    }

    fn view_of(frame: &[u8]) -> u64 {
        match decode_message(frame).unwrap() {
            PeerMessage::Pb(chorus_pb::Message::Ping { view }) => view.0,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    /// An address book of `entries` entries whose first id is `first` (about 20 bytes an
    /// entry encoded).
    fn address_book(first: u64, entries: u64) -> PeerMessage {
        let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        PeerMessage::Addresses(
            (first..first + entries)
                .map(|id| super::super::boundary::MemberAddress {
                    id: NodeId(id),
                    peer: at(1000),
                    redis: Some(at(1001)),
                    admin: at(1002),
                })
                .collect(),
        )
    }

    /// Queues `message`, waiting (up to a bound) while the buffer is full, and calling
    /// `on_full` each time it finds it full.
    fn queue_patiently(link: &PeerLink, message: &PeerMessage, on_full: &mut dyn FnMut()) {
        let started = std::time::Instant::now();
        while link.queue(message) == Err(Dropped::Full) {
            on_full();
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the buffer never drains"
            );
            link.flush();
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Frames written from a plain thread (as the driver and the storage thread write) while
    /// the peer does not read, so the socket and then the buffer fill, and the link's task
    /// writes the rest once it reads: every frame arrives whole and in order, after the
    /// hello.
    #[test]
    fn frames_from_a_plain_thread_arrive_whole_and_in_order_past_a_full_socket() {
        const FRAMES: u64 = 200_000;
        let runtime = runtime();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let address = listener.local_addr().unwrap();
        let link = open_link(
            identity(1 << 20),
            NodeId(2),
            address,
            1_000_000,
            Some(runtime.handle()),
        );
        let full = Arc::new(Notify::new());
        let reader_full = full.clone();
        let reader = runtime.spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut framed = Framed::new(stream, codec(1 << 20));
            let hello = decode_hello(&framed.next().await.unwrap().unwrap()).unwrap();
            assert_eq!((hello.from, hello.to), (NodeId(1), NodeId(2)));
            // Read nothing until the writer found the buffer full.
            reader_full.notified().await;
            for next in 0..FRAMES {
                let frame = framed.next().await.unwrap().unwrap();
                match decode_message(&frame).unwrap() {
                    PeerMessage::Addresses(book) => assert_eq!(book[0].id, NodeId(next)),
                    other => panic!("unexpected {other:?}"),
                }
            }
        });
        let mut filled = false;
        let mut on_full = || {
            if !filled {
                filled = true;
                full.notify_one();
            }
        };
        for view in 0..FRAMES {
            queue_patiently(&link, &address_book(view, 4), &mut on_full);
            if view % 1000 == 999 {
                link.flush();
            }
        }
        link.flush();
        // Some 16 MB in all: more than the socket and the 2 MiB buffer hold.
        assert!(filled, "the socket and the buffer filled");
        runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(60), reader).await })
            .expect("every frame arrives within the bound")
            .unwrap();
    }

    /// A peer that hangs up while the socket is full (so a frame is almost surely half
    /// written): the link reconnects, and the new connection starts with a hello and whole
    /// frames, in order.
    #[test]
    fn after_the_peer_hangs_up_the_link_reconnects_at_a_frame_boundary() {
        let runtime = runtime();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let address = listener.local_addr().unwrap();
        let link = open_link(
            identity(1 << 20),
            NodeId(2),
            address,
            100_000,
            Some(runtime.handle()),
        );
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let full = Arc::new(Notify::new());
        let (reader_done, reader_full) = (done.clone(), full.clone());
        let reader = runtime.spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut framed = Framed::new(stream, codec(1 << 20));
            decode_hello(&framed.next().await.unwrap().unwrap()).unwrap();
            // Hang up once the writer found the buffer full (the socket is full then).
            reader_full.notified().await;
            drop(framed);
            let (stream, _) = listener.accept().await.unwrap();
            let mut framed = Framed::new(stream, codec(1 << 20));
            decode_hello(&framed.next().await.unwrap().unwrap()).unwrap();
            let mut last = None;
            for _ in 0..1000 {
                let frame = framed.next().await.unwrap().unwrap();
                let PeerMessage::Addresses(book) = decode_message(&frame).unwrap() else {
                    panic!("not an address book");
                };
                assert_eq!(book.len(), 40, "a whole frame");
                let first = book[0].id.0;
                assert!(last < Some(first), "in order: {first} after {last:?}");
                last = Some(first);
            }
            reader_done.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let started = std::time::Instant::now();
        let mut view = 0;
        let mut filled = false;
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            assert!(started.elapsed() < Duration::from_secs(30), "no reconnect");
            // Frames of about 800 bytes: a write ends inside one more often than not.
            match link.queue(&address_book(view, 40)) {
                Err(Dropped::Full) if !filled => {
                    filled = true;
                    full.notify_one();
                }
                _ => {}
            }
            view += 1;
            if view % 64 == 0 {
                link.flush();
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        runtime.block_on(reader).unwrap();
    }

    /// The buffer holds at most `frames_max` frames and its byte bound, and no frame over
    /// the size limit; a closed link takes nothing.
    #[test]
    fn the_buffer_is_bounded_in_frames_and_bytes_and_refuses_oversized_frames() {
        // A runtime never driven: the link's task never runs, so nothing drains the buffer.
        let idle = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let link = open_link(
            identity(64),
            NodeId(2),
            "127.0.0.1:9".parse().unwrap(),
            3,
            Some(idle.handle()),
        );
        for view in 0..3 {
            assert_eq!(link.queue(&ping(view)), Ok(()));
        }
        assert_eq!(link.queue(&ping(3)), Err(Dropped::Full));
        assert_eq!(link.queue(&address_book(0, 8)), Err(Dropped::TooLarge));
        // Bytes: frames of about 16 KiB against a bound of 1 MiB (twice the frame limit,
        // at least 1 MiB), with room for many more frames than that.
        let link = open_link(
            identity(32 << 10),
            NodeId(2),
            "127.0.0.1:9".parse().unwrap(),
            1_000_000,
            Some(idle.handle()),
        );
        let big = address_book(0, 800);
        let mut queued = 0usize;
        while link.queue(&big).is_ok() {
            queued += 1;
            assert!(queued < 1000, "the byte bound holds");
        }
        assert_eq!(link.queue(&big), Err(Dropped::Full));
        let frame = encode_message(&big).unwrap().len() + 4;
        assert_eq!(queued, (1 << 20) / frame, "as many as fit in 1 MiB");
        let sender = link.sender();
        drop(link);
        assert_eq!(sender.queue(&ping(0)), Err(Dropped::Closed));
    }

    /// Dropping a link closes its connection: the peer reads the end of the stream.
    #[test]
    fn dropping_a_link_closes_its_connection() {
        let runtime = runtime();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let address = listener.local_addr().unwrap();
        let link = open_link(
            identity(1 << 20),
            NodeId(2),
            address,
            100,
            Some(runtime.handle()),
        );
        link.queue(&ping(7)).unwrap();
        link.flush();
        let ended = runtime.block_on(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut framed = Framed::new(stream, codec(1 << 20));
            decode_hello(&framed.next().await.unwrap().unwrap()).unwrap();
            assert_eq!(view_of(&framed.next().await.unwrap().unwrap()), 7);
            drop(link);
            tokio::time::timeout(Duration::from_secs(10), framed.next()).await
        });
        assert!(matches!(ended, Ok(None)), "the connection ends: {ended:?}");
    }

    #[test]
    fn garbage_never_panics_the_decoder() {
        let mut rng = chorus_core::Prng::new(5);
        for _ in 0..5000 {
            let len = rng.index(64);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if rng.chance(0.5) && bytes.len() >= 2 {
                bytes[0] = VERSION;
                bytes[1] = [
                    KIND_MESSAGE,
                    KIND_PB_MESSAGE,
                    KIND_HYBRID_MESSAGE,
                    KIND_ADDRESSES,
                ][rng.index(4)];
            }
            let _ = decode_message(&bytes);
            let _ = decode_hello(&bytes);
        }
    }
}
