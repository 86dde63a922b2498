//! The request lifecycle: every request to the public listener goes through the same phases, in
//! this order, each a small step that can be read on its own (Pingora's `ProxyHttp` phases are
//! the model):
//!
//! 1. **Route**: one canonical path (`proxy::path`), then the gate's own endpoints (`api`) or
//!    the route table (`proxy::routes`).
//! 2. **Authenticate**: credentials to a `Principal` (`auth`), and the route's access rule.
//! 3. **Reserve**: a metered route's charge, decided before a byte of the body is streamed.
//! 4. **Forward**: the streamed request to the backend (`proxy::upstream`), upgrades (`proxy::upgrade`).
//! 5. **Settle**: commit or refund the reservation from the reply.
//! 6. **Respond**: request id, CORS (`proxy::cors`), one log line.

use axum::body::Body;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::upgrade::OnUpgrade;
use std::sync::Arc;
use std::time::Instant;

use crate::api::extract::ClientAddr;
use crate::api::{Api, ApiState};
use crate::auth::{AuthService, Principal};
use crate::billing::{Billing, quota_headers};
use crate::config::{Access, Config, Cost, DefaultAccess, RouteSpec};
use crate::error::GateError;
use crate::proxy::body::{Inbound, LimitedBody};
use crate::proxy::cors::Cors;
use crate::proxy::headers::{self, Peer};
use crate::proxy::path::canonicalize;
use crate::proxy::routes::{RouteMatch, RouteTable};
use crate::proxy::settle;
use crate::proxy::upgrade::Tunnels;
use crate::proxy::upstream::{self, Upstream};
use crate::store::Store;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
static X_USER_EMAIL: HeaderName = HeaderName::from_static("x-user-email");

