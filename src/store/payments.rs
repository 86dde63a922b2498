//! Payment orders. The amount is always copied from the plan on the server.

use super::{Store, StoreError, now_ms};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PaymentRow {
    pub id: String,
    pub order_no: String,
    pub user_id: String,
    pub plan_id: String,
    pub subscription_id: Option<String>,
    pub amount_fen: i64,
    pub refunded_fen: i64,
    pub currency: String,
    pub payment_method: String,
    pub provider_trade_no: Option<String>,
    pub status: String,
    pub description: String,
    pub payment_url: Option<String>,
    pub qr_code: Option<String>,
    pub extra_data: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub paid_at: Option<i64>,
}

const COLUMNS: &str = "id, order_no, user_id, plan_id, subscription_id, amount_fen, refunded_fen, currency, payment_method, \
    provider_trade_no, status, description, payment_url, qr_code, extra_data, created_at, updated_at, paid_at";

impl Store {
    /// A pending order for a plan; `order_no` is a UUID without hyphens (32 characters, within
    /// WeChat Pay's limit for `out_trade_no`).
    #[allow(clippy::too_many_arguments)]
    pub async fn create_pending_payment(
        &self,
        user_id: &str,
        plan_id: &str,
        subscription_id: Option<&str>,
        amount_fen: i64,
        currency: &str,
        method: &str,
        description: &str,
    ) -> Result<PaymentRow, StoreError> {
        let now = now_ms();
        let sql = format!(
            "INSERT INTO payment_transactions ({COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, 0, $7, $8, NULL, 'pending', $9, NULL, NULL, '{{}}', $10, $10, NULL) RETURNING {COLUMNS}"
        );
        Ok(sqlx::query_as::<_, PaymentRow>(&sql)
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(uuid::Uuid::new_v4().simple().to_string())
            .bind(user_id)
            .bind(plan_id)
            .bind(subscription_id)
            .bind(amount_fen)
            .bind(currency)
            .bind(method)
            .bind(description)
            .bind(now)
            .fetch_one(self.pool())
            .await?)
    }
}

/// What a verified "paid" notification did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaidOutcome {
    /// The order moved to completed; the subscription is active and the quota reset.
    Applied,
    /// This event was seen before: nothing changed.
    Duplicate,
    /// The order had already left `pending` (paid, closed, refunded): nothing changed.
    Late(String),
    UnknownOrder,
    AmountMismatch {
        expected_fen: i64,
        got_fen: i64,
    },
}

/// A verified payment event from a provider.
pub struct PaidEvent<'a> {
    pub provider: &'a str,
    pub event_id: &'a str,
    pub order_no: &'a str,
    pub trade_no: &'a str,
    pub amount_fen: i64,
}

impl Store {
    pub async fn payment(&self, id: &str) -> Result<Option<PaymentRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM payment_transactions WHERE id = $1");
        Ok(sqlx::query_as::<_, PaymentRow>(&sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await?)
    }

