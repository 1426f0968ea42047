//! The management API under `/api/v1/agents`: what automation (CI, scripts, another editor)
//! needs to keep agents' configuration as code. Agents; the draft as one JSON document (GET
//! with its ETag, PUT with If-Match, validate without saving, the changes in words, discard);
//! publish; versions (list, read, restore into the draft); Webhook actions' secrets;
//! variables; runtime tokens; deliveries and calls with filters and cursor pagination.
//!
//! Authentication is an admin API token (`Authorization: Bearer pcat_…`), made on the
//! Admins page or with `precall api-token create`: it acts for its admin, and a read-only
//! token only reads. No cookie, no CSRF.

pub mod agents;
pub mod canvas;
pub mod connections;
pub mod records;
pub mod webhooks;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use utoipa::openapi::response::{ResponseBuilder, ResponsesBuilder};
use utoipa::openapi::{ContentBuilder, RefOr, Responses};
use utoipa::{IntoResponses, PartialSchema, ToSchema};

use super::rate_limited;
use crate::domain::document::AgentDocument;
use crate::error::{ApiProblem, AppError, ProblemKind};
use crate::http::AppState;
use crate::http::body::{read_limited, require_json};
use crate::store::agents::Agent;
use crate::store::api_tokens::{self, TokenHolder};
use crate::store::console_tokens;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(agents::router())
        .merge(canvas::router())
        .merge(webhooks::router())
        .merge(records::router())
        .merge(connections::router())
}

/// The admin an API token acts for. A read-only token passes only for GET.
pub struct ApiAdmin(pub TokenHolder);

impl ApiAdmin {
    /// Who the drafts' and versions' records name: the token, and its admin.
    pub fn by(&self) -> String {
        if self.0.console {
            // The console's canvas: the admin, as the console's forms say it.
            return self.0.admin_email.clone();
        }
        format!("{} (API token {:?})", self.0.admin_email, self.0.name)
    }
}

impl FromRequestParts<AppState> for ApiAdmin {
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
                    "send an admin API token as Authorization: Bearer <token>",
                )
            })?;
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if let Some(ip) = peer {
            app.ingest_limits
                .lookup(ip)
                .map_err(|e| AppError::Problem(rate_limited(e)))?;
        }
        let holder = if token.starts_with(console_tokens::PREFIX) {
            console_tokens::holder(&app.db, token).await?
        } else {
            api_tokens::holder(&app.db, token).await?
        };
        let Some(holder) = holder else {
            if let Some(ip) = peer {
                app.ingest_limits.lookup_failed(ip);
            }
            return Err(AppError::problem(
                ProblemKind::Unauthorized,
                if token.starts_with(console_tokens::PREFIX) {
                    "the console token is not valid: its session ended (sign in again)"
                } else {
                    "the API token is not valid (revoked, or its admin removed)"
                },
            ));
        };
        if holder.read_only && parts.method != Method::GET && parts.method != Method::HEAD {
            return Err(AppError::problem(
                ProblemKind::Forbidden,
                "this API token is read-only: it can only read",
            ));
        }
        Ok(Self(holder))
    }
}

/// The agent named in the path, or a 404 problem.
pub async fn agent_of(app: &AppState, public_id: &str) -> Result<Agent, AppError> {
    crate::store::agents::find_by_public_id(&app.db, public_id)
        .await?
        .ok_or_else(|| {
            AppError::problem(
                ProblemKind::NotFound,
                format!("no agent {:?}", crate::domain::ids::excerpt(public_id)),
            )
        })
}

/// The most a document may weigh: larger than other bodies (a 20-flow agent with 50 blocks
/// each is about 300 KB).
pub const DOCUMENT_LIMIT: usize = 4 << 20;

/// A document in a request body: read with every problem as a JSON pointer (422), or 400
/// when it is not JSON.
pub struct DocumentBody(pub AgentDocument);

impl FromRequest<AppState> for DocumentBody {
    type Rejection = ApiProblem;

    async fn from_request(req: Request, app: &AppState) -> Result<Self, ApiProblem> {
        let value = read_document_json(req, app).await?;
        let doc = AgentDocument::from_json(&value)
            .map_err(|problems| ApiProblem::with_errors(ProblemKind::ValidationFailed, problems))?;
        fits(&doc)?;
        Ok(DocumentBody(doc))
    }
}

