"""The chaos run's independent checker, and the tables it reads.

`create_database` makes a run's database: Onceflow's migrations, then the tables
the consumer service (`bench.chaos_app`) writes to and a trigger logging every
completion. `check` judges the run from the topic (read back by `read_topic`)
and those tables alone, never Onceflow's API, and returns its `Findings`;
`drained` says when the backlog is worked off.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, TopicPartition
from psycopg import sql
from psycopg.conninfo import make_conninfo

import engine
from consumers.testing import watermarks

Position = tuple[int, int]  # (partition, offset)


@dataclass
class Findings:
    """What the checker found, from the topic and Postgres tables alone."""

    produced: int = 0  # records the topic holds
    success: int = 0  # records with a SUCCESS workflow
    missing: dict[Position, str] = field(default_factory=dict)  # record -> why
    dup_completions: int = 0
    dup_effects: int = 0
    order_violations: int = 0
    plain_reruns: int = 0
    moved: int = 0  # workflows whose plain steps ran in more than one executor
    notes: list[str] = field(default_factory=list)  # other violations, in words

    def problems(self) -> list[str]:
        out = list(self.notes)
        if self.missing:
            why = Counter(self.missing.values())
            sample = ", ".join(f"{p}-{o}" for p, o in sorted(self.missing)[:8])
            out.append(f"{len(self.missing)} records missing ({dict(why)}), e.g. {sample}")
        for count, what in (
            (self.dup_completions, "duplicate completions"),
            (self.dup_effects, "duplicate transaction effects"),
            (self.order_violations, "per-key order violations"),
        ):
            if count:
                out.append(f"{count} {what}")
        return out


# ------------------------------------------------------------------ the tables

_TABLES = """
-- id: the order each key's effects were written in (one at a time per key);
-- prev_seq: the key's highest seq already committed when this one was written.
CREATE TABLE public.chaos_effects (
    id bigserial PRIMARY KEY, workflow_id text NOT NULL, event_id bigint NOT NULL,
    key text NOT NULL, seq integer NOT NULL, prev_seq integer, partition integer NOT NULL,
    "offset" bigint NOT NULL, executor text NOT NULL,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE INDEX ON public.chaos_effects (key, seq);
CREATE TABLE public.chaos_step_runs (
    id bigserial PRIMARY KEY, run_key text NOT NULL, step text NOT NULL,
    workflow_id text NOT NULL, executor text NOT NULL,
    ran_at timestamptz NOT NULL DEFAULT clock_timestamp());
-- Every write that leaves a workflow SUCCESS, logged by Postgres itself, in the
-- same transaction: a workflow completed twice shows as two rows.
CREATE TABLE public.chaos_completions (
    id bigserial PRIMARY KEY, workflow_id text NOT NULL, from_status text,
    epoch bigint NOT NULL, owner text, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION public.chaos_log_completion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.chaos_completions (workflow_id, from_status, epoch, owner)
    VALUES (NEW.workflow_id, CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END, NEW.epoch, NEW.owner);
    RETURN NULL;
END $$;
CREATE TRIGGER chaos_completion AFTER INSERT OR UPDATE OF status ON onceflow.workflows
    FOR EACH ROW WHEN (NEW.status = 'SUCCESS') EXECUTE FUNCTION public.chaos_log_completion();
"""


def create_database(server_url: str, name: str) -> str:
    """Create and migrate database `name` with the chaos tables; return its URL."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(server_url, dbname=name)
    engine.migrate_database(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_TABLES)
    return url


# ------------------------------------------------------------------ the checker


def read_topic(bootstrap: str, topic: str) -> dict[Position, dict[str, Any]]:
    """Every record of `topic`, by position: its decoded value (`id`, `key`, `seq`)."""
    ends = watermarks(bootstrap, topic)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"chaos-check-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    out: dict[Position, dict[str, Any]] = {}
    try:
        todo = {p for p, (low, high) in ends.items() if high > low}
        consumer.assign([TopicPartition(topic, p, ends[p][0]) for p in todo])
        deadline = time.monotonic() + 120
        while todo:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} back within 120s")
            for msg in consumer.consume(10_000, timeout=1.0):
                err = msg.error()
                partition, offset = msg.partition(), msg.offset()
                assert partition is not None and offset is not None
                if err is not None and err.code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(f"reading {topic} back: {err}")
                if err is None:
                    out[(partition, offset)] = json.loads(msg.value() or b"null")
                if offset + (0 if err else 1) >= ends[partition][1]:
                    todo.discard(partition)
    finally:
        consumer.close()
    return out


def check(database_url: str, bootstrap: str, topic: str, group: str) -> Findings:
    """Judge the run from the topic and Postgres tables, not Onceflow's API.

    Every record the topic holds must have exactly one workflow, SUCCESS,
    completed once (per the completion trigger), with exactly one effect row
    carrying the record's own event ID, key and seq; each key's effects must
    have committed in increasing seq. Plain-step re-runs are only counted.
    """
    records = read_topic(bootstrap, topic)
    found = Findings(produced=len(records))
    ids = Counter(value["id"] for value in records.values())
    if set(ids) != set(range(len(records))):
        # The producer's side (it is idempotent): would also look like disorder below.
        twice = sorted(i for i, n in ids.items() if n > 1)[:8]
        found.notes.append(
            f"the topic's event IDs are not 0..{len(records) - 1} once each: {twice}"
        )
    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
        workflows = conn.execute(
            "SELECT source_partition, source_offset, workflow_id, status FROM onceflow.workflows"
            " WHERE source_group = %s AND source_topic = %s",
            (group, topic),
        ).fetchall()
        completions: dict[str, int] = dict(
            conn.execute(
                "SELECT workflow_id, count(*) FROM public.chaos_completions GROUP BY workflow_id"
            ).fetchall()
        )
        effects = conn.execute(
            "SELECT workflow_id, event_id, key, seq, prev_seq FROM public.chaos_effects ORDER BY id"
        ).fetchall()
        reruns = conn.execute(
            "SELECT count(*) - count(DISTINCT run_key) FROM public.chaos_step_runs"
        ).fetchone()
        # Evidence that faults bit: workflows whose steps ran in several executors.
        moved = conn.execute(
            "SELECT count(*) FROM (SELECT workflow_id FROM public.chaos_step_runs"
            " GROUP BY workflow_id HAVING count(DISTINCT executor) > 1) AS m"
        ).fetchone()
    found.plain_reruns = int(reruns[0]) if reruns else 0
    found.moved = int(moved[0]) if moved else 0

    by_pos: defaultdict[Position, list[tuple[str, str]]] = defaultdict(list)
    for partition, offset, wid, status in workflows:
        by_pos[(partition, offset)].append((wid, status))
    ours = {wid for rows in by_pos.values() for wid, _ in rows}
    strays = sorted(set(by_pos) - set(records))
    if strays:
        found.notes.append(f"{len(strays)} workflows for offsets the topic lacks: {strays[:8]}")

    effects_of: defaultdict[str, list[tuple[int, str, int]]] = defaultdict(list)
    for wid, event_id, key, seq, _prev in effects:
        effects_of[wid].append((event_id, key, seq))
    found.dup_effects = sum(len(rows) - 1 for rows in effects_of.values())
    unowned = set(effects_of) - ours
    if unowned:
        found.notes.append(f"{len(unowned)} effects of unknown workflows: {sorted(unowned)[:4]}")

    mismatched: list[str] = []
    unlogged: list[str] = []
    for pos, value in records.items():
        rows = by_pos.get(pos, [])
        succeeded = [wid for wid, status in rows if status == "SUCCESS"]
        # One record, one completion: a second workflow, or a second write
        # into SUCCESS (the trigger's log), is a duplicate completion.
        found.dup_completions += max(0, len(succeeded) - 1)
        found.dup_completions += sum(max(0, completions.get(wid, 0) - 1) for wid in succeeded)
        if not succeeded:
            statuses = sorted({status for _, status in rows})
            found.missing[pos] = "/".join(statuses) if statuses else "no workflow"
            continue
        found.success += 1
        wid = succeeded[0]
        if completions.get(wid, 0) == 0:
            unlogged.append(wid)
        written = effects_of.get(wid)
        if not written:
            found.missing[pos] = "no effect"
        elif written[0] != (value["id"], value["key"], value["seq"]):
            mismatched.append(f"{pos}: record {value}, effect {written[0]}")
    if unlogged:
        found.notes.append(f"{len(unlogged)} SUCCESS workflows with no logged completion")
    if mismatched:
        found.notes.append(f"{len(mismatched)} effects unlike their record: {mismatched[:4]}")

    # Per-key order. Records of a key share a partition, in seq order 0, 1, 2...
    # Each effect (the first of its workflow) must come after the key's
    # earlier ones in write order, and must have seen exactly its predecessor
    # (seq - 1) committed: a record run before its predecessor had finished
    # is caught even when the bigserial happens to come out in order.
    last: dict[str, int] = {}
    seen: set[str] = set()
    for wid, _event_id, key, seq, prev in effects:
        if wid in seen:
            continue  # a duplicate: counted above, not again as disorder
        seen.add(wid)
        if (key in last and seq <= last[key]) or prev != (seq - 1 if seq else None):
            found.order_violations += 1
        last[key] = max(seq, last.get(key, seq))
    return found


def drained(database_url: str, bootstrap: str, topic: str, group: str) -> bool:
    """Whether every record the topic holds has a workflow, and none is PENDING."""
    total = sum(high - low for low, high in watermarks(bootstrap, topic).values())
    with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT (source_partition, source_offset)),"
            " count(*) FILTER (WHERE status = 'PENDING') FROM onceflow.workflows"
            " WHERE source_group = %s AND source_topic = %s",
            (group, topic),
        ).fetchone()
    return row is not None and row[0] >= total and row[1] == 0
