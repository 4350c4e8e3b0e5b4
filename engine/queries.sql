-- Every query the engine runs, one named block each ("-- name: NAME").
-- Lookups by workflow ID say `status NOT IN ('SUCCESS', 'ERROR', 'CANCELLED')`
-- rather than `status = 'PENDING'`: the same rows (the CHECK constraint allows
-- nothing else), but it cannot match the partial indexes on PENDING, which the
-- planner otherwise picks when statistics lag, scanning every pending
-- workflow per batch (measured: 193 ms against 5 ms at 4,000 pending).
-- {schema} is the Onceflow schema, composed once per Engine as a quoted
-- identifier (psycopg.sql.Identifier), never from any other input.

-- name: insert_workflow
INSERT INTO {schema}.workflows (workflow_id, name, input, owner)
VALUES (%(workflow_id)s, %(name)s, %(input)s::jsonb, %(owner)s)
ON CONFLICT (workflow_id) DO NOTHING
RETURNING epoch;

-- name: insert_workflows
-- A whole batch in one statement; rows that already exist are skipped and
-- reported by their absence from RETURNING (DESIGN.md §4 step 3). Rows come
-- PENDING, or ERROR (records that do not decode), or, from an inline batch,
-- already SUCCESS with their output (see _inline.py).
INSERT INTO {schema}.workflows
    (workflow_id, name, input, owner, status, output, error,
     source_group, source_topic, source_partition, source_offset, ordering_key)
SELECT r->>0, r->>1, r->2, %(owner)s, r->>3, NULLIF(r->4, 'null'), NULLIF(r->5, 'null'),
       r->>6, r->>7, (r->>8)::int, (r->>9)::bigint, r->>10
FROM jsonb_array_elements(%(rows)s::jsonb) AS r
ON CONFLICT (workflow_id) DO NOTHING
RETURNING workflow_id;

-- name: insert_finished_workflows
-- The workflows an inline batch ran, inserted already SUCCESS with their
-- outputs (see _inline.py). No ON CONFLICT: a row another executor recorded
-- since the batch's lookup means the workflow was not ours to run, and the
-- unique violation aborts the transaction, so its COMMIT can be sent without
-- waiting to check (DESIGN.md §1.2, §1.5). Their input is NULL unless the
-- engine keeps inline inputs (`inline_inputs`).
INSERT INTO {schema}.workflows
    (workflow_id, name, input, owner, status, output, error,
     source_group, source_topic, source_partition, source_offset, ordering_key)
SELECT r->>0, r->>1, NULLIF(r->2, 'null'), %(owner)s, r->>3, NULLIF(r->4, 'null'), NULLIF(r->5, 'null'),
       r->>6, r->>7, (r->>8)::int, (r->>9)::bigint, r->>10
FROM jsonb_array_elements(%(rows)s::jsonb) AS r;

-- name: existing_workflows
-- Which of a batch's workflow IDs are recorded already, and whether they are
-- final (an inline batch runs only the others). The IDs come as one JSON
-- array, which psycopg adapts far faster than a text[] of hundreds of strings.
-- One primary-key probe per ID, whatever the table's size: the LATERAL ...
-- LIMIT 1 cannot be flattened into a join, which the planner (guessing 100
-- IDs) would run as a hash join over the whole table.
SELECT w.workflow_id, w.status <> 'PENDING'
FROM jsonb_array_elements_text(%(workflow_ids)s::jsonb) AS u(workflow_id)
CROSS JOIN LATERAL (
    SELECT x.workflow_id, x.status FROM {schema}.workflows x
    WHERE x.workflow_id = u.workflow_id LIMIT 1
) w;

-- name: insert_inline_steps
-- The checkpoints of an inline batch, written in the transaction that inserts
-- their workflows already final: no fence to check (no other executor can
-- claim a row that is not committed yet), and no ON CONFLICT: a step already
-- there means the workflow was not ours to run, and the error rolls the batch
-- back.
INSERT INTO {schema}.steps (workflow_id, step, name, output, started_at)
SELECT u.workflow_id, u.step, u.name, u.output, u.started_at
FROM jsonb_to_recordset(%(rows)s::jsonb)
     AS u(workflow_id text, step int, name text, output jsonb, started_at timestamptz);

