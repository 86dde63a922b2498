//! The front door: the accept loop, each connection's HTTP/1 or HTTP/2 (`conn`), idle
//! keep-alive connections parked without hyper's buffers (`idle`), header-read timeouts, the
//! worker threads (`workers`), and graceful shutdown.
//!
//! Connections are served thread per core, the way nginx runs worker processes: every worker
//! thread has a single-threaded runtime and accepts on the same listening socket, and a
//! connection stays on the worker that accepted it, with its requests, their backend
//! connections and their replies. A multi-threaded runtime moved work between its threads
//! through shared queues and woke its own threads across cores; one thread per core without
//! sharing served 15-25 % more proxied requests per core in an A/B.
//!
//! `axum::serve` is not used: it sets no timer, so hyper's header-read timeout would be
//! silently off and a slow-loris client could hold connections forever. On shutdown the
//! listener closes first (new connections are refused), then in-flight requests and open
//! upgrade tunnels get `shutdown_grace` to finish before they are cut.
//!
//! The configuration can be replaced while serving ([`RunningGate::reload`], on SIGHUP): new
//! [`Services`] and a [`Gate`] over them are built beside the old ones and swapped in; requests already in flight finish on
//! the gate they started on, new ones take the new one.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod balance;
mod conn;
mod idle;
mod workers;

use crate::config::Config;
use crate::gate::Gate;
use crate::proxy::upgrade::Tunnels;
use crate::startup::Services;
use crate::store::Store;

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
    task: Option<JoinHandle<()>>,
    workers: workers::Workers,
    current: Arc<Current>,
    store: Store,
    tunnels: Tunnels,
    parked: Arc<AtomicUsize>,
    balance: Arc<balance::Balance>,
}

impl RunningGate {
    /// Stops accepting and starts draining.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until draining is over and every worker thread has ended.
    pub async fn stopped(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.workers.join().await;
    }

    /// Keep-alive connections waiting for their client without hyper's buffers
    /// (`idle`).
    pub fn parked_connections(&self) -> usize {
        self.parked.load(Ordering::Relaxed)
    }

    /// The threads serving connections.
    pub fn workers(&self) -> usize {
        self.workers.count()
    }

    /// Connections each worker has served so far (also `gate_worker_connections_total`).
    pub fn connections_per_worker(&self) -> Vec<u64> {
        self.balance.served()
    }

    /// The services of the configuration serving new requests now.
    pub fn services(&self) -> Arc<Services> {
        self.current.get().services().clone()
    }

    /// Replaces the configuration: validates, builds, seeds, then swaps. On any error the old
    /// configuration keeps serving. The listener, the workers and the database need a restart
    /// to change.
    pub async fn reload(&self, config: Config) -> Result<(), String> {
        let old = self.services();
        if config.listen != old.config().listen {
            return Err(format!(
                "server.listen changed ({} -> {}): that needs a restart",
                old.config().listen,
                config.listen
            ));
        }
        if config.workers != old.config().workers {
            return Err(format!(
                "server.workers changed ({} -> {}): that needs a restart",
                old.config().workers,
                config.workers
            ));
        }
        if config.database.url != old.config().database.url {
            return Err("database.url changed: that needs a restart".into());
        }
        let services = Services::prepare(config, self.store.clone(), self.tunnels.clone()).await?;
        self.current.set(Arc::new(Gate::new(services)));
        Ok(())
    }
}

