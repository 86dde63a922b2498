//! Billing: plans, subscriptions, billing periods and the quota ledger (reserve, commit,
//! refund), the parts of the gate the product is sold on.
//!
//! Periods roll over lazily, at the first request after their end (no cron): a free plan
//! renews, a paid plan that was not paid for again falls back to the default (free) plan.

mod periods;

use http::StatusCode;
use std::sync::Arc;

use crate::config::Config;
use crate::error::GateError;
use crate::store::{BalanceRow, Charge, PeriodStart, PlanInput, Store, now_ms};

pub use periods::period_end;

pub struct Billing {
    store: Store,
    config: Arc<Config>,
    type_keys: Vec<String>,
}

/// A charge reserved for one request. Dropped without being settled (the client went away,
/// the handler failed), it is refunded in the background, so no path can leak a charge.
pub struct Reservation {
    store: Store,
    pub request_id: String,
    pub quota_type: String,
    pub amount: i64,
    /// The balance right after the reservation.
    pub balance: BalanceRow,
    settled: bool,
}

impl Reservation {
    /// Makes the charge final. The write is queued and batched (`store::commits`); if the
    /// store fails, the charge stays reserved (the work was done; the user is not given it for
    /// free) and the failure is logged.
    pub fn commit(mut self) -> BalanceRow {
        self.settled = true;
        self.store
            .commit_charge(std::mem::take(&mut self.request_id), now_ms());
        self.balance.clone()
    }

    /// Gives the charge back; returns the balance after the refund.
    pub async fn refund(mut self) -> BalanceRow {
        self.settled = true;
        match self.store.refund_charge(&self.request_id, now_ms()).await {
            Ok(Some(b)) => b,
            Ok(None) => self.balance.clone(),
            Err(e) => {
                tracing::error!(request_id = %self.request_id, error = %e, "could not refund a charge");
                self.balance.clone()
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let store = self.store.clone();
        let request_id = std::mem::take(&mut self.request_id);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = store.refund_charge(&request_id, now_ms()).await {
                    tracing::error!(request_id = %request_id, error = %e, "could not refund an abandoned charge");
                }
            });
        }
    }
}

