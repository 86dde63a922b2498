//! Bind-parameter marks for the batch statements, spelled the way each database reads them
//! fastest.
//!
//! The statements are written once for both databases with PostgreSQL's `$N`. SQLite reads
//! `$N` too, but as a *named* parameter: preparing the statement looks each name up in a list
//! of the names seen so far, and sqlx asks SQLite for every parameter's name to bind it, each
//! a walk of the same list. Both are linear per parameter, so a batch statement of a few
//! hundred parameters (a batch of usage rows binds nine per charge) cost the SQLite thread
//! more than the rows themselves. Bare `?` marks are numbered by position instead, with no list.

use sqlx::AnyConnection;

/// `sql` as `conn`'s database takes it best. For SQLite, `$1`, `$2`, ... become `?` when they
/// occur in that order, each once (what a bare `?` means); a statement that uses a mark twice
/// or out of order keeps its `$N`, which are right, only slower. PostgreSQL's are kept.
pub(super) fn for_connection(sql: String, conn: &AnyConnection) -> String {
    if conn.backend_name() == "SQLite" {
        positional(&sql).unwrap_or(sql)
    } else {
        sql
    }
}

/// How many rows a batch statement of `n` rows writes out. Every statement text a connection
/// has not seen is prepared, and a batch's text changes with its size: under load, when the
/// sizes vary from one batch to the next, sqlx's cache of 100 statements a connection keeps
/// few of them. On PostgreSQL that is a round trip before the statement and another to close
/// the oldest cached one, ~7 % of the metered route's throughput (measured with a cache large
/// enough to keep them all, which is no way out: a prepared 128-row insert holds ~0.4 MB of the
/// server's memory). SQLite prepares in-process, but parsing and compiling a statement of a
/// few hundred parameters is work too: 7.5 % of the gate's CPU on the metered route, and
/// writing SQLite's batches in the same few sizes served 1.044x the requests at 0.970x the CPU
/// a request (`TOGETHER=1 ROUTE=metered bash bench/ab.sh`, medians of 8 paired rounds). So a
/// batch is written out in one of a few sizes (up to 8 as it is, then the next power of two),
/// the rows past `n` all NULL, which every batch statement skips (an `IN` list ignores them,
/// an insert selects its rows `WHERE` a key is not NULL).
pub(super) fn rows_for(n: usize) -> usize {
    if n <= 8 { n } else { n.next_power_of_two() }
}

/// The type a padding NULL is bound as: its column's, so the VALUES' column keeps one type.
#[derive(Clone, Copy)]
pub(super) enum Null {
    Text,
    Int,
}

/// A query that takes one more bound value (sqlx's `Query` and `QueryAs` share no trait), so
/// the helpers that bind a batch's rows serve both. Each implements `bind_value`; the typed
/// binds the batch helpers use are written once, here.
pub(super) trait Binds<'q>: Sized {
    fn bind_value<T>(self, value: T) -> Self
    where
        T: 'q + sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>;

    fn bind_null(self, null: Null) -> Self {
        match null {
            Null::Text => self.bind_value(None::<&str>),
            Null::Int => self.bind_value(None::<i64>),
        }
    }
    fn bind_text(self, value: &'q str) -> Self {
        self.bind_value(value)
    }
    fn bind_owned(self, value: String) -> Self {
        self.bind_value(value)
    }
    fn bind_int(self, value: i64) -> Self {
        self.bind_value(value)
    }
}

impl<'q> Binds<'q> for sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    fn bind_value<T>(self, value: T) -> Self
    where
        T: 'q + sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        self.bind(value)
    }
}

impl<'q, O> Binds<'q> for sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>> {
    fn bind_value<T>(self, value: T) -> Self
    where
        T: 'q + sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        self.bind(value)
    }
}

/// `q` with `rows` padding rows bound, each a NULL of every column of `row`.
pub(super) fn pad<'q, Q: Binds<'q>>(mut q: Q, row: &[Null], rows: usize) -> Q {
    for _ in 0..rows {
        for &null in row {
            q = q.bind_null(null);
        }
    }
    q
}

/// `sql` with its `$1 .. $n` marks made `?`, if they occur in that order, each once.
fn positional(sql: &str) -> Option<String> {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut next = 1u64;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let digits = bytes[i + 1..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if digits > 0 {
                let n: u64 = sql[i + 1..i + 1 + digits].parse().ok()?;
                if n != next {
                    return None;
                }
                next += 1;
                out.push_str(&sql[copied..i]);
                out.push('?');
                i += 1 + digits;
                copied = i;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&sql[copied..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::{positional, rows_for};

    #[test]
    fn batch_sizes_come_in_few_texts() {
        let sizes: Vec<usize> = [1, 2, 8, 9, 16, 17, 100, 128, 129, 500]
            .iter()
            .map(|&n| rows_for(n))
            .collect();
        assert_eq!(sizes, [1, 2, 8, 16, 16, 32, 128, 128, 256, 512]);
        // Every batch size up to the largest (500 commits) fits, in 14 texts.
        let texts: std::collections::HashSet<usize> = (1..=500).map(rows_for).collect();
        assert_eq!(texts.len(), 14);
        assert!((1..=500).all(|n| rows_for(n) >= n));
    }

    #[test]
    fn marks_in_order_become_positional() {
        assert_eq!(
            positional("INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)").as_deref(),
            Some("INSERT INTO t (a, b) VALUES (?, ?), (?, ?)")
        );
        assert_eq!(positional("SELECT 1").as_deref(), Some("SELECT 1"));
        // Two-digit marks, a mark at the very end.
        let many: Vec<String> = (1..=12).map(|i| format!("${i}")).collect();
        let qs = ["?"; 12].join(",");
        assert_eq!(positional(&many.join(",")), Some(qs));
    }

    #[test]
    fn a_mark_used_twice_or_out_of_order_keeps_its_names() {
        assert_eq!(positional("UPDATE t SET a = $1 WHERE b = $1"), None);
        assert_eq!(positional("SELECT $2, $1"), None);
        assert_eq!(positional("SELECT $1, $3"), None);
    }
}