/// Everything a request needs, built once per configuration.
pub struct Gate {
    config: Arc<Config>,
    routes: RouteTable,
    /// What an unknown path gets when `server.unknown_routes` forwards it.
    unknown_user: Arc<RouteSpec>,
    unknown_admin: Arc<RouteSpec>,
    upstream: Arc<Upstream>,
    upstream_host: HeaderValue,
    auth: Arc<AuthService>,
    billing: Arc<Billing>,
    payments: Arc<crate::payments::Payments>,
    api: Api,
    cors: Cors,
    tunnels: Tunnels,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Gate {
    /// Builds the gate; must run inside the tokio runtime (the auth service starts tasks).
    pub fn new(config: Config, store: Store, tunnels: Tunnels) -> Result<Gate, String> {
        let routes = RouteTable::build(&config).map_err(|e| e.to_string())?;
        let tls = match &config.tls {
            Some((cert, key)) => Some(crate::server::tls::acceptor(cert, key)?),
            None => None,
        };
        let config = Arc::new(config);
        let auth = AuthService::new(config.clone(), store.clone())?;
        let billing = Arc::new(Billing::new(store.clone(), config.clone()));
        let payments = Arc::new(crate::payments::Payments::new(
            store.clone(),
            billing.clone(),
            config.clone(),
        )?);
        payments.spawn_reconciler();
        let upstream = Arc::new(Upstream::new(&config.upstream, config.workers));
        let upstream_host = HeaderValue::from_str(upstream.authority().as_str())
            .expect("an authority is a valid header value");
        let unknown = |access| {
            Arc::new(RouteSpec {
                line: 0,
                path: "(unknown path)".into(),
                methods: None,
                access,
                query_token: false,
                timeout: config.timeout,
                max_body: config.max_body,
                meter: None,
            })
        };
        let api = Api::new(Arc::new(ApiState {
            store,
            upstream: upstream.clone(),
            auth: auth.clone(),
            billing: billing.clone(),
            payments: payments.clone(),
        }));
        Ok(Gate {
            unknown_user: unknown(Access::User),
            unknown_admin: unknown(Access::Admin),
            cors: Cors::new(&config.cors),
            config,
            routes,
            upstream,
            upstream_host,
            auth,
            billing,
            payments,
            api,
            tunnels,
            tls,
        })
    }

    /// The TLS acceptor, when `[server.tls]` is configured.
    pub fn tls(&self) -> Option<&tokio_rustls::TlsAcceptor> {
        self.tls.as_ref()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn payments(&self) -> &Arc<crate::payments::Payments> {
        &self.payments
    }

    pub fn billing(&self) -> &Arc<Billing> {
        &self.billing
    }

    pub fn auth(&self) -> &Arc<AuthService> {
        &self.auth
    }

    pub fn tunnels(&self) -> &Tunnels {
        &self.tunnels
    }

    /// Serves one request; never fails: every error becomes a JSON response.
    /// `secure`: the request came over TLS (for `X-Forwarded-Proto`).
    pub async fn handle(&self, req: Request<Inbound>, peer: &Peer, secure: bool) -> Response<Body> {
        let started = Instant::now();
        // Spelled on the stack, then once as a header value (which the backend's request shares).
        let mut spelled = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let request_id: &str = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut spelled);
        let request_id_value =
            HeaderValue::from_str(request_id).expect("a uuid is a valid header value");
        let origin = req.headers().get(header::ORIGIN).cloned();
        let method = req.method().clone();
        let mut log = RequestLog::default();

        let mut resp = match self
            .serve(req, peer, secure, (request_id, &request_id_value), &mut log)
            .await
        {
            Ok(resp) => resp,
            Err(e) => e.into_http(),
        };

        // Phase 6: respond.
        resp.headers_mut()
            .insert(X_REQUEST_ID.clone(), request_id_value);
        self.cors.decorate(origin.as_ref(), resp.headers_mut());
        tracing::info!(
            request_id = %request_id,
            method = %method,
            path = %log.path,
            route = %log.route,
            user_id = log.user_id.as_deref().unwrap_or(""),
            quota = %log.quota,
            status = resp.status().as_u16(),
            duration_us = started.elapsed().as_micros() as u64,
            "request"
        );
        record_metrics(&log, resp.status(), started.elapsed());
        resp
    }

    /// `request_id`: the id as text and as the header value sent to the backend.
    async fn serve(
        &self,
        req: Request<Inbound>,
        peer: &Peer,
        secure: bool,
        (request_id, request_id_value): (&str, &HeaderValue),
        log: &mut RequestLog,
    ) -> Result<Response<Body>, GateError> {
        if let Some(preflight) = self.cors.preflight(req.method(), req.headers()) {
            log.route = "preflight";
            return Ok(preflight);
        }
        check_transfer_coding(req.headers())?;

        // Phase 1: route.
        let path =
            canonicalize(req.uri().path()).map_err(|e| GateError::bad_request(e.to_string()))?;
        let (path, to_backend) = self.layout(path);
        if tracing::enabled!(tracing::Level::INFO) {
            log.path = path.clone();
        }
        if !to_backend && self.api.owns(&path) {
            log.route = "gate";
            let mut req = with_canonical_path(req, &path)?;
            req.extensions_mut().insert(ClientAddr(peer.addr));
            return Ok(Box::pin(self.api.call(req)).await);
        }
        let route = self.route(req.method(), &path)?;
        log.route = route.access.as_str();

        // Phase 2: authenticate.
        let (mut parts, body) = req.into_parts();
        // Public routes ignore credentials (they are stripped before forwarding anyway), so a
        // stale token in a browser never breaks a public page.
        let principal = if route.access == Access::Public {
            None
        } else {
            self.auth.authenticate(&parts, route.query_token).await?
        };
        authorize(route.access, principal.as_ref())?;
        if let Some(p) = &principal {
            log.user_id = Some(p.user_id.clone());
        }
        let content_length = content_length(&parts.headers)?;
        if content_length.is_some_and(|len| len > route.max_body) {
            return Err(GateError::payload_too_large(route.max_body));
        }

        // Phase 3: reserve, before a byte of the body is streamed.
        let reservation = match (&route.meter, &principal) {
            (Some(meter), Some(p)) => {
                let amount = match meter.cost {
                    Cost::Fixed(units) => units,
                    Cost::PerMb(units) => {
                        let len = content_length.ok_or_else(|| {
                            GateError::new(
                                StatusCode::LENGTH_REQUIRED,
                                "this route is charged per MB of the body: send Content-Length",
                            )
                        })?;
                        units.saturating_mul(len.div_ceil(1 << 20))
                    }
                };
                let amount = i64::try_from(amount).unwrap_or(i64::MAX);
                let reserved = Box::pin(self.billing.reserve(
                    &p.user_id,
                    &meter.quota,
                    amount,
                    request_id,
                    &path,
                    parts.method.as_str(),
                ))
                .await;
                match reserved {
                    Ok(r) => {
                        log.quota = "reserved";
                        Some(r)
                    }
                    Err(e) => {
                        log.quota = if e.status == StatusCode::PAYMENT_REQUIRED {
                            "denied"
                        } else {
                            "error"
                        };
                        return Err(e);
                    }
                }
            }
            _ => None,
        };

        // Phase 4: forward.
        let upgrade = headers::wants_upgrade(&parts.headers);
        let client_upgrade = if upgrade {
            parts.extensions.remove::<OnUpgrade>()
        } else {
            None
        };
        let uri = match parts.uri.path_and_query() {
            // Most requests go on as they came (the canonical path is the one received and
            // there is no token to take out of the query): the received target is shared.
            Some(received)
                if received.path() == path
                    && !(route.query_token && received.query().is_some()) =>
            {
                Uri::from(received.clone())
            }
            _ => self.upstream.uri_for(forward_target(
                &path,
                parts.uri.query(),
                route.query_token,
            ))?,
        };
        let host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let client_xff = parts.headers.get("x-forwarded-for").cloned();
        let mut out_headers = std::mem::take(&mut parts.headers);
        headers::strip_hop_by_hop(&mut out_headers, upgrade);
        headers::strip_client_identity(&mut out_headers);
        let trusted = self.config.trusted_proxies.contains(&peer.addr.ip());
        headers::set_forwarded(
            &mut out_headers,
            peer,
            client_xff.as_ref(),
            trusted,
            host.as_ref(),
            if secure { "https" } else { "http" },
        );
        out_headers.insert(header::HOST, self.upstream_host.clone());
        out_headers.insert(X_REQUEST_ID.clone(), request_id_value.clone());
        if let Some(p) = &principal {
            set_identity(&mut out_headers, p);
            if let Some(authz) = self.auth.backend_authorization(p).await {
                out_headers.insert(header::AUTHORIZATION, authz);
            }
        }
        // A request without a body (most GETs) sends none: nothing to count against the limit.
        let (body, exceeded) = if http_body::Body::is_end_stream(&body) {
            (Body::empty(), None)
        } else {
            let (body, exceeded) = LimitedBody::new(body, route.max_body);
            (Body::new(body), Some(exceeded))
        };
        let mut up_req = Request::new(body);
        *up_req.method_mut() = parts.method;
        *up_req.uri_mut() = uri;
        *up_req.version_mut() = Version::HTTP_11;
        *up_req.headers_mut() = out_headers;

        let upstream_started = Instant::now();
        let sent = self.upstream.send(up_req, route.timeout, exceeded).await;
        log.upstream = Some(upstream_started.elapsed());
        let mut resp = match sent {
            Ok(resp) => resp,
            Err(mut e) => {
                // Phase 5 for a failed forward: connection errors, timeouts and bodies cut off
                // at their limit refund.
                if let (Some(r), Some(meter)) = (reservation, route.meter.as_ref()) {
                    let balance = Box::pin(r.refund()).await;
                    e.headers.extend(quota_headers(&meter.quota, &balance, 0));
                    log.quota = "refunded";
                }
                return Err(e);
            }
        };

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                return Err(GateError::bad_gateway(
                    "the backend switched protocols although the client did not ask to",
                ));
            };
            let Some(backend) = upstream::take_switched(&mut resp) else {
                return Err(GateError::bad_gateway(
                    "the backend's switched connection was lost",
                ));
            };
            self.tunnels.splice(client_upgrade, backend);
            headers::strip_hop_by_hop(resp.headers_mut(), true);
        } else {
            headers::strip_hop_by_hop(resp.headers_mut(), false);
        }

