//! Pre-call Filter and End Call actions, in the draft: added with the ➕ above the First Flow
//! and edited on their own page; and the list of pre-call actions (reordered, deleted after a
//! confirmation). A Filter routes the call to another flow before the greeting; an End Call
//! refuses it when its conditions hold. Unfinished ones are saved, and skipped by calls.

use std::collections::HashMap;

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;

use super::{
    DraftBar, Page, PageResult, agent, agent_draft, by, edited, first_flow_link, isolate,
    not_found, render,
};
use crate::auth::session::{Admin, AdminForm};
use crate::domain::document::{self, Action, ActionDoc, AgentDocument, Case, MAX_CASES};
use crate::domain::flow;
use crate::domain::runtime::At;
use crate::drafts;
use crate::http::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/agents/{agent}/rules", post(create))
        .route("/admin/agents/{agent}/rules/{action}", get(edit).post(save))
        .route(
            "/admin/agents/{agent}/actions/{action}/move",
            post(move_action),
        )
        .route(
            "/admin/agents/{agent}/actions/{action}/delete",
            get(confirm_delete).post(delete),
        )
}

fn label(a: &Action) -> &'static str {
    match a {
        Action::Webhook { .. } => "Webhook",
        Action::Filter { .. } => "Filter",
        Action::EndCall { .. } => "End Call",
    }
}

#[derive(Deserialize)]
struct NewRule {
    kind: String,
    #[serde(default)]
    revision: Option<i64>,
}

async fn create(
    State(app): State<AppState>,
    Path(id): Path<String>,
    f: AdminForm<NewRule>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let kind = f.form.kind.clone();
    let result = drafts::edit(&app.db, a.id, f.form.revision, &by(&f.admin), |doc| {
        let settings = match kind.as_str() {
            "filter" => Action::Filter {
                cases: vec![Case {
                    name: String::new(),
                    any: false,
                    conditions: Vec::new(),
                    to: None,
                }],
            },
            "end_call" => Action::EndCall {
                any: false,
                conditions: Vec::new(),
                message: String::new(),
                outcome: "refused".into(),
            },
            _ => return Err("choose a kind of pre-call action".into()),
        };
        let key = AgentDocument::new_key(
            if kind == "filter" {
                "filter-"
            } else {
                "end-call-"
            },
            doc.precall.iter().map(|x| x.key.as_str()),
        );
        doc.precall.push(ActionDoc {
            key: key.clone(),
            name: label(&settings).into(),
            settings,
        });
        Ok(key)
    })
    .await;
    match result {
        Ok((key, saved)) => edited(
            &app,
            &f.admin,
            &format!("/admin/agents/{id}/rules/{key}"),
            Ok((
                "Added to the draft. Calls skip it until it has conditions (and, for a Filter, \
                 the flow each case leads to)."
                    .into(),
                saved,
            )),
        ),
        Err(e) => {
            let d = agent_draft(&app, &a).await?;
            edited(&app, &f.admin, &first_flow_link(&id, d.doc()), Err(e))
        }
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
    bar: DraftBar,
    agent_id: String,
    agent_name: String,
    first_flow: Option<String>,
    action_key: String,
    kind: String,
    label: &'static str,
    name: String,
    cases: Vec<CaseView>,
    join: String,
    conditions: String,
    message: String,
    outcome: String,
    /// (key, name) of the agent's flows other than the First Flow, for a Filter's targets.
    flows: Vec<(String, String)>,
    /// What calls skip it for, or what stops a publish.
    problems: Vec<String>,
    /// Why the form was not saved, next to it.
    error: Option<String>,
    revision: i64,
}

fn join_text(any: bool) -> String {
    if any { "or" } else { "and" }.into()
}

fn view_cases(cases: &[Case]) -> Vec<CaseView> {
    cases
        .iter()
        .enumerate()
        .map(|(index, c)| CaseView {
            index,
            name: c.name.clone(),
            join: join_text(c.any),
            conditions: flow::format_conditions(&c.conditions),
            flow: c.to.clone().unwrap_or_default(),
        })
        .collect()
}

async fn page_of(
    app: &AppState,
    admin: &Admin,
    id: &str,
    key: &str,
    typed: Option<(&RuleForm, String)>,
) -> Result<RulePage, super::HtmlError> {
    let a = agent(app, id).await?;
    let d = agent_draft(app, &a).await?;
    let doc = d.doc();
    let rule = doc
        .action(key)
        .filter(|x| !matches!(x.settings, Action::Webhook { .. }))
        .ok_or_else(|| not_found("This pre-call action"))?;
    let flash = app.flash.take(admin.session_id);
    let (program, found) = document::findings(doc);
    let problems = found
        .iter()
        .filter(|x| matches!(&x.at, At::Rule(r) if r == key))
        .map(|x| x.detail.clone())
        .collect();
    let _ = program;
    let bar = d.bar.clone();
    let mut page = RulePage {
        page: Page::new(
            admin,
            format!("{} · {}", isolate(&rule.name), isolate(&a.name)),
            &flash,
        ),
        revision: d.bar.revision,
        bar,
        agent_id: a.public_id.clone(),
        agent_name: a.name.clone(),
        first_flow: doc.first_flow.clone(),
        action_key: rule.key.clone(),
        kind: match rule.settings {
            Action::Filter { .. } => "filter",
            _ => "end_call",
        }
        .into(),
        label: label(&rule.settings),
        name: rule.name.clone(),
        cases: Vec::new(),
        join: "and".into(),
        conditions: String::new(),
        message: String::new(),
        outcome: String::new(),
        flows: doc
            .flows
            .iter()
            .filter(|f| doc.first_flow.as_deref() != Some(f.key.as_str()))
            .map(|f| (f.key.clone(), f.name.clone()))
            .collect(),
        problems,
        error: None,
    };
    match &rule.settings {
        Action::Filter { cases } => page.cases = view_cases(cases),
        Action::EndCall {
            any,
            conditions,
            message,
            outcome,
        } => {
            page.join = join_text(*any);
            page.conditions = flow::format_conditions(conditions);
            page.message = message.clone();
            page.outcome = outcome.clone();
        }
        Action::Webhook { .. } => {}
    }
    if let Some((form, error)) = typed {
        page.name = form.name.clone();
        page.join = if form.join == "or" { "or" } else { "and" }.into();
        page.conditions = form.conditions.clone();
        page.message = form.message.clone();
        page.outcome = form.outcome.clone();
        if page.kind == "filter" {
            page.cases = (0..form.cases.min(MAX_CASES))
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
                        flow: get("flow"),
                    }
                })
                .collect();
        }
        page.error = Some(format!("Not saved: {error}"));
    }
    Ok(page)
}

