//! Where credentials come from: `Authorization: Bearer <jwt>`, `Authorization: Bearer sk_live_...`,
//! `X-API-Key`, and `?token=<jwt>` on routes that allow it (image URLs in `<img>` tags).

use http::request::Parts;

use super::keys;
use crate::error::Refusal;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential<'a> {
    Jwt(&'a str),
    ApiKey(&'a str),
    /// The image cookie ([`IMAGE_COOKIE`]): only on image GETs, only without another credential.
    ImageCookie(&'a str),
}

/// The API-key header's name, made once rather than parsed from text on every request.
pub static X_API_KEY: http::HeaderName = http::HeaderName::from_static("x-api-key");

/// The cookie a login or refresh through the gate sets, for what `<img>` cannot authenticate.
pub const IMAGE_COOKIE: &str = "idoctor_image";

/// The one credential of a request, `None` when it carries none. Two different credentials in
/// one request are refused rather than guessed between.
pub fn extract(parts: &Parts, allow_query_token: bool) -> Result<Option<Credential<'_>>, Refusal> {
    let from_header = match parts.headers.get(http::header::AUTHORIZATION) {
        None => None,
        Some(v) => {
            let v = v.to_str().map_err(|_| {
                Refusal::unauthenticated("认证凭证格式错误: the Authorization header is not text")
            })?;
            let token = bearer(v).ok_or_else(|| {
                Refusal::unauthenticated("认证凭证格式错误: Authorization must be `Bearer <token>`")
            })?;
            Some(classify(token))
        }
    };
    let from_key_header = match parts.headers.get(&X_API_KEY) {
        None => None,
        Some(v) => Some(Credential::ApiKey(
            v.to_str()
                .map_err(|_| Refusal::unauthenticated("X-API-Key is not text"))?
                .trim(),
        )),
    };
    let from_query = if allow_query_token {
        query_token(parts.uri.query()).map(Credential::Jwt)
    } else {
        None
    };
    let mut found = [from_header, from_key_header, from_query]
        .into_iter()
        .flatten();
    let first = found.next();
    if first.is_none()
        && allow_query_token
        && matches!(parts.method, http::Method::GET | http::Method::HEAD)
    {
        // The image cookie counts only where nothing else was sent: the browser sends it along
        // with everything under its path, and a request that names its credential means that.
        return Ok(image_cookie(&parts.headers).map(Credential::ImageCookie));
    }
    for other in found {
        if Some(&other) != first.as_ref() {
            // An authentication failure, not a malformed request: the request is well formed,
            // its credentials do not say who it is.
            return Err(Refusal::unauthenticated(
                "the request carries more than one credential; send exactly one",
            ));
        }
    }
    Ok(first)
}

/// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive).
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The image cookie's value among the request's cookies, if it is there.
fn image_cookie(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == IMAGE_COOKIE && !value.is_empty())
        .map(|(_, value)| value)
}

fn classify(token: &str) -> Credential<'_> {
    if token.starts_with(keys::PREFIX) {
        Credential::ApiKey(token)
    } else {
        Credential::Jwt(token)
    }
}

fn query_token(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)], uri: &str) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn every_style_is_read() {
        let key = "sk_live_0123456789012345678901234567890123456789012";
        assert_eq!(
            extract(&parts(&[("authorization", "Bearer abc")], "/"), false).unwrap(),
            Some(Credential::Jwt("abc"))
        );
        assert_eq!(
            extract(
                &parts(&[("authorization", &format!("bearer {key}"))], "/"),
                false
            )
            .unwrap(),
            Some(Credential::ApiKey(key))
        );
        assert_eq!(
            extract(&parts(&[("x-api-key", key)], "/"), false).unwrap(),
            Some(Credential::ApiKey(key))
        );
        assert_eq!(
            extract(&parts(&[], "/i?t=1&token=abc"), true).unwrap(),
            Some(Credential::Jwt("abc"))
        );
        assert_eq!(extract(&parts(&[], "/i?token=abc"), false).unwrap(), None);
        assert!(extract(&parts(&[("authorization", "Basic abc")], "/"), false).is_err());
        assert!(
            extract(
                &parts(&[("authorization", "Bearer a"), ("x-api-key", key)], "/"),
                false
            )
            .is_err()
        );
    }
}
