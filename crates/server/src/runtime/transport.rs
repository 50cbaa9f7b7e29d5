//! TCP between nodes: one outbound connection per peer, reconnecting with backoff, and a
//! listener for the peers' connections to us.
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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::time::Duration;

use bytes::Bytes;
use chorus_core::NodeId;
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
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
    let error = |error: postcard::Error| FrameError::Body(error.to_string());
    // Sized first, then written once into a buffer of exactly that size: a buffer grown from
    // empty is moved several times for an AppendEntries that carries a batch, and was then
    // copied once more behind the header (`transport` in benches/transport.rs).
    let size = postcard::serialize_with_flavor(body, postcard::ser_flavors::Size::default())
        .map_err(error)?;
    let mut frame = Vec::with_capacity(2 + size);
    frame.push(VERSION);
    frame.push(kind);
    let frame = postcard::to_extend(body, frame).map_err(error)?;
    Ok(Bytes::from(frame))
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

/// Keeps a connection to `peer` and sends it every message queued in `outbox`.
pub async fn run_outbound(
    identity: Arc<Identity>,
    peer: NodeId,
    address: SocketAddr,
    mut outbox: mpsc::Receiver<PeerMessage>,
) {
    let mut backoff = Duration::from_millis(20);
    loop {
        let stream =
            match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(address)).await {
                Ok(Ok(stream)) => stream,
                _ => {
                    // While the peer is unreachable its queue would only fill with stale
                    // messages; drop them (the protocols send fresh ones) and try again later.
                    while outbox.try_recv().is_ok() {}
                    if outbox.is_closed() {
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
        let _ = stream.set_nodelay(true);
        let mut framed = Framed::new(stream, codec(identity.frame_bytes_max));
        let hello = Hello {
            cluster_id: identity.cluster_id.clone(),
            from: identity.me,
            to: peer,
        };
        let Ok(frame) = encode_hello(&hello) else {
            return;
        };
        if framed.send(frame).await.is_err() {
            continue;
        }
        backoff = Duration::from_millis(20);
        tracing::debug!(%peer, %address, "connected to peer");
        loop {
            let Some(message) = outbox.recv().await else {
                return;
            };
            let mut failed = feed(&mut framed, &message).await;
            // Coalesce whatever else is queued into one write.
            while !failed {
                match outbox.try_recv() {
                    Ok(message) => failed = feed(&mut framed, &message).await,
                    Err(_) => break,
                }
            }
            if failed || SinkExt::<Bytes>::flush(&mut framed).await.is_err() {
                tracing::debug!(%peer, "connection to peer lost");
                break;
            }
        }
    }
}

async fn feed(framed: &mut Framed<TcpStream, LengthDelimitedCodec>, message: &PeerMessage) -> bool {
    match encode_message(message) {
        Ok(frame) => framed.feed(frame).await.is_err(),
        Err(_) => false,
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
