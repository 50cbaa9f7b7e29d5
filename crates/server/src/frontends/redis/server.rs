//! The RESP server: one task per client connection, replies in request order, pipelining.
//!
//! A connection's task cuts the whole requests out of its buffer, turns each into a driver
//! input (writes through the replicated log, reads through ReadIndex) or answers it on the
//! spot, and queues the reply it owes; then it writes every reply known so far in one write,
//! and waits for the next answer, or for more bytes once its buffer holds no whole request.
//! So `redis-benchmark -P 16` gets sixteen requests into one batch (one log append, one fsync)
//! and sixteen replies in one write. At most `inflight_max` replies wait for the driver or
//! for their turn per connection: the task parses and reads no further while that many are
//! owed (backpressure), nor while a write to the client waits for the client to read (the
//! replies already encoded are at most those of one buffer of requests). A connection that ends (a protocol
//! error, `QUIT`, or the client's end of input) first writes every reply it owes, unless
//! the client cannot be written to.
//!
//! A connection's commands take effect in the order sent. Consecutive writes go out together
//! (the log keeps their order) and so do consecutive reads; at a switch between the two, the
//! task waits until every reply before it is known. So a GET pipelined after a SET sees that
//! SET (its read index is taken after the write applied), and a SET pipelined after a GET is
//! not yet visible to it. The cost is one round trip per switch, none within a run.
//!
//! Besides the Redis commands of [`super::command`], three commands serve the native client
//! (`chorus-client`): `CHORUS.REGISTER`, `CHORUS.COMMAND <command>` and `CHORUS.QUERY <query>`,
//! answered with the encoded `chorus_kv::Response`.
//!
//! A connection named `chorus-session:<anything>` (`CLIENT SETNAME`, or `HELLO … SETNAME`)
//! is bound to the replicated session of that name: its writes are proposed as
//! `Command::BoundAt`, with this connection's number and a fingerprint of the request's
//! bytes, so that a client library's retry of a write whose reply it lost, resent on a new
//! connection, is answered from the session table instead of applied twice (the decision
//! and its limits: `chorus_kv::KvStore`, and docs/redis-compatibility.md).
//!
//! Under primary-backup only the primary takes requests. Any other server answers a data
//! command (read or write) with a Redis Cluster style redirect naming the primary's RESP
//! address, exactly `-MOVED 0 127.0.0.1:7101`, without proposing anything: `redis-cli -c` follows it,
//! other clients show it, and the native client goes there next. The request is not forwarded:
//! a forwarded write whose answer is lost would leave the client unsure where to retry.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;

use bytes::{Bytes, BytesMut};
use chorus_core::NodeId;
use chorus_kv::{
    Binding, BoundWrite, Command, KvError, Op, Query, Reply, Response, SESSION_NAME_BYTES_MAX, Step,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot};

use super::command::{self, ClusterView, RedisCommand};
use super::resp::{self, Frame, Limits};
use crate::runtime::boundary::{Input, RequestError, Shared, offer, wall_clock_ms};

/// Bounds of the RESP server, and the cluster it describes to clients.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Connections served at once; more are refused.
    pub connections_max: usize,
    /// Replies one connection may have pending.
    pub inflight_max: usize,
    /// This node.
    pub me: NodeId,
    /// Every node's RESP address (nodes that take clients), for `CLUSTER SLOTS` and kin.
    pub redis_addresses: Arc<BTreeMap<NodeId, SocketAddr>>,
}

/// How a driver answer becomes a RESP reply.
type Render = fn(Response) -> Frame;

/// A reply, in request order.
enum Pending {
    /// Known now.
    Now(Frame),
    /// Known when the driver answers.
    Later(oneshot::Receiver<Result<Bytes, RequestError>>, Render),
    /// The native client's raw answer.
    Raw(oneshot::Receiver<Result<Bytes, RequestError>>),
    /// Send this and close the connection.
    Close(Frame),
    /// A transaction's answer (`EXEC`): one frame per queued command, in order.
    Exec(oneshot::Receiver<Result<Bytes, RequestError>>, Vec<Slot>),
}

/// One queued command's place in `EXEC`'s reply.
enum Slot {
    /// Answered without the state machine (`PING`, `ECHO`, …), when `EXEC` came.
    Now(Frame),
    /// The state machine's answer to the transaction's next step, rendered so.
    Answer(Render),
}

/// What `EXEC` answers when a queued command was refused.
const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

/// A connection inside `MULTI`.
#[derive(Default)]
struct Transaction {
    /// The commands queued, in order.
    queued: Vec<RedisCommand>,
    /// A command was refused while queuing: `EXEC` aborts.
    refused: bool,
    /// The fingerprint of the queued commands' bytes, `MULTI` and `EXEC` included, on a
    /// bound connection (see [`fingerprint`]).
    fingerprint: u64,
}

/// A client name with this prefix binds its connection to the session of that name.
pub const SESSION_NAME_PREFIX: &[u8] = b"chorus-session:";

/// The FNV-1a offset basis: where a [`fingerprint`] starts.
const FINGERPRINT_START: u64 = 0xcbf2_9ce4_8422_2325;

/// Folds a request's arguments into `state` with FNV-1a (64 bits), each argument preceded by
/// its length so that `["ab", "c"]` and `["a", "bc"]` differ. The function is fixed forever
/// (unlike the standard library's hasher), so nodes of different builds fingerprint a
/// resent request alike.
fn fingerprint(mut state: u64, arguments: &[Bytes]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    for argument in arguments {
        let length = (argument.len() as u64).to_le_bytes();
        for &byte in length.iter().chain(argument.iter()) {
            state ^= u64::from(byte);
            state = state.wrapping_mul(PRIME);
        }
    }
    state
}

/// A number for each connection that no other connection of any node uses (as far as 64
/// random bits go): this process's random base plus its connection counter.
fn connection_number(id: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| {
        // The standard library seeds `RandomState` from the operating system.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(u64::from(std::process::id()));
        hasher.finish()
    });
    base.wrapping_add(id)
}

/// The most commands one transaction may queue: every queue is bounded.
const TRANSACTION_COMMANDS_MAX: usize = 10_000;

