//! Payment orders. The amount is always copied from the plan on the server.

use super::{Store, StoreError, now_ms};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PaymentRow {
    pub id: String,
    pub order_no: String,
    pub user_id: String,
    pub plan_id: String,
    pub subscription_id: Option<String>,
    pub amount_fen: i64,
    pub refunded_fen: i64,
    pub currency: String,
    pub payment_method: String,
    pub provider_trade_no: Option<String>,
    pub status: String,
    pub description: String,
    pub payment_url: Option<String>,
    pub qr_code: Option<String>,
    pub extra_data: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub paid_at: Option<i64>,
}

const COLUMNS: &str = "id, order_no, user_id, plan_id, subscription_id, amount_fen, refunded_fen, currency, payment_method, \
    provider_trade_no, status, description, payment_url, qr_code, extra_data, created_at, updated_at, paid_at";

impl Store {
    /// A pending order for a plan; `order_no` is a UUID without hyphens (32 characters, within
    /// WeChat Pay's limit for `out_trade_no`).
    #[allow(clippy::too_many_arguments)]
    pub async fn create_pending_payment(
        &self,
        user_id: &str,
        plan_id: &str,
        subscription_id: Option<&str>,
        amount_fen: i64,
        currency: &str,
        method: &str,
        description: &str,
    ) -> Result<PaymentRow, StoreError> {
        let now = now_ms();
        let sql = format!(
            "INSERT INTO payment_transactions ({COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, 0, $7, $8, NULL, 'pending', $9, NULL, NULL, '{{}}', $10, $10, NULL) RETURNING {COLUMNS}"
        );
        Ok(sqlx::query_as::<_, PaymentRow>(&sql)
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(uuid::Uuid::new_v4().simple().to_string())
            .bind(user_id)
            .bind(plan_id)
            .bind(subscription_id)
            .bind(amount_fen)
            .bind(currency)
            .bind(method)
            .bind(description)
            .bind(now)
            .fetch_one(self.pool())
            .await?)
    }
}
