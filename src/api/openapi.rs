//! The OpenAPI document of every endpoint the gate serves itself.

use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;
use utoipa::OpenApi;

use super::ApiState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "idoctor-gate",
        description = "Accounts, API keys, plans, payments and quota metering in front of the iDoctor backend. \
                       Paths not listed here are forwarded to the backend according to proxy.toml."
    ),
    paths(super::health::healthz, super::health::readyz, openapi_json),
    components(schemas(crate::error::ErrorBody)),
    tags((name = "operations", description = "Health, readiness and the API description"))
)]
pub struct ApiDoc;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new().route("/openapi.json", get(openapi_json))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3 document", content_type = "application/json")))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
