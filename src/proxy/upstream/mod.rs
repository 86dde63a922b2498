//! The backend side of the proxy: HTTP/1.1 over connections of our own, in layers. `forward`
//! (one request's exchange, the resend rule, the mapping of failures to 502/504/413) uses
//! `pool` (each worker's idle connections) and `reply` (the reply body, streamed to the
//! client), which read and write through `backend` (one connection and the request body's
//! writer) with `wire` (request and reply heads) and `chunked` (the chunked coding).

mod backend;
mod chunked;
mod forward;
mod pool;
mod reply;
mod wire;

pub use backend::Conn;
/// The parsers of the backend's bytes, public for the fuzz targets (`fuzz/`), which feed them
/// what a broken or hostile backend could send.
pub use chunked::{Chunked, Piece};
pub use forward::{Outgoing, OwnTarget, Upstream, take_switched};
pub use wire::{BodyKind, Malformed, ReplyHead, parse_reply};
