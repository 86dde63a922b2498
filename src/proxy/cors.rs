//! CORS on every response the gate sends, errors included.
//!
//! The original backend put CORS innermost, so its 401 and 402 answers reached browsers without
//! `Access-Control-Allow-Origin` and the frontends could not read them. Here CORS is the last
//! thing done to any response, whoever made it, and the backend's own CORS headers (it echoes
//! `Origin` by hand on images) are replaced so there is exactly one policy: the gate's.

use axum::body::Body;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use std::collections::HashSet;

use crate::config::CorsConfig;

const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";
/// Listed explicitly: with credentials, `*` does not cover `Authorization`.
const ALLOW_HEADERS: &str =
    "Authorization, Content-Type, Accept, X-API-Key, X-Requested-With, Idempotency-Key";
const EXPOSE_HEADERS: &str = "X-Request-Id, X-Quota-Type, X-Quota-Remaining, X-Quota-Used, RateLimit, RateLimit-Policy, Retry-After";

pub struct Cors {
    origins: HashSet<String>,
    credentials: bool,
    max_age: HeaderValue,
}

impl Cors {
    pub fn new(cfg: &CorsConfig) -> Cors {
        Cors {
            origins: cfg.allow_origins.iter().cloned().collect(),
            credentials: cfg.allow_credentials,
            max_age: HeaderValue::from(cfg.max_age_secs),
        }
    }

    fn allowed<'a>(&self, origin: Option<&'a HeaderValue>) -> Option<&'a HeaderValue> {
        origin.filter(|o| o.to_str().is_ok_and(|s| self.origins.contains(s)))
    }

    /// Answers a CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`);
    /// `None` when the request is not one. Preflights are never forwarded.
    pub fn preflight(&self, method: &Method, headers: &HeaderMap) -> Option<Response<Body>> {
        if method != Method::OPTIONS
            || !headers.contains_key(header::ORIGIN)
            || !headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return None;
        }
        let mut resp = Response::new(Body::empty());
        if self.allowed(headers.get(header::ORIGIN)).is_none() {
            *resp.status_mut() = StatusCode::FORBIDDEN;
            *resp.body_mut() =
                Body::from(r#"{"detail":"this origin is not allowed by the gate's CORS policy"}"#);
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return Some(resp);
        }
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        Some(resp)
    }

    /// Sets the CORS headers of a response to a request that carried `origin`.
    pub fn decorate(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        // The backend's own CORS headers, if it sent any: the gate's policy is the one that
        // holds.
        crate::proxy::headers::remove_all(
            headers,
            &[
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
            ],
        );
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
        let Some(origin) = self.allowed(origin) else {
            return;
        };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
}
