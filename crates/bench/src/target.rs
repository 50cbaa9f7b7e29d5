//! The systems a benchmark can drive, and one client connection to each.
//!
//! Every target offers the same two operations (write a key, read it linearizably) so that
//! one workload runs unchanged against all of them:
//! - **Chorus, native client**: sessions and exactly-once retries (`chorus_client`);
//! - **RESP**: `SET` and `GET` over a plain Redis connection, to Redis or to any Chorus node;
//! - **etcd v3** (cargo feature `etcd`): `Put` and a linearizable `Range`.
//!
//! By default each benchmark client owns one connection, and client `i` starts at endpoint
//! `i mod n`, so the load spreads over the nodes of a cluster alike for every target. With
//! `in_flight` > 1, that many clients share one connection ([`TargetSpec::connect_shared`]),
//! and connection `c` starts at endpoint `c mod n`: RESP connections pipeline their requests
//! ([`crate::pipeline`]); an etcd connection is one gRPC client whose channel multiplexes the
//! clients' concurrent requests. The native Chorus client runs one call at a time (its
//! session numbers its requests one after another), so it cannot be shared: pipelined load
//! reaches Chorus through its RESP port. How an error ends
//! an operation follows HISTORY.md: definite refusals are `fail`, anything that may have
//! taken effect is `unknown`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use chorus_client::{Client, ClientConfig, ClientError};
use chorus_resp::Frame;

use crate::pipeline::SharedResp;
use crate::resp_conn::RespConnection;
use crate::workload::Op;

/// How long one operation may take before the benchmark counts it as an error.
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// What to drive.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum TargetSpec {
    /// A Chorus cluster through the native client (its nodes' RESP addresses).
    Chorus {
        /// The nodes' RESP addresses.
        endpoints: Vec<SocketAddr>,
    },
    /// Any RESP server: Redis, or Chorus nodes through plain `SET`/`GET`.
    Resp {
        /// The servers' addresses.
        endpoints: Vec<SocketAddr>,
    },
    /// An etcd v3 cluster (`host:port` client URLs, with or without `http://`).
    Etcd {
        /// The members' client URLs.
        endpoints: Vec<String>,
    },
}

impl TargetSpec {
    /// A short name of the kind of target (`chorus`, `resp`, `etcd`).
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            TargetSpec::Chorus { .. } => "chorus",
            TargetSpec::Resp { .. } => "resp",
            TargetSpec::Etcd { .. } => "etcd",
        }
    }

    /// Whether this build can drive the target (etcd needs the `etcd` feature).
    #[must_use]
    pub fn supported(&self) -> bool {
        cfg!(feature = "etcd") || !matches!(self, TargetSpec::Etcd { .. })
    }

    fn endpoint_count(&self) -> usize {
        match self {
            TargetSpec::Chorus { endpoints } | TargetSpec::Resp { endpoints } => endpoints.len(),
            TargetSpec::Etcd { endpoints } => endpoints.len(),
        }
    }

    /// Opens connection `index`, to be shared by `in_flight` benchmark clients (each gets a
    /// handle from [`Connection::share`]). With `in_flight` 1 this is [`TargetSpec::connect`].
    ///
    /// # Errors
    /// When the target cannot be reached, or cannot carry several requests on one connection
    /// (the native Chorus client).
    pub async fn connect_shared(
        &self,
        index: usize,
        in_flight: usize,
    ) -> anyhow::Result<Connection> {
        if in_flight == 1 {
            return self.connect(index).await;
        }
        match self {
            TargetSpec::Chorus { .. } => anyhow::bail!(
                "the native Chorus client runs one call at a time and cannot keep {in_flight} \
                 requests in flight on one connection; pipeline through the nodes' RESP ports \
                 (--target resp)"
            ),
            TargetSpec::Resp { endpoints } => {
                anyhow::ensure!(!endpoints.is_empty(), "the resp target has no endpoints");
                let shared =
                    SharedResp::connect(endpoints.clone(), index, in_flight, OP_TIMEOUT).await?;
                Ok(Connection::SharedResp(shared))
            }
            TargetSpec::Etcd { .. } => self.connect(index).await,
        }
    }

    /// Opens the connection of benchmark client `client`.
    ///
    /// # Errors
    /// When the target has no endpoints, cannot be reached, or is not built in.
    pub async fn connect(&self, client: usize) -> anyhow::Result<Connection> {
        let count = self.endpoint_count();
        anyhow::ensure!(count > 0, "the {} target has no endpoints", self.kind());
        let first = client % count;
        match self {
            TargetSpec::Chorus { endpoints } => {
                let mut rotated = endpoints.clone();
                rotated.rotate_left(first);
                let config = ClientConfig {
                    call_timeout: OP_TIMEOUT,
                    ..ClientConfig::new(rotated)
                };
                Ok(Connection::Chorus(Box::new(Client::new(config)?)))
            }
            TargetSpec::Resp { endpoints } => {
                let connection = RespConnection::connect(endpoints[first]).await?;
                Ok(Connection::Resp {
                    endpoints: endpoints.clone(),
                    next: first,
                    connection: Some(connection),
                })
            }
            #[cfg(feature = "etcd")]
            TargetSpec::Etcd { endpoints } => {
                // One member only: given several, etcd-client balances every request over a
                // connection to each of them, so one client would hold three connections,
                // where every other target holds one (to node `i mod n`).
                let endpoint = &endpoints[first];
                let url = if endpoint.contains("://") {
                    endpoint.clone()
                } else {
                    format!("http://{endpoint}")
                };
                let options = etcd_client::ConnectOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(OP_TIMEOUT);
                let client = etcd_client::Client::connect([url], Some(options)).await?;
                Ok(Connection::Etcd(Box::new(client.kv_client())))
            }
            #[cfg(not(feature = "etcd"))]
            TargetSpec::Etcd { .. } => anyhow::bail!(
                "this chorus was built without etcd support; rebuild with `--features etcd` \
                 (it needs protoc: apt-get install protobuf-compiler)"
            ),
        }
    }
}

