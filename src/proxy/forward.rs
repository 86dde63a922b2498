//! Forwarding: HTTP/1 connections to the backend, kept in a small pool of our own, with a
//! timeout on the reply and the mapping of every transport failure to a JSON 502 / 504 (or
//! 413 for a body cut off by its limit).
//!
//! Each worker thread (`crate::worker`) has a pool of its own: a stack of idle connections
//! behind an uncontended mutex. Check-out pops the most recently used one, and a connection
//! goes back when its reply body has been read to the end (the [`Pooled`] body does that, also
//! when the reply has no body). A connection is thus only used by the worker whose event loop
//! it is registered with, so its wake-ups never cross threads. hyper-util's general-purpose
//! client did the same through keyed pools, a spawned task per request to wait for the
//! connection to become ready again and a racing connect; its pool was about 9 % of a proxied
//! request's CPU in a profile, for one backend host.
//!
//! Idle connections are not reused after `pool_idle_timeout` (4 s by default, below uvicorn's
//! 5 s keep-alive): a connection the backend has already closed would otherwise fail the next
//! request (hyper #2136). If a reused connection fails before the request was written, the
//! request is retried on another one; once written, it never is (it may not be idempotent).

use axum::body::Body;
use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::config::UpstreamConfig;
use crate::error::GateError;

/// The backend and the connections to it.
pub struct Upstream {
    authority: Authority,
    /// `host:port` to connect to.
    address: String,
    connect_timeout: Duration,
    /// One per worker thread.
    pools: Arc<[Arc<Pool>]>,
}

