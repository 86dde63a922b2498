//! Accounts and the front door under attack, on SQLite and PostgreSQL: throttles that hold
//! under a concurrent burst and across replicas, lockouts that do not lock the owner out, keys
//! that cannot manage credentials, refresh tokens whose reuse revokes the family, no oracle in
//! a disabled account's answer, bodies that stall, and requests without exactly one Host.

use crate::common::{Account, Db, Options, TEST_ROUTES, TestApp, smtp::Smtp, spawn_app_with};
use serde_json::{Value, json};
use std::time::Duration;

/// A gate behind a trusted proxy (so tests can speak from several addresses) with `auth`
/// settings.
async fn app(db: Db, auth: &str) -> TestApp {
    app_on(db, auth, None).await
}

async fn app_on(db: Db, auth: &str, database_url: Option<String>) -> TestApp {
    spawn_app_with(Options {
        db,
        server: "trusted_proxies = [\"127.0.0.1\"]\n".into(),
        routes: format!(
            "{auth}\n{TEST_ROUTES}\n[[route]]\npath = \"/mine/{{*rest}}\"\naccess = \"user\"\n"
        ),
        database_url,
        ..Options::default()
    })
    .await
}

/// One login attempt from `addr`; the status and the `Retry-After` seconds, if any.
async fn login_from(app: &TestApp, addr: &str, login: &str, password: &str) -> (u16, Option<u64>) {
    let resp = app
        .client
        .post(app.url("/auth/login"))
        .header("x-forwarded-for", addr)
        .json(&json!({"username_or_email": login, "password": password}))
        .send()
        .await
        .unwrap();
    let wait = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    (resp.status().as_u16(), wait)
}

/// Fires `n` requests at once and counts the answers by status.
async fn burst<F, Fut>(n: usize, make: F) -> std::collections::BTreeMap<u16, usize>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = u16> + Send + 'static,
{
    let handles: Vec<_> = (0..n).map(|_| tokio::spawn(make())).collect();
    let mut counts = std::collections::BTreeMap::new();
    for h in handles {
        *counts.entry(h.await.unwrap()).or_insert(0) += 1;
    }
    counts
}

