//! Metering that cannot be gamed: the backend's reply settles a charge whether or not the
//! client stayed for it, a client that leaves before its body arrived whole is refunded (and
//! the backend never acts), and a charge follows its task: refunded once when the backend
//! reports the task failed, seen as the client polls, by the gate's own poll when nobody
//! does, and never twice across two gates. The shipped `proxy.toml` in front of a stand-in
//! backend that keys tasks globally and fails them later (`common::idoctor`), on SQLite and
//! PostgreSQL.

use serde_json::Value;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

use crate::common::idoctor::IDoctor;
use crate::common::{Account, Db, Options, TestApp, spawn_app_with};
use crate::tenancy::{DAY, backend, form, ns, start_case};

const L3: &str = "api_calls_l3_detect";
const PROCESS: &str = "api_calls_full_process";
const STORAGE: &str = "storage_usage";

/// The shipped configuration in front of `backend`, with `[tasks]` keys set (`edits`), on
/// `database_url` when several gates share one database.
async fn gate(
    db: Db,
    backend: &IDoctor,
    edits: &[(&'static str, i64)],
    database_url: Option<String>,
) -> TestApp {
    spawn_app_with(Options {
        db,
        shipped: true,
        routes: String::new(),
        upstream_url: Some(backend.url()),
        database_url,
        env: vec![(
            "GATE_JWT_SECRET".into(),
            "settlement-test-secret-settlement-test-01".into(),
        )],
        edits: edits
            .iter()
            .map(|(k, v)| (*k, toml::Value::Integer(*v)))
            .collect(),
        ..Options::default()
    })
    .await
}

/// The gate polls tasks whose end it has not seen every second.
const POLL_FAST: &[(&str, i64)] = &[("tasks.poll_after_secs", 1), ("tasks.poll_every_secs", 1)];

/// `(limit, used)` of one quota type, as the user reads it.
async fn quota(app: &TestApp, a: &Account, quota_type: &str) -> (i64, i64) {
    let q = app.quota(a, quota_type).await;
    (q.limit, q.used)
}

/// `(state, count, units)` of the user's usage rows of a type, from the store.
async fn ledger(app: &TestApp, a: &Account, quota_type: &str) -> Vec<(String, i64, i64)> {
    app.usage_rows(a, quota_type).await
}

/// Waits (at most 15 s) until `check` holds, and says what it waited for if it never does.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..150 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never: {what}");
}

/// Sends `head` (and `body`) on a raw connection, then hangs up after `stay`, without reading
/// a byte of the answer.
async fn hang_up(app: &TestApp, head: String, body: &[u8], stay: Duration) {
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    s.flush().await.unwrap();
    tokio::time::sleep(stay).await;
    drop(s);
}

fn l3_request(a: &Account, patient: &str) -> String {
    format!(
        "POST /l3_detect/{patient}/{DAY} HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\n\r\n",
        a.access
    )
}

async fn uploaded(app: &TestApp, a: &Account, patient: &str) {
    let resp = crate::tenancy::upload(app, a, patient, DAY, "series.zip").await;
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "ok", "{body}");
}

async fn a_client_that_hangs_up_is_charged_by_the_backends_reply(db: Db) {
    let backend = backend(false).await;
    backend.set_l3_work(Duration::from_millis(1500));
    let app = gate(db, &backend, &[], None).await;
    let alice = app.signup("alice").await;
    uploaded(&app, &alice, "zhang").await;
    let before = quota(&app, &alice, L3).await.1;

    // The whole request reached the backend; the client leaves while it works.
    hang_up(
        &app,
        l3_request(&alice, "zhang"),
        b"",
        Duration::from_millis(300),
    )
    .await;
    eventually("the backend finished the L3 step", || async {
        backend.l3_done() == 1
    })
    .await;
    eventually("the charge is committed", || async {
        ledger(&app, &alice, L3).await == vec![("committed".into(), 1, 1)]
    })
    .await;
    assert_eq!(quota(&app, &alice, L3).await.1, before + 1);

    // The backend's reply decides both ways: a case with nothing uploaded is refused (an
    // `error` as HTTP 200), and that is refunded though nobody was left to hear it.
    hang_up(
        &app,
        l3_request(&alice, "nobody"),
        b"",
        Duration::from_millis(300),
    )
    .await;
    eventually("the refused run is refunded", || async {
        ledger(&app, &alice, L3).await
            == vec![("committed".into(), 1, 1), ("refunded".into(), 1, 1)]
    })
    .await;
    assert_eq!(quota(&app, &alice, L3).await.1, before + 1);
    assert_eq!(backend.l3_done(), 1);
}

