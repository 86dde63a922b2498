//! The queue-draining step shared by the ledger's batch writers: wait for one item, then take
//! whatever else is already queued, up to a limit. No timer: under load a batch fills while
//! the previous one is being written; at low load a batch is one item, written at once.

use tokio::sync::mpsc::UnboundedReceiver;

/// Fills `batch` with the next items; false when every sender is gone.
pub(super) async fn next<T>(rx: &mut UnboundedReceiver<T>, batch: &mut Vec<T>, max: usize) -> bool {
    let Some(first) = rx.recv().await else {
        return false;
    };
    batch.push(first);
    while batch.len() < max {
        match rx.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
    true
}
