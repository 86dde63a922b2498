//! `/auth/*`: registration, email verification, login, refresh, logout, with the paths and JSON
//! shapes of the original auth service (port 9001), so the frontends only change their base URL.

use axum::extract::{Request, State};
use axum::response::AppendHeaders;
use axum::routing::post;
use axum::{Extension, Json, Router};
use http::header::HeaderName;
use http::{HeaderValue, StatusCode};
use serde::Deserialize;
use std::sync::Arc;
use utoipa::ToSchema;

use super::extract::{ClientAddr, JsonBody, Tls, parse_json, read_body};
use super::image_cookie;
use super::schemas::{Message, UserResponse};
use super::{ApiState, both};
use crate::auth::credentials::bearer;
use crate::auth::{NewAccount, TokenPair};
use crate::error::{ErrorBody, GateError};

pub fn routes() -> Router<Arc<ApiState>> {
    let mut r = Router::new();
    r = both(r, "/auth/register", post(register));
    r = both(r, "/auth/login", post(login));
    r = both(r, "/auth/refresh", post(refresh));
    r = both(r, "/auth/logout", post(logout));
    r = both(
        r,
        "/auth/send-verification-code",
        post(send_verification_code),
    );
    r = both(r, "/auth/verify-email", post(verify_email));
    r = both(r, "/auth/forgot-password", post(forgot_password));
    r = both(r, "/auth/reset-password", post(reset_password));
    r
}

#[derive(Deserialize, ToSchema)]
pub struct RegisterRequest {
    /// An email address (stored lower-cased).
    #[schema(
        pattern = "^\\s*[^\\s@\\x00-\\x1f\\x7f-\\x9f]+@[^\\s@.\\x00-\\x1f\\x7f-\\x9f]+(\\.[^\\s@.\\x00-\\x1f\\x7f-\\x9f]+)+\\s*$",
        max_length = 254
    )]
    pub email: String,
    /// 3 to 50 characters: no spaces, control characters or `@`; unique whatever its case.
    #[schema(
        pattern = "^[^\\s@\\x00-\\x1f\\x7f-\\x9f]{3,50}$",
        min_length = 3,
        max_length = 50
    )]
    pub username: String,
    /// 8 to 100 characters.
    #[schema(min_length = 8, max_length = 100)]
    pub password: String,
    /// Required only when `auth.require_email_verification` is on (and the address was not
    /// verified with `/auth/verify-email` already); otherwise ignored.
    #[serde(default)]
    pub verification_code: Option<String>,
}

/// Create an account; it starts on the default (free) plan.
#[utoipa::path(post, path = "/auth/register", tag = "auth", request_body = RegisterRequest,
    responses(
        (status = 201, description = "The new user", body = UserResponse),
        (status = 409, description = "Email or username taken", body = ErrorBody),
        (status = 422, description = "Invalid field or verification code", body = ErrorBody)))]
pub async fn register(
    State(state): State<Arc<ApiState>>,
    JsonBody(req): JsonBody<RegisterRequest>,
) -> Result<(StatusCode, Json<UserResponse>), GateError> {
    let user = state
        .auth
        .register(NewAccount {
            email: req.email,
            username: req.username,
            password: req.password,
            verification_code: req.verification_code,
        })
        .await?;
    // Every new account starts on the default (free) plan, with its quotas.
    state.billing.ensure_current(&user.id).await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

#[derive(Deserialize, ToSchema)]
pub struct LoginRequest {
    pub username_or_email: String,
    pub password: String,
}

/// Sign in; failures are throttled per account and per address (429 with `Retry-After`).
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "A token pair", body = TokenPair, headers(
            ("Set-Cookie" = String, description = "The image cookie (`idoctor_image`, HttpOnly, SameSite=Strict), accepted only on image GETs; absent when `auth.image_cookie` is off"))),
        (status = 401, description = "Wrong username/email or password", body = ErrorBody),
        (status = 403, description = "Account disabled or email not verified", body = ErrorBody),
        (status = 429, description = "Too many failed attempts", body = ErrorBody)))]