/// A document that could be sent back: written out in full, as `GET …/draft` gives it
/// (every field, defaults included), it is within [`DOCUMENT_LIMIT`].
pub fn fits(doc: &AgentDocument) -> Result<(), ApiProblem> {
    let size = doc.to_json().to_string().len();
    if size > DOCUMENT_LIMIT {
        return Err(ApiProblem::new(
            ProblemKind::ValidationFailed,
            format!(
                "written out in full (every field, as GET …/draft gives it) the document is {size} bytes, over the {DOCUMENT_LIMIT} a PUT takes: it could not be sent back"
            ),
        ));
    }
    Ok(())
}

/// A request body that should be a document, read as JSON only (to validate it).
pub async fn read_document_json(req: Request, app: &AppState) -> Result<Value, ApiProblem> {
    let (parts, body) = req.into_parts();
    require_json(&parts.headers)?;
    let bytes = read_limited(&parts.headers, body, app.body_limit.max(DOCUMENT_LIMIT)).await?;
    let value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiProblem::new(ProblemKind::MalformedJson, e.to_string()))?;
    no_repeated_keys(&bytes)?;
    Ok(value)
}

/// Refuses JSON (read already) in which an object repeats a key: serde_json would keep the
/// last one, silently dropping the first.
pub fn no_repeated_keys(json: &[u8]) -> Result<(), ApiProblem> {
    match crate::domain::duplicates::repeated_key(json) {
        None => Ok(()),
        Some(p) => Err(ApiProblem::with_errors(
            ProblemKind::ValidationFailed,
            vec![p],
        )),
    }
}

/// The draft's ETag for `revision`.
pub fn etag(revision: i64) -> String {
    format!("\"r{revision}\"")
}

/// What `If-Match` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// `*`: whatever the draft is.
    Any,
    /// One of these revisions (the draft's ETags, compared strongly).
    Revisions(Vec<i64>),
}

/// Reads `If-Match` (RFC 9110 section 13.1.1): `None` when absent. A value that is not `*`
/// nor a list of entity tags is refused 400; one whose tags cannot match the draft (weak
/// tags, which `If-Match` never matches, or tags that are not the draft's) 412, saying so.
pub fn if_match(headers: &HeaderMap) -> Result<Option<IfMatch>, AppError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("\u{fffd}").trim();
    if text == "*" {
        return Ok(Some(IfMatch::Any));
    }
    let (mut revisions, mut weak, mut foreign) = (Vec::new(), None, None);
    for tag in text.split(',').map(str::trim) {
        let (is_weak, quoted) = match tag.strip_prefix("W/") {
            Some(t) => (true, t),
            None => (false, tag),
        };
        let opaque = quoted
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .filter(|o| !o.contains('"'));
        let Some(opaque) = opaque else {
            return Err(AppError::problem(
                ProblemKind::BadRequest,
                format!(
                    "If-Match: {:?} is not an entity tag: send the draft's ETag as received, quotes included (\"r12\"), or *",
                    crate::domain::ids::excerpt(tag)
                ),
            ));
        };
        if is_weak {
            weak.get_or_insert(tag);
            continue;
        }
        match opaque.strip_prefix('r').and_then(|r| r.parse::<i64>().ok()) {
            Some(r) if r >= 0 && etag(r) == quoted => revisions.push(r),
            _ => {
                foreign.get_or_insert(tag);
            }
        }
    }
    if revisions.is_empty() {
        let why = match (weak, foreign) {
            (Some(w), _) => format!(
                "If-Match: {} is a weak ETag, which If-Match never matches: send the draft's ETag as received",
                crate::domain::ids::excerpt(w)
            ),
            (None, f) => format!(
                "If-Match: {} is not an ETag this draft has had (they look like \"r12\"): read the draft again",
                crate::domain::ids::excerpt(f.unwrap_or_default())
            ),
        };
        return Err(AppError::problem(ProblemKind::PreconditionFailed, why));
    }
    Ok(Some(IfMatch::Revisions(revisions)))
}

