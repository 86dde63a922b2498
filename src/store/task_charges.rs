//! Charges that follow their tasks (`[tasks]`): the link between a charge's usage row and the
//! task it started, and the one transaction that refunds it when the task failed. A task's
//! charge is settled once: every change is conditional on the link still being `open`, so two
//! replicas that see the same failure refund it once between them.

use super::StoreError;
use super::ledger::BalanceRow;
use crate::formats::ids::{RequestId, UserId};

/// An open link between a charge and its task.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TaskChargeRow {
    pub request_id: String,
    pub kind: String,
    pub task_id: String,
    #[sqlx(try_from = "String")]
    pub user_id: UserId,
    pub created_at: i64,
    pub checked_at: i64,
}

/// How a task's charge ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEnd {
    /// The task completed: the charge stands.
    Completed,
    /// The task failed (or went stale under a refund rule): the charge is given back.
    Refunded,
    /// The task went stale and the rule keeps the charge.
    Kept,
}

impl TaskEnd {
    fn state(self) -> &'static str {
        match self {
            TaskEnd::Completed => "completed",
            TaskEnd::Refunded => "refunded",
            TaskEnd::Kept => "kept",
        }
    }
}

const ROW: &str = "request_id, kind, task_id, user_id, created_at, checked_at";

repository!(
    /// Charges that follow the task they started.
    TaskCharges, task_charges
);

impl TaskCharges<'_> {
    /// Makes a reserved charge final (as `commit_charge`) and links it to the task
    /// `(kind, task_id)` it started; both queued and written in batches (`commits`). The link
    /// replaces the open link of an earlier run of the same task id (the backend reuses
    /// `main_<patient>_<date>`).
    pub fn commit_linked(
        &self,
        request_id: RequestId,
        now: i64,
        kind: &str,
        task_id: &str,
        user_id: &UserId,
    ) {
        let link = super::commits::TaskLink {
            request_id: request_id.clone(),
            kind: kind.to_string(),
            task_id: task_id.to_string(),
            user_id: user_id.to_string(),
            at: now,
        };
        self.store.commits.commit(request_id, now, Some(link));
    }

    /// The open charges of one task (at most one, as a rule).
    pub async fn open(&self, kind: &str, task_id: &str) -> Result<Vec<TaskChargeRow>, StoreError> {
        Ok(sqlx::query_as::<_, TaskChargeRow>(&format!(
            "SELECT {ROW} FROM task_charges WHERE kind = $1 AND task_id = $2 AND state = 'open'"
        ))
        .bind(kind)
        .bind(task_id)
        .fetch_all(self.pool())
        .await?)
    }

    /// Open charges whose task the gate has not looked at since `cutoff`, oldest first.
    pub async fn due(&self, cutoff: i64, limit: i64) -> Result<Vec<TaskChargeRow>, StoreError> {
        Ok(sqlx::query_as::<_, TaskChargeRow>(&format!(
            "SELECT {ROW} FROM task_charges WHERE state = 'open' AND checked_at <= $1 \
             ORDER BY checked_at LIMIT $2"
        ))
        .bind(cutoff)
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }

    /// Takes a due charge for one poll: true for the one replica whose claim moved
    /// `checked_at` from what it read to `now`.
    pub async fn claim(
        &self,
        request_id: &str,
        seen_checked_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE task_charges SET checked_at = $3 \
             WHERE request_id = $1 AND state = 'open' AND checked_at = $2",
        )
        .bind(request_id)
        .bind(seen_checked_at)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends an open task charge; a refund gives the units back to the period the charge was
    /// made in and marks its usage row refunded with `reason`, in the same transaction. Returns
    /// whether this call ended it (false: already ended, here or by another replica) and, for a
    /// refund, the balance after it.
    pub async fn end(
        &self,
        request_id: &str,
        end: TaskEnd,
        reason: &str,
        now: i64,
    ) -> Result<(bool, Option<BalanceRow>), StoreError> {
        let mut tx = self.pool().begin().await?;
        let ended = sqlx::query(
            "UPDATE task_charges SET state = $2, reason = $3, settled_at = $4 \
             WHERE request_id = $1 AND state = 'open'",
        )
        .bind(request_id)
        .bind(end.state())
        .bind(reason)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if ended.rows_affected() == 0 {
            return Ok((false, None));
        }
        let mut balance = None;
        if end == TaskEnd::Refunded {
            // A commit still queued on some replica finds the row refunded and leaves it.
            let log: Option<(String, String, i64, i64)> = sqlx::query_as(
                "UPDATE usage_logs SET state = 'refunded', settled_at = $2, refund_reason = $3 \
                 WHERE request_id = $1 AND state IN ('reserved', 'committed') \
                 RETURNING user_id, quota_type, amount, created_at",
            )
            .bind(request_id)
            .bind(now)
            .bind(reason)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((user_id, quota_type, amount, created_at)) = log {
                balance = super::ledger::give_back(
                    &mut tx,
                    &user_id,
                    &quota_type,
                    amount,
                    created_at,
                    now,
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok((true, balance))
    }
}
