//! The path normaliser and the route matcher: any request target either is refused or has a
//! canonical form the backend reads exactly as the gate matched it.

#![no_main]

use http::Method;
use idoctor_gate::config::Config;
use idoctor_gate::proxy::path::canonicalize;
use idoctor_gate::proxy::routes::RouteTable;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// The shipped routes: what an operator runs.
fn table() -> &'static RouteTable {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let config = Config::from_toml_str_isolated(include_str!("../../proxy.toml"), "proxy.toml")
            .expect("the shipped proxy.toml loads");
        RouteTable::build(&config).expect("the shipped routes build")
    })
}

/// The path as the backend reads it: percent-decoded once.
fn decoded(segment: &str) -> Vec<u8> {
    let b = segment.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3).expect("a whole %XX")).unwrap();
            out.push(u8::from_str_radix(hex, 16).expect("the canonical form has valid %XX"));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(canonical) = canonicalize(raw) else {
        return;
    };
    assert!(canonical.starts_with('/'), "{raw:?} -> {canonical:?}");
    assert!(!canonical.contains("//"), "{raw:?} -> {canonical:?}");
    assert!(
        !canonical.bytes().any(|b| b == b'\\' || b < 0x20 || b == 0x7f),
        "{raw:?} -> {canonical:?}"
    );
    for segment in canonical.split('/') {
        let backend_reads = decoded(segment);
        assert!(
            !backend_reads.contains(&b'/') && !backend_reads.contains(&b'\\'),
            "{raw:?}: the backend would split {segment:?} differently"
        );
        assert!(
            backend_reads != b"." && backend_reads != b"..",
            "{raw:?}: the backend would resolve {segment:?}"
        );
        assert!(
            !backend_reads.iter().any(|&b| b < 0x20 || b == 0x7f),
            "{raw:?}: a control character reaches the backend"
        );
    }
    assert_eq!(
        canonicalize(&canonical).as_deref(),
        Ok(canonical.as_str()),
        "the canonical form of {raw:?} is not canonical"
    );
    for method in [Method::GET, Method::POST, Method::HEAD, Method::DELETE] {
        let _ = table().find(&method, &canonical);
    }
});
