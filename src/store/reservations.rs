//! Reservations, written in batches: group commit done by the gate.
//!
//! Every reservation must be durable before its request is forwarded, and reservations of one
//! user serialise on that user's balance row: written one transaction each, a busy user gets at
//! most one reservation per WAL flush. So one writer task takes every reservation queued (up to
//! [`MAX_BATCH`]) and writes them in ONE transaction:
//!
//! 1. one conditional `UPDATE ... FROM` adds each (user, quota type)'s total, only where the
//!    whole total fits in the current period (`used + total <= limit`, as for one charge);
//! 2. the charges of a group that did not fit as a whole are tried one by one, in arrival order,
//!    with the single-charge conditional `UPDATE`, so the quota is still spent exactly up to
//!    its limit and never beyond;
//! 3. one multi-row `INSERT` writes the usage rows of the admitted charges;
//! 4. one commit, then every request gets its answer.
//!
//! On PostgreSQL the three steps are one statement of data-modifying CTEs (atomic as one
//! statement: one round trip where a transaction takes four), and the charges of a group that
//! did not fit whole are tried one by one after it, each in one statement of its own
//! ([`write_in_one_statement`]).
//!
//! A batch of one is written as before ([`super::ledger::reserve_one`], one round trip on
//! PostgreSQL), so latency at low load does not change. If a batch fails for any reason but an
//! unreachable database, its charges are retried one by one, each in its own transaction, so
//! one bad charge (a user deleted meanwhile) cannot fail the others.

use sqlx::{AnyPool, Connection};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

use super::breaker::Breaker;
use super::held::Held;
use super::turn::WriteTurn;

use super::ledger::{
    BALANCE, BalanceRow, Charge, USAGE, bind_usage_rows, insert_reserved, refund_on, reserve_one,
    take_units,
};
use super::{Backend, StoreError};
use crate::formats::ids::{QuotaKey, RequestId, UserId};

/// At most this many charges in one transaction (the INSERT binds 9 values per charge).
const MAX_BATCH: usize = 128;

/// A charge waiting in the queue (the owned form of [`Charge`]).
struct Job {
    request_id: RequestId,
    user_id: UserId,
    quota_type: QuotaKey,
    amount: i64,
    endpoint: String,
    method: String,
    metadata: String,
    now: i64,
    reply: oneshot::Sender<Result<Option<BalanceRow>, StoreError>>,
}

impl Job {
    fn charge(&self) -> Charge<'_> {
        Charge {
            request_id: &self.request_id,
            user_id: &self.user_id,
            quota_type: &self.quota_type,
            amount: self.amount,
            endpoint: &self.endpoint,
            method: &self.method,
            metadata: &self.metadata,
        }
    }
}

/// The queue of reservations and its writer task.
#[derive(Clone)]
pub struct ReserveWriter {
    tx: mpsc::UnboundedSender<Job>,
    breaker: Arc<Breaker>,
}

impl ReserveWriter {
    /// Starts the writer; must run inside the tokio runtime.
    pub fn start(pool: AnyPool, backend: Backend, turn: WriteTurn) -> ReserveWriter {
        let (tx, rx) = mpsc::unbounded_channel();
        let breaker = Arc::new(Breaker::default());
        tokio::spawn(run(pool, backend, rx, breaker.clone(), turn));
        ReserveWriter { tx, breaker }
    }

    /// Whether the database is known to be down (reservations are refused at once).
    pub fn store_down(&self) -> bool {
        self.breaker.is_open()
    }

    /// Opens the breaker now (the database was found down by someone else).
    pub fn trip(&self, pool: &AnyPool) {
        self.breaker.trip(pool);
    }

    /// Reserves the charge; the balance after it, or `None` (nothing written) when it does not
    /// fit in the current period.
    pub async fn reserve(
        &self,
        c: &Charge<'_>,
        now: i64,
    ) -> Result<Option<BalanceRow>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            request_id: c.request_id.clone(),
            user_id: c.user_id.clone(),
            quota_type: c.quota_type.clone(),
            amount: c.amount,
            endpoint: c.endpoint.to_string(),
            method: c.method.to_string(),
            metadata: c.metadata.to_string(),
            now,
            reply,
        };
        // Registered before the check, so an opening between the two is not missed.
        let opened = self.breaker.opened();
        tokio::pin!(opened);
        opened.as_mut().enable();
        if self.breaker.is_open() {
            return Err(Breaker::refusal());
        }
        let gone = || StoreError::Unavailable("the reservation writer stopped".into());
        self.tx.send(job).map_err(|_| gone())?;
        tokio::select! {
            answer = answer => answer.map_err(|_| gone())?,
            _ = opened => Err(Breaker::refusal()),
        }
    }
}