-- name: inspect_existing
-- Redelivered rows: their state, and whether their owner is still alive.
SELECT w.workflow_id, w.name, w.status, w.owner, w.epoch,
       (e.executor_id IS NOT NULL
        AND e.heartbeat_at > now() - make_interval(secs => %(lease)s)) AS owner_alive
FROM {schema}.workflows w
LEFT JOIN {schema}.executors e ON e.executor_id = w.owner
WHERE w.workflow_id = ANY(%(workflow_ids)s::text[]);

-- name: claim_workflows
-- Take over PENDING workflows whose owner is gone, released, or is us
-- (a restart under the same executor ID). The epoch bump fences the old
-- owner: its checkpoints and completion now match no row (DESIGN.md §1.6).
UPDATE {schema}.workflows w
SET owner = %(owner)s, epoch = w.epoch + 1, attempts = w.attempts + 1, updated_at = now()
FROM (
    SELECT c.workflow_id
    FROM {schema}.workflows c
    LEFT JOIN {schema}.executors e ON e.executor_id = c.owner
    WHERE c.workflow_id = ANY(%(workflow_ids)s::text[])
      AND c.status NOT IN ('SUCCESS', 'ERROR', 'CANCELLED')
      AND (c.owner IS NULL OR c.owner = %(owner)s OR e.executor_id IS NULL
           OR e.heartbeat_at <= now() - make_interval(secs => %(lease)s))
    FOR UPDATE OF c SKIP LOCKED
) AS claimable
WHERE w.workflow_id = claimable.workflow_id
RETURNING w.workflow_id, w.name, w.input, w.epoch, w.source_offset;

-- name: claim_orphans
-- Recovery: PENDING workflows of dead executors, or released ones (launch
-- releases those an earlier run under our ID left). Only workflows this
-- executor can run (names): one it cannot run would be stuck under a live
-- owner. Workflows fed by a source are left to the integration that owns the
-- source, which claims them in source order (DESIGN.md §5, §6).
UPDATE {schema}.workflows w
SET owner = %(owner)s, epoch = w.epoch + 1, attempts = w.attempts + 1, updated_at = now()
FROM (
    SELECT c.workflow_id
    FROM {schema}.workflows c
    LEFT JOIN {schema}.executors e ON e.executor_id = c.owner
    WHERE c.status = 'PENDING'
      AND c.source_group IS NULL
      AND c.name = ANY(%(names)s::text[])
      AND (c.owner IS NULL OR e.executor_id IS NULL
           OR e.heartbeat_at <= now() - make_interval(secs => %(lease)s))
    ORDER BY c.created_at
    LIMIT %(limit)s
    FOR UPDATE OF c SKIP LOCKED
) AS claimable
WHERE w.workflow_id = claimable.workflow_id
RETURNING w.workflow_id, w.name, w.input, w.epoch;

-- name: pending_for_source
-- PENDING workflows of one source partition, oldest first, with their owner's liveness.
SELECT w.workflow_id, w.owner, w.source_offset, w.input,
       (e.executor_id IS NOT NULL
        AND e.heartbeat_at > now() - make_interval(secs => %(lease)s)) AS owner_alive
FROM {schema}.workflows w
LEFT JOIN {schema}.executors e ON e.executor_id = w.owner
WHERE w.status = 'PENDING'
  AND w.source_group = %(group)s AND w.source_topic = %(topic)s
  AND w.source_partition = %(partition)s
ORDER BY w.source_offset;

-- name: end_dead_transactions
-- The transactions executors past their lease left open on their tagged
-- connections (Database.connect; the tag is _db.session_tag's): ended, so
-- that the rows they lock (workflows they were checkpointing or recording)
-- can be claimed. Only those waiting for their client: idle in a transaction,
-- or, in pipeline mode (no Sync sent yet), active and reading from the client.
WITH dead AS (
    SELECT e.executor_id,
           extract(epoch FROM now() - e.heartbeat_at)::float8 AS silent,
           CASE WHEN octet_length('onceflow ' || e.executor_id) <= 63
                THEN 'onceflow ' || e.executor_id
                ELSE 'onceflow ' || left(md5(e.executor_id), 20) END AS tag
    FROM {schema}.executors e
    WHERE e.heartbeat_at <= now() - make_interval(secs => %(lease)s)
)
SELECT d.executor_id AS owner, d.silent, pg_terminate_backend(a.pid) AS ended
FROM dead d
JOIN pg_stat_activity a ON a.application_name = d.tag
WHERE a.datname = current_database()
  AND (a.state IN ('idle in transaction', 'idle in transaction (aborted)')
       OR (a.state = 'active' AND a.wait_event = 'ClientRead'));

-- name: end_own_transactions
-- At launch, before handing back what an earlier run under this executor ID
-- left: that run's sessions still waiting on their client (frozen, or its
-- host gone) would keep the rows locked, and the hand-back would wait on them.
SELECT pg_terminate_backend(a.pid) AS ended
FROM pg_stat_activity a
WHERE a.datname = current_database()
  AND a.application_name = %(tag)s
  AND (a.state IN ('idle in transaction', 'idle in transaction (aborted)')
       OR (a.state = 'active' AND a.wait_event = 'ClientRead'));

