//! Plans, subscriptions and exact quota metering through the shipped proxy.toml, on SQLite and
//! PostgreSQL: concurrency never overspends, every refund path gives the units back, periods
//! roll over, and no user sees another's usage.

use crate::common::{Account, Db, Options, TestApp, bearer, spawn_app_with};
use serde_json::{Value, json};
use std::time::Duration;

const PROCESS: &str = "api_calls_full_process";

async fn app_on(db: Db, database_url: Option<String>, env: Vec<(String, String)>) -> TestApp {
    spawn_app_with(Options {
        db,
        shipped: true,
        routes: String::new(),
        database_url,
        env,
        ..Options::default()
    })
    .await
}

async fn app(db: Db) -> TestApp {
    app_on(db, None, Vec::new()).await
}

async fn used(app: &TestApp, a: &Account, quota: &str) -> i64 {
    app.quota(a, quota).await.used
}

/// (committed count, refunded count, reserved count).
async fn ledger(app: &TestApp, a: &Account, quota: &str) -> (i64, i64, i64) {
    (
        app.usage_rows_in(a, quota, "committed").await,
        app.usage_rows_in(a, quota, "refunded").await,
        app.usage_rows_in(a, quota, "reserved").await,
    )
}

async fn process(app: &TestApp, a: &Account, query: &str) -> reqwest::Response {
    app.as_user(a)
        .post(&format!("/process/p1/20250101{query}"))
        .send()
        .await
        .unwrap()
}

async fn concurrent_requests_admit_exactly_the_remaining(db: Db) {
    let app = app(db).await;
    let a = app.signup("conc").await;
    app.set_limit(&a, PROCESS, 7).await;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let req = app.as_user(&a).post("/process/p1/20250101");
        set.spawn(async move { req.send().await.unwrap().status().as_u16() });
    }
    let mut ok = 0;
    let mut denied = 0;
    while let Some(s) = set.join_next().await {
        match s.unwrap() {
            200 => ok += 1,
            402 => denied += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok, denied), (7, 57));
    assert_eq!(used(&app, &a, PROCESS).await, 7);
    assert_eq!(ledger(&app, &a, PROCESS).await, (7, 0, 0));
    let forwarded = app
        .upstream
        .seen()
        .iter()
        .filter(|s| s.path().starts_with("/process/"))
        .count();
    assert_eq!(forwarded, 7, "a denied request never reaches the backend");
    app.stop().await;
}

async fn exhausted_answers_402_with_the_frontends_body_and_headers(db: Db) {
    let app = app(db).await;
    let a = app.signup("exh").await;
    app.set_limit(&a, PROCESS, 1).await;
    let resp = process(&app, &a, "").await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["x-quota-type"], PROCESS);
    assert_eq!(h["x-quota-remaining"], "0");
    assert_eq!(h["x-quota-used"], "1");
    assert!(
        h["ratelimit-policy"]
            .to_str()
            .unwrap()
            .starts_with(&format!("\"{PROCESS}\";q=1;w="))
    );
    assert!(
        h["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with(&format!("\"{PROCESS}\";r=0;t="))
    );
    let resp = app
        .as_user(&a)
        .post("/process/p1/20250101")
        .header("origin", crate::common::ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 402);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        crate::common::ORIGIN
    );
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["detail"], "配额已用尽");
    assert_eq!(v["quota_type"], PROCESS);
    assert_eq!(
        (v["remaining"].as_i64(), v["required"].as_i64()),
        (Some(0), Some(1))
    );
    assert_eq!(v["upgrade_url"], "/subscription");
    assert!(v["message"].as_str().unwrap().contains("剩余: 0"));
    app.stop().await;
}

