//! Database outages: a PostgreSQL cluster of the test's own, restarted under two gates, and
//! what a replica may still trust across the gap.

use crate::common::pg::{Cluster, database_on};
use crate::common::{Db, Options, TEST_ROUTES, TestApp, spawn_app_with};
use futures_util::FutureExt;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Both gates on one database with the same secrets, as a deployment runs them.
async fn gate(database_url: &str) -> TestApp {
    spawn_app_with(Options {
        db: Db::Postgres,
        database_url: Some(database_url.to_string()),
        routes: format!(
            "{TEST_ROUTES}\n[[route]]\npath = \"/mine/{{*rest}}\"\naccess = \"user\"\n"
        ),
        env: vec![
            (
                "GATE_JWT_SECRET".into(),
                "outage-test-jwt-secret-0123456789abcdef0123456789".into(),
            ),
            (
                "GATE_API_KEY_PEPPER".into(),
                "outage-test-pepper-0123456789abcdef0123456789abcd".into(),
            ),
        ],
        ..Options::default()
    })
    .await
}

async fn with_key(app: &TestApp, key: &str) -> u16 {
    app.client
        .get(app.url("/mine/x"))
        .header("x-api-key", key)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Retries `attempt` while the store is still coming back (503), for at most 20 s.
async fn once_back<F, Fut>(what: &str, mut attempt: F) -> reqwest::Response
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = reqwest::Response>,
{
    let started = Instant::now();
    loop {
        let resp = attempt().await;
        if resp.status() != 503 {
            return resp;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what}: still 503"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A key deleted on one gate right after PostgreSQL restarted is refused by the other within a
/// second, every time: the other gate lost its notification stream with the restart, and a
/// cache is not trusted across such a gap (sqlx's listener reconnects silently, so this was
/// missed for the cache's whole lifetime in 4 of 12 probes).
#[tokio::test]
async fn a_revocation_right_after_postgres_restarts_reaches_the_other_gate() {
    let cluster = Cluster::start();
    let url = database_on(&cluster.url).await;
    let a = gate(&url).await;
    let b = gate(&url).await;
    for round in 0..3 {
        let acct = a.signup(&format!("round{round}")).await;
        let created: Value = a
            .as_user(&acct)
            .create_api_key(json!({"name": "robot"}))
            .await;
        let key = created["key"].as_str().unwrap().to_string();
        let id = created["id"].as_str().unwrap().to_string();
        // The other gate knows the key (and has it cached).
        for _ in 0..3 {
            assert_eq!(with_key(&b, &key).await, 200, "round {round}");
        }

        // An outage of a few seconds: long enough for a listener's reconnect attempts to back
        // off, so the other gate's first notifications after it can pass unheard.
        cluster.stop();
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.start_again();
        let deleted = once_back("deleting the key", || {
            a.as_user(&acct)
                .delete(&format!("/api-keys/{id}"))
                .send()
                .map(|r| r.unwrap())
        })
        .await;
        assert_eq!(deleted.status(), 204, "round {round}");
        let started = Instant::now();
        loop {
            let status = with_key(&b, &key).await;
            assert_ne!(status, 200, "round {round}: the deleted key was admitted");
            if status == 401 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "round {round}: the other gate answers {status}, not 401, a second on"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    a.stop().await;
    b.stop().await;
}

/// While PostgreSQL is down, metered requests answer 503 with `Retry-After`: the first finds out,
/// the next are refused by the breaker without queueing on the pool; signed-in unmetered traffic
/// is still served (nothing can be revoked meanwhile), but a key never seen before the outage
/// is not (503); and metered requests are served again
/// soon after the database is back, without a restart. (How soon is measured in the benchmark
/// scripts, not here.)
#[tokio::test]
async fn metered_requests_fail_fast_while_postgres_is_down_and_recover() {
    let cluster = Cluster::start();
    let url = database_on(&cluster.url).await;
    let app = spawn_app_with(Options {
        db: Db::Postgres,
        database_url: Some(url),
        routes: format!(
            "{TEST_ROUTES}\n[[route]]\npath = \"/mine/{{*rest}}\"\naccess = \"user\"\n\
             [[plan]]\nname = \"free\"\nprice = \"0.00\"\ndefault = true\n[plan.quotas]\napi_calls_full_process = 1000\n"
        ),
        ..Options::default()
    })
    .await;
    let a = app.signup("outage").await;
    // A key made before the outage but never used: the gate has never seen it.
    let unseen: Value = app
        .as_user(&a)
        .create_api_key(json!({"name": "unseen"}))
        .await;
    let unseen = unseen["key"].as_str().unwrap().to_string();
    let process = || async {
        app.as_user(&a)
            .post("/process/p/20250101")
            .send()
            .await
            .unwrap()
    };
    let mine = || async {
        app.as_user(&a)
            .get("/mine/x")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(process().await.status(), 200);
    assert_eq!(mine().await, 200);

    cluster.stop();
    let first = process().await;
    assert_eq!(
        first.status(),
        503,
        "the first metered request finds the database gone"
    );
    assert!(first.headers().contains_key("retry-after"));
    for _ in 0..5 {
        let resp = process().await;
        assert_eq!(resp.status(), 503);
        assert!(resp.headers().contains_key("retry-after"));
        let body: Value = resp.json().await.unwrap();
        assert!(
            body["detail"]
                .as_str()
                .unwrap_or("")
                .contains("unavailable"),
            "{body}"
        );
    }
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert!(
        ready["database"]
            .as_str()
            .is_some_and(|d| d.contains("principals known before the outage")),
        "/readyz says what is still served: {ready}"
    );
    assert_eq!(
        mine().await,
        200,
        "a principal known before the outage is still served"
    );
    assert_eq!(
        with_key(&app, &unseen).await,
        503,
        "a key never seen before the outage cannot be checked"
    );

    cluster.start_again();
    let started = Instant::now();
    while process().await.status() != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "metered requests are not served again after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}
