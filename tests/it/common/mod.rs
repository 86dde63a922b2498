//! The test harness: a real gate on a free port in front of a real upstream server, on a real
//! SQLite file or a real PostgreSQL database (zero2prod's `spawn_app` is the model).

#![allow(dead_code)]

pub mod alipay_certs;
pub mod config_edit;
pub mod fake_alipay;
pub mod fake_wechat;
pub mod idoctor;
pub mod pg;
pub mod smtp;
pub mod stored;
pub mod upstream;

use idoctor_gate::config::Config;
use idoctor_gate::formats::ids::UserId;
use idoctor_gate::server::{self, RunningGate};
use std::net::SocketAddr;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use config_edit::ConfigEdit;
pub use upstream::Upstream;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A fresh, empty database of the given kind. SQLite files live in `dir`.
pub async fn database_url(db: Db, dir: &TempDir) -> String {
    match db {
        Db::Sqlite => format!("sqlite://{}/gate.db", dir.path().display()),
        Db::Postgres => pg::fresh_database().await,
    }
}

/// The origin the test configs allow for CORS.
pub const ORIGIN: &str = "http://app.test";

/// Routes used by most proxy tests: everything public except a blocked, an admin and a
/// metered route (which needs a user).
pub const TEST_ROUTES: &str = r#"
[[quota_type]]
key = "api_calls_full_process"
name = "runs"
unit = "x"

[[route]]
path = "/{*rest}"
access = "public"

[[route]]
path = "/list_tasks"
access = "blocked"

[[route]]
path = "/admin/{*rest}"
access = "blocked"

[[route]]
path = "/process/{patient_name}/{study_date}"
methods = ["POST"]
access = "user"
[route.meter]
quota = "api_calls_full_process"
cost = 1

[[route]]
path = "/slow-route"
access = "public"
timeout_secs = 1

[[route]]
path = "/small/{*rest}"
access = "public"
max_body = "1KB"

[[route]]
path = "/only-get"
methods = ["GET"]
access = "public"
"#;

/// How to build a test gate.
pub struct Options {
    pub db: Db,
    /// Extra keys for `[server]`.
    pub server: String,
    /// Everything after the fixed tables: quota types and routes.
    pub routes: String,
    /// Defaults to a fresh test upstream.
    pub upstream_url: Option<String>,
    /// The environment the configuration sees (secrets).
    pub env: Vec<(String, String)>,
    /// Use this database URL instead of a fresh one (several gates on one database).
    pub database_url: Option<String>,
    /// Start from the shipped proxy.toml (listener, backend, data and database moved to the
    /// test's), with `routes` appended, instead of the test tables.
    pub shipped: bool,
    /// Keys set in the shipped file (`"tasks.poll_after_secs"`), created where missing.
    pub edits: Vec<(&'static str, toml::Value)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            db: Db::Sqlite,
            server: String::new(),
            routes: TEST_ROUTES.to_string(),
            upstream_url: None,
            env: Vec::new(),
            database_url: None,
            shipped: false,
            edits: Vec::new(),
        }
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub upstream: Upstream,
    pub client: reqwest::Client,
    pub running: Option<RunningGate>,
    pub dir: TempDir,
    /// The superuser's `Authorization`, made on first use.
    admin: tokio::sync::OnceCell<String>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn services(&self) -> std::sync::Arc<idoctor_gate::startup::Services> {
        self.running.as_ref().expect("running").services()
    }

    /// The JWT secret the gate generated in its data folder (development mode).
    pub fn jwt_secret(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("jwt_secret")).unwrap()
    }

    /// Registers `name` (email `name@example.com`, password `password-<name>`) and logs in.
    pub async fn signup(&self, name: &str) -> Account {
        let email = format!("{name}@example.com");
        let password = format!("password-{name}");
        let resp = self
            .client
            .post(self.url("/auth/register"))
            .json(&serde_json::json!({"email": email, "username": name, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
        let user: serde_json::Value = resp.json().await.unwrap();
        let tokens = self.login(&email, &password).await;
        Account {
            id: UserId::parse(user["id"].as_str().unwrap()).expect("a UUID"),
            email,
            password,
            access: tokens["access_token"].as_str().unwrap().to_string(),
            refresh: tokens["refresh_token"].as_str().unwrap().to_string(),
        }
    }

    /// Makes the superuser `root` (once) and returns its `Authorization` value, as the
    /// `create-admin` command would.
    pub async fn admin_bearer(&self) -> String {
        self.admin
            .get_or_init(|| async {
                self.services()
                    .auth()
                    .create_admin("root@example.com", "root", "root-password")
                    .await
                    .unwrap();
                let t = self.login("root", "root-password").await;
                format!("Bearer {}", t["access_token"].as_str().unwrap())
            })
            .await
            .clone()
    }

    /// The id of the plan named `name`, from the public plan list.
    pub async fn plan_id(&self, name: &str) -> String {
        let plans = self.get_json("/plans/", 200).await;
        plans
            .as_array()
            .expect("a list of plans")
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no plan named {name}: {plans}"))["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The name of the account's current plan, as the API reports it.
    pub async fn current_plan(&self, a: &Account) -> String {
        let c: serde_json::Value = self
            .client
            .get(self.url("/subscriptions/current"))
            .header("authorization", bearer(a))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        c["plan_name"].as_str().unwrap().to_string()
    }

    pub async fn login(&self, login: &str, password: &str) -> serde_json::Value {
        let resp = self
            .client
            .post(self.url("/auth/login"))
            .json(&serde_json::json!({"username_or_email": login, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
        resp.json().await.unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown();
            r.stopped().await;
        }
    }
}

/// A caller of the gate: every request it builds carries its credentials, so a test says who
/// is calling (`app.as_user(&alice).get("/x")`) instead of building the header by hand.
pub struct Caller<'a> {
    app: &'a TestApp,
    /// The credential header: `authorization`, or `x-api-key` for a machine.
    header: &'static str,
    value: String,
}

impl Caller<'_> {
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.app
            .client
            .request(method, self.app.url(path))
            .header(self.header, &self.value)
    }

    /// GET `path` and only its status.
    pub async fn get_status(&self, path: &str) -> u16 {
        self.get(path).send().await.unwrap().status().as_u16()
    }

    /// Creates an API key (`POST /api-keys/` with `body`) and returns the 201 body, which
    /// holds the key, shown this once.
    pub async fn create_api_key(&self, body: serde_json::Value) -> serde_json::Value {
        let resp = self.post("/api-keys/").json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
        resp.json().await.unwrap()
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::GET, path)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::POST, path)
    }

    pub fn put(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::PUT, path)
    }

    pub fn patch(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::PATCH, path)
    }

    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::DELETE, path)
    }

    /// GET `path` and its JSON body, asserting the status.
    pub async fn get_json(&self, path: &str, status: u16) -> serde_json::Value {
        let resp = self.get(path).send().await.unwrap();
        assert_eq!(resp.status(), status, "GET {path}");
        resp.json().await.unwrap()
    }

    /// POST `path` without a body and its JSON reply, asserting the status.
    pub async fn post_json(&self, path: &str, status: u16) -> serde_json::Value {
        let resp = self.post(path).send().await.unwrap();
        assert_eq!(resp.status(), status, "POST {path}");
        resp.json().await.unwrap()
    }
}

