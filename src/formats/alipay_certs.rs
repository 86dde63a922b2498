//! Alipay's certificate mode (公钥证书模式): an app issued certificates instead of a bare
//! public key sends, with every request, the serial numbers (SN) of its app certificate and of
//! Alipay's root bundle, and reads Alipay's key from the Alipay certificate.
//!
//! The SN is Alipay's own: `md5_hex(issuer DN in RFC 2253 form + decimal serial)`, the issuer
//! written as Java's `getIssuerX500Principal().getName()` does (RDNs reversed, no spaces), which
//! is what x509-cert's `Name` displays. The root SN joins the SNs of the bundle's certificates
//! signed with RSA (Alipay's real root file also holds an elliptic-curve root), with `_`, in
//! file order.

use md5::{Digest, Md5};
use rsa::PublicKey;
use rsa::pkcs8::DecodePublicKey;
use x509_cert::Certificate;
use x509_cert::der::Encode;

/// The certificates of a PEM file (one or several).
pub fn certificates(pem: &str) -> Result<Vec<Certificate>, String> {
    let certs = Certificate::load_pem_chain(pem.as_bytes())
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in the file".into());
    }
    Ok(certs)
}

/// The one certificate of a PEM file.
pub fn certificate(pem: &str) -> Result<Certificate, String> {
    let mut certs = certificates(pem)?;
    match certs.len() {
        1 => Ok(certs.remove(0)),
        n => Err(format!("{n} certificates where one was expected")),
    }
}

/// Alipay's SN of a certificate.
pub fn cert_sn(cert: &Certificate) -> String {
    let tbs = cert.tbs_certificate();
    let text = format!(
        "{}{}",
        tbs.issuer(),
        decimal(tbs.serial_number().as_bytes())
    );
    Md5::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Alipay's SN of a root bundle: the SNs of its RSA-signed certificates, joined with `_`.
pub fn root_cert_sn(pem: &str) -> Result<String, String> {
    let sns: Vec<String> = certificates(pem)?
        .iter()
        .filter(|c| {
            c.signature_algorithm()
                .oid
                .to_string()
                .starts_with("1.2.840.113549.1.1.")
        })
        .map(cert_sn)
        .collect();
    if sns.is_empty() {
        return Err("the root bundle holds no RSA certificate".into());
    }
    Ok(sns.join("_"))
}

/// The RSA public key a certificate carries.
pub fn rsa_key(cert: &Certificate) -> Result<PublicKey, String> {
    let spki = cert
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(|e| e.to_string())?;
    PublicKey::from_public_key_der(&spki)
        .map_err(|e| format!("the certificate's key is not RSA: {e}"))
}

/// A big-endian unsigned integer (a DER serial's bytes) in decimal.
fn decimal(bytes: &[u8]) -> String {
    let mut digits: Vec<u8> = vec![0];
    for &byte in bytes {
        // digits (little-endian base 10) = digits * 256 + byte
        let mut carry = byte as u32;
        for d in digits.iter_mut() {
            let v = *d as u32 * 256 + carry;
            *d = (v % 10) as u8;
            carry = v / 10;
        }
        while carry > 0 {
            digits.push((carry % 10) as u8);
            carry /= 10;
        }
    }
    while digits.len() > 1 && digits.last() == Some(&0) {
        digits.pop();
    }
    digits.iter().rev().map(|d| (b'0' + d) as char).collect()
}

#[cfg(test)]
mod tests {
    use super::decimal;

    #[test]
    fn serials_are_written_in_decimal() {
        assert_eq!(decimal(&[0x00]), "0");
        assert_eq!(decimal(&[0x01, 0x00]), "256");
        assert_eq!(decimal(&[0x00, 0xff, 0xff]), "65535");
        // 2^64 + 1
        assert_eq!(
            decimal(&[0x01, 0, 0, 0, 0, 0, 0, 0, 0x01]),
            "18446744073709551617"
        );
    }
}
