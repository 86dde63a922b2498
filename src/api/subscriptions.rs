//! `/subscriptions/*`: the signed-in user's subscription, its quota, and subscribing.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

use super::extract::{CurrentUser, JsonBody};
use super::quotas::{QuotaEntry, quota_entries};
use super::time::{iso, iso_opt};
use super::{ApiState, both};
use crate::error::{ErrorBody, GateError};
use crate::formats::ids::UserId;
use crate::store::{SubscriptionRow, SubscriptionStatus};

pub fn routes() -> Router<Arc<ApiState>> {
    let mut r = Router::new();
    r = both(r, "/subscriptions", get(list));
    r = both(r, "/subscriptions/history", get(list));
    r = both(r, "/subscriptions/current", get(current));
    r = both(r, "/subscriptions/quota", get(quota));
    r = both(r, "/subscriptions/cancel", post(cancel));
    r = both(r, "/subscriptions/subscribe", post(subscribe));
    r
}

#[derive(Serialize, ToSchema)]
pub struct SubscriptionResponse {
    pub id: String,
    pub user_id: String,
    pub plan_id: String,
    pub plan_name: Option<String>,
    /// pending (waiting for its payment) | scheduled (paid, begins at `current_period_start`)
    /// | active | cancelled (runs to its period end) | expired
    pub status: String,
    /// The paid span (a renewal extends its end); the quota resets at every billing cycle
    /// within it.
    pub current_period_start: Option<String>,
    pub current_period_end: Option<String>,
    /// The same as `current_period_start` / `current_period_end`, under the names the
    /// commercial web app reads.
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub auto_renew: bool,
    /// The plan stops at `current_period_end` (cancelled, or moving to a cheaper plan).
    pub cancel_at_period_end: bool,
    /// The plan that takes over at `scheduled_change_at`, on the running subscription: a
    /// cheaper plan paid for, or the free plan after a cancellation.
    pub scheduled_plan_id: Option<String>,
    pub scheduled_plan_name: Option<String>,
    pub scheduled_change_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// What takes over from the running subscription when it ends: the first change paid for,
/// or (after a cancellation) the free plan.
struct Next {
    plan_id: String,
    plan_name: String,
    at: i64,
}

async fn next_of(
    state: &ApiState,
    user_id: &UserId,
    running: Option<&SubscriptionRow>,
) -> Result<Option<Next>, GateError> {
    if let Some(s) = state
        .billing
        .subscriptions()
        .scheduled(user_id)
        .await?
        .first()
    {
        let plan_name = state
            .billing
            .plans()
            .by_id(&s.plan_id)
            .await?
            .map_or_else(|| s.plan_id.clone(), |p| p.row.name);
        return Ok(Some(Next {
            plan_id: s.plan_id.clone(),
            plan_name,
            at: s.current_period_start.unwrap_or(0),
        }));
    }
    match running {
        Some(r) if r.status == SubscriptionStatus::Cancelled => {
            Ok(state.billing.plans().default().await?.map(|p| Next {
                plan_id: p.row.id,
                plan_name: p.row.name,
                at: r.current_period_end.unwrap_or(0),
            }))
        }
        _ => Ok(None),
    }
}

async fn response(
    state: &ApiState,
    s: SubscriptionRow,
    next: Option<&Next>,
) -> Result<SubscriptionResponse, GateError> {
    let plan_name = state
        .billing
        .plans()
        .by_id(&s.plan_id)
        .await?
        .map(|p| p.row.name);
    let running = matches!(s.status.as_str(), "active" | "cancelled");
    let next = next.filter(|_| running);
    // A paid renewal that was queued (same plan) continues the plan; anything else ends it.
    let cancel_at_period_end = running
        && (s.status == SubscriptionStatus::Cancelled
            || next.is_some_and(|n| n.plan_id != s.plan_id));
    Ok(SubscriptionResponse {
        id: s.id,
        user_id: s.user_id.to_string(),
        plan_id: s.plan_id,
        plan_name,
        cancel_at_period_end,
        status: s.status.as_str().into(),
        current_period_start: iso_opt(s.current_period_start),
        current_period_end: iso_opt(s.current_period_end),
        start_date: iso_opt(s.current_period_start),
        end_date: iso_opt(s.current_period_end),
        auto_renew: s.auto_renew,
        scheduled_plan_id: next.map(|n| n.plan_id.clone()),
        scheduled_plan_name: next.map(|n| n.plan_name.clone()),
        scheduled_change_at: next.map(|n| iso(n.at)),
        created_at: iso(s.created_at),
        updated_at: iso(s.updated_at),
    })
}

/// The user's subscriptions, newest first (also at `/subscriptions/history`).
#[utoipa::path(get, path = "/subscriptions/", tag = "subscriptions", security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, body = Vec<SubscriptionResponse>), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<Arc<ApiState>>,
    CurrentUser(p): CurrentUser,
) -> Result<Json<Vec<SubscriptionResponse>>, GateError> {
    state.billing.ensure_current(&p.user_id).await?;
    let running = state.billing.subscriptions().current(&p.user_id).await?;
    let next = next_of(&state, &p.user_id, running.as_ref()).await?;
    let mut out = Vec::new();
    for s in state.billing.subscriptions().of_user(&p.user_id).await? {
        out.push(response(&state, s, next.as_ref()).await?);
    }
    Ok(Json(out))
}

