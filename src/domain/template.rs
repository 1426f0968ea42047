//! Message templates: text with `{{name}}` and `{{name|fallback}}` placeholders.
//!
//! A template is checked when its block is saved (syntax, and that every name is a variable
//! the agent knows); at run time a placeholder whose variable has no value says its fallback,
//! or nothing.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::variables::VariableName;

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Var {
        name: String,
        fallback: Option<String>,
    },
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Reads `text`; refuses an unclosed `{{` or a placeholder that is not a variable name.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("{{{{ without }}}} in {:?}", excerpt(&rest[open..])))?;
            let inner = &after[..close];
            let (name, fallback) = match inner.split_once('|') {
                Some((n, f)) => (n.trim(), Some(f.trim().to_owned())),
                None => (inner.trim(), None),
            };
            VariableName::parse(name).map_err(|e| format!("{{{{{inner}}}}}: {e}"))?;
            parts.push(Part::Var {
                name: name.to_owned(),
                fallback,
            });
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// The variable names the template uses, in order.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var { name, .. } => Some(name.as_str()),
            Part::Text(_) => None,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The text with each placeholder replaced by its variable's value, else its fallback.
    pub fn render(&self, vars: &Map<String, Value>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var { name, fallback } => match vars.get(name).and_then(spoken) {
                    Some(v) => out.push_str(&v),
                    None => out.push_str(fallback.as_deref().unwrap_or_default()),
                },
            }
        }
        out
    }
}

/// How a value is said: text as is, numbers and booleans written out, lists joined with
/// commas. `None` for no value (null, empty text, empty list).
/// Text is borrowed, not copied.
pub fn spoken(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::Null => None,
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Value::Array(items) => {
            let said: Vec<Cow<'_, str>> = items.iter().filter_map(spoken).collect();
            (!said.is_empty()).then(|| Cow::Owned(said.join(", ")))
        }
        Value::Object(_) => None,
    }
}

fn excerpt(s: &str) -> String {
    s.chars().take(24).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn placeholders_say_the_value_or_the_fallback() {
        let t = Template::parse("Hello {{customer_name|there}}, about {{ plan }}.").unwrap();
        assert_eq!(
            t.render(&vars(json!({"customer_name": "Ada", "plan": "enterprise"}))),
            "Hello Ada, about enterprise."
        );
        assert_eq!(
            t.render(&vars(json!({"customer_name": "", "plan": null}))),
            "Hello there, about ."
        );
        assert_eq!(t.variables().collect::<Vec<_>>(), ["customer_name", "plan"]);
    }

    #[test]
    fn numbers_booleans_and_lists_are_written_out() {
        let t = Template::parse("{{a}} {{b}} {{c}}").unwrap();
        assert_eq!(
            t.render(&vars(json!({"a": 5000, "b": true, "c": ["x", "y"]}))),
            "5000 true x, y"
        );
    }

    #[test]
    fn unclosed_or_misnamed_placeholders_are_refused() {
        assert!(
            Template::parse("Hi {{name")
                .unwrap_err()
                .contains("without")
        );
        assert!(Template::parse("Hi {{first name}}").is_err());
        assert!(Template::parse("Hi {{}}").is_err());
        assert!(Template::parse("Plain text, no braces.").is_ok());
    }
}
