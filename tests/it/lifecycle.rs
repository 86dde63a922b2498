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
