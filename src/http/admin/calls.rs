//! Call history: an agent's calls, newest first, and one call's timeline, from which an
//! admin can answer the question an active call is waiting at.

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{HtmlError, Page, PageResult, after, agent, isolate, not_found, render};
use crate::auth::session::{Admin, AdminForm};
use crate::calls::{CallInput, Trace};
use crate::domain::flow;
use crate::domain::runtime::{Question, Step};
use crate::domain::variables::VarType;
use crate::error::{AppError, ProblemKind};
use crate::http::AppState;
use crate::store::agents::Agent;
use crate::store::calls::{self as stored, CallFilter, CallRow, CallSummary, OutcomeFilter};
use crate::store::{StoreError, rfc3339};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/agents/{agent}/calls", get(history))
        .route("/admin/agents/{agent}/calls/{call}", get(detail))
        .route("/admin/agents/{agent}/calls/{call}/answer", post(answer))
}

/// Calls on one page of the history.
const PAGE_SIZE: i64 = 50;

/// The filter value for calls still waiting at a question.
const ACTIVE: &str = "active";

#[derive(Deserialize, Default)]
#[serde(default)]
struct HistoryQuery {
    outcome: String,
    source: String,
    before: String,
}

impl HistoryQuery {
    /// The store's filter; unknown sources and empty values mean "any".
    fn filter(&self) -> CallFilter {
        let outcome = match self.outcome.trim() {
            "" => OutcomeFilter::Any,
            ACTIVE => OutcomeFilter::Active,
            tag => OutcomeFilter::Is(tag.to_owned()),
        };
        let source = match self.source.as_str() {
            s @ ("webhook" | "fallback") => Some(s.to_owned()),
            _ => None,
        };
        CallFilter {
            outcome,
            source,
            before: Some(self.before.trim().to_owned()).filter(|b| !b.is_empty()),
        }
    }

    /// The query of the next page: the same filters, older than `last`.
    fn older_than(&self, last: &str) -> String {
        let mut pairs = Vec::new();
        if !self.outcome.is_empty() {
            pairs.push(("outcome", self.outcome.as_str()));
        }
        if !self.source.is_empty() {
            pairs.push(("source", self.source.as_str()));
        }
        pairs.push(("before", last));
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }
}

/// A call as one line of the history.
struct CallLine {
    id: String,
    started_at: String,
    caller: String,
    called: String,
    source: String,
    waited_ms: i64,
    active: bool,
    outcome: String,
}

impl From<CallSummary> for CallLine {
    fn from(c: CallSummary) -> Self {
        Self {
            active: c.status == "active",
            outcome: c.outcome.unwrap_or_default(),
            id: c.public_id,
            started_at: rfc3339(c.started_at),
            caller: c.caller,
            called: c.called.unwrap_or_default(),
            source: c.source,
            waited_ms: c.waited_ms,
        }
    }
}

#[derive(Template)]
#[template(path = "admin/calls.html")]
struct HistoryPage {
    page: Page,
    agent_id: String,
    agent_name: String,
    first_flow: Option<String>,
    calls: Vec<CallLine>,
    /// Outcome tags the agent's calls ended with, for the filter.
    outcomes: Vec<String>,
    outcome: String,
    source: String,
    filtered: bool,
    /// The next page's query, when there are older calls.
    older: Option<String>,
    paged: bool,
}

async fn history(
    State(app): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let flash = app.flash.take(admin.session_id);
    let filter = q.filter();
    app.writer.settle().await?;
    let mut rows = stored::list(&app.db, a.id, &filter, PAGE_SIZE + 1).await?;
    let more = rows.len() as i64 > PAGE_SIZE;
    rows.truncate(PAGE_SIZE as usize);
    let older = rows
        .last()
        .filter(|_| more)
        .map(|last| q.older_than(&last.public_id));
    let mut outcomes = stored::outcomes(&app.db, a.id).await?;
    if let OutcomeFilter::Is(tag) = &filter.outcome {
        // The filter stays visible even when no call ended that way (yet).
        if !outcomes.contains(tag) {
            outcomes.push(tag.clone());
        }
    }
    let first_flow = super::agent_draft(&app, &a).await?.doc().first_flow.clone();
    Ok(render(HistoryPage {
        page: Page::new(
            &admin,
            format!("Call history · {}", isolate(&a.name)),
            &flash,
        ),
        agent_id: a.public_id,
        agent_name: a.name,
        first_flow,
        calls: rows.into_iter().map(CallLine::from).collect(),
        outcomes,
        filtered: filter.outcome != OutcomeFilter::Any || filter.source.is_some(),
        paged: filter.before.is_some(),
        outcome: q.outcome,
        source: q.source,
        older,
    }))
}

