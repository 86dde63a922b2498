//! The one per-request context the phases share: each phase reads what the ones before it
//! decided and adds its own, and respond reports it. It lives in the request's future, so a
//! client that goes away drops it, and with it any reservation not yet settled (which refunds
//! it: `billing::Reservation`).

use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::quota::QuotaOutcome;
use crate::auth::Principal;
use crate::billing::Reservation;
use crate::proxy::body::Inbound;
use crate::proxy::headers::Peer;
use crate::tenancy::Namespace;

/// One request's state as it moves through the phases.
pub(super) struct RequestCtx<'a> {
    /// Who is on the other end of the connection.
    pub peer: &'a Peer,
    /// The request came over TLS (for `X-Forwarded-Proto`).
    pub secure: bool,
    pub started: Instant,
    /// The id the client gets back and the backend is given (`X-Request-Id`), and the key of
    /// the request's usage row.
    pub request_id: HeaderValue,
    /// The client's `Origin`, for CORS on the response.
    pub origin: Option<HeaderValue>,
    pub method: Method,
    /// The canonical path (phase 1): what is matched, charged and logged.
    pub path: String,
    /// The path the backend is sent where it differs from `path`: the caller's names and ids
    /// in the caller's namespace (phase 3).
    pub backend_path: Option<String>,
    /// The caller, once authenticated (phase 2); `None` on public routes.
    pub principal: Option<Principal>,
    /// The caller's namespace in the backend's names (phase 3), `None` for superusers and
    /// routes without isolation.
    pub namespace: Option<Namespace>,
    /// The charge held for this request between reserve (phase 4) and settle (phase 6).
    pub reservation: Option<Reservation>,
    /// The quota as settle (or a refused reserve) left it; respond writes its headers.
    pub quota: Option<QuotaOutcome>,
    pub log: RequestLog,
}

impl<'a> RequestCtx<'a> {
    pub fn new(req: &Request<Inbound>, peer: &'a Peer, secure: bool) -> RequestCtx<'a> {
        // Spelled on the stack, then once as a header value (which the backend's request shares).
        let mut spelled = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let request_id =
            HeaderValue::from_str(uuid::Uuid::new_v4().hyphenated().encode_lower(&mut spelled))
                .expect("a uuid is a valid header value");
        RequestCtx {
            peer,
            secure,
            started: Instant::now(),
            request_id,
            origin: req.headers().get(header::ORIGIN).cloned(),
            method: req.method().clone(),
            path: String::new(),
            backend_path: None,
            principal: None,
            namespace: None,
            reservation: None,
            quota: None,
            log: RequestLog::default(),
        }
    }

    /// The request id as text.
    pub fn request_id(&self) -> &str {
        self.request_id.to_str().expect("a uuid is visible ASCII")
    }
}

/// What the request log line reports besides status and timing.
#[derive(Default)]
pub(super) struct RequestLog {
    pub route: &'static str,
    pub user_id: Option<Arc<str>>,
    /// reserved, committed, refunded, denied, error, or empty for unmetered requests.
    pub quota: &'static str,
    /// How long the backend took to answer (its reply head), for proxied requests.
    pub upstream: Option<Duration>,
}

impl RequestLog {
    /// Counts the request and its latencies for `/metrics`.
    pub fn record_metrics(&self, status: StatusCode, total: Duration) {
        let route = if self.route.is_empty() {
            "rejected"
        } else {
            self.route
        };
        let class = match status.as_u16() {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        let m = crate::telemetry::meters();
        m.request(route, class).increment(1);
        m.duration(route).record(total);
        if let Some(up) = self.upstream {
            m.upstream.record(up);
            m.overhead.record(total.saturating_sub(up));
        }
        if !self.quota.is_empty() {
            m.quota(self.quota).increment(1);
        }
    }
}
