//! Resource ownership: which account an id the backend handed out belongs to (tasks and
//! uploads, which the backend keys globally). Written once per id, never changed: the first
//! owner stays, so a later reply can never move an id to another account.

use super::StoreError;
use crate::formats::ids::UserId;

repository!(
    /// Who owns each task and upload id the backend handed out.
    Owners, owners
);

impl Owners<'_> {
    /// Records `user_id` as the owner of `(kind, id)` unless the id already has one; returns
    /// the owner the id has afterwards.
    pub async fn record(
        &self,
        kind: &str,
        id: &str,
        user_id: &UserId,
        now: i64,
    ) -> Result<String, StoreError> {
        sqlx::query(
            "INSERT INTO resource_owners (kind, resource_id, user_id, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (kind, resource_id) DO NOTHING",
        )
        .bind(kind)
        .bind(id)
        .bind(user_id.as_str())
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(self
            .owner_of(kind, id)
            .await?
            .unwrap_or_else(|| user_id.to_string()))
    }

    /// The owner of `(kind, id)`, if the gate ever recorded one.
    pub async fn owner_of(&self, kind: &str, id: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT user_id FROM resource_owners WHERE kind = $1 AND resource_id = $2",
        )
        .bind(kind)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|(u,)| u))
    }

    /// Of `ids`, those of `kind` that `user_id` owns.
    pub async fn owned_among(
        &self,
        kind: &str,
        user_id: &UserId,
        ids: &[&str],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut owned = std::collections::HashSet::new();
        // In pages, to stay under every database's limit on bound parameters.
        for page in ids.chunks(500) {
            let marks: Vec<String> = (0..page.len()).map(|i| format!("${}", i + 3)).collect();
            let sql = format!(
                "SELECT resource_id FROM resource_owners WHERE kind = $1 AND user_id = $2 AND resource_id IN ({})",
                marks.join(", ")
            );
            let mut q = sqlx::query_as::<_, (String,)>(&sql)
                .bind(kind)
                .bind(user_id.as_str());
            for id in page {
                q = q.bind(*id);
            }
            owned.extend(q.fetch_all(self.pool()).await?.into_iter().map(|(id,)| id));
        }
        Ok(owned)
    }
}
