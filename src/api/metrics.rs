//! `/metrics`: Prometheus text format. Expose it to the scraper only (an internal network, or
//! block the path at the edge): it names routes and outcomes, never users or secrets.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use std::sync::Arc;

use super::ApiState;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new().route("/metrics", get(metrics))
}

/// Requests by route class and status, latency of the gate and of the backend, quota
/// decisions, authentication outcomes, cache hits, upstream errors, database pool use,
/// payment notifications by outcome.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(
    State(state): State<Arc<ApiState>>,
) -> ([(http::HeaderName, &'static str); 1], String) {
    let (open, idle) = state.probe.connections();
    metrics::gauge!("gate_db_pool_connections", "state" => "open").set(open as f64);
    metrics::gauge!("gate_db_pool_connections", "state" => "idle").set(idle as f64);
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::render(),
    )
}
