//! Forwarding: streaming both ways, header hygiene, upgrades, limits, and every way the backend
//! can fail.

use crate::common::{self, ORIGIN, Options, raw_exchange, spawn_app, spawn_app_with, upstream};
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn forwards_path_query_and_sets_forwarding_headers() {
    let app = spawn_app().await;
    let resp = app
        .client
        .get(app.url("/list_patients?x=1&y=%E5%BC%A0"))
        .header("x-user-id", "spoofed-admin")
        .header("x-user-email", "evil@example.com")
        .header("authorization", "Bearer stolen")
        .header("x-api-key", "sk_live_stolen")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-request-id", "client-chosen")
        .header("connection", "x-hop")
        .header("x-hop", "dropped")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_ne!(request_id, "client-chosen");
    let seen = app.upstream.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.path_and_query, "/list_patients?x=1&y=%E5%BC%A0");
    let h = &s.headers;
    assert!(
        h.get("x-user-id").is_none(),
        "client identity must not reach the backend"
    );
    assert!(h.get("x-user-email").is_none());
    assert!(h.get("authorization").is_none() && h.get("x-api-key").is_none());
    assert!(
        h.get("x-hop").is_none(),
        "headers named by Connection are hop-by-hop"
    );
    assert_eq!(
        h["x-forwarded-for"], "127.0.0.1",
        "an untrusted client's XFF is replaced"
    );
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], app.addr.to_string().as_str());
    assert_eq!(h["x-request-id"], request_id.as_str());
    assert_eq!(h["host"], app.upstream.addr.to_string().as_str());
    app.stop().await;
}

