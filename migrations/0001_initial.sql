-- Onceflow system tables. Applied with search_path set to the Onceflow schema
-- (default "onceflow"), so names here are unqualified. See DESIGN.md §3.

CREATE TABLE workflows (
    workflow_id      text PRIMARY KEY,
    name             text NOT NULL,
    status           text NOT NULL DEFAULT 'PENDING'
                     CHECK (status IN ('PENDING', 'SUCCESS', 'ERROR', 'CANCELLED')),
    input            jsonb NOT NULL,
    output           jsonb,
    error            jsonb,
    owner            text,
    epoch            bigint NOT NULL DEFAULT 1,
    attempts         integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- Set only for workflows fed by a source such as a Kafka record.
    source_group     text,
    source_topic     text,
    source_partition integer,
    source_offset    bigint,
    ordering_key     text
);

-- Recovery: the PENDING workflows of one owner.
CREATE INDEX workflows_pending_owner
    ON workflows (owner) WHERE status = 'PENDING';

-- Hand-over on partition assignment: PENDING workflows of one partition in offset order.
CREATE INDEX workflows_pending_source
    ON workflows (source_group, source_topic, source_partition, source_offset)
    WHERE status = 'PENDING';

-- Listings by status, newest first.
CREATE INDEX workflows_status_created
    ON workflows (status, created_at DESC);

-- No foreign key to workflows: every checkpoint insert already joins its
-- workflow row (locked FOR SHARE, for fencing), so a foreign key would only
-- add a second lookup and lock per step on the hottest write path.
CREATE TABLE steps (
    workflow_id  text NOT NULL,
    step         integer NOT NULL,
    name         text NOT NULL,
    output       jsonb,
    error        jsonb,
    started_at   timestamptz,
    finished_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, step)
);

CREATE TABLE executors (
    executor_id   text PRIMARY KEY,
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    hostname      text NOT NULL,
    pid           integer NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now()
);