/// A value as the console shows it: text as is, other JSON as JSON.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What a pre-call Webhook action did for the call.
struct PrecallLine {
    action: String,
    outcome: String,
    waited_ms: u64,
    fields: Vec<String>,
}

/// One step of the timeline, in words.
struct StepLine {
    kind: String,
    label: String,
    flow: String,
    said: Option<String>,
    /// What happened: the case taken, the variable asked for or skipped, the answer. Each
    /// part says whether it is user text (a value, a case's name), shown isolated.
    what: Vec<(bool, String)>,
    why: Option<String>,
}

/// Words of the console.
fn words(s: &str) -> (bool, String) {
    (false, s.to_owned())
}

/// Text a user or a caller wrote.
fn theirs(s: impl Into<String>) -> (bool, String) {
    (true, s.into())
}

fn step_line(s: Step) -> StepLine {
    let variable = s.variable.clone().unwrap_or_default();
    let answer = s.answer.as_ref().map(shown).unwrap_or_default();
    let label = match s.kind.as_str() {
        "precall_filter" => "Pre-call Filter",
        "precall_end_call" => "Pre-call End Call",
        "precall_error" => "Pre-call action skipped",
        "answer" => "Caller answered",
        "error" => "Error",
        kind => flow::label(kind),
    };
    let what = match s.kind.as_str() {
        "collect" if s.skipped == Some(true) => vec![
            words(&format!("Skipped: {variable} is known (")),
            theirs(answer),
            words(")"),
        ],
        "collect" => vec![words(&format!("Asked for {variable}"))],
        "answer" => vec![words(&format!("{variable} = ")), theirs(answer)],
        "filter" | "precall_filter" => s
            .case
            .as_ref()
            .map(|c| vec![words("Case taken: "), theirs(c.clone())])
            .unwrap_or_default(),
        "transfer_call" => {
            let to: Vec<&str> = [s.destination.as_deref(), s.department.as_deref()]
                .into_iter()
                .flatten()
                .collect();
            let mut what = vec![words("Transferred")];
            for (i, t) in to.into_iter().enumerate() {
                what.push(words(if i == 0 { " to " } else { " · " }));
                what.push(theirs(t));
            }
            what
        }
        _ => Vec::new(),
    };
    // A skipped Collect's reason is already in `what`.
    let why = s.why.filter(|_| s.skipped != Some(true));
    StepLine {
        label: label.to_owned(),
        kind: s.kind,
        flow: s.flow.unwrap_or_default(),
        said: s.said,
        what,
        why,
    }
}

/// A variable's name, type and value.
struct VariableLine {
    name: String,
    ty: String,
    value: String,
}

fn variable_lines(map: Map<String, Value>) -> Vec<VariableLine> {
    map.into_iter()
        .map(|(name, value)| VariableLine {
            name,
            ty: VarType::detect(&value)
                .map_or("empty", VarType::as_str)
                .to_owned(),
            value: if value.is_null() {
                String::new()
            } else {
                shown(&value)
            },
        })
        .collect()
}

struct Late {
    received_at: String,
    fields: Vec<VariableLine>,
}

#[derive(Template)]
#[template(path = "admin/call.html")]
struct CallPage {
    page: Page,
    agent_id: String,
    agent_name: String,
    first_flow: Option<String>,
    /// The version of the agent's configuration the call ran.
    version: Option<i64>,
    /// The voice platform that announced the call, and its id of the call.
    platform: Option<crate::calls::PlatformCall>,
    id: String,
    started_at: String,
    caller: String,
    called: String,
    source: String,
    waited_ms: i64,
    active: bool,
    outcome: String,
    precall: Vec<PrecallLine>,
    steps: Vec<StepLine>,
    question: Option<Question>,
    transfer: Option<crate::domain::runtime::Transfer>,
    variables: Vec<VariableLine>,
    late: Option<Late>,
}

/// The agent's call with this id, or a 404 page (also for another agent's call).
async fn call_of(app: &AppState, a: &Agent, public_id: &str) -> Result<CallRow, HtmlError> {
    app.writer.settle().await?;
    stored::find(&app.db, public_id)
        .await?
        .filter(|c| c.agent_id == a.id)
        .ok_or_else(|| not_found("This call"))
}

