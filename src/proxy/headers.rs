//! Header operations on the way in and out: hop-by-hop removal (RFC 9110 §7.6.1), credential
//! and identity stripping, and the `X-Forwarded-*` set.
//!
//! Pomerium's warning applies: an upstream that trusts identity headers must never receive a
//! client's copy of them. Everything the backend could take for an identity or a routing hint
//! is removed here, before the gate adds its own.

use crate::auth::credentials::{IMAGE_COOKIE, X_API_KEY};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use smallvec::SmallVec;
use std::net::{IpAddr, SocketAddr};

/// The address a client connection came from, and its `X-Forwarded-For` spelling, made once
/// per connection rather than formatted for every request.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    forwarded_for: HeaderValue,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Peer {
        let forwarded_for = HeaderValue::from_str(&addr.ip().to_string())
            .expect("an IP address is a valid header value");
        Peer {
            addr,
            forwarded_for,
        }
    }
}

/// Names looked up on every request, made once rather than parsed from text each time.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers that describe one connection, not the message.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Removes hop-by-hop headers, including every header the `Connection` header names.
/// With `keep_upgrade`, `Upgrade` survives and `Connection: upgrade` is set (the only
/// connection-level request a proxy must pass on).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names (cheap comparisons of standard names) says which of them are
    // there; only those are removed. Most requests carry none, most replies only
    // `Connection`: each hashed removal skipped is one less per proxied message.
    let present = present_of(headers, &HOP_BY_HOP);
    if present == 0 {
        return;
    }
    let upgrade = if keep_upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    // The names `Connection` lists are removed by their spelling (no owned names made); its
    // values are taken out first, so the map can be changed while they are read.
    let mut connection = headers.get_all(header::CONNECTION).iter();
    match (connection.next(), connection.next()) {
        (None, _) => {}
        (Some(_), None) => {
            if let Some(value) = headers.remove(header::CONNECTION) {
                remove_listed(headers, &value);
            }
        }
        (Some(_), Some(_)) => {
            let values: Vec<HeaderValue> = headers
                .get_all(header::CONNECTION)
                .iter()
                .cloned()
                .collect();
            for value in &values {
                remove_listed(headers, value);
            }
        }
    }
    remove_present(headers, &HOP_BY_HOP, present);
    if let Some(up) = upgrade {
        headers.insert(header::UPGRADE, up);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Which of `names` (at most 32) are in `headers`, as bits by position: one pass over the
/// map's names, which for the few headers of most messages is cheaper than a hashed lookup
/// of each name.
fn present_of(headers: &HeaderMap, names: &[HeaderName]) -> u32 {
    let mut present = 0u32;
    for name in headers.keys() {
        if let Some(i) = names.iter().position(|n| n == name) {
            present |= 1 << i;
        }
    }
    present
}

/// Removes those of `names` that `present` (from [`present_of`]) marks.
fn remove_present(headers: &mut HeaderMap, names: &[HeaderName], present: u32) {
    for (i, name) in names.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// Removes every header named in `names` (at most 32), looking each up only if it is there.
pub fn remove_all(headers: &mut HeaderMap, names: &[HeaderName]) {
    let present = present_of(headers, names);
    if present != 0 {
        remove_present(headers, names, present);
    }
}

/// Removes the headers a `Connection` value names (`close` and `keep-alive` name no header;
/// removing them is harmless).
fn remove_listed(headers: &mut HeaderMap, connection: &HeaderValue) {
    let Ok(list) = connection.to_str() else {
        return;
    };
    for name in list.split(',') {
        let name = name.trim();
        // `keep-alive` is what most say: a `Keep-Alive` header goes with the other
        // hop-by-hop ones.
        if !name.is_empty() && !name.eq_ignore_ascii_case("keep-alive") {
            headers.remove(name);
        }
    }
}

/// True when the client asks for a protocol upgrade (WebSocket and the like).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_says(headers, "upgrade")
}

/// Whether a `Connection` header lists `token` (case-insensitive, any of its values).
pub fn connection_says(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes what a client could use to pose as someone, or to mislead the backend about where
/// the request came from. The gate sets its own values afterwards.
/// Takes the gate's image cookie out of the `Cookie` headers (a credential, like
/// `Authorization`), leaving the client's other cookies as they were.
fn strip_image_cookie(headers: &mut HeaderMap) {
    let prefix = format!("{IMAGE_COOKIE}=");
    let kept: Vec<HeaderValue> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| {
            let Ok(text) = v.to_str() else {
                return Some(v.clone());
            };
            if !text.contains(&prefix) {
                return Some(v.clone());
            }
            let rest: Vec<&str> = text
                .split(';')
                .map(str::trim)
                .filter(|pair| !pair.is_empty() && !pair.starts_with(&prefix))
                .collect();
            (!rest.is_empty()).then(|| HeaderValue::from_str(&rest.join("; ")).ok())?
        })
        .collect();
    headers.remove(header::COOKIE);
    for v in kept {
        headers.append(header::COOKIE, v);
    }
}

pub fn strip_client_identity(headers: &mut HeaderMap) {
    // The credentials are there on most requests: removed by name, so that the scan below
    // usually finds nothing and collects nothing.
    headers.remove(header::AUTHORIZATION);
    headers.remove(&X_API_KEY);
    if headers.contains_key(header::COOKIE) {
        strip_image_cookie(headers);
    }
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let n = name.as_str();
            n.starts_with("x-user-")
                || n.starts_with("x-forwarded-")
                || n.starts_with("x-auth-")
                || n.starts_with("x-gate-")
                || n.starts_with("x-quota-")
                || matches!(
                    n,
                    "forwarded"
                        | "x-real-ip"
                        | "x-request-id"
                        | "x-original-url"
                        | "x-rewrite-url"
                        | "x-original-uri"
                        | "x-admin-token"
                )
        })
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// The client's address: the peer's, or, when the peer is a trusted proxy, the nearest address
/// in its `X-Forwarded-For` that is not itself a trusted proxy (the rightmost untrusted one:
/// entries further left were written by the client and prove nothing). Throttles key on it.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let mut hops = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    hops.reverse();
    for hop in hops {
        match hop.parse::<IpAddr>() {
            Ok(ip) if trusted.contains(&ip) => continue,
            Ok(ip) => return ip,
            Err(_) => break,
        }
    }
    peer
}

