//! One RESP connection shared by several benchmark clients, with their requests pipelined.
//!
//! A real application often keeps fewer connections than requests in flight: a connection
//! pool with a pipelining client (redis-rs's multiplexed connection, a gRPC channel) sends a
//! request as soon as a caller has one and matches the replies, which RESP returns in the
//! order of the requests, to the callers in that order. [`SharedResp`] is that client: one
//! task owns the socket; each of the `in_flight` benchmark clients that share it hands it a
//! request and waits for its reply, so the connection carries up to `in_flight` requests at
//! once while every client still runs its own closed loop (and its own latency accounting).
//!
//! The bookkeeping is [`InFlight`], a bounded first-in first-out queue of the callers whose
//! requests are on the wire; it is pure and tested on its own. Invariants: a reply always
//! goes to the oldest unanswered request; at most `in_flight` requests are on the wire; when
//! the connection fails, times out or sends a reply nobody asked for, every caller still
//! waiting gets an error that says its request was sent (it may have taken effect), and the
//! next request opens a new connection to the next endpoint.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chorus_resp::{Frame, Limits, encode_request, parse_reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// The most requests one shared connection keeps in flight.
pub const IN_FLIGHT_MAX: usize = 1024;

/// Why a pipelined request got no reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PipeError {
    /// True if the request was written to a connection (it may have taken effect).
    pub sent: bool,
    /// What went wrong.
    pub message: String,
}

/// The callers whose requests are on the wire, oldest first, at most `max` of them; each
/// with a deadline (of any type, so that tests need no clock).
#[derive(Debug)]
pub struct InFlight<W, D> {
    waiting: VecDeque<(W, D)>,
    max: usize,
}

impl<W, D> InFlight<W, D> {
    /// An empty queue for at most `max` requests.
    ///
    /// # Panics
    /// If `max` is 0 or above [`IN_FLIGHT_MAX`].
    #[must_use]
    pub fn new(max: usize) -> InFlight<W, D> {
        assert!(
            (1..=IN_FLIGHT_MAX).contains(&max),
            "invariant: 1 <= in flight <= {IN_FLIGHT_MAX}"
        );
        InFlight {
            waiting: VecDeque::with_capacity(max),
            max,
        }
    }

    /// Requests on the wire.
    #[must_use]
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether no request is on the wire.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Whether another request may be sent.
    #[must_use]
    pub fn has_room(&self) -> bool {
        self.waiting.len() < self.max
    }

    /// Records a request just sent.
    ///
    /// # Errors
    /// The waiter back, when `max` requests are already on the wire.
    pub fn sent(&mut self, waiter: W, deadline: D) -> Result<(), W> {
        if !self.has_room() {
            return Err(waiter);
        }
        self.waiting.push_back((waiter, deadline));
        Ok(())
    }

    /// The caller a reply that just arrived belongs to: the oldest one. `None` when no
    /// request is on the wire (the server sent a reply nobody asked for).
    pub fn answered(&mut self) -> Option<W> {
        self.waiting.pop_front().map(|(waiter, _)| waiter)
    }

    /// The deadline of the oldest request, the first to expire.
    #[must_use]
    pub fn oldest_deadline(&self) -> Option<&D> {
        self.waiting.front().map(|(_, deadline)| deadline)
    }

    /// Every caller still waiting, oldest first, when the connection is lost.
    pub fn fail_all(&mut self) -> Vec<W> {
        self.waiting.drain(..).map(|(waiter, _)| waiter).collect()
    }
}

/// One request handed to the connection's task.
struct Request {
    arguments: Vec<Bytes>,
    reply: oneshot::Sender<Result<Frame, PipeError>>,
}

/// A handle on a shared, pipelined RESP connection; clone it for every client that shares
/// the connection. The connection's task ends when the last handle is dropped.
#[derive(Clone, Debug)]
pub struct SharedResp {
    requests: mpsc::Sender<Request>,
}

