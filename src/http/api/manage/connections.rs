//! Voice platforms' connections of an agent: list, create (the URL to paste into the
//! platform), change (secret, mapping, deadline), delete. The platform's secret is taken,
//! never shown again (only its last characters).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiAdmin, ManageErrors, agent_of, json};
use crate::connect::{Mapping, Platform, wait_cap};
use crate::domain::payload::Problem;
use crate::domain::text::given_name;
use crate::error::{ApiProblem, AppError, ProblemKind};
use crate::http::AppState;
use crate::http::api::ApiJson;
use crate::store::connections::{self, Change, ConnectionRow, NewConnection};
use crate::store::rfc3339;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/agents/{agentId}/connections",
            get(list_connections).post(create_connection),
        )
        .route(
            "/api/v1/agents/{agentId}/connections/{connectionId}",
            patch(update_connection).delete(delete_connection),
        )
}

/// A connection as the API shows it: never its secret.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionView {
    id: i64,
    /// The agent whose calls it starts.
    #[schema(examples("oJvfgs3Eg8DEMOGnQES7"))]
    agent_id: String,
    platform: Platform,
    name: String,
    /// The URL to paste into the platform.
    url: String,
    /// Vapi only: `secret` (X-Vapi-Secret or a Bearer credential) or `hmac`.
    scheme: Option<String>,
    /// The secret's last characters (none for a short one).
    secret_last_chars: String,
    mapping: Mapping,
    /// How long the platform waits for an answer, and how long a call may wait for its data
    /// (the deadline less Precall's margin for this platform).
    deadline_ms: i64,
    margin_ms: i64,
    max_wait_ms: i64,
    #[schema(format = DateTime)]
    created_at: String,
}

/// A connection as the API and the CLI show it, its URL on `public_url`.
pub fn view(public_url: &str, c: &ConnectionRow) -> ConnectionView {
    let platform = c.platform();
    ConnectionView {
        id: c.id,
        agent_id: c.agent_public_id.clone(),
        platform,
        name: c.name.clone(),
        url: crate::http::connect::url(public_url, &c.slug),
        scheme: c.scheme().map(str::to_owned),
        secret_last_chars: c.secret_last_chars.clone(),
        mapping: c.mapping(),
        deadline_ms: c.deadline_ms,
        margin_ms: platform.margin_ms(),
        max_wait_ms: wait_cap(platform, c.deadline_ms).as_millis() as i64,
        created_at: rfc3339(c.created_at),
    }
}

/// An agent's connections.
#[derive(Serialize, ToSchema)]
pub struct ConnectionList {
    connections: Vec<ConnectionView>,
}

/// A 422 pointing into `mapping` at the part at fault.
fn mapping_problem(e: crate::connect::MappingProblem) -> AppError {
    use crate::connect::MappingPart;
    let escape = |s: &str| s.replace('~', "~0").replace('/', "~1");
    let pointer = match &e.part {
        MappingPart::DefaultAgent => "/mapping/defaultAgent".to_owned(),
        MappingPart::Flows => "/mapping/flowAgents".to_owned(),
        MappingPart::Flow(key) => format!("/mapping/flowAgents/{}", escape(key)),
    };
    ApiProblem::with_errors(
        ProblemKind::ValidationFailed,
        vec![Problem::at_pointer(pointer, e.to_string())],
    )
    .into()
}

/// A secret or its scheme refused, pointed at whichever is at fault.
fn secret_problem(e: String) -> AppError {
    invalid(
        if e.contains("scheme") {
            "scheme"
        } else {
            "secret"
        },
        e,
    )
}

/// A 422 naming the body's top-level `field`.
fn invalid(field: &str, detail: impl Into<String>) -> AppError {
    ApiProblem::with_errors(
        ProblemKind::ValidationFailed,
        vec![Problem::at(field, detail.into())],
    )
    .into()
}

