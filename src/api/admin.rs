//! `/admin/users*` and `/admin/audit-log`: what an operator needs day to day (superusers only).
//! Every change is written to the audit log with who made it.

use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::StatusCode;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use utoipa::ToSchema;

use super::extract::{Superuser, UserPath};
use super::schemas::UserResponse;
use super::time::iso;
use super::{ApiState, both, query_int, query_opt};
use crate::error::{ErrorBody, GateError};
use crate::formats::ids::UserId;

pub fn routes() -> Router<Arc<ApiState>> {
    let mut r = Router::new();
    r = both(r, "/admin/users", get(list_users));
    r = both(r, "/admin/users/{user_id}/disable", post(disable));
    r = both(r, "/admin/users/{user_id}/enable", post(enable));
    r = both(r, "/admin/users/{user_id}/grant", post(grant));
    r = both(r, "/admin/audit-log", get(audit_log));
    r
}

/// Users, newest first; `q` searches email and username.
#[utoipa::path(get, path = "/admin/users", tag = "admin", security(("bearer" = []), ("api_key" = [])),
    params(("q" = Option<String>, Query), ("limit" = Option<i64>, Query, description = "1 to 500, default 50", minimum = 1, maximum = 500), ("offset" = Option<i64>, Query, minimum = 0)),
    responses((status = 200, body = Vec<UserResponse>), (status = 403, body = ErrorBody)))]
pub async fn list_users(
    State(state): State<Arc<ApiState>>,
    Superuser(_admin): Superuser,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<UserResponse>>, GateError> {
    let rows = state
        .auth
        .users()
        .search(
            query_opt(&q, "q").unwrap_or(""),
            query_int(&q, "limit", 50, 1, 500)?,
            query_int(&q, "offset", 0, 0, i64::MAX)?,
        )
        .await?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

async fn set_active(
    state: &ApiState,
    admin: &crate::auth::Principal,
    user_id: &UserId,
    active: bool,
) -> Result<UserResponse, GateError> {
    if admin.user_id == *user_id && !active {
        return Err(GateError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "you cannot disable your own account",
        ));
    }
    let row = state.auth.set_active(user_id, active).await?;
    state
        .auth
        .audit_trail()
        .record(
            Some(&admin.user_id),
            if active {
                "user.enable"
            } else {
                "user.disable"
            },
            user_id,
            serde_json::json!({}),
        )
        .await?;
    Ok(row.into())
}

/// Disable a user: their tokens and keys stop working at once, on every replica.
#[utoipa::path(post, path = "/admin/users/{user_id}/disable", tag = "admin", security(("bearer" = []), ("api_key" = [])),
    params(("user_id" = String, Path)),
    responses((status = 200, body = UserResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn disable(
    State(state): State<Arc<ApiState>>,
    Superuser(admin): Superuser,
    UserPath(user_id): UserPath,
) -> Result<Json<UserResponse>, GateError> {
    Ok(Json(set_active(&state, &admin, &user_id, false).await?))
}

/// Enable a user again.
#[utoipa::path(post, path = "/admin/users/{user_id}/enable", tag = "admin", security(("bearer" = []), ("api_key" = [])),
    params(("user_id" = String, Path)),
    responses((status = 200, body = UserResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn enable(
    State(state): State<Arc<ApiState>>,
    Superuser(admin): Superuser,
    UserPath(user_id): UserPath,
) -> Result<Json<UserResponse>, GateError> {
    Ok(Json(set_active(&state, &admin, &user_id, true).await?))
}

#[derive(Serialize, ToSchema)]
pub struct GrantResult {
    pub user_id: String,
    pub quota_type: String,
    pub granted: i64,
    /// -1 = unlimited.
    pub new_limit: i64,
    pub remaining: i64,
}

/// Grant extra units of a quota for the current period (superusers).
#[utoipa::path(post, path = "/admin/users/{user_id}/grant", tag = "admin", security(("bearer" = []), ("api_key" = [])),
    params(("user_id" = String, Path), ("quota_type" = String, Query), ("amount" = i64, Query, description = "1 to 1000000000", minimum = 1, maximum = 1000000000)),
    responses((status = 200, body = GrantResult), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn grant(
    State(state): State<Arc<ApiState>>,
    Superuser(admin): Superuser,
    UserPath(user_id): UserPath,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<GrantResult>, GateError> {
    let quota_type = query_opt(&q, "quota_type")
        .ok_or_else(|| GateError::new(StatusCode::UNPROCESSABLE_ENTITY, "quota_type is required"))?
        .to_string();
    if !state.billing.knows_quota(&quota_type) {
        return Err(GateError::not_found(format!(
            "no quota type `{quota_type}`"
        )));
    }
    let amount = query_int(&q, "amount", 0, 1, 1_000_000_000)?;
    if state.auth.users().by_id(&user_id).await?.is_none() {
        return Err(GateError::not_found("用户不存在: no such user"));
    }
    state.billing.ensure_current(&user_id).await?;
    let b = state
        .billing
        .ledger()
        .grant(&user_id, &quota_type, amount)
        .await?
        .ok_or_else(|| GateError::not_found("the user has no balance of that type"))?;
    state
        .auth
        .audit_trail()
        .record(
            Some(&admin.user_id),
            "quota.grant",
            &user_id,
            serde_json::json!({"quota_type": quota_type, "amount": amount}),
        )
        .await?;
    Ok(Json(GrantResult {
        user_id: user_id.to_string(),
        quota_type,
        granted: amount,
        new_limit: b.limit_amount,
        remaining: b.remaining(),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: String,
    pub actor_id: Option<String>,
    pub action: String,
    pub target: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    pub created_at: String,
}

/// The audit log, newest first (superusers).
#[utoipa::path(get, path = "/admin/audit-log", tag = "admin", security(("bearer" = []), ("api_key" = [])),
    params(("action" = Option<String>, Query), ("limit" = Option<i64>, Query, description = "1 to 1000, default 100", minimum = 1, maximum = 1000), ("offset" = Option<i64>, Query, minimum = 0)),
    responses((status = 200, body = Vec<AuditEntry>), (status = 403, body = ErrorBody)))]
pub async fn audit_log(
    State(state): State<Arc<ApiState>>,
    Superuser(_admin): Superuser,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<AuditEntry>>, GateError> {
    let rows = state
        .auth
        .audit_trail()
        .log(
            query_opt(&q, "action"),
            query_int(&q, "limit", 100, 1, 1000)?,
            query_int(&q, "offset", 0, 0, i64::MAX)?,
        )
        .await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| AuditEntry {
                id: r.id,
                actor_id: r.actor_id,
                action: r.action,
                target: r.target,
                detail: serde_json::from_str(&r.detail).unwrap_or_else(|_| serde_json::json!({})),
                created_at: iso(r.created_at),
            })
            .collect(),
    ))
}
