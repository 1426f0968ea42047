//! Pre-call Filter and End Call actions: added with the ➕ above the First Flow, edited on
//! their own page. A Filter routes the call to another flow before the greeting; an End
//! Call refuses it (when its conditions hold, or always).

use std::collections::HashMap;

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Page, PageResult, after, agent, first_flow_link, not_found, render};
use crate::auth::session::{Admin, AdminForm};
use crate::catalog;
use crate::domain::flow;
use crate::domain::runtime::{self, Rule};
use crate::http::AppState;
use crate::store::agents::Agent;
use crate::store::{StoreError, actions, flows};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/agents/{agent}/rules", post(create))
        .route("/admin/agents/{agent}/rules/{action}", get(edit).post(save))
}

/// The most cases a pre-call Filter may have.
const MAX_CASES: usize = 50;

fn label(kind: &str) -> &'static str {
    match kind {
        "filter" => "Filter",
        _ => "End Call",
    }
}

fn default_config(kind: &str) -> Value {
    match kind {
        "filter" => {
            json!({ "cases": [{ "name": "", "join": "and", "conditions": [], "flow": null }] })
        }
        _ => json!({ "join": "and", "conditions": [], "message": "", "outcome": "refused" }),
    }
}

#[derive(Deserialize)]
struct NewRule {
    kind: String,
}

async fn create(
    State(app): State<AppState>,
    Path(id): Path<String>,
    f: AdminForm<NewRule>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let back = first_flow_link(&a);
    let kind = f.form.kind.as_str();
    if !matches!(kind, "filter" | "end_call") {
        return after(
            &app,
            &f.admin,
            &back,
            Err(StoreError::Conflict(
                "choose a kind of pre-call action".into(),
            )),
        );
    }
    match actions::create_rule(&app.db, a.id, kind, label(kind), &default_config(kind)).await {
        Ok(rule) => {
            app.catalog.invalidate();
            after(
                &app,
                &f.admin,
                &format!("/admin/agents/{id}/rules/{rule}"),
                Ok(format!("{} added: set its conditions.", label(kind))),
            )
        }
        Err(e) => after(&app, &f.admin, &back, Err(e)),
    }
}

struct CaseView {
    index: usize,
    name: String,
    join: String,
    conditions: String,
    flow: String,
}

#[derive(Template)]
#[template(path = "admin/rule.html")]
struct RulePage {
    page: Page,
    agent_id: String,
    agent_name: String,
    first_flow: Option<i64>,
    action_id: i64,
    kind: String,
    label: &'static str,
    name: String,
    cases: Vec<CaseView>,
    join: String,
    conditions: String,
    message: String,
    outcome: String,
    /// (id, name) of the agent's flows, for a Filter's targets.
    flows: Vec<(i64, String)>,
}

fn conditions_text(config: &Value) -> String {
    flow::format_conditions(
        config["conditions"]
            .as_array()
            .map_or(&[][..], Vec::as_slice),
    )
}

async fn edit(
    State(app): State<AppState>,
    admin: Admin,
    Path((id, action_id)): Path<(String, i64)>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let rule = actions::rule(&app.db, a.id, action_id)
        .await?
        .ok_or_else(|| not_found("This pre-call action"))?;
    let flash = app.flash.take(admin.session_id);
    let config: Value = serde_json::from_str(&rule.config).unwrap_or_default();
    let cases = config["cases"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(index, c)| CaseView {
            index,
            name: c["name"].as_str().unwrap_or_default().to_owned(),
            join: c["join"].as_str().unwrap_or("and").to_owned(),
            conditions: conditions_text(c),
            flow: c["flow"]
                .as_i64()
                .map(|f| f.to_string())
                .unwrap_or_default(),
        })
        .collect();
    let flows = flows::list(&app.db, a.id)
        .await?
        .into_iter()
        .filter(|f| !f.is_first)
        .map(|f| (f.id, f.name))
        .collect();
    let text = |k: &str| config[k].as_str().unwrap_or_default().to_owned();
    Ok(render(RulePage {
        page: Page::new(&admin, format!("{} · {}", rule.name, a.name), &flash),
        agent_id: a.public_id,
        agent_name: a.name,
        first_flow: a.first_flow_id,
        action_id,
        label: label(&rule.kind),
        kind: rule.kind,
        name: rule.name,
        cases,
        join: config["join"].as_str().unwrap_or("and").to_owned(),
        conditions: conditions_text(&config),
        message: text("message"),
        outcome: text("outcome"),
        flows,
    }))
}

