//! The fast lane of plain HTTP/1.1: requests without a body (the proxied reads that make up
//! most of the frontends' traffic, and the gate's own GETs) are read and answered on the socket
//! by the connection's task, without hyper. The first request the lane does not take (a body,
//! an upgrade, `Expect`, HTTP/1.0, a head it cannot parse or one larger than it reads) goes to
//! hyper with every byte read so far, and hyper serves the connection from there
//! (`super::conn`), so anything unusual meets hyper's full HTTP/1 handling.
//!
//! Why: per proxied request hyper's server side (its dispatcher, buffers and encoder) was about
//! a sixth of the gate's CPU in a profile. The request itself goes through the same
//! `Gate::handle` as every other; only the reading of the head and the writing of the reply are
//! the lane's. The idle and header-read timeouts and parking are kept as for hyper's
//! connections: a quiet connection gives back its buffers after [`PARK_AFTER`].

use bytes::{Bytes, BytesMut};
use http::header;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::conn::{Counted, Shared};
use super::idle::PARK_AFTER;
use crate::proxy::body::{Hold, InFlight, Inbound};
use crate::proxy::headers::Peer;
use crate::proxy::wire::Spans;

/// The largest head the lane reads; a larger one is hyper's (which allows more).
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
/// A reply's first data frame up to this size goes out in the same write as the head.
const COALESCE: usize = 16 * 1024;

/// How the lane let a connection go.
pub(super) enum Next {
    /// Closed: by either side, a timeout, an error or shutdown.
    Closed,
    /// A request the lane does not take: hyper serves the connection from `prefix` on.
    Hyper {
        stream: TcpStream,
        prefix: Bytes,
        head_since: Option<Instant>,
    },
}

/// A head the lane serves.
struct Head {
    request: Request<()>,
    /// The client asked to close after this reply.
    close: bool,
}

/// Serves requests from `prefix` (bytes already read) on, until the connection closes or a
/// request is hyper's. `head_since`: when the first byte of the head being read arrived.
pub(super) async fn serve(
    shared: &Shared,
    mut stream: TcpStream,
    prefix: Bytes,
    mut head_since: Option<Instant>,
    peer: &Peer,
    in_flight: &Arc<InFlight>,
) -> Next {
    let mut buf = BytesMut::from(&prefix[..]);
    let mut out = Vec::new();
    loop {
        // A whole head, or the reason there is none.
        let head = loop {
            if !buf.is_empty() {
                head_since.get_or_insert_with(Instant::now);
                match parse(&mut buf) {
                    Parsed::Head(head) => break head,
                    Parsed::Partial if buf.len() <= MAX_HEAD => {}
                    Parsed::Partial | Parsed::NotOurs => {
                        return Next::Hyper {
                            stream,
                            prefix: buf.freeze(),
                            head_since,
                        };
                    }
                }
            }
            if !more(shared, &mut stream, &mut buf, &mut out, head_since).await {
                return Next::Closed;
            }
        };
        head_since = None;

        // The same request handling as hyper's connections (`super::conn::Front`).
        let gate = shared.current.get();
        in_flight.request_started();
        let reply_hold = Hold::new(in_flight);
        let is_head = head.request.method() == Method::HEAD;
        let request = head
            .request
            .map(|()| Inbound::empty(Some(Hold::new(in_flight))));
        let response = Box::pin(gate.handle(request, peer, false)).await;
        let keep_alive = !head.close && !shared.shutdown.is_cancelled();
        let wrote = write_reply(&mut stream, &mut out, response, is_head, keep_alive).await;
        drop(reply_hold);
        match wrote {
            Some(true) => {}
            Some(false) => {
                let _ = stream.shutdown().await;
                return Next::Closed;
            }
            None => return Next::Closed,
        }
    }
}

/// Reads more bytes into `buf`: at once when the socket has them, else after waiting, within
/// the head's time when a head has begun, or as an idle keep-alive connection (quiet for
/// [`PARK_AFTER`], it gives back its buffers and counts as parked). False: the connection is
/// over.
async fn more(
    shared: &Shared,
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
    head_since: Option<Instant>,
) -> bool {
    // A head that has begun must end within its time; an idle connection waits as long.
    let deadline = head_since.map(|since| since + shared.header_read_timeout);
    let quick_until = match deadline {
        Some(d) => d.min(Instant::now() + PARK_AFTER),
        None => Instant::now() + PARK_AFTER,
    };
    let quick = tokio::select! {
        r = tokio::time::timeout_at(quick_until, stream.readable()) => r.ok().map(|r| r.is_ok()),
        _ = shared.shutdown.cancelled() => Some(false),
    };
    let ready = match quick {
        Some(ready) => ready,
        None if deadline.is_some_and(|d| d <= Instant::now()) => false,
        None => {
            // Quiet: keep only the bytes of a head begun, in a buffer of their size.
            *buf = BytesMut::from(&buf[..]);
            *out = Vec::new();
            let _parked = Counted::new(&shared.parked);
            let until = deadline.unwrap_or_else(|| Instant::now() + shared.header_read_timeout);
            tokio::select! {
                r = tokio::time::timeout_at(until, stream.readable()) => matches!(r, Ok(Ok(()))),
                _ = shared.shutdown.cancelled() => false,
            }
        }
    };
    if !ready {
        return false;
    }
    buf.reserve(4096);
    match stream.try_read_buf(buf) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
    }
}

// Returned once per request and matched at once: boxing the head would cost an allocation.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Head(Head),
    Partial,
    /// Valid or not, hyper's to answer.
    NotOurs,
}

