//! WeChat Pay API v3 against a local fake, with keys (and a platform certificate) made in the
//! test, on SQLite and PostgreSQL: signed requests, verified answers, encrypted callbacks, and
//! every rejection.

use crate::common::fake_wechat::{self, FakeWechat};
use crate::common::{Account, Db, Options, TestApp, spawn_app_with};
use serde_json::{Value, json};

async fn app(db: Db, fake: &FakeWechat, cert: Option<&std::path::Path>) -> TestApp {
    let keys = match cert {
        None => format!(
            "public_key_id = \"{}\"\npublic_key = '''\n{}'''\n",
            fake_wechat::PUBLIC_KEY_ID,
            fake_wechat::platform_public_pem()
        ),
        Some(path) => format!("platform_certificates = [\"{}\"]\n", path.display()),
    };
    let section = format!(
        "\n[payments.wechat]\nmchid = \"{}\"\nappid = \"{}\"\napi_base = \"{}\"\nmerchant_serial_no = \"{}\"\n{keys}",
        fake_wechat::MCHID,
        fake_wechat::APPID,
        fake.url,
        fake_wechat::MERCHANT_SERIAL
    );
    spawn_app_with(Options {
        db,
        shipped: true,
        routes: section,
        env: vec![
            (
                "GATE_WECHAT_PRIVATE_KEY".into(),
                fake_wechat::merchant_private_pem(),
            ),
            (
                "GATE_WECHAT_API_V3_KEY".into(),
                fake_wechat::API_V3_KEY.into(),
            ),
        ],
        ..Options::default()
    })
    .await
}

