//! PostgreSQL's `LISTEN` / `NOTIFY`, the one way replicas tell each other that something they
//! may hold in memory changed (a revoked key, a disabled account). SQLite has one gate and
//! nothing to tell.

use std::time::Duration;

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
