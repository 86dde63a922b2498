//! The quota ledger: per-user balances and one usage row per charge.
//!
//! A reservation is ONE conditional statement (`used + cost <= limit` in the `WHERE`), with the
//! usage row written in the same transaction, so concurrent requests can never overspend and
//! every charge is counted exactly once (the row is keyed by the request id). Settling moves the
//! row from `reserved` to `committed` or `refunded`; a refund gives the units back in the same
//! transaction, only once, and only to the period the charge was made in.

use super::StoreError;
use crate::formats::ids::{QuotaKey, RequestId, UserId};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BalanceRow {
    pub user_id: String,
    pub quota_type: String,
    pub limit_amount: i64,
    pub used_amount: i64,
    pub period_start: i64,
    pub period_end: i64,
    pub updated_at: i64,
}

impl BalanceRow {
    /// Units left, or -1 when unlimited.
    pub fn remaining(&self) -> i64 {
        if self.limit_amount < 0 {
            -1
        } else {
            (self.limit_amount - self.used_amount).max(0)
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UsageRow {
    pub id: String,
    pub request_id: String,
    pub user_id: String,
    pub quota_type: String,
    pub amount: i64,
    pub endpoint: String,
    pub method: String,
    pub state: String,
    pub metadata: String,
    pub created_at: i64,
    pub settled_at: Option<i64>,
    /// Why a committed charge was given back (its task failed), when it was.
    pub refund_reason: Option<String>,
}

/// One charge to reserve.
#[derive(Clone, Copy)]
pub struct Charge<'a> {
    pub request_id: &'a RequestId,
    pub user_id: &'a UserId,
    pub quota_type: &'a QuotaKey,
    pub amount: i64,
    pub endpoint: &'a str,
    pub method: &'a str,
    pub metadata: &'a str,
}

/// Filters of a usage-log listing.
#[derive(Default)]
pub struct UsageQuery<'a> {
    pub user_id: Option<&'a UserId>,
    pub quota_type: Option<&'a str>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub limit: i64,
    pub offset: i64,
}

pub(super) const BALANCE: &str =
    "user_id, quota_type, limit_amount, used_amount, period_start, period_end, updated_at";
pub(super) const USAGE: &str = "id, request_id, user_id, quota_type, amount, endpoint, method, state, metadata, created_at, settled_at";

repository!(
    /// The quota ledger: balances, reservations, commits, refunds, usage rows.
    Ledger, ledger
);

impl Ledger<'_> {
    /// Reserves the charge if the balance allows it in the current period; returns the balance
    /// after the charge, or `None` (nothing written) when it does not. Concurrent reservations
    /// are written together (`reservations`).
    pub async fn reserve(
        &self,
        c: &Charge<'_>,
        now: i64,
    ) -> Result<Option<BalanceRow>, StoreError> {
        self.store.reservations.reserve(c, now).await
    }

    /// Makes a reserved charge final: queued and written in a batch with others (see
    /// `commits`); the balance does not change, it was taken by the reservation.
    pub fn commit(&self, request_id: RequestId, now: i64) {
        self.store.commits.commit(request_id, now, None);
    }

    /// Waits until every charge committed before this call is written.
    pub async fn flush(&self) {
        self.store.commits.flush().await;
    }

    /// Gives a reserved charge back; returns the balance after it (None if there was nothing
    /// to refund: already settled, or unknown).
    pub async fn refund(
        &self,
        request_id: &str,
        now: i64,
    ) -> Result<Option<BalanceRow>, StoreError> {
        refund_on(self.pool(), request_id, now).await
    }

    pub async fn balance(
        &self,
        user_id: &UserId,
        quota_type: &QuotaKey,
    ) -> Result<Option<BalanceRow>, StoreError> {
        Ok(sqlx::query_as::<_, BalanceRow>(&format!(
            "SELECT {BALANCE} FROM quota_balances WHERE user_id = $1 AND quota_type = $2"
        ))
        .bind(user_id.as_str())
        .bind(quota_type.as_str())
        .fetch_optional(self.pool())
        .await?)
    }

