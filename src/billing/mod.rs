//! Billing: plans, subscriptions, billing periods and the quota ledger (reserve, commit,
//! refund), the parts of the gate the product is sold on.
//!
//! Periods roll over lazily, at the first request after their end (no cron): a free plan
//! renews, a paid plan that was not paid for again falls back to the default (free) plan.

pub mod changes;
mod periods;
pub mod task_watch;
pub mod tasks;

use crate::formats::money::Fen;
use std::sync::Arc;

use crate::config::Config;
use crate::error::Refusal;
use crate::formats::ids::{QuotaKey, RequestId, UserId};
use crate::store::{
    BalanceRow, Charge, PeriodStart, Plan, PlanInput, Store, SubscriptionStatus, now_ms,
};

pub use periods::{cycle_at, period_end};

pub struct Billing {
    store: Store,
    config: Arc<Config>,
    type_keys: Vec<String>,
}

/// What one request is charged: named fields, where five strings in a row could be passed in
/// the wrong order without the compiler noticing.
#[derive(Debug, Clone, Copy)]
pub struct ChargeRequest<'a> {
    /// Who pays.
    pub user_id: &'a UserId,
    /// A declared `[[quota_type]]`.
    pub quota_type: &'a QuotaKey,
    /// Units, decided before the body streams.
    pub amount: i64,
    /// The key of the usage row: one charge per request, counted once.
    pub request_id: &'a RequestId,
    /// The canonical path and method, recorded with the charge.
    pub endpoint: &'a str,
    pub method: &'a str,
}

/// Why a charge was not reserved.
#[derive(Debug)]
pub enum ReserveError {
    /// Not enough of the quota left: the caller decides how to say so (the gate answers the
    /// 402 the frontends understand).
    Exhausted(Exhausted),
    /// The store could not say (503) or failed.
    Failed(Refusal),
}

/// A quota too small for a charge.
#[derive(Debug)]
pub struct Exhausted {
    /// The quota type's name, for people.
    pub quota_name: String,
    /// The balance as it stands, if the user has one.
    pub balance: Option<BalanceRow>,
    /// What the request would have cost.
    pub required: i64,
}

impl From<Refusal> for ReserveError {
    fn from(e: Refusal) -> Self {
        ReserveError::Failed(e)
    }
}

impl From<crate::store::StoreError> for ReserveError {
    fn from(e: crate::store::StoreError) -> Self {
        ReserveError::Failed(e.into())
    }
}

/// A charge reserved for one request. Dropped without being settled (the client went away,
/// the handler failed), it is refunded in the background, so no path can leak a charge.
pub struct Reservation {
    store: Store,
    pub request_id: RequestId,
    pub quota_type: QuotaKey,
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
            .ledger()
            .commit(self.request_id.clone(), now_ms());
        self.balance.clone()
    }

    /// Makes the charge final, linked to the task `(kind, task_id)` it started, so it follows
    /// that task (`tasks`).
    pub fn commit_linked(mut self, kind: &str, task_id: &str, user_id: &UserId) -> BalanceRow {
        self.settled = true;
        self.store.task_charges().commit_linked(
            self.request_id.clone(),
            now_ms(),
            kind,
            task_id,
            user_id,
        );
        self.balance.clone()
    }

    /// Gives the charge back; returns the balance after the refund.
    pub async fn refund(mut self) -> BalanceRow {
        self.settled = true;
        match self.store.ledger().refund(&self.request_id, now_ms()).await {
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
        let request_id = self.request_id.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = store.ledger().refund(&request_id, now_ms()).await {
                    tracing::error!(request_id = %request_id, error = %e, "could not refund an abandoned charge");
                }
            });
        }
    }
}

impl Billing {
    pub fn new(store: Store, config: Arc<Config>) -> Billing {
        let type_keys = config
            .quota_types
            .iter()
            .map(|q| q.key.to_string())
            .collect();
        Billing {
            store,
            config,
            type_keys,
        }
    }

    /// Waits until every charge committed so far is written (the commits are batched off the
    /// request path): before the process exits.
    pub async fn flush_commits(&self) {
        self.store.ledger().flush().await;
    }

