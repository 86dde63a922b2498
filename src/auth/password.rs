//! Passwords: argon2id with the OWASP parameters (m = 19 MiB, t = 2, p = 1), always on the
//! blocking pool and behind a semaphore. A hash holds 19 MiB and ~25 ms of a core, so without
//! the semaphore a burst of logins would take every core from proxied traffic.
//!
//! A login for an unknown account verifies against a dummy hash, so the answer takes the same
//! time whether or not the account exists.

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use std::sync::Arc;
use tokio::sync::Semaphore;

use crate::error::GateError;

pub struct Passwords {
    permits: Arc<Semaphore>,
    dummy: Arc<String>,
}

impl Passwords {
    pub fn new(concurrency: usize) -> Passwords {
        let dummy = hash_now("not a password anyone has").expect("argon2 works");
        Passwords {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            dummy: Arc::new(dummy),
        }
    }

    pub async fn hash(&self, password: &str) -> Result<String, GateError> {
        let _permit = self.permits.acquire().await.map_err(|_| busy())?;
        let password = password.to_string();
        tokio::task::spawn_blocking(move || hash_now(&password))
            .await
            .map_err(|_| busy())?
            .ok_or_else(busy)
    }

    /// True when `password` matches `phc`; with no `phc`, checks a dummy hash and says false.
    pub async fn verify(&self, password: &str, phc: Option<&str>) -> Result<bool, GateError> {
        let _permit = self.permits.acquire().await.map_err(|_| busy())?;
        let password = password.to_string();
        let (phc, real) = match phc {
            Some(p) => (p.to_string(), true),
            None => (self.dummy.as_str().to_string(), false),
        };
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&phc)
                .map(|h| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &h)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .map_err(|_| busy())?;
        Ok(ok && real)
    }
}

fn hash_now(password: &str) -> Option<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .ok()
        .map(|h| h.to_string())
}

fn busy() -> GateError {
    GateError::unavailable("password hashing is unavailable; try again")
}
