//! Agents, their draft (one JSON document, with an ETag), publishing and versions.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{
    AgentDocumentSchema, ApiAdmin, DocumentBody, ManageErrors, agent_of, if_match, json,
    read_document_json, wanted_revision, with_etag,
};
use crate::domain::document::{self, AgentDocument};
use crate::domain::payload::Problem;
use crate::domain::phone::Region;
use crate::error::{ApiProblem, AppError, ProblemKind};
use crate::http::AppState;
use crate::http::api::ApiJson;
use crate::store::agents::{self, Agent};
use crate::store::documents::{self, NewEndpoint, PublishError, Saved};
use crate::store::{StoreError, rfc3339};

pub fn router() -> Router<AppState> {
    let agent = "/api/v1/agents/{agentId}";
    Router::new()
        .route("/api/v1/agents", get(list_agents).post(create_agent))
        .route(
            agent,
            get(get_agent).patch(update_agent).delete(delete_agent),
        )
        .route(
            &format!("{agent}/draft"),
            get(get_draft).put(put_draft).delete(discard),
        )
        .route(&format!("{agent}/draft/validate"), post(validate))
        .route(&format!("{agent}/draft/changes"), get(changes))
        .route(&format!("{agent}/publish"), post(publish))
        .route(&format!("{agent}/versions"), get(list_versions))
        .route(&format!("{agent}/versions/{{number}}"), get(get_version))
        .route(
            &format!("{agent}/versions/{{number}}/restore"),
            post(restore),
        )
}

/// An agent as the API shows it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentSummary {
    #[schema(examples("oJvfgs3Eg8DEMOGnQES7"))]
    agent_id: String,
    name: String,
    /// ISO 3166 region numbers without a country code are read in.
    #[schema(examples("US"))]
    region: String,
    /// The version calls run.
    published_version: Option<i64>,
    /// The draft's revision (its ETag is `"r<revision>"`).
    draft_revision: i64,
    /// How many changes the draft has against the published version.
    draft_changes: usize,
    /// Who saved the draft last, and when.
    draft_updated_by: String,
    #[schema(format = DateTime)]
    draft_updated_at: String,
    #[schema(format = DateTime)]
    created_at: String,
}

async fn summary(app: &AppState, a: &Agent) -> Result<AgentSummary, AppError> {
    let draft = crate::drafts::current(&app.db, a.id).await?;
    let published = documents::published(&app.db, a.id).await?;
    let changes = published
        .as_ref()
        .map_or(1, |p| document::changes(&p.document, &draft.document).len());
    Ok(AgentSummary {
        agent_id: a.public_id.clone(),
        name: a.name.clone(),
        region: a.default_region.clone(),
        published_version: a.published_version,
        draft_revision: draft.revision,
        draft_changes: changes,
        draft_updated_by: draft.updated_by,
        draft_updated_at: rfc3339(draft.updated_at),
        created_at: rfc3339(a.created_at),
    })
}

/// The agents.
#[derive(Serialize, ToSchema)]
pub struct AgentList {
    agents: Vec<AgentSummary>,
}

#[utoipa::path(get, path = "/api/v1/agents", tag = "manage", operation_id = "listAgents",
    summary = "List the agents",
    responses((status = 200, description = "Every agent, oldest first", body = AgentList), ManageErrors),
    security(("adminToken" = [])))]
pub async fn list_agents(State(app): State<AppState>, _: ApiAdmin) -> Result<Response, AppError> {
    let mut out = Vec::new();
    for a in agents::list(&app.db).await? {
        out.push(summary(&app, &a).await?);
    }
    Ok(json(StatusCode::OK, &AgentList { agents: out }))
}

/// A new agent.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewAgent {
    #[schema(min_length = 1, max_length = 100, examples("Support line"))]
    name: String,
    /// ISO 3166 region for numbers without a country code (default US).
    #[serde(default)]
    #[schema(examples("US"), pattern = "^[A-Za-z]{2}$")]
    region: Option<String>,
    /// A document (as `GET …/draft` gives it, from this server or another) to import into
    /// the new agent's draft, which is then published when you choose; without one the
    /// draft is the published First Flow that greets callers.
    #[serde(default)]
    #[schema(value_type = Option<AgentDocumentSchema>)]
    document: Option<Value>,
}

