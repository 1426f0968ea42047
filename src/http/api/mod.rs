//! The JSON APIs under `/api/v1`: the call runtime's, and the management API.

pub mod calls;
pub mod manage;

use axum::Router;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::AppState;
use super::body::{read_limited, require_json};
use crate::domain::payload::Problem;
use crate::error::{ApiProblem, AppError, ProblemKind};

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(calls::router())
        .merge(manage::router())
        .layer(axum::middleware::map_response(
            crate::http::fallback::api_problems,
        ))
}

/// The agent a runtime token speaks for (`Authorization: Bearer pcrt_…`).
pub struct RuntimeAgent(pub i64);

impl FromRequestParts<AppState> for RuntimeAgent {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, AppError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::auth::bearer)
            .ok_or_else(|| {
                AppError::problem(
                    ProblemKind::Unauthorized,
                    "send a runtime token as Authorization: Bearer <token>",
                )
            })?;
        if let Some(agent_id) = app.catalog.cached_token_agent(token) {
            return Ok(Self(agent_id));
        }
        // An address that keeps presenting unknown tokens is refused before the lookup.
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if let Some(ip) = peer {
            app.ingest_limits
                .lookup(ip)
                .map_err(|e| AppError::Problem(rate_limited(e)))?;
        }
        match app.catalog.token_agent(token).await? {
            Some(agent_id) => Ok(Self(agent_id)),
            None => {
                if let Some(ip) = peer {
                    app.ingest_limits.lookup_failed(ip);
                }
                Err(AppError::problem(
                    ProblemKind::Unauthorized,
                    "the runtime token is not valid",
                ))
            }
        }
    }
}

/// A JSON body whose rejections speak problem+json: 415, 413, 400 malformed, 422 wrong shape.
pub struct ApiJson<T>(pub T);

use crate::domain::text::ObjectOnly;

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiProblem;

    async fn from_request(req: Request, app: &AppState) -> Result<Self, ApiProblem> {
        let (parts, body) = req.into_parts();
        require_json(&parts.headers)?;
        let bytes = read_limited(&parts.headers, body, app.body_limit).await?;
        api_json(&bytes).map(ApiJson)
    }
}

/// A body read as [`ApiJson`] reads it: an object, its refusals pointing at the fields.
pub fn api_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiProblem> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // Every body is an object: serde would also read a struct from a list of its fields.
    let ObjectOnly(value) = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        use serde_json::error::Category;
        let pointer = pointer_of(&e);
        let inner = e.into_inner();
        match inner.classify() {
            Category::Data => ApiProblem::with_errors(
                ProblemKind::ValidationFailed,
                vec![Problem::at_pointer(pointer, describe(&inner))],
            ),
            // serde_json calls a number, list or `true` where a name (an enum) belongs
            // a syntax error ("expected value"); the body is JSON, so say what it is.
            Category::Syntax
                if !pointer.is_empty()
                    && !inner.to_string().starts_with("recursion limit")
                    && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() =>
            {
                ApiProblem::with_errors(
                    ProblemKind::ValidationFailed,
                    vec![Problem::at_pointer(
                        pointer,
                        "invalid type: expected a string, one of the names this field takes",
                    )],
                )
            }
            _ => ApiProblem::new(ProblemKind::MalformedJson, inner.to_string()),
        }
    })?;
    // Trailing characters after the value are malformed JSON, as serde_json::from_slice says.
    de.end()
        .map_err(|e| ApiProblem::new(ProblemKind::MalformedJson, e.to_string()))?;
    Ok(value)
}

/// The JSON pointer of the value a deserialisation error is about: its path, and for a
/// missing or unknown field, the field itself.
fn pointer_of(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    use serde_path_to_error::Segment;
    let mut pointer = String::new();
    for segment in e.path().iter() {
        pointer.push('/');
        match segment {
            Segment::Seq { index } => pointer.push_str(&index.to_string()),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"))
            }
            Segment::Unknown => pointer.push('-'),
        }
    }
    // The path ends at the object for a missing field (an unknown one is in the path).
    let message = e.inner().to_string();
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some(end) = rest.find('`')
    {
        pointer.push('/');
        pointer.push_str(&rest[..end].replace('~', "~0").replace('/', "~1"));
    }
    pointer
}

/// serde's message without its position (`at line 1 column 27`): the pointer says where.
fn describe(e: &serde_json::Error) -> String {
    let message = e.to_string();
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message,
    }
}

/// A 429 problem for a limit; `Retry-After` is added by [`ApiProblem`]'s kind.
pub fn rate_limited(e: crate::http::rate::Exceeded) -> ApiProblem {
    ApiProblem::new(ProblemKind::RateLimited, e.describe()).retry_after(e.retry_after_secs())
}
