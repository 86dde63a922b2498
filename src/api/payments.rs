//! `/payments/*`: orders (their amount always from the plan), their status, refunds, and the
//! sandbox provider's checkout page.

use axum::extract::{Path, Query, Request, State};
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use utoipa::ToSchema;

use super::extract::{CurrentUser, JsonBody, Superuser, parse_json, read_body};
use super::time::{iso, iso_opt};
use super::{ApiState, both, query_flag, query_int, query_opt};
use crate::error::{ErrorBody, GateError};
use crate::formats::money::Fen;
use crate::store::PaymentRow;

pub fn routes() -> Router<Arc<ApiState>> {
    let mut r = Router::new();
    r = both(r, "/payments", get(list).post(create));
    r = both(r, "/payments/{payment_id}", get(one));
    r = both(r, "/payments/{payment_id}/refund", post(refund));
    r = r.route("/payments/{payment_id}/qr", get(qr));
    r = r.route(
        "/payments/sandbox/checkout/{order_no}",
        get(sandbox_checkout).post(sandbox_pay),
    );
    r
}

#[derive(Serialize, ToSchema)]
pub struct PaymentResponse {
    pub id: String,
    pub order_id: String,
    /// Decimal string, e.g. "99.00".
    pub amount: String,
    pub refunded_amount: String,
    pub currency: String,
    pub payment_method: String,
    /// pending | completed | partially_refunded | refunded | closed
    pub status: String,
    pub payment_url: Option<String>,
    pub qr_code: Option<String>,
    pub plan_id: String,
    pub subscription_id: Option<String>,
    pub description: String,
    pub created_at: String,
    pub updated_at: String,
    pub paid_at: Option<String>,
    /// What paying does (`new` | `renew` | `upgrade` | `downgrade`; see the README's billing
    /// table), priced when the order was made.
    pub change: String,
    /// The plan's price for one cycle, decimal string.
    pub plan_price: String,
    /// The unused part of the running period credited against it (upgrades), rounded in the
    /// payer's favour; `amount` = `plan_price` - `credit`.
    pub credit: String,
    /// When the paid plan takes effect (for a renewal: when the added cycle begins).
    pub starts_at: String,
    /// The span the payment bought, once it is paid.
    pub period_start: Option<String>,
    pub period_end: Option<String>,
    /// Its refunds, oldest first, with where each stands at the provider.
    pub refunds: Vec<RefundItem>,
}

#[derive(Serialize, ToSchema)]
pub struct RefundItem {
    /// The id the provider knows the refund by.
    pub refund_no: String,
    /// Decimal string, e.g. "19.80".
    pub amount: String,
    /// requested | succeeded | abnormal (the money could not reach the payer: needs a person)
    /// | closed, as the provider's notifications say.
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
}

/// When an order's plan takes effect as quoted: at the end of the running period for a
/// renewal or a downgrade, at once otherwise.
pub(crate) fn quoted_start(p: &PaymentRow) -> i64 {
    match p.change_kind.as_str() {
        "renew" | "downgrade" => p.from_period_end.unwrap_or(p.created_at),
        _ => p.created_at,
    }
}

/// An order as the API shows it, with its refunds (read from the store).
async fn detail(state: &ApiState, p: PaymentRow) -> Result<PaymentResponse, GateError> {
    let refunds = state.payments.orders().refunds_of(&p.id).await?;
    Ok(response(p, refunds))
}

fn response(p: PaymentRow, refunds: Vec<crate::store::RefundRow>) -> PaymentResponse {
    let refunds = refunds
        .into_iter()
        .map(|r| RefundItem {
            refund_no: r.refund_no,
            amount: r.amount_fen.to_string(),
            status: r.status.as_str().into(),
            created_at: iso(r.created_at),
            updated_at: iso(r.updated_at),
        })
        .collect();
    let starts_at = iso(p.effect_start.unwrap_or_else(|| quoted_start(&p)));
    PaymentResponse {
        change: p.change_kind.clone(),
        plan_price: p.list_price_fen.to_string(),
        credit: p.credit_fen.to_string(),
        starts_at,
        period_start: iso_opt(p.effect_start),
        period_end: iso_opt(p.effect_end),
        id: p.id,
        order_id: p.order_no,
        amount: p.amount_fen.to_string(),
        refunded_amount: p.refunded_fen.to_string(),
        currency: p.currency,
        payment_method: p.payment_method,
        status: p.status.as_str().into(),
        payment_url: p.payment_url,
        qr_code: p.qr_code,
        plan_id: p.plan_id,
        subscription_id: p.subscription_id,
        description: p.description,
        created_at: iso(p.created_at),
        updated_at: iso(p.updated_at),
        paid_at: iso_opt(p.paid_at),
        refunds,
    }
}