/// Checks a deadline for the platform: only Telnyx's can change (1 to 10 000 ms, more than
/// the margin).
pub fn check_deadline(platform: Platform, ms: i64) -> Result<(), String> {
    if platform != Platform::Telnyx && ms != platform.deadline_ms() {
        return Err(format!(
            "{}'s deadline is {} ms and cannot be changed",
            platform.label(),
            platform.deadline_ms()
        ));
    }
    let min = platform.margin_ms() + 100;
    if !(min..=platform.max_deadline_ms()).contains(&ms) {
        return Err(format!(
            "the deadline must be {min} to {} ms (it must leave room for the {} ms margin)",
            platform.max_deadline_ms(),
            platform.margin_ms()
        ));
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/agents/{agentId}/connections", tag = "manage", operation_id = "listConnections",
    summary = "The agent's voice platform connections (never a secret)",
    params(("agentId" = String, Path, description = "The agent's public id")),
    responses((status = 200, description = "The connections", body = ConnectionList), ManageErrors),
    security(("adminToken" = [])))]
pub async fn list_connections(
    State(app): State<AppState>,
    _: ApiAdmin,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let a = agent_of(&app, &id).await?;
    let rows = connections::of_agent(&app.db, a.id).await?;
    let connections = rows.iter().map(|c| view(&app.public_url, c)).collect();
    Ok(json(StatusCode::OK, &ConnectionList { connections }))
}

/// A new connection.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewConnectionRequest {
    platform: Platform,
    /// The platform's secret that verifies its requests: Retell's API key (with the webhook
    /// badge), Synthflow's webhook secret, Vapi's server secret or HMAC secret, Telnyx's
    /// public key (base64), Twilio's auth token.
    #[schema(min_length = 1, max_length = 1000)]
    secret: String,
    /// Vapi only: `secret` (the default: sent as X-Vapi-Secret or Bearer, only its hash is
    /// kept) or `hmac` (Vapi's HMAC credential: SHA256, hex, `{timestamp}.{body}`).
    #[serde(default)]
    scheme: Option<String>,
    #[serde(default)]
    #[schema(max_length = 100)]
    name: Option<String>,
    #[serde(default)]
    mapping: Option<Mapping>,
    /// Telnyx only: the assistant's dynamic-variables webhook timeout, 1500 by default.
    #[serde(default)]
    deadline_ms: Option<i64>,
}

#[utoipa::path(post, path = "/api/v1/agents/{agentId}/connections", tag = "manage", operation_id = "createConnection",
    summary = "Connect a voice platform: the URL to paste into it, verified with its secret",
    params(("agentId" = String, Path, description = "The agent's public id")),
    request_body(content = NewConnectionRequest, content_type = "application/json"),
    responses((status = 201, description = "The connection", body = ConnectionView), ManageErrors),
    security(("adminToken" = [])))]
pub async fn create_connection(
    State(app): State<AppState>,
    _: ApiAdmin,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<NewConnectionRequest>,
) -> Result<Response, AppError> {
    let a = agent_of(&app, &id).await?;
    let (secret, kind) = connections::secret_for(req.platform, req.scheme.as_deref(), &req.secret)
        .map_err(secret_problem)?;
    let mapping = req.mapping.unwrap_or_default();
    mapping.check(req.platform).map_err(mapping_problem)?;
    let deadline_ms = req.deadline_ms.unwrap_or(req.platform.deadline_ms());
    check_deadline(req.platform, deadline_ms).map_err(|e| invalid("deadlineMs", e))?;
    // Left out, the name is the platform's; sent, it must be a name.
    let name = given_name(req.name.as_deref(), 100)
        .map_err(|e| invalid("name", e))?
        .unwrap_or_else(|| req.platform.label().to_owned());
    let row = connections::create(
        &app.db,
        NewConnection {
            agent_id: a.id,
            platform: req.platform,
            name,
            secret,
            secret_kind: kind,
            mapping,
            deadline_ms,
        },
    )
    .await?;
    app.catalog.invalidate();
    Ok(json(StatusCode::CREATED, &view(&app.public_url, &row)))
}

