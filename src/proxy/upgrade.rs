//! HTTP/1 upgrades (WebSocket and the like): the tunnel opens only after the backend answered
//! 101, never before (Pingora CVE-2026-2833: a tunnel opened early lets a client smuggle a
//! second request past the gate's checks).
//!
//! Tunnels are detached from the hyper connection that started them, so hyper's graceful
//! shutdown does not see them; [`Tunnels`] tracks them so SIGTERM can wait for them too.

use hyper::upgrade::OnUpgrade;

use super::upstream::Conn;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The open tunnels, for draining at shutdown.
#[derive(Clone, Default)]
pub struct Tunnels {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Tunnels {
    /// Splices the client's upgraded connection and the backend's until either side closes.
    pub fn splice(&self, client: OnUpgrade, mut backend: Conn) {
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            let client = match client.await {
                Ok(client) => client,
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade did not complete");
                    return;
                }
            };
            let mut client = TokioIo::new(client);
            tokio::select! {
                r = tokio::io::copy_bidirectional(&mut client, &mut backend) => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "tunnel closed with an error");
                    }
                }
                _ = cancel.cancelled() => tracing::debug!("tunnel closed by shutdown"),
            }
        });
    }

    /// Number of open tunnels.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }

    /// Waits for every tunnel to close by itself.
    pub async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Closes every tunnel now.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }
}