async fn a_client_that_leaves_mid_body_is_refunded_and_the_backend_never_acts(db: Db) {
    let backend = backend(false).await;
    let app = gate(db, &backend, &[], None).await;
    let alice = app.signup("alice").await;
    let (content_type, body) = form(&[("patient_name", "zhang"), ("study_date", DAY)], "s.zip");
    let head = format!(
        "POST /upload_dicom_zip HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        alice.access,
        body.len()
    );
    // Everything but the closing boundary, then the client is gone.
    hang_up(
        &app,
        head,
        &body[..body.len() - 10],
        Duration::from_millis(300),
    )
    .await;
    eventually("the storage charge is refunded", || async {
        ledger(&app, &alice, STORAGE).await == vec![("refunded".into(), 1, 1)]
    })
    .await;
    assert_eq!(quota(&app, &alice, STORAGE).await.1, 0);
    // The backend never had a whole request to act on.
    assert!(backend.upload_ids().is_empty());
    assert!(backend.files().is_empty(), "{:?}", backend.files());
}

/// The backend's id of `a`'s main task of `patient`.
fn backend_task(a: &Account, patient: &str) -> String {
    format!("main_{}{patient}_{DAY}", ns(a))
}

async fn a_failed_task_is_refunded_once_while_the_client_polls(db: Db) {
    let backend = backend(false).await;
    let app = gate(db, &backend, &[], None).await;
    let alice = app.signup("alice").await;
    let task = start_case(&app, &alice, "zhang").await;
    start_case(&app, &alice, "li").await;
    assert_eq!(quota(&app, &alice, PROCESS).await.1, 2);

    backend.finish(&backend_task(&alice, "zhang"), "failed");
    // The frontend polls every 3 s; every poll after the failure sees it, one refunds.
    for _ in 0..3 {
        let status = app
            .as_user(&alice)
            .get_json(&format!("/task_status/{task}"), 200)
            .await;
        assert_eq!(status["status"], "failed", "{status}");
    }
    assert_eq!(quota(&app, &alice, PROCESS).await.1, 1);
    assert_eq!(
        ledger(&app, &alice, PROCESS).await,
        vec![("committed".into(), 1, 1), ("refunded".into(), 1, 1)]
    );
    // The user's usage log shows the refund and why, in the names the user typed.
    let logs = app
        .as_user(&alice)
        .get_json(
            &format!("/admin/quotas/usage-logs?quota_type={PROCESS}"),
            200,
        )
        .await;
    let refunded: Vec<&Value> = logs
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["state"] == "refunded")
        .collect();
    assert_eq!(refunded.len(), 1, "{logs}");
    assert_eq!(
        refunded[0]["refund_reason"],
        format!("the task failed: CUDA out of memory in data/zhang_{DAY}/output")
    );
    assert!(refunded[0]["refunded_at"].is_string(), "{logs}");

    // A task that completes keeps its charge, however often it is polled.
    backend.finish(&backend_task(&alice, "li"), "completed");
    for _ in 0..2 {
        app.as_user(&alice)
            .get_json(&format!("/task_status/main_li_{DAY}"), 200)
            .await;
    }
    assert_eq!(quota(&app, &alice, PROCESS).await.1, 1);
}

