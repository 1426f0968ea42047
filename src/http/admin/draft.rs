//! Reviewing and publishing an agent's draft: what it changes against the published
//! version, in words; what would stop it from being published, each linked to where it is;
//! Publish with a message; Discard; and the versions, each restorable into the draft.

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use serde::Deserialize;

use super::{
    DraftBar, Page, PageResult, agent, agent_draft, by, edited, isolate, not_found, render,
};
use crate::auth::session::{Admin, AdminForm};
use crate::domain::document;
use crate::domain::runtime::At;
use crate::drafts::EditError;
use crate::http::AppState;
use crate::store::documents::{self, PublishError};
use crate::store::{StoreError, rfc3339};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/agents/{agent}/draft", get(review))
        .route("/admin/agents/{agent}/publish", post(publish))
        .route("/admin/agents/{agent}/draft/discard", post(discard))
        .route("/admin/agents/{agent}/versions", get(versions))
        .route("/admin/agents/{agent}/versions/{version}", get(version))
        .route(
            "/admin/agents/{agent}/versions/{version}/restore",
            post(restore),
        )
}

/// A problem, with a link to where it can be fixed.
struct ProblemView {
    text: String,
    link: String,
}

#[derive(Template)]
#[template(path = "admin/draft.html")]
struct ReviewPage {
    page: Page,
    bar: DraftBar,
    agent_id: String,
    agent_name: String,
    first_flow: Option<String>,
    changes: Vec<String>,
    problems: Vec<ProblemView>,
    revision: i64,
}

