"""Runs of one single-row INSERT, written by inline transaction steps, sent as
multi-row INSERTs (engine/_multirow.py): the same rows in the same order with
the same outcome as one by one, and never to a table that would see one
statement where the steps wrote many (statement-level triggers, transition
tables, rules)."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import engine_flows
import psycopg
import pytest
from psycopg import sql

import engine
from engine import Disposition, _multirow
from engine._deferred import DeferringConnection
from engine._inline import CHUNK
from engine._multirow import MAX_PARAMS, Tables
from engine._sql import Queries

DDL = """
CREATE TABLE public.rows (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_id text NOT NULL,
    n           int NOT NULL,
    key         text UNIQUE
);
-- How often each trigger or rule below fired (or, for `seen`, how many rows
-- its transition table showed, summed over its firings).
CREATE TABLE public.fired (name text PRIMARY KEY, count int NOT NULL);
INSERT INTO public.fired VALUES ('statement', 0), ('rule', 0), ('row', 0), ('seen', 0),
    ('after', 0);
CREATE FUNCTION public.fire() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE public.fired SET count = count + 1 WHERE name = TG_ARGV[0];
    RETURN NEW;
END $$;
CREATE FUNCTION public.see() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE public.fired SET count = count + (SELECT count(*) FROM added) WHERE name = 'seen';
    RETURN NULL;
END $$;
-- Sums, over its firings, the rows the table holds when it fires.
CREATE FUNCTION public.look() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE public.fired SET count = count + (SELECT count(*) FROM public.rows)
    WHERE name = 'after';
    RETURN NULL;
END $$;
"""
INSERT = "INSERT INTO public.rows (workflow_id, n, key) VALUES (%s, %s, %s)"
# What makes a table see statements, or (`row`) only rows.
COUNTING = {
    "statement": "CREATE TRIGGER counting AFTER INSERT ON public.rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION public.fire('statement')",
    "rule": "CREATE RULE counting AS ON INSERT TO public.rows"
    " DO ALSO UPDATE public.fired SET count = count + 1 WHERE name = 'rule'",
    "seen": "CREATE TRIGGER counting AFTER INSERT ON public.rows REFERENCING NEW TABLE AS added"
    " FOR EACH ROW EXECUTE FUNCTION public.see()",
    "row": "CREATE TRIGGER counting BEFORE INSERT ON public.rows"
    " FOR EACH ROW EXECUTE FUNCTION public.fire('row')",
    "after": "CREATE TRIGGER counting AFTER INSERT ON public.rows"
    " FOR EACH ROW EXECUTE FUNCTION public.look()",
}


@pytest.fixture
def rows_url(database_url: str) -> str:
    """This test's database, with a `rows` table ordered by `seq` (its insertion order)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(DDL)
    return database_url


@dataclass
class Sent:
    """What DeferringConnections sent in this test."""

    # Each run of one statement: (query, rows, whether it went multi-row).
    runs: list[tuple[str, int, bool]] = field(default_factory=list)
    # Each multi-row statement (on a RawCursor): (query, parameters).
    statements: list[tuple[str, int]] = field(default_factory=list)

    def sizes(self, table: str = "public.rows") -> list[int]:
        """Rows of each multi-row statement into `table`, in order."""
        head = f"INSERT INTO {table} "
        return [q.count("), (") + 1 for q, _ in self.statements if q.startswith(head)]


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    """Spies on DeferringConnection's runs and on RawCursor (which only the
    multi-row path uses)."""
    spied = Sent()
    send_run = DeferringConnection._send_run
    execute = psycopg.RawCursor.execute

    def run_spy(self: DeferringConnection, query: Any, run: list[Any]) -> None:
        before = self.multirow
        send_run(self, query, run)
        if run:
            spied.runs.append((str(query), len(run), self.multirow > before))

    def execute_spy(self: psycopg.RawCursor[Any], query: Any, params: Any = None, **kw: Any) -> Any:
        spied.statements.append((str(query), len(params or ())))
        return execute(self, query, params, **kw)

    monkeypatch.setattr(DeferringConnection, "_send_run", run_spy)
    monkeypatch.setattr(psycopg.RawCursor, "execute", execute_spy)
    return spied


