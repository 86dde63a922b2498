//! Extractors that answer in the gate's JSON error shape: a bad body is a 422 with a string
//! `detail` (the frontends show it to the person), a missing credential a 401, a non-superuser
//! a 403. axum's own rejections are plain text and would break that contract.

use axum::extract::{FromRequest, FromRequestParts, Request};
use http::StatusCode;
use http::request::Parts;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::sync::Arc;

use super::ApiState;
use crate::auth::Principal;
use crate::error::GateError;
use crate::formats::ids::UserId;

/// Largest JSON body the gate's own endpoints read.
pub const MAX_JSON: usize = 64 * 1024;

/// The client's address, set by the gate before the request reaches the router.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Whether the request came over the gate's own TLS, set by the gate like [`ClientAddr`].
#[derive(Debug, Clone, Copy)]
pub struct Tls(pub bool);

/// A JSON body, or a 413 / 422 that says what was wrong with it.
pub struct JsonBody<T>(pub T);

/// The raw body, bounded like [`JsonBody`], for endpoints where the body is optional.
pub async fn read_body(req: Request) -> Result<(Parts, bytes::Bytes), GateError> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_JSON).await.map_err(|_| {
        GateError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the JSON body is larger than {} KiB, or was cut off",
                MAX_JSON / 1024
            ),
        )
    })?;
    Ok((parts, bytes))
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, GateError> {
    serde_json::from_slice(bytes).map_err(|e| {
        GateError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid JSON body: {e}"),
        )
    })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = GateError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, GateError> {
        let (_, bytes) = read_body(req).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A signed-in, active user: a session (JWT) for anything, an API key for reading only.
///
/// Keys are for machines that call the proxied routes and read their own usage. Whatever
/// changes the gate's own state (keys, email, password, payments, subscriptions, and the
/// superuser actions) needs a session, so a leaked key cannot mint a successor, take over the
/// account's email or outlive its revocation (the OpenAPI document lists only `bearer` for
/// those operations).
pub struct CurrentUser(pub Principal);

impl FromRequestParts<Arc<ApiState>> for CurrentUser {
    type Rejection = GateError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, GateError> {
        let principal = state
            .auth
            .authenticate(parts, false)
            .await?
            .ok_or_else(|| {
                GateError::unauthorized(
                    "未提供有效的认证凭据: send Authorization: Bearer <token> or X-API-Key",
                )
            })?;
        let reads = matches!(parts.method, http::Method::GET | http::Method::HEAD);
        if !reads && key_only(parts) {
            return Err(GateError::forbidden(
                "an API key can call the proxied routes and read; this needs a signed-in session \
                 (Authorization: Bearer <access token> from /auth/login)",
            ));
        }
        Ok(CurrentUser(principal))
    }
}

/// Whether the request's credential is an API key (in `X-API-Key` or as a Bearer token).
fn key_only(parts: &Parts) -> bool {
    matches!(
        crate::auth::credentials::extract(parts, false),
        Ok(Some(crate::auth::credentials::Credential::ApiKey(_)))
    )
}

/// A signed-in superuser.
pub struct Superuser(pub Principal);

impl FromRequestParts<Arc<ApiState>> for Superuser {
    type Rejection = GateError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, GateError> {
        let CurrentUser(p) = CurrentUser::from_request_parts(parts, state).await?;
        if !p.is_superuser {
            return Err(GateError::forbidden(
                "需要管理员权限: this needs a superuser",
            ));
        }
        Ok(Superuser(p))
    }
}

/// The `{user_id}` of an admin path, parsed: an id that is not a UUID names no account, so it
/// is answered like an unknown one (404), before any handler looks it up.
pub struct UserPath(pub UserId);

impl<S: Send + Sync> FromRequestParts<S> for UserPath {
    type Rejection = GateError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, GateError> {
        let axum::extract::Path(text) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| GateError::not_found("用户不存在: no such user"))?;
        UserId::parse(&text)
            .map(UserPath)
            .ok_or_else(|| GateError::not_found("用户不存在: no such user"))
    }
}