        // Phase 5: settle, by the route's rule. A client that goes away before this point drops
        // the reservation, which refunds it.
        let (Some(reservation), Some(meter)) = (reservation, route.meter.as_ref()) else {
            return Ok(resp);
        };
        let judged = Box::pin(settle::judge(resp, &meter.settle)).await;
        let amount = reservation.amount;
        let (balance, charged) = if judged.success {
            log.quota = "committed";
            (reservation.commit(), amount)
        } else {
            log.quota = "refunded";
            (Box::pin(reservation.refund()).await, 0)
        };
        let quota = quota_headers(&meter.quota, &balance, charged);
        if judged.broken {
            let mut e = GateError::bad_gateway("the backend's reply was cut off");
            e.headers.extend(quota);
            return Err(e);
        }
        let mut resp = judged.response;
        for (name, value) in quota {
            resp.headers_mut().insert(name, value);
        }
        Ok(resp)
    }

    /// The platform layout (what its nginx did): a path under `backend_prefix` is the backend's,
    /// with the prefix removed; a path under `api_prefix` that the gate owns is the gate's, with
    /// the prefix removed. Runs on the canonical path, so the result is canonical too. Returns
    /// the path to route and whether it must go to the backend.
    fn layout(&self, path: String) -> (String, bool) {
        let strip = |prefix: &Option<String>| {
            let p = prefix.as_deref()?;
            let rest = path.strip_prefix(p)?;
            match rest {
                "" => Some("/".to_string()),
                r if r.starts_with('/') => Some(r.to_string()),
                _ => None,
            }
        };
        if let Some(rest) = strip(&self.config.backend_prefix) {
            return (rest, true);
        }
        if let Some(rest) = strip(&self.config.api_prefix) {
            if self.api.owns(&rest) {
                return (rest, false);
            }
        }
        (path, false)
    }

    fn route(&self, method: &Method, path: &str) -> Result<Arc<RouteSpec>, GateError> {
        let route = match self.routes.find(method, path) {
            RouteMatch::Route(r) => r.clone(),
            RouteMatch::MethodNotAllowed(allowed) => {
                let allow = allowed
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut e = GateError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{method} is not allowed on this path"),
                );
                if let Ok(v) = HeaderValue::from_str(&allow) {
                    e = e.with_header(header::ALLOW, v);
                }
                return Err(e);
            }
            RouteMatch::Unknown(DefaultAccess::Deny) => {
                return Err(GateError::not_found("no such route on this gate"));
            }
            RouteMatch::Unknown(DefaultAccess::User) => self.unknown_user.clone(),
            RouteMatch::Unknown(DefaultAccess::Admin) => self.unknown_admin.clone(),
        };
        if route.access == Access::Blocked {
            return Err(GateError::forbidden("this route is blocked by the gate"));
        }
        Ok(route)
    }
}