impl Upstream {
    /// Must run inside the tokio runtime (starts the pools' reaper). `workers`: the threads
    /// that will send requests (each gets a pool).
    pub fn new(cfg: &UpstreamConfig, workers: usize) -> Upstream {
        let authority = cfg.authority.clone();
        let address = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        let pools: Arc<[Arc<Pool>]> = (0..workers.max(1))
            .map(|_| {
                Arc::new(Pool {
                    idle: Mutex::new(Vec::new()),
                    idle_timeout: cfg.pool_idle_timeout,
                    max_idle: cfg.pool_max_idle_per_host,
                })
            })
            .collect();
        tokio::spawn(reap(Arc::downgrade(&pools)));
        Upstream {
            authority,
            address,
            connect_timeout: cfg.connect_timeout,
            pools,
        }
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The request target for a canonical path and query (origin form: the gate sets `Host`).
    pub fn uri_for(&self, path_and_query: String) -> Result<Uri, GateError> {
        let pq = PathAndQuery::from_maybe_shared(bytes::Bytes::from(path_and_query))
            .map_err(|_| GateError::bad_request("the request target is not a valid URI"))?;
        Ok(Uri::from(pq))
    }

    /// Sends `req` and waits at most `timeout` for the reply's head. `body_exceeded` is the flag
    /// of a [`super::body::LimitedBody`], so a body cut off at its limit answers 413, not 502.
    pub async fn send(
        &self,
        req: Request<Body>,
        timeout: Duration,
        body_exceeded: Option<Arc<AtomicBool>>,
    ) -> Result<Response<Body>, GateError> {
        let result = tokio::time::timeout(timeout, self.request(req)).await;
        let too_large = || {
            body_exceeded
                .as_ref()
                .is_some_and(|f| f.load(Ordering::Acquire))
        };
        match result {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(_)) if too_large() => {
                metrics::counter!("gate_upstream_errors_total", "kind" => "body_limit")
                    .increment(1);
                Err(GateError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body exceeds the limit for this route",
                ))
            }
            Ok(Err(Failure::Connect(e))) => {
                metrics::counter!("gate_upstream_errors_total", "kind" => "connect").increment(1);
                tracing::warn!(error = %e, "upstream connect failed");
                Err(GateError::bad_gateway("the backend is unreachable"))
            }
            Ok(Err(Failure::Closed(e))) => {
                metrics::counter!("gate_upstream_errors_total", "kind" => "closed").increment(1);
                tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "upstream request failed");
                Err(GateError::bad_gateway(
                    "the backend closed the connection before answering",
                ))
            }
            Err(_) => {
                metrics::counter!("gate_upstream_errors_total", "kind" => "timeout").increment(1);
                Err(GateError::gateway_timeout(format!(
                    "the backend did not answer within {} s",
                    timeout.as_secs()
                )))
            }
        }
    }

    /// The calling worker's pool.
    fn pool(&self) -> &Arc<Pool> {
        &self.pools[crate::worker::index() % self.pools.len()]
    }

    async fn request(&self, mut req: Request<Body>) -> Result<Response<Body>, Failure> {
        loop {
            let (mut sender, reused) = match self.pool().checkout() {
                Some(sender) => (sender, true),
                None => (Box::pin(self.connect()).await?, false),
            };
            if let Err(e) = sender.ready().await {
                if reused {
                    continue;
                }
                return Err(Failure::Closed(e));
            }
            match sender.try_send_request(req).await {
                Ok(resp) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
                    // The connection now belongs to the tunnel; it never returns to the pool.
                    return Ok(resp.map(Body::new));
                }
                Ok(resp) => {
                    let pool = self.pool().clone();
                    return Ok(resp.map(|body| {
                        Body::new(Pooled {
                            body,
                            sender: Some(sender),
                            pool,
                        })
                    }));
                }
                Err(mut e) => match e.take_message() {
                    // Not written: a pooled connection the backend had closed. Try another.
                    Some(back) if reused => req = back,
                    _ => return Err(Failure::Closed(e.into_error())),
                },
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<Body>, Failure> {
        let stream = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect(self.address.as_str()),
        )
        .await
        .map_err(|_| Failure::Connect("connect timed out".into()))?
        .map_err(|e| Failure::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Failure::Connect(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// Why a request did not get a reply head.
enum Failure {
    /// No connection could be made.
    Connect(String),
    /// The connection failed or closed before the reply.
    Closed(hyper::Error),
}

/// Idle connections, most recently used last.
struct Pool {
    idle: Mutex<Vec<Idle>>,
    idle_timeout: Duration,
    max_idle: usize,
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used connection that can take a request now. One still busy (its
    /// reply ended before the request body did, say) stays for later rather than making this
    /// request wait behind an upload.
    fn checkout(&self) -> Option<SendRequest<Body>> {
        let mut idle = self.lock();
        self.prune(&mut idle);
        let ready = idle.iter().rposition(|i| i.sender.is_ready())?;
        Some(idle.remove(ready).sender)
    }

    fn put(&self, sender: SendRequest<Body>) {
        if sender.is_closed() || self.max_idle == 0 {
            return;
        }
        let mut idle = self.lock();
        if idle.len() >= self.max_idle {
            idle.remove(0);
        }
        idle.push(Idle {
            sender,
            since: Instant::now(),
        });
    }

    /// Drops connections idle for longer than the timeout (the oldest are first); dropping a
    /// sender ends its connection task, which closes the socket.
    fn prune(&self, idle: &mut Vec<Idle>) {
        let now = Instant::now();
        let expired = idle
            .iter()
            .take_while(|i| {
                now.duration_since(i.since) >= self.idle_timeout || i.sender.is_closed()
            })
            .count();
        idle.drain(..expired);
    }
}

/// Closes connections that stay idle without traffic; ends with the pools (a reload builds
/// new ones). A connection dropped here ends in the worker it belongs to.
async fn reap(pools: Weak<[Arc<Pool>]>) {
    loop {
        let period = match pools.upgrade() {
            Some(p) => p[0].idle_timeout.max(Duration::from_millis(100)),
            None => return,
        };
        tokio::time::sleep(period).await;
        let Some(pools) = pools.upgrade() else { return };
        for p in pools.iter() {
            let mut idle = p.lock();
            p.prune(&mut idle);
        }
    }
}

/// A reply body that gives its connection back to the pool once it has been read to the end.
/// Dropped earlier, the connection is closed with it (the rest of the body is still on the
/// wire).
struct Pooled {
    body: Incoming,
    sender: Option<SendRequest<Body>>,
    pool: Arc<Pool>,
}

impl http_body::Body for Pooled {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            if let Some(sender) = self.sender.take() {
                self.pool.put(sender);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take() {
            if http_body::Body::is_end_stream(&self.body) {
                self.pool.put(sender);
            }
        }
    }
}