impl TestApp {
    /// GET `path` without credentials and its JSON body, asserting the status.
    pub async fn get_json(&self, path: &str, status: u16) -> serde_json::Value {
        let resp = self.client.get(self.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), status, "GET {path}");
        resp.json().await.unwrap()
    }

    /// Requests as a signed-in account.
    pub fn as_user(&self, a: &Account) -> Caller<'_> {
        Caller {
            app: self,
            header: "authorization",
            value: bearer(a),
        }
    }

    /// Requests with this bearer token (an access token, a refresh token, an API key).
    pub fn with_token(&self, token: &str) -> Caller<'_> {
        Caller {
            app: self,
            header: "authorization",
            value: format!("Bearer {token}"),
        }
    }

    /// Requests with this `Authorization` value (an admin's, from [`TestApp::admin_bearer`]).
    pub fn with_authorization(&self, authorization: &str) -> Caller<'_> {
        Caller {
            app: self,
            header: "authorization",
            value: authorization.to_string(),
        }
    }

    /// Requests as a machine holding this API key (`X-API-Key`).
    pub fn with_key(&self, key: &str) -> Caller<'_> {
        Caller {
            app: self,
            header: "x-api-key",
            value: key.to_string(),
        }
    }
}

/// `Authorization` for an account's access token.
pub fn bearer(a: &Account) -> String {
    format!("Bearer {}", a.access)
}

/// A signed-up, signed-in user.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: UserId,
    pub email: String,
    pub password: String,
    pub access: String,
    pub refresh: String,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(opts: Options) -> TestApp {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db_url = match opts.database_url {
        Some(u) => u,
        None => database_url(opts.db, &dir).await,
    };
    let upstream_url = opts.upstream_url.unwrap_or_else(|| upstream.url());
    let text = if opts.shipped {
        let mut edit = ConfigEdit::shipped();
        // A test that must know its address beforehand (a public URL) names the port.
        let listen_given = opts.edits.iter().any(|(k, _)| *k == "server.listen");
        for (key, value) in opts.edits {
            edit = edit.insert(key, value);
        }
        if !listen_given {
            edit = edit.set("server.listen", "127.0.0.1:0");
        }
        edit.set("server.data_dir", dir.path().display().to_string())
            .set("upstream.url", upstream_url.as_str())
            .insert("database.url", db_url.as_str())
            .prepend("cors.allow_origins", ORIGIN)
            .render()
            + "\n"
            + &opts.routes
    } else {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
data_dir = "{data}"
shutdown_grace_secs = 5
{server}

[upstream]
url = "{upstream_url}"
connect_timeout_secs = 2

[database]
url = "{db_url}"

[cors]
allow_origins = ["{ORIGIN}"]

{routes}
"#,
            data = dir.path().display(),
            server = opts.server,
            routes = opts.routes,
        )
    };
    let env: Vec<(&str, &str)> = opts
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let config =
        Config::from_toml_str_with_env(&text, "test.toml", &env).unwrap_or_else(|e| panic!("{e}"));
    start_with(config, upstream, dir).await
}

/// A gate running the shipped `proxy.toml`, with the listener, backend and database moved to
/// the test's own; `extra` is appended to the file.
pub async fn spawn_shipped(extra: &str) -> TestApp {
    spawn_app_with(Options {
        shipped: true,
        routes: extra.to_string(),
        ..Options::default()
    })
    .await
}

pub fn shipped_config() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml")).unwrap()
}

async fn start_with(config: Config, upstream: Upstream, dir: TempDir) -> TestApp {
    let running = server::start(config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    TestApp {
        addr: running.addr,
        upstream,
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        running: Some(running),
        dir,
        admin: tokio::sync::OnceCell::new(),
    }
}

/// Sends raw bytes and returns everything the gate answers until it closes (or 5 s pass).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A port on which nothing listens.
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