async fn edit(
    State(app): State<AppState>,
    admin: Admin,
    Path((id, key)): Path<(String, String)>,
) -> PageResult {
    Ok(render(page_of(&app, &admin, &id, &key, None).await?))
}

/// The form of either kind; the action's own fields are used.
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
    revision: Option<i64>,
    #[serde(flatten)]
    rest: HashMap<String, String>,
}

fn settings_from(old: &Action, f: &RuleForm) -> Result<Action, String> {
    match old {
        Action::Filter { .. } => {
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
                    .map_err(|e| format!("Case {}: {e}", i + 1))?;
                cases.push(Case {
                    name: get("name").trim().to_owned(),
                    any: get("join") == "or",
                    conditions,
                    to: Some(get("flow").trim().to_owned()).filter(|k| !k.is_empty()),
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
            Ok(Action::Filter { cases })
        }
        _ => Ok(Action::EndCall {
            any: f.join == "or",
            conditions: flow::parse_conditions(&f.conditions)
                .map_err(|e| format!("Conditions: {e}"))?,
            message: f.message.trim().to_owned(),
            outcome: Some(f.outcome.trim().to_owned())
                .filter(|o| !o.is_empty())
                .unwrap_or_else(|| "refused".into()),
        }),
    }
}

async fn save(
    State(app): State<AppState>,
    Path((id, key)): Path<(String, String)>,
    f: AdminForm<RuleForm>,
) -> PageResult {
    let AdminForm { admin, form } = f;
    let a = agent(&app, &id).await?;
    let d = agent_draft(&app, &a).await?;
    let old = d
        .doc()
        .action(&key)
        .filter(|x| !matches!(x.settings, Action::Webhook { .. }))
        .ok_or_else(|| not_found("This pre-call action"))?
        .settings
        .clone();
    let name = form.name.trim().to_owned();
    let back = format!("/admin/agents/{id}/rules/{key}");
    if name.is_empty() || name.chars().count() > document::MAX_NAME {
        return refused(
            &app,
            &admin,
            &id,
            &key,
            &form,
            "a pre-call action's name is 1 to 100 characters".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    let settings = match settings_from(&old, &form) {
        Ok(s) => s,
        Err(e) => {
            return refused(
                &app,
                &admin,
                &id,
                &key,
                &form,
                e,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
        }
    };
    let editing_cases = form.add_case.is_some() || form.remove_case.is_some();
    let result = drafts::edit(&app.db, a.id, form.revision, &by(&admin), |doc| {
        let x = doc
            .action_mut(&key)
            .ok_or("this pre-call action is no longer in the draft")?;
        x.name = name.clone();
        x.settings = settings;
        Ok(())
    })
    .await;
    match result {
        Ok(((), saved)) => {
            let d = agent_draft(&app, &a).await?;
            let (_, found) = document::findings(d.doc());
            let left: Vec<String> = found
                .into_iter()
                .filter(|x| matches!(&x.at, At::Rule(r) if *r == key))
                .map(|x| x.detail)
                .collect();
            let notice = if editing_cases || left.is_empty() {
                "Saved to the draft.".to_owned()
            } else {
                format!(
                    "Saved to the draft. To finish before publishing: {}.",
                    left.join("; ")
                )
            };
            edited(&app, &admin, &back, Ok((notice, saved)))
        }
        Err(drafts::EditError::Database(e)) => Err(e.into()),
        Err(e @ drafts::EditError::Stale { .. }) => {
            refused(
                &app,
                &admin,
                &id,
                &key,
                &form,
                e.to_string(),
                StatusCode::CONFLICT,
            )
            .await
        }
        Err(e) => {
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            refused(&app, &admin, &id, &key, &form, e.to_string(), status).await
        }
    }
}

/// The page again, with the form as the admin typed it and why it was not saved.
async fn refused(
    app: &AppState,
    admin: &Admin,
    id: &str,
    key: &str,
    form: &RuleForm,
    error: String,
    status: StatusCode,
) -> PageResult {
    let page = page_of(app, admin, id, key, Some((form, error))).await?;
    let mut res = render(page);
    *res.status_mut() = status;
    Ok(res)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MoveAction {
    direction: String,
    revision: Option<i64>,
}

async fn move_action(
    State(app): State<AppState>,
    Path((id, key)): Path<(String, String)>,
    f: AdminForm<MoveAction>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let up = f.form.direction == "up";
    let result = drafts::edit(&app.db, a.id, f.form.revision, &by(&f.admin), |doc| {
        let at = doc
            .precall
            .iter()
            .position(|x| x.key == key)
            .ok_or("this pre-call action is no longer in the draft")?;
        let other = if up { at.checked_sub(1) } else { Some(at + 1) }
            .filter(|o| *o < doc.precall.len())
            .ok_or("it is already at that end")?;
        doc.precall.swap(at, other);
        Ok("Moved in the draft.".to_owned())
    })
    .await;
    let d = agent_draft(&app, &a).await?;
    edited(&app, &f.admin, &first_flow_link(&id, d.doc()), result)
}

#[derive(Template)]
#[template(path = "admin/confirm_delete_action.html")]
struct ConfirmPage {
    page: Page,
    agent_id: String,
    agent_name: String,
    action_key: String,
    label: &'static str,
    name: String,
    webhook: bool,
    published: bool,
    revision: i64,
    back: String,
}

/// Asks before deleting a pre-call action (a page, so that it works without JavaScript).
async fn confirm_delete(
    State(app): State<AppState>,
    admin: Admin,
    Path((id, key)): Path<(String, String)>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let d = agent_draft(&app, &a).await?;
    let x = d
        .doc()
        .action(&key)
        .ok_or_else(|| not_found("This pre-call action"))?;
    let published = d
        .published
        .as_ref()
        .is_some_and(|p| p.document.action(&key).is_some());
    let flash = app.flash.take(admin.session_id);
    Ok(render(ConfirmPage {
        page: Page::new(
            &admin,
            format!("Delete {} · {}", isolate(&x.name), isolate(&a.name)),
            &flash,
        ),
        agent_id: a.public_id.clone(),
        agent_name: a.name.clone(),
        action_key: key.clone(),
        label: label(&x.settings),
        name: x.name.clone(),
        webhook: matches!(x.settings, Action::Webhook { .. }),
        published,
        revision: d.bar.revision,
        back: first_flow_link(&id, d.doc()),
    }))
}

async fn delete(
    State(app): State<AppState>,
    Path((id, key)): Path<(String, String)>,
    f: AdminForm<MoveAction>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let result = drafts::edit(&app.db, a.id, f.form.revision, &by(&f.admin), |doc| {
        let at = doc
            .precall
            .iter()
            .position(|x| x.key == key)
            .ok_or("this pre-call action is no longer in the draft")?;
        let x = doc.precall.remove(at);
        for v in &mut doc.variables {
            if matches!(&v.source, Some(document::Source::Action(s)) if *s == key) {
                v.source = None;
            }
        }
        Ok(format!(
            "{} {:?} deleted from the draft.",
            label(&x.settings),
            x.name
        ))
    })
    .await;
    let d = agent_draft(&app, &a).await?;
    edited(&app, &f.admin, &first_flow_link(&id, d.doc()), result)
}
