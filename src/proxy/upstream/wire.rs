//! HTTP/1.1 on the wire to the backend: the request head the gate writes and the reply head it
//! reads. Pure functions over buffers, so every rule here is tested without a socket.
//!
//! Why not hyper's client: per proxied request it ran a connection task of its own, a
//! request/response channel to it and a general encoder and decoder, about a third of the
//! gate's CPU beside the system calls in a profile. The gate needs one request at a time on a
//! connection, written and read by the request's own task (as nginx and Pingora do).

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use smallvec::SmallVec;

use crate::proxy::headers::{Added, connection_says};

/// The most headers a reply head may have (hyper's default is 100 too).
const MAX_HEADERS: usize = 100;
/// The longest reply head the gate reads (hyper's default buffer limit is ~400 KiB; a backend
/// head beyond 64 KiB is broken, not big).
pub const MAX_HEAD: usize = 64 * 1024;

/// How a request body is delimited on its way to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    Empty,
    /// `Content-Length` (the client's, or known from the body).
    Length(u64),
    /// `Transfer-Encoding: chunked`, for a body whose size is not known up front.
    Chunked,
}

/// Writes a request head into `out`: request line, the headers as given (already stripped of
/// hop-by-hop headers by the caller), the gate's `added` ones and the framing header the body
/// needs. A `Content-Length` in `headers` is replaced by the framing's, so the two cannot
/// disagree.
pub fn encode_request(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    added: &Added,
    framing: Framing,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(if target.is_empty() { "/" } else { target }.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in added.iter() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Empty => {
            // A client's `Content-Length: 0` goes on (some backends want it on a POST).
            if headers.contains_key(header::CONTENT_LENGTH) {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
        }
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// How a reply body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// None (a reply to HEAD, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Until the backend closes the connection (HTTP/1.0 style).
    UntilClose,
}

/// A parsed reply head.
#[derive(Debug)]
pub struct ReplyHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: BodyKind,
    /// Whether the connection may carry another request after this reply.
    pub keep_alive: bool,
}

/// Why a reply head is unusable.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// Parses a reply head from the start of `buf`. `Ok(None)`: more bytes are needed. On success
/// the head's bytes are taken out of `buf` (what follows is the body's start), and the
/// header values share that memory rather than being copied.
pub fn parse_reply(buf: &mut BytesMut, method: &Method) -> Result<Option<ReplyHead>, Malformed> {
    // Left uninitialised: the parser writes the ones it fills, and zeroing 100 slots cost
    // more than parsing a small reply.
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut reply = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut reply, buf, &mut slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(Malformed("the backend's reply head is too large"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Malformed("the backend's reply has too many headers"));
        }
        Err(_) => return Err(Malformed("the backend's reply is not valid HTTP/1.1")),
    };
    let status = reply
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(Malformed("the backend's reply has no valid status"))?;
    let version = if reply.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let spans = Spans::of(buf, reply.headers);
    let head: Bytes = buf.split_to(len).freeze();
    let mut headers = spans
        .header_map(&head)
        .ok_or(Malformed("the backend's reply has an invalid header"))?;
    let body = reply_body(status, method, &headers)?;
    let mut keep_alive = keep_alive(version, &headers) && body != BodyKind::UntilClose;
    if body == BodyKind::Chunked && headers.contains_key(header::CONTENT_LENGTH) {
        // Both framings (RFC 9112 6.3): chunked wins, the length goes (the client would
        // otherwise be told a length the body does not have), and the connection is not
        // trusted with another request.
        headers.remove(header::CONTENT_LENGTH);
        keep_alive = false;
    }
    Ok(Some(ReplyHead {
        status,
        version,
        headers,
        body,
        keep_alive,
    }))
}

/// Where each header's name and value lie in a parsed head, so they can be sliced from the
/// frozen head once the parser's borrow of the buffer ends (no copy of any value). The few
/// headers of a usual reply are kept on the stack (a list on the heap was one more allocation
/// per request); a zeroed array of the most there may be cost more to clear than a small
/// reply costs to parse, so a head with more than [`FEW_HEADERS`] takes a list.
struct Spans {
    spans: SmallVec<[Span; FEW_HEADERS]>,
}

