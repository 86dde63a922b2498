//! Account operations: registration, profile changes, superuser actions, API keys. Every change
//! that takes rights away reaches the caches (here and, on PostgreSQL, every replica) before the
//! answer is sent.

use super::{AuthService, Principal, keys};
use crate::error::Refusal;
use crate::formats::ids::UserId;
use crate::store::{ApiKeyRow, NewApiKey, NewUser, StoreError, UserRow, UserUpdate, now_ms};

pub struct NewAccount {
    pub email: String,
    pub username: String,
    pub password: String,
    pub verification_code: Option<String>,
}

#[derive(Default)]
pub struct ProfileUpdate {
    pub email: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub current_password: Option<String>,
}

pub struct ApiKeyCreated {
    pub row: ApiKeyRow,
    pub key: String,
}

fn unprocessable(msg: impl Into<String>) -> Refusal {
    Refusal::invalid(msg)
}

/// `a@b.c`, lower-cased; 422 otherwise.
pub fn normalise_email(email: &str) -> Result<String, Refusal> {
    let e = email.trim().to_lowercase();
    // The rule the OpenAPI schema states as a pattern (`api::auth`): a local part, an `@`,
    // and a domain of two or more non-empty labels; no spaces or control characters.
    // The length is the schema's `max_length`: of the text as sent.
    let valid = email.chars().count() <= 254
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.split('.').count() >= 2
                && domain.split('.').all(|label| !label.is_empty())
        });
    if valid {
        Ok(e)
    } else {
        Err(unprocessable(format!(
            "`{}` is not a valid email address",
            email.trim()
        )))
    }
}

pub fn check_username(u: &str) -> Result<(), Refusal> {
    let n = u.chars().count();
    if !(3..=50).contains(&n) {
        return Err(unprocessable(
            "用户名长度须为 3–50 个字符: the username must be 3 to 50 characters",
        ));
    }
    if u.chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '@')
    {
        return Err(unprocessable(
            "the username must not contain spaces, control characters or `@`",
        ));
    }
    Ok(())
}

pub fn check_password(p: &str) -> Result<(), Refusal> {
    let n = p.chars().count();
    if !(8..=100).contains(&n) {
        return Err(unprocessable(
            "密码长度须为 8–100 个字符: the password must be 8 to 100 characters",
        ));
    }
    Ok(())
}

/// Maps a unique-constraint race to the same 409s the up-front checks give.
fn conflict(e: StoreError) -> Refusal {
    match &e {
        StoreError::Conflict(m) if m.contains("email") => email_taken(),
        StoreError::Conflict(m) if m.contains("username") => username_taken(),
        _ => e.into(),
    }
}

fn email_taken() -> Refusal {
    Refusal::conflict("邮箱已被注册: this email is already registered")
}

fn username_taken() -> Refusal {
    Refusal::conflict("用户名已被使用: this username is taken")
}

impl AuthService {
    pub async fn register(&self, new: NewAccount) -> Result<UserRow, Refusal> {
        let email = normalise_email(&new.email)?;
        check_username(&new.username)?;
        check_password(&new.password)?;
        if self.store.users().email_taken(&email).await? {
            return Err(email_taken());
        }
        if self.store.users().username_taken(&new.username).await? {
            return Err(username_taken());
        }
        let require = self.config.auth.require_email_verification;
        if require {
            self.consume_verification(&email, new.verification_code.as_deref())
                .await?;
        }
        let hashed = self.passwords.hash(&new.password).await?;
        self.store
            .users()
            .create(NewUser {
                email,
                username: new.username,
                hashed_password: hashed,
                is_superuser: false,
                email_verified: require,
            })
            .await
            .map_err(conflict)
    }

    /// Creates a superuser (the `create-admin` command); an existing account of that email or
    /// username is promoted instead, with the new password.
    pub async fn create_admin(
        &self,
        email: &str,
        username: &str,
        password: &str,
    ) -> Result<UserRow, Refusal> {
        let email = normalise_email(email)?;
        check_username(username)?;
        check_password(password)?;
        let hashed = self.passwords.hash(password).await?;
        let existing = match self.store.users().by_login(&email).await? {
            Some(u) => Some(u),
            None => self.store.users().by_login(username).await?,
        };
        if let Some(u) = existing {
            self.store.users().make_superuser(&u.id, &hashed).await?;
            self.cache.invalidate_user(&self.store, &u.id).await;
            return Ok(self.store.users().by_id(&u.id).await?.unwrap_or(u));
        }
        self.store
            .users()
            .create(NewUser {
                email,
                username: username.to_string(),
                hashed_password: hashed,
                is_superuser: true,
                email_verified: true,
            })
            .await
            .map_err(conflict)
    }

    pub async fn user(&self, id: &UserId) -> Result<UserRow, Refusal> {
        self.store
            .users()
            .by_id(id)
            .await?
            .ok_or_else(|| Refusal::not_found("用户不存在: no such user"))
    }

