//! Names that people give things and that pages show: visible, without control
//! characters, and of a bounded length. Text-direction characters are kept, and pages
//! isolate each name so that they cannot run on into the text after it.

use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor, value::MapAccessDeserializer};

/// Characters that draw nothing themselves (Unicode's format characters, Cf, and the
/// blank letters: the Hangul fillers and the blank Braille pattern): a name of only these,
/// and spaces, is an invisible link.
fn is_format(c: char) -> bool {
    matches!(c,
        '\u{115F}' | '\u{1160}' | '\u{2800}' | '\u{3164}' | '\u{FFA0}'
        | '\u{00AD}' | '\u{0600}'..='\u{0605}' | '\u{061C}' | '\u{06DD}' | '\u{070F}'
        | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}' | '\u{E0001}' | '\u{E0020}'..='\u{E007F}')
}

/// A name, trimmed: `None` when blank (the caller's default applies), else at most `max`
/// characters, with at least one that is visible and none that is a control character
/// (NUL, a bell, an escape, a line break).
pub fn check_name(name: &str, max: usize) -> Result<Option<String>, String> {
    let name = name.trim();
    if name.is_empty() {
        return Ok(None);
    }
    if name.chars().count() > max {
        return Err(format!("a name is 1 to {max} characters"));
    }
    // The line and paragraph separators break a line as a newline does.
    if let Some(c) = name
        .chars()
        .find(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
    {
        return Err(format!(
            "a name cannot hold control characters (U+{:04X})",
            u32::from(c)
        ));
    }
    if name.chars().all(|c| c.is_whitespace() || is_format(c)) {
        return Err("a name needs a visible character, not only invisible ones".into());
    }
    Ok(Some(name.to_owned()))
}

/// A name given where one may be left out: `None` when left out (the caller's default
/// applies), else as [`check_name`] has it, and a blank one refused rather than defaulted.
pub fn given_name(name: Option<&str>, max: usize) -> Result<Option<String>, String> {
    match name.map(|n| check_name(n, max)).transpose()? {
        Some(None) => Err(format!("a name is 1 to {max} characters")),
        checked => Ok(checked.flatten()),
    }
}

/// A struct read from a JSON object only. serde's derived `Deserialize` for a struct also
/// takes a list of its fields in order, which an API documented with objects must refuse.
#[derive(Debug)]
pub struct ObjectOnly<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = ObjectOnly<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(a)).map(ObjectOnly)
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_visible_and_free_of_control_characters() {
        assert_eq!(
            check_name("  Retell main ", 100),
            Ok(Some("Retell main".into()))
        );
        assert_eq!(check_name("   ", 100), Ok(None));
        assert_eq!(check_name("Zoë — 東京", 100), Ok(Some("Zoë — 東京".into())));
        for bad in [
            "\u{200B}\u{200B}",
            "\u{202E}\u{2066}",
            "a\u{0}b",
            "line\nbreak",
            "bell\u{7}",
            "line\u{2028}separator",
            // Blank letters: Hangul fillers, the blank Braille pattern.
            "\u{3164}\u{3164}",
            "\u{115F}\u{1160}",
            "\u{FFA0}",
            "\u{2800}\u{2800}",
        ] {
            assert!(check_name(bad, 100).is_err(), "{bad:?}");
        }
        // Direction marks beside visible text are kept: pages isolate each name.
        assert_eq!(check_name("a\u{202E}b", 100), Ok(Some("a\u{202E}b".into())));
        assert!(check_name(&"w".repeat(101), 100).is_err());
        assert!(check_name(&"é".repeat(100), 100).is_ok());
    }

    #[test]
    fn a_name_left_out_defaults_but_a_blank_one_given_is_refused() {
        assert_eq!(given_name(None, 100), Ok(None));
        assert_eq!(given_name(Some(" Main "), 100), Ok(Some("Main".into())));
        assert!(given_name(Some("   "), 100).is_err());
        assert!(given_name(Some("a\u{7}"), 100).is_err());
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Pair {
        a: i64,
        b: String,
    }

    #[test]
    fn only_an_object_is_read_into_a_struct() {
        let ok: ObjectOnly<Pair> = serde_json::from_str(r#"{"a": 1, "b": "x"}"#).unwrap();
        assert_eq!(
            ok.0,
            Pair {
                a: 1,
                b: "x".into()
            }
        );
        let list = serde_json::from_str::<ObjectOnly<Pair>>(r#"[1, "x"]"#).unwrap_err();
        assert!(list.is_data(), "{list}");
        assert!(
            list.to_string().contains("expected a JSON object"),
            "{list}"
        );
    }
}
