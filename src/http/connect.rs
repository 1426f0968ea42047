//! `POST /connect/{slug}`: a voice platform asks about an inbound call. One route for every
//! platform: the connection says which platform it is, and so how its request is verified,
//! read and answered.
//!
//! A request that fails the platform's verification (or repeats one already taken) is
//! answered 401 and keeps nothing: no call, no database row (the Test viewer shows it from
//! memory). A verified one starts a call exactly as `POST /api/v1/calls` does, with each
//! Webhook action's wait capped by the platform's deadline less its margin, and is answered
//! in the platform's format. Twilio's calls are run by Precall itself: each Collect's answer
//! is posted back here (`?call=…`) and continues the call as `POST /api/v1/calls/{id}/input`
//! does.

use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, OriginalUri, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::AppState;
use super::body::read_limited;
use crate::calls::{self, CallInput, Origin, PlatformCall, StartCall};
use crate::catalog::ConnectionTarget;
use crate::connect::answer::{CallOutcome, json_answer};
use crate::connect::log::{Answer, CallClaim, Entry, Given};
use crate::connect::verify::{Signed, VerifyError};
use crate::connect::{Inbound, JsonRequest, Platform, twilio_inbound, twiml, wait_cap};
use crate::error::{ApiProblem, AppError, ProblemKind};
use crate::metrics;
use crate::store::now_ms;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/connect/{slug}", post(receive))
        .layer(axum::middleware::map_response(
            super::fallback::api_problems,
        ))
}

/// The URL to paste into the platform for the connection with `slug`.
pub fn url(public_url: &str, slug: &str) -> String {
    format!("{public_url}/connect/{slug}")
}

/// Turns in a row without an answer taken (silence, or an answer that does not fit the
/// question) after which a Twilio call is hung up.
const MAX_MISSES: u32 = 3;

/// What one request became, for its answer and the Test viewer.
struct Outcome {
    status: StatusCode,
    content_type: &'static str,
    body: String,
    verdict: String,
    inbound: Option<Inbound>,
    call_id: Option<String>,
    /// Answered, but the answer turns the call away (a pre-call End Call, or no platform
    /// agent to take it).
    declined: bool,
    /// A platform's message about a call under way, acknowledged: not shown in the Test
    /// viewer, which a call's dozens of them would flood.
    notice: bool,
}

impl Outcome {
    /// The same outcome, marked as turning the call away or not.
    fn declined(self, declined: bool) -> Self {
        Self { declined, ..self }
    }

    fn refused(problem: ApiProblem, inbound: Option<Inbound>) -> Self {
        Self {
            status: problem.kind.status(),
            content_type: "application/problem+json",
            body: problem.body().to_string(),
            verdict: problem.detail.clone(),
            inbound,
            call_id: None,
            declined: false,
            notice: false,
        }
    }
}

fn unauthorized(e: VerifyError) -> ApiProblem {
    ApiProblem::new(ProblemKind::Unauthorized, e.to_string())
}

/// The largest body a Vapi connection reads: a long call's end-of-call-report is larger
/// than a webhook.
const VAPI_BODY_LIMIT: usize = 4 << 20;

