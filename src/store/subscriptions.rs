//! Subscriptions and the start of a billing period: the subscription row and every quota
//! balance of the user change in one transaction, guarded so that two requests that both see
//! an ended period roll it over once.

use super::columns::{Flag, SubscriptionStatus};
use super::plans::Plan;
use super::{StoreError, now_ms};
use crate::formats::ids::UserId;
use crate::formats::money::Fen;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SubscriptionRow {
    pub id: String,
    #[sqlx(try_from = "String")]
    pub user_id: UserId,
    pub plan_id: String,
    #[sqlx(try_from = "String")]
    pub status: SubscriptionStatus,
    pub current_period_start: Option<i64>,
    pub current_period_end: Option<i64>,
    #[sqlx(try_from = "Flag")]
    pub auto_renew: bool,
    pub created_at: i64,
    pub updated_at: i64,
    /// The list value of the paid span (`billing::changes`); 0 when no one paid for it.
    #[sqlx(try_from = "i64")]
    pub paid_value_fen: Fen,
    /// Where its quota cycles count from, when not from `current_period_start`.
    pub cycle_anchor: Option<i64>,
}

/// How a new period begins.
pub enum PeriodStart<'a> {
    /// The user has no current subscription: start one.
    First,
    /// Extend `current` on the same plan.
    Renew(&'a SubscriptionRow),
    /// End `current` (expired) and start a new subscription.
    Replace(&'a SubscriptionRow),
    /// End `current` (if any) and activate `scheduled`, a change paid for to begin now.
    Activate {
        current: Option<&'a SubscriptionRow>,
        scheduled: &'a SubscriptionRow,
    },
}

/// What a verified payment does to the user's subscriptions (decided by `billing::changes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodEffect {
    /// End the running subscription now and activate the order's plan for [now, `end`), its
    /// first quota cycle ending at `cycle_end`.
    StartNow { end: i64, cycle_end: i64 },
    /// Move the running subscription's end to `end` (a renewal); its quota cycles go on,
    /// counted from `anchor` when that moves (a prorated span renewed).
    Extend { end: i64, anchor: Option<i64> },
    /// The order's plan begins at `start` (when what is paid for before it ends).
    Schedule { start: i64, end: i64 },
}

/// What the store knows, inside the payment's transaction, when it asks what a payment does.
pub struct PaidContext<'a> {
    pub order: &'a super::PaymentRow,
    /// The current subscription (active or cancelled), ended or not.
    pub running: Option<&'a SubscriptionRow>,
    /// The price of its plan: 0 for the free plan.
    pub running_plan_price_fen: Fen,
    /// The end of the last change already scheduled, if any.
    pub last_scheduled_end: Option<i64>,
    pub now: i64,
}

pub(super) const COLUMNS: &str = "id, user_id, plan_id, status, current_period_start, current_period_end, auto_renew, created_at, updated_at, paid_value_fen, cycle_anchor";

repository!(
    /// Subscriptions and the periods they begin.
    Subscriptions, subscriptions
);

