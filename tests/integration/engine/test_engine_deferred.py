"""Deferred statements of inline transaction steps (engine/_deferred.py): an
inline step's `conn.execute(sql, params)` is queued and sent later, runs of
the same statement together (one `executemany`, or multi-row INSERTs: see
test_engine_multirow.py), in call order, before anything else touches the
connection."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import engine_flows
import psycopg
import pytest
from psycopg import sql

import engine
from engine import Disposition
from engine._deferred import DeferredCursor, DeferringConnection

EVENTS_DDL = """
CREATE TABLE IF NOT EXISTS public.events (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_id text NOT NULL,
    key         text NOT NULL UNIQUE
)
"""
INSERT = "INSERT INTO public.events (workflow_id, key) VALUES (%s, %s)"
# The same insert, spelled differently: a statement of its own.
INSERT_OTHER = "INSERT INTO public.events (key, workflow_id) VALUES (%s, %s)"
INSERT_RETURNING = "INSERT INTO public.events (workflow_id, key) VALUES (%s, %s) RETURNING seq, key"
COUNT = "SELECT count(*) FROM public.events WHERE workflow_id <> %s"

Calls = list[tuple[str, int]]


@pytest.fixture
def events_url(database_url: str) -> str:
    """This test's database, with an `events` table ordered by `seq` (its insertion order)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(EVENTS_DDL)
    return database_url


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> Calls:
    """Every run of one statement a DeferringConnection sent in this test, as
    (query, number of rows), however it went out (executemany or multi-row)."""
    calls: Calls = []
    real = DeferringConnection._send_run

    def spy(self: DeferringConnection, query: Any, run: list[Any]) -> None:
        if run:
            calls.append((str(query), len(run)))
        real(self, query, run)

    monkeypatch.setattr(DeferringConnection, "_send_run", spy)
    return calls


def _events(url: str) -> list[tuple[str, str]]:
    """(workflow_id, key) of every event, in insertion order."""
    rows = engine_flows.query(url, "SELECT workflow_id, key FROM public.events ORDER BY seq")
    return [(r[0], r[1]) for r in rows]


def _outputs(url: str) -> dict[str, tuple[str, Any]]:
    rows = engine_flows.query(url, "SELECT workflow_id, status, output FROM onceflow.workflows")
    return {r[0]: (r[1], r[2]) for r in rows}


# -- through the engine ---------------------------------------------------------


def test_inserts_of_many_inline_workflows_land_in_call_order_as_one_run(
    engine_factory: Any, events_url: str, runs: Calls
) -> None:
    eng: engine.Engine = engine_factory()

    @eng.transaction(name="insert")
    def insert(conn: psycopg.Connection[Any], n: int) -> bool:
        cur = conn.execute(INSERT, (engine.current_workflow_id(), f"k{n:02d}"))
        return isinstance(cur, DeferredCursor)

    @eng.workflow(name="inserting")
    def inserting(n: int) -> bool:
        return insert(n)

    eng.launch()
    recorded = engine_flows.record_inline(
        eng, engine_flows.numbered_batch(20, "inserting", digits=2)
    )

    assert [r.disposition for r in recorded] == [Disposition.COMPLETED] * 20
    assert _events(events_url) == [(f"wf-{i:02d}", f"k{i:02d}") for i in range(20)]
    # One run: all twenty rows sent together.
    assert [c for c in runs if c[0] == INSERT] == [(INSERT, 20)]
    assert _outputs(events_url) == {f"wf-{i:02d}": ("SUCCESS", True) for i in range(20)}


