//! The ingest payload: parsed in one pass, then validated against the agent's schema.
//!
//! Parsing never builds a tree deeper than a list of scalars: a nested object or list is
//! skipped and reported by field name, so that one answer can list every problem.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::phone::PhoneNumber;
use super::variables::{VarType, VariableDef, VariableName, describe_value, number_within_limits};

/// Most fields one payload may carry.
pub const MAX_FIELDS: usize = 200;

/// One problem with a request, pointing at the part of the body it concerns (RFC 6901).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = ProblemEntry)]
pub struct Problem {
    /// A JSON pointer into the body; absent when the problem is the whole request.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(examples("/phoneNumber"))]
    pub pointer: Option<String>,
    #[schema(examples("phoneNumber: \"call me\" has no digits"))]
    pub detail: String,
}

impl Problem {
    pub fn at(field: &str, detail: impl Into<String>) -> Self {
        Self {
            pointer: Some(format!("/{}", escape_pointer(field))),
            detail: detail.into(),
        }
    }

    /// A problem with `/answers/<name>`: the field `name` of the object `answers`.
    pub fn in_answers(name: &str, detail: impl Into<String>) -> Self {
        Self {
            pointer: Some(format!("/answers/{}", escape_pointer(name))),
            detail: detail.into(),
        }
    }

    /// A problem at a pointer already written; the whole body when it is empty.
    pub fn at_pointer(pointer: String, detail: impl Into<String>) -> Self {
        Self {
            pointer: Some(pointer).filter(|p| !p.is_empty()),
            detail: detail.into(),
        }
    }

    pub fn body(detail: impl Into<String>) -> Self {
        Self {
            pointer: None,
            detail: detail.into(),
        }
    }
}

fn escape_pointer(field: &str) -> String {
    field.replace('~', "~0").replace('/', "~1")
}

/// Why a body could not be used.
#[derive(Debug, PartialEq)]
pub enum PayloadError {
    /// Not JSON at all (400).
    Malformed(String),
    /// JSON, but not what the contract asks for (422), one entry per problem.
    Invalid(Vec<Problem>),
}

/// A top-level field's value as sent.
#[derive(Debug, PartialEq)]
enum FieldValue {
    Value(Value),
    Object,
    NestedList,
    ObjectInList,
    NumberOutOfRange,
}

/// The body, parsed: every top-level field in order.
#[derive(Debug)]
pub struct RawPayload {
    fields: Vec<(String, FieldValue)>,
    duplicates: Vec<String>,
}

/// Parses a body: `Malformed` when it is not one JSON value, `Invalid` when it is not an object.
pub fn parse(body: &[u8]) -> Result<RawPayload, PayloadError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let top = de
        .deserialize_any(TopVisitor)
        .and_then(|top| de.end().map(|_| top))
        .map_err(|e| PayloadError::Malformed(describe_json_error(&e)))?;
    match top {
        Top::Object(raw) => Ok(raw),
        Top::Other(kind) => Err(PayloadError::Invalid(vec![Problem::body(format!(
            "the body must be a JSON object, got {kind}"
        ))])),
    }
}

fn describe_json_error(e: &serde_json::Error) -> String {
    format!("the body is not valid JSON: {e}")
}

/// A payload that passed every check: who it is about and the typed fields to cache.
#[derive(Debug, PartialEq)]
pub struct ValidPayload {
    pub phone: PhoneNumber,
    pub fields: Map<String, Value>,
}

/// Field names a sender may not use as variables.
fn reserved(name: &str) -> Option<&'static str> {
    match name {
        "caller_phone" | "called_number" | "call_id" => {
            Some("is a system variable filled by the call runtime")
        }
        _ => None,
    }
}