/// The running subscription (rolled over first if its period ended).
#[utoipa::path(get, path = "/subscriptions/current", tag = "subscriptions", security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, body = SubscriptionResponse), (status = 404, description = "No subscription", body = ErrorBody)))]
pub async fn current(
    State(state): State<Arc<ApiState>>,
    CurrentUser(p): CurrentUser,
) -> Result<Json<SubscriptionResponse>, GateError> {
    state.billing.ensure_current(&p.user_id).await?;
    let s = state
        .billing
        .subscriptions()
        .current(&p.user_id)
        .await?
        .ok_or_else(|| GateError::not_found("您还没有订阅: no subscription"))?;
    let next = next_of(&state, &p.user_id, Some(&s)).await?;
    Ok(Json(response(&state, s, next.as_ref()).await?))
}

#[derive(Serialize, ToSchema)]
pub struct SubscriptionQuota {
    pub has_subscription: bool,
    pub subscription_id: Option<String>,
    pub plan_id: Option<String>,
    pub status: Option<String>,
    /// The main quota type's figures (-1 = unlimited), as the original reported them.
    pub quota_type: Option<String>,
    pub quota_used: i64,
    pub quota_limit: i64,
    pub quota_remaining: i64,
    pub usage_percentage: f64,
    pub current_period_start: Option<String>,
    pub current_period_end: Option<String>,
    /// Every quota type.
    pub quotas: Vec<QuotaEntry>,
}

/// The subscription's quota.
#[utoipa::path(get, path = "/subscriptions/quota", tag = "subscriptions", security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, body = SubscriptionQuota), (status = 401, body = ErrorBody)))]
pub async fn quota(
    State(state): State<Arc<ApiState>>,
    CurrentUser(p): CurrentUser,
) -> Result<Json<SubscriptionQuota>, GateError> {
    state.billing.ensure_current(&p.user_id).await?;
    let sub = state.billing.subscriptions().current(&p.user_id).await?;
    let quotas = quota_entries(&state, &p.user_id).await?;
    let main = state
        .billing
        .main_quota()
        .and_then(|m| quotas.iter().find(|q| q.type_key == m));
    Ok(Json(SubscriptionQuota {
        has_subscription: sub.is_some(),
        subscription_id: sub.as_ref().map(|s| s.id.clone()),
        plan_id: sub.as_ref().map(|s| s.plan_id.clone()),
        status: sub.as_ref().map(|s| s.status.as_str().into()),
        quota_type: main.map(|m| m.type_key.clone()),
        quota_used: main.map_or(0, |m| m.used),
        quota_limit: main.map_or(0, |m| m.limit),
        quota_remaining: main.map_or(0, |m| m.remaining),
        usage_percentage: main.map_or(0.0, |m| m.usage_percent),
        current_period_start: sub.as_ref().and_then(|s| iso_opt(s.current_period_start)),
        current_period_end: sub.as_ref().and_then(|s| iso_opt(s.current_period_end)),
        quotas,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct CancelResponse {
    pub message: String,
}

/// Stop renewal. The subscription stays in force until its period ends.
#[utoipa::path(post, path = "/subscriptions/cancel", tag = "subscriptions", security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, body = CancelResponse), (status = 404, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<Arc<ApiState>>,
    CurrentUser(p): CurrentUser,
) -> Result<Json<CancelResponse>, GateError> {
    let s = state
        .billing
        .subscriptions()
        .current(&p.user_id)
        .await?
        .ok_or_else(|| GateError::not_found("您还没有订阅: no subscription"))?;
    state.billing.subscriptions().cancel(&s.id).await?;
    let until = iso_opt(s.current_period_end).unwrap_or_default();
    Ok(Json(CancelResponse {
        message: format!("订阅已取消: it stays in force until {until}"),
    }))
}

#[derive(Deserialize, ToSchema)]
pub struct SubscribeRequest {
    pub plan_id: String,
    /// alipay | wechat | sandbox
    #[serde(default)]
    pub payment_method: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SubscribeResponse {
    pub message: String,
    /// The subscription the payment activates (for a renewal: the running one it extends).
    pub subscription_id: String,
    pub payment_id: String,
    pub order_no: String,
    /// What the payer pays, from the plan, never from the client: `plan_price` - `credit`.
    pub amount: String,
    pub currency: String,
    /// `pending` until the payment completes.
    pub status: String,
    pub payment_url: Option<String>,
    pub qr_code: Option<String>,
    /// `new` | `renew` | `upgrade` | `downgrade` (the README's billing table).
    pub change: String,
    pub plan_price: String,
    /// The unused part of the running period credited on an upgrade, in the payer's favour.
    pub credit: String,
    /// When the plan takes effect once paid (a renewal: when the added cycle begins).
    pub starts_at: String,
}

/// The answer to choosing the free plan while a paid one runs: nothing to pay, the paid plan
/// runs to its end.
#[derive(Serialize, ToSchema)]
pub struct ScheduledChange {
    pub message: String,
    pub subscription_id: String,
    pub scheduled_plan_id: String,
    pub scheduled_plan_name: String,
    /// When the free plan takes over.
    pub scheduled_change_at: String,
}

/// Subscribe to a plan. A paid plan gives a pending order whose amount comes from the plan
/// (less the credit of an upgrade), applied when the payment completes: the same plan again
/// renews it (one more cycle from its end), a dearer one starts now, a cheaper one when the
/// paid period ends. The free plan while a paid one runs is a cancellation at its end.
#[utoipa::path(post, path = "/subscriptions/subscribe", tag = "subscriptions", request_body = SubscribeRequest,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 202, description = "Order created, waiting for payment", body = SubscribeResponse),
        (status = 200, description = "The free plan chosen: it takes over when the paid period ends", body = ScheduledChange),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "An inactive plan, the free plan while on it, a change while another is scheduled, or a payment method this gate lacks", body = ErrorBody),
        (status = 502, description = "The provider refused the order", body = ErrorBody)))]
