//! Starting a call: run the pre-call Webhook actions, waiting for each caller's data up to
//! the action's fallback time, then resolve the call's variables and record it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::catalog::AgentRuntime;
use crate::connect::answer::CallOutcome as PlatformAnswer;
use crate::domain::ids::CallId;
use crate::domain::payload::Problem;
use crate::domain::phone::PhoneNumber;
use crate::domain::runtime::{Question, Run, Step, Stop, Transfer};
use crate::domain::variables::resolve;
use crate::error::{ApiProblem, AppError, ProblemKind};
use crate::http::AppState;
use crate::metrics::{CallOutcome, CallSource, DbOp};
use crate::store::writer::{
    Attachment, Attempted, CallAttempt, CallRecord, CallTally, Claimed, StepAttempt, StepState,
};
use crate::store::{calls as stored_calls, now_ms, rfc3339};
use crate::wakeups::{Subscription, WakeKey};

/// The call runtime's announcement of an inbound call.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartCall {
    /// The public id of the agent the call is for.
    #[schema(examples("oJvfgs3Eg8DEMOGnQES7"))]
    pub agent_id: String,
    /// The caller's number.
    #[schema(examples("+1 234-567-890"), min_length = 1)]
    pub from: String,
    /// The number that was called.
    #[serde(default)]
    #[schema(min_length = 1)]
    pub to: Option<String>,
}

/// What happened at one pre-call action.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrecallStep {
    /// The Webhook's endpoint (its URL and cached data).
    pub action_id: i64,
    /// The action's key in the agent's document.
    #[serde(default)]
    pub action_key: String,
    pub action: String,
    pub kind: String,
    /// `cached` (data was there), `arrived` (data came while waiting), `fallback`, `disabled`.
    #[schema(schema_with = crate::http::openapi::precall_outcome)]
    pub outcome: String,
    pub waited_ms: u64,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub fields: Vec<String>,
}

/// The voice platform that announced a call through a connection, and its id of the call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlatformCall {
    /// `retell`, `synthflow`, `vapi`, `telnyx` or `twilio`.
    pub platform: String,
    /// The platform's id of the call, when it has one when it asks (Retell's inbound
    /// webhook comes before its call exists).
    #[serde(default)]
    pub call_id: Option<String>,
    /// The connection the call came through (its `id` in the connections API). A Twilio
    /// turn is taken only through the connection that started the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<i64>,
}

/// A call started by a voice platform: who it is, and how long the call may wait for its
/// data (the platform's deadline less a margin).
#[derive(Debug, Clone)]
pub struct Origin {
    pub platform: PlatformCall,
    /// The platform, for the call counters.
    pub kind: crate::connect::Platform,
    pub wait_cap: Duration,
}

/// The trace a call keeps of what it ran, as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Trace {
    pub precall: Vec<PrecallStep>,
    /// The voice platform that announced the call, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformCall>,
    /// The pre-call rules that applied and every block entered, in order, over all turns.
    #[serde(default)]
    pub steps: Vec<Step>,
    #[serde(default)]
    pub greeting: Option<String>,
    /// The question waiting for an answer, while the call is active.
    #[serde(default)]
    pub question: Option<Question>,
    #[serde(default)]
    pub transfer: Option<Transfer>,
}

/// Data that arrived after the call had fallen back.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LateContext {
    #[schema(format = DateTime)]
    pub received_at: String,
    #[schema(value_type = crate::domain::variables::Variables)]
    pub fields: Map<String, Value>,
}

/// A call as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallView {
    pub call_id: String,
    pub agent_id: String,
    pub from: String,
    pub to: Option<String>,
    #[schema(format = DateTime)]
    pub started_at: String,
    /// `webhook` when webhook data was used, else `fallback`.
    #[schema(schema_with = crate::http::openapi::call_source)]
    pub source: String,
    pub waited_ms: i64,
    /// The call's variables (a JSON object).
    #[schema(value_type = crate::domain::variables::Variables)]
    pub variables: Box<RawValue>,
    /// What each pre-call Webhook action did (a JSON list of [`PrecallStep`]).
    #[schema(value_type = Vec<PrecallStep>)]
    pub precall: Box<RawValue>,
    /// The greeting as rendered (none when a pre-call action routed or refused the call).
    pub greeting: Option<String>,
    /// The steps of this turn (on start and input) or of the whole call (when read back),
    /// as a JSON list of [`Step`].
    #[schema(value_type = Vec<Step>)]
    pub steps: Box<RawValue>,
    /// What the caller must answer next; `null` once the call has ended.
    pub question: Option<Question>,
    /// `active` while a question waits for its answer, else `ended`.
    #[schema(schema_with = crate::http::openapi::call_status)]
    pub status: String,
    /// How the call ended: `transferred`, `completed`, an End Call's tag, `no_answer`
    /// (Twilio, after turns without an answer), `handed_over` (a voice platform's agent took
    /// it), or `error`.
    pub outcome: Option<String>,
    pub transfer: Option<Transfer>,
    pub late_context: Option<LateContext>,
    /// The version of the agent's configuration the call runs.
    pub version: Option<i64>,
    /// The voice platform that announced the call through a connection, and its call id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformCall>,
}

