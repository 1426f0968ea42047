//! Variables (in the draft), runtime tokens, and what happened: deliveries and calls, with
//! filters and cursor pagination.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{ApiAdmin, ManageErrors, agent_of, if_match, json, wanted_revision};
use crate::domain::document::{MAX_TEXT, VariableDoc};
use crate::domain::payload::Problem;
use crate::domain::variables::{VarType, VariableName};
use crate::error::{ApiProblem, AppError, ProblemKind};
use crate::http::AppState;
use crate::http::api::ApiJson;
use crate::store::calls::{self as stored_calls, CallFilter, OutcomeFilter};
use crate::store::{deliveries, documents, rfc3339, tokens};

pub fn router() -> Router<AppState> {
    let agent = "/api/v1/agents/{agentId}";
    Router::new()
        .route(&format!("{agent}/variables"), get(list_variables))
        .route(
            &format!("{agent}/variables/{{name}}"),
            axum::routing::put(put_variable).delete(delete_variable),
        )
        .route(
            &format!("{agent}/runtime-tokens"),
            get(list_runtime_tokens).post(create_runtime_token),
        )
        .route(
            &format!("{agent}/runtime-tokens/{{tokenId}}"),
            delete(revoke_runtime_token),
        )
        .route(&format!("{agent}/deliveries"), get(list_deliveries))
        .route(&format!("{agent}/calls"), get(list_calls))
}

/// A declared variable of the draft.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VariableView {
    name: String,
    #[serde(rename = "type")]
    #[schema(examples("number"))]
    ty: String,
    #[schema(value_type = crate::domain::variables::VariableValue)]
    default: Value,
    description: String,
    /// Whether the published version declares it so: ingest and calls check against that.
    published: bool,
}

/// The draft's variable schema.
#[derive(Serialize, ToSchema)]
pub struct VariableList {
    variables: Vec<VariableView>,
    /// Present in every call.
    system: Vec<&'static str>,
}

#[utoipa::path(get, path = "/api/v1/agents/{agentId}/variables", tag = "manage", operation_id = "listVariables",
    summary = "The draft's variable schema",
    params(("agentId" = String, Path, description = "The agent's public id")),
    responses((status = 200, description = "The variables", body = VariableList), ManageErrors),
    security(("adminToken" = [])))]
pub async fn list_variables(
    State(app): State<AppState>,
    _: ApiAdmin,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let a = agent_of(&app, &id).await?;
    let draft = crate::drafts::current(&app.db, a.id).await?;
    let published = documents::published(&app.db, a.id).await?;
    let variables = draft
        .document
        .variables
        .iter()
        .map(|v| VariableView {
            name: v.name.clone(),
            ty: v.ty.as_str().into(),
            default: v.default.clone(),
            description: v.description.clone(),
            published: published
                .as_ref()
                .is_some_and(|p| p.document.variables.contains(v)),
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &VariableList {
            variables,
            system: crate::domain::variables::SYSTEM_VARIABLES.to_vec(),
        },
    ))
}

/// A variable's declaration.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariableDeclaration {
    #[serde(rename = "type")]
    #[schema(examples("number"))]
    ty: String,
    /// A value of the type; null or absent for none.
    #[serde(default)]
    #[schema(value_type = crate::domain::variables::VariableValue)]
    default: Value,
    #[serde(default)]
    #[schema(max_length = 2000)]
    description: String,
}

fn invalid(pointer: &str, detail: String) -> AppError {
    ApiProblem::with_errors(
        ProblemKind::ValidationFailed,
        vec![Problem::at(pointer, detail)],
    )
    .into()
}

#[utoipa::path(put, path = "/api/v1/agents/{agentId}/variables/{name}", tag = "manage", operation_id = "putVariable",
    summary = "Declare a variable in the draft, or change its declaration",
    params(("agentId" = String, Path, description = "The agent's public id"),
        ("name" = String, Path, description = "The variable's name"),
        ("If-Match" = Option<String>, Header, description = "The draft's ETag: refused (412) if it changed since")),
    request_body(content = VariableDeclaration, content_type = "application/json"),
    responses((status = 200, description = "Declared in the draft", body = VariableView,
            headers(("ETag" = String, description = "The draft's new ETag"))),
        (status = 412, description = "`precondition-failed`: the draft changed since that ETag", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        ManageErrors),
    security(("adminToken" = [])))]
