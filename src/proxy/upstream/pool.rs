//! Idle backend connections of one worker thread: a stack behind an uncontended mutex.
//! Check-out pops the most recently used connection that is still usable; a connection comes
//! back only when its request was written whole and its reply read to the end, so nothing in
//! the pool is busy.
//!
//! Idle connections are not reused after `idle_timeout` (4 s by default, below uvicorn's 5 s
//! keep-alive): a connection the backend is about to close would fail the next request
//! (hyper #2136). One the backend has closed is skipped at check-out once the worker's reactor
//! has seen the close; a close still on its way is not seen (the window nginx's and hyper's pools
//! have too): a bodiless GET, HEAD or OPTIONS is then sent again on another connection, any
//! other request is answered 502 (`super::forward`).

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::backend::Conn;

pub struct Pool {
    idle: Mutex<Vec<Idle>>,
    idle_timeout: Duration,
    max_idle: usize,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

impl Pool {
    pub fn new(idle_timeout: Duration, max_idle: usize) -> Pool {
        Pool {
            idle: Mutex::new(Vec::new()),
            idle_timeout,
            max_idle,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used connection that can take a request now.
    pub fn checkout(&self) -> Option<Conn> {
        let mut idle = self.lock();
        self.prune(&mut idle);
        while let Some(mut i) = idle.pop() {
            if i.conn.is_usable() {
                return Some(i.conn);
            }
        }
        None
    }

    pub fn put(&self, conn: Conn) {
        if self.max_idle == 0 || !conn.is_reusable() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() >= self.max_idle {
            idle.remove(0);
        }
        idle.push(Idle {
            conn,
            since: Instant::now(),
        });
    }

    /// Drops connections idle for longer than the timeout (the oldest are first), which closes
    /// them.
    fn prune(&self, idle: &mut Vec<Idle>) {
        let now = Instant::now();
        let expired = idle
            .iter()
            .take_while(|i| now.duration_since(i.since) >= self.idle_timeout)
            .count();
        idle.drain(..expired);
    }
}

/// Closes connections that stay idle without traffic; ends with the pools (a reload builds
/// new ones).
pub async fn reap(pools: Weak<[Arc<Pool>]>) {
    loop {
        let period = match pools.upgrade() {
            Some(p) => p[0].idle_timeout.max(Duration::from_millis(100)),
            None => return,
        };
        tokio::time::sleep(period).await;
        let Some(pools) = pools.upgrade() else { return };
        for p in pools.iter() {
            let mut idle = p.lock();
            p.prune(&mut idle);
        }
    }
}