impl SharedResp {
    /// Connects to `endpoints[first]` and starts the task that owns the connection; it
    /// carries up to `in_flight` requests at once, and gives up on a reply after `timeout`.
    ///
    /// # Errors
    /// When the first connection cannot be made (later failures reconnect, to the next
    /// endpoint, on the next request), or `in_flight` is out of range.
    pub async fn connect(
        endpoints: Vec<SocketAddr>,
        first: usize,
        in_flight: usize,
        timeout: Duration,
    ) -> anyhow::Result<SharedResp> {
        anyhow::ensure!(!endpoints.is_empty(), "no endpoints");
        anyhow::ensure!(
            (1..=IN_FLIGHT_MAX).contains(&in_flight),
            "requests in flight per connection must be between 1 and {IN_FLIGHT_MAX}"
        );
        let address = endpoints[first % endpoints.len()];
        let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
            .await
            .map_err(|_| anyhow::anyhow!("cannot connect to {address} in time"))?
            .map_err(|error| anyhow::anyhow!("cannot connect to {address}: {error}"))?;
        let _ = stream.set_nodelay(true);
        let (requests, receiver) = mpsc::channel(in_flight);
        let task = Mux {
            endpoints,
            next: first,
            stream: Some(stream),
            read: BytesMut::with_capacity(4096),
            write: BytesMut::with_capacity(4096),
            in_flight: InFlight::new(in_flight),
            timeout,
        };
        tokio::spawn(task.run(receiver));
        Ok(SharedResp { requests })
    }

    /// Sends one request on the shared connection and waits for its reply (an error reply
    /// is a reply).
    ///
    /// # Errors
    /// [`PipeError`] when no reply came, saying whether the request was sent.
    pub async fn request(&self, arguments: Vec<Bytes>) -> Result<Frame, PipeError> {
        let (reply, answer) = oneshot::channel();
        let gone = || PipeError {
            sent: false,
            message: "the shared connection's task is gone".into(),
        };
        self.requests
            .send(Request { arguments, reply })
            .await
            .map_err(|_| gone())?;
        answer.await.unwrap_or_else(|_| {
            Err(PipeError {
                sent: true,
                message: "the shared connection's task dropped the request".into(),
            })
        })
    }
}

/// The task that owns a shared connection.
struct Mux {
    endpoints: Vec<SocketAddr>,
    next: usize,
    stream: Option<TcpStream>,
    read: BytesMut,
    write: BytesMut,
    in_flight: InFlight<oneshot::Sender<Result<Frame, PipeError>>, Instant>,
    timeout: Duration,
}

impl Mux {
    async fn run(mut self, mut receiver: mpsc::Receiver<Request>) {
        loop {
            let deadline = self
                .in_flight
                .oldest_deadline()
                .copied()
                .unwrap_or_else(|| Instant::now() + self.timeout);
            let reading = self.stream.is_some() && !self.in_flight.is_empty();
            let room = self.in_flight.has_room();
            tokio::select! {
                request = receiver.recv(), if room => {
                    let Some(request) = request else { return };
                    self.send(request, &mut receiver).await;
                }
                read = read_some(&mut self.stream, &mut self.read), if reading => {
                    match read {
                        Ok(()) => self.deliver(),
                        Err(message) => self.lose_connection(&message),
                    }
                }
                () = tokio::time::sleep_until(deadline), if !self.in_flight.is_empty() => {
                    self.lose_connection("no reply in time");
                }
            }
        }
    }

