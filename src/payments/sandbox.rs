//! The sandbox provider: a checkout page served by the gate itself. Paying there produces a
//! notification signed with a sandbox key (HMAC-SHA256) that goes through the same webhook
//! handler and the same verification as a real provider's, so the whole loop (subscribe, pay,
//! active plan, fresh quota) runs on a fresh machine with no internet. Never in production.
//!
//! On such a gate a method with no credentials (`alipay`, `wechat`) is a [`StandIn`]: its orders
//! keep their method but are paid on the sandbox page, so a frontend's Alipay and WeChat Pay
//! buttons can be tried end to end offline.

use crate::formats::money::Fen;
use axum::body::Body;
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::sync::Arc;

use super::provider::{BoxFuture, Checkout, Notification, NotificationKind, Provider, TradeState};
use crate::store::{PaymentRow, RefundStatus};

pub const SIGNATURE_HEADER: &str = "x-sandbox-signature";

pub struct Sandbox {
    key: Vec<u8>,
    public_url: String,
}

/// The body of a sandbox notification.
#[derive(Serialize, Deserialize)]
pub struct SandboxEvent {
    pub event_id: String,
    pub order_no: String,
    pub trade_no: String,
    pub total_fen: i64,
    /// `paid` or `closed`.
    pub status: String,
}

impl Sandbox {
    pub fn new(public_url: &str) -> Sandbox {
        Sandbox {
            key: crate::auth::random::bytes(32),
            public_url: public_url.to_string(),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key")
    }

    /// Signs an event as the sandbox "provider" does.
    pub fn sign(&self, body: &[u8]) -> String {
        let mut m = self.mac();
        m.update(body);
        m.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub fn checkout_url(&self, order_no: &str) -> String {
        format!("{}/payments/sandbox/checkout/{order_no}", self.public_url)
    }

    /// The signed notification for paying `order` in full.
    pub fn paid_event(&self, order: &PaymentRow) -> (Vec<u8>, HeaderMap) {
        let ev = SandboxEvent {
            event_id: uuid::Uuid::new_v4().simple().to_string(),
            order_no: order.order_no.clone(),
            trade_no: format!("sandbox_{}", uuid::Uuid::new_v4().simple()),
            total_fen: order.amount_fen.get(),
            status: "paid".into(),
        };
        let body = serde_json::to_vec(&ev).expect("serialisable");
        let mut headers = HeaderMap::new();
        headers.insert(
            SIGNATURE_HEADER,
            HeaderValue::from_str(&self.sign(&body)).expect("hex"),
        );
        (body, headers)
    }
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Provider for Sandbox {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    fn create<'a>(
        &'a self,
        order: &'a PaymentRow,
        _subject: &'a str,
    ) -> BoxFuture<'a, Result<Checkout, String>> {
        Box::pin(async move {
            let url = self.checkout_url(&order.order_no);
            Ok(Checkout {
                qr_code: Some(url.clone()),
                payment_url: Some(url),
            })
        })
    }

    fn query<'a>(&'a self, _order: &'a PaymentRow) -> BoxFuture<'a, Result<TradeState, String>> {
        // The sandbox keeps no state of its own: an unpaid order stays pending until it expires.
        Box::pin(async { Ok(TradeState::Pending) })
    }

    fn close<'a>(&'a self, _order: &'a PaymentRow) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    fn refund<'a>(
        &'a self,
        _order: &'a PaymentRow,
        _refund_no: &'a str,
        _amount_fen: Fen,
    ) -> BoxFuture<'a, Result<RefundStatus, String>> {
        // The sandbox moves no money: a refund is done when it is asked for.
        Box::pin(async { Ok(RefundStatus::Succeeded) })
    }

    fn verify_notification(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Notification, String> {
        let sig = headers
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(hex_decode)
            .ok_or("missing or malformed signature")?;
        let mut m = self.mac();
        m.update(body);
        m.verify_slice(&sig).map_err(|_| "bad signature")?;
        let ev: SandboxEvent =
            serde_json::from_slice(body).map_err(|e| format!("malformed event: {e}"))?;
        let kind = match ev.status.as_str() {
            "paid" => NotificationKind::Paid,
            "closed" => NotificationKind::Closed,
            other => NotificationKind::Other(other.to_string()),
        };
        Ok(Notification {
            event_id: ev.event_id,
            order_no: ev.order_no,
            trade_no: ev.trade_no,
            amount_fen: Fen::new(ev.total_fen),
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

/// The sandbox answering for a provider that has no credentials on a development gate: its
/// checkout is the sandbox page, its notifications are the sandbox's (signed with the sandbox
/// key, posted to `/webhooks/<method>`), and its orders keep the method the payer chose.
pub struct StandIn {
    method: &'static str,
    sandbox: Arc<Sandbox>,
}

impl StandIn {
    pub fn new(method: &'static str, sandbox: Arc<Sandbox>) -> StandIn {
        StandIn { method, sandbox }
    }
}

impl Provider for StandIn {
    fn name(&self) -> &'static str {
        self.method
    }

    fn create<'a>(
        &'a self,
        order: &'a PaymentRow,
        subject: &'a str,
    ) -> BoxFuture<'a, Result<Checkout, String>> {
        self.sandbox.create(order, subject)
    }

    fn query<'a>(&'a self, order: &'a PaymentRow) -> BoxFuture<'a, Result<TradeState, String>> {
        self.sandbox.query(order)
    }

    fn close<'a>(&'a self, order: &'a PaymentRow) -> BoxFuture<'a, Result<(), String>> {
        self.sandbox.close(order)
    }

    fn refund<'a>(
        &'a self,
        order: &'a PaymentRow,
        refund_no: &'a str,
        amount_fen: Fen,
    ) -> BoxFuture<'a, Result<RefundStatus, String>> {
        self.sandbox.refund(order, refund_no, amount_fen)
    }

    fn verify_notification(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Notification, String> {
        self.sandbox.verify_notification(headers, body)
    }

    fn ack(&self, ok: bool) -> Response<Body> {
        self.sandbox.ack(ok)
    }
}