/// Serves RESP clients until the listener fails.
///
/// # Errors
/// If accepting connections fails.
pub async fn serve(
    listener: TcpListener,
    inputs: SyncSender<Input>,
    shared: Arc<Shared>,
    settings: Settings,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(settings.connections_max));
    let ids = Arc::new(AtomicU64::new(1));
    loop {
        let (stream, address) = listener.accept().await?;
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%address, "too many client connections; refusing one");
            let mut stream = stream;
            let mut out = BytesMut::new();
            Frame::error("ERR", "max number of clients reached").encode(&mut out);
            let _ = stream.write_all(&out).await;
            continue;
        };
        let inputs = inputs.clone();
        let shared = shared.clone();
        let settings = settings.clone();
        let id = ids.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            connection(stream, id, inputs, shared, settings).await;
            drop(permit);
        });
    }
}

async fn connection(
    mut stream: TcpStream,
    id: u64,
    inputs: SyncSender<Input>,
    shared: Arc<Shared>,
    settings: Settings,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, writer) = stream.split();
    let mut outbox = Outbox::new(writer);
    let limits = Limits::default();
    let mut buffer = BytesMut::with_capacity(16 * 1024);
    let mut state = ConnectionState {
        id,
        connection: connection_number(id),
        session: None,
        fingerprint: FINGERPRINT_START,
        name: None,
        transaction: None,
        watched: Vec::new(),
        me: settings.me,
        redis_addresses: settings.redis_addresses.clone(),
        earlier_known: true,
    };
    // The kind of the data commands since the last switch.
    let mut running: Option<Access> = None;
    'serve: loop {
        // Cut requests out of the buffer while the outbox has room for their replies; read
        // more bytes only once the buffer holds no whole request (`starved`): the buffer
        // then holds at most one partial request before a read, and the end of input is seen
        // only after every whole request before it was taken.
        let mut starved = false;
        while outbox.replies.len() < settings.inflight_max && !outbox.closing {
            let arguments = match resp::parse_request(&mut buffer, &limits) {
                Ok(Some(arguments)) => arguments,
                Ok(None) => {
                    starved = true;
                    break;
                }
                Err(error) => {
                    outbox.push(Pending::Close(error.to_frame()));
                    break;
                }
            };
            if state.session.is_some() {
                state.fingerprint = fingerprint(FINGERPRINT_START, &arguments);
                if let Some(transaction) = &mut state.transaction {
                    transaction.fingerprint = fingerprint(transaction.fingerprint, &arguments);
                }
            }
            let request = Request::parse(arguments);
            // Commands of one kind go out together (one batch, one log append); a read after
            // writes, or a write after reads, waits until every reply before it is known, so
            // it sees exactly the writes sent before it.
            if let Some(access) = request.access(state.transaction.is_some()) {
                if running.is_some_and(|kind| kind != access) && outbox.settle().await.is_err() {
                    // The client cannot be written to: nothing more can reach it.
                    return;
                }
                running = Some(access);
            }
            outbox.take_known();
            state.earlier_known = outbox.unknown == 0;
            let reply = match request {
                Request::Redis(RedisCommand::Exec) if state.transaction.is_some() => {
                    exec(&inputs, &shared, &mut state)
                }
                Request::Redis(RedisCommand::Watch { keys }) if state.transaction.is_none() => {
                    watch(keys, &inputs, &mut state).await
                }
                request => request.execute(&inputs, &shared, &mut state),
            };
            outbox.push(reply);
        }
        outbox.take_known();
        if outbox.closing {
            // Every reply before the last one, then the last one, then the connection closes.
            let _ = outbox.settle().await;
            let _ = outbox.writer.shutdown().await;
            return;
        }
        if !starved && outbox.replies.len() < settings.inflight_max {
            // Replies became known while the outbox was full: parse on.
            continue;
        }
        if outbox.flush().await.is_err() {
            return;
        }
        // Wait for the reply at the front, or for more bytes once every whole request is
        // taken. One of the two is always possible (with `inflight_max` at least 1, which
        // the configuration checks): an outbox left full after `take_known` has a reply at
        // its front that waits for the driver.
        tokio::select! {
            biased;
            () = outbox.front_known(), if outbox.unknown > 0 => {}
            read = reader.read_buf(&mut buffer), if starved => match read {
                Ok(0) | Err(_) => break 'serve,
                Ok(_) => {}
            },
            else => break 'serve,
        }
    }
    // The client stopped sending (or went away): it still gets the replies it is owed.
    let _ = outbox.settle().await;
}

/// What a connection owes its client: the replies in request order, the front ones encoded.
///
/// The connection's one task parses requests, queues their replies here, and writes what is
/// known once it runs out of requests to parse, or of room for their replies while none
/// becomes known; it waits on the driver's answer at the front when nothing else can go
/// out, and for every answer at a switch between reads and writes ([`Outbox::settle`]). A
/// reply known at once (a lease read answered on this thread, `PING`) is written by the
/// task that parsed its request, with no hand-off to another task (docs/benchmarks, "One
/// task per connection").
struct Outbox<'a> {
    writer: tokio::net::tcp::WriteHalf<'a>,
    /// Replies not yet encoded, in request order (at most `inflight_max`).
    replies: VecDeque<Pending>,
    /// Replies in `replies` that wait for the driver.
    unknown: usize,
    /// Encoded replies not yet written.
    out: BytesMut,
    /// A reply that closes the connection is queued: nothing is read after it.
    closing: bool,
}

