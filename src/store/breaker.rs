//! A circuit breaker in front of the reservations: once the database is known to be down (a
//! reservation failed because it could not be reached), metered requests are answered 503 at
//! once instead of queueing one behind another on the pool's acquire timeout, and a prober
//! pings every 200 ms (each ping given 500 ms) and closes the breaker at the first answer, so
//! service resumes within a fraction of a second of the database's return.

use sqlx::AnyPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::StoreError;

const PROBE_EVERY: Duration = Duration::from_millis(200);
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Whether the database answers a ping within [`PROBE_TIMEOUT`].
pub async fn answers(pool: &AnyPool) -> bool {
    let ping = sqlx::query("SELECT 1").execute(pool);
    matches!(tokio::time::timeout(PROBE_TIMEOUT, ping).await, Ok(Ok(_)))
}

#[derive(Debug, Default)]
pub struct Breaker {
    open: AtomicBool,
    /// Wakes the reservations already waiting when it opens: they are answered at once too,
    /// not when the attempt in front of them gives up.
    opened: tokio::sync::Notify,
}

impl Breaker {
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Completes when the breaker opens (after this was called).
    pub fn opened(&self) -> tokio::sync::futures::Notified<'_> {
        self.opened.notified()
    }

    /// The answer while open.
    pub fn refusal() -> StoreError {
        StoreError::Unavailable(
            "the database is down (the breaker is open until it answers)".into(),
        )
    }

    /// Opens the breaker (if it was closed) and starts the prober that will close it.
    pub fn trip(self: &Arc<Self>, pool: &AnyPool) {
        if self.open.swap(true, Ordering::AcqRel) {
            return;
        }
        self.opened.notify_waiters();
        metrics::counter!("gate_store_breaker_trips_total").increment(1);
        tracing::warn!("the database is down: metered requests are refused (503) until it answers");
        let breaker = Arc::downgrade(self);
        let pool = pool.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                let Some(b) = breaker.upgrade() else { return };
                if answers(&pool).await {
                    b.open.store(false, Ordering::Release);
                    tracing::info!("the database answers again: the breaker is closed");
                    return;
                }
            }
        });
    }
}
