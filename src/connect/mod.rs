//! Voice platforms' connections: a translation at the edge. A platform's request is verified
//! by its own scheme ([`verify`]), read into a call start ([`Inbound`]), and the call's
//! answer written back in the platform's format ([`answer`], [`twiml`] for Twilio, which
//! runs the flow itself). Nothing here touches the database; `domain/` knows nothing of it.

pub mod answer;
pub mod log;
pub mod twiml;
pub mod verify;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::text::ObjectOnly;

/// The voice platforms Precall answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Retell,
    Synthflow,
    Vapi,
    Telnyx,
    Twilio,
}

impl Platform {
    pub const ALL: [Platform; 5] = [
        Self::Retell,
        Self::Synthflow,
        Self::Vapi,
        Self::Telnyx,
        Self::Twilio,
    ];

    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                format!("{s:?} is not a platform: retell, synthflow, vapi, telnyx or twilio")
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retell => "retell",
            Self::Synthflow => "synthflow",
            Self::Vapi => "vapi",
            Self::Telnyx => "telnyx",
            Self::Twilio => "twilio",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Retell => "Retell",
            Self::Synthflow => "Synthflow",
            Self::Vapi => "Vapi",
            Self::Telnyx => "Telnyx",
            Self::Twilio => "Twilio",
        }
    }

    /// How long the platform waits for an answer, by its documentation (Telnyx's is set per
    /// assistant: this is its default).
    ///
    /// - Retell: "The webhook has a timeout of 10 seconds" (docs.retellai.com/features/inbound-call-webhook).
    /// - Synthflow: the inbound call webhook's 10 seconds (docs.synthflow.ai/inbound-webhook-api).
    /// - Vapi: 7.5 s end to end on one page, about 5 s on another (docs.vapi.ai/server-url/events):
    ///   the stricter.
    /// - Telnyx: `dynamic_variables_webhook_timeout_ms`, 1500 by default, 1 to 10000.
    /// - Twilio: 15 s for the HTTP answer (twilio.com/docs/api/errors/11205).
    pub fn deadline_ms(self) -> i64 {
        match self {
            Self::Retell | Self::Synthflow => 10_000,
            Self::Vapi => 5_000,
            Self::Telnyx => 1_500,
            Self::Twilio => 15_000,
        }
    }

    /// The longest deadline a connection may be given (only Telnyx's can change).
    pub fn max_deadline_ms(self) -> i64 {
        match self {
            Self::Telnyx => 10_000,
            p => p.deadline_ms(),
        }
    }

    /// What Precall keeps of the deadline for the network and for answering: a call waits for
    /// its data at most the deadline less this.
    pub fn margin_ms(self) -> i64 {
        match self {
            Self::Retell | Self::Synthflow => 1_500,
            Self::Vapi => 1_000,
            Self::Telnyx => 300,
            Self::Twilio => 2_000,
        }
    }

    /// Whether the platform can hand a call to another of its agents when a pre-call Filter
    /// routes it (Retell, Synthflow and Vapi can; Telnyx is told the flow in a variable;
    /// Twilio runs the flow itself).
    pub fn routes_to_agents(self) -> bool {
        matches!(self, Self::Retell | Self::Synthflow | Self::Vapi)
    }

    /// Where the platform's request names the caller, as its documentation writes the path
    /// (Twilio's form field by name).
    pub fn caller_field(self) -> &'static str {
        match self {
            Self::Retell | Self::Synthflow => "call_inbound.from_number",
            Self::Vapi => "message.call.customer.number",
            Self::Telnyx => "data.payload.telnyx_end_user_target",
            Self::Twilio => "From",
        }
    }

    /// What the platform calls its agents.
    pub fn agent_word(self) -> &'static str {
        match self {
            Self::Retell => "agent id",
            Self::Synthflow => "agent (model) id",
            Self::Vapi => "assistant id",
            Self::Telnyx => "assistant",
            Self::Twilio => "agent",
        }
    }

    /// What the platform's verification secret is called, for forms and messages.
    pub fn secret_word(self) -> &'static str {
        match self {
            Self::Retell => "Retell API key (the one with the webhook badge)",
            Self::Synthflow => "Synthflow webhook secret (Settings → Security → Webhooks)",
            Self::Vapi => "Vapi server secret (or HMAC secret)",
            Self::Telnyx => "Telnyx public key (Mission Control → Keys & Credentials → Public Key)",
            Self::Twilio => "Twilio auth token",
        }
    }
}