/// A header's name and value in a head: (name start, name length, value start, value length).
type Span = (usize, usize, usize, usize);

/// Reply headers kept on the stack (a backend's usual reply has 4 to 8).
const FEW_HEADERS: usize = 16;

impl Spans {
    /// `headers` must have been parsed from `buf`.
    fn of(buf: &[u8], headers: &[httparse::Header<'_>]) -> Spans {
        let base = buf.as_ptr() as usize;
        let spans = headers
            .iter()
            .map(|h| {
                let name = h.name.as_ptr() as usize - base;
                let value = h.value.as_ptr() as usize - base;
                (name, h.name.len(), value, h.value.len())
            })
            .collect();
        Spans { spans }
    }

    /// The headers, from `head` (the parsed buffer's start, frozen). `None` if a name or value
    /// is not valid.
    fn header_map(&self, head: &Bytes) -> Option<HeaderMap> {
        // With room for what the gate adds on the way out (request id, CORS, quota).
        let mut headers = HeaderMap::with_capacity(self.spans.len() + 6);
        for &(n, nl, v, vl) in &self.spans {
            let name = HeaderName::from_bytes(head.get(n..n + nl)?).ok()?;
            let value = HeaderValue::from_maybe_shared(head.slice(v..v + vl)).ok()?;
            headers.append(name, value);
        }
        Some(headers)
    }
}

/// RFC 9112 section 6.3, in its order.
fn reply_body(status: StatusCode, method: &Method, h: &HeaderMap) -> Result<BodyKind, Malformed> {
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(BodyKind::Empty);
    }
    if h.contains_key(header::TRANSFER_ENCODING) {
        // Chunked must be the final coding. Any other is refused: the gate removes
        // `Transfer-Encoding` on the way to the client (it is hop-by-hop), which would then get
        // coded bytes it cannot tell from the body.
        let mut codings = h
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|c| !c.is_empty());
        return match codings.next_back() {
            Some(c) if c.eq_ignore_ascii_case(b"chunked") => Ok(BodyKind::Chunked),
            _ => Err(Malformed(
                "the backend's reply uses a transfer coding other than chunked",
            )),
        };
    }
    let mut length = None;
    for value in h.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let n = parse_length(part.trim_ascii()).ok_or(Malformed(
                "the backend's reply has an invalid Content-Length",
            ))?;
            if length.is_some_and(|l| l != n) {
                return Err(Malformed(
                    "the backend's reply has conflicting Content-Length headers",
                ));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => BodyKind::Empty,
        Some(n) => BodyKind::Length(n),
        None => BodyKind::UntilClose,
    })
}

/// Digits only (no sign, no spaces inside), at most 19 of them.
fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')),
    )
}

