//! Phase 6, settle: the one place a reservation is made final or given back. The backend, not
//! the client, decides: a reply is judged by the route's rule (`proxy::settle`), read for at
//! most the route's timeout, whether or not the client is still there (`detach.rs`); a forward
//! that failed (connection error, timeout, a body that did not arrive whole or passed its
//! limit) refunds. What the client is told of its quota is left in the context for respond,
//! and why the charge went the way it did, for the log line.

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
        ctx: &mut RequestCtx,
    ) -> Result<Response<Body>, GateError> {
        let (Some(reservation), Some(meter)) = (ctx.reservation.take(), route.meter.as_ref())
        else {
            return reply;
        };
        let (reply, success) = match reply {
            Ok(resp) => {
                let judging = Box::pin(settle::judge(resp, &meter.settle));
                match tokio::time::timeout(route.timeout, judging).await {
                    Ok(judged) if judged.broken => {
                        ctx.log.settled_by = "the backend's reply was cut off";
                        (
                            Err(GateError::bad_gateway("the backend's reply was cut off")),
                            false,
                        )
                    }
                    Ok(judged) => {
                        ctx.log.settled_by = if judged.success {
                            "the reply meets the route's rule"
                        } else {
                            "the reply does not meet the route's rule"
                        };
                        (Ok(judged.response), judged.success)
                    }
                    Err(_) => {
                        ctx.log.settled_by = "the reply did not end within the route's timeout";
                        (
                            Err(GateError::gateway_timeout(format!(
                                "the backend's reply did not end within {} s",
                                route.timeout.as_secs()
                            ))),
                            false,
                        )
                    }
                }
            }
            Err(e) => {
                ctx.log.settled_by = failed_forward(&e);
                (Err(e), false)
            }
        };
        let amount = reservation.amount;
        let (balance, charged) = if success {
            ctx.log.quota = "committed";
            if self.starts_task(route) {
                // Committed with the task's id once own-the-reply has read it.
                let balance = reservation.balance.clone();
                ctx.commit_after_reply = Some(reservation);
                (balance, amount)
            } else {
                (reservation.commit(), amount)
            }
        } else {
            ctx.log.quota = "refunded";
            (Box::pin(reservation.refund()).await, 0)
        };
        ctx.quota = Some(Box::new(QuotaOutcome {
            quota_type: meter.quota.clone(),
            balance,
            charged,
        }));
        reply
    }
}

impl Gate {
    /// Whether a reply of `route` starts a task whose charge follows it (`[tasks]`).
    fn starts_task(&self, route: &RouteSpec) -> bool {
        let creates = route.tenancy.as_ref().and_then(|t| t.creates.as_ref());
        match (&self.services.task_watch, creates) {
            (Some(w), Some(c)) => c.kind == w.charges.tasks.kind,
            _ => false,
        }
    }
}

/// Why a forward that failed refunds, for the log line.
fn failed_forward(e: &GateError) -> &'static str {
    match e.status.as_u16() {
        400 => "the request body did not arrive whole",
        413 => "the request body passed the route's limit",
        504 => "the backend did not answer in time",
        _ => "the backend could not be reached or failed",
    }
}
