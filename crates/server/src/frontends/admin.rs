//! The HTTP admin server: `GET /status` (JSON) and `GET /metrics` (Prometheus text).
//!
//! Both read what the driver last published, so they never wait on the driver or the disk.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
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

/// The admin routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

/// Serves the admin routes until the process ends.
///
/// # Errors
/// If the listener fails.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) -> std::io::Result<()> {
    axum::serve(listener, router(shared)).await
}