async fn receive(
    State(app): State<AppState>,
    Path(slug): Path<String>,
    OriginalUri(uri): OriginalUri,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let received_at = now_ms();
    // An address that keeps posting to URLs that do not exist is refused before the lookup,
    // as at the webhook URLs.
    let source = peer.as_ref().map(|Extension(ConnectInfo(p))| p.ip());
    let cached = app.catalog.cached_connection(&slug);
    if cached.is_none()
        && let Some(ip) = source
        && let Err(exceeded) = app.ingest_limits.lookup(ip)
    {
        return super::api::rate_limited(exceeded).into_response();
    }
    let found = match cached {
        Some(t) => Ok(Some(t)),
        None => app.catalog.connection(&slug).await,
    };
    let target = match found {
        Ok(Some(t)) => t,
        Ok(None) => {
            if let Some(ip) = source {
                app.ingest_limits.lookup_failed(ip);
            }
            return ApiProblem::new(ProblemKind::NotFound, "no connection at this URL")
                .into_response();
        }
        Err(e) => return AppError::from(e).into_response(),
    };
    // Answered to the end even if the platform goes away before its answer (it gave up, or
    // the network dropped; see `GoesOn`): the work is not cut short. The call it started is
    // recorded, its Test viewer entry kept, and the answer promised to a request asking
    // again about the same call (see `once_per_call`) is given.
    let answer = async move {
        // Vapi's end-of-call-report (acknowledged, see `vapi_notice`) carries the whole call's
        // transcript and messages.
        let limit = if target.platform == Platform::Vapi {
            app.body_limit.max(VAPI_BODY_LIMIT)
        } else {
            app.body_limit
        };
        let outcome = match read_limited(&headers, body, limit).await {
            // Boxed: the call start's state is large, and a task's future is copied whole
            // when it is spawned and when its output is stored and taken.
            Ok(bytes) => {
                Box::pin(handle(
                    &app,
                    &target,
                    &slug,
                    &uri,
                    &headers,
                    &bytes,
                    received_at,
                ))
                .await
            }
            Err(p) => Outcome::refused(p, None),
        };
        // A request refused before its call could start (no valid signature, a replay, not a
        // call) has no caller; one refused by the call start has, and was counted there. A
        // Twilio turn continues a call rather than starting one.
        let twilio_turn = || target.platform == Platform::Twilio && turn_of(uri.query()).is_some();
        if !outcome.status.is_success() && outcome.inbound.is_none() && !twilio_turn() {
            app.metrics.call(
                target.platform.into(),
                metrics::CallOutcome::of_failure(outcome.status.as_u16()),
            );
        }
        let sent = bytes::Bytes::from(outcome.body);
        let answer = Answer::new(sent.clone());
        let mut res = (outcome.status, Body::from(sent)).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(outcome.content_type),
        );
        if outcome.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Signature"),
            );
        }
        if outcome.notice {
            return res;
        }
        let inbound = outcome.inbound;
        app.connect.record(
            target.id,
            Entry {
                id: 0,
                received_at,
                status: outcome.status.as_u16(),
                accepted: outcome.status.is_success(),
                declined: outcome.declined,
                verdict: outcome.verdict,
                caller: inbound.as_ref().map(|i| i.from.clone()),
                called: inbound.as_ref().and_then(|i| i.to.clone()),
                platform_call_id: inbound.and_then(|i| i.call_id),
                call_id: outcome.call_id,
                answer,
                latency_ms: started.elapsed().as_millis() as u64,
            },
        );
        res
    };
    GoesOn(Some(Box::pin(answer))).await
}

/// A platform's answer, awaited where it is (no task of its own, no wake-up through a join
/// handle), that goes on in a task of its own if it is dropped unfinished: when a platform
/// goes away before its answer, hyper drops the request's future, and the call start, its
/// record and the answer promised to a request asking again still complete. A panic while
/// answering is answered 500, as a task's would be, and leaves nothing to go on with.
struct GoesOn(Option<Pin<Box<dyn Future<Output = Response> + Send>>>);

impl Future for GoesOn {
    type Output = Response;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Response> {
        let Some(running) = self.0.as_mut() else {
            return Poll::Pending;
        };
        let polled =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| running.as_mut().poll(cx)));
        let out = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(res)) => res,
            Err(_) => AppError::Other(anyhow::anyhow!("answering a platform's request panicked"))
                .into_response(),
        };
        self.0 = None;
        Poll::Ready(out)
    }
}

impl Drop for GoesOn {
    fn drop(&mut self) {
        if let Some(unfinished) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(unfinished);
        }
    }
}