/// The outcome of a call a voice platform's own agent took over (see `CallContext::record`).
pub const HANDED_OVER: &str = "handed_over";

/// Where a run left a call: its status, outcome, question and transfer.
fn settle(
    run: &Run,
) -> (
    &'static str,
    Option<String>,
    Option<Question>,
    Option<Transfer>,
) {
    match &run.stop {
        Stop::Ask(q) => ("active", None, Some(q.clone()), None),
        Stop::Ended { outcome, transfer } => {
            ("ended", Some(outcome.clone()), None, transfer.clone())
        }
    }
}

fn invalid(pointer: &str, detail: String) -> AppError {
    ApiProblem::with_errors(
        ProblemKind::ValidationFailed,
        vec![Problem::at(pointer, detail)],
    )
    .into()
}

/// A started call: its id and the API's answer, as JSON.
pub struct Started {
    pub call_id: String,
    pub json: String,
    /// The call's outcome as values, for a call a voice platform announced (whose `json`
    /// is then empty: the platform is answered from these).
    pub outcome: Option<Box<PlatformAnswer>>,
}

fn outcome_of(attachment: Option<Attachment>) -> Option<Box<PlatformAnswer>> {
    attachment.and_then(|a| a.0.downcast::<PlatformAnswer>().ok())
}

/// Starts a call as [`start_call`] does, and counts what it came to.
async fn start_with(
    app: &AppState,
    token_agent: i64,
    req: StartCall,
    simulated: Option<Option<Simulation>>,
    origin: Option<Origin>,
) -> Result<Started, AppError> {
    let source = match (&simulated, &origin) {
        (Some(_), _) => CallSource::Console,
        (None, Some(o)) => o.kind.into(),
        (None, None) => CallSource::Api,
    };
    let started = start_call(app, token_agent, req, simulated, origin).await;
    match &started {
        Ok((_, tally)) => {
            app.metrics.call(source, tally.outcome);
            app.metrics.call_waited(tally.waited);
        }
        Err(AppError::Problem(p)) => app
            .metrics
            .call(source, CallOutcome::of_failure(p.kind.status().as_u16())),
        Err(_) => app.metrics.call(source, CallOutcome::Error),
    }
    started.map(|(s, _)| s)
}

/// Starts a call for the agent the runtime token speaks for.
///
/// Each attempt asks the writer to claim every enabled Webhook action's data for the caller
/// and, if none is missing, to record the call in the same transaction. When a step's data
/// is missing, the call subscribes to its caller's wake-up, tries once more (so that data
/// committed meanwhile is not missed), then waits until woken or until the step's fallback
/// time, counted from the call's start, runs out.
pub async fn start(app: &AppState, token_agent: i64, req: StartCall) -> Result<Started, AppError> {
    start_with(app, token_agent, req, None, None).await
}

/// Starts a call a voice platform announced: exactly as [`start`], with each Webhook
/// action's wait capped by the platform's deadline, and the platform and its call id in
/// the call's trace.
pub async fn start_from(
    app: &AppState,
    token_agent: i64,
    req: StartCall,
    origin: Origin,
) -> Result<Started, AppError> {
    start_with(app, token_agent, req, None, Some(origin)).await
}

/// What a simulated call's Webhook action receives: the payload typed in the simulator,
/// `at` after the call starts, instead of whatever is cached.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// The endpoint the payload goes through.
    pub action_id: i64,
    /// The payload's fields, as a JSON object (validated like a webhook's).
    pub fields: String,
    pub at: Duration,
}

