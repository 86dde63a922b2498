//! Email verification codes: one live code per email and purpose, stored as a keyed hash with
//! an expiry and a count of wrong attempts.

use super::{StoreError, now_ms};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CodeRow {
    pub email: String,
    pub purpose: String,
    pub code_hash: String,
    pub expires_at: i64,
    pub attempts: i64,
    pub verified_at: Option<i64>,
    pub created_at: i64,
}

const COLUMNS: &str = "email, purpose, code_hash, expires_at, attempts, verified_at, created_at";

repository!(
    /// Emailed verification codes, hashed, attempt-limited.
    Codes, codes
);

impl Codes<'_> {
    /// Replaces any earlier code for this email and purpose.
    pub async fn put(
        &self,
        email: &str,
        purpose: &str,
        code_hash: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        // No earlier code was made at or after the end of time: none of its attempts carry over.
        self.put_keeping_attempts(email, purpose, code_hash, expires_at, i64::MAX)
            .await
    }

    /// Replaces any earlier code for this email and purpose, keeping the wrong attempts the
    /// earlier one had used if it was made at or after `since`: a new code does not bring new
    /// guesses within that window.
    pub async fn put_keeping_attempts(
        &self,
        email: &str,
        purpose: &str,
        code_hash: &str,
        expires_at: i64,
        since: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        let carried: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(CASE WHEN created_at >= $3 THEN attempts ELSE 0 END), 0) \
             FROM email_verification_codes WHERE email = $1 AND purpose = $2",
        )
        .bind(email)
        .bind(purpose)
        .bind(since)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM email_verification_codes WHERE email = $1 AND purpose = $2")
            .bind(email)
            .bind(purpose)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO email_verification_codes (email, purpose, code_hash, expires_at, attempts, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(email)
        .bind(purpose)
        .bind(code_hash)
        .bind(expires_at)
        .bind(carried)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get(&self, email: &str, purpose: &str) -> Result<Option<CodeRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM email_verification_codes WHERE email = $1 AND purpose = $2"
        );
        Ok(sqlx::query_as::<_, CodeRow>(&sql)
            .bind(email)
            .bind(purpose)
            .fetch_optional(self.pool())
            .await?)
    }

    /// Takes one of the code's `max` attempts before it is compared, in one conditional
    /// statement: a concurrent burst of guesses gets at most `max` comparisons. `None` when
    /// there is no live code or its attempts are used up.
    pub async fn take_attempt(
        &self,
        email: &str,
        purpose: &str,
        max: i64,
        now: i64,
    ) -> Result<Option<CodeRow>, StoreError> {
        let sql = format!(
            "UPDATE email_verification_codes SET attempts = attempts + 1 \
             WHERE email = $1 AND purpose = $2 AND attempts < $3 AND expires_at > $4 RETURNING {COLUMNS}"
        );
        Ok(sqlx::query_as::<_, CodeRow>(&sql)
            .bind(email)
            .bind(purpose)
            .bind(max)
            .bind(now)
            .fetch_optional(self.pool())
            .await?)
    }

    pub async fn mark_verified(&self, email: &str, purpose: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE email_verification_codes SET verified_at = $3 WHERE email = $1 AND purpose = $2")
            .bind(email)
            .bind(purpose)
            .bind(now_ms())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn delete(&self, email: &str, purpose: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM email_verification_codes WHERE email = $1 AND purpose = $2")
            .bind(email)
            .bind(purpose)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
