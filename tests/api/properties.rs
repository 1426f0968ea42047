//! Properties of the rules every webhook goes through, checked on generated input: phone
//! normalisation and the payload validator.

use precall::domain::payload::{self, PayloadError, ValidPayload};
use precall::domain::phone::{PhoneNumber, Region};
use precall::domain::variables::{VarType, VariableDef, VariableName};
use precall::phones::Phones;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const AGENT: &str = "oJvfgs3Eg8DEMOGnQES7";

fn region(code: &str) -> Region {
    Region::parse(code).unwrap()
}

/// A region, its country code, international call prefix, national prefix, and a pattern
/// of national numbers that are mostly valid there.
const PLANS: [(&str, &str, &str, &str, &str); 4] = [
    (
        "US",
        "1",
        "011",
        "",
        "(212|646|415|312|617|202|305|713)[2-9][0-9]{6}",
    ),
    ("GB", "44", "00", "0", "7[1-57-9][0-9]{8}"),
    ("FR", "33", "00", "0", "[67][0-9]{8}"),
    ("DE", "49", "00", "0", "1(5[12]|6[023]|7[0-9])[0-9]{7}"),
];

/// A plan and a national number that is valid in it, with its E.164 form.
fn valid_number() -> impl Strategy<Value = (usize, String, String)> {
    (0..PLANS.len())
        .prop_flat_map(|plan| (Just(plan), PLANS[plan].4))
        .prop_filter_map("not valid in its numbering plan", |(plan, national)| {
            let (code, cc, _, trunk, _) = PLANS[plan];
            let e164 = format!("+{cc}{national}");
            // The national form is taken only when the numbering plan knows the number (a
            // `+` form would be kept as given even when it does not).
            let parsed = PhoneNumber::parse(&format!("{trunk}{national}"), region(code)).ok()?;
            (parsed.as_str() == e164).then_some((plan, national, e164))
        })
}

/// Writes `digits` with a separator (maybe none) after each digit.
fn spaced(digits: &str, seps: &[&str]) -> String {
    digits
        .chars()
        .zip(seps.iter().cycle())
        .map(|(d, s)| format!("{d}{s}"))
        .collect::<String>()
        .trim_end_matches([' ', '-', '.'])
        .to_owned()
}

fn separators() -> impl Strategy<Value = Vec<&'static str>> {
    prop::collection::vec(prop::sample::select(vec!["", "", "", " ", "-", "."]), 1..16)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Normalising a normalised number gives it back, in its region and in any other.
    #[test]
    fn normalising_is_idempotent(text in "[+(]?[0-9 ().\\-/+]{1,24}", plan in 0..PLANS.len(), other in 0..PLANS.len()) {
        let home = region(PLANS[plan].0);
        if let Ok(once) = PhoneNumber::parse(&text, home) {
            prop_assert_eq!(PhoneNumber::parse(once.as_str(), home), Ok(once.clone()));
            prop_assert_eq!(PhoneNumber::parse(once.as_str(), region(PLANS[other].0)), Ok(once.clone()));
        }
    }

    /// Whatever it is given, normalisation answers (it never panics) and what it accepts is
    /// a `+` and 7 to 15 digits.
    #[test]
    fn normalising_any_text_answers_with_e164_or_a_reason(text in "\\PC{0,48}", plan in 0..PLANS.len()) {
        match PhoneNumber::parse(&text, region(PLANS[plan].0)) {
            Ok(p) => {
                let digits = p.as_str().strip_prefix('+').expect("starts with +");
                prop_assert!((7..=15).contains(&digits.len()), "{}", p.as_str());
                prop_assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{}", p.as_str());
            }
            Err(reason) => prop_assert!(!reason.is_empty()),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// One number written every usual way is one caller: one key.
    #[test]
    fn variants_of_one_number_map_to_one_key(
        (plan, national, e164) in valid_number(),
        seps in separators(),
        bracket in any::<bool>(),
    ) {
        let (code, cc, idd, trunk, _) = PLANS[plan];
        let home = region(code);
        let national_written = if bracket {
            format!("({}) {}", &national[..3], spaced(&national[3..], &seps))
        } else {
            spaced(&national, &seps)
        };
        let mut variants = vec![
            format!("+{cc} {national_written}"),
            format!("+{}", spaced(&format!("{cc}{national}"), &seps)),
            format!("{idd} {cc} {national_written}"),
            format!("{trunk}{national_written}"),
            format!("  {e164}  "),
        ];
        if code == "US" {
            variants.push(format!("{cc}{national}"));
            variants.push(format!("{cc}-{national_written}"));
        }
        let phones = Phones::default();
        for variant in &variants {
            prop_assert_eq!(
                PhoneNumber::parse(variant, home).map(PhoneNumber::into_string),
                Ok(e164.clone()),
                "{:?} in {}", variant, code
            );
            // The remembering normaliser the ingest uses agrees, asked twice.
            for _ in 0..2 {
                prop_assert_eq!(phones.parse(variant, home).map(PhoneNumber::into_string), Ok(e164.clone()));
            }
        }
    }
}

// ---- the payload validator ----------------------------------------------------------------

fn us() -> Region {
    region("US")
}

fn schema() -> Vec<VariableDef> {
    [
        ("budget", VarType::Number),
        ("flagged", VarType::Boolean),
        ("customer_name", VarType::String),
        ("tags", VarType::List),
    ]
    .into_iter()
    .map(|(name, ty)| VariableDef {
        name: VariableName::parse(name).unwrap(),
        ty,
        default: None,
    })
    .collect()
}

/// Parses and validates `body` as the ingest does.
fn check(body: &[u8]) -> Result<ValidPayload, PayloadError> {
    let raw = payload::parse(body)?;
    payload::validate(raw, AGENT, &schema(), |p| PhoneNumber::parse(p, us()))
        .map_err(PayloadError::Invalid)
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter_map("not a JSON number", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        (-1.0e6..1.0e6f64).prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::String),
        "-?[0-9]{1,17}(\\.[0-9]{1,4})?".prop_map(Value::String),
        prop::sample::select(vec!["true", "false", "yes", ""]).prop_map(|s| json!(s)),
    ]
}

