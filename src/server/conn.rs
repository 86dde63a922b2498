//! One client connection, from its first byte to its close.
//!
//! Plain TCP: the first bytes tell HTTP/2's preface from an HTTP/1 request. HTTP/1 runs as a
//! loop of hyper connections over the same socket: when one goes idle it parks
//! (`super::idle`), hyper's state is dropped, and the socket waits alone for the client's next
//! bytes (at most `header_read_timeout`, like an idle hyper connection). TLS connections are
//! served by hyper-util's automatic HTTP/1-or-2 connection, without parking.
//!
//! Every connection watches the server's shutdown signal: it then finishes the request in
//! flight and closes (a parked one closes at once).

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::Current;
use super::idle::{MAX_HEAD, PARK_AFTER, Watched};
use crate::proxy::body::{Hold, InFlight, Inbound};
use crate::proxy::headers::Peer;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first bytes of an HTTP/2 connection without TLS ("prior knowledge").
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What every connection of one server shares, on every worker.
pub(super) struct Shared {
    pub current: Arc<Current>,
    pub h1: http1::Builder,
    pub h2: http2::Builder<TokioExecutor>,
    pub tls: auto::Builder<TokioExecutor>,
    pub header_read_timeout: Duration,
    pub shutdown: CancellationToken,
    pub parked: Arc<AtomicUsize>,
    /// Connections per worker, and their hand-over to the least loaded (`super::balance`).
    pub balance: Arc<super::balance::Balance>,
}

impl Shared {
    /// hyper's settings from the configuration serving at start (they need a restart to change).
    pub fn new(
        current: Arc<Current>,
        shutdown: CancellationToken,
        parked: Arc<AtomicUsize>,
        balance: Arc<super::balance::Balance>,
    ) -> Shared {
        let header_read_timeout = current.get().services().config.header_read_timeout;
        let mut h1 = http1::Builder::new();
        // The header-read timeout of plain HTTP/1 is kept by `idle::Watched`, without a timer
        // per request.
        // Reads of up to 2 MiB: a streamed upload moves in fewer, larger reads (0.88x -> ~0.98x
        // of direct in an A/B of 1 GiB uploads). hyper also bounds a head by this size, so
        // `idle::Watched` refuses heads over MAX_HEAD itself.
        h1.timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_buf_size(2 << 20)
            .keep_alive(true);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)));
        let mut tls = auto::Builder::new(TokioExecutor::new());
        tls.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .keep_alive(true);
        tls.http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)));
        Shared {
            current,
            h1,
            h2,
            tls,
            header_read_timeout,
            shutdown,
            parked,
            balance,
        }
    }
}

/// A plain-TCP connection.
/// `_open`: counts the connection on its worker while it lives (`super::balance`).
pub(super) async fn serve_plain(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    _open: super::balance::Open,
) {
    let first = tokio::select! {
        first = tokio::time::timeout(shared.header_read_timeout, first_bytes(&stream)) => first,
        _ = shared.shutdown.cancelled() => return,
    };
    let (h2, mut prefix) = match first {
        Ok(Ok(first)) => first,
        // Closed, broken, or nothing sent in time.
        _ => return,
    };
    let in_flight = Arc::new(InFlight::default());
    let client = Peer::new(peer);
    if h2 {
        let io = Watched::plain(TokioIo::new(stream), prefix);
        // Boxed, like every connection below: the task of a parked HTTP/1 connection is only as
        // large as its largest state.
        let mut conn = Box::pin(
            shared
                .h2
                .serve_connection(io, front(&shared, &client, false, &in_flight)),
        );
        let ended = drive(conn.as_mut(), &shared.shutdown, |c| c.graceful_shutdown()).await;
        log_end(ended, peer);
        return;
    }

    let mut stream = stream;
    // The first bytes are the start of a request head. Across parks, the head keeps its start:
    // a client that trickles a head gets no more time than one that does not.
    let mut head_since: Option<Instant> = Some(Instant::now());
    loop {
        let io = Watched::parking(
            TokioIo::new(stream),
            prefix,
            in_flight.clone(),
            (shared.header_read_timeout, head_since),
        );
        // Boxed, so that a parked connection's task holds a pointer, not hyper's state.
        let mut conn = Box::new(
            shared
                .h1
                .serve_connection(io, front(&shared, &client, false, &in_flight))
                .with_upgrades(),
        );
        let ended = drive(Pin::new(&mut *conn), &shared.shutdown, |c| {
            c.graceful_shutdown()
        })
        .await;
        // `None`: upgraded, the socket belongs to the tunnel now.
        let Some(http1::Parts { io, read_buf, .. }) = conn.into_parts() else {
            return;
        };
        if io.head_too_large() {
            // Boxed: inline, its read buffer would grow every connection's task, parked or not.
            Box::pin(refuse_large_head(io.into_inner().into_inner())).await;
            return;
        }
        if !io.parked() {
            log_end(ended, peer);
            return;
        }
        match ended {
            Ok(()) => {}
            // A partial head: hyper wrote nothing and hands the bytes back.
            Err(e) if e.is_incomplete_message() => {}
            Err(e) => {
                log_end(Err(e), peer);
                return;
            }
        }
        // Copied, then dropped: hyper's bytes share its whole read buffer, which is what
        // parking gives back.
        prefix = Bytes::copy_from_slice(&read_buf);
        drop(read_buf);
        head_since = io.head_since();
        stream = io.into_inner().into_inner();

        let wait = if prefix.is_empty() {
            head_since = None;
            shared.header_read_timeout
        } else {
            let since = *head_since.get_or_insert_with(|| Instant::now() - PARK_AFTER);
            match shared.header_read_timeout.checked_sub(since.elapsed()) {
                Some(left) => left,
                None => return,
            }
        };
        let _parked = Counted::new(&shared.parked);
        let woken = tokio::select! {
            readable = tokio::time::timeout(wait, stream.readable()) => matches!(readable, Ok(Ok(()))),
            _ = shared.shutdown.cancelled() => false,
        };
        if !woken {
            return;
        }
    }
}

