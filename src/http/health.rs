//! Liveness and readiness probes.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// The process is up and serving.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready to take webhooks and calls: the database answers and writes succeed. Not ready
/// (503, with the reason) while the last write to the database or the ingest journal failed
/// and none has succeeded since (a full disk), or while acknowledged webhooks and calls wait in the
/// journal for the database to take them. After a while without writes, or a second after a
/// failure, the writer first writes a page to find out (see `Writer::readiness`).
async fn readyz(State(app): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let not_ready = |reason: &str| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "reason": reason })),
        )
    };
    if !app.db.ping().await {
        return not_ready("database unreachable");
    }
    match app.writer.readiness().await {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Err(reason) => not_ready(&reason),
    }
}
