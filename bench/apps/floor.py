"""The floor: Onceflow's durable rows for a poll, written the cheapest way.

Not a workflow engine. For each poll it writes, in one transaction, what
Onceflow leaves behind for each record (the workflow row, already SUCCESS,
its three step checkpoints and the effect row), skipping records whose
workflow exists (redelivered). That is exactly-once for this handler, with
the same tables and indexes, and one commit per poll: an upper bound for any
engine that keeps Onceflow's data model. Run by `bench.apps.plain --mode floor`;
`--mode floor-compact` writes only a row per workflow ID and the effect.
"""

from __future__ import annotations

from typing import Any

import orjson
import psycopg

from bench import workload
from consumers import workflow_id

Row = tuple[int, int, int, int | None, int]  # event_id, partition, offset, produced_ms, score
Raw = tuple[bytes | None, bytes]  # key, value

_INSERT_WORKFLOWS = """
INSERT INTO onceflow.workflows
    (workflow_id, name, input, output, status,
     source_group, source_topic, source_partition, source_offset, ordering_key)
SELECT u.workflow_id, u.name, u.input, 'null'::jsonb, 'SUCCESS',
       u.source_group, u.source_topic, u.source_partition, u.source_offset, u.ordering_key
FROM jsonb_to_recordset(%s::jsonb)
     AS u(workflow_id text, name text, input jsonb, source_group text, source_topic text,
          source_partition int, source_offset bigint, ordering_key text)
ON CONFLICT (workflow_id) DO NOTHING
RETURNING workflow_id
"""

_INSERT_STEPS = """
INSERT INTO onceflow.steps (workflow_id, step, name, output)
SELECT u.workflow_id, u.step, u.name, u.output
FROM jsonb_to_recordset(%s::jsonb) AS u(workflow_id text, step int, name text, output jsonb)
ON CONFLICT (workflow_id, step) DO NOTHING
"""


# The compact variant keeps only what exactly-once needs once a workflow has
# completed within its poll's transaction: a row per workflow ID to skip a
# redelivered record. No input (Kafka still holds the record: offsets are
# stored after this commit), no step rows (nothing to replay).
_CREATE_DONE = "CREATE TABLE IF NOT EXISTS bench_done (workflow_id text PRIMARY KEY, output jsonb)"
_INSERT_DONE = """
INSERT INTO bench_done (workflow_id, output) SELECT unnest(%s::text[]), 'null'::jsonb
ON CONFLICT (workflow_id) DO NOTHING
RETURNING workflow_id
"""


class Floor:
    def __init__(
        self,
        conn: psycopg.Connection[Any],
        group: str,
        topic: str,
        topic_id: str,
        *,
        compact: bool = False,
    ) -> None:
        self.conn = conn
        self.group, self.topic, self.topic_id = group, topic, topic_id
        self.name = f"kafka:{group}:bench.floor"
        self.insert_effects = workload.insert_effects()
        self.compact = compact
        if compact:
            conn.execute(_CREATE_DONE)

    def write(self, rows: list[Row], raw: list[Raw], a: list[int]) -> None:
        ids = [workflow_id(self.group, self.topic, self.topic_id, r[1], r[2]) for r in rows]
        if self.compact:
            with self.conn.transaction():
                new = {r[0] for r in self.conn.execute(_INSERT_DONE, [ids]).fetchall()}
                self._effects([row for wid, row in zip(ids, rows, strict=True) if wid in new])
            return
        workflows: list[dict[str, Any]] = [
            {
                "workflow_id": wid,
                "name": self.name,
                "input": {
                    "args": [
                        {
                            "topic": self.topic,
                            "partition": row[1],
                            "offset": row[2],
                            "key": None if key is None else key.decode(),
                            "value": value.decode(),
                            "timestamp_ms": row[3],
                            "headers": [],
                        }
                    ],
                    "kwargs": {},
                },
                "source_group": self.group,
                "source_topic": self.topic,
                "source_partition": row[1],
                "source_offset": row[2],
                "ordering_key": None if key is None else key.decode(),
            }
            for wid, row, (key, value) in zip(ids, rows, raw, strict=True)
        ]
        with self.conn.transaction():
            cur = self.conn.execute(_INSERT_WORKFLOWS, [orjson.dumps(workflows).decode()])
            new = {r[0] for r in cur.fetchall()}
            keep = [i for i, wid in enumerate(ids) if wid in new]
            steps: list[dict[str, Any]] = []
            for i in keep:
                steps.append({"workflow_id": ids[i], "step": 1, "name": "a", "output": a[i]})
                steps.append({"workflow_id": ids[i], "step": 2, "name": "b", "output": rows[i][4]})
                steps.append({"workflow_id": ids[i], "step": 3, "name": "tx", "output": None})
            self.conn.execute(_INSERT_STEPS, [orjson.dumps(steps).decode()])
            self._effects([rows[i] for i in keep])

    def _effects(self, rows: list[Row]) -> None:
        if rows:
            self.conn.execute(self.insert_effects, [list(c) for c in zip(*rows, strict=True)])
