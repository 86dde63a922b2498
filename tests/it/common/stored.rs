//! What a test reads or changes in the database itself, each named after what it does: the
//! state no endpoint shows (usage rows by state, provider events and their outcomes, the raw
//! state of an order), and time moved on (a period that ended, an order left unpaid). Balances,
//! plans and subscriptions are read through the API, as a client would ([`TestApp::quota`]).

use idoctor_gate::store::Store;

use super::{Account, TestApp};

/// One quota balance as `/admin/quotas/users/me` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    /// -1 = unlimited.
    pub limit: i64,
    pub used: i64,
    pub period_start: String,
    pub period_end: String,
}

impl Quota {
    /// The period's start, in Unix milliseconds.
    pub fn start_ms(&self) -> i64 {
        iso_ms(&self.period_start)
    }

    /// The period's end, in Unix milliseconds.
    pub fn end_ms(&self) -> i64 {
        iso_ms(&self.period_end)
    }
}

/// A time as the API writes it (`2026-12-05T10:00:00.000`, UTC) in Unix milliseconds.
pub fn iso_ms(iso: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(iso, "%Y-%m-%dT%H:%M:%S%.f")
        .unwrap_or_else(|e| panic!("{iso}: {e}"))
        .and_utc()
        .timestamp_millis()
}

impl TestApp {
    /// The gate's own store (the one pool every service shares).
    pub fn store(&self) -> Store {
        self.services().store().clone()
    }

    /// The account's balance of `quota_type`, through the API.
    pub async fn quota(&self, a: &Account, quota_type: &str) -> Quota {
        let me = self
            .as_user(a)
            .get_json("/admin/quotas/users/me", 200)
            .await;
        let q = me["quotas"]
            .as_array()
            .expect("a list of quotas")
            .iter()
            .find(|q| q["type_key"] == quota_type)
            .unwrap_or_else(|| panic!("no balance of {quota_type}: {me}"))
            .clone();
        Quota {
            limit: q["limit"].as_i64().unwrap(),
            used: q["used"].as_i64().unwrap(),
            period_start: q["period_start"].as_str().unwrap().to_string(),
            period_end: q["period_end"].as_str().unwrap().to_string(),
        }
    }