/// What to change of a connection (what is left out stays).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionChange {
    #[serde(default)]
    #[schema(min_length = 1, max_length = 1000)]
    secret: Option<String>,
    #[serde(default)]
    scheme: Option<String>,
    #[serde(default)]
    #[schema(max_length = 100)]
    name: Option<String>,
    #[serde(default)]
    mapping: Option<Mapping>,
    #[serde(default)]
    deadline_ms: Option<i64>,
}

async fn connection_of(app: &AppState, agent_id: i64, id: &str) -> Result<ConnectionRow, AppError> {
    let not_found = || {
        AppError::problem(
            ProblemKind::NotFound,
            format!(
                "no connection {:?} for this agent",
                crate::domain::ids::excerpt(id)
            ),
        )
    };
    let n: i64 = id.parse().map_err(|_| not_found())?;
    connections::find(&app.db, n)
        .await?
        .filter(|c| c.agent_id == agent_id)
        .ok_or_else(not_found)
}

#[utoipa::path(patch, path = "/api/v1/agents/{agentId}/connections/{connectionId}", tag = "manage", operation_id = "updateConnection",
    summary = "Change a connection's secret, mapping, name or deadline; its URL stays",
    params(("agentId" = String, Path, description = "The agent's public id"),
        ("connectionId" = String, Path, description = "The connection's id")),
    request_body(content = ConnectionChange, content_type = "application/json"),
    responses((status = 200, description = "The connection", body = ConnectionView), ManageErrors),
    security(("adminToken" = [])))]
pub async fn update_connection(
    State(app): State<AppState>,
    _: ApiAdmin,
    Path((id, connection)): Path<(String, String)>,
    ApiJson(req): ApiJson<ConnectionChange>,
) -> Result<Response, AppError> {
    let a = agent_of(&app, &id).await?;
    let c = connection_of(&app, a.id, &connection).await?;
    let platform = c.platform();
    let secret = match (&req.secret, &req.scheme) {
        (Some(s), scheme) => Some(
            connections::secret_for(platform, scheme.as_deref().or(c.scheme()), s)
                .map_err(secret_problem)?,
        ),
        (None, Some(_)) => {
            return Err(invalid("scheme", "a new scheme comes with its secret"));
        }
        (None, None) => None,
    };
    if let Some(m) = &req.mapping {
        m.check(platform).map_err(mapping_problem)?;
    }
    if let Some(d) = req.deadline_ms {
        check_deadline(platform, d).map_err(|e| invalid("deadlineMs", e))?;
    }
    let name = given_name(req.name.as_deref(), 100).map_err(|e| invalid("name", e))?;
    connections::update(
        &app.db,
        a.id,
        c.id,
        Change {
            name,
            secret,
            mapping: req.mapping,
            deadline_ms: req.deadline_ms,
        },
    )
    .await?;
    app.catalog.invalidate();
    let row = connection_of(&app, a.id, &connection).await?;
    Ok(json(StatusCode::OK, &view(&app.public_url, &row)))
}

#[utoipa::path(delete, path = "/api/v1/agents/{agentId}/connections/{connectionId}", tag = "manage", operation_id = "deleteConnection",
    summary = "Delete a connection: its URL stops answering at once",
    params(("agentId" = String, Path, description = "The agent's public id"),
        ("connectionId" = String, Path, description = "The connection's id")),
    responses((status = 204, description = "Deleted"), ManageErrors),
    security(("adminToken" = [])))]
pub async fn delete_connection(
    State(app): State<AppState>,
    _: ApiAdmin,
    Path((id, connection)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let a = agent_of(&app, &id).await?;
    let c = connection_of(&app, a.id, &connection).await?;
    connections::delete(&app.db, a.id, c.id).await?;
    app.catalog.invalidate();
    app.connect.forget(c.id);
    Ok(StatusCode::NO_CONTENT.into_response())
}
