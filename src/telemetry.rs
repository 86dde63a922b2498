//! Logging and metrics set-up. Logs: human-readable lines by default, JSON with
//! `GATE_LOG_FORMAT=json`, levels from `RUST_LOG` (default `info`). Metrics: one process-wide
//! Prometheus recorder, rendered by the gate's own `/metrics` endpoint.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;

/// The process's metrics recorder (installed on first use; several gates in one process, as in
/// the tests, share it).
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("_seconds".into()),
                &[
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0,
                ],
            )
            .expect("valid buckets");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a library user's): then ours still renders
        // what is recorded through it... only if it is the global one, so say so in the log.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        handle
    })
}

pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn"));
    let json = std::env::var("GATE_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let result = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // A second init (tests that start several gates) keeps the first subscriber.
    let _ = result;
}

/// Route classes, status classes and outcomes the gate counts; handles for every combination
/// are registered once, so recording on the request path is an atomic add, not a registry
/// lookup per metric.
pub const ROUTES: [&str; 7] = [
    "gate",
    "public",
    "user",
    "admin",
    "blocked",
    "preflight",
    "rejected",
];
pub const STATUS: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
pub const QUOTA: [&str; 5] = ["reserved", "committed", "refunded", "denied", "error"];
pub const AUTH: [&str; 5] = ["ok", "none", "invalid", "disabled", "error"];

pub struct Meters {
    requests: Vec<Vec<metrics::Counter>>,
    duration: Vec<metrics::Histogram>,
    pub upstream: metrics::Histogram,
    pub overhead: metrics::Histogram,
    quota: Vec<metrics::Counter>,
    auth: Vec<metrics::Counter>,
    /// [principal, api_key] x [hit, miss]
    cache: [[metrics::Counter; 2]; 2],
}

fn index(set: &[&str], value: &str) -> usize {
    set.iter()
        .position(|v| *v == value)
        .unwrap_or(set.len() - 1)
}

impl Meters {
    pub fn request(&self, route: &str, status: &str) -> &metrics::Counter {
        &self.requests[index(&ROUTES, route)][index(&STATUS, status)]
    }
    pub fn duration(&self, route: &str) -> &metrics::Histogram {
        &self.duration[index(&ROUTES, route)]
    }
    pub fn quota(&self, decision: &str) -> &metrics::Counter {
        &self.quota[index(&QUOTA, decision)]
    }
    pub fn auth(&self, outcome: &str) -> &metrics::Counter {
        &self.auth[index(&AUTH, outcome)]
    }
    pub fn cache(&self, api_key: bool, hit: bool) -> &metrics::Counter {
        &self.cache[api_key as usize][(!hit) as usize]
    }
}

/// Drains the histograms' sample buffers every few seconds. The Prometheus recorder keeps raw
/// samples until upkeep runs; without this they would pile up between scrapes (memory and
/// time on the request path).
pub fn spawn_upkeep() {
    static STARTED: OnceLock<()> = OnceLock::new();
    if STARTED.set(()).is_err() {
        return;
    }
    tokio::spawn(async {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            tick.tick().await;
            metrics().run_upkeep();
        }
    });
}

pub fn meters() -> &'static Meters {
    static METERS: OnceLock<Meters> = OnceLock::new();
    METERS.get_or_init(|| {
        metrics();
        let cache = |c: &'static str| {
            [
                metrics::counter!("gate_cache_requests_total", "cache" => c, "result" => "hit"),
                metrics::counter!("gate_cache_requests_total", "cache" => c, "result" => "miss"),
            ]
        };
        Meters {
            requests: ROUTES
                .iter()
                .map(|r| STATUS.iter().map(|s| metrics::counter!("gate_requests_total", "route" => *r, "status" => *s)).collect())
                .collect(),
            duration: ROUTES
                .iter()
                .map(|r| metrics::histogram!("gate_request_duration_seconds", "route" => *r))
                .collect(),
            upstream: metrics::histogram!("gate_upstream_duration_seconds"),
            overhead: metrics::histogram!("gate_overhead_duration_seconds"),
            quota: QUOTA.iter().map(|d| metrics::counter!("gate_quota_decisions_total", "decision" => *d)).collect(),
            auth: AUTH.iter().map(|o| metrics::counter!("gate_auth_total", "outcome" => *o)).collect(),
            cache: [cache("principal"), cache("api_key")],
        }
    })
}