def test_runs_of_different_statements_keep_the_order_of_the_calls(
    engine_factory: Any, events_url: str, runs: Calls
) -> None:
    """wf-00..04 use one statement, wf-05..09 another, wf-10..14 the first
    again: three runs, sent in that order."""
    eng: engine.Engine = engine_factory()

    @eng.transaction(name="insert")
    def insert(conn: psycopg.Connection[Any], n: int) -> None:
        wid, key = engine.current_workflow_id(), f"k{n:02d}"
        if 5 <= n < 10:
            conn.execute(INSERT_OTHER, (key, wid))
        else:
            conn.execute(INSERT, (wid, key))

    @eng.workflow(name="inserting")
    def inserting(n: int) -> None:
        insert(n)

    eng.launch()
    recorded = engine_flows.record_inline(
        eng, engine_flows.numbered_batch(15, "inserting", digits=2)
    )

    assert [r.disposition for r in recorded] == [Disposition.COMPLETED] * 15
    assert _events(events_url) == [(f"wf-{i:02d}", f"k{i:02d}") for i in range(15)]
    ours = [c for c in runs if c[0] in (INSERT, INSERT_OTHER)]
    assert ours == [(INSERT, 5), (INSERT_OTHER, 5), (INSERT, 5)]


def test_a_step_reads_the_rows_of_earlier_workflows_of_the_batch(
    engine_factory: Any, events_url: str
) -> None:
    """Every third workflow reads after its insert: it sees its own row and
    those of all earlier workflows, still queued when it reads."""
    eng: engine.Engine = engine_factory()

    @eng.transaction(name="insert_then_count")
    def insert_then_count(conn: psycopg.Connection[Any], n: int) -> list[Any] | None:
        wid = engine.current_workflow_id()
        conn.execute(INSERT, (wid, f"k{n:02d}"))
        if n % 3 != 2:
            return None
        (everyone,) = conn.execute(COUNT, ("nobody",)).fetchone() or (None,)
        last = conn.execute(
            "SELECT key FROM public.events WHERE workflow_id <> %s ORDER BY seq DESC LIMIT 1",
            (wid,),
        ).fetchone()
        return [everyone, last[0] if last else None]

    @eng.workflow(name="counting")
    def counting(n: int) -> list[Any] | None:
        return insert_then_count(n)

    eng.launch()
    recorded = engine_flows.record_inline(eng, engine_flows.numbered_batch(9, "counting", digits=2))

    assert [r.disposition for r in recorded] == [Disposition.COMPLETED] * 9
    assert _outputs(events_url) == {
        f"wf-{i:02d}": ("SUCCESS", [i + 1, f"k{i - 1:02d}"] if i % 3 == 2 else None)
        for i in range(9)
    }
    assert _events(events_url) == [(f"wf-{i:02d}", f"k{i:02d}") for i in range(9)]


def test_a_kept_cursor_gets_its_own_result_after_later_statements(
    engine_factory: Any, events_url: str
) -> None:
    """The kept cursor sits between two inserts of the same statement: it must
    not join their run, and must answer with its own row."""
    eng: engine.Engine = engine_factory()
    kept_across: list[Any] = []

    @eng.transaction(name="three_inserts")
    def three_inserts(conn: psycopg.Connection[Any], n: int) -> list[Any]:
        wid = engine.current_workflow_id()
        conn.execute(INSERT_RETURNING, (wid, f"{wid}-a"))
        kept = conn.execute(INSERT_RETURNING, (wid, f"{wid}-b"))
        conn.execute(INSERT_RETURNING, (wid, f"{wid}-c"))
        conn.execute(INSERT, (wid, f"{wid}-d"))
        if n == 0:
            # Read by the next workflow's step, after its statements were queued.
            kept_across.append(conn.execute(INSERT_RETURNING, (wid, f"{wid}-e")))
        seq, key = kept.fetchone() or (None, None)
        with conn.execute(
            "SELECT key FROM generate_series(1, %s) n, (SELECT %s AS key) k", (2, wid)
        ) as cur:
            listed = [row[0] for row in cur]
        if n == 1:
            (early,) = kept_across
            _, early_key = early.fetchone() or (None, None)
            return [seq, key, listed, early_key]
        return [seq, key, listed]

    @eng.workflow(name="keeping")
    def keeping(n: int) -> list[Any]:
        return three_inserts(n)

    eng.launch()
    recorded = engine_flows.record_inline(eng, engine_flows.numbered_batch(3, "keeping", digits=2))

    assert [r.disposition for r in recorded] == [Disposition.COMPLETED] * 3
    expected = [("wf-00", "wf-00-" + s) for s in "abcde"] + [
        (f"wf-{i:02d}", f"wf-{i:02d}-{s}") for i in (1, 2) for s in "abcd"
    ]
    assert _events(events_url) == expected
    seqs = dict(
        (r[1], r[0]) for r in engine_flows.query(events_url, "SELECT seq, key FROM public.events")
    )
    outputs = _outputs(events_url)
    for i in range(3):
        wid = f"wf-{i:02d}"
        status, output = outputs[wid]
        assert status == "SUCCESS"
        assert output[:3] == [seqs[f"{wid}-b"], f"{wid}-b", [wid, wid]]
    assert outputs["wf-01"][1][3] == "wf-00-e"


