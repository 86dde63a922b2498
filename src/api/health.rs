//! Liveness and readiness, for load balancers and orchestrators.
//!
//! `/healthz` answers while the process serves requests at all; `/readyz` only when the
//! database can be written (not merely read: a SQLite file locked by another writer serves
//! reads but no charge) and the backend is reachable, so a replica that lost either is taken out of
//! rotation instead of failing the requests sent to it.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use http::StatusCode;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use utoipa::ToSchema;

use super::ApiState;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

/// The process is up and serving.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The gate is up", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// `ok` or why the database cannot be used.
    pub database: String,
    /// `ok` or why the backend cannot be reached.
    pub upstream: String,
}

/// The database and the backend are reachable.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready to serve", body = Readiness),
        (status = 503, description = "The database or the backend is unreachable", body = Readiness)))]
pub async fn readyz(State(state): State<Arc<ApiState>>) -> (StatusCode, Json<Readiness>) {
    let probe = &state.probe;
    let checks = async {
        if probe.known_down() {
            return Err(crate::store::StoreError::Unavailable(format!(
                "the database is down: metered requests are refused until it answers; \
                 principals known before the outage are served on unmetered routes for up to {} s",
                state.config.auth.stale_if_error.as_secs()
            )));
        }
        probe.check().await
    };
    let database = match tokio::time::timeout(Duration::from_secs(2), checks).await {
        Ok(Ok(())) => "ok".to_string(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => {
            "the database could not take a write within 2 s (locked or unreachable)".to_string()
        }
    };
    let authority = state.upstream.authority().as_str().to_string();
    let upstream = match tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(authority.as_str()),
    )
    .await
    {
        Ok(Ok(_)) => "ok".to_string(),
        Ok(Err(e)) => format!("backend unreachable: {e}"),
        Err(_) => "backend did not accept a connection within 2 s".to_string(),
    };
    let ready = database == "ok" && upstream == "ok";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            status: if ready { "ready" } else { "not_ready" },
            database,
            upstream,
        }),
    )
}