/// How long a call started through a connection may wait for its data: the platform's
/// deadline less its margin (never less than nothing).
pub fn wait_cap(platform: Platform, deadline_ms: i64) -> Duration {
    Duration::from_millis((deadline_ms - platform.margin_ms()).max(0) as u64)
}

/// Which of the platform's agents takes the calls of each flow: a default (calls no Filter
/// routed, and flows without their own) and one per flow key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mapping {
    /// The platform agent that takes calls no pre-call Filter routed, and those routed to a
    /// flow with no agent of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 200)]
    pub default_agent: Option<String>,
    /// The platform agent of each flow (by flow key) a pre-call Filter may route to.
    #[serde(default)]
    pub flow_agents: BTreeMap<String, String>,
}

/// A [`Mapping`]'s fields as read: from an object only (see [`ObjectOnly`]).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MappingFields {
    #[serde(default)]
    default_agent: Option<String>,
    #[serde(default)]
    flow_agents: BTreeMap<String, String>,
}

impl<'de> Deserialize<'de> for Mapping {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let ObjectOnly(f) = ObjectOnly::<MappingFields>::deserialize(d)?;
        Ok(Self {
            default_agent: f.default_agent,
            flow_agents: f.flow_agents,
        })
    }
}

/// Which part of a [`Mapping`] a problem is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MappingPart {
    DefaultAgent,
    /// The list of flows as a whole.
    Flows,
    /// One flow's entry, by its key.
    Flow(String),
}

/// What is wrong with a [`Mapping`], and where: shown as the API names it
/// (`flowAgents/main: …`); the console names the part by its label instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {what}", match part {
    MappingPart::DefaultAgent => "defaultAgent".to_owned(),
    MappingPart::Flows => "flowAgents".to_owned(),
    MappingPart::Flow(key) => format!("flowAgents/{key}"),
})]
pub struct MappingProblem {
    pub part: MappingPart,
    pub what: String,
}

impl Mapping {
    /// Checks ids: 1 to 200 visible characters, flow keys as documents have them; and that
    /// the platform routes to agents at all (Twilio runs the flows itself, and Telnyx's
    /// assistant is told the flow: neither has agents to map to).
    pub fn check(&self, platform: Platform) -> Result<(), MappingProblem> {
        const ID: &str = "1 to 200 characters, no spaces";
        let problem = |part, what: String| Err(MappingProblem { part, what });
        if !platform.routes_to_agents() {
            let none = match platform {
                Platform::Twilio => "Twilio runs the flows itself: it has no agents to map them to",
                _ => {
                    "Telnyx's assistant takes the call's flow as precall_flow: it has no agents to map them to"
                }
            };
            if self.default_agent.is_some() {
                return problem(MappingPart::DefaultAgent, none.into());
            }
            if !self.flow_agents.is_empty() {
                return problem(MappingPart::Flows, none.into());
            }
        }
        let id_ok = |s: &str| {
            !s.is_empty() && s.len() <= 200 && s.chars().all(|c| !c.is_control() && c != ' ')
        };
        if let Some(d) = &self.default_agent
            && !id_ok(d)
        {
            return problem(MappingPart::DefaultAgent, ID.into());
        }
        if self.flow_agents.len() > 100 {
            return problem(MappingPart::Flows, "at most 100 flows".into());
        }
        for (flow, id) in &self.flow_agents {
            if flow.is_empty()
                || flow.len() > 64
                || !flow
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return problem(MappingPart::Flows, format!("{flow:?} is not a flow key"));
            }
            if !id_ok(id) {
                return problem(MappingPart::Flow(flow.clone()), ID.into());
            }
        }
        Ok(())
    }

    /// The platform agent for a call that starts in `flow` (the default when the flow has
    /// none of its own).
    pub fn agent_for(&self, flow: Option<&str>) -> Option<&str> {
        flow.and_then(|f| self.flow_agents.get(f))
            .or(self.default_agent.as_ref())
            .map(String::as_str)
    }
}