#[derive(Deserialize, ToSchema)]
pub struct CreatePayment {
    /// The plan to pay for. Without it (as the existing UI sends), `amount` must equal an
    /// active plan's price, and the order is bound to that plan.
    #[serde(default)]
    pub plan_id: Option<String>,
    /// One's own subscription, to renew it (the UI's 续费 button): its plan is the one paid
    /// for, and the payment extends it by one cycle from its end.
    #[serde(default)]
    pub subscription_id: Option<String>,
    /// Only used to find the plan when `plan_id` is absent; never the amount charged. A
    /// decimal in yuan with at most two places (a JSON number is accepted too).
    #[schema(value_type = Option<String>, pattern = "^[0-9]{1,12}(\\.[0-9]{1,2})?$")]
    #[serde(default)]
    pub amount: Option<serde_json::Value>,
    #[serde(default)]
    pub currency: Option<String>,
    /// alipay | wechat | sandbox
    pub payment_method: String,
}

/// Create an order for a plan; the amount comes from the plan on the server.
#[utoipa::path(post, path = "/payments/", tag = "payments", request_body = CreatePayment,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 201, body = PaymentResponse),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No such plan, or no such subscription of the caller's", body = ErrorBody),
        (status = 409, description = "A free or withdrawn plan, a payment method this gate lacks, or a change while another is scheduled", body = ErrorBody),
        (status = 422, description = "Neither plan_id, subscription_id nor an amount matching an active plan", body = ErrorBody),
        (status = 502, description = "The provider refused the order", body = ErrorBody)))]
pub async fn create(
    State(state): State<Arc<ApiState>>,
    CurrentUser(p): CurrentUser,
    JsonBody(req): JsonBody<CreatePayment>,
) -> Result<(StatusCode, Json<PaymentResponse>), GateError> {
    let unprocessable = |m: String| GateError::new(StatusCode::UNPROCESSABLE_ENTITY, m);
    let renewed = match &req.subscription_id {
        Some(id) if req.plan_id.is_none() => {
            let sub = state
                .billing
                .subscriptions()
                .by_id(id)
                .await?
                .filter(|s| s.user_id == *p.user_id)
                .ok_or_else(|| GateError::not_found(format!("no subscription `{id}` of yours")))?;
            Some(sub.plan_id)
        }
        _ => None,
    };
    let plan = match req.plan_id.as_ref().or(renewed.as_ref()) {
        Some(id) => state
            .billing
            .plans()
            .by_id(id)
            .await?
            .ok_or_else(|| GateError::not_found(format!("no plan `{id}`")))?,
        None => {
            let amount = req
                .amount
                .as_ref()
                .ok_or_else(|| unprocessable("send plan_id (or the amount of a plan)".into()))?;
            let fen = Fen::from_json("amount", amount).map_err(unprocessable)?;
            let text = fen.to_string();
            let currency = req.currency.clone().unwrap_or_else(|| "CNY".into());
            let plans = state.billing.plans().list(true).await?;
            plans
                .into_iter()
                .find(|pl| pl.row.price_fen == fen && pl.row.currency == currency && !fen.is_zero())
                .ok_or_else(|| {
                    GateError::not_found(format!(
                        "no active plan costs {text} {currency}: the amount is decided by the plan"
                    ))
                })?
        }
    };
    let order = state
        .payments
        .create_order(&p, &plan, &req.payment_method)
        .await?;
    Ok((StatusCode::CREATED, Json(response(order, Vec::new()))))
}

#[derive(Serialize, ToSchema)]
pub struct PaymentListItem {
    pub id: String,
    pub order_id: String,
    /// A JSON number (the history page calls `amount.toFixed()`).
    pub amount: f64,
    pub currency: String,
    pub payment_method: String,
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
    pub plan_name: Option<String>,
    pub description: String,
}

