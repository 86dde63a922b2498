//! Settle-commits and owner records, written in batches off the request path.
//!
//! Committing a charge only moves its usage row from `reserved` to `committed`: the balance
//! was already taken, durably, by the reservation before the request was forwarded. So the
//! reply does not wait for this write. Committed charges go into a queue; one writer task
//! takes everything queued (up to [`MAX_BATCH`]) and marks it in ONE statement, so under load
//! one transaction (one WAL flush on PostgreSQL) settles many requests instead of one each.
//! At low load the queue holds one charge and it is written at once.
//!
//! On PostgreSQL a batch of up to [`ONE_STATEMENT_ROWS`] of each kind is one statement (data-
//! modifying CTEs), one round trip where a transaction takes up to five.
//!
//! If the process dies between the reply and the write, the row stays `reserved`: still
//! counted in the balance, exactly as a crash during forwarding leaves it. Nothing is given
//! away.
//!
//! The links between charges and the tasks they started (`task_charges`) ride the same queue
//! and are written with a batch of commits, at most [`LINK_DELAY`] after they were queued: a
//! link is needed only when its task ends, minutes later (a reader flushes first), and a write
//! per `/process` would halve the metered route's throughput. If the process dies in between,
//! the charge has no link and stands, as it did before charges followed their tasks. Readers of usage rows call [`CommitWriter::flush`] first, so a client that reads its
//! usage right after a reply sees that reply's charge.
//!
//! The owner of an id a reply hands out (`owners`) is recorded in the same transaction: the
//! reply that carries a new task id waits for its owner to be stored (its first poll, maybe
//! on another replica, must find it), but under load it shares one transaction with every
//! other commit, link and owner queued meanwhile instead of paying two statements of its own,
//! each taking SQLite's write lock away from the reservation writer.

use super::StoreError;
use super::held::Held;
use super::owners::OwnerRecord;
use super::turn::WriteTurn;
use crate::formats::ids::RequestId;
use sqlx::{AnyPool, Connection};
use tokio::sync::{mpsc, oneshot};

/// At most this many charges in one statement (well under both databases' bind limits).
const MAX_BATCH: usize = 500;

/// How long a task link may wait to be written with others. A link is read only when its
/// task ends, minutes later; written one batch at a time, links cost the metered route about
/// 5 % of its throughput (a statement per batch of commits).
const LINK_DELAY: std::time::Duration = std::time::Duration::from_millis(200);

/// Retries of a batch the database refused for being unreachable, 200 ms apart.
const RETRIES: u32 = 5;

enum Msg {
    /// A charge made final, with the task it started if it started one.
    Commit {
        request_id: RequestId,
        at: i64,
        link: Option<TaskLink>,
    },
    Flush(oneshot::Sender<()>),
    /// An owner to record, answered with the owner the id has once written.
    Own(OwnerRecord, oneshot::Sender<Result<String, StoreError>>),
}

/// A charge's link to the task it started.
pub struct TaskLink {
    pub request_id: RequestId,
    pub kind: String,
    pub task_id: String,
    pub user_id: String,
    pub at: i64,
}

/// The queue of committed charges and its writer task.
#[derive(Clone)]
pub struct CommitWriter {
    tx: mpsc::UnboundedSender<Msg>,
}

