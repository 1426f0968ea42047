//! Server-rendered pages that need no sign-in: the front page and the problem types.

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use crate::error::ProblemKind;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/problems", get(problems))
        .route("/problems/{slug}", get(problem))
}

use super::render;

#[derive(Template)]
#[template(path = "home.html")]
struct Home {
    public_url: String,
    /// Whether an admin exists: else the console is reached through the setup link.
    has_admin: bool,
}

/// The front page: what the server is, and the way into the console.
async fn home(State(app): State<AppState>) -> Response {
    let has_admin = match crate::store::admins::count(&app.db).await {
        Ok(n) => n > 0,
        Err(e) => {
            tracing::warn!(error = %e, "the front page could not count admins");
            true
        }
    };
    render(Home {
        public_url: app.public_url.to_string(),
        has_admin,
    })
}

struct ProblemDoc {
    slug: &'static str,
    status: u16,
    title: &'static str,
    advice: &'static str,
}

impl From<ProblemKind> for ProblemDoc {
    fn from(k: ProblemKind) -> Self {
        Self {
            slug: k.slug(),
            status: k.status().as_u16(),
            title: k.title(),
            advice: k.advice(),
        }
    }
}

#[derive(Template)]
#[template(path = "problems.html")]
struct Problems {
    problems: Vec<ProblemDoc>,
}

async fn problems() -> Response {
    render(Problems {
        problems: ProblemKind::ALL.into_iter().map(ProblemDoc::from).collect(),
    })
}

#[derive(Template)]
#[template(path = "problem.html")]
struct ProblemPage {
    problem: ProblemDoc,
}

async fn problem(Path(slug): Path<String>) -> Response {
    match ProblemKind::from_slug(&slug) {
        Some(kind) => render(ProblemPage {
            problem: kind.into(),
        }),
        None => (StatusCode::NOT_FOUND, Html("<h1>No such problem type</h1>")).into_response(),
    }
}