    /// Writes `first` and whatever other requests are already queued (up to the room left)
    /// in one write, as a pipelining client does.
    async fn send(&mut self, first: Request, receiver: &mut mpsc::Receiver<Request>) {
        if self.stream.is_none() {
            let address = self.endpoints[self.next % self.endpoints.len()];
            let connected = tokio::time::timeout(self.timeout, TcpStream::connect(address)).await;
            match connected {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    self.read.clear();
                    self.stream = Some(stream);
                }
                Ok(Err(error)) => {
                    self.next = (self.next + 1) % self.endpoints.len();
                    let _ = first.reply.send(Err(PipeError {
                        sent: false,
                        message: format!("cannot connect to {address}: {error}"),
                    }));
                    return;
                }
                Err(_) => {
                    self.next = (self.next + 1) % self.endpoints.len();
                    let _ = first.reply.send(Err(PipeError {
                        sent: false,
                        message: format!("cannot connect to {address} in time"),
                    }));
                    return;
                }
            }
        }
        self.write.clear();
        let deadline = Instant::now() + self.timeout;
        let mut request = Some(first);
        while let Some(Request { arguments, reply }) = request.take() {
            encode_request(&arguments, &mut self.write);
            let taken = self.in_flight.sent(reply, deadline);
            assert!(
                taken.is_ok(),
                "invariant: a request is taken only when there is room"
            );
            if self.in_flight.has_room() {
                request = receiver.try_recv().ok();
            }
        }
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        if let Err(error) = stream.write_all(&self.write).await {
            self.lose_connection(&error.to_string());
        }
    }

    /// Hands every complete reply in the read buffer to its caller.
    fn deliver(&mut self) {
        loop {
            match parse_reply(&mut self.read, &Limits::default()) {
                Ok(Some(frame)) => match self.in_flight.answered() {
                    Some(waiter) => {
                        let _ = waiter.send(Ok(frame));
                    }
                    None => {
                        self.lose_connection("a reply to no request");
                        return;
                    }
                },
                Ok(None) => return,
                Err(error) => {
                    self.lose_connection(&format!("a malformed reply: {error}"));
                    return;
                }
            }
        }
    }

    /// Drops the connection and fails every request on it; the next request reconnects to
    /// the next endpoint.
    fn lose_connection(&mut self, message: &str) {
        let address = self.endpoints[self.next % self.endpoints.len()];
        self.stream = None;
        self.read.clear();
        self.next = (self.next + 1) % self.endpoints.len();
        for waiter in self.in_flight.fail_all() {
            let _ = waiter.send(Err(PipeError {
                sent: true,
                message: format!("{address}: {message}"),
            }));
        }
    }
}

/// Reads what the socket has into `buffer`; an error (or the server closing) as a message.
async fn read_some(stream: &mut Option<TcpStream>, buffer: &mut BytesMut) -> Result<(), String> {
    let Some(stream) = stream.as_mut() else {
        return Err("no connection".into());
    };
    match stream.read_buf(buffer).await {
        Ok(0) => Err("the server closed the connection".into()),
        Ok(_) => Ok(()),
        Err(error) => Err(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_go_to_requests_in_the_order_they_were_sent() {
        let mut in_flight = InFlight::new(4);
        for request in ["a", "b", "c"] {
            in_flight.sent(request, 0u32).expect("room");
        }
        assert_eq!(in_flight.answered(), Some("a"));
        in_flight.sent("d", 1).expect("room");
        assert_eq!(in_flight.answered(), Some("b"));
        assert_eq!(in_flight.answered(), Some("c"));
        assert_eq!(in_flight.answered(), Some("d"));
        // A reply nobody asked for belongs to no one.
        assert_eq!(in_flight.answered(), None);
        assert!(in_flight.is_empty());
    }

    #[test]
    fn no_more_than_the_bound_are_in_flight() {
        let mut in_flight = InFlight::new(2);
        in_flight.sent(1, ()).expect("room");
        in_flight.sent(2, ()).expect("room");
        assert!(!in_flight.has_room());
        assert_eq!(in_flight.sent(3, ()), Err(3));
        assert_eq!(in_flight.len(), 2);
        assert_eq!(in_flight.answered(), Some(1));
        assert!(in_flight.has_room());
    }

    #[test]
    fn a_lost_connection_fails_every_waiting_request_oldest_first() {
        let mut in_flight = InFlight::new(8);
        for (request, deadline) in [(1, 10u64), (2, 20), (3, 30)] {
            in_flight.sent(request, deadline).expect("room");
        }
        // The oldest request is the first to time out.
        assert_eq!(in_flight.oldest_deadline(), Some(&10));
        assert_eq!(in_flight.fail_all(), vec![1, 2, 3]);
        assert!(in_flight.is_empty());
        assert_eq!(in_flight.oldest_deadline(), None);
    }

    #[test]
    #[should_panic(expected = "invariant")]
    fn an_empty_window_is_refused() {
        let _ = InFlight::<(), ()>::new(0);
    }
}
