//! The store: one pool over SQLite (the embedded default) or PostgreSQL (several replicas),
//! chosen by the database URL, with migrations run at start-up.
//!
//! Both backends are driven through sqlx's `Any` driver with one SQL text: the schema uses only
//! TEXT, BIGINT and BOOLEAN columns (ids are UUID strings, times are Unix milliseconds, money is
//! integer fen), and `$N` placeholders work on SQLite as on PostgreSQL. Where the dialects
//! differ (DDL), each backend has its own migration folder with the same versions.

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Connection, Executor};
use std::str::FromStr;
use std::time::Duration;

/// Declares a repository: the store's view of one area (users, plans, the ledger...), a
/// borrowed handle on the one pool. Each area's SQL lives in its own file behind its own type,
/// so a caller says which area it touches (`store.ledger().reserve(..)`) and an area's file
/// reads as the whole of what the gate does with its tables.
macro_rules! repository {
    ($(#[$doc:meta])* $name:ident, $accessor:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy)]
        pub struct $name<'a> {
            store: &'a super::Store,
        }

        impl super::Store {
            $(#[$doc])*
            pub fn $accessor(&self) -> $name<'_> {
                $name { store: self }
            }
        }

        impl $name<'_> {
            fn pool(&self) -> &sqlx::AnyPool {
                self.store.pool()
            }
        }
    };
}

mod api_keys;
mod audit;
mod batch;
mod breaker;
mod codes;
mod columns;
mod commits;
mod held;
mod ledger;
mod marks;
mod notify;
mod owners;
mod payments;
mod plans;
mod refresh_tokens;
mod reservations;
mod subscriptions;
mod task_charges;
mod throttles;
mod turn;
mod users;

pub use api_keys::{ApiKeyRow, ApiKeys, NewApiKey};
pub use audit::{Audit, AuditRow};
pub use breaker::Breaker;
pub use codes::CodeRow;
pub use columns::{PaymentStatus, RefundStatus, SubscriptionStatus};
pub use ledger::{BalanceRow, Charge, Ledger, UsageQuery, UsageRow};
pub use payments::{NewOrder, PaidEvent, PaidOutcome, PaymentRow, Payments, RefundRow};
pub use plans::{Plan, PlanInput, PlanRow, Plans};
pub use refresh_tokens::{RefreshRow, Rotation};
pub use subscriptions::{PaidContext, PeriodEffect, PeriodStart, SubscriptionRow, Subscriptions};
pub use task_charges::{TaskChargeRow, TaskEnd};
pub use throttles::Limit;
pub use users::{NewUser, UserRow, UserUpdate, Users, username_key};

/// Milliseconds since the Unix epoch: how every time is stored.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A connected, migrated database.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The PostgreSQL URL, for `LISTEN` connections outside the pool.
    postgres_url: Option<std::sync::Arc<str>>,
    /// Settle-commits, batched off the request path.
    commits: commits::CommitWriter,
    /// Reservations, batched into shared transactions.
    reservations: reservations::ReserveWriter,
    /// Until when a slow failed connection attempt says the database is unreachable
    /// ([`Store::reachable`]).
    unreachable_until: std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

/// The store as `/readyz` and `/metrics` see it: whether it answers and takes a write, how
/// many connections it holds. No table is reachable through it.
#[derive(Clone)]
pub struct Probe {
    store: Store,
}

impl Probe {
    /// The breaker is open: the database is known to be down.
    pub fn known_down(&self) -> bool {
        self.store.known_down()
    }

    /// A round trip, then a statement that needs the write lock.
    pub async fn check(&self) -> Result<(), StoreError> {
        self.store.ping().await?;
        self.store.probe_write().await
    }

    /// Open and idle connections of the pool.
    pub fn connections(&self) -> (u32, usize) {
        (self.store.pool.size(), self.store.pool.num_idle())
    }
}

/// A store error. Messages never carry the database URL (and so never a password).
#[derive(Debug, Clone)]
pub enum StoreError {
    /// The database cannot be reached or is overloaded: callers answer 503 (fail closed).
    Unavailable(String),
    /// A unique constraint refused the write; the text names the constraint.
    Conflict(String),
    /// Anything else: a bug or a broken schema.
    Other(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Unavailable(m) | StoreError::Conflict(m) | StoreError::Other(m) => {
                f.write_str(m)
            }
        }
    }
}

