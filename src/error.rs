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
    /// An unreachable database fails closed with 503; a unique-constraint race is a 409; anything
    /// else is the gate's fault (500), logged with its cause and answered without it.
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::Unavailable(m) => {
                tracing::warn!(error = %m, "database unavailable");
                GateError::unavailable("the database is unavailable; try again shortly")
            }
            StoreError::Conflict(field) => GateError::new(
                StatusCode::CONFLICT,
                format!("`{field}` is already taken: another record has the same value"),
            ),
            StoreError::Other(m) => {
                tracing::error!(error = %m, "store error");
                GateError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
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
