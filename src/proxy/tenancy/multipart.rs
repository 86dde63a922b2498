//! A `multipart/form-data` request body checked as it streams to the backend.
//!
//! The backend joins the fields `patient_name` and `study_date` and the uploaded file's name
//! into file paths unchecked. This body parses the client's parts as they pass (with `multer`,
//! the parser axum uses) and sends the backend a re-encoded form of exactly what it parsed:
//! each part's `Content-Disposition` rebuilt from the name and file name it checked, its
//! `Content-Type` kept, nothing else. So the backend cannot read a field the gate did not see
//! (no parser differential), the file streams through untouched and unbuffered, and the small
//! fields to check are held until whole, checked, and namespaced (patient names) before they
//! are sent.
//!
//! A bad name ends the body with a [`Refused`] error: the request to the backend is cut before
//! its last boundary, and the backend, which reads the whole form before its handler runs,
//! never acts on it; the gate answers 400 naming the field.

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, Stream};
use std::sync::Arc;

use super::{MAX_NAME_BYTES, Namespace, check_segment};
use crate::proxy::body::Refused;

/// What to check in the parts.
pub struct Checks {
    /// The caller's namespace, put in front of patient names (`None`: a superuser, or
    /// namespacing is off).
    pub namespace: Option<Namespace>,
    pub patient_fields: Vec<String>,
    pub path_fields: Vec<String>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The boundary of a `multipart/form-data` content type, or what is wrong with it.
pub fn boundary(content_type: Option<&http::HeaderValue>) -> Result<String, String> {
    let ct = content_type
        .and_then(|v| v.to_str().ok())
        .ok_or("this route takes a multipart/form-data body")?;
    if !ct
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        return Err("this route takes a multipart/form-data body".into());
    }
    multer::parse_boundary(ct)
        .map_err(|_| "the multipart/form-data content type has no boundary".into())
}

/// `body` (the client's parts) as the checked parts the backend is sent.
pub fn checked<S>(body: S, boundary: String, checks: Checks) -> Body
where
    S: Stream<Item = Result<Bytes, BoxError>> + Send + Unpin + 'static,
{
    let paced = Paced {
        inner: body,
        since_pending: 0,
    };
    let state = State {
        form: multer::Multipart::new(paced, boundary.clone()),
        field: None,
        checks: Arc::new(checks),
        boundary,
        done: false,
    };
    Body::from_stream(stream::try_unfold(state, next_piece))
}

/// How much of the client's body the parser may take in before the part it holds has been
/// passed on: multer reads its stream for as long as the stream has data, so from a fast client
/// it would buffer without bound while the backend is slower.
const READ_AHEAD: usize = 1 << 20;

/// The client's body, made to say "not now" once `READ_AHEAD` bytes have been read since it last
/// had nothing to give, and to ask to be polled again at once: the parser then hands on what it
/// holds before it reads more, so memory stays flat however fast the client sends.
struct Paced<S> {
    inner: S,
    since_pending: usize,
}

impl<S> Stream for Paced<S>
where
    S: Stream<Item = Result<Bytes, BoxError>> + Unpin,
{
    type Item = Result<Bytes, BoxError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.since_pending >= READ_AHEAD {
            self.since_pending = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        match std::pin::Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(data))) => {
                self.since_pending += data.len();
                Poll::Ready(Some(Ok(data)))
            }
            Poll::Pending => {
                self.since_pending = 0;
                Poll::Pending
            }
            other => other,
        }
    }
}

struct State {
    form: multer::Multipart<'static>,
    /// The file part being streamed.
    field: Option<multer::Field<'static>>,
    checks: Arc<Checks>,
    boundary: String,
    done: bool,
}