async fn a_failed_task_nobody_polls_is_refunded_by_the_gate(db: Db) {
    let backend = backend(false).await;
    let app = gate(db, &backend, POLL_FAST, None).await;
    let alice = app.signup("alice").await;
    start_case(&app, &alice, "zhang").await;
    start_case(&app, &alice, "li").await;
    backend.finish(&backend_task(&alice, "zhang"), "failed");
    backend.finish(&backend_task(&alice, "li"), "completed");
    eventually("the gate's own poll refunds the failed task", || async {
        quota(&app, &alice, PROCESS).await.1 == 1
    })
    .await;
    let logs = app
        .as_user(&alice)
        .get_json("/admin/quotas/usage-logs", 200)
        .await;
    let reasons: Vec<&str> = logs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["refund_reason"].as_str())
        .collect();
    assert_eq!(
        reasons,
        [format!(
            "the task failed: CUDA out of memory in data/zhang_{DAY}/output"
        )],
        "in the names the user typed"
    );
    // Past a few more rounds: once, and the completed task keeps its charge.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(quota(&app, &alice, PROCESS).await.1, 1);
    assert_eq!(
        ledger(&app, &alice, PROCESS).await,
        vec![("committed".into(), 1, 1), ("refunded".into(), 1, 1)]
    );
}

async fn a_failed_task_is_refunded_once_across_two_gates(db: Db) {
    let backend = backend(false).await;
    let first = gate(db, &backend, POLL_FAST, None).await;
    let url = first.services().config().database.url.clone();
    let second = gate(db, &backend, POLL_FAST, Some(url)).await;
    let alice = first.signup("alice").await;
    let task = start_case(&first, &alice, "zhang").await;
    start_case(&first, &alice, "li").await;
    backend.finish(&backend_task(&alice, "zhang"), "failed");
    // Both gates poll on their own, and the client polls both at once.
    let path = format!("/task_status/{task}");
    let (on_first, on_second) = (first.as_user(&alice), second.as_user(&alice));
    for _ in 0..5 {
        let (a, b) = tokio::join!(
            on_first.get_json(&path, 200),
            on_second.get_json(&path, 200),
        );
        assert_eq!(
            (&a["status"], &b["status"]),
            (&"failed".into(), &"failed".into())
        );
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(quota(&first, &alice, PROCESS).await.1, 1);
    assert_eq!(quota(&second, &alice, PROCESS).await.1, 1);
    assert_eq!(
        ledger(&first, &alice, PROCESS).await,
        vec![("committed".into(), 1, 1), ("refunded".into(), 1, 1)]
    );
}

async fn a_task_that_never_ends_is_settled_by_the_stale_rule(db: Db) {
    let backend = backend(false).await;
    // `stale = "refund"` (the shipped rule) with a one-second window.
    let stale = [POLL_FAST, &[("tasks.stale_after_secs", 1)]].concat();
    let app = gate(db, &backend, &stale, None).await;
    let alice = app.signup("alice").await;
    start_case(&app, &alice, "zhang").await;
    eventually("the stale task is refunded", || async {
        quota(&app, &alice, PROCESS).await.1 == 0
    })
    .await;
    let logs = app
        .as_user(&alice)
        .get_json("/admin/quotas/usage-logs", 200)
        .await;
    let reasons: Vec<&str> = logs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["refund_reason"].as_str())
        .collect();
    assert_eq!(reasons, ["the task did not finish within 1 s"], "{logs}");
}