/// A gate dropped without [`RunningGate::stopped`] (a test that ends) stops too, and lets its
/// worker threads go.
impl Drop for RunningGate {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.workers.release();
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

/// Connects the store, builds the gate, binds the listener and starts serving: this task's
/// runtime is worker 0, and `server.workers - 1` more threads accept on the same listener.
pub async fn start(config: Config) -> Result<RunningGate, StartError> {
    crate::telemetry::metrics();
    let store = Store::connect(&config.database.url, config.database.max_connections)
        .await
        .map_err(|e| StartError(e.to_string()))?;
    let listen = config.listen;
    let tunnels = Tunnels::default();
    let services = Services::prepare(config, store.clone(), tunnels.clone())
        .await
        .map_err(StartError)?;
    let gate = Arc::new(Gate::new(services));
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| StartError(format!("cannot listen on {listen}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError(e.to_string()))?;
    let shutdown = CancellationToken::new();
    let parked = Arc::new(AtomicUsize::new(0));
    let worker_count = gate.services().config.workers.max(1);
    let (balance, mut inboxes) =
        balance::Balance::new(worker_count, gate.services().config.balance);
    let balance = Arc::new(balance);
    let shared = Arc::new(conn::Shared::new(
        Arc::new(Current(RwLock::new(gate))),
        shutdown.clone(),
        parked.clone(),
        balance.clone(),
    ));
    let connections = TaskTracker::new();
    let own_inbox = inboxes.remove(0);
    let workers = workers::Workers::start(inboxes, &listener, shared.clone(), connections.clone())
        .map_err(|e| StartError(format!("cannot start the worker threads: {e}")))?;
    let current = shared.current.clone();
    let task = tokio::spawn(serve(
        listener,
        own_inbox,
        shared,
        connections,
        tunnels.clone(),
        workers.releaser(),
    ));
    Ok(RunningGate {
        addr,
        shutdown,
        task: Some(task),
        workers,
        current,
        store,
        tunnels,
        parked,
        balance,
    })
}

/// Worker 0: accepts until shutdown, then drains every worker's requests and tunnels, writes
/// the charges still queued, and lets the other workers' runtimes go (their sockets, database
/// connections among them, are needed until then).
async fn serve(
    listener: TcpListener,
    inbox: balance::Inbox,
    shared: Arc<conn::Shared>,
    connections: TaskTracker,
    tunnels: Tunnels,
    release: CancellationToken,
) {
    accept_loop(&listener, inbox, &shared, &connections).await;
    drop(listener);
    let current = shared.current.clone();
    let grace = current.get().services().config.shutdown_grace;
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: draining requests and tunnels"
    );
    connections.close();
    let drained = tokio::time::timeout(grace, async {
        connections.wait().await;
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
    current.get().services().billing.flush_commits().await;
    release.cancel();
    tracing::info!("stopped");
}

/// Accepts connections until shutdown, and takes those other workers hand over; each is
/// served by a task on this worker's runtime, unless `balance` gives it to a worker with fewer.
async fn accept_loop(
    listener: &TcpListener,
    mut inbox: balance::Inbox,
    shared: &Arc<conn::Shared>,
    connections: &TaskTracker,
) {
    let me = crate::worker::index();
    crate::telemetry::worker_started();
    let balance = &shared.balance;
    let beating = tokio::spawn(balance.clone().keep_beating(me));
    loop {
        let (stream, peer, handed) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => (stream, peer, false),
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
            Some((slot, peer)) = inbox.recv() => match balance::take(&slot).map(TcpStream::from_std) {
                Some(Ok(stream)) => (stream, peer, true),
                // Taken back by the worker that gave it (this one was late).
                None => continue,
                Some(Err(e)) => {
                    balance.uncount(me);
                    tracing::debug!(error = %e, %peer, "a handed-over connection was lost");
                    continue;
                }
            },
            _ = shared.shutdown.cancelled() => break,
        };
        // A connection this worker accepted may go to one holding fewer; one given back (the
        // other has stopped) is served here.
        let stream = match (handed, balance.hand_over_to(me)) {
            (false, Some(to)) => {
                let (shared2, connections2) = (shared.clone(), connections.clone());
                let reclaimed = move |stream: TcpStream, peer| {
                    let open = shared2.balance.serving(me, false);
                    serve_here(&shared2, &connections2, stream, peer, open);
                };
                match balance.hand_over(to, stream, peer, reclaimed) {
                    Ok(()) => continue,
                    Err(back) => back,
                }
            }
            _ => stream,
        };
        let open = balance.serving(me, handed);
        serve_here(shared, connections, stream, peer, open);
    }
    beating.abort();
}

/// Serves a connection on this worker, as a task of its own.
fn serve_here(
    shared: &Arc<conn::Shared>,
    connections: &TaskTracker,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    open: balance::Open,
) {
    crate::telemetry::worker_connection();
    let _ = stream.set_nodelay(true);
    // The TLS handshake runs in the connection's own task, never in the accept loop.
    match shared.current.get().services().tls.clone() {
        None => connections.spawn(conn::serve_plain(shared.clone(), stream, peer, open)),
        Some(acceptor) => connections.spawn(conn::serve_tls(
            shared.clone(),
            stream,
            peer,
            acceptor,
            open,
        )),
    };
}