impl Subscriptions<'_> {
    pub async fn by_id(&self, id: &str) -> Result<Option<SubscriptionRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM user_subscriptions WHERE id = $1");
        Ok(sqlx::query_as::<_, SubscriptionRow>(&sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await?)
    }

    /// The running subscription (active, or cancelled but not yet ended).
    pub async fn current(&self, user_id: &UserId) -> Result<Option<SubscriptionRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM user_subscriptions WHERE user_id = $1 AND status IN ('active', 'cancelled') \
             ORDER BY created_at DESC LIMIT 1"
        );
        Ok(sqlx::query_as::<_, SubscriptionRow>(&sql)
            .bind(user_id.as_str())
            .fetch_optional(self.pool())
            .await?)
    }

    pub async fn of_user(&self, user_id: &UserId) -> Result<Vec<SubscriptionRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM user_subscriptions WHERE user_id = $1 ORDER BY created_at DESC, id DESC"
        );
        Ok(sqlx::query_as::<_, SubscriptionRow>(&sql)
            .bind(user_id.as_str())
            .fetch_all(self.pool())
            .await?)
    }

    /// Changes paid for that begin later, earliest first.
    pub async fn scheduled(&self, user_id: &UserId) -> Result<Vec<SubscriptionRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM user_subscriptions WHERE user_id = $1 AND status = 'scheduled' \
             ORDER BY current_period_start, created_at"
        );
        Ok(sqlx::query_as::<_, SubscriptionRow>(&sql)
            .bind(user_id.as_str())
            .fetch_all(self.pool())
            .await?)
    }

    /// A subscription waiting for its payment.
    pub async fn create_pending(
        &self,
        user_id: &UserId,
        plan_id: &str,
    ) -> Result<SubscriptionRow, StoreError> {
        let now = now_ms();
        let sql = format!(
            "INSERT INTO user_subscriptions ({COLUMNS}) VALUES ($1, $2, $3, 'pending', NULL, NULL, 1, $4, $4, 0, NULL) RETURNING {COLUMNS}"
        );
        Ok(sqlx::query_as::<_, SubscriptionRow>(&sql)
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(user_id.as_str())
            .bind(plan_id)
            .bind(now)
            .fetch_one(self.pool())
            .await?)
    }

    pub async fn cancel(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE user_subscriptions SET status = 'cancelled', auto_renew = 0, updated_at = $2 WHERE id = $1 AND status = 'active'",
        )
        .bind(id)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Begins a subscription's span [`span.0`, `span.1`) on `plan` and resets every quota
    /// balance of the user to its first cycle `cycle`, in one transaction. Returns false when
    /// another request already did (nothing changed).
    pub async fn begin_period(
        &self,
        user_id: &UserId,
        how: PeriodStart<'_>,
        plan: &Plan,
        quota_types: &[String],
        span: (i64, i64),
        cycle: (i64, i64),
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let (start, end) = span;
        let mut tx = self.pool().begin().await?;
        let (renew, replace, scheduled) = match how {
            PeriodStart::First => (None, None, None),
            PeriodStart::Renew(c) => (Some(c), None, None),
            PeriodStart::Replace(c) => (None, Some(c), None),
            PeriodStart::Activate { current, scheduled } => (None, current, Some(scheduled)),
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
            .bind(cur.current_period_end.unwrap_or(0))
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                return Ok(false);
            }
        } else {
            if let Some(cur) = replace {
                // A running period that is replaced before its end (a scheduled change after
                // a refund) ends now in the history.
                let done = sqlx::query(
                    "UPDATE user_subscriptions SET status = 'expired', auto_renew = 0, updated_at = $2, \
                     current_period_end = CASE WHEN current_period_end > $2 THEN $2 ELSE current_period_end END \
                     WHERE id = $1 AND COALESCE(current_period_end, 0) = $3 AND status IN ('active', 'cancelled')",
                )
                .bind(&cur.id)
                .bind(now)
                .bind(cur.current_period_end.unwrap_or(0))
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
            }
            let started = match scheduled {
                Some(s) => sqlx::query(
                    "UPDATE user_subscriptions SET status = 'active', updated_at = $2 WHERE id = $1 AND status = 'scheduled'",
                )
                .bind(&s.id)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map(|d| d.rows_affected() > 0),
                None => sqlx::query(&format!(
                    "INSERT INTO user_subscriptions ({COLUMNS}) VALUES ($1, $2, $3, 'active', $4, $5, 1, $6, $6, 0, NULL)"
                ))
                .bind(uuid::Uuid::new_v4().to_string())
                .bind(user_id.as_str())
                .bind(&plan.row.id)
                .bind(start)
                .bind(end)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map(|_| true),
            };
            match started {
                Ok(true) => {}
                Ok(false) => return Ok(false),
                // Another request started this user's period at the same moment.
                Err(sqlx::Error::Database(db)) if db.is_unique_violation() => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
        reset_balances(&mut tx, user_id, plan, quota_types, cycle, now, None).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Starts the quota cycle [`cycle.0`, `cycle.1`) of a running subscription: every balance
    /// whose cycle has ended (or that is missing) is reset to `plan`. Balances still in a cycle
    /// are left alone, so two requests that see the boundary at once reset it once.
    pub async fn new_quota_cycle(
        &self,
        user_id: &UserId,
        plan: &Plan,
        quota_types: &[String],
        cycle: (i64, i64),
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        reset_balances(&mut tx, user_id, plan, quota_types, cycle, now, Some(now)).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// What a refund takes back from the subscription an order paid for.
pub struct TakeBack {
    /// This refund in fen, and what the order was paid.
    pub refunded_fen: i64,
    pub paid_fen: i64,
    /// The order is now refunded whole.
    pub whole: bool,
    /// Take back time too: the refund's share of the span the order bought (all of what is
    /// left of it when `whole` and no earlier refund took time).
    pub time: Option<(i64, i64)>,
}

/// Applies a refund to the subscription `order` paid for, inside the refund's transaction:
/// the credit basis (`paid_value_fen`) always loses the refund's share of the list value, so
/// refunded money is never credited on an upgrade; with `time`, a running subscription ends
/// that much earlier (never before now) and the user's quota cycle with it, and a change not
/// yet begun is cancelled when the order is refunded whole. Orders from before spans were
/// recorded end their subscription now when refunded whole.
pub(super) async fn take_back(
    conn: &mut sqlx::AnyConnection,
    order: &super::PaymentRow,
    t: &TakeBack,
    now: i64,
) -> Result<(), StoreError> {
    let Some(sub_id) = &order.subscription_id else {
        return Ok(());
    };
    let sub = sqlx::query_as::<_, SubscriptionRow>(&format!(
        "SELECT {COLUMNS} FROM user_subscriptions WHERE id = $1"
    ))
    .bind(sub_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(sub) = sub else {
        return Ok(());
    };
    let share = |whole_of: i64| -> i64 {
        (whole_of as i128 * t.refunded_fen.clamp(0, t.paid_fen.max(0)) as i128
            / t.paid_fen.max(1) as i128) as i64
    };
    let value_cut = share(order.list_price_fen.get());
    sqlx::query(
        "UPDATE user_subscriptions SET paid_value_fen = CASE WHEN paid_value_fen > $2 THEN paid_value_fen - $2 ELSE 0 END, \
         updated_at = $3 WHERE id = $1",
    )
    .bind(&sub.id)
    .bind(value_cut)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let Some((refunded, paid)) = t.time else {
        return Ok(());
    };
    let len = match (order.effect_start, order.effect_end) {
        (Some(s), Some(e)) => e - s,
        _ if t.whole => i64::MAX / 4,
        _ => 0,
    };
    let cut = (len as i128 * refunded.clamp(0, paid.max(0)) as i128 / paid.max(1) as i128) as i64;
    if cut <= 0 && !t.whole {
        return Ok(());
    }
    let end = sub.current_period_end.unwrap_or(now);
    let new_end = end.saturating_sub(cut);
    if sub.status == SubscriptionStatus::Scheduled {
        let start = sub.current_period_start.unwrap_or(end);
        let (status, new_end) = if t.whole || new_end <= start {
            ("expired", end)
        } else {
            ("scheduled", new_end)
        };
        sqlx::query("UPDATE user_subscriptions SET status = $2, current_period_end = $3, updated_at = $4 WHERE id = $1")
            .bind(&sub.id)
            .bind(status)
            .bind(new_end)
            .bind(now)
            .execute(&mut *conn)
            .await?;
    } else if matches!(sub.status.as_str(), "active" | "cancelled") && end > now {
        let new_end = new_end.max(now);
        sqlx::query(
            "UPDATE user_subscriptions SET current_period_end = $2, auto_renew = 0, updated_at = $3 WHERE id = $1",
        )
        .bind(&sub.id)
        .bind(new_end)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "UPDATE quota_balances SET period_end = $2, updated_at = $3 WHERE user_id = $1 AND period_end > $2",
        )
        .bind(sub.user_id.as_str())
        .bind(new_end)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Sets every balance of the user to `plan`'s limits for `cycle`, used reset to 0; with
/// `only_ended_by`, only balances whose cycle ended by then (and missing ones).
pub(super) async fn reset_balances(
    conn: &mut sqlx::AnyConnection,
    user_id: &UserId,
    plan: &Plan,
    quota_types: &[String],
    cycle: (i64, i64),
    now: i64,
    only_ended_by: Option<i64>,
) -> Result<(), StoreError> {
    let guard = if only_ended_by.is_some() {
        " WHERE quota_balances.period_end <= $7"
    } else {
        ""
    };
    let sql = format!(
        "INSERT INTO quota_balances (user_id, quota_type, limit_amount, used_amount, period_start, period_end, updated_at) \
         VALUES ($1, $2, $3, 0, $4, $5, $6) \
         ON CONFLICT (user_id, quota_type) DO UPDATE SET limit_amount = excluded.limit_amount, \
         used_amount = 0, period_start = excluded.period_start, period_end = excluded.period_end, \
         updated_at = excluded.updated_at{guard}"
    );
    for t in quota_types {
        let mut q = sqlx::query(&sql)
            .bind(user_id.as_str())
            .bind(t)
            .bind(plan.limit_of(t))
            .bind(cycle.0)
            .bind(cycle.1)
            .bind(now);
        if let Some(by) = only_ended_by {
            q = q.bind(by);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}
