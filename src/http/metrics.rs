//! `GET /metrics`: the server's counters, gauges and histograms in Prometheus' text format.
//!
//! Served on the main listener to an admin API token (`Authorization: Bearer pcat_…`; a
//! read-only one is enough), which a Prometheus scrape configuration sends with its
//! `authorization` setting. Without one the answer is 401 and says nothing of the server.
//! The series hold no slug, phone number or id, only counts by bounded labels.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::api::manage::ApiAdmin;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(metrics))
        .layer(axum::middleware::map_response(
            super::fallback::api_problems,
        ))
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    summary = "The server's metrics, for Prometheus",
    description = "Counters, gauges and histograms in Prometheus' text exposition format \
                   (version 0.0.4): webhooks by outcome, call starts by source and outcome, \
                   how long calls waited and how fast waiting calls were woken, the writer's \
                   queue and groups, database round trips, open connections. Every series is \
                   listed in the README (Metrics). An admin API token is required; a \
                   read-only one is enough.",
    responses(
        (status = 200, description = "The metrics", body = String,
            content_type = "text/plain; version=0.0.4; charset=utf-8"),
        (status = 401, description = "`unauthorized`: no admin API token, or not a live one", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 408, description = "`request-timeout`: the request took too long to arrive", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "`rate-limited`: too many requests with unknown tokens from this address", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
        (status = 503, description = "`unavailable`: the token could not be checked now", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ),
    security(("adminToken" = [])),
)]
async fn metrics(State(app): State<AppState>, _admin: ApiAdmin) -> Response {
    let mut res = app.metrics.render(app.writer.queued()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
