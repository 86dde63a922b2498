//! The quota ledger under any interleaving (proptest): reserves, commits, refunds, a new
//! period beginning and a changed limit, in any order, keep `0 <= used <= limit`, and `used`
//! equal to the units of the period's reserved and committed usage rows, on SQLite and on
//! PostgreSQL. A charge made in an earlier period and refunded later gives nothing to the
//! current one.

use idoctor_gate::billing::{Billing, ChargeRequest, Reservation};
use idoctor_gate::config::Config;
use idoctor_gate::formats::ids::{QuotaKey, RequestId};
use idoctor_gate::store::{NewUser, Store, now_ms};
use proptest::prelude::*;
use std::sync::{Arc, OnceLock};

use crate::common::{Db, database_url};

const RUNS: &str = "api_calls_full_process";

#[derive(Debug, Clone)]
enum Op {
    Reserve(i64),
    Commit(usize),
    Refund(usize),
    NewPeriod,
    SetLimit(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1i64..4).prop_map(Op::Reserve),
        3 => any::<usize>().prop_map(Op::Commit),
        2 => any::<usize>().prop_map(Op::Refund),
        1 => Just(Op::NewPeriod),
        1 => (0i64..12).prop_map(Op::SetLimit),
    ]
}

/// One runtime, store and billing per database for all cases (a fresh account per case).
struct World {
    rt: tokio::runtime::Runtime,
    store: Store,
    billing: Arc<Billing>,
    _dir: tempfile::TempDir,
}

fn world(db: Db) -> &'static World {
    static SQLITE: OnceLock<World> = OnceLock::new();
    static POSTGRES: OnceLock<World> = OnceLock::new();
    let cell = match db {
        Db::Sqlite => &SQLITE,
        Db::Postgres => &POSTGRES,
    };
    cell.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (store, billing) = rt.block_on(async {
            let store = Store::connect(&database_url(db, &dir).await, 4)
                .await
                .unwrap();
            let config =
                Config::from_toml_str_isolated(&crate::common::shipped_config(), "proxy.toml")
                    .unwrap();
            let billing = Arc::new(Billing::new(store.clone(), Arc::new(config)));
            billing.seed().await.unwrap();
            (store, billing)
        });
        World {
            rt,
            store,
            billing,
            _dir: dir,
        }
    })
}

/// Runs `ops` for a new account and checks the invariants after each.
async fn run(w: &World, ops: &[Op]) -> Result<(), TestCaseError> {
    let user = w
        .store
        .users()
        .create(NewUser {
            email: format!("{}@example.com", uuid::Uuid::new_v4().simple()),
            username: format!("u{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            hashed_password: "x".into(),
            is_superuser: false,
            email_verified: true,
        })
        .await
        .unwrap()
        .id;
    w.billing.ensure_current(&user).await.unwrap();
    let runs = QuotaKey::parse(RUNS).unwrap();
    let free = w.store.plans().default().await.unwrap().unwrap();
    let types: Vec<String> = w
        .billing
        .quota_types()
        .iter()
        .map(|q| q.key.to_string())
        .collect();
    let mut open: Vec<Reservation> = Vec::new();
    for op in ops {
        match op {
            Op::Reserve(amount) => {
                let request_id = RequestId::mint();
                let charge = ChargeRequest {
                    user_id: &user,
                    quota_type: &runs,
                    amount: *amount,
                    request_id: &request_id,
                    endpoint: "/process/p/d",
                    method: "POST",
                };
                if let Ok(r) = w.billing.reserve(&charge).await {
                    open.push(r);
                }
            }
            Op::Commit(i) if !open.is_empty() => {
                let r = open.remove(i % open.len());
                r.commit();
            }
            Op::Refund(i) if !open.is_empty() => {
                let r = open.remove(i % open.len());
                r.refund().await;
            }
            Op::NewPeriod => {
                // The period's rows and the next one's are apart by a millisecond at least.
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                let start = now_ms();
                w.store
                    .subscriptions()
                    .new_quota_cycle(&user, &free, &types, (start, start + 86_400_000))
                    .await
                    .unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            Op::SetLimit(limit) => {
                // Refused (None) below what is used: never clamped.
                let _ = w
                    .store
                    .ledger()
                    .set_limit(&user, &runs, *limit, now_ms())
                    .await
                    .unwrap();
            }
            _ => {}
        }
        w.store.ledger().flush().await;
        let b = w
            .store
            .ledger()
            .balance(&user, &runs)
            .await
            .unwrap()
            .unwrap();
        prop_assert!(b.used_amount >= 0, "{op:?}: used {}", b.used_amount);
        prop_assert!(
            b.used_amount <= b.limit_amount,
            "{op:?}: used {} over the limit {}",
            b.used_amount,
            b.limit_amount
        );
        // Reserved and committed rows of the period: what the balance must hold.
        let counted: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM usage_logs WHERE user_id = $1 AND quota_type = $2 \
             AND state IN ('reserved', 'committed') AND created_at >= $3",
        )
        .bind(user.as_str())
        .bind(RUNS)
        .bind(b.period_start)
        .fetch_one(w.store.pool())
        .await
        .unwrap();
        prop_assert_eq!(
            b.used_amount,
            counted,
            "{:?}: used against the period's rows",
            op
        );
    }
    for r in open {
        r.refund().await;
    }
    Ok(())
}

fn check(db: Db, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let w = world(db);
    w.rt.block_on(run(w, &ops))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_ledger_holds_under_any_interleaving(ops in proptest::collection::vec(op(), 1..25)) {
        check(Db::Sqlite, ops)?;
    }

    #[test]
    fn postgres_ledger_holds_under_any_interleaving(ops in proptest::collection::vec(op(), 1..25)) {
        check(Db::Postgres, ops)?;
    }
}
