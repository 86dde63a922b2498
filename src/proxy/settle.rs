//! Settlement rules: does the backend's reply make a charge stand?
//!
//! The backend answers most errors as HTTP 200 with `{"error": ...}` or `{"status": "blocked"}`,
//! so a status class alone cannot say whether work was accepted. A route's rule may also test a
//! top-level JSON field; only then is the reply body read, up to [`JSON_CAP`] (the backend's JSON
//! replies are small), and passed on unchanged. Everything else streams untouched.

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http::Response;
use http_body_util::BodyExt;

use crate::config::{JsonPredicate, SettleRule};

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
    let (parts, mut body) = resp.into_parts();
    let mut buf = BytesMut::new();
    loop {
        match body.frame().await {
            None => break,
            Some(Err(_)) => {
                return Judged {
                    response: Response::from_parts(parts, Body::from(buf.freeze())),
                    success: false,
                    broken: true,
                };
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                    if buf.len() > JSON_CAP {
                        // Too large to judge: pass it on whole, and do not charge.
                        let prefix = prefixed(buf.freeze(), body);
                        return Judged {
                            response: Response::from_parts(parts, prefix),
                            success: false,
                            broken: false,
                        };
                    }
                }
            }
        }
    }
    let bytes = buf.freeze();
    let success = holds(predicate, &bytes);
    Judged {
        response: Response::from_parts(parts, Body::from(bytes)),
        success,
        broken: false,
    }
}

/// The bytes already read, followed by the rest of the body.
fn prefixed(prefix: Bytes, rest: Body) -> Body {
    let head = http_body_util::Full::new(prefix).map_err(|never| match never {});
    Body::new(Chain {
        head: Some(head),
        rest,
    })
}

struct Chain<A, B> {
    head: Option<A>,
    rest: B,
}

impl<A, B> http_body::Body for Chain<A, B>
where
    A: http_body::Body<Data = Bytes, Error = axum::Error> + Unpin,
    B: http_body::Body<Data = Bytes, Error = axum::Error> + Unpin,
{
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        use std::task::Poll;
        if let Some(head) = self.head.as_mut() {
            match std::pin::Pin::new(head).poll_frame(cx) {
                Poll::Ready(None) => self.head = None,
                other => return other,
            }
        }
        std::pin::Pin::new(&mut self.rest).poll_frame(cx)
    }
}

/// Evaluates a predicate on a reply body. `null` or an object without the field counts as
/// "absent"; anything that is not JSON satisfies no predicate.
pub fn holds(predicate: &JsonPredicate, body: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    match predicate {
        JsonPredicate::Equals { field, value: want } => value
            .get(field)
            .and_then(|v| v.as_str())
            .is_some_and(|v| v == want),
        JsonPredicate::Absent { field } => match &value {
            serde_json::Value::Null => true,
            serde_json::Value::Object(map) => !map.contains_key(field),
            _ => false,
        },
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