/// How an operation that got no answer ended, in HISTORY.md's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpError {
    /// True if the operation may have taken effect (`unknown`); false if it definitely did
    /// not (`fail`).
    pub maybe_applied: bool,
    /// What went wrong, for the report.
    pub message: String,
}

impl OpError {
    fn definite(message: impl Into<String>) -> OpError {
        OpError {
            maybe_applied: false,
            message: message.into(),
        }
    }

    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    fn indefinite(message: impl Into<String>) -> OpError {
        OpError {
            maybe_applied: true,
            message: message.into(),
        }
    }

    /// The error for `op`: a read never takes effect, so its errors are always definite.
    fn for_op(op: &Op, maybe_applied: bool, message: String) -> OpError {
        OpError {
            maybe_applied: maybe_applied && !op.is_read(),
            message,
        }
    }
}

/// One benchmark client's connection to its target.
pub enum Connection {
    /// The Chorus native client (it fails over and retries on its own).
    Chorus(Box<Client>),
    /// A RESP connection; reconnects to the next endpoint after an error.
    Resp {
        /// Every server, to move on to after an error.
        endpoints: Vec<SocketAddr>,
        /// The endpoint to use for the next connection.
        next: usize,
        /// The open connection, if any.
        connection: Option<RespConnection>,
    },
    /// A RESP connection shared by several clients, their requests pipelined.
    SharedResp(SharedResp),
    /// An etcd v3 KV client.
    #[cfg(feature = "etcd")]
    Etcd(Box<etcd_client::KvClient>),
}

impl Connection {
    /// Another handle on the same connection, for one more client to share it: a shared
    /// RESP connection, or an etcd client (its gRPC channel multiplexes). `None` for
    /// connections that carry one request at a time.
    #[must_use]
    pub fn share(&self) -> Option<Connection> {
        match self {
            Connection::SharedResp(shared) => Some(Connection::SharedResp(shared.clone())),
            #[cfg(feature = "etcd")]
            Connection::Etcd(client) => Some(Connection::Etcd(client.clone())),
            Connection::Chorus(_) | Connection::Resp { .. } => None,
        }
    }

    /// Runs one operation; a read returns the value it saw (`None`: absent).
    ///
    /// # Errors
    /// [`OpError`], saying whether the operation may have taken effect.
    pub async fn execute(&mut self, op: &Op) -> Result<Option<Bytes>, OpError> {
        match self {
            Connection::Chorus(client) => chorus_execute(client, op).await,
            Connection::Resp {
                endpoints,
                next,
                connection,
            } => resp_execute(endpoints, next, connection, op).await,
            Connection::SharedResp(shared) => shared_resp_execute(shared, op).await,
            #[cfg(feature = "etcd")]
            Connection::Etcd(client) => etcd_execute(client, op).await,
        }
    }
}

async fn chorus_execute(client: &mut Client, op: &Op) -> Result<Option<Bytes>, OpError> {
    let result = match op {
        Op::Get { key } => client.get(key.clone()).await,
        Op::Put { key, value } => client.put(key.clone(), value.clone()).await.map(|()| None),
    };
    result.map_err(|error| {
        let maybe_applied = matches!(error, ClientError::Indefinite(_) | ClientError::Protocol(_));
        OpError::for_op(op, maybe_applied, error.to_string())
    })
}

