-- ANALYZE samples every column; on the workflows table, the JSON payloads
-- (input, output, error) cost half of it (0.73 s of CPU for 30,000 sampled
-- rows, 0.39 s without them), and autovacuum analyzes the table again each
-- time a tenth of it is new: on a busy executor's machine, a pause of about
-- a second every so often. No query filters or joins on a payload, so their
-- statistics serve nothing. The same for the steps' payloads.

ALTER TABLE workflows ALTER COLUMN input SET STATISTICS 0;
ALTER TABLE workflows ALTER COLUMN output SET STATISTICS 0;
ALTER TABLE workflows ALTER COLUMN error SET STATISTICS 0;
ALTER TABLE steps ALTER COLUMN output SET STATISTICS 0;
ALTER TABLE steps ALTER COLUMN error SET STATISTICS 0;
