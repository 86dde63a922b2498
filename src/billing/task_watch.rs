//! The gate's own poll of tasks whose end it has not seen. Most task failures reach the gate
//! as the client's status polls pass through (`own_reply`), but a client may close the tab: a
//! charge whose task the gate has not looked at for `[tasks] poll_after_secs` is claimed by one
//! replica, its status asked of the backend as its owner (the backend's own JWT where the
//! backend runs with auth), and settled by the answer (`billing::tasks`). A backend that does
//! not answer leaves the charge open for the next round.

use axum::body::Body;
use http::header::{AUTHORIZATION, HOST};
use http::{HeaderValue, Method, Request};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::tasks::{TaskCharges, TaskStatus};
use crate::auth::AuthService;
use crate::proxy::reply_body::{Capped, read_capped};
use crate::proxy::tenancy::{Namespace, replies};
use crate::proxy::upstream::Upstream;
use crate::store::{TaskChargeRow, now_ms};

/// Charges looked at per round, at most.
const PER_ROUND: i64 = 200;
/// The largest status reply read.
const STATUS_CAP: usize = 64 * 1024;
/// How long one status request may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(30);

/// What the poll needs; dropped with the services of its configuration, which ends the poll.
pub struct TaskWatch {
    pub charges: Arc<TaskCharges>,
    pub upstream: Arc<Upstream>,
    pub upstream_host: HeaderValue,
    pub auth: Arc<AuthService>,
    /// The backend's names carry account namespaces (`[tenancy] namespace`).
    pub namespaced: bool,
}

impl TaskWatch {
    /// Starts the poll; it runs while `watch` lives.
    pub fn spawn(watch: &Arc<TaskWatch>) {
        let weak: Weak<TaskWatch> = Arc::downgrade(watch);
        let every = watch.charges.poll_every();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(w) = weak.upgrade() else { return };
                w.round().await;
            }
        });
    }

    /// One round: every due charge claimed, polled and settled.
    pub async fn round(&self) {
        let due = match self.charges.claim_due(PER_ROUND).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e.detail, "cannot look for tasks to poll");
                return;
            }
        };
        for row in due {
            let Some(status) = self.status_of(&row).await else {
                continue;
            };
            if let Err(e) = self.charges.settle(&row, &status, now_ms()).await {
                tracing::warn!(request_id = %row.request_id, error = %e.detail, "cannot settle a task's charge");
            }
        }
    }

    /// The task's status as the backend tells its owner, or `None` when it cannot be had.
    async fn status_of(&self, row: &TaskChargeRow) -> Option<TaskStatus> {
        let path = self.charges.tasks.status_path(&row.task_id);
        let uri = self.upstream.uri_for(path).ok()?;
        let mut req = Request::new(Body::empty());
        *req.method_mut() = Method::GET;
        *req.uri_mut() = uri;
        req.headers_mut().insert(HOST, self.upstream_host.clone());
        if let Some(authz) = self
            .auth
            .backend_authorization_for(&row.user_id, None)
            .await
        {
            req.headers_mut().insert(AUTHORIZATION, authz);
        }
        let resp = match self.upstream.send(req, STATUS_TIMEOUT, None).await {
            Ok(resp) if resp.status().is_success() => resp,
            Ok(resp) => {
                tracing::warn!(task_id = %row.task_id, status = resp.status().as_u16(), "the backend refused a task's status");
                return None;
            }
            Err(e) => {
                tracing::warn!(task_id = %row.task_id, error = %e.detail, "cannot ask the backend for a task's status");
                return None;
            }
        };
        let read = tokio::time::timeout(STATUS_TIMEOUT, read_capped(resp.into_body(), STATUS_CAP));
        let Ok(Capped::Whole(bytes)) = read.await else {
            return None;
        };
        // The reason is shown to the task's owner in the names it typed.
        let shown = if self.namespaced {
            replies::strip_namespace(&bytes, &Namespace::of(&row.user_id))
        } else {
            None
        };
        Some(TaskStatus::of_reply(shown.as_deref().unwrap_or(&bytes)))
    }
}