/// What the request log line reports besides status and timing.
#[derive(Default)]
struct RequestLog {
    path: String,
    route: &'static str,
    user_id: Option<Arc<str>>,
    /// reserved, committed, refunded, denied, error, or empty for unmetered requests.
    quota: &'static str,
    /// How long the backend took to answer (its reply head), for proxied requests.
    upstream: Option<std::time::Duration>,
}

/// Counts the request and its latencies for `/metrics`.
fn record_metrics(log: &RequestLog, status: StatusCode, total: std::time::Duration) {
    let route = if log.route.is_empty() {
        "rejected"
    } else {
        log.route
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
    if let Some(up) = log.upstream {
        m.upstream.record(up);
        m.overhead.record(total.saturating_sub(up));
    }
    if !log.quota.is_empty() {
        m.quota(log.quota).increment(1);
    }
}

/// Refuses transfer codings other than a single `chunked`: the gate cannot undo `gzip, chunked`,
/// and forwarding the still-encoded bytes as a plain body would hand the backend something else
/// than the client sent. The rest of the framing is hyper's: it refuses conflicting
/// Content-Lengths with 400, and for Content-Length plus Transfer-Encoding reads the body as
/// chunked, drops the length and closes the connection after the reply (RFC 9112 §6.3), so no
/// request can be smuggled behind it.
fn check_transfer_coding(h: &http::HeaderMap) -> Result<(), GateError> {
    let mut values = h.get_all(header::TRANSFER_ENCODING).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(()),
        (Some(v), None) if v.as_bytes().eq_ignore_ascii_case(b"chunked") => Ok(()),
        _ => Err(GateError::bad_request(
            "Transfer-Encoding must be exactly `chunked`",
        )),
    }
}