async fn handle(
    app: &AppState,
    target: &ConnectionTarget,
    slug: &str,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    bytes: &[u8],
    received_at: i64,
) -> Outcome {
    let platform = target.platform;
    let url = format!(
        "{}{}",
        app.public_url,
        uri.path_and_query().map_or(uri.path(), |p| p.as_str())
    );
    let form: Vec<(String, String)> = if platform == Platform::Twilio {
        serde_urlencoded::from_bytes(bytes).unwrap_or_default()
    } else {
        Vec::new()
    };
    let json = if platform == Platform::Twilio {
        None
    } else {
        Some(JsonRequest::parse(bytes))
    };
    // Synthflow signs the call_id in the body: a body that cannot be read is said to be so,
    // not to lack the call_id (nothing is kept either way).
    if platform == Platform::Synthflow
        && let Some(Err(e)) = &json
    {
        return Outcome::refused(unreadable(platform, e), None);
    }
    let call_id = json
        .as_ref()
        .and_then(|j| j.as_ref().ok()?.as_ref()?.synthflow_call_id());
    let verified = {
        let get = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or(""));
        let signed = Signed {
            header: &get,
            body: bytes,
            url: &url,
            form: &form,
            call_id,
        };
        target.verifier.verify(&signed, received_at)
    };
    let vouched = match verified {
        Ok(v) => v,
        Err(e) => return Outcome::refused(unauthorized(e), None),
    };
    // What the signature vouches for, taken once: the same signed content again (however
    // its headers are spelled, ordered or padded) is a replay.
    let mut digest = Sha256::new();
    digest.update(slug.as_bytes());
    digest.update(vouched);
    if !app
        .connect
        .first_time(digest.finalize().into(), Instant::now())
    {
        return Outcome::refused(unauthorized(VerifyError::Replayed), None);
    }
    if platform == Platform::Twilio {
        // Boxed: running a Twilio call's turns takes a state several times a JSON
        // platform's, which would otherwise be the size of every request's.
        return Box::pin(twilio(app, target, slug, uri.query(), &form)).await;
    }
    let json = match json {
        Some(Ok(Some(json))) => json,
        Some(Ok(None)) => {
            return Outcome::refused(
                ApiProblem::new(
                    ProblemKind::ValidationFailed,
                    "the body is not a JSON object",
                ),
                None,
            );
        }
        Some(Err(e)) => return Outcome::refused(unreadable(platform, &e), None),
        None => {
            return Outcome::refused(
                ApiProblem::new(ProblemKind::MalformedJson, "the body is not JSON"),
                None,
            );
        }
    };
    if platform == Platform::Vapi
        && let Some(kind) = json.vapi_notice()
    {
        return Outcome {
            status: StatusCode::OK,
            content_type: "application/json",
            body: "{}".into(),
            verdict: format!("acknowledged: {kind}, a Vapi message that wants no answer"),
            inbound: None,
            call_id: None,
            declined: false,
            notice: true,
        };
    }
    let inbound = match json.inbound(platform) {
        Ok(i) => i,
        Err(e) => {
            return Outcome::refused(ApiProblem::new(ProblemKind::ValidationFailed, e), None);
        }
    };
    let first = async {
        let started = match start(app, target, &inbound).await {
            Ok(c) => c,
            Err(e) => {
                let problem = in_platform_terms(e.into_problem(), platform);
                return Outcome::refused(problem, Some(inbound.clone()));
            }
        };
        let (answer, note) = json_answer(platform, &started, &target.mapping);
        let declined = started.refused_by().is_some() || note.is_some();
        let verdict = describe(&started, note, target);
        Outcome {
            status: StatusCode::OK,
            content_type: "application/json",
            body: answer,
            verdict,
            call_id: Some(started.call_id),
            inbound: Some(inbound.clone()),
            declined,
            notice: false,
        }
    };
    once_per_call(app, target, &inbound, first).await
}

/// Answers each of the platform's calls once: a request about a call this connection was
/// already asked about (the platform retries, signed anew) gets the first request's answer,
/// waiting for it while it is being made, and starts nothing. A second call would start
/// without the data the first one took, and could route the caller past a Filter. A
/// request without the platform's call id (Retell's) is always a call of its own.
async fn once_per_call(
    app: &AppState,
    target: &ConnectionTarget,
    inbound: &Inbound,
    first: impl Future<Output = Outcome>,
) -> Outcome {
    let Some(id) = inbound.call_id.as_deref() else {
        return first.await;
    };
    // The first request's own wait began earlier, but its answer comes after it: a request
    // asking again waits a little longer, still well within the platform's deadline.
    let platform = target.platform;
    let patience = wait_cap(platform, target.deadline_ms)
        + Duration::from_millis((platform.margin_ms() / 2).max(0) as u64);
    let give_up = tokio::time::Instant::now() + patience;
    loop {
        match app.connect.claim_call(target.id, id, Instant::now()) {
            CallClaim::First(promise) => {
                let outcome = first.await;
                if outcome.status.is_success() {
                    promise.keep(Given {
                        status: outcome.status.as_u16(),
                        content_type: outcome.content_type,
                        body: outcome.body.clone(),
                        call_id: outcome.call_id.clone(),
                        declined: outcome.declined,
                    });
                }
                return outcome;
            }
            CallClaim::Again(mut answering) => {
                let given = match tokio::time::timeout_at(
                    give_up,
                    answering.wait_for(Option::is_some),
                )
                .await
                {
                    Ok(Ok(given)) => given.clone(),
                    // The first request was refused: this one is the first now.
                    Ok(Err(_)) => continue,
                    Err(_) => {
                        let problem = ApiProblem::new(
                            ProblemKind::Unavailable,
                            format!(
                                "{} call {id} is still being answered for an earlier request: no second call was started",
                                platform.label()
                            ),
                        );
                        return Outcome::refused(problem, Some(inbound.clone()));
                    }
                };
                let Some(given) = given else { continue };
                return Outcome {
                    status: StatusCode::from_u16(given.status).unwrap_or(StatusCode::OK),
                    content_type: given.content_type,
                    body: given.body,
                    verdict: format!(
                        "asked again about {} call {id}: the same answer as the first time, no new call",
                        platform.label()
                    ),
                    inbound: Some(inbound.clone()),
                    call_id: given.call_id,
                    declined: given.declined,
                    notice: false,
                };
            }
        }
    }
}