    /// Sets the account's limit of `quota_type` through the admin API.
    pub async fn set_limit(&self, a: &Account, quota_type: &str, limit: i64) {
        let admin = self.admin_bearer().await;
        let resp = self
            .with_authorization(&admin)
            .put(&format!(
                "/admin/quotas/users/{}/adjust?quota_type={quota_type}&new_limit={limit}",
                a.id
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }

    /// The account's usage rows of `quota_type` by state: `(state, rows, units)`, in the order
    /// the store lists them. No endpoint counts reserved and refunded rows.
    pub async fn usage_rows(&self, a: &Account, quota_type: &str) -> Vec<(String, i64, i64)> {
        self.store()
            .ledger()
            .usage_summary(&a.id, quota_type)
            .await
            .unwrap()
    }

    /// The state of each of the account's usage rows, by the request id it was charged for.
    pub async fn usage_by_request(&self, a: &Account) -> std::collections::HashMap<String, String> {
        sqlx::query_as::<_, (String, String)>(
            "SELECT request_id, state FROM usage_logs WHERE user_id = $1",
        )
        .bind(a.id.as_str())
        .fetch_all(self.store().pool())
        .await
        .unwrap()
        .into_iter()
        .collect()
    }

    /// How many usage rows of `quota_type` the account has in `state`.
    pub async fn usage_rows_in(&self, a: &Account, quota_type: &str, state: &str) -> i64 {
        self.usage_rows(a, quota_type)
            .await
            .iter()
            .find(|r| r.0 == state)
            .map_or(0, |r| r.1)
    }

    /// The stored state of a payment order (`pending`, `completed`, `closed`, ...), by id or,
    /// failing that, by order number.
    pub async fn order_status(&self, id_or_no: &str) -> String {
        let store = self.store();
        let row = match store.payments().by_id(id_or_no).await.unwrap() {
            Some(r) => Some(r),
            None => store.payments().by_order_no(id_or_no).await.unwrap(),
        };
        row.unwrap_or_else(|| panic!("no order {id_or_no}"))
            .status
            .as_str()
            .to_string()
    }

    /// The states of the account's payment orders, newest first.
    pub async fn order_statuses(&self, a: &Account) -> Vec<String> {
        self.store()
            .payments()
            .list(Some(&a.id), None, 100)
            .await
            .unwrap()
            .iter()
            .map(|r| r.status.as_str().to_string())
            .collect()
    }

    /// The states of the account's subscriptions, newest first.
    pub async fn subscription_statuses(&self, a: &Account) -> Vec<String> {
        self.store()
            .subscriptions()
            .of_user(&a.id)
            .await
            .unwrap()
            .iter()
            .map(|s| s.status.as_str().to_string())
            .collect()
    }

    /// How many provider events of `provider` were recorded with `outcome`.
    pub async fn webhook_events(&self, provider: &str, outcome: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM webhook_events WHERE provider = $1 AND outcome = $2",
        )
        .bind(provider)
        .bind(outcome)
        .fetch_one(self.store().pool())
        .await
        .unwrap()
    }

    /// The outcome recorded for each event of `provider`: `(event_id, outcome)`.
    pub async fn webhook_outcomes(&self, provider: &str) -> Vec<(String, String)> {
        sqlx::query_as(
            "SELECT event_id, outcome FROM webhook_events WHERE provider = $1 ORDER BY event_id",
        )
        .bind(provider)
        .fetch_all(self.store().pool())
        .await
        .unwrap()
    }

    /// Makes an order `by_ms` older, as if it had waited unpaid that long.
    pub async fn age_order(&self, id: &str, by_ms: i64) {
        sqlx::query("UPDATE payment_transactions SET created_at = created_at - $2 WHERE id = $1")
            .bind(id)
            .bind(by_ms)
            .execute(self.store().pool())
            .await
            .unwrap();
    }

    /// Moves the emailed codes sent to `email` `by_ms` into the past (when they were sent).
    pub async fn age_codes(&self, email: &str, by_ms: i64) {
        sqlx::query(
            "UPDATE email_verification_codes SET created_at = created_at - $2 WHERE email = $1",
        )
        .bind(email)
        .bind(by_ms)
        .execute(self.store().pool())
        .await
        .unwrap();
    }

    /// Moves the account's subscriptions and quota cycles `by_ms` into the past: as if that
    /// much time had passed.
    pub async fn travel(&self, a: &Account, by_ms: i64) {
        let pool = self.store().pool().clone();
        for sql in [
            "UPDATE user_subscriptions SET current_period_start = current_period_start - $2, \
             current_period_end = current_period_end - $2, cycle_anchor = cycle_anchor - $2 WHERE user_id = $1",
            "UPDATE quota_balances SET period_start = period_start - $2, period_end = period_end - $2 WHERE user_id = $1",
        ] {
            sqlx::query(sql)
                .bind(a.id.as_str())
                .bind(by_ms)
                .execute(&pool)
                .await
                .unwrap();
        }
    }

    /// Ends the account's current period a second ago (subscription and balances).
    pub async fn end_period(&self, a: &Account) {
        let past = idoctor_gate::store::now_ms() - 1000;
        let pool = self.store().pool().clone();
        sqlx::query("UPDATE quota_balances SET period_end = $2, period_start = $2 - 86400000 WHERE user_id = $1")
            .bind(a.id.as_str())
            .bind(past)
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("UPDATE user_subscriptions SET current_period_end = $2 WHERE user_id = $1")
            .bind(a.id.as_str())
            .bind(past)
            .execute(&pool)
            .await
            .unwrap();
    }
}
