//! The store on both backends: migrations create the whole data model, and replicas starting
//! together do not trip over each other.

use crate::common::{Db, database_url};
use idoctor_gate::formats::ids::{QuotaKey, RequestId, UserId};
use idoctor_gate::store::{Charge, Store};

const TABLES: &[&str] = &[
    "api_keys",
    "audit_log",
    "email_verification_codes",
    "payment_refunds",
    "payment_transactions",
    "plan_quotas",
    "quota_balances",
    "quota_types",
    "refresh_tokens",
    "resource_owners",
    "subscription_plans",
    "task_charges",
    "throttles",
    "usage_logs",
    "user_subscriptions",
    "users",
    "webhook_events",
];

async fn migrations_create_the_data_model(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(db, &dir).await;
    let store = Store::connect(&url, 4).await.unwrap();
    assert_eq!(store.table_names().await.unwrap(), TABLES);
    store.ping().await.unwrap();
    if db == Db::Postgres {
        // Usage rows leave room on their pages for the update each gets (HOT updates).
        let options: Option<String> = sqlx::query_scalar(
            "SELECT CAST(reloptions AS TEXT) FROM pg_class WHERE relname = 'usage_logs'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!(options.as_deref(), Some("{fillfactor=50}"));
    }
    store.close().await;
    // Connecting again finds everything applied.
    let again = Store::connect(&url, 4).await.unwrap();
    assert_eq!(again.table_names().await.unwrap().len(), TABLES.len());
}

async fn replicas_starting_together_both_migrate(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(db, &dir).await;
    let (a, b, c) = tokio::join!(
        Store::connect(&url, 2),
        Store::connect(&url, 2),
        Store::connect(&url, 2)
    );
    for s in [a, b, c] {
        let s = s.unwrap();
        assert_eq!(s.table_names().await.unwrap().len(), TABLES.len());
    }
}

async fn constraints_hold(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&database_url(db, &dir).await, 2)
        .await
        .unwrap();
    let pool = store.pool();
    sqlx::query("INSERT INTO users (id, email, username, hashed_password, created_at, updated_at) VALUES ($1, $2, $3, 'x', 0, 0)")
        .bind("u1").bind("a@b.c").bind("alice")
        .execute(pool).await.unwrap();
    let dup = sqlx::query("INSERT INTO users (id, email, username, hashed_password, created_at, updated_at) VALUES ($1, $2, $3, 'x', 0, 0)")
        .bind("u2").bind("a@b.c").bind("bob")
        .execute(pool).await;
    assert!(dup.is_err(), "emails are unique");
    sqlx::query("INSERT INTO quota_types (key, name, unit, updated_at) VALUES ('q', 'Q', 'x', 0)")
        .execute(pool)
        .await
        .unwrap();
    let over = sqlx::query("INSERT INTO quota_balances (user_id, quota_type, limit_amount, used_amount, period_start, period_end, updated_at) VALUES ('u1', 'q', 5, 6, 0, 1, 0)")
        .execute(pool).await;
    assert!(
        over.is_err(),
        "used never exceeds the limit, even by a direct write"
    );
    let active: i64 = sqlx::query_scalar("SELECT is_active FROM users WHERE id = $1")
        .bind("u1")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(active, 1, "flags default to 1 on both backends");
}

/// A user id as a store-level test writes it (the store takes any text it is given).
fn user(id: &str) -> UserId {
    UserId::from(id.to_string())
}

fn runs() -> QuotaKey {
    QuotaKey::parse("runs").unwrap()
}

/// A charge for `POST /process` as the metered route makes one.
fn process_charge<'a>(
    request_id: &'a RequestId,
    user_id: &'a UserId,
    quota_type: &'a QuotaKey,
    amount: i64,
) -> Charge<'a> {
    Charge {
        request_id,
        user_id,
        quota_type,
        amount,
        endpoint: "/process",
        method: "POST",
        metadata: "{}",
    }
}

