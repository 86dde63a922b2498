//! Payments through the sandbox provider, on SQLite and PostgreSQL: the whole loop (subscribe,
//! pay, active plan, fresh quota), amounts only from plans, webhooks that credit at most once,
//! refunds, reconciliation.

use crate::common::{Account, Db, Options, TestApp, bearer, spawn_app_with};
use serde_json::{Value, json};

const PROCESS: &str = "api_calls_full_process";

async fn app(db: Db) -> TestApp {
    spawn_app_with(Options {
        db,
        shipped: true,
        routes: String::new(),
        ..Options::default()
    })
    .await
}

async fn quota(app: &TestApp, a: &Account) -> (i64, i64) {
    let q = app.quota(a, PROCESS).await;
    (q.limit, q.used)
}

/// A sandbox notification for `order_no`, signed with the gate's sandbox key.
fn event(
    app: &TestApp,
    event_id: &str,
    order_no: &str,
    fen: i64,
    status: &str,
) -> (Vec<u8>, String) {
    let body = serde_json::to_vec(&json!({"event_id": event_id, "order_no": order_no, "trade_no": format!("t-{event_id}"), "total_fen": fen, "status": status})).unwrap();
    let sig = app.services().payments().sandbox().unwrap().sign(&body);
    (body, sig)
}

