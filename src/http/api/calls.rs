//! `POST /api/v1/calls` starts a call, `POST /api/v1/calls/{id}/input` answers its question,
//! `GET /api/v1/calls/{id}` reads it back.

use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::{ApiJson, RuntimeAgent};
use crate::calls::{self, CallInput, StartCall};
use crate::error::{ApiProblem, AppError, ProblemKind};
use crate::http::AppState;
use crate::metrics::{CallOutcome, CallSource};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/calls", post(start))
        .route("/api/v1/calls/{id}", get(show))
        .route("/api/v1/calls/{id}/input", post(input))
}

#[utoipa::path(
    post,
    path = "/api/v1/calls",
    tag = "calls",
    operation_id = "startCall",
    summary = "Start a call",
    description = "Runs the agent's pre-call actions (waiting for each Webhook action's data up \
                   to its time wait before fallback), resolves the variables and runs the First \
                   Flow up to the first question or the end.",
    request_body(content = StartCall, content_type = "application/json"),
    responses(
        (status = 201, description = "The call, as started", body = crate::calls::CallView,
            headers(("Location" = String, description = "`/api/v1/calls/{callId}`")),
            links(
                ("getCall" = (operation_id = "getCall", parameters(("id" = "$response.body#/callId")))),
                ("answerCall" = (operation_id = "answerCall", parameters(("id" = "$response.body#/callId")))),
            )),
        (status = 400, description = "`malformed-json`: not JSON", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 413, description = "`payload-too-large`: the body is over the limit", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported-media-type`: not `application/json`", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`: no token, or not a live runtime token", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "`forbidden`: the token belongs to another agent", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no such agent", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "`validation-failed`: missing or unknown fields, or `from`/`to` cannot be a phone number", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 408, description = "`request-timeout`: the request took too long to arrive; nothing was kept", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "`rate-limited`: too many requests; retry after `Retry-After` seconds", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
        (status = 503, description = "`unavailable`: the request could not be stored or served now; nothing was kept", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ),
    security(("runtimeToken" = [])),
)]
async fn start(
    State(app): State<AppState>,
    Counted(RuntimeAgent(agent_id)): Counted<RuntimeAgent>,
    Counted(ApiJson(req)): Counted<ApiJson<StartCall>>,
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

/// A part of a call start whose refusal (no valid token, not a call) is counted as a refused
/// call; the call start counts what comes after.
struct Counted<T>(T);

fn count_refusal(app: &AppState, status: StatusCode) {
    app.metrics
        .call(CallSource::Api, CallOutcome::of_failure(status.as_u16()));
}

impl FromRequestParts<AppState> for Counted<RuntimeAgent> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, AppError> {
        match RuntimeAgent::from_request_parts(parts, app).await {
            Ok(agent) => Ok(Self(agent)),
            Err(e) => {
                let status = match &e {
                    AppError::Problem(p) => p.kind.status(),
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                count_refusal(app, status);
                Err(e)
            }
        }
    }
}

impl FromRequest<AppState> for Counted<ApiJson<StartCall>> {
    type Rejection = ApiProblem;

    async fn from_request(req: Request, app: &AppState) -> Result<Self, ApiProblem> {
        match ApiJson::from_request(req, app).await {
            Ok(body) => Ok(Self(body)),
            Err(p) => {
                count_refusal(app, p.kind.status());
                Err(p)
            }
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/calls/{id}",
    tag = "calls",
    operation_id = "getCall",
    summary = "Read a call back, with every step of every turn",
    params(("id" = String, Path, description = "The call's id (`callId`)")),
    responses(
        (status = 200, description = "The call", body = crate::calls::CallView),
        (status = 401, description = "`unauthorized`: no token, or not a live runtime token", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "`forbidden`: the token belongs to another agent", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no such call for this token's agent", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 408, description = "`request-timeout`: the request took too long to arrive; nothing was kept", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "`rate-limited`: too many requests; retry after `Retry-After` seconds", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
        (status = 503, description = "`unavailable`: the request could not be stored or served now; nothing was kept", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ),
    security(("runtimeToken" = [])),
)]
async fn show(
    State(app): State<AppState>,
    RuntimeAgent(agent_id): RuntimeAgent,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    match calls::find(&app, agent_id, &id).await? {
        Some(call) => Ok(Json(call).into_response()),
        None => Err(AppError::problem(
            ProblemKind::NotFound,
            format!(
                "no call {:?} for this agent",
                crate::domain::ids::excerpt(&id)
            ),
        )),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/calls/{id}/input",
    tag = "calls",
    operation_id = "answerCall",
    summary = "Answer the call's question; the flow goes on",
    params(("id" = String, Path, description = "The call's id (`callId`)")),
    request_body(content = CallInput, content_type = "application/json"),
    responses(
        (status = 200, description = "The call, with the steps of this turn (the first is the `answer`)", body = crate::calls::CallView),
        (status = 400, description = "`malformed-json`: not JSON", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 413, description = "`payload-too-large`: the body is over the limit", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported-media-type`: not `application/json`", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`: no token, or not a live runtime token", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "`forbidden`: the token belongs to another agent", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "`not-found`: no such call for this token's agent", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "`call-conflict`: the call has ended, or another answer continued it first", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "`validation-failed`: the awaited answer is missing or mistyped", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 408, description = "`request-timeout`: the request took too long to arrive; nothing was kept", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "`rate-limited`: too many requests; retry after `Retry-After` seconds", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
        (status = 503, description = "`unavailable`: the request could not be stored or served now; nothing was kept", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ),
    security(("runtimeToken" = [])),
)]
async fn input(
    State(app): State<AppState>,
    RuntimeAgent(agent_id): RuntimeAgent,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CallInput>,
) -> Result<Response, AppError> {
    Ok(Json(calls::answer(&app, agent_id, &id, req).await?).into_response())
}