/// A store with one user, `u1`, allowed `limit` units of `runs` for ever.
async fn alice_with_runs(db: Db, dir: &tempfile::TempDir, limit: i64) -> Store {
    let store = Store::connect(&database_url(db, dir).await, 4)
        .await
        .unwrap();
    let pool = store.pool();
    sqlx::query("INSERT INTO users (id, email, username, hashed_password, created_at, updated_at) VALUES ('u1', 'a@b.c', 'alice', 'x', 0, 0)")
        .execute(pool).await.unwrap();
    store
        .plans()
        .upsert_quota_type("runs", "runs", "x")
        .await
        .unwrap();
    sqlx::query("INSERT INTO quota_balances (user_id, quota_type, limit_amount, used_amount, period_start, period_end, updated_at) VALUES ('u1', 'runs', $1, 0, 0, $2, 0)")
        .bind(limit).bind(i64::MAX).execute(pool).await.unwrap();
    store
}

/// Settle-commits are queued and written in batches: after a flush every committed charge is
/// `committed` exactly once, a second commit or a refund of a committed charge changes nothing,
/// and the balance is what the reservations took.
async fn batched_commits_are_written_once(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let store = alice_with_runs(db, &dir, 1000).await;
    let pool = store.pool();
    let now = idoctor_gate::store::now_ms();
    let ids: Vec<RequestId> = (0..300)
        .map(|i| RequestId::from_minted(&format!("req-{i}")))
        .collect();
    let (u1, runs) = (user("u1"), runs());
    let reserved = futures_util::future::join_all(ids.iter().map(|id| {
        let store = store.clone();
        let (u1, runs) = (&u1, &runs);
        async move {
            let charge = process_charge(id, u1, runs, 2);
            store
                .ledger()
                .reserve(&charge, now)
                .await
                .unwrap()
                .is_some()
        }
    }))
    .await;
    assert!(reserved.iter().all(|r| *r));
    // All but the last ten are committed (those are refunded), some of them twice.
    for id in &ids[..290] {
        store.ledger().commit(id.clone(), now);
    }
    for id in &ids[..50] {
        store.ledger().commit(id.clone(), now + 1);
    }
    for id in &ids[290..] {
        assert!(store.ledger().refund(id, now).await.unwrap().is_some());
    }
    let summary = store
        .ledger()
        .usage_summary(&user("u1"), "runs")
        .await
        .unwrap();
    assert_eq!(
        summary,
        vec![
            ("committed".to_string(), 290, 580),
            ("refunded".to_string(), 10, 20)
        ]
    );
    // A committed charge cannot be refunded afterwards.
    assert!(store.ledger().refund(&ids[0], now).await.unwrap().is_none());
    let balance = store.ledger().balance(&u1, &runs).await.unwrap().unwrap();
    assert_eq!(balance.used_amount, 580);
    // The batch writers kept their connections while batches followed each other, and gave
    // them back once their queues were empty: an idle gate holds no connection.
    let mut idle = (0, 0);
    for _ in 0..100 {
        idle = (pool.num_idle(), pool.size() as usize);
        if idle.0 == idle.1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(idle.0, idle.1, "idle connections of those open");
}

/// Reservations arriving together share a transaction: two users with different limits, 150
/// concurrent charges each (of 1 and 2 units), admit exactly what each limit allows, and every
/// admitted charge sees its own balance (the used amounts are all distinct).
async fn batched_reservations_spend_exactly_the_limit(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&database_url(db, &dir).await, 4)
        .await
        .unwrap();
    let pool = store.pool();
    store
        .plans()
        .upsert_quota_type("runs", "runs", "x")
        .await
        .unwrap();
    for (user, limit) in [("u1", 37), ("u2", 101)] {
        sqlx::query("INSERT INTO users (id, email, username, hashed_password, created_at, updated_at) VALUES ($1, $2, $1, 'x', 0, 0)")
            .bind(user).bind(format!("{user}@b.c")).execute(pool).await.unwrap();
        sqlx::query("INSERT INTO quota_balances (user_id, quota_type, limit_amount, used_amount, period_start, period_end, updated_at) VALUES ($1, 'runs', $2, 0, 0, $3, 0)")
            .bind(user).bind(limit as i64).bind(i64::MAX).execute(pool).await.unwrap();
    }
    let now = idoctor_gate::store::now_ms();
    let runs = runs();
    let jobs: Vec<(RequestId, UserId, i64)> = (0..300)
        .map(|i| {
            let (who, amount) = if i % 2 == 0 { ("u1", 1) } else { ("u2", 2) };
            (RequestId::from_minted(&format!("r{i}")), user(who), amount)
        })
        .collect();
    let results = futures_util::future::join_all(jobs.iter().map(|(id, user, amount)| {
        let store = store.clone();
        let runs = &runs;
        async move {
            let charge = process_charge(id, user, runs, *amount);
            let b = store.ledger().reserve(&charge, now).await.unwrap();
            (user.as_str(), b.map(|b| b.used_amount))
        }
    }))
    .await;
    for (user, limit, amount) in [("u1", 37, 1), ("u2", 101, 2)] {
        let mut seen: Vec<i64> = results
            .iter()
            .filter(|(u, _)| *u == user)
            .filter_map(|(_, used)| *used)
            .collect();
        seen.sort();
        let admitted = limit / amount;
        let expected: Vec<i64> = (1..=admitted).map(|n| n * amount).collect();
        assert_eq!(seen, expected, "{user}: each charge sees its own balance");
        let b = store
            .ledger()
            .balance(&self::user(user), &runs)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.used_amount, admitted * amount);
        assert_eq!(
            store
                .ledger()
                .usage_summary(&self::user(user), "runs")
                .await
                .unwrap(),
            vec![("reserved".to_string(), admitted, admitted * amount)]
        );
    }
}

