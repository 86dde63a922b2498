//! Reading a small reply body whole, up to a cap, for the steps that must see it before the
//! client does (a settlement rule's JSON field, an id to record, a list to filter). A body over
//! the cap is handed back intact, the bytes read followed by the rest, so it still streams.

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

/// What reading a body up to a cap gave.
pub enum Capped {
    /// The whole body, no larger than the cap.
    Whole(Bytes),
    /// Larger than the cap: the body as it was, to pass on.
    TooLarge(Body),
    /// The body ended with an error (the backend died mid-reply): what had arrived.
    Broken(Bytes),
}

/// Reads `body` whole if it is at most `cap` bytes.
pub async fn read_capped(mut body: Body, cap: usize) -> Capped {
    // Most small replies come as one piece: it is kept as it is, and only a second piece
    // starts a buffer.
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    loop {
        match body.frame().await {
            None => return Capped::Whole(first.unwrap_or_else(|| buf.freeze())),
            Some(Err(_)) => {
                return Capped::Broken(first.unwrap_or_else(|| buf.freeze()));
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if let Some(f) = first.take() {
                    buf.extend_from_slice(&f);
                }
                if buf.is_empty() && first.is_none() && data.len() <= cap {
                    first = Some(data);
                    continue;
                }
                buf.extend_from_slice(&data);
                if buf.len() > cap {
                    return Capped::TooLarge(prefixed(buf.freeze(), body));
                }
            }
        }
    }
}

/// The bytes already read, followed by the rest of the body.
fn prefixed(prefix: Bytes, rest: Body) -> Body {
    let head = http_body_util::Full::new(prefix).map_err(|never| match never {});
    Body::new(Chain {
        head: Some(head),
        rest,
    })
}

struct Chain<A, B> {
    head: Option<A>,
    rest: B,
}

impl<A, B> http_body::Body for Chain<A, B>
where
    A: http_body::Body<Data = Bytes, Error = axum::Error> + Unpin,
    B: http_body::Body<Data = Bytes, Error = axum::Error> + Unpin,
{
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        use std::task::Poll;
        if let Some(head) = self.head.as_mut() {
            match std::pin::Pin::new(head).poll_frame(cx) {
                Poll::Ready(None) => self.head = None,
                other => return other,
            }
        }
        std::pin::Pin::new(&mut self.rest).poll_frame(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(pieces: &[&'static [u8]]) -> Body {
        let frames: Vec<Result<Bytes, std::io::Error>> =
            pieces.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Body::from_stream(futures_util::stream::iter(frames))
    }

    async fn whole(b: Body) -> Vec<u8> {
        b.collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn one_piece_two_pieces_and_too_large() {
        match read_capped(body_of(&[b"{\"a\":1}"]), 64).await {
            Capped::Whole(b) => assert_eq!(&b[..], b"{\"a\":1}"),
            _ => panic!("one small piece is whole"),
        }
        match read_capped(body_of(&[b"{\"a\":", b"1}"]), 64).await {
            Capped::Whole(b) => assert_eq!(&b[..], b"{\"a\":1}"),
            _ => panic!("two small pieces are whole"),
        }
        match read_capped(body_of(&[b"0123", b"4567", b"89"]), 6).await {
            Capped::TooLarge(rest) => assert_eq!(whole(rest).await, b"0123456789"),
            _ => panic!("over the cap"),
        }
        match read_capped(body_of(&[b"0123456789"]), 6).await {
            Capped::TooLarge(rest) => assert_eq!(whole(rest).await, b"0123456789"),
            _ => panic!("one piece over the cap"),
        }
    }
}
