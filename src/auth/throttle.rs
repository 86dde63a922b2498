//! Throttling of logins, in the store so that every replica shares it (`store::throttles`).
//!
//! Three limits, each a burst and then one attempt per interval (GCRA):
//! - the account **and** the address together: `login_max_failures` guesses per
//!   `login_window_secs`. This is the lock a guesser meets; the owner, signing in from anywhere
//!   else, does not (Auth0's brute-force protection keys on the same pair);
//! - the account alone: `login_account_burst` at once, then one per
//!   `login_account_interval_secs`, whatever the address. Guessers spread over many addresses
//!   are slowed to that rate; the owner waits one interval at most, never a whole window;
//! - the address alone: `login_max_failures_per_ip` per `login_window_secs`, for one address
//!   guessing across many accounts.
//!
//! An attempt is counted **before** the password is hashed and given back when it succeeds, so a
//! concurrent burst is checked at most `burst` times. The account is the user's id whatever
//! login names it (username in any case, email): one account, one count.

use std::net::IpAddr;
use std::time::Duration;

use crate::error::Refusal;
use crate::store::{Limit, Store, StoreError, now_ms};

pub struct Throttle {
    pair: (u32, Duration),
    account: (u32, Duration),
    address: (u32, Duration),
}

/// The keys of one login attempt, taken before the password is checked.
pub struct Attempt {
    limits: Vec<Limit>,
}

fn limit(key: String, (burst, per): (u32, Duration)) -> Limit {
    let burst = burst.max(1);
    Limit {
        key,
        burst,
        interval_ms: (per.as_millis() as i64 / burst as i64).max(1),
    }
}

impl Throttle {
    /// `window` holds `per_pair` (and `per_address`) attempts; the account alone allows
    /// `account_burst` at once and then one per `account_interval`.
    pub fn new(
        window: Duration,
        per_pair: u32,
        per_address: u32,
        account_burst: u32,
        account_interval: Duration,
    ) -> Throttle {
        Throttle {
            pair: (per_pair, window),
            account: (
                account_burst,
                account_interval.saturating_mul(account_burst.max(1)),
            ),
            address: (per_address, window),
        }
    }

    /// Counts an attempt on `account` (a user id, or the login as typed when no account has
    /// it) from `ip`, or answers 429 with `Retry-After`.
    pub async fn attempt(
        &self,
        store: &Store,
        account: &str,
        ip: Option<IpAddr>,
    ) -> Result<Attempt, Refusal> {
        let mut limits = vec![limit(format!("login:a:{account}"), self.account)];
        if let Some(ip) = ip {
            limits.push(limit(format!("login:p:{account}:{ip}"), self.pair));
            limits.push(limit(format!("login:i:{ip}"), self.address));
        }
        match store.throttles().take_attempt(&limits, now_ms()).await? {
            None => Ok(Attempt { limits }),
            Some(wait_ms) => Err(too_many(wait_ms)),
        }
    }

    /// The attempt succeeded: the pair's count starts again, the others get the attempt back.
    pub async fn succeeded(&self, store: &Store, attempt: Attempt) -> Result<(), StoreError> {
        let pair: Vec<&str> = attempt
            .limits
            .iter()
            .filter(|l| l.key.starts_with("login:p:"))
            .map(|l| l.key.as_str())
            .collect();
        store
            .throttles()
            .give_back(&attempt.limits, &pair, now_ms())
            .await
    }
}

/// 429 with the seconds to wait, rounded up.
pub fn too_many(wait_ms: i64) -> Refusal {
    let secs = ((wait_ms + 999) / 1000).max(1) as u64;
    Refusal::too_many(
        Some(secs),
        format!("too many failed attempts; try again in {secs} s"),
    )
}
