//! Phase 7, own the reply: what the backend answered, made the caller's (`tenancy::replies`).
//! A reply that hands out an id records the caller as its owner; a list of ids or patient
//! folders keeps only the caller's own (a superuser sees everything); and the caller's
//! namespace is taken out of every name, so the client sees the names it typed. Runs after
//! settle (the charge is decided by what the backend said, not by what the client is shown)
//! and only on JSON replies of routes with isolation; everything else streams untouched.

use axum::body::Body;
use http::Response;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use serde_json::Value;

use super::Gate;
use super::context::RequestCtx;
use crate::billing::Reservation;
use crate::config::RouteSpec;
use crate::error::GateError;
use crate::formats::ids::UserId;
use crate::proxy::reply_body::{Capped, read_capped};
use crate::proxy::tenancy::replies;

/// The largest reply read to record, filter or rename (a `/list_tasks` of many tasks is the
/// largest the backend sends).
pub const REPLY_CAP: usize = 4 << 20;

impl Gate {
    /// Phase 7.
    pub(super) async fn own_reply(
        &self,
        reply: Result<Response<Body>, GateError>,
        route: &RouteSpec,
        ctx: &mut RequestCtx,
    ) -> Result<Response<Body>, GateError> {
        let (Some(t), Some(p)) = (route.tenancy.as_ref(), ctx.principal.as_ref()) else {
            return reply;
        };
        if !t.reply_names() {
            return reply;
        }
        let resp = reply?;
        let is_json = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.trim_start().starts_with("application/json"));
        // Filtering is the only step that must not be skipped: an unfiltered list is other
        // accounts' data.
        let filters = !p.is_superuser && (t.owned_list.is_some() || t.patient_list.is_some());
        if !is_json {
            return if filters {
                Err(unfilterable())
            } else {
                Ok(resp)
            };
        }
        if ctx.namespace.is_none() && t.creates.is_none() && !filters && ctx.task_id.is_none() {
            return Ok(resp);
        }
        let (mut parts, body) = resp.into_parts();
        let bytes = match read_capped(body, REPLY_CAP).await {
            Capped::Whole(b) => b,
            Capped::TooLarge(_) if filters => {
                return Err(GateError::bad_gateway(
                    "the backend's list is too large to filter to this account",
                ));
            }
            Capped::TooLarge(body) => return Ok(Response::from_parts(parts, body)),
            Capped::Broken(_) => {
                return Err(GateError::bad_gateway("the backend's reply was cut off"));
            }
        };
        // The reply's new text, when it changes.
        let mut rewritten: Option<Vec<u8>> = None;
        if let Some(c) = &t.creates {
            match replies::created_id(&bytes, &c.field) {
                Ok(Some(id)) => {
                    // The charge and its link queued first, so they are written in the same
                    // transaction as the owner (`store::commits`).
                    let pending = ctx.commit_after_reply.take().map(|r| *r);
                    ctx.commit_after_reply =
                        Box::pin(self.link_task(&c.kind, &id, pending, &p.user_id))
                            .await
                            .map(Box::new);
                    let recorded = Box::pin(self.services.owners.record(&c.kind, &id, &p.user_id));
                    if let Err(e) = recorded.await {
                        tracing::error!(kind = %c.kind, error = %e, "could not record the owner of a new id");
                    }
                }
                Ok(None) => {}
                Err(_) if filters => return Err(unfilterable()),
                Err(_) => return Ok(Response::from_parts(parts, Body::from(bytes))),
            }
        }
        if filters {
            let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
                return Err(unfilterable());
            };
            if let Some(l) = &t.owned_list {
                let ids = replies::listed_ids(&value, &l.field);
                let owned =
                    Box::pin(self.services.owners.owned_among(&l.kind, &p.user_id, &ids)).await?;
                replies::keep_owned(&mut value, &l.field, &owned);
            }
            if let (Some(field), Some(ns)) = (&t.patient_list, &ctx.namespace) {
                replies::keep_patients(&mut value, field, ns);
            }
            rewritten = Some(serde_json::to_vec(&value).expect("a JSON value serializes"));
        }
        if let Some(ns) = &ctx.namespace {
            let text = rewritten.as_deref().unwrap_or(&bytes);
            if let Some(stripped) = replies::strip_namespace(text, ns) {
                rewritten = Some(stripped);
            }
        }
        // A task's status, in the names its owner typed (the reason of a refund is shown to them).
        if let (Some(task_id), Some(w)) = (&ctx.task_id, &self.services.task_watch) {
            let shown = rewritten.as_deref().unwrap_or(&bytes);
            // Most polls say `processing`: looked at without making the observing future.
            if w.charges.may_have_ended(task_id, shown)
                && let Err(e) = Box::pin(w.charges.observe(task_id, shown)).await
            {
                // The gate's own poll settles it later.
                tracing::warn!(task_id = %task_id, error = %e.detail, "could not settle a task's charge from its status");
            }
        }
        let body = match rewritten {
            None => Body::from(bytes),
            Some(v) => {
                parts.headers.remove(CONTENT_LENGTH);
                Body::from(v)
            }
        };
        Ok(Response::from_parts(parts, body))
    }
}

impl Gate {
    /// Commits the charge settle judged to stand (`pending`), linked to the task its reply
    /// started, so the charge follows the task (`billing::tasks`); hands back a charge it did
    /// not commit.
    async fn link_task(
        &self,
        kind: &str,
        task_id: &str,
        pending: Option<Reservation>,
        user_id: &UserId,
    ) -> Option<Reservation> {
        let r = pending?;
        let Some(w) = self
            .services
            .task_watch
            .as_ref()
            .filter(|w| kind == w.charges.tasks.kind)
        else {
            return Some(r);
        };
        w.charges.started(task_id).await;
        r.commit_linked(kind, task_id, user_id);
        None
    }
}

/// A list that is not JSON: never passed on, since unfiltered it is other accounts' data.
fn unfilterable() -> GateError {
    GateError::bad_gateway(
        "the backend's list is not JSON, so it cannot be filtered to this account",
    )
}