async fn post_event(app: &TestApp, body: Vec<u8>, sig: &str) -> (u16, String) {
    let resp = app
        .client
        .post(app.url("/webhooks/sandbox"))
        .header("x-sandbox-signature", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn subscribe_pay_activate(db: Db) {
    let app = app(db).await;
    let a = app.signup("payer").await;
    assert_eq!(quota(&app, &a).await, (5, 0));
    let resp = app
        .as_user(&a)
        .post("/subscriptions/subscribe")
        .json(&json!({"plan_id": app.plan_id("专业版").await, "payment_method": "sandbox"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let order: Value = resp.json().await.unwrap();
    assert_eq!(order["amount"], "99.00");
    let url = order["payment_url"].as_str().unwrap().to_string();
    assert!(
        url.ends_with(&format!(
            "/payments/sandbox/checkout/{}",
            order["order_no"].as_str().unwrap()
        )),
        "{url}"
    );
    assert!(
        order["qr_code"].as_str().unwrap().len() < 1273,
        "fits a level-H QR code"
    );
    let path = url
        .split_once("/payments/")
        .map(|(_, rest)| format!("/payments/{rest}"))
        .unwrap();
    let page = app
        .client
        .get(app.url(&path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("99.00") && page.contains("pending"));
    assert_eq!(
        app.current_plan(&a).await,
        "免费版",
        "nothing changes before the payment"
    );

    let paid = app.client.post(app.url(&path)).send().await.unwrap();
    assert_eq!(paid.status(), 200);
    assert!(paid.text().await.unwrap().contains("completed"));
    assert_eq!(app.current_plan(&a).await, "专业版");
    assert_eq!(quota(&app, &a).await, (100, 0), "the Pro quota, fresh");
    let p: Value = app
        .as_user(&a)
        .get(&format!(
            "/payments/{}",
            order["payment_id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(p["status"], "completed");
    assert!(p["paid_at"].is_string());
    // Paying again changes nothing more.
    app.client.post(app.url(&path)).send().await.unwrap();
    let subs: Value = app
        .as_user(&a)
        .get("/subscriptions/")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        subs.as_array()
            .unwrap()
            .iter()
            .filter(|s| s["status"] == "active")
            .count(),
        1
    );
    app.stop().await;
}

async fn amounts_come_from_plans(db: Db) {
    let app = app(db).await;
    let a = app.signup("amounts").await;
    let pay = |body: Value| app.as_user(&a).post("/payments/").json(&body).send();
    // The existing UI: no plan id, the plan's price as a float.
    let resp = pay(json!({"amount": 99.0, "currency": "CNY", "payment_method": "sandbox"}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let o: Value = resp.json().await.unwrap();
    assert_eq!(
        (o["amount"].as_str(), o["plan_id"].as_str()),
        (Some("99.00"), Some(app.plan_id("专业版").await.as_str()))
    );
    // An amount no plan has (404), the free plan or a method this gate lacks (409), no plan
    // named at all (422): nothing created.
    for (body, status) in [
        (json!({"amount": "98.99", "payment_method": "sandbox"}), 404),
        (json!({"amount": "0.00", "payment_method": "sandbox"}), 404),
        (
            json!({"plan_id": app.plan_id("免费版").await, "payment_method": "sandbox"}),
            409,
        ),
        (
            json!({"plan_id": app.plan_id("企业版").await, "payment_method": "paypal"}),
            409,
        ),
        (json!({"payment_method": "sandbox"}), 422),
    ] {
        assert_eq!(pay(body.clone()).await.unwrap().status(), status, "{body}");
    }
    // With a plan id, a client amount is ignored.
    let o: Value = pay(json!({"plan_id": app.plan_id("企业版").await, "amount": "0.01", "payment_method": "sandbox"})).await.unwrap().json().await.unwrap();
    assert_eq!(o["amount"], "999.00");
    // Anonymous: 401.
    let resp = app
        .client
        .post(app.url("/payments/"))
        .json(&json!({"amount": 99, "payment_method": "sandbox"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // Others' orders are invisible; lists are one's own, with amounts as numbers.
    let b = app.signup("snoop").await;
    let resp = app
        .as_user(&b)
        .get(&format!("/payments/{}", o["id"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let mine: Value = app
        .as_user(&a)
        .get("/payments/?status_filter=&limit=50")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mine.as_array().unwrap().len(), 2);
    assert!(mine[0]["amount"].is_number());
    let theirs: Value = app
        .as_user(&b)
        .get("/payments/")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(theirs.as_array().unwrap().is_empty());
    app.stop().await;
}

async fn notifications_credit_at_most_once(db: Db) {
    let app = app(db).await;
    let a = app.signup("webhooks").await;
    let order: Value = app
        .as_user(&a)
        .post("/payments/")
        .json(&json!({"plan_id": app.plan_id("专业版").await, "payment_method": "sandbox"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let no = order["order_id"].as_str().unwrap().to_string();
    let status = || app.order_status(&no);

    // Forged and tampered notifications: refused, nothing changes.
    let (body, _) = event(&app, "e-forged", &no, 9900, "paid");
    assert_eq!(
        post_event(&app, body.clone(), "00ff").await,
        (400, "fail".into())
    );
    let (_, sig_other) = event(&app, "e-other", &no, 1, "paid");
    assert_eq!(
        post_event(&app, body.clone(), &sig_other).await.0,
        400,
        "a signature of another body"
    );
    let resp = app
        .client
        .post(app.url("/webhooks/sandbox"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "no signature at all");
    // Validly signed but one fen short: recorded, acknowledged, nothing credited.
    let (body, sig) = event(&app, "e-short", &no, 9899, "paid");
    assert_eq!(post_event(&app, body, &sig).await, (200, "success".into()));
    // An unknown order: nothing.
    let (body, sig) = event(&app, "e-unknown", "no-such-order", 9900, "paid");
    assert_eq!(post_event(&app, body, &sig).await.0, 200);
    assert_eq!(status().await, "pending");
    assert_eq!(app.current_plan(&a).await, "免费版");

    // The real one, replayed ten times: applied once.
    let (body, sig) = event(&app, "e-paid", &no, 9900, "paid");
    for _ in 0..10 {
        assert_eq!(
            post_event(&app, body.clone(), &sig).await,
            (200, "success".into())
        );
    }
    assert_eq!(status().await, "completed");
    assert_eq!(app.current_plan(&a).await, "专业版");
    // Use some quota, then a late, different notification for the same trade: no second reset.
    let resp = app
        .as_user(&a)
        .post("/process/p1/20250101")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (body, sig) = event(&app, "e-finished", &no, 9900, "paid");
    assert_eq!(post_event(&app, body, &sig).await.0, 200);
    assert_eq!(quota(&app, &a).await, (100, 1), "credited once");
    let events = app.webhook_outcomes("sandbox").await;
    let outcome = |id: &str| events.iter().find(|e| e.0 == id).map(|e| e.1.clone());
    assert_eq!(outcome("e-paid").as_deref(), Some("applied"));
    assert_eq!(outcome("e-short").as_deref(), Some("rejected"));
    assert_eq!(outcome("e-finished").as_deref(), Some("late"));
    assert_eq!(
        outcome("e-forged"),
        None,
        "unverified notifications are not recorded as events"
    );

    // A payment for an order that was closed: nothing is activated.
    let o2: Value = app
        .as_user(&a)
        .post("/payments/")
        .json(&json!({"plan_id": app.plan_id("企业版").await, "payment_method": "sandbox"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    app.store()
        .payments()
        .close(o2["id"].as_str().unwrap())
        .await
        .unwrap();
    let (body, sig) = event(
        &app,
        "e-after-close",
        o2["order_id"].as_str().unwrap(),
        99900,
        "paid",
    );
    assert_eq!(post_event(&app, body, &sig).await.0, 200);
    assert_eq!(
        app.current_plan(&a).await,
        "专业版",
        "a closed order does not activate"
    );
    app.stop().await;
}

async fn refunds_are_for_superusers_partial_and_idempotent(db: Db) {
    let app = app(db).await;
    let a = app.signup("refundee").await;
    let order: Value = app
        .as_user(&a)
        .post("/payments/")
        .json(&json!({"plan_id": app.plan_id("专业版").await, "payment_method": "sandbox"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = order["id"].as_str().unwrap().to_string();
    let refund = |auth: String, body: Value, key: Option<&'static str>| {
        let mut r = app
            .with_authorization(&auth)
            .post(&format!("/payments/{id}/refund"))
            .json(&body);
        if let Some(k) = key {
            r = r.header("idempotency-key", k);
        }
        r.send()
    };
    assert_eq!(
        refund(bearer(&a), json!({"refund_amount": "10.00"}), None)
            .await
            .unwrap()
            .status(),
        403
    );
    let root = app.admin_bearer().await;
    assert_eq!(
        refund(root.clone(), json!({}), None)
            .await
            .unwrap()
            .status(),
        409,
        "an unpaid order cannot be refunded"
    );
    let path = format!(
        "/payments/sandbox/checkout/{}",
        order["order_id"].as_str().unwrap()
    );
    app.client.post(app.url(&path)).send().await.unwrap();
    assert_eq!(app.current_plan(&a).await, "专业版");

    for _ in 0..3 {
        let r: Value = refund(
            root.clone(),
            json!({"refund_amount": "10.00", "reason": "goodwill"}),
            Some("r-1"),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        assert_eq!(
            (
                r["payment"]["status"].as_str(),
                r["payment"]["refunded_amount"].as_str()
            ),
            (Some("partially_refunded"), Some("10.00"))
        );
    }
    let resp = refund(root.clone(), json!({"refund_amount": "89.01"}), Some("r-2"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 409, "more than was paid");
    let r: Value = refund(root.clone(), json!({"refund_amount": 89}), Some("r-3"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            r["payment"]["status"].as_str(),
            r["payment"]["refunded_amount"].as_str()
        ),
        (Some("refunded"), Some("99.00"))
    );
    // Fully refunded: the paid plan ends, the user is back on the free plan.
    assert_eq!(app.current_plan(&a).await, "免费版");
    assert_eq!(quota(&app, &a).await.0, 5);
    app.stop().await;
}

async fn reconciliation_closes_expired_orders(db: Db) {
    let app = app(db).await;
    let a = app.signup("expiring").await;
    let order: Value = app
        .as_user(&a)
        .post("/payments/")
        .json(&json!({"plan_id": app.plan_id("专业版").await, "payment_method": "sandbox"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let fresh: Value = app
        .as_user(&a)
        .post("/payments/")
        .json(&json!({"plan_id": app.plan_id("企业版").await, "payment_method": "sandbox"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    app.age_order(order["id"].as_str().unwrap(), 7_200_000)
        .await;
    let closed = app.services().payments().reconcile_once().await.unwrap();
    assert_eq!(closed, 1);
    assert_eq!(
        app.order_status(order["id"].as_str().unwrap()).await,
        "closed"
    );
    assert_eq!(
        app.order_status(fresh["id"].as_str().unwrap()).await,
        "pending",
        "a fresh order is left alone"
    );
    let subs = app.store().subscriptions().of_user(&a.id).await.unwrap();
    assert!(
        subs.iter()
            .any(|s| s.status.as_str() == "expired" && s.current_period_start.is_none()),
        "its pending subscription is expired"
    );
    app.stop().await;
}

/// On a development gate without Alipay or WeChat Pay credentials (a fresh machine), orders of
/// either method are paid on the sandbox checkout page, labelled as a sandbox, or by a
/// sandbox-signed notification to the method's own webhook, and keep their method; the
/// sandbox's webhook does not pay another method's order, nor does a bad signature.
async fn alipay_and_wechat_without_credentials_are_paid_on_the_sandbox_in_development(db: Db) {
    let app = app(db).await;
    let pro = app.plan_id("专业版").await;
    for (method, label) in [("alipay", "Alipay"), ("wechat", "WeChat Pay")] {
        let order_for = |a: Account| {
            let app = &app;
            let pro = pro.clone();
            async move {
                let resp = app
                    .as_user(&a)
                    .post("/subscriptions/subscribe")
                    .json(&json!({"plan_id": pro, "payment_method": method}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 202, "{method}");
                (a, resp.json::<Value>().await.unwrap())
            }
        };
        let (a, order) = order_for(app.signup(&format!("page-{method}")).await).await;
        let order_no = order["order_no"].as_str().unwrap().to_string();
        let path = format!("/payments/sandbox/checkout/{order_no}");
        assert!(
            order["payment_url"].as_str().unwrap().ends_with(&path),
            "{order}"
        );
        let page = app.client.get(app.url(&path)).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let page = page.text().await.unwrap();
        assert!(
            page.contains("沙箱") && page.contains(label) && page.contains("99.00"),
            "{page}"
        );

        let (body, sig) = event(&app, &format!("cross-{method}"), &order_no, 9900, "paid");
        post_event(&app, body, &sig).await;
        let id = order["payment_id"].as_str().unwrap();
        assert_eq!(
            app.order_status(id).await,
            "pending",
            "the sandbox's webhook does not pay a {method} order"
        );

        let paid = app.client.post(app.url(&path)).send().await.unwrap();
        assert_eq!(paid.status(), 200);
        assert!(paid.text().await.unwrap().contains("completed"));
        assert_eq!(app.current_plan(&a).await, "专业版");
        assert_eq!(quota(&app, &a).await, (100, 0));
        let stored = app
            .as_user(&a)
            .get_json(&format!("/payments/{id}"), 200)
            .await;
        assert_eq!(
            stored["payment_method"], method,
            "the order keeps its method"
        );

        let (b, order) = order_for(app.signup(&format!("hook-{method}")).await).await;
        let order_no = order["order_no"].as_str().unwrap();
        let id = order["payment_id"].as_str().unwrap();
        let (body, _) = event(&app, &format!("hook-{method}"), order_no, 9900, "paid");
        let webhook = |sig: String, body: Vec<u8>| {
            app.client
                .post(app.url(&format!("/webhooks/{method}")))
                .header("x-sandbox-signature", sig)
                .body(body)
                .send()
        };
        let forged = webhook("00".repeat(32), body.clone()).await.unwrap();
        assert_eq!(forged.status(), 400, "a bad signature is refused");
        assert_eq!(app.order_status(id).await, "pending");
        let sig = app.services().payments().sandbox().unwrap().sign(&body);
        let ok = webhook(sig, body).await.unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(app.order_status(id).await, "completed");
        assert_eq!(app.current_plan(&b).await, "专业版");
    }
    app.stop().await;
}

on_both!(
    subscribe_pay_activate,
    amounts_come_from_plans,
    notifications_credit_at_most_once,
    refunds_are_for_superusers_partial_and_idempotent,
    reconciliation_closes_expired_orders,
    alipay_and_wechat_without_credentials_are_paid_on_the_sandbox_in_development,
);
