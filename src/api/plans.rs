//! `/plans/*`: the plan catalogue (public), and its management by superusers.

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use utoipa::ToSchema;

use super::extract::{JsonBody, Superuser};
use super::time::iso;
use super::{ApiState, both, query_flag};
use crate::error::{ErrorBody, GateError};
use crate::formats::money::Fen;
use crate::store::{Plan, PlanInput};

pub fn routes() -> Router<Arc<ApiState>> {
    let mut r = Router::new();
    r = both(r, "/plans", get(list).post(create));
    r = both(
        r,
        "/plans/{plan_id}",
        get(one).put(update).delete(deactivate),
    );
    r
}

#[derive(Serialize, ToSchema)]
pub struct PlanResponse {
    pub id: String,
    pub name: String,
    pub description: String,
    /// Decimal string, e.g. "99.00".
    pub price: String,
    pub currency: String,
    /// monthly | yearly | lifetime
    pub billing_cycle: String,
    /// The main quota type (the first declared), for clients of the original API.
    pub quota_type: Option<String>,
    /// Its limit per period (-1 = unlimited).
    pub quota_limit: Option<i64>,
    /// Every quota type's limit per period (-1 = unlimited).
    #[schema(value_type = Object)]
    pub quotas: BTreeMap<String, i64>,
    #[schema(value_type = Object)]
    pub features: serde_json::Value,
    pub is_active: bool,
    pub is_default: bool,
    pub created_at: String,
    pub updated_at: String,
}

pub fn plan_response(plan: Plan, main_quota: Option<&str>) -> PlanResponse {
    let quota_limit = main_quota.map(|q| plan.limit_of(q));
    PlanResponse {
        id: plan.row.id,
        name: plan.row.name,
        description: plan.row.description,
        price: plan.row.price_fen.to_string(),
        currency: plan.row.currency,
        billing_cycle: plan.row.billing_cycle,
        quota_type: main_quota.map(str::to_string),
        quota_limit,
        quotas: plan.quotas.into_iter().collect(),
        features: serde_json::from_str(&plan.row.features)
            .unwrap_or_else(|_| serde_json::json!({})),
        is_active: plan.row.is_active,
        is_default: plan.row.is_default,
        created_at: iso(plan.row.created_at),
        updated_at: iso(plan.row.updated_at),
    }
}

/// Active plans, cheapest first (`active_only=false` lists inactive ones too).
#[utoipa::path(get, path = "/plans/", tag = "plans",
    params(("active_only" = Option<bool>, Query, description = "Default true")),
    responses((status = 200, body = Vec<PlanResponse>)))]
pub async fn list(
    State(state): State<Arc<ApiState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<PlanResponse>>, GateError> {
    let active_only = query_flag(&q, "active_only", true)?;
    let main = state.billing.main_quota();
    let plans = state.billing.plans().list(active_only).await?;
    Ok(Json(
        plans.into_iter().map(|p| plan_response(p, main)).collect(),
    ))
}

/// One plan.
#[utoipa::path(get, path = "/plans/{plan_id}", tag = "plans", params(("plan_id" = String, Path)),
    responses((status = 200, body = PlanResponse), (status = 404, body = ErrorBody)))]
pub async fn one(
    State(state): State<Arc<ApiState>>,
    Path(plan_id): Path<String>,
) -> Result<Json<PlanResponse>, GateError> {
    let plan = state.billing.plan(&plan_id).await?;
    Ok(Json(plan_response(plan, state.billing.main_quota())))
}

fn no_plan() -> GateError {
    GateError::not_found("套餐不存在: no such plan")
}

#[derive(Deserialize, ToSchema, Default)]
pub struct PlanRequest {
    pub name: Option<String>,
    pub description: Option<String>,
    /// A decimal string ("99.00") or a number with at most two decimals.
    #[schema(value_type = Option<String>)]
    pub price: Option<serde_json::Value>,
    pub currency: Option<String>,
    pub billing_cycle: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub features: Option<serde_json::Value>,
    /// Quota type -> limit per period (a whole number, -1 or "unlimited").
    #[schema(value_type = Option<Object>)]
    pub quotas: Option<serde_json::Map<String, serde_json::Value>>,
    pub is_active: Option<bool>,
    pub is_default: Option<bool>,
}

fn unprocessable(msg: impl Into<String>) -> GateError {
    GateError::new(StatusCode::UNPROCESSABLE_ENTITY, msg)
}

