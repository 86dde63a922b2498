//! The gate's one error type, rendered as FastAPI-style JSON `{"detail": "..."}`.
//!
//! The existing frontends show `response.data.detail` to the person, so every error the gate
//! makes itself (a bad path, a missing credential, an unreachable upstream) must have that shape
//! and a status that says whose fault it was: 4xx for the client, 502/503/504 for what is behind
//! the gate. Nothing here ever becomes a 500 because of input.

use axum::body::Body;
use axum::response::IntoResponse;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, WWW_AUTHENTICATE};
use http::{Response, StatusCode};

/// Why the domain (accounts, billing, tenancy) refuses a request or cannot serve it, in its
/// own words: it says what kind of refusal it is and why, never which HTTP status that is. The
/// status, headers and body are chosen where the domain meets HTTP (`api::refusals`, used by
/// the API's handlers and the gate's phases through `?`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    /// What was wrong, in words a person can act on.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The request cannot be read as what it claims to be.
    Malformed,
    /// Read, but a value is not acceptable (a weak password, a bad code).
    Invalid,
    /// No credential, or one that proves nothing (expired, revoked, unknown).
    Unauthenticated,
    /// Known, and not allowed (a disabled account, an unverified address).
    Forbidden,
    /// No such thing, or none this caller may know of.
    NotFound,
    /// The state of things forbids it (a name taken, a change already scheduled).
    Conflict,
    /// Too many attempts: try again after this many seconds, when that is known.
    TooMany { retry_after_secs: Option<u64> },
    /// The database cannot answer now: try again shortly.
    Unavailable,
    /// Something the caller cannot fix went wrong (logged where it happened).
    Failed,
}

impl Refusal {
    pub fn new(kind: RefusalKind, detail: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            detail: detail.into(),
        }
    }

    pub fn malformed(detail: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Malformed, detail)
    }

    pub fn invalid(detail: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Invalid, detail)
    }

    pub fn unauthenticated(detail: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Unauthenticated, detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Forbidden, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::NotFound, detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Conflict, detail)
    }

    pub fn too_many(retry_after_secs: Option<u64>, detail: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::TooMany { retry_after_secs }, detail)
    }

    pub fn unavailable(detail: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Unavailable, detail)
    }

    pub fn failed(detail: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Failed, detail)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.detail)
    }
}

impl std::error::Error for Refusal {}

impl From<crate::store::StoreError> for Refusal {
    /// An unreachable database is a refusal to try again shortly; a unique-constraint race a
    /// conflict; anything else the gate's fault, logged with its cause and told without it.
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::Unavailable(m) => {
                tracing::warn!(error = %m, "database unavailable");
                Refusal::unavailable("the database is unavailable; try again shortly")
            }
            StoreError::Conflict(field) => Refusal::conflict(format!(
                "`{field}` is already taken: another record has the same value"
            )),
            StoreError::Other(m) => {
                tracing::error!(error = %m, "store error");
                Refusal::failed("internal error")
            }
        }
    }
}

/// An error answered to the client as `{"detail": ...}` with `status`.
#[derive(Debug, Clone)]
pub struct GateError {
    pub status: StatusCode,
    pub detail: String,
    /// Extra headers the status calls for (`WWW-Authenticate`, `Allow`, `Retry-After`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Extra top-level fields of the body, beside `detail` (the 402 quota body the frontends
    /// read: `message`, `quota_type`, `remaining`, `required`, `upgrade_url`).
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl GateError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        GateError {
            status,
            detail: detail.into(),
            headers: Vec::new(),
            fields: serde_json::Map::new(),
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn with_field(mut self, name: &str, value: impl Into<serde_json::Value>) -> Self {
        self.fields.insert(name.to_string(), value.into());
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 401 with `WWW-Authenticate: Bearer`, as RFC 6750 and the original middleware answer.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, detail)
            .with_header(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn payload_too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds the limit of {limit} bytes for this route"),
        )
    }

    pub fn bad_gateway(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, detail)
    }

    pub fn gateway_timeout(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, detail)
    }

    /// 503 with `Retry-After`: the trouble is expected to pass (the database is unreachable or
    /// locked), and a client that waits a few seconds should try again.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, detail).with_header(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("5"),
        )
    }

    /// Renders the error; the body is always valid JSON, whatever `detail` holds.
    pub fn into_http(self) -> Response<Body> {
        let mut body = self.fields;
        body.insert("detail".into(), self.detail.into());
        let body = serde_json::Value::Object(body).to_string();
        let mut resp = Response::new(Body::from(body));
        *resp.status_mut() = self.status;
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in self.headers {
            resp.headers_mut().append(name, value);
        }
        resp
    }
}

impl From<crate::store::StoreError> for GateError {
    /// As the domain would refuse it (`Refusal`), rendered as HTTP.
    fn from(e: crate::store::StoreError) -> Self {
        Refusal::from(e).into()
    }
}

impl std::fmt::Display for GateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.detail)
    }
}

impl std::error::Error for GateError {}

impl IntoResponse for GateError {
    fn into_response(self) -> axum::response::Response {
        self.into_http()
    }
}

/// The JSON body every error carries, for the OpenAPI document.
#[derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What was wrong, in words a person can act on.
    pub detail: String,
}
