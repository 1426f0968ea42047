//! The flow editor: blocks in order with their connections, a settings panel for the
//! selected block, Set as First Flow, and the pre-call actions above the First Flow.

use std::collections::HashMap;

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Page, PageResult, after, agent, not_found, render};
use crate::auth::session::{Admin, AdminForm};
use crate::catalog;
use crate::domain::flow::{self, KINDS};
use crate::domain::runtime::{self, Block};
use crate::http::AppState;
use crate::store::agents::Agent;
use crate::store::flows::{self as store, BlockRow, FlowRow};
use crate::store::{StoreError, actions};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/agents/{agent}/flows", post(create))
        .route("/admin/agents/{agent}/flows/{flow}", get(editor))
        .route("/admin/agents/{agent}/flows/{flow}/first", post(set_first))
        .route("/admin/agents/{agent}/flows/{flow}/rename", post(rename))
        .route("/admin/agents/{agent}/flows/{flow}/delete", post(delete))
        .route("/admin/agents/{agent}/flows/{flow}/blocks", post(add_block))
        .route(
            "/admin/agents/{agent}/flows/{flow}/blocks/{block}",
            post(save_block),
        )
        .route(
            "/admin/agents/{agent}/flows/{flow}/blocks/{block}/delete",
            post(delete_block),
        )
}

