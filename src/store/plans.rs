//! Plans and the quota types they grant. Prices are integer fen in the store.

use super::columns::Flag;
use super::{StoreError, now_ms};
use crate::formats::money::Fen;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PlanRow {
    pub id: String,
    pub name: String,
    pub description: String,
    #[sqlx(try_from = "i64")]
    pub price_fen: Fen,
    pub currency: String,
    pub billing_cycle: String,
    pub features: String,
    #[sqlx(try_from = "Flag")]
    pub is_active: bool,
    #[sqlx(try_from = "Flag")]
    pub is_default: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A plan with its quota limits (type key, limit; -1 = unlimited).
#[derive(Debug, Clone)]
pub struct Plan {
    pub row: PlanRow,
    pub quotas: Vec<(String, i64)>,
}

impl Plan {
    pub fn limit_of(&self, quota_type: &str) -> i64 {
        self.quotas
            .iter()
            .find(|(t, _)| t == quota_type)
            .map(|(_, l)| *l)
            .unwrap_or(0)
    }
}

/// The fields of a plan to write.
#[derive(Debug, Clone)]
pub struct PlanInput {
    pub name: String,
    pub description: String,
    pub price_fen: Fen,
    pub currency: String,
    pub billing_cycle: String,
    pub features: String,
    pub is_active: bool,
    pub is_default: bool,
    pub quotas: Vec<(String, i64)>,
}

const COLUMNS: &str = "id, name, description, price_fen, currency, billing_cycle, features, is_active, is_default, created_at, updated_at";

repository!(
    /// Plans and the quota types they grant.
    Plans, plans
);

impl Plans<'_> {
    /// Inserts or updates a quota type (declared in proxy.toml).
    pub async fn upsert_quota_type(
        &self,
        key: &str,
        name: &str,
        unit: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO quota_types (key, name, unit, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (key) DO UPDATE SET name = excluded.name, unit = excluded.unit, updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(name)
        .bind(unit)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// (key, name, unit) of every quota type, by key.
    pub async fn quota_types(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT key, name, unit FROM quota_types ORDER BY key")
                .fetch_all(self.pool())
                .await?,
        )
    }

    async fn with_quotas(&self, rows: Vec<PlanRow>) -> Result<Vec<Plan>, StoreError> {
        let all: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT plan_id, quota_type, limit_amount FROM plan_quotas ORDER BY quota_type",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| Plan {
                quotas: all
                    .iter()
                    .filter(|(p, _, _)| *p == row.id)
                    .map(|(_, t, l)| (t.clone(), *l))
                    .collect(),
                row,
            })
            .collect())
    }

    /// Plans ordered by price, then name.
    pub async fn list(&self, active_only: bool) -> Result<Vec<Plan>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM subscription_plans WHERE is_active = 1 OR $1 = 0 ORDER BY price_fen, name"
        );
        let rows = sqlx::query_as::<_, PlanRow>(&sql)
            .bind(active_only as i64)
            .fetch_all(self.pool())
            .await?;
        self.with_quotas(rows).await
    }

    pub async fn by_id(&self, id: &str) -> Result<Option<Plan>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM subscription_plans WHERE id = $1");
        let row = sqlx::query_as::<_, PlanRow>(&sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        match row {
            None => Ok(None),
            Some(r) => Ok(self.with_quotas(vec![r]).await?.pop()),
        }
    }

    pub async fn by_name(&self, name: &str) -> Result<Option<Plan>, StoreError> {
        let id: Option<String> =
            sqlx::query_scalar("SELECT id FROM subscription_plans WHERE name = $1")
                .bind(name)
                .fetch_optional(self.pool())
                .await?;
        match id {
            None => Ok(None),
            Some(id) => self.by_id(&id).await,
        }
    }

    /// The plan every new user starts on.
    pub async fn default(&self) -> Result<Option<Plan>, StoreError> {
        let id: Option<String> = sqlx::query_scalar(
            "SELECT id FROM subscription_plans WHERE is_default = 1 AND is_active = 1 ORDER BY created_at LIMIT 1",
        )
        .fetch_optional(self.pool())
        .await?;
        match id {
            None => Ok(None),
            Some(id) => self.by_id(&id).await,
        }
    }

    /// Creates a plan (with `id`, or a new one) and its quotas, in one transaction.
    pub async fn create(&self, input: &PlanInput) -> Result<Plan, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        if input.is_default {
            sqlx::query("UPDATE subscription_plans SET is_default = 0 WHERE is_default = 1")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(&format!(
            "INSERT INTO subscription_plans ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)"
        ))
        .bind(&id)
        .bind(&input.name)
        .bind(&input.description)
        .bind(input.price_fen.get())
        .bind(&input.currency)
        .bind(&input.billing_cycle)
        .bind(&input.features)
        .bind(input.is_active as i64)
        .bind(input.is_default as i64)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for (t, l) in &input.quotas {
            sqlx::query(
                "INSERT INTO plan_quotas (plan_id, quota_type, limit_amount) VALUES ($1, $2, $3)",
            )
            .bind(&id)
            .bind(t)
            .bind(l)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.by_id(&id)
            .await?
            .ok_or_else(|| StoreError::Other("a created plan vanished".into()))
    }

    /// Replaces a plan's fields and quotas, in one transaction.
    pub async fn update(&self, id: &str, input: &PlanInput) -> Result<Option<Plan>, StoreError> {
        let mut tx = self.pool().begin().await?;
        if input.is_default {
            sqlx::query(
                "UPDATE subscription_plans SET is_default = 0 WHERE is_default = 1 AND id <> $1",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        let done = sqlx::query(
            "UPDATE subscription_plans SET name = $2, description = $3, price_fen = $4, currency = $5, \
             billing_cycle = $6, features = $7, is_active = $8, is_default = $9, updated_at = $10 WHERE id = $1",
        )
        .bind(id)
        .bind(&input.name)
        .bind(&input.description)
        .bind(input.price_fen.get())
        .bind(&input.currency)
        .bind(&input.billing_cycle)
        .bind(&input.features)
        .bind(input.is_active as i64)
        .bind(input.is_default as i64)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        sqlx::query("DELETE FROM plan_quotas WHERE plan_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        for (t, l) in &input.quotas {
            sqlx::query(
                "INSERT INTO plan_quotas (plan_id, quota_type, limit_amount) VALUES ($1, $2, $3)",
            )
            .bind(id)
            .bind(t)
            .bind(l)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.by_id(id).await
    }
}
