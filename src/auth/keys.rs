//! API keys: `sk_live_` + 43 url-safe characters (32 bytes from the OS CSPRNG), as the original
//! module made them, so keys look the same to integrators.
//!
//! A key is high-entropy, so a fast keyed hash (HMAC-SHA256 with a server pepper) is as strong as
//! argon2 here and costs a microsecond instead of 25 ms on every proxied request. The pepper
//! means a leaked database alone cannot be used to test guesses.

use crate::formats::text::every_byte;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub const PREFIX: &str = "sk_live_";
pub const KEY_LEN: usize = PREFIX.len() + 43;

/// A new key, shown to its owner once.
pub fn generate() -> String {
    let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(super::random::bytes(32));
    format!("{PREFIX}{body}")
}

/// True when `s` has the shape of a key (cheap check before hashing).
pub fn looks_like_key(s: &str) -> bool {
    s.len() == KEY_LEN
        && s.starts_with(PREFIX)
        && every_byte(&s.as_bytes()[PREFIX.len()..], |b| {
            b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
        })
}

/// What the key list shows: the first 12 characters, as the original did.
pub fn display_prefix(key: &str) -> String {
    format!("{}...", &key[..12.min(key.len())])
}

/// Keyed hashing of keys (and of other secrets the gate stores, such as codes).
pub struct KeyHasher {
    mac: Hmac<Sha256>,
}

impl KeyHasher {
    pub fn new(pepper: &[u8]) -> KeyHasher {
        KeyHasher {
            mac: Hmac::<Sha256>::new_from_slice(pepper).expect("HMAC takes keys of any length"),
        }
    }

    /// Lower-case hex of HMAC-SHA256(pepper, domain || 0 || value).
    pub fn hash(&self, domain: &str, value: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(domain.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(2 * digest.len());
        for b in digest {
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_original_shape() {
        let k = generate();
        assert_eq!(k.len(), 51);
        assert!(looks_like_key(&k));
        assert!(!looks_like_key(&k[..50]));
        assert_eq!(display_prefix(&k).len(), 15);
        assert_ne!(generate(), k);
    }

    #[test]
    fn hashes_depend_on_pepper_and_domain() {
        let a = KeyHasher::new(b"pepper-a");
        let b = KeyHasher::new(b"pepper-b");
        assert_eq!(a.hash("key", "x"), a.hash("key", "x"));
        assert_ne!(a.hash("key", "x"), b.hash("key", "x"));
        assert_ne!(a.hash("key", "x"), a.hash("code", "x"));
        assert_eq!(a.hash("key", "x").len(), 64);
    }

    #[test]
    fn hashes_are_lowercase_hex_of_the_hmac() {
        // HMAC-SHA256 over domain, a 0 byte and the value, spelled as lower-case hex.
        let h = KeyHasher::new(b"Jefe");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want\0for nothing?");
        let expected: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(h.hash("what do ya want", "for nothing?"), expected);
    }
}
