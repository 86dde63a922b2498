//! The store on both backends: migrations create the whole data model, and replicas starting
//! together do not trip over each other.

use crate::common::{Db, database_url};
use idoctor_gate::store::Store;

const TABLES: &[&str] = &[
    "api_keys",
    "audit_log",
    "email_verification_codes",
    "payment_transactions",
    "plan_quotas",
    "quota_balances",
    "quota_types",
    "refresh_tokens",
    "subscription_plans",
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

on_both!(
    migrations_create_the_data_model,
    replicas_starting_together_both_migrate,
    constraints_hold,
);
