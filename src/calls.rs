//! Starting a call: run the pre-call Webhook actions, waiting for each caller's data up to
//! the action's fallback time, then resolve the call's variables and record it.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::ids::CallId;
use crate::domain::payload::Problem;
use crate::domain::phone::PhoneNumber;
use crate::domain::variables::resolve;
use crate::error::{ApiProblem, AppError, ProblemKind};
use crate::http::AppState;
use crate::store::actions::WebhookStep;
use crate::store::contexts::{self, LiveContext};
use crate::store::writer::{Claim, NewCall, Recorded};
use crate::store::{Db, calls as stored_calls, now_ms, rfc3339};
use crate::wakeups::WakeKey;

/// The call runtime's announcement of an inbound call.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartCall {
    pub agent_id: String,
    /// The caller's number.
    pub from: String,
    /// The number that was called.
    #[serde(default)]
    pub to: Option<String>,
}

/// What happened at one pre-call action.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrecallStep {
    pub action_id: i64,
    pub action: String,
    pub kind: String,
    /// `cached` (data was there), `arrived` (data came while waiting), `fallback`, `disabled`.
    pub outcome: String,
    pub waited_ms: u64,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub fields: Vec<String>,
}

/// The trace a call keeps of what it ran.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Trace {
    pub precall: Vec<PrecallStep>,
}

/// Data that arrived after the call had fallen back.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LateContext {
    pub received_at: String,
    pub fields: Map<String, Value>,
}

/// A call as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallView {
    pub call_id: String,
    pub agent_id: String,
    pub from: String,
    pub to: Option<String>,
    pub started_at: String,
    /// `webhook` when webhook data was used, else `fallback`.
    pub source: String,
    pub waited_ms: i64,
    pub variables: Map<String, Value>,
    pub precall: Vec<PrecallStep>,
    pub status: String,
    pub late_context: Option<LateContext>,
}

fn invalid(pointer: &str, detail: String) -> AppError {
    ApiProblem::with_errors(
        ProblemKind::ValidationFailed,
        vec![Problem::at(pointer, detail)],
    )
    .into()
}

/// Starts a call for the agent the runtime token speaks for.
pub async fn start(app: &AppState, token_agent: i64, req: StartCall) -> Result<CallView, AppError> {
    let started = Instant::now();
    let started_at = now_ms();
    let runtime = app.catalog.agent(&req.agent_id).await?.ok_or_else(|| {
        AppError::problem(
            ProblemKind::NotFound,
            format!("no agent {:?}", req.agent_id),
        )
    })?;
    let agent = &runtime.agent;
    if agent.id != token_agent {
        return Err(AppError::problem(
            ProblemKind::Forbidden,
            "this runtime token belongs to another agent",
        ));
    }
    let region = agent.region();
    let caller = app
        .phones
        .parse(&req.from, region)
        .map_err(|e| invalid("from", format!("from: {e}")))?;
    let called = req
        .to
        .as_deref()
        .map(|to| {
            app.phones
                .parse(to, region)
                .map_err(|e| invalid("to", format!("to: {e}")))
        })
        .transpose()?;

    let (steps, schema) = (&runtime.steps, &runtime.schema);

    let call_id = CallId::generate();
    // Claiming is optimistic: if another call took the data, or a webhook changed it, after
    // it was read, nothing is written and the pre-call actions run again (with the same
    // deadlines, so this cannot extend the wait).
    let (trace, vars, source, waited_ms) = loop {
        let mut trace = Trace::default();
        let mut context = Map::new();
        let mut claims = Vec::new();
        let mut fell_back_on = Vec::new();
        for step in steps.iter() {
            let step_started = Instant::now();
            let (outcome, found) = run_webhook_step(app, step, &caller, started).await?;
            let fields = found
                .as_ref()
                .map(|c| c.fields.keys().cloned().collect())
                .unwrap_or_default();
            match found {
                Some(c) => {
                    claims.push(Claim {
                        context_id: c.id,
                        fields: c.raw,
                    });
                    context.extend(c.fields);
                }
                None if step.enabled => fell_back_on.push(step.action_id),
                None => {}
            }
            trace.precall.push(PrecallStep {
                action_id: step.action_id,
                action: step.name.clone(),
                kind: "webhook".into(),
                outcome: outcome.into(),
                waited_ms: step_started.elapsed().as_millis() as u64,
                fields,
            });
        }
        let waited_ms = started.elapsed().as_millis() as i64;
        let source = if claims.is_empty() {
            "fallback"
        } else {
            "webhook"
        };
        let (vars, _) = resolve(
            schema,
            &context,
            [
                ("caller_phone", Value::String(caller.to_string())),
                (
                    "called_number",
                    called
                        .as_ref()
                        .map_or(Value::Null, |c| Value::String(c.to_string())),
                ),
                ("call_id", Value::String(call_id.to_string())),
            ],
        );
        let recorded = app
            .writer
            .record_call(NewCall {
                public_id: call_id.to_string(),
                agent_id: agent.id,
                caller: caller.to_string(),
                called: called.as_ref().map(|c| c.to_string()),
                started_at,
                waited_ms,
                source,
                variables: Value::Object(vars.clone()).to_string(),
                trace: serde_json::to_string(&trace).expect("trace serialises"),
                claims,
                fell_back_on,
            })
            .await?;
        if recorded == Recorded::Yes {
            break (trace, vars, source, waited_ms);
        }
    };

    Ok(CallView {
        call_id: call_id.to_string(),
        agent_id: agent.public_id.clone(),
        from: caller.to_string(),
        to: called.map(|c| c.to_string()),
        started_at: rfc3339(started_at),
        source: source.into(),
        waited_ms,
        variables: vars,
        precall: trace.precall,
        status: "active".into(),
        late_context: None,
    })
}

