//! Emailed codes: six digits from the OS CSPRNG, stored as a keyed hash with an expiry and a
//! limit on wrong attempts (a 6-digit code cannot be brute-forced in 10 minutes when only a
//! handful of guesses count), one resend a minute per address. Two purposes: verifying an
//! address, and resetting a forgotten password.

use super::AuthService;
use super::mail::CodeMail;
use crate::error::Refusal;
use crate::formats::ids::UserId;
use crate::store::{UserUpdate, now_ms};
use std::sync::Arc;

const PURPOSE: &str = "verify";
const RESET: &str = "reset";
/// How long wrong guesses at reset codes keep counting: a day.
const RESET_GUESS_WINDOW_MS: i64 = 24 * 3600 * 1000;
const RESEND_INTERVAL_MS: i64 = 60_000;

fn invalid_code() -> Refusal {
    // Well-formed but not the proof asked for: forbidden, as a wrong password is unauthorised.
    Refusal::forbidden("验证码无效或已过期: the code is wrong or has expired")
}

impl AuthService {
    fn code_hash(&self, email: &str, code: &str) -> String {
        self.hasher
            .hash("email-code", &format!("{email}\u{0}{code}"))
    }

    fn reset_hash(&self, email: &str, code: &str) -> String {
        self.hasher
            .hash("reset-code", &format!("{email}\u{0}{code}"))
    }

    /// Sends a new code to `email` (already normalised).
    pub async fn send_code(&self, email: &str) -> Result<(), Refusal> {
        if self.store.users().email_taken(email).await? {
            return Err(Refusal::conflict(
                "该邮箱已被注册: this email is already registered",
            ));
        }
        if let Some(prev) = self.store.codes().get(email, PURPOSE).await? {
            let wait = prev.created_at + RESEND_INTERVAL_MS - now_ms();
            if wait > 0 {
                let secs = (wait / 1000).max(1) as u64;
                return Err(Refusal::too_many(
                    Some(secs),
                    format!("a code was just sent; ask again in {secs} s"),
                ));
            }
        }
        let code = super::random::digits(6);
        let ttl = self.config.auth.code_ttl;
        self.store
            .codes()
            .put(
                email,
                PURPOSE,
                &self.code_hash(email, &code),
                now_ms() + ttl.as_millis() as i64,
            )
            .await?;
        self.mailer
            .send_code(CodeMail::Verify, email, &code, ttl.as_secs() / 60)
            .await
    }

    /// Starts a password reset for `email` (already normalised): when an active account has
    /// that address and no reset code went to it in the last minute, a new code is stored and
    /// mailed. The caller learns nothing about whether an account exists: the answer is the
    /// same, and everything after it (the lookup, storing, mailing) runs once it has gone, so
    /// the time taken does not tell either. A new code brings no new guesses: the wrong
    /// attempts of the day's earlier codes still count (`RESET_GUESS_WINDOW_MS`).
    pub async fn forgot_password(self: &Arc<Self>, email: &str) -> Result<(), Refusal> {
        if !self.mailer.can_send() {
            return Err(Refusal::unavailable(
                "email delivery is not configured on this gate: ask an operator to reset the password",
            ));
        }
        let (auth, email) = (self.clone(), email.to_string());
        tokio::spawn(async move {
            if let Err(e) = auth.send_reset_code(&email).await {
                tracing::warn!(error = %e.detail, "a password reset code was not sent");
            }
        });
        Ok(())
    }

    async fn send_reset_code(&self, email: &str) -> Result<(), Refusal> {
        let Some(user) = self.store.users().by_login(email).await? else {
            return Ok(());
        };
        if !user.is_active || user.email != email {
            return Ok(());
        }
        let now = now_ms();
        if let Some(prev) = self.store.codes().get(email, RESET).await?
            && prev.created_at + RESEND_INTERVAL_MS > now
        {
            return Ok(());
        }
        let code = super::random::digits(6);
        let ttl = self.config.auth.code_ttl;
        self.store
            .codes()
            .put_keeping_attempts(
                email,
                RESET,
                &self.reset_hash(email, &code),
                now + ttl.as_millis() as i64,
                now - RESET_GUESS_WINDOW_MS,
            )
            .await?;
        self.mailer
            .send_code(CodeMail::Reset, email, &code, ttl.as_secs() / 60)
            .await
    }

