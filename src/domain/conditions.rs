//! Filter conditions: reading them from a block's settings, checking them against the
//! variable schema when saved, and evaluating them during a call with the reason why.

use serde_json::{Map, Value};

use super::template::spoken;
use super::variables::VarType;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Exists,
    NotExists,
    Equals,
    NotEquals,
    GreaterThan,
    LessThan,
    Contains,
}

impl Op {
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "exists" => Self::Exists,
            "not_exists" => Self::NotExists,
            "equals" => Self::Equals,
            "not_equals" => Self::NotEquals,
            "greater_than" => Self::GreaterThan,
            "less_than" => Self::LessThan,
            "contains" => Self::Contains,
            other => return Err(format!("{other:?} is not an operator")),
        })
    }

    pub fn words(self) -> &'static str {
        match self {
            Self::Exists => "exists",
            Self::NotExists => "does not exist",
            Self::Equals => "equals",
            Self::NotEquals => "does not equal",
            Self::GreaterThan => "greater than",
            Self::LessThan => "less than",
            Self::Contains => "contains",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub variable: String,
    pub op: Op,
    pub value: Value,
}

/// Conditions joined by AND (all) or OR (any).
#[derive(Debug, Clone, PartialEq)]
pub struct Conditions {
    pub any: bool,
    pub list: Vec<Condition>,
}

impl Conditions {
    /// Reads `{"join": "and"|"or", "conditions": [{variable, op, value?}]}`.
    pub fn from_config(config: &Value) -> Result<Self, String> {
        let any = config["join"].as_str() == Some("or");
        let list = config["conditions"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|c| {
                Ok(Condition {
                    variable: c["variable"]
                        .as_str()
                        .filter(|v| !v.is_empty())
                        .ok_or("a condition names no variable")?
                        .to_owned(),
                    op: Op::parse(c["op"].as_str().unwrap_or_default())?,
                    value: c.get("value").cloned().unwrap_or(Value::Null),
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self { any, list })
    }

    /// Whether they hold for `vars`, and why, in words (`risk_score is 92, greater than 80`).
    /// No conditions never hold: an unfinished case or End Call must not catch every call.
    pub fn check(&self, vars: &Map<String, Value>) -> (bool, String) {
        match self.judge(vars) {
            Some((held, hold)) => (hold, self.why(vars, &held, hold)),
            None => (false, "it has no conditions yet".into()),
        }
    }

    /// Why they hold for `vars`, in words, if they do: the reason is only worded for
    /// conditions that decided a call's path (most cases a call meets do not hold).
    pub fn held(&self, vars: &Map<String, Value>) -> Option<String> {
        let (held, hold) = self.judge(vars)?;
        hold.then(|| self.why(vars, &held, true))
    }

    /// Whether each condition holds, and whether they do together; `None` without any.
    fn judge(&self, vars: &Map<String, Value>) -> Option<(Vec<bool>, bool)> {
        if self.list.is_empty() {
            return None;
        }
        let held: Vec<bool> = self.list.iter().map(|c| c.holds(vars)).collect();
        let hold = self.decide(&held);
        Some((held, hold))
    }

    fn decide(&self, held: &[bool]) -> bool {
        if self.any {
            held.iter().any(|h| *h)
        } else {
            held.iter().all(|h| *h)
        }
    }

    /// The reason names the conditions that decided.
    fn why(&self, vars: &Map<String, Value>, held: &[bool], hold: bool) -> String {
        self.list
            .iter()
            .zip(held)
            .filter(|(_, h)| **h == hold || self.list.len() == 1)
            .map(|(c, h)| c.explain(vars, *h))
            .collect::<Vec<_>>()
            .join(if self.any == hold { " or " } else { " and " })
    }
}

fn has_value(v: Option<&Value>) -> bool {
    v.and_then(spoken).is_some()
}

fn text_eq(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim()) || a.trim().to_lowercase() == b.trim().to_lowercase()
}

/// A value as a number: a JSON number, or text that is a finite decimal number (`92`,
/// `-2.5`, `1e3`, `+7`). `inf`, `NaN` and `Infinity` are text, not numbers.
fn number_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let t = s.trim();
            let t = t.strip_prefix('+').unwrap_or(t);
            serde_json::from_str::<serde_json::Number>(t)
                .ok()?
                .as_f64()
                .filter(|f| f.is_finite())
        }
        _ => None,
    }
}