async fn every_refund_path_restores_the_balance(db: Db) {
    let app = app(db).await;
    let a = app.signup("refund").await;
    let before = used(&app, &a, PROCESS).await;
    // The reply says no work was accepted, or the backend failed in any way.
    for (query, status) in [
        ("?behave=blocked", 200),
        ("?behave=processing", 200),
        ("?behave=500", 500),
        ("?behave=reset", 502),
        ("?behave=die", 502),
        ("?behave=big", 200),
    ] {
        let resp = process(&app, &a, query).await;
        assert_eq!(resp.status(), status, "{query}");
        assert_eq!(resp.headers()["x-quota-used"], "0", "{query}");
        assert_eq!(used(&app, &a, PROCESS).await, before, "{query} refunds");
    }
    // l3_detect: an "error" key refunds; the platform branch's `null` is a success.
    let l3 = |q: &'static str| {
        app.as_user(&a)
            .post(&format!("/l3_detect/p1/20250101?behave={q}"))
            .send()
    };
    assert_eq!(
        l3("error-key").await.unwrap().headers()["x-quota-used"],
        "0"
    );
    assert_eq!(used(&app, &a, "api_calls_l3_detect").await, 0);
    assert_eq!(l3("null").await.unwrap().headers()["x-quota-used"], "1");
    assert_eq!(used(&app, &a, "api_calls_l3_detect").await, 1);
    // Nothing stays reserved, and each refund is one row.
    assert_eq!(ledger(&app, &a, PROCESS).await, (0, 6, 0));
    app.stop().await;
}

async fn timeouts_and_unreachable_backends_refund_but_a_client_abort_does_not(db: Db) {
    // A backend that does not answer in time (the route's timeout, shortened here).
    let app = spawn_app_with(Options {
        db,
        shipped: true,
        routes: String::new(),
        ..Options::default()
    })
    .await;
    let a = app.signup("abort").await;
    // The client gives up while the backend works: the backend's reply, which accepts the
    // work, still decides, and the charge stands (`tests/it/settlement.rs` has the rest).
    let req = app
        .as_user(&a)
        .post("/process/p1/20250101?behave=slow&ms=1500")
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(req.is_err(), "the client timed out");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while ledger(&app, &a, PROCESS).await != (1, 0, 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the abandoned request was not settled by the backend's reply"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(used(&app, &a, PROCESS).await, 1);
    app.stop().await;

    let dead = format!("http://127.0.0.1:{}", crate::common::dead_port());
    let app = spawn_app_with(Options {
        db,
        shipped: true,
        routes: String::new(),
        upstream_url: Some(dead),
        ..Options::default()
    })
    .await;
    let a = app.signup("unreach").await;
    let resp = process(&app, &a, "").await;
    assert_eq!(resp.status(), 502);
    assert_eq!(used(&app, &a, PROCESS).await, 0);
    assert_eq!(ledger(&app, &a, PROCESS).await, (0, 1, 0));
    app.stop().await;

    // A backend slower than the route's timeout: 504, refunded.
    let app = spawn_app_with(Options {
        db,
        shipped: true,
        routes: "\n[[route]]\npath = \"/quick/{p}\"\nmethods = [\"POST\"]\naccess = \"user\"\ntimeout_secs = 1\n\
                 [route.meter]\nquota = \"api_calls_full_process\"\ncost = 1\n"
            .into(),
        ..Options::default()
    })
    .await;
    let a = app.signup("slowpoke").await;
    let resp = app
        .as_user(&a)
        .post("/quick/x?behave=slow&ms=3000")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(used(&app, &a, PROCESS).await, 0);
    assert_eq!(ledger(&app, &a, PROCESS).await, (0, 1, 0));
    app.stop().await;
}

async fn per_mb_costs_are_decided_before_the_body(db: Db) {
    let app = app(db).await;
    let a = app.signup("mbuser").await;
    // 2.5 MB of mask in a form: charged 3 MB (started MBs).
    let mut body =
        b"--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"m.png\"\r\n\r\n"
            .to_vec();
    body.extend(vec![7u8; 5 * 512 * 1024 - 200]);
    body.extend_from_slice(b"\r\n--b0undary--\r\n");
    let resp = app
        .as_user(&a)
        .post("/upload_l3_mask/p1/20250101")
        .header("content-type", "multipart/form-data; boundary=b0undary")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-quota-used"], "3");
    assert_eq!(used(&app, &a, "storage_usage").await, 3);
    // No Content-Length on a per-MB route: 411, nothing forwarded.
    let seen_before = app.upstream.seen().len();
    let chunks = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(
        bytes::Bytes::from_static(b"abc"),
    )]);
    let resp = app
        .as_user(&a)
        .post("/upload_l3_mask/p1/20250101")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 411);
    // A 100 MB upload against the free plan's 80 MB: refused before a byte is read.
    let head = format!(
        "POST /upload_dicom_zip HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: {}\r\nContent-Type: application/zip\r\n\r\n",
        bearer(&a),
        100u64 << 20
    );
    let out = crate::common::raw_exchange(app.addr, head.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 402"), "{out}");
    assert_eq!(
        app.upstream.seen().len(),
        seen_before,
        "neither reached the backend"
    );
    assert_eq!(used(&app, &a, "storage_usage").await, 3);
    app.stop().await;
}