impl<'a> Outbox<'a> {
    fn new(writer: tokio::net::tcp::WriteHalf<'a>) -> Outbox<'a> {
        Outbox {
            writer,
            replies: VecDeque::new(),
            unknown: 0,
            out: BytesMut::with_capacity(16 * 1024),
            closing: false,
        }
    }

    fn push(&mut self, reply: Pending) {
        if reply.waits_for_driver() {
            self.unknown += 1;
        }
        self.closing |= matches!(reply, Pending::Close(_));
        self.replies.push_back(reply);
    }

    /// Encodes the replies at the front that are known now, without waiting.
    fn take_known(&mut self) {
        while let Some(front) = self.replies.front_mut() {
            let answer = match front.receiver() {
                None => None,
                Some(receiver) => match receiver.try_recv() {
                    Ok(answer) => Some(Some(answer)),
                    Err(oneshot::error::TryRecvError::Empty) => return,
                    Err(oneshot::error::TryRecvError::Closed) => Some(None),
                },
            };
            self.encode_front(answer);
        }
    }

    /// Waits until the reply at the front is known (the driver answers it), then encodes it
    /// and every known reply behind it.
    async fn front_known(&mut self) {
        let answer = match self.replies.front_mut().and_then(Pending::receiver) {
            Some(receiver) => Some(receiver.await.ok()),
            None => None,
        };
        self.encode_front(answer);
        self.take_known();
    }

    /// Pops the front reply and encodes it; `answer` is the driver's for a reply that waited
    /// for one (`None` inside: the driver dropped the request).
    fn encode_front(&mut self, answer: Option<Option<Result<Bytes, RequestError>>>) {
        let Some(reply) = self.replies.pop_front() else {
            return;
        };
        if reply.waits_for_driver() {
            self.unknown -= 1;
        }
        answered(reply, answer.flatten()).encode(&mut self.out);
    }

    /// Writes every reply, waiting for the driver's answers in order, and flushes them.
    ///
    /// # Errors
    /// When the client cannot be written to.
    async fn settle(&mut self) -> std::io::Result<()> {
        self.take_known();
        while !self.replies.is_empty() {
            self.flush().await?;
            self.front_known().await;
        }
        self.flush().await
    }

    /// Writes the encoded replies.
    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.writer.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }
}

impl Pending {
    /// Where the driver's answer to this reply comes, if it waits for one.
    fn receiver(&mut self) -> Option<&mut oneshot::Receiver<Result<Bytes, RequestError>>> {
        match self {
            Pending::Now(_) | Pending::Close(_) => None,
            Pending::Later(receiver, _) | Pending::Raw(receiver) | Pending::Exec(receiver, _) => {
                Some(receiver)
            }
        }
    }

    /// Whether this reply waits for the driver's answer.
    fn waits_for_driver(&self) -> bool {
        !matches!(self, Pending::Now(_) | Pending::Close(_))
    }
}

/// The frame of `reply`, given the driver's `answer` to it (`None`: none came, the driver
/// dropped the request; unused for a reply known at once).
fn answered(reply: Pending, answer: Option<Result<Bytes, RequestError>>) -> Frame {
    let answer = match reply {
        Pending::Now(frame) | Pending::Close(frame) => return frame,
        Pending::Later(..) | Pending::Raw(_) | Pending::Exec(..) => match answer {
            None => return dropped(),
            Some(Err(error)) => return request_error(error),
            Some(Ok(bytes)) => bytes,
        },
    };
    match reply {
        Pending::Later(_, render) => rendered(&answer, render),
        Pending::Raw(_) => Frame::Bulk(Some(answer)),
        Pending::Exec(_, slots) => exec_answered(&answer, slots),
        Pending::Now(frame) | Pending::Close(frame) => frame,
    }
}

/// `EXEC`'s reply: one frame per queued command, from the transaction's encoded answer.
fn exec_answered(bytes: &[u8], slots: Vec<Slot>) -> Frame {
    match Response::decode(bytes) {
        // A watched key changed: nothing ran, and `EXEC` answers a null array.
        Ok(Response::Transaction(None)) => Frame::Array(None),
        Ok(Response::Transaction(Some(answers))) => {
            let mut answers = answers.into_iter();
            let frames = slots
                .into_iter()
                .map(|slot| match slot {
                    Slot::Now(frame) => frame,
                    Slot::Answer(render) => match answers.next() {
                        Some(Response::Error(error)) => kv_error(&error),
                        Some(answer) => render(answer),
                        None => Frame::error("ERR", "the transaction answered too few"),
                    },
                })
                .collect();
            Frame::array(frames)
        }
        Ok(Response::Error(error)) => kv_error(&error),
        Ok(other) => unexpected(&other),
        Err(error) => Frame::error("ERR", &format!("undecodable answer: {error}")),
    }
}

/// The frame for the state machine's encoded answer `bytes`.
fn rendered(bytes: &[u8], render: Render) -> Frame {
    match Response::decode(bytes) {
        Ok(Response::Error(error)) => kv_error(&error),
        Ok(response) => render(response),
        Err(error) => Frame::error("ERR", &format!("undecodable answer: {error}")),
    }
}

/// The driver went away while holding the request: it may have been proposed, so its outcome
/// is unknown (never report that as a definite failure).
fn dropped() -> Frame {
    Frame::error(
        "TIMEOUT",
        "the node stopped before answering; the outcome is unknown",
    )
}

fn request_error(error: RequestError) -> Frame {
    match error {
        RequestError::Unavailable => Frame::error("UNAVAILABLE", "no leader is known; try again"),
        // Redis Cluster's redirect, exactly `MOVED <slot> <host>:<port>`: client libraries
        // split it into three fields and fail on anything more (redis-py 8 raises a
        // ValueError). Chorus has no slots (one shard), so the slot is 0.
        RequestError::NotPrimary { redis, .. } => Frame::error("MOVED", &format!("0 {redis}")),
        RequestError::Busy => Frame::error("BUSY", "the node is overloaded; try again"),
        RequestError::Timeout => {
            Frame::error("TIMEOUT", "the request timed out; its outcome is unknown")
        }
        // Only ever sent for requests that were not proposed (a read, or a queue that closed).
        RequestError::Stopped => Frame::error("UNAVAILABLE", "the node is shutting down"),
    }
}

fn kv_error(error: &KvError) -> Frame {
    match error {
        KvError::NotAnInteger => Frame::error("ERR", "value is not an integer or out of range"),
        KvError::Overflow => Frame::error("ERR", "increment or decrement would overflow"),
        KvError::WrongType => Frame::Error(error.to_string()),
        other => Frame::error("ERR", &other.to_string()),
    }
}

