//! An agent's variable schema: name, type, default, description, source.

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;

use super::{Page, PageResult, after, agent, render};
use crate::auth::session::{Admin, AdminForm};
use crate::domain::variables::{SYSTEM_VARIABLES, VarType, VariableName};
use crate::http::AppState;
use crate::store::StoreError;
use crate::store::variables::{self, NewVariable};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/agents/{agent}/variables", get(page).post(save))
        .route(
            "/admin/agents/{agent}/variables/{name}/delete",
            post(delete),
        )
}

struct VariableView {
    name: String,
    ty: String,
    default: String,
    description: String,
    source: String,
}

#[derive(Template)]
#[template(path = "admin/variables.html")]
struct VariablesPage {
    page: Page,
    agent_id: String,
    agent_name: String,
    variables: Vec<VariableView>,
    system: Vec<&'static str>,
    /// The variable being edited, if any.
    editing: Option<VariableView>,
    types: Vec<&'static str>,
}

#[derive(Deserialize)]
struct EditQuery {
    edit: Option<String>,
}

/// A default as typed in the form: JSON where it parses (`0`, `true`, `["a"]`), else text.
fn default_text(v: Option<&str>) -> String {
    match v.and_then(|s| serde_json::from_str::<Value>(s).ok()) {
        Some(Value::String(s)) => s,
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

async fn page(
    State(app): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    Query(q): Query<EditQuery>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let flash = app.flash.take(admin.session_id);
    let variables: Vec<VariableView> = variables::list(&app.db, a.id)
        .await?
        .into_iter()
        .map(|v| VariableView {
            default: default_text(v.default_value.as_deref()),
            name: v.name,
            ty: v.ty,
            description: v.description,
            source: v.source.unwrap_or_else(|| "set by hand".into()),
        })
        .collect();
    let editing = q.edit.and_then(|name| {
        variables
            .iter()
            .find(|v| v.name == name)
            .map(|v| VariableView {
                name: v.name.clone(),
                ty: v.ty.clone(),
                default: v.default.clone(),
                description: v.description.clone(),
                source: v.source.clone(),
            })
    });
    Ok(render(VariablesPage {
        page: Page::new(&admin, format!("Variables · {}", a.name), &flash),
        agent_id: a.public_id,
        agent_name: a.name,
        variables,
        system: SYSTEM_VARIABLES.to_vec(),
        editing,
        types: vec!["string", "number", "boolean", "list"],
    }))
}

#[derive(Deserialize)]
struct VariableForm {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    default: String,
    #[serde(default)]
    description: String,
}

async fn save(
    State(app): State<AppState>,
    Path(id): Path<String>,
    f: AdminForm<VariableForm>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let back = format!("/admin/agents/{id}/variables");
    let form = f.form;
    let result = async {
        let name = VariableName::parse(form.name.trim()).map_err(StoreError::Conflict)?;
        let ty = VarType::parse(&form.ty).map_err(StoreError::Conflict)?;
        let text = form.default.trim();
        let default = if text.is_empty() {
            None
        } else {
            Some(serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())))
        };
        if form.description.chars().count() > 500 {
            return Err(StoreError::Conflict(
                "the description is longer than 500 characters".into(),
            ));
        }
        variables::upsert(
            &app.db,
            a.id,
            &NewVariable {
                name: name.clone(),
                ty,
                default,
                description: form.description.trim().to_owned(),
                source_action_id: None,
            },
        )
        .await?;
        Ok(format!("Saved {name}."))
    }
    .await;
    app.catalog.invalidate();
    after(&app, &f.admin, &back, result)
}

#[derive(Deserialize)]
struct Nothing {}

async fn delete(
    State(app): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    f: AdminForm<Nothing>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let result = variables::delete(&app.db, a.id, &name)
        .await
        .map(|_| format!("Deleted {name}."));
    app.catalog.invalidate();
    after(
        &app,
        &f.admin,
        &format!("/admin/agents/{id}/variables"),
        result,
    )
}