pub async fn put_variable(
    State(app): State<AppState>,
    who: ApiAdmin,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<VariableDeclaration>,
) -> Result<Response, AppError> {
    let a = agent_of(&app, &id).await?;
    let name = VariableName::parse(&name).map_err(|e| {
        AppError::problem(
            ProblemKind::NotFound,
            format!("no variable can be named so: {e}"),
        )
    })?;
    if name.is_system() {
        return Err(invalid(
            "",
            format!("{name} is a system variable: it cannot be declared"),
        ));
    }
    let ty = VarType::parse(&req.ty).map_err(|e| invalid("type", e))?;
    let default = if req.default.is_null() {
        Value::Null
    } else {
        ty.coerce(&req.default)
            .map_err(|e| invalid("default", format!("default: {e}")))?
    };
    if req.description.chars().count() > MAX_TEXT {
        return Err(invalid(
            "description",
            format!("description is longer than {MAX_TEXT} characters"),
        ));
    }
    let expected = wanted_revision(&app, a.id, if_match(&headers)?).await?;
    let var = VariableDoc {
        name: name.to_string(),
        ty,
        default,
        description: req.description.trim().to_owned(),
        source: None,
    };
    let saved_var = var.clone();
    let (_, saved) = crate::drafts::edit(&app.db, a.id, expected, &who.by(), |doc| {
        match doc.variables.iter_mut().find(|v| v.name == var.name) {
            Some(v) => {
                let source = v.source.take();
                *v = VariableDoc { source, ..var };
            }
            None => doc.variables.push(var),
        }
        Ok(())
    })
    .await?;
    app.catalog.invalidate();
    let body = VariableView {
        name: saved_var.name,
        ty: saved_var.ty.as_str().into(),
        default: saved_var.default,
        description: saved_var.description,
        published: false,
    };
    Ok(super::with_etag(
        json(StatusCode::OK, &body),
        saved.revision,
    ))
}

#[utoipa::path(delete, path = "/api/v1/agents/{agentId}/variables/{name}", tag = "manage", operation_id = "deleteVariable",
    summary = "Remove a variable from the draft",
    params(("agentId" = String, Path, description = "The agent's public id"),
        ("name" = String, Path, description = "The variable's name"),
        ("If-Match" = Option<String>, Header, description = "The draft's ETag: refused (412) if it changed since")),
    responses((status = 204, description = "Removed from the draft",
            headers(("ETag" = String, description = "The draft's new ETag"))),
        (status = 412, description = "`precondition-failed`: the draft changed since that ETag", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        ManageErrors),
    security(("adminToken" = [])))]
pub async fn delete_variable(
    State(app): State<AppState>,
    who: ApiAdmin,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let a = agent_of(&app, &id).await?;
    let draft = crate::drafts::current(&app.db, a.id).await?;
    if !draft.document.variables.iter().any(|v| v.name == name) {
        return Err(AppError::problem(
            ProblemKind::NotFound,
            format!(
                "the draft declares no variable {:?}",
                crate::domain::ids::excerpt(&name)
            ),
        ));
    }
    let expected = wanted_revision(&app, a.id, if_match(&headers)?).await?;
    let (_, saved) = crate::drafts::edit(&app.db, a.id, expected, &who.by(), |doc| {
        doc.variables.retain(|v| v.name != name);
        Ok(())
    })
    .await?;
    app.catalog.invalidate();
    Ok(super::with_etag(
        StatusCode::NO_CONTENT.into_response(),
        saved.revision,
    ))
}

/// A runtime token as listed: never the token.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeTokenView {
    id: i64,
    name: String,
    last_chars: String,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    revoked_at: Option<String>,
}

/// The agent's runtime tokens.
#[derive(Serialize, ToSchema)]
pub struct RuntimeTokenList {
    tokens: Vec<RuntimeTokenView>,
}