/// Typed equality: numbers by value, booleans by value, text without regard to case. A list
/// equals a value when one of its items does (as `contains` says for lists).
fn equal(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Array(items), _) => items.iter().any(|i| equal(i, expected)),
        (_, Value::Number(_)) => number_of(actual)
            .zip(number_of(expected))
            .is_some_and(|(a, b)| a == b),
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::String(a), Value::Bool(b)) => text_eq(a, &b.to_string()),
        (a, Value::String(b)) => spoken(a).is_some_and(|a| text_eq(&a, b)),
        _ => false,
    }
}

impl Condition {
    /// Whether the condition holds for `vars`.
    pub fn holds(&self, vars: &Map<String, Value>) -> bool {
        let actual = vars.get(&self.variable);
        match self.op {
            Op::Exists => has_value(actual),
            Op::NotExists => !has_value(actual),
            Op::Equals => actual.is_some_and(|a| equal(a, &self.value)),
            Op::NotEquals => !actual.is_some_and(|a| equal(a, &self.value)),
            Op::GreaterThan | Op::LessThan => {
                match (actual.and_then(number_of), number_of(&self.value)) {
                    (Some(a), Some(b)) if self.op == Op::GreaterThan => a > b,
                    (Some(a), Some(b)) => a < b,
                    _ => false,
                }
            }
            Op::Contains => match actual {
                Some(Value::Array(items)) => items.iter().any(|i| equal(i, &self.value)),
                Some(v) => spoken(v).is_some_and(|s| {
                    s.to_lowercase()
                        .contains(&spoken(&self.value).unwrap_or_default().to_lowercase())
                }),
                None => false,
            },
        }
    }

    /// The condition in words, for `vars`, given whether it held.
    fn explain(&self, vars: &Map<String, Value>, hold: bool) -> String {
        let shown = match vars.get(&self.variable).and_then(spoken) {
            Some(s) => format!("{} is {s:?}", self.variable),
            None => format!("{} has no value", self.variable),
        };
        match self.op {
            Op::Exists | Op::NotExists => shown,
            _ => format!(
                "{shown}, {}{} {}",
                if hold { "" } else { "not " },
                self.op.words(),
                spoken(&self.value).unwrap_or_default()
            ),
        }
    }

