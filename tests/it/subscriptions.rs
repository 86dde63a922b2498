//! Subscriptions that are fair to the payer, on SQLite and PostgreSQL, paid through the sandbox
//! provider: renewals extend the paid span, upgrades credit the unused time, downgrades wait
//! for the paid period to end, refunds take back the time they paid for, and the fields the
//! commercial web app reads. Time is moved by shifting the stored periods back, as if the
//! subscription had been bought that long ago.

use crate::common::stored::iso_ms as ms;
use crate::common::{Account, Db, Options, TestApp, spawn_app_with};
use chrono::Months;
use serde_json::{Value, json};

const PRO: &str = "专业版";
const ENTERPRISE: &str = "企业版";
const FREE: &str = "免费版";

async fn app(db: Db) -> TestApp {
    app_with(db, Vec::new()).await
}

async fn app_with(db: Db, edits: Vec<(&'static str, toml::Value)>) -> TestApp {
    spawn_app_with(Options {
        db,
        shipped: true,
        routes: String::new(),
        edits,
        ..Options::default()
    })
    .await
}

fn plus_months(at: i64, months: u32) -> i64 {
    chrono::DateTime::from_timestamp_millis(at)
        .unwrap()
        .checked_add_months(Months::new(months))
        .unwrap()
        .timestamp_millis()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Orders `plan` through `/subscriptions/subscribe` and returns the 202 body.
async fn order(app: &TestApp, a: &Account, plan: &str) -> Value {
    let resp = app
        .as_user(a)
        .post("/subscriptions/subscribe")
        .json(&json!({"plan_id": app.plan_id(plan).await, "payment_method": "sandbox"}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    body
}

/// Pays an order at the sandbox checkout (which posts the signed notification).
async fn pay(app: &TestApp, order_no: &str) {
    let resp = app
        .client
        .post(app.url(&format!("/payments/sandbox/checkout/{order_no}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

async fn current(app: &TestApp, a: &Account) -> Value {
    app.as_user(a).get_json("/subscriptions/current", 200).await
}

async fn payment(app: &TestApp, a: &Account, id: &str) -> Value {
    app.as_user(a)
        .get_json(&format!("/payments/{id}"), 200)
        .await
}

/// The account's balance of the main quota type: (limit, used, period start, period end).
async fn main_quota(app: &TestApp, a: &Account) -> (i64, i64, i64, i64) {
    let q = app.quota(a, "api_calls_full_process").await;
    (q.limit, q.used, q.start_ms(), q.end_ms())
}

async fn sql(app: &TestApp, query: &str, user: &str, by: i64) {
    sqlx::query(query)
        .bind(user)
        .bind(by)
        .execute(app.store().pool())
        .await
        .unwrap();
}

/// Refunds `amount` of an order (its 202 body) as the superuser `root`; the status.
async fn refund(app: &TestApp, root: &str, order: &Value, amount: &str) -> u16 {
    app.with_authorization(root)
        .post(&format!(
            "/payments/{}/refund",
            order["payment_id"].as_str().unwrap()
        ))
        .json(&json!({"refund_amount": amount}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Puts the account's running paid period exactly halfway: 15 days gone, 15 days left.
async fn halfway(app: &TestApp, a: &Account) {
    sql(
        app,
        "UPDATE user_subscriptions SET current_period_start = $2 - 1296000000, current_period_end = $2 + 1296000000 \
         WHERE user_id = $1 AND status = 'active'",
        &a.id,
        now(),
    )
    .await;
}

async fn renewals_extend_the_paid_span_by_a_cycle_from_its_end(db: Db) {
    let app = app(db).await;
    let a = app.signup("renewer").await;
    let first = order(&app, &a, PRO).await;
    assert_eq!(first["change"], "new");
    pay(&app, first["order_no"].as_str().unwrap()).await;
    let sub = current(&app, &a).await;
    let start = ms(sub["current_period_start"].as_str().unwrap());
    assert_eq!(
        ms(sub["current_period_end"].as_str().unwrap()),
        plus_months(start, 1)
    );

    // The renew button of "My subscription": the same plan again, from /subscriptions/subscribe.
    let renew = order(&app, &a, PRO).await;
    assert_eq!(
        (
            renew["change"].as_str(),
            renew["amount"].as_str(),
            renew["credit"].as_str()
        ),
        (Some("renew"), Some("99.00"), Some("0.00"))
    );
    assert_eq!(
        renew["subscription_id"], sub["id"],
        "it renews the running one"
    );
    assert_eq!(
        ms(renew["starts_at"].as_str().unwrap()),
        plus_months(start, 1)
    );
    pay(&app, renew["order_no"].as_str().unwrap()).await;

    // The UI's own call: POST /payments/ with the subscription id and the plan's price.
    let resp = app
        .as_user(&a)
        .post("/payments/")
        .json(&json!({"subscription_id": sub["id"], "amount": 99.0, "currency": "CNY", "payment_method": "sandbox"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let again: Value = resp.json().await.unwrap();
    assert_eq!(again["change"], "renew");
    pay(&app, again["order_id"].as_str().unwrap()).await;

    let sub = current(&app, &a).await;
    assert_eq!(sub["plan_name"], PRO);
    assert_eq!(ms(sub["current_period_start"].as_str().unwrap()), start);
    assert_eq!(
        ms(sub["current_period_end"].as_str().unwrap()),
        plus_months(start, 3),
        "start + 3 cycles"
    );
    assert_eq!(sub["start_date"], sub["current_period_start"]);
    assert_eq!(sub["end_date"], sub["current_period_end"]);
    assert_eq!(sub["cancel_at_period_end"], false);
    let paid = payment(&app, &a, again["id"].as_str().unwrap()).await;
    assert_eq!(
        (
            ms(paid["period_start"].as_str().unwrap()),
            ms(paid["period_end"].as_str().unwrap())
        ),
        (plus_months(start, 2), plus_months(start, 3)),
        "the payment record says which cycle it bought"
    );

    // The quota still resets every cycle: one cycle later (and a second), a fresh Pro quota.
    let (limit, _, q_start, q_end) = main_quota(&app, &a).await;
    assert_eq!((limit, q_start, q_end), (100, start, plus_months(start, 1)));
    sql(
        &app,
        "UPDATE quota_balances SET used_amount = $2 WHERE user_id = $1",
        &a.id,
        7,
    )
    .await;
    let by = plus_months(start, 1) - start + 1000;
    app.travel(&a, by).await;
    let (limit, used, q_start, q_end) = main_quota(&app, &a).await;
    let anchor = start - by;
    assert_eq!(
        (limit, used, q_start, q_end),
        (100, 0, plus_months(anchor, 1), plus_months(anchor, 2)),
        "the second cycle of the paid span"
    );
    let sub = current(&app, &a).await;
    assert_eq!(sub["plan_name"], PRO);
    assert_eq!(
        ms(sub["end_date"].as_str().unwrap()),
        plus_months(start, 3) - by,
        "the paid span moved back with the clock, not extended"
    );
    app.stop().await;
}

async fn an_upgrade_halfway_credits_the_unused_half(db: Db) {
    let app = app(db).await;
    let a = app.signup("upgrader").await;
    let pro = order(&app, &a, PRO).await;
    pay(&app, pro["order_no"].as_str().unwrap()).await;
    // Halfway through a paid span of exactly 30 days.
    let t = now();
    halfway(&app, &a).await;
    let up = order(&app, &a, ENTERPRISE).await;
    // A second order for the same upgrade, priced against the same Pro period.
    let twin = order(&app, &a, ENTERPRISE).await;
    assert_eq!(twin["amount"], up["amount"]);
    assert_eq!(
        (
            up["change"].as_str(),
            up["plan_price"].as_str(),
            up["credit"].as_str(),
            up["amount"].as_str()
        ),
        (
            Some("upgrade"),
            Some("999.00"),
            Some("49.50"),
            Some("949.50")
        ),
        "¥999 less the unused half of ¥99, rounded in the payer's favour"
    );
    let before = payment(&app, &a, up["payment_id"].as_str().unwrap()).await;
    assert_eq!(
        (before["credit"].as_str(), before["amount"].as_str()),
        (Some("49.50"), Some("949.50"))
    );
    assert_eq!(
        current(&app, &a).await["plan_name"],
        PRO,
        "nothing changes before the payment"
    );

    pay(&app, up["order_no"].as_str().unwrap()).await;
    let paid_at = now();
    let sub = current(&app, &a).await;
    assert_eq!(sub["plan_name"], ENTERPRISE);
    let start = ms(sub["start_date"].as_str().unwrap());
    assert!((t..=paid_at).contains(&start), "it starts at once");
    assert_eq!(ms(sub["end_date"].as_str().unwrap()), plus_months(start, 1));
    assert_eq!(
        main_quota(&app, &a).await.0,
        -1,
        "the enterprise quota (unlimited)"
    );
    let subs = app.as_user(&a).get_json("/subscriptions/", 200).await;
    let old = subs
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == pro["subscription_id"])
        .unwrap();
    assert_eq!(old["status"], "expired");
    assert!(
        ms(old["end_date"].as_str().unwrap()) <= paid_at,
        "the credited time ended"
    );
    let record = payment(&app, &a, up["payment_id"].as_str().unwrap()).await;
    assert_eq!(
        (
            record["status"].as_str(),
            record["credit"].as_str(),
            record["amount"].as_str()
        ),
        (Some("completed"), Some("49.50"), Some("949.50"))
    );

    // The credit is used once: the twin, paid after the first, buys only its share of a cycle
    // (949.50 of 999.00), after the period already paid for.
    pay(&app, twin["order_no"].as_str().unwrap()).await;
    let sub = current(&app, &a).await;
    assert_eq!(
        sub["id"], up["subscription_id"],
        "the running upgrade is untouched"
    );
    let ent_end = ms(sub["end_date"].as_str().unwrap());
    assert_eq!(ms(sub["scheduled_change_at"].as_str().unwrap()), ent_end);
    let queued = payment(&app, &a, twin["payment_id"].as_str().unwrap()).await;
    let (q_start, q_end) = (
        ms(queued["period_start"].as_str().unwrap()),
        ms(queued["period_end"].as_str().unwrap()),
    );
    assert_eq!(q_start, ent_end);
    let whole = (plus_months(ent_end, 1) - ent_end) as i128;
    assert_eq!(
        q_end - q_start,
        (whole * 94950 / 99900) as i64,
        "949.50 buys 949.50/999.00 of a month"
    );
    app.stop().await;
}

async fn a_downgrade_waits_for_the_paid_period_to_end(db: Db) {
    let app = app(db).await;
    let a = app.signup("downgrader").await;
    let ent = order(&app, &a, ENTERPRISE).await;
    pay(&app, ent["order_no"].as_str().unwrap()).await;
    let running = current(&app, &a).await;
    let end = ms(running["end_date"].as_str().unwrap());

    let down = order(&app, &a, PRO).await;
    assert_eq!(
        (down["change"].as_str(), down["amount"].as_str()),
        (Some("downgrade"), Some("99.00"))
    );
    assert_eq!(ms(down["starts_at"].as_str().unwrap()), end);
    pay(&app, down["order_no"].as_str().unwrap()).await;
    let sub = current(&app, &a).await;
    assert_eq!(sub["plan_name"], ENTERPRISE, "scheduled, not immediate");
    assert_eq!(sub["cancel_at_period_end"], true);
    assert_eq!(sub["scheduled_plan_name"], PRO);
    assert_eq!(ms(sub["scheduled_change_at"].as_str().unwrap()), end);
    assert_eq!(main_quota(&app, &a).await.0, -1);

    // Another change while this one waits is refused with the reason.
    let resp = app
        .as_user(&a)
        .post("/subscriptions/subscribe")
        .json(&json!({"plan_id": app.plan_id(ENTERPRISE).await, "payment_method": "sandbox"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    assert!(resp.text().await.unwrap().contains(PRO));

    // The paid period ends: the cheaper plan takes over from its end, for one cycle.
    let by = end - now() + 1000;
    app.travel(&a, by).await;
    let sub = current(&app, &a).await;
    assert_eq!(sub["plan_name"], PRO);
    let start = ms(sub["start_date"].as_str().unwrap());
    assert_eq!(
        start,
        end - by,
        "from the boundary, not from the next request"
    );
    assert_eq!(
        ms(sub["end_date"].as_str().unwrap()),
        plus_months(end, 1) - by
    );
    assert_eq!(main_quota(&app, &a).await.0, 100);
    app.stop().await;
}

async fn the_free_plan_is_a_cancellation_at_the_period_end(db: Db) {
    let app = app(db).await;
    let a = app.signup("leaver").await;
    let resp = app
        .as_user(&a)
        .post("/subscriptions/subscribe")
        .json(&json!({"plan_id": app.plan_id(FREE).await}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409, "already on the free plan");
    let pro = order(&app, &a, PRO).await;
    pay(&app, pro["order_no"].as_str().unwrap()).await;
    let end = current(&app, &a).await["end_date"]
        .as_str()
        .unwrap()
        .to_string();
    let body = app
        .as_user(&a)
        .post("/subscriptions/subscribe")
        .json(&json!({"plan_id": app.plan_id(FREE).await}))
        .send()
        .await
        .unwrap();
    assert_eq!(body.status(), 200);
    let body: Value = body.json().await.unwrap();
    assert_eq!(body["scheduled_plan_name"], FREE);
    assert_eq!(body["scheduled_change_at"].as_str(), Some(end.as_str()));
    let sub = current(&app, &a).await;
    assert_eq!(
        (
            sub["plan_name"].as_str(),
            sub["status"].as_str(),
            sub["cancel_at_period_end"].as_bool()
        ),
        (Some(PRO), Some("cancelled"), Some(true)),
        "access until the period ends"
    );
    assert_eq!(sub["scheduled_plan_name"], FREE);
    assert_eq!(main_quota(&app, &a).await.0, 100);
    app.travel(&a, ms(&end) - now() + 1000).await;
    assert_eq!(current(&app, &a).await["plan_name"], FREE);
    assert_eq!(main_quota(&app, &a).await.0, 5);
    app.stop().await;
}

async fn a_replayed_renewal_notification_extends_once(db: Db) {
    let app = app(db).await;
    let a = app.signup("replayed").await;
    let first = order(&app, &a, PRO).await;
    pay(&app, first["order_no"].as_str().unwrap()).await;
    let start = ms(current(&app, &a).await["start_date"].as_str().unwrap());
    let renew = order(&app, &a, PRO).await;
    let order_no = renew["order_no"].as_str().unwrap();
    let body = serde_json::to_vec(&json!({"event_id": "evt-renew", "order_no": order_no, "trade_no": "t-renew", "total_fen": 9900, "status": "paid"})).unwrap();
    let sig = app.services().payments().sandbox().unwrap().sign(&body);
    for _ in 0..3 {
        let resp = app
            .client
            .post(app.url("/webhooks/sandbox"))
            .header("x-sandbox-signature", &sig)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    // A redelivery under another event id (the checkout page's own) changes nothing either.
    pay(&app, order_no).await;
    let sub = current(&app, &a).await;
    assert_eq!(ms(sub["end_date"].as_str().unwrap()), plus_months(start, 2));
    app.stop().await;
}

async fn refunds_take_back_the_time_they_paid_for(db: Db) {
    let app = app_with(db, Vec::new()).await;
    let a = app.signup("refunded").await;
    let first = order(&app, &a, PRO).await;
    pay(&app, first["order_no"].as_str().unwrap()).await;
    let start = ms(current(&app, &a).await["start_date"].as_str().unwrap());
    let renew = order(&app, &a, PRO).await;
    pay(&app, renew["order_no"].as_str().unwrap()).await;
    let root = app.admin_bearer().await;
    // A partial refund shortens nothing unless proxy.toml says so.
    assert_eq!(refund(&app, &root, &first, "10.00").await, 200);
    let end = ms(current(&app, &a).await["end_date"].as_str().unwrap());
    assert_eq!(end, plus_months(start, 2));
    // Refunding the renewal whole takes back the cycle it bought, and only that.
    assert_eq!(refund(&app, &root, &renew, "99.00").await, 200);
    let sub = current(&app, &a).await;
    assert_eq!(sub["plan_name"], PRO);
    assert_eq!(ms(sub["end_date"].as_str().unwrap()), plus_months(start, 1));
    // Refunding the first order whole ends the paid period at once.
    assert_eq!(refund(&app, &root, &first, "89.00").await, 200);
    assert_eq!(current(&app, &a).await["plan_name"], FREE);
    assert_eq!(main_quota(&app, &a).await.0, 5);
    app.stop().await;

    // The operator's choice: a partial refund takes back its share of the time bought.
    let app = app_with(
        db,
        vec![(
            "payments.partial_refund_shortens",
            toml::Value::Boolean(true),
        )],
    )
    .await;
    let a = app.signup("shortened").await;
    let first = order(&app, &a, PRO).await;
    pay(&app, first["order_no"].as_str().unwrap()).await;
    let sub = current(&app, &a).await;
    let (start, end) = (
        ms(sub["start_date"].as_str().unwrap()),
        ms(sub["end_date"].as_str().unwrap()),
    );
    let root = app.admin_bearer().await;
    assert_eq!(refund(&app, &root, &first, "49.50").await, 200);
    let sub = current(&app, &a).await;
    let shortened = ms(sub["end_date"].as_str().unwrap());
    assert!(
        (shortened - (end - (end - start) / 2)).abs() <= 1,
        "half the money back, half the time: {shortened} vs {end}"
    );
    app.stop().await;
}

async fn concurrent_renewals_each_add_a_cycle(db: Db) {
    let app = app(db).await;
    let a = app.signup("twice").await;
    let first = order(&app, &a, PRO).await;
    pay(&app, first["order_no"].as_str().unwrap()).await;
    let start = ms(current(&app, &a).await["start_date"].as_str().unwrap());
    let one = order(&app, &a, PRO).await;
    let two = order(&app, &a, PRO).await;
    // Both notifications at once (one from each provider, say): neither may overwrite the other.
    tokio::join!(
        pay(&app, one["order_no"].as_str().unwrap()),
        pay(&app, two["order_no"].as_str().unwrap())
    );
    let sub = current(&app, &a).await;
    assert_eq!(ms(sub["end_date"].as_str().unwrap()), plus_months(start, 3));
    app.stop().await;
}

async fn refunded_money_is_not_credited_again(db: Db) {
    let app = app(db).await;
    let a = app.signup("halfback").await;
    let pro = order(&app, &a, PRO).await;
    pay(&app, pro["order_no"].as_str().unwrap()).await;
    let root = app.admin_bearer().await;
    assert_eq!(refund(&app, &root, &pro, "49.50").await, 200);
    halfway(&app, &a).await;
    let up = order(&app, &a, ENTERPRISE).await;
    assert_eq!(
        (up["credit"].as_str(), up["amount"].as_str()),
        (Some("24.75"), Some("974.25")),
        "half of the 49.50 that stayed paid, not half of 99.00"
    );
    app.stop().await;
}

on_both!(
    concurrent_renewals_each_add_a_cycle,
    refunded_money_is_not_credited_again,
    renewals_extend_the_paid_span_by_a_cycle_from_its_end,
    an_upgrade_halfway_credits_the_unused_half,
    a_downgrade_waits_for_the_paid_period_to_end,
    the_free_plan_is_a_cancellation_at_the_period_end,
    a_replayed_renewal_notification_extends_once,
    refunds_take_back_the_time_they_paid_for,
);