/// The revision a write must find: `None` for none in particular (`*`, or no `If-Match`).
/// Of a list of ETags the draft's own is taken when it is among them; the write then
/// checks it again as it saves, so a change made meanwhile is still refused.
pub async fn wanted_revision(
    app: &AppState,
    agent_id: i64,
    m: Option<IfMatch>,
) -> Result<Option<i64>, AppError> {
    match m {
        None | Some(IfMatch::Any) => Ok(None),
        Some(IfMatch::Revisions(list)) if list.len() == 1 => Ok(Some(list[0])),
        Some(IfMatch::Revisions(list)) => {
            let current = crate::drafts::current(&app.db, agent_id).await?.revision;
            Ok(Some(if list.contains(&current) {
                current
            } else {
                list[0]
            }))
        }
    }
}

/// A JSON answer with the draft's ETag.
pub fn with_etag(mut res: Response, revision: i64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&etag(revision)) {
        res.headers_mut().insert(header::ETAG, v);
    }
    res
}

/// The JSON Schema of an agent's document, for the OpenAPI document: what
/// [`AgentDocument::from_json`] reads. Written by hand from the format, and checked against
/// the reader by tests (the examples validate; invalid documents fail both).
pub struct AgentDocumentSchema;

impl PartialSchema for AgentDocumentSchema {
    /// A stand-in, for references to it: the OpenAPI document's builder writes
    /// [`document_schema`] in its place (utoipa's model has no `const` nor type lists).
    fn schema() -> RefOr<utoipa::openapi::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new().into()
    }
}

impl ToSchema for AgentDocumentSchema {
    fn name() -> std::borrow::Cow<'static, str> {
        "AgentDocument".into()
    }
}

/// The document's JSON Schema (2020-12, as OpenAPI 3.1 uses it).
pub fn document_schema() -> Value {
    let key = serde_json::json!({ "type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$" });
    let reference = serde_json::json!({ "oneOf": [key.clone(), { "type": "null" }] });
    let text = |max: usize| serde_json::json!({ "type": "string", "maxLength": max });
    let condition = serde_json::json!({
        "type": "object", "additionalProperties": false, "required": ["variable", "op"],
        "properties": {
            "variable": { "type": "string", "pattern": crate::domain::variables::VariableName::PATTERN },
            "op": { "enum": ["exists", "not_exists", "equals", "not_equals", "greater_than", "less_than", "contains"] },
            "value": { "type": ["string", "number", "boolean", "null"] }
        }
    });
    let case = |target: &str| {
        serde_json::json!({
            "type": "object", "additionalProperties": false,
            "properties": {
                "name": text(100),
                "join": { "enum": ["and", "or"] },
                "conditions": { "type": "array", "maxItems": 50, "items": condition.clone() },
                target: reference.clone()
            }
        })
    };
    let position = serde_json::json!({
        "type": "object", "additionalProperties": false, "required": ["x", "y"],
        "properties": { "x": { "type": "number" }, "y": { "type": "number" } }
    });
    let block = |kind: &str, fields: Value| {
        let mut props = serde_json::json!({
            "key": key.clone(),
            "kind": { "const": kind },
            "position": position.clone(),
        });
        for (k, v) in fields.as_object().cloned().unwrap_or_default() {
            props[k] = v;
        }
        serde_json::json!({
            "type": "object", "additionalProperties": false, "required": ["key", "kind"],
            "properties": props
        })
    };
    let say = || serde_json::json!({ "message": text(2000), "next": reference.clone() });
    let blocks = serde_json::json!([
        block("greeting", say()),
        block("start", say()),
        block("talk", say()),
        block(
            "collect",
            serde_json::json!({
                "variable": { "type": "string", "maxLength": 64 }, "prompt": text(2000), "next": reference.clone()
            })
        ),
        block(
            "filter",
            serde_json::json!({
                "cases": { "type": "array", "maxItems": 50, "items": case("next") }, "else": reference.clone()
            })
        ),
        block(
            "transfer_call",
            serde_json::json!({
                "destination": text(100), "department": text(100), "message": text(2000)
            })
        ),
        block(
            "transfer_flow",
            serde_json::json!({ "flow": reference.clone() })
        ),
        block(
            "end_call",
            serde_json::json!({ "message": text(2000), "outcome": text(64) })
        ),
    ]);
    let action = |kind: &str, fields: Value| {
        let mut props = serde_json::json!({
            "key": key.clone(),
            "kind": { "const": kind },
            "name": { "type": "string", "minLength": 1, "maxLength": 100 },
        });
        for (k, v) in fields.as_object().cloned().unwrap_or_default() {
            props[k] = v;
        }
        serde_json::json!({
            "type": "object", "additionalProperties": false, "required": ["key", "kind", "name"],
            "properties": props
        })
    };
    serde_json::json!({
        "type": "object",
        "description": "An agent's whole behaviour: its flows, its pre-call actions in order and its variable schema. Never a secret: a Webhook action's URL, keys and signing secret stay on the server. Flows, blocks (within their flow) and actions are named by stable keys, so that a document exported from one agent imports into another unchanged. Besides this shape, keys must be unique, every reference must name an existing block of the same flow (or flow, or action), and each flow has one entry: a greeting for the First Flow, a start for the others.",
        "additionalProperties": false,
        "required": ["format"],
        "properties": {
            "format": { "const": crate::domain::document::FORMAT },
            "firstFlow": reference.clone(),
            "flows": { "type": "array", "maxItems": 100, "items": {
                "type": "object", "additionalProperties": false, "required": ["key", "name"],
                "properties": {
                    "key": key.clone(),
                    "name": { "type": "string", "minLength": 1, "maxLength": 100 },
                    "blocks": { "type": "array", "maxItems": 500, "items": { "oneOf": blocks } }
                }
            }},
            "precall": { "type": "array", "maxItems": 50, "items": { "oneOf": [
                action("webhook", serde_json::json!({
                    "waitMs": { "type": "integer", "minimum": 0, "maximum": 10000 },
                    "ttlSecs": { "type": "integer", "minimum": 1, "maximum": 604800 },
                    "enabled": { "type": "boolean" }
                })),
                action("filter", serde_json::json!({
                    "cases": { "type": "array", "maxItems": 50, "items": case("flow") }
                })),
                action("end_call", serde_json::json!({
                    "join": { "enum": ["and", "or"] },
                    "conditions": { "type": "array", "maxItems": 50, "items": condition.clone() },
                    "message": text(2000),
                    "outcome": text(64)
                })),
            ]}},
            "variables": { "type": "array", "maxItems": 500, "items": {
                "type": "object", "additionalProperties": false, "required": ["name", "type"],
                "properties": {
                    "name": { "type": "string", "pattern": crate::domain::variables::VariableName::PATTERN },
                    "type": { "enum": ["string", "number", "boolean", "list"] },
                    "default": {},
                    "description": text(2000),
                    "source": { "oneOf": [
                        { "type": "null" },
                        { "type": "object", "additionalProperties": false, "required": ["action"],
                          "properties": { "action": { "type": "string" } } },
                        { "type": "object", "additionalProperties": false, "required": ["flow", "block"],
                          "properties": { "flow": { "type": "string" }, "block": { "type": "string" } } }
                    ]}
                }
            }}
        }
    })
}