def test_a_cursor_after_deferred_statements_sees_them_and_later_steps_defer_again(
    engine_factory: Any, events_url: str
) -> None:
    eng: engine.Engine = engine_factory()

    @eng.transaction(name="insert_then_cursor")
    def insert_then_cursor(conn: psycopg.Connection[Any], n: int) -> list[Any]:
        wid = engine.current_workflow_id()
        first = conn.execute(INSERT, (wid, f"{wid}-a"))
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM public.events WHERE workflow_id = %s", (wid,))
            (mine,) = cur.fetchone() or (None,)
            cur.execute("SELECT count(*) FROM public.events")
            (everyone,) = cur.fetchone() or (None,)
        second = conn.execute(INSERT, (wid, f"{wid}-b"))
        return [
            mine,
            everyone,
            isinstance(first, DeferredCursor),
            isinstance(second, DeferredCursor),
        ]

    @eng.workflow(name="cursoring")
    def cursoring(n: int) -> list[Any]:
        return insert_then_cursor(n)

    eng.launch()
    recorded = engine_flows.record_inline(
        eng, engine_flows.numbered_batch(3, "cursoring", digits=2)
    )

    assert [r.disposition for r in recorded] == [Disposition.COMPLETED] * 3
    # Each step's own insert is seen by its cursor, after the earlier steps' two.
    assert _outputs(events_url) == {
        f"wf-{i:02d}": ("SUCCESS", [1, 2 * i + 1, True, False]) for i in range(3)
    }
    assert _events(events_url) == [
        (f"wf-{i:02d}", f"wf-{i:02d}-{s}") for i in range(3) for s in "ab"
    ]


class _Boom(Exception):
    pass


@pytest.mark.parametrize("failure", ["python", "sql"])
def test_a_savepoint_after_deferred_statements_rolls_back_only_its_own(
    engine_factory: Any, events_url: str, failure: str
) -> None:
    """Each step inserts a, then b inside a savepoint that fails (a Python
    exception, or b's key taken by a), caught by the step, then c: a and c
    stay, b is gone, and the batch ends inline."""
    eng: engine.Engine = engine_factory()

    @eng.transaction(name="with_savepoint")
    def with_savepoint(conn: psycopg.Connection[Any], n: int) -> str:
        wid = engine.current_workflow_id()
        conn.execute(INSERT, (wid, f"{wid}-a"))
        try:
            with conn.transaction():
                if failure == "python":
                    conn.execute(INSERT, (wid, f"{wid}-b"))
                    raise _Boom
                conn.execute(INSERT, (wid, f"{wid}-b"))
                conn.execute(INSERT, (wid, f"{wid}-a"))  # already there
        except (_Boom, psycopg.errors.UniqueViolation) as exc:
            caught = type(exc).__name__
        else:
            caught = "nothing"
        conn.execute(INSERT, (wid, f"{wid}-c"))
        return caught

    @eng.workflow(name="savepointing")
    def savepointing(n: int) -> str:
        return with_savepoint(n)

    eng.launch()
    recorded = engine_flows.record_inline(
        eng, engine_flows.numbered_batch(3, "savepointing", digits=2)
    )

    assert [r.disposition for r in recorded] == [Disposition.COMPLETED] * 3
    assert _events(events_url) == [
        (f"wf-{i:02d}", f"wf-{i:02d}-{s}") for i in range(3) for s in "ac"
    ]
    caught = "_Boom" if failure == "python" else "UniqueViolation"
    assert _outputs(events_url) == {f"wf-{i:02d}": ("SUCCESS", caught) for i in range(3)}


