//! Email verification codes: six digits from the OS CSPRNG, stored as a keyed hash with an
//! expiry and a limit on wrong attempts (a 6-digit code cannot be brute-forced in 10 minutes
//! when only a handful of guesses count), one resend a minute per address.

use super::AuthService;
use crate::error::Refusal;
use crate::store::now_ms;

const PURPOSE: &str = "verify";
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
            .send_code(email, &code, ttl.as_secs() / 60)
            .await
    }

    /// Checks `code` for `email`; on success the address counts as verified for registration.
    /// The attempt is counted before the comparison, so no burst gets more guesses than
    /// `verification_code_attempts`.
    pub async fn verify_code(&self, email: &str, code: &str) -> Result<(), Refusal> {
        let max = self.config.auth.code_attempts as i64;
        let Some(row) = self
            .store
            .codes()
            .take_attempt(email, PURPOSE, max, now_ms())
            .await?
        else {
            let live = self
                .store
                .codes()
                .get(email, PURPOSE)
                .await?
                .filter(|r| r.expires_at > now_ms());
            return Err(match live {
                Some(_) => Refusal::too_many(None, "too many wrong codes; request a new one"),
                None => invalid_code(),
            });
        };
        if row.code_hash != self.code_hash(email, code) {
            return Err(invalid_code());
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