/// The error answers every management operation may give.
pub struct ManageErrors;

impl IntoResponses for ManageErrors {
    fn responses() -> std::collections::BTreeMap<String, RefOr<utoipa::openapi::response::Response>>
    {
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                            "ProblemDetails",
                        ))))
                        .build(),
                )
                .build()
        };
        let responses: Responses = ResponsesBuilder::new()
            .response("400", problem("`malformed-json`: the body is not JSON; `bad-request`: a path or query value that cannot be read"))
            .response("401", problem("`unauthorized`: no API token, or not a live one"))
            .response("403", problem("`forbidden`: a read-only token asked to change something"))
            .response("404", problem("`not-found`: no such agent, webhook, version, variable or token"))
            .response("405", problem("`method-not-allowed`: the path does not take this method"))
            .response("408", problem("`request-timeout`: the request took too long to arrive; nothing was kept"))
            .response("413", problem("`payload-too-large`: the body is over the limit"))
            .response("415", problem("`unsupported-media-type`: not `application/json`"))
            .response("422", problem("`validation-failed`: the body does not hold together; every problem is listed with its JSON pointer"))
            .response("429", problem("`rate-limited`: too many requests with unknown tokens from this address"))
            .response("431", problem("`headers-too-large`: the request's headers are over the limit"))
            .response("503", problem("`unavailable`: the database could not take the change; nothing was kept"))
            .build();
        responses.responses
    }
}

/// Maps an edit of the draft to the API's answer.
pub fn edit_error(e: crate::drafts::EditError) -> AppError {
    e.into()
}

/// A JSON answer.
pub fn json(status: axum::http::StatusCode, value: &impl serde::Serialize) -> Response {
    (status, axum::Json(value)).into_response()
}
