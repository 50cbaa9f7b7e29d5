//! The HTTP admin server: `GET /status` (JSON), `GET /metrics` (Prometheus text),
//! `POST /snapshot` (Raft: take a snapshot of the state machine now), and the membership
//! operations `POST /admin/add-learner`, `/admin/promote`, `/admin/remove` and
//! `/admin/transfer-leader` (Raft; what `chorus admin` calls). TESTING ONLY, with
//! `[debug] fault_injection` on: `POST /debug/stall-fsync?ms=N` makes the node's storage
//! thread hold every sync for the next N milliseconds (a hung disk; answers `404` when fault
//! injection is off, `400` for a missing or bad `ms`).
//!
//! The first two read what the driver last published, so they never wait on the driver or
//! the disk; `/snapshot` sets a flag the driver reads on its next tick. A membership
//! operation goes to the driver through its queue; only the leader takes one, and any other
//! node answers `421 Misdirected Request` naming the leader and its admin address, so that
//! the caller asks there. The leader answers once the change has committed (or the
//! transfer's target leads); an operation that cannot be taken *now* (another change still
//! committing, a learner still catching up, a leader that has not committed in its term
//! yet) is retried for up to [`ADMIN_WAIT`] before the caller hears `503`.
//!
//! Every membership answer is JSON: `{"ok": true, "message": ...}`, or `{"ok": false,
//! "error": ..., "leader": id, "leader_admin": "host:port"}` (the last two when known).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::http::header;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use chorus_core::NodeId;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::runtime::boundary::{
    AdminAccepted, AdminError, AdminRequest, Input, MemberAddress, NodeStatus, Shared, offer,
};

/// How long a membership operation may take, retries and the wait for its commit included.
pub const ADMIN_WAIT: Duration = Duration::from_secs(10);

/// What the admin routes need.
#[derive(Clone)]
pub struct AdminState {
    /// What the driver publishes.
    pub shared: Arc<Shared>,
    /// The driver's queue.
    pub inputs: SyncSender<Input>,
    /// This node's cluster: a node of another cluster is not added.
    pub cluster_id: String,
    /// Whether the `/debug` fault-injection endpoints are served (`[debug]
    /// fault_injection`).
    pub fault_injection: bool,
}

/// The longest fsync stall `POST /debug/stall-fsync` takes.
pub const FSYNC_STALL_MAX: Duration = Duration::from_secs(60);

/// The body of `POST /admin/add-learner`: the new node and where it listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddLearnerBody {
    /// The cluster the new node belongs to, if the caller knows it (it must be this one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// The new node's id (never used before in this cluster).
    pub id: u64,
    /// Its peer address.
    pub peer: SocketAddr,
    /// Its RESP address.
    #[serde(default)]
    pub redis: Option<SocketAddr>,
    /// Its admin address.
    pub admin: SocketAddr,
}

/// The body of the other membership operations: the node they are about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeBody {
    /// The node.
    pub id: u64,
}

/// The answer to a membership operation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminAnswer {
    /// Whether the operation is done.
    pub ok: bool,
    /// What was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The leader, when this node is not it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<u64>,
    /// The leader's admin address, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_admin: Option<SocketAddr>,
}

fn answer(code: StatusCode, answer: AdminAnswer) -> Response {
    (code, Json(answer)).into_response()
}

fn failure(code: StatusCode, error: impl Into<String>) -> Response {
    answer(
        code,
        AdminAnswer {
            error: Some(error.into()),
            ..AdminAnswer::default()
        },
    )
}

fn success(message: String) -> Response {
    answer(
        StatusCode::OK,
        AdminAnswer {
            ok: true,
            message: Some(message),
            ..AdminAnswer::default()
        },
    )
}

fn refusal(error: &AdminError) -> Response {
    let code = match error {
        AdminError::NotLeader { .. } => StatusCode::MISDIRECTED_REQUEST,
        AdminError::Retry(_) | AdminError::Busy => StatusCode::SERVICE_UNAVAILABLE,
        AdminError::Refused(_) => StatusCode::CONFLICT,
        AdminError::Unsupported => StatusCode::NOT_IMPLEMENTED,
    };
    let (leader, leader_admin) = match error {
        AdminError::NotLeader { leader, admin } => (leader.map(|l| l.0), *admin),
        _ => (None, None),
    };
    answer(
        code,
        AdminAnswer {
            error: Some(error.to_string()),
            leader,
            leader_admin,
            ..AdminAnswer::default()
        },
    )
}