    pub async fn payment_by_order_no(
        &self,
        order_no: &str,
    ) -> Result<Option<PaymentRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM payment_transactions WHERE order_no = $1");
        Ok(sqlx::query_as::<_, PaymentRow>(&sql)
            .bind(order_no)
            .fetch_optional(self.pool())
            .await?)
    }

    /// Payments newest first, of one user or (with `None`) of everyone.
    pub async fn payments(
        &self,
        user_id: Option<&str>,
        status: Option<&str>,
        limit: i64,
    ) -> Result<Vec<PaymentRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM payment_transactions WHERE ($1 = '' OR user_id = $1) AND ($2 = '' OR status = $2) \
             ORDER BY created_at DESC, id DESC LIMIT $3"
        );
        Ok(sqlx::query_as::<_, PaymentRow>(&sql)
            .bind(user_id.unwrap_or(""))
            .bind(status.unwrap_or(""))
            .bind(limit)
            .fetch_all(self.pool())
            .await?)
    }

    /// Pending orders created before `before`, oldest first.
    pub async fn pending_payments_before(
        &self,
        before: i64,
        limit: i64,
    ) -> Result<Vec<PaymentRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM payment_transactions WHERE status = 'pending' AND created_at < $1 ORDER BY created_at LIMIT $2"
        );
        Ok(sqlx::query_as::<_, PaymentRow>(&sql)
            .bind(before)
            .bind(limit)
            .fetch_all(self.pool())
            .await?)
    }

    pub async fn set_checkout(
        &self,
        id: &str,
        payment_url: Option<&str>,
        qr_code: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE payment_transactions SET payment_url = $2, qr_code = $3, updated_at = $4 WHERE id = $1")
            .bind(id)
            .bind(payment_url)
            .bind(qr_code)
            .bind(now_ms())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Records a notification that was verified but not applied (a mismatch): it is kept for
    /// the audit, and a redelivery of it is recognised.
    pub async fn record_webhook_event(
        &self,
        provider: &str,
        event_id: &str,
        order_no: &str,
        outcome: &str,
        detail: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO webhook_events (id, provider, event_id, order_no, outcome, detail, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (provider, event_id) DO NOTHING",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(provider)
        .bind(event_id)
        .bind(order_no)
        .bind(outcome)
        .bind(detail)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Applies a verified payment in ONE transaction: records the event (a redelivery stops
    /// here), moves the order pending -> completed (one way), ends the user's current
    /// subscription, activates the paid one for a new period, and resets every quota balance to
    /// the plan. Nothing is half-written: any failure rolls all of it back.
    pub async fn complete_payment(
        &self,
        ev: &PaidEvent<'_>,
        plan: &super::Plan,
        quota_types: &[String],
        period_end: impl Fn(i64) -> i64,
    ) -> Result<PaidOutcome, StoreError> {
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        // Writing first takes SQLite's write lock at once (a read first would have to upgrade,
        // which fails under concurrent deliveries); the event id is the deduplication key.
        let recorded = sqlx::query(
            "INSERT INTO webhook_events (id, provider, event_id, order_no, outcome, detail, received_at) \
             VALUES ($1, $2, $3, $4, 'received', '', $5) ON CONFLICT (provider, event_id) DO NOTHING",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(ev.provider)
        .bind(ev.event_id)
        .bind(ev.order_no)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if recorded.rows_affected() == 0 {
            return Ok(PaidOutcome::Duplicate);
        }
        let order = sqlx::query_as::<_, PaymentRow>(&format!(
            "SELECT {COLUMNS} FROM payment_transactions WHERE order_no = $1"
        ))
        .bind(ev.order_no)
        .fetch_optional(&mut *tx)
        .await?;
        let (outcome, detail) = match &order {
            None => (PaidOutcome::UnknownOrder, "unknown order".to_string()),
            Some(o) if o.amount_fen != ev.amount_fen => (
                PaidOutcome::AmountMismatch {
                    expected_fen: o.amount_fen,
                    got_fen: ev.amount_fen,
                },
                format!("amount {} fen, order {} fen", ev.amount_fen, o.amount_fen),
            ),
            Some(o) if o.status != "pending" => (
                PaidOutcome::Late(o.status.clone()),
                format!("order already {}", o.status),
            ),
            Some(_) => (PaidOutcome::Applied, String::new()),
        };
        let label = match &outcome {
            PaidOutcome::Applied => "applied",
            PaidOutcome::Late(_) => "late",
            _ => "rejected",
        };
        sqlx::query("UPDATE webhook_events SET outcome = $3, detail = $4 WHERE provider = $1 AND event_id = $2")
            .bind(ev.provider)
            .bind(ev.event_id)
            .bind(label)
            .bind(&detail)
            .execute(&mut *tx)
            .await?;
        let Some(order) = order.filter(|_| outcome == PaidOutcome::Applied) else {
            tx.commit().await?;
            return Ok(outcome);
        };
        // The one-way move; the condition makes a concurrent second delivery a no-op.
        let moved = sqlx::query(
            "UPDATE payment_transactions SET status = 'completed', provider_trade_no = $2, paid_at = $3, updated_at = $3 \
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(&order.id)
        .bind(ev.trade_no)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            return Ok(PaidOutcome::Duplicate);
        }
        let end = period_end(now);
        sqlx::query(
            "UPDATE user_subscriptions SET status = 'expired', auto_renew = 0, updated_at = $2 \
             WHERE user_id = $1 AND status IN ('active', 'cancelled')",
        )
        .bind(&order.user_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let activated = match &order.subscription_id {
            Some(sub) => sqlx::query(
                "UPDATE user_subscriptions SET status = 'active', plan_id = $2, current_period_start = $3, \
                 current_period_end = $4, auto_renew = 1, updated_at = $3 WHERE id = $1",
            )
            .bind(sub)
            .bind(&plan.row.id)
            .bind(now)
            .bind(end)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
            None => 0,
        };
        if activated == 0 {
            sqlx::query(
                "INSERT INTO user_subscriptions (id, user_id, plan_id, status, current_period_start, current_period_end, \
                 auto_renew, created_at, updated_at) VALUES ($1, $2, $3, 'active', $4, $5, 1, $4, $4)",
            )
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(&order.user_id)
            .bind(&plan.row.id)
            .bind(now)
            .bind(end)
            .execute(&mut *tx)
            .await?;
        }
        for t in quota_types {
            sqlx::query(
                "INSERT INTO quota_balances (user_id, quota_type, limit_amount, used_amount, period_start, period_end, updated_at) \
                 VALUES ($1, $2, $3, 0, $4, $5, $4) \
                 ON CONFLICT (user_id, quota_type) DO UPDATE SET limit_amount = excluded.limit_amount, \
                 used_amount = 0, period_start = excluded.period_start, period_end = excluded.period_end, \
                 updated_at = excluded.updated_at",
            )
            .bind(&order.user_id)
            .bind(t)
            .bind(plan.limit_of(t))
            .bind(now)
            .bind(end)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(PaidOutcome::Applied)
    }

    /// Closes a pending order (expired or abandoned); false if it was no longer pending.
    pub async fn close_payment(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query("UPDATE payment_transactions SET status = 'closed', updated_at = $2 WHERE id = $1 AND status = 'pending'")
            .bind(id)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() > 0 {
            sqlx::query(
                "UPDATE user_subscriptions SET status = 'expired', updated_at = $2 \
                 WHERE id = (SELECT subscription_id FROM payment_transactions WHERE id = $1) AND status = 'pending'",
            )
            .bind(id)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Adds a refund of `amount_fen` under `refund_no`, at most once per `refund_no` and never
    /// beyond what was paid. Returns the order after it, or None when it would exceed the total.
    pub async fn add_refund(
        &self,
        id: &str,
        refund_no: &str,
        amount_fen: i64,
        reason: &str,
    ) -> Result<Option<PaymentRow>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let fresh = sqlx::query(
            "INSERT INTO webhook_events (id, provider, event_id, order_no, outcome, detail, received_at) \
             VALUES ($1, 'refund', $2, $3, 'applied', $4, $5) ON CONFLICT (provider, event_id) DO NOTHING",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(refund_no)
        .bind(id)
        .bind(format!("{amount_fen} fen: {reason}"))
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if fresh {
            let done = sqlx::query(
                "UPDATE payment_transactions SET refunded_fen = refunded_fen + $2, \
                 status = CASE WHEN refunded_fen + $2 >= amount_fen THEN 'refunded' ELSE 'partially_refunded' END, \
                 updated_at = $3 WHERE id = $1 AND status IN ('completed', 'partially_refunded') \
                 AND refunded_fen + $2 <= amount_fen",
            )
            .bind(id)
            .bind(amount_fen)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                return Ok(None);
            }
        }
        let row = sqlx::query_as::<_, PaymentRow>(&format!(
            "SELECT {COLUMNS} FROM payment_transactions WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row)
    }
}
