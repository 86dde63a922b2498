//! One top-level field of a JSON reply, read without building the reply as a
//! `serde_json::Value`: the metered route reads its reply twice (does the charge stand, which
//! task id did it hand out), and a `Value` of every field cost more than the rest of either
//! look. The other fields are skipped as they are parsed; the document is still checked whole.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;

/// What a JSON document holds at one top-level field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// The document is `null`.
    NullDocument,
    /// The document is JSON but not an object (an array, a string, a number, a boolean).
    NotObject,
    /// An object without the field.
    Missing,
    /// The field holds a string (of a key given twice, the last, as JSON readers take it).
    Text(String),
    /// The field holds something else (`null`, a number, an object...).
    Other,
}

/// `field` of the JSON document `body`; `Err` when `body` is not one JSON document.
pub fn read(body: &[u8], field: &str) -> Result<Field, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let found = Seek(field).deserialize(&mut de)?;
    de.end()?;
    Ok(found)
}

/// Looks for one key in the top-level object.
struct Seek<'f>(&'f str);

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = Field;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Field, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seek<'_> {
    type Value = Field;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON document")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field, A::Error> {
        let mut found = Field::Missing;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == self.0 {
                // Only this value is built (a short string, as a rule).
                found = match map.next_value::<serde_json::Value>()? {
                    serde_json::Value::String(text) => Field::Text(text),
                    _ => Field::Other,
                };
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Field::NotObject)
    }

    fn visit_unit<E>(self) -> Result<Field, E> {
        Ok(Field::NullDocument)
    }

    fn visit_str<E>(self, _: &str) -> Result<Field, E> {
        Ok(Field::NotObject)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Field, E> {
        Ok(Field::NotObject)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Field, E> {
        Ok(Field::NotObject)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Field, E> {
        Ok(Field::NotObject)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Field, E> {
        Ok(Field::NotObject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_top_level_field_is_read_as_json_reads_it() {
        let read = |body: &str| read(body.as_bytes(), "task_id");
        assert_eq!(
            read(r#"{"status":"submitted","task_id":"main_p_d","n":[1,{"task_id":2}]}"#).unwrap(),
            Field::Text("main_p_d".into())
        );
        // Escapes are decoded; of a key given twice the last counts.
        assert_eq!(
            read(r#"{"task_id":"a","task_id":"main_\u5f20_d"}"#).unwrap(),
            Field::Text("main_张_d".into())
        );
        assert_eq!(read(r#"{"task_id":null}"#).unwrap(), Field::Other);
        assert_eq!(read(r#"{"task_id":{"x":1}}"#).unwrap(), Field::Other);
        assert_eq!(read(r#"{"x":{"task_id":"no"}}"#).unwrap(), Field::Missing);
        assert_eq!(read("null").unwrap(), Field::NullDocument);
        assert_eq!(read(r#"["task_id"]"#).unwrap(), Field::NotObject);
        assert_eq!(read(" 7 ").unwrap(), Field::NotObject);
        assert!(read("<html>").is_err());
        assert!(read(r#"{"task_id":"a"} {}"#).is_err());
        assert!(read(r#"{"task_id":"a""#).is_err());
    }
}