fn content_length(h: &http::HeaderMap) -> Result<Option<u64>, GateError> {
    match h.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| GateError::bad_request("Content-Length is not a number")),
    }
}

/// The route's access rule applied to the (possibly absent) caller.
fn authorize(access: Access, principal: Option<&Principal>) -> Result<(), GateError> {
    match (access, principal) {
        (Access::Public, _) => Ok(()),
        (Access::User | Access::Admin, None) => Err(GateError::unauthorized(
            "authentication required: send Authorization: Bearer <token> or X-API-Key",
        )),
        (Access::Admin, Some(p)) if !p.is_superuser => {
            Err(GateError::forbidden("this route needs a superuser"))
        }
        (_, Some(_)) => Ok(()),
        (Access::Blocked, None) => Err(GateError::forbidden("this route is blocked by the gate")),
    }
}

fn set_identity(h: &mut http::HeaderMap, p: &Principal) {
    if let Some(v) = &p.identity.user_id {
        h.insert(X_USER_ID.clone(), v.clone());
    }
    if let Some(v) = &p.identity.email {
        h.insert(X_USER_EMAIL.clone(), v.clone());
    }
}

/// The path and query sent to the backend: the canonical path, and the query without the
/// `token` parameter on routes that accept it (it is a credential, not the backend's business).
fn forward_target(path: &str, query: Option<&str>, strip_token: bool) -> String {
    let query = match query {
        Some(q) if strip_token => {
            let kept: Vec<&str> = q
                .split('&')
                .filter(|pair| {
                    let key = pair.split('=').next().unwrap_or("");
                    !decoded_eq(key, "token")
                })
                .collect();
            kept.join("&")
        }
        Some(q) => q.to_string(),
        None => String::new(),
    };
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    }
}

/// Compares a percent-encoded query key with a plain ASCII name, as the backend would decode it.
fn decoded_eq(encoded: &str, name: &str) -> bool {
    let b = encoded.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Some(Ok(v)) = encoded.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16)) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    out == name.as_bytes()
}

/// The request for the gate's own router, with its path replaced by the canonical one.
fn with_canonical_path(req: Request<Inbound>, path: &str) -> Result<Request<Body>, GateError> {
    let (mut parts, body) = req.into_parts();
    let pq = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    parts.uri = pq
        .parse()
        .map_err(|_| GateError::bad_request("the request target is not a valid URI"))?;
    Ok(Request::from_parts(parts, Body::new(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_chunked_is_accepted() {
        let mut h = http::HeaderMap::new();
        assert!(check_transfer_coding(&h).is_ok());
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("Chunked"),
        );
        assert!(check_transfer_coding(&h).is_ok());
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("gzip, chunked"),
        );
        assert!(check_transfer_coding(&h).is_err());
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.append(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert!(check_transfer_coding(&h).is_err());
    }

    #[test]
    fn strips_token_in_any_spelling() {
        assert_eq!(
            forward_target("/i", Some("t=1&token=abc&t=2"), true),
            "/i?t=1&t=2"
        );
        assert_eq!(forward_target("/i", Some("tok%65n=abc"), true), "/i");
        assert_eq!(
            forward_target("/i", Some("token=abc"), false),
            "/i?token=abc"
        );
        assert_eq!(forward_target("/i", None, true), "/i");
    }
}