impl Billing {
    pub fn new(store: Store, config: Arc<Config>) -> Billing {
        let type_keys = config.quota_types.iter().map(|q| q.key.clone()).collect();
        Billing {
            store,
            config,
            type_keys,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The declared quota types, in declaration order.
    pub fn quota_types(&self) -> &[crate::config::QuotaType] {
        &self.config.quota_types
    }

    pub fn knows_quota(&self, key: &str) -> bool {
        self.type_keys.iter().any(|k| k == key)
    }

    /// The first declared quota type: what the original single-quota API fields report.
    pub fn main_quota(&self) -> Option<&str> {
        self.type_keys.first().map(String::as_str)
    }

    /// Writes the declared quota types, and the declared plans that do not exist yet.
    pub async fn seed(&self) -> Result<(), GateError> {
        for q in &self.config.quota_types {
            self.store
                .upsert_quota_type(&q.key, &q.name, &q.unit)
                .await?;
        }
        for p in &self.config.plans {
            if self.store.plan_by_name(&p.name).await?.is_some() {
                continue;
            }
            let input = PlanInput {
                name: p.name.clone(),
                description: p.description.clone(),
                price_fen: p.price_fen,
                currency: p.currency.clone(),
                billing_cycle: p.billing_cycle.clone(),
                features: p.features.clone(),
                is_active: true,
                is_default: p.is_default,
                quotas: p.quotas.clone(),
            };
            match self.store.create_plan(&input).await {
                Ok(_) => tracing::info!(plan = %p.name, "plan created from proxy.toml"),
                // Another replica seeded it at the same moment.
                Err(crate::store::StoreError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Human name of a quota type.
    pub fn quota_name(&self, key: &str) -> String {
        self.config
            .quota_types
            .iter()
            .find(|q| q.key == key)
            .map(|q| q.name.clone())
            .unwrap_or_else(|| key.to_string())
    }

    /// Makes sure the user has a running period with a balance for every quota type: starts
    /// the first one, rolls an ended one over, or adds types declared since it began.
    pub async fn ensure_current(&self, user_id: &str) -> Result<(), GateError> {
        let now = now_ms();
        let current = self.store.current_subscription(user_id).await?;
        let default_plan = || async { self.store.default_plan().await.map_err(GateError::from) };
        match current {
            None => {
                let Some(plan) = default_plan().await? else {
                    tracing::warn!("no default plan: new users get no quota");
                    return Ok(());
                };
                let end = period_end(now, &plan.row.billing_cycle);
                self.store
                    .begin_period(
                        user_id,
                        PeriodStart::First,
                        &plan,
                        &self.type_keys,
                        now,
                        end,
                    )
                    .await?;
            }
            Some(cur) if cur.current_period_end.unwrap_or(0) <= now => {
                let plan = self.store.plan(&cur.plan_id).await?;
                let renews = cur.status == "active"
                    && cur.auto_renew != 0
                    && plan
                        .as_ref()
                        .is_some_and(|p| p.row.price_fen == 0 && p.row.is_active != 0);
                match (renews, plan) {
                    (true, Some(plan)) => {
                        let end = period_end(now, &plan.row.billing_cycle);
                        self.store
                            .begin_period(
                                user_id,
                                PeriodStart::Renew(&cur),
                                &plan,
                                &self.type_keys,
                                now,
                                end,
                            )
                            .await?;
                    }
                    _ => {
                        let Some(free) = default_plan().await? else {
                            return Ok(());
                        };
                        let end = period_end(now, &free.row.billing_cycle);
                        self.store
                            .begin_period(
                                user_id,
                                PeriodStart::Replace(&cur),
                                &free,
                                &self.type_keys,
                                now,
                                end,
                            )
                            .await?;
                    }
                }
            }
            Some(cur) => {
                let have: Vec<String> = self
                    .store
                    .balances_of(user_id)
                    .await?
                    .into_iter()
                    .map(|b| b.quota_type)
                    .collect();
                if self.type_keys.iter().all(|t| have.contains(t)) {
                    return Ok(());
                }
                let plan = self.store.plan(&cur.plan_id).await?;
                let limits: Vec<(String, i64)> = self
                    .type_keys
                    .iter()
                    .filter(|t| !have.contains(t))
                    .map(|t| (t.clone(), plan.as_ref().map_or(0, |p| p.limit_of(t))))
                    .collect();
                self.store
                    .add_missing_balances(
                        user_id,
                        &limits,
                        cur.current_period_start.unwrap_or(now),
                        cur.current_period_end.unwrap_or(now),
                        now,
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// Reserves `amount` units of `quota_type` for a request, or answers 402.
    pub async fn reserve(
        &self,
        user_id: &str,
        quota_type: &str,
        amount: i64,
        request_id: &str,
        endpoint: &str,
        method: &str,
    ) -> Result<Reservation, GateError> {
        let metadata = serde_json::json!({ "endpoint": endpoint, "method": method }).to_string();
        let charge = Charge {
            request_id,
            user_id,
            quota_type,
            amount,
            endpoint,
            method,
            metadata: &metadata,
        };
        for attempt in 0..2 {
            let now = now_ms();
            if let Some(balance) = self.store.reserve(&charge, now).await? {
                return Ok(Reservation {
                    store: self.store.clone(),
                    request_id: request_id.to_string(),
                    quota_type: quota_type.to_string(),
                    amount,
                    balance,
                    settled: false,
                });
            }
            let balance = self.store.balance(user_id, quota_type).await?;
            let stale = balance
                .as_ref()
                .is_none_or(|b| b.period_end <= now || b.period_start > now);
            if attempt == 0 && stale {
                self.ensure_current(user_id).await?;
                continue;
            }
            return Err(self.exhausted(quota_type, balance.as_ref(), amount));
        }
        unreachable!("the loop returns on its second pass")
    }

    /// The 402 body both frontends already understand.
    pub fn exhausted(
        &self,
        quota_type: &str,
        balance: Option<&BalanceRow>,
        required: i64,
    ) -> GateError {
        let remaining = balance.map_or(0, |b| b.remaining().max(0));
        let mut e = GateError::new(StatusCode::PAYMENT_REQUIRED, "配额已用尽")
            .with_field(
                "message",
                format!("{}配额不足。剩余: {remaining}", self.quota_name(quota_type)),
            )
            .with_field("quota_type", quota_type)
            .with_field("remaining", remaining)
            .with_field("required", required)
            .with_field("upgrade_url", "/subscription");
        if let Some(b) = balance {
            e.headers.extend(quota_headers(quota_type, b, 0));
        }
        e
    }
}

/// `X-Quota-*` and the IETF `RateLimit-Policy` / `RateLimit` headers for a balance.
pub fn quota_headers(
    quota_type: &str,
    b: &BalanceRow,
    charged: i64,
) -> Vec<(http::HeaderName, http::HeaderValue)> {
    use http::{HeaderName, HeaderValue};
    let mut out = vec![
        (
            HeaderName::from_static("x-quota-type"),
            HeaderValue::from_str(quota_type).unwrap_or(HeaderValue::from_static("unknown")),
        ),
        (
            HeaderName::from_static("x-quota-remaining"),
            HeaderValue::from(b.remaining()),
        ),
        (
            HeaderName::from_static("x-quota-used"),
            HeaderValue::from(charged),
        ),
    ];
    if b.limit_amount >= 0 {
        let window = ((b.period_end - b.period_start) / 1000).max(1);
        let reset = ((b.period_end - now_ms()) / 1000).max(0);
        if let Ok(v) =
            HeaderValue::from_str(&format!("\"{quota_type}\";q={};w={window}", b.limit_amount))
        {
            out.push((HeaderName::from_static("ratelimit-policy"), v));
        }
        if let Ok(v) =
            HeaderValue::from_str(&format!("\"{quota_type}\";r={};t={reset}", b.remaining()))
        {
            out.push((HeaderName::from_static("ratelimit"), v));
        }
    }
    out
}
