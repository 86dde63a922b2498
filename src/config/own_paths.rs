//! The paths the gate answers itself (its accounts, plans, payments and operations API) and
//! never forwards. They live on the ground floor so that the configuration can refuse a
//! `[[route]]` they would hide, and the API (`crate::api`) takes its list from here.

/// Paths (matchit templates) answered by the gate itself rather than the backend.
pub const OWNED: &[&str] = &[
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/metrics",
    "/docs",
    "/docs/{*rest}",
    "/auth/{*rest}",
    "/users",
    "/users/{*rest}",
    "/api-keys",
    "/api-keys/{*rest}",
    "/plans",
    "/plans/{*rest}",
    "/subscriptions",
    "/subscriptions/{*rest}",
    "/admin/quotas/{*rest}",
    "/admin/users",
    "/admin/users/{*rest}",
    "/admin/audit-log",
    "/payments",
    "/payments/{*rest}",
    "/webhooks/{*rest}",
    "/portal",
    "/portal/{*rest}",
];

/// The gate's own template that answers the paths a route template would match, if any: a
/// route at `/auth/{*rest}` would never see a request. A route that merely overlaps (the
/// shipped `/admin/{*rest}`, most of whose paths are the backend's) is not reported: its
/// parameters are tried as a plain segment, and a catch-all is shadowed only when the gate
/// owns every path under it.
pub fn shadowing(route: &str) -> Option<&'static str> {
    let mut owned = matchit::Router::new();
    for (i, path) in OWNED.iter().enumerate() {
        owned.insert(*path, i).expect("owned paths do not conflict");
    }
    let sample: String = route
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') && seg.ends_with('}') {
                "x"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/");
    owned.at(&sample).ok().map(|m| OWNED[*m.value])
}

/// The gate's own template that answers the concrete `path`, if any.
pub fn owner_of(path: &str) -> Option<&'static str> {
    let mut owned = matchit::Router::new();
    for (i, p) in OWNED.iter().enumerate() {
        owned.insert(*p, i).expect("owned paths do not conflict");
    }
    owned.at(path).ok().map(|m| OWNED[*m.value])
}

#[cfg(test)]
mod tests {
    use super::shadowing;

    #[test]
    fn routes_the_gate_would_hide_are_found() {
        assert_eq!(shadowing("/auth/{*rest}"), Some("/auth/{*rest}"));
        assert_eq!(shadowing("/healthz"), Some("/healthz"));
        assert_eq!(shadowing("/plans/{id}"), Some("/plans/{*rest}"));
        assert_eq!(shadowing("/admin/{*rest}"), None);
        assert_eq!(shadowing("/process/{p}/{d}"), None);
    }
}