/// Takes a head the lane serves off the front of `buf`; leaves `buf` as it was otherwise.
fn parse(buf: &mut BytesMut) -> Parsed {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::NotOurs,
    };
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::NotOurs;
    };
    if !path.starts_with('/') || method == "CONNECT" {
        return Parsed::NotOurs;
    }
    let mut close = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
            || (name.eq_ignore_ascii_case(b"content-length") && h.value.trim_ascii() != b"0")
        {
            return Parsed::NotOurs;
        }
        if name.eq_ignore_ascii_case(b"connection") {
            close |= h
                .value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::NotOurs;
    };
    let base = buf.as_ptr() as usize;
    let path_at = path.as_ptr() as usize - base;
    let path_len = path.len();
    let spans = Spans::of(buf, req.headers);
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(path_at..path_at + path_len));
    let (Ok(uri), Some(headers)) = (uri, spans.header_map(&head)) else {
        // Put back: hyper answers it (400).
        let mut back = BytesMut::from(&head[..]);
        back.extend_from_slice(buf);
        *buf = back;
        return Parsed::NotOurs;
    };
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Parsed::Head(Head { request, close })
}

/// Writes a reply as hyper would: status line, headers, `Date` when missing, the framing the
/// body needs (its length when known, else chunked), the body (none for HEAD, 1xx, 204, 304).
/// `Some(keep)`: written, and whether the connection may carry another request; `None`: the
/// write or the body failed, the connection is over.
async fn write_reply(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    response: Response<axum::body::Body>,
    is_head: bool,
    keep_alive: bool,
) -> Option<bool> {
    let (parts, mut body) = response.into_parts();
    let status = parts.status;
    let bodiless = is_head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut keep = keep_alive;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == header::CONNECTION
            && value
                .to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
        {
            keep = false;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !keep && !parts.headers.contains_key(header::CONNECTION) {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !parts.headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(date::now().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let mut chunked = false;
    let length = match declared {
        Some(n) => Some(n),
        None if status == StatusCode::NO_CONTENT
            || status.is_informational()
            || status == StatusCode::NOT_MODIFIED =>
        {
            None
        }
        None => match body.size_hint().exact() {
            Some(n) => {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(n.to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
                Some(n)
            }
            None if is_head => None,
            None => {
                chunked = true;
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                None
            }
        },
    };
    out.extend_from_slice(b"\r\n");
    if bodiless {
        stream.write_all(out).await.ok()?;
        return Some(keep);
    }

    // The body: its first frame in the head's write when it is there already and small.
    let mut left = length;
    let mut head_out = false;
    loop {
        let frame = if head_out {
            std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        } else {
            match std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    stream.write_all(out).await.ok()?;
                    out.clear();
                    head_out = true;
                    continue;
                }
            }
        };
        let data = match frame {
            None => break,
            Some(Err(_)) => return None,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => continue,
            },
        };
        if let Some(left) = &mut left {
            // Never more than the length announced: the rest would read as another reply.
            if data.len() as u64 > *left {
                return None;
            }
            *left -= data.len() as u64;
        }
        if chunked {
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        if data.len() <= COALESCE {
            out.extend_from_slice(&data);
            if chunked {
                out.extend_from_slice(b"\r\n");
            }
            stream.write_all(out).await.ok()?;
        } else {
            stream.write_all(out).await.ok()?;
            stream.write_all(&data).await.ok()?;
            if chunked {
                stream.write_all(b"\r\n").await.ok()?;
            }
        }
        out.clear();
        head_out = true;
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    if !out.is_empty() {
        stream.write_all(out).await.ok()?;
    }
    // A body shorter than its length leaves the client waiting for the rest: close instead.
    if left.is_some_and(|l| l > 0) {
        return None;
    }
    Some(keep)
}

/// The `Date` header's value, made once a second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }

    pub fn now() -> String {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        CACHED.with(|c| {
            let mut c = c.borrow_mut();
            if c.0 != secs || c.1.is_empty() {
                *c = (secs, httpdate::fmt_http_date(now));
            }
            c.1.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Parsed {
        parse(&mut BytesMut::from(text))
    }

    #[test]
    fn takes_only_plain_bodiless_http11_heads() {
        let Parsed::Head(h) =
            parsed("GET /a?b=1 HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\n")
        else {
            panic!("a plain GET is the lane's");
        };
        assert_eq!(h.request.uri(), "/a?b=1");
        assert_eq!(h.request.headers()["host"], "x");
        assert!(h.close);
        assert!(matches!(
            parsed("DELETE /a HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            Parsed::Head(_)
        ));
        for not_ours in [
            "POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
            "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "PUT /a HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET /a HTTP/1.0\r\n\r\n",
            "GET http://x/a HTTP/1.1\r\n\r\n",
            "CONNECT x:443 HTTP/1.1\r\n\r\n",
            "GET /a HTTP/1.1\r\nBad Name: 1\r\n\r\n",
        ] {
            assert!(matches!(parsed(not_ours), Parsed::NotOurs), "{not_ours:?}");
        }
        assert!(matches!(
            parsed("GET /a HTTP/1.1\r\nHost:"),
            Parsed::Partial
        ));
    }

    #[test]
    fn a_refused_head_is_left_whole_for_hyper() {
        let text = "GET /a HTTP/1.0\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        let mut buf = BytesMut::from(text);
        assert!(matches!(parse(&mut buf), Parsed::NotOurs));
        assert_eq!(&buf[..], text.as_bytes());
        let mut buf = BytesMut::from("GET /a HTTP/1.1\r\n\r\nGET /b");
        assert!(matches!(parse(&mut buf), Parsed::Head(_)));
        assert_eq!(&buf[..], b"GET /b", "a pipelined request stays");
    }
}
