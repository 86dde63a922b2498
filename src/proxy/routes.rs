//! The route table: `[[route]]` entries of `proxy.toml` compiled once into a `matchit` matcher.
//!
//! Matching is by specificity (a static segment beats a `{param}`, which beats a `{*rest}`),
//! never by declaration order, so the outcome does not depend on how the file is sorted. Two
//! templates that could match the same path with equal specificity (`/a/{x}` and `/a/{y}`) are
//! refused at start-up, as are two entries of one template whose methods overlap.

use http::Method;
use std::sync::Arc;

use crate::config::{Access, Config, ConfigError, DefaultAccess, RouteSpec};

/// The compiled table, shared by every request.
#[derive(Debug)]
pub struct RouteTable {
    matcher: matchit::Router<Vec<usize>>,
    routes: Vec<Arc<RouteSpec>>,
    unknown: DefaultAccess,
    /// What an unknown path gets when `server.unknown_routes` forwards it (`None`: denied).
    fallback: Option<Arc<RouteSpec>>,
}

/// What the table says about one request.
#[derive(Debug)]
pub enum RouteMatch<'a> {
    Route(&'a Arc<RouteSpec>),
    /// The path matches a template, but not with this method.
    MethodNotAllowed(Vec<&'a Method>),
    /// No template matches: the configured default applies.
    Unknown(DefaultAccess),
}

impl RouteTable {
    pub fn build(config: &Config) -> Result<RouteTable, ConfigError> {
        let mut matcher = matchit::Router::new();
        let mut by_template: Vec<(String, Vec<usize>)> = Vec::new();
        let mut problems = Vec::new();
        let src = &config.source;

        for (i, r) in config.routes.iter().enumerate() {
            match by_template.iter_mut().find(|(t, _)| *t == r.path) {
                Some((_, ids)) => {
                    for &other in ids.iter() {
                        let o: &RouteSpec = &config.routes[other];
                        if methods_overlap(&o.methods, &r.methods) {
                            problems.push(format!(
                                "{src}:{}: route.path: `{}` overlaps the route at line {} (same template, overlapping methods)",
                                r.line, r.path, o.line
                            ));
                        }
                    }
                    ids.push(i);
                }
                None => by_template.push((r.path.clone(), vec![i])),
            }
        }
        for (template, ids) in &by_template {
            if let Err(e) = matcher.insert(template.clone(), ids.clone()) {
                let line = config.routes[ids[0]].line;
                let detail = match &e {
                    matchit::InsertError::Conflict { with } => {
                        let other = config
                            .routes
                            .iter()
                            .find(|r| &r.path == with)
                            .map(|r| format!(" at line {}", r.line))
                            .unwrap_or_default();
                        format!("overlaps `{with}`{other} ambiguously")
                    }
                    other => other.to_string(),
                };
                problems.push(format!("{src}:{line}: route.path: `{template}` {detail}"));
            }
        }
        // A mount serves only what no route answers: one whose root a route answers could
        // never serve its index.
        for m in &config.mounts {
            for root in m.roots() {
                if let Ok(hit) = matcher.at(&root) {
                    let r = &config.routes[hit.value[0]];
                    problems.push(format!(
                        "{src}:{}: static.at: `{root}` is answered by the route `{}` at line {}: mount elsewhere",
                        m.line, r.path, r.line
                    ));
                }
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        let fallback = |access| {
            Arc::new(RouteSpec {
                line: 0,
                path: "(unknown path)".into(),
                methods: None,
                access,
                query_token: false,
                timeout: config.timeout,
                max_body: config.max_body,
                meter: None,
                tenancy: None,
            })
        };
        Ok(RouteTable {
            matcher,
            routes: config.routes.iter().cloned().map(Arc::new).collect(),
            unknown: config.unknown_routes,
            fallback: match config.unknown_routes {
                DefaultAccess::Deny => None,
                DefaultAccess::User => Some(fallback(Access::User)),
                DefaultAccess::Admin => Some(fallback(Access::Admin)),
            },
        })
    }

    /// Matches a canonical path. A trailing `/` is matched as if absent, as the backend's
    /// `redirect_slashes` would send the client to the same handler.
    pub fn find(&self, method: &Method, path: &str) -> RouteMatch<'_> {
        // With a trailing `/`, the form without it is tried first: templates never end in `/`,
        // so only a catch-all could match the slashed form, and the backend would redirect the
        // request to the handler of the unslashed one.
        let trimmed = path.trim_end_matches('/');
        let ids = match (path.len() > 1 && trimmed.len() < path.len())
            .then(|| {
                self.matcher
                    .at(if trimmed.is_empty() { "/" } else { trimmed })
                    .ok()
            })
            .flatten()
        {
            Some(m) => Some(m.value),
            None => self.matcher.at(path).ok().map(|m| m.value),
        };
        let Some(ids) = ids else {
            return RouteMatch::Unknown(self.unknown);
        };
        for &i in ids {
            let r = &self.routes[i];
            match &r.methods {
                None => return RouteMatch::Route(r),
                Some(ms) if ms.contains(method) => return RouteMatch::Route(r),
                // HEAD is answered by GET handlers on the backend (Starlette does so).
                Some(ms) if method == Method::HEAD && ms.contains(&Method::GET) => {
                    return RouteMatch::Route(r);
                }
                Some(_) => {}
            }
        }
        let allowed = ids
            .iter()
            .flat_map(|&i| self.routes[i].methods.iter().flatten())
            .collect();
        RouteMatch::MethodNotAllowed(allowed)
    }

    /// The route an unknown path follows, or `None` where unknown paths are denied.
    pub fn fallback(&self) -> Option<&Arc<RouteSpec>> {
        self.fallback.as_ref()
    }

    pub fn routes(&self) -> &[Arc<RouteSpec>] {
        &self.routes
    }

    /// A human-readable table for `check-config`.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "{:<5} {:<66} {:<14} {:<8} {:>7} {:>10}  {:<26}  {}\n",
            "line", "path", "methods", "access", "timeout", "max body", "meter", "isolation"
        );
        for r in &self.routes {
            let methods = match &r.methods {
                None => "*".to_string(),
                Some(ms) => ms.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(","),
            };
            let access = if r.query_token && r.access != Access::Blocked {
                format!("{}+qt", r.access.as_str())
            } else {
                r.access.as_str().to_string()
            };
            let meter = match &r.meter {
                None => "-".to_string(),
                Some(m) => {
                    let cost = match m.cost {
                        crate::config::Cost::Fixed(c) => format!("{c}"),
                        crate::config::Cost::PerMb(c) => format!("{c}/MB"),
                    };
                    format!("{} x{cost}", m.quota)
                }
            };
            let (timeout, body) = if r.access == Access::Blocked {
                ("-".to_string(), "-".to_string())
            } else {
                (format!("{}s", r.timeout.as_secs()), human_size(r.max_body))
            };
            let isolation = r
                .tenancy
                .as_ref()
                .map_or_else(|| "-".to_string(), |t| t.describe());
            out.push_str(&format!(
                "{:<5} {:<66} {:<14} {:<8} {:>7} {:>10}  {:<26}  {}\n",
                r.line, r.path, methods, access, timeout, body, meter, isolation
            ));
        }
        let unknown = match self.unknown {
            DefaultAccess::Deny => "denied (404)",
            DefaultAccess::User => "forwarded for signed-in users",
            DefaultAccess::Admin => "forwarded for superusers",
        };
        out.push_str(&format!("unknown paths: {unknown}\n"));
        out
    }
}

fn methods_overlap(a: &Option<Vec<Method>>, b: &Option<Vec<Method>>) -> bool {
    match (a, b) {
        (None, _) | (_, None) => true,
        (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
    }
}

fn human_size(b: u64) -> String {
    if b >= 1 << 30 && b % (1 << 30) == 0 {
        format!("{}GB", b >> 30)
    } else if b >= 1 << 20 && b % (1 << 20) == 0 {
        format!("{}MB", b >> 20)
    } else if b >= 1 << 10 && b % (1 << 10) == 0 {
        format!("{}KB", b >> 10)
    } else {
        format!("{b}B")
    }
}