async fn flow_of(app: &AppState, a: &Agent, flow_id: i64) -> Result<FlowRow, super::HtmlError> {
    store::find(&app.db, a.id, flow_id)
        .await?
        .ok_or_else(|| not_found("This flow"))
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

async fn create(
    State(app): State<AppState>,
    Path(id): Path<String>,
    f: AdminForm<Named>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    match store::create(&app.db, a.id, &f.form.name).await {
        Ok(flow) => {
            app.catalog.invalidate();
            after(
                &app,
                &f.admin,
                &format!("/admin/agents/{id}/flows/{flow}"),
                Ok("Flow created.".into()),
            )
        }
        Err(e) => after(&app, &f.admin, &format!("/admin/agents/{id}"), Err(e)),
    }
}

struct BlockView {
    id: i64,
    kind: String,
    label: &'static str,
    summary: String,
    outputs: Vec<(String, String)>,
    selected: bool,
    entry: bool,
}

struct CaseView {
    index: usize,
    name: String,
    join: String,
    conditions: String,
    next: String,
}

/// The settings panel: one block's values, ready for its form.
struct Settings {
    id: i64,
    kind: String,
    label: &'static str,
    about: &'static str,
    entry: bool,
    message: String,
    next: String,
    variable: String,
    prompt: String,
    destination: String,
    department: String,
    outcome: String,
    flow: String,
    cases: Vec<CaseView>,
    else_next: String,
}

struct ActionView {
    id: i64,
    kind: String,
    name: String,
    enabled: bool,
    /// Something is left to fill in: calls skip it until then.
    unfinished: bool,
    first: bool,
    last: bool,
}

#[derive(Template)]
#[template(path = "admin/flow.html")]
struct EditorPage {
    page: Page,
    agent_id: String,
    agent_name: String,
    flow_id: i64,
    flow_name: String,
    is_first: bool,
    actions: Vec<ActionView>,
    blocks: Vec<BlockView>,
    settings: Option<Settings>,
    /// (id, "#n Kind") of this flow's blocks, for connection menus.
    targets: Vec<(i64, String)>,
    /// (id, name) of the agent's other flows, for Transfer Flow.
    other_flows: Vec<(i64, String)>,
    kinds: Vec<(&'static str, &'static str)>,
    /// What a call would stumble on in this flow, by block.
    problems: Vec<String>,
}

#[derive(Deserialize)]
struct EditorQuery {
    block: Option<i64>,
}

fn text(config: &Map<String, Value>, key: &str) -> String {
    config
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn id_text(v: Option<&Value>) -> String {
    v.and_then(Value::as_i64)
        .map(|i| i.to_string())
        .unwrap_or_default()
}

fn settings_of(block: &BlockRow) -> Settings {
    let config = block.config();
    let config = config.as_object().cloned().unwrap_or_default();
    let kind = flow::kind(&block.kind);
    let cases = config
        .get("cases")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(index, c)| CaseView {
            index,
            name: c["name"].as_str().unwrap_or_default().to_owned(),
            join: c["join"].as_str().unwrap_or("and").to_owned(),
            conditions: flow::format_conditions(
                c["conditions"].as_array().map_or(&[][..], Vec::as_slice),
            ),
            next: id_text(c.get("next")),
        })
        .collect();
    Settings {
        id: block.id,
        kind: block.kind.clone(),
        label: kind.map_or("Block", |k| k.label),
        about: kind.map_or("", |k| k.about),
        entry: matches!(block.kind.as_str(), "greeting" | "start"),
        message: text(&config, "message"),
        next: id_text(config.get("next")),
        variable: text(&config, "variable"),
        prompt: text(&config, "prompt"),
        destination: text(&config, "destination"),
        department: text(&config, "department"),
        outcome: text(&config, "outcome"),
        flow: id_text(config.get("flow")),
        cases,
        else_next: id_text(config.get("else")),
    }
}

async fn editor(
    State(app): State<AppState>,
    admin: Admin,
    Path((id, flow_id)): Path<(String, i64)>,
    Query(q): Query<EditorQuery>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let f = flow_of(&app, &a, flow_id).await?;
    let flash = app.flash.take(admin.session_id);
    let rows = store::blocks(&app.db, f.id).await?;
    let number: HashMap<i64, usize> = rows
        .iter()
        .enumerate()
        .map(|(i, b)| (b.id, i + 1))
        .collect();
    let name_of = |to: Option<i64>| match to.and_then(|t| number.get(&t).map(|n| (t, n))) {
        Some((t, n)) => {
            let kind = rows
                .iter()
                .find(|b| b.id == t)
                .map_or("", |b| flow::label(&b.kind));
            format!("#{n} {kind}")
        }
        None => "not connected".into(),
    };
    let selected = q.block.or_else(|| rows.first().map(|b| b.id));
    let blocks = rows
        .iter()
        .map(|b| {
            let config = b.config();
            let config = config.as_object().cloned().unwrap_or_default();
            BlockView {
                id: b.id,
                kind: b.kind.clone(),
                label: flow::label(&b.kind),
                summary: flow::summary(&b.kind, &config),
                outputs: flow::outputs(&b.kind, &config)
                    .into_iter()
                    .map(|o| (o.label, name_of(o.to)))
                    .collect(),
                selected: Some(b.id) == selected,
                entry: matches!(b.kind.as_str(), "greeting" | "start"),
            }
        })
        .collect();
    let settings = rows
        .iter()
        .find(|b| Some(b.id) == selected)
        .map(settings_of);
    let targets = rows
        .iter()
        .enumerate()
        .filter(|(_, b)| !matches!(b.kind.as_str(), "greeting" | "start"))
        .map(|(i, b)| (b.id, format!("#{} {}", i + 1, flow::label(&b.kind))))
        .collect();
    let other_flows = store::list(&app.db, a.id)
        .await?
        .into_iter()
        .filter(|o| o.id != f.id)
        .map(|o| (o.id, o.name))
        .collect();
    let action_rows = if f.is_first {
        actions::list(&app.db, a.id).await?
    } else {
        Vec::new()
    };
    let (mut problems, rule_problems) = flow_problems(&app, &a, f.id, &number).await?;
    let n = action_rows.len();
    let actions = action_rows
        .into_iter()
        .enumerate()
        .map(|(i, x)| {
            let unfinished = rule_problems.iter().find(|(id, _)| *id == x.id);
            if let Some((_, found)) = unfinished {
                for p in found {
                    problems.push(format!(
                        "Pre-call {} {:?}: {p}",
                        rule_label(&x.kind),
                        x.name
                    ));
                }
            }
            ActionView {
                id: x.id,
                unfinished: unfinished.is_some(),
                kind: x.kind,
                name: x.name,
                enabled: x.enabled.unwrap_or(true),
                first: i == 0,
                last: i + 1 == n,
            }
        })
        .collect();
    Ok(render(EditorPage {
        problems,
        page: Page::new(&admin, format!("{} · {}", f.name, a.name), &flash),
        agent_id: a.public_id,
        agent_name: a.name,
        flow_id: f.id,
        flow_name: f.name,
        is_first: f.is_first,
        actions,
        blocks,
        settings,
        targets,
        other_flows,
        kinds: KINDS
            .iter()
            .filter(|k| k.addable)
            .map(|k| (k.kind, k.label))
            .collect(),
    }))
}

#[derive(Deserialize)]
struct Nothing {}

async fn set_first(
    State(app): State<AppState>,
    Path((id, flow_id)): Path<(String, i64)>,
    f: AdminForm<Nothing>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let result = store::set_first(&app.db, a.id, flow_id).await.map(|_| {
        "This is now the First Flow: calls start here, after the pre-call actions.".to_owned()
    });
    app.catalog.invalidate();
    after(
        &app,
        &f.admin,
        &format!("/admin/agents/{id}/flows/{flow_id}"),
        result,
    )
}

async fn rename(
    State(app): State<AppState>,
    Path((id, flow_id)): Path<(String, i64)>,
    f: AdminForm<Named>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    flow_of(&app, &a, flow_id).await?;
    let result = store::rename(&app.db, a.id, flow_id, &f.form.name)
        .await
        .map(|_| "Renamed.".to_owned());
    app.catalog.invalidate();
    after(
        &app,
        &f.admin,
        &format!("/admin/agents/{id}/flows/{flow_id}"),
        result,
    )
}

async fn delete(
    State(app): State<AppState>,
    Path((id, flow_id)): Path<(String, i64)>,
    f: AdminForm<Nothing>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    flow_of(&app, &a, flow_id).await?;
    let users = users_of(&app, &a, flow_id).await?;
    if !users.is_empty() {
        let reason = format!(
            "This flow is still used by {}: change those first.",
            users.join(", ")
        );
        return after(
            &app,
            &f.admin,
            &format!("/admin/agents/{id}/flows/{flow_id}"),
            Err(StoreError::Conflict(reason)),
        );
    }
    match store::delete(&app.db, a.id, flow_id).await {
        Ok(()) => {
            app.catalog.invalidate();
            after(
                &app,
                &f.admin,
                &format!("/admin/agents/{id}"),
                Ok("Flow deleted.".into()),
            )
        }
        Err(e) => after(
            &app,
            &f.admin,
            &format!("/admin/agents/{id}/flows/{flow_id}"),
            Err(e),
        ),
    }
}

fn rule_label(kind: &str) -> &'static str {
    match kind {
        "filter" => "Filter",
        "end_call" => "End Call",
        _ => "Webhook",
    }
}