impl std::error::Error for StoreError {}

/// The database cannot serve now, by its own word. PostgreSQL (five-character SQLSTATEs):
/// connection exceptions (class 08), insufficient resources (class 53: disk full, out of
/// memory, too many connections) and operator interventions (class 57: shutting down,
/// starting up). SQLite (numeric codes below 10000, extended codes folded by `code & 0xff`):
/// SQLITE_BUSY (5) and SQLITE_LOCKED (6), another writer holding the file past busy_timeout;
/// SQLITE_IOERR (10) and SQLITE_FULL (13), the disk failing or full; SQLITE_CANTOPEN (14), the
/// file gone from under it. Each passes once the operator or the other writer is done, and
/// none is a reason to answer 500.
fn is_unavailable(code: Option<&str>, message: &str) -> bool {
    match code {
        Some(c) if c.len() == 5 => ["08", "53", "57"].iter().any(|class| c.starts_with(class)),
        _ => {
            let primary = code.and_then(|c| c.parse::<i64>().ok()).map(|c| c & 0xff);
            matches!(primary, Some(5 | 6 | 10 | 13 | 14))
                || message.contains("database is locked")
                || message.contains("database or disk is full")
        }
    }
}

/// The field a unique violation is about, as a client would name it, from SQLite's
/// `UNIQUE constraint failed: table.column` or PostgreSQL's constraint name
/// (`table_column_key`, or one of our unique indexes): never the database's own wording.
fn taken_field(message: &str, constraint: Option<&str>) -> String {
    if let Some(cols) = message.strip_prefix("UNIQUE constraint failed: ") {
        return cols
            .split(", ")
            .map(|c| c.rsplit('.').next().unwrap_or(c))
            .map(|c| c.strip_suffix("_key").unwrap_or(c))
            .collect::<Vec<_>>()
            .join(", ");
    }
    let name = constraint.unwrap_or_else(|| message.rsplit('"').nth(1).unwrap_or(message));
    match name {
        "users_username_folded" => return "username".into(),
        "one_current_subscription" => return "current subscription".into(),
        _ => {}
    }
    const TABLES: [&str; 8] = [
        "subscription_plans",
        "user_subscriptions",
        "payment_transactions",
        "webhook_events",
        "quota_types",
        "plan_quotas",
        "api_keys",
        "users",
    ];
    let bare = name
        .strip_suffix("_pkey")
        .or_else(|| name.strip_suffix("_key"))
        .unwrap_or(name);
    TABLES
        .iter()
        .find_map(|t| bare.strip_prefix(t).and_then(|r| r.strip_prefix('_')))
        .unwrap_or(bare)
        .to_string()
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(taken_field(db.message(), db.constraint()))
            }
            // The file locked by another writer past busy_timeout, the disk full, the server
            // shutting down: the store is there but cannot serve now.
            sqlx::Error::Database(db) if is_unavailable(db.code().as_deref(), db.message()) => {
                StoreError::Unavailable(format!(
                    "the database cannot serve now: {}",
                    redact(db.message())
                ))
            }
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(redact(&e.to_string())),
            _ => StoreError::Other(redact(&e.to_string())),
        }
    }
}

