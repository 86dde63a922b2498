//! `/admin/quotas/*`: what the frontends read to show and check quota (the backend served these
//! only with ENABLE_QUOTA, and let anyone reset anyone's quota). A user sees their own figures
//! and logs; other users' data, resets and adjustments are for superusers.

use axum::extract::{Path, Query, State};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use http::StatusCode;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use utoipa::ToSchema;

use super::extract::{CurrentUser, Superuser, UserPath};
use super::time::iso;
use super::{ApiState, both, query_int, query_opt};
use crate::auth::Principal;
use crate::error::{ErrorBody, GateError};
use crate::formats::ids::UserId;
use crate::store::{UsageQuery, now_ms};

pub fn routes() -> Router<Arc<ApiState>> {
    let mut r = Router::new();
    r = both(r, "/admin/quotas/users/me", get(mine));
    r = both(r, "/admin/quotas/users/{user_id}", get(of_user));
    r = both(r, "/admin/quotas/usage-logs", get(usage_logs));
    r = both(r, "/admin/quotas/statistics/{quota_type}", get(statistics));
    r = both(r, "/admin/quotas/users/{user_id}/reset", post(reset));
    r = both(r, "/admin/quotas/users/{user_id}/adjust", put(adjust));
    r = both(r, "/admin/quotas/health", get(health));
    r
}

#[derive(Serialize, ToSchema, Clone)]
pub struct QuotaEntry {
    pub type_key: String,
    pub name: String,
    pub unit: String,
    /// -1 = unlimited.
    pub limit: i64,
    pub used: i64,
    /// -1 = unlimited.
    pub remaining: i64,
    pub usage_percent: f64,
    pub period_start: String,
    pub period_end: String,
}

#[derive(Serialize, ToSchema)]
pub struct UserQuotas {
    pub user_id: String,
    pub total_quotas: usize,
    pub quotas: Vec<QuotaEntry>,
}

/// The user's balances in the order the quota types are declared.
pub async fn quota_entries(
    state: &ApiState,
    user_id: &UserId,
) -> Result<Vec<QuotaEntry>, GateError> {
    let balances = state.billing.ledger().balances_of(user_id).await?;
    let mut out = Vec::new();
    for q in state.billing.quota_types() {
        let Some(b) = balances.iter().find(|b| q.key == b.quota_type.as_str()) else {
            continue;
        };
        let usage_percent = if b.limit_amount > 0 {
            ((b.used_amount as f64 / b.limit_amount as f64) * 10000.0).round() / 100.0
        } else {
            0.0
        };
        out.push(QuotaEntry {
            type_key: q.key.to_string(),
            name: q.name.clone(),
            unit: q.unit.clone(),
            limit: b.limit_amount,
            used: b.used_amount,
            remaining: b.remaining(),
            usage_percent,
            period_start: iso(b.period_start),
            period_end: iso(b.period_end),
        });
    }
    Ok(out)
}

async fn user_quotas(state: &ApiState, user_id: &UserId) -> Result<UserQuotas, GateError> {
    state.billing.ensure_current(user_id).await?;
    let quotas = quota_entries(state, user_id).await?;
    if quotas.is_empty() {
        return Err(GateError::not_found(format!(
            "No quotas found for user {user_id}"
        )));
    }
    Ok(UserQuotas {
        user_id: user_id.to_string(),
        total_quotas: quotas.len(),
        quotas,
    })
}

/// The signed-in user's quotas (never charged).
#[utoipa::path(get, path = "/admin/quotas/users/me", tag = "quotas", security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, body = UserQuotas), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn mine(
    State(state): State<Arc<ApiState>>,
    CurrentUser(p): CurrentUser,
) -> Result<Json<UserQuotas>, GateError> {
    Ok(Json(user_quotas(&state, &p.user_id).await?))
}

fn own_or_superuser(p: &Principal, user_id: &str) -> Result<(), GateError> {
    if &*p.user_id == user_id || p.is_superuser {
        Ok(())
    } else {
        Err(GateError::forbidden(
            "需要管理员权限: only superusers see other users' quota",
        ))
    }
}

/// A user's quotas (superusers, or the user themself).
#[utoipa::path(get, path = "/admin/quotas/users/{user_id}", tag = "quotas", params(("user_id" = String, Path)),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, body = UserQuotas), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn of_user(
    State(state): State<Arc<ApiState>>,
    CurrentUser(p): CurrentUser,
    UserPath(user_id): UserPath,
) -> Result<Json<UserQuotas>, GateError> {
    own_or_superuser(&p, &user_id)?;
    if state.auth.users().by_id(&user_id).await?.is_none() {
        return Err(GateError::not_found("用户不存在: no such user"));
    }
    Ok(Json(user_quotas(&state, &user_id).await?))
}

#[derive(Serialize, ToSchema)]
pub struct UsageLog {
    pub id: String,
    pub user_id: String,
    pub quota_type: String,
    pub amount: i64,
    pub endpoint: String,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    pub created_at: String,
    /// `committed`, or `refunded` for a charge given back after it stood (a task that failed).
    pub state: String,
    /// Why it was given back.
    pub refund_reason: Option<String>,
    pub refunded_at: Option<String>,
}