/// Waits for the caller's data on one Webhook action until its fallback time (counted from
/// the call's start) runs out. Woken by the ingest commit itself; no polling.
async fn run_webhook_step(
    app: &AppState,
    step: &WebhookStep,
    caller: &PhoneNumber,
    call_started: Instant,
) -> Result<(&'static str, Option<LiveContext>), AppError> {
    if !step.enabled {
        return Ok(("disabled", None));
    }
    let deadline = call_started + Duration::from_millis(step.fallback_wait_ms.max(0) as u64);
    let key = WakeKey {
        action_id: step.action_id,
        phone: caller.to_string(),
    };
    let mut woken = false;
    loop {
        // Subscribe before looking, so a commit between the look and the wait still wakes us.
        let subscription = app.wakeups.subscribe(key.clone());
        if let Some(found) = look(&app.db, &key).await? {
            return Ok((if woken { "arrived" } else { "cached" }, Some(found)));
        }
        if tokio::time::timeout_at(deadline.into(), subscription.woken())
            .await
            .is_err()
        {
            // One last look: data committed at the very deadline is still used.
            return Ok(match look(&app.db, &key).await? {
                Some(found) => ("arrived", Some(found)),
                None => ("fallback", None),
            });
        }
        woken = true;
    }
}

async fn look(db: &Db, key: &WakeKey) -> Result<Option<LiveContext>, sqlx::Error> {
    contexts::find_live(db, key.action_id, &key.phone, now_ms()).await
}

/// A call of the token's agent, read back.
pub async fn find(
    app: &AppState,
    token_agent: i64,
    public_id: &str,
) -> Result<Option<CallView>, AppError> {
    let Some(row) = stored_calls::find(&app.db, public_id).await? else {
        return Ok(None);
    };
    if row.agent_id != token_agent {
        return Ok(None);
    }
    let trace: Trace = serde_json::from_str(&row.trace).unwrap_or_default();
    let late_context = match (row.late_fields, row.late_at) {
        (Some(fields), Some(at)) => Some(LateContext {
            received_at: rfc3339(at),
            fields: serde_json::from_str(&fields).unwrap_or_default(),
        }),
        _ => None,
    };
    Ok(Some(CallView {
        call_id: row.public_id,
        agent_id: row.agent_public_id,
        from: row.caller,
        to: row.called,
        started_at: rfc3339(row.started_at),
        source: row.source,
        waited_ms: row.waited_ms,
        variables: serde_json::from_str(&row.variables).unwrap_or_default(),
        precall: trace.precall,
        status: row.status,
        late_context,
    }))
}
