//! What a metered request is told of its quota: the outcome settle (or a refused reserve)
//! leaves in the context, and the headers respond renders from it (`X-Quota-*` and the IETF
//! `RateLimit-Policy` / `RateLimit`), plus the 402 body both frontends already understand.

use http::StatusCode;
use http::{HeaderName, HeaderValue};

use crate::billing::Exhausted;
use crate::error::GateError;
use crate::formats::ids::QuotaKey;
use crate::store::{BalanceRow, now_ms};

/// A metered request's quota after it was decided.
pub(super) struct QuotaOutcome {
    pub quota_type: QuotaKey,
    pub balance: BalanceRow,
    /// Units this request was charged (0 when refunded or refused).
    pub charged: i64,
}

impl QuotaOutcome {
    pub fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        quota_headers(&self.quota_type, &self.balance, self.charged)
    }
}

/// The 402 for an exhausted quota: `detail`, `message`, `quota_type`, `remaining`,
/// `required`, `upgrade_url`, as CTAI_web and the commercial UI read them.
pub(super) fn payment_required(quota_type: &str, e: &Exhausted) -> GateError {
    let remaining = e.balance.as_ref().map_or(0, |b| b.remaining().max(0));
    GateError::new(StatusCode::PAYMENT_REQUIRED, "配额已用尽")
        .with_field(
            "message",
            format!("{}配额不足。剩余: {remaining}", e.quota_name),
        )
        .with_field("quota_type", quota_type)
        .with_field("remaining", remaining)
        .with_field("required", e.required)
        .with_field("upgrade_url", "/subscription")
}

/// `X-Quota-*` and the IETF `RateLimit-Policy` / `RateLimit` headers for a balance.
fn quota_headers(
    quota_type: &str,
    b: &BalanceRow,
    charged: i64,
) -> Vec<(http::HeaderName, http::HeaderValue)> {
    let mut out = vec![
        (
            HeaderName::from_static("x-quota-type"),
            HeaderValue::from_str(quota_type).unwrap_or(HeaderValue::from_static("unknown")),
        ),
        (
            HeaderName::from_static("x-quota-remaining"),
            HeaderValue::from(b.remaining()),
        ),
        (
            HeaderName::from_static("x-quota-used"),
            HeaderValue::from(charged),
        ),
    ];
    if b.limit_amount >= 0 {
        let window = ((b.period_end - b.period_start) / 1000).max(1);
        let reset = ((b.period_end - now_ms()) / 1000).max(0);
        if let Ok(v) =
            HeaderValue::from_str(&format!("\"{quota_type}\";q={};w={window}", b.limit_amount))
        {
            out.push((HeaderName::from_static("ratelimit-policy"), v));
        }
        if let Ok(v) =
            HeaderValue::from_str(&format!("\"{quota_type}\";r={};t={reset}", b.remaining()))
        {
            out.push((HeaderName::from_static("ratelimit"), v));
        }
    }
    out
}