fn parse_date(name: &str, text: Option<&str>) -> Result<Option<i64>, GateError> {
    match text {
        None => Ok(None),
        Some(t) => {
            let full = if t.len() == 10 {
                format!("{t}T00:00")
            } else {
                t.to_string()
            };
            super::time::parse(&full).map(Some).ok_or_else(|| {
                GateError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("{name} `{t}` is not a date such as 2026-11-25"),
                )
            })
        }
    }
}

/// Charges, newest first: those that stood, and those given back after they stood (a task
/// the backend reported failed) with `state = refunded` and the reason. One's own; superusers
/// may filter by `user_id` or see all.
#[utoipa::path(get, path = "/admin/quotas/usage-logs", tag = "quotas", security(("bearer" = []), ("api_key" = [])),
    params(
        ("user_id" = Option<String>, Query), ("quota_type" = Option<String>, Query),
        ("start_date" = Option<String>, Query, description = "A date (2026-11-25) or a date-time", pattern = "^$|^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])(T([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-](0[0-9]|1[0-4]):[0-5][0-9])?)?)?$"),
        ("end_date" = Option<String>, Query, description = "Exclusive; a date or a date-time", pattern = "^$|^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])(T([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-](0[0-9]|1[0-4]):[0-5][0-9])?)?)?$"),
        ("limit" = Option<i64>, Query, description = "1 to 1000, default 100", minimum = 1, maximum = 1000), ("offset" = Option<i64>, Query, minimum = 0)),
    responses((status = 200, body = Vec<UsageLog>), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn usage_logs(
    State(state): State<Arc<ApiState>>,
    CurrentUser(p): CurrentUser,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<UsageLog>>, GateError> {
    let requested = query_opt(&q, "user_id");
    let user_id = match requested {
        Some(u) => {
            own_or_superuser(&p, u)?;
            // No account has an id that is not a UUID: a superuser asking for one sees nothing.
            let Some(id) = UserId::parse(u) else {
                return Ok(Json(Vec::new()));
            };
            Some(id)
        }
        None if p.is_superuser => None,
        None => Some(p.user_id.clone()),
    };
    let rows = state
        .billing
        .ledger()
        .usage(&UsageQuery {
            user_id: user_id.as_ref(),
            quota_type: query_opt(&q, "quota_type"),
            since: parse_date("start_date", query_opt(&q, "start_date"))?,
            until: parse_date("end_date", query_opt(&q, "end_date"))?,
            limit: query_int(&q, "limit", 100, 1, 1000)?,
            offset: query_int(&q, "offset", 0, 0, i64::MAX)?,
        })
        .await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| UsageLog {
                id: r.id,
                user_id: r.user_id,
                quota_type: r.quota_type,
                amount: r.amount,
                endpoint: r.endpoint,
                metadata: serde_json::from_str(&r.metadata)
                    .unwrap_or_else(|_| serde_json::json!({})),
                created_at: iso(r.created_at),
                refunded_at: r.refund_reason.as_ref().and(r.settled_at).map(iso),
                state: r.state,
                refund_reason: r.refund_reason,
            })
            .collect(),
    ))
}

#[derive(Serialize, ToSchema)]
pub struct Statistics {
    pub quota_type: String,
    pub days: i64,
    pub total_usage: i64,
    pub total_calls: i64,
    pub unique_users: usize,
    pub avg_usage_per_call: f64,
    /// The UTC day with the most usage.
    pub peak_usage_date: Option<String>,
}