async fn the_keep_rule_keeps_a_stale_tasks_charge(db: Db) {
    let backend = backend(false).await;
    let app = spawn_app_with(Options {
        db,
        shipped: true,
        routes: String::new(),
        upstream_url: Some(backend.url()),
        edits: vec![
            ("tasks.poll_after_secs", 1.into()),
            ("tasks.poll_every_secs", 1.into()),
            ("tasks.stale_after_secs", 1.into()),
            ("tasks.stale", "keep".into()),
        ],
        ..Options::default()
    })
    .await;
    let alice = app.signup("alice").await;
    start_case(&app, &alice, "zhang").await;
    let store = app.store();
    eventually("the stale task's charge is kept and closed", || async {
        store
            .task_charges()
            .due(i64::MAX, 10)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    assert_eq!(quota(&app, &alice, PROCESS).await.1, 1);
    assert_eq!(
        ledger(&app, &alice, PROCESS).await,
        vec![("committed".into(), 1, 1)]
    );
    // The backend still says processing when asked; nothing changes.
    let status = app
        .as_user(&alice)
        .get_json(&format!("/task_status/main_zhang_{DAY}"), 200)
        .await;
    assert_eq!(status["status"], "processing");
}

on_both!(
    a_client_that_hangs_up_is_charged_by_the_backends_reply,
    a_client_that_leaves_mid_body_is_refunded_and_the_backend_never_acts,
    a_failed_task_is_refunded_once_while_the_client_polls,
    a_failed_task_nobody_polls_is_refunded_by_the_gate,
    a_failed_task_is_refunded_once_across_two_gates,
    a_task_that_never_ends_is_settled_by_the_stale_rule,
    the_keep_rule_keeps_a_stale_tasks_charge,
);

/// Every request has its log line, a request whose client hung up included: status 499,
/// `client_left`, and what settlement decided and why. The binary with JSON logs.
#[tokio::test]
async fn requests_whose_client_left_are_logged_with_their_settlement() {
    let backend = backend(false).await;
    backend.set_l3_work(Duration::from_millis(800));
    let dir = tempfile::tempdir().unwrap();
    let port = crate::common::dead_port();
    let config = dir.path().join("gate.toml");
    let text = crate::common::ConfigEdit::shipped()
        .set("server.listen", format!("127.0.0.1:{port}"))
        .set("server.data_dir", dir.path().display().to_string())
        .set("upstream.url", backend.url())
        .render();
    std::fs::write(&config, text).unwrap();
    let log_path = dir.path().join("gate.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_idoctor-gate"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("GATE_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(&log_path).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..300 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tokens: Value = client
        .post(format!("{base}/auth/register"))
        .json(&serde_json::json!({"email": "left@example.com", "username": "left", "password": "left-password-123"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let login: Value = client
        .post(format!("{base}/auth/login"))
        .json(&serde_json::json!({"username_or_email": "left", "password": "left-password-123"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(tokens["id"].is_string(), "{tokens}");
    let access = login["access_token"].as_str().unwrap().to_string();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let send_and_leave = |head: String, body: Vec<u8>| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&body).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Sent whole, then gone while the backend works; and gone in the middle of an upload.
    send_and_leave(
        format!("POST /l3_detect/zhang/{DAY} HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {access}\r\nContent-Length: 0\r\n\r\n"),
        Vec::new(),
    )
    .await;
    let (content_type, body) = form(&[("patient_name", "zhang"), ("study_date", DAY)], "s.zip");
    send_and_leave(
        format!("POST /upload_dicom_zip HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {access}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n", body.len()),
        body[..body.len() - 10].to_vec(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = child.wait();

    let log = std::fs::read_to_string(&log_path).unwrap();
    let requests: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "request")
        .map(|l| l["fields"].clone())
        .collect();
    let line = |path: &str| {
        let lines: Vec<&Value> = requests.iter().filter(|l| l["path"] == path).collect();
        assert_eq!(lines.len(), 1, "one line for {path}: {lines:?}");
        lines[0].clone()
    };
    // The backend answered after the client had gone: nobody got a response.
    let l3 = line(&format!("/l3_detect/zhang/{DAY}"));
    assert_eq!(
        (&l3["status"], &l3["client_left"]),
        (&499.into(), &true.into()),
        "{l3}"
    );
    // Nothing uploaded for the case: the backend refused the work, so the charge went back.
    assert_eq!(l3["quota"], "refunded", "{l3}");
    assert_eq!(l3["settled_by"], "the reply does not meet the route's rule");
    // The forward failed with the body (hyper answers a request whose body broke off, to a
    // connection that is gone).
    let upload = line("/upload_dicom_zip");
    assert_eq!(upload["quota"], "refunded", "{upload}");
    assert_eq!(
        upload["settled_by"],
        "the request body did not arrive whole"
    );
}
