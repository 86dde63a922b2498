//! Settlement rules: does the backend's reply make a charge stand?
//!
//! The backend answers most errors as HTTP 200 with `{"error": ...}` or `{"status": "blocked"}`,
//! so a status class alone cannot say whether work was accepted. A route's rule may also test a
//! top-level JSON field; only then is the reply body read, up to [`JSON_CAP`] (the backend's JSON
//! replies are small), and passed on unchanged. Everything else streams untouched.

use axum::body::Body;
use http::Response;

use crate::config::{JsonPredicate, SettleRule};
use crate::formats::json_field;
use crate::proxy::reply_body::{Capped, read_capped};

/// Largest reply body read to evaluate a JSON predicate.
pub const JSON_CAP: usize = 64 * 1024;

/// The verdict on a reply, and the reply to pass on.
pub struct Judged {
    pub response: Response<Body>,
    pub success: bool,
    /// The body ended with an error before the verdict (the backend died mid-reply).
    pub broken: bool,
}

pub async fn judge(resp: Response<Body>, rule: &SettleRule) -> Judged {
    let status = resp.status().as_u16();
    let status_ok = rule.status.iter().any(|s| s.matches(status));
    let Some(predicate) = rule.json.as_ref().filter(|_| status_ok) else {
        return Judged {
            response: resp,
            success: status_ok,
            broken: false,
        };
    };
    let (parts, body) = resp.into_parts();
    match read_capped(body, JSON_CAP).await {
        Capped::Whole(bytes) => {
            let success = holds(predicate, &bytes);
            Judged {
                response: Response::from_parts(parts, Body::from(bytes)),
                success,
                broken: false,
            }
        }
        // Too large to judge: pass it on whole, and do not charge.
        Capped::TooLarge(body) => Judged {
            response: Response::from_parts(parts, body),
            success: false,
            broken: false,
        },
        Capped::Broken(bytes) => Judged {
            response: Response::from_parts(parts, Body::from(bytes)),
            success: false,
            broken: true,
        },
    }
}

/// Evaluates a predicate on a reply body. `null` or an object without the field counts as
/// "absent"; anything that is not JSON satisfies no predicate.
pub fn holds(predicate: &JsonPredicate, body: &[u8]) -> bool {
    let (JsonPredicate::Equals { field, .. } | JsonPredicate::Absent { field }) = predicate;
    let Ok(found) = json_field::read(body, field) else {
        return false;
    };
    match predicate {
        JsonPredicate::Equals { value: want, .. } => {
            matches!(&found, json_field::Field::Text(v) if v == want)
        }
        JsonPredicate::Absent { .. } => {
            matches!(
                found,
                json_field::Field::NullDocument | json_field::Field::Missing
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates_read_the_backend_replies() {
        let submitted = JsonPredicate::Equals {
            field: "status".into(),
            value: "submitted".into(),
        };
        assert!(holds(
            &submitted,
            br#"{"status":"submitted","task_id":"main_p_d"}"#
        ));
        assert!(!holds(
            &submitted,
            br#"{"status":"blocked","message":"locked"}"#
        ));
        assert!(!holds(&submitted, br#"{"status":"processing"}"#));
        assert!(!holds(&submitted, b"<html>"));
        let no_error = JsonPredicate::Absent {
            field: "error".into(),
        };
        assert!(holds(&no_error, br#"{"sagittal_png":"L3_png/x.png"}"#));
        assert!(
            holds(&no_error, b"null"),
            "the platform branch's l3_detect returns null"
        );
        assert!(!holds(
            &no_error,
            "{\"error\":\"请先上传 DICOM\"}".as_bytes()
        ));
        assert!(!holds(&no_error, b"not json"));
    }
}