/// Usage of a quota type over the last `days` days: one's own, or everyone's for superusers.
#[utoipa::path(get, path = "/admin/quotas/statistics/{quota_type}", tag = "quotas", security(("bearer" = []), ("api_key" = [])),
    params(("quota_type" = String, Path), ("days" = Option<i64>, Query, description = "1 to 366, default 30", minimum = 1, maximum = 366)),
    responses((status = 200, body = Statistics), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn statistics(
    State(state): State<Arc<ApiState>>,
    CurrentUser(p): CurrentUser,
    Path(quota_type): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Statistics>, GateError> {
    if !state.billing.knows_quota(&quota_type) {
        return Err(GateError::not_found(format!(
            "no quota type `{quota_type}`"
        )));
    }
    let days = query_int(&q, "days", 30, 1, 366)?;
    let since = now_ms() - days * 86_400_000;
    let user = (!p.is_superuser).then_some(&p.user_id);
    let rows = state
        .billing
        .ledger()
        .usage_since(&quota_type, user, since)
        .await?;
    let total_usage: i64 = rows.iter().map(|r| r.1).sum();
    let users: HashSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let mut by_day: BTreeMap<String, i64> = BTreeMap::new();
    for (_, amount, at) in &rows {
        *by_day.entry(iso(*at)[..10].to_string()).or_default() += amount;
    }
    let peak = by_day
        .iter()
        .max_by_key(|(_, v)| **v)
        .map(|(d, _)| d.clone());
    Ok(Json(Statistics {
        quota_type,
        days,
        total_usage,
        total_calls: rows.len() as i64,
        unique_users: users.len(),
        avg_usage_per_call: if rows.is_empty() {
            0.0
        } else {
            total_usage as f64 / rows.len() as f64
        },
        peak_usage_date: peak,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct ResetResult {
    pub message: String,
    pub user_id: String,
    pub quotas_reset: u64,
    pub quota_type: Option<String>,
}

/// Set a user's usage back to zero, for one quota type or all (superusers only).
#[utoipa::path(post, path = "/admin/quotas/users/{user_id}/reset", tag = "quotas", security(("bearer" = []), ("api_key" = [])),
    params(("user_id" = String, Path), ("quota_type" = Option<String>, Query)),
    responses((status = 200, body = ResetResult), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn reset(
    State(state): State<Arc<ApiState>>,
    Superuser(admin): Superuser,
    UserPath(user_id): UserPath,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<ResetResult>, GateError> {
    let quota_type = query_opt(&q, "quota_type");
    if let Some(t) = quota_type {
        if !state.billing.knows_quota(t) {
            return Err(GateError::not_found(format!("no quota type `{t}`")));
        }
    }
    if state.auth.users().by_id(&user_id).await?.is_none() {
        return Err(GateError::not_found("用户不存在: no such user"));
    }
    state.billing.ensure_current(&user_id).await?;
    let n = state
        .billing
        .ledger()
        .reset_used(&user_id, quota_type, now_ms())
        .await?;
    tracing::info!(actor = %admin.user_id, user_id = %user_id, quota_type = quota_type.unwrap_or("*"), "quota reset");
    state
        .auth
        .audit_trail()
        .record(
            Some(&admin.user_id),
            "quota.reset",
            &user_id,
            serde_json::json!({"quota_type": quota_type}),
        )
        .await?;
    Ok(Json(ResetResult {
        message: "配额已重置".into(),
        user_id: user_id.to_string(),
        quotas_reset: n,
        quota_type: quota_type.map(str::to_string),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct AdjustResult {
    pub message: String,
    pub user_id: String,
    pub quota_type: String,
    pub new_limit: i64,
    pub current_usage: i64,
    pub remaining: i64,
}

/// Set a user's limit for this period (superusers only; -1 = unlimited; not below usage).
#[utoipa::path(put, path = "/admin/quotas/users/{user_id}/adjust", tag = "quotas", security(("bearer" = []), ("api_key" = [])),
    params(("user_id" = String, Path), ("quota_type" = String, Query), ("new_limit" = i64, Query, description = "-1 (unlimited) or more", minimum = -1, maximum = 4611686018427387903i64)),
    responses((status = 200, body = AdjustResult), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn adjust(
    State(state): State<Arc<ApiState>>,
    Superuser(admin): Superuser,
    UserPath(user_id): UserPath,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<AdjustResult>, GateError> {
    let unprocessable = |m: String| GateError::new(StatusCode::UNPROCESSABLE_ENTITY, m);
    let named = query_opt(&q, "quota_type")
        .ok_or_else(|| unprocessable("quota_type is required".into()))?;
    let quota_type = state
        .billing
        .quota(named)
        .ok_or_else(|| GateError::not_found(format!("no quota type `{named}`")))?;
    let new_limit = query_int(&q, "new_limit", i64::MIN, -1, i64::MAX / 2)?;
    if new_limit == i64::MIN {
        return Err(unprocessable("new_limit is required".into()));
    }
    if state.auth.users().by_id(&user_id).await?.is_none() {
        return Err(GateError::not_found("用户不存在: no such user"));
    }
    state.billing.ensure_current(&user_id).await?;
    let Some(b) = state
        .billing
        .ledger()
        .set_limit(&user_id, &quota_type, new_limit, now_ms())
        .await?
    else {
        let used = state
            .billing
            .ledger()
            .balance(&user_id, &quota_type)
            .await?
            .map_or(0, |b| b.used_amount);
        return Err(unprocessable(format!(
            "new_limit {new_limit} is below the {used} already used this period; reset the usage first"
        )));
    };
    tracing::info!(actor = %admin.user_id, user_id = %user_id, quota_type = %quota_type, new_limit, "quota limit adjusted");
    state
        .auth
        .audit_trail()
        .record(
            Some(&admin.user_id),
            "quota.adjust",
            &user_id,
            serde_json::json!({"quota_type": quota_type, "new_limit": new_limit}),
        )
        .await?;
    Ok(Json(AdjustResult {
        message: "配额已调整".into(),
        user_id: user_id.to_string(),
        quota_type: quota_type.to_string(),
        new_limit,
        current_usage: b.used_amount,
        remaining: b.remaining(),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct QuotaHealth {
    pub status: &'static str,
    pub service: &'static str,
    pub timestamp: String,
}

/// The quota service answers.
#[utoipa::path(get, path = "/admin/quotas/health", tag = "quotas", responses((status = 200, body = QuotaHealth)))]
pub async fn health() -> Json<QuotaHealth> {
    Json(QuotaHealth {
        status: "healthy",
        service: "quota-admin",
        timestamp: iso(now_ms()),
    })
}
