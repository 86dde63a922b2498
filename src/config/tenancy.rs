//! Tenant isolation as `proxy.toml` declares it: `[tenancy]` (which names are patient names,
//! which the backend joins into file paths, where a patient name begins in the backend's ids)
//! and the per-route keys `creates`, `owner_only`, `owned_list`, `patient_list` and `multipart`.
//! Validated here, by the section's owner, into [`Tenancy`] and each route's [`RouteTenancy`].
//!
//! The backend keys tasks, uploads and locks globally by patient name and date, so the gate
//! (`gate::isolate`) puts the caller's namespace in front of every patient name it forwards and
//! takes it out of the replies, records who owns each id a reply hands out, and answers another
//! account's id with 404.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::Access;

/// `[tenancy]`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct TenancySection {
    /// Put each account's namespace in front of the patient names it sends the backend.
    #[serde(default = "yes")]
    pub namespace: bool,
    /// Path parameters and multipart fields that hold a patient name.
    #[serde(default = "default_patient_fields")]
    pub patient_fields: Vec<String>,
    /// Path parameters and multipart fields the backend joins into file paths: each must be a
    /// single safe path segment (the multipart file name always is checked).
    #[serde(default = "default_path_fields")]
    pub path_fields: Vec<String>,
    /// For each kind of id the backend hands out, what comes before the patient name in it.
    #[serde(default = "default_id_prefixes")]
    pub id_prefixes: BTreeMap<String, Vec<String>>,
}

impl Default for TenancySection {
    fn default() -> Self {
        TenancySection {
            namespace: true,
            patient_fields: default_patient_fields(),
            path_fields: default_path_fields(),
            id_prefixes: default_id_prefixes(),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_patient_fields() -> Vec<String> {
    vec!["patient_name".into()]
}

fn default_path_fields() -> Vec<String> {
    ["patient_name", "study_date", "filename", "folder"]
        .map(String::from)
        .to_vec()
}

/// The iDoctor backend's ids: `main_<patient>_<date>`, `cont_<patient>_<date>` for tasks,
/// `<patient>_<date>_<unix time>` for uploads.
fn default_id_prefixes() -> BTreeMap<String, Vec<String>> {
    BTreeMap::from([
        ("task".to_string(), vec!["main_".into(), "cont_".into()]),
        ("upload".to_string(), vec![String::new()]),
    ])
}

/// `creates = { kind = "task", field = "task_id" }`: the reply's top-level JSON `field` is a
/// new id of `kind`, owned by the caller.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Creates {
    pub kind: String,
    pub field: String,
}

/// `owner_only = { kind = "task", param = "task_id" }`: the path parameter names an id of
/// `kind`; only its owner (or a superuser) passes.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OwnerOnlySection {
    pub kind: String,
    pub param: String,
}

/// `owned_list = { kind = "task", field = "tasks" }`: the reply's `field` is an object keyed by
/// ids of `kind`; a caller sees only the ones they own (a superuser sees all), and `count` is
/// made to match.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OwnedList {
    pub kind: String,
    pub field: String,
}

/// The validated `[tenancy]`.
#[derive(Debug, Clone)]
pub struct Tenancy {
    pub namespace: bool,
    pub patient_fields: Vec<String>,
    pub path_fields: Vec<String>,
    pub id_prefixes: BTreeMap<String, Vec<String>>,
}

/// What isolation a route needs, derived from its template, its keys and `[tenancy]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTenancy {
    /// Path segments (by index in the path split at `/`) holding a patient name.
    pub patient_segments: Vec<usize>,
    /// Path segments the backend joins into file paths, with their parameter's name.
    pub safe_segments: Vec<(usize, String)>,
    pub owner_only: Option<OwnerOnly>,
    pub creates: Option<Creates>,
    pub owned_list: Option<OwnedList>,
    /// The reply's field listing patient folders (`<patient>-<date>`), filtered to the
    /// caller's namespace.
    pub patient_list: Option<String>,
    /// The body is `multipart/form-data` whose fields are checked as they stream.
    pub multipart: bool,
    /// The route reports a task's status (`[tasks]`): its replies are read for `failed`.
    pub task_status: bool,
}

/// A route's ownership check, with the path segment that holds the id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerOnly {
    pub kind: String,
    pub param: String,
    pub segment: usize,
}

impl RouteTenancy {
    /// The reply can carry patient names (the caller's namespace is taken out of it).
    pub fn reply_names(&self) -> bool {
        !self.patient_segments.is_empty()
            || self.owner_only.is_some()
            || self.creates.is_some()
            || self.owned_list.is_some()
            || self.patient_list.is_some()
            || self.multipart
    }
}

impl RouteTenancy {
    /// A short summary for `check-config`'s route table.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(o) = &self.owner_only {
            parts.push(format!("owner-only {}", o.kind));
        }
        if let Some(c) = &self.creates {
            parts.push(format!("creates {}", c.kind));
        }
        if let Some(l) = &self.owned_list {
            parts.push(format!("own {}s", l.kind));
        }
        if self.patient_list.is_some() {
            parts.push("own patients".into());
        }
        if !self.patient_segments.is_empty() {
            parts.push("namespaced".into());
        }
        if self.multipart {
            parts.push("form checked".into());
        }
        if parts.is_empty() && !self.safe_segments.is_empty() {
            parts.push("safe names".into());
        }
        parts.join(", ")
    }
}

