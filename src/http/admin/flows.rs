//! The flow editor, on the agent's draft: blocks in order with their connections, a settings
//! panel for the selected block, Set as First Flow, the agent's flows, and the pre-call
//! actions above the First Flow. Every change is saved to the draft; calls run what is
//! published. What would stop a publish is listed under "To finish" and marked on its block.

use std::collections::HashMap;

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;

use super::{
    AgentDraft, DraftBar, Page, PageResult, agent, agent_draft, by, edited, isolate, not_found,
    render,
};
use crate::auth::session::{Admin, AdminForm};
use crate::domain::document::{
    self, Action, AgentDocument, Block, BlockDoc, Case, FlowDoc, MAX_CASES,
};
use crate::domain::flow::{self, KINDS};
use crate::domain::runtime::At;
use crate::domain::variables::VariableName;
use crate::drafts::{self, EditError};
use crate::http::AppState;
use crate::store::agents::Agent;
use crate::store::console_tokens;

pub fn router() -> Router<AppState> {
    let flow = "/admin/agents/{agent}/flows/{flow}";
    Router::new()
        .route("/admin/agents/{agent}/flows", post(create))
        .route(flow, get(editor))
        .route(&format!("{flow}/first"), post(set_first))
        .route(&format!("{flow}/rename"), post(rename))
        .route(&format!("{flow}/delete"), post(delete))
        .route(&format!("{flow}/blocks"), post(add_block))
        .route(&format!("{flow}/blocks/{{block}}"), post(save_block))
        .route(
            &format!("{flow}/blocks/{{block}}/delete"),
            post(delete_block),
        )
        .route(
            &format!("{flow}/blocks/{{block}}/duplicate"),
            post(duplicate_block),
        )
        .route(&format!("{flow}/blocks/{{block}}/move"), post(move_block))
}

/// The revision of the draft a form was made from: a save on a newer draft is refused.
#[derive(Deserialize, Default)]
struct Revision {
    #[serde(default)]
    revision: Option<i64>,
}

/// A 404 page unless the draft has the flow `key`.
async fn flow_exists(app: &AppState, a: &Agent, key: &str) -> Result<(), super::HtmlError> {
    let d = agent_draft(app, a).await?;
    if d.doc().flow(key).is_none() {
        return Err(not_found("This flow"));
    }
    Ok(())
}

fn flow_path(agent: &str, flow: &str) -> String {
    format!("/admin/agents/{agent}/flows/{flow}")
}

#[derive(Deserialize)]
struct Named {
    name: String,
    #[serde(default)]
    revision: Option<i64>,
}

async fn create(
    State(app): State<AppState>,
    Path(id): Path<String>,
    f: AdminForm<Named>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let name = f.form.name.trim().to_owned();
    let result = drafts::edit(&app.db, a.id, f.form.revision, &by(&f.admin), |doc| {
        check_flow_name(doc, &name, None)?;
        let key = AgentDocument::new_key("flow-", doc.flows.iter().map(|x| x.key.as_str()));
        let start = BlockDoc {
            key: "start".into(),
            position: None,
            settings: Block::Start {
                message: String::new(),
                next: None,
            },
        };
        doc.flows.push(FlowDoc {
            key: key.clone(),
            name: name.clone(),
            blocks: vec![start],
        });
        Ok(key)
    })
    .await;
    match result {
        Ok((key, saved)) => edited(
            &app,
            &f.admin,
            &flow_path(&id, &key),
            Ok((format!("Flow {name:?} created in the draft."), saved)),
        ),
        Err(e) => edited(&app, &f.admin, &format!("/admin/agents/{id}"), Err(e)),
    }
}

fn check_flow_name(doc: &AgentDocument, name: &str, except: Option<&str>) -> Result<(), String> {
    if name.is_empty() || name.chars().count() > document::MAX_NAME {
        return Err("a flow's name is 1 to 100 characters".into());
    }
    if doc
        .flows
        .iter()
        .any(|f| Some(f.key.as_str()) != except && f.name.eq_ignore_ascii_case(name))
    {
        return Err(format!("another flow is already named {name:?}"));
    }
    Ok(())
}

