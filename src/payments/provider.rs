//! What every payment provider does for the gate: start a checkout, query, close and refund an
//! order, and verify (signature first) the notifications it posts back.

use crate::formats::money::Fen;
use axum::body::Body;
use http::{HeaderMap, Response};
use std::future::Future;
use std::pin::Pin;

use crate::store::{PaymentRow, RefundStatus};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the payer goes: a URL to open, and/or a payload to draw as a QR code.
#[derive(Debug, Clone, Default)]
pub struct Checkout {
    pub payment_url: Option<String>,
    pub qr_code: Option<String>,
}

/// An order's state at the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TradeState {
    Pending,
    Paid { trade_no: String, amount_fen: Fen },
    Closed,
}

/// A notification whose signature (and, for the provider, app / merchant id) checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Unique per notification at the provider (Alipay `notify_id`, WeChat `id`).
    pub event_id: String,
    pub order_no: String,
    pub trade_no: String,
    pub amount_fen: Fen,
    pub kind: NotificationKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationKind {
    Paid,
    Closed,
    /// Where a refund of the order stands (WeChat Pay's REFUND.*, Alipay's refund notice).
    Refund {
        /// The id the provider knows the refund by (what the gate sent it).
        refund_no: String,
        amount_fen: Fen,
        status: RefundStatus,
    },
    /// Anything else (a refund notice, a state we do not act on).
    Other(String),
}

pub trait Provider: Send + Sync {
    /// The `payment_method` name: `alipay`, `wechat`, `sandbox`.
    fn name(&self) -> &'static str;
    fn create<'a>(
        &'a self,
        order: &'a PaymentRow,
        subject: &'a str,
    ) -> BoxFuture<'a, Result<Checkout, String>>;
    fn query<'a>(&'a self, order: &'a PaymentRow) -> BoxFuture<'a, Result<TradeState, String>>;
    fn close<'a>(&'a self, order: &'a PaymentRow) -> BoxFuture<'a, Result<(), String>>;
    /// Asks for a refund under `refund_no` (letters, digits, `-` and `_`, at most 64: what
    /// every provider accepts); says where it stands once the provider took it.
    fn refund<'a>(
        &'a self,
        order: &'a PaymentRow,
        refund_no: &'a str,
        amount_fen: Fen,
    ) -> BoxFuture<'a, Result<RefundStatus, String>>;
    /// Verifies a notification's signature and identity, then parses it. `Err` says why it was
    /// refused; nothing may change for a refused notification.
    fn verify_notification(&self, headers: &HeaderMap, body: &[u8])
    -> Result<Notification, String>;
    /// The reply the provider expects: `ok` stops its retries.
    fn ack(&self, ok: bool) -> Response<Body>;
}
