"""Inline batches (Engine.record with `inline`): fresh workflows run to their
end inside the transaction that records the batch, their rows inserted
already final (engine/_inline.py)."""

from __future__ import annotations

import threading
from typing import Any

import engine_flows
import psycopg
import pytest

import engine
from engine import Disposition, NewWorkflow, Source


def _register(eng: engine.Engine) -> Any:
    @eng.step()
    def double(n: int) -> int:
        return 2 * n

    @eng.transaction()
    def effect(conn: psycopg.Connection[Any], n: int) -> None:
        conn.execute(
            "INSERT INTO public.effects (workflow_id, key, executor) VALUES (%s, %s, %s)",
            (engine.current_workflow_id(), str(n), eng.executor_id),
        )

    @eng.workflow(name="inline-flow")
    def flow(n: int) -> int:
        doubled = double(n)
        effect(n)
        return doubled

    return effect


def _batch(count: int) -> list[NewWorkflow]:
    return [
        NewWorkflow(f"wf-{i}", "inline-flow", (i,), source=Source("g", "t", 0, i, None))
        for i in range(count)
    ]


def _fell_back_then_ran(
    eng: engine.Engine, recorded: list[engine.Recorded], effects_url: str
) -> None:
    """The inline attempt rolled back (no effect), and the batch was recorded
    the ordinary way: wf-0 inserted PENDING, wf-1 found without an owner and
    claimed. Running both gives each effect once."""
    assert [r.disposition for r in recorded] == [Disposition.NEW, Disposition.CLAIMED]
    assert engine_flows.effects(effects_url) == []
    for r in recorded:
        assert r.claimed is not None
        eng.run(r.claimed, fresh=r.fresh).result(timeout=30)
    assert sorted(k for _, k, _ in engine_flows.effects(effects_url)) == ["0", "1"]


def _rows(url: str) -> dict[str, tuple[Any, ...]]:
    rows = engine_flows.query(
        url, "SELECT workflow_id, status, output, epoch FROM onceflow.workflows"
    )
    return {r[0]: r[1:] for r in rows}


def test_inline_workflows_are_recorded_final_with_steps_and_effects(
    engine_factory: Any, effects_url: str
) -> None:
    eng = engine_factory()
    _register(eng)
    eng.launch()

    recorded = eng.record(_batch(3), inline=lambda item, fresh: fresh)

    assert [r.disposition for r in recorded] == [Disposition.COMPLETED] * 3
    assert _rows(effects_url) == {f"wf-{i}": ("SUCCESS", 2 * i, 1) for i in range(3)}
    steps = engine_flows.query(
        effects_url, "SELECT workflow_id, step, name FROM onceflow.steps ORDER BY 1, 2"
    )
    assert steps == []  # nothing replays them: not kept by default (inline_steps)
    assert sorted(k for _, k, _ in engine_flows.effects(effects_url)) == ["0", "1", "2"]


@pytest.mark.parametrize("keep", [False, True])
def test_inline_inputs_keeps_the_input_of_inline_runs_only_when_asked(
    engine_factory: Any, effects_url: str, keep: bool
) -> None:
    eng = engine_factory(inline_inputs=True) if keep else engine_factory()
    _register(eng)
    eng.launch()

    recorded = eng.record(_batch(2), inline=lambda item, fresh: item.args[0] == 0)

    assert [r.disposition for r in recorded] == [Disposition.COMPLETED, Disposition.NEW]
    ran_inline, pending = eng.get_workflow("wf-0"), eng.get_workflow("wf-1")
    assert ran_inline.output == 0 and ran_inline.source is not None
    assert ran_inline.input == ({"args": [0], "kwargs": {}} if keep else None)
    assert pending.input == {"args": [1], "kwargs": {}}  # it has yet to run: always kept


