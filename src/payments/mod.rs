//! Payments: orders priced by the plan on the server, providers behind one [`Provider`] trait,
//! webhooks that credit at most once, refunds, and reconciliation of orders whose
//! notification never came.
//!
//! The order of checks on a notification is fixed: signature (and identity) first, then the
//! order number and the amount in integer fen against the stored order, then the event id
//! (a redelivery changes nothing more), then one transaction that moves the order along its
//! one-way state machine, activates the subscription and resets the quota.

pub mod alipay;
pub mod provider;
pub mod sandbox;
pub mod wechat;

use crate::formats::money::Fen;
use axum::body::Body;
use http::{HeaderMap, Response, StatusCode};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Principal;
use crate::billing::Billing;
use crate::billing::changes::{self, ChangeKind};
use crate::config::Config;
use crate::error::GateError;
use crate::store::{
    NewOrder, PaidEvent, PaidOutcome, PaymentRow, PaymentStatus, Plan, RefundStatus, Store, now_ms,
};
use provider::{NotificationKind, Provider, TradeState};

pub struct Payments {
    store: Store,
    billing: Arc<Billing>,
    config: Arc<Config>,
    providers: HashMap<&'static str, Arc<dyn Provider>>,
    sandbox: Option<Arc<sandbox::Sandbox>>,
    /// Methods without credentials that the sandbox answers for (development only).
    stand_ins: Vec<&'static str>,
}

fn unprocessable(msg: impl Into<String>) -> GateError {
    GateError::new(StatusCode::UNPROCESSABLE_ENTITY, msg)
}

/// A well-formed request the gate's state refuses (an order that is not refundable, a method
/// not configured here, a plan no longer offered): 409.
fn conflict(msg: impl Into<String>) -> GateError {
    GateError::new(StatusCode::CONFLICT, msg)
}

