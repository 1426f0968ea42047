//! A started call's answer in each JSON platform's format.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Mapping, Platform};
use crate::domain::runtime::{Question, Step, Transfer};
use crate::domain::template::spoken;

/// What a connection needs of a started (or continued) call: the runtime API's answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallOutcome {
    pub call_id: String,
    pub source: String,
    #[serde(default)]
    pub variables: Map<String, Value>,
    #[serde(default)]
    pub greeting: Option<String>,
    #[serde(default)]
    pub steps: Vec<Step>,
    #[serde(default)]
    pub question: Option<Question>,
    pub status: String,
    #[serde(default)]
    pub outcome: Option<String>,
    #[serde(default)]
    pub transfer: Option<Transfer>,
    #[serde(default)]
    pub version: Option<i64>,
}

impl CallOutcome {
    pub fn parse(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// The pre-call End Call that refused the call, if one did.
    pub fn refused_by(&self) -> Option<&Step> {
        self.steps
            .iter()
            .find(|s| s.kind == "precall_end_call" && s.case.is_none() && s.skipped.is_none())
    }

    /// The flow the call started in (a pre-call Filter's route, or the First Flow).
    pub fn entry_flow(&self) -> Option<&str> {
        self.steps
            .iter()
            .find(|s| s.kind == "greeting" || s.kind == "start")
            .and_then(|s| s.flow_key.as_deref())
    }

    /// Whether a pre-call Filter routed the call.
    pub fn routed(&self) -> bool {
        self.steps
            .iter()
            .any(|s| s.kind == "precall_filter" && s.flow_key.is_some())
    }

    /// The call's variables as text, as platforms whose dynamic variables are strings take
    /// them (a list is said as its items joined by commas; an empty value is ""), with
    /// Precall's own: `precall_call_id`, `precall_source`, `precall_flow` and, when there is
    /// one, `precall_greeting`.
    pub fn text_variables(&self) -> Map<String, Value> {
        let mut out: Map<String, Value> = self
            .variables
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(spoken(v).unwrap_or_default())))
            .collect();
        out.insert("precall_call_id".into(), self.call_id.clone().into());
        out.insert("precall_source".into(), self.source.clone().into());
        if let Some(flow) = self.entry_flow() {
            out.insert("precall_flow".into(), flow.into());
        }
        if let Some(g) = &self.greeting {
            out.insert("precall_greeting".into(), g.clone().into());
        }
        out
    }

    /// What Precall says of the call in the platform's metadata.
    fn metadata(&self) -> Value {
        json!({
            "precall_call_id": self.call_id,
            "precall_source": self.source,
            "precall_version": self.version,
        })
    }

    /// What the refusing End Call said (its message), or a plain sentence.
    fn refusal_message(&self) -> String {
        self.refused_by()
            .and_then(|s| s.said.clone())
            .unwrap_or_else(|| "Sorry, this call cannot be taken.".to_owned())
    }
}

