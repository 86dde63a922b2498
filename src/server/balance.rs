//! Connections per worker, counted so that the operator (`/metrics`) and the benchmark can see
//! how evenly the workers share the load.
//!
//! Every worker accepts on the one listening socket, so a worker that is free, or stuck, never
//! holds back the others; but the worker whose event loop wakes first takes what is waiting,
//! and a client that opens its connections at once and keeps them (a load generator, a pooled
//! HTTP client) can land most of them on one worker. Spreading them is not done yet: a worker
//! that stood back for a moment when over its share still got 28 of 32 connections on a loaded
//! machine (the other worker was not scheduled in time), and handing connections to a chosen
//! worker strands them when that worker is stuck.

use std::sync::atomic::{AtomicU64, Ordering};

pub(super) struct PerWorker {
    /// Connections accepted per worker, ever.
    accepted: Vec<AtomicU64>,
}

impl PerWorker {
    pub fn new(workers: usize) -> PerWorker {
        PerWorker {
            accepted: (0..workers.max(1)).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Counts a connection accepted by `worker`.
    pub fn accepted_by(&self, worker: usize) {
        self.accepted[worker % self.accepted.len()].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections each worker has accepted so far.
    pub fn accepted(&self) -> Vec<u64> {
        self.accepted
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect()
    }
}
