//! PostgreSQL's `LISTEN` / `NOTIFY`, the one way replicas tell each other that something they
//! may hold in memory changed (a revoked key, a disabled account). SQLite has one gate and
//! nothing to tell.

use std::time::{Duration, Instant};

use super::{Backend, Store, StoreError};

impl Store {
    /// Sends `payload` on `channel` to every replica listening (PostgreSQL only; a no-op on
    /// SQLite).
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        if self.backend() != Backend::Postgres {
            return Ok(());
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// A listener on its own one-connection pool, outside the store's, that gives up on a
    /// connection attempt after a second (`PgListener::connect`'s pool would keep retrying for
    /// 30 s, an outage's length and more, before its caller could try again). `None` on SQLite.
    pub async fn listener(&self) -> Option<Result<sqlx::postgres::PgListener, StoreError>> {
        let url = self.postgres_url()?;
        let connect = async {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .max_lifetime(None)
                .idle_timeout(None)
                .acquire_timeout(Duration::from_secs(1))
                .connect_lazy(url)?;
            sqlx::postgres::PgListener::connect_with(&pool).await
        };
        Some(connect.await.map_err(StoreError::from))
    }
}

impl Store {
    /// Whether a new connection to the database succeeds now, outside the pool: what a replica
    /// asks before it trusts its breaker's word that the database is down (that word can be
    /// 200 ms old when the database is back). A refused connection fails at once and is asked
    /// again next time; an attempt that gets no answer within 100 ms is believed for 25 ms, so a
    /// silent network costs one request in that time the 100 ms, not every one. SQLite: always.
    pub async fn reachable(&self) -> bool {
        let Some(url) = self.postgres_url() else {
            return true;
        };
        let now = Instant::now();
        {
            let until = self
                .unreachable_until
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if until.is_some_and(|t| t > now) {
                return false;
            }
        }
        let attempt = async {
            use sqlx::Connection;
            let conn = sqlx::postgres::PgConnection::connect(url).await?;
            conn.close().await
        };
        match tokio::time::timeout(Duration::from_millis(100), attempt).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false,
            Err(_) => {
                *self
                    .unreachable_until
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) =
                    Some(Instant::now() + Duration::from_millis(25));
                false
            }
        }
    }
}