/// What is wrong with the flow as stored: each block's settings (blocks not filled in yet,
/// variables since deleted), its connections and Transfer Flow cycles through it; for the
/// First Flow, also what each unfinished pre-call Filter and End Call lacks, by action.
async fn flow_problems(
    app: &AppState,
    a: &Agent,
    flow_id: i64,
    number: &HashMap<i64, usize>,
) -> Result<(Vec<String>, Vec<(i64, Vec<String>)>), sqlx::Error> {
    let (program, known) = catalog::load_checked(&app.db, a.id, a.first_flow_id, |_| {}).await?;
    let rules = if a.first_flow_id == Some(flow_id) {
        program
            .rules
            .iter()
            .map(|r| (r.action_id(), runtime::check_rule(r, &known)))
            .filter(|(_, p)| !p.is_empty())
            .collect()
    } else {
        Vec::new()
    };
    let Some(flow) = program.flows.get(&flow_id) else {
        return Ok((Vec::new(), rules));
    };
    let mut ids: Vec<i64> = flow.blocks.keys().copied().collect();
    ids.sort_by_key(|id| number.get(id).copied().unwrap_or(usize::MAX));
    let mut problems = Vec::new();
    for id in ids {
        let block = &flow.blocks[&id];
        for p in runtime::check_block(block, &known) {
            let n = number.get(&id).copied().unwrap_or_default();
            problems.push(format!("#{n} {}: {p}", flow::label(block.kind())));
        }
    }
    problems.extend(runtime::check_connections(flow, number));
    let name = format!("{:?}", flow.name);
    problems.extend(
        runtime::check_transfer_cycles(&program)
            .into_iter()
            .filter(|p| p.contains(&name)),
    );
    Ok((problems, rules))
}

