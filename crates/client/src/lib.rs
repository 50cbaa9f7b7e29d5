//! The native Rust client of Chorus.
//!
//! A [`Client`] talks to any node of a cluster (followers forward writes to the leader and
//! serve linearizable reads through ReadIndex), fails over to the next node when one is slow,
//! unreachable or without a leader, and retries with backoff. Writes go through a **session**:
//! the client registers once, then tags each request with its session id and a sequence
//! number, and a retried request keeps its number, so the cluster applies it exactly once no
//! matter how many times it was sent. When the client gives up it says whether the write
//! definitely did not happen ([`ClientError::Unavailable`]) or may have
//! ([`ClientError::Indefinite`]); it never reports an indefinite outcome as a failure.
//!
//! On the wire the client speaks RESP, with three commands of Chorus's own:
//! `CHORUS.REGISTER`, `CHORUS.COMMAND <encoded command>` and `CHORUS.QUERY <encoded query>`,
//! each answered with an encoded [`chorus_kv::Response`] as a bulk string, or an error whose
//! first word says what happened: `UNAVAILABLE` and `BUSY` (nothing was proposed), `TIMEOUT`
//! (proposed, outcome unknown), and, under primary-backup, `MOVED 0 <host:port>` from a server
//! that is not the primary (nothing was proposed; the primary takes clients at that address).
//! The client remembers the node that last answered and goes on with it; after a `MOVED` it
//! tries the named node next, at once, even if it was not among the endpoints given.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chorus_kv::{ClientId, Command, KvError, Op, Query, Response};
use chorus_resp::{Frame, Limits, encode_request, parse_reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

/// How a client behaves.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The nodes' RESP addresses; the client starts with the first and moves on when needed.
    pub endpoints: Vec<SocketAddr>,
    /// How long one attempt may take before the client tries another node.
    pub attempt_timeout: Duration,
    /// How long one call may take, all retries included.
    pub call_timeout: Duration,
    /// The first pause between attempts; it doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// The longest pause between attempts.
    pub backoff_max: Duration,
}

impl ClientConfig {
    /// Defaults for `endpoints`: 2 s per attempt, 10 s per call, backoff from 10 ms to 500 ms.
    #[must_use]
    pub fn new(endpoints: Vec<SocketAddr>) -> ClientConfig {
        ClientConfig {
            endpoints,
            attempt_timeout: Duration::from_secs(2),
            call_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(500),
        }
    }
}

/// Why a call did not return an answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClientError {
    /// No endpoints were given.
    #[error("no endpoints")]
    NoEndpoints,
    /// Every attempt was refused before anything was proposed: the request did not happen.
    #[error("the cluster is unavailable: {0}")]
    Unavailable(String),
    /// The request was sent and may or may not have taken effect (the client gave up while it
    /// was in flight).
    #[error("the outcome is unknown: {0}")]
    Indefinite(String),
    /// The cluster answered with something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The state machine refused the request; it had no effect.
    #[error("refused: {0}")]
    Refused(KvError),
}

/// Endpoints learned from redirects are added to the configured ones, up to this many in all.
const ENDPOINTS_MAX: usize = 64;

/// What one attempt came to.
enum Attempt {
    Answered(Response),
    /// Nothing was proposed; try elsewhere.
    Refused(String),
    /// Nothing was proposed; the node named the one to try next.
    Moved(SocketAddr, String),
    /// It may have been proposed; try elsewhere (same sequence number).
    Unknown(String),
    /// The node refused the request itself (it is malformed): retrying cannot help.
    Failed(ClientError),
}

struct Connection {
    stream: TcpStream,
    buffer: BytesMut,
}

/// A client of a Chorus cluster. One call at a time (`&mut self`); use several clients for
/// concurrency.
pub struct Client {
    config: ClientConfig,
    endpoint: usize,
    connection: Option<Connection>,
    session: Option<ClientId>,
    seq: u64,
    limits: Limits,
}

impl Client {
    /// A client of the nodes at `config.endpoints`. It connects on first use.
    ///
    /// # Errors
    /// [`ClientError::NoEndpoints`] if the list is empty.
    pub fn new(config: ClientConfig) -> Result<Client, ClientError> {
        if config.endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        Ok(Client {
            config,
            endpoint: 0,
            connection: None,
            session: None,
            seq: 0,
            limits: Limits::default(),
        })
    }

    /// The session this client uses for writes, once registered.
    #[must_use]
    pub fn session(&self) -> Option<ClientId> {
        self.session
    }

    /// Reads a key.
    ///
    /// # Errors
    /// See [`Client::query`].
    pub async fn get(&mut self, key: impl Into<Bytes>) -> Result<Option<Bytes>, ClientError> {
        match self.query(Query::Get { key: key.into() }).await? {
            Response::Value(value) => Ok(value),
            other => Err(unexpected(&other)),
        }
    }

