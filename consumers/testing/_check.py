"""The exactly-once check: whether every record of a topic ran exactly once for a group.

`ExactlyOnceCheck` reads only Kafka (the topic's offsets) and Postgres tables (the
`workflows` rows and, optionally, a table of the handlers' own effects, described
by `Effects`), never Onceflow's API, so a bug there cannot hide itself. What it
finds is a `Report`.

Nothing here imports pytest: failed checks raise AssertionError.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from ._consumer_service import ConsumerService
from ._kafka import watermarks

Position = tuple[int, int]  # (partition, offset)


@dataclass(frozen=True)
class Effects:
    """A table the handlers write their effects to: one row per record.

    Attributes:
        table: its name, optionally schema-qualified (`public.effects`).
        id_column: holds the ID of the workflow that wrote the row.
        key_column, seq_column, order_column: to check per-key order: rows
            taken by `order_column` (say a bigserial) must have each key's
            `seq` increasing.
    """

    table: str
    id_column: str = "workflow_id"
    key_column: str | None = None
    seq_column: str | None = None
    order_column: str | None = None


@dataclass
class Report:
    """What `ExactlyOnceCheck` found; `summary()` puts it in words."""

    group: str
    topic: str
    offsets: dict[int, tuple[int, int]]  # partition -> (low, high) in Kafka
    expected: int | None
    workflows: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    missing: list[Position] = field(default_factory=list)
    duplicates: dict[Position, int] = field(default_factory=dict)
    pending: list[Position] = field(default_factory=list)
    not_success: dict[Position, str] = field(default_factory=dict)
    unknown: list[Position] = field(default_factory=list)  # rows for offsets Kafka lacks
    effects_missing: list[str] = field(default_factory=list)
    effects_duplicated: dict[str, int] = field(default_factory=dict)
    order_violations: list[str] = field(default_factory=list)

    @property
    def records(self) -> int:
        return sum(high - low for low, high in self.offsets.values())

    @property
    def complete(self) -> bool:
        """Every record has a workflow, and none is PENDING."""
        return not self.missing and not self.pending

    def problems(self, allow_errors: Iterable[Position] = ()) -> list[str]:
        """Each broken rule, in words (`allow_errors`: positions expected in ERROR)."""
        allowed = set(allow_errors)
        found: list[tuple[str, Sequence[object]]] = [
            ("records without a workflow", self.missing),
            ("records with several workflows", _items(self.duplicates)),
            ("workflows still PENDING", self.pending),
            ("workflows not SUCCESS", _items(self.not_success, skip=allowed)),
            ("expected ERROR workflows that are not", sorted(allowed - set(self.not_success))),
            ("workflows for offsets not in the topic", self.unknown),
            ("successful workflows without their effect", self.effects_missing),
            ("effects written more than once", _items(self.effects_duplicated)),
            ("per-key order violations", self.order_violations),
        ]
        out = [f"{len(items)} {what}: {_sample(items)}" for what, items in found if items]
        if self.expected is not None and self.records != self.expected:
            out.insert(0, f"the topic holds {self.records} records, {self.expected} expected")
        return out

    def summary(self, allow_errors: Iterable[Position] = ()) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.statuses.items())) or "none"
        head = (
            f"group {self.group!r}, topic {self.topic!r}: {self.records} records, "
            f"{self.workflows} workflows ({counts})"
        )
        return "\n".join([head, *(f"  - {p}" for p in self.problems(allow_errors))])


def _items(mapping: Mapping[Any, Any], skip: set[Any] | None = None) -> list[str]:
    return [f"{k}: {v}" for k, v in sorted(mapping.items()) if not skip or k not in skip]


def _sample(items: Sequence[object], limit: int = 8) -> str:
    shown = ", ".join(str(x) for x in items[:limit])
    return shown + (f", … ({len(items) - limit} more)" if len(items) > limit else "")


class ExactlyOnceCheck:
    """Whether every record of `topic` ran exactly once for `group`.

    For every offset Kafka holds there must be exactly one workflow row of the
    group, in SUCCESS; with `effects`, every successful workflow must have
    exactly one effect row, in per-key order when the order columns are given.

    Args:
        database_url: the database the consumer service records workflows in.
        bootstrap: the Kafka bootstrap address.
        expected: how many records the test produced (checked against Kafka).
        schema: Onceflow's schema (default "onceflow").
    """

    def __init__(
        self,
        database_url: str,
        bootstrap: str,
        *,
        topic: str,
        group: str,
        expected: int | None = None,
        effects: Effects | None = None,
        schema: str = "onceflow",
    ) -> None:
        self.database_url, self.bootstrap = database_url, bootstrap
        self.topic, self.group, self.expected = topic, group, expected
        self.effects, self.schema = effects, schema

    def report(self) -> Report:
        """Look now (Kafka first: a record produced meanwhile counts as missing)."""
        report = Report(
            self.group, self.topic, watermarks(self.bootstrap, self.topic), self.expected
        )
        with psycopg.connect(self.database_url, autocommit=True, connect_timeout=10) as conn:
            self._read_workflows(conn, report)
            if self.effects is not None:
                self._read_effects(conn, self.effects, report)
        return report

    def wait_until_complete(
        self, timeout: float = 60.0, *, services: Sequence[ConsumerService] = ()
    ) -> Report:
        """Poll until every record (at least `expected`) has a final workflow.

        Raises:
            AssertionError: `timeout` passed, or one of `services` died, first;
                the message holds the report and the services' output.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                report: Report | None = self.report()
                state = report.summary() if report else ""
            except (psycopg.OperationalError, psycopg.errors.UndefinedTable) as exc:
                # Postgres restarting, or tables the service creates not there yet.
                report, state = None, f"({type(exc).__name__}: {exc})"
            if report and report.complete and report.records >= (self.expected or 0):
                return report
            for service in services:
                if not service.is_alive():
                    raise AssertionError(
                        f"{service} exited ({service.returncode}) before the work was done: "
                        f"{state}\n{service.tail()}"
                    )
            if time.monotonic() > deadline:
                tails = "\n".join(s.tail() for s in services)
                raise AssertionError(f"not complete after {timeout}s: {state}\n{tails}")
            time.sleep(0.25)

    def assert_exactly_once(self, *, allow_errors: Iterable[Position] = ()) -> Report:
        """Raise AssertionError with a readable summary unless every record ran
        exactly once (`allow_errors`: (partition, offset) expected in ERROR)."""
        allowed = list(allow_errors)
        report = self.report()
        if report.problems(allowed):
            raise AssertionError("exactly-once violated: " + report.summary(allowed))
        return report

    def _read_workflows(self, conn: psycopg.Connection[Any], report: Report) -> None:
        query = sql.SQL(
            "SELECT source_partition, source_offset, array_agg(status) FROM {}.workflows"
            " WHERE source_group = %s AND source_topic = %s GROUP BY 1, 2 ORDER BY 1, 2"
        ).format(sql.Identifier(self.schema))
        seen: set[Position] = set()
        for partition, offset, statuses in conn.execute(query, (self.group, self.topic)):
            pos = (partition, offset)
            seen.add(pos)
            report.workflows += len(statuses)
            report.statuses.update(statuses)
            low, high = report.offsets.get(partition, (0, 0))
            if not low <= offset < high:
                report.unknown.append(pos)
            if len(statuses) > 1:
                report.duplicates[pos] = len(statuses)
            if "PENDING" in statuses:
                report.pending.append(pos)
            elif set(statuses) != {"SUCCESS"}:
                report.not_success[pos] = ",".join(sorted(set(statuses)))
        for partition, (low, high) in sorted(report.offsets.items()):
            report.missing += [
                (partition, o) for o in range(low, high) if (partition, o) not in seen
            ]

    def _read_effects(self, conn: psycopg.Connection[Any], fx: Effects, report: Report) -> None:
        table, ident = sql.Identifier(*fx.table.split(".")), sql.Identifier(fx.id_column)
        ours = sql.SQL(
            "SELECT workflow_id FROM {}.workflows WHERE source_group = %(g)s AND source_topic = %(t)s"
        ).format(sql.Identifier(self.schema))
        params = {"g": self.group, "t": self.topic}
        twice = sql.SQL(
            "SELECT {id}, count(*) FROM {table} WHERE {id} IN ({ours})"
            " GROUP BY {id} HAVING count(*) > 1"
        ).format(id=ident, table=table, ours=ours)
        report.effects_duplicated = {str(k): n for k, n in conn.execute(twice, params)}
        missing = sql.SQL(
            "{ours} AND status = 'SUCCESS' AND NOT EXISTS"
            " (SELECT FROM {table} WHERE {table}.{id} = workflows.workflow_id)"
            " ORDER BY source_partition, source_offset"
        ).format(id=ident, table=table, ours=ours)
        report.effects_missing = [str(r[0]) for r in conn.execute(missing, params)]
        if fx.key_column and fx.seq_column and fx.order_column:
            ordered = sql.SQL(
                "SELECT {key}, {seq} FROM {table} WHERE {id} IN ({ours}) ORDER BY {order}"
            ).format(
                key=sql.Identifier(fx.key_column),
                seq=sql.Identifier(fx.seq_column),
                order=sql.Identifier(fx.order_column),
                id=ident,
                table=table,
                ours=ours,
            )
            last: dict[Any, Any] = {}
            for key, seq in conn.execute(ordered, params):
                if key in last and seq <= last[key]:
                    report.order_violations.append(f"key {key!r}: {seq} after {last[key]}")
                else:
                    last[key] = seq
