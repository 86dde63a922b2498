//! Connections spread over the workers, and counted per worker so that the operator
//! (`/metrics`) and the benchmark see how evenly they share the load.
//!
//! Every worker accepts on the one listening socket, so a worker that is stuck never holds
//! back the others. But whichever worker's event loop wakes first takes what is waiting, and a
//! client that opens its connections at once and keeps them (a load generator, a pooled HTTP
//! client) landed all 32 of its connections on one worker in one run of three, leaving the other
//! idle and the busy one's queue as everyone's p99. Standing back for a moment when over its
//! share did not help: the other worker was often not scheduled in time.
//!
//! So the worker that accepts decides, at once and without waiting for anyone: it keeps the
//! connection unless a live worker holds fewer open connections, and then hands it over (the
//! socket leaves this worker's event loop and joins the other's through its inbox). A burst
//! of 32 lands 16 / 16 however the threads were scheduled. "Live" is what keeps this from
//! stranding connections on a stuck worker: each worker's event loop beats every
//! [`BEAT`], and one that has not beaten for [`LIVE_WITHIN`] is given nothing until it beats
//! again (its own connections wait for it as they would anyway); one that stopped since its
//! last beat does not take what it was given within [`RECLAIM_AFTER`], and the giver takes
//! the connection back and serves it. The cost is per connection,
//! never per request: a comparison of a few counters, and for a handed-over socket one
//! re-registration with the other event loop.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// How often a worker's event loop says it is running.
const BEAT: Duration = Duration::from_millis(10);
/// How recent a worker's last beat must be for it to be handed connections.
const LIVE_WITHIN: Duration = Duration::from_millis(200);

/// How long a handed connection waits in its worker's inbox before the worker that accepted
/// it takes it back.
const RECLAIM_AFTER: Duration = Duration::from_millis(50);

/// A connection handed from the worker that accepted it to the one that serves it: in a slot
/// that whichever of the two comes first empties (the receiver, or the giver reclaiming it).
pub(super) type Handed = (Slot, SocketAddr);
pub(super) type Slot = Arc<Mutex<Option<std::net::TcpStream>>>;

/// The connection in `slot`, if nobody took it yet.
pub(super) fn take(slot: &Slot) -> Option<std::net::TcpStream> {
    slot.lock().unwrap_or_else(|p| p.into_inner()).take()
}

/// One worker's end of the hand-over: the connections given to it.
pub(super) type Inbox = mpsc::UnboundedReceiver<Handed>;

pub(super) struct Balance {
    /// Connections served per worker, ever.
    served: Vec<AtomicU64>,
    /// Connections open on each worker now (a handed one counts from the moment it is given).
    open: Vec<AtomicUsize>,
    /// Each worker's last beat, in milliseconds since `epoch`.
    beats: Vec<AtomicU64>,
    epoch: Instant,
    inboxes: Vec<mpsc::UnboundedSender<Handed>>,
    /// `server.balance`, and more than one worker.
    enabled: bool,
}

