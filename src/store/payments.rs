//! Payment orders. The amount is always copied from the plan on the server.

use super::columns::{PaymentStatus, RefundStatus};
use super::subscriptions::{PaidContext, PeriodEffect, SubscriptionRow};
use super::{StoreError, now_ms};
use crate::formats::ids::UserId;
use crate::formats::money::Fen;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PaymentRow {
    pub id: String,
    pub order_no: String,
    #[sqlx(try_from = "String")]
    pub user_id: UserId,
    pub plan_id: String,
    pub subscription_id: Option<String>,
    #[sqlx(try_from = "i64")]
    pub amount_fen: Fen,
    #[sqlx(try_from = "i64")]
    pub refunded_fen: Fen,
    pub currency: String,
    pub payment_method: String,
    pub provider_trade_no: Option<String>,
    #[sqlx(try_from = "String")]
    pub status: PaymentStatus,
    pub description: String,
    pub payment_url: Option<String>,
    pub qr_code: Option<String>,
    pub extra_data: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub paid_at: Option<i64>,
    /// The quote the order was priced by (`billing::changes`).
    pub change_kind: String,
    #[sqlx(try_from = "i64")]
    pub list_price_fen: Fen,
    #[sqlx(try_from = "i64")]
    pub credit_fen: Fen,
    pub from_subscription_id: Option<String>,
    pub from_period_end: Option<i64>,
    /// The span the payment bought, once applied.
    pub effect_start: Option<i64>,
    pub effect_end: Option<i64>,
}

const COLUMNS: &str = "id, order_no, user_id, plan_id, subscription_id, amount_fen, refunded_fen, currency, payment_method, \
    provider_trade_no, status, description, payment_url, qr_code, extra_data, created_at, updated_at, paid_at, \
    change_kind, list_price_fen, credit_fen, from_subscription_id, from_period_end, effect_start, effect_end";

/// A pending order as priced: what to insert.
pub struct NewOrder<'a> {
    pub user_id: &'a UserId,
    pub plan_id: &'a str,
    /// The pending subscription it will activate, or the running one a renewal extends.
    pub subscription_id: Option<&'a str>,
    pub currency: &'a str,
    pub method: &'a str,
    pub description: &'a str,
    pub change_kind: &'a str,
    pub list_price_fen: Fen,
    pub credit_fen: Fen,
    /// What the payer pays: `list_price_fen - credit_fen`.
    pub amount_fen: Fen,
    pub from: Option<(&'a str, i64)>,
}

repository!(
    /// Payment orders, provider events, refunds.
    Payments, payments
);

impl Payments<'_> {
    /// A pending order for a plan; `order_no` is a UUID without hyphens (32 characters, within
    /// WeChat Pay's limit for `out_trade_no`).
    pub async fn create_pending(&self, o: &NewOrder<'_>) -> Result<PaymentRow, StoreError> {
        let now = now_ms();
        let sql = format!(
            "INSERT INTO payment_transactions ({COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, 0, $7, $8, NULL, 'pending', $9, NULL, NULL, '{{}}', $10, $10, NULL, \
             $11, $12, $13, $14, $15, NULL, NULL) RETURNING {COLUMNS}"
        );
        Ok(sqlx::query_as::<_, PaymentRow>(&sql)
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(uuid::Uuid::new_v4().simple().to_string())
            .bind(o.user_id.as_str())
            .bind(o.plan_id)
            .bind(o.subscription_id)
            .bind(o.amount_fen.get())
            .bind(o.currency)
            .bind(o.method)
            .bind(o.description)
            .bind(now)
            .bind(o.change_kind)
            .bind(o.list_price_fen.get())
            .bind(o.credit_fen.get())
            .bind(o.from.map(|f| f.0))
            .bind(o.from.map(|f| f.1))
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
    Late(PaymentStatus),
    UnknownOrder,
    AmountMismatch {
        expected_fen: Fen,
        got_fen: Fen,
    },
}

/// A verified payment event from a provider.
pub struct PaidEvent<'a> {
    pub provider: &'a str,
    pub event_id: &'a str,
    pub order_no: &'a str,
    pub trade_no: &'a str,
    pub amount_fen: Fen,
}

