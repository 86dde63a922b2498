//! The request body on its way to the backend: streamed frame by frame, never collected, and
//! cut off when it passes the route's limit (for chunked uploads, whose size is unknown up
//! front; a too-large `Content-Length` is refused before any byte is read).
//!
//! It arrives as an [`Inbound`]: hyper's body plus a [`Hold`] on its client connection, so the
//! front door knows when nothing is in progress there and the connection may give back its
//! buffers while it waits (`crate::server::idle`).

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// What is in progress on one client connection: each request counts from the moment hyper
/// hands it over until its body has been read or dropped, and again until its reply has been
/// written. A connection is quiet when nothing is counted.
#[derive(Debug, Default)]
pub struct InFlight {
    holds: AtomicUsize,
    /// Requests hyper has handed over on this connection so far: a head whose clock started
    /// before the last of them is over.
    requests: AtomicUsize,
    /// A request body was let go before its end: hyper will close the connection after the
    /// reply, which must then say so.
    unread: AtomicBool,
    /// Set for good once the connection was switched to another protocol (a tunnel): it then
    /// belongs to the tunnel, which is never quiet in HTTP's sense.
    upgraded: AtomicBool,
}

impl InFlight {
    pub fn is_quiet(&self) -> bool {
        self.holds.load(Ordering::Acquire) == 0 && !self.upgraded.load(Ordering::Acquire)
    }

    pub fn mark_upgraded(&self) {
        self.upgraded.store(true, Ordering::Release);
    }

    /// Counts a request whose head hyper has read.
    pub fn request_started(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// Whether a request body was let go before its end since this was last asked.
    pub fn take_unread(&self) -> bool {
        self.unread.swap(false, Ordering::AcqRel)
    }
}

/// One count on an [`InFlight`], released when dropped.
#[derive(Debug)]
pub struct Hold(Arc<InFlight>);

impl Hold {
    pub fn new(in_flight: &Arc<InFlight>) -> Hold {
        in_flight.holds.fetch_add(1, Ordering::AcqRel);
        Hold(in_flight.clone())
    }

    /// The reply switched protocols: the connection is a tunnel's from now on.
    pub fn mark_upgraded(&self) {
        self.0.mark_upgraded();
    }

    /// Whether a request body of this connection was let go before its end (and not yet
    /// reported).
    pub fn body_left_unread(&self) -> bool {
        self.0.take_unread()
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.holds.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The client's request body as hyper hands it over, holding its connection busy until it is
/// read to the end or dropped.
pub struct Inbound {
    /// `None` only once dropped (handed to [`linger`]).
    body: Option<Incoming>,
    hold: Option<Hold>,
    /// An HTTP/2 stream: read what is left after the answer rather than reset it.
    linger: bool,
}

/// How long an HTTP/2 client's unread body is read and discarded after its answer (nginx's
/// `lingering_time` is 30 s), and the longest pause between two of its frames
/// (`lingering_timeout`, 5 s there).
const LINGER_TIME: Duration = Duration::from_secs(10);
const LINGER_PAUSE: Duration = Duration::from_secs(2);

impl Drop for Inbound {
    /// Let go before its end (a reply that did not need the rest, such as a 413). On HTTP/1.1
    /// hyper reads no further and will close the connection after the reply. On HTTP/2 the
    /// rest is read and discarded for a while: a stream reset while the client still sends
    /// makes some clients (curl) report the reset instead of the answer they were sent.
    fn drop(&mut self) {
        let Some(body) = self.body.take() else {
            return;
        };
        if body.is_end_stream() {
            return;
        }
        if let Some(hold) = &self.hold {
            hold.0.unread.store(true, Ordering::Release);
        }
        if self.linger {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(linger(body));
            }
        }
    }
}

/// Reads and discards an HTTP/2 request body until the client ends it, or for [`LINGER_TIME`]
/// at most, so the stream closes with the client's own end rather than a reset.
async fn linger(mut body: Incoming) {
    use http_body_util::BodyExt;
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    loop {
        let pause = (tokio::time::Instant::now() + LINGER_PAUSE).min(deadline);
        match tokio::time::timeout_at(pause, body.frame()).await {
            Ok(Some(Ok(_))) => {}
            _ => return,
        }
    }
}

impl Inbound {
    pub fn new(body: Incoming, hold: Option<Hold>, linger: bool) -> Inbound {
        Inbound {
            body: Some(body),
            hold,
            linger,
        }
    }

    fn body(&self) -> &Incoming {
        self.body.as_ref().expect("the body is taken only on drop")
    }
}

impl Body for Inbound {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.body.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body().is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body().size_hint()
    }
}

/// Error raised inside the body stream when the limit is passed.
#[derive(Debug)]
pub struct BodyTooLarge;

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body over the limit")
    }
}

impl std::error::Error for BodyTooLarge {}

/// Error raised inside the body stream by a wrapper that inspects it (a multipart field the
/// backend must not see): the client's fault, answered 400 with this detail.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

impl Refused {
    /// The `Refused` somewhere in an error's chain of sources, if there is one.
    pub fn in_chain<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if let Some(r) = err.downcast_ref::<Refused>() {
                return Some(r);
            }
            cur = err.source();
        }
        None
    }
}

/// Error raised inside the body stream when the client sent nothing for the idle timeout.
#[derive(Debug)]
pub struct BodyStalled;

impl std::fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body stalled")
    }
}

impl std::error::Error for BodyStalled {}

/// How a [`LimitedBody`] ended, if it was cut off: read by whoever sent it, since the error
/// that cut it may reach them as a broken backend exchange rather than as itself.
#[derive(Debug, Default)]
pub struct BodyFate {
    exceeded: AtomicBool,
    stalled: AtomicBool,
}

impl BodyFate {
    /// More than the limit was sent.
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Acquire)
    }

    /// Nothing was sent for the idle timeout.
    pub fn stalled(&self) -> bool {
        self.stalled.load(Ordering::Acquire)
    }
}

/// Wraps a body; yields an error once more than `limit` bytes passed, or when no frame came for
/// `idle` (nginx's `client_body_timeout`: a client that trickles a byte now and then, or sends
/// a head and then nothing, must not hold its connection and a backend connection for the
/// route's whole timeout). The timer exists only once the client has kept it waiting.
pub struct LimitedBody<B> {
    inner: B,
    remaining: u64,
    fate: Arc<BodyFate>,
    idle: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> LimitedBody<B> {
    pub fn new(inner: B, limit: u64, idle: Duration) -> (Self, Arc<BodyFate>) {
        let fate = Arc::new(BodyFate::default());
        (
            LimitedBody {
                inner,
                remaining: limit,
                fate: fate.clone(),
                idle,
                timer: None,
            },
            fate,
        )
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if polled.is_ready() {
            let idle = self.idle;
            if let Some(t) = self.timer.as_mut() {
                t.as_mut().reset(tokio::time::Instant::now() + idle);
            }
        }
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > self.remaining {
                        self.fate.exceeded.store(true, Ordering::Release);
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                    self.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let idle = self.idle;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.fate.stalled.store(true, Ordering::Release);
                        Poll::Ready(Some(Err(Box::new(BodyStalled))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