/// The JSON answer of a JSON platform, and a note for the Test viewer when the answer is
/// not what the admin may expect (no agent mapped, say).
pub fn json_answer(
    platform: Platform,
    call: &CallOutcome,
    mapping: &Mapping,
) -> (Value, Option<String>) {
    let refused = call.refused_by().is_some();
    let agent = mapping.agent_for(call.entry_flow());
    match platform {
        // https://docs.retellai.com/features/inbound-call-webhook: fields grouped under
        // call_inbound; a call left without an agent (no override, and no Inbound Call Agent
        // on the number) is not taken.
        Platform::Retell => {
            let mut inbound = Map::new();
            inbound.insert("metadata".into(), call.metadata());
            if refused {
                return (
                    json!({ "call_inbound": inbound }),
                    Some("refused: no agent given (leave the number's Inbound Call Agent unset so that Retell declines)".into()),
                );
            }
            inbound.insert(
                "dynamic_variables".into(),
                Value::Object(call.text_variables()),
            );
            if let Some(a) = agent {
                inbound.insert("override_agent_id".into(), a.into());
            }
            (json!({ "call_inbound": inbound }), None)
        }
        // https://docs.synthflow.ai/inbound-webhook-api: an empty call_inbound disconnects
        // the call; override_model_id "" keeps the agent that received it.
        Platform::Synthflow => {
            if refused {
                return (
                    json!({ "call_inbound": {} }),
                    Some("refused: an empty call_inbound disconnects the call".into()),
                );
            }
            (
                json!({ "call_inbound": {
                    "override_model_id": agent.unwrap_or(""),
                    "custom_variables": call.text_variables(),
                    "metadata": call.metadata(),
                }}),
                None,
            )
        }
        // https://docs.vapi.ai/server-url/events: an assistant, a transfer destination, or
        // an error spoken to the caller.
        Platform::Vapi => {
            if refused {
                return (json!({ "error": call.refusal_message() }), None);
            }
            if let Some(t) = &call.transfer
                && call.status == "ended"
                && let Some(number) = &t.destination
            {
                return (
                    json!({ "destination": { "type": "number", "number": number, "message": t.message } }),
                    None,
                );
            }
            match agent {
                Some(a) => (
                    json!({
                        "assistantId": a,
                        "assistantOverrides": { "variableValues": call.text_variables() },
                    }),
                    None,
                ),
                None => (
                    json!({ "error": "Sorry, this number is not ready to take calls." }),
                    Some(
                        "no Vapi assistant is mapped: give the connection a default assistant id"
                            .into(),
                    ),
                ),
            }
        }
        // https://developers.telnyx.com/docs/inference/ai-assistants/dynamic-variables: the
        // variables under a top-level dynamic_variables. The webhook cannot decline a call:
        // a refusal is told in precall_refused and precall_message.
        Platform::Telnyx => {
            let mut vars = call.text_variables();
            if refused {
                vars.insert("precall_refused".into(), "true".into());
                vars.insert("precall_message".into(), call.refusal_message().into());
                return (
                    json!({ "dynamic_variables": vars }),
                    Some(
                        "refused: told in precall_refused (Telnyx's webhook cannot decline a call)"
                            .into(),
                    ),
                );
            }
            vars.insert("precall_refused".into(), "false".into());
            (json!({ "dynamic_variables": vars }), None)
        }
        Platform::Twilio => (Value::Null, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(steps: Value, extra: Value) -> CallOutcome {
        let mut v = json!({
            "callId": "call_1", "source": "webhook", "status": "active",
            "variables": {"customer_name": "Ada", "budget": 12000, "vip": true, "tags": ["a", "b"], "none": null},
            "greeting": "Hello Ada", "steps": steps, "version": 2
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn retell_gets_strings_metadata_and_the_routed_agent() {
        let c = call(
            json!([{"kind": "precall_filter", "flow": "VIP", "flowKey": "vip", "case": "Case 1"},
                   {"kind": "start", "flowKey": "vip"}]),
            json!({}),
        );
        let m = Mapping {
            default_agent: Some("agent_main".into()),
            flow_agents: [("vip".to_owned(), "agent_vip".to_owned())].into(),
        };
        let (a, _) = json_answer(Platform::Retell, &c, &m);
        let i = &a["call_inbound"];
        assert_eq!(i["override_agent_id"], "agent_vip");
        assert_eq!(i["dynamic_variables"]["budget"], "12000");
        assert_eq!(i["dynamic_variables"]["vip"], "true");
        assert_eq!(i["dynamic_variables"]["tags"], "a, b");
        assert_eq!(i["dynamic_variables"]["none"], "");
        assert_eq!(i["metadata"]["precall_call_id"], "call_1");
        assert!(
            i["dynamic_variables"]
                .as_object()
                .unwrap()
                .values()
                .all(Value::is_string)
        );
    }

    #[test]
    fn a_pre_call_end_call_refuses_by_each_platforms_means() {
        let c = call(
            json!([{"kind": "precall_end_call", "flow": "Block", "said": "Goodbye.", "why": "risk"}]),
            json!({"status": "ended", "outcome": "refused"}),
        );
        let m = Mapping {
            default_agent: Some("agent_main".into()),
            ..Mapping::default()
        };
        let (r, _) = json_answer(Platform::Retell, &c, &m);
        assert!(r["call_inbound"].get("override_agent_id").is_none());
        assert!(r["call_inbound"].get("dynamic_variables").is_none());
        assert_eq!(
            json_answer(Platform::Synthflow, &c, &m).0,
            json!({"call_inbound": {}})
        );
        assert_eq!(
            json_answer(Platform::Vapi, &c, &m).0,
            json!({"error": "Goodbye."})
        );
        assert_eq!(
            json_answer(Platform::Telnyx, &c, &m).0["dynamic_variables"]["precall_refused"],
            "true"
        );
    }
}
