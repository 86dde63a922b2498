//! The front door: the accept loop, per-connection HTTP/1 and HTTP/2 with header-read
//! timeouts, and graceful shutdown.
//!
//! `axum::serve` is not used: it sets no timer, so hyper's header-read timeout would be
//! silently off and a slow-loris client could hold connections forever. On shutdown the
//! listener closes first (new connections are refused), then in-flight requests and open
//! upgrade tunnels get `shutdown_grace` to finish before they are cut.
//!
//! The configuration can be replaced while serving ([`RunningGate::reload`], on SIGHUP): a new
//! [`Gate`] is built beside the old one and swapped in; requests already in flight finish on
//! the gate they started on, new ones take the new one.

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub mod tls;

use crate::config::Config;
use crate::gate::Gate;
use crate::proxy::upgrade::Tunnels;
use crate::store::Store;

/// What the service returns for one request.
type Handled = std::pin::Pin<
    Box<dyn Future<Output = Result<http::Response<axum::body::Body>, Infallible>> + Send>,
>;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The gate new requests go to; replaced whole by a reload.
struct Current(RwLock<Arc<Gate>>);

impl Current {
    fn get(&self) -> Arc<Gate> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, gate: Arc<Gate>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = gate;
    }
}

/// A gate that is serving.
pub struct RunningGate {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    current: Arc<Current>,
    store: Store,
    tunnels: Tunnels,
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

    /// The gate serving new requests now.
    pub fn gate(&self) -> Arc<Gate> {
        self.current.get()
    }

    /// Replaces the configuration: validates, builds, seeds, then swaps. On any error the old
    /// configuration keeps serving. The listener and the database need a restart to change.
    pub async fn reload(&self, config: Config) -> Result<(), String> {
        let old = self.current.get();
        if config.listen != old.config().listen {
            return Err(format!(
                "server.listen changed ({} -> {}): that needs a restart",
                old.config().listen,
                config.listen
            ));
        }
        if config.database.url != old.config().database.url {
            return Err("database.url changed: that needs a restart".into());
        }
        let gate = Arc::new(Gate::new(config, self.store.clone(), self.tunnels.clone())?);
        gate.billing()
            .seed()
            .await
            .map_err(|e| format!("cannot seed plans and quota types: {}", e.detail))?;
        self.current.set(gate);
        Ok(())
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
    let tunnels = Tunnels::default();
    let gate = Arc::new(Gate::new(config, store.clone(), tunnels.clone()).map_err(StartError)?);
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
    let current = Arc::new(Current(RwLock::new(gate)));
    let task = tokio::spawn(serve(
        listener,
        current.clone(),
        tunnels.clone(),
        shutdown.clone(),
    ));
    Ok(RunningGate {
        addr,
        shutdown,
        task,
        current,
        store,
        tunnels,
    })
}

async fn serve(
    listener: TcpListener,
    current: Arc<Current>,
    tunnels: Tunnels,
    shutdown: CancellationToken,
) {
    let first = current.get();
    let cfg = first.config();
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
        let tls = current.get().tls().cloned();
        let current = current.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        // The TLS handshake runs in the connection's own task, never in the accept loop.
        tokio::spawn(async move {
            let service = |secure: bool| {
                service_fn(move |req| {
                    let gate = current.get();
                    // Boxed: hyper keeps each connection's in-flight slot allocated at the size
                    // of this future for the connection's whole life, so unboxed every idle
                    // keep-alive connection would hold several KiB of request state.
                    let handled: Handled =
                        Box::pin(async move { Ok(gate.handle(req, peer, secure).await) });
                    handled
                })
            };
            let ended = match tls {
                None => {
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service(false));
                    watcher.watch(conn.into_owned()).await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let conn = builder.serve_connection_with_upgrades(
                                TokioIo::new(tls_stream),
                                service(true),
                            );
                            watcher.watch(conn.into_owned()).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, %peer, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }

    drop(listener);
    let grace = current.get().config().shutdown_grace;
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: draining requests and tunnels"
    );
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
    // Charges committed by the last replies are still queued: write them before exiting.
    current.get().billing().store().flush_commits().await;
    tracing::info!("stopped");
}
