-- PostgreSQL's 0009 leaves half of each new page of usage_logs free, so that the one update
-- every usage row gets stays on its page (a HOT update, no new index entries). SQLite has no
-- such setting: it rewrites a row in place. This migration keeps the two backends' versions
-- the same and changes nothing.
SELECT 1;