def test_workflows_not_picked_are_recorded_pending_and_run_by_workers(
    engine_factory: Any, effects_url: str
) -> None:
    eng = engine_factory()
    _register(eng)
    eng.launch()

    recorded = eng.record(_batch(4), inline=lambda item, fresh: fresh and item.args[0] % 2 == 0)

    assert [r.disposition for r in recorded] == [Disposition.COMPLETED, Disposition.NEW] * 2
    statuses = {wid: row[0] for wid, row in _rows(effects_url).items()}
    assert statuses == {"wf-0": "SUCCESS", "wf-1": "PENDING", "wf-2": "SUCCESS", "wf-3": "PENDING"}
    for r in recorded:
        if r.claimed is not None:
            assert eng.run(r.claimed, fresh=r.fresh).result(timeout=30) == 2 * r.claimed.args[0]
    assert sorted(k for _, k, _ in engine_flows.effects(effects_url)) == ["0", "1", "2", "3"]


def test_a_redelivered_batch_runs_nothing_again(engine_factory: Any, effects_url: str) -> None:
    eng = engine_factory()
    _register(eng)
    eng.launch()
    eng.record(_batch(2), inline=lambda item, fresh: fresh)

    again = eng.record(_batch(3), inline=lambda item, fresh: fresh)

    assert [r.disposition for r in again] == [
        Disposition.FINISHED,
        Disposition.FINISHED,
        Disposition.COMPLETED,
    ]
    assert sorted(k for _, k, _ in engine_flows.effects(effects_url)) == ["0", "1", "2"]


def test_a_workflow_recorded_meanwhile_elsewhere_rolls_the_inline_batch_back(
    engine_factory: Any, effects_url: str
) -> None:
    """Another executor records wf-1 while this batch runs it inline (after the
    batch looked up which IDs exist): the inline attempt must roll back, its
    transaction step's effect with it, so that wf-1's effect happens once."""
    eng = engine_factory()
    effect = _register(eng)
    raced: list[str] = []

    @eng.workflow(name="racing-flow")
    def racing(n: int) -> int:
        wid = engine.current_workflow_id()
        if not raced:
            raced.append(wid)
            # Committed at once, owner-less: as if recorded and handed back.
            with psycopg.connect(effects_url, autocommit=True) as other:
                other.execute(
                    "INSERT INTO onceflow.workflows (workflow_id, name, input)"
                    " VALUES (%s, 'racing-flow', %s)",
                    (wid, '{"args": [1], "kwargs": {}}'),
                )
        effect(n)
        return n

    eng.launch()
    batch = [NewWorkflow("wf-0", "inline-flow", (0,)), NewWorkflow("wf-1", "racing-flow", (1,))]

    recorded = eng.record(batch, inline=lambda item, fresh: fresh)

    _fell_back_then_ran(eng, recorded, effects_url)
    assert {wid: row[0] for wid, row in _rows(effects_url).items()} == {
        "wf-0": "SUCCESS",
        "wf-1": "SUCCESS",
    }


# -- send_record: the batch sent up to its COMMIT, its answer read later --------


def test_send_record_answers_like_record_once_its_result_is_read(
    engine_factory: Any, effects_url: str
) -> None:
    eng = engine_factory()
    _register(eng)
    eng.launch()

    pending = eng.send_record(_batch(3), inline=lambda item, fresh: fresh)
    assert pending.inline
    recorded = pending.result()

    assert [r.disposition for r in recorded] == [Disposition.COMPLETED] * 3
    assert pending.result() is recorded  # read once, kept
    assert {wid: row[0] for wid, row in _rows(effects_url).items()} == {
        f"wf-{i}": "SUCCESS" for i in range(3)
    }
    assert sorted(k for _, k, _ in engine_flows.effects(effects_url)) == ["0", "1", "2"]
    # The inline connection is free again: the next batch goes the same way.
    again = eng.send_record(_batch(4), inline=lambda item, fresh: fresh).result()
    assert [r.disposition for r in again] == [Disposition.FINISHED] * 3 + [Disposition.COMPLETED]