/// A free period that ended renews at the first request after its end: in place, with a fresh
/// balance a month ahead.
async fn a_free_period_renews_at_the_first_request_after_its_end(db: Db) {
    let app = app(db).await;
    let a = app.signup("roll").await;
    assert_eq!(process(&app, &a, "").await.status(), 200);
    app.end_period(&a).await;
    assert_eq!(process(&app, &a, "").await.status(), 200);
    let q = app.quota(&a, PROCESS).await;
    assert_eq!(q.used, 1, "the new period counts from zero");
    assert!(
        q.end_ms() > idoctor_gate::store::now_ms() + 27 * 86_400_000,
        "a month ahead"
    );
    assert_eq!(
        app.subscription_statuses(&a).await,
        ["active"],
        "the free subscription renewed in place"
    );
    app.stop().await;
}

/// A paid plan whose period ended without being paid again falls back to the free plan: its
/// subscription expires and the balance is the free plan's, from zero.
async fn an_unpaid_plan_falls_back_to_free_when_its_period_ends(db: Db) {
    let app = app(db).await;
    let a = app.signup("lapse").await;
    let pro = app.plan_id("专业版").await;
    // As if 专业版 had been paid for once, with a balance of its size, and its period ended.
    let pool = app.store().pool().clone();
    sqlx::query("UPDATE user_subscriptions SET plan_id = $2 WHERE user_id = $1")
        .bind(a.id.as_str())
        .bind(&pro)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE quota_balances SET limit_amount = 100 WHERE user_id = $1")
        .bind(a.id.as_str())
        .execute(&pool)
        .await
        .unwrap();
    app.end_period(&a).await;
    let q = app.quota(&a, PROCESS).await;
    assert_eq!((q.limit, q.used), (5, 0), "back on the free plan");
    let statuses = app.subscription_statuses(&a).await;
    assert_eq!(
        statuses.iter().filter(|s| *s == "expired").count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(app.current_plan(&a).await, "免费版");
    app.stop().await;
}

/// A user's usage logs and statistics are their own; another account's usage and the reset
/// and adjust endpoints answer 403.
async fn users_see_only_their_own_usage(db: Db) {
    let app = app(db).await;
    let a = app.signup("alice").await;
    let b = app.signup("bob").await;
    assert_eq!(process(&app, &a, "").await.status(), 200);
    assert_eq!(process(&app, &b, "").await.status(), 200);
    let alice = app.as_user(&a);
    let logs = alice
        .get_json(
            "/admin/quotas/usage-logs?quota_type=&start_date=&end_date=&limit=",
            200,
        )
        .await;
    let logs = logs.as_array().unwrap();
    assert_eq!(logs.len(), 1);
    assert!(logs.iter().all(|l| l["user_id"] == a.id.as_str()));
    assert_eq!(logs[0]["endpoint"], "/process/p1/20250101");
    let stats = alice
        .get_json(&format!("/admin/quotas/statistics/{PROCESS}?days=30"), 200)
        .await;
    assert_eq!(
        (
            stats["total_usage"].as_i64(),
            stats["unique_users"].as_i64()
        ),
        (Some(1), Some(1))
    );
    for path in [
        format!("/admin/quotas/usage-logs?user_id={}", b.id),
        format!("/admin/quotas/users/{}", b.id),
    ] {
        assert_eq!(alice.get_status(&path).await, 403, "{path}");
    }
    let reset = alice
        .post(&format!("/admin/quotas/users/{}/reset", a.id))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 403);
    let adjust = alice
        .put(&format!(
            "/admin/quotas/users/{}/adjust?quota_type={PROCESS}&new_limit=-1",
            a.id
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(adjust.status(), 403);
    app.stop().await;
}

/// A superuser sees everyone's usage and statistics, and a reset gives a user's units back.
async fn a_superuser_sees_all_usage_and_resets_it(db: Db) {
    let app = app(db).await;
    let a = app.signup("alice").await;
    let b = app.signup("bob").await;
    assert_eq!(process(&app, &a, "").await.status(), 200);
    assert_eq!(process(&app, &b, "").await.status(), 200);
    assert_eq!(process(&app, &b, "").await.status(), 200);
    let root = app.admin_bearer().await;
    let admin = app.with_authorization(&root);
    let all = admin.get_json("/admin/quotas/usage-logs", 200).await;
    assert_eq!(all.as_array().unwrap().len(), 3);
    let stats = admin
        .get_json(&format!("/admin/quotas/statistics/{PROCESS}"), 200)
        .await;
    assert_eq!(
        (
            stats["total_usage"].as_i64(),
            stats["unique_users"].as_i64()
        ),
        (Some(3), Some(2))
    );
    let r = admin
        .post_json(
            &format!("/admin/quotas/users/{}/reset?quota_type={PROCESS}", b.id),
            200,
        )
        .await;
    assert_eq!(r["quotas_reset"], 1);
    assert_eq!(used(&app, &b, PROCESS).await, 0);
    app.stop().await;
}

/// An adjusted limit holds for the period (-1 is unlimited, and so reported); a limit below
/// what is already used is refused, not clamped.
async fn an_adjusted_limit_is_never_below_usage(db: Db) {
    let app = app(db).await;
    let a = app.signup("alice").await;
    assert_eq!(process(&app, &a, "").await.status(), 200);
    let root = app.admin_bearer().await;
    let admin = app.with_authorization(&root);
    let adjust = |limit: i64| {
        admin
            .put(&format!(
                "/admin/quotas/users/{}/adjust?quota_type={PROCESS}&new_limit={limit}",
                a.id
            ))
            .send()
    };
    assert_eq!(adjust(-1).await.unwrap().status(), 200);
    let me = app
        .as_user(&a)
        .get_json("/admin/quotas/users/me", 200)
        .await;
    let q = me["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type_key"] == PROCESS)
        .unwrap()
        .clone();
    assert_eq!(
        (q["limit"].as_i64(), q["remaining"].as_i64()),
        (Some(-1), Some(-1)),
        "unlimited is -1"
    );
    assert_eq!(me["total_quotas"], 5);
    assert_eq!(me["user_id"], a.id.as_str());
    assert_eq!(adjust(0).await.unwrap().status(), 422, "below the 1 used");
    app.stop().await;
}

/// The seed's three plans are offered, cheapest first, with their quotas in both the
/// per-type and the original single-quota fields.
async fn the_seed_plans_are_offered_with_their_prices_and_quotas(db: Db) {
    let app = app(db).await;
    let plans = app.get_json("/plans/?active_only=true", 200).await;
    let plans = plans.as_array().unwrap();
    let prices: Vec<&str> = plans.iter().map(|p| p["price"].as_str().unwrap()).collect();
    assert_eq!(prices, vec!["0.00", "99.00", "999.00"]);
    assert_eq!(plans[2]["quotas"][PROCESS], -1, "enterprise is unlimited");
    assert_eq!(plans[0]["quota_type"], PROCESS);
    assert_eq!(plans[0]["quota_limit"], 5);
    let pro_id = plans[1]["id"].as_str().unwrap();
    let one = app.get_json(&format!("/plans/{pro_id}"), 200).await;
    assert_eq!(one["name"], "专业版");
    app.stop().await;
}

/// A new account starts on the free plan, active, with its quota.
async fn a_new_account_is_on_the_free_plan(db: Db) {
    let app = app(db).await;
    let a = app.signup("subby").await;
    let current = app
        .as_user(&a)
        .get_json("/subscriptions/current", 200)
        .await;
    assert_eq!(current["status"], "active");
    assert_eq!(current["plan_name"], "免费版");
    let quota = app.as_user(&a).get_json("/subscriptions/quota", 200).await;
    assert_eq!(
        (
            quota["quota_limit"].as_i64(),
            quota["has_subscription"].as_bool()
        ),
        (Some(5), Some(true))
    );
    app.stop().await;
}

/// Subscribing to a paid plan makes a pending order at the plan's price, whatever amount is
/// sent, and changes nothing until it is paid; a provider that is not configured, or the free
/// plan one is already on, is refused (409).
async fn subscribing_makes_a_pending_order_priced_by_the_plan(db: Db) {
    let app = app(db).await;
    let a = app.signup("subby").await;
    let (pro, free) = (app.plan_id("专业版").await, app.plan_id("免费版").await);
    let subscribe = |body: Value| {
        app.as_user(&a)
            .post("/subscriptions/subscribe")
            .json(&body)
            .send()
    };
    let resp = subscribe(json!({"plan_id": pro, "payment_method": "sandbox", "amount": "0.01"}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let order: Value = resp.json().await.unwrap();
    assert_eq!(
        (order["amount"].as_str(), order["status"].as_str()),
        (Some("99.00"), Some("pending"))
    );
    assert_eq!(order["order_no"].as_str().unwrap().len(), 32);
    assert!(order["payment_url"].is_string());
    let resp = subscribe(json!({"plan_id": pro, "payment_method": "paypal"}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 409, "a method this gate does not have");
    assert_eq!(
        app.current_plan(&a).await,
        "免费版",
        "unpaid: still on the free plan"
    );
    let resp = subscribe(json!({"plan_id": free})).await.unwrap();
    assert_eq!(resp.status(), 409, "already on the free plan");
    let history = app
        .as_user(&a)
        .get_json("/subscriptions/history", 200)
        .await;
    assert_eq!(
        history.as_array().unwrap().len(),
        2,
        "the free one and the pending one"
    );
    app.stop().await;
}

/// Cancelling keeps the subscription to the end of its period, and stops its renewal.
async fn cancelling_stops_the_renewal(db: Db) {
    let app = app(db).await;
    let a = app.signup("subby").await;
    app.as_user(&a)
        .post_json("/subscriptions/cancel", 200)
        .await;
    let current = app
        .as_user(&a)
        .get_json("/subscriptions/current", 200)
        .await;
    assert_eq!(
        (current["status"].as_str(), current["auto_renew"].as_bool()),
        (Some("cancelled"), Some(false))
    );
    app.stop().await;
}

/// Plans are made, edited and withdrawn by superusers only, with prices and quotas checked;
/// a withdrawn plan is no longer offered, and the default plan cannot be withdrawn.
async fn plans_are_managed_by_superusers(db: Db) {
    let app = app(db).await;
    let a = app.signup("subby").await;
    let body = json!({"name": "学术版", "price": "49.90", "quotas": {PROCESS: 30}});
    let resp = app
        .as_user(&a)
        .post("/plans/")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let root = app.admin_bearer().await;
    let admin = app.with_authorization(&root);
    let resp = admin.post("/plans/").json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.unwrap();
    assert_eq!(created["price"], "49.90");
    let id = created["id"].as_str().unwrap();
    for bad in [
        json!({"price": "1.234"}),
        json!({"price": -1}),
        json!({"quotas": {"nope": 1}}),
        json!({"billing_cycle": "weekly"}),
    ] {
        let resp = admin
            .put(&format!("/plans/{id}"))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 422, "{bad}");
    }
    let resp = admin
        .put(&format!("/plans/{id}"))
        .json(&json!({"price": 59}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap()["price"], "59.00");
    let resp = admin.delete(&format!("/plans/{id}")).send().await.unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap()["is_active"], false);
    let listed = app.get_json("/plans/", 200).await;
    assert_eq!(
        listed.as_array().unwrap().len(),
        3,
        "deactivated plans are not offered"
    );
    let free = app.plan_id("免费版").await;
    let resp = admin
        .delete(&format!("/plans/{free}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422, "the default plan stays");
    app.stop().await;
}

async fn an_unreachable_database_fails_metered_routes_closed(db: Db) {
    let app = app(db).await;
    let a = app.signup("closed").await;
    // Warm the principal cache, so authentication itself needs no database.
    assert_eq!(process(&app, &a, "").await.status(), 200);
    let seen = app.upstream.seen().len();
    app.store().close().await;
    let resp = process(&app, &a, "").await;
    assert_eq!(resp.status(), 503);
    assert!(
        resp.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("database")
    );
    assert_eq!(
        app.upstream.seen().len(),
        seen,
        "nothing was forwarded uncharged"
    );
    app.stop().await;
}

on_both!(
    concurrent_requests_admit_exactly_the_remaining,
    exhausted_answers_402_with_the_frontends_body_and_headers,
    every_refund_path_restores_the_balance,
    timeouts_and_unreachable_backends_refund_but_a_client_abort_does_not,
    per_mb_costs_are_decided_before_the_body,
    a_free_period_renews_at_the_first_request_after_its_end,
    an_unpaid_plan_falls_back_to_free_when_its_period_ends,
    users_see_only_their_own_usage,
    a_superuser_sees_all_usage_and_resets_it,
    an_adjusted_limit_is_never_below_usage,
    the_seed_plans_are_offered_with_their_prices_and_quotas,
    a_new_account_is_on_the_free_plan,
    subscribing_makes_a_pending_order_priced_by_the_plan,
    cancelling_stops_the_renewal,
    plans_are_managed_by_superusers,
    an_unreachable_database_fails_metered_routes_closed,
);

/// Two gates on one PostgreSQL, 64 concurrent requests split between them: exactly R admitted.
#[tokio::test]
async fn two_replicas_on_one_postgres_admit_exactly_the_remaining() {
    let url = crate::common::pg::fresh_database().await;
    let env = vec![
        (
            "GATE_JWT_SECRET".to_string(),
            "shared-secret-shared-secret-shared-secret".to_string(),
        ),
        (
            "GATE_API_KEY_PEPPER".to_string(),
            "shared-pepper-shared-pepper-shared-pepper".to_string(),
        ),
    ];
    let a = app_on(Db::Postgres, Some(url.clone()), env.clone()).await;
    let b = app_on(Db::Postgres, Some(url), env).await;
    let user = a.signup("twin").await;
    a.set_limit(&user, PROCESS, 9).await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..64 {
        let gate = if i % 2 == 0 { &a } else { &b };
        let req = gate.as_user(&user).post("/process/p1/20250101");
        set.spawn(async move { req.send().await.unwrap().status().as_u16() });
    }
    let mut ok = 0;
    while let Some(s) = set.join_next().await {
        let s = s.unwrap();
        assert!(s == 200 || s == 402, "{s}");
        ok += (s == 200) as usize;
    }
    assert_eq!(ok, 9);
    assert_eq!(used(&a, &user, PROCESS).await, 9);
    assert_eq!(ledger(&b, &user, PROCESS).await, (9, 0, 0));
    a.stop().await;
    b.stop().await;
}