#[utoipa::path(get, path = "/api/v1/agents/{agentId}/runtime-tokens", tag = "manage", operation_id = "listRuntimeTokens",
    summary = "The agent's runtime tokens (never the tokens themselves)",
    params(("agentId" = String, Path, description = "The agent's public id")),
    responses((status = 200, description = "The tokens, newest first", body = RuntimeTokenList), ManageErrors),
    security(("adminToken" = [])))]
pub async fn list_runtime_tokens(
    State(app): State<AppState>,
    _: ApiAdmin,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let a = agent_of(&app, &id).await?;
    let tokens = tokens::list(&app.db, a.id)
        .await?
        .into_iter()
        .map(|t| RuntimeTokenView {
            id: t.id,
            name: t.name,
            last_chars: t.last_chars,
            created_at: rfc3339(t.created_at),
            revoked_at: t.revoked_at.map(rfc3339),
        })
        .collect();
    Ok(json(StatusCode::OK, &RuntimeTokenList { tokens }))
}

/// A runtime token to make.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRuntimeToken {
    #[schema(min_length = 1, max_length = 80, examples("telephony"))]
    name: String,
}

/// A runtime token just made, shown this once.
#[derive(Serialize, ToSchema)]
pub struct RuntimeTokenMade {
    id: i64,
    token: String,
}

#[utoipa::path(post, path = "/api/v1/agents/{agentId}/runtime-tokens", tag = "manage", operation_id = "createRuntimeToken",
    summary = "Make a runtime token for the call runtime (shown once)",
    params(("agentId" = String, Path, description = "The agent's public id")),
    request_body(content = NewRuntimeToken, content_type = "application/json"),
    responses((status = 201, description = "The token, shown only now", body = RuntimeTokenMade), ManageErrors),
    security(("adminToken" = [])))]
pub async fn create_runtime_token(
    State(app): State<AppState>,
    _: ApiAdmin,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<NewRuntimeToken>,
) -> Result<Response, AppError> {
    let a = agent_of(&app, &id).await?;
    let (id, token) = tokens::create_with_id(&app.db, a.id, &req.name)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict(m) => invalid("name", m),
            other => other.into(),
        })?;
    Ok(json(
        StatusCode::CREATED,
        &RuntimeTokenMade {
            id,
            token: token.expose().to_owned(),
        },
    ))
}

#[utoipa::path(delete, path = "/api/v1/agents/{agentId}/runtime-tokens/{tokenId}", tag = "manage", operation_id = "revokeRuntimeToken",
    summary = "Revoke a runtime token: it stops working at once",
    params(("agentId" = String, Path, description = "The agent's public id"),
        ("tokenId" = i64, Path, description = "The token's id, as listed")),
    responses((status = 204, description = "Revoked"), ManageErrors),
    security(("adminToken" = [])))]
pub async fn revoke_runtime_token(
    State(app): State<AppState>,
    _: ApiAdmin,
    Path((id, token)): Path<(String, i64)>,
) -> Result<Response, AppError> {
    let a = agent_of(&app, &id).await?;
    tokens::revoke(&app.db, a.id, token).await?;
    app.catalog.invalidate();
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// How many a page lists at most.
const PAGE_MAX: i64 = 500;

/// Filters and cursor of a list of deliveries.
#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// Only this Webhook action's (its key).
    webhook: Option<String>,
    /// Only this outcome: refused, cached, used, expired, late, replayed.
    outcome: Option<String>,
    /// The `next` of the previous page.
    before: Option<i64>,
    /// At most this many (1 to 500, default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

/// A page of deliveries, newest first.
#[derive(Serialize, ToSchema)]
pub struct DeliveryPage {
    /// Each as the CLI shows it.
    #[schema(value_type = Vec<Object>)]
    deliveries: Vec<Value>,
    /// `before` for the next page; none at the end.
    next: Option<i64>,
}

fn page_size(limit: Option<i64>) -> Result<i64, AppError> {
    match limit {
        None => Ok(100),
        Some(n) if (1..=PAGE_MAX).contains(&n) => Ok(n),
        Some(_) => Err(ApiProblem::with_errors(
            ProblemKind::BadRequest,
            vec![Problem::at(
                "limit",
                format!("limit must be 1 to {PAGE_MAX}"),
            )],
        )
        .into()),
    }
}

#[utoipa::path(get, path = "/api/v1/agents/{agentId}/deliveries", tag = "manage", operation_id = "listDeliveries",
    summary = "What reached the agent's webhooks with a valid key, newest first",
    params(("agentId" = String, Path, description = "The agent's public id"), DeliveryQuery),
    responses((status = 200, description = "A page of deliveries", body = DeliveryPage), ManageErrors),
    security(("adminToken" = [])))]