@pytest.mark.parametrize(
    ("bad", "shows"),
    [
        ("missing_table", "at_the_end"),
        ("missing_table", "at_a_later_read"),
        ("taken_key", "at_the_end"),
        ("taken_key", "at_a_later_read"),
    ],
)
def test_a_deferred_statement_failing_at_a_flush_sends_the_batch_the_ordinary_way(
    engine_factory: Any, events_url: str, bad: str, shows: str
) -> None:
    """wf-02's insert fails on the server, but only when the queue is sent: at
    the end of the batch, or when wf-03's step reads. The inline attempt rolls
    back entirely; the ordinary runs then fail wf-02 alone."""
    with psycopg.connect(events_url, autocommit=True) as conn:
        conn.execute(INSERT, ("before", "taken"))
    eng: engine.Engine = engine_factory()
    reads: list[int] = []

    @eng.transaction(name="insert")
    def insert(conn: psycopg.Connection[Any], n: int) -> int:
        wid = engine.current_workflow_id()
        if n != 2:
            conn.execute(INSERT, (wid, f"{wid}-k"))
        elif bad == "missing_table":
            conn.execute("INSERT INTO public.missing (key) VALUES (%s)", (wid,))
        else:
            conn.execute(INSERT, (wid, "taken"))
        if n == 3 and shows == "at_a_later_read":
            (count,) = conn.execute(COUNT, (wid,)).fetchone() or (0,)
            reads.append(count)
            return int(count)
        return n

    @eng.workflow(name="failing")
    def failing(n: int) -> int:
        return insert(n)

    eng.launch()
    recorded = engine_flows.record_inline(eng, engine_flows.numbered_batch(5, "failing", digits=2))

    # Nothing of the inline attempt is left; all recorded PENDING, to run.
    assert [r.disposition for r in recorded] == [Disposition.NEW] * 5
    assert _events(events_url) == [("before", "taken")]
    assert {s for s, _ in _outputs(events_url).values()} == {"PENDING"}
    handles = {r.workflow_id: eng.run(r.claimed, fresh=r.fresh) for r in recorded if r.claimed}
    assert sorted(handles) == [f"wf-{i:02d}" for i in range(5)]
    for wid, handle in handles.items():
        if wid == "wf-02":
            with pytest.raises(engine.WorkflowFailedError) as caught:
                handle.result(timeout=30)
            expected = "UndefinedTable" if bad == "missing_table" else "UniqueViolation"
            assert caught.value.error["type"] == f"psycopg.errors.{expected}"
        else:
            handle.result(timeout=30)

    assert sorted(_events(events_url)) == sorted(
        [("before", "taken")] + [(f"wf-{i:02d}", f"wf-{i:02d}-k") for i in (0, 1, 3, 4)]
    )
    statuses = {wid: s for wid, (s, _) in _outputs(events_url).items()}
    assert statuses == {f"wf-{i:02d}": "ERROR" if i == 2 else "SUCCESS" for i in range(5)}
    if shows == "at_a_later_read":
        # The inline attempt of wf-03 raised at its read: only the ordinary
        # run got a count (at least the row inserted before the batch).
        assert len(reads) == 1 and reads[0] >= 1


@pytest.mark.parametrize("kind", ["list", "dict"])
def test_parameters_are_taken_when_execute_is_called(
    engine_factory: Any, effects_url: str, kind: str
) -> None:
    """A step filling one parameters object in a loop (a common idiom) must
    insert each value it passed, as it does outside inline batches."""
    eng: engine.Engine = engine_factory()

    @eng.transaction(name="loop")
    def loop(conn: psycopg.Connection[Any]) -> None:
        wid = engine.current_workflow_id()
        if kind == "list":
            row: list[Any] = [wid, None, "x"]
            for key in "abc":
                row[1] = key
                conn.execute("INSERT INTO public.effects VALUES (%s, %s, %s)", row)
        else:
            named: dict[str, Any] = {"w": wid, "e": "x"}
            for key in "abc":
                named["k"] = key
                conn.execute("INSERT INTO public.effects VALUES (%(w)s, %(k)s, %(e)s)", named)

    @eng.workflow(name="looping")
    def looping(n: int) -> None:
        loop()

    eng.launch()
    recorded = engine_flows.record_inline(eng, engine_flows.numbered_batch(2, "looping", digits=2))

    assert [r.disposition for r in recorded] == [Disposition.COMPLETED] * 2
    assert sorted(engine_flows.effects(effects_url)) == [
        (f"wf-{i:02d}", key, "x") for i in range(2) for key in "abc"
    ]