/// Applies a request over `base` (a new plan's defaults, or the stored plan).
fn merge(state: &ApiState, base: PlanInput, req: PlanRequest) -> Result<PlanInput, GateError> {
    let mut p = base;
    if let Some(n) = req.name {
        if n.trim().is_empty() || n.chars().count() > 100 {
            return Err(unprocessable("the plan name must be 1 to 100 characters"));
        }
        p.name = n.trim().to_string();
    }
    if let Some(d) = req.description {
        p.description = d;
    }
    if let Some(price) = req.price {
        p.price_fen = Fen::from_json("price", &price).map_err(unprocessable)?;
    }
    if let Some(c) = req.currency {
        if !matches!(c.as_str(), "CNY" | "USD") {
            return Err(unprocessable("currency must be CNY or USD"));
        }
        p.currency = c;
    }
    if let Some(b) = req.billing_cycle {
        if !matches!(b.as_str(), "monthly" | "yearly" | "lifetime") {
            return Err(unprocessable(
                "billing_cycle must be monthly, yearly or lifetime",
            ));
        }
        p.billing_cycle = b;
    }
    if let Some(f) = req.features {
        if !f.is_object() {
            return Err(unprocessable("features must be a JSON object"));
        }
        p.features = f.to_string();
    }
    if let Some(q) = req.quotas {
        let mut quotas = Vec::new();
        for (k, v) in q {
            if !state.billing.knows_quota(&k) {
                return Err(unprocessable(format!(
                    "`{k}` is not a quota type of this gate"
                )));
            }
            let limit = match &v {
                serde_json::Value::String(s) if s == "unlimited" => -1,
                serde_json::Value::Number(n) => match n.as_i64() {
                    Some(l) if l >= -1 => l,
                    _ => return Err(unprocessable(format!("{k}: {v} is not a limit"))),
                },
                _ => return Err(unprocessable(format!("{k}: {v} is not a limit"))),
            };
            quotas.push((k, limit));
        }
        p.quotas = quotas;
    }
    if let Some(a) = req.is_active {
        p.is_active = a;
    }
    if let Some(d) = req.is_default {
        p.is_default = d;
    }
    if p.is_default && (!p.price_fen.is_zero() || !p.is_active) {
        return Err(unprocessable("the default plan must be free and active"));
    }
    Ok(p)
}

/// Create a plan (superusers only).
#[utoipa::path(post, path = "/plans/", tag = "plans", request_body = PlanRequest, security(("bearer" = []), ("api_key" = [])),
    responses((status = 201, body = PlanResponse), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<Arc<ApiState>>,
    Superuser(admin): Superuser,
    JsonBody(req): JsonBody<PlanRequest>,
) -> Result<(StatusCode, Json<PlanResponse>), GateError> {
    if req.name.is_none() || req.price.is_none() {
        return Err(unprocessable("name and price are required"));
    }
    let base = PlanInput {
        name: String::new(),
        description: String::new(),
        price_fen: Fen::ZERO,
        currency: "CNY".into(),
        billing_cycle: "monthly".into(),
        features: "{}".into(),
        is_active: true,
        is_default: false,
        quotas: Vec::new(),
    };
    let input = merge(&state, base, req)?;
    let plan = state
        .billing
        .plans()
        .create(&input)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict(_) => GateError::new(
                StatusCode::CONFLICT,
                "套餐名称已存在: a plan of that name exists",
            ),
            e => e.into(),
        })?;
    state
        .auth
        .audit_trail()
        .record(
            Some(&admin.user_id),
            "plan.create",
            &plan.row.id,
            serde_json::json!({"name": plan.row.name, "price_fen": plan.row.price_fen}),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(plan_response(plan, state.billing.main_quota())),
    ))
}

fn input_of(plan: Plan) -> PlanInput {
    PlanInput {
        name: plan.row.name,
        description: plan.row.description,
        price_fen: plan.row.price_fen,
        currency: plan.row.currency,
        billing_cycle: plan.row.billing_cycle,
        features: plan.row.features,
        is_active: plan.row.is_active,
        is_default: plan.row.is_default,
        quotas: plan.quotas,
    }
}

/// Change a plan (superusers only); absent fields stay as they are. Running periods keep the
/// limits they began with; the change applies from each user's next period.
#[utoipa::path(put, path = "/plans/{plan_id}", tag = "plans", request_body = PlanRequest, params(("plan_id" = String, Path)),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, body = PlanResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    State(state): State<Arc<ApiState>>,
    Superuser(admin): Superuser,
    Path(plan_id): Path<String>,
    JsonBody(req): JsonBody<PlanRequest>,
) -> Result<Json<PlanResponse>, GateError> {
    let plan = state.billing.plan(&plan_id).await?;
    let was_default = plan.row.is_default;
    let input = merge(&state, input_of(plan), req)?;
    if was_default && !input.is_default {
        return Err(unprocessable("make another plan the default first"));
    }
    let plan = state
        .billing
        .plans()
        .update(&plan_id, &input)
        .await?
        .ok_or_else(no_plan)?;
    state
        .auth
        .audit_trail()
        .record(
            Some(&admin.user_id),
            "plan.update",
            &plan_id,
            serde_json::json!({"name": plan.row.name, "price_fen": plan.row.price_fen}),
        )
        .await?;
    Ok(Json(plan_response(plan, state.billing.main_quota())))
}

/// Deactivate a plan (superusers only): it is no longer offered; subscribers keep it until
/// their period ends.
#[utoipa::path(delete, path = "/plans/{plan_id}", tag = "plans", params(("plan_id" = String, Path)),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, body = PlanResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn deactivate(
    State(state): State<Arc<ApiState>>,
    Superuser(admin): Superuser,
    Path(plan_id): Path<String>,
) -> Result<Json<PlanResponse>, GateError> {
    let plan = state.billing.plan(&plan_id).await?;
    state
        .auth
        .audit_trail()
        .record(
            Some(&admin.user_id),
            "plan.deactivate",
            &plan_id,
            serde_json::json!({}),
        )
        .await?;
    if plan.row.is_default {
        return Err(unprocessable("the default plan cannot be deactivated"));
    }
    let mut input = input_of(plan);
    input.is_active = false;
    let plan = state
        .billing
        .plans()
        .update(&plan_id, &input)
        .await?
        .ok_or_else(no_plan)?;
    Ok(Json(plan_response(plan, state.billing.main_quota())))
}
