//! One error type for the HTTP layer, rendered as `application/problem+json` (RFC 9457).
//!
//! Internal errors are logged with their details and answered with a bare 500 (or 503
//! when the store refused a write), so nothing internal ever reaches a client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::domain::payload::Problem;
use crate::store::writer::WriteError;

/// The kinds of problem the API and ingest answer with. Each has a page at `/problems/{slug}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    MalformedJson,
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    /// The path exists, but not for this method (`Allow` lists the methods it takes).
    MethodNotAllowed,
    ActionDisabled,
    PayloadTooLarge,
    /// A request that did not arrive within the header or body timeout.
    RequestTimeout,
    /// A webhook's or a sender address's request rate is used up.
    RateLimited,
    UnsupportedMediaType,
    /// A request line and headers over the server's limit (HTTP/1.1; HTTP/2 refuses the
    /// stream itself).
    HeadersTooLarge,
    ValidationFailed,
    IdempotencyKeyReused,
    /// A call that has ended, or was continued by another answer.
    CallConflict,
    /// `If-Match` names a draft revision that is no longer the current one.
    PreconditionFailed,
    /// A write to the draft without `If-Match`.
    PreconditionRequired,
    /// The draft does not pass the checks a publish runs.
    PublishRefused,
    Unavailable,
    Internal,
}

impl ProblemKind {
    pub const ALL: [ProblemKind; 20] = [
        Self::MalformedJson,
        Self::BadRequest,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::ActionDisabled,
        Self::PayloadTooLarge,
        Self::RequestTimeout,
        Self::RateLimited,
        Self::UnsupportedMediaType,
        Self::HeadersTooLarge,
        Self::ValidationFailed,
        Self::IdempotencyKeyReused,
        Self::CallConflict,
        Self::PreconditionFailed,
        Self::PreconditionRequired,
        Self::PublishRefused,
        Self::Unavailable,
        Self::Internal,
    ];

    pub fn status(self) -> StatusCode {
        match self {
            Self::MalformedJson | Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::ActionDisabled | Self::CallConflict => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::ValidationFailed | Self::IdempotencyKeyReused | Self::PublishRefused => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Self::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn slug(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed-json",
            Self::BadRequest => "bad-request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::ActionDisabled => "action-disabled",
            Self::PayloadTooLarge => "payload-too-large",
            Self::RequestTimeout => "request-timeout",
            Self::RateLimited => "rate-limited",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::HeadersTooLarge => "headers-too-large",
            Self::ValidationFailed => "validation-failed",
            Self::IdempotencyKeyReused => "idempotency-key-reused",
            Self::CallConflict => "call-conflict",
            Self::PreconditionFailed => "precondition-failed",
            Self::PreconditionRequired => "precondition-required",
            Self::PublishRefused => "publish-refused",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Self::MalformedJson => "The body is not valid JSON",
            Self::BadRequest => "The request is malformed",
            Self::Unauthorized => "Missing or wrong credentials",
            Self::Forbidden => "Not allowed with these credentials",
            Self::NotFound => "Nothing here",
            Self::MethodNotAllowed => "This method is not allowed here",
            Self::ActionDisabled => "This webhook is disabled",
            Self::PayloadTooLarge => "The body is too large",
            Self::RequestTimeout => "The request took too long to arrive",
            Self::RateLimited => "Too many requests",
            Self::UnsupportedMediaType => "The body must be JSON",
            Self::HeadersTooLarge => "The request's headers are too large",
            Self::ValidationFailed => "The request has invalid fields",
            Self::IdempotencyKeyReused => "Idempotency key reused with a different body",
            Self::CallConflict => "The call cannot take this answer",
            Self::PreconditionFailed => "The draft changed since you read it",
            Self::PreconditionRequired => "Say which revision of the draft you change",
            Self::PublishRefused => "The draft cannot be published yet",
            Self::Unavailable => "Temporarily unable to store the request",
            Self::Internal => "Internal error",
        }
    }

    /// What a sender should do about it, for the problem's page.
    pub fn advice(self) -> &'static str {
        match self {
            Self::MalformedJson => {
                "Send one JSON object, encoded as UTF-8, nested no deeper than a list of values."
            }
            Self::BadRequest => "Check the headers named in the detail.",
            Self::Unauthorized => {
                "Send the API key shown when the webhook was configured, in X-Authorization (or Authorization: Bearer). Keys belong to one webhook URL each. A webhook that requires signed requests also needs webhook-id, webhook-timestamp (within 5 minutes of now) and webhook-signature (Standard Webhooks); the detail names the header at fault."
            }
            Self::Forbidden => "Use a runtime token made for this agent.",
            Self::NotFound => "Check the URL: copy it again from the webhook's Configure step.",
            Self::MethodNotAllowed => {
                "Use one of the methods the Allow header lists: webhooks take POST, a call is read with GET."
            }
            Self::ActionDisabled => "An admin has disabled this webhook; enable it in the console.",
            Self::PayloadTooLarge => "Send only what the agent needs: the body limit is 64 KiB.",
            Self::RequestTimeout => {
                "Send each request at once: its headers and its body each have a few seconds to arrive. Nothing of this request was kept."
            }
            Self::RateLimited => {
                "Retry after the number of seconds in Retry-After; the detail names the limit (this webhook's, or your address's). Nothing of this request was kept."
            }
            Self::UnsupportedMediaType => "Send Content-Type: application/json.",
            Self::HeadersTooLarge => {
                "Send shorter headers: the request line and headers together may take 16 KiB by default (the detail gives this server's limit). Data belongs in the body. Nothing of this request was kept."
            }
            Self::ValidationFailed => {
                "Each entry of `errors` names a field (as a JSON pointer) and what is wrong with it. agentId and phoneNumber are required; other fields must be strings, numbers, booleans, null or lists of those, and declared variables must have their declared type."
            }
            Self::IdempotencyKeyReused => {
                "Use a new Idempotency-Key for a new body; resend the same body to get the first answer again."
            }
            Self::CallConflict => {
                "Read the call again (GET /api/v1/calls/{id}): answer only its current question, and only while its status is active."
            }
            Self::PreconditionFailed => {
                "Someone saved the draft after you read it. Read it again (GET, with its ETag), apply your change to it, and send it with If-Match set to the new ETag."
            }
            Self::PreconditionRequired => {
                "Send If-Match with the ETag of the draft you read (GET …/draft), so that a change made meanwhile is not overwritten; If-Match: * overwrites whatever is there."
            }
            Self::PublishRefused => {
                "Each entry of `errors` points into the draft (a JSON pointer) and says what to finish or fix; POST …/draft/validate lists them without publishing."
            }
            Self::Unavailable => {
                "Retry after the number of seconds in Retry-After; nothing of this request was kept."
            }
            Self::Internal => "Retry later; the error has been logged.",
        }
    }