async fn order(app: &TestApp, a: &Account, plan: &str) -> Value {
    let plan_id = app.plan_id(plan).await;
    let resp = app
        .as_user(a)
        .post("/payments/")
        .json(&json!({"plan_id": plan_id, "payment_method": "wechat"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    resp.json().await.unwrap()
}

async fn callback(app: &TestApp, (headers, body): (Vec<(String, String)>, String)) -> u16 {
    let mut req = app
        .client
        .post(app.url("/webhooks/wechat"))
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    req.send().await.unwrap().status().as_u16()
}

async fn status(app: &TestApp, id: &str) -> String {
    app.order_status(id).await
}

/// A gate in front of a fake WeChat Pay, an account, and its pending native order for 专业版.
struct Ordered {
    fake: FakeWechat,
    app: TestApp,
    a: Account,
    /// The order's `out_trade_no` and id.
    no: String,
    id: String,
}

async fn ordered(db: Db) -> Ordered {
    let fake = FakeWechat::start(fake_wechat::PUBLIC_KEY_ID).await;
    let app = app(db, &fake, None).await;
    let a = app.signup("wechatter").await;
    let o = order(&app, &a, "专业版").await;
    let no = o["order_id"].as_str().unwrap().to_string();
    let id = o["id"].as_str().unwrap().to_string();
    Ordered {
        fake,
        app,
        a,
        no,
        id,
    }
}

/// A native order goes to WeChat with the plan's amount in fen, an `out_trade_no` within its
/// 32 characters and the notify URL, and the payer gets the QR link.
async fn a_native_order_is_sent_with_the_plans_amount(db: Db) {
    let fake = FakeWechat::start(fake_wechat::PUBLIC_KEY_ID).await;
    let app = app(db, &fake, None).await;
    let a = app.signup("wechatter").await;
    let o = order(&app, &a, "专业版").await;
    let no = o["order_id"].as_str().unwrap().to_string();
    assert!(
        o["qr_code"]
            .as_str()
            .unwrap()
            .starts_with("weixin://wxpay/bizpayurl?pr=")
    );
    let native = fake.calls("/v3/pay/transactions/native");
    let sent: Value = serde_json::from_str(&native[0].2).unwrap();
    assert_eq!(
        (
            sent["amount"]["total"].as_i64(),
            sent["out_trade_no"].as_str()
        ),
        (Some(9900), Some(no.as_str()))
    );
    assert_eq!(sent["notify_url"], "http://localhost:9000/webhooks/wechat");
    assert!(no.len() <= 32);
    app.stop().await;
}

/// A signature probe, a callback too old or from the future, an unknown key serial, a byte
/// changed or another merchant are refused (400); a callback a fen short is acknowledged and
/// recorded, and credits nothing.
async fn forged_stale_or_altered_callbacks_credit_nothing(db: Db) {
    let Ordered {
        fake,
        app,
        a: _,
        no,
        id,
    } = ordered(db).await;
    let mut probe = fake.callback("EV-probe", &no, 9900, fake_wechat::MCHID, 0);
    probe
        .0
        .iter_mut()
        .find(|h| h.0 == "wechatpay-signature")
        .unwrap()
        .1 = "WECHATPAY/SIGNTEST/abc".into();
    assert_eq!(callback(&app, probe).await, 400, "a signature probe");
    assert_eq!(
        callback(
            &app,
            fake.callback("EV-old", &no, 9900, fake_wechat::MCHID, -400)
        )
        .await,
        400,
        "six minutes old"
    );
    assert_eq!(
        callback(
            &app,
            fake.callback("EV-future", &no, 9900, fake_wechat::MCHID, 400)
        )
        .await,
        400,
        "from the future"
    );
    let mut unknown = fake.callback("EV-serial", &no, 9900, fake_wechat::MCHID, 0);
    unknown
        .0
        .iter_mut()
        .find(|h| h.0 == "wechatpay-serial")
        .unwrap()
        .1 = "PUB_KEY_ID_OTHER".into();
    assert_eq!(callback(&app, unknown).await, 400, "an unknown serial");
    let (h, body) = fake.callback("EV-tamper", &no, 9900, fake_wechat::MCHID, 0);
    assert_eq!(
        callback(&app, (h, body.replace("支付成功", "支付成功 "))).await,
        400,
        "a byte changed"
    );
    assert_eq!(
        callback(&app, fake.callback("EV-mch", &no, 9900, "1900000002", 0)).await,
        400,
        "another merchant"
    );
    assert_eq!(
        callback(
            &app,
            fake.callback("EV-short", &no, 9899, fake_wechat::MCHID, 0)
        )
        .await,
        204,
        "a fen short: recorded, not credited"
    );
    assert_eq!(status(&app, &id).await, "pending");

    app.stop().await;
}

/// The real callback delivered ten times at once is credited once: the order completes and
/// the plan is active.
async fn a_callback_delivered_ten_times_credits_once(db: Db) {
    let Ordered {
        fake,
        app,
        a,
        no,
        id,
    } = ordered(db).await;
    let good = fake.callback("EV-good", &no, 9900, fake_wechat::MCHID, 0);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (headers, body) = good.clone();
        let mut req = app.client.post(app.url("/webhooks/wechat")).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        set.spawn(async move { req.send().await.unwrap().status().as_u16() });
    }
    while let Some(s) = set.join_next().await {
        assert_eq!(s.unwrap(), 204);
    }
    assert_eq!(status(&app, &id).await, "completed");
    assert_eq!(app.current_plan(&a).await, "专业版");
    assert_eq!(app.webhook_events("wechat", "applied").await, 1);

    app.stop().await;
}

/// A refund goes to WeChat with the amount refunded and the order's original total.
async fn a_refund_goes_to_wechat_with_the_original_total(db: Db) {
    let Ordered {
        fake,
        app,
        a: _,
        no,
        id,
    } = ordered(db).await;
    let paid = fake.callback("EV-good", &no, 9900, fake_wechat::MCHID, 0);
    assert_eq!(callback(&app, paid).await, 204);
    let root = app.admin_bearer().await;
    let resp = app
        .with_authorization(&root)
        .post(&format!("/payments/{id}/refund"))
        .json(&json!({"refund_amount": "19.80"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r = fake.calls("/v3/refund/domestic/refunds");
    let sent: Value = serde_json::from_str(&r[0].2).unwrap();
    assert_eq!(
        (
            sent["amount"]["refund"].as_i64(),
            sent["amount"]["total"].as_i64()
        ),
        (Some(1980), Some(9900))
    );
    assert!(sent["out_refund_no"].as_str().unwrap().len() <= 64);
    app.stop().await;
}

async fn platform_certificates_query_and_close(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let (pem, serial) = fake_wechat::platform_certificate(dir.path());
    let path = dir.path().join("platform.pem");
    std::fs::write(&path, pem).unwrap();
    let fake = FakeWechat::start(&serial).await;
    let app = app(db, &fake, Some(&path)).await;
    let a = app.signup("certmode").await;
    let o = order(&app, &a, "企业版").await;
    let id = o["id"].as_str().unwrap().to_string();
    // A lost callback: the signed query finds the payment.
    fake.pay(o["order_id"].as_str().unwrap());
    let p: Value = app
        .as_user(&a)
        .get(&format!("/payments/{id}?poll=true"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(p["status"], "completed");
    assert!(
        fake.calls("/v3/pay/transactions/out-trade-no/")[0]
            .1
            .ends_with(&format!("?mchid={}", fake_wechat::MCHID))
    );
    assert_eq!(app.current_plan(&a).await, "企业版");
    // A callback signed under the certificate's serial is accepted (and changes nothing more).
    assert_eq!(
        callback(
            &app,
            fake.callback(
                "EV-cert",
                o["order_id"].as_str().unwrap(),
                99900,
                fake_wechat::MCHID,
                0
            )
        )
        .await,
        204
    );

    // An expired order is queried, then closed (204, signed) at WeChat and here.
    let o2 = order(&app, &a, "专业版").await;
    app.age_order(o2["id"].as_str().unwrap(), 7_200_000).await;
    assert_eq!(app.services().payments().reconcile_once().await.unwrap(), 1);
    assert_eq!(
        fake.calls(&format!(
            "/v3/pay/transactions/out-trade-no/{}/close",
            o2["order_id"].as_str().unwrap()
        ))
        .len(),
        1
    );
    assert_eq!(status(&app, o2["id"].as_str().unwrap()).await, "closed");
    app.stop().await;
}

/// WeChat Pay's refund callbacks are accepted, verified and recorded on the payment: the
/// refund request names the notify URL they come to, REFUND.SUCCESS marks the refund
/// succeeded, a replay changes nothing, REFUND.ABNORMAL is recorded for a person to act on, and
/// one for another merchant or with a byte changed is refused (400) and recorded nowhere.
async fn refund_callbacks_are_verified_and_recorded(db: Db) {
    let Ordered {
        fake,
        app,
        a,
        no,
        id,
    } = ordered(db).await;
    let paid = fake.callback("EV-paid", &no, 9900, fake_wechat::MCHID, 0);
    assert_eq!(callback(&app, paid).await, 204);
    let root = app.admin_bearer().await;
    let refund = |amount: &'static str, key: &'static str| {
        app.with_authorization(&root)
            .post(&format!("/payments/{id}/refund"))
            .header("idempotency-key", key)
            .json(&json!({"refund_amount": amount}))
            .send()
    };
    assert_eq!(refund("19.80", "refund-one").await.unwrap().status(), 200);
    assert_eq!(refund("9.90", "refund-two").await.unwrap().status(), 200);
    let sent: Vec<Value> = fake
        .calls("/v3/refund/domestic/refunds")
        .iter()
        .map(|c| serde_json::from_str(&c.2).unwrap())
        .collect();
    assert_eq!(
        sent[0]["notify_url"],
        "http://localhost:9000/webhooks/wechat"
    );
    // The order's id and the Idempotency-Key, as every provider accepts ids.
    let (one, two) = (format!("{id}refund-one"), format!("{id}refund-two"));
    assert_eq!(sent[0]["out_refund_no"], one.as_str());
    let refunds = |p: Value| p["refunds"].as_array().unwrap().clone();
    let status_of = |p: &Value, no: &str| {
        refunds(p.clone())
            .iter()
            .find(|r| r["refund_no"] == no)
            .map(|r| r["status"].as_str().unwrap().to_string())
    };
    let path = format!("/payments/{id}");
    let detail = || async { app.as_user(&a).get_json(&path, 200).await };
    let before = detail().await;
    assert_eq!(refunds(before.clone()).len(), 2);

    let success = fake.refund_callback(
        "EV-r1",
        &no,
        &one,
        (1980, 9900),
        "SUCCESS",
        fake_wechat::MCHID,
    );
    for _ in 0..3 {
        assert_eq!(
            callback(&app, success.clone()).await,
            204,
            "accepted, replays too"
        );
    }
    let abnormal = fake.refund_callback(
        "EV-r2",
        &no,
        &two,
        (990, 9900),
        "ABNORMAL",
        fake_wechat::MCHID,
    );
    assert_eq!(callback(&app, abnormal).await, 204);
    let other = fake.refund_callback("EV-r3", &no, &two, (990, 9900), "SUCCESS", "1900000002");
    assert_eq!(callback(&app, other).await, 400, "another merchant");
    let (h, body) = fake.refund_callback(
        "EV-r4",
        &no,
        &two,
        (990, 9900),
        "SUCCESS",
        fake_wechat::MCHID,
    );
    assert_eq!(
        callback(&app, (h, body.replace("退款结果通知", "退款结果通知 "))).await,
        400,
        "a byte changed"
    );
    let after = detail().await;
    assert_eq!(status_of(&after, &one).as_deref(), Some("succeeded"));
    assert_eq!(status_of(&after, &two).as_deref(), Some("abnormal"));
    assert_eq!(
        after["refunded_amount"], "29.70",
        "the amounts are the gate's own"
    );
    app.stop().await;
}

on_both!(
    refund_callbacks_are_verified_and_recorded,
    a_native_order_is_sent_with_the_plans_amount,
    forged_stale_or_altered_callbacks_credit_nothing,
    a_callback_delivered_ten_times_credits_once,
    a_refund_goes_to_wechat_with_the_original_total,
    platform_certificates_query_and_close
);

#[test]
fn certificate_serials_drop_the_der_sign_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (pem, serial) = fake_wechat::platform_certificate(dir.path());
    let (got, _) = idoctor_gate::payments::wechat::certificate_serial_and_key(&pem).unwrap();
    assert_eq!(got, serial);
}
