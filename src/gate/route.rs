//! Phase 1, route: where a request goes. Runs first, before any credential is looked at: one
//! canonical path for both matching and forwarding, then the gate's own endpoints or the route
//! table. Also holds the early exit before it, the CORS preflight.

use axum::body::Body;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use std::sync::Arc;

use super::Gate;
use super::context::RequestCtx;
use crate::api::extract::{ClientAddr, Tls};
use crate::config::{Access, RouteSpec};
use crate::error::GateError;
use crate::proxy::body::Inbound;
use crate::proxy::headers::client_ip;
use crate::proxy::path::canonicalize;
use crate::proxy::routes::RouteMatch;

/// Where the route phase sends a request.
pub(super) enum Routed {
    /// To the gate's own API, with the canonical path.
    Own(Request<Body>),
    /// To a `[[static]]` mount (`proxy::statics`): a file of a frontend.
    Static { mount: usize, parts: Parts },
    /// To the backend, under `route`'s rules; the head and body are those received (the
    /// canonical path to forward is the context's).
    Backend {
        route: Arc<RouteSpec>,
        parts: Parts,
        body: Inbound,
    },
}

impl Gate {
    /// Early exit before routing: a CORS preflight is answered by the gate (`proxy::cors`).
    pub(super) fn preflight(
        &self,
        req: &Request<Inbound>,
        ctx: &mut RequestCtx,
    ) -> Option<Response<Body>> {
        let preflight = self.services.cors.preflight(req.method(), req.headers())?;
        ctx.log.route = "preflight";
        Some(preflight)
    }

    /// Phase 1: checks the framing, canonicalises the path, and finds who answers it.
    pub(super) fn route(
        &self,
        req: Request<Inbound>,
        ctx: &mut RequestCtx,
    ) -> Result<Routed, GateError> {
        check_transfer_coding(req.headers())?;
        check_host(req.version(), req.headers())?;
        let path =
            canonicalize(req.uri().path()).map_err(|e| GateError::bad_request(e.to_string()))?;
        let (path, to_backend) = self.layout(path);
        ctx.path = path;
        if !to_backend && self.services.api.owns(&ctx.path) {
            ctx.log.route = "gate";
            let mut req = with_canonical_path(req, &ctx.path)?;
            let ip = client_ip(
                ctx.peer.addr.ip(),
                req.headers(),
                &self.services.config.trusted_proxies,
            );
            let addr = std::net::SocketAddr::new(ip, ctx.peer.addr.port());
            req.extensions_mut().insert(ClientAddr(addr));
            req.extensions_mut().insert(Tls(ctx.secure));
            return Ok(Routed::Own(req));
        }
        let found = self.services.routes.find(req.method(), &ctx.path);
        // A mount serves what no route answers (check-config refuses one that a route hides).
        if matches!(found, RouteMatch::Unknown(_)) {
            if let Some(mount) = self.services.statics.mount_for(req.method(), &ctx.path) {
                ctx.log.route = "static";
                let (parts, _body) = req.into_parts();
                return Ok(Routed::Static { mount, parts });
            }
        }
        // `/` that nothing of the operator's claims leads to the gate's portal.
        if ctx.path == "/"
            && !to_backend
            && matches!(found, RouteMatch::Unknown(_))
            && self.services.routes.fallback().is_none()
        {
            ctx.log.route = "gate";
            return Ok(Routed::Own(with_canonical_path(req, &ctx.path)?));
        }
        let route = self.route_of(found, req.method())?;
        ctx.log.route = route.access.as_str();
        let (parts, body) = req.into_parts();
        Ok(Routed::Backend { route, parts, body })
    }

    /// The platform layout (what its nginx did): a path under `backend_prefix` is the backend's,
    /// with the prefix removed; a path under `api_prefix` that the gate owns is the gate's, with
    /// the prefix removed. Runs on the canonical path, so the result is canonical too. Returns
    /// the path to route and whether it must go to the backend.
    fn layout(&self, path: String) -> (String, bool) {
        let config = &self.services.config;
        let strip = |prefix: &Option<String>| {
            let p = prefix.as_deref()?;
            let rest = path.strip_prefix(p)?;
            match rest {
                "" => Some("/".to_string()),
                r if r.starts_with('/') => Some(r.to_string()),
                _ => None,
            }
        };
        if let Some(rest) = strip(&config.backend_prefix) {
            return (rest, true);
        }
        if let Some(rest) = strip(&config.api_prefix) {
            if self.services.api.owns(&rest) {
                return (rest, false);
            }
        }
        (path, false)
    }

    /// The route table's answer for a canonical backend path, as a route or the error to send.
    fn route_of(
        &self,
        found: RouteMatch<'_>,
        method: &Method,
    ) -> Result<Arc<RouteSpec>, GateError> {
        let routes = &self.services.routes;
        let route = match found {
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
            RouteMatch::Unknown(_) => routes
                .fallback()
                .cloned()
                .ok_or_else(|| GateError::not_found("no such route on this gate"))?,
        };
        if route.access == Access::Blocked {
            return Err(GateError::forbidden("this route is blocked by the gate"));
        }
        Ok(route)
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

/// RFC 9112 §3.2: an HTTP/1.1 request carries exactly one `Host`; none, or two (which two
/// parsers may read differently), is a 400. HTTP/1.0 may omit it; HTTP/2 names the authority in
/// the `:authority` pseudo-header instead.
fn check_host(version: http::Version, h: &http::HeaderMap) -> Result<(), GateError> {
    let mut values = h.get_all(header::HOST).iter();
    match (version, values.next(), values.next()) {
        (_, Some(_), Some(_)) => Err(GateError::bad_request(
            "more than one Host header: send exactly one",
        )),
        (http::Version::HTTP_11, None, _) => Err(GateError::bad_request(
            "an HTTP/1.1 request needs a Host header",
        )),
        _ => Ok(()),
    }
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
}