async fn a_burst_of_wrong_passwords_is_checked_at_most_the_limit(db: Db) {
    let app = app(db, "[auth]\nlogin_max_failures = 5\n").await;
    let bob = app.signup("bob").await;
    let url = app.url("/auth/login");
    let client = app.client.clone();
    let counts = burst(60, || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            client
                .post(url)
                .header("x-forwarded-for", "10.0.0.1")
                .json(&json!({"username_or_email": "bob", "password": "wrong-password"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    })
    .await;
    assert_eq!(counts.get(&401), Some(&5), "{counts:?}");
    assert_eq!(counts.get(&429), Some(&55), "{counts:?}");
    let (status, wait) = login_from(&app, "10.0.0.1", "bob", &bob.password).await;
    assert_eq!(
        status, 429,
        "the pair is locked, even with the right password"
    );
    assert!(wait.is_some_and(|w| w > 0));
    app.stop().await;
}

async fn the_owner_gets_in_from_another_address(db: Db) {
    let app = app(db, "[auth]\nlogin_max_failures = 5\n").await;
    let bob = app.signup("bob").await;
    // The name, the email and another spelling of the name are one account: five guesses in all.
    for login in ["bob", "BOB", "bob@example.com", "Bob@Example.com", "bob"] {
        assert_eq!(
            login_from(&app, "10.0.0.1", login, "wrong-password")
                .await
                .0,
            401,
            "{login}"
        );
    }
    for login in ["bob", "bob@example.com"] {
        assert_eq!(
            login_from(&app, "10.0.0.1", login, &bob.password).await.0,
            429,
            "{login}"
        );
    }
    assert_eq!(
        login_from(&app, "10.0.0.2", "bob", &bob.password).await.0,
        200,
        "the guesses of 10.0.0.1 do not lock the owner out elsewhere"
    );
    app.stop().await;
}

async fn the_account_ceiling_slows_and_does_not_lock(db: Db) {
    let app = app(
        db,
        "[auth]\nlogin_max_failures = 5\nlogin_account_burst = 6\nlogin_account_interval_secs = 2\nlogin_max_failures_per_ip = 4\n",
    )
    .await;
    let bob = app.signup("bob").await;
    for i in 0..6 {
        let from = format!("10.0.1.{i}");
        assert_eq!(
            login_from(&app, &from, "bob", "wrong-password").await.0,
            401
        );
    }
    let (status, wait) = login_from(&app, "10.0.2.1", "bob", &bob.password).await;
    assert_eq!(
        status, 429,
        "six guesses from six addresses reach the account's ceiling"
    );
    let wait = wait.expect("Retry-After");
    assert!(wait <= 2, "slowed for one interval, not locked: {wait} s");
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(
        login_from(&app, "10.0.2.1", "bob", &bob.password).await.0,
        200
    );

    // One address guessing across many accounts meets its own ceiling.
    for i in 0..4 {
        let who = format!("nobody{i}");
        assert_eq!(
            login_from(&app, "10.0.3.1", &who, "wrong-password").await.0,
            401
        );
    }
    assert_eq!(
        login_from(&app, "10.0.3.1", "someone", "wrong-password")
            .await
            .0,
        429
    );
    app.stop().await;
}

async fn usernames_are_unique_whatever_their_case(db: Db) {
    let app = app(db, "").await;
    let a = app.signup("usera").await;
    let resp = app
        .client
        .post(app.url("/auth/register"))
        .json(&json!({"email": "other@example.com", "username": "USERA", "password": "password-other"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("username"),
        "{body}"
    );
    assert_eq!(
        login_from(&app, "10.0.0.1", "UserA", &a.password).await.0,
        200
    );
    app.stop().await;
}

async fn a_burst_of_wrong_codes_is_checked_at_most_the_limit(db: Db) {
    let smtp = Smtp::start().await;
    let app = app(
        db,
        &format!(
            "[auth]\nverification_code_attempts = 5\n\
             [smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom_email = \"noreply@idoctor.test\"\n",
            smtp.port
        ),
    )
    .await;
    let resp = app
        .client
        .post(app.url("/auth/send-verification-code"))
        .json(&json!({"email": "max@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let code = smtp.last_code_for("max@example.com").unwrap();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let url = app.url("/auth/verify-email");
    let client = app.client.clone();
    let counts = burst(150, || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            client
                .post(url)
                .json(&json!({"email": "max@example.com", "code": wrong}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    })
    .await;
    assert_eq!(counts.get(&403), Some(&5), "{counts:?}");
    assert_eq!(counts.get(&429), Some(&145), "{counts:?}");
    app.stop().await;
}

/// An API key of `a`, made with its session.
async fn key_of(app: &TestApp, a: &Account) -> String {
    let created: Value = app
        .as_user(a)
        .create_api_key(json!({"name": "robot"}))
        .await;
    created["key"].as_str().unwrap().to_string()
}

async fn api_keys_cannot_manage_credentials(db: Db) {
    let app = app(db, "").await;
    let a = app.signup("amy").await;
    let key = key_of(&app, &a).await;
    for (method, path, body) in [
        ("POST", "/api-keys/", json!({"name": "minted"})),
        ("PUT", "/users/me", json!({"email": "thief@example.com"})),
        (
            "PUT",
            "/users/me",
            json!({"password": "new-password-1", "current_password": a.password}),
        ),
        (
            "POST",
            "/payments/",
            json!({"plan_id": "x", "payment_method": "sandbox"}),
        ),
        ("POST", "/subscriptions/subscribe", json!({"plan_id": "x"})),
        ("POST", "/subscriptions/cancel", json!({})),
    ] {
        for as_bearer in [false, true] {
            let req = app
                .client
                .request(method.parse().unwrap(), app.url(path))
                .json(&body);
            let req = if as_bearer {
                req.header("authorization", format!("Bearer {key}"))
            } else {
                req.header("x-api-key", &key)
            };
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 403, "{method} {path} with a key");
            let v: Value = resp.json().await.unwrap();
            assert!(v["detail"].as_str().unwrap().contains("API key"), "{v}");
        }
    }
    // What keys are for: proxied routes and one's own usage.
    for path in ["/mine/x", "/subscriptions/", "/users/me", "/api-keys/"] {
        let status = app
            .client
            .get(app.url(path))
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "GET {path} with a key");
    }
    // With a session, the email needs the current password too.
    let resp = app
        .as_user(&a)
        .put("/users/me")
        .json(&json!({"email": "amy2@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "no current_password");
    let resp = app
        .as_user(&a)
        .put("/users/me")
        .json(&json!({"email": "amy2@example.com", "current_password": a.password}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The OpenAPI document says which credential each operation takes.
    let doc = app.get_json("/openapi.json", 200).await;
    let schemes = |path: &str, method: &str| -> Vec<String> {
        doc["paths"][path][method]["security"]
            .as_array()
            .unwrap_or_else(|| panic!("{method} {path} has a security list"))
            .iter()
            .flat_map(|s| s.as_object().unwrap().keys().cloned())
            .collect()
    };
    assert_eq!(schemes("/api-keys/", "post"), ["bearer"]);
    assert_eq!(schemes("/users/me", "put"), ["bearer"]);
    assert_eq!(schemes("/payments/", "post"), ["bearer"]);
    assert!(schemes("/admin/quotas/users/me", "get").contains(&"api_key".to_string()));
    assert!(schemes("/subscriptions/", "get").contains(&"api_key".to_string()));
    app.stop().await;
}

async fn refresh(app: &TestApp, token: &str) -> (u16, Value) {
    let resp = app
        .client
        .post(app.url("/auth/refresh"))
        .json(&json!({"refresh_token": token}))
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

async fn a_refresh_token_two_generations_old_revokes_the_family(db: Db) {
    let app = app(db, "").await;
    let a = app.signup("rita").await;
    let r0 = a.refresh.clone();
    // Two refreshes of the newest token at once (a page load): both honoured.
    let (s1, p1) = refresh(&app, &r0).await;
    let (s1b, _) = refresh(&app, &r0).await;
    assert_eq!((s1, s1b), (200, 200));
    let r1 = p1["refresh_token"].as_str().unwrap().to_string();
    let (s2, p2) = refresh(&app, &r1).await;
    assert_eq!(s2, 200);
    let r2 = p2["refresh_token"].as_str().unwrap().to_string();
    // r0's successor has itself been used: r0 again is a copy, inside the grace window or not.
    assert_eq!(refresh(&app, &r0).await.0, 401);
    assert_eq!(refresh(&app, &r2).await.0, 401, "the family is revoked");
    app.stop().await;
}

async fn a_disabled_account_answers_like_a_wrong_password(db: Db) {
    let app = app(db, "").await;
    let d = app.signup("dora").await;
    app.services()
        .auth()
        .set_active(&d.id, false)
        .await
        .unwrap();
    let right = app
        .client
        .post(app.url("/auth/login"))
        .json(&json!({"username_or_email": "dora", "password": d.password}))
        .send()
        .await
        .unwrap();
    let wrong = app
        .client
        .post(app.url("/auth/login"))
        .json(&json!({"username_or_email": "dora", "password": "wrong-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (right.status().as_u16(), wrong.status().as_u16()),
        (401, 401)
    );
    assert_eq!(right.text().await.unwrap(), wrong.text().await.unwrap());
    app.stop().await;
}

async fn a_stalled_body_is_answered_408_and_refunded(db: Db) {
    let app = spawn_app_with(Options {
        db,
        server: "client_body_timeout_secs = 1\n".into(),
        routes: format!(
            "{TEST_ROUTES}\n[[plan]]\nname = \"free\"\nprice = \"0.00\"\ndefault = true\n[plan.quotas]\napi_calls_full_process = 10\n"
        ),
        ..Options::default()
    })
    .await;
    let a = app.signup("trickle").await;
    let used = || async { app.quota(&a, "api_calls_full_process").await.used };
    assert_eq!(used().await, 0);
    // The head and ten of a hundred declared bytes, then nothing.
    let request = format!(
        "POST /process/p/20250101 HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 100\r\n\r\n0123456789",
        a.access
    );
    let reply = crate::common::raw_exchange(app.addr, request.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("stalled"), "{reply}");
    let mut tries = 0;
    while used().await != 0 {
        tries += 1;
        assert!(tries < 50, "the charge of a stalled body is refunded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

async fn a_taken_value_is_named_not_quoted_from_the_database(db: Db) {
    let app = spawn_app_with(Options {
        db,
        shipped: true,
        routes: String::new(),
        ..Options::default()
    })
    .await;
    let root = app.admin_bearer().await;
    let pro = app.plan_id("专业版").await;
    let resp = app
        .with_authorization(&root)
        .put(&format!("/plans/{pro}"))
        .json(&json!({"name": "免费版"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let detail = resp.json::<Value>().await.unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains("`name` is already taken"), "{detail}");
    assert!(
        !detail.contains("UNIQUE") && !detail.contains("duplicate key"),
        "{detail}"
    );
    app.stop().await;
}

/// A SQLite file locked by another writer (a backup, another process): metered requests and
/// logins answer 503 with `Retry-After`, not 500; `/readyz` says not ready; and once the lock
/// is gone everything works again without a restart.
#[tokio::test]
async fn a_locked_database_answers_503_and_recovers() {
    let app = spawn_app_with(Options {
        routes: format!(
            "{TEST_ROUTES}\n[[plan]]\nname = \"free\"\nprice = \"0.00\"\ndefault = true\n[plan.quotas]\napi_calls_full_process = 10\n"
        ),
        ..Options::default()
    })
    .await;
    let a = app.signup("locked").await;
    let process = || app.as_user(&a).post("/process/p/20250101").send();
    assert_eq!(process().await.unwrap().status(), 200);
    // Another writer takes the file's write lock and keeps it.
    use sqlx::Connection;
    let url = format!("sqlite://{}/gate.db", app.dir.path().display());
    let mut other = sqlx::AnyConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();

    let resp = process().await.unwrap();
    assert_eq!(resp.status(), 503, "a charge cannot be written");
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    let (status, _) = login_from(&app, "10.0.0.1", "locked", &a.password).await;
    assert_eq!(status, 503, "a sign-in cannot be counted");
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "not_ready", "{ready}");

    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    drop(other);
    assert_eq!(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(process().await.unwrap().status(), 200);
    assert_eq!(
        login_from(&app, "10.0.0.1", "locked", &a.password).await.0,
        200
    );
    app.stop().await;
}

/// RFC 9112 §3.2: exactly one Host on HTTP/1.1.
#[tokio::test]
async fn a_request_without_exactly_one_host_is_400() {
    let app = spawn_app_with(Options::default()).await;
    for (request, want) in [
        (
            "GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "HTTP/1.1 400",
        ),
        (
            "GET /x HTTP/1.1\r\nConnection: close\r\n\r\n",
            "HTTP/1.1 400",
        ),
        ("GET /x HTTP/1.0\r\n\r\n", "HTTP/1.0 200"),
        (
            "GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            "HTTP/1.1 200",
        ),
    ] {
        let reply = crate::common::raw_exchange(app.addr, request.as_bytes()).await;
        assert!(reply.starts_with(want), "{request:?}: {reply}");
    }
    let backend_saw = app.upstream.seen().len();
    assert_eq!(
        backend_saw, 2,
        "only the requests with one Host (or HTTP/1.0) reach the backend"
    );
    app.stop().await;
}

/// Two gates on one PostgreSQL share the throttle: guesses spread over both meet one limit.
#[tokio::test]
async fn throttles_hold_across_two_replicas() {
    let url = crate::common::pg::fresh_database().await;
    let a = app_on(
        Db::Postgres,
        "[auth]\nlogin_max_failures = 4\n",
        Some(url.clone()),
    )
    .await;
    let b = app_on(Db::Postgres, "[auth]\nlogin_max_failures = 4\n", Some(url)).await;
    let bob = a.signup("bob").await;
    for (i, gate) in [&a, &b, &a, &b].into_iter().enumerate() {
        assert_eq!(
            login_from(gate, "10.0.0.1", "bob", "wrong-password")
                .await
                .0,
            401,
            "guess {i}"
        );
    }
    assert_eq!(
        login_from(&a, "10.0.0.1", "bob", &bob.password).await.0,
        429
    );
    assert_eq!(
        login_from(&b, "10.0.0.1", "bob", &bob.password).await.0,
        429
    );
    a.stop().await;
    b.stop().await;
}

on_both!(
    a_burst_of_wrong_passwords_is_checked_at_most_the_limit,
    the_owner_gets_in_from_another_address,
    the_account_ceiling_slows_and_does_not_lock,
    usernames_are_unique_whatever_their_case,
    a_burst_of_wrong_codes_is_checked_at_most_the_limit,
    api_keys_cannot_manage_credentials,
    a_refresh_token_two_generations_old_revokes_the_family,
    a_disabled_account_answers_like_a_wrong_password,
    a_stalled_body_is_answered_408_and_refunded,
    a_taken_value_is_named_not_quoted_from_the_database,
);
