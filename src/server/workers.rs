//! The worker threads after the first: each runs a single-threaded runtime that accepts on its
//! own handle to the listening socket and serves what it accepted, until shutdown.
//!
//! Worker 0 is the runtime that called [`super::start`]; it drains, writes the last queued
//! charges and only then releases the others. Until released, a worker keeps its runtime, and
//! with it every socket registered there: connections to the backend and to PostgreSQL that
//! one of its requests opened and that any worker may still be using.

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::balance::Inbox;
use super::conn::Shared;

/// The extra worker threads of one server.
pub(super) struct Workers {
    /// Each thread's end: it sends (or drops) its half when it has let its runtime go.
    ended: Vec<oneshot::Receiver<()>>,
    release: CancellationToken,
}

impl Workers {
    /// Starts a thread per inbox (numbered 1..) accepting on `listener` too, and taking the
    /// connections handed to it through its inbox (`super::balance`).
    pub fn start(
        inboxes: Vec<Inbox>,
        listener: &TcpListener,
        shared: Arc<Shared>,
        connections: TaskTracker,
    ) -> io::Result<Workers> {
        let release = CancellationToken::new();
        let mut ended = Vec::with_capacity(inboxes.len());
        for (inbox, i) in inboxes.into_iter().zip(1..) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            // The same listening socket (a second descriptor of it), registered with this
            // worker's own event loop: whichever worker is free takes the next connection.
            let socket = std::net::TcpListener::from(listener.as_fd().try_clone_to_owned()?);
            socket.set_nonblocking(true)?;
            let own = {
                let _inside = runtime.enter();
                TcpListener::from_std(socket)?
            };
            let (shared, connections, release) =
                (shared.clone(), connections.clone(), release.clone());
            let (done, end) = oneshot::channel();
            std::thread::Builder::new()
                .name(format!("gate-worker-{i}"))
                .spawn(move || {
                    crate::worker::enter(i);
                    runtime.block_on(async move {
                        super::accept_loop(&own, inbox, &shared, &connections).await;
                        drop(own);
                        release.cancelled().await;
                    });
                    // Cuts whatever is still running here (past the grace period).
                    drop(runtime);
                    let _ = done.send(());
                })?;
            ended.push(end);
        }
        Ok(Workers { ended, release })
    }

    /// All workers, the caller's included.
    pub fn count(&self) -> usize {
        self.ended.len() + 1
    }

    /// The token that lets the workers end once the server has drained.
    pub fn releaser(&self) -> CancellationToken {
        self.release.clone()
    }

    /// Lets the workers end now.
    pub fn release(&self) {
        self.release.cancel();
    }

    /// Releases the workers and waits until every thread has let its runtime go.
    pub async fn join(&mut self) {
        self.release();
        for end in self.ended.drain(..) {
            let _ = end.await;
        }
    }
}
