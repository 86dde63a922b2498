//! A local WeChat Pay API v3: it checks the merchant's `Authorization` signatures, keeps
//! orders, signs every answer (204 included) with its platform key, and builds callbacks with
//! AES-256-GCM resources. It signs as the WeChat Pay public key (`PUB_KEY_ID_...`) or as a
//! platform certificate made with openssl from the same key.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use idoctor_gate::formats::rsa_keys as keys;
use idoctor_gate::payments::wechat::{request_message, response_message};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::{Generate, PrivateKey};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

pub const MCHID: &str = "1900000001";
pub const APPID: &str = "wx8888888888888888";
pub const MERCHANT_SERIAL: &str = "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB";
pub const PUBLIC_KEY_ID: &str = "PUB_KEY_ID_0114232134912410000000000000";
pub const API_V3_KEY: &str = "0123456789abcdefghijABCDEFGHIJ01";

/// (merchant key, platform key), once per test process.
fn key_pair() -> &'static (PrivateKey, PrivateKey) {
    static KEYS: OnceLock<(PrivateKey, PrivateKey)> = OnceLock::new();
    KEYS.get_or_init(|| (PrivateKey::generate(), PrivateKey::generate()))
}

pub fn merchant_private_pem() -> String {
    key_pair()
        .0
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap()
        .to_string()
}

pub fn platform_public_pem() -> String {
    key_pair()
        .1
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap()
}

/// A self-signed platform certificate over the platform key, with a serial whose high bit is
/// set (DER then stores a leading zero byte the serial must not show). Returns (PEM, serial).
pub fn platform_certificate(dir: &std::path::Path) -> (String, String) {
    let key = dir.join("platform_key.pem");
    std::fs::write(
        &key,
        key_pair()
            .1
            .to_pkcs8_pem(LineEnding::LF)
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    let cert = dir.join("platform_cert.pem");
    let serial = "9157F09EFDC096DE15EBE81A47057A7232F1B8E1";
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-new",
            "-x509",
            "-days",
            "2",
            "-subj",
            "/CN=Tenpay.com Root CA/O=Tenpay.com",
            "-set_serial",
        ])
        .arg(format!("0x{serial}"))
        .arg("-key")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl makes the test certificate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (std::fs::read_to_string(cert).unwrap(), serial.to_string())
}

#[derive(Default)]
pub struct Orders {
    /// out_trade_no -> (total fen, paid)
    pub orders: HashMap<String, (i64, bool)>,
    pub calls: Vec<(String, String, String)>,
    /// The serial the fake signs with (a public key id or a certificate serial).
    pub serial: String,
}

pub struct FakeWechat {
    pub url: String,
    pub state: Arc<Mutex<Orders>>,
}

fn signed(state: &Orders, status: StatusCode, body: String) -> Response {
    let ts = (idoctor_gate::store::now_ms() / 1000).to_string();
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let sig = keys::sign(
        &key_pair().1,
        &response_message(&ts, &nonce, body.as_bytes()),
    );
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert("wechatpay-timestamp", ts.parse().unwrap());
    h.insert("wechatpay-nonce", nonce.parse().unwrap());
    h.insert("wechatpay-serial", state.serial.parse().unwrap());
    h.insert("wechatpay-signature", sig.parse().unwrap());
    h.insert(
        "wechatpay-signature-type",
        "WECHATPAY2-SHA256-RSA2048".parse().unwrap(),
    );
    r
}

fn authorized(method: &Method, uri: &Uri, headers: &HeaderMap, body: &str) -> bool {
    let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(rest) = auth.strip_prefix("WECHATPAY2-SHA256-RSA2048 ") else {
        return false;
    };
    let pairs: HashMap<&str, &str> = rest
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim().trim_matches('"')))
        .collect();
    let (Some(ts), Some(nonce), Some(sig)) = (
        pairs.get("timestamp"),
        pairs.get("nonce_str"),
        pairs.get("signature"),
    ) else {
        return false;
    };
    let Ok(ts) = ts.parse::<i64>() else {
        return false;
    };
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("");
    pairs.get("mchid") == Some(&MCHID)
        && pairs.get("serial_no") == Some(&MERCHANT_SERIAL)
        && keys::verify(
            &key_pair().0.to_public_key(),
            request_message(method.as_str(), pq, ts, nonce, body).as_bytes(),
            sig,
        )
}

async fn api(
    State(state): State<Arc<Mutex<Orders>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = String::from_utf8_lossy(&body).to_string();
    let mut s = state.lock().unwrap();
    s.calls
        .push((method.to_string(), uri.to_string(), body.clone()));
    if !authorized(&method, &uri, &headers, &body) {
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"code":"SIGN_ERROR","message":"错误的签名，验签失败"}"#,
        )
            .into_response();
    }
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let path = uri.path().to_string();
    if path == "/v3/pay/transactions/native" {
        let no = v["out_trade_no"].as_str().unwrap_or_default().to_string();
        s.orders.insert(
            no.clone(),
            (v["amount"]["total"].as_i64().unwrap_or(0), false),
        );
        let out =
            serde_json::json!({"code_url": format!("weixin://wxpay/bizpayurl?pr={}", &no[..10])})
                .to_string();
        return signed(&s, StatusCode::OK, out);
    }
    if let Some(rest) = path.strip_prefix("/v3/pay/transactions/out-trade-no/") {
        if let Some(no) = rest.strip_suffix("/close") {
            return match s.orders.get(no) {
                Some(_) => signed(&s, StatusCode::NO_CONTENT, String::new()),
                None => signed(
                    &s,
                    StatusCode::NOT_FOUND,
                    r#"{"code":"ORDER_NOT_EXIST","message":"订单不存在"}"#.into(),
                ),
            };
        }
        let out = match s.orders.get(rest) {
            Some((total, paid)) => {
                serde_json::json!({"appid": APPID, "mchid": MCHID, "out_trade_no": rest,
                "transaction_id": format!("4200000000{}", &rest[..8]), "trade_state": if *paid {"SUCCESS"} else {"NOTPAY"},
                "amount": {"total": total, "currency": "CNY"}})
            }
            None => {
                return signed(
                    &s,
                    StatusCode::NOT_FOUND,
                    r#"{"code":"ORDER_NOT_EXIST","message":"订单不存在"}"#.into(),
                );
            }
        };
        return signed(&s, StatusCode::OK, out.to_string());
    }
    if path == "/v3/refund/domestic/refunds" {
        let out = serde_json::json!({"refund_id": "50000000", "out_refund_no": v["out_refund_no"], "status": "SUCCESS", "amount": v["amount"]});
        return signed(&s, StatusCode::OK, out.to_string());
    }
    (StatusCode::NOT_FOUND, r#"{"code":"NOT_FOUND"}"#).into_response()
}

