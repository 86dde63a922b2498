//! Phase 3, isolate: keeps the caller inside its own part of the backend's global state before
//! anything is charged or forwarded (`tenancy`). Names the backend joins into file paths must
//! be single safe segments; an owned id in the path must be the caller's (404 otherwise); and
//! the patient names and ids the caller sends get its namespace, so the path forwarded is the
//! backend's name for the caller's case. Routes without isolation pass in one branch.
//!
//! The phase runs without a future of its own: an id whose owner the gate has seen is decided
//! in memory (a poll every 3 s per open task is the common case), and only an id it has not
//! seen is left to [`Gate::confirm_owner`], which asks the store.

use smallvec::SmallVec;

use super::Gate;
use super::context::RequestCtx;
use crate::config::RouteSpec;
use crate::error::GateError;
use crate::proxy::tenancy::{Namespace, check_segment, decode_segment, namespaced_id};

/// An owner the store must confirm: the id was not seen by this replica yet.
pub(super) struct OwnerToConfirm {
    kind: String,
    backend_id: String,
}

impl Gate {
    /// Phase 3: checks the route's names and the caller's ownership of the id it names, and
    /// sets `ctx.namespace`, `ctx.task_id` and `ctx.backend_path`. `Ok(Some(_))`: the id's
    /// owner is not known in memory, and [`Gate::confirm_owner`] must ask the store before
    /// the request goes on.
    pub(super) fn isolate(
        &self,
        route: &RouteSpec,
        ctx: &mut RequestCtx,
    ) -> Result<Option<OwnerToConfirm>, GateError> {
        let Some(t) = &route.tenancy else {
            return Ok(None);
        };
        // The path cut into its segments once, for every look below.
        let segments = segments(&ctx.path);
        let segment = |i: usize| segments.get(i).copied();
        for (i, name) in &t.safe_segments {
            if let Some(seg) = segment(*i) {
                let value = decode_segment(name, seg).map_err(GateError::bad_request)?;
                check_segment(name, &value).map_err(GateError::bad_request)?;
            }
        }
        let Some(p) = &ctx.principal else {
            return Ok(None);
        };
        let tenancy = &self.services.config.tenancy;
        let namespace = (tenancy.namespace && !p.is_superuser).then(|| Namespace::of(&p.user_id));
        // The owned id's segment and where the namespace goes in it, where it gets one.
        let mut owned_id = None;
        let mut to_confirm = None;
        if let Some(o) = &t.owner_only {
            let seg = segment(o.segment).ok_or_else(|| not_found(&o.kind))?;
            let id = decode_segment(&o.param, seg).map_err(GateError::bad_request)?;
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
                    backend_id
                }
                None => id.into_owned(),
            };
            if !p.is_superuser {
                match self.services.owners.known(&o.kind, &backend_id, &p.user_id) {
                    Some(true) => {}
                    Some(false) => return Err(not_found(&o.kind)),
                    None => {
                        to_confirm = Some(OwnerToConfirm {
                            kind: o.kind.clone(),
                            backend_id: backend_id.clone(),
                        })
                    }
                }
            }
            // A task's status reply is read for the task's end (`own_reply`).
            if t.task_status {
                ctx.task_id = Some(backend_id);
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
        Ok(to_confirm)
    }

    /// The rest of phase 3 for an id whose owner was not known in memory: the store says
    /// whether the caller owns it (404 otherwise), or 503 when it cannot say.
    pub(super) async fn confirm_owner(
        &self,
        look: OwnerToConfirm,
        ctx: &RequestCtx,
    ) -> Result<(), GateError> {
        let Some(p) = &ctx.principal else {
            return Err(not_found(&look.kind));
        };
        let owners = &self.services.owners;
        if owners
            .owns_stored(&look.kind, &look.backend_id, &p.user_id)
            .await?
        {
            Ok(())
        } else {
            Err(not_found(&look.kind))
        }
    }
}

/// A path's segments (split at `/`), on the stack for the few of a route's path: a poll's
/// path split into a list on the heap, by `str::split`'s character search, cost more than the
/// rest of the check.
fn segments(path: &str) -> SmallVec<[&str; FEW_SEGMENTS]> {
    let mut out = SmallVec::new();
    let mut start = 0;
    for (i, b) in path.bytes().enumerate() {
        if b == b'/' {
            out.push(&path[start..i]);
            start = i + 1;
        }
    }
    out.push(&path[start..]);
    out
}

const FEW_SEGMENTS: usize = 12;

/// Another account's id, or one never handed out: the same answer, so neither is confirmed.
fn not_found(kind: &str) -> GateError {
    GateError::not_found(format!("no such {kind} among this account's"))
}

#[cfg(test)]
mod tests {
    use super::segments;

    #[test]
    fn segments_are_those_of_split() {
        let long = (0..30).map(|i| i.to_string()).collect::<Vec<_>>().join("/");
        for path in ["/task_status/main_p_1", "/", "", "//a//b/", long.as_str()] {
            let split: Vec<&str> = path.split('/').collect();
            assert_eq!(&segments(path)[..], &split[..], "{path}");
        }
    }
}
