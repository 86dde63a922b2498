//! The one per-request context the phases share: each phase reads what the ones before it
//! decided and adds its own, and respond reports it. It lives in the request's future; a
//! metered request's context goes on to a task of its own if the client goes away before
//! settle, so the client does not decide its charge (`gate::detach`). A context dropped without
//! being responded to (the client left) still writes the request's log line, with what
//! settlement decided.

use crate::formats::ids::UserId;
use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode};
use std::time::{Duration, Instant};

use super::quota::QuotaOutcome;
use crate::auth::Principal;
use crate::billing::Reservation;
use crate::proxy::body::Inbound;
use crate::proxy::headers::Peer;
use crate::proxy::tenancy::Namespace;

/// One request's state as it moves through the phases.
pub(super) struct RequestCtx {
    /// Who is on the other end of the connection.
    pub peer: Peer,
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
    /// On a task's status route, the task's id as the backend knows it (phase 3), so its
    /// reply can settle the task's charge (phase 7).
    pub task_id: Option<String>,
    /// The charge held for this request between reserve (phase 4) and settle (phase 6).
    /// This and the two below are boxed: only metered requests have them, and inline they
    /// would add ~500 bytes to every request's future, which is moved at each await.
    pub reservation: Option<Box<Reservation>>,
    /// A charge settle judged to stand on a route that starts a task: own-the-reply commits it
    /// linked to the task the reply names (or `finish` commits it plainly).
    pub commit_after_reply: Option<Box<Reservation>>,
    /// The quota as settle (or a refused reserve) left it; respond writes its headers.
    pub quota: Option<Box<QuotaOutcome>>,
    pub log: RequestLog,
    /// The log line was written.
    responded: bool,
}

impl Drop for RequestCtx {
    /// The client went away before its response: the line is written all the same, with 499
    /// (nginx's "client closed request") and, for a metered request, what settle decided.
    fn drop(&mut self) {
        if !self.responded {
            // nginx's status for a request whose client closed the connection first.
            let closed = StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST);
            self.report(closed, true);
        }
    }
}

impl RequestCtx {
    pub fn new(req: &Request<Inbound>, peer: Peer, secure: bool) -> RequestCtx {
        // Spelled on the stack, then once as a header value that the backend's request and the
        // response share: owned by its bytes, so each copy is a count (bytes copied from a
        // slice took an allocation, and their first copy a second one).
        let mut spelled = [0u8; uuid::fmt::Hyphenated::LENGTH];
        // Time-ordered: a metered request's id keys its usage row (`formats::ids`).
        crate::formats::ids::time_ordered()
            .hyphenated()
            .encode_lower(&mut spelled);
        let request_id = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(spelled))
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
            task_id: None,
            reservation: None,
            commit_after_reply: None,
            quota: None,
            log: RequestLog::default(),
            responded: false,
        }
    }

    /// Writes the request's log line and counts it; `client_left`: nobody got the response.
    pub fn report(&mut self, status: StatusCode, client_left: bool) {
        self.responded = true;
        let elapsed = self.started.elapsed();
        tracing::info!(
            request_id = self.request_id.to_str().unwrap_or(""),
            method = %self.method,
            path = %self.path,
            route = %self.log.route,
            user_id = self.log.user_id.as_deref().unwrap_or(""),
            quota = %self.log.quota,
            settled_by = %self.log.settled_by,
            client_left,
            status = status.as_u16(),
            duration_us = elapsed.as_micros() as u64,
            "request"
        );
        self.log.record_metrics(status, elapsed);
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
    pub user_id: Option<UserId>,
    /// reserved, committed, refunded, denied, error, or empty for unmetered requests.
    pub quota: &'static str,
    /// Why settle decided as it did (`gate::settle`), empty for unmetered requests.
    pub settled_by: &'static str,
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
        crate::telemetry::worker_request();
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