    /// Sets a key.
    ///
    /// # Errors
    /// See [`Client::execute`].
    pub async fn put(
        &mut self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<(), ClientError> {
        match self
            .execute(Op::Put {
                key: key.into(),
                value: value.into(),
            })
            .await?
        {
            Response::Ok => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Removes a key; returns whether it existed.
    ///
    /// # Errors
    /// See [`Client::execute`].
    pub async fn delete(&mut self, key: impl Into<Bytes>) -> Result<bool, ClientError> {
        match self.execute(Op::Delete { key: key.into() }).await? {
            Response::Deleted(existed) => Ok(existed),
            other => Err(unexpected(&other)),
        }
    }

    /// Appends to a key; returns the new length.
    ///
    /// # Errors
    /// See [`Client::execute`].
    pub async fn append(
        &mut self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<u64, ClientError> {
        match self
            .execute(Op::Append {
                key: key.into(),
                value: value.into(),
            })
            .await?
        {
            Response::Length(length) => Ok(length),
            other => Err(unexpected(&other)),
        }
    }

    /// Sets `key` to `to` if it exists and equals `from`; returns whether it swapped.
    ///
    /// # Errors
    /// See [`Client::execute`].
    pub async fn cas(
        &mut self,
        key: impl Into<Bytes>,
        from: impl Into<Bytes>,
        to: impl Into<Bytes>,
    ) -> Result<bool, ClientError> {
        match self
            .execute(Op::Cas {
                key: key.into(),
                from: from.into(),
                to: to.into(),
            })
            .await?
        {
            Response::Swapped(swapped) => Ok(swapped),
            other => Err(unexpected(&other)),
        }
    }

    /// Runs a read-only query, linearizably.
    ///
    /// # Errors
    /// [`ClientError::Unavailable`] if no node could answer in time (reads have no effect, so
    /// there is nothing indefinite about them), [`ClientError::Protocol`] on a bad answer.
    pub async fn query(&mut self, query: Query) -> Result<Response, ClientError> {
        let arguments = [Bytes::from_static(b"CHORUS.QUERY"), query.encode()];
        match self.call(&arguments).await {
            Err(ClientError::Indefinite(reason)) => Err(ClientError::Unavailable(reason)),
            other => other,
        }
    }

    /// Applies an operation exactly once, through this client's session (opened on first use).
    ///
    /// # Errors
    /// [`ClientError::Unavailable`] if it definitely did not happen,
    /// [`ClientError::Indefinite`] if it may have, [`ClientError::Refused`] if the state
    /// machine refused it.
    pub async fn execute(&mut self, op: Op) -> Result<Response, ClientError> {
        let client = match self.session {
            Some(client) => client,
            None => self.register().await?,
        };
        self.seq += 1;
        let command = Command::Request {
            client,
            seq: self.seq,
            op,
        };
        let arguments = [Bytes::from_static(b"CHORUS.COMMAND"), command.encode()];
        match self.call(&arguments).await? {
            Response::Error(KvError::UnknownSession) => {
                // The session expired; whether this request ran cannot be known.
                self.session = None;
                Err(ClientError::Indefinite("the session expired".into()))
            }
            Response::Error(error) => Err(ClientError::Refused(error)),
            response => Ok(response),
        }
    }

    async fn register(&mut self) -> Result<ClientId, ClientError> {
        let arguments = [Bytes::from_static(b"CHORUS.REGISTER")];
        // A register that may have happened leaves at worst an unused session, which expires.
        let response = match self.call(&arguments).await {
            Err(ClientError::Indefinite(reason)) => return Err(ClientError::Unavailable(reason)),
            other => other?,
        };
        match response {
            Response::Registered(client) => {
                self.session = Some(client);
                self.seq = 0;
                Ok(client)
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Sends one request until some node answers it or the call times out, moving to the next
    /// node after each failed attempt.
    async fn call(&mut self, arguments: &[Bytes]) -> Result<Response, ClientError> {
        let deadline = Instant::now() + self.config.call_timeout;
        let mut backoff = self.config.backoff_min;
        let mut maybe_happened = false;
        let mut redirected = false;
        loop {
            let attempt = timeout(self.config.attempt_timeout, self.attempt(arguments)).await;
            let outcome = match attempt {
                Ok(outcome) => outcome,
                Err(_) => {
                    self.connection = None;
                    Attempt::Unknown(format!("no answer from {} in time", self.current()))
                }
            };
            let last_reason = match outcome {
                Attempt::Answered(response) => return Ok(response),
                Attempt::Failed(error) => return Err(error),
                Attempt::Moved(address, reason) => {
                    self.connection = None;
                    // Follow a redirect at once, but not two in a row without a pause: two
                    // servers that disagree about the primary would otherwise be asked in a
                    // tight loop until the view service settles it.
                    let follow_now = !redirected && Instant::now() < deadline;
                    redirected = true;
                    self.endpoint = self.endpoint_index(address);
                    if follow_now {
                        continue;
                    }
                    if Instant::now() + backoff >= deadline {
                        return Err(if maybe_happened {
                            ClientError::Indefinite(reason)
                        } else {
                            ClientError::Unavailable(reason)
                        });
                    }
                    sleep(backoff).await;
                    backoff = (backoff * 2).min(self.config.backoff_max);
                    continue;
                }
                Attempt::Refused(reason) => reason,
                Attempt::Unknown(reason) => {
                    maybe_happened = true;
                    reason
                }
            };
            redirected = false;
            if Instant::now() + backoff >= deadline {
                return Err(if maybe_happened {
                    ClientError::Indefinite(last_reason)
                } else {
                    ClientError::Unavailable(last_reason)
                });
            }
            self.connection = None;
            self.endpoint = (self.endpoint + 1) % self.config.endpoints.len();
            sleep(backoff).await;
            backoff = (backoff * 2).min(self.config.backoff_max);
        }
    }

    fn current(&self) -> SocketAddr {
        self.config.endpoints[self.endpoint]
    }

    /// The index of `address` among the endpoints, adding it if there is room (otherwise the
    /// next endpoint's).
    fn endpoint_index(&mut self, address: SocketAddr) -> usize {
        if let Some(index) = self.config.endpoints.iter().position(|&e| e == address) {
            return index;
        }
        if self.config.endpoints.len() < ENDPOINTS_MAX {
            self.config.endpoints.push(address);
            return self.config.endpoints.len() - 1;
        }
        (self.endpoint + 1) % self.config.endpoints.len()
    }

    async fn attempt(&mut self, arguments: &[Bytes]) -> Attempt {
        let address = self.current();
        if self.connection.is_none() {
            match TcpStream::connect(address).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    self.connection = Some(Connection {
                        stream,
                        buffer: BytesMut::with_capacity(4096),
                    });
                }
                Err(error) => {
                    return Attempt::Refused(format!("cannot connect to {address}: {error}"));
                }
            }
        }
        let limits = self.limits;
        let Some(connection) = self.connection.as_mut() else {
            return Attempt::Refused(format!("no connection to {address}"));
        };
        let mut request = BytesMut::new();
        encode_request(arguments, &mut request);
        if let Err(error) = connection.stream.write_all(&request).await {
            self.connection = None;
            // The bytes may have reached the node before the connection broke.
            return Attempt::Unknown(format!("lost the connection to {address}: {error}"));
        }
        loop {
            match parse_reply(&mut connection.buffer, &limits) {
                Ok(Some(frame)) => return self.interpret(frame, address),
                Ok(None) => {}
                Err(error) => {
                    self.connection = None;
                    return Attempt::Unknown(format!("bad reply from {address}: {error}"));
                }
            }
            match connection.stream.read_buf(&mut connection.buffer).await {
                Ok(0) | Err(_) => {
                    self.connection = None;
                    return Attempt::Unknown(format!("{address} closed the connection"));
                }
                Ok(_) => {}
            }
        }
    }

    fn interpret(&mut self, frame: Frame, address: SocketAddr) -> Attempt {
        match frame {
            Frame::Bulk(Some(bytes)) => match Response::decode(&bytes) {
                Ok(response) => Attempt::Answered(response),
                Err(error) => {
                    Attempt::Unknown(format!("{address} sent an undecodable answer: {error}"))
                }
            },
            Frame::Error(text) => {
                let kind = text.split_whitespace().next().unwrap_or("");
                if kind == "UNAVAILABLE" || kind == "BUSY" {
                    Attempt::Refused(format!("{address}: {text}"))
                } else if kind == "MOVED" {
                    // `MOVED <slot> <host:port> …`: nothing was proposed.
                    match text.split_whitespace().nth(2).map(str::parse::<SocketAddr>) {
                        Some(Ok(primary)) => Attempt::Moved(primary, format!("{address}: {text}")),
                        _ => Attempt::Refused(format!("{address}: {text}")),
                    }
                } else if kind == "ERR" {
                    // The node parsed the request and refused it without proposing anything.
                    Attempt::Failed(ClientError::Protocol(format!("{address}: {text}")))
                } else {
                    Attempt::Unknown(format!("{address}: {text}"))
                }
            }
            other => Attempt::Unknown(format!("{address} sent an unexpected reply {other:?}")),
        }
    }
}

fn unexpected(response: &Response) -> ClientError {
    ClientError::Protocol(format!("unexpected answer {response:?}"))
}