/// A batch that the database refuses as a whole (here: two charges with one request id, which
/// the usage log's unique key forbids) is retried charge by charge: the others are reserved,
/// exactly one of the pair is, and no balance keeps units of a charge that failed.
async fn a_refused_batch_falls_back_to_single_charges(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let store = alice_with_runs(db, &dir, 100).await;
    let now = idoctor_gate::store::now_ms();
    let ids: Vec<RequestId> = (0..20)
        .map(|i| {
            if i < 2 {
                RequestId::from_minted("twin")
            } else {
                RequestId::from_minted(&format!("r{i}"))
            }
        })
        .collect();
    let (u1, runs) = (user("u1"), runs());
    let results = futures_util::future::join_all(ids.iter().map(|id| {
        let store = store.clone();
        let (u1, runs) = (&u1, &runs);
        async move {
            let charge = process_charge(id, u1, runs, 3);
            store
                .ledger()
                .reserve(&charge, now)
                .await
                .map(|b| b.is_some())
        }
    }))
    .await;
    let twins: Vec<bool> = results[..2].iter().map(|r| r.is_ok()).collect();
    assert_eq!(twins.iter().filter(|ok| **ok).count(), 1, "{results:?}");
    assert!(
        results[2..].iter().all(|r| matches!(r, Ok(true))),
        "{results:?}"
    );
    let balance = store.ledger().balance(&u1, &runs).await.unwrap().unwrap();
    assert_eq!(balance.used_amount, 19 * 3);
    assert_eq!(
        store
            .ledger()
            .usage_summary(&user("u1"), "runs")
            .await
            .unwrap(),
        vec![("reserved".to_string(), 19, 57)]
    );
}

/// Records the owners `asked` all at once (one batch of the writer) and checks that each task id
/// has `u2` as its owner but `owned_by_u1`, answered and stored.
async fn record_together_and_check(
    store: &Store,
    asked: &[(String, &UserId)],
    owned_by_u1: &str,
    now: i64,
) {
    let owners = store.owners();
    let answers = futures_util::future::join_all(
        asked
            .iter()
            .map(|(id, u)| owners.record("task", id, u, now)),
    )
    .await;
    for ((id, _), answer) in asked.iter().zip(answers) {
        let expected = if id == owned_by_u1 { "u1" } else { "u2" };
        assert_eq!(answer.unwrap(), expected, "owner of {id}");
        assert_eq!(
            owners.owner_of("task", id).await.unwrap().as_deref(),
            Some(expected)
        );
    }
}

