//! Idle keep-alive connections without their buffers.
//!
//! hyper gives every HTTP/1 connection an 8 KiB read buffer and an 8 KiB header buffer for its
//! whole life, so 10,000 idle keep-alive clients would hold some 160 MiB doing nothing. nginx
//! frees its buffers whenever a keep-alive connection goes idle; this does the same for hyper,
//! from outside it. [`Watched`] sits between hyper and the socket. When the connection has
//! received nothing for [`PARK_AFTER`], nothing is in progress on it (no request body being
//! read, no reply being written: [`InFlight`]) and no write is waiting for the socket, the next
//! read hyper asks for answers "end of stream". hyper takes that for a client closing an idle
//! connection and finishes without writing anything; `poll_shutdown` is swallowed so the
//! socket stays open. The connection driver (`super::conn`) then takes the socket back, drops
//! hyper's state and waits for the client's next bytes with nothing but the socket; those bytes
//! get a fresh hyper connection.
//!
//! If the client had sent part of a request head before going quiet, hyper reports an
//! incomplete message instead, without writing anything, and hands back the partial bytes: the
//! driver replays them ([`Watched::new`]'s `prefix`) into the next connection.
//!
//! A busy connection never parks: every read that returns bytes restarts the quiet time, and the
//! timer that wakes a quiet connection is moved at most once per [`PARK_AFTER`], so the request
//! path pays one clock read per wait, not a timer-wheel update.
//!
//! The header-read timeout is kept here too, instead of by hyper (which arms a timer for every
//! request head it reads: an allocation and a timer-wheel entry per request). Bytes that arrive
//! while no request is in progress belong to the next head; the head's clock starts with the
//! first of them, and a read after `head_limit` fails the connection, so a client that trickles
//! a head faster than the park delay is cut off on time. One that pauses longer parks, and the
//! driver carries the head's start over ([`Watched::head_since`]).
//!
//! The size of a head is kept here for the same reason: hyper bounds a head only by its read
//! buffer (`max_buf_size`), which the gate sets large so that uploads move in big reads. A
//! head still incomplete after [`MAX_HEAD`] bytes fails the connection, and the driver answers
//! 431 ([`Watched::head_too_large`]).

use bytes::{Buf, Bytes};
use hyper::rt::{Read, ReadBufCursor, Write};
use smallvec::SmallVec;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

use crate::proxy::body::InFlight;

/// How long a keep-alive connection must be quiet before it gives back its buffers. Long
/// enough that a client in a busy exchange never pays for a new hyper connection, short enough
/// that a crowd of idle clients costs little.
pub const PARK_AFTER: Duration = Duration::from_millis(250);

/// The largest request head (request line and headers) the gate reads, about Envoy's default
/// (60 KiB). A head can overshoot it by one read before it is refused.
pub const MAX_HEAD: usize = 64 * 1024;

/// The largest vectored write sent as one flat write (`Watched::poll_write_vectored`).
const SMALL_WRITE: usize = 4096;

/// The socket as hyper sees it: replays bytes read earlier, tracks writes, and parks.
pub struct Watched<T> {
    io: T,
    /// Bytes already taken off the socket that hyper has not seen yet.
    prefix: Bytes,
    park: Option<Parking>,
    /// The last write found the socket full: hyper still holds bytes of a reply.
    write_blocked: bool,
}

/// What a parkable connection needs to decide.
struct Parking {
    in_flight: Arc<InFlight>,
    quiet_since: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    parked: bool,
    /// When the first byte of the request head still being read arrived, and how many
    /// requests had been handed over then (once there are more, that head is complete).
    head_since: Option<(Instant, usize)>,
    head_limit: Duration,
    /// Bytes of that head read so far.
    head_bytes: usize,
    /// The head grew past [`MAX_HEAD`] and the connection was failed for it.
    too_large: bool,
}

impl Parking {
    /// When the head now being read started arriving; `None` if the last one recorded belongs
    /// to a request already handed over (the next head has not begun).
    fn current_head(&self) -> Option<Instant> {
        self.head_since
            .filter(|(_, requests)| *requests == self.in_flight.requests())
            .map(|(at, _)| at)
    }
}

impl<T> Watched<T> {
    /// A connection that does not park (a TLS session or an HTTP/2 connection keeps state of
    /// its own that cannot be set aside like this).
    pub fn plain(io: T, prefix: Bytes) -> Watched<T> {
        Watched {
            io,
            prefix,
            park: None,
            write_blocked: false,
        }
    }

