//! A throwaway PostgreSQL for the suite: `DATABASE_URL` when set, otherwise a cluster made with
//! `initdb` / `pg_ctl` in a temporary folder on a free port, started once per test process and
//! stopped (and removed) by a watchdog when the process exits. Each test gets its own database.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

static BASE_URL: OnceLock<String> = OnceLock::new();

/// The server URL (without a database name).
fn base_url() -> &'static str {
    BASE_URL.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if url.starts_with("postgres") => url,
        _ => Cluster::start().url,
    })
}

/// A URL to a new, empty database on the test server.
pub async fn fresh_database() -> String {
    database_on(base_url()).await
}

/// A URL to a new, empty database on the server at `base`.
pub async fn database_on(base: &str) -> String {
    use sqlx::Connection;
    let name = format!("gate_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(base)
        .await
        .expect("connect to the test PostgreSQL");
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create a test database");
    conn.close().await.ok();
    with_database(base, &name)
}

fn with_database(base: &str, name: &str) -> String {
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (base, None),
    };
    // postgres://user@host:port[/db] -> replace the path.
    let after_scheme = head.find("://").map(|i| i + 3).unwrap_or(0);
    let root = match head[after_scheme..].find('/') {
        Some(i) => &head[..after_scheme + i],
        None => head,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

fn find_tool(name: &str) -> PathBuf {
    if let Ok(out) = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
    {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !p.is_empty() {
            return PathBuf::from(p);
        }
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin").join(name))
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    candidates
        .into_iter()
        .rev()
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("{name} not found: install PostgreSQL server binaries or set DATABASE_URL")
        })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL tool, as the `postgres` user when we are root (postgres refuses root).
fn pg_command(tool: &PathBuf, root: bool) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(tool);
        c
    } else {
        Command::new(tool)
    }
}

/// A PostgreSQL cluster of the test process's own, which a test may stop and start.
pub struct Cluster {
    /// The server URL (without a database name).
    pub url: String,
    pg_ctl: PathBuf,
    data: PathBuf,
    dir: PathBuf,
    opts: String,
    root: bool,
}

impl Cluster {
    /// A new cluster on a free port, removed when the test process ends.
    pub fn start() -> Cluster {
        start_cluster()
    }

    /// Stops the server (a fast shutdown: connections are closed, as in a failover).
    pub fn stop(&self) {
        self.pg_ctl(&["-w", "-m", "fast", "stop"]);
    }

    /// Starts it again, waiting until it accepts connections.
    pub fn start_again(&self) {
        let log = self.dir.join("pg.log");
        let log = log.to_str().unwrap().to_string();
        self.pg_ctl(&["-w", "-l", &log, "-o", &self.opts, "start"]);
    }

    fn pg_ctl(&self, args: &[&str]) {
        let out = pg_command(&self.pg_ctl, self.root)
            .arg("-D")
            .arg(&self.data)
            .args(args)
            .output()
            .expect("run pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn start_cluster() -> Cluster {
    let initdb = find_tool("initdb");
    let pg_ctl = find_tool("pg_ctl");
    let root = is_root();
    let dir = std::env::temp_dir().join(format!("gate-pg-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    if root {
        let ok = Command::new("chown")
            .arg("postgres:")
            .arg(&dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "chown of the PostgreSQL folder failed");
    }
    let data = dir.join("data");
    let out = pg_command(&initdb, root)
        .arg("-D")
        .arg(&data)
        .args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-N",
            "--no-instructions",
            "-E",
            "UTF8",
        ])
        .output()
        .expect("run initdb");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let opts = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
         -c full_page_writes=off -c max_connections=400",
        dir.display()
    );
    let out = pg_command(&pg_ctl, root)
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(dir.join("pg.log"))
        .args(["-w", "-o", &opts, "start"])
        .output()
        .expect("run pg_ctl");
    assert!(
        out.status.success(),
        "pg_ctl start failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.join("pg.log")).unwrap_or_default()
    );
    // Stop and remove the cluster when this test process is gone.
    let stop = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {runas} {pg_ctl} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {dir}",
        pid = std::process::id(),
        runas = if root { "runuser -u postgres --" } else { "" },
        pg_ctl = pg_ctl.display(),
        data = data.display(),
        dir = dir.display(),
    );
    // `setsid -f` forks the watchdog into its own session and returns at once.
    Command::new("setsid")
        .args(["-f", "sh", "-c", &stop])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("start the PostgreSQL watchdog");
    Cluster {
        url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        pg_ctl,
        data,
        dir,
        opts,
        root,
    }
}