/// The next bytes for the backend: a part's head (with a checked field's whole value), a
/// piece of a file, a part's end, or the closing boundary.
async fn next_piece(mut s: State) -> Result<Option<(Bytes, State)>, BoxError> {
    if s.done {
        return Ok(None);
    }
    if let Some(field) = s.field.as_mut() {
        return match field.chunk().await.map_err(stream_error)? {
            Some(data) => Ok(Some((data, s))),
            None => {
                s.field = None;
                Ok(Some((Bytes::from_static(b"\r\n"), s)))
            }
        };
    }
    let Some(mut field) = s.form.next_field().await.map_err(stream_error)? else {
        s.done = true;
        return Ok(Some((Bytes::from(format!("--{}--\r\n", s.boundary)), s)));
    };
    let name = field
        .name()
        .ok_or_else(|| reject("a multipart part has no field name"))?
        .to_string();
    // The file name as the backend will read it (quotes written as `%22`): that is what must
    // be a safe segment within the length limit.
    let file_name = field.file_name().map(quoted).transpose()?;
    if let Some(f) = &file_name {
        check_segment("the file name", f).map_err(reject)?;
    }
    let checks = s.checks.clone();
    let is_patient = checks.patient_fields.contains(&name);
    let is_path = is_patient || checks.path_fields.contains(&name);
    if is_path && file_name.is_some() {
        return Err(reject(format!("{name} must be a plain field, not a file")));
    }
    let mut head = BytesMut::new();
    head.extend_from_slice(format!("--{}\r\n", s.boundary).as_bytes());
    head.extend_from_slice(b"Content-Disposition: form-data; name=\"");
    head.extend_from_slice(quoted(field_name(&name)?)?.as_bytes());
    head.extend_from_slice(b"\"");
    if let Some(f) = &file_name {
        head.extend_from_slice(b"; filename=\"");
        head.extend_from_slice(f.as_bytes());
        head.extend_from_slice(b"\"");
    }
    head.extend_from_slice(b"\r\n");
    if let Some(ct) = field.content_type() {
        head.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    if is_path {
        // A name the backend joins into a path: held whole, checked, then sent.
        let mut value = Vec::new();
        while let Some(data) = field.chunk().await.map_err(stream_error)? {
            value.extend_from_slice(&data);
            if value.len() > MAX_NAME_BYTES {
                return Err(reject(format!(
                    "{name} must be at most {MAX_NAME_BYTES} bytes"
                )));
            }
        }
        let value =
            String::from_utf8(value).map_err(|_| reject(format!("{name} is not valid UTF-8")))?;
        check_segment(&name, &value).map_err(reject)?;
        if let (true, Some(ns)) = (is_patient, &checks.namespace) {
            head.extend_from_slice(ns.to_text().as_bytes());
        }
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    } else {
        s.field = Some(field);
    }
    Ok(Some((head.freeze(), s)))
}

/// A field name the rebuilt header can carry so that every parser reads the same parameters:
/// one with `;`, `=` or `\` could be read as ending early or as another parameter (a name
/// ending in `filename=` reads, to a parser that looks for `filename="`, as a file name). Forms
/// name their fields plainly (the backend's are `patient_name`, `study_date`, `file`).
fn field_name(name: &str) -> Result<&str, BoxError> {
    if name.contains([';', '=', '\\']) {
        return Err(reject(format!(
            "the multipart field name {name:?} may not contain `;`, `=` or `\\`"
        )));
    }
    Ok(name)
}

/// A name inside a quoted `Content-Disposition` parameter, as browsers write it (`"` as
/// `%22`); a line break cannot be written there at all.
fn quoted(name: &str) -> Result<String, BoxError> {
    if name.contains(['\r', '\n']) {
        return Err(reject(
            "a multipart field or file name contains a line break",
        ));
    }
    Ok(name.replace('"', "%22"))
}

fn reject(detail: impl Into<String>) -> BoxError {
    Box::new(Refused(detail.into()))
}

/// multer's error: the client's body failing (passed on as it is, so a body over its limit is
/// still told apart), or a malformed form (a 400).
fn stream_error(e: multer::Error) -> BoxError {
    match e {
        multer::Error::StreamReadFailed(inner) => inner,
        other => reject(format!("the multipart body is malformed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    const BOUNDARY: &str = "b0undary";

    /// What the gate sends on for `body`, or why it refused it.
    fn sent(body: &'static [u8]) -> Result<Bytes, String> {
        let checks = Checks {
            namespace: None,
            patient_fields: vec!["patient_name".into()],
            path_fields: vec!["study_date".into()],
        };
        let pieces = stream::iter([Ok::<_, BoxError>(Bytes::from_static(body))]);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            checked(pieces, BOUNDARY.to_string(), checks)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(|e| e.to_string())
        })
    }

    /// Found by the `multipart` fuzz target: a file name within the length limit whose quotes
    /// the gate writes as `%22` reached the backend longer than the limit.
    #[test]
    fn the_length_limit_holds_for_the_file_name_the_backend_reads() {
        let name = format!("{}.zip", "\"".repeat(70));
        let body = format!(
            "--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\n\r\nPK\r\n--b0undary--\r\n",
            name.replace('"', "\\\"")
        );
        let refused = sent(Box::leak(body.into_bytes().into_boxed_slice()))
            .expect_err("214 bytes once its quotes are written as %22");
        assert!(refused.contains("at most"), "{refused}");
    }

    /// Found by the `multipart` fuzz target: a field name ending in `filename=` (its closing
    /// quote missing in effect) made the rebuilt header read, to a parser that looks for
    /// `filename="`, as a file named `; filename=` instead of the file name the gate checked.
    #[test]
    fn a_field_name_that_could_be_read_as_another_parameter_is_refused() {
        let body = b"--b0undary\r\nContent-Disposition: form-data; name=\"file ; filename=\"scan.zip\"\r\n\r\nPK\r\n--b0undary--\r\n";
        let refused = sent(body).expect_err("a name with ; or = is refused");
        assert!(refused.contains("field name"), "{refused}");
        let plain = b"--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"scan;1.zip\"\r\n\r\nPK\r\n--b0undary--\r\n";
        let forwarded = sent(plain).expect("an ordinary upload passes");
        assert!(
            forwarded
                .windows(40)
                .any(|w| w == b"name=\"file\"; filename=\"scan;1.zip\"\r\n\r\nPK"),
            "{forwarded:?}"
        );
    }
}