    /// Refuses a comparison that can never make sense for the variable's declared type
    /// (`risk_score greater than "high"`, `flagged equals 3`).
    pub fn check_types(&self, declared: Option<VarType>) -> Result<(), String> {
        let value = &self.value;
        let needs_value = !matches!(self.op, Op::Exists | Op::NotExists);
        if needs_value && value.is_null() {
            return Err(format!(
                "{} {} needs a value",
                self.variable,
                self.op.words()
            ));
        }
        let mismatch = |what: &str| {
            Err(format!(
                "{} is {} but the condition compares it with {}",
                self.variable,
                declared.map_or("untyped", |t| t.as_str()),
                what
            ))
        };
        match (self.op, declared) {
            (Op::Exists | Op::NotExists, _) => Ok(()),
            (Op::Equals | Op::NotEquals, Some(VarType::List)) => Err(format!(
                "{} is a list: use contains to look for an item",
                self.variable
            )),
            (Op::Contains, Some(t @ (VarType::Number | VarType::Boolean))) => Err(format!(
                "{} is a {t}: contains looks into text and lists; use equals",
                self.variable
            )),
            (Op::GreaterThan | Op::LessThan, Some(t)) if t != VarType::Number => {
                mismatch("a number (greater/less than compare numbers)")
            }
            (Op::GreaterThan | Op::LessThan, _) if number_of(value).is_none() => Err(format!(
                "{} {} needs a number, not {value}",
                self.variable,
                self.op.words()
            )),
            (_, Some(VarType::Number)) if !matches!(value, Value::Number(_)) => {
                mismatch(&format!("the text {value}"))
            }
            (_, Some(VarType::Boolean)) if !matches!(value, Value::Bool(_)) => {
                mismatch(&format!("{value} (use true or false)"))
            }
            (_, Some(VarType::String | VarType::List)) if !matches!(value, Value::String(_)) => {
                mismatch(&format!("{value} (write it in quotes to compare text)"))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cond(variable: &str, op: &str, value: Value) -> Condition {
        Condition {
            variable: variable.into(),
            op: Op::parse(op).unwrap(),
            value,
        }
    }

    fn vars(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn comparisons_are_typed() {
        let v = vars(
            json!({"risk": 92, "plan": "Enterprise", "tags": ["vip", "new"], "flag": true, "budget": "5000"}),
        );
        assert!(cond("risk", "greater_than", json!(80)).holds(&v));
        assert!(!cond("risk", "less_than", json!(80)).holds(&v));
        assert!(cond("plan", "equals", json!("enterprise")).holds(&v));
        assert!(cond("tags", "contains", json!("VIP")).holds(&v));
        assert!(cond("plan", "contains", json!("prise")).holds(&v));
        assert!(cond("flag", "equals", json!(true)).holds(&v));
        assert!(cond("budget", "greater_than", json!(1000)).holds(&v));
        assert!(cond("missing", "not_exists", Value::Null).holds(&v));
        assert!(cond("missing", "not_equals", json!("x")).holds(&v));
        assert!(!cond("missing", "greater_than", json!(1)).holds(&v));
    }

    #[test]
    fn only_finite_decimal_text_is_a_number() {
        let v = vars(
            json!({"a": "inf", "b": "Infinity", "c": "NaN", "d": " 92 ", "e": "-1e3", "f": "+7"}),
        );
        for name in ["a", "b", "c"] {
            assert!(!cond(name, "greater_than", json!(80)).holds(&v), "{name}");
            assert!(!cond(name, "less_than", json!(80)).holds(&v), "{name}");
        }
        assert!(cond("d", "greater_than", json!(80)).holds(&v));
        assert!(cond("e", "less_than", json!(0)).holds(&v));
        assert!(cond("f", "equals", json!(7)).holds(&v));
    }

    #[test]
    fn a_list_equals_a_value_when_one_of_its_items_does() {
        let v = vars(json!({"n": [5, 6], "t": ["new", "VIP"]}));
        assert!(cond("n", "equals", json!(5)).holds(&v));
        assert!(cond("t", "equals", json!("vip")).holds(&v));
        assert!(!cond("n", "equals", json!(7)).holds(&v));
        assert!(cond("n", "not_equals", json!(7)).holds(&v));
    }

    #[test]
    fn equals_on_a_declared_list_and_contains_on_a_number_are_refused() {
        let e = cond("tags", "equals", json!("vip"))
            .check_types(Some(VarType::List))
            .unwrap_err();
        assert!(e.contains("contains"), "{e}");
        assert!(
            cond("risk", "contains", json!(8))
                .check_types(Some(VarType::Number))
                .is_err()
        );
    }

    #[test]
    fn blank_text_has_no_value() {
        let v = vars(json!({"name": "   ", "tags": ["", " "]}));
        assert!(!cond("name", "exists", Value::Null).holds(&v));
        assert!(cond("name", "not_exists", Value::Null).holds(&v));
        assert!(!cond("tags", "exists", Value::Null).holds(&v));
    }

    #[test]
    fn the_reason_names_the_deciding_values() {
        let v = vars(json!({"risk_score": 92, "flagged": false}));
        let c = Conditions {
            any: true,
            list: vec![
                cond("risk_score", "greater_than", json!(80)),
                cond("flagged", "equals", json!(true)),
            ],
        };
        let (hold, why) = c.check(&v);
        assert!(hold);
        assert_eq!(why, "risk_score is \"92\", greater than 80");
        let all = Conditions {
            any: false,
            list: c.list.clone(),
        };
        let (hold, why) = all.check(&v);
        assert!(!hold);
        assert_eq!(why, "flagged is \"false\", not equals true");
    }

    #[test]
    fn comparing_a_number_with_text_is_refused() {
        assert!(
            cond("risk", "greater_than", json!("high"))
                .check_types(Some(VarType::Number))
                .is_err()
        );
        assert!(
            cond("risk", "equals", json!("80"))
                .check_types(Some(VarType::Number))
                .is_err()
        );
        assert!(
            cond("plan", "greater_than", json!(3))
                .check_types(Some(VarType::String))
                .is_err()
        );
        assert!(
            cond("flagged", "equals", json!(1))
                .check_types(Some(VarType::Boolean))
                .is_err()
        );
        assert!(
            cond("plan", "equals", json!("gold"))
                .check_types(Some(VarType::String))
                .is_ok()
        );
        assert!(
            cond("tags", "contains", json!("vip"))
                .check_types(Some(VarType::List))
                .is_ok()
        );
    }
}
