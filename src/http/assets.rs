//! Static assets, compiled into the binary.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::AppState;

const APP_CSS: &str = include_str!("../../static/app.css");
const APP_JS: &str = include_str!("../../static/app.js");
/// The flow canvas: its script and stylesheet, loaded by the flow editor's page only.
const CANVAS_CSS: &str = include_str!("../../static/canvas.css");
const CANVAS_JS: &str = include_str!("../../static/canvas.js");
const FAVICON: &str = include_str!("../../static/favicon.svg");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/static/app.css", get(app_css))
        .route("/static/app.js", get(app_js))
        .route("/static/canvas.css", get(|| asset("text/css", CANVAS_CSS)))
        .route(
            "/static/canvas.js",
            get(|| asset("text/javascript", CANVAS_JS)),
        )
        .route(
            "/static/favicon.svg",
            get(|| asset("image/svg+xml", FAVICON)),
        )
        // Asked for by browsers and tools that do not read the pages' icon link.
        .route("/favicon.ico", get(|| asset("image/svg+xml", FAVICON)))
}

async fn app_css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        APP_CSS,
    )
}

async fn app_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        APP_JS,
    )
}

async fn asset(kind: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, format!("{kind}; charset=utf-8")),
            (header::CACHE_CONTROL, "public, max-age=3600".to_owned()),
        ],
        body,
    )
}
