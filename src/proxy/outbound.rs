//! The head of the request the backend is sent: its target (the canonical path, the query
//! without a `?token=` credential) and its headers (hop-by-hop and client identity removed,
//! `X-Forwarded-*`, `Host`, `X-Request-Id` and the caller's `X-User-*` set by the gate).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Uri, request::Parts};

use crate::auth::Identity;
use crate::error::GateError;
use crate::proxy::headers::{self, Added, Peer};
use crate::proxy::upstream::{OwnTarget, Upstream};

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
static X_USER_EMAIL: HeaderName = HeaderName::from_static("x-user-email");

/// What the gate knows of a request that the backend is told.
pub struct Forwarding<'a> {
    pub peer: &'a Peer,
    /// The request came over TLS.
    pub secure: bool,
    /// The peer is a configured trusted proxy: its `X-Forwarded-For` is kept and appended to.
    pub trusted: bool,
    /// The backend's own authority, sent as `Host`.
    pub upstream_host: &'a HeaderValue,
    pub request_id: &'a HeaderValue,
    /// The caller, on authenticated routes.
    pub identity: Option<&'a Identity>,
}

/// The backend's target for a request whose canonical path is `path`. Most requests go on as
/// they came (the canonical path is the one received and there is no token to take out of the
/// query): the received target is shared, not copied. A path of the gate's own making
/// (`rewritten`, the caller's names in its namespace) is moved in, not copied, where there is
/// no query to add, and then not parsed again either.
pub fn target(
    upstream: &Upstream,
    received: &Uri,
    path: &str,
    rewritten: Option<String>,
    strip_token: bool,
) -> Result<Target, GateError> {
    match (received.path_and_query(), rewritten) {
        (Some(pq), None) if pq.path() == path && !(strip_token && pq.query().is_some()) => {
            Ok(Target::Uri(Uri::from(pq.clone())))
        }
        (pq, Some(own)) if pq.and_then(|pq| pq.query()).is_none() => {
            OwnTarget::new(own).map(Target::Own)
        }
        (_, own) => upstream
            .uri_for(path_and_query(
                own.as_deref().unwrap_or(path),
                received.query(),
                strip_token,
            ))
            .map(Target::Uri),
    }
}

/// Where the backend's target goes: a `Uri`, or a path of the gate's own making carried beside
/// the request ([`crate::proxy::upstream::OwnTarget`]).
pub enum Target {
    Uri(Uri),
    Own(OwnTarget),
}

/// Takes the received headers out of `parts` and makes them the backend's: hop-by-hop headers
/// and anything a client could pose as someone with are removed from the map, and the gate's
/// own set is returned beside it, written after the map's on the wire ([`Added`]).
pub fn headers(parts: &mut Parts, upgrade: bool, f: &Forwarding<'_>) -> (HeaderMap, Added) {
    let mut out = std::mem::take(&mut parts.headers);
    // The client's `Host` goes (the backend is sent its own), and is `X-Forwarded-Host`.
    let host = out.remove(header::HOST).or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let client_xff = out.get(&headers::X_FORWARDED_FOR).cloned();
    headers::strip_hop_by_hop(&mut out, upgrade);
    headers::strip_client_identity(&mut out);
    let mut added = Added::default();
    added.push(header::HOST, f.upstream_host.clone());
    headers::set_forwarded(
        &mut added,
        f.peer,
        client_xff.as_ref(),
        f.trusted,
        host.as_ref(),
        if f.secure { "https" } else { "http" },
    );
    added.push(X_REQUEST_ID.clone(), f.request_id.clone());
    if let Some(identity) = f.identity {
        if let Some(v) = &identity.user_id {
            added.push(X_USER_ID.clone(), v.clone());
        }
        if let Some(v) = &identity.email {
            added.push(X_USER_EMAIL.clone(), v.clone());
        }
    }
    (out, added)
}

/// The path and query sent to the backend: the canonical path, and the query without the
/// `token` parameter on routes that accept it (it is a credential, not the backend's business).
fn path_and_query(path: &str, query: Option<&str>, strip_token: bool) -> String {
    let query = match query {
        Some(q) if strip_token => {
            let kept: Vec<&str> = q
                .split('&')
                // Each pair's key as the backend decodes it (`%XX`, `+`), by the crate that
                // already reads forms.
                .filter(|pair| {
                    form_urlencoded::parse(pair.as_bytes())
                        .next()
                        .is_none_or(|(key, _)| key != "token")
                })
                .collect();
            kept.join("&")
        }
        Some(q) => q.to_string(),
        None => String::new(),
    };
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_token_in_any_spelling() {
        assert_eq!(
            path_and_query("/i", Some("t=1&token=abc&t=2"), true),
            "/i?t=1&t=2"
        );
        assert_eq!(path_and_query("/i", Some("tok%65n=abc"), true), "/i");
        assert_eq!(
            path_and_query("/i", Some("token=abc"), false),
            "/i?token=abc"
        );
        assert_eq!(path_and_query("/i", None, true), "/i");
    }
}