pub async fn subscribe(
    State(state): State<Arc<ApiState>>,
    CurrentUser(p): CurrentUser,
    JsonBody(req): JsonBody<SubscribeRequest>,
) -> Result<Response, GateError> {
    let plan = state
        .billing
        .plans()
        .by_id(&req.plan_id)
        .await?
        .ok_or_else(|| GateError::not_found("套餐不存在: no such plan"))?;
    state.billing.ensure_current(&p.user_id).await?;
    if plan.row.price_fen.is_zero() {
        return to_free(&state, &p.user_id, &plan).await;
    }
    let method = req.payment_method.unwrap_or_else(|| {
        state
            .payments
            .methods()
            .first()
            .map_or("alipay", |m| *m)
            .to_string()
    });
    let order = state.payments.create_order(&p, &plan, &method).await?;
    let message = match order.change_kind.as_str() {
        "renew" => "续费订单已创建: once paid, your plan runs one more cycle from its current end",
        "upgrade" => {
            "升级订单已创建: once paid, the plan starts at once; the unused part of the current one is credited"
        }
        "downgrade" => "订单已创建: once paid, the plan starts when the current paid period ends",
        _ => {
            "订单已创建: pay at payment_url (or draw qr_code); the plan starts when the payment completes"
        }
    };
    let starts_at = iso(super::payments::quoted_start(&order));
    Ok((
        StatusCode::ACCEPTED,
        Json(SubscribeResponse {
            message: message.into(),
            subscription_id: order.subscription_id.clone().unwrap_or_default(),
            payment_id: order.id,
            order_no: order.order_no,
            amount: order.amount_fen.to_string(),
            currency: order.currency,
            status: order.status.as_str().into(),
            payment_url: order.payment_url,
            qr_code: order.qr_code,
            change: order.change_kind,
            plan_price: order.list_price_fen.to_string(),
            credit: order.credit_fen.to_string(),
            starts_at,
        }),
    )
        .into_response())
}

/// The free plan chosen: a paid plan running is cancelled at its end; on the free plan
/// already, there is nothing to do.
async fn to_free(
    state: &ApiState,
    user_id: &UserId,
    free: &crate::store::Plan,
) -> Result<Response, GateError> {
    let running = state.billing.subscriptions().current(user_id).await?;
    let paid = match &running {
        Some(r) if r.plan_id != free.row.id => state
            .billing
            .plans()
            .by_id(&r.plan_id)
            .await?
            .is_some_and(|pl| !pl.row.price_fen.is_zero()),
        _ => false,
    };
    let Some(r) = running.filter(|_| paid) else {
        return Err(GateError::new(
            StatusCode::CONFLICT,
            "您已是免费版: you are on the free plan already; it needs no payment",
        ));
    };
    if let Some(next) = next_of(state, user_id, None).await? {
        return Err(GateError::new(
            StatusCode::CONFLICT,
            format!(
                "已安排变更: a change to {} is already paid for and begins {}; choose again once it has begun",
                next.plan_name,
                iso(next.at)
            ),
        ));
    }
    state.billing.subscriptions().cancel(&r.id).await?;
    let at = r.current_period_end.unwrap_or(0);
    Ok(Json(ScheduledChange {
        message: format!(
            "已安排: your paid plan runs to {}, then {} takes over",
            iso(at),
            free.row.name
        ),
        subscription_id: r.id,
        scheduled_plan_id: free.row.id.clone(),
        scheduled_plan_name: free.row.name.clone(),
        scheduled_change_at: iso(at),
    })
    .into_response())
}