-- name: release_workflows
-- Hand PENDING workflows back (graceful stop, partition revoked): any
-- executor may claim them at once. The epoch bump fences a run still going.
UPDATE {schema}.workflows
SET owner = NULL, epoch = epoch + 1, updated_at = now()
WHERE workflow_id = ANY(%(workflow_ids)s::text[]) AND status NOT IN ('SUCCESS', 'ERROR', 'CANCELLED') AND owner = %(owner)s;

-- name: release_all_owned
UPDATE {schema}.workflows
SET owner = NULL, epoch = epoch + 1, updated_at = now()
WHERE status = 'PENDING' AND owner = %(owner)s;

-- name: get_workflow
SELECT workflow_id, name, status, input, output, error, owner, epoch, attempts,
       created_at, updated_at, source_group, source_topic, source_partition,
       source_offset, ordering_key
FROM {schema}.workflows
WHERE workflow_id = %(workflow_id)s;

-- name: list_workflows
-- Newest first, created within %(window)s of now (NULL: ever). Unfinished
-- statuses are read through their partial B-tree; successes and every
-- status through the BRIN index on created_at, one window at a time
-- (migrations/0005_lighter_listing_indexes.sql, 0006_wider_brin_ranges.sql).
SELECT workflow_id, name, status, input, output, error, owner, epoch, attempts,
       created_at, updated_at, source_group, source_topic, source_partition,
       source_offset, ordering_key
FROM {schema}.workflows
WHERE (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(name)s::text IS NULL OR name = %(name)s)
  AND created_at >= COALESCE(now() - %(window)s::interval, '-infinity')
ORDER BY created_at DESC, workflow_id
LIMIT %(limit)s;

-- name: load_steps
SELECT step, name, output, error, started_at, finished_at
FROM {schema}.steps
WHERE workflow_id = %(workflow_id)s
ORDER BY step;

-- name: get_step
SELECT step, name, output, error, started_at, finished_at
FROM {schema}.steps
WHERE workflow_id = %(workflow_id)s AND step = %(step)s;

-- name: write_steps
-- Group-committed checkpoints, the batch as one JSON document (psycopg
-- adapts one string far faster than seven arrays). The join to the workflow
-- row at the writer's epoch, locked FOR SHARE, is the fence: a claim (which
-- bumps the epoch) either committed first, and the row no longer matches,
-- or waits for us. The rows are found by primary key (`= ANY` of the batch's
-- IDs, which the planner takes for a few): as `IN (SELECT ...)`, guessing 100
-- rows in any document, it read every unfinished workflow for each batch.
WITH u AS (
    SELECT *
    FROM jsonb_to_recordset(%(rows)s::jsonb)
         AS r(workflow_id text, step int, name text, output jsonb, error jsonb,
              started_at timestamptz, epoch bigint)
), live AS (
    SELECT w.workflow_id, w.epoch
    FROM {schema}.workflows w
    WHERE w.workflow_id = ANY(ARRAY(SELECT workflow_id FROM u))
      AND w.status NOT IN ('SUCCESS', 'ERROR', 'CANCELLED')
    FOR SHARE OF w
)
INSERT INTO {schema}.steps (workflow_id, step, name, output, error, started_at)
SELECT u.workflow_id, u.step, u.name, u.output, u.error, u.started_at
FROM u JOIN live ON live.workflow_id = u.workflow_id AND live.epoch = u.epoch
ON CONFLICT (workflow_id, step) DO NOTHING
RETURNING workflow_id, step;