/// The route keys this module owns, as written.
pub struct RouteKeys<'a> {
    pub template: &'a str,
    pub access: Access,
    pub creates: Option<&'a Creates>,
    pub owner_only: Option<&'a OwnerOnlySection>,
    pub owned_list: Option<&'a OwnedList>,
    pub patient_list: Option<&'a String>,
    pub multipart: bool,
}

impl Tenancy {
    pub fn validate(s: &TenancySection) -> Result<Tenancy, Vec<String>> {
        let mut problems = Vec::new();
        for (kind, prefixes) in &s.id_prefixes {
            // The gate splices the namespace in after the prefix in the canonical (percent-
            // encoded) path, where only unreserved characters stand as they are.
            if let Some(p) = prefixes.iter().find(|p| {
                !p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
            }) {
                problems.push(format!(
                    "tenancy.id_prefixes.{kind}: `{p}` may hold only letters, digits, `-`, `.`, `_` and `~`"
                ));
            }
            if prefixes.is_empty() {
                problems.push(format!(
                    "tenancy.id_prefixes.{kind}: list at least one prefix (\"\" for ids that start with the patient name)"
                ));
            }
        }
        for f in s.patient_fields.iter().chain(&s.path_fields) {
            if f.is_empty() {
                problems.push("tenancy: a field name must not be empty".into());
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Tenancy {
            namespace: s.namespace,
            patient_fields: s.patient_fields.clone(),
            path_fields: s.path_fields.clone(),
            id_prefixes: s.id_prefixes.clone(),
        })
    }

    /// A route's isolation, or `None` when it needs none (the common case costs one branch).
    /// Problems are `(key, message)` pairs for the route's line.
    pub fn route(
        &self,
        keys: &RouteKeys<'_>,
        problems: &mut Vec<(&'static str, String)>,
    ) -> Option<Arc<RouteTenancy>> {
        let params: Vec<(usize, &str)> = keys
            .template
            .split('/')
            .enumerate()
            .filter_map(|(i, seg)| {
                let name = seg.strip_prefix('{')?.strip_suffix('}')?;
                (!name.starts_with('*')).then_some((i, name))
            })
            .collect();
        let mut t = RouteTenancy {
            patient_segments: if self.namespace {
                params
                    .iter()
                    .filter(|(_, n)| self.patient_fields.iter().any(|f| f == n))
                    .map(|(i, _)| *i)
                    .collect()
            } else {
                Vec::new()
            },
            safe_segments: params
                .iter()
                .filter(|(_, n)| self.path_fields.iter().any(|f| f == n))
                .map(|(i, n)| (*i, n.to_string()))
                .collect(),
            owner_only: None,
            creates: keys.creates.cloned(),
            owned_list: keys.owned_list.cloned(),
            patient_list: keys.patient_list.cloned(),
            multipart: keys.multipart,
            task_status: false,
        };
        let mut kind_known = |key: &'static str, kind: &str| {
            if !self.id_prefixes.contains_key(kind) {
                problems.push((
                    key,
                    format!("`{kind}` is not a kind of id in [tenancy.id_prefixes]"),
                ));
            }
        };
        if let Some(c) = keys.creates {
            kind_known("route.creates.kind", &c.kind);
        }
        if let Some(l) = keys.owned_list {
            kind_known("route.owned_list.kind", &l.kind);
        }
        if let Some(o) = keys.owner_only {
            kind_known("route.owner_only.kind", &o.kind);
            match params.iter().find(|(_, n)| *n == o.param) {
                Some((segment, _)) => {
                    t.owner_only = Some(OwnerOnly {
                        kind: o.kind.clone(),
                        param: o.param.clone(),
                        segment: *segment,
                    });
                    // The id is joined into nothing, but it must be one segment all the same.
                    if !t.safe_segments.iter().any(|(i, _)| i == segment) {
                        t.safe_segments.push((*segment, o.param.clone()));
                    }
                }
                None => problems.push((
                    "route.owner_only.param",
                    format!(
                        "`{{{}}}` is not a parameter of `{}`",
                        o.param, keys.template
                    ),
                )),
            }
        }
        if keys.access == Access::Blocked {
            return None;
        }
        let per_caller = !t.patient_segments.is_empty()
            || t.owner_only.is_some()
            || t.creates.is_some()
            || t.owned_list.is_some()
            || t.patient_list.is_some();
        if per_caller && keys.access == Access::Public {
            problems.push((
                "route.access",
                format!(
                    "a public route has no caller to isolate: `{}` names patients or owned ids, so make it `user` or `admin`",
                    keys.template
                ),
            ));
        }
        (t != RouteTenancy::default()).then(|| Arc::new(t))
    }
}
