//! Throttle counters every replica shares: a generic cell rate algorithm (GCRA) per key, the
//! state being one integer, the key's theoretical arrival time (`tat`, ms). An attempt at `now`
//! moves it to `max(tat, now) + interval`; the attempt is refused if that lands more than
//! `burst` intervals after `now`. A key therefore allows `burst` attempts at once and then one
//! per interval: it slows a guesser down rather than locking a door for a fixed window.
//!
//! Taking an attempt is one upsert per key inside one transaction over every key of the
//! attempt, all or none: concurrent attempts queue on the rows (PostgreSQL) or on the write
//! lock (SQLite), so a burst of any size meets the limit exactly.

use std::sync::atomic::{AtomicU64, Ordering};

use super::StoreError;

/// One key's limit.
#[derive(Debug, Clone)]
pub struct Limit {
    pub key: String,
    /// Attempts allowed at once.
    pub burst: u32,
    /// Then one per interval (ms).
    pub interval_ms: i64,
}

/// Rows whose time has passed are deleted once in this many attempts.
const SWEEP_EVERY: u64 = 512;
static ATTEMPTS: AtomicU64 = AtomicU64::new(0);

repository!(
    /// Attempt limits shared by every replica.
    Throttles, throttles
);

impl Throttles<'_> {
    /// Takes one attempt from every limit, or none: `None` when taken, `Some(ms)` to wait
    /// before the next attempt can be taken when one of the limits is used up.
    pub async fn take_attempt(
        &self,
        limits: &[Limit],
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        let mut sorted: Vec<&Limit> = limits.iter().collect();
        // One order for every transaction: two attempts never wait on each other's rows in turn.
        sorted.sort_by(|a, b| a.key.cmp(&b.key));
        let mut tx = self.pool().begin().await?;
        let mut wait = 0i64;
        for l in sorted {
            let tat: i64 = sqlx::query_scalar(
                "INSERT INTO throttles (key, tat) VALUES ($1, $2 + $3) ON CONFLICT (key) DO UPDATE SET \
                 tat = (CASE WHEN throttles.tat > $2 THEN throttles.tat ELSE $2 END) + $3 RETURNING tat",
            )
            .bind(&l.key)
            .bind(now)
            .bind(l.interval_ms)
            .fetch_one(&mut *tx)
            .await?;
            let over = tat - now - l.interval_ms * l.burst as i64;
            wait = wait.max(over);
        }
        if wait > 0 {
            tx.rollback().await?;
            return Ok(Some(wait));
        }
        tx.commit().await?;
        if ATTEMPTS.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            sqlx::query("DELETE FROM throttles WHERE tat < $1")
                .bind(now)
                .execute(self.pool())
                .await?;
        }
        Ok(None)
    }

    /// Gives an attempt back (it succeeded): each limit's time moves one interval back (never
    /// before `now`), and the keys in `reset` are forgotten.
    pub async fn give_back(
        &self,
        limits: &[Limit],
        reset: &[&str],
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        for l in limits {
            if reset.contains(&l.key.as_str()) {
                sqlx::query("DELETE FROM throttles WHERE key = $1")
                    .bind(&l.key)
                    .execute(&mut *tx)
                    .await?;
            } else {
                sqlx::query(
                    "UPDATE throttles SET tat = CASE WHEN tat - $2 > $3 THEN tat - $2 ELSE $3 END WHERE key = $1",
                )
                .bind(&l.key)
                .bind(l.interval_ms)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}