impl CommitWriter {
    /// Starts the writer; must run inside the tokio runtime.
    pub fn start(pool: AnyPool, turn: WriteTurn) -> CommitWriter {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, rx, turn));
        CommitWriter { tx }
    }

    /// Queues a reserved charge to be made final, and its link to the task it started.
    pub fn commit(&self, request_id: RequestId, at: i64, link: Option<TaskLink>) {
        let msg = Msg::Commit {
            request_id,
            at,
            link,
        };
        if self.tx.send(msg).is_err() {
            // Only when the runtime is going away: the row stays reserved (charged).
            tracing::error!("the commit writer is gone; a charge stays reserved");
        }
    }

    /// Records `owner` as the owner of its id unless the id already has one, with the next
    /// batch; the owner the id has afterwards.
    pub async fn own(&self, owner: OwnerRecord) -> Result<String, StoreError> {
        let (done, answer) = oneshot::channel();
        let gone = || StoreError::Unavailable("the commit writer stopped".into());
        self.tx.send(Msg::Own(owner, done)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Waits until every charge queued before this call is written (or given up on).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

async fn run(pool: AnyPool, mut rx: mpsc::UnboundedReceiver<Msg>, turn: WriteTurn) {
    let mut batch = Vec::new();
    let mut held = Held::new(pool);
    // Links wait up to LINK_DELAY for company (a flush writes them at once).
    let mut links: Vec<TaskLink> = Vec::new();
    let mut links_due = tokio::time::Instant::now();
    loop {
        let more = if links.is_empty() {
            super::batch::next(&mut rx, &mut batch, MAX_BATCH).await
        } else {
            // `next` is cancel-safe: it awaits only the first receive.
            tokio::select! {
                more = super::batch::next(&mut rx, &mut batch, MAX_BATCH) => more,
                _ = tokio::time::sleep_until(links_due) => true,
            }
        };
        if !more {
            if !links.is_empty() {
                let _ = write(&mut held, &turn, &[], 0, &links, &[]).await;
            }
            return;
        }
        let mut ids = Vec::new();
        let mut waiters = Vec::new();
        let mut owners = Vec::new();
        let mut owner_waiters = Vec::new();
        let mut at = 0;
        for m in batch.drain(..) {
            match m {
                Msg::Commit {
                    request_id,
                    at: t,
                    link,
                } => {
                    ids.push(request_id);
                    at = at.max(t);
                    if let Some(l) = link {
                        if links.is_empty() {
                            links_due = tokio::time::Instant::now() + LINK_DELAY;
                        }
                        links.push(l);
                    }
                }
                Msg::Flush(w) => waiters.push(w),
                Msg::Own(o, w) => {
                    owners.push(o);
                    owner_waiters.push(w);
                }
            }
        }
        // Someone waits for this batch: the links queued go with it, at no extra transaction.
        let links_now = !links.is_empty()
            && (!waiters.is_empty()
                || !owners.is_empty()
                || links.len() >= MAX_BATCH
                || tokio::time::Instant::now() >= links_due);
        let due_links: &[TaskLink] = if links_now { &links } else { &[] };
        let mut ok = true;
        if !ids.is_empty() || !due_links.is_empty() || !owners.is_empty() {
            let written = write(&mut held, &turn, &ids, at, due_links, &owners).await;
            ok = written.is_ok();
            match written {
                Ok(recorded) => {
                    for (w, owner) in owner_waiters.into_iter().zip(recorded) {
                        let _ = w.send(Ok(owner));
                    }
                }
                Err(e) => {
                    for w in owner_waiters {
                        let _ = w.send(Err(e.clone()));
                    }
                }
            }
        }
        // Every pass, written or not (a flush alone writes nothing): an idle writer holds no
        // connection.
        held.after_batch(ok, !rx.is_empty());
        if links_now {
            links.clear();
        }
        for w in waiters {
            let _ = w.send(());
        }
    }
}

/// Marks `ids` committed in one statement, writes `links` and records `owners`, in one
/// transaction, retrying while the database is unreachable; the owner each id of `owners` has
/// afterwards, in order.
async fn write(
    held: &mut Held,
    turn: &WriteTurn,
    ids: &[RequestId],
    at: i64,
    links: &[TaskLink],
    owners: &[OwnerRecord],
) -> Result<Vec<String>, StoreError> {
    let mut attempt = 0;
    loop {
        let e = match write_once(held, turn, ids, at, links, owners).await {
            Ok(recorded) => return Ok(recorded),
            Err(e) => e,
        };
        // A connection that failed goes back to the pool's check before the retry.
        held.after_batch(false, false);
        if attempt < RETRIES && matches!(e, super::StoreError::Unavailable(_)) {
            attempt += 1;
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            continue;
        }
        tracing::error!(charges = ids.len(), links = links.len(), owners = owners.len(), error = %e,
            "could not commit charges (they stay reserved, still counted), link them to their tasks or record the owners of new ids");
        return Err(e);
    }
}

async fn write_once(
    held: &mut Held,
    turn: &WriteTurn,
    ids: &[RequestId],
    at: i64,
    links: &[TaskLink],
    owners: &[OwnerRecord],
) -> Result<Vec<String>, StoreError> {
    // On SQLite, in its turn with the reservation writer's (not across the retries' sleeps).
    let _turn = turn.take().await;
    let conn = held.conn().await?;
    if conn.backend_name() != "SQLite" {
        if let Some(recorded) = write_in_one_statement(conn, ids, at, links, owners).await? {
            return Ok(recorded);
        }
    }
    let mut tx = conn.begin().await?;
    let recorded = super::owners::record_all(&mut tx, owners).await?;
    if !ids.is_empty() {
        // Padded with NULLs to one of a few sizes (`marks::rows_for`), which `IN` ignores.
        let written = super::marks::rows_for(ids.len());
        let sql = super::marks::for_connection(commit_charges(2, written), &tx);
        let q = bind_charges(sqlx::query(&sql), ids, at, written);
        q.execute(&mut *tx).await?;
    }
    write_links(&mut tx, links).await?;
    tx.commit().await?;
    Ok(recorded)
}

/// The most rows of any kind (charges, links, owners) written in one statement on PostgreSQL;
/// a larger batch takes a transaction of several (a prepared statement holds server memory in
/// proportion to its rows, ~0.4 MB for a 128-row insert).
const ONE_STATEMENT_ROWS: usize = 128;

/// PostgreSQL: a batch of commits, links and owners in ONE statement (data-modifying CTEs run
/// atomically, as one statement), so one round trip where a transaction takes up to five
/// (`BEGIN`, three statements, `COMMIT`), each a wake-up of a server backend on a core shared
/// with the gate. `None` (nothing written) for a batch larger than [`ONE_STATEMENT_ROWS`].
///
/// The statement returns the owners it wrote. An id that had an owner already (recorded by
/// another replica; this one records only ids it has not seen) is looked up after it.
async fn write_in_one_statement(
    conn: &mut sqlx::AnyConnection,
    ids: &[RequestId],
    at: i64,
    links: &[TaskLink],
    owners: &[OwnerRecord],
) -> Result<Option<Vec<String>>, StoreError> {
    let keep = newest_links(links);
    let mut batch = super::owners::Batch::of(owners);
    let most = ids.len().max(keep.len()).max(batch.unique.len());
    if most > ONE_STATEMENT_ROWS {
        return Ok(None);
    }
    if most == 0 {
        return Ok(Some(Vec::new()));
    }
    // Every list padded with NULL rows to the same one of a few sizes (`marks::rows_for`), so
    // the statement's text depends on that size and on which lists there are.
    let rows = super::marks::rows_for(most);
    let mut ctes = Vec::new();
    let mut next = 1;
    if !ids.is_empty() {
        ctes.push(format!("c AS ({})", commit_charges(next + 1, rows)));
        next += 1 + rows;
    }
    if !keep.is_empty() {
        ctes.push(format!("l AS ({})", insert_links(next, rows)));
        next += 6 * rows;
    }
    if batch.unique.is_empty() {
        let sql = format!("WITH {} SELECT 1", ctes.join(", "));
        bind_lists(sqlx::query(&sql), ids, at, links, &keep, rows)
            .execute(&mut *conn)
            .await?;
        return Ok(Some(Vec::new()));
    }
    let with = if ctes.is_empty() {
        String::new()
    } else {
        format!("WITH {}", ctes.join(", "))
    };
    let sql = format!("{with} {}", super::owners::insert_owners(next, rows));
    let q = sqlx::query_as::<_, (String, String, String)>(&sql);
    let q = bind_lists(q, ids, at, links, &keep, rows);
    let q = super::owners::bind_page(q, &batch, &batch.unique, rows);
    for (kind, id, user) in q.fetch_all(&mut *conn).await? {
        batch.found(&kind, &id, user);
    }
    batch.look_up_rest(conn).await?;
    Ok(Some(batch.owners()))
}

/// `q` with the charges (if any) and the kept links (if any) bound, each as `rows` rows.
fn bind_lists<'q, Q: super::marks::Binds<'q>>(
    mut q: Q,
    ids: &'q [RequestId],
    at: i64,
    links: &'q [TaskLink],
    keep: &[usize],
    rows: usize,
) -> Q {
    if !ids.is_empty() {
        q = bind_charges(q, ids, at, rows);
    }
    if !keep.is_empty() {
        q = bind_links(q, links, keep, rows);
    }
    q
}

/// The statement that marks `rows` charges committed, their request ids' marks from `$first`
/// on, the time `$(first - 1)`. Rows of NULLs are ignored by `IN`.
fn commit_charges(first: usize, rows: usize) -> String {
    let marks = (first..first + rows)
        .map(|p| format!("${p}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "UPDATE usage_logs SET state = 'committed', settled_at = ${} \
         WHERE state = 'reserved' AND request_id IN ({marks})",
        first - 1
    )
}

/// `q` with the time and `ids` bound as [`commit_charges`]' marks (NULLs past them).
fn bind_charges<'q, Q: super::marks::Binds<'q>>(
    q: Q,
    ids: &'q [RequestId],
    at: i64,
    rows: usize,
) -> Q {
    let mut q = q.bind_int(at);
    for id in ids {
        q = q.bind_text(id.as_str());
    }
    super::marks::pad(q, &[super::marks::Null::Text], rows - ids.len())
}

/// Writes a batch of links (in the commit writer's transaction) in one statement: the newest
/// link of each task id takes the place of the task id's open link, if it has one. The run it
/// replaces ended before this one could start, without the gate seeing how; its charge stands,
/// as any charge without a link does. So does an older link of the same task id in the same
/// batch, which is not written at all.
async fn write_links(tx: &mut sqlx::AnyConnection, links: &[TaskLink]) -> Result<(), StoreError> {
    let keep = newest_links(links);
    // In pages, under every database's limit on bound parameters.
    for page in keep.chunks(100) {
        // Padded with NULL rows to one of a few sizes (`marks::rows_for`), which the insert
        // skips.
        let written = super::marks::rows_for(page.len());
        let sql = super::marks::for_connection(insert_links(1, written), tx);
        let q = bind_links(sqlx::query(&sql), links, page, written);
        q.execute(&mut *tx).await?;
    }
    Ok(())
}

/// Of `links`, the newest of each task id, by place in the batch, in order.
fn newest_links(links: &[TaskLink]) -> Vec<usize> {
    let mut newest: std::collections::HashMap<(&str, &str), usize> = Default::default();
    for (i, l) in links.iter().enumerate() {
        newest.insert((l.kind.as_str(), l.task_id.as_str()), i);
    }
    let mut keep: Vec<usize> = newest.into_values().collect();
    keep.sort_unstable();
    keep
}

/// The statement that writes `rows` links, their marks from `$first` on. The VALUES' columns
/// are column1.. in both databases; rows of NULLs are skipped.
fn insert_links(first: usize, rows: usize) -> String {
    let rows: Vec<String> = (0..rows)
        .map(|i| {
            let p = first + 6 * i;
            format!(
                "(${}, ${}, ${}, ${}, ${}, ${}, 'open')",
                p,
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5
            )
        })
        .collect();
    format!(
        "INSERT INTO task_charges (request_id, kind, task_id, user_id, created_at, checked_at, state) \
         SELECT * FROM (VALUES {}) AS v WHERE v.column1 IS NOT NULL \
         ON CONFLICT (kind, task_id) WHERE state = 'open' DO UPDATE SET \
         request_id = excluded.request_id, user_id = excluded.user_id, \
         created_at = excluded.created_at, checked_at = excluded.checked_at",
        rows.join(", ")
    )
}

/// `q` with the links of `page` bound as [`insert_links`]' `rows` rows (NULLs past them).
fn bind_links<'q, Q: super::marks::Binds<'q>>(
    mut q: Q,
    links: &'q [TaskLink],
    page: &[usize],
    rows: usize,
) -> Q {
    for &i in page {
        let l = &links[i];
        q = q
            .bind_text(l.request_id.as_str())
            .bind_text(l.kind.as_str())
            .bind_text(l.task_id.as_str())
            .bind_text(l.user_id.as_str())
            .bind_int(l.at)
            .bind_int(l.at);
    }
    use super::marks::Null::{Int, Text};
    super::marks::pad(q, &[Text, Text, Text, Text, Int, Int], rows - page.len())
}
