//! Webhook actions' secrets: their URL, API keys (rotated with a grace period, revoked) and
//! signing (on, off, a new secret). Secrets belong to the endpoint, not to a version: a
//! change here applies at once, and each secret is shown once.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiAdmin, ManageErrors, agent_of, json};
use crate::domain::document::Action;
use crate::domain::payload::Problem;
use crate::error::{ApiProblem, AppError, ProblemKind};
use crate::http::AppState;
use crate::http::api::ApiJson;
use crate::store::actions::{self, EndpointRow};
use crate::store::agents::Agent;
use crate::store::{documents, now_ms, rfc3339};

pub fn router() -> Router<AppState> {
    let hook = "/api/v1/agents/{agentId}/webhooks/{actionKey}";
    Router::new()
        .route("/api/v1/agents/{agentId}/webhooks", get(list_webhooks))
        .route(&format!("{hook}/keys"), post(new_key))
        .route(&format!("{hook}/keys/{{keyId}}"), delete(revoke_key))
        .route(&format!("{hook}/signing"), put(set_signing))
        .route(&format!("{hook}/signing-secret"), post(new_signing_secret))
}

/// A key that opens a webhook's URL: never the key, only its last characters.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    id: i64,
    last_chars: String,
    /// When a replaced key stops working; none for the current key.
    #[schema(format = DateTime)]
    valid_until: Option<String>,
}

/// A Webhook action's endpoint.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookView {
    action_key: String,
    name: String,
    url: String,
    keys: Vec<KeyView>,
    signing_required: bool,
    /// The signing secret's last characters, once there is one.
    signing_secret_last_chars: Option<String>,
    /// Whether it is in the draft, and whether calls wait for it (the published version).
    in_draft: bool,
    published: bool,
}

/// An agent's webhooks.
#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    webhooks: Vec<WebhookView>,
}

async fn endpoint(app: &AppState, a: &Agent, key: &str) -> Result<EndpointRow, AppError> {
    actions::endpoint(&app.db, a.id, key).await?.ok_or_else(|| {
        AppError::problem(
            ProblemKind::NotFound,
            format!(
                "no webhook {:?} for this agent",
                crate::domain::ids::excerpt(key)
            ),
        )
    })
}

#[utoipa::path(get, path = "/api/v1/agents/{agentId}/webhooks", tag = "manage", operation_id = "listWebhooks",
    summary = "The agent's Webhook actions' URLs and keys (never a secret)",
    params(("agentId" = String, Path, description = "The agent's public id")),
    responses((status = 200, description = "The webhooks", body = WebhookList), ManageErrors),
    security(("adminToken" = [])))]
pub async fn list_webhooks(
    State(app): State<AppState>,
    _: ApiAdmin,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let a = agent_of(&app, &id).await?;
    let draft = crate::drafts::current(&app.db, a.id).await?;
    let published = documents::published(&app.db, a.id).await?;
    let mut webhooks = Vec::new();
    for e in documents::endpoints(&app.db, a.id).await? {
        let row = endpoint(&app, &a, &e.key).await?;
        let in_draft = draft.document.action(&e.key);
        let in_published = published.as_ref().and_then(|p| p.document.action(&e.key));
        let name = in_draft
            .or(in_published)
            .map(|x| x.name.clone())
            .unwrap_or_default();
        let keys = actions::valid_keys(&app.db, e.id)
            .await?
            .into_iter()
            .map(|k| KeyView {
                id: k.id,
                last_chars: k.last_chars,
                valid_until: k.expires_at.map(rfc3339),
            })
            .collect();
        webhooks.push(WebhookView {
            action_key: e.key.clone(),
            name,
            url: crate::http::ingest::url(&app.public_url, &e.slug),
            keys,
            signing_required: row.signing_required,
            signing_secret_last_chars: row.signing_last_chars,
            in_draft: in_draft.is_some_and(|x| matches!(x.settings, Action::Webhook { .. })),
            published: in_published.is_some(),
        });
    }
    Ok(json(StatusCode::OK, &WebhookList { webhooks }))
}

/// How long the keys that work now keep working once a new one is made.
#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewKeyRequest {
    /// Seconds, 0 (they stop at once) to 604800 (7 days).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 604800)]
    grace_secs: i64,
}

/// A new API key, shown this once.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewKey {
    api_key: String,
    /// Until when the keys that worked before keep working; none when they stopped.
    #[schema(format = DateTime)]
    old_keys_valid_until: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/agents/{agentId}/webhooks/{actionKey}/keys", tag = "manage", operation_id = "newWebhookKey",
    summary = "Make a new API key (shown once); the old ones keep working for the grace period",
    params(("agentId" = String, Path, description = "The agent's public id"),
        ("actionKey" = String, Path, description = "The Webhook action's key")),
    request_body(content = NewKeyRequest, content_type = "application/json"),
    responses((status = 201, description = "The new key", body = NewKey), ManageErrors),
    security(("adminToken" = [])))]