/// How an operation reads in an answer: `promote 4`.
fn describe(request: AdminRequest) -> String {
    match request {
        AdminRequest::AddLearner(entry) => format!("add-learner {}", entry.id.0),
        AdminRequest::Promote(id) => format!("promote {}", id.0),
        AdminRequest::Remove(id) => format!("remove {}", id.0),
        AdminRequest::TransferLeader(id) => format!("transfer-leader {}", id.0),
    }
}

fn current(shared: &Shared) -> NodeStatus {
    shared.status.read().map(|s| s.clone()).unwrap_or_default()
}

/// Hands `request` to the driver, retrying what may succeed shortly until `deadline`.
async fn submit(
    state: &AdminState,
    request: AdminRequest,
    deadline: Instant,
) -> Result<AdminAccepted, AdminError> {
    loop {
        let (reply, answer) = tokio::sync::oneshot::channel();
        offer(&state.inputs, Input::Admin { request, reply }).map_err(|_| AdminError::Busy)?;
        match answer.await {
            Ok(Err(AdminError::Retry(reason))) => {
                if Instant::now() >= deadline {
                    return Err(AdminError::Retry(format!(
                        "{reason} (gave up after retrying)"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(result) => return result,
            Err(_) => return Err(AdminError::Busy),
        }
    }
}

/// Carries out a membership operation and waits for its outcome.
async fn operate(state: &AdminState, request: AdminRequest) -> Response {
    let deadline = Instant::now() + ADMIN_WAIT;
    let accepted = match submit(state, request, deadline).await {
        Ok(accepted) => accepted,
        Err(error) => return refusal(&error),
    };
    match accepted {
        AdminAccepted::AlreadyDone => success(format!(
            "nothing to do: {} is done already",
            describe(request)
        )),
        AdminAccepted::Proposed { index, term } => loop {
            let status = current(&state.shared);
            if status.term != term {
                return failure(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the leader changed before the change (index {index}, term {term}) \
                         committed: its outcome is unknown; see `chorus status`"
                    ),
                );
            }
            // In one term the entry at an index is the leader's: committed in this term, it
            // is the one proposed.
            if status.commit >= index {
                return success(format!(
                    "{} committed at index {index}; voters {:?} learners {:?}",
                    describe(request),
                    status.voters.unwrap_or_default(),
                    status.learners.unwrap_or_default()
                ));
            }
            if Instant::now() >= deadline {
                return failure(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the change (index {index}) has not committed yet; see `chorus status`"
                    ),
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        },
        AdminAccepted::Transferring { term } => {
            let AdminRequest::TransferLeader(target) = request else {
                return failure(StatusCode::INTERNAL_SERVER_ERROR, "unexpected answer");
            };
            // The status read first may predate the transfer: it is abandoned only once the
            // transfer was seen under way and then gone with this node still leading.
            let mut seen = false;
            loop {
                let status = current(&state.shared);
                seen |= status.transfer_target.is_some();
                if status.term > term && status.leader == Some(target.0) {
                    return success(format!("node {} leads (term {})", target.0, status.term));
                }
                let abandoned = seen
                    && status.term == term
                    && status.role == "leader"
                    && status.transfer_target.is_none();
                if abandoned || Instant::now() >= deadline {
                    return failure(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "the transfer to node {} did not complete (leader now: {:?}, \
                             term {}); try again",
                            target.0, status.leader, status.term
                        ),
                    );
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

async fn add_learner(
    State(state): State<AdminState>,
    Json(body): Json<AddLearnerBody>,
) -> Response {
    if let Some(cluster_id) = body
        .cluster_id
        .as_ref()
        .filter(|id| **id != state.cluster_id)
    {
        return failure(
            StatusCode::CONFLICT,
            format!(
                "node {} belongs to cluster {cluster_id:?}, this is {:?}",
                body.id, state.cluster_id
            ),
        );
    }
    let entry = MemberAddress {
        id: NodeId(body.id),
        peer: body.peer,
        redis: body.redis,
        admin: body.admin,
    };
    operate(&state, AdminRequest::AddLearner(entry)).await
}

async fn promote(State(state): State<AdminState>, Json(body): Json<NodeBody>) -> Response {
    operate(&state, AdminRequest::Promote(NodeId(body.id))).await
}

async fn remove(State(state): State<AdminState>, Json(body): Json<NodeBody>) -> Response {
    operate(&state, AdminRequest::Remove(NodeId(body.id))).await
}

async fn transfer_leader(State(state): State<AdminState>, Json(body): Json<NodeBody>) -> Response {
    operate(&state, AdminRequest::TransferLeader(NodeId(body.id))).await
}

async fn status(State(state): State<AdminState>) -> Json<NodeStatus> {
    Json(current(&state.shared))
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.shared.metrics.encode(),
    )
}

async fn snapshot(State(state): State<AdminState>) -> impl IntoResponse {
    state
        .shared
        .snapshot_requested
        .store(true, std::sync::atomic::Ordering::Relaxed);
    (StatusCode::ACCEPTED, "a snapshot was requested\n")
}

/// The stall `POST /debug/stall-fsync` asks for: the query's `ms`, or why it is refused.
fn stall_duration(query: Option<&str>) -> Result<Duration, String> {
    let mut ms = None;
    for pair in query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
    {
        match pair.split_once('=') {
            Some(("ms", value)) if ms.is_none() => ms = Some(value),
            Some(("ms", _)) => return Err("ms is given twice".into()),
            _ => return Err(format!("unknown parameter {pair:?}; only ms=N is taken")),
        }
    }
    let Some(ms) = ms else {
        return Err("missing ms: POST /debug/stall-fsync?ms=N (milliseconds)".into());
    };
    let ms: u64 = ms
        .parse()
        .map_err(|_| format!("ms must be a whole number of milliseconds, not {ms:?}"))?;
    let duration = Duration::from_millis(ms);
    if duration > FSYNC_STALL_MAX {
        return Err(format!(
            "ms must be at most {} (one minute)",
            FSYNC_STALL_MAX.as_millis()
        ));
    }
    Ok(duration)
}

async fn stall_fsync(
    State(state): State<AdminState>,
    RawQuery(query): RawQuery,
) -> impl IntoResponse {
    if !state.fault_injection {
        return (
            StatusCode::NOT_FOUND,
            "fault injection is off on this node: set [debug] fault_injection = true\n".to_string(),
        );
    }
    match stall_duration(query.as_deref()) {
        Ok(duration) => {
            state.shared.fsync_stall.stall_for(duration);
            tracing::warn!(
                ms = duration.as_millis() as u64,
                "TESTING ONLY: the storage thread's syncs are stalled"
            );
            (
                StatusCode::OK,
                format!("syncs stall until {} ms from now\n", duration.as_millis()),
            )
        }
        Err(error) => (StatusCode::BAD_REQUEST, format!("{error}\n")),
    }
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/snapshot", post(snapshot))
        .route("/admin/add-learner", post(add_learner))
        .route("/admin/promote", post(promote))
        .route("/admin/remove", post(remove))
        .route("/admin/transfer-leader", post(transfer_leader))
        .route("/debug/stall-fsync", post(stall_fsync))
        .with_state(state)
}

/// Serves the admin routes until the process ends.
///
/// # Errors
/// If the listener fails.
pub async fn serve(listener: TcpListener, state: AdminState) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_takes_only_a_whole_number_of_milliseconds_up_to_a_minute() {
        assert_eq!(
            stall_duration(Some("ms=1500")),
            Ok(Duration::from_millis(1500))
        );
        assert_eq!(stall_duration(Some("ms=0")), Ok(Duration::ZERO));
        for bad in [
            None,
            Some(""),
            Some("ms="),
            Some("ms=-1"),
            Some("ms=1.5"),
            Some("ms=abc"),
            Some("ms=60001"),
            Some("ms=18446744073709551616"),
            Some("ms=1&ms=2"),
            Some("seconds=1"),
        ] {
            let refused = stall_duration(bad);
            assert!(refused.is_err(), "{bad:?} was taken: {refused:?}");
        }
    }
}