    /// Sets a new password with a reset code: the code is checked like a verification code
    /// (attempts counted first), then the password is replaced, every session of the account
    /// is signed out on every replica, and the address counts as verified (its owner just
    /// proved it). The code is used up.
    pub async fn reset_password(
        &self,
        email: &str,
        code: &str,
        new_password: &str,
    ) -> Result<UserId, Refusal> {
        super::accounts::check_password(new_password)?;
        // The same answer whether the address has no code (no account), its guesses are used
        // up or the code is wrong: a 429 here would tell who is registered.
        if self
            .attempt(email, RESET, &self.reset_hash(email, code))
            .await?
            != Some(true)
        {
            return Err(invalid_code());
        }
        let user = match self.store.users().by_login(email).await? {
            Some(u) if u.email == email && u.is_active => u,
            _ => return Err(invalid_code()),
        };
        let update = UserUpdate {
            hashed_password: Some(self.passwords.hash(new_password).await?),
            ..UserUpdate::default()
        };
        // Sessions end first: a failure after this leaves the account signed out with its old
        // password, never with the new password and someone else's session still alive. And
        // again after: a sign-in that checked the old password meanwhile got a session too.
        self.store.refresh_tokens().revoke_all_of(&user.id).await?;
        self.store.users().update(&user.id, update).await?;
        self.store.refresh_tokens().revoke_all_of(&user.id).await?;
        self.store
            .users()
            .set_email_verified(&user.id, true)
            .await?;
        self.store.codes().delete(email, RESET).await?;
        self.cache.invalidate_user(&self.store, &user.id).await;
        Ok(user.id)
    }

    /// Takes one of the live code's attempts before comparing it (a concurrent burst of guesses
    /// gets no more than `verification_code_attempts`): whether `hash` is the code's, or `None`
    /// when there is no live code or its attempts are used up.
    async fn attempt(
        &self,
        email: &str,
        purpose: &str,
        hash: &str,
    ) -> Result<Option<bool>, Refusal> {
        let max = self.config.auth.code_attempts as i64;
        let row = self
            .store
            .codes()
            .take_attempt(email, purpose, max, now_ms())
            .await?;
        Ok(row.map(|r| r.code_hash == hash))
    }

    /// Why no attempt was taken: too many wrong codes on a live one, or none at all.
    async fn no_attempt_left(&self, email: &str, purpose: &str) -> Result<Refusal, Refusal> {
        let live = self
            .store
            .codes()
            .get(email, purpose)
            .await?
            .filter(|r| r.expires_at > now_ms());
        Ok(match live {
            Some(_) => Refusal::too_many(None, "too many wrong codes; request a new one"),
            None => invalid_code(),
        })
    }

    /// Checks `code` for `email`; on success the address counts as verified for registration.
    /// The attempt is counted before the comparison, so no burst gets more guesses than
    /// `verification_code_attempts`.
    pub async fn verify_code(&self, email: &str, code: &str) -> Result<(), Refusal> {
        match self
            .attempt(email, PURPOSE, &self.code_hash(email, code))
            .await?
        {
            None => return Err(self.no_attempt_left(email, PURPOSE).await?),
            Some(false) => return Err(invalid_code()),
            Some(true) => {}
        }
        self.store.codes().mark_verified(email, PURPOSE).await?;
        Ok(())
    }

    /// For registration: the address was verified (by `/auth/verify-email` or by `code` now).
    pub(super) async fn consume_verification(
        &self,
        email: &str,
        code: Option<&str>,
    ) -> Result<(), Refusal> {
        let verified = self
            .store
            .codes()
            .get(email, PURPOSE)
            .await?
            .is_some_and(|r| r.verified_at.is_some() && r.expires_at > now_ms());
        if !verified {
            match code {
                Some(c) => self
                    .verify_code(email, c)
                    .await
                    .map_err(|_| Refusal::invalid("邮箱验证码无效或已过期，请重新获取"))?,
                None => {
                    return Err(Refusal::invalid(
                        "邮箱验证码无效或已过期，请重新获取: a verification code is required",
                    ));
                }
            }
        }
        self.store.codes().delete(email, PURPOSE).await?;
        Ok(())
    }
}