#[tokio::test]
async fn strips_hop_by_hop_response_headers_and_replaces_backend_cors() {
    let app = spawn_app().await;
    let resp = app
        .client
        .get(app.url("/hop"))
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert!(h.get("x-internal").is_none() && h.get("keep-alive").is_none());
    let acao: Vec<_> = h.get_all("access-control-allow-origin").iter().collect();
    assert_eq!(acao, vec![ORIGIN], "exactly one ACAO, the gate's");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert!(
        h["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("X-Quota-Remaining")
    );
    app.stop().await;
}

#[tokio::test]
async fn streams_full_duplex_without_buffering() {
    let app = spawn_app().await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(1);
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    tx.send(Ok(bytes::Bytes::from_static(b"chunk-one")))
        .await
        .unwrap();
    let resp = app
        .client
        .post(app.url("/echo"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .expect("the first chunk came back before the request body ended")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"chunk-one");
    tx.send(Ok(bytes::Bytes::from_static(b"chunk-two")))
        .await
        .unwrap();
    drop(tx);
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(rest, b"chunk-two");
    app.stop().await;
}

#[tokio::test]
async fn large_bodies_pass_byte_exact_both_ways() {
    let app = spawn_app().await;
    let size: u64 = 64 << 20;
    // Upload, chunked (no Content-Length), generated on the fly.
    let mut offset = 0u64;
    let mut expected_sum = 0u64;
    let mut chunks = Vec::new();
    while offset < size {
        let n = (size - offset).min(256 * 1024);
        let chunk: Vec<u8> = (offset..offset + n).map(upstream::pattern_byte).collect();
        expected_sum = upstream::checksum(expected_sum, &chunk);
        chunks.push(Ok::<_, std::io::Error>(bytes::Bytes::from(chunk)));
        offset += n;
    }
    let resp = app
        .client
        .post(app.url("/count"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["bytes"], size);
    assert_eq!(v["sum"], expected_sum);

    // Download.
    let resp = app
        .client
        .get(app.url(&format!("/big?bytes={size}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-length"], size.to_string().as_str());
    let mut stream = resp.bytes_stream();
    let (mut got, mut sum, mut want_sum) = (0u64, 0u64, 0u64);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        let expected: Vec<u8> = (got..got + chunk.len() as u64)
            .map(upstream::pattern_byte)
            .collect();
        want_sum = upstream::checksum(want_sum, &expected);
        sum = upstream::checksum(sum, &chunk);
        got += chunk.len() as u64;
    }
    assert_eq!(got, size);
    assert_eq!(sum, want_sum);
    app.stop().await;
}

#[tokio::test]
async fn over_limit_bodies_get_413() {
    let app = spawn_app().await;
    // Declared too large: refused before a byte is forwarded.
    let resp = app
        .client
        .post(app.url("/small/upload"))
        .body(vec![b'a'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert!(v["detail"].as_str().unwrap().contains("1024"));
    assert!(app.upstream.seen().is_empty());

    // Chunked, so the size shows only while streaming: cut off at the limit.
    let chunks = (0..8).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'b'; 512])));
    let resp = app
        .client
        .post(app.url("/small/count"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    match resp {
        Ok(r) => assert_eq!(r.status(), 413),
        Err(e) => panic!("expected a 413 answer, got {e}"),
    }
    // Within the limit passes.
    let resp = app
        .client
        .post(app.url("/small/count"))
        .body(vec![b'c'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn backend_failures_map_to_json_502_and_504() {
    // Refused.
    let app = spawn_app_with(Options {
        upstream_url: Some(format!("http://127.0.0.1:{}", common::dead_port())),
        ..Options::default()
    })
    .await;
    let resp = app.client.get(app.url("/anything")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert!(v["detail"].as_str().unwrap().contains("unreachable"));
    app.stop().await;

    let app = spawn_app().await;
    // Reset before answering.
    let resp = app.client.get(app.url("/reset")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert!(resp.json::<serde_json::Value>().await.unwrap()["detail"].is_string());
    // Slower than the route's timeout (1 s).
    let started = std::time::Instant::now();
    let resp = app
        .client
        .get(app.url("/slow-route?ms=5000"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "a slow backend never hangs the client"
    );
    assert!(
        resp.json::<serde_json::Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("1 s")
    );
    app.stop().await;
}

#[tokio::test]
async fn backend_dying_mid_response_cuts_the_client_off_and_the_gate_goes_on() {
    let app = spawn_app().await;
    let resp = app.client.get(app.url("/die-mid")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "the head was already sent");
    let body = resp.bytes().await;
    assert!(body.is_err(), "a truncated body must not look complete");
    let resp = app.client.get(app.url("/after")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn upgrade_tunnels_only_after_the_backend_says_101() {
    let app = spawn_app().await;
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("upgrade: echo"));
    // Quiet for longer than an idle HTTP connection takes to park: a tunnel never parks.
    tokio::time::sleep(Duration::from_millis(800)).await;
    s.write_all(b"ping-through-tunnel").await.unwrap();
    let mut got = Vec::new();
    while got.len() < 19 {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(&got, b"ping-through-tunnel");

    // Refused by the backend: an ordinary answer, and no tunnel (the connection stays HTTP).
    let out = raw_exchange(
        app.addr,
        b"GET /ws-refuse HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert!(out.contains("no tunnel for you"));
    assert!(
        out.matches("HTTP/1.1 200").count() == 1,
        "the pipelined request is read as HTTP: {out}"
    );
    app.stop().await;
}

#[tokio::test]
async fn malformed_and_smuggling_requests_are_refused() {
    let app = spawn_app().await;
    let out = raw_exchange(app.addr, b"GARBAGE\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    let out = raw_exchange(app.addr, b"GET /x HTTP/9.9\r\nHost: x\r\n\r\n").await;
    assert!(
        out.starts_with("HTTP/1.1 4") || out.starts_with("HTTP/1.1 505") || out.is_empty(),
        "{out}"
    );

    // Content-Length with Transfer-Encoding: read as chunked (RFC 9112 §6.3), the length
    // dropped, and the connection closed after one reply, so the request behind it is never read.
    let out = raw_exchange(
        app.addr,
        b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{out}");
    assert!(out.contains("connection: close"), "{out}");
    assert!(
        out.contains(r#""bytes":0"#),
        "the body was read as chunked: {out}"
    );
    let out = raw_exchange(
        app.addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 4"), "{out}");
    let out = raw_exchange(
        app.addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    let paths: Vec<String> = app
        .upstream
        .seen()
        .iter()
        .map(|s| s.path().to_string())
        .collect();
    assert_eq!(
        paths,
        vec!["/count"],
        "only the chunked reading of the conflicting request passed"
    );
    app.stop().await;
}

#[tokio::test]
async fn access_rules_answer_json_with_cors() {
    let app = spawn_app().await;
    let cases = [
        ("GET", "/list_tasks", 403),
        ("POST", "/admin/settings", 403),
        ("POST", "/admin/quotas/users/x/reset", 401),
        ("POST", "/process/p/20250101", 401),
        ("POST", "/only-get", 405),
    ];
    for (method, path, status) in cases {
        let resp = app
            .client
            .request(method.parse().unwrap(), app.url(path))
            .header("origin", ORIGIN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{method} {path}");
        assert_eq!(
            resp.headers()["access-control-allow-origin"],
            ORIGIN,
            "{path}"
        );
        assert!(resp.headers().get("x-request-id").is_some());
        if status == 401 {
            assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        }
        if status == 405 {
            assert_eq!(resp.headers()["allow"], "GET");
        }
        let v: serde_json::Value = resp.json().await.unwrap();
        assert!(
            v["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{path}: {v}"
        );
    }
    assert!(
        app.upstream.seen().is_empty(),
        "none of these reach the backend"
    );

    // HEAD is allowed wherever GET is.
    let resp = app.client.head(app.url("/only-get")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn unknown_paths_follow_the_configured_default() {
    let app = spawn_shipped_default().await;
    let resp = app
        .client
        .get(app.url("/no/such/thing"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    app.stop().await;

    let app = spawn_app_with(Options {
        server: "unknown_routes = \"user\"".into(),
        routes: String::new(),
        ..Options::default()
    })
    .await;
    let resp = app
        .client
        .get(app.url("/no/such/thing"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        401,
        "an unknown path is never forwarded unauthenticated"
    );
    assert!(app.upstream.seen().is_empty());
    app.stop().await;
}

async fn spawn_shipped_default() -> common::TestApp {
    common::spawn_shipped("").await
}

#[tokio::test]
async fn cors_preflight_allows_the_gates_headers() {
    let app = spawn_app().await;
    let resp = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/process/p/d"))
        .header("origin", ORIGIN)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "x-api-key, content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], ORIGIN);
    assert_eq!(h["access-control-allow-credentials"], "true");
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for needed in ["authorization", "content-type", "x-api-key"] {
        assert!(allowed.contains(needed), "{allowed}");
    }
    let methods = h["access-control-allow-methods"].to_str().unwrap();
    for m in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        assert!(methods.contains(m));
    }
    let resp = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/process/p/d"))
        .header("origin", "http://evil.test")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    assert!(
        app.upstream.seen().is_empty(),
        "preflights are answered by the gate"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_platform_layout_serves_the_gate_under_api_and_the_backend_under_api_ctai() {
    let app = crate::common::spawn_shipped("").await;
    let resp = app
        .client
        .post(app.url("/api/auth/register"))
        .json(&serde_json::json!({"email": "plat@example.com", "username": "platform", "password": "password-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let tokens: serde_json::Value = app
        .client
        .post(app.url("/api/auth/login"))
        .json(&serde_json::json!({"username_or_email": "platform", "password": "password-1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let auth = format!("Bearer {}", tokens["access_token"].as_str().unwrap());
    let plans = app
        .client
        .get(app.url("/api/plans/?active_only=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(plans.status(), 200);
    let quotas = app
        .with_authorization(&auth)
        .get("/api/admin/quotas/users/me")
        .send()
        .await
        .unwrap();
    assert_eq!(quotas.status(), 200);

    // Backend paths: prefix removed, matched, authenticated and metered as without it.
    let resp = app
        .with_authorization(&auth)
        .get("/api/ctai/list_patients?x=1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        app.upstream.seen().last().unwrap().path_and_query,
        "/list_patients?x=1"
    );
    let resp = app
        .with_authorization(&auth)
        .post("/api/ctai/process/p1/20250101")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-quota-used"], "1");
    // The patient name goes to the backend in the account's namespace (`tenancy`).
    let seen = app.upstream.seen().last().unwrap().path().to_string();
    let (ns, rest) = seen
        .strip_prefix("/process/")
        .and_then(|s| s.split_once('~'))
        .unwrap_or_else(|| panic!("not namespaced: {seen}"));
    assert_eq!(rest, "p1/20250101");
    // The account's id (a UUID).
    assert!(
        ns.len() == 36 && ns.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'),
        "{ns}"
    );
    let resp = app
        .with_authorization(&auth)
        .get("/api/ctai/admin/quotas/users/x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = app
        .client
        .get(app.url("/api/ctai/auth/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        404,
        "under the backend prefix, gate paths are the backend's (and unknown)"
    );
    app.stop().await;
}

/// A backend written on raw sockets: answers every request on a connection with `{}` and keeps
/// the connection open until `linger` passes without a request, then closes it the way uvicorn
/// does past its keep-alive (a plain FIN, no `Connection: close`). Counts connections.
async fn lingering_backend(linger: Duration) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let read = tokio::time::timeout(linger, stream.read(&mut chunk)).await;
                    let n = match read {
                        Ok(Ok(n)) if n > 0 => n,
                        _ => return, // idle for too long, or the gate closed it
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                        if stream.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, count)
}

#[tokio::test]
async fn backend_connections_are_reused_and_replaced_when_the_backend_closes_them() {
    // Kept alive: sequential requests share one connection.
    let (url, connections) = lingering_backend(Duration::from_secs(30)).await;
    let app = spawn_app_with(Options {
        upstream_url: Some(url),
        ..Options::default()
    })
    .await;
    for _ in 0..10 {
        let resp = app.client.get(app.url("/anything")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "{}");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    app.stop().await;

    // Closed by the backend while idle in the pool: the next request still gets its answer,
    // on a new connection.
    let (url, connections) = lingering_backend(Duration::from_millis(100)).await;
    let app = spawn_app_with(Options {
        upstream_url: Some(url),
        ..Options::default()
    })
    .await;
    for round in 1..=3 {
        let resp = app.client.get(app.url("/anything")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "round {round}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(connections.load(Ordering::SeqCst), 3);
    app.stop().await;
}

/// A backend that answers as soon as it has a request's head (as nginx's `return` does) and
/// then reads whatever follows on that connection without answering again.
async fn early_answer_backend() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
                let reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                if stream.write_all(reply).await.is_err() {
                    return;
                }
                while matches!(stream.read(&mut chunk).await, Ok(n) if n > 0) {}
            });
        }
    });
    url
}

#[tokio::test]
async fn a_connection_still_sending_an_upload_is_not_handed_to_the_next_request() {
    let app = spawn_app_with(Options {
        upstream_url: Some(early_answer_backend().await),
        ..Options::default()
    })
    .await;
    // An upload whose reply comes back while its body is still being sent.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tx.send(Ok(vec![b'x'; 1024])).await.unwrap();
    let body = reqwest::Body::wrap_stream(stream_of(rx));
    let upload = app
        .client
        .post(app.url("/anything"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 200);
    assert_eq!(upload.text().await.unwrap(), "{}");
    // The upload's connection is back in the pool but busy: the next request must not wait
    // for it (it would wait until the upload ends, which only happens after this request).
    let next = tokio::time::timeout(
        Duration::from_secs(10),
        app.client.get(app.url("/anything")).send(),
    )
    .await
    .expect("the next request was held behind an unfinished upload")
    .unwrap();
    assert_eq!(next.status(), 200);
    drop(tx);
    app.stop().await;
}

/// A body stream from a channel of chunks.
fn stream_of(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
