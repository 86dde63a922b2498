//! The gate's HTTP/1.1 to the backend, byte by byte: a backend on raw sockets answers each
//! request with the bytes its path names, so every framing, interim reply and broken reply
//! the gate must read is sent exactly as a real backend could, and the heads the gate writes are
//! kept for inspection.

use crate::common::{Options, spawn_app_with};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the raw backend answers for a path, and whether it then closes the connection.
fn script(path: &str) -> (&'static [u8], bool) {
    match path {
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-digest: 1\r\n\r\n",
            false,
        ),
        "/continue" => (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 4\r\n\r\ndone",
            false,
        ),
        "/until-close" => (b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it", true),
        "/no-content" => (b"HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n", false),
        "/head" => (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", false),
        "/garbage" => (b"HTTP/1.1 OK fine\r\n\r\n", true),
        "/two-lengths" => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc",
            true,
        ),
        "/te-and-cl" => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            false,
        ),
        "/gzip" => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n\x1f\x8b",
            true,
        ),
        "/upgrade-early" => (
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\nwelcome;",
            false,
        ),
        "/cut-chunk" => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10\r\nonly-part",
            true,
        ),
        _ => (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}", false),
    }
}

/// What the raw backend saw: every request (head and body) and how many connections.
#[derive(Clone, Default)]
struct Seen {
    requests: Arc<Mutex<Vec<String>>>,
    connections: Arc<AtomicUsize>,
}

/// Serves [`script`] on raw sockets; every request head received (and its body, read by
/// `Content-Length` or to the last chunk) is logged. A request for a path under `/stale` on a
/// connection that already answered one is not answered: the connection closes, the way a
/// backend that closed it while idle would be found.
async fn raw_backend() -> (String, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let log = Seen::default();
    let seen = log.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            seen.connections.fetch_add(1, Ordering::SeqCst);
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut answered = 0;
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut chunk).await {
                            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                            _ => return,
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end + 4]).to_string();
                    let body_done = |b: &[u8]| {
                        if let Some(len) = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                        {
                            b.len() >= len.trim().parse::<usize>().unwrap()
                        } else if head.contains("transfer-encoding: chunked") {
                            b.ends_with(b"0\r\n\r\n")
                        } else {
                            true
                        }
                    };
                    while !body_done(&buf[end + 4..]) {
                        match stream.read(&mut chunk).await {
                            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                            _ => return,
                        }
                    }
                    let request = String::from_utf8_lossy(&buf).to_string();
                    buf.clear();
                    seen.requests.lock().unwrap().push(request);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                    if path.starts_with("/stale") && answered > 0 {
                        return;
                    }
                    answered += 1;
                    let (reply, close) = script(&path);
                    if stream.write_all(reply).await.is_err() || close {
                        return;
                    }
                    if path == "/upgrade-early" {
                        // A tunnel now: echo until the gate closes it.
                        while let Ok(n) = stream.read(&mut chunk).await {
                            if n == 0 || stream.write_all(&chunk[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (url, log)
}

async fn app_on_raw_backend() -> (crate::common::TestApp, Seen) {
    let (url, log) = raw_backend().await;
    let app = spawn_app_with(Options {
        upstream_url: Some(url),
        ..Options::default()
    })
    .await;
    (app, log)
}

#[tokio::test]
async fn replies_pass_in_every_framing_and_interim_replies_are_skipped() {
    let (app, seen) = app_on_raw_backend().await;
    let get = |path: &str| app.client.get(app.url(path)).send();

    let resp = get("/chunked").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "hello world");

    let resp = get("/continue").await.unwrap();
    assert_eq!(
        resp.status(),
        201,
        "1xx replies before the final one are not passed"
    );
    assert_eq!(resp.text().await.unwrap(), "done");

    let resp = get("/until-close").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "all of it");

    // Bodiless replies (a 204 and a HEAD's, both with a length) leave the connection in step:
    // the three requests share one, and each reply is read as its own.
    let before = seen.connections.load(Ordering::SeqCst);
    let resp = get("/no-content").await.unwrap();
    assert_eq!(resp.status(), 204);
    let resp = app.client.head(app.url("/head")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], "5");
    let resp = get("/plain").await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "{}");
    assert_eq!(seen.connections.load(Ordering::SeqCst), before + 1);

    // Both framings: chunked wins, and the client is not told the backend's length.
    let resp = get("/te-and-cl").await.unwrap();
    assert!(resp.headers().get("content-length").is_none());
    assert_eq!(resp.text().await.unwrap(), "hello");
    app.stop().await;
}

