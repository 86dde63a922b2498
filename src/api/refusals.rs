//! Where the domain's refusals become HTTP: each kind of [`Refusal`] gets its status and the
//! headers that status calls for (`WWW-Authenticate` on 401, `Retry-After` on 429 and 503).
//! Handlers and the gate's phases reach this through `?`; nothing below `api` picks a status.

use http::header::RETRY_AFTER;
use http::{HeaderValue, StatusCode};

use crate::error::{GateError, Refusal, RefusalKind};

impl From<Refusal> for GateError {
    fn from(r: Refusal) -> GateError {
        match r.kind {
            RefusalKind::Malformed => GateError::bad_request(r.detail),
            RefusalKind::Invalid => GateError::new(StatusCode::UNPROCESSABLE_ENTITY, r.detail),
            RefusalKind::Unauthenticated => GateError::unauthorized(r.detail),
            RefusalKind::Forbidden => GateError::forbidden(r.detail),
            RefusalKind::NotFound => GateError::not_found(r.detail),
            RefusalKind::Conflict => GateError::new(StatusCode::CONFLICT, r.detail),
            RefusalKind::TooMany { retry_after_secs } => {
                let e = GateError::new(StatusCode::TOO_MANY_REQUESTS, r.detail);
                match retry_after_secs {
                    Some(secs) => e.with_header(RETRY_AFTER, HeaderValue::from(secs)),
                    None => e,
                }
            }
            RefusalKind::Unavailable => GateError::unavailable(r.detail),
            RefusalKind::Failed => GateError::new(StatusCode::INTERNAL_SERVER_ERROR, r.detail),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::WWW_AUTHENTICATE;

    #[test]
    fn each_kind_has_its_status_and_headers() {
        let e = GateError::from(Refusal::unauthenticated("no"));
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        assert!(e.headers.iter().any(|(n, _)| n == WWW_AUTHENTICATE));
        let e = GateError::from(Refusal::too_many(Some(7), "slow down"));
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(e.headers.iter().any(|(n, v)| n == RETRY_AFTER && v == "7"));
        let e = GateError::from(Refusal::unavailable("later"));
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.headers.iter().any(|(n, _)| n == RETRY_AFTER));
        assert_eq!(
            GateError::from(Refusal::invalid("x")).status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            GateError::from(Refusal::conflict("x")).status,
            StatusCode::CONFLICT
        );
        assert_eq!(
            GateError::from(Refusal::malformed("x")).status,
            StatusCode::BAD_REQUEST
        );
    }
}