impl Store {
    /// Connects to `url`, creating a SQLite file (and its folder) when missing, and migrates.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let url = match backend {
            Backend::Sqlite => prepare_sqlite_url(url)?,
            Backend::Postgres => url.to_string(),
        };
        let options = AnyConnectOptions::from_str(&url).map_err(|e| {
            StoreError::Other(format!("invalid database URL: {}", redact(&e.to_string())))
        })?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            // A SQLite connection lives in this process: pinging it before each use only adds
            // a round trip to its thread (two context switches on the core the proxy runs on,
            // per query). A PostgreSQL one may have been dropped by the server; it keeps the
            // check.
            .test_before_acquire(backend == Backend::Postgres)
            // A connection must come back to the pool outside any transaction. sqlx counts the
            // transactions it opened; when SQLite has already rolled one back by itself (a full
            // disk, an I/O error), sqlx's own ROLLBACK fails and its count stays at one, so the
            // next `begin` opens a SAVEPOINT instead, a dropped one answers with ROLLBACK TO
            // (which leaves the transaction open), and every later write on that connection
            // stays uncommitted, holding the write lock: charges answered 200 that no other
            // connection ever sees. Such a connection is closed instead of reused. The ping
            // first runs the rollback a dropped transaction queued, so only a count that stays
            // up after it closes the connection; a connection outside a transaction (every
            // release on the hot path) costs nothing more.
            .after_release(|conn, _| {
                Box::pin(async move {
                    if !conn.is_in_transaction() {
                        return Ok(true);
                    }
                    conn.ping().await?;
                    let clean = !conn.is_in_transaction();
                    if !clean {
                        tracing::warn!(
                            "a database connection came back inside a transaction it could not \
                             roll back; closing it"
                        );
                    }
                    Ok(clean)
                })
            })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the single writer; busy_timeout makes a
                        // second writer wait instead of failing with SQLITE_BUSY. The WAL is
                        // copied back into the database (a checkpoint, run by the commit that
                        // crosses the mark) every 10,000 pages (~40 MB) instead of SQLite's
                        // 1,000: the pages every batch rewrites (a balance, the tails of the
                        // usage log and its indexes) are copied and synced once per checkpoint,
                        // which at 1,000 was 9 % of the gate's CPU on a loaded metered route.
                        // `TOGETHER=1 ROUTE=metered bash bench/ab.sh`, 8 paired rounds: 1.027x
                        // the requests at 0.980x the CPU a request.
                        // Temporary storage (the statement journal a multi-row write inside a
                        // transaction keeps, SQLite's sorters) in memory: on a file, a loaded
                        // metered route created, wrote and unlinked ~140 files a second under
                        // /var/tmp. The batches bound what it holds (at most 512 rows).
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; \
                             PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; \
                             PRAGMA wal_autocheckpoint = 10000; PRAGMA temp_store = MEMORY;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot connect to the database: {}",
                    redact(&e.to_string())
                ))
            })?;
        // The two batch writers take turns at SQLite's one write lock (`turn`).
        let turn = turn::WriteTurn::for_backend(backend);
        let store = Store {
            pool: pool.clone(),
            backend,
            postgres_url: (backend == Backend::Postgres).then(|| url.as_str().into()),
            commits: commits::CommitWriter::start(pool.clone(), turn.clone()),
            reservations: reservations::ReserveWriter::start(pool.clone(), backend, turn),
            unreachable_until: Default::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Runs pending migrations. PostgreSQL serialises concurrent migrators with an advisory
    /// lock; SQLite has none, so a replica that loses the race retries once the winner is done.
    async fn migrate(&self) -> Result<(), StoreError> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        let mut attempt = 0;
        loop {
            match migrator.run(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt < 5 && self.backend == Backend::Sqlite => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "migration raced another process; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
                Err(e) => return Err(StoreError::Other(format!("migration failed: {e}"))),
            }
        }
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// What operations may ask of the database (readiness, pool use), and nothing more.
    pub fn probe(&self) -> Probe {
        Probe {
            store: self.clone(),
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn postgres_url(&self) -> Option<&str> {
        self.postgres_url.as_deref()
    }

    /// A round trip, for readiness checks.
    /// Whether the database is known to be down (the reservations' breaker is open).
    pub fn known_down(&self) -> bool {
        self.reservations.store_down()
    }

    /// Asks the database (500 ms at most) and opens the breaker if it does not answer: for
    /// whoever saw a connection die (the notification listener sees a restart at once, long
    /// before a request's pool acquire times out).
    pub async fn check_alive(&self) {
        if !breaker::answers(&self.pool).await {
            self.reservations.trip(&self.pool);
        }
    }

    /// Whether the store can write now: a statement that changes nothing but needs the write
    /// lock (SQLite takes it for any `DELETE`), so a file locked by another writer shows here
    /// while reads still work.
    pub async fn probe_write(&self) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM throttles WHERE key = ''")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(StoreError::from)
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| {
                StoreError::Unavailable(format!("database unreachable: {}", redact(&e.to_string())))
            })
    }

    /// Names of the tables the migrations created, sorted.
    pub async fn table_names(&self) -> Result<Vec<String>, StoreError> {
        let sql = match self.backend {
            Backend::Sqlite => {
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
                 AND name NOT LIKE '_sqlx%' ORDER BY name"
            }
            Backend::Postgres => {
                "SELECT CAST(table_name AS TEXT) FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name NOT LIKE '_sqlx%' ORDER BY table_name"
            }
        };
        sqlx::query_scalar(sql)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::from)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `sqlite://path` with `mode=rwc`, after creating the file's folder.
fn prepare_sqlite_url(url: &str) -> Result<String, StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or_default();
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" {
        return Err(StoreError::Other(
            "the SQLite URL needs a file path (an in-memory database would lose every account at restart)".into(),
        ));
    }
    if let Some(parent) = std::path::Path::new(path).parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Other(format!(
                    "cannot create the folder {}: {e}",
                    parent.display()
                ))
            })?;
        }
    }
    let query = if query.contains("mode=") {
        query.to_string()
    } else if query.is_empty() {
        "mode=rwc".to_string()
    } else {
        format!("{query}&mode=rwc")
    };
    Ok(format!("sqlite://{path}?{query}"))
}