/// Owners recorded together share the commit writer's transaction, and the first owner of an
/// id stays: within one batch (the earlier record wins), across batches, across more ids than
/// one statement takes, and per kind (the same id of another kind is another resource).
async fn owners_recorded_together_keep_the_first(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&database_url(db, &dir).await, 4)
        .await
        .unwrap();
    let (u1, u2) = (user("u1"), user("u2"));
    let now = idoctor_gate::store::now_ms();
    let owners = store.owners();
    assert_eq!(owners.record("task", "t0", &u1, now).await.unwrap(), "u1");
    // 250 ids, each asked for by u2 and then by u1 in the same batch, with t0 (u1's) among them.
    let asked: Vec<(String, &UserId)> = (0..250)
        .flat_map(|i| [(format!("t{i}"), &u2), (format!("t{i}"), &u1)])
        .collect();
    record_together_and_check(&store, &asked, "t0", now).await;
    // The same id of another kind has an owner of its own.
    assert_eq!(owners.record("upload", "t1", &u1, now).await.unwrap(), "u1");
    assert_eq!(
        owners.owner_of("task", "t1").await.unwrap().as_deref(),
        Some("u2")
    );
    let owned = owners
        .owned_among("task", &u2, &["t0", "t1", "t249"])
        .await
        .unwrap();
    assert_eq!(owned.len(), 2);
}

/// Commits, their task links and new owners queued together are written together (on
/// PostgreSQL in one statement): every charge is committed once, the newest link of each task
/// id is the open one, a new id gets its first owner, and an id that had an owner before keeps
/// it (the statement does not return it; it is looked up after).
async fn commits_links_and_owners_written_together(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let store = alice_with_runs(db, &dir, 1000).await;
    let now = idoctor_gate::store::now_ms();
    let (u1, u2, runs) = (user("u1"), user("u2"), runs());
    let ids: Vec<RequestId> = (0..40)
        .map(|i| RequestId::from_minted(&format!("c{i}")))
        .collect();
    for id in &ids {
        let charge = process_charge(id, &u1, &runs, 1);
        assert!(
            store
                .ledger()
                .reserve(&charge, now)
                .await
                .unwrap()
                .is_some()
        );
    }
    let owners = store.owners();
    assert_eq!(
        owners.record("task", "before", &u1, now).await.unwrap(),
        "u1"
    );
    // Queued without a wait in between: one batch of the commit writer.
    for (i, id) in ids.iter().enumerate() {
        store
            .task_charges()
            .commit_linked(id.clone(), now, "main", &format!("t{}", i % 30), &u1);
    }
    let asked: Vec<(String, &UserId)> = std::iter::once(("before".to_string(), &u2))
        .chain((0..20).map(|i| (format!("n{i}"), &u2)))
        .chain(std::iter::once(("n0".to_string(), &u1)))
        .collect();
    record_together_and_check(&store, &asked, "before", now).await;
    store.ledger().flush().await;
    assert_eq!(
        store.ledger().usage_summary(&u1, "runs").await.unwrap(),
        vec![("committed".to_string(), 40, 40)]
    );
    for t in 0..30 {
        let open = store
            .task_charges()
            .open("main", &format!("t{t}"))
            .await
            .unwrap();
        let newest = if t < 10 { t + 30 } else { t };
        assert_eq!(open.len(), 1, "task t{t}");
        assert_eq!(open[0].request_id, format!("c{newest}"), "task t{t}");
    }
}

on_both!(
    commits_links_and_owners_written_together,
    owners_recorded_together_keep_the_first,
    a_refused_batch_falls_back_to_single_charges,
    batched_reservations_spend_exactly_the_limit,
    batched_commits_are_written_once,
    migrations_create_the_data_model,
    replicas_starting_together_both_migrate,
    constraints_hold,
);
