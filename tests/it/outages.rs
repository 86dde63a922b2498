//! Database outages: a PostgreSQL cluster of the test's own, stopped and restarted under
//! gates and under load; a SQLite file on a full disk or locked by another process. And
//! what a replica may still trust across the gap.

use crate::common::pg::{Cluster, database_on};
use crate::common::{Db, Options, TEST_ROUTES, TestApp, spawn_app_with};
use futures_util::FutureExt;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Both gates on one database with the same secrets, as a deployment runs them.
async fn gate(database_url: &str) -> TestApp {
    spawn_app_with(Options {
        db: Db::Postgres,
        database_url: Some(database_url.to_string()),
        routes: format!(
            "{TEST_ROUTES}\n[[route]]\npath = \"/mine/{{*rest}}\"\naccess = \"user\"\n"
        ),
        env: vec![
            (
                "GATE_JWT_SECRET".into(),
                "outage-test-jwt-secret-0123456789abcdef0123456789".into(),
            ),
            (
                "GATE_API_KEY_PEPPER".into(),
                "outage-test-pepper-0123456789abcdef0123456789abcd".into(),
            ),
        ],
        ..Options::default()
    })
    .await
}

async fn with_key(app: &TestApp, key: &str) -> u16 {
    app.client
        .get(app.url("/mine/x"))
        .header("x-api-key", key)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Retries `attempt` while the store is still coming back (503), for at most 20 s.
async fn once_back<F, Fut>(what: &str, mut attempt: F) -> reqwest::Response
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = reqwest::Response>,
{
    let started = Instant::now();
    loop {
        let resp = attempt().await;
        if resp.status() != 503 {
            return resp;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what}: still 503"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A key deleted on one gate right after PostgreSQL restarted is refused by the other within a
/// second, every time: the other gate lost its notification stream with the restart, and a
/// cache is not trusted across such a gap (sqlx's listener reconnects silently, so this was
/// missed for the cache's whole lifetime in 4 of 12 probes).
#[tokio::test]
async fn a_revocation_right_after_postgres_restarts_reaches_the_other_gate() {
    let cluster = Cluster::start();
    let url = database_on(&cluster.url).await;
    let a = gate(&url).await;
    let b = gate(&url).await;
    for round in 0..3 {
        let acct = a.signup(&format!("round{round}")).await;
        let created: Value = a
            .as_user(&acct)
            .create_api_key(json!({"name": "robot"}))
            .await;
        let key = created["key"].as_str().unwrap().to_string();
        let id = created["id"].as_str().unwrap().to_string();
        // The other gate knows the key (and has it cached).
        for _ in 0..3 {
            assert_eq!(with_key(&b, &key).await, 200, "round {round}");
        }

        // An outage of a few seconds: long enough for a listener's reconnect attempts to back
        // off, so the other gate's first notifications after it can pass unheard.
        cluster.stop();
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.start_again();
        let deleted = once_back("deleting the key", || {
            a.as_user(&acct)
                .delete(&format!("/api-keys/{id}"))
                .send()
                .map(|r| r.unwrap())
        })
        .await;
        assert_eq!(deleted.status(), 204, "round {round}");
        let started = Instant::now();
        loop {
            let status = with_key(&b, &key).await;
            assert_ne!(status, 200, "round {round}: the deleted key was admitted");
            if status == 401 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "round {round}: the other gate answers {status}, not 401, a second on"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    a.stop().await;
    b.stop().await;
}

/// While PostgreSQL is down, metered requests answer 503 with `Retry-After`: the first finds out,
/// the next are refused by the breaker without queueing on the pool; signed-in unmetered traffic
/// is still served (nothing can be revoked meanwhile), but a key never seen before the outage
/// is not (503); and metered requests are served again
/// soon after the database is back, without a restart. (How soon is measured in the benchmark
/// scripts, not here.)
#[tokio::test]
async fn metered_requests_fail_fast_while_postgres_is_down_and_recover() {
    let cluster = Cluster::start();
    let url = database_on(&cluster.url).await;
    let app = spawn_app_with(Options {
        db: Db::Postgres,
        database_url: Some(url),
        routes: format!(
            "{TEST_ROUTES}\n[[route]]\npath = \"/mine/{{*rest}}\"\naccess = \"user\"\n\
             [[plan]]\nname = \"free\"\nprice = \"0.00\"\ndefault = true\n[plan.quotas]\napi_calls_full_process = 1000\n"
        ),
        ..Options::default()
    })
    .await;
    let a = app.signup("outage").await;
    // A key made before the outage but never used: the gate has never seen it.
    let unseen: Value = app
        .as_user(&a)
        .create_api_key(json!({"name": "unseen"}))
        .await;
    let unseen = unseen["key"].as_str().unwrap().to_string();
    let process = || async {
        app.as_user(&a)
            .post("/process/p/20250101")
            .send()
            .await
            .unwrap()
    };
    let mine = || async {
        app.as_user(&a)
            .get("/mine/x")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(process().await.status(), 200);
    assert_eq!(mine().await, 200);

    cluster.stop();
    let first = process().await;
    assert_eq!(
        first.status(),
        503,
        "the first metered request finds the database gone"
    );
    assert!(first.headers().contains_key("retry-after"));
    for _ in 0..5 {
        let resp = process().await;
        assert_eq!(resp.status(), 503);
        assert!(resp.headers().contains_key("retry-after"));
        let body: Value = resp.json().await.unwrap();
        assert!(
            body["detail"]
                .as_str()
                .unwrap_or("")
                .contains("unavailable"),
            "{body}"
        );
    }
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert!(
        ready["database"]
            .as_str()
            .is_some_and(|d| d.contains("principals known before the outage")),
        "/readyz says what is still served: {ready}"
    );
    assert_eq!(
        mine().await,
        200,
        "a principal known before the outage is still served"
    );
    assert_eq!(
        with_key(&app, &unseen).await,
        503,
        "a key never seen before the outage cannot be checked"
    );

    cluster.start_again();
    let started = Instant::now();
    while process().await.status() != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "metered requests are not served again after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

/// Metered load through a 10 s PostgreSQL outage: while the database is down metered requests
/// answer 503, they are served again without a restart once it is back, and afterwards every
/// request that was answered 200 has exactly one usage row, committed, none answered otherwise
/// has a committed one, and the balance equals the committed rows.
#[tokio::test]
async fn metered_load_through_a_10_s_postgres_outage_charges_every_admitted_request_once() {
    let cluster = Cluster::start();
    let url = database_on(&cluster.url).await;
    let app = spawn_app_with(Options {
        db: Db::Postgres,
        database_url: Some(url),
        routes: format!(
            "{TEST_ROUTES}\n[[plan]]\nname = \"free\"\nprice = \"0.00\"\ndefault = true\n\
             [plan.quotas]\napi_calls_full_process = 100000\n"
        ),
        ..Options::default()
    })
    .await;
    let a = app.signup("underload").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // (status, request id, when it was sent relative to the start)
    let mut load = Vec::new();
    let begun = Instant::now();
    for worker in 0..4 {
        let client = app.client.clone();
        let url = app.url(&format!("/process/p{worker}/20250101"));
        let access = a.access.clone();
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let sent = begun.elapsed();
                let Ok(resp) = client.post(&url).bearer_auth(&access).send().await else {
                    continue;
                };
                let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
                answers.push((resp.status().as_u16(), id, sent, begun.elapsed()));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            answers
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let down_at = begun.elapsed();
    cluster.stop();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let up_at = begun.elapsed();
    cluster.start_again();
    // Served again without a restart.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut probes = Vec::new();
    loop {
        let (status, id) = process_status(&app, &a).await;
        probes.push((status, id, Duration::ZERO, Duration::ZERO));
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metered requests not served again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answers = Vec::new();
    for worker in load {
        answers.extend(worker.await.unwrap());
    }
    // The batched commits reach the database.
    app.services().billing().flush_commits().await;

    let during = |sent: Duration, answered: Duration| {
        sent > down_at + Duration::from_millis(500) && answered < up_at
    };
    let outage: Vec<_> = answers.iter().filter(|r| during(r.2, r.3)).collect();
    assert!(
        outage.len() > 10,
        "load went on during the outage: {}",
        outage.len()
    );
    assert!(
        outage.iter().all(|r| r.0 == 503),
        "metered requests sent while the database was down: {:?}",
        outage.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    let rows = app.usage_by_request(&a).await;
    let mut served = 0;
    for (status, id, ..) in answers.iter().chain(&probes) {
        let row = rows.get(id).map(String::as_str);
        match status {
            200 => {
                served += 1;
                assert_eq!(row, Some("committed"), "request {id}, answered 200");
            }
            503 => assert_ne!(row, Some("committed"), "request {id}, answered 503"),
            other => panic!("request {id} answered {other}"),
        }
    }
    assert!(served > 20 && answers.iter().any(|r| r.0 == 503));
    let committed = rows.values().filter(|s| *s == "committed").count() as i64;
    assert_eq!(
        committed, served,
        "committed rows for requests not answered 200"
    );
    assert_eq!(
        app.quota(&a, "api_calls_full_process").await.used,
        committed,
        "the balance equals the rows"
    );
    app.stop().await;
}

/// A metered request's status and request id.
async fn process_status(app: &TestApp, a: &crate::common::Account) -> (u16, String) {
    let resp = app
        .as_user(a)
        .post("/process/p/20250101")
        .send()
        .await
        .unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    (resp.status().as_u16(), id)
}

/// A tmpfs of `size` mounted for the test (needs root, as CI runs); unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk { dir })
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Writes a file until the disk is full.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path().join("filler")).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.path().join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn sqlite_gate_routes(runs: i64) -> String {
    format!(
        "{TEST_ROUTES}\n[[plan]]\nname = \"free\"\nprice = \"0.00\"\ndefault = true\n\
         [plan.quotas]\napi_calls_full_process = {runs}\n"
    )
}

/// The SQLite file's disk fills up under metered load: requests that cannot be charged answer
/// 503 with `Retry-After` (never 500, never served uncharged), sign-ins too; once space is
/// freed, metered requests are served again without a restart, and the balance equals the
/// committed rows, one per request answered 200.
#[tokio::test]
async fn a_full_disk_under_sqlite_answers_503_then_recovers_exactly() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a small tmpfs needs root (CI runs as root)");
        return;
    }
    let disk = SmallDisk::mount("3m").expect("mount a tmpfs");
    let app = spawn_app_with(Options {
        database_url: Some(format!("sqlite://{}/gate.db", disk.path().display())),
        routes: sqlite_gate_routes(100_000),
        ..Options::default()
    })
    .await;
    let a = app.signup("fulldisk").await;
    let process = || async {
        let resp = app
            .as_user(&a)
            .post("/process/p/20250101")
            .send()
            .await
            .unwrap();
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        (resp, id)
    };
    let mut answered = Vec::new();
    let (first, id) = process().await;
    assert_eq!(first.status(), 200);
    answered.push((200, id));

    disk.fill();
    let mut refused = 0;
    for _ in 0..3000 {
        let (resp, id) = process().await;
        let status = resp.status().as_u16();
        answered.push((status, id));
        match status {
            200 => continue,
            503 => {
                assert!(resp.headers().contains_key("retry-after"));
                let body: Value = resp.json().await.unwrap();
                assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
                refused += 1;
                if refused == 5 {
                    break;
                }
            }
            other => panic!(
                "a full disk answered {other}: {}",
                resp.text().await.unwrap()
            ),
        }
    }
    assert_eq!(refused, 5, "the disk never filled up");
    let login = app
        .client
        .post(app.url("/auth/login"))
        .json(&json!({"username_or_email": "fulldisk", "password": a.password}))
        .send()
        .await
        .unwrap();
    assert!(
        login.status() == 200 || login.status() == 503,
        "a sign-in on a full disk: {}",
        login.status()
    );

    disk.free();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (resp, id) = process().await;
        let status = resp.status().as_u16();
        answered.push((status, id));
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(
            Instant::now() < deadline,
            "not served again after space was freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Enough requests to pass through every pooled connection, one of which may have been
    // holding a transaction SQLite had already rolled back when the disk filled.
    for _ in 0..20 {
        let (resp, id) = process().await;
        assert_eq!(resp.status(), 200, "after recovery");
        answered.push((200, id));
    }
    app.services().billing().flush_commits().await;
    let rows = app.usage_by_request(&a).await;
    for (status, id) in &answered {
        let row = rows.get(id).map(String::as_str);
        if *status == 200 {
            assert_eq!(row, Some("committed"), "request {id}, answered 200");
        } else {
            assert_ne!(row, Some("committed"), "request {id}, answered {status}");
        }
    }
    let served = answered.iter().filter(|r| r.0 == 200).count() as i64;
    assert_eq!(
        app.quota(&a, "api_calls_full_process").await.used,
        served,
        "the balance equals the requests answered 200"
    );
    app.stop().await;
}

/// Another process (a backup tool, an operator's sqlite3 shell) holds the SQLite file's write
/// lock for 7 s: metered requests answer 503 (after the 5 s busy timeout), never 500, and are
/// served again as soon as the other process lets go, without a restart.
#[tokio::test]
async fn sqlite_locked_by_another_process_answers_503_then_recovers() {
    let app = spawn_app_with(Options {
        routes: sqlite_gate_routes(100),
        ..Options::default()
    })
    .await;
    let a = app.signup("otherproc").await;
    let process = || async {
        app.as_user(&a)
            .post("/process/p/20250101")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(process().await, 200);
    let file = app.dir.path().join("gate.db");
    let mut holder = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('BEGIN EXCLUSIVE')\n\
             print('locked', flush=True)\n\
             time.sleep(7)\n\
             c.execute('ROLLBACK')\n",
        ])
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read and waited for off the runtime: the gate runs on this test's thread, and a blocked
    // thread would hold its commit transaction open and lock the other process out instead.
    let stdout = holder.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).map(|_| line)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(line.trim(), "locked");
    assert_eq!(process().await, 503, "a charge cannot be written");
    let released = tokio::task::spawn_blocking(move || holder.wait().unwrap());
    assert!(released.await.unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut served = false;
    while !served {
        let status = process().await;
        assert!(status == 200 || status == 503, "answered {status}");
        served = status == 200;
        assert!(
            served || Instant::now() < deadline,
            "not served again once the lock was gone"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.quota(&a, "api_calls_full_process").await.used, 2);
    app.stop().await;
}