/// An inbound call as a platform announced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    pub from: String,
    pub to: Option<String>,
    /// The platform's id of the call, when it has one yet (Retell's inbound webhook comes
    /// before its call exists).
    pub call_id: Option<String>,
}

/// What Precall reads of a JSON platform's request, read straight into these fields: the
/// rest of the body is checked as JSON and skipped, and a part of the wrong kind (a number
/// where a number's text was expected, a list where an object was) reads as missing.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct JsonRequest {
    event: Text,
    call_id: Text,
    call_inbound: Part<CallInbound>,
    message: Part<VapiMessage>,
    data: Part<TelnyxData>,
}

/// Retell's and Synthflow's `call_inbound`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CallInbound {
    from_number: Text,
    to_number: Text,
    call_id: Text,
}

/// Vapi's `message` (and its `call`, which holds the same parts).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct VapiMessage {
    r#type: Text,
    call: Part<Box<VapiMessage>>,
    id: Text,
    customer: Part<Number>,
    phone_number: Part<Number>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Number {
    number: Text,
}

/// Telnyx's `data` (and its `payload`, which holds the same parts).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TelnyxData {
    payload: Part<Box<TelnyxData>>,
    event_type: Text,
    telnyx_end_user_target: Text,
    telnyx_agent_target: Text,
    from: Text,
    to: Text,
    call_control_id: Text,
}

/// A visitor's answer to a number, a boolean or null: `$missing`.
macro_rules! scalars_read_as {
    ($missing:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($missing)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($missing)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($missing)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($missing)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($missing)
        }
    };
}