impl FakeWechat {
    pub async fn start(serial: &str) -> FakeWechat {
        let state = Arc::new(Mutex::new(Orders {
            serial: serial.to_string(),
            ..Orders::default()
        }));
        let app = Router::new().fallback(api).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeWechat { url, state }
    }

    pub fn pay(&self, order_no: &str) {
        if let Some(o) = self.state.lock().unwrap().orders.get_mut(order_no) {
            o.1 = true;
        }
    }

    pub fn calls(&self, path_prefix: &str) -> Vec<(String, String, String)> {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| c.1.starts_with(path_prefix))
            .cloned()
            .collect()
    }

    /// A payment callback: (headers as name/value pairs, body). `skew` shifts the timestamp.
    pub fn callback(
        &self,
        event_id: &str,
        order_no: &str,
        total: i64,
        mchid: &str,
        skew: i64,
    ) -> (Vec<(String, String)>, String) {
        let resource = serde_json::json!({"appid": APPID, "mchid": mchid, "out_trade_no": order_no,
            "transaction_id": format!("4200000000{}", &order_no[..8]), "trade_type": "NATIVE", "trade_state": "SUCCESS",
            "success_time": "2026-11-25T12:00:00+08:00", "amount": {"total": total, "payer_total": total, "currency": "CNY", "payer_currency": "CNY"}});
        self.event(
            event_id,
            "TRANSACTION.SUCCESS",
            "支付成功",
            "transaction",
            &resource,
            skew,
        )
    }

    /// A `REFUND.<status>` callback (SUCCESS, ABNORMAL, CLOSED) as WeChat Pay posts it: its
    /// resource names the merchant and no appid.
    pub fn refund_callback(
        &self,
        event_id: &str,
        order_no: &str,
        refund_no: &str,
        (refund, total): (i64, i64),
        status: &str,
        mchid: &str,
    ) -> (Vec<(String, String)>, String) {
        let resource = serde_json::json!({"mchid": mchid, "out_trade_no": order_no,
            "transaction_id": format!("4200000000{}", &order_no[..8]), "out_refund_no": refund_no,
            "refund_id": format!("50000000{}", &order_no[..8]), "refund_status": status,
            "success_time": "2026-11-26T12:00:00+08:00", "user_received_account": "招商银行信用卡0403",
            "amount": {"total": total, "refund": refund, "payer_total": total, "payer_refund": refund}});
        let event_type = format!("REFUND.{status}");
        self.event(
            event_id,
            &event_type,
            "退款结果通知",
            "refund",
            &resource,
            0,
        )
    }

    /// An event signed with the platform key, its resource encrypted with the APIv3 key.
    fn event(
        &self,
        event_id: &str,
        event_type: &str,
        summary: &str,
        original_type: &str,
        resource: &serde_json::Value,
        skew: i64,
    ) -> (Vec<(String, String)>, String) {
        let nonce = &uuid::Uuid::new_v4().simple().to_string()[..12];
        let gcm = Aes256Gcm::new_from_slice(API_V3_KEY.as_bytes()).unwrap();
        let ct = gcm
            .encrypt(
                &Nonce::try_from(nonce.as_bytes()).unwrap(),
                Payload {
                    msg: resource.to_string().as_bytes(),
                    aad: original_type.as_bytes(),
                },
            )
            .unwrap();
        let body = serde_json::json!({"id": event_id, "create_time": "2026-11-25T12:00:01+08:00", "resource_type": "encrypt-resource",
            "event_type": event_type, "summary": summary,
            "resource": {"original_type": original_type, "algorithm": "AEAD_AES_256_GCM", "ciphertext": STANDARD.encode(ct),
                "associated_data": original_type, "nonce": nonce}})
        .to_string();
        let ts = (idoctor_gate::store::now_ms() / 1000 + skew).to_string();
        let hn = uuid::Uuid::new_v4().simple().to_string();
        let sig = keys::sign(&key_pair().1, &response_message(&ts, &hn, body.as_bytes()));
        let serial = self.state.lock().unwrap().serial.clone();
        let headers = vec![
            ("wechatpay-timestamp".to_string(), ts),
            ("wechatpay-nonce".to_string(), hn),
            ("wechatpay-serial".to_string(), serial),
            ("wechatpay-signature".to_string(), sig),
            (
                "wechatpay-signature-type".to_string(),
                "WECHATPAY2-SHA256-RSA2048".to_string(),
            ),
        ];
        (headers, body)
    }
}
