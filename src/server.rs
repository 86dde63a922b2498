//! The front door: the accept loop, per-connection HTTP/1 and HTTP/2 with header-read
//! timeouts, and graceful shutdown.
//!
//! `axum::serve` is not used: it sets no timer, so hyper's header-read timeout would be
//! silently off and a slow-loris client could hold connections forever. On shutdown the
//! listener closes first (new connections are refused), then in-flight requests and open
//! upgrade tunnels get `shutdown_grace` to finish before they are cut.

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::gate::Gate;
use crate::store::Store;

/// A gate that is serving.
pub struct RunningGate {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    gate: Arc<Gate>,
}

impl RunningGate {
    /// Stops accepting and starts draining.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until draining is over.
    pub async fn stopped(self) {
        let _ = self.task.await;
    }

    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }
}

/// Why the gate could not start.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// Connects the store, builds the gate, binds the listener and starts serving.
pub async fn start(config: Config) -> Result<RunningGate, StartError> {
    crate::telemetry::metrics();
    let store = Store::connect(&config.database.url, config.database.max_connections)
        .await
        .map_err(|e| StartError(e.to_string()))?;
    let listen = config.listen;
    let gate = Arc::new(Gate::new(config, store).map_err(StartError)?);
    gate.billing()
        .seed()
        .await
        .map_err(|e| StartError(format!("cannot seed plans and quota types: {}", e.detail)))?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| StartError(format!("cannot listen on {listen}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError(e.to_string()))?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(listener, gate.clone(), shutdown.clone()));
    Ok(RunningGate {
        addr,
        shutdown,
        task,
        gate,
    })
}

async fn serve(listener: TcpListener, gate: Arc<Gate>, shutdown: CancellationToken) {
    let cfg = gate.config();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(std::time::Duration::from_secs(30)));
    let graceful = GracefulShutdown::new();

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let gate_for_conn = gate.clone();
        let svc = service_fn(move |req| {
            let gate = gate_for_conn.clone();
            async move { Ok::<_, Infallible>(gate.handle(req, peer).await) }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }

    drop(listener);
    let grace = gate.config().shutdown_grace;
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: draining requests and tunnels"
    );
    let tunnels = gate.tunnels().clone();
    let drained = tokio::time::timeout(grace, async {
        graceful.shutdown().await;
        tunnels.wait().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            tunnels = tunnels.len(),
            "grace period over: closing what is still open"
        );
        tunnels.cancel();
    }
    tracing::info!("stopped");
}