/// The answer to a request head over [`MAX_HEAD`]; the connection closes after it (nothing
/// after such a head can be read as a request).
async fn refuse_large_head(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body = format!(
        r#"{{"detail":"the request head (request line and headers) is larger than {} KiB"}}"#,
        MAX_HEAD / 1024
    );
    let reply = format!(
        "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // Then the rest of what the client sends is read and dropped for a moment (a lingering
    // close, as nginx does): closing with unread bytes would reset the connection, and the
    // reset can reach the client before it has read the answer.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        use tokio::io::AsyncReadExt;
        stream.write_all(reply.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 16 * 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}

/// A TLS connection: handshake, then HTTP/1 or HTTP/2 as the client chose.
pub(super) async fn serve_tls(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    _open: super::balance::Open,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, %peer, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let in_flight = Arc::new(InFlight::default());
    let client = Peer::new(peer);
    let mut conn = Box::pin(shared.tls.serve_connection_with_upgrades(
        TokioIo::new(tls),
        front(&shared, &client, true, &in_flight),
    ));
    let ended = drive(conn.as_mut(), &shared.shutdown, |c| c.graceful_shutdown()).await;
    log_end(ended, peer);
}

/// Reads the first bytes of a connection: enough to tell HTTP/2's preface from anything else.
/// Returns whether it is HTTP/2 and the bytes read, which the connection must see again.
async fn first_bytes(stream: &TcpStream) -> std::io::Result<(bool, Bytes)> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut n = 0;
    loop {
        stream.readable().await?;
        match stream.try_read(&mut buf[n..]) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(read) => {
                n += read;
                if buf[..n] != H2_PREFACE[..n] {
                    return Ok((false, Bytes::copy_from_slice(&buf[..n])));
                }
                if n == buf.len() {
                    return Ok((true, Bytes::copy_from_slice(&buf)));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// Runs a connection to its end; on shutdown, asks it to finish what is in flight and close.
async fn drive<C, E>(
    mut conn: Pin<&mut C>,
    shutdown: &CancellationToken,
    begin_shutdown: fn(Pin<&mut C>),
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    tokio::select! {
        ended = conn.as_mut() => return ended,
        _ = shutdown.cancelled() => {}
    }
    begin_shutdown(conn.as_mut());
    conn.await
}

fn log_end<E: std::fmt::Display>(ended: Result<(), E>, peer: SocketAddr) {
    if let Err(e) = ended {
        tracing::debug!(error = %e, %peer, "connection ended with an error");
    }
}

/// Counts itself in a gauge while it lives.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(gauge: &'a AtomicUsize) -> Counted<'a> {
        gauge.fetch_add(1, Ordering::Relaxed);
        Counted(gauge)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the service returns for one request. Boxed: hyper keeps each connection's in-flight
/// slot allocated at the size of this future while the connection lives.
type Handled = Pin<Box<dyn Future<Output = Result<Response<Outbound>, Infallible>> + Send>>;

fn front(shared: &Shared, peer: &Peer, secure: bool, in_flight: &Arc<InFlight>) -> Front {
    Front {
        current: shared.current.clone(),
        peer: peer.clone(),
        secure,
        in_flight: in_flight.clone(),
    }
}

/// The service hyper calls for each request of one connection: the gate serving now, with the
/// connection's address, whether it is TLS, and its count of what is in flight.
#[derive(Clone)]
struct Front {
    current: Arc<Current>,
    peer: Peer,
    secure: bool,
    in_flight: Arc<InFlight>,
}

impl hyper::service::Service<Request<Incoming>> for Front {
    type Response = Response<Outbound>;
    type Error = Infallible;
    type Future = Handled;

    fn call(&self, req: Request<Incoming>) -> Handled {
        let gate = self.current.get();
        self.in_flight.request_started();
        let linger = req.version() == http::Version::HTTP_2;
        let req = req.map(|body| Inbound::new(body, Some(Hold::new(&self.in_flight)), linger));
        let reply = Hold::new(&self.in_flight);
        let http1 = req.version() < http::Version::HTTP_2;
        // One allocation of the request's future as the gate made it: wrapped, not awaited
        // in another async block, which would hold it twice (before and after its move).
        Box::pin(
            gate.handle(req, self.peer.clone(), self.secure)
                .map(move |mut resp| {
                    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                        reply.mark_upgraded();
                    }
                    // hyper closes a connection whose request body was not read to its end
                    // once the reply is out; the reply says so, or a client would send its
                    // next request into a closing connection.
                    if http1 && reply.body_left_unread() {
                        resp.headers_mut().insert(
                            http::header::CONNECTION,
                            http::HeaderValue::from_static("close"),
                        );
                    }
                    Ok(resp.map(|body| Outbound { body, _hold: reply }))
                }),
        )
    }
}

/// A reply body, holding its connection busy until hyper has written it and let it go.
pub struct Outbound {
    body: axum::body::Body,
    _hold: Hold,
}

impl http_body::Body for Outbound {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
