-- Listings no longer cost every workflow a B-tree entry. Most rows are
-- SUCCESS (a Kafka-fed service writes one per record, and a run inline
-- writes nothing else), and their entry in (status, created_at DESC) was a
-- fifth of the cost of recording a workflow: measured on 2,000,000 rows of
-- the benchmark's shape, 0.5-1 µs of Postgres CPU and 80 bytes of WAL per
-- row of 6-8 µs and 530 (bench/README.md, "Measured choices").
--
-- Listings of unfinished workflows (PENDING, ERROR, CANCELLED: few, and the
-- ones an operator looks for) keep a B-tree, now holding only them. Listings
-- of successes, or of every status, newest first, read the recent part of
-- the table through a BRIN index on created_at (rows arrive in created_at
-- order, so a block range's summary is tight): the engine asks for a window
-- of the last minute, then wider ones, until it has enough rows
-- (engine/_engine.py, list_workflows). A BRIN index adds a summary per 128
-- pages, not an entry per row; autosummarize keeps new ranges summarized
-- without waiting for VACUUM.
--
-- Building the new indexes reads the table once (under a lock that holds
-- back writes to it, as any migration here does).

DROP INDEX workflows_status_created;

CREATE INDEX workflows_unfinished_created
    ON workflows (status, created_at DESC)
    WHERE status <> 'SUCCESS';

CREATE INDEX workflows_created_brin
    ON workflows USING brin (created_at)
    WITH (autosummarize = on);
