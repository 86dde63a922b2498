//! The backend's replies made the caller's: lists filtered to what the caller owns, and the
//! caller's namespace taken out of every name, so a client sees the names it typed. These work
//! on a whole (small) JSON reply; `gate::own_reply` decides when they apply.

use serde_json::Value;
use smallvec::SmallVec;
use std::collections::HashSet;

use super::Namespace;
use crate::formats::json_field;

/// The reply text without the namespace anywhere in it; `None` when it holds none (the reply
/// passes as it is). The namespace is a `~`-ended account id no name can hold by accident, so
/// removing it is exact.
pub fn strip_namespace(body: &[u8], ns: &Namespace) -> Option<Vec<u8>> {
    // Found by its `~` (rare in a reply) and the bytes before it: replies are small, and this
    // costs less than setting up a substring search for each one. Found once: a status reply
    // holds one name, kept on the stack.
    let len = ns.text_len();
    let starts: SmallVec<[usize; 4]> = memchr::memchr_iter(b'~', body)
        .filter(|&tilde| ns.ends_at(body, tilde))
        .map(|tilde| tilde + 1 - len)
        .collect();
    if starts.is_empty() {
        return None;
    }
    // Exactly as long as the result, so the body takes the vector without another allocation.
    let mut out = Vec::with_capacity(body.len() - starts.len() * len);
    let mut from = 0;
    for at in starts {
        out.extend_from_slice(&body[from..at]);
        from = at + len;
    }
    out.extend_from_slice(&body[from..]);
    Some(out)
}

/// The ids of an `owned_list` field (the keys of its object).
pub fn listed_ids<'a>(reply: &'a Value, field: &str) -> Vec<&'a str> {
    match reply.get(field) {
        Some(Value::Object(map)) => map.keys().map(String::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Keeps only the `owned` entries of an `owned_list` field and makes `count` match.
pub fn keep_owned(reply: &mut Value, field: &str, owned: &HashSet<String>) {
    if let Some(Value::Object(map)) = reply.get_mut(field) {
        map.retain(|id, _| owned.contains(id));
    }
    recount(reply, field);
}

/// Keeps only the caller's entries of a `patient_list` field (folder names, in which the
/// backend shows `_` as `-`) and makes `count` match; the namespace is stripped later with the
/// rest of the reply.
pub fn keep_patients(reply: &mut Value, field: &str, ns: &Namespace) {
    if let Some(Value::Array(items)) = reply.get_mut(field) {
        items.retain(|v| v.as_str().is_some_and(|s| ns.starts(s)));
    }
    recount(reply, field);
}

/// A top-level `count` says how many entries `field` has.
fn recount(reply: &mut Value, field: &str) {
    let n = match reply.get(field) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    };
    if let Some(obj) = reply.as_object_mut() {
        if obj.contains_key("count") {
            obj.insert("count".into(), n.into());
        }
    }
}

/// The id a `creates` reply hands out, if it has one: the non-empty string in the top-level
/// `field` of a JSON object; `Err` when the reply is not JSON.
pub fn created_id(reply: &[u8], field: &str) -> Result<Option<String>, serde_json::Error> {
    Ok(match json_field::read(reply, field)? {
        json_field::Field::Text(id) if !id.is_empty() => Some(id),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_namespace_comes_out_everywhere() {
        let ns = Namespace::of(&crate::formats::ids::UserId::from(String::from("u1")));
        let body = br#"{"task_id":"main_u1~p_d","output_dir":"data/x/u1~p_d/output"}"#;
        let out = strip_namespace(body, &ns).unwrap();
        assert_eq!(
            out,
            br#"{"task_id":"main_p_d","output_dir":"data/x/p_d/output"}"#
        );
        assert_eq!(strip_namespace(br#"{"status":"ok"}"#, &ns), None);
    }

    #[test]
    fn the_created_id_is_the_non_empty_string_of_its_field() {
        let id = |body: &str| created_id(body.as_bytes(), "task_id");
        assert_eq!(
            id(r#"{"status":"submitted","task_id":"main_u1~p_d","message":"ok"}"#).unwrap(),
            Some("main_u1~p_d".to_string())
        );
        assert_eq!(id(r#"{"task_id":""}"#).unwrap(), None);
        assert_eq!(id(r#"{"task_id":7}"#).unwrap(), None);
        assert_eq!(id(r#"{"status":"error"}"#).unwrap(), None);
        assert_eq!(id("null").unwrap(), None);
        assert!(id("<html>").is_err());
    }

    #[test]
    fn lists_keep_the_callers_own_and_count_them() {
        let mut r = json!({"tasks": {"main_a": {}, "main_b": {}, "cont_a": {}}, "count": 3});
        let owned: HashSet<String> = ["main_a".to_string(), "cont_a".to_string()].into();
        keep_owned(&mut r, "tasks", &owned);
        assert_eq!(
            r,
            json!({"tasks": {"main_a": {}, "cont_a": {}}, "count": 2})
        );

        let ns = Namespace::of(&crate::formats::ids::UserId::from(String::from("u1")));
        let mut r = json!({"count": 3, "patients": ["u1~p-d", "u2~p-d", "p-d"]});
        keep_patients(&mut r, "patients", &ns);
        assert_eq!(r, json!({"count": 1, "patients": ["u1~p-d"]}));
    }
}
