//! Path normalisation: one canonical path per request, used both to match routes and to forward.
//!
//! The classic gateway bypass (Envoy CVE-2019-9901 and CVE-2021-29492, APISIX CVE-2021-43557,
//! Caddy GHSA-m8m5) is a path the gateway reads one way and the backend another: `/public/..%2fadmin`,
//! `%2F` inside a segment, a backslash some servers treat as a separator. The cure is to decide
//! once, here, what the path is, to refuse anything whose meaning the backend could read
//! differently, and to forward exactly the string that was matched.
//!
//! The backend is uvicorn + Starlette: it percent-decodes the path once and matches routes on
//! the decoded string, case-sensitively, `[^/]+` per parameter. So:
//! - `%XX` of an unreserved character (`A-Z a-z 0-9 - . _ ~`) is decoded (the backend would
//!   decode it too; decoding first lets `/pro%63ess` match `/process`);
//! - `%2F`, `%5C`, a raw `\`, `%00` and control characters are refused: they would change the
//!   segment structure on one side only;
//! - `.` and `..` segments (also as `%2e`) are refused rather than resolved;
//! - other `%XX` (spaces, UTF-8 patient names) stay encoded, with upper-case hex;
//! - runs of `/` are merged; a trailing `/` is kept (route matching tries both forms).

use std::fmt;

/// Why a path was refused (always a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotOriginForm,
    EncodedSlash,
    EncodedBackslash,
    Backslash,
    ControlCharacter,
    DotSegment,
    BadPercentEncoding,
    TooLong,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotOriginForm => "the request path must start with `/`",
            PathError::EncodedSlash => "an encoded slash (%2F) is not allowed in the path",
            PathError::EncodedBackslash => "an encoded backslash (%5C) is not allowed in the path",
            PathError::Backslash => "a backslash is not allowed in the path",
            PathError::ControlCharacter => {
                "control characters (including %00) are not allowed in the path"
            }
            PathError::DotSegment => "`.` and `..` path segments are not allowed",
            PathError::BadPercentEncoding => "the path has a malformed percent-encoding",
            PathError::TooLong => "the path is too long",
        })
    }
}

/// Longest path accepted; the backend's paths are short, and this bounds the work per request.
pub const MAX_PATH_LEN: usize = 8 * 1024;

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn push_encoded(out: &mut String, b: u8) {
    out.push('%');
    out.push(HEX[(b >> 4) as usize] as char);
    out.push(HEX[(b & 15) as usize] as char);
}

