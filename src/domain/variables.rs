//! Variables: names, types, lossless coercion, and how a call's variables are resolved.

use std::fmt;

use serde_json::{Map, Number, Value};

/// Variables every call has, filled by the runtime rather than by webhooks.
pub const SYSTEM_VARIABLES: [&str; 3] = ["caller_phone", "called_number", "call_id"];

/// Largest magnitude a number variable may hold: every JSON reader keeps these exactly.
pub const MAX_SAFE_NUMBER: f64 = 9_007_199_254_740_991.0;

/// A variable name: `[A-Za-z_][A-Za-z0-9_]{0,63}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct VariableName(String);

impl VariableName {
    /// What `parse` accepts, as a regular expression (for the OpenAPI document).
    pub const PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]{0,63}$";

    pub fn parse(s: &str) -> Result<Self, String> {
        let mut bytes = s.bytes();
        let first_ok = matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_');
        if first_ok && s.len() <= 64 && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "{:?} is not a variable name: use letters, digits and _, not starting with a digit, at most 64",
                crate::domain::ids::excerpt(s)
            ))
        }
    }

    pub fn is_system(&self) -> bool {
        SYSTEM_VARIABLES.contains(&self.0.as_str())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VariableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for VariableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VariableName({})", self.0)
    }
}

/// The type of a declared variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VarType {
    String,
    Number,
    Boolean,
    /// A list of strings.
    List,
}

impl VarType {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "string" | "text" => Ok(Self::String),
            "number" => Ok(Self::Number),
            "boolean" | "bool" => Ok(Self::Boolean),
            "list" | "list of strings" => Ok(Self::List),
            other => Err(format!(
                "{other:?} is not a variable type: use string, number, boolean or list"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Number => "number",
            Self::Boolean => "boolean",
            Self::List => "list",
        }
    }

    /// The type a sender's value looks like, for values with no declared type.
    pub fn detect(value: &Value) -> Option<Self> {
        match value {
            Value::String(_) => Some(Self::String),
            Value::Number(_) => Some(Self::Number),
            Value::Bool(_) => Some(Self::Boolean),
            Value::Array(_) => Some(Self::List),
            Value::Null | Value::Object(_) => None,
        }
    }

    /// Converts `value` to this type when nothing is lost (`"10000"` → 10000), else says why not.
    /// `null` stays `null`: it means "no value" for every type.
    pub fn coerce(self, value: &Value) -> Result<Value, String> {
        let refuse = || {
            format!(
                "expected {}, got {}",
                self.describe(),
                describe_value(value)
            )
        };
        // One rule for every way a value reaches a variable (webhook, answer, default):
        // numbers must be finite and exact, whatever the declared type.
        check_numbers(value)?;
        match (self, value) {
            (_, Value::Null) => Ok(Value::Null),
            (Self::String, Value::String(_)) => Ok(value.clone()),
            (Self::String, Value::Number(n)) => Ok(Value::String(n.to_string())),
            (Self::String, Value::Bool(b)) => Ok(Value::String(b.to_string())),
            (Self::Number, Value::Number(_)) => Ok(value.clone()),
            (Self::Number, Value::String(s)) => parse_number_text(s).ok_or_else(refuse),
            (Self::Boolean, Value::Bool(_)) => Ok(value.clone()),
            (Self::Boolean, Value::String(s)) => match s.as_str() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => Err(refuse()),
            },
            (Self::List, Value::String(_)) => Ok(Value::Array(vec![value.clone()])),
            (Self::List, Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(_) => Ok(item.clone()),
                    Value::Number(n) => Ok(Value::String(n.to_string())),
                    Value::Bool(b) => Ok(Value::String(b.to_string())),
                    _ => Err(refuse()),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            _ => Err(refuse()),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::String => "a string",
            Self::Number => "a number",
            Self::Boolean => "a boolean (true or false)",
            Self::List => "a list of strings",
        }
    }
}

impl fmt::Display for VarType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A short description of a JSON value for error messages: its kind and an excerpt.
pub fn describe_value(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {:?}", crate::domain::ids::excerpt(s)),
        Value::Array(items) => format!("a list of {} item(s)", items.len()),
        Value::Object(_) => "an object".into(),
    }
}

/// Refuses a number, or a list holding one, outside ±(2^53 − 1): such a number cannot be
/// kept exactly (`1e300`, `9007199254740993`, `12345678901234567890`).
fn check_numbers(value: &Value) -> Result<(), String> {
    let out_of_range = |v: &Value| match v {
        Value::Number(n) if !number_within_limits(n) => Err(format!(
            "{} is outside ±9007199254740991, which cannot be kept exactly",
            describe_value(v)
        )),
        _ => Ok(()),
    };
    match value {
        Value::Array(items) => items.iter().try_for_each(out_of_range),
        v => out_of_range(v),
    }
}

