//! Flows: block kinds, their settings, and their connections.
//!
//! A block's settings are a JSON object stored with it; connections are the ids of the
//! blocks of the same flow that come next (`next`, a Filter case's `next`, `else`).

use serde_json::{Map, Value, json};

/// A kind of block, as the editor offers it.
pub struct Kind {
    pub kind: &'static str,
    pub label: &'static str,
    pub about: &'static str,
    /// Whether an admin can add it (entries are made with their flow).
    pub addable: bool,
}

pub const KINDS: [Kind; 8] = [
    Kind {
        kind: "greeting",
        label: "Greeting",
        about: "What the agent says when the call is answered (the First Flow's entry).",
        addable: false,
    },
    Kind {
        kind: "start",
        label: "Start",
        about: "Where a flow entered by Transfer Flow begins; may say something.",
        addable: false,
    },
    Kind {
        kind: "talk",
        label: "Talk",
        about: "Says a message.",
        addable: true,
    },
    Kind {
        kind: "collect",
        label: "Collect",
        about: "Asks for one variable; skipped when it already has a value.",
        addable: true,
    },
    Kind {
        kind: "filter",
        label: "Filter",
        about: "Routes on conditions, case by case, with an Else.",
        addable: true,
    },
    Kind {
        kind: "transfer_call",
        label: "Transfer Call",
        about: "Hands the call to a number or department.",
        addable: true,
    },
    Kind {
        kind: "transfer_flow",
        label: "Transfer Flow",
        about: "Continues in another flow, at its Start.",
        addable: true,
    },
    Kind {
        kind: "end_call",
        label: "End Call",
        about: "Says a last message and ends the call with an outcome.",
        addable: true,
    },
];

pub fn kind(kind: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.kind == kind)
}

pub fn label(kind_name: &str) -> &'static str {
    kind(kind_name).map_or("Block", |k| k.label)
}

/// Settings of a new block of `kind`.
pub fn default_config(kind: &str) -> Value {
    match kind {
        "talk" => json!({ "message": "", "next": null }),
        "collect" => json!({ "variable": "", "prompt": "", "next": null }),
        "filter" => json!({ "cases": [], "else": null }),
        "transfer_call" => json!({ "destination": "", "department": "", "message": "" }),
        "transfer_flow" => json!({ "flow": null }),
        "end_call" => json!({ "message": "", "outcome": "completed" }),
        _ => json!({ "message": "", "next": null }),
    }
}

/// Comparison operators of Filter conditions, as written in the editor.
pub const OPERATORS: [(&str, &str); 7] = [
    ("exists", "exists"),
    ("not_exists", "does not exist"),
    ("equals", "equals"),
    ("not_equals", "does not equal"),
    ("greater_than", "greater than"),
    ("less_than", "less than"),
    ("contains", "contains"),
];

/// Operators that take no value.
pub fn unary(op: &str) -> bool {
    matches!(op, "exists" | "not_exists")
}

/// Reads Filter conditions written one per line: `variable operator [value]`, where a value
/// is a number, `true`/`false`, or text (in double quotes to keep it text, like `"42"`).
pub fn parse_conditions(text: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.splitn(2, char::is_whitespace);
        let variable = parts.next().unwrap_or_default();
        let rest = parts.next().unwrap_or_default().trim();
        let (op, value_text) = OPERATORS
            .iter()
            .filter_map(|(op, words)| {
                [*op, *words].into_iter().find_map(|w| {
                    rest.strip_prefix(w)
                        .filter(|r| r.is_empty() || r.starts_with(char::is_whitespace))
                        .map(|r| (*op, r.trim()))
                })
            })
            .max_by_key(|(op, _)| op.len())
            .ok_or_else(|| {
                format!(
                    "line {}: {line:?} needs an operator: exists, does not exist, equals, \
                     does not equal, greater than, less than or contains",
                    n + 1
                )
            })?;
        if unary(op) {
            if !value_text.is_empty() {
                return Err(format!("line {}: {op} takes no value", n + 1));
            }
            out.push(json!({ "variable": variable, "op": op }));
            continue;
        }
        if value_text.is_empty() {
            return Err(format!("line {}: {op} needs a value", n + 1));
        }
        out.push(json!({ "variable": variable, "op": op, "value": parse_value(value_text) }));
    }
    Ok(out)
}

