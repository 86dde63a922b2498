//! A backend's reply body, read from its connection by whoever polls it (hyper's server side,
//! writing to the client), decoded from its framing, and the connection given back to the pool
//! once the body has been read to its end. Dropped before that, the connection is closed with
//! it (the rest of the body is still on the wire).

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use super::backend::Conn;
use super::chunked::{Chunked, Piece};
use super::pool::Pool;
use super::wire::BodyKind;

enum Decode {
    /// The whole body, already read with the head (most JSON replies).
    Whole(Option<Bytes>),
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    Done,
}

pub struct Reply {
    /// `None` once the body is complete (the connection went back) or broken (closed).
    conn: Option<Conn>,
    decode: Decode,
    keep_alive: bool,
    pool: Arc<Pool>,
}

impl Reply {
    pub fn new(mut conn: Conn, kind: BodyKind, keep_alive: bool, pool: Arc<Pool>) -> Reply {
        let decode = match kind {
            BodyKind::Empty => Decode::Done,
            BodyKind::Length(n) if conn.buf.len() as u64 >= n => {
                Decode::Whole(Some(conn.buf.split_to(n as usize).freeze()))
            }
            BodyKind::Length(n) => Decode::Length(n),
            BodyKind::Chunked => Decode::Chunked(Chunked::default()),
            BodyKind::UntilClose => Decode::UntilClose,
        };
        let mut reply = Reply {
            conn: Some(conn),
            decode,
            keep_alive,
            pool,
        };
        if matches!(reply.decode, Decode::Done | Decode::Whole(_)) {
            reply.finish();
        }
        reply
    }

    /// The body is read: the connection goes back if it may carry another request.
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.keep_alive {
                self.pool.put(conn);
            }
        }
    }

    fn broken(&mut self, e: io::Error) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.conn = None;
        self.decode = Decode::Done;
        Poll::Ready(Some(Err(e)))
    }
}

impl http_body::Body for Reply {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            if let Decode::Whole(data) = &mut this.decode {
                let data = data.take();
                this.decode = Decode::Done;
                return Poll::Ready(data.map(|d| Ok(Frame::data(d))));
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.decode {
                Decode::Whole(_) | Decode::Done => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Decode::Length(left) => {
                    if !conn.buf.is_empty() {
                        let take = (*left).min(conn.buf.len() as u64) as usize;
                        let data = conn.buf.split_to(take).freeze();
                        *left -= take as u64;
                        if *left == 0 {
                            this.decode = Decode::Done;
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Decode::Chunked(d) => match d.next(&mut conn.buf) {
                    Ok(Piece::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    // Trailers end the body (hyper lets the body go right after them).
                    Ok(Piece::Trailers(t)) => {
                        this.decode = Decode::Done;
                        this.finish();
                        return Poll::Ready(Some(Ok(Frame::trailers(t))));
                    }
                    Ok(Piece::Done) => {
                        this.decode = Decode::Done;
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Piece::NeedMore) => {}
                    Err(m) => return this.broken(io::Error::new(io::ErrorKind::InvalidData, m.0)),
                },
                Decode::UntilClose => {
                    if !conn.buf.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(conn.buf.split().freeze()))));
                    }
                }
            }
            match ready!(conn.poll_fill(cx, true)) {
                Ok(0) if matches!(this.decode, Decode::UntilClose) => {
                    this.decode = Decode::Done;
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    return this.broken(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the backend closed the connection in the middle of the reply",
                    ));
                }
                Ok(_) => {}
                Err(e) => return this.broken(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.decode, Decode::Done | Decode::Whole(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.decode {
            Decode::Whole(Some(d)) => SizeHint::with_exact(d.len() as u64),
            Decode::Whole(None) | Decode::Done => SizeHint::with_exact(0),
            Decode::Length(n) => SizeHint::with_exact(*n),
            _ => SizeHint::default(),
        }
    }
}
