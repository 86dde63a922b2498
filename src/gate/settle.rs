//! Phase 6, settle: the one place a reservation is made final or given back. The backend, not
//! the client, decides: a reply is judged by the route's rule (`proxy::settle`); a forward that
//! failed (connection error, timeout, a body cut off at its limit) refunds. What the client is
//! told of its quota is left in the context for respond.

use axum::body::Body;
use http::Response;

use super::Gate;
use super::context::RequestCtx;
use super::quota::QuotaOutcome;
use crate::config::RouteSpec;
use crate::error::GateError;
use crate::proxy::settle;

impl Gate {
    /// Phase 6: commits or refunds `ctx.reservation` by `reply`; unmetered replies pass as
    /// they are.
    pub(super) async fn settle(
        &self,
        reply: Result<Response<Body>, GateError>,
        route: &RouteSpec,
        ctx: &mut RequestCtx<'_>,
    ) -> Result<Response<Body>, GateError> {
        let (Some(reservation), Some(meter)) = (ctx.reservation.take(), route.meter.as_ref())
        else {
            return reply;
        };
        let (reply, success) = match reply {
            Ok(resp) => {
                let judged = Box::pin(settle::judge(resp, &meter.settle)).await;
                let reply = if judged.broken {
                    Err(GateError::bad_gateway("the backend's reply was cut off"))
                } else {
                    Ok(judged.response)
                };
                (reply, judged.success)
            }
            Err(e) => (Err(e), false),
        };
        let amount = reservation.amount;
        let (balance, charged) = if success {
            ctx.log.quota = "committed";
            (reservation.commit(), amount)
        } else {
            ctx.log.quota = "refunded";
            (Box::pin(reservation.refund()).await, 0)
        };
        ctx.quota = Some(QuotaOutcome {
            quota_type: meter.quota.clone(),
            balance,
            charged,
        });
        reply
    }
}
