//! Subscriptions and the start of a billing period: the subscription row and every quota
//! balance of the user change in one transaction, guarded so that two requests that both see
//! an ended period roll it over once.

use super::plans::Plan;
use super::{Store, StoreError, now_ms};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SubscriptionRow {
    pub id: String,
    pub user_id: String,
    pub plan_id: String,
    pub status: String,
    pub current_period_start: Option<i64>,
    pub current_period_end: Option<i64>,
    pub auto_renew: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// How a new period begins.
pub enum PeriodStart<'a> {
    /// The user has no current subscription: start one.
    First,
    /// Extend `current` on the same plan.
    Renew(&'a SubscriptionRow),
    /// End `current` (expired) and start a new subscription.
    Replace(&'a SubscriptionRow),
}

const COLUMNS: &str = "id, user_id, plan_id, status, current_period_start, current_period_end, auto_renew, created_at, updated_at";

impl Store {
    /// The running subscription (active, or cancelled but not yet ended).
    pub async fn current_subscription(
        &self,
        user_id: &str,
    ) -> Result<Option<SubscriptionRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM user_subscriptions WHERE user_id = $1 AND status IN ('active', 'cancelled') \
             ORDER BY created_at DESC LIMIT 1"
        );
        Ok(sqlx::query_as::<_, SubscriptionRow>(&sql)
            .bind(user_id)
            .fetch_optional(self.pool())
            .await?)
    }

    pub async fn subscriptions_of(
        &self,
        user_id: &str,
    ) -> Result<Vec<SubscriptionRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM user_subscriptions WHERE user_id = $1 ORDER BY created_at DESC, id DESC"
        );
        Ok(sqlx::query_as::<_, SubscriptionRow>(&sql)
            .bind(user_id)
            .fetch_all(self.pool())
            .await?)
    }

    /// A subscription waiting for its payment.
    pub async fn create_pending_subscription(
        &self,
        user_id: &str,
        plan_id: &str,
    ) -> Result<SubscriptionRow, StoreError> {
        let now = now_ms();
        let sql = format!(
            "INSERT INTO user_subscriptions ({COLUMNS}) VALUES ($1, $2, $3, 'pending', NULL, NULL, 1, $4, $4) RETURNING {COLUMNS}"
        );
        Ok(sqlx::query_as::<_, SubscriptionRow>(&sql)
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(user_id)
            .bind(plan_id)
            .bind(now)
            .fetch_one(self.pool())
            .await?)
    }

    pub async fn cancel_subscription(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE user_subscriptions SET status = 'cancelled', auto_renew = 0, updated_at = $2 WHERE id = $1 AND status = 'active'",
        )
        .bind(id)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Begins a period [`start`, `end`) on `plan` and resets every quota balance of the user to
    /// it, in one transaction. Returns false when another request already did (nothing changed).
    pub async fn begin_period(
        &self,
        user_id: &str,
        how: PeriodStart<'_>,
        plan: &Plan,
        quota_types: &[String],
        start: i64,
        end: i64,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        let still_current = |cur: &SubscriptionRow| cur.current_period_end.unwrap_or(0);
        let (renew, replace) = match how {
            PeriodStart::First => (None, None),
            PeriodStart::Renew(c) => (Some(c), None),
            PeriodStart::Replace(c) => (None, Some(c)),
        };
        if let Some(cur) = renew {
            let done = sqlx::query(
                "UPDATE user_subscriptions SET current_period_start = $2, current_period_end = $3, updated_at = $4 \
                 WHERE id = $1 AND COALESCE(current_period_end, 0) = $5 AND status IN ('active', 'cancelled')",
            )
            .bind(&cur.id)
            .bind(start)
            .bind(end)
            .bind(now)
            .bind(still_current(cur))
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                return Ok(false);
            }
        } else {
            if let Some(cur) = replace {
                let done = sqlx::query(
                    "UPDATE user_subscriptions SET status = 'expired', auto_renew = 0, updated_at = $2 \
                     WHERE id = $1 AND COALESCE(current_period_end, 0) = $3 AND status IN ('active', 'cancelled')",
                )
                .bind(&cur.id)
                .bind(now)
                .bind(still_current(cur))
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
            }
            let inserted = sqlx::query(&format!(
                "INSERT INTO user_subscriptions ({COLUMNS}) VALUES ($1, $2, $3, 'active', $4, $5, 1, $6, $6)"
            ))
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(user_id)
            .bind(&plan.row.id)
            .bind(start)
            .bind(end)
            .bind(now)
            .execute(&mut *tx)
            .await;
            match inserted {
                Ok(_) => {}
                // Another request started this user's first period at the same moment.
                Err(sqlx::Error::Database(db)) if db.is_unique_violation() => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
        for t in quota_types {
            sqlx::query(
                "INSERT INTO quota_balances (user_id, quota_type, limit_amount, used_amount, period_start, period_end, updated_at) \
                 VALUES ($1, $2, $3, 0, $4, $5, $6) \
                 ON CONFLICT (user_id, quota_type) DO UPDATE SET limit_amount = excluded.limit_amount, \
                 used_amount = 0, period_start = excluded.period_start, period_end = excluded.period_end, \
                 updated_at = excluded.updated_at",
            )
            .bind(user_id)
            .bind(t)
            .bind(plan.limit_of(t))
            .bind(start)
            .bind(end)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}