    pub async fn update_profile(
        &self,
        who: &Principal,
        change: ProfileUpdate,
    ) -> Result<UserRow, Refusal> {
        let current = self.user(&who.user_id).await?;
        let mut update = UserUpdate::default();
        if let Some(email) = change.email.as_deref() {
            let email = normalise_email(email)?;
            if email != current.email {
                if self.store.users().email_taken(&email).await? {
                    return Err(Refusal::conflict(
                        "邮箱已被使用: this email is already in use",
                    ));
                }
                if self.config.auth.require_email_verification {
                    self.consume_verification(&email, None).await?;
                }
                update.email = Some(email);
            }
        }
        if let Some(username) = change.username {
            check_username(&username)?;
            let same_account = crate::store::username_key(&username)
                == crate::store::username_key(&current.username);
            if username != current.username {
                if !same_account && self.store.users().username_taken(&username).await? {
                    return Err(username_taken());
                }
                update.username = Some(username);
            }
        }
        let password_changed = change.password.is_some();
        if let Some(password) = change.password.as_deref() {
            check_password(password)?;
        }
        // The email and the password are how an account is recovered and entered: changing
        // either needs the current password (Auth0 asks again too), not just a session.
        if password_changed || update.email.is_some() {
            // Asked for again, like a wrong one (403): the session alone does not suffice.
            let Some(given) = change.current_password.as_deref() else {
                return Err(Refusal::forbidden(
                    "current_password is required to change the email or the password",
                ));
            };
            if !self
                .passwords
                .verify(given, Some(&current.hashed_password))
                .await?
            {
                return Err(Refusal::forbidden(
                    "当前密码错误: the current password is wrong",
                ));
            }
        }
        if let Some(password) = change.password.as_deref() {
            update.hashed_password = Some(self.passwords.hash(password).await?);
        }
        let email_changed = update.email.is_some();
        let row = self
            .store
            .users()
            .update(&who.user_id, update)
            .await
            .map_err(conflict)?
            .ok_or_else(|| Refusal::not_found("用户不存在: no such user"))?;
        if email_changed && !self.config.auth.require_email_verification {
            self.store
                .users()
                .set_email_verified(&row.id, false)
                .await?;
        }
        if password_changed {
            self.store.refresh_tokens().revoke_all_of(&row.id).await?;
        }
        self.cache.invalidate_user(&self.store, &row.id).await;
        Ok(row)
    }

    /// Enables or disables an account; disabling signs it out everywhere at once.
    pub async fn set_active(&self, id: &UserId, active: bool) -> Result<UserRow, Refusal> {
        let row = self
            .store
            .users()
            .update(
                id,
                UserUpdate {
                    is_active: Some(active),
                    ..UserUpdate::default()
                },
            )
            .await?
            .ok_or_else(|| Refusal::not_found("用户不存在: no such user"))?;
        if !active {
            self.store.refresh_tokens().revoke_all_of(id).await?;
        }
        self.cache.invalidate_user(&self.store, id).await;
        Ok(row)
    }

    pub async fn delete_user(&self, actor: &Principal, id: &UserId) -> Result<(), Refusal> {
        if actor.user_id == *id {
            return Err(unprocessable(
                "不能删除自己的账号: you cannot delete your own account",
            ));
        }
        let hashes = self.store.keys().hashes_of(id).await?;
        if !self.store.users().delete(id).await? {
            return Err(Refusal::not_found("用户不存在: no such user"));
        }
        self.cache.invalidate_user(&self.store, id).await;
        for h in hashes {
            self.cache.invalidate_key(&self.store, &h).await;
        }
        Ok(())
    }

    pub async fn create_api_key(
        &self,
        who: &Principal,
        name: &str,
        expires_at: Option<i64>,
    ) -> Result<ApiKeyCreated, Refusal> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(unprocessable("the key name must be 1 to 100 characters"));
        }
        if expires_at.is_some_and(|t| t <= now_ms()) {
            // Well-formed, but already past by the clock: a conflict with the present, as the
            // schema (a date-time) cannot say "later than now".
            return Err(Refusal::conflict("expires_at must be in the future"));
        }
        let key = keys::generate();
        let hash = self.hasher.hash("api-key", &key);
        let row = self
            .store
            .keys()
            .create(NewApiKey {
                user_id: who.user_id.clone(),
                key_prefix: keys::display_prefix(&key),
                key_hash: hash.clone(),
                name: name.to_string(),
                expires_at,
            })
            .await?;
        // A negative entry from a guess of this very key must not outlive its creation.
        self.cache.invalidate_key(&self.store, &hash).await;
        Ok(ApiKeyCreated { row, key })
    }

    pub async fn delete_api_key(&self, who: &Principal, id: &str) -> Result<(), Refusal> {
        let row = self
            .store
            .keys()
            .delete(&who.user_id, id)
            .await?
            .ok_or_else(|| Refusal::not_found("API 密钥不存在: no such API key"))?;
        self.cache.invalidate_key(&self.store, &row.key_hash).await;
        Ok(())
    }

    pub async fn deactivate_api_key(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<ApiKeyRow, Refusal> {
        let row = self
            .store
            .keys()
            .deactivate(&who.user_id, id)
            .await?
            .ok_or_else(|| Refusal::not_found("API 密钥不存在: no such API key"))?;
        self.cache.invalidate_key(&self.store, &row.key_hash).await;
        Ok(row)
    }
}
