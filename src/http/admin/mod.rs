//! The admin console: server-rendered pages (askama), forms with CSRF tokens, and a little
//! JavaScript where it helps (copy buttons, the live Test viewer).

mod actions;
mod agents;
mod api_tokens;
mod calls;
mod confirm;
mod connections;
mod draft;
mod flow_svg;
mod flows;
mod people;
mod rules;
mod simulate;
mod time;
mod variables;

use askama::Template;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::AppState;
use crate::auth::session::{Admin, FlashData};
use crate::domain::document::{self, AgentDocument};
use crate::drafts;
use crate::error::AppError;
use crate::store::agents::Agent;
use crate::store::{StoreError, documents};

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(people::router())
        .merge(agents::router())
        .merge(flows::router())
        .merge(actions::router())
        .merge(connections::router())
        .merge(rules::router())
        .merge(variables::router())
        .merge(calls::router())
        .merge(simulate::router())
        .merge(draft::router())
        .merge(api_tokens::router())
        .layer(axum::middleware::map_response(super::fallback::html_errors))
        .layer(axum::middleware::map_response(private))
}

/// Console answers are never cached (some show a secret once) nor framed by other sites.
async fn private(mut res: Response) -> Response {
    use axum::http::{HeaderValue, header};
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static("frame-ancestors 'none'"));
    res
}

/// A name inside a page's title, isolated (FSI … PDI) so that none of its characters can
/// reorder the words around it, as `<bdi>` does in the page itself.
pub fn isolate(name: &str) -> String {
    format!("\u{2068}{name}\u{2069}")
}

/// What every console page shows around its content.
pub struct Page {
    pub title: String,
    pub email: String,
    pub csrf: String,
    pub notice: Option<String>,
    pub error: Option<String>,
}

impl Page {
    /// The frame for `admin`'s page, with what was waiting to be shown once.
    pub fn new(admin: &Admin, title: impl Into<String>, flash: &FlashData) -> Self {
        Self {
            title: title.into(),
            email: admin.email.clone(),
            csrf: admin.csrf.clone(),
            notice: flash.notice.clone(),
            error: flash.error.clone(),
        }
    }
}

/// Renders a page, or a bare 500 if the template fails.
pub fn render(t: impl Template) -> Response {
    super::render(t)
}

/// An admin route's failure, shown as a page.
pub struct HtmlError(AppError);

impl<E: Into<AppError>> From<E> for HtmlError {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

#[derive(Template)]
#[template(path = "admin/error.html")]
struct ErrorPage {
    status: u16,
    title: String,
    detail: String,
}

impl IntoResponse for HtmlError {
    fn into_response(self) -> Response {
        let problem = self.0.into_problem();
        error_page(problem.kind.status(), problem.kind.title(), &problem.detail)
    }
}

/// The console's error page, with `status`.
pub fn error_page(status: StatusCode, title: &str, detail: &str) -> Response {
    let page = ErrorPage {
        status: status.as_u16(),
        title: title.to_owned(),
        detail: detail.to_owned(),
    };
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response(),
    }
}

pub type PageResult = Result<Response, HtmlError>;

/// A 404 page.
pub fn not_found(what: &str) -> HtmlError {
    HtmlError(AppError::problem(
        crate::error::ProblemKind::NotFound,
        format!("{what} does not exist (or was deleted)"),
    ))
}

/// After a form: back to `to`, with `result`'s message shown there once.
pub fn after(
    app: &AppState,
    admin: &Admin,
    to: &str,
    result: Result<String, StoreError>,
) -> PageResult {
    match result {
        Ok(notice) => app.flash.notice(admin.session_id, notice),
        Err(StoreError::Conflict(m) | StoreError::NotFound(m)) => {
            app.flash.error(admin.session_id, m)
        }
        Err(e @ StoreError::Stale { .. }) => app.flash.error(admin.session_id, e.to_string()),
        Err(StoreError::Database(e)) => return Err(e.into()),
    }
    Ok(Redirect::to(to).into_response())
}

/// The agent with this public id, or a 404 page.
pub async fn agent(app: &AppState, public_id: &str) -> Result<Agent, HtmlError> {
    crate::store::agents::find_by_public_id(&app.db, public_id)
        .await?
        .ok_or_else(|| not_found("This agent"))
}

/// The agent's First Flow in the editor (where pre-call actions are listed), else the agent.
pub fn first_flow_link(agent_id: &str, doc: &AgentDocument) -> String {
    match &doc.first_flow {
        Some(f) => format!("/admin/agents/{agent_id}/flows/{f}"),
        None => format!("/admin/agents/{agent_id}"),
    }
}

/// What every page of an agent shows of its draft: how far it is from the published
/// version, whether it can be published, and who saved it last.
#[derive(Clone)]
pub struct DraftBar {
    pub agent_id: String,
    pub revision: i64,
    pub changes: usize,
    pub problems: usize,
    pub updated_by: String,
    pub updated_at: String,
    pub published: Option<i64>,
}

/// An agent's draft and published version, as the console shows them.
pub struct AgentDraft {
    pub draft: documents::Draft,
    pub published: Option<documents::Version>,
    pub bar: DraftBar,
}

impl AgentDraft {
    pub fn doc(&self) -> &AgentDocument {
        &self.draft.document
    }
}

pub async fn agent_draft(app: &AppState, a: &Agent) -> Result<AgentDraft, HtmlError> {
    let draft = documents::draft(&app.db, a.id)
        .await?
        .ok_or_else(|| not_found("This agent's draft"))?;
    let published = documents::published(&app.db, a.id).await?;
    let changes = published
        .as_ref()
        .map_or(1, |p| document::changes(&p.document, &draft.document).len());
    let bar = DraftBar {
        agent_id: a.public_id.clone(),
        revision: draft.revision,
        changes,
        problems: document::check(&draft.document).len(),
        updated_by: draft.updated_by.clone(),
        updated_at: crate::store::rfc3339(draft.updated_at),
        published: published.as_ref().map(|p| p.meta.number),
    };
    Ok(AgentDraft {
        draft,
        published,
        bar,
    })
}

/// Who the console is, in the draft's and versions' records.
pub fn by(admin: &Admin) -> String {
    admin.email.clone()
}

/// After an edit of the draft: back to `to` with what happened, its new endpoints' keys
/// waiting to be shown once.
pub fn edited(
    app: &AppState,
    admin: &Admin,
    to: &str,
    result: Result<(String, documents::Saved), drafts::EditError>,
) -> PageResult {
    match result {
        Ok((notice, saved)) => {
            app.catalog.invalidate();
            for e in &saved.created {
                app.flash
                    .secret(admin.session_id, "webhook", e.id, &e.api_key);
            }
            app.flash.notice(admin.session_id, notice);
        }
        Err(drafts::EditError::Database(e)) => return Err(e.into()),
        Err(e) => app.flash.error(admin.session_id, e.to_string()),
    }
    Ok(Redirect::to(to).into_response())
}
