//! Logging and metrics set-up. Logs: human-readable lines by default, JSON with
//! `GATE_LOG_FORMAT=json`, levels from `RUST_LOG` (default `info`). Metrics: counters and
//! gauges in one process-wide Prometheus recorder, latencies in fixed-bucket atomic histograms
//! (`latency`), both rendered by the gate's own `/metrics` endpoint.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;

mod latency;

pub use latency::Latency;

/// The process's metrics recorder (installed on first use; several gates in one process, as in
/// the tests, share it).
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
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
    /// Latencies: per route class, then the backend's share and the gate's own (`latency`).
    duration: Vec<Latency>,
    pub upstream: Latency,
    pub overhead: Latency,
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
    pub fn duration(&self, route: &str) -> &Latency {
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

thread_local! {
    /// This thread's worker's counters: connections accepted, requests answered.
    static WORKER: [metrics::Counter; 2] = {
        let worker = crate::worker::index().to_string();
        [
            metrics::counter!("gate_worker_connections_total", "worker" => worker.clone()),
            metrics::counter!("gate_worker_requests_total", "worker" => worker),
        ]
    };
}

/// Shows the calling worker in `/metrics` from the start (at 0), so that an idle one is seen.
pub fn worker_started() {
    WORKER.with(|_| ());
}

/// A connection accepted by the calling worker.
pub fn worker_connection() {
    WORKER.with(|w| w[0].increment(1));
}

/// A request answered by the calling worker.
pub fn worker_request() {
    WORKER.with(|w| w[1].increment(1));
}

/// Everything `/metrics` shows: the recorder's counters and gauges, then the latencies.
pub fn render() -> String {
    let mut out = metrics().render();
    let m = meters();
    latency::render(
        m.duration.iter().chain([&m.upstream, &m.overhead]),
        &mut out,
    );
    out
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
                .map(|r| Latency::new("gate_request_duration_seconds", format!("route=\"{r}\"")))
                .collect(),
            upstream: Latency::new("gate_upstream_duration_seconds", String::new()),
            overhead: Latency::new("gate_overhead_duration_seconds", String::new()),
            quota: QUOTA.iter().map(|d| metrics::counter!("gate_quota_decisions_total", "decision" => *d)).collect(),
            auth: AUTH.iter().map(|o| metrics::counter!("gate_auth_total", "outcome" => *o)).collect(),
            cache: [cache("principal"), cache("api_key")],
        }
    })
}
