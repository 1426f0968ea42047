//! Answers the framework gives on its own (no route, a method the route does not take, a
//! path or query that does not parse) in the server's own formats: problem+json under
//! `/api/` and `/webhooks/`, the console's error page elsewhere.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::{ApiProblem, ProblemKind};

/// Whether `path` is answered in problem+json.
pub fn is_api(path: &str) -> bool {
    path.starts_with("/api/")
        || path.starts_with("/webhooks/")
        || path.starts_with("/connect/")
        || path == "/api"
}

/// The router's fallback: nothing is routed at this path.
pub async fn no_route(req: Request) -> Response {
    let path = req.uri().path();
    let detail = format!("nothing is served at {}", crate::domain::ids::excerpt(path));
    if is_api(path) {
        ApiProblem::new(ProblemKind::NotFound, detail).into_response()
    } else {
        super::admin::error_page(StatusCode::NOT_FOUND, "Nothing here", &detail)
    }
}

/// Turns a bare error of the framework on an API route (an empty 405, a text/plain 400 for
/// a path that is not UTF-8) into a problem. Answers that already are problems pass as is.
pub async fn api_problems(res: Response) -> Response {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) || is_problem(&res) {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = read_text(body).await;
    let kind = match status {
        StatusCode::METHOD_NOT_ALLOWED => ProblemKind::MethodNotAllowed,
        StatusCode::NOT_FOUND => ProblemKind::NotFound,
        StatusCode::PAYLOAD_TOO_LARGE => ProblemKind::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ProblemKind::UnsupportedMediaType,
        StatusCode::UNPROCESSABLE_ENTITY => ProblemKind::ValidationFailed,
        s if s.is_server_error() => ProblemKind::Internal,
        _ => ProblemKind::BadRequest,
    };
    let detail = match kind {
        // The router adds `Allow` to the answer once it is written.
        ProblemKind::MethodNotAllowed => {
            "this path does not take this method: the Allow header lists those it takes".to_owned()
        }
        _ if text.is_empty() => kind.title().to_owned(),
        _ => text,
    };
    let mut problem = ApiProblem::new(kind, detail).into_response();
    *problem.status_mut() = status;
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        problem.headers_mut().insert(header::ALLOW, allow.clone());
    }
    problem
}

/// Turns a bare error of the framework on a console route into the console's error page.
pub async fn html_errors(res: Response) -> Response {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) || !is_bare_text(&res) {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = read_text(body).await;
    let title = match status {
        StatusCode::METHOD_NOT_ALLOWED => "This page does not take this method",
        StatusCode::NOT_FOUND => "Nothing here",
        StatusCode::FORBIDDEN => "This request was refused",
        s if s.is_server_error() => "Something went wrong",
        _ => "This address is not valid",
    };
    let detail = if text.is_empty() {
        "Check the address, or go back to the agents.".to_owned()
    } else {
        text
    };
    let mut page = super::admin::error_page(status, title, &detail);
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        page.headers_mut().insert(header::ALLOW, allow.clone());
    }
    page
}

fn content_type(res: &Response) -> &str {
    res.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn is_problem(res: &Response) -> bool {
    content_type(res).starts_with("application/problem+json")
}

/// An empty or plain-text body: what the framework's own rejections carry.
fn is_bare_text(res: &Response) -> bool {
    let ct = content_type(res);
    ct.is_empty() || ct.starts_with("text/plain")
}

/// The first few hundred bytes of a framework error's text (they are short), as one line.
async fn read_text(body: Body) -> String {
    let bytes = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let mut line: String = text.trim().chars().take(200).collect();
    line = line.replace(['\r', '\n'], " ");
    line
}