/// The Transfer Flow blocks and pre-call Filters that lead to `flow_id`, named.
async fn users_of(app: &AppState, a: &Agent, flow_id: i64) -> Result<Vec<String>, sqlx::Error> {
    let program = catalog::load_program(&app.db, a.id, a.first_flow_id).await?;
    let mut users: Vec<String> = program
        .flows
        .values()
        .filter(|f| f.id != flow_id)
        .filter(|f| {
            f.blocks
                .values()
                .any(|b| matches!(b, Block::TransferFlow { flow: Some(t) } if *t == flow_id))
        })
        .map(|f| format!("a Transfer Flow in {:?}", f.name))
        .collect();
    users.extend(program.rules.iter().filter_map(|r| match r {
        runtime::Rule::Filter { name, cases, .. }
            if cases.iter().any(|c| c.next == Some(flow_id)) =>
        {
            Some(format!("the pre-call Filter {name:?}"))
        }
        _ => None,
    }));
    users.sort();
    Ok(users)
}

#[derive(Deserialize)]
struct NewBlock {
    kind: String,
}

async fn add_block(
    State(app): State<AppState>,
    Path((id, flow_id)): Path<(String, i64)>,
    f: AdminForm<NewBlock>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let fl = flow_of(&app, &a, flow_id).await?;
    let base = format!("/admin/agents/{id}/flows/{flow_id}");
    if !flow::kind(&f.form.kind).is_some_and(|k| k.addable) {
        return after(
            &app,
            &f.admin,
            &base,
            Err(StoreError::Conflict("choose a kind of block".into())),
        );
    }
    let block = store::add_block(
        &app.db,
        fl.id,
        &f.form.kind,
        &flow::default_config(&f.form.kind),
    )
    .await?;
    app.catalog.invalidate();
    after(
        &app,
        &f.admin,
        &format!("{base}?block={block}#settings"),
        Ok(format!(
            "{} added: fill in its settings.",
            flow::label(&f.form.kind)
        )),
    )
}

/// A block's settings form: every kind's fields, of which the block's own are used.
#[derive(Deserialize, Default)]
#[serde(default)]
struct BlockForm {
    message: String,
    next: String,
    variable: String,
    prompt: String,
    destination: String,
    department: String,
    outcome: String,
    flow: String,
    #[serde(rename = "else")]
    else_next: String,
    /// Filter: how many case rows the form has, and whether to add one.
    cases: usize,
    add_case: Option<String>,
    remove_case: Option<usize>,
    #[serde(flatten)]
    rest: HashMap<String, String>,
}

/// The most cases a Filter block may have.
const MAX_CASES: usize = 50;

fn opt_id(s: &str) -> Value {
    s.trim().parse::<i64>().map_or(Value::Null, Value::from)
}

/// The block's new settings from its form.
fn config_from(kind: &str, f: &BlockForm) -> Result<Value, String> {
    let message = f.message.trim();
    Ok(match kind {
        "greeting" | "start" | "talk" => json!({ "message": message, "next": opt_id(&f.next) }),
        "collect" => {
            let variable = f.variable.trim();
            if !variable.is_empty() {
                crate::domain::variables::VariableName::parse(variable)?;
            }
            json!({ "variable": variable, "prompt": f.prompt.trim(), "next": opt_id(&f.next) })
        }
        "transfer_call" => json!({
            "destination": f.destination.trim(),
            "department": f.department.trim(),
            "message": message,
        }),
        "transfer_flow" => json!({ "flow": opt_id(&f.flow) }),
        "end_call" => json!({ "message": message, "outcome": f.outcome.trim() }),
        "filter" => {
            if f.cases > MAX_CASES {
                return Err(format!("a Filter has at most {MAX_CASES} cases"));
            }
            let mut cases = Vec::new();
            for i in 0..f.cases {
                if f.remove_case == Some(i) {
                    continue;
                }
                let get = |k: &str| {
                    f.rest
                        .get(&format!("case{i}_{k}"))
                        .cloned()
                        .unwrap_or_default()
                };
                let conditions = flow::parse_conditions(&get("conditions"))
                    .map_err(|e| format!("case {}: {e}", i + 1))?;
                let join = if get("join") == "or" { "or" } else { "and" };
                cases.push(json!({
                    "name": get("name").trim(),
                    "join": join,
                    "conditions": conditions,
                    "next": opt_id(&get("next")),
                }));
            }
            if f.add_case.is_some() && cases.len() < MAX_CASES {
                cases.push(json!({ "name": "", "join": "and", "conditions": [], "next": null }));
            }
            json!({ "cases": cases, "else": opt_id(&f.else_next) })
        }
        other => return Err(format!("unknown kind of block {other:?}")),
    })
}