impl Balance {
    /// The balance of `workers` workers, and each worker's inbox (in worker order).
    pub fn new(workers: usize, enabled: bool) -> (Balance, Vec<Inbox>) {
        let workers = workers.max(1);
        let (senders, inboxes) = (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
        let balance = Balance {
            served: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            open: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
            beats: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
            inboxes: senders,
            enabled: enabled && workers > 1,
        };
        (balance, inboxes)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Beats for worker `me` every [`BEAT`] for as long as its event loop runs it.
    pub async fn keep_beating(self: Arc<Self>, me: usize) {
        if !self.enabled {
            return;
        }
        let mut tick = tokio::time::interval(BEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            self.beat(me);
        }
    }

    /// Worker `me` is running now.
    fn beat(&self, me: usize) {
        self.beats[me].store(self.now_ms(), Ordering::Relaxed);
    }

    /// Where a connection worker `me` has just accepted is served: `None` here, `Some(j)`
    /// to be handed to worker `j` (already counted there).
    pub fn hand_over_to(&self, me: usize) -> Option<usize> {
        if !self.enabled {
            return None;
        }
        let now = self.now_ms();
        let live_within = LIVE_WITHIN.as_millis() as u64;
        let mine = self.open[me].load(Ordering::Relaxed);
        let (j, theirs) = (0..self.open.len())
            .filter(|&j| j != me)
            .filter(|&j| now.saturating_sub(self.beats[j].load(Ordering::Relaxed)) <= live_within)
            .map(|j| (j, self.open[j].load(Ordering::Relaxed)))
            .min_by_key(|&(_, open)| open)?;
        if theirs >= mine {
            return None;
        }
        self.open[j].fetch_add(1, Ordering::Relaxed);
        Some(j)
    }

    /// Gives worker `j` (from [`Balance::hand_over_to`]) a connection: into its inbox, from
    /// which it takes it. If `j` has not taken it within [`RECLAIM_AFTER`] (it stopped
    /// between its last beat and now), `reclaimed` gets it back, to serve it here, and `j` is
    /// given nothing more until it beats again. `Err` gives the connection straight back when
    /// `j` takes none at all (it has stopped for good).
    pub fn hand_over(
        self: &Arc<Self>,
        j: usize,
        stream: TcpStream,
        peer: SocketAddr,
        reclaimed: impl FnOnce(TcpStream, SocketAddr) + Send + 'static,
    ) -> Result<(), TcpStream> {
        let std = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                self.uncount(j);
                tracing::debug!(error = %e, %peer, "a connection could not leave its worker");
                return Ok(());
            }
        };
        let slot = Arc::new(Mutex::new(Some(std)));
        if let Err(e) = self.inboxes[j].send((slot.clone(), peer)) {
            self.uncount(j);
            let back = take(&e.0.0).and_then(|s| TcpStream::from_std(s).ok());
            return back.map_or(Ok(()), Err);
        }
        metrics::counter!("gate_connections_handed_over_total").increment(1);
        let balance = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(RECLAIM_AFTER).await;
            let Some(std) = take(&slot) else { return };
            balance.uncount(j);
            balance.beats[j].store(0, Ordering::Relaxed);
            metrics::counter!("gate_connections_reclaimed_total").increment(1);
            if let Ok(stream) = TcpStream::from_std(std) {
                reclaimed(stream, peer);
            }
        });
        Ok(())
    }

    /// Counts a connection worker `me` serves; `counted`: already counted open (handed over).
    pub fn serving(self: &Arc<Self>, me: usize, counted: bool) -> Open {
        if !counted {
            self.open[me].fetch_add(1, Ordering::Relaxed);
        }
        self.served[me].fetch_add(1, Ordering::Relaxed);
        Open {
            balance: self.clone(),
            worker: me,
        }
    }

    /// A connection counted open on worker `j` when it was handed over is not there after
    /// all (lost on the way, taken back, or never sent).
    pub fn uncount(&self, j: usize) {
        self.open[j].fetch_sub(1, Ordering::Relaxed);
    }

    /// Connections each worker has served so far.
    pub fn served(&self) -> Vec<u64> {
        self.served
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect()
    }
}

/// A connection open on a worker, counted until it is dropped.
pub(super) struct Open {
    balance: Arc<Balance>,
    worker: usize,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.balance.open[self.worker].fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balance(workers: usize) -> Arc<Balance> {
        let (b, inboxes) = Balance::new(workers, true);
        std::mem::forget(inboxes);
        Arc::new(b)
    }

    #[test]
    fn a_burst_accepted_by_one_worker_is_split_evenly() {
        let b = balance(2);
        b.beat(0);
        b.beat(1);
        let mut open = Vec::new();
        for _ in 0..32 {
            // Worker 0 accepts everything; what it hands over is served by worker 1.
            match b.hand_over_to(0) {
                None => open.push(b.serving(0, false)),
                Some(j) => open.push(b.serving(j, true)),
            }
        }
        assert_eq!(b.served(), vec![16, 16]);
        drop(open);
        assert_eq!(b.open[0].load(Ordering::Relaxed), 0);
        assert_eq!(b.open[1].load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_worker_that_stopped_beating_is_given_nothing() {
        let b = balance(2);
        b.beat(0);
        // Worker 1 has never beaten within LIVE_WITHIN of now.
        b.beats[1].store(0, Ordering::Relaxed);
        std::thread::sleep(LIVE_WITHIN + Duration::from_millis(20));
        b.beat(0);
        let open: Vec<_> = (0..4).map(|_| b.serving(0, false)).collect();
        assert_eq!(b.hand_over_to(0), None);
        drop(open);
    }

    #[test]
    fn ties_stay_where_they_were_accepted_and_one_worker_never_hands_over() {
        let b = balance(2);
        b.beat(0);
        b.beat(1);
        let _a = b.serving(0, false);
        let _b = b.serving(1, false);
        assert_eq!(b.hand_over_to(0), None, "equal: kept");
        assert_eq!(b.hand_over_to(1), None);
        let one = balance(1);
        let _c = one.serving(0, false);
        assert_eq!(one.hand_over_to(0), None);
    }
}
