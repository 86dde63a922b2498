//! `/subscriptions/*`: the signed-in user's subscription, its quota, and subscribing.

use axum::extract::State;
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
use crate::formats::money;
use crate::store::SubscriptionRow;

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
    /// pending | active | cancelled (runs to its period end) | expired
    pub status: String,
    pub current_period_start: Option<String>,
    pub current_period_end: Option<String>,
    pub auto_renew: bool,
    pub created_at: String,
    pub updated_at: String,
}

async fn response(state: &ApiState, s: SubscriptionRow) -> Result<SubscriptionResponse, GateError> {
    let plan_name = state.store.plan(&s.plan_id).await?.map(|p| p.row.name);
    Ok(SubscriptionResponse {
        id: s.id,
        user_id: s.user_id,
        plan_id: s.plan_id,
        plan_name,
        status: s.status,
        current_period_start: iso_opt(s.current_period_start),
        current_period_end: iso_opt(s.current_period_end),
        auto_renew: s.auto_renew != 0,
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
    let mut out = Vec::new();
    for s in state.store.subscriptions_of(&p.user_id).await? {
        out.push(response(&state, s).await?);
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
        .store
        .current_subscription(&p.user_id)
        .await?
        .ok_or_else(|| GateError::not_found("您还没有订阅: no subscription"))?;
    Ok(Json(response(&state, s).await?))
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
    let sub = state.store.current_subscription(&p.user_id).await?;
    let quotas = quota_entries(&state, &p.user_id).await?;
    let main = state
        .billing
        .main_quota()
        .and_then(|m| quotas.iter().find(|q| q.type_key == m));
    Ok(Json(SubscriptionQuota {
        has_subscription: sub.is_some(),
        subscription_id: sub.as_ref().map(|s| s.id.clone()),
        plan_id: sub.as_ref().map(|s| s.plan_id.clone()),
        status: sub.as_ref().map(|s| s.status.clone()),
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
        .store
        .current_subscription(&p.user_id)
        .await?
        .ok_or_else(|| GateError::not_found("您还没有订阅: no subscription"))?;
    state.store.cancel_subscription(&s.id).await?;
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
    pub subscription_id: String,
    pub payment_id: String,
    pub order_no: String,
    /// From the plan, never from the client.
    pub amount: String,
    pub currency: String,
    /// `pending` until the payment completes.
    pub status: String,
    pub payment_url: Option<String>,
    pub qr_code: Option<String>,
}

/// Subscribe to a paid plan: a pending subscription and a pending order whose amount comes
/// from the plan. It becomes active only when the payment completes.
#[utoipa::path(post, path = "/subscriptions/subscribe", tag = "subscriptions", request_body = SubscribeRequest,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 202, description = "Order created, waiting for payment", body = SubscribeResponse),
        (status = 404, body = ErrorBody),
        (status = 422, description = "Free, inactive or already subscribed plan", body = ErrorBody)))]
pub async fn subscribe(
    State(state): State<Arc<ApiState>>,
    CurrentUser(p): CurrentUser,
    JsonBody(req): JsonBody<SubscribeRequest>,
) -> Result<(StatusCode, Json<SubscribeResponse>), GateError> {
    let plan = state
        .store
        .plan(&req.plan_id)
        .await?
        .ok_or_else(|| GateError::not_found("套餐不存在: no such plan"))?;
    state.billing.ensure_current(&p.user_id).await?;
    if let Some(cur) = state.store.current_subscription(&p.user_id).await? {
        if cur.plan_id == plan.row.id && cur.status == "active" {
            return Err(GateError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "您已有活跃订阅: you already have this plan",
            ));
        }
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
    let sub_id = order.subscription_id.clone().unwrap_or_default();
    Ok((
        StatusCode::ACCEPTED,
        Json(SubscribeResponse {
            message: "订单已创建: pay at payment_url (or draw qr_code); the plan starts when the payment completes".into(),
            subscription_id: sub_id,
            payment_id: order.id,
            order_no: order.order_no,
            amount: money::fen_to_string(order.amount_fen),
            currency: order.currency,
            status: order.status,
            payment_url: order.payment_url,
            qr_code: order.qr_code,
        }),
    ))
}