#[tokio::test]
async fn broken_replies_get_a_json_502_or_cut_the_client_off() {
    let (app, _) = app_on_raw_backend().await;
    for path in ["/garbage", "/two-lengths", "/gzip"] {
        let resp = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 502, "{path}");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert!(
            v["detail"].as_str().unwrap().contains("backend"),
            "{path}: {v}"
        );
    }
    // Cut off mid-body: the client gets the head and a body that fails, or (when the backend's
    // close is already in when hyper first polls the body, before it flushed the head) a
    // connection that fails; never a body that looks complete.
    match app.client.get(app.url("/cut-chunk")).send().await {
        Ok(resp) => {
            assert_eq!(resp.status(), 200);
            assert!(
                resp.bytes().await.is_err(),
                "a cut-off chunked body must not look complete"
            );
        }
        Err(e) => assert!(e.is_request(), "{e}"),
    }
    let resp = app.client.get(app.url("/plain")).send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "{}");
    app.stop().await;
}

#[tokio::test]
async fn request_bodies_are_framed_by_length_or_chunks() {
    let (app, log) = app_on_raw_backend().await;
    let resp = app
        .client
        .post(app.url("/sized"))
        .body("0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // A body of unknown length, in two chunks.
    let stream = futures_util::stream::iter([
        Ok::<_, std::io::Error>(b"abc".to_vec()),
        Ok(b"defg".to_vec()),
    ]);
    let resp = app
        .client
        .post(app.url("/streamed"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = app.client.get(app.url("/bodiless")).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    let log = log.requests.lock().unwrap().clone();
    let find = |path: &str| {
        log.iter()
            .find(|r| {
                r.starts_with(&format!("POST {path} ")) || r.starts_with(&format!("GET {path} "))
            })
            .unwrap_or_else(|| panic!("{path} reached the backend: {log:?}"))
            .clone()
    };
    let sized = find("/sized");
    assert!(sized.contains("content-length: 10\r\n"), "{sized}");
    assert!(!sized.contains("transfer-encoding"), "{sized}");
    assert!(sized.ends_with("\r\n\r\n0123456789"), "{sized}");
    let streamed = find("/streamed");
    assert!(
        streamed.contains("transfer-encoding: chunked\r\n"),
        "{streamed}"
    );
    assert!(!streamed.contains("content-length"), "{streamed}");
    assert!(
        streamed.ends_with("\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"),
        "{streamed}"
    );
    let bodiless = find("/bodiless");
    assert!(
        bodiless.starts_with("GET /bodiless HTTP/1.1\r\n"),
        "{bodiless}"
    );
    assert!(
        !bodiless.contains("content-length") && !bodiless.contains("transfer-encoding"),
        "{bodiless}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_closed_pooled_connection_resends_only_what_cannot_run_twice() {
    let (app, seen) = app_on_raw_backend().await;
    let resp = app
        .client
        .get(app.url("/stale-first"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "{}");
    // The pooled connection closes when this request reaches it: a GET goes again, on a new
    // connection.
    let resp = app.client.get(app.url("/stale-get")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "{}");
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
    // A POST is not sent twice: the backend may have run it.
    let resp = app
        .client
        .post(app.url("/stale-post"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert!(v["detail"].as_str().unwrap().contains("closed"), "{v}");
    let posts = seen
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.starts_with("POST /stale-post "))
        .count();
    assert_eq!(posts, 1);
    app.stop().await;
}

#[tokio::test]
async fn bytes_sent_with_a_101_reach_the_tunnel_first() {
    let (app, _) = app_on_raw_backend().await;
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    s.write_all(
        b"GET /upgrade-early HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    // The backend wrote its first tunnel bytes in the same write as the 101's head: the gate
    // read them with the head and must pass them on before anything else.
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    while !got.ends_with(b"welcome;") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("the tunnel's first bytes within 5 s")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&got).to_string();
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert!(text.ends_with("\r\n\r\nwelcome;"), "{text}");
    s.write_all(b"ping").await.unwrap();
    let mut echo = Vec::new();
    while echo.len() < 4 {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("the echo within 5 s")
            .unwrap();
        assert!(n > 0);
        echo.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(echo, b"ping");
    drop(s);
    app.stop().await;
}