pub async fn login(
    State(state): State<Arc<ApiState>>,
    Extension(ClientAddr(peer)): Extension<ClientAddr>,
    tls: Option<Extension<Tls>>,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<
    (
        AppendHeaders<Vec<(HeaderName, HeaderValue)>>,
        Json<TokenPair>,
    ),
    GateError,
> {
    let pair = state
        .auth
        .login(&req.username_or_email, &req.password, Some(peer.ip()))
        .await?;
    let cookie = image_cookie::set(&state, &pair.access_token, over_tls(tls));
    Ok((AppendHeaders(cookie), Json(pair)))
}

fn over_tls(tls: Option<Extension<Tls>>) -> bool {
    tls.is_some_and(|Extension(Tls(t))| t)
}

#[derive(Deserialize, Default)]
struct RefreshBody {
    #[serde(default)]
    refresh_token: Option<String>,
}

/// The refresh token of a request in any of the three styles the real clients use: the query
/// (`?refresh_token=`), a JSON body (`{"refresh_token": ...}`), or `Authorization: Bearer`.
/// A token in the query or body wins: CTAI_web also sends its expired access token as Bearer.
fn refresh_token_of(
    req_parts: &http::request::Parts,
    body: &[u8],
) -> Result<Option<String>, GateError> {
    let from_query = req_parts.uri.query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "refresh_token")
            .map(|(_, v)| percent_decode(v))
    });
    if let Some(t) = from_query.filter(|t| !t.is_empty()) {
        return Ok(Some(t));
    }
    if !body.iter().all(u8::is_ascii_whitespace) {
        let b: RefreshBody = parse_json(body)?;
        if let Some(t) = b.refresh_token.filter(|t| !t.is_empty()) {
            return Ok(Some(t));
        }
    }
    Ok(req_parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .map(str::to_string))
}

fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => match v.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16)) {
                Some(Ok(x)) => {
                    out.push(x);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Exchange a refresh token for a new pair (rotation; a reused token revokes its session).
#[utoipa::path(post, path = "/auth/refresh", tag = "auth",
    params(("refresh_token" = Option<String>, Query, description = "The refresh token (or send it as JSON `{refresh_token}` or as Bearer)", min_length = 1)),
    responses(
        (status = 200, description = "A new token pair", body = TokenPair, headers(
            ("Set-Cookie" = String, description = "A new image cookie (`idoctor_image`), as at login"))),
        (status = 401, description = "No refresh token, or an invalid, expired, revoked or reused one", body = ErrorBody)))]
pub async fn refresh(
    State(state): State<Arc<ApiState>>,
    req: Request,
) -> Result<
    (
        AppendHeaders<Vec<(HeaderName, HeaderValue)>>,
        Json<TokenPair>,
    ),
    GateError,
> {
    let tls = req.extensions().get::<Tls>().is_some_and(|t| t.0);
    let (parts, body) = read_body(req).await?;
    // No token at all is a failed authentication, like a bad one (401), not a malformed body.
    let token = refresh_token_of(&parts, &body)?.ok_or_else(|| {
        GateError::unauthorized("send the refresh token (query, JSON body or Bearer)")
    })?;
    let pair = state.auth.refresh(&token).await?;
    let cookie = image_cookie::set(&state, &pair.access_token, tls);
    Ok((AppendHeaders(cookie), Json(pair)))
}

/// Sign out: revokes the refresh token's session; with only an access token, every session.
#[utoipa::path(post, path = "/auth/logout", tag = "auth",
    params(("refresh_token" = Option<String>, Query, description = "The refresh token of the session to end")),
    responses(
        (status = 200, description = "Signed out", body = Message, headers(
            ("Set-Cookie" = String, description = "Clears the image cookie"))),
        (status = 401, description = "No valid token", body = ErrorBody)))]
pub async fn logout(
    State(state): State<Arc<ApiState>>,
    req: Request,
) -> Result<(AppendHeaders<Vec<(HeaderName, HeaderValue)>>, Json<Message>), GateError> {
    let tls = req.extensions().get::<Tls>().is_some_and(|t| t.0);
    let (parts, body) = read_body(req).await?;
    let token = refresh_token_of(&parts, &body)?;
    let is_refresh = token
        .as_deref()
        .is_some_and(|t| state.auth.is_refresh_token(t));
    if is_refresh {
        state.auth.logout(token.as_deref(), None).await?;
    } else {
        let principal = state.auth.authenticate(&parts, false).await?;
        state.auth.logout(None, principal.as_ref()).await?;
    }
    Ok((
        AppendHeaders(image_cookie::clear(&state, tls)),
        Json(Message::ok("登出成功")),
    ))
}

#[derive(Deserialize, ToSchema)]
pub struct EmailRequest {
    #[schema(
        pattern = "^\\s*[^\\s@\\x00-\\x1f\\x7f-\\x9f]+@[^\\s@.\\x00-\\x1f\\x7f-\\x9f]+(\\.[^\\s@.\\x00-\\x1f\\x7f-\\x9f]+)+\\s*$",
        max_length = 254
    )]
    pub email: String,
}

/// Send a 6-digit code to an address (once a minute; valid 10 minutes by default).
#[utoipa::path(post, path = "/auth/send-verification-code", tag = "auth", request_body = EmailRequest,
    responses(
        (status = 200, description = "Sent", body = Message),
        (status = 409, description = "The address is already registered", body = ErrorBody),
        (status = 422, description = "Not an email address", body = ErrorBody),
        (status = 429, description = "A code was sent less than a minute ago", body = ErrorBody)))]
pub async fn send_verification_code(
    State(state): State<Arc<ApiState>>,
    JsonBody(req): JsonBody<EmailRequest>,
) -> Result<Json<Message>, GateError> {
    let email = crate::auth::normalise_email(&req.email)?;
    state.auth.send_code(&email).await?;
    let minutes = state.auth.code_minutes();
    Ok(Json(Message::ok(format!(
        "验证码已发送至 {email}，有效期 {minutes} 分钟"
    ))))
}

