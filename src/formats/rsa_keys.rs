//! RSA keys and PKCS#1 v1.5 / SHA-256 signatures (what Alipay calls RSA2 and WeChat Pay
//! `WECHATPAY2-SHA256-RSA2048`). Keys come as the providers' consoles and tools hand them out:
//! PEM (PKCS#8 or PKCS#1), or bare base64 of the DER.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::sha2::Sha256;
use rsa::{PrivateKey, PublicKey};

/// A private key from PEM (PKCS#8 or PKCS#1) or bare base64 DER.
pub fn private_key(text: &str) -> Result<PrivateKey, String> {
    let t = text.trim();
    if t.contains("BEGIN RSA PRIVATE KEY") {
        return PrivateKey::from_pkcs1_pem(t)
            .map_err(|e| format!("not a PKCS#1 RSA private key: {e}"));
    }
    if t.contains("BEGIN PRIVATE KEY") {
        return PrivateKey::from_pkcs8_pem(t).map_err(|e| format!("not a PKCS#8 private key: {e}"));
    }
    let der = STANDARD
        .decode(t.split_whitespace().collect::<String>())
        .map_err(|_| "a private key must be PEM or base64 DER".to_string())?;
    PrivateKey::from_pkcs8_der(&der)
        .or_else(|_| PrivateKey::from_pkcs1_der(&der))
        .map_err(|e| format!("not an RSA private key: {e}"))
}

/// A public key from PEM (SubjectPublicKeyInfo) or bare base64 DER (as the Alipay console shows it).
pub fn public_key(text: &str) -> Result<PublicKey, String> {
    let t = text.trim();
    if t.contains("BEGIN PUBLIC KEY") {
        return PublicKey::from_public_key_pem(t).map_err(|e| format!("not a public key: {e}"));
    }
    let der = STANDARD
        .decode(t.split_whitespace().collect::<String>())
        .map_err(|_| "a public key must be PEM or base64 DER".to_string())?;
    PublicKey::from_public_key_der(&der).map_err(|e| format!("not an RSA public key: {e}"))
}

/// base64 of the RSA-SHA256 (PKCS#1 v1.5) signature of `content`.
pub fn sign(key: &PrivateKey, content: &[u8]) -> String {
    STANDARD.encode(
        key.pkcs1v15_sign::<Sha256>(content)
            .expect("PKCS#1 v1.5 signing with a valid key"),
    )
}

/// True when `signature_b64` is a valid RSA-SHA256 signature of `content`.
pub fn verify(key: &PublicKey, content: &[u8], signature_b64: &str) -> bool {
    match STANDARD.decode(signature_b64.trim()) {
        Ok(sig) => key.pkcs1v15_verify::<Sha256>(content, &sig).is_ok(),
        Err(_) => false,
    }
}