async fn run(
    pool: AnyPool,
    backend: Backend,
    mut rx: mpsc::UnboundedReceiver<Job>,
    breaker: Arc<Breaker>,
    turn: WriteTurn,
) {
    let mut batch = Vec::new();
    let mut held = Held::new(pool.clone());
    while super::batch::next(&mut rx, &mut batch, MAX_BATCH).await {
        // Queued before the breaker opened: answered at once too, not after a pool timeout each.
        if breaker.is_open() {
            held.after_batch(false, false);
            for job in batch.drain(..) {
                let _ = job.reply.send(Err(Breaker::refusal()));
            }
            continue;
        }
        // On SQLite, the batch is written in its turn with the commit writer's, for the whole
        // pass (the retries one by one included).
        let _turn = turn.take().await;
        if batch.len() == 1 {
            let job = batch.pop().expect("one job");
            // Written in one statement from the pool; a connection held stays held only while
            // batches follow.
            held.after_batch(true, !rx.is_empty());
            let result = reserve_one(&pool, backend, &job.charge(), job.now).await;
            if matches!(result, Err(StoreError::Unavailable(_))) {
                breaker.trip(&pool);
            }
            answer(&pool, job, result);
            continue;
        }
        let written = match backend {
            Backend::Postgres => write_in_one_statement(&pool, &mut held, &batch).await,
            Backend::Sqlite => write(&mut held, &batch).await,
        };
        held.after_batch(written.is_ok(), !rx.is_empty());
        match written {
            Ok(balances) => {
                for (job, balance) in batch.drain(..).zip(balances) {
                    answer(&pool, job, Ok(balance));
                }
            }
            Err(e @ StoreError::Unavailable(_)) => {
                breaker.trip(&pool);
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, charges = batch.len(), "a reservation batch failed; retrying its charges one by one");
                for job in batch.drain(..) {
                    let result = reserve_one(&pool, backend, &job.charge(), job.now).await;
                    answer(&pool, job, result);
                }
            }
        }
    }
}

/// Answers a job. A charge admitted for a caller that no longer waits (the breaker opened while
/// its batch was trying) is given back at once: no charge may stand for a request answered 503.
fn answer(pool: &AnyPool, job: Job, result: Result<Option<BalanceRow>, StoreError>) {
    let admitted = matches!(result, Ok(Some(_)));
    let request_id = job.request_id;
    if job.reply.send(result).is_err() && admitted {
        let pool = pool.clone();
        tokio::spawn(async move {
            if let Err(e) = refund_on(&pool, &request_id, super::now_ms()).await {
                tracing::error!(request_id = %request_id, error = %e, "could not give back a charge nobody waited for");
            }
        });
    }
}

/// The groups of a batch: (user, quota type, total asked) in first-arrival order, and the group
/// of each job.
struct Groups<'a> {
    totals: Vec<(&'a str, &'a str, i64)>,
    index: HashMap<(&'a str, &'a str), usize>,
    of_job: Vec<usize>,
}

