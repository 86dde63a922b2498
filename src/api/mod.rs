//! The gate's own HTTP endpoints: thin axum handlers that call the modules below them.
//!
//! The front door is the gate's own hyper accept loop (see `server`); a request whose canonical
//! path the gate owns ([`Api::owns`]) is handed to this router, everything else to the proxy.
//! Every endpoint here is described in the OpenAPI document served at `/openapi.json`.

mod admin;
mod api_keys;
mod auth;
pub mod extract;
mod health;
mod image_cookie;
mod metrics;
mod openapi;
mod payments;
mod plans;
mod portal;
mod quotas;
mod refusals;
mod schemas;
mod subscriptions;
mod time;
mod users;
mod webhooks;

use axum::Router;
use axum::body::Body;
use axum::routing::MethodRouter;
use http::{Request, Response};
use std::sync::Arc;
use tower::ServiceExt;

use crate::auth::AuthService;
use crate::proxy::upstream::Upstream;

pub use openapi::ApiDoc;

/// What the handlers share.
pub struct ApiState {
    pub config: Arc<crate::config::Config>,
    /// Readiness and pool use only: every table is reached through its domain service.
    pub probe: crate::store::Probe,
    pub upstream: Arc<Upstream>,
    pub auth: Arc<AuthService>,
    pub billing: Arc<crate::billing::Billing>,
    pub payments: Arc<crate::payments::Payments>,
}

/// The router plus the set of paths it owns.
pub struct Api {
    router: Router,
    owned: matchit::Router<()>,
}

use crate::config::own_paths::OWNED;

/// A query parameter, with an empty value read as absent (the frontends send
/// `?quota_type=&start_date=&limit=`).
pub(crate) fn query_opt<'a>(
    q: &'a std::collections::HashMap<String, String>,
    name: &str,
) -> Option<&'a str> {
    q.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// A whole-number query parameter within [min, max], `default` when absent.
pub(crate) fn query_int(
    q: &std::collections::HashMap<String, String>,
    name: &str,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, crate::error::GateError> {
    match query_opt(q, name) {
        None => Ok(default),
        Some(t) => t
            .parse::<i64>()
            .ok()
            .filter(|v| (min..=max).contains(v))
            .ok_or_else(|| {
                crate::error::GateError::new(
                    http::StatusCode::UNPROCESSABLE_ENTITY,
                    format!("{name} must be a whole number from {min} to {max}"),
                )
            }),
    }
}

/// A boolean query parameter (`true/false/1/0`), `default` when absent.
pub(crate) fn query_flag(
    q: &std::collections::HashMap<String, String>,
    name: &str,
    default: bool,
) -> Result<bool, crate::error::GateError> {
    // Unlike the text parameters (which the frontends send empty for "any"), an empty flag is
    // neither true nor false: refused, as the schema's boolean says.
    match q.get(name).map(String::as_str) {
        None => Ok(default),
        Some("true" | "1" | "True") => Ok(true),
        Some("false" | "0" | "False") => Ok(false),
        Some(other) => Err(crate::error::GateError::new(
            http::StatusCode::UNPROCESSABLE_ENTITY,
            format!("{name} must be true or false, not `{other}`"),
        )),
    }
}

/// Adds `path` both without and with a trailing slash: the original FastAPI services answered
/// one and redirected the other, and clients use both.
pub(crate) fn both<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    path: &str,
    handler: MethodRouter<S>,
) -> Router<S> {
    router
        .route(path, handler.clone())
        .route(&format!("{path}/"), handler)
}

impl Api {
    pub fn new(state: Arc<ApiState>) -> Api {
        let router = Router::new()
            .merge(health::routes())
            .merge(openapi::routes())
            .merge(metrics::routes())
            .merge(auth::routes())
            .merge(users::routes())
            .merge(api_keys::routes())
            .merge(plans::routes())
            .merge(subscriptions::routes())
            .merge(quotas::routes())
            .merge(payments::routes())
            .merge(webhooks::routes())
            .merge(admin::routes())
            .merge(portal::routes())
            .route("/", axum::routing::get(portal::root))
            .fallback(|| async {
                crate::error::GateError::not_found("no such endpoint on the gate")
            })
            .method_not_allowed_fallback(|| async {
                crate::error::GateError::new(
                    http::StatusCode::METHOD_NOT_ALLOWED,
                    "this method is not allowed on this endpoint",
                )
            })
            .with_state(state);
        let mut owned = matchit::Router::new();
        for path in OWNED {
            owned
                .insert(*path, ())
                .expect("owned paths do not conflict");
        }
        Api { router, owned }
    }

    /// True when the canonical `path` is one of the gate's own endpoints.
    pub fn owns(&self, path: &str) -> bool {
        self.owned.at(path).is_ok()
            || (path.len() > 1
                && path.ends_with('/')
                && self.owned.at(path.trim_end_matches('/')).is_ok())
    }

    pub async fn call(&self, req: Request<Body>) -> Response<Body> {
        match self.router.clone().oneshot(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }
}
