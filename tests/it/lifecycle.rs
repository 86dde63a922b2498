//! The binary as an operator runs it: SIGTERM drains in-flight requests and tunnels, then exits.

use crate::common::Upstream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn free_port() -> u16 {
    crate::common::dead_port()
}

#[tokio::test]
async fn sigterm_drains_requests_and_tunnels_then_exits() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("gate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{d}\"\nshutdown_grace_secs = 10\n\
             [upstream]\nurl = \"{u}\"\n[[route]]\npath = \"/{{*rest}}\"\naccess = \"public\"\n",
            d = dir.path().display(),
            u = upstream.url()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_idoctor-gate"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the gate did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // An open tunnel and a slow request in flight.
    let mut tunnel = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tunnel
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = tunnel.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 101"));
    let slow = tokio::spawn({
        let client = client.clone();
        let url = format!("{base}/slow?ms=1500");
        async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // New connections are refused while draining.
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    );
    // The in-flight request completes.
    assert_eq!(slow.await.unwrap().unwrap(), 200);
    // The tunnel still carries data.
    tunnel.write_all(b"still-open").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), tunnel.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"still-open");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the gate waits for the open tunnel"
    );
    drop(tunnel);

    let deadline = Instant::now() + Duration::from_secs(8);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the gate did not exit after draining"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}

