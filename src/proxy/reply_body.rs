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
    let mut buf = BytesMut::new();
    loop {
        match body.frame().await {
            None => return Capped::Whole(buf.freeze()),
            Some(Err(_)) => return Capped::Broken(buf.freeze()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                    if buf.len() > cap {
                        return Capped::TooLarge(prefixed(buf.freeze(), body));
                    }
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
