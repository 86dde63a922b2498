//! JSON Web Tokens: HS256, the algorithm pinned (never taken from the token's header), `exp`
//! required, `type` checked, so a refresh token is never accepted as an access token and
//! `alg: none` or an RS256 header never verifies.
//!
//! The claims are those the iDoctor backend middleware reads (`sub` = user id, `type`, `exp`),
//! plus `iat` and `jti`.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Access,
    Refresh,
    /// The image cookie's credential: accepted only on image GETs, never as a bearer token.
    Image,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Access => "access",
            Kind::Refresh => "refresh",
            Kind::Image => "image",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub exp: i64,
    #[serde(default)]
    pub iat: i64,
    #[serde(default)]
    pub jti: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// Why a token was refused (all of them are a 401 to the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Invalid,
    Expired,
    WrongType,
}

/// Signs and verifies tokens with one HS256 secret.
/// Seconds a token is still accepted after its `exp` (clock skew between replicas).
pub const LEEWAY: i64 = 5;

pub struct Signer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

pub fn now_secs() -> i64 {
    crate::store::now_ms() / 1000
}

impl Signer {
    pub fn new(secret: &[u8]) -> Signer {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = LEEWAY as u64;
        Signer {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// A token of `kind` for `sub`, valid for `ttl`; returns it and its `exp`.
    pub fn issue(
        &self,
        sub: &str,
        kind: Kind,
        jti: &str,
        ttl: Duration,
        email: Option<&str>,
    ) -> (String, i64) {
        let iat = now_secs();
        let exp = iat + ttl.as_secs() as i64;
        let claims = Claims {
            sub: sub.to_string(),
            kind: kind.as_str().to_string(),
            exp,
            iat,
            jti: jti.to_string(),
            email: email.map(str::to_string),
        };
        let token = encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail");
        (token, exp)
    }

    pub fn verify(&self, token: &str, kind: Kind) -> Result<Claims, TokenError> {
        let data =
            decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                    _ => TokenError::Invalid,
                }
            })?;
        if data.claims.kind != kind.as_str() {
            return Err(TokenError::WrongType);
        }
        if data.claims.sub.is_empty() {
            return Err(TokenError::Invalid);
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_type_check() {
        let s = Signer::new(b"0123456789abcdef0123456789abcdef");
        let (t, _) = s.issue(
            "u1",
            Kind::Access,
            "j1",
            Duration::from_secs(60),
            Some("a@b.c"),
        );
        let c = s.verify(&t, Kind::Access).unwrap();
        assert_eq!(
            (c.sub.as_str(), c.jti.as_str(), c.email.as_deref()),
            ("u1", "j1", Some("a@b.c"))
        );
        assert_eq!(
            s.verify(&t, Kind::Refresh).unwrap_err(),
            TokenError::WrongType
        );
        let other = Signer::new(b"another secret, another key......");
        assert_eq!(
            other.verify(&t, Kind::Access).unwrap_err(),
            TokenError::Invalid
        );
    }
}
