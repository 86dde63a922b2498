//! Serving `[[static]]` mounts: the built files of a frontend, from the gate's own origin.
//!
//! The files are served by tower-http's `ServeDir` (content types, `Last-Modified` and
//! conditional requests, ranges, `.br` / `.gz` files built beside the originals) behind its
//! `Compression` (brotli or gzip on the fly for what was not built compressed, when the client
//! accepts it). What a proxy in front of a single-page app adds is here: the cache rule (a file
//! whose name carries a content hash never changes, so it is `immutable` for a year; anything
//! else, `index.html` above all, is revalidated every time) and the history-mode fallback (a
//! page navigation to a path with no file gets the app's `index.html`, a missing script or
//! image still gets its 404).

use axum::body::Body;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use tower::ServiceExt;
use tower_http::compression::Compression;
use tower_http::services::{ServeDir, ServeFile};

use crate::config::mounts::Mount;
use crate::error::GateError;

/// Every mount of a configuration, longest path first.
pub struct Statics {
    mounts: Vec<Served>,
}

struct Served {
    at: String,
    files: ServeDir,
    fallback: Option<ServeFile>,
}

/// The request headers that decide what a file's answer is.
const PASSED: [header::HeaderName; 6] = [
    header::ACCEPT_ENCODING,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
    header::IF_NONE_MATCH,
    header::RANGE,
    header::IF_RANGE,
];

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const REVALIDATE: &str = "no-cache";

impl Statics {
    pub fn new(mounts: &[Mount]) -> Statics {
        Statics {
            mounts: mounts
                .iter()
                .map(|m| Served {
                    at: m.at.clone(),
                    files: ServeDir::new(&m.dir)
                        .precompressed_br()
                        .precompressed_gzip(),
                    fallback: m.fallback.as_ref().map(|f| ServeFile::new(m.dir.join(f))),
                })
                .collect(),
        }
    }

    /// The mount that serves a `GET` or `HEAD` of the canonical `path`, if any.
    pub fn mount_for(&self, method: &Method, path: &str) -> Option<usize> {
        if !matches!(*method, Method::GET | Method::HEAD) || self.mounts.is_empty() {
            return None;
        }
        // `/account` is the mount `/account/` too.
        self.mounts.iter().position(|m| {
            path.starts_with(&m.at) || (m.at.len() == path.len() + 1 && m.at.starts_with(path))
        })
    }

    /// Serves `path` from the mount `i` (from [`Statics::mount_for`]).
    pub async fn serve(
        &self,
        i: usize,
        parts: &Parts,
        path: &str,
    ) -> Result<Response<Body>, GateError> {
        let m = &self.mounts[i];
        if path.len() < m.at.len() {
            // `/account` for the mount `/account/`: the app's relative URLs need the slash, as
            // nginx answers a directory without one.
            let location = match parts.uri.query() {
                Some(q) => format!("{}?{q}", encode_path(&m.at)),
                None => encode_path(&m.at),
            };
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            return Ok(resp);
        }
        let rest = &path[m.at.len() - 1..];
        let req = request(parts, rest)?;
        let resp = Compression::new(m.files.clone())
            .oneshot(req)
            .await
            .unwrap_or_else(|never| match never {});
        if resp.status() != StatusCode::NOT_FOUND {
            let cache = if is_hashed(rest) {
                IMMUTABLE
            } else {
                REVALIDATE
            };
            return Ok(with_cache(resp.map(Body::new), cache));
        }
        match &m.fallback {
            Some(index) if is_navigation(parts) => {
                let resp = Compression::new(index.clone())
                    .oneshot(request(parts, "/")?)
                    .await
                    .unwrap_or_else(|never| match never {});
                Ok(with_cache(resp.map(Body::new), REVALIDATE))
            }
            _ => Err(GateError::not_found("no such file")),
        }
    }
}

/// The request the file services see: the path inside the mount, percent-encoded again, and
/// the headers that decide the answer.
fn request(parts: &Parts, rest: &str) -> Result<Request<Body>, GateError> {
    let mut req = Request::builder()
        .method(parts.method.clone())
        .uri(encode_path(rest))
        .body(Body::empty())
        .map_err(|_| GateError::bad_request("the request target is not a valid URI"))?;
    for name in PASSED {
        for v in parts.headers.get_all(&name) {
            req.headers_mut().append(name.clone(), v.clone());
        }
    }
    Ok(req)
}

fn with_cache(mut resp: Response<Body>, cache: &'static str) -> Response<Body> {
    if resp.status().is_success() || resp.status() == StatusCode::NOT_MODIFIED {
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    }
    resp
}

/// A page navigation (the browser asks for HTML), as opposed to a script, a style or an image
/// the page asks for: only a navigation gets the app's `index.html` for a path with no file.
fn is_navigation(parts: &Parts) -> bool {
    parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// Whether a file's name carries a content hash, as webpack (`app.3f2a1b9c.js`) and Vite
/// (`index-BcD3eF7g.js`) write them: a part of 8 or more letters and digits, at least one a
/// digit, between the first dot or dash and the extension.
fn is_hashed(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or("");
    let Some((stem, _ext)) = name.rsplit_once('.') else {
        return false;
    };
    stem.split(['.', '-']).skip(1).any(|part| {
        part.len() >= 8
            && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && part.bytes().any(|b| b.is_ascii_digit())
    })
}

/// What stays as it is in a path given to the file services: RFC 3986's unreserved
/// characters, the sub-delimiters, `:`, `@` and `/`.
const PATH: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

/// A canonical (decoded) path as a URI path again.
fn encode_path(path: &str) -> String {
    percent_encoding::utf8_percent_encode(path, PATH).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_names_are_those_bundlers_write() {
        assert!(is_hashed("/js/app.3f2a1b9c.js"));
        assert!(is_hashed("/js/chunk-vendors.1a2b3c4d.js"));
        assert!(is_hashed("/assets/index-BcD3eF7g.js"));
        assert!(is_hashed("/img/logo.82b9c7a5.png"));
        assert!(!is_hashed("/index.html"));
        assert!(!is_hashed("/favicon.ico"));
        assert!(!is_hashed("/js/chunk-vendors.js"));
        assert!(!is_hashed("/config.production.js"));
    }

    #[test]
    fn decoded_paths_are_encoded_again() {
        assert_eq!(
            encode_path("/张三/a b.png"),
            "/%E5%BC%A0%E4%B8%89/a%20b.png"
        );
        assert_eq!(encode_path("/js/app.js"), "/js/app.js");
    }
}
