//! Agents: the list, one agent's overview (flows, pre-call actions, runtime tokens).

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use serde::Deserialize;

use super::confirm::Confirmation;
use super::{
    DraftBar, Page, PageResult, after, agent, agent_draft, by, isolate, not_found, render,
};
use crate::auth::session::{Admin, AdminForm};
use crate::domain::document::Action;
use crate::domain::phone::Region;
use crate::http::AppState;
use crate::store::{StoreError, agents, rfc3339, tokens};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/agents", get(list).post(create))
        .route("/admin/agents/{agent}", get(show))
        .route("/admin/agents/{agent}/rename", post(rename))
        .route("/admin/agents/{agent}/delete", post(delete))
        .route("/admin/agents/{agent}/tokens", post(create_token))
        .route(
            "/admin/agents/{agent}/tokens/{token}/revoke",
            get(confirm_revoke_token).post(revoke_token),
        )
}

/// Regions offered in forms (any ISO code is accepted).
pub const REGIONS: [(&str, &str); 12] = [
    ("US", "United States"),
    ("CA", "Canada"),
    ("GB", "United Kingdom"),
    ("IE", "Ireland"),
    ("AU", "Australia"),
    ("NZ", "New Zealand"),
    ("DE", "Germany"),
    ("FR", "France"),
    ("ES", "Spain"),
    ("IT", "Italy"),
    ("NL", "Netherlands"),
    ("IN", "India"),
];

struct AgentItem {
    public_id: String,
    name: String,
    region: String,
}

#[derive(Template)]
#[template(path = "admin/agents.html")]
struct AgentsPage {
    page: Page,
    agents: Vec<AgentItem>,
    regions: Vec<(&'static str, &'static str)>,
}

async fn list(State(app): State<AppState>, admin: Admin) -> PageResult {
    let flash = app.flash.take(admin.session_id);
    let agents = agents::list(&app.db)
        .await?
        .into_iter()
        .map(|a| AgentItem {
            public_id: a.public_id,
            name: a.name,
            region: a.default_region,
        })
        .collect();
    Ok(render(AgentsPage {
        page: Page::new(&admin, "Agents", &flash),
        agents,
        regions: REGIONS.to_vec(),
    }))
}

#[derive(Deserialize)]
struct NewAgent {
    name: String,
    region: String,
}

async fn create(State(app): State<AppState>, f: AdminForm<NewAgent>) -> PageResult {
    let AdminForm { admin, form } = f;
    let region = match Region::parse(&form.region) {
        Ok(r) => r,
        Err(e) => return after(&app, &admin, "/admin/agents", Err(StoreError::Conflict(e))),
    };
    match agents::create(&app.db, &form.name, region, None, &by(&admin)).await {
        Ok((a, _)) => {
            app.catalog.invalidate();
            let to = format!("/admin/agents/{}", a.public_id);
            after(
                &app,
                &admin,
                &to,
                Ok(format!(
                    "Agent {:?} created with a First Flow that greets callers (version 1, \
                     published).",
                    a.name
                )),
            )
        }
        Err(e) => after(&app, &admin, "/admin/agents", Err(e)),
    }
}

struct FlowItem {
    key: String,
    name: String,
    is_first: bool,
    blocks: usize,
}

struct ActionItem {
    key: String,
    kind: String,
    label: &'static str,
    name: String,
    enabled: bool,
}

struct TokenItem {
    id: i64,
    name: String,
    last_chars: String,
    created_at: String,
    revoked: bool,
}

#[derive(Template)]
#[template(path = "admin/agent.html")]
struct AgentPage {
    page: Page,
    bar: DraftBar,
    agent_id: String,
    name: String,
    region: String,
    flows: Vec<FlowItem>,
    first_flow: Option<String>,
    actions: Vec<ActionItem>,
    tokens: Vec<TokenItem>,
    /// A runtime token just made, shown once.
    new_token: Option<String>,
    revision: i64,
}

