//! The chunked transfer coding of a backend's reply (RFC 9112 section 7.1), decoded from the
//! connection's read buffer a piece at a time: data comes out as slices of that buffer, never
//! copied.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::wire::Malformed;

/// The longest chunk-size line (with extensions) and trailer section accepted.
const MAX_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// Where the decoder is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes to go.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields up to an empty line.
    Trailers,
    Done,
}

/// What the buffer gave.
#[derive(Debug)]
pub enum Piece {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body is complete.
    Done,
    /// Read more bytes into the buffer, then ask again.
    NeedMore,
}

#[derive(Debug)]
pub struct Chunked {
    state: State,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked { state: State::Size }
    }
}

impl Chunked {
    #[cfg(test)]
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Takes the next piece out of `buf`.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Piece, Malformed> {
        loop {
            match self.state {
                State::Size => {
                    let end = buf.windows(2).position(|w| w == b"\r\n");
                    if end.unwrap_or(buf.len()) > MAX_LINE {
                        return Err(Malformed("a chunk-size line is too long"));
                    }
                    let Some(end) = end else {
                        return Ok(Piece::NeedMore);
                    };
                    let size = chunk_size(&buf[..end])?;
                    buf.advance(end + 2);
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Piece::NeedMore);
                    }
                    let take = left.min(buf.len() as u64) as usize;
                    let data = buf.split_to(take).freeze();
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    return Ok(Piece::Data(data));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Piece::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Malformed("a chunk does not end with CRLF"));
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailers => {
                    let mut slots = [httparse::EMPTY_HEADER; 32];
                    match httparse::parse_headers(buf, &mut slots) {
                        Ok(httparse::Status::Complete((len, _))) if len > MAX_TRAILERS => {
                            return Err(Malformed("the trailer section is too large"));
                        }
                        Ok(httparse::Status::Complete((len, fields))) => {
                            let mut trailers = HeaderMap::new();
                            for f in fields {
                                if let (Ok(n), Ok(v)) = (
                                    HeaderName::from_bytes(f.name.as_bytes()),
                                    HeaderValue::from_bytes(f.value),
                                ) {
                                    trailers.append(n, v);
                                }
                            }
                            buf.advance(len);
                            self.state = State::Done;
                            if !trailers.is_empty() {
                                return Ok(Piece::Trailers(trailers));
                            }
                        }
                        Ok(httparse::Status::Partial) if buf.len() > MAX_TRAILERS => {
                            return Err(Malformed("the trailer section is too large"));
                        }
                        Ok(httparse::Status::Partial) => return Ok(Piece::NeedMore),
                        Err(_) => return Err(Malformed("the trailer section is malformed")),
                    }
                }
                State::Done => return Ok(Piece::Done),
            }
        }
    }
}

/// The hexadecimal size before any `;extension`, at most 16 digits.
fn chunk_size(line: &[u8]) -> Result<u64, Malformed> {
    let digits = line.split(|&b| b == b';').next().unwrap_or_default();
    let digits = digits.trim_ascii_end();
    if digits.is_empty() || digits.len() > 16 {
        return Err(Malformed("a chunk size is missing or too long"));
    }
    digits.iter().try_fold(0u64, |n, &d| {
        let v = (d as char)
            .to_digit(16)
            .ok_or(Malformed("a chunk size is not hexadecimal"))?;
        Ok(n << 4 | u64::from(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` a byte at a time (the worst split) and collects the body.
    fn decode(wire: &[u8]) -> Result<(Vec<u8>, Option<HeaderMap>), Malformed> {
        let mut d = Chunked::default();
        let mut buf = BytesMut::new();
        let (mut body, mut trailers) = (Vec::new(), None);
        let mut rest = wire;
        loop {
            match d.next(&mut buf)? {
                Piece::Data(b) => body.extend_from_slice(&b),
                Piece::Trailers(t) => trailers = Some(t),
                Piece::Done => return Ok((body, trailers)),
                Piece::NeedMore => {
                    let (first, tail) = rest.split_first().ok_or(Malformed("ran out of input"))?;
                    buf.extend_from_slice(&[*first]);
                    rest = tail;
                }
            }
        }
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        let (body, trailers) =
            decode(b"5;name=x\r\nhello\r\n1A \r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n").unwrap();
        assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz");
        assert!(trailers.is_none());
        let (body, trailers) = decode(b"3\r\nabc\r\n0\r\nX-Sum: 9\r\n\r\n").unwrap();
        assert_eq!(body, b"abc");
        assert_eq!(trailers.unwrap().get("x-sum").unwrap(), "9");
    }

    #[test]
    fn refuses_broken_framing() {
        for bad in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX",
            b"\r\n",
            b"11111111111111111\r\n",
            b"-1\r\n",
        ] {
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(
            decode(b"5\r\nhel").unwrap_err(),
            Malformed("ran out of input"),
            "a cut-off body is not complete"
        );
    }

    #[test]
    fn leaves_what_follows_the_body_in_the_buffer() {
        let mut buf = BytesMut::from(&b"2\r\nok\r\n0\r\n\r\nHTTP/1.1"[..]);
        let mut d = Chunked::default();
        assert!(matches!(d.next(&mut buf).unwrap(), Piece::Data(b) if &b[..] == b"ok"));
        assert!(matches!(d.next(&mut buf).unwrap(), Piece::Done));
        assert!(d.is_done());
        assert_eq!(&buf[..], b"HTTP/1.1");
    }
}