/// Any JSON value, nested a little.
fn any_json() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}|\\PC{0,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A field's value as senders send them: mostly the allowed shapes, sometimes not.
fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => scalar(),
        3 => prop::collection::vec(scalar(), 0..5).prop_map(Value::Array),
        1 => any_json(),
    ]
}

/// A payload about a known caller with generated fields, named like the schema's or not.
fn payload_object() -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        prop::sample::select(vec!["budget", "flagged", "customer_name", "tags"])
            .prop_map(String::from),
        "[A-Za-z_][A-Za-z0-9_]{0,10}",
        "\\PC{1,8}",
    ];
    (
        prop::collection::vec((name, field_value()), 0..12),
        prop::sample::select(vec![
            "+1 (212) 555-1234",
            "12125551234",
            "+1234567890",
            "212.555.0100",
            "call me",
        ]),
    )
        .prop_map(|(fields, phone)| {
            let mut object = Map::new();
            object.insert("agentId".into(), json!(AGENT));
            object.insert("phoneNumber".into(), json!(phone));
            for (k, v) in fields {
                object.insert(k, v);
            }
            Value::Object(object)
        })
}

/// Bytes that are JSON, JSON with damage, or noise.
fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        payload_object().prop_map(|v| v.to_string().into_bytes()),
        any_json().prop_map(|v| v.to_string().into_bytes()),
        (
            payload_object(),
            any::<prop::sample::Index>(),
            prop::collection::vec(any::<u8>(), 0..4)
        )
            .prop_map(|(v, at, junk)| {
                let mut bytes = v.to_string().into_bytes();
                let at = at.index(bytes.len() + 1);
                bytes.splice(at..at, junk);
                bytes
            }),
        (payload_object(), any::<prop::sample::Index>()).prop_map(|(v, at)| {
            let mut bytes = v.to_string().into_bytes();
            bytes.truncate(at.index(bytes.len() + 1));
            bytes
        }),
        prop::collection::vec(any::<u8>(), 0..256),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    /// The validator answers any bytes (it never panics): with the fields to cache, or with
    /// problems that each say something.
    #[test]
    fn the_validator_answers_any_bytes(body in body_bytes()) {
        match check(&body) {
            Ok(valid) => prop_assert!(valid.phone.as_str().starts_with('+')),
            Err(PayloadError::Malformed(m)) => prop_assert!(!m.is_empty()),
            Err(PayloadError::Invalid(problems)) => {
                prop_assert!(!problems.is_empty());
                prop_assert!(problems.iter().all(|p| !p.detail.is_empty()));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// What is accepted is kept as it would be read back: the cached fields, sent again with
    /// the normalised phone, are accepted again with the same values.
    #[test]
    fn accepted_fields_revalidate_to_the_same_values(object in payload_object()) {
        let Ok(first) = check(object.to_string().as_bytes()) else {
            return Ok(());
        };
        let mut again = first.fields.clone();
        again.insert("agentId".into(), json!(AGENT));
        again.insert("phoneNumber".into(), json!(first.phone.as_str()));
        let cached = Value::Object(first.fields.clone()).to_string();
        let resent = Value::Object(again).to_string();
        let second = check(resent.as_bytes());
        prop_assert!(second.is_ok(), "{} was refused: {:?}", resent, second);
        let second = second.unwrap();
        prop_assert_eq!(&second.phone, &first.phone);
        prop_assert_eq!(&second.fields, &first.fields);
        // And the cached text reads back as the same fields.
        let read_back: Map<String, Value> = serde_json::from_str(&cached).unwrap();
        prop_assert_eq!(read_back, first.fields);
    }
}
