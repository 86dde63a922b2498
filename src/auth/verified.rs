//! Credentials already verified, remembered so a client's repeated credential costs one hash
//! lookup instead of the full check.
//!
//! A client sends the same access token (30 minutes by default) or API key with every
//! request. Verifying a token means base64, two JSON parses and an HMAC, about a tenth of the
//! gate's CPU per proxied request in a profile of the JWT route; an API key needs an HMAC with
//! the pepper before its cache lookup. Both results depend only on the credential and on
//! secrets that are fixed for the life of an `AuthService` (a reload builds a new one), so they
//! are kept here, keyed by the whole credential string: one that differs in any byte is a miss
//! and is checked in full. Only successes are kept (a token's subject and `exp`, a key's
//! hash); the account's and the key's state (deleted, disabled, revoked) are still checked on
//! every request by the principal and key caches. Bounded: when full, it is emptied, which
//! costs one full check per client.

use std::collections::HashMap;
use std::sync::Mutex;

use foldhash::fast::RandomState;

/// How many credentials are remembered at most.
const CAPACITY: usize = 20_000;

pub struct Remembered<V> {
    /// Keys are credentials that passed a full check, so none is chosen to collide: a fast
    /// hash will do (`foldhash`, seeded per process).
    map: Mutex<HashMap<Box<str>, V, RandomState>>,
}

impl<V> Default for Remembered<V> {
    fn default() -> Self {
        Remembered {
            map: Mutex::new(HashMap::default()),
        }
    }
}

impl<V: Clone> Remembered<V> {
    /// What was remembered for `credential`, if it is still `valid`; forgets it otherwise.
    pub fn get(&self, credential: &str, valid: impl Fn(&V) -> bool) -> Option<V> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let v = map.get(credential)?;
        if !valid(v) {
            map.remove(credential);
            return None;
        }
        Some(v.clone())
    }

    /// Remembers what a full check of `credential` just gave.
    pub fn insert(&self, credential: &str, value: V) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(credential.into(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_while_valid_and_only_the_exact_credential() {
        let r: Remembered<(String, i64)> = Remembered::default();
        r.insert("a.b.c", ("u1".into(), 100));
        let until = |now: i64| move |v: &(String, i64)| v.1 >= now;
        assert_eq!(r.get("a.b.c", until(90)).map(|v| v.0), Some("u1".into()));
        assert_eq!(r.get("a.b.d", until(90)), None);
        assert_eq!(r.get("a.b.c", until(101)), None, "no longer valid");
        assert_eq!(r.get("a.b.c", until(90)), None, "and then forgotten");
    }

    #[test]
    fn stays_bounded() {
        let r: Remembered<u8> = Remembered::default();
        for i in 0..CAPACITY + 10 {
            r.insert(&format!("t{i}"), 1);
        }
        assert!(r.map.lock().unwrap().len() <= CAPACITY);
        assert_eq!(r.get(&format!("t{}", CAPACITY + 9), |_| true), Some(1));
    }
}