pub async fn list_deliveries(
    State(app): State<AppState>,
    _: ApiAdmin,
    Path(id): Path<String>,
    Query(q): Query<DeliveryQuery>,
) -> Result<Response, AppError> {
    let a = agent_of(&app, &id).await?;
    let limit = page_size(q.limit)?;
    let action = match &q.webhook {
        Some(key) => Some(
            documents::endpoint(&app.db, a.id, key)
                .await?
                .ok_or_else(|| {
                    AppError::problem(ProblemKind::NotFound, "no webhook with this key")
                })?
                .id,
        ),
        None => None,
    };
    app.writer.settle().await?;
    let rows = deliveries::for_agent(
        &app.db,
        a.id,
        action,
        q.outcome.as_deref(),
        q.before,
        limit + 1,
    )
    .await?;
    let more = rows.len() as i64 > limit;
    let rows = &rows[..rows.len().min(limit as usize)];
    Ok(json(
        StatusCode::OK,
        &DeliveryPage {
            deliveries: rows.iter().map(|d| d.to_json()).collect(),
            next: rows.last().filter(|_| more).map(|d| d.id),
        },
    ))
}

/// Filters and cursor of a list of calls.
#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CallQuery {
    /// Only calls that ended with this outcome tag, or `active` for calls still waiting.
    outcome: Option<String>,
    /// `webhook` or `fallback`.
    source: Option<String>,
    /// The `next` of the previous page (a call's id).
    before: Option<String>,
    /// At most this many (1 to 500, default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

/// A call as listed.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallLine {
    call_id: String,
    from: String,
    to: Option<String>,
    #[schema(format = DateTime)]
    started_at: String,
    waited_ms: i64,
    source: String,
    status: String,
    outcome: Option<String>,
}

/// A page of calls, newest first.
#[derive(Serialize, ToSchema)]
pub struct CallPage {
    calls: Vec<CallLine>,
    /// `before` for the next page; none at the end.
    next: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/agents/{agentId}/calls", tag = "manage", operation_id = "listCalls",
    summary = "The agent's calls, newest first",
    params(("agentId" = String, Path, description = "The agent's public id"), CallQuery),
    responses((status = 200, description = "A page of calls", body = CallPage), ManageErrors),
    security(("adminToken" = [])))]
pub async fn list_calls(
    State(app): State<AppState>,
    _: ApiAdmin,
    Path(id): Path<String>,
    Query(q): Query<CallQuery>,
) -> Result<Response, AppError> {
    let a = agent_of(&app, &id).await?;
    let limit = page_size(q.limit)?;
    if let Some(s) = &q.source
        && s != "webhook"
        && s != "fallback"
    {
        return Err(ApiProblem::with_errors(
            ProblemKind::BadRequest,
            vec![Problem::at("source", "source is webhook or fallback")],
        )
        .into());
    }
    let filter = CallFilter {
        outcome: match q.outcome.as_deref() {
            None => OutcomeFilter::Any,
            Some("active") => OutcomeFilter::Active,
            Some(o) => OutcomeFilter::Is(o.to_owned()),
        },
        source: q.source.clone(),
        before: q.before.clone(),
    };
    app.writer.settle().await?;
    let rows = stored_calls::list(&app.db, a.id, &filter, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    let rows = &rows[..rows.len().min(limit as usize)];
    Ok(json(
        StatusCode::OK,
        &CallPage {
            calls: rows
                .iter()
                .map(|c| CallLine {
                    call_id: c.public_id.clone(),
                    from: c.caller.clone(),
                    to: c.called.clone(),
                    started_at: rfc3339(c.started_at),
                    waited_ms: c.waited_ms,
                    source: c.source.clone(),
                    status: c.status.clone(),
                    outcome: c.outcome.clone(),
                })
                .collect(),
            next: rows.last().filter(|_| more).map(|c| c.public_id.clone()),
        },
    ))
}
