//! Phase 8, respond: every response, early exits and errors included, leaves through here.
//! It renders an error as JSON, writes the quota headers of what settle decided, the request id and
//! CORS, and reports the request (one log line, the metrics).

use axum::body::Body;
use http::Response;
use http::header::HeaderName;

use super::Gate;
use super::context::RequestCtx;
use crate::error::GateError;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

impl Gate {
    /// Phase 8: the response the client gets.
    pub(super) fn respond(
        &self,
        result: Result<Response<Body>, GateError>,
        mut ctx: Box<RequestCtx>,
    ) -> Response<Body> {
        let quota = ctx.quota.as_ref().map(|q| q.headers()).unwrap_or_default();
        let mut resp = match result {
            Ok(mut resp) => {
                for (name, value) in quota {
                    resp.headers_mut().insert(name, value);
                }
                resp
            }
            Err(mut e) => {
                e.headers.extend(quota);
                e.into_http()
            }
        };
        resp.headers_mut()
            .insert(X_REQUEST_ID.clone(), ctx.request_id.clone());
        self.services
            .cors
            .decorate(ctx.origin.as_ref(), resp.headers_mut());
        ctx.report(resp.status(), false);
        resp
    }
}
