//! `/portal/`: the self-service portal, served from the binary. Plain HTML, CSS and JavaScript
//! modules (this folder), no build step and nothing from a CDN, so `cargo run --release` and CI
//! need neither Node nor the network. The page calls the gate's own API like any client; this
//! module only hands out its files, with a content security policy that keeps it to this origin.

use axum::Router;
use axum::extract::Path;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use std::sync::Arc;

use super::ApiState;
use crate::error::{ErrorBody, GateError};

/// The portal's files: name, content type, bytes.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("index.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("style.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("api.js"),
    ),
    (
        "i18n.js",
        "text/javascript; charset=utf-8",
        include_str!("i18n.js"),
    ),
    (
        "chart.js",
        "text/javascript; charset=utf-8",
        include_str!("chart.js"),
    ),
];

/// Scripts, styles, fetches and images from this origin only (the QR codes are inline SVG the
/// gate drew), no framing, no inline script.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/portal", get(|| async { Redirect::permanent("/portal/") }))
        .route("/portal/", get(index))
        .route("/portal/{file}", get(file))
}

/// `/` leads to the portal when neither a route nor a mount of `proxy.toml` claims it.
#[utoipa::path(get, path = "/", tag = "portal",
    responses((status = 303, description = "To `/portal/` (only when `proxy.toml` routes nothing at `/`)",
        headers(("Location" = String, description = "/portal/")))))]
pub async fn root() -> Redirect {
    Redirect::to("/portal/")
}

/// A strong validator for a file: its length and an FNV-1a hash of its bytes, fixed per build.
fn etag(body: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in body.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{:x}-{h:016x}\"", body.len())
}

fn serve(name: &str, headers: &HeaderMap) -> Result<Response, GateError> {
    let (_, kind, body) = FILES
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| GateError::not_found(format!("the portal has no file `{name}`")))?;
    let tag = etag(body);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, *kind)], *body).into_response()
    };
    let h = resp.headers_mut();
    // Revalidated on every load: a new gate version's files are used at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&tag).expect("hex and quotes"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(resp)
}

/// The portal page: sign in or up, plan and quota, usage, API keys, plans and payment,
/// payment history, and for superusers users, quotas and the audit log. Chinese by default,
/// English on a button.
#[utoipa::path(get, path = "/portal/", tag = "portal",
    responses(
        (status = 200, description = "The portal page", content_type = "text/html"),
        (status = 304, description = "Not modified since the `ETag` sent in `If-None-Match`")))]
pub async fn index(headers: HeaderMap) -> Result<Response, GateError> {
    serve("index.html", &headers)
}

/// One of the portal's files (`app.js`, `api.js`, `i18n.js`, `chart.js`, `style.css`).
#[utoipa::path(get, path = "/portal/{file}", tag = "portal",
    params(("file" = String, Path, description = "A file name of the portal", max_length = 64)),
    responses(
        (status = 200, description = "The file", content_type = "text/javascript"),
        (status = 304, description = "Not modified since the `ETag` sent in `If-None-Match`"),
        (status = 404, description = "The portal has no such file", body = ErrorBody)))]
pub async fn file(Path(name): Path<String>, headers: HeaderMap) -> Result<Response, GateError> {
    serve(&name, &headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_loads_is_served() {
        let page = include_str!("index.html");
        let scripts: Vec<&str> = FILES.iter().map(|(n, _, _)| *n).collect();
        for (_, _, body) in FILES {
            for line in body.lines() {
                if let Some(rest) = line.split("from \"./").nth(1) {
                    let imported = rest.split('"').next().unwrap();
                    assert!(
                        scripts.contains(&imported),
                        "{imported} is imported but not served"
                    );
                }
            }
        }
        for needed in ["/portal/style.css", "/portal/app.js"] {
            assert!(page.contains(needed), "{needed}");
        }
    }

    #[test]
    fn an_etag_changes_with_the_content() {
        assert_ne!(etag("a"), etag("b"));
        assert_eq!(etag("a"), etag("a"));
    }
}