def test_a_cursor_reused_after_later_statements_sees_them(
    engine_factory: Any, events_url: str
) -> None:
    """psycopg's `cur = conn.execute(...)`, then `cur.execute(...)` on it: the
    second statement must come after the insert queued in between."""
    eng: engine.Engine = engine_factory()

    @eng.transaction(name="reuse")
    def reuse(conn: psycopg.Connection[Any]) -> int:
        wid = engine.current_workflow_id()
        cur = conn.execute("SELECT count(*) FROM public.events WHERE workflow_id = %s", (wid,))
        cur.fetchone()
        conn.execute(INSERT, (wid, f"{wid}-a"))
        cur.execute("SELECT count(*) FROM public.events WHERE workflow_id = %s", (wid,))
        (count,) = cur.fetchone() or (-1,)
        return int(count)

    @eng.workflow(name="reusing")
    def reusing(n: int) -> int:
        return reuse()

    eng.launch()
    recorded = engine_flows.record_inline(eng, engine_flows.numbered_batch(2, "reusing", digits=2))

    assert [r.disposition for r in recorded] == [Disposition.COMPLETED] * 2
    assert _outputs(events_url) == {f"wf-{i:02d}": ("SUCCESS", 1) for i in range(2)}


@pytest.mark.parametrize("keep", [False, True])
def test_inline_steps_keeps_the_step_rows_of_inline_runs_only_when_asked(
    engine_factory: Any, events_url: str, keep: bool
) -> None:
    eng: engine.Engine = engine_factory(inline_steps=True) if keep else engine_factory()

    @eng.step(name="double")
    def double(n: int) -> int:
        return 2 * n

    @eng.transaction(name="insert")
    def insert(conn: psycopg.Connection[Any], n: int) -> None:
        conn.execute(INSERT, (engine.current_workflow_id(), str(n)))

    @eng.workflow(name="stepping")
    def stepping(n: int) -> int:
        insert(n)
        return double(n)

    eng.launch()
    recorded = engine_flows.record_inline(eng, engine_flows.numbered_batch(3, "stepping", digits=2))

    assert [r.disposition for r in recorded] == [Disposition.COMPLETED] * 3
    steps = engine_flows.query(
        events_url, "SELECT workflow_id, step, name FROM onceflow.steps ORDER BY 1, 2"
    )
    expected = [(f"wf-{i:02d}", s, n) for i in range(3) for s, n in ((1, "insert"), (2, "double"))]
    assert [tuple(r) for r in steps] == (expected if keep else [])
    assert len(_events(events_url)) == 3


# -- DeferringConnection on a plain connection ----------------------------------


class _CountingCursor(psycopg.Cursor[Any]):
    """Logs what reaches the server: ("one", query) or ("many", query, rows)."""

    def execute(self, query: Any, params: Any = None, **options: Any) -> _CountingCursor:
        cast(_Counting, self.connection).log.append(("one", str(query)))
        super().execute(query, params, **options)
        return self

    def executemany(self, query: Any, params_seq: Any, *, returning: bool = False) -> None:
        rows = list(params_seq)
        cast(_Counting, self.connection).log.append(("many", str(query), len(rows)))
        super().executemany(query, rows, returning=returning)


class _Counting(psycopg.Connection[Any]):
    log: list[tuple[Any, ...]]