/// HTTP/1.1 keeps the connection unless it says `close`; HTTP/1.0 only if it says
/// `keep-alive`.
fn keep_alive(version: Version, h: &HeaderMap) -> bool {
    if version == Version::HTTP_10 {
        connection_says(h, "keep-alive")
    } else {
        !connection_says(h, "close")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str, method: Method) -> Result<Option<ReplyHead>, Malformed> {
        parse_reply(&mut BytesMut::from(text), &method)
    }

    #[test]
    fn every_header_of_a_reply_is_kept_few_or_many() {
        for n in [0, 1, FEW_HEADERS - 1, FEW_HEADERS, FEW_HEADERS + 1, 60] {
            let mut text = String::from("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n");
            for i in 0..n {
                text.push_str(&format!("x-h{i}: v{i}\r\n"));
            }
            text.push_str("\r\nok");
            let mut buf = BytesMut::from(text.as_str());
            let h = parse_reply(&mut buf, &Method::GET).unwrap().unwrap();
            assert_eq!(h.headers.len(), n + 1, "{n} headers");
            for i in 0..n {
                assert_eq!(
                    h.headers[format!("x-h{i}").as_str()],
                    format!("v{i}").as_str()
                );
            }
            assert_eq!(&buf[..], b"ok");
        }
    }

    #[test]
    fn request_heads_carry_exactly_one_framing() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("backend"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("gzip"));
        let mut out = Vec::new();
        encode_request(
            &Method::POST,
            "/a?b=1",
            &h,
            &Added::default(),
            Framing::Length(12),
            &mut out,
        );
        assert_eq!(
            out,
            b"POST /a?b=1 HTTP/1.1\r\nhost: backend\r\ncontent-length: 12\r\n\r\n"
        );
        encode_request(
            &Method::PUT,
            "/a",
            &h,
            &Added::default(),
            Framing::Chunked,
            &mut out,
        );
        assert_eq!(
            out,
            b"PUT /a HTTP/1.1\r\nhost: backend\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        encode_request(
            &Method::POST,
            "/a",
            &h,
            &Added::default(),
            Framing::Empty,
            &mut out,
        );
        assert_eq!(
            out,
            b"POST /a HTTP/1.1\r\nhost: backend\r\ncontent-length: 0\r\n\r\n"
        );
        h.remove(header::CONTENT_LENGTH);
        encode_request(
            &Method::GET,
            "",
            &h,
            &Added::default(),
            Framing::Empty,
            &mut out,
        );
        assert_eq!(out, b"GET / HTTP/1.1\r\nhost: backend\r\n\r\n");
    }

    #[test]
    fn reply_heads_split_from_their_body() {
        let mut buf = BytesMut::from(
            "HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: 1\r\nX-A: 2\r\n\r\n{}next",
        );
        let h = parse_reply(&mut buf, &Method::POST).unwrap().unwrap();
        assert_eq!(h.status, 201);
        assert_eq!(h.body, BodyKind::Length(2));
        assert!(h.keep_alive);
        assert_eq!(h.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(&buf[..], b"{}next");
        assert!(
            head("HTTP/1.1 200 OK\r\nContent-Le", Method::GET)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn reply_body_follows_rfc_9112() {
        let kind = |text: &str, m: Method| head(text, m).unwrap().unwrap().body;
        assert_eq!(
            kind("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Method::HEAD),
            BodyKind::Empty
        );
        assert_eq!(
            kind(
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
                Method::GET
            ),
            BodyKind::Empty
        );
        let both = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(both.body, BodyKind::Chunked);
        assert!(
            both.headers.get("content-length").is_none(),
            "the length goes"
        );
        assert!(!both.keep_alive, "nor is the connection trusted again");
        for other in ["gzip", "chunked, gzip", "x\u{ff}"] {
            let text = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {other}\r\n\r\n");
            assert!(head(&text, Method::GET).is_err(), "{other}");
        }
        assert_eq!(
            kind(
                "HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n",
                Method::GET
            ),
            BodyKind::Length(7)
        );
        assert_eq!(
            kind("HTTP/1.1 200 OK\r\n\r\n", Method::GET),
            BodyKind::UntilClose
        );
        for bad in ["+5", "5 5", "-1", "99999999999999999999", "1, 2"] {
            let text = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n");
            assert!(head(&text, Method::GET).is_err(), "{bad}");
        }
        assert!(head("HTTP/1.1 2000 OK\r\n\r\n", Method::GET).is_err());
        assert!(head("HTTX/1.1 200 OK\r\n\r\n", Method::GET).is_err());
    }

    #[test]
    fn keep_alive_by_version_and_connection() {
        let keep = |text: &str| head(text, Method::GET).unwrap().unwrap().keep_alive;
        assert!(keep("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keep(
            "HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!keep("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(keep(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!keep("HTTP/1.1 200 OK\r\n\r\n"), "read until close");
    }

    #[test]
    fn oversized_heads_are_refused() {
        let text = format!("HTTP/1.1 200 OK\r\nx-filler: {}", "a".repeat(MAX_HEAD));
        assert!(head(&text, Method::GET).is_err());
        assert!(head(&text[..MAX_HEAD / 2], Method::GET).unwrap().is_none());
    }
}
