//! Which connection thread runs the code at hand.
//!
//! The gate serves connections on `server.workers` threads, each with an event loop of its own
//! (a single-threaded tokio runtime, like an nginx worker process): a request, its backend
//! connection and its reply never change threads, so they wake one another without crossing
//! cores. What must stay on one thread for that, such as the idle backend connections
//! (`proxy::upstream`), is kept per worker and found by this index.

use std::cell::Cell;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// This thread's worker number: 0 for the first worker and for any thread that is not a
/// worker (tests, tools), 1.. for the threads `server` starts.
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// Marks the calling thread as worker `i`.
pub(crate) fn enter(i: usize) {
    INDEX.with(|c| c.set(i));
}
