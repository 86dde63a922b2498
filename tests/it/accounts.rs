//! Accounts and credentials, on SQLite and PostgreSQL: registration, login, tokens, refresh
//! rotation, API keys, and authentication of proxied routes.

use crate::common::{Db, Options, TEST_ROUTES, TestApp, smtp::Smtp, spawn_app_with};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::time::Duration;

const BACKEND_SECRET: &str = "backend-secret-0123456789abcdef0123456789";

/// Routes for these tests: a user route, an image route accepting ?token=, an admin route.
fn routes(auth: &str) -> String {
    format!(
        "{auth}\n{TEST_ROUTES}\n\
         [[route]]\npath = \"/mine/{{*rest}}\"\naccess = \"user\"\n\
         [[route]]\npath = \"/get_image/{{p}}/{{d}}/{{f}}\"\nmethods = [\"GET\"]\naccess = \"user\"\nquery_token = true\n\
         [[route]]\npath = \"/ops/{{*rest}}\"\naccess = \"admin\"\n"
    )
}

async fn app(db: Db, auth: &str) -> TestApp {
    spawn_app_with(Options {
        db,
        routes: routes(auth),
        env: vec![("GATE_BACKEND_JWT_SECRET".into(), BACKEND_SECRET.into())],
        ..Options::default()
    })
    .await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn detail(resp: reqwest::Response) -> String {
    let v: Value = resp.json().await.unwrap();
    v["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("detail is a string: {v}"))
        .to_string()
}

/// A registration answers 201 with the account as the frontends read it (address folded to
/// lower case, no password hash), even with a verification code the gate does not need.
async fn registration_answers_the_account(db: Db) {
    let app = app(db, "").await;
    let resp = app
        .client
        .post(app.url("/auth/register"))
        .json(&json!({"email": "Alice@Example.com", "username": "alice", "password": "password-1", "verification_code": "123456"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        201,
        "a present but unneeded code does not fail registration"
    );
    let user: Value = resp.json().await.unwrap();
    assert_eq!(user["email"], "alice@example.com");
    assert_eq!(
        (user["is_active"].as_bool(), user["is_superuser"].as_bool()),
        (Some(true), Some(false))
    );
    assert!(uuid::Uuid::parse_str(user["id"].as_str().unwrap()).is_ok());
    assert!(user["created_at"].as_str().unwrap().contains('T'));
    assert!(user.get("hashed_password").is_none());

    app.stop().await;
}

/// An account logs in by its username or by its address in any case, and the token is its own.
async fn login_by_username_or_any_case_email(db: Db) {
    let app = app(db, "").await;
    let alice = app.signup("alice").await;
    let by_name = app.login("alice", &alice.password).await;
    assert_eq!(by_name["token_type"], "bearer");
    let by_email = app.login("ALICE@example.com", &alice.password).await;
    let me = app
        .with_token(by_email["access_token"].as_str().unwrap())
        .get_json("/users/me", 200)
        .await;
    assert_eq!(me["id"], alice.id.as_str());
    app.stop().await;
}

/// Bad registrations get a clear 4xx with a string detail (a taken address or name, a short
/// password, a bad address or name, a missing field, broken or huge JSON), and none leaves an
/// account behind.
async fn bad_registrations_are_refused_and_leave_nothing(db: Db) {
    let app = app(db, "").await;
    app.signup("alice").await;
    // Bad input: clear 4xx with a string detail, nothing stored.
    let cases = [
        (
            json!({"email": "ALICE@example.com", "username": "other", "password": "password-1"}),
            409,
            "邮箱",
        ),
        (
            json!({"email": "new@example.com", "username": "alice", "password": "password-1"}),
            409,
            "用户名",
        ),
        (
            json!({"email": "new@example.com", "username": "newbie", "password": "short"}),
            422,
            "8",
        ),
        (
            json!({"email": "not-an-email", "username": "newbie", "password": "password-1"}),
            422,
            "email",
        ),
        (
            json!({"email": "new@example.com", "username": "ab", "password": "password-1"}),
            422,
            "3",
        ),
        (
            json!({"email": "new@example.com", "password": "password-1"}),
            422,
            "username",
        ),
    ];
    for (body, status, needle) in cases {
        let resp = app
            .client
            .post(app.url("/auth/register/"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{body}");
        let d = detail(resp).await;
        assert!(d.contains(needle), "{body}: {d}");
    }
    let resp = app
        .client
        .post(app.url("/auth/register"))
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    assert!(detail(resp).await.contains("JSON"));
    let huge = format!("{{\"email\": \"{}\"}}", "a".repeat(200_000));
    let resp = app
        .client
        .post(app.url("/auth/register"))
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let resp = app
        .client
        .post(app.url("/auth/login"))
        .json(&json!({"username_or_email": "newbie", "password": "password-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        401,
        "no failed registration left an account behind"
    );
    app.stop().await;
}

async fn wrong_credentials_and_throttling(db: Db) {
    let app = app(db, "[auth]\nlogin_max_failures = 3\n").await;
    app.signup("bob").await;
    for login in ["bob", "bob@example.com", "nobody", "nobody@example.com"] {
        let resp = app
            .client
            .post(app.url("/auth/login"))
            .json(&json!({"username_or_email": login, "password": "wrong-password"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{login}");
        assert_eq!(
            detail(resp).await,
            detail_of_wrong_login(),
            "the same answer whether or not the account exists"
        );
    }
    // bob has failed twice (by name and by email: one account, one count): one more, then the
    // door closes.
    let attempt = |password: &'static str| {
        app.client
            .post(app.url("/auth/login"))
            .json(&json!({"username_or_email": "bob", "password": password}))
            .send()
    };
    assert_eq!(attempt("wrong-again").await.unwrap().status(), 401);
    let resp = attempt("password-bob").await.unwrap();
    assert_eq!(
        resp.status(),
        429,
        "even the right password waits out the window"
    );
    assert!(
        resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    app.stop().await;
}

fn detail_of_wrong_login() -> String {
    "用户名或密码错误: wrong username/email or password".into()
}

/// Signs claims with `secret` (HS256) as a forger would.
fn forge(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

async fn bad_tokens_are_refused(db: Db) {
    let app = app(db, "").await;
    let acct = app.signup("carol").await;
    let secret = app.jwt_secret();
    let now = chrono::Utc::now().timestamp();
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let good_claims =
        json!({"sub": acct.id, "type": "access", "exp": now + 600, "iat": now, "jti": "x"});
    let mut tampered = acct.access.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let payload_swapped = {
        let parts: Vec<&str> = acct.access.split('.').collect();
        let other = b64(&json!({"sub": "someone-else", "type": "access", "exp": now + 600}));
        format!("{}.{}.{}", parts[0], other, parts[2])
    };
    let tokens = [
        (
            "expired",
            forge(
                &secret,
                json!({"sub": acct.id, "type": "access", "exp": now - 120, "iat": now - 900}),
            ),
        ),
        (
            "no exp",
            forge(&secret, json!({"sub": acct.id, "type": "access"})),
        ),
        ("refresh as access", acct.refresh.clone()),
        (
            "wrong secret",
            forge("some-other-secret-some-other-secret", good_claims.clone()),
        ),
        ("tampered signature", tampered),
        ("swapped payload", payload_swapped),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                b64(&good_claims)
            ),
        ),
        (
            "alg HS512",
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS512),
                &good_claims,
                &EncodingKey::from_secret(secret.as_bytes()),
            )
            .unwrap(),
        ),
        ("garbage", "not.a.jwt".to_string()),
    ];
    for (what, token) in tokens {
        for path in ["/users/me", "/mine/data"] {
            let resp = app.with_token(&token).get(path).send().await.unwrap();
            assert_eq!(resp.status(), 401, "{what} on {path}");
            assert_eq!(resp.headers()["www-authenticate"], "Bearer");
            assert!(!detail(resp).await.is_empty());
        }
    }
    // The well-formed one, for contrast.
    let ok = forge(&secret, good_claims);
    assert_eq!(
        app.with_token(&ok)
            .get("/users/me")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(app.upstream.seen().is_empty());
    app.stop().await;
}

async fn refresh_in_three_styles_with_rotation(db: Db) {
    let app = app(db, "[auth]\nrefresh_reuse_grace_secs = 1\n").await;
    let acct = app.signup("dave").await;
    let post = |url: String| app.client.post(url);

    // CTAI_web main: JSON body, with the (stale) access token as Bearer.
    let resp = post(app.url("/auth/refresh"))
        .header("authorization", bearer(&acct.access))
        .json(&json!({"refresh_token": acct.refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let p1: Value = resp.json().await.unwrap();
    // CTAI_web platform: query parameter.
    let r1 = p1["refresh_token"].as_str().unwrap();
    let resp = post(app.url(&format!("/auth/refresh?refresh_token={r1}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let p2: Value = resp.json().await.unwrap();
    // Commercial UI: empty JSON body, refresh token as Bearer.
    let r2 = p2["refresh_token"].as_str().unwrap().to_string();
    let resp = post(app.url("/auth/refresh/"))
        .header("authorization", bearer(&r2))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let p3: Value = resp.json().await.unwrap();
    let access3 = p3["access_token"].as_str().unwrap();
    assert_eq!(
        app.with_token(access3)
            .get("/users/me")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Two refreshes at once with the same token (page load): both succeed within the grace.
    let r3 = p3["refresh_token"].as_str().unwrap().to_string();
    let (a, b) = tokio::join!(
        post(app.url(&format!("/auth/refresh?refresh_token={r3}"))).send(),
        post(app.url(&format!("/auth/refresh?refresh_token={r3}"))).send()
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let p4: Value = a.json().await.unwrap();
    let r4 = p4["refresh_token"].as_str().unwrap().to_string();

    // Reuse of an old token outside the grace: 401, and the whole family is revoked.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let resp = post(app.url("/auth/refresh"))
        .json(&json!({"refresh_token": r1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(detail(resp).await.contains("already used"));
    let resp = post(app.url("/auth/refresh"))
        .json(&json!({"refresh_token": r4}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        401,
        "the newest token of the family is revoked too"
    );

    // Missing token: 401; an access token is not a refresh token.
    assert_eq!(
        post(app.url("/auth/refresh"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let fresh = app.login("dave", "password-dave").await;
    let resp = post(app.url("/auth/refresh"))
        .json(&json!({"refresh_token": fresh["access_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // Logout revokes the family of the given refresh token.
    let rf = fresh["refresh_token"].as_str().unwrap();
    let resp = post(app.url("/auth/logout"))
        .json(&json!({"refresh_token": rf}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = post(app.url("/auth/refresh"))
        .json(&json!({"refresh_token": rf}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    app.stop().await;
}

async fn password_change_needs_the_current_one(db: Db) {
    let app = app(db, "").await;
    let acct = app.signup("erin").await;
    let put = |body: Value| {
        app.with_token(&acct.access)
            .put("/users/me")
            .json(&body)
            .send()
    };
    assert_eq!(
        put(json!({"password": "new-password-1"}))
            .await
            .unwrap()
            .status(),
        403,
        "the current password is asked for"
    );
    assert_eq!(
        put(json!({"password": "new-password-1", "current_password": "nope-nope"}))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        put(json!({"password": "short", "current_password": acct.password}))
            .await
            .unwrap()
            .status(),
        422
    );
    let resp = put(json!({"password": "new-password-1", "current_password": acct.password, "username": "erin2"})).await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["username"], "erin2");
    // Sessions were signed out; the old password no longer works, the new one does.
    let resp = app
        .client
        .post(app.url("/auth/refresh"))
        .json(&json!({"refresh_token": acct.refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = app
        .client
        .post(app.url("/auth/login"))
        .json(&json!({"username_or_email": "erin2", "password": acct.password}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    app.login("erin2", "new-password-1").await;
    // Taking another user's name is a conflict.
    app.signup("frank").await;
    assert_eq!(
        put(json!({"username": "frank"})).await.unwrap().status(),
        409
    );
    app.stop().await;
}

/// A key is shown once, when it is made (its prefix stays for recognising it), and never in
/// the list, with or without the trailing slash.
async fn an_api_key_is_shown_once_and_never_listed(db: Db) {
    let app = app(db, "").await;
    let acct = app.signup("gina").await;
    let created = app
        .as_user(&acct)
        .create_api_key(json!({"name": "script", "expires_at": "2099-12-31T23:59"}))
        .await;
    let key = created["key"].as_str().unwrap();
    assert!(key.starts_with("sk_live_") && key.len() == 51);
    assert_eq!(created["key_prefix"], format!("{}...", &key[..12]));
    assert_eq!(created["expires_at"], "2099-12-31T23:59:00.000000");
    for path in ["/api-keys", "/api-keys/"] {
        let list = app.as_user(&acct).get_json(path, 200).await;
        assert_eq!(list.as_array().unwrap().len(), 1);
        assert!(list[0].get("key").is_none() && !list.to_string().contains(&key[12..]));
    }
    app.stop().await;
}

/// A key authenticates as `X-API-Key` and as a bearer token, on the gate's API and on proxied
/// routes (where the backend gets the account, never the key), and its use is recorded.
async fn an_api_key_authenticates_as_its_owner(db: Db) {
    let app = app(db, "").await;
    let acct = app.signup("gina").await;
    let created = app
        .as_user(&acct)
        .create_api_key(json!({"name": "script"}))
        .await;
    let key = created["key"].as_str().unwrap();
    let me = app.with_key(key).get_json("/users/me", 200).await;
    assert_eq!(me["id"], acct.id.as_str());
    assert_eq!(app.with_token(key).get_status("/mine/x").await, 200);
    let seen = app.upstream.seen();
    let last = seen.last().unwrap();
    assert_eq!(last.headers["x-user-id"], acct.id.as_str());
    assert!(
        !format!("{:?}", last.headers).contains(key),
        "the key never reaches the backend"
    );
    // last_used_at is recorded without a write per request.
    app.services().auth().flush_key_uses().await;
    let list = app.as_user(&acct).get_json("/api-keys/", 200).await;
    assert!(list[0]["last_used_at"].is_string());
    app.stop().await;
}

/// A deactivated key is refused on the very next request, a deleted one too; only its owner
/// can do either (anyone else is told there is no such key).
async fn a_deactivated_or_deleted_key_is_refused_at_once(db: Db) {
    let app = app(db, "").await;
    let acct = app.signup("gina").await;
    let other = app.signup("hank").await;
    let k1 = app
        .as_user(&acct)
        .create_api_key(json!({"name": "k1"}))
        .await;
    let k2 = app
        .as_user(&acct)
        .create_api_key(json!({"name": "k2"}))
        .await;
    let (key1, key2) = (k1["key"].as_str().unwrap(), k2["key"].as_str().unwrap());
    for k in [&k1, &k2] {
        let path = format!("/api-keys/{}", k["id"].as_str().unwrap());
        let resp = app.as_user(&other).delete(&path).send().await.unwrap();
        assert_eq!(resp.status(), 404, "another account's key");
    }
    assert_eq!(app.with_key(key1).get_status("/mine/x").await, 200);
    let resp = app
        .as_user(&acct)
        .patch(&format!(
            "/api-keys/{}/deactivate",
            k1["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["is_active"], false);
    assert_eq!(app.with_key(key1).get_status("/mine/x").await, 401);

    assert_eq!(app.with_key(key2).get_status("/mine/x").await, 200);
    let resp = app
        .as_user(&acct)
        .delete(&format!("/api-keys/{}", k2["id"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(app.with_key(key2).get_status("/mine/x").await, 401);
    app.stop().await;
}

/// A key stops at its expiry; one made with a past expiry is refused (409), an unreadable
/// expiry too (422).
async fn an_api_key_expires_when_it_says(db: Db) {
    let app = app(db, "").await;
    let acct = app.signup("gina").await;
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let k = app
        .as_user(&acct)
        .create_api_key(json!({"name": "short", "expires_at": soon}))
        .await;
    let key = k["key"].as_str().unwrap();
    assert_eq!(app.with_key(key).get_status("/mine/x").await, 200);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let resp = app.with_key(key).get("/mine/x").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(detail(resp).await.contains("expired"));
    for (bad, status) in [("2001-01-01T00:00", 409), ("whenever", 422)] {
        let resp = app
            .as_user(&acct)
            .post("/api-keys/")
            .json(&json!({"name": "x", "expires_at": bad}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{bad}");
    }
    app.stop().await;
}

/// A made-up key of the right shape is refused, and so is a key sent with a different token:
/// two credentials say nobody in particular.
async fn a_made_up_key_or_two_credentials_are_refused(db: Db) {
    let app = app(db, "").await;
    let acct = app.signup("gina").await;
    let fake = format!("sk_live_{}", "A".repeat(43));
    assert_eq!(app.with_key(&fake).get_status("/mine/x").await, 401);
    let resp = app
        .as_user(&acct)
        .get("/mine/x")
        .header("x-api-key", &fake)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        401,
        "two credentials say nobody in particular"
    );
    app.stop().await;
}

async fn proxied_routes_carry_the_identity_the_backend_expects(db: Db) {
    let app = app(db, "").await;
    let acct = app.signup("ivy").await;
    let resp = app
        .with_token(&acct.access)
        .get("/mine/result?x=1")
        .header("x-user-id", "spoofed")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = app.upstream.seen();
    let h = &seen.last().unwrap().headers;
    assert_eq!(h["x-user-id"], acct.id.as_str());
    assert_eq!(h["x-user-email"], "ivy@example.com");
    let minted = h["authorization"]
        .to_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap();
    assert_ne!(minted, acct.access, "the client's token is not passed on");
    let mut v = jsonwebtoken::Validation::new(Algorithm::HS256);
    v.set_required_spec_claims(&["exp", "sub"]);
    let claims = jsonwebtoken::decode::<Value>(
        minted,
        &jsonwebtoken::DecodingKey::from_secret(BACKEND_SECRET.as_bytes()),
        &v,
    )
    .expect("signed with the backend's JWT_SECRET_KEY")
    .claims;
    assert_eq!(claims["sub"], acct.id.as_str());
    assert_eq!(claims["type"], "access");
    assert_eq!(claims["email"], "ivy@example.com");
    let lifetime = claims["exp"].as_i64().unwrap() - chrono::Utc::now().timestamp();
    assert!((1..=300).contains(&lifetime), "short-lived: {lifetime}");

    // ?token= on an image route: accepted and removed; elsewhere ignored (401).
    let resp = app
        .client
        .get(app.url(&format!(
            "/get_image/p/d/slice.png?t=1&token={}&t=2",
            acct.access
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        app.upstream.seen().last().unwrap().path_and_query,
        "/get_image/p/d/slice.png?t=1&t=2"
    );
    let resp = app
        .client
        .get(app.url(&format!("/mine/x?token={}", acct.access)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // Admin routes need a superuser.
    let resp = app
        .with_token(&acct.access)
        .get("/ops/stats")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    // A disabled user is refused at once (403), with the token still unexpired.
    app.services()
        .auth()
        .set_active(&acct.id, false)
        .await
        .unwrap();
    let resp = app
        .with_token(&acct.access)
        .get("/mine/x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = app
        .client
        .post(app.url("/auth/login"))
        .json(&json!({"username_or_email": "ivy", "password": acct.password}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        401,
        "a disabled account answers as a wrong password does"
    );
    app.services()
        .auth()
        .set_active(&acct.id, true)
        .await
        .unwrap();
    let resp = app
        .with_token(&acct.access)
        .get("/mine/x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    app.stop().await;
}

async fn superusers_manage_users(db: Db) {
    let app = app(db, "").await;
    let admin = app
        .services()
        .auth()
        .create_admin("root@example.com", "root", "root-password")
        .await
        .unwrap();
    let tokens = app.login("root", "root-password").await;
    let admin_auth = bearer(tokens["access_token"].as_str().unwrap());
    let user = app.signup("jack").await;

    let resp = app
        .with_authorization(&admin_auth)
        .get(&format!("/users/{}", user.id))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = app
        .with_token(&user.access)
        .get(&format!("/users/{}", admin.id))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = app
        .with_authorization(&admin_auth)
        .get("/users/no-such-id")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = app
        .with_authorization(&admin_auth)
        .delete(&format!("/users/{}", admin.id))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let resp = app
        .with_authorization(&admin_auth)
        .get("/ops/x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "superusers pass admin routes");

    let resp = app
        .with_authorization(&admin_auth)
        .delete(&format!("/users/{}", user.id))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let resp = app
        .with_token(&user.access)
        .get("/users/me")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "a deleted user's token dies at once");
    app.stop().await;
}

async fn email_verification_when_required(db: Db) {
    let smtp = Smtp::start().await;
    let app = app(
        db,
        &format!(
            "[auth]\nrequire_email_verification = true\nverification_code_attempts = 3\n\
             [smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom_email = \"noreply@idoctor.test\"\n",
            smtp.port
        ),
    )
    .await;
    let send = |email: &'static str| {
        app.client
            .post(app.url("/auth/send-verification-code"))
            .json(&json!({"email": email}))
            .send()
    };
    let register = |code: Option<&str>| {
        let mut body =
            json!({"email": "kim@example.com", "username": "kim", "password": "password-kim"});
        if let Some(c) = code {
            body["verification_code"] = json!(c);
        }
        app.client
            .post(app.url("/auth/register"))
            .json(&body)
            .send()
    };
    let resp = send("Kim@Example.com").await.unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let code = smtp
        .last_code_for("kim@example.com")
        .expect("a mail with a code");
    assert_eq!(code.len(), 6);
    // Resending at once is throttled.
    assert_eq!(send("kim@example.com").await.unwrap().status(), 429);
    // No code, then a wrong one: 422.
    assert_eq!(register(None).await.unwrap().status(), 422);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    assert_eq!(register(Some(wrong)).await.unwrap().status(), 422);
    // The right code registers (the commercial UI's flow: no /verify-email call).
    let resp = register(Some(&code)).await.unwrap();
    assert_eq!(resp.status(), 201);
    app.login("kim@example.com", "password-kim").await;

    // The other flow: /verify-email first; wrong codes are limited.
    assert_eq!(send("lee@example.com").await.unwrap().status(), 200);
    let code = smtp.last_code_for("lee@example.com").unwrap();
    let verify = |c: String| {
        app.client
            .post(app.url("/auth/verify-email"))
            .json(&json!({"email": "lee@example.com", "code": c}))
            .send()
    };
    let wrong = if code == "000000" { "111111" } else { "000000" };
    assert_eq!(verify(wrong.into()).await.unwrap().status(), 403);
    assert_eq!(verify("12ab".into()).await.unwrap().status(), 422);
    assert_eq!(verify(code.clone()).await.unwrap().status(), 200);
    let resp = app
        .client
        .post(app.url("/auth/register"))
        .json(&json!({"email": "lee@example.com", "username": "lee", "password": "password-lee"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    // A registered address gets no new code.
    assert_eq!(send("lee@example.com").await.unwrap().status(), 409);

    // Brute force stops after the attempt limit, even with the right code.
    assert_eq!(send("max@example.com").await.unwrap().status(), 200);
    let code = smtp.last_code_for("max@example.com").unwrap();
    let verify = |c: String| {
        app.client
            .post(app.url("/auth/verify-email"))
            .json(&json!({"email": "max@example.com", "code": c}))
            .send()
    };
    for guess in ["000001", "000002", "000003"] {
        if guess != code {
            assert_eq!(verify(guess.into()).await.unwrap().status(), 403);
        }
    }
    assert_eq!(verify(code).await.unwrap().status(), 429);
    app.stop().await;
}

/// A forgotten password is reset with a code mailed to the account's address: the answer to
/// the request does not tell whether an account has the address, the code is hashed, used
/// once and attempt-limited, and the reset signs every session out and retires the old
/// password.
async fn a_forgotten_password_is_reset_with_an_emailed_code(db: Db) {
    let smtp = Smtp::start().await;
    let app = app(
        db,
        &format!(
            "[auth]\nverification_code_attempts = 3\n\
             [smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom_email = \"noreply@idoctor.test\"\n",
            smtp.port
        ),
    )
    .await;
    let alice = app.signup("alice").await;
    let bob = app.signup("bob").await;
    let forgot = |email: &str| {
        app.client
            .post(app.url("/auth/forgot-password"))
            .json(&json!({"email": email}))
            .send()
    };
    let reset = |email: &str, code: &str, password: &str| {
        app.client
            .post(app.url("/auth/reset-password"))
            .json(&json!({"email": email, "code": code, "new_password": password}))
            .send()
    };
    let mailed_code = |to: &'static str| {
        let smtp = &smtp;
        async move {
            for _ in 0..200 {
                if let Some(code) = smtp.last_code_for(to) {
                    return code;
                }
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            panic!("no reset mail to {to}");
        }
    };

    let nobody = forgot("nobody@example.com").await.unwrap();
    assert_eq!(nobody.status(), 202);
    let nobody = nobody.text().await.unwrap();
    let someone = forgot("ALICE@example.com").await.unwrap();
    assert_eq!(someone.status(), 202);
    assert_eq!(
        someone.text().await.unwrap(),
        nobody,
        "the same answer whether or not the address has an account"
    );
    let code = mailed_code("alice@example.com").await;
    assert_eq!(forgot("alice@example.com").await.unwrap().status(), 202);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let to_alice = |smtp: &Smtp| {
        smtp.messages()
            .iter()
            .filter(|m| m.contains("alice@example.com"))
            .count()
    };
    assert_eq!(to_alice(&smtp), 1, "one mail a minute");
    assert!(
        !smtp
            .messages()
            .iter()
            .any(|m| m.contains("nobody@example.com")),
        "no mail to an address without an account"
    );
    let text = smtp.last_text_for("alice@example.com").unwrap();
    assert!(
        text.contains("password reset code"),
        "the mail says what the code is for: {text}"
    );

    let wrong = if code == "000000" { "111111" } else { "000000" };
    let resp = reset("alice@example.com", wrong, "a-new-password")
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(
        reset("alice@example.com", "12ab", "a-new-password")
            .await
            .unwrap()
            .status(),
        422
    );
    assert_eq!(
        reset("alice@example.com", &code, "short")
            .await
            .unwrap()
            .status(),
        422,
        "the new password follows the same rules"
    );
    let resp = reset("Alice@Example.com", &code, "a-new-password")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());

    let old = app
        .client
        .post(app.url("/auth/login"))
        .json(&json!({"username_or_email": "alice", "password": alice.password}))
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 401, "the old password is retired");
    app.login("alice", "a-new-password").await;
    let refreshed = app
        .client
        .post(app.url("/auth/refresh"))
        .json(&json!({"refresh_token": alice.refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        refreshed.status(),
        401,
        "every earlier session is signed out"
    );
    assert_eq!(
        reset("alice@example.com", &code, "another-password")
            .await
            .unwrap()
            .status(),
        403,
        "a code is used once"
    );

    // Wrong guesses are counted: after three, even the right code is refused, with the same
    // answer an address without an account gets (a 429 would tell who is registered). A new
    // code the next minute brings no new guesses.
    assert_eq!(forgot(&bob.email).await.unwrap().status(), 202);
    let code = mailed_code("bob@example.com").await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..3 {
        let resp = reset(&bob.email, wrong, "bobs-new-password").await.unwrap();
        assert_eq!(resp.status(), 403);
    }
    let resp = reset(&bob.email, &code, "bobs-new-password").await.unwrap();
    assert_eq!(resp.status(), 403);
    let unknown = reset("nobody@example.com", &code, "bobs-new-password")
        .await
        .unwrap();
    assert_eq!(
        (unknown.status().as_u16(), unknown.text().await.unwrap()),
        (403, resp.text().await.unwrap())
    );
    app.age_codes("bob@example.com", 120_000).await;
    let before = smtp.messages().len();
    assert_eq!(forgot(&bob.email).await.unwrap().status(), 202);
    let mut code = String::new();
    for _ in 0..200 {
        if smtp.messages().len() > before {
            code = smtp.last_code_for("bob@example.com").unwrap();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(code.len(), 6, "a second code a minute later");
    let resp = reset(&bob.email, &code, "bobs-new-password").await.unwrap();
    assert_eq!(resp.status(), 403, "the day's guesses are used up");
    app.login(&bob.email, &bob.password).await;
    app.stop().await;
}

on_both!(
    registration_answers_the_account,
    login_by_username_or_any_case_email,
    bad_registrations_are_refused_and_leave_nothing,
    wrong_credentials_and_throttling,
    bad_tokens_are_refused,
    refresh_in_three_styles_with_rotation,
    password_change_needs_the_current_one,
    an_api_key_is_shown_once_and_never_listed,
    an_api_key_authenticates_as_its_owner,
    a_deactivated_or_deleted_key_is_refused_at_once,
    an_api_key_expires_when_it_says,
    a_made_up_key_or_two_credentials_are_refused,
    proxied_routes_carry_the_identity_the_backend_expects,
    superusers_manage_users,
    email_verification_when_required,
    a_forgotten_password_is_reset_with_an_emailed_code,
);

/// Two gate processes on one PostgreSQL: a key revoked or a user disabled on one stops working
/// on the other within about a second (LISTEN/NOTIFY), although both had it cached.
#[tokio::test]
async fn revocation_reaches_the_other_replica() {
    let db_url = crate::common::pg::fresh_database().await;
    let a = spawn_app_with(Options {
        db: Db::Postgres,
        database_url: Some(db_url.clone()),
        routes: routes(""),
        ..Options::default()
    })
    .await;
    // Both replicas share the secrets, as a deployment would.
    let secret = a.jwt_secret();
    let pepper = std::fs::read_to_string(a.dir.path().join("api_key_pepper")).unwrap();
    let env = vec![
        ("GATE_JWT_SECRET".to_string(), secret),
        ("GATE_API_KEY_PEPPER".to_string(), pepper),
    ];
    let a = {
        a.stop().await;
        spawn_app_with(Options {
            db: Db::Postgres,
            database_url: Some(db_url.clone()),
            routes: routes(""),
            env: env.clone(),
            ..Options::default()
        })
        .await
    };
    // Replica B: another gate process (the binary), on the same database and secrets.
    let b_dir = tempfile::tempdir().unwrap();
    let b_port = crate::common::dead_port();
    let b_config = b_dir.path().join("gate.toml");
    std::fs::write(
        &b_config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{b_port}\"\ndata_dir = \"{}\"\n[upstream]\nurl = \"{}\"\n[database]\nurl = \"{db_url}\"\n{}",
            b_dir.path().display(),
            a.upstream.url(),
            routes("")
        ),
    )
    .unwrap();
    let mut b_process = std::process::Command::new(env!("CARGO_BIN_EXE_idoctor-gate"))
        .args(["serve", "--config"])
        .arg(&b_config)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let b = Replica {
        base: format!("http://127.0.0.1:{b_port}"),
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
    };
    let started = std::time::Instant::now();
    while b
        .client
        .get(format!("{}/healthz", b.base))
        .send()
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "replica B did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let acct = a.signup("nina").await;
    let created: Value = a
        .with_token(&acct.access)
        .create_api_key(json!({"name": "k"}))
        .await;
    let key = created["key"].as_str().unwrap().to_string();
    // Warm both caches.
    let a_replica = Replica {
        base: format!("http://{}", a.addr),
        client: a.client.clone(),
    };
    for app in [&a_replica, &b] {
        assert_eq!(
            app.client
                .get(app.url("/mine/x"))
                .header("x-api-key", &key)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            app.get_as(&acct.access, "/mine/x")
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let resp = a
        .with_token(&acct.access)
        .delete(&format!("/api-keys/{}", created["id"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(
        a.client
            .get(a.url("/mine/x"))
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    wait_for_status(&b, &key, true, 401).await;

    a.services()
        .auth()
        .set_active(&acct.id, false)
        .await
        .unwrap();
    wait_for_status(&b, &acct.access, false, 403).await;
    a.stop().await;
    let _ = b_process.kill();
    let _ = b_process.wait();
}

/// A gate reached over HTTP (this process's or another's).
struct Replica {
    base: String,
    client: reqwest::Client,
}

impl Replica {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET `path` with this bearer token.
    fn get_as(&self, token: &str, path: &str) -> reqwest::RequestBuilder {
        self.client
            .get(self.url(path))
            .header("authorization", bearer(token))
    }
}

async fn wait_for_status(app: &Replica, credential: &str, is_key: bool, want: u16) {
    let started = std::time::Instant::now();
    loop {
        let req = if is_key {
            app.client
                .get(app.url("/mine/x"))
                .header("x-api-key", credential)
        } else {
            app.get_as(credential, "/mine/x")
        };
        let status = req.send().await.unwrap().status().as_u16();
        if status == want {
            assert!(
                started.elapsed() < Duration::from_millis(2500),
                "took {:?}",
                started.elapsed()
            );
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the other replica still answers {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn create_admin_command_makes_a_superuser() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gate.toml");
    std::fs::write(
        &config,
        format!("[server]\ndata_dir = \"{}\"\n", dir.path().display()),
    )
    .unwrap();
    let run = |password: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_idoctor-gate"))
            .args([
                "create-admin",
                "--email",
                "ops@example.com",
                "--username",
                "ops",
                "--config",
            ])
            .arg(&config)
            .env("GATE_ADMIN_PASSWORD", password)
            .output()
            .unwrap()
    };
    let out = run("short");
    assert_eq!(out.status.code(), Some(2), "a weak password is refused");
    let out = run("a-long-enough-password");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("superuser ops"));
    // Running it again promotes (and re-keys) the same account rather than failing.
    let out = run("another-long-password");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Production refuses a missing or weak JWT secret; development generates one and keeps it.
#[tokio::test]
async fn production_refuses_generated_or_weak_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nenvironment = \"production\"\ndata_dir = \"{d}\"\n[database]\nurl = \"sqlite://{d}/gate.db\"\n",
        d = dir.path().display()
    );
    let start = |vars: &[(&str, &str)]| {
        let config =
            idoctor_gate::config::Config::from_toml_str_with_env(&text, "prod.toml", vars).unwrap();
        idoctor_gate::server::start(config)
    };
    let strong = "0123456789abcdef0123456789abcdef0123456789abcdef";
    let err = start(&[("GATE_API_KEY_PEPPER", strong)])
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("GATE_JWT_SECRET"), "{err}");
    let err = start(&[
        ("GATE_JWT_SECRET", "change-this-secret-key-in-production"),
        ("GATE_API_KEY_PEPPER", strong),
    ])
    .await
    .err()
    .expect("refused");
    assert!(err.to_string().contains("too weak"), "{err}");
    let err = start(&[("GATE_JWT_SECRET", strong)])
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("GATE_API_KEY_PEPPER"), "{err}");
    assert!(
        !dir.path().join("jwt_secret").exists(),
        "production generates nothing"
    );
    let ok = start(&[("GATE_JWT_SECRET", strong), ("GATE_API_KEY_PEPPER", strong)])
        .await
        .expect("starts");
    let payments = ok.services().payments().clone();
    assert!(
        payments.methods().is_empty() && !payments.paid_on_sandbox("alipay"),
        "production: no sandbox, and no method without credentials: {:?}",
        payments.methods()
    );
    ok.shutdown();
    ok.stopped().await;

    // Development: generated once, kept (owner-only), and reused at the next start.
    let dev = crate::common::ConfigEdit::parse(&text)
        .set("server.environment", "development")
        .render();
    let config =
        idoctor_gate::config::Config::from_toml_str_with_env(&dev, "dev.toml", &[]).unwrap();
    let g = idoctor_gate::server::start(config.clone()).await.unwrap();
    g.shutdown();
    g.stopped().await;
    let secret = std::fs::read_to_string(dir.path().join("jwt_secret")).unwrap();
    assert!(secret.len() >= 32);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("jwt_secret"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "only the owner can read it");
    let g = idoctor_gate::server::start(config).await.unwrap();
    g.shutdown();
    g.stopped().await;
    assert_eq!(
        std::fs::read_to_string(dir.path().join("jwt_secret")).unwrap(),
        secret
    );
}
