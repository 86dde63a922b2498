//! Client connections: an idle keep-alive connection parks without hyper's buffers and wakes
//! for its client's next request, whole or split across the park; timeouts and shutdown still
//! hold for parked connections.

use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// Well past the gate's park delay (250 ms).
const QUIET: Duration = Duration::from_millis(800);

/// A raw HTTP/1.1 client on one connection, keeping what it read past the last response.
struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(app: &TestApp) -> Client {
        Client {
            s: TcpStream::connect(app.addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    async fn get(&mut self, path: &str) -> String {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await;
        self.response().await
    }

    /// One response, as text.
    async fn response(&mut self) -> String {
        String::from_utf8_lossy(&self.response_bytes().await).into_owned()
    }

    /// One response: head and `Content-Length` body.
    async fn response_bytes(&mut self) -> Vec<u8> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    let rest = self.buf.split_off(end + 4 + len);
                    return std::mem::replace(&mut self.buf, rest);
                }
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let n = tokio::time::timeout(Duration::from_secs(5), self.s.read(&mut chunk))
                .await
                .expect("an answer within 5 s")
                .unwrap();
            assert!(
                n > 0,
                "closed before a whole response: {}",
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Waits up to `limit` for the gate to close the connection; how long that took.
    async fn closed_within(&mut self, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        let mut chunk = [0u8; 1024];
        loop {
            match tokio::time::timeout_at((started + limit).into(), self.s.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// Starts a request head and sends one more byte of it every `every`; how long until the gate
/// cut the connection (`None`: not within 4 s).
async fn trickle_head(app: &TestApp, every: Duration) -> Option<Duration> {
    let mut c = Client::connect(app).await;
    let started = Instant::now();
    c.send(b"GET /slow-loris HTTP/1.1\r\n").await;
    while started.elapsed() < Duration::from_secs(4) {
        tokio::time::sleep(every).await;
        if c.s.write_all(b"X").await.is_err()
            || c.closed_within(Duration::from_millis(1)).await.is_some()
        {
            return Some(started.elapsed());
        }
    }
    None
}

fn parked(app: &TestApp) -> usize {
    app.running.as_ref().unwrap().parked_connections()
}

#[tokio::test]
async fn an_idle_connection_parks_and_wakes_for_its_next_request() {
    let app = spawn_app().await;
    let mut c = Client::connect(&app).await;
    let first = c.get("/first").await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    tokio::time::sleep(QUIET).await;
    assert_eq!(parked(&app), 1, "the quiet connection parked");

    let second = c.get("/second").await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert!(second.contains(r#""path":"/second""#), "{second}");
    assert_eq!(parked(&app), 0, "woken by the request");

    // Pipelined requests on a woken connection are answered in order.
    c.send(b"GET /p1 HTTP/1.1\r\nHost: x\r\n\r\nGET /p2 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let p1 = c.response().await;
    let p2 = c.response().await;
    assert!(p1.contains(r#""path":"/p1""#), "{p1}");
    assert!(p2.contains(r#""path":"/p2""#), "{p2}");

    // The same after a reply from the gate's own API.
    let mut own = Client::connect(&app).await;
    let health = own.get("/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    tokio::time::sleep(QUIET).await;
    assert_eq!(parked(&app), 2, "parked after the gate's own reply too");
    drop(own);

    // A parked connection does not hold up shutdown (the grace period is 5 s).
    assert!(parked(&app) >= 1);
    let stopped = tokio::time::timeout(Duration::from_secs(3), app.stop()).await;
    assert!(stopped.is_ok(), "shutdown waited for a parked connection");
    assert!(c.closed_within(Duration::from_secs(2)).await.is_some());
}

#[tokio::test]
async fn a_head_split_across_a_park_is_served_whole() {
    let app = spawn_app().await;
    let mut c = Client::connect(&app).await;
    let first = c.get("/first").await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    c.send(b"GET /split?x=1 HTTP/1.1\r\nHo").await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(parked(&app), 1, "parked with half a head");
    c.send(b"st: x\r\nX-Part: two\r\n\r\n").await;
    let resp = c.response().await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains(r#""path":"/split""#), "{resp}");
    assert!(resp.contains(r#""x-part":"two""#), "{resp}");

    // The same for the very first request of a connection.
    let mut c = Client::connect(&app).await;
    c.send(b"GET /early HTTP/1.1\r\n").await;
    tokio::time::sleep(QUIET).await;
    c.send(b"Host: x\r\n\r\n").await;
    let resp = c.response().await;
    assert!(resp.contains(r#""path":"/early""#), "{resp}");
    app.stop().await;
}

#[tokio::test]
async fn a_reply_the_client_is_slow_to_read_is_delivered_whole_before_parking() {
    let app = spawn_app().await;
    let mut c = Client::connect(&app).await;
    let n = 16 * 1024 * 1024;
    c.send(format!("GET /big?bytes={n} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await;
    // The client reads nothing for a while: the gate's writes wait on a full socket.
    tokio::time::sleep(QUIET).await;
    assert_eq!(parked(&app), 0, "a reply still being written never parks");
    let resp = c.response_bytes().await;
    assert!(resp.starts_with(b"HTTP/1.1 200"));
    let body_at = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(resp.len() - body_at, n, "the whole body arrived");
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        parked(&app),
        1,
        "parked once the reply was out and the client quiet"
    );
    let again = c.get("/again").await;
    assert!(again.contains(r#""path":"/again""#), "{again}");
    app.stop().await;
}

#[tokio::test]
async fn parked_connections_keep_the_idle_and_header_timeouts() {
    let app = spawn_app_with(Options {
        server: "header_read_timeout_secs = 1".into(),
        ..Options::default()
    })
    .await;

    // Idle after a request: closed about a second later, as an unparked connection would be.
    let mut idle = Client::connect(&app).await;
    assert!(idle.get("/x").await.starts_with("HTTP/1.1 200"));
    let took = idle.closed_within(Duration::from_secs(4)).await;
    let took = took.expect("an idle connection is closed");
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");

    // A head trickled in one byte at a time, each after a pause long enough to park: the
    // parks do not restart the clock, the connection is cut about a second in.
    let took = trickle_head(&app, Duration::from_millis(400)).await;
    let took = took.expect("a trickled head was not cut off");
    assert!(took < Duration::from_millis(2500), "cut after {took:?}");

    // Trickled faster than the park delay (the connection never parks): cut about a second in
    // all the same.
    let took = trickle_head(&app, Duration::from_millis(100)).await;
    let took = took.expect("a head trickled faster than the park delay was not cut off");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "cut after {took:?}"
    );

    // Whole requests for longer than the timeout on one busy connection: each head is timed
    // on its own, so none is cut.
    let mut busy = Client::connect(&app).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        assert!(busy.get("/x").await.starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}

/// An answer given before the request body was read (a JSON body over the API's 64 KiB limit)
/// ends the connection, and says so; a body read whole keeps it open.
#[tokio::test]
async fn an_answer_before_the_body_is_read_says_connection_close() {
    let app = spawn_app().await;
    let mut c = Client::connect(&app).await;
    c.send(
        b"POST /auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 300000\r\n\r\n",
    )
    .await;
    c.send(&vec![b'a'; 150_000]).await;
    let early = c.response().await.to_ascii_lowercase();
    assert!(early.starts_with("http/1.1 413"), "{early}");
    assert!(early.contains("\r\nconnection: close\r\n"), "{early}");
    assert!(
        c.closed_within(Duration::from_secs(3)).await.is_some(),
        "the connection ends after the early answer"
    );

    let mut c = Client::connect(&app).await;
    let body = br#"{"email": "not-an-email"}"#;
    c.send(
        format!(
            "POST /auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    c.send(body).await;
    let read_whole = c.response().await.to_ascii_lowercase();
    assert!(read_whole.starts_with("http/1.1 422"), "{read_whole}");
    assert!(!read_whole.contains("connection: close"), "{read_whole}");
    assert!(c.get("/healthz").await.starts_with("HTTP/1.1 200"));
    app.stop().await;
}

/// Request heads are read up to 64 KiB (hyper's own bound is its read buffer, which the gate
/// makes large for uploads): a head under that is served, one over it gets a 431 JSON answer
/// on a closing connection, and the next connection is served as usual.
#[tokio::test]
async fn a_request_head_over_64_kib_gets_431() {
    let app = spawn_app().await;
    let mut c = Client::connect(&app).await;
    let fits = "a".repeat(48 * 1024);
    c.send(format!("GET /fits HTTP/1.1\r\nHost: x\r\nX-Big: {fits}\r\n\r\n").as_bytes())
        .await;
    let served = c.response().await;
    assert!(served.starts_with("HTTP/1.1 200"), "{}", &served[..80]);
    assert!(served.contains(r#""path":"/fits""#));

    // On the same connection, whose reads have grown with the last head: one over the limit.
    let over = "b".repeat(200 * 1024);
    c.send(format!("GET /over HTTP/1.1\r\nHost: x\r\nX-Big: {over}\r\n\r\n").as_bytes())
        .await;
    let refused = c.response().await;
    assert!(refused.starts_with("HTTP/1.1 431"), "{refused}");
    assert!(refused.contains("connection: close"), "{refused}");
    let body = &refused[refused.find("\r\n\r\n").unwrap() + 4..];
    let detail: serde_json::Value = serde_json::from_str(body).unwrap();
    assert!(
        detail["detail"].as_str().unwrap().contains("64 KiB"),
        "{body}"
    );
    assert!(c.closed_within(Duration::from_secs(3)).await.is_some());

    let mut next = Client::connect(&app).await;
    assert!(next.get("/after").await.starts_with("HTTP/1.1 200"));
    app.stop().await;
}
