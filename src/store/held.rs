//! A batch writer's connection, kept from one batch to the next while batches follow each
//! other.
//!
//! Taking a connection from the pool for every batch costs a round trip of its own on
//! PostgreSQL: the pool pings a connection before handing it out (the server may have dropped
//! it). Under load a writer's next batch is already queued when one is written, so the writer
//! keeps its connection and the next batch goes straight to `BEGIN`. It gives the connection
//! back as soon as its queue is empty (so an idle writer holds nothing) and after any error
//! (so a connection the database dropped goes back to the pool's check instead of failing the
//! next batch too). A pool too small to spare a connection per writer is never held from.

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool};

use super::StoreError;

/// Pools smaller than this serve every batch from the pool: two writers holding a connection
/// each must leave room for the reads.
const SMALLEST_POOL_TO_HOLD: u32 = 4;

/// The connection a writer holds, if it holds one.
pub(super) struct Held {
    pool: AnyPool,
    conn: Option<PoolConnection<Any>>,
    may_hold: bool,
}

impl Held {
    pub(super) fn new(pool: AnyPool) -> Held {
        let may_hold = pool.options().get_max_connections() >= SMALLEST_POOL_TO_HOLD;
        Held {
            pool,
            conn: None,
            may_hold,
        }
    }

    /// The connection for the next batch: the one held, or one from the pool.
    pub(super) async fn conn(&mut self) -> Result<&mut AnyConnection, StoreError> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.pool.acquire().await?,
        };
        Ok(&mut **self.conn.insert(conn))
    }

    /// After a batch: keeps the connection only if the batch went through, another batch is
    /// waiting and the pool can spare it.
    pub(super) fn after_batch(&mut self, ok: bool, more_queued: bool) {
        if !(ok && more_queued && self.may_hold) {
            self.conn = None;
        }
    }
}