/// The id a refund goes to the provider under: the refund's own key (the order id and an
/// `Idempotency-Key`, or a generated one) kept to what every provider accepts (letters, digits,
/// `-`, `_`; 64 at most), so a retried refund reaches the provider under the same id and is
/// not paid twice. A key too long for that is hashed rather than cut, so two keys that share
/// their first 64 characters are still two refunds.
fn provider_refund_no(refund_no: &str) -> String {
    use sha2::Digest;
    let kept: String = refund_no
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    if kept.len() <= 64 {
        return kept;
    }
    let digest = sha2::Sha256::digest(refund_no.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("r{}", &hex[..40])
}

impl Payments {
    /// Orders and their provider events, for what the API reads.
    pub fn orders(&self) -> crate::store::Payments<'_> {
        self.store.payments()
    }

    pub fn new(
        store: Store,
        billing: Arc<Billing>,
        config: Arc<Config>,
    ) -> Result<Payments, String> {
        let mut providers: HashMap<&'static str, Arc<dyn Provider>> = HashMap::new();
        if let Some(a) = &config.payments.alipay {
            providers.insert("alipay", Arc::new(alipay::Alipay::new(a.clone())?));
        }
        if let Some(w) = &config.payments.wechat {
            providers.insert("wechat", Arc::new(wechat::Wechat::new(w.clone())?));
        }
        let sandbox = config
            .payments
            .sandbox
            .then(|| Arc::new(sandbox::Sandbox::new(&config.payments.public_url)));
        let mut stand_ins = Vec::new();
        if let Some(s) = &sandbox {
            providers.insert("sandbox", s.clone());
            for method in ["alipay", "wechat"] {
                if !providers.contains_key(method) {
                    providers.insert(method, Arc::new(sandbox::StandIn::new(method, s.clone())));
                    stand_ins.push(method);
                }
            }
        }
        if !stand_ins.is_empty() {
            tracing::warn!(
                methods = ?stand_ins,
                "payment methods without credentials are paid on the sandbox checkout page (development mode)"
            );
        }
        Ok(Payments {
            store,
            billing,
            config,
            providers,
            sandbox,
            stand_ins,
        })
    }

    pub fn sandbox(&self) -> Option<&Arc<sandbox::Sandbox>> {
        self.sandbox.as_ref()
    }

    /// Whether orders of `method` are paid on the sandbox checkout page: the sandbox itself,
    /// and on a development gate the methods that have no credentials.
    pub fn paid_on_sandbox(&self, method: &str) -> bool {
        self.sandbox.is_some() && (method == "sandbox" || self.stand_ins.contains(&method))
    }

    /// The configured payment methods.
    pub fn methods(&self) -> Vec<&'static str> {
        let mut m: Vec<_> = self.providers.keys().copied().collect();
        m.sort();
        m
    }

    fn provider(&self, method: &str) -> Result<&Arc<dyn Provider>, GateError> {
        self.providers.get(method).ok_or_else(|| {
            conflict(format!(
                "payment method `{method}` is not configured on this gate (available: {})",
                self.methods().join(", ")
            ))
        })
    }

    /// A pending order for `plan`, its amount taken from the plan, with a pending subscription
    /// it will activate, and the provider's checkout.
    pub async fn create_order(
        &self,
        who: &Principal,
        plan: &Plan,
        method: &str,
    ) -> Result<PaymentRow, GateError> {
        let provider = self.provider(method)?.clone();
        if !plan.row.is_active {
            return Err(conflict("this plan is no longer offered"));
        }
        if plan.row.price_fen.is_zero() {
            return Err(conflict(
                "the free plan needs no payment: every account has it, and paid plans fall back to it when they end",
            ));
        }
        let quote = self.billing.quote(&who.user_id, plan).await?;
        // A renewal extends the running subscription; anything else is a subscription of its
        // own, pending until the payment.
        let sub_id = match (&quote.kind, &quote.from) {
            (ChangeKind::Renew, Some((running, _))) => running.clone(),
            _ => {
                self.store
                    .subscriptions()
                    .create_pending(&who.user_id, &plan.row.id)
                    .await?
                    .id
            }
        };
        let subject = format!("iDoctor {}", plan.row.name);
        let order = self
            .store
            .payments()
            .create_pending(&NewOrder {
                user_id: &who.user_id,
                plan_id: &plan.row.id,
                subscription_id: Some(&sub_id),
                currency: &plan.row.currency,
                method,
                description: &subject,
                change_kind: quote.kind.as_str(),
                list_price_fen: quote.list_price_fen,
                credit_fen: quote.credit_fen,
                amount_fen: quote.amount_fen,
                from: quote.from.as_ref().map(|(id, end)| (id.as_str(), *end)),
            })
            .await?;
        match provider.create(&order, &subject).await {
            Ok(checkout) => {
                self.store
                    .payments()
                    .set_checkout(
                        &order.id,
                        checkout.payment_url.as_deref(),
                        checkout.qr_code.as_deref(),
                    )
                    .await?;
            }
            Err(e) => {
                tracing::warn!(provider = provider.name(), order_no = %order.order_no, error = %e, "creating a payment failed");
                self.store.payments().close(&order.id).await?;
                return Err(GateError::bad_gateway(format!(
                    "支付创建失败: the payment provider refused the order ({e})"
                )));
            }
        }
        Ok(self
            .store
            .payments()
            .by_id(&order.id)
            .await?
            .unwrap_or(order))
    }

    /// Handles a provider's notification and answers it as the provider expects.
    pub async fn handle_notification(
        &self,
        method: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Response<Body> {
        let Some(provider) = self.providers.get(method) else {
            return GateError::not_found(format!("no payment provider `{method}` on this gate"))
                .into_http();
        };
        let n = match provider.verify_notification(headers, body) {
            Ok(n) => n,
            Err(reason) => {
                metrics::counter!("gate_payment_notifications_total", "provider" => provider.name(), "outcome" => "refused").increment(1);
                tracing::warn!(provider = method, reason = %reason, "payment notification refused: nothing changed");
                return provider.ack(false);
            }
        };
        match self
            .apply(
                method,
                &n.event_id,
                &n.order_no,
                &n.trade_no,
                n.amount_fen,
                &n.kind,
            )
            .await
        {
            Ok(()) => provider.ack(true),
            Err(e) => {
                // A transient failure (the database): ask for a redelivery.
                tracing::error!(provider = method, error = %e, "payment notification not applied; the provider will retry");
                provider.ack(false)
            }
        }
    }

    async fn apply(
        &self,
        method: &str,
        event_id: &str,
        order_no: &str,
        trade_no: &str,
        amount_fen: Fen,
        kind: &NotificationKind,
    ) -> Result<(), GateError> {
        match kind {
            NotificationKind::Paid => {
                let plan = match self.store.payments().by_order_no(order_no).await? {
                    Some(order) => self.store.plans().by_id(&order.plan_id).await?,
                    None => None,
                };
                let outcome = match plan {
                    Some(plan) => {
                        let cycle = plan.row.billing_cycle.clone();
                        let types: Vec<String> = self
                            .billing
                            .quota_types()
                            .iter()
                            .map(|q| q.key.to_string())
                            .collect();
                        let ev = PaidEvent {
                            provider: method,
                            event_id,
                            order_no,
                            trade_no,
                            amount_fen,
                        };
                        self.store
                            .payments()
                            .complete(&ev, &plan, &types, |ctx| changes::on_paid(ctx, &cycle))
                            .await?
                    }
                    None => {
                        self.store
                            .payments()
                            .record_webhook_event(
                                method,
                                event_id,
                                order_no,
                                "rejected",
                                "unknown order",
                            )
                            .await?;
                        PaidOutcome::UnknownOrder
                    }
                };
                let label = match &outcome {
                    PaidOutcome::Applied => "applied",
                    PaidOutcome::Duplicate => "duplicate",
                    PaidOutcome::Late(_) => "late",
                    PaidOutcome::UnknownOrder | PaidOutcome::AmountMismatch { .. } => "rejected",
                };
                metrics::counter!("gate_payment_notifications_total", "provider" => method.to_string(), "outcome" => label).increment(1);
                match &outcome {
                    PaidOutcome::Applied => tracing::info!(
                        provider = method,
                        order_no,
                        "payment completed: subscription active, quota reset"
                    ),
                    PaidOutcome::Duplicate => tracing::info!(
                        provider = method,
                        order_no,
                        "duplicate payment notification: nothing changed"
                    ),
                    PaidOutcome::Late(state) => {
                        tracing::warn!(provider = method, order_no, state = %state, "payment notification for an order no longer pending: nothing changed")
                    }
                    PaidOutcome::UnknownOrder => tracing::warn!(
                        provider = method,
                        order_no,
                        "payment notification for an unknown order: nothing changed"
                    ),
                    PaidOutcome::AmountMismatch {
                        expected_fen,
                        got_fen,
                    } => tracing::error!(
                        provider = method,
                        order_no,
                        expected_fen = expected_fen.get(),
                        got_fen = got_fen.get(),
                        "payment notification with the wrong amount: nothing changed"
                    ),
                }
                Ok(())
            }
            NotificationKind::Closed => {
                if self
                    .store
                    .payments()
                    .record_webhook_event(method, event_id, order_no, "applied", "closed")
                    .await?
                {
                    if let Some(order) = self.store.payments().by_order_no(order_no).await? {
                        self.store.payments().close(&order.id).await?;
                    }
                }
                Ok(())
            }
            NotificationKind::Refund {
                refund_no,
                amount_fen,
                status,
            } => {
                let known = self
                    .store
                    .payments()
                    .record_refund_notice(order_no, refund_no, *amount_fen, *status, event_id)
                    .await?;
                if known {
                    if *status == RefundStatus::Abnormal {
                        tracing::error!(
                            provider = method,
                            order_no,
                            refund_no,
                            "a refund could not reach the payer (abnormal): it needs a person"
                        );
                    } else {
                        tracing::info!(provider = method, order_no, refund_no, status = %status, "refund notice recorded");
                    }
                } else {
                    tracing::warn!(
                        provider = method,
                        order_no,
                        refund_no,
                        "refund notice for an unknown order: nothing changed"
                    );
                }
                Ok(())
            }
            NotificationKind::Other(what) => {
                self.store
                    .payments()
                    .record_webhook_event(method, event_id, order_no, "ignored", what)
                    .await?;
                Ok(())
            }
        }
    }

    /// Asks the provider about a pending order and applies what it says.
    pub async fn poll(&self, order: &PaymentRow) -> Result<(), GateError> {
        if order.status != PaymentStatus::Pending {
            return Ok(());
        }
        let provider = self.provider(&order.payment_method)?;
        match provider.query(order).await {
            Ok(TradeState::Paid {
                trade_no,
                amount_fen,
            }) => {
                let event = format!("query:{trade_no}");
                self.apply(
                    provider.name(),
                    &event,
                    &order.order_no,
                    &trade_no,
                    amount_fen,
                    &NotificationKind::Paid,
                )
                .await
            }
            Ok(TradeState::Closed) => {
                self.store.payments().close(&order.id).await?;
                Ok(())
            }
            Ok(TradeState::Pending) => Ok(()),
            Err(e) => {
                tracing::warn!(order_no = %order.order_no, error = %e, "querying a payment failed");
                Ok(())
            }
        }
    }

    /// Refunds `amount_fen` of a completed order (superusers). Idempotent per `refund_no`.
    pub async fn refund(
        &self,
        order: &PaymentRow,
        amount_fen: Fen,
        refund_no: &str,
        reason: &str,
    ) -> Result<PaymentRow, GateError> {
        if !matches!(
            order.status,
            PaymentStatus::Completed | PaymentStatus::PartiallyRefunded | PaymentStatus::Refunded
        ) {
            return Err(conflict(format!(
                "an order that is {} cannot be refunded",
                order.status
            )));
        }
        if amount_fen.is_zero() {
            return Err(unprocessable("refund_amount must be greater than zero"));
        }
        let provider = self.provider(&order.payment_method)?;
        let at_provider = provider_refund_no(refund_no);
        let status = provider
            .refund(order, &at_provider, amount_fen)
            .await
            .map_err(|e| {
                GateError::bad_gateway(format!("退款失败: the provider refused the refund ({e})"))
            })?;
        let (row, _fresh) = self
            .store
            .payments()
            .add_refund(
                &order.id,
                refund_no,
                amount_fen,
                reason,
                self.config.payments.partial_refund_shortens,
                (&at_provider, status),
            )
            .await?
            .ok_or_else(|| conflict("the refunds would exceed the amount paid"))?;
        Ok(row)
    }

    /// Pending orders older than `reconcile_after` are queried; expired ones are queried, then
    /// closed, so a lost notification never leaves a paid user unserved.
    pub async fn reconcile_once(&self) -> Result<usize, GateError> {
        let p = &self.config.payments;
        let before = now_ms() - p.reconcile_after.as_millis() as i64;
        let pending = self.store.payments().pending_before(before, 100).await?;
        let mut closed = 0;
        for order in &pending {
            self.poll(order).await?;
            let expired = order.created_at + (p.order_ttl.as_millis() as i64) < now_ms();
            let still = self
                .store
                .payments()
                .by_id(&order.id)
                .await?
                .is_some_and(|o| o.status == PaymentStatus::Pending);
            if expired && still {
                if let Ok(provider) = self.provider(&order.payment_method) {
                    if let Err(e) = provider.close(order).await {
                        tracing::warn!(order_no = %order.order_no, error = %e, "closing an expired order at the provider failed");
                        continue;
                    }
                }
                if self.store.payments().close(&order.id).await? {
                    closed += 1;
                }
            }
        }
        Ok(closed)
    }

    pub fn spawn_reconciler(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let every = self.config.payments.reconcile_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(p) = weak.upgrade() else { return };
                if let Err(e) = p.reconcile_once().await {
                    tracing::warn!(error = %e.detail, "payment reconciliation failed");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::provider_refund_no;

    #[test]
    fn refund_ids_are_what_every_provider_accepts() {
        let id = "0b8f6a2e-1c3d-4e5f-8a9b-0c1d2e3f4a5b";
        assert_eq!(provider_refund_no(&format!("{id}:r1")), format!("{id}r1"));
        let long = |tail: &str| format!("{id}:{}{tail}", "k".repeat(40));
        let (a, b) = (
            provider_refund_no(&long("a")),
            provider_refund_no(&long("b")),
        );
        assert_ne!(a, b, "two long keys are two refunds");
        assert!(a.len() <= 64 && a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(
            a,
            provider_refund_no(&long("a")),
            "and the same key the same id"
        );
    }
}
