//! Phase 2, authenticate: the caller's credentials to a `Principal` (`auth`), and the route's
//! access rule applied to it. Runs after route (the route says whether `?token=` counts) and
//! before anything is charged or forwarded.

use http::request::Parts;

use super::Gate;
use super::context::RequestCtx;
use crate::auth::Principal;
use crate::config::{Access, RouteSpec};
use crate::error::GateError;

impl Gate {
    /// Phase 2: sets `ctx.principal`, or answers 401/403.
    pub(super) async fn authenticate(
        &self,
        parts: &Parts,
        route: &RouteSpec,
        ctx: &mut RequestCtx,
    ) -> Result<(), GateError> {
        // Public routes ignore credentials (they are stripped before forwarding anyway), so a
        // stale token in a browser never breaks a public page.
        let principal = if route.access == Access::Public {
            None
        } else {
            self.services
                .auth
                .authenticate(parts, route.query_token)
                .await?
        };
        authorize(route.access, principal.as_ref())?;
        if let Some(p) = &principal {
            ctx.log.user_id = Some(p.user_id.clone());
        }
        ctx.principal = principal;
        Ok(())
    }
}

/// The route's access rule applied to the (possibly absent) caller.
fn authorize(access: Access, principal: Option<&Principal>) -> Result<(), GateError> {
    match (access, principal) {
        (Access::Public, _) => Ok(()),
        (Access::User | Access::Admin, None) => Err(GateError::unauthorized(
            "authentication required: send Authorization: Bearer <token> or X-API-Key",
        )),
        (Access::Admin, Some(p)) if !p.is_superuser => {
            Err(GateError::forbidden("this route needs a superuser"))
        }
        (_, Some(_)) => Ok(()),
        (Access::Blocked, None) => Err(GateError::forbidden("this route is blocked by the gate")),
    }
}
