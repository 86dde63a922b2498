//! Certificates made like Alipay's, with the openssl command: a root CA (RSA) signs the app's
//! and Alipay's public-key certificates, and the root bundle also holds an elliptic-curve root,
//! as Alipay's real `alipayRootCert.crt` does. The SNs the gate must send are computed here with
//! openssl's own RFC 2253 issuer and serial, independently of the gate's code.

use md5::{Digest, Md5};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::fake_alipay;

pub struct Certs {
    pub dir: tempfile::TempDir,
    pub app: PathBuf,
    pub alipay: PathBuf,
    pub root: PathBuf,
    pub app_sn: String,
    pub alipay_sn: String,
    pub root_sn: String,
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Alipay's SN of `cert`, from openssl's RFC 2253 issuer and hex serial.
fn sn(dir: &Path, cert: &str) -> String {
    let issuer = openssl(
        dir,
        &[
            "x509", "-in", cert, "-noout", "-issuer", "-nameopt", "RFC2253",
        ],
    );
    let issuer = issuer.trim().trim_start_matches("issuer=").trim();
    let serial = openssl(dir, &["x509", "-in", cert, "-noout", "-serial"]);
    let serial = u128::from_str_radix(serial.trim().trim_start_matches("serial="), 16).unwrap();
    Md5::digest(format!("{issuer}{serial}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The app certificate for `app_key_pem` (the app key the gate signs with, unless a test
/// gives another) and Alipay's, under one root.
pub fn make(app_key_pem: &str) -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("app.key"), app_key_pem).unwrap();
    std::fs::write(d.join("alipay.key"), fake_alipay::alipay_private_pem()).unwrap();
    openssl(d, &["genrsa", "-out", "root.key", "2048"]);
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "root.key",
            "-sha256",
            "-days",
            "3650",
            "-set_serial",
            "4097",
            "-subj",
            "/C=CN/O=Ant Financial/OU=Certification Authority/CN=Ant Financial Certification Authority Class 2 R1",
            "-out",
            "root.crt",
        ],
    );
    openssl(d, &["genrsa", "-out", "root2.key", "2048"]);
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "root2.key",
            "-sha256",
            "-days",
            "3650",
            "-set_serial",
            "4098",
            "-subj",
            "/C=CN/O=Ant Financial/OU=Certification Authority/CN=Ant Financial Certification Authority R1",
            "-out",
            "root2.crt",
        ],
    );
    openssl(
        d,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ec.key",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ec.key",
            "-sha256",
            "-days",
            "3650",
            "-set_serial",
            "7",
            "-subj",
            "/C=CN/O=Ant Financial/OU=Certification Authority/CN=Ant Financial Certification Authority E1",
            "-out",
            "ec.crt",
        ],
    );
    for (name, cn, serial) in [
        ("app", "2021000000000001", "123456789012345678901234"),
        (
            "alipay",
            "支付宝(杭州)信息技术有限公司",
            "987654321098765432109",
        ),
    ] {
        let subj = format!("/C=CN/O=Alipay/OU=Alipay/CN={cn}");
        openssl(
            d,
            &[
                "req",
                "-new",
                "-key",
                &format!("{name}.key"),
                "-subj",
                &subj,
                "-utf8",
                "-out",
                &format!("{name}.csr"),
            ],
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "root.crt",
                "-CAkey",
                "root.key",
                "-set_serial",
                serial,
                "-days",
                "365",
                "-sha256",
                "-out",
                &format!("{name}.crt"),
            ],
        );
    }
    let bundle = ["root.crt", "ec.crt", "root2.crt"]
        .iter()
        .map(|f| std::fs::read_to_string(d.join(f)).unwrap())
        .collect::<String>();
    std::fs::write(d.join("alipayRootCert.crt"), bundle).unwrap();
    Certs {
        app: d.join("app.crt"),
        alipay: d.join("alipay.crt"),
        root: d.join("alipayRootCert.crt"),
        app_sn: sn(d, "app.crt"),
        alipay_sn: sn(d, "alipay.crt"),
        // The EC root is left out: only RSA-signed certificates count, in file order.
        root_sn: format!("{}_{}", sn(d, "root.crt"), sn(d, "root2.crt")),
        dir,
    }
}
