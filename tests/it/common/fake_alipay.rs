//! A local Alipay gateway: it checks request signatures as the real one does (all parameters
//! but `sign`, `sign_type` included), keeps trades, answers with responses signed over their
//! exact text, and builds notifications signed by the V1 rule. Keys are generated per process.

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use idoctor_gate::formats::rsa_keys as keys;
use idoctor_gate::payments::alipay::{notify_sign_content, request_sign_content};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::{Generate, PrivateKey, PublicKey};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

pub const APP_ID: &str = "2021000000000001";
pub const SELLER_ID: &str = "2088000000000001";

/// (app key, Alipay key), generated once per test process (RSA key generation is slow).
fn key_pair() -> &'static (PrivateKey, PrivateKey) {
    static KEYS: OnceLock<(PrivateKey, PrivateKey)> = OnceLock::new();
    KEYS.get_or_init(|| (PrivateKey::generate(), PrivateKey::generate()))
}

pub fn app_private_pem() -> String {
    key_pair()
        .0
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap()
        .to_string()
}

/// Alipay's private key, for making its certificate in the certificate-mode tests.
pub fn alipay_private_pem() -> String {
    key_pair()
        .1
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap()
        .to_string()
}

pub fn alipay_public_pem() -> String {
    key_pair()
        .1
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap()
}

#[derive(Default)]
pub struct Trades {
    /// out_trade_no -> (total_amount, paid)
    pub trades: HashMap<String, (String, bool)>,
    /// Every call: method and its parameters.
    pub calls: Vec<(String, BTreeMap<String, String>)>,
    /// Sign responses with a wrong key (a forged gateway).
    pub forge_responses: bool,
    /// Certificate mode: the `app_cert_sn` and `alipay_root_cert_sn` every request must carry.
    pub cert_sns: Option<(String, String)>,
    /// Certificate mode: the `alipay_cert_sn` the replies name.
    pub alipay_cert_sn: Option<String>,
}

pub struct FakeAlipay {
    pub url: String,
    pub state: Arc<Mutex<Trades>>,
}

impl FakeAlipay {
    pub async fn start() -> FakeAlipay {
        let state: Arc<Mutex<Trades>> = Arc::default();
        let app = Router::new()
            .route("/gateway.do", post(gateway))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/gateway.do", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeAlipay { url, state }
    }

    /// Marks a trade as paid at Alipay (as if the buyer scanned and paid).
    pub fn pay(&self, order_no: &str) {
        let mut s = self.state.lock().unwrap();
        if let Some(t) = s.trades.get_mut(order_no) {
            t.1 = true;
        }
    }

    pub fn calls(&self, method: &str) -> Vec<BTreeMap<String, String>> {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| c.0 == method)
            .map(|c| c.1.clone())
            .collect()
    }

    /// A trade notification, form-encoded and signed as Alipay signs it.
    pub fn notification(
        &self,
        notify_id: &str,
        order_no: &str,
        amount: &str,
        status: &str,
        app_id: &str,
    ) -> String {
        self.notification_with(notify_id, order_no, amount, status, app_id, &[])
    }

    /// The notice of a (partial) refund: `trade_status` stays TRADE_SUCCESS, with the refund's
    /// request number (`out_biz_no`), `refund_fee` and `gmt_refund`.
    pub fn refund_notification(
        &self,
        notify_id: &str,
        order_no: &str,
        out_biz_no: &str,
        refund_fee: &str,
    ) -> String {
        self.notification_with(
            notify_id,
            order_no,
            "99.00",
            "TRADE_SUCCESS",
            APP_ID,
            &[
                ("out_biz_no", out_biz_no),
                ("refund_fee", refund_fee),
                ("gmt_refund", "2026-11-26 12:00:00.123"),
            ],
        )
    }

    fn notification_with(
        &self,
        notify_id: &str,
        order_no: &str,
        amount: &str,
        status: &str,
        app_id: &str,
        extra: &[(&str, &str)],
    ) -> String {
        let mut p = BTreeMap::new();
        for (k, v) in extra {
            p.insert(k.to_string(), v.to_string());
        }
        for (k, v) in [
            ("notify_time", "2026-11-25 12:00:00"),
            ("notify_type", "trade_status_sync"),
            ("notify_id", notify_id),
            ("app_id", app_id),
            ("charset", "utf-8"),
            ("version", "1.0"),
            ("sign_type", "RSA2"),
            ("trade_no", &format!("2026112522001{}", &order_no[..8])),
            ("out_trade_no", order_no),
            ("trade_status", status),
            ("total_amount", amount),
            ("seller_id", SELLER_ID),
            ("subject", "iDoctor 专业版"),
            ("gmt_payment", "2026-11-25 11:59:58"),
        ] {
            p.insert(k.to_string(), v.to_string());
        }
        let sign = keys::sign(&key_pair().1, notify_sign_content(&p).as_bytes());
        p.insert("sign".into(), sign);
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(p.iter())
            .finish()
    }
}