/// Starts a simulated call: it runs exactly as a real one, with `sim`'s payload as the only
/// webhook data (arriving at its time, or late after the step fell back), and nothing
/// cached is used or claimed.
pub async fn simulate(
    app: &AppState,
    token_agent: i64,
    req: StartCall,
    sim: Option<Simulation>,
) -> Result<Started, AppError> {
    start_with(app, token_agent, req, Some(sim), None).await
}

async fn start_call(
    app: &AppState,
    token_agent: i64,
    req: StartCall,
    simulated: Option<Option<Simulation>>,
    origin: Option<Origin>,
) -> Result<(Started, CallTally), AppError> {
    let started = Instant::now();
    let wait_cap = origin.as_ref().map_or(Duration::MAX, |o| o.wait_cap);
    let platform = origin.map(|o| o.platform);
    let started_at = now_ms();
    let runtime = app.catalog.agent(&req.agent_id).await?.ok_or_else(|| {
        AppError::problem(
            ProblemKind::NotFound,
            format!("no agent {:?}", crate::domain::ids::excerpt(&req.agent_id)),
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
    let normalise_caller = |from: &str| {
        app.phones
            .parse(from, region)
            .map(PhoneNumber::into_string)
            .map_err(|e| invalid("from", format!("from: {e}")))
    };
    let steps = &runtime.steps;
    // A caller sent in the stored numbers' shape is looked up as sent: if that finds the
    // data, the text was already normal (see `PhoneNumber::looks_normal`), and the call
    // is spared libphonenumber. Otherwise the number is normalised before the call waits
    // or falls back, and looked up again if normalising changed it.
    let mut caller_checked = simulated.is_some()
        || !(PhoneNumber::looks_normal(&req.from) && steps.iter().any(|s| s.enabled));
    let mut caller = if caller_checked {
        normalise_caller(&req.from)?
    } else {
        req.from
    };
    let called = match req.to.as_deref().map(|to| app.phones.parse(to, region)) {
        None => None,
        Some(Ok(number)) => Some(number),
        // The number a platform says was called may be a SIP address or one of its clients:
        // the call is the caller's, and goes on without it. An API client's is refused.
        Some(Err(_)) if platform.is_some() => None,
        Some(Err(e)) => return Err(invalid("to", format!("to: {e}"))),
    };

    let call_id = CallId::generate_at(started_at);
    if let Some(sim) = simulated {
        // Each step settles at its payload's time or at its fallback; the call waits for
        // the last of them, as a real one would.
        let mut states = Vec::with_capacity(steps.len());
        let mut gave_up = Vec::with_capacity(steps.len());
        let mut preset = Vec::with_capacity(steps.len());
        let mut wait = Duration::ZERO;
        for s in steps.iter() {
            if !s.enabled {
                states.push(StepState::Disabled);
                gave_up.push(None);
                preset.push(None);
                continue;
            }
            let fallback = Duration::from_millis(s.fallback_wait_ms.max(0) as u64);
            states.push(StepState::Simulated);
            match &sim {
                Some(sim) if sim.action_id == s.action_id && sim.at <= fallback => {
                    preset.push(Some(Claimed {
                        context_id: 0,
                        fields: sim.fields.clone(),
                        received_at: started_at + sim.at.as_millis() as i64,
                    }));
                    gave_up.push(None);
                    wait = wait.max(sim.at);
                }
                _ => {
                    preset.push(None);
                    gave_up.push(Some(fallback));
                    wait = wait.max(fallback);
                }
            }
        }
        tokio::time::sleep_until((started + wait).into()).await;
        let context = CallContext {
            runtime: runtime.clone(),
            call_id: call_id.to_string(),
            caller: caller.clone(),
            called: called.as_ref().map(ToString::to_string),
            started,
            started_at,
            states: states.clone(),
            gave_up,
            platform: platform.clone(),
        };
        let attempt = CallAttempt {
            public_id: call_id.to_string(),
            agent_id: agent.id,
            version: runtime.version,
            caller,
            called: called.as_ref().map(ToString::to_string),
            started_at,
            steps: steps
                .iter()
                .zip(&states)
                .map(|(s, state)| StepAttempt {
                    action_id: s.action_id,
                    state: *state,
                })
                .collect(),
            finish: Box::new(move |claimed| context.record(claimed)),
            preset,
        };
        return match app.writer.start_call(attempt).await? {
            Attempted::Started(json, tally, attachment) => Ok((
                Started {
                    call_id: call_id.to_string(),
                    json,
                    outcome: outcome_of(attachment),
                },
                tally,
            )),
            Attempted::Missing(_) => Err(AppError::Other(anyhow::anyhow!(
                "a simulated call waits for nothing"
            ))),
        };
    }
    let mut states: Vec<StepState> = steps
        .iter()
        .map(|s| {
            if s.enabled {
                StepState::Wanted
            } else {
                StepState::Disabled
            }
        })
        .collect();
    // When each step's wait ran out, counted from the call's start.
    let mut gave_up: Vec<Option<Duration>> = vec![None; steps.len()];
    let mut subscription: Option<(usize, Subscription)> = None;
    loop {
        let context = CallContext {
            runtime: runtime.clone(),
            call_id: call_id.to_string(),
            caller: caller.clone(),
            called: called.as_ref().map(ToString::to_string),
            started,
            started_at,
            states: states.clone(),
            gave_up: gave_up.clone(),
            platform: platform.clone(),
        };
        let attempt = CallAttempt {
            public_id: call_id.to_string(),
            agent_id: agent.id,
            version: runtime.version,
            caller: caller.clone(),
            called: called.as_ref().map(ToString::to_string),
            started_at,
            steps: steps
                .iter()
                .zip(&states)
                .map(|(s, state)| StepAttempt {
                    action_id: s.action_id,
                    state: *state,
                })
                .collect(),
            finish: Box::new(move |claimed| context.record(claimed)),
            preset: Vec::new(),
        };
        let missing = match app.writer.start_call(attempt).await? {
            Attempted::Started(json, tally, attachment) => {
                return Ok((
                    Started {
                        call_id: call_id.to_string(),
                        json,
                        outcome: outcome_of(attachment),
                    },
                    tally,
                ));
            }
            Attempted::Missing(i) => i,
        };
        if !caller_checked {
            caller_checked = true;
            let normal = normalise_caller(&caller)?;
            if normal != caller {
                caller = normal;
                continue;
            }
        }
        // A platform's deadline caps every wait: the call answers before the platform gives up.
        let deadline = started
            + Duration::from_millis(steps[missing].fallback_wait_ms.max(0) as u64).min(wait_cap);
        if Instant::now() >= deadline {
            states[missing] = StepState::GaveUp;
            gave_up[missing] = Some(started.elapsed());
            continue;
        }
        let subscription_for_it = match subscription.take() {
            Some((i, s)) if i == missing => s,
            _ => {
                let key = WakeKey {
                    action_id: steps[missing].action_id,
                    phone: caller.clone(),
                };
                subscription = Some((missing, app.wakeups.subscribe(key)));
                continue;
            }
        };
        match tokio::time::timeout_at(deadline.into(), subscription_for_it.woken()).await {
            Ok(Some(notified)) => app.metrics.woken(notified.elapsed()),
            Ok(None) => {}
            Err(_) => {
                states[missing] = StepState::GaveUp;
                gave_up[missing] = Some(started.elapsed());
            }
        }
    }
}

/// What an attempt needs to build the call's record from the claimed data.
struct CallContext {
    runtime: Arc<AgentRuntime>,
    call_id: String,
    caller: String,
    called: Option<String>,
    started: Instant,
    started_at: i64,
    states: Vec<StepState>,
    gave_up: Vec<Option<Duration>>,
    platform: Option<PlatformCall>,
}

impl CallContext {
    fn record(&self, claimed: &[Option<Claimed>]) -> CallRecord {
        let mut context = Map::new();
        let mut precall = Vec::with_capacity(claimed.len());
        let elapsed_ms = self.started.elapsed().as_millis() as u64;
        for (((step, state), gave_up), data) in self
            .runtime
            .steps
            .iter()
            .zip(&self.states)
            .zip(&self.gave_up)
            .zip(claimed)
        {
            let fields: Map<String, Value> = data
                .as_ref()
                .and_then(|d| serde_json::from_str(&d.fields).ok())
                .unwrap_or_default();
            // Every wait is counted from the call's start: the call waits for all its
            // steps at once, not one after another.
            let (outcome, waited_ms) = match (state, data) {
                (StepState::Disabled, _) => ("disabled", 0),
                (_, None) => (
                    "fallback",
                    gave_up.map_or(elapsed_ms, |d| d.as_millis() as u64),
                ),
                (_, Some(d)) if d.received_at >= self.started_at => (
                    "arrived",
                    ((d.received_at - self.started_at) as u64).min(elapsed_ms),
                ),
                (_, Some(_)) => ("cached", 0),
            };
            precall.push(PrecallStep {
                action_id: step.action_id,
                action_key: step.key.clone(),
                action: step.name.clone(),
                kind: "webhook".into(),
                outcome: outcome.into(),
                waited_ms,
                fields: fields.keys().cloned().collect(),
            });
            context.extend(fields);
        }
        let source = if claimed.iter().any(Option::is_some) {
            "webhook"
        } else {
            "fallback"
        };
        let variables = resolve(
            &self.runtime.schema,
            context,
            [
                ("caller_phone", Value::String(self.caller.clone())),
                (
                    "called_number",
                    self.called.clone().map_or(Value::Null, Value::String),
                ),
                ("call_id", Value::String(self.call_id.clone())),
            ],
        );
        let run = self.runtime.program.start(&variables);
        let (status, outcome, question, transfer) = settle(&run);
        // A call handed to a platform that runs its own agent (all but Twilio, whose calls
        // Precall runs turn by turn) ends here for Precall: the platform's agent takes the
        // conversation, and no answer to a Collect comes back. It is kept as ended,
        // `handed_over`; the platform's answer is made from the run as it stopped.
        let handed_over = status == "active"
            && self
                .platform
                .as_ref()
                .is_some_and(|p| p.platform != crate::connect::Platform::Twilio.as_str());
        let (kept_status, outcome_kept, kept_question) = if handed_over {
            ("ended", Some(HANDED_OVER.to_owned()), None)
        } else {
            (status, outcome.clone(), question.clone())
        };
        let greeting = run
            .steps
            .iter()
            .find(|s| s.kind == "greeting")
            .and_then(|s| s.said.clone());
        let waited = self.started.elapsed();
        let waited_ms = waited.as_millis() as i64;
        // A pre-call End Call that ends the call is the run's last step.
        let ended_before_greeting = matches!(run.stop, Stop::Ended { .. })
            && run
                .steps
                .last()
                .is_some_and(|s| s.kind == "precall_end_call");
        // Each part is serialised once: stored as is, and embedded in the answer.
        let precall = to_raw(&precall);
        let steps = to_raw(&run.steps);
        let trace = to_raw(&StoredTrace {
            precall: &precall,
            platform: self.platform.as_ref(),
            steps: &steps,
            greeting: greeting.as_deref(),
            question: kept_question.as_ref(),
            transfer: transfer.as_ref(),
        });
        let variables_json = to_raw(&variables);
        // A voice platform's connection answers from these values, handed over as they are:
        // it needs no JSON answer, nor to read one back.
        let (response, attachment, variables_json) = if self.platform.is_some() {
            let answer = PlatformAnswer {
                call_id: self.call_id.clone(),
                source: source.into(),
                variables,
                greeting,
                steps: run.steps,
                question,
                status: status.into(),
                outcome,
                transfer,
                version: Some(self.runtime.version),
            };
            let attachment = Attachment(Box::new(answer) as Box<dyn std::any::Any + Send>);
            (String::new(), Some(attachment), variables_json)
        } else {
            let view = CallView {
                call_id: self.call_id.clone(),
                agent_id: self.runtime.agent.public_id.clone(),
                from: self.caller.clone(),
                to: self.called.clone(),
                started_at: rfc3339(self.started_at),
                source: source.into(),
                waited_ms,
                variables: variables_json,
                precall,
                greeting,
                steps,
                question,
                status: status.into(),
                outcome,
                transfer,
                late_context: None,
                version: Some(self.runtime.version),
                platform: None,
            };
            let response = serde_json::to_string(&view).expect("call serialises");
            (response, None, view.variables)
        };
        CallRecord {
            source,
            waited_ms,
            variables: variables_json,
            trace,
            status: kept_status,
            outcome: outcome_kept,
            response,
            attachment,
            tally: CallTally {
                outcome: if ended_before_greeting {
                    CallOutcome::EndedBeforeGreeting
                } else if source == "webhook" {
                    CallOutcome::Webhook
                } else {
                    CallOutcome::Fallback
                },
                waited,
            },
        }
    }
}

/// [`Trace`] as written, from parts already serialised.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StoredTrace<'a> {
    precall: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<&'a PlatformCall>,
    steps: &'a RawValue,
    greeting: Option<&'a str>,
    question: Option<&'a Question>,
    transfer: Option<&'a Transfer>,
}

/// `value` serialised, to embed as is.
fn to_raw<T: Serialize + ?Sized>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).expect("serialises to JSON")
}

