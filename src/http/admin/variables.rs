//! An agent's variable schema, in the draft: name, type, default, description, source.
//! Ingest checks fields against the published schema; a change here reaches it on publish.

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde::Deserialize;
use serde_json::Value;

use super::confirm::Confirmation;
use super::{
    DraftBar, Page, PageResult, agent, agent_draft, by, edited, isolate, not_found, render,
};
use crate::auth::session::{Admin, AdminForm};
use crate::domain::document::{AgentDocument, MAX_TEXT, Source, VariableDoc};
use crate::domain::variables::{SYSTEM_VARIABLES, VarType, VariableName};
use crate::drafts;
use crate::http::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/agents/{agent}/variables", get(page).post(save))
        .route(
            "/admin/agents/{agent}/variables/{name}/delete",
            get(confirm_delete).post(delete),
        )
}

struct VariableView {
    name: String,
    ty: String,
    default: String,
    description: String,
    source: String,
    published: bool,
}

#[derive(Template)]
#[template(path = "admin/variables.html")]
struct VariablesPage {
    page: Page,
    bar: DraftBar,
    agent_id: String,
    agent_name: String,
    first_flow: Option<String>,
    variables: Vec<VariableView>,
    system: Vec<&'static str>,
    /// The variable being edited (or the form as typed, when it was refused).
    editing: Option<VariableView>,
    /// Whether `editing` is a new variable.
    new: bool,
    error: Option<String>,
    types: Vec<&'static str>,
    revision: i64,
}

#[derive(Deserialize)]
struct EditQuery {
    edit: Option<String>,
}

/// A default as the form shows it: text as is, anything else as JSON.
fn default_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn source_text(doc: &AgentDocument, s: &Option<Source>) -> String {
    match s {
        None => "set by hand".into(),
        Some(Source::Action(a)) => doc.action(a).map_or_else(
            || "a pre-call action".into(),
            |x| format!("Webhook {:?}", x.name),
        ),
        Some(Source::Block { flow, block }) => doc.flow(flow).map_or_else(
            || "a Collect block".into(),
            |f| {
                let n = f
                    .blocks
                    .iter()
                    .position(|b| &b.key == block)
                    .map_or(0, |i| i + 1);
                format!("Collect #{n} in {:?}", f.name)
            },
        ),
    }
}

async fn render_page(
    app: &AppState,
    admin: &Admin,
    id: &str,
    edit: Option<String>,
    typed: Option<(VariableForm, String)>,
) -> PageResult {
    let a = agent(app, id).await?;
    let d = agent_draft(app, &a).await?;
    let doc = d.doc();
    let flash = app.flash.take(admin.session_id);
    let variables: Vec<VariableView> = doc
        .variables
        .iter()
        .map(|v| VariableView {
            name: v.name.clone(),
            ty: v.ty.as_str().into(),
            default: default_text(&v.default),
            description: v.description.clone(),
            source: source_text(doc, &v.source),
            published: d
                .published
                .as_ref()
                .is_some_and(|p| p.document.variables.iter().any(|x| x == v)),
        })
        .collect();
    let (editing, new, error) = match typed {
        Some((form, error)) => {
            let new = !variables.iter().any(|v| v.name == form.name.trim());
            (
                Some(VariableView {
                    name: form.name,
                    ty: form.ty,
                    default: form.default,
                    description: form.description,
                    source: String::new(),
                    published: false,
                }),
                new,
                Some(format!("Not saved: {error}")),
            )
        }
        None => (
            edit.and_then(|name| {
                variables
                    .iter()
                    .find(|v| v.name == name)
                    .map(|v| VariableView {
                        name: v.name.clone(),
                        ty: v.ty.clone(),
                        default: v.default.clone(),
                        description: v.description.clone(),
                        source: v.source.clone(),
                        published: v.published,
                    })
            }),
            false,
            None,
        ),
    };
    Ok(render(VariablesPage {
        page: Page::new(admin, format!("Variables · {}", isolate(&a.name)), &flash),
        revision: d.bar.revision,
        first_flow: doc.first_flow.clone(),
        bar: d.bar,
        agent_id: a.public_id.clone(),
        agent_name: a.name.clone(),
        variables,
        system: SYSTEM_VARIABLES.to_vec(),
        editing,
        new,
        error,
        types: vec!["string", "number", "boolean", "list"],
    }))
}