impl<'a> Groups<'a> {
    fn of(jobs: &'a [Job]) -> Groups<'a> {
        let mut totals: Vec<(&str, &str, i64)> = Vec::new();
        let mut index: HashMap<(&str, &str), usize> = HashMap::new();
        let of_job = jobs
            .iter()
            .map(|j| {
                let key = (j.user_id.as_str(), j.quota_type.as_str());
                let g = *index.entry(key).or_insert_with(|| {
                    totals.push((key.0, key.1, 0));
                    totals.len() - 1
                });
                totals[g].2 = totals[g].2.saturating_add(j.amount);
                g
            })
            .collect();
        Groups {
            totals,
            index,
            of_job,
        }
    }

    /// Each group's balance after its whole total, or `None` where it did not fit, from the
    /// balance rows the whole-group update returned.
    fn whole(&self, returned: Vec<BalanceRow>) -> Vec<Option<BalanceRow>> {
        let mut whole: Vec<Option<BalanceRow>> = vec![None; self.totals.len()];
        for b in returned {
            if let Some(&g) = self.index.get(&(b.user_id.as_str(), b.quota_type.as_str())) {
                whole[g] = Some(b);
            }
        }
        whole
    }

    /// The balance after each charge of a whole group, in job order: the group's final
    /// balance, walked back by the amounts of the charges that came after it. `None` for the
    /// charges of groups that did not fit whole.
    fn per_job(&self, jobs: &[Job], whole: &[Option<BalanceRow>]) -> Vec<Option<BalanceRow>> {
        let mut out: Vec<Option<BalanceRow>> = vec![None; jobs.len()];
        let mut later = vec![0i64; self.totals.len()];
        for (k, j) in jobs.iter().enumerate().rev() {
            let g = self.of_job[k];
            if let Some(b) = &whole[g] {
                let mut mine = b.clone();
                mine.used_amount -= later[g];
                later[g] += j.amount;
                out[k] = Some(mine);
            }
        }
        out
    }
}

/// PostgreSQL: a batch in ONE statement, so one round trip where a transaction of its own
/// takes four (`BEGIN`, the update, the insert, `COMMIT`), each a wake-up of a server backend
/// on a core it shares with the gate. Data-modifying CTEs run atomically, as one statement:
/// the balances of the groups whose whole total fits are updated and the usage rows of exactly
/// those groups are inserted, or nothing is. The charges of a group that did not fit whole are
/// then tried one by one, in arrival order, each in one statement of its own
/// ([`reserve_one`]), so the quota is still spent exactly up to its limit and never beyond.
async fn write_in_one_statement(
    pool: &AnyPool,
    held: &mut Held,
    jobs: &[Job],
) -> Result<Vec<Option<BalanceRow>>, StoreError> {
    let now = jobs.iter().map(|j| j.now).max().unwrap_or(0);
    let groups = Groups::of(jobs);
    let conn = held.conn().await?;
    // Padded to one of a few sizes with NULL rows, which the sums and the insert skip.
    let written = super::marks::rows_for(jobs.len());
    let rows = (0..written)
        .map(|i| {
            let p = 2 + 9 * i;
            format!(
                "(${}, ${}, ${}, ${}, CAST(${} AS BIGINT), ${}, ${}, ${}, CAST(${} AS BIGINT))",
                p,
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5,
                p + 6,
                p + 7,
                p + 8
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "WITH r(id, request_id, user_id, quota_type, amount, endpoint, method, metadata, created_at) \
         AS (VALUES {rows}), \
         v(uid, qt, total) AS (SELECT user_id, quota_type, CAST(SUM(amount) AS BIGINT) FROM r \
         WHERE request_id IS NOT NULL GROUP BY user_id, quota_type), \
         b AS (UPDATE quota_balances SET used_amount = used_amount + v.total, updated_at = $1 FROM v \
         WHERE quota_balances.user_id = v.uid AND quota_balances.quota_type = v.qt \
         AND quota_balances.period_start <= $1 AND quota_balances.period_end > $1 \
         AND (quota_balances.limit_amount < 0 OR quota_balances.used_amount + v.total <= quota_balances.limit_amount) \
         RETURNING {BALANCE}), \
         l AS (INSERT INTO usage_logs ({USAGE}) \
         SELECT r.id, r.request_id, r.user_id, r.quota_type, r.amount, r.endpoint, r.method, 'reserved', \
         r.metadata, r.created_at, NULL FROM r JOIN b ON b.user_id = r.user_id AND b.quota_type = r.quota_type) \
         SELECT {BALANCE} FROM b"
    );
    let q = bind_usage_rows(
        sqlx::query_as::<_, BalanceRow>(&sql).bind(now),
        jobs.iter().map(|j| (j.charge(), j.now)),
        written,
    );
    let whole = groups.whole(q.fetch_all(&mut *conn).await?);
    let mut out = groups.per_job(jobs, &whole);
    for (k, j) in jobs.iter().enumerate() {
        if whole[groups.of_job[k]].is_none() {
            out[k] = reserve_one(pool, Backend::Postgres, &j.charge(), j.now).await?;
        }
    }
    Ok(out)
}

/// Writes a batch in one transaction; the balance after each admitted charge, in job order.
async fn write(held: &mut Held, jobs: &[Job]) -> Result<Vec<Option<BalanceRow>>, StoreError> {
    let now = jobs.iter().map(|j| j.now).max().unwrap_or(0);
    let groups = Groups::of(jobs);

    let mut tx = held.conn().await?.begin().await?;
    // 1. Whole groups.
    // The time is a one-row table of its own, so every mark occurs once and in order
    // (`marks`).
    let values = (0..groups.totals.len())
        .map(|i| format!("(${}, ${}, ${})", 3 * i + 2, 3 * i + 3, 3 * i + 4))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = super::marks::for_connection(
        format!(
            "WITH n(now) AS (VALUES ($1)), v(uid, qt, total) AS (VALUES {values}) \
             UPDATE quota_balances SET used_amount = used_amount + v.total, updated_at = n.now FROM v, n \
             WHERE quota_balances.user_id = v.uid AND quota_balances.quota_type = v.qt \
             AND quota_balances.period_start <= n.now AND quota_balances.period_end > n.now \
             AND (quota_balances.limit_amount < 0 OR quota_balances.used_amount + v.total <= quota_balances.limit_amount) \
             RETURNING {BALANCE}"
        ),
        &tx,
    );
    let mut q = sqlx::query_as::<_, BalanceRow>(&sql).bind(now);
    for (user, quota, total) in &groups.totals {
        q = q.bind(*user).bind(*quota).bind(*total);
    }
    let whole = groups.whole(q.fetch_all(&mut *tx).await?);
    let mut out = groups.per_job(jobs, &whole);
    // 2. Groups that did not fit whole: charge by charge.
    for (k, j) in jobs.iter().enumerate() {
        if whole[groups.of_job[k]].is_none() {
            out[k] = take_units(&mut tx, &j.user_id, &j.quota_type, j.amount, now).await?;
        }
    }

    // 3. The usage rows of the admitted charges.
    let charges: Vec<Charge<'_>> = jobs.iter().map(Job::charge).collect();
    let admitted: Vec<(&Charge<'_>, i64)> = charges
        .iter()
        .zip(jobs)
        .zip(&out)
        .filter(|(_, b)| b.is_some())
        .map(|((c, j), _)| (c, j.now))
        .collect();
    insert_reserved(&mut tx, &admitted).await?;
    // 4. One commit for all.
    tx.commit().await?;
    Ok(out)
}