struct BlockView {
    key: String,
    number: usize,
    kind: String,
    label: &'static str,
    summary: String,
    outputs: Vec<(String, String)>,
    selected: bool,
    entry: bool,
    problems: Vec<String>,
}

struct CaseView {
    index: usize,
    name: String,
    join: String,
    conditions: String,
    next: String,
}

/// The settings panel: one block's values, ready for its form (or as an admin typed them,
/// when a save was refused).
struct Settings {
    key: String,
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
    /// Why the save was refused, shown next to the form.
    error: Option<String>,
    /// What the block's predecessors connect to when it is deleted: its own Next, if any.
    reconnect: String,
}

struct ActionView {
    key: String,
    kind: String,
    label: &'static str,
    name: String,
    enabled: bool,
    unfinished: bool,
    first: bool,
    last: bool,
}

struct FlowLink {
    key: String,
    name: String,
    is_first: bool,
    current: bool,
}

#[derive(Template)]
#[template(path = "admin/flow.html")]
struct EditorPage {
    page: Page,
    bar: DraftBar,
    agent_id: String,
    agent_name: String,
    first_flow: Option<String>,
    flow_key: String,
    flow_name: String,
    is_first: bool,
    flows: Vec<FlowLink>,
    actions: Vec<ActionView>,
    blocks: Vec<BlockView>,
    settings: Option<Settings>,
    /// (key, "#n Kind") of the blocks a connection of the selected block may lead to.
    targets: Vec<(String, String)>,
    /// (key, name) of the agent's other flows, for Transfer Flow.
    other_flows: Vec<(String, String)>,
    kinds: Vec<(&'static str, &'static str)>,
    /// What would stop this flow (and, on the First Flow, the pre-call actions) from being
    /// published.
    problems: Vec<String>,
    revision: i64,
    /// The flow drawn as a graph, and the map of the agent's flows (server-side SVG).
    graph: String,
    map: String,
    /// Blocks no path from the entry reaches, as "#n Kind".
    unreachable: Vec<(String, String)>,
    /// The console token the canvas's script presents to the management API (empty when
    /// the page is shown after a refused form: the script then leaves the forms alone).
    console_token: String,
}

#[derive(Deserialize)]
struct EditorQuery {
    block: Option<String>,
    /// `list`: the blocks in order with their forms, without the canvas.
    view: Option<String>,
}

fn label_of(f: &FlowDoc, key: &str) -> String {
    match f.blocks.iter().position(|b| b.key == key) {
        Some(i) => format!("#{} {}", i + 1, flow::label(f.blocks[i].settings.kind())),
        None => "a block that is gone".into(),
    }
}

fn text_of(key: &Option<String>) -> String {
    key.clone().unwrap_or_default()
}

fn settings_of(f: &FlowDoc, b: &BlockDoc) -> Settings {
    let kind = flow::kind(b.settings.kind());
    let mut s = Settings {
        key: b.key.clone(),
        kind: b.settings.kind().to_owned(),
        label: kind.map_or("Block", |k| k.label),
        about: kind.map_or("", |k| k.about),
        entry: b.settings.is_entry(),
        message: String::new(),
        next: String::new(),
        variable: String::new(),
        prompt: String::new(),
        destination: String::new(),
        department: String::new(),
        outcome: String::new(),
        flow: String::new(),
        cases: Vec::new(),
        else_next: String::new(),
        error: None,
        reconnect: String::new(),
    };
    match &b.settings {
        Block::Greeting { message, next }
        | Block::Start { message, next }
        | Block::Talk { message, next } => {
            s.message = message.clone();
            s.next = text_of(next);
        }
        Block::Collect {
            variable,
            prompt,
            next,
        } => {
            s.variable = variable.clone();
            s.prompt = prompt.clone();
            s.next = text_of(next);
        }
        Block::Filter { cases, otherwise } => {
            s.cases = cases
                .iter()
                .enumerate()
                .map(|(index, c)| CaseView {
                    index,
                    name: c.name.clone(),
                    join: if c.any { "or" } else { "and" }.into(),
                    conditions: flow::format_conditions(&c.conditions),
                    next: text_of(&c.to),
                })
                .collect();
            s.else_next = text_of(otherwise);
        }
        Block::TransferCall {
            destination,
            department,
            message,
        } => {
            s.destination = destination.clone();
            s.department = department.clone();
            s.message = message.clone();
        }
        Block::TransferFlow { flow } => s.flow = text_of(flow),
        Block::EndCall { message, outcome } => {
            s.message = message.clone();
            s.outcome = outcome.clone();
        }
    }
    // A block with one way on hands it to what led to it when deleted.
    let outputs = b.settings.outputs();
    if let [(_, Some(to))] = outputs.as_slice()
        && f.blocks.iter().any(|x| &x.key == *to)
    {
        s.reconnect = (*to).clone();
    }
    s
}

