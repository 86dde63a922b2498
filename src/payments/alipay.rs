//! Alipay OpenAPI (`gateway.do`, v2 protocol, RSA2, public-key mode).
//!
//! Requests: every parameter but `sign` (so `sign_type` included), empty ones dropped, sorted
//! by key, joined `k=v` with raw values, signed RSA-SHA256 with the app private key.
//! Synchronous responses: the signature covers the exact raw text of the `<method>_response`
//! object, found by quote-aware brace matching, never a re-serialisation. Notifications: the
//! form without `sign` AND `sign_type`, verified with the Alipay public key, then app id,
//! seller, order and amount checked. An unsigned or unverifiable answer is never success.

use axum::body::Body;
use chrono::{FixedOffset, Utc};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use rsa::{PrivateKey, PublicKey};
use std::collections::BTreeMap;
use std::time::Duration;

use super::provider::{BoxFuture, Checkout, Notification, NotificationKind, Provider, TradeState};
use crate::config::AlipayConfig;
use crate::formats::money::Fen;
use crate::formats::rsa_keys as keys;
use crate::store::{PaymentRow, RefundStatus};

pub struct Alipay {
    cfg: AlipayConfig,
    private_key: PrivateKey,
    alipay_key: PublicKey,
    http: reqwest::Client,
}

/// The string a request signature covers: all but `sign`, no empty values, sorted, raw.
pub fn request_sign_content(params: &BTreeMap<String, String>) -> String {
    join(params.iter().filter(|(k, _)| k.as_str() != "sign"))
}

/// The string a notification signature covers: all but `sign` and `sign_type`.
pub fn notify_sign_content(params: &BTreeMap<String, String>) -> String {
    join(
        params
            .iter()
            .filter(|(k, _)| k.as_str() != "sign" && k.as_str() != "sign_type"),
    )
}

fn join<'a>(it: impl Iterator<Item = (&'a String, &'a String)>) -> String {
    it.filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The exact text of the JSON object that is the value of `key` at the top level of `body`,