fn respond(state: &Trades, method: &str, inner: serde_json::Value) -> String {
    let key = format!("{}_response", method.replace('.', "_"));
    let inner = inner.to_string();
    let signer = if state.forge_responses {
        &key_pair().0
    } else {
        &key_pair().1
    };
    let sign = keys::sign(signer, inner.as_bytes());
    match &state.alipay_cert_sn {
        Some(sn) => {
            format!("{{\"{key}\":{inner},\"alipay_cert_sn\":\"{sn}\",\"sign\":\"{sign}\"}}")
        }
        None => format!("{{\"{key}\":{inner},\"sign\":\"{sign}\"}}"),
    }
}

/// Whether request parameters are signed (RSA2) with the app's key, for its app id: what the
/// gateway checks of every call, and of the parameters of a page or wap checkout URL.
pub fn signed_by_the_app(params: &BTreeMap<String, String>) -> bool {
    let app_public: PublicKey = key_pair().0.to_public_key();
    let signed = params
        .get("sign")
        .is_some_and(|sig| keys::verify(&app_public, request_sign_content(params).as_bytes(), sig));
    signed
        && params.get("app_id").map(String::as_str) == Some(APP_ID)
        && params.get("sign_type").map(String::as_str) == Some("RSA2")
}

async fn gateway(State(state): State<Arc<Mutex<Trades>>>, body: axum::body::Bytes) -> String {
    let params: BTreeMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let method = params.get("method").cloned().unwrap_or_default();
    let mut s = state.lock().unwrap();
    s.calls.push((method.clone(), params.clone()));
    let wrong_sns = s.cert_sns.as_ref().is_some_and(|(app, root)| {
        params.get("app_cert_sn") != Some(app) || params.get("alipay_root_cert_sn") != Some(root)
    });
    if wrong_sns {
        return respond(
            &s,
            &method,
            serde_json::json!({"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-app-cert-sn"}),
        );
    }
    if !signed_by_the_app(&params) {
        return respond(
            &s,
            &method,
            serde_json::json!({"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-signature"}),
        );
    }
    let biz: serde_json::Value = serde_json::from_str(
        params
            .get("biz_content")
            .map(String::as_str)
            .unwrap_or("{}"),
    )
    .unwrap_or_default();
    let no = biz["out_trade_no"].as_str().unwrap_or_default().to_string();
    let inner = match method.as_str() {
        "alipay.trade.precreate" => {
            let amount = biz["total_amount"].as_str().unwrap_or_default().to_string();
            s.trades.insert(no.clone(), (amount, false));
            serde_json::json!({"code": "10000", "msg": "Success", "out_trade_no": no, "qr_code": format!("https://qr.alipay.com/bax{}", &no[..12])})
        }
        "alipay.trade.query" => match s.trades.get(&no) {
            Some((amount, true)) => {
                serde_json::json!({"code": "10000", "msg": "Success", "out_trade_no": no,
                "trade_no": format!("2026112522001{}", &no[..8]), "trade_status": "TRADE_SUCCESS", "total_amount": amount})
            }
            Some((amount, false)) => {
                serde_json::json!({"code": "10000", "msg": "Success", "out_trade_no": no, "trade_status": "WAIT_BUYER_PAY", "total_amount": amount})
            }
            None => {
                serde_json::json!({"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.TRADE_NOT_EXIST"})
            }
        },
        "alipay.trade.close" => match s.trades.get(&no) {
            Some(_) => serde_json::json!({"code": "10000", "msg": "Success", "out_trade_no": no}),
            None => {
                serde_json::json!({"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.TRADE_NOT_EXIST"})
            }
        },
        "alipay.trade.refund" => {
            serde_json::json!({"code": "10000", "msg": "Success", "out_trade_no": no,
            "refund_fee": biz["refund_amount"], "fund_change": "Y"})
        }
        _ => {
            serde_json::json!({"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-method"})
        }
    };
    respond(&s, &method, inner)
}
