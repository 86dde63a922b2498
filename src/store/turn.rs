//! SQLite's one writer at a time, taken in turns inside the process instead of by sleeping.
//!
//! SQLite lets one connection write at a time. The two batch writers (reservations and
//! commits) each write from a connection of their own, and when one began while the other was
//! writing, SQLite's busy handler put it to sleep for 1, 2, 5, 10, then 15 ms before it looked
//! again, however soon the other had committed: on a loaded metered route ~100 such sleeps a
//! second, the reservation writer's among them (every metered request waits for its batch),
//! while the gate's core sat idle a tenth of the time. The two writers now take turns on an
//! async lock (first come, first served), each woken the moment the other's transaction ends.
//!
//! PostgreSQL locks rows, not the database: it takes no turns. SQLite's other writes (sign-ups,
//! keys, payments: a few a second) still meet the busy handler, as before.

use std::sync::Arc;
use tokio::sync::{Mutex, MutexGuard};

use super::Backend;

/// The turn the batch writers of one store share.
#[derive(Clone)]
pub(super) struct WriteTurn(Option<Arc<Mutex<()>>>);

impl WriteTurn {
    /// Turns for SQLite; none for PostgreSQL.
    pub(super) fn for_backend(backend: Backend) -> WriteTurn {
        WriteTurn((backend == Backend::Sqlite).then(|| Arc::new(Mutex::new(()))))
    }

    /// Waits for the caller's turn, which lasts until the guard is dropped (at once where there
    /// are no turns).
    pub(super) async fn take(&self) -> Option<MutexGuard<'_, ()>> {
        match &self.0 {
            Some(lock) => Some(lock.lock().await),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Backend, WriteTurn};
    use std::time::Duration;

    #[tokio::test]
    async fn sqlite_writers_wait_for_each_other_and_postgres_ones_do_not() {
        let turn = WriteTurn::for_backend(Backend::Sqlite);
        let other = turn.clone();
        let first = turn.take().await;
        assert!(first.is_some());
        let waiting = tokio::time::timeout(Duration::from_millis(50), other.take()).await;
        assert!(
            waiting.is_err(),
            "a second writer got the turn while the first held it"
        );
        drop(first);
        let second = tokio::time::timeout(Duration::from_millis(50), other.take()).await;
        assert!(matches!(second, Ok(Some(_))), "the turn did not pass on");

        let pg = WriteTurn::for_backend(Backend::Postgres);
        let a = pg.take().await;
        let b = tokio::time::timeout(Duration::from_millis(50), pg.take()).await;
        assert!(a.is_none() && matches!(b, Ok(None)));
    }
}
