//! Credential extraction from request heads: any header bytes and query string give one
//! credential, none, or a refusal, and a credential is always a slice of what was sent.

#![no_main]

use arbitrary::Arbitrary;
use idoctor_gate::auth::credentials::{Credential, extract};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Head {
    get: bool,
    allow_query_token: bool,
    query: String,
    authorization: Option<Vec<u8>>,
    api_key: Option<Vec<u8>>,
    cookie: Option<Vec<u8>>,
    /// A second Authorization header.
    authorization_again: Option<Vec<u8>>,
}

fuzz_target!(|head: Head| {
    let mut builder = http::Request::builder()
        .method(if head.get { "GET" } else { "POST" })
        .uri(format!("/get_image/p/d?{}", head.query));
    for (name, value) in [
        ("authorization", &head.authorization),
        ("x-api-key", &head.api_key),
        ("cookie", &head.cookie),
        ("authorization", &head.authorization_again),
    ] {
        if let Some(value) = value {
            let Ok(value) = http::HeaderValue::from_bytes(value) else {
                return;
            };
            builder = builder.header(name, value);
        }
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    let (parts, ()) = request.into_parts();
    let Ok(Some(credential)) = extract(&parts, head.allow_query_token) else {
        return;
    };
    let text = match credential {
        Credential::Jwt(t) | Credential::ApiKey(t) | Credential::ImageCookie(t) => t,
    };
    // Whatever was found was sent: in a header or the query, never made up.
    let sent = [&head.authorization, &head.api_key, &head.cookie]
        .iter()
        .filter_map(|v| v.as_deref())
        .any(|v| v.windows(text.len().max(1)).any(|w| w == text.as_bytes()))
        || head.query.contains(text)
        || text.is_empty();
    assert!(sent || head.query.contains('%'), "{text:?} was not in the request");
});
