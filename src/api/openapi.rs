//! The OpenAPI document of every endpoint the gate serves itself.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::ApiState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "idoctor-gate",
        description = "Accounts, API keys, plans, payments and quota metering in front of the iDoctor backend. \
                       Paths not listed here are forwarded to the backend according to proxy.toml."
    ),
    paths(
        super::health::healthz,
        super::health::readyz,
        openapi_json,
        super::metrics::metrics,
        super::auth::register,
        super::auth::login,
        super::auth::refresh,
        super::auth::logout,
        super::auth::send_verification_code,
        super::auth::verify_email,
        super::users::me,
        super::users::update_me,
        super::users::get_user,
        super::users::delete_user,
        super::api_keys::create,
        super::api_keys::list,
        super::api_keys::remove,
        super::api_keys::deactivate,
        super::plans::list,
        super::plans::one,
        super::plans::create,
        super::plans::update,
        super::plans::deactivate,
        super::subscriptions::list,
        super::subscriptions::current,
        super::subscriptions::quota,
        super::subscriptions::cancel,
        super::subscriptions::subscribe,
        super::quotas::mine,
        super::quotas::of_user,
        super::quotas::usage_logs,
        super::quotas::statistics,
        super::quotas::reset,
        super::quotas::adjust,
        super::quotas::health,
        super::payments::create,
        super::payments::list,
        super::payments::one,
        super::payments::refund,
        super::payments::sandbox_checkout,
        super::payments::sandbox_pay,
        super::webhooks::notify,
        super::admin::list_users,
        super::admin::disable,
        super::admin::enable,
        super::admin::grant,
        super::admin::audit_log,
    ),
    components(schemas(crate::error::ErrorBody)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "operations", description = "Health, readiness and the API description"),
        (name = "auth", description = "Registration, login and tokens"),
        (name = "users", description = "Profiles"),
        (name = "api-keys", description = "API keys for scripts"),
        (name = "plans", description = "The plan catalogue"),
        (name = "subscriptions", description = "Subscriptions and their quota"),
        (name = "quotas", description = "Quota balances and usage (the paths the frontends read)"),
        (name = "payments", description = "Orders, refunds and provider notifications"),
        (name = "admin", description = "Operators: users, grants, the audit log")
    )
)]
pub struct ApiDoc;

/// The two ways to authenticate: a JWT access token, or an API key.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("An access token from /auth/login. An API key (sk_live_...) may be sent as the bearer token too, for reading (GET) only"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        // An API key only reads (`extract::CurrentUser`): an operation that changes anything
        // takes a session alone, and the document says so.
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                if let Some(security) = &mut op.security {
                    security.retain(|req| {
                        serde_json::to_value(req)
                            .map(|v| v.get("api_key").is_none())
                            .unwrap_or(true)
                    });
                }
            }
        }
    }
}

/// `/openapi.json`, and Swagger UI at `/docs` (served from the binary: no CDN, works offline).
pub fn routes() -> Router<Arc<ApiState>> {
    let ui = SwaggerUi::new("/docs").config(Config::from("/openapi.json"));
    Router::new()
        .route("/openapi.json", get(openapi_json))
        .merge(Router::from(ui))
}

/// This document. Its description also says which proxied routes of `proxy.toml` keep
/// accounts apart, and how.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3 document", content_type = "application/json")))]
pub async fn openapi_json(State(state): State<Arc<ApiState>>) -> Json<utoipa::openapi::OpenApi> {
    let mut doc = ApiDoc::openapi();
    let isolated: Vec<String> = state
        .config
        .routes
        .iter()
        .filter_map(|r| {
            let t = r.tenancy.as_ref()?;
            let methods = r.methods.as_ref().map_or("*".to_string(), |ms| {
                ms.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(",")
            });
            Some(format!("- `{methods} {}`: {}", r.path, t.describe()))
        })
        .collect();
    if !isolated.is_empty() {
        let description = doc.info.description.get_or_insert_with(String::new);
        description.push_str(
            "\n\nTenant isolation on proxied routes: patient names are namespaced per account \
             and shown back as typed; an owner-only route answers 404 to anyone but the id's \
             owner or a superuser; names the backend joins into paths must be one safe segment \
             (400 otherwise).\n\n",
        );
        description.push_str(&isolated.join("\n"));
    }
    Json(doc)
}
