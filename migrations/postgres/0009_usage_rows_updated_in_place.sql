-- Every usage row is written `reserved` and updated once soon after (`committed`, or
-- `refunded`). The update changes no indexed column, so PostgreSQL can keep the new version on
-- the row's page and add no index entry (a HOT update) -- if the page has room. Filled to the
-- brim by the inserts before it, it had room for a third of them: each of the others wrote a
-- new entry into all four of the table's indexes. Half of each new page is left for the
-- updates: all of them were HOT under the benchmark's load, which then served 1.13x the
-- metered requests (a heap twice the size is the price). Pages written before keep their fill.
-- SQLite has no such setting: it rewrites the row in place.
ALTER TABLE usage_logs SET (fillfactor = 50);
