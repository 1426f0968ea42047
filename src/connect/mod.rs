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
use serde_json::Value;

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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mapping {
    /// The platform agent that takes calls no pre-call Filter routed elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 200)]
    pub default_agent: Option<String>,
    /// The platform agent of each flow (by flow key) a pre-call Filter may route to.
    #[serde(default)]
    pub flow_agents: BTreeMap<String, String>,
}

impl Mapping {
    /// Checks ids: 1 to 200 visible characters, flow keys as documents have them.
    pub fn check(&self) -> Result<(), String> {
        let id_ok = |s: &str| {
            !s.is_empty() && s.len() <= 200 && s.chars().all(|c| !c.is_control() && c != ' ')
        };
        if let Some(d) = &self.default_agent
            && !id_ok(d)
        {
            return Err("defaultAgent: 1 to 200 characters, no spaces".into());
        }
        if self.flow_agents.len() > 100 {
            return Err("flowAgents: at most 100 flows".into());
        }
        for (flow, id) in &self.flow_agents {
            if flow.is_empty()
                || flow.len() > 64
                || !flow
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(format!("flowAgents: {flow:?} is not a flow key"));
            }
            if !id_ok(id) {
                return Err(format!("flowAgents/{flow}: 1 to 200 characters, no spaces"));
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

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        _ => None,
    }
}

/// The first of these JSON pointers that holds text.
fn first(v: &Value, pointers: &[&str]) -> Option<String> {
    pointers.iter().find_map(|p| v.pointer(p).and_then(text))
}

/// Reads a JSON platform's request: who calls, which number, the call's id. `Err` names what
/// is missing.
pub fn inbound_of(platform: Platform, body: &Value) -> Result<Inbound, String> {
    let (from, to, id) = match platform {
        // https://docs.retellai.com/features/inbound-call-webhook
        Platform::Retell => (
            first(body, &["/call_inbound/from_number"]),
            first(body, &["/call_inbound/to_number"]),
            None,
        ),
        // https://docs.synthflow.ai/inbound-webhook-api
        Platform::Synthflow => (
            first(body, &["/call_inbound/from_number"]),
            first(body, &["/call_inbound/to_number"]),
            synthflow_call_id(body),
        ),
        // https://docs.vapi.ai/server-url/events (assistant-request)
        Platform::Vapi => {
            let kind = body.pointer("/message/type").and_then(Value::as_str);
            if kind != Some("assistant-request") {
                return Err(format!(
                    "message.type is {}: this URL answers assistant-request messages",
                    kind.map_or("missing".to_owned(), |k| format!("{k:?}"))
                ));
            }
            (
                first(
                    body,
                    &["/message/call/customer/number", "/message/customer/number"],
                ),
                first(
                    body,
                    &[
                        "/message/phoneNumber/number",
                        "/message/call/phoneNumber/number",
                    ],
                ),
                first(body, &["/message/call/id"]),
            )
        }
        // https://developers.telnyx.com/docs/inference/ai-assistants/dynamic-variables
        Platform::Telnyx => (
            first(
                body,
                &[
                    "/data/payload/telnyx_end_user_target",
                    "/data/telnyx_end_user_target",
                    "/data/payload/from",
                ],
            ),
            first(
                body,
                &[
                    "/data/payload/telnyx_agent_target",
                    "/data/telnyx_agent_target",
                    "/data/payload/to",
                ],
            ),
            first(
                body,
                &["/data/payload/call_control_id", "/data/call_control_id"],
            ),
        ),
        Platform::Twilio => return Err("Twilio posts a form, not JSON".into()),
    };
    let from = from.ok_or_else(|| match platform {
        Platform::Retell | Platform::Synthflow => "call_inbound.from_number is missing".to_owned(),
        Platform::Vapi => "message.call.customer.number is missing".to_owned(),
        _ => "data.payload.telnyx_end_user_target is missing".to_owned(),
    })?;
    Ok(Inbound {
        from,
        to,
        call_id: id,
    })
}

/// The call id Synthflow signs: `call_id`, at the top or in `call_inbound`.
pub fn synthflow_call_id(body: &Value) -> Option<String> {
    first(body, &["/call_id", "/call_inbound/call_id"])
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
    use serde_json::json;

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
        assert!(
            inbound_of(Platform::Vapi, &other)
                .unwrap_err()
                .contains("status-update")
        );
        let telnyx = json!({"data": {"event_type": "assistant.initialization", "payload": {"telnyx_end_user_target": "+1777", "telnyx_agent_target": "+1888", "call_control_id": "v3:x"}}});
        let t = inbound_of(Platform::Telnyx, &telnyx).unwrap();
        assert_eq!(
            (t.from.as_str(), t.call_id.as_deref()),
            ("+1777", Some("v3:x"))
        );
        assert!(inbound_of(Platform::Retell, &json!({})).is_err());
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
        assert!(m.check().is_ok());
        let bad = Mapping {
            default_agent: Some("has space".into()),
            ..Mapping::default()
        };
        assert!(bad.check().is_err());
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