struct ConnectionState {
    id: u64,
    /// This connection's number in bound sessions' writes (see [`connection_number`]).
    connection: u64,
    /// The session this connection is bound to, if its name binds it.
    session: Option<Bytes>,
    /// The fingerprint of the request being executed, on a bound connection.
    fingerprint: u64,
    name: Option<Bytes>,
    /// Inside `MULTI`: what is queued.
    transaction: Option<Transaction>,
    /// The keys `WATCH` named, with the versions they had then.
    watched: Vec<(Bytes, u64)>,
    me: NodeId,
    redis_addresses: Arc<BTreeMap<NodeId, SocketAddr>>,
    /// Whether every reply queued before the request being executed is known: only then may
    /// a read be answered on this thread ([`local_read`]), so that a connection's reads are
    /// answered from states in the order it sent them.
    earlier_known: bool,
}

impl ConnectionState {
    /// Who proposes a write with this `fingerprint`, if the connection is bound.
    fn binding(&self, fingerprint: u64) -> Option<Binding> {
        self.session.as_ref().map(|session| Binding {
            session: session.clone(),
            connection: self.connection,
            fingerprint,
        })
    }

    /// Names the connection (`CLIENT SETNAME`, `HELLO … SETNAME`): a name with
    /// [`SESSION_NAME_PREFIX`] binds it to that session, any other name unbinds it.
    ///
    /// # Errors
    /// A binding name longer than a session name may be: nothing changes.
    fn set_name(&mut self, name: Bytes) -> Result<(), Frame> {
        let binds = name.starts_with(SESSION_NAME_PREFIX);
        if binds && name.len() > SESSION_NAME_BYTES_MAX {
            return Err(Frame::error(
                "ERR",
                &format!("a session name is at most {SESSION_NAME_BYTES_MAX} bytes"),
            ));
        }
        self.session = binds.then(|| name.clone());
        self.name = Some(name);
        Ok(())
    }
}

fn submit(
    inputs: &SyncSender<Input>,
    write: bool,
    payload: Bytes,
) -> Result<oneshot::Receiver<Result<Bytes, RequestError>>, Frame> {
    let (reply, receiver) = oneshot::channel();
    let input = if write {
        Input::Write {
            command: payload,
            reply,
        }
    } else {
        Input::Read {
            query: payload,
            reply,
        }
    };
    offer(inputs, input).map_err(request_error)?;
    Ok(receiver)
}

fn write_step(op: Op, render: Render) -> Planned {
    Planned::Step(Step::Write(op), render)
}

fn read_step(query: Query, render: Render) -> Planned {
    Planned::Step(Step::Read(query), render)
}

/// Proposes `op`, stamped with this node's wall clock: the log clock, by which keys expire,
/// moves up to it when the command is applied. On a bound connection, within its session.
fn write(inputs: &SyncSender<Input>, state: &ConnectionState, op: Op, render: Render) -> Pending {
    let now_ms = wall_clock_ms();
    let command = match state.binding(state.fingerprint) {
        Some(binding) => Command::BoundAt {
            now_ms,
            binding,
            write: BoundWrite::Op(op),
        },
        None => Command::UnsessionedAt { now_ms, op },
    };
    match submit(inputs, true, command.encode()) {
        Ok(receiver) => Pending::Later(receiver, render),
        Err(frame) => Pending::Now(frame),
    }
}

/// A lease read answered on this thread, if the node offers them ([`Shared::local_reads`])
/// and may answer this one now; counted as the driver counts the lease reads it serves.
fn local_read(shared: &Shared, state: &ConnectionState, query: &[u8]) -> Option<Bytes> {
    if !state.earlier_known {
        return None;
    }
    let answer = shared.local_reads.get()?.try_read(query)?;
    shared.metrics.reads.inc();
    shared.metrics.lease_reads.inc();
    Some(answer)
}

fn read(
    inputs: &SyncSender<Input>,
    shared: &Shared,
    state: &ConnectionState,
    query: &Query,
    render: Render,
) -> Pending {
    let query = query.encode();
    if let Some(answer) = local_read(shared, state, &query) {
        return Pending::Now(rendered(&answer, render));
    }
    match submit(inputs, false, query) {
        Ok(receiver) => Pending::Later(receiver, render),
        Err(frame) => Pending::Now(frame),
    }
}

fn unexpected(response: &Response) -> Frame {
    Frame::error("ERR", &format!("unexpected answer {response:?}"))
}

fn render_ok(response: Response) -> Frame {
    match response {
        Response::Ok => Frame::ok(),
        other => unexpected(&other),
    }
}

fn render_integer(response: Response) -> Frame {
    match response {
        Response::Integer(value) => Frame::integer(value),
        Response::Length(length) => Frame::integer(i64::try_from(length).unwrap_or(i64::MAX)),
        other => unexpected(&other),
    }
}

fn render_value(response: Response) -> Frame {
    match response {
        Response::Value(value) => Frame::Bulk(value),
        other => unexpected(&other),
    }
}

fn render_strlen(response: Response) -> Frame {
    match response {
        Response::Value(value) => {
            Frame::integer(value.map_or(0, |v| i64::try_from(v.len()).unwrap_or(i64::MAX)))
        }
        other => unexpected(&other),
    }
}

fn render_values(response: Response) -> Frame {
    match response {
        Response::Values(values) => Frame::array(values.into_iter().map(Frame::Bulk).collect()),
        other => unexpected(&other),
    }
}

fn render_set(response: Response) -> Frame {
    match response {
        Response::Set { applied: true, .. } => Frame::ok(),
        Response::Set { applied: false, .. } => Frame::null(),
        other => unexpected(&other),
    }
}

/// A typed command's Redis-shaped reply as a RESP2 frame.
fn reply_frame(reply: Reply) -> Frame {
    match reply {
        Reply::Status(text) => Frame::simple(&text),
        Reply::Integer(value) => Frame::integer(value),
        Reply::Bulk(value) => Frame::Bulk(value),
        Reply::Array(items) => Frame::array(items.into_iter().map(reply_frame).collect()),
        Reply::NullArray => Frame::null_array(),
        Reply::Error(text) => Frame::Error(text),
    }
}

fn render_reply(response: Response) -> Frame {
    match response {
        Response::Reply(reply) => reply_frame(reply),
        other => unexpected(&other),
    }
}

