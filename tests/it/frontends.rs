//! One origin: built frontends served from `[[static]]` mounts (types, cache rules,
//! compression, the history-mode fallback, no route hidden), the image cookie that lets
//! `main`'s CTAI_web show its images with no token in their URLs (accepted on image GETs only,
//! cleared by logout, stopped like any credential), on SQLite and PostgreSQL; and a real
//! browser loading an image through a mounted page.

use crate::common::{Account, ConfigEdit, Db, Options, TestApp, spawn_app_with};
use serde_json::json;
use std::path::Path;

const APP_JS: &str = "js/app.3f2a1b9c.js";
const IMAGE: &str = "/get_image/zhang/20250101/slice_001.png";

/// A built frontend: an index page, a hashed script large enough to compress, a style.
fn dist(dir: &Path, title: &str) {
    std::fs::create_dir_all(dir.join("js")).unwrap();
    std::fs::create_dir_all(dir.join("css")).unwrap();
    std::fs::write(
        dir.join("index.html"),
        format!("<!doctype html><html><head><title>{title}</title></head><body><div id=app></div><script src=/js/app.3f2a1b9c.js></script></body></html>"),
    )
    .unwrap();
    std::fs::write(
        dir.join(APP_JS),
        "console.log('hello, clinic');\n".repeat(200),
    )
    .unwrap();
    std::fs::write(dir.join("css/site.css"), "body { margin: 0 }\n").unwrap();
}

