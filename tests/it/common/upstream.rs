//! A real HTTP server playing the iDoctor backend: JSON replies, slow replies, resets, 101
//! upgrades, large and broken bodies. It records every request it receives, so a test can
//! assert what did (and did not) reach the backend.

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type BoxBody =
    http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// One request as the backend saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
}

impl Seen {
    pub fn path(&self) -> &str {
        self.path_and_query.split('?').next().unwrap_or("")
    }
}

pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let recorder = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let recorder = recorder.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(req, recorder.clone()));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

fn query_param(req: &Request<Incoming>, name: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.parse().ok()).flatten()
    })
}

fn query_str(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<BoxBody> {
    let mut r = Response::new(full(value.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

fn full(s: impl Into<Bytes>) -> BoxBody {
    Full::new(s.into()).map_err(|e| match e {}).boxed()
}

async fn handle(
    mut req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<BoxBody>, Box<dyn std::error::Error + Send + Sync>> {
    let path = req.uri().path().to_string();
    seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        path_and_query: req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: req.headers().clone(),
    });
    let headers_json = || {
        let mut map = serde_json::Map::new();
        for (k, v) in req.headers() {
            map.insert(k.to_string(), v.to_str().unwrap_or("").into());
        }
        serde_json::Value::Object(map)
    };
    Ok(match path.as_str() {
        p if p.starts_with("/slow") => {
            let ms = query_param(&req, "ms").unwrap_or(2000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            json(
                StatusCode::OK,
                serde_json::json!({"status": "ok", "slept_ms": ms}),
            )
        }
        // No reply at all: hyper closes the connection when the service fails.
        "/reset" => return Err("reset by the test upstream".into()),
        "/die-mid" => {
            let mut r = Response::new(BoxBody::new(DiesMidway {
                sent: false,
                delay: Box::pin(tokio::time::sleep(Duration::from_millis(300))),
            }));
            r.headers_mut()
                .insert("content-length", "100000".parse().unwrap());
            r
        }
        "/echo" => {
            let body = req.into_body().map_err(|e| e.into()).boxed();
            Response::new(body)
        }
        "/count" => {
            let mut body = req.into_body();
            let (mut bytes, mut sum) = (0u64, 0u64);
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame?.into_data() {
                    bytes += data.len() as u64;
                    sum = checksum(sum, &data);
                }
            }
            json(
                StatusCode::OK,
                serde_json::json!({"bytes": bytes, "sum": sum}),
            )
        }
        "/big" => {
            let n = query_param(&req, "bytes").unwrap_or(1 << 20);
            let mut r = Response::new(BoxBody::new(Pattern {
                remaining: n,
                offset: 0,
            }));
            r.headers_mut()
                .insert("content-length", n.to_string().parse().unwrap());
            r
        }
        "/hop" => {
            let mut r = json(StatusCode::OK, serde_json::json!({"ok": true}));
            let h = r.headers_mut();
            h.insert("connection", "x-internal".parse().unwrap());
            h.insert("x-internal", "secret".parse().unwrap());
            h.insert("keep-alive", "timeout=5".parse().unwrap());
            h.insert("access-control-allow-origin", "*".parse().unwrap());
            r
        }
        "/ws" => {
            if req.headers().get("upgrade").is_none() {
                return Ok(json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": "upgrade required"}),
                ));
            }
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    let mut io = TokioIo::new(upgraded);
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            let mut r = Response::new(full(""));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut().insert("upgrade", "echo".parse().unwrap());
            r.headers_mut()
                .insert("connection", "upgrade".parse().unwrap());
            r
        }
        // The backend's images (`/get_image/...`, `/get_output_image/...`): a real PNG, so a
        // browser's `<img>` loads it.
        p if p.starts_with("/get_image/") || p.starts_with("/get_output_image/") => {
            let mut r = Response::new(full(PNG_1X1));
            r.headers_mut()
                .insert("content-type", "image/png".parse().unwrap());
            r
        }
        "/ws-refuse" => json(
            StatusCode::FORBIDDEN,
            serde_json::json!({"detail": "no tunnel for you"}),
        ),
        // Any other path may be told how to answer, as the real backend does on a bad day.
        _ if query_str(&req, "behave").is_some() => {
            let behave = query_str(&req, "behave").unwrap_or_default();
            let ms = query_param(&req, "ms").unwrap_or(3000);
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                frame?;
            }
            match behave.as_str() {
                "blocked" => json(
                    StatusCode::OK,
                    serde_json::json!({"status": "blocked", "message": "case locked"}),
                ),
                "processing" => json(StatusCode::OK, serde_json::json!({"status": "processing"})),
                "error-key" => json(
                    StatusCode::OK,
                    serde_json::json!({"error": "请先上传 DICOM"}),
                ),
                "null" => json(StatusCode::OK, serde_json::Value::Null),
                "ok" => json(
                    StatusCode::OK,
                    serde_json::json!({"status": "ok", "upload_id": "u"}),
                ),
                "500" => json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    serde_json::json!({"detail": "boom"}),
                ),
                "slow" => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    json(StatusCode::OK, serde_json::json!({"status": "submitted"}))
                }
                "reset" => return Err("reset by the test upstream".into()),
                "die" => {
                    let mut r = Response::new(BoxBody::new(DiesMidway {
                        sent: false,
                        delay: Box::pin(tokio::time::sleep(Duration::from_millis(300))),
                    }));
                    r.headers_mut()
                        .insert("content-length", "100000".parse().unwrap());
                    r
                }
                "big" => json(
                    StatusCode::OK,
                    serde_json::json!({"status": "submitted", "pad": "x".repeat(100_000)}),
                ),
                other => json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": format!("unknown behave={other}")}),
                ),
            }
        }
        _ => {
            let reply = serde_json::json!({
                "status": "submitted",
                "path": path,
                "query": req.uri().query(),
                "method": req.method().as_str(),
                "headers": headers_json(),
            });
            // Read the whole body first, as uvicorn does.
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                frame?;
            }
            json(StatusCode::OK, reply)
        }
    })
}

/// A simple order-sensitive checksum both sides of a transfer can compute.
pub fn checksum(mut sum: u64, data: &[u8]) -> u64 {
    for &b in data {
        sum = sum.wrapping_mul(31).wrapping_add(b as u64);
    }
    sum
}

/// The byte at offset `i` of a pattern body.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// `remaining` bytes of a deterministic pattern, 64 KiB per frame.
pub struct Pattern {
    pub remaining: u64,
    pub offset: u64,
}

impl Body for Pattern {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(64 * 1024);
        let start = self.offset;
        let chunk: Vec<u8> = (start..start + n).map(pattern_byte).collect();
        self.remaining -= n;
        self.offset += n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }
}

/// Sends a little of a promised large body, then (once that is surely flushed) fails: the
/// connection is cut mid-response.
struct DiesMidway {
    sent: bool,
    delay: Pin<Box<tokio::time::Sleep>>,
}

impl Body for DiesMidway {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.sent {
            if self.delay.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            return Poll::Ready(Some(Err("the test upstream died".into())));
        }
        self.sent = true;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; 1000])))))
    }
}

/// A 1x1 transparent PNG.
pub const PNG_1X1: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
    0x89, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x60, 0x68, 0xF8, 0xFF,
    0x1F, 0x00, 0x04, 0x82, 0x02, 0x7F, 0xE7, 0xD8, 0x5A, 0x6C, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
];
