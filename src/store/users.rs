//! Users: accounts as stored (the password only as an argon2id hash).

use super::columns::{Flag, flag};
use super::{StoreError, now_ms};
use crate::formats::ids::UserId;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    #[sqlx(try_from = "String")]
    pub id: UserId,
    pub email: String,
    pub username: String,
    pub hashed_password: String,
    #[sqlx(try_from = "Flag")]
    pub is_active: bool,
    #[sqlx(try_from = "Flag")]
    pub is_superuser: bool,
    #[sqlx(try_from = "Flag")]
    pub email_verified: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

pub struct NewUser {
    pub email: String,
    pub username: String,
    pub hashed_password: String,
    pub is_superuser: bool,
    pub email_verified: bool,
}

/// Fields to change; `None` leaves a field as it is.
#[derive(Default)]
pub struct UserUpdate {
    pub email: Option<String>,
    pub username: Option<String>,
    pub hashed_password: Option<String>,
    pub is_active: Option<bool>,
}

/// What makes two usernames the same: their Unicode lower case (`USERA` is `usera`).
pub fn username_key(username: &str) -> String {
    username.to_lowercase()
}

const COLUMNS: &str = "id, email, username, hashed_password, is_active, is_superuser, email_verified, created_at, updated_at";

repository!(
    /// Accounts.
    Users, users
);

impl Users<'_> {
    /// Inserts a user. A taken email or username is a `Conflict` naming the column.
    pub async fn create(&self, new: NewUser) -> Result<UserRow, StoreError> {
        let now = now_ms();
        let id = uuid::Uuid::new_v4().to_string();
        let sql = format!(
            "INSERT INTO users ({COLUMNS}, username_key) VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $7, $8) RETURNING {COLUMNS}"
        );
        sqlx::query_as::<_, UserRow>(&sql)
            .bind(&id)
            .bind(&new.email)
            .bind(&new.username)
            .bind(&new.hashed_password)
            .bind(flag(new.is_superuser))
            .bind(flag(new.email_verified))
            .bind(now)
            .bind(username_key(&new.username))
            .fetch_one(self.pool())
            .await
            .map_err(StoreError::from)
    }

    pub async fn by_id(&self, id: &UserId) -> Result<Option<UserRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE id = $1");
        Ok(sqlx::query_as::<_, UserRow>(&sql)
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await?)
    }

    /// The user whose username or email is `login`, in any case.
    pub async fn by_login(&self, login: &str) -> Result<Option<UserRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE username_key = $1 OR email = $1");
        Ok(sqlx::query_as::<_, UserRow>(&sql)
            .bind(login.to_lowercase())
            .fetch_optional(self.pool())
            .await?)
    }

    pub async fn email_taken(&self, email: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE email = $1")
            .bind(email)
            .fetch_one(self.pool())
            .await?;
        Ok(n > 0)
    }

    pub async fn username_taken(&self, username: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE username_key = $1")
            .bind(username_key(username))
            .fetch_one(self.pool())
            .await?;
        Ok(n > 0)
    }

    /// Applies `update` and returns the user as it now is (`None` if there is no such user).
    pub async fn update(
        &self,
        id: &UserId,
        update: UserUpdate,
    ) -> Result<Option<UserRow>, StoreError> {
        let sql = format!(
            "UPDATE users SET email = COALESCE($2, email), username = COALESCE($3, username), \
             username_key = COALESCE($7, username_key), \
             hashed_password = COALESCE($4, hashed_password), is_active = COALESCE($5, is_active), \
             updated_at = $6 WHERE id = $1 RETURNING {COLUMNS}"
        );
        let key = update.username.as_deref().map(username_key);
        Ok(sqlx::query_as::<_, UserRow>(&sql)
            .bind(id.as_str())
            .bind(update.email)
            .bind(update.username)
            .bind(update.hashed_password)
            .bind(update.is_active.map(flag))
            .bind(now_ms())
            .bind(key)
            .fetch_optional(self.pool())
            .await?)
    }

    /// Marks the address verified, or (a changed address, where no code proves it) not.
    pub async fn set_email_verified(&self, id: &UserId, verified: bool) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET email_verified = $3, updated_at = $2 WHERE id = $1")
            .bind(id.as_str())
            .bind(now_ms())
            .bind(flag(verified))
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Makes an existing account an active superuser with this password (`create-admin` run
    /// again for an account that exists).
    pub async fn make_superuser(
        &self,
        id: &UserId,
        hashed_password: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE users SET is_superuser = 1, is_active = 1, hashed_password = $2, updated_at = $3 WHERE id = $1",
        )
        .bind(id.as_str())
        .bind(hashed_password)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Deletes a user and, by cascade, their keys, tokens, balances and usage.
    pub async fn delete(&self, id: &UserId) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id.as_str())
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Users whose email or username contains `q` (case-insensitive), newest first.
    pub async fn search(
        &self,
        q: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<UserRow>, StoreError> {
        let pattern = format!("%{}%", q.to_lowercase().replace(['\\', '%', '_'], ""));
        Ok(sqlx::query_as::<_, UserRow>(
            "SELECT id, email, username, hashed_password, is_active, is_superuser, email_verified, created_at, updated_at \
             FROM users WHERE LOWER(email) LIKE $1 OR LOWER(username) LIKE $1 ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3",
        )
        .bind(pattern)
        .bind(limit)
        .bind(offset)
        .fetch_all(self.pool())
        .await?)
    }
}
