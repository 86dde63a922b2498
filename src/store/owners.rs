//! Resource ownership: which account an id the backend handed out belongs to (tasks and
//! uploads, which the backend keys globally). Written once per id, never changed: the first
//! owner stays, so a later reply can never move an id to another account.

use super::StoreError;
use crate::formats::ids::UserId;
use std::collections::HashMap;

repository!(
    /// Who owns each task and upload id the backend handed out.
    Owners, owners
);

impl Owners<'_> {
    /// Records `user_id` as the owner of `(kind, id)` unless the id already has one; returns
    /// the owner the id has afterwards. Written with the commit writer's next batch
    /// (`commits`): one transaction for all the ids handed out meanwhile.
    pub async fn record(
        &self,
        kind: &str,
        id: &str,
        user_id: &UserId,
        now: i64,
    ) -> Result<String, StoreError> {
        self.store
            .commits
            .own(OwnerRecord {
                kind: kind.to_string(),
                id: id.to_string(),
                user_id: user_id.clone(),
                now,
            })
            .await
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

/// An id to record the owner of, queued for the commit writer.
pub struct OwnerRecord {
    pub kind: String,
    pub id: String,
    pub user_id: UserId,
    pub now: i64,
}

/// Records the owners of `records` in `tx` (the first owner of an id stays, also within the
/// batch: the earliest record wins); the owner each id has afterwards, in order. One insert
/// per page; ids that had an owner already are looked up, one select per page of those.
pub(super) async fn record_all(
    tx: &mut sqlx::AnyConnection,
    records: &[OwnerRecord],
) -> Result<Vec<String>, StoreError> {
    // The first record of each (kind, id), in arrival order.
    let mut first: HashMap<(&str, &str), usize> = HashMap::new();
    let mut unique = Vec::new();
    for (i, r) in records.iter().enumerate() {
        first
            .entry((r.kind.as_str(), r.id.as_str()))
            .or_insert_with(|| {
                unique.push(i);
                i
            });
    }
    // The owner of each (kind, id) after the insert: those it wrote, then those it did not.
    let mut owner: HashMap<(&str, &str), String> = HashMap::new();
    for page in unique.chunks(100) {
        // Padded with NULL rows to one of a few sizes (`marks::rows_for`), which the insert
        // skips; the VALUES' columns are column1.. in both databases.
        let written = super::marks::rows_for(page.len(), tx);
        let rows: Vec<String> = (0..written)
            .map(|i| {
                format!(
                    "(${}, ${}, ${}, ${})",
                    4 * i + 1,
                    4 * i + 2,
                    4 * i + 3,
                    4 * i + 4
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO resource_owners (kind, resource_id, user_id, created_at) \
             SELECT * FROM (VALUES {}) AS v WHERE v.column1 IS NOT NULL \
             ON CONFLICT (kind, resource_id) DO NOTHING RETURNING kind, resource_id, user_id",
            rows.join(", ")
        );
        let sql = super::marks::for_connection(sql, tx);
        let mut q = sqlx::query_as::<_, (String, String, String)>(&sql);
        for &i in page {
            let r = &records[i];
            q = q
                .bind(r.kind.as_str())
                .bind(r.id.as_str())
                .bind(r.user_id.as_str())
                .bind(r.now);
        }
        use super::marks::Null::{Int, Text};
        let q = super::marks::pad(q, &[Text, Text, Text, Int], written - page.len());
        for (kind, id, user) in q.fetch_all(&mut *tx).await? {
            if let Some(&i) = first.get(&(kind.as_str(), id.as_str())) {
                let r = &records[i];
                owner.insert((r.kind.as_str(), r.id.as_str()), user);
            }
        }
    }
    let known: Vec<usize> = unique
        .iter()
        .copied()
        .filter(|&i| !owner.contains_key(&(records[i].kind.as_str(), records[i].id.as_str())))
        .collect();
    for page in known.chunks(100) {
        let marks: Vec<String> = (0..page.len())
            .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
            .collect();
        let sql = format!(
            "SELECT kind, resource_id, user_id FROM resource_owners WHERE (kind, resource_id) IN (VALUES {})",
            marks.join(", ")
        );
        let sql = super::marks::for_connection(sql, tx);
        let mut q = sqlx::query_as::<_, (String, String, String)>(&sql);
        for &i in page {
            q = q
                .bind(records[i].kind.as_str())
                .bind(records[i].id.as_str());
        }
        for (kind, id, user) in q.fetch_all(&mut *tx).await? {
            if let Some(&i) = first.get(&(kind.as_str(), id.as_str())) {
                let r = &records[i];
                owner.insert((r.kind.as_str(), r.id.as_str()), user);
            }
        }
    }
    Ok(records
        .iter()
        .map(|r| {
            owner
                .get(&(r.kind.as_str(), r.id.as_str()))
                .cloned()
                // Only if the row vanished within the transaction: the record's own owner.
                .unwrap_or_else(|| r.user_id.to_string())
        })
        .collect())
}