    pub async fn balances_of(&self, user_id: &UserId) -> Result<Vec<BalanceRow>, StoreError> {
        Ok(sqlx::query_as::<_, BalanceRow>(&format!(
            "SELECT {BALANCE} FROM quota_balances WHERE user_id = $1 ORDER BY quota_type"
        ))
        .bind(user_id.as_str())
        .fetch_all(self.pool())
        .await?)
    }

    /// Sets used to zero (one type, or all); returns how many balances changed.
    pub async fn reset_used(
        &self,
        user_id: &UserId,
        quota_type: Option<&str>,
        now: i64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE quota_balances SET used_amount = 0, updated_at = $3 WHERE user_id = $1 AND ($2 = '' OR quota_type = $2)",
        )
        .bind(user_id.as_str())
        .bind(quota_type.unwrap_or(""))
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// Sets a limit; refused (None) when it would be below what is already used.
    pub async fn set_limit(
        &self,
        user_id: &UserId,
        quota_type: &QuotaKey,
        limit: i64,
        now: i64,
    ) -> Result<Option<BalanceRow>, StoreError> {
        Ok(sqlx::query_as::<_, BalanceRow>(&format!(
            "UPDATE quota_balances SET limit_amount = $3, updated_at = $4 \
             WHERE user_id = $1 AND quota_type = $2 AND ($3 < 0 OR used_amount <= $3) RETURNING {BALANCE}"
        ))
        .bind(user_id.as_str())
        .bind(quota_type.as_str())
        .bind(limit)
        .bind(now)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Charges that stood, and those given back after they stood (with the reason), newest
    /// first. Charges refunded as they settled (the backend refused the work) are not usage.
    pub async fn usage(&self, q: &UsageQuery<'_>) -> Result<Vec<UsageRow>, StoreError> {
        self.flush().await;
        Ok(sqlx::query_as::<_, UsageRow>(&format!(
            "SELECT {USAGE}, refund_reason FROM usage_logs \
             WHERE (state = 'committed' OR refund_reason IS NOT NULL) \
             AND ($1 = '' OR user_id = $1) AND ($2 = '' OR quota_type = $2) \
             AND created_at >= $3 AND created_at < $4 \
             ORDER BY created_at DESC, id DESC LIMIT $5 OFFSET $6"
        ))
        .bind(q.user_id.map_or("", |u| u.as_str()))
        .bind(q.quota_type.unwrap_or(""))
        .bind(q.since.unwrap_or(0))
        .bind(q.until.unwrap_or(i64::MAX))
        .bind(q.limit)
        .bind(q.offset)
        .fetch_all(self.pool())
        .await?)
    }

    /// (user_id, amount, created_at) of committed charges of a type since `since`.
    pub async fn usage_since(
        &self,
        quota_type: &str,
        user_id: Option<&UserId>,
        since: i64,
    ) -> Result<Vec<(String, i64, i64)>, StoreError> {
        self.flush().await;
        Ok(sqlx::query_as(
            "SELECT user_id, amount, created_at FROM usage_logs WHERE state = 'committed' AND quota_type = $1 \
             AND ($2 = '' OR user_id = $2) AND created_at >= $3",
        )
        .bind(quota_type)
        .bind(user_id.map_or("", |u| u.as_str()))
        .bind(since)
        .fetch_all(self.pool())
        .await?)
    }

    /// (state, count, sum) of usage rows of a user and type, for tests and audits.
    pub async fn usage_summary(
        &self,
        user_id: &UserId,
        quota_type: &str,
    ) -> Result<Vec<(String, i64, i64)>, StoreError> {
        self.flush().await;
        Ok(sqlx::query_as(
            "SELECT state, COUNT(*), CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM usage_logs WHERE user_id = $1 AND quota_type = $2 GROUP BY state ORDER BY state",
        )
        .bind(user_id.as_str())
        .bind(quota_type)
        .fetch_all(self.pool())
        .await?)
    }

    /// Adds `amount` units to a limit (a grant); unlimited stays unlimited.
    pub async fn grant(
        &self,
        user_id: &UserId,
        quota_type: &str,
        amount: i64,
    ) -> Result<Option<BalanceRow>, StoreError> {
        Ok(sqlx::query_as::<_, BalanceRow>(
            "UPDATE quota_balances SET limit_amount = CASE WHEN limit_amount < 0 THEN limit_amount ELSE limit_amount + $3 END, \
             updated_at = $4 WHERE user_id = $1 AND quota_type = $2 \
             RETURNING user_id, quota_type, limit_amount, used_amount, period_start, period_end, updated_at",
        )
        .bind(user_id.as_str())
        .bind(quota_type)
        .bind(amount)
        .bind(super::now_ms())
        .fetch_optional(self.pool())
        .await?)
    }
}

/// Gives `amount` units back to the balance of the period a charge made at `created_at`
/// belongs to (none, when that period is over); the balance after it.
pub(super) async fn give_back(
    conn: &mut sqlx::AnyConnection,
    user_id: &str,
    quota_type: &str,
    amount: i64,
    created_at: i64,
    now: i64,
) -> Result<Option<BalanceRow>, StoreError> {
    Ok(sqlx::query_as::<_, BalanceRow>(&format!(
        "UPDATE quota_balances SET used_amount = CASE WHEN used_amount >= $3 THEN used_amount - $3 ELSE 0 END, \
         updated_at = $4 WHERE user_id = $1 AND quota_type = $2 AND period_start <= $5 AND period_end > $5 \
         RETURNING {BALANCE}"
    ))
    .bind(user_id)
    .bind(quota_type)
    .bind(amount)
    .bind(now)
    .bind(created_at)
    .fetch_optional(conn)
    .await?)
}

/// One reservation in its own transaction: the balance after it, or `None` (nothing written)
/// when it does not fit in the current period.
pub(super) async fn reserve_one(
    pool: &sqlx::AnyPool,
    backend: super::Backend,
    c: &Charge<'_>,
    now: i64,
) -> Result<Option<BalanceRow>, StoreError> {
    if backend == super::Backend::Postgres {
        // One statement, one round trip: the usage row is written only if the balance
        // allowed the charge (data-modifying CTEs run atomically in PostgreSQL).
        return Ok(sqlx::query_as::<_, BalanceRow>(&format!(
            "WITH b AS (UPDATE quota_balances SET used_amount = used_amount + $3, updated_at = $4 \
             WHERE user_id = $1 AND quota_type = $2 AND period_start <= $4 AND period_end > $4 \
             AND (limit_amount < 0 OR used_amount + $3 <= limit_amount) RETURNING {BALANCE}), \
             l AS (INSERT INTO usage_logs ({USAGE}) \
             SELECT $5, $6, user_id, quota_type, $3, $7, $8, 'reserved', $9, $4, NULL FROM b) \
             SELECT {BALANCE} FROM b"
        ))
        .bind(c.user_id.as_str())
        .bind(c.quota_type.as_str())
        .bind(c.amount)
        .bind(now)
        .bind(crate::formats::ids::time_ordered().to_string())
        .bind(c.request_id.as_str())
        .bind(c.endpoint)
        .bind(c.method)
        .bind(c.metadata)
        .fetch_optional(pool)
        .await?);
    }
    // SQLite has no data-modifying CTEs: the same two writes in one transaction.
    let mut tx = pool.begin().await?;
    let Some(row) = take_units(&mut tx, c.user_id, c.quota_type, c.amount, now).await? else {
        return Ok(None);
    };
    insert_reserved(&mut tx, &[(c, now)]).await?;
    tx.commit().await?;
    Ok(Some(row))
}

/// The conditional statement every charge comes down to: adds `amount` to the balance only if
/// it fits the limit in the current period; the balance after it, or `None` (nothing changed).
pub(super) async fn take_units(
    conn: &mut sqlx::AnyConnection,
    user_id: &UserId,
    quota_type: &str,
    amount: i64,
    now: i64,
) -> Result<Option<BalanceRow>, StoreError> {
    Ok(sqlx::query_as::<_, BalanceRow>(&format!(
        "UPDATE quota_balances SET used_amount = used_amount + $3, updated_at = $4 \
         WHERE user_id = $1 AND quota_type = $2 AND period_start <= $4 AND period_end > $4 \
         AND (limit_amount < 0 OR used_amount + $3 <= limit_amount) RETURNING {BALANCE}"
    ))
    .bind(user_id.as_str())
    .bind(quota_type)
    .bind(amount)
    .bind(now)
    .fetch_optional(conn)
    .await?)
}

/// Writes the usage rows of reserved charges (each with the time it was made) in one statement.
pub(super) async fn insert_reserved(
    conn: &mut sqlx::AnyConnection,
    charges: &[(&Charge<'_>, i64)],
) -> Result<(), StoreError> {
    if charges.is_empty() {
        return Ok(());
    }
    // Written out in one of a few sizes, the rows past the charges all NULL and skipped
    // (`marks::rows_for`); the VALUES' columns are column1.. in both databases. `settled_at` is
    // a typed NULL: a VALUES column of bare NULLs is text to PostgreSQL, which the bigint
    // column then refuses.
    let written = super::marks::rows_for(charges.len());
    let rows = (0..written)
        .map(|i| {
            let p: Vec<String> = (1..=9).map(|n| format!("${}", 9 * i + n)).collect();
            format!(
                "({}, 'reserved', {}, CAST(NULL AS BIGINT))",
                p[..7].join(", "),
                p[7..].join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let sql = super::marks::for_connection(
        format!(
            "INSERT INTO usage_logs ({USAGE}) SELECT * FROM (VALUES {rows}) AS v \
             WHERE v.column2 IS NOT NULL"
        ),
        conn,
    );
    let q = bind_usage_rows(
        sqlx::query(&sql),
        charges.iter().map(|(c, at)| (**c, *at)),
        written,
    );
    q.execute(conn).await?;
    Ok(())
}

/// `q` with a usage row bound for each charge (a new time-ordered id, the request id, user,
/// quota type, amount, endpoint, method, metadata and the charge's time: the nine columns of
/// the reservation statements' VALUES), then NULL rows up to `rows` in all.
pub(super) fn bind_usage_rows<'q, Q: super::marks::Binds<'q>>(
    mut q: Q,
    charges: impl Iterator<Item = (Charge<'q>, i64)>,
    rows: usize,
) -> Q {
    let mut n = 0;
    for (c, at) in charges {
        q = q
            .bind_owned(crate::formats::ids::time_ordered().to_string())
            .bind_text(c.request_id.as_str())
            .bind_text(c.user_id.as_str())
            .bind_text(c.quota_type.as_str())
            .bind_int(c.amount)
            .bind_text(c.endpoint)
            .bind_text(c.method)
            .bind_text(c.metadata)
            .bind_int(at);
        n += 1;
    }
    use super::marks::Null::{Int, Text};
    super::marks::pad(
        q,
        &[Text, Text, Text, Text, Int, Text, Text, Text, Int],
        rows - n,
    )
}

/// Gives a reserved charge back (the usage row, and its amount to the balance of the period it
/// was taken from), once: a row no longer `reserved` is left alone.
pub(super) async fn refund_on(
    pool: &sqlx::AnyPool,
    request_id: &str,
    now: i64,
) -> Result<Option<BalanceRow>, StoreError> {
    let mut tx = pool.begin().await?;
    let log: Option<(String, String, i64, i64)> = sqlx::query_as(
        "UPDATE usage_logs SET state = 'refunded', settled_at = $2 WHERE request_id = $1 AND state = 'reserved' \
         RETURNING user_id, quota_type, amount, created_at",
    )
    .bind(request_id)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((user_id, quota_type, amount, created_at)) = log else {
        return Ok(None);
    };
    let row = give_back(&mut tx, &user_id, &quota_type, amount, created_at, now).await?;
    tx.commit().await?;
    Ok(row)
}