def test_send_record_without_inline_records_before_it_returns(
    engine_factory: Any, effects_url: str
) -> None:
    eng = engine_factory()
    _register(eng)
    eng.launch()

    pending = eng.send_record(_batch(2))

    assert not pending.inline
    assert {wid: row[0] for wid, row in _rows(effects_url).items()} == {
        "wf-0": "PENDING",
        "wf-1": "PENDING",
    }
    assert [r.disposition for r in pending.result()] == [Disposition.NEW] * 2


def test_a_row_recorded_elsewhere_after_the_send_fails_the_commit_not_the_guarantee(
    engine_factory: Any, effects_url: str
) -> None:
    """Another executor records wf-1 while the batch runs it inline, after the
    batch's lookup: the batch's insert of wf-1's finished row fails (no ON
    CONFLICT for rows run here), so its COMMIT does nothing, and `result()`
    reports the ordinary way's outcome, with no effect written twice."""
    eng = engine_factory()
    effect = _register(eng)
    raced: list[str] = []

    @eng.workflow(name="racing-flow")
    def racing(n: int) -> int:
        if not raced:
            raced.append(engine.current_workflow_id())
            with psycopg.connect(effects_url, autocommit=True) as other:
                other.execute(
                    "INSERT INTO onceflow.workflows (workflow_id, name, input)"
                    " VALUES ('wf-1', 'racing-flow', %s)",
                    ('{"args": [1], "kwargs": {}}',),
                )
        effect(n)
        return n

    eng.launch()
    batch = [NewWorkflow("wf-0", "inline-flow", (0,)), NewWorkflow("wf-1", "racing-flow", (1,))]

    pending = eng.send_record(batch, inline=lambda item, fresh: fresh)
    recorded = pending.result()

    _fell_back_then_ran(eng, recorded, effects_url)


def test_send_record_returns_while_postgres_still_works_on_the_batch(
    engine_factory: Any, effects_url: str
) -> None:
    """The batch goes out up to its COMMIT without waiting for any answer
    after the lookup: with the effects table locked elsewhere, its INSERT
    waits in Postgres, and send_record returns all the same (a sync inside
    the batch, such as psycopg's transaction() opens in pipeline mode, would
    block here until the lock is released). Nothing is committed before the
    lock goes, and everything is once it does."""
    eng = engine_factory()
    _register(eng)
    eng.launch()
    locker = psycopg.connect(effects_url)
    try:
        locker.execute("LOCK TABLE public.effects IN ACCESS EXCLUSIVE MODE")
        sent: list[Any] = []
        thread = threading.Thread(
            target=lambda: sent.append(eng.send_record(_batch(3), inline=lambda i, f: f)),
            daemon=True,
        )
        thread.start()
        thread.join(timeout=20)
        returned = not thread.is_alive()
        assert _rows(effects_url) == {}  # not committed: the INSERT still waits
    finally:
        locker.rollback()  # the lock goes; the batch's statements go on
        locker.close()
    assert returned, "send_record waited for Postgres to finish the batch"
    recorded = sent[0].result()
    assert [r.disposition for r in recorded] == [Disposition.COMPLETED] * 3
    assert sorted(k for _, k, _ in engine_flows.effects(effects_url)) == ["0", "1", "2"]


# -- send_lookup: the batch's question asked ahead, on another connection ------


def test_a_lookup_sent_ahead_is_the_batchs_answer(engine_factory: Any, effects_url: str) -> None:
    eng = engine_factory()
    _register(eng)
    eng.launch()
    eng.record(_batch(2), inline=lambda item, fresh: fresh)

    lookup = eng.send_lookup(_batch(4))
    recorded = eng.send_record(_batch(4), inline=lambda i, f: f, lookup=lookup).result()

    assert [r.disposition for r in recorded] == [Disposition.FINISHED] * 2 + [
        Disposition.COMPLETED
    ] * 2
    assert sorted(k for _, k, _ in engine_flows.effects(effects_url)) == ["0", "1", "2", "3"]
    assert lookup.rows() == [("wf-0", True), ("wf-1", True)]  # read by send_record, kept