fn render_set_get(response: Response) -> Frame {
    match response {
        Response::Set { previous, .. } => Frame::Bulk(previous),
        other => unexpected(&other),
    }
}

fn is(arguments: &[Bytes], name: &str) -> bool {
    arguments
        .first()
        .is_some_and(|first| first.eq_ignore_ascii_case(name.as_bytes()))
}

fn native(
    arguments: Vec<Bytes>,
    inputs: &SyncSender<Input>,
    shared: &Shared,
    state: &ConnectionState,
) -> Pending {
    let (write, payload) = if is(&arguments, "CHORUS.REGISTER") && arguments.len() == 1 {
        (true, Command::Register.encode())
    } else if arguments.len() == 2 && is(&arguments, "CHORUS.COMMAND") {
        if Command::decode(&arguments[1]).is_err() {
            return Pending::Now(Frame::error(
                "ERR",
                "CHORUS.COMMAND: the command does not decode",
            ));
        }
        (true, arguments[1].clone())
    } else if arguments.len() == 2 && is(&arguments, "CHORUS.QUERY") {
        (false, arguments[1].clone())
    } else {
        return Pending::Now(Frame::error(
            "ERR",
            "wrong number of arguments for a CHORUS command",
        ));
    };
    if !write && let Some(answer) = local_read(shared, state, &payload) {
        return Pending::Now(Frame::Bulk(Some(answer)));
    }
    match submit(inputs, write, payload) {
        Ok(receiver) => Pending::Raw(receiver),
        Err(frame) => Pending::Now(frame),
    }
}

fn info(shared: &Shared, sections: &[Bytes]) -> Frame {
    let status = shared.status.read().map(|s| s.clone()).unwrap_or_default();
    let wants = |name: &str| {
        sections.is_empty()
            || sections.iter().any(|s| {
                s.eq_ignore_ascii_case(name.as_bytes())
                    || s.eq_ignore_ascii_case(b"all")
                    || s.eq_ignore_ascii_case(b"everything")
            })
    };
    let mut text = String::new();
    if wants("server") {
        text.push_str("# Server\r\nredis_version:7.0.0\r\nchorus_version:");
        text.push_str(env!("CARGO_PKG_VERSION"));
        text.push_str("\r\nredis_mode:cluster-consensus\r\n\r\n");
    }
    if wants("replication") {
        let leader = status
            .leader
            .map_or_else(|| "none".to_string(), |l| l.to_string());
        let role = if status.role == "leader" || status.role == "primary" {
            "master"
        } else {
            "slave"
        };
        text.push_str(&format!(
            "# Replication\r\nrole:{role}\r\nchorus_role:{}\r\nnode_id:{}\r\nterm:{}\r\nleader:{leader}\r\ncommit_index:{}\r\napplied_index:{}\r\nlast_index:{}\r\n",
            status.role, status.id, status.term, status.commit, status.applied, status.last_index
        ));
        for (peer, index) in &status.match_index {
            text.push_str(&format!("peer_{peer}_match_index:{index}\r\n"));
        }
        if let Some(on) = status.lease_reads {
            text.push_str(&format!("lease_reads:{}\r\n", u8::from(on)));
        }
        if let Some(held) = status.lease_held {
            text.push_str(&format!("lease_held:{}\r\n", u8::from(held)));
        }
        if let Some(left) = status.lease_ticks_left {
            text.push_str(&format!("lease_ticks_left:{left}\r\n"));
        }
        text.push_str("\r\n");
    }
    if wants("stats") {
        let metrics = &shared.metrics;
        text.push_str(&format!(
            "# Stats\r\nchorus_reads:{}\r\nchorus_lease_reads:{}\r\nchorus_read_index_reads:{}\r\n\r\n",
            metrics.reads.get(),
            metrics.lease_reads.get(),
            metrics.read_index_reads.get()
        ));
    }
    if wants("keyspace") {
        text.push_str(&format!(
            "# Keyspace\r\ndb0:keys={},expires=0,avg_ttl=0\r\n",
            status.keys
        ));
    }
    Frame::bulk(Bytes::from(text))
}

/// One command's entry in a `COMMAND` reply, as Redis 7 shapes it: name, arity, flags, first
/// key, last key, step, ACL categories, tips, key specs, subcommands.
fn command_info(spec: &command::CommandSpec) -> Frame {
    Frame::array(vec![
        Frame::bulk(Bytes::from_static(spec.name.as_bytes())),
        Frame::integer(spec.arity),
        Frame::array(spec.flags.iter().map(|flag| Frame::simple(*flag)).collect()),
        Frame::integer(spec.first_key),
        Frame::integer(spec.last_key),
        Frame::integer(spec.step),
        Frame::array(Vec::new()),
        Frame::array(Vec::new()),
        Frame::array(Vec::new()),
        Frame::array(Vec::new()),
    ])
}

/// Redis Cluster's 40-character node id for a Chorus node.
fn cluster_id(node: NodeId) -> String {
    format!("{:040x}", node.0)
}

/// The shard's master (the Raft leader or the primary of the current view) and its replicas
/// (the other Raft nodes, or the backup), as far as this node knows.
fn shard(shared: &Shared, state: &ConnectionState) -> Option<(NodeId, Vec<NodeId>)> {
    let status = shared.status.read().ok()?.clone();
    let (master, replicas) = match &status.view {
        Some(view) => (view.primary?, view.backup.into_iter().collect::<Vec<_>>()),
        None => {
            let leader = status.leader?;
            let others = state
                .redis_addresses
                .keys()
                .map(|node| node.0)
                .filter(|&node| node != leader)
                .collect();
            (leader, others)
        }
    };
    let known = |node: &u64| state.redis_addresses.contains_key(&NodeId(*node));
    if !known(&master) {
        return None;
    }
    let replicas = replicas.into_iter().filter(known).map(NodeId).collect();
    Some((NodeId(master), replicas))
}