/// Starts the call a platform announced, as `POST /api/v1/calls` does.
async fn start(
    app: &AppState,
    target: &ConnectionTarget,
    inbound: &Inbound,
) -> Result<CallOutcome, AppError> {
    let started = calls::start_from(
        app,
        target.agent_id,
        StartCall {
            agent_id: target.agent_public_id.clone(),
            from: inbound.from.clone(),
            to: inbound.to.clone(),
        },
        Origin {
            platform: PlatformCall {
                platform: target.platform.as_str().to_owned(),
                call_id: inbound.call_id.clone(),
                connection_id: Some(target.id),
            },
            kind: target.platform,
            wait_cap: wait_cap(target.platform, target.deadline_ms),
        },
    )
    .await?;
    started
        .outcome
        .map(|o| *o)
        .ok_or_else(|| AppError::Other(anyhow::anyhow!("a platform's call without its outcome")))
}

/// A call start's refusal of the caller (`from`, as `POST /api/v1/calls` names it) said in
/// the platform's terms: where its request has the caller.
fn in_platform_terms(mut problem: ApiProblem, platform: Platform) -> ApiProblem {
    let name = platform.caller_field();
    let pointer = format!("/{}", name.replace('.', "/"));
    let renamed = |detail: &str| {
        detail
            .strip_prefix("from: ")
            .map(|rest| format!("{name}: {rest}"))
    };
    for e in &mut problem.errors {
        if e.pointer.as_deref() == Some("/from") {
            e.pointer = Some(pointer.clone());
            if let Some(d) = renamed(&e.detail) {
                e.detail = d;
            }
        }
    }
    if let Some(d) = renamed(&problem.detail) {
        problem.detail = d;
    }
    problem
}

/// Why a JSON platform's body could not be read: not JSON (400), JSON nested deeper than
/// the parser follows (422), or JSON of the wrong shape (422).
fn unreadable(platform: Platform, e: &serde_json::Error) -> ApiProblem {
    if e.is_data() {
        let problem = format!("the body is not as {} sends it: {e}", platform.label());
        return ApiProblem::new(ProblemKind::ValidationFailed, problem);
    }
    // serde_json's own words for its depth limit (128), which it files as a syntax error.
    if e.to_string().starts_with("recursion limit exceeded") {
        return ApiProblem::new(
            ProblemKind::ValidationFailed,
            format!(
                "the body nests objects or lists more than 128 deep (at line {}, column {}): {} does not",
                e.line(),
                e.column(),
                platform.label()
            ),
        );
    }
    ApiProblem::new(ProblemKind::MalformedJson, "the body is not JSON")
}

/// The verdict the Test viewer shows for an answered request.
fn describe(call: &CallOutcome, note: Option<String>, target: &ConnectionTarget) -> String {
    use std::fmt::Write;
    let mut said = format!("answered: call {} ({} data)", call.call_id, call.source);
    if let Some(flow) = call.entry_flow() {
        let agent = target.mapping.agent_for(Some(flow));
        let own = target.mapping.flow_agents.contains_key(flow);
        let _ = match agent {
            Some(a) if target.platform.routes_to_agents() && !own && call.routed() => write!(
                said,
                "; flow {flow} → {a} (the default: flow {flow} has no {} of its own)",
                target.platform.agent_word()
            ),
            Some(a) if target.platform.routes_to_agents() => write!(said, "; flow {flow} → {a}"),
            _ => write!(said, "; flow {flow}"),
        };
    }
    if let Some(n) = note {
        said.push_str("; ");
        said.push_str(&n);
    }
    said
}