/// JSON text this process stored, to embed as is.
fn raw(json: String) -> Box<RawValue> {
    RawValue::from_string(json)
        .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null is JSON"))
}

/// A stored trace, its lists kept as JSON text.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TraceRead {
    #[serde(default = "empty_list")]
    precall: Box<RawValue>,
    #[serde(default = "empty_list")]
    steps: Box<RawValue>,
    #[serde(default)]
    greeting: Option<String>,
    #[serde(default)]
    question: Option<Question>,
    #[serde(default)]
    transfer: Option<Transfer>,
    #[serde(default)]
    platform: Option<PlatformCall>,
}

fn empty_list() -> Box<RawValue> {
    RawValue::from_string("[]".into()).expect("[] is JSON")
}

/// A stored call as the API shows it, with every step it took.
pub fn view_of(row: stored_calls::CallRow) -> CallView {
    let trace: TraceRead = serde_json::from_str(&row.trace).unwrap_or_else(|_| TraceRead {
        precall: empty_list(),
        steps: empty_list(),
        greeting: None,
        question: None,
        transfer: None,
        platform: None,
    });
    let late_context = match (row.late_fields, row.late_at) {
        (Some(fields), Some(at)) => Some(LateContext {
            received_at: rfc3339(at),
            fields: serde_json::from_str(&fields).unwrap_or_default(),
        }),
        _ => None,
    };
    CallView {
        call_id: row.public_id,
        agent_id: row.agent_public_id,
        from: row.caller,
        to: row.called,
        started_at: rfc3339(row.started_at),
        source: row.source,
        waited_ms: row.waited_ms,
        variables: raw(row.variables),
        precall: trace.precall,
        greeting: trace.greeting,
        steps: trace.steps,
        question: trace.question,
        status: row.status,
        outcome: row.outcome,
        transfer: trace.transfer,
        late_context,
        version: row.version,
        platform: trace.platform,
    }
}