/// Checks a parsed payload for the agent `agent_id` and its schema; lists every problem.
/// `phone` normalises `phoneNumber` in the agent's region.
pub fn validate(
    raw: RawPayload,
    agent_id: &str,
    schema: &[VariableDef],
    phone: impl Fn(&str) -> Result<PhoneNumber, String>,
) -> Result<ValidPayload, Vec<Problem>> {
    let mut problems = Vec::new();
    for name in &raw.duplicates {
        problems.push(Problem::at(name, format!("{name} appears more than once")));
    }
    if raw.fields.len() > MAX_FIELDS {
        problems.push(Problem::body(format!(
            "the body has {} fields; the limit is {MAX_FIELDS}",
            raw.fields.len()
        )));
    }

    let mut agent_seen = false;
    let mut normalised = None;
    let mut phone_seen = false;
    let mut fields = Map::new();

    for (name, value) in raw.fields {
        let value = match value {
            FieldValue::Value(v) => v,
            FieldValue::Object => {
                problems.push(Problem::at(
                    &name,
                    format!("{name} is an object; values must be a string, number, boolean, null or a list of those"),
                ));
                continue;
            }
            FieldValue::NestedList => {
                problems.push(Problem::at(&name, format!("{name} contains a list inside a list; list items must be strings, numbers or booleans")));
                continue;
            }
            FieldValue::ObjectInList => {
                problems.push(Problem::at(&name, format!("{name} contains an object inside a list; list items must be strings, numbers or booleans")));
                continue;
            }
            FieldValue::NumberOutOfRange => {
                problems.push(Problem::at(
                    &name,
                    format!(
                        "{name} is a number outside ±9007199254740991, which cannot be kept exactly"
                    ),
                ));
                continue;
            }
        };
        match name.as_str() {
            "agentId" => {
                agent_seen = true;
                match &value {
                    Value::String(s) if s == agent_id => {}
                    Value::String(s) => problems.push(Problem::at(
                        "agentId",
                        format!(
                            "agentId {:?} is not the agent this webhook belongs to",
                            super::ids::excerpt(s)
                        ),
                    )),
                    other => problems.push(Problem::at(
                        "agentId",
                        format!("agentId must be a string, got {}", describe_value(other)),
                    )),
                }
            }
            "phoneNumber" => {
                phone_seen = true;
                let text = match &value {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) if n.is_u64() => Some(n.to_string()),
                    _ => None,
                };
                match text {
                    Some(text) => match phone(&text) {
                        Ok(p) => normalised = Some(p),
                        Err(e) => {
                            problems.push(Problem::at("phoneNumber", format!("phoneNumber: {e}")))
                        }
                    },
                    None => problems.push(Problem::at(
                        "phoneNumber",
                        format!(
                            "phoneNumber must be a string, got {}",
                            describe_value(&value)
                        ),
                    )),
                }
            }
            _ => {
                let var = match VariableName::parse(&name) {
                    Ok(var) => var,
                    Err(e) => {
                        problems.push(Problem::at(&name, format!("field {e}")));
                        continue;
                    }
                };
                if let Some(why) = reserved(var.as_str()) {
                    problems.push(Problem::at(
                        &name,
                        format!("{name} {why}; rename the field"),
                    ));
                    continue;
                }
                let declared = schema.iter().find(|d| d.name == var).map(|d| d.ty);
                let value = match declared {
                    Some(ty) => match ty.coerce(&value) {
                        Ok(v) => v,
                        Err(e) => {
                            problems.push(Problem::at(&name, format!("{name}: {e}")));
                            continue;
                        }
                    },
                    None => value,
                };
                fields.insert(name, value);
            }
        }
    }

    if !agent_seen {
        problems.push(Problem::at("agentId", "agentId is required"));
    }
    if !phone_seen {
        problems.push(Problem::at("phoneNumber", "phoneNumber is required"));
    }
    match (problems.is_empty(), normalised) {
        (true, Some(phone)) => Ok(ValidPayload { phone, fields }),
        _ => Err(problems),
    }
}

/// The names and detected types of fields, as the test viewer and deliveries show them.
pub fn field_types(fields: &Map<String, Value>) -> Vec<(String, Option<VarType>)> {
    fields
        .iter()
        .map(|(k, v)| (k.clone(), VarType::detect(v)))
        .collect()
}

// ---- one-pass parser -------------------------------------------------------------------

