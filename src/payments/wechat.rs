//! WeChat Pay API v3 (direct merchant): Native QR codes, query, close, refund.
//!
//! Requests carry `Authorization: WECHATPAY2-SHA256-RSA2048 ...` over
//! `METHOD\nPATH?QUERY\nTIMESTAMP\nNONCE\nBODY\n`, signed with the merchant key. Responses and
//! callbacks are verified over `TIMESTAMP\nNONCE\nRAW_BODY\n` with the key `Wechatpay-Serial`
//! names: the WeChat Pay public key (`PUB_KEY_ID_...`) or a platform certificate (its serial);
//! more than five minutes of clock skew, an unknown serial, or a `WECHATPAY/SIGNTEST/` probe
//! fails. Callback resources are opened with AES-256-GCM under the APIv3 key.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use axum::body::Body;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use rsa::pkcs8::DecodePublicKey;
use rsa::{PrivateKey, PublicKey};
use std::collections::HashMap;
use std::time::Duration;
use x509_cert::der::{DecodePem, Encode};

use super::provider::{BoxFuture, Checkout, Notification, NotificationKind, Provider, TradeState};
use crate::config::WechatConfig;
use crate::formats::money::Fen;
use crate::formats::rsa_keys as keys;
use crate::store::{PaymentRow, RefundStatus};

/// Largest clock skew accepted on a signed response or callback.
pub const MAX_SKEW_SECS: i64 = 300;

pub struct Wechat {
    cfg: WechatConfig,
    private_key: PrivateKey,
    /// Verification keys by serial (certificate serial, uppercase hex) or public key ID.
    verifiers: HashMap<String, PublicKey>,
    http: reqwest::Client,
}