async fn detail(
    State(app): State<AppState>,
    admin: Admin,
    Path((id, call_id)): Path<(String, String)>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let row = call_of(&app, &a, &call_id).await?;
    let flash = app.flash.take(admin.session_id);
    let trace: Trace = serde_json::from_str(&row.trace).unwrap_or_default();
    let variables: Map<String, Value> = serde_json::from_str(&row.variables).unwrap_or_default();
    let late = match (row.late_fields, row.late_at) {
        (Some(fields), Some(at)) => Some(Late {
            received_at: rfc3339(at),
            fields: variable_lines(serde_json::from_str(&fields).unwrap_or_default()),
        }),
        _ => None,
    };
    let active = row.status == "active";
    let first_flow = super::agent_draft(&app, &a).await?.doc().first_flow.clone();
    Ok(render(CallPage {
        page: Page::new(&admin, format!("Call {}", row.public_id), &flash),
        agent_id: a.public_id,
        agent_name: a.name,
        first_flow,
        version: row.version,
        platform: trace.platform.clone(),
        id: row.public_id,
        started_at: rfc3339(row.started_at),
        caller: row.caller,
        called: row.called.unwrap_or_default(),
        source: row.source,
        waited_ms: row.waited_ms,
        active,
        outcome: row.outcome.unwrap_or_default(),
        precall: trace
            .precall
            .into_iter()
            .map(|p| PrecallLine {
                action: p.action,
                outcome: p.outcome,
                waited_ms: p.waited_ms,
                fields: p.fields,
            })
            .collect(),
        steps: trace.steps.into_iter().map(step_line).collect(),
        question: trace.question.filter(|_| active),
        transfer: trace.transfer,
        variables: variable_lines(variables),
        late,
    }))
}

#[derive(Deserialize)]
struct AnswerForm {
    #[serde(default)]
    answer: String,
}

/// Answers the question the call waits at, as the call runtime would. The variable is the
/// call's own current question's, whatever the form says; refusals come back as messages.
async fn answer(
    State(app): State<AppState>,
    Path((id, call_id)): Path<(String, String)>,
    f: AdminForm<AnswerForm>,
) -> PageResult {
    let a = agent(&app, &id).await?;
    let row = call_of(&app, &a, &call_id).await?;
    let back = format!("/admin/agents/{id}/calls/{call_id}");
    let trace: Trace = serde_json::from_str(&row.trace).unwrap_or_default();
    let Some(question) = trace.question.filter(|_| row.status == "active") else {
        return after(
            &app,
            &f.admin,
            &back,
            Err(StoreError::Conflict(
                "the call has ended: it takes no more answers".into(),
            )),
        );
    };
    let mut answers = Map::new();
    answers.insert(
        question.variable.clone(),
        Value::String(f.form.answer.trim().to_owned()),
    );
    let result = answer_call(&app, a.id, &call_id, answers)
        .await?
        .map(|view| match view.question {
            Some(next) => format!(
                "Answered {}; the call now asks for {}.",
                question.variable, next.variable
            ),
            None => format!(
                "Answered {}; the call ended ({}).",
                question.variable,
                view.outcome.as_deref().unwrap_or("no outcome")
            ),
        });
    after(&app, &f.admin, &back, result.map_err(StoreError::Conflict))
}

/// Continues a call with `answers`. A refusal the admin can act on (a wrong value, a call
/// that moved on) is the inner error, in words; anything else fails the request.
pub(super) async fn answer_call(
    app: &AppState,
    agent: i64,
    call_id: &str,
    answers: Map<String, Value>,
) -> Result<Result<crate::calls::CallView, String>, AppError> {
    match crate::calls::answer(app, agent, call_id, CallInput { answers }).await {
        Ok(view) => Ok(Ok(view)),
        Err(AppError::Problem(p))
            if matches!(
                p.kind,
                ProblemKind::ValidationFailed | ProblemKind::CallConflict
            ) =>
        {
            let details: Vec<String> = if p.errors.is_empty() {
                vec![p.detail]
            } else {
                p.errors.into_iter().map(|e| e.detail).collect()
            };
            Ok(Err(format!("Answer refused: {}", details.join("; "))))
        }
        Err(e) => Err(e),
    }
}