/// The form of either kind; the rule's own fields are used.
#[derive(Deserialize, Default)]
#[serde(default)]
struct RuleForm {
    name: String,
    join: String,
    conditions: String,
    message: String,
    outcome: String,
    cases: usize,
    add_case: Option<String>,
    remove_case: Option<usize>,
    #[serde(flatten)]
    rest: HashMap<String, String>,
}

fn config_from(kind: &str, f: &RuleForm) -> Result<Value, String> {
    let join = |j: &str| if j == "or" { "or" } else { "and" };
    if kind != "filter" {
        return Ok(json!({
            "join": join(&f.join),
            "conditions": flow::parse_conditions(&f.conditions)?,
            "message": f.message.trim(),
            "outcome": f.outcome.trim(),
        }));
    }
    if f.cases > MAX_CASES {
        return Err(format!("a Filter has at most {MAX_CASES} cases"));
    }
    let mut cases = Vec::new();
    for i in (0..f.cases).filter(|i| f.remove_case != Some(*i)) {
        let get = |k: &str| {
            f.rest
                .get(&format!("case{i}_{k}"))
                .cloned()
                .unwrap_or_default()
        };
        let conditions = flow::parse_conditions(&get("conditions"))
            .map_err(|e| format!("case {}: {e}", i + 1))?;
        cases.push(json!({
            "name": get("name").trim(),
            "join": join(&get("join")),
            "conditions": conditions,
            "flow": get("flow").trim().parse::<i64>().ok(),
        }));
    }
    if f.add_case.is_some() && cases.len() < MAX_CASES {
        cases.push(json!({ "name": "", "join": "and", "conditions": [], "flow": null }));
    }
    Ok(json!({ "cases": cases }))
}

/// What is wrong with the rule: unknown variables, mistyped comparisons, missing flows.
async fn problems(app: &AppState, a: &Agent, rule: &Rule) -> Result<Vec<String>, sqlx::Error> {
    let (_, known) = catalog::load_checked(&app.db, a.id, a.first_flow_id, |_| {}).await?;
    Ok(runtime::check_rule(rule, &known))
}

async fn save(
    State(app): State<AppState>,
    Path((id, action_id)): Path<(String, i64)>,
    f: AdminForm<RuleForm>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let rule = actions::rule(&app.db, a.id, action_id)
        .await?
        .ok_or_else(|| not_found("This pre-call action"))?;
    let back = format!("/admin/agents/{id}/rules/{action_id}");
    let config = match config_from(&rule.kind, &f.form) {
        Ok(c) => c,
        Err(e) => return after(&app, &f.admin, &back, Err(StoreError::Conflict(e))),
    };
    let editing_cases = f.form.add_case.is_some() || f.form.remove_case.is_some();
    if !editing_cases {
        let compiled = Rule::compile(action_id, f.form.name.clone(), &rule.kind, &config);
        let found = problems(&app, &a, &compiled).await?;
        if !found.is_empty() {
            let reason = format!("Not saved: {}.", found.join("; "));
            return after(&app, &f.admin, &back, Err(StoreError::Conflict(reason)));
        }
    }
    let result = actions::update_rule(&app.db, a.id, action_id, &f.form.name, &config)
        .await
        .map(|_| "Saved.".to_owned());
    app.catalog.invalidate();
    after(&app, &f.admin, &back, result)
}