/// Returns the canonical form of `raw` (the path part of the request target, without query).
pub fn canonicalize(raw: &str) -> Result<String, PathError> {
    if raw.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }
    // Fast path: most paths are plain ASCII with nothing to decode or merge.
    if bytes.iter().all(|&b| {
        is_unreserved(b)
            || matches!(
                b,
                b'/' | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
            )
    }) && !raw.contains("//")
        && !raw.split('/').any(|s| s == "." || s == "..")
    {
        return Ok(raw.to_string());
    }

    let mut out = String::with_capacity(raw.len());
    let mut segment = String::new();
    let trailing_slash = raw.len() > 1 && raw.ends_with('/');
    for seg in raw.split('/').filter(|s| !s.is_empty()) {
        segment.clear();
        let sb = seg.as_bytes();
        let mut i = 0;
        while i < sb.len() {
            let b = sb[i];
            if b == b'%' {
                let (Some(h), Some(l)) = (
                    sb.get(i + 1).copied().and_then(hex_val),
                    sb.get(i + 2).copied().and_then(hex_val),
                ) else {
                    return Err(PathError::BadPercentEncoding);
                };
                let v = h << 4 | l;
                match v {
                    b'/' => return Err(PathError::EncodedSlash),
                    b'\\' => return Err(PathError::EncodedBackslash),
                    v if v < 0x20 || v == 0x7f => return Err(PathError::ControlCharacter),
                    v if is_unreserved(v) => segment.push(v as char),
                    v => push_encoded(&mut segment, v),
                }
                i += 3;
                continue;
            }
            match b {
                b'\\' => return Err(PathError::Backslash),
                b if b < 0x20 || b == 0x7f => return Err(PathError::ControlCharacter),
                b if b >= 0x80
                    || b == b' '
                    || b == b'"'
                    || b == b'<'
                    || b == b'>'
                    || b == b'`'
                    || b == b'{'
                    || b == b'}'
                    || b == b'|'
                    || b == b'^' =>
                {
                    push_encoded(&mut segment, b)
                }
                b => segment.push(b as char),
            }
            i += 1;
        }
        if segment == "." || segment == ".." {
            return Err(PathError::DotSegment);
        }
        out.push('/');
        out.push_str(&segment);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    // Encoding can triple a path's length: the limit holds for what the backend is sent, so
    // that the canonical form is itself a path the gate accepts.
    if out.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `path_and_route` fuzz target: a path under the limit whose raw bytes the
    /// gate percent-encodes came out longer than the limit, so its canonical form was one the
    /// gate itself refuses.
    #[test]
    fn a_path_whose_encoding_passes_the_limit_is_too_long() {
        let raw = format!("/{}", "`".repeat(MAX_PATH_LEN / 2));
        assert!(raw.len() <= MAX_PATH_LEN);
        assert_eq!(canonicalize(&raw), Err(PathError::TooLong));
        let fits = format!("/{}", "`".repeat((MAX_PATH_LEN - 1) / 3));
        let canonical = canonicalize(&fits).unwrap();
        assert_eq!(canonicalize(&canonical), Ok(canonical.clone()));
    }

    #[test]
    fn plain_paths_are_unchanged() {
        for p in [
            "/",
            "/process/a/20250101",
            "/get_image/x/y/slice_1.png",
            "/a;b=c",
            "/x/",
        ] {
            assert_eq!(canonicalize(p).unwrap(), p);
        }
    }

    #[test]
    fn decodes_unreserved_and_normalises_hex() {
        assert_eq!(canonicalize("/pro%63ess/a/b").unwrap(), "/process/a/b");
        assert_eq!(canonicalize("/list%5Ftasks").unwrap(), "/list_tasks");
        assert_eq!(canonicalize("/p/%e5%bc%a0/x").unwrap(), "/p/%E5%BC%A0/x");
        assert_eq!(canonicalize("/p/a%20b").unwrap(), "/p/a%20b");
    }

    #[test]
    fn merges_slashes_and_keeps_trailing_one() {
        assert_eq!(canonicalize("//process///a/b").unwrap(), "/process/a/b");
        assert_eq!(canonicalize("/process/a/b//").unwrap(), "/process/a/b/");
        assert_eq!(canonicalize("//").unwrap(), "/");
    }

    #[test]
    fn refuses_what_the_backend_could_read_differently() {
        use PathError::*;
        let cases = [
            ("/a%2Fb", EncodedSlash),
            ("/a%2fb", EncodedSlash),
            ("/a%5Cb", EncodedBackslash),
            ("/a\\b", Backslash),
            ("/a%00b", ControlCharacter),
            ("/a%0Ab", ControlCharacter),
            ("/a/../b", DotSegment),
            ("/a/./b", DotSegment),
            ("/a/%2e%2e/b", DotSegment),
            ("/a/.%2E/b", DotSegment),
            ("/a/%2e/b", DotSegment),
            ("/a%zz", BadPercentEncoding),
            ("/a%2", BadPercentEncoding),
            ("a/b", NotOriginForm),
            ("*", NotOriginForm),
        ];
        for (input, want) in cases {
            assert_eq!(canonicalize(input), Err(want), "{input}");
        }
    }

    #[test]
    fn canonical_form_is_a_fixed_point() {
        for p in [
            "/pro%63ess/a/b",
            "//x//y/",
            "/p/%e5%bc%a0",
            "/a%20b",
            "/~user/.hidden",
        ] {
            let once = canonicalize(p).unwrap();
            assert_eq!(canonicalize(&once).unwrap(), once, "{p}");
        }
    }
}
