//! `/api-keys/*`: a user's own API keys. The full key is shown once, at creation.

use axum::extract::{Path, State};
use axum::routing::{delete, get, patch};
use axum::{Json, Router};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

use super::extract::{CurrentUser, JsonBody};
use super::schemas::ApiKeyResponse;
use super::{ApiState, both};
use crate::error::{ErrorBody, GateError};

pub fn routes() -> Router<Arc<ApiState>> {
    let mut r = Router::new();
    r = both(r, "/api-keys", get(list).post(create));
    r = both(r, "/api-keys/{key_id}", delete(remove));
    r = both(r, "/api-keys/{key_id}/deactivate", patch(deactivate));
    r
}

#[derive(Deserialize, ToSchema)]
pub struct CreateKeyRequest {
    /// 1 to 100 characters, not all spaces.
    #[schema(pattern = "\\S", min_length = 1, max_length = 100)]
    pub name: String,
    /// RFC 3339, or a zone-less date-time read as UTC (`2026-12-31T23:59`), as an
    /// `<input type=datetime-local>` sends it; empty for none.
    #[schema(
        pattern = "^$|^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-](0[0-9]|1[0-4]):[0-5][0-9])?)?$"
    )]
    #[serde(default)]
    pub expires_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub info: ApiKeyResponse,
    /// The whole key (`sk_live_...`): shown this once, never again.
    pub key: String,
}

/// Create a key.
#[utoipa::path(post, path = "/api-keys/", tag = "api-keys", request_body = CreateKeyRequest,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 201, body = CreatedKey),
        (status = 409, description = "expires_at is not in the future", body = ErrorBody),
        (status = 422, description = "Invalid name or expiry", body = ErrorBody)))]
pub async fn create(
    State(state): State<Arc<ApiState>>,
    CurrentUser(p): CurrentUser,
    JsonBody(req): JsonBody<CreateKeyRequest>,
) -> Result<(StatusCode, Json<CreatedKey>), GateError> {
    let expires_at = match req.expires_at.as_deref().filter(|s| !s.trim().is_empty()) {
        None => None,
        Some(text) => Some(super::time::parse(text).ok_or_else(|| {
            GateError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("expires_at `{text}` is not a date-time"),
            )
        })?),
    };
    let created = state.auth.create_api_key(&p, &req.name, expires_at).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            info: created.row.into(),
            key: created.key,
        }),
    ))
}

/// The signed-in user's keys, newest first.
#[utoipa::path(get, path = "/api-keys/", tag = "api-keys", security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, body = Vec<ApiKeyResponse>), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<Arc<ApiState>>,
    CurrentUser(p): CurrentUser,
) -> Result<Json<Vec<ApiKeyResponse>>, GateError> {
    let rows = state.auth.keys().of_user(&p.user_id).await?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

/// Delete one of one's keys; it stops working at once.
#[utoipa::path(delete, path = "/api-keys/{key_id}", tag = "api-keys", security(("bearer" = []), ("api_key" = [])),
    params(("key_id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(state): State<Arc<ApiState>>,
    CurrentUser(p): CurrentUser,
    Path(key_id): Path<String>,
) -> Result<StatusCode, GateError> {
    state.auth.delete_api_key(&p, &key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deactivate one of one's keys; it stops working at once.
#[utoipa::path(patch, path = "/api-keys/{key_id}/deactivate", tag = "api-keys", security(("bearer" = []), ("api_key" = [])),
    params(("key_id" = String, Path)),
    responses((status = 200, body = ApiKeyResponse), (status = 404, body = ErrorBody)))]
pub async fn deactivate(
    State(state): State<Arc<ApiState>>,
    CurrentUser(p): CurrentUser,
    Path(key_id): Path<String>,
) -> Result<Json<ApiKeyResponse>, GateError> {
    Ok(Json(
        state.auth.deactivate_api_key(&p, &key_id).await?.into(),
    ))
}