fn twiml_outcome(
    body: String,
    verdict: String,
    inbound: Option<Inbound>,
    call: Option<String>,
) -> Outcome {
    Outcome {
        status: StatusCode::OK,
        content_type: "text/xml",
        body,
        verdict,
        inbound,
        call_id: call,
        declined: false,
        notice: false,
    }
}

/// Twilio: a new call (its incoming-call webhook), or a turn of one Precall runs (`?call=`).
async fn twilio(
    app: &AppState,
    target: &ConnectionTarget,
    slug: &str,
    query: Option<&str>,
    form: &[(String, String)],
) -> Outcome {
    let field = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_owned())
    };
    let base = url(&app.public_url, slug);
    // Each turn has its own URL, so that two turns with the same answer are not one request
    // seen twice (refused as a replay). Both of a turn's URLs say how many turns before it
    // went without an answer taken: the answer's as `missed`, silence's as `silence` (that
    // turn included).
    let action = |call: &str, turn: u32, missed: u32| match missed {
        0 => format!("{base}?call={call}&turn={turn}"),
        n => format!("{base}?call={call}&turn={turn}&missed={n}"),
    };
    let silence =
        |call: &str, turn: u32, n: u32| format!("{base}?call={call}&turn={turn}&silence={n}");
    let turn_of = turn_of(query);
    let inbound = twilio_inbound(form).ok();
    match turn_of {
        None => {
            // Twilio needs TwiML: a call Precall cannot start for its caller (no From, or an
            // Anonymous, client or SIP caller with no phone number) is rejected with it, so
            // the caller hears a busy line rather than Twilio's application error.
            let rejected = |why: String, inbound: Option<Inbound>| {
                let body = twiml::Twiml::default().reject().finish();
                twiml_outcome(body, format!("rejected: {why}"), inbound, None).declined(true)
            };
            let Some(inbound) = inbound else {
                return rejected("the From field is missing".into(), None);
            };
            let first = async {
                let call = match start(app, target, &inbound).await {
                    Ok(c) => c,
                    Err(e) => {
                        let problem = in_platform_terms(e.into_problem(), Platform::Twilio);
                        if problem.kind == ProblemKind::ValidationFailed {
                            return rejected(problem.detail, Some(inbound.clone()));
                        }
                        return Outcome::refused(problem, Some(inbound.clone()));
                    }
                };
                let body = twiml::turn(
                    &call.steps,
                    call.question.as_ref(),
                    &action(&call.call_id, 1, 0),
                    &silence(&call.call_id, 1, 1),
                );
                let verdict = describe(&call, None, target);
                let declined = call.refused_by().is_some();
                twiml_outcome(body, verdict, Some(inbound.clone()), Some(call.call_id))
                    .declined(declined)
            };
            once_per_call(app, target, &inbound, first).await
        }
        Some((call_id, turn, missed)) => {
            let spoken = field("SpeechResult").filter(|s| !s.is_empty());
            let said = spoken
                .clone()
                .or_else(|| field("Digits").filter(|s| !s.is_empty()));
            let current = match calls::find(app, target.agent_id, &call_id).await {
                // Only a call this connection started, for the CallSid that Twilio signed
                // with the turn: not another connection's, a call the runtime started, nor
                // another Twilio call's.
                Ok(Some(v)) if started_here(v.platform.as_ref(), target, field("CallSid")) => v,
                Ok(_) => {
                    return Outcome::refused(
                        ApiProblem::new(ProblemKind::NotFound, "no such call for this connection"),
                        inbound,
                    );
                }
                Err(e) => return Outcome::refused(e.into_problem(), inbound),
            };
            let Some(question) = current.question.clone() else {
                let body = twiml::Twiml::default().hangup().finish();
                return twiml_outcome(
                    body,
                    "the call has ended: hung up".into(),
                    inbound,
                    Some(call_id),
                );
            };
            // This turn, should it go without an answer taken, is the `missed`-th in a row.
            // Under `MAX_MISSES` the question is asked again at the next turn's URLs (the
            // same answer given twice is two requests, not one seen twice); at it, the call
            // is hung up, as unanswered.
            let not_taken = async |why: String| {
                if missed < MAX_MISSES {
                    let body = twiml::Twiml::default()
                        .gather(
                            &question.prompt,
                            &action(&call_id, turn.saturating_add(1), missed),
                            &silence(&call_id, turn.saturating_add(1), missed + 1),
                        )
                        .finish();
                    let verdict = format!("{why}: asked again");
                    return twiml_outcome(body, verdict, inbound.clone(), Some(call_id.clone()));
                }
                if let Err(e) = calls::hang_up(app, target.agent_id, &call_id).await {
                    return Outcome::refused(e.into_problem(), inbound.clone());
                }
                let body = twiml::Twiml::default().hangup().finish();
                let verdict = format!(
                    "{why}; {missed} turns in a row without an answer taken: hung up (no_answer)"
                );
                twiml_outcome(body, verdict, inbound.clone(), Some(call_id.clone()))
            };
            let Some(answer) = said else {
                return not_taken("no answer".into()).await;
            };
            // Speech is read as said, then as a number or a yes or no, until the variable
            // takes it; keys are taken as pressed.
            let readings = match &spoken {
                Some(s) => twiml::speech_readings(s),
                None => vec![answer.clone()],
            };
            let mut taken = None;
            let mut answer = readings[0].clone();
            for reading in &readings {
                let mut answers = Map::new();
                answers.insert(question.variable.clone(), Value::String(reading.clone()));
                let result =
                    calls::answer(app, target.agent_id, &call_id, CallInput { answers }).await;
                let refused = matches!(&result, Err(AppError::Problem(p)) if p.kind == ProblemKind::ValidationFailed);
                if !refused {
                    taken = Some(result);
                    answer.clone_from(reading);
                    break;
                }
                // The refusal said is that of the answer as the caller gave it.
                taken.get_or_insert(result);
            }
            match taken.expect("at least one reading") {
                Ok(view) => {
                    let call = serde_json::to_string(&view)
                        .ok()
                        .and_then(|j| CallOutcome::parse(&j).ok());
                    let Some(call) = call else {
                        return Outcome::refused(
                            ApiProblem::new(ProblemKind::Internal, "internal error"),
                            inbound,
                        );
                    };
                    let body = twiml::turn(
                        &call.steps,
                        call.question.as_ref(),
                        &action(&call.call_id, turn.saturating_add(1), 0),
                        &silence(&call.call_id, turn.saturating_add(1), 1),
                    );
                    twiml_outcome(
                        body,
                        format!("answered {}: {answer:?}", question.variable),
                        inbound,
                        Some(call.call_id),
                    )
                }
                Err(AppError::Problem(p)) if p.kind == ProblemKind::ValidationFailed => {
                    not_taken(format!("answer not taken ({})", p.detail)).await
                }
                Err(AppError::Problem(p)) if p.kind == ProblemKind::CallConflict => {
                    let body = twiml::Twiml::default().hangup().finish();
                    twiml_outcome(body, p.detail, inbound, Some(call_id))
                }
                Err(e) => Outcome::refused(e.into_problem(), inbound),
            }
        }
    }
}

