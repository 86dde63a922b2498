//! The request lifecycle: every request to the public listener goes through the same phases,
//! in this order, each a method of [`Gate`] in a file of its own over one [`RequestCtx`]
//! (Pingora's `ProxyHttp` phases over its per-request `CTX` are the model):
//!
//! 1. **Route** (`route.rs`): one canonical path (`proxy::path`), then the gate's own
//!    endpoints (`api`) or the route table (`proxy::routes`).
//! 2. **Authenticate** (`authenticate.rs`): credentials to a `Principal` (`auth`), and the
//!    route's access rule.
//! 3. **Isolate** (`isolate.rs`): names the backend joins into paths are safe segments, an
//!    owned id is the caller's, and the caller's names get its namespace (`tenancy`).
//! 4. **Reserve** (`reserve.rs`): the body's declared size against the route's limit, and a
//!    metered route's charge, both decided before a byte of the body is streamed.
//! 5. **Forward** (`forward.rs`): the streamed request to the backend (`proxy::upstream`), a
//!    multipart body checked as it streams (`tenancy::multipart`), upgrades (`proxy::upgrade`).
//! 6. **Settle** (`settle.rs`): the one place a reservation is committed or refunded, from the
//!    reply or from the failed forward. A request with a charge held runs phases 5 to 7 so
//!    that they go on in a task of their own if the client leaves (`detach.rs`): the backend's
//!    reply settles it even when the client has gone.
//! 7. **Own the reply** (`own_reply.rs`): ids the reply hands out are recorded with their
//!    owner, lists are filtered to the caller's, the namespace is taken out of names.
//! 8. **Respond** (`respond.rs`): quota headers, request id, CORS, one log line and the metrics.
//!
//! Three early exits skip phases, and say so where they return: a CORS preflight is answered
//! before routing (it skips phases 1 to 7), a path the gate owns goes to its own API after
//! routing (it skips 2 to 7: those handlers authenticate and charge for themselves), and a
//! frontend's file from a `[[static]]` mount is served after routing (it skips 2 to 7). Every
//! response, early or not, goes through respond. A phase that fails returns a `GateError`,
//! which respond renders; the phases after it do not run (settle still sees a failed forward).
//!
//! Service construction is not here: [`crate::startup::Services`] builds everything a
//! configuration needs, and the gate only runs requests over it.

mod authenticate;
mod context;
mod detach;
mod forward;
mod isolate;
mod own_reply;
mod quota;
mod reserve;
mod respond;
mod route;
mod settle;

use axum::body::Body;
use http::request::Parts;
use http::{Request, Response};
use std::future::Future;
use std::sync::Arc;

use crate::config::RouteSpec;
use crate::error::GateError;
use crate::proxy::body::Inbound;
use crate::proxy::headers::Peer;
use crate::startup::Services;

use context::RequestCtx;
use route::Routed;

/// Runs requests over the services of one configuration.
pub struct Gate {
    services: Arc<Services>,
}

impl Gate {
    pub fn new(services: Arc<Services>) -> Gate {
        Gate { services }
    }

