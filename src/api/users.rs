//! `/users/*`: the signed-in user's profile, and superuser look-ups and deletion.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use http::StatusCode;
use serde::Deserialize;
use std::sync::Arc;
use utoipa::ToSchema;

use super::extract::{CurrentUser, JsonBody, Superuser, UserPath};
use super::schemas::UserResponse;
use super::{ApiState, both};
use crate::auth::ProfileUpdate;
use crate::error::{ErrorBody, GateError};

pub fn routes() -> Router<Arc<ApiState>> {
    let mut r = Router::new();
    r = both(r, "/users/me", get(me).put(update_me));
    r = both(r, "/users/{user_id}", get(get_user).delete(delete_user));
    r
}

/// The signed-in user.
#[utoipa::path(get, path = "/users/me", tag = "users", security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, body = UserResponse),
        (status = 401, description = "No valid credential", body = ErrorBody)))]
pub async fn me(
    State(state): State<Arc<ApiState>>,
    CurrentUser(p): CurrentUser,
) -> Result<Json<UserResponse>, GateError> {
    Ok(Json(state.auth.user(&p.user_id).await?.into()))
}

#[derive(Deserialize, ToSchema, Default)]
pub struct UpdateMeRequest {
    /// A new email; needs `current_password`.
    #[schema(
        pattern = "^\\s*[^\\s@\\x00-\\x1f\\x7f-\\x9f]+@[^\\s@.\\x00-\\x1f\\x7f-\\x9f]+(\\.[^\\s@.\\x00-\\x1f\\x7f-\\x9f]+)+\\s*$",
        max_length = 254
    )]
    pub email: Option<String>,
    #[schema(
        pattern = "^[^\\s@\\x00-\\x1f\\x7f-\\x9f]{3,50}$",
        min_length = 3,
        max_length = 50
    )]
    pub username: Option<String>,
    /// The new password (8 to 100 characters); needs `current_password`.
    #[schema(min_length = 8, max_length = 100)]
    pub password: Option<String>,
    pub current_password: Option<String>,
}

/// Change the signed-in user's email, username or password. A new password needs the current
/// one and signs out every session.
#[utoipa::path(put, path = "/users/me", tag = "users", request_body = UpdateMeRequest,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, body = UserResponse),
        (status = 403, description = "Wrong current password", body = ErrorBody),
        (status = 409, description = "Email or username taken", body = ErrorBody),
        (status = 422, description = "Invalid field", body = ErrorBody)))]
pub async fn update_me(
    State(state): State<Arc<ApiState>>,
    CurrentUser(p): CurrentUser,
    JsonBody(req): JsonBody<UpdateMeRequest>,
) -> Result<Json<UserResponse>, GateError> {
    let row = state
        .auth
        .update_profile(
            &p,
            ProfileUpdate {
                email: req.email,
                username: req.username,
                password: req.password,
                current_password: req.current_password,
            },
        )
        .await?;
    Ok(Json(row.into()))
}

/// A user by id (superusers only).
#[utoipa::path(get, path = "/users/{user_id}", tag = "users", security(("bearer" = []), ("api_key" = [])),
    params(("user_id" = String, Path)),
    responses(
        (status = 200, body = UserResponse),
        (status = 403, description = "Not a superuser", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody)))]
pub async fn get_user(
    State(state): State<Arc<ApiState>>,
    Superuser(_admin): Superuser,
    UserPath(user_id): UserPath,
) -> Result<Json<UserResponse>, GateError> {
    Ok(Json(state.auth.user(&user_id).await?.into()))
}

/// Delete a user and everything they own (superusers only; not oneself).
#[utoipa::path(delete, path = "/users/{user_id}", tag = "users", security(("bearer" = []), ("api_key" = [])),
    params(("user_id" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not a superuser", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 422, description = "Cannot delete oneself", body = ErrorBody)))]
pub async fn delete_user(
    State(state): State<Arc<ApiState>>,
    Superuser(actor): Superuser,
    UserPath(user_id): UserPath,
) -> Result<StatusCode, GateError> {
    state.auth.delete_user(&actor, &user_id).await?;
    state
        .auth
        .audit_trail()
        .record(
            Some(&actor.user_id),
            "user.delete",
            &user_id,
            serde_json::json!({}),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