/// The shipped proxy.toml with CTAI_web's build at `/` (history mode) and the commercial UI's
/// at `/account/`; `edits` set more keys.
async fn gate(db: Db, edits: Vec<(&'static str, toml::Value)>) -> (TestApp, tempfile::TempDir) {
    let files = tempfile::tempdir().unwrap();
    dist(&files.path().join("ctai"), "CTAI");
    dist(&files.path().join("account"), "Account");
    let mounts = format!(
        "\n[[static]]\nat = \"/\"\ndir = \"{}\"\nfallback = \"index.html\"\n\n[[static]]\nat = \"/account/\"\ndir = \"{}\"\n",
        files.path().join("ctai").display(),
        files.path().join("account").display()
    );
    let app = spawn_app_with(Options {
        db,
        shipped: true,
        routes: mounts,
        edits,
        ..Options::default()
    })
    .await;
    (app, files)
}

async fn get(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = app.client.get(app.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Files are served with their types; a hashed file is immutable for a year, the index page
/// is revalidated every time, and an unchanged file answers 304.
async fn mounted_files_are_served_with_types_and_cache_rules(db: Db) {
    let (app, _files) = gate(db, Vec::new()).await;
    let index = get(&app, "/", &[]).await;
    assert_eq!(index.status(), 200);
    assert!(header(&index, "content-type").starts_with("text/html"));
    assert_eq!(header(&index, "cache-control"), "no-cache");
    let modified = header(&index, "last-modified");
    assert!(index.text().await.unwrap().contains("<title>CTAI</title>"));

    let script = get(&app, &format!("/{APP_JS}"), &[]).await;
    assert_eq!(script.status(), 200);
    assert!(header(&script, "content-type").contains("javascript"));
    assert_eq!(
        header(&script, "cache-control"),
        "public, max-age=31536000, immutable"
    );
    let style = get(&app, "/css/site.css", &[]).await;
    assert!(header(&style, "content-type").starts_with("text/css"));
    assert_eq!(header(&style, "cache-control"), "no-cache");

    let again = get(&app, "/index.html", &[("if-modified-since", &modified)]).await;
    assert_eq!(again.status(), 304);
    let account = get(&app, "/account/", &[]).await;
    assert!(
        account
            .text()
            .await
            .unwrap()
            .contains("<title>Account</title>")
    );
    let bare = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap()
        .get(app.url("/account?from=ctai"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        bare.status(),
        308,
        "a mount's path without its slash is sent to it"
    );
    assert_eq!(header(&bare, "location"), "/account/?from=ctai");
    app.stop().await;
}

/// A client that accepts brotli or gzip gets the file compressed, one that does not gets it
/// as it is.
async fn mounted_files_are_compressed_when_the_client_accepts_it(db: Db) {
    let (app, _files) = gate(db, Vec::new()).await;
    let path = format!("/{APP_JS}");
    for (accepts, encoding) in [("br", "br"), ("gzip", "gzip"), ("identity", "")] {
        let resp = get(&app, &path, &[("accept-encoding", accepts)]).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "content-encoding"), encoding, "{accepts}");
        let body = resp.bytes().await.unwrap();
        if encoding.is_empty() {
            assert_eq!(body.len(), "console.log('hello, clinic');\n".len() * 200);
        } else {
            assert!(body.len() < 1000, "{accepts}: {} bytes", body.len());
        }
    }
    app.stop().await;
}

/// History mode: a page navigation to a path with no file gets the app's index page, a
/// missing script still gets a 404 with a `detail`, and a mount without a fallback has none.
async fn a_navigation_falls_back_to_the_index_page(db: Db) {
    let (app, _files) = gate(db, Vec::new()).await;
    let page = get(
        &app,
        "/results/zhang/20250101",
        &[("accept", "text/html,*/*")],
    )
    .await;
    assert_eq!(page.status(), 200);
    assert_eq!(header(&page, "cache-control"), "no-cache");
    assert!(page.text().await.unwrap().contains("<title>CTAI</title>"));
    let missing = get(&app, "/js/missing.js", &[("accept", "*/*")]).await;
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert!(body["detail"].is_string());
    let no_fallback = get(&app, "/account/settings", &[("accept", "text/html")]).await;
    assert_eq!(no_fallback.status(), 404);
    app.stop().await;
}

/// A mount never hides the gate's endpoints or the backend's routes, and answers only GET and
/// HEAD.
async fn mounts_hide_no_endpoint_and_no_route(db: Db) {
    let (app, _files) = gate(db, Vec::new()).await;
    let health = get(&app, "/healthz", &[("accept", "text/html")]).await;
    assert_eq!(health.status(), 200);
    assert!(header(&health, "content-type").starts_with("application/json"));
    let plans = get(&app, "/plans/", &[("accept", "text/html")]).await;
    assert!(plans.json::<serde_json::Value>().await.unwrap().is_array());
    // A backend route with no credential: the route's answer, not the app's page.
    let list = get(&app, "/list_patients", &[("accept", "text/html")]).await;
    assert_eq!(list.status(), 401);
    let post = app.client.post(app.url("/")).send().await.unwrap();
    assert_ne!(post.status(), 200, "a mount answers GET and HEAD only");
    let head = app
        .client
        .head(app.url("/css/site.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    app.stop().await;
}

/// The `Set-Cookie` of a login, its attributes, and the cookie's value.
fn image_cookie(resp: &reqwest::Response) -> (String, String) {
    let set = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("idoctor_image="))
        .expect("an image cookie");
    let value = set
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("idoctor_image=")
        .to_string();
    (set, value)
}

async fn login(app: &TestApp, a: &Account) -> reqwest::Response {
    let resp = app
        .client
        .post(app.url("/auth/login"))
        .json(&json!({"username_or_email": a.email, "password": a.password}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp
}

async fn with_cookie(app: &TestApp, method: reqwest::Method, path: &str, cookie: &str) -> u16 {
    app.client
        .request(method, app.url(path))
        .header("cookie", format!("other=1; idoctor_image={cookie}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A login sets the image cookie: HttpOnly, SameSite=Strict, scoped, as long-lived as an
/// access token, not `Secure` over plain HTTP; an image GET with only the cookie reaches the
/// backend as the account, and without it is refused.
async fn a_login_sets_an_image_cookie_that_loads_images(db: Db) {
    let (app, _files) = gate(db, Vec::new()).await;
    let a = app.signup("imaging").await;
    let (set, cookie) = image_cookie(&login(&app, &a).await);
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=1800"] {
        assert!(set.contains(attribute), "{attribute} in {set}");
    }
    assert!(!set.contains("Secure"), "{set}");
    assert_eq!(get(&app, IMAGE, &[]).await.status(), 401);
    assert_eq!(
        with_cookie(&app, reqwest::Method::GET, IMAGE, &cookie).await,
        200
    );
    let seen = app.upstream.seen();
    let last = seen.last().unwrap();
    assert_eq!(last.headers["x-user-id"], a.id.as_str());
    assert_eq!(
        last.headers.get("cookie").map(|v| v.to_str().unwrap()),
        Some("other=1"),
        "the image cookie never reaches the backend, the others do"
    );
    app.stop().await;
}

/// The cookie is refused on every route that is not an image GET (the gate's API, a backend
/// route, a metered POST), and as a bearer token or `?token=` anywhere: it can change nothing.
async fn the_image_cookie_is_refused_everywhere_else(db: Db) {
    let (app, _files) = gate(db, Vec::new()).await;
    let a = app.signup("imaging").await;
    let (_, cookie) = image_cookie(&login(&app, &a).await);
    use reqwest::Method;
    for (method, path) in [
        (Method::GET, "/users/me"),
        (Method::GET, "/list_patients"),
        (Method::GET, "/admin/quotas/users/me"),
        (Method::POST, "/process/zhang/20250101"),
        (Method::POST, "/api-keys/"),
        (Method::POST, "/subscriptions/cancel"),
    ] {
        assert_eq!(
            with_cookie(&app, method.clone(), path, &cookie).await,
            401,
            "{method} {path}"
        );
    }
    assert_eq!(app.with_token(&cookie).get_status("/users/me").await, 401);
    assert_eq!(app.with_token(&cookie).get_status(IMAGE).await, 401);
    let query = format!("{IMAGE}?token={cookie}");
    assert_eq!(
        get(&app, &query, &[]).await.status(),
        401,
        "?token= takes access tokens only"
    );
    app.stop().await;
}

/// A refresh sets a fresh cookie, a logout clears it, and a disabled account's cookie stops at
/// once like any credential of it.
async fn the_image_cookie_follows_the_session(db: Db) {
    let (app, _files) = gate(db, Vec::new()).await;
    let a = app.signup("imaging").await;
    let refreshed = app
        .client
        .post(app.url("/auth/refresh"))
        .json(&json!({"refresh_token": a.refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), 200);
    let (_, cookie) = image_cookie(&refreshed);
    assert_eq!(
        with_cookie(&app, reqwest::Method::GET, IMAGE, &cookie).await,
        200
    );

    let out = app.as_user(&a).post("/auth/logout").send().await.unwrap();
    assert_eq!(out.status(), 200);
    let (cleared, value) = image_cookie(&out);
    assert!(
        value.is_empty() && cleared.contains("Max-Age=0"),
        "{cleared}"
    );

    let b = app.signup("disabled").await;
    let (_, cookie) = image_cookie(&login(&app, &b).await);
    assert_eq!(
        with_cookie(&app, reqwest::Method::GET, IMAGE, &cookie).await,
        200
    );
    let root = app.admin_bearer().await;
    app.with_authorization(&root)
        .post_json(&format!("/admin/users/{}/disable", b.id), 200)
        .await;
    assert_eq!(
        with_cookie(&app, reqwest::Method::GET, IMAGE, &cookie).await,
        403
    );
    app.stop().await;
}

/// `auth.image_cookie = false` sets none; `auth.image_cookie_secure` marks it `Secure` behind
/// a TLS proxy.
async fn the_image_cookie_is_configurable(db: Db) {
    let (off, _f1) = gate(db, vec![("auth.image_cookie", toml::Value::Boolean(false))]).await;
    let a = off.signup("plain").await;
    let resp = login(&off, &a).await;
    assert!(resp.headers().get("set-cookie").is_none());
    off.stop().await;
    let (secure, _f2) = gate(
        db,
        vec![("auth.image_cookie_secure", toml::Value::Boolean(true))],
    )
    .await;
    let a = secure.signup("behindtls").await;
    let (set, _) = image_cookie(&login(&secure, &a).await);
    assert!(set.contains("; Secure"), "{set}");
    secure.stop().await;
}

on_both!(
    mounted_files_are_served_with_types_and_cache_rules,
    mounted_files_are_compressed_when_the_client_accepts_it,
    a_navigation_falls_back_to_the_index_page,
    mounts_hide_no_endpoint_and_no_route,
    a_login_sets_an_image_cookie_that_loads_images,
    the_image_cookie_is_refused_everywhere_else,
    the_image_cookie_follows_the_session,
    the_image_cookie_is_configurable,
);

/// `check-config` refuses a mount the gate's endpoints or a route would hide, a directory that
/// is not there and a fallback that is not in it, each with the line.
#[test]
fn mounts_that_would_be_hidden_or_broken_are_refused_with_the_line() {
    let files = tempfile::tempdir().unwrap();
    dist(files.path(), "x");
    let dir = files.path().display().to_string();
    let with = |extra: &str| ConfigEdit::shipped().render() + "\n" + extra;
    let problems = |text: String| match idoctor_gate::config::Config::from_toml_str_isolated(
        &text, "t.toml",
    ) {
        Err(e) => e.to_string(),
        Ok(c) => match idoctor_gate::proxy::routes::RouteTable::build(&c) {
            Err(e) => e.to_string(),
            Ok(_) => String::new(),
        },
    };
    let line_of = |text: &str| text.lines().position(|l| l == "[[static]]").unwrap() + 1;
    for (extra, needle) in [
        (
            format!("[[static]]\nat = \"/auth/\"\ndir = \"{dir}\"\n"),
            "gate's own",
        ),
        (
            format!("[[static]]\nat = \"/get_image/a/b/\"\ndir = \"{dir}\"\n"),
            "answered by the route `/get_image/",
        ),
        (
            format!("[[static]]\nat = \"/app/\"\ndir = \"{dir}/nope\"\n"),
            "is not a directory",
        ),
        (
            format!("[[static]]\nat = \"/app/\"\ndir = \"{dir}\"\nfallback = \"app.html\"\n"),
            "has no file `app.html`",
        ),
        (
            format!("[[static]]\nat = \"/{{x}}/\"\ndir = \"{dir}\"\n"),
            "plain path",
        ),
    ] {
        let text = with(&extra);
        let found = problems(text.clone());
        assert!(found.contains(needle), "{extra}: {found}");
        assert!(
            found.contains(&format!("t.toml:{}:", line_of(&text))),
            "{extra}: {found}"
        );
    }
    assert_eq!(
        problems(with(&format!(
            "[[static]]\nat = \"/\"\ndir = \"{dir}\"\nfallback = \"index.html\"\n"
        ))),
        ""
    );
}

/// A real browser (headless Chromium) opens a page served from a mount, signs in with the
/// page's own script, and shows an image of a backend route whose URL carries no token: the
/// image cookie the login set is what authenticates it.
#[tokio::test]
async fn a_browser_shows_an_image_with_no_token_in_its_url() {
    let Some(chromium) = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must install chromium (.ci/run does)"
        );
        eprintln!("skipped: no chromium on this machine (.ci/run installs it)");
        return;
    };
    let (app, files) = gate(Db::Sqlite, Vec::new()).await;
    let a = app.signup("viewer").await;
    let page = format!(
        r#"<!doctype html><html><head><title>viewer</title></head><body><p id="out">waiting</p><script>
fetch('/auth/login', {{method: 'POST', headers: {{'content-type': 'application/json'}},
  body: JSON.stringify({{username_or_email: '{email}', password: '{password}'}})}})
  .then(r => {{
    const img = new Image();
    img.onload = () => {{ document.getElementById('out').textContent = 'IMAGE-LOADED ' + img.naturalWidth; }};
    img.onerror = () => {{ document.getElementById('out').textContent = 'IMAGE-FAILED'; }};
    img.src = '{IMAGE}';
    document.body.appendChild(img);
  }});
</script></body></html>"#,
        email = a.email,
        password = a.password
    );
    std::fs::write(files.path().join("account/viewer.html"), page).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let mut chrome = std::process::Command::new(chromium);
    chrome
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(app.url("/account/viewer.html"));
    let out = tokio::task::spawn_blocking(move || chrome.output())
        .await
        .unwrap()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("IMAGE-LOADED 1"),
        "{dom}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let images: Vec<_> = app
        .upstream
        .seen()
        .into_iter()
        .filter(|s| s.path().starts_with("/get_image/"))
        .collect();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].headers["x-user-id"], a.id.as_str());
    app.stop().await;
}

/// The cookie's `Path` is the first segment the image routes share (the browser then sends it
/// with them only), `/` when they share none or the platform layout also reaches them under
/// its prefix.
#[test]
fn the_image_cookie_is_scoped_to_the_image_routes() {
    let config = |routes: &str, server: &str| {
        let text =
            format!("[server]\n{server}\n[upstream]\nurl = \"http://127.0.0.1:4200\"\n{routes}");
        idoctor_gate::config::Config::from_toml_str_isolated(&text, "t.toml").unwrap()
    };
    let image = |path: &str| {
        format!(
            "[[route]]\npath = \"{path}\"\nmethods = [\"GET\"]\naccess = \"user\"\nquery_token = true\n"
        )
    };
    let shared = image("/images/{case}/{file}") + &image("/images/{case}/overlay/{file}");
    assert_eq!(config(&shared, "").image_cookie_path(), "/images/");
    let apart = image("/get_image/{p}/{d}/{f}") + &image("/get_output_image/{p}/{d}/{o}/{f}");
    assert_eq!(config(&apart, "").image_cookie_path(), "/");
    assert_eq!(
        config(&shared, "backend_prefix = \"/api/ctai\"").image_cookie_path(),
        "/"
    );
}