/// [`NewAgent`], read as [`ApiJson`] reads a body but up to a document's size.
pub struct NewAgentBody(NewAgent);

impl axum::extract::FromRequest<AppState> for NewAgentBody {
    type Rejection = ApiProblem;

    async fn from_request(req: axum::extract::Request, app: &AppState) -> Result<Self, ApiProblem> {
        let (parts, body) = req.into_parts();
        crate::http::body::require_json(&parts.headers)?;
        let limit = app.body_limit.max(super::DOCUMENT_LIMIT);
        let bytes = crate::http::body::read_limited(&parts.headers, body, limit).await?;
        let new = crate::http::api::api_json(&bytes).map(NewAgentBody)?;
        // The document is read as a Value, which keeps the last of a repeated key.
        super::no_repeated_keys(&bytes)?;
        Ok(new)
    }
}

/// An agent just made: with a document, the Webhook actions' endpoints made for its draft
/// (each key shown this once) and what would stop the draft's publish.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedAgent {
    #[serde(flatten)]
    agent: AgentSummary,
    webhooks: Vec<NewWebhook>,
    problems: Vec<Problem>,
}

/// A Webhook action's endpoint just made: its key is shown this once.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewWebhook {
    action_key: String,
    name: String,
    url: String,
    /// Shown only now: store it where the sender keeps secrets.
    api_key: String,
}

pub fn new_webhooks(app: &AppState, created: &[NewEndpoint]) -> Vec<NewWebhook> {
    created
        .iter()
        .map(|e| NewWebhook {
            action_key: e.key.clone(),
            name: e.name.clone(),
            url: crate::http::ingest::url(&app.public_url, e.slug.as_str()),
            api_key: e.api_key.expose().to_owned(),
        })
        .collect()
}

fn region_of(text: Option<&str>) -> Result<Region, AppError> {
    Region::parse(text.unwrap_or("US")).map_err(|e| {
        ApiProblem::with_errors(
            ProblemKind::ValidationFailed,
            vec![Problem::at("region", e)],
        )
        .into()
    })
}

#[utoipa::path(post, path = "/api/v1/agents", tag = "manage", operation_id = "createAgent",
    summary = "Create an agent, optionally from a document",
    description = "Its version 1, published, and its draft have a First Flow that greets callers. With a `document`, the document is checked first (a refusal points into `/document/…` and creates nothing), then becomes the draft, to publish when you choose; the answer adds its Webhook actions' URLs and keys (shown this once) and what would stop its publish, pointing into `/document/…` too.",
    request_body(content = NewAgent, content_type = "application/json"),
    responses((status = 201, description = "The agent", body = CreatedAgent,
        headers(("Location" = String, description = "`/api/v1/agents/{agentId}`"))), ManageErrors),
    security(("adminToken" = [])))]
pub async fn create_agent(
    State(app): State<AppState>,
    who: ApiAdmin,
    NewAgentBody(req): NewAgentBody,
) -> Result<Response, AppError> {
    let region = region_of(req.region.as_deref())?;
    let doc = match &req.document {
        None => None,
        Some(value) => {
            let doc = AgentDocument::from_json(value).map_err(|problems| {
                ApiProblem::with_errors(
                    ProblemKind::ValidationFailed,
                    problems.into_iter().map(under_document).collect(),
                )
            })?;
            super::fits(&doc)?;
            Some(doc)
        }
    };
    let (a, created) = match &doc {
        None => agents::create(&app.db, &req.name, region, None, &who.by()).await,
        Some(doc) => agents::create_importing(&app.db, &req.name, region, doc, &who.by()).await,
    }
    .map_err(name_problem)?;
    app.catalog.invalidate();
    let body = CreatedAgent {
        agent: summary(&app, &a).await?,
        webhooks: new_webhooks(&app, &created),
        problems: doc
            .as_ref()
            .map(|d| document::check(d).into_iter().map(under_document).collect())
            .unwrap_or_default(),
    };
    let mut res = json(StatusCode::CREATED, &body);
    if let Ok(v) = format!("/api/v1/agents/{}", a.public_id).parse() {
        res.headers_mut().insert(axum::http::header::LOCATION, v);
    }
    Ok(res)
}