    /// What this gate serves with.
    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// Serves one request; never fails: every error becomes a JSON response.
    /// `secure`: the request came over TLS (for `X-Forwarded-Proto`).
    ///
    /// The preflight and route phases run now, before the future is made: what they leave
    /// to wait for is small, and the future owns its gate, so hyper's service can box it as
    /// it is. The context is boxed: it goes with the request through every phase, and to a
    /// task of its own with a metered one (`detach.rs`), at the cost of a pointer.
    pub fn handle(
        self: Arc<Self>,
        req: Request<Inbound>,
        peer: Peer,
        secure: bool,
    ) -> impl Future<Output = Response<Body>> + Send + 'static {
        let mut ctx = Box::new(RequestCtx::new(&req, peer, secure));
        let step = self.admit(req, &mut ctx);
        async move {
            let (result, ctx) = match step {
                Step::Done(result) => (*result, ctx),
                // Early exit: the gate's own API skips phases 2 to 7 (its handlers
                // authenticate and charge for themselves).
                Step::Own(req) => (Ok(Box::pin(self.services.api.call(*req)).await), ctx),
                // Early exit: a frontend's file skips phases 2 to 7 (its files are the same
                // for everyone and carry no data; what the app then asks for is
                // authenticated). Boxed: a file's future is several KiB.
                Step::Static { mount, parts } => {
                    let served = Box::pin(self.services.statics.serve(mount, &parts, &ctx.path));
                    (served.await, ctx)
                }
                Step::Backend(fwd) => self.proxied(fwd, ctx).await,
            };
            self.respond(result, ctx)
        }
    }

    /// Phase 1 with the early exit before it: a CORS preflight is answered before routing
    /// and skips phases 1 to 7.
    fn admit(&self, req: Request<Inbound>, ctx: &mut RequestCtx) -> Step {
        if let Some(preflight) = self.preflight(&req, ctx) {
            return Step::Done(Box::new(Ok(preflight)));
        }
        match self.route(req, ctx) {
            Ok(Routed::Own(req)) => Step::Own(Box::new(req)),
            Ok(Routed::Static { mount, parts }) => Step::Static {
                mount,
                parts: Box::new(parts),
            },
            Ok(Routed::Backend { route, parts, body }) => {
                Step::Backend(Box::new(Forward { route, parts, body }))
            }
            Err(e) => Step::Done(Box::new(Err(e))),
        }
    }

    /// Phases 2 to 7 of a request for the backend; the context comes back for respond.
    async fn proxied(&self, fwd: Box<Forward>, mut ctx: Box<RequestCtx>) -> Finished {
        if let Err(e) = self.admit_backend(&fwd, &mut ctx).await {
            return (Err(e), ctx);
        }
        // A held charge is settled by the backend's reply whether or not the client stays for
        // it: phases 5 to 7 go on in a task of their own if it leaves (`detach.rs`).
        if ctx.reservation.is_some() {
            return self.finish_detached(fwd, ctx).await;
        }
        let result = self.finish(fwd, &mut ctx).await;
        (result, ctx)
    }

    /// Phases 2 to 4: authenticate, isolate, reserve.
    async fn admit_backend(&self, fwd: &Forward, ctx: &mut RequestCtx) -> Result<(), GateError> {
        let Forward { route, parts, .. } = fwd;
        self.authenticate(parts, route, ctx).await?;
        if route.tenancy.is_some() {
            if let Some(look) = self.isolate(route, ctx)? {
                // Rare (an id this replica has not seen): boxed, so that the store's future
                // is not part of every request's.
                Box::pin(self.confirm_owner(look, ctx)).await?;
            }
        }
        self.reserve(parts, route, ctx).await
    }

    /// Phases 5 to 7: forward, settle, own the reply.
    async fn finish(
        &self,
        fwd: Box<Forward>,
        ctx: &mut RequestCtx,
    ) -> Result<Response<Body>, GateError> {
        let authorization = self.backend_authorization(ctx).await;
        let Forward { route, parts, body } = *fwd;
        let reply = self.forward(parts, body, &route, ctx, authorization).await;
        // Only a held charge has anything to settle; without one, no future is made.
        let reply = if ctx.reservation.is_some() {
            Box::pin(self.settle(reply, &route, ctx)).await
        } else {
            reply
        };
        let reply = if route.tenancy.is_some() {
            Box::pin(self.own_reply(reply, &route, ctx)).await
        } else {
            reply
        };
        // A reply that named no task: its charge stands all the same.
        if let Some(r) = ctx.commit_after_reply.take() {
            r.commit();
        }
        reply
    }
}

/// Phases 5 to 7's result, with the context back.
type Finished = (Result<Response<Body>, GateError>, Box<RequestCtx>);

/// What the route phase left to do. Each case boxed: this is held by the request's future
/// while it waits, and the future is moved whole into its box.
enum Step {
    /// Answered (a preflight), or refused.
    Done(Box<Result<Response<Body>, GateError>>),
    /// For the gate's own API.
    Own(Box<Request<Body>>),
    /// A frontend's file.
    Static { mount: usize, parts: Box<Parts> },
    /// For the backend.
    Backend(Box<Forward>),
}

/// A request admitted to the backend: its route, head and body.
struct Forward {
    route: Arc<RouteSpec>,
    parts: Parts,
    body: Inbound,
}