/// The settings as the admin typed them, for a refused save.
fn settings_from_form(f: &FlowDoc, b: &BlockDoc, form: &BlockForm, error: String) -> Settings {
    let mut s = settings_of(f, b);
    s.message = form.message.clone();
    s.next = form.next.clone();
    s.variable = form.variable.clone();
    s.prompt = form.prompt.clone();
    s.destination = form.destination.clone();
    s.department = form.department.clone();
    s.outcome = form.outcome.clone();
    s.flow = form.flow.clone();
    s.else_next = form.else_next.clone();
    if matches!(b.settings, Block::Filter { .. }) {
        s.cases = (0..form.cases.min(MAX_CASES))
            .map(|i| {
                let get = |k: &str| {
                    form.rest
                        .get(&format!("case{i}_{k}"))
                        .cloned()
                        .unwrap_or_default()
                };
                CaseView {
                    index: i,
                    name: get("name"),
                    join: if get("join") == "or" { "or" } else { "and" }.into(),
                    conditions: get("conditions"),
                    next: get("next"),
                }
            })
            .collect();
    }
    s.error = Some(error);
    s
}

/// Builds the editor page for `flow_key`, with `settings` in the panel (the selected
/// block's, or a refused form's).
fn editor_page(
    admin: &Admin,
    a: &Agent,
    d: AgentDraft,
    flow_key: &str,
    selected: Option<&str>,
    refused: Option<Settings>,
    flash: &crate::auth::session::FlashData,
) -> Result<EditorPage, super::HtmlError> {
    let doc = d.doc();
    let f = doc.flow(flow_key).ok_or_else(|| not_found("This flow"))?;
    let is_first = doc.first_flow.as_deref() == Some(flow_key);
    let (program, found) = document::findings(doc);
    let mut block_problems: HashMap<&str, Vec<String>> = HashMap::new();
    let mut problems = Vec::new();
    let mut unfinished_rules: Vec<&str> = Vec::new();
    let mut marks = super::flow_svg::Marks::default();
    let mut unreachable = Vec::new();
    for x in &found {
        match &x.at {
            At::Block(fk, b) if fk == flow_key && x.detail.starts_with("no path from") => {
                marks.unreachable.push(b.clone());
                unreachable.push((b.clone(), label_of(f, b)));
                block_problems
                    .entry(b.as_str())
                    .or_default()
                    .push(x.detail.clone());
                problems.push(format!("{}: {}", label_of(f, b), x.detail));
            }
            At::Block(fk, b) if fk == flow_key => {
                marks
                    .unfinished
                    .entry(b.clone())
                    .or_default()
                    .push(x.detail.clone());
                block_problems
                    .entry(b.as_str())
                    .or_default()
                    .push(x.detail.clone());
                problems.push(format!("{}: {}", label_of(f, b), x.detail));
            }
            At::Flow(fk) if fk == flow_key => problems.push(x.detail.clone()),
            At::Rule(r) if is_first => {
                marks.unfinished_actions.push(r.clone());
                unfinished_rules.push(r.as_str());
                problems.push(x.describe(&program));
            }
            At::Agent if is_first => problems.push(x.detail.clone()),
            _ => {}
        }
    }
    let selected = selected
        .filter(|k| f.blocks.iter().any(|b| b.key == *k))
        .or_else(|| f.blocks.first().map(|b| b.key.as_str()));
    let flow_name = |k: &str| doc.flow(k).map(|x| x.name.clone());
    let blocks = f
        .blocks
        .iter()
        .enumerate()
        .map(|(i, b)| BlockView {
            key: b.key.clone(),
            number: i + 1,
            kind: b.settings.kind().to_owned(),
            label: flow::label(b.settings.kind()),
            summary: flow::summary(&b.settings, flow_name),
            outputs: b
                .settings
                .outputs()
                .into_iter()
                .map(|(label, to)| {
                    let target = to.map_or("not connected".into(), |t| label_of(f, t));
                    (label, target)
                })
                .collect(),
            selected: Some(b.key.as_str()) == selected,
            entry: b.settings.is_entry(),
            problems: block_problems.remove(b.key.as_str()).unwrap_or_default(),
        })
        .collect();
    let settings = refused.or_else(|| {
        f.blocks
            .iter()
            .find(|b| Some(b.key.as_str()) == selected)
            .map(|b| settings_of(f, b))
    });
    let chosen = settings.as_ref().map(|s| s.key.clone());
    let targets = f
        .blocks
        .iter()
        .enumerate()
        .filter(|(_, b)| !b.settings.is_entry() && Some(&b.key) != chosen.as_ref())
        .map(|(i, b)| {
            (
                b.key.clone(),
                format!("#{} {}", i + 1, flow::label(b.settings.kind())),
            )
        })
        .collect();
    let n = doc.precall.len();
    let actions = if is_first {
        doc.precall
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let (kind, label, enabled) = match &x.settings {
                    Action::Webhook { enabled, .. } => ("webhook", "Webhook", *enabled),
                    Action::Filter { .. } => ("filter", "Filter", true),
                    Action::EndCall { .. } => ("end_call", "End Call", true),
                };
                ActionView {
                    key: x.key.clone(),
                    kind: kind.into(),
                    label,
                    name: x.name.clone(),
                    enabled,
                    unfinished: unfinished_rules.contains(&x.key.as_str()),
                    first: i == 0,
                    last: i + 1 == n,
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    let flows = doc
        .flows
        .iter()
        .map(|x| FlowLink {
            key: x.key.clone(),
            name: x.name.clone(),
            is_first: doc.first_flow.as_deref() == Some(x.key.as_str()),
            current: x.key == flow_key,
        })
        .collect();
    let other_flows = doc
        .flows
        .iter()
        .filter(|x| x.key != flow_key)
        .map(|x| (x.key.clone(), x.name.clone()))
        .collect();
    Ok(EditorPage {
        page: Page::new(
            admin,
            format!("{} · {}", isolate(&f.name), isolate(&a.name)),
            flash,
        ),
        revision: d.bar.revision,
        bar: d.bar.clone(),
        agent_id: a.public_id.clone(),
        agent_name: a.name.clone(),
        first_flow: doc.first_flow.clone(),
        flow_key: f.key.clone(),
        flow_name: f.name.clone(),
        is_first,
        flows,
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
        problems,
        graph: super::flow_svg::flow_svg(doc, f, selected, &marks),
        map: super::flow_svg::map_svg(doc, flow_key),
        unreachable,
        console_token: String::new(),
    })
}

async fn editor(
    State(app): State<AppState>,
    admin: Admin,
    Path((id, flow_key)): Path<(String, String)>,
    Query(q): Query<EditorQuery>,
    jar: axum_extra::extract::cookie::CookieJar,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let d = agent_draft(&app, &a).await?;
    let flash = app.flash.take(admin.session_id);
    let mut page = editor_page(&admin, &a, d, &flow_key, q.block.as_deref(), None, &flash)?;
    // The canvas's credential for the management API, bound to this session (none in the
    // list view, where the canvas does not start).
    if let Some(secret) = jar
        .get(crate::auth::session::COOKIE)
        .filter(|_| q.view.as_deref() != Some("list"))
    {
        page.console_token =
            console_tokens::issue(&app.db, admin.session_id, secret.value()).await?;
    }
    Ok(render(page))
}

async fn set_first(
    State(app): State<AppState>,
    Path((id, flow_key)): Path<(String, String)>,
    f: AdminForm<Revision>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    flow_exists(&app, &a, &flow_key).await?;
    let result = drafts::edit(&app.db, a.id, f.form.revision, &by(&f.admin), |doc| {
        if doc.flow(&flow_key).is_none() {
            return Err("this flow does not exist".into());
        }
        // The First Flow begins with a Greeting, the others with a Start.
        for x in &mut doc.flows {
            let first = x.key == flow_key;
            for b in &mut x.blocks {
                b.settings =
                    match std::mem::replace(&mut b.settings, Block::TransferFlow { flow: None }) {
                        Block::Greeting { message, next } | Block::Start { message, next } => {
                            if first {
                                Block::Greeting { message, next }
                            } else {
                                Block::Start { message, next }
                            }
                        }
                        other => other,
                    };
            }
        }
        doc.first_flow = Some(flow_key.clone());
        Ok(
            "This is the First Flow of the draft: once published, calls start here, after the \
            pre-call actions."
                .to_owned(),
        )
    })
    .await;
    edited(&app, &f.admin, &flow_path(&id, &flow_key), result)
}

async fn rename(
    State(app): State<AppState>,
    Path((id, flow_key)): Path<(String, String)>,
    f: AdminForm<Named>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    flow_exists(&app, &a, &flow_key).await?;
    let name = f.form.name.trim().to_owned();
    let result = drafts::edit(&app.db, a.id, f.form.revision, &by(&f.admin), |doc| {
        check_flow_name(doc, &name, Some(&flow_key))?;
        let x = doc.flow_mut(&flow_key).ok_or("this flow does not exist")?;
        x.name = name.clone();
        Ok("Renamed.".to_owned())
    })
    .await;
    edited(&app, &f.admin, &flow_path(&id, &flow_key), result)
}

/// What leads to a flow: Transfer Flow blocks and pre-call Filters, named.
fn users_of(doc: &AgentDocument, flow_key: &str) -> Vec<String> {
    let mut users = Vec::new();
    for x in doc.flows.iter().filter(|x| x.key != flow_key) {
        for b in &x.blocks {
            if matches!(&b.settings, Block::TransferFlow { flow: Some(t) } if t == flow_key) {
                users.push(format!("{} in {:?}", label_of(x, &b.key), x.name));
            }
        }
    }
    for a in &doc.precall {
        if let Action::Filter { cases } = &a.settings
            && cases.iter().any(|c| c.to.as_deref() == Some(flow_key))
        {
            users.push(format!("the pre-call Filter {:?}", a.name));
        }
    }
    users
}

async fn delete(
    State(app): State<AppState>,
    Path((id, flow_key)): Path<(String, String)>,
    f: AdminForm<Revision>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    flow_exists(&app, &a, &flow_key).await?;
    let result = drafts::edit(&app.db, a.id, f.form.revision, &by(&f.admin), |doc| {
        if doc.first_flow.as_deref() == Some(flow_key.as_str()) {
            return Err(
                "the First Flow cannot be deleted: set another flow as First Flow first".into(),
            );
        }
        let users = users_of(doc, &flow_key);
        if !users.is_empty() {
            return Err(format!(
                "this flow is still used by {}: change those first",
                users.join(", ")
            ));
        }
        let before = doc.flows.len();
        doc.flows.retain(|x| x.key != flow_key);
        if doc.flows.len() == before {
            return Err("this flow does not exist".into());
        }
        for v in &mut doc.variables {
            if matches!(&v.source, Some(document::Source::Block { flow, .. }) if *flow == flow_key)
            {
                v.source = None;
            }
        }
        Ok("Flow deleted from the draft.".to_owned())
    })
    .await;
    match result {
        Ok(ok) => edited(&app, &f.admin, &format!("/admin/agents/{id}"), Ok(ok)),
        Err(e) => edited(&app, &f.admin, &flow_path(&id, &flow_key), Err(e)),
    }
}

#[derive(Deserialize)]
struct NewBlock {
    kind: String,
    /// Insert it on this block's way on (between it and what it led to), else at the end.
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    revision: Option<i64>,
}

async fn add_block(
    State(app): State<AppState>,
    Path((id, flow_key)): Path<(String, String)>,
    f: AdminForm<NewBlock>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    flow_exists(&app, &a, &flow_key).await?;
    let kind = f.form.kind.clone();
    let after = f.form.after.clone().filter(|k| !k.is_empty());
    let result = drafts::edit(&app.db, a.id, f.form.revision, &by(&f.admin), |doc| {
        let settings = flow::kind(&kind)
            .filter(|k| k.addable)
            .and_then(|_| Block::empty(&kind))
            .ok_or("choose a kind of block")?;
        let x = doc.flow_mut(&flow_key).ok_or("this flow does not exist")?;
        let key = AgentDocument::new_key("", x.blocks.iter().map(|b| b.key.as_str()));
        let mut block = BlockDoc {
            key: key.clone(),
            position: None,
            settings,
        };
        match after {
            Some(after) => {
                let at = x
                    .blocks
                    .iter()
                    .position(|b| b.key == after)
                    .ok_or("the block to insert after does not exist")?;
                // The new block takes the way on; what it led to comes after the new one.
                let old = match &mut x.blocks[at].settings {
                    Block::Greeting { next, .. }
                    | Block::Start { next, .. }
                    | Block::Talk { next, .. }
                    | Block::Collect { next, .. } => next.replace(key.clone()),
                    _ => return Err("insert after a block with one way on (Next)".into()),
                };
                if let Some(slot) = block.settings.targets_mut().into_iter().next() {
                    *slot = old;
                }
                x.blocks.insert(at + 1, block);
            }
            None => x.blocks.push(block),
        }
        Ok(key)
    })
    .await;
    match result {
        Ok((key, saved)) => edited(
            &app,
            &f.admin,
            &format!("{}?block={key}#settings", flow_path(&id, &flow_key)),
            Ok((
                format!("{} added: fill in its settings.", flow::label(&kind)),
                saved,
            )),
        ),
        Err(e) => edited(&app, &f.admin, &flow_path(&id, &flow_key), Err(e)),
    }
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
    /// Filter: how many case rows the form has, and whether to add or remove one.
    cases: usize,
    add_case: Option<String>,
    remove_case: Option<usize>,
    revision: Option<i64>,
    #[serde(flatten)]
    rest: HashMap<String, String>,
}

fn opt_key(s: &str) -> Option<String> {
    Some(s.trim().to_owned()).filter(|k| !k.is_empty())
}

/// The block's new settings from its form, or why the form cannot be saved as typed.
fn settings_from(app: &AppState, a: &Agent, old: &Block, f: &BlockForm) -> Result<Block, String> {
    let message = f.message.trim().to_owned();
    Ok(match old {
        Block::Greeting { .. } => Block::Greeting {
            message,
            next: opt_key(&f.next),
        },
        Block::Start { .. } => Block::Start {
            message,
            next: opt_key(&f.next),
        },
        Block::Talk { .. } => Block::Talk {
            message,
            next: opt_key(&f.next),
        },
        Block::Collect { .. } => {
            let variable = f.variable.trim();
            if !variable.is_empty() {
                VariableName::parse(variable).map_err(|e| format!("Variable to fill: {e}"))?;
            }
            Block::Collect {
                variable: variable.to_owned(),
                prompt: f.prompt.trim().to_owned(),
                next: opt_key(&f.next),
            }
        }
        Block::TransferCall { .. } => {
            // Numbers are kept as callers' are: in E.164, read in the agent's region.
            let destination = match f.destination.trim() {
                "" => String::new(),
                d => app
                    .phones
                    .parse(d, a.region())
                    .map_err(|e| format!("Destination number: {e}"))?
                    .into_string(),
            };
            Block::TransferCall {
                destination,
                department: f.department.trim().to_owned(),
                message,
            }
        }
        Block::TransferFlow { .. } => Block::TransferFlow {
            flow: opt_key(&f.flow),
        },
        Block::EndCall { .. } => Block::EndCall {
            message,
            outcome: Some(f.outcome.trim().to_owned())
                .filter(|o| !o.is_empty())
                .unwrap_or_else(|| "completed".into()),
        },
        Block::Filter { .. } => {
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
                    .map_err(|e| format!("Case {}: {e}", i + 1))?;
                cases.push(Case {
                    name: get("name").trim().to_owned(),
                    any: get("join") == "or",
                    conditions,
                    to: opt_key(&get("next")),
                });
            }
            if f.add_case.is_some() && cases.len() < MAX_CASES {
                cases.push(Case {
                    name: String::new(),
                    any: false,
                    conditions: Vec::new(),
                    to: None,
                });
            }
            Block::Filter {
                cases,
                otherwise: opt_key(&f.else_next),
            }
        }
    })
}

async fn save_block(
    State(app): State<AppState>,
    Path((id, flow_key, block_key)): Path<(String, String, String)>,
    f: AdminForm<BlockForm>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let AdminForm { admin, form } = f;
    let back = format!("{}?block={block_key}#settings", flow_path(&id, &flow_key));
    let d = agent_draft(&app, &a).await?;
    let (fl, block) = {
        let fl = d
            .doc()
            .flow(&flow_key)
            .ok_or_else(|| not_found("This flow"))?;
        let block = fl
            .blocks
            .iter()
            .find(|b| b.key == block_key)
            .ok_or_else(|| not_found("This block"))?;
        (fl.clone(), block.clone())
    };
    let settings = match settings_from(&app, &a, &block.settings, &form) {
        Ok(s) => s,
        Err(e) => {
            return Ok(refused(
                &app,
                &admin,
                &a,
                d,
                &fl,
                &block,
                &form,
                e,
                StatusCode::UNPROCESSABLE_ENTITY,
            ));
        }
    };
    let result = drafts::edit(&app.db, a.id, form.revision, &by(&admin), |doc| {
        let b = doc
            .flow_mut(&flow_key)
            .and_then(|x| x.blocks.iter_mut().find(|b| b.key == block_key))
            .ok_or("this block is no longer in the draft")?;
        b.settings = settings;
        Ok(())
    })
    .await;
    match result {
        Ok(((), saved)) => {
            let d = agent_draft(&app, &a).await?;
            let notice = match block_findings(d.doc(), &flow_key, &block_key) {
                found if found.is_empty() => "Saved to the draft.".to_owned(),
                found => format!(
                    "Saved to the draft. To finish before publishing: {}.",
                    found.join("; ")
                ),
            };
            edited(&app, &admin, &back, Ok((notice, saved)))
        }
        Err(EditError::Database(e)) => Err(e.into()),
        Err(e) => {
            let status = match e {
                EditError::Stale { .. } => StatusCode::CONFLICT,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            let d = agent_draft(&app, &a).await?;
            Ok(refused(
                &app,
                &admin,
                &a,
                d,
                &fl,
                &block,
                &form,
                e.to_string(),
                status,
            ))
        }
    }
}

/// What would stop the draft's publish at this block, and cycles it may have closed.
fn block_findings(doc: &AgentDocument, flow_key: &str, block_key: &str) -> Vec<String> {
    document::findings(doc)
        .1
        .into_iter()
        .filter(|x| match &x.at {
            At::Block(f, b) if f == flow_key => b == block_key || x.detail.starts_with("a cycle"),
            At::Flow(f) => f == flow_key,
            _ => false,
        })
        .map(|x| x.detail)
        .collect()
}

/// The editor again, with the form as the admin typed it and why it was not saved.
#[allow(clippy::too_many_arguments)]
fn refused(
    app: &AppState,
    admin: &Admin,
    a: &Agent,
    d: AgentDraft,
    fl: &FlowDoc,
    block: &BlockDoc,
    form: &BlockForm,
    error: String,
    status: StatusCode,
) -> Response {
    let flash = app.flash.take(admin.session_id);
    let settings = settings_from_form(fl, block, form, format!("Not saved: {error}"));
    match editor_page(
        admin,
        a,
        d,
        &fl.key,
        Some(&block.key),
        Some(settings),
        &flash,
    ) {
        Ok(page) => {
            let mut res = render(page);
            *res.status_mut() = status;
            res
        }
        Err(e) => axum::response::IntoResponse::into_response(e),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DeleteBlock {
    /// What the blocks that led to it lead to instead: a block's key, or empty for nothing.
    reconnect: String,
    revision: Option<i64>,
}

async fn delete_block(
    State(app): State<AppState>,
    Path((id, flow_key, block_key)): Path<(String, String, String)>,
    f: AdminForm<DeleteBlock>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    flow_exists(&app, &a, &flow_key).await?;
    let reconnect = opt_key(&f.form.reconnect).filter(|k| *k != block_key);
    let result = drafts::edit(&app.db, a.id, f.form.revision, &by(&f.admin), |doc| {
        let x = doc.flow_mut(&flow_key).ok_or("this flow does not exist")?;
        let at = x
            .blocks
            .iter()
            .position(|b| b.key == block_key)
            .ok_or("this block is no longer in the draft")?;
        if x.blocks[at].settings.is_entry() {
            return Err("a flow's entry cannot be deleted".into());
        }
        if let Some(r) = &reconnect
            && !x.blocks.iter().any(|b| &b.key == r)
        {
            return Err("the block chosen to reconnect to does not exist".into());
        }
        x.blocks.remove(at);
        let mut moved = 0;
        for b in &mut x.blocks {
            for slot in b.settings.targets_mut() {
                if slot.as_deref() == Some(block_key.as_str()) {
                    *slot = reconnect.clone();
                    moved += 1;
                }
            }
        }
        for v in &mut doc.variables {
            if matches!(&v.source, Some(document::Source::Block { flow, block })
                if *flow == flow_key && *block == block_key)
            {
                v.source = None;
            }
        }
        Ok(match (moved, &reconnect) {
            (0, _) => "Block deleted; nothing led to it.".to_owned(),
            (n, Some(_)) => format!(
                "Block deleted; {n} connection{} that led to it now lead{} to the block after it.",
                if n == 1 { "" } else { "s" },
                if n == 1 { "s" } else { "" }
            ),
            (n, None) => format!(
                "Block deleted; {n} connection{} that led to it {} not connected now.",
                if n == 1 { "" } else { "s" },
                if n == 1 { "is" } else { "are" }
            ),
        })
    })
    .await;
    edited(&app, &f.admin, &flow_path(&id, &flow_key), result)
}

async fn duplicate_block(
    State(app): State<AppState>,
    Path((id, flow_key, block_key)): Path<(String, String, String)>,
    f: AdminForm<Revision>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    flow_exists(&app, &a, &flow_key).await?;
    let result = drafts::edit(&app.db, a.id, f.form.revision, &by(&f.admin), |doc| {
        let x = doc.flow_mut(&flow_key).ok_or("this flow does not exist")?;
        let at = x
            .blocks
            .iter()
            .position(|b| b.key == block_key)
            .ok_or("this block is no longer in the draft")?;
        if x.blocks[at].settings.is_entry() {
            return Err("a flow has one entry: it cannot be duplicated".into());
        }
        let key = AgentDocument::new_key("", x.blocks.iter().map(|b| b.key.as_str()));
        let mut copy = x.blocks[at].clone();
        copy.key = key.clone();
        copy.position = copy.position.map(|p| document::Position {
            x: p.x + 40.0,
            y: p.y + 40.0,
        });
        x.blocks.insert(at + 1, copy);
        Ok(key)
    })
    .await;
    match result {
        Ok((key, saved)) => edited(
            &app,
            &f.admin,
            &format!("{}?block={key}#settings", flow_path(&id, &flow_key)),
            Ok((
                "Block duplicated: connect what should lead to the copy.".into(),
                saved,
            )),
        ),
        Err(e) => edited(&app, &f.admin, &flow_path(&id, &flow_key), Err(e)),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MoveBlock {
    direction: String,
    revision: Option<i64>,
}

/// Moves a block up or down the flow's list (its number changes; its connections do not).
async fn move_block(
    State(app): State<AppState>,
    Path((id, flow_key, block_key)): Path<(String, String, String)>,
    f: AdminForm<MoveBlock>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    flow_exists(&app, &a, &flow_key).await?;
    let up = f.form.direction == "up";
    let result = drafts::edit(&app.db, a.id, f.form.revision, &by(&f.admin), |doc| {
        let x = doc.flow_mut(&flow_key).ok_or("this flow does not exist")?;
        let at = x
            .blocks
            .iter()
            .position(|b| b.key == block_key)
            .ok_or("this block is no longer in the draft")?;
        let other = if up { at.checked_sub(1) } else { Some(at + 1) }
            .filter(|o| *o < x.blocks.len())
            .ok_or("the block is already at that end")?;
        x.blocks.swap(at, other);
        Ok("Moved.".to_owned())
    })
    .await;
    edited(
        &app,
        &f.admin,
        &format!("{}?block={block_key}", flow_path(&id, &flow_key)),
        result,
    )
}