/// Removes a `user:password@` from anything that might echo a URL.
fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_inclusive(char::is_whitespace) {
        match (word.find("://"), word.find('@')) {
            (Some(s), Some(at)) if at > s => {
                out.push_str(&word[..s + 3]);
                out.push_str("***");
                out.push_str(&word[at..]);
            }
            _ => out.push_str(word),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_unique_violation_names_the_field_on_both_databases() {
        use super::taken_field;
        assert_eq!(
            taken_field("UNIQUE constraint failed: subscription_plans.name", None),
            "name"
        );
        assert_eq!(
            taken_field("UNIQUE constraint failed: users.username_key", None),
            "username"
        );
        assert_eq!(
            taken_field(
                "duplicate key value violates unique constraint \"subscription_plans_name_key\"",
                Some("subscription_plans_name_key")
            ),
            "name"
        );
        assert_eq!(taken_field("x", Some("users_username_folded")), "username");
        assert_eq!(taken_field("x", Some("users_email_key")), "email");
    }

    #[test]
    fn a_full_disk_a_lock_or_a_stopping_server_is_unavailable_not_a_bug() {
        use super::is_unavailable;
        // SQLite: busy, locked, disk I/O (SQLITE_IOERR_WRITE = 10 | 3 << 8), full, cannot open.
        for code in ["5", "517", "6", "778", "13", "14"] {
            assert!(is_unavailable(Some(code), ""), "SQLite {code}");
        }
        assert!(is_unavailable(None, "database or disk is full"));
        // PostgreSQL: admin shutdown, disk full, connection failure.
        for code in ["57P01", "53100", "08006"] {
            assert!(is_unavailable(Some(code), ""), "PostgreSQL {code}");
        }
        // Bugs stay bugs: a constraint (SQLite 19, 2067), a syntax error, a missing table, and
        // PostgreSQL codes whose digits would fold onto SQLite's (23301 & 0xff == 5, 22029 & 0xff == 13).
        for code in ["19", "2067", "1", "42601", "42P01", "23301", "22029"] {
            assert!(!is_unavailable(Some(code), "x"), "{code}");
        }
    }

    #[test]
    fn redacts_credentials() {
        assert_eq!(
            super::redact("bad postgres://u:secret@h:5/db here"),
            "bad postgres://***@h:5/db here"
        );
    }

    #[test]
    fn both_backends_have_the_same_migration_versions() {
        let versions = |m: &sqlx::migrate::Migrator| {
            m.iter()
                .map(|m| (m.version, m.description.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            versions(&super::SQLITE_MIGRATIONS),
            versions(&super::POSTGRES_MIGRATIONS)
        );
        assert!(!versions(&super::SQLITE_MIGRATIONS).is_empty());
    }
}