    pub fn from_slug(slug: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.slug() == slug)
    }
}

/// A problem answer: kind, a sentence for humans, and one entry per problem.
#[derive(Debug, Clone)]
pub struct ApiProblem {
    pub kind: ProblemKind,
    pub detail: String,
    pub errors: Vec<Problem>,
    /// Seconds for `Retry-After`, when the client should wait that long.
    pub retry_after: Option<u64>,
}

impl ApiProblem {
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// Tells the client to retry after `secs` seconds.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn with_errors(kind: ProblemKind, errors: Vec<Problem>) -> Self {
        let detail = match errors.as_slice() {
            [one] => one.detail.clone(),
            many => format!("{} problems; see errors", many.len()),
        };
        Self {
            kind,
            detail,
            errors,
            retry_after: None,
        }
    }

    /// The entries to record: `errors`, or the detail alone when there are none.
    pub fn entries(&self) -> Vec<Problem> {
        if self.errors.is_empty() {
            vec![Problem::body(self.detail.clone())]
        } else {
            self.errors.clone()
        }
    }

    pub fn body(&self) -> serde_json::Value {
        let mut body = serde_json::json!({
            "type": format!("/problems/{}", self.kind.slug()),
            "title": self.kind.title(),
            "status": self.kind.status().as_u16(),
            "detail": self.detail,
        });
        if !self.errors.is_empty() {
            body["errors"] = serde_json::to_value(&self.errors).expect("problems serialise");
        }
        body
    }
}

impl IntoResponse for ApiProblem {
    fn into_response(self) -> Response {
        let mut res = (self.kind.status(), self.body().to_string()).into_response();
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match self.kind {
            ProblemKind::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ProblemKind::Unavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{}: {}", .0.kind.slug(), .0.detail)]
    Problem(ApiProblem),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<crate::store::StoreError> for AppError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::Conflict(m) => Self::problem(ProblemKind::ValidationFailed, m),
            StoreError::NotFound(m) => Self::problem(ProblemKind::NotFound, m),
            e @ StoreError::Stale { .. } => {
                Self::problem(ProblemKind::PreconditionFailed, e.to_string())
            }
            StoreError::Database(e) => Self::Database(e),
        }
    }
}

impl From<ApiProblem> for AppError {
    fn from(p: ApiProblem) -> Self {
        Self::Problem(p)
    }
}

impl AppError {
    pub fn problem(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Self::Problem(ApiProblem::new(kind, detail))
    }

    /// The problem a client sees; internals are logged here and replaced by a bare message.
    pub fn into_problem(self) -> ApiProblem {
        match self {
            Self::Problem(p) => p,
            Self::Write(e) => {
                tracing::error!(error = %e, "write refused");
                ApiProblem::new(
                    ProblemKind::Unavailable,
                    "the request could not be stored or served now; nothing was kept, retry shortly",
                )
            }
            Self::Database(e) => {
                tracing::error!(error = %e, "database error");
                ApiProblem::new(ProblemKind::Internal, "internal error")
            }
            Self::Other(e) => {
                tracing::error!(error = %e, "internal error");
                ApiProblem::new(ProblemKind::Internal, "internal error")
            }
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.into_problem().into_response()
    }
}
