//! `POST /webhooks/{slug}`: a sender tells us about a caller before the call.
//!
//! Checks run cheapest and least revealing first: unknown URL (404, not recorded), the
//! source address's rate (429), key (401), the webhook's rate (429), disabled (409),
//! signature headers when the webhook requires signing (401), content type (415), size (413)
//! and arrival in time (408), signature over the raw body (401), JSON (400), contract (422).
//! Every request with a valid key is recorded as a delivery, never with its key or
//! signature. Requests refused before a valid key was seen (no key, a wrong key, over the
//! address's rate) are only counted, per webhook, minute and reason (see
//! [`crate::store::refusals`]): anyone who knows the URL can send them, as fast as their
//! rate allows.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use sha2::{Digest, Sha256};

use super::AppState;
use super::body::{excerpt, read_limited, require_json};
use super::rate::Exceeded;
use crate::auth::keys::SecretHash;
use crate::auth::signing::{self, SignatureError, SignedHeaders};
use crate::catalog::WebhookTarget;
use crate::domain::payload::{self, PayloadError};
use crate::error::{ApiProblem, AppError, ProblemKind};
use crate::metrics::WebhookOutcome;
use crate::store::now_ms;
use crate::store::refusals::RefusalReason;
use crate::store::writer::{Idempotency, IngestCommitted, IngestWrite, NewDelivery};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/webhooks/{slug}", post(receive))
        .layer(axum::middleware::map_response(
            super::fallback::api_problems,
        ))
}

/// The URL a sender posts to for the webhook action with `slug`.
pub fn url(public_url: &str, slug: &str) -> String {
    format!("{public_url}/webhooks/{slug}")
}

/// The key as sent: `X-Authorization: <key>` or `Authorization: Bearer <key>`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    use crate::auth::bearer;
    if let Some(v) = headers.get("x-authorization").and_then(|v| v.to_str().ok()) {
        return Some(bearer(v).unwrap_or(v.trim())).filter(|k| !k.is_empty());
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .filter(|k| !k.is_empty())
}

/// `Idempotency-Key` or, as signing senders send it, `webhook-id` (Standard Webhooks) or
/// `svix-id` (Svix), the first present in that order; an unusable one is named back.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiProblem> {
    let Some((name, value)) = ["Idempotency-Key", "webhook-id", "svix-id"]
        .into_iter()
        .find_map(|name| headers.get(name).map(|v| (name, v)))
    else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(k.to_owned()))
        }
        _ => Err(ApiProblem::new(
            ProblemKind::BadRequest,
            format!("{name} must be 1 to 255 visible ASCII characters"),
        )),
    }
}

/// The signature headers, under the Standard Webhooks names or Svix's (one set per request:
/// see `SignedHeaders::read`); a value that is not visible ASCII reads as empty, so that it
/// is refused as malformed rather than as missing.
fn signed_headers(headers: &HeaderMap) -> SignedHeaders<'_> {
    SignedHeaders::read(|name| headers.get(name).map(|v| v.to_str().unwrap_or("")))
}

fn unsigned(e: SignatureError) -> Refusal {
    (
        ApiProblem::new(ProblemKind::Unauthorized, e.to_string()),
        None,
    )
}

/// One request's context while it is checked, so that refusals are recorded uniformly.
struct Attempt {
    app: AppState,
    target: Arc<WebhookTarget>,
    started: Instant,
    received_at: i64,
    idempotency_key: Option<String>,
    /// Whether the request came with a key at all.
    key_presented: bool,
    /// Whether its key was found valid: only then is a refusal recorded as a delivery.
    key_valid: bool,
}

impl Attempt {
    /// Records the refusal (or, before a valid key was seen, counts it), then answers
    /// with it.
    async fn refuse(&self, problem: ApiProblem, body: Option<&[u8]>) -> Response {
        if !self.key_valid {
            let reason = if problem.kind == ProblemKind::RateLimited {
                RefusalReason::RateLimited
            } else if self.key_presented {
                RefusalReason::WrongKey
            } else {
                RefusalReason::MissingKey
            };
            self.app
                .refusals
                .count(self.target.action_id, self.received_at, reason);
            return problem.into_response();
        }
        let delivery = NewDelivery {
            action_id: self.target.action_id,
            received_at: self.received_at,
            status: problem.kind.status().as_u16(),
            problems: serde_json::to_string(&problem.entries()).expect("problems serialise"),
            body_excerpt: body.filter(|b| !b.is_empty()).map(excerpt),
            phone: None,
            idempotency_key: self.idempotency_key.clone(),
            started: self.started,
        };
        // A refusal changes nothing: when it cannot be recorded (a full disk), the sender
        // still learns what is wrong with its request rather than being told to retry it.
        if let Err(e) = self.app.writer.refusal(delivery).await {
            tracing::warn!(error = %e, status = problem.kind.status().as_u16(), "refusal not recorded");
        }
        problem.into_response()
    }