async fn page(
    State(app): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    Query(q): Query<EditQuery>,
) -> PageResult {
    render_page(&app, &admin, &id, q.edit, None).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct VariableForm {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    default: String,
    description: String,
    revision: Option<i64>,
}

async fn save(
    State(app): State<AppState>,
    Path(id): Path<String>,
    f: AdminForm<VariableForm>,
) -> PageResult {
    let AdminForm { admin, form } = f;
    let a = agent(&app, &id).await?;
    let back = format!("/admin/agents/{id}/variables");
    let parsed = (|| {
        let name = VariableName::parse(form.name.trim())?;
        if name.is_system() {
            return Err(format!(
                "{name} is a system variable: it cannot be declared"
            ));
        }
        let ty = VarType::parse(&form.ty)?;
        let text = form.default.trim();
        let default = if text.is_empty() {
            Value::Null
        } else {
            let v = serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()));
            ty.coerce(&v).map_err(|e| format!("Default: {e}"))?
        };
        if form.description.chars().count() > MAX_TEXT {
            return Err(format!(
                "the description is longer than {MAX_TEXT} characters"
            ));
        }
        Ok((name, ty, default))
    })();
    let (name, ty, default) = match parsed {
        Ok(p) => p,
        Err(e) => {
            let mut res = render_page(&app, &admin, &id, None, Some((form, e))).await?;
            *res.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            return Ok(res);
        }
    };
    let description = form.description.trim().to_owned();
    let result = drafts::edit(&app.db, a.id, form.revision, &by(&admin), |doc| {
        let var = VariableDoc {
            name: name.to_string(),
            ty,
            default,
            description,
            source: None,
        };
        match doc.variables.iter_mut().find(|v| v.name == var.name) {
            Some(v) => {
                let source = v.source.take();
                *v = VariableDoc { source, ..var };
            }
            None => doc.variables.push(var),
        }
        Ok(format!("Saved {name} to the draft."))
    })
    .await;
    match result {
        Err(e @ drafts::EditError::Stale { .. }) => {
            let mut res = render_page(&app, &admin, &id, None, Some((form, e.to_string()))).await?;
            *res.status_mut() = StatusCode::CONFLICT;
            Ok(res)
        }
        other => edited(&app, &admin, &back, other),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Revision {
    revision: Option<i64>,
}

/// The confirmation page of a variable's Delete: what goes, and when calls notice.
async fn confirm_delete(
    State(app): State<AppState>,
    admin: Admin,
    Path((id, name)): Path<(String, String)>,
    Query(q): Query<Revision>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let d = agent_draft(&app, &a).await?;
    let Some(v) = d.doc().variables.iter().find(|v| v.name == name) else {
        return Err(not_found("This variable"));
    };
    let published = d
        .published
        .as_ref()
        .is_some_and(|p| p.document.variables.iter().any(|x| x.name == name));
    let back = format!("/admin/agents/{id}/variables");
    let flash = app.flash.take(admin.session_id);
    let page = Confirmation::new(
        Page::new(
            &admin,
            format!("Delete {} · {}", isolate(&name), isolate(&a.name)),
            &flash,
        ),
        ("Delete the variable ", &v.name, " from the draft?"),
        format!("/admin/agents/{id}/variables/{name}/delete"),
        &back,
    )
    .crumb("/admin/agents", "Agents")
    .crumb(format!("/admin/agents/{id}"), &a.name)
    .crumb(&back, "Variables")
    .says(format!(
        "Its declaration ({}, its default and description) goes with it.",
        v.ty.as_str()
    ))
    .says(if published {
        "Calls and webhooks keep the published declaration until the draft is published."
    } else {
        "It was never published: calls never used its declaration."
    })
    .field("revision", q.revision.unwrap_or(d.bar.revision))
    .buttons("Keep it", "Delete");
    Ok(render(page))
}

async fn delete(
    State(app): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    f: AdminForm<Revision>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let result = drafts::edit(&app.db, a.id, f.form.revision, &by(&f.admin), |doc| {
        let before = doc.variables.len();
        doc.variables.retain(|v| v.name != name);
        if doc.variables.len() == before {
            return Err(format!("no variable {name} is declared"));
        }
        Ok(format!("Deleted {name} from the draft."))
    })
    .await;
    edited(
        &app,
        &f.admin,
        &format!("/admin/agents/{id}/variables"),
        result,
    )
}