/// A problem of a document sent inside a request, pointed at where it is in the request.
fn under_document(mut p: Problem) -> Problem {
    p.pointer = Some(format!("/document{}", p.pointer.as_deref().unwrap_or("")));
    p
}

/// A name refused by the store, pointed at.
fn name_problem(e: StoreError) -> AppError {
    match e {
        StoreError::Conflict(m) => {
            ApiProblem::with_errors(ProblemKind::ValidationFailed, vec![Problem::at("name", m)])
                .into()
        }
        other => other.into(),
    }
}

#[utoipa::path(get, path = "/api/v1/agents/{agentId}", tag = "manage", operation_id = "getAgent",
    summary = "Read an agent",
    params(("agentId" = String, Path, description = "The agent's public id")),
    responses((status = 200, description = "The agent", body = AgentSummary), ManageErrors),
    security(("adminToken" = [])))]
pub async fn get_agent(
    State(app): State<AppState>,
    _: ApiAdmin,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let a = agent_of(&app, &id).await?;
    Ok(json(StatusCode::OK, &summary(&app, &a).await?))
}

/// Changes to an agent's name or region.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentChanges {
    #[serde(default)]
    #[schema(min_length = 1, max_length = 100)]
    name: Option<String>,
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z]{2}$")]
    region: Option<String>,
}

#[utoipa::path(patch, path = "/api/v1/agents/{agentId}", tag = "manage", operation_id = "updateAgent",
    summary = "Rename an agent or change its phone region",
    params(("agentId" = String, Path, description = "The agent's public id")),
    request_body(content = AgentChanges, content_type = "application/json"),
    responses((status = 200, description = "The agent", body = AgentSummary), ManageErrors),
    security(("adminToken" = [])))]
pub async fn update_agent(
    State(app): State<AppState>,
    _: ApiAdmin,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<AgentChanges>,
) -> Result<Response, AppError> {
    let a = agent_of(&app, &id).await?;
    let region = req
        .region
        .as_deref()
        .map(|r| region_of(Some(r)))
        .transpose()?;
    if let Some(name) = &req.name {
        agents::rename(&app.db, a.id, name)
            .await
            .map_err(name_problem)?;
    }
    if let Some(region) = region {
        agents::set_region(&app.db, a.id, region).await?;
    }
    app.catalog.invalidate();
    let a = agent_of(&app, &id).await?;
    Ok(json(StatusCode::OK, &summary(&app, &a).await?))
}

#[utoipa::path(delete, path = "/api/v1/agents/{agentId}", tag = "manage", operation_id = "deleteAgent",
    summary = "Delete an agent and everything it owns",
    description = "Its draft and versions, its webhooks (their URLs and keys stop at once), cached data, deliveries, calls and tokens.",
    params(("agentId" = String, Path, description = "The agent's public id")),
    responses((status = 204, description = "Deleted"), ManageErrors),
    security(("adminToken" = [])))]
pub async fn delete_agent(
    State(app): State<AppState>,
    _: ApiAdmin,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let a = agent_of(&app, &id).await?;
    agents::delete(&app.db, a.id).await?;
    app.catalog.invalidate();
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(get, path = "/api/v1/agents/{agentId}/draft", tag = "manage", operation_id = "getDraft",
    summary = "Read the draft: the agent's whole configuration as one document",
    description = "The ETag names the draft's revision: send it back as If-Match with a PUT, so that a change made meanwhile is refused (412) rather than overwritten.",
    params(("agentId" = String, Path, description = "The agent's public id")),
    responses((status = 200, description = "The draft", body = AgentDocumentSchema,
        headers(("ETag" = String, description = "`\"r<revision>\"`"))), ManageErrors),
    security(("adminToken" = [])))]
pub async fn get_draft(
    State(app): State<AppState>,
    _: ApiAdmin,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let a = agent_of(&app, &id).await?;
    let draft = crate::drafts::current(&app.db, a.id).await?;
    Ok(with_etag(
        json(StatusCode::OK, &draft.document.to_json()),
        draft.revision,
    ))
}

/// What a save of the draft did.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DraftSaved {
    /// The draft's new revision (its ETag is `"r<revision>"`).
    revision: i64,
    /// What would stop a publish now, each pointing into the document.
    #[schema(value_type = Vec<Problem>)]
    problems: Vec<Problem>,
    /// Endpoints made for Webhook actions that had none, each key shown this once.
    webhooks: Vec<NewWebhook>,
}

