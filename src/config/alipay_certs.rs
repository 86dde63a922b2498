//! `[payments.alipay]` in certificate mode: the three certificate files read, parsed and
//! checked against the app private key, and the serial numbers the requests carry computed
//! once, at load (`formats::alipay_certs` holds how).

use crate::formats::alipay_certs::{cert_sn, certificate, root_cert_sn, rsa_key};
use crate::formats::rsa_keys;
use base64::Engine;
use rsa::pkcs8::EncodePublicKey;

/// What certificate mode adds to an Alipay configuration.
#[derive(Debug, Clone)]
pub struct AlipayCertMode {
    /// `app_cert_sn`: the SN of the app certificate.
    pub app_cert_sn: String,
    /// `alipay_root_cert_sn`: the SNs of the root bundle's RSA certificates.
    pub alipay_root_cert_sn: String,
    /// The SN of the Alipay certificate: replies naming another (`alipay_cert_sn`) are refused.
    pub alipay_cert_sn: String,
}

/// The files as written, each `(key, path)`.
pub struct CertFiles<'a> {
    pub app_cert: (&'a str, &'a str),
    pub alipay_cert: (&'a str, &'a str),
    pub root_cert: (&'a str, &'a str),
}

/// Reads and checks the certificates; returns the mode and the Alipay public key (base64 DER,
/// as the console shows a bare key) taken from the Alipay certificate, or every problem as
/// `(key, message)`.
pub fn load(
    files: &CertFiles<'_>,
    private_key: Option<&str>,
) -> Result<(AlipayCertMode, String), Vec<(String, String)>> {
    let mut problems = Vec::new();
    let mut read = |(key, path): (&str, &str)| match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) => {
            problems.push((key.to_string(), format!("cannot read {path}: {e}")));
            None
        }
    };
    let (app, alipay, root) = (
        read(files.app_cert),
        read(files.alipay_cert),
        read(files.root_cert),
    );
    let mut parsed = |key: &str, text: Option<String>| {
        let cert = certificate(&text?)
            .map_err(|e| problems.push((key.to_string(), e)))
            .ok()?;
        Some(cert)
    };
    let app = parsed(files.app_cert.0, app);
    let alipay = parsed(files.alipay_cert.0, alipay);
    let root_sn = root.and_then(|r| {
        root_cert_sn(&r)
            .map_err(|e| problems.push((files.root_cert.0.to_string(), e)))
            .ok()
    });
    // The app certificate must certify the key the gate signs with, or Alipay refuses every
    // request (and the operator learns it from a failed payment).
    if let (Some(cert), Some(private)) = (
        &app,
        private_key.and_then(|k| rsa_keys::private_key(k).ok()),
    ) {
        match rsa_key(cert) {
            Ok(key) if key == private.to_public_key() => {}
            Ok(_) => problems.push((
                files.app_cert.0.to_string(),
                "the certificate is not for the app private key (GATE_ALIPAY_PRIVATE_KEY): they must be a pair".into(),
            )),
            Err(e) => problems.push((files.app_cert.0.to_string(), e)),
        }
    }
    let alipay_key = alipay.as_ref().and_then(|c| {
        let key = rsa_key(c)
            .map_err(|e| problems.push((files.alipay_cert.0.to_string(), e)))
            .ok()?;
        let der = key.to_public_key_der().ok()?;
        Some(base64::engine::general_purpose::STANDARD.encode(der.as_bytes()))
    });
    match (app, alipay, root_sn, alipay_key) {
        (Some(app), Some(alipay), Some(root), Some(key)) if problems.is_empty() => Ok((
            AlipayCertMode {
                app_cert_sn: cert_sn(&app),
                alipay_root_cert_sn: root,
                alipay_cert_sn: cert_sn(&alipay),
            },
            key,
        )),
        _ => Err(problems),
    }
}