/// Whether a call was started through this Twilio connection for Twilio's call `call_sid`.
/// Calls recorded before connections were kept in the trace name none, and are taken on
/// their CallSid alone.
fn started_here(
    platform: Option<&calls::PlatformCall>,
    target: &ConnectionTarget,
    call_sid: Option<String>,
) -> bool {
    platform.is_some_and(|p| {
        p.platform == target.platform.as_str()
            && p.connection_id.is_none_or(|id| id == target.id)
            && p.call_id.is_some()
            && p.call_id == call_sid
    })
}

/// The call and turn that a Twilio turn's URL names, and how many turns in a row this one
/// makes without an answer taken, should it go without one too. Precall's own URLs carry
/// them in their query (`call`, `turn`, and `missed` or `silence`), which Twilio signs with
/// the rest of the URL.
fn turn_of(query: Option<&str>) -> Option<(String, u32, u32)> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query?).ok()?;
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let count = |k: &str| get(k).and_then(|s| s.parse::<u32>().ok());
    let call = get("call").filter(|c| !c.is_empty())?;
    let turn = count("turn").unwrap_or(1);
    // Silence's URL counts its own turn; the answer's, the turns before it.
    let missed = count("silence").unwrap_or_else(|| count("missed").unwrap_or(0).saturating_add(1));
    Some((call, turn, missed))
}
