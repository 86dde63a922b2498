-- Who owns each id the backend handed out through the gate (a task, an upload): the backend
-- keys them globally, so the gate answers another account's id with 404. One row per id,
-- written when the creating reply passes; the owner of an id never changes.
CREATE TABLE resource_owners (
    kind TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (kind, resource_id)
);
CREATE INDEX resource_owners_by_user ON resource_owners (user_id, kind);
