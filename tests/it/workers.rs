//! Worker threads: every worker accepts and serves on its own, a reload cannot change how many
//! there are, and shutdown ends them all.

use std::io::{Read, Write};
use std::time::Duration;

use crate::common::*;

/// The test backend on a thread of its own, so that it answers while the test's thread (the
/// gate's worker 0) is blocked. Dropping the sender stops it.
fn backend_on_own_thread() -> (String, tokio::sync::oneshot::Sender<()>) {
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let up = Upstream::start().await;
            url_tx.send(up.url()).unwrap();
            let _ = stopped.await;
        });
    });
    (url_rx.recv().unwrap(), stop)
}

/// One request on a fresh connection with blocking I/O: while it waits, the calling thread's
/// runtime cannot run anything.
fn blocking_request(app: &TestApp, head: &str) -> String {
    let mut s = std::net::TcpStream::connect(app.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The test's runtime is worker 0; blocking it leaves worker 1 alone to accept, authenticate,
/// forward (on worker 1's own backend connections) and answer the gate's own API.
#[tokio::test]
async fn a_second_worker_serves_alone_while_the_first_is_blocked() {
    let (backend, stop_backend) = backend_on_own_thread();
    let app = spawn_app_with(Options {
        server: "workers = 2".into(),
        upstream_url: Some(backend),
        ..Options::default()
    })
    .await;
    assert_eq!(app.running.as_ref().unwrap().workers(), 2);
    let user = app.signup("worker").await;

    // From here on this thread blocks: only worker 1 can serve.
    for i in 0..4 {
        let out = blocking_request(
            &app,
            &format!(
                "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nConnection: close\r\n\r\nbody-{i}"
            ),
        );
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.ends_with(&format!("body-{i}")), "{out}");
    }
    let out = blocking_request(
        &app,
        &format!(
            "GET /users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            user.access
        ),
    );
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("worker@example.com"), "{out}");

    let running = app.running.as_ref().unwrap();
    running.shutdown();
    drop(stop_backend);
    let mut app = app;
    let running = app.running.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), running.stopped())
        .await
        .expect("every worker ends after shutdown");
}

#[tokio::test]
async fn a_reload_cannot_change_the_number_of_workers() {
    let app = spawn_app_with(Options {
        server: "workers = 2".into(),
        ..Options::default()
    })
    .await;
    let running = app.running.as_ref().unwrap();
    let mut config = app.services().config().clone();
    config.workers = 3;
    let refused = running.reload(config).await.unwrap_err();
    assert!(refused.contains("server.workers"), "{refused}");
    assert_eq!(running.workers(), 2);
    app.stop().await;
}

/// 32 connections opened at once and kept are shared by both workers (`server::balance`: the
/// worker that accepts hands a connection to a live worker holding fewer), and each worker's
/// share is counted, for the operator in `/metrics` and for the benchmark. Before the
/// hand-over, one run in three put all 32 on one worker.
#[tokio::test]
async fn connections_and_requests_are_counted_per_worker() {
    let app = spawn_app_with(Options {
        server: "workers = 2".into(),
        ..Options::default()
    })
    .await;
    let mut streams = Vec::new();
    for _ in 0..32 {
        streams.push(tokio::net::TcpStream::connect(app.addr).await.unwrap());
    }
    let mut kept = Vec::new();
    for mut s in streams {
        kept.push(tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
            s // kept open
        }));
    }
    let mut open = Vec::new();
    for k in kept {
        open.push(k.await.unwrap());
    }
    let per_worker = app.running.as_ref().unwrap().connections_per_worker();
    assert_eq!(per_worker.len(), 2);
    assert_eq!(per_worker.iter().sum::<u64>(), 32, "{per_worker:?}");
    // 16 / 16 when both event loops beat on time; a worker that misses its beats on a loaded
    // machine is given nothing meanwhile, hence the margin.
    assert!(
        per_worker.iter().all(|&n| n >= 8),
        "both workers carry the connections: {per_worker:?}"
    );
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for worker in ["0", "1"] {
        for name in [
            "gate_worker_connections_total",
            "gate_worker_requests_total",
        ] {
            assert!(
                metrics.contains(&format!("{name}{{worker=\"{worker}\"}}")),
                "{name} for worker {worker}"
            );
        }
    }
    drop(open);
    app.stop().await;
}