/// A stored call, timed as a database round trip.
async fn read_call(
    app: &AppState,
    public_id: &str,
) -> Result<Option<stored_calls::CallRow>, sqlx::Error> {
    let asked = Instant::now();
    let row = stored_calls::find(&app.db, public_id).await;
    app.metrics.db(DbOp::ReadCall, asked.elapsed());
    row
}

/// A call of the token's agent, read back.
pub async fn find(
    app: &AppState,
    token_agent: i64,
    public_id: &str,
) -> Result<Option<CallView>, AppError> {
    // Late data for the call may be acknowledged and not yet committed.
    app.writer.settle().await?;
    Ok(read_call(app, public_id)
        .await?
        .filter(|row| row.agent_id == token_agent)
        .map(view_of))
}

/// Answers to a call's question: `{"answers": {"variable": value, …}}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallInput {
    /// The answer to the current question, and any others to keep, by variable name.
    #[schema(value_type = crate::domain::variables::Variables,
             examples(json!({ "verification_code": "123456" })))]
    pub answers: Map<String, Value>,
}

/// Applies answers to an active call and runs it on to its next question or its end.
/// The answer to the waiting question is required; answers to other variables are kept
/// (a later Collect for them is skipped). Values are checked against the schema's types.
pub async fn answer(
    app: &AppState,
    token_agent: i64,
    public_id: &str,
    input: CallInput,
) -> Result<CallView, AppError> {
    let not_found = || {
        AppError::problem(
            ProblemKind::NotFound,
            format!(
                "no call {:?} for this agent",
                crate::domain::ids::excerpt(public_id)
            ),
        )
    };
    app.writer.settle().await?;
    let row = read_call(app, public_id)
        .await?
        .filter(|row| row.agent_id == token_agent)
        .ok_or_else(not_found)?;
    let mut trace: Trace = serde_json::from_str(&row.trace).unwrap_or_default();
    let question = match (&*row.status, trace.question.clone()) {
        ("active", Some(q)) => q,
        _ => {
            return Err(AppError::problem(
                ProblemKind::CallConflict,
                format!(
                    "the call has ended ({}): it takes no more answers",
                    row.outcome.as_deref().unwrap_or("no outcome")
                ),
            ));
        }
    };
    let runtime = app
        .catalog
        .agent(&row.agent_public_id)
        .await?
        .ok_or_else(not_found)?;
    let mut variables: Map<String, Value> =
        serde_json::from_str(&row.variables).unwrap_or_default();
    let mut problems = Vec::new();
    for (name, value) in &input.answers {
        if let Err(e) = crate::domain::variables::VariableName::parse(name) {
            problems.push(Problem::in_answers(name, e));
            continue;
        }
        if crate::domain::variables::SYSTEM_VARIABLES.contains(&name.as_str()) {
            problems.push(Problem::in_answers(
                name,
                format!("{name} is a system variable"),
            ));
            continue;
        }
        let declared = runtime.schema.iter().find(|d| d.name.as_str() == name);
        let value = match declared {
            Some(d) => d.ty.coerce(value),
            None => crate::domain::variables::check_undeclared(value).map(|()| value.clone()),
        };
        match value {
            Ok(v) => {
                variables.insert(name.clone(), v);
            }
            Err(e) => problems.push(Problem::in_answers(name, format!("{name}: {e}"))),
        }
    }
    if problems.is_empty() && !crate::domain::runtime::has_value(&variables, &question.variable) {
        problems.push(Problem::in_answers(
            &question.variable,
            format!(
                "the call is waiting for {}: answer it with a value",
                question.variable
            ),
        ));
    }
    if !problems.is_empty() {
        return Err(ApiProblem::with_errors(ProblemKind::ValidationFailed, problems).into());
    }
    // The call finishes on the version it started with.
    let program = app
        .catalog
        .program(&runtime, row.version.unwrap_or(runtime.version))
        .await?
        .ok_or_else(not_found)?;
    let mut run = program.resume(&question, &variables);
    let answered = Step {
        kind: "answer".into(),
        flow_key: Some(question.flow_key.clone()),
        block_key: Some(question.block_key.clone()),
        variable: Some(question.variable.clone()),
        answer: variables.get(&question.variable).cloned(),
        ..Step::default()
    };
    run.steps.insert(0, answered);
    let (status, outcome, question, transfer) = settle(&run);
    trace.question = question;
    trace.transfer = transfer;
    trace.steps.extend(run.steps.iter().cloned());
    let variables_json = serde_json::to_string(&variables).expect("variables serialise");
    let trace_json = serde_json::to_string(&trace).expect("trace serialises");
    let moved = stored_calls::continue_call(
        &app.db,
        public_id,
        row.turns,
        &variables_json,
        &trace_json,
        status,
        outcome.as_deref(),
    )
    .await?;
    if !moved {
        return Err(AppError::problem(
            ProblemKind::CallConflict,
            "another answer continued this call first: read it again",
        ));
    }
    let mut view = view_of(stored_calls::CallRow {
        variables: variables_json,
        trace: trace_json,
        status: status.into(),
        outcome,
        ..row
    });
    view.steps = to_raw(&run.steps);
    Ok(view)
}

/// Ends an active call that the caller left without answering (a voice platform hung up
/// after turns without an answer): outcome `no_answer`, its question cleared. Nothing
/// changes if the call had already moved on or ended.
pub async fn hang_up(app: &AppState, token_agent: i64, public_id: &str) -> Result<(), AppError> {
    app.writer.settle().await?;
    let Some(row) = read_call(app, public_id)
        .await?
        .filter(|row| row.agent_id == token_agent && row.status == "active")
    else {
        return Ok(());
    };
    let mut trace: Trace = serde_json::from_str(&row.trace).unwrap_or_default();
    let asked = trace.question.take();
    trace.steps.push(Step {
        kind: "end_call".into(),
        flow_key: asked.as_ref().map(|q| q.flow_key.clone()),
        block_key: asked.as_ref().map(|q| q.block_key.clone()),
        why: Some(
            "no answer taken: the caller stayed silent or gave answers that did not fit".into(),
        ),
        ..Step::default()
    });
    let trace_json = serde_json::to_string(&trace).expect("trace serialises");
    stored_calls::continue_call(
        &app.db,
        public_id,
        row.turns,
        &row.variables,
        &trace_json,
        "ended",
        Some("no_answer"),
    )
    .await?;
    Ok(())
}