async fn show(State(app): State<AppState>, admin: Admin, Path(id): Path<String>) -> PageResult {
    let a = agent(&app, &id).await?;
    let d = agent_draft(&app, &a).await?;
    let flash = app.flash.take(admin.session_id);
    let doc = d.doc();
    let flows: Vec<FlowItem> = doc
        .flows
        .iter()
        .map(|f| FlowItem {
            key: f.key.clone(),
            name: f.name.clone(),
            is_first: doc.first_flow.as_deref() == Some(f.key.as_str()),
            blocks: f.blocks.len(),
        })
        .collect();
    let actions = doc
        .precall
        .iter()
        .map(|x| {
            let (kind, label, enabled) = match &x.settings {
                Action::Webhook { enabled, .. } => ("webhook", "Webhook", *enabled),
                Action::Filter { .. } => ("filter", "Filter", true),
                Action::EndCall { .. } => ("end_call", "End Call", true),
            };
            ActionItem {
                key: x.key.clone(),
                kind: kind.into(),
                label,
                name: x.name.clone(),
                enabled,
            }
        })
        .collect();
    let new_token = flash.secret_for("token", a.id);
    let tokens = tokens::list(&app.db, a.id)
        .await?
        .into_iter()
        .map(|t| TokenItem {
            id: t.id,
            name: t.name,
            last_chars: t.last_chars,
            created_at: rfc3339(t.created_at),
            revoked: t.revoked_at.is_some(),
        })
        .collect();
    Ok(render(AgentPage {
        page: Page::new(&admin, a.name.clone(), &flash),
        revision: d.bar.revision,
        first_flow: doc.first_flow.clone(),
        bar: d.bar,
        agent_id: a.public_id,
        name: a.name,
        region: a.default_region,
        flows,
        actions,
        tokens,
        new_token,
    }))
}

#[derive(Deserialize)]
struct Rename {
    name: String,
}

async fn rename(
    State(app): State<AppState>,
    Path(id): Path<String>,
    f: AdminForm<Rename>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let result = agents::rename(&app.db, a.id, &f.form.name)
        .await
        .map(|_| "Renamed.".to_owned());
    app.catalog.invalidate();
    after(&app, &f.admin, &format!("/admin/agents/{id}"), result)
}

#[derive(Deserialize)]
struct Confirm {
    #[serde(default)]
    confirm: String,
}

async fn delete(
    State(app): State<AppState>,
    Path(id): Path<String>,
    f: AdminForm<Confirm>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    if f.form.confirm.trim() != a.name {
        return after(
            &app,
            &f.admin,
            &format!("/admin/agents/{id}"),
            Err(StoreError::Conflict(
                "type the agent's name exactly to confirm deleting it".into(),
            )),
        );
    }
    agents::delete(&app.db, a.id).await?;
    app.catalog.invalidate();
    after(
        &app,
        &f.admin,
        "/admin/agents",
        Ok(format!("Agent {:?} deleted.", a.name)),
    )
}

#[derive(Deserialize)]
struct NewToken {
    #[serde(default)]
    name: String,
}

async fn create_token(
    State(app): State<AppState>,
    Path(id): Path<String>,
    f: AdminForm<NewToken>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let name = if f.form.name.trim().is_empty() {
        "runtime"
    } else {
        f.form.name.trim()
    };
    match tokens::create(&app.db, a.id, name).await {
        Ok(token) => {
            app.flash.secret(f.admin.session_id, "token", a.id, &token);
            Ok(Redirect::to(&format!("/admin/agents/{id}#tokens")).into_response())
        }
        Err(e) => after(
            &app,
            &f.admin,
            &format!("/admin/agents/{id}#tokens"),
            Err(e),
        ),
    }
}

/// The confirmation page of a runtime token's Revoke: the call runtime sending it is
/// refused from then on.
async fn confirm_revoke_token(
    State(app): State<AppState>,
    admin: Admin,
    Path((id, token)): Path<(String, i64)>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let back = format!("/admin/agents/{id}#tokens");
    let Some(t) = tokens::list(&app.db, a.id)
        .await?
        .into_iter()
        .find(|t| t.id == token)
    else {
        return Err(not_found("This token"));
    };
    if t.revoked_at.is_some() {
        let done = "that token was already revoked".to_owned();
        return after(&app, &admin, &back, Err(StoreError::Conflict(done)));
    }
    let flash = app.flash.take(admin.session_id);
    let page = Confirmation::new(
        Page::new(&admin, format!("Revoke a token · {}", isolate(&a.name)), &flash),
        ("Revoke the runtime token ", &t.name, "?"),
        format!("/admin/agents/{id}/tokens/{token}/revoke"),
        &back,
    )
    .crumb("/admin/agents", "Agents")
    .crumb(format!("/admin/agents/{id}"), &a.name)
    .says(format!(
        "The token ending in {} stops at once: the call runtime sending it is refused \
         (401) from then on, for new calls and for answers to calls under way.",
        t.last_chars
    ))
    .says("A revoked token cannot be restored: make a new one for the runtime first if it must go on.")
    .buttons("Keep it", "Revoke");
    Ok(render(page))
}

async fn revoke_token(
    State(app): State<AppState>,
    Path((id, token)): Path<(String, i64)>,
    f: AdminForm<Confirm>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let result = tokens::revoke(&app.db, a.id, token)
        .await
        .map(|_| "Token revoked: it stopped working.".to_owned());
    app.catalog.invalidate();
    after(
        &app,
        &f.admin,
        &format!("/admin/agents/{id}#tokens"),
        result,
    )
}
