//! WeChat Pay's callback (a signed JSON envelope around an AES-GCM resource): unsigned bytes
//! are refused; any envelope and resource plaintext, encrypted with the APIv3 key and signed
//! with the platform key, is parsed or refused, never a panic, and a callback that passes
//! names our merchant, an event id and an amount in whole fen.

#![no_main]

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use arbitrary::Arbitrary;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use idoctor_gate::config::{Secret, WechatConfig};
use idoctor_gate::formats::rsa_keys as keys;
use idoctor_gate::payments::provider::{NotificationKind, Provider};
use idoctor_gate::payments::wechat::{Wechat, response_message};
use libfuzzer_sys::fuzz_target;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::{Generate, PrivateKey};
use std::sync::OnceLock;

const MCHID: &str = "1900000001";
const APPID: &str = "wx0000000000000001";
const KEY_ID: &str = "PUB_KEY_ID_0114232134912410000000000000";
const API_V3_KEY: &str = "0123456789abcdefghijABCDEFGHIJ01";

#[derive(Arbitrary, Debug)]
struct Callback {
    /// Signed and encrypted as WeChat Pay would, or sent as the raw bytes below.
    signed: bool,
    event_type: String,
    id: String,
    algorithm: Option<String>,
    nonce: String,
    associated_data: String,
    /// The resource's plaintext (JSON when the fuzzer finds it).
    resource: Vec<u8>,
    /// Extra members of the envelope, as JSON text.
    raw: Vec<u8>,
    timestamp_skew: i16,
}

fn wechat() -> &'static (Wechat, PrivateKey) {
    static WECHAT: OnceLock<(Wechat, PrivateKey)> = OnceLock::new();
    WECHAT.get_or_init(|| {
        let merchant = PrivateKey::generate();
        let platform = PrivateKey::generate();
        let gate = Wechat::new(WechatConfig {
            mchid: MCHID.into(),
            appid: APPID.into(),
            api_base: "http://127.0.0.1:9".into(),
            merchant_serial_no: "5157F09EFDC096DE15EBE81A47057A7232F1B8E1".into(),
            private_key: Secret(merchant.to_pkcs8_pem(LineEnding::LF).unwrap().to_string()),
            api_v3_key: Secret(API_V3_KEY.into()),
            public_key: Some((
                KEY_ID.into(),
                platform
                    .to_public_key()
                    .to_public_key_pem(LineEnding::LF)
                    .unwrap(),
            )),
            platform_certificates: vec![],
            notify_url: "http://127.0.0.1:9/payments/wechat/notify".into(),
        })
        .expect("the fuzz WeChat Pay config");
        (gate, platform)
    })
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fuzz_target!(|cb: Callback| {
    let (gate, platform) = wechat();
    let body: Vec<u8> = if cb.signed {
        let nonce: String = cb.nonce.chars().chain(std::iter::repeat('n')).take(12).collect();
        let ciphertext = Aes256Gcm::new_from_slice(API_V3_KEY.as_bytes())
            .unwrap()
            .encrypt(
                &Nonce::try_from(nonce.as_bytes()).unwrap_or_else(|_| Nonce::from([b'n'; 12])),
                Payload {
                    msg: &cb.resource,
                    aad: cb.associated_data.as_bytes(),
                },
            )
            .unwrap();
        let mut envelope: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&cb.raw).unwrap_or_default();
        envelope.insert("id".into(), cb.id.clone().into());
        envelope.insert("event_type".into(), cb.event_type.clone().into());
        envelope.insert(
            "resource".into(),
            serde_json::json!({
                "algorithm": cb.algorithm.clone().unwrap_or_else(|| "AEAD_AES_256_GCM".into()),
                "nonce": nonce,
                "associated_data": cb.associated_data,
                "ciphertext": STANDARD.encode(ciphertext),
            }),
        );
        serde_json::to_vec(&envelope).unwrap()
    } else {
        cb.raw.clone()
    };
    let timestamp = (now() + i64::from(cb.timestamp_skew)).to_string();
    let nonce = "fuzz-nonce";
    let mut headers = http::HeaderMap::new();
    headers.insert("wechatpay-timestamp", timestamp.parse().unwrap());
    headers.insert("wechatpay-nonce", nonce.parse().unwrap());
    headers.insert("wechatpay-serial", KEY_ID.parse().unwrap());
    let signature = if cb.signed {
        keys::sign(platform, &response_message(&timestamp, nonce, &body))
    } else {
        STANDARD.encode(&cb.resource)
    };
    let Ok(signature) = signature.parse() else {
        return;
    };
    headers.insert("wechatpay-signature", signature);
    let Ok(notice) = gate.verify_notification(&headers, &body) else {
        return;
    };
    assert!(cb.signed, "an unsigned callback passed");
    assert!(!notice.event_id.is_empty());
    assert!(notice.amount_fen.get() >= 0, "{notice:?}");
    if let NotificationKind::Refund { amount_fen, .. } = notice.kind {
        assert!(amount_fen.get() >= 0, "{notice:?}");
    }
    let plain: serde_json::Value = serde_json::from_slice(&cb.resource).expect("a JSON resource");
    assert_eq!(plain["mchid"], MCHID);
});
