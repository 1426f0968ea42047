//! The first key that an object of a JSON text repeats, wherever it is: serde_json keeps
//! the last of them, so a document whose `"message"` appears twice would lose the first
//! silently. Ingest refuses repeated fields of its own reader; documents are read as
//! [`serde_json::Value`], so they are looked over first.

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::payload::Problem;

/// The JSON pointer of the first repeated key in `json`, and the key; `None` when no object
/// repeats a key. A repeat is found as soon as it is read, even in a text that breaks off
/// later, so read the text as JSON first: its reader says what is wrong with it.
pub fn first_repeated_key(json: &[u8]) -> Option<(String, String)> {
    let mut path = Vec::new();
    let mut found = None;
    let mut de = serde_json::Deserializer::from_slice(json);
    let _ = Walk {
        path: &mut path,
        found: &mut found,
    }
    .deserialize(&mut de);
    found
}

/// [`first_repeated_key`] as a problem to show: its pointer, and what to do.
pub fn repeated_key(json: &[u8]) -> Option<Problem> {
    first_repeated_key(json).map(|(pointer, key)| {
        Problem::at_pointer(
            pointer,
            format!("\"{key}\" is given twice in this object: give it once"),
        )
    })
}

fn pointer(path: &[String], last: &str) -> String {
    let mut p = String::new();
    for part in path.iter().map(String::as_str).chain([last]) {
        p.push('/');
        p.push_str(&part.replace('~', "~0").replace('/', "~1"));
    }
    p
}

struct Walk<'a> {
    path: &'a mut Vec<String>,
    found: &'a mut Option<(String, String)>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
        let Walk { path, found } = self;
        for i in 0.. {
            path.push(i.to_string());
            let more = a.next_element_seed(Walk {
                path: &mut *path,
                found: &mut *found,
            })?;
            path.pop();
            if more.is_none() {
                break;
            }
        }
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
        let Walk { path, found } = self;
        let mut seen = HashSet::new();
        while let Some(key) = a.next_key::<String>()? {
            if found.is_none() && !seen.insert(key.clone()) {
                *found = Some((pointer(path, &key), key.clone()));
            }
            path.push(key);
            a.next_value_seed(Walk {
                path: &mut *path,
                found: &mut *found,
            })?;
            path.pop();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_repeated_key_is_found_at_any_depth_with_its_pointer() {
        assert_eq!(first_repeated_key(br#"{"a": 1, "b": [1, {"c": 2}]}"#), None);
        assert_eq!(
            first_repeated_key(br#"{"a": 1, "a": 2}"#),
            Some(("/a".into(), "a".into()))
        );
        assert_eq!(
            first_repeated_key(
                br#"{"flows": [{"blocks": []}, {"blocks": [{"key": "x", "message": "a", "message": "b"}]}]}"#
            ),
            Some(("/flows/1/blocks/0/message".into(), "message".into()))
        );
        // The same key in two objects is no repeat; a key with / or ~ is escaped.
        assert_eq!(first_repeated_key(br#"[{"a": 1}, {"a": 2}]"#), None);
        assert_eq!(
            first_repeated_key(br#"{"m": {"a/b~": 1, "a/b~": 2}}"#),
            Some(("/m/a~1b~0".into(), "a/b~".into()))
        );
        // A text that breaks off says what it read up to there.
        assert_eq!(
            first_repeated_key(b"{\"a\": 1, \"a\""),
            Some(("/a".into(), "a".into()))
        );
        assert_eq!(first_repeated_key(b"{\"a\": "), None);
    }
}
