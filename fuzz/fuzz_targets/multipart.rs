//! The multipart inspection of uploads: any body, cut anywhere, is refused or re-encoded into a
//! form whose every part the backend reads as the gate checked it: patient names in the
//! caller's namespace, path fields and file names single safe segments, nothing added.

#![no_main]

use bytes::Bytes;
use futures_util::stream;
use http_body_util::BodyExt;
use idoctor_gate::formats::ids::UserId;
use idoctor_gate::proxy::tenancy::multipart::{Checks, checked};
use idoctor_gate::proxy::tenancy::{Namespace, check_segment};
use libfuzzer_sys::fuzz_target;

const BOUNDARY: &str = "----fuzzB0undary";

/// An upload as the client sends it: the bytes of the body and where they are cut into pieces.
/// Read from the fuzzer's bytes directly (not through `Arbitrary`, which would spend a byte per
/// body byte on "one more?"): flags, a count of cuts, two bytes per cut, then the body.
#[derive(Debug)]
struct Upload<'a> {
    namespaced: bool,
    cuts: Vec<u16>,
    body: &'a [u8],
}

impl<'a> Upload<'a> {
    fn read(data: &'a [u8]) -> Option<Upload<'a>> {
        let (&flags, rest) = data.split_first()?;
        let (&count, mut rest) = rest.split_first()?;
        let mut cuts = Vec::new();
        for _ in 0..count % 8 {
            let (cut, after) = rest.split_first_chunk::<2>()?;
            cuts.push(u16::from_le_bytes(*cut));
            rest = after;
        }
        Some(Upload {
            namespaced: flags & 1 == 1,
            cuts,
            body: rest,
        })
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    })
}

/// Every part of `body` as (name, file name, value), or `None` where the form does not parse.
async fn parts(body: Bytes) -> Option<Vec<(String, Option<String>, Vec<u8>)>> {
    let mut form = multer::Multipart::new(
        stream::iter([Ok::<_, std::io::Error>(body)]),
        BOUNDARY,
    );
    let mut out = Vec::new();
    while let Some(field) = form.next_field().await.ok()? {
        let name = field.name()?.to_string();
        let file = field.file_name().map(str::to_string);
        out.push((name, file, field.bytes().await.ok()?.to_vec()));
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let Some(upload) = Upload::read(data) else {
        return;
    };
    let namespace = Namespace::of(&UserId::from(String::from("0b6f1c1e-2d4e-4f7a-9c1b-5e2f3a4b6c7d")));
    let checks = Checks {
        namespace: upload.namespaced.then(|| namespace.clone()),
        patient_fields: vec!["patient_name".into()],
        path_fields: vec!["study_date".into()],
    };
    let mut pieces: Vec<Result<Bytes, BoxError>> = Vec::new();
    let mut rest = upload.body;
    for &cut in &upload.cuts {
        let at = (cut as usize).min(rest.len());
        pieces.push(Ok(Bytes::copy_from_slice(&rest[..at])));
        rest = &rest[at..];
    }
    pieces.push(Ok(Bytes::copy_from_slice(rest)));
    runtime().block_on(async {
        let body = checked(stream::iter(pieces), BOUNDARY.to_string(), checks);
        let Ok(sent) = body.collect().await else {
            return;
        };
        let sent = sent.to_bytes();
        let received = parts(Bytes::copy_from_slice(upload.body))
            .await
            .expect("a form the gate passed parses");
        let forwarded = parts(sent.clone())
            .await
            .unwrap_or_else(|| panic!("the gate sent a form that does not parse: {sent:?}"));
        assert_eq!(forwarded.len(), received.len(), "parts added or lost");
        for ((name, file, value), (got_name, got_file, _)) in forwarded.iter().zip(&received) {
            // Quotes are written as browsers write them, `%22`; nothing else changes.
            let quoted = |s: &String| s.replace('"', "%22");
            assert_eq!(name, &quoted(got_name), "a part renamed");
            assert_eq!(file, &got_file.as_ref().map(quoted), "a file renamed");
            if let Some(f) = file {
                check_segment("file", f).expect("an unsafe file name passed");
            }
            if name == "patient_name" || name == "study_date" {
                let value = std::str::from_utf8(value).expect("a path field that is not text");
                check_segment(name, value).expect("an unsafe path field passed");
                if name == "patient_name" && upload.namespaced {
                    assert!(namespace.starts(value), "{value:?} is not in the namespace");
                }
            }
        }
    });
});
