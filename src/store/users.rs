//! Users: accounts as stored (the password only as an argon2id hash).

use super::{Store, StoreError, now_ms};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: String,
    pub email: String,
    pub username: String,
    pub hashed_password: String,
    pub is_active: i64,
    pub is_superuser: i64,
    pub email_verified: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl UserRow {
    pub fn active(&self) -> bool {
        self.is_active != 0
    }
    pub fn superuser(&self) -> bool {
        self.is_superuser != 0
    }
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

impl Store {
    /// Inserts a user. A taken email or username is a `Conflict` naming the column.
    pub async fn create_user(&self, new: NewUser) -> Result<UserRow, StoreError> {
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
            .bind(new.is_superuser as i64)
            .bind(new.email_verified as i64)
            .bind(now)
            .bind(username_key(&new.username))
            .fetch_one(self.pool())
            .await
            .map_err(StoreError::from)
    }

    pub async fn user_by_id(&self, id: &str) -> Result<Option<UserRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE id = $1");
        Ok(sqlx::query_as::<_, UserRow>(&sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await?)
    }

    /// The user whose username or email is `login`, in any case.
    pub async fn user_by_login(&self, login: &str) -> Result<Option<UserRow>, StoreError> {
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
    pub async fn update_user(
        &self,
        id: &str,
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
            .bind(id)
            .bind(update.email)
            .bind(update.username)
            .bind(update.hashed_password)
            .bind(update.is_active.map(|b| b as i64))
            .bind(now_ms())
            .bind(key)
            .fetch_optional(self.pool())
            .await?)
    }

    pub async fn set_email_verified(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET email_verified = 1, updated_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now_ms())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Deletes a user and, by cascade, their keys, tokens, balances and usage.
    pub async fn delete_user(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
