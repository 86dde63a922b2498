//! One HTTP/1.1 connection to the backend, driven by the task of the request it carries: its
//! socket and read buffer, the writer of request bodies ([`Pump`]), and the byte stream a
//! tunnel takes over after a `101 Switching Protocols`.

use axum::body::Body;
use bytes::{Buf, Bytes, BytesMut};
use http_body::Body as _;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Bytes asked of the socket per read while a head is awaited, and at first while a body
/// streams: a body read that fills its buffer doubles the next one, up to `MAX_BODY_READ`
/// (fewer, larger reads and frames for a big download; hyper's client grew to ~400 KiB).
const HEAD_READ: usize = 8 * 1024;
const BODY_READ: usize = 32 * 1024;
const MAX_BODY_READ: usize = 512 * 1024;

/// The socket, whole, or only its reading half when a request body is still being written by a
/// task of its own (a reply that came before the upload ended).
enum Wire {
    Whole(TcpStream),
    Reading(OwnedReadHalf),
    /// Only while the socket is being split.
    Gone,
}

pub struct Conn {
    wire: Wire,
    /// Bytes read from the backend and not used yet.
    pub buf: BytesMut,
    /// The request head being written; kept for its capacity.
    pub head: Vec<u8>,
    /// The size of the next body read.
    body_read: usize,
    /// Whether any byte came back since the last request head was written.
    received: bool,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            wire: Wire::Whole(stream),
            buf: BytesMut::new(),
            head: Vec::new(),
            body_read: BODY_READ,
            received: false,
        }
    }

    /// Whether the connection can go back to the pool: whole, nothing unread.
    pub fn is_reusable(&self) -> bool {
        matches!(self.wire, Wire::Whole(_)) && self.buf.is_empty()
    }

    /// Whether an idle connection can take a request: not if the backend closed it or sent
    /// something nobody asked for. Asks the reactor first (no system call while it has seen
    /// nothing); only if it reports the socket readable is one read tried.
    pub fn is_usable(&mut self) -> bool {
        let Wire::Whole(stream) = &mut self.wire else {
            return false;
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readiness can be stale (seen before the last reply's bytes were read).
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Reads more bytes into `buf`; `Ok(0)` is the backend's end of stream.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>, in_body: bool) -> Poll<io::Result<usize>> {
        let want = if in_body { self.body_read } else { HEAD_READ };
        if self.buf.capacity() - self.buf.len() < want / 2 {
            self.buf.reserve(want);
        }
        let room = self.buf.capacity() - self.buf.len();
        let read = ready!(match &mut self.wire {
            Wire::Whole(s) => tokio_util::io::poll_read_buf(Pin::new(s), cx, &mut self.buf),
            Wire::Reading(r) => tokio_util::io::poll_read_buf(Pin::new(r), cx, &mut self.buf),
            Wire::Gone => Poll::Ready(Ok(0)),
        });
        if let Ok(n) = read {
            self.received |= n > 0;
            if in_body && n == room {
                self.body_read = (self.body_read * 2).min(MAX_BODY_READ);
            } else if !in_body {
                self.body_read = BODY_READ;
            }
        }
        Poll::Ready(read)
    }

    /// Whether any byte came back since the request head was written (an interim reply
    /// counts: the backend saw the request).
    pub fn received(&self) -> bool {
        self.received
    }

    /// Writes the request head (`head`) in one go.
    pub async fn write_head(&mut self) -> io::Result<()> {
        self.received = false;
        let Conn { wire, head, .. } = self;
        match wire {
            Wire::Whole(s) => s.write_all(head).await,
            _ => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// The whole socket, for writing. `None` once the writer went to a task of its own.
    pub fn stream(&mut self) -> Option<&mut TcpStream> {
        match &mut self.wire {
            Wire::Whole(s) => Some(s),
            _ => None,
        }
    }

    /// Splits the socket: the writing half is returned (for a [`Pump`] task), the reading half
    /// stays. The connection is then never reused.
    pub fn split_writer(&mut self) -> Option<OwnedWriteHalf> {
        match std::mem::replace(&mut self.wire, Wire::Gone) {
            Wire::Whole(stream) => {
                let (read, write) = stream.into_split();
                self.wire = Wire::Reading(read);
                Some(write)
            }
            other => {
                self.wire = other;
                None
            }
        }
    }
}

/// A tunnel's view of the connection after a 101: what the backend sent after its head first,
/// then the socket.
impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.buf.is_empty() {
            let n = this.buf.len().min(out.remaining());
            out.put_slice(&this.buf[..n]);
            this.buf.advance(n);
            return Poll::Ready(Ok(()));
        }
        match &mut this.wire {
            Wire::Whole(s) => Pin::new(s).poll_read(cx, out),
            Wire::Reading(r) => Pin::new(r).poll_read(cx, out),
            Wire::Gone => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().wire {
            Wire::Whole(s) => Pin::new(s).poll_write(cx, b),
            _ => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().wire {
            Wire::Whole(s) => Pin::new(s).poll_shutdown(cx),
            _ => Poll::Ready(Ok(())),
        }
    }
}

/// Why a request body did not reach the backend whole.
#[derive(Debug)]
pub enum PumpError {
    /// The client's side: its body failed or passed its limit. Nothing more can be sent.
    Body(axum::Error),
    /// The backend's side: the socket would not take more.
    Write(io::Error),
}

/// Writes a request body to the backend, frame by frame as the client sends it (never
/// collected), in the framing the head announced. A poll-driven state machine rather than an
/// `async fn`, so a body half written can move to a task of its own when the reply comes
/// first, without losing the frame in flight.
pub struct Pump {
    body: Body,
    /// Bytes still allowed by a `Content-Length` (a body that runs longer is cut, not passed
    /// on to be read as a second request); `None`: the body goes chunked.
    left: Option<u64>,
    /// The frame being written: size line, data, CRLF (empty parts for a fixed length).
    out: [Bytes; 3],
    ended: bool,
}

impl Pump {
    pub fn new(body: Body, length: Option<u64>) -> Pump {
        Pump {
            body,
            left: length,
            out: Default::default(),
            ended: false,
        }
    }

    /// Writes on until the body has ended and every byte is out.
    pub fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        w: &mut W,
    ) -> Poll<Result<(), PumpError>> {
        loop {
            while self.out.iter().any(|b| !b.is_empty()) {
                let slices = [
                    IoSlice::new(&self.out[0]),
                    IoSlice::new(&self.out[1]),
                    IoSlice::new(&self.out[2]),
                ];
                let mut n = ready!(Pin::new(&mut *w).poll_write_vectored(cx, &slices))
                    .map_err(PumpError::Write)?;
                if n == 0 {
                    return Poll::Ready(Err(PumpError::Write(io::ErrorKind::WriteZero.into())));
                }
                for part in &mut self.out {
                    let k = n.min(part.len());
                    part.advance(k);
                    n -= k;
                }
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                None => {
                    self.ended = true;
                    match self.left {
                        None => self.out[1] = Bytes::from_static(b"0\r\n\r\n"),
                        Some(0) => {}
                        Some(_) => {
                            return Poll::Ready(Err(PumpError::Body(axum::Error::new(
                                "the request body ended before its Content-Length",
                            ))));
                        }
                    }
                }
                Some(Err(e)) => return Poll::Ready(Err(PumpError::Body(e))),
                Some(Ok(frame)) => {
                    // Trailers are not passed on (the backend is not promised any).
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    if let Some(left) = &mut self.left {
                        if data.len() as u64 > *left {
                            return Poll::Ready(Err(PumpError::Body(axum::Error::new(
                                "the request body is longer than its Content-Length",
                            ))));
                        }
                        *left -= data.len() as u64;
                        self.out[1] = data;
                    } else {
                        self.out = [
                            Bytes::from(format!("{:x}\r\n", data.len())),
                            data,
                            Bytes::from_static(b"\r\n"),
                        ];
                    }
                }
            }
        }
    }
}
