//! The image cookie on the wire: set by a login or a refresh through the gate, cleared by a
//! logout. `<img>` tags cannot send `Authorization`, and `main`'s CTAI_web puts no token in
//! its image URLs: served from the gate's origin, its images authenticate with this cookie.
//!
//! It is `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page makes the
//! browser send it), scoped by `Path` to the image routes where they share a first segment,
//! `Secure` over TLS, and lives as long as an access token. The gate accepts it only on `GET`
//! routes marked `query_token`, and only when the request carries no other credential
//! (`auth::credentials`): it can change nothing.

use http::HeaderValue;
use http::header::{HeaderName, SET_COOKIE};

use super::ApiState;
use crate::auth::credentials::IMAGE_COOKIE;

/// `Set-Cookie` for the holder of `access_token`, or nothing when the cookie is off.
pub fn set(state: &ApiState, access_token: &str, tls: bool) -> Vec<(HeaderName, HeaderValue)> {
    let Some((token, max_age)) = state.auth.image_token(access_token) else {
        return Vec::new();
    };
    header(state, &token, max_age, tls)
}

/// `Set-Cookie` that removes the cookie (a logout), or nothing when the cookie is off.
pub fn clear(state: &ApiState, tls: bool) -> Vec<(HeaderName, HeaderValue)> {
    if !state.config.auth.image_cookie {
        return Vec::new();
    }
    header(state, "", 0, tls)
}

fn header(
    state: &ApiState,
    value: &str,
    max_age: u64,
    tls: bool,
) -> Vec<(HeaderName, HeaderValue)> {
    let secure = if tls || state.config.auth.image_cookie_secure {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{IMAGE_COOKIE}={value}; Path={}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}",
        state.config.image_cookie_path()
    );
    HeaderValue::from_str(&cookie)
        .map(|v| vec![(SET_COOKIE, v)])
        .unwrap_or_default()
}
