-- Charges follow their tasks: a charge on a route that starts a task (/process,
-- /continue_after_l3) is linked to the task, and refunded once if the backend reports the task
-- failed (or, by the [tasks] stale rule, never ends). One row per charge, keyed by the request
-- id of its usage row. state: open (the task's end not yet seen), completed, refunded, kept
-- (stale, kept by the rule). A task id has at most one open link: a new run of the same id
-- (the backend reuses main_<patient>_<date>) takes the place of the last one's, whose end
-- can then never be seen (its charge stands, as any charge without a link does).
CREATE TABLE task_charges (
    request_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    task_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    checked_at BIGINT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    settled_at BIGINT
);
-- Only open links are looked up (by the gate's poll, by a passing status reply): ended ones
-- leave both indexes.
CREATE INDEX task_charges_open ON task_charges (checked_at) WHERE state = 'open';
CREATE UNIQUE INDEX task_charges_by_task ON task_charges (kind, task_id) WHERE state = 'open';

-- Why a committed charge was given back (a task that failed), shown in the usage endpoints.
ALTER TABLE usage_logs ADD COLUMN refund_reason TEXT;
