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
        super::auth::forgot_password,
        super::auth::reset_password,
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
        super::payments::qr,
        super::portal::root,
        super::portal::index,
        super::portal::file,
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
        (name = "admin", description = "Operators: users, grants, the audit log"),
        (name = "portal", description = "The self-service portal page and its files")
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
        // An order names what it pays for in one of three ways (`payments::CreatePayment`).
        if let Some(schemas) = doc.components.as_mut().map(|c| &mut c.schemas) {
            if let Some(order) = schemas.remove("CreatePayment") {
                use utoipa::openapi::schema::{AllOfBuilder, AnyOfBuilder, ObjectBuilder, Type};
                let named = |field: &str| {
                    ObjectBuilder::new()
                        .property(field, ObjectBuilder::new().schema_type(Type::String))
                        .required(field)
                };
                let one_of_three = AnyOfBuilder::new()
                    .item(named("plan_id"))
                    .item(named("subscription_id"))
                    .item(named("amount"));
                schemas.insert(
                    "CreatePayment".to_string(),
                    AllOfBuilder::new().item(order).item(one_of_three).into(),
                );
            }
        }
        // An API key only reads (`extract::CurrentUser`): an operation that changes anything
        // takes a session alone, and the document says so. And every operation lists the
        // answers any request can get from the gate's front door and extractors, so that no
        // status a client may see is undocumented.
        for item in doc.paths.paths.values_mut() {
            let path_params = item.parameters.as_ref().is_some_and(|p| !p.is_empty());
            let reads = [&mut item.get].into_iter().flatten().map(|op| (op, false));
            let writes = [
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            .map(|op| (op, true));
            for (op, writes) in reads.chain(writes) {
                document_common_answers(op, path_params);
                if let Some(security) = op.security.as_mut().filter(|_| writes) {
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

/// The answers the gate's shared layers give on any operation: the front door (400 for a
/// request it cannot frame or route), authentication (401, 403), the JSON extractor (413, 422),
/// a path parameter naming nothing of the caller's (404) and store trouble (503).
fn document_common_answers(op: &mut utoipa::openapi::path::Operation, path_params: bool) {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, RefOr, ResponseBuilder, Type};
    let authenticated = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let mut query_params = false;
    // A path parameter is one canonical segment (`crate::proxy::path`): no `/`, `\`, control
    // characters, `.` or `..`; anything else is a 400 before any handler runs.
    for p in op.parameters.iter_mut().flatten() {
        if let RefOr::T(p) = p {
            match p.parameter_in {
                ParameterIn::Path => {
                    p.schema = Some(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .min_length(Some(1))
                            .max_length(Some(256))
                            .pattern(Some(r"^(?!\.{1,2}$)[^/\\\x00-\x1f\x7f]+$"))
                            .into(),
                    );
                }
                // The gate's API reads an empty query value as absent (`api::query_opt`: the
                // frontends send `?quota_type=&start_date=&limit=`), except a flag's, which is
                // neither true nor false (`api::query_flag`). utoipa has no attribute for
                // `allowEmptyValue`; it is set as the field.
                ParameterIn::Query => {
                    query_params = true;
                    let types = serde_json::to_value(&p.schema)
                        .map(|s| s["type"].clone())
                        .unwrap_or_default();
                    let flag = types == "boolean"
                        || types
                            .as_array()
                            .is_some_and(|t| t.contains(&"boolean".into()));
                    if !flag {
                        p.extensions
                            .get_or_insert_with(Default::default)
                            .insert("allowEmptyValue".to_string(), true.into());
                    }
                }
                _ => {}
            }
        }
    }
    let has_params = path_params
        || op.parameters.as_ref().is_some_and(|ps| {
            ps.iter().any(|p| {
                serde_json::to_value(p)
                    .ok()
                    .is_some_and(|v| v["in"] == "path")
            })
        });
    let mut common: Vec<(&str, &str)> = vec![(
        "400",
        "The request cannot be framed or routed (a bad path, Host or Transfer-Encoding)",
    )];
    if authenticated {
        common.push(("401", "No valid credential, or more than one"));
        common.push((
            "403",
            "The account is disabled, lacks the right, or used an API key where a session is needed",
        ));
        common.push((
            "503",
            "The database is unavailable; retry after `Retry-After`",
        ));
    }
    if op.request_body.is_some() {
        common.push(("413", "The JSON body is larger than 64 KiB"));
        common.push(("422", "The body is not the JSON this operation takes"));
    }
    if query_params {
        common.push((
            "422",
            "A query parameter is not of its type or out of its range",
        ));
    }
    if has_params {
        common.push(("404", "Nothing of the caller's has that id"));
    }
    for (status, description) in common {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| {
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build()
                    .into()
            });
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