async fn save_block(
    State(app): State<AppState>,
    Path((id, flow_id, block_id)): Path<(String, i64, i64)>,
    f: AdminForm<BlockForm>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let fl = flow_of(&app, &a, flow_id).await?;
    let back = format!("/admin/agents/{id}/flows/{flow_id}?block={block_id}#settings");
    let rows = store::blocks(&app.db, fl.id).await?;
    let Some(block) = rows.iter().find(|b| b.id == block_id) else {
        return Err(not_found("This block"));
    };
    let config = match config_from(&block.kind, &f.form) {
        Ok(config) => config,
        Err(e) => return after(&app, &f.admin, &back, Err(StoreError::Conflict(e))),
    };
    // Adding or removing a Filter case is a step in editing, not a save to check.
    let editing_cases = f.form.add_case.is_some() || f.form.remove_case.is_some();
    if !editing_cases {
        let problems = check_change(&app, &a, &rows, fl.id, block, &config).await?;
        if !problems.is_empty() {
            let reason = format!("Not saved: {}.", problems.join("; "));
            return after(&app, &f.admin, &back, Err(StoreError::Conflict(reason)));
        }
    }
    let result = store::update_block(&app.db, fl.id, block_id, &config)
        .await
        .map(|_| "Saved.".to_owned());
    app.catalog.invalidate();
    after(&app, &f.admin, &back, result)
}

/// What would be wrong with the flow if `block` had `config`: the block's own settings
/// (known variables, typed comparisons, transfer targets) and the flow's connections (each
/// to a block of this flow, no cycle).
async fn check_change(
    app: &AppState,
    a: &Agent,
    rows: &[BlockRow],
    flow_id: i64,
    block: &BlockRow,
    config: &Value,
) -> Result<Vec<String>, sqlx::Error> {
    let compiled = match Block::compile(&block.kind, config) {
        Ok(b) => b,
        Err(e) => return Ok(vec![e]),
    };
    let (program, known) = catalog::load_checked(&app.db, a.id, a.first_flow_id, |program| {
        if let Some(flow) = program.flows.get_mut(&flow_id) {
            flow.blocks.insert(block.id, compiled.clone());
        }
    })
    .await?;
    let mut problems = runtime::check_block(&compiled, &known);
    if let Some(flow) = program.flows.get(&flow_id) {
        let number = rows
            .iter()
            .enumerate()
            .map(|(i, b)| (b.id, i + 1))
            .collect();
        problems.extend(runtime::check_connections(flow, &number));
    }
    problems.extend(runtime::check_transfer_cycles(&program));
    Ok(problems)
}

async fn delete_block(
    State(app): State<AppState>,
    Path((id, flow_id, block_id)): Path<(String, i64, i64)>,
    f: AdminForm<Nothing>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let fl = flow_of(&app, &a, flow_id).await?;
    let result = store::delete_block(&app.db, fl.id, block_id)
        .await
        .map(|_| "Block deleted.".to_owned());
    app.catalog.invalidate();
    after(
        &app,
        &f.admin,
        &format!("/admin/agents/{id}/flows/{flow_id}"),
        result,
    )
}
