//! Forwarding: the request to the backend over HTTP/1.1 connections of our own (`wire`,
//! `backend`, `reply`), kept per worker in a pool (`pool`), with a timeout on the reply's head
//! and the mapping of every transport failure to a JSON 502 / 504 (or 413 for a body cut off by
//! its limit).
//!
//! The request's own task does the work, as nginx's event handler does: it writes the head,
//! streams the body while it watches for the reply, and reads the reply's head; hyper's server
//! side then reads the reply body from the connection as it writes it to the client. Each
//! worker thread (`crate::worker`) has a pool of its own, so a connection is only used by the
//! worker whose event loop it is registered with and its wake-ups never cross threads.
//!
//! A reused connection found closed before any reply byte came is replaced and the request sent
//! again only when that cannot run it twice: it has no body and its method is safe (GET, HEAD,
//! OPTIONS), which is nginx's rule for `proxy_next_upstream error`.

use axum::body::Body;
use http::uri::{Authority, PathAndQuery};
use http::{Method, Request, Response, StatusCode, Uri};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use super::backend::{Conn, Pump, PumpError};
use super::pool::{Pool, reap};
use super::reply::Reply;
use super::wire::{self, Framing, ReplyHead};
use crate::config::UpstreamConfig;
use crate::error::GateError;
use crate::formats::text::every_byte;
use crate::proxy::body::{BodyFate, Refused};
use crate::proxy::headers::Added;

/// A request's target as the gate wrote it (from [`OwnTarget::new`]), sent instead of
/// the request's `Uri` ([`Upstream::outgoing`]).
pub struct OwnTarget(String);

impl OwnTarget {
    /// The request target of a path the gate made itself from canonical pieces (the caller's
    /// names in its namespace), carried beside the request instead of parsed into a `Uri`
    /// again: on a frequent poll that parse was a fifth of what isolation costs. Refused, as
    /// [`Upstream::uri_for`] refuses, when the path has anything but visible ASCII (which a
    /// canonical path never has) or is not a path.
    pub fn new(path: String) -> Result<OwnTarget, GateError> {
        let visible = every_byte(path.as_bytes(), |b| {
            b.is_ascii_graphic() && b != b'#' && b != b'?'
        });
        if path.starts_with('/') && visible {
            Ok(OwnTarget(path))
        } else {
            Err(invalid_target())
        }
    }
}

/// A request target the backend cannot be sent.
fn invalid_target() -> GateError {
    GateError::bad_request("the request target is not a valid URI")
}