/// One's own orders, newest first (superusers: everyone's).
#[utoipa::path(get, path = "/payments/", tag = "payments", security(("bearer" = []), ("api_key" = [])),
    params(("status_filter" = Option<String>, Query), ("limit" = Option<i64>, Query, description = "1 to 500, default 50", minimum = 1, maximum = 500)),
    responses((status = 200, body = Vec<PaymentListItem>), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<Arc<ApiState>>,
    CurrentUser(p): CurrentUser,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<PaymentListItem>>, GateError> {
    let limit = query_int(&q, "limit", 50, 1, 500)?;
    let who = (!p.is_superuser).then_some(&p.user_id);
    let rows = state
        .payments
        .orders()
        .list(who, query_opt(&q, "status_filter"), limit)
        .await?;
    let mut out = Vec::new();
    for r in rows {
        let plan_name = state
            .billing
            .plans()
            .by_id(&r.plan_id)
            .await?
            .map(|pl| pl.row.name);
        out.push(PaymentListItem {
            amount: rust_decimal::prelude::ToPrimitive::to_f64(&r.amount_fen.to_decimal())
                .unwrap_or(0.0),
            id: r.id,
            order_id: r.order_no,
            currency: r.currency,
            payment_method: r.payment_method,
            status: r.status.as_str().into(),
            created_at: iso(r.created_at),
            updated_at: iso(r.updated_at),
            plan_name,
            description: r.description,
        });
    }
    Ok(Json(out))
}

async fn owned(
    state: &ApiState,
    p: &crate::auth::Principal,
    id: &str,
) -> Result<PaymentRow, GateError> {
    let order = state.payments.orders().by_id(id).await?;
    match order {
        Some(o) if *o.user_id == *p.user_id || p.is_superuser => Ok(o),
        // Someone else's order is as invisible as a missing one.
        _ => Err(GateError::not_found("支付记录不存在: no such payment")),
    }
}

/// An order (owner or superuser); `poll=true` asks the provider first.
#[utoipa::path(get, path = "/payments/{payment_id}", tag = "payments", security(("bearer" = []), ("api_key" = [])),
    params(("payment_id" = String, Path), ("poll" = Option<bool>, Query)),
    responses((status = 200, body = PaymentResponse), (status = 404, body = ErrorBody)))]
pub async fn one(
    State(state): State<Arc<ApiState>>,
    CurrentUser(p): CurrentUser,
    Path(payment_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<PaymentResponse>, GateError> {
    let order = owned(&state, &p, &payment_id).await?;
    if query_flag(&q, "poll", false)? {
        state.payments.poll(&order).await?;
        let order = owned(&state, &p, &payment_id).await?;
        return Ok(Json(detail(&state, order).await?));
    }
    Ok(Json(detail(&state, order).await?))
}

/// The order's QR code (WeChat Pay's `code_url`, Alipay's precreate `qr_code`, the sandbox's
/// checkout page) drawn by the gate as SVG, so a page can show it without any third-party QR
/// service. One's own orders only.
#[utoipa::path(get, path = "/payments/{payment_id}/qr", tag = "payments", security(("bearer" = []), ("api_key" = [])),
    params(("payment_id" = String, Path)),
    responses(
        (status = 200, description = "The QR code", content_type = "image/svg+xml", body = String),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such order of yours, or it has no QR code (a page redirect)", body = ErrorBody)))]
pub async fn qr(
    State(state): State<Arc<ApiState>>,
    CurrentUser(p): CurrentUser,
    Path(payment_id): Path<String>,
) -> Result<impl IntoResponse, GateError> {
    let order = owned(&state, &p, &payment_id).await?;
    let text = order
        .qr_code
        .filter(|t| !t.is_empty())
        .ok_or_else(|| GateError::not_found("this order has no QR code: open its payment_url"))?;
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M)
        .map_err(|_| GateError::not_found("this order's QR payload is too long to draw"))?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(240, 240)
        .build();
    Ok((
        [
            (http::header::CONTENT_TYPE, "image/svg+xml"),
            (http::header::CACHE_CONTROL, "private, max-age=300"),
        ],
        svg,
    ))
}

#[derive(Deserialize, ToSchema, Default)]
pub struct RefundRequest {
    /// Default: what remains refundable.
    #[schema(value_type = Option<String>)]
    #[serde(default)]
    pub refund_amount: Option<serde_json::Value>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RefundResponse {
    pub success: bool,
    pub message: String,
    pub refund_id: String,
    pub payment: PaymentResponse,
}

/// Refund all or part of a completed order (superusers). Idempotent: send an
/// `Idempotency-Key`; without one, the same amount and reason count as the same refund.
#[utoipa::path(post, path = "/payments/{payment_id}/refund", tag = "payments", request_body = RefundRequest,
    security(("bearer" = []), ("api_key" = [])),
    params(("payment_id" = String, Path), ("refund_amount" = Option<String>, Query), ("reason" = Option<String>, Query)),
    responses((status = 200, body = RefundResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn refund(
    State(state): State<Arc<ApiState>>,
    Superuser(admin): Superuser,
    Path(payment_id): Path<String>,
    req: Request,
) -> Result<Json<RefundResponse>, GateError> {
    let (parts, body) = read_body(req).await?;
    let q: HashMap<String, String> = parts
        .uri
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let mut r: RefundRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RefundRequest::default()
    } else {
        parse_json(&body)?
    };
    if r.refund_amount.is_none() {
        r.refund_amount =
            query_opt(&q, "refund_amount").map(|v| serde_json::Value::String(v.to_string()));
    }
    let reason = r
        .reason
        .clone()
        .or_else(|| query_opt(&q, "reason").map(str::to_string))
        .unwrap_or_default();
    let order = owned(&state, &admin, &payment_id).await?;
    let amount_fen = match &r.refund_amount {
        None => order.amount_fen - order.refunded_fen,
        Some(v) => Fen::from_json("refund_amount", v)
            .map_err(|e| GateError::new(StatusCode::UNPROCESSABLE_ENTITY, e))?,
    };
    let refund_no = match parts
        .headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
    {
        Some(k) if !k.trim().is_empty() => format!("{}:{}", order.id, k.trim()),
        _ => format!("{}:{}:{reason}", order.id, amount_fen.get()),
    };
    let row = state
        .payments
        .refund(&order, amount_fen, &refund_no, &reason)
        .await?;
    tracing::info!(actor = %admin.user_id, order_no = %row.order_no, amount_fen = amount_fen.get(), "refund");
    state
        .auth
        .audit_trail()
        .record(
            Some(&admin.user_id),
            "payment.refund",
            &row.id,
            serde_json::json!({"amount_fen": amount_fen, "refund_no": refund_no, "reason": reason}),
        )
        .await?;
    Ok(Json(RefundResponse {
        success: true,
        message: "退款成功".into(),
        refund_id: refund_no,
        payment: detail(&state, row).await?,
    }))
}

/// The sandbox provider's checkout page (development only).
#[utoipa::path(get, path = "/payments/sandbox/checkout/{order_no}", tag = "payments",
    params(("order_no" = String, Path)),
    responses((status = 200, description = "An HTML page with a Pay button", content_type = "text/html"), (status = 404, body = ErrorBody)))]
pub async fn sandbox_checkout(
    State(state): State<Arc<ApiState>>,
    Path(order_no): Path<String>,
) -> Result<Html<String>, GateError> {
    if state.payments.sandbox().is_none() {
        return Err(GateError::not_found(
            "the sandbox provider is off on this gate",
        ));
    }
    let order = state
        .payments
        .orders()
        .by_order_no(&order_no)
        .await?
        .ok_or_else(|| GateError::not_found("no such order"))?;
    if !state.payments.paid_on_sandbox(&order.payment_method) {
        return Err(not_on_sandbox(&order.payment_method));
    }
    let amount = order.amount_fen.to_string();
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let stands_for = match order.payment_method.as_str() {
        "alipay" => "Alipay (支付宝), which has no credentials on this gate",
        "wechat" => "WeChat Pay (微信支付), which has no credentials on this gate",
        _ => "Alipay / WeChat Pay",
    };
    Ok(Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sandbox checkout</title></head><body>\
         <h1>Sandbox checkout (沙箱支付)</h1><p>No money moves: this page stands in for {stands_for}.</p>\
         <p>Order <code>{no}</code>: {desc}, <strong>{amount} {cur}</strong>, status <strong>{status}</strong>.</p>\
         <form method=\"post\"><button type=\"submit\">Pay {amount} {cur}</button></form></body></html>",
        no = esc(&order.order_no),
        desc = esc(&order.description),
        cur = esc(&order.currency),
        status = order.status,
    )))
}