fn cluster(shared: &Shared, state: &ConnectionState, what: ClusterView) -> Frame {
    if what == ClusterView::MyId {
        return Frame::bulk(Bytes::from(cluster_id(state.me)));
    }
    let address = |node: NodeId| state.redis_addresses[&node];
    let Some((master, replicas)) = shard(shared, state) else {
        return match what {
            ClusterView::Info => Frame::bulk(Bytes::from_static(
                b"cluster_state:fail\r\ncluster_slots_assigned:0\r\ncluster_known_nodes:0\r\ncluster_size:0\r\n",
            )),
            _ => Frame::error("CLUSTERDOWN", "no leader or primary is known; try again"),
        };
    };
    let members = || std::iter::once((master, true)).chain(replicas.iter().map(|&r| (r, false)));
    match what {
        ClusterView::MyId => unreachable!("answered above"),
        ClusterView::Slots => {
            let mut range = vec![Frame::integer(0), Frame::integer(16383)];
            for (node, _) in members() {
                let at = address(node);
                range.push(Frame::array(vec![
                    Frame::bulk(Bytes::from(at.ip().to_string())),
                    Frame::integer(i64::from(at.port())),
                    Frame::bulk(Bytes::from(cluster_id(node))),
                ]));
            }
            Frame::array(vec![Frame::array(range)])
        }
        ClusterView::Shards => {
            let nodes = members()
                .map(|(node, is_master)| {
                    let at = address(node);
                    let pairs: [(&str, Frame); 7] = [
                        ("id", Frame::bulk(Bytes::from(cluster_id(node)))),
                        ("port", Frame::integer(i64::from(at.port()))),
                        ("ip", Frame::bulk(Bytes::from(at.ip().to_string()))),
                        ("endpoint", Frame::bulk(Bytes::from(at.ip().to_string()))),
                        (
                            "role",
                            Frame::bulk(Bytes::from_static(if is_master {
                                b"master"
                            } else {
                                b"replica"
                            })),
                        ),
                        ("replication-offset", Frame::integer(0)),
                        ("health", Frame::bulk(Bytes::from_static(b"online"))),
                    ];
                    Frame::array(
                        pairs
                            .into_iter()
                            .flat_map(|(name, value)| {
                                [Frame::bulk(Bytes::from_static(name.as_bytes())), value]
                            })
                            .collect(),
                    )
                })
                .collect();
            Frame::array(vec![Frame::array(vec![
                Frame::bulk(Bytes::from_static(b"slots")),
                Frame::array(vec![Frame::integer(0), Frame::integer(16383)]),
                Frame::bulk(Bytes::from_static(b"nodes")),
                Frame::array(nodes),
            ])])
        }
        ClusterView::Nodes => {
            let mut text = String::new();
            for (node, is_master) in members() {
                let at = address(node);
                let myself = if node == state.me { "myself," } else { "" };
                let (role, master_id, slots) = if is_master {
                    ("master", "-".to_string(), " 0-16383")
                } else {
                    ("slave", cluster_id(master), "")
                };
                text.push_str(&format!(
                    "{} {at}@{} {myself}{role} {master_id} 0 0 1 connected{slots}\n",
                    cluster_id(node),
                    at.port(),
                ));
            }
            Frame::bulk(Bytes::from(text))
        }
        ClusterView::Info => Frame::bulk(Bytes::from(format!(
            "cluster_enabled:1\r\ncluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:16384\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:{}\r\ncluster_size:1\r\ncluster_current_epoch:1\r\ncluster_my_epoch:1\r\n",
            1 + replicas.len()
        ))),
    }
}

fn config_get(shared: &Shared, patterns: &[Bytes]) -> Frame {
    // Chorus has no Redis configuration; answer the few settings tools ask about with values
    // that describe Chorus honestly: under Raft every write is durable before it is
    // acknowledged; under primary-backup nothing is written to disk (the backup's copy in
    // memory is the redundancy).
    const RAFT: [(&str, &str); 4] = [
        ("save", ""),
        ("appendonly", "yes"),
        ("appendfsync", "always"),
        ("databases", "1"),
    ];
    const PB: [(&str, &str); 4] = [
        ("save", ""),
        ("appendonly", "no"),
        ("appendfsync", "no"),
        ("databases", "1"),
    ];
    let pb = shared.status.read().is_ok_and(|s| s.protocol == "pb");
    let mut items = Vec::new();
    for (name, value) in if pb { PB } else { RAFT } {
        if patterns
            .iter()
            .any(|p| p.as_ref() == b"*" || p.eq_ignore_ascii_case(name.as_bytes()))
        {
            items.push(Frame::bulk(Bytes::from_static(name.as_bytes())));
            items.push(Frame::bulk(Bytes::from_static(value.as_bytes())));
        }
    }
    Frame::array(items)
}

/// Whether a command reads or writes the replicated state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

/// One request of a connection, parsed.
enum Request {
    /// A `CHORUS.*` command of the native client.
    Native(Vec<Bytes>),
    /// A Redis command.
    Redis(RedisCommand),
    /// A request that does not parse: its error reply.
    Invalid(Frame),
}

impl Request {
    fn parse(arguments: Vec<Bytes>) -> Request {
        if arguments
            .first()
            .is_some_and(|first| first.len() > 7 && first[..7].eq_ignore_ascii_case(b"CHORUS."))
        {
            return Request::Native(arguments);
        }
        match command::parse(arguments) {
            Ok(command) => Request::Redis(command),
            Err(error) => Request::Invalid(error.to_frame()),
        }
    }

    /// What the request does to the replicated state, if it touches it (`in_multi`: the
    /// connection is queuing a transaction, and only `EXEC` and `WATCH` touch it).
    fn access(&self, in_multi: bool) -> Option<Access> {
        if in_multi {
            return matches!(self, Request::Redis(RedisCommand::Exec)).then_some(Access::Write);
        }
        match self {
            Request::Redis(RedisCommand::Watch { .. }) => Some(Access::Read),
            Request::Native(arguments) if is(arguments, "CHORUS.QUERY") => Some(Access::Read),
            Request::Native(_) => Some(Access::Write),
            Request::Redis(command) if command.is_write() => Some(Access::Write),
            Request::Redis(command) => command.is_read().then_some(Access::Read),
            Request::Invalid(_) => None,
        }
    }