enum Top {
    Object(RawPayload),
    Other(&'static str),
}

struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Top;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top, A::Error> {
        let mut fields = Vec::new();
        let mut seen = HashSet::new();
        let mut duplicates = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(FieldSeed)?;
            if !seen.insert(key.clone()) {
                if !duplicates.contains(&key) {
                    duplicates.push(key);
                }
                continue;
            }
            fields.push((key, value));
        }
        Ok(Top::Object(RawPayload { fields, duplicates }))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Top, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Top::Other("a list"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Top, E> {
        Ok(Top::Other("a string"))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Top, E> {
        Ok(Top::Other("a boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Top, E> {
        Ok(Top::Other("a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Top, E> {
        Ok(Top::Other("a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Top, E> {
        Ok(Top::Other("a number"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Top, E> {
        Ok(Top::Other("null"))
    }
}

/// A scalar or a list of scalars; anything deeper is skipped and named.
struct FieldSeed;

impl<'de> DeserializeSeed<'de> for FieldSeed {
    type Value = FieldValue;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<FieldValue, D::Error> {
        d.deserialize_any(FieldVisitor { in_list: false })
    }
}

struct FieldVisitor {
    in_list: bool,
}

fn number(n: Number) -> FieldValue {
    if number_within_limits(&n) {
        FieldValue::Value(Value::Number(n))
    } else {
        FieldValue::NumberOutOfRange
    }
}

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = FieldValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, number, boolean, null or list of those")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<FieldValue, E> {
        Ok(FieldValue::Value(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<FieldValue, E> {
        Ok(number(Number::from(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<FieldValue, E> {
        Ok(number(Number::from(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<FieldValue, E> {
        Ok(Number::from_f64(v).map_or(FieldValue::NumberOutOfRange, number))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<FieldValue, E> {
        Ok(FieldValue::Value(Value::String(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<FieldValue, E> {
        Ok(FieldValue::Value(Value::String(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<FieldValue, E> {
        Ok(FieldValue::Value(Value::Null))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FieldValue, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(if self.in_list {
            FieldValue::ObjectInList
        } else {
            FieldValue::Object
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FieldValue, A::Error> {
        if self.in_list {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(FieldValue::NestedList);
        }
        let mut items = Vec::new();
        let mut worst: Option<FieldValue> = None;
        while let Some(item) = seq.next_element_seed(ItemSeed)? {
            match item {
                FieldValue::Value(v) => items.push(v),
                bad => {
                    worst.get_or_insert(bad);
                }
            }
        }
        Ok(worst.unwrap_or(FieldValue::Value(Value::Array(items))))
    }
}

struct ItemSeed;

impl<'de> DeserializeSeed<'de> for ItemSeed {
    type Value = FieldValue;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<FieldValue, D::Error> {
        d.deserialize_any(FieldVisitor { in_list: true })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::phone::Region;
    use serde_json::json;

    const AGENT: &str = "oJvfgs3Eg8DEMOGnQES7";

    fn us() -> Region {
        Region::parse("US").unwrap()
    }

    fn check(body: &str, schema: &[VariableDef]) -> Result<ValidPayload, Vec<Problem>> {
        let raw = parse(body.as_bytes()).map_err(|e| match e {
            PayloadError::Invalid(p) => p,
            PayloadError::Malformed(m) => panic!("malformed: {m}"),
        })?;
        validate(raw, AGENT, schema, |s| PhoneNumber::parse(s, us()))
    }

    fn details(problems: &[Problem]) -> Vec<String> {
        problems.iter().map(|p| p.detail.clone()).collect()
    }

    #[test]
    fn documented_example_is_accepted_with_its_extra_fields() {
        let body = json!({"agentId": AGENT, "phoneNumber": "+1234567890",
            "customer_name": "Jane Doe", "priority": "high", "issue_type": "billing"});
        let ok = check(&body.to_string(), &[]).unwrap();
        assert_eq!(ok.phone.as_str(), "+1234567890");
        assert_eq!(
            Value::Object(ok.fields),
            json!({"customer_name": "Jane Doe", "priority": "high", "issue_type": "billing"})
        );
    }

    #[test]
    fn every_problem_is_listed_once() {
        let body = r#"{"phoneNumber": "nope", "a-b": 1, "nested": {"x": 1}, "deep": [[1]], "objs": [{"a":1}], "call_id": "x"}"#;
        let problems = check(body, &[]).unwrap_err();
        let pointers: Vec<_> = problems
            .iter()
            .map(|p| p.pointer.clone().unwrap())
            .collect();
        assert_eq!(
            pointers,
            [
                "/phoneNumber",
                "/a-b",
                "/nested",
                "/deep",
                "/objs",
                "/call_id",
                "/agentId"
            ]
        );
        assert!(details(&problems)[2].contains("nested is an object"));
    }

    #[test]
    fn wrong_agent_is_refused() {
        let body = json!({"agentId": "AAAAAAAAAAAAAAAAAAAA", "phoneNumber": "+12125551234"});
        let problems = check(&body.to_string(), &[]).unwrap_err();
        assert_eq!(problems[0].pointer.as_deref(), Some("/agentId"));
    }

    #[test]
    fn declared_types_are_coerced_or_refused_by_name() {
        let schema = [VariableDef {
            name: VariableName::parse("budget").unwrap(),
            ty: VarType::Number,
            default: None,
        }];
        let ok = check(
            &json!({"agentId": AGENT, "phoneNumber": "+12125551234", "budget": "10000"})
                .to_string(),
            &schema,
        )
        .unwrap();
        assert_eq!(ok.fields["budget"], json!(10000));
        let problems = check(
            &json!({"agentId": AGENT, "phoneNumber": "+12125551234", "budget": "lots"}).to_string(),
            &schema,
        )
        .unwrap_err();
        assert_eq!(
            details(&problems),
            [r#"budget: expected a number, got the string "lots""#]
        );
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let body = format!(r#"{{"agentId":"{AGENT}","phoneNumber":"+12125551234","a":1,"a":2}}"#);
        let problems = check(&body, &[]).unwrap_err();
        assert_eq!(details(&problems), ["a appears more than once"]);
    }

    #[test]
    fn huge_numbers_are_refused_not_rounded() {
        let body = format!(
            r#"{{"agentId":"{AGENT}","phoneNumber":"+12125551234","n":123456789012345678901234567890}}"#
        );
        let problems = check(&body, &[]).unwrap_err();
        assert_eq!(problems[0].pointer.as_deref(), Some("/n"));
    }

    #[test]
    fn phone_number_may_be_sent_as_digits() {
        let body = format!(r#"{{"agentId":"{AGENT}","phoneNumber":12125551234}}"#);
        assert_eq!(check(&body, &[]).unwrap().phone.as_str(), "+12125551234");
    }

    #[test]
    fn malformed_and_non_object_bodies_are_told_apart() {
        assert!(matches!(parse(b"{"), Err(PayloadError::Malformed(_))));
        assert!(matches!(parse(b"{} x"), Err(PayloadError::Malformed(_))));
        assert!(matches!(parse(b"\xff"), Err(PayloadError::Malformed(_))));
        assert!(matches!(
            parse(br#"{"a":"\ud800"}"#),
            Err(PayloadError::Malformed(_))
        ));
        assert!(matches!(parse(b"[1,2]"), Err(PayloadError::Invalid(_))));
        assert!(matches!(parse(b"\"x\""), Err(PayloadError::Invalid(_))));
    }

    #[test]
    fn deep_nesting_is_refused_by_field_without_exhausting_the_stack() {
        let deep_list = format!(
            r#"{{"agentId":"{AGENT}","phoneNumber":"+12125551234","a":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let problems = check(&deep_list, &[]).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].pointer.as_deref(), Some("/a"));

        let deep_object = format!(
            r#"{{"agentId":"{AGENT}","phoneNumber":"+12125551234","o":{}1{}}}"#,
            r#"{"x":"#.repeat(50_000),
            "}".repeat(50_000)
        );
        let problems = check(&deep_object, &[]).unwrap_err();
        assert_eq!(problems[0].pointer.as_deref(), Some("/o"));

        let deep_top = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            parse(deep_top.as_bytes()),
            Err(PayloadError::Invalid(_))
        ));
    }

    #[test]
    fn field_types_are_detected() {
        let fields = json!({"s": "x", "n": 1, "b": true, "l": ["a"]});
        let types = field_types(fields.as_object().unwrap());
        assert!(types.contains(&("n".into(), Some(VarType::Number))));
        assert!(types.contains(&("l".into(), Some(VarType::List))));
    }
}
