-- The BRIN index on created_at summarizes 512 pages per range instead of
-- 128. With autosummarize, each filled range asks autovacuum for a summary
-- through a queue of 256 requests that the whole server shares and that a
-- worker drains only when it next visits the database (autovacuum_naptime,
-- a minute by default). At 25,000 workflows/s a 128-page range fills every
-- 0.14 s, 430 a minute: the queue overflowed within the first minute, every
-- further range stayed unsummarized until the next VACUUM, and each refused
-- request wrote "request for BRIN range summarization ... was not recorded"
-- into Postgres's log with the whole insert statement, 7 times a second.
-- 512-page ranges ask a quarter as often (the queue holds up to about
-- 60,000 workflows/s); a range is 4 MB of heap, which is what a listing of
-- the newest rows reads at least.
--
-- A BRIN index cannot change its range size in place: it is built again,
-- which reads the table once under a lock that holds back writes to it.

DROP INDEX workflows_created_brin;

CREATE INDEX workflows_created_brin
    ON workflows USING brin (created_at)
    WITH (pages_per_range = 512, autosummarize = on);
