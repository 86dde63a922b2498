//! `[tasks]`: charges follow their tasks. A metered route whose reply `creates` an id of the
//! task kind (`/process`, `/continue_after_l3`) starts work the backend reports later, on its
//! status route (`/task_status/{task_id}`). When the backend reports the task `failed`, the
//! charge is refunded, once; a task that never ends is handled by the `stale` rule. The gate
//! sees statuses as the clients' polls pass through it, and polls itself for tasks nobody
//! has asked about for `poll_after_secs` (`billing::task_watch`).

use serde::Deserialize;
use std::time::Duration;

use super::RouteSpec;

/// `[tasks]` as written.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct TasksSection {
    /// Refund the charge of a task the backend reports failed.
    #[serde(default = "yes")]
    pub refund_failed: bool,
    /// The kind of id (`creates`, `owner_only`) that names a task.
    #[serde(default = "default_kind")]
    pub kind: String,
    /// The route that reports a task's status: a declared `owner_only` route of `kind`.
    #[serde(default = "default_status_route")]
    pub status_route: String,
    /// The gate polls a task itself when nobody has asked about it for this long.
    #[serde(default = "default_poll_after")]
    pub poll_after_secs: u64,
    /// How often the gate looks for such tasks.
    #[serde(default = "default_poll_every")]
    pub poll_every_secs: u64,
    /// A task neither completed nor failed this long after it started (the backend's zombie
    /// window is 600 s) is settled by `stale`.
    #[serde(default = "default_stale_after")]
    pub stale_after_secs: u64,
    #[serde(default)]
    pub stale: StaleRule,
}

impl Default for TasksSection {
    fn default() -> Self {
        TasksSection {
            refund_failed: true,
            kind: default_kind(),
            status_route: default_status_route(),
            poll_after_secs: default_poll_after(),
            poll_every_secs: default_poll_every(),
            stale_after_secs: default_stale_after(),
            stale: StaleRule::default(),
        }
    }
}

/// What becomes of the charge of a task still `processing` (or unknown to the backend) past
/// the stale window.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StaleRule {
    /// Give it back: the backend gave up on it (its zombie rule lets it be resubmitted).
    #[default]
    Refund,
    /// Keep it: the work may have been done.
    Keep,
}

fn yes() -> bool {
    true
}
fn default_kind() -> String {
    "task".into()
}
fn default_status_route() -> String {
    "/task_status/{task_id}".into()
}
fn default_poll_after() -> u64 {
    60
}
fn default_poll_every() -> u64 {
    15
}
fn default_stale_after() -> u64 {
    600
}

/// The validated `[tasks]`; `None` in [`super::Config::tasks`] when no metered route creates a
/// task or `refund_failed` is off.
#[derive(Debug, Clone)]
pub struct Tasks {
    pub kind: String,
    /// The status route's template, and the parameter in it that holds the task id.
    pub status_route: String,
    pub param: String,
    pub poll_after: Duration,
    pub poll_every: Duration,
    pub stale_after: Duration,
    pub stale: StaleRule,
}

impl Tasks {
    /// Validates the section against the routes; marks the status route, whose replies the
    /// gate reads for the task's status.
    pub fn validate(s: &TasksSection, routes: &mut [RouteSpec]) -> Result<Option<Tasks>, String> {
        let creates_charged = routes.iter().any(|r| {
            r.meter.is_some()
                && r.tenancy
                    .as_ref()
                    .and_then(|t| t.creates.as_ref())
                    .is_some_and(|c| c.kind == s.kind)
        });
        if !s.refund_failed || !creates_charged {
            return Ok(None);
        }
        for (key, v) in [
            ("poll_after_secs", s.poll_after_secs),
            ("poll_every_secs", s.poll_every_secs),
            ("stale_after_secs", s.stale_after_secs),
        ] {
            if v == 0 || v > 30 * 86_400 {
                return Err(format!(
                    "tasks.{key}: must be between 1 and 2592000 seconds (30 days)"
                ));
            }
        }
        let status = routes.iter_mut().find(|r| r.path == s.status_route);
        let Some(status) = status else {
            return Err(format!(
                "tasks.status_route: `{}` is not a declared [[route]] (a metered route creates `{}` ids, so the gate must be able to read their status)",
                s.status_route, s.kind
            ));
        };
        let owner = status
            .tenancy
            .as_ref()
            .and_then(|t| t.owner_only.as_ref())
            .filter(|o| o.kind == s.kind)
            .map(|o| o.param.clone());
        let Some(param) = owner else {
            return Err(format!(
                "tasks.status_route: `{}` must have owner_only = {{ kind = \"{}\", param = ... }}",
                s.status_route, s.kind
            ));
        };
        if let Some(t) = status.tenancy.as_mut() {
            std::sync::Arc::make_mut(t).task_status = true;
        }
        Ok(Some(Tasks {
            kind: s.kind.clone(),
            status_route: s.status_route.clone(),
            param,
            poll_after: Duration::from_secs(s.poll_after_secs),
            poll_every: Duration::from_secs(s.poll_every_secs),
            stale_after: Duration::from_secs(s.stale_after_secs),
            stale: s.stale,
        }))
    }

    /// The backend path that reports the task `id` (the backend's own id, namespace and all).
    pub fn status_path(&self, id: &str) -> String {
        let encoded: String =
            percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        self.status_route
            .replace(&format!("{{{}}}", self.param), &encoded)
    }
}