-- name: write_transaction_step
-- The checkpoint of a @transaction step, in the same transaction as its SQL.
INSERT INTO {schema}.steps (workflow_id, step, name, output, started_at)
SELECT w.workflow_id, %(step)s, %(name)s, %(output)s::jsonb, %(started_at)s
FROM (
    SELECT workflow_id FROM {schema}.workflows
    WHERE workflow_id = %(workflow_id)s AND epoch = %(epoch)s AND status NOT IN ('SUCCESS', 'ERROR', 'CANCELLED')
    FOR SHARE
) AS w
ON CONFLICT (workflow_id, step) DO NOTHING
RETURNING step;

-- name: complete_workflows
-- The one move from PENDING to a final state, conditional on the epoch. Rows
-- found by primary key, as in write_steps.
WITH u AS (
    SELECT *
    FROM jsonb_to_recordset(%(rows)s::jsonb)
         AS r(workflow_id text, epoch bigint, status text, output jsonb, error jsonb)
)
UPDATE {schema}.workflows w
SET status = u.status, output = u.output, error = u.error, updated_at = now()
FROM u
WHERE w.workflow_id = ANY(ARRAY(SELECT workflow_id FROM u))
  AND w.workflow_id = u.workflow_id AND w.epoch = u.epoch
  AND w.status NOT IN ('SUCCESS', 'ERROR', 'CANCELLED')
RETURNING w.workflow_id;

-- name: cancel_workflow
UPDATE {schema}.workflows
SET status = 'CANCELLED', updated_at = now()
WHERE workflow_id = %(workflow_id)s AND status NOT IN ('SUCCESS', 'ERROR', 'CANCELLED')
RETURNING workflow_id;

-- name: reopen_workflow
-- Resume: back to PENDING under a new epoch, owned by the caller.
UPDATE {schema}.workflows
SET status = 'PENDING', owner = %(owner)s, epoch = epoch + 1, attempts = attempts + 1,
    output = NULL, error = NULL, updated_at = now()
WHERE workflow_id = %(workflow_id)s
  AND status IN ('PENDING', 'ERROR', 'CANCELLED')
RETURNING name, input, epoch;

-- name: forget_failed_steps
-- Resume re-runs what did not complete: the first failed step and all after it.
DELETE FROM {schema}.steps
WHERE workflow_id = %(workflow_id)s
  AND step >= (SELECT min(step) FROM {schema}.steps
               WHERE workflow_id = %(workflow_id)s AND error IS NOT NULL);

-- name: heartbeat
INSERT INTO {schema}.executors (executor_id, hostname, pid)
VALUES (%(executor_id)s, %(hostname)s, %(pid)s)
ON CONFLICT (executor_id) DO UPDATE
SET heartbeat_at = now(), hostname = EXCLUDED.hostname, pid = EXCLUDED.pid;

-- name: remove_executor
DELETE FROM {schema}.executors WHERE executor_id = %(executor_id)s;

-- name: table_sees_statements
-- Whether a user's table could tell one multi-row INSERT from many
-- single-row ones (_multirow.py sends runs of single-row INSERTs of inline
-- transaction steps as multi-row ones only when it could not): anything but
-- a plain table (a view's INSERT lands in tables not looked at here, a
-- partitioned one in partitions), any trigger but BEFORE ROW ones (statement
-- triggers fire once per statement, AFTER ROW ones at its end, when they see
-- the later rows too), a rule, or a foreign key to the table itself (checked
-- at the end of each statement: a row could refer to a later row).
SELECT NOT EXISTS (
    SELECT 1 FROM pg_catalog.pg_class
    WHERE oid = %(table)s::regclass AND relkind = 'r'
) OR EXISTS (
    SELECT 1 FROM pg_catalog.pg_trigger
    WHERE tgrelid = %(table)s::regclass AND NOT tgisinternal
      AND (tgtype & 3) <> 3  -- bit 0: ROW, bit 1: BEFORE
) OR EXISTS (
    SELECT 1 FROM pg_catalog.pg_rewrite
    WHERE ev_class = %(table)s::regclass AND rulename <> '_RETURN'
) OR EXISTS (
    SELECT 1 FROM pg_catalog.pg_constraint
    WHERE conrelid = %(table)s::regclass AND contype = 'f' AND confrelid = conrelid
);