fn parse_value(text: &str) -> Value {
    if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        return Value::String(inner.to_owned());
    }
    match text {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    serde_json::from_str::<serde_json::Number>(text)
        .map(Value::Number)
        .unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// Filter conditions back as editable lines.
pub fn format_conditions(conditions: &[Value]) -> String {
    conditions
        .iter()
        .map(|c| {
            let words = OPERATORS
                .iter()
                .find(|(op, _)| Some(*op) == c["op"].as_str())
                .map_or("?", |(_, w)| *w);
            let variable = c["variable"].as_str().unwrap_or_default();
            match c.get("value") {
                None | Some(Value::Null) => format!("{variable} {words}"),
                Some(Value::String(s))
                    if serde_json::from_str::<serde_json::Number>(s).is_ok()
                        || s == "true"
                        || s == "false" =>
                {
                    format!("{variable} {words} \"{s}\"")
                }
                Some(Value::String(s)) => format!("{variable} {words} {s}"),
                Some(v) => format!("{variable} {words} {v}"),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One outgoing connection of a block: its label and the block it leads to.
pub struct Output {
    pub label: String,
    pub to: Option<i64>,
}

/// A block's connections, in the order the editor shows them.
pub fn outputs(kind: &str, config: &Map<String, Value>) -> Vec<Output> {
    let id = |v: Option<&Value>| v.and_then(Value::as_i64);
    match kind {
        "filter" => {
            let mut out: Vec<Output> = config
                .get("cases")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, c)| Output {
                    label: c["name"]
                        .as_str()
                        .filter(|n| !n.is_empty())
                        .map_or_else(|| format!("Case {}", i + 1), str::to_owned),
                    to: id(c.get("next")),
                })
                .collect();
            out.push(Output {
                label: "Else".into(),
                to: id(config.get("else")),
            });
            out
        }
        "transfer_call" | "transfer_flow" | "end_call" => Vec::new(),
        _ => vec![Output {
            label: "Next".into(),
            to: id(config.get("next")),
        }],
    }
}

/// A line describing a block's settings in the flow's list.
pub fn summary(kind: &str, config: &Map<String, Value>) -> String {
    let text = |k: &str| {
        config
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let s = match kind {
        "collect" => format!("Asks for {} — {}", text("variable"), text("prompt")),
        "filter" => format!(
            "{} case(s), else",
            config
                .get("cases")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
        ),
        "transfer_call" => {
            let to = [text("destination"), text("department")]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" / ");
            format!("To {to} — {}", text("message"))
        }
        "transfer_flow" => "Continues in another flow".into(),
        "end_call" => format!("{} ({})", text("message"), text("outcome")),
        _ => text("message"),
    };
    let s = s.trim().trim_end_matches('—').trim().to_owned();
    if s.is_empty() {
        "(not set yet)".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_read_as_written_and_write_back() {
        let text = "priority equals high\nrisk_score greater than 80\nflagged equals true\ncustomer_name exists\nplan does not equal \"42\"";
        let parsed = parse_conditions(text).unwrap();
        assert_eq!(
            parsed[0],
            json!({"variable": "priority", "op": "equals", "value": "high"})
        );
        assert_eq!(
            parsed[1],
            json!({"variable": "risk_score", "op": "greater_than", "value": 80})
        );
        assert_eq!(parsed[2]["value"], json!(true));
        assert_eq!(
            parsed[3],
            json!({"variable": "customer_name", "op": "exists"})
        );
        assert_eq!(parsed[4]["op"], "not_equals");
        assert_eq!(parsed[4]["value"], json!("42"));
        assert_eq!(
            parse_conditions(&format_conditions(&parsed)).unwrap(),
            parsed
        );
    }

    #[test]
    fn conditions_without_operator_or_value_are_refused_by_line() {
        assert!(
            parse_conditions("priority high")
                .unwrap_err()
                .starts_with("line 1")
        );
        assert!(
            parse_conditions("a exists\nb equals")
                .unwrap_err()
                .starts_with("line 2")
        );
        assert!(parse_conditions("a exists now").is_err());
    }

    #[test]
    fn outputs_follow_the_kind() {
        let filter = json!({"cases": [{"name": "VIP", "next": 3}, {"next": null}], "else": 4});
        let outs = outputs("filter", filter.as_object().unwrap());
        assert_eq!(
            outs.iter().map(|o| o.label.as_str()).collect::<Vec<_>>(),
            ["VIP", "Case 2", "Else"]
        );
        assert_eq!(outs[0].to, Some(3));
        assert!(outputs("end_call", &Map::new()).is_empty());
    }
}