pub async fn new_key(
    State(app): State<AppState>,
    _: ApiAdmin,
    Path((id, key)): Path<(String, String)>,
    ApiJson(req): ApiJson<NewKeyRequest>,
) -> Result<Response, AppError> {
    let a = agent_of(&app, &id).await?;
    let e = endpoint(&app, &a, &key).await?;
    if let Err(m) = actions::check_key_grace(req.grace_secs) {
        return Err(ApiProblem::with_errors(
            ProblemKind::ValidationFailed,
            vec![Problem::at("graceSecs", m)],
        )
        .into());
    }
    let made = actions::regenerate_key(&app.db, e.id, req.grace_secs).await?;
    app.catalog.invalidate();
    let body = NewKey {
        api_key: made.expose().to_owned(),
        old_keys_valid_until: (req.grace_secs > 0)
            .then(|| rfc3339(now_ms() + req.grace_secs * 1000)),
    };
    Ok(json(StatusCode::CREATED, &body))
}

#[utoipa::path(delete, path = "/api/v1/agents/{agentId}/webhooks/{actionKey}/keys/{keyId}", tag = "manage", operation_id = "revokeWebhookKey",
    summary = "Stop a replaced key now (the current key is replaced, not revoked)",
    params(("agentId" = String, Path, description = "The agent's public id"),
        ("actionKey" = String, Path, description = "The Webhook action's key"),
        ("keyId" = i64, Path, description = "The key's id, as listed")),
    responses((status = 204, description = "The key stopped working (a current key is refused, 422: replace it instead)"),
        ManageErrors),
    security(("adminToken" = [])))]
pub async fn revoke_key(
    State(app): State<AppState>,
    _: ApiAdmin,
    Path((id, key, key_id)): Path<(String, String, i64)>,
) -> Result<Response, AppError> {
    let a = agent_of(&app, &id).await?;
    let e = endpoint(&app, &a, &key).await?;
    actions::revoke_key(&app.db, e.id, key_id).await?;
    app.catalog.invalidate();
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Whether requests must be signed (Standard Webhooks).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SigningRequest {
    required: bool,
}

/// Signing, after the change; the secret only when it was just made.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SigningView {
    signing_required: bool,
    /// Shown only now, when signing was turned on for the first time or the secret renewed.
    signing_secret: Option<String>,
}

#[utoipa::path(put, path = "/api/v1/agents/{agentId}/webhooks/{actionKey}/signing", tag = "manage", operation_id = "setWebhookSigning",
    summary = "Require signed requests, or stop requiring them",
    description = "Turned on for the first time, the signing secret is made and shown once; turned off, it is kept, so that turning signing on again does not break senders that still sign.",
    params(("agentId" = String, Path, description = "The agent's public id"),
        ("actionKey" = String, Path, description = "The Webhook action's key")),
    request_body(content = SigningRequest, content_type = "application/json"),
    responses((status = 200, description = "Signing now", body = SigningView), ManageErrors),
    security(("adminToken" = [])))]
pub async fn set_signing(
    State(app): State<AppState>,
    _: ApiAdmin,
    Path((id, key)): Path<(String, String)>,
    ApiJson(req): ApiJson<SigningRequest>,
) -> Result<Response, AppError> {
    let a = agent_of(&app, &id).await?;
    let e = endpoint(&app, &a, &key).await?;
    let made = actions::set_signing(&app.db, e.id, req.required).await?;
    app.catalog.invalidate();
    let body = SigningView {
        signing_required: req.required,
        signing_secret: made.map(|s| s.expose().to_owned()),
    };
    Ok(json(StatusCode::OK, &body))
}

#[utoipa::path(post, path = "/api/v1/agents/{agentId}/webhooks/{actionKey}/signing-secret", tag = "manage", operation_id = "newWebhookSigningSecret",
    summary = "Make a new signing secret (shown once); the old one stops at once",
    params(("agentId" = String, Path, description = "The agent's public id"),
        ("actionKey" = String, Path, description = "The Webhook action's key")),
    responses((status = 201, description = "The new secret", body = SigningView), ManageErrors),
    security(("adminToken" = [])))]
pub async fn new_signing_secret(
    State(app): State<AppState>,
    _: ApiAdmin,
    Path((id, key)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let a = agent_of(&app, &id).await?;
    let e = endpoint(&app, &a, &key).await?;
    let secret = actions::regenerate_signing_secret(&app.db, e.id).await?;
    app.catalog.invalidate();
    let body = SigningView {
        signing_required: e.signing_required,
        signing_secret: Some(secret.expose().to_owned()),
    };
    Ok(json(StatusCode::CREATED, &body))
}
