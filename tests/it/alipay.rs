//! Alipay against a local fake gateway, with RSA keys generated in the test, on SQLite and
//! PostgreSQL: signed requests, verified responses, the pay-notify-activate loop, and every
//! rejection.

use crate::common::alipay_certs;
use crate::common::fake_alipay::{self, FakeAlipay};
use crate::common::{Account, Db, Options, TestApp, spawn_app_with};
use serde_json::{Value, json};

async fn app(db: Db, fake: &FakeAlipay) -> TestApp {
    app_with(db, fake, "").await
}

/// The gate with `extra` keys in `[payments.alipay]` (public-key mode).
async fn app_with(db: Db, fake: &FakeAlipay, extra: &str) -> TestApp {
    let key = format!(
        "alipay_public_key = '''\n{}'''\n{extra}",
        fake_alipay::alipay_public_pem()
    );
    spawn_with_keys(db, fake, &key).await
}

/// The gate with `[payments.alipay]` for the fake gateway, its key settings being `keys`.
async fn spawn_with_keys(db: Db, fake: &FakeAlipay, keys: &str) -> TestApp {
    let section = format!(
        "\n[payments.alipay]\napp_id = \"{}\"\ngateway = \"{}\"\nseller_id = \"{}\"\n{keys}",
        fake_alipay::APP_ID,
        fake.url,
        fake_alipay::SELLER_ID,
    );
    spawn_app_with(Options {
        db,
        shipped: true,
        routes: section,
        env: vec![(
            "GATE_ALIPAY_PRIVATE_KEY".into(),
            fake_alipay::app_private_pem(),
        )],
        ..Options::default()
    })
    .await
}

