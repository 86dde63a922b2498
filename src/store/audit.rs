//! The audit log: who (a superuser) did what to whom, for every administrative action.

use super::{StoreError, now_ms};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub id: String,
    pub actor_id: Option<String>,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub created_at: i64,
}

repository!(
    /// The admin audit trail and the admin's searches and grants.
    Audit, audit_trail
);

impl Audit<'_> {
    pub async fn record(
        &self,
        actor_id: Option<&str>,
        action: &str,
        target: &str,
        detail: serde_json::Value,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO audit_log (id, actor_id, action, target, detail, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(actor_id)
            .bind(action)
            .bind(target)
            .bind(detail.to_string())
            .bind(now_ms())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn log(
        &self,
        action: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        Ok(sqlx::query_as::<_, AuditRow>(
            "SELECT id, actor_id, action, target, detail, created_at FROM audit_log WHERE ($1 = '' OR action = $1) \
             ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3",
        )
        .bind(action.unwrap_or(""))
        .bind(limit)
        .bind(offset)
        .fetch_all(self.pool())
        .await?)
    }

    /// Users whose email or username contains `q` (case-insensitive), newest first.
    pub async fn search_users(
        &self,
        q: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<super::UserRow>, StoreError> {
        let pattern = format!("%{}%", q.to_lowercase().replace(['\\', '%', '_'], ""));
        Ok(sqlx::query_as::<_, super::UserRow>(
            "SELECT id, email, username, hashed_password, is_active, is_superuser, email_verified, created_at, updated_at \
             FROM users WHERE LOWER(email) LIKE $1 OR LOWER(username) LIKE $1 ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3",
        )
        .bind(pattern)
        .bind(limit)
        .bind(offset)
        .fetch_all(self.pool())
        .await?)
    }

    /// Adds `amount` units to a limit (a grant); unlimited stays unlimited.
    pub async fn grant_quota(
        &self,
        user_id: &str,
        quota_type: &str,
        amount: i64,
    ) -> Result<Option<super::BalanceRow>, StoreError> {
        Ok(sqlx::query_as::<_, super::BalanceRow>(
            "UPDATE quota_balances SET limit_amount = CASE WHEN limit_amount < 0 THEN limit_amount ELSE limit_amount + $3 END, \
             updated_at = $4 WHERE user_id = $1 AND quota_type = $2 \
             RETURNING user_id, quota_type, limit_amount, used_amount, period_start, period_end, updated_at",
        )
        .bind(user_id)
        .bind(quota_type)
        .bind(amount)
        .bind(now_ms())
        .fetch_optional(self.pool())
        .await?)
    }
}
