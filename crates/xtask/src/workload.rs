//! The clients of a nemesis run and the history they record.
//!
//! Half the workers use the native client (`chorus-client`: sessions, exactly-once retries,
//! failover), half speak plain RESP over their own connection, as `redis-cli` would (no
//! retries: a write whose answer is lost is `unknown`). Each worker runs one operation at a
//! time and records it in the HISTORY.md format with nanosecond timestamps from the run's one
//! monotonic clock.
//!
//! Keys come in two kinds, renewed every [`EPOCH`] so that no key's history grows large enough
//! to make the linearizability search expensive:
//! - **register keys** `e<epoch>r<k>`: `get`, `put` and `cas` (RESP `SET k v IFEQ old`);
//! - **append keys** `e<epoch>a<k>`: `get` and `append` of a suffix unique to the operation,
//!   so that the final value says exactly which appends took effect; every acknowledged one
//!   must be there ([`lost_appends`]).
//!
//! With `--redis-py` the workers are instead threads of one python3 process running redis-py
//! ([`RedisPy`], `scripts/nemesis_redis_py.py`): the same operations, through redis-py's
//! default retry policy, each client's connections bound to its own session.
//!
//! How outcomes are classified: a read that fails is `fail` (it has no effect). A write that
//! the cluster refused before proposing it (`UNAVAILABLE`, `BUSY`, `MOVED`, or a connection that
//! never opened) is `fail`; any other error, a timeout or a lost connection is `unknown`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chorus_check::history::{OpKind, OpStatus, Operation, Output};
use chorus_client::{Client, ClientConfig, ClientError};
use chorus_core::Prng;
use chorus_resp::{Frame, Limits, encode_request, parse_reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// How long one family of keys is in use.
pub const EPOCH: Duration = Duration::from_secs(5);
/// Register keys per epoch.
const REGISTER_KEYS: u64 = 4;
/// Append keys per epoch.
const APPEND_KEYS: u64 = 5;
/// The most operations one worker records; it stops when it reaches this (a bound, not a
/// target: at a few hundred operations per second no run comes near it).
const OPS_PER_WORKER_MAX: usize = 2_000_000;

/// The run's clock: nanoseconds since the start.
#[derive(Clone, Copy, Debug)]
pub struct Clock(pub Instant);

impl Clock {
    /// Nanoseconds since the start.
    #[must_use]
    pub fn now(self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Which wire a worker uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// The native client.
    Native,
    /// Plain RESP commands.
    Resp,
}

/// What an operation came to, before it is stamped.
struct Outcome {
    status: OpStatus,
    output: Output,
}

impl Outcome {
    fn ok(output: Output) -> Outcome {
        Outcome {
            status: OpStatus::Ok,
            output,
        }
    }
    fn fail() -> Outcome {
        Outcome {
            status: OpStatus::Fail,
            output: Output::None,
        }
    }
    fn unknown() -> Outcome {
        Outcome {
            status: OpStatus::Unknown,
            output: Output::None,
        }
    }
}

/// An operation to run.
struct Request {
    kind: OpKind,
    key: String,
    value: Option<String>,
    from: Option<String>,
}

/// A worker's connection.
enum Session {
    Native(Box<Client>),
    Resp(RespConnection),
}

/// A native-client configuration with short timeouts, so that faults show as `unknown`
/// operations rather than stalls.
#[must_use]
pub fn native_config(endpoints: Vec<SocketAddr>) -> ClientConfig {
    let mut config = ClientConfig::new(endpoints);
    config.attempt_timeout = Duration::from_secs(1);
    config.call_timeout = Duration::from_secs(4);
    config.backoff_max = Duration::from_millis(200);
    config
}

/// Runs one worker until `stop`; returns what it recorded.
pub async fn worker(
    client: u64,
    wire: Wire,
    mut endpoints: Vec<SocketAddr>,
    seed: u64,
    clock: Clock,
    stop: Arc<AtomicBool>,
) -> Vec<Operation> {
    let mut rng = Prng::new(seed);
    let first = usize::try_from(client).unwrap_or(0) % endpoints.len().max(1);
    endpoints.rotate_left(first);
    let mut session = match wire {
        Wire::Native => match Client::new(native_config(endpoints)) {
            Ok(client) => Session::Native(Box::new(client)),
            Err(_) => return Vec::new(),
        },
        Wire::Resp => Session::Resp(RespConnection::new(endpoints)),
    };
    // The last value this worker saw per register key, to make cas operations that can swap.
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut history = Vec::new();
    let mut counter = 0u64;
    while !stop.load(Ordering::Relaxed) && history.len() < OPS_PER_WORKER_MAX {
        counter += 1;
        let epoch = clock.0.elapsed().as_secs() / EPOCH.as_secs();
        let unique = format!("{client}.{counter}");
        let roll = rng.range(0, 100);
        let register = format!("e{epoch}r{}", rng.range(0, REGISTER_KEYS));
        let append = format!("e{epoch}a{}", rng.range(0, APPEND_KEYS));
        let request = match roll {
            0..20 => get(register),
            20..40 => get(append),
            40..65 => Request {
                kind: OpKind::Append,
                key: append,
                value: Some(format!("[{unique}]")),
                from: None,
            },
            65..82 => Request {
                kind: OpKind::Put,
                key: register,
                value: Some(unique),
                from: None,
            },
            _ => Request {
                kind: OpKind::Cas,
                from: Some(seen.get(&register).cloned().unwrap_or_else(|| "0".into())),
                key: register,
                value: Some(unique),
            },
        };
        let call = clock.now();
        let outcome = match &mut session {
            Session::Native(native) => run_native(native, &request).await,
            Session::Resp(resp) => run_resp(resp, &request).await,
        };
        let ret = clock.now().max(call);
        // Think time keeps the history (and each key's search) small; after a failure it also
        // keeps a worker whose node is down from spinning.
        let pause = match outcome.status {
            OpStatus::Ok => rng.range(2, 12),
            OpStatus::Fail | OpStatus::Unknown => rng.range(50, 150),
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
        if let (OpKind::Get, Output::Value(Some(value))) = (request.kind, &outcome.output) {
            seen.insert(request.key.clone(), value.clone());
        }
        history.push(Operation {
            client,
            kind: request.kind,
            key: request.key,
            value: request.value,
            from: request.from,
            call,
            ret: Some(ret),
            status: outcome.status,
            output: outcome.output,
        });
    }
    history
}

fn get(key: String) -> Request {
    Request {
        kind: OpKind::Get,
        key,
        value: None,
        from: None,
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn run_native(client: &mut Client, request: &Request) -> Outcome {
    let key = Bytes::from(request.key.clone());
    let value = Bytes::from(request.value.clone().unwrap_or_default());
    let write_error = |error: ClientError| match error {
        ClientError::Unavailable(_) | ClientError::Refused(_) | ClientError::NoEndpoints => {
            Outcome::fail()
        }
        ClientError::Indefinite(_) | ClientError::Protocol(_) => Outcome::unknown(),
    };
    match request.kind {
        OpKind::Get => match client.get(key).await {
            Ok(value) => Outcome::ok(Output::Value(value.map(|v| text(&v)))),
            Err(_) => Outcome::fail(),
        },
        OpKind::Put => match client.put(key, value).await {
            Ok(()) => Outcome::ok(Output::None),
            Err(error) => write_error(error),
        },
        OpKind::Append => match client.append(key, value).await {
            Ok(length) => Outcome::ok(Output::Length(length)),
            Err(error) => write_error(error),
        },
        OpKind::Cas => {
            let from = Bytes::from(request.from.clone().unwrap_or_default());
            match client.cas(key, from, value).await {
                Ok(swapped) => Outcome::ok(Output::Swapped(swapped)),
                Err(error) => write_error(error),
            }
        }
    }
}

/// How a RESP call went wrong.
enum RespFailure {
    /// The request was never sent (no connection).
    NotSent,
    /// It was sent and its answer was lost.
    Lost,
}

/// One plain RESP connection that moves to the next node after any failure.
pub struct RespConnection {
    endpoints: Vec<SocketAddr>,
    current: usize,
    stream: Option<(TcpStream, BytesMut)>,
}

impl RespConnection {
    /// A connection to `endpoints`, opened on first use.
    #[must_use]
    pub fn new(endpoints: Vec<SocketAddr>) -> RespConnection {
        RespConnection {
            endpoints,
            current: 0,
            stream: None,
        }
    }

    /// Sends one command and reads its reply, within 3 s.
    async fn call(&mut self, arguments: &[&[u8]]) -> Result<Frame, RespFailure> {
        let result = timeout(Duration::from_secs(3), self.call_inner(arguments)).await;
        let result = result.unwrap_or(Err(RespFailure::Lost));
        match &result {
            Err(_) => {
                self.stream = None;
                self.current = (self.current + 1) % self.endpoints.len().max(1);
            }
            // Primary-backup: a server that is not the primary names the one that is.
            Ok(Frame::Error(error)) if error.starts_with("MOVED") => {
                let named = error
                    .split_whitespace()
                    .nth(2)
                    .and_then(|address| address.parse::<SocketAddr>().ok())
                    .and_then(|address| self.endpoints.iter().position(|&e| e == address));
                self.stream = None;
                self.current = named.unwrap_or((self.current + 1) % self.endpoints.len().max(1));
            }
            Ok(Frame::Error(error)) if refused(error) => {
                self.stream = None;
                self.current = (self.current + 1) % self.endpoints.len().max(1);
            }
            Ok(_) => {}
        }
        result
    }

    async fn call_inner(&mut self, arguments: &[&[u8]]) -> Result<Frame, RespFailure> {
        if self.stream.is_none() {
            let address = *self
                .endpoints
                .get(self.current)
                .ok_or(RespFailure::NotSent)?;
            let stream = timeout(Duration::from_secs(1), TcpStream::connect(address))
                .await
                .map_err(|_| RespFailure::NotSent)?
                .map_err(|_| RespFailure::NotSent)?;
            let _ = stream.set_nodelay(true);
            self.stream = Some((stream, BytesMut::with_capacity(4096)));
        }
        let Some((stream, buffer)) = self.stream.as_mut() else {
            return Err(RespFailure::NotSent);
        };
        let mut request = BytesMut::new();
        encode_request(arguments, &mut request);
        stream
            .write_all(&request)
            .await
            .map_err(|_| RespFailure::Lost)?;
        let limits = Limits::default();
        loop {
            match parse_reply(buffer, &limits) {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(_) => return Err(RespFailure::Lost),
            }
            match stream.read_buf(buffer).await {
                Ok(0) | Err(_) => return Err(RespFailure::Lost),
                Ok(_) => {}
            }
        }
    }
}

/// Whether a RESP error says the write was refused before anything was proposed (`MOVED`:
/// a primary-backup server that is not the primary proposes nothing).
fn refused(error: &str) -> bool {
    ["UNAVAILABLE", "BUSY", "MOVED"]
        .iter()
        .any(|kind| error.starts_with(kind))
}

async fn run_resp(connection: &mut RespConnection, request: &Request) -> Outcome {
    let key = request.key.as_bytes();
    let value = request.value.as_deref().unwrap_or("").as_bytes();
    let reply = match request.kind {
        OpKind::Get => connection.call(&[b"GET", key]).await,
        OpKind::Put => connection.call(&[b"SET", key, value]).await,
        OpKind::Append => connection.call(&[b"APPEND", key, value]).await,
        OpKind::Cas => {
            let from = request.from.as_deref().unwrap_or("").as_bytes();
            connection.call(&[b"SET", key, value, b"IFEQ", from]).await
        }
    };
    match (request.kind, reply) {
        (OpKind::Get, Ok(Frame::Bulk(value))) => {
            Outcome::ok(Output::Value(value.map(|v| text(&v))))
        }
        (OpKind::Get, _) => Outcome::fail(),
        (_, Err(RespFailure::NotSent)) => Outcome::fail(),
        (_, Ok(Frame::Error(error))) if refused(&error) => Outcome::fail(),
        (OpKind::Put, Ok(Frame::Simple(ok))) if ok == "OK" => Outcome::ok(Output::None),
        (OpKind::Append, Ok(Frame::Integer(length))) => match u64::try_from(length) {
            Ok(length) => Outcome::ok(Output::Length(length)),
            Err(_) => Outcome::ok(Output::None),
        },
        (OpKind::Cas, Ok(Frame::Simple(ok))) if ok == "OK" => Outcome::ok(Output::Swapped(true)),
        (OpKind::Cas, Ok(Frame::Bulk(None))) => Outcome::ok(Output::Swapped(false)),
        _ => Outcome::unknown(),
    }
}

/// Reads every key once through the native client, as client `client`, after the cluster has
/// healed. Returns the reads as operations (to be checked with the rest) and the final values.
pub async fn read_back(
    client: u64,
    endpoints: Vec<SocketAddr>,
    keys: Vec<String>,
    clock: Clock,
) -> (Vec<Operation>, BTreeMap<String, Option<String>>) {
    let mut ops = Vec::new();
    let mut values = BTreeMap::new();
    let Ok(mut native) = Client::new(native_config(endpoints)) else {
        return (ops, values);
    };
    for key in keys {
        // A read that fails is retried: the cluster has healed, so it should answer.
        for _ in 0..5 {
            let call = clock.now();
            let result = native.get(Bytes::from(key.clone())).await;
            let ret = clock.now().max(call);
            if let Ok(value) = result {
                let value = value.map(|v| text(&v));
                ops.push(Operation {
                    client,
                    kind: OpKind::Get,
                    key: key.clone(),
                    value: None,
                    from: None,
                    call,
                    ret: Some(ret),
                    status: OpStatus::Ok,
                    output: Output::Value(value.clone()),
                });
                values.insert(key.clone(), value);
                break;
            }
        }
    }
    (ops, values)
}

/// The acknowledged appends whose suffix is missing from their key's final value (a key that
/// could not be read back counts all its acknowledged appends as missing).
#[must_use]
pub fn lost_appends(
    history: &[Operation],
    finals: &BTreeMap<String, Option<String>>,
) -> Vec<Operation> {
    history
        .iter()
        .filter(|op| op.kind == OpKind::Append && op.status == OpStatus::Ok)
        .filter(|op| {
            let suffix = op.value.as_deref().unwrap_or("");
            !matches!(finals.get(&op.key), Some(Some(value)) if value.contains(suffix))
        })
        .cloned()
        .collect()
}

/// Whether the redis-py clients bind their connections to sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Binding {
    /// Each client's connections are bound to its session (exactly-once retries).
    Bound,
    /// No binding: the control, where a retried write may apply twice.
    Unbound,
}

/// The redis-py clients of a run: one python3 process, one thread per client (see
/// `crates/xtask/scripts/nemesis_redis_py.py`), that records the HISTORY.md format with times
/// since it started.
pub struct RedisPy {
    child: std::process::Child,
    /// The run's clock when the process was started: the script's times count from a moment
    /// after this, so adding it never moves an operation later than it happened, and keeps
    /// the order of the script's operations among themselves.
    started_ns: u64,
}

impl RedisPy {
    /// Starts `clients` redis-py clients on `endpoints`.
    ///
    /// # Errors
    /// If python3 cannot be started.
    pub fn start(
        seed: u64,
        clients: u64,
        binding: Binding,
        endpoints: &[SocketAddr],
        clock: Clock,
    ) -> anyhow::Result<RedisPy> {
        use anyhow::Context;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/nemesis_redis_py.py");
        let started_ns = clock.now();
        let child = std::process::Command::new("python3")
            .arg(script)
            .arg(seed.to_string())
            .arg(clients.to_string())
            .arg(match binding {
                Binding::Bound => "bound",
                Binding::Unbound => "unbound",
            })
            .args(endpoints.iter().map(ToString::to_string))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("cannot start python3 for the redis-py clients")?;
        Ok(RedisPy { child, started_ns })
    }

    /// Stops the clients and returns what they recorded, on the run's clock.
    ///
    /// # Errors
    /// If the script fails or its history does not read.
    pub fn finish(mut self) -> anyhow::Result<Vec<Operation>> {
        use anyhow::Context;
        use std::io::Write;
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"stop\n");
        }
        let output = self
            .child
            .wait_with_output()
            .context("the redis-py clients did not finish")?;
        anyhow::ensure!(
            output.status.success(),
            "the redis-py clients failed: {}",
            output.status
        );
        let mut ops = chorus_check::history::read_jsonl(output.stdout.as_slice())
            .context("the redis-py clients' history does not read")?;
        for op in &mut ops {
            op.call += self.started_ns;
            op.ret = op.ret.map(|ret| ret + self.started_ns);
        }
        Ok(ops)
    }
}