@pytest.fixture(params=[False, True], ids=["plain", "pipeline"])
def deferring(events_url: str, request: pytest.FixtureRequest) -> Iterator[DeferringConnection]:
    """A DeferringConnection in an open transaction, in pipeline mode or not
    (inline batches use pipeline mode); `.log` of its raw connection shows
    what was sent. Given no `Tables`, it sends runs as `executemany` (the
    multi-row path is test_engine_multirow.py's)."""
    with _Counting.connect(events_url, cursor_factory=_CountingCursor) as raw:
        raw.log = []
        with raw.transaction(force_rollback=True):
            if request.param:
                with raw.pipeline():
                    yield DeferringConnection(raw)
            else:
                yield DeferringConnection(raw)


def _log(conn: DeferringConnection) -> list[tuple[Any, ...]]:
    return cast(_Counting, conn._conn).log


def _keys(conn: DeferringConnection) -> list[str]:
    rows = conn.execute("SELECT key FROM public.events ORDER BY seq").fetchall()
    return [r[0] for r in rows]


def test_nothing_is_sent_before_a_flush_then_runs_go_out_in_order(
    deferring: DeferringConnection,
) -> None:
    for key in ("a1", "a2", "a3"):
        assert isinstance(deferring.execute(INSERT, ("w", key)), DeferredCursor)
    deferring.execute(INSERT_OTHER, ("b1", "w"))
    deferring.execute(INSERT, ("w", "a4"))
    deferring.execute(INSERT, ("w", "a5"))
    assert _log(deferring) == []
    assert deferring.sent == 0

    deferring.flush()

    assert _log(deferring) == [
        ("many", INSERT, 3),
        ("one", INSERT_OTHER),
        ("many", INSERT, 2),
    ]
    assert deferring.sent == 6
    assert _keys(deferring) == ["a1", "a2", "a3", "b1", "a4", "a5"]


def test_a_statement_without_parameters_is_sent_at_once_after_the_queue(
    deferring: DeferringConnection,
) -> None:
    deferring.execute(INSERT, ("w", "a"))
    deferring.execute(INSERT, ("w", "b"))

    cur = deferring.execute("SELECT count(*) FROM public.events")

    assert not isinstance(cur, DeferredCursor)
    assert isinstance(cur, psycopg.Cursor)
    assert cur.fetchone() == (2,)
    assert _log(deferring) == [("many", INSERT, 2), ("one", "SELECT count(*) FROM public.events")]
    assert deferring.sent == 2


@pytest.mark.parametrize(
    "options", [{"prepare": True}, {"prepare": False}, {"binary": True}], ids=str
)
def test_prepare_and_binary_bypass_deferral(
    deferring: DeferringConnection, options: dict[str, Any]
) -> None:
    deferring.execute(INSERT, ("w", "a"))
    query = "SELECT key FROM public.events WHERE key = %s"

    cur = deferring.execute(query, ("a",), **options)

    assert not isinstance(cur, DeferredCursor)
    assert _log(deferring) == [("one", INSERT), ("one", query)]
    assert cur.fetchone() == ("a",)


def test_a_placeholder_is_iterable_and_a_context_manager(deferring: DeferringConnection) -> None:
    query = "SELECT n FROM generate_series(1, %s) n"
    deferring.execute(INSERT, ("w", "a"))

    assert list(deferring.execute(query, (3,))) == [(1,), (2,), (3,)]
    with deferring.execute(query, (2,)) as cur:
        assert isinstance(cur, DeferredCursor)
        assert cur.fetchall() == [(1,), (2,)]
    assert [
        row for row in deferring.execute("SELECT key FROM public.events WHERE key = %s", ("a",))
    ] == [("a",)]


