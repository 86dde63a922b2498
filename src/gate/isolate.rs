//! Phase 3, isolate: keeps the caller inside its own part of the backend's global state before
//! anything is charged or forwarded (`tenancy`). Names the backend joins into file paths must
//! be single safe segments; an owned id in the path must be the caller's (404 otherwise); and
//! the patient names and ids the caller sends get its namespace, so the path forwarded is the
//! backend's name for the caller's case. Routes without isolation pass in one branch.

use super::Gate;
use super::context::RequestCtx;
use crate::config::RouteSpec;
use crate::error::GateError;
use crate::proxy::tenancy::{Namespace, check_segment, decode_segment, namespaced_id};

impl Gate {
    /// Phase 3: checks the route's names, the caller's ownership of the id it names, and sets
    /// `ctx.namespace` and `ctx.backend_path`.
    pub(super) async fn isolate(
        &self,
        route: &RouteSpec,
        ctx: &mut RequestCtx,
    ) -> Result<(), GateError> {
        let Some(t) = &route.tenancy else {
            return Ok(());
        };
        // The path cut into its segments once, for every look below.
        let segments: Vec<&str> = ctx.path.split('/').collect();
        let segment = |i: usize| segments.get(i).copied();
        for (i, name) in &t.safe_segments {
            if let Some(seg) = segment(*i) {
                let value = decode_segment(name, seg).map_err(GateError::bad_request)?;
                check_segment(name, &value).map_err(GateError::bad_request)?;
            }
        }
        let Some(p) = &ctx.principal else {
            return Ok(());
        };
        let tenancy = &self.services.config.tenancy;
        let namespace = (tenancy.namespace && !p.is_superuser).then(|| Namespace::of(&p.user_id));
        // The owned id's segment and where the namespace goes in it, where it gets one.
        let mut owned_id = None;
        if let Some(o) = &t.owner_only {
            let seg = segment(o.segment).ok_or_else(|| not_found(&o.kind))?;
            let id = decode_segment(&o.param, seg).map_err(GateError::bad_request)?;
            let owners = &self.services.owners;
            // The id as the backend knows it: a superuser's is as sent.
            let backend_id = match &namespace {
                Some(ns) => {
                    let prefixes = tenancy.id_prefixes.get(&o.kind).map_or(&[][..], |v| v);
                    let (backend_id, at) =
                        namespaced_id(prefixes, &id, ns).ok_or_else(|| not_found(&o.kind))?;
                    // The namespace went in after a prefix of unreserved characters, which the
                    // canonical path spells as they are: the encoded segment takes it at the
                    // same place.
                    owned_id = Some((o.segment, at));
                    std::borrow::Cow::Owned(backend_id)
                }
                None => id,
            };
            if !p.is_superuser && !owners.owns(&o.kind, &backend_id, &p.user_id).await? {
                return Err(not_found(&o.kind));
            }
            // A task's status reply is read for the task's end (`own_reply`).
            if t.task_status {
                ctx.task_id = Some(backend_id.into_owned());
            }
        }
        let namespaced = |i: usize| namespace.is_some() && t.patient_segments.contains(&i);
        let rewrites =
            owned_id.is_some() || (namespace.is_some() && !t.patient_segments.is_empty());
        if rewrites {
            let mut path = String::with_capacity(ctx.path.len() + 64);
            for (i, seg) in segments.iter().copied().enumerate() {
                if i > 0 {
                    path.push('/');
                }
                match owned_id {
                    Some((segment, at)) if segment == i => {
                        path.push_str(&seg[..at]);
                        if let Some(ns) = &namespace {
                            ns.push_to(&mut path);
                        }
                        path.push_str(&seg[at..]);
                    }
                    _ if namespaced(i) => {
                        if let Some(ns) = &namespace {
                            ns.push_to(&mut path);
                        }
                        path.push_str(seg);
                    }
                    _ => path.push_str(seg),
                }
            }
            ctx.backend_path = Some(path);
        }
        ctx.namespace = namespace;
        Ok(())
    }
}

/// Another account's id, or one never handed out: the same answer, so neither is confirmed.
fn not_found(kind: &str) -> GateError {
    GateError::not_found(format!("no such {kind} among this account's"))
}
