//! The HTTP layer: thin handlers that extract, call the domain and the store, and answer.

pub mod api;
pub mod assets;
pub mod body;
pub mod health;
pub mod ingest;
pub mod pages;

use std::sync::Arc;

use axum::Router;

use crate::catalog::Catalog;
use crate::phones::Phones;
use crate::store::Db;
use crate::store::writer::Writer;
use crate::wakeups::Wakeups;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    /// Configuration cached for the hot paths.
    pub catalog: Catalog,
    pub writer: Writer,
    pub wakeups: Arc<dyn Wakeups>,
    /// Phone number normalisation, with recent answers remembered.
    pub phones: Arc<Phones>,
    /// Base of generated URLs, without a trailing slash.
    pub public_url: Arc<str>,
    pub body_limit: usize,
}

/// Every route of the server.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health::router())
        .merge(ingest::router())
        .merge(api::router())
        .merge(pages::router())
        .merge(assets::router())
        .with_state(state)
}