/// Text that is not blank, trimmed; anything else reads as missing, with what it was
/// instead (for the refusal to name).
#[derive(Debug, Default)]
struct Text(Option<String>, Option<&'static str>);

impl Text {
    fn not_text(was: &'static str) -> Self {
        Self(None, Some(was))
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Text;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, s: &str) -> Result<Text, E> {
                let s = s.trim();
                Ok(if s.is_empty() {
                    Text::not_text("blank")
                } else {
                    Text(Some(s.to_owned()), None)
                })
            }
            fn visit_bool<E>(self, _: bool) -> Result<Text, E> {
                Ok(Text::not_text("true or false, not text"))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Text, E> {
                Ok(Text::not_text("a number, not text"))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Text, E> {
                Ok(Text::not_text("a number, not text"))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Text, E> {
                Ok(Text::not_text("a number, not text"))
            }
            fn visit_unit<E>(self) -> Result<Text, E> {
                Ok(Text::not_text("null"))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, a: A) -> Result<Text, A::Error> {
                skip_seq(a).map(|()| Text::not_text("a list, not text"))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, a: A) -> Result<Text, A::Error> {
                skip_map(a).map(|()| Text::not_text("an object, not text"))
            }
        }
        d.deserialize_any(V)
    }
}

/// An object read into `T`; anything else reads as missing.
#[derive(Debug)]
struct Part<T>(Option<T>);

impl<T> Default for Part<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Part<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = Part<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, a: A) -> Result<Part<T>, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(a))
                    .map(|t| Part(Some(t)))
            }
            fn visit_str<E>(self, _: &str) -> Result<Part<T>, E> {
                Ok(Part(None))
            }
            scalars_read_as!(Part(None));
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, a: A) -> Result<Part<T>, A::Error> {
                skip_seq(a).map(|()| Part(None))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

fn skip_seq<'de, A: serde::de::SeqAccess<'de>>(mut a: A) -> Result<(), A::Error> {
    while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
    Ok(())
}

fn skip_map<'de, A: serde::de::MapAccess<'de>>(mut a: A) -> Result<(), A::Error> {
    while a
        .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
        .is_some()
    {}
    Ok(())
}

impl JsonRequest {
    /// What `platform`'s caller field held instead of text, if anything.
    fn caller_was(&self, platform: Platform) -> Option<&'static str> {
        match platform {
            Platform::Retell | Platform::Synthflow => {
                self.call_inbound.0.as_ref().and_then(|c| c.from_number.1)
            }
            Platform::Vapi => {
                let m = self.message.0.as_ref();
                let was = |p: Option<&Part<Number>>| p?.0.as_ref()?.number.1;
                was(m.and_then(|m| m.call.0.as_deref()).map(|c| &c.customer))
                    .or_else(|| was(m.map(|m| &m.customer)))
            }
            _ => {
                let d = self.data.0.as_ref();
                let p = d.and_then(|d| d.payload.0.as_deref());
                p.and_then(|p| p.telnyx_end_user_target.1)
                    .or_else(|| d.and_then(|d| d.telnyx_end_user_target.1))
            }
        }
    }

    /// Reads a JSON platform's request: `Err` says why the body is not JSON, `Ok(None)` that
    /// it is JSON but not an object. Parts that are skipped are skipped without recursion,
    /// however deeply they nest.
    pub fn parse(body: &[u8]) -> Result<Option<Self>, serde_json::Error> {
        serde_json::from_slice::<Part<Self>>(body).map(|p| p.0)
    }

    /// The call id Synthflow signs: `call_id`, at the top or in `call_inbound`.
    pub fn synthflow_call_id(&self) -> Option<&str> {
        (self.call_id.0.as_deref()).or_else(|| self.call_inbound.0.as_ref()?.call_id.0.as_deref())
    }

    /// A Vapi message that wants no answer (`status-update`, `end-of-call-report`…): its type.
    /// Vapi sends an assistant's messages to the phone number's server URL when the
    /// assistant has none of its own, so they reach the connection as well as
    /// `assistant-request`; they are acknowledged and start nothing. Only the types Vapi
    /// lists as informational are: one that wants an answer Precall does not give
    /// (`tool-calls`, `transfer-destination-request`…), or one Vapi adds later, is refused,
    /// so that Vapi's logs say why.
    /// <https://docs.vapi.ai/api-reference/messages/server-message>,
    /// <https://docs.vapi.ai/server-url/events>
    pub fn vapi_notice(&self) -> Option<&str> {
        const NOTICES: [&str; 24] = [
            "assistant.speechStarted",
            "assistant.started",
            "call.artifact.upload",
            "call.delete.failed",
            "call.deleted",
            "chat.created",
            "chat.deleted",
            "conversation-update",
            "end-of-call-report",
            "hang",
            "language-change-detected",
            "language-changed",
            "model-output",
            "session.created",
            "session.deleted",
            "session.updated",
            "speech-update",
            "status-update",
            "transcript",
            "transcript[transcriptType='final']",
            "transcript[transcriptType=\"final\"]",
            "transfer-update",
            "user-interrupted",
            "voice-input",
        ];
        let kind = self.message.0.as_ref()?.r#type.0.as_deref()?;
        NOTICES.contains(&kind).then_some(kind)
    }

    /// Reads the request as `platform` sends it: who calls, which number, the call's id.
    /// `Err` names what is missing.
    pub fn inbound(&self, platform: Platform) -> Result<Inbound, String> {
        let text = |t: &Text| t.0.clone();
        let (from, to, id) = match platform {
            // https://docs.retellai.com/features/inbound-call-webhook
            // https://docs.synthflow.ai/inbound-webhook-api
            Platform::Retell | Platform::Synthflow => {
                // Retell sends its inbound chats (SMS) to the same webhook.
                if let Some(event) = text(&self.event)
                    && platform == Platform::Retell
                    && event != "call_inbound"
                {
                    return Err(format!(
                        "event is {event:?}: this URL answers call_inbound, Retell's inbound calls"
                    ));
                }
                let c = self.call_inbound.0.as_ref();
                (
                    c.and_then(|c| text(&c.from_number)),
                    c.and_then(|c| text(&c.to_number)),
                    if platform == Platform::Synthflow {
                        self.synthflow_call_id().map(str::to_owned)
                    } else {
                        None
                    },
                )
            }
            // https://docs.vapi.ai/server-url/events (assistant-request)
            Platform::Vapi => {
                let m = self.message.0.as_ref();
                let kind = m.and_then(|m| m.r#type.0.as_deref());
                if kind != Some("assistant-request") {
                    let was = match (m, kind) {
                        (None, _) => return Err(
                            "message is missing or not an object: this URL answers Vapi's assistant-request messages".into(),
                        ),
                        (Some(_), Some(k)) => format!("{k:?}"),
                        (Some(m), None) => m.r#type.1.unwrap_or("missing").to_owned(),
                    };
                    return Err(format!(
                        "message.type is {was}: this URL answers assistant-request messages"
                    ));
                }
                let call = m.and_then(|m| m.call.0.as_deref());
                let number = |p: Option<&Part<Number>>| p?.0.as_ref().and_then(|n| text(&n.number));
                (
                    number(call.map(|c| &c.customer)).or_else(|| number(m.map(|m| &m.customer))),
                    number(m.map(|m| &m.phone_number))
                        .or_else(|| number(call.map(|c| &c.phone_number))),
                    call.and_then(|c| text(&c.id)),
                )
            }
            // https://developers.telnyx.com/docs/inference/ai-assistants/dynamic-variables
            Platform::Telnyx => {
                let d = self.data.0.as_ref();
                // The dynamic-variables webhook is `assistant.initialization`; another event
                // (a call's hangup, say) starts no call.
                if let Some(kind) = d.and_then(|d| text(&d.event_type))
                    && kind != "assistant.initialization"
                {
                    return Err(format!(
                        "data.event_type is {kind:?}: this URL answers assistant.initialization"
                    ));
                }
                let p = d.and_then(|d| d.payload.0.as_deref());
                // The first of these parts (`data.payload`'s or `data`'s) that holds text.
                let at = |t: Option<&TelnyxData>, f: fn(&TelnyxData) -> &Text| {
                    t.and_then(|t| text(f(t)))
                };
                (
                    at(p, |t| &t.telnyx_end_user_target)
                        .or_else(|| at(d, |t| &t.telnyx_end_user_target))
                        .or_else(|| at(p, |t| &t.from)),
                    at(p, |t| &t.telnyx_agent_target)
                        .or_else(|| at(d, |t| &t.telnyx_agent_target))
                        .or_else(|| at(p, |t| &t.to)),
                    at(p, |t| &t.call_control_id).or_else(|| at(d, |t| &t.call_control_id)),
                )
            }
            Platform::Twilio => return Err("Twilio posts a form, not JSON".into()),
        };
        let from = from.ok_or_else(|| {
            let was = self.caller_was(platform);
            format!(
                "{} is {}",
                platform.caller_field(),
                was.unwrap_or("missing")
            )
        })?;
        Ok(Inbound {
            from,
            to,
            call_id: id,
        })
    }
}

/// Reads Twilio's incoming-call form (https://www.twilio.com/docs/voice/twiml#request-parameters).
pub fn twilio_inbound(form: &[(String, String)]) -> Result<Inbound, String> {
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    Ok(Inbound {
        from: get("From").ok_or("the From field is missing")?,
        to: get("To"),
        call_id: get("CallSid"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn a_mappings_problem_names_its_part_as_the_api_does() {
        let mut m = Mapping {
            default_agent: Some("agent x".into()),
            ..Mapping::default()
        };
        let e = m.check(Platform::Retell).unwrap_err();
        assert_eq!(e.part, MappingPart::DefaultAgent);
        assert_eq!(
            e.to_string(),
            "defaultAgent: 1 to 200 characters, no spaces"
        );
        m.default_agent = None;
        m.flow_agents.insert("main".into(), String::new());
        let e = m.check(Platform::Retell).unwrap_err();
        assert_eq!(e.part, MappingPart::Flow("main".into()));
        assert_eq!(
            e.to_string(),
            "flowAgents/main: 1 to 200 characters, no spaces"
        );
        m.flow_agents = [("no key!".to_owned(), "a".to_owned())].into();
        assert_eq!(
            m.check(Platform::Retell).unwrap_err().to_string(),
            "flowAgents: \"no key!\" is not a flow key"
        );
    }

    fn inbound_of(platform: Platform, body: &Value) -> Result<Inbound, String> {
        match JsonRequest::parse(&serde_json::to_vec(body).unwrap()).unwrap() {
            Some(request) => request.inbound(platform),
            None => Err("not an object".into()),
        }
    }

    #[test]
    fn each_platform_names_caller_called_and_call() {
        let retell = json!({"event": "call_inbound", "call_inbound": {"agent_id": "a", "from_number": "+12137771234", "to_number": "+12137771235"}});
        assert_eq!(
            inbound_of(Platform::Retell, &retell).unwrap(),
            Inbound {
                from: "+12137771234".into(),
                to: Some("+12137771235".into()),
                call_id: None
            }
        );
        let vapi = json!({"message": {"type": "assistant-request", "call": {"id": "c1", "customer": {"number": "+1555"}}, "phoneNumber": {"number": "+1666"}}});
        let v = inbound_of(Platform::Vapi, &vapi).unwrap();
        assert_eq!(
            (v.from.as_str(), v.to.as_deref(), v.call_id.as_deref()),
            ("+1555", Some("+1666"), Some("c1"))
        );
        let other = json!({"message": {"type": "status-update"}});
        let parsed = JsonRequest::parse(other.to_string().as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(parsed.vapi_notice(), Some("status-update"));
        for notice in ["assistant.speechStarted", "call.artifact.upload"] {
            let m = json!({"message": {"type": notice}}).to_string();
            let parsed = JsonRequest::parse(m.as_bytes()).unwrap().unwrap();
            assert_eq!(parsed.vapi_notice(), Some(notice));
        }
        for wants_an_answer in [
            "assistant-request",
            "tool-calls",
            "handoff-destination-request",
            "phone-call-control",
            "",
        ] {
            let m = json!({"message": {"type": wants_an_answer}}).to_string();
            let parsed = JsonRequest::parse(m.as_bytes()).unwrap().unwrap();
            assert_eq!(parsed.vapi_notice(), None, "{wants_an_answer}");
        }
        assert!(
            inbound_of(Platform::Vapi, &other)
                .unwrap_err()
                .contains("status-update")
        );
        let telnyx = json!({"data": {"event_type": "assistant.initialization", "payload": {"telnyx_end_user_target": "+1777", "telnyx_agent_target": "+1888", "call_control_id": "v3:x"}}});
        let t = inbound_of(Platform::Telnyx, &telnyx).unwrap();
        assert_eq!(
            (t.from.as_str(), t.to.as_deref(), t.call_id.as_deref()),
            ("+1777", Some("+1888"), Some("v3:x"))
        );
        let flat = json!({"data": {"telnyx_end_user_target": " +1777 ", "payload": {"from": "+1999", "to": "+1888"}, "call_control_id": "v3:y"}});
        let t = inbound_of(Platform::Telnyx, &flat).unwrap();
        assert_eq!(
            (t.from.as_str(), t.to.as_deref(), t.call_id.as_deref()),
            ("+1777", Some("+1888"), Some("v3:y"))
        );
        let synthflow = json!({"call_inbound": {"from_number": "+1555", "call_id": "inner"}});
        assert_eq!(
            inbound_of(Platform::Synthflow, &synthflow)
                .unwrap()
                .call_id
                .as_deref(),
            Some("inner")
        );
        assert!(inbound_of(Platform::Retell, &json!({})).is_err());
    }

    #[test]
    fn parts_of_the_wrong_kind_read_as_missing_and_are_named() {
        for (body, why) in [
            (
                json!({"call_inbound": "text", "message": [1, {"a": 2}], "data": 7}),
                "missing",
            ),
            (
                json!({"call_inbound": {"from_number": 12137771234i64, "to_number": ["+1"]}}),
                "a number, not text",
            ),
            (
                json!({"call_inbound": {"from_number": "   ", "extra": {"deep": [null, true]}}}),
                "blank",
            ),
            (
                json!({"call_inbound": {"from_number": [[[[[["+1"]]]]]]}}),
                "a list, not text",
            ),
            (json!({"call_inbound": {"from_number": null}}), "null"),
            (
                json!({"call_inbound": {"from_number": {"e164": "+1"}}}),
                "an object, not text",
            ),
        ] {
            assert_eq!(
                inbound_of(Platform::Retell, &body).unwrap_err(),
                format!("call_inbound.from_number is {why}"),
                "{body}"
            );
        }
        let vapi =
            json!({"message": {"type": "assistant-request", "call": {"customer": {"number": 1}}}});
        assert_eq!(
            inbound_of(Platform::Vapi, &vapi).unwrap_err(),
            "message.call.customer.number is a number, not text"
        );
        let telnyx = json!({"data": {"payload": {"telnyx_end_user_target": true}}});
        assert_eq!(
            inbound_of(Platform::Telnyx, &telnyx).unwrap_err(),
            "data.payload.telnyx_end_user_target is true or false, not text"
        );
        let vapi = json!({"message": {"type": 5}});
        assert_eq!(
            inbound_of(Platform::Vapi, &vapi).unwrap_err(),
            "message.type is a number, not text: this URL answers assistant-request messages"
        );
        assert!(JsonRequest::parse(b"{\"call_inbound\": {").is_err());
        assert!(JsonRequest::parse(b"[1, 2]").unwrap().is_none());
    }

    #[test]
    fn a_flow_without_its_own_agent_takes_the_default() {
        let m = Mapping {
            default_agent: Some("agent_main".into()),
            flow_agents: [("sales".to_owned(), "agent_sales".to_owned())].into(),
        };
        assert_eq!(m.agent_for(Some("sales")), Some("agent_sales"));
        assert_eq!(m.agent_for(Some("support")), Some("agent_main"));
        assert_eq!(m.agent_for(None), Some("agent_main"));
        assert!(m.check(Platform::Retell).is_ok());
        let bad = Mapping {
            default_agent: Some("has space".into()),
            ..Mapping::default()
        };
        assert!(bad.check(Platform::Retell).is_err());
        // Twilio runs the flows itself: a mapping there means nothing, and is refused.
        assert_eq!(
            m.check(Platform::Twilio).unwrap_err().part,
            MappingPart::DefaultAgent
        );
        assert!(Mapping::default().check(Platform::Twilio).is_ok());
        assert_eq!(
            m.check(Platform::Telnyx).unwrap_err().part,
            MappingPart::DefaultAgent
        );
    }

    #[test]
    fn waits_are_capped_below_each_deadline() {
        for p in Platform::ALL {
            assert!(wait_cap(p, p.deadline_ms()) < Duration::from_millis(p.deadline_ms() as u64));
            assert!(p.margin_ms() > 0);
        }
        assert_eq!(
            wait_cap(Platform::Telnyx, 1500),
            Duration::from_millis(1200)
        );
    }
}