    fn execute(
        self,
        inputs: &SyncSender<Input>,
        shared: &Shared,
        state: &mut ConnectionState,
    ) -> Pending {
        if let Some(transaction) = &mut state.transaction {
            return match self {
                // QUIT ends the connection, inside a transaction or not.
                Request::Redis(RedisCommand::Quit) => Pending::Close(Frame::ok()),
                Request::Redis(RedisCommand::Discard) => {
                    state.transaction = None;
                    state.watched.clear();
                    Pending::Now(Frame::ok())
                }
                Request::Redis(RedisCommand::Multi) => {
                    Pending::Now(Frame::error("ERR", "MULTI calls can not be nested"))
                }
                Request::Redis(RedisCommand::Watch { .. }) => {
                    Pending::Now(Frame::error("ERR", "WATCH inside MULTI is not allowed"))
                }
                Request::Redis(command) if transaction.queued.len() < TRANSACTION_COMMANDS_MAX => {
                    transaction.queued.push(command);
                    Pending::Now(Frame::simple("QUEUED"))
                }
                Request::Redis(_) => {
                    transaction.refused = true;
                    Pending::Now(Frame::error(
                        "ERR",
                        &format!(
                            "a transaction queues at most {TRANSACTION_COMMANDS_MAX} commands"
                        ),
                    ))
                }
                Request::Native(_) => {
                    transaction.refused = true;
                    Pending::Now(Frame::error(
                        "ERR",
                        "Chorus's own commands are not allowed in MULTI",
                    ))
                }
                Request::Invalid(frame) => {
                    transaction.refused = true;
                    Pending::Now(frame)
                }
            };
        }
        match self {
            Request::Native(arguments) => native(arguments, inputs, shared, state),
            Request::Redis(RedisCommand::Multi) => {
                state.transaction = Some(Transaction::default());
                Pending::Now(Frame::ok())
            }
            Request::Redis(RedisCommand::Exec) => {
                Pending::Now(Frame::error("ERR", "EXEC without MULTI"))
            }
            Request::Redis(RedisCommand::Discard) => {
                Pending::Now(Frame::error("ERR", "DISCARD without MULTI"))
            }
            Request::Redis(command) => execute(command, inputs, shared, state),
            Request::Invalid(frame) => Pending::Now(frame),
        }
    }
}

/// A version no key ever has: a watch whose versions could not be read holds it, so `EXEC`
/// does not run (as if the key had changed).
const UNREADABLE: u64 = u64::MAX;

/// `WATCH key [key ...]`: reads the keys' versions (a linearizable read, ordered after this
/// connection's earlier writes) and answers `OK` once they are known, so that a change another
/// client makes after this answer is seen by `EXEC`, which compares them at its log position.
/// The keys watched are bounded like a transaction's commands.
async fn watch(
    keys: Vec<Bytes>,
    inputs: &SyncSender<Input>,
    state: &mut ConnectionState,
) -> Pending {
    if state.watched.len() + keys.len() > TRANSACTION_COMMANDS_MAX {
        return Pending::Now(Frame::error(
            "ERR",
            &format!("a connection watches at most {TRANSACTION_COMMANDS_MAX} keys"),
        ));
    }
    let query = Query::Versions { keys: keys.clone() };
    let receiver = match submit(inputs, false, query.encode()) {
        Ok(receiver) => receiver,
        Err(frame) => {
            state
                .watched
                .extend(keys.into_iter().map(|key| (key, UNREADABLE)));
            return Pending::Now(frame);
        }
    };
    let answer = match receiver.await {
        Ok(Ok(bytes)) => match Response::decode(&bytes) {
            Ok(Response::Versions(versions)) if versions.len() == keys.len() => Ok(versions),
            Ok(other) => Err(unexpected(&other)),
            Err(error) => Err(Frame::error("ERR", &format!("undecodable answer: {error}"))),
        },
        Ok(Err(error)) => Err(request_error(error)),
        Err(_) => Err(dropped()),
    };
    match answer {
        Ok(versions) => {
            state.watched.extend(keys.into_iter().zip(versions));
            Pending::Now(Frame::ok())
        }
        Err(frame) => {
            state
                .watched
                .extend(keys.into_iter().map(|key| (key, UNREADABLE)));
            Pending::Now(frame)
        }
    }
}

/// `EXEC`: the queued commands as one log entry ([`Command::TransactionAt`]), applied whole
/// at one log position, unless a watched key changed since `WATCH` (then a null array) or a
/// command was refused while queuing (`EXECABORT`). Ends the transaction and every watch.
fn exec(inputs: &SyncSender<Input>, shared: &Shared, state: &mut ConnectionState) -> Pending {
    let transaction = state.transaction.take().unwrap_or_default();
    let watched = std::mem::take(&mut state.watched);
    if transaction.refused {
        return Pending::Now(Frame::Error(EXECABORT.to_owned()));
    }
    let mut steps = Vec::new();
    let mut slots = Vec::new();
    for command in transaction.queued {
        match plan(command, shared, state) {
            Planned::Now(frame) | Planned::Close(frame) => slots.push(Slot::Now(frame)),
            Planned::Step(step, render) => {
                steps.push(step);
                slots.push(Slot::Answer(render));
            }
        }
    }
    let now_ms = wall_clock_ms();
    let command = match state.binding(transaction.fingerprint) {
        Some(binding) => Command::BoundAt {
            now_ms,
            binding,
            write: BoundWrite::Transaction { watched, steps },
        },
        None => Command::TransactionAt {
            now_ms,
            watched,
            steps,
        },
    };
    match submit(inputs, true, command.encode()) {
        Ok(receiver) => Pending::Exec(receiver, slots),
        Err(frame) => Pending::Now(frame),
    }
}

/// What a command comes to: an answer known now, or a step for the state machine with how to
/// render its answer. A transaction collects the steps of its commands into one entry.
enum Planned {
    /// Known now.
    Now(Frame),
    /// Send this and close the connection.
    Close(Frame),
    /// A change or a read of the replicated state.
    Step(Step, Render),
}