def _rows(url: str) -> list[tuple[Any, ...]]:
    """(workflow_id, n, key) of every row, in insertion order."""
    return engine_flows.query(url, "SELECT workflow_id, n, key FROM public.rows ORDER BY seq")


def _fired(url: str, name: str) -> int:
    ((count,),) = engine_flows.query(url, "SELECT count FROM public.fired WHERE name = %s", name)
    return int(count)


def _fired_in(conn: psycopg.Connection[Any], name: str) -> int:
    """Like _fired, inside `conn`'s open transaction."""
    row = conn.execute("SELECT count FROM public.fired WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return int(row[0])


def _statuses(url: str) -> dict[str, str]:
    rows = engine_flows.query(url, "SELECT workflow_id, status FROM onceflow.workflows")
    return {r[0]: r[1] for r in rows}


def _binary(rows: int) -> list[int]:
    """`rows` as powers of two, largest first: the pieces of a narrow run."""
    return [1 << b for b in reversed(range(rows.bit_length())) if rows >> b & 1]


def _inserting(eng: engine.Engine) -> None:
    """Register `inserting(n)`: one transaction step inserting (its ID, n, kn)."""

    @eng.transaction(name="insert")
    def insert(conn: psycopg.Connection[Any], n: int) -> int:
        conn.execute(INSERT, (engine.current_workflow_id(), n, f"k{n:03d}"))
        return n

    @eng.workflow(name="inserting")
    def inserting(n: int) -> int:
        return insert(n)


# -- through the engine: same rows, same order -----------------------------------


@pytest.mark.parametrize("count", [20, 100])
def test_an_inline_batch_inserts_its_rows_multi_row_in_call_order(
    engine_factory: Any, rows_url: str, sent: Sent, count: int
) -> None:
    eng: engine.Engine = engine_factory()
    _inserting(eng)
    eng.launch()

    recorded = engine_flows.record_inline(eng, engine_flows.numbered_batch(count, "inserting"))

    assert [r.disposition for r in recorded] == [Disposition.COMPLETED] * count
    assert _rows(rows_url) == [(f"wf-{i:03d}", i, f"k{i:03d}") for i in range(count)]
    # One run per chunk of the batch (its statements are sent chunk by
    # chunk), each multi-row, in pieces of powers of two.
    runs = [min(CHUNK, count - start) for start in range(0, count, CHUNK)]
    assert [r for r in sent.runs if r[0] == INSERT] == [(INSERT, n, True) for n in runs]
    assert sent.sizes() == [size for n in runs for size in _binary(n)]
    assert all(
        params == 3 * size for (_, params), size in zip(sent.statements, sent.sizes(), strict=True)
    )
    assert _statuses(rows_url) == {f"wf-{i:03d}": "SUCCESS" for i in range(count)}


def test_wide_rows_go_in_pieces_within_the_parameter_limit(
    engine_factory: Any, rows_url: str, sent: Sent
) -> None:
    """520 parameters a row: 128 rows would be 66,560 parameters, more than
    Postgres takes. Two workflows insert 65 rows each: one run of 130."""
    columns = [f"c{k}" for k in range(518)]
    with psycopg.connect(rows_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE public.wide (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " workflow_id text NOT NULL, j int NOT NULL, "
            + ", ".join(f"{c} int NOT NULL" for c in columns)
            + ")"
        )
    wide = (
        f"INSERT INTO public.wide (workflow_id, j, {', '.join(columns)})"
        f" VALUES ({', '.join(['%s'] * (len(columns) + 2))})"
    )
    eng: engine.Engine = engine_factory()

    @eng.transaction(name="insert_wide")
    def insert_wide(conn: psycopg.Connection[Any]) -> None:
        wid = engine.current_workflow_id()
        for j in range(65):
            conn.execute(wide, (wid, j, *(1000 * j + k for k in range(len(columns)))))

    @eng.workflow(name="widening")
    def widening(n: int) -> None:
        insert_wide()

    eng.launch()
    recorded = engine_flows.record_inline(eng, engine_flows.numbered_batch(2, "widening"))

    assert [r.disposition for r in recorded] == [Disposition.COMPLETED] * 2
    assert [r for r in sent.runs if r[0] == wide] == [(wide, 130, True)]
    assert sent.sizes("public.wide") == [64, 64, 2]
    assert [p for q, p in sent.statements] == [64 * 520, 64 * 520, 2 * 520]
    assert all(p <= MAX_PARAMS for _, p in sent.statements)
    got = engine_flows.query(
        rows_url, "SELECT workflow_id, j, c0, c517, c0 + c517 FROM public.wide ORDER BY seq"
    )
    assert got == [
        (f"wf-{i:03d}", j, 1000 * j, 1000 * j + 517, 2000 * j + 517)
        for i in range(2)
        for j in range(65)
    ]


@pytest.mark.parametrize("target", ["ON CONFLICT (key) DO NOTHING", "ON CONFLICT DO NOTHING"])
def test_named_parameters_and_on_conflict_do_nothing_keep_the_first_row_of_a_key(
    engine_factory: Any, rows_url: str, sent: Sent, target: str
) -> None:
    """Workflows 2i and 2i+1 insert key ki, and k4 was there before: as one by
    one, the first insert of a key wins and later ones do nothing."""
    with psycopg.connect(rows_url, autocommit=True) as conn:
        conn.execute(INSERT, ("before", -1, "k4"))
    query = (
        "INSERT INTO public.rows (workflow_id, n, key)"
        f" VALUES (%(workflow_id)s, %(n)s::int, %(key)s) {target}"
    )
    eng: engine.Engine = engine_factory()

    @eng.transaction(name="insert")
    def insert(conn: psycopg.Connection[Any], n: int) -> None:
        params = {"key": f"k{n // 2}", "n": n, "workflow_id": engine.current_workflow_id()}
        conn.execute(query, params)

    @eng.workflow(name="inserting")
    def inserting(n: int) -> None:
        insert(n)

    eng.launch()
    recorded = engine_flows.record_inline(eng, engine_flows.numbered_batch(12, "inserting"))

    assert [r.disposition for r in recorded] == [Disposition.COMPLETED] * 12
    assert _rows(rows_url) == [("before", -1, "k4")] + [
        (f"wf-{i:03d}", i, f"k{i // 2}") for i in (0, 2, 4, 6, 10)
    ]
    assert [r for r in sent.runs if r[0] == query] == [(query, 12, True)]
    assert sent.sizes() == [8, 4]
    assert _statuses(rows_url) == {f"wf-{i:03d}": "SUCCESS" for i in range(12)}


# -- tables that would tell the difference -----------------------------------------


@pytest.mark.parametrize("kind", ["statement", "rule", "seen"])
def test_a_table_that_sees_statements_gets_one_statement_per_row(
    engine_factory: Any, rows_url: str, sent: Sent, kind: str
) -> None:
    """A statement-level trigger, a rule, or a trigger's transition table
    would see one statement where the steps wrote ten: they fire, or show
    rows, ten times (one each), as without batching."""
    with psycopg.connect(rows_url, autocommit=True) as conn:
        conn.execute(COUNTING[kind])
    eng: engine.Engine = engine_factory()
    _inserting(eng)
    eng.launch()

    recorded = engine_flows.record_inline(eng, engine_flows.numbered_batch(10, "inserting"))

    assert [r.disposition for r in recorded] == [Disposition.COMPLETED] * 10
    assert _fired(rows_url, kind) == 10
    assert [r for r in sent.runs if r[0] == INSERT] == [(INSERT, 10, False)]
    assert sent.sizes() == []
    assert _rows(rows_url) == [(f"wf-{i:03d}", i, f"k{i:03d}") for i in range(10)]


def test_an_after_row_trigger_sees_the_rows_inserted_so_far_as_one_by_one(
    engine_factory: Any, rows_url: str, sent: Sent
) -> None:
    """AFTER ROW triggers fire at the end of their statement: after one
    multi-row statement each would see all ten rows (100 in all). One by
    one, the k-th sees k rows: 1 + 2 + ... + 10 = 55."""
    with psycopg.connect(rows_url, autocommit=True) as conn:
        conn.execute(COUNTING["after"])
    eng: engine.Engine = engine_factory()
    _inserting(eng)
    eng.launch()

    recorded = engine_flows.record_inline(eng, engine_flows.numbered_batch(10, "inserting"))

    assert [r.disposition for r in recorded] == [Disposition.COMPLETED] * 10
    assert _fired(rows_url, "after") == 55
    assert [r for r in sent.runs if r[0] == INSERT] == [(INSERT, 10, False)]
    assert sent.sizes() == []


def test_a_row_level_trigger_does_not_stop_multi_row_and_fires_for_every_row(
    engine_factory: Any, rows_url: str, sent: Sent
) -> None:
    with psycopg.connect(rows_url, autocommit=True) as conn:
        conn.execute(COUNTING["row"])
    eng: engine.Engine = engine_factory()
    _inserting(eng)
    eng.launch()

    recorded = engine_flows.record_inline(eng, engine_flows.numbered_batch(10, "inserting"))

    assert [r.disposition for r in recorded] == [Disposition.COMPLETED] * 10
    assert _fired(rows_url, "row") == 10
    assert [r for r in sent.runs if r[0] == INSERT] == [(INSERT, 10, True)]
    assert sent.sizes() == [8, 2]
    assert _rows(rows_url) == [(f"wf-{i:03d}", i, f"k{i:03d}") for i in range(10)]


# -- a failing row -------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["not_null", "unique"])
def test_a_failing_row_sends_the_batch_the_ordinary_way_with_the_same_outcome(
    engine_factory: Any, rows_url: str, sent: Sent, bad: str
) -> None:
    """wf-003's row breaks a constraint, inside a multi-row statement with
    the others' rows. The inline attempt rolls back entirely; the ordinary
    runs then fail wf-003 alone and insert every other row once."""
    with psycopg.connect(rows_url, autocommit=True) as conn:
        conn.execute(INSERT, ("before", -1, "taken"))
    eng: engine.Engine = engine_factory()

    @eng.transaction(name="insert")
    def insert(conn: psycopg.Connection[Any], n: int) -> int:
        wid = engine.current_workflow_id()
        if n != 3:
            conn.execute(INSERT, (wid, n, f"k{n:03d}"))
        elif bad == "not_null":
            conn.execute(INSERT, (wid, None, f"k{n:03d}"))
        else:
            conn.execute(INSERT, (wid, n, "taken"))
        return n

    @eng.workflow(name="inserting")
    def inserting(n: int) -> int:
        return insert(n)

    eng.launch()
    recorded = engine_flows.record_inline(eng, engine_flows.numbered_batch(6, "inserting"))

    # The rows went multi-row (4 + 2: the first piece fails), and nothing
    # of the inline attempt is left.
    assert sent.sizes()[0] == 4
    assert [r.disposition for r in recorded] == [Disposition.NEW] * 6
    assert _rows(rows_url) == [("before", -1, "taken")]
    assert set(_statuses(rows_url).values()) == {"PENDING"}

    handles = {r.workflow_id: eng.run(r.claimed, fresh=r.fresh) for r in recorded if r.claimed}
    assert sorted(handles) == [f"wf-{i:03d}" for i in range(6)]
    for wid, handle in handles.items():
        if wid == "wf-003":
            with pytest.raises(engine.WorkflowFailedError) as caught:
                handle.result(timeout=30)
            expected = "NotNullViolation" if bad == "not_null" else "UniqueViolation"
            assert caught.value.error["type"] == f"psycopg.errors.{expected}"
        else:
            handle.result(timeout=30)

    assert sorted(_rows(rows_url)) == sorted(
        [("before", -1, "taken")] + [(f"wf-{i:03d}", i, f"k{i:03d}") for i in (0, 1, 2, 4, 5)]
    )
    assert _statuses(rows_url) == {
        f"wf-{i:03d}": "ERROR" if i == 3 else "SUCCESS" for i in range(6)
    }


# -- Tables, and DeferringConnection with Tables on a plain connection ---------------

TABLES_QUERY = Queries("onceflow")["table_sees_statements"]


@pytest.fixture
def conn(rows_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(rows_url) as conn:
        yield conn


def _insert_four(deferring: DeferringConnection, first: int) -> None:
    """Rows `first`.. `first + 3`: one multi-row statement, if any, then commit."""
    for n in range(first, first + 4):
        deferring.execute(INSERT, ("w", n, f"k{n:03d}"))
    deferring.flush()
    deferring._conn.commit()  # CREATE TRIGGER elsewhere waits for this transaction


def test_a_trigger_created_later_is_seen_once_the_recheck_period_is_over(
    conn: psycopg.Connection[Any], rows_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(_multirow, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    tables = Tables(TABLES_QUERY)  # recheck: 30 s
    deferring = DeferringConnection(conn, tables)
    _insert_four(deferring, 0)
    assert deferring.multirow == 1
    with psycopg.connect(rows_url, autocommit=True) as other:
        other.execute(COUNTING["statement"])

    clock[0] += tables.recheck - 1
    _insert_four(deferring, 4)
    # Still remembered as allowed: one statement, the trigger fired once.
    assert deferring.multirow == 2
    assert _fired(rows_url, "statement") == 1

    clock[0] += 2
    _insert_four(deferring, 8)
    assert deferring.multirow == 2
    assert _fired(rows_url, "statement") == 1 + 4
    assert [n for _, n, _ in _rows(rows_url)] == list(range(12))


def test_with_no_recheck_period_every_run_asks_the_catalog(
    conn: psycopg.Connection[Any], rows_url: str
) -> None:
    deferring = DeferringConnection(conn, Tables(TABLES_QUERY, recheck=0))
    _insert_four(deferring, 0)
    with psycopg.connect(rows_url, autocommit=True) as other:
        other.execute(COUNTING["rule"])

    _insert_four(deferring, 4)

    assert deferring.multirow == 1
    assert _fired(rows_url, "rule") == 4
    assert [n for _, n, _ in _rows(rows_url)] == list(range(8))


def test_composed_and_bytes_queries_go_multi_row(conn: psycopg.Connection[Any], sent: Sent) -> None:
    deferring = DeferringConnection(conn, Tables(TABLES_QUERY))
    composed = sql.SQL("INSERT INTO {} (workflow_id, n, key) VALUES ({})").format(
        sql.Identifier("public", "rows"), sql.SQL(", ").join([sql.Placeholder()] * 3)
    )
    for n in range(3):
        deferring.execute(composed, ("composed", n, f"c{n}"))
    for n in range(3, 5):
        deferring.execute(INSERT.encode(), ("bytes", n, f"b{n}"))
    deferring.flush()

    assert deferring.multirow == 2
    assert [q for q, _ in sent.statements] == [
        'INSERT INTO "public"."rows" (workflow_id, n, key) VALUES ($1, $2, $3), ($4, $5, $6)',
        'INSERT INTO "public"."rows" (workflow_id, n, key) VALUES ($1, $2, $3)',
        "INSERT INTO public.rows (workflow_id, n, key) VALUES ($1, $2, $3), ($4, $5, $6)",
    ]
    got = conn.execute("SELECT workflow_id, n FROM public.rows ORDER BY seq").fetchall()
    assert got == [("composed", 0), ("composed", 1), ("composed", 2), ("bytes", 3), ("bytes", 4)]


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 40_000


NUMBERS = (
    "INSERT INTO public.numbers (small, n, big, exact, label, flag) VALUES (%s, %s, %s, %s, %s, %s)"
)


def _numbers(conn: psycopg.Connection[Any], table: str) -> None:
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (seq int GENERATED ALWAYS AS IDENTITY, small smallint, n int,"
            " big bigint, exact numeric, label text, flag boolean)"
        ).format(sql.Identifier("public", table))
    )


def test_ints_go_in_as_their_column_s_type_as_they_do_one_by_one(
    conn: psycopg.Connection[Any],
) -> None:
    _numbers(conn, "numbers")
    _numbers(conn, "one_by_one")
    rows = [
        (1, 40_000, 3_000_000_000, 10**30, 7, True),
        (-2, Level.HIGH, -(2**63), -5, Level.LOW, False),
        (None, Level.LOW, 0, 2**63, None, None),
    ]
    for row in rows:
        conn.execute(NUMBERS.replace("numbers", "one_by_one"), row)
    deferring = DeferringConnection(conn, Tables(TABLES_QUERY))
    for row in rows:
        deferring.execute(NUMBERS, row)
    deferring.flush()

    assert deferring.multirow == 1
    columns = "small, n, big, exact, label, flag"
    got = conn.execute(f"SELECT {columns} FROM public.numbers ORDER BY seq").fetchall()
    expected = conn.execute(f"SELECT {columns} FROM public.one_by_one ORDER BY seq").fetchall()
    assert got == expected
    assert got[0] == (1, 40_000, 3_000_000_000, 10**30, "7", True)
    assert got[1][4] == "1"  # an IntEnum's value, not its name


def test_a_statement_stays_prepared_whatever_the_size_of_its_ints(
    conn: psycopg.Connection[Any],
) -> None:
    """psycopg prepares a statement it has run often enough with the same
    parameter types; ints typed by size (int2, int4, int8) made those change
    with the values, and the statement was parsed and planned on every run."""
    _numbers(conn, "numbers")
    deferring = DeferringConnection(conn, Tables(TABLES_QUERY))
    sizes = [7, 40_000, 3_000_000_000]  # int2, int4 and int8 by psycopg's own dumper
    for run in range(4 * len(sizes)):
        n = sizes[run % len(sizes)]
        for _ in range(4):
            deferring.execute(NUMBERS, (1, 2, n, n, n, True))
        deferring.flush()

    assert deferring.multirow == 4 * len(sizes)
    prepared = conn.execute(
        "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE 'INSERT INTO public.numbers%%'"
    ).fetchone()
    assert prepared == (1,)


# -- Known bugs (reported, not fixed here) -------------------------------------------


def test_a_view_over_a_table_that_sees_statements_gets_one_statement_per_row(
    conn: psycopg.Connection[Any], rows_url: str
) -> None:
    with psycopg.connect(rows_url, autocommit=True) as other:
        other.execute(COUNTING["statement"])
        other.execute("CREATE VIEW public.rows_view AS SELECT workflow_id, n, key FROM public.rows")
    deferring = DeferringConnection(conn, Tables(TABLES_QUERY))
    for n in range(4):
        deferring.execute(
            "INSERT INTO public.rows_view (workflow_id, n, key) VALUES (%s, %s, %s)",
            ("w", n, f"k{n}"),
        )
    deferring.flush()

    assert _fired_in(conn, "statement") == 4


def test_a_row_referring_to_a_later_row_fails_as_it_does_one_by_one(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute("CREATE TABLE public.tree (id int PRIMARY KEY, parent int REFERENCES public.tree)")
    deferring = DeferringConnection(conn, Tables(TABLES_QUERY))
    deferring.execute("INSERT INTO public.tree (id, parent) VALUES (%s, %s)", (1, 2))
    deferring.execute("INSERT INTO public.tree (id, parent) VALUES (%s, %s)", (2, None))

    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        deferring.flush()


def test_a_binary_placeholder_means_what_it_means_one_by_one(
    conn: psycopg.Connection[Any],
) -> None:
    query = "INSERT INTO public.rows (workflow_id, n) VALUES (%s, %b)"
    with pytest.raises(psycopg.errors.DatatypeMismatch), conn.transaction():
        conn.execute(query, ("w", "5"))
    deferring = DeferringConnection(conn, Tables(TABLES_QUERY))
    deferring.execute(query, ("w", "5"))
    deferring.execute(query, ("w", "6"))

    with pytest.raises(psycopg.errors.DatatypeMismatch):
        deferring.flush()