/// Checks the shape of a value for a variable no schema declares: the rule webhook fields
/// follow (a string, number within ±(2^53 − 1), boolean, null, or a list of those), so that
/// every way into a call's variables keeps the same shapes.
pub fn check_undeclared(value: &Value) -> Result<(), String> {
    check_numbers(value)?;
    let scalar = |v: &Value| match v {
        Value::Array(_) => {
            Err("a list inside a list; list items must be strings, numbers or booleans".into())
        }
        Value::Object(_) => {
            Err("an object inside a list; list items must be strings, numbers or booleans".into())
        }
        _ => Ok(()),
    };
    match value {
        Value::Object(_) => Err(
            "an object; values must be a string, number, boolean, null or a list of those".into(),
        ),
        Value::Array(items) => items.iter().try_for_each(scalar),
        v => scalar(v),
    }
}

/// `"10000"` → 10000, `"2.5"` → 2.5; anything that is not exactly a JSON number is `None`.
fn parse_number_text(s: &str) -> Option<Value> {
    if s.trim() != s {
        return None;
    }
    let n: Number = serde_json::from_str(s).ok()?;
    number_within_limits(&n).then_some(Value::Number(canonical_number(n)?))
}

/// Whole numbers become integers so that `"10000"` and `10000` compare equal.
fn canonical_number(n: Number) -> Option<Number> {
    if n.is_i64() || n.is_u64() {
        return Some(n);
    }
    let f = n.as_f64()?;
    if f.fract() == 0.0 && f.abs() <= MAX_SAFE_NUMBER {
        Some(Number::from(f as i64))
    } else {
        Number::from_f64(f)
    }
}

/// Numbers must be finite and within ±(2^53 − 1).
pub fn number_within_limits(n: &Number) -> bool {
    n.as_f64()
        .is_some_and(|f| f.is_finite() && f.abs() <= MAX_SAFE_NUMBER)
}

/// One declared variable of an agent's schema.
#[derive(Clone, Debug, PartialEq)]
pub struct VariableDef {
    pub name: VariableName,
    pub ty: VarType,
    /// `None` or `Value::Null` when the variable has no default.
    pub default: Option<Value>,
}

/// A call's variables: webhook fields where present (coerced to the schema's types), else
/// schema defaults, plus system variables. The context's values are moved, not copied.
pub fn resolve(
    schema: &[VariableDef],
    mut context: Map<String, Value>,
    system: [(&str, Value); 3],
) -> Map<String, Value> {
    let mut vars = Map::new();
    for def in schema {
        let from_context = context
            .remove(def.name.as_str())
            .filter(|v| !is_blank(v))
            .and_then(|v| def.ty.coerce(&v).ok());
        let value = from_context.unwrap_or_else(|| def.default.clone().unwrap_or(Value::Null));
        vars.insert(def.name.to_string(), value);
    }
    for (name, value) in context {
        if !is_blank(&value) {
            vars.insert(name, value);
        }
    }
    for (name, value) in system {
        vars.insert(name.to_owned(), value);
    }
    vars
}

/// `null`, or text with nothing but white space: no value. A default applies instead, a
/// Collect asks, `exists` does not hold, a template says its fallback.
pub fn is_blank(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// A variable's value as the APIs carry it: a string, number, boolean, `null`, or a list of
/// those. It exists for the OpenAPI document, which names the shape the code enforces.
pub struct VariableValue;

impl utoipa::PartialSchema for VariableValue {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
        let scalar = || {
            ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([
                    Type::String,
                    Type::Number,
                    Type::Boolean,
                    Type::Null,
                ]))
                .minimum(Some(-MAX_SAFE_NUMBER))
                .maximum(Some(MAX_SAFE_NUMBER))
        };
        let list = ArrayBuilder::new().items(scalar());
        utoipa::openapi::schema::OneOfBuilder::new()
            .item(scalar())
            .item(list)
            .description(Some(
                "A string, a number within ±(2^53 − 1), a boolean, null (no value), or a list of those.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for VariableValue {}

/// Variables by name, as the APIs carry them (a call's variables, answers, late data).
pub struct Variables;

impl utoipa::PartialSchema for Variables {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::ToSchema;
        use utoipa::openapi::schema::{ObjectBuilder, Ref, Type};
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property_names(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(VariableName::PATTERN)),
            ))
            .additional_properties(Some(Ref::from_schema_name(VariableValue::name())))
            .into()
    }
}

