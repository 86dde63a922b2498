//! Phase 4, reserve: what the request's body may be and what it costs, both decided before a
//! byte of it is streamed. The declared size is checked against the route's limit, and a
//! metered route holds its charge with one conditional statement (`billing`), or answers 402.

use crate::formats::ids::RequestId;
use http::StatusCode;
use http::request::Parts;

use super::Gate;
use super::context::RequestCtx;
use super::quota::{QuotaOutcome, payment_required};
use crate::billing::{ChargeRequest, ReserveError};
use crate::config::{Cost, RouteSpec};
use crate::error::GateError;

impl Gate {
    /// Phase 4: on a metered route, sets `ctx.reservation`.
    pub(super) async fn reserve(
        &self,
        parts: &Parts,
        route: &RouteSpec,
        ctx: &mut RequestCtx,
    ) -> Result<(), GateError> {
        let content_length = content_length(&parts.headers)?;
        if content_length.is_some_and(|len| len > route.max_body) {
            return Err(GateError::payload_too_large(route.max_body));
        }
        let (Some(meter), Some(p)) = (&route.meter, &ctx.principal) else {
            return Ok(());
        };
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
        let request_id = RequestId::from_minted(ctx.request_id());
        let reserved = Box::pin(self.services.billing.reserve(&ChargeRequest {
            user_id: &p.user_id,
            quota_type: &meter.quota,
            amount,
            request_id: &request_id,
            endpoint: &ctx.path,
            method: parts.method.as_str(),
        }))
        .await;
        match reserved {
            Ok(r) => {
                ctx.log.quota = "reserved";
                ctx.reservation = Some(Box::new(r));
                Ok(())
            }
            Err(ReserveError::Exhausted(e)) => {
                ctx.log.quota = "denied";
                let refused = payment_required(&meter.quota, &e);
                if let Some(balance) = e.balance {
                    ctx.quota = Some(Box::new(QuotaOutcome {
                        quota_type: meter.quota.clone(),
                        balance,
                        charged: 0,
                    }));
                }
                Err(refused)
            }
            Err(ReserveError::Failed(e)) => {
                ctx.log.quota = "error";
                Err(e.into())
            }
        }
    }
}

fn content_length(h: &http::HeaderMap) -> Result<Option<u64>, GateError> {
    match h.get(http::header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| GateError::bad_request("Content-Length is not a number")),
    }
}
