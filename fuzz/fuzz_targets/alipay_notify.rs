//! Alipay's asynchronous notification (a form body): unsigned bytes are refused; any form
//! signed with Alipay's key is parsed or refused, never a panic, and a notification that
//! passes is one for our app with an amount in whole fen.

#![no_main]

use idoctor_gate::config::{AlipayConfig, Secret};
use idoctor_gate::formats::rsa_keys as keys;
use idoctor_gate::payments::alipay::{Alipay, notify_sign_content};
use idoctor_gate::payments::provider::Provider;
use libfuzzer_sys::fuzz_target;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::{Generate, PrivateKey};
use std::collections::BTreeMap;
use std::sync::OnceLock;

const APP_ID: &str = "2021000000000001";

/// The gate's Alipay client and the key Alipay signs with (generated once per run).
fn alipay() -> &'static (Alipay, PrivateKey) {
    static ALIPAY: OnceLock<(Alipay, PrivateKey)> = OnceLock::new();
    ALIPAY.get_or_init(|| {
        let app = PrivateKey::generate();
        let theirs = PrivateKey::generate();
        let gate = Alipay::new(AlipayConfig {
            app_id: APP_ID.into(),
            gateway: "http://127.0.0.1:9/gateway.do".into(),
            alipay_public_key: theirs
                .to_public_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
            private_key: Secret(app.to_pkcs8_pem(LineEnding::LF).unwrap().to_string()),
            seller_id: None,
            checkout: "precreate".into(),
            return_url: None,
            quit_url: "http://127.0.0.1:9/portal/".into(),
            cert_mode: None,
            notify_url: "http://127.0.0.1:9/payments/alipay/notify".into(),
        })
        .expect("the fuzz Alipay config");
        (gate, theirs)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&signed, form)) = data.split_first() else {
        return;
    };
    let (gate, theirs) = alipay();
    let body = if signed % 2 == 1 {
        // Signed as Alipay signs: over every parameter but sign and sign_type.
        let params: BTreeMap<String, String> = form_urlencoded::parse(form).into_owned().collect();
        let sign = keys::sign(theirs, notify_sign_content(&params).as_bytes());
        let mut body = form.to_vec();
        body.extend_from_slice(b"&");
        body.extend_from_slice(
            form_urlencoded::Serializer::new(String::new())
                .append_pair("sign", &sign)
                .finish()
                .as_bytes(),
        );
        body
    } else {
        form.to_vec()
    };
    let Ok(notice) = gate.verify_notification(&http::HeaderMap::new(), &body) else {
        return;
    };
    let params: BTreeMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    assert_eq!(params.get("app_id").map(String::as_str), Some(APP_ID));
    assert!(!notice.event_id.is_empty());
    assert!(notice.amount_fen.get() >= 0, "{notice:?}");
});