fn execute(
    command: RedisCommand,
    inputs: &SyncSender<Input>,
    shared: &Shared,
    state: &mut ConnectionState,
) -> Pending {
    match plan(command, shared, state) {
        Planned::Now(frame) => Pending::Now(frame),
        Planned::Close(frame) => Pending::Close(frame),
        Planned::Step(Step::Write(op), render) => write(inputs, state, op, render),
        Planned::Step(Step::Read(query), render) => read(inputs, shared, state, &query, render),
    }
}

fn plan(command: RedisCommand, shared: &Shared, state: &mut ConnectionState) -> Planned {
    tracing::trace!(
        connection = state.id,
        command = command.name(),
        write = command.is_write(),
        "request"
    );
    match command {
        RedisCommand::Ping { message: None } => Planned::Now(Frame::simple("PONG")),
        RedisCommand::Ping {
            message: Some(message),
        }
        | RedisCommand::Echo { message } => Planned::Now(Frame::Bulk(Some(message))),
        RedisCommand::Quit => Planned::Close(Frame::ok()),
        RedisCommand::Select => Planned::Now(Frame::ok()),
        RedisCommand::Hello { client_name } => {
            if let Some(Err(frame)) = client_name.map(|name| state.set_name(name)) {
                return Planned::Now(frame);
            }
            let pairs: [(&str, Frame); 7] = [
                ("server", Frame::bulk(Bytes::from_static(b"redis"))),
                ("version", Frame::bulk(Bytes::from_static(b"7.0.0"))),
                ("proto", Frame::integer(2)),
                (
                    "id",
                    Frame::integer(i64::try_from(state.id).unwrap_or(i64::MAX)),
                ),
                ("mode", Frame::bulk(Bytes::from_static(b"standalone"))),
                ("role", Frame::bulk(Bytes::from_static(b"master"))),
                ("modules", Frame::array(Vec::new())),
            ];
            let mut items = Vec::new();
            for (name, value) in pairs {
                items.push(Frame::bulk(Bytes::from_static(name.as_bytes())));
                items.push(value);
            }
            Planned::Now(Frame::array(items))
        }
        RedisCommand::Command => Planned::Now(Frame::array(
            command::COMMANDS.iter().map(command_info).collect(),
        )),
        RedisCommand::CommandInfo { names } => Planned::Now(Frame::array(
            names
                .iter()
                .map(|name| {
                    command::command_spec(name).map_or_else(Frame::null_array, command_info)
                })
                .collect(),
        )),
        RedisCommand::CommandList => Planned::Now(Frame::array(
            command::COMMANDS
                .iter()
                .map(|spec| Frame::bulk(Bytes::from_static(spec.name.as_bytes())))
                .collect(),
        )),
        // Documentation is optional (redis-cli uses it for hints only).
        RedisCommand::CommandDocs { .. } => Planned::Now(Frame::array(Vec::new())),
        RedisCommand::CommandCount => Planned::Now(Frame::integer(
            i64::try_from(command::COMMANDS.len()).unwrap_or(i64::MAX),
        )),
        RedisCommand::ClientSetName { name } => match state.set_name(name) {
            Ok(()) => Planned::Now(Frame::ok()),
            Err(frame) => Planned::Now(frame),
        },
        RedisCommand::ClientGetName => Planned::Now(Frame::Bulk(state.name.clone())),
        RedisCommand::ClientId => {
            Planned::Now(Frame::integer(i64::try_from(state.id).unwrap_or(i64::MAX)))
        }
        RedisCommand::ClientSetInfo { .. } => Planned::Now(Frame::ok()),
        RedisCommand::Get { key } => read_step(Query::Get { key }, render_value),
        RedisCommand::Strlen { key } => read_step(Query::Get { key }, render_strlen),
        RedisCommand::MGet { keys } => read_step(Query::MultiGet { keys }, render_values),
        RedisCommand::Exists { keys } => read_step(Query::Exists { keys }, render_integer),
        RedisCommand::DbSize => read_step(Query::Len, render_integer),
        RedisCommand::Set {
            key,
            value,
            condition,
            get,
            expiry,
        } => {
            let render: Render = if get { render_set_get } else { render_set };
            let op = match expiry {
                None => Op::Set {
                    key,
                    value,
                    condition,
                },
                Some(expiry) => Op::SetExpiring {
                    key,
                    value,
                    condition,
                    expiry,
                },
            };
            write_step(op, render)
        }
        RedisCommand::Del { keys } => write_step(Op::DeleteMany { keys }, render_integer),
        RedisCommand::Incr { key } => write_step(Op::IncrBy { key, delta: 1 }, render_integer),
        RedisCommand::Decr { key } => write_step(Op::IncrBy { key, delta: -1 }, render_integer),
        RedisCommand::IncrBy { key, increment } => write_step(
            Op::IncrBy {
                key,
                delta: increment,
            },
            render_integer,
        ),
        RedisCommand::DecrBy { key, decrement } => match decrement.checked_neg() {
            Some(delta) => write_step(Op::IncrBy { key, delta }, render_integer),
            None => Planned::Now(Frame::error("ERR", "decrement would overflow")),
        },
        RedisCommand::Append { key, value } => {
            write_step(Op::Append { key, value }, render_integer)
        }
        RedisCommand::MSet { pairs } => write_step(Op::MultiPut { pairs }, render_ok),
        RedisCommand::Typed { op, .. } => {
            if op.is_write() {
                write_step(Op::Typed(op), render_reply)
            } else {
                read_step(Query::Typed(op), render_reply)
            }
        }
        RedisCommand::Info { sections } => Planned::Now(info(shared, &sections)),
        RedisCommand::ConfigGet { patterns } => Planned::Now(config_get(shared, &patterns)),
        RedisCommand::Cluster { what } => Planned::Now(cluster(shared, state, what)),
        RedisCommand::Unwatch => {
            state.watched.clear();
            Planned::Now(Frame::ok())
        }
        // Handled by the connection (see `Request::execute`); inside a transaction they are
        // never queued.
        RedisCommand::Multi | RedisCommand::Exec | RedisCommand::Discard => {
            Planned::Now(Frame::error("ERR", "not allowed here"))
        }
        RedisCommand::Watch { .. } => {
            Planned::Now(Frame::error("ERR", "WATCH inside MULTI is not allowed"))
        }
    }
}
