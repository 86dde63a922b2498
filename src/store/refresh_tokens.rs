//! Refresh tokens: one row per issued token (hashed), grouped in families that share a login.
//! Rotation marks a token as exchanged; presenting an exchanged token again outside the grace
//! window means it was stolen, and the whole family is revoked.

use super::{StoreError, now_ms};
use crate::formats::ids::UserId;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefreshRow {
    pub id: String,
    pub user_id: String,
    pub family_id: String,
    pub token_hash: String,
    pub issued_at: i64,
    pub expires_at: i64,
    pub rotated_at: Option<i64>,
    pub replaced_by: Option<String>,
    pub revoked_at: Option<i64>,
}

/// What happened when a refresh token was presented for rotation.
#[derive(Debug)]
pub enum Rotation {
    /// First use: it is now marked as rotated.
    Rotated(RefreshRow),
    /// Already rotated (or revoked, or unknown): the row as it is, if any.
    NotRotated(Option<RefreshRow>),
}

const COLUMNS: &str = "id, user_id, family_id, token_hash, issued_at, expires_at, rotated_at, replaced_by, revoked_at";

repository!(
    /// Refresh tokens: hashed, in families, rotated once.
    RefreshTokens, refresh_tokens
);

impl RefreshTokens<'_> {
    pub async fn insert(
        &self,
        id: &str,
        user_id: &UserId,
        family_id: &str,
        token_hash: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, issued_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(user_id.as_str())
        .bind(family_id)
        .bind(token_hash)
        .bind(now_ms())
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Marks the token as rotated, in one conditional statement, so two concurrent refreshes
    /// cannot both be the first.
    pub async fn rotate(
        &self,
        id: &str,
        token_hash: &str,
        successor: &str,
    ) -> Result<Rotation, StoreError> {
        let sql = format!(
            "UPDATE refresh_tokens SET rotated_at = $3, replaced_by = $4 \
             WHERE id = $1 AND token_hash = $2 AND rotated_at IS NULL AND revoked_at IS NULL \
             RETURNING {COLUMNS}"
        );
        let row = sqlx::query_as::<_, RefreshRow>(&sql)
            .bind(id)
            .bind(token_hash)
            .bind(now_ms())
            .bind(successor)
            .fetch_optional(self.pool())
            .await?;
        if let Some(row) = row {
            return Ok(Rotation::Rotated(row));
        }
        let sql = format!("SELECT {COLUMNS} FROM refresh_tokens WHERE id = $1 AND token_hash = $2");
        let row = sqlx::query_as::<_, RefreshRow>(&sql)
            .bind(id)
            .bind(token_hash)
            .fetch_optional(self.pool())
            .await?;
        Ok(Rotation::NotRotated(row))
    }

    pub async fn revoke_family(&self, family_id: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL",
        )
        .bind(family_id)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    pub async fn revoke_all_of(&self, user_id: &UserId) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
        )
        .bind(user_id.as_str())
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// Whether the token `id` has been exchanged (or revoked) already.
    pub async fn rotated(&self, id: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM refresh_tokens WHERE id = $1 AND (rotated_at IS NOT NULL OR revoked_at IS NOT NULL)",
        )
        .bind(id)
        .fetch_one(self.pool())
        .await?;
        Ok(n > 0)
    }

    pub async fn family_revoked(&self, family_id: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM refresh_tokens WHERE family_id = $1 AND revoked_at IS NOT NULL",
        )
        .bind(family_id)
        .fetch_one(self.pool())
        .await?;
        Ok(n > 0)
    }
}