def test_a_lookup_for_other_workflows_is_read_and_not_used(
    engine_factory: Any, effects_url: str
) -> None:
    eng = engine_factory()
    _register(eng)
    eng.launch()
    eng.record(_batch(2), inline=lambda item, fresh: fresh)

    # Asked for wf-9 alone: were it used, wf-0 and wf-1 would look fresh
    # and the batch would fall back after running them again.
    lookup = eng.send_lookup([NewWorkflow("wf-9", "inline-flow", (9,))])
    recorded = eng.send_record(_batch(3), inline=lambda i, f: f, lookup=lookup).result()

    assert [r.disposition for r in recorded] == [Disposition.FINISHED] * 2 + [Disposition.COMPLETED]
    assert sorted(k for _, k, _ in engine_flows.effects(effects_url)) == ["0", "1", "2"]
    # The lookup's connection is free: the next one goes the same way.
    again = eng.send_record(_batch(4), inline=lambda i, f: f, lookup=eng.send_lookup(_batch(4)))
    assert [r.disposition for r in again.result()][-1] is Disposition.COMPLETED


def test_a_row_recorded_after_the_lookup_fails_the_commit_not_the_guarantee(
    engine_factory: Any, effects_url: str
) -> None:
    """The lookup says wf-1 is not recorded; another executor records it
    before the batch runs: the batch's insert of wf-1's finished row fails,
    nothing of the batch commits, and the ordinary way runs each once."""
    eng = engine_factory()
    _register(eng)
    eng.launch()

    lookup = eng.send_lookup(_batch(2))
    assert lookup.rows() == []  # answered: nothing recorded yet
    with psycopg.connect(effects_url, autocommit=True) as other:
        other.execute(
            "INSERT INTO onceflow.workflows (workflow_id, name, input)"
            " VALUES ('wf-1', 'inline-flow', %s)",
            ('{"args": [1], "kwargs": {}}',),
        )
    recorded = eng.send_record(_batch(2), inline=lambda i, f: f, lookup=lookup).result()

    _fell_back_then_ran(eng, recorded, effects_url)


def test_a_lookup_asks_only_what_it_is_told_to(engine_factory: Any, effects_url: str) -> None:
    eng = engine_factory()
    _register(eng)
    eng.launch()
    eng.record(_batch(2), inline=lambda item, fresh: fresh)

    batch = _batch(4)
    lookup = eng.send_lookup(batch, ask=batch[:1])
    assert lookup.rows() == [("wf-0", True)]  # wf-1, recorded too, was not asked about
    none_asked = eng.send_lookup(batch, ask=[])
    assert none_asked.rows() == []  # answered at once, nothing sent


def test_a_recorded_workflow_taken_for_unrecorded_costs_a_fall_back_not_the_guarantee(
    engine_factory: Any, effects_url: str
) -> None:
    """The caller said not to ask about wf-1 (a consumer past the records of
    a partition recorded before), but another executor recorded it: the
    batch runs it, its finished row's insert fails, and the ordinary way
    finds the row, so its effect is still written once."""
    eng = engine_factory()
    _register(eng)
    eng.launch()
    with psycopg.connect(effects_url, autocommit=True) as other:
        other.execute(
            "INSERT INTO onceflow.workflows (workflow_id, name, input)"
            " VALUES ('wf-1', 'inline-flow', %s)",
            ('{"args": [1], "kwargs": {}}',),
        )

    batch = _batch(2)
    lookup = eng.send_lookup(batch, ask=[])
    recorded = eng.send_record(batch, inline=lambda i, f: f, lookup=lookup).result()

    _fell_back_then_ran(eng, recorded, effects_url)
