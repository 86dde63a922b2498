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

use super::ledger::{
    BALANCE, BalanceRow, Charge, insert_reserved, refund_on, reserve_one, take_units,
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
    pub fn start(pool: AnyPool, backend: Backend) -> ReserveWriter {
        let (tx, rx) = mpsc::unbounded_channel();
        let breaker = Arc::new(Breaker::default());
        tokio::spawn(run(pool, backend, rx, breaker.clone()));
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
        let written = write(&mut held, &batch).await;
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

/// Writes a batch in one transaction; the balance after each admitted charge, in job order.
async fn write(held: &mut Held, jobs: &[Job]) -> Result<Vec<Option<BalanceRow>>, StoreError> {
    let now = jobs.iter().map(|j| j.now).max().unwrap_or(0);
    // (user, type, total asked) in first-arrival order, and each job's group.
    let mut groups: Vec<(&str, &str, i64)> = Vec::new();
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    let group_of: Vec<usize> = jobs
        .iter()
        .map(|j| {
            let key = (j.user_id.as_str(), j.quota_type.as_str());
            let g = *index.entry(key).or_insert_with(|| {
                groups.push((key.0, key.1, 0));
                groups.len() - 1
            });
            groups[g].2 = groups[g].2.saturating_add(j.amount);
            g
        })
        .collect();

    let mut tx = held.conn().await?.begin().await?;
    // 1. Whole groups.
    // The time is a one-row table of its own, so every mark occurs once and in order
    // (`marks`).
    let values = (0..groups.len())
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
    for (user, quota, total) in &groups {
        q = q.bind(*user).bind(*quota).bind(*total);
    }
    // Each group's balance after its whole total, or None where it did not fit.
    let mut whole: Vec<Option<BalanceRow>> = vec![None; groups.len()];
    for b in q.fetch_all(&mut *tx).await? {
        if let Some(&g) = index.get(&(b.user_id.as_str(), b.quota_type.as_str())) {
            whole[g] = Some(b);
        }
    }

    // The balance after each charge of a whole group: the group's final balance, walked back
    // by the amounts of the charges that came after it.
    let mut out: Vec<Option<BalanceRow>> = vec![None; jobs.len()];
    let mut later = vec![0i64; groups.len()];
    for (k, j) in jobs.iter().enumerate().rev() {
        let g = group_of[k];
        if let Some(b) = &whole[g] {
            let mut mine = b.clone();
            mine.used_amount -= later[g];
            later[g] += j.amount;
            out[k] = Some(mine);
        }
    }
    // 2. Groups that did not fit whole: charge by charge.
    for (k, j) in jobs.iter().enumerate() {
        if whole[group_of[k]].is_none() {
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