/// Headers the gate adds to a request on its way to the backend, written after the received
/// ones (stripped of everything these replace) without going into the map: each insert into a
/// `HeaderMap` hashed its name, and the received map grew to take them (two allocations). The
/// gate adds at most eight, kept on the stack.
#[derive(Default)]
pub struct Added {
    items: SmallVec<[(HeaderName, HeaderValue); 8]>,
}

impl Added {
    /// Adds a header; names are the gate's own, each at most once (a debug build checks).
    pub fn push(&mut self, name: HeaderName, value: HeaderValue) {
        debug_assert!(self.iter().all(|(n, _)| *n != name), "{name} added twice");
        self.items.push((name, value));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.items.iter().map(|(n, v)| (n, v))
    }
}

/// Adds `X-Forwarded-For/Proto/Host`. A client's own `X-Forwarded-For` is kept (and appended to)
/// only when the peer is a configured trusted proxy; `client_xff` is that header as received
/// (the received map has none left: [`strip_client_identity`] took them out).
pub fn set_forwarded(
    headers: &mut Added,
    peer: &Peer,
    client_xff: Option<&HeaderValue>,
    trusted: bool,
    host: Option<&HeaderValue>,
    proto: &'static str,
) {
    let xff = match (trusted, client_xff.and_then(|v| v.to_str().ok())) {
        (true, Some(prev)) if !prev.trim().is_empty() => {
            HeaderValue::from_str(&format!("{}, {}", prev.trim(), peer.addr.ip())).ok()
        }
        _ => Some(peer.forwarded_for.clone()),
    };
    if let Some(v) = xff {
        headers.push(X_FORWARDED_FOR.clone(), v);
    }
    headers.push(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    if let Some(h) = host {
        headers.push(X_FORWARDED_HOST.clone(), h.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_rightmost_address_no_trusted_proxy_wrote() {
        let lb: IpAddr = "10.0.0.254".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 1.2.3.4, 10.0.0.254"),
        );
        assert_eq!(
            client_ip(lb, &h, &[lb]),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        // From an untrusted peer the header proves nothing.
        let stranger: IpAddr = "9.9.9.9".parse().unwrap();
        assert_eq!(client_ip(stranger, &h, &[lb]), stranger);
        // Garbage stops the walk at the peer.
        h.insert("x-forwarded-for", HeaderValue::from_static("nonsense"));
        assert_eq!(client_ip(lb, &h, &[lb]), lb);
    }

    #[test]
    fn removes_headers_named_by_connection() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("x-secret").is_none() && h.get("keep-alive").is_none());
        assert!(h.get("connection").is_none() && h.get("te").is_none());
        assert_eq!(h.get("x-kept").unwrap(), "1");
    }

    #[test]
    fn every_connection_header_counts_and_odd_names_are_ignored() {
        let mut h = HeaderMap::new();
        h.append("connection", HeaderValue::from_static("x-one"));
        h.append(
            "connection",
            HeaderValue::from_static(" , x-two ,bad name,"),
        );
        for n in ["x-one", "x-two", "x-three"] {
            h.insert(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_static("1"),
            );
        }
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("x-one").is_none() && h.get("x-two").is_none());
        assert!(h.get("connection").is_none());
        assert_eq!(h.get("x-three").unwrap(), "1");
    }

    #[test]
    fn keeps_upgrade_only_when_asked() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        assert!(wants_upgrade(&h));
        let mut kept = h.clone();
        strip_hop_by_hop(&mut kept, true);
        assert_eq!(kept.get("upgrade").unwrap(), "websocket");
        assert_eq!(kept.get("connection").unwrap(), "upgrade");
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("upgrade").is_none());
    }

    #[test]
    fn strips_identity_and_credentials() {
        let mut h = HeaderMap::new();
        for n in [
            "x-user-id",
            "X-User-Email",
            "authorization",
            "x-api-key",
            "x-forwarded-for",
            "forwarded",
            "x-request-id",
        ] {
            h.insert(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_static("evil"),
            );
        }
        h.insert("accept", HeaderValue::from_static("*/*"));
        strip_client_identity(&mut h);
        assert_eq!(h.len(), 1);
    }
}