async fn saved(app: &AppState, agent_id: i64, saved: Saved) -> Result<Response, AppError> {
    app.catalog.invalidate();
    let draft = crate::drafts::current(&app.db, agent_id).await?;
    let body = DraftSaved {
        revision: saved.revision,
        problems: document::check(&draft.document),
        webhooks: new_webhooks(app, &saved.created),
    };
    Ok(with_etag(json(StatusCode::OK, &body), saved.revision))
}

/// The revision a write must find, from `If-Match` (required when `required`).
async fn expected(
    app: &AppState,
    agent_id: i64,
    headers: &HeaderMap,
    required: bool,
) -> Result<Option<i64>, AppError> {
    let m = if_match(headers)?;
    if m.is_none() && required {
        return Err(AppError::problem(
            ProblemKind::PreconditionRequired,
            "send If-Match with the draft's ETag (or * to overwrite whatever is there)",
        ));
    }
    wanted_revision(app, agent_id, m).await
}

#[utoipa::path(put, path = "/api/v1/agents/{agentId}/draft", tag = "manage", operation_id = "putDraft",
    summary = "Replace the draft with a document",
    description = "The whole document, with If-Match (the ETag of the draft read, or *). A document that does not hold together is refused with every problem as a JSON pointer (422); one that does is saved even with problems that would stop a publish (listed in the answer). New Webhook actions get their URL and key at once.",
    params(("agentId" = String, Path, description = "The agent's public id"),
        ("If-Match" = String, Header, description = "The draft's ETag, or `*`")),
    request_body(content = AgentDocumentSchema, content_type = "application/json"),
    responses((status = 200, description = "Saved", body = DraftSaved,
            headers(("ETag" = String, description = "The new revision's ETag"))),
        (status = 412, description = "`precondition-failed`: the draft changed since that ETag", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 428, description = "`precondition-required`: no If-Match", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        ManageErrors),
    security(("adminToken" = [])))]
pub async fn put_draft(
    State(app): State<AppState>,
    who: ApiAdmin,
    Path(id): Path<String>,
    headers: HeaderMap,
    DocumentBody(doc): DocumentBody,
) -> Result<Response, AppError> {
    let a = agent_of(&app, &id).await?;
    let expected = expected(&app, a.id, &headers, true).await?;
    let result = crate::drafts::replace(&app.db, a.id, &doc, expected, &who.by()).await?;
    saved(&app, a.id, result).await
}

/// Whether a document could be published, and why not.
#[derive(Serialize, ToSchema)]
pub struct Validation {
    valid: bool,
    /// Every problem, each pointing into the document.
    problems: Vec<Problem>,
}

#[utoipa::path(post, path = "/api/v1/agents/{agentId}/draft/validate", tag = "manage", operation_id = "validateDraft",
    summary = "Check a document without saving it",
    description = "Every problem of its shape and references, or, when it holds together, every problem that would stop its publish. Nothing is saved.",
    params(("agentId" = String, Path, description = "The agent's public id")),
    request_body(content = AgentDocumentSchema, content_type = "application/json"),
    responses((status = 200, description = "The verdict", body = Validation), ManageErrors),
    security(("adminToken" = [])))]
pub async fn validate(
    State(app): State<AppState>,
    _: ApiAdmin,
    Path(id): Path<String>,
    req: axum::extract::Request,
) -> Result<Response, AppError> {
    agent_of(&app, &id).await?;
    let value: Value = read_document_json(req, &app).await?;
    let problems = match AgentDocument::from_json(&value) {
        Ok(doc) => document::check(&doc),
        Err(problems) => problems,
    };
    Ok(json(
        StatusCode::OK,
        &Validation {
            valid: problems.is_empty(),
            problems,
        },
    ))
}

/// What the draft changes against the published version.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DraftChanges {
    revision: i64,
    published_version: Option<i64>,
    /// In words: block added, condition changed, action moved…
    changes: Vec<String>,
    /// What would stop its publish.
    problems: Vec<Problem>,
    /// Who saved the draft last (an admin's email, with the API token's name when it was
    /// one), and when.
    updated_by: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