/// An order whose method is a real provider: its payer pays there, never on the sandbox page.
fn not_on_sandbox(method: &str) -> GateError {
    GateError::not_found(format!(
        "this order is paid through `{method}`, not on the sandbox checkout page"
    ))
}

/// Pay on the sandbox checkout page: a notification signed with the sandbox key goes through
/// the webhook handler, exactly as a real provider's would.
#[utoipa::path(post, path = "/payments/sandbox/checkout/{order_no}", tag = "payments",
    params(("order_no" = String, Path)),
    responses((status = 200, description = "Paid (or already paid)", content_type = "text/html"), (status = 404, body = ErrorBody)))]
pub async fn sandbox_pay(
    State(state): State<Arc<ApiState>>,
    Path(order_no): Path<String>,
) -> Result<Html<String>, GateError> {
    let Some(sandbox) = state.payments.sandbox() else {
        return Err(GateError::not_found(
            "the sandbox provider is off on this gate",
        ));
    };
    let order = state
        .payments
        .orders()
        .by_order_no(&order_no)
        .await?
        .ok_or_else(|| GateError::not_found("no such order"))?;
    if !state.payments.paid_on_sandbox(&order.payment_method) {
        return Err(not_on_sandbox(&order.payment_method));
    }
    let (body, headers) = sandbox.paid_event(&order);
    let ack = state
        .payments
        .handle_notification(&order.payment_method, &headers, &body)
        .await;
    if !ack.status().is_success() {
        return Err(GateError::unavailable(
            "the payment could not be recorded; try again",
        ));
    }
    let order = state
        .payments
        .orders()
        .by_order_no(&order_no)
        .await?
        .ok_or_else(|| GateError::not_found("no such order"))?;
    Ok(Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Paid</title></head><body><h1>Order {}: {}</h1></body></html>",
        order.order_no, order.status
    )))
}
