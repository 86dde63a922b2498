//! Charges follow their tasks. `/process` answers `submitted` at once and the work runs for
//! minutes; the backend may report the task `failed` later (`GET /task_status/{id}`). The
//! charge was made when the work was accepted, so it is linked to the task, and refunded once
//! when the task fails: seen in a status reply passing through the gate, or found by the gate's
//! own poll of tasks whose end it has not seen (`billing::task_watch`). A task still running past
//! the stale window (the backend's zombie rule: 600 s) is settled by `[tasks] stale`.
//!
//! Exactly once, across replicas: every end is one conditional transaction on the link still
//! being open (`store::task_charges`).

use moka::future::Cache;
use serde_json::Value;
use std::sync::LazyLock;
use std::time::Duration;

use crate::config::tasks::{StaleRule, Tasks};
use crate::error::Refusal;
use crate::store::{Store, TaskChargeRow, TaskEnd, now_ms};

/// What a status reply says of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskStatus {
    Completed,
    /// Failed, with the backend's `error` (or `message`).
    Failed(String),
    /// `processing`, `not_found` (a backend that restarted, or a status asked of another
    /// worker) or anything else: not an end.
    Running,
}

impl TaskStatus {
    /// Reads a status reply (`{"status": "failed", "error": ...}`).
    pub fn of_reply(body: &[u8]) -> TaskStatus {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return TaskStatus::Running;
        };
        match v.get("status").and_then(Value::as_str) {
            Some("completed") => TaskStatus::Completed,
            Some("failed") => {
                let why = ["error", "message"]
                    .iter()
                    .find_map(|k| v.get(*k).and_then(Value::as_str).filter(|s| !s.is_empty()))
                    .unwrap_or("no reason given");
                TaskStatus::Failed(why.chars().take(200).collect())
            }
            _ => TaskStatus::Running,
        }
    }

    /// Whether a reply may tell an end, by a look at its bytes: most polls say `processing`
    /// and are not parsed.
    pub fn may_end(body: &[u8]) -> bool {
        // Searchers built once: building one per call cost more than the search.
        static FAILED: LazyLock<memchr::memmem::Finder<'static>> =
            LazyLock::new(|| memchr::memmem::Finder::new(b"failed"));
        static COMPLETED: LazyLock<memchr::memmem::Finder<'static>> =
            LazyLock::new(|| memchr::memmem::Finder::new(b"completed"));
        FAILED.find(body).is_some() || COMPLETED.find(body).is_some()
    }
}

/// The links between charges and tasks, and their ends.
pub struct TaskCharges {
    store: Store,
    pub tasks: Tasks,
    /// Tasks this replica saw end, so a client polling a finished task again costs no query.
    /// Short-lived: a task id can be started again (a new link forgets it here; another
    /// replica's link is found by the poll).
    ended: Cache<String, ()>,
}

impl TaskCharges {
    pub fn new(store: Store, tasks: Tasks) -> TaskCharges {
        TaskCharges {
            store,
            ended: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(tasks.poll_after)
                .build(),
            tasks,
        }
    }

    /// A task id was started again: what this replica remembers of its end is forgotten.
    pub async fn started(&self, task_id: &str) {
        // A read first: a write to the cache costs more, and the id is rarely in it.
        if self.ended.contains_key(task_id) {
            self.ended.invalidate(task_id).await;
        }
    }

    /// Whether a status reply of `task_id` may tell an end this replica has not seen: a look
    /// without a future, so the usual poll (`processing`) makes none.
    pub fn may_have_ended(&self, task_id: &str, reply: &[u8]) -> bool {
        TaskStatus::may_end(reply) && !self.ended.contains_key(task_id)
    }

    /// A status reply of `task_id` passed through the gate: ends its charge if the reply tells
    /// the task's end.
    pub async fn observe(&self, task_id: &str, reply: &[u8]) -> Result<(), Refusal> {
        if !self.may_have_ended(task_id, reply) {
            return Ok(());
        }
        let status = TaskStatus::of_reply(reply);
        if status == TaskStatus::Running {
            return Ok(());
        }
        // A link this replica queued is written before it is looked for.
        self.store.ledger().flush().await;
        for row in self
            .store
            .task_charges()
            .open(&self.tasks.kind, task_id)
            .await?
        {
            self.settle(&row, &status, now_ms()).await?;
        }
        self.ended.insert(task_id.to_string(), ()).await;
        Ok(())
    }

    /// Ends `row`'s charge by what the backend said of its task, or by the stale rule; a
    /// running task inside the window stays open. Returns how it ended, if this call ended it.
    pub async fn settle(
        &self,
        row: &TaskChargeRow,
        status: &TaskStatus,
        now: i64,
    ) -> Result<Option<TaskEnd>, Refusal> {
        let (end, reason) = match status {
            TaskStatus::Completed => (TaskEnd::Completed, "the task completed".to_string()),
            TaskStatus::Failed(why) => (TaskEnd::Refunded, format!("the task failed: {why}")),
            TaskStatus::Running => {
                let window = i64::try_from(self.tasks.stale_after.as_millis()).unwrap_or(i64::MAX);
                if now.saturating_sub(row.created_at) < window {
                    return Ok(None);
                }
                let secs = self.tasks.stale_after.as_secs();
                match self.tasks.stale {
                    StaleRule::Refund => (
                        TaskEnd::Refunded,
                        format!("the task did not finish within {secs} s"),
                    ),
                    StaleRule::Keep => (
                        TaskEnd::Kept,
                        format!("the task did not finish within {secs} s; kept by the stale rule"),
                    ),
                }
            }
        };
        let (ended, _) = self
            .store
            .task_charges()
            .end(&row.request_id, end, &reason, now)
            .await?;
        if ended {
            tracing::info!(request_id = %row.request_id, task_id = %row.task_id, user_id = %row.user_id, end = ?end, reason = %reason, "task charge settled");
        }
        Ok(ended.then_some(end))
    }

    /// Open charges the gate has not looked at for `poll_after`, each claimed for one poll (a
    /// charge another replica claimed first is left to it).
    pub async fn claim_due(&self, limit: i64) -> Result<Vec<TaskChargeRow>, Refusal> {
        let now = now_ms();
        let after = i64::try_from(self.tasks.poll_after.as_millis()).unwrap_or(i64::MAX);
        let mut claimed = Vec::new();
        for row in self.store.task_charges().due(now - after, limit).await? {
            if self
                .store
                .task_charges()
                .claim(&row.request_id, row.checked_at, now)
                .await?
            {
                claimed.push(row);
            }
        }
        Ok(claimed)
    }

    /// How often the gate's own poll runs.
    pub fn poll_every(&self) -> Duration {
        self.tasks.poll_every
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_replies_are_read_for_their_end() {
        assert_eq!(
            TaskStatus::of_reply(br#"{"status":"failed","error":"CUDA out of memory"}"#),
            TaskStatus::Failed("CUDA out of memory".into())
        );
        assert_eq!(
            TaskStatus::of_reply(br#"{"status":"completed","progress":100}"#),
            TaskStatus::Completed
        );
        for running in [
            &br#"{"status":"processing","message":"step completed"}"#[..],
            br#"{"status":"not_found"}"#,
            b"not json",
        ] {
            assert_eq!(TaskStatus::of_reply(running), TaskStatus::Running);
        }
        assert!(!TaskStatus::may_end(br#"{"status":"processing"}"#));
        assert!(TaskStatus::may_end(br#"{"status":"failed"}"#));
    }
}