#[utoipa::path(get, path = "/api/v1/agents/{agentId}/draft/changes", tag = "manage", operation_id = "draftChanges",
    summary = "What the draft changes against the published version, in words",
    params(("agentId" = String, Path, description = "The agent's public id")),
    responses((status = 200, description = "The changes and what is left to finish", body = DraftChanges,
        headers(("ETag" = String, description = "The draft's ETag"))), ManageErrors),
    security(("adminToken" = [])))]
pub async fn changes(
    State(app): State<AppState>,
    _: ApiAdmin,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let a = agent_of(&app, &id).await?;
    let draft = crate::drafts::current(&app.db, a.id).await?;
    let published = documents::published(&app.db, a.id).await?;
    let body = DraftChanges {
        revision: draft.revision,
        published_version: published.as_ref().map(|p| p.meta.number),
        changes: published
            .as_ref()
            .map(|p| document::changes(&p.document, &draft.document))
            .unwrap_or_else(|| vec!["Nothing is published yet".into()]),
        problems: document::check(&draft.document),
        updated_by: draft.updated_by.clone(),
        updated_at: rfc3339(draft.updated_at),
    };
    Ok(with_etag(json(StatusCode::OK, &body), draft.revision))
}

#[utoipa::path(delete, path = "/api/v1/agents/{agentId}/draft", tag = "manage", operation_id = "discardDraft",
    summary = "Discard the draft's changes: it becomes the published version again",
    params(("agentId" = String, Path, description = "The agent's public id"),
        ("If-Match" = Option<String>, Header, description = "The draft's ETag: refused (412) if it changed since")),
    responses((status = 200, description = "The draft, as published", body = DraftSaved),
        (status = 412, description = "`precondition-failed`: the draft changed since that ETag", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        ManageErrors),
    security(("adminToken" = [])))]
pub async fn discard(
    State(app): State<AppState>,
    who: ApiAdmin,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let a = agent_of(&app, &id).await?;
    let expected = expected(&app, a.id, &headers, false).await?;
    let result = documents::discard(&app.db, a.id, expected, &who.by()).await?;
    saved(&app, a.id, result).await
}

/// A publish's message.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// What this version changes, for the history.
    #[serde(default)]
    #[schema(max_length = 500)]
    message: Option<String>,
}

/// A published version's facts.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionSummary {
    version: i64,
    #[schema(format = DateTime)]
    published_at: String,
    published_by: String,
    message: String,
    /// Whether calls run it now.
    live: bool,
}

fn version_summary(v: &documents::VersionMeta, live: Option<i64>) -> VersionSummary {
    VersionSummary {
        version: v.number,
        published_at: rfc3339(v.published_at),
        published_by: v.published_by.clone(),
        message: v.message.clone(),
        live: Some(v.number) == live,
    }
}

#[utoipa::path(post, path = "/api/v1/agents/{agentId}/publish", tag = "manage", operation_id = "publish",
    summary = "Publish the draft as the next version",
    description = "Runs every check on the whole draft (unknown variables, cycles within and across flows, comparisons that cannot hold, unfinished blocks and pre-call actions) and refuses with the list of problems (422 `publish-refused`, each a JSON pointer into the draft); else freezes it as the next, immutable version, which calls run from then on. Calls under way finish on the version they started with.",
    params(("agentId" = String, Path, description = "The agent's public id"),
        ("If-Match" = Option<String>, Header, description = "The draft's ETag: publish only that revision")),
    request_body(content = Option<PublishRequest>, content_type = "application/json"),
    responses((status = 201, description = "Published", body = VersionSummary),
        (status = 412, description = "`precondition-failed`: the draft changed since that ETag", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        ManageErrors),
    security(("adminToken" = [])))]