    /// A plain HTTP/1 connection that parks when idle and times request heads: `head` is the
    /// header-read timeout and, when `prefix` starts a head, since when that head is arriving.
    pub fn parking(
        io: T,
        prefix: Bytes,
        in_flight: Arc<InFlight>,
        head: (Duration, Option<Instant>),
    ) -> Watched<T> {
        // Replayed bytes of a head in progress count towards its size.
        let head_bytes = if head.1.is_some() { prefix.len() } else { 0 };
        Watched {
            io,
            prefix,
            park: Some(Parking {
                head_since: head.1.map(|at| (at, in_flight.requests())),
                head_bytes,
                too_large: false,
                in_flight,
                quiet_since: None,
                timer: None,
                parked: false,
                head_limit: head.0,
            }),
            write_blocked: false,
        }
    }

    /// Since when the request head being read has been arriving (`None` between requests).
    pub fn head_since(&self) -> Option<Instant> {
        self.park.as_ref()?.current_head()
    }

    /// The connection failed because a request head grew past [`MAX_HEAD`].
    pub fn head_too_large(&self) -> bool {
        self.park.as_ref().is_some_and(|p| p.too_large)
    }

    /// The read that hyper saw end was ours: the socket is open and idle.
    pub fn parked(&self) -> bool {
        self.park.as_ref().is_some_and(|p| p.parked)
    }

    pub fn into_inner(self) -> T {
        self.io
    }

    /// The inner read would wait: park, or arrange to be woken when parking may be due.
    fn on_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let write_blocked = self.write_blocked;
        let Some(p) = self.park.as_mut() else {
            return Poll::Pending;
        };
        let now = Instant::now();
        let since = *p.quiet_since.get_or_insert(now);
        let quiet_long_enough = now.duration_since(since) >= PARK_AFTER;
        if quiet_long_enough && !write_blocked && p.in_flight.is_quiet() {
            p.parked = true;
            // Zero bytes: end of stream, as far as hyper can tell.
            return Poll::Ready(Ok(()));
        }
        // Check again when parking may be due; something still in progress is looked at again
        // a period later.
        let due = if quiet_long_enough {
            now + PARK_AFTER
        } else {
            since + PARK_AFTER
        };
        match p.timer.as_mut() {
            None => p.timer = Some(Box::pin(tokio::time::sleep_until(due))),
            Some(t) if t.is_elapsed() => t.as_mut().reset(due),
            // Armed for an earlier wait: it fires early, and this is decided again then.
            Some(_) => {}
        }
        let timer = p.timer.as_mut().expect("armed above");
        if timer.as_mut().poll(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

impl<T: Read + Unpin> Read for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        let Some(p) = this.park.as_mut().filter(|p| p.in_flight.is_quiet()) else {
            // A request in progress (or a connection that does not park): bytes of a body.
            return match Pin::new(&mut this.io).poll_read(cx, buf) {
                Poll::Pending => this.on_pending(cx),
                ready => {
                    if let Some(p) = this.park.as_mut() {
                        p.quiet_since = None;
                    }
                    ready
                }
            };
        };
        // No request in progress: what hyper asks for is (more of) the next request's head. A
        // head it is still asking for after MAX_HEAD bytes is too large.
        let current = p.current_head();
        if current.is_some() && p.head_bytes >= MAX_HEAD {
            p.too_large = true;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the request head is larger than the gate reads",
            )));
        }
        // SAFETY: the inner read writes initialised bytes into this same unfilled memory and
        // reports how many in `inner.filled()`; exactly that many are then marked filled in
        // `buf`, as hyper's own adapters do.
        let mut inner = unsafe { hyper::rt::ReadBuf::uninit(buf.as_mut()) };
        match Pin::new(&mut this.io).poll_read(cx, inner.unfilled()) {
            Poll::Pending => this.on_pending(cx),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {
                let n = inner.filled().len();
                unsafe { buf.advance(n) };
                let p = this.park.as_mut().expect("checked above");
                p.quiet_since = None;
                // Bytes of the next request's head: its clock starts with the first.
                let now = Instant::now();
                let since = match current {
                    Some(at) => at,
                    None => {
                        p.head_since = Some((now, p.in_flight.requests()));
                        p.head_bytes = 0;
                        now
                    }
                };
                p.head_bytes += n;
                if now.duration_since(since) > p.head_limit {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the request head took longer than header_read_timeout",
                    )));
                }
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl<T: Write + Unpin> Write for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.write_blocked = polled.is_pending();
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // A small reply (hyper queues its head and body apart) goes out as one send: the
        // kernel's writev path costs more than the copy of a few hundred bytes. Larger writes
        // keep writev, so a download's chunks are not copied.
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let polled = if bufs.len() > 1 && total <= SMALL_WRITE {
            let mut flat = SmallVec::<[u8; SMALL_WRITE]>::new();
            for b in bufs {
                flat.extend_from_slice(b);
            }
            Pin::new(&mut this.io).poll_write(cx, &flat)
        } else {
            Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
        };
        this.write_blocked = polled.is_pending();
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.parked() {
            // hyper closing "its" idle connection: the socket goes on without it.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}
