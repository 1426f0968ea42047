//! The JSON API of the call runtime, under `/api/v1`.

pub mod calls;

use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::AppState;
use super::body::{read_limited, require_json};
use crate::error::{ApiProblem, AppError, ProblemKind};

pub fn router() -> Router<AppState> {
    Router::new().merge(calls::router())
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
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                AppError::problem(
                    ProblemKind::Unauthorized,
                    "send a runtime token as Authorization: Bearer <token>",
                )
            })?;
        match app.catalog.token_agent(token).await? {
            Some(agent_id) => Ok(Self(agent_id)),
            None => Err(AppError::problem(
                ProblemKind::Unauthorized,
                "the runtime token is not valid",
            )),
        }
    }
}

/// A JSON body whose rejections speak problem+json: 415, 413, 400 malformed, 422 wrong shape.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiProblem;

    async fn from_request(req: Request, app: &AppState) -> Result<Self, ApiProblem> {
        let (parts, body) = req.into_parts();
        require_json(&parts.headers)?;
        let bytes = read_limited(&parts.headers, body, app.body_limit).await?;
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Data => ApiProblem::new(ProblemKind::ValidationFailed, e.to_string()),
                _ => ApiProblem::new(ProblemKind::MalformedJson, e.to_string()),
            }
        })
    }
}