pub async fn publish(
    State(app): State<AppState>,
    who: ApiAdmin,
    Path(id): Path<String>,
    headers: HeaderMap,
    req: axum::extract::Request,
) -> Result<Response, AppError> {
    let a = agent_of(&app, &id).await?;
    let expected = expected(&app, a.id, &headers, false).await?;
    // The body is optional: an empty one publishes without a message.
    let message = if req.headers().contains_key(axum::http::header::CONTENT_TYPE) {
        let ApiJson(body) =
            <ApiJson<PublishRequest> as axum::extract::FromRequest<AppState>>::from_request(
                req, &app,
            )
            .await?;
        body.message.unwrap_or_default()
    } else {
        String::new()
    };
    if message.chars().count() > 500 {
        return Err(ApiProblem::with_errors(
            ProblemKind::ValidationFailed,
            vec![Problem::at(
                "message",
                "message is longer than 500 characters",
            )],
        )
        .into());
    }
    match documents::publish(&app.db, a.id, expected, &who.by(), message.trim()).await {
        Ok(meta) => {
            app.catalog.invalidate();
            Ok(json(
                StatusCode::CREATED,
                &version_summary(&meta, Some(meta.number)),
            ))
        }
        Err(PublishError::Problems(problems)) => {
            let mut p = ApiProblem::with_errors(ProblemKind::PublishRefused, problems);
            p.detail = format!(
                "{} problem{} to finish before publishing; see errors",
                p.errors.len(),
                if p.errors.len() == 1 { "" } else { "s" }
            );
            Err(p.into())
        }
        Err(PublishError::Store(e)) => Err(e.into()),
    }
}

/// An agent's versions.
#[derive(Serialize, ToSchema)]
pub struct VersionList {
    versions: Vec<VersionSummary>,
}

#[utoipa::path(get, path = "/api/v1/agents/{agentId}/versions", tag = "manage", operation_id = "listVersions",
    summary = "List the published versions, newest first",
    params(("agentId" = String, Path, description = "The agent's public id")),
    responses((status = 200, description = "The versions", body = VersionList), ManageErrors),
    security(("adminToken" = [])))]
pub async fn list_versions(
    State(app): State<AppState>,
    _: ApiAdmin,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let a = agent_of(&app, &id).await?;
    let versions = documents::versions(&app.db, a.id)
        .await?
        .iter()
        .map(|v| version_summary(v, a.published_version))
        .collect();
    Ok(json(StatusCode::OK, &VersionList { versions }))
}

fn version_number(text: &str) -> Result<i64, AppError> {
    text.parse::<i64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
        AppError::problem(
            ProblemKind::NotFound,
            format!(
                "no version {:?}: versions are numbered from 1",
                crate::domain::ids::excerpt(text)
            ),
        )
    })
}

#[utoipa::path(get, path = "/api/v1/agents/{agentId}/versions/{number}", tag = "manage", operation_id = "getVersion",
    summary = "Read a published version's document",
    params(("agentId" = String, Path, description = "The agent's public id"),
        ("number" = String, Path, description = "The version's number")),
    responses((status = 200, description = "The version's document", body = AgentDocumentSchema), ManageErrors),
    security(("adminToken" = [])))]
pub async fn get_version(
    State(app): State<AppState>,
    _: ApiAdmin,
    Path((id, number)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let a = agent_of(&app, &id).await?;
    let n = version_number(&number)?;
    let v = documents::version(&app.db, a.id, n)
        .await?
        .ok_or_else(|| AppError::problem(ProblemKind::NotFound, format!("no version {n}")))?;
    Ok(Json(v.document.to_json()).into_response())
}

#[utoipa::path(post, path = "/api/v1/agents/{agentId}/versions/{number}/restore", tag = "manage", operation_id = "restoreVersion",
    summary = "Make a version's document the draft again",
    description = "To review and publish it. Webhook actions whose endpoint is gone get a new URL and key (shown once).",
    params(("agentId" = String, Path, description = "The agent's public id"),
        ("number" = String, Path, description = "The version's number"),
        ("If-Match" = Option<String>, Header, description = "The draft's ETag: refused (412) if it changed since")),
    responses((status = 200, description = "The draft", body = DraftSaved),
        (status = 412, description = "`precondition-failed`: the draft changed since that ETag", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        ManageErrors),
    security(("adminToken" = [])))]
pub async fn restore(
    State(app): State<AppState>,
    who: ApiAdmin,
    Path((id, number)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let a = agent_of(&app, &id).await?;
    let n = version_number(&number)?;
    let expected = expected(&app, a.id, &headers, false).await?;
    let result = documents::restore(&app.db, a.id, n, expected, &who.by()).await?;
    saved(&app, a.id, result).await
}