async fn order(app: &TestApp, a: &Account, plan: &str) -> Value {
    let plan_id = app.plan_id(plan).await;
    let resp = app
        .as_user(a)
        .post("/payments/")
        .json(&json!({"plan_id": plan_id, "payment_method": "alipay"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    resp.json().await.unwrap()
}

async fn notify(app: &TestApp, form: String) -> (u16, String) {
    let resp = app
        .client
        .post(app.url("/webhooks/alipay"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn status(app: &TestApp, id: &str) -> String {
    app.order_status(id).await
}

async fn precreate_notify_activate(db: Db) {
    let fake = FakeAlipay::start().await;
    let app = app(db, &fake).await;
    let a = app.signup("alipayer").await;
    let o = order(&app, &a, "专业版").await;
    let no = o["order_id"].as_str().unwrap().to_string();
    let id = o["id"].as_str().unwrap().to_string();
    assert!(
        o["qr_code"]
            .as_str()
            .unwrap()
            .starts_with("https://qr.alipay.com/bax")
    );
    assert!(
        o["qr_code"].as_str().unwrap().len() < 1273,
        "fits a level-H QR code"
    );
    let pre = fake.calls("alipay.trade.precreate");
    assert_eq!(pre.len(), 1);
    let biz: Value = serde_json::from_str(&pre[0]["biz_content"]).unwrap();
    assert_eq!(
        (biz["total_amount"].as_str(), biz["out_trade_no"].as_str()),
        (Some("99.00"), Some(no.as_str()))
    );
    assert_eq!(
        pre[0]["notify_url"],
        "http://localhost:9000/webhooks/alipay"
    );
    assert_eq!(pre[0]["sign_type"], "RSA2");
    assert_eq!(pre[0]["timestamp"].len(), 19, "yyyy-MM-dd HH:mm:ss");
    assert!(no.len() <= 32);

    // Rejections first: nothing changes.
    let mut tampered = fake.notification("n-0", &no, "99.00", "TRADE_SUCCESS", fake_alipay::APP_ID);
    tampered = tampered.replace("total_amount=99.00", "total_amount=0.01");
    assert_eq!(
        notify(&app, tampered).await,
        (400, "fail".into()),
        "tampered after signing"
    );
    let wrong_app = fake.notification("n-1", &no, "99.00", "TRADE_SUCCESS", "2021999999999999");
    assert_eq!(
        notify(&app, wrong_app).await.0,
        400,
        "another app's notification"
    );
    let short = fake.notification("n-2", &no, "98.99", "TRADE_SUCCESS", fake_alipay::APP_ID);
    assert_eq!(
        notify(&app, short).await,
        (200, "success".into()),
        "a fen short: recorded, not credited"
    );
    let unknown = fake.notification(
        "n-3",
        "0123456789abcdef0123456789abcdef",
        "99.00",
        "TRADE_SUCCESS",
        fake_alipay::APP_ID,
    );
    assert_eq!(notify(&app, unknown).await.0, 200);
    assert_eq!(status(&app, &id).await, "pending");
    assert_eq!(app.current_plan(&a).await, "免费版");

    // The real notification, replayed ten times: credited once.
    let good = fake.notification("n-4", &no, "99.00", "TRADE_SUCCESS", fake_alipay::APP_ID);
    for _ in 0..10 {
        assert_eq!(notify(&app, good.clone()).await, (200, "success".into()));
    }
    assert_eq!(status(&app, &id).await, "completed");
    assert_eq!(app.current_plan(&a).await, "专业版");
    // TRADE_FINISHED later (another notify_id): nothing more.
    let finished = fake.notification("n-5", &no, "99.00", "TRADE_FINISHED", fake_alipay::APP_ID);
    assert_eq!(notify(&app, finished).await.0, 200);
    let paid = app.order_statuses(&a).await;
    assert_eq!(paid.iter().filter(|s| *s == "completed").count(), 1);

    // Refund goes to Alipay with an out_request_no.
    let root = app.admin_bearer().await;
    let resp = app
        .with_authorization(&root)
        .post(&format!("/payments/{id}/refund"))
        .header("idempotency-key", "r1")
        .json(&json!({"refund_amount": "9.90"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let refunds = fake.calls("alipay.trade.refund");
    assert_eq!(refunds.len(), 1);
    let biz: Value = serde_json::from_str(&refunds[0]["biz_content"]).unwrap();
    assert_eq!(biz["refund_amount"], "9.90");
    let out_request_no = biz["out_request_no"].as_str().unwrap().to_string();
    assert_eq!(out_request_no, format!("{id}r1"));
    // Its notice (a TRADE_SUCCESS with out_biz_no and refund_fee) is acknowledged and
    // recorded on the payment, not taken for a second payment.
    let notice = fake.refund_notification("n-refund", &no, &out_request_no, "9.90");
    assert_eq!(notify(&app, notice).await, (200, "success".into()));
    let payment = app
        .as_user(&a)
        .get_json(&format!("/payments/{id}"), 200)
        .await;
    assert_eq!(payment["refunds"][0]["refund_no"], out_request_no.as_str());
    assert_eq!(payment["refunds"][0]["status"], "succeeded");
    assert_eq!(payment["refunded_amount"], "9.90");
    app.stop().await;
}

async fn lost_notifications_are_found_by_query(db: Db) {
    let fake = FakeAlipay::start().await;
    let app = app(db, &fake).await;
    let a = app.signup("polling").await;
    let o = order(&app, &a, "企业版").await;
    let id = o["id"].as_str().unwrap().to_string();
    // Not paid yet: polling leaves it pending.
    let p: Value = app
        .as_user(&a)
        .get(&format!("/payments/{id}?poll=true"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(p["status"], "pending");
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
    assert_eq!(
        p["status"], "completed",
        "the signed query answer completes it"
    );
    assert_eq!(app.current_plan(&a).await, "企业版");

    // An expired order is queried, then closed at Alipay and here.
    let o2 = order(&app, &a, "专业版").await;
    app.age_order(o2["id"].as_str().unwrap(), 7_200_000).await;
    let queries_before = fake.calls("alipay.trade.query").len();
    assert_eq!(app.services().payments().reconcile_once().await.unwrap(), 1);
    assert!(
        fake.calls("alipay.trade.query").len() > queries_before,
        "query before close"
    );
    assert_eq!(fake.calls("alipay.trade.close").len(), 1);
    assert_eq!(status(&app, o2["id"].as_str().unwrap()).await, "closed");
    app.stop().await;
}

async fn forged_gateway_answers_are_not_trusted(db: Db) {
    let fake = FakeAlipay::start().await;
    let app = app(db, &fake).await;
    let a = app.signup("forgery").await;
    fake.state.lock().unwrap().forge_responses = true;
    let plan_id = app.plan_id("专业版").await;
    let resp = app
        .as_user(&a)
        .post("/payments/")
        .json(&json!({"plan_id": plan_id, "payment_method": "alipay"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let rows = app.order_statuses(&a).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0], "closed", "an unverified answer is never success");
    app.stop().await;
}

/// A mobile checkout (`checkout = "wap"`) is a signed `alipay.trade.wap.pay` URL with
/// `QUICK_WAP_WAY` and the `quit_url` Alipay requires: the portal's payment page by default,
/// or the configured one.
async fn wap_checkout_is_signed_and_sends_quit_url(db: Db) {
    let fake = FakeAlipay::start().await;
    for (extra, quit) in [
        (
            "checkout = \"wap\"\n",
            "http://localhost:9000/portal/payments",
        ),
        (
            "checkout = \"wap\"\nquit_url = \"https://clinic.example/pay\"\n",
            "https://clinic.example/pay",
        ),
    ] {
        let app = app_with(db, &fake, extra).await;
        let a = app.signup("mobile").await;
        let o = order(&app, &a, "专业版").await;
        let url = reqwest::Url::parse(o["payment_url"].as_str().unwrap()).unwrap();
        let params: std::collections::BTreeMap<String, String> =
            url.query_pairs().into_owned().collect();
        assert!(fake_alipay::signed_by_the_app(&params), "{params:?}");
        assert_eq!(params["method"], "alipay.trade.wap.pay");
        let biz: Value = serde_json::from_str(&params["biz_content"]).unwrap();
        assert_eq!(biz["product_code"], "QUICK_WAP_WAY");
        assert_eq!(biz["quit_url"], quit);
        assert_eq!(biz["total_amount"], "99.00");
        app.stop().await;
    }
}

/// The gate in certificate mode: the three certificate files instead of Alipay's bare key.
async fn app_in_cert_mode(db: Db, fake: &FakeAlipay, certs: &alipay_certs::Certs) -> TestApp {
    let keys = format!(
        "app_cert_file = \"{}\"\nalipay_cert_file = \"{}\"\nalipay_root_cert_file = \"{}\"\n",
        certs.app.display(),
        certs.alipay.display(),
        certs.root.display()
    );
    spawn_with_keys(db, fake, &keys).await
}

/// Certificate mode (公钥证书模式): every request carries the app certificate's SN and the
/// root bundle's (its RSA root only), signed with the rest, so a gateway that checks them
/// accepts the order; Alipay's notifications verify with the key of its certificate; a reply
/// signed under another Alipay certificate (`alipay_cert_sn`) is not trusted.
async fn certificate_mode_sends_the_sns_and_trusts_only_its_certificate(db: Db) {
    let certs = alipay_certs::make(&fake_alipay::app_private_pem());
    let fake = FakeAlipay::start().await;
    {
        let mut s = fake.state.lock().unwrap();
        s.cert_sns = Some((certs.app_sn.clone(), certs.root_sn.clone()));
        s.alipay_cert_sn = Some(certs.alipay_sn.clone());
    }
    let app = app_in_cert_mode(db, &fake, &certs).await;
    let a = app.signup("certified").await;
    let o = order(&app, &a, "专业版").await;
    let sent = &fake.calls("alipay.trade.precreate")[0];
    assert_eq!(sent["app_cert_sn"], certs.app_sn);
    assert_eq!(sent["alipay_root_cert_sn"], certs.root_sn);
    assert_eq!(
        certs.root_sn.split('_').count(),
        2,
        "two RSA roots; the EC root between them has no SN"
    );

    let no = o["order_id"].as_str().unwrap().to_string();
    let paid = fake.notification("n-cert", &no, "99.00", "TRADE_SUCCESS", fake_alipay::APP_ID);
    assert_eq!(notify(&app, paid).await, (200, "success".into()));
    assert_eq!(app.current_plan(&a).await, "专业版");

    fake.state.lock().unwrap().alipay_cert_sn = Some("0123456789abcdef0123456789abcdef".into());
    let resp = app
        .as_user(&a)
        .post("/payments/")
        .json(&json!({"plan_id": app.plan_id("企业版").await, "payment_method": "alipay"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        502,
        "signed under a certificate the gate has not checked"
    );
    app.stop().await;
}

on_both!(
    certificate_mode_sends_the_sns_and_trusts_only_its_certificate,
    wap_checkout_is_signed_and_sends_quit_url,
    precreate_notify_activate,
    lost_notifications_are_found_by_query,
    forged_gateway_answers_are_not_trusted,
);

/// `check-config` names a certificate file that does not parse, an app certificate that is not
/// for the app private key, and a root bundle with no RSA certificate, each by its key.
#[test]
fn bad_certificates_are_named_by_check_config() {
    let certs = alipay_certs::make(&fake_alipay::app_private_pem());
    let other_key = alipay_certs::make(&fake_alipay::alipay_private_pem());
    let garbage = certs.dir.path().join("garbage.crt");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let ec_only = certs.dir.path().join("ec.crt");
    let problems = |app: &std::path::Path, root: &std::path::Path| {
        let text = crate::common::ConfigEdit::shipped().render()
            + &format!(
                "\n[payments.alipay]\napp_id = \"{}\"\napp_cert_file = \"{}\"\nalipay_cert_file = \"{}\"\nalipay_root_cert_file = \"{}\"\n",
                fake_alipay::APP_ID,
                app.display(),
                certs.alipay.display(),
                root.display()
            );
        let env = [("GATE_ALIPAY_PRIVATE_KEY", fake_alipay::app_private_pem())];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        match idoctor_gate::config::Config::from_toml_str_with_env(&text, "t.toml", &env) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    };
    assert_eq!(
        problems(&certs.app, &certs.root),
        "",
        "the made certificates are good"
    );
    let found = problems(&garbage, &certs.root);
    assert!(
        found.contains("payments.alipay.app_cert_file") && found.contains("not PEM"),
        "{found}"
    );
    let found = problems(&other_key.app, &certs.root);
    assert!(
        found.contains("payments.alipay.app_cert_file") && found.contains("app private key"),
        "{found}"
    );
    let found = problems(&certs.app, &ec_only);
    assert!(
        found.contains("payments.alipay.alipay_root_cert_file") && found.contains("no RSA"),
        "{found}"
    );
}
