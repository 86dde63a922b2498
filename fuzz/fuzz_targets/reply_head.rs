//! The backend's reply head, then its body framing: any bytes a broken backend could send are
//! parsed or refused, and a chunked body after the head decodes without spinning.

#![no_main]

use bytes::BytesMut;
use http::Method;
use idoctor_gate::proxy::upstream::{BodyKind, Chunked, Piece, parse_reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let method = match m % 4 {
        0 => Method::GET,
        1 => Method::HEAD,
        2 => Method::POST,
        _ => Method::CONNECT,
    };
    let mut buf = BytesMut::from(rest);
    let Ok(Some(head)) = parse_reply(&mut buf, &method) else {
        return;
    };
    assert!(buf.len() < rest.len(), "a head was parsed out of nothing");
    if method == Method::HEAD || head.status == 204 || head.status == 304 {
        assert!(matches!(head.body, BodyKind::Empty), "{:?}", head.body);
    }
    if let BodyKind::Chunked = head.body {
        let mut decoder = Chunked::default();
        let before = buf.len();
        for _ in 0..=before + 4 {
            match decoder.next(&mut buf) {
                Ok(Piece::Data(d)) => assert!(!d.is_empty()),
                Ok(Piece::Trailers(_)) => {}
                Ok(Piece::Done | Piece::NeedMore) | Err(_) => return,
            }
        }
        panic!("the chunked decoder spins over {before} bytes");
    }
});