    /// Records and answers a request over a rate, with `Retry-After`.
    async fn rate_limited(&self, exceeded: Exceeded) -> Response {
        let problem = ApiProblem::new(ProblemKind::RateLimited, exceeded.describe());
        let mut res = self.refuse(problem, None).await;
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            res.headers_mut()
                .insert(header::RETRY_AFTER, exceeded.retry_after_secs().into());
        }
        res
    }
}

#[utoipa::path(
    post,
    path = "/webhooks/{slug}",
    tag = "ingest",
    operation_id = "ingest",
    summary = "Cache what a sender knows about a caller",
    description = "Validates the body, normalises the phone number and merges the fields into \
                   the caller's cached context (later values win; the expiry restarts). \
                   202 is sent once the data is committed. Refused requests cache nothing.",
    params(
        ("slug" = String, Path, description = "The webhook's unguessable URL slug (from its Configure step)"),
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$",
            description = "Seen again on this webhook within 24 h: the first answer again, \
                           with `Idempotent-Replayed: true`, and nothing changes"),
        ("webhook-id" = Option<String>, Header, pattern = "^[!-~]{1,255}$",
            description = "Standard Webhooks' event id: the Idempotency-Key when that is absent; \
                           on a webhook that requires signed requests, signed and always the key"),
        ("webhook-timestamp" = Option<String>, Header, pattern = "^[0-9]+$",
            description = "Signed requests: when the request was signed, in seconds since the Unix \
                           epoch; more than 300 seconds away is refused"),
        ("webhook-signature" = Option<String>, Header,
            description = "Signed requests: `v1,<base64 HMAC-SHA256 of \"{webhook-id}.{webhook-timestamp}.{body}\">`, \
                           several separated by spaces"),
        ("svix-id" = Option<String>, Header, pattern = "^[!-~]{1,255}$",
            description = "Svix's name for webhook-id (used when neither Idempotency-Key nor webhook-id \
                           is sent). A request's signature headers are read as one set: webhook-* when \
                           all three are sent, else svix-*; parts of both with neither whole are refused"),
        ("svix-timestamp" = Option<String>, Header, pattern = "^[0-9]+$",
            description = "Svix's name for webhook-timestamp"),
        ("svix-signature" = Option<String>, Header,
            description = "Svix's name for webhook-signature"),
    ),
    request_body(content = crate::http::openapi::IngestBody, content_type = "application/json"),
    responses(
        (status = 202, description = "Cached", body = crate::http::openapi::IngestReceipt,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is the first answer to an earlier request with the same Idempotency-Key"))),
        (status = 400, description = "`malformed-json`: not JSON; `bad-request`: an unusable Idempotency-Key", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`: no key, or not a key of this webhook", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 404, description = "`not-found`: no webhook at this URL", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "`action-disabled`: the webhook is disabled (checked after the key)", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 413, description = "`payload-too-large`: the body is over the limit (64 KiB by default)", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported-media-type`: not `application/json` (or `+json`) in UTF-8", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "`validation-failed`: JSON, but not the contract (every problem listed); `idempotency-key-reused`: the same key with a different body", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 408, description = "`request-timeout`: the request took too long to arrive; nothing was kept", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "`rate-limited`: too many requests; retry after `Retry-After` seconds", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
        (status = 503, description = "`unavailable`: the request could not be stored or served now; nothing was kept", body = crate::http::openapi::ProblemDetails, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ),
    security(("webhookKey" = []), ("webhookBearer" = [])),
)]
async fn receive(
    State(app): State<AppState>,
    Path(slug): Path<String>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let metrics = app.metrics.clone();
    let res = answer(app, slug, peer, headers, body).await;
    let replayed =
        res.status() == StatusCode::ACCEPTED && res.headers().contains_key("idempotent-replayed");
    metrics.webhook(WebhookOutcome::of_status(res.status().as_u16(), replayed));
    res
}

async fn answer(
    app: AppState,
    slug: String,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let received_at = now_ms();
    // An address that keeps posting to URLs that do not exist is refused before the lookup.
    let source = peer.as_ref().map(|Extension(ConnectInfo(p))| p.ip());
    let cached = app.catalog.cached_webhook(&slug);
    if cached.is_none()
        && let Some(ip) = source
        && let Err(exceeded) = app.ingest_limits.lookup(ip)
    {
        return crate::http::api::rate_limited(exceeded).into_response();
    }
    let found = match cached {
        Some(t) => Ok(Some(t)),
        None => app.catalog.webhook(&slug).await,
    };
    let target = match found {
        Ok(Some(t)) => t,
        Ok(None) => {
            if let Some(ip) = source {
                app.ingest_limits.lookup_failed(ip);
            }
            return ApiProblem::new(ProblemKind::NotFound, "no webhook at this URL")
                .into_response();
        }
        Err(e) => return AppError::from(e).into_response(),
    };
    let mut attempt = Attempt {
        app,
        target,
        started,
        received_at,
        idempotency_key: None,
        key_presented: presented_key(&headers).is_some(),
        key_valid: false,
    };
    if let Some(Extension(ConnectInfo(peer))) = peer
        && let Err(exceeded) = attempt.app.ingest_limits.source(peer.ip())
    {
        return attempt.rate_limited(exceeded).await;
    }
    match accept(&mut attempt, &headers, body).await {
        Ok(res) => res,
        Err((problem, body)) => attempt.refuse(problem, body.as_deref()).await,
    }
}

type Refusal = (ApiProblem, Option<bytes::Bytes>);

async fn accept(a: &mut Attempt, headers: &HeaderMap, body: Body) -> Result<Response, Refusal> {
    let refuse = |p: ApiProblem| (p, None);

    let Some(key) = presented_key(headers) else {
        return Err(refuse(ApiProblem::new(
            ProblemKind::Unauthorized,
            "send the webhook's API key in the X-Authorization header",
        )));
    };
    let presented = SecretHash::of(key);
    // Compare with every key, without stopping early.
    if !a.target.key_opens(&presented, a.received_at) {
        return Err(refuse(ApiProblem::new(
            ProblemKind::Unauthorized,
            "the API key is not valid for this webhook",
        )));
    }
    a.key_valid = true;
    if let Err(exceeded) = a.app.ingest_limits.action(a.target.action_id) {
        return Ok(a.rate_limited(exceeded).await);
    }
    if !a.target.enabled {
        return Err(refuse(ApiProblem::new(
            ProblemKind::ActionDisabled,
            "this webhook is disabled; nothing was stored",
        )));
    }
    let now_secs = a.received_at.div_euclid(1000);
    if a.target.signing.is_some() {
        signing::check_headers(&signed_headers(headers), now_secs).map_err(unsigned)?;
    }
    a.idempotency_key = idempotency_key(headers).map_err(refuse)?;
    require_json(headers).map_err(refuse)?;
    let bytes = read_limited(headers, body, a.app.body_limit)
        .await
        .map_err(refuse)?;
    if let Some(secret) = &a.target.signing {
        // Over the raw bytes, before anything reads them as JSON.
        let id = signing::verify(secret, &signed_headers(headers), &bytes, now_secs)
            .map_err(unsigned)?;
        // The signed id, not an unsigned Idempotency-Key, says which event this is.
        a.idempotency_key = Some(id.to_owned());
    }
    process(a, bytes).await
}

/// The body's checks and, when it passes them, its write: common to senders and to the
/// console's "Send sample request".
async fn process(a: &mut Attempt, bytes: bytes::Bytes) -> Result<Response, Refusal> {
    let raw = payload::parse(&bytes).map_err(|e| match e {
        PayloadError::Malformed(m) => (
            ApiProblem::new(ProblemKind::MalformedJson, m),
            Some(bytes.clone()),
        ),
        PayloadError::Invalid(p) => (
            ApiProblem::with_errors(ProblemKind::ValidationFailed, p),
            Some(bytes.clone()),
        ),
    })?;
    let (phones, region) = (&a.app.phones, a.target.region);
    let valid = payload::validate(raw, &a.target.agent_public_id, &a.target.schema, |p| {
        phones.parse(p, region)
    })
    .map_err(|p| {
        (
            ApiProblem::with_errors(ProblemKind::ValidationFailed, p),
            Some(bytes.clone()),
        )
    })?;

    let write = IngestWrite {
        action_id: a.target.action_id,
        agent_id: a.target.agent_id,
        phone: valid.phone.into_string(),
        field_names: crate::store::batch::field_names(&valid.fields),
        fields: serde_json::Value::Object(valid.fields).to_string(),
        ttl_ms: a.target.ttl_secs * 1000,
        idempotency: a.idempotency_key.clone().map(|key| Idempotency {
            key,
            body_hash: Sha256::digest(&bytes).into(),
        }),
        received_at: a.received_at,
        started: a.started,
    };
    match a.app.writer.ingest(write).await {
        Ok(IngestCommitted::Accepted(json)) => Ok(accepted(json, false)),
        Ok(IngestCommitted::Replayed(json)) => Ok(accepted(json, true)),
        // Recorded by the writer already.
        Ok(IngestCommitted::KeyReused) => Ok(ApiProblem::new(
            ProblemKind::IdempotencyKeyReused,
            "this Idempotency-Key was already used with a different body; nothing changed",
        )
        .into_response()),
        Err(e) => Ok(AppError::from(e).into_response()),
    }
}

/// Runs `body` through the webhook at `target` as if a sender had posted it with a valid
/// key: the console's "Send sample request". It is recorded like any delivery.
pub async fn sample(app: AppState, target: Arc<WebhookTarget>, body: bytes::Bytes) -> Response {
    let mut attempt = Attempt {
        app,
        target,
        started: Instant::now(),
        received_at: now_ms(),
        idempotency_key: None,
        key_presented: true,
        key_valid: true,
    };
    if !attempt.target.enabled {
        let problem = ApiProblem::new(
            ProblemKind::ActionDisabled,
            "this webhook is disabled; nothing was stored",
        );
        return attempt.refuse(problem, None).await;
    }
    match process(&mut attempt, body).await {
        Ok(res) => res,
        Err((problem, body)) => attempt.refuse(problem, body.as_deref()).await,
    }
}

fn accepted(json: String, replayed: bool) -> Response {
    let mut res = (StatusCode::ACCEPTED, json).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if replayed {
        res.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    res
}