    /// Plans and the quota types they grant: billing's tables, for what the API reads and
    /// edits as it is.
    pub fn plans(&self) -> crate::store::Plans<'_> {
        self.store.plans()
    }

    /// The plan `id`, or a refusal that names it missing.
    pub async fn plan(&self, id: &str) -> Result<Plan, Refusal> {
        self.store
            .plans()
            .by_id(id)
            .await?
            .ok_or_else(|| Refusal::not_found("套餐不存在: no such plan"))
    }

    /// Subscriptions, for what the API reads and cancels.
    pub fn subscriptions(&self) -> crate::store::Subscriptions<'_> {
        self.store.subscriptions()
    }

    /// Balances and usage rows, for what the API reads and an admin adjusts.
    pub fn ledger(&self) -> crate::store::Ledger<'_> {
        self.store.ledger()
    }

    /// The declared quota types, in declaration order.
    pub fn quota_types(&self) -> &[crate::config::QuotaType] {
        &self.config.quota_types
    }

    pub fn knows_quota(&self, key: &str) -> bool {
        self.type_keys.iter().any(|k| k == key)
    }

    /// The declared quota type a client names, or `None`: how a key from a query or a body
    /// becomes a [`QuotaKey`].
    pub fn quota(&self, key: &str) -> Option<QuotaKey> {
        self.config
            .quota_types
            .iter()
            .find(|q| q.key == key)
            .map(|q| q.key.clone())
    }

    /// The first declared quota type: what the original single-quota API fields report.
    pub fn main_quota(&self) -> Option<&str> {
        self.type_keys.first().map(String::as_str)
    }

    /// Writes the declared quota types, and the declared plans that do not exist yet.
    pub async fn seed(&self) -> Result<(), Refusal> {
        for q in &self.config.quota_types {
            self.store
                .plans()
                .upsert_quota_type(&q.key, &q.name, &q.unit)
                .await?;
        }
        for p in &self.config.plans {
            if self.store.plans().by_name(&p.name).await?.is_some() {
                continue;
            }
            let input = PlanInput {
                name: p.name.clone(),
                description: p.description.clone(),
                price_fen: Fen::new(p.price_fen),
                currency: p.currency.clone(),
                billing_cycle: p.billing_cycle.clone(),
                features: p.features.clone(),
                is_active: true,
                is_default: p.is_default,
                quotas: p.quotas.clone(),
            };
            match self.store.plans().create(&input).await {
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
    /// the first one, activates a paid change that is due, rolls an ended one over, starts the
    /// next quota cycle of a span that holds several, or adds types declared since it began.
    pub async fn ensure_current(&self, user_id: &UserId) -> Result<(), Refusal> {
        // A scheduled change that has itself ended by now gives way to the next one: a few
        // steps at most, each of which moves the user forward.
        for _ in 0..4 {
            if !self.step(user_id).await? {
                break;
            }
        }
        Ok(())
    }

    /// One step towards a running period; true when a scheduled change began and another
    /// look is due.
    async fn step(&self, user_id: &UserId) -> Result<bool, Refusal> {
        let now = now_ms();
        let current = self.store.subscriptions().current(user_id).await?;
        let scheduled = self.store.subscriptions().scheduled(user_id).await?;
        let next_start = scheduled.first().and_then(|s| s.current_period_start);
        if let Some(s) = scheduled
            .first()
            .filter(|_| next_start.is_some_and(|t| t <= now))
        {
            let Some(plan) = self.store.plans().by_id(&s.plan_id).await? else {
                return Ok(false);
            };
            let start = s.current_period_start.unwrap_or(now);
            let end = s.current_period_end.unwrap_or(now);
            let cycle = cycle_at(start, end, &plan.row.billing_cycle, now);
            let how = PeriodStart::Activate {
                current: current.as_ref(),
                scheduled: s,
            };
            self.store
                .subscriptions()
                .begin_period(user_id, how, &plan, &self.type_keys, (start, end), cycle)
                .await?;
            return Ok(true);
        }
        // A free period that begins now ends where a paid change begins, if one is scheduled.
        let free_end = |cycle: &str| {
            let end = period_end(now, cycle);
            next_start.map_or(end, |t| end.min(t.max(now + 1)))
        };
        let default_plan = || async { self.store.plans().default().await.map_err(Refusal::from) };
        match current {
            None => {
                let Some(plan) = default_plan().await? else {
                    tracing::warn!("no default plan: new users get no quota");
                    return Ok(false);
                };
                let end = free_end(&plan.row.billing_cycle);
                self.store
                    .subscriptions()
                    .begin_period(
                        user_id,
                        PeriodStart::First,
                        &plan,
                        &self.type_keys,
                        (now, end),
                        (now, end),
                    )
                    .await?;
            }
            Some(cur) if cur.current_period_end.unwrap_or(0) <= now => {
                let plan = self.store.plans().by_id(&cur.plan_id).await?;
                let renews = cur.status == SubscriptionStatus::Active
                    && cur.auto_renew
                    && plan
                        .as_ref()
                        .is_some_and(|p| p.row.price_fen.is_zero() && p.row.is_active);
                let (how, plan) = match (renews, plan) {
                    (true, Some(plan)) => (PeriodStart::Renew(&cur), plan),
                    _ => {
                        let Some(free) = default_plan().await? else {
                            return Ok(false);
                        };
                        (PeriodStart::Replace(&cur), free)
                    }
                };
                let end = free_end(&plan.row.billing_cycle);
                self.store
                    .subscriptions()
                    .begin_period(user_id, how, &plan, &self.type_keys, (now, end), (now, end))
                    .await?;
            }
            Some(cur) => {
                let balances = self.store.ledger().balances_of(user_id).await?;
                let due = self.type_keys.iter().any(|t| {
                    balances
                        .iter()
                        .find(|b| &b.quota_type == t)
                        .is_none_or(|b| b.period_end <= now)
                });
                if !due {
                    return Ok(false);
                }
                let Some(plan) = self.store.plans().by_id(&cur.plan_id).await? else {
                    return Ok(false);
                };
                let end = cur.current_period_end.unwrap_or(now);
                let start = cur.current_period_start.unwrap_or(now);
                let anchor = cur.cycle_anchor.unwrap_or(start);
                let cycle = cycle_at(anchor, end, &plan.row.billing_cycle, now);
                self.store
                    .subscriptions()
                    .new_quota_cycle(user_id, &plan, &self.type_keys, cycle)
                    .await?;
            }
        }
        Ok(false)
    }

    /// Prices an order for `target` against the user's running subscription and the changes
    /// already scheduled (`changes`): 422 when it cannot be bought now.
    pub async fn quote(&self, user_id: &UserId, target: &Plan) -> Result<changes::Quote, Refusal> {
        self.ensure_current(user_id).await?;
        let now = now_ms();
        let current = self.store.subscriptions().current(user_id).await?;
        let (price, cycle) = match &current {
            Some(c) => self
                .store
                .plans()
                .by_id(&c.plan_id)
                .await?
                .map_or((Fen::ZERO, String::new()), |p| {
                    (p.row.price_fen, p.row.billing_cycle)
                }),
            None => (Fen::ZERO, String::new()),
        };
        let mut scheduled = Vec::new();
        for s in self.store.subscriptions().scheduled(user_id).await? {
            let name = self
                .store
                .plans()
                .by_id(&s.plan_id)
                .await?
                .map_or_else(|| s.plan_id.clone(), |p| p.row.name);
            scheduled.push((s, name));
        }
        let running = current.as_ref().map(|sub| changes::Running {
            sub,
            plan_price_fen: price,
            plan_cycle: &cycle,
        });
        changes::quote(running, &scheduled, target, now)
            .map_err(|changes::Refused(why)| Refusal::conflict(why))
    }

    /// Reserves the charge of one request, or answers 402.
    pub async fn reserve(&self, req: &ChargeRequest<'_>) -> Result<Reservation, ReserveError> {
        let ChargeRequest {
            user_id,
            quota_type,
            amount,
            request_id,
            endpoint,
            method,
        } = *req;
        let metadata = usage_metadata(endpoint, method);
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
            if let Some(balance) = self.store.ledger().reserve(&charge, now).await? {
                return Ok(Reservation {
                    store: self.store.clone(),
                    request_id: request_id.clone(),
                    quota_type: quota_type.clone(),
                    amount,
                    balance,
                    settled: false,
                });
            }
            let balance = self.store.ledger().balance(user_id, quota_type).await?;
            let stale = balance
                .as_ref()
                .is_none_or(|b| b.period_end <= now || b.period_start > now);
            if attempt == 0 && stale {
                self.ensure_current(user_id).await?;
                continue;
            }
            return Err(ReserveError::Exhausted(Exhausted {
                quota_name: self.quota_name(quota_type),
                balance,
                required: amount,
            }));
        }
        unreachable!("the loop returns on its second pass")
    }
}

/// A usage row's `metadata`: `{"endpoint": ..., "method": ...}`, written straight to its text
/// (a `serde_json::Value` built and printed for it cost ~5 % of a metered request's CPU, in a
/// map, two strings and a string grown by doubling).
fn usage_metadata(endpoint: &str, method: &str) -> String {
    #[derive(serde::Serialize)]
    struct Metadata<'a> {
        endpoint: &'a str,
        method: &'a str,
    }
    serde_json::to_string(&Metadata { endpoint, method }).expect("two strings serialize")
}

#[cfg(test)]
mod tests {
    #[test]
    fn usage_metadata_is_the_json_object_of_endpoint_and_method() {
        let text = super::usage_metadata("/process/{patient_name}/{study_date}", "PO\"ST");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            serde_json::json!({"endpoint": "/process/{patient_name}/{study_date}", "method": "PO\"ST"})
        );
        assert_eq!(
            text,
            r#"{"endpoint":"/process/{patient_name}/{study_date}","method":"PO\"ST"}"#
        );
    }
}
