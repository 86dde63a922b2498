//! Authentication: who is calling, as a [`Principal`].
//!
//! This is the seam the request pipeline calls in its Authenticate phase. Until accounts exist
//! (JWT, API keys, the principal cache), the authenticator knows nobody: every route that needs
//! a user answers 401, so nothing non-public is ever forwarded without a verified identity.

use http::request::Parts;

use crate::error::GateError;

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: String,
    pub email: Option<String>,
    pub is_superuser: bool,
}

/// Verifies the credentials of a request.
#[derive(Default)]
pub struct Authenticator {}

impl Authenticator {
    pub fn new() -> Authenticator {
        Authenticator {}
    }

    /// The principal behind the request's credentials, `None` when it carries none.
    /// `query_token` says whether the route accepts `?token=` (image GETs from `<img>` tags).
    pub async fn authenticate(
        &self,
        _parts: &Parts,
        _query_token: bool,
    ) -> Result<Option<Principal>, GateError> {
        Ok(None)
    }
}
