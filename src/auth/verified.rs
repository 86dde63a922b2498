//! Access tokens already verified, remembered until they expire.
//!
//! A client sends the same access token with every request for its whole life (30 minutes by
//! default). Verifying it means base64, two JSON parses and an HMAC: about a tenth of the
//! gate's CPU per proxied request in a profile of the JWT route. A token that verified once
//! verifies again until its `exp` (the secret is fixed for the life of an `AuthService`, which
//! a configuration reload replaces), so the subject is kept here, keyed by the whole token
//! string: a token that differs in any byte is a miss and is verified in full. Only successes
//! are kept; the account's state (deleted, disabled) is still checked on every request by the
//! principal cache. Bounded: when full it is emptied, which costs one verification per client.

use std::collections::HashMap;
use std::sync::Mutex;

/// How many tokens are remembered at most.
const CAPACITY: usize = 20_000;

#[derive(Default)]
pub struct VerifiedTokens {
    map: Mutex<HashMap<Box<str>, Verified>>,
}

#[derive(Clone)]
struct Verified {
    sub: String,
    exp: i64,
}

impl VerifiedTokens {
    /// The subject of a token verified before, if it is still valid at `now` (Unix seconds,
    /// with the same leeway the full verification allows).
    pub fn get(&self, token: &str, now: i64, leeway: i64) -> Option<String> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let v = map.get(token)?;
        if v.exp < now - leeway {
            map.remove(token);
            return None;
        }
        Some(v.sub.clone())
    }

    /// Remembers a token that just passed full verification.
    pub fn insert(&self, token: &str, sub: &str, exp: i64) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(
            token.into(),
            Verified {
                sub: sub.to_string(),
                exp,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_expiry_and_only_the_exact_token() {
        let v = VerifiedTokens::default();
        v.insert("a.b.c", "u1", 100);
        assert_eq!(v.get("a.b.c", 90, 5).as_deref(), Some("u1"));
        assert_eq!(v.get("a.b.d", 90, 5), None);
        assert_eq!(v.get("a.b.c", 104, 5).as_deref(), Some("u1"), "leeway");
        assert_eq!(v.get("a.b.c", 106, 5), None, "expired");
        assert_eq!(v.get("a.b.c", 90, 5), None, "an expired token is forgotten");
    }

    #[test]
    fn stays_bounded() {
        let v = VerifiedTokens::default();
        for i in 0..CAPACITY + 10 {
            v.insert(&format!("t{i}"), "u", i64::MAX);
        }
        assert!(v.map.lock().unwrap().len() <= CAPACITY);
        assert!(v.get(&format!("t{}", CAPACITY + 9), 0, 0).is_some());
    }
}
