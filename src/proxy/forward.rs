//! Forwarding: the pooled hyper client to the backend, with a timeout on the reply and the
//! mapping of every transport failure to a JSON 502 / 504 (or 413 for a body cut off by its limit).
//!
//! The pool's idle timeout is kept below uvicorn's 5 s keep-alive (4 s by default): a pooled
//! connection the backend has already closed would otherwise fail the next request with
//! "connection closed before message completed" (hyper #2136).

use axum::body::Body;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::config::UpstreamConfig;
use crate::error::GateError;

/// The backend and the connection pool to it.
pub struct Upstream {
    client: Client<HttpConnector, Body>,
    authority: Authority,
}

impl Upstream {
    pub fn new(cfg: &UpstreamConfig) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(cfg.connect_timeout));
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
            .build(connector);
        Upstream {
            client,
            authority: cfg.authority.clone(),
        }
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The backend URI for a canonical path and query.
    pub fn uri_for(&self, path_and_query: &str) -> Result<Uri, GateError> {
        let pq = PathAndQuery::try_from(path_and_query)
            .map_err(|_| GateError::bad_request("the request target is not a valid URI"))?;
        Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|_| GateError::bad_request("the request target is not a valid URI"))
    }

    /// Sends `req` and waits at most `timeout` for the reply's head. `body_exceeded` is the flag
    /// of a [`super::body::LimitedBody`], so a body cut off at its limit answers 413, not 502.
    pub async fn send(
        &self,
        req: Request<Body>,
        timeout: Duration,
        body_exceeded: Option<Arc<AtomicBool>>,
    ) -> Result<Response<Incoming>, GateError> {
        let result = tokio::time::timeout(timeout, self.client.request(req)).await;
        let too_large = || {
            body_exceeded
                .as_ref()
                .is_some_and(|f| f.load(Ordering::Acquire))
        };
        match result {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(_)) if too_large() => {
                metrics::counter!("gate_upstream_errors_total", "kind" => "body_limit")
                    .increment(1);
                Err(GateError::new(
                    http::StatusCode::PAYLOAD_TOO_LARGE,
                    "request body exceeds the limit for this route",
                ))
            }
            Ok(Err(e)) if e.is_connect() => {
                metrics::counter!("gate_upstream_errors_total", "kind" => "connect").increment(1);
                tracing::warn!(error = %e, "upstream connect failed");
                Err(GateError::bad_gateway("the backend is unreachable"))
            }
            Ok(Err(e)) => {
                metrics::counter!("gate_upstream_errors_total", "kind" => "closed").increment(1);
                tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "upstream request failed");
                Err(GateError::bad_gateway(
                    "the backend closed the connection before answering",
                ))
            }
            Err(_) => {
                metrics::counter!("gate_upstream_errors_total", "kind" => "timeout").increment(1);
                Err(GateError::gateway_timeout(format!(
                    "the backend did not answer within {} s",
                    timeout.as_secs()
                )))
            }
        }
    }
}
