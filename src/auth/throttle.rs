//! Throttling of failed logins (and code checks): per account and per client address, in a
//! fixed window. Over the limit the answer is 429 with `Retry-After`, before any password is
//! hashed, so a guessing client costs the gate almost nothing.

use http::HeaderValue;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::GateError;

pub struct Throttle {
    window: Duration,
    per_account: u32,
    per_ip: u32,
    counts: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Throttle {
    pub fn new(window: Duration, per_account: u32, per_ip: u32) -> Throttle {
        Throttle {
            window,
            per_account,
            per_ip,
            counts: Mutex::new(HashMap::new()),
        }
    }

    fn keys(account: &str, ip: Option<IpAddr>) -> (String, Option<String>) {
        (
            format!("a:{}", account.to_lowercase()),
            ip.map(|ip| format!("i:{ip}")),
        )
    }

    /// 429 when the account or the address has failed too often in the current window.
    pub fn check(&self, account: &str, ip: Option<IpAddr>) -> Result<(), GateError> {
        let (a, i) = Self::keys(account, ip);
        let now = Instant::now();
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let over = |key: &str, limit: u32| {
            counts.get(key).and_then(|(n, start)| {
                let left = (*start + self.window).checked_duration_since(now)?;
                (*n >= limit).then_some(left)
            })
        };
        let wait =
            over(&a, self.per_account).or_else(|| i.as_deref().and_then(|i| over(i, self.per_ip)));
        match wait {
            None => Ok(()),
            Some(left) => {
                let secs = left.as_secs().max(1);
                Err(GateError::new(
                    http::StatusCode::TOO_MANY_REQUESTS,
                    format!("too many failed attempts; try again in {secs} s"),
                )
                .with_header(http::header::RETRY_AFTER, HeaderValue::from(secs)))
            }
        }
    }

    pub fn failed(&self, account: &str, ip: Option<IpAddr>) {
        let (a, i) = Self::keys(account, ip);
        let now = Instant::now();
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.len() > 100_000 {
            counts.retain(|_, (_, start)| now.duration_since(*start) < self.window);
        }
        for key in std::iter::once(a).chain(i) {
            let e = counts.entry(key).or_insert((0, now));
            if now.duration_since(e.1) >= self.window {
                *e = (0, now);
            }
            e.0 += 1;
        }
    }

    pub fn succeeded(&self, account: &str) {
        let (a, _) = Self::keys(account, None);
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_and_resets_on_success() {
        let t = Throttle::new(Duration::from_secs(60), 3, 100);
        let ip = Some("10.0.0.1".parse().unwrap());
        for _ in 0..3 {
            assert!(t.check("Alice", ip).is_ok());
            t.failed("alice", ip);
        }
        let e = t.check("ALICE", ip).unwrap_err();
        assert_eq!(e.status, 429);
        assert!(
            e.headers
                .iter()
                .any(|(n, _)| n == http::header::RETRY_AFTER)
        );
        assert!(
            t.check("bob", ip).is_ok(),
            "another account from the same address"
        );
        t.succeeded("alice");
        assert!(t.check("alice", ip).is_ok());
    }
}
