//! The HTTP admin server: `GET /status` (JSON), `GET /metrics` (Prometheus text) and
//! `POST /snapshot` (Raft: take a snapshot of the state machine now).
//!
//! The first two read what the driver last published, so they never wait on the driver or
//! the disk; the last sets a flag the driver reads on its next tick.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::{IntoResponse, Json};
use axum::routing::{get, post};
use tokio::net::TcpListener;

use crate::runtime::boundary::{NodeStatus, Shared};

async fn status(State(shared): State<Arc<Shared>>) -> Json<NodeStatus> {
    let status = shared.status.read().map(|s| s.clone()).unwrap_or_default();
    Json(status)
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
}

async fn snapshot(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    shared
        .snapshot_requested
        .store(true, std::sync::atomic::Ordering::Relaxed);
    (StatusCode::ACCEPTED, "a snapshot was requested\n")
}

/// The admin routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/snapshot", post(snapshot))
        .with_state(shared)
}

/// Serves the admin routes until the process ends.
///
/// # Errors
/// If the listener fails.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) -> std::io::Result<()> {
    axum::serve(listener, router(shared)).await
}