async fn resp_execute(
    endpoints: &[SocketAddr],
    next: &mut usize,
    slot: &mut Option<RespConnection>,
    op: &Op,
) -> Result<Option<Bytes>, OpError> {
    if slot.is_none() {
        let address = endpoints[*next % endpoints.len()];
        match tokio::time::timeout(OP_TIMEOUT, RespConnection::connect(address)).await {
            Ok(Ok(connection)) => *slot = Some(connection),
            Ok(Err(error)) => {
                *next = (*next + 1) % endpoints.len();
                return Err(OpError::definite(error.to_string()));
            }
            Err(_) => {
                *next = (*next + 1) % endpoints.len();
                return Err(OpError::definite(format!(
                    "cannot connect to {address} in time"
                )));
            }
        }
    }
    let Some(connection) = slot.as_mut() else {
        return Err(OpError::definite("no connection"));
    };
    let arguments = resp_arguments(op);
    let reply = tokio::time::timeout(OP_TIMEOUT, connection.request(&arguments)).await;
    let frame = match reply {
        Ok(Ok(frame)) => frame,
        Ok(Err(error)) => {
            *slot = None;
            *next = (*next + 1) % endpoints.len();
            return Err(OpError::for_op(op, true, error.to_string()));
        }
        Err(_) => {
            *slot = None;
            *next = (*next + 1) % endpoints.len();
            return Err(OpError::for_op(op, true, "no reply in time".to_string()));
        }
    };
    interpret_resp(op, frame)
}

fn resp_arguments(op: &Op) -> Vec<Bytes> {
    match op {
        Op::Get { key } => vec![Bytes::from_static(b"GET"), key.clone()],
        Op::Put { key, value } => vec![Bytes::from_static(b"SET"), key.clone(), value.clone()],
    }
}

async fn shared_resp_execute(shared: &SharedResp, op: &Op) -> Result<Option<Bytes>, OpError> {
    // The connection's task gives up on a reply after OP_TIMEOUT and fails the request;
    // this bound only guards against that task being stuck.
    let bound = OP_TIMEOUT + Duration::from_secs(1);
    match tokio::time::timeout(bound, shared.request(resp_arguments(op))).await {
        Ok(Ok(frame)) => interpret_resp(op, frame),
        Ok(Err(error)) => Err(OpError::for_op(op, error.sent, error.message)),
        Err(_) => Err(OpError::for_op(op, true, "no reply in time".to_string())),
    }
}

/// What a RESP reply to `op` means. Chorus's `UNAVAILABLE` and `BUSY` errors are definite
/// (nothing was proposed); every other error reply may hide a write that happened.
fn interpret_resp(op: &Op, frame: Frame) -> Result<Option<Bytes>, OpError> {
    match (op, frame) {
        (Op::Get { .. }, Frame::Bulk(value)) => Ok(value),
        (Op::Put { .. }, Frame::Simple(text)) if text == "OK" => Ok(None),
        (_, Frame::Error(text)) => {
            let kind = text.split_whitespace().next().unwrap_or("");
            let definite = matches!(kind, "UNAVAILABLE" | "BUSY");
            Err(OpError::for_op(op, !definite, text))
        }
        (_, other) => Err(OpError::for_op(
            op,
            true,
            format!("unexpected reply {other:?}"),
        )),
    }
}

#[cfg(feature = "etcd")]
async fn etcd_execute(
    client: &mut etcd_client::KvClient,
    op: &Op,
) -> Result<Option<Bytes>, OpError> {
    match op {
        Op::Get { key } => match client.get(key.to_vec(), None).await {
            Ok(response) => Ok(response
                .kvs()
                .first()
                .map(|kv| Bytes::copy_from_slice(kv.value()))),
            Err(error) => Err(OpError::definite(error.to_string())),
        },
        Op::Put { key, value } => match client.put(key.to_vec(), value.to_vec(), None).await {
            Ok(_) => Ok(None),
            Err(error) => Err(OpError::indefinite(error.to_string())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put() -> Op {
        Op::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
        }
    }

    fn get() -> Op {
        Op::Get {
            key: Bytes::from_static(b"k"),
        }
    }

    #[test]
    fn resp_replies_are_interpreted() {
        assert_eq!(interpret_resp(&put(), Frame::ok()), Ok(None));
        assert_eq!(
            interpret_resp(&get(), Frame::bulk("v")),
            Ok(Some(Bytes::from_static(b"v")))
        );
        assert_eq!(interpret_resp(&get(), Frame::null()), Ok(None));
    }

    #[test]
    fn only_refusals_are_definite_failures_of_writes() {
        let busy = interpret_resp(&put(), Frame::Error("BUSY try later".into()));
        assert!(!busy.expect_err("an error").maybe_applied);
        let timeout = interpret_resp(&put(), Frame::Error("TIMEOUT unknown".into()));
        assert!(timeout.expect_err("an error").maybe_applied);
        let odd = interpret_resp(&put(), Frame::Integer(1));
        assert!(odd.expect_err("an error").maybe_applied);
        // A read that failed did nothing.
        let read = interpret_resp(&get(), Frame::Error("TIMEOUT unknown".into()));
        assert!(!read.expect_err("an error").maybe_applied);
    }

    #[test]
    fn targets_name_their_kind_and_say_if_built_in() {
        let resp = TargetSpec::Resp { endpoints: vec![] };
        assert_eq!(resp.kind(), "resp");
        assert!(resp.supported());
        let etcd = TargetSpec::Etcd {
            endpoints: vec!["127.0.0.1:2379".into()],
        };
        assert_eq!(etcd.supported(), cfg!(feature = "etcd"));
    }
}
