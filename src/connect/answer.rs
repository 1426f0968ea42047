//! A started call's answer in each JSON platform's format.

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

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

    /// Precall's own variables: `precall_call_id`, `precall_source`, `precall_flow` and,
    /// when there is one, `precall_greeting`.
    fn own_variables(&self) -> [(&'static str, Option<&str>); 4] {
        [
            ("precall_call_id", Some(&self.call_id)),
            ("precall_source", Some(&self.source)),
            ("precall_flow", self.entry_flow()),
            ("precall_greeting", self.greeting.as_deref()),
        ]
    }

    /// What Precall says of the call in the platform's metadata.
    fn metadata(&self) -> Metadata<'_> {
        Metadata {
            precall_call_id: &self.call_id,
            precall_source: &self.source,
            precall_version: self.version,
        }
    }

    /// What the refusing End Call said (its message), or a plain sentence.
    fn refusal_message(&self) -> &str {
        self.refused_by()
            .and_then(|s| s.said.as_deref())
            .unwrap_or("Sorry, this call cannot be taken.")
    }
}

#[derive(Serialize)]
struct Metadata<'a> {
    precall_call_id: &'a str,
    precall_source: &'a str,
    precall_version: Option<i64>,
}

/// The call's variables as text, as platforms whose dynamic variables are strings take them
/// (a list is said as its items joined by commas; an empty value is ""), with Precall's own
/// (see [`CallOutcome::own_variables`]) and `extra`, which win over a variable of the same
/// name. Written as they are serialised: no map is built.
struct TextVariables<'a> {
    call: &'a CallOutcome,
    extra: &'a [(&'static str, &'a str)],
}

impl Serialize for TextVariables<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let own = self.call.own_variables();
        let ours = |k: &str| {
            own.iter().any(|(n, v)| *n == k && v.is_some())
                || self.extra.iter().any(|(n, _)| *n == k)
        };
        let mut m = s.serialize_map(None)?;
        for (k, v) in &self.call.variables {
            if !ours(k) {
                m.serialize_entry(k, &spoken(v).unwrap_or_default())?;
            }
        }
        let own = own.iter().filter_map(|(k, v)| v.map(|v| (*k, v)));
        for (k, v) in own.chain(self.extra.iter().copied()) {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[derive(Serialize)]
struct CallInbound<T> {
    call_inbound: T,
}

#[derive(Serialize)]
struct RetellInbound<'a> {
    metadata: Metadata<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dynamic_variables: Option<TextVariables<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    override_agent_id: Option<&'a str>,
}

#[derive(Serialize)]
struct SynthflowInbound<'a> {
    override_model_id: &'a str,
    custom_variables: TextVariables<'a>,
    metadata: Metadata<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum VapiAnswer<'a> {
    Error {
        error: &'a str,
    },
    Transfer {
        destination: VapiNumber<'a>,
    },
    #[serde(rename_all = "camelCase")]
    Assistant {
        assistant_id: &'a str,
        assistant_overrides: VapiOverrides<'a>,
    },
}

#[derive(Serialize)]
struct VapiNumber<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    number: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VapiOverrides<'a> {
    variable_values: TextVariables<'a>,
}

#[derive(Serialize)]
struct TelnyxAnswer<'a> {
    dynamic_variables: TextVariables<'a>,
}

fn to_json<T: Serialize>(answer: &T) -> String {
    serde_json::to_string(answer).expect("an answer serialises")
}

/// The JSON answer of a JSON platform, and a note for the Test viewer when the answer is
/// not what the admin may expect (no agent mapped, say).
pub fn json_answer(
    platform: Platform,
    call: &CallOutcome,
    mapping: &Mapping,
) -> (String, Option<String>) {
    let refused = call.refused_by().is_some();
    let agent = mapping.agent_for(call.entry_flow());
    let vars = |extra| TextVariables { call, extra };
    match platform {
        // https://docs.retellai.com/features/inbound-call-webhook: fields grouped under
        // call_inbound; a call left without an agent (no override, and no Inbound Call Agent
        // on the number) is not taken.
        Platform::Retell => {
            if refused {
                let inbound = RetellInbound {
                    metadata: call.metadata(),
                    dynamic_variables: None,
                    override_agent_id: None,
                };
                return (
                    to_json(&CallInbound { call_inbound: inbound }),
                    Some("refused: no agent given (leave the number's Inbound Call Agent unset so that Retell declines)".into()),
                );
            }
            let inbound = RetellInbound {
                metadata: call.metadata(),
                dynamic_variables: Some(vars(&[])),
                override_agent_id: agent,
            };
            (
                to_json(&CallInbound {
                    call_inbound: inbound,
                }),
                None,
            )
        }
        // https://docs.synthflow.ai/inbound-webhook-api: an empty call_inbound disconnects
        // the call; override_model_id "" keeps the agent that received it.
        Platform::Synthflow => {
            if refused {
                return (
                    r#"{"call_inbound":{}}"#.to_owned(),
                    Some("refused: an empty call_inbound disconnects the call".into()),
                );
            }
            let inbound = SynthflowInbound {
                override_model_id: agent.unwrap_or(""),
                custom_variables: vars(&[]),
                metadata: call.metadata(),
            };
            (
                to_json(&CallInbound {
                    call_inbound: inbound,
                }),
                None,
            )
        }
        // https://docs.vapi.ai/server-url/events: an assistant, a transfer destination, or
        // an error spoken to the caller.
        Platform::Vapi => {
            if refused {
                let error = call.refusal_message();
                return (to_json(&VapiAnswer::Error { error }), None);
            }
            if let Some(t) = &call.transfer
                && call.status == "ended"
                && let Some(number) = &t.destination
            {
                let destination = VapiNumber {
                    kind: "number",
                    number,
                    message: &t.message,
                };
                return (to_json(&VapiAnswer::Transfer { destination }), None);
            }
            match agent {
                Some(a) => {
                    let answer = VapiAnswer::Assistant {
                        assistant_id: a,
                        assistant_overrides: VapiOverrides {
                            variable_values: vars(&[]),
                        },
                    };
                    (to_json(&answer), None)
                }
                None => (
                    to_json(&VapiAnswer::Error {
                        error: "Sorry, this number is not ready to take calls.",
                    }),
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
            if refused {
                let extra = [
                    ("precall_refused", "true"),
                    ("precall_message", call.refusal_message()),
                ];
                let answer = TelnyxAnswer {
                    dynamic_variables: vars(&extra),
                };
                return (
                    to_json(&answer),
                    Some(
                        "refused: told in precall_refused (Telnyx's webhook cannot decline a call)"
                            .into(),
                    ),
                );
            }
            let answer = TelnyxAnswer {
                dynamic_variables: vars(&[("precall_refused", "false")]),
            };
            (to_json(&answer), None)
        }
        Platform::Twilio => ("null".to_owned(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(platform: Platform, call: &CallOutcome, mapping: &Mapping) -> Value {
        serde_json::from_str(&json_answer(platform, call, mapping).0).unwrap()
    }

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
        let a = answer(Platform::Retell, &c, &m);
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
        let r = answer(Platform::Retell, &c, &m);
        assert!(r["call_inbound"].get("override_agent_id").is_none());
        assert!(r["call_inbound"].get("dynamic_variables").is_none());
        assert_eq!(
            answer(Platform::Synthflow, &c, &m),
            json!({"call_inbound": {}})
        );
        assert_eq!(answer(Platform::Vapi, &c, &m), json!({"error": "Goodbye."}));
        assert_eq!(
            answer(Platform::Telnyx, &c, &m)["dynamic_variables"]["precall_refused"],
            "true"
        );
    }
}