/// A whole scenario through the binary with JSON logs: every request is one line with its id,
/// route, status, quota decision and duration, and no password, token, key, code or secret
/// appears anywhere in the output.
#[tokio::test]
async fn logs_are_json_lines_without_secrets() {
    let upstream = Upstream::start().await;
    let smtp = crate::common::smtp::Smtp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let shipped = crate::common::ConfigEdit::shipped()
        .set("server.listen", format!("127.0.0.1:{port}"))
        .set("server.data_dir", dir.path().display().to_string())
        .set("upstream.url", upstream.url())
        .render();
    let config = dir.path().join("gate.toml");
    std::fs::write(
        &config,
        format!("{shipped}\n[smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom_email = \"noreply@idoctor.test\"\n", smtp.port),
    )
    .unwrap();
    let log_path = dir.path().join("gate.log");
    let jwt_secret = "a-jwt-secret-that-must-never-be-logged-0123456789";
    let pepper = "an-api-key-pepper-that-must-never-be-logged-0123";
    let mut child = Command::new(env!("CARGO_BIN_EXE_idoctor-gate"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("GATE_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env("GATE_JWT_SECRET", jwt_secret)
        .env("GATE_API_KEY_PEPPER", pepper)
        .stdout(std::fs::File::create(&log_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the gate did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let password = "a-very-secret-password";
    let post = |path: &str, body: serde_json::Value| {
        client.post(format!("{base}{path}")).json(&body).send()
    };
    assert_eq!(
        post(
            "/auth/send-verification-code",
            serde_json::json!({"email": "log@example.com"})
        )
        .await
        .unwrap()
        .status(),
        200
    );
    let code = smtp.last_code_for("log@example.com").unwrap();
    assert_eq!(
        post(
            "/auth/verify-email",
            serde_json::json!({"email": "log@example.com", "code": code})
        )
        .await
        .unwrap()
        .status(),
        200
    );
    let resp = post(
        "/auth/register",
        serde_json::json!({"email": "log@example.com", "username": "logger", "password": password}),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 201);
    let tokens: serde_json::Value = post(
        "/auth/login",
        serde_json::json!({"username_or_email": "logger", "password": password}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let bad = post(
        "/auth/login",
        serde_json::json!({"username_or_email": "logger", "password": "wrong-secret-guess"}),
    )
    .await
    .unwrap();
    assert_eq!(bad.status(), 401);
    let auth = format!("Bearer {access}");
    let key: serde_json::Value = client
        .post(format!("{base}/api-keys/"))
        .header("authorization", &auth)
        .json(&serde_json::json!({"name": "k"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = key["key"].as_str().unwrap().to_string();
    let resp = client
        .post(format!("{base}/process/p1/20250101"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client
        .get(format!("{base}/get_image/p1/20250101/a.png?token={access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let renewed: serde_json::Value = client
        .post(format!("{base}/auth/refresh?refresh_token={refresh}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let plans: serde_json::Value = client
        .get(format!("{base}/plans/"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let order: serde_json::Value = client
        .post(format!("{base}/payments/"))
        .header("authorization", &auth)
        .json(&serde_json::json!({"plan_id": plans[1]["id"], "payment_method": "sandbox"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pay = client
        .post(format!(
            "{base}/payments/sandbox/checkout/{}",
            order["order_id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(pay.status(), 200);

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    for secret in [
        password,
        "wrong-secret-guess",
        &access,
        &refresh,
        renewed["access_token"].as_str().unwrap(),
        renewed["refresh_token"].as_str().unwrap(),
        &key,
        &key[8..],
        &code,
        jwt_secret,
        pepper,
    ] {
        assert!(!log.contains(secret), "a secret reached the logs: {secret}");
    }
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let requests: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "request")
        .collect();
    assert!(requests.len() >= 10, "{}", requests.len());
    let metered = requests
        .iter()
        .find(|l| l["fields"]["path"] == "/process/p1/20250101")
        .expect("the metered request is logged");
    for field in ["request_id", "user_id", "route", "status", "duration_us"] {
        assert!(!metered["fields"][field].is_null(), "{field} in {metered}");
    }
    assert_eq!(metered["fields"]["quota"], "committed");
    assert_eq!(metered["fields"]["status"], 200);
}

/// SIGHUP reloads proxy.toml: a valid file takes over without disturbing requests in flight; a
/// bad one is refused with a log line and the old configuration keeps serving.
#[tokio::test]
async fn sighup_reloads_a_valid_config_and_refuses_a_bad_one() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("gate.toml");
    let write = |routes: &[&str], extra: &str| {
        let mut text = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n{extra}\n[upstream]\nurl = \"{}\"\n",
            dir.path().display(),
            upstream.url()
        );
        for r in routes {
            text.push_str(&format!("[[route]]\npath = \"{r}\"\naccess = \"public\"\n"));
        }
        std::fs::write(&config, text).unwrap();
    };
    write(&["/a", "/slow"], "");
    let log_path = dir.path().join("gate.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_idoctor-gate"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(&log_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the gate did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = |path: &'static str| {
        let c = client.clone();
        let url = format!("{base}{path}");
        async move { c.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!((status("/a").await, status("/b").await), (200, 404));

    // A request in flight across the reload.
    let slow = tokio::spawn(status("/slow?ms=1500"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    write(&["/a", "/b", "/slow"], "");
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while status("/b").await != 200 {
        assert!(
            Instant::now() < deadline,
            "the new configuration did not take over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(slow.await.unwrap(), 200, "the request in flight finished");

    // A bad file: refused, logged, and the old configuration keeps serving.
    std::fs::write(&config, "[server]\nlisten_port = 1\n").unwrap();
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!((status("/a").await, status("/b").await), (200, 200));
    // A valid file that changes what needs a restart: refused too.
    write(&["/a"], "");
    let moved = crate::common::ConfigEdit::parse(&std::fs::read_to_string(&config).unwrap())
        .set("server.listen", "127.0.0.1:1")
        .render();
    std::fs::write(&config, moved).unwrap();
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status("/b").await, 200);

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("configuration reloaded"), "{log}");
    assert_eq!(log.matches("reload refused").count(), 2, "{log}");
    assert!(
        log.contains("listen_port"),
        "the refusal names the problem: {log}"
    );
}

/// SIGTERM under metered load: the requests in flight are answered, the process exits, and
/// afterwards every request answered 200 has its committed usage row in the database (the
/// batched commits were flushed before the exit), and no other request has one.
#[tokio::test]
async fn sigterm_under_metered_load_keeps_every_committed_charge() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("gate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{d}\"\nshutdown_grace_secs = 10\n\
             [upstream]\nurl = \"{u}\"\n\
             [[quota_type]]\nkey = \"runs\"\nname = \"runs\"\nunit = \"x\"\n\
             [[route]]\npath = \"/{{*rest}}\"\naccess = \"public\"\n\
             [[route]]\npath = \"/slow\"\naccess = \"user\"\n[route.meter]\nquota = \"runs\"\ncost = 1\n\
             [[plan]]\nname = \"free\"\nprice = \"0.00\"\ndefault = true\n[plan.quotas]\nruns = 100000\n",
            d = dir.path().display(),
            u = upstream.url()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_idoctor-gate"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the gate did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let register = client
        .post(format!("{base}/auth/register"))
        .json(&serde_json::json!({"email": "load@example.com", "username": "load", "password": "password-load"}))
        .send()
        .await
        .unwrap();
    assert_eq!(register.status(), 201);
    let tokens: serde_json::Value = client
        .post(format!("{base}/auth/login"))
        .json(&serde_json::json!({"username_or_email": "load", "password": "password-load"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_string();

    // Eight clients, each with requests of 50-300 ms in flight, until the gate stops answering.
    let mut load = Vec::new();
    for worker in 0..8u64 {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let url = format!("{base}/slow?ms={}", 50 + worker * 35);
        let access = access.clone();
        load.push(tokio::spawn(async move {
            let mut answered = Vec::new();
            while let Ok(resp) = client.post(&url).bearer_auth(&access).send().await {
                let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
                let status = resp.status().as_u16();
                if resp.bytes().await.is_err() {
                    break;
                }
                answered.push((status, id));
            }
            answered
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let mut answered = Vec::new();
    for worker in load {
        answered.extend(worker.await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the gate did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");

    let served: std::collections::BTreeSet<String> = answered
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, id)| id.clone())
        .collect();
    assert!(
        served.len() > 20,
        "load before the signal: {}",
        served.len()
    );
    assert!(
        answered.iter().all(|(s, _)| *s == 200),
        "answers other than 200: {:?}",
        answered
            .iter()
            .filter(|(s, _)| *s != 200)
            .collect::<Vec<_>>()
    );
    let db = format!("sqlite://{}/gate.db", dir.path().display());
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&db)
        .await
        .unwrap();
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT request_id, state FROM usage_logs WHERE quota_type = 'runs'")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let committed: std::collections::BTreeSet<String> = rows
        .iter()
        .filter(|(_, s)| s == "committed")
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(
        rows.iter().filter(|(_, s)| s == "reserved").count(),
        0,
        "reservations left open by the exit"
    );
    assert_eq!(committed, served, "committed rows and 200 answers differ");
    let used: i64 =
        sqlx::query_scalar("SELECT used_amount FROM quota_balances WHERE quota_type = 'runs'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(used, served.len() as i64, "the balance equals the rows");
}
