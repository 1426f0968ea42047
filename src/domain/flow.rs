//! Flows: block kinds, their settings, and their connections.
//!
//! A block's settings live in the agent's document ([`super::document`]); this module holds
//! what the editor shows of them: labels, one-line summaries, and conditions as text.

use serde_json::Value;
#[cfg(test)]
use serde_json::json;

use super::conditions::Op;
use super::document::{Block, Condition};
use super::variables::VariableName;

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
pub fn parse_conditions(text: &str) -> Result<Vec<Condition>, String> {
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
            out.push(condition(n, variable, op, None)?);
            continue;
        }
        if value_text.is_empty() {
            return Err(format!("line {}: {op} needs a value", n + 1));
        }
        out.push(condition(n, variable, op, Some(parse_value(value_text)))?);
    }
    Ok(out)
}

fn condition(
    n: usize,
    variable: &str,
    op: &str,
    value: Option<Value>,
) -> Result<Condition, String> {
    VariableName::parse(variable).map_err(|e| format!("line {}: {e}", n + 1))?;
    Ok(Condition {
        variable: variable.to_owned(),
        op: Op::parse(op).map_err(|e| format!("line {}: {e}", n + 1))?,
        value,
    })
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
pub fn format_conditions(conditions: &[Condition]) -> String {
    conditions
        .iter()
        .map(|c| {
            let words = c.op.words();
            let variable = &c.variable;
            match &c.value {
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

/// A line describing a block's settings, as the editor lists it; `flow_name` names the
/// flow a Transfer Flow continues in.
pub fn summary(block: &Block, flow_name: impl Fn(&str) -> Option<String>) -> String {
    let s = match block {
        Block::Greeting { message, .. }
        | Block::Start { message, .. }
        | Block::Talk { message, .. } => message.clone(),
        Block::Collect {
            variable, prompt, ..
        } => format!("Asks for {variable} — {prompt}"),
        Block::Filter { cases, .. } => {
            let names: Vec<String> = cases.iter().enumerate().map(|(i, c)| c.label(i)).collect();
            if names.is_empty() {
                "No cases yet; Else".into()
            } else {
                format!("{}; Else", names.join(", "))
            }
        }
        Block::TransferCall {
            destination,
            department,
            message,
        } => {
            let to = [destination.as_str(), department.as_str()]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" / ");
            format!("To {to} — {message}")
        }
        Block::TransferFlow { flow } => match flow.as_deref().map(|f| (f, flow_name(f))) {
            Some((_, Some(name))) => format!("Continues in {name:?}"),
            Some((key, None)) => format!("Continues in a flow that is gone ({key})"),
            None => String::new(),
        },
        Block::EndCall { message, outcome } => format!("{message} ({outcome})"),
    };
    let s = s
        .trim()
        .trim_start_matches("To  —")
        .trim()
        .trim_end_matches('—')
        .trim()
        .to_owned();
    if s.is_empty() || s == "To" {
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
            parsed[0].to_json(),
            json!({"variable": "priority", "op": "equals", "value": "high"})
        );
        assert_eq!(
            parsed[1].to_json(),
            json!({"variable": "risk_score", "op": "greater_than", "value": 80})
        );
        assert_eq!(parsed[2].value, Some(json!(true)));
        assert_eq!(
            parsed[3].to_json(),
            json!({"variable": "customer_name", "op": "exists"})
        );
        assert_eq!(parsed[4].op, Op::NotEquals);
        assert_eq!(parsed[4].value, Some(json!("42")));
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
        assert!(
            parse_conditions("1a exists")
                .unwrap_err()
                .starts_with("line 1")
        );
    }
}
