//! Phase 5, forward: the request streamed to the backend (`proxy::upstream`) with the head the
//! backend is given (`proxy::outbound`), and a `101` reply spliced into a tunnel
//! (`proxy::upgrade`). Runs after the charge is held; what the reply means for it is settle's.

use axum::body::Body;
use http::header::HeaderValue;
use http::request::Parts;
use http::{Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Gate;
use super::context::RequestCtx;
use crate::config::RouteSpec;
use crate::error::GateError;
use crate::proxy::body::{BodyFate, Inbound, LimitedBody};
use crate::proxy::headers;
use crate::proxy::outbound::{self, Forwarding};
use crate::proxy::tenancy::multipart;
use crate::proxy::upstream::{self, Outgoing};
use http_body_util::BodyExt;

/// A request admitted to the backend and written out for it, to be sent.
struct Sending {
    outgoing: Outgoing,
    timeout: Duration,
    /// How the request's body ended, for a failed send's answer (`None` without a body).
    exceeded: Option<Arc<BodyFate>>,
    /// The client's side of an upgrade it asked for.
    client_upgrade: Option<OnUpgrade>,
}

impl Gate {
    /// `Authorization` for the backend, when the gate signs one for the caller
    /// (`auth::AuthService::backend_authorization`); awaited before [`Gate::forward`], which
    /// does not wait for anything.
    pub(super) async fn backend_authorization(&self, ctx: &RequestCtx) -> Option<HeaderValue> {
        let p = ctx.principal.as_ref()?;
        self.services.auth.backend_authorization(p).await
    }

    /// Phase 5: the backend's reply, or why there is none (a target or multipart body the
    /// backend cannot be sent, connection error, timeout, a body cut off at its limit); a
    /// `101` is spliced into a tunnel.
    ///
    /// Written as a function that returns its future: the request is made and its head
    /// written out now, so the request's head and the headers added to it are gone before
    /// anything is awaited, and the future holds only what is left to send, once (an
    /// `async fn` would hold its arguments and a moved copy of them).
    pub(super) fn forward<'a>(
        &'a self,
        parts: Parts,
        body: Inbound,
        route: &RouteSpec,
        ctx: &'a mut RequestCtx,
        authorization: Option<HeaderValue>,
    ) -> impl Future<Output = Result<Response<Body>, GateError>> + Send + 'a {
        let prepared = self.prepare(parts, body, route, ctx, authorization);
        self.send(prepared, ctx)
    }

    /// The backend's request made and its head written out, or why it cannot be.
    fn prepare(
        &self,
        mut parts: Parts,
        body: Inbound,
        route: &RouteSpec,
        ctx: &mut RequestCtx,
        authorization: Option<HeaderValue>,
    ) -> Result<Sending, GateError> {
        let s = &self.services;
        let upgrade = headers::wants_upgrade(&parts.headers);
        let client_upgrade = if upgrade {
            parts.extensions.remove::<OnUpgrade>()
        } else {
            None
        };
        let target = outbound::target(
            &s.upstream,
            &parts.uri,
            &ctx.path,
            ctx.backend_path.take(),
            route.query_token,
        )?;
        // A request without a body (most GETs) sends none: nothing to count or to check.
        let bodiless = http_body::Body::is_end_stream(&body);
        let multipart = match route.tenancy.as_ref().filter(|t| t.multipart) {
            Some(_) if !bodiless => Some(
                multipart::boundary(parts.headers.get(http::header::CONTENT_TYPE))
                    .map_err(GateError::bad_request)?,
            ),
            _ => None,
        };
        let (out_headers, mut added) = outbound::headers(
            &mut parts,
            upgrade,
            &Forwarding {
                peer: &ctx.peer,
                secure: ctx.secure,
                trusted: s.config.trusted_proxies.contains(&ctx.peer.addr.ip()),
                upstream_host: &s.upstream_host,
                request_id: &ctx.request_id,
                identity: ctx.principal.as_ref().map(|p| &p.identity),
            },
        );
        if let Some(authz) = authorization {
            added.push(http::header::AUTHORIZATION, authz);
        }
        let (body, exceeded) = if bodiless {
            (Body::empty(), None)
        } else {
            let (body, exceeded) =
                LimitedBody::new(body, route.max_body, s.config.client_body_timeout);
            let body = match multipart {
                None => Body::new(body),
                Some(boundary) => {
                    let tenancy = &s.config.tenancy;
                    multipart::checked(
                        body.into_data_stream(),
                        boundary,
                        multipart::Checks {
                            namespace: ctx.namespace.clone(),
                            patient_fields: tenancy.patient_fields.clone(),
                            path_fields: tenancy.path_fields.clone(),
                        },
                    )
                }
            };
            (body, Some(exceeded))
        };
        let mut up_req = Request::new(body);
        *up_req.method_mut() = parts.method;
        let own_target = match target {
            outbound::Target::Uri(uri) => {
                *up_req.uri_mut() = uri;
                None
            }
            outbound::Target::Own(own) => Some(own),
        };
        *up_req.version_mut() = Version::HTTP_11;
        *up_req.headers_mut() = out_headers;
        Ok(Sending {
            outgoing: s.upstream.outgoing(up_req, own_target.as_ref(), &added),
            timeout: route.timeout,
            exceeded,
            client_upgrade,
        })
    }

    /// The request sent and the reply's head read. `prepared` is held where the future keeps
    /// it, and used there: as an `async fn`, it would be held twice.
    #[allow(clippy::manual_async_fn)]
    fn send<'a>(
        &'a self,
        mut prepared: Result<Sending, GateError>,
        ctx: &'a mut RequestCtx,
    ) -> impl Future<Output = Result<Response<Body>, GateError>> + Send + 'a {
        async move {
            let sending = match prepared {
                Ok(ref mut sending) => sending,
                Err(e) => return Err(e),
            };
            let s = &self.services;
            let upstream_started = Instant::now();
            let sent = s
                .upstream
                .exchange(
                    &mut sending.outgoing,
                    sending.timeout,
                    sending.exceeded.as_deref(),
                )
                .await;
            ctx.log.upstream = Some(upstream_started.elapsed());
            let mut resp = sent?;

            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                let Some(client_upgrade) = sending.client_upgrade.take() else {
                    return Err(GateError::bad_gateway(
                        "the backend switched protocols although the client did not ask to",
                    ));
                };
                let Some(backend) = upstream::take_switched(&mut resp) else {
                    return Err(GateError::bad_gateway(
                        "the backend's switched connection was lost",
                    ));
                };
                s.tunnels.splice(client_upgrade, backend);
                headers::strip_hop_by_hop(resp.headers_mut(), true);
            } else {
                headers::strip_hop_by_hop(resp.headers_mut(), false);
            }
            Ok(resp)
        }
    }
}