async fn review(State(app): State<AppState>, admin: Admin, Path(id): Path<String>) -> PageResult {
    let a = agent(&app, &id).await?;
    let d = agent_draft(&app, &a).await?;
    let flash = app.flash.take(admin.session_id);
    let doc = d.doc();
    let changes = match &d.published {
        Some(p) => document::changes(&p.document, doc),
        None => vec!["Nothing is published yet".into()],
    };
    let (program, found) = document::findings(doc);
    let first = doc.first_flow.clone().unwrap_or_default();
    let problems = found
        .iter()
        .map(|x| ProblemView {
            text: x.describe(&program),
            link: match &x.at {
                At::Block(f, b) => format!("/admin/agents/{id}/flows/{f}?block={b}#settings"),
                At::Flow(f) => format!("/admin/agents/{id}/flows/{f}"),
                At::Rule(r) => format!("/admin/agents/{id}/rules/{r}"),
                At::Agent => format!("/admin/agents/{id}/flows/{first}"),
            },
        })
        .collect();
    Ok(render(ReviewPage {
        page: Page::new(&admin, format!("Publish · {}", isolate(&a.name)), &flash),
        revision: d.bar.revision,
        first_flow: doc.first_flow.clone(),
        bar: d.bar,
        agent_id: a.public_id.clone(),
        agent_name: a.name.clone(),
        changes,
        problems,
    }))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PublishForm {
    message: String,
    revision: Option<i64>,
}

async fn publish(
    State(app): State<AppState>,
    Path(id): Path<String>,
    f: AdminForm<PublishForm>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let back = format!("/admin/agents/{id}/draft");
    let message: String = f.form.message.trim().chars().take(500).collect();
    match documents::publish(&app.db, a.id, f.form.revision, &by(&f.admin), &message).await {
        Ok(meta) => {
            app.catalog.invalidate();
            app.flash.notice(
                f.admin.session_id,
                format!(
                    "Published as version {}: calls run it from now on.",
                    meta.number
                ),
            );
            Ok(Redirect::to(&format!("/admin/agents/{id}/versions")).into_response())
        }
        Err(PublishError::Problems(problems)) => {
            app.flash.error(
                f.admin.session_id,
                format!(
                    "Not published: {} problem{} to finish first (listed below).",
                    problems.len(),
                    if problems.len() == 1 { "" } else { "s" }
                ),
            );
            Ok(Redirect::to(&back).into_response())
        }
        Err(PublishError::Store(StoreError::Stale { current })) => {
            let who = crate::drafts::current(&app.db, a.id).await;
            let error = match who {
                Ok(d) => EditError::Stale {
                    current,
                    by: d.updated_by,
                    at: d.updated_at,
                },
                Err(e) => e,
            };
            edited(&app, &f.admin, &back, Err(error))
        }
        Err(PublishError::Store(e)) => Err(crate::error::AppError::from(e).into()),
    }
}

async fn discard(
    State(app): State<AppState>,
    Path(id): Path<String>,
    f: AdminForm<PublishForm>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let result = documents::discard(&app.db, a.id, f.form.revision, &by(&f.admin))
        .await
        .map(|saved| {
            (
                "The draft's changes are discarded: it is the published version again.".to_owned(),
                saved,
            )
        });
    edited(
        &app,
        &f.admin,
        &format!("/admin/agents/{id}/draft"),
        result.map_err(store_edit),
    )
}

fn store_edit(e: StoreError) -> EditError {
    match e {
        StoreError::Stale { current } => EditError::Stale {
            current,
            by: "someone".into(),
            at: crate::store::now_ms(),
        },
        StoreError::NotFound(m) => EditError::NotFound(m),
        StoreError::Conflict(m) => EditError::Refused(m),
        StoreError::Database(e) => EditError::Database(e),
    }
}

struct VersionView {
    number: i64,
    published_at: String,
    published_by: String,
    message: String,
    live: bool,
}

#[derive(Template)]
#[template(path = "admin/versions.html")]
struct VersionsPage {
    page: Page,
    bar: DraftBar,
    agent_id: String,
    agent_name: String,
    first_flow: Option<String>,
    versions: Vec<VersionView>,
    revision: i64,
}

async fn versions(State(app): State<AppState>, admin: Admin, Path(id): Path<String>) -> PageResult {
    let a = agent(&app, &id).await?;
    let d = agent_draft(&app, &a).await?;
    let flash = app.flash.take(admin.session_id);
    let versions = documents::versions(&app.db, a.id)
        .await?
        .into_iter()
        .map(|v| VersionView {
            live: Some(v.number) == a.published_version,
            number: v.number,
            published_at: rfc3339(v.published_at),
            published_by: v.published_by,
            message: v.message,
        })
        .collect();
    Ok(render(VersionsPage {
        page: Page::new(&admin, format!("Versions · {}", isolate(&a.name)), &flash),
        revision: d.bar.revision,
        first_flow: d.doc().first_flow.clone(),
        bar: d.bar,
        agent_id: a.public_id.clone(),
        agent_name: a.name.clone(),
        versions,
    }))
}

#[derive(Template)]
#[template(path = "admin/version.html")]
struct VersionPage {
    page: Page,
    bar: DraftBar,
    agent_id: String,
    agent_name: String,
    first_flow: Option<String>,
    version: VersionView,
    /// What it changed against the version before it (none for the first).
    changes: Option<Vec<String>>,
    /// The document, as `precall agent export --version N` prints it.
    json: String,
    revision: i64,
}

/// One published version: who published it, what it changed, its document.
async fn version(
    State(app): State<AppState>,
    admin: Admin,
    Path((id, number)): Path<(String, String)>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let Some(number) = number.parse::<i64>().ok().filter(|n| *n > 0) else {
        return Err(not_found("This version"));
    };
    let Some(v) = documents::version(&app.db, a.id, number).await? else {
        return Err(not_found("This version"));
    };
    let changes = match documents::version(&app.db, a.id, number - 1).await? {
        Some(before) => Some(document::changes(&before.document, &v.document)),
        None => None,
    };
    let d = agent_draft(&app, &a).await?;
    let flash = app.flash.take(admin.session_id);
    let json = serde_json::to_string_pretty(&v.document.to_json()).unwrap_or_default();
    Ok(render(VersionPage {
        page: Page::new(
            &admin,
            format!("Version {number} · {}", isolate(&a.name)),
            &flash,
        ),
        revision: d.bar.revision,
        first_flow: d.doc().first_flow.clone(),
        bar: d.bar,
        agent_id: a.public_id.clone(),
        agent_name: a.name.clone(),
        version: VersionView {
            live: Some(number) == a.published_version,
            number,
            published_at: rfc3339(v.meta.published_at),
            published_by: v.meta.published_by,
            message: v.meta.message,
        },
        changes,
        json,
    }))
}

async fn restore(
    State(app): State<AppState>,
    Path((id, version)): Path<(String, i64)>,
    f: AdminForm<PublishForm>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    if documents::version(&app.db, a.id, version).await?.is_none() {
        return Err(not_found("This version"));
    }
    let result = documents::restore(&app.db, a.id, version, f.form.revision, &by(&f.admin))
        .await
        .map(|saved| {
            (
                format!(
                    "Version {version} is the draft again: review it and publish it to run it."
                ),
                saved,
            )
        });
    edited(
        &app,
        &f.admin,
        &format!("/admin/agents/{id}/draft"),
        result.map_err(store_edit),
    )
}