impl utoipa::ToSchema for Variables {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn undeclared_values_have_the_shapes_webhook_fields_have() {
        for ok in [
            json!("text"),
            json!(9007199254740991_i64),
            json!(-2.5),
            json!(true),
            json!(null),
            json!(["a", 1, false, null]),
        ] {
            assert_eq!(check_undeclared(&ok), Ok(()), "{ok}");
        }
        for (refused, why) in [
            (json!({ "a": 1 }), "an object"),
            (json!([[1]]), "a list inside a list"),
            (json!([{ "a": 1 }]), "an object inside a list"),
            (json!(1e300), "outside ±9007199254740991"),
            (json!([9007199254740993_u64]), "outside ±9007199254740991"),
        ] {
            let e = check_undeclared(&refused).unwrap_err();
            assert!(e.contains(why), "{refused}: {e}");
        }
    }

    #[test]
    fn variable_names_follow_the_documented_pattern() {
        for ok in ["a", "_x", "customer_name", "A1", &"a".repeat(64)] {
            assert!(VariableName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1a", "a-b", "a b", "é", &"a".repeat(65)] {
            assert!(VariableName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn numbers_coerce_losslessly_from_text() {
        assert_eq!(
            VarType::Number.coerce(&json!("10000")).unwrap(),
            json!(10000)
        );
        assert_eq!(VarType::Number.coerce(&json!("2.5")).unwrap(), json!(2.5));
        assert_eq!(VarType::Number.coerce(&json!("1e3")).unwrap(), json!(1000));
        for bad in [
            json!("ten"),
            json!(" 1"),
            json!(""),
            json!(true),
            json!(["1"]),
            json!("1e400"),
        ] {
            assert!(VarType::Number.coerce(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn booleans_accept_only_true_and_false() {
        assert_eq!(
            VarType::Boolean.coerce(&json!("true")).unwrap(),
            json!(true)
        );
        assert_eq!(
            VarType::Boolean.coerce(&json!(false)).unwrap(),
            json!(false)
        );
        for bad in [json!("yes"), json!(1), json!("TRUE ")] {
            assert!(VarType::Boolean.coerce(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn strings_take_numbers_and_booleans_as_text() {
        assert_eq!(VarType::String.coerce(&json!(42)).unwrap(), json!("42"));
        assert_eq!(VarType::String.coerce(&json!(true)).unwrap(), json!("true"));
        assert!(VarType::String.coerce(&json!(["a"])).is_err());
    }

    #[test]
    fn lists_take_a_single_string_and_scalar_items() {
        assert_eq!(VarType::List.coerce(&json!("a")).unwrap(), json!(["a"]));
        assert_eq!(
            VarType::List.coerce(&json!(["a", 1, true])).unwrap(),
            json!(["a", "1", "true"])
        );
        assert!(VarType::List.coerce(&json!([null])).is_err());
        assert!(VarType::List.coerce(&json!(3)).is_err());
    }

    #[test]
    fn refusal_names_expected_type_and_what_was_sent() {
        let err = VarType::Number.coerce(&json!("lots")).unwrap_err();
        assert_eq!(err, r#"expected a number, got the string "lots""#);
    }

    #[test]
    fn resolve_prefers_context_then_default_and_adds_system_variables() {
        let schema = vec![
            VariableDef {
                name: VariableName::parse("priority").unwrap(),
                ty: VarType::String,
                default: Some(json!("normal")),
            },
            VariableDef {
                name: VariableName::parse("risk_score").unwrap(),
                ty: VarType::Number,
                default: Some(json!(0)),
            },
        ];
        let context = json!({"priority": "high", "extra": [1, 2], "gone": null});
        let vars = resolve(
            &schema,
            context.as_object().unwrap().clone(),
            [
                ("caller_phone", json!("+12125551234")),
                ("called_number", Value::Null),
                ("call_id", json!("c")),
            ],
        );
        assert_eq!(vars["priority"], json!("high"));
        assert_eq!(vars["risk_score"], json!(0));
        assert_eq!(vars["extra"], json!([1, 2]));
        assert!(!vars.contains_key("gone"));
        assert_eq!(vars["caller_phone"], json!("+12125551234"));
        let wrong_type = resolve(
            &schema,
            json!({"risk_score": "high"}).as_object().unwrap().clone(),
            [
                ("caller_phone", Value::Null),
                ("called_number", Value::Null),
                ("call_id", json!("c")),
            ],
        );
        assert_eq!(
            wrong_type["risk_score"],
            json!(0),
            "a value of the wrong type falls back"
        );
    }
}
