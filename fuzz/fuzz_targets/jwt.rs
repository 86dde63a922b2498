//! JWT decoding: random tokens, and tokens correctly signed over any payload bytes (what a
//! holder of the secret could mint, and what a broken issuer could), are refused or give
//! claims of the asked kind with a subject.

#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use idoctor_gate::auth::tokens::{Kind, Signer};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use std::sync::OnceLock;

const SECRET: &[u8] = b"fuzz-jwt-secret-0123456789abcdef0123456789abcdef";

fn signer() -> &'static Signer {
    static SIGNER: OnceLock<Signer> = OnceLock::new();
    SIGNER.get_or_init(|| Signer::new(SECRET))
}

fn signed(header: &[u8], payload: &[u8]) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
    mac.update(message.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{message}.{sig}")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = match mode % 3 {
        // Anything at all.
        0 => String::from_utf8_lossy(rest).into_owned(),
        // Validly signed HS256 over any payload.
        1 => signed(br#"{"alg":"HS256","typ":"JWT"}"#, rest),
        // Validly signed with any header (alg confusion: none, RS256, a kid, ...).
        _ => {
            let cut = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            signed(&rest[..cut], rest.get(cut + 1..).unwrap_or_default())
        }
    };
    for kind in [Kind::Access, Kind::Refresh, Kind::Image] {
        if let Ok(claims) = signer().verify(&token, kind) {
            assert_eq!(claims.kind, kind.as_str());
            assert!(!claims.sub.is_empty());
            assert!(claims.exp > 0);
        }
    }
});
