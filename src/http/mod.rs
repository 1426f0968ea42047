//! The HTTP layer: thin handlers that extract, call the domain and the store, and answer.

pub mod admin;
pub mod api;
pub mod assets;
pub mod body;
pub mod connect;
pub mod fallback;
pub mod health;
pub mod ingest;
pub mod metrics;
pub mod openapi;
pub mod pages;
pub mod rate;

use std::sync::{Arc, Mutex};

use axum::Router;

use crate::auth::keys::SecretHash;
use crate::auth::session::Flash;
use crate::catalog::Catalog;
use crate::phones::Phones;
use crate::store::Db;
use crate::store::writer::Writer;
use crate::wakeups::Wakeups;

/// Shared by every handler. Cloning it (which every extractor that reads the state does)
/// is one reference count, not one per part.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What the handlers share: the store, the caches and the server's settings.
pub struct Shared {
    pub db: Db,
    /// Configuration cached for the hot paths.
    pub catalog: Catalog,
    /// This server's row in the `servers` table.
    pub server: i64,
    pub writer: Writer,
    pub wakeups: Arc<dyn Wakeups>,
    /// Phone number normalisation, with recent answers remembered.
    pub phones: Arc<Phones>,
    /// Secrets and notices waiting to be shown once.
    pub flash: Arc<Flash>,
    /// The hash of the one-time first-run setup token, while no admin exists.
    pub setup_token: Arc<Mutex<Option<SecretHash>>>,
    /// Base of generated URLs, without a trailing slash.
    pub public_url: Arc<str>,
    pub body_limit: usize,
    /// How long an admin's session lasts.
    pub session_ttl: std::time::Duration,
    /// Request rates of the ingest URLs, per webhook and per source address.
    pub ingest_limits: Arc<rate::IngestLimits>,
    /// Ingest requests refused without a valid key, counted until they are written.
    pub refusals: Arc<crate::store::refusals::RefusalCounter>,
    /// How long deliveries are kept.
    pub delivery_retention: std::time::Duration,
    /// Voice platforms' connections: their latest requests and the requests already taken.
    pub connect: Arc<crate::connect::log::ConnectState>,
    /// What `GET /metrics` exposes.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Every route of the server.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health::router())
        .merge(metrics::router())
        .merge(ingest::router())
        .merge(connect::router())
        .merge(api::router())
        .merge(openapi::router())
        .merge(pages::router())
        .merge(admin::router())
        .merge(assets::router())
        .fallback(fallback::no_route)
        .with_state(state)
}

/// Renders a page, or a bare 500 (logged) if the template fails.
pub fn render(t: impl askama::Template) -> axum::response::Response {
    use axum::response::IntoResponse;
    match t.render() {
        Ok(html) => axum::response::Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
            )
                .into_response()
        }
    }
}
