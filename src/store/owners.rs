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

/// The owners of a batch of records being found: the first record of each (kind, id) in
/// arrival order, and the owner each has once written (the first owner of an id stays, also
/// within the batch: the earliest record wins).
pub(super) struct Batch<'r> {
    records: &'r [OwnerRecord],
    first: HashMap<(&'r str, &'r str), usize>,
    /// Index in `records` of the first record of each (kind, id), in arrival order.
    pub(super) unique: Vec<usize>,
    owner: HashMap<(&'r str, &'r str), String>,
}

impl<'r> Batch<'r> {
    pub(super) fn of(records: &'r [OwnerRecord]) -> Batch<'r> {
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
        Batch {
            records,
            first,
            unique,
            owner: HashMap::new(),
        }
    }

    pub(super) fn record(&self, i: usize) -> &'r OwnerRecord {
        &self.records[i]
    }

    /// `user` owns `(kind, id)`, as a statement returned it.
    pub(super) fn found(&mut self, kind: &str, id: &str, user: String) {
        if let Some(&i) = self.first.get(&(kind, id)) {
            let r = &self.records[i];
            self.owner.insert((r.kind.as_str(), r.id.as_str()), user);
        }
    }

    /// Looks up, in `conn`, the owners of the ids no statement returned yet (those that had an
    /// owner already), one select per page of them.
    pub(super) async fn look_up_rest(
        &mut self,
        conn: &mut sqlx::AnyConnection,
    ) -> Result<(), StoreError> {
        let records = self.records;
        let rest: Vec<usize> = self
            .unique
            .iter()
            .copied()
            .filter(|&i| {
                !self
                    .owner
                    .contains_key(&(records[i].kind.as_str(), records[i].id.as_str()))
            })
            .collect();
        for page in rest.chunks(100) {
            let marks: Vec<String> = (0..page.len())
                .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
                .collect();
            let sql = format!(
                "SELECT kind, resource_id, user_id FROM resource_owners WHERE (kind, resource_id) IN (VALUES {})",
                marks.join(", ")
            );
            let sql = super::marks::for_connection(sql, conn);
            let mut q = sqlx::query_as::<_, (String, String, String)>(&sql);
            for &i in page {
                q = q
                    .bind(records[i].kind.as_str())
                    .bind(records[i].id.as_str());
            }
            for (kind, id, user) in q.fetch_all(&mut *conn).await? {
                self.found(&kind, &id, user);
            }
        }
        Ok(())
    }

    /// The owner each record's id has, in order.
    pub(super) fn owners(self) -> Vec<String> {
        self.records
            .iter()
            .map(|r| {
                self.owner
                    .get(&(r.kind.as_str(), r.id.as_str()))
                    .cloned()
                    // Only if the row vanished meanwhile: the record's own owner.
                    .unwrap_or_else(|| r.user_id.to_string())
            })
            .collect()
    }
}

/// Records the owners of `records` in `tx` (the first owner of an id stays, also within the
/// batch: the earliest record wins); the owner each id has afterwards, in order. One insert
/// per page; ids that had an owner already are looked up, one select per page of those.
pub(super) async fn record_all(
    tx: &mut sqlx::AnyConnection,
    records: &[OwnerRecord],
) -> Result<Vec<String>, StoreError> {
    let mut batch = Batch::of(records);
    let unique = batch.unique.clone();
    for page in unique.chunks(100) {
        // Padded with NULL rows to one of a few sizes (`marks::rows_for`), which the insert
        // skips; the VALUES' columns are column1.. in both databases.
        let written = super::marks::rows_for(page.len());
        let sql = super::marks::for_connection(insert_owners(1, written), tx);
        let q = bind_page(
            sqlx::query_as::<_, (String, String, String)>(&sql),
            &batch,
            page,
            written,
        );
        for (kind, id, user) in q.fetch_all(&mut *tx).await? {
            batch.found(&kind, &id, user);
        }
    }
    batch.look_up_rest(tx).await?;
    Ok(batch.owners())
}

/// The insert of `rows` owner records (NULL rows skipped, see [`bind_page`]), their marks from
/// `$first` on, returning the rows it wrote: an id that had an owner already is not returned
/// (the first owner stays), and [`Batch::look_up_rest`] finds it.
pub(super) fn insert_owners(first: usize, rows: usize) -> String {
    format!(
        "INSERT INTO resource_owners (kind, resource_id, user_id, created_at) \
         SELECT * FROM (VALUES {}) AS v WHERE v.column1 IS NOT NULL \
         ON CONFLICT (kind, resource_id) DO NOTHING RETURNING kind, resource_id, user_id",
        value_rows(first, rows)
    )
}

/// `rows` VALUES rows of an owner record (kind, id, user, time), their marks from `$first` on.
fn value_rows(first: usize, rows: usize) -> String {
    (0..rows)
        .map(|i| {
            let p = first + 4 * i;
            format!("(${}, ${}, ${}, ${})", p, p + 1, p + 2, p + 3)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `q` with the records of `page` bound as [`value_rows`] of `rows` rows (NULLs past them).
pub(super) fn bind_page<'q, Q: super::marks::Binds<'q>>(
    mut q: Q,
    batch: &Batch<'q>,
    page: &[usize],
    rows: usize,
) -> Q {
    for &i in page {
        let r = batch.record(i);
        q = q
            .bind_text(r.kind.as_str())
            .bind_text(r.id.as_str())
            .bind_text(r.user_id.as_str())
            .bind_int(r.now);
    }
    use super::marks::Null::{Int, Text};
    super::marks::pad(q, &[Text, Text, Text, Int], rows - page.len())
}