#[derive(Deserialize, ToSchema)]
pub struct VerifyRequest {
    #[schema(
        pattern = "^\\s*[^\\s@\\x00-\\x1f\\x7f-\\x9f]+@[^\\s@.\\x00-\\x1f\\x7f-\\x9f]+(\\.[^\\s@.\\x00-\\x1f\\x7f-\\x9f]+)+\\s*$",
        max_length = 254
    )]
    pub email: String,
    /// The 6-digit code.
    #[schema(pattern = "^[0-9]{6}$", min_length = 6, max_length = 6)]
    pub code: String,
}

/// An emailed code as sent: six digits (surrounding spaces, as pasted, are dropped).
fn six_digits(code: &str) -> Result<&str, GateError> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(GateError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the code must be 6 digits",
        ));
    }
    Ok(code)
}

/// Check a code; a verified address can then register.
#[utoipa::path(post, path = "/auth/verify-email", tag = "auth", request_body = VerifyRequest,
    responses(
        (status = 200, description = "Verified", body = Message),
        (status = 403, description = "The code is wrong or has expired (or none was sent)", body = ErrorBody),
        (status = 429, description = "Too many wrong codes", body = ErrorBody)))]
pub async fn verify_email(
    State(state): State<Arc<ApiState>>,
    JsonBody(req): JsonBody<VerifyRequest>,
) -> Result<Json<Message>, GateError> {
    let email = crate::auth::normalise_email(&req.email)?;
    let code = six_digits(&req.code)?;
    state.auth.verify_code(&email, code).await?;
    Ok(Json(Message::ok("邮箱验证成功")))
}

/// Ask for a password reset code. The answer is the same whether or not an account has the
/// address (nothing tells who is registered); when one has, a 6-digit code is mailed (at most
/// once a minute, valid 10 minutes by default, a few wrong attempts allowed).
#[utoipa::path(post, path = "/auth/forgot-password", tag = "auth", request_body = EmailRequest,
    responses(
        (status = 202, description = "If an account has this address, a code is on its way", body = Message),
        (status = 422, description = "Not an email address", body = ErrorBody),
        (status = 503, description = "This gate cannot send email (production without `[smtp]`)", body = ErrorBody)))]
pub async fn forgot_password(
    State(state): State<Arc<ApiState>>,
    JsonBody(req): JsonBody<EmailRequest>,
) -> Result<(StatusCode, Json<Message>), GateError> {
    let email = crate::auth::normalise_email(&req.email)?;
    state.auth.forgot_password(&email).await?;
    let minutes = state.auth.code_minutes();
    Ok((
        StatusCode::ACCEPTED,
        Json(Message::ok(format!(
            "如果该邮箱已注册，重置验证码已发送，有效期 {minutes} 分钟: if an account has this address, a reset code was sent to it"
        ))),
    ))
}

#[derive(Deserialize, ToSchema)]
pub struct ResetPasswordRequest {
    #[schema(
        pattern = "^\\s*[^\\s@\\x00-\\x1f\\x7f-\\x9f]+@[^\\s@.\\x00-\\x1f\\x7f-\\x9f]+(\\.[^\\s@.\\x00-\\x1f\\x7f-\\x9f]+)+\\s*$",
        max_length = 254
    )]
    pub email: String,
    /// The 6-digit code from the reset mail.
    #[schema(pattern = "^[0-9]{6}$", min_length = 6, max_length = 6)]
    pub code: String,
    /// 8 to 100 characters.
    #[schema(min_length = 8, max_length = 100)]
    pub new_password: String,
}

/// Set a new password with the emailed code. Every session of the account is signed out (its
/// refresh tokens revoked, on every replica); access tokens already issued run to their expiry.
#[utoipa::path(post, path = "/auth/reset-password", tag = "auth", request_body = ResetPasswordRequest,
    responses(
        (status = 200, description = "The password is replaced; sign in with it", body = Message),
        (status = 403, description = "The code is wrong, has expired or has no guesses left (or none was sent): one answer for all, so that it tells nobody who is registered", body = ErrorBody),
        (status = 422, description = "Not an email address, a code that is not 6 digits, or a password outside 8 to 100 characters", body = ErrorBody)))]
pub async fn reset_password(
    State(state): State<Arc<ApiState>>,
    JsonBody(req): JsonBody<ResetPasswordRequest>,
) -> Result<Json<Message>, GateError> {
    let email = crate::auth::normalise_email(&req.email)?;
    let code = six_digits(&req.code)?;
    let user = state
        .auth
        .reset_password(&email, code, &req.new_password)
        .await?;
    tracing::info!(user_id = %user, "password reset with an emailed code: every session signed out");
    Ok(Json(Message::ok("密码已重置，请使用新密码登录")))
}