/// by quote- and escape-aware brace matching.
pub fn extract_object<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    let needle = format!("\"{key}\"");
    let at = body.find(&needle)? + needle.len();
    let rest = &body[at..];
    let colon = rest.find(':')?;
    let after = &rest[colon + 1..];
    let open = after.find('{')?;
    if !after[..open].trim().is_empty() {
        return None;
    }
    let start = at + colon + 1 + open;
    let bytes = body.as_bytes();
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for (i, &b) in bytes.iter().enumerate().skip(start) {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&body[start..=i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// `yyyy-MM-dd HH:mm:ss` in Beijing time, as the gateway wants it.
fn beijing_now() -> String {
    let tz = FixedOffset::east_opt(8 * 3600).expect("UTC+8");
    Utc::now()
        .with_timezone(&tz)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

impl Alipay {
    pub fn new(cfg: AlipayConfig) -> Result<Alipay, String> {
        let private_key = keys::private_key(cfg.private_key.expose())
            .map_err(|_| "payments.alipay: the app private key does not parse".to_string())?;
        let alipay_key = keys::public_key(&cfg.alipay_public_key)?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| format!("payments.alipay: {e}"))?;
        Ok(Alipay {
            cfg,
            private_key,
            alipay_key,
            http,
        })
    }

    /// All parameters of a call to `method`, signed.
    pub fn signed_params(
        &self,
        method: &str,
        biz: &serde_json::Value,
        with_notify: bool,
    ) -> BTreeMap<String, String> {
        let mut p = BTreeMap::new();
        p.insert("app_id".to_string(), self.cfg.app_id.clone());
        p.insert("method".to_string(), method.to_string());
        p.insert("format".to_string(), "JSON".to_string());
        p.insert("charset".to_string(), "utf-8".to_string());
        p.insert("sign_type".to_string(), "RSA2".to_string());
        p.insert("timestamp".to_string(), beijing_now());
        p.insert("version".to_string(), "1.0".to_string());
        p.insert("biz_content".to_string(), biz.to_string());
        if with_notify {
            p.insert("notify_url".to_string(), self.cfg.notify_url.clone());
        }
        if let (true, Some(r)) = (method.ends_with(".pay"), &self.cfg.return_url) {
            p.insert("return_url".to_string(), r.clone());
        }
        // Certificate mode: both SNs are signed with the rest.
        if let Some(certs) = &self.cfg.cert_mode {
            p.insert("app_cert_sn".to_string(), certs.app_cert_sn.clone());
            p.insert(
                "alipay_root_cert_sn".to_string(),
                certs.alipay_root_cert_sn.clone(),
            );
        }
        let sign = keys::sign(&self.private_key, request_sign_content(&p).as_bytes());
        p.insert("sign".to_string(), sign);
        p
    }

    fn encode(params: &BTreeMap<String, String>) -> String {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter())
            .finish()
    }

    /// Calls a server-side method; returns the verified `<method>_response` object when its
    /// `code` is 10000, or why not (`code/sub_code`, or a verification failure).
    async fn call(
        &self,
        method: &str,
        biz: serde_json::Value,
    ) -> Result<serde_json::Map<String, serde_json::Value>, String> {
        let params = self.signed_params(
            method,
            &biz,
            method != "alipay.trade.query"
                && method != "alipay.trade.close"
                && method != "alipay.trade.refund",
        );
        let resp = self
            .http
            .post(&self.cfg.gateway)
            .header(
                "content-type",
                "application/x-www-form-urlencoded;charset=utf-8",
            )
            .body(Self::encode(&params))
            .send()
            .await
            .map_err(|e| format!("gateway unreachable: {e}"))?;
        let text = resp
            .text()
            .await
            .map_err(|e| format!("gateway reply unreadable: {e}"))?;
        let key = format!("{}_response", method.replace('.', "_"));
        let Some(signed) = extract_object(&text, &key) else {
            return Err("the reply has no signed response object".into());
        };
        let top: serde_json::Value =
            serde_json::from_str(&text).map_err(|_| "the reply is not JSON")?;
        let sign = top
            .get("sign")
            .and_then(|s| s.as_str())
            .ok_or("the reply is not signed")?;
        // Certificate mode: the reply names the Alipay certificate it was signed under (outside
        // the signed object); one other than ours means Alipay rotated it, and nothing signed
        // under a certificate the gate has not checked is trusted.
        if let Some(certs) = &self.cfg.cert_mode {
            let named = top.get("alipay_cert_sn").and_then(|s| s.as_str());
            if named.is_some_and(|sn| sn != certs.alipay_cert_sn) {
                return Err(format!(
                    "the reply is signed under the Alipay certificate {}, not ours ({}): download the new one (alipay.open.app.alipaycert.download) and set alipay_cert_file",
                    named.unwrap_or(""),
                    certs.alipay_cert_sn
                ));
            }
        }
        if !keys::verify(&self.alipay_key, signed.as_bytes(), sign) {
            return Err("the reply's signature does not verify".into());
        }
        let inner: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(signed).map_err(|_| "malformed response object")?;
        let code = inner.get("code").and_then(|c| c.as_str()).unwrap_or("");
        if code != "10000" {
            let sub = inner.get("sub_code").and_then(|c| c.as_str()).unwrap_or("");
            return Err(format!("{code}/{sub}"));
        }
        Ok(inner)
    }

    fn biz(order: &PaymentRow, subject: &str) -> serde_json::Value {
        serde_json::json!({
            "out_trade_no": order.order_no,
            "total_amount": order.amount_fen.to_string(),
            "subject": subject,
        })
    }
}

fn form_map(body: &[u8]) -> BTreeMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

impl Provider for Alipay {
    fn name(&self) -> &'static str {
        "alipay"
    }

    fn create<'a>(
        &'a self,
        order: &'a PaymentRow,
        subject: &'a str,
    ) -> BoxFuture<'a, Result<Checkout, String>> {
        Box::pin(async move {
            let mut biz = Self::biz(order, subject);
            match self.cfg.checkout.as_str() {
                "page" | "wap" => {
                    let (method, product) = if self.cfg.checkout == "page" {
                        ("alipay.trade.page.pay", "FAST_INSTANT_TRADE_PAY")
                    } else {
                        ("alipay.trade.wap.pay", "QUICK_WAP_WAY")
                    };
                    biz["product_code"] = product.into();
                    if method == "alipay.trade.wap.pay" {
                        biz["quit_url"] = self.cfg.quit_url.clone().into();
                    }
                    let params = self.signed_params(method, &biz, true);
                    Ok(Checkout {
                        payment_url: Some(format!(
                            "{}?{}",
                            self.cfg.gateway,
                            Self::encode(&params)
                        )),
                        qr_code: None,
                    })
                }
                _ => {
                    let inner = self.call("alipay.trade.precreate", biz).await?;
                    let qr = inner
                        .get("qr_code")
                        .and_then(|q| q.as_str())
                        .ok_or("precreate returned no qr_code")?;
                    Ok(Checkout {
                        payment_url: Some(qr.to_string()),
                        qr_code: Some(qr.to_string()),
                    })
                }
            }
        })
    }

    fn query<'a>(&'a self, order: &'a PaymentRow) -> BoxFuture<'a, Result<TradeState, String>> {
        Box::pin(async move {
            match self
                .call(
                    "alipay.trade.query",
                    serde_json::json!({"out_trade_no": order.order_no}),
                )
                .await
            {
                Ok(inner) => {
                    let status = inner
                        .get("trade_status")
                        .and_then(|s| s.as_str())
                        .unwrap_or("");
                    let s = |k: &str| {
                        inner
                            .get(k)
                            .and_then(|v| v.as_str())
                            .unwrap_or("")
                            .to_string()
                    };
                    match status {
                        "TRADE_SUCCESS" | "TRADE_FINISHED" => Ok(TradeState::Paid {
                            trade_no: s("trade_no"),
                            amount_fen: Fen::parse(&s("total_amount"))?,
                        }),
                        "TRADE_CLOSED" => Ok(TradeState::Closed),
                        _ => Ok(TradeState::Pending),
                    }
                }
                // Not scanned yet: nothing exists at Alipay.
                Err(e) if e.ends_with("ACQ.TRADE_NOT_EXIST") => Ok(TradeState::Pending),
                Err(e) => Err(e),
            }
        })
    }

    fn close<'a>(&'a self, order: &'a PaymentRow) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            match self
                .call(
                    "alipay.trade.close",
                    serde_json::json!({"out_trade_no": order.order_no}),
                )
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if e.ends_with("ACQ.TRADE_NOT_EXIST") => Ok(()),
                Err(e) => Err(e),
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
            // A refund Alipay accepted is done (`fund_change`); its notice follows.
            self.call(
                "alipay.trade.refund",
                serde_json::json!({
                    "out_trade_no": order.order_no,
                    "refund_amount": amount_fen.to_string(),
                    "out_request_no": refund_no,
                }),
            )
            .await
            .map(|_| RefundStatus::Succeeded)
        })
    }

    fn verify_notification(
        &self,
        _headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Notification, String> {
        let params = form_map(body);
        let sign = params.get("sign").ok_or("no sign")?;
        if params.get("sign_type").is_some_and(|t| t != "RSA2") {
            return Err("sign_type is not RSA2".into());
        }
        if !keys::verify(
            &self.alipay_key,
            notify_sign_content(&params).as_bytes(),
            sign,
        ) {
            return Err("bad signature".into());
        }
        let get = |k: &str| params.get(k).cloned().unwrap_or_default();
        if get("app_id") != self.cfg.app_id {
            return Err(format!("app_id {} is not ours", get("app_id")));
        }
        if let Some(seller) = &self.cfg.seller_id {
            if &get("seller_id") != seller {
                return Err(format!("seller_id {} is not ours", get("seller_id")));
            }
        }
        let amount_fen = Fen::parse(&get("total_amount"))?;
        // A (partial) refund notice carries out_biz_no / gmt_refund and a non-zero refund_fee;
        // a payment notice may carry refund_fee=0.00.
        let refund_notice = !get("out_biz_no").is_empty()
            || !get("gmt_refund").is_empty()
            || Fen::parse(&get("refund_fee")).is_ok_and(|f| !f.is_zero());
        let kind = match get("trade_status").as_str() {
            "TRADE_SUCCESS" | "TRADE_FINISHED" | "TRADE_CLOSED"
                if refund_notice && !get("out_biz_no").is_empty() =>
            {
                NotificationKind::Refund {
                    refund_no: get("out_biz_no"),
                    amount_fen: Fen::parse(&get("refund_fee"))?,
                    status: RefundStatus::Succeeded,
                }
            }
            "TRADE_SUCCESS" | "TRADE_FINISHED" if !refund_notice => NotificationKind::Paid,
            "TRADE_CLOSED" if !refund_notice => NotificationKind::Closed,
            other => NotificationKind::Other(format!(
                "{other}{}",
                if refund_notice { " (refund)" } else { "" }
            )),
        };
        let event_id = get("notify_id");
        if event_id.is_empty() {
            return Err("no notify_id".into());
        }
        Ok(Notification {
            event_id,
            order_no: get("out_trade_no"),
            trade_no: get("trade_no"),
            amount_fen,
            kind,
        })
    }

    fn ack(&self, ok: bool) -> Response<Body> {
        let mut r = Response::new(Body::from(if ok { "success" } else { "fail" }));
        if !ok {
            *r.status_mut() = StatusCode::BAD_REQUEST;
        }
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_content_follows_the_documented_rules() {
        // The documented notification example (A7): sign and sign_type removed, sorted, raw.
        let mut p = BTreeMap::new();
        for (k, v) in [
            ("sign", "x"),
            ("sign_type", "RSA2"),
            ("trade_status", "TRADE_SUCCESS"),
            ("app_id", "2015102700040153"),
            ("gmt_payment", "2016-07-19 14:10:47"),
            ("empty", ""),
            ("total_amount", "2.00"),
        ] {
            p.insert(k.to_string(), v.to_string());
        }
        assert_eq!(
            notify_sign_content(&p),
            "app_id=2015102700040153&gmt_payment=2016-07-19 14:10:47&total_amount=2.00&trade_status=TRADE_SUCCESS"
        );
        assert!(
            request_sign_content(&p).contains("sign_type=RSA2"),
            "requests keep sign_type"
        );
        assert!(!request_sign_content(&p).contains("sign=x"));
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The documented request example (payments reference §1.3, from the official SDKs).
    #[test]
    fn request_string_to_sign_known_answer() {
        let p = map(&[
            ("app_id", "2021000000000001"),
            (
                "biz_content",
                r#"{"out_trade_no":"SUB-1","total_amount":"9.90","subject":"月度订阅"}"#,
            ),
            ("charset", "utf-8"),
            ("method", "alipay.trade.precreate"),
            ("notify_url", "https://example.com/notify/alipay"),
            ("sign_type", "RSA2"),
            ("timestamp", "2024-01-02 03:04:05"),
            ("version", "1.0"),
            ("sign", "ignored"),
        ]);
        assert_eq!(
            request_sign_content(&p),
            r#"app_id=2021000000000001&biz_content={"out_trade_no":"SUB-1","total_amount":"9.90","subject":"月度订阅"}&charset=utf-8&method=alipay.trade.precreate&notify_url=https://example.com/notify/alipay&sign_type=RSA2&timestamp=2024-01-02 03:04:05&version=1.0"#
        );
    }

    /// The documented notification example (payments reference §1.6, Alipay's own page).
    #[test]
    fn notification_string_to_sign_known_answer() {
        let p = map(&[
            ("app_id", "2015102700040153"),
            ("body", "大乐透2.1"),
            ("buyer_id", "2088102116773037"),
            ("charset", "utf-8"),
            ("gmt_close", "2016-07-19 14:10:46"),
            ("gmt_payment", "2016-07-19 14:10:47"),
            ("notify_id", "4a91b7a78a503640467525113fb7d8bg8e"),
            ("notify_time", "2016-07-19 14:10:49"),
            ("notify_type", "trade_status_sync"),
            ("out_trade_no", "0719141034-6418"),
            ("refund_fee", "0.00"),
            ("seller_id", "2088102119685838"),
            ("subject", "大乐透2.1"),
            ("total_amount", "2.00"),
            ("trade_no", "2016071921001003030200089909"),
            ("trade_status", "TRADE_SUCCESS"),
            ("version", "1.0"),
            ("sign", "x"),
            ("sign_type", "RSA2"),
        ]);
        assert_eq!(
            notify_sign_content(&p),
            "app_id=2015102700040153&body=大乐透2.1&buyer_id=2088102116773037&charset=utf-8&gmt_close=2016-07-19 14:10:46&gmt_payment=2016-07-19 14:10:47&notify_id=4a91b7a78a503640467525113fb7d8bg8e&notify_time=2016-07-19 14:10:49&notify_type=trade_status_sync&out_trade_no=0719141034-6418&refund_fee=0.00&seller_id=2088102119685838&subject=大乐透2.1&total_amount=2.00&trade_no=2016071921001003030200089909&trade_status=TRADE_SUCCESS&version=1.0"
        );
    }

    #[test]
    fn extracts_the_exact_response_text() {
        let body = r#"{"alipay_trade_query_response":{"code":"10000","msg":"a } and { \" inside","n":{"x":1}},"sign":"abc"}"#;
        assert_eq!(
            extract_object(body, "alipay_trade_query_response"),
            Some(r#"{"code":"10000","msg":"a } and { \" inside","n":{"x":1}}"#)
        );
        assert_eq!(extract_object(body, "alipay_trade_close_response"), None);
    }
}