/// A request for the backend with its head already written ([`Upstream::outgoing`]): all that
/// is left of it to send, small, so that the futures that hold it while the backend answers
/// are small too (each is moved, whole, at least once).
pub struct Outgoing {
    /// The request head, as the backend gets it.
    head: Vec<u8>,
    method: Method,
    /// `None` for a request without a body.
    body: Option<Body>,
    framing: Framing,
    /// The pooled connection checked out for it (its buffer holds `head`), if there was one.
    conn: Option<Conn>,
}

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
            .map(|_| Arc::new(Pool::new(cfg.pool_idle_timeout, cfg.pool_max_idle_per_host)))
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
            .map_err(|_| invalid_target())?;
        Ok(Uri::from(pq))
    }

    /// Sends `req` and waits at most `timeout` for the reply's head. `body_fate` is that of a
    /// [`crate::proxy::body::LimitedBody`], so a body cut off at its limit answers 413 and one
    /// the client stopped sending answers 408, not 502.
    pub async fn send(
        &self,
        req: Request<Body>,
        timeout: Duration,
        body_fate: Option<Arc<BodyFate>>,
    ) -> Result<Response<Body>, GateError> {
        let mut out = self.outgoing(req, None, &Added::default());
        self.exchange(&mut out, timeout, body_fate.as_deref()).await
    }

    /// The request to send, its head written out now: with the target `own` instead of the
    /// request's `Uri` when given, and the gate's `added` headers after the request's own.
    /// Made before anything is awaited, so that the headers it was written from are not kept
    /// (moved with every future around the send) while the backend answers. A pooled
    /// connection is checked out for it, and its buffer takes the head.
    pub fn outgoing(&self, req: Request<Body>, own: Option<&OwnTarget>, added: &Added) -> Outgoing {
        let (parts, body) = req.into_parts();
        let target = match own {
            Some(own) => own.0.as_str(),
            None => parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
        };
        // The body knows its length when the client declared one (hyper's body carries the
        // `Content-Length` it decodes by, which `crate::gate` has checked against the limit).
        let framing = if http_body::Body::is_end_stream(&body) {
            Framing::Empty
        } else {
            match http_body::Body::size_hint(&body).exact() {
                Some(n) => Framing::Length(n),
                None => Framing::Chunked,
            }
        };
        let mut conn = self.pool().checkout();
        let mut head = conn
            .as_mut()
            .map(|c| std::mem::take(&mut c.head))
            .unwrap_or_default();
        wire::encode_request(
            &parts.method,
            target,
            &parts.headers,
            added,
            framing,
            &mut head,
        );
        Outgoing {
            head,
            method: parts.method,
            body: (framing != Framing::Empty).then_some(body),
            framing,
            conn,
        }
    }

    /// Sends a request made by [`Upstream::outgoing`] and waits at most `timeout` for the
    /// reply's head. `body_fate` is that of a [`crate::proxy::body::LimitedBody`], so a body
    /// cut off at its limit answers 413 and one the client stopped sending answers 408, not
    /// 502. Takes the request by reference: it stays where the caller's future holds it.
    pub async fn exchange(
        &self,
        out: &mut Outgoing,
        timeout: Duration,
        body_fate: Option<&BodyFate>,
    ) -> Result<Response<Body>, GateError> {
        let result = tokio::time::timeout(timeout, self.request(out, timeout)).await;
        let too_large = || body_fate.is_some_and(|f| f.exceeded());
        let stalled = || body_fate.is_some_and(|f| f.stalled());
        match result {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(_)) if stalled() => {
                metrics::counter!("gate_upstream_errors_total", "kind" => "body_stalled")
                    .increment(1);
                Err(GateError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body stalled: nothing arrived within the body timeout; the backend did not act on it",
                ))
            }
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
                tracing::warn!(error = %e, "upstream request failed");
                Err(GateError::bad_gateway(
                    "the backend closed the connection before answering",
                ))
            }
            Ok(Err(Failure::Malformed(m))) => {
                metrics::counter!("gate_upstream_errors_total", "kind" => "malformed").increment(1);
                tracing::warn!(error = m.0, "upstream reply refused");
                Err(GateError::bad_gateway(m.0))
            }
            Ok(Err(Failure::ClientBody(e))) => {
                if let Some(refused) = Refused::in_chain(&e) {
                    return Err(GateError::bad_request(refused.0.clone()));
                }
                tracing::debug!(error = %e, "request body failed on its way to the backend");
                Err(GateError::bad_request("the request body could not be read"))
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

    async fn request(
        &self,
        out: &mut Outgoing,
        timeout: Duration,
    ) -> Result<Response<Body>, Failure> {
        let may_resend = out.body.is_none()
            && matches!(out.method, Method::GET | Method::HEAD | Method::OPTIONS);
        let pool = self.pool();
        loop {
            // The connection checked out with the head first, then the pool, then a new one.
            let (mut conn, reused) = match out.conn.take().or_else(|| pool.checkout()) {
                Some(conn) => (conn, true),
                None => (Box::pin(self.connect()).await?, false),
            };
            conn.head = std::mem::take(&mut out.head);
            let exchanged = match out.body.take() {
                None => bodiless(&mut conn, &out.method).await,
                Some(body) => {
                    let length = match out.framing {
                        Framing::Length(n) => Some(n),
                        _ => None,
                    };
                    let pump = Pump::new(body, length);
                    Box::pin(with_body(&mut conn, pump, &out.method, timeout)).await
                }
            };
            let (head, keep_alive) = match exchanged {
                Ok(done) => done,
                // Not a byte came back on a connection the backend had closed while it was idle.
                Err(Failure::Closed(_)) if reused && may_resend && !conn.received() => {
                    out.head = std::mem::take(&mut conn.head);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if head.status == StatusCode::SWITCHING_PROTOCOLS && conn.stream().is_none() {
                return Err(Failure::Malformed(wire::Malformed(
                    "the backend switched protocols before the request body ended",
                )));
            }
            return Ok(respond(conn, head, keep_alive, pool));
        }
    }

    async fn connect(&self) -> Result<Conn, Failure> {
        let stream = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect(self.address.as_str()),
        )
        .await
        .map_err(|_| Failure::Connect("connect timed out".into()))?
        .map_err(|e| Failure::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        Ok(Conn::new(stream))
    }
}

/// A request without a body: the head goes out in one write, then the reply's head is read.
async fn bodiless(conn: &mut Conn, method: &Method) -> Result<(ReplyHead, bool), Failure> {
    conn.write_head()
        .await
        .map_err(|e| Failure::Closed(e.to_string()))?;
    let head = std::future::poll_fn(|cx| poll_head(conn, cx, method)).await?;
    Ok((head, true))
}

/// A request with a body: the head, then the body as it comes, while the reply's head is
/// awaited at the same time (a backend may answer before the upload ends, and an echoing one
/// streams its reply while the upload goes on). A reply before the body's end leaves the rest
/// of the body to a task of its own, and the connection is not reused.
async fn with_body(
    conn: &mut Conn,
    mut pump: Pump,
    method: &Method,
    timeout: Duration,
) -> Result<(ReplyHead, bool), Failure> {
    conn.write_head()
        .await
        .map_err(|e| Failure::Closed(e.to_string()))?;
    let mut sent = false;
    let mut write_failed = false;
    let mut body_failed = None;
    let head = std::future::poll_fn(|cx| {
        if !sent && !write_failed && body_failed.is_none() {
            if let Some(stream) = conn.stream() {
                match pump.poll_write(cx, stream) {
                    Poll::Ready(Ok(())) => sent = true,
                    Poll::Ready(Err(PumpError::Body(e))) => body_failed = Some(e),
                    // The backend stopped reading; it may still have answered.
                    Poll::Ready(Err(PumpError::Write(e))) => {
                        tracing::debug!(error = %e, "the backend stopped reading the request body");
                        write_failed = true;
                    }
                    Poll::Pending => {}
                }
            }
        }
        match poll_head(conn, cx, method) {
            // A reply already there wins over the body's failure (the backend answered).
            Poll::Pending => match body_failed.take() {
                Some(e) => Poll::Ready(Err(Failure::ClientBody(e))),
                None => Poll::Pending,
            },
            ready => ready,
        }
    })
    .await?;
    if !sent && !write_failed && body_failed.is_none() {
        if let Some(mut writer) = conn.split_writer() {
            // The rest of the upload gets as long as the backend had to answer.
            tokio::spawn(async move {
                let pumped = std::future::poll_fn(|cx| pump.poll_write(cx, &mut writer));
                match tokio::time::timeout(timeout, pumped).await {
                    // Dropping the half would shut the socket's sending side, and a backend
                    // that takes end-of-stream for a hang-up (hyper's default) would drop the
                    // reply it is sending.
                    Ok(Ok(())) => writer.forget(),
                    // Cut off: the sending side is shut, so the backend sees the body end
                    // short rather than wait for the rest.
                    Ok(Err(e)) => {
                        tracing::debug!(error = ?e, "request body after an early reply not sent whole");
                    }
                    Err(_) => tracing::debug!("request body after an early reply timed out"),
                }
            });
        }
    }
    Ok((head, sent))
}

/// Reads until a final reply head (1xx interim replies other than 101 are skipped).
fn poll_head(
    conn: &mut Conn,
    cx: &mut std::task::Context<'_>,
    method: &Method,
) -> Poll<Result<ReplyHead, Failure>> {
    loop {
        while !conn.buf.is_empty() {
            match wire::parse_reply(&mut conn.buf, method) {
                Ok(Some(head))
                    if head.status.is_informational()
                        && head.status != StatusCode::SWITCHING_PROTOCOLS => {}
                Ok(Some(head)) => return Poll::Ready(Ok(head)),
                Ok(None) => break,
                Err(m) => return Poll::Ready(Err(Failure::Malformed(m))),
            }
        }
        match std::task::ready!(conn.poll_fill(cx, false)) {
            Ok(0) => {
                return Poll::Ready(Err(Failure::Closed(
                    "the backend closed the connection".into(),
                )));
            }
            Ok(_) => {}
            Err(e) => return Poll::Ready(Err(Failure::Closed(e.to_string()))),
        }
    }
}

/// The reply as hyper's server side takes it. After a 101 the connection is the tunnel's,
/// handed over in the reply's extensions ([`take_switched`]).
fn respond(conn: Conn, head: ReplyHead, keep_alive: bool, pool: &Arc<Pool>) -> Response<Body> {
    let mut resp = if head.status == StatusCode::SWITCHING_PROTOCOLS {
        let mut resp = Response::new(Body::empty());
        resp.extensions_mut()
            .insert(Switched(Arc::new(Mutex::new(Some(conn)))));
        resp
    } else {
        let keep = keep_alive && head.keep_alive;
        Response::new(Body::new(Reply::new(conn, head.body, keep, pool.clone())))
    };
    *resp.status_mut() = head.status;
    *resp.version_mut() = head.version;
    *resp.headers_mut() = head.headers;
    resp
}

/// The backend's connection after it switched protocols.
#[derive(Clone)]
struct Switched(Arc<Mutex<Option<Conn>>>);

/// Takes the backend's side of a tunnel out of a 101 reply.
pub fn take_switched(resp: &mut Response<Body>) -> Option<Conn> {
    let switched = resp.extensions_mut().remove::<Switched>()?;
    let mut slot = switched.0.lock().unwrap_or_else(|p| p.into_inner());
    slot.take()
}

/// Why a request did not get a reply head.
enum Failure {
    /// No connection could be made.
    Connect(String),
    /// The connection failed or closed before the reply.
    Closed(String),
    /// The reply was not HTTP/1.1 the gate can pass on.
    Malformed(wire::Malformed),
    /// The client's body failed (cut off, or past its limit) while it was being sent.
    ClientBody(axum::Error),
}
