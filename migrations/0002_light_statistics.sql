-- ANALYZE of the workflows table, on a 30,000-row sample (the default
-- statistics target, 100), took 0.73 s of CPU for 51,200 rows of the
-- benchmark's shape; autovacuum runs it again each time a tenth of the table
-- is new, and on a busy executor's machine that is a pause of about a second.
-- No query filters or joins on a JSON payload (input, output, error): they get
-- no statistics (0.39 s without them). The other columns need few: primary-key
-- probes, partial indexes on PENDING rows and listings by status; a target of
-- 10 samples 3,000 rows (0.02-0.03 s). The same for the steps table.

ALTER TABLE workflows
    ALTER COLUMN input SET STATISTICS 0,
    ALTER COLUMN output SET STATISTICS 0,
    ALTER COLUMN error SET STATISTICS 0,
    ALTER COLUMN workflow_id SET STATISTICS 10,
    ALTER COLUMN name SET STATISTICS 10,
    ALTER COLUMN status SET STATISTICS 10,
    ALTER COLUMN owner SET STATISTICS 10,
    ALTER COLUMN epoch SET STATISTICS 10,
    ALTER COLUMN attempts SET STATISTICS 10,
    ALTER COLUMN created_at SET STATISTICS 10,
    ALTER COLUMN updated_at SET STATISTICS 10,
    ALTER COLUMN source_group SET STATISTICS 10,
    ALTER COLUMN source_topic SET STATISTICS 10,
    ALTER COLUMN source_partition SET STATISTICS 10,
    ALTER COLUMN source_offset SET STATISTICS 10,
    ALTER COLUMN ordering_key SET STATISTICS 10;

ALTER TABLE steps
    ALTER COLUMN output SET STATISTICS 0,
    ALTER COLUMN error SET STATISTICS 0,
    ALTER COLUMN workflow_id SET STATISTICS 10,
    ALTER COLUMN step SET STATISTICS 10,
    ALTER COLUMN name SET STATISTICS 10,
    ALTER COLUMN started_at SET STATISTICS 10,
    ALTER COLUMN finished_at SET STATISTICS 10;
