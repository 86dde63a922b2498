//! Phase 3, isolate: keeps the caller inside its own part of the backend's global state before
//! anything is charged or forwarded (`tenancy`). Names the backend joins into file paths must
//! be single safe segments; an owned id in the path must be the caller's (404 otherwise); and
//! the patient names and ids the caller sends get its namespace, so the path forwarded is the
//! backend's name for the caller's case. Routes without isolation pass in one branch.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::Gate;
use super::context::RequestCtx;
use crate::config::RouteSpec;
use crate::error::GateError;
use crate::tenancy::{Namespace, check_segment, decode_segment, namespaced_id};

/// What a path segment may hold unencoded: the unreserved characters of RFC 3986.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl Gate {
    /// Phase 3: checks the route's names, the caller's ownership of the id it names, and sets
    /// `ctx.namespace` and `ctx.backend_path`.
    pub(super) async fn isolate(
        &self,
        route: &RouteSpec,
        ctx: &mut RequestCtx<'_>,
    ) -> Result<(), GateError> {
        let Some(t) = &route.tenancy else {
            return Ok(());
        };
        let mut segments: Vec<String> = ctx.path.split('/').map(str::to_string).collect();
        for (i, name) in &t.safe_segments {
            if let Some(seg) = segments.get(*i) {
                let value = decode_segment(name, seg).map_err(GateError::bad_request)?;
                check_segment(name, &value).map_err(GateError::bad_request)?;
            }
        }
        let Some(p) = &ctx.principal else {
            return Ok(());
        };
        let tenancy = &self.services.config.tenancy;
        let namespace = (tenancy.namespace && !p.is_superuser).then(|| Namespace::of(&p.user_id));
        let mut changed = false;
        if let (Some(o), false) = (&t.owner_only, p.is_superuser) {
            let Some(seg) = segments.get_mut(o.segment) else {
                return Err(not_found(&o.kind));
            };
            let id = decode_segment(&o.param, seg).map_err(GateError::bad_request)?;
            let backend_id = match &namespace {
                Some(ns) => {
                    let prefixes = tenancy.id_prefixes.get(&o.kind).map_or(&[][..], |v| v);
                    namespaced_id(prefixes, &id, ns).ok_or_else(|| not_found(&o.kind))?
                }
                None => id,
            };
            if !self
                .services
                .owners
                .owns(&o.kind, &backend_id, &p.user_id)
                .await?
            {
                return Err(not_found(&o.kind));
            }
            *seg = utf8_percent_encode(&backend_id, SEGMENT).to_string();
            changed = true;
        }
        if let Some(ns) = &namespace {
            for &i in &t.patient_segments {
                if let Some(seg) = segments.get_mut(i) {
                    seg.insert_str(0, ns.as_str());
                    changed = true;
                }
            }
        }
        if changed {
            ctx.backend_path = Some(segments.join("/"));
        }
        ctx.namespace = namespace;
        Ok(())
    }
}

/// Another account's id, or one never handed out: the same answer, so neither is confirmed.
fn not_found(kind: &str) -> GateError {
    GateError::not_found(format!("no such {kind} among this account's"))
}
