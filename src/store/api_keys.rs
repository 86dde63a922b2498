//! API keys as stored: a keyed hash of the whole key and a short display prefix, never the key.

use super::columns::Flag;
use super::{StoreError, now_ms};
use crate::formats::ids::UserId;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: String,
    #[sqlx(try_from = "String")]
    pub user_id: UserId,
    pub key_prefix: String,
    pub key_hash: String,
    pub name: String,
    #[sqlx(try_from = "Flag")]
    pub is_active: bool,
    pub last_used_at: Option<i64>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

pub struct NewApiKey {
    pub user_id: UserId,
    pub key_prefix: String,
    pub key_hash: String,
    pub name: String,
    pub expires_at: Option<i64>,
}

const COLUMNS: &str =
    "id, user_id, key_prefix, key_hash, name, is_active, last_used_at, created_at, expires_at";

repository!(
    /// API keys: hashes and prefixes, never a key.
    ApiKeys, keys
);

impl ApiKeys<'_> {
    pub async fn create(&self, new: NewApiKey) -> Result<ApiKeyRow, StoreError> {
        let sql = format!(
            "INSERT INTO api_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, 1, NULL, $6, $7) RETURNING {COLUMNS}"
        );
        Ok(sqlx::query_as::<_, ApiKeyRow>(&sql)
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(new.user_id.as_str())
            .bind(&new.key_prefix)
            .bind(&new.key_hash)
            .bind(&new.name)
            .bind(now_ms())
            .bind(new.expires_at)
            .fetch_one(self.pool())
            .await?)
    }

    /// The user's keys, newest first.
    pub async fn of_user(&self, user_id: &UserId) -> Result<Vec<ApiKeyRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM api_keys WHERE user_id = $1 ORDER BY created_at DESC, id DESC"
        );
        Ok(sqlx::query_as::<_, ApiKeyRow>(&sql)
            .bind(user_id.as_str())
            .fetch_all(self.pool())
            .await?)
    }

    pub async fn by_hash(&self, hash: &str) -> Result<Option<ApiKeyRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE key_hash = $1");
        Ok(sqlx::query_as::<_, ApiKeyRow>(&sql)
            .bind(hash)
            .fetch_optional(self.pool())
            .await?)
    }

    /// Deletes the key if it belongs to `user_id`; returns it (for cache invalidation).
    pub async fn delete(
        &self,
        user_id: &UserId,
        id: &str,
    ) -> Result<Option<ApiKeyRow>, StoreError> {
        let sql =
            format!("DELETE FROM api_keys WHERE id = $1 AND user_id = $2 RETURNING {COLUMNS}");
        Ok(sqlx::query_as::<_, ApiKeyRow>(&sql)
            .bind(id)
            .bind(user_id.as_str())
            .fetch_optional(self.pool())
            .await?)
    }

    pub async fn deactivate(
        &self,
        user_id: &UserId,
        id: &str,
    ) -> Result<Option<ApiKeyRow>, StoreError> {
        let sql = format!(
            "UPDATE api_keys SET is_active = 0 WHERE id = $1 AND user_id = $2 RETURNING {COLUMNS}"
        );
        Ok(sqlx::query_as::<_, ApiKeyRow>(&sql)
            .bind(id)
            .bind(user_id.as_str())
            .fetch_optional(self.pool())
            .await?)
    }

    /// Hashes of every key of a user (to drop them from caches when the user changes).
    pub async fn hashes_of(&self, user_id: &UserId) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT key_hash FROM api_keys WHERE user_id = $1")
                .bind(user_id.as_str())
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// Records when keys were last used, batched (the hot path never writes).
    pub async fn touch(&self, uses: &[(String, i64)]) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        for (id, at) in uses {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
            )
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