impl Payments<'_> {
    pub async fn by_id(&self, id: &str) -> Result<Option<PaymentRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM payment_transactions WHERE id = $1");
        Ok(sqlx::query_as::<_, PaymentRow>(&sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await?)
    }

    pub async fn by_order_no(&self, order_no: &str) -> Result<Option<PaymentRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM payment_transactions WHERE order_no = $1");
        Ok(sqlx::query_as::<_, PaymentRow>(&sql)
            .bind(order_no)
            .fetch_optional(self.pool())
            .await?)
    }

    /// Payments newest first, of one user or (with `None`) of everyone.
    pub async fn list(
        &self,
        user_id: Option<&UserId>,
        status: Option<&str>,
        limit: i64,
    ) -> Result<Vec<PaymentRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM payment_transactions WHERE ($1 = '' OR user_id = $1) AND ($2 = '' OR status = $2) \
             ORDER BY created_at DESC, id DESC LIMIT $3"
        );
        Ok(sqlx::query_as::<_, PaymentRow>(&sql)
            .bind(user_id.map_or("", |u| u.as_str()))
            .bind(status.unwrap_or(""))
            .bind(limit)
            .fetch_all(self.pool())
            .await?)
    }

    /// Pending orders created before `before`, oldest first.
    pub async fn pending_before(
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
    /// here), moves the order pending -> completed (one way), and does to the user's
    /// subscriptions what `decide` says given them as they are inside the transaction (start
    /// the paid plan now, extend the running one, or schedule the paid one after it), resetting
    /// the quota when a plan starts now. Nothing is half-written: any failure rolls all of it
    /// back.
    pub async fn complete(
        &self,
        ev: &PaidEvent<'_>,
        plan: &super::Plan,
        quota_types: &[String],
        decide: impl FnOnce(&PaidContext<'_>) -> (PeriodEffect, Fen),
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
            // Each order is paid through the method it was made for: a notification from
            // another provider (or the sandbox) is not this order's payment.
            Some(o) if o.payment_method != ev.provider => (
                PaidOutcome::UnknownOrder,
                format!(
                    "the order is paid through {}, not {}",
                    o.payment_method, ev.provider
                ),
            ),
            Some(o) if o.amount_fen != ev.amount_fen => (
                PaidOutcome::AmountMismatch {
                    expected_fen: o.amount_fen,
                    got_fen: ev.amount_fen,
                },
                format!(
                    "amount {} fen, order {} fen",
                    ev.amount_fen.get(),
                    o.amount_fen.get()
                ),
            ),
            Some(o) if o.status != PaymentStatus::Pending => (
                PaidOutcome::Late(o.status),
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
        lock_user(&mut tx, &order.user_id).await?;
        let sub_cols = super::subscriptions::COLUMNS;
        let running = sqlx::query_as::<_, SubscriptionRow>(&format!(
            "SELECT {sub_cols} FROM user_subscriptions WHERE user_id = $1 AND status IN ('active', 'cancelled') \
             ORDER BY created_at DESC LIMIT 1"
        ))
        .bind(order.user_id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let running_price: Option<i64> = match &running {
            Some(r) => {
                sqlx::query_scalar("SELECT price_fen FROM subscription_plans WHERE id = $1")
                    .bind(&r.plan_id)
                    .fetch_optional(&mut *tx)
                    .await?
            }
            None => None,
        };
        let last_scheduled_end: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(current_period_end) FROM user_subscriptions WHERE user_id = $1 AND status = 'scheduled'",
        )
        .bind(order.user_id.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let (effect, value) = decide(&PaidContext {
            order: &order,
            running: running.as_ref(),
            running_plan_price_fen: Fen::new(running_price.unwrap_or(0)),
            last_scheduled_end,
            now,
        });
        let value = value.get();
        // The subscription the order's plan lives in: the pending one made with the order, or
        // a new one when the order named the running subscription (a renewal whose quote no
        // longer holds).
        let own_pending = match &order.subscription_id {
            Some(id) => {
                sqlx::query_scalar::<_, String>(
                    "SELECT id FROM user_subscriptions WHERE id = $1 AND status = 'pending'",
                )
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
            }
            None => None,
        };
        let (sub_id, span) = match effect {
            PeriodEffect::Extend { end, anchor } => {
                let cur = running
                    .as_ref()
                    .expect("an extension has a running subscription");
                sqlx::query(
                    "UPDATE user_subscriptions SET current_period_end = $2, status = 'active', auto_renew = 1, \
                     paid_value_fen = paid_value_fen + $3, updated_at = $4, cycle_anchor = COALESCE($5, cycle_anchor) WHERE id = $1",
                )
                .bind(&cur.id)
                .bind(end)
                .bind(value)
                .bind(now)
                .bind(anchor)
                .execute(&mut *tx)
                .await?;
                if let Some(p) = &own_pending {
                    expire_pending(&mut tx, p, now).await?;
                }
                (cur.id.clone(), (cur.current_period_end.unwrap_or(now), end))
            }
            PeriodEffect::StartNow { end, cycle_end } => {
                sqlx::query(
                    "UPDATE user_subscriptions SET status = 'expired', auto_renew = 0, updated_at = $2, \
                     current_period_end = CASE WHEN current_period_end > $2 THEN $2 ELSE current_period_end END \
                     WHERE user_id = $1 AND status IN ('active', 'cancelled')",
                )
                .bind(order.user_id.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let id = place(
                    &mut tx,
                    &order,
                    own_pending.as_deref(),
                    "active",
                    (now, end),
                    value,
                    now,
                )
                .await?;
                super::subscriptions::reset_balances(
                    &mut tx,
                    &order.user_id,
                    plan,
                    quota_types,
                    (now, cycle_end),
                    now,
                    None,
                )
                .await?;
                (id, (now, end))
            }
            PeriodEffect::Schedule { start, end } => {
                let id = place(
                    &mut tx,
                    &order,
                    own_pending.as_deref(),
                    "scheduled",
                    (start, end),
                    value,
                    now,
                )
                .await?;
                (id, (start, end))
            }
        };
        sqlx::query(
            "UPDATE payment_transactions SET subscription_id = $2, effect_start = $3, effect_end = $4 WHERE id = $1",
        )
        .bind(&order.id)
        .bind(&sub_id)
        .bind(span.0)
        .bind(span.1)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(PaidOutcome::Applied)
    }

    /// Closes a pending order (expired or abandoned); false if it was no longer pending.
    pub async fn close(&self, id: &str) -> Result<bool, StoreError> {
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
    /// beyond what was paid. Returns the order after it and whether this refund was new, or
    /// None when it would exceed the total.
    ///
    /// A new refund also takes back, in the same transaction, what it paid for
    /// ([`super::subscriptions::take_back`]): its share of the credit basis always, and time
    /// when the order is refunded whole, or for every refund when `partial_shortens`.
    #[allow(clippy::too_many_arguments)]
    pub async fn add_refund(
        &self,
        id: &str,
        refund_no: &str,
        amount_fen: Fen,
        reason: &str,
        partial_shortens: bool,
        at_provider: (&str, RefundStatus),
    ) -> Result<Option<(PaymentRow, bool)>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let fresh = sqlx::query(
            "INSERT INTO webhook_events (id, provider, event_id, order_no, outcome, detail, received_at) \
             VALUES ($1, 'refund', $2, $3, 'applied', $4, $5) ON CONFLICT (provider, event_id) DO NOTHING",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(refund_no)
        .bind(id)
        .bind(format!("{} fen: {reason}", amount_fen.get()))
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
            .bind(amount_fen.get())
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                return Ok(None);
            }
            let now = now_ms();
            sqlx::query(
                "INSERT INTO payment_refunds (payment_id, refund_no, amount_fen, status, detail, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (payment_id, refund_no) DO NOTHING",
            )
            .bind(id)
            .bind(at_provider.0)
            .bind(amount_fen.get())
            .bind(at_provider.1.as_str())
            .bind(reason)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let row = sqlx::query_as::<_, PaymentRow>(&format!(
            "SELECT {COLUMNS} FROM payment_transactions WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(order) = row.as_ref().filter(|_| fresh) {
            lock_user(&mut tx, &order.user_id).await?;
            let whole = order.status == PaymentStatus::Refunded;
            let time = if partial_shortens {
                Some((amount_fen.get(), order.amount_fen.get()))
            } else {
                whole.then_some((order.amount_fen.get(), order.amount_fen.get()))
            };
            let t = super::subscriptions::TakeBack {
                refunded_fen: amount_fen.get(),
                paid_fen: order.amount_fen.get(),
                whole,
                time,
            };
            super::subscriptions::take_back(&mut tx, order, &t, now_ms()).await?;
        }
        tx.commit().await?;
        Ok(row.map(|r| (r, fresh)))
    }
}

/// Takes the user's row lock for the rest of the transaction: two payments (or a payment and a
/// refund) of one user that read the subscriptions and write absolute periods from them run one
/// after the other on PostgreSQL (SQLite's write lock already does this).
pub(super) async fn lock_user(
    conn: &mut sqlx::AnyConnection,
    user_id: &UserId,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE users SET updated_at = updated_at WHERE id = $1")
        .bind(user_id.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Marks the pending subscription made with an order as not needed (the payment extended the
/// running one instead).
async fn expire_pending(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE user_subscriptions SET status = 'expired', updated_at = $2 WHERE id = $1 AND status = 'pending'")
        .bind(id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Puts the order's plan in place with `status` for `span`: in its pending subscription, or a
/// new one. Returns the subscription's id.
async fn place(
    conn: &mut sqlx::AnyConnection,
    order: &PaymentRow,
    pending: Option<&str>,
    status: &str,
    span: (i64, i64),
    value_fen: i64,
    now: i64,
) -> Result<String, StoreError> {
    if let Some(id) = pending {
        sqlx::query(
            "UPDATE user_subscriptions SET status = $2, plan_id = $3, current_period_start = $4, current_period_end = $5, \
             auto_renew = 1, paid_value_fen = $6, updated_at = $7 WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .bind(&order.plan_id)
        .bind(span.0)
        .bind(span.1)
        .bind(value_fen)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        return Ok(id.to_string());
    }
    let id = uuid::Uuid::new_v4().to_string();
    sqlx::query(&format!(
        "INSERT INTO user_subscriptions ({}) VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7, $8, NULL)",
        super::subscriptions::COLUMNS
    ))
    .bind(&id)
    .bind(order.user_id.as_str())
    .bind(&order.plan_id)
    .bind(status)
    .bind(span.0)
    .bind(span.1)
    .bind(now)
    .bind(value_fen)
    .execute(&mut *conn)
    .await?;
    Ok(id)
}

/// One refund of a payment and where it stands at the provider.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefundRow {
    pub payment_id: String,
    pub refund_no: String,
    #[sqlx(try_from = "i64")]
    pub amount_fen: Fen,
    #[sqlx(try_from = "String")]
    pub status: RefundStatus,
    pub detail: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Payments<'_> {
    /// The refunds of a payment, oldest first.
    pub async fn refunds_of(&self, payment_id: &str) -> Result<Vec<RefundRow>, StoreError> {
        Ok(sqlx::query_as::<_, RefundRow>(
            "SELECT payment_id, refund_no, amount_fen, status, detail, created_at, updated_at \
             FROM payment_refunds WHERE payment_id = $1 ORDER BY created_at, refund_no",
        )
        .bind(payment_id)
        .fetch_all(self.pool())
        .await?)
    }

    /// Records what a provider's refund notice says of the refund `refund_no` of the order
    /// `order_no`: its state, and its amount when the gate did not make it (a refund from the
    /// provider's own console). Returns false for an order the gate does not know. A notice
    /// never takes a refund back from a final state to `requested`.
    pub async fn record_refund_notice(
        &self,
        order_no: &str,
        refund_no: &str,
        amount_fen: Fen,
        status: RefundStatus,
        detail: &str,
    ) -> Result<bool, StoreError> {
        let Some(order) = self.by_order_no(order_no).await? else {
            return Ok(false);
        };
        let now = now_ms();
        sqlx::query(
            "INSERT INTO payment_refunds (payment_id, refund_no, amount_fen, status, detail, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) \
             ON CONFLICT (payment_id, refund_no) DO UPDATE SET status = excluded.status, \
             detail = excluded.detail, updated_at = excluded.updated_at \
             WHERE excluded.status <> 'requested'",
        )
        .bind(&order.id)
        .bind(refund_no)
        .bind(amount_fen.get())
        .bind(status.as_str())
        .bind(detail)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(true)
    }
}
