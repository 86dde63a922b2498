//! The chunked decoder over a backend's reply body, arriving in pieces cut anywhere: it ends,
//! asks for more, or refuses; it never spins, never gives more body than it was fed, and
//! where the bytes were cut does not change the body.

#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use idoctor_gate::proxy::upstream::{Chunked, Piece};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Arrivals {
    pieces: Vec<Vec<u8>>,
}

/// Decodes `pieces` as they arrive: the body given, and whether the decoder saw its end.
fn decode(pieces: &[&[u8]]) -> (Vec<u8>, bool) {
    let mut decoder = Chunked::default();
    let mut buf = BytesMut::new();
    let fed: usize = pieces.iter().map(|p| p.len()).sum();
    // Every call either consumes a byte, takes a piece, or ends (counted before the iterator
    // starts shrinking).
    let bound = 4 * fed + 2 * pieces.len() + 8;
    let mut pieces = pieces.iter();
    let mut body = Vec::new();
    let mut calls = 0;
    loop {
        calls += 1;
        assert!(calls <= bound, "the decoder spins");
        match decoder.next(&mut buf) {
            Ok(Piece::Data(data)) => {
                assert!(!data.is_empty(), "an empty data piece");
                body.extend_from_slice(&data);
            }
            Ok(Piece::Trailers(_)) => {}
            Ok(Piece::Done) => return (body, true),
            Ok(Piece::NeedMore) => match pieces.next() {
                Some(p) => buf.extend_from_slice(p),
                None => return (body, false),
            },
            Err(_) => return (body, false),
        }
    }
}

fuzz_target!(|arrivals: Arrivals| {
    let whole: Vec<u8> = arrivals.pieces.concat();
    let cut: Vec<&[u8]> = arrivals.pieces.iter().map(Vec::as_slice).collect();
    let (in_pieces, ended_in_pieces) = decode(&cut);
    let (at_once, ended_at_once) = decode(&[&whole]);
    assert!(at_once.len() <= whole.len(), "more body than bytes");
    let (short, long) = if in_pieces.len() <= at_once.len() {
        (&in_pieces, &at_once)
    } else {
        (&at_once, &in_pieces)
    };
    assert_eq!(&long[..short.len()], &short[..], "the cut changed the body");
    assert_eq!(ended_in_pieces, ended_at_once, "the cut changed where the body ends");
    if ended_at_once {
        assert_eq!(in_pieces, at_once);
    }
});