def test_a_kept_placeholder_splits_a_run_and_answers_alone(
    deferring: DeferringConnection,
) -> None:
    deferring.execute(INSERT_RETURNING, ("w", "a"))
    kept = deferring.execute(INSERT_RETURNING, ("w", "b"))
    deferring.execute(INSERT_RETURNING, ("w", "c"))
    deferring.execute(INSERT_RETURNING, ("w", "d"))
    later = deferring.execute(INSERT_RETURNING, ("w", "e"))

    row = kept.fetchone()

    assert row is not None and row[1] == "b"
    assert _log(deferring) == [
        ("one", INSERT_RETURNING),
        ("one", INSERT_RETURNING),
        ("many", INSERT_RETURNING, 2),
        ("one", INSERT_RETURNING),
    ]
    assert deferring.sent == 5
    assert (later.fetchone() or (None, None))[1] == "e"
    assert _keys(deferring) == ["a", "b", "c", "d", "e"]
    seqs = dict(
        (r[1], r[0]) for r in deferring.execute("SELECT seq, key FROM public.events", ()).fetchall()
    )
    assert row[0] == seqs["b"]


def test_a_placeholder_closed_by_its_with_block_still_sends_its_statement(
    deferring: DeferringConnection,
) -> None:
    with deferring.execute(INSERT, ("w", "a")):
        pass
    deferring.execute(INSERT, ("w", "b"))

    assert _keys(deferring) == ["a", "b"]


def test_any_other_use_flushes_and_goes_direct_until_the_next_step(
    deferring: DeferringConnection,
) -> None:
    deferring.execute(INSERT, ("w", "a"))

    with deferring.cursor() as cur:
        assert _log(deferring) == [("one", INSERT)]
        cur.execute("SELECT count(*) FROM public.events")
        assert cur.fetchone() == (1,)
    direct = deferring.execute(INSERT, ("w", "b"))
    assert not isinstance(direct, DeferredCursor)
    assert _log(deferring)[-1] == ("one", INSERT)

    deferring.begin_step()
    assert isinstance(deferring.execute(INSERT, ("w", "c")), DeferredCursor)
    assert _keys(deferring) == ["a", "b", "c"]


def test_a_savepoint_holds_its_statements_and_not_the_queued_ones(
    deferring: DeferringConnection,
) -> None:
    deferring.execute(INSERT, ("w", "a"))
    with pytest.raises(_Boom), deferring.transaction():
        deferring.execute(INSERT, ("w", "b"))
        raise _Boom
    deferring.begin_step()
    deferring.execute(INSERT, ("w", "c"))

    assert _keys(deferring) == ["a", "c"]


def test_a_failing_deferred_statement_raises_at_the_flush_not_at_execute(
    deferring: DeferringConnection,
) -> None:
    deferring.execute(INSERT, ("w", "a"))
    deferring.execute("INSERT INTO public.missing (key) VALUES (%s)", ("a",))  # no error yet

    with pytest.raises(psycopg.errors.UndefinedTable):
        # In pipeline mode the error arrives with the next result read.
        deferring.execute("SELECT 1").fetchone()


def test_composed_queries_join_a_run(deferring: DeferringConnection) -> None:
    def make() -> sql.Composed:
        return sql.SQL("INSERT INTO {} (workflow_id, key) VALUES (%s, %s)").format(
            sql.Identifier("events")
        )

    for key in ("a", "b", "c"):
        deferring.execute(make(), ("w", key))  # equal, not identical

    deferring.flush()

    assert [entry[0] for entry in _log(deferring)] == ["many"]
    assert _log(deferring)[0][2] == 3
    assert _keys(deferring) == ["a", "b", "c"]


def test_a_parameters_object_changed_after_execute_does_not_change_the_statement(
    deferring: DeferringConnection,
) -> None:
    deferring.execute("CREATE TEMP TABLE loose (n int)")  # no parameters: sent now
    row = [1]
    deferring.execute("INSERT INTO loose VALUES (%s)", row)
    row[0] = 2
    deferring.execute("INSERT INTO loose VALUES (%s)", row)

    assert deferring.execute("SELECT n FROM loose ORDER BY n").fetchall() == [(1,), (2,)]


def test_a_statement_on_a_reused_placeholder_goes_after_the_queue(
    deferring: DeferringConnection,
) -> None:
    cur = deferring.execute("SELECT count(*) FROM public.events WHERE key <> %s", ("",))
    assert cur.fetchone() == (0,)
    deferring.execute(INSERT, ("w", "a"))

    cur.execute("SELECT count(*) FROM public.events")

    assert cur.fetchone() == (1,)
