//! Faults injected with real processes: a backend process killed part-way through a 200 MB
//! upload and a 200 MB download. The client gets a clean answer, the charge follows the metering
//! rules, and no connection is left behind on either side of the gate. (The gate's memory over
//! repeated faults is measured by `bench/faults.py`, not here.)

use crate::common::{Options, TEST_ROUTES, TestApp, spawn_app_with};
use bytes::Bytes;
use futures_util::StreamExt;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The stand-in backend process of `common/dying_backend.py`, killed by itself after
/// `kill_after` bytes of an upload or a download.
struct DyingBackend {
    child: Child,
    port: u16,
}

impl DyingBackend {
    fn start(kill_after: usize) -> DyingBackend {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/common/dying_backend.py"
        );
        let mut child = Command::new("python3")
            .arg(script)
            .arg(kill_after.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the dying backend");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the backend prints its port");
        DyingBackend { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits for the process to have killed itself; its exit status.
    fn died(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the backend did not die");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DyingBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// TCP connections (not listeners) with `port` at either end, as the kernel lists them:
/// `(local port, remote port, state)` with the state in hex (`01` established, `08` close-wait).
fn connections_on(port: u16) -> Vec<(u16, u16, String)> {
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let port_of = |addr: &str| {
                u16::from_str_radix(addr.rsplit(':').next().unwrap_or(""), 16).unwrap_or(0)
            };
            let (local, remote, state) = (port_of(cols[1]), port_of(cols[2]), cols[3]);
            // 0A: listening; 06: time-wait, a socket already closed by its owner.
            if (local == port || remote == port) && state != "0A" && state != "06" {
                found.push((local, remote, state.to_string()));
            }
        }
    }
    found
}

/// Waits (at most 5 s) until no connection is left open with `port` at either end; with
/// `established_ok`, only those half-closed (one side gone, the other still holding its
/// socket: what a leak looks like where other clients' keep-alive connections are open).
async fn no_connection_left_on(port: u16, which: &str, established_ok: bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut left = connections_on(port);
        if established_ok {
            left.retain(|(_, _, state)| state != "01");
        }
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "connections left on {which} (port {port}) after the fault: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A gate in front of `backend`, with a metered upload route and a plan that grants 10 runs.
async fn gate_before(backend: &DyingBackend) -> TestApp {
    spawn_app_with(Options {
        upstream_url: Some(backend.url()),
        routes: format!(
            "{TEST_ROUTES}
[[route]]
path = \"/upload_dicom_zip\"
methods = [\"POST\"]
access = \"user\"
multipart = true
max_body = \"500MB\"
timeout_secs = 600
[route.meter]
quota = \"api_calls_full_process\"
cost = 1

[[plan]]
name = \"free\"
price = \"0.00\"
default = true
[plan.quotas]
api_calls_full_process = 10
"
        ),
        ..Options::default()
    })
    .await
}

const BOUNDARY: &str = "----faultB0undary";
const MIB: usize = 1 << 20;

/// A 200 MB upload form as the frontends send it, made as it is sent (never held whole).
fn upload_body() -> reqwest::Body {
    let head = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"patient_name\"\r\n\r\nzhang\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"study_date\"\r\n\r\n20250101\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"ct.zip\"\r\n\
         Content-Type: application/zip\r\n\r\n"
    );
    let tail = format!("\r\n--{BOUNDARY}--\r\n");
    let block = Bytes::from(vec![0x5a; MIB]);
    let pieces = std::iter::once(Bytes::from(head))
        .chain(std::iter::repeat_n(block, 200))
        .chain(std::iter::once(Bytes::from(tail)));
    reqwest::Body::wrap_stream(futures_util::stream::iter(
        pieces.map(Ok::<_, std::io::Error>),
    ))
}

/// The backend dies 16 MB into a 200 MB metered upload: the client is answered 502 with a
/// `detail`, the run is refunded (the body never reached the backend whole), and neither the
/// backend's side nor the client's keeps a connection.
#[tokio::test]
async fn a_backend_killed_mid_upload_answers_502_refunds_and_leaves_no_connection() {
    let mut backend = DyingBackend::start(16 * MIB);
    let app = gate_before(&backend).await;
    let a = app.signup("uploader").await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = client
        .post(app.url("/upload_dicom_zip"))
        .bearer_auth(&a.access)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(upload_body())
        .send()
        .await
        .expect("the client is answered, not cut off");
    assert!(!backend.died().success(), "the backend was killed");
    assert_eq!(resp.status(), 502);
    let body: serde_json::Value = resp.json().await.expect("a JSON answer");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    drop(client);
    let q = app.quota(&a, "api_calls_full_process").await;
    assert_eq!(q.used, 0, "the broken upload was refunded");
    assert_eq!(
        app.usage_rows_in(&a, "api_calls_full_process", "refunded")
            .await,
        1
    );
    no_connection_left_on(backend.port, "the backend", false).await;
    no_connection_left_on(app.addr.port(), "the client's side", true).await;
}

/// The backend dies 16 MB into a 200 MB download: the client sees the reply end early (its
/// announced length is never reached, so it cannot take the file for whole), nothing is charged
/// (downloads are not metered), and no connection is left on either side.
#[tokio::test]
async fn a_backend_killed_mid_download_cuts_the_reply_and_leaves_no_connection() {
    let mut backend = DyingBackend::start(16 * MIB);
    let app = gate_before(&backend).await;
    let a = app.signup("downloader").await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = client
        .get(app.url("/download"))
        .bearer_auth(&a.access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.content_length(), Some(200 * MIB as u64));
    let mut got = 0usize;
    let mut stream = resp.bytes_stream();
    let mut ended_in_error = false;
    while let Some(piece) = stream.next().await {
        match piece {
            Ok(b) => got += b.len(),
            Err(_) => {
                ended_in_error = true;
                break;
            }
        }
    }
    assert!(!backend.died().success(), "the backend was killed");
    assert!(
        ended_in_error,
        "the reply ended early without an error after {got} bytes"
    );
    assert!(
        got < 200 * MIB,
        "{got} bytes arrived of a reply cut at 16 MB"
    );
    drop(stream);
    drop(client);
    assert_eq!(app.quota(&a, "api_calls_full_process").await.used, 0);
    no_connection_left_on(backend.port, "the backend", false).await;
    no_connection_left_on(app.addr.port(), "the client's side", true).await;
}
