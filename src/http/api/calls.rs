//! `POST /api/v1/calls` starts a call, `POST /api/v1/calls/{id}/input` answers its question,
//! `GET /api/v1/calls/{id}` reads it back.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::{ApiJson, RuntimeAgent};
use crate::calls::{self, CallInput, StartCall};
use crate::error::{AppError, ProblemKind};
use crate::http::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/calls", post(start))
        .route("/api/v1/calls/{id}", get(show))
        .route("/api/v1/calls/{id}/input", post(input))
}

async fn start(
    State(app): State<AppState>,
    RuntimeAgent(agent_id): RuntimeAgent,
    ApiJson(req): ApiJson<StartCall>,
) -> Result<Response, AppError> {
    let call = calls::start(&app, agent_id, req).await?;
    let location = format!("/api/v1/calls/{}", call.call_id);
    let mut res = (StatusCode::CREATED, call.json).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}

async fn show(
    State(app): State<AppState>,
    RuntimeAgent(agent_id): RuntimeAgent,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    match calls::find(&app, agent_id, &id).await? {
        Some(call) => Ok(Json(call).into_response()),
        None => Err(AppError::problem(
            ProblemKind::NotFound,
            format!("no call {id:?} for this agent"),
        )),
    }
}

async fn input(
    State(app): State<AppState>,
    RuntimeAgent(agent_id): RuntimeAgent,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CallInput>,
) -> Result<Response, AppError> {
    Ok(Json(calls::answer(&app, agent_id, &id, req).await?).into_response())
}