/// The uppercase hex serial of a certificate, without DER's leading zero bytes.
pub fn certificate_serial_and_key(pem: &str) -> Result<(String, PublicKey), String> {
    let cert = x509_cert::Certificate::from_pem(pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    let tbs = cert.tbs_certificate();
    let raw = tbs.serial_number().as_bytes();
    let first = raw
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    let serial: String = raw[first..].iter().map(|b| format!("{b:02X}")).collect();
    let spki = tbs
        .subject_public_key_info()
        .to_der()
        .map_err(|e| e.to_string())?;
    let key = PublicKey::from_public_key_der(&spki)
        .map_err(|e| format!("the certificate's key is not RSA: {e}"))?;
    Ok((serial, key))
}

/// The message a request signature covers.
pub fn request_message(
    method: &str,
    path_and_query: &str,
    timestamp: i64,
    nonce: &str,
    body: &str,
) -> String {
    format!("{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{body}\n")
}

/// The message a response or callback signature covers.
pub fn response_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(body.len() + 64);
    m.extend_from_slice(timestamp.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(nonce.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

/// Opens an `AEAD_AES_256_GCM` resource: key = the APIv3 key's 32 ASCII bytes, nonce = 12
/// ASCII bytes, input = base64(ciphertext || tag).
pub fn decrypt_resource(
    api_v3_key: &str,
    nonce: &str,
    associated_data: &str,
    ciphertext_b64: &str,
) -> Result<Vec<u8>, String> {
    let gcm = Aes256Gcm::new_from_slice(api_v3_key.as_bytes())
        .map_err(|_| "the APIv3 key is not 32 bytes")?;
    let nonce = Nonce::try_from(nonce.as_bytes()).map_err(|_| "the nonce is not 12 bytes")?;
    let ct = STANDARD
        .decode(ciphertext_b64)
        .map_err(|_| "the ciphertext is not base64")?;
    gcm.decrypt(
        &nonce,
        Payload {
            msg: &ct,
            aad: associated_data.as_bytes(),
        },
    )
    .map_err(|_| "the resource does not decrypt (wrong key, nonce or tampered)".to_string())
}

fn now_secs() -> i64 {
    crate::store::now_ms() / 1000
}

impl Wechat {
    pub fn new(cfg: WechatConfig) -> Result<Wechat, String> {
        let private_key = keys::private_key(cfg.private_key.expose())
            .map_err(|_| "payments.wechat: the merchant private key does not parse".to_string())?;
        let mut verifiers = HashMap::new();
        if let Some((id, key)) = &cfg.public_key {
            verifiers.insert(id.clone(), keys::public_key(key)?);
        }
        for pem in &cfg.platform_certificates {
            let (serial, key) = certificate_serial_and_key(pem)?;
            verifiers.insert(serial, key);
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| format!("payments.wechat: {e}"))?;
        Ok(Wechat {
            cfg,
            private_key,
            verifiers,
            http,
        })
    }

    /// The `Authorization` header of a request.
    pub fn authorization(&self, method: &str, path_and_query: &str, body: &str) -> String {
        let timestamp = now_secs();
        let nonce = crate::auth::random::hex(16).to_uppercase();
        let signature = keys::sign(
            &self.private_key,
            request_message(method, path_and_query, timestamp, &nonce, body).as_bytes(),
        );
        format!(
            "WECHATPAY2-SHA256-RSA2048 mchid=\"{}\",nonce_str=\"{nonce}\",timestamp=\"{timestamp}\",serial_no=\"{}\",signature=\"{signature}\"",
            self.cfg.mchid, self.cfg.merchant_serial_no
        )
    }

    /// Verifies the `Wechatpay-*` headers over `body`.
    pub fn verify_signed(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
        let h = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
        };
        let (Some(ts), Some(nonce), Some(sig), Some(serial)) = (
            h("wechatpay-timestamp"),
            h("wechatpay-nonce"),
            h("wechatpay-signature"),
            h("wechatpay-serial"),
        ) else {
            return Err("missing Wechatpay signature headers".into());
        };
        if sig.starts_with("WECHATPAY/SIGNTEST/") {
            return Err("a signature probe".into());
        }
        let t: i64 = ts.parse().map_err(|_| "the timestamp is not a number")?;
        if (now_secs() - t).abs() >= MAX_SKEW_SECS {
            return Err(format!("timestamp {t} is more than {MAX_SKEW_SECS} s off"));
        }
        let key = self
            .verifiers
            .get(serial)
            .ok_or_else(|| format!("unknown serial {serial}"))?;
        if !keys::verify(key, &response_message(ts, nonce, body), sig) {
            return Err("bad signature".into());
        }
        Ok(())
    }

    /// Sends a signed request; verifies the signed answer; returns its status and body.
    async fn call(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, Vec<u8>), String> {
        let body_text = body.map(|b| b.to_string()).unwrap_or_default();
        let auth = self.authorization(method.as_str(), path_and_query, &body_text);
        let mut req = self
            .http
            .request(method, format!("{}{path_and_query}", self.cfg.api_base))
            .header("authorization", auth)
            .header("accept", "application/json")
            .header("user-agent", "idoctor-gate");
        if let Some((id, _)) = &self.cfg.public_key {
            req = req.header("wechatpay-serial", id);
        }
        if !body_text.is_empty() {
            req = req
                .header("content-type", "application/json")
                .body(body_text);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("WeChat Pay unreachable: {e}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| format!("WeChat Pay reply unreadable: {e}"))?
            .to_vec();
        if (200..300).contains(&status) {
            self.verify_signed(&headers, &bytes)
                .map_err(|e| format!("WeChat Pay's reply does not verify: {e}"))?;
        }
        Ok((status, bytes))
    }

    fn error_of(status: u16, body: &[u8]) -> String {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        format!("{status} {}", v["code"].as_str().unwrap_or("?"))
    }
}

impl Provider for Wechat {
    fn name(&self) -> &'static str {
        "wechat"
    }

    fn create<'a>(
        &'a self,
        order: &'a PaymentRow,
        subject: &'a str,
    ) -> BoxFuture<'a, Result<Checkout, String>> {
        Box::pin(async move {
            let description: String = subject.chars().take(127).collect();
            let body = serde_json::json!({
                "appid": self.cfg.appid,
                "mchid": self.cfg.mchid,
                "description": description,
                "out_trade_no": order.order_no,
                "notify_url": self.cfg.notify_url,
                "amount": {"total": order.amount_fen, "currency": order.currency},
            });
            let (status, bytes) = self
                .call(
                    reqwest::Method::POST,
                    "/v3/pay/transactions/native",
                    Some(body),
                )
                .await?;
            if status != 200 {
                return Err(Self::error_of(status, &bytes));
            }
            let v: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|_| "malformed answer")?;
            let url = v["code_url"].as_str().ok_or("no code_url")?.to_string();
            Ok(Checkout {
                payment_url: Some(url.clone()),
                qr_code: Some(url),
            })
        })
    }

    fn query<'a>(&'a self, order: &'a PaymentRow) -> BoxFuture<'a, Result<TradeState, String>> {
        Box::pin(async move {
            let path = format!(
                "/v3/pay/transactions/out-trade-no/{}?mchid={}",
                order.order_no, self.cfg.mchid
            );
            let (status, bytes) = self.call(reqwest::Method::GET, &path, None).await?;
            if status == 404 {
                return Ok(TradeState::Pending);
            }
            if status != 200 {
                return Err(Self::error_of(status, &bytes));
            }
            let v: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|_| "malformed answer")?;
            if v["mchid"].as_str() != Some(self.cfg.mchid.as_str())
                || v["appid"].as_str() != Some(self.cfg.appid.as_str())
            {
                return Err("the answer is for another merchant".into());
            }
            match v["trade_state"].as_str().unwrap_or("") {
                "SUCCESS" => Ok(TradeState::Paid {
                    trade_no: v["transaction_id"].as_str().unwrap_or("").to_string(),
                    amount_fen: Fen::new(v["amount"]["total"].as_i64().ok_or("no amount")?),
                }),
                "CLOSED" | "REVOKED" | "PAYERROR" => Ok(TradeState::Closed),
                _ => Ok(TradeState::Pending),
            }
        })
    }

    fn close<'a>(&'a self, order: &'a PaymentRow) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let path = format!("/v3/pay/transactions/out-trade-no/{}/close", order.order_no);
            let (status, bytes) = self
                .call(
                    reqwest::Method::POST,
                    &path,
                    Some(serde_json::json!({"mchid": self.cfg.mchid})),
                )
                .await?;
            match status {
                200 | 204 => Ok(()),
                _ if Self::error_of(status, &bytes).ends_with("ORDER_CLOSED") => Ok(()),
                _ => Err(Self::error_of(status, &bytes)),
            }
        })
    }

    fn refund<'a>(
        &'a self,
        order: &'a PaymentRow,
        refund_no: &'a str,
        amount_fen: Fen,
    ) -> BoxFuture<'a, Result<RefundStatus, String>> {
        Box::pin(async move {
            // Its REFUND.* callbacks come to the same notify URL as the payments'.
            let body = serde_json::json!({
                "out_trade_no": order.order_no,
                "out_refund_no": refund_no,
                "notify_url": self.cfg.notify_url,
                "amount": {"refund": amount_fen, "total": order.amount_fen, "currency": order.currency},
            });
            let (status, bytes) = self
                .call(
                    reqwest::Method::POST,
                    "/v3/refund/domestic/refunds",
                    Some(body),
                )
                .await?;
            if status != 200 {
                return Err(Self::error_of(status, &bytes));
            }
            let v: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|_| "malformed answer")?;
            match v["status"].as_str() {
                Some("SUCCESS") => Ok(RefundStatus::Succeeded),
                Some("PROCESSING") => Ok(RefundStatus::Requested),
                other => Err(format!("refund status {}", other.unwrap_or("?"))),
            }
        })
    }

    fn verify_notification(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Notification, String> {
        self.verify_signed(headers, body)?;
        let env: serde_json::Value =
            serde_json::from_slice(body).map_err(|_| "the envelope is not JSON")?;
        let event_id = env["id"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or("no event id")?
            .to_string();
        let r = &env["resource"];
        if r["algorithm"].as_str() != Some("AEAD_AES_256_GCM") {
            return Err("unsupported resource algorithm".into());
        }
        let plain = decrypt_resource(
            self.cfg.api_v3_key.expose(),
            r["nonce"].as_str().unwrap_or(""),
            r["associated_data"].as_str().unwrap_or(""),
            r["ciphertext"].as_str().unwrap_or(""),
        )?;
        let t: serde_json::Value =
            serde_json::from_slice(&plain).map_err(|_| "the resource is not JSON")?;
        if t["mchid"].as_str() != Some(self.cfg.mchid.as_str()) {
            return Err(format!("mchid {} is not ours", t["mchid"]));
        }
        let event_type = env["event_type"].as_str().unwrap_or("");
        // A refund's resource names the merchant only (no appid).
        if let Some(outcome) = event_type.strip_prefix("REFUND.") {
            let status = match (outcome, t["refund_status"].as_str().unwrap_or("")) {
                ("SUCCESS", "SUCCESS") => RefundStatus::Succeeded,
                ("ABNORMAL", "ABNORMAL") => RefundStatus::Abnormal,
                ("CLOSED", "CLOSED") => RefundStatus::Closed,
                (event, state) => return Err(format!("refund event {event} with status {state}")),
            };
            let amount = &t["amount"];
            return Ok(Notification {
                event_id,
                order_no: t["out_trade_no"].as_str().unwrap_or("").to_string(),
                trade_no: t["transaction_id"].as_str().unwrap_or("").to_string(),
                amount_fen: Fen::new(amount["total"].as_i64().ok_or("no amount.total")?),
                kind: NotificationKind::Refund {
                    refund_no: t["out_refund_no"]
                        .as_str()
                        .filter(|s| !s.is_empty())
                        .ok_or("no out_refund_no")?
                        .to_string(),
                    amount_fen: Fen::new(amount["refund"].as_i64().ok_or("no amount.refund")?),
                    status,
                },
            });
        }
        if t["appid"].as_str() != Some(self.cfg.appid.as_str()) {
            return Err(format!("appid {} is not ours", t["appid"]));
        }
        let kind = match (event_type, t["trade_state"].as_str().unwrap_or("")) {
            ("TRANSACTION.SUCCESS", "SUCCESS")
                if t["amount"]["currency"].as_str().unwrap_or("CNY") == "CNY" =>
            {
                NotificationKind::Paid
            }
            (other, state) => NotificationKind::Other(format!("{other}/{state}")),
        };
        Ok(Notification {
            event_id,
            order_no: t["out_trade_no"].as_str().unwrap_or("").to_string(),
            trade_no: t["transaction_id"].as_str().unwrap_or("").to_string(),
            amount_fen: Fen::new(t["amount"]["total"].as_i64().ok_or("no amount.total")?),
            kind,
        })
    }

    fn ack(&self, ok: bool) -> Response<Body> {
        if ok {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            return r;
        }
        let mut r = Response::new(Body::from(r#"{"code":"FAIL","message":"失败"}"#));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_documented_shape() {
        assert_eq!(
            request_message(
                "GET",
                "/v3/pay/transactions/out-trade-no/SUB-1?mchid=1900000001",
                1700000000,
                "ABC123",
                ""
            ),
            "GET\n/v3/pay/transactions/out-trade-no/SUB-1?mchid=1900000001\n1700000000\nABC123\n\n"
        );
        assert_eq!(response_message("1", "n", b""), b"1\nn\n\n");
    }

    #[test]
    fn decryption_refuses_bad_lengths_and_tampering() {
        let key = "0123456789abcdef0123456789abcdef";
        let gcm = Aes256Gcm::new_from_slice(key.as_bytes()).unwrap();
        let nonce = Nonce::try_from(&b"abcdefghijkl"[..]).unwrap();
        let ct = gcm
            .encrypt(
                &nonce,
                Payload {
                    msg: b"{\"a\":1}",
                    aad: b"transaction",
                },
            )
            .unwrap();
        let b64 = STANDARD.encode(&ct);
        assert_eq!(
            decrypt_resource(key, "abcdefghijkl", "transaction", &b64).unwrap(),
            b"{\"a\":1}"
        );
        assert!(
            decrypt_resource(key, "abcdefghijkl", "certificate", &b64).is_err(),
            "other associated data"
        );
        assert!(decrypt_resource(key, "short", "transaction", &b64).is_err());
        assert!(decrypt_resource("short-key", "abcdefghijkl", "transaction", &b64).is_err());
        let mut tampered = ct.clone();
        tampered[0] ^= 1;
        assert!(
            decrypt_resource(
                key,
                "abcdefghijkl",
                "transaction",
                &STANDARD.encode(tampered)
            )
            .is_err()
        );
    }
}
